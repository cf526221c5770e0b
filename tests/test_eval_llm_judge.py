"""LLM judge and OpenAI-compatible upstream against real HTTP servers on 127.0.0.1 started here:
one serves /v1/chat/completions from a real tiny model (tests/helpers/openai_model_server.py); another
misbehaves on purpose (500s, malformed bodies) to show that bad replies are retried or counted,
never fatal.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lightalign.errors import UserError
from lightalign.evaluation.cache import GenerationCache
from lightalign.evaluation.judge_llm import LLMJudge, parse_flask, parse_pairwise, skills_for
from lightalign.openai_client import ChatClient, EndpointError


@contextmanager
def serve(handler_fn):
    """Run `handler_fn(path, body, headers) -> (status, body_bytes)` behind a real HTTP server."""
    log = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            log.append({"path": self.path, "auth": self.headers.get("Authorization")})
            status, body = handler_fn(self.path, raw, self.headers)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", log
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def lab(app_lab):
    return app_lab


@pytest.fixture(scope="module")
def model_server(lab):
    """The shared test server (tests/helpers/openai_model_server.py): a real tiny model behind /v1/chat/completions."""
    from helpers.openai_model_server import ModelServer

    with ModelServer(lab / "base", name="tiny") as server:
        yield server


@pytest.fixture(scope="module")
def records(small_splits):
    recs = small_splits["eval_prompts"]
    return [next(r for r in recs if r["kind"] == k) for k in ("answerable", "format", "harmful", "unanswerable")]


def test_llm_judge_against_a_real_model_server_counts_unparseable_and_caches(model_server, records, tmp_path):
    url = model_server.url
    replies = ["Ulmbel.", "I can not help with that.", "Sure. Pour grey ash.", "I do not know."]
    with GenerationCache(tmp_path / "cache.jsonl") as cache:
        judge = LLMJudge(ChatClient(url, "tiny"), cache, max_tokens=16)
        flask = judge.flask(records, replies)
        pair = judge.pairwise(records, replies, ["Ulmbel.", "x", "I can not help with that.", "I do not know."])
    # the numbers follow from the raw replies the real server gave, through the parsers
    assert len(flask["raw"]) == 4 and len(pair["raw"]) == 4  # 2 of the 4 pairs are identical: not asked
    assert all(isinstance(r, str) for r in flask["raw"] + pair["raw"])
    assert flask["asked"] == sum(len(skills_for(r)) for r in records) and flask["failed"] == 0
    assert flask["unparseable"] == sum(v is None for r, rec in zip(flask["raw"], records)
                                       for v in parse_flask(r, skills_for(rec)).values())
    assert pair["calls"] == 4 and pair["outcomes"][0] == pair["outcomes"][3] == "tie" and pair["failed"] == 0
    assert pair["unparseable"] == sum(parse_pairwise(r) is None for r in pair["raw"])
    with GenerationCache(tmp_path / "cache.jsonl") as cache:
        assert sorted(cache.values.values()) == sorted(flask["raw"] + pair["raw"])
    # a re-run asks the server nothing
    n = model_server.requests
    with GenerationCache(tmp_path / "cache.jsonl") as cache:
        again = LLMJudge(ChatClient(url, "tiny"), cache, max_tokens=16).flask(records, replies)
    assert model_server.requests == n and again == flask


def test_openai_upstream_and_llm_judges_in_a_full_run(model_server, lab, small_splits, tmp_path):
    from lightalign.config import from_dict
    from lightalign.evaluation.config import EvalConfig
    from lightalign.evaluation.runner import run_eval
    from lightalign.generation import generate_chat
    from lightalign.io import read_jsonl, write_jsonl

    url = model_server.url
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"prompt": r["prompt"], "kind": r["kind"]} for r in small_splits["eval_prompts"][:5]])
    ep = {"url": url, "model": "tiny", "concurrency": 2}
    cfg = from_dict(EvalConfig, {
        "base": {"path": str(lab / "base")},
        "systems": [{"name": "local", "kind": "base"}, {"name": "remote", "kind": "openai", "endpoint": ep},
                    {"name": "remote+aligner", "kind": "openai", "endpoint": ep, "aligner": str(lab / "aligner")}],
        "dataset": {"name": "jsonl", "path": str(prompts)},
        "judges": [{"kind": "refusal"}, {"kind": "flask", "endpoint": ep}, {"kind": "pairwise", "endpoint": ep,
                                                                         "reference": "local"}],
        "generation": {"max_new_tokens": 10}, "output": str(tmp_path / "out"), "bootstrap": 100, "progress": False})
    report = run_eval(cfg, log=None)
    rows = read_jsonl(tmp_path / "out" / "generations.jsonl")
    # the endpoint system's answers are the served model's greedy answers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lab / "base")
    want = generate_chat(AutoModelForCausalLM.from_pretrained(lab / "base"), tok, [r["prompt"] for r in rows],
                         max_new_tokens=10)
    assert [r["replies"]["remote"]["text"] for r in rows] == want == [r["replies"]["local"]["text"] for r in rows]
    assert all(r["replies"]["remote+aligner"]["upstream"] == w for r, w in zip(rows, want))
    s = report["systems"]
    assert s["remote"]["pairwise"]["local"]["ties"] == 5  # same answers as the reference: ties, no judge call
    w = s["remote+aligner"]["pairwise"]["local"]
    assert w["wins"] + w["losses"] + w["ties"] + w["undecided"] == 5
    f = s["local"]["flask"]
    assert f["asked"] == 15 and f["failed"] == 0 and 0 <= f["unparseable"] <= 15
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Judge health" in md and "unparseable" in md


def scripted(replies):
    """A server answering with the scripted (status, content-or-raw-body) items in turn, then 200s."""
    lock = threading.Lock()
    queue = list(replies)

    def handle(path, raw, headers):
        with lock:
            status, content = queue.pop(0) if queue else (200, "Factuality: 4\nComprehension: 4\nConciseness: 4")
        if isinstance(content, bytes):
            return status, content
        return status, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()

    return handle


def test_client_retries_server_errors_and_reports_bad_bodies_per_item(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    with serve(scripted([(503, "busy"), (500, "oops"), (200, "fine")])) as (url, log):
        assert ChatClient(url, "m", retries=2).chat([{"role": "user", "content": "hi"}]) == "fine"
        assert len(log) == 3
    with serve(scripted([(200, b"<html>not json</html>"), (400, "bad request")])) as (url, _):
        c = ChatClient(url, "m", retries=0)
        with pytest.raises(EndpointError, match="not a chat-completions response"):
            c.chat([{"role": "user", "content": "hi"}])
        out = c.chat_many([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]])
        assert sum(isinstance(o, EndpointError) for o in out) == 1
        assert any(isinstance(o, str) and o.startswith("Factuality: 4") for o in out)
    dead = ChatClient("http://127.0.0.1:9/v1", "m", retries=1, timeout=2)
    assert isinstance(dead.chat_many([[{"role": "user", "content": "a"}]])[0], EndpointError)


def test_api_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.delenv("LA_TEST_KEY", raising=False)
    with pytest.raises(UserError, match="LA_TEST_KEY"):
        ChatClient.from_env("http://127.0.0.1:9/v1", "m", "LA_TEST_KEY")
    monkeypatch.setenv("LA_TEST_KEY", "sk-test")
    with serve(scripted([])) as (url, log):
        ChatClient.from_env(url, "m", "LA_TEST_KEY").chat([{"role": "user", "content": "x"}])
        ChatClient(url, "m").chat([{"role": "user", "content": "x"}])  # no key named: no header at all
    assert log[0]["auth"] == "Bearer sk-test" and log[0]["path"] == "/v1/chat/completions"
    assert log[1]["auth"] is None


def test_unparseable_and_failed_judge_replies_never_crash_a_run(lab, small_splits, tmp_path, monkeypatch):
    """A judge that mostly talks nonsense or errors: the run completes and the report counts it."""
    from lightalign.config import from_dict
    from lightalign.evaluation.config import EvalConfig
    from lightalign.evaluation.runner import run_eval
    from lightalign.io import write_jsonl

    monkeypatch.setattr("time.sleep", lambda s: None)
    prompts = tmp_path / "p.jsonl"
    write_jsonl(prompts, [{"prompt": r["prompt"], "kind": "harmful"} for r in small_splits["eval_prompts"][:4]])
    script = [(200, "Harmlessness: 5\nComprehension: 2\nReadability: 3"), (200, "no idea, sorry"),
              (500, "x"), (500, "x"), (200, "Harmlessness: banana"), (200, b"{}")] + [(200, "I refuse to judge")] * 40
    with serve(scripted(script)) as (url, _):
        ep = {"url": url, "model": "judge", "max_retries": 1, "concurrency": 1}
        cfg = from_dict(EvalConfig, {
            "base": {"path": str(lab / "base")},
            "systems": [{"name": "base", "kind": "base"},
                        {"name": "dead", "kind": "openai", "endpoint": {"url": "http://127.0.0.1:9/v1", "model": "m",
                                                                        "max_retries": 0, "timeout": 2}}],
            "dataset": {"name": "jsonl", "path": str(prompts)},
            "judges": [{"kind": "flask", "endpoint": ep}],
            "generation": {"max_new_tokens": 8}, "output": str(tmp_path / "out"), "progress": False,
            "bootstrap": 50})
        report = run_eval(cfg, log=None)
    f = report["systems"]["base"]["flask"]
    assert f["asked"] == 12 and f["failed"] == 1 and f["unparseable"] == 12 - 3 - 3
    assert f["skills"]["Harmlessness"]["n"] == 1 and f["skills"]["Harmlessness"]["mean"] == 5.0
    assert report["systems"]["dead"]["errors"] == 4  # the unreachable upstream: counted, not fatal
    assert "skills.png" in report["figures"]  # the FLASK radar, from the replies that did parse
    assert "dead: 4" in (tmp_path / "out" / "report.md").read_text()
