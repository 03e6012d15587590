"""The project's one statistics module (docs/decisions.md, D6 and D7).

Every comparison in both papers goes through these functions: pooled-SD Cohen's d (signed), percentile
bootstrap confidence intervals, Welch's t test, TOST equivalence at ``|d| < bound_d`` (two one-sided Welch
tests against ``±bound_d · s_p``), efficacy ``(μ(v+u) − μ(0)) / (μ(v) − μ(0))`` and its raw ratio. Every random
draw takes an explicit integer ``seed``.

Paired, effect-relative equivalence (paper B, revision 2): :func:`effect_tost` tests whether efficacy lies in
``[1 − δ, 1 + δ]`` from per-unit (stem) means of three conditions observed on the same units, as two one-sided
paired t tests of linear contrasts (so the margin's own estimation error is part of the test);
:func:`effect_tost_power` and :func:`samples_for_power` size it; :func:`auc` and :func:`against_fraction` are
descriptive.

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
    "EffectTost",
    "against_fraction",
    "auc",
    "bootstrap_ci",
    "cohens_d",
    "cohens_d_ci",
    "compare",
    "efficacy",
    "efficacy_ci",
    "efficacy_raw",
    "effect_tost",
    "effect_tost_power",
    "js_distance",
    "mean_ci",
    "paired_efficacy_ci",
    "pooled_sd",
    "samples_for_power",
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
        np.array(x.mean()),
        np.array(y.mean()),
        np.array(x.var(ddof=1)),
        np.array(y.var(ddof=1)),
        x.size,
        y.size,
        bound_d,
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


# ------------------------------------------------------------------------------- paired, effect-relative
@dataclass
class EffectTost:
    """Effect-relative TOST on paired units (see :func:`effect_tost`)."""

    n: int
    mean_x: float
    mean_ref: float
    mean_zero: float
    effect: float  # mean(ref − zero)
    diff: float  # mean(x − ref)
    efficacy: float  # mean(x − zero) / mean(ref − zero)
    margin: float  # delta · effect (the margin the two contrasts imply at the estimated effect)
    p_lower: float  # H0: efficacy <= 1 − delta
    p_upper: float  # H0: efficacy >= 1 + delta
    p: float  # max of the two; equivalence at p < alpha
    sd_lower: float  # SD over units of the two contrasts
    sd_upper: float
    delta: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _contrasts(x: np.ndarray, r: np.ndarray, z: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit contrasts whose means are positive iff efficacy > 1 − δ (lower) and < 1 + δ (upper), for a
    positive effect: ``(x − z) − (1 − δ)(r − z)`` and ``(1 + δ)(r − z) − (x − z)``."""
    return (x - z) - (1.0 - delta) * (r - z), (1.0 + delta) * (r - z) - (x - z)


def effect_tost(x: ArrayLike, ref: ArrayLike, zero: ArrayLike, *, delta: float = 0.2) -> EffectTost:
    """Paired TOST of ``H0: |μ(x) − μ(ref)| ≥ δ·(μ(ref) − μ(zero))``, i.e. efficacy outside ``[1 − δ, 1 + δ]``.

    ``x``, ``ref``, ``zero`` are per-unit means (one value per stem, the unit of analysis) of the perturbed
    condition, the reference v and the unsteered condition, aligned by unit. The two one-sided hypotheses are
    linear in the means (``μ(x) − μ(z) ≤ (1 − δ)(μ(r) − μ(z))`` and ``≥ (1 + δ)(μ(r) − μ(z))``), so each is a
    one-sided one-sample t test of a per-unit contrast (:func:`_contrasts`) and the uncertainty of the effect that
    sets the margin is inside the test (a Fieller-type ratio test). ``p`` is the larger one-sided p. The test needs
    a positive effect; for ``μ(ref) ≤ μ(zero)`` it cannot declare equivalence (the two contrasts' means sum to
    ``2δ·effect``). NaN for fewer than 2 units or zero variance of both contrasts.
    """
    xa, ra, za = _as_1d(x, "x"), _as_1d(ref, "ref"), _as_1d(zero, "zero")
    if not xa.size == ra.size == za.size:
        raise ValueError(f"effect_tost needs paired units, got sizes {xa.size}, {ra.size}, {za.size}")
    n = int(xa.size)
    nan = math.nan
    mx, mr, mz = (float(a.mean()) if n else nan for a in (xa, ra, za))
    eff = efficacy(mx, mr, mz) if n else nan
    out = EffectTost(n, mx, mr, mz, mr - mz, mx - mr, eff, delta * (mr - mz), nan, nan, nan, nan, nan, delta)
    if n < 2:
        return out
    lo, hi = _contrasts(xa, ra, za, delta)
    if float(lo.std(ddof=1)) == 0.0 and float(hi.std(ddof=1)) == 0.0:
        return out  # degenerate (e.g. identical continuations everywhere): nothing to test, p stays NaN
    ps = []
    for c in (lo, hi):
        sd = float(c.std(ddof=1))
        if sd == 0.0:
            ps.append(0.0 if c.mean() > 0 else 1.0)
        else:
            ps.append(float(sps.t.sf(c.mean() / (sd / math.sqrt(n)), n - 1)))
    out.p_lower, out.p_upper = ps
    out.p = max(ps)
    out.sd_lower, out.sd_upper = float(lo.std(ddof=1)), float(hi.std(ddof=1))
    return out


