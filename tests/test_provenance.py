"""Atomic writes never leave partial files; provenance records the job (rule, config hash, settings) and code."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlimits.outputs import read_sidecar, write_table
from steerlimits.provenance import atomic_path, job_context, record, sidecar_path, write_with_sidecar
from steerlimits.settings import config_hash


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_existing_file_survives_failed_rewrite(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("complete\n")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise ValueError
    assert target.read_text() == "complete\n"


def test_killed_write_leaves_a_temp_file_that_the_next_write_removes(tmp_path: Path) -> None:
    """A SIGKILL inside atomic_path leaves its temporary file (no finally runs); the rerun's write removes it."""
    target = tmp_path / "out.csv"
    (tmp_path / ".out.csv.abc123.tmp").write_text("half")  # what a killed job leaves behind
    (tmp_path / ".other.csv.x.tmp").write_text("half")  # another output's: not touched
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.csv.x.tmp", "out.csv"]


def test_sidecar_records_the_job_and_the_hash_ignores_key_order(tmp_path: Path) -> None:
    import pandas as pd

    cfg = {"run": "x", "seed": 1, "models": {"a": {"source": "random"}}}
    assert config_hash(cfg) == config_hash(dict(reversed(list(cfg.items()))))  # key order does not matter
    assert config_hash(cfg) != config_hash({**cfg, "seed": 2})
    with job_context(rule="r", config_hash=config_hash(cfg), settings={"n": 1}, settings_hash="h"):
        write_table(tmp_path / "t.csv", pd.DataFrame({"a": [1.0]}), {"model_sha256": "ab" * 32})
        assert record()["rule"] == "r"
    meta = read_sidecar(tmp_path / "t.csv")
    assert meta["rule"] == "r" and meta["settings"] == {"n": 1} and meta["model_sha256"] == "ab" * 32
    assert meta["config_hash"] == config_hash(cfg) and meta["code_version"].startswith("steerlimits-")
    assert "rule" not in record()  # the context ends with the job
    write_with_sidecar(tmp_path / "t.txt", lambda p: p.write_text("data"), {"seed": 3})
    assert (tmp_path / "t.txt").read_text() == "data"
    assert sidecar_path(tmp_path / "t.txt").name == "t.txt.meta.json"


def test_code_version_marks_code_changes_but_not_outputs(tmp_path, monkeypatch) -> None:
    import subprocess

    from steerlimits import provenance as P

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.csv").write_text("a\n1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(P, "REPO_ROOT", tmp_path)

    def version() -> str:
        P.code_version.cache_clear()  # cached per process; the checkout changes under this test
        return P.code_version()

    assert not version().endswith("-dirty")
    (tmp_path / "results" / "table.csv").write_text("a\n2\n")  # a rerun rewrote a committed output
    assert not version().endswith("-dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert version().endswith("-dirty")
    P.code_version.cache_clear()
