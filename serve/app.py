"""The OpenAI-compatible endpoint: forward each chat completion upstream, post-edit it with the Aligner.

The response keeps the OpenAI schema. What the Aligner did is in an extension field
(`"lightalign": {"original", "changed", "fallback"}` on the completion and on each choice) and in
the headers `X-Lightalign-Changed` / `X-Lightalign-Fallback`. With `stream=true` the corrected
answer is streamed as `chat.completion.chunk` SSE events once it is ready: the correction needs
the whole upstream answer, and waiting before the first byte lets upstream errors still arrive as
proper HTTP statuses instead of an error in the middle of a 200 stream. That is the default stream
mode, "whole"; "sentence" and "guided" (serve --stream-mode, or per request
`"lightalign": {"stream_mode": ...}`) correct and send one sentence at a time while the upstream
streams (serve/streaming.py, lightalign.aligner.streaming).

What the client receives is what `usage` and `finish_reason` describe:
- `max_tokens` (or `max_completion_tokens`) is sent to the upstream and also bounds the answer
  returned: a correction longer than it is cut to `max_tokens` tokens of the Aligner's tokenizer
  (finish_reason "length"). A correction that fits has finish_reason "stop"; an answer returned
  unchanged keeps the upstream's finish_reason.
- `usage.prompt_tokens` is the upstream's; `usage.completion_tokens` counts the returned texts (the
  upstream's count when nothing was corrected, the Aligner tokenizer's count otherwise). The
  upstream's own usage is in `lightalign.upstream_usage`, its finish_reason in each choice's
  `lightalign.upstream_finish_reason`.
- Fields the proxy cannot honour (log-probs, images, ...) get 400 naming them (serve/unsupported.py).
- Requests are checked as OpenAI does (serve/validation.py): 400 naming `param`, 404
  `model_not_found`; prompts longer than the models read get 400 `context_length_exceeded`
  before they are tokenized (serve/limits.py).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lightalign.serve.batcher import MicroBatcher
from lightalign.serve.config import ServeConfig
from lightalign.serve.errors import APIError, UpstreamError
from lightalign.serve.unsupported import check_honoured
from lightalign.serve.validation import parse_json, validate_body

log = logging.getLogger("lightalign.serve")


class Upstream(Protocol):
    """Where answers come from (serve/upstream.py has the HTTP and local-model ones)."""

    model_id: str
    served_ids: set[str] | None  # model names a request may ask for (None: any, the upstream decides)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def chat(self, body: dict) -> dict:
        """An OpenAI `chat.completion` dict for a non-streaming request body; raises UpstreamError."""


class Correcter(Protocol):
    def correct_batch(self, pairs: list[tuple[str, str]], batch_size: int) -> list:
        """One result per pair, with .text, .changed and .fallback (None or why the answer was kept)."""


def question_of(messages: list[dict]) -> str:
    """What the Aligner is told the question was: the last user turn (text parts joined)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return content_text(messages[-1].get("content")) if messages else ""


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, {"type": "image_url", ...}]
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _flag_headers(info: dict) -> dict:
    headers = {"X-Lightalign-Changed": "true" if info["changed"] else "false"}
    if info["fallback"]:
        # header values must be one line of latin-1: keep printable ASCII (the full reason is in the JSON)
        reason = "".join(ch if " " <= ch <= "~" else "?" for ch in str(info["fallback"])[:200])
        headers["X-Lightalign-Fallback"] = reason
    return headers


