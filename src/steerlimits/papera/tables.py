"""Paper A tables (docs/paperA.md: A-T1 … A-T5, the E2/E3 tables and the reconstruction behaviour).

Summaries exclude position 0 (the attention sink, ~100× larger states) unless a column says
otherwise; standard deviations are over (prompt, position) pairs for distances and over prompts for per-prompt
means.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "behaviour_table",
    "controls_table",
    "crosscheck_table",
    "e2_table",
    "e3_table",
    "e4_table",
    "e5_table",
    "e6_table",
    "e7_table",
    "inversion_summary",
    "markdown",
]

KEYS = ["model", "vector", "alpha", "condition"]


def _std(x: pd.Series) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def inversion_summary(prompts: pd.DataFrame, positions: pd.DataFrame, certificates: pd.DataFrame) -> pd.DataFrame:
    """A-T1: one row per model × vector × coefficient × condition of E1."""
    pr, po = prompts[prompts["experiment"] == "E1"], positions[positions["experiment"] == "E1"]
    a = pr.groupby(KEYS, sort=False).agg(
        n_prompts=("prompt", "size"),
        exact_match=("exact_match", "mean"),
        token_accuracy=("token_accuracy", "mean"),
        noise_floor=("max_floor", "mean"),
        tau_exact=("tau", "mean"),
        tau0=("tau0", "mean"),
        mse_recovered_to_steered=("mse_recovered_to_target", "mean"),
        mse_recovered_to_natural=("mse_recovered_to_natural", "mean"),
        n_candidates=("n_candidates", "first"),
        layer=("layer", "first"),
        refusal_trained=("refusal_trained", "first"),
    )
    work = po["n_verified"] + (po["n_prechecked"] if "n_prechecked" in po else 0)  # float32 evaluations (older
    # tables counted the natural precheck apart, in n_prechecked)
    po = po.assign(frac=work / po["vocab_size"])
    po1 = po[po["position"] >= 1]
    b = (
        po1.assign(ratio=po1["top1"] / po1["tau"])
        .groupby(KEYS)
        .agg(
            top1_mean=("top1", "mean"),
            top1_std=("top1", "std"),
            top2_mean=("top2", "mean"),
            top2_std=("top2", "std"),
            delta_h_per_token=("delta_h", "mean"),
            max_top1_over_tau=("ratio", "max"),
            vocab_fraction_verified=("frac", "mean"),
        )
    )
    c = (
        po.assign(pos0=po["top1"].where(po["position"] == 0))
        .groupby(KEYS)
        .agg(top1_pos0_mean=("pos0", "mean"), vocab_fraction_verified_incl_pos0=("frac", "mean"))
    )
    out = a.join(b).join(c)
    if len(certificates):
        ce = certificates[(certificates["experiment"] == "E1") & (certificates["position"] >= 1)]
        aggs = {
            "certified_positions": ("position", "size"),
            "certified_above_tau": ("min_gt_tau", "sum"),
            "certified_argmin_is_x": ("argmin_is_x", "sum"),
            "search_found_certified_min": ("search_found_min", "sum"),
            "certified_top2_mean": ("second_dist", "mean"),
            "cross_checked_positions": ("cross_checked", "sum"),
        }
        d = ce.groupby(KEYS).agg(**{k: v for k, v in aggs.items() if v[0] in ce})
        out = out.join(d)
    for col in (
        "certified_positions",
        "certified_above_tau",
        "certified_argmin_is_x",
        "search_found_certified_min",
        "cross_checked_positions",
    ):
        out[col] = out[col].fillna(0).astype(int) if col in out else 0
    if "certified_top2_mean" not in out:
        out["certified_top2_mean"] = np.nan
    out = out.reset_index().rename(columns={"alpha": "coefficient"})
    out.loc[out["condition"] == "natural", "mse_recovered_to_steered"] = np.nan
    out["top2_source"] = np.where(
        out["condition"] == "natural",
        "precheck runner-up (32 decoder-ordered tokens verified), not certified",
        "runner-up among " + out["n_candidates"].astype(int).astype(str) + " verified candidates",
    )

    first = [
        "model",
        "vector",
        "coefficient",
        "condition",
        "n_prompts",
        "exact_match",
        "token_accuracy",
        "top1_mean",
        "top1_std",
        "top2_mean",
        "top2_std",
        "top2_source",
        "delta_h_per_token",
        "noise_floor",
        "tau_exact",
        "certified_positions",
        "certified_top2_mean",
    ]
    return out[first + [c for c in out.columns if c not in first]]


def e2_table(prompts: pd.DataFrame, positions: pd.DataFrame) -> pd.DataFrame:
    """E2: per model × vector × α, mean ± std over prompts of per-token ‖steered − natural‖ and ‖recovered −
    natural‖, top-1 over (prompt, position), exact matches."""
    pr, po = prompts[prompts["experiment"] == "E2"], positions[positions["experiment"] == "E2"]
    po1 = po[po["position"] >= 1]
    rows = []
    for (model, vector, alpha), g in pr.groupby(["model", "vector", "alpha"], sort=True):
        p = po1[(po1["model"] == model) & (po1["vector"] == vector) & (po1["alpha"] == alpha)]
        rows.append(
            {
                "model": model,
                "vector": vector,
                "alpha": alpha,
                "abs_alpha": abs(alpha),
                "n_prompts": len(g),
                "n_candidates": int(g["n_candidates"].iloc[0]),
                "steered_minus_natural_mean": g["delta_h_per_token"].mean(),
                "steered_minus_natural_std": _std(g["delta_h_per_token"]),
                "recovered_minus_natural_mean": g["recovered_to_natural_per_token"].mean(),
                "recovered_minus_natural_std": _std(g["recovered_to_natural_per_token"]),
                "top1_mean": p["top1"].mean(),
                "top1_std": _std(p["top1"]),
                "exact_match": g["exact_match"].mean(),
                "token_accuracy": g["token_accuracy"].mean(),
            }
        )
    return pd.DataFrame(rows)


def _means(df: pd.DataFrame, keys: list[str], cols: list[str]) -> pd.DataFrame:
    out = df.groupby(keys, sort=True)[cols].mean().reset_index()
    out.insert(len(keys), "n_prompts", df.groupby(keys, sort=True)["prompt"].nunique().to_numpy())
    return out


def e3_table(summary: pd.DataFrame) -> pd.DataFrame:
    """E3 per model × vector × N × demonstration kind (``none`` at N = 0, ``icl``, ``neutral``)."""
    cols = [c for c in summary.columns if c.startswith(("l2_", "cos_", "moved_", "control_"))]
    return _means(summary, ["model", "vector", "n_shots", "kind"], cols + ["attack_success", "n_demo_tokens"])


def e4_table(df: pd.DataFrame) -> pd.DataFrame:
    """A-T2: per model × vector × mode × target (steered / control) × method."""
    df = df.copy()
    for col in ("exact_match", "returned_init", "stopped_early"):
        if col in df:
            df[col] = df[col].astype(float)
    cols = [
        c
        for c in (
            "l2_teacher_forced",
            "l2_init",
            "gap_closed",
            "ratio_to_delta_h",
            "delta_h",
            "l2_teacher_forced_response",
            "l2_free_response",
            "delta_h_response",
            "exact_match",
            "token_overlap",
            "attack_success",
            "returned_init",
            "final_loss",
            "init_loss",
            "steps",
            "gcg_evaluated",
            "gcg_screened",
            "gcg_filtered",
            "stopped_early",
        )
        if c in df
    ]
    return _means(df, ["model", "vector", "mode", "target", "method"], cols)


def e5_table(df: pd.DataFrame) -> pd.DataFrame:
    """A-T3: per model × vector × target × p × kind."""
    df = df.copy()
    df["returned_init"] = pd.to_numeric(df.get("returned_init"), errors="coerce")
    cols = [
        c
        for c in (
            "best_mse",
            "l2_total",
            "l2_per_token",
            "l2_best_upto_p",
            "l2_init",
            "gap_closed",
            "delta_h",
            "nearest_dist_mean",
            "returned_init",
        )
        if c in df
    ]
    return _means(df, ["model", "vector", "target", "p", "kind"], cols)


def e6_table(df: pd.DataFrame) -> pd.DataFrame:
    """A-T4."""
    cols = [
        "exact_match",
        "matched_prefix",
        "position_match",
        "l2_to_steered",
        "mse_to_steered",
        "l2_to_natural",
        "mse_to_natural",
        "reference_gap",
        "ratio_to_gap",
        "l2_bare_to_natural",
        "control_gap_closed",
    ]
    cols = [c for c in cols if c in df]
    return _means(df.assign(exact_match=df["exact_match"].astype(float)), ["model", "vector", "variant", "mode"], cols)


def crosscheck_table(certificates: pd.DataFrame) -> pd.DataFrame:
    """bf16 screening cross-check: one row per sweep also run entirely in float32 (model, prompt prefix,
    position): the random calibration sample's largest relative bf16-float32 distance error, the largest over
    every token the screen could have excluded, their ratio, the safety factor in force, and whether the screened
    top-k equals the float32 top-k."""
    if not len(certificates) or "cross_checked" not in certificates:
        return pd.DataFrame()
    ce = certificates[certificates["cross_checked"].astype(bool)]
    keys = ["model", "vector", "prompt", "position"]
    g = ce.groupby(keys, sort=True).agg(
        measure_at=("measure_at", "first"),
        n_targets=("n_targets", "first"),
        calib_error=("calib_error", "max"),
        full_error=("full_error", "max"),
        safety=("safety", "first"),
        margin=("margin", "first"),
        screen_topk_ok=("screen_topk_ok", "all"),
        n_screened=("n_screened", "first"),
        wall_s=("wall_s", "first"),
    )
    g["ratio_full_over_calib"] = g["full_error"] / g["calib_error"]
    g["margin_covers_full_error"] = g["margin"] >= g["full_error"]
    return g.reset_index()


def controls_table(raw: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Positive controls beside the steered results, per model × vector × experiment × method (× mode): the gap
    closed on the reachable control target and, on the steered target, the claim's ratio and the gap closed."""
    rows = []
    e3 = raw.get("e3")
    if e3 is not None and len(e3) and "control_gap_closed_response" in e3:
        for (model, vector), g in e3.groupby(["model", "vector"], sort=True):
            m = g.groupby(["kind", "n_shots"])["l2_response"].mean()
            d0 = float(m.loc[("none", 0)]) if ("none", 0) in m.index else np.nan
            icl = g[g["kind"] == "icl"].groupby("n_shots")
            ctrl = icl["control_gap_closed_response"].mean()
            steer = icl["l2_response"].mean() / d0
            neutral = g[g["kind"] == "neutral"].groupby("n_shots")["l2_response"].mean() / d0
            rows.append(
                {
                    "model": model,
                    "vector": vector,
                    "experiment": "E3",
                    "method": "many-shot ICL",
                    "mode": "",
                    "control_gap_closed": float(ctrl.max()),
                    "control_at": f"N={int(ctrl.idxmax())}",
                    "steered_ratio": float(steer.min()),
                    "steered_ratio_kind": "min_N L2/L2(N=0), response",
                    "steered_gap_closed": float(1 - steer.min()),
                    "neutral_ratio": float(neutral.min()) if len(neutral) else np.nan,
                }
            )
    e4 = raw.get("e4")
    if e4 is not None and len(e4) and "target" in e4:
        for (model, vector, mode, method), g in e4[e4["method"].isin(["gcg", "tuned_soft", "tuned_projected"])].groupby(
            ["model", "vector", "mode", "method"], sort=True
        ):
            c, st = g[g["target"] == "control"], g[g["target"] == "steered"]
            rows.append(
                {
                    "model": model,
                    "vector": vector,
                    "experiment": "E4",
                    "method": method,
                    "mode": mode,
                    "control_gap_closed": float(c["gap_closed"].mean()),
                    "control_at": "",
                    "steered_ratio": float(st["ratio_to_delta_h"].mean()),
                    "steered_ratio_kind": "teacher-forced L2 / mean delta_h",
                    "steered_gap_closed": float(st["gap_closed"].mean()),
                    "returned_init_steered": float(st["returned_init"].astype(float).mean()),
                    "returned_init_control": float(c["returned_init"].astype(float).mean()),
                }
            )
    e5 = raw.get("e5")
    if e5 is not None and len(e5) and "target" in e5:
        for (model, vector), g in e5.groupby(["model", "vector"], sort=True):
            soft = g[g["kind"] == "soft"]
            ms = soft.groupby(["target", "p"])["l2_per_token"].mean()
            p_best = int(ms.loc["steered"].idxmin())
            mg = soft.groupby(["target", "p"])["gap_closed"].mean()
            proj = g[(g["kind"] == "projected") & (g["p"] == p_best)].groupby("target")["l2_per_token"].mean()
            rows.append(
                {
                    "model": model,
                    "vector": vector,
                    "experiment": "E5",
                    "method": "soft prefix",
                    "mode": "",
                    "control_gap_closed": float(mg.loc[("control", p_best)]),
                    "control_at": f"p={p_best}",
                    "steered_ratio": float(ms.loc[("steered", p_best)] / soft["delta_h"].mean()),
                    "steered_ratio_kind": "soft L2 / delta_h at the best p",
                    "steered_gap_closed": float(mg.loc[("steered", p_best)]),
                    "projected_over_soft": float(proj.get("steered", np.nan) / ms.loc[("steered", p_best)]),
                }
            )
    e6 = raw.get("e6")
    if e6 is not None and len(e6) and "control_gap_closed" in e6:
        tf = e6[e6["mode"] == "teacher_forced"]
        for (model, vector, variant), g in tf.groupby(["model", "vector", "variant"], sort=True):
            rows.append(
                {
                    "model": model,
                    "vector": vector,
                    "experiment": "E6",
                    "method": "copying",
                    "mode": variant,
                    "control_gap_closed": float(g["control_gap_closed"].mean()),
                    "control_at": "",
                    "steered_ratio": float(g["ratio_to_gap"].mean()),
                    "steered_ratio_kind": "L2(copy, steered ref) / reference gap",
                    "steered_gap_closed": np.nan,
                }
            )
    out = pd.DataFrame(rows)
    if len(out):
        out["control_passed"] = out["control_gap_closed"] >= 0.5
    return out