def effect_tost_power(
    n: int,
    effect: float,
    sd: float,
    *,
    delta: float = 0.2,
    alpha: float = 0.05,
    true_efficacy: float = 1.0,
    sd_upper: float | None = None,
) -> float:
    """Power of :func:`effect_tost` with ``n`` units when the true effect is ``effect`` (μ(ref) − μ(zero)), the
    true efficacy ``true_efficacy`` and the per-unit contrasts have SD ``sd`` (``sd_upper`` for the upper one,
    default the same).

    Each one-sided test rejects with probability ``1 − F_nct(t_{1−α, n−1}; n − 1, μ_k √n / σ_k)`` (non-central t,
    ``μ_lower = (E − 1 + δ)·effect``, ``μ_upper = (1 + δ − E)·effect``); the power is the conservative lower bound
    ``P_lower + P_upper − 1`` (clipped at 0), which is tight when both are near 1 (checked by simulation in the
    tests). 0 for ``n < 2``, a non-positive effect or a non-positive SD.
    """
    if n < 2 or not effect > 0 or not sd > 0:
        return 0.0
    sd_hi = sd if sd_upper is None else sd_upper
    tc = float(sps.t.ppf(1.0 - alpha, n - 1))
    means = ((true_efficacy - 1.0 + delta) * effect, (1.0 + delta - true_efficacy) * effect)
    rej = [float(sps.nct.sf(tc, n - 1, m * math.sqrt(n) / s)) for m, s in zip(means, (sd, sd_hi), strict=True)]
    return float(max(rej[0] + rej[1] - 1.0, 0.0))


def samples_for_power(
    n_units: int,
    effect: float,
    sd_between: float,
    sd_within: float,
    *,
    delta: float = 0.2,
    alpha: float = 0.05,
    target: float = 0.8,
    s_min: int = 1,
    s_max: int = 16,
) -> tuple[int, float]:
    """Smallest samples per unit ``s`` in ``[s_min, s_max]`` whose :func:`effect_tost_power` reaches ``target``
    with ``n_units`` units, the per-unit contrast SD being ``sqrt(sd_between² + sd_within² / s)``; returns ``(s,
    power)``, ``s = s_max`` with the power it achieves when no ``s`` reaches the target (budget cap)."""
    if s_min < 1 or s_max < s_min:
        raise ValueError(f"need 1 <= s_min <= s_max, got {s_min}, {s_max}")
    pw = 0.0
    for s in range(s_min, s_max + 1):
        sd = math.sqrt(max(sd_between, 0.0) ** 2 + max(sd_within, 0.0) ** 2 / s)
        pw = effect_tost_power(n_units, effect, sd, delta=delta, alpha=alpha)
        if pw >= target:
            return s, pw
    return s_max, pw


def paired_efficacy_ci(
    x: ArrayLike, ref: ArrayLike, zero: ArrayLike, *, level: float = 0.95, n_boot: int = 2000, seed: int
) -> tuple[float, float]:
    """Percentile-bootstrap CI of efficacy ``mean(x − zero) / mean(ref − zero)`` resampling *units* (pairs
    kept together)."""
    xa, ra, za = _as_1d(x, "x"), _as_1d(ref, "ref"), _as_1d(zero, "zero")
    if not xa.size == ra.size == za.size:
        raise ValueError("paired_efficacy_ci needs paired units")
    if xa.size < 2:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, xa.size, size=(n_boot, xa.size))
    num, den = (xa[idx] - za[idx]).mean(1), (ra[idx] - za[idx]).mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.where(den != 0, num / den, np.nan)
    return _percentiles(eff, level)


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive): the Mann–Whitney probability
    that a positive outscores a negative, ties counting one half; NaN without both classes."""
    s, y = _as_1d(scores, "scores"), _as_1d(labels, "labels")
    if s.size != y.size:
        raise ValueError(f"auc needs one label per score, got {s.size} and {y.size}")
    pos, neg = s[y == 1], s[y != 1]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    ranks = sps.rankdata(np.concatenate([pos, neg]))
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def against_fraction(diffs: ArrayLike, direction: float = 1.0) -> float:
    """Fraction of units whose paired difference moves against ``direction`` (``diff · direction < 0``; ties are
    not against); NaN for no units."""
    d = _as_1d(diffs, "diffs")
    if d.size == 0:
        return math.nan
    return float(np.mean(d * np.sign(direction) < 0))
