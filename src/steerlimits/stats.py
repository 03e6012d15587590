"""The project's one statistics module (spec B, decision D6/D7).

Every comparison in both papers goes through these functions: pooled-SD Cohen's d (signed), percentile
bootstrap confidence intervals, Welch's t test, TOST equivalence at ``|d| < bound_d`` (two one-sided Welch
tests against ``±bound_d · s_p``), efficacy ``(μ(v+u) − μ(0)) / (μ(v) − μ(0))`` and its raw ratio. Every random
draw takes an explicit integer ``seed``.

Degenerate inputs (fewer than two observations, zero pooled variance, ``μ(v) == μ(0)``) give ``nan`` rather
than an exception; non-finite observations raise ``ValueError``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

__all__ = [
    "Comparison",
    "bootstrap_ci",
    "cohens_d",
    "cohens_d_ci",
    "compare",
    "efficacy",
    "efficacy_ci",
    "efficacy_raw",
    "js_distance",
    "mean_ci",
    "pooled_sd",
    "spearman",
    "tost",
    "tost_power",
    "welch_t",
]

logger = logging.getLogger(__name__)

ArrayLike = Sequence[float] | np.ndarray


def _as_1d(x: ArrayLike | Any, name: str = "x") -> np.ndarray:
    """Return ``x`` as a finite float64 vector (tensors are detached and moved to CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values ({int((~np.isfinite(arr)).sum())} of {arr.size})")
    return arr


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(finite, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(lo), float(hi)


def mean_ci(x: ArrayLike, *, level: float = 0.95, n_boot: int = 2000, seed: int) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of the mean: ``(mean, low, high)``; CI is nan for n < 2."""
    arr = _as_1d(x)
    if arr.size == 0:
        return math.nan, math.nan, math.nan
    if arr.size < 2:
        return float(arr.mean()), math.nan, math.nan
    rng = np.random.default_rng(seed)
    boots = arr[rng.integers(0, arr.size, size=(n_boot, arr.size))].mean(axis=1)
    lo, hi = _percentiles(boots, level)
    return float(arr.mean()), lo, hi


def bootstrap_ci(
    x: ArrayLike,
    statistic: Callable[[np.ndarray], float],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``statistic`` (a function of one resampled 1-D array)."""
    arr = _as_1d(x)
    if arr.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_boot, arr.size))
    boots = np.array([float(statistic(arr[row])) for row in idx])
    return _percentiles(boots, level)


