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
    ("data.max_length=1000000000", "data.max_length must be <= 2,097,152", "got 1,000,000,000"),  # the issue's
    ("data.max_length=4096", "data.max_length=4096 is longer than", "at most 512 tokens"),  # the tiny model's context
    ("training.batch_size=60000 data.max_length=512", "training.batch_size=60000 x data.max_length=512", "GiB, more than"),
])
def test_a_size_the_model_or_machine_cannot_take_is_refused_before_anything_loads(tiny_recipe, override, field,
                                                                                   says):
    run = train_cli(tiny_recipe, *override.split())
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert lines[0].startswith(f"error: {field}") or field in lines[0], lines[0]
    assert says in lines[0]
    assert not (tiny_recipe.parent / "out").exists()  # refused before the run folder, let alone a model


@pytest.mark.parametrize("method, overrides, says", [
    ("sft", ["data.max_length=1000000000"], "data.max_length must be <= 2,097,152"),
    ("dpo", ["data.max_length=4096"], "data.max_length=4096 is longer than"),
    ("orpo", ["lora.r=1000000000"], "lora.r=1000000000 is more than"),  # used to be named only by memory
    ("sft", ["lora.r=65"], "at most 64 (its hidden size"),  # the tiny model's hidden size: the whole rank
    ("aligner", ["data.max_length=4096"], "data.max_length=4096 is longer than"),
    ("aligner", ["max_new_tokens=100000"], "max_new_tokens=100000 is longer than"),
    ("aligner", ["lora.enabled=true", "lora.r=4096"], "lora.r=4096 is more than"),
    ("inspector", ["data.max_length=4096"], "data.max_length=4096 is longer than"),
    ("inspector", ["batch_size=1000000"], "batch_size=1000000 is more than 65,536 rows"),
    ("inspector", ["mode=lora", "lora.r=4096"], "lora.r=4096 is more than"),
])
def test_every_method_refuses_sizes_before_reading_its_data(tmp_path, tiny_model_dir, method, overrides, says):
    """One check (training.runs.prepare_run -> sections.check_bounds) for every method, before the data is
    read: the recipe's data file does not even exist."""
    from lightalign.training import load_recipe, train

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"method": method, "model": {"name_or_path": str(tiny_model_dir)},
                                      "data": {"path": str(tmp_path / "no-such-rows.jsonl"), "max_length": 64},
                                      "output_dir": str(tmp_path / "out")}))
    extra = ["model.quantization=none"]
    with pytest.raises(UserError, match=says.replace("(", r"\(")) as e:
        train(load_recipe(recipe, extra + overrides))
    assert "\n" not in str(e.value) and "no-such-rows" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_a_model_without_a_context_length_in_its_config_is_bounded_by_its_tokenizer(tmp_path):
    from lightalign import bounds

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    assert bounds.model_context(str(tmp_path), bounds.model_config(str(tmp_path))) is None  # nothing says
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": int(1e30)}))
    assert bounds.model_context(str(tmp_path), bounds.model_config(str(tmp_path))) is None  # "not set"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 256}))
    assert bounds.model_context(str(tmp_path), bounds.model_config(str(tmp_path))) == 256
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    assert bounds.model_context(str(tmp_path), bounds.model_config(str(tmp_path))) == 512  # the config first


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

    # `regex` answers the issue's (a+)+$ on 41 characters at once, and correctly: no match
    assert reword("a" * 40 + "!", build_rewriters([{"name": "nested", "pattern": "(a+)+$", "replace": "x"}])) == []
    slow = build_rewriters([{"name": "alt", "pattern": "(a|aa)+$", "replace": "x"}])
    with pytest.raises(UserError, match=r"robustness.rewrites\[0\].pattern: '\(a\|aa\)\+\$' took over 1 s "
                                        r"on a 41-character prompt"):
        reword("a" * 40 + "c", slow)
    fine = build_rewriters([{"name": "lead", "pattern": r"^(\w+)", "replace": r"Well, \1"}])
    assert [r.text for r in reword("hello there?", fine)] == ["Well, hello there?"]


