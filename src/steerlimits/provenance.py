"""Provenance and atomic writes: every output records its job (rule, config hash, settings), model and code.

Writes go to a temporary file in the destination folder and are moved into place with ``os.replace``, so a
finished-looking file is never partial.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from steerlimits import __version__

__all__ = [
    "REPO_ROOT",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "code_version",
    "is_timing",
    "job_context",
    "record",
    "sidecar_path",
    "without_timings",
    "write_with_sidecar",
]

REPO_ROOT = Path(__file__).resolve().parents[2]


#: Pipeline outputs: their changes do not make the code dirty (a run rewrites committed result tables).
OUTPUT_DIRS = ("results", "figures")


@functools.cache
def code_version() -> str:
    """``steerlimits-<version>+<git describe>``, with ``-dirty`` when tracked files outside :data:`OUTPUT_DIRS`
    differ from the commit (uncommitted code, configs or data), or the version alone outside a git checkout."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)

    try:
        described = git("describe", "--always", "--abbrev=12")
        if described.returncode != 0:
            return f"steerlimits-{__version__}"
        out = described.stdout.strip()
        excludes = [f":(exclude){d}" for d in OUTPUT_DIRS]
        if git("diff", "--quiet", "HEAD", "--", ".", *excludes).returncode == 1:
            out += "-dirty"
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f"steerlimits-{__version__}" + (f"+{out}" if out else "")


#: What the running job is (set by :func:`job_context`; read by :func:`record`).
_JOB: dict[str, Any] = {}


@contextlib.contextmanager
def job_context(**job: Any) -> Iterator[None]:
    """Record the running job (rule, config hash, stage settings and their hash) in every sidecar written inside."""
    previous = dict(_JOB)
    _JOB.clear()
    _JOB.update(job)
    try:
        yield
    finally:
        _JOB.clear()
        _JOB.update(previous)


def is_timing(key: str) -> bool:
    """A measurement of the run rather than its result: wall times, timings and throughputs (``wall_s``, ``*_s``,
    ``timings``, ``throughput_*``)."""
    return key.endswith(("_s", "_seconds")) or key.startswith("throughput") or key in ("timings", "timings_s")


def without_timings(obj: Any) -> Any:
    """``obj`` (a record) with every timing key removed, recursively: what two runs of a job must agree on."""
    if isinstance(obj, Mapping):
        return {k: without_timings(v) for k, v in obj.items() if not is_timing(str(k))}
    if isinstance(obj, list | tuple):
        return [without_timings(v) for v in obj]
    return obj


def record(**extra: Any) -> dict[str, Any]:
    """The provenance block stored beside every output: code version, the job (rule, config hash, stage settings
    and their hash), plus ``extra`` (model sha256, sizes, notes, timings)."""
    clash = set(extra) & set(_JOB)
    if clash:
        raise ValueError(f"a step's record may not override the job's own {sorted(clash)}")
    return {"code_version": code_version(), **_JOB, **extra}


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a killed earlier attempt
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the permissions open() would give
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sidecar_path(path: str | Path) -> Path:
    """``results/x.csv`` -> ``results/x.csv.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def write_with_sidecar(path: str | Path, write: Any, meta: Mapping[str, Any]) -> None:
    """Write ``meta`` to the sidecar, then call ``write(tmp_path)`` and move the result onto ``path``."""
    atomic_write_json(sidecar_path(path), dict(meta))
    with atomic_path(path) as tmp:
        write(tmp)