def _pooled_var(v1: np.ndarray | float, v2: np.ndarray | float, n1: int, n2: int) -> np.ndarray | float:
    return ((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2)


def pooled_sd(a: ArrayLike, b: ArrayLike) -> float:
    """Pooled SD ``sqrt(((n1−1)s1² + (n2−1)s2²)/(n1+n2−2))`` with ddof-1 variances; nan if n1+n2 < 3."""
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.size < 1 or y.size < 1 or x.size + y.size < 3:
        return math.nan
    v1 = x.var(ddof=1) if x.size > 1 else 0.0
    v2 = y.var(ddof=1) if y.size > 1 else 0.0
    return float(math.sqrt(_pooled_var(v1, v2, x.size, y.size)))


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Signed Cohen's d ``(mean(a) − mean(b)) / s_p``; nan if either n < 2 or ``s_p == 0``."""
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.size < 2 or y.size < 2:
        return math.nan
    sp = pooled_sd(x, y)
    if sp == 0.0:
        return math.nan
    return float((x.mean() - y.mean()) / sp)


def cohens_d_ci(
    a: ArrayLike, b: ArrayLike, *, level: float = 0.95, n_boot: int = 2000, seed: int
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the signed d, resampling each group independently."""
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.size < 2 or y.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    bx = x[rng.integers(0, x.size, size=(n_boot, x.size))]
    by = y[rng.integers(0, y.size, size=(n_boot, y.size))]
    sp = np.sqrt(_pooled_var(bx.var(axis=1, ddof=1), by.var(axis=1, ddof=1), x.size, y.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (bx.mean(axis=1) - by.mean(axis=1)) / sp
    d[sp == 0] = np.nan
    return _percentiles(d, level)


def welch_t(a: ArrayLike, b: ArrayLike) -> tuple[float, float]:
    """Welch's t statistic and two-sided p (``scipy.stats.ttest_ind(equal_var=False)``); nan if n < 2."""
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.size < 2 or y.size < 2 or (x.var() == 0 and y.var() == 0):
        return math.nan, math.nan
    res = sps.ttest_ind(x, y, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def _tost_p(
    m1: np.ndarray, m2: np.ndarray, v1: np.ndarray, v2: np.ndarray, n1: int, n2: int, bound_d: float
) -> np.ndarray:
    """Vectorised TOST p from group means and ddof-1 variances (arrays of equal shape)."""
    se2 = v1 / n1 + v2 / n2
    with np.errstate(divide="ignore", invalid="ignore"):
        df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
        bound = bound_d * np.sqrt(_pooled_var(v1, v2, n1, n2))
        se = np.sqrt(se2)
        delta = m1 - m2
        p_low = sps.t.sf((delta + bound) / se, df)  # H0: delta <= -bound
        p_high = sps.t.cdf((delta - bound) / se, df)  # H0: delta >= +bound
    p = np.maximum(p_low, p_high)
    return np.where(se2 > 0, p, np.nan)


def tost(a: ArrayLike, b: ArrayLike, *, bound_d: float = 0.2) -> float:
    """TOST equivalence p: two one-sided Welch tests of ``mean(a) − mean(b)`` against ``±bound_d · s_p``.

    Returns the larger of the two one-sided p-values; equivalence is declared when it is below alpha.
    """
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.size < 2 or y.size < 2:
        return math.nan
    p = _tost_p(
        np.array(x.mean()), np.array(y.mean()), np.array(x.var(ddof=1)), np.array(y.var(ddof=1)),
        x.size, y.size, bound_d,
    )
    return float(p)


def tost_power(
    n1: int,
    n2: int,
    *,
    bound_d: float = 0.2,
    true_d: float = 0.0,
    alpha: float = 0.05,
    n_sim: int = 2000,
    seed: int,
    method: Literal["simulate", "analytic"] = "simulate",
) -> float:
    """Power of :func:`tost` to declare equivalence at ``alpha`` when the true standardised shift is ``true_d``.

    ``simulate`` draws ``n_sim`` pairs of unit-variance normal samples and applies the exact test;
    ``analytic`` uses the normal approximation ``Φ((B−δ)/se − z) − Φ((−B−δ)/se + z)`` (clipped at 0).
    """
    if n1 < 2 or n2 < 2:
        return 0.0
    if method == "analytic":
        se = math.sqrt(1.0 / n1 + 1.0 / n2)
        z = sps.norm.ppf(1.0 - alpha)
        pw = sps.norm.cdf((bound_d - true_d) / se - z) - sps.norm.cdf((-bound_d - true_d) / se + z)
        return float(max(pw, 0.0))
    if method != "simulate":
        raise ValueError(f"method must be 'simulate' or 'analytic', got {method!r}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_sim, n1)) + true_d
    y = rng.standard_normal((n_sim, n2))
    p = _tost_p(x.mean(1), y.mean(1), x.var(1, ddof=1), y.var(1, ddof=1), n1, n2, bound_d)
    return float(np.mean(p < alpha))


def efficacy(mu_pert: float, mu_v: float, mu_0: float) -> float:
    """Baseline-corrected efficacy ``(μ_pert − μ_0) / (μ_v − μ_0)`` (D7); nan when ``μ_v == μ_0``."""
    denom = mu_v - mu_0
    if denom == 0 or not math.isfinite(denom):
        return math.nan
    return float((mu_pert - mu_0) / denom)


def efficacy_raw(mu_pert: float, mu_v: float) -> float:
    """Raw efficacy ratio ``μ_pert / μ_v`` (the papers' reading); nan when ``μ_v == 0``."""
    if mu_v == 0 or not math.isfinite(mu_v):
        return math.nan
    return float(mu_pert / mu_v)


def efficacy_ci(
    pert: ArrayLike,
    v: ArrayLike,
    zero: ArrayLike,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of :func:`efficacy`, resampling the three groups independently."""
    groups = [_as_1d(pert, "pert"), _as_1d(v, "v"), _as_1d(zero, "zero")]
    if any(g.size < 2 for g in groups):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    mp, mv, m0 = (g[rng.integers(0, g.size, size=(n_boot, g.size))].mean(axis=1) for g in groups)
    denom = mv - m0
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.where(denom != 0, (mp - m0) / denom, np.nan)
    return _percentiles(eff, level)


def spearman(x: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """Spearman rank correlation and two-sided p; nan for n < 3 or a constant input."""
    a, b = _as_1d(x, "x"), _as_1d(y, "y")
    if a.size != b.size:
        raise ValueError(f"spearman needs paired samples, got lengths {a.size} and {b.size}")
    if a.size < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan, math.nan
    res = sps.spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


def js_distance(a: ArrayLike, b: ArrayLike, *, bins: int = 10) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between the ``bins``-bin histograms of ``a`` and ``b`` on one
    shared range (min to max of both samples), as paper B's E6; nan when a sample is empty, 0 when both are one
    constant."""
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.size == 0 or y.size == 0:
        return math.nan
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    if lo == hi:
        return 0.0
    p = np.histogram(x, bins=bins, range=(lo, hi))[0] / x.size
    q = np.histogram(y, bins=bins, range=(lo, hi))[0] / y.size
    m = 0.5 * (p + q)

    def kl(r: np.ndarray) -> float:
        nz = r > 0
        return float(np.sum(r[nz] * np.log2(r[nz] / m[nz])))

    return math.sqrt(max(0.5 * kl(p) + 0.5 * kl(q), 0.0))


@dataclass
class Comparison:
    """Summary of group ``a`` (1) vs group ``b`` (2): d is signed ``(mean1 − mean2) / s_p``."""

    n1: int
    n2: int
    mean1: float
    mean2: float
    cohens_d: float
    d_ci_low: float
    d_ci_high: float
    welch_t: float
    welch_p: float
    tost_p: float
    bound_d: float
    level: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def compare(
    a: ArrayLike,
    b: ArrayLike,
    *,
    seed: int,
    level: float = 0.95,
    n_boot: int = 2000,
    bound_d: float = 0.2,
) -> Comparison:
    """All D6 statistics of ``a`` vs ``b`` in one record (d with bootstrap CI, Welch, TOST)."""
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    lo, hi = cohens_d_ci(x, y, level=level, n_boot=n_boot, seed=seed)
    t, p = welch_t(x, y)
    return Comparison(
        n1=int(x.size),
        n2=int(y.size),
        mean1=float(x.mean()) if x.size else math.nan,
        mean2=float(y.mean()) if y.size else math.nan,
        cohens_d=cohens_d(x, y),
        d_ci_low=lo,
        d_ci_high=hi,
        welch_t=t,
        welch_p=p,
        tost_p=tost(x, y, bound_d=bound_d),
        bound_d=bound_d,
        level=level,
    )
