"""Pipeline steps called by the thin Snakemake scripts in ``workflow/scripts/``.

Each step takes the (validated) config and explicit paths, does one stage, and writes its outputs atomically with
a provenance sidecar (``<file>.meta.json``: config hash, model sha256, code version, seed).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from steerlimits import data as D
from steerlimits.config import derive_seed, layer_for, model_specs, prompt_format, scorer_for
from steerlimits.models import cached_metadata, load_model, model_dir, prepare
from steerlimits.provenance import atomic_path, atomic_write_json, provenance, write_with_sidecar

__all__ = [
    "dose_response",
    "extract_vectors",
    "prepare_model",
    "score_generations",
    "start",
    "steer_generate",
    "train_and_validate_scorers",
]

log = logging.getLogger("steerlimits")


def start(log_path: str | Path | None, threads: int = 1) -> None:
    """Send logging and progress bars (stderr) to the rule's log file; fix torch threads."""
    if log_path:
        stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives for the job
        sys.stderr = stream
        logging.basicConfig(stream=stream, level=logging.INFO, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, int(threads)))


def _meta(config: Mapping[str, Any], model: str | None = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    sha = cached_metadata(model)["sha256"] if model and (model_dir(model) / "steerlimits_model.json").exists() else None
    return provenance(config, model_sha256=sha, seed=seed, model=model, run=config["run"], **extra)


def _load(config: Mapping[str, Any], model: str) -> tuple[Any, Any]:
    return load_model(model, model_specs(config)[model])


# ------------------------------------------------------------------------------------------------- models
def prepare_model(config: Mapping[str, Any], model: str, meta_out: str | Path) -> None:
    spec = model_specs(config)[model]
    meta = prepare(spec)
    meta["provenance"] = provenance(config, model_sha256=meta.get("sha256"))
    atomic_write_json(meta_out, meta)
    log.info("prepared %s: %s", model, json.dumps(meta))


# ------------------------------------------------------------------------------------------------- vectors
def extract_vectors(config: Mapping[str, Any], model: str, behaviour: str, out: str | Path) -> None:
    from safetensors.torch import save_file

    from steerlimits.extract import collect_activations, contrastive_vectors
    from steerlimits.hooks import resolve_blocks
    from steerlimits.prompting import encode_all

    vcfg = config["vectors"]
    spec = model_specs(config)[model]
    fmt = prompt_format(config, behaviour, spec)
    fmt = "frame" if fmt == "raw" and vcfg["format"].get(behaviour) == "chat" else fmt
    pairs = D.contrast_pairs(behaviour, config.get("data_dir"))[: vcfg["max_pairs"]]
    mdl, tok = _load(config, model)
    pos = encode_all(tok, [p.positive for p in pairs], fmt)  # type: ignore[arg-type]
    neg = encode_all(tok, [p.negative for p in pairs], fmt)  # type: ignore[arg-type]
    pl, pm = collect_activations(mdl, tok, pos, vcfg["batch_size"])
    nl, nm = collect_activations(mdl, tok, neg, vcfg["batch_size"])
    vs = contrastive_vectors(pl, nl, pm, nm)
    loc, _ = resolve_blocks(mdl, spec.layers_path)
    meta = _meta(config, model, behaviour=behaviour, n_pairs=vs.n_pairs, prompt_format=fmt,
                 layer_convention="row l = residual at the INPUT of block l = hidden_states[l] (site resid_pre)",
                 blocks_path=loc.path, blocks_resolved_by=loc.how, n_layers=mdl.config.num_hidden_layers,
                 position_rule={"mean_diff_last": "last prompt token",
                                "mean_diff_mean": "mean over prompt tokens, first token excluded (attention sink)",
                                "pca": "PC1 of paired last-token differences, oriented to +mean_diff_last, norm-matched"},
                 norms=vs.norms(), **vs.meta)
    tensors = {k: v.contiguous().float() for k, v in vs.vectors.items()}
    write_with_sidecar(out, lambda tmp: save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)}), meta)


def load_vector(path: str | Path, method: str, layer: int) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))[method][layer]


# ------------------------------------------------------------------------------------------------- scorers
def train_and_validate_scorers(config: Mapping[str, Any], heads_dir: str | Path, validation_csv: str | Path) -> None:
    from steerlimits import scorer_validation, scoring

    scfg = config["scorers"]
    seed = derive_seed(config["seed"], "scorers")
    scoring.train_heads(Path(heads_dir), n_train=scfg["n_train"], seed=seed)
    table = scorer_validation.validate(Path(heads_dir), n_test=scfg["n_test"], seed=seed)
    table = table[table["scorer"].isin(scfg["validate"])]
    meta = _meta(config, seed=seed, n_train=scfg["n_train"], n_test=scfg["n_test"],
                 note="held-out test sets are disjoint from training data; offline scorers are substitutes")
    write_with_sidecar(validation_csv, lambda tmp: table.to_csv(tmp, index=False), meta)
    log.info("scorer validation:\n%s", table.to_string(index=False))


