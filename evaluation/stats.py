"""Bootstrap confidence intervals and the Aligner paper's w score.

Percentile bootstrap over items (numpy, vectorised): simple, assumption-light, and right for rates
and mean scores on a few hundred prompts. w = (wins - losses) / (wins + losses + ties) is the mean
of per-item outcomes +1 / -1 / 0, so the same bootstrap gives its interval.
"""

from __future__ import annotations

from typing import Sequence


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """{"mean", "lo", "hi", "n"} for the mean of `values` (None values are dropped)."""
    import numpy as np

    x = np.asarray([float(v) for v in values if v is not None], dtype=float)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = float(x.mean())
    if n_boot <= 0 or n == 1:
        return {"mean": mean, "lo": mean, "hi": mean, "n": n}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "n": n}


def rate_ci(flags: Sequence[bool | None], **kw) -> dict:
    """A pass rate with its interval: booleans (None = not applicable) -> bootstrap_ci of 0/1."""
    return bootstrap_ci([None if f is None else float(bool(f)) for f in flags], **kw)


OUTCOME_VALUE = {"win": 1.0, "loss": -1.0, "tie": 0.0}


def w_score(outcomes: Sequence[str | None], **kw) -> dict:
    """w = (wins - losses) / (wins + losses + ties), with a bootstrap interval and the counts.
    None outcomes (unparseable judge replies) are excluded and counted separately by the caller."""
    vals = [OUTCOME_VALUE[o] for o in outcomes if o is not None]
    out = bootstrap_ci(vals, **kw)
    out.update(wins=sum(o == "win" for o in outcomes), losses=sum(o == "loss" for o in outcomes),
               ties=sum(o == "tie" for o in outcomes))
    total = out["wins"] + out["losses"] + out["ties"]
    out["w"] = (out["wins"] - out["losses"]) / total if total else None
    return out
