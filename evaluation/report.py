"""Write a run's report: report.json (everything), report.md (tables people read), PNG figures."""

from __future__ import annotations

from pathlib import Path

from lightalign.io import atomic_write_text, write_json


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ci(c: dict | None, percent: bool = True, digits: int = 2) -> str:
    if not c or c.get("mean") is None:
        return "-"
    f = (lambda x: f"{100 * x:.1f}") if percent else (lambda x: f"{x:.{digits}f}")
    unit = "%" if percent else ""
    return f"{f(c['mean'])}{unit} [{f(c['lo'])}, {f(c['hi'])}] (n={c['n']})"


def _cell(text: str | None, limit: int = 90) -> str:
    if text is None:
        return "*(no reply)*"
    t = " ".join(str(text).split()).replace("|", "\\|")
    return (t[: limit - 1] + "…") if len(t) > limit else t


def rule_metrics(report: dict) -> list[str]:
    keys: list[str] = []
    for s in report["systems"].values():
        keys.extend(k for k in s["metrics"] if k not in keys)
    return keys


def summary_table(report: dict) -> list[dict]:
    """One flat row per system (rates as fractions): what `lightalign lab` prints at the end."""
    rows = []
    tax = report.get("tax") or {}
    for name in report["order"]:
        s = report["systems"][name]
        row = {"system": name, "kind": s["kind"]}
        for k, c in s["metrics"].items():
            row[k] = c["mean"]
        if "reward" in s:
            row["reward"] = s["reward"]["mean"]
        if "flask" in s:
            row["flask"] = s["flask"]["overall"]["mean"]
        for ref, w in (s.get("pairwise") or {}).items():
            row[f"w_vs_{ref}"] = w["w"]
        if "aligner_edits" in s:
            row["edit_rate"] = s["aligner_edits"]["edit_rate"]["mean"]
        if name in tax and name != "base":
            row["nll_tax"] = tax[name].get("relative")
        rows.append(row)
    return rows


def figures(report: dict, out: Path) -> list[Path]:
    from lightalign.evaluation import plots

    names = report["order"]
    sysr = report["systems"]
    paths: list[Path] = []
    metrics = rule_metrics(report)
    if metrics:
        values = {n: sysr[n]["metrics"] for n in names}
        paths.append(plots.grouped_bars(out / "rates.png", metrics, names, values,
                                        "Pass rate per metric (95% bootstrap CI)"))
    flask_skills: list[str] = []
    for n in names:
        flask_skills.extend(k for k in (sysr[n].get("flask") or {}).get("skills", {}) if k not in flask_skills)
    if len(flask_skills) >= 3:
        values = {n: {k: c["mean"] for k, c in (sysr[n].get("flask") or {}).get("skills", {}).items()} for n in names}
        paths.append(plots.radar(out / "skills.png", flask_skills, names, values,
                                 "FLASK skills (judge scores 1-5)", vmin=1.0, vmax=5.0, percent=False))
    # a profile radar from the rule judges split by prompt kind (e.g. helpful on answerable vs format)
    axes, values = [], {n: {} for n in names}
    for m in metrics:
        kinds = sorted({k for n in names for k in sysr[n]["by_kind"].get(m, {})})
        for k in kinds:
            label = f"{m} · {k}" if len(kinds) > 1 else m
            axes.append(label)
            for n in names:
                values[n][label] = (sysr[n]["by_kind"].get(m, {}).get(k) or {}).get("rate")
    if len(axes) >= 3:
        paths.append(plots.radar(out / "profile.png", axes, names, values, "Pass rate by metric and prompt kind"))
    if any("reward" in sysr[n] for n in names):
        vals = {n: {"reward": sysr[n]["reward"]} for n in names if "reward" in sysr[n]}
        paths.append(plots.grouped_bars(out / "reward.png", ["reward"], list(vals), vals,
                                        "Mean reward-model score (95% CI)", ylabel="reward", percent=False,
                                        ylim=None, color_order=names))
    gained = [n for n in names if sysr[n].get("gains")]
    if gained and metrics:
        vals = {n: sysr[n]["gains"] for n in gained}
        paths.append(plots.grouped_bars(out / "gains.png", metrics, gained, vals,
                                        f"Change vs {report.get('baseline')} (paired 95% CI)",
                                        ylabel="difference in pass rate", ylim=(-1, 1), color_order=names))
    refs = sorted({r for n in names for r in (sysr[n].get("pairwise") or {})})
    if refs:
        keys = [f"w vs {r}" for r in refs]
        vals = {n: {f"w vs {r}": w for r, w in (sysr[n].get("pairwise") or {}).items()} for n in names}
        shown = [n for n in names if vals[n]]
        paths.append(plots.grouped_bars(out / "pairwise.png", keys, shown, vals,
                                        "Pairwise judge: w = (wins - losses) / (wins + losses + ties)",
                                        ylabel="w", percent=False, ylim=(-1, 1), color_order=names))
    tax = {k: v for k, v in (report.get("tax") or {}).items()}
    c = plots.costs(out / "costs.png", tax or None, report.get("aligner_eval"), names, "What alignment costs")
    if c:
        paths.append(c)
    return paths


