"""Foundation steps: model preparation, vector extraction, scorer validation, dose-response, the claims table.

Each function is named after its rule and has the signature ``step(settings, inputs, outputs, log)``
(:mod:`steerlimits.steps`); ``inputs``/``outputs`` map the rule's names to paths.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import torch

from steerlimits import data as D
from steerlimits.models import load_prepared, marker_sha256, prepare
from steerlimits.outputs import (
    read_sidecar,
    write_figure,
    write_json,
    write_jsonl,
    write_safetensors,
    write_table,
    write_text,
)
from steerlimits.seeds import derive_seed
from steerlimits.settings.core import (
    Claims,
    DoseResponse,
    Examples,
    ExtractVectors,
    Manifest,
    PrepareModel,
    ScoreGenerations,
    SteerGenerate,
    ValidateScorers,
)
from steerlimits.steps import Files

__all__ = [
    "claims",
    "dose_response",
    "extract_vectors",
    "load_vector",
    "manifest",
    "prepare_model",
    "score_generations",
    "steer_generate",
    "validate_scorers",
]

log = logging.getLogger("steerlimits")


def prepare_model(s: PrepareModel, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Verify the model source (sha256) and cache it as float32 safetensors beside the ``marker`` output."""
    meta = prepare(s.model, Path(outputs["marker"]).parent.parent)
    write_json(outputs["meta"], meta, {"model_sha256": meta.get("sha256")})
    log.info("prepared %s: %s", s.model.key, json.dumps(meta))


def load_vector(path: str | Path, method: str, layer: int) -> torch.Tensor:
    """Row ``layer`` (the residual at the input of block ``layer``) of the ``method`` vectors in ``path``."""
    from safetensors.torch import load_file

    return load_file(str(path))[method][layer].float()


