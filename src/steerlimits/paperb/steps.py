"""Paper B's step functions, one per rule (``paperB_<name>(settings, inputs, outputs, log)``, see
:mod:`steerlimits.steps`). Each writes through :mod:`steerlimits.outputs` (atomic, with a sidecar that records the
job's settings) and adds what the run measured: sites, sizes, reductions, timings.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from steerlimits import data as D
from steerlimits.claims import claims_frame
from steerlimits.data import Prompt
from steerlimits.models import load_prepared, marker_sha256
from steerlimits.outputs import read_sidecar, write_figure, write_jsonl, write_safetensors, write_table
from steerlimits.paperb import TABLE_FILES
from steerlimits.paperb import nullspace_step as N
from steerlimits.paperb import tables as T
from steerlimits.paperb.claims import claims_rows
from steerlimits.paperb.generation import run_pool
from steerlimits.paperb.logits import run_e4
from steerlimits.paperb.plan import plan_pool
from steerlimits.prompting import encode
from steerlimits.seeds import derive_seed
from steerlimits.settings.paperb import (
    Decoding,
    PaperBClaims,
    PaperBContext,
    PaperBFigures,
    PaperBGenerate,
    PaperBLogits,
    PaperBNullspace,
    PaperBScore,
    PaperBTables,
)
from steerlimits.steer import shipped_decoding
from steerlimits.steps import Files

__all__ = ["BASIS_KEYS", "decoding_settings", "load_bases", "paperB_claims", "paperB_figures", "paperB_generate",
           "paperB_logits", "paperB_nullspace", "paperB_score", "paperB_tables", "read_tables", "site_record"]

log = logging.getLogger(__name__)

BASIS_KEYS = ("null_cov", "active_cov", "null_jac", "active")


def site_record(ctx: PaperBContext) -> dict[str, Any]:
    """Extraction layer l (vector row), injection layer, positions: recorded in every output."""
    return {"model": ctx.model.key, "layer": ctx.layer, "inject_layer": ctx.inject_layer,
            "n_layers": ctx.model.n_layers, "positions": ctx.positions, "prompt_format": ctx.prompt_format,
            "measure_at": f"hidden_states[{ctx.layer}] (input of block {ctx.layer}), last prompt token",
            "inject_at": f"hidden_states[{ctx.inject_layer}] (input of block {ctx.inject_layer})"}


def _ids(tok: Any, texts: list[str], fmt: str) -> list[list[int]]:
    return [encode(tok, Prompt(t), fmt) for t in texts]  # type: ignore[arg-type]


def load_bases(path: str | Path) -> dict[str, torch.Tensor | None]:
    from safetensors.torch import load_file

    t = load_file(str(path))
    return {k: (t[k] if t[k].shape[1] > 0 else None) for k in BASIS_KEYS}


def _vector(path: str | Path, method: str, layer: int) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))[method][layer].float()


# ------------------------------------------------------------------------------------------------- E7
def paperB_nullspace(s: PaperBNullspace, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E7 spectra at L/4, L/2, 3L/4 (+ the injection layer) and the bases at the injection layer."""
    ctx, e7 = s.ctx, s.e7
    inject = ctx.inject_layer
    assert ctx.model.n_layers is not None
    layers = N.e7_layers(ctx.model.n_layers, inject)
    cov_t, jac_t = list(e7.cov_thresholds), list(e7.jac_thresholds)
    mdl, tok = load_prepared(ctx.model, inputs["model"])
    timings: dict[str, float] = {}
    extra: list[str] = []
    if e7.cov_corpora:
        from steerlimits import corpora
        extra = corpora.formal_sentences(max_n=e7.cov_corpora_max, seed=ctx.seed)
    texts = N.project_texts(ctx.data_dir, extra)
    cov = N.timed(lambda: N.collect_covariances(mdl, tok, texts, list(layers), min_tokens=e7.cov_min_tokens,
                                                steer_layer=inject), timings, "covariance_s")
    rows: list[dict[str, Any]] = []
    tensors: dict[str, torch.Tensor] = {}
    decomp = {}
    for layer, label in layers.items():
        sv, vecs = cov.excluded[layer].decomposition()
        decomp[layer] = (sv, vecs)
        rows += N.spectrum_rows(sv, layer=layer, label=label, method="covariance", thresholds=cov_t,
                                n_samples=cov.excluded[layer].n, excluded=N.ns.EXCLUDE_RULE)
        tensors[f"sv/covariance/L{layer}"] = torch.from_numpy(sv.copy())
    sv0, _ = cov.with_pos0.decomposition()
    rows += N.spectrum_rows(sv0, layer=inject, label=layers[inject], method="covariance_with_pos0", thresholds=cov_t,
                            n_samples=cov.with_pos0.n, excluded="none (position 0 included, reported once)")
    tensors[f"sv/covariance_with_pos0/L{inject}"] = torch.from_numpy(sv0.copy())
    jac_ids = _ids(tok, N.project_texts(ctx.data_dir), ctx.prompt_format)  # stems, environments, trait prompts
    n_jac = {layer: e7.jac_prompts if layer == inject else e7.jac_prompts_other for layer in layers}
    if max(n_jac.values()) > len(jac_ids):
        raise ValueError(f"paperB.e7: {max(n_jac.values())} Jacobian prompts requested, {len(jac_ids)} available")
    jac = {}
    for layer, label in layers.items():
        grams = N.timed(lambda layer=layer: N.jacobian_grams(mdl, jac_ids[:n_jac[layer]], layer,
                                                             chunk_size=e7.jac_chunk), timings, f"jacobian_L{layer}_s")
        sv, vecs = N.ns.jacobian_decomposition(grams)
        jac[layer] = (sv, vecs)
        note = "" if n_jac[layer] >= e7.jac_prompts else f"reduced: {n_jac[layer]} prompts off the steering layer"
        rows += N.spectrum_rows(sv, layer=layer, label=label, method="jacobian", thresholds=jac_t,
                                n_samples=n_jac[layer], excluded="none (last position only)", pr_of_squares=True,
                                note=note)
        rows += N.per_prompt_rows(grams, layer=layer, label=label, thresholds=jac_t)
        tensors[f"sv/jacobian/L{layer}"] = torch.from_numpy(sv.copy())
    thr = s.null_thresholds
    tensors["null_cov"], tensors["active_cov"] = N.bases_from(*decomp[inject], thr.covariance)
    tensors["null_jac"], tensors["active"] = N.bases_from(*jac[inject], thr.jacobian)
    table = pd.DataFrame(rows)
    table.insert(0, "model", ctx.model.key)
    reductions = [f"Jacobian at layer {k} ({layers[k]}) over {n} prompts instead of {e7.jac_prompts} (budget)"
                  for k, n in n_jac.items() if n < e7.jac_prompts]
    if cov.excluded[inject].n < e7.cov_min_tokens:
        reductions.append(f"covariance over {cov.excluded[inject].n} tokens, fewer than the {e7.cov_min_tokens} "
                          "asked (all available prompts used)")
    meta = {**site_record(ctx), "model_sha256": marker_sha256(inputs["model"]),
            "e7_layers": {str(k): v for k, v in layers.items()}, "reductions": reductions,
            "covariance": {"n_tokens": cov.excluded[inject].n, "n_prompts": cov.n_prompts,
                           "excluded_positions": N.ns.EXCLUDE_RULE, "n_excluded": cov.n_excluded,
                           "asked_min_tokens": e7.cov_min_tokens, "external_sentences": len(extra),
                           "prompts": "project texts as raw text (tokenizer's special tokens added)"},
            "jacobian": {"prompts_per_layer": {str(k): v for k, v in n_jac.items()}, "dtype": "float32 autograd",
                         "attn_implementation": "eager during the Jacobian",
                         "head": "final norm + unembedding applied analytically (nullspace.logprob_jacobian_gram)"},
            "bases": {k: list(tensors[k].shape) for k in BASIS_KEYS}, "timings_s": timings,
            "participation_ratio": "covariance: of its eigenvalues; jacobian: of s² (eigenvalues of JᵀJ)"}
    write_safetensors(outputs["bases"], tensors, meta)
    write_table(outputs["table"], table, meta)
    log.info("E7 %s: %s", ctx.model.key, json.dumps(timings))


