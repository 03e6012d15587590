"""Settings resolved once: the validated config becomes one frozen, typed dataclass per stage (rule).

The workflow calls :func:`params` for every job: the stage's settings as a canonical JSON value, passed to the rule
as ``params.settings``, so Snakemake re-runs a job exactly when a setting it reads changes (and not when YAML keys
are merely reordered). The job's script rebuilds the dataclass with :func:`settings_of` and calls the step
function of the same name (:mod:`steerlimits.steps`). Nothing below the step layer sees the raw config.

Stage resolvers are named after their rules; ``STAGES`` maps rule name -> resolver ``(config, **wildcards)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, get_type_hints

from steerlimits.rules import RULES
from steerlimits.settings import core, papera, paperb
from steerlimits.settings.base import canonical_json, from_params, params_hash, to_params
from steerlimits.settings.config import (
    ConfigError,
    check_config,
    config_hash,
    load_config,
    model_specs,
    validate_config,
)

__all__ = [
    "STAGES",
    "ConfigError",
    "canonical_json",
    "check_config",
    "config_hash",
    "from_params",
    "load_config",
    "model_specs",
    "params",
    "params_hash",
    "settings_class",
    "settings_of",
    "stage",
    "to_params",
    "validate_config",
]

#: each group's module of resolvers (rule groups: :data:`steerlimits.rules.RULES`)
_MODULES = {"foundation": core, "paperA": papera, "paperB": paperb}
STAGES: dict[str, Callable[..., Any]] = {
    rule: getattr(_MODULES[group], rule) for group, rules in RULES.items() for rule in rules
}


@cache
def settings_class(rule: str) -> type:
    """The settings dataclass of ``rule`` (its resolver's return type)."""
    if rule not in STAGES:
        raise KeyError(f"no settings for rule '{rule}' (known: {sorted(STAGES)})")
    return get_type_hints(STAGES[rule])["return"]  # type: ignore[no-any-return]


def stage(config: Mapping[str, Any], rule: str, **wildcards: str) -> Any:
    """The settings of one job of ``rule`` (wildcards such as ``model``, ``behaviour``, ``trait``)."""
    return STAGES[rule](config, **wildcards)


def params(config: Mapping[str, Any], rule: str, **wildcards: str) -> dict[str, Any]:
    """The canonical JSON value of :func:`stage` (what a rule passes as ``params.settings``)."""
    return to_params(stage(config, rule, **wildcards))


def settings_of(rule: str, value: Mapping[str, Any]) -> Any:
    """Rebuild the typed settings of ``rule`` from its params value (inside the job)."""
    return from_params(settings_class(rule), value)
