"""Recipe YAML -> typed config (dataclasses), with torchtune-style `key=value` overrides.

Every recipe declares its config as nested dataclasses. `load_config` reads the YAML, applies
overrides such as `lora.r=16 training.lr=2e-4`, and validates every key and type, so a typo fails
before any model loads, with the file and the dotted field in the message. Hand-written because
pydantic is not a core dependency and OmegaConf's errors do not name the recipe file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from lightalign.errors import UserError
from lightalign.io import read_text

T = TypeVar("T")

MAX_INT = 2**63 - 1  # what torch, numpy and JSON readers downstream can hold


# A recipe is a few hundred values; aliases that expand past this are a "billion laughs" bomb.
MAX_YAML_NODES = 100_000


def _expanded_size(node, memo: dict) -> int:
    """How many nodes `node` stands for once every alias is expanded (aliases share node objects)."""
    if id(node) not in memo:
        memo[id(node)] = 0  # a recursive alias counts as small here; from_dict then refuses its type
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(_expanded_size(n, memo) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        else:
            size = 1
        memo[id(node)] = min(size, MAX_YAML_NODES + 1)
    return memo[id(node)]


def parse_yaml(text: str, source) -> Any:
    """yaml.safe_load with one-line errors naming `source`, refusing alias bombs and deep nesting."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise UserError(f"{source}: YAML expands to more than {MAX_YAML_NODES} values "
                            "(anchors and aliases nested into a bomb?)")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else str(source)
        raise UserError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    except RecursionError:
        raise UserError(f"{source}: YAML nested too deeply") from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    text = read_text(path, "recipe")  # missing, a folder, a FIFO or not UTF-8: one line naming it
    data = parse_yaml(text, path) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of keys to values")
    return data


def apply_overrides(data: dict, overrides: list[str], source: str = "command line") -> dict:
    """Apply `a.b.c=value` strings; values are parsed as YAML scalars (1e-4, true, null, [1,2])."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{source}: override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise UserError(f"{source}: override {item!r}: the key must be dotted names like lora.r")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"{source}: override {key!r}: {p!r} is not a section")
        try:
            node[parts[-1]] = parse_yaml(raw, f"{source}: override {key!r}") if raw != "" else ""
        except UserError:
            node[parts[-1]] = raw
    return data


def _short(value: Any) -> str:
    """repr() cut to one readable line: an error message never prints a whole (or a bomb-sized) value."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = short.maxlong = 40
    short.maxlevel, short.maxlist, short.maxdict = 2, 3, 3
    text = short.repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, field: str, source: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, field, source)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[-1] if errors else f"{source}: field {field!r} cannot be null")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise UserError(f"{source}: field {field!r} must be one of {choices}, got {_short(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{source}: section {field!r} must be a mapping, got {_short(value)}")
        return _build(tp, value, source, prefix=field + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{source}: field {field!r} expects a list, got {_short(value)}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{field}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{source}: field {field!r} expects a mapping, got {_short(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{source}: field {field!r} expects true/false, got {_short(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int past float's range
                number = math.inf
        elif isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and not math.isfinite(number):
            raise UserError(f"{source}: field {field!r} expects a finite number, got {_short(value)}")
        if number is not None:
            return number
        raise UserError(f"{source}: field {field!r} expects a number, got {_short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise UserError(f"{source}: field {field!r} is out of range (|value| <= 2**63-1), got {_short(value)}")
            return value
        raise UserError(f"{source}: field {field!r} expects an integer, got {_short(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{source}: field {field!r} expects a string, got {_short(value)}")
    raise UserError(f"{source}: field {field!r}: unsupported type {_type_name(tp)}")


def _build(cls: type[T], data: dict, source: str, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            raise UserError(f"{source}: unknown key {prefix + str(key)!r}{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], prefix + name, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{source}: missing required key {prefix + name!r}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as e:
            raise UserError(f"{source}: {e}") from None
    return obj


def from_dict(cls: type[T], data: dict, source: str = "config") -> T:
    return _build(cls, data, source)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict | None = None) -> T:
    """Read `path` (or start from `data`), apply `key=value` overrides, validate into `cls`."""
    raw = read_yaml(path) if path is not None else dict(data or {})
    apply_overrides(raw, list(overrides or []))
    return _build(cls, raw, str(path) if path is not None else "config")


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)
