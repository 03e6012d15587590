"""Paper B report steps: tables B-T1 … B-T7, claims rows, figures B-F1 … B-F8 (called by workflow scripts)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from steerlimits.claims import claims_frame
from steerlimits.paperb import TABLE_FILES
from steerlimits.paperb import tables as T
from steerlimits.paperb.claims import claims_rows
from steerlimits.paperb.figures import all_figures
from steerlimits.provenance import atomic_path, atomic_write_json, provenance, write_with_sidecar

__all__ = ["TABLES", "claims_step", "figures_step", "read_tables", "tables_step"]

log = logging.getLogger(__name__)

TABLES = TABLE_FILES


def _sidecar(path: str | Path) -> dict[str, Any]:
    p = Path(str(path) + ".meta.json")
    return json.loads(p.read_text()) if p.exists() else {}


def tables_step(config: Mapping[str, Any], scores: Sequence[str | Path], logits: Sequence[str | Path],
                nullspace: Sequence[str | Path], outs: Mapping[str, str | Path]) -> dict[str, pd.DataFrame]:
    """Write every paper-B table; ``outs`` maps t1 … t7 to paths."""
    pb = config["paperB"]
    ctx = T.Ctx(config["seed"], int(pb["n_boot"]), float(pb["bound_d"]))
    pool = pd.concat([pd.read_json(p, lines=True, dtype=False) for p in scores], ignore_index=True)
    pool["family"] = pool["family"].fillna("").astype(str)
    metas = {str(p): _sidecar(p) for p in scores}
    vmeta = {(m["model"], m["trait"]): m for m in metas.values() if "model" in m}
    e2 = pb["e2"]
    out = {
        "t1": T.orthogonal_test(pool, ctx),
        "t2": T.alpha_sweep(pool, ctx, [float(a) for a in e2["alphas"]], float(pb["alpha"]), int(e2["n_seeds"]),
                     str(e2["family"])),
        "t3": T.environments(pool, ctx),
        "t4": T.logit_distances(pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""])
                                           for p in logits], ignore_index=True)),
        "t5": T.mean_diff_vs_pca(pool, ctx, vmeta),
        "t6": T.nullspace_spanning(pool, ctx),
        "t7": pd.concat([pd.read_csv(p) for p in nullspace], ignore_index=True),
    }
    meta = provenance(config, seed=config["seed"], run=config["run"],
                      statistics={"d": "signed pooled-SD Cohen's d of condition vs reference", "ci": "percentile "
                                  "bootstrap 95 %", "n_boot": ctx.n_boot, "tost_bound_d": ctx.bound},
                      efficacy="(mu - mu(alpha0)) / (mu(v) - mu(alpha0)) within the same experiment (D7)",
                      scorers=sorted({f"{m.get('scorer')} (substitute for {m.get('substitute_for')})"
                                      for m in metas.values()}),
                      pools={f"{m.get('model')}/{m.get('trait')}": {k: m.get(k) for k in (
                          "n_generations", "tokens_generated", "generation_wall_s", "notes", "reuse", "vector_norm",
                          "cos_mean_diff_pca", "pc1_flipped", "inject_at", "measure_at", "positions", "decoding")}
                          for m in metas.values()},
                      nullspace={str(p): _sidecar(p).get("timings_s") for p in nullspace},
                      sources=[str(p) for p in [*scores, *logits, *nullspace]])
    extra = {"t3": {"authors_summary": e3_summary(out["t3"])}}
    log.info("paper B tables: %s", {TABLES[k][0]: len(df) for k, df in out.items()})
    for key, df in out.items():
        spec_id = TABLES[key][1]
        write_with_sidecar(outs[key], lambda tmp, df=df: df.to_csv(tmp, index=False, float_format="%.6g"),
                           {**meta, "table": spec_id, **extra.get(key, {})})
    return out


def e3_summary(t3: pd.DataFrame) -> dict[str, Any]:
    """The authors' E3 summary per model/trait: share of (environment, seed) cells with |d| < 0.3 and r > 0.6 (r
    across prompts); with few prompts per cell these are noisy (spec B §4), the TOST columns are the inference."""
    cells = t3[t3["condition"].str.startswith("v+u[") & (t3["seed"].astype(str) != "pooled")]
    return {f"{m}/{t}": {"n_cells": len(g), "share_d_below_0.3_and_r_above_0.6":
                         float(((g["cohens_d"].abs() < 0.3) & (g["r_prompts"] > 0.6)).mean()) if len(g) else None}
            for (m, t), g in cells.groupby(["model", "trait"], sort=False)}


def read_tables(paths: Mapping[str, str | Path]) -> dict[str, pd.DataFrame]:
    frames = {}
    for key, p in paths.items():
        df = pd.read_csv(p, keep_default_na=False, na_values=[""])
        for col in ("seed", "family", "condition", "reference"):
            if col in df:
                df[col] = df[col].astype(str).replace("nan", "")
        frames[key] = df
    return frames


def steer_layers(config: Mapping[str, Any], models: Sequence[str]) -> dict[str, int]:
    from steerlimits.paperb.steps import sites

    return {m: sites(config, m)["n_layers"] // 2 for m in models}  # B10 is stated at L/2


def claims_step(config: Mapping[str, Any], table_paths: Mapping[str, str | Path], out: str | Path) -> pd.DataFrame:
    t = read_tables(table_paths)
    models = list(dict.fromkeys(t["t7"]["model"]))
    rows = claims_rows(t["t1"], t["t2"], t["t3"], t["t4"], t["t5"], t["t6"], t["t7"], master_seed=config["seed"],
                       steer_layers=steer_layers(config, models))
    df = claims_frame(rows)
    meta = provenance(config, seed=config["seed"], run=config["run"], sources=[str(p) for p in table_paths.values()],
                      thresholds="fixed by spec B §8", n_rows=len(df),
                      holds_counts=df["holds"].value_counts().to_dict())
    write_with_sidecar(out, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"), meta)
    log.info("paper B claims:\n%s", df[["claim_id", "model", "metric", "value", "holds"]].to_string(index=False))
    return df


def figures_step(config: Mapping[str, Any], table_paths: Mapping[str, str | Path], bases: Sequence[str | Path],
                 outs: Mapping[str, Sequence[str | Path]]) -> None:
    """``outs`` maps B-F1 … B-F8 to (png, pdf) paths."""
    import matplotlib.pyplot as plt  # after steerlimits.plotting selected the Agg backend
    from safetensors.numpy import load_file

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    t = read_tables(table_paths)
    spectra: dict[str, dict[str, dict[int, Any]]] = {}
    labels: dict[str, dict[int, str]] = {}
    for path in bases:
        meta = _sidecar(path)
        model = meta["model"]
        arrays = load_file(str(path))
        spectra[model] = {}
        for key, arr in arrays.items():
            if key.startswith("sv/"):
                _, method, layer = key.split("/")
                spectra[model].setdefault(method, {})[int(layer[1:])] = arr
        labels[model] = {int(k): v for k, v in meta["e7_layers"].items()}
    e7 = config["paperB"]["e7"]
    figs = all_figures(t, spectra, labels, {"covariance": list(e7["cov_thresholds"]),
                                            "jacobian": list(e7["jac_thresholds"])})
    meta = provenance(config, seed=config["seed"], run=config["run"],
                      sources=[str(p) for p in [*table_paths.values(), *bases]])
    for fid, fig in figs.items():
        for path in outs[fid]:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=Path(path).suffix.lstrip("."))
            atomic_write_json(Path(str(path) + ".meta.json"), {**meta, "figure": fid})
        plt.close(fig)
