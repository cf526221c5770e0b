"""`lightalign serve` streaming in the sentence and guided modes, through the real `openai` client:
a local upstream (the app lab's tiny talking model, streamed in batches), the same model behind an
HTTP server that continues prefixes (vLLM's continue_final_message), real Aligners, and upstream
servers that hang on or break mid-stream."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from lightalign.serve.app import create_app, create_plain_app
from lightalign.serve.config import ServeConfig
from lightalign.serve.runner import BackgroundServer
from lightalign.serve.upstream import HTTPUpstream

from helpers.app_lab import ABSTAIN, base_answer
from helpers.streaming_upstream import MisbehavingStream

MAX_TOKENS = 48


@pytest.fixture(scope="module")
def lab(app_lab):
    return app_lab


@pytest.fixture(scope="module")
def question(lab, small_splits):
    """An eval prompt the tiny base answers in two sentences or more."""
    from lightalign.aligner.sentences import split_sentences

    for rec in small_splits["eval_prompts"][:60]:
        if len(split_sentences(base_answer(lab, rec["prompt"], MAX_TOKENS))) >= 2:
            return rec["prompt"]
    pytest.fail("the tiny base never answers in two sentences")


def local_upstream(lab):
    from lightalign.serve import backends

    return backends.local_upstream(lab / "base", None, ServeConfig(max_wait_ms=5))


@pytest.fixture(scope="module")
def keeping_aligner(lab):
    """The lab's Aligner with a budget of one token: every revision is cut short, so the guard keeps
    every sentence (nothing is corrected)."""
    from lightalign.aligner import Aligner

    return Aligner.from_pretrained(lab / "aligner", max_new_tokens=1)


@pytest.fixture(scope="module")
def abstaining_aligner(lab):
    from lightalign.aligner import Aligner

    return Aligner.from_pretrained(lab / "aligner")


def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def stream(c, question, mode, model, **kw):
    """(joined text, the final chunk's lightalign info) of a streamed request in `mode`."""
    kw.setdefault("max_tokens", MAX_TOKENS)
    chunks = list(c.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                            stream=True, extra_body={"lightalign": {"stream_mode": mode}}, **kw))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    final = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    return text, (final[-1].model_extra or {}).get("lightalign") if final else None


@pytest.mark.parametrize("mode", ["whole", "sentence", "guided"])
def test_nothing_corrected_streams_the_upstream_answer_byte_for_byte(lab, keeping_aligner, question, mode):
    expected = base_answer(lab, question, MAX_TOKENS)
    with BackgroundServer(create_app(ServeConfig(), local_upstream(lab), keeping_aligner)) as srv:
        text, info = stream(client(srv), question, mode, "base")
    assert text == expected and text
    assert info["changed"] is False


def test_sentence_mode_sends_the_corrected_sentences(lab, abstaining_aligner, question):
    with BackgroundServer(create_app(ServeConfig(stream_mode="sentence"), local_upstream(lab),
                                     abstaining_aligner)) as srv:
        text, info = stream(client(srv), question, "sentence", "base")
    assert text == ABSTAIN
    assert info["changed"] is True and info["mode"] == "sentence"
    assert info["original"] and ABSTAIN not in info["original"]


@pytest.fixture(scope="module")
def continuing_server(lab):
    """The tiny model behind a plain HTTP server that streams and continues a final assistant message."""
    with BackgroundServer(create_plain_app(local_upstream(lab))) as srv:
        yield srv.url + "/v1"


def test_guided_mode_over_http_continues_from_the_corrected_prefix(continuing_server, abstaining_aligner, question):
    upstream = HTTPUpstream(continuing_server, "base", continuation="vllm")
    with BackgroundServer(create_app(ServeConfig(), upstream, abstaining_aligner)) as srv:
        text, info = stream(client(srv), question, "guided", "base")
    assert text == ABSTAIN and info["mode"] == "guided" and info["guided_restarts"] >= 1


def test_guided_mode_without_a_continuing_upstream_is_a_clear_400(continuing_server, abstaining_aligner, question):
    upstream = HTTPUpstream(continuing_server, "base")  # not declared vLLM-compatible
    with BackgroundServer(create_app(ServeConfig(), upstream, abstaining_aligner)) as srv:
        with pytest.raises(openai.BadRequestError, match="cannot continue a prefix") as err:
            stream(client(srv), question, "guided", "base")
    assert err.value.body["param"] == "lightalign.stream_mode"


def test_an_unknown_stream_mode_is_a_400(continuing_server, keeping_aligner, question):
    with BackgroundServer(create_app(ServeConfig(), HTTPUpstream(continuing_server, "base"), keeping_aligner)) as srv:
        with pytest.raises(openai.BadRequestError) as err:
            stream(client(srv), question, "fastest", "base")
    assert err.value.body["param"] == "lightalign.stream_mode"


