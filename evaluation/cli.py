"""`lightalign eval CONFIG.yaml [key=value ...]` and `lightalign eval --lab DIR`."""

from __future__ import annotations

HELP = ("Compare base / adapter / Aligner / URIAL / endpoint systems on a prompt set; write a report "
        "(JSON, Markdown, PNG). Generations are cached: re-running regenerates nothing.")


def add_arguments(p):
    p.add_argument("config", nargs="?", help="eval config YAML (see recipes/eval/), or a recipe name like eval/minilab")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. dataset.limit=50 output=runs/eval2")
    p.add_argument("--lab", metavar="DIR", help="instead of a config: the mini-lab comparison of every system "
                                                "found in DIR (writes DIR/report/)")
    p.add_argument("--quick", action="store_true", help="with --lab: a subsample, for a fast look")


def run(args):
    from pathlib import Path

    from lightalign.errors import UserError

    if args.lab:
        from lightalign.evaluation.lab_report import run_lab_report

        report = run_lab_report(Path(args.lab), quick=args.quick)
        print(f"report: {Path(args.lab) / 'report' / 'report.md'}")
        return 0 if report else 1
    if not args.config:
        raise UserError("give a config YAML (see recipes/eval/) or --lab DIR")
    from lightalign.config import load_config
    from lightalign.evaluation.config import EvalConfig
    from lightalign.evaluation.runner import run_eval
    from lightalign.train_cli import resolve_recipe

    cfg = load_config(EvalConfig, resolve_recipe(args.config), list(args.overrides))
    run_eval(cfg)
    print(f"report: {Path(cfg.output) / 'report.md'}")
    return 0