def _pp(c: dict | None) -> str:
    if not c or c.get("mean") is None:
        return "-"
    return f"{100 * c['mean']:+.1f} pp [{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}]"


def group_tables(report: dict, metrics: list[str]) -> list[str]:
    """Each rule metric per value of every dataset.group_by field (e.g. seen vs held-out phrasing families)."""
    fields = list(dict.fromkeys(f for s in report["systems"].values() for f in (s.get("by_group") or {})))
    lines = []
    for field in fields:
        values = sorted({v for s in report["systems"].values()
                         for per in (s.get("by_group") or {}).get(field, {}).values() for v in per})
        cols = [(m, v) for m in metrics for v in values]
        lines += ["", f"## By {field}", "", "| system | " + " | ".join(f"{m}: {v}" for m, v in cols) + " |",
                  "|" + "---|" * (len(cols) + 1)]
        for n in report["order"]:
            per = (report["systems"][n].get("by_group") or {}).get(field, {})
            lines.append(f"| **{n}** | " + " | ".join(_ci(per.get(m, {}).get(v)) for m, v in cols) + " |")
    return lines


def gains_table(report: dict, metrics: list[str]) -> list[str]:
    """What each system buys over the baseline (paired differences) and what it costs."""
    names = [n for n in report["order"] if report["systems"][n].get("gains") is not None]
    if not names or not metrics:
        return []
    sysr, tax, al = report["systems"], report.get("tax") or {}, report.get("aligner_eval") or {}
    tax_by_adapter = {sysr[k]["adapter"]: v for k, v in tax.items() if k in sysr and sysr[k].get("adapter")}
    al_by_path = {v["aligner"]: v for v in al.values()}
    lines = ["", f"## What each system buys and costs, vs {report.get('baseline')}", "",
             "Gains are paired differences in pass rate over the same prompts, in percentage points (95% CI). "
             "Costs: the NLL tax of an adapter, the do-no-harm rate of an Aligner.", "",
             "| system | " + " | ".join(metrics) + " | NLL tax | Aligner do-no-harm |",
             "|" + "---|" * (len(metrics) + 3)]
    for n in names:
        s = sysr[n]
        t = tax_by_adapter.get(s.get("adapter"))
        a = al_by_path.get(s.get("aligner"))
        cost_tax = f"{100 * t['relative']:+.2f}%" if t and t.get("relative") is not None else "-"
        cost_al = _pct(a["do_no_harm"]) if a else "-"
        lines.append(f"| **{n}** | " + " | ".join(_pp(s["gains"].get(m)) for m in metrics) +
                     f" | {cost_tax} | {cost_al} |")
    return lines


