"""`lightalign train RECIPE [key=value ...]`: one command for every training method."""

from __future__ import annotations

HELP = "Train an alignment adapter (sft, dpo, orpo) or an Aligner from a recipe YAML."


def add_arguments(p):
    p.add_argument("recipe", help="recipe YAML or installed recipe name (e.g. minilab/sft; see recipes/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lora.r=16 training.lr=2e-4")


def run(args):
    from lightalign.training import load_recipe, runs, train

    out = train(load_recipe(args.recipe, args.overrides))
    runs.notice(f"saved: {out}")
