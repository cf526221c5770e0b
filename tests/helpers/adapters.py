"""Builders the adapter tests share: small data files from the session's world, tiny recipe configs
on the random tiny Llama (a few fast steps), and the adapter recipes shipped under recipes/."""

from __future__ import annotations

import json
from pathlib import Path

from lightalign.config import from_dict

REPO = Path(__file__).resolve().parents[2]


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
        "data": {"path": str(data_path), "schema": "prompt_completion" if method == "sft" else "preference",
                 "max_length": 64},
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


def adapter_recipes(folder: str) -> list[Path]:
    """The SFT/DPO/ORPO recipes in recipes/<folder> (the Aligner's share the folders)."""
    import yaml

    paths = sorted((REPO / "recipes" / folder).glob("*.yaml"))
    return [p for p in paths if (yaml.safe_load(p.read_text()) or {}).get("method") in ("sft", "dpo", "orpo")]


GPU_RECIPES = adapter_recipes("gpu")
