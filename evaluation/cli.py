"""`lightalign eval CONFIG.yaml [key=value ...]`."""

from __future__ import annotations

from lightalign.config import load_config
from lightalign.errors import UserError, deprecated

HELP = ("Compare base / adapter / Aligner / URIAL / endpoint systems on a prompt set; write a report "
        "(JSON, Markdown, PNG). Generations are cached: re-running regenerates nothing.")


def add_arguments(p):
    p.add_argument("config", nargs="?", help="eval config YAML (see recipes/eval/), or a recipe name like eval/minilab")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. dataset.limit=50 output=runs/eval2")
    p.add_argument("--lab", metavar="DIR", help="deprecated: same as CONFIG = DIR/report/eval.yaml")


def config_path(args):
    from pathlib import Path

    from lightalign.training.recipe import resolve_recipe

    if args.lab:
        path = Path(args.lab) / "report" / "eval.yaml"
        deprecated(f"--lab is deprecated; use: lightalign eval {path}")
        if args.config:
            raise UserError("command line: give a config or --lab, not both")
        if not path.is_file():
            raise UserError(f"--lab {args.lab}: no {path} (`lightalign lab --dir {args.lab}` writes it)")
        return path
    if not args.config:
        raise UserError("give an eval config YAML (see recipes/eval/)")
    return resolve_recipe(args.config)


def run(args):
    from pathlib import Path

    from lightalign.evaluation.config import EvalConfig
    from lightalign.evaluation.runner import run_eval

    cfg = load_config(EvalConfig, config_path(args), list(args.overrides))
    run_eval(cfg)
    print(f"report: {Path(cfg.output) / 'report.md'}")
    return 0
