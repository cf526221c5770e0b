"""Corrections per second: copy-aware batched decoding vs plain per-example greedy `generate`.

The baseline is what third-party Aligner wrappers do: one `model.generate(do_sample=False)` call per
(question, answer). Ours drafts tokens from the answer and verifies them for a whole batch in one
forward pass (lightalign.aligner.decoding). Both run here, in one process, on the same held-out
mini-lab answers (<lab>/data/aligner_eval.jsonl: half already good, half needing a fix), and the
outputs are compared token for token.

Answers are sorted by prompt length and cut into batches of --batch-size. The ceiling is one
teacher-forced forward pass per batch over prompt + answer + EOS, left-padded, with logits only at
the answer and EOS positions (what a pure copy would cost if verifying it needed no decoding at all).
"copy-aware" gives the same batches their first pass and lets the rows still writing after it share
later passes with the unfinished rows of earlier batches (copy_greedy_causal's batch_size);
"copy-aware, one call per batch" decodes each batch on its own. Timings are the best of --repeats
runs (the per-example baseline runs once).

    python benchmarks/bench_correct_speed.py --lab runs/minilab [--n 300] [--batch-size 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path


def ceiling_pass(model, tok, batches: list[list[tuple[list[int], list[int]]]]) -> None:
    """The ceiling: verify prompt + answer + EOS in one forward pass per batch of (prompt ids, answer
    ids), nothing generated (also used by bench_engines.py)."""
    import torch

    from lightalign.generation import left_padding

    with torch.inference_mode(), left_padding(tok):
        for b in batches:
            enc = tok.pad({"input_ids": [p + s + [tok.eos_token_id] for p, s in b]},
                          return_tensors="pt")  # left padding: every EOS sits in the last column
            # logits from the prompt's last token (verifies the answer's first) to the answer's last (EOS)
            model(**enc, logits_to_keep=max(len(s) for _, s in b) + 2)


def _best_times(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Best wall time of each function over `repeats` rounds, taken in turn so that load from other
    processes hits them alike; and each one's last result."""
    best, results = dict.fromkeys(fns, float("inf")), {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", default="runs/minilab")
    p.add_argument("--aligner", help="default: <lab>/aligner")
    p.add_argument("--n", type=int, default=300, help="held-out answers to correct")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-draft", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--repeats", type=int, default=3, help="best of this many timings (except the baseline)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the numbers as JSON here")
    args = p.parse_args(argv)

    import torch

    from lightalign.aligner.decoding import Decoded, DraftMemory, _eos_set, copy_greedy_causal
    from lightalign.aligner.model import Aligner
    from lightalign.io import read_jsonl

    if args.threads:
        torch.set_num_threads(args.threads)
    lab = Path(args.lab)
    aligner = Aligner.from_pretrained(args.aligner or lab / "aligner", device="cpu")
    if aligner.architecture != "causal":
        raise SystemExit("this benchmark measures the causal mini-lab Aligner")
    model, tok = aligner.model, aligner.tokenizer
    rows = read_jsonl(lab / "data" / "aligner_eval.jsonl")
    random.Random(args.seed).shuffle(rows)
    rows = rows[:args.n]
    prompts = [aligner.prompt_ids(r["question"], r["answer"]) for r in rows]
    sources = [aligner.answer_ids(r["answer"]) for r in rows]
    eos = _eos_set(model, tok.eos_token_id)
    limit = args.max_new_tokens
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))  # batches of similar length
    batches = [order[s:s + args.batch_size] for s in range(0, len(order), args.batch_size)]

    def plain_per_example():
        outs = []
        with torch.inference_mode():
            for prompt in prompts:
                ids = torch.tensor([prompt])
                gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=limit, pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos))
                toks = gen[0, len(prompt):].tolist()
                cut = next((k for k, t in enumerate(toks) if t in eos), None)
                outs.append(Decoded(toks[:cut] if cut is not None else toks, cut is not None))
        return outs

    def copy_aware():
        outs = [None] * len(rows)
        decoded = copy_greedy_causal(model, [prompts[i] for i in order], [sources[i] for i in order],
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                     max_new_tokens=limit, num_draft=args.num_draft, memory=DraftMemory(),
                                     batch_size=args.batch_size)
        for i, o in zip(order, decoded):
            outs[i] = o
        return outs

    def copy_per_batch(batch_list=batches):
        outs = [None] * len(rows)
        memory = DraftMemory()  # as Aligner.correct_batch: later batches draft from earlier corrections
        for b in batch_list:
            for i, o in zip(b, copy_greedy_causal(model, [prompts[i] for i in b], [sources[i] for i in b],
                                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                                   max_new_tokens=limit, num_draft=args.num_draft,
                                                   memory=memory)):
                outs[i] = o
        return outs

    def plain_batched():
        from lightalign.generation import left_padding

        outs = [None] * len(rows)
        with torch.inference_mode(), left_padding(tok):
            for b in batches:
                enc = tok.pad({"input_ids": [prompts[i] for i in b]}, return_tensors="pt")
                gen = model.generate(**enc, do_sample=False, max_new_tokens=limit, pad_token_id=tok.pad_token_id,
                                     eos_token_id=sorted(eos))
                for i, row in zip(b, gen[:, enc["input_ids"].shape[1]:].tolist()):
                    cut = next((k for k, t in enumerate(row) if t in eos), None)
                    outs[i] = Decoded(row[:cut] if cut is not None else row, cut is not None)
        return outs

    def pure_copy_forward():
        ceiling_pass(model, tok, [[(prompts[i], sources[i]) for i in b] for b in batches])

    copy_per_batch(batches[:1])  # warm-up (allocator, kernels)
    times, outs = _best_times({"plain": plain_per_example}, 1)
    more, outs_more = _best_times({"copy": copy_aware, "copy_per_batch": copy_per_batch,
                                   "plain_batched": plain_batched, "ceiling": pure_copy_forward}, max(1, args.repeats))
    times, outs = {**times, **more}, {**outs, **outs_more}
    t_plain, t_copy, t_copy_b, t_plain_b, t_ceiling = (times[k] for k in ("plain", "copy", "copy_per_batch",
                                                                          "plain_batched", "ceiling"))
    ref, fast, fast_b, plain_b = (outs[k] for k in ("plain", "copy", "copy_per_batch", "plain_batched"))
    n = len(rows)
    same = sum(a.tokens == b.tokens and a.finished == b.finished for a, b in zip(ref, fast))
    same_b = sum(a.tokens == b.tokens and a.finished == b.finished for a, b in zip(ref, fast_b))
    same_plain_b = sum(a.tokens == b.tokens for a, b in zip(ref, plain_b))
    unchanged = sum(o.tokens == s for o, s in zip(ref, sources))
    results = {
        "n": n, "batch_size": args.batch_size, "num_draft": args.num_draft, "threads": torch.get_num_threads(),
        "plain_per_example_per_s": n / t_plain, "plain_batched_per_s": n / t_plain_b,
        "copy_batched_per_s": n / t_copy, "copy_per_batch_per_s": n / t_copy_b,
        "pure_copy_forward_per_s": n / t_ceiling,
        "speedup_vs_plain": t_plain / t_copy, "identical_outputs": same, "per_batch_identical": same_b,
        "plain_batched_identical": same_plain_b, "fraction_of_ceiling": t_ceiling / t_copy,
        "per_batch_fraction_of_ceiling": t_ceiling / t_copy_b, "unchanged_answers": unchanged, "repeats": args.repeats,
        "generated_tokens": sum(len(o.tokens) for o in ref),
    }
    print(f"{n} held-out answers ({unchanged} come back unchanged), batch {args.batch_size}, "
          f"{args.num_draft} draft tokens, {results['threads']} threads")
    print(f"  plain greedy generate, one call per example : {n / t_plain:8.1f} corrections/s  (baseline)")
    print(f"  plain greedy generate, batched (left pad)   : {n / t_plain_b:8.1f} corrections/s  "
          f"({same_plain_b}/{n} identical to baseline)")
    print(f"  copy-aware + batched (lightalign)           : {n / t_copy:8.1f} corrections/s  "
          f"({same}/{n} identical to baseline)")
    print(f"  copy-aware, one call per batch              : {n / t_copy_b:8.1f} corrections/s  "
          f"({same_b}/{n} identical to baseline; {100 * t_ceiling / t_copy_b:.0f}% of the ceiling)")
    print(f"  ceiling: one forward pass over the answer   : {n / t_ceiling:8.1f} corrections/s")
    print(f"speedup copy-aware batched vs plain per-example: {results['speedup_vs_plain']:.2f}x (target >= 3x); "
          f"{100 * results['fraction_of_ceiling']:.0f}% of the pure-copy ceiling")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
