"""Aligner training data: (question, answer, correction) triples from any schema in lightalign.schemas.

`schema` "auto" (the default) tells the layout from the first row's keys: {question, answer,
correction} (aligner/aligner-20K's columns), {prompt, chosen, rejected} (the rejected answer is the one
to correct, the chosen one its correction; strings or message lists), or PKU-SafeRLHF (the
`preference` label picks the correction, the other response is the answer; pairs whose two responses
are both unsafe are skipped unless `keep_unsafe_pairs`). Sources: a local file (errors name
file:line), a hub dataset id (needs `datasets`), or any iterable of dicts (a `datasets.Dataset`).
"""

from __future__ import annotations

import random
from typing import Iterable

from lightalign import schemas


def triples_with_stats(source, schema: str = "auto", preference: str = "safer", max_rows: int | None = None,
                       keep_unsafe_pairs: bool = False) -> tuple[list[dict], dict]:
    """(triples, stats); stats as lightalign.schemas.load returns them (malformed and skipped rows)."""
    options = schemas.Options(preference=preference, keep_unsafe_pairs=keep_unsafe_pairs)
    return schemas.load(source, schema, "triples", options, max_rows=max_rows)


def load_triples(source, schema: str = "auto", preference: str = "safer", max_rows: int | None = None,
                 keep_unsafe_pairs: bool = False) -> list[dict]:
    return triples_with_stats(source, schema, preference, max_rows, keep_unsafe_pairs)[0]


def _unchanged(t: dict) -> bool:
    return " ".join(t["answer"].split()) == " ".join(t["correction"].split())


def cap_unchanged(triples: list[dict], share: float) -> list[dict]:
    """At most `share` of the rows are triples whose correction keeps the answer: the later ones beyond
    that are dropped (file order). Triples built from a pool of good answers are mostly unchanged, and an
    Aligner trained on them learns to copy: on the real track (70% unchanged) it refused 9 of 57 held-out
    harmful compliances even with a gate in front choosing which answers to decode."""
    changed = [t for t in triples if not _unchanged(t)]
    keep = len(triples) if share >= 1 else round(len(changed) * share / (1 - share))
    out, kept = [], 0
    for t in triples:
        if _unchanged(t):
            if kept >= keep:
                continue
            kept += 1
        out.append(t)
    return out


def identity_rows(triples: Iterable[dict], share: float, seed: int = 0, source: str = "all") -> list[dict]:
    """Residual learning's warm-up data: a `share` of the rows as Q-A-A (the correction is the answer).
    source "all" draws from every row, as the Aligner paper does; "unchanged" only from rows whose
    correction already equals the answer, so the warm-up never teaches copying an answer the second
    stage will rewrite (a harmful compliance)."""
    triples = [t for t in triples if t["answer"].strip()]
    if source == "unchanged":
        triples = [t for t in triples if _unchanged(t)]
    k = round(len(triples) * share)
    picked = random.Random(seed).sample(triples, k) if k else []
    return [{"question": t["question"], "answer": t["answer"], "correction": t["answer"]} for t in picked]


def sentence_rows(triples: Iterable[dict], share: float, seed: int = 0, max_per_answer: int = 16) -> list[dict]:
    """Sentence-level rows (Stream Aligner) from a `share` of the triples: the answer and the
    correction split into aligned sentences (lightalign.aligner.sentences.align_sentences), one row
    per answer sentence {question, prefix (the corrected text before it), answer (the sentence),
    correction (its revision)}. Sentences the correction keeps give identity rows; a sentence the
    correction drops gives no row (an Aligner never learns to write nothing, which its guards refuse)."""
    from lightalign.aligner.sentences import align_sentences

    triples = [t for t in triples if t["answer"].strip()]
    k = round(len(triples) * share)
    picked = random.Random(seed + 1).sample(triples, k) if k else []
    rows = []
    for t in picked:
        prefix = ""
        for n, (sentence, revision) in enumerate(align_sentences(t["answer"], t["correction"])):
            if revision and n < max_per_answer:
                rows.append({"question": t["question"], "prefix": prefix, "answer": sentence, "correction": revision})
            if revision:
                prefix = f"{prefix} {revision}".strip()
    return rows
