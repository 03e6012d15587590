"""Claims A1–A12 (docs/paperA.md): one machine-checked row per claim × model × vector, thresholds fixed here.

Rows exist for every model × vector an experiment ran on (E3–E6 run for ``paperA.responses.vectors``, by
default refusal only). ``holds = "na"`` only under the stated preconditions (A7: natural refusal < 0.5; A10: the
soft prefix does not get below ‖Δh‖ although its positive control passed; with a failed control that row is
``inconclusive``) or for the descriptive A12; a metric that could not be computed is
``"false"`` with the reason in ``note``.

Black-box claims A8–A11 (revision 2): a method's negative result counts only if the same method, budget and
initialisation close at least half of the gap on a reachable target (its *positive control*,
``control_gap_closed >= 0.5``). A row reads ``false`` when the value misses the threshold (the gap was closed,
whatever the control says), ``true`` when it meets it with at least one validated method, and ``inconclusive``
when no method passed its control; the note lists every method's control and steered result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from steerlimits.claims import Claim, check, claims_frame

__all__ = ["CONTROL_PASS", "paper_a_claims"]

#: a positive control passes when the method closes at least this fraction of the gap on the reachable target
CONTROL_PASS = 0.5


def _row(
    cid: str,
    model: str,
    vector: str,
    statement: str,
    metric: str,
    value: float,
    op: str,
    threshold: float,
    note: str = "",
    holds: str | None = None,
    threshold_text: str | None = None,
) -> Claim:
    """One claim row; ``holds`` is ``value op threshold`` unless given (``na`` / a failed precondition)."""
    if holds is None:
        holds = check(float(value), op, float(threshold))
    return Claim(
        paper="A",
        claim_id=cid,
        model=model,
        statement=statement,
        metric=f"{vector}: {metric}",
        value=float(value),
        threshold=threshold_text or f"{op} {threshold:g}",
        holds=holds,
        note=note,
    )  # type: ignore[arg-type]


def _black_box(
    cid: str,
    model: str,
    vector: str,
    statement: str,
    metric: str,
    methods: list[tuple[str, float, float]],
    op: str,
    threshold: float,
    extra: str = "",
) -> Claim:
    """A8–A11: ``methods`` = ``(name, steered value, control gap closed)``; the value is the best (lowest)
    steered value among methods that passed their control (among all when none did). A method whose steered value
    is NaN (not computed) is listed but neither best nor closing; with none computed the row is ``false``."""
    computed = [m for m in methods if not math.isnan(m[1])]
    passed = [m for m in computed if m[2] >= CONTROL_PASS]
    pool = passed or computed
    name, value, _ = min(pool, key=lambda m: m[1]) if pool else ("none", math.nan, math.nan)
    overall = min((m[1] for m in computed), default=math.nan)
    listing = "; ".join(f"{n}: {v:.3g} (control closed {c:.2f})" for n, v, c in methods)
    if not computed:
        holds, why = "false", "not computed (no method has a steered value)"
    elif not check(overall, op, threshold) == "true":
        holds, why = "false", f"a method closes the gap ({overall:.3g})"
    elif passed:
        holds, why = "true", f"best validated method: {name}"
    else:
        holds, why = (
            "inconclusive",
            (
                f"positive control failed: no method closed {CONTROL_PASS:.0%} of the gap on a "
                "reachable target, so not closing it on the steered target says little"
            ),
        )
    return _row(
        cid,
        model,
        vector,
        statement,
        metric,
        value,
        op,
        threshold,
        f"{why}. {listing}{'. ' + extra if extra else ''}",
        holds=holds,
    )


def _sel(df: pd.DataFrame, **eq: object) -> pd.DataFrame:
    if df is None or not len(df):
        return pd.DataFrame()
    mask = np.ones(len(df), dtype=bool)
    for k, v in eq.items():
        mask &= (df[k] == v).to_numpy()
    return df[mask]


def paper_a_claims(t: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Claims from the per-model raw tables ``t``: prompts, positions, certificates, behaviour, e3, e4, e5, e6, e7
    (the concatenated per-model outputs)."""
    out: list[Claim] = []
    pr, po, ce = t["prompts"], t["positions"], t["certificates"]
    for (model, vector), _ in pr.groupby(["model", "vector"], sort=False):
        nat = _sel(pr, model=model, vector=vector, experiment="E1", condition="natural")
        pn = _sel(po, model=model, vector=vector, experiment="E1", condition="natural")
        ps = _sel(po, model=model, vector=vector, experiment="E1", condition="steered")
        pn, ps = pn[pn["position"] >= 1], ps[ps["position"] >= 1]
        out.append(
            _row(
                "A1",
                model,
                vector,
                "Natural prompts invert exactly",
                "fraction of prompts recovered exactly (E1)",
                nat["exact_match"].mean(),
                "==",
                1.0,
                f"{int(nat['exact_match'].sum())}/{len(nat)} prompts",
            )
        )
        out.append(
            _row(
                "A2",
                model,
                vector,
                "Natural states reached to precision",
                "max natural top-1 / tau_exact (t >= 1)",
                float((pn["top1"] / pn["tau"]).max()),
                "<=",
                1.0,
                "tau_exact = 10 x max noise floor of the prompt (float32, full vs cached pass)",
            )
        )
        cs = _sel(ce, model=model, vector=vector, experiment="E1", condition="steered")
        cs = cs[cs["position"] >= 1] if len(cs) else cs
        a3 = "No single-token substitution at t, given the recovered prefix, reaches the steered state within tau_exact"
        if len(cs):
            screen = str(cs["screen"].iloc[0]) if "screen" in cs else "bfloat16"
            how = (
                "float32 sweeps"
                if screen == "float32"
                else f"bf16 screen with float32 re-verification inside a relative margin = safety x calibration "
                f"relative error (safety {cs['safety'].max():.3g})"
            )
            cc = _sel(ce, model=model)
            cc = cc[cc["cross_checked"].astype(bool)] if len(cc) and "cross_checked" in cc else pd.DataFrame()
            check_note = (
                f"; cross-check: {cc[['prompt', 'position']].drop_duplicates().shape[0]} sweep(s) of this "
                f"model also run entirely in float32, max relative error / calibration relative error "
                f"{float((cc['full_error'] / cc['calib_error']).max()):.3g}, screened top-k equal to "
                f"float32 top-k: {bool(cc['screen_topk_ok'].astype(bool).all())}"
                if len(cc)
                else ""
            )
            n_swapped = int(cs["swapped_from"].notna().sum()) if "swapped_from" in cs else 0
            if n_swapped:
                check_note += (
                    f"; {n_swapped} position(s) moved from a scheduled position whose bf16 screen could exclude no "
                    "token (relative margin >= 1, next to the attention sink)"
                )
            out.append(
                _row(
                    "A3",
                    model,
                    vector,
                    a3,
                    "fraction of certified positions (t >= 1) with minimum over V > tau_exact",
                    float(cs["min_gt_tau"].mean()),
                    "==",
                    1.0,
                    f"{int(cs['min_gt_tau'].sum())}/{len(cs)} certified positions over "
                    f"{cs['prompt'].nunique()} prompt(s); per position and given the recovered prefix, not "
                    f"over all sequences; {how}{check_note}",
                    threshold_text="all",
                )
            )
        else:
            out.append(
                _row(
                    "A3",
                    model,
                    vector,
                    a3,
                    "certified positions (t >= 1)",
                    math.nan,
                    "==",
                    1.0,
                    "no certified position",
                    holds="false",
                    threshold_text="all",
                )
            )
        nat_mean = float(pn["top1"].mean())
        # a natural mean of exactly 0 (bit-identical states) makes the ratio infinite; no natural rows make it NaN
        ratio = float(ps["top1"].mean()) / nat_mean if nat_mean > 0 else math.inf if nat_mean == 0 else math.nan
        out.append(
            _row(
                "A4",
                model,
                vector,
                "Steered gap far above floor",
                "mean steered top-1 / mean natural top-1 (t >= 1)",
                ratio,
                ">=",
                100.0,
                f"mean natural top-1 {nat_mean:.3g} (0: the float32 states are bit-identical); mean steered "
                f"top-1 / tau_exact {float((ps['top1'] / ps['tau']).mean()):.3g}",
            )
        )
        warm = float((ps["top1"] / ps["delta_h"]).median())
        pc = _sel(po, model=model, vector=vector, experiment="E1", condition="steered_cold")
        pc = pc[pc["position"] >= 1] if len(pc) else pc
        if len(pc):
            cold = float((pc["top1"] / pc["delta_h"]).median())
            found_x = float((pc["chosen_token"] == pc["true_token"]).mean())
            out.append(
                _row(
                    "A5",
                    model,
                    vector,
                    "Gap ≈ displacement [paper]",
                    "min(warm, cold) of median_t steered top-1 / ||Δh_t|| (t >= 1)",
                    math.nan if math.isnan(warm) or math.isnan(cold) else min(warm, cold),
                    ">=",
                    0.9,
                    f"warm start {warm:.3g} (the prompt's own token is tried first, so <= 1 up to float "
                    f"error); cold start {cold:.3g} on {pc['prompt'].nunique()} prompts (no warm start; "
                    f"the cold search chose x's own token at {found_x:.0%} of positions)",
                )
            )
        else:
            out.append(
                _row(
                    "A5",
                    model,
                    vector,
                    "Gap ≈ displacement [paper]",
                    "median_t steered top-1 / ||Δh_t|| (t >= 1), warm start only",
                    warm,
                    ">=",
                    0.9,
                    "no cold-start run: the warm start makes the value <= 1 by construction",
                    holds="inconclusive" if warm >= 0.9 else "false",  # NaN: not shown
                )
            )
        e2 = _sel(pr, model=model, vector=vector, experiment="E2")
        p2 = _sel(po, model=model, vector=vector, experiment="E2")
        if len(p2):
            per = p2[p2["position"] >= 1].groupby("alpha")["top1"].mean()
            rho = float(spearmanr(np.abs(per.index.to_numpy()), per.to_numpy()).statistic) if len(per) > 2 else math.nan
            out.append(
                _row(
                    "A6",
                    model,
                    vector,
                    "Gap grows with |α|",
                    "Spearman rho(|alpha|, mean steered top-1) over E2 coefficients",
                    rho,
                    ">=",
                    0.9,
                    f"{len(per)} coefficients, {e2['prompt'].nunique()} prompts; with the warm start the "
                    "steered "
                    "top-1 equals ||Δh|| = |α|·(displacement per unit α), which is linear in |α|, so ρ = 1 "
                    "follows from A5 and is not separate evidence",
                )
            )
        bh = _sel(t.get("behaviour"), model=model, vector=vector)
        if len(bh):
            succ = bh.groupby("condition")["attack_success"].mean()
            natural_refusal = float(bh[bh["condition"] == "baseline"]["refusal"].mean())
            value = float(succ.get("recovered", math.nan) - succ.get("steered", math.nan))
            na = not natural_refusal >= 0.5  # NaN (no baseline rows): the precondition is not shown either
            note = (
                f"natural refusal {natural_refusal:.2f} < 0.5: precondition fails"
                if natural_refusal < 0.5
                else "no baseline rows: natural refusal unknown, precondition not shown"
                if na
                else f"natural refusal {natural_refusal:.2f}"
            ) + ("" if bool(bh["refusal_trained"].iloc[0]) else "; model not refusal-trained")
            out.append(
                _row(
                    "A7",
                    model,
                    vector,
                    "Recovered prompt lacks steered behaviour",
                    "attack success recovered - steered",
                    value,
                    "<=",
                    -0.5,
                    note,
                    holds="na" if na else None,
                )
            )
        e3 = _sel(t.get("e3"), model=model, vector=vector)
        if len(e3):
            kind = e3["kind"] if "kind" in e3 else pd.Series("icl", index=e3.index)
            m = e3.groupby([kind, "n_shots"])["l2_response"].mean()
            d0 = float(m.loc[("none", 0)]) if ("none", 0) in m.index else math.nan
            icl = m.loc["icl"] if "icl" in m.index.get_level_values(0) else pd.Series(dtype=float)
            value = float(icl.min() / d0) if len(icl) and d0 > 0 else math.nan
            if "control_gap_closed_response" in e3:
                ctrl = e3[kind == "icl"].groupby("n_shots")["control_gap_closed_response"].mean()
                neu = m.loc["neutral"] / d0 if "neutral" in m.index.get_level_values(0) else pd.Series(dtype=float)
                extra = (
                    f"N up to {int(icl.index.max())}; control: the reachable target is x's natural states after N "
                    f"neutral demonstrations of the same lengths (best N={int(ctrl.idxmax())}); neutral "
                    f"demonstrations alone give min_N L2/L2(N=0) = {float(neu.min()):.3g}, so most of the "
                    "distance is the demonstrations moving x at all, not towards the steered state"
                )
                row = _black_box(
                    "A8",
                    model,
                    vector,
                    "Many-shot ICL does not close the gap",
                    "min_{N>=1} L2 / L2 at N=0 (response span, mean over prompts)",
                    [("many-shot ICL", value, float(ctrl.max()))],
                    ">=",
                    0.5,
                    extra,
                )
                if "demos_degenerate" in e3 and bool(e3["demos_degenerate"].any()):
                    distinct = float(e3.loc[kind == "icl", "demo_distinct"].median())
                    row = replace(
                        row,
                        holds="na",
                        note=(
                            f"precondition fails: the demonstrations written under refusal ablation are degenerate "
                            f"(median distinct-token fraction {distinct:.3g}, below paperA.e3.min_demo_distinct), "
                            f"so this is not the paper's attack. {row.note}"
                        ),
                    )
                out.append(row)
            else:
                out.append(
                    _row(
                        "A8",
                        model,
                        vector,
                        "Many-shot ICL does not close the gap",
                        "min_{N>=1} L2 / L2 at N=0 (response span, mean over prompts)",
                        value,
                        ">=",
                        0.5,
                        "no positive control was run",
                        holds="inconclusive" if value >= 0.5 else "false",  # NaN: not shown
                    )
                )
        e4 = _sel(t.get("e4"), model=model, vector=vector)
        if len(e4) and "target" in e4:
            tok = e4[e4["method"].isin(["gcg", "tuned_projected"])]
            methods = []
            for (mode, method), g in tok.groupby(["mode", "method"], sort=True):
                st, c = g[g["target"] == "steered"], g[g["target"] == "control"]
                methods.append(
                    (
                        f"{mode}/{method}",
                        float(st["ratio_to_delta_h"].mean()),
                        float(c["gap_closed"].mean()) if len(c) else -math.inf,
                    )
                )
            if methods:
                soft = e4[(e4["method"] == "tuned_soft") & (e4["target"] == "steered")]
                extra = (
                    f"token prompts only (GCG, projected tuning); soft prompts (not text) reach "
                    f"{float(soft['ratio_to_delta_h'].min()):.3g} x ||Δh||"
                    if len(soft)
                    else ""
                )
                out.append(
                    _black_box(
                        "A9",
                        model,
                        vector,
                        "Optimised/tuned prompts do not close it",
                        "best validated method's teacher-forced L2 / mean ||Δh|| (same positions)",
                        methods,
                        ">=",
                        0.5,
                        extra,
                    )
                )
        e5 = _sel(t.get("e5"), model=model, vector=vector)
        if len(e5) and "target" in e5:
            soft = e5[e5["kind"] == "soft"]
            ms = soft.groupby(["target", "p"])["l2_per_token"].mean()
            p_best = int(ms.loc["steered"].idxmin())
            l2_soft = float(ms.loc[("steered", p_best)])
            dh = float(soft["delta_h"].mean())
            proj = e5[(e5["kind"] == "projected") & (e5["target"] == "steered") & (e5["p"] == p_best)]
            value = float(proj["l2_per_token"].mean()) / l2_soft
            ctrl = float(soft[(soft["target"] == "control") & (soft["p"] == p_best)]["gap_closed"].mean())
            statement, metric = "Projection loses the soft prefix's gain", "L2 projected / soft at the best p"
            if l2_soft >= dh:  # no gain to lose: "na" only if the optimiser is shown to work (control passed)
                failed = not ctrl >= CONTROL_PASS
                out.append(
                    _row(
                        "A10",
                        model,
                        vector,
                        statement,
                        metric,
                        value,
                        ">",
                        1.0,
                        f"best p = {p_best}: soft {l2_soft:.4g} >= ||Δh|| {dh:.4g}, so there is no gain to "
                        f"lose (precondition fails); control gap closed {ctrl:.2f}"
                        + (
                            "; positive control failed, so the soft prefix not getting below ||Δh|| may be the "
                            "optimiser's failure"
                            if failed
                            else ""
                        ),
                        holds="inconclusive" if failed else "na",
                    )
                )
            else:
                c = _black_box(
                    "A10",
                    model,
                    vector,
                    statement,
                    metric,
                    [("soft prefix", value, ctrl)],
                    ">",
                    1.0,
                    f"best p = {p_best}: soft {l2_soft:.4g} < ||Δh|| {dh:.4g}",
                )
                out.append(c)
        e6 = _sel(t.get("e6"), model=model, vector=vector)
        if len(e6):
            tf = e6[e6["mode"] == "teacher_forced"]
            methods = []
            for variant, g in tf.groupby("variant", sort=True):
                ratio = float(g["l2_to_steered"].mean() / g["reference_gap"].mean())
                ctrl = float(g["control_gap_closed"].mean()) if "control_gap_closed" in g else -math.inf
                methods.append((str(variant), ratio, ctrl))
            out.append(
                _black_box(
                    "A11",
                    model,
                    vector,
                    "Copying does not reproduce steered states",
                    "min over validated variants of L2(copy, steered ref) / reference gap (teacher forced)",
                    methods,
                    ">=",
                    0.5,
                    "control: the natural reference (reachable by x) vs y without context",
                )
            )
        e7 = _sel(t.get("e7"), model=model, vector=vector, set="test", span="user")
        if len(e7):
            out.append(
                _row(
                    "A12",
                    model,
                    vector,
                    "Displacement vs prompt change",
                    "median over prompts of median_j cross / steer (user span, test prompts)",
                    float(e7["ratio"].median()),
                    ">=",
                    0.0,
                    "descriptive claim: no threshold",
                    holds="na",
                    threshold_text="descriptive",
                )
            )
    return claims_frame(out)
