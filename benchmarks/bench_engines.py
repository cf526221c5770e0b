"""Corrections per second of the Aligner on each engine, side by side in one run, on the same answers.

Engines: native (lightalign's copy-aware batched decoder, the baseline), vLLM greedy, vLLM with n-gram
speculative decoding (prompt lookup), and a remote Aligner: `vllm serve` of the same folder on
127.0.0.1, reached through /v1/completions (what `--aligner-url` does). Each engine corrects the same
held-out mini-lab answers (<lab>/data/aligner_eval.jsonl) after a warm-up; its corrections are
compared with the native ones (text and fallback), and the ratio to native is printed. The native
decoder's share of the one-forward-pass ceiling (bench_correct_speed.py's: prompt + answer + EOS,
teacher-forced, the cost of a pure copy that needed no decoding) is printed too. Engine start-up time is not counted.

Needs vLLM: run it with the vLLM venv's python (`make vllm-env`):

    .venv-vllm/bin/python benchmarks/bench_engines.py --lab runs/minilab [--n 1044] [--out engines.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
NGRAM = {"method": "ngram", "num_speculative_tokens": 8, "prompt_lookup_min": 1, "prompt_lookup_max": 3}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def ceiling_seconds(aligner, pairs, batch_size: int) -> float:
    """bench_correct_speed's ceiling over the native engine's batches (prompts sorted by length)."""
    from bench_correct_speed import ceiling_pass

    rows = sorted(((aligner.prompt_ids(q, a), aligner.answer_ids(a)) for q, a in pairs), key=lambda r: len(r[0]))
    batches = [rows[s:s + batch_size] for s in range(0, len(rows), batch_size)]
    start = time.perf_counter()
    ceiling_pass(aligner.model, aligner.tokenizer, batches)
    return time.perf_counter() - start


def measure(name: str, aligner, pairs, batch_size: int, reference=None) -> dict:
    aligner.correct_batch(pairs[:batch_size], batch_size=batch_size)  # warm-up
    seconds, out = timed(lambda: aligner.correct_batch(pairs, batch_size=batch_size))
    row = {"engine": name, "seconds": seconds, "per_s": len(pairs) / seconds}
    if reference is not None:
        row["identical"] = sum((a.text, a.fallback) == (b.text, b.fallback) for a, b in zip(out, reference))
    return row | {"_out": out}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", default="runs/minilab")
    p.add_argument("--aligner", help="default: <lab>/aligner")
    p.add_argument("--n", type=int, default=0, help="answers to correct (default: all held-out answers)")
    p.add_argument("--batch-size", type=int, default=32, help="native engine batch size")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight to the remote Aligner")
    p.add_argument("--out", help="write the numbers as JSON here")
    args = p.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # starts `vllm serve` as the tests do
    from helpers.processes import vllm_server

    from lightalign.aligner import Aligner
    from lightalign.io import read_jsonl

    lab = Path(args.lab)
    folder = str(args.aligner or lab / "aligner")
    rows = read_jsonl(lab / "data" / "aligner_eval.jsonl")
    pairs = [(r["question"], r["answer"]) for r in rows][:args.n or None]

    native = Aligner.from_pretrained(folder, device="cpu")
    base = measure("native copy-aware", native, pairs, args.batch_size)
    ceiling = ceiling_seconds(native, pairs, args.batch_size)
    reference = base.pop("_out")
    del native
    results = [base]
    for name, options in (("vLLM greedy", {}), ("vLLM n-gram speculative", {"speculative_config": NGRAM})):
        engine = Aligner.from_pretrained(folder, engine="vllm", engine_options=options)
        results.append(measure(name, engine, pairs, len(pairs), reference))
        engine.close()
        del engine
        gc.collect()
    with vllm_server(sys.executable, folder) as url:
        remote = Aligner.from_pretrained(folder, engine="remote",
                                         engine_options={"url": url, "concurrency": args.concurrency})
        results.append(measure(f"remote (vllm serve, {args.concurrency} in flight)", remote, pairs, len(pairs),
                               reference))
        remote.close()
    for r in results:
        r.pop("_out", None)
        r["vs_native"] = r["per_s"] / base["per_s"]

    print(f"{len(pairs)} held-out answers of {lab}, {os.cpu_count()} CPUs")
    print(f"  {'engine':40s} {'corrections/s':>14s} {'vs native':>10s} {'identical to native':>20s}")
    for r in results:
        same = f"{r['identical']}/{len(pairs)}" if "identical" in r else "(reference)"
        print(f"  {r['engine']:40s} {r['per_s']:14.1f} {r['vs_native']:9.2f}x {same:>20s}")
    share = ceiling / base["seconds"]
    print(f"native decoder: {100 * share:.0f}% of the one-forward-pass ceiling "
          f"({len(pairs) / ceiling:.1f} corrections/s if every answer were a pure copy)")
    summary = {"n": len(pairs), "engines": results, "ceiling_per_s": len(pairs) / ceiling,
               "native_share_of_ceiling": share}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":  # vLLM spawns its engine process
    main()
