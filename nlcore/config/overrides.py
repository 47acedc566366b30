"""`--set key=value` overrides: a dotted key, parsed by the field's annotated type, on any frozen dataclass."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import fields, replace
from typing import Any

# Tuple-of-levels fields are addressed by level name (`cms.levels.slow.lr=1e-3`) and mapping
# fields by key (`surprise.weights.fast=0.05`).


def _parse(value: Any, typ: Any, key: str) -> Any:
    """Convert `value` (often a CLI string) to the annotated type `typ`."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("none", "null"):
            return None
        return _parse(value, args[0], key)
    if not isinstance(value, str):
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            return int(float(value)) if "e" in value.lower() else int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return value
    except ValueError:
        raise ValueError(f"--set {key}: cannot read {value!r} as {getattr(typ, '__name__', typ)}") from None
    raise ValueError(f"--set {key}: this field cannot be set from the command line")


def override(cfg: Any, key: str, value: Any, _full: str | None = None) -> Any:
    """Return a copy of dataclass `cfg` with the dotted `key` set to `value` (parsed by type)."""
    full = _full or key
    head, _, rest = key.partition(".")
    if not dataclasses.is_dataclass(cfg):
        raise KeyError(f"--set {full}: cannot descend into a {type(cfg).__name__}")
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in fields(cfg)}
    if head not in names:
        raise KeyError(f"--set {full}: unknown key {head!r} in {type(cfg).__name__}; known: {sorted(names)}")
    current = getattr(cfg, head)
    if not rest:
        if dataclasses.is_dataclass(current) or isinstance(current, (tuple, dict)):
            raise KeyError(f"--set {full}: is a group; set one of its fields")
        return replace(cfg, **{head: _parse(value, hints[head], full)})
    if isinstance(current, dict):  # surprise.weights.<level>=w
        sub, _, deeper = rest.partition(".")
        if deeper:
            raise KeyError(f"--set {full}: too many parts after {head!r}")
        new = dict(current)
        v = _parse(value, float, full)
        if v == 0.0:
            new.pop(sub, None)
        else:
            new[sub] = v
        return replace(cfg, **{head: new})
    if isinstance(current, tuple):  # cms.levels.<name>.<field>=v
        sub, _, deeper = rest.partition(".")
        matches = [i for i, lv in enumerate(current) if getattr(lv, "name", None) == sub]
        if not matches:
            raise KeyError(f"--set {full}: unknown level {sub!r}; levels are {[lv.name for lv in current]}")
        if not deeper:
            raise KeyError(f"--set {full}: name a field of level {sub!r}")
        items = list(current)
        items[matches[0]] = override(items[matches[0]], deeper, value, full)
        return replace(cfg, **{head: tuple(items)})
    return replace(cfg, **{head: override(current, rest, value, full)})


def apply_overrides(cfg: Any, pairs: list[str]) -> Any:
    """Apply CLI `key=value` strings in order, then validate."""
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        cfg = override(cfg, key.strip(), value.strip())
    return cfg.validate()
