"""Every leaf key of the config schemas, and a changed valid value for each (for tests/test_rerun.py).

The keys are generated from ``workflow/schemas/*.schema.yaml`` (top level, ``paperA``, ``paperB``), walking into
mappings with ``additionalProperties`` through the keys a config actually has (or one new key, where the map is
empty). A leaf's new value is derived from its schema: a boolean flips, a number moves inside its bounds, an enum
takes another member, an array gains or loses an element. ``OVERRIDES`` gives the value where the generic rule
would make an invalid config (a trait without a vector, say); ``NOT_APPLICABLE`` lists keys whose change has no
meaning for the config at hand, with the reason.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = {(): "config.schema.yaml", ("paperA",): "paperA.schema.yaml", ("paperB",): "paperB.schema.yaml"}

Key = tuple[str, ...]


def _schema(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "workflow" / "schemas" / name).read_text())


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        ref = node["$ref"].split("/")[1:]
        target: Any = root
        for part in ref:
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _get(config: Mapping[str, Any], key: Key) -> Any:
    value: Any = config
    for part in key:
        value = value[part]
    return value


def leaves(config: Mapping[str, Any]) -> Iterator[tuple[Key, Mapping[str, Any]]]:
    """``(key, schema node)`` for every leaf key of the schemas, given a validated ``config``."""

    def walk(
        node: Mapping[str, Any], key: Key, root: Mapping[str, Any], value: Any, top: bool
    ) -> Iterator[tuple[Key, Any]]:
        node = _resolve(node, root)
        if top and key in SCHEMAS and key != ():  # paperA / paperB: walked with their own schema file
            return
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if node.get("type") == "object" and (props or isinstance(extra, dict)):
            for name, sub in (props or {}).items():
                yield from walk(sub, (*key, name), root, (value or {}).get(name), top)
            if isinstance(extra, dict):
                for name in sorted(value or {}) or ["<new>"]:
                    yield from walk(extra, (*key, name), root, (value or {}).get(name), top)
            return
        if isinstance(node.get("items"), dict):
            node = {**node, "items": _resolve(node["items"], root)}
        if "oneOf" in node:
            node = {**node, "oneOf": [_resolve(alt, root) for alt in node["oneOf"]]}
        yield key, node

    for prefix, name in SCHEMAS.items():
        schema = _schema(name)
        yield from walk(schema, prefix, schema, _get(config, prefix) if prefix else config, prefix == ())


SCORERS = ["sentiment", "formality", "refusal", "offensiveness", "vader", "textblob"]


def _numbers(node: Mapping[str, Any], v: Any, integer: bool) -> Iterator[Any]:
    lo = node.get("minimum", node.get("exclusiveMinimum", -float("inf")))
    hi = node.get("maximum", node.get("exclusiveMaximum", float("inf")))
    if not isinstance(v, int | float) or isinstance(v, bool):
        cands: tuple[Any, ...] = (max(lo, 0) + 1, 2) if integer else (0.5, 0.25)
    else:
        cands = (v + 1, v - 1) if integer else (v * 1.5 if v else 0.5, v / 2, v + 0.1, v - 0.1)
    for cand in cands:
        ok_lo = cand > lo if "exclusiveMinimum" in node else cand >= lo
        ok_hi = cand < hi if "exclusiveMaximum" in node else cand <= hi
        if ok_lo and ok_hi and cand != v:
            yield int(cand) if integer else round(float(cand), 6)


def candidates(node: Mapping[str, Any], value: Any, context: Mapping[str, Any]) -> Iterator[Any]:
    """Different values that the schema node accepts, most conservative first; ``context`` offers names the
    value may refer to (``models``, ``behaviours``)."""
    for alt in node.get("oneOf", []):
        yield from candidates(alt, value, context)
    types = node.get("type")
    types = types if isinstance(types, list) else [types]
    if "enum" in node:
        yield from (e for e in node["enum"] if e != value)
    if "boolean" in types:
        yield (not value) if value is not None else not node.get("default", True)  # unset: the default's opposite
    if "integer" in types:
        yield from _numbers(node, value, True)
    if "number" in types:
        yield from _numbers(node, value, False)
    if "array" in types:
        items = node.get("items", {})
        current = list(value or [])
        if value is None:
            yield list(context.get("models", []))[:1]
        if len(current) > max(node.get("minItems", 0), 1):
            yield current[:-1]
            yield current[1:]
        for extra in items.get("enum", []):
            if extra not in current:
                yield current + [extra]
        if items.get("type") in ("integer", "number"):
            yield current + [(max(current) if current else 0) + 1]
        if "pattern" in items and "sentiment" in items["pattern"]:
            yield current + [s for s in SCORERS if s not in current][:1]
    if "string" in types and "enum" not in node:
        if "pattern" in node and "sentiment" in node["pattern"]:
            yield from (s for s in SCORERS if s != value)
        elif value is None:
            yield "model.layers"
        else:
            yield f"{value}x"


def set_key(config: Mapping[str, Any], key: Key, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(dict(config))
    target = out
    for part in key[:-1]:
        target = target.setdefault(part, {})
    target[key[-1]] = value
    return out
