"""File readers and writers on hostile files: each failure is one UserError naming the file (and line)."""

from __future__ import annotations

import gzip
import json

import pytest

from lightalign.errors import UserError
from lightalign.io import read_jsonl, read_records, read_rows, read_text, write_json, write_jsonl

ROWS = [{"prompt": "caf\u00e9", "n": 1}, {"prompt": "b", "n": 2}, {"prompt": "c", "n": 3}]


def _latin1_jsonl(path):
    # line 2 holds a Latin-1 "é" (byte 0xe9): not UTF-8
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    return path


@pytest.mark.parametrize("read", [read_jsonl, lambda p: list(read_records(p)), lambda p: list(read_rows(p)),
                                  read_text])
def test_a_file_that_is_not_utf8_names_file_and_line(tmp_path, read):
    path = _latin1_jsonl(tmp_path / "data.jsonl")
    with pytest.raises(UserError, match=rf"^{path}:2: not UTF-8 text \(byte 0xe9 at offset 32\)"):
        read(path)


def test_csv_and_compressed_files_that_are_not_utf8(tmp_path):
    csvp = tmp_path / "x.csv"
    csvp.write_bytes(b"id,prompt\n1,ok\n2,caf\xe9\n")
    with pytest.raises(UserError, match=rf"{csvp}:3: not UTF-8"):
        list(read_rows(csvp))
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"prompt": "caf\xe9"}\n'))
    with pytest.raises(UserError, match=rf"{gz}:1: not UTF-8"):
        list(read_rows(gz))
    broken = tmp_path / "y.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match=rf"{broken}: not a valid gz file"):
        list(read_rows(broken))


@pytest.mark.parametrize("read", [read_jsonl, lambda p: list(read_records(p)), lambda p: list(read_rows(p)),
                                  read_text])
def test_a_directory_where_a_file_is_expected(tmp_path, read):
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    with pytest.raises(UserError, match=rf"^{folder}: is a directory, expected a file$"):
        read(folder)


def test_writing_onto_a_directory_or_under_a_file(tmp_path):
    folder = tmp_path / "out.jsonl"
    folder.mkdir()
    with pytest.raises(UserError, match="is a directory, expected a file to write"):
        write_jsonl(folder, ROWS)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="cannot create its folder: a file is in the way"):
        write_json(tmp_path / "afile" / "out.json", {})


def test_json_arrays_are_read_whatever_the_suffix(tmp_path):
    one_line = tmp_path / "a.jsonl"
    one_line.write_text(json.dumps(ROWS), encoding="utf-8")
    pretty = tmp_path / "b.jsonl"
    pretty.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    assert read_jsonl(one_line) == ROWS and read_jsonl(pretty) == ROWS
    assert [w for w, _ in read_rows(pretty)] == [f"{pretty}: item {i}" for i in (1, 2, 3)]


def test_a_byte_order_mark_is_not_part_of_the_first_record(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in ROWS).encode())
    assert read_jsonl(path) == ROWS


def test_a_file_that_is_not_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "x.parquet"
    path.write_text("hello")
    with pytest.raises(UserError, match=rf"{path}: not a readable parquet file"):
        list(read_rows(path))
