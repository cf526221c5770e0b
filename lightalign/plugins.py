"""User-supplied Python objects named in a config as "package.module:attribute".

A rule judge for eval and the app is such a plugin: a factory called with the config's options that
returns an object with `name`, `metrics` (metric names) and
`score(records, replies) -> list[{metric: True | False | None}]` (None: the metric does not apply).
The config names the plugin; importing it is the user's choice, as with any Python import.

A plugin runs with a time budget (`with_budget`): one that hangs or crawls ends the run with one line
naming it instead of hanging it. Python cannot stop a thread, so the late call is left to finish (or not)
in a daemon thread: a command exits anyway, a server answers the request with the error.
"""

from __future__ import annotations

import importlib
import threading

from lightalign.errors import UserError

# seconds a judge may take per scored reply (plus a fixed allowance), and a factory or a rewriter per call
JUDGE_SECONDS_PER_ITEM, JUDGE_SECONDS_FIXED = 5.0, 60.0
CALL_SECONDS = 60.0


def with_budget(fn, args: tuple, seconds: float, where: str):
    """`fn(*args)`, or a UserError naming `where` when it has not returned within `seconds`.
    Its own exceptions pass through unchanged."""
    result: dict = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e

    worker = threading.Thread(target=run, name=f"plugin {where}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise UserError(f"{where}: did not return within {seconds:g} s (a plugin that hangs or loops?); "
                        "fix it or leave it out of the config")
    if "error" in result:
        raise result["error"]
    return result.get("value")


class BudgetedJudge:
    """A user judge whose `score` runs within JUDGE_SECONDS_FIXED + JUDGE_SECONDS_PER_ITEM per reply."""

    def __init__(self, judge, where: str):
        self.judge, self.where = judge, where
        self.name, self.metrics = judge.name, judge.metrics

    def score(self, records, replies):
        seconds = JUDGE_SECONDS_FIXED + JUDGE_SECONDS_PER_ITEM * len(replies)
        return with_budget(self.judge.score, (records, replies), seconds, f"{self.where}.score")

    def __getattr__(self, name):  # anything else the judge offers
        return getattr(self.judge, name)


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
        judge = with_budget(lambda: factory(**(options or {})), (), CALL_SECONDS, where)
    except TypeError as e:
        raise UserError(f"{where}: {spec!r} does not accept options {sorted(options or {})}: {e}") from None
    missing = [a for a in ("name", "metrics", "score") if not hasattr(judge, a)]
    if missing:
        raise UserError(f"{where}: {spec!r} returned {type(judge).__name__}, which lacks {', '.join(missing)}")
    return BudgetedJudge(judge, where)
