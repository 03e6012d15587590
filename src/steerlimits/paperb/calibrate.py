"""Calibrated steering (docs/paperB.md, Calibration): choose α per model × trait on held-out calibration stems, and size
the evaluation from a pilot.

1. **Sweep.** On the calibration stems (disjoint from every evaluation stem, :func:`plan.stem_split`), generate
   α = 0 and αv for an α grid: the paper's α (1) plus the values where ‖αv‖ is a fraction ``rel_norms`` of the
   median residual norm at the injection layer (first position excluded), so one grid fits models whose raw
   vectors differ by two orders of magnitude. Both vector readings (``calibration.methods``: last token and token
   mean) are swept with ``samples`` per stem and α, in increasing α; a reading stops after the first α whose
   perplexity ratio exceeds :data:`STOP_FACTOR` × the limit.
2. **Criterion.** Per α: d(αv, 0) (signed pooled-SD d over generations, bootstrap CI) and the perplexity ratio
   exp(mean NLL(αv)) / exp(mean NLL(0)), where NLL is the mean per-token negative log-likelihood of the
   continuation under the *unsteered* model. The calibrated setting is the (reading, α) with the smallest
   ‖αv‖ / ‖h‖ such that d ≥ ``target_d`` and ratio ≤ ``max_ppl_ratio`` (the paper's reading wins ties). Where none
   qualifies, B0 fails on the calibration stems; the setting used downstream is then the paper's reading at the α
   with the largest d within the perplexity limit (else its smallest α), with ``s_failed`` samples per stem, and
   the calibration figure shows why. The paper's own setting (α = 1, last token) is always in the sweep.
3. **Pilot and power.** At the chosen α, v + u_s (``pilot_family``, seed s at sample s, the same draws as E1) is
   generated on the calibration stems, paired with αv and α = 0. From its per-sample contrasts of the
   effect-relative TOST (:func:`steerlimits.stats.effect_tost`) come the between-stem and within-stem SDs, and
   :func:`steerlimits.stats.samples_for_power` picks the samples per evaluation stem for ``power`` at the
   calibrated effect (capped at ``s_max``; the achieved design power is recorded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from steerlimits import stats as S
from steerlimits.hooks import forward_hidden
from steerlimits.prompting import left_pad, pad_id
from steerlimits.seeds import derive_seed

__all__ = [
    "NEEDED_MAX",
    "STOP_FACTOR",
    "Choice",
    "Design",
    "alpha_grid",
    "choose_alpha",
    "design_from_pilot",
    "median_residual_norm",
    "sweep_table",
]

#: The sweep of a reading stops once a perplexity ratio exceeds STOP_FACTOR × max_ppl_ratio (larger α only
#: degrade fluency further; the point that crossed is kept, so the figure shows where fluency broke).
STOP_FACTOR = 2.0
#: The largest samples per stem :func:`design_from_pilot` considers when it reports what the target power needs.
NEEDED_MAX = 256


@torch.no_grad()
def median_residual_norm(model: Any, tok: Any, prompts: Sequence[Sequence[int]], layer: int) -> float:
    """Median ‖h‖ of the residual at the input of block ``layer`` over the prompts' tokens, the first position of
    every prompt excluded (attention-sink outlier)."""
    ids, mask = left_pad(list(prompts), pad_id(tok))
    hidden = forward_hidden(model, ids, mask)[layer].float()
    keep = mask.bool().clone()
    first = keep.long().argmax(dim=1)
    keep[torch.arange(keep.shape[0]), first] = False
    return float(hidden[keep].norm(dim=-1).median())


def alpha_grid(paper_alpha: float, rel_norms: Sequence[float], v_norm: float, h_norm: float) -> list[dict[str, Any]]:
    """The α values of the sweep: ``paper_alpha`` and ``ρ · h_norm / v_norm`` for ρ in ``rel_norms``, sorted, each
    with its ``rel_norm`` = ‖αv‖ / median ‖h‖ and whether it is the paper's setting."""
    if not v_norm > 0:
        raise ValueError("the steering vector has zero norm")
    grid = {round(float(r) * h_norm / v_norm, 6): False for r in rel_norms}
    grid[float(paper_alpha)] = True
    return [{"alpha": a, "rel_norm": a * v_norm / h_norm, "paper_setting": paper} for a, paper in sorted(grid.items())]


