"""Machine-checked claims (decision D12): one row per claim and model, thresholds fixed before any value was seen
(docs/concepts/statistics-and-claims.md).

``holds`` is ``"true"``/``"false"``; ``"na"`` only where the claim's stated precondition failed, and
``"inconclusive"`` where the control that makes the row meaningful failed (a positive control that could not close
the gap on a reachable target, an active family that does not move behaviour); the ``note`` says which. Each paper
writes ``results/<run>/paper{A,B}/claims.csv``; the ``claims`` rule concatenates them into
``results/<run>/claims.csv`` and links every row to its evidence (:mod:`steerlimits.evidence`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import pandas as pd

__all__ = ["CLAIM_COLUMNS", "HOLDS", "Claim", "check", "combine_claims", "claims_frame"]

Holds = Literal["true", "false", "na", "inconclusive"]
HOLDS: tuple[str, ...] = ("true", "false", "na", "inconclusive")


@dataclass(frozen=True)
class Claim:
    paper: Literal["A", "B"]
    claim_id: str  # e.g. "A1", "B2-strict"
    model: str
    statement: str
    metric: str
    value: float
    threshold: str  # e.g. ">= 0.95", "all", "descriptive"
    holds: Holds
    note: str = ""


CLAIM_COLUMNS = [f.name for f in fields(Claim)]


def check(value: float, op: str, threshold: float) -> Holds:
    """``"true"``/``"false"`` for ``value op threshold``; a NaN value is ``"false"`` (the claim was not shown)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "false"
    ops = {
        ">=": value >= threshold,
        ">": value > threshold,
        "<=": value <= threshold,
        "<": value < threshold,
        "==": value == threshold,
    }
    if op not in ops:
        raise ValueError(f"unknown comparison '{op}'")
    return "true" if ops[op] else "false"


def claims_frame(claims: Iterable[Claim]) -> pd.DataFrame:
    return pd.DataFrame([asdict(c) for c in claims], columns=CLAIM_COLUMNS)


def combine_claims(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate per-paper claims tables (same columns), sorted by paper, claim and model."""
    frames = [pd.read_csv(p, dtype={"holds": str}, keep_default_na=False) for p in paths]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CLAIM_COLUMNS)
    bad = set(df["holds"]) - set(HOLDS)
    if bad:
        raise ValueError(f"claims with invalid 'holds' values: {sorted(bad)}")
    return df[CLAIM_COLUMNS].sort_values(["paper", "claim_id", "model"], kind="stable").reset_index(drop=True)
