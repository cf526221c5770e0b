"""Load benchmark of `lightalign serve` on loopback: throughput, latency percentiles, batching effect.

Setup (all on 127.0.0.1, one process): an upstream chat server answering with the lab base model,
and the serve endpoint forwarding to it and correcting with the lab Aligner. The same bounded load
(default 200 requests, 20 in flight) runs twice: Aligner micro-batching on (--batch-size) and off
(batch size 1, the baseline); the script prints both and the ratio.

    python benchmarks/bench_serve_load.py --lab /work/labs/minilab
    python benchmarks/bench_serve_load.py --aligner path/to/aligner --upstream-model-path path/to/model
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
        yield srv.url + "/v1"


def run_once(upstream_url: str, aligner, questions: list[str], args, batch_size: int) -> dict:
    import httpx

    from lightalign.serve.app import create_app
    from lightalign.serve.config import ServeConfig
    from lightalign.serve.loadtest import run_load
    from lightalign.serve.runner import BackgroundServer
    from lightalign.serve.upstream import HTTPUpstream

    cfg = ServeConfig(max_batch_size=batch_size, max_wait_ms=args.max_wait_ms)
    app = create_app(cfg, HTTPUpstream(upstream_url, "base"), aligner)
    with BackgroundServer(app) as srv:
        run_load(srv.url + "/v1", questions, n=args.concurrency, concurrency=args.concurrency,
                 max_tokens=args.max_tokens)  # warm-up: first calls pay for lazy initialisation
        result = run_load(srv.url + "/v1", questions, n=args.requests, concurrency=args.concurrency,
                          max_tokens=args.max_tokens)
        stats = httpx.get(srv.url + "/health").json()["aligner_batches"]
    flags = [reply["lightalign"] for _, reply in result.replies]
    return {**result.summary(), "changed": sum(f["changed"] for f in flags),
            "fallback": sum(bool(f["fallback"]) for f in flags),
            "unflagged_missing": sum("changed" not in f for f in flags),
            "aligner_batches": stats["batches"], "mean_batch": stats["mean_size"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", type=Path, default=Path("/work/labs/minilab"))
    p.add_argument("--aligner", type=Path, help="default: <lab>/aligner")
    p.add_argument("--upstream-model-path", type=Path, help="default: <lab>/base")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)

    from lightalign.io import read_jsonl
    from lightalign.serve.backends import load_aligner

    aligner_path = args.aligner or args.lab / "aligner"
    model_path = args.upstream_model_path or args.lab / "base"
    for path in (aligner_path, model_path):
        if not path.exists():
            sys.exit(f"{path}: not found (build the lab, or pass --aligner / --upstream-model-path)")
    prompts = args.lab / "data" / "eval_prompts.jsonl"
    questions = [r["prompt"] for r in read_jsonl(prompts)][:50] if prompts.exists() else \
        [f"Tell me something about town number {i}." for i in range(50)]
    aligner = load_aligner(aligner_path)
    print(f"upstream {model_path}, aligner {aligner_path}: {args.requests} requests, "
          f"{args.concurrency} concurrent, {len(questions)} distinct questions, max_tokens {args.max_tokens}")
    with upstream_server(model_path, args.max_tokens) as url:
        batched = run_once(url, aligner, questions, args, args.batch_size)
        single = run_once(url, aligner, questions, args, 1)
    print(f"{'':>22} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>6} {'mean batch':>10}")
    for name, r in ((f"batched (max {args.batch_size})", batched), ("batch size 1", single)):
        print(f"{name:>22} {r['req_per_s']:>7.2f} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['errors']:>6} {r['mean_batch']:>10.2f}")
    speedup = batched["req_per_s"] / single["req_per_s"] if single["req_per_s"] else float("nan")
    p50 = single["p50_ms"] / batched["p50_ms"] if batched["p50_ms"] else float("nan")
    print(f"batching effect: throughput x{speedup:.2f} vs batch size 1; p50 latency x{p50:.2f} lower")
    print(f"answers: {batched['changed']} changed, {batched['fallback']} flagged fallback, "
          f"{batched['unflagged_missing']} without the lightalign field (must be 0)")
    if args.json:
        from lightalign.io import write_json

        write_json(args.json, {"batched": batched, "batch_size_1": single, "throughput_ratio": speedup,
                               "p50_ratio": p50, "args": {k: str(v) for k, v in vars(args).items()}})
    return 0 if batched["errors"] == single["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
