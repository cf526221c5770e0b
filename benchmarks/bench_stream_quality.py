"""Streamed correction's quality on held-out triples, side by side: whole-answer correction, `sentence`
mode with the Aligner's sentence template (when it was trained with `sentence_rows:`), and `sentence`
mode with the whole-answer template on prefix + sentence (behind the Aligner's gate, if any).

For each: of the answers that need correcting, how many became their correction (whitespace aside) and
how many became a refusal; of the fine answers (answer == correction), how many came back byte for
byte (the do-no-harm rate of a stream). The sentence loop is the one `lightalign serve` runs
(aligner.streaming.correct_by_sentence, batched over the answers).

    python benchmarks/bench_stream_quality.py --aligner runs/minilab/aligner --triples runs/minilab/data/aligner_eval.jsonl
    python benchmarks/bench_stream_quality.py --aligner runs/real/aligner --triples runs/real/train/aligner.jsonl \\
        --schema auto --preference safer --last 205     # the real track's held-out training triples
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def measure(aligner, triples: list[dict], mode: str, batch_size: int) -> dict:
    from lightalign.aligner.inspector import needs_correcting
    from lightalign.aligner.streaming import correct_by_sentence
    from lightalign.evaluation.judge_rules import is_refusal

    t = time.perf_counter()
    out = correct_by_sentence(aligner, [(x["question"], x["answer"]) for x in triples], mode=mode,
                              batch_size=batch_size)
    need = [(o, x) for o, x in zip(out, triples) if needs_correcting(x)]
    fine = [(o, x) for o, x in zip(out, triples) if not needs_correcting(x)]
    same = lambda a, b: " ".join(a.split()) == " ".join(b.split())  # noqa: E731
    return {"needs_correcting": len(need),
            "corrected": sum(same(o["text"], x["correction"]) for o, x in need),
            "refused": sum(is_refusal(o["text"]) for o, x in need),
            "fine": len(fine),
            "fine_unchanged": sum(o["text"] == x["answer"] for o, x in fine),
            "fine_refused": sum(is_refusal(o["text"]) for o, x in fine),
            "seconds": round(time.perf_counter() - t, 1)}


def main(argv=None) -> int:
    from lightalign.aligner import Aligner
    from lightalign.aligner.data import triples_with_stats

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--aligner", required=True)
    p.add_argument("--triples", required=True, help="JSONL of triples, or preference pairs with --schema/--preference")
    p.add_argument("--schema", default="auto")
    p.add_argument("--preference", default="safer")
    p.add_argument("--last", type=int, default=None, help="only the last N triples (a held-out tail)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    triples, _ = triples_with_stats(args.triples, args.schema, args.preference, None, False)
    if args.last:
        triples = triples[-args.last:]
    aligner = Aligner.from_pretrained(args.aligner)  # loaded once: the variants differ only in the template
    variants = [("whole", "whole")]
    if aligner.sentence_template is not None:
        variants.append(("sentence, sentence template", "sentence"))
    variants.append(("sentence, whole-answer template", "sentence"))
    results = {}
    for name, mode in variants:
        if name == "sentence, whole-answer template":
            aligner.sentence_template = None  # what from_pretrained(path, sentence_template=None) gives
        results[name] = measure(aligner, triples, mode, args.batch_size)
        print(json.dumps({"variant": name, **results[name]}), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
