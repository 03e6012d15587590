"""A real SLURM run: the smoke workflow, submitted job by job to a single-node SLURM cluster started on this machine
(``slurmctld`` + ``slurmd`` on localhost, a private ``munged``; tests/slurm_cluster.py), produces the same outputs
as the local run.

Job states are polled with ``squeue`` (the test cluster keeps finished jobs for ``MinJobAge`` = 1 h and runs no
accounting database, so ``sacct`` cannot answer). Needs root, Debian's slurm-wlm and munge
(``scripts/install_system_deps.sh``) and snakemake-executor-plugin-slurm; skipped otherwise, unless
``STEERLIMITS_REQUIRE_SLURM=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from slurm_cluster import SNAKEMAKE_ARGS, clean_environ, local_slurm, slurm_available
from smoke_workdir import ROOT, SMOKE, SMOKE_OUTPUTS, SNAKEFILE, SNAKEMAKE

from steerlimits.verify import compare_trees

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
#: the Snakefile's ``localrules:`` (aggregation rules, run by the main Snakemake process, not submitted)
_LOCAL = re.search(r"^localrules:\n((?:    \w+,\n)+)", (ROOT / "workflow" / "Snakefile").read_text(), re.M)
LOCAL_RULES = set(_LOCAL.group(1).replace(",", " ").split()) if _LOCAL else set()


def _rule(comment: str) -> str:
    """The rule of a SLURM job from the plugin's comment, ``rule_<name>`` or ``rule_<name>_wildcards_<values>``."""
    return re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", comment).group(1)  # type: ignore[union-attr]


def _unavailable() -> str | None:
    reason = slurm_available()
    if reason is None and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        reason = "snakemake-executor-plugin-slurm is not installed"
    return reason


UNAVAILABLE = _unavailable()
pytestmark = pytest.mark.skipif(
    UNAVAILABLE is not None and os.environ.get("STEERLIMITS_REQUIRE_SLURM") != "1",
    reason=f"local SLURM cluster unavailable: {UNAVAILABLE} (STEERLIMITS_REQUIRE_SLURM=1 fails instead)",
)


def test_smoke_workflow_through_slurm_matches_the_local_run(smoke_run: Path, tmp_path: Path) -> None:
    assert UNAVAILABLE is None, UNAVAILABLE
    wd = tmp_path / "wd"
    wd.mkdir()
    with local_slurm(tmp_path / "slurm") as slurm_env:
        env = {**clean_environ(), **slurm_env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        start = time.time()
        res = subprocess.run(
            [
                str(SNAKEMAKE),
                "--snakefile",
                str(SNAKEFILE),
                "--directory",
                str(wd),
                "--configfile",
                str(SMOKE),
                "--profile",
                str(PROFILE),
                *SNAKEMAKE_ARGS,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=2400,
        )
        wall = time.time() - start
        jobs = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--format=%i %k %T"], capture_output=True, text=True, env=env
        ).stdout.split("\n")
    assert res.returncode == 0, res.stderr[-5000:]
    completed = [j.split() for j in jobs if j.strip().endswith("COMPLETED")]
    on_slurm = {_rule(comment) for _, comment, _ in completed}
    print(f"SLURM smoke run: {wall:.0f} s wall, {len(completed)} SLURM jobs completed, {len(on_slurm)} rules")
    assert len(completed) >= 40, f"the jobs did not go through SLURM: {jobs[:5]}"
    assert LOCAL_RULES, "no localrules: block found in workflow/Snakefile"
    assert not on_slurm & LOCAL_RULES, f"local rules went to SLURM: {sorted(on_slurm & LOCAL_RULES)}"
    diffs = [c.line() for c in compare_trees(wd, smoke_run, SMOKE_OUTPUTS) if not c.match]
    assert not diffs, "SLURM outputs differ from the local run:\n" + "\n".join(diffs)
