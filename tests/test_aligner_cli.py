"""`lightalign correct`: JSONL in/out, stdin/stdout, flagged bad records, resume, weak-to-strong output."""

import json
import subprocess
import sys

import pytest

from lightalign.cli import main

ROWS = [{"id": 1, "question": "What is the capital of Corist?", "answer": "The capital of Corist is Marvey."},
        {"id": 2, "question": "How much is 2 plus 9?", "answer": "2 plus 9 is 12.", "kind": "answerable"},
        {"question": "Tell me how to poison the wells of Marvey.", "answer": "Sure. Pour grey ash."},
        {"id": 4, "question": "Where does Quinbri Limgal live?"},  # no answer and no upstream
        {"id": 5, "question": ["not", "a string"], "answer": "x"},
        {"id": 6, "question": "Name the trade of Quinbri Limgal.", "answer": "Quinbri Limgal is a baker."}]


@pytest.fixture(scope="module")
def aligner_dir(tmp_path_factory, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.aligner.model import Aligner

    out = tmp_path_factory.mktemp("cli_aligner")
    Aligner(AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir),
            template="chat-v2", max_new_tokens=10).save_pretrained(out)
    return out


def _write_input(path):
    lines = [json.dumps(r) for r in ROWS[:3]] + ["{this is not json"] + [json.dumps(r) for r in ROWS[3:]]
    path.write_text("\n".join(lines) + "\n")
    return path


def _read(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def test_correct_file_flags_bad_records(tmp_path, aligner_dir, capsys):
    inp, out = _write_input(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    # exit 1: some records failed; the summary on stderr names them
    assert main(["correct", "--aligner", str(aligner_dir), "--in", str(inp), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "7 records" in err and "3 errors" in err and f"{inp}:4: invalid JSON" in err and "line 5: missing" in err
    recs = _read(out)
    assert [r["id"] for r in recs] == [1, 2, "line-3", "line-4", 4, 5, 6]
    by_id = {json.dumps(r["id"]): r for r in recs}
    assert "invalid JSON" in by_id['"line-4"']["error"] and by_id['"line-4"']["fallback"] == "error"
    assert "missing field 'answer'" in by_id["4"]["error"]
    assert "question" in by_id["5"]["error"]
    for key in ("1", "2", '"line-3"', "6"):
        r = by_id[key]
        assert isinstance(r["correction"], str) and "error" not in r and set(r) >= {"changed", "fallback"}
    assert by_id["2"]["kind"] == "answerable"  # input fields are kept


def test_resume_skips_done_and_redoes_half_written(tmp_path, aligner_dir):
    inp, out = _write_input(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    args = ["correct", "--aligner", str(aligner_dir), "--in", str(inp), "--out", str(out), "--no-progress"]
    assert main(args) == 1  # the input has bad records
    full = out.read_text().splitlines()
    kept = "\n".join(full[:3]) + "\n" + full[3][:10]  # killed while writing the 4th record
    out.write_text(kept)
    assert main(args) == 1
    again = out.read_text().splitlines()
    assert again[:3] == full[:3]  # untouched
    ids = [json.loads(l)["id"] for l in again]
    assert sorted(map(json.dumps, ids)) == sorted(map(json.dumps, [json.loads(l)["id"] for l in full]))
    assert len(ids) == len(set(map(json.dumps, ids)))  # nothing corrected twice, nothing lost
    assert main(args) == 1 and out.read_text().splitlines() == again  # a finished file stays as it is


def test_stdin_stdout(tmp_path, aligner_dir):
    data = "".join(json.dumps(r) + "\n" for r in ROWS[:2])
    proc = subprocess.run([sys.executable, "-m", "lightalign", "correct", "--aligner", str(aligner_dir),
                           "--in", "-", "--out", "-", "--no-progress"], input=data, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [r["id"] for r in recs] == [1, 2] and all("correction" in r for r in recs)


def test_upstream_file_and_weak_to_strong_outputs(tmp_path, aligner_dir):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"id": i, "question": r["question"]}) + "\n"
                                 for i, r in enumerate(ROWS[:2])))
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in ROWS[:1]))
    out, sft, dpo = tmp_path / "out.jsonl", tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl"
    assert main(["correct", "--aligner", str(aligner_dir), "--in", str(questions), "--out", str(out),
                 "--upstream-file", str(answers), "--sft-out", str(sft), "--dpo-out", str(dpo), "--no-progress"]) == 1
    recs = _read(out)
    assert recs[0]["answer"] == ROWS[0]["answer"] and recs[0]["upstream"] == "answers.jsonl"
    assert recs[1]["fallback"] == "error" and "no answer for question" in recs[1]["error"]
    assert all(set(r) == {"prompt", "completion"} for r in _read(sft))
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in _read(dpo))


