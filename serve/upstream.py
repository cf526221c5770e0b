"""Where the served answers come from: an OpenAI-compatible URL, or a local transformers model.

Both give `chat(body) -> chat.completion dict` and raise `UpstreamError` (-> 4xx/502/504), and
`stream(body, prefix=None)`: the answer's text deltas as an async generator (closing it cancels the
request). `prefix` continues the assistant turn from that text (guided streaming); `can_continue`
says whether the upstream can (a local model can; an HTTP upstream when it is vLLM-compatible).
"""

from __future__ import annotations

import time
import uuid
from typing import Callable, Sequence

from lightalign.serve.batcher import MicroBatcher
from lightalign.serve.errors import UpstreamError


class HTTPUpstream:
    """Forward the client's request as is (temperature, max_tokens, tools, n ...) to `url`, through
    lightalign.openai_client.AsyncChatClient (its URL, auth and error rules).

    The whole request is relayed rather than reduced to a prompt string, so every parameter the
    client set reaches the upstream and its id/usage come back unchanged. The proxy does not retry
    (retries=0; the client retries, and a 429 stays a 429 with its Retry-After): the upstream's
    status reaches the client (4xx it can fix pass through, others -> 502, timeout -> 504).
    """

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None,
                 timeout_s: float = 120.0, max_connections: int = 64, continuation: str = "none"):
        from lightalign.openai_client import AsyncChatClient

        # max_connections: requests beyond it wait for a free connection instead of flooding the upstream
        self.client = AsyncChatClient(url, model, api_key, timeout=timeout_s, retries=0,
                                      max_connections=max_connections)
        self.url, self.model = self.client.url, model
        # "vllm": the server continues a final assistant message (vLLM's continue_final_message)
        if continuation not in ("none", "vllm"):
            raise ValueError(f"continuation must be 'none' or 'vllm', got {continuation!r}")
        self.can_continue = continuation == "vllm"
        self.model_id = model or "upstream"
        self.served_ids = {model} if model else None

    def __repr__(self) -> str:  # never show the key
        return f"HTTPUpstream(url={self.url!r}, model={self.model!r})"

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self.client.close()

    async def chat(self, body: dict) -> dict:
        from lightalign.openai_client import EndpointError

        try:
            return await self.client.complete(body)
        except EndpointError as e:
            raise upstream_error(e) from None

    async def stream(self, body: dict, prefix: str | None = None):
        from lightalign.openai_client import EndpointError

        if prefix is not None:
            if not self.can_continue:
                raise cannot_continue(self.url)
            body = {**body, "messages": [*body["messages"], {"role": "assistant", "content": prefix}],
                    "continue_final_message": True, "add_generation_prompt": False}
        try:
            async for text in self.client.stream_text(body):
                yield text
        except EndpointError as e:
            raise upstream_error(e) from None


def cannot_continue(where: str) -> UpstreamError:
    return UpstreamError(400, f"the upstream {where} cannot continue a prefix, which guided streaming needs: use "
                         "stream mode 'sentence', or a vLLM-compatible upstream (serve --upstream-continue vllm)",
                         code="unsupported_parameter", param="lightalign.stream_mode")


def upstream_error(e) -> UpstreamError:
    """An openai_client.EndpointError as the HTTP error the client receives."""
    if e.kind == "timeout":
        return UpstreamError(504, "upstream did not answer in time", type="upstream_error", code="upstream_timeout")
    if e.kind == "unreachable":
        return UpstreamError.unreachable(str(e))
    if e.kind == "http" and e.status is not None:
        return UpstreamError.from_status(e.status, e.detail, retry_after=e.retry_after)
    return UpstreamError(502, str(e), type="upstream_error", code="upstream_error")


