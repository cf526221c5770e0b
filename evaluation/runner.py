"""`run_eval(cfg)`: answer every prompt with every system (cached), judge, measure costs (and, with a
`robustness` section, how the rates hold up when the prompts are reworded), write the report."""

from __future__ import annotations

import time

from lightalign import schemas
from lightalign.errors import UserError
from lightalign.io import make_dir, read_jsonl, write_jsonl
from lightalign.plugins import build_judge


def run_eval(cfg, log=print) -> dict:
    from lightalign.evaluation.cache import GenerationCache
    from lightalign.evaluation.datasets import load_dataset_config
    from lightalign.evaluation.report import write_report
    from lightalign.evaluation.systems import Systems

    t0 = time.time()
    out = make_dir(cfg.output, "the output folder (output)")  # before any model loads
    say = log or (lambda _msg: None)
    records = load_dataset_config(cfg.dataset, log=say)
    say(f"[eval] {len(records)} prompts from {cfg.dataset.path} x {len(cfg.systems)} systems")
    missing = [f for f in cfg.dataset.group_by if not any(r.get(f) is not None for r in records)]
    if missing:
        raise UserError(f"dataset.group_by: no record of {cfg.dataset.path} has the field(s) {', '.join(missing)}")
    cache = GenerationCache(out / "cache.jsonl")
    systems = Systems(cfg, cache)
    try:
        run = _Run(cfg, records, say, systems.base)
        for s in cfg.systems:
            run.add_replies(s, systems.answer(s, records))
        run.rule_judges()
        run.gains()
        for j in cfg.judges:
            if j.kind == "reward":
                run.reward_judge(j)
            elif j.kind in ("flask", "pairwise"):
                run.llm_judge(j, cache)
        run.aligner_edits()
        if cfg.robustness is not None:
            write_jsonl(out / "rewordings.jsonl", run.robustness(systems, cache))
        run.report["tax"] = alignment_tax(cfg, systems, say)
        run.report["aligner_eval"] = aligner_eval(cfg, systems, say)
        rows = run.rows()
        write_jsonl(out / "generations.jsonl", rows)
    finally:
        systems.close()
        cache.close()
    run.report["seconds"] = round(time.time() - t0, 1)
    paths = write_report(run.report, out, rows)
    say(f"[eval] wrote {', '.join(str(p) for p in paths)}")
    return run.report