# ------------------------------------------------------------------------------------------------- steering
def steer_generate(config: Mapping[str, Any], model: str, behaviour: str, vectors: str | Path,
                   out: str | Path) -> None:
    from steerlimits.prompting import encode_all
    from steerlimits.steer import GenerationConfig, generate

    dcfg = config["steering"]["dose_response"]
    spec = model_specs(config)[model]
    layer = layer_for(config, model)
    fmt = prompt_format(config, behaviour, spec)
    fmt = "frame" if fmt == "raw" and config["vectors"]["format"].get(behaviour) == "chat" else fmt
    prompts = D.test_prompts(behaviour, config.get("data_dir"))
    n_samples = -(-dcfg["n_generations"] // len(prompts))
    mdl, tok = _load(config, model)
    ids = encode_all(tok, prompts, fmt)  # type: ignore[arg-type]
    v = load_vector(vectors, dcfg["method"], layer)
    seed = derive_seed(config["seed"], "dose_response", model, behaviour)
    rows = []
    for alpha in dcfg["alphas"]:
        gcfg = GenerationConfig(max_new_tokens=dcfg["max_new_tokens"], temperature=dcfg["temperature"],
                                top_p=dcfg["top_p"], batch_size=dcfg["batch_size"],
                                seed=derive_seed(seed, alpha))
        gens = generate(mdl, tok, ids, gcfg, vector=v, alpha=float(alpha), layer=layer,
                        positions=dcfg["positions"], n_samples=n_samples, limit=dcfg["n_generations"])
        rows += [{**g.to_dict(), "model": model, "behaviour": behaviour, "layer": layer,
                  "inject_at": f"hidden_states[{layer}] (input of block {layer})", "positions": dcfg["positions"],
                  "method": dcfg["method"], "vector_norm": float(v.norm())} for g in gens]
        log.info("%s %s alpha=%g: %d generations, e.g. %r", model, behaviour, alpha, len(gens),
                 gens[0].continuation[:80] if gens else "")
    meta = _meta(config, model, seed=seed, behaviour=behaviour, layer=layer, prompt_format=fmt,
                 generation={k: dcfg[k] for k in ("max_new_tokens", "temperature", "top_p", "batch_size", "positions")})

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")

    write_with_sidecar(out, write, meta)


def score_generations(config: Mapping[str, Any], behaviour: str, generations: str | Path, heads_dir: str | Path,
                      out: str | Path) -> None:
    from steerlimits.scoring import load_scorer

    name = scorer_for(config, behaviour)
    scorer = load_scorer(name, Path(heads_dir))
    df = pd.read_json(generations, lines=True)
    df["scorer"] = name
    df["substitute_for"] = scorer.info.substitute_for
    df["score"] = scorer.score(df["continuation"].fillna("").tolist())  # continuation only, never the prompt
    meta = json.loads(Path(str(generations) + ".meta.json").read_text())
    meta.update(scorer=name, substitute_for=scorer.info.substitute_for)
    write_with_sidecar(out, lambda tmp: df.to_json(tmp, orient="records", lines=True, force_ascii=False), meta)


def dose_response(config: Mapping[str, Any], scored: Sequence[str | Path], out_csv: str | Path,
                  figure_paths: Sequence[str | Path]) -> pd.DataFrame:
    from steerlimits.plotting import dose_response_figure
    from steerlimits.stats import mean_ci, spearman

    dcfg = config["steering"]["dose_response"]
    frames = [pd.read_json(p, lines=True) for p in scored]
    df = pd.concat(frames, ignore_index=True)
    rows = []
    for (model, behaviour, alpha), g in df.groupby(["model", "behaviour", "alpha"], sort=True):
        seed = derive_seed(config["seed"], "bootstrap", model, behaviour, alpha)
        mean, lo, hi = mean_ci(g["score"].to_numpy(), n_boot=dcfg["n_boot"], seed=seed)
        rows.append({"model": model, "behaviour": behaviour, "alpha": alpha, "n": len(g), "mean_score": mean,
                     "ci_low": lo, "ci_high": hi, "scorer": g["scorer"].iloc[0],
                     "substitute_for": g["substitute_for"].iloc[0]})
    table = pd.DataFrame(rows)
    trend = []
    for (model, behaviour), g in table.groupby(["model", "behaviour"]):
        rho, p = spearman(g["alpha"], g["mean_score"])
        trend.append({"model": model, "behaviour": behaviour, "spearman_rho": rho, "p": p,
                      "monotonic": bool(g.sort_values("alpha")["mean_score"].diff().dropna().gt(0).all())})
    meta = _meta(config, seed=config["seed"], bootstrap={"n_boot": dcfg["n_boot"], "level": 0.95},
                 models={m: cached_metadata(m)["sha256"] for m in table["model"].unique()
                         if (model_dir(m) / "steerlimits_model.json").exists()},
                 spearman=trend)
    write_with_sidecar(out_csv, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"), meta)
    fig = dose_response_figure(table, trend)
    for path in figure_paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."))
        atomic_write_json(Path(str(path) + ".meta.json"), meta)
    log.info("Spearman rho(alpha, mean score): %s", json.dumps(trend))
    return table
