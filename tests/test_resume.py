"""Kill and resume: a smoke run killed (SIGKILL, the whole process group) after some jobs finished and while one is
running resumes to exactly the outputs of an uninterrupted run, and leaves no partial or temporary file.

The killed run builds the smoke config's first stages only (both models, all their steering vectors and one steered
generation set: 11 jobs, folder outputs, safetensors, JSONL and sidecars), not the whole DAG, which would cost CI a
third smoke run (the SLURM test runs one, ``make test`` another). CSV tables and figures are not among these outputs;
they go through the same writer (``steerlimits.outputs``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import yaml
from smoke_workdir import SMOKE, SMOKE_OUTPUTS, SNAKEFILE, SNAKEMAKE, env, snakemake

from steerlimits.verify import compare_files

TEMP_PATTERNS = ("*.tmp", "*.partial", ".*.partial")  # .snakemake_timestamp marks a finished folder output


def _targets() -> tuple[str, ...]:
    """Every steering vector of the smoke config and one steered generation set (one model, one trait)."""
    cfg = yaml.safe_load(SMOKE.read_text())
    models, behaviours = sorted(cfg["models"]), cfg["vectors"]["behaviours"]
    run = cfg["run"]
    vectors = [f"results/{run}/vectors/{m}/{b}.safetensors" for m in models for b in behaviours]
    trait = cfg["steering"]["dose_response"]["behaviours"][-1]
    return (*vectors, f"results/{run}/steering/{models[0]}/{trait}.jsonl")


TARGETS = _targets()


def _incomplete(workdir: Path) -> list[Path]:
    folder = workdir / ".snakemake" / "incomplete"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_killed_run_resumes_to_the_uninterrupted_outputs(smoke_run: Path, tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    wd.mkdir()
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        [
            str(SNAKEMAKE),
            "--snakefile",
            str(SNAKEFILE),
            "--directory",
            str(wd),
            "--configfile",
            str(SMOKE),
            "--cores",
            "2",
            *TARGETS,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env(),
        start_new_session=True,
    )
    deadline = time.time() + 900
    finished = 0
    while time.time() < deadline and proc.poll() is None:
        finished = (tmp_path / "first.log").read_text().count("Finished jobid")
        if finished >= 4 and _incomplete(wd):  # some jobs done, one running (its outputs marked incomplete)
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its running jobs, as a power loss would
    proc.wait()
    log.close()
    assert finished >= 4 and _incomplete(wd), "no job was running at the kill"

    # resume as a user would: the kill left a lock; unlock, then run the same command again
    assert snakemake(wd, "--unlock").returncode == 0
    res = snakemake(wd, "--cores", "2", "--rerun-incomplete", *TARGETS)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "Nothing to be done" in snakemake(wd, "-n", "--cores", "1", *TARGETS).stdout

    leftovers = [p for pat in TEMP_PATTERNS for folder in SMOKE_OUTPUTS for p in (wd / folder).rglob(pat)]
    assert not leftovers, f"partial or temporary files left: {leftovers}"
    assert not _incomplete(wd)
    assert all((wd / t).is_file() for t in TARGETS)
    written = sorted(
        p.relative_to(wd).as_posix() for folder in SMOKE_OUTPUTS for p in (wd / folder).rglob("*") if p.is_file()
    )
    assert len(written) > len(TARGETS)  # the targets, their sidecars and the models' records
    diffs = [c.line() for c in (compare_files(wd / rel, smoke_run / rel, rel) for rel in written) if not c.match]
    assert not diffs, "resumed outputs differ from the uninterrupted run:\n" + "\n".join(diffs)
