"""A finished smoke run in a working folder of its own (for tests that plan or compare against it).

If COPY_REPOSITORY_SMOKE is set and the repository's own smoke results are up to date, they
are copied with their Snakemake metadata (modification times kept); otherwise the smoke workflow runs from
scratch in the folder. Either way the folder holds what an uninterrupted ``snakemake --configfile
config/smoke.yaml`` writes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
SMOKE = ROOT / "config" / "smoke.yaml"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
#: Copying the repository's finished smoke run saves a run, but a copy plans differently from a run made in place
#: (Snakemake re-plans some producers of copied outputs as missing), which the rerun test cannot tell from a real
#: difference: off until that is understood; the smoke run is made from scratch.
COPY_REPOSITORY_SMOKE = False
#: what a smoke run writes, relative to its working folder
SMOKE_OUTPUTS = ("results/smoke", "figures/smoke")


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def snakemake(workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """``snakemake`` on the project's Snakefile in ``workdir`` (the smoke config unless ``args`` name another)."""
    cmd = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *args]
    if "--configfile" not in args:
        cmd += ["--configfile", str(SMOKE)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env())


def _smoke_models() -> list[str]:
    import yaml

    return list(yaml.safe_load(SMOKE.read_text())["models"])


def repository_smoke_is_current() -> bool:
    if not all((ROOT / p).exists() for p in SMOKE_OUTPUTS):
        return False
    res = snakemake(ROOT, "-n", "--cores", "1")
    return res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr


def build(workdir: Path, cores: int = 2) -> Path:
    """Fill ``workdir`` with a finished smoke run (copied from the repository if current, else run)."""
    given = os.environ.get("STEERLIMITS_SMOKE_WORKDIR")  # a finished smoke run made in place (saves a run)
    if given:
        return Path(given)
    workdir.mkdir(parents=True, exist_ok=True)
    if COPY_REPOSITORY_SMOKE and repository_smoke_is_current():
        for rel in SMOKE_OUTPUTS:
            shutil.copytree(ROOT / rel, workdir / rel, copy_function=shutil.copy2)
        for model in _smoke_models():
            shutil.copytree(ROOT / "models" / model, workdir / "models" / model, copy_function=shutil.copy2)
        shutil.copytree(
            ROOT / ".snakemake" / "metadata", workdir / ".snakemake" / "metadata", copy_function=shutil.copy2
        )
        (workdir / ".snakemake" / "incomplete").mkdir(parents=True, exist_ok=True)  # Snakemake's persistence expects it
    else:
        res = snakemake(workdir, "--cores", str(cores))
        assert res.returncode == 0, res.stderr[-4000:]
    return workdir
