"""A rebuild that proves itself: compare rebuilt result tables with the committed ones, and files with a manifest.

``python -m steerlimits.verify [--run default]`` (``make verify``) compares every committed table of a run
(``results/<run>/**/*.csv``, ``*.md``) as it is in the working tree (after ``make reproduce``) with the version
committed at ``HEAD``, and prints one line per table: ``match`` or ``differs`` with the largest difference.

* Integers, strings and booleans must be equal; floats may differ by at most :data:`RTOL` relative to the larger
  magnitude (or :data:`ATOL` absolutely near zero); ``nan`` equals ``nan``.
* Timing columns (:func:`steerlimits.provenance.is_timing`: names ending in ``_s`` or ``_seconds``, such as
  ``wall_s`` and ``runtime_s``) are measurements of the run, not results: they are never compared.

With ``--manifest`` it also checks every file listed in ``results/<run>/MANIFEST.json`` against its sha256.
The exit status is 0 only if everything matches.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerlimits.provenance import REPO_ROOT, is_timing, without_timings

__all__ = ["ATOL", "RTOL", "Comparison", "compare_frames", "compare_text", "is_timing", "main"]

#: Relative tolerance for floats. Tables are written with six significant digits, so a rebuild on the same kind of
#: machine reproduces them exactly; 1e-4 allows last-digit differences of another CPU's float kernels and nothing
#: that changes a reported number at the precision it is read.
RTOL = 1e-4
ATOL = 1e-9


@dataclass(frozen=True)
class Comparison:
    path: str
    match: bool
    detail: str

    def line(self) -> str:
        return f"{'match  ' if self.match else 'DIFFERS'}  {self.path}  {self.detail}"


def _numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def compare_frames(new: pd.DataFrame, old: pd.DataFrame, path: str = "") -> Comparison:
    """Compare two tables column by column (see the module docstring)."""
    if list(new.columns) != list(old.columns):
        return Comparison(path, False, f"columns differ: {sorted(set(new.columns) ^ set(old.columns))}")
    if len(new) != len(old):
        return Comparison(path, False, f"{len(new)} rows vs {len(old)} committed")
    worst, where, skipped = 0.0, "", []
    for col in new.columns:
        a, b = new[col], old[col]
        if is_timing(col):
            skipped.append(col)
            continue
        if _numeric(a) and _numeric(b):
            x, y = a.to_numpy(float), b.to_numpy(float)
            if (np.isnan(x) != np.isnan(y)).any():
                return Comparison(path, False, f"column {col}: missing values differ")
            with np.errstate(invalid="ignore", divide="ignore"):
                diff = np.abs(x - y)
                rel = diff / np.maximum(np.abs(x), np.abs(y))
            rel[(x == y) | np.isnan(x) | (diff <= ATOL)] = 0.0
            rel[np.isnan(rel)] = np.inf  # inf vs a finite number
            if len(rel) and float(rel.max()) > worst:
                worst = float(rel.max())
                i = int(rel.argmax())
                where = f"column {col}, row {i}: {y[i]:.6g} -> {x[i]:.6g}"
        else:
            sa, sb = a.fillna("").astype(str).to_numpy(), b.fillna("").astype(str).to_numpy()
            bad = [i for i in range(len(sa)) if sa[i] != sb[i]]
            if bad:
                i = bad[0]
                return Comparison(
                    path, False, f"column {col}: {len(bad)} cells differ, e.g. row {i}: {sb[i]!r} -> {sa[i]!r}"
                )
    note = f"; timing columns not compared: {', '.join(skipped)}" if skipped else ""
    if worst > RTOL:
        return Comparison(path, False, f"largest relative difference {worst:.3g} ({where}){note}")
    return Comparison(path, True, f"largest relative difference {worst:.3g}" + (f" ({where})" if worst else "") + note)


def compare_text(new: str, old: str, path: str = "") -> Comparison:
    if new == old:
        return Comparison(path, True, "identical text")
    a, b = new.splitlines(), old.splitlines()
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return Comparison(path, False, f"text differs from line {i + 1}")


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, check=False)


def committed_tables(run: str, ref: str = "HEAD") -> list[str]:
    out = _git("ls-tree", "-r", "--name-only", ref, f"results/{run}").stdout.decode().split()
    return sorted(p for p in out if p.endswith((".csv", ".md")) and not p.endswith(".meta.json"))


def compare_with_commit(run: str, ref: str = "HEAD") -> list[Comparison]:
    results = []
    for rel in committed_tables(run, ref):
        path = REPO_ROOT / rel
        if not path.exists():
            results.append(Comparison(rel, False, "missing from the rebuild"))
            continue
        old = _git("show", f"{ref}:{rel}").stdout
        if rel.endswith(".csv"):
            try:
                new_df = pd.read_csv(path, keep_default_na=False, na_values=[""])
                old_df = pd.read_csv(io.BytesIO(old), keep_default_na=False, na_values=[""])
            except pd.errors.EmptyDataError:
                results.append(compare_text(path.read_text(), old.decode(), rel))
                continue
            results.append(compare_frames(new_df, old_df, rel))
        else:
            results.append(compare_text(path.read_text(encoding="utf-8"), old.decode("utf-8"), rel))
    return results


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_manifest(run: str) -> list[Comparison]:
    """Every file of ``results/<run>/MANIFEST.json`` present here with the recorded sha256."""
    manifest = REPO_ROOT / "results" / run / "MANIFEST.json"
    if not manifest.exists():
        return [Comparison(str(manifest.relative_to(REPO_ROOT)), False, "no manifest")]
    files = json.loads(manifest.read_text())["files"]
    out = []
    for rel, rec in sorted(files.items()):
        path = REPO_ROOT / rel
        if not path.exists():
            continue  # not committed (large intermediate outputs): listed for a full rebuild's check only
        got = sha256(path)
        out.append(
            Comparison(
                rel,
                got == rec["sha256"],
                "sha256 as in the manifest"
                if got == rec["sha256"]
                else f"sha256 {got[:12]}… != manifest {rec['sha256'][:12]}…",
            )
        )
    return out


def compare_files(new: Path, old: Path, rel: str) -> Comparison:
    """Two outputs of the same job: tables as :func:`compare_frames`, sidecars without timings, else bytes."""
    if rel.endswith(".meta.json"):
        a, b = (without_timings(json.loads(p.read_text())) for p in (new, old))
        return Comparison(rel, a == b, "same record (timings not compared)" if a == b else "sidecar differs")
    if Path(rel).name == "MANIFEST.json":  # the listed files are compared one by one; runtimes are measurements
        a, b = (_manifest_core(json.loads(p.read_text())) for p in (new, old))
        return Comparison(
            rel, a == b, "same manifest (runtimes, hashes not compared)" if a == b else "manifest differs"
        )
    if rel.endswith(".csv"):
        try:
            return compare_frames(
                pd.read_csv(new, keep_default_na=False, na_values=[""]),
                pd.read_csv(old, keep_default_na=False, na_values=[""]),
                rel,
            )
        except pd.errors.EmptyDataError:
            pass
    same = new.read_bytes() == old.read_bytes()
    return Comparison(rel, same, "identical bytes" if same else "bytes differ")


def _manifest_core(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest without what differs between two runs of the same jobs: per-job runtimes and the files' hashes
    (files holding timing columns hash differently; their contents are compared file by file)."""
    core = {k: v for k, v in manifest.items() if k != "job_runtime"}
    core["files"] = sorted(manifest.get("files", {}))
    return dict(without_timings(core))


