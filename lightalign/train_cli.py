"""`lightalign train RECIPE.yaml [key=value ...]`: one command for every training method.

The recipe's `method:` key picks a self-contained recipe module (torchtune style); that module's
`Config` dataclass validates the YAML, and its `train(cfg)` writes the artifact.
"""

from __future__ import annotations

import importlib

from lightalign.errors import UserError

HELP = "Train an alignment adapter (sft, dpo, orpo) or an Aligner from a recipe YAML."

METHODS = {
    "sft": "lightalign.adapters.sft",
    "dpo": "lightalign.adapters.dpo",
    "orpo": "lightalign.adapters.orpo",
    "aligner": "lightalign.aligner.train",
}


def add_arguments(p):
    p.add_argument("recipe", help="recipe YAML (see recipes/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lora.r=16 training.lr=2e-4")


def resolve_recipe(path: str):
    """Accept a path, or a name under the installed recipes folder (e.g. minilab/sft_qlora)."""
    from pathlib import Path

    p = Path(path)
    if p.exists():
        return p
    import lightalign.recipes as recipes

    root = Path(recipes.__file__).parent
    for cand in (root / path, root / f"{path}.yaml"):
        if cand.exists():
            return cand
    raise UserError(f"{path}: recipe not found (neither a file nor a recipe under {root})")


def run(args):
    from lightalign.config import apply_overrides, read_yaml

    path = resolve_recipe(args.recipe)
    data = apply_overrides(read_yaml(path), list(args.overrides))
    method = data.pop("method", None)
    if method not in METHODS:
        raise UserError(f"{path}: key 'method' must be one of {', '.join(METHODS)}, got {method!r}")
    module = importlib.import_module(METHODS[method])
    from lightalign.config import from_dict

    cfg = from_dict(module.Config, data, source=str(path))
    out = module.train(cfg)
    print(f"saved: {out}")
