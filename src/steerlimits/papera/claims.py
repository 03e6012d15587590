"""Claims A1–A12 (spec A §8, D12): one machine-checked row per claim × model × vector, thresholds fixed there.

Rows exist for every model × vector an experiment ran on (E3–E6 run for ``paperA.responses.vectors``, by
default refusal only). ``holds = "na"`` only under §8's stated condition (A7: natural refusal < 0.5) or for the
descriptive A12; a metric that could not be computed is ``"false"`` with the reason in ``note``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from steerlimits.claims import Claim, check, claims_frame

__all__ = ["paper_a_claims"]


def _row(cid: str, model: str, vector: str, statement: str, metric: str, value: float, op: str,
         threshold: float, note: str = "", holds: str | None = None, threshold_text: str | None = None) -> Claim:
    """One claim row; ``holds`` is ``value op threshold`` unless given (``na`` / a failed precondition)."""
    if holds is None:
        holds = check(float(value), op, float(threshold))
    return Claim(paper="A", claim_id=cid, model=model, statement=statement, metric=f"{vector}: {metric}",
                 value=float(value), threshold=threshold_text or f"{op} {threshold:g}",
                 holds=holds, note=note)  # type: ignore[arg-type]


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
        out.append(_row("A1", model, vector, "Natural prompts invert exactly",
                        "fraction of prompts recovered exactly (E1)", nat["exact_match"].mean(), "==", 1.0,
                        f"{int(nat['exact_match'].sum())}/{len(nat)} prompts"))
        out.append(_row("A2", model, vector, "Natural states reached to precision",
                        "max natural top-1 / tau_exact (t >= 1)", float((pn["top1"] / pn["tau"]).max()), "<=", 1.0,
                        "tau_exact = 10 x max noise floor of the prompt (float32, full vs cached pass)"))
        cs = _sel(ce, model=model, vector=vector, experiment="E1", condition="steered")
        cs = cs[cs["position"] >= 1] if len(cs) else cs
        if len(cs):
            out.append(_row("A3", model, vector, "Steered states have no preimage",
                            "fraction of certified positions (t >= 1) with minimum over V > tau_exact",
                            float(cs["min_gt_tau"].mean()), "==", 1.0,
                            f"{int(cs['min_gt_tau'].sum())}/{len(cs)} certified positions (bf16 screen, float32 "
                            "re-verification within the stored margin)", threshold_text="all"))
        else:
            out.append(_row("A3", model, vector, "Steered states have no preimage", "certified positions (t >= 1)",
                            math.nan, "==", 1.0, "no certified position", holds="false", threshold_text="all"))
        nat_mean = float(pn["top1"].mean())
        ratio = float(ps["top1"].mean()) / nat_mean if nat_mean > 0 else math.inf
        out.append(_row("A4", model, vector, "Steered gap far above floor",
                        "mean steered top-1 / mean natural top-1 (t >= 1)", ratio, ">=", 100.0,
                        f"mean natural top-1 {nat_mean:.3g} (0: the float32 states are bit-identical); mean steered "
                        f"top-1 / tau_exact {float((ps['top1'] / ps['tau']).mean()):.3g}"))
        out.append(_row("A5", model, vector, "Gap ≈ displacement [paper]",
                        "median_t steered top-1 / ||Δh_t|| (t >= 1)", float((ps["top1"] / ps["delta_h"]).median()),
                        ">=", 0.9, "the steered search is warm-started with the prompt's own token, so <= 1 "
                                   "up to float error"))
        e2 = _sel(pr, model=model, vector=vector, experiment="E2")
        p2 = _sel(po, model=model, vector=vector, experiment="E2")
        if len(p2):
            per = p2[p2["position"] >= 1].groupby("alpha")["top1"].mean()
            rho = float(spearmanr(np.abs(per.index.to_numpy()), per.to_numpy()).statistic) if len(per) > 2 else math.nan
            out.append(_row("A6", model, vector, "Gap grows with |α|",
                            "Spearman rho(|alpha|, mean steered top-1) over E2 coefficients", rho, ">=", 0.9,
                            f"{len(per)} coefficients, {e2['prompt'].nunique()} prompts"))
        bh = _sel(t.get("behaviour"), model=model, vector=vector)
        if len(bh):
            succ = bh.groupby("condition")["attack_success"].mean()
            natural_refusal = float(bh[bh["condition"] == "baseline"]["refusal"].mean())
            value = float(succ.get("recovered", math.nan) - succ.get("steered", math.nan))
            na = natural_refusal < 0.5
            note = (f"natural refusal {natural_refusal:.2f} < 0.5: precondition fails" if na else
                    f"natural refusal {natural_refusal:.2f}") + (
                "" if bool(bh["refusal_trained"].iloc[0]) else "; model not refusal-trained")
            out.append(_row("A7", model, vector, "Recovered prompt lacks steered behaviour",
                            "attack success recovered - steered", value, "<=", -0.5, note,
                            holds="na" if na else None))
        e3 = _sel(t.get("e3"), model=model, vector=vector)
        if len(e3):
            m = e3.groupby("n_shots")["l2_response"].mean()
            value = float(m[m.index >= 1].min() / m.loc[0]) if 0 in m.index and (m.index >= 1).any() else math.nan
            out.append(_row("A8", model, vector, "Many-shot ICL does not close the gap",
                            "min_{N>=1} L2 / L2 at N=0 (response span, mean over prompts)", value, ">=", 0.5,
                            f"N up to {int(m.index.max())}"))
        e4 = _sel(t.get("e4"), model=model, vector=vector)
        if len(e4):
            e4m = e4[e4["method"] != "original"].groupby(["mode", "method"])[["l2_teacher_forced", "delta_h"]].mean()
            best = (e4m["l2_teacher_forced"] / e4m["delta_h"]).sort_values()
            out.append(_row("A9", model, vector, "Optimised/tuned prompts do not close it",
                            "best method's teacher-forced L2 / mean ||Δh|| (same positions)", float(best.iloc[0]),
                            ">=", 0.5, f"best: {'/'.join(best.index[0])}"))
        e5 = _sel(t.get("e5"), model=model, vector=vector)
        if len(e5):
            m = e5.groupby(["p", "kind"])["l2_per_token"].mean().unstack()
            p_best = int(m["soft"].idxmin())
            out.append(_row("A10", model, vector, "Projection loses the soft prefix's gain",
                            "L2 projected / soft at the best p", float(m.loc[p_best, "projected"] / m.loc[p_best, "soft"]),
                            ">", 1.0, f"best p = {p_best}"))
        e6 = _sel(t.get("e6"), model=model, vector=vector)
        if len(e6):
            tf = e6[e6["mode"] == "teacher_forced"].groupby("variant")[["l2_to_steered", "reference_gap"]].mean()
            r = (tf["l2_to_steered"] / tf["reference_gap"]).sort_values()
            out.append(_row("A11", model, vector, "Copying does not reproduce steered states",
                            "min over variants of L2(copy, steered ref) / reference gap (teacher forced)",
                            float(r.iloc[0]), ">=", 0.5, f"closest variant: {r.index[0]}"))
        e7 = _sel(t.get("e7"), model=model, vector=vector, set="test", span="user")
        if len(e7):
            out.append(_row("A12", model, vector, "Displacement vs prompt change",
                            "median over prompts of median_j cross / steer (user span, test prompts)",
                            float(e7["ratio"].median()), ">=", 0.0, "descriptive claim: no threshold", holds="na",
                            threshold_text="descriptive"))
    return claims_frame(out)
