"""Small file helpers every stage shares: JSONL with file:line errors, and atomic writes.

Written by hand because `datasets` would add a heavy dependency to the core install and its
errors do not name the offending line.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from lightalign.errors import UserError


def read_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, record) from a .jsonl file, or (index+1, record) from a .json list.

    Blank lines are skipped. A malformed line raises UserError naming file and line.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
        if isinstance(data, dict):
            data = data.get("data", data.get("rows", [data]))
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of objects")
        for i, row in enumerate(data, 1):
            if not isinstance(row, dict):
                raise UserError(f"{path}: item {i}: expected a JSON object, got {type(row).__name__}")
            yield i, row
        return
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [row for _, row in read_records(path)]


def require_fields(row: dict, fields: Iterable[str], where: str) -> None:
    """Raise UserError naming `where` (file:line) and the missing or non-string field."""
    for name in fields:
        if name not in row:
            raise UserError(f"{where}: missing field {name!r} (has: {', '.join(sorted(row)) or 'nothing'})")
        if not isinstance(row[name], str):
            raise UserError(f"{where}: field {name!r} must be a string, got {type(row[name]).__name__}")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file in the same folder + os.replace, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def append_jsonl(f, row: dict) -> None:
    """Append one record to an open file and make it durable: batch jobs resume from what is here."""
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())
