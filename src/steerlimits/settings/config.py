"""The config: schema validation (defaults filled), checks that need the model registry, and its hash.

This is the only module that reads the raw config mapping; :mod:`steerlimits.settings` turns the validated config
into typed stage settings. The schemas (``workflow/schemas/*.schema.yaml``) refuse unknown keys, wrong types and
negative counts; :func:`check_config` refuses what needs the registry (model keys, layer ranges, scorers),
naming the offending key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steerlimits.registry import PACKAGED, AssetError, ModelSpec, spec_from_config

__all__ = [
    "SCHEMA_DIR",
    "ConfigError",
    "check_config",
    "config_hash",
    "load_config",
    "model_specs",
    "validate_config",
]

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "workflow" / "schemas"
SCHEMAS = {None: "config.schema.yaml", "paperA": "paperA.schema.yaml", "paperB": "paperB.schema.yaml"}
SCORER_RE = re.compile(r"^(sentiment|formality|refusal|offensiveness|vader|textblob|hf:[\w.\-]+/[\w.\-]+(?::\w+)?)$")


class ConfigError(ValueError):
    """The config is invalid; the message names the key."""


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A validated deep copy of ``config`` with every schema default filled (top level, paperA, paperB), then
    :func:`check_config`. Raises the schema's error (naming the key) or :class:`ConfigError`."""
    from snakemake.utils import validate  # the validator the workflow uses, so both fill defaults alike

    out = copy.deepcopy(dict(config))
    for section, name in SCHEMAS.items():
        target = out if section is None else out.setdefault(section, {})
        validate(target, str(SCHEMA_DIR / name))
    out = json.loads(json.dumps(out))  # detach the schema's shared default objects
    check_config(out)
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config and return it validated (see :func:`validate_config`)."""
    import yaml

    return validate_config(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def config_hash(config: Mapping[str, Any]) -> str:
    """First 16 hex digits of the sha256 of the canonical JSON of the validated ``config``; the same wherever
    the repository lives (paths are kept as written)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_specs(config: Mapping[str, Any]) -> dict[str, ModelSpec]:
    specs = {}
    for key, entry in config["models"].items():
        try:
            specs[key] = spec_from_config(key, entry)
        except (AssetError, KeyError) as err:
            raise ConfigError(f"models.{key}: {err} (packaged models: {sorted(PACKAGED)})") from err
    return specs


def check_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first bad key (after schema validation filled defaults)."""
    specs = model_specs(config)
    for key, spec in specs.items():
        if spec.source == "hub" and not spec.hub_id:
            raise ConfigError(f"models.{key}.hub_id is required for source 'hub'")
        if spec.n_layers is None:
            raise ConfigError(f"models.{key}.n_layers is required")
        for where, value in (
            (f"models.{key}.layer", config["models"][key].get("layer")),
            ("layer", config.get("layer")),
        ):
            if isinstance(value, int) and not 0 <= value < spec.n_layers:
                raise ConfigError(
                    f"{where} = {value} is out of range for model '{key}' "
                    f"({spec.n_layers} blocks: 0..{spec.n_layers - 1})"
                )
    data = Path(config.get("data_dir", "data"))
    if not (data if data.is_absolute() else Path(__file__).resolve().parents[3] / data).is_dir():
        raise ConfigError(
            f"data_dir = {config.get('data_dir')!r}: no such folder (relative paths are relative to the repository)"
        )
    dose = config.get("steering", {}).get("dose_response", {})
    behaviours = config.get("vectors", {}).get("behaviours", [])
    for b in dose.get("behaviours", []):
        if b not in behaviours:
            raise ConfigError(f"steering.dose_response.behaviours: '{b}' has no vector (add it to vectors.behaviours)")
        scorer = dose.get("scorer", {}).get(b)
        if scorer is None or not SCORER_RE.match(str(scorer)):
            raise ConfigError(f"steering.dose_response.scorer.{b}: unknown scorer '{scorer}'")
    if 0 not in dose.get("alphas", [0]):
        raise ConfigError("steering.dose_response.alphas must include 0 (the unsteered baseline)")
    for paper, key in (("paperA", "vectors"), ("paperB", "traits")):
        block = config.get(paper, {})
        if not block.get("enabled"):
            continue
        wanted = list(block.get(key, []))
        if paper == "paperA":
            wanted += list(block.get("responses", {}).get("vectors", [])) + list(block.get("e7", {}).get("vectors", []))
        missing = sorted({b for b in wanted if b not in behaviours})
        if missing:
            raise ConfigError(f"{paper}.{key}: {missing} have no vectors (add them to vectors.behaviours)")
        unknown = [m for m in block.get("models") or [] if m not in specs]
        if unknown:
            raise ConfigError(f"{paper}.models: {unknown} are not in the config's models {sorted(specs)}")
        if paper == "paperB":  # the one pair of the fp32 / bf16 check must be a paper B pair
            check = block.get("dtype_check", {})
            models = block.get("models") or list(specs)
            if check.get("model") is not None and check["model"] not in models:
                raise ConfigError(f"paperB.dtype_check.model: '{check['model']}' is not a paper B model {models}")
            if check.get("trait") is not None and check["trait"] not in block.get("traits", []):
                raise ConfigError(
                    f"paperB.dtype_check.trait: '{check['trait']}' is not a paper B trait {block.get('traits')}"
                )
