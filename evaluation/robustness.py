"""Rephrasing robustness: does a system's pass rate hold when the same request is worded differently?

Each measured prompt is asked again in rewordings (evaluation.rewrites: rule-based, plus optionally
rewrites by a chat model behind an OpenAI-compatible endpoint). The runner answers the reworded
records with every system and judges them with the rule judges; this module builds those records
and turns the verdicts into, per system and metric, over the prompts judged on the original wording
that got at least one judged rewording:

- original:   the pass rate on the original wording;
- average:    the mean over prompts of the per-prompt mean over its rewordings;
- worst_case: the mean over prompts of the per-prompt minimum over the original and its rewordings
              (a prompt passes only if every wording passes);
- drop_average / drop_worst_case: original minus average / worst case, paired per prompt;
- by_rule:    per rewrite rule, its pass rate and its paired drop from the original wording.
Every number is a bootstrap_ci over prompts (by_rule rates: over that rule's rewordings).
"""

from __future__ import annotations

import random
import re

from lightalign.evaluation.cache import cache_key
from lightalign.evaluation.rewrites import Rewording, build_rewriters, reword
from lightalign.evaluation.stats import bootstrap_ci

ENDPOINT_RULE = "endpoint"
INSTRUCTION = ("Rewrite the request below in {n} different ways, as different users might ask it. Keep its "
               "meaning, every name and number, and any instruction it gives (such as the answer format) "
               "exactly. Reply with one rewrite per line: no numbering, no quotes, nothing else.\n\n"
               "Request: {prompt}")


# ---- which prompts, which rewordings -------------------------------------------------------------

def select_prompts(n: int, max_prompts: int | None, seed: int) -> list[int]:
    """Indices of the prompts to measure: all, or a seeded sample of `max_prompts` (in dataset order)."""
    if max_prompts is None or max_prompts >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), max_prompts))


def pick(rewordings: list[Rewording], per_prompt: int, prompt: str, seed: int) -> list[Rewording]:
    """A seeded sample of `per_prompt` rewordings (in rule order), the same for the same prompt."""
    if len(rewordings) <= per_prompt:
        return list(rewordings)
    keep = set(random.Random(f"{seed}\x00pick\x00{prompt}").sample(range(len(rewordings)), per_prompt))
    return [r for i, r in enumerate(rewordings) if i in keep]


def parse_rewrites(text: str, prompt: str, n: int) -> list[str]:
    """Up to `n` rewrites from a model's reply, one per line; numbering, bullets and quotes are removed,
    and a line equal to the prompt, a repeat, or an introduction ending in ':' is skipped."""
    out: list[str] = []
    for line in (text or "").splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", line).strip().strip('"“”').strip()
        if not line or line.endswith(":") or line == prompt.strip() or line in out:
            continue
        out.append(line)
    return out[:n]


def endpoint_rewordings(rb, prompts: list[str], cache) -> tuple[dict, dict]:
    """({prompt: [Rewording]}, {"asked", "failed", "empty"}): `rb.endpoint_rewrites` rewrites per prompt
    from the chat model at `rb.endpoint`. Replies are cached (keyed on model, prompt and instruction),
    so a rerun asks nothing; a prompt whose request fails is counted and gets no endpoint rewordings
    (and is asked again on the next run)."""
    from lightalign.openai_client import ChatClient

    ep = rb.endpoint
    asks = {p: INSTRUCTION.format(n=rb.endpoint_rewrites, prompt=p) for p in dict.fromkeys(prompts)}
    keys = {p: cache_key(stage="rewrite", model=ep.model, prompt=p, instruction=q) for p, q in asks.items()}
    todo = [p for p in asks if keys[p] not in cache]
    failed = 0
    if todo:
        client = ChatClient.from_env(ep.url, ep.model, ep.api_key_env, what="robustness.endpoint.api_key_env",
                                     timeout=ep.timeout, retries=ep.max_retries, concurrency=ep.concurrency)
        try:
            results = client.chat_many([[{"role": "user", "content": asks[p]}] for p in todo],
                                       max_tokens=96 * rb.endpoint_rewrites, temperature=0.0)
        finally:
            client.close()
        for p, res in zip(todo, results):
            if isinstance(res, Exception):
                failed += 1
            else:
                cache.put(keys[p], res)
    out, empty = {}, 0
    for p in asks:
        lines = parse_rewrites(cache.get(keys[p]), p, rb.endpoint_rewrites) if keys[p] in cache else []
        empty += keys[p] in cache and not lines
        out[p] = [Rewording(ENDPOINT_RULE, t) for t in lines]
    return out, {"asked": len(asks), "failed": failed, "empty": empty}


