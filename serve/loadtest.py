"""A bounded load generator for an OpenAI-compatible endpoint: N requests, C at a time.

Used by the load test and benchmarks/bench_serve_load.py; also handy against a real deployment.
With `stream_mode` the requests stream (`"lightalign": {"stream_mode": ...}`) and each records its time
to first content (`ttft`) and to the last one; `disconnect_share` of them hang up after their first
content, as impatient chat users do (counted in `disconnected`, not as errors).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: list[str] = field(default_factory=list)
    # (question, completion json); streamed: (question, {"text", "ttft", "seconds", "lightalign"})
    replies: list[tuple[str, dict]] = field(default_factory=list)
    seconds: float = 0.0
    ttft: list[float] = field(default_factory=list)  # streamed: seconds to the first content delta
    texts: list[str] = field(default_factory=list)  # streamed: the text each completed stream received
    disconnected: int = 0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
        return xs[k]

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        stream = {}
        if self.ttft:
            xs = sorted(self.ttft)
            stream = {"ttft_p50_ms": round(xs[len(xs) // 2] * 1000, 1), "disconnected": self.disconnected}
        return {**stream, "requests": len(self.latencies) + len(self.errors) + self.disconnected,
                "errors": len(self.errors),
                "seconds": round(self.seconds, 3), "req_per_s": round(self.throughput, 2),
                "p50_ms": round(self.percentile(50) * 1000, 1), "p90_ms": round(self.percentile(90) * 1000, 1),
                "p99_ms": round(self.percentile(99) * 1000, 1)}


async def load(base_url: str, questions: list[str], n: int = 200, concurrency: int = 20,
               api_key: str | None = None, max_tokens: int = 16, timeout: float = 120.0,
               model: str | None = None, stream_mode: str | None = None, disconnect_share: float = 0.0) -> LoadResult:
    """`run_load` inside a running event loop (to run other requests beside the load)."""
    import httpx

    result = LoadResult()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits) as client:
        if model is None:  # the first model the server lists
            model = (await client.get(f"{base_url.rstrip('/')}/models")).json()["data"][0]["id"]

        async def one(i: int) -> None:
            q = questions[i % len(questions)]
            body = {"model": model, "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens}
            if stream_mode:
                every = round(1 / disconnect_share) if disconnect_share > 0 else 0
                async with sem:
                    await streamed(client, body, stream_mode, bool(every) and i % every == 0)
                return
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{base_url.rstrip('/')}/chat/completions", json=body)
                except httpx.HTTPError as e:
                    result.errors.append(f"{type(e).__name__}: {e}")
                    return
                elapsed = time.perf_counter() - t0
            if r.status_code != 200:
                result.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            result.latencies.append(elapsed)
            result.replies.append((q, r.json()))

        async def streamed(client, body: dict, mode: str, hang_up: bool) -> None:
            import json

            body = {**body, "stream": True, "lightalign": {"stream_mode": mode}}
            t0 = time.perf_counter()
            first, parts, info = None, [], None
            try:
                async with client.stream("POST", f"{base_url.rstrip('/')}/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        result.errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                        return
                    async for line in r.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        event = json.loads(line[6:])
                        if "error" in event:
                            result.errors.append(f"error event: {event['error'].get('message')}")
                            return
                        for choice in event.get("choices") or []:
                            info = choice.get("lightalign") or info
                            text = (choice.get("delta") or {}).get("content")
                            if text:
                                first = first if first is not None else time.perf_counter() - t0
                                parts.append(text)
                        if hang_up and first is not None:
                            result.disconnected += 1
                            return  # leaving the block closes the connection mid-stream
            except httpx.HTTPError as e:
                result.errors.append(f"{type(e).__name__}: {e}")
                return
            seconds = time.perf_counter() - t0
            ttft = first if first is not None else seconds
            result.latencies.append(seconds)
            result.ttft.append(ttft)
            result.texts.append("".join(parts))
            result.replies.append((body["messages"][0]["content"], {"text": "".join(parts), "ttft": ttft,
                                                                    "seconds": seconds, "lightalign": info}))

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        result.seconds = time.perf_counter() - t0
    return result


def run_load(base_url: str, questions: list[str], n: int = 200, concurrency: int = 20,
             api_key: str | None = None, max_tokens: int = 16, timeout: float = 120.0,
             model: str | None = None, stream_mode: str | None = None, disconnect_share: float = 0.0) -> LoadResult:
    """POST `n` chat completions to `base_url` (…/v1), at most `concurrency` in flight, asking for
    `model` (default: the first one the server lists at /v1/models); streamed in `stream_mode` if given."""
    return asyncio.run(load(base_url, questions, n, concurrency, api_key, max_tokens, timeout, model,
                            stream_mode, disconnect_share))