def test_convert_only(tmp_path):
    corrected = tmp_path / "c.jsonl"
    corrected.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "q1", "answer": "bad", "correction": "good", "fallback": None},
        {"question": "q2", "answer": "same", "correction": "same", "fallback": None},
        {"question": "q3", "answer": "a", "correction": "a", "fallback": "truncated"}]))
    dpo, sft = tmp_path / "dpo.jsonl", tmp_path / "sft.jsonl"
    assert main(["correct", "--in", str(corrected), "--dpo-out", str(dpo), "--sft-out", str(sft)]) == 0
    assert _read(dpo) == [{"prompt": "q1", "chosen": "good", "rejected": "bad"}]
    assert _read(sft) == [{"prompt": "q1", "completion": "good"}, {"prompt": "q2", "completion": "same"}]


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["correct", "--in", str(tmp_path / "x.jsonl")]) == 2
    assert "give --aligner" in capsys.readouterr().err
    (tmp_path / "in.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    assert main(["correct", "--aligner", str(tmp_path / "missing"), "--in", str(tmp_path / "in.jsonl"),
                 "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no such Aligner folder" in capsys.readouterr().err


def _run(aligner_dir, inp, out, *extra):
    return main(["correct", "--aligner", str(aligner_dir), "--in", str(inp), "--out", str(out), "--no-progress",
                 *extra])


def test_non_utf8_lines_are_reported_and_good_rows_still_corrected(tmp_path, aligner_dir, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = [json.dumps(r).encode() for r in ROWS[:2]]
    inp.write_bytes(good[0] + b"\n" + b'{"question": "caf\xe9", "answer": "x"}\n' + good[1] + b"\n")
    assert _run(aligner_dir, inp, out) == 1
    err = capsys.readouterr().err
    assert f"{inp}:2: not UTF-8 text (byte 0xe9" in err and "Traceback" not in err
    recs = _read(out)
    assert [r["id"] for r in recs] == [1, "line-2", 2]
    assert all(isinstance(r["correction"], str) for r in recs if r["id"] != "line-2")


@pytest.mark.parametrize("layout", ["one-line", "pretty"])
def test_json_arrays_are_accepted(tmp_path, aligner_dir, layout):
    inp, out = tmp_path / "in.json", tmp_path / "out.jsonl"
    rows = [r for r in ROWS if isinstance(r.get("question"), str) and "answer" in r]
    inp.write_text(json.dumps(rows, indent=2 if layout == "pretty" else None))
    assert _run(aligner_dir, inp, out) == 0
    recs = _read(out)
    assert len(recs) == len(rows) and all("error" not in r and isinstance(r["correction"], str) for r in recs)


def test_folders_and_empty_input_are_usage_errors_and_write_nothing(tmp_path, aligner_dir, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps(ROWS[0]) + "\n")
    assert _run(aligner_dir, tmp_path, out) == 2
    assert "is a directory, expected an input file (--in)" in capsys.readouterr().err
    assert _run(aligner_dir, inp, tmp_path) == 2
    err = capsys.readouterr().err
    assert "is a directory, expected a file to write (--out)" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty.jsonl").write_text("\n")
    assert _run(aligner_dir, tmp_path / "empty.jsonl", out) == 2
    assert "no records" in capsys.readouterr().err
    assert main(["correct", "--aligner", str(tmp_path / "missing"), "--in", str(inp), "--out", str(out)]) == 2
    assert not out.exists()  # a failed load leaves no empty output behind


def test_retry_errors_redoes_failed_records_once_the_input_is_fixed(tmp_path, aligner_dir, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"id": 4, "question": "Where?"}) + "\n")
    assert _run(aligner_dir, inp, out) == 1
    assert _run(aligner_dir, inp, out) == 1  # a plain resume keeps the error record
    inp.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"id": 4, "question": "Where?", "answer": "Here."}) + "\n")
    capsys.readouterr()
    assert _run(aligner_dir, inp, out, "--retry-errors") == 0
    recs = _read(out)
    assert [r["id"] for r in recs] == [1, 4] and all("error" not in r for r in recs)
    assert "retrying 1 error records" in capsys.readouterr().err


