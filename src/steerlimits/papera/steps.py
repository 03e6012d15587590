"""Paper A's step functions, one per rule (``paperA_<name>(settings, inputs, outputs, log)``, see
:mod:`steerlimits.steps`). Each writes through :mod:`steerlimits.outputs` (atomic, with a sidecar that records the
job's settings) and adds what the run measured: sites, sizes, reductions against the default column, timings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from steerlimits.models import marker_sha256
from steerlimits.outputs import write_figure, write_json, write_table, write_text
from steerlimits.papera.context import ModelContext, load_context
from steerlimits.settings.papera import (
    PaperABehaviour,
    PaperAClaims,
    PaperAContext,
    PaperAE3,
    PaperAE4,
    PaperAE5,
    PaperAE6,
    PaperAE7,
    PaperAFigures,
    PaperAInversion,
    PaperAResponses,
    PaperATables,
)
from steerlimits.steps import Files

__all__ = [
    "load_raw",
    "paperA_behaviour",
    "paperA_claims",
    "paperA_e3",
    "paperA_e4",
    "paperA_e5",
    "paperA_e6",
    "paperA_e7",
    "paperA_figures",
    "paperA_inversion",
    "paperA_responses",
    "paperA_tables",
    "read_json",
]

log = logging.getLogger(__name__)


def _context(s: PaperAContext, inputs: Files) -> ModelContext:
    return load_context(s, inputs["model"], inputs["vectors"])


def _meta(ctx: ModelContext, inputs: Files, **extra: Any) -> dict[str, Any]:
    return {
        "model": ctx.key,
        "model_sha256": marker_sha256(inputs["model"]),
        "paper": "A",
        "sites": {v: ctx.site_record(v) for v in ctx.vectors},
        "refusal_trained": ctx.refusal_trained,
        **extra,
    }


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


# ------------------------------------------------------------------------------------------------- E1 / E2
def paperA_inversion(s: PaperAInversion, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E1 + E2 + certificates of one model -> positions, prompts, certificates CSVs."""
    from steerlimits.papera.e1 import run_e1_e2

    start = time.perf_counter()
    logging.getLogger("steerlimits.invert.sequential").setLevel(logging.WARNING)  # one line per prompt instead
    ctx = _context(s.ctx, inputs)
    res = run_e1_e2(ctx, s)
    vocab = int(ctx.model.get_input_embeddings().weight.shape[0])
    for key in ("positions", "prompts", "certificates"):
        res[key]["vocab_size"] = vocab
        res[key]["refusal_trained"] = ctx.refusal_trained
    meta = _meta(
        ctx,
        inputs,
        reductions_vs_default=list(s.reductions),
        wall_s=time.perf_counter() - start,
        **res["meta"],
        method="sequential inversion (engine steerlimits.invert.invert) in DecoderRank order; natural: "
        "exhaustive with early exit; steered: ranked, warm-started with the natural token; "
        "steered_cold: ranked, no warm start; certificates: steerlimits.invert.certify (bf16 "
        "screen, float32 re-verification, cross-checked sweeps also run entirely in float32)",
        top2_rule="natural top2 is the runner-up of the decoder precheck (the 32 decoder-ordered tokens "
        "verified first), not a certified runner-up; certified runner-ups are in the certificates",
        tau_rule="tau_exact = 10 x max_{t>=1} floor_t on the prompt; position 0: 10 x floor_0",
    )
    for key in ("positions", "prompts", "certificates"):
        write_table(outputs[key], res[key], meta)