class _Run:
    """The replies of every system and what the judges said about them, item by item."""

    def __init__(self, cfg, records: list[dict], say, base):
        self.cfg, self.records, self.say = cfg, records, say
        self.names = [s.name for s in cfg.systems]
        self.boot = {"n_boot": cfg.bootstrap, "seed": cfg.seed}
        self.replies: dict[str, list[dict]] = {}
        self.verdicts = {n: [dict() for _ in records] for n in self.names}  # kept for generations.jsonl
        self.rule_keys: list[str] = []
        local = any(s.kind != "openai" for s in cfg.systems)
        self.report: dict = {
            "title": cfg.title, "order": self.names, "systems": {},
            "dataset": {"schema": cfg.dataset.schema, "path": cfg.dataset.path, "n": len(records)},
            "base": {"path": base.path, "quantization": base.quantization} if local else None}

    def add_replies(self, system, replies: list[dict]) -> None:
        self.replies[system.name] = replies
        errs = sum(r["error"] is not None for r in replies)
        self.report["systems"][system.name] = {"kind": system.kind, "adapter": system.adapter, "aligner": system.aligner,
                                               "errors": errs, "metrics": {}, "by_kind": {}}
        if errs:
            self.say(f"[eval] {system.name}: {errs} prompts got no reply (counted in the report)")

    def answered(self, name: str):
        """(indices, records, texts) of the prompts this system answered (endpoint errors are left out)."""
        idx = [i for i, r in enumerate(self.replies[name]) if r["text"] is not None]
        return idx, [self.records[i] for i in idx], [self.replies[name][i]["text"] for i in idx]

    def rule_judges(self) -> None:
        """The judges that answer True/False/None per reply: refusal, and python plugins."""
        from lightalign.evaluation.judge_rules import RefusalJudge
        from lightalign.evaluation.stats import rate_ci

        judges = [build_judge(j.factory, j.options, f"judges[{i}]") if j.kind == "python" else RefusalJudge()
                  for i, j in enumerate(self.cfg.judges) if j.kind in ("python", "refusal")]
        seen: set[str] = set()
        self.rule_metrics = []  # (judge, metric, report key)
        for judge in judges:
            for metric in judge.metrics:
                key = metric if metric not in seen else f"{metric} ({judge.name})"  # two judges, one metric
                seen.add(metric)
                self.rule_keys.append(key)
                self.rule_metrics.append((judge, metric, key))
        for n in self.names:
            idx, recs, texts = self.answered(n)
            verdicts = self.judge_by_rules(recs, texts)
            for i, v in zip(idx, verdicts):
                self.verdicts[n][i].update(v)
            for key in self.rule_keys:
                flags = [v[key] for v in verdicts]
                ci = rate_ci(flags, **self.boot)
                if ci["n"]:
                    self.report["systems"][n]["metrics"][key] = ci
                    self.report["systems"][n]["by_kind"][key] = _by_kind(recs, flags)
                    for field in self.cfg.dataset.group_by:
                        self.report["systems"][n].setdefault("by_group", {}).setdefault(field, {})[key] = \
                            _by_field(recs, flags, field, self.boot)

    def judge_by_rules(self, recs: list[dict], texts: list[str]) -> list[dict]:
        """{report key: True | False | None} per reply, from every rule judge."""
        out = [dict() for _ in recs]
        scored = {}
        for judge, metric, key in self.rule_metrics:
            if id(judge) not in scored:
                scored[id(judge)] = judge.score(recs, texts) if recs else []
            for v, s in zip(out, scored[id(judge)]):
                v[key] = s[metric]
        return out

    def robustness(self, systems, cache) -> list[dict]:
        """Ask the reworded prompts (evaluation.robustness) with every system, through the same cached
        path (an Aligner corrects them too), judge them with the rule judges only (refusal and python
        plugins: the reward and LLM judges are not asked again), and put the numbers in
        report["robustness"]. Returns the rows of rewordings.jsonl."""
        from lightalign.evaluation.robustness import measure, reworded_records

        rb = self.cfg.robustness
        recs, of, info = reworded_records(rb, self.records, self.cfg.seed, cache)
        endpoint = info["endpoint"]
        self.say(f"[eval] robustness: {len(recs)} rewordings of {len(set(of))} prompts"
                 + (f" (endpoint: {endpoint['failed']} of {endpoint['asked']} requests failed)"
                    if endpoint and endpoint["failed"] else ""))
        rows = [{"id": r["id"], "rewording_of": r["rewording_of"], "rule": r["rule"], "prompt": r["prompt"],
                 "original": self.records[i]["prompt"], "replies": {}} for r, i in zip(recs, of)]
        res = {"rules": info["rules"], "per_prompt": rb.per_prompt,
               "prompts": len(set(of)), "rewordings": len(recs), "endpoint": endpoint, "systems": {}}
        for s in self.cfg.systems:
            replies = systems.answer(s, recs)
            ok = [j for j, r in enumerate(replies) if r["text"] is not None]
            verdicts = [dict() for _ in recs]
            for j, v in zip(ok, self.judge_by_rules([recs[j] for j in ok], [replies[j]["text"] for j in ok])):
                verdicts[j] = v
            for row, r, v in zip(rows, replies, verdicts):
                entry = {"text": r["text"]}
                if r["changed"] is not None:  # an Aligner system: what it corrected
                    entry.update(upstream=r["upstream"], changed=r["changed"])
                if r["error"]:
                    entry["error"] = r["error"]
                row["replies"][s.name] = {**entry, **v}
            res["systems"][s.name] = {"errors": len(recs) - len(ok), "metrics": measure(
                self.verdicts[s.name], verdicts, of, [r["rule"] for r in recs], self.rule_keys, **self.boot)}
        self.report["robustness"] = res
        return rows

    def baseline(self) -> str:
        if self.cfg.baseline:
            return self.cfg.baseline
        return next((s.name for s in self.cfg.systems if s.kind == "base"), self.names[0])

    def gains(self) -> None:
        """Each system minus the baseline, per rule metric, paired over the prompts both were judged on
        (so the interval reflects the difference itself, not two independent rates)."""
        from lightalign.evaluation.stats import bootstrap_ci

        ref = self.baseline()
        self.report["baseline"] = ref
        for n in self.names:
            if n == ref:
                continue
            out = {}
            for key in self.rule_keys:
                diffs = [float(a[key]) - float(b[key]) for a, b in zip(self.verdicts[n], self.verdicts[ref])
                         if a.get(key) is not None and b.get(key) is not None]
                if diffs:
                    out[key] = bootstrap_ci(diffs, **self.boot)
            self.report["systems"][n]["gains"] = out

    def reward_judge(self, j) -> None:
        from lightalign.evaluation.judge_reward import RewardJudge
        from lightalign.evaluation.stats import bootstrap_ci

        self.say(f"[eval] reward model {j.path}")
        rm = RewardJudge(j.path, batch_size=j.batch_size, trust_remote_code=self.cfg.base.trust_remote_code)
        for n in self.names:
            idx, recs, texts = self.answered(n)
            scores = rm.score(recs, texts)
            for i, v in zip(idx, scores):
                self.verdicts[n][i]["reward"] = v
            self.report["systems"][n]["reward"] = bootstrap_ci(scores, **self.boot)

    def llm_judge(self, j, cache) -> None:
        from lightalign.evaluation.judge_llm import LLMJudge
        from lightalign.openai_client import ChatClient

        ep = j.endpoint
        client = ChatClient.from_env(ep.url, ep.model, ep.api_key_env, timeout=ep.timeout, retries=ep.max_retries,
                                     concurrency=ep.concurrency)
        judge = LLMJudge(client, cache, progress=self.cfg.progress)
        try:
            if j.kind == "flask":
                for n in self.names:
                    self._flask(judge, j, n)
            else:
                for n in self.names:
                    if n != j.reference:
                        self._pairwise(judge, j.reference, n)
        finally:
            client.close()

    def _flask(self, judge, j, n) -> None:
        from lightalign.evaluation.stats import bootstrap_ci

        idx, recs, texts = self.answered(n)
        res = judge.flask(recs, texts, j.skills or None, desc=f"{n}: FLASK judge")
        skills: dict[str, list] = {}
        for i, item in zip(idx, res["items"]):
            self.verdicts[n][i]["flask"] = item
            for k, v in item.items():
                skills.setdefault(k, []).append(v)
        self.report["systems"][n]["flask"] = {
            "skills": {k: bootstrap_ci(v, **self.boot) for k, v in sorted(skills.items())},
            "overall": bootstrap_ci([v for vs in skills.values() for v in vs], **self.boot),
            "unparseable": res["unparseable"], "failed": res["failed"], "asked": res["asked"]}

    def _pairwise(self, judge, reference: str, n: str) -> None:
        from lightalign.evaluation.stats import w_score

        ref, mine = self.replies[reference], self.replies[n]
        idx = [i for i in range(len(self.records)) if mine[i]["text"] is not None and ref[i]["text"] is not None]
        res = judge.pairwise([self.records[i] for i in idx], [mine[i]["text"] for i in idx],
                             [ref[i]["text"] for i in idx], desc=f"{n} vs {reference}")
        for i, o in zip(idx, res["outcomes"]):
            self.verdicts[n][i][f"vs {reference}"] = o
        w = w_score(res["outcomes"], **self.boot)
        w.update(reference=reference, unparseable=res["unparseable"], failed=res["failed"],
                 inconsistent=res["inconsistent"], calls=res["calls"],
                 undecided=sum(o is None for o in res["outcomes"]))
        self.report["systems"][n].setdefault("pairwise", {})[reference] = w

    def aligner_edits(self) -> None:
        """How often each Aligner system changed this run's upstream answers, overall and per prompt kind
        (on a safety set: how often it leaves the answers to safe prompts alone)."""
        from lightalign.evaluation.stats import rate_ci

        for s in self.cfg.systems:
            if s.uses_aligner():
                replies = self.replies[s.name]
                done = [r for r in replies if r["text"] is not None]
                self.report["systems"][s.name]["aligner_edits"] = {
                    "edit_rate": rate_ci([r["changed"] for r in done], **self.boot),
                    "edit_rate_by_kind": _by_kind(self.records, [r["changed"] if r["text"] is not None else None
                                                                 for r in replies]),
                    "fallback_rate": sum(bool(r["fallback"]) for r in done) / len(done) if done else None}
                gated = [r["gate_passed"] for r in done if r.get("gate_passed") is not None]
                if gated:  # the Aligner's gate ran: the share of answers it passed undecoded
                    self.report["systems"][s.name]["aligner_edits"]["gate_pass_rate"] = sum(gated) / len(gated)

    def rows(self) -> list[dict]:
        out = []
        for i, rec in enumerate(self.records):
            row = {"id": rec["id"], "kind": rec.get("kind"), "prompt": rec["prompt"], "replies": {}}
            for n in self.names:
                r = self.replies[n][i]
                entry = {"text": r["text"]}
                if r["changed"] is not None:
                    entry.update(upstream=r["upstream"], changed=r["changed"], fallback=r["fallback"])
                if r["error"]:
                    entry["error"] = r["error"]
                row["replies"][n] = {**entry, **self.verdicts[n][i]}
            out.append(row)
        return out


