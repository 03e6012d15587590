"""Tables B-T1 … B-T10 (docs/paperB.md, The tables) from the scored generation pools, the calibrations, the E4 logit
rows, the spectra and the fp32 / bf16 check.

**Paired rows.** Every comparison of a condition ``x`` against its reference ``r`` (v at the same α, or the
mean-difference vector for E5) uses the unsteered condition ``z`` of the same experiment, all three on the same
stems (environment prompts in E3): each stem's samples are averaged and the stem is the unit of analysis
(``n`` counts stems, ``n_gen`` generations). Columns (:func:`paired`):

* ``efficacy`` = mean(x − z) / mean(r − z) with a paired bootstrap CI over stems (``eff_ci_low/high``), and the
  raw ratio ``efficacy_raw`` = μ(x) / μ(r) (D7);
* ``effect`` = mean(r − z) (the steering effect that sets the margin), ``margin`` = δ·effect, ``effect_tost_p``:
  the paired effect-relative TOST (:func:`steerlimits.stats.effect_tost`; equivalence when < ``tost_alpha``);
* ``power_design``: the power of that test at efficacy 1 with this n, from the calibration pilot's effect and SDs
  (E1 and E5 rows, whose sizes the power calculation chose), ``power_observed_sd``: the same at the observed
  effect and contrast SD of this row;
* ``cohens_d`` (signed pooled-SD d over generations, bootstrap CI) and ``tost_p`` at ``|d| < bound_d``: the
  paper's criterion (``-paper`` rows), on generations as the paper computes it;
* ``against``: the fraction of stems whose paired score x − z moves against the steering direction (B12).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from steerlimits import stats as S
from steerlimits.seeds import derive_seed

__all__ = [
    "TABLE_COLUMNS",
    "Ctx",
    "alpha_sweep",
    "calibration_table",
    "e3_summary",
    "environments",
    "logit_distances",
    "mean_diff_vs_pca",
    "nullspace_spanning",
    "orthogonal_test",
    "paired",
    "stem_means",
]

TABLE_COLUMNS = [
    "model",
    "trait",
    "condition",
    "n",
    "mean",
    "efficacy",
    "efficacy_raw",
    "cohens_d",
    "d_ci_low",
    "d_ci_high",
    "tost_p",
    "effect_tost_p",
]
EXTRA = [
    "reference",
    "family",
    "seed",
    "n_gen",
    "std",
    "eff_ci_low",
    "eff_ci_high",
    "effect",
    "margin",
    "power_design",
    "power_observed_sd",
    "against",
    "subspace_dim",
    "alpha",
    "n_ref",
    "scorer",
    "substitute_for",
]


class Ctx:
    """Bootstrap and test settings, a seed per (model, trait, table, condition), and the calibration designs
    (``(model, trait)`` -> the ``design`` record of ``paperB_calibrate``)."""

    def __init__(
        self,
        master: int,
        n_boot: int,
        bound_d: float,
        delta: float = 0.2,
        tost_alpha: float = 0.05,
        designs: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> None:
        self.master, self.n_boot, self.bound, self.delta, self.tost_alpha = master, n_boot, bound_d, delta, tost_alpha
        self.designs = dict(designs or {})

    def seed(self, *names: object) -> int:
        return derive_seed(self.master, "paperB", "bootstrap", *names)

    def design_power(self, model: str, trait: str, n: int) -> float:
        """Power of the effect-relative TOST with ``n`` stems under the calibration design of (model, trait)."""
        d = self.designs.get((model, trait))
        if not d:
            return math.nan
        sd = math.sqrt(d["sd_between"] ** 2 + d["sd_within"] ** 2 / max(int(d["samples"]), 1))
        return S.effect_tost_power(n, float(d["effect"]), sd, delta=self.delta, alpha=self.tost_alpha)


def stem_means(df: pd.DataFrame) -> pd.Series:
    """Mean score per unit (prompt set, prompt index)."""
    return df.groupby(["prompt_set", "prompt_index"])["score"].mean()


def paired(
    x: pd.DataFrame,
    ref: pd.DataFrame | None,
    zero: pd.DataFrame,
    ctx: Ctx,
    *names: object,
    is_ref: bool = False,
    design: tuple[str, str] | None = None,
    eff_ref: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The statistics of one paired row (module docstring); ``x``, ``ref``, ``zero`` are scored generation rows.
    ``ref=None``: a row compared with α = 0 only (d and TOST vs α = 0): a reference row itself (``is_ref``, e.g.
    v: efficacy 1 by definition), or u alone, whose efficacy is taken relative to ``eff_ref`` (v); ``design``:
    (model, trait) whose calibration design gives ``power_design``."""
    xs = x["score"].to_numpy(float)
    out: dict[str, Any] = {
        "n_gen": int(xs.size),
        "mean": float(xs.mean()) if xs.size else math.nan,
        "std": float(xs.std(ddof=1)) if xs.size > 1 else math.nan,
    }
    mx, mz = stem_means(x), stem_means(zero)
    base = pd.concat({"x": mx, "z": mz}, axis=1).dropna()
    out["against"] = S.against_fraction((base["x"] - base["z"]).to_numpy(float)) if len(base) else math.nan
    if ref is None or is_ref:
        c = (
            S.compare(
                xs, zero["score"].to_numpy(float), seed=ctx.seed("d", *names), n_boot=ctx.n_boot, bound_d=ctx.bound
            )
            if len(zero)
            else None
        )
        eff = eff_raw = 1.0 if is_ref else math.nan
        if eff_ref is not None and not is_ref:
            u3 = pd.concat({"x": mx, "r": stem_means(eff_ref), "z": mz}, axis=1).dropna()
            if len(u3):
                eff = S.efficacy(float(u3["x"].mean()), float(u3["r"].mean()), float(u3["z"].mean()))
                eff_raw = S.efficacy_raw(float(u3["x"].mean()), float(u3["r"].mean()))
        out.update(
            n=int(len(base)),
            efficacy=eff,
            efficacy_raw=eff_raw,
            effect=float((base["x"] - base["z"]).mean()) if len(base) else math.nan,
            cohens_d=c.cohens_d if c else math.nan,
            d_ci_low=c.d_ci_low if c else math.nan,
            d_ci_high=c.d_ci_high if c else math.nan,
            tost_p=c.tost_p if c else math.nan,
            n_ref=int(len(zero)),
            effect_tost_p=math.nan,
        )
        return out
    units = pd.concat({"x": mx, "r": stem_means(ref), "z": mz}, axis=1).dropna()
    xa, ra, za = (units[k].to_numpy(float) for k in ("x", "r", "z"))
    t = S.effect_tost(xa, ra, za, delta=ctx.delta)
    lo, hi = S.paired_efficacy_ci(xa, ra, za, n_boot=ctx.n_boot, seed=ctx.seed("eff", *names))
    c = S.compare(xs, ref["score"].to_numpy(float), seed=ctx.seed("d", *names), n_boot=ctx.n_boot, bound_d=ctx.bound)
    sd_obs = max(t.sd_lower, t.sd_upper) if t.n > 1 else math.nan
    out.update(
        n=t.n,
        efficacy=t.efficacy,
        efficacy_raw=S.efficacy_raw(t.mean_x, t.mean_ref),
        eff_ci_low=lo,
        eff_ci_high=hi,
        effect=t.effect,
        margin=t.margin,
        effect_tost_p=t.p,
        power_observed_sd=S.effect_tost_power(t.n, t.effect, sd_obs, delta=ctx.delta, alpha=ctx.tost_alpha)
        if t.n > 1
        else math.nan,
        power_design=ctx.design_power(*design, t.n) if design else math.nan,
        cohens_d=c.cohens_d,
        d_ci_low=c.d_ci_low,
        d_ci_high=c.d_ci_high,
        tost_p=c.tost_p,
        n_ref=c.n2,
    )
    return out


