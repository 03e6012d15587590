"""Throw-away single-node SLURM cluster on localhost, for tests.

Usage::

    from slurm_cluster import local_slurm, slurm_available

    reason = slurm_available()
    if reason is None:
        with local_slurm(tmp_path / "slurm") as env:
            subprocess.run(["sbatch", ...], env={**clean_environ(), **env})

Design (see also ``scripts/install_system_deps.sh``):

* A private ``munged`` is started in the foreground with its own key, seed,
  pid file and socket, so nothing system-wide (``/etc/munge``,
  ``/run/munge``) is touched and an already running system munged does not
  interfere.  munged insists that every directory above its socket is
  executable by everyone, which pytest's ``/tmp/pytest-of-<user>`` (mode 0700)
  is not, so the socket lives in a short ``mkdtemp()`` folder (mode 0755)
  that is removed on exit.  ``AuthInfo=socket=...`` points SLURM daemons
  *and* client commands (sbatch, squeue, ...) at that socket.
* ``slurmctld`` and ``slurmd`` run in the foreground (``-D``) as children of
  this process, as root (``SlurmUser=root``), on free TCP ports chosen at
  start-up, with all state, spool, pid and log files under ``workdir``.
* No cgroups: ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``,
  ``JobAcctGatherType=jobacct_gather/none``.
* No slurmdbd: ``AccountingStorageType=accounting_storage/none``.  Therefore
  ``sacct`` does not work, and snakemake-executor-plugin-slurm must poll job
  states with ``squeue`` (``--slurm-status-command squeue``).  squeue only
  shows finished jobs for ``MinJobAge`` seconds, so it is set to one hour
  (the plugin needs ``MinJobAge >= 3 * init_seconds_before_status_checks``,
  otherwise it falls back to sacct, which fails here).  ``SNAKEMAKE_ARGS`` holds the
  matching snakemake command line flags.
* snakemake-executor-plugin-slurm-jobstep 0.6.1 removes every ``SLURM_*``
  variable except a few job ids from the environment of the inner ``srun``,
  ``SLURM_CONF`` included, so that srun would look for /etc/slurm/slurm.conf
  and fail ("fetch_config: DNS SRV lookup failed").  Therefore the yielded
  environment also puts ``workdir/bin`` first on ``PATH``; it holds wrappers
  for the client commands that pin ``SLURM_CONF`` to this cluster.
* The node is called ``localhost`` (slurmd is started with ``-N localhost``)
  whatever the machine's hostname is; its CPU layout and memory are copied
  from ``slurmd -C`` so that slurmd's registration is never rejected.

This module deliberately has no pytest dependency.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PARTITION = "debug"
NODE_NAME = "localhost"
CLUSTER_NAME = "steerlimits-test"
MIN_JOB_AGE_S = 3600

#: Extra snakemake flags that the test cluster needs (no slurmdbd, hence squeue;
#: fast first status check).  Not site-generic, hence not in the profile.
SNAKEMAKE_ARGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
]

#: SLURM client commands that get a wrapper in ``workdir/bin`` (see local_slurm)
CLIENT_COMMANDS = (
    "sbatch",
    "srun",
    "salloc",
    "squeue",
    "sinfo",
    "scancel",
    "scontrol",
    "sacct",
    "sacctmgr",
    "sshare",
    "sstat",
)

REQUIRED_BINARIES = (
    "munged",
    "slurmctld",
    "slurmd",
    "sinfo",
    "squeue",
    "sbatch",
    "srun",
    "scontrol",
    "scancel",
)


class SlurmStartupError(RuntimeError):
    """The local cluster did not come up; the message carries the log tails."""


def _which(name: str) -> str | None:
    # sbin is often not on PATH for non-login shells
    extra = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/sbin"])
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def slurm_available() -> str | None:
    """Return None if a local SLURM cluster can be started, else a skip reason."""
    missing = [b for b in REQUIRED_BINARIES if _which(b) is None]
    if missing:
        return (
            "SLURM/munge binaries not found: " + ", ".join(missing) + " (install with scripts/install_system_deps.sh)"
        )
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "local SLURM cluster needs a POSIX system"
    if os.geteuid() != 0:
        return "local SLURM cluster must be started as root (SlurmUser=root)"
    return None


def clean_environ() -> dict[str, str]:
    """os.environ without SLURM_* variables (e.g. when run inside a real job)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("SLURM_") or k.startswith("SBATCH_") or k.startswith("SRUN_"))
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:]) or "<empty>"