# ------------------------------------------------------------------------------------------------ behaviour
def paperA_behaviour(s: PaperABehaviour, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E1 behaviour: greedy generations from x, steered x and the recovered ids (unsteered), scored."""
    from steerlimits.papera.generation import greedy_ids
    from steerlimits.scoring import is_refusal, load_scorer

    ctx = _context(s.ctx, inputs)
    table = pd.read_csv(inputs["prompts"])
    table = table[(table["experiment"] == "E1") & (table["condition"] == "steered")]
    rows = []
    n_new = s.max_new_tokens
    for vector in ctx.vectors:
        trait = s.scorers[vector]
        scorer = load_scorer(trait)
        sub = table[table["vector"] == vector].sort_values("prompt")
        ids = [json.loads(x) for x in sub["ids"]]
        rec = [json.loads(x) for x in sub["recovered"]]
        outs = {"baseline": greedy_ids(ctx, ids, n_new), "steered": greedy_ids(ctx, ids, n_new, vector=vector)}
        differ = [i for i in range(len(ids)) if rec[i] != ids[i]]
        again = dict(zip(differ, greedy_ids(ctx, [rec[i] for i in differ], n_new))) if differ else {}
        outs["recovered"] = [again.get(i, outs["baseline"][i]) for i in range(len(ids))]
        for cond, conts in outs.items():
            texts = [ctx.tok.decode(c, skip_special_tokens=True) for c in conts]
            traits = scorer.score(texts)
            for i, (cont, text) in enumerate(zip(conts, texts)):
                rows.append(
                    {
                        "model": ctx.key,
                        "vector": vector,
                        "prompt": int(sub["prompt"].iloc[i]),
                        "condition": cond,
                        "recovered_is_x": rec[i] == ids[i],
                        "refusal": float(is_refusal(text)),
                        "attack_success": float(not is_refusal(text)),
                        "trait_scorer": trait,
                        "substitute_for": scorer.info.substitute_for,
                        "trait_score": float(traits[i]),
                        "n_tokens": len(cont),
                        "refusal_trained": ctx.refusal_trained,
                        "continuation": text,
                    }
                )
    write_table(
        outputs["table"],
        pd.DataFrame(rows),
        _meta(
            ctx,
            inputs,
            decoding="greedy, left-padded batches; continuation-only scoring; recovered ids "
            "never re-templated or re-encoded; a recovered prompt equal to x reuses "
            "x's generation",
        ),
    )


# ------------------------------------------------------------------------------------------------ E3 - E7
def paperA_responses(s: PaperAResponses, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Steered greedy responses y to the first test prompts (shared by E3, E4, E6)."""
    from steerlimits.papera.generation import steered_responses

    ctx = _context(s.ctx, inputs)
    rows = [r for v in ctx.vectors for r in steered_responses(ctx, v, s.n_prompts, s.y_tokens)]
    write_json(
        outputs["responses"],
        rows,
        _meta(ctx, inputs, note="greedy, steered at every position; each experiment keeps its first y_tokens"),
    )


def _by_vector(rows: Sequence[Mapping[str, Any]], vector: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if r["vector"] == vector]


def paperA_e3(s: PaperAE3, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E3 many-shot ICL: distance to the steered states and attack success vs N demonstrations."""
    from steerlimits.papera.icl import run_e3

    ctx = _context(s.ctx, inputs)
    rows = read_json(inputs["responses"])
    parts = {v: run_e3(ctx, v, _by_vector(rows, v), s.e3) for v in ctx.vectors}
    meta = _meta(
        ctx,
        inputs,
        reductions_vs_default=list(s.reductions),
        notes=[n for p in parts.values() for n in p["notes"]],
        steered_attack_success={v: p["steered_attack_success"] for v, p in parts.items()},
        demo_lengths={v: p["demo_lengths"] for v, p in parts.items()},
        demo_distinct={v: p["demo_distinct"] for v, p in parts.items()},
        control="reachable target: natural states of [x; y] after N neutral demonstrations of the same "
        "lengths; gap closed = 1 - d(icl_N, neutral_N) / d(x alone, neutral_N)",
    )
    write_table(outputs["summary"], pd.concat([p["summary"] for p in parts.values()], ignore_index=True), meta)
    write_table(outputs["positions"], pd.concat([p["positions"] for p in parts.values()], ignore_index=True), meta)


def paperA_e4(s: PaperAE4, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E4 prompt tuning and GCG-style optimisation (replacement, prefix) towards the steered states, each with
    its positive control on a reachable target; loss curves of every run."""
    from steerlimits.papera.optimise import run_e4

    start = time.perf_counter()
    ctx = _context(s.ctx, inputs)
    rows = read_json(inputs["responses"])
    parts = [run_e4(ctx, v, _by_vector(rows, v), s.e4) for v in ctx.vectors]
    meta = _meta(
        ctx,
        inputs,
        reductions_vs_default=list(s.reductions),
        wall_s=time.perf_counter() - start,
        gepa="not run (optional hook, off by default, D11)",
        control="replacement: natural states of x with control_k instruction tokens replaced by random "
        "round-tripping tokens; prefix: natural states of [header; n_virtual random tokens; rest]; "
        "same initialisation and budget as the steered run",
    )
    write_table(outputs["table"], pd.concat([p["table"] for p in parts], ignore_index=True), meta)
    write_table(outputs["curves"], pd.concat([p["curves"] for p in parts], ignore_index=True), meta)


def paperA_e5(s: PaperAE5, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E5 soft prefix of length p (warm-started chain), then projection to tokens, with its positive control."""
    from steerlimits.papera.softprefix import run_e5

    start = time.perf_counter()
    ctx = _context(s.ctx, inputs)
    parts = [run_e5(ctx, v, s.e5, s.max_new_tokens) for v in ctx.vectors]
    meta = _meta(
        ctx,
        inputs,
        reductions_vs_default=list(s.reductions),
        wall_s=time.perf_counter() - start,
        control="natural states of [header; p random tokens; rest] (nested over p), same chain, budget "
        "and initialisations",
    )
    table = pd.concat([p["table"] for p in parts], ignore_index=True)
    table["nearest_tokens"] = table["nearest_tokens"].map(json.dumps)
    write_table(outputs["table"], table, meta)
    write_table(outputs["generations"], pd.concat([p["generations"] for p in parts], ignore_index=True), meta)
    write_table(outputs["curves"], pd.concat([p["curves"] for p in parts], ignore_index=True), meta)


def paperA_e6(s: PaperAE6, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E6 copying baseline: explicit repetition and ICL-n copies of the steered response."""
    from steerlimits.papera.copying import run_e6

    ctx = _context(s.ctx, inputs)
    rows = read_json(inputs["responses"])
    table = pd.concat([run_e6(ctx, v, _by_vector(rows, v), s.e6) for v in ctx.vectors], ignore_index=True)
    write_table(outputs["table"], table, _meta(ctx, inputs, reductions_vs_default=list(s.reductions)))


def paperA_e7(s: PaperAE7, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E7 steering displacement vs cross-prompt distances (test prompts, paraphrase groups)."""
    from steerlimits.papera.scale import run_e7

    ctx = _context(s.ctx, inputs)
    parts = [run_e7(ctx, v, s.e7) for v in ctx.vectors]
    meta = _meta(ctx, inputs)
    write_table(outputs["ratios"], pd.concat([p["ratios"] for p in parts], ignore_index=True), meta)
    write_table(outputs["pairs"], pd.concat([p["pairs"] for p in parts], ignore_index=True), meta)


# ------------------------------------------------------------------------------------------ tables, figures
def _concat(paths: Sequence[str]) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_raw(inputs: Files) -> dict[str, pd.DataFrame]:
    """Concatenate the per-model raw tables named by ``inputs`` (key -> paths)."""
    return {key: _concat(paths if isinstance(paths, list) else [paths]) for key, paths in inputs.items()}


def paperA_tables(s: PaperATables, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Tables A-T1 (+ Markdown), certificates, E2 sweep, A-T2..A-T5, E3 and reconstruction behaviour."""
    from steerlimits.papera import tables as T

    raw = load_raw(inputs)
    meta = {
        "sources": dict(inputs),
        "reductions_vs_default": {k: list(v) for k, v in s.reductions.items()},
        "position_rule": "position 0 (attention sink) excluded from summaries; reported as top1_pos0_mean",
    }
    summary = T.inversion_summary(raw["prompts"], raw["positions"], raw["certificates"])
    write_table(outputs["summary"], summary, meta)
    write_text(outputs["summary_md"], "# A-T1: inversion summary (E1)\n\n" + T.markdown(summary), meta)
    write_table(outputs["certificates"], raw["certificates"], meta)
    write_table(outputs["crosscheck"], T.crosscheck_table(raw["certificates"]), meta)
    write_table(outputs["controls"], T.controls_table(raw), meta)
    write_table(outputs["e2"], T.e2_table(raw["prompts"], raw["positions"]), meta)
    write_table(outputs["e3"], T.e3_table(raw["e3"]), meta)
    write_table(outputs["e4"], T.e4_table(raw["e4"]), meta)
    write_table(outputs["e5"], T.e5_table(raw["e5"]), meta)
    write_table(outputs["e6"], T.e6_table(raw["e6"]), meta)
    write_table(outputs["e7"], T.e7_table(raw["e7"]), meta)
    write_table(outputs["behaviour"], raw["behaviour"], meta)
    write_table(outputs["behaviour_summary"], T.behaviour_table(raw["behaviour"]), meta)


def paperA_figures(s: PaperAFigures, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Every A-F figure as PNG and PDF (``outputs`` keys ``<id>_png`` / ``<id>_pdf``)."""
    import matplotlib.pyplot as plt

    from steerlimits.papera import figures as F

    raw = load_raw({k: v for k, v in inputs.items() if k != "e2"})
    f4, f4b = F.many_shot(raw["e3"], raw["e3_positions"])
    figs = {
        "A-F1": F.concept_surface(s.seed),
        "A-F2": F.topk_by_position(raw["positions"]),
        "A-F3": F.sweep(pd.read_csv(inputs["e2"])),
        "A-F3b": F.sweep_positions(raw["positions"]),
        "A-F4": f4,
        "A-F4b": f4b,
        "A-F5": F.soft_prefix(raw["e5"]),
        "A-F6": F.scale(raw["e7_pairs"]),
        "A-F7": F.loss_curves(raw["e4_curves"], raw["e5_curves"]),
    }
    for fid, fig in figs.items():
        write_figure(fig, [outputs[f"{fid}_{ext}"] for ext in ("png", "pdf")], {"figure": fid, "sources": dict(inputs)})
        plt.close(fig)


def paperA_claims(s: PaperAClaims, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Claims A1..A12 per model x vector (fixed thresholds)."""
    from steerlimits.papera.claims import paper_a_claims

    table = paper_a_claims(load_raw(inputs))
    write_table(outputs["table"], table, {"sources": dict(inputs), "thresholds": "fixed before any value was seen"})
    log.info("paper A claims:\n%s", table.to_string(index=False))
