"""Small pieces of the server: question extraction, SSE splitting, error mapping, secrets."""

import pytest

from lightalign.errors import UserError
from lightalign.serve.app import _flag_headers, _words, question_of
from lightalign.serve.config import ServeConfig, secret_from_env
from lightalign.serve.errors import UpstreamError, redact
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
    assert redact("Bearer sk-1 failed", ["sk-1", None]) == "Bearer *** failed"
    monkeypatch.setenv("MY_KEY", "  v  ")
    assert secret_from_env("MY_KEY", "x") == "v"
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(UserError, match="MY_KEY is not set") as e:
        secret_from_env("MY_KEY", "--api-key-env")
    assert secret_from_env("MY_KEY", "x", required=False) is None


def test_flag_headers_are_single_line_ascii():
    h = _flag_headers({"changed": False, "fallback": "error: ValueError: bad\nthing é"})
    assert h["X-Lightalign-Changed"] == "false"
    assert h["X-Lightalign-Fallback"] == "error: ValueError: bad?thing ?"
    assert "X-Lightalign-Fallback" not in _flag_headers({"changed": True, "fallback": None})


def test_config_validation_names_the_field():
    with pytest.raises(UserError, match="max_batch_size"):
        ServeConfig(max_batch_size=0).validate()


def test_logged_upstream_url_hides_credentials():
    from lightalign.serve.cli import _without_userinfo

    assert _without_userinfo("https://u:p@host:1/v1") == "https://***@host:1/v1"
    assert _without_userinfo("http://127.0.0.1:9/v1") == "http://127.0.0.1:9/v1"
