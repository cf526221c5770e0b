"""The one recipe loader: path or installed recipe name -> YAML -> overrides -> renamed keys -> typed Config.

A recipe's `method:` key picks a self-contained recipe module (torchtune style) with a `Config`
dataclass and `train(cfg) -> Path`. Keys renamed since the last release still load for one release:
each prints one deprecation line on stderr and is moved to its new name here, for every method.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightalign.config import apply_overrides, from_dict, read_yaml
from lightalign.errors import UserError, deprecated

METHODS = {
    "sft": "lightalign.adapters.sft",
    "dpo": "lightalign.adapters.dpo",
    "orpo": "lightalign.adapters.orpo",
    "aligner": "lightalign.aligner.train",
    "inspector": "lightalign.aligner.inspector_train",
}

# old dotted key -> (new dotted key, old value -> new value)
RENAMED = {
    "model.dtype": ("model.compute_dtype", {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}),
    "lora.load_in_4bit": ("model.quantization", {True: "nf4", False: "none"}),
    "data.format": ("data.schema", {}),
    "data.prefer": ("data.preference", {}),
}


@dataclass
class Recipe:
    method: str
    config: Any          # the method's validated Config dataclass
    path: Path | None    # the YAML it came from
    module: Any          # the recipe module: Config and train(cfg) -> Path

    def train(self, **kwargs) -> Path:
        return self.module.train(self.config, **kwargs)


def resolve_recipe(path_or_name: str | Path) -> Path:
    """Accept a path, or a name under the installed recipes folder (e.g. minilab/sft)."""
    p = Path(path_or_name)
    if p.exists() or p.is_symlink():  # a broken link: read_yaml says so
        return p
    import lightalign.recipes as recipes

    root = Path(recipes.__file__).parent
    for cand in (root / str(path_or_name), root / f"{path_or_name}.yaml"):
        if cand.is_file():
            return cand
    raise UserError(f"{path_or_name}: recipe not found (neither a file nor a recipe under {root})")


def rename_deprecated(data: dict, source: str) -> dict:
    """Move keys renamed since the last release to their new names, one stderr line each."""
    for old, (new, values) in RENAMED.items():
        old_section, old_key = old.split(".")
        section = data.get(old_section)
        if not isinstance(section, dict) or old_key not in section:
            continue
        value = section.pop(old_key)
        if not section:
            data.pop(old_section)
        new_section, new_key = new.split(".")
        target = data.setdefault(new_section, {})
        if not isinstance(target, dict):
            raise UserError(f"{source}: section {new_section!r} must be a mapping")
        if new_key in target:
            raise UserError(f"{source}: both {old!r} (deprecated) and {new!r} are set; keep only {new!r}")
        new_value = values.get(value, value) if isinstance(value, (str, bool)) else value
        target[new_key] = new_value
        deprecated(f"{source}: deprecated key {old}: {value!r} -> use {new}: {new_value!r}")
    return data


def load_recipe(path_or_name: str | Path, overrides=()) -> Recipe:
    """Recipe YAML (a path or an installed name) + `key=value` overrides -> Recipe(method, config, path)."""
    path = resolve_recipe(path_or_name)
    data = apply_overrides(read_yaml(path), list(overrides))
    rename_deprecated(data, str(path))
    method = data.pop("method", None)
    if method not in METHODS:
        raise UserError(f"{path}: key 'method' must be one of {', '.join(METHODS)}, got {method!r}")
    module = importlib.import_module(METHODS[method])
    return Recipe(method, from_dict(module.Config, data, source=str(path)), path, module)


def train(recipe_or_path: Recipe | str | Path, overrides=(), **kwargs) -> Path:
    """Train a recipe (a Recipe, a YAML path or an installed recipe name); returns the output folder."""
    recipe = recipe_or_path if isinstance(recipe_or_path, Recipe) else load_recipe(recipe_or_path, overrides)
    if overrides and isinstance(recipe_or_path, Recipe):
        raise UserError("train: pass overrides to load_recipe, not with an already loaded Recipe")
    return recipe.train(**kwargs)
