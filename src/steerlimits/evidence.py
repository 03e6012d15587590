"""Claims to evidence: for every claim, the tables and figures behind it, the target that rebuilds them, the measured
runtime of the jobs that produce them, and the value the paper reports (with the model it was measured on).

:func:`annotate` adds these columns to the combined claims table; :func:`grid_markdown` and :func:`grid_html`
render it for humans: one grid per paper, claims × models, each cell ``holds`` / ``fails`` / ``na`` /
``inconclusive`` with the value, linking to the row's note.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["EVIDENCE", "REFERENCE", "Evidence", "annotate", "base_id", "grid_html", "grid_markdown", "runtime"]


@dataclass(frozen=True)
class Evidence:
    """Tables (under ``results/<run>/``), figures (stems under ``figures/<run>/``) and the rules whose jobs produce
    them (their benchmarks give the runtime)."""

    tables: tuple[str, ...]
    figures: tuple[str, ...]
    rules: tuple[str, ...]


_INV = ("paperA_inversion",)
EVIDENCE: dict[str, Evidence] = {
    "A1": Evidence(("paperA/inversion_summary.csv",), ("paperA_F2_topk_by_position",), _INV),
    "A2": Evidence(("paperA/inversion_summary.csv",), ("paperA_F2_topk_by_position",), _INV),
    "A3": Evidence(("paperA/certificates.csv",), ("paperA_F2_topk_by_position",), _INV),
    "A4": Evidence(("paperA/inversion_summary.csv",), ("paperA_F2_topk_by_position",), _INV),
    "A5": Evidence(("paperA/inversion_summary.csv",), ("paperA_F2_topk_by_position",), _INV),
    "A6": Evidence(("paperA/e2_sweep.csv",), ("paperA_F3_sweep", "paperA_F3b_sweep_positions"), _INV),
    "A7": Evidence(("paperA/reconstruction_behaviour_summary.csv",), (), ("paperA_inversion", "paperA_behaviour")),
    "A8": Evidence(
        ("paperA/e3_manyshot.csv",),
        ("paperA_F4_many_shot", "paperA_F4b_many_shot_heatmap"),
        ("paperA_responses", "paperA_e3"),
    ),
    "A9": Evidence(("paperA/e4_optimisation.csv",), ("paperA_F7_loss_curves",), ("paperA_responses", "paperA_e4")),
    "A10": Evidence(("paperA/e5_softprefix.csv",), ("paperA_F5_soft_prefix", "paperA_F7_loss_curves"), ("paperA_e5",)),
    "A11": Evidence(("paperA/e6_copying.csv",), (), ("paperA_responses", "paperA_e6")),
    "A12": Evidence(("paperA/e7_scale.csv",), ("paperA_F6_cross_prompt",), ("paperA_e7",)),
    "B0": Evidence(
        ("paperB/calibration.csv", "paperB/orthogonal_test.csv"),
        ("paperB_calibration",),
        ("paperB_calibrate", "paperB_generate"),
    ),
    "B1": Evidence(("paperB/orthogonal_test.csv",), ("paperB_efficacy", "paperB_orthogonal_d"), ("paperB_generate",)),
    "B2": Evidence(("paperB/orthogonal_test.csv",), ("paperB_orthogonal_d", "paperB_efficacy"), ("paperB_generate",)),
    "B3": Evidence(
        ("paperB/orthogonal_test.csv", "paperB/nullspace_dim.csv"),
        ("paperB_efficacy",),
        ("paperB_nullspace", "paperB_generate"),
    ),
    "B4": Evidence(("paperB/orthogonal_test.csv",), ("paperB_efficacy",), ("paperB_nullspace", "paperB_generate")),
    "B5": Evidence(("paperB/alpha_sweep.csv",), ("paperB_alpha_sweep",), ("paperB_generate",)),
    "B6": Evidence(("paperB/environments.csv",), ("paperB_environments",), ("paperB_generate",)),
    "B7": Evidence(("paperB/logit_distances.csv",), ("paperB_logits",), ("paperB_nullspace", "paperB_logits")),
    "B8": Evidence(("paperB/mean_diff_vs_pca.csv",), ("paperB_mean_diff_vs_pca",), ("paperB_generate",)),
    "B9": Evidence(("paperB/nullspace_spanning.csv",), ("paperB_null_spanning",), ("paperB_generate",)),
    "B10": Evidence(("paperB/nullspace_dim.csv",), ("paperB_spectra",), ("paperB_nullspace",)),
    "B11": Evidence(("paperB/where_v_lives.csv",), (), ("paperB_nullspace",)),
    "B12": Evidence(("paperB/orthogonal_test.csv",), (), ("paperB_generate",)),
    "B13": Evidence(("paperB/dtype_check.csv",), (), ("paperB_dtype_check",)),
}

#: What the papers report for a claim, and the model it was measured on (the papers' models, not ours).
REFERENCE: dict[str, tuple[str, str]] = {
    "A1": ("1.0 (10/10 natural prompts exact, every row)", "Llama-3.2-1B-Instruct, Qwen2.5-0.5B-Instruct"),
    "A2": ("natural top-1 0.067 (bf16 noise floor)", "Llama-3.2-1B-Instruct, refusal"),
    "A4": ("steered / natural top-1 ≈ 39 (2.59 / 0.067, bf16)", "Llama-3.2-1B-Instruct, refusal"),
    "A5": ("≈ 1.0 (steered top-1 2.59 vs ‖Δh‖ 2.588 per token)", "Llama-3.2-1B-Instruct, refusal"),
    "A7": ("−1.0 (refusals natural / steered / recovered 10 / 0 / 10)", "Llama-3.2-1B-Instruct, refusal"),
    "B1": ("0.95–1.00 of efficacy kept", "Qwen2.5-3B-Instruct, Llama-3.1-8B-Instruct"),
    "B2": ("d < 0.2 (v vs v + u)", "Qwen2.5-3B-Instruct, Llama-3.1-8B-Instruct"),
    "B7": ("orthogonal logit shift 27–53 % smaller than random", "Qwen2.5-3B-Instruct, Llama-3.1-8B-Instruct"),
    "B8": ("near-identical effects at cos(mean diff, PCA) −0.54 … +0.32", "Qwen2.5-3B-Instruct, Llama-3.1-8B-Instruct"),
    "B10": ("null space ≈ 0.80–0.95 of d", "Qwen2.5-3B-Instruct, Llama-3.1-8B-Instruct"),
}


def base_id(claim_id: str) -> str:
    """``B2-effect`` -> ``B2``."""
    return claim_id.split("-")[0]


def runtime(benchmarks: Mapping[str, Sequence[str]], rules: Sequence[str], model: str) -> float:
    """Sum of the measured wall seconds (``s`` column of Snakemake's benchmark files) of ``rules``' jobs for
    ``model`` (a benchmark path names its wildcards); NaN when none was measured."""
    total, found = 0.0, False
    for rule in rules:
        for path in benchmarks.get(rule, ()):
            p = Path(path)
            if model not in (p.stem, p.parent.name):
                continue
            if p.exists():
                total += float(pd.read_csv(p, sep="\t")["s"].iloc[-1])
                found = True
    return total if found else math.nan


def annotate(claims: pd.DataFrame, run: str, benchmarks: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """``claims`` with evidence_tables, evidence_figures, rebuild, runtime_s, paper_value and paper_model."""
    out = claims.copy()
    rows = []
    for _, r in out.iterrows():
        ev = EVIDENCE.get(base_id(r["claim_id"]), Evidence((), (), ()))
        tables = [f"results/{run}/{t}" for t in ev.tables]
        ref = REFERENCE.get(base_id(r["claim_id"]), ("", ""))
        rows.append(
            {
                "evidence_tables": " ".join(tables),
                "evidence_figures": " ".join(f"figures/{run}/{f}.png" for f in ev.figures),
                "rebuild": (f"snakemake --cores all --configfile config/{run}.yaml " + " ".join(tables))
                if tables
                else "",
                "runtime_s": runtime(benchmarks, ev.rules, str(r["model"])),
                "paper_value": ref[0],
                "paper_model": ref[1],
            }
        )
    return pd.concat([out.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


_SYMBOL = {"true": "holds", "false": "fails", "na": "na", "inconclusive": "inconclusive"}
_COLOUR = {"true": "#d4edda", "false": "#f8d7da", "na": "#e2e3e5", "inconclusive": "#fff3cd"}


def _value(v: object) -> str:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    return "nan" if math.isnan(f) else f"{f:.3g}"


def _cells(
    claims: pd.DataFrame, paper: str
) -> tuple[list[str], list[str], dict[tuple[str, str], list[tuple[int, pd.Series]]]]:
    sub = claims[claims["paper"] == paper]
    models = sorted(dict.fromkeys(sub["model"]))
    ids = sorted(
        dict.fromkeys(sub["claim_id"]),
        key=lambda c: (int("".join(ch for ch in base_id(c)[1:] if ch.isdigit()) or 0), c),
    )
    cells: dict[tuple[str, str], list[tuple[int, pd.Series]]] = {}
    for i, r in sub.iterrows():
        cells.setdefault((r["claim_id"], r["model"]), []).append((int(i), r))  # type: ignore[arg-type]
    return ids, models, cells


def grid_markdown(claims: pd.DataFrame, run: str) -> str:
    """``claims.md``: a grid per paper (claims × models) with links to the notes, then the notes."""
    lines = [
        f"# Claims of run `{run}`",
        "",
        "Each cell: **holds** / **fails** / **na** (a stated precondition failed) / **inconclusive** (the control "
        "that makes the claim meaningful failed), then the value; the link leads to the row's note. Several "
        "entries in a cell are the claim's rows for different vectors or traits.",
        "",
    ]
    notes = []
    for paper in sorted(claims["paper"].unique()):
        ids, models, cells = _cells(claims, paper)
        lines += [
            f"## Paper {paper}",
            "",
            "| claim | statement | " + " | ".join(models) + " | paper reports |",
            "|---|---|" + "---|" * len(models) + "---|",
        ]
        for cid in ids:
            first = claims[claims["claim_id"] == cid].iloc[0]
            row = [f"**{cid}**", str(first["statement"])]
            for m in models:
                entries = []
                for i, r in cells.get((cid, m), []):
                    entries.append(f"[{_SYMBOL.get(r['holds'], r['holds'])} {_value(r['value'])}](#note-{i})")
                    notes.append(
                        f'<a id="note-{i}"></a>**{cid} · {m}** — {r["metric"]}: {_value(r["value"])} '
                        f"(threshold {r['threshold']}) → {r['holds']}. {r['note']}"
                        + (
                            f" Evidence: {r['evidence_tables']} {r['evidence_figures']}".rstrip()
                            if "evidence_tables" in r
                            else ""
                        )
                        + (f" Rebuild: `{r['rebuild']}`." if r.get("rebuild") else "")
                    )
                row.append("<br>".join(entries) or "–")
            ref = f"{first.get('paper_value', '')} ({first.get('paper_model', '')})" if first.get("paper_value") else ""
            row.append(ref)
            lines.append("| " + " | ".join(s.replace("|", "\\|") for s in row) + " |")
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def grid_html(claims: pd.DataFrame, run: str) -> str:
    """The same grid as an HTML fragment (the first page of the HTML report)."""
    esc = html.escape
    parts = [
        f"<h2>Claims of run <code>{esc(run)}</code></h2>",
        "<p>Each cell: holds / fails / na (a stated precondition failed) / inconclusive (the control that makes "
        "the claim meaningful failed), with the value; hover for the note.</p>",
    ]
    for paper in sorted(claims["paper"].unique()):
        ids, models, cells = _cells(claims, paper)
        parts.append(
            f"<h3>Paper {esc(paper)}</h3><table class='claims-grid' border='1' cellpadding='4' "
            "style='border-collapse:collapse;font-size:90%'>"
        )
        parts.append(
            "<tr><th>claim</th><th>statement</th>"
            + "".join(f"<th>{esc(m)}</th>" for m in models)
            + "<th>paper reports (model)</th></tr>"
        )
        for cid in ids:
            first = claims[claims["claim_id"] == cid].iloc[0]
            tds = []
            for m in models:
                entries = cells.get((cid, m), [])
                colour = _COLOUR.get(entries[0][1]["holds"], "#ffffff") if entries else "#ffffff"
                body = "<br>".join(
                    f"<span title='{esc(str(r['metric']))}: {esc(str(r['note']))}'>"
                    f"{esc(_SYMBOL.get(r['holds'], r['holds']))} {esc(_value(r['value']))}</span>"
                    for _, r in entries
                )
                tds.append(f"<td style='background:{colour}'>{body or '–'}</td>")
            ref = (
                f"{esc(str(first.get('paper_value', '')))} ({esc(str(first.get('paper_model', '')))})"
                if first.get("paper_value")
                else ""
            )
            parts.append(
                f"<tr><td><b>{esc(cid)}</b></td><td>{esc(str(first['statement']))}</td>{''.join(tds)}"
                f"<td>{ref}</td></tr>"
            )
        parts.append("</table>")
    return "\n".join(parts) + "\n"
