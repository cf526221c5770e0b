"""Values that cannot hurt: a size past what the model or the machine can take is refused with one line
naming the field (exit 2) before anything loads, and user patterns and plugins run within a time budget."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from helpers.adapters import write_lab_data

from lightalign.errors import UserError


@pytest.fixture
def tiny_recipe(tmp_path, tiny_model_dir, small_splits):
    paths = write_lab_data(tmp_path, small_splits, n=8)
    recipe = {"method": "sft", "model": {"name_or_path": str(tiny_model_dir), "quantization": "none"},
              "lora": {"r": 4, "alpha": 8}, "data": {"path": str(paths["sft"]), "max_length": 64},
              "training": {"max_steps": 1, "batch_size": 2, "progress": False, "save_steps": 0},
              "output_dir": str(tmp_path / "out")}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def train_cli(recipe, *overrides):
    return subprocess.run([sys.executable, "-m", "lightalign", "train", str(recipe), *overrides],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("override, field, says", [
    ("data.max_length=1000000000", "data.max_length=1000000000", "at most 512 tokens"),
    ("training.batch_size=1000000000", "training.batch_size=1000000000 x data.max_length=64", "GiB"),
])
def test_a_size_the_model_or_machine_cannot_take_is_refused_before_anything_loads(tiny_recipe, override, field,
                                                                                   says):
    run = train_cli(tiny_recipe, override)
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert lines[0].startswith(f"error: {field}") or field in lines[0], lines[0]
    assert says in lines[0]
    assert not (tiny_recipe.parent / "out").exists()  # refused before the run folder, let alone a model


def test_the_context_length_comes_from_the_models_own_config(tiny_model_dir):
    from lightalign import bounds

    config = bounds.model_config(str(tiny_model_dir))
    assert bounds.context_length(config) == json.loads((tiny_model_dir / "config.json").read_text())[
        "max_position_embeddings"] == 512
    bounds.check_length(512, "data.max_length", 512, "m")  # the whole context is allowed
    with pytest.raises(UserError, match=r"generation.max_new_tokens=500 .* at most 412 \(its context of 512"):
        bounds.check_length(500, "generation.max_new_tokens", 512, "m", allowance=100)
    assert bounds.model_config("no-such-org/no-such-model") is None  # nothing at hand: nothing to bound by


def test_a_backtracking_rewrite_pattern_fails_fast_with_the_rule_named():
    from lightalign.evaluation.rewrites import build_rewriters, reword

    # `regex` answers the (a+)+$ on 41 characters at once, and correctly: no match
    assert reword("a" * 40 + "!", build_rewriters([{"name": "nested", "pattern": "(a+)+$", "replace": "x"}])) == []
    slow = build_rewriters([{"name": "alt", "pattern": "(a|aa)+$", "replace": "x"}])
    with pytest.raises(UserError, match=r"robustness.rewrites\[0\].pattern: '\(a\|aa\)\+\$' took over 1 s "
                                        r"on a 41-character prompt"):
        reword("a" * 40 + "c", slow)
    fine = build_rewriters([{"name": "lead", "pattern": r"^(\w+)", "replace": r"Well, \1"}])
    assert [r.text for r in reword("hello there?", fine)] == ["Well, hello there?"]


def hanging_rewriter():
    import threading

    def rewrite(prompt, rng):
        threading.Event().wait()  # never returns
    return rewrite


def test_a_hanging_plugin_ends_the_run_with_one_line(monkeypatch):
    from lightalign import plugins
    from lightalign.evaluation.rewrites import build_rewriters, reword

    monkeypatch.setattr("lightalign.evaluation.rewrites.CALL_SECONDS", 0.5)
    rewriters = build_rewriters([{"name": "stuck", "factory": f"{__name__}:hanging_rewriter"}])
    with pytest.raises(UserError, match=r"robustness.rewrites\[0\].factory: did not return within"):
        reword("Hello?", rewriters)
    with pytest.raises(ZeroDivisionError):  # a plugin's own error is its own, not a timeout
        plugins.with_budget(lambda: 1 / 0, (), 5, "x")
