"""Config checks beyond the JSON schema (model keys, layer ranges, scorers) and small accessors.

The schema (``workflow/schemas/config.schema.yaml``) refuses unknown keys, wrong types and negative counts;
:func:`check_config` refuses what needs the model registry, naming the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from steerlimits.models import PACKAGED, AssetError, ModelSpec, spec_from_config

__all__ = ["ConfigError", "check_config", "derive_seed", "layer_for", "model_specs", "prompt_format", "scorer_for"]

SCORER_RE = re.compile(r"^(sentiment|formality|refusal|offensiveness|vader|textblob|hf:[\w.\-]+/[\w.\-]+(?::\w+)?)$")


class ConfigError(ValueError):
    """The config is invalid; the message names the key."""


def model_specs(config: Mapping[str, Any]) -> dict[str, ModelSpec]:
    specs = {}
    for key, entry in config["models"].items():
        try:
            specs[key] = spec_from_config(key, entry)
        except (AssetError, KeyError) as err:
            raise ConfigError(f"models.{key}: {err} (packaged models: {sorted(PACKAGED)})") from err
    return specs


def layer_for(config: Mapping[str, Any], model: str) -> int:
    """The steering layer l of ``model``: its own ``layer``, else the global one; 'middle' means L // 2."""
    spec = model_specs(config)[model]
    value = config["models"][model].get("layer", config.get("layer", "middle"))
    assert spec.n_layers is not None
    return spec.n_layers // 2 if value == "middle" else int(value)


def prompt_format(config: Mapping[str, Any], behaviour: str, spec: ModelSpec) -> str:
    """'chat' only where the config asks for it and the model has a chat template."""
    wanted = config.get("vectors", {}).get("format", {}).get(behaviour, "chat")
    return "chat" if wanted == "chat" and spec.chat_template else "raw"


def scorer_for(config: Mapping[str, Any], behaviour: str) -> str:
    return str(config["steering"]["dose_response"]["scorer"][behaviour])


def check_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first bad key (after schema validation filled defaults)."""
    specs = model_specs(config)
    for key, spec in specs.items():
        if spec.source == "hub" and not spec.hub_id:
            raise ConfigError(f"models.{key}.hub_id is required for source 'hub'")
        if spec.n_layers is None:
            raise ConfigError(f"models.{key}.n_layers is required")
        for where, value in ((f"models.{key}.layer", config["models"][key].get("layer")), ("layer", config.get("layer"))):
            if isinstance(value, int) and not 0 <= value < spec.n_layers:
                raise ConfigError(f"{where} = {value} is out of range for model '{key}' ({spec.n_layers} blocks: 0..{spec.n_layers - 1})")
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


def derive_seed(master: int, *names: object) -> int:
    """A per-step seed derived from the master seed and the step's names (stable across runs and machines)."""
    import hashlib

    text = ":".join([str(master), *map(str, names)])
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
