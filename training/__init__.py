"""One training backbone for alignment adapters (SFT, DPO, ORPO) and the Aligner.

    from lightalign.training import load_recipe, train
    recipe = load_recipe("minilab/sft", ["output_dir=runs/sft"])   # Recipe(method, config, path, module)
    out = train(recipe)                                             # or train("minilab/sft", [...])

`sections` (the model / data / lora / training vocabulary every recipe shares), `recipe` (the one
recipe loader), `runs` (committed checkpoints, resume, metrics.json), `distributed` (rank 0 writes,
the ranks agree, under `accelerate launch`), `policy` (base + LoRA for the trainers), `cli`
(`lightalign train`). Nothing here imports torch at package import time.
"""

from lightalign.training.recipe import METHODS, Recipe, load_recipe, resolve_recipe, train

__all__ = ["METHODS", "Recipe", "load_recipe", "resolve_recipe", "train"]
