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


def test_utf16_files_with_a_byte_order_mark_are_read(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes("".join(json.dumps(r) + "\n" for r in ROWS).encode("utf-16"))
    assert read_jsonl(path) == ROWS


def test_a_gzip_file_under_another_name_is_read(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS).encode()))
    assert read_jsonl(path) == ROWS


def test_fifos_and_symlink_loops_are_one_line_errors_not_hangs(tmp_path):
    import os

    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"fifo.jsonl: not a regular file \(a pipe or a device\)"):
        read_jsonl(fifo)  # opening a FIFO nobody writes to would block forever
    (tmp_path / "a.jsonl").symlink_to(tmp_path / "b.jsonl")
    (tmp_path / "b.jsonl").symlink_to(tmp_path / "a.jsonl")
    with pytest.raises(UserError, match=r"a.jsonl: file not found \(a broken symlink or a symlink loop\)"):
        read_jsonl(tmp_path / "a.jsonl")


def test_writes_name_the_file_when_the_path_or_the_disk_is_wrong(tmp_path):
    from lightalign.io import append_jsonl, make_dir

    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"/f/run: cannot create the output_dir: a file is in the way"):
        make_dir(tmp_path / "f" / "run", "the output_dir")
    with pytest.raises(UserError, match=r"output_dir is empty"):
        make_dir("", "the output_dir")
    full = open("/dev/full", "w")
    with pytest.raises(UserError, match=r"/dev/full: cannot write: No space left"):
        append_jsonl(full, {"a": 1})
    with pytest.raises(OSError):
        full.close()  # the unwritten record is still buffered
    with open("/dev/null", "w") as f:
        append_jsonl(f, {"a": 1})  # a device cannot be fsynced: that is not an error
