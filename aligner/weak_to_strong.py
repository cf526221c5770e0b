"""Weak-to-strong: turn (question, answer, correction) records into training data for the upstream
model itself, as in the Aligner paper (the Aligner's corrections teach a stronger model).

- SFT rows  {"prompt", "completion"}           completion = correction
- DPO rows  {"prompt", "chosen", "rejected"}   chosen = correction, rejected = answer (changed rows only)
Both are the schemas the adapters recipes read (the lab's sft.jsonl / preference.jsonl), so a
recipe consumes them with only `data.path` changed. Records whose correction fell back to the
answer (a guard fired) or failed carry no signal and are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence


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
    from lightalign.io import write_jsonl

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


def build_w2s_preference(lab_dir: str | Path | None = None, *, aligner=None, pairs=None, out: str | Path | None = None,
                         limit: int | None = None, batch_size: int = 64) -> Path:
    """DPO data {"prompt","chosen","rejected"} from Aligner corrections of upstream answers.

    Lab mode (`lab_dir`): the upstream is <lab>/base answering the training prompts of
    <lab>/data/sft.jsonl (never the held-out eval prompts), the Aligner is <lab>/aligner; writes
    <lab>/w2s/dpo.jsonl (and sft.jsonl + records.jsonl beside it); skipped if already there.
    Pairs mode: `pairs` = [(question, answer)] corrected by `aligner`, written to `out`.
    """
    from lightalign.io import read_jsonl, write_jsonl

    if lab_dir is not None:
        lab = Path(lab_dir)
        out = Path(out) if out else lab / "w2s" / "dpo.jsonl"
        if out.exists():
            return out
        from lightalign.aligner.model import Aligner
        from lightalign.generation import generate_chat
        from lightalign.aligner.lab_stage import load_lab_base

        aligner = aligner or Aligner.from_pretrained(lab / "aligner")
        questions = list(dict.fromkeys(r["prompt"] for r in read_jsonl(lab / "data" / "sft.jsonl")))[:limit]
        model, tokenizer = load_lab_base(lab)
        answers = generate_chat(model, tokenizer, questions, max_new_tokens=64, batch_size=batch_size)
        pairs = list(zip(questions, answers))
    if aligner is None or pairs is None or out is None:
        raise ValueError("give lab_dir, or aligner + pairs + out")
    out = Path(out)
    records = correct_pairs(aligner, pairs, batch_size=batch_size)
    write_jsonl(out.with_name("records.jsonl"), records)
    write_datasets(records, sft_out=out.with_name("sft.jsonl"), dpo_out=out)
    return out