def _frame(rows: list[dict[str, Any]], extra: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    cols = TABLE_COLUMNS + [c for c in extra if c in df.columns] + [c for c in EXTRA if c in df.columns]
    return df[[c for c in dict.fromkeys(cols) if c in df.columns]] if len(df) else pd.DataFrame(columns=TABLE_COLUMNS)


def _per_model_trait(
    pool: pd.DataFrame, fn: Callable[[pd.DataFrame, str, str], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for (model, trait), g in pool.groupby(["model", "trait"], sort=False):
        base = {
            "model": model,
            "trait": trait,
            "scorer": g["scorer"].iloc[0],
            "substitute_for": g["substitute_for"].iloc[0],
        }
        rows += [{**base, **r} for r in fn(g, str(model), str(trait))]
    return rows


def _sel(g: pd.DataFrame, **eq: Any) -> pd.DataFrame:
    m = np.ones(len(g), bool)
    for k, val in eq.items():
        m &= (g[k].isin(val) if isinstance(val, (list, tuple, set)) else g[k] == val).to_numpy()
    return g.loc[m]


def _dim(g: pd.DataFrame, fam: str) -> Any:
    if "subspace_dim" not in g:
        return math.nan
    v = g.loc[g["family"] == fam, "subspace_dim"]
    return int(v.iloc[0]) if len(v) and not pd.isna(v.iloc[0]) else math.nan


# ------------------------------------------------------------------------------------------------ E1
def orthogonal_test(pool: pd.DataFrame, ctx: Ctx) -> pd.DataFrame:
    """B-T1: α = 0, v, −v, v + u per family pooled over seeds (seed s at sample s) and per seed, u alone."""

    def one(g: pd.DataFrame, model: str, trait: str) -> list[dict[str, Any]]:
        e1 = g[g["experiment"] == "e1"]
        zero, v = _sel(e1, kind="zero"), _sel(e1, kind="v")
        key, des = (model, trait, "e1"), (model, trait)
        alpha = float(v["alpha"].iloc[0]) if len(v) else math.nan
        rows = [
            {"condition": "alpha0", "reference": "", "alpha": 0.0, **paired(zero, None, zero, ctx, *key, "z")},
            {
                "condition": "v",
                "reference": "alpha0",
                "alpha": alpha,
                **paired(v, None, zero, ctx, *key, "v", is_ref=True),
            },
            {
                "condition": "neg_v",
                "reference": "v",
                "family": "neg_v",
                "alpha": alpha,
                **paired(_sel(e1, kind="neg_v"), v, zero, ctx, *key, "neg_v"),
            },
        ]
        for fam in dict.fromkeys(e1.loc[e1["kind"] == "v+u", "family"]):
            vu = _sel(e1, kind="v+u", family=fam)
            dim = _dim(e1, fam)
            for s in sorted(vu["seed"].unique()):
                rows.append(
                    {
                        "condition": f"v+u[{fam}, seed {s}]",
                        "reference": "v",
                        "family": fam,
                        "seed": str(s),
                        "subspace_dim": dim,
                        "alpha": alpha,
                        **paired(_sel(vu, seed=s), v, zero, ctx, *key, fam, s),
                    }
                )
            rows.append(
                {
                    "condition": f"v+u[{fam}]",
                    "reference": "v",
                    "family": fam,
                    "seed": "pooled",
                    "subspace_dim": dim,
                    "alpha": alpha,
                    **paired(vu, v, zero, ctx, *key, fam, "pooled", design=des),
                }
            )
            u = _sel(e1, kind="u", family=fam)
            rows.append(
                {
                    "condition": f"u[{fam}]",
                    "reference": "alpha0",
                    "family": fam,
                    "seed": "0",
                    "subspace_dim": dim,
                    "alpha": alpha,
                    **paired(u, None, zero, ctx, *key, fam, "u", eff_ref=v),
                }
            )
        return rows

    return _frame(_per_model_trait(pool, one), [])


# ------------------------------------------------------------------------------------------------ E2
def alpha_sweep(pool: pd.DataFrame, ctx: Ctx, multiples: Sequence[float]) -> pd.DataFrame:
    """B-T2: per multiple m of the calibrated α, mαv (vs α = 0) and mα(v + u) per seed and pooled (vs mαv);
    m = 0 and m = 1 come from E1 (column ``source``)."""

    def one(g: pd.DataFrame, model: str, trait: str) -> list[dict[str, Any]]:
        zero = _sel(g, experiment="e1", kind="zero")
        rows: list[dict[str, Any]] = []
        for m in sorted(float(x) for x in multiples):
            key = (model, trait, "e2", m)
            if m == 0:
                rows.append(
                    {
                        "alpha_multiple": m,
                        "alpha": 0.0,
                        "condition": "alpha0",
                        "source": "e1",
                        **paired(zero, None, zero, ctx, *key),
                    }
                )
                continue
            src = "e1" if m == 1.0 else "e2"
            sweep = g[g["experiment"] == src]
            v = _sel(sweep, kind="v", alpha_multiple=m)
            alpha = float(v["alpha"].iloc[0]) if len(v) else math.nan
            rows.append(
                {
                    "alpha_multiple": m,
                    "alpha": alpha,
                    "condition": "v",
                    "reference": "alpha0",
                    "source": src,
                    **paired(v, None, zero, ctx, *key, "v", is_ref=True),
                }
            )
            vu = _sel(sweep, kind="v+u", alpha_multiple=m)
            if src == "e1":  # E2's family and seeds only
                fams = set(g.loc[(g["experiment"] == "e2") & (g["kind"] == "v+u"), "family"])
                n2 = g.loc[(g["experiment"] == "e2") & (g["kind"] == "v+u"), "seed"]
                vu = vu[vu["family"].isin(fams)]
                if len(n2):
                    vu = vu[vu["seed"] <= n2.max()]
            for fam in dict.fromkeys(vu["family"]):
                for s in sorted(vu.loc[vu["family"] == fam, "seed"].unique()):
                    rows.append(
                        {
                            "alpha_multiple": m,
                            "alpha": alpha,
                            "condition": f"v+u[{fam}, seed {s}]",
                            "reference": "v",
                            "family": fam,
                            "seed": str(s),
                            "source": src,
                            **paired(_sel(vu, family=fam, seed=s), v, zero, ctx, *key, fam, s),
                        }
                    )
                rows.append(
                    {
                        "alpha_multiple": m,
                        "alpha": alpha,
                        "condition": f"v+u[{fam}]",
                        "reference": "v",
                        "family": fam,
                        "seed": "pooled",
                        "source": src,
                        **paired(_sel(vu, family=fam), v, zero, ctx, *key, fam, "pooled"),
                    }
                )
        return rows

    return _frame(_per_model_trait(pool, one), ["alpha_multiple", "source"])


# ------------------------------------------------------------------------------------------------ E3
def environments(pool: pd.DataFrame, ctx: Ctx) -> pd.DataFrame:
    """B-T3: per environment, v (vs α = 0) and v + u per seed and pooled (vs v, paired by prompt); r across
    prompts per seed (the authors' measure)."""

    def one(g: pd.DataFrame, model: str, trait: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        e3 = g[g["experiment"] == "e3"]
        for env in dict.fromkeys(e3["environment"]):
            h = e3[e3["environment"] == env]
            zero, v = _sel(h, kind="zero"), _sel(h, kind="v")
            key = (model, trait, "e3", env)
            rows.append(
                {
                    "environment": env,
                    "condition": "alpha0",
                    "reference": "",
                    **paired(zero, None, zero, ctx, *key, "zero"),
                }
            )
            rows.append(
                {
                    "environment": env,
                    "condition": "v",
                    "reference": "alpha0",
                    **paired(v, None, zero, ctx, *key, "v", is_ref=True),
                }
            )
            per_v = v.groupby("prompt_index")["score"].mean()
            for fam in dict.fromkeys(h.loc[h["kind"] == "v+u", "family"]):
                for s in sorted(h.loc[(h["kind"] == "v+u") & (h["family"] == fam), "seed"].unique()):
                    hs = _sel(h, kind="v+u", family=fam, seed=s)
                    per_u = hs.groupby("prompt_index")["score"].mean().reindex(per_v.index)
                    ok = per_v.std() > 0 and per_u.std() > 0 and per_u.notna().all()
                    r = float(np.corrcoef(per_v, per_u)[0, 1]) if ok else math.nan
                    rows.append(
                        {
                            "environment": env,
                            "condition": f"v+u[{fam}, seed {s}]",
                            "reference": "v",
                            "family": fam,
                            "seed": str(s),
                            "r_prompts": r,
                            **paired(hs, v, zero, ctx, *key, fam, s),
                        }
                    )
                rows.append(
                    {
                        "environment": env,
                        "condition": f"v+u[{fam}]",
                        "reference": "v",
                        "family": fam,
                        "seed": "pooled",
                        **paired(_sel(h, kind="v+u", family=fam), v, zero, ctx, *key, fam, "pooled"),
                    }
                )
        return rows

    return _frame(_per_model_trait(pool, one), ["environment", "r_prompts"])


# ------------------------------------------------------------------------------------------------ E5
def mean_diff_vs_pca(
    pool: pd.DataFrame, ctx: Ctx, vector_meta: Mapping[tuple[str, str], Mapping[str, Any]]
) -> pd.DataFrame:
    """B-T5: α = 0, v₁ = mean difference (vs α = 0), v₂ = PC1 norm-matched and oriented (vs v₁, paired on E1's
    stems and samples); cos recorded."""

    def one(g: pd.DataFrame, model: str, trait: str) -> list[dict[str, Any]]:
        zero, v = _sel(g, experiment="e1", kind="zero"), _sel(g, experiment="e1", kind="v")
        pca = _sel(g, experiment="e5", kind="pca")
        meta = vector_meta.get((model, trait), {})
        extra = {"cos_v1_v2": meta.get("cos_mean_diff_pca", math.nan), "pc1_flipped": meta.get("pc1_flipped")}
        key = (model, trait, "e5")
        return [
            {"condition": "alpha0", "reference": "", **extra, **paired(zero, None, zero, ctx, *key, "z")},
            {
                "condition": "v1_mean_diff",
                "reference": "alpha0",
                **extra,
                **paired(v, None, zero, ctx, *key, "v", is_ref=True),
            },
            {
                "condition": "v2_pca",
                "reference": "v1_mean_diff",
                **extra,
                **paired(pca, v, zero, ctx, *key, "pca", design=(model, trait)),
            },
        ]

    return _frame(_per_model_trait(pool, one), ["cos_v1_v2", "pc1_flipped"])


# ------------------------------------------------------------------------------------------------ E6
def nullspace_spanning(pool: pd.DataFrame, ctx: Ctx) -> pd.DataFrame:
    """B-T6: (a) per orthonormal u_i: v + u_i vs v, u_i vs 0, u_i vs v (the authors'), each with the Jensen–Shannon
    distance of the two 10-bin score histograms; (b) v + Σ c_j u_j vs v per k (per draw and pooled)."""

    def js(x: pd.DataFrame, ref: pd.DataFrame) -> dict[str, float]:
        return {"js_distance": S.js_distance(x["score"].to_numpy(float), ref["score"].to_numpy(float), bins=10)}

    def one(g: pd.DataFrame, model: str, trait: str) -> list[dict[str, Any]]:
        zero, v = _sel(g, experiment="e1", kind="zero"), _sel(g, experiment="e1", kind="v")
        rows: list[dict[str, Any]] = []
        a, b = g[g["experiment"] == "e6a"], g[g["experiment"] == "e6b"]
        for fam in dict.fromkeys(a["family"]):
            key = (model, trait, "e6a", fam)
            dim = _dim(g[g["experiment"] == "e1"], fam)
            for i in sorted(a.loc[a["family"] == fam, "direction"].unique()):
                vu, u = _sel(a, family=fam, direction=i, kind="v+u"), _sel(a, family=fam, direction=i, kind="u")
                common = {"part": "a", "family": fam, "direction": int(i), "subspace_dim": dim}
                rows += [
                    {
                        **common,
                        "condition": f"v+u_{i}",
                        "reference": "v",
                        **js(vu, v),
                        **paired(vu, v, zero, ctx, *key, i, "vu"),
                    },
                    {
                        **common,
                        "condition": f"u_{i}",
                        "reference": "alpha0",
                        **js(u, zero),
                        **paired(u, None, zero, ctx, *key, i, "u0", eff_ref=v),
                    },
                    {
                        **common,
                        "condition": f"u_{i}",
                        "reference": "v",
                        **js(u, v),
                        **paired(u, v, zero, ctx, *key, i, "uv"),
                    },
                ]
            common = {"part": "a", "family": fam, "direction": -1, "subspace_dim": dim}
            vu_all, u_all = _sel(a, family=fam, kind="v+u"), _sel(a, family=fam, kind="u")
            rows += [
                {
                    **common,
                    "condition": "v+u_i (all i)",
                    "reference": "v",
                    **js(vu_all, v),
                    **paired(vu_all, v, zero, ctx, *key, "all", "vu"),
                },
                {
                    **common,
                    "condition": "u_i (all i)",
                    "reference": "alpha0",
                    **js(u_all, zero),
                    **paired(u_all, None, zero, ctx, *key, "all", "u0"),
                },
            ]
        for fam in dict.fromkeys(b["family"]):
            dim = _dim(g[g["experiment"] == "e1"], fam)
            for k in sorted(b.loc[b["family"] == fam, "k"].unique()):
                key_b = (model, trait, "e6b", fam, k)
                common = {"part": "b", "family": fam, "k": int(k), "subspace_dim": dim}
                for dr in sorted(b.loc[(b["family"] == fam) & (b["k"] == k), "draw"].unique()):
                    rows.append(
                        {
                            **common,
                            "draw": int(dr),
                            "condition": f"v+sum_k[{k}, draw {dr}]",
                            "reference": "v",
                            **paired(_sel(b, family=fam, k=k, draw=dr), v, zero, ctx, *key_b, dr),
                        }
                    )
                rows.append(
                    {
                        **common,
                        "draw": -1,
                        "condition": f"v+sum_k[{k}]",
                        "reference": "v",
                        **paired(_sel(b, family=fam, k=k), v, zero, ctx, *key_b, "pooled"),
                    }
                )
        return rows

    return _frame(_per_model_trait(pool, one), ["part", "direction", "k", "draw", "js_distance"])


# ------------------------------------------------------------------------------------------------ E4
def logit_distances(rows: pd.DataFrame) -> pd.DataFrame:
    """B-T4: per model × trait × condition: mean L2 distance to z_v, KL, argmax agreement, top-10 overlap, and the
    ratios of the mean L2 and the mean KL to the norm-matched random control's (``ratio_to_random``,
    ``kl_ratio_to_random``); ``other trait[t]`` rows steer with trait t's vector rescaled to ‖v‖ in place of v
    (the authors' second control). α is the calibrated one (column ``alpha``)."""
    out = []
    for (model, trait), g in rows.groupby(["model", "trait"], sort=False):
        rand = g.loc[g["condition"] == "v+r", "l2"].mean()
        rand_kl = g.loc[g["condition"] == "v+r", "kl"].mean()
        for (cond, fam), h in g.groupby(["condition", "family"], sort=False, dropna=False):
            name = {"zero": "baseline: v vs 0", "v+r": "v+r[random]", "other": f"other trait[{fam}]"}.get(
                str(cond), f"v+u[{fam}]"
            )
            out.append(
                {
                    "model": model,
                    "trait": trait,
                    "condition": name,
                    "family": fam if cond in ("v+u", "other") else cond,
                    "alpha": float(h["alpha"].iloc[0]) if "alpha" in h else math.nan,
                    "n": len(h),
                    "n_prefixes": h["prefix"].nunique(),
                    "l2_mean": h["l2"].mean(),
                    "l2_std": h["l2"].std(ddof=1),
                    "kl_mean": h["kl"].mean(),
                    "argmax_agree": h["argmax_agree"].mean(),
                    "top10_overlap": h["top10_overlap"].mean(),
                    "ratio_to_random": h["l2"].mean() / rand if rand > 0 else math.nan,
                    "kl_ratio_to_random": h["kl"].mean() / rand_kl if rand_kl > 0 else math.nan,
                    "offset_norm": h["offset_norm"].mean(),
                }
            )
    return pd.DataFrame(out)


def e3_summary(t3: pd.DataFrame) -> dict[str, Any]:
    """The authors' E3 summary per model/trait: share of (environment, seed) cells with |d| < 0.3 and r > 0.6 (r
    across prompts); with few prompts per cell these are noisy; the paired TOST columns are the
    inference."""
    cells = t3[t3["condition"].str.startswith("v+u[") & (t3["seed"].astype(str) != "pooled")]
    return {
        f"{m}/{t}": {
            "n_cells": len(g),
            "share_d_below_0.3_and_r_above_0.6": float(((g["cohens_d"].abs() < 0.3) & (g["r_prompts"] > 0.6)).mean())
            if len(g)
            else None,
        }
        for (m, t), g in cells.groupby(["model", "trait"], sort=False)
    }


# ------------------------------------------------------------------------------------------ calibration
def calibration_table(frames: Sequence[pd.DataFrame], records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """B-T8: every calibration sweep row (model, trait, method, α, ‖αv‖/‖h‖, d with CI, perplexity ratio) with
    the chosen α marked (``chosen``), the paper's setting marked (``paper_setting``), and the pilot and design
    of the chosen α on the ``chosen`` row."""
    out = []
    for df, rec in zip(frames, records, strict=True):
        d = df.copy()
        d["chosen"] = (d["method"] == rec["method"]) & np.isclose(d["alpha"], rec["alpha"])
        d["paper_reading"] = d["method"] == rec.get("paper_method", rec["method"])
        design = rec.get("design") or {}
        for key in ("b0_calibration", "samples"):
            d[key] = np.where(d["chosen"], rec.get(key), None)
        for key in ("pilot_efficacy", "pilot_tost_p", "design_power", "sd_between", "sd_within", "samples_needed"):
            val = design.get(key)
            d[key] = np.where(d["chosen"], math.nan if val is None else val, math.nan)
        out.append(d)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
