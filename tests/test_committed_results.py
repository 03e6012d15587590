"""Committed results come from a clean rebuild of the committed config: every committed sidecar names the config
hash of its run's committed config and a clean code version (no ``-dirty``), and the committed tables are what
their manifest lists."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from steerlimits.settings import config_hash, load_config
from steerlimits.verify import check_manifest

ROOT = Path(__file__).resolve().parents[1]


def _committed(prefix: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", prefix], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.split()


RUNS = sorted({p.split("/")[1] for p in _committed("results") if p.count("/") >= 2})


@pytest.mark.parametrize("run", RUNS)
def test_committed_sidecars_name_the_committed_config_and_a_clean_code_version(run: str) -> None:
    expected = config_hash(load_config(ROOT / "config" / f"{run}.yaml"))
    sidecars = [p for p in _committed(f"results/{run}") + _committed(f"figures/{run}") if p.endswith(".meta.json")]
    assert sidecars, f"no committed sidecars for run {run}"
    wrong = []
    for rel in sidecars:
        meta = json.loads((ROOT / rel).read_text())
        if meta.get("config_hash") != expected:
            wrong.append(f"{rel}: config hash {meta.get('config_hash')} (committed config/{run}.yaml: {expected})")
        if "-dirty" in str(meta.get("code_version", "")) or "code_version" not in meta:
            wrong.append(f"{rel}: code version {meta.get('code_version')!r} is not a clean commit")
    assert not wrong, (
        "committed results were not written by a clean rebuild of the committed config:\n"
        + "\n".join(wrong[:20])
        + (f"\n... and {len(wrong) - 20} more" if len(wrong) > 20 else "")
    )


@pytest.mark.parametrize("run", RUNS)
def test_committed_files_match_their_manifest(run: str) -> None:
    bad = [c.line() for c in check_manifest(run) if not c.match]
    assert not bad, "\n".join(bad)
