"""The lab's training stages, each a recipe under recipes/minilab/ run through `lightalign.training`
as any user would (`lightalign train minilab/sft model.name_or_path=... output_dir=...`):

- adapters: QLoRA SFT on <lab>/base, then DPO continuing from the SFT adapter (<lab>/adapters/{sft,dpo});
- diversity: the same SFT recipe on narrow data (every prompt in one phrasing family), to show what
  diverse alignment inputs buy (<lab>/adapters/sft_one_family);
- aligner:  the Aligner trained from <lab>/base on the lab's triples (<lab>/aligner);
- full fine-tune baseline: the same SFT and DPO data with every weight of an unquantized base trained.

Each run is cached by a key over its validated recipe and the keys of the stages it reads, so a
different seed, world or recipe retrains it, and an unchanged one is reused.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from lightalign.lab.cache import read_key, stage_key, train_once

ADAPTER_STAGES = ("sft", "dpo")
# --small: a wiring check with a few steps, not a model that meets the targets
QUICK = {
    "adapter": ["training.max_steps=6", "training.logging_steps=2", "training.save_steps=3", "data.max_rows=192"],
    "aligner": ["training.epochs=1", "identity.epochs=0.5"],
}
# The full fine-tune baseline: same data and recipe, every weight trained, unquantized base.
FULL = {"sft": ["model.quantization=none", "lora.enabled=false", "training.lr=3e-4"],
        "dpo": ["model.quantization=none", "lora.enabled=false", "lora.init_from=null", "training.lr=5e-6"]}


def run_recipe(name: str, overrides: list[str], upstream: list, log=print, folder: str = "minilab") -> dict:
    """Train recipes/<folder>/<name>.yaml with `overrides` unless its output holds a complete run of the
    same recipe and upstream keys; returns the run's metrics.json."""
    from lightalign.training import load_recipe, train
    from lightalign.training.runs import METRICS, is_complete

    recipe = load_recipe(f"{folder}/{name}", overrides)
    out = Path(recipe.config.output_dir)
    key = stage_key("train", name, upstream, asdict(recipe.config))
    label = recipe.method if out.name == recipe.method else f"{recipe.method}: {out.name}"
    train_once(out, key, lambda: train(recipe), is_complete, log, label)
    return json.loads((out / METRICS).read_text(encoding="utf-8"))


def adapter_overrides(lab: Path, stage: str, full: bool = False) -> list[str]:
    """Lab paths for an adapter stage; `full`: the full fine-tune baseline in <lab>/adapters/full_<stage>."""
    name = f"full_{stage}" if full else stage
    base = lab / "adapters" / "full_sft" if (full and stage == "dpo") else lab / "base"
    common = [f"model.name_or_path={base}", f"output_dir={lab / 'adapters' / name}"] + (FULL[stage] if full else [])
    if stage == "sft":
        return common + [f"data.path={lab / 'data' / 'sft.jsonl'}"]
    common.append(f"data.path={lab / 'data' / 'preference.jsonl'}")
    return common if full else common + [f"lora.init_from={lab / 'adapters' / 'sft'}"]


def train_adapters(lab: Path, quick: bool = False, full: bool = False, log=print) -> dict:
    """SFT, then DPO whose reference is the SFT adapter; returns both runs' metrics."""
    lab = Path(lab)
    result = {}
    for stage in ADAPTER_STAGES:
        upstream = [read_key(lab / "base"), read_key(lab / "data")]
        if stage == "dpo":
            upstream.append(read_key(lab / "adapters" / ("full_sft" if full else "sft")))
        extra = QUICK["adapter"] if quick else []
        name = f"full_{stage}" if full else stage
        result[name] = run_recipe(stage, adapter_overrides(lab, stage, full) + extra, upstream, log)
    return result


def train_one_family(lab: Path, quick: bool = False, log=print) -> dict:
    """The SFT recipe on sft_one_family.jsonl: same requests and size as sft.jsonl, one phrasing family."""
    lab = Path(lab)
    overrides = [f"model.name_or_path={lab / 'base'}", f"data.path={lab / 'data' / 'sft_one_family.jsonl'}",
                 f"output_dir={lab / 'adapters' / 'sft_one_family'}"] + (QUICK["adapter"] if quick else [])
    return run_recipe("sft", overrides, [read_key(lab / "base"), read_key(lab / "data")], log)


def train_aligner(lab: Path, quick: bool = False, log=print) -> dict:
    lab = Path(lab)
    overrides = [f"model.name_or_path={lab / 'base'}", f"data.path={lab / 'data' / 'aligner.jsonl'}",
                 f"output_dir={lab / 'aligner'}"] + (QUICK["aligner"] if quick else [])
    return run_recipe("aligner", overrides, [read_key(lab / "base"), read_key(lab / "data")], log)
