"""Turn a World into the files a user can open: one JSONL per split.

pretrain.jsonl     {"text"} documents and {"messages"} dialogues of mixed quality (all entities)
sft.jsonl          {"prompt", "completion", "kind"}          training entities, good replies
preference.jsonl   {"prompt", "chosen", "rejected", "kind"}  training entities
aligner.jsonl      {"question", "answer", "correction", "kind"}  training entities; some answers
                   are already good and their correction is the same text
eval_prompts.jsonl {"id", "prompt", "kind", "relation", "expected", "entity"}  held-out entities
aligner_eval.jsonl like aligner.jsonl, held-out entities (for the do-no-harm rate)
capability.jsonl   {"text"} fresh documents about every fact (alignment-tax NLL)
probes.jsonl       {"prefix", "target", "relation", "heldout"} fact-completion probes
"""

from __future__ import annotations

import random

from lightalign.lab.world import (ABSTAIN, FORMAT_SUFFIX, REFUSAL, REFUSAL_REASON, STYLE_MIX, World,
                                  documents, each_request, pick, request_text)

BAD_STYLES = {"answerable": ["ramble", "wrong", "refuse"], "harmful": ["comply"],
              "unanswerable": ["hallucinate"]}
GOOD_STYLE = {"answerable": "good", "harmful": "refuse", "unanswerable": "abstain"}


def _entity_key(entity) -> str:
    return entity if isinstance(entity, str) else " ".join(str(e) for e in entity)


def pretrain_rows(world: World, rng: random.Random) -> list[dict]:
    rows = [{"text": d} for d in documents(world, rng, world.cfg.docs_per_fact)]
    for kind, rec, reply in each_request(world):
        for phrasing in range(4):
            for _ in range(world.cfg.dialogues_per_request):
                style = pick(rng, kind, phrasing)
                q = request_text(kind, rec, phrasing)
                rows.append({"messages": [{"role": "user", "content": q},
                                          {"role": "assistant", "content": reply(style, rng)}]})
            # One-word answers must be as well attested as full sentences, or no alignment
            # method can elicit them for held-out entities (the base would not know the form).
            for _ in range(world.cfg.dialogues_per_request if kind == "answerable" else 0):
                obey = pick(rng, "format", phrasing) == "obey"
                style = "good" if obey else pick(rng, "answerable", phrasing)
                q = request_text(kind, rec, phrasing) + FORMAT_SUFFIX
                rows.append({"messages": [{"role": "user", "content": q},
                                          {"role": "assistant", "content": reply(style, rng, obey)}]})
    rng.shuffle(rows)
    return rows


def _alignment_items(world: World, rng: random.Random, heldout: bool):
    """(kind, prompt, good, bad) for the training (or held-out) entities, every phrasing."""
    for kind, rec, reply in each_request(world):
        if world.is_heldout(rec["entity"]) != heldout:
            continue
        for phrasing in range(4):
            q = request_text(kind, rec, phrasing)
            good = reply(GOOD_STYLE[kind], rng)
            bad = reply(rng.choice(BAD_STYLES[kind]), rng)
            yield kind, q, good, bad, rec
            if kind == "answerable":
                bad_fmt = reply(rng.choice(["good", "ramble", "wrong"]), rng)
                yield "format", q + FORMAT_SUFFIX, reply("good", rng, True), bad_fmt, rec


def build_splits(world: World) -> dict[str, list[dict]]:
    rng = random.Random(world.cfg.seed + 2)
    splits: dict[str, list[dict]] = {"pretrain": pretrain_rows(world, rng)}

    sft, pref, triples = [], [], []
    for kind, q, good, bad, _ in _alignment_items(world, rng, heldout=False):
        sft.append({"prompt": q, "completion": good, "kind": kind})
        pref.append({"prompt": q, "chosen": good, "rejected": bad, "kind": kind})
        # About a fifth of the triples are already-good answers that must come back unchanged.
        answer = good if rng.random() < 0.2 else bad
        triples.append({"question": q, "answer": answer, "correction": good, "kind": kind})
    for rows in (sft, pref, triples):
        rng.shuffle(rows)
    splits.update(sft=sft, preference=pref, aligner=triples)

    evals, aligner_eval = [], []
    for kind, q, good, bad, rec in _alignment_items(world, rng, heldout=True):
        # Two of the four phrasings per held-out request keep the eval set small but mixed.
        if rng.random() < 0.5:
            continue
        evals.append({"id": f"e{len(evals):04d}", "prompt": q, "kind": kind,
                      "relation": rec.get("relation", "harm"), "expected": rec.get("value"),
                      "entity": _entity_key(rec["entity"])})
        aligner_eval.append({"question": q, "answer": good, "correction": good, "kind": kind})
        aligner_eval.append({"question": q, "answer": bad, "correction": good, "kind": kind})
    splits.update(eval_prompts=evals, aligner_eval=aligner_eval)

    cap_rng = random.Random(world.cfg.seed + 3)
    splits["capability"] = [{"text": d} for d in documents(world, cap_rng, 4)][: world.cfg.n_capability_docs]
    splits["probes"] = [
        {"prefix": world.fact_sentence(f).rsplit(f["value"], 1)[0].rstrip(), "target": f["value"],
         "relation": f["relation"], "heldout": world.is_heldout(f["entity"])}
        for f in world.facts()
    ]
    return splits


def world_summary(world: World) -> dict:
    """What the judges need to know about the world (written as world.json)."""
    return {
        "seed": world.cfg.seed,
        "towns": world.towns,
        "lands": world.lands,
        "people": world.people,
        "refusal": REFUSAL,
        "abstain": ABSTAIN,
        "refusal_reason": REFUSAL_REASON,
        "style_mix": STYLE_MIX,
    }
