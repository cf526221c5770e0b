"""The micro-batcher: concurrent submissions share one call; a bad item fails alone."""

import asyncio
import threading
import time

import pytest

from lightalign.serve.batcher import MicroBatcher


def run(coro):
    return asyncio.run(coro)


class Recorder:
    """A batch function that records the batches it saw (and which thread ran them)."""

    def __init__(self, delay=0.0, bad=None):
        self.batches, self.threads, self.delay, self.bad = [], set(), delay, bad

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        if self.bad is not None and self.bad in items:
            raise ValueError(f"bad item {self.bad}")
        return [x * 10 for x in items]


def test_concurrent_requests_share_one_batch_and_keep_order():
    fn = Recorder()

    async def main():
        b = MicroBatcher(fn, max_batch_size=8, max_wait_ms=50)
        await b.start()
        try:
            return await asyncio.gather(*(b.submit(i) for i in range(8))), b.stats.as_dict()
        finally:
            await b.stop()

    results, stats = run(main())
    assert results == [i * 10 for i in range(8)]
    assert fn.batches == [list(range(8))]
    assert stats["batches"] == 1 and stats["largest"] == 8


def test_batches_never_exceed_max_size_and_run_on_one_thread():
    fn = Recorder(delay=0.01)

    async def main():
        b = MicroBatcher(fn, max_batch_size=3, max_wait_ms=5)
        await b.start()
        try:
            return await asyncio.gather(*(b.submit(i) for i in range(10)))
        finally:
            await b.stop()

    assert run(main()) == [i * 10 for i in range(10)]
    assert max(len(x) for x in fn.batches) <= 3
    assert sorted(x for batch in fn.batches for x in batch) == list(range(10))
    assert len(fn.threads) == 1 and threading.get_ident() not in fn.threads


def test_lone_request_waits_at_most_max_wait():
    fn = Recorder()

    async def main():
        b = MicroBatcher(fn, max_batch_size=64, max_wait_ms=30)
        await b.start()
        try:
            # a lone request is run once max_wait passes, not held until 64 arrive (which never happens:
            # without the deadline this await would hang and wait_for would raise)
            return await asyncio.wait_for(b.submit(1), timeout=30)
        finally:
            await b.stop()

    assert run(main()) == 10
    assert fn.batches == [[1]]


def test_one_bad_item_fails_alone():
    fn = Recorder(bad=3)

    async def main():
        b = MicroBatcher(fn, max_batch_size=8, max_wait_ms=50)
        await b.start()
        try:
            return await asyncio.gather(*(b.submit(i) for i in range(6)), return_exceptions=True), b.stats
        finally:
            await b.stop()

    results, stats = run(main())
    assert isinstance(results[3], ValueError)
    assert [r for i, r in enumerate(results) if i != 3] == [0, 10, 20, 40, 50]
    assert stats.failures == 1


def test_wrong_result_count_is_an_error_not_a_silent_mismatch():
    async def main():
        b = MicroBatcher(lambda items: items[:-1], max_batch_size=4, max_wait_ms=20)
        await b.start()
        try:
            return await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
        finally:
            await b.stop()

    assert all(isinstance(r, Exception) for r in run(main()))


def test_submit_before_start_raises():
    b = MicroBatcher(lambda items: items)
    with pytest.raises(RuntimeError, match="not running"):
        run(b.submit(1))