def e7_table(ratios: pd.DataFrame) -> pd.DataFrame:
    """A-T5: medians over prompts per model × vector × set kind × span (paraphrase groups pooled)."""
    df = ratios.assign(set_kind=ratios["set"].str.replace(r"^group:.*$", "paraphrase_groups", regex=True))
    g = df.groupby(["model", "vector", "set_kind", "span"], sort=True)
    return pd.DataFrame(
        {
            "n_prompts": g.size(),
            "median_displacement": g["displacement"].median(),
            "median_cross": g["cross_median"].median(),
            "median_cross_steered": g["cross_steered_median"].median(),
            "median_ratio_cross_over_steer": g["ratio"].median(),
            "min_ratio": g["ratio"].min(),
            "max_ratio": g["ratio"].max(),
        }
    ).reset_index()


def behaviour_table(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["model", "vector", "condition"], sort=False)
    out = pd.DataFrame(
        {
            "n": g.size(),
            "refusal_rate": g["refusal"].mean(),
            "attack_success": g["attack_success"].mean(),
            "trait_score_mean": g["trait_score"].mean(),
            "trait_scorer": g["trait_scorer"].first(),
            "substitute_for": g["substitute_for"].first(),
            "recovered_is_x": g["recovered_is_x"].mean(),
            "refusal_trained": g["refusal_trained"].first(),
        }
    ).reset_index()
    out["label"] = np.where(out["refusal_trained"], "", "model not refusal-trained: refusal results descriptive only")
    return out


def markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-style Markdown table (no extra dependency)."""

    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(float(v), floatfmt)
        return str(v)

    head = "| " + " | ".join(df.columns) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"