def create_app(config: ServeConfig, upstream: Upstream, aligner: Correcter,
               prompt_limits: dict | None = None, owns_aligner: bool = False) -> FastAPI:
    """`prompt_limits`: {"messages": PromptLimit, "question": PromptLimit} (see serve/limits.py and
    serve/backends.prompt_limits); a prompt over a limit gets 400 context_length_exceeded.
    `owns_aligner`: the app closes the Aligner (its engine process, its connections) at shutdown."""
    config.validate()
    limits = prompt_limits or {}
    # the names this server answers to: a configured upstream model, else any (the upstream decides)
    served_ids = getattr(upstream, "served_ids", {upstream.model_id})
    tokenizer = getattr(aligner, "tokenizer", None)
    # the whole micro-batch in one Aligner call (its own default chunk size would split it)
    batcher = MicroBatcher(lambda pairs: aligner.correct_batch(pairs, batch_size=len(pairs)),
                           config.max_batch_size, config.max_wait_ms, name="aligner")
    # streamed modes: the last sentences of concurrent streams, revised in one Aligner call
    sentences = MicroBatcher(lambda items: aligner.correct_sentences(items, batch_size=len(items)),
                             config.max_batch_size, config.max_wait_ms, name="aligner-sentences") \
        if hasattr(aligner, "correct_sentences") else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await upstream.start()
        await batcher.start()
        if sentences is not None:
            await sentences.start()
        try:
            yield
        finally:
            if sentences is not None:
                await sentences.stop()
            await batcher.stop()
            await upstream.stop()
            # uvicorn re-raises SIGTERM once shutdown is done, so nothing after server.run() executes:
            # the Aligner's engine (vLLM's engine process) is freed here or never
            if owns_aligner and hasattr(aligner, "close"):
                aligner.close()

    app = FastAPI(title="lightalign serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config, app.state.batcher, app.state.upstream = config, batcher, upstream

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        return _error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return _error_response(APIError(err.status_code, str(err.detail),
                                        code="not_found" if err.status_code == 404 else None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        return _error_response(APIError(400, str(err.errors()[:3])))

    def check_key(request: Request) -> None:
        if not config.api_key:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        # compare_digest: the time taken does not reveal how much of a guessed key was right
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def read_json(request: Request) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise APIError(400, f"Content-Type must be application/json, got {ctype or 'none'!r}",
                           code="invalid_content_type")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.max_request_bytes:
            raise APIError(413, f"request body larger than {config.max_request_bytes} bytes", code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():  # counted as it arrives: a chunked upload cannot lie
            size += len(chunk)
            if size > config.max_request_bytes:
                raise APIError(413, f"request body larger than {config.max_request_bytes} bytes",
                               code="request_too_large")
            chunks.append(chunk)
        return await asyncio.to_thread(parse_json, b"".join(chunks))

    async def correct(question: str, answer: str) -> dict:
        """One correction through the batcher; any Aligner failure falls back to the answer, flagged."""
        try:
            result = await batcher.submit((question, answer))
        except Exception as e:  # noqa: BLE001 - the upstream answer is still worth returning
            log.warning("aligner failed, returning the upstream answer: %s", type(e).__name__)
            return {"text": answer, "original": answer, "changed": False,
                    "fallback": f"aligner_error: {type(e).__name__}"}
        fallback = getattr(result, "fallback", None)
        return {"text": result.text, "original": answer, "changed": bool(getattr(result, "changed", result.text != answer)),
                "fallback": fallback or None}

    async def correct_sentence(item: tuple[str, str, str]):
        """One sentence revision through the batcher; an Aligner failure keeps the sentence, flagged."""
        from lightalign.aligner.model import Correction

        try:
            return await sentences.submit(item)
        except Exception as e:  # noqa: BLE001 - the upstream's sentence is still worth sending
            log.warning("aligner failed on a sentence, sending the upstream's: %s", type(e).__name__)
            return Correction(item[2], False, f"aligner_error: {type(e).__name__}", item[2])

    async def stream_sentences(body: dict, question: str, mode: str, include_usage: bool):
        from lightalign.serve import streaming
        from lightalign.serve.upstream import cannot_continue

        if sentences is None or not hasattr(upstream, "stream"):
            raise APIError(400, f"stream mode {mode!r} needs an Aligner with sentence correction and an upstream "
                           "that streams", param="lightalign.stream_mode", code="unsupported_value")
        if body.get("n") not in (None, 1):
            raise APIError(400, f"stream mode {mode!r} streams one choice: n must be 1", param="n",
                           code="unsupported_value")
        if mode == "guided" and not getattr(upstream, "can_continue", False):
            raise cannot_continue(getattr(upstream, "url", upstream.model_id))
        first, upstream_stream = await streaming.open_stream(upstream, body, None, config.upstream_timeout_s)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model") or upstream.model_id}
        events = streaming.corrected_events(upstream, body, question, mode, correct_sentence, first, upstream_stream,
                                            base, config.upstream_timeout_s, config.max_rounds, include_usage)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                          "X-Lightalign-Stream-Mode": mode})

    @app.get("/health")
    async def health():
        return {"status": "ok" if batcher.running else "starting", "model": upstream.model_id,
                "aligner_batches": batcher.stats.as_dict()}

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [{"id": upstream.model_id, "object": "model", "created": 0,
                                            "owned_by": "lightalign"}]}

    def count_tokens(text: str) -> int | None:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else None

    def cut(text: str, max_tokens: int) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        return tokenizer.decode(ids, skip_special_tokens=True)

    async def client_view(choice: dict, info: dict, max_tokens: int | None) -> int | None:
        """Make the choice describe what the client receives: the returned text, its finish_reason,
        and its token count (None when unknown). The max_tokens rule is in the module docstring."""
        upstream_finish = choice.get("finish_reason")
        choice["lightalign"]["upstream_finish_reason"] = upstream_finish
        if not info["changed"] or tokenizer is None:
            return None
        text = info["text"]
        n = await asyncio.to_thread(count_tokens, text)
        finish = "stop"
        if max_tokens is not None and n > max_tokens:
            text = await asyncio.to_thread(cut, text, max_tokens)
            n, finish = max_tokens, "length"
        choice["message"]["content"] = text
        choice["finish_reason"] = finish
        return n

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_key(request)
        body = validate_body(await read_json(request), config.max_messages, served_ids)
        check_honoured(body, local=getattr(upstream, "greedy", False))
        mode = stream_mode(body, config.stream_mode)
        question = question_of(body["messages"])
        if "messages" in limits:
            await limits["messages"].check(body["messages"])
        if "question" in limits:
            await limits["question"].check(question)
        stream = body.get("stream", False)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        upstream_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "lightalign")}
        if stream and mode != "whole":
            return await stream_sentences(upstream_body, question, mode, include_usage)
        try:
            reply = await asyncio.wait_for(upstream.chat(upstream_body), config.upstream_timeout_s)
        except asyncio.TimeoutError:
            raise UpstreamError.timeout(config.upstream_timeout_s) from None
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            raise UpstreamError(502, "upstream answer has no choices", type="upstream_error", code="upstream_error")

        pending = []
        for choice in choices:
            message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
            choice["message"] = message
            text = message.get("content")
            if isinstance(text, str):  # an empty answer too: the Aligner may write the missing one
                pending.append(correct(question, text))
            else:  # tool calls only: no text to edit
                pending.append(_skip(text))
        infos = await asyncio.gather(*pending)
        counts = []
        for choice, info in zip(choices, infos):
            if info["fallback"] != "no_text":
                choice["message"]["content"] = info["text"]
            choice["lightalign"] = {k: info[k] for k in ("original", "changed", "fallback")}
            counts.append(await client_view(choice, info, max_tokens))
        if any(c is not None for c in counts) and any(c is None for c in counts):  # n > 1, some unchanged
            counts = [c if c is not None else await asyncio.to_thread(count_tokens, ch["message"].get("content") or "")
                      for c, ch in zip(counts, choices)]
        upstream_usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else None
        reply["usage"] = _client_usage(upstream_usage, counts)
        reply.setdefault("id", f"chatcmpl-{uuid.uuid4().hex}")
        reply.setdefault("created", int(time.time()))
        reply["object"] = "chat.completion"
        reply["model"] = reply.get("model") or upstream.model_id
        reply["lightalign"] = {**choices[0]["lightalign"], "upstream_usage": upstream_usage}
        headers = _flag_headers(choices[0]["lightalign"])
        if not stream:
            return JSONResponse(reply, headers=headers)
        headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return StreamingResponse(_sse(reply, config.stream_chunk_words, include_usage),
                                 media_type="text/event-stream", headers=headers)

    return app


