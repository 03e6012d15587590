"""Claims rows: comparisons, NaN handling, and the combined table."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlimits.claims import CLAIM_COLUMNS, Claim, check, claims_frame, combine_claims


@pytest.mark.parametrize(
    ("value", "op", "thr", "want"),
    [
        (1.0, "==", 1.0, "true"),
        (0.9, "==", 1.0, "false"),
        (0.95, ">=", 0.95, "true"),
        (0.2, "<", 0.2, "false"),
        (float("nan"), ">=", 0.0, "false"),
    ],
)
def test_check(value: float, op: str, thr: float, want: str) -> None:
    assert check(value, op, thr) == want


def test_unknown_operator() -> None:
    with pytest.raises(ValueError):
        check(1.0, "~", 1.0)


def test_combine(tmp_path: Path) -> None:
    a = claims_frame([Claim("A", "A2", "m", "s", "metric", 0.5, "<= 1", "true")])
    b = claims_frame(
        [
            Claim("B", "B7", "m", "s", "metric", 2.0, "< 1", "false"),
            Claim("B", "B1", "m", "s", "metric", float("nan"), ">= 0.95", "na", note="B0 failed"),
        ]
    )
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    df = combine_claims([tmp_path / "b.csv", tmp_path / "a.csv"])
    assert list(df.columns) == CLAIM_COLUMNS
    assert df["claim_id"].tolist() == ["A2", "B1", "B7"]
    assert df["holds"].tolist() == ["true", "na", "false"]
    b.assign(holds="maybe").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="maybe"):
        combine_claims([tmp_path / "bad.csv"])
