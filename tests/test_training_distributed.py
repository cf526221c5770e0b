"""Training on 2 CPU processes (DDP over gloo, `accelerate launch`) against one process.

- Same global batch, same data order: 2 processes x batch 2 step through the same 4 rows per step
  as 1 process x batch 4 (length-grouped batches are cut at batch_size x processes, and accelerate
  hands rank r the r-th per-device slice of each global batch), so the loss curves agree up to the
  order of floating-point sums (gradients are averaged by all-reduce instead of one batch mean).
- A 2-process run SIGKILLed after a committed checkpoint resumes, on 2 processes, to the very same
  adapter as an uninterrupted one (each rank restores its own RNG state; dropout is on).
- Rank 0 alone writes the run folder and prints the notices.
"""

from __future__ import annotations

import json
import time

import pytest
from helpers.adapters import tiny_config, write_lab_data
from helpers.distributed import kill_tree, run_lightalign, start_stalling, write_recipe

STEPS = 6


def _recipe(model_dir, data, out, batch_size: int, dropout: float) -> dict:
    return {"method": "sft", "model": {"name_or_path": str(model_dir)},
            "lora": {"r": 4, "alpha": 8, "dropout": dropout},
            "data": {"path": str(data), "schema": "prompt_completion", "max_length": 64},
            "training": {"max_steps": STEPS, "batch_size": batch_size, "lr": 1e-2, "logging_steps": 1,
                         "save_steps": 2, "gradient_checkpointing": False, "progress": False, "warmup_ratio": 0.0},
            "output_dir": str(out)}


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def _metrics(path):
    return json.loads((path / "metrics.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory, small_splits):
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp, write_lab_data(tmp, small_splits, n=64)["sft"]  # 32 packed rows: 6 steps x 4 stay in epoch 1


@pytest.mark.slow
def test_two_processes_follow_the_single_process_loss_curve(data, tiny_model_dir):
    from lightalign.adapters import sft

    tmp, sft_data = data
    _, cfg = tiny_config("sft", tiny_model_dir, sft_data, tmp / "one", lora={"dropout": 0.0},
                         training={"max_steps": STEPS, "batch_size": 4, "lr": 1e-2})
    one = _metrics(sft.train(cfg))
    recipe = write_recipe(tmp / "two.yaml", _recipe(tiny_model_dir, sft_data, tmp / "two", 2, 0.0))
    done = run_lightalign("train", str(recipe))
    assert done.returncode == 0, done.stderr[-3000:]
    two = _metrics(tmp / "two")

    assert (one["world_size"], one["global_batch"]) == (1, 4)
    assert (two["world_size"], two["global_batch"]) == (2, 4)
    a, b = [p["loss"] for p in one["loss_curve"]], [p["loss"] for p in two["loss_curve"]]
    worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    print(f"\nfinal loss 1 process x batch 4: {a[-1]:.6f}   2 processes x batch 2: {b[-1]:.6f}   "
          f"worst per-step relative gap: {worst:.2e}")
    assert len(a) == len(b) == STEPS
    assert abs(b[-1] - a[-1]) / a[-1] < 0.02      # the target
    assert worst < 1e-4                           # what same batches in another summation order give
    assert a[0] - a[-1] > 50 * worst * a[0]       # the curves move far more than they differ
    assert two["tokens"] == one["tokens"]          # the same rows were trained on, counted over both ranks
    # each rank pads its own half of the batch: never more processed positions than one padded batch of 4
    assert two["processed_tokens"] <= one["processed_tokens"]
    assert done.stdout.count("saved: ") == 1       # notices once, not once per rank


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_same_adapter(data, tiny_model_dir):
    import torch

    from lightalign.training import runs

    tmp, sft_data = data
    full_recipe = write_recipe(tmp / "full.yaml", _recipe(tiny_model_dir, sft_data, tmp / "full", 2, 0.1))
    done = run_lightalign("train", str(full_recipe))
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp / "killed"
    recipe = write_recipe(tmp / "killed.yaml", _recipe(tiny_model_dir, sft_data, out, 2, 0.1))
    flag = tmp / "stalled"
    proc = start_stalling(recipe, 5, flag)  # after checkpoint-4 is committed, before checkpoint-6
    try:
        deadline = time.monotonic() + 240
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert flag.exists(), proc.stdout.read()[-3000:] if proc.poll() is not None else "no step 5 in 240 s"
    finally:
        kill_tree(proc)
    assert proc.returncode == -9 and not runs.is_complete(out)
    ckpts = runs.checkpoint_dir(out)
    assert runs.last_complete_checkpoint(out) == ckpts / "checkpoint-4"
    # every rank's RNG state is in the committed checkpoint
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in (ckpts / "checkpoint-4").iterdir()}
    torn = ckpts / "checkpoint-5"  # as if the kill had hit a save
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"half a file")

    resumed = run_lightalign("train", str(recipe))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming from") == 1 and "checkpoint-4 (step 4)" in resumed.stdout
    assert not torn.exists()
    metrics, full_metrics = _metrics(out), _metrics(tmp / "full")
    assert metrics["resumed_from"].endswith("checkpoint-4") and metrics["world_size"] == 2
    assert [p["loss"] for p in metrics["loss_curve"]] == [p["loss"] for p in full_metrics["loss_curve"]]
    assert metrics["tokens"] == full_metrics["tokens"]
    full, again = _adapter(tmp / "full"), _adapter(out)
    assert full.keys() == again.keys()
    assert all(torch.equal(again[k], full[k]) for k in full)  # bit-identical
    ckpt4 = _adapter(ckpts / "checkpoint-4")
    assert any(not torch.equal(ckpt4[k], full[k]) for k in full)  # control: training moved past step 4


