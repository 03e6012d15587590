"""Example texts for readers of the report: what the models actually wrote, drawn by a seeded rule, not hand-picked.

* Paper B: for each model × trait, ``per_condition`` stems drawn with the run's seed from the E1 stems; for each,
  the continuation unsteered (α = 0), steered (v at the run's operating α) and perturbed (v + u for the first
  draw of every family), with their scores.
* Paper A: for each model × vector, ``per_condition`` test prompts drawn with the seed; the greedy continuations
  of the prompt, the steered prompt and the recovered prompt (generated from the recovered ids, unsteered).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd

from steerlimits.seeds import derive_seed

__all__ = ["COLUMNS", "example_table", "examples_html", "paper_a_examples", "paper_b_examples"]

COLUMNS = ["paper", "model", "setting", "item", "prompt", "condition", "continuation", "score", "scorer"]


def _pick(items: Sequence[object], n: int, seed: int) -> list[object]:
    order = np.random.default_rng(seed).permutation(len(items))[: min(n, len(items))]
    return [items[i] for i in sorted(order)]


def paper_b_examples(pool: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Unsteered / steered / perturbed continuations of ``n`` seeded E1 stems per model × trait."""
    rows = []
    e1 = pool[pool["experiment"] == "e1"]
    for (model, trait), g in e1.groupby(["model", "trait"], sort=True):
        first = g[(g["kind"] != "v+u") | (g["seed"].astype(str).isin(["0", "0.0"]))]
        sample0 = first[first["sample"] == first["sample"].min()]
        stems = sorted(sample0["prompt_index"].unique())
        for stem in _pick(stems, n, derive_seed(seed, "examples", model, trait)):
            h = sample0[sample0["prompt_index"] == stem]
            for _, r in h.sort_values(["kind", "family"]).iterrows():
                if r["kind"] not in ("zero", "v", "v+u", "neg_v"):
                    continue
                cond = {
                    "zero": "unsteered (alpha 0)",
                    "v": f"steered v (alpha {r['alpha']:g})",
                    "neg_v": "steered -v",
                    "v+u": f"v + u ({r['family']})",
                }[r["kind"]]
                rows.append(
                    {
                        "paper": "B",
                        "model": model,
                        "setting": trait,
                        "item": int(stem),  # type: ignore[call-overload]
                        "prompt": r["prompt"],
                        "condition": cond,
                        "continuation": r["continuation"],
                        "score": float(r["score"]),
                        "scorer": r.get("scorer", ""),
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def paper_a_examples(behaviour: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Natural / steered / recovered-prompt generations of ``n`` seeded test prompts per model × vector."""
    rows = []
    names = {"baseline": "natural prompt x", "steered": "x, steered", "recovered": "recovered prompt (unsteered)"}
    for (model, vector), g in behaviour.groupby(["model", "vector"], sort=True):
        for prompt in _pick(sorted(g["prompt"].unique()), n, derive_seed(seed, "examples", model, vector)):
            for _, r in g[g["prompt"] == prompt].iterrows():
                rows.append(
                    {
                        "paper": "A",
                        "model": model,
                        "setting": vector,
                        "item": int(prompt),  # type: ignore[call-overload]
                        "prompt": str(r.get("prompt_text", "")),
                        "condition": names.get(r["condition"], r["condition"]),
                        "continuation": r["continuation"],
                        "score": float(r["attack_success"]),
                        "scorer": "attack success (1 - refusal substring)",
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def example_table(pools: Sequence[pd.DataFrame], behaviour: Sequence[pd.DataFrame], n: int, seed: int) -> pd.DataFrame:
    parts = []
    if behaviour:
        parts.append(paper_a_examples(pd.concat(behaviour, ignore_index=True), n, seed))
    if pools:
        parts.append(paper_b_examples(pd.concat(pools, ignore_index=True), n, seed))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def examples_html(table: pd.DataFrame, run: str) -> str:
    """A self-contained, browsable HTML page: one section per paper, model and setting; one row per condition."""
    esc = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Example texts</title><style>",
        "body{font-family:sans-serif;font-size:13px;margin:1em} table{border-collapse:collapse;width:100%}",
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top} th{background:#f3f3f3}",
        "details{margin:.5em 0} summary{font-weight:bold;cursor:pointer}</style></head><body>",
        f"<h2>Example texts of run {esc(run)}</h2><p>Drawn with the run's seed (not hand-picked); continuations "
        "only (the prompt is shown once per item).</p>",
    ]
    for (paper, model, setting), g in table.groupby(["paper", "model", "setting"], sort=True):
        out.append(f"<details><summary>Paper {esc(paper)} · {esc(model)} · {esc(setting)}</summary>")
        for item, h in g.groupby("item", sort=True):
            prompt = str(h["prompt"].iloc[0])
            out.append(
                f"<p><b>item {item}</b>{': ' + esc(prompt[-300:]) if prompt else ''}</p><table>"
                "<tr><th>condition</th><th>continuation</th><th>score</th></tr>"
            )
            for _, r in h.iterrows():
                out.append(
                    f"<tr><td>{esc(str(r['condition']))}</td><td>{esc(str(r['continuation']))}</td>"
                    f"<td>{r['score']:.3g}</td></tr>"
                )
            out.append("</table>")
        out.append("</details>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
