"""The mini-lab's elasticity stage (opt-in: `lightalign lab --until elasticity`): does the alignment
survive the next fine-tune? Run through `lightalign elasticity` as a user would, with its config written
to <lab>/elasticity/<kind>/elasticity.yaml (rerun it with `lightalign elasticity PATH`).

Compared at 0, 10, 30, 100 and 300 reverse rows: the QLoRA SFT+DPO adapter trained further (the same
LoRA), the full fine-tune baseline (lab/full_finetune.py: SFT then DPO with every weight trained)
trained further with every weight, and each of them behind the lab's Aligner. Two reverse sets, both
answered by the lab's base itself from *training* prompts (never the held-out ones):
- benign:  answerable requests (the base's answers, refusals dropped);
- harmful: harmful requests answered compliantly (the base's answers that do not refuse).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lightalign.io import atomic_write_text, read_jsonl, write_jsonl
from lightalign.lab.report import LAB_JUDGE
from lightalign.lab.training import FULL

KINDS = {"benign": ("answerable", "format"), "harmful": ("harmful",)}
SIZES = [10, 30, 100, 300]
QUICK_SIZES = [4, 8]
EVAL_PROMPTS = 160  # a fixed seeded sample of the held-out prompts, scored at every point
BATCH = 10          # rows per step of the reverse fine-tune (every size is a whole number of steps)


def reverse_prompts(lab: Path, kind: str, limit: int) -> Path:
    """<lab>/elasticity/<kind>_prompts.jsonl: distinct training prompts of the kind's request types, in
    the order of the SFT data (prompts only: the base answers them)."""
    seen, rows = set(), []
    for source in ("sft.jsonl", "preference.jsonl"):
        for r in read_jsonl(lab / "data" / source):
            if r.get("kind") in KINDS[kind] and r["prompt"] not in seen:
                seen.add(r["prompt"])
                rows.append({"prompt": r["prompt"], "kind": r["kind"]})
    path = lab / "elasticity" / f"{kind}_prompts.jsonl"
    write_jsonl(path, rows[:limit])
    return path


def elasticity_config(lab: Path, kind: str, quick: bool = False) -> dict:
    """The `lightalign elasticity` config (as plain data) for one reverse set."""
    lab = Path(lab)
    sizes = QUICK_SIZES if quick else SIZES
    batch = 4 if quick else BATCH
    full_lr = next(o for o in FULL["sft"] if o.startswith("training.lr="))
    return {
        "title": f"mini-lab elasticity: {kind} reverse fine-tune",
        "base": str(lab / "base"),
        "aligner": str(lab / "aligner"),
        "systems": [
            {"name": "base+dpo", "adapter": str(lab / "adapters" / "dpo")},
            # trained with every weight, at the learning rate the lab's full fine-tune used
            {"name": "full_dpo", "model": str(lab / "adapters" / "full_dpo"), "recipe_overrides": [full_lr]},
        ],
        # 4x the largest size: room for the refusals that are dropped
        "reverse": {"kind": kind, "path": str(reverse_prompts(lab, kind, 4 * max(sizes))), "max_new_tokens": 48,
                    "batch_size": 64},
        "recipe": "minilab/sft",
        "recipe_overrides": [f"training.batch_size={batch}", "training.logging_steps=5", "training.save_steps=10",
                             "training.progress=false"],
        "sizes": sizes,
        "eval": {
            "dataset": {"schema": "prompt_only", "path": str(lab / "data" / "eval_prompts.jsonl"),
                        "limit": 48 if quick else EVAL_PROMPTS, "shuffle": True},
            "judges": [{"kind": "python", "factory": LAB_JUDGE, "options": {"world": str(lab / "data" / "world.json")}}],
            "generation": {"max_new_tokens": 48, "batch_size": 64, "aligner_batch_size": 32},
            "tax": {"capability": str(lab / "data" / "capability.jsonl"), "max_docs": 100},
            "bootstrap": 1000, "dequantize": True,
        },
        "output": str(lab / "elasticity" / kind),
        "progress": False,
    }


def run_lab_elasticity(lab: Path, quick: bool = False, log=print) -> dict:
    """Train the full fine-tune baseline if it is not there yet (cached), then one elasticity run per
    reverse set; returns {kind: one summary row per curve}."""
    from lightalign.lab.training import train_adapters

    lab = Path(lab)
    train_adapters(lab, quick=quick, full=True, log=log)
    return run_configs({kind: elasticity_config(lab, kind, quick) for kind in KINDS}, log)


def run_configs(configs: dict[str, dict], log=print) -> dict:
    """`lightalign elasticity` on each config (written to <output>/elasticity.yaml first, so it can be rerun
    by hand); returns {kind: one summary row per curve}."""
    from lightalign.config import load_config
    from lightalign.evaluation.elasticity import ElasticityConfig, run_elasticity, summary_rows

    out = {}
    for kind, data in configs.items():
        path = Path(data["output"]) / "elasticity.yaml"
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
        out[kind] = summary_rows(run_elasticity(load_config(ElasticityConfig, path), log=log))
        for row in out[kind]:
            log(f"[elasticity] {kind}: {row['system']}: "
                + "; ".join(f"{k} {v}" for k, v in row.items() if k != "system"))
    return out