def node_hardware() -> dict[str, str]:
    """CPU layout and memory of this machine as ``slurmd -C`` reports them."""
    out = subprocess.run(
        [_which("slurmd") or "slurmd", "-C"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("NodeName=")), "")
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    hw = {k: fields[k] for k in keep if k in fields}
    if "CPUs" not in hw:  # fall back to what Python sees
        hw = {"CPUs": str(os.cpu_count() or 1)}
    if "RealMemory" not in hw:
        hw["RealMemory"] = str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    return hw


def write_slurm_conf(workdir: Path, munge_socket: Path) -> Path:
    hw = node_hardware()
    d = {name: workdir / name for name in ("state", "spool", "run", "log")}
    for p in d.values():
        p.mkdir(parents=True, exist_ok=True)
    node = " ".join(f"{k}={v}" for k, v in hw.items())
    conf = f"""\
# generated by tests/slurm_cluster.py -- throw-away single-node test cluster
ClusterName={CLUSTER_NAME}
SlurmctldHost={NODE_NAME}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={d["state"]}
SlurmdSpoolDir={d["spool"]}
MailProg=/bin/true
SlurmctldPidFile={d["run"]}/slurmctld.pid
SlurmdPidFile={d["run"]}/slurmd.pid
SlurmctldLogFile={d["log"]}/slurmctld.log
SlurmdLogFile={d["log"]}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# keep finished jobs visible to squeue (job status polling without slurmdbd)
MinJobAge={MIN_JOB_AGE_S}
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName={NODE_NAME} NodeAddr=127.0.0.1 {node} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE_NAME} Default=YES MaxTime=INFINITE State=UP
"""
    path = workdir / "slurm.conf"
    path.write_text(conf)
    return path


def write_client_wrappers(bindir: Path, conf: Path) -> None:
    """Shell wrappers that run the real client command against ``conf``."""
    bindir.mkdir(parents=True, exist_ok=True)
    for name in CLIENT_COMMANDS:
        real = _which(name)
        if real is None:
            continue
        wrapper = bindir / name
        wrapper.write_text(
            "#!/bin/sh\n"
            "# generated by tests/slurm_cluster.py: always talk to the test cluster\n"
            f"SLURM_CONF={shlex.quote(str(conf))}\n"
            "export SLURM_CONF\n"
            f'exec {shlex.quote(real)} "$@"\n'
        )
        wrapper.chmod(0o755)