def test_the_issues_rewrite_rule_in_an_eval_config_neither_hangs_nor_drops_the_prompt(monkeypatch):
    """Through the eval's own path (robustness.rewrites -> reworded_records): the issue's (a+)+$ on
    "a"*40 + "!" is answered (no match: no rewording; a prompt it matches is rewritten), and a pattern the
    engine does backtrack on stops the run at the budget with the rule named (the timeout's own outcome)."""
    from lightalign.config import from_dict
    from lightalign.evaluation import rewrites
    from lightalign.evaluation.config import Robustness
    from lightalign.evaluation.robustness import reworded_records

    rb = from_dict(Robustness, {"rewrites": [{"name": "nested", "pattern": "(a+)+$", "replace": "b"}]},
                   source="eval.yaml")
    out, of, info = reworded_records(rb, [{"id": "p", "prompt": "a" * 40 + "!"}, {"id": "q", "prompt": "aaa"}], 0)
    assert [(r["id"], r["prompt"], r["rewording_of"]) for r in out] == [("q~nested", "b", "q")]
    assert info["rules"] == ["nested"]

    monkeypatch.setattr(rewrites, "PATTERN_SECONDS", 0.2)
    rb = from_dict(Robustness, {"rewrites": ["polite", {"name": "alt", "pattern": "(a|aa)+$", "replace": "x"}]},
                   source="eval.yaml")
    with pytest.raises(UserError, match=r"^robustness.rewrites\[1\].pattern: '\(a\|aa\)\+\$' took over 0.2 s "
                                        r"on a 41-character prompt"):
        reworded_records(rb, [{"id": "p", "prompt": "a" * 40 + "c"}], 0)


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


def eval_config(base, **sections):
    from lightalign.config import from_dict
    from lightalign.evaluation.config import EvalConfig

    return from_dict(EvalConfig, {"base": {"path": str(base)}, "dataset": {"path": "x.jsonl"},
                                  "judges": [{"kind": "refusal"}], "systems": [{"name": "base", "kind": "base"}],
                                  **sections}, source="eval.yaml")


@pytest.mark.parametrize("sections, says", [
    ({"generation": {"max_new_tokens": 10**9}}, "generation.max_new_tokens=1000000000 is longer than"),
    ({"generation": {"batch_size": 4096, "max_new_tokens": 512}},  # 4096 x 512 x 512 B of KV cache = 1 GiB
     "generation.batch_size=4096 x generation.max_new_tokens=512: needs ~1.0 GiB, more than a small machine's RAM"),
    ({"tax": {"capability": "t.jsonl", "max_length": 4096}}, "tax.max_length=4096 is longer than"),
])
def test_eval_lengths_and_batches_are_bounded_by_the_base_before_it_loads(tiny_model_dir, sections, says,
                                                                          monkeypatch):
    from lightalign import bounds
    from lightalign.evaluation.config import resolve_base

    monkeypatch.setattr(bounds, "memory_budget", lambda: (bounds.GIB // 2, "a small machine's RAM"))

    with pytest.raises(UserError, match=says.replace("(", r"\(").replace("+", r"\+")):
        resolve_base(eval_config(tiny_model_dir, **sections))
    assert resolve_base(eval_config(tiny_model_dir)).path == str(tiny_model_dir)  # the defaults fit


@pytest.mark.parametrize("sections, field", [
    ({"bootstrap": 10**12}, "bootstrap must be <= 100,000"),
    ({"generation": {"batch_size": 10**9}}, "generation.batch_size must be <= 65,536"),
    ({"robustness": {"per_prompt": 10**9}}, "robustness.per_prompt must be <= 1,000"),
])
def test_eval_counts_without_a_model_bound_have_a_ceiling(tiny_model_dir, sections, field):
    with pytest.raises(UserError, match=f"eval.yaml: {field}"):
        eval_config(tiny_model_dir, **sections)


def test_serve_and_app_counts_have_a_ceiling(tmp_path):
    from lightalign.app.config import AppConfig
    from lightalign.config import from_dict
    from lightalign.serve.config import ServeConfig

    with pytest.raises(UserError, match="serve config: max_wait_ms must be <= 60,000, got 1,000,000,000,000"):
        ServeConfig(max_wait_ms=1e12).validate()
    with pytest.raises(UserError, match="serve config: max_tokens_limit must be <= 1,048,576, got 1,000,000,000"):
        ServeConfig(max_tokens_limit=10**9).validate()
    ServeConfig().validate()  # the defaults fit
    with pytest.raises(UserError, match="app.yaml: field max_queue must be <= 100,000"):
        from_dict(AppConfig, {"base": str(tmp_path), "max_queue": 10**9}, source="app.yaml")


class SlowJudge:
    name, metrics = "slow", ["ok"]

    def score(self, records, replies):
        import threading

        threading.Event().wait()  # never returns


def test_a_judge_plugin_that_hangs_is_named_within_its_budget(monkeypatch):
    from lightalign import plugins

    monkeypatch.setattr(plugins, "JUDGE_SECONDS_FIXED", 0.2)
    monkeypatch.setattr(plugins, "JUDGE_SECONDS_PER_ITEM", 0.1)
    judge = plugins.build_judge(f"{__name__}:SlowJudge", {}, "judges[0]")
    assert (judge.name, judge.metrics) == ("slow", ["ok"])
    with pytest.raises(UserError, match=r"judges\[0\].score: did not return within 0.3 s"):
        judge.score([{"prompt": "a"}], ["b"])