def compare_trees(new_root: Path, old_root: Path, folders: tuple[str, ...]) -> list[Comparison]:
    """Every file under ``folders`` of two working folders (the same set of files, the same contents)."""
    out = []
    for folder in folders:
        a = {p.relative_to(new_root).as_posix() for p in (new_root / folder).rglob("*") if p.is_file()}
        b = {p.relative_to(old_root).as_posix() for p in (old_root / folder).rglob("*") if p.is_file()}
        out += [Comparison(rel, False, "only in the first tree") for rel in sorted(a - b)]
        out += [Comparison(rel, False, "only in the second tree") for rel in sorted(b - a)]
        out += [compare_files(new_root / rel, old_root / rel, rel) for rel in sorted(a & b)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="default")
    parser.add_argument("--ref", default="HEAD", help="the commit holding the committed tables")
    parser.add_argument("--manifest", action="store_true", help="also check files against MANIFEST.json")
    args = parser.parse_args(argv)
    results = compare_with_commit(args.run, args.ref)
    if args.manifest:
        results += check_manifest(args.run)
    for r in results:
        print(r.line())
    bad = sum(not r.match for r in results)
    print(
        f"verify {args.run}: {len(results) - bad} of {len(results)} match (floats: relative tolerance {RTOL:g}; "
        "timing columns not compared)"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