def _by_kind(records, flags) -> dict:
    kinds: dict[str, list] = {}
    for r, f in zip(records, flags):
        if f is not None:
            kinds.setdefault(r.get("kind", "?"), []).append(bool(f))
    return {k: {"rate": sum(v) / len(v), "n": len(v)} for k, v in sorted(kinds.items())}


def _by_field(records, flags, field: str, boot: dict) -> dict:
    """{value of `field`: rate with its interval} over the records that have the field (dataset.group_by)."""
    from lightalign.evaluation.stats import rate_ci

    groups: dict[str, list] = {}
    for r, f in zip(records, flags):
        if f is not None and r.get(field) is not None:
            groups.setdefault(str(r[field]), []).append(bool(f))
    return {v: rate_ci(fl, **boot) for v, fl in sorted(groups.items())}


def alignment_tax(cfg, systems, say) -> dict | None:
    """Per-token NLL of the capability text: base, and each adapter system (same weights, adapter on)."""
    from lightalign.evaluation.cache import cache_key
    from lightalign.evaluation.tax import doc_nll, nll_summary, paired_delta_ci

    if not cfg.tax.capability or all(s.kind == "openai" for s in cfg.systems):
        return None
    texts = [r["text"] for r in read_jsonl(cfg.tax.capability) if isinstance(r.get("text"), str)]
    texts = texts[: cfg.tax.max_docs] if cfg.tax.max_docs else texts
    say(f"[eval] alignment tax: NLL of {len(texts)} capability documents")
    texts_id = cache_key(texts=texts, max_length=cfg.tax.max_length)

    def nll(system, adapter):
        """Per-document (sums, counts), cached like generations (keyed on the weights and the texts)."""
        key = cache_key(stage="nll", upstream=systems.upstream_identity(system), texts=texts_id)
        if key not in systems.cache:
            _, tok = systems.model_and_tokenizer()
            with systems.adapter(adapter) as model:
                systems.cache.put(key, doc_nll(model, tok, texts, cfg.tax.batch_size, cfg.tax.max_length))
        return tuple(systems.cache.get(key))

    base_system = next((s for s in cfg.systems if s.kind == "base"), None) or _plain_base(cfg)
    base = nll(base_system, None)
    out = {"base": nll_summary(*base)}
    by_path = {}
    for s in cfg.systems:
        if s.kind != "adapter":
            continue
        if s.adapter not in by_path:
            by_path[s.adapter] = nll(s, s.adapter)
        res = nll_summary(*by_path[s.adapter])
        d = paired_delta_ci(base, by_path[s.adapter], cfg.bootstrap, cfg.seed)
        res.update(delta=d["delta"], delta_lo=d["lo"], delta_hi=d["hi"],
                   relative=d["delta"] / out["base"]["nll"] if out["base"]["nll"] else None)
        out[s.name] = res
    return out


