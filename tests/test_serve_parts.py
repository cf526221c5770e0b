"""Small pieces of the server: question extraction, SSE splitting, error mapping, secrets."""

import pytest

from lightalign.errors import UserError
from lightalign.serve.app import _flag_headers, _words, question_of
from lightalign.openai_client import key_from_env
from lightalign.serve.config import ServeConfig
from lightalign.serve.errors import APIError, UpstreamError
from lightalign.serve.upstream import HTTPUpstream


def test_question_is_the_last_user_turn_with_text_parts_joined():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "image_url"},
                                             {"type": "text", "text": "this?"}]}]
    assert question_of(messages) == "What is\nthis?"
    assert question_of([{"role": "system", "content": "only"}]) == "only"


@pytest.mark.parametrize("text", ["", "one", "Hello,  world!\nNew line. ", "  lead", "a b c d e"])
@pytest.mark.parametrize("per_chunk", [1, 3])
def test_sse_pieces_concatenate_to_the_exact_text(text, per_chunk):
    pieces = _words(text, per_chunk)
    assert "".join(pieces) == text
    assert len(pieces) >= 1


def test_upstream_status_mapping():
    assert UpstreamError.from_status(400, "bad").status == 400
    assert UpstreamError.from_status(429, "slow down", retry_after="3").headers == {"Retry-After": "3"}
    # our upstream key being wrong is not the client's fault: a gateway error
    assert UpstreamError.from_status(401, "bad key").status == 502
    assert UpstreamError.from_status(503, "down").status == 502
    assert UpstreamError.timeout(5).status == 504


def test_secrets_never_show(monkeypatch):
    cfg = ServeConfig(api_key="topsecret")
    assert "topsecret" not in repr(cfg)
    assert "sk-1" not in repr(HTTPUpstream("http://127.0.0.1:1/v1", "m", api_key="sk-1"))
    monkeypatch.setenv("MY_KEY", "  v  ")
    assert key_from_env("MY_KEY", "x") == "v"
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(UserError, match="--api-key-env: environment variable MY_KEY is not set"):
        key_from_env("MY_KEY", "--api-key-env")
    assert key_from_env(None) is None


def test_flag_headers_are_single_line_ascii():
    h = _flag_headers({"changed": False, "fallback": "error: ValueError: bad\nthing é"})
    assert h["X-Lightalign-Changed"] == "false"
    assert h["X-Lightalign-Fallback"] == "error: ValueError: bad?thing ?"
    assert "X-Lightalign-Fallback" not in _flag_headers({"changed": True, "fallback": None})


def test_config_validation_names_the_field():
    with pytest.raises(UserError, match="max_batch_size"):
        ServeConfig(max_batch_size=0).validate()


def test_upstream_url_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(UserError, match="credentials in the URL are refused") as e:
        HTTPUpstream("https://u:pw-42@host:1/v1", "m")
    assert "pw-42" not in str(e.value) and "https://***@host:1/v1" in str(e.value)


def _error(fn, *args) -> APIError:
    with pytest.raises(APIError) as e:
        fn(*args)
    return e.value


def test_hostile_bodies_get_400_naming_the_field():
    from lightalign.serve.validation import parse_json, validate_body

    deep = b"[" * 100_000 + b"]" * 100_000
    assert _error(parse_json, deep).status == 400
    shallow_but_deep = b'{"model": "m", "messages": [], "x": ' + b"[" * 200 + b"]" * 200 + b"}"
    assert "nests deeper" in _error(parse_json, shallow_but_deep).message
    e = _error(parse_json, b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}')
    assert e.status == 400 and e.param == "messages[0].content"
    ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert validate_body(dict(ok), 8, {"m"}) == ok
    for field, value in [("max_tokens", 0), ("max_tokens", 1.5), ("max_tokens", True), ("temperature", 5),
                         ("temperature", -1), ("temperature", "hot"), ("top_p", 7), ("n", 0), ("stop", 3),
                         ("stream", "yes")]:
        e = _error(validate_body, {**ok, field: value}, 8, {"m"})
        assert (e.status, e.param) == (400, field), (field, value)
    e = _error(validate_body, {**ok, "model": "other"}, 8, {"m"})
    assert (e.status, e.code, e.param) == (404, "model_not_found", "model")
    assert validate_body({**ok, "model": "other"}, 8, None)["model"] == "other"  # the upstream decides
    e = _error(validate_body, {**ok, "messages": [{"role": "wizard", "content": "x"}]}, 8, {"m"})
    assert e.param == "messages[0].role"


def test_prompt_limit_refuses_without_tokenizing_an_oversized_prompt():
    import asyncio

    from lightalign.serve.limits import PromptLimit

    seen = []

    def count(text):
        seen.append(len(text))
        return len(text.split())

    limit = PromptLimit("the model", 10, 5, count)
    assert asyncio.run(limit.check("a b c")) == 3
    e = None
    try:
        asyncio.run(limit.check("x " * 500_000))
    except APIError as err:
        e = err
    assert e is not None and e.status == 400 and e.code == "context_length_exceeded"
    assert seen == [5]  # the 1 MB prompt was never tokenized
    with pytest.raises(APIError, match="has 12 tokens"):
        asyncio.run(limit.check("w " * 12))
