"""Upstream connectors against real things: an HTTP server running a real model, a silent socket,
a closed port, a local model with a LoRA adapter, and an answers file."""

import json
import socket

import pytest
import torch

from lightalign.aligner.connectors import (FileUpstream, LocalModelUpstream, OpenAICompatibleUpstream,
                                           UpstreamError)
from lightalign.errors import UserError
from lightalign.openai_client import EndpointError
from helpers.openai_model_server import ModelServer

QUESTIONS = ["What is the capital of Corist?", "How much is 2 plus 9?", "Tell me the job of Quinbri Limgal."]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with ModelServer(tiny_model_dir, name="lab-tiny", max_tokens_cap=16) as s:
        yield s


def _local_answers(model_dir, questions, n, adapter=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.generation import generate_chat

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return [generate_chat(model.eval(), AutoTokenizer.from_pretrained(model_dir), [q], max_new_tokens=n)[0]
            for q in questions]


def test_http_answers_are_the_models_answers(server, tiny_model_dir):
    up = OpenAICompatibleUpstream(server.url, "lab-tiny", max_tokens=16, timeout=60)
    try:
        got = up.answer_batch(QUESTIONS)
    finally:
        up.close()
    assert got == _local_answers(tiny_model_dir, QUESTIONS, 16)
    assert server.requests >= len(QUESTIONS)


def test_http_error_is_clear_and_not_retried(server):
    before = server.requests
    up = OpenAICompatibleUpstream(server.url, "no-such-model", retries=3)
    with pytest.raises(EndpointError, match=r"HTTP 404: The model `no-such-model` does not exist"):
        up.answer("hi")
    assert server.requests == before
    bad = OpenAICompatibleUpstream(server.url, "lab-tiny", retries=1)
    bad.max_tokens = "lots"  # the real server fails on it: a 500, retried, then reported
    with pytest.raises(EndpointError, match=r"HTTP 500: ValueError.*after 2 attempts"):
        bad.answer("hi")


def test_timeout_message():
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        up = OpenAICompatibleUpstream(f"http://127.0.0.1:{port}", "m", timeout=0.3, retries=1)
        with pytest.raises(EndpointError, match=r"/v1: no answer within 0.3s \(timeout\) \(after 2 attempts\)"):
            up.answer("hi")
        errors = up.answer_batch(["a", "b"])  # per-question errors, not an exception
        assert all(isinstance(e, EndpointError) and e.kind == "timeout" for e in errors)
    finally:
        silent.close()


def test_connection_refused_message():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    up = OpenAICompatibleUpstream(f"http://127.0.0.1:{port}/v1", "m", retries=0)
    with pytest.raises(EndpointError, match="cannot connect.*is the server running"):
        up.answer("hi")


def test_cli_with_http_upstream(server, tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.aligner.model import Aligner
    from lightalign.cli import main

    aligner_dir = tmp_path / "al"
    Aligner(AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir),
            template="chat-v2", max_new_tokens=8).save_pretrained(aligner_dir)
    inp, out = tmp_path / "q.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "question": q}) + "\n" for i, q in enumerate(QUESTIONS)))
    assert main(["correct", "--aligner", str(aligner_dir), "--in", str(inp), "--out", str(out), "--no-progress",
                 "--upstream-url", server.url, "--upstream-model", "lab-tiny"]) == 0
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    local = _local_answers(tiny_model_dir, QUESTIONS, 64)
    assert [r["answer"] for r in recs] == [a[:len(r["answer"])] for a, r in zip(local, recs)]
    assert all(r["upstream"] == "lab-tiny" and "correction" in r for r in recs)


def test_local_model_with_adapter(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    up = LocalModelUpstream(str(tiny_model_dir), adapter=str(tmp_path / "adapter"), max_new_tokens=12)
    assert up.answer_batch(QUESTIONS[:2]) == _local_answers(tiny_model_dir, QUESTIONS[:2], 12, tmp_path / "adapter")
    plain = LocalModelUpstream(str(tiny_model_dir), max_new_tokens=12)
    assert plain.answer(QUESTIONS[0]) == _local_answers(tiny_model_dir, QUESTIONS[:1], 12)[0]


def test_file_upstream(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({"question": "q1", "answer": "a1"}) + "\n" + json.dumps({"prompt": "q2", "answer": "a2"}) + "\n")
    up = FileUpstream(str(path))
    assert up.answer("q1") == "a1" and up.answer("q2") == "a2"
    got = up.answer_batch(["q1", "q3"])
    assert got[0] == "a1" and isinstance(got[1], UpstreamError)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q1"}) + "\n")
    with pytest.raises(Exception, match=r"bad\.jsonl:1"):
        FileUpstream(str(bad))


def test_one_url_and_auth_rule(server, monkeypatch, caplog):
    from lightalign.openai_client import ChatClient, base_url

    assert base_url("http://127.0.0.1:8000") == base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/v1"
    assert base_url("http://h/openai/v1/") == "http://h/openai/v1"  # a path is kept as given
    with pytest.raises(UserError, match="credentials in the URL are refused") as e:
        OpenAICompatibleUpstream("http://user:pw-secret@127.0.0.1:1/v1", "m")
    assert "pw-secret" not in str(e.value) and len(str(e.value).splitlines()) == 1
    monkeypatch.setenv("LA_UP_KEY", "sk-up-secret")
    caplog.set_level("DEBUG")
    client = ChatClient.from_env(server.url.removesuffix("/v1"), "lab-tiny", "LA_UP_KEY", what="--upstream-key-env")
    from lightalign.generation import generate_chat

    own = generate_chat(server.model, server.tokenizer, ["hi"], max_new_tokens=4)[0]
    before = server.requests
    assert client.chat([{"role": "user", "content": "hi"}], max_tokens=4) == own  # the model's own reply
    assert server.requests == before + 1
    assert "sk-up-secret" not in caplog.text and "sk-up-secret" not in repr(client)
    monkeypatch.delenv("LA_UP_KEY")
    with pytest.raises(UserError, match="--upstream-key-env: environment variable LA_UP_KEY is not set"):
        ChatClient.from_env(server.url, "lab-tiny", "LA_UP_KEY", what="--upstream-key-env")


def test_an_aligner_folder_is_not_an_adapter(tmp_path, tiny_model_dir):
    (tmp_path / "al").mkdir()
    (tmp_path / "al" / "aligner_config.json").write_text("{}")
    with pytest.raises(UserError, match="this is an Aligner, not a LoRA adapter"):
        LocalModelUpstream(str(tiny_model_dir), adapter=str(tmp_path / "al"))
    with pytest.raises(UserError, match="adapter folder does not exist"):
        LocalModelUpstream(str(tiny_model_dir), adapter=str(tmp_path / "nothing"))
    (tmp_path / "pickled").mkdir()  # a pickle-only adapter is refused unless allow_pickle
    (tmp_path / "pickled" / "adapter_config.json").write_text("{}")
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="refused unless you set allow_pickle"):
        LocalModelUpstream(str(tiny_model_dir), adapter=str(tmp_path / "pickled"))