def test_only_rank_0_writes_and_prints(tmp_path, monkeypatch, capsys):
    """On any other rank the run folder's writers write nothing and the notices print nothing."""
    from lightalign.training import distributed, runs

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed, "barrier", lambda: None)
    runs.write_metrics(tmp_path, {"method": "sft"})
    runs.save_model(object(), object(), tmp_path)
    runs.notice("saved: somewhere")
    runs.report_data_stats({"malformed": 3, "seen": 10, "first_malformed": ["data.jsonl:2: bad"]}, "data.jsonl")
    runs.announce_resume(str(tmp_path / "checkpoints" / "checkpoint-4"))
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("RANK", "0")
    runs.write_metrics(tmp_path, {"method": "sft"})
    assert runs.read_metrics(tmp_path)["method"] == "sft"


def test_a_failure_on_rank_0_reaches_every_rank(monkeypatch):
    """The other ranks wait for rank 0's decision (which checkpoint to resume from): when rank 0 fails
    instead, they must fail too rather than wait forever."""
    from lightalign.errors import UserError
    from lightalign.training import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed, "from_main", lambda value: (None, "output_dir holds another run"))
    with pytest.raises(UserError, match="rank 0: output_dir holds another run"):
        distributed.main_first(lambda: "never runs on rank 1")


def test_quant_storage_reaches_the_4bit_weights(tiny_model_dir):
    """model.quant_storage sets the dtype FSDP sees on the packed 4-bit weights (the same bytes)."""
    import bitsandbytes as bnb
    import torch

    from lightalign import loading
    from lightalign.config import from_dict
    from lightalign.errors import UserError
    from lightalign.training.sections import ModelSection

    def weights(storage):
        model = loading.load_base(ModelSection(name_or_path=str(tiny_model_dir), compute_dtype="fp32",
                                               quant_storage=storage, upcast_non_quantized=False), training=True)
        return [m.weight for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]

    as_fp32, as_uint8 = weights("fp32"), weights("uint8")
    assert as_fp32 and {w.dtype for w in as_fp32} == {torch.float32}
    assert {w.dtype for w in as_uint8} == {torch.uint8}
    assert sum(w.numel() * w.element_size() for w in as_fp32) == sum(w.numel() for w in as_uint8)
    for bad, needle in (({"quant_storage": "bf16", "compute_dtype": "fp32"}, "must equal model.compute_dtype"),
                        ({"quant_storage": "bf16", "quantization": "none"}, "needs model.quantization=nf4"),
                        ({"quant_storage": "int4"}, "quant_storage")):
        with pytest.raises(UserError, match=needle):
            from_dict(ModelSection, {"name_or_path": "m", **bad}, source="recipe.yaml")


def test_a_run_written_before_quant_storage_existed_is_still_the_same_recipe(tmp_path):
    from lightalign.adapters.sft import Config
    from lightalign.config import from_dict
    from lightalign.io import write_json
    from lightalign.training import runs

    cfg = from_dict(Config, {"model": {"name_or_path": "m"}, "data": {"path": "d.jsonl"},
                             "output_dir": str(tmp_path)})
    runs.prepare_run(cfg, "sft")
    saved = json.loads((tmp_path / runs.RUN_CONFIG).read_text())
    del saved["model"]["quant_storage"]  # as an older release wrote it
    write_json(tmp_path / runs.RUN_CONFIG, saved)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    write_json(tmp_path / runs.METRICS, {"method": "sft"})
    assert runs.prepare_run(cfg, "sft")[2]  # complete: not "a different recipe"
    cfg.model.quant_storage = "bf16"
    with pytest.raises(Exception, match="model.quant_storage"):
        runs.prepare_run(cfg, "sft")


def test_the_window_not_logged_counts_once_in_the_mean_loss():
    """Trainer adds the losses of the steps since the last log to its total when training ends
    (and keeps them in its pending sum): the run's mean loss counts them once, before and after."""
    from types import SimpleNamespace

    import torch

    from lightalign.training import runs

    _, recorder = runs.make_callbacks()
    recorder.trainer = SimpleNamespace(_total_loss_scalar=10.0, _tr_loss=torch.tensor(2.0))
    assert recorder.totals()["loss_sum"] == 12.0   # mid-run: 10 logged + 2 pending
    recorder.trainer._total_loss_scalar = 12.0     # what Trainer does at the end of training
    recorder.on_train_end(None, None, None)
    assert recorder.totals()["loss_sum"] == 12.0
