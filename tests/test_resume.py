"""Kill and resume: a smoke run killed (SIGKILL, the whole process group) after some jobs finished and while one is
running resumes to exactly the outputs of an uninterrupted run, and leaves no partial or temporary file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from smoke_workdir import SMOKE, SMOKE_OUTPUTS, SNAKEFILE, SNAKEMAKE, env, snakemake

from steerlimits.verify import compare_trees

TEMP_PATTERNS = ("*.tmp", "*.partial", ".*.partial")  # .snakemake_timestamp marks a finished folder output


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
    res = snakemake(wd, "--cores", "2", "--rerun-incomplete")
    assert res.returncode == 0, res.stderr[-4000:]
    assert "Nothing to be done" in snakemake(wd, "-n", "--cores", "1").stdout

    leftovers = [p for pat in TEMP_PATTERNS for folder in SMOKE_OUTPUTS for p in (wd / folder).rglob(pat)]
    assert not leftovers, f"partial or temporary files left: {leftovers}"
    assert not _incomplete(wd)
    diffs = [c.line() for c in compare_trees(wd, smoke_run, SMOKE_OUTPUTS) if not c.match]
    assert not diffs, "resumed outputs differ from the uninterrupted run:\n" + "\n".join(diffs)
