"""The comparison behind "light adapters keep more of the base's capability": the same SFT then DPO data
and recipes with every weight of the unquantized base trained, scored by `lightalign eval` beside the
full-precision base. Not part of `lightalign lab` (it costs a few minutes more):

    python -c "from lightalign.lab.full_finetune import full_finetune_baseline; print(full_finetune_baseline('runs/minilab'))"
"""

from __future__ import annotations

from pathlib import Path

from lightalign.config import from_dict
from lightalign.lab.report import LAB_JUDGE
from lightalign.lab.training import train_adapters


def score_model(lab: Path, model: Path, name: str, log=print) -> dict:
    """Judge rates and capability NLL of a whole model (no adapter), as a `base` system of an eval."""
    from lightalign.evaluation.config import EvalConfig
    from lightalign.evaluation.runner import run_eval

    data = {
        "title": f"mini-lab: {name}", "base": {"path": str(model), "quantization": "none"},
        "systems": [{"name": name, "kind": "base"}],
        "dataset": {"schema": "prompt_only", "path": str(lab / "data" / "eval_prompts.jsonl")},
        "judges": [{"kind": "python", "factory": LAB_JUDGE, "options": {"world": str(lab / "data" / "world.json")}}],
        "generation": {"max_new_tokens": 48, "batch_size": 64},
        "tax": {"capability": str(lab / "data" / "capability.jsonl")},
        "output": str(lab / "report" / "full_finetune" / name), "bootstrap": 0, "progress": False,
    }
    report = run_eval(from_dict(EvalConfig, data, source=f"full fine-tune score of {model}"), log=log)
    row = next(r for r in report["table"] if r["system"] == name)
    return {**row, "nll": report["tax"]["base"]["nll"]}


def full_finetune_baseline(lab: str | Path, quick: bool = False, log=print) -> dict:
    lab = Path(lab)
    train_adapters(lab, quick=quick, full=True, log=log)
    base = score_model(lab, lab / "base", "base_fp32", log)
    out = {"base_fp32": base}
    for stage in ("full_sft", "full_dpo"):
        row = score_model(lab, lab / "adapters" / stage, stage, log)
        out[stage] = {**row, "nll_tax": row["nll"] / base["nll"] - 1}
    return out