def sweep_table(rows: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """One row per (method, α) of the sweep from scored generations (columns ``method``, ``alpha``, ``kind``,
    ``prompt_index``, ``score``, ``nll``): n, mean, d(αv, 0) with bootstrap CI, perplexity and its ratio to α = 0,
    the per-stem effect mean(αv − 0) and its SD over stems."""
    zero = rows[rows["kind"] == "zero"]
    z = zero["score"].to_numpy(float)
    ppl0 = math.exp(float(np.nanmean(zero["nll"].to_numpy(float))))
    z_stem = zero.groupby("prompt_index")["score"].mean()
    out = [
        {
            "method": "",
            "alpha": 0.0,
            "n": len(z),
            "mean": float(z.mean()),
            "std": float(z.std(ddof=1)),
            "cohens_d": 0.0,
            "d_ci_low": math.nan,
            "d_ci_high": math.nan,
            "ppl": ppl0,
            "ppl_ratio": 1.0,
            "effect": 0.0,
            "effect_sd_stems": math.nan,
        }
    ]
    for (method, alpha), g in rows[rows["kind"] == "v"].groupby(["method", "alpha"], sort=True):
        x = g["score"].to_numpy(float)
        c = S.compare(x, z, seed=derive_seed(seed, "calibration", method, float(alpha)), n_boot=n_boot)
        ppl = math.exp(float(np.nanmean(g["nll"].to_numpy(float))))
        per = g.groupby("prompt_index")["score"].mean().reindex(z_stem.index) - z_stem
        out.append(
            {
                "method": method,
                "alpha": float(alpha),
                "n": len(x),
                "mean": float(x.mean()),
                "std": float(x.std(ddof=1)),
                "cohens_d": c.cohens_d,
                "d_ci_low": c.d_ci_low,
                "d_ci_high": c.d_ci_high,
                "ppl": ppl,
                "ppl_ratio": ppl / ppl0,
                "effect": float(per.mean()),
                "effect_sd_stems": float(per.std(ddof=1)),
            }
        )
    return pd.DataFrame(out)


@dataclass
class Choice:
    method: str  # the vector reading
    alpha: float
    passed: bool  # B0 on the calibration stems
    reason: str
    d: float
    ppl_ratio: float
    rel_norm: float = float("nan")


def choose_alpha(sweep: pd.DataFrame, methods: Sequence[str], *, target_d: float, max_ppl_ratio: float) -> Choice:
    """The calibrated (reading, α): among ``methods`` (the first wins ties), the qualifying point (d ≥
    ``target_d``, perplexity ratio ≤ ``max_ppl_ratio``) with the smallest ‖αv‖ / ‖h‖ (column ``rel_norm``, or α
    with one reading); otherwise the point of the first method with the largest d within the perplexity limit
    (else its smallest α), marked as failed with the reason. ``sweep`` rows: method, alpha, cohens_d, ppl_ratio."""
    g = sweep[sweep["method"].isin(list(methods)) & (sweep["alpha"] > 0)].copy()
    if g.empty:
        raise ValueError(f"no sweep rows for methods {list(methods)}")
    g["order"] = g["method"].map({m: i for i, m in enumerate(methods)})
    g["size"] = g["rel_norm"] if "rel_norm" in g else g["alpha"]
    g = g.sort_values(["size", "order"])
    ok = g[(g["cohens_d"] >= target_d) & (g["ppl_ratio"] <= max_ppl_ratio)]
    which = ", ".join(methods)
    if len(ok):
        r = ok.iloc[0]
        return Choice(
            str(r["method"]),
            float(r["alpha"]),
            True,
            f"smallest ||alpha v|| / ||h|| with d >= {target_d:g} "
            f"and perplexity ratio <= {max_ppl_ratio:g} over {which}",
            float(r["cohens_d"]),
            float(r["ppl_ratio"]),
            float(r["size"]),
        )
    first = g[g["method"] == methods[0]]
    fluent = first[first["ppl_ratio"] <= max_ppl_ratio]
    if len(fluent):
        r = fluent.loc[fluent["cohens_d"].idxmax()]
        best = g[g["ppl_ratio"] <= max_ppl_ratio]["cohens_d"].max()
        why = (
            f"no alpha of {which} reaches d >= {target_d:g} within perplexity ratio <= {max_ppl_ratio:g} (largest d "
            f"within the limit: {float(best):.2f}; used: {methods[0]}, d {float(r['cohens_d']):.2f} at alpha "
            f"{float(r['alpha']):.4g})"
        )
    else:
        r = first.iloc[0]
        why = f"every alpha of {methods[0]} exceeds the perplexity limit {max_ppl_ratio:g}"
    return Choice(
        str(r["method"]), float(r["alpha"]), False, why, float(r["cohens_d"]), float(r["ppl_ratio"]), float(r["size"])
    )


@dataclass
class Design:
    """Samples per evaluation stem from the pilot (all SDs in score units, per stem)."""

    effect: float  # mean over calibration stems of (alpha v - 0)
    sd_between: float
    sd_within: float
    pilot_stems: int
    pilot_samples: int
    pilot_efficacy: float
    pilot_tost_p: float
    n_eval_stems: int
    samples: int
    design_power: float
    reached: bool
    note: str
    #: smallest samples per stem (up to :data:`NEEDED_MAX`) that would reach the target power with these stems;
    #: None when even that many do not (the between-stem SD alone is too large: more stems are needed)
    samples_needed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_sample(df: pd.DataFrame) -> pd.Series:
    return df.groupby(["prompt_index", "sample"])["score"].mean()


def design_from_pilot(
    zero: pd.DataFrame,
    v: pd.DataFrame,
    pert: pd.DataFrame,
    *,
    n_eval_stems: int,
    delta: float,
    tost_alpha: float,
    power: float,
    s_min: int,
    s_max: int,
) -> Design:
    """Samples per evaluation stem for the paired effect-relative TOST.

    ``zero``, ``v``, ``pert`` are the pilot's scored rows (``prompt_index``, ``sample``, ``score``) of α = 0, αv
    and α(v + u_s) on the calibration stems, sample-paired (common random numbers). Per (stem, sample) the two
    contrasts of :func:`steerlimits.stats.effect_tost` are formed; their within-stem variance (over samples) and
    the between-stem variance of stem means give ``sd² = sd_between² + sd_within² / s``, the larger contrast SD
    is used, and :func:`steerlimits.stats.samples_for_power` picks ``s``.
    """
    joined = pd.concat({"x": _per_sample(pert), "r": _per_sample(v), "z": _per_sample(zero)}, axis=1).dropna()
    if joined.empty:
        raise ValueError("the pilot has no (stem, sample) present in all three conditions")
    x, r, z = (joined[c].to_numpy(float) for c in ("x", "r", "z"))
    stems = joined.index.get_level_values(0).to_numpy()
    lo, hi = (x - z) - (1 - delta) * (r - z), (1 + delta) * (r - z) - (x - z)
    sb, sw = 0.0, 0.0
    n_per = pd.Series(stems).value_counts()
    s_pilot = float(n_per.mean())
    for c in (lo, hi):
        frame = pd.DataFrame({"stem": stems, "c": c})
        within = float(frame.groupby("stem")["c"].var(ddof=1).mean()) if n_per.min() > 1 else 0.0
        within = 0.0 if math.isnan(within) else within
        between = float(frame.groupby("stem")["c"].mean().var(ddof=1)) - within / s_pilot
        sb, sw = max(sb, math.sqrt(max(between, 0.0))), max(sw, math.sqrt(within))
    by_stem = joined.groupby(level=0).mean()
    res = S.effect_tost(by_stem["x"], by_stem["r"], by_stem["z"], delta=delta)
    effect = float((by_stem["r"] - by_stem["z"]).mean())
    samples, pw = S.samples_for_power(
        n_eval_stems, effect, sb, sw, delta=delta, alpha=tost_alpha, target=power, s_min=s_min, s_max=s_max
    )
    reached = pw >= power
    needed: int | None = samples
    if not reached:
        s_need, pw_need = S.samples_for_power(
            n_eval_stems,
            effect,
            sb,
            sw,
            delta=delta,
            alpha=tost_alpha,
            target=power,
            s_min=s_max,
            s_max=max(s_max, NEEDED_MAX),
        )
        needed = s_need if pw_need >= power else None
    note = (
        f"power {pw:.2f} >= {power:g} with {samples} samples per stem"
        if reached
        else f"budget cap: {s_max} samples per stem give power {pw:.2f} < {power:g} (needed: "
        + (
            f"{needed} samples per stem)"
            if needed
            else "none: no positive steering effect to be equivalent to)"
            if not effect > 0
            else f"more than {NEEDED_MAX} per stem, i.e. more stems)"
        )
    )
    return Design(
        effect,
        sb,
        sw,
        int(by_stem.shape[0]),
        int(round(s_pilot)),
        res.efficacy,
        res.p,
        n_eval_stems,
        samples,
        pw,
        reached,
        note,
        needed,
    )


def summary(choice: Choice, design: Design | None, grid: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """The calibration record the downstream steps read (``calibration.json``)."""
    return {
        "method": choice.method,
        "alpha": choice.alpha,
        "rel_norm": choice.rel_norm,
        "b0_calibration": choice.passed,
        "reason": choice.reason,
        "d_calibration": choice.d,
        "ppl_ratio_calibration": choice.ppl_ratio,
        "samples": design.samples if design else None,
        "design": design.to_dict() if design else None,
        "grid": list(grid),
        **extra,
    }