def reworded_records(rb, records: list[dict], seed: int, cache=None) -> tuple[list[dict], list[int], dict]:
    """(reworded records, the index of each one's original, {"rules": the rules that gave a rewording,
    in config order, "endpoint": endpoint_rewordings' counts or None}). A reworded
    record is a copy of its original with `prompt` replaced, `id` = "<id>~<rule>" (endpoint ones:
    "<id>~endpoint<k>"), `rewording_of` = the original id and `rule` = the rule's name."""
    rewriters = build_rewriters(rb.rewrites)
    chosen = select_prompts(len(records), rb.max_prompts, seed)
    extra, stats = {}, None
    if rb.endpoint is not None:
        extra, stats = endpoint_rewordings(rb, [records[i]["prompt"] for i in chosen], cache)
    out, of = [], []
    for i in chosen:
        rec = records[i]
        ruled = pick(reword(rec["prompt"], rewriters, seed), rb.per_prompt, rec["prompt"], seed)
        seen = {rec["prompt"].strip()} | {r.text for r in ruled}
        asked = [(f"{rec['id']}~{r.rule}", r) for r in ruled]
        for k, r in enumerate(extra.get(rec["prompt"], []), 1):
            if r.text not in seen:
                seen.add(r.text)
                asked.append((f"{rec['id']}~{ENDPOINT_RULE}{k}", r))
        for rid, r in asked:
            out.append({**rec, "id": rid, "prompt": r.text, "rewording_of": rec["id"], "rule": r.rule})
            of.append(i)
    used = {r["rule"] for r in out}
    rules = [n for n in dict.fromkeys([r.name for r in rewriters] + [ENDPOINT_RULE]) if n in used]
    return out, of, {"rules": rules, "endpoint": stats}


# ---- the numbers ---------------------------------------------------------------------------------

def measure(original: list[dict], reworded: list[dict], of: list[int], rules: list[str], metrics: list[str],
            n_boot: int = 1000, seed: int = 0) -> dict:
    """{metric: {original, average, worst_case, drop_average, drop_worst_case, by_rule, n_prompts,
    n_rewordings}} from verdict dicts ({metric: True | False | None}): `original[i]` for prompt i,
    `reworded[j]` for a rewording of prompt `of[j]` made by rule `rules[j]` (see the module docstring)."""
    boot = {"n_boot": n_boot, "seed": seed}
    out = {}
    for m in metrics:
        per: dict[int, list[tuple[str, float]]] = {}
        for v, i, rule in zip(reworded, of, rules):
            if v.get(m) is not None and original[i].get(m) is not None:
                per.setdefault(i, []).append((rule, float(v[m])))
        if not per:
            continue
        idx = sorted(per)
        orig = [float(original[i][m]) for i in idx]
        avg = [sum(x for _, x in per[i]) / len(per[i]) for i in idx]
        worst = [min([o] + [x for _, x in per[i]]) for o, i in zip(orig, idx)]
        by_rule = {}
        for rule in dict.fromkeys(r for i in idx for r, _ in per[i]):
            pairs = [(o, x) for o, i in zip(orig, idx) for r, x in per[i] if r == rule]
            by_rule[rule] = {"rate": bootstrap_ci([x for _, x in pairs], **boot),
                             "drop": bootstrap_ci([o - x for o, x in pairs], **boot)}
        out[m] = {"original": bootstrap_ci(orig, **boot), "average": bootstrap_ci(avg, **boot),
                  "worst_case": bootstrap_ci(worst, **boot),
                  "drop_average": bootstrap_ci([o - a for o, a in zip(orig, avg)], **boot),
                  "drop_worst_case": bootstrap_ci([o - w for o, w in zip(orig, worst)], **boot),
                  "by_rule": by_rule, "n_prompts": len(idx), "n_rewordings": sum(len(per[i]) for i in idx)}
    return out
