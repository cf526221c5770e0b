"""Recipe validation: typed config and clear errors, before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightalign.config import from_dict
from lightalign.errors import UserError

from helpers.adapters import GPU_RECIPES, REPO, adapter_recipes


def _sft_dict(**over):
    d = {"model": {"name_or_path": "some/model"}, "data": {"path": "x.jsonl"}, "output_dir": "out"}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return d


@pytest.mark.parametrize("data, message", [
    (_sft_dict(lora={"rank": 8}), "unknown key 'lora.rank' (known: r, alpha, dropout"),
    (_sft_dict(lora={"alpah": 8}), "unknown key 'lora.alpah' (did you mean 'lora.alpha'?)"),
    (_sft_dict(lora={"r": "eight"}), "'lora.r' expects an integer"),
    (_sft_dict(lora={"r": 0}), "lora.r must be >= 1"),
    (_sft_dict(model={"quantization": "int3"}), "'model.quantization' must be one of 'nf4', 'none'"),
    (_sft_dict(data={"hub_id": "PKU-Alignment/PKU-SafeRLHF"}), "exactly one of data.path"),
    (_sft_dict(data={"schema": "alpaca"}), "data.schema: unknown schema 'alpaca'; known: prompt_only, prompt_completion"),
    (_sft_dict(training={"lr": "fast"}), "'training.lr' expects a number"),
    (_sft_dict(training={"save_total_limit": 1}), "save_total_limit must be >= 2"),
    (_sft_dict(training={"sampling": "by_length"}), "'training.sampling' must be one of 'random', 'group_by_length'"),
    (_sft_dict(trainng={"lr": 1e-4}), "unknown key 'trainng' (did you mean 'training'?)"),
    ({"data": {"path": "x"}, "output_dir": "o"}, "missing required key 'model'"),
    ({"model": {}, "data": {"path": "x"}, "output_dir": "o"}, "missing required key 'model.name_or_path'"),
])
def test_recipe_validation_errors_name_the_field(data, message):
    from lightalign.adapters import sft

    with pytest.raises(UserError) as e:
        from_dict(sft.Config, data, source="recipe.yaml")
    assert message in str(e.value)
    assert str(e.value).startswith("recipe.yaml: ")


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_length_grouping_is_refused_for_preference_pairs(method):
    import importlib

    config = importlib.import_module(f"lightalign.adapters.{method}").Config
    with pytest.raises(UserError, match="group_by_length needs single-sequence rows"):
        from_dict(config, _sft_dict(training={"sampling": "group_by_length"}), source="recipe.yaml")
    assert from_dict(config, _sft_dict(training={"sampling": "random"}), source="r").training.sampling == "random"


def test_valid_recipe_builds_typed_config():
    from lightalign.adapters import dpo

    cfg = from_dict(dpo.Config, _sft_dict(lora={"r": 8, "target_modules": ["q_proj", "v_proj"]},
                                          dpo={"beta": 0.2}, training={"lr": "5e-6"}), source="r")
    assert cfg.lora.r == 8 and cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.dpo.beta == 0.2 and cfg.training.lr == 5e-6 and cfg.model.quantization == "nf4"
    assert cfg.model.trust_remote_code is False and cfg.resume == "auto"


def test_train_cli_reports_bad_key_in_one_line(tmp_path, capsys):
    from lightalign.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: sft\nmodel: {name_or_path: m}\ndata: {path: d.jsonl}\noutput_dir: o\n")
    code = main(["train", str(recipe), "lora.rnk=4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "unknown key 'lora.rnk'" in err and str(recipe) in err







@pytest.mark.parametrize("path", adapter_recipes("minilab") + GPU_RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_recipes_parse(path):
    from lightalign.training import load_recipe

    recipe = load_recipe(path)
    assert recipe.method in ("sft", "dpo", "orpo") and recipe.path == path
    assert recipe.module.__name__ == f"lightalign.adapters.{recipe.method}"
    assert recipe.config.model.trust_remote_code is False


def test_gpu_recipes_cover_8gb_and_24gb_cards_for_sft_and_dpo():
    names = [p.stem for p in GPU_RECIPES]
    for card in ("8gb", "24gb"):
        for method in ("sft", "dpo"):
            assert any(card in n and n.endswith(method) for n in names), (card, method, names)
