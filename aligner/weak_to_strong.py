"""Weak-to-strong: turn (question, answer, correction) records into training data for the upstream
model itself, as in the Aligner paper (the Aligner's corrections teach a stronger model).

- SFT rows  {"prompt", "completion"}           completion = correction
- DPO rows  {"prompt", "chosen", "rejected"}   chosen = correction, rejected = answer (changed rows only)
Both are the prompt-completion and preference schemas the adapter recipes read, so a recipe
consumes them with only `data.path` changed. Records whose correction fell back to the
answer (a guard fired) or failed carry no signal and are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from lightalign.io import write_jsonl


def _usable(rec: dict) -> bool:
    return (isinstance(rec.get("question"), str) and isinstance(rec.get("answer"), str)
            and isinstance(rec.get("correction"), str) and not rec.get("fallback") and not rec.get("error")
            and bool(rec["correction"].strip()))


def _changed(rec: dict) -> bool:
    return " ".join(rec["answer"].split()) != " ".join(rec["correction"].split())


def to_sft(records: Iterable[dict]) -> list[dict]:
    return [{"prompt": r["question"], "completion": r["correction"]} for r in records if _usable(r)]


def to_dpo(records: Iterable[dict]) -> list[dict]:
    return [{"prompt": r["question"], "chosen": r["correction"], "rejected": r["answer"]}
            for r in records if _usable(r) and _changed(r)]


def write_datasets(records: Sequence[dict], sft_out: str | Path | None = None,
                   dpo_out: str | Path | None = None) -> dict:
    counts = {}
    if sft_out:
        rows = to_sft(records)
        write_jsonl(sft_out, rows)
        counts["sft"] = len(rows)
    if dpo_out:
        rows = to_dpo(records)
        write_jsonl(dpo_out, rows)
        counts["dpo"] = len(rows)
    return counts


def correct_pairs(aligner, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[dict]:
    """(question, answer) pairs -> records with the Aligner's correction."""
    out = []
    for (q, a), c in zip(pairs, aligner.correct_batch(pairs, batch_size=batch_size)):
        out.append({"question": q, "answer": a, "correction": c.text, "fallback": c.fallback})
    return out


def write_preference(aligner, pairs: Sequence[tuple[str, str]], out: str | Path, batch_size: int = 32) -> Path:
    """Correct upstream (question, answer) pairs with `aligner` and write the DPO rows to `out`, with the
    SFT rows (sft.jsonl) and every corrected record (records.jsonl) beside it."""
    out = Path(out)
    records = correct_pairs(aligner, pairs, batch_size=batch_size)
    write_jsonl(out.with_name("records.jsonl"), records)
    write_datasets(records, sft_out=out.with_name("sft.jsonl"), dpo_out=out)
    return out
