# Paper B (non-identifiability) rules: enabled by `paperB: {enabled: true}` in the config (issue 4).
# E7 null space per model -> one generation pool per model x trait (E1, E2, E3, E5, E6; shared conditions generated
# once) -> continuation-only scores; E4 logits per model x trait (no sampling) -> tables B-T1..T7 -> claims B0-B10
# and figures B-F1..F8. Docs: docs/paperB.md; settings: paperB.schema.yaml -> steerlimits.settings.paperb.
from steerlimits.paperb import FIGURE_FILES, TABLE_FILES


PB = config["paperB"]
PB_DIR = f"{RESULTS}/paperB"
PB_TRAITS = PB["traits"]
PB_MODELS = PB["models"] or MODELS
PB_TRAIT_RE = "|".join(map(re.escape, PB_TRAITS))
PB_TABLES = {key: f"{PB_DIR}/{name}" for key, (name, _) in TABLE_FILES.items()}
PB_FIGURES = {  # output name "F1_png" <-> figure B-F1
    f"{fid[2:]}_{ext}": f"{FIGURES}/{stem}.{ext}"
    for fid, stem in FIGURE_FILES.items()
    for ext in ("png", "pdf")
}

if PB["enabled"]:
    PAPER_TARGETS.extend(list(PB_TABLES.values()) + list(PB_FIGURES.values()))
    CLAIM_TABLES.append(f"{PB_DIR}/claims.csv")
PB_POOLS = [(m, t) for m in PB_MODELS for t in PB_TRAITS]  # one generation pool per model x trait
PB_GENERATIONS = [f"{PB_DIR}/generations/{m}/{t}.jsonl" for m, t in PB_POOLS]
PB_SCORES = [f"{PB_DIR}/generations/{m}/{t}.scores.jsonl" for m, t in PB_POOLS]
PB_LOGITS = expand(f"{PB_DIR}/logits/{{model}}.csv", model=PB_MODELS)
PB_REPORT = {  # report() arguments per caption file
    key: dict(caption=f"../report/paperB_{key}.rst", category="Paper B")
    for key in ("tables", "nullspace", "claims", "figures")
}


rule paperB_nullspace:
    """E7: covariance and Jacobian spectra at L/4, L/2, 3L/4; null/active bases at the steering layer."""
    input:
        model=model_marker,
        data=DATA_FILES,
    output:
        bases=f"{PB_DIR}/nullspace/{{model}}.safetensors",
        table=f"{PB_DIR}/nullspace/{{model}}.csv",
    params:
        settings=settings("paperB_nullspace"),
    log:
        f"{LOGS}/paperB/nullspace/{{model}}.log",
    benchmark:
        f"{BENCH}/paperB_nullspace/{{model}}.tsv"
    resources:
        mem_mb=8000,
        runtime=30,
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    conda:
        "../../envs/steerlimits.yaml"
    script:
        STEP


rule paperB_generate:
    """One generation pool per model x trait: E1, E2, E3, E5, E6 conditions in few batched generate() calls."""
    input:
        model=model_marker,
        vectors=f"{RESULTS}/vectors/{{model}}/{{trait}}.safetensors",
        bases=f"{PB_DIR}/nullspace/{{model}}.safetensors",
        data=DATA_FILES,
    output:
        generations=f"{PB_DIR}/generations/{{model}}/{{trait}}.jsonl",
        perturbations=f"{PB_DIR}/generations/{{model}}/{{trait}}.perturbations.safetensors",
    wildcard_constraints:
        trait=PB_TRAIT_RE,
    params:
        settings=settings("paperB_generate"),
    log:
        f"{LOGS}/paperB/generate/{{model}}/{{trait}}.log",
    benchmark:
        f"{BENCH}/paperB_generate/{{model}}/{{trait}}.tsv"
    resources:
        mem_mb=8000,
        runtime=60,
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    conda:
        "../../envs/steerlimits.yaml"
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
    params:
        settings=settings("paperB_score"),
    log:
        f"{LOGS}/paperB/score.log",
    benchmark:
        f"{BENCH}/paperB_score.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    conda:
        "../../envs/steerlimits.yaml"
    script:
        STEP


rule paperB_logits:
    """E4: next-token logit distances and KL under v + u (all families) and v + r, every trait; no sampling."""
    input:
        model=model_marker,
        vectors=expand(f"{RESULTS}/vectors/{{{{model}}}}/{{trait}}.safetensors", trait=PB_TRAITS),
        bases=f"{PB_DIR}/nullspace/{{model}}.safetensors",
    output:
        rows=f"{PB_DIR}/logits/{{model}}.csv",
    params:
        settings=settings("paperB_logits"),
    log:
        f"{LOGS}/paperB/logits/{{model}}.log",
    benchmark:
        f"{BENCH}/paperB_logits/{{model}}.tsv"
    resources:
        mem_mb=8000,
        runtime=10,
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    conda:
        "../../envs/steerlimits.yaml"
    script:
        STEP


rule paperB_tables:
    """Tables B-T1..B-T7 (d with bootstrap CIs, Welch, TOST, efficacy) from all pools, logits and spectra."""
    input:
        scores=PB_SCORES,
        logits=PB_LOGITS,
        nullspace=expand(f"{PB_DIR}/nullspace/{{model}}.csv", model=PB_MODELS),
    output:
        t1=report(PB_TABLES["t1"], **PB_REPORT["tables"]),
        t2=PB_TABLES["t2"],
        t3=PB_TABLES["t3"],
        t4=PB_TABLES["t4"],
        t5=PB_TABLES["t5"],
        t6=PB_TABLES["t6"],
        t7=report(PB_TABLES["t7"], **PB_REPORT["nullspace"]),
    params:
        settings=settings("paperB_tables"),
    log:
        f"{LOGS}/paperB/tables.log",
    benchmark:
        f"{BENCH}/paperB_tables.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    script:
        STEP


rule paperB_claims:
    """Claims rows B0-B10 per model x trait with the spec's fixed thresholds (paper and strict equivalence)."""
    input:
        **PB_TABLES,
    output:
        table=report(f"{PB_DIR}/claims.csv", **PB_REPORT["claims"]),
    params:
        settings=settings("paperB_claims"),
    log:
        f"{LOGS}/paperB/claims.log",
    conda:
        "../../envs/steerlimits.yaml"
    script:
        STEP


rule paperB_figures:
    """Figures B-F1..B-F8 (PNG + PDF)."""
    input:
        **PB_TABLES,
        bases=expand(f"{PB_DIR}/nullspace/{{model}}.safetensors", model=PB_MODELS),
    output:
        **{
            key: (
                report(path, **PB_REPORT["figures"], labels={"figure": f"B-{key[:-4]}"})
                if key.endswith("png")
                else path
            )
            for key, path in PB_FIGURES.items()
        },
    params:
        settings=settings("paperB_figures"),
    log:
        f"{LOGS}/paperB/figures.log",
    benchmark:
        f"{BENCH}/paperB_figures.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    script:
        STEP
