"""Where the Aligner decodes: the remote engine against a real completions server, and the flags and
options that pick an engine (the vLLM engine itself is tested in test_vllm_engine.py)."""

from __future__ import annotations

import json

import pytest

from helpers.aligners import PAIRS
from helpers.openai_model_server import ModelServer

from lightalign.aligner.model import Aligner
from lightalign.cli import main
from lightalign.errors import UserError


@pytest.fixture(scope="module")
def server(aligner_dir):
    with ModelServer(aligner_dir, name="the-aligner") as s:
        yield s


def _keyed(corrections):
    return [(c.text, c.changed, c.fallback) for c in corrections]


def test_remote_engine_corrects_like_native_without_loading_weights(aligner_dir, server):
    native = Aligner.from_pretrained(aligner_dir, device="cpu").correct_batch(PAIRS)
    remote = Aligner.from_pretrained(aligner_dir, engine="remote", engine_options={"url": server.url})
    assert remote.model is None and remote.engine.name == "remote"
    before = server.requests
    assert _keyed(remote.correct_batch(PAIRS)) == _keyed(native)
    assert server.requests - before == len(PAIRS)  # one request per pair
    assert remote.engine.client.model == "the-aligner"  # the one model the server lists
    # before the guards: the same token ids and the same ending (EOS or the limit)
    local = Aligner.from_pretrained(aligner_dir, device="cpu")
    items = [local._prepare(p) for p in PAIRS]
    args = [it[0] for it in items], [it[1] for it in items], [it[2] for it in items]
    local.engine.start()
    want = [(o.tokens, o.finished) for o in local.engine.decode(*args)]
    assert [(o.tokens, o.finished) for o in remote.engine.decode(*args)] == want
    assert any(tokens for tokens, _ in want)


def test_remote_engine_with_text_only_replies(aligner_dir, server):
    """A server that ignores vLLM's fields answers with text: corrections still come through."""
    native = Aligner.from_pretrained(aligner_dir, device="cpu").correct_batch(PAIRS[:3])
    remote = Aligner.from_pretrained(aligner_dir, engine="remote",
                                     engine_options={"url": server.url, "vllm_fields": False})
    assert [c.fallback for c in remote.correct_batch(PAIRS[:3])] == [c.fallback for c in native]


def test_unreachable_remote_flags_records_and_correct_exits_1(aligner_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"question": "Hi?", "answer": "Hello."}) + "\n")
    out = tmp_path / "out.jsonl"
    code = main(["correct", "--aligner", str(aligner_dir), "--aligner-url", "http://127.0.0.1:9",
                 "--aligner-model", "x", "--retries", "0", "--in", str(src), "--out", str(out), "--no-progress"])
    rec = json.loads(out.read_text())
    assert code == 1 and rec["fallback"] == "error" and "cannot connect" in rec["error"]
    assert rec["correction"] == "Hello."


@pytest.mark.parametrize("flags, needle", [
    (["--aligner-model", "m"], "--aligner-model needs --aligner-url"),
    (["--aligner-url", "http://127.0.0.1:1/v1", "--engine", "vllm"], "drop --engine"),
    (["--engine-option", "tensor_parallel_size=2"], "--engine-option applies to --engine vllm"),
    (["--aligner-url", "ftp://host/v1"], "give an http(s) URL"),
    (["--aligner-url", "http://u:p@host/v1"], "credentials in the URL are refused"),
    (["--aligner-url", "http://127.0.0.1:1/v1", "--aligner-concurrency", "0"], "--aligner-concurrency must be >= 1"),
    (["--aligner-url", "http://127.0.0.1:1/v1", "--device", "cpu"], "apply to the native engine"),
])
def test_engine_flags_are_checked_in_one_line(aligner_dir, tmp_path, capsys, flags, needle):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"question": "Hi?", "answer": "Hello."}) + "\n")
    code = main(["correct", "--aligner", str(aligner_dir), "--in", str(src), "--out", str(tmp_path / "o.jsonl"),
                 *flags])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_vllm_engine_without_vllm_names_the_extra(aligner_dir):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    with pytest.raises(UserError, match=r"lightalign\[vllm\]"):
        Aligner.from_pretrained(aligner_dir, engine="vllm")


def test_engines_that_decode_elsewhere_refuse_native_only_rules(aligner_dir, tmp_path, server):
    with pytest.raises(UserError, match="engine must be one of native, vllm, remote"):
        Aligner.from_pretrained(aligner_dir, engine="tgi")
    with pytest.raises(UserError, match="url \\(required\\)"):
        Aligner.from_pretrained(aligner_dir, engine="remote", engine_options={"host": "x"})
    with pytest.raises(UserError, match="need the native engine"):
        Aligner.from_pretrained(aligner_dir, engine="remote", engine_options={"url": server.url}, copy_bias=1.0)
    biased = tmp_path / "biased"
    Aligner.from_pretrained(aligner_dir, copy_bias=0.5).save_pretrained(biased)
    with pytest.raises(UserError, match="copy_bias=0.5, which only the native engine implements"):
        Aligner.from_pretrained(biased, engine="remote", engine_options={"url": server.url})


def test_eval_config_checks_the_aligner_engine():
    from lightalign.evaluation.config import System

    with pytest.raises(ValueError, match="needs aligner_engine_options.url"):
        System("s", "aligner", aligner="a", aligner_engine="remote").check(0)
    with pytest.raises(ValueError, match="has no 'aligner'"):
        System("s", "base", aligner_engine="vllm").check(0)
    System("s", "aligner", aligner="a", aligner_engine="remote", aligner_engine_options={"url": "http://h"}).check(0)
