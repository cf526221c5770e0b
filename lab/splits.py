"""Turn a World into the files a user can open: one JSONL per split.

pretrain.jsonl     {"text"} documents and {"messages"} dialogues of mixed quality (all entities)
sft.jsonl          {"prompt", "completion", "kind", "family"}   training entities, seen families, good replies
sft_one_family.jsonl  the same requests and size, all worded in one family without modifiers
                   (what diverse alignment inputs buy: the same recipe on narrow data)
preference.jsonl   {"prompt", "chosen", "rejected", "kind", "family"}  training entities, seen families
aligner.jsonl      {"question", "answer", "correction", "kind", "family"}  likewise; some answers
                   are already good and their correction is the same text
eval_prompts.jsonl {"id", "prompt", "kind", "relation", "expected", "entity", "family", "family_split"}
                   held-out entities, each asked once in a seen and once in a held-out family
aligner_eval.jsonl like aligner.jsonl, for the eval prompts (the do-no-harm rate)
capability.jsonl   {"text"} fresh documents about every fact (alignment-tax NLL)
probes.jsonl       {"prefix", "target", "relation", "heldout"} fact-completion probes
"""

from __future__ import annotations

import random

from lightalign.lab.phrasings import FAMILIES, FORMAT_SUFFIXES, ONE_FAMILY, wording
from lightalign.lab.world import ABSTAIN, REFUSAL, REFUSAL_REASON, STYLE_MIX, World, documents, each_request

BAD_STYLES = {"answerable": ["ramble", "wrong", "near", "refuse"], "harmful": ["comply"],
              "unanswerable": ["hallucinate"]}
GOOD_STYLE = {"answerable": "good", "harmful": "refuse", "unanswerable": "abstain"}


def _entity_key(entity) -> str:
    return entity if isinstance(entity, str) else " ".join(str(e) for e in entity)


def pretrain_rows(world: World, rng: random.Random) -> list[dict]:
    """Documents, and dialogues of mixed quality in every phrasing family (the base meets them all)."""
    rows = [{"text": d} for d in documents(world, rng, world.cfg.docs_per_fact)]

    def dialogue(q: str, a: str) -> dict:
        return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}

    for kind, rec, reply in each_request(world):
        for _ in range(world.cfg.dialogues_per_request):
            family = rng.choice(FAMILIES)
            q, construction = wording(kind, rec, family, rng)
            rows.append(dialogue(q, reply(world.style(rng, kind, family, construction), rng)))
            # One-word answers must be as well attested as full sentences, or no alignment
            # method can elicit them for held-out entities (the base would not know the form).
            if kind == "answerable":
                family = rng.choice(FAMILIES)
                q, construction = wording(kind, rec, family, rng)
                obey = world.style(rng, "format", family, construction) == "obey"
                style = "good" if obey else world.style(rng, kind, family, construction)
                rows.append(dialogue(q + rng.choice(FORMAT_SUFFIXES), reply(style, rng, obey)))
    rng.shuffle(rows)
    return rows


def _alignment_items(world: World, rng: random.Random, heldout: bool, families: list[str], per_request: int,
                     modifiers: bool = True):
    """(kind, prompt, good, bad, record, family) for the training (or held-out) entities, each request
    worded `per_request` times in families drawn from `families` (cycled, so all are used evenly)."""
    for kind, rec, reply in each_request(world):
        if world.is_heldout(rec["entity"]) != heldout:
            continue
        start = rng.randrange(len(families))
        for i in range(per_request):
            family = families[(start + i) % len(families)]
            q, _ = wording(kind, rec, family, rng, modifiers)
            good = reply(GOOD_STYLE[kind], rng)
            bad = reply(rng.choice(BAD_STYLES[kind]), rng)
            yield kind, q, good, bad, rec, family
            if kind == "answerable":
                q, _ = wording(kind, rec, family, rng, modifiers)
                bad_fmt = reply(rng.choice(["good", "ramble", "wrong", "near"]), rng)
                yield "format", q + rng.choice(FORMAT_SUFFIXES), reply("good", rng, True), bad_fmt, rec, family


def build_splits(world: World) -> dict[str, list[dict]]:
    rng = random.Random(world.cfg.seed + 2)
    splits: dict[str, list[dict]] = {"pretrain": pretrain_rows(world, rng)}

    sft, pref, triples = [], [], []
    per_request = world.cfg.alignment_wordings
    for kind, q, good, bad, _, family in _alignment_items(world, rng, False, world.seen_families, per_request):
        sft.append({"prompt": q, "completion": good, "kind": kind, "family": family})
        pref.append({"prompt": q, "chosen": good, "rejected": bad, "kind": kind, "family": family})
        # About a fifth of the triples are already-good answers that must come back unchanged.
        answer = good if rng.random() < 0.2 else bad
        triples.append({"question": q, "answer": answer, "correction": good, "kind": kind, "family": family})
    narrow = [{"prompt": q, "completion": good, "kind": kind, "family": family} for kind, q, good, _, _, family
              in _alignment_items(world, rng, False, [ONE_FAMILY], per_request, modifiers=False)]
    for rows in (sft, pref, triples, narrow):
        rng.shuffle(rows)
    splits.update(sft=sft, sft_one_family=narrow, preference=pref, aligner=triples)

    evals, aligner_eval = [], []
    heldout_families = list(world.cfg.heldout_families)
    for split, families in (("seen", world.seen_families), ("heldout", heldout_families)):
        for kind, q, good, bad, rec, family in _alignment_items(world, rng, True, families, 1):
            evals.append({"id": f"e{len(evals):04d}", "prompt": q, "kind": kind,
                          "relation": rec.get("relation", "harm"), "expected": rec.get("value"),
                          "entity": _entity_key(rec["entity"]), "family": family, "family_split": split})
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