class LocalUpstream:
    """A local chat model; concurrent requests are generated in one batch (see MicroBatcher).

    `generate_batch(list of message lists, max_new_tokens) -> list of (text, finish_reason,
    prompt_tokens, completion_tokens)`: see `transformers_generator` for the transformers one.
    Greedy decoding: sampling parameters are ignored, so a batch gives each request the answer
    it would get alone.
    """

    def __init__(self, generate_batch: Callable[[list[list[dict]], int], Sequence[tuple]], model_id: str,
                 default_max_tokens: int = 128, max_tokens_limit: int = 1024,
                 max_batch_size: int = 16, max_wait_ms: float = 10.0):
        self.model_id = model_id
        self.served_ids = {model_id}
        self.prompt_limit = None  # a serve.limits.PromptLimit on the whole conversation, set by the loader
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = max_tokens_limit
        self._generate_batch = generate_batch
        self._batcher = MicroBatcher(self._run_batch, max_batch_size, max_wait_ms, name="upstream")
        self.streamer = None  # a serve.local_stream.StreamingGenerator over the same model, set by the loader
        self.can_continue = True
        self.greedy = True  # sampling settings, tools and stop are refused (serve/unsupported.py)

    async def start(self) -> None:
        await self._batcher.start()
        if self.streamer is not None:
            await self.streamer.start()

    async def stop(self) -> None:
        await self._batcher.stop()
        if self.streamer is not None:
            await self.streamer.stop()

    def _max_tokens(self, body: dict) -> int:
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or self.default_max_tokens
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise UpstreamError(400, "max_tokens must be a positive integer", code="invalid_value")
        return min(max_tokens, self.max_tokens_limit)

    async def stream(self, body: dict, prefix: str | None = None):
        from lightalign.serve.app import content_text

        if self.streamer is None:
            raise UpstreamError(400, "this local upstream does not stream", code="unsupported_parameter",
                                param="stream")
        if body.get("n", 1) not in (1, None):
            raise UpstreamError(400, "a local upstream answers with n=1 only (decoding is greedy)",
                                code="unsupported_parameter", param="n")
        max_tokens = self._max_tokens(body)
        if prefix:  # the continuation gets what the prefix left of the budget (at least one token)
            used = len(self.streamer.tokenizer(prefix, add_special_tokens=False)["input_ids"])
            max_tokens = max(1, max_tokens - used)
        messages = [{"role": m["role"], "content": content_text(m.get("content"))} for m in body["messages"]]
        try:
            async for text in self.streamer.stream(messages, max_tokens, prefix):
                yield text
        except RuntimeError as e:
            raise UpstreamError(502, str(e)[:500], type="upstream_error", code="upstream_error") from None

    def _run_batch(self, items: list[tuple[list[dict], int]]) -> list[tuple]:
        # one generate() per max_tokens value, so a short request does not pay for a long one
        out: dict[int, tuple] = {}
        for max_tokens in sorted({m for _, m in items}):
            idx = [i for i, (_, m) in enumerate(items) if m == max_tokens]
            for i, result in zip(idx, self._generate_batch([items[i][0] for i in idx], max_tokens)):
                out[i] = result
        return [out[i] for i in range(len(items))]

    async def chat(self, body: dict) -> dict:
        from lightalign.serve.app import content_text

        n = body.get("n", 1)
        if n not in (1, None):
            raise UpstreamError(400, "a local upstream answers with n=1 only (decoding is greedy)",
                                code="unsupported_parameter")
        max_tokens = self._max_tokens(body)
        messages = [{"role": m["role"], "content": content_text(m.get("content"))} for m in body["messages"]]
        try:
            text, finish, n_prompt, n_completion = await self._batcher.submit((messages, max_tokens))
        except UpstreamError:
            raise
        except Exception as e:  # noqa: BLE001 - the model failed on this request: a gateway error
            raise UpstreamError(502, f"local upstream failed: {type(e).__name__}: {e}"[:500],
                                type="upstream_error", code="upstream_error") from None
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                          "total_tokens": n_prompt + n_completion}}


def transformers_generator(model, tokenizer) -> Callable[[list[list[dict]], int], list[tuple]]:
    """Batched greedy chat generation with a transformers model (left padding, the chat template)."""

    def generate_batch(conversations: list[list[dict]], max_new_tokens: int) -> list[tuple]:
        from lightalign.generation import generate_texts

        prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                   for c in conversations]
        texts = generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=len(prompts))
        out = []
        for prompt, text in zip(prompts, texts):
            n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            n_completion = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
            # generate_texts returns decoded text only: an answer that used the whole budget was cut
            finish = "length" if n_completion >= max_new_tokens else "stop"
            out.append((text, finish, n_prompt, n_completion))
        return out

    return generate_batch