def test_an_upstream_error_after_the_first_byte_is_an_error_event(keeping_aligner):
    upstream_server = MisbehavingStream("break")
    with BackgroundServer(upstream_server.app) as up, \
            BackgroundServer(create_app(ServeConfig(), HTTPUpstream(up.url + "/v1", "m"), keeping_aligner)) as srv:
        received = []
        with pytest.raises(openai.APIError):
            for chunk in client(srv).chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "Hi"}], stream=True,
                    extra_body={"lightalign": {"stream_mode": "sentence"}}):
                received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "Sentence 1 is here." in received  # the first sentence was sent before the upstream broke


def test_a_client_that_disconnects_cancels_its_http_upstream_request_within_a_second(keeping_aligner):
    upstream_server = MisbehavingStream("endless", interval=0.2)
    with BackgroundServer(upstream_server.app) as up, \
            BackgroundServer(create_app(ServeConfig(), HTTPUpstream(up.url + "/v1", "m"), keeping_aligner)) as srv:
        s = client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], stream=True,
                                                extra_body={"lightalign": {"stream_mode": "sentence"}})
        it = iter(s)
        while not (chunk := next(it)).choices or not chunk.choices[0].delta.content:
            pass
        assert not upstream_server.hung_up.is_set()
        s.close()
        assert upstream_server.hung_up.wait(1.0), "the upstream request was still running 1 s after the hang-up"


def test_a_client_that_disconnects_stops_its_local_upstream_row_within_a_second(lab, keeping_aligner, question):
    from lightalign.serve import backends

    upstream = backends.local_upstream(lab / "base", None, ServeConfig(max_wait_ms=5, max_tokens_limit=4000))
    model = upstream.streamer.model
    # never EOS: the row would run for its whole budget (a few seconds) unless it is cancelled
    model.generation_config.suppress_tokens = [upstream.streamer.tokenizer.eos_token_id]
    with BackgroundServer(create_app(ServeConfig(), upstream, keeping_aligner)) as srv:
        s = client(srv).chat.completions.create(model="base", messages=[{"role": "user", "content": question}],
                                                stream=True, max_tokens=4000,
                                                extra_body={"lightalign": {"stream_mode": "sentence"}})
        next(iter(s))  # the response has started: the upstream row is generating
        assert not upstream.streamer.cancellations.is_set()
        s.close()
        assert upstream.streamer.cancellations.wait(1.0), "the local row still ran 1 s after the hang-up"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sentence", "guided"])
def test_streaming_load_with_half_the_clients_hanging_up_has_no_server_errors(lab, abstaining_aligner, question,
                                                                              small_splits, mode):
    from lightalign.serve.loadtest import run_load

    questions = [question] + [r["prompt"] for r in small_splits["eval_prompts"][:9]]
    upstream = local_upstream(lab)
    with BackgroundServer(create_app(ServeConfig(max_wait_ms=20), upstream, abstaining_aligner)) as srv:
        result = run_load(srv.url + "/v1", questions, n=40, concurrency=20, max_tokens=MAX_TOKENS, stream_mode=mode,
                          disconnect_share=0.5)
        text, _ = stream(client(srv), question, mode, "base")  # the server is still healthy afterwards
    assert result.errors == []
    assert result.disconnected == 20 and len(result.texts) == 20
    assert all(t == ABSTAIN for t in result.texts) and text == ABSTAIN


def test_async_openai_client_streams_the_sentence_mode(lab, keeping_aligner, question):
    import asyncio

    async def run(url):
        c = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        stream = await c.chat.completions.create(model="base", messages=[{"role": "user", "content": question}],
                                                 max_tokens=MAX_TOKENS, stream=True,
                                                 extra_body={"lightalign": {"stream_mode": "sentence"}})
        parts = [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
        await c.close()
        return parts

    with BackgroundServer(create_app(ServeConfig(), local_upstream(lab), keeping_aligner)) as srv:
        parts = asyncio.run(run(srv.url))
    assert "".join(parts) == base_answer(lab, question, MAX_TOKENS)
    assert len([p for p in parts if p]) >= 2  # sent sentence by sentence, not in one piece


def test_serve_command_takes_the_stream_mode_and_the_continuation_flag():
    import argparse

    from lightalign.errors import UserError
    from lightalign.serve import cli

    def parse(*argv):
        p = argparse.ArgumentParser()
        cli.add_arguments(p)
        return p.parse_args(["--aligner", "a", *argv])

    assert cli.build_config(parse("--upstream-url", "http://127.0.0.1:9/v1", "--stream-mode", "guided",
                                  "--upstream-continue", "vllm")).stream_mode == "guided"
    assert cli.build_config(parse("--upstream-model-path", "m")).stream_mode == "whole"
    with pytest.raises(UserError, match="--upstream-continue"):
        cli.build_config(parse("--upstream-model-path", "m", "--upstream-continue", "vllm"))
    with pytest.raises(SystemExit):
        parse("--stream-mode", "fastest")
