"""The project's one plotting style (seaborn on matplotlib, Agg backend) and its figures.

Style: sans-serif, white grid, 300 dpi, one fixed palette keyed by model and one keyed by behaviour, so a model or
trait has the same colour in every figure of both papers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

__all__ = ["BEHAVIOUR_COLOURS", "MODEL_COLOURS", "colour_for", "dose_response_figure", "set_style"]

MODEL_COLOURS = {
    "smollm2-135m": "#4C72B0",
    "qwen2.5-coder-0.5b": "#0066FF",
    "gemma3-270m": "#55A868",
    "qwen2.5-3b": "#0066FF",
    "llama-3.1-8b": "#FF3333",
    "llama-3.2-1b": "#C44E52",
    "qwen2.5-0.5b": "#8172B3",
    "gemma-3-1b": "#CCB974",
}
BEHAVIOUR_COLOURS = {"sentiment": "#DD8452", "formality": "#8172B3", "refusal": "#C44E52", "persona_evil": "#4B0082"}
_FALLBACK = sns.color_palette("tab10")


def set_style() -> None:
    sns.set_theme(style="whitegrid", context="paper", font="sans-serif")
    plt.rcParams.update({"savefig.dpi": 300, "figure.dpi": 100, "savefig.bbox": "tight", "pdf.fonttype": 42})


def colour_for(name: str, table: dict[str, str] | None = None) -> Any:
    table = {**MODEL_COLOURS, **BEHAVIOUR_COLOURS} if table is None else table
    return table.get(name, _FALLBACK[sum(map(ord, name)) % len(_FALLBACK)])


def dose_response_figure(table: pd.DataFrame, trend: Sequence[dict[str, Any]]) -> plt.Figure:
    """Mean trait score vs alpha, one panel per model, one line per behaviour, 95 % bootstrap CI bands."""
    set_style()
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.3 * len(models), 2.9), squeeze=False, sharey=True)
    rho = {(t["model"], t["behaviour"]): t["spearman_rho"] for t in trend}
    for ax, model in zip(axes[0], models, strict=True):
        sub = table[table["model"] == model].sort_values("alpha")
        for behaviour, g in sub.groupby("behaviour", sort=True):
            c = colour_for(str(behaviour), BEHAVIOUR_COLOURS)
            label = f"{behaviour} ({g['scorer'].iloc[0]}), ρ={rho.get((model, behaviour), float('nan')):.2f}"
            ax.plot(g["alpha"], g["mean_score"], marker="o", ms=3.5, color=c, label=label)
            ax.fill_between(g["alpha"], g["ci_low"], g["ci_high"], color=c, alpha=0.2, lw=0)
        ax.axvline(0, color="0.5", lw=0.7, ls=":")
        ax.axhline(0, color="0.5", lw=0.7, ls=":")
        ax.set_title(model)
        ax.set_xlabel("steering coefficient α")
        ax.legend(fontsize=6, loc="upper left", frameon=True)
    axes[0][0].set_ylabel("mean trait score of continuation")
    n = int(table["n"].min()) if len(table) else 0
    fig.suptitle(
        f"Dose–response of contrastive vectors (n ≥ {n} generations per point, 95 % bootstrap CI)", fontsize=8, y=1.02
    )
    fig.tight_layout()
    return fig
