"""A run killed mid-way and resumed ends with the same adapter as an uninterrupted one.

Checkpoints hold adapter, optimizer, scheduler, RNG and data position (transformers' Trainer); ours
add a commit marker so a checkpoint cut short while saving is never resumed from. Dropout is on and
the data shuffled, so a resume that lost RNG or data position would end elsewhere.
"""

from __future__ import annotations

import json

import pytest
from helpers.adapters import tiny_config, write_lab_data


class Killed(Exception):
    pass


def _kill_at(step: int):
    from transformers import TrainerCallback

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Killed(f"killed at step {step}")

    return KillAt()


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir, small_splits):
    tmp = tmp_path_factory.mktemp("resume")
    return tmp, write_lab_data(tmp, small_splits, n=48)


def _cfg(tiny_model_dir, paths, out, method="sft"):
    data = paths["sft"] if method == "sft" else paths["preference"]
    return tiny_config(method, tiny_model_dir, data, out,
                       lora={"dropout": 0.1}, training={"max_steps": 6, "save_steps": 2, "lr": 5e-3})


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_killed_and_resumed_run_matches_uninterrupted(setup, tiny_model_dir, method, capsys):
    import torch

    from lightalign.training import runs

    tmp, paths = setup
    module, cfg_full = _cfg(tiny_model_dir, paths, tmp / f"{method}-full", method)
    full = _adapter(module.train(cfg_full))

    _, cfg = _cfg(tiny_model_dir, paths, tmp / f"{method}-killed", method)
    with pytest.raises(Killed):
        module.train(cfg, callbacks=[_kill_at(5)])  # after checkpoint-4, before checkpoint-6
    assert not runs.is_complete(cfg.output_dir)
    ckpts = runs.checkpoint_dir(cfg.output_dir)
    assert runs.last_complete_checkpoint(cfg.output_dir) == ckpts / "checkpoint-4"
    # a checkpoint cut short while being written: files present, commit marker missing
    torn = ckpts / "checkpoint-5"
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"half a file")
    assert runs.last_complete_checkpoint(cfg.output_dir) == ckpts / "checkpoint-4"
    ckpt4 = _adapter(ckpts / "checkpoint-4")

    resumed_dir = module.train(cfg)
    assert not torn.exists()  # dropped, so it cannot push a complete checkpoint out of save_total_limit
    metrics = json.loads((resumed_dir / "metrics.json").read_text())
    assert metrics["resumed_from"].endswith("checkpoint-4") and metrics["global_step"] == 6
    out = capsys.readouterr().out
    assert "resuming from" in out and "checkpoint-4 (step 4)" in out
    # the whole run's curve and totals, not only the resumed segment's
    full_metrics = json.loads((tmp / f"{method}-full" / "metrics.json").read_text())
    assert [p["step"] for p in metrics["loss_curve"]] == list(range(1, 7))
    assert [p["loss"] for p in metrics["loss_curve"]] == pytest.approx([p["loss"] for p in full_metrics["loss_curve"]],
                                                                       rel=1e-4)
    assert metrics["tokens"] == full_metrics["tokens"] > 0
    assert metrics["processed_tokens"] == full_metrics["processed_tokens"]
    assert metrics["train_loss_mean"] == pytest.approx(full_metrics["train_loss_mean"], rel=1e-4)
    resumed = _adapter(resumed_dir)
    assert full.keys() == resumed.keys()
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], atol=1e-5, rtol=1e-4)

    # control: stopping at step 4 is not the same adapter (the comparison above can fail)
    assert any(not torch.allclose(ckpt4[k], full[k], atol=1e-5) for k in full)


def test_resume_refuses_a_different_recipe(setup, tiny_model_dir):
    import dataclasses

    from lightalign.adapters import sft
    from lightalign.errors import UserError

    tmp, paths = setup
    _, cfg = _cfg(tiny_model_dir, paths, tmp / "changed")
    with pytest.raises(Killed):
        sft.train(cfg, callbacks=[_kill_at(3)])
    changed = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, lr=1e-3))
    with pytest.raises(UserError, match="training.lr"):
        sft.train(changed)
    longer = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, max_steps=8))
    assert sft.train(longer).joinpath("metrics.json").exists()  # more steps is a safe change


def test_resume_never_starts_over(setup, tiny_model_dir):
    import dataclasses

    from lightalign.adapters import sft
    from lightalign.training import runs

    tmp, paths = setup
    _, cfg = _cfg(tiny_model_dir, paths, tmp / "never")
    with pytest.raises(Killed):
        sft.train(cfg, callbacks=[_kill_at(3)])
    out = sft.train(dataclasses.replace(cfg, resume="never"))
    assert json.loads((out / "metrics.json").read_text())["resumed_from"] is None
    assert runs.is_complete(out)


def test_output_dir_problems_are_named_before_training(tmp_path):
    from dataclasses import replace

    from lightalign.adapters.sft import Config
    from lightalign.config import from_dict
    from lightalign.errors import UserError
    from lightalign.training import runs

    cfg = from_dict(Config, {"model": {"name_or_path": "m"}, "data": {"path": "d.jsonl"},
                             "output_dir": str(tmp_path / "run")})
    (tmp_path / "afile").write_text("x")
    for output_dir, needle in (("", "output_dir is empty"), (str(tmp_path / "afile"), "a file is in the way"),
                               (str(tmp_path / "afile" / "run"), "a file is in the way")):
        with pytest.raises(UserError, match=needle):
            runs.prepare_run(replace(cfg, output_dir=output_dir), "sft")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run_config.json").write_text('{"method": "sft", "model": ')  # torn
    with pytest.raises(UserError, match=r"run_config.json:1: invalid JSON.*set resume=never"):
        runs.prepare_run(cfg, "sft")
