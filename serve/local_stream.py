"""Streamed, batched greedy generation with a local transformers chat model (serve's local upstream).

    gen = StreamingGenerator(model, tokenizer, max_batch_size=16, max_wait_ms=10)
    await gen.start()
    async for text in gen.stream(messages, max_tokens=128, prefix=None): ...   # aclose() cancels it

Requests that arrive together share one `generate()` call (MicroBatcher); each row's new tokens
reach its request as they are produced (a transformers streamer that handles a whole batch: the
library's TextIteratorStreamer takes one row only). A request whose consumer closes its iterator
(a client hung up, or the Aligner refused) is flagged at once; the next decoding step stops its row
(a per-row stopping criterion), and the batch ends as soon as every row is finished or cancelled.
`prefix` continues the assistant turn from that text (guided streaming): the prompt is the chat
template's generation prompt followed by the prefix, as vLLM's `continue_final_message` does.
The streamed text equals the non-streamed answer (lightalign.generation.generate_texts): leading
whitespace is dropped and trailing whitespace is held back until more text follows.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from lightalign.serve.batcher import MicroBatcher

_END = object()


@dataclass
class _Request:
    prompt: str
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    continuing: bool = False  # a prefix was given: keep the continuation's leading whitespace
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already pushed
    done: bool = False

    def push(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class StreamingGenerator:
    def __init__(self, model, tokenizer, max_batch_size: int = 16, max_wait_ms: float = 10.0):
        self.model, self.tokenizer = model, tokenizer
        self.batcher = MicroBatcher(self._generate, max_batch_size, max_wait_ms, name="upstream-stream")
        self.cancellations = threading.Event()  # set when a running row was stopped because its reader left
        self.cancelled_rows = 0

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    def prompt(self, messages: list[dict], prefix: str | None) -> str:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + (prefix or "")

    async def stream(self, messages: list[dict], max_tokens: int, prefix: str | None = None):
        """The answer's text deltas; closing the generator cancels the request."""
        req = _Request(self.prompt(messages, prefix), max_tokens, asyncio.get_running_loop(), asyncio.Queue(),
                       continuing=bool(prefix))
        job = asyncio.ensure_future(self.batcher.submit(req))
        try:
            while True:
                getter = asyncio.ensure_future(req.queue.get())
                await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    job.result()  # the batch failed before this row ended: raise its error
                    break
                item = getter.result()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            req.cancelled.set()  # synchronous: takes effect even while this task is being cancelled
            if not job.done():
                job.cancel()

    # -- the worker thread
    def _generate(self, reqs: list[_Request]) -> list[None]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from lightalign.aligner.decoding import eos_ids
        from lightalign.generation import left_padding

        tok, model = self.tokenizer, self.model
        reqs = [r for r in reqs if not r.cancelled.is_set()]
        if not reqs:
            return []
        eos = set(eos_ids(getattr(model.generation_config, "eos_token_id", None), tok.eos_token_id))
        owner = self

        class Streamer:
            first = True

            def put(self, value):
                if self.first:  # the prompt
                    self.first = False
                    return
                for r, t in zip(reqs, value.reshape(-1).tolist()):
                    if r.done:
                        continue
                    if t in eos or r.cancelled.is_set():
                        r.done = True
                        continue
                    r.tokens.append(t)
                    owner._emit(r, final=len(r.tokens) >= r.max_tokens)

            def end(self):
                pass

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                stop = [r.cancelled.is_set() for r in reqs]
                for r, s in zip(reqs, stop):
                    if s and not r.done:
                        r.done = True
                        owner.cancelled_rows += 1
                        owner.cancellations.set()
                return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)

        device = next(model.parameters()).device
        try:
            with left_padding(tok), torch.inference_mode():
                enc = tok([r.prompt for r in reqs], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
                model.generate(**enc, max_new_tokens=max(r.max_tokens for r in reqs), do_sample=False,
                               pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos), streamer=Streamer(),
                               stopping_criteria=StoppingCriteriaList([Cancelled()]))
            for r in reqs:
                self._emit(r, final=True)
        except Exception as e:  # noqa: BLE001 - each reader gets the error (a batch retry would repeat text)
            for r in reqs:
                r.push(RuntimeError(f"local upstream failed: {type(e).__name__}: {e}"[:500]))
        finally:
            for r in reqs:
                r.push(_END)
        return [None] * len(reqs)

    def _emit(self, r: _Request, final: bool) -> None:
        text = self.tokenizer.decode(r.tokens[:r.max_tokens], skip_special_tokens=True)
        if not r.continuing:
            text = text.lstrip()
        if not final:
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                return
            text = text.rstrip()
        else:
            text = text.rstrip()
        if len(text) > r.sent:
            r.push(text[r.sent:])
            r.sent = len(text)