def _stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group of proc, then SIGKILL whatever is left."""
    if proc is None:
        return
    pgid = proc.pid  # started with start_new_session=True
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            if proc.poll() is None:
                os.killpg(pgid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        break
    # children that outlive the leader (same process group)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _processes_with_env(key: str, value: str) -> list[int]:
    """PIDs whose initial environment contains key=value (Linux /proc)."""
    needle = f"{key}={value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in env:
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def local_slurm(workdir: Path, timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Start munged + slurmctld + slurmd on localhost; yield env vars for clients.

    The yielded dict (``SLURM_CONF``, and ``PATH`` with the client wrappers
    first) must be merged into the environment of every SLURM client call,
    e.g. ``env = {**clean_environ(), **yielded}``.  On exit all jobs are cancelled
    and all daemons are stopped.  Logs stay in ``workdir/log``.
    """
    reason = slurm_available()
    if reason is not None:
        raise SlurmStartupError(reason)
    workdir = Path(workdir).resolve()
    logdir = workdir / "log"
    mungedir = workdir / "munge"
    for p in (logdir, mungedir):
        p.mkdir(parents=True, exist_ok=True)
    mungedir.chmod(0o700)
    # munged: every directory above the socket must be o+x; keep the path short
    sockdir = Path(tempfile.mkdtemp(prefix="slurm-munge-"))
    sockdir.chmod(0o755)
    munge_socket = sockdir / "munge.socket"

    key = mungedir / "munge.key"
    if not key.exists():
        if _which("mungekey"):
            subprocess.run(
                [_which("mungekey"), "--create", f"--keyfile={key}"],
                check=True,
                capture_output=True,
            )
        else:  # munge < 0.5.14 has no mungekey
            key.write_bytes(os.urandom(1024))
    key.chmod(0o400)

    conf = write_slurm_conf(workdir, munge_socket)
    bindir = workdir / "bin"
    write_client_wrappers(bindir, conf)
    env = clean_environ()
    env["SLURM_CONF"] = str(conf)
    client_env = {
        "SLURM_CONF": str(conf),
        "PATH": os.pathsep.join([str(bindir), env.get("PATH", os.defpath)]),
    }
    logs = {
        "munged": logdir / "munged.log",
        "slurmctld": logdir / "slurmctld.log",
        "slurmd": logdir / "slurmd.log",
    }
    procs: dict[str, subprocess.Popen] = {}

    def spawn(name: str, argv: list[str]) -> None:
        # foreground daemons; stdout/stderr also go to the log directory
        out = open(logdir / f"{name}.stdout", "ab")
        try:
            procs[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                start_new_session=True,
            )
        finally:
            out.close()

    def diagnostics(msg: str) -> str:
        parts = [msg]
        for name, proc in procs.items():
            rc = proc.poll()
            parts.append(f"{name}: {'running' if rc is None else f'exited rc={rc}'}")
        for name in ("munged", "slurmctld", "slurmd"):
            for path in (logs[name], logdir / f"{name}.stdout"):
                if path.exists():
                    parts.append(f"--- tail of {path} ---\n{_tail(path)}")
        return "\n".join(parts)

    def wait_for(what: str, check, deadline: float) -> None:
        while time.monotonic() < deadline:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise SlurmStartupError(diagnostics(f"{name} died while waiting for {what}"))
            if check():
                return
            time.sleep(0.25)
        raise SlurmStartupError(diagnostics(f"timed out after {timeout:g}s waiting for {what}"))

    def run(argv: list[str], t: float = 10.0) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=t)

    def node_state() -> str:
        try:
            r = run([_which("sinfo"), "-h", "-N", "-n", NODE_NAME, "-o", "%T"])
        except subprocess.TimeoutExpired:
            return ""
        return r.stdout.strip() if r.returncode == 0 else ""

    deadline = time.monotonic() + timeout
    try:
        spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                f"--socket={munge_socket}",
                f"--key-file={key}",
                f"--pid-file={mungedir / 'munged.pid'}",
                f"--seed-file={mungedir / 'munged.seed'}",
                f"--log-file={logs['munged']}",
            ],
        )
        wait_for("the munge socket", munge_socket.exists, deadline)
        spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(conf)])
        spawn("slurmd", [_which("slurmd"), "-D", "-N", NODE_NAME, "-f", str(conf)])
        wait_for(
            f"node {NODE_NAME} to be idle (sinfo)",
            lambda: node_state().rstrip("*~#") == "idle",
            deadline,
        )
        yield dict(client_env)
    finally:
        # cancel whatever is still queued/running and let slurmstepd clean up,
        # then stop the daemons
        daemon_sessions = {p.pid for p in procs.values()}  # start_new_session=True

        def job_processes() -> list[int]:
            """Processes with our SLURM_CONF outside the daemons' own sessions."""
            pids = []
            for pid in _processes_with_env("SLURM_CONF", str(conf)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getsid(pid) not in daemon_sessions:
                        pids.append(pid)
            return pids

        if "slurmctld" in procs and procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                run([_which("scancel"), "--full", "--partition", PARTITION])
                end = time.monotonic() + 15
                while time.monotonic() < end:
                    r = run([_which("squeue"), "-h", "-t", "PD,R,CG,CF,S", "-o", "%i"])
                    busy = r.returncode == 0 and r.stdout.strip()
                    if not busy and not job_processes():
                        break
                    time.sleep(0.25)
        for name in ("slurmd", "slurmctld", "munged"):
            _stop(procs.get(name))
        # slurmstepd and job processes run in their own sessions; whatever is
        # left is found by the SLURM_CONF it inherited from us
        for _ in range(10):
            strays = job_processes()
            if not strays:
                break
            for pid in strays:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        shutil.rmtree(sockdir, ignore_errors=True)
