"""Pipeline steps of paper B, called by the thin scripts ``workflow/scripts/paperB_*.py``.

Each step reads the validated config (``config["paperB"]`` filled with defaults by ``paperB.schema.yaml``) and
explicit paths, and writes atomically with a ``.meta.json`` sidecar (config hash, model sha256, code version,
seed, plus the step's own record: sites, sizes, reductions, timings).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from steerlimits import data as D
from steerlimits.config import derive_seed, layer_for, model_specs, scorer_for
from steerlimits.data import Prompt
from steerlimits.models import cached_metadata, load_model, model_dir
from steerlimits.paperb import nullspace_step as N
from steerlimits.paperb.generation import run_pool, score_rows
from steerlimits.paperb.logits import run_e4
from steerlimits.paperb.plan import plan_pool
from steerlimits.prompting import encode
from steerlimits.provenance import provenance, write_with_sidecar
from steerlimits.steer import shipped_decoding

__all__ = ["generate_pool", "load_bases", "logits", "nullspace", "score_pool", "sites"]

log = logging.getLogger(__name__)

BASIS_KEYS = ("null_cov", "active_cov", "null_jac", "active")


def _meta(config: Mapping[str, Any], model: str | None = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    sha = cached_metadata(model)["sha256"] if model and (model_dir(model) / "steerlimits_model.json").exists() else None
    return provenance(config, model_sha256=sha, seed=seed, model=model, run=config["run"], **extra)


def sites(config: Mapping[str, Any], model: str) -> dict[str, Any]:
    """Extraction layer l (vector row), injection layer (l, or l + 1 with ``offset``), and their descriptions."""
    layer = layer_for(config, model)
    inject = layer + 1 if config["paperB"]["offset"] else layer
    return {"layer": layer, "inject_layer": inject, "n_layers": model_specs(config)[model].n_layers,
            "measure_at": f"hidden_states[{layer}] (input of block {layer}), last prompt token",
            "inject_at": f"hidden_states[{inject}] (input of block {inject})",
            "positions": config["paperB"]["positions"]}


def _fmt(config: Mapping[str, Any], model: str) -> str:
    fmt = config["paperB"]["format"]
    return "chat" if fmt == "chat" and model_specs(config)[model].chat_template else "raw"


def _load(config: Mapping[str, Any], model: str) -> tuple[Any, Any]:
    return load_model(model, model_specs(config)[model])


def load_bases(path: str | Path) -> dict[str, torch.Tensor | None]:
    from safetensors.torch import load_file

    t = load_file(str(path))
    return {k: (t[k] if t[k].shape[1] > 0 else None) for k in BASIS_KEYS}


def _vector(path: str | Path, method: str, layer: int) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))[method][layer].float()


# ------------------------------------------------------------------------------------------------- E7
def nullspace(config: Mapping[str, Any], model: str, out_bases: str | Path, out_table: str | Path) -> None:
    """E7 spectra at L/4, L/2, 3L/4 (+ the injection layer) and the bases at the injection layer."""
    from safetensors.torch import save_file

    pb, e7 = config["paperB"], config["paperB"]["e7"]
    st = sites(config, model)
    inject = st["inject_layer"]
    layers = N.e7_layers(st["n_layers"], inject)
    cov_t, jac_t = N.thresholds_of(e7)
    mdl, tok = _load(config, model)
    timings: dict[str, float] = {}
    extra: list[str] = []
    if e7["cov_corpora"]:
        from steerlimits import corpora
        extra = corpora.formal_sentences(max_n=int(e7["cov_corpora_max"]), seed=config["seed"])
    texts = N.project_texts(config.get("data_dir"), extra)
    cov = N.timed(lambda: N.collect_covariances(mdl, tok, texts, list(layers), min_tokens=int(e7["cov_min_tokens"]),
                                                steer_layer=inject), timings, "covariance_s")
    rows: list[dict[str, Any]] = []
    tensors: dict[str, torch.Tensor] = {}
    decomp = {}
    for layer, label in layers.items():
        sv, vecs = cov.excluded[layer].decomposition()
        decomp[layer] = (sv, vecs)
        rows += N.spectrum_rows(sv, layer=layer, label=label, method="covariance", thresholds=cov_t,
                                n_samples=cov.excluded[layer].n, excluded=ns_rule())
        tensors[f"sv/covariance/L{layer}"] = torch.from_numpy(sv.copy())
    sv0, _ = cov.with_pos0.decomposition()
    rows += N.spectrum_rows(sv0, layer=inject, label=layers[inject], method="covariance_with_pos0", thresholds=cov_t,
                            n_samples=cov.with_pos0.n, excluded="none (position 0 included, reported once)")
    tensors[f"sv/covariance_with_pos0/L{inject}"] = torch.from_numpy(sv0.copy())
    fmt = _fmt(config, model)
    jac_texts = N.project_texts(config.get("data_dir"))  # stems, environments, trait prompts, ...
    jac_ids = [encode(tok, Prompt(t), fmt) for t in jac_texts]  # type: ignore[arg-type]
    n_jac = {layer: int(e7["jac_prompts"] if layer == inject else e7["jac_prompts_other"]) for layer in layers}
    if max(n_jac.values()) > len(jac_ids):
        raise ValueError(f"paperB.e7: {max(n_jac.values())} Jacobian prompts requested, {len(jac_ids)} available")
    jac = {}
    for layer, label in layers.items():
        grams = N.timed(lambda layer=layer: N.jacobian_grams(mdl, jac_ids[:n_jac[layer]], layer,
                                                             chunk_size=e7["jac_chunk"]), timings, f"jacobian_L{layer}_s")
        sv, vecs = N.ns.jacobian_decomposition(grams)
        jac[layer] = (sv, vecs)
        note = "" if n_jac[layer] >= int(e7["jac_prompts"]) else f"reduced: {n_jac[layer]} prompts off the steering layer"
        rows += N.spectrum_rows(sv, layer=layer, label=label, method="jacobian", thresholds=jac_t,
                                n_samples=n_jac[layer], excluded="none (last position only)", pr_of_squares=True,
                                note=note)
        rows += N.per_prompt_rows(grams, layer=layer, label=label, thresholds=jac_t)
        tensors[f"sv/jacobian/L{layer}"] = torch.from_numpy(sv.copy())
    thr = pb["null_thresholds"]
    tensors["null_cov"], tensors["active_cov"] = N.bases_from(*decomp[inject], float(thr["covariance"]))
    tensors["null_jac"], tensors["active"] = N.bases_from(*jac[inject], float(thr["jacobian"]))
    table = pd.DataFrame(rows)
    table.insert(0, "model", model)
    reductions = [f"Jacobian at layer {k} ({layers[k]}) over {n} prompts instead of {e7['jac_prompts']} (budget)"
                  for k, n in n_jac.items() if n < int(e7["jac_prompts"])]
    if cov.excluded[inject].n < int(e7["cov_min_tokens"]):
        reductions.append(f"covariance over {cov.excluded[inject].n} tokens, fewer than the {e7['cov_min_tokens']} "
                          "asked (all available prompts used)")
    meta = _meta(config, model, **st, e7_layers={str(k): v for k, v in layers.items()}, reductions=reductions,
                 covariance={"n_tokens": cov.excluded[inject].n, "n_prompts": cov.n_prompts,
                             "excluded_positions": ns_rule(), "n_excluded": cov.n_excluded,
                             "asked_min_tokens": int(e7["cov_min_tokens"]), "external_sentences": len(extra),
                             "prompts": "project texts as raw text (tokenizer's special tokens added)"},
                 jacobian={"prompts_per_layer": {str(k): v for k, v in n_jac.items()}, "dtype": "float32 autograd",
                           "attn_implementation": "eager during the Jacobian",
                           "head": "final norm + unembedding applied analytically (nullspace.logprob_jacobian_gram)"},
                 bases={k: list(tensors[k].shape) for k in BASIS_KEYS}, null_thresholds=thr, timings_s=timings,
                 participation_ratio="covariance: of its eigenvalues; jacobian: of s² (eigenvalues of JᵀJ)")
    save = {k: t.contiguous() for k, t in tensors.items()}
    write_with_sidecar(out_bases, lambda tmp: save_file(save, str(tmp), metadata={"meta": json.dumps(meta)}), meta)
    write_with_sidecar(out_table, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"), meta)
    log.info("E7 %s: %s", model, json.dumps(timings))


def ns_rule() -> str:
    return N.ns.EXCLUDE_RULE


# ----------------------------------------------------------------------------------------- generations
def decoding_settings(pb: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """Sampling settings of paper B's pools: ``explicit`` (top-p from the config, top-k and repetition penalty
    off) or ``faithful`` (the checkpoint's shipped defaults, as the authors' code got them; temperature stays
    the config's, which the authors set)."""
    mode = pb.get("decoding", "explicit")
    if mode == "faithful":
        return {"mode": mode, **shipped_decoding(model)}
    if mode != "explicit":
        raise ValueError(f"paperB.decoding must be 'explicit' or 'faithful', got {mode!r}")
    return {"mode": mode, "top_p": pb["top_p"], "top_k": None, "repetition_penalty": None}


def generate_pool(config: Mapping[str, Any], model: str, trait: str, vectors: str | Path, bases_path: str | Path,
                  out: str | Path, out_perturbations: str | Path) -> None:
    """All sampled conditions (E1, E2, E3, E5, E6) of one model × trait in few batched generate() calls."""
    from safetensors.torch import save_file

    pb = config["paperB"]
    st = sites(config, model)
    v = _vector(vectors, pb["method"], st["layer"])
    v_pca = _vector(vectors, "pca", st["layer"])
    bases = load_bases(bases_path)
    stems = D.neutral_stems(config.get("data_dir"))
    envs = D.environments(config.get("data_dir"))
    seed = derive_seed(config["seed"], "paperB", model, trait)
    pool = plan_pool(pb, v=v, v_pca=v_pca, bases=bases, n_stems=len(stems),
                     environments={e: len(p) for e, p in envs.items()}, seed=seed)
    mdl, tok = _load(config, model)
    fmt = _fmt(config, model)
    prompt_ids = {"stems": [encode(tok, Prompt(t), fmt) for t in stems]}  # type: ignore[arg-type]
    prompt_ids.update({f"env:{e}": [encode(tok, Prompt(t), fmt) for t in p] for e, p in envs.items()})  # type: ignore[arg-type]
    t0 = time.perf_counter()
    decoding = decoding_settings(pb, mdl)
    rows = run_pool(mdl, tok, pool.conditions, prompt_ids, layer=st["inject_layer"], positions=pb["positions"],
                    temperature=pb["temperature"], top_p=decoding["top_p"], top_k=decoding["top_k"],
                    repetition_penalty=decoding["repetition_penalty"], batch_size=pb["batch_size"], seed=seed)
    wall = time.perf_counter() - t0
    for r in rows:
        r.update(model=model, trait=trait)
    cos = float(torch.nn.functional.cosine_similarity(v, v_pca, dim=0))
    vmeta_path = Path(str(vectors) + ".meta.json")
    flips = json.loads(vmeta_path.read_text()).get("pca_sign_flips", []) if vmeta_path.exists() else []
    meta = _meta(config, model, seed=seed, trait=trait, **st, method=pb["method"], prompt_format=fmt,
                 vector_norm=float(v.norm()), pca_norm=float(v_pca.norm()), cos_mean_diff_pca=cos,
                 pc1_flipped=st["layer"] in flips,
                 vector_source="traits.jsonl pairs of this trait (their contexts are the in-distribution environment)",
                 decoding={**decoding, "temperature": pb["temperature"], "batch_size": pb["batch_size"]},
                 n_conditions=len(pool.conditions), n_generations=len(rows), generation_wall_s=round(wall, 1),
                 tokens_generated=int(sum(r["n_new_tokens"] for r in rows)), notes=pool.notes,
                 reuse="E2 at alpha 0 and alpha = paperB.alpha reuses E1's zero, v and random_orth seeds; "
                       "E6 compares against E1's v and zero; u draws are shared by E1, E2, E3")
    save = {k: t.float().contiguous() for k, t in pool.perturbations.items()} or {"none": torch.zeros(1)}
    write_with_sidecar(out_perturbations, lambda tmp: save_file(save, str(tmp)), meta)

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")

    write_with_sidecar(out, write, meta)
    log.info("%s %s: %d generations in %.1f s", model, trait, len(rows), wall)


def score_pool(config: Mapping[str, Any], trait: str, generations: str | Path, heads_dir: str | Path,
               out: str | Path) -> None:
    """Score continuations only with the validated scorer of ``trait`` (offline ones are named substitutes)."""
    from steerlimits.scoring import load_scorer

    scorer = load_scorer(scorer_for(config, trait), Path(heads_dir))
    df = score_rows(pd.read_json(generations, lines=True, dtype=False), scorer)
    meta = json.loads(Path(str(generations) + ".meta.json").read_text())
    meta.update(scorer=scorer.info.name, substitute_for=scorer.info.substitute_for, scored="continuation only")
    write_with_sidecar(out, lambda tmp: df.to_json(tmp, orient="records", lines=True, force_ascii=False), meta)


# ------------------------------------------------------------------------------------------------- E4
def logits(config: Mapping[str, Any], model: str, vectors: Mapping[str, str | Path], bases_path: str | Path,
           out: str | Path) -> None:
    """E4 next-token logit distances and KL for one model, every trait (``vectors``: trait -> path); no sampling."""
    pb, e4 = config["paperB"], config["paperB"]["e4"]
    st = sites(config, model)
    bases = load_bases(bases_path)
    mdl, tok = _load(config, model)
    fmt = _fmt(config, model)
    stems = D.neutral_stems(config.get("data_dir"))[: e4["n_prefixes"]]
    ids = [encode(tok, Prompt(t), fmt) for t in stems]  # type: ignore[arg-type]
    frames = []
    vecs = {trait: _vector(path, pb["method"], st["layer"]) for trait, path in vectors.items()}
    norms = {trait: float(v.norm()) for trait, v in vecs.items()}
    for trait, v in vecs.items():
        seed = derive_seed(config["seed"], "paperB", model, trait)
        others = {t: w for t, w in vecs.items() if t != trait}
        df = pd.DataFrame(run_e4(mdl, tok, ids, v, bases, pb["families"], layer=st["inject_layer"],
                                 alpha=float(pb["alpha"]), n_u=e4["n_u"], n_r=e4["n_r"], seed=seed, others=others))
        df.insert(0, "trait", trait)
        df.insert(0, "model", model)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    meta = _meta(config, model, seed=config["seed"], **st, n_prefixes=len(ids), vector_norms=norms,
                 random_control="Gaussian r rescaled to ||r|| = ||u|| = ||v|| (not orthogonalised)",
                 other_trait_control="each other trait's vector rescaled to ||v||, steered in place of v",
                 kl="KL(p_v || p_cond), nats", seeds="derive_seed(seed, 'paperB', model, trait) per trait")
    write_with_sidecar(out, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"), meta)
