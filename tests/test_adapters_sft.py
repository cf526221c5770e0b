"""QLoRA SFT end to end on the tiny 4-bit model: the base stays frozen, the adapter saves in PEFT's
format and reloads to the same outputs, metrics.json is written, a finished run is not redone."""

from __future__ import annotations

import json

import pytest
from helpers.adapters import tiny_config, write_lab_data


def _base_snapshot(model):
    """Raw bytes of every base weight (4-bit packed data and full-precision ones)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, small_splits):
    from lightalign.adapters import sft
    from lightalign.training import runs

    tmp = tmp_path_factory.mktemp("sft")
    paths = write_lab_data(tmp, small_splits)
    _, cfg = tiny_config("sft", tiny_model_dir, paths["sft"], tmp / "out")
    out_dir, resume_from, done = runs.prepare_run(cfg, "sft")
    trainer, tok, parts = sft.build_trainer(cfg)
    before = _base_snapshot(trainer.model)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    grads_seen = {}

    from transformers import TrainerCallback

    class WatchGrads(TrainerCallback):  # after backward, before the optimizer clears them
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            for n, p in model.named_parameters():
                grads_seen[n] = p.grad is not None and bool(p.grad.abs().sum() > 0)

    trainer.add_callback(WatchGrads())
    trainer.train()
    runs.finish(trainer, tok, out_dir, "sft", 0.0, parts["recorder"], parts["extras"],
                base_name=cfg.model.name_or_path)
    return {"cfg": cfg, "trainer": trainer, "tok": tok, "before": before, "lora_before": lora_before,
            "grads": grads_seen, "out": out_dir}


def test_base_weights_never_receive_gradients_nor_change(trained):
    import torch

    model = trained["trainer"].model
    grads = trained["grads"]
    assert grads and any(v for n, v in grads.items() if "lora_" in n)
    assert not any(v for n, v in grads.items() if "lora_" not in n)
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert not p.requires_grad, n
            assert torch.equal(p.detach(), trained["before"][n]), n
    changed = [n for n, p in model.named_parameters() if "lora_B" in n and not torch.equal(p, trained["lora_before"][n])]
    assert changed, "the adapter did not learn"


def test_adapter_saved_in_peft_format_and_round_trips(trained):
    import torch
    from peft import PeftModel

    from lightalign import loading

    out = trained["out"]
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not list(out.glob("*.bin"))
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["base_model_name_or_path"] == trained["cfg"].model.name_or_path
    fresh = loading.load_base(trained["cfg"].model, training=False)
    loading.keep_4bit_layout_trainable(fresh)  # bnb's exact path, not its bf16 CPU inference kernel
    reloaded = PeftModel.from_pretrained(fresh, str(out)).eval()
    model = trained["trainer"].model.eval()
    ids = torch.tensor([[1, 5, 9, 14, 33, 2]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=1e-4)
        with model.disable_adapter():
            base_logits = model(input_ids=ids).logits
    assert not torch.allclose(reloaded(input_ids=ids).logits, base_logits, atol=1e-4)


def test_metrics_json_has_curve_throughput_memory(trained):
    m = json.loads((trained["out"] / "metrics.json").read_text())
    assert m["method"] == "sft" and m["global_step"] == 4
    assert len(m["loss_curve"]) == 4 and all(p["loss"] > 0 for p in m["loss_curve"])
    assert m["tokens"] > 0 and m["tokens_per_second"] > 0 and m["peak_memory_bytes"] > 0
    assert 0 <= m["padding_waste"] < 0.2  # packed rows: pad only at rows' tails
    assert m["label_audit"]["sequences_checked"] > 0


def test_finished_run_is_skipped(trained, capsys):
    from lightalign.adapters import sft

    mtime = (trained["out"] / "metrics.json").stat().st_mtime
    (trained["out"] / "run_config.json").exists()
    assert sft.train(trained["cfg"]) == trained["out"]
    assert "already complete" in capsys.readouterr().out
    assert (trained["out"] / "metrics.json").stat().st_mtime == mtime


def test_changed_recipe_on_finished_run_is_refused(trained):
    import dataclasses

    from lightalign.adapters import sft
    from lightalign.errors import UserError

    cfg = trained["cfg"]
    other = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, r=8))
    with pytest.raises(UserError, match="lora.r"):
        sft.train(other)


def test_orpo_reference_free_run(tmp_path, tiny_model_dir, small_splits):
    """ORPO trains an adapter from preference pairs with no reference adapter or model."""
    from lightalign.adapters import orpo

    paths = write_lab_data(tmp_path, small_splits, n=16)
    _, cfg = tiny_config("orpo", tiny_model_dir, paths["preference"], tmp_path / "orpo", training={"max_steps": 2})
    trainer, tok, parts = orpo.build_trainer(cfg)
    assert trainer.model.peft_config.keys() == {"default"}
    trainer.train()
    from lightalign.training.runs import loss_curve

    losses = [p["loss"] for p in loss_curve(trainer.state.log_history)]
    assert len(losses) == 2 and all(x == x and x > 0 for x in losses)


def test_load_for_inference_matches_the_trained_adapter(trained):
    import torch

    from lightalign.loading import load_for_inference

    model, tok = load_for_inference(None, adapter=trained["out"], quantization="nf4")  # base named by the adapter
    assert tok.pad_token_id != tok.eos_token_id and not model.training
    from lightalign import loading

    loading.keep_4bit_layout_trainable(model)  # bnb's exact path, as in the round-trip test
    ids = torch.tensor([[1, 5, 9, 14, 33, 2]])
    trainer_model = trained["trainer"].model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, trainer_model(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-4)


def test_malformed_rows_are_reported_on_stderr(tmp_path, tiny_model_dir, small_splits, capsys):
    from lightalign.adapters import sft

    paths = write_lab_data(tmp_path, small_splits, n=24)
    with open(paths["sft"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"not": "a lab row"}) + "\n")
    _, cfg = tiny_config("sft", tiny_model_dir, paths["sft"], tmp_path / "out")
    sft.build_trainer(cfg)
    err = capsys.readouterr().err
    assert f"{paths['sft']}: 1 of 25 rows malformed (skipped), first: {paths['sft']}:25:" in err


def test_report_to_tensorboard_writes_local_event_files(tmp_path, tiny_model_dir, small_splits):
    from lightalign.training import load_recipe, train

    paths = write_lab_data(tmp_path, small_splits, n=16)
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        f"method: sft\nmodel: {{name_or_path: {tiny_model_dir}}}\nlora: {{r: 4, alpha: 8, dropout: 0.0}}\n"
        f"data: {{path: {paths['sft']}, max_length: 64}}\noutput_dir: {tmp_path / 'out'}\n"
        "training: {max_steps: 2, batch_size: 4, logging_steps: 1, gradient_checkpointing: false, "
        "progress: false, report_to: tensorboard}\n")
    loaded = load_recipe(recipe)
    assert loaded.config.training.report_to == "tensorboard"
    out = train(loaded)
    events = list((out / "checkpoints").glob("runs/*/events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert load_recipe(recipe, ["training.report_to=none"]).config.training.report_to == "none"
