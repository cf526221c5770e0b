"""Load benchmark of `lightalign serve` on loopback: latency under load, and what one 1 MB prompt costs the others.

Setup (all on 127.0.0.1, one process): an upstream chat server answering with the base model, and
the serve endpoint, built as `lightalign serve` builds it (prompt limits included), forwarding to it
and correcting with the Aligner.

Default run, on one server after a warm-up: the same bounded load (--requests, --concurrency in
flight) (a) alone and (b) with one prompt of about 1,000,000 bytes (its JSON body just under the
server's default 1,000,000-byte cap) sent as the load starts. That prompt must come back as 400
`context_length_exceeded` (counted apart, not as an error); the script prints the others' p50/p99
change against (a) and their errors. Exit status 1 when any request failed, the large prompt got
anything else, or it cost the others a second or more.

--compare-batching runs the older comparison instead: the load with Aligner micro-batching on
(--batch-size) and off (batch size 1).

    python benchmarks/bench_serve_load.py --lab runs/minilab --requests 1000 --concurrency 50
    python benchmarks/bench_serve_load.py --aligner ALIGNER --upstream-model-path MODEL --prompts PROMPTS.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LARGE_PROMPT_TEXT = "Tell me everything you know about every town, river and king of the world. "


@contextmanager
def upstream_server(model_path: Path, max_tokens: int):
    """A plain OpenAI-style chat server over the local model (no correction), on a free port."""
    from lightalign.serve.app import create_plain_app
    from lightalign.serve.backends import load_chat_model
    from lightalign.serve.runner import BackgroundServer
    from lightalign.serve.upstream import LocalUpstream, transformers_generator

    upstream = LocalUpstream(transformers_generator(*load_chat_model(model_path)), model_path.name,
                             default_max_tokens=max_tokens, max_batch_size=32, max_wait_ms=10)
    app = create_plain_app(upstream)
    with BackgroundServer(app) as srv:
        yield srv.url + "/v1", upstream.model_id


@contextmanager
def corrected_server(upstream_url: str, model_id: str, aligner, questions: list[str], args, batch_size: int):
    """The serve endpoint over `upstream_url`, warmed up (first calls pay for lazy initialisation)."""
    from lightalign.serve.app import create_app
    from lightalign.serve.backends import prompt_limits
    from lightalign.serve.config import ServeConfig
    from lightalign.serve.loadtest import run_load
    from lightalign.serve.runner import BackgroundServer
    from lightalign.serve.upstream import HTTPUpstream

    cfg = ServeConfig(max_batch_size=batch_size, max_wait_ms=args.max_wait_ms)
    upstream = HTTPUpstream(upstream_url, model_id)
    app = create_app(cfg, upstream, aligner, prompt_limits=prompt_limits(upstream, aligner))
    with BackgroundServer(app) as srv:
        run_load(srv.url + "/v1", questions, n=args.concurrency, concurrency=args.concurrency,
                 max_tokens=args.max_tokens)
        yield srv.url, cfg


def batch_stats(url: str) -> dict:
    import httpx

    return httpx.get(url + "/health").json()["aligner_batches"]


def summarize(result, before: dict, after: dict) -> dict:
    """Latency/throughput of `result`, the Aligner's flags on its answers, and the batches it made."""
    flags = [reply["lightalign"] for _, reply in result.replies]
    batches, items = after["batches"] - before["batches"], after["items"] - before["items"]
    return {**result.summary(), "changed": sum(f["changed"] for f in flags),
            "fallback": sum(bool(f["fallback"]) for f in flags),
            "unflagged_missing": sum("changed" not in f for f in flags),
            "aligner_batches": batches, "mean_batch": round(items / batches, 2) if batches else 0.0}


def measure(url: str, questions: list[str], args, beside=None) -> tuple[dict, dict | None]:
    """One bounded load against `url`; `beside(url)`, a coroutine factory, runs as the load starts."""
    from lightalign.serve.loadtest import load

    async def both():
        extra = asyncio.create_task(beside(url)) if beside else None
        await asyncio.sleep(0)  # let the extra request go out first
        result = await load(url + "/v1", questions, n=args.requests, concurrency=args.concurrency,
                            max_tokens=args.max_tokens)
        return result, (await extra if extra else None)

    before = batch_stats(url)
    result, extra = asyncio.run(both())
    return summarize(result, before, batch_stats(url)), extra


