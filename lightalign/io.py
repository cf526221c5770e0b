"""Small file helpers every stage shares: reading data files with file:line errors, and atomic writes.

Written by hand because `datasets` would add a heavy dependency to the core install and its
errors do not name the offending line. Every reader here turns a missing path, a directory, a
file that is not UTF-8 or a malformed record into one UserError naming the file (and the line
when there is one).
"""

from __future__ import annotations

import codecs
import csv
import errno
import gzip
import io
import json
import lzma
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from lightalign.errors import UserError

COMPRESSED = (".gz", ".xz")


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        if path.is_symlink():
            raise UserError(f"{path}: {what} not found (a broken symlink or a symlink loop)")
        raise UserError(f"{path}: {what} not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a {what}")
    if not path.is_file():  # a FIFO or a device: reading it could block forever
        raise UserError(f"{path}: not a regular file (a pipe or a device), expected a {what}; save it to a file")


# Compressed files are recognised by their first bytes, so a .gz saved under another name still reads.
MAGIC = {b"\x1f\x8b": gzip.decompress, b"\xfd7zXZ\x00": lzma.decompress}


def read_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    """The file's bytes, decompressed when it ends in .gz or .xz."""
    path = Path(path)
    _check_file(path, what)
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            return gzip.decompress(data)
        if path.suffix == ".xz":
            return lzma.decompress(data)
        for magic, decompress in MAGIC.items():
            if data.startswith(magic):
                return decompress(data)
        return data
    except (gzip.BadGzipFile, lzma.LZMAError, EOFError) as e:
        kind = path.suffix[1:] if path.suffix in COMPRESSED else "compressed"
        raise UserError(f"{path}: not a valid {kind} file ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None


# Byte-order marks of the UTF-16/32 files some editors and shells (PowerShell's `>`) write.
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_utf8(data: bytes, source) -> str:
    """UTF-8 text (a leading byte-order mark dropped; UTF-16/32 read when their mark says so); bytes
    that are not UTF-8 are a UserError naming the line and offset, not a traceback."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as e:
                raise UserError(f"{source}: not valid {encoding.upper()} text (offset {e.start})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{source}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8") from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A UTF-8 text file (.gz/.xz decompressed), with one-line errors for every way reading can fail."""
    return decode_utf8(read_bytes(path, what), Path(path))


def loads(text: str, source, lineno: int | None = None):
    """json.loads with one-line errors naming `source` and the line (of the file, when `text` is one line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"{source}:{lineno}: invalid JSON: {e.msg} (column {e.colno})" if lineno \
            else f"{source}:{e.lineno}: invalid JSON: {e.msg}"
        raise UserError(where) from None
    except RecursionError:
        raise UserError(f"{source}:{lineno}: JSON nested too deeply" if lineno else
                        f"{source}: JSON nested too deeply") from None


def read_json_object(path: str | os.PathLike, what: str = "file") -> dict:
    """A JSON file holding one object (config.json, adapter_config.json, run_config.json ...), with
    one-line errors for every way it can be broken."""
    path = Path(path)
    data = loads(read_text(path, what), path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def parse_records(text: str, source, json_list: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, record) from JSON Lines text, or (item_number, record) from a JSON list
    (also {"data": [...]} / {"rows": [...]} wrappers) when `json_list`. Errors name source and line."""
    if json_list:
        data = loads(text, source)
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
        row = loads(line, source, lineno)
        if not isinstance(row, dict):
            raise UserError(f"{source}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def _is_json_list(path: Path, text: str) -> bool:
    """A .json file, or a JSON array saved under another name (one line or pretty-printed)."""
    return _format(path) == "json" or text.lstrip().startswith("[")


def read_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, record) from a .jsonl file, or (item_number, record) from a JSON list
    (a .json file, or any file whose text is a JSON array).

    Blank lines are skipped. A malformed line raises UserError naming file and line.
    """
    path = Path(path)
    text = read_text(path)
    yield from parse_records(text, path, json_list=_is_json_list(path, text))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [row for _, row in read_records(path)]


def _format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in COMPRESSED]
    return suffixes[-1].lstrip(".").lower() if suffixes else "jsonl"


TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet") + COMPRESSED


def read_rows(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(where, row) from a local table: JSON Lines, a JSON list, CSV (header row) or Parquet, the text
    formats optionally .gz/.xz compressed. `where` is "file:line" (or "file: item N" / "file: row N")."""
    path = Path(path)
    fmt = _format(path)
    if fmt == "parquet":
        _check_file(path, "file")
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow's errors (ArrowInvalid, OSError) on a file that is not parquet
            raise UserError(f"{path}: not a readable parquet file: {e}") from None
        for i, row in enumerate(table.to_pylist(), 1):
            yield f"{path}: row {i}", row
        return
    text = read_text(path)
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for row in reader:
                yield f"{path}:{reader.line_num}", dict(row)
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: invalid CSV: {e}") from None
        return
    json_list = _is_json_list(path, text)
    for n, row in parse_records(text, path, json_list):
        yield (f"{path}: item {n}" if json_list else f"{path}:{n}"), row


def require_fields(row: dict, fields: Iterable[str], where: str) -> None:
    """Raise UserError naming `where` (file:line) and the missing or non-string field."""
    for name in fields:
        if name not in row:
            raise UserError(f"{where}: missing field {name!r} (has: {', '.join(sorted(row)) or 'nothing'})")
        if not isinstance(row[name], str):
            raise UserError(f"{where}: field {name!r} must be a string, got {type(row[name]).__name__}")


def make_dir(path: str | os.PathLike, what: str = "the output folder") -> Path:
    """Create the folder `path` (and its parents); an empty path, a file in the way or a folder that
    cannot be written is a UserError naming it."""
    if not str(path).strip():
        raise UserError(f"{what.removeprefix('the ')} is empty: name a folder to write to")
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{path}: cannot create {what}: a file is in the way") from None
    except OSError as e:
        raise UserError(f"{path}: cannot create {what}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{path}: {what} is not writable")
    return path


def _prepare_output(path: Path) -> None:
    if not str(path).strip():
        raise UserError("output file is empty: name a file to write to")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file to write")
    make_dir(path.parent, "its folder")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file in the same folder + os.replace, so a crash never leaves half a file."""
    path = Path(path)
    _prepare_output(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # disk full, a device or a folder at `path`: the file is left as it was
            raise UserError(f"{path}: cannot write: {e.strerror or e}") from None
        raise


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def append_jsonl(f, row: dict) -> None:
    """Append one record to an open file (or stdout) and make it durable: batch jobs resume from what
    is here. A write that fails (disk full, closed pipe) is a UserError naming the file."""
    try:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        try:
            os.fsync(f.fileno())
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # a pipe, a terminal, /dev/null: nothing to sync
                raise
    except BrokenPipeError:
        raise
    except OSError as e:
        raise UserError(f"{getattr(f, 'name', 'output')}: cannot write: {e.strerror or e}") from None
