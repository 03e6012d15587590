"""Tests for steerlimits.stats against hand-computed values, scipy/statsmodels and simulation truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.weightstats import ttost_ind

from steerlimits import stats as st

A = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
B = np.array([2.0, 4.0, 6.0, 8.0])


def test_pooled_sd_and_d_by_hand() -> None:
    # s1^2 = 2.5 (n 5), s2^2 = 20/3 (n 4): pooled var = (4*2.5 + 3*20/3) / 7 = 30/7
    assert st.pooled_sd(A, B) == pytest.approx(math.sqrt(30 / 7), rel=1e-12)
    assert st.cohens_d(A, B) == pytest.approx((3.0 - 5.0) / math.sqrt(30 / 7), rel=1e-12)
    assert st.cohens_d(B, A) == pytest.approx(-st.cohens_d(A, B), rel=1e-12)  # signed


def test_welch_matches_scipy_and_hand_formula() -> None:
    t, p = st.welch_t(A, B)
    ref = sps.ttest_ind(A, B, equal_var=False)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    se = math.sqrt(2.5 / 5 + (20 / 3) / 4)
    assert t == pytest.approx(-2.0 / se, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tost_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.1, 1.0, 60), rng.normal(0.0, 1.3, 45)
    bound = 0.2 * st.pooled_sd(a, b)
    ref_p, _, _ = ttost_ind(a, b, -bound, bound, usevar="unequal")
    assert st.tost(a, b, bound_d=0.2) == pytest.approx(float(ref_p), rel=1e-9)


def test_tost_equivalence_decisions() -> None:
    rng = np.random.default_rng(11)
    same_a, same_b = rng.normal(0, 1, 2000), rng.normal(0, 1, 2000)
    assert st.tost(same_a, same_b) < 0.05
    shifted = rng.normal(0.5, 1, 2000)
    assert st.tost(shifted, same_b) > 0.05
    # tiny samples cannot establish equivalence even with no shift
    assert st.tost(same_a[:20], same_b[:20]) > 0.05


def test_tost_power_simulated_and_analytic() -> None:
    sim = st.tost_power(430, 430, true_d=0.0, n_sim=1000, seed=0)
    ana = st.tost_power(430, 430, true_d=0.0, seed=0, method="analytic")
    assert 0.74 < sim < 0.87
    assert ana == pytest.approx(0.80, abs=0.02)
    assert abs(sim - ana) < 0.06
    # below ~135 per group TOST at 0.2 essentially never passes
    assert st.tost_power(100, 100, n_sim=500, seed=1) < 0.05
    # power falls as the true shift approaches the bound
    assert st.tost_power(430, 430, true_d=0.15, n_sim=500, seed=2) < sim
    assert st.tost_power(430, 430, n_sim=300, seed=5) == st.tost_power(430, 430, n_sim=300, seed=5)


def test_d_of_known_shift_inside_ci() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.5, 1.0, 400), rng.normal(0.0, 1.0, 400)
    lo, hi = st.cohens_d_ci(a, b, seed=0, n_boot=1000)
    assert lo < 0.5 < hi
    assert lo < st.cohens_d(a, b) < hi


def test_ci_coverage_by_simulation() -> None:
    rng = np.random.default_rng(123)
    true_d, cover_d, cover_mean, n_sims = 0.4, 0, 0, 200
    for i in range(n_sims):
        a, b = rng.normal(true_d, 1.0, 60), rng.normal(0.0, 1.0, 60)
        lo, hi = st.cohens_d_ci(a, b, n_boot=400, seed=i)
        cover_d += lo <= true_d <= hi
        _, mlo, mhi = st.mean_ci(b, n_boot=400, seed=i)
        cover_mean += mlo <= 0.0 <= mhi
    assert 0.88 <= cover_d / n_sims <= 0.99
    assert 0.88 <= cover_mean / n_sims <= 0.99


def test_mean_and_bootstrap_ci_deterministic_and_consistent() -> None:
    x = np.random.default_rng(5).normal(2.0, 1.0, 50)
    m, lo, hi = st.mean_ci(x, seed=7)
    assert m == pytest.approx(x.mean())
    assert (m, lo, hi) == st.mean_ci(x, seed=7)
    assert (lo, hi) != st.mean_ci(x, seed=8)[1:]
    # generic bootstrap of the mean with the same seed draws the same resamples
    assert st.bootstrap_ci(x, np.mean, seed=7) == pytest.approx((lo, hi), rel=1e-12)
    # percentile CI half-width close to the normal-theory 1.96 * s / sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(1.96 * x.std(ddof=1) / math.sqrt(x.size), rel=0.15)
    assert st.cohens_d_ci(A, B, seed=1) == st.cohens_d_ci(A, B, seed=1)


def test_efficacy_hand_values_and_degenerate() -> None:
    assert st.efficacy(0.9, 1.0, 0.5) == pytest.approx(0.8)
    assert st.efficacy(0.5, 1.0, 0.5) == pytest.approx(0.0)
    assert st.efficacy_raw(0.9, 1.0) == pytest.approx(0.9)
    assert math.isnan(st.efficacy(0.3, 0.2, 0.2))
    assert math.isnan(st.efficacy_raw(0.3, 0.0))


def test_efficacy_ci_covers_truth() -> None:
    rng = np.random.default_rng(9)
    zero, v = rng.normal(0.0, 0.3, 300), rng.normal(1.0, 0.3, 300)
    pert = rng.normal(0.8, 0.3, 300)  # true efficacy 0.8
    lo, hi = st.efficacy_ci(pert, v, zero, level=0.95, n_boot=1000, seed=0)
    assert lo < 0.8 < hi and hi - lo < 0.2
    assert (lo, hi) == st.efficacy_ci(pert, v, zero, level=0.95, n_boot=1000, seed=0)


def test_spearman_matches_scipy() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 6.0, 5.0])
    rho, p = st.spearman(x, y)
    ref = sps.spearmanr(x, y)
    assert rho == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert st.spearman(x, x)[0] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in st.spearman(x, np.ones(6)))


def test_degenerate_inputs_give_nan() -> None:
    const = np.ones(5)
    assert math.isnan(st.cohens_d(const, const))
    assert math.isnan(st.cohens_d([1.0], A))
    assert all(math.isnan(v) for v in st.welch_t([1.0], A))
    assert math.isnan(st.tost(const, const))
    assert all(math.isnan(v) for v in st.cohens_d_ci([1.0], A, seed=0))
    m, lo, hi = st.mean_ci([3.0], seed=0)
    assert m == 3.0 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="non-finite"):
        st.cohens_d([1.0, float("nan"), 2.0], A)


def test_compare_bundles_consistent_values() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.3, 1, 80), rng.normal(0, 1, 70)
    c = st.compare(a, b, seed=2, n_boot=500)
    assert (c.n1, c.n2) == (80, 70)
    assert c.cohens_d == pytest.approx(st.cohens_d(a, b))
    assert (c.d_ci_low, c.d_ci_high) == st.cohens_d_ci(a, b, n_boot=500, seed=2)
    assert c.welch_p == pytest.approx(st.welch_t(a, b)[1])
    assert c.tost_p == pytest.approx(st.tost(a, b))
    assert set(c.to_dict()) >= {"n1", "n2", "mean1", "mean2", "cohens_d", "d_ci_low", "d_ci_high", "welch_p", "tost_p"}


def test_js_distance_bounds_and_scipy() -> None:
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, 300), rng.normal(1, 1, 200)
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    p = np.histogram(x, 10, (lo, hi))[0] / x.size
    q = np.histogram(y, 10, (lo, hi))[0] / y.size
    assert st.js_distance(x, y) == pytest.approx(float(jensenshannon(p, q, base=2)), rel=1e-9)
    assert st.js_distance(x, x) == 0.0
    assert st.js_distance([0.0, 0.1, 0.2], [5.0, 5.1, 5.2]) == pytest.approx(1.0)  # disjoint supports
    assert st.js_distance([1.0, 1.0], [1.0]) == 0.0 and math.isnan(st.js_distance([], [1.0]))


# ------------------------------------------------------------------------------- paired, effect-relative
def _units(
    rng: np.random.Generator, n: int, effect: float, eff: float, sx: float, sr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-unit means: zero z_i (a unit effect shared by all conditions), ref r_i = z_i + effect + e_r,
    x_i = z_i + eff·effect + e_x."""
    z = rng.normal(0.0, 1.0, n)
    return z + eff * effect + rng.normal(0, sx, n), z + effect + rng.normal(0, sr, n), z


