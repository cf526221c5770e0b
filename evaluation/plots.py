"""Report figures (matplotlib, Agg backend so it runs headless): grouped bars per metric and system
with confidence-interval error bars, a radar chart of per-skill scores, and a costs chart (alignment
tax and Aligner edit behaviour). Each system keeps one colour across every figure."""

from __future__ import annotations

import math
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def system_colors(systems: list[str]) -> dict[str, str]:
    palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C",
               "#CCB974", "#64B5CD"]
    return {s: palette[i % len(palette)] for i, s in enumerate(systems)}


def grouped_bars(path: Path, metrics: list[str], systems: list[str], values: dict, title: str,
                 ylabel: str = "rate", percent: bool = True, ylim: tuple | None = (0, 1),
                 color_order: list[str] | None = None) -> Path:
    """values[system][metric] = {"mean", "lo", "hi", "n"} (missing or None mean = no bar)."""
    plt = _plt()
    colors = system_colors(color_order or systems)
    signed = bool(ylim and ylim[0] < 0)
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(metrics) * max(1, len(systems)) ** 0.5 + 2), 4.8))
    for j, s in enumerate(systems):
        xs, ys, errs = [], [], [[], []]
        for i, m in enumerate(metrics):
            v = values.get(s, {}).get(m)
            if not v or v.get("mean") is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(v["mean"])
            errs[0].append(max(0.0, v["mean"] - v["lo"]))
            errs[1].append(max(0.0, v["hi"] - v["mean"]))
        bars = ax.bar(xs, ys, width * 0.92, yerr=errs, capsize=3, color=colors[s], label=s,
                      error_kw={"elinewidth": 1, "ecolor": "#333333"})
        for b, y, lo, hi in zip(bars, ys, errs[0], errs[1]):
            label = (f"{100 * y:+.0f}%" if signed else f"{100 * y:.0f}%") if percent else f"{y:.2f}"
            # beyond the error bar's end, so the label never sits on a bar and a 0% bar still shows it
            below = y < 0
            ax.annotate(label, (b.get_x() + b.get_width() / 2, y - lo if below else y + hi),
                        xytext=(0, -2 if below else 2), textcoords="offset points", ha="center",
                        va="top" if below else "bottom", fontsize=7, color="#222222")
    ax.set_xticks(range(len(metrics)), metrics, fontsize=10)
    if ylim:
        pad = 0.08 * (ylim[1] - ylim[0])  # headroom for the value labels
        ax.set_ylim(ylim[0] - (pad if ylim[0] < 0 else 0), ylim[1] + pad)
    if ylim and ylim[0] < 0:
        ax.axhline(0, color="#333333", linewidth=0.8)
    if percent:
        if ylim:
            ax.set_yticks([ylim[0] + (ylim[1] - ylim[0]) * k / 4 for k in range(5)] if ylim[0] < 0
                          else [0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:+.0f}%" if ylim and ylim[0] < 0 else f"{100 * v:.0f}%")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=12)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, ncols=min(len(systems), 3), loc="upper center", bbox_to_anchor=(0.5, -0.1),
              frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def radar(path: Path, axes: list[str], systems: list[str], values: dict, title: str,
          vmin: float = 0.0, vmax: float = 1.0, percent: bool = True) -> Path:
    """values[system][axis] = number (None = missing, drawn at the centre)."""
    plt = _plt()
    colors = system_colors(systems)
    n = len(axes)
    angles = [2 * math.pi * i / n for i in range(n)] + [0.0]
    fig, ax = plt.subplots(figsize=(7.6, 6.4), subplot_kw={"polar": True})
    for s in systems:
        vals = [values.get(s, {}).get(a) for a in axes]
        vals = [vmin if v is None else v for v in vals]
        vals.append(vals[0])
        ax.plot(angles, vals, color=colors[s], linewidth=2, label=s)
        ax.fill(angles, vals, color=colors[s], alpha=0.08)
    ax.set_xticks(angles[:-1], [a.replace(" · ", "\n(") + (")" if " · " in a else "") for a in axes], fontsize=9)
    ax.tick_params(axis="x", pad=20)
    ax.set_ylim(vmin, vmax)
    ticks = [vmin + (vmax - vmin) * k / 4 for k in range(1, 5)]
    ax.set_yticks(ticks, [f"{100 * t:.0f}%" if percent else f"{t:g}" for t in ticks], fontsize=7, color="#666666")
    ax.set_title(title, fontsize=12, pad=18)
    ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.3, 1.12), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def costs(path: Path, tax: dict | None, aligner: dict | None, systems: list[str], title: str) -> Path | None:
    """Left: per-token NLL on capability text per system (lower is better; the tax is the rise).
    Right: the Aligner's edit rate, do-no-harm and fix rate on held-out triples."""
    panels = [p for p in (tax, aligner) if p]
    if not panels:
        return None
    plt = _plt()
    colors = system_colors(systems)
    fig, axs = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), squeeze=False)
    k = 0
    if tax:
        ax = axs[0][k]
        k += 1
        names = list(tax)
        ys = [tax[n]["nll"] for n in names]
        bars = ax.bar(names, ys, color=[colors.get(n, "#8C8C8C") for n in names])
        for b, n in zip(bars, names):
            d = tax[n].get("delta")
            note = f"{tax[n]['nll']:.3f}" + (f"\n({d:+.3f})" if d is not None else "")
            ax.annotate(note, (b.get_x() + b.get_width() / 2, b.get_height()), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, max(ys) * 1.25)
        ax.set_ylabel("per-token NLL (nats), lower is better")
        ax.set_title("Alignment tax on held-out capability text", fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    if aligner:
        ax = axs[0][k]
        metrics = ["edit_rate", "do_no_harm", "fix_rate", "fallback_rate"]
        names = list(aligner)
        width = 0.8 / max(1, len(names))
        for j, n in enumerate(names):
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(metrics))]
            ys = [aligner[n].get(m) or 0.0 for m in metrics]
            bars = ax.bar(xs, ys, width * 0.92, color=colors.get(n, "#8C8C8C"), label=n)
            for b, y in zip(bars, ys):
                ax.annotate(f"{100 * y:.0f}%", (b.get_x() + b.get_width() / 2, y), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(metrics)), [m.replace("_", " ") for m in metrics], fontsize=8)
        ax.set_ylim(0, 1.12)
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        ax.set_title("Aligner on held-out answers", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
    for row in axs:
        for ax in row:
            ax.spines[["top", "right"]].set_visible(False)
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def tradeoff(path: Path, points: list[tuple[str, dict, dict]], title: str, xlabel: str, ylabel: str) -> Path:
    """Systems on a two-rate plane (e.g. over-refusal vs harmful refused): points[i] = (label, x, y) with
    x and y as {"mean", "lo", "hi"}; 95% intervals drawn as error bars on both axes."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    colors = system_colors([p[0] for p in points])
    for label, x, y in points:
        ax.errorbar(x["mean"], y["mean"], xerr=[[x["mean"] - x["lo"]], [x["hi"] - x["mean"]]],
                    yerr=[[y["mean"] - y["lo"]], [y["hi"] - y["mean"]]], fmt="o", capsize=3, color=colors[label],
                    label=label)
        ax.annotate(label, (x["mean"], y["mean"]), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curves(path: Path, result: dict) -> Path | None:
    """Elasticity curves (evaluation.elasticity): one panel per metric and one for the NLL distance to
    the base, each curve a system against the reverse rows it was fine-tuned on (symlog axis: 0 rows is
    the aligned system), with its 95% interval as a band and the base's value as a dashed line."""
    series = result.get("series") or {}
    metrics = sorted({m for s in series.values() for p in s["points"] for m in p["metrics"]})
    has_nll = any("nll_distance" in p for s in series.values() for p in s["points"])
    panels = metrics + (["nll_distance"] if has_nll else [])
    if not panels:
        return None
    plt = _plt()
    colors = system_colors(list(series))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axs = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows + 0.8), squeeze=False)
    sizes = [n for n in result.get("sizes", []) if n > 0]
    for k, panel in enumerate(panels):
        ax = axs[k // cols][k % cols]
        for label, s in series.items():
            if panel == "nll_distance" and s.get("aligner"):
                continue  # the Aligner leaves its upstream's weights alone: the same curve as without it
            xs, ys, lo, hi = [], [], [], []
            for p in s["points"]:
                v = p.get("nll_distance") if panel == "nll_distance" else p["metrics"].get(panel)
                if not v or v.get("mean") is None:
                    continue
                xs.append(p["rows"])
                ys.append(v["mean"])
                lo.append(v["mean"] if v.get("lo") is None else v["lo"])
                hi.append(v["mean"] if v.get("hi") is None else v["hi"])
            if not xs:
                continue
            style = "--" if s.get("aligner") else "-"
            ax.plot(xs, ys, style, marker="o", markersize=3, color=colors[label], label=label)
            ax.fill_between(xs, lo, hi, color=colors[label], alpha=0.12, linewidth=0)
            if panel != "nll_distance":
                ref = (s["base"]["metrics"].get(panel) or {}).get("mean")
                if ref is not None:
                    ax.axhline(ref, color=colors[label], linestyle=":", linewidth=0.8)
        if panel == "nll_distance":
            ax.axhline(0, color="#333333", linewidth=0.8, linestyle=":")
            ax.set_ylabel("per-token NLL - base's (nats)")
            ax.set_title("distance to the base (capability text)", fontsize=10)
        else:
            ax.set_ylim(-0.03, 1.03)
            ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
            ax.set_title(f"{panel} (dotted: base)", fontsize=10)
        if sizes:
            ax.set_xscale("symlog", linthresh=sizes[0])
            ticks = [0, *sizes]
            ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
        ax.set_xlabel("reverse rows fine-tuned on")
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    for k in range(len(panels), rows * cols):
        axs[k // cols][k % cols].axis("off")
    handles, labels = axs[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncols=min(len(labels), 4), frameon=False)
    fig.suptitle(result.get("title") or "elasticity", fontsize=12)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
