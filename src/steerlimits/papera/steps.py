"""Pipeline steps of paper A, called by the thin scripts ``workflow/scripts/paperA_*.py``.

Each step reads the validated config (``config["paperA"]`` filled with defaults by ``paperA.schema.yaml``) and
explicit paths, and writes atomically with a ``.meta.json`` sidecar (config hash, model sha256, code version,
seed, plus the step's own record: sites, sizes, reductions against spec A §9, timings).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from steerlimits.config import scorer_for
from steerlimits.models import cached_metadata, model_dir
from steerlimits.papera.context import ModelContext, load_context
from steerlimits.provenance import provenance, write_with_sidecar

__all__ = ["SPEC_DEFAULT", "behaviour", "claims", "e3", "e4", "e5", "e6", "e7", "figures",
           "inversion", "load_raw", "read_json", "reductions", "responses", "tables", "write_csv", "write_json"]

log = logging.getLogger(__name__)

#: Spec A §9 "Default" column, for recording every reduction of a run's sizes against it.
SPEC_DEFAULT: dict[str, dict[str, Any]] = {
    "e1": {"n_candidates": 128}, "e2": {"n_prompts": 3, "n_candidates": 64},
    "e3": {"n_prompts": 3, "y_tokens": 32, "demo_tokens": 48},
    "e4": {"n_prompts": 2, "tuning_steps": 50, "gcg_steps": 20, "gcg_width": 64, "y_tokens": 32},
    "e5": {"n_prompts": 1, "steps": 40, "p_values": 25}, "e6": {"n_prompts": 3, "y_tokens": 32},
}


def reductions(pa: Mapping[str, Any], section: str) -> list[str]:
    """Human-readable list of this run's sizes below spec A §9's default column."""
    out = []
    for key, spec in SPEC_DEFAULT.get(section, {}).items():
        value = pa[section][key]
        value = len(value) if isinstance(value, list) else value
        if value < spec:
            out.append(f"{section}.{key} = {value} (spec default {spec})")
    if section == "e1" and pa["n_prompts"] < 10:
        out.append(f"n_prompts = {pa['n_prompts']} (spec default 10)")
    return out


def _meta(ctx: ModelContext | None, config: Mapping[str, Any], section: str | None = None,
          **extra: Any) -> dict[str, Any]:
    model = ctx.key if ctx else None
    sha = cached_metadata(model)["sha256"] if model and (model_dir(model) / "steerlimits_model.json").exists() else None
    rec = provenance(config, model_sha256=sha, seed=config["seed"], model=model, run=config["run"], paper="A",
                     **extra)
    if ctx is not None:
        rec["sites"] = {v: ctx.site_record(v) for v in ctx.vectors}
        rec["refusal_trained"] = ctx.refusal_trained
    if section is not None:
        rec["settings"] = config["paperA"].get(section, {})
        rec["reductions_vs_spec_default"] = reductions(config["paperA"], section)
    return rec


def write_csv(path: str | Path, df: pd.DataFrame, meta: Mapping[str, Any]) -> None:
    write_with_sidecar(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"), meta)


def write_json(path: str | Path, obj: Any, meta: Mapping[str, Any]) -> None:
    write_with_sidecar(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1) + "\n"), meta)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _ctx(config: Mapping[str, Any], model: str, vectors: Mapping[str, str], which: Sequence[str]) -> ModelContext:
    return load_context(config, model, {v: vectors[v] for v in which})


# ------------------------------------------------------------------------------------------------- E1 / E2
def inversion(config: Mapping[str, Any], model: str, vectors: Mapping[str, str], out: Mapping[str, str]) -> None:
    """E1 + E2 + certificates of one model -> positions, prompts, certificates CSVs."""
    from steerlimits.papera.e1 import run_e1_e2

    start = time.perf_counter()
    logging.getLogger("steerlimits.invert.sequential").setLevel(logging.WARNING)  # one line per prompt instead
    ctx = _ctx(config, model, vectors, config["paperA"]["vectors"])
    res = run_e1_e2(ctx)
    vocab = int(ctx.model.get_input_embeddings().weight.shape[0])
    for key in ("positions", "prompts", "certificates"):
        res[key]["vocab_size"] = vocab
        res[key]["refusal_trained"] = ctx.refusal_trained
    meta = _meta(ctx, config, "e1", e2=config["paperA"]["e2"], decoder=config["paperA"]["decoder"],
                 reductions_e2=reductions(config["paperA"], "e2"), wall_s=time.perf_counter() - start,
                 n_prompts=config["paperA"]["n_prompts"], **res["meta"],
                 method="sequential inversion (engine steerlimits.invert.invert) in DecoderRank order; natural: "
                        "exhaustive with early exit; steered: ranked, warm-started with the natural token",
                 tau_rule="tau_exact = 10 x max_{t>=1} floor_t on the prompt; position 0: 10 x floor_0")
    for key in ("positions", "prompts", "certificates"):
        write_csv(out[key], res[key], meta)


# ------------------------------------------------------------------------------------------------ behaviour
def behaviour(config: Mapping[str, Any], model: str, vectors: Mapping[str, str], prompts_csv: str,
              out: str) -> None:
    """E1 behaviour: greedy generations from x, steered x and the recovered ids (unsteered), scored."""
    from steerlimits.papera.generation import greedy_batch
    from steerlimits.scoring import is_refusal, load_scorer

    pa = config["paperA"]
    ctx = _ctx(config, model, vectors, pa["vectors"])
    table = pd.read_csv(prompts_csv)
    table = table[(table["experiment"] == "E1") & (table["condition"] == "steered")]
    rows = []
    n_new = pa["max_new_tokens"]
    for vector in pa["vectors"]:
        trait = scorer_for(config, vector)
        scorer = load_scorer(trait)
        sub = table[table["vector"] == vector].sort_values("prompt")
        ids = [json.loads(s) for s in sub["ids"]]
        rec = [json.loads(s) for s in sub["recovered"]]
        outs = {"baseline": greedy_batch(ctx, ids, n_new), "steered": greedy_batch(ctx, ids, n_new, vector=vector)}
        differ = [i for i in range(len(ids)) if rec[i] != ids[i]]
        again = dict(zip(differ, greedy_batch(ctx, [rec[i] for i in differ], n_new))) if differ else {}
        outs["recovered"] = [again.get(i, outs["baseline"][i]) for i in range(len(ids))]
        for cond, conts in outs.items():
            texts = [ctx.tok.decode(c, skip_special_tokens=True) for c in conts]
            traits = scorer.score(texts)
            for i, (cont, text) in enumerate(zip(conts, texts)):
                rows.append({"model": model, "vector": vector, "prompt": int(sub["prompt"].iloc[i]),
                             "condition": cond, "recovered_is_x": rec[i] == ids[i],
                             "refusal": float(is_refusal(text)), "attack_success": float(not is_refusal(text)),
                             "trait_scorer": trait, "substitute_for": scorer.info.substitute_for,
                             "trait_score": float(traits[i]), "n_tokens": len(cont),
                             "refusal_trained": ctx.refusal_trained, "continuation": text})
    write_csv(out, pd.DataFrame(rows), _meta(ctx, config, max_new_tokens=pa["max_new_tokens"],
                                             decoding="greedy, left-padded batches; continuation-only scoring; "
                                                      "recovered ids never re-templated or re-encoded; a recovered "
                                                      "prompt equal to x reuses x's generation"))


# ------------------------------------------------------------------------------------------------ E3 - E7
def responses(config: Mapping[str, Any], model: str, vectors: Mapping[str, str], out: str) -> None:
    from steerlimits.papera.generation import steered_responses

    pa = config["paperA"]
    which = pa["responses"]["vectors"]
    ctx = _ctx(config, model, vectors, which)
    n = max(pa[e]["n_prompts"] for e in ("e3", "e4", "e6"))
    y = max(pa[e]["y_tokens"] for e in ("e3", "e4", "e6"))
    rows = [r for v in which for r in steered_responses(ctx, v, n, y)]
    write_json(out, rows, _meta(ctx, config, n_prompts=n, y_tokens=y,
                                note="greedy, steered at every position; each experiment keeps its first y_tokens"))


def _by_vector(rows: Sequence[Mapping[str, Any]], vector: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if r["vector"] == vector]


def e3(config: Mapping[str, Any], model: str, vectors: Mapping[str, str], responses_json: str,
       out: Mapping[str, str]) -> None:
    from steerlimits.papera.icl import run_e3

    which = config["paperA"]["responses"]["vectors"]
    ctx = _ctx(config, model, vectors, which)
    rows = read_json(responses_json)
    parts = [run_e3(ctx, v, _by_vector(rows, v)) for v in which]
    meta = _meta(ctx, config, "e3", notes=[n for p in parts for n in p["notes"]],
                 steered_attack_success={v: p["steered_attack_success"] for v, p in zip(which, parts)})
    write_csv(out["summary"], pd.concat([p["summary"] for p in parts], ignore_index=True), meta)
    write_csv(out["positions"], pd.concat([p["positions"] for p in parts], ignore_index=True), meta)


def _per_response_vector(config: Mapping[str, Any], model: str, vectors: Mapping[str, str], responses_json: str,
                         out: str, experiment: str, run: Any, **meta: Any) -> None:
    """One table of ``run(ctx, vector, responses)`` rows over the response vectors, written with its sidecar."""
    which = config["paperA"]["responses"]["vectors"]
    ctx = _ctx(config, model, vectors, which)
    rows = read_json(responses_json)
    table = pd.concat([run(ctx, v, _by_vector(rows, v)) for v in which], ignore_index=True)
    write_csv(out, table, _meta(ctx, config, experiment, **meta))


def e4(config: Mapping[str, Any], model: str, vectors: Mapping[str, str], responses_json: str, out: str) -> None:
    from steerlimits.papera.optimise import run_e4

    _per_response_vector(config, model, vectors, responses_json, out, "e4", run_e4,
                         gepa="not run (optional hook, off by default, D11)")


def e5(config: Mapping[str, Any], model: str, vectors: Mapping[str, str], out: Mapping[str, str]) -> None:
    from steerlimits.papera.optimise import run_e5

    which = config["paperA"]["responses"]["vectors"]
    ctx = _ctx(config, model, vectors, which)
    parts = [run_e5(ctx, v) for v in which]
    meta = _meta(ctx, config, "e5")
    table = pd.concat([p["table"] for p in parts], ignore_index=True)
    table["nearest_tokens"] = table["nearest_tokens"].map(json.dumps)
    write_csv(out["table"], table, meta)
    write_csv(out["generations"], pd.concat([p["generations"] for p in parts], ignore_index=True), meta)


def e6(config: Mapping[str, Any], model: str, vectors: Mapping[str, str], responses_json: str, out: str) -> None:
    from steerlimits.papera.copying import run_e6

    _per_response_vector(config, model, vectors, responses_json, out, "e6", run_e6)


def e7(config: Mapping[str, Any], model: str, vectors: Mapping[str, str], out: Mapping[str, str]) -> None:
    from steerlimits.papera.scale import run_e7

    which = config["paperA"]["e7"]["vectors"]
    ctx = _ctx(config, model, vectors, which)
    parts = [run_e7(ctx, v) for v in which]
    meta = _meta(ctx, config, "e7")
    write_csv(out["ratios"], pd.concat([p["ratios"] for p in parts], ignore_index=True), meta)
    write_csv(out["pairs"], pd.concat([p["pairs"] for p in parts], ignore_index=True), meta)


# ------------------------------------------------------------------------------------------ tables, figures
def _concat(paths: Sequence[str]) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_raw(inputs: Mapping[str, Sequence[str]]) -> dict[str, pd.DataFrame]:
    """Concatenate the per-model raw tables named by ``inputs`` (key -> paths)."""
    return {key: _concat(paths) for key, paths in inputs.items()}


def tables(config: Mapping[str, Any], inputs: Mapping[str, Sequence[str]], out: Mapping[str, str]) -> None:
    from steerlimits.papera import tables as T

    raw = load_raw(inputs)
    meta = _meta(None, config, sources={k: list(v) for k, v in inputs.items()},
                 reductions_vs_spec_default={s: reductions(config["paperA"], s) for s in SPEC_DEFAULT},
                 position_rule="position 0 (attention sink) excluded from summaries; reported as top1_pos0_mean")
    summary = T.inversion_summary(raw["prompts"], raw["positions"], raw["certificates"])
    write_csv(out["summary"], summary, meta)
    from steerlimits.provenance import atomic_write_json, atomic_write_text, sidecar_path

    atomic_write_text(out["summary_md"], "# A-T1: inversion summary (E1)\n\n" + T.markdown(summary))
    atomic_write_json(sidecar_path(out["summary_md"]), meta)
    write_csv(out["certificates"], raw["certificates"], meta)
    write_csv(out["e2"], T.e2_table(raw["prompts"], raw["positions"]), meta)
    write_csv(out["e3"], T.e3_table(raw["e3"]), meta)
    write_csv(out["e4"], T.e4_table(raw["e4"]), meta)
    write_csv(out["e5"], T.e5_table(raw["e5"]), meta)
    write_csv(out["e6"], T.e6_table(raw["e6"]), meta)
    write_csv(out["e7"], T.e7_table(raw["e7"]), meta)
    write_csv(out["behaviour"], raw["behaviour"], meta)
    write_csv(out["behaviour_summary"], T.behaviour_table(raw["behaviour"]), meta)


def figures(config: Mapping[str, Any], inputs: Mapping[str, Sequence[str]], e2_csv: str,
            out: Mapping[str, str]) -> None:
    """Every A-F figure as PNG and PDF (``out`` keys ``<id>_png`` / ``<id>_pdf``)."""
    import matplotlib.pyplot as plt

    from steerlimits.papera import figures as F
    from steerlimits.provenance import atomic_path, atomic_write_json, sidecar_path

    raw = load_raw(inputs)
    f4, f4b = F.many_shot(raw["e3"], raw["e3_positions"])
    figs = {"A-F1": F.concept_surface(int(config["seed"])), "A-F2": F.topk_by_position(raw["positions"]),
            "A-F3": F.sweep(pd.read_csv(e2_csv)), "A-F3b": F.sweep_positions(raw["positions"]), "A-F4": f4,
            "A-F4b": f4b, "A-F5": F.soft_prefix(raw["e5"]), "A-F6": F.scale(raw["e7_pairs"])}
    meta = _meta(None, config, sources={k: list(v) for k, v in inputs.items()})
    for fid, fig in figs.items():
        for ext in ("png", "pdf"):
            path = out[f"{fid}_{ext}"]
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=ext)
            atomic_write_json(sidecar_path(path), {**meta, "figure": fid})
        plt.close(fig)


def claims(config: Mapping[str, Any], inputs: Mapping[str, Sequence[str]], out: str) -> None:
    from steerlimits.papera.claims import paper_a_claims

    raw = load_raw(inputs)
    table = paper_a_claims(raw)
    write_csv(out, table, _meta(None, config, sources={k: list(v) for k, v in inputs.items()},
                                thresholds="spec A §8, fixed before any value was seen"))
    log.info("paper A claims:\n%s", table.to_string(index=False))
