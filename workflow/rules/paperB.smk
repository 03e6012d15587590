# Paper B (non-identifiability) rules: enabled by `paperB: {enabled: true}` in the config (issues 4, 9).
# E7 null space per model and the alpha calibration per model x trait (held-out calibration stems, pilot, power)
# -> one paired generation pool per model x trait at the calibrated alpha (E1, E2, E3, E5, E6) -> continuation-only
# scores; E4 logits, steered-point spectra and "where v lives" per model; the fp32 / bf16 check on one pair
# -> tables B-T1..T10 -> claims B0-B13 and figures B-F1..F9.
# Docs: docs/paperB.md; settings: paperB.schema.yaml -> steerlimits.settings.paperb.
from steerlimits.paperb import FIGURE_FILES, TABLE_FILES
from steerlimits.settings import stage as _pb_stage

PB = config["paperB"]
PB_DIR = f"{RESULTS}/paperB"
PB_TRAITS = PB["traits"]
PB_MODELS = PB["models"] or MODELS
PB_TRAIT_RE = "|".join(map(re.escape, PB_TRAITS))
PB_TABLES = {key: f"{PB_DIR}/{name}" for key, (name, _) in TABLE_FILES.items()}
PB_FIGURES = {  # output name "F1_png" <-> figure B-F1
    f"{fid[2:]}_{ext}": f"{FIGURES}/{stem}.{ext}" for fid, stem in FIGURE_FILES.items() for ext in ("png", "pdf")
}

if PB["enabled"]:
    PAPER_TARGETS.extend(list(PB_TABLES.values()) + list(PB_FIGURES.values()))
    CLAIM_TABLES.append(f"{PB_DIR}/claims.csv")
PB_POOLS = [(m, t) for m in PB_MODELS for t in PB_TRAITS]  # one generation pool per model x trait
PB_GENERATIONS = [f"{PB_DIR}/generations/{m}/{t}.jsonl" for m, t in PB_POOLS]
PB_SCORES = [f"{PB_DIR}/generations/{m}/{t}.scores.jsonl" for m, t in PB_POOLS]
PB_LOGITS = expand(f"{PB_DIR}/logits/{{model}}.csv", model=PB_MODELS)
PB_CALIB = [f"{PB_DIR}/calibration/{m}/{t}.json" for m, t in PB_POOLS]
PB_CALIB_TABLES = [f"{PB_DIR}/calibration/{m}/{t}.csv" for m, t in PB_POOLS]
if PB["enabled"]:
    _PB_DT = _pb_stage(config, "paperB_dtype_check")  # the one pair whose fp32 / bf16 generations are compared
    PB_DT_MODEL, PB_DT_TRAIT = _PB_DT.ctx.model.key, _PB_DT.trait
else:
    PB_DT_MODEL, PB_DT_TRAIT = (PB_MODELS or ["none"])[0], PB_TRAITS[0]
PB_REPORT = {  # report() arguments per caption file
    key: dict(caption=f"../report/paperB_{key}.rst", category="Paper B")
    for key in ("tables", "nullspace", "claims", "figures", "calibration")
}


rule paperB_nullspace:
    """E7: covariance (with and without outlier tokens) and Jacobian (plain and Fisher) spectra at L/4, L/2, 3L/4
    from estimation prompts disjoint from every evaluated prompt; null and active bases at the steering layer."""
    input:
        model=model_marker,
        data=DATA_FILES,
    output:
        bases=f"{PB_DIR}/nullspace/{{model}}.safetensors",
        table=f"{PB_DIR}/nullspace/{{model}}.csv",
    log:
        f"{LOGS}/paperB/nullspace/{{model}}.log",
    benchmark:
        f"{BENCH}/paperB_nullspace/{{model}}.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        settings=settings("paperB_nullspace"),
    script:
        STEP


