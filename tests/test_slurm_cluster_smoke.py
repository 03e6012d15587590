"""Smoke test: Snakemake submits a 3-rule workflow to a throw-away local SLURM cluster.

Needs root, the Debian packages slurm-wlm + munge (scripts/install_slurm.sh) and
snakemake-executor-plugin-slurm in the venv.  Skipped otherwise, unless
STEERLIMITS_REQUIRE_SLURM=1, which turns the skip into a failure (for CI).
Takes about 30 s.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slurm_cluster import SNAKEMAKE_ARGS, clean_environ, local_slurm, slurm_available

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
REQUIRE_SLURM = os.environ.get("STEERLIMITS_REQUIRE_SLURM") == "1"


def _unavailable() -> str | None:
    reason = slurm_available()
    if reason is None and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        reason = "snakemake-executor-plugin-slurm is not installed"
    return reason


UNAVAILABLE = _unavailable()

pytestmark = pytest.mark.skipif(
    UNAVAILABLE is not None and not REQUIRE_SLURM,
    reason=f"local SLURM cluster unavailable: {UNAVAILABLE} "
    "(set STEERLIMITS_REQUIRE_SLURM=1 to fail instead)",
)

SNAKEFILE = r'''
rule all:
    input: "out/c.txt"

rule a:
    output: "out/a.txt"
    resources: mem_mb=100, runtime=5
    shell: 'echo "rule=a job=${{SLURM_JOB_ID:-none}} cpus=${{SLURM_CPUS_PER_TASK:-none}}" > {output}'

rule b:
    output: "out/b.txt"
    threads: 2
    resources: mem_mb=100, runtime=5
    shell: 'echo "rule=b job=${{SLURM_JOB_ID:-none}} cpus=${{SLURM_CPUS_PER_TASK:-none}}" > {output}'

rule c:
    input: "out/a.txt", "out/b.txt"
    output: "out/c.txt"
    resources: mem_mb=100, runtime=5
    script: "combine.py"
'''

COMBINE = """
import os
lines = [open(p).read().strip() for p in snakemake.input]
lines.append(f"rule=c job={os.environ.get('SLURM_JOB_ID', 'none')}")
open(snakemake.output[0], "w").write("\\n".join(lines) + "\\n")
"""


def _tails(*paths: Path, n: int = 40) -> str:
    out = []
    for p in paths:
        for f in sorted(p.rglob("*.log")) if p.is_dir() else [p]:
            if f.is_file():
                out.append(f"--- {f} ---\n" + "\n".join(f.read_text(errors="replace").splitlines()[-n:]))
    return "\n".join(out)


def test_snakemake_submits_to_local_slurm(tmp_path: Path) -> None:
    if UNAVAILABLE is not None:  # only reached with STEERLIMITS_REQUIRE_SLURM=1
        pytest.fail(f"STEERLIMITS_REQUIRE_SLURM=1 but {UNAVAILABLE}")
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "Snakefile").write_text(SNAKEFILE)
    (wf / "combine.py").write_text(COMBINE)

    with local_slurm(tmp_path / "slurm") as slurm_env:
        env = {**clean_environ(), **slurm_env}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), slurm_env["PATH"]])
        cmd = [
            sys.executable, "-m", "snakemake",
            "--executor", "slurm",
            "--profile", str(PROFILE),
            *SNAKEMAKE_ARGS,
            "--slurm-keep-successful-logs",
        ]  # fmt: skip
        proc = subprocess.run(cmd, cwd=wf, env=env, capture_output=True, text=True, timeout=600)
        squeue = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--format=%i|%T|%j|%C"],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        ctld_log = (tmp_path / "slurm" / "log" / "slurmctld.log").read_text(errors="replace")

    assert proc.returncode == 0, (
        f"snakemake failed (rc={proc.returncode})\n{proc.stdout}\n{proc.stderr}\n"
        + _tails(wf / ".snakemake" / "slurm_logs", tmp_path / "slurm" / "log")
    )
    a = (wf / "out" / "a.txt").read_text()
    b = (wf / "out" / "b.txt").read_text()
    c = (wf / "out" / "c.txt").read_text()
    job_a = re.fullmatch(r"rule=a job=(\d+) cpus=1\n", a)
    job_b = re.fullmatch(r"rule=b job=(\d+) cpus=2\n", b)  # threads -> --cpus-per-task
    assert job_a and job_b, (a, b)
    job_c = re.search(r"^rule=c job=(\d+)$", c, re.M)
    assert job_c, c
    assert c.startswith(a + b)
    ids = {job_a.group(1), job_b.group(1), job_c.group(1)}
    assert len(ids) == 3, ids

    # the same ids were submitted with sbatch and completed (squeue keeps them: MinJobAge)
    states = {
        line.split("|")[0]: line.split("|")[1] for line in squeue.stdout.splitlines() if "|" in line
    }
    assert {i: states.get(i) for i in ids} == dict.fromkeys(ids, "COMPLETED"), squeue.stdout
    submitted = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", ctld_log))
    assert ids <= submitted, (ids, submitted)
