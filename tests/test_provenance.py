"""Atomic writes never leave partial files; provenance records the config hash and code version."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlimits.provenance import atomic_path, config_hash, provenance, sidecar_path, write_with_sidecar


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


def test_sidecar_and_hash(tmp_path: Path) -> None:
    cfg = {"run": "x", "seed": 1, "models": {"a": {"source": "random"}}}
    meta = provenance(cfg, model_sha256="ab" * 32, seed=3)
    assert meta["config_hash"] == config_hash(dict(reversed(list(cfg.items()))))  # key order does not matter
    assert meta["config_hash"] != config_hash({**cfg, "seed": 2})
    assert meta["code_version"].startswith("steerlimits-")
    write_with_sidecar(tmp_path / "t.txt", lambda p: p.write_text("data"), meta)
    assert (tmp_path / "t.txt").read_text() == "data"
    assert sidecar_path(tmp_path / "t.txt").name == "t.txt.meta.json"
    assert '"seed": 3' in sidecar_path(tmp_path / "t.txt").read_text()


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
