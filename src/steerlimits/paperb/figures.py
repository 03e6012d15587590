"""Figures B-F1 … B-F9 (docs/paperB.md, The figures; B-F9 the calibration) from the paper-B tables; the project's one
style (:mod:`steerlimits.plotting`).

Each function takes tables and returns a matplotlib figure; :func:`all_figures` returns ``{figure id: figure}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from steerlimits.paperb import FIGURE_FILES
from steerlimits.plotting import colour_for, set_style

__all__ = [
    "FIGURES",
    "all_figures",
    "b0_status",
    "f1_orthogonal",
    "f2_environments",
    "f3_logits",
    "f4_alpha",
    "f5_pca",
    "f6_spanning",
    "f7_spectra",
    "f8_efficacy",
    "f9_calibration",
]

V_BLUE, VU_ORANGE = "#0066FF", "#FF9900"
FAMILIES = ["null_jac", "null_cov", "random_orth", "active"]
FIGURES = FIGURE_FILES


def _yerr(est: Any, lo: Any, hi: Any) -> np.ndarray:
    """Asymmetric error bars (2, n) from an interval; 0 where missing or where a bootstrap interval excludes the
    estimate (possible for ratios)."""
    e, lo, hi = (np.asarray(x, float) for x in (est, lo, hi))
    return np.clip(np.nan_to_num(np.vstack([e - lo, hi - e])), 0.0, None)


def _models(t: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(t["model"]))


def _traits(t: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(t["trait"]))


def _legend_below(fig: plt.Figure, ax: Any, ncol: int = 4) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))


def f1_orthogonal(t1: pd.DataFrame) -> plt.Figure:
    """Grouped bars: d(v + u, v) for random_orth pooled over seeds, per trait (x) and model (bars), 95 % CI."""
    rows = t1[t1["condition"] == "v+u[random_orth]"]
    models, traits = _models(t1), _traits(t1)
    fig, ax = plt.subplots(figsize=(3.3, 2.8))
    width = min(0.35, 0.8 / max(len(models), 1))
    x = np.arange(len(traits))
    for i, m in enumerate(models):
        r = rows[rows["model"] == m].set_index("trait").reindex(traits)
        d = r["cohens_d"].to_numpy(float)
        err = _yerr(d, r["d_ci_low"], r["d_ci_high"])
        ax.bar(x + (i - (len(models) - 1) / 2) * width, d, width, yerr=err, capsize=2, color=colour_for(m), label=m)
    ax.axhspan(-0.2, 0.2, color="0.85", zorder=0, label="|d| < 0.2")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, traits)
    ax.set_ylabel("Cohen's d (v + u vs v)")
    ax.set_title("Orthogonal perturbation (random_orth)", fontsize=8)
    _legend_below(fig, ax, ncol=2)
    return fig


def f2_environments(t3: pd.DataFrame) -> plt.Figure:
    """One heatmap per model: rows traits, columns environments, cell = mean over seeds of |d(v + u_s, v)|."""
    seeds = t3[t3["condition"].str.startswith("v+u[") & (t3["seed"] != "pooled")].copy()
    seeds["abs_d"] = seeds["cohens_d"].abs()
    models = _models(t3)
    envs = ["in_distribution", "topic_shift", "genre_shift"]
    envs = [e for e in envs if e in set(seeds["environment"])] or list(dict.fromkeys(seeds["environment"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.0 * len(models) + 0.8, 2.4), squeeze=False)
    im = None
    for ax, m in zip(axes[0], models, strict=True):
        grid = (
            seeds[seeds["model"] == m]
            .pivot_table(index="trait", columns="environment", values="abs_d", aggfunc="mean")
            .reindex(columns=envs)
        )
        im = ax.imshow(grid.to_numpy(float), cmap="RdYlGn_r", vmin=0.1, vmax=0.7, aspect="auto")
        for (i, j), val in np.ndenumerate(grid.to_numpy(float)):
            ax.text(j, i, "–" if np.isnan(val) else f"{val:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(envs)), [e.replace("_", " ").capitalize() for e in envs], rotation=20, fontsize=6)
        ax.set_yticks(range(len(grid.index)), grid.index)
        ax.set_title(m, fontsize=8)
        ax.grid(False)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label="Effect size |d| (mean over seeds)", shrink=0.9)
    return fig


def f3_logits(t4: pd.DataFrame) -> plt.Figure:
    """Panel per model; per trait bars of mean L2 logit distance: baseline, orthogonal, null_jac, random, and another
    trait's vector at ‖v‖ (mean over the other traits) where there is one."""
    models, traits = _models(t4), _traits(t4)
    t4 = t4.assign(condition=t4["condition"].where(~t4["condition"].str.startswith("other trait"), "other trait"))
    bars = [
        ("baseline: v vs 0", "baseline ||z(v)-z(0)||", 0.9, ""),
        ("v+u[random_orth]", "orthogonal", 0.6, ""),
        ("v+u[null_jac]", "null_jac", 0.45, ".."),
        ("v+r[random]", "random (norm-matched)", 0.3, "//"),
        ("other trait", "other trait's vector", 0.2, "xx"),
    ]
    bars = [b for b in bars if (t4["condition"] == b[0]).any()]
    width = 0.8 / len(bars)
    fig, axes = plt.subplots(1, len(models), figsize=(2.6 * len(models) + 0.6, 2.8), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        x = np.arange(len(traits))
        for i, (cond, label, alpha, hatch) in enumerate(bars):
            r = t4[(t4["model"] == m) & (t4["condition"] == cond)].groupby("trait")[["l2_mean", "l2_std"]].mean()
            r = r.reindex(traits)
            ax.bar(
                x + (i - (len(bars) - 1) / 2) * width,
                r["l2_mean"].to_numpy(float),
                width,
                yerr=np.nan_to_num(r["l2_std"].to_numpy(float)),
                capsize=1.5,
                color=colour_for(m),
                alpha=alpha,
                hatch=hatch,
                edgecolor="k",
                lw=0.3,
                label=label,
            )
        ax.set_xticks(x, traits)
        ax.set_title(m, fontsize=8)
    axes[0][0].set_ylabel("L2 logit distance")
    _legend_below(fig, axes[0][0], ncol=min(len(bars), 3))
    return fig


def f4_alpha(t2: pd.DataFrame) -> plt.Figure:
    """Grid models × traits: mean score vs α (multiples of the calibrated α) for v (blue circles, 95 % CI) and
    v + u (orange squares, ±1 std over seeds of the per-seed means)."""
    models, traits = _models(t2), _traits(t2)
    fig, axes = plt.subplots(
        len(models), len(traits), figsize=(2.4 * len(traits) + 0.4, 2.0 * len(models) + 0.5), squeeze=False, sharex=True
    )
    for r, m in enumerate(models):
        for c, tr in enumerate(traits):
            ax, g = axes[r][c], t2[(t2["model"] == m) & (t2["trait"] == tr)]
            v = g[g["condition"].isin(["alpha0", "v"])].sort_values("alpha")
            sd = v["std"].to_numpy(float) / np.sqrt(v["n_gen"].to_numpy(float))
            ax.plot(v["alpha"], v["mean"], "o-", color=V_BLUE, ms=3, label="αv (95 % CI)")
            ax.fill_between(v["alpha"], v["mean"] - 1.96 * sd, v["mean"] + 1.96 * sd, color=V_BLUE, alpha=0.15, lw=0)
            per_seed = g[g["condition"].str.startswith("v+u[") & (g["seed"] != "pooled")]
            agg = per_seed.groupby("alpha")["mean"].agg(["mean", "std"]).reset_index()
            zero = g[g["condition"] == "alpha0"]
            if len(zero):
                agg = pd.concat(
                    [pd.DataFrame({"alpha": [0.0], "mean": [float(zero["mean"].iloc[0])], "std": [0.0]}), agg]
                ).sort_values("alpha")
            ax.plot(agg["alpha"], agg["mean"], "s--", color=VU_ORANGE, ms=3, label="v + u (mean of seed means ± 1 sd)")
            ax.fill_between(
                agg["alpha"],
                agg["mean"] - agg["std"].fillna(0),
                agg["mean"] + agg["std"].fillna(0),
                color=VU_ORANGE,
                alpha=0.2,
                lw=0,
            )
            ax.set_title(f"{m} · {tr}", fontsize=7)
            if r == len(models) - 1:
                ax.set_xlabel("α (calibrated α at the 1 × point)")
            if c == 0:
                ax.set_ylabel("mean score")
    _legend_below(fig, axes[0][0], ncol=2)
    return fig


def f5_pca(t5: pd.DataFrame) -> plt.Figure:
    """Scatter per (model, trait): x = cos(v₁, v₂), y = signed d(v₂, v₁); ±0.2 band, dashed 'No effect' at 0."""
    rows = t5[t5["condition"] == "v2_pca"]
    fig, ax = plt.subplots(figsize=(3.3, 2.8))
    markers = ["o", "s", "^", "D", "v", "P"]
    ax.axhspan(-0.2, 0.2, color="0.88", zorder=0, label="|d| < 0.2")
    ax.axhline(0, color="k", ls="--", lw=0.8, label="No effect")
    for i, m in enumerate(_models(rows)):
        r = rows[rows["model"] == m]
        ax.errorbar(
            r["cos_v1_v2"],
            r["cohens_d"],
            yerr=_yerr(r["cohens_d"], r["d_ci_low"], r["d_ci_high"]),
            fmt=markers[i % len(markers)],
            color=colour_for(m),
            ms=4,
            capsize=2,
            label=m,
        )
        for _, row in r.iterrows():
            ax.annotate(
                str(row["trait"])[:4],
                (row["cos_v1_v2"], row["cohens_d"]),
                fontsize=5,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("cos(mean difference, PC1)")
    ax.set_ylabel("Cohen's d (PCA vs mean diff.)")
    _legend_below(fig, ax, ncol=2)
    return fig


def f6_spanning(t6: pd.DataFrame) -> plt.Figure:
    """Left: |d(v + u_i, v)| per orthonormal u_i (strip, model offset ±0.12, mean and IQR); right: |d| vs k."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(7.2, 2.8))
    a = t6[
        (t6["part"] == "a") & (t6["direction"] >= 0) & (t6["reference"] == "v") & t6["condition"].str.startswith("v+u_")
    ]
    traits, models = _traits(t6), _models(t6)
    rng = np.random.default_rng(0)
    offs = np.linspace(-0.12, 0.12, len(models)) if len(models) > 1 else [0.0]
    for j, m in enumerate(models):
        for i, tr in enumerate(traits):
            for fam, mk in (("null_jac", "o"), ("random_orth", "x")):
                d = a[(a["model"] == m) & (a["trait"] == tr) & (a["family"] == fam)]["cohens_d"].abs().to_numpy(float)
                if d.size == 0:
                    continue
                x = i + offs[j] + (0.04 if fam == "random_orth" else -0.04)
                ax.scatter(
                    x + rng.uniform(-0.025, 0.025, d.size),
                    d,
                    s=6,
                    marker=mk,
                    color=colour_for(m),
                    alpha=0.7,
                    label=f"{m} ({fam})" if i == 0 else None,
                )
                q1, q3 = np.percentile(d, [25, 75])
                ax.plot([x, x], [q1, q3], color="0.5", lw=3, alpha=0.6)
                ax.plot([x - 0.03, x + 0.03], [d.mean()] * 2, color="k", lw=1.2)
    ax.axhline(0.2, color="red", ls="--", lw=0.8)
    ax.set_xticks(range(len(traits)), traits)
    ax.set_xlim(-0.5, len(traits) - 0.5)
    ax.set_ylim(-0.05, 1)
    ax.set_ylabel("|d(v + u_i, v)|")
    ax.legend(fontsize=5, loc="upper right")
    b = t6[(t6["part"] == "b") & (t6["draw"] == -1)]
    for (m, tr, fam), g in b.groupby(["model", "trait", "family"], sort=False):
        g = g.sort_values("k")
        bx.errorbar(
            g["k"],
            g["cohens_d"],
            yerr=_yerr(g["cohens_d"], g["d_ci_low"], g["d_ci_high"]),
            fmt="o-" if tr == traits[0] else "s--",
            color=colour_for(str(m)),
            ms=3,
            capsize=2,
            label=f"{m} · {tr} ({fam})",
        )
    for y in (-0.2, 0.2):
        bx.axhline(y, color="red", ls="--", lw=0.8)
    bx.set_xscale("log")
    bx.set_xlabel("k (directions combined)")
    bx.set_ylabel("d(v + Σ c_j u_j, v), 95 % CI")
    bx.legend(fontsize=5)
    fig.tight_layout()
    return fig


def f7_spectra(
    spectra: Mapping[str, Mapping[str, Mapping[int, np.ndarray]]],
    labels: Mapping[str, Mapping[int, str]],
    thresholds: Mapping[str, list[float]],
    steered: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> plt.Figure:
    """Per model: 3-D surfaces (σ/σ₁, index 0–99, layer) for both estimators (covariance without outlier tokens,
    plain Jacobian), then 1×3 semilog spectra at L/4, L/2, 3L/4: covariance with and without outlier tokens (and
    with position 0 at the steering layer), Jacobian plain and Fisher at 0, and at the steering layer the
    Fisher form at the steered point αv per trait (``steered``: model -> trait -> singular values). Every
    spectrum is singular values relative to σ₁, so one threshold line means one thing for both estimators."""
    models = list(spectra)
    fig = plt.figure(figsize=(14, 2.9 * len(models)))
    for r, m in enumerate(models):
        for c, method in enumerate(("covariance_no_outliers", "jacobian")):
            if method not in spectra[m]:
                method = "covariance" if method.startswith("covariance") else method
            ax = fig.add_subplot(len(models), 5, 5 * r + c + 1, projection="3d")
            layers = sorted(spectra[m][method])
            z = np.array(
                [
                    np.log10(np.maximum(spectra[m][method][lay][:100] / spectra[m][method][lay][0], 1e-12))
                    for lay in layers
                ]
            )
            xx, yy = np.meshgrid(np.arange(z.shape[1]), np.arange(len(layers)))
            ax.plot_surface(xx, yy, z, cmap="viridis", alpha=0.85, lw=0)
            ax.plot_wireframe(xx, yy, z, color="0.5", lw=0.2, rstride=1, cstride=5)
            ax.scatter(xx[:, ::5], yy[:, ::5], z[:, ::5], s=2, color="k")
            ax.set_yticks(range(len(layers)), [labels[m].get(lay, str(lay)) for lay in layers], fontsize=5)
            ax.set_xlabel("index", fontsize=6)
            ax.set_zlabel("log10 s/s_max", fontsize=6)
            ax.set_title(f"{m}: {method}", fontsize=7)
        layers = (
            sorted(spectra[m]["covariance"])[:3]
            if len(spectra[m]["covariance"]) <= 3
            else [lay for lay in sorted(spectra[m]["covariance"]) if labels[m].get(lay) in ("L/4", "L/2", "3L/4")]
        )
        for c, lay in enumerate(layers[:3]):
            ax = fig.add_subplot(len(models), 5, 5 * r + 3 + c)
            styles = (
                ("covariance", "#4C72B0", "-", "covariance (outliers kept)"),
                ("covariance_no_outliers", "#4C72B0", "--", "covariance (outliers excluded)"),
                ("covariance_with_pos0", "0.5", ":", "covariance incl. pos 0"),
                ("jacobian", "#C44E52", "-", "Jacobian JᵀJ at 0"),
                ("jacobian_fisher", "#C44E52", "--", "Jacobian Fisher at 0"),
            )
            for method, colour, ls, label in styles:
                s = spectra[m].get(method, {}).get(lay)
                if s is not None and s[0] > 0:
                    ax.semilogy(np.maximum(s / s[0], 1e-12), color=colour, lw=0.9, ls=ls, label=label)
            for trait, s in (steered or {}).get(m, {}).items() if labels[m].get(lay) == "L/2" else []:
                if s[0] > 0:
                    ax.semilogy(
                        np.maximum(s / s[0], 1e-12), color="#8C564B", lw=0.8, ls="-.", label=f"Fisher at αv ({trait})"
                    )
            for t in sorted(set(thresholds["covariance"]) | set(thresholds["jacobian"])):
                ax.axhline(t, color="k", ls=":", lw=0.5)
            ax.set_title(f"{m}: layer {lay} ({labels[m].get(lay, '')})", fontsize=7)
            ax.set_xlabel("index")
            ax.set_ylabel("σ / σ₁", fontsize=6)
            ax.legend(fontsize=4)
    fig.tight_layout()
    return fig


def b0_status(
    t1: pd.DataFrame, target_d: float, max_ppl_ratio: float, t8: pd.DataFrame | None = None
) -> dict[tuple[str, str], tuple[bool, str]]:
    """(model, trait) -> (B0 holds, short reason) from B-T1's ``v`` row on the evaluation stems and, with B-T8,
    whether an α qualified on the calibration stems (as the B0 claim row)."""
    cal: dict[tuple[str, str], bool] = {}
    if t8 is not None and len(t8) and "chosen" in t8:
        for r in t8[t8["chosen"].astype(bool)].itertuples():
            cal[(str(r.model), str(r.trait))] = bool(r.b0_calibration)
    out = {}
    for r in t1[t1["condition"] == "v"].itertuples():
        d, ppl = float(r.cohens_d), float(getattr(r, "ppl_ratio", np.nan))
        cal_ok = cal.get((str(r.model), str(r.trait)), True)
        ok = d >= target_d and ppl <= max_ppl_ratio and cal_ok
        why = (
            f"B0 fails: d = {d:.2f}"
            + (f" < {target_d:g}" if not d >= target_d else "")
            + (f", ppl ×{ppl:.1f} > {max_ppl_ratio:g}" if not ppl <= max_ppl_ratio else "")
            + ("" if cal_ok else "; no α qualified (B-F9)")
        )
        out[(str(r.model), str(r.trait))] = (ok, "" if ok else why)
    return out


def f8_efficacy(
    t1: pd.DataFrame,
    target_d: float = 1.0,
    max_ppl_ratio: float = 2.0,
    delta: float = 0.2,
    t8: pd.DataFrame | None = None,
) -> plt.Figure:
    """Efficacy of v + u per family (pooled over seeds) with paired bootstrap 95 % CIs, per model × trait; the
    band [1 − δ, 1 + δ] of the effect-relative TOST and a line at 0.95. Panels where the precondition B0 fails
    (no α qualified on the calibration stems, or the evaluation d(αv, 0) or perplexity ratio misses its
    threshold: efficacy is then a ratio of noise) are
    greyed and labelled; a family whose subspace ∩ v⊥ has dimension < 2 (no independent draws) is marked
    "dim < 2", one that was not generated "n/a"."""
    rows = t1[t1["seed"] == "pooled"]
    status = b0_status(t1, target_d, max_ppl_ratio, t8)
    models, traits = _models(t1), _traits(t1)
    fig, axes = plt.subplots(
        len(models), len(traits), figsize=(2.4 * len(traits) + 0.4, 1.9 * len(models) + 0.4), squeeze=False, sharey=True
    )
    for r, m in enumerate(models):
        for c, tr in enumerate(traits):
            ax = axes[r][c]
            g = rows[(rows["model"] == m) & (rows["trait"] == tr)].set_index("family").reindex(FAMILIES)
            e = g["efficacy"].to_numpy(float)
            err = _yerr(e, g["eff_ci_low"], g["eff_ci_high"])
            ax.errorbar(range(len(FAMILIES)), e, yerr=err, fmt="o", color=colour_for(m), capsize=2)
            ax.axhspan(1 - delta, 1 + delta, color="0.85", zorder=0)
            ax.axhline(0.95, color="red", ls="--", lw=0.8)
            ax.axhline(1.0, color="0.6", lw=0.5)
            ax.set_xticks(range(len(FAMILIES)), FAMILIES, rotation=25, fontsize=6)
            ax.set_title(f"{m} · {tr}", fontsize=7)
            dims = g["subspace_dim"].to_numpy(float) if "subspace_dim" in g else np.full(len(FAMILIES), np.nan)
            for i, dim in enumerate(dims):  # families whose draws cannot be independent (rows read na)
                if dim < 2 or np.isnan(e[i]):
                    ax.text(
                        i,
                        0.03,
                        "dim < 2" if dim < 2 else "n/a",
                        transform=ax.get_xaxis_transform(),
                        ha="center",
                        va="bottom",
                        fontsize=5,
                        color="#B22222",
                    )
            ok, why = status.get((m, tr), (False, "B0 unavailable"))
            if not ok:
                ax.set_facecolor("0.92")
                ax.text(0.5, 0.97, why, transform=ax.transAxes, ha="center", va="top", fontsize=6, color="#B22222")
            if c == 0:
                ax.set_ylabel("efficacy")
    fig.tight_layout()
    return fig


def f9_calibration(t8: pd.DataFrame, target_d: float = 1.0, max_ppl_ratio: float = 2.0) -> plt.Figure:
    """Calibration (B-T8): per model × trait, d(αv, 0) (left axis, with 95 % CI; both vector readings) and the
    perplexity ratio (right axis, log) against ‖αv‖ / median ‖h‖ on the calibration stems; the target d and the
    perplexity limit as lines, the chosen α circled, the paper's α = 1 marked; a panel whose pair has no
    qualifying α says so (B0 fails on the calibration stems)."""
    sweep = t8[t8["method"].astype(str) != ""]
    models, traits = _models(sweep), _traits(sweep)
    fig, axes = plt.subplots(
        len(models), len(traits), figsize=(2.6 * len(traits) + 0.6, 2.0 * len(models) + 0.6), squeeze=False
    )
    styles = {"mean_diff_last": ("o-", 1.0), "mean_diff_mean": ("s--", 0.6), "pca": ("^:", 0.6)}
    for r, m in enumerate(models):
        for c, tr in enumerate(traits):
            ax = axes[r][c]
            g = sweep[(sweep["model"] == m) & (sweep["trait"] == tr)]
            bx = ax.twinx()
            for method, h in g.groupby("method", sort=False):
                h = h.sort_values("rel_norm")
                fmt, a = styles.get(str(method), ("d-", 0.6))
                ax.errorbar(
                    h["rel_norm"],
                    h["cohens_d"],
                    yerr=_yerr(h["cohens_d"], h["d_ci_low"], h["d_ci_high"]),
                    fmt=fmt,
                    color=colour_for(m),
                    alpha=a,
                    ms=3,
                    capsize=1.5,
                    label=f"d, {method}",
                )
                bx.plot(
                    h["rel_norm"],
                    h["ppl_ratio"],
                    fmt,
                    color="#8C564B",
                    alpha=a,
                    ms=2.5,
                    lw=0.8,
                    label=f"ppl ratio, {method}",
                )
                paper = h[h["paper_setting"].astype(bool)]
                ax.scatter(
                    paper["rel_norm"],
                    paper["cohens_d"],
                    marker="x",
                    color="k",
                    s=18,
                    zorder=5,
                    label="paper's α = 1" if method == "mean_diff_last" else None,
                )
            chosen = g[g["chosen"].astype(bool)]
            ax.scatter(
                chosen["rel_norm"],
                chosen["cohens_d"],
                s=70,
                facecolors="none",
                edgecolors="red",
                zorder=6,
                label="chosen α",
            )
            ax.axhline(target_d, color="red", ls="--", lw=0.7)
            bx.axhline(max_ppl_ratio, color="#8C564B", ls=":", lw=0.7)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap on short ranges
            bx.set_yscale("log")
            bx.grid(False)
            ax.set_title(f"{m} · {tr}", fontsize=7)
            passed = bool(chosen["b0_calibration"].iloc[0]) if len(chosen) else False
            if not passed:
                ax.set_facecolor("0.92")
                ax.text(
                    0.5,
                    0.97,
                    f"no α with d ≥ {target_d:g} and ppl ratio ≤ {max_ppl_ratio:g}",
                    transform=ax.transAxes,
                    ha="center",
                    va="top",
                    fontsize=5.5,
                    color="#B22222",
                )
            if c == 0:
                ax.set_ylabel("d(αv, 0)")
            if c == len(traits) - 1:
                bx.set_ylabel("perplexity ratio", fontsize=6)
            if r == len(models) - 1:
                ax.set_xlabel("‖αv‖ / median ‖h‖")
    h1, l1 = axes[0][0].get_legend_handles_labels()
    fig.legend(h1, l1, loc="lower center", ncol=4, frameon=False, fontsize=6, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def all_figures(
    tables: Mapping[str, pd.DataFrame],
    spectra: Mapping[str, Any],
    labels: Mapping[str, Any],
    thresholds: Mapping[str, list[float]],
    *,
    steered: Mapping[str, Any] | None = None,
    target_d: float = 1.0,
    max_ppl_ratio: float = 2.0,
    delta: float = 0.2,
) -> dict[str, plt.Figure]:
    set_style()
    return {
        "B-F1": f1_orthogonal(tables["t1"]),
        "B-F2": f2_environments(tables["t3"]),
        "B-F3": f3_logits(tables["t4"]),
        "B-F4": f4_alpha(tables["t2"]),
        "B-F5": f5_pca(tables["t5"]),
        "B-F6": f6_spanning(tables["t6"]),
        "B-F7": f7_spectra(spectra, labels, thresholds, steered),
        "B-F8": f8_efficacy(tables["t1"], target_d, max_ppl_ratio, delta, tables.get("t8")),
        "B-F9": f9_calibration(tables["t8"], target_d, max_ppl_ratio),
    }
