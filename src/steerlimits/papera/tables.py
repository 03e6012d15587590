"""Paper A tables (spec A §5: A-T1 … A-T5, the E2/E3 tables and the reconstruction behaviour).

Summaries exclude position 0 (the attention sink, ~100× larger states; style §5.6) unless a column says
otherwise; standard deviations are over (prompt, position) pairs for distances and over prompts for per-prompt
means.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["behaviour_table", "e2_table", "e3_table", "e4_table", "e5_table", "e6_table", "e7_table",
           "inversion_summary", "markdown"]

KEYS = ["model", "vector", "alpha", "condition"]


def _std(x: pd.Series) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def inversion_summary(prompts: pd.DataFrame, positions: pd.DataFrame, certificates: pd.DataFrame) -> pd.DataFrame:
    """A-T1: one row per model × vector × coefficient × condition of E1."""
    pr, po = prompts[prompts["experiment"] == "E1"], positions[positions["experiment"] == "E1"]
    a = pr.groupby(KEYS, sort=False).agg(
        n_prompts=("prompt", "size"), exact_match=("exact_match", "mean"), token_accuracy=("token_accuracy", "mean"),
        noise_floor=("max_floor", "mean"), tau_exact=("tau", "mean"), tau0=("tau0", "mean"),
        mse_recovered_to_steered=("mse_recovered_to_target", "mean"),
        mse_recovered_to_natural=("mse_recovered_to_natural", "mean"), n_candidates=("n_candidates", "first"),
        layer=("layer", "first"), refusal_trained=("refusal_trained", "first"))
    work = po["n_verified"] + (po["n_prechecked"] if "n_prechecked" in po else 0)  # float32 evaluations
    po = po.assign(frac=work / po["vocab_size"])
    po1 = po[po["position"] >= 1]
    b = po1.assign(ratio=po1["top1"] / po1["tau"]).groupby(KEYS).agg(
        top1_mean=("top1", "mean"), top1_std=("top1", "std"), top2_mean=("top2", "mean"), top2_std=("top2", "std"),
        delta_h_per_token=("delta_h", "mean"), max_top1_over_tau=("ratio", "max"),
        vocab_fraction_verified=("frac", "mean"))
    c = po.assign(pos0=po["top1"].where(po["position"] == 0)).groupby(
        KEYS).agg(top1_pos0_mean=("pos0", "mean"), vocab_fraction_verified_incl_pos0=("frac", "mean"))
    out = a.join(b).join(c)
    if len(certificates):
        ce = certificates[(certificates["experiment"] == "E1") & (certificates["position"] >= 1)]
        d = ce.groupby(KEYS).agg(certified_positions=("position", "size"), certified_above_tau=("min_gt_tau", "sum"),
                                 certified_argmin_is_x=("argmin_is_x", "sum"),
                                 search_found_certified_min=("search_found_min", "sum"))
        out = out.join(d)
    for col in ("certified_positions", "certified_above_tau", "certified_argmin_is_x", "search_found_certified_min"):
        out[col] = out[col].fillna(0).astype(int) if col in out else 0
    out = out.reset_index().rename(columns={"alpha": "coefficient"})
    out.loc[out["condition"] == "natural", "mse_recovered_to_steered"] = np.nan
    first = ["model", "vector", "coefficient", "condition", "n_prompts", "exact_match", "token_accuracy", "top1_mean",
             "top1_std", "top2_mean", "top2_std", "delta_h_per_token", "noise_floor", "tau_exact",
             "certified_positions"]
    return out[first + [c for c in out.columns if c not in first]]


def e2_table(prompts: pd.DataFrame, positions: pd.DataFrame) -> pd.DataFrame:
    """E2: per model × vector × α, mean ± std over prompts of per-token ‖steered − natural‖ and ‖recovered −
    natural‖, top-1 over (prompt, position), exact matches."""
    pr, po = prompts[prompts["experiment"] == "E2"], positions[positions["experiment"] == "E2"]
    po1 = po[po["position"] >= 1]
    rows = []
    for (model, vector, alpha), g in pr.groupby(["model", "vector", "alpha"], sort=True):
        p = po1[(po1["model"] == model) & (po1["vector"] == vector) & (po1["alpha"] == alpha)]
        rows.append({"model": model, "vector": vector, "alpha": alpha, "abs_alpha": abs(alpha),
                     "n_prompts": len(g), "n_candidates": int(g["n_candidates"].iloc[0]),
                     "steered_minus_natural_mean": g["delta_h_per_token"].mean(),
                     "steered_minus_natural_std": _std(g["delta_h_per_token"]),
                     "recovered_minus_natural_mean": g["recovered_to_natural_per_token"].mean(),
                     "recovered_minus_natural_std": _std(g["recovered_to_natural_per_token"]),
                     "top1_mean": p["top1"].mean(), "top1_std": _std(p["top1"]),
                     "exact_match": g["exact_match"].mean(), "token_accuracy": g["token_accuracy"].mean()})
    return pd.DataFrame(rows)


def _means(df: pd.DataFrame, keys: list[str], cols: list[str]) -> pd.DataFrame:
    out = df.groupby(keys, sort=True)[cols].mean().reset_index()
    out.insert(len(keys), "n_prompts", df.groupby(keys, sort=True)["prompt"].nunique().to_numpy())
    return out


def e3_table(summary: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in summary.columns if c.startswith(("l2_", "cos_"))] + ["attack_success", "n_demo_tokens"]
    return _means(summary, ["model", "vector", "n_shots"], cols)


def e4_table(df: pd.DataFrame) -> pd.DataFrame:
    """A-T2."""
    cols = ["l2_teacher_forced", "l2_teacher_forced_response", "l2_free_response", "delta_h", "delta_h_response",
            "ratio_to_delta_h", "exact_match", "token_overlap", "attack_success"]
    return _means(df.assign(exact_match=df["exact_match"].astype(float)), ["model", "vector", "mode", "method"], cols)


def e5_table(df: pd.DataFrame) -> pd.DataFrame:
    """A-T3."""
    return _means(df, ["model", "vector", "p", "kind"],
                  ["best_mse", "l2_total", "l2_per_token", "delta_h", "nearest_dist_mean"])


def e6_table(df: pd.DataFrame) -> pd.DataFrame:
    """A-T4."""
    cols = ["exact_match", "matched_prefix", "position_match", "l2_to_steered", "mse_to_steered", "l2_to_natural",
            "mse_to_natural", "reference_gap", "ratio_to_gap"]
    return _means(df.assign(exact_match=df["exact_match"].astype(float)), ["model", "vector", "variant", "mode"], cols)


def e7_table(ratios: pd.DataFrame) -> pd.DataFrame:
    """A-T5: medians over prompts per model × vector × set kind × span (paraphrase groups pooled)."""
    df = ratios.assign(set_kind=ratios["set"].str.replace(r"^group:.*$", "paraphrase_groups", regex=True))
    g = df.groupby(["model", "vector", "set_kind", "span"], sort=True)
    return pd.DataFrame({"n_prompts": g.size(), "median_displacement": g["displacement"].median(),
                         "median_cross": g["cross_median"].median(),
                         "median_cross_steered": g["cross_steered_median"].median(),
                         "median_ratio_cross_over_steer": g["ratio"].median(),
                         "min_ratio": g["ratio"].min(), "max_ratio": g["ratio"].max()}).reset_index()


def behaviour_table(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["model", "vector", "condition"], sort=False)
    out = pd.DataFrame({"n": g.size(), "refusal_rate": g["refusal"].mean(), "attack_success": g["attack_success"].mean(),
                        "trait_score_mean": g["trait_score"].mean(), "trait_scorer": g["trait_scorer"].first(),
                        "substitute_for": g["substitute_for"].first(),
                        "recovered_is_x": g["recovered_is_x"].mean(),
                        "refusal_trained": g["refusal_trained"].first()}).reset_index()
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
