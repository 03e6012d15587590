"""Claims rows B0–B10 (spec B §8, decision D12) per model × trait, thresholds fixed by the spec.

Equivalence rows (B2, B3, B5, B6, B8, B9) appear twice: ``-paper`` (``|d̂| < 0.2``) and ``-strict`` (TOST
``p < 0.05`` at ``±0.2 s_p``), each with n and power in the note: for ``paper`` the probability that ``|d̂| < 0.2``
when the true d is 0 (normal approximation), for ``strict`` the simulated TOST power at a true d of 0. Rows that
need a working vector are ``na`` when B0 fails (the note says so); B10 is per model and does not depend on B0.
The trait (and family, where one applies) is named in ``metric``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from steerlimits.claims import Claim, check
from steerlimits.seeds import derive_seed
from steerlimits.stats import tost_power

__all__ = ["STATEMENTS", "claims_rows", "paper_power"]

BOUND, ALPHA_TOST = 0.2, 0.05
B0_MIN_D = 0.5  # precondition B0: d(v, 0) >= 0.5 (spec B §8)

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
}


def paper_power(n1: int, n2: int, bound: float = BOUND) -> float:
    """P(|d̂| < bound | true d = 0) with d̂ ≈ N(0, 1/n1 + 1/n2)."""
    if n1 < 2 or n2 < 2:
        return 0.0
    return float(2 * sps.norm.cdf(bound / math.sqrt(1 / n1 + 1 / n2)) - 1)


def _row(cid: str, model: str, metric: str, value: float, threshold: str, holds: str, note: str) -> Claim:
    return Claim("B", cid, model, STATEMENTS[cid.split("-")[0]], metric, float(value), threshold, holds,  # type: ignore[arg-type]
                 note)


def _equiv(cid: str, model: str, metric: str, cells: pd.DataFrame, ok: bool, seed: int,
           extra: str = "") -> list[Claim]:
    """Paper and strict rows for one or more comparison cells (``all`` when several)."""
    na = "" if ok else "na: B0 failed (steering does not work here); "
    if cells.empty:
        note, holds = na + "not computed (condition unavailable)", "false" if ok else "na"
        return [_row(f"{cid}-paper", model, f"{metric} [|d|]", math.nan, "|d| < 0.2", holds, note),
                _row(f"{cid}-strict", model, f"{metric} [TOST p]", math.nan, "TOST p < 0.05", holds, note)]
    n1, n2 = int(cells["n"].min()), int(cells["n_ref"].min())
    many = len(cells) > 1
    d_max, p_max = float(cells["cohens_d"].abs().max()), float(cells["tost_p"].max())
    cell = f"{len(cells)} cells, smallest n" if many else "n"
    pw_p, pw_s = paper_power(n1, n2), tost_power(n1, n2, bound_d=BOUND, seed=seed)
    rows = []
    for suffix, value, thr, holds, pw in (
            ("paper", d_max, "|d| < 0.2" + (" (all)" if many else ""), check(d_max, "<", BOUND), pw_p),
            ("strict", p_max, "TOST p < 0.05" + (" (all)" if many else ""), check(p_max, "<", ALPHA_TOST), pw_s)):
        note = f"{na}{cell}: n1={n1}, n2={n2}; power at true d=0: {pw:.2f}{extra}"
        stat = ("|d|" if suffix == "paper" else "TOST p") + (", max over cells" if many else "")
        rows.append(_row(f"{cid}-{suffix}", model, f"{metric} [{stat}]", value, thr, holds if ok else "na", note))
    return rows


def claims_rows(t1: pd.DataFrame, t2: pd.DataFrame, t3: pd.DataFrame, t4: pd.DataFrame, t5: pd.DataFrame,
                t6: pd.DataFrame, t7: pd.DataFrame, *, master_seed: int, steer_layers: dict[str, int]) -> list[Claim]:
    """All B rows; ``steer_layers`` maps model -> the layer called L/2 in B10 (the injection layer)."""
    out: list[Claim] = []
    for (model, trait), g1 in t1.groupby(["model", "trait"], sort=False):
        model, trait = str(model), str(trait)
        seed = derive_seed(master_seed, "paperB", "claims", model, trait)

        def cells(t: pd.DataFrame, **eq: Any) -> pd.DataFrame:
            m = (t["model"] == model) & (t["trait"] == trait)
            for k, val in eq.items():
                m &= t[k] == val
            return t[m]

        v_row = cells(t1, condition="v")
        scorer = (f"{g1['scorer'].iloc[0]} (offline substitute for {g1['substitute_for'].iloc[0]})"
                  if "scorer" in g1 and str(g1["substitute_for"].iloc[0]) not in ("", "nan", "None")
                  else str(g1["scorer"].iloc[0]) if "scorer" in g1 else "unknown")
        d0 = float(v_row["cohens_d"].iloc[0]) if len(v_row) else math.nan
        ok = check(d0, ">=", B0_MIN_D) == "true"
        na = "" if ok else "na: B0 failed (steering does not work here); "
        out.append(_row("B0", model, f"{trait}: d(v, 0)", d0, f">= {B0_MIN_D}", check(d0, ">=", B0_MIN_D),
                        f"n={int(v_row['n'].iloc[0]) if len(v_row) else 0} vs alpha0; scorer {scorer}"))
        ro = cells(t1, condition="v+u[random_orth]")
        eff = float(ro["efficacy"].iloc[0]) if len(ro) else math.nan
        ci = f"95% CI [{ro['eff_ci_low'].iloc[0]:.2f}, {ro['eff_ci_high'].iloc[0]:.2f}]" if len(ro) else "unavailable"
        out.append(_row("B1", model, f"{trait}: efficacy, random_orth", eff, ">= 0.95",
                        check(eff, ">=", 0.95) if ok else "na", na + ci))
        out += _equiv("B2", model, f"{trait}: d(v+u, v), random_orth", ro, ok, seed)
        for fam in ("null_jac", "null_cov"):
            out += _equiv("B3", model, f"{trait}: d(v+u, v), {fam}", cells(t1, condition=f"v+u[{fam}]"), ok, seed)
        act = cells(t1, condition="v+u[active]")
        d_act = abs(float(act["cohens_d"].iloc[0])) if len(act) else math.nan
        out.append(_row("B4", model, f"{trait}: |d(v+u, v)|, active", d_act, ">= 0.2",
                        check(d_act, ">=", 0.2) if ok else "na",
                        na + (f"n={int(act['n'].iloc[0])}" if len(act) else "active family unavailable")))
        sweep = cells(t2, seed="pooled")
        pos = sweep[sweep["alpha"] > 0]
        out += _equiv("B5", model, f"{trait}: d(alpha(v+u), alpha v), every alpha > 0", pos, ok, seed,
                      f"; alphas {sorted(float(a) for a in pos['alpha'])}" if len(pos) else "")
        out += _equiv("B6", model, f"{trait}: d(v+u, v) per environment", cells(t3, seed="pooled"), ok, seed)
        for fam in ("null_jac", "null_cov"):
            h = cells(t4, condition=f"v+u[{fam}]")
            ratio = float(h["ratio_to_random"].iloc[0]) if len(h) else math.nan
            out.append(_row("B7", model, f"{trait}: ||z(v)-z(v+u)|| / ||z(v)-z(v+r)||, {fam}", ratio, "< 1",
                            check(ratio, "<", 1.0) if ok else "na",
                            na + (f"{int(h['n_prefixes'].iloc[0])} prefixes, {int(h['n'].iloc[0])} (prefix, u)"
                                  if len(h) else "family unavailable")))
        out += _equiv("B8", model, f"{trait}: d(v2_pca, v1_mean_diff), norm-matched", cells(t5, condition="v2_pca"),
                      ok, seed)
        b = t6[(t6["model"] == model) & (t6["trait"] == trait) & (t6["part"] == "b") & (t6["draw"] == -1)] \
            if "part" in t6 else t6.iloc[0:0]
        fams = sorted(set(b["family"])) or ["null_jac"]
        for fam in fams:
            bf = b[b["family"] == fam]
            out += _equiv("B9", model, f"{trait}: d(v+sum c_j u_j, v), {fam}, every k", bf, ok, seed,
                          f"; k evaluated: {sorted(int(k) for k in bf['k'])} (others exceed the null dimension)"
                          if len(bf) else "")
    for model, layer in steer_layers.items():
        t = t7[(t7["model"] == model) & (t7["layer"] == layer)]
        for method, thr in (("covariance", 1e-2), ("jacobian", 1e-2)):
            r = t[(t["method"] == method) & np.isclose(t["threshold"], thr)]
            nf = float(r["null_fraction"].iloc[0]) if len(r) else math.nan
            label = "1e-2" if method == "covariance" else "1 %"
            note = (f"layer {layer}, d={int(r['d'].iloc[0])}, effective rank {int(r['effective_rank'].iloc[0])}, "
                    f"{int(r['n_samples'].iloc[0])} {'tokens' if method == 'covariance' else 'prompts'}"
                    if len(r) else "spectrum unavailable")
            out.append(_row("B10", model, f"null fraction at L/2, {method} {label}", nf, ">= 0.80",
                            check(nf, ">=", 0.80), note))
    return out
