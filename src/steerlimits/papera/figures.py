"""Paper A figures (docs/paperA.md): A-F1 concept surface, A-F2 top-k vs position, A-F3 sweep (+ per-position
companion), A-F4 many-shot (+ N × position heatmap), A-F5 soft prefix, A-F6 cross-prompt scale, A-F7 loss curves
of the black-box optimisers on steered and control targets.

One style (:func:`steerlimits.plotting.set_style`); each data figure has one panel per model × vector (rows:
models, columns: vectors); position 0 (the attention sink) is never plotted.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.ticker import NullFormatter

from steerlimits.plotting import set_style

__all__ = [
    "concept_surface",
    "loss_curves",
    "many_shot",
    "scale",
    "soft_prefix",
    "sweep",
    "sweep_positions",
    "topk_by_position",
]

NATURAL = ("#222222", "#555555")
STEERED = ("#4B0082", "#6A0DAD")


def _grid(df: pd.DataFrame, w: float, h: float) -> tuple[plt.Figure, np.ndarray, list[tuple[str, str]]]:
    models = list(dict.fromkeys(df["model"]))
    vectors = list(dict.fromkeys(df["vector"]))
    fig, axes = plt.subplots(len(models), len(vectors), figsize=(w * len(vectors), h * len(models)), squeeze=False)
    return fig, axes, [(m, v) for m in models for v in vectors]


def _ax(axes: np.ndarray, df: pd.DataFrame, model: str, vector: str) -> plt.Axes:
    """The panel of ``model`` × ``vector`` in a :func:`_grid`, titled."""
    models, vectors = list(dict.fromkeys(df["model"])), list(dict.fromkeys(df["vector"]))
    ax = axes[models.index(model)][vectors.index(vector)]
    ax.set_title(f"{model} / {vector}", fontsize=9)
    return ax


def concept_surface(seed: int = 0) -> plt.Figure:
    """A-F1: the reachable set as a surface; natural states on it, steered states off it."""
    set_style()
    x = y = np.linspace(-2, 2, 50)
    xx, yy = np.meshgrid(x, y)
    z = lambda a, b: 0.5 * np.sin(2 * a) * np.cos(2 * b) + 0.2 * np.cos(a + b)  # noqa: E731
    fig = plt.figure(figsize=(5, 4))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(xx, yy, z(xx, yy), cmap="Oranges", alpha=0.4, linewidth=0)
    ax.plot_wireframe(xx, yy, z(xx, yy), color="black", linewidth=0.2, rstride=4, cstride=4)
    rng = np.random.default_rng(seed)
    px, py = rng.uniform(-1.6, 1.6, 8), rng.uniform(-1.6, 1.6, 8)
    ax.scatter(px, py, z(px, py), color=NATURAL[0], s=18, label="natural states (reachable)", depthshade=False)
    lift = rng.choice([-1, 1], 8) * rng.uniform(0.35, 0.6, 8)
    ax.scatter(px, py, z(px, py) + lift, color=STEERED[0], s=18, marker="^", label="steered states", depthshade=False)
    for a, b, c, d in zip(px, py, z(px, py), lift):
        ax.plot([a, a], [b, b], [c, c + d], color=STEERED[1], lw=0.6, ls=":")
    ax.view_init(elev=60, azim=-60)
    ax.set_xticklabels([]), ax.set_yticklabels([]), ax.set_zticklabels([])
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title("Steering leaves the reachable set (concept)", fontsize=9)
    return fig


def topk_by_position(positions: pd.DataFrame) -> plt.Figure:
    """A-F2: mean top-1/top-2 L2 vs position, natural (dashed greys) vs steered (solid purples), ±1 std (on the
    log axis the band's lower edge is max(mean − std, mean / 10), so it never runs to 0)."""
    set_style()
    df = positions[(positions["experiment"] == "E1") & (positions["position"] >= 1)]
    fig, axes, panels = _grid(df, 6, 4)
    for model, vector in panels:
        ax = _ax(axes, df, model, vector)
        panel = df[(df["model"] == model) & (df["vector"] == vector)]
        positive = panel[["top1", "top2"]].to_numpy(float)
        zero_at = float(positive[positive > 0].min()) / 100 if (positive > 0).any() else 1e-12
        n_zero = 0
        for cond, colours, ls in (("natural", NATURAL, "--"), ("steered", STEERED, "-")):
            g = panel[panel["condition"] == cond]
            for k, col in enumerate(("top1", "top2")):
                s = g.groupby("position")[col].agg(["mean", "std"]).dropna(subset=["mean"]).fillna(0)
                n_zero += int((s["mean"] <= 0).sum())
                mean = s["mean"].clip(lower=zero_at)  # an exact 0 (bit-identical float32 state) has no log
                ax.plot(s.index, mean, ls=ls, color=colours[k], lw=1.2, label=f"{cond} top-{k + 1}")
                ax.fill_between(
                    s.index, np.maximum(mean - s["std"], mean / 10), mean + s["std"], color=colours[k], alpha=0.1, lw=0
                )
        if n_zero:
            ax.text(
                0.99,
                0.02,
                f"mean exactly 0 drawn at {zero_at:.0e}",
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=6,
            )
        ax.set_yscale("log")
        ax.set_xlabel("position t (0 skipped)")
        ax.set_ylabel("L2 to target at hidden_states[l+1]")
        ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def sweep(e2: pd.DataFrame) -> plt.Figure:
    """A-F3: ‖steered − natural‖ and ‖recovered − natural‖ per token vs α (std over prompts)."""
    set_style()
    fig, axes, panels = _grid(e2, 4, 4)
    for model, vector in panels:
        ax = _ax(axes, e2, model, vector)
        g = e2[(e2["model"] == model) & (e2["vector"] == vector)].sort_values("alpha")
        ax.errorbar(
            g["alpha"],
            g["steered_minus_natural_mean"],
            yerr=g["steered_minus_natural_std"],
            color="black",
            marker="o",
            ms=4,
            capsize=2,
            label="‖steered − natural‖",
        )
        ax.errorbar(
            g["alpha"],
            g["recovered_minus_natural_mean"],
            yerr=g["recovered_minus_natural_std"],
            color="grey",
            ls="--",
            marker="s",
            ms=4,
            capsize=2,
            label="‖recovered − natural‖",
        )
        ax.grid(alpha=0.3)
        ax.set_xlabel("α")
        ax.set_ylabel("mean per-token L2")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def sweep_positions(positions: pd.DataFrame) -> plt.Figure:
    """A-F3 companion: steered top-1 per position for each α (#4B0082 → #FFFF00 by |α|)."""
    set_style()
    df = positions[(positions["experiment"] == "E2") & (positions["position"] >= 1)]
    cmap = LinearSegmentedColormap.from_list("a_f3", ["#4B0082", "#FFFF00"])
    fig, axes, panels = _grid(df, 4, 4)
    for model, vector in panels:
        ax = _ax(axes, df, model, vector)
        g = df[(df["model"] == model) & (df["vector"] == vector)]
        alphas = sorted(g["alpha"].unique(), key=abs)
        for i, a in enumerate(alphas):
            s = g[g["alpha"] == a].groupby("position")["top1"].mean()
            ax.plot(s.index, s.to_numpy(), color=cmap(i / max(1, len(alphas) - 1)), lw=1, label=f"α={a:g}")
        ax.set_yscale("log")
        ax.set_xlabel("position t")
        ax.set_ylabel("steered top-1 L2")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def _kind(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Rows of one demonstration kind plus the shared N = 0 rows (older tables have no ``kind``: all ``icl``)."""
    if "kind" not in df:
        return df
    return df[df["kind"].isin([kind, "none"])]


def many_shot(summary: pd.DataFrame, positions: pd.DataFrame) -> tuple[plt.Figure, plt.Figure]:
    """A-F4 (two panels per model × vector) and its N × position heatmap; many-shot ICL solid, neutral
    demonstrations of the same lengths dashed."""
    set_style()
    keys = list(dict.fromkeys(zip(summary["model"], summary["vector"])))
    fig, axes = plt.subplots(len(keys), 2, figsize=(16, 5 * len(keys)), squeeze=False)
    heat, haxes = plt.subplots(len(keys), 1, figsize=(8, 3.5 * len(keys)), squeeze=False)
    for row, (model, vector) in enumerate(keys):
        g = summary[(summary["model"] == model) & (summary["vector"] == vector)]
        ax = axes[row][0]
        ax.set_title(f"{model} / {vector}", fontsize=9)
        twin = ax.twinx()
        for kind, ls in (("icl", "-"), ("neutral", "--")):
            m = _kind(g, kind).groupby("n_shots").mean(numeric_only=True)
            if kind == "neutral" and (len(m) < 2 or "kind" not in g):
                continue
            spans = ("instruction", "response", "all") if kind == "icl" else ("response",)
            for span, marker in zip(spans, ("o", "s", "^")):
                ax.plot(m.index, m[f"l2_{span}"], ls=ls, marker=marker, ms=4, label=f"L2 {span} ({kind})")
            twin.plot(
                m.index,
                m["attack_success"],
                color="red",
                ls="--" if kind == "icl" else ":",
                marker="x",
                label=f"attack success ({kind})",
            )
        ax.set_xscale("symlog", base=2, linthresh=1)
        n_max = max(g["n_shots"].max(), 1)
        ticks = [n for n in (0, 1, 2, 4, 8, 16, 32, 64) if n <= n_max]
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.set_xlabel("N demonstrations")
        ax.set_ylabel("L2 to steered target")
        twin.set_ylim(-0.05, 1.05)
        twin.grid(False)
        twin.set_ylabel("attack success", color="red")
        ax.legend(loc="upper left", fontsize=7)
        p = _kind(positions[(positions["model"] == model) & (positions["vector"] == vector)], "icl")
        pm = p.groupby(["n_shots", "position"])["l2"].mean().unstack(0)
        ax = axes[row][1]
        ns = list(pm.columns)
        cmap = plt.get_cmap("viridis")
        for i, n in enumerate(ns):
            ax.plot(pm.index, pm[n], color="black" if n == 0 else cmap(i / max(1, len(ns) - 1)), lw=1, label=f"N={n}")
        ax.axvline(g["x_len"].mean(), color="red", ls="--", lw=1, label="mean instruction length")
        ax.set_yscale("log")  # attention-sink and delimiter positions are orders of magnitude above the rest
        ax.set_xlabel("position in [x; y]")
        ax.set_ylabel("L2 to steered target (many-shot ICL)")
        ax.legend(fontsize=6, ncol=2)
        hm = haxes[row][0].imshow(pm.T.to_numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        haxes[row][0].set_yticks(range(len(ns)), [str(n) for n in ns])
        haxes[row][0].set_ylabel("N")
        haxes[row][0].set_xlabel("position in [x; y] (from 1)")
        haxes[row][0].set_title(f"{model} / {vector}: L2 to steered target (many-shot ICL)", fontsize=9)
        heat.colorbar(hm, ax=haxes[row][0])
    fig.tight_layout()
    heat.tight_layout()
    return fig, heat


def soft_prefix(e5: pd.DataFrame) -> plt.Figure:
    """A-F5: per-token L2 vs prefix length p: soft (the run's own, and the best over p' <= p), projected, the
    natural displacement ‖Δh‖, and the soft prefix on the positive control's reachable target (dotted)."""
    set_style()
    fig, axes, panels = _grid(e5, 4.5, 3.5)
    for model, vector in panels:
        ax = _ax(axes, e5, model, vector)
        g = e5[(e5["model"] == model) & (e5["vector"] == vector)]
        st = g[g["target"] == "steered"] if "target" in g else g
        m = st.groupby(["p", "kind"])["l2_per_token"].mean().unstack()
        ax.plot(m.index, m["soft"], "-o", ms=3, color=STEERED[0], label="soft prefix (run)")
        if "l2_best_upto_p" in st:
            env = st[st["kind"] == "soft"].groupby("p")["l2_best_upto_p"].mean()
            ax.plot(env.index, env.to_numpy(), "-", lw=2.5, alpha=0.35, color=STEERED[1], label="soft, best p' <= p")
        ax.plot(m.index, m["projected"], "--s", ms=3, color="grey", label="projected to tokens")
        ax.axhline(st["delta_h"].mean(), color="black", ls=":", lw=1, label="‖Δh‖ (no prefix)")
        if "target" in g and (g["target"] == "control").any():
            c = g[(g["target"] == "control") & (g["kind"] == "soft")].groupby("p")[["l2_per_token", "l2_init"]].mean()
            ax.plot(c.index, c["l2_per_token"], ":^", ms=3, color="#2E8B57", label="soft, control target")
            ax.plot(c.index, c["l2_init"], ":", lw=1, color="#2E8B57", alpha=0.5, label="control, cold init")
        ax.set_yscale("log")
        ax.set_xlabel("prefix length p")
        ax.set_ylabel("per-token L2 to target states")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def loss_curves(e4: pd.DataFrame, e5: pd.DataFrame) -> plt.Figure:
    """A-F7: best loss so far / initial loss vs step, per method; steered target solid, positive control dashed.
    Columns: E4 replacement, E4 prefix, E5 soft prefix (the warm-started chain over p, steps concatenated)."""
    set_style()
    frames = [f for f in (e4, e5) if f is not None and len(f)]
    if not frames:
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.text(0.5, 0.5, "no loss curves", ha="center", va="center")
        return fig
    df = pd.concat(frames, ignore_index=True)
    models = list(dict.fromkeys(df["model"]))
    cols = [("E4 replacement", "replacement"), ("E4 prefix", "prefix"), ("E5 soft prefix", "soft")]
    fig, axes = plt.subplots(len(models), len(cols), figsize=(4.2 * len(cols), 3.2 * len(models)), squeeze=False)
    colours = {"gcg": "#4B0082", "tuning": "#DD8452", "soft_prefix": "#2E8B57"}
    for r, model in enumerate(models):
        for c, (title, which) in enumerate(cols):
            ax = axes[r][c]
            ax.set_title(f"{model}: {title}", fontsize=9)
            g = df[df["model"] == model]
            g = (
                g[g["method"] == "soft_prefix"]
                if which == "soft"
                else g[(g["mode"] == which) & (g["method"] != "soft_prefix")]
            )
            for (method, target), h in g.groupby(["method", "target"], sort=True):
                ls = "-" if target == "steered" else "--"
                if method == "soft_prefix":  # concatenate the chain; relative to the first run's initial loss
                    parts, offset, xs, ys = [], 0, [], []
                    for _p, hp in h.groupby("p", sort=True):
                        mean = hp.groupby("step")["loss"].mean()
                        xs += list(mean.index + offset)
                        ys += list(np.minimum.accumulate(mean.to_numpy()))
                        offset += int(mean.index.max()) + 1
                        parts.append(offset)
                    ys = np.asarray(ys) / ys[0] if ys and ys[0] else np.asarray(ys)
                    ax.plot(xs, ys, ls=ls, color=colours[method], lw=1.2, label=f"{method}, {target}")
                    for x in parts[:-1]:
                        ax.axvline(x, color="0.85", lw=0.5)
                else:
                    mean = h.groupby("step")["best_relative"].mean()
                    ax.plot(
                        mean.index,
                        mean.to_numpy(),
                        ls=ls,
                        color=colours.get(method, "grey"),
                        lw=1.2,
                        label=f"{method}, {target}",
                    )
            ax.set_yscale("log")
            ax.set_xlabel("step" if which != "soft" else "step (chain over p; grey: next p)")
            ax.set_ylabel("best loss / initial loss")
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def scale(pairs: pd.DataFrame) -> plt.Figure:
    """A-F6: distributions of the steering displacement and cross-prompt distances (user span)."""
    set_style()
    df = pairs[pairs["span"] == "user"]
    fig, axes, panels = _grid(df, 4.5, 3.5)
    for model, vector in panels:
        ax = _ax(axes, df, model, vector)
        g = df[(df["model"] == model) & (df["vector"] == vector)]
        test = g[g["set"] == "test"]
        groups = g[g["set"].str.startswith("group:")]
        series = {
            "steering displacement s_i": test.drop_duplicates("i")["displacement"],
            "cross-prompt (test)": test["cross"],
        }
        if len(groups):
            series["within paraphrase groups"] = groups["cross"]
        bins = np.geomspace(
            max(min(s.min() for s in series.values()), 1e-6), max(s.max() for s in series.values()) * 1.01, 30
        )
        for (label, s), colour in zip(series.items(), (STEERED[0], "#888888", "#DD8452")):
            ax.hist(s, bins=bins, alpha=0.5, color=colour, label=label, density=True)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("mean per-token L2 at hidden_states[l+1]")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