def large_body(model_id: str, max_bytes: int, max_tokens: int) -> bytes:
    """A chat request whose JSON body is max_bytes - 1 bytes, nearly all of it the one user message."""
    def encode(text: str) -> bytes:
        return json.dumps({"model": model_id, "messages": [{"role": "user", "content": text}],
                           "max_tokens": max_tokens}).encode()

    n = max_bytes - 1 - len(encode(""))
    raw = encode((LARGE_PROMPT_TEXT * (n // len(LARGE_PROMPT_TEXT) + 1))[:n])
    assert len(raw) == max_bytes - 1, len(raw)
    return raw


def large_prompt_sender(raw: bytes):
    async def send(url: str) -> dict:
        import httpx

        async with httpx.AsyncClient(timeout=120.0) as client:
            t0 = time.perf_counter()
            r = await client.post(url + "/v1/chat/completions", content=raw,
                                  headers={"Content-Type": "application/json"})
            ms = (time.perf_counter() - t0) * 1000
        try:
            code = r.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        return {"bytes": len(raw), "status": r.status_code, "code": code, "ms": round(ms, 1)}
    return send


def print_table(rows: list[tuple[str, dict]]) -> None:
    print(f"{'':>24} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>6} {'mean batch':>10}")
    for name, r in rows:
        print(f"{name:>24} {r['req_per_s']:>7.2f} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['errors']:>6} {r['mean_batch']:>10.2f}")


def print_flags(r: dict) -> None:
    print(f"answers: {r['changed']} changed, {r['fallback']} flagged fallback, "
          f"{r['unflagged_missing']} without the lightalign field (must be 0)")


def large_prompt_run(upstream_url: str, model_id: str, aligner, questions: list[str], args) -> tuple[int, dict]:
    with corrected_server(upstream_url, model_id, aligner, questions, args, args.batch_size) as (url, cfg):
        alone, _ = measure(url, questions, args)
        raw = large_body(model_id, cfg.max_request_bytes, args.max_tokens)
        mixed, large = measure(url, questions, args, beside=large_prompt_sender(raw))
    print_table([("(a) load alone", alone), ("(b) load + 1 MB prompt", mixed)])
    refused = large["status"] == 400 and large["code"] == "context_length_exceeded"
    print(f"1 MB prompt: {large['bytes']:,}-byte body (cap {cfg.max_request_bytes:,}) -> HTTP {large['status']} "
          f"{large['code']} in {large['ms']:.1f} ms ({'refused as expected' if refused else 'NOT the expected 400'}"
          f"; counted apart, not as an error)")
    d50, d99 = mixed["p50_ms"] - alone["p50_ms"], mixed["p99_ms"] - alone["p99_ms"]
    errors = alone["errors"] + mixed["errors"]
    print(f"cost to the others, (b) - (a): p50 {d50:+.1f} ms, p99 {d99:+.1f} ms (must stay under 1000 ms); "
          f"errors {errors} (must be 0)")
    print_flags(mixed)
    ok = refused and errors == 0 and d50 < 1000 and d99 < 1000 and mixed["unflagged_missing"] == 0
    return (0 if ok else 1), {"alone": alone, "with_large_prompt": mixed, "large_prompt": large,
                              "p50_delta_ms": round(d50, 1), "p99_delta_ms": round(d99, 1)}


def batching_run(upstream_url: str, model_id: str, aligner, questions: list[str], args) -> tuple[int, dict]:
    results = {}
    for size in (args.batch_size, 1):
        with corrected_server(upstream_url, model_id, aligner, questions, args, size) as (url, _):
            results[size], _ = measure(url, questions, args)
    batched, single = results[args.batch_size], results[1]
    print_table([(f"batched (max {args.batch_size})", batched), ("batch size 1", single)])
    speedup = batched["req_per_s"] / single["req_per_s"] if single["req_per_s"] else float("nan")
    p50 = single["p50_ms"] / batched["p50_ms"] if batched["p50_ms"] else float("nan")
    print(f"batching effect: throughput x{speedup:.2f} vs batch size 1; p50 latency x{p50:.2f} lower")
    print_flags(batched)
    ok = batched["errors"] == single["errors"] == 0
    return (0 if ok else 1), {"batched": batched, "batch_size_1": single, "throughput_ratio": speedup,
                              "p50_ratio": p50}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", type=Path, default=Path("runs/minilab"),
                   help="a mini-lab folder: supplies the defaults of the next three flags")
    p.add_argument("--aligner", type=Path, help="default: <lab>/aligner")
    p.add_argument("--upstream-model-path", type=Path, help="default: <lab>/base")
    p.add_argument("--prompts", type=Path, help="JSONL with a 'prompt' per line; default: <lab>/data/eval_prompts.jsonl")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--compare-batching", action="store_true",
                   help="compare Aligner micro-batching with batch size 1 instead of the 1 MB prompt run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)

    from lightalign.io import read_jsonl
    from lightalign.serve.backends import load_aligner

    aligner_path = args.aligner or args.lab / "aligner"
    model_path = args.upstream_model_path or args.lab / "base"
    prompts = args.prompts or args.lab / "data" / "eval_prompts.jsonl"
    for path, flag in ((aligner_path, "--aligner"), (model_path, "--upstream-model-path"), (prompts, "--prompts")):
        if not path.exists():
            sys.exit(f"{path}: not found (build the lab, or pass {flag})")
    questions = [r["prompt"] for r in read_jsonl(prompts)][:50]
    aligner = load_aligner(aligner_path)
    print(f"upstream {model_path}, aligner {aligner_path}: {args.requests} requests, {args.concurrency} concurrent, "
          f"{len(questions)} distinct questions, max_tokens {args.max_tokens}, Aligner batch {args.batch_size}")
    with upstream_server(model_path, args.max_tokens) as (url, model_id):
        run = batching_run if args.compare_batching else large_prompt_run
        status, numbers = run(url, model_id, aligner, questions, args)
    if args.json:
        from lightalign.io import write_json

        write_json(args.json, {**numbers, "args": {k: str(v) for k, v in vars(args).items()}})
    return status


if __name__ == "__main__":
    sys.exit(main())