def robustness_tables(report: dict) -> list[str]:
    """Rephrasing robustness (evaluation.robustness): per system and metric the rate on the original
    wording, the average and worst case over rewordings, the drops; then the rate per rewrite rule."""
    rb = report.get("robustness")
    if not rb:
        return []
    ep = rb.get("endpoint")
    lines = ["", "## Rephrasing robustness", "",
             f"{rb['prompts']} prompts asked again in {rb['rewordings']} rewordings (rules: "
             f"{', '.join(rb['rules']) or 'none applied'}), judged by the rule judges. Average: mean over prompts "
             "of the rate over its rewordings; worst case: a prompt passes only if every wording passes. Drops are "
             "paired differences from the original wording, in percentage points (95% CI)."
             + (f" Endpoint rewrites: {ep['failed']} of {ep['asked']} requests failed, {ep['empty']} replies "
                "gave no rewrite." if ep else ""), "",
             "| system | metric | original | average | worst case | drop (average) | drop (worst case) |",
             "|---|---|---|---|---|---|---|"]
    rules: list[str] = list(rb["rules"])
    for n in report["order"]:
        for m, r in rb["systems"].get(n, {}).get("metrics", {}).items():
            lines.append(f"| **{n}** | {m} | {_ci(r['original'])} | {_ci(r['average'])} | {_ci(r['worst_case'])} | "
                         f"{_pp(r['drop_average'])} | {_pp(r['drop_worst_case'])} |")
    errs = {n: s["errors"] for n, s in rb["systems"].items() if s["errors"]}
    if errs:
        lines += ["", "Rewordings without a reply: " + ", ".join(f"{n}: {e}" for n, e in errs.items())]
    if rules:
        lines += ["", "Pass rate per rewrite rule (drop from the original wording, pp):", "",
                  "| system | metric | " + " | ".join(rules) + " |", "|" + "---|" * (len(rules) + 2)]
        for n in report["order"]:
            for m, r in rb["systems"].get(n, {}).get("metrics", {}).items():
                cells = []
                for rule in rules:
                    b = r["by_rule"].get(rule)
                    cells.append("-" if not b else f"{_pct(b['rate']['mean'])} ({100 * b['drop']['mean']:+.1f})")
                lines.append(f"| **{n}** | {m} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(report: dict, samples: list[dict], figs: list[Path]) -> str:
    names = report["order"]
    sysr = report["systems"]
    ds = report["dataset"]
    lines = [f"# {report['title']}", "",
             f"{ds['n']} prompts from `{ds['path']}` ({ds['schema']}), {len(names)} systems, "
             f"{report.get('seconds', 0):.0f}s. Rates are pass rates with 95% bootstrap intervals."
             + (f" Base model: `{report['base']['path']}` "
                f"({'4-bit NF4' if report['base']['quantization'] == 'nf4' else 'full precision'})."
                if report.get("base") else ""), ""]
    metrics = rule_metrics(report)
    extra = []
    if any("reward" in sysr[n] for n in names):
        extra.append(("reward", lambda s: _ci(s.get("reward"), percent=False)))
    if any("flask" in sysr[n] for n in names):
        extra.append(("FLASK (1-5)", lambda s: _ci((s.get("flask") or {}).get("overall"), percent=False)))
    for ref in sorted({r for n in names for r in (sysr[n].get("pairwise") or {})}):
        extra.append((f"w vs {ref}", lambda s, ref=ref: _ci((s.get("pairwise") or {}).get(ref), percent=False)))
    if any("aligner_edits" in sysr[n] for n in names):
        extra.append(("Aligner edits", lambda s: _pct((s.get("aligner_edits") or {}).get("edit_rate", {}).get("mean"))))
    head = ["system", "kind"] + metrics + [e[0] for e in extra]
    lines += ["## Results", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        s = sysr[n]
        cells = [f"**{n}**", s["kind"]] + [_ci(s["metrics"].get(m)) for m in metrics] + [f(s) for _, f in extra]
        lines.append("| " + " | ".join(cells) + " |")
    lines += group_tables(report, metrics)
    lines += gains_table(report, metrics)
    lines += robustness_tables(report)
    errs = {n: sysr[n]["errors"] for n in names if sysr[n]["errors"]}
    if errs:
        lines += ["", "Prompts without a reply (endpoint errors; retried on the next run): " +
                  ", ".join(f"{n}: {e}" for n, e in errs.items())]

    tax = report.get("tax")
    if tax:
        lines += ["", "## Alignment tax", "",
                  "Per-token NLL of held-out capability text (lower is better). The tax is the rise over the base.", "",
                  "| system | NLL / token | perplexity | Δ NLL vs base [95% CI] | relative |", "|---|---|---|---|---|"]
        for n, t in tax.items():
            d = "-" if "delta" not in t else f"{t['delta']:+.4f} [{t['delta_lo']:+.4f}, {t['delta_hi']:+.4f}]"
            rel = "-" if t.get("relative") is None else f"{100 * t['relative']:+.2f}%"
            lines.append(f"| {n} | {t['nll']:.4f} | {t['ppl']:.3f} | {d} | {rel} |")
    al = report.get("aligner_eval")
    if al:
        lines += ["", "## Aligner on held-out answers", "",
                  "The Aligner leaves the base untouched; its cost is unwanted edits. Do-no-harm = already-good "
                  "answers returned unchanged; fix rate = flawed answers turned into the reference correction.", "",
                  "| system | triples | edit rate | do-no-harm | fix rate | flawed answers edited | fallbacks |",
                  "|---|---|---|---|---|---|---|"]
        for n, a in al.items():
            lines.append(f"| {n} | {a['n']} | {_pct(a['edit_rate'])} | {_pct(a['do_no_harm'])} (n={a['n_good']}) | "
                         f"{_pct(a['fix_rate'])} (n={a['n_bad']}) | {_pct(a['fixed_edit_rate'])} | "
                         f"{_pct(a['fallback_rate'])} |")
    health = []
    for n in names:
        f = sysr[n].get("flask")
        if f:
            health.append(f"FLASK judge on {n}: {f['unparseable']} of {f['asked']} skill scores unparseable, "
                          f"{f['failed']} requests failed")
        for ref, w in (sysr[n].get("pairwise") or {}).items():
            health.append(f"pairwise {n} vs {ref}: {w['wins']}W/{w['losses']}L/{w['ties']}T, "
                          f"{w['unparseable']} of {w['calls']} replies unparseable, "
                          f"{w['inconsistent']} order-inconsistent,"
                          f" {w['undecided']} items undecided, {w['failed']} requests failed")
    if health:
        lines += ["", "## Judge health", ""] + [f"- {h}" for h in health]
    if figs:
        lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figs]
    if samples:
        lines += ["", "## Examples", "", "| kind | prompt | " + " | ".join(names) + " |",
                  "|" + "---|" * (len(names) + 2)]
        for row in samples:
            cells = [row.get("kind") or "", _cell(row["prompt"], 70)] + \
                    [_cell(row["replies"][n]["text"]) for n in names]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pick_samples(rows: list[dict], per_kind: int = 2) -> list[dict]:
    """A few prompts per kind, preferring ones where the systems disagree (those show what changed)."""
    out, by_kind = [], {}
    for r in rows:
        by_kind.setdefault(r.get("kind"), []).append(r)
    for kind, rs in by_kind.items():
        rs = sorted(rs, key=lambda r: -len({(v["text"] or "") for v in r["replies"].values()}))
        out.extend(rs[:per_kind])
    return out


def write_report(report: dict, out: Path, rows: list[dict]) -> list[Path]:
    out = Path(out)
    figs = figures(report, out)
    report["figures"] = [p.name for p in figs]
    report["table"] = summary_table(report)
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", to_markdown(report, pick_samples(rows), figs))
    return [out / "report.json", out / "report.md"] + figs
