"""`stream: true` in the `sentence` and `guided` modes: corrected sentences are sent as they are ready.

The sentence logic is the library's (lightalign.aligner.streaming.SentenceStreamer); this module
drives it with the async upstream stream and the Aligner's sentence batcher, and speaks SSE:
- The upstream stream is opened and its first text awaited before the response starts, so errors
  that happen before the first byte are still proper HTTP statuses.
- An error after the first byte follows OpenAI's streaming convention: one `data: {"error": {...}}`
  event, then the stream closes (no `[DONE]`); the `openai` client raises it as an APIError.
- A client that disconnects cancels the stream: its upstream request is closed at once (the local
  upstream's row stops at the next token; an HTTP upstream sees the connection close).
- A revision that refuses the request ends the answer and cancels the upstream request.
- guided: once a sentence is changed the upstream is restarted from the corrected text sent so far
  (at most `max_rounds` times, then the stream goes on as `sentence`).
The final chunk carries `lightalign: {original, changed, fallback, mode, refused}` like the
whole-answer stream.
"""

from __future__ import annotations

import asyncio
import json
import logging

from lightalign.aligner.streaming import SentenceStreamer
from lightalign.serve.errors import APIError, UpstreamError

log = logging.getLogger("lightalign.serve")


async def close_quietly(stream) -> None:
    """Close an upstream stream even while this task is being cancelled (the client hung up)."""
    import anyio

    with anyio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except Exception as e:  # noqa: BLE001 - closing a broken stream must not hide why it broke
            log.debug("closing the upstream stream: %s", e)


async def next_text(stream, timeout_s: float) -> str | None:
    """The stream's next text delta, None at its end; UpstreamError 504 when it stalls past `timeout_s`."""
    try:
        return await asyncio.wait_for(anext(stream), timeout_s)
    except StopAsyncIteration:
        return None
    except asyncio.TimeoutError:
        raise UpstreamError.timeout(timeout_s) from None


async def open_stream(upstream, body: dict, prefix: str | None, timeout_s: float):
    """(first text or None, the stream): opened, with errors before the first byte raised as HTTP errors."""
    stream = upstream.stream(body, prefix)
    try:
        first = await next_text(stream, timeout_s)
    except BaseException:
        await close_quietly(stream)
        raise
    return first, stream


async def corrected_events(upstream, body: dict, question: str, mode: str, correct, first: str | None, stream,
                           base: dict, timeout_s: float, max_rounds: int, include_usage: bool):
    """The SSE events of a corrected stream. `correct((question, prefix, sentence))` -> a Correction."""
    st = SentenceStreamer(question)

    def event(choices: list, **extra) -> str:
        return f"data: {json.dumps({**base, 'choices': choices, **extra}, ensure_ascii=False)}\n\n"

    def content(text: str) -> str:
        return event([{"index": 0, "delta": {"content": text}, "finish_reason": None}])

    rounds = 0
    try:
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        text = first
        while text is not None and not st.refused:
            restart = False
            for piece in st.feed(text):
                out = st.accept(piece, await correct(st.request(piece)))
                if out:
                    yield content(out)
                if st.refused:
                    break
                if mode == "guided" and st.last_changed and rounds < max_rounds:
                    restart = True
                    break
            if st.refused:
                break
            if restart:
                await close_quietly(stream)
                rounds += 1
                st.restart()
                text, stream = await open_stream(upstream, body, st.sent, timeout_s)
                continue
            text = await next_text(stream, timeout_s)
        if not st.refused:
            for piece in st.finish():
                out = st.accept(piece, await correct(st.request(piece)))
                if out:
                    yield content(out)
                if st.refused:
                    break
        info = {"original": st.original, "changed": st.changed,
                "fallback": ", ".join(sorted(set(st.fallbacks))) or None, "mode": mode, "refused": st.refused,
                "guided_restarts": rounds}
        yield event([{"index": 0, "delta": {}, "finish_reason": "stop", "lightalign": info}], lightalign=info)
        if include_usage:  # usage is not known for a corrected stream: null, as when an upstream gives none
            yield event([], usage=None)
        yield "data: [DONE]\n\n"
    except APIError as e:  # after the first byte: an error event, then the stream closes
        log.warning("stream ended with an error: %s", e.message)
        yield f"data: {json.dumps(e.body(), ensure_ascii=False)}\n\n"
    except Exception as e:  # noqa: BLE001 - the same convention for anything unexpected
        log.exception("stream failed")
        body = APIError(500, f"the stream failed: {type(e).__name__}", type="server_error").body()
        yield f"data: {json.dumps(body)}\n\n"
    finally:
        await close_quietly(stream)