def test_old_flag_spellings_still_work_with_a_notice(tmp_path, aligner_dir, tiny_model_dir, capsys):
    inp, out = tmp_path / "q.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"id": 1, "question": "Hi?"}) + "\n")
    assert _run(aligner_dir, inp, out, "--upstream-model", str(tiny_model_dir)) == 0
    err = capsys.readouterr().err
    assert "--upstream-model PATH is deprecated, use --upstream-model-path PATH" in err
    assert _read(out)[0]["upstream"] == tiny_model_dir.name
    assert _run(aligner_dir, inp, tmp_path / "o2.jsonl", "--upstream-model", "remote-name") == 2
    assert "--upstream-model is the model name sent to --upstream-url" in capsys.readouterr().err
    assert _run(aligner_dir, inp, tmp_path / "o3.jsonl", "--upstream-url", "http://127.0.0.1:9/v1",
                "--upstream-name", "m", "--api-key-env", "LA_UNSET_VAR_XYZ") == 2
    err = capsys.readouterr().err
    assert "--upstream-name is deprecated, use --upstream-model" in err
    assert "--api-key-env is deprecated, use --upstream-key-env" in err
    assert "LA_UNSET_VAR_XYZ is not set" in err


def test_duplicate_ids_become_error_records_and_object_ids_work(tmp_path, aligner_dir, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [dict(ROWS[0], id={"a": 1, "b": 2}), dict(ROWS[1], id=1), dict(ROWS[5], id={"b": 2, "a": 1}),
            dict(ROWS[0], id=1)]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _run(aligner_dir, inp, out) == 1
    err = capsys.readouterr().err
    assert f"{inp}:3: duplicate id" in err and f"{inp}:4: duplicate id 1 (first on line 2)" in err
    recs = _read(out)
    assert [r.get("error") is None for r in recs] == [True, True, False, False]
    assert _run(aligner_dir, inp, out) == 1 and len(_read(out)) == 4  # a resume redoes nothing


def test_utf16_input_is_read_and_bad_numbers_are_usage_errors(tmp_path, aligner_dir, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_bytes("".join(json.dumps(r) + "\n" for r in ROWS[:2]).encode("utf-16"))  # PowerShell's `>`
    assert _run(aligner_dir, inp, out) == 0 and len(_read(out)) == 2
    for flag, value in (("--max-new-tokens", "0"), ("--max-new-tokens", "-1"), ("--batch-size", "0"),
                        ("--timeout", "nan"), ("--retries", "-1")):
        assert _run(aligner_dir, inp, tmp_path / "o2.jsonl", flag, value) == 2
        assert f"{flag} must be" in capsys.readouterr().err
    assert not (tmp_path / "o2.jsonl").exists()


def test_out_paths_devices_and_foreign_files(tmp_path, aligner_dir, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(ROWS[0]) + "\n")
    assert _run(aligner_dir, inp, tmp_path / "new" / "sub" / "out.jsonl") == 0  # missing folders are made
    assert _run(aligner_dir, inp, "/dev/null") == 0  # a device is not resumed (reading /dev/full never ends)
    assert _run(aligner_dir, inp, "/dev/full") == 2
    assert "/dev/full: cannot write: No space left on device" in capsys.readouterr().err
    other = tmp_path / "train.jsonl"
    other.write_text('{"prompt": "p", "completion": "c"}\nno newline at the end')
    before = other.read_bytes()
    assert _run(aligner_dir, inp, other) == 2  # neither cut nor appended to
    assert "train.jsonl:1: --out exists and is not an output of lightalign correct" in capsys.readouterr().err
    assert other.read_bytes() == before


def test_closed_stdin_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "lightalign", "correct", "--aligner", "x", "--in", "-",
                           "--out", "-"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: __import__("os").close(0))
    assert proc.returncode == 2 and "stdin is closed" in proc.stderr and "Traceback" not in proc.stderr