rule paperB_calibrate:
    """The alpha sweep on held-out calibration stems (d and perplexity, both vector readings), the calibrated alpha,
    the pilot at that alpha and the samples per evaluation stem from the power calculation."""
    input:
        model=model_marker,
        vectors=f"{RESULTS}/vectors/{{model}}/{{trait}}.safetensors",
        heads=f"{RESULTS}/scorers/heads",
        data=DATA_FILES,
    output:
        table=f"{PB_DIR}/calibration/{{model}}/{{trait}}.csv",
        calibration=f"{PB_DIR}/calibration/{{model}}/{{trait}}.json",
        generations=f"{PB_DIR}/calibration/{{model}}/{{trait}}.generations.jsonl",
    log:
        f"{LOGS}/paperB/calibrate/{{model}}/{{trait}}.log",
    benchmark:
        f"{BENCH}/paperB_calibrate/{{model}}/{{trait}}.tsv"
    wildcard_constraints:
        trait=PB_TRAIT_RE,
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        settings=settings("paperB_calibrate"),
    script:
        STEP


rule paperB_generate:
    """One paired generation pool per model x trait at the calibrated alpha: E1, E2, E3, E5, E6 conditions with
    common random numbers, in few batched generate() calls."""
    input:
        model=model_marker,
        vectors=f"{RESULTS}/vectors/{{model}}/{{trait}}.safetensors",
        bases=f"{PB_DIR}/nullspace/{{model}}.safetensors",
        calibration=f"{PB_DIR}/calibration/{{model}}/{{trait}}.json",
        data=DATA_FILES,
    output:
        generations=f"{PB_DIR}/generations/{{model}}/{{trait}}.jsonl",
        perturbations=f"{PB_DIR}/generations/{{model}}/{{trait}}.perturbations.safetensors",
    log:
        f"{LOGS}/paperB/generate/{{model}}/{{trait}}.log",
    benchmark:
        f"{BENCH}/paperB_generate/{{model}}/{{trait}}.tsv"
    wildcard_constraints:
        trait=PB_TRAIT_RE,
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        settings=settings("paperB_generate"),
    script:
        STEP


rule paperB_score:
    """Score continuations only with the validated scorer of each trait (offline substitutes named); one job for
    every pool, so the embedding model loads once."""
    input:
        generations=PB_GENERATIONS,
        heads=f"{RESULTS}/scorers/heads",
    output:
        scores=PB_SCORES,
    log:
        f"{LOGS}/paperB/score.log",
    benchmark:
        f"{BENCH}/paperB_score.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        settings=settings("paperB_score"),
    script:
        STEP


rule paperB_logits:
    """E4: next-token logit distances and KL under v + u (all families) and v + r at the calibrated alpha, every
    trait (no sampling); Jacobian spectra at the steered point; where v lives (B11)."""
    input:
        model=model_marker,
        vectors=expand(f"{RESULTS}/vectors/{{{{model}}}}/{{trait}}.safetensors", trait=PB_TRAITS),
        bases=f"{PB_DIR}/nullspace/{{model}}.safetensors",
        calibration=expand(f"{PB_DIR}/calibration/{{{{model}}}}/{{trait}}.json", trait=PB_TRAITS),
        data=DATA_FILES,
    output:
        rows=f"{PB_DIR}/logits/{{model}}.csv",
        spectra=f"{PB_DIR}/logits/{{model}}.spectra.csv",
        steered=f"{PB_DIR}/logits/{{model}}.steered.safetensors",
        geometry=f"{PB_DIR}/logits/{{model}}.where_v_lives.csv",
    log:
        f"{LOGS}/paperB/logits/{{model}}.log",
    benchmark:
        f"{BENCH}/paperB_logits/{{model}}.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=8000,
        runtime=20,
    params:
        settings=settings("paperB_logits"),
    script:
        STEP


rule paperB_dtype_check:
    """alpha = 0 and alpha v on the evaluation stems in float32 and in bfloat16 (same sampling streams) for one
    model x trait: bf16 must be equivalent by the paired effect-relative TOST before it is used."""
    input:
        model=f"models/{PB_DT_MODEL}/steerlimits_model.json",
        vectors=f"{RESULTS}/vectors/{PB_DT_MODEL}/{PB_DT_TRAIT}.safetensors",
        calibration=f"{PB_DIR}/calibration/{PB_DT_MODEL}/{PB_DT_TRAIT}.json",
        heads=f"{RESULTS}/scorers/heads",
        data=DATA_FILES,
    output:
        table=f"{PB_DIR}/dtype/{PB_DT_MODEL}/{PB_DT_TRAIT}.csv",
    log:
        f"{LOGS}/paperB/dtype_check.log",
    benchmark:
        f"{BENCH}/paperB_dtype_check.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=8000,
        runtime=20,
    params:
        settings=settings("paperB_dtype_check"),
    script:
        STEP


