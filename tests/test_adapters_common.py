"""Recipe validation (typed config, clear errors) + helpers the other adapter tests import.

Helpers live here (not in conftest, which the lead owns): tiny lab-schema data files and tiny
recipe configs on the session's random tiny Llama, so each training test takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightalign.config import from_dict
from lightalign.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write_lab_data(tmp_path: Path, small_splits, n: int = 48) -> dict:
    paths = {}
    for name in ("sft", "preference"):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in small_splits[name][:n]), encoding="utf-8")
        paths[name] = p
    return paths


def tiny_config(method: str, model_dir, data_path, out_dir, **sections):
    """A recipe Config for a few fast steps on the tiny model (4-bit unless overridden)."""
    import importlib

    module = importlib.import_module(f"lightalign.adapters.{method}")
    data = {
        "model": {"name_or_path": str(model_dir)},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"path": str(data_path), "schema": "lab", "max_length": 64},
        "training": {"max_steps": 4, "batch_size": 4, "lr": 1e-2, "logging_steps": 1, "save_steps": 2,
                     "gradient_checkpointing": False, "progress": False, "warmup_ratio": 0.0},
        "output_dir": str(out_dir),
    }
    for key, value in sections.items():
        data.setdefault(key, {})
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    return module, from_dict(module.Config, data, source="test")


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
    (_sft_dict(data={"schema": "alpaca"}), "'data.schema' must be one of"),
    (_sft_dict(training={"lr": "fast"}), "'training.lr' expects a number"),
    (_sft_dict(training={"save_total_limit": 1}), "save_total_limit must be >= 2"),
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




def adapter_recipes(folder: str) -> list[Path]:
    """Recipes of this issue's methods (other helpers' recipes share the folders)."""
    import yaml

    paths = sorted((REPO / "recipes" / folder).glob("*.yaml"))
    return [p for p in paths if (yaml.safe_load(p.read_text()) or {}).get("method") in ("sft", "dpo", "orpo")]


GPU_RECIPES = adapter_recipes("gpu")


@pytest.mark.parametrize("path", adapter_recipes("minilab") + GPU_RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_recipes_parse(path):
    from lightalign.adapters.runs import load_recipe

    module, cfg = load_recipe(path)
    assert module.__name__.rsplit(".", 1)[-1] in ("sft", "dpo", "orpo")
    assert cfg.model.trust_remote_code is False


def test_gpu_recipes_cover_8gb_and_24gb_cards_for_sft_and_dpo():
    names = [p.stem for p in GPU_RECIPES]
    for card in ("8gb", "24gb"):
        for method in ("sft", "dpo"):
            assert any(card in n and n.endswith(method) for n in names), (card, method, names)
