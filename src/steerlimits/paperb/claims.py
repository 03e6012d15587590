"""Claims rows B0–B13 per model × trait (docs/paperB.md, The claims; decision D12), thresholds fixed in advance.

* **B0** (precondition): an α qualified on the calibration stems, and on the *evaluation* stems at that α,
  d(αv, 0) ≥ ``target_d`` and the perplexity ratio (steered / unsteered continuations under the unsteered model)
  ≤ ``max_ppl_ratio``; the calibration-stem values and the paper's own setting (α = 1) are in the note.
* **Equivalence rows** (B2, B3, B5, B6, B8, B9) appear as ``-effect`` (primary: the paired TOST of efficacy within
  [1 − δ, 1 + δ], p < ``tost_alpha``, every cell for "all" rows, with n stems and power in the note) and
  ``-paper`` (|d̂| < 0.2 over generations, the paper's criterion).
* ``na``: B0 failed (every row that needs working steering), or the family's subspace ∩ v⊥ has dimension < 2
  (rows that need independent draws: B2/B3 pooled over draws, B9). ``inconclusive``: B3 when B4 fails (the active
  control was also inert). B10 is per model.
* **B11** (where v lives): the fraction of ‖v‖² in the covariance's lower half exceeds the 97.5 % quantile of
  norm-matched random directions (the other estimators' fractions are in the note and in B-T9).
* **B12** (anti-steerability): at the calibrated α, fewer evaluation stems move against the steering than with
  it, by a one-sided sign test (the per-condition fractions are in the note).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from steerlimits.claims import Claim, check

__all__ = ["STATEMENTS", "claims_rows"]

STATEMENTS = {
    "B0": "Steering works (precondition)",
    "B1": "Orthogonal perturbations keep efficacy",
    "B2": "Orthogonal perturbations have negligible effect",
    "B3": "Null-space perturbations are equivalent",
    "B4": "Active perturbations are not equivalent (control)",
    "B5": "Equivalence holds across alpha",
    "B6": "Equivalence holds across environments",
    "B7": "Null directions move logits less than norm-matched random directions",
    "B8": "Mean-difference and PCA vectors are equivalent",
    "B9": "Combinations of null directions stay inert",
    "B10": "The null space is large",
    "B11": "v concentrates in the covariance's low-variance tail (beyond random directions)",
    "B12": "Steering moves most stems its way (anti-steerability is the exception)",
    "B13": "bfloat16 generations score like float32 ones (the project's check of paperB.dtype)",
}


def sign_test_p(against: float, n: int) -> float:
    """One-sided sign test: P(at most ``round(against · n)`` of ``n`` stems move against | p = 1/2)."""
    if n <= 0 or math.isnan(against):
        return math.nan
    from scipy.stats import binom

    return float(binom.cdf(int(round(against * n)), n, 0.5))


def _row(cid: str, model: str, metric: str, value: float, threshold: str, holds: str, note: str) -> Claim:
    return Claim(
        "B",
        cid,
        model,
        STATEMENTS[cid.split("-")[0]],
        metric,
        float(value),
        threshold,
        holds,  # type: ignore[arg-type]
        note,
    )


def _power(cells: pd.DataFrame) -> str:
    pd_ = cells["power_design"].min() if "power_design" in cells else math.nan
    po = cells["power_observed_sd"].min() if "power_observed_sd" in cells else math.nan
    parts = []
    if not pd.isna(pd_):
        parts.append(f"design power {pd_:.2f}")
    if not pd.isna(po):
        parts.append(f"power at observed SD {po:.2f}")
    return ", ".join(parts) or "power unavailable"


def _equiv(
    cid: str,
    model: str,
    metric: str,
    cells: pd.DataFrame,
    *,
    skip: str,
    bound: float,
    tost_alpha: float,
    delta: float,
    extra: str = "",
    inconclusive: str = "",
) -> list[Claim]:
    """``-effect`` and ``-paper`` rows for one or more paired cells (``all`` when several). ``skip``: the ``na``
    reason (empty when the row applies); ``inconclusive``: the reason the effect row cannot be read (its control
    failed)."""
    eff_thr = f"effect TOST p < {tost_alpha:g} (efficacy in [{1 - delta:g}, {1 + delta:g}])"
    if skip:
        note = f"na: {skip}"
        return [
            _row(f"{cid}-effect", model, f"{metric} [effect TOST p]", math.nan, eff_thr, "na", note),
            _row(f"{cid}-paper", model, f"{metric} [|d|]", math.nan, f"|d| < {bound:g}", "na", note),
        ]
    if cells.empty:
        note = "not computed (condition unavailable)"
        return [
            _row(f"{cid}-effect", model, f"{metric} [effect TOST p]", math.nan, eff_thr, "false", note),
            _row(f"{cid}-paper", model, f"{metric} [|d|]", math.nan, f"|d| < {bound:g}", "false", note),
        ]
    many = len(cells) > 1
    p_max = float(cells["effect_tost_p"].max()) if cells["effect_tost_p"].notna().all() else math.nan
    d_max = float(cells["cohens_d"].abs().max()) if cells["cohens_d"].notna().all() else math.nan
    n, n_gen = int(cells["n"].min()), int(cells["n_gen"].min())
    effs = ", ".join(
        f"{e:.2f} [{lo:.2f}, {hi:.2f}]"
        for e, lo, hi in zip(cells["efficacy"], cells["eff_ci_low"], cells["eff_ci_high"], strict=True)
    )
    where = f"{len(cells)} cells, smallest " if many else ""
    note = f"{where}n = {n} stems ({n_gen} generations); efficacy {effs}; {_power(cells)}{extra}"
    holds_eff, holds_pap = check(p_max, "<", tost_alpha), check(d_max, "<", bound)
    note_eff = note
    note_pap = f"n = {int(cells['n_gen'].min())} vs {int(cells['n_ref'].min())} generations; {where}d CI " + ", ".join(
        f"[{lo:.2f}, {hi:.2f}]" for lo, hi in zip(cells["d_ci_low"], cells["d_ci_high"], strict=True)
    )
    if inconclusive:  # a failed control voids a row that would hold; a row that fails, fails on its own
        if holds_eff == "true":
            holds_eff, note_eff = "inconclusive", f"inconclusive: {inconclusive}; {note}"
        if holds_pap == "true":
            holds_pap, note_pap = "inconclusive", f"inconclusive: {inconclusive}; {note_pap}"
    suffix = ", max over cells" if many else ""
    return [
        _row(
            f"{cid}-effect",
            model,
            f"{metric} [effect TOST p{suffix}]",
            p_max,
            eff_thr + (" (all)" if many else ""),
            holds_eff,
            note_eff,
        ),
        _row(
            f"{cid}-paper",
            model,
            f"{metric} [|d|{suffix}]",
            d_max,
            f"|d| < {bound:g}" + (" (all)" if many else ""),
            holds_pap,
            note_pap,
        ),
    ]


def claims_rows(
    t: Mapping[str, pd.DataFrame],
    *,
    steer_layers: Mapping[str, int],
    delta: float,
    tost_alpha: float,
    target_d: float,
    max_ppl_ratio: float,
    cov_threshold: float,
    jac_threshold: float,
    bound: float = 0.2,
    family_dims: Mapping[tuple[str, str], Mapping[str, int]] | None = None,
) -> list[Claim]:
    """All B rows from the tables ``t`` (keys ``t1`` … ``t9`` of :data:`steerlimits.paperb.TABLE_FILES`, and ``t10``
    for B13 where present); ``steer_layers`` maps model -> the layer called L/2 in B10; ``family_dims`` maps
    (model, trait) -> family -> dim(subspace ∩ v⊥) as the pools recorded it (a family of dimension 0 has no rows
    in the tables at all, and its rows read ``na`` like those of dimension 1)."""
    t1, t2, t3, t4, t5, t6, t7, t8, t9 = (t[k] for k in ("t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"))
    out: list[Claim] = []
    for (model, trait), g1 in t1.groupby(["model", "trait"], sort=False):
        model, trait = str(model), str(trait)

        def cells(tab: pd.DataFrame, model: str = model, trait: str = trait, **eq: Any) -> pd.DataFrame:
            m = (tab["model"] == model) & (tab["trait"] == trait)
            for k, val in eq.items():
                m &= tab[k] == val
            return tab[m]

        scorer = (
            f"{g1['scorer'].iloc[0]} (offline substitute for {g1['substitute_for'].iloc[0]})"
            if "scorer" in g1 and str(g1["substitute_for"].iloc[0]) not in ("", "nan", "None")
            else str(g1["scorer"].iloc[0])
            if "scorer" in g1
            else "unknown"
        )
        # ---- B0 on the evaluation stems at the calibrated alpha
        v_row = cells(t1, condition="v")
        d0 = float(v_row["cohens_d"].iloc[0]) if len(v_row) else math.nan
        ppl = float(v_row["ppl_ratio"].iloc[0]) if len(v_row) and "ppl_ratio" in v_row else math.nan
        cal = cells(t8, chosen=True) if "chosen" in t8 else t8.iloc[0:0]
        paper = cells(t8, paper_setting=True) if "paper_setting" in t8 else t8.iloc[0:0]
        paper = paper[paper["method"] == paper["method"].iloc[0]] if len(paper) else paper
        cal_ok = bool(cal["b0_calibration"].iloc[0]) if len(cal) and "b0_calibration" in cal else False
        ok = check(d0, ">=", target_d) == "true" and check(ppl, "<=", max_ppl_ratio) == "true" and cal_ok
        alpha = float(v_row["alpha"].iloc[0]) if len(v_row) and "alpha" in v_row else math.nan
        cal_note = (
            f"calibration stems: d = {float(cal['cohens_d'].iloc[0]):.2f}, perplexity ratio "
            f"{float(cal['ppl_ratio'].iloc[0]):.2f}, B0 there {bool(cal['b0_calibration'].iloc[0])}"
            if len(cal)
            else "no calibration row"
        )
        paper_note = (
            f"paper's setting alpha = {float(paper['alpha'].iloc[0]):g} ({paper['method'].iloc[0]}): "
            f"d = {float(paper['cohens_d'].iloc[0]):.2f}, perplexity ratio "
            f"{float(paper['ppl_ratio'].iloc[0]):.2f}"
            if len(paper)
            else ""
        )
        ci = (
            f"95% CI [{float(v_row['d_ci_low'].iloc[0]):.2f}, {float(v_row['d_ci_high'].iloc[0]):.2f}]"
            if len(v_row)
            else ""
        )
        reading = f" ({cal['method'].iloc[0]})" if len(cal) else ""
        out.append(
            _row(
                "B0",
                model,
                f"{trait}: d(alpha v, 0) at the calibrated alpha = {alpha:.4g}{reading}, evaluation stems",
                d0,
                f">= {target_d:g} and perplexity ratio <= {max_ppl_ratio:g}",
                "true" if ok else "false",
                ("" if cal_ok else "no alpha qualified on the calibration stems (figure B-F9); ")
                + f"d {ci}; perplexity ratio {ppl:.2f}; n = {int(v_row['n'].iloc[0]) if len(v_row) else 0} "
                f"stems; {cal_note}; {paper_note}; scorer {scorer}",
            )
        )
        na = "" if ok else "B0 failed (steering does not work here at a fluent alpha; figure B-F9)"

        dims = dict((family_dims or {}).get((model, trait), {}))

        def dim_skip(fam: str, dims: Mapping[str, int] = dims) -> str:
            r = cells(t1, condition=f"v+u[{fam}]")
            dim = float(r["subspace_dim"].iloc[0]) if len(r) and "subspace_dim" in r else dims.get(fam, math.nan)
            if not math.isnan(dim) and dim < 2:
                return f"dim({fam} subspace ∩ v⊥) = {int(dim)} < 2: no independent draws"
            return ""

        eq: dict[str, Any] = dict(bound=bound, tost_alpha=tost_alpha, delta=delta)
        # ---- B1, B2 random_orth
        ro = cells(t1, condition="v+u[random_orth]")
        eff = float(ro["efficacy"].iloc[0]) if len(ro) else math.nan
        ci_e = (
            f"95% CI [{ro['eff_ci_low'].iloc[0]:.2f}, {ro['eff_ci_high'].iloc[0]:.2f}], n = "
            f"{int(ro['n'].iloc[0])} stems"
            if len(ro)
            else "unavailable"
        )
        out.append(
            _row(
                "B1",
                model,
                f"{trait}: efficacy, random_orth",
                eff,
                ">= 0.95",
                check(eff, ">=", 0.95) if ok else "na",
                ci_e if ok else f"na: {na}; {ci_e}",
            )
        )
        out += _equiv("B2", model, f"{trait}: v+u vs v, random_orth", ro, skip=na or dim_skip("random_orth"), **eq)
        # ---- B4 before B3 (its control)
        act = cells(t1, condition="v+u[active]")
        e_act = float(act["efficacy"].iloc[0]) if len(act) else math.nan
        d_act = abs(float(act["cohens_d"].iloc[0])) if len(act) else math.nan
        moved = (not math.isnan(e_act) and not (1 - delta <= e_act <= 1 + delta)) or (d_act >= 0.5)
        b4 = ("true" if moved else "false") if ok and len(act) else ("na" if not ok else "false")
        out.append(
            _row(
                "B4",
                model,
                f"{trait}: efficacy of v+u, active (top-k Jacobian directions)",
                e_act,
                f"outside [{1 - delta:g}, {1 + delta:g}] or |d| >= 0.5",
                b4,
                (f"na: {na}; " if not ok else "")
                + (
                    f"efficacy 95% CI [{act['eff_ci_low'].iloc[0]:.2f}, {act['eff_ci_high'].iloc[0]:.2f}], "
                    f"|d| = {d_act:.2f}, effect TOST p = {act['effect_tost_p'].iloc[0]:.3f}, n = "
                    f"{int(act['n'].iloc[0])} stems"
                    if len(act)
                    else "active family unavailable"
                ),
            )
        )
        for fam in ("null_jac", "null_cov"):
            out += _equiv(
                "B3",
                model,
                f"{trait}: v+u vs v, {fam}",
                cells(t1, condition=f"v+u[{fam}]"),
                skip=na or dim_skip(fam),
                inconclusive=""
                if b4 == "true"
                else "B4 failed: the active control was also inert, so inertness here is not informative",
                **eq,
            )
        # ---- B5 alpha sweep, B6 environments
        sweep = cells(t2, seed="pooled")
        pos = sweep[sweep["alpha_multiple"] > 0] if len(sweep) else sweep
        out += _equiv(
            "B5",
            model,
            f"{trait}: alpha(v+u) vs alpha v, every alpha > 0",
            pos,
            skip=na,
            extra=f"; alpha multiples {sorted(float(a) for a in pos['alpha_multiple'])}" if len(pos) else "",
            **eq,
        )
        out += _equiv("B6", model, f"{trait}: v+u vs v per environment", cells(t3, seed="pooled"), skip=na, **eq)
        # ---- B7 logits
        for fam in ("null_jac", "null_cov"):
            h = cells(t4, condition=f"v+u[{fam}]")
            ratio = float(h["ratio_to_random"].iloc[0]) if len(h) else math.nan
            kl = float(h["kl_ratio_to_random"].iloc[0]) if len(h) and "kl_ratio_to_random" in h else math.nan
            holds = "true" if check(ratio, "<", 1.0) == "true" and check(kl, "<", 1.0) == "true" else "false"
            dim0 = not len(h) and dims.get(fam) == 0  # no direction of the family orthogonal to v: nothing to test
            out.append(
                _row(
                    "B7",
                    model,
                    f"{trait}: ||z(v)-z(v+u)|| / ||z(v)-z(v+r)||, {fam}",
                    ratio,
                    "< 1 (and the same for KL)",
                    "na" if not ok or dim0 else holds,
                    (f"na: {na}; " if not ok else f"na: dim({fam} subspace ∩ v⊥) = 0; " if dim0 else "")
                    + (
                        f"KL ratio {kl:.3f}; {int(h['n_prefixes'].iloc[0])} evaluation prefixes, "
                        f"{int(h['n'].iloc[0])} (prefix, u)"
                        if len(h)
                        else "family unavailable"
                    ),
                )
            )
        # ---- B8 PCA, B9 combinations
        out += _equiv(
            "B8", model, f"{trait}: v2_pca vs v1_mean_diff, norm-matched", cells(t5, condition="v2_pca"), skip=na, **eq
        )
        b = (
            t6[(t6["model"] == model) & (t6["trait"] == trait) & (t6["part"] == "b") & (t6["draw"] == -1)]
            if "part" in t6
            else t6.iloc[0:0]
        )
        # families too small for independent draws were skipped by the plan, so they have no rows here: add them
        small = {f for f in ("null_jac", "null_cov") if dims.get(f, math.inf) < 2}
        for fam in sorted(set(b["family"]) | small) or ["null_jac"]:
            bf = b[(b["family"] == fam) & (b["k"] >= 2)]
            out += _equiv(
                "B9",
                model,
                f"{trait}: v+sum c_j u_j vs v, {fam}, every k >= 2",
                bf,
                skip=na or dim_skip(fam),
                extra=f"; k evaluated: {sorted(int(k) for k in bf['k'])} (larger k exceed the dimension)"
                if len(bf)
                else "",
                **eq,
            )
        # ---- B11 where v lives: beyond norm-matched random directions in the covariance's low-variance tail
        geo = cells(t9)
        tail = geo[geo["estimator"].str.startswith("covariance lower half")] if len(geo) else geo
        val = float(tail["value"].iloc[0]) if len(tail) else math.nan
        hi = float(tail["random_hi"].iloc[0]) if len(tail) else math.nan
        parts = [
            f"{r.estimator}: {r.value:.3f} (random {r.random_mean:.3f} [{r.random_lo:.3f}, {r.random_hi:.3f}])"
            for r in geo.itertuples()
        ]
        out.append(
            _row(
                "B11",
                model,
                f"{trait}: fraction of ||v||^2 in the covariance's lower half (low-variance tail)",
                val,
                "> 97.5 % quantile of random directions",
                check(val, ">", hi),
                f"random 97.5 % quantile {hi:.3f}; " + "; ".join(parts),
            )
        )
        # ---- B12 anti-steerability: fewer stems move against the steering than with it (one-sided sign test)
        fams = cells(t1)
        fams = fams[fams["condition"].isin(["v", "neg_v"]) | (fams["seed"] == "pooled")]
        against = float(v_row["against"].iloc[0]) if len(v_row) and "against" in v_row else math.nan
        n_st = int(v_row["n"].iloc[0]) if len(v_row) else 0
        p_sign = sign_test_p(against, n_st)
        per = "; ".join(f"{r.condition}: {r.against:.2f}" for r in fams.itertuples() if not pd.isna(r.against))
        out.append(
            _row(
                "B12",
                model,
                f"{trait}: fraction of stems whose paired score alpha v - 0 moves against the steering",
                against,
                f"sign test p < {tost_alpha:g} (against < 1/2)",
                check(p_sign, "<", tost_alpha),
                f"one-sided sign test p = {p_sign:.3g}, n = {n_st} stems; "
                f"per condition (vs alpha0; neg_v is expected to move against): {per}",
            )
        )
    # ---- B10 per model at L/2: both estimators, singular values relative to sigma_1
    for model, layer in steer_layers.items():
        spec = t7[(t7["model"] == model) & (t7["layer"] == layer)] if len(t7) else t7
        for method, thr, what in (
            ("covariance", cov_threshold, "covariance, outlier tokens kept (position 0 excluded)"),
            ("covariance_no_outliers", cov_threshold, "covariance, outlier tokens excluded"),
            ("jacobian", jac_threshold, "Jacobian, plain JᵀJ at 0"),
            ("jacobian_fisher", jac_threshold, "Jacobian, Fisher form at 0"),
        ):
            r = spec[(spec["method"] == method) & np.isclose(spec["threshold_rel_sigma1"], thr)] if len(spec) else spec
            nf = float(r["null_fraction"].iloc[0]) if len(r) else math.nan
            note = (
                f"layer {layer}, d = {int(r['d'].iloc[0])}, effective rank {int(r['effective_rank'].iloc[0])}, "
                f"participation ratio {float(r['participation_ratio'].iloc[0]):.1f}, "
                f"{int(r['n_samples'].iloc[0])} {'tokens' if method.startswith('cov') else 'prompts'}"
                if len(r)
                else "spectrum unavailable"
            )
            out.append(
                _row(
                    "B10",
                    model,
                    f"null fraction at L/2, {what}, sigma < {thr:g} sigma_1",
                    nf,
                    ">= 0.80",
                    check(nf, ">=", 0.80),
                    note,
                )
            )
    out.extend(_dtype_rows(t.get("t10"), tost_alpha))
    return out


def _dtype_rows(t10: pd.DataFrame | None, tost_alpha: float) -> list[Claim]:
    """B13 (project check, not a paper claim): bfloat16 generations score like float32 ones at the calibrated alpha
    (the paired effect-relative TOST of ``paperB_dtype_check``), so the bf16 pools can stand in for fp32 ones."""
    if t10 is None or not len(t10) or "effect_tost_p" not in t10:
        return []
    out = []
    for (model, trait), g in t10.groupby(["model", "trait"], sort=False):
        v = g[g["condition"] == "v"]
        if not len(v):
            continue
        r = v.iloc[0]
        p = float(r["effect_tost_p"])
        note = (
            f"{trait}: bf16 mean {float(r['mean_bfloat16']):.3g} vs fp32 {float(r['mean_float32']):.3g} "
            f"(n = {int(r['n'])} stems), margin ±{abs(float(r['margin'])):.3g} (0.2 x the fp32 effect "
            f"{float(r['effect_float32']):.3g}); identical continuations {float(r['identical_continuations']):.2f}. "
            "If false, the bf16 pools are not shown to match fp32: set paperB.dtype: float32 to rebuild them."
        )
        holds = "na" if not math.isfinite(p) or float(r["effect_float32"]) == 0 else check(p, "<", tost_alpha)
        out.append(
            _row(
                "B13",
                str(model),
                f"{trait}: bf16 vs fp32 generations, effect-relative TOST p (condition v)",
                p,
                f"< {tost_alpha:g}",
                holds,
                note,
            )
        )
    return out