rule paperB_tables:
    """Tables B-T1..B-T10 (paired effect-relative TOST, efficacy, d with bootstrap CIs) from all pools,
    calibrations, logits, spectra, "where v lives" and the dtype check."""
    input:
        scores=PB_SCORES,
        logits=PB_LOGITS,
        nullspace=expand(f"{PB_DIR}/nullspace/{{model}}.csv", model=PB_MODELS),
        spectra=expand(f"{PB_DIR}/logits/{{model}}.spectra.csv", model=PB_MODELS),
        geometry=expand(f"{PB_DIR}/logits/{{model}}.where_v_lives.csv", model=PB_MODELS),
        calibration=PB_CALIB,
        calibration_tables=PB_CALIB_TABLES,
        dtype_check=f"{PB_DIR}/dtype/{PB_DT_MODEL}/{PB_DT_TRAIT}.csv",
    output:
        t1=report(PB_TABLES["t1"], **PB_REPORT["tables"]),
        t2=PB_TABLES["t2"],
        t3=PB_TABLES["t3"],
        t4=PB_TABLES["t4"],
        t5=PB_TABLES["t5"],
        t6=PB_TABLES["t6"],
        t7=report(PB_TABLES["t7"], **PB_REPORT["nullspace"]),
        t8=report(PB_TABLES["t8"], **PB_REPORT["calibration"]),
        t9=PB_TABLES["t9"],
        t10=PB_TABLES["t10"],
    log:
        f"{LOGS}/paperB/tables.log",
    benchmark:
        f"{BENCH}/paperB_tables.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    params:
        settings=settings("paperB_tables"),
    script:
        STEP


rule paperB_claims:
    """Claims rows B0-B13 per model x trait with fixed thresholds (docs/paperB.md) (effect-relative and paper
    equivalence)."""
    input:
        **PB_TABLES,
    output:
        table=report(f"{PB_DIR}/claims.csv", **PB_REPORT["claims"]),
    log:
        f"{LOGS}/paperB/claims.log",
    benchmark:
        f"{BENCH}/paperB_claims.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    params:
        settings=settings("paperB_claims"),
    script:
        STEP


rule paperB_figures:
    """Figures B-F1..B-F9 (PNG + PDF)."""
    input:
        **PB_TABLES,
        bases=expand(f"{PB_DIR}/nullspace/{{model}}.safetensors", model=PB_MODELS),
        steered=expand(f"{PB_DIR}/logits/{{model}}.steered.safetensors", model=PB_MODELS),
    output:
        **{
            key: (
                report(path, **PB_REPORT["figures"], labels={"figure": f"B-{key[:-4]}"})
                if key.endswith("png")
                else path
            )
            for key, path in PB_FIGURES.items()
        },
    log:
        f"{LOGS}/paperB/figures.log",
    benchmark:
        f"{BENCH}/paperB_figures.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    params:
        settings=settings("paperB_figures"),
    script:
        STEP


PB_BENCHMARKS = (
    bench_files("paperB_nullspace", model=PB_MODELS)
    + bench_files("paperB_logits", model=PB_MODELS)
    + [
        path
        for rule in ("paperB_calibrate", "paperB_generate")
        for m, t in PB_POOLS
        for path in bench_files(rule, model=m, trait=t)
    ]
    + [f"{BENCH}/paperB_{part}.tsv" for part in ("score", "dtype_check", "tables", "claims", "figures")]
)
if PB["enabled"]:
    CLAIM_BENCHMARKS.extend(PB_BENCHMARKS)
    ALL_BENCHMARKS.extend(PB_BENCHMARKS)
    EXAMPLE_POOLS.extend(PB_SCORES)
