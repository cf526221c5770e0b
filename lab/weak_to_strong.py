"""Weak-to-strong in the mini-lab: the Aligner's corrections of the base's own answers become
the only preference data for a DPO adapter on the base (chosen = correction, rejected = answer).

This is the Aligner paper's weak-to-strong set-up in miniature: no hand-written preference pair
is used, only what the small corrector produced on *training* prompts. The adapter starts fresh
on the base (no SFT adapter), so its reference is the base with the adapter disabled.
"""

from __future__ import annotations

from pathlib import Path


def run_weak_to_strong(lab_dir: Path, quick: bool = False) -> dict:
    from lightalign.adapters.lab_stage import evaluate_adapter, run_stage
    from lightalign.aligner.weak_to_strong import build_w2s_preference
    from lightalign.io import read_jsonl

    lab = Path(lab_dir)
    data = build_w2s_preference(lab, limit=200 if quick else None)
    out = lab / "adapters" / "w2s_dpo"
    # From the bare base, DPO needs a larger step than when it polishes an SFT adapter (measured:
    # lr 5e-5 x 1 epoch barely moves the base; 5e-4 collapses it).
    extra = [f"data.path={data}", "lora.init_from=null", f"output_dir={out}", "training.lr=1e-4", "training.epochs=2"]
    metrics = run_stage(lab, "dpo", quick, extra=extra)
    scores = evaluate_adapter(lab, out, quick=quick)
    return {"pairs": len(read_jsonl(data)), "data": str(data), "train": metrics, "scores": scores}