def stream_mode(body: dict, default: str) -> str:
    """The request's stream mode: `"lightalign": {"stream_mode": ...}` in the body, else the server's."""
    from lightalign.aligner.streaming import MODES

    ext = body.get("lightalign")
    if ext is None:
        return default
    if not isinstance(ext, dict) or set(ext) - {"stream_mode"}:
        raise APIError(400, "'lightalign' must be an object with only 'stream_mode'", param="lightalign")
    mode = ext.get("stream_mode", default)
    if mode not in MODES:
        raise APIError(400, f"lightalign.stream_mode must be one of {', '.join(MODES)}, got {mode!r}",
                       param="lightalign.stream_mode", code="invalid_value")
    return mode


def _client_usage(upstream_usage: dict | None, counts: list) -> dict | None:
    """Usage of what the client receives: the upstream's prompt tokens, and the tokens of the
    returned texts (the upstream's count when nothing was corrected, else the Aligner tokenizer's
    count of every returned choice). None when the upstream reported none and nothing was corrected."""
    upstream_usage = upstream_usage or {}
    if all(c is None for c in counts):
        if not upstream_usage:
            return None
        completion = upstream_usage.get("completion_tokens") or 0
    else:
        completion = sum(counts)
    prompt = upstream_usage.get("prompt_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _skip(text) -> dict:
    return {"text": text, "original": text, "changed": False, "fallback": "no_text"}


def _words(text: str, per_chunk: int) -> list[str]:
    """Split into pieces that concatenate back to `text` exactly (whitespace kept)."""
    import re

    tokens = re.findall(r"\s*\S+|\s+$", text)
    return ["".join(tokens[i:i + per_chunk]) for i in range(0, len(tokens), per_chunk)] or [""]


async def _sse(reply: dict, per_chunk: int, include_usage: bool):
    """The finished completion as OpenAI `chat.completion.chunk` events, then `data: [DONE]`."""
    base = {"id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"],
            "model": reply["model"]}
    if reply.get("system_fingerprint"):
        base["system_fingerprint"] = reply["system_fingerprint"]

    def event(choices: list, **extra) -> str:
        return f"data: {json.dumps({**base, 'choices': choices, **extra}, ensure_ascii=False)}\n\n"

    for choice in reply["choices"]:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        yield event([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        if message.get("content"):
            for piece in _words(message["content"], per_chunk):
                yield event([{"index": index, "delta": {"content": piece}, "finish_reason": None}])
        if message.get("tool_calls"):
            calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            yield event([{"index": index, "delta": {"tool_calls": calls}, "finish_reason": None}])
        yield event([{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop",
                      "lightalign": choice.get("lightalign")}],
                    lightalign=reply.get("lightalign") if index == 0 else choice.get("lightalign"))
    if include_usage:  # as OpenAI does: a last chunk with no choices (usage null if the upstream gave none)
        yield event([], usage=reply.get("usage"))
    yield "data: [DONE]\n\n"


def create_plain_app(upstream: Upstream) -> FastAPI:
    """The upstream alone as an OpenAI chat endpoint, uncorrected (non-streaming): the baseline to
    compare the corrected endpoint with, and the upstream server of the load benchmark."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await upstream.start()
        try:
            yield
        finally:
            await upstream.stop()

    app = FastAPI(title="lightalign plain upstream", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_exception_handler(APIError, lambda request, err: _error_response(err))

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": upstream.model_id, "object": "model", "created": 0,
                                            "owned_by": "lightalign"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await request.json()
        if not body.get("stream"):
            return await upstream.chat(body)
        if not hasattr(upstream, "stream"):
            raise APIError(400, "this plain server does not stream", param="stream")
        return await _plain_stream(upstream, body)

    return app


async def _plain_stream(upstream, body: dict):
    """The upstream's own stream as SSE; a vLLM-style `continue_final_message` continues the final
    assistant message (what `lightalign serve --upstream-continue vllm` sends in guided mode)."""
    from lightalign.serve.streaming import close_quietly, next_text, open_stream

    messages, prefix = body["messages"], None
    if body.get("continue_final_message"):
        if not messages or messages[-1].get("role") != "assistant":
            raise APIError(400, "continue_final_message needs a final assistant message", param="messages")
        messages, prefix = messages[:-1], content_text(messages[-1].get("content"))
    relay = {k: v for k, v in body.items() if k not in ("continue_final_message", "add_generation_prompt")}
    first, stream = await open_stream(upstream, {**relay, "messages": messages}, prefix, 120.0)
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": upstream.model_id}

    def event(delta: dict, finish=None) -> str:
        return f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}]})}\n\n"

    async def events():
        try:
            yield event({"role": "assistant", "content": ""})
            text = first
            while text is not None:
                yield event({"content": text})
                text = await next_text(stream, 120.0)
            yield event({}, "stop")
            yield "data: [DONE]\n\n"
        except APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
        finally:
            await close_quietly(stream)

    return StreamingResponse(events(), media_type="text/event-stream")

