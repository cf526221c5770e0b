"""Generation cache: one JSONL file of {"key", "value"} lines, keyed by a hash of what produced the
value (system identity, prompt, settings). Every finished batch is appended and fsynced, so a run
killed halfway resumes where it stopped, and re-running a report regenerates nothing.

Hand-written because the file must stay a plain, greppable JSONL next to the report; a torn last
line from a crash is cut off on open instead of failing the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lightalign.io import append_jsonl


def cache_key(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def file_fingerprint(folder: str | Path | None) -> dict:
    """Size + mtime of the weight files in a folder: retraining an adapter or Aligner in place
    changes them, so stale generations are not reused."""
    if not folder:
        return {}
    folder = Path(folder)
    if not folder.exists():
        return {"missing": str(folder)}
    files = [folder] if folder.is_file() else sorted(
        p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".model"))
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


class GenerationCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.values: dict[str, object] = {}
        self.torn_lines = 0
        self._load()
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        complete, _, tail = data.rpartition(b"\n")
        for raw in complete.split(b"\n") if complete else []:
            self._parse(raw)
        if tail.strip():
            if self._parse(tail):  # a whole record that only lacks its newline
                with self.path.open("ab") as f:
                    f.write(b"\n")
            else:  # torn by a crash mid-write: cut it off so the next append starts on a clean line
                with self.path.open("rb+") as f:
                    f.truncate(len(data) - len(tail))

    def _parse(self, raw: bytes) -> bool:
        if not raw.strip():
            return True
        try:
            row = json.loads(raw)
            self.values[row["key"]] = row["value"]
            return True
        except (ValueError, KeyError, TypeError):
            self.torn_lines += 1
            return False

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def put(self, key: str, value) -> None:
        self.values[key] = value
        append_jsonl(self._file, {"key": key, "value": value})

    def put_many(self, items: list[tuple[str, object]]) -> None:
        """Append a finished batch with one fsync."""
        for key, value in items:
            self.values[key] = value
            self._file.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