def test_effect_tost_is_two_paired_one_sided_t_tests() -> None:
    rng = np.random.default_rng(0)
    x, r, z = _units(rng, 15, 1.0, 1.0, 0.3, 0.3)
    res = st.effect_tost(x, r, z, delta=0.2)
    lo, hi = (x - z) - 0.8 * (r - z), 1.2 * (r - z) - (x - z)
    assert res.p_lower == pytest.approx(sps.ttest_1samp(lo, 0.0, alternative="greater").pvalue)
    assert res.p_upper == pytest.approx(sps.ttest_1samp(hi, 0.0, alternative="greater").pvalue)
    assert res.p == max(res.p_lower, res.p_upper)
    assert res.efficacy == pytest.approx(np.mean(x - z) / np.mean(r - z))
    assert res.effect == pytest.approx(np.mean(r - z)) and res.margin == pytest.approx(0.2 * res.effect)
    # unit effects cancel: adding a large per-unit offset to all three conditions changes nothing
    shift = rng.normal(0, 100, 15)
    assert st.effect_tost(x + shift, r + shift, z + shift).p == pytest.approx(res.p)
    # no effect -> cannot be equivalent; degenerate -> nan
    assert st.effect_tost(z + 0.01, z, z).p > 0.5
    assert math.isnan(st.effect_tost([1.0], [2.0], [0.0]).p)
    # no variance in either contrast (every stem the same): not a test, so NaN, never equivalence (p = 0)
    assert math.isnan(st.effect_tost([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]).p)


