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


def parse_records(text: str, source, json_list: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, record) from JSON Lines text, or (item_number, record) from a JSON list
    (also {"data": [...]} / {"rows": [...]} wrappers) when `json_list`. Errors name source and line."""
    if json_list:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}:{e.lineno}: invalid JSON: {e.msg}") from None
        if isinstance(data, dict):
            data = data.get("data", data.get("rows", [data]))
        if not isinstance(data, list):
            raise UserError(f"{source}: expected a JSON list of objects")
        for i, row in enumerate(data, 1):
            if not isinstance(row, dict):
                raise UserError(f"{source}: item {i}: expected a JSON object, got {type(row).__name__}")
            yield i, row
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{source}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def read_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, record) from a .jsonl file, or (index+1, record) from a .json list.

    Blank lines are skipped. A malformed line raises UserError naming file and line.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    yield from parse_records(path.read_text(encoding="utf-8"), path, json_list=path.suffix == ".json")


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
