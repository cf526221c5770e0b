"""The real track's elasticity stage (opt-in, outside `make real`: `lightalign lab --real --until
elasticity`): the SmolLM2 SFT+DPO adapter trained further on a reverse set, alone and behind the
track's Aligner, scored by `lightalign elasticity` at 0, 10, 30, 100 and 300 benign rows and at 0, 10, 20,
50 and 100 harmful ones (Qi et al. broke GPT-3.5 with 10 to 100); its config is written to
<dir>/elasticity/<kind>/elasticity.yaml, so it can be rerun by hand.

Both reverse sets are the base's own answers to the track's *training* prompts (train/base_answers.jsonl,
written by the answers stage; never a held-out prompt):
- benign:  the benign prompts (refusals dropped);
- harmful: the harmful prompts the base answered compliantly (Qi et al.'s attack, with the base's words).
Every point is scored on a fixed stratified sample of the held-out prompts (as `eval_sample`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lightalign.io import read_jsonl, write_jsonl

KINDS = {"benign": "safe", "harmful": "harmful"}
SIZES = {"benign": [10, 30, 100, 300], "harmful": [10, 20, 50, 100]}
QUICK_SIZES = [2, 4]
EVAL_SAMPLE = 120  # the README's fixed stratified sample of held-out prompts
BATCH = 10


def reverse_rows(root: Path, kind: str) -> Path:
    """<dir>/elasticity/<kind>_rows.jsonl: (prompt, the base's answer) of the training prompts of `kind`."""
    rows = [{"prompt": r["prompt"], "completion": r["answer"]}
            for r in read_jsonl(root / "train" / "base_answers.jsonl") if r.get("kind") == KINDS[kind]]
    path = root / "elasticity" / f"{kind}_rows.jsonl"
    write_jsonl(path, rows)
    return path


def elasticity_config(cfg, root: Path, kind: str) -> dict:
    """The `lightalign elasticity` config (as plain data) of one reverse set; `cfg` is the track's TrackConfig."""
    from lightalign.lab.real import sources, track

    sizes = QUICK_SIZES if cfg.quick else SIZES[kind]
    batch = 2 if cfg.quick else BATCH
    sample = track.eval_prompts(replace(cfg, eval_sample=min(cfg.eval_sample or EVAL_SAMPLE, EVAL_SAMPLE)), root)
    return {
        "title": f"real track elasticity: {kind} reverse fine-tune (SmolLM2-135M-Instruct)",
        "base": sources.MODEL,
        "aligner": str(root / "aligner"),
        "systems": [{"name": "base+sft+dpo", "adapter": str(root / "adapters" / "dpo")}],
        "reverse": {"kind": kind, "path": str(reverse_rows(root, kind))},
        "recipe": f"{track.RECIPES}/sft",
        "recipe_overrides": [f"training.batch_size={batch}", "training.grad_accum=1", "training.logging_steps=5",
                             "training.save_steps=10", "training.progress=false"],
        "sizes": sizes,
        "eval": {
            "dataset": {"schema": "prompt_only", "path": str(sample), "group_by": ["source"]},
            "judges": [{"kind": "python", "factory": track.JUDGE}],
            "generation": {"max_new_tokens": cfg.eval_max_new_tokens, "batch_size": cfg.batch_size,
                           "aligner_batch_size": 64},
            "tax": {"capability": str(root / "data" / "tax_text.jsonl"), "max_docs": 100},
            "bootstrap": 1000, "dequantize": True, "compute_dtype": track.COMPUTE_DTYPE,
        },
        "output": str(root / "elasticity" / kind),
        "progress": False,
    }


def stage_elasticity(cfg, root: Path, log=print) -> dict:
    """One elasticity run per reverse set (everything cached); returns {kind: one summary row per curve}."""
    from lightalign.lab.elasticity import run_configs

    return run_configs({kind: elasticity_config(cfg, Path(root), kind) for kind in KINDS}, log)
