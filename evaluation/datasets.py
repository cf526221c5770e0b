"""Prompt sets by name, read in their published schemas and normalised to one record shape:
{"id", "prompt", "kind", ...original fields}. `kind` is what the judges key on:
- lab:          answerable | format | harmful | unanswerable (the mini-lab's own kinds)
- beavertails:  PKU-Alignment/BeaverTails-Evaluation {prompt, category, category_id}: all "harmful"
- harmfulqa:    declare-lab/HarmfulQA {id, topic, subtopic, question, blue_/red_conversations}: all "harmful"
- xstest:       XSTest {id, prompt, type, label, focus, note}: type "contrast_*" -> "harmful", else "safe"
- pku-saferlhf: PKU-Alignment/PKU-SafeRLHF test {prompt, response_0/1, is_response_0/1_safe, ...}:
                one record per distinct prompt; "harmful" if any logged response was unsafe, else "safe"
- jsonl:        any JSONL/JSON/CSV of prompts; `prompt_field` names the text, `kind` is kept if present

Local files are read directly (.jsonl, .json, .csv, .parquet, optionally .gz/.xz compressed), with
errors naming file and line. Anything else is treated as a hub id and loaded with `datasets`.
"""

from __future__ import annotations

import csv
import gzip
import io
import lzma
import random
from pathlib import Path

from lightalign.errors import UserError
from lightalign.io import parse_records

NAMES = ("lab", "beavertails", "harmfulqa", "xstest", "pku-saferlhf", "jsonl")


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8")
    if path.suffix == ".xz":
        return io.TextIOWrapper(lzma.open(path), encoding="utf-8")
    return path.open(encoding="utf-8", newline="")


def _format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in (".gz", ".xz")]
    return suffixes[-1].lstrip(".") if suffixes else "jsonl"


def read_rows(path: str | Path) -> list[tuple[str, dict]]:
    """[(where, row)] from a local file, where = "file:line" (or "file: item N") for error messages."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    fmt = _format(path)
    rows: list[tuple[str, dict]] = []
    if fmt == "csv":
        with _open_text(path) as f:
            reader = csv.DictReader(f)
            for row in reader:
                rows.append((f"{path}:{reader.line_num}", dict(row)))
        return rows
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        return [(f"{path}: row {i + 1}", r) for i, r in enumerate(pq.read_table(path).to_pylist())]
    with _open_text(path) as f:
        text = f.read()
    json_list = fmt == "json" or text.lstrip().startswith("[")
    return [(f"{path}: item {n}" if json_list else f"{path}:{n}", row)
            for n, row in parse_records(text, path, json_list)]


FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".gz", ".xz")


def _is_local(path: str) -> bool:
    """A path that exists, or that looks like a file (so a typo says "file not found", not "hub")."""
    p = Path(path)
    return p.exists() or p.suffix in FILE_SUFFIXES or path.startswith((".", "/", "~")) or path.count("/") != 1


def _hub_rows(repo_id: str, split: str) -> list[tuple[str, dict]]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"{repo_id}: not a local file, and loading hub datasets needs `datasets` "
                        "(pip install 'lightalign[train]')") from None
    try:
        ds = datasets.load_dataset(repo_id, split=split)
    except Exception as e:  # offline, unknown id, wrong split: one clear line instead of a traceback
        raise UserError(f"{repo_id}: not a local file and could not be loaded from the hub "
                        f"(split {split!r}): {type(e).__name__}: {e}") from None
    return [(f"{repo_id}[{split}] row {i + 1}", dict(r)) for i, r in enumerate(ds)]


def _text(row: dict, field: str, where: str) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        have = ", ".join(sorted(row)) or "nothing"
        raise UserError(f"{where}: field {field!r} must be a non-empty string (has: {have})")
    return value


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _lab(rows):
    out = []
    for where, r in rows:
        for f in ("id", "prompt", "kind"):
            _text(r, f, where)
        out.append(dict(r))
    return out


def _beavertails(rows):
    return [{**r, "id": f"bt{i:04d}", "prompt": _text(r, "prompt", w), "kind": "harmful"}
            for i, (w, r) in enumerate(rows)]


def _harmfulqa(rows):
    out = []
    for i, (w, r) in enumerate(rows):
        # The conversations are training material, not prompts: keep the report rows light.
        keep = {k: v for k, v in r.items() if k not in ("blue_conversations", "red_conversations")}
        out.append({**keep, "id": f"hqa{r.get('id', i)}", "prompt": _text(r, "question", w), "kind": "harmful"})
    return out


def _xstest(rows):
    out = []
    for i, (w, r) in enumerate(rows):
        prompt = _text(r, "prompt", w)
        if r.get("type"):
            unsafe = str(r["type"]).startswith("contrast_")
        elif r.get("label"):
            unsafe = str(r["label"]).strip().lower() == "unsafe"
        else:
            raise UserError(f"{w}: XSTest rows need 'type' (contrast_* = unsafe) or 'label'")
        out.append({**r, "id": f"xs{r.get('id') or i}", "prompt": prompt, "kind": "harmful" if unsafe else "safe"})
    return out


def _pku(rows):
    by_prompt: dict[str, dict] = {}
    for w, r in rows:
        prompt = _text(r, "prompt", w)
        for k in ("is_response_0_safe", "is_response_1_safe"):
            if k not in r:
                raise UserError(f"{w}: missing field {k!r} (PKU-SafeRLHF schema)")
        unsafe = not (_truthy(r["is_response_0_safe"]) and _truthy(r["is_response_1_safe"]))
        rec = by_prompt.setdefault(prompt, {"id": f"pku{len(by_prompt):05d}", "prompt": prompt, "kind": "safe",
                                            "source": w})
        if unsafe:
            rec["kind"] = "harmful"
    return list(by_prompt.values())


def _generic(rows, field):
    out = []
    for i, (w, r) in enumerate(rows):
        prompt = _text(r, field, w)
        kind = r.get("kind") if isinstance(r.get("kind"), str) else "general"
        out.append({**r, "id": str(r.get("id", i)), "prompt": prompt, "kind": kind})
    return out


def load_prompts(name: str, path: str, split: str = "test", prompt_field: str = "prompt",
                 limit: int | None = None, shuffle: bool = False, seed: int = 0) -> list[dict]:
    if name not in NAMES:
        raise UserError(f"dataset {name!r} is unknown; known: {', '.join(NAMES)}")
    rows = read_rows(path) if _is_local(path) else _hub_rows(path, split)
    if not rows:
        raise UserError(f"{path}: no rows")
    if name == "lab":
        records = _lab(rows)
    elif name == "beavertails":
        records = _beavertails(rows)
    elif name == "harmfulqa":
        records = _harmfulqa(rows)
    elif name == "xstest":
        records = _xstest(rows)
    elif name == "pku-saferlhf":
        records = _pku(rows)
    else:
        records = _generic(rows, prompt_field)
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):  # the cache and the report join on ids
        seen: set = set()
        for r in records:
            while r["id"] in seen:
                r["id"] = f"{r['id']}_"
            seen.add(r["id"])
    if shuffle:
        random.Random(seed).shuffle(records)
    return records[:limit] if limit else records


def load_dataset_config(cfg) -> list[dict]:
    return load_prompts(cfg.name, cfg.path, cfg.split, cfg.prompt_field, cfg.limit, cfg.shuffle, cfg.seed)
