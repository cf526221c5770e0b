"""Micro-batching: gather concurrent requests into one call of a batch function.

Written by hand because no library we use batches calls to an arbitrary Python callable
(inference servers such as TGI or vLLM batch only their own models; `asyncio` and `anyio` have
queues but no "collect for N ms or until the batch is full" primitive).

Requests wait at most `max_wait_ms` after the *first* one of a batch arrived, so a lone request
pays at most that much extra latency, while requests that queued up during the previous batch
go out at once. One worker thread runs the batch function, so the model is never called from two
threads at the same time (on a CPU that would only split the same cores between two batches).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest: int = 0
    failures: int = 0
    sizes: Counter = field(default_factory=Counter, repr=False)  # batch size -> count (bounded)

    def as_dict(self) -> dict:
        return {"batches": self.batches, "items": self.items, "largest": self.largest,
                "failures": self.failures,
                "mean_size": round(self.items / self.batches, 2) if self.batches else 0.0}


class MicroBatcher:
    """`await batcher.submit(item)` -> `batch_fn([... item ...])[i]`.

    `batch_fn(items) -> list of results, same length and order`. If it raises, each item of the
    failed batch is retried alone, so one bad item fails only its own request (its exception is
    raised from `submit`), never its neighbours'.
    """

    def __init__(self, batch_fn: Callable[[list], Sequence], max_batch_size: int = 16,
                 max_wait_ms: float = 10.0, name: str = "batcher"):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.batch_fn = batch_fn
        self.max_batch_size = max_batch_size
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.name = name
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle: start() inside the running event loop (FastAPI lifespan), stop() on shutdown
    async def start(self) -> None:
        if self._task is not None:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        while self._queue is not None and not self._queue.empty():
            _, fut, _ = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError(f"{self.name} stopped"))
        # not waiting: a batch still running must not hold a shutdown (its result has no taker)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def submit(self, item: Any) -> Any:
        if not self.running:
            raise RuntimeError(f"{self.name} is not running")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut, time.monotonic()))
        return await fut

    # -- the collecting loop
    async def _collect(self) -> list[tuple]:
        first = await self._queue.get()
        batch = [first]
        deadline = first[2] + self.max_wait
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            # a client that hung up while queued does not need its item computed
            batch = [entry for entry in batch if not entry[1].cancelled()]
            if not batch:
                continue
            items = [entry[0] for entry in batch]
            self.stats.batches += 1
            self.stats.items += len(items)
            self.stats.largest = max(self.stats.largest, len(items))
            self.stats.sizes[len(items)] += 1
            results = await loop.run_in_executor(self._executor, self._call_safely, items)
            for (_, fut, _), (ok, value) in zip(batch, results):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _call_safely(self, items: list) -> list[tuple[bool, Any]]:
        """Run in the worker thread: the whole batch, or item by item if the batch fails."""
        try:
            results = list(self.batch_fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: batch function returned {len(results)} results "
                                   f"for {len(items)} items")
            return [(True, r) for r in results]
        except Exception as batch_error:  # noqa: BLE001 - isolate the failing item below
            if len(items) == 1:
                self.stats.failures += 1
                return [(False, batch_error)]
        out = []
        for item in items:
            try:
                out.append((True, list(self.batch_fn([item]))[0]))
            except Exception as e:  # noqa: BLE001
                self.stats.failures += 1
                out.append((False, e))
        return out