# ----------------------------------------------------------------------------------------- generations
def decoding_settings(d: Decoding, model: Any) -> dict[str, Any]:
    """Sampling settings of paper B's pools: ``explicit`` (top-p from the config, top-k and repetition penalty
    off) or ``faithful`` (the checkpoint's shipped defaults, as the authors' code got them; temperature stays
    the config's, which the authors set)."""
    if d.mode == "faithful":
        return {"mode": d.mode, **shipped_decoding(model)}
    return {"mode": d.mode, "top_p": d.top_p, "top_k": None, "repetition_penalty": None}


def paperB_generate(s: PaperBGenerate, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """All sampled conditions (E1, E2, E3, E5, E6) of one model × trait in few batched generate() calls."""
    ctx = s.ctx
    v = _vector(inputs["vectors"], ctx.method, ctx.layer)
    v_pca = _vector(inputs["vectors"], "pca", ctx.layer)
    bases = load_bases(inputs["bases"])
    stems = D.neutral_stems(ctx.data_dir)
    envs = D.environments(ctx.data_dir)
    seed = derive_seed(ctx.seed, "paperB", ctx.model.key, s.trait)
    pool = plan_pool(s, v=v, v_pca=v_pca, bases=bases, n_stems=len(stems),
                     environments={e: len(p) for e, p in envs.items()}, seed=seed)
    mdl, tok = load_prepared(ctx.model, inputs["model"])
    prompt_ids = {"stems": _ids(tok, stems, ctx.prompt_format)}
    prompt_ids.update({f"env:{e}": _ids(tok, p, ctx.prompt_format) for e, p in envs.items()})
    t0 = time.perf_counter()
    decoding = decoding_settings(s.decoding, mdl)
    rows = run_pool(mdl, tok, pool.conditions, prompt_ids, layer=ctx.inject_layer, positions=ctx.positions,
                    temperature=s.decoding.temperature, top_p=decoding["top_p"], top_k=decoding["top_k"],
                    repetition_penalty=decoding["repetition_penalty"], batch_size=s.decoding.batch_size, seed=seed)
    wall = time.perf_counter() - t0
    for r in rows:
        r.update(model=ctx.model.key, trait=s.trait)
    cos = float(torch.nn.functional.cosine_similarity(v, v_pca, dim=0))
    flips = read_sidecar(inputs["vectors"]).get("pca_sign_flips", [])
    meta = {**site_record(ctx), "model_sha256": marker_sha256(inputs["model"]), "seed": seed, "trait": s.trait,
            "vector_norm": float(v.norm()), "pca_norm": float(v_pca.norm()), "cos_mean_diff_pca": cos,
            "pc1_flipped": ctx.layer in flips,
            "vector_source": "traits.jsonl pairs of this trait (their contexts are the in-distribution environment)",
            "decoding": {**decoding, "temperature": s.decoding.temperature, "batch_size": s.decoding.batch_size},
            "n_conditions": len(pool.conditions), "n_generations": len(rows), "generation_wall_s": round(wall, 1),
            "tokens_generated": int(sum(r["n_new_tokens"] for r in rows)), "notes": pool.notes,
            "reuse": "E2 at alpha 0 and alpha = paperB.alpha reuses E1's zero, v and random_orth seeds; "
                     "E6 compares against E1's v and zero; u draws are shared by E1, E2, E3"}
    save = {k: t.float() for k, t in pool.perturbations.items()} or {"none": torch.zeros(1)}
    write_safetensors(outputs["perturbations"], save, meta)
    write_jsonl(outputs["generations"], rows, meta)
    log.info("%s %s: %d generations in %.1f s", ctx.model.key, s.trait, len(rows), wall)


def paperB_score(s: PaperBScore, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Score continuations only with the validated scorer of each pool's trait (offline ones are named
    substitutes); one job for every pool, so the embedding model loads once."""
    from steerlimits.scoring import load_scorer, score_table

    scorers: dict[str, Any] = {}
    for gen_path, out_path in zip(inputs["generations"], outputs["scores"], strict=True):
        gen = read_sidecar(gen_path)
        trait = gen["trait"]
        if trait not in scorers:
            scorers[trait] = load_scorer(s.scorers[trait], Path(inputs["heads"]))
        scorer = scorers[trait]
        df = score_table(pd.read_json(gen_path, lines=True, dtype=False), scorer)
        meta = {k: gen.get(k) for k in ("model", "trait", "model_sha256", "n_generations", "tokens_generated",
                                        "generation_wall_s", "notes", "reuse", "vector_norm", "cos_mean_diff_pca",
                                        "pc1_flipped", "inject_at", "measure_at", "positions", "decoding")}
        write_jsonl(out_path, df.to_dict(orient="records"),
                    {**meta, "scorer": scorer.info.name, "substitute_for": scorer.info.substitute_for,
                     "scored": "continuation only"})


# ------------------------------------------------------------------------------------------------- E4
def paperB_logits(s: PaperBLogits, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E4 next-token logit distances and KL for one model, every trait; no sampling."""
    ctx = s.ctx
    bases = load_bases(inputs["bases"])
    mdl, tok = load_prepared(ctx.model, inputs["model"])
    ids = _ids(tok, D.neutral_stems(ctx.data_dir)[: s.e4.n_prefixes], ctx.prompt_format)
    paths = {Path(p).stem: p for p in inputs["vectors"]}
    vecs = {trait: _vector(paths[trait], ctx.method, ctx.layer) for trait in s.traits}
    frames = []
    for trait, v in vecs.items():
        seed = derive_seed(ctx.seed, "paperB", ctx.model.key, trait)
        others = {t: w for t, w in vecs.items() if t != trait}
        df = pd.DataFrame(run_e4(mdl, tok, ids, v, bases, list(s.families), layer=ctx.inject_layer, alpha=s.alpha,
                                 n_u=s.e4.n_u, n_r=s.e4.n_r, seed=seed, others=others))
        df.insert(0, "trait", trait)
        df.insert(0, "model", ctx.model.key)
        frames.append(df)
    meta = {**site_record(ctx), "model_sha256": marker_sha256(inputs["model"]), "n_prefixes": len(ids),
            "vector_norms": {t: float(v.norm()) for t, v in vecs.items()},
            "random_control": "Gaussian r rescaled to ||r|| = ||u|| = ||v|| (not orthogonalised)",
            "other_trait_control": "each other trait's vector rescaled to ||v||, steered in place of v",
            "kl": "KL(p_v || p_cond), nats", "seeds": "derive_seed(seed, 'paperB', model, trait) per trait"}
    write_table(outputs["rows"], pd.concat(frames, ignore_index=True), meta)


# ------------------------------------------------------------------------------------------ tables, claims
def read_tables(paths: Files) -> dict[str, pd.DataFrame]:
    """Paper B's tables (``t1`` … ``t7``), with label columns read as strings."""
    frames = {}
    for key in TABLE_FILES:
        df = pd.read_csv(paths[key], keep_default_na=False, na_values=[""])
        for col in ("seed", "family", "condition", "reference"):
            if col in df:
                df[col] = df[col].astype(str).replace("nan", "")
        frames[key] = df
    return frames


def paperB_tables(s: PaperBTables, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Tables B-T1 … B-T7 (d with bootstrap CIs, Welch, TOST, efficacy) from all pools, logits and spectra."""
    ctx = T.Ctx(s.seed, s.n_boot, s.bound_d)
    pool = pd.concat([pd.read_json(p, lines=True, dtype=False) for p in inputs["scores"]], ignore_index=True)
    pool["family"] = pool["family"].fillna("").astype(str)
    metas = {str(p): read_sidecar(p) for p in inputs["scores"]}
    vmeta = {(m["model"], m["trait"]): m for m in metas.values() if "model" in m}
    out = {
        "t1": T.orthogonal_test(pool, ctx),
        "t2": T.alpha_sweep(pool, ctx, list(s.e2.alphas), s.alpha, s.e2.n_seeds, s.e2.family),
        "t3": T.environments(pool, ctx),
        "t4": T.logit_distances(pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""])
                                           for p in inputs["logits"]], ignore_index=True)),
        "t5": T.mean_diff_vs_pca(pool, ctx, vmeta),
        "t6": T.nullspace_spanning(pool, ctx),
        "t7": pd.concat([pd.read_csv(p) for p in inputs["nullspace"]], ignore_index=True),
    }
    meta = {"statistics": {"d": "signed pooled-SD Cohen's d of condition vs reference",
                           "ci": "percentile bootstrap 95 %", "n_boot": ctx.n_boot, "tost_bound_d": ctx.bound},
            "efficacy": "(mu - mu(alpha0)) / (mu(v) - mu(alpha0)) within the same experiment (D7)",
            "scorers": sorted({f"{m.get('scorer')} (substitute for {m.get('substitute_for')})"
                               for m in metas.values()}),
            "pools": {f"{m.get('model')}/{m.get('trait')}": m for m in metas.values()},
            "nullspace": {str(p): read_sidecar(p).get("timings_s") for p in inputs["nullspace"]}}
    extra = {"t3": {"authors_summary": T.e3_summary(out["t3"])}}
    log.info("paper B tables: %s", {TABLE_FILES[k][0]: len(df) for k, df in out.items()})
    for key, df in out.items():
        write_table(outputs[key], df, {**meta, "table": TABLE_FILES[key][1], **extra.get(key, {})})


def paperB_claims(s: PaperBClaims, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Claims rows B0–B10 per model × trait with fixed thresholds (paper and strict equivalence)."""
    t = read_tables(inputs)
    rows = claims_rows(t["t1"], t["t2"], t["t3"], t["t4"], t["t5"], t["t6"], t["t7"], master_seed=s.seed,
                       steer_layers=dict(s.half_layers))
    df = claims_frame(rows)
    write_table(outputs["table"], df, {"thresholds": "fixed before any value was seen (docs/concepts/"
                                                     "statistics-and-claims.md)", "n_rows": len(df),
                                       "holds_counts": df["holds"].value_counts().to_dict()})
    log.info("paper B claims:\n%s", df[["claim_id", "model", "metric", "value", "holds"]].to_string(index=False))


def paperB_figures(s: PaperBFigures, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Figures B-F1 … B-F8 (PNG + PDF)."""
    import matplotlib.pyplot as plt  # after steerlimits.plotting selected the Agg backend
    from safetensors.numpy import load_file

    from steerlimits.paperb import FIGURE_FILES
    from steerlimits.paperb.figures import all_figures

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    t = read_tables(inputs)
    spectra: dict[str, dict[str, dict[int, Any]]] = {}
    labels: dict[str, dict[int, str]] = {}
    for path in inputs["bases"]:
        meta = read_sidecar(path)
        model = meta["model"]
        spectra[model] = {}
        for key, arr in load_file(str(path)).items():
            if key.startswith("sv/"):
                _, method, layer = key.split("/")
                spectra[model].setdefault(method, {})[int(layer[1:])] = arr
        labels[model] = {int(k): v for k, v in meta["e7_layers"].items()}
    figs = all_figures(t, spectra, labels, {"covariance": list(s.cov_thresholds), "jacobian": list(s.jac_thresholds)})
    for fid, fig in figs.items():
        write_figure(fig, [outputs[f"{fid[2:]}_{ext}"] for ext in ("png", "pdf")], {"figure": fid})
        plt.close(fig)
