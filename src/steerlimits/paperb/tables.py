"""Tables B-T1 … B-T7 (spec B §5) from the scored generation pools, the E4 logit rows and the E7 spectra.

Every comparison row uses :mod:`steerlimits.stats` (D6): signed pooled-SD Cohen's d of the condition against its
``reference`` (column), percentile-bootstrap 95 % CI, Welch p, TOST p at ``|d| < bound_d``; efficacy
``(μ − μ(0)) / (μ(v) − μ(0))`` with a bootstrap CI and the raw ratio ``μ / μ(v)`` (D7), where μ(0) and μ(v) are
the α = 0 and v conditions of the same experiment (and α, environment). Scorer columns name offline substitutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from steerlimits import stats as S
from steerlimits.seeds import derive_seed

__all__ = ["TABLE_COLUMNS", "alpha_sweep", "comparison", "e3_summary", "environments", "logit_distances", "mean_diff_vs_pca",
           "nullspace_spanning", "orthogonal_test"]

TABLE_COLUMNS = ["model", "trait", "condition", "n", "mean", "efficacy", "efficacy_raw", "cohens_d", "d_ci_low",
                 "d_ci_high", "tost_p"]
EXTRA = ["reference", "family", "seed", "std", "eff_ci_low", "eff_ci_high", "welch_p", "n_ref", "scorer",
         "substitute_for"]


class Ctx:
    """Bootstrap settings and a seed per (model, trait, table, condition)."""

    def __init__(self, master: int, n_boot: int, bound_d: float) -> None:
        self.master, self.n_boot, self.bound = master, n_boot, bound_d

    def seed(self, *names: object) -> int:
        return derive_seed(self.master, "paperB", "bootstrap", *names)


def comparison(x: np.ndarray, ref: np.ndarray | None, zero: np.ndarray, v: np.ndarray, ctx: Ctx,
               *names: object, is_v: bool = False) -> dict[str, Any]:
    """Statistics of ``x`` against ``ref`` (d, CI, Welch, TOST) and its efficacy relative to ``v`` and ``zero``."""
    x = np.asarray(x, float)
    out: dict[str, Any] = {"n": int(x.size), "mean": float(x.mean()) if x.size else math.nan,
                           "std": float(x.std(ddof=1)) if x.size > 1 else math.nan}
    mu0, muv = float(np.mean(zero)), float(np.mean(v))
    if is_v:
        out.update(efficacy=1.0, efficacy_raw=1.0, eff_ci_low=math.nan, eff_ci_high=math.nan)
    else:
        lo, hi = S.efficacy_ci(x, v, zero, n_boot=ctx.n_boot, seed=ctx.seed("eff", *names))
        out.update(efficacy=S.efficacy(out["mean"], muv, mu0), efficacy_raw=S.efficacy_raw(out["mean"], muv),
                   eff_ci_low=lo, eff_ci_high=hi)
    if ref is None:
        out.update(cohens_d=math.nan, d_ci_low=math.nan, d_ci_high=math.nan, welch_p=math.nan, tost_p=math.nan,
                   n_ref=0)
        return out
    c = S.compare(x, ref, seed=ctx.seed("d", *names), n_boot=ctx.n_boot, bound_d=ctx.bound)
    out.update(cohens_d=c.cohens_d, d_ci_low=c.d_ci_low, d_ci_high=c.d_ci_high, welch_p=c.welch_p, tost_p=c.tost_p,
               n_ref=c.n2)
    return out


def _frame(rows: list[dict[str, Any]], extra: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    cols = TABLE_COLUMNS + [c for c in extra if c in df.columns] + [c for c in EXTRA if c in df.columns]
    return df[list(dict.fromkeys(cols))] if len(df) else pd.DataFrame(columns=TABLE_COLUMNS)


def _per_model_trait(pool: pd.DataFrame, fn: Callable[[pd.DataFrame, str, str], list[dict[str, Any]]]
                     ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for (model, trait), g in pool.groupby(["model", "trait"], sort=False):
        base = {"model": model, "trait": trait, "scorer": g["scorer"].iloc[0],
                "substitute_for": g["substitute_for"].iloc[0]}
        rows += [{**base, **r} for r in fn(g, str(model), str(trait))]
    return rows


def _sel(g: pd.DataFrame, **eq: Any) -> np.ndarray:
    m = np.ones(len(g), bool)
    for k, val in eq.items():
        m &= (g[k].isin(val) if isinstance(val, (list, tuple, set)) else g[k] == val).to_numpy()
    return g.loc[m, "score"].to_numpy(float)


# ------------------------------------------------------------------------------------------------ E1
def orthogonal_test(pool: pd.DataFrame, ctx: Ctx) -> pd.DataFrame:
    """B-T1: α = 0, v, −v, v + u per family × seed (and pooled over seeds), u alone per family."""
    def one(g: pd.DataFrame, model: str, trait: str) -> list[dict[str, Any]]:
        zero, v = _sel(g, experiment="e1", kind="zero"), _sel(g, experiment="e1", kind="v")
        key = (model, trait, "e1")
        rows = [{"condition": "alpha0", "reference": "v", **comparison(zero, v, zero, v, ctx, *key, "zero")},
                {"condition": "v", "reference": "alpha0", **comparison(v, zero, zero, v, ctx, *key, "v", is_v=True)},
                {"condition": "neg_v", "reference": "v", "family": "neg_v",
                 **comparison(_sel(g, experiment="e1", kind="neg_v"), v, zero, v, ctx, *key, "neg_v")}]
        e1 = g[g["experiment"] == "e1"]
        for fam in dict.fromkeys(e1.loc[e1["kind"] == "v+u", "family"]):
            for s in sorted(e1.loc[(e1["kind"] == "v+u") & (e1["family"] == fam), "seed"].unique()):
                x = _sel(e1, kind="v+u", family=fam, seed=s)
                rows.append({"condition": f"v+u[{fam}, seed {s}]", "reference": "v", "family": fam, "seed": str(s),
                             **comparison(x, v, zero, v, ctx, *key, fam, s)})
            rows.append({"condition": f"v+u[{fam}]", "reference": "v", "family": fam, "seed": "pooled",
                         **comparison(_sel(e1, kind="v+u", family=fam), v, zero, v, ctx, *key, fam, "pooled")})
            rows.append({"condition": f"u[{fam}]", "reference": "alpha0", "family": fam, "seed": "0",
                         **comparison(_sel(e1, kind="u", family=fam), zero, zero, v, ctx, *key, fam, "u")})
        return rows

    return _frame(_per_model_trait(pool, one), [])


# ------------------------------------------------------------------------------------------------ E2
def alpha_sweep(pool: pd.DataFrame, ctx: Ctx, alphas: list[float], alpha: float, n_seeds: int,
                family: str) -> pd.DataFrame:
    """B-T2: per α, αv (vs α = 0) and α(v + u) of ``family`` per seed and pooled (vs αv); α = 0 and α = ``alpha``
    come from E1 when E2 did not generate them (column ``source``)."""
    def one(g: pd.DataFrame, model: str, trait: str) -> list[dict[str, Any]]:
        sweep = g[g["experiment"].isin(["e1", "e2"])]
        zero = _sel(sweep, experiment="e1", kind="zero")
        rows: list[dict[str, Any]] = []
        for a in alphas:
            key = (model, trait, "e2", a)
            if a == 0:
                rows.append({"alpha": a, "condition": "alpha0", "source": "e1", **comparison(zero, None, zero, zero,
                                                                                             ctx, *key)})
                continue
            src = "e1" if a == alpha and len(_sel(sweep, experiment="e2", kind="v", alpha=a)) == 0 else "e2"
            v = _sel(sweep, experiment=src, kind="v", alpha=a)
            rows.append({"alpha": a, "condition": "v", "reference": "alpha0", "source": src,
                         **comparison(v, zero, zero, v, ctx, *key, "v", is_v=True)})
            vu = sweep[(sweep["experiment"] == src) & (sweep["kind"] == "v+u") & (sweep["alpha"] == a)
                       & (sweep["seed"] < n_seeds) & (sweep["family"] == family)]
            for fam in dict.fromkeys(vu["family"]):
                for s in sorted(vu.loc[vu["family"] == fam, "seed"].unique()):
                    rows.append({"alpha": a, "condition": f"v+u[{fam}, seed {s}]", "reference": "v", "family": fam,
                                 "seed": str(s), "source": src,
                                 **comparison(_sel(vu, family=fam, seed=s), v, zero, v, ctx, *key, fam, s)})
                rows.append({"alpha": a, "condition": f"v+u[{fam}]", "reference": "v", "family": fam,
                             "seed": "pooled", "source": src,
                             **comparison(_sel(vu, family=fam), v, zero, v, ctx, *key, fam, "pooled")})
        return rows

    return _frame(_per_model_trait(pool, one), ["alpha", "source"])


# ------------------------------------------------------------------------------------------------ E3
def environments(pool: pd.DataFrame, ctx: Ctx) -> pd.DataFrame:
    """B-T3: per environment, v (vs α = 0) and v + u per seed and pooled (vs v); r across prompts per seed."""
    def one(g: pd.DataFrame, model: str, trait: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        e3 = g[g["experiment"] == "e3"]
        for env in dict.fromkeys(e3["environment"]):
            h = e3[e3["environment"] == env]
            zero, v = _sel(h, kind="zero"), _sel(h, kind="v")
            key = (model, trait, "e3", env)
            rows.append({"environment": env, "condition": "alpha0", "reference": "v",
                         **comparison(zero, v, zero, v, ctx, *key, "zero")})
            rows.append({"environment": env, "condition": "v", "reference": "alpha0",
                         **comparison(v, zero, zero, v, ctx, *key, "v", is_v=True)})
            per_v = h[h["kind"] == "v"].groupby("prompt_index")["score"].mean()
            for fam in dict.fromkeys(h.loc[h["kind"] == "v+u", "family"]):
                for s in sorted(h.loc[(h["kind"] == "v+u") & (h["family"] == fam), "seed"].unique()):
                    hs = h[(h["kind"] == "v+u") & (h["family"] == fam) & (h["seed"] == s)]
                    per_u = hs.groupby("prompt_index")["score"].mean().reindex(per_v.index)
                    r = float(np.corrcoef(per_v, per_u)[0, 1]) if per_v.std() > 0 and per_u.std() > 0 else math.nan
                    rows.append({"environment": env, "condition": f"v+u[{fam}, seed {s}]", "reference": "v",
                                 "family": fam, "seed": str(s), "r_prompts": r,
                                 **comparison(hs["score"].to_numpy(float), v, zero, v, ctx, *key, fam, s)})
                rows.append({"environment": env, "condition": f"v+u[{fam}]", "reference": "v", "family": fam,
                             "seed": "pooled", **comparison(_sel(h, kind="v+u", family=fam), v, zero, v, ctx, *key,
                                                            fam, "pooled")})
        return rows

    return _frame(_per_model_trait(pool, one), ["environment", "r_prompts"])


# ------------------------------------------------------------------------------------------------ E5
def mean_diff_vs_pca(pool: pd.DataFrame, ctx: Ctx, vector_meta: Mapping[tuple[str, str], Mapping[str, Any]]
                     ) -> pd.DataFrame:
    """B-T5: α = 0, v₁ = mean difference (vs α = 0), v₂ = PC1 norm-matched and oriented (vs v₁); cos recorded."""
    def one(g: pd.DataFrame, model: str, trait: str) -> list[dict[str, Any]]:
        zero, v, pca = (_sel(g, experiment="e5", kind=k) for k in ("zero", "v", "pca"))
        meta = vector_meta.get((model, trait), {})
        extra = {"cos_v1_v2": meta.get("cos_mean_diff_pca", math.nan), "pc1_flipped": meta.get("pc1_flipped")}
        key = (model, trait, "e5")
        return [{"condition": "alpha0", "reference": "v", **extra, **comparison(zero, v, zero, v, ctx, *key, "z")},
                {"condition": "v1_mean_diff", "reference": "alpha0", **extra,
                 **comparison(v, zero, zero, v, ctx, *key, "v", is_v=True)},
                {"condition": "v2_pca", "reference": "v1_mean_diff", **extra,
                 **comparison(pca, v, zero, v, ctx, *key, "pca")}]

    return _frame(_per_model_trait(pool, one), ["cos_v1_v2", "pc1_flipped"])


# ------------------------------------------------------------------------------------------------ E6
def nullspace_spanning(pool: pd.DataFrame, ctx: Ctx) -> pd.DataFrame:
    """B-T6: (a) per orthonormal u_i: d(v + u_i, v), d(u_i, 0), d(u_i, v), each with the Jensen–Shannon distance
    of the two 10-bin score histograms (the authors' second measure); (b) d(v + Σ c_j u_j, v) per k."""
    def js(x: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        return {"js_distance": S.js_distance(x, ref, bins=10)}

    def one(g: pd.DataFrame, model: str, trait: str) -> list[dict[str, Any]]:
        zero, v = _sel(g, experiment="e1", kind="zero"), _sel(g, experiment="e1", kind="v")
        rows: list[dict[str, Any]] = []
        a, b = g[g["experiment"] == "e6a"], g[g["experiment"] == "e6b"]
        for fam in dict.fromkeys(a["family"]):
            key = (model, trait, "e6a", fam)
            for i in sorted(a.loc[a["family"] == fam, "direction"].unique()):
                vu, u = _sel(a, family=fam, direction=i, kind="v+u"), _sel(a, family=fam, direction=i, kind="u")
                common = {"part": "a", "family": fam, "direction": int(i)}
                rows += [{**common, "condition": f"v+u_{i}", "reference": "v", **js(vu, v),
                          **comparison(vu, v, zero, v, ctx, *key, i, "vu")},
                         {**common, "condition": f"u_{i}", "reference": "alpha0", **js(u, zero),
                          **comparison(u, zero, zero, v, ctx, *key, i, "u0")},
                         {**common, "condition": f"u_{i}", "reference": "v", **js(u, v),
                          **comparison(u, v, zero, v, ctx, *key, i, "uv")}]
            common = {"part": "a", "family": fam, "direction": -1}
            vu_all, u_all = _sel(a, family=fam, kind="v+u"), _sel(a, family=fam, kind="u")
            rows += [{**common, "condition": "v+u_i (all i)", "reference": "v", **js(vu_all, v),
                      **comparison(vu_all, v, zero, v, ctx, *key, "all", "vu")},
                     {**common, "condition": "u_i (all i)", "reference": "alpha0", **js(u_all, zero),
                      **comparison(u_all, zero, zero, v, ctx, *key, "all", "u0")}]
        for fam in dict.fromkeys(b["family"]):
            for k in sorted(b.loc[b["family"] == fam, "k"].unique()):
                key = (model, trait, "e6b", fam, k)
                common = {"part": "b", "family": fam, "k": int(k)}
                for dr in sorted(b.loc[(b["family"] == fam) & (b["k"] == k), "draw"].unique()):
                    rows.append({**common, "draw": int(dr), "condition": f"v+sum_k[{k}, draw {dr}]", "reference": "v",
                                 **comparison(_sel(b, family=fam, k=k, draw=dr), v, zero, v, ctx, *key, dr)})
                rows.append({**common, "draw": -1, "condition": f"v+sum_k[{k}]", "reference": "v",
                             **comparison(_sel(b, family=fam, k=k), v, zero, v, ctx, *key, "pooled")})
        return rows

    return _frame(_per_model_trait(pool, one), ["part", "direction", "k", "draw", "js_distance"])


# ------------------------------------------------------------------------------------------------ E4
def logit_distances(rows: pd.DataFrame) -> pd.DataFrame:
    """B-T4: per model × trait × condition: mean L2 distance to z_v, KL, argmax agreement, top-10 overlap, and the
    ratio of each mean L2 to the norm-matched random control's (``ratio_to_random``); ``other trait[t]`` rows steer
    with trait t's vector rescaled to ‖v‖ in place of v (the authors' second control)."""
    out = []
    for (model, trait), g in rows.groupby(["model", "trait"], sort=False):
        rand = g.loc[g["condition"] == "v+r", "l2"].mean()
        for (cond, fam), h in g.groupby(["condition", "family"], sort=False, dropna=False):
            name = {"zero": "baseline: v vs 0", "v+r": "v+r[random]", "other": f"other trait[{fam}]"}.get(
                str(cond), f"v+u[{fam}]")
            out.append({"model": model, "trait": trait, "condition": name,
                        "family": fam if cond in ("v+u", "other") else cond,
                        "n": len(h), "n_prefixes": h["prefix"].nunique(), "l2_mean": h["l2"].mean(),
                        "l2_std": h["l2"].std(ddof=1), "kl_mean": h["kl"].mean(),
                        "argmax_agree": h["argmax_agree"].mean(), "top10_overlap": h["top10_overlap"].mean(),
                        "ratio_to_random": h["l2"].mean() / rand if rand > 0 else math.nan,
                        "offset_norm": h["offset_norm"].mean()})
    return pd.DataFrame(out)


def e3_summary(t3: pd.DataFrame) -> dict[str, Any]:
    """The authors' E3 summary per model/trait: share of (environment, seed) cells with |d| < 0.3 and r > 0.6 (r
    across prompts); with few prompts per cell these are noisy (spec B §4), the TOST columns are the inference."""
    cells = t3[t3["condition"].str.startswith("v+u[") & (t3["seed"].astype(str) != "pooled")]
    return {f"{m}/{t}": {"n_cells": len(g), "share_d_below_0.3_and_r_above_0.6":
                         float(((g["cohens_d"].abs() < 0.3) & (g["r_prompts"] > 0.6)).mean()) if len(g) else None}
            for (m, t), g in cells.groupby(["model", "trait"], sort=False)}
