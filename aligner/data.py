"""Aligner training data: (question, answer, correction) rows, validated, from any of the usual schemas.

Accepted schemas (picked by `format`, or detected from the first row's keys with format="auto"):
- triples / aligner-20K:  {"question", "answer", "correction"} (aligner-20K's own schema, extra keys kept out)
- preference:             {"prompt", "chosen", "rejected"}: rejected -> answer, chosen -> correction;
                          strings or conversational message lists (TRL's format)
- pku_saferlhf:           PKU-SafeRLHF {"prompt", "response_0", "response_1", "safer_response_id",
                          "better_response_id", ...}: the preferred response is the correction,
                          the other one the answer (prefer="safer" by default, or "better")
Sources: a .jsonl/.json file (errors name file:line), any iterable of dicts (a `datasets.Dataset`
included), or a hub dataset id loaded through `datasets` (train extra) when no such file exists.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Iterator

from lightalign.errors import UserError
from lightalign.io import read_records, require_fields

FIELDS = ("question", "answer", "correction")
FORMATS = ("auto", "triples", "aligner20k", "preference", "pku_saferlhf")


def detect_format(row: dict) -> str:
    keys = set(row)
    if set(FIELDS) <= keys:
        return "triples"
    if {"prompt", "response_0", "response_1"} <= keys:
        return "pku_saferlhf"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "preference"
    raise ValueError(f"cannot tell the schema from keys {sorted(keys)}: expected {{question, answer, correction}}, "
                     "{prompt, chosen, rejected} or PKU-SafeRLHF's {prompt, response_0, response_1, ...}")


def _text(value, field: str, where: str) -> str:
    """A preference side as text: a string, or the last assistant turn of a message list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        replies = [m.get("content") for m in value if m.get("role") == "assistant"]
        if replies and isinstance(replies[-1], str):
            return replies[-1]
    raise UserError(f"{where}: field {field!r} must be a string or a message list ending in an assistant turn")


def _prompt_text(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        users = [m.get("content") for m in value if m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            return users[-1]
    raise UserError(f"{where}: field 'prompt' must be a string or a message list with a user turn")


def from_triple(row: dict, where: str) -> dict:
    require_fields(row, FIELDS, where)
    return {k: row[k] for k in FIELDS}


from_aligner20k = from_triple  # aligner-20K rows already are {question, answer, correction}


def from_preference(row: dict, where: str) -> dict:
    for f in ("prompt", "chosen", "rejected"):
        if f not in row:
            raise UserError(f"{where}: missing field {f!r} (has: {', '.join(sorted(row))})")
    return {"question": _prompt_text(row["prompt"], where), "answer": _text(row["rejected"], "rejected", where),
            "correction": _text(row["chosen"], "chosen", where)}


def from_pku_saferlhf(row: dict, where: str, prefer: str = "safer") -> dict:
    require_fields(row, ("prompt", "response_0", "response_1"), where)
    key = f"{prefer}_response_id"
    if row.get(key) not in (0, 1):
        raise UserError(f"{where}: field {key!r} must be 0 or 1, got {row.get(key)!r}")
    good = row[key]
    return {"question": row["prompt"], "answer": row[f"response_{1 - good}"], "correction": row[f"response_{good}"]}


def _rows(source) -> Iterator[tuple[str, dict]]:
    """(where, row) pairs from a file path, a hub dataset id, or an iterable of dicts."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.exists() or path.suffix in (".jsonl", ".json"):
            for lineno, row in read_records(path):
                yield f"{path}:{lineno}", row
            return
        try:
            import datasets
        except ImportError:
            raise UserError(f"{source}: no such file (hub datasets need `pip install lightalign[train]`)") from None
        try:
            ds = datasets.load_dataset(str(source), split="train")
        except Exception as e:  # offline, unknown id, ...: one clear line
            raise UserError(f"{source}: not a file, and `datasets` could not load it: {e}") from None
        source = ds
    name = getattr(source, "info", None) and getattr(source.info, "dataset_name", None) or "dataset"
    for i, row in enumerate(source, 1):
        if not isinstance(row, dict):
            raise UserError(f"{name} row {i}: expected a mapping, got {type(row).__name__}")
        yield f"{name} row {i}", row


def iter_triples(source, format: str = "auto", prefer: str = "safer") -> Iterator[tuple[str, dict]]:
    """Yield (where, {"question","answer","correction"}) from `source`, converting and validating each row."""
    if format not in FORMATS:
        raise UserError(f"unknown data format {format!r}: use one of {', '.join(FORMATS)}")
    if prefer not in ("safer", "better"):
        raise UserError(f"prefer must be 'safer' or 'better', got {prefer!r}")
    fmt = None if format == "auto" else format
    for where, row in _rows(source):
        if fmt is None:
            try:
                fmt = detect_format(row)
            except ValueError as e:
                raise UserError(f"{where}: {e}") from None
        if fmt in ("triples", "aligner20k"):
            triple = from_triple(row, where)
        elif fmt == "preference":
            triple = from_preference(row, where)
        else:
            triple = from_pku_saferlhf(row, where, prefer)
        if not triple["correction"].strip():
            raise UserError(f"{where}: field 'correction' is empty")
        if not triple["question"].strip():
            raise UserError(f"{where}: field 'question' is empty")
        yield where, triple


def load_triples(source, format: str = "auto", prefer: str = "safer", limit: int | None = None) -> list[dict]:
    out = []
    for _, triple in iter_triples(source, format, prefer):
        out.append(triple)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise UserError(f"{source}: no rows")
    return out


def identity_rows(triples: Iterable[dict], share: float, seed: int = 0) -> list[dict]:
    """Residual learning's warm-up data: a `share` of the rows as Q-A-A (the correction is the answer)."""
    triples = [t for t in triples if t["answer"].strip()]
    k = round(len(triples) * share)
    picked = random.Random(seed).sample(triples, k) if k else []
    return [{"question": t["question"], "answer": t["answer"], "correction": t["answer"]} for t in picked]