def _plain_base(cfg):
    from lightalign.evaluation.config import System

    return System(name="base", kind="base")


def _gate_stats(triples: list[dict], corrections: list[dict]) -> dict:
    """When the Aligner has a gate: the share of answers it passed undecoded, and of the answers that
    needed correcting, the share it passed (missed)."""
    from lightalign.aligner.inspector import needs_correcting

    if not any("gate_passed" in c for c in corrections):
        return {}
    bad = [c.get("gate_passed", False) for t, c in zip(triples, corrections) if needs_correcting(t)]
    return {"gate_pass_rate": sum(c.get("gate_passed", False) for c in corrections) / len(corrections),
            "gate_missed_rate": sum(bad) / len(bad) if bad else None}


def aligner_eval(cfg, systems, say) -> dict | None:
    """Edit rate, do-no-harm and fix rate of each Aligner on held-out (question, answer, correction) triples
    (any schema with triples: {question, answer, correction}, PKU-SafeRLHF, {prompt, chosen, rejected}, ...)."""
    from lightalign.evaluation.tax import aligner_edit_metrics

    aligner_systems = [s for s in cfg.systems if s.uses_aligner()]
    if not cfg.tax.aligner_eval or not aligner_systems:
        return None
    triples, stats = schemas.load(cfg.tax.aligner_eval, "auto", "triples", max_rows=cfg.tax.max_triples,
                                  where="tax.aligner_eval")
    for line in schemas.problems(stats):
        say(f"[eval] {cfg.tax.aligner_eval}: {line}")
    out, seen = {}, set()
    for s in aligner_systems:
        if s.aligner in seen:  # the same Aligner under several systems is measured once, by its first system
            continue
        seen.add(s.aligner)
        say(f"[eval] Aligner {s.aligner}: edit rate and do-no-harm on {len(triples)} triples")
        fixed = systems.corrections(s, [(t["question"], t["answer"]) for t in triples])
        out[s.name] = {"aligner": s.aligner, **aligner_edit_metrics(triples, fixed), **_gate_stats(triples, fixed)}
    return out
