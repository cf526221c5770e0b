"""`lightalign elasticity CONFIG.yaml [key=value ...]`."""

from __future__ import annotations

from lightalign.config import load_config
from lightalign.errors import UserError

HELP = ("Fine-tune aligned systems further on a reverse set (benign, harmful or your rows), saving them at "
        "several sizes, and score every point with the eval: how fast does the alignment wear off? Cached.")


def add_arguments(p):
    p.add_argument("config", nargs="?", help="elasticity config YAML (see docs/elasticity.md)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sizes=[10,30] reverse.kind=harmful "
                                                "output=runs/el2")


def run(args):
    from pathlib import Path

    from lightalign.evaluation.elasticity import ElasticityConfig, run_elasticity, summary_rows

    if not args.config:
        raise UserError("give an elasticity config YAML (see docs/elasticity.md)")
    cfg = load_config(ElasticityConfig, args.config, list(args.overrides))
    result = run_elasticity(cfg)
    rows = summary_rows(result)
    cols = list(dict.fromkeys(k for r in rows for k in r if k != "system"))
    print()
    print("At 0 rows -> at the largest size (rows of the reverse set that lose half the gain):")
    for r in rows:
        print(f"  {r['system']}: " + "; ".join(f"{c} {r[c]}" for c in cols if c in r))
    print(f"\nelasticity: {Path(cfg.output) / 'elasticity.md'}")
    return 0
