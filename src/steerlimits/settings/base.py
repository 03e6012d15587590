"""Typed, frozen stage settings and their canonical JSON form (the rule ``params`` Snakemake compares).

Every stage of the DAG reads exactly one frozen dataclass. :func:`to_params` turns it into a plain, canonical
JSON value (keys sorted, tuples as lists, numbers typed by the dataclass), which a rule passes as ``params``;
Snakemake stores it with each output and re-runs the job when it changes. :func:`from_params` rebuilds the
dataclass on the other side (the job), so the step function sees types, never the raw config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = ["canonical_json", "from_params", "params_hash", "to_params"]

T = TypeVar("T")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace: equal values give equal text whatever the order of the YAML mappings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def to_params(obj: Any) -> dict[str, Any]:
    """The canonical JSON value of a settings dataclass (dicts with sorted keys, lists, numbers, strings)."""
    out = json.loads(canonical_json(_plain(obj)))
    assert isinstance(out, dict)
    return out


def params_hash(obj: Any) -> str:
    """First 16 hex digits of the sha256 of the canonical JSON of ``obj`` (a settings dataclass or its params)."""
    return hashlib.sha256(canonical_json(_plain(obj)).encode()).hexdigest()[:16]


def _build(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _build(arg, value, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise TypeError(f"{where}: {value!r} matches none of {args} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ValueError(f"{where}: {value!r} is not one of {get_args(tp)}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_params(tp, value, where)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise TypeError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise TypeError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_build(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a mapping, got {type(value).__name__}")
        key_t, val_t = get_args(tp) or (str, Any)
        return {_build(key_t, k, where): _build(val_t, v, f"{where}.{k}") for k, v in sorted(value.items())}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise TypeError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported settings type {tp!r}")


def from_params(cls: type[T], data: Mapping[str, Any], where: str | None = None) -> T:
    """Rebuild the frozen dataclass ``cls`` from its :func:`to_params` value, checking every field's type."""
    where = where or cls.__name__
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise TypeError(f"{where}: unknown settings {sorted(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            kwargs[f.name] = _build(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"{where}: missing setting '{f.name}'")
    return cls(**kwargs)