def extract_vectors(s: ExtractVectors, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Contrastive vectors (mean difference at the last token and over tokens, PC1) at every block input."""
    from steerlimits.extract import collect_activations, contrastive_vectors
    from steerlimits.hooks import resolve_blocks
    from steerlimits.prompting import encode_all

    pairs = D.contrast_pairs(s.behaviour, s.data_dir)[: s.max_pairs]
    mdl, tok = load_prepared(s.model, inputs["model"], s.device)
    pos = encode_all(tok, [p.positive for p in pairs], s.prompt_format)
    neg = encode_all(tok, [p.negative for p in pairs], s.prompt_format)
    pl, pm = collect_activations(mdl, tok, pos, s.batch_size)
    nl, nm = collect_activations(mdl, tok, neg, s.batch_size)
    vs = contrastive_vectors(pl, nl, pm, nm)
    loc, _ = resolve_blocks(mdl, s.model.layers_path)
    meta = {
        "model_sha256": marker_sha256(inputs["model"]),
        "behaviour": s.behaviour,
        "n_pairs": vs.n_pairs,
        "layer_convention": "row l = residual at the INPUT of block l = hidden_states[l] (site resid_pre)",
        "blocks_path": loc.path,
        "blocks_resolved_by": loc.how,
        "n_layers": mdl.config.num_hidden_layers,
        "position_rule": {
            "mean_diff_last": "last prompt token",
            "mean_diff_mean": "mean over prompt tokens, first token excluded (attention sink)",
            "pca": "PC1 of paired last-token differences, oriented to +mean_diff_last, norm-matched",
        },
        "norms": vs.norms(),
        **vs.meta,
    }
    write_safetensors(outputs["vectors"], {k: v.float() for k, v in vs.vectors.items()}, meta)


def validate_scorers(s: ValidateScorers, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Train the embedding heads (sentiment, formality) and validate every scorer on held-out data."""
    from steerlimits import scorer_validation, scoring

    seed = derive_seed(s.seed, "scorers")
    scoring.train_heads(Path(outputs["heads"]), n_train=s.n_train, seed=seed)
    table = scorer_validation.validate(Path(outputs["heads"]), n_test=s.n_test, seed=seed)
    table = table[table["scorer"].isin(s.validate)]
    write_table(
        outputs["table"],
        table,
        {"seed": seed, "note": "held-out test sets are disjoint from training data; offline scorers are substitutes"},
    )
    log.info("scorer validation:\n%s", table.to_string(index=False))


def steer_generate(s: SteerGenerate, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Seeded steered generations of the behaviour's test prompts at every dose-response coefficient."""
    from steerlimits.prompting import encode_all
    from steerlimits.steer import GenerationConfig, generate

    prompts = D.test_prompts(s.behaviour, s.data_dir)
    n_samples = -(-s.n_generations // len(prompts))
    mdl, tok = load_prepared(s.model, inputs["model"], s.device)
    ids = encode_all(tok, prompts, s.prompt_format)
    v = load_vector(inputs["vectors"], s.method, s.layer)
    seed = derive_seed(s.seed, "dose_response", s.model.key, s.behaviour)
    rows = []
    for alpha in s.alphas:
        gcfg = GenerationConfig(
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            batch_size=s.batch_size,
            seed=derive_seed(seed, alpha),
        )
        gens = generate(
            mdl,
            tok,
            ids,
            gcfg,
            vector=v,
            alpha=alpha,
            layer=s.layer,
            positions=s.positions,
            n_samples=n_samples,
            limit=s.n_generations,
        )
        rows += [
            {
                **g.to_dict(),
                "model": s.model.key,
                "behaviour": s.behaviour,
                "layer": s.layer,
                "inject_at": f"hidden_states[{s.layer}] (input of block {s.layer})",
                "positions": s.positions,
                "method": s.method,
                "vector_norm": float(v.norm()),
            }
            for g in gens
        ]
        log.info(
            "%s %s alpha=%g: %d generations, e.g. %r",
            s.model.key,
            s.behaviour,
            alpha,
            len(gens),
            gens[0].continuation[:80] if gens else "",
        )
    write_jsonl(
        outputs["generations"],
        rows,
        {"model": s.model.key, "model_sha256": marker_sha256(inputs["model"]), "seed": seed},
    )


def score_generations(s: ScoreGenerations, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Score continuations only, with the validated scorer configured for the behaviour."""
    from steerlimits.scoring import load_scorer, score_table

    scorer = load_scorer(s.scorer, Path(inputs["heads"]))
    df = score_table(pd.read_json(inputs["generations"], lines=True, dtype=False), scorer)
    gen = read_sidecar(inputs["generations"])
    write_jsonl(
        outputs["scores"],
        df.to_dict(orient="records"),
        {
            "model": gen.get("model"),
            "model_sha256": gen.get("model_sha256"),
            "scorer": s.scorer,
            "substitute_for": scorer.info.substitute_for,
            "scored": "continuation only",
            "generations": {k: gen.get(k) for k in ("rule", "settings_hash", "code_version")},
        },
    )


def dose_response(s: DoseResponse, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """Mean trait score vs α per model and behaviour, bootstrap CIs, Spearman trend, and the figure."""
    from steerlimits.plotting import dose_response_figure
    from steerlimits.stats import mean_ci, spearman

    df = pd.concat([pd.read_json(p, lines=True) for p in inputs["scores"]], ignore_index=True)
    rows = []
    for (model, behaviour, alpha), g in df.groupby(["model", "behaviour", "alpha"], sort=True):
        seed = derive_seed(s.seed, "bootstrap", model, behaviour, alpha)
        mean, lo, hi = mean_ci(g["score"].to_numpy(), n_boot=s.n_boot, seed=seed)
        rows.append(
            {
                "model": model,
                "behaviour": behaviour,
                "alpha": alpha,
                "n": len(g),
                "mean_score": mean,
                "ci_low": lo,
                "ci_high": hi,
                "scorer": g["scorer"].iloc[0],
                "substitute_for": g["substitute_for"].iloc[0],
            }
        )
    table = pd.DataFrame(rows)
    trend = []
    for (model, behaviour), g in table.groupby(["model", "behaviour"]):
        rho, p = spearman(g["alpha"], g["mean_score"])
        trend.append(
            {
                "model": model,
                "behaviour": behaviour,
                "spearman_rho": rho,
                "p": p,
                "monotonic": bool(g.sort_values("alpha")["mean_score"].diff().dropna().gt(0).all()),
            }
        )
    meta = {
        "bootstrap": {"n_boot": s.n_boot, "level": 0.95},
        "spearman": trend,
        "models": {m.get("model"): m.get("model_sha256") for m in map(read_sidecar, inputs["scores"])},
    }
    write_table(outputs["table"], table, meta)
    write_figure(dose_response_figure(table, trend), [outputs["png"], outputs["pdf"]], meta)
    log.info("Spearman rho(alpha, mean score): %s", json.dumps(trend))


def claims(s: Claims, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """All papers' claims rows (D12) in one table, each with its evidence, rebuild target, measured runtime and the
    paper's own value; rendered as a grid per paper (``claims.md``, and the HTML fragment that opens the report)."""
    from steerlimits.claims import combine_claims
    from steerlimits.evidence import annotate, grid_html, grid_markdown

    tables = inputs["tables"] if isinstance(inputs["tables"], list) else [inputs["tables"]]
    benchmarks: dict[str, list[str]] = {}
    for path in inputs.get("benchmarks", []):
        benchmarks.setdefault(_benchmark_rule(path, s.run), []).append(path)
    table = annotate(combine_claims(tables), s.run, benchmarks)
    meta = {
        "sources": tables,
        "holds_counts": table.groupby("paper")["holds"].value_counts().unstack(fill_value=0).to_dict(orient="index"),
    }
    write_table(outputs["table"], table, meta)
    write_text(outputs["markdown"], grid_markdown(table, s.run), meta)
    write_text(outputs["grid"], grid_html(table, s.run), meta)


def _benchmark_rule(path: str, run: str) -> str:
    """The rule of a benchmark file ``benchmarks/<run>/<rule>/...``."""
    parts = Path(path).parts
    return parts[parts.index(run) + 1] if run in parts else Path(path).parent.name


def examples(s: Examples, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """A seeded sample of what the models wrote (paper B conditions at the operating alpha; paper A natural, steered
    and recovered-prompt generations), as a CSV and a browsable HTML page for the report."""
    from steerlimits.examples import example_table, examples_html

    pools = [pd.read_json(p, lines=True, dtype=False) for p in inputs.get("pools", [])]
    behaviour = [pd.read_csv(p) for p in inputs.get("behaviour", [])]
    table = example_table(pools, behaviour, s.per_condition, s.seed)
    meta = {"draw": "seeded, steerlimits.examples", "n_rows": len(table)}
    write_table(outputs["table"], table, meta)
    write_text(outputs["html"], examples_html(table, s.run), meta)


def manifest(s: Manifest, inputs: Files, outputs: Files, log_path: str | None) -> None:
    """``results/<run>/MANIFEST.json``: sha256 of every output of the run, the config and its hash, the models'
    sha256, Python and package versions, the code version and the measured runtime of every job."""
    import importlib.metadata as md
    import platform

    from steerlimits.hardware import cpu_info
    from steerlimits.provenance import REPO_ROOT, code_version
    from steerlimits.verify import sha256

    files = {}
    out = Path(outputs["manifest"])
    for folder in (Path("results") / s.run, Path("figures") / s.run):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path != out and not path.name.startswith((".", "report")):
                files[path.as_posix()] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    runtime = {}
    for path in inputs.get("benchmarks", []):
        row = pd.read_csv(path, sep="\t").iloc[-1]
        runtime[Path(path).as_posix()] = {"s": float(row["s"]), "max_rss_mb": float(row["max_rss"])}
    pinned = [
        line.split("==")[0].split("#")[0].strip()
        for name in ("requirements.txt", "models.txt")
        for line in (REPO_ROOT / "envs" / name).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    packages: dict[str, str | None] = {}
    for name in pinned:
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    models = {Path(m).parent.name: json.loads(Path(m).read_text()).get("sha256") for m in inputs.get("models", [])}
    record = {
        "run": s.run,
        "config_hash": s.config_hash,
        "config": s.config,
        "code_version": code_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "packages": packages,
        "models": models,
        "files": files,
        "job_runtime": runtime,
        "note": "files: every file under results/<run>/ and figures/<run>/ when the manifest was written "
        "(sidecars included); job_runtime: Snakemake's benchmark of each job (s = wall seconds), measured on cpu",
    }
    write_json(outputs["manifest"], record)
    log.info("manifest: %d files, %d jobs timed", len(files), len(runtime))
