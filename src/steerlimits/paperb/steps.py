"""Paper B's step functions, one per rule (``paperB_<name>(settings, inputs, outputs, log)``, see
:mod:`steerlimits.steps`). Each writes through :mod:`steerlimits.outputs` (atomic, with a sidecar that records the
job's settings) and adds what the run measured: sites, sizes, reductions, timings.

DAG: ``paperB_nullspace`` (per model) and ``paperB_calibrate`` (per model × trait) -> ``paperB_generate`` (per
model × trait, reads the calibrated α and samples per stem) -> ``paperB_score``; ``paperB_logits`` (per model,
every trait's calibration) and ``paperB_dtype_check`` (one pair) -> ``paperB_tables`` -> claims and figures.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from steerlimits import data as D
from steerlimits import stats as S
from steerlimits.claims import claims_frame
from steerlimits.data import Prompt
from steerlimits.models import load_prepared, marker_sha256
from steerlimits.outputs import (
    read_sidecar,
    write_figure,
    write_json,
    write_jsonl,
    write_safetensors,
    write_table,
)
from steerlimits.paperb import TABLE_FILES
from steerlimits.paperb import calibrate as K
from steerlimits.paperb import nullspace_step as N
from steerlimits.paperb import tables as T
from steerlimits.paperb.claims import claims_rows
from steerlimits.paperb.generation import continuation_nll, run_pool
from steerlimits.paperb.geometry import where_v_lives
from steerlimits.paperb.logits import run_e4
from steerlimits.paperb.plan import Condition, _grid, plan_pool, stem_split, u_draw
from steerlimits.prompting import encode
from steerlimits.seeds import derive_seed
from steerlimits.settings.paperb import (
    Decoding,
    PaperBCalibrate,
    PaperBClaims,
    PaperBContext,
    PaperBDtypeCheck,
    PaperBFigures,
    PaperBGenerate,
    PaperBLogits,
    PaperBNullspace,
    PaperBScore,
    PaperBTables,
)
from steerlimits.steer import shipped_decoding
from steerlimits.steps import Files

__all__ = [
    "BASIS_KEYS",
    "decoding_settings",
    "load_bases",
    "paperB_calibrate",
    "paperB_claims",
    "paperB_dtype_check",
    "paperB_figures",
    "paperB_generate",
    "paperB_logits",
    "paperB_nullspace",
    "paperB_score",
    "paperB_tables",
    "read_tables",
    "site_record",
]

log = logging.getLogger(__name__)

#: Bases exported by ``paperB_nullspace`` at the steering layer (``null_cov``, ``null_jac``, ``active`` are sampled).
BASIS_KEYS = ("null_cov", "null_cov_pos0", "null_jac", "null_fisher", "active")


def site_record(ctx: PaperBContext) -> dict[str, Any]:
    """Extraction layer l (vector row), injection layer, positions: recorded in every output."""
    return {
        "model": ctx.model.key,
        "layer": ctx.layer,
        "inject_layer": ctx.inject_layer,
        "n_layers": ctx.model.n_layers,
        "positions": ctx.positions,
        "prompt_format": ctx.prompt_format,
        "measure_at": f"hidden_states[{ctx.layer}] (input of block {ctx.layer}), last prompt token",
        "inject_at": f"hidden_states[{ctx.inject_layer}] (input of block {ctx.inject_layer})",
    }


def _ids(tok: Any, texts: list[str], fmt: str) -> list[list[int]]:
    return [encode(tok, Prompt(t), fmt) for t in texts]  # type: ignore[arg-type]


def load_bases(path: str | Path) -> dict[str, torch.Tensor | None]:
    from safetensors.torch import load_file

    t = load_file(str(path))
    return {k: (t[k] if t[k].shape[1] > 0 else None) for k in BASIS_KEYS}


def _vector(path: str | Path, method: str, layer: int) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))[method][layer].float()


def _pool_seed(ctx: PaperBContext, trait: str) -> int:
    return derive_seed(ctx.seed, "paperB", ctx.model.key, trait)


def _spread(items: list[Any], n: int) -> list[Any]:
    """``n`` evenly spaced items of ``items`` in order (all when there are fewer)."""
    if n >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def decoding_settings(d: Decoding, model: Any) -> dict[str, Any]:
    """Sampling settings of paper B's pools: ``explicit`` (top-p from the config, top-k and repetition penalty
    off) or ``faithful`` (the checkpoint's shipped defaults, as the authors' code got them; temperature stays
    the config's, which the authors set)."""
    if d.mode == "faithful":
        return {"mode": d.mode, **shipped_decoding(model)}
    return {"mode": d.mode, "top_p": d.top_p, "top_k": None, "repetition_penalty": None}


def _run(
    mdl: Any,
    tok: Any,
    conds: list[Condition],
    prompt_ids: dict[str, Any],
    ctx: PaperBContext,
    d: Decoding,
    seed: int,
    dtype: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    dec = decoding_settings(d, mdl)
    t0 = time.perf_counter()
    rows = run_pool(
        mdl,
        tok,
        conds,
        prompt_ids,
        layer=ctx.inject_layer,
        positions=ctx.positions,
        temperature=d.temperature,
        top_p=dec["top_p"],
        top_k=dec["top_k"],
        repetition_penalty=dec["repetition_penalty"],
        batch_size=d.batch_size,
        seed=seed,
        dtype=dtype or d.dtype,
    )
    return rows, dec, time.perf_counter() - t0


def _add_nll(mdl: Any, tok: Any, rows: list[dict[str, Any]], prompt_ids: dict[str, Any], batch_size: int) -> float:
    """Adds ``nll`` (mean per-token NLL of the continuation under the unsteered float32 model) to ``rows``."""
    t0 = time.perf_counter()
    nll = continuation_nll(
        mdl,
        tok,
        [prompt_ids[r["prompt_set"]][r["prompt_index"]] for r in rows],
        [r["continuation_ids"] for r in rows],
        batch_size=batch_size,
    )
    for r, x in zip(rows, nll, strict=True):
        r["nll"] = x
    return time.perf_counter() - t0


def _paths(value: Any) -> list[str]:
    """A named input as a list of paths (Snakemake gives a single file as a string)."""
    return [value] if isinstance(value, str) else list(value)


def _tokens(rows: list[dict[str, Any]]) -> int:
    return int(sum(r["n_new_tokens"] for r in rows))


# ------------------------------------------------------------------------------------------------- E7
def paperB_nullspace(s: PaperBNullspace, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E7 spectra at L/4, L/2, 3L/4 (+ the injection layer) and the bases at the injection layer, from prompts
    disjoint from every evaluated prompt."""
    ctx, e7 = s.ctx, s.e7
    inject = ctx.inject_layer
    assert ctx.model.n_layers is not None
    layers = N.e7_layers(ctx.model.n_layers, inject)
    cov_t, jac_t = list(e7.cov_thresholds), list(e7.jac_thresholds)
    mdl, tok = load_prepared(ctx.model, inputs["model"], ctx.device)
    timings: dict[str, float] = {}
    extra: list[str] = []
    if e7.cov_corpora:
        from steerlimits import corpora

        extra = corpora.formal_sentences(max_n=e7.cov_corpora_max, seed=ctx.seed)
    texts = N.estimation_texts(ctx.data_dir, extra)
    cov = N.timed(
        lambda: N.collect_covariances(
            mdl,
            tok,
            texts,
            list(layers),
            min_tokens=e7.cov_min_tokens,
            steer_layer=inject,
            outlier_factor=e7.outlier_factor,
        ),
        timings,
        "covariance_s",
    )
    rows: list[dict[str, Any]] = []
    tensors: dict[str, torch.Tensor] = {}
    decomp: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {"covariance": {}, "covariance_no_outliers": {}}
    for layer, label in layers.items():
        for method, acc, excl in (
            ("covariance", cov.excluded[layer], N.ns.EXCLUDE_RULE),
            (
                "covariance_no_outliers",
                cov.clean[layer],
                f"{N.ns.EXCLUDE_RULE}; {N.OUTLIER_RULE} (x{e7.outlier_factor:g}: norm > "
                f"{cov.outlier_threshold[layer]:.1f}, {cov.n_outliers[layer]} tokens)",
            ),
        ):
            sv, vecs = acc.decomposition()
            decomp[method][layer] = (sv, vecs)
            rows += N.spectrum_rows(
                sv, layer=layer, label=label, method=method, thresholds=cov_t, n_samples=acc.n, excluded=excl
            )
            tensors[f"sv/{method}/L{layer}"] = torch.from_numpy(sv.copy())
    sv0, _ = cov.with_pos0.decomposition()
    rows += N.spectrum_rows(
        sv0,
        layer=inject,
        label=layers[inject],
        method="covariance_with_pos0",
        thresholds=cov_t,
        n_samples=cov.with_pos0.n,
        excluded="none (position 0 included, reported once)",
    )
    tensors[f"sv/covariance_with_pos0/L{inject}"] = torch.from_numpy(sv0.copy())
    jac_ids = _ids(tok, texts, ctx.prompt_format)
    n_jac = {layer: e7.jac_prompts if layer == inject else e7.jac_prompts_other for layer in layers}
    if max(n_jac.values()) > len(jac_ids):
        raise ValueError(
            f"paperB.e7: {max(n_jac.values())} Jacobian prompts requested, {len(jac_ids)} estimation prompts available"
        )
    jac: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {"jacobian": {}, "jacobian_fisher": {}}
    covered: list[float] = []
    for layer, label in layers.items():
        grams = N.timed(
            lambda layer=layer: N.jacobian_grams(
                mdl, _spread(jac_ids, n_jac[layer]), layer, chunk_size=e7.jac_chunk, fisher_mass=e7.fisher_mass
            ),
            timings,
            f"jacobian_L{layer}_s",
        )
        covered += [g["fisher_covered"] for g in grams]
        note = "" if n_jac[layer] >= e7.jac_prompts else f"reduced: {n_jac[layer]} prompts off the steering layer"
        for method, key in (("jacobian", "plain"), ("jacobian_fisher", "fisher")):
            sv, vecs = N.ns.jacobian_decomposition([g[key] for g in grams])
            jac[method][layer] = (sv, vecs)
            rows += N.spectrum_rows(
                sv,
                layer=layer,
                label=label,
                method=method,
                thresholds=jac_t,
                n_samples=n_jac[layer],
                excluded="none (last position only)",
                note=note,
            )
            tensors[f"sv/{method}/L{layer}"] = torch.from_numpy(sv.copy())
        rows += N.per_prompt_rows([g["plain"] for g in grams], layer=layer, label=label, thresholds=jac_t)
    thr = s.null_thresholds
    tensors["null_cov"] = N.null_from(*decomp["covariance_no_outliers"][inject], thr.covariance)
    tensors["null_cov_pos0"] = N.null_from(*decomp["covariance"][inject], thr.covariance)
    tensors["null_jac"] = N.null_from(*jac["jacobian"][inject], thr.jacobian)
    tensors["null_fisher"] = N.null_from(*jac["jacobian_fisher"][inject], thr.jacobian)
    k = min(s.active_k, int(jac["jacobian"][inject][1].shape[1]))
    tensors["active"] = N.ns.top_basis(torch.from_numpy(jac["jacobian"][inject][1].copy()), k).float().contiguous()
    tensors["cov_vectors"] = torch.from_numpy(decomp["covariance_no_outliers"][inject][1].copy()).float()
    tensors["jac_vectors"] = torch.from_numpy(jac["jacobian"][inject][1].copy()).float()
    tensors["fisher_vectors"] = torch.from_numpy(jac["jacobian_fisher"][inject][1].copy()).float()
    table = pd.DataFrame(rows)
    table.insert(0, "model", ctx.model.key)
    reductions = [
        f"Jacobian at layer {k} ({layers[k]}) over {n} prompts instead of {e7.jac_prompts} (budget)"
        for k, n in n_jac.items()
        if n < e7.jac_prompts
    ]
    if cov.excluded[inject].n < e7.cov_min_tokens:
        reductions.append(
            f"covariance over {cov.excluded[inject].n} tokens, fewer than the {e7.cov_min_tokens} "
            "asked (all available estimation prompts used)"
        )
    meta = {
        **site_record(ctx),
        "model_sha256": marker_sha256(inputs["model"]),
        "e7_layers": {str(k): v for k, v in layers.items()},
        "reductions": reductions,
        "definition": "both estimators: singular values relative to sigma_1 (covariance: sqrt of its "
        "eigenvalues, i.e. of the centred activations); participation ratio of sigma^2",
        "estimation_prompts": {
            "n": len(texts),
            "rule": "project texts minus every neutral stem and environment prompt (nullspace_step.estimation_texts)",
        },
        "covariance": {
            "n_tokens": cov.excluded[inject].n,
            "n_tokens_no_outliers": cov.clean[inject].n,
            "n_prompts": cov.n_prompts,
            "excluded_positions": N.ns.EXCLUDE_RULE,
            "outlier_rule": N.OUTLIER_RULE,
            "outlier_factor": e7.outlier_factor,
            "outlier_threshold": {str(k): v for k, v in cov.outlier_threshold.items()},
            "n_outliers": {str(k): v for k, v in cov.n_outliers.items()},
            "n_excluded": cov.n_excluded,
            "asked_min_tokens": e7.cov_min_tokens,
            "external_sentences": len(extra),
            "prompts": "estimation texts as raw text (tokenizer's special tokens added)",
        },
        "jacobian": {
            "prompts_per_layer": {str(k): v for k, v in n_jac.items()},
            "dtype": "float32 autograd",
            "prompts": "evenly spaced over the estimation texts",
            "attn_implementation": "eager during the Jacobian",
            "head": "final norm + unembedding applied analytically (nullspace.logprob_jacobian_grams)",
            "fisher_mass": e7.fisher_mass,
            "fisher_covered_min": float(min(covered)) if covered else None,
        },
        "bases": {k: list(tensors[k].shape) for k in (*BASIS_KEYS, "cov_vectors")},
        "null_basis_sources": {
            "null_cov": "covariance_no_outliers",
            "null_cov_pos0": "covariance",
            "null_jac": "jacobian (plain)",
            "null_fisher": "jacobian_fisher",
            "active": f"top {k} right singular vectors of the plain stacked Jacobian",
        },
        "timings_s": timings,
    }
    write_safetensors(outputs["bases"], tensors, meta)
    write_table(outputs["table"], table, meta)
    log.info("E7 %s: %s", ctx.model.key, json.dumps(timings))


# ------------------------------------------------------------------------------------------ calibration
def paperB_calibrate(s: PaperBCalibrate, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """The α sweep on the calibration stems, the chosen α (B0 on those stems), the pilot and the sample size."""
    from steerlimits.scoring import load_scorer, score_table

    ctx, cal, des = s.ctx, s.calibration, s.design
    stems = D.neutral_stems(ctx.data_dir)
    eval_idx, cal_idx = stem_split(len(stems), cal.n_stems)
    n_eval = min(s.n_eval_stems or len(eval_idx), len(eval_idx))
    mdl, tok = load_prepared(ctx.model, inputs["model"], ctx.device)
    prompt_ids = {"stems": _ids(tok, stems, ctx.prompt_format)}
    methods = [ctx.method] + [m for m in cal.methods if m != ctx.method]
    vecs = {m: _vector(inputs["vectors"], m, ctx.layer) for m in methods}
    h_norm = K.median_residual_norm(mdl, tok, [prompt_ids["stems"][i] for i in cal_idx], ctx.inject_layer)
    seed = _pool_seed(ctx, s.trait)
    T_ = s.decoding.max_new_tokens
    grids = {m: K.alpha_grid(s.alpha, cal.rel_norms, float(vecs[m].norm()), h_norm) for m in methods}
    scorer = load_scorer(s.scorer, Path(inputs["heads"]))
    zero = Condition(
        "cal/zero",
        "cal",
        "zero",
        torch.zeros_like(vecs[ctx.method]),
        "stems",
        _grid(cal_idx, cal.samples),
        T_,
        alpha=0.0,
        alpha_multiple=0.0,
    )
    # increasing alpha, two grid points per method and round; a reading stops once its perplexity ratio exceeds
    # twice the limit (every larger alpha is less fluent still): K.STOP_FACTOR, recorded in the sidecar
    frames, stopped, walls, nll_s, n_gen, n_tok = [], {}, [], 0.0, 0, 0
    ppl0 = None
    for start in range(0, max(len(g) for g in grids.values()), 2):
        conds = [zero] if start == 0 else []
        for m in methods:
            if m in stopped:
                continue
            conds += [
                Condition(
                    f"cal/{m}/a{g['alpha']:.6g}",
                    "cal",
                    "v",
                    g["alpha"] * vecs[m],
                    "stems",
                    _grid(cal_idx, cal.samples),
                    T_,
                    alpha=g["alpha"],
                    family=m,
                )
                for g in grids[m][start : start + 2]
            ]
        if not conds:
            break
        rows, dec, wall = _run(mdl, tok, conds, prompt_ids, ctx, s.decoding, seed)
        nll_s += _add_nll(mdl, tok, rows, prompt_ids, s.decoding.batch_size)
        walls.append(wall)
        n_gen, n_tok = n_gen + len(rows), n_tok + _tokens(rows)
        part = score_table(pd.DataFrame(rows), scorer)
        frames.append(part)
        if ppl0 is None:
            ppl0 = float(np.exp(part.loc[part["kind"] == "zero", "nll"].mean()))
        for (m, a), g in part[part["kind"] == "v"].groupby(["family", "alpha"]):
            ratio = float(np.exp(g["nll"].mean())) / ppl0
            if ratio > K.STOP_FACTOR * cal.max_ppl_ratio and m not in stopped:
                stopped[str(m)] = float(a)
    wall = sum(walls)
    df = pd.concat(frames, ignore_index=True)
    df["method"] = np.where(df["kind"] == "zero", "", df["family"])
    sweep = K.sweep_table(df, n_boot=2000, seed=seed)
    grid_of = {(m, round(g["alpha"], 6)): g for m in methods for g in grids[m]}
    sweep["rel_norm"] = [
        grid_of.get((r.method, round(r.alpha, 6)), {}).get("rel_norm", 0.0) for r in sweep.itertuples()
    ]
    sweep["paper_setting"] = [
        bool(grid_of.get((r.method, round(r.alpha, 6)), {}).get("paper_setting", False)) and r.method == ctx.method
        for r in sweep.itertuples()
    ]  # alpha 1, the paper's reading
    if s.alpha_mode == "calibrated":
        choice = K.choose_alpha(sweep, methods, target_d=cal.target_d, max_ppl_ratio=cal.max_ppl_ratio)
    else:
        r = sweep[(sweep["method"] == ctx.method) & np.isclose(sweep["alpha"], s.alpha)].iloc[0]
        passed = bool(r["cohens_d"] >= cal.target_d and r["ppl_ratio"] <= cal.max_ppl_ratio)
        choice = K.Choice(
            ctx.method,
            float(s.alpha),
            passed,
            "alpha_mode fixed: the paper's reading and alpha",
            float(r["cohens_d"]),
            float(r["ppl_ratio"]),
            float(r["rel_norm"]),
        )
    # ---- pilot at the chosen setting: v + u_s (random_orth, the E1 draws), paired with alpha v and alpha 0
    v = vecs[choice.method]
    pilot = [
        Condition(
            f"cal/pilot/s{k}",
            "cal",
            "v+u",
            choice.alpha * (v + u_draw(v, "random_orth", k, seed=seed, basis=None)),
            "stems",
            [(p, k) for p in cal_idx],
            T_,
            alpha=choice.alpha,
            family="random_orth",
            seed=k,
        )
        for k in range(cal.samples)
    ]
    prow, _, wall_p = _run(mdl, tok, pilot, prompt_ids, ctx, s.decoding, seed)
    pdf = score_table(pd.DataFrame(prow), scorer)
    chosen_v = df[(df["kind"] == "v") & (df["method"] == choice.method) & np.isclose(df["alpha"], choice.alpha)]
    design = K.design_from_pilot(
        df[df["kind"] == "zero"],
        chosen_v,
        pdf,
        n_eval_stems=n_eval,
        delta=des.delta,
        tost_alpha=des.tost_alpha,
        power=des.power,
        s_min=des.s_min,
        s_max=des.s_max,
    )
    samples = design.samples if choice.passed else des.s_failed
    if not choice.passed:
        design.note += f"; B0 failed on the calibration stems: {des.s_failed} sample(s) per stem (reduced)"
    design.samples = samples
    record = K.summary(
        choice,
        design,
        [{**g, "method": m} for m in methods for g in grids[m]],
        samples=samples,
        model=ctx.model.key,
        trait=s.trait,
        scorer=scorer.info.name,
        median_residual_norm=h_norm,
        vector_norms={m: float(x.norm()) for m, x in vecs.items()},
        stems={"calibration": cal_idx, "evaluation": eval_idx, "n_eval_used": n_eval},
        alpha_mode=s.alpha_mode,
        paper_alpha=s.alpha,
        paper_method=ctx.method,
    )
    meta = {
        **site_record(ctx),
        "model_sha256": marker_sha256(inputs["model"]),
        "trait": s.trait,
        "scorer": scorer.info.name,
        "substitute_for": scorer.info.substitute_for,
        "seed": seed,
        "decoding": {
            **dec,
            "temperature": s.decoding.temperature,
            "batch_size": s.decoding.batch_size,
            "dtype": s.decoding.dtype,
            "sampling": "common random numbers per (stem, sample)",
        },
        "n_generations": n_gen + len(prow),
        "tokens_generated": n_tok + _tokens(prow),
        "timings_s": {"sweep_generation": round(wall, 1), "pilot_generation": round(wall_p, 1), "nll": round(nll_s, 1)},
        "sweep_stopped_at": {m: a for m, a in stopped.items()},
        "reductions": [
            f"{m}: sweep stopped after alpha {a:.4g} (perplexity ratio > {K.STOP_FACTOR:g} x "
            f"{cal.max_ppl_ratio:g}); larger alphas not generated"
            for m, a in stopped.items()
        ],
        "choice": record["reason"],
        "b0_calibration": choice.passed,
        "alpha": choice.alpha,
        "method": choice.method,
        "samples_per_stem": samples,
        "design_note": design.note,
        "perplexity": "exp(mean over continuations of the mean per-token NLL under the unsteered float32 model)",
    }
    sweep.insert(0, "trait", s.trait)
    sweep.insert(0, "model", ctx.model.key)
    write_table(outputs["table"], sweep, meta)
    write_json(outputs["calibration"], record, meta)
    keep = [c for c in df.columns if c != "continuation_ids"]
    write_jsonl(
        outputs["generations"],
        pd.concat([df[keep], pdf[[c for c in pdf.columns if c != "continuation_ids"]]], ignore_index=True).to_dict(
            orient="records"
        ),
        meta,
    )
    log.info(
        "calibration %s %s: %s alpha %.4g (%s), samples %d, %s",
        ctx.model.key,
        s.trait,
        choice.method,
        choice.alpha,
        record["reason"],
        samples,
        design.note,
    )


# ----------------------------------------------------------------------------------------- generations
def paperB_generate(s: PaperBGenerate, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """All sampled conditions (E1, E2, E3, E5, E6) of one model × trait, paired on the evaluation stems."""
    ctx = s.ctx
    cal = json.loads(Path(inputs["calibration"]).read_text(encoding="utf-8"))
    v = _vector(inputs["vectors"], cal["method"], ctx.layer)  # the calibrated reading
    v_pca = _vector(inputs["vectors"], "pca", ctx.layer)
    bases = load_bases(inputs["bases"])
    stems = D.neutral_stems(ctx.data_dir)
    eval_idx, _ = stem_split(len(stems), s.calibration_stems)
    envs = D.environments(ctx.data_dir)
    seed = _pool_seed(ctx, s.trait)
    pool = plan_pool(
        s,
        v=v,
        v_pca=v_pca,
        bases=bases,
        alpha=float(cal["alpha"]),
        samples=int(cal["samples"]),
        eval_stems=eval_idx,
        environments={e: len(p) for e, p in envs.items()},
        seed=seed,
    )
    mdl, tok = load_prepared(ctx.model, inputs["model"], ctx.device)
    prompt_ids = {"stems": _ids(tok, stems, ctx.prompt_format)}
    prompt_ids.update({f"env:{e}": _ids(tok, p, ctx.prompt_format) for e, p in envs.items()})
    rows, dec, wall = _run(mdl, tok, pool.conditions, prompt_ids, ctx, s.decoding, seed)
    fluency = [r for r in rows if r["experiment"] == "e1" and r["kind"] in ("zero", "v")]
    nll_s = _add_nll(mdl, tok, fluency, prompt_ids, s.decoding.batch_size)
    for r in rows:
        r.pop("continuation_ids", None)
        r.update(model=ctx.model.key, trait=s.trait)
        r["subspace_dim"] = pool.family_dims.get(r["family"]) if r["family"] in pool.family_dims else None
    cos = float(torch.nn.functional.cosine_similarity(v, v_pca, dim=0))
    flips = read_sidecar(inputs["vectors"]).get("pca_sign_flips", [])
    meta = {
        **site_record(ctx),
        "model_sha256": marker_sha256(inputs["model"]),
        "seed": seed,
        "trait": s.trait,
        "alpha": float(cal["alpha"]),
        "method": cal["method"],
        "samples_per_stem": int(cal["samples"]),
        "b0_calibration": cal["b0_calibration"],
        "calibration_reason": cal["reason"],
        "design": cal.get("design"),
        "vector_norm": float(v.norm()),
        "pca_norm": float(v_pca.norm()),
        "cos_mean_diff_pca": cos,
        "pc1_flipped": ctx.layer in flips,
        "vector_source": "traits.jsonl pairs of this trait (their contexts are the in-distribution environment)",
        "stems": {"evaluation": eval_idx, "calibration_excluded": s.calibration_stems},
        "decoding": {
            **dec,
            "temperature": s.decoding.temperature,
            "batch_size": s.decoding.batch_size,
            "dtype": s.decoding.dtype,
            "sampling": "common random numbers per (prompt, sample)",
        },
        "family_dims": pool.family_dims,
        "n_conditions": len(pool.conditions),
        "n_generations": len(rows),
        "generation_wall_s": round(wall, 1),
        "nll_wall_s": round(nll_s, 1),
        "tokens_generated": _tokens(rows),
        "notes": pool.notes,
        "reuse": "E2 at 0 and 1 x alpha reuses E1's zero, v and family seeds; E5 and E6 compare against E1's v "
        "and zero (same stems); u draws are shared by E1, E2, E3 and the calibration pilot",
    }
    save = {k: t.float() for k, t in pool.perturbations.items()} or {"none": torch.zeros(1)}
    write_safetensors(outputs["perturbations"], save, meta)
    write_jsonl(outputs["generations"], rows, meta)
    log.info(
        "%s %s: %d generations in %.1f s (alpha %.4g, %d samples per stem)",
        ctx.model.key,
        s.trait,
        len(rows),
        wall,
        cal["alpha"],
        cal["samples"],
    )


def paperB_score(s: PaperBScore, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Score continuations only with the validated scorer of each pool's trait (offline ones are named
    substitutes; sentiment continuous unless configured otherwise); one job for every pool, so the embedding
    model loads once."""
    from steerlimits.scoring import load_scorer, score_table

    scorers: dict[str, Any] = {}
    for gen_path, out_path in zip(_paths(inputs["generations"]), _paths(outputs["scores"]), strict=True):
        gen = read_sidecar(gen_path)
        trait = gen["trait"]
        if trait not in scorers:
            scorers[trait] = load_scorer(s.scorers[trait], Path(inputs["heads"]))
        scorer = scorers[trait]
        df = score_table(pd.read_json(gen_path, lines=True, dtype=False), scorer)
        meta = {
            k: gen.get(k)
            for k in (
                "model",
                "trait",
                "model_sha256",
                "n_generations",
                "tokens_generated",
                "generation_wall_s",
                "notes",
                "reuse",
                "vector_norm",
                "cos_mean_diff_pca",
                "pc1_flipped",
                "inject_at",
                "measure_at",
                "positions",
                "decoding",
                "alpha",
                "method",
                "samples_per_stem",
                "design",
                "family_dims",
            )
        }
        write_jsonl(
            out_path,
            df.to_dict(orient="records"),
            {
                **meta,
                "scorer": scorer.info.name,
                "substitute_for": scorer.info.substitute_for,
                "scored": "continuation only",
            },
        )


# ------------------------------------------------------------------------------------------------- E4
def paperB_logits(s: PaperBLogits, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """E4 next-token logit distances and KL at the calibrated α (evaluation prefixes), the Jacobian spectra at
    the steered point αv (plain and Fisher, estimation prompts) and where v lives (B11), for every trait."""
    ctx = s.ctx
    bases = load_bases(inputs["bases"])
    from safetensors.torch import load_file

    basis_file = load_file(str(inputs["bases"]))
    mdl, tok = load_prepared(ctx.model, inputs["model"], ctx.device)
    stems = D.neutral_stems(ctx.data_dir)
    eval_idx, _ = stem_split(len(stems), s.calibration_stems)
    ids = _ids(tok, [stems[i] for i in eval_idx[: s.e4.n_prefixes]], ctx.prompt_format)
    paths = {Path(p).stem: p for p in _paths(inputs["vectors"])}
    cals = {
        c["trait"]: c for c in (json.loads(Path(p).read_text(encoding="utf-8")) for p in _paths(inputs["calibration"]))
    }
    vecs = {trait: _vector(paths[trait], cals[trait]["method"], ctx.layer) for trait in s.traits}
    jac_ids = _spread(_ids(tok, N.estimation_texts(ctx.data_dir), ctx.prompt_format), s.jac_prompts)
    frames, spec_rows, geo_rows = [], [], []
    steered: dict[str, torch.Tensor] = {}
    timings: dict[str, float] = {}
    for trait, v in vecs.items():
        seed = _pool_seed(ctx, trait)
        alpha = float(cals[trait]["alpha"])
        others = {t: w for t, w in vecs.items() if t != trait}
        t0 = time.perf_counter()
        df = pd.DataFrame(
            run_e4(
                mdl,
                tok,
                ids,
                v,
                bases,
                list(s.families),
                layer=ctx.inject_layer,
                alpha=alpha,
                n_u=s.e4.n_u,
                n_r=s.e4.n_r,
                seed=seed,
                others=others,
            )
        )
        timings[f"e4_{trait}_s"] = round(time.perf_counter() - t0, 1)
        df.insert(0, "alpha", alpha)
        df.insert(0, "trait", trait)
        df.insert(0, "model", ctx.model.key)
        frames.append(df)
        grams = N.timed(
            lambda v=v, alpha=alpha: N.jacobian_grams(
                mdl, jac_ids, ctx.inject_layer, at=alpha * v, chunk_size=s.jac_chunk, fisher_mass=s.fisher_mass
            ),
            timings,
            f"jacobian_steered_{trait}_s",
        )
        for method, key in (("jacobian_steered", "plain"), ("jacobian_fisher_steered", "fisher")):
            sv, _ = N.ns.jacobian_decomposition([g[key] for g in grams])
            steered[f"sv/{method}/{trait}"] = torch.from_numpy(sv.copy())
            for r in N.spectrum_rows(
                sv,
                layer=ctx.inject_layer,
                label="steer",
                method=method,
                thresholds=s.jac_thresholds,
                n_samples=len(jac_ids),
                excluded="none (last position only)",
                note=f"at the steered point alpha v, {trait}, alpha = {alpha:.4g}",
            ):
                spec_rows.append({"model": ctx.model.key, "trait": trait, **r})
        for r in where_v_lives(
            v, basis_file, inject_layer=ctx.inject_layer, n_random=s.e4.n_random, seed=derive_seed(seed, "b11")
        ):
            geo_rows.append({"model": ctx.model.key, "trait": trait, **r})
    meta = {
        **site_record(ctx),
        "model_sha256": marker_sha256(inputs["model"]),
        "n_prefixes": len(ids),
        "prefixes": "the first n_prefixes evaluation stems (never a null-space estimation prompt)",
        "alpha": {t: float(c["alpha"]) for t, c in cals.items()},
        "method": {t: c["method"] for t, c in cals.items()},
        "vector_norms": {t: float(v.norm()) for t, v in vecs.items()},
        "random_control": "Gaussian r rescaled to ||r|| = ||u|| = ||v|| (not orthogonalised)",
        "other_trait_control": "each other trait's vector rescaled to ||v||, steered in place of v",
        "kl": "KL(p_v || p_cond), nats",
        "seeds": "derive_seed(seed, 'paperB', model, trait) per trait",
        "steered_jacobian": {
            "prompts": len(jac_ids),
            "fisher_mass": s.fisher_mass,
            "point": "alpha v added at the last position (the calibrated alpha)",
        },
        "timings_s": timings,
    }
    write_table(outputs["rows"], pd.concat(frames, ignore_index=True), meta)
    write_table(outputs["spectra"], pd.DataFrame(spec_rows), meta)
    write_safetensors(outputs["steered"], steered, meta)
    write_table(outputs["geometry"], pd.DataFrame(geo_rows), meta)


# ------------------------------------------------------------------------------------------ dtype check
def paperB_dtype_check(s: PaperBDtypeCheck, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """α = 0 and αv on the evaluation stems generated in float32 and in bfloat16 with the same sampling streams;
    bf16 equivalent to fp32 by the paired effect-relative TOST (margin δ · the fp32 steering effect)."""
    from steerlimits.scoring import load_scorer, score_table

    ctx = s.ctx
    cal = json.loads(Path(inputs["calibration"]).read_text(encoding="utf-8"))
    alpha = float(cal["alpha"])
    v = _vector(inputs["vectors"], cal["method"], ctx.layer)
    stems = D.neutral_stems(ctx.data_dir)
    eval_idx, _ = stem_split(len(stems), s.calibration_stems)
    eval_idx = eval_idx[: s.n_stems] if s.n_stems else eval_idx
    mdl, tok = load_prepared(ctx.model, inputs["model"], ctx.device)
    prompt_ids = {"stems": _ids(tok, stems, ctx.prompt_format)}
    seed = _pool_seed(ctx, s.trait)
    T_ = s.decoding.max_new_tokens
    conds = [
        Condition(
            "dt/zero",
            "dtype",
            "zero",
            torch.zeros_like(v),
            "stems",
            _grid(eval_idx, s.samples),
            T_,
            alpha=0.0,
            alpha_multiple=0.0,
        ),
        Condition("dt/v", "dtype", "v", alpha * v, "stems", _grid(eval_idx, s.samples), T_, alpha=alpha),
    ]
    scorer = load_scorer(s.scorer, Path(inputs["heads"]))
    frames, walls, tokens = {}, {}, {}
    for dtype in ("float32", "bfloat16"):
        rows, dec, wall = _run(mdl, tok, conds, prompt_ids, ctx, s.decoding, seed, dtype=dtype)
        walls[dtype], tokens[dtype] = wall, _tokens(rows)
        frames[dtype] = score_table(pd.DataFrame(rows), scorer)
    f32, b16 = frames["float32"], frames["bfloat16"]
    key = ["kind", "prompt_index", "sample"]
    same = f32.merge(b16, on=key, suffixes=("_f", "_b"))
    identical = float((same["continuation_f"] == same["continuation_b"]).mean())

    def per_stem(df: pd.DataFrame, kind: str) -> pd.Series:
        return df[df["kind"] == kind].groupby("prompt_index")["score"].mean()

    xf, zf, xb, zb = per_stem(f32, "v"), per_stem(f32, "zero"), per_stem(b16, "v"), per_stem(b16, "zero")
    u = pd.concat({"xf": xf, "zf": zf, "xb": xb, "zb": zb}, axis=1).dropna()
    eff = (u["xf"] - u["zf"]).to_numpy(float)
    # the same question without sampling noise: next-token KL between fp32 and bf16 on the evaluation prefixes,
    # at alpha 0 and at alpha v, against the KL the steering itself causes (fp32)
    from steerlimits.paperb.logits import PrefixCache, logit_metrics
    from steerlimits.steer import as_dtype

    prefixes = [prompt_ids["stems"][i] for i in eval_idx]
    n_pre, d_model = len(prefixes), v.numel()
    offsets = {"alpha0": torch.zeros(n_pre, d_model), "v": (alpha * v).expand(n_pre, -1).contiguous()}
    c32, c16 = PrefixCache(mdl, tok, prefixes), PrefixCache(as_dtype(mdl, "bfloat16"), tok, prefixes)
    z32 = {k: c32.logits(o, ctx.inject_layer) for k, o in offsets.items()}
    z16 = {k: c16.logits(o, ctx.inject_layer) for k, o in offsets.items()}
    kl_dtype = {k: float(logit_metrics(z32[k], z16[k])["kl"].mean()) for k in offsets}
    kl_steer = float(logit_metrics(z32["v"], z32["alpha0"])["kl"].mean())
    out = []
    for cond, a, b in (("v", u["xb"], u["xf"]), ("alpha0", u["zb"], u["zf"])):
        # |mean(a - b)| < delta * mean(xf - zf): effect_tost with reference b and "zero" b - effect
        t = S.effect_tost(a.to_numpy(float), b.to_numpy(float), b.to_numpy(float) - eff, delta=s.delta)
        out.append(
            {
                "model": ctx.model.key,
                "trait": s.trait,
                "condition": cond,
                "alpha": alpha if cond == "v" else 0.0,
                "n": t.n,
                "n_gen": int(len(f32[f32["kind"] == ("v" if cond == "v" else "zero")])),
                "mean_float32": float(b.mean()),
                "mean_bfloat16": float(a.mean()),
                "diff": t.diff,
                "effect_float32": float(eff.mean()),
                "margin": s.delta * float(eff.mean()),
                "effect_tost_p": t.p,
                "equivalent": bool(t.p < 0.05),
                "identical_continuations": float(
                    (
                        same[same["kind"] == ("v" if cond == "v" else "zero")].pipe(
                            lambda d: d["continuation_f"] == d["continuation_b"]
                        )
                    ).mean()
                ),
                "wall_float32_s": round(walls["float32"], 2),
                "wall_bfloat16_s": round(walls["bfloat16"], 2),
                "throughput_ratio_bf16_fp32": (tokens["bfloat16"] * walls["float32"])
                / max(tokens["float32"] * walls["bfloat16"], 1e-12),
                "kl_fp32_bf16": kl_dtype[cond],
                "kl_steering_fp32": kl_steer,
                "kl_ratio": kl_dtype[cond] / kl_steer if kl_steer > 0 else float("nan"),
            }
        )
    meta = {
        **site_record(ctx),
        "model_sha256": marker_sha256(inputs["model"]),
        "trait": s.trait,
        "scorer": scorer.info.name,
        "alpha": alpha,
        "samples_per_stem": s.samples,
        "stems": len(eval_idx),
        "identical_continuations": identical,
        "test": "paired effect-relative TOST per stem: |mean bf16 - mean "
        "fp32| < delta x (fp32 effect of alpha v), both conditions",
        "timings_s": walls,
        "tokens": tokens,
        "kl": "mean next-token KL(p_fp32 || p_bf16) over the evaluation prefixes at alpha 0 and alpha v, and "
        "KL(p_v || p_0) in fp32 (the steering's own effect on the next token)",
    }
    write_table(outputs["table"], pd.DataFrame(out), meta)
    log.info("dtype check %s %s:\n%s", ctx.model.key, s.trait, pd.DataFrame(out).to_string(index=False))


# ------------------------------------------------------------------------------------------ tables, claims
def read_tables(paths: Files) -> dict[str, pd.DataFrame]:
    """Paper B's tables (``t1`` … ``t10``), with label columns read as strings."""
    frames = {}
    for key in TABLE_FILES:
        if key not in paths:
            continue
        df = pd.read_csv(paths[key], keep_default_na=False, na_values=[""])
        for col in ("seed", "family", "condition", "reference", "method"):
            if col in df:
                df[col] = df[col].astype(str).replace("nan", "")
        for col in ("chosen", "paper_setting", "b0_calibration"):
            if col in df:
                df[col] = df[col].astype(str).str.lower().eq("true")
        frames[key] = df
    return frames


def _b0_fluency(pool: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Perplexity ratio exp(mean NLL(alpha v)) / exp(mean NLL(0)) of E1 on the evaluation stems per pair."""
    out: dict[tuple[str, str], float] = {}
    if "nll" not in pool:
        return out
    for (m, t), g in pool[(pool["experiment"] == "e1") & pool["kind"].isin(["zero", "v"])].groupby(["model", "trait"]):
        nll = g.groupby("kind")["nll"].mean()
        out[(str(m), str(t))] = float(np.exp(nll.get("v", np.nan) - nll.get("zero", np.nan)))
    return out


def paperB_tables(s: PaperBTables, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Tables B-T1 … B-T10 (paired effect-relative TOST, efficacy, d with bootstrap CIs) from all pools,
    calibrations, logits, spectra and the dtype check."""
    cals = [json.loads(Path(p).read_text(encoding="utf-8")) for p in _paths(inputs["calibration"])]
    designs = {(c["model"], c["trait"]): c["design"] for c in cals if c.get("design")}
    ctx = T.Ctx(s.seed, s.n_boot, s.bound_d, s.delta, s.tost_alpha, designs)
    pool = pd.concat([pd.read_json(p, lines=True, dtype=False) for p in _paths(inputs["scores"])], ignore_index=True)
    pool["family"] = pool["family"].fillna("").astype(str)
    metas = {str(p): read_sidecar(p) for p in _paths(inputs["scores"])}
    vmeta = {(m["model"], m["trait"]): m for m in metas.values() if "model" in m}
    t1 = T.orthogonal_test(pool, ctx)
    fluency = _b0_fluency(pool)
    t1.insert(
        t1.columns.get_loc("effect_tost_p") + 1,
        "ppl_ratio",
        [
            fluency.get((m, t), np.nan) if c == "v" else np.nan
            for m, t, c in zip(t1["model"], t1["trait"], t1["condition"], strict=True)
        ],
    )
    spectra = [pd.read_csv(p) for p in _paths(inputs["nullspace"])] + [
        pd.read_csv(p) for p in _paths(inputs["spectra"]) if Path(p).stat().st_size > 1
    ]
    out = {
        "t1": t1,
        "t2": T.alpha_sweep(pool, ctx, list(s.e2_alphas)),
        "t3": T.environments(pool, ctx),
        "t4": T.logit_distances(
            pd.concat(
                [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in _paths(inputs["logits"])],
                ignore_index=True,
            )
        ),
        "t5": T.mean_diff_vs_pca(pool, ctx, vmeta),
        "t6": T.nullspace_spanning(pool, ctx),
        "t7": pd.concat(spectra, ignore_index=True),
        "t8": T.calibration_table(
            [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in _paths(inputs["calibration_tables"])],
            _matching_records(inputs),
        ),
        "t9": pd.concat([pd.read_csv(p) for p in _paths(inputs["geometry"])], ignore_index=True),
        "t10": pd.concat([pd.read_csv(p) for p in _paths(inputs["dtype_check"])], ignore_index=True),
    }
    meta = {
        "statistics": {
            "unit": "stem (environment prompt in E3): samples averaged per stem, paired across "
            "conditions (common random numbers)",
            "effect_tost": f"paired TOST of efficacy within [1 - {s.delta:g}, 1 + {s.delta:g}] (stats.effect_tost)",
            "d": "signed pooled-SD Cohen's d over generations vs the row's reference (the paper's)",
            "ci": "percentile bootstrap 95 % (efficacy: stems resampled in pairs)",
            "n_boot": ctx.n_boot,
            "tost_bound_d": ctx.bound,
            "tost_alpha": s.tost_alpha,
        },
        "efficacy": "mean(x - alpha0) / mean(v - alpha0) over stems, within the same experiment (D7)",
        "scorers": sorted({f"{m.get('scorer')} (substitute for {m.get('substitute_for')})" for m in metas.values()}),
        "pools": {f"{m.get('model')}/{m.get('trait')}": m for m in metas.values()},
        "calibration": {
            f"{c['model']}/{c['trait']}": {k: c.get(k) for k in ("alpha", "b0_calibration", "reason", "samples")}
            for c in cals
        },
    }
    extra = {"t3": {"authors_summary": T.e3_summary(out["t3"])}}
    log.info("paper B tables: %s", {TABLE_FILES[k][0]: len(df) for k, df in out.items()})
    for key, df in out.items():
        write_table(outputs[key], df, {**meta, "table": TABLE_FILES[key][1], **extra.get(key, {})})


def _matching_records(inputs: Files) -> list[dict[str, Any]]:
    """The calibration records in the order of the calibration tables (matched by model and trait)."""
    recs = {
        (c["model"], c["trait"]): c
        for c in (json.loads(Path(p).read_text(encoding="utf-8")) for p in _paths(inputs["calibration"]))
    }
    out = []
    for p in _paths(inputs["calibration_tables"]):
        df = pd.read_csv(p, nrows=1)
        out.append(recs[(str(df["model"].iloc[0]), str(df["trait"].iloc[0]))])
    return out


def paperB_claims(s: PaperBClaims, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Claims rows B0–B13 per model × trait with fixed thresholds (effect-relative and paper equivalence)."""
    t = read_tables(inputs)
    pools = read_sidecar(inputs["t1"]).get("pools", {})  # the families' dimensions as each pool's plan found them
    dims = {(str(p["model"]), str(p["trait"])): p.get("family_dims", {}) for p in pools.values()}
    rows = claims_rows(
        t,
        steer_layers=dict(s.half_layers),
        family_dims=dims,
        delta=s.delta,
        tost_alpha=s.tost_alpha,
        target_d=s.target_d,
        max_ppl_ratio=s.max_ppl_ratio,
        cov_threshold=s.null_thresholds.covariance,
        jac_threshold=s.null_thresholds.jacobian,
    )
    df = claims_frame(rows)
    counts = {str(k): int(v) for k, v in df["holds"].value_counts().items()}
    na_reasons = (
        df.loc[df["holds"] == "na", "note"]
        .str.extract(r"^na: ([^;]*)")[0]
        .fillna("other")
        .map(
            lambda r: (
                "B0 failed"
                if r.startswith("B0 failed")
                else "family subspace ∩ v⊥ of dimension < 2"
                if r.startswith("dim(")
                else r.strip()
            )
        )
    )
    write_table(
        outputs["table"],
        df,
        {
            "thresholds": "fixed before any value was seen (docs/concepts/statistics-and-claims.md, docs/paperB.md)",
            "n_rows": len(df),
            "holds_counts": counts,
            "na_fraction": round(counts.get("na", 0) / max(len(df), 1), 3),
            "na_reasons": {str(k): int(v) for k, v in na_reasons.value_counts().items()},
        },
    )
    log.info("paper B claims:\n%s", df[["claim_id", "model", "metric", "value", "holds"]].to_string(index=False))


def paperB_figures(s: PaperBFigures, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Figures B-F1 … B-F9 (PNG + PDF)."""
    import matplotlib.pyplot as plt  # after steerlimits.plotting selected the Agg backend
    from safetensors.numpy import load_file

    from steerlimits.paperb.figures import all_figures

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    t = read_tables(inputs)
    spectra: dict[str, dict[str, dict[int, Any]]] = {}
    labels: dict[str, dict[int, str]] = {}
    for path in _paths(inputs["bases"]):
        meta = read_sidecar(path)
        model = meta["model"]
        spectra[model] = {}
        for key, arr in load_file(str(path)).items():
            if key.startswith("sv/"):
                _, method, layer = key.split("/")
                spectra[model].setdefault(method, {})[int(layer[1:])] = arr
        labels[model] = {int(k): v for k, v in meta["e7_layers"].items()}
    steered: dict[str, dict[str, Any]] = {}
    for path in _paths(inputs["steered"]):
        model = read_sidecar(path)["model"]
        for key, arr in load_file(str(path)).items():
            if key.startswith("sv/jacobian_fisher_steered/"):
                steered.setdefault(model, {})[key.split("/")[-1]] = arr
    figs = all_figures(
        t,
        spectra,
        labels,
        {"covariance": list(s.cov_thresholds), "jacobian": list(s.jac_thresholds)},
        steered=steered,
        target_d=s.target_d,
        max_ppl_ratio=s.max_ppl_ratio,
        delta=s.delta,
    )
    for fid, fig in figs.items():
        write_figure(fig, [outputs[f"{fid[2:]}_{ext}"] for ext in ("png", "pdf")], {"figure": fid})
        plt.close(fig)