def test_effect_tost_size_at_the_margin_and_power_by_simulation() -> None:
    rng = np.random.default_rng(1)
    n, effect, sx, sr = 20, 1.0, 0.4, 0.3
    # true efficacy exactly at the lower margin: rejection rate <= alpha (size)
    rej = np.mean([st.effect_tost(*_units(rng, n, effect, 0.8, sx, sr)).p < 0.05 for _ in range(2000)])
    assert rej <= 0.05 + 0.015
    # power at efficacy 1: the non-central t bound is conservative, and tight where designs aim (power >= 0.7)
    sd_lo, sd_hi = math.sqrt(sx**2 + 0.64 * sr**2), math.sqrt(sx**2 + 1.44 * sr**2)
    for n_units, tight in ((20, False), (60, True)):
        sims = np.mean([st.effect_tost(*_units(rng, n_units, effect, 1.0, sx, sr)).p < 0.05 for _ in range(2000)])
        pw = st.effect_tost_power(n_units, effect, sd_lo, sd_upper=sd_hi)
        assert pw <= sims + 0.03
        if tight:
            assert 0.6 < pw < 0.97 and pw == pytest.approx(sims, abs=0.05)
    assert st.effect_tost_power(1, 1.0, 0.1) == 0.0 and st.effect_tost_power(10, -1.0, 0.1) == 0.0
    assert st.effect_tost_power(40, 1.0, 0.4) > st.effect_tost_power(20, 1.0, 0.4)


def test_samples_for_power_is_the_smallest_sufficient() -> None:
    s, pw = st.samples_for_power(20, 1.0, 0.05, 0.8, target=0.8, s_max=32)
    assert pw >= 0.8
    if s > 1:
        sd = math.sqrt(0.05**2 + 0.8**2 / (s - 1))
        assert st.effect_tost_power(20, 1.0, sd) < 0.8
    capped, pw_cap = st.samples_for_power(5, 0.1, 1.0, 1.0, s_max=3)
    assert capped == 3 and pw_cap < 0.8


def test_paired_efficacy_ci_covers_truth() -> None:
    rng = np.random.default_rng(2)
    hits = 0
    for i in range(200):
        x, r, z = _units(rng, 30, 1.0, 0.9, 0.3, 0.3)
        lo, hi = st.paired_efficacy_ci(x, r, z, n_boot=500, seed=i)
        hits += lo <= 0.9 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_auc_matches_rank_definition_and_against_fraction() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = y + rng.normal(0, 1, 200)
    s[:20] = np.round(s[:20])  # ties
    pos, neg = s[y == 1], s[y == 0]
    by_hand = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert st.auc(s, y) == pytest.approx(by_hand)
    assert st.auc([0.1, 0.2], [1, 1]) != st.auc([0.1, 0.2], [1, 1])  # nan without both classes
    assert st.against_fraction([1.0, -1.0, 0.0, 2.0]) == 0.25
    assert st.against_fraction([1.0, -1.0, -3.0], direction=-1.0) == pytest.approx(1 / 3)
