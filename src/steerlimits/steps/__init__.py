"""The step layer: one function per rule, ``step(settings, inputs, outputs, log)``, named after the rule.

Every rule runs ``workflow/scripts/run_step.py``, which calls :func:`run`: it sends logging to the rule's log,
fixes the torch threads, rebuilds the rule's typed settings from ``params.settings``
(:func:`steerlimits.settings.settings_of`), and calls the step function of the rule's name with the named input
and output files. Steps write through :mod:`steerlimits.outputs`, whose sidecars record the job (rule, config hash,
settings and their hash) set here.

``STEPS`` maps each rule to the module holding its step function: foundation rules in
:mod:`steerlimits.steps.foundation`, paper rules in :mod:`steerlimits.papera.steps` and
:mod:`steerlimits.paperb.steps`.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from steerlimits.rules import RULES

__all__ = ["STEPS", "Files", "files", "run", "start", "step_function"]

Files = Mapping[str, Any]  # name -> path (str) or paths (list[str])

#: the module holding each group's step functions (rule groups: :data:`steerlimits.rules.RULES`)
_MODULES = {
    "foundation": "steerlimits.steps.foundation",
    "paperA": "steerlimits.papera.steps",
    "paperB": "steerlimits.paperb.steps",
}
STEPS: dict[str, str] = {rule: _MODULES[group] for group, rules in RULES.items() for rule in rules}

log = logging.getLogger("steerlimits")


def step_function(rule: str) -> Callable[..., None]:
    """The step function of ``rule`` (imported lazily: planning a DAG never imports torch)."""
    if rule not in STEPS:
        raise KeyError(f"no step for rule '{rule}' (known: {sorted(STEPS)})")
    return getattr(importlib.import_module(STEPS[rule]), rule)  # type: ignore[no-any-return]


def start(log_path: str | Path | None, threads: int = 1) -> None:
    """Send logging and progress bars (stderr) to the rule's log file; fix torch threads."""
    if log_path:
        stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives for the job
        sys.stderr = stream
        logging.basicConfig(
            stream=stream, level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    import torch

    torch.set_num_threads(max(1, int(threads)))


def files(named: Any) -> dict[str, Any]:
    """Snakemake's named input/output lists as ``name -> path`` (or ``name -> [paths]``)."""
    out: dict[str, Any] = {}
    for name, value in named.items():
        out[name] = str(value) if isinstance(value, str) else [str(v) for v in value]
    return out


def run(smk: Any) -> None:
    """Run the step of the Snakemake job ``smk`` (the ``snakemake`` object of a script)."""
    from steerlimits.provenance import job_context
    from steerlimits.settings import config_hash, params_hash, settings_of

    log_path = smk.log[0] if len(smk.log) else None
    start(log_path, smk.threads)
    rule = smk.rule
    value = smk.params.settings
    settings = settings_of(rule, value)
    t0 = time.perf_counter()
    with job_context(rule=rule, config_hash=config_hash(smk.config), settings=value, settings_hash=params_hash(value)):
        step_function(rule)(settings, files(smk.input), files(smk.output), log_path)
    log.info("%s done in %.1f s", rule, time.perf_counter() - t0)
