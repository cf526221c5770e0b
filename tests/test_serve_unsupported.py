"""Every request field `lightalign serve` cannot honour gets a 400 naming it, as OpenAI does, through
the real `openai` client (never a 200 that silently ignores the field). One test per entry of
serve/unsupported.py's lists; refused requests never reach the upstream or the Aligner."""

from __future__ import annotations

import openai
import pytest

from lightalign.serve.app import create_app
from lightalign.serve.config import ServeConfig
from lightalign.serve.runner import BackgroundServer
from lightalign.serve.unsupported import REFUSED, REFUSED_LOCAL, REFUSED_PARTS
from lightalign.serve.upstream import HTTPUpstream, LocalUpstream

# field -> a value the server must refuse (the test below checks every listed field has one)
REFUSED_VALUES = {"logprobs": True, "top_logprobs": 5, "logit_bias": {"42": 5},
                  "response_format": {"type": "json_object"}, "modalities": ["text", "audio"],
                  "audio": {"voice": "alloy", "format": "wav"},
                  "prediction": {"type": "content", "content": "Paris"}}
LOCAL_VALUES = {"temperature": 0.7, "top_p": 0.5, "presence_penalty": 1.0, "frequency_penalty": 0.5, "stop": ["."],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": "auto", "functions": [{"name": "f", "parameters": {"type": "object"}}],
                "function_call": "auto"}
PARTS = {"image_url": {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
         "input_audio": {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
         "file": {"type": "file", "file": {"file_id": "file-1"}}}


class Untouchable:
    """An upstream / Aligner that fails the test if a refused request ever reaches it."""

    model_id, served_ids, calls = "m", {"m"}, 0

    async def start(self):
        pass

    async def stop(self):
        pass

    async def chat(self, body):
        from lightalign.serve.errors import UpstreamError

        Untouchable.calls += 1  # a refused request must never get here (the tests count the calls)
        raise UpstreamError(502, "reached the upstream", type="upstream_error")

    def correct_batch(self, pairs, batch_size):
        raise AssertionError("a refused request reached the Aligner")


class LocalShaped(Untouchable):
    greedy = True  # what LocalUpstream declares


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(create_app(ServeConfig(), Untouchable(), Untouchable())) as srv:
        yield openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def local_server():
    with BackgroundServer(create_app(ServeConfig(), LocalShaped(), Untouchable())) as srv:
        yield openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=30)


def ask(c, messages=None, **fields):
    return c.chat.completions.create(model="m", messages=messages or [{"role": "user", "content": "Hi"}],
                                     extra_body=fields)


def test_every_listed_field_has_a_test_value():
    assert set(REFUSED_VALUES) == set(REFUSED)
    assert set(LOCAL_VALUES) == set(REFUSED_LOCAL)
    assert set(PARTS) == set(REFUSED_PARTS)


def test_a_local_upstream_declares_the_greedy_rules():
    upstream = LocalUpstream(lambda conversations, n: [], "m")
    assert upstream.greedy is True
    assert not getattr(HTTPUpstream("http://127.0.0.1:9/v1", "m"), "greedy", False)


@pytest.mark.parametrize("field", sorted(REFUSED_VALUES))
def test_fields_the_proxy_cannot_honour_get_400_naming_them(server, field):
    before = Untouchable.calls
    with pytest.raises(openai.BadRequestError) as err:
        ask(server, **{field: REFUSED_VALUES[field]})
    assert Untouchable.calls == before
    assert err.value.body["param"] == field and err.value.body["code"] == "unsupported_parameter"


@pytest.mark.parametrize("field", sorted(LOCAL_VALUES))
def test_fields_a_greedy_local_upstream_cannot_honour_get_400_naming_them(local_server, field):
    with pytest.raises(openai.BadRequestError) as err:
        ask(local_server, **{field: LOCAL_VALUES[field]})
    assert err.value.body["param"] == field


@pytest.mark.parametrize("kind", sorted(PARTS))
def test_content_the_aligner_cannot_read_gets_400_naming_the_part(server, kind):
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, PARTS[kind]]}]
    with pytest.raises(openai.BadRequestError) as err:
        ask(server, messages=messages)
    assert err.value.body["param"] == "messages[0].content[1]" and "reads text only" in err.value.body["message"]


def test_top_logprobs_above_openais_limit_is_an_invalid_value(server):
    with pytest.raises(openai.BadRequestError) as err:
        ask(server, logprobs=True, top_logprobs=100)
    assert err.value.body["param"] == "top_logprobs" and err.value.body["code"] == "invalid_value"


@pytest.mark.parametrize("fields", [{"logprobs": False}, {"response_format": {"type": "text"}},
                                    {"modalities": ["text"]}, {"temperature": 0}, {"tool_choice": "none"}])
def test_values_that_ask_for_nothing_unsupported_pass_the_check(local_server, fields):
    """They reach the upstream (which, here, answers 502: not a 400)."""
    before = Untouchable.calls
    with pytest.raises(openai.InternalServerError):
        ask(local_server, **fields)
    assert Untouchable.calls == before + 1
