"""User-supplied Python objects named in a config as "package.module:attribute".

A rule judge for eval and the app is such a plugin: a factory called with the config's options that
returns an object with `name`, `metrics` (metric names) and
`score(records, replies) -> list[{metric: True | False | None}]` (None: the metric does not apply).
The config names the plugin; importing it is the user's choice, as with any Python import.
"""

from __future__ import annotations

import importlib

from lightalign.errors import UserError


def load_object(spec: str, where: str):
    """Import "package.module:attribute" (attribute may be dotted); errors name `where` and the spec."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"{where}: {spec!r} must look like 'package.module:attribute'")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UserError(f"{where}: cannot import {module_name!r} (no module {e.name!r})") from None
        raise
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f"{where}: {module_name!r} has no attribute {attr!r}") from None
    return obj


def build_judge(spec: str, options: dict | None, where: str):
    """Call the judge factory named by `spec` with `options`; check it has the judge protocol."""
    factory = load_object(spec, where)
    if not callable(factory):
        raise UserError(f"{where}: {spec!r} is not callable")
    try:
        judge = factory(**(options or {}))
    except TypeError as e:
        raise UserError(f"{where}: {spec!r} does not accept options {sorted(options or {})}: {e}") from None
    missing = [a for a in ("name", "metrics", "score") if not hasattr(judge, a)]
    if missing:
        raise UserError(f"{where}: {spec!r} returned {type(judge).__name__}, which lacks {', '.join(missing)}")
    return judge
