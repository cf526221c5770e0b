"""Weak-to-strong in the mini-lab: the Aligner's corrections of the base's own answers become
the only preference data for a DPO adapter on the base (chosen = correction, rejected = answer).

This is the Aligner paper's weak-to-strong set-up in miniature: no human-labelled preference
pair is used, only what the small corrector produced on *training* prompts.
"""

from __future__ import annotations

from pathlib import Path


def run_weak_to_strong(lab_dir: Path, quick: bool = False) -> dict:
    from lightalign.adapters.lab_stage import evaluate_adapter, run_stage
    from lightalign.aligner.weak_to_strong import build_w2s_preference
    from lightalign.io import read_jsonl

    lab = Path(lab_dir)
    data = build_w2s_preference(lab, limit=200 if quick else None)
    pairs = len(read_jsonl(data))
    metrics = run_stage(lab, "w2s_dpo", quick)
    scores = evaluate_adapter(lab, lab / "adapters" / "w2s_dpo", quick=quick)
    return {"pairs": pairs, "data": str(data), "train": metrics, "scores": scores}
