# Paper B (non-identifiability) rules: enabled by `paperB: {enabled: true}` in the config (issue 4).
# E7 null space per model -> one generation pool per model x trait (E1, E2, E3, E5, E6; shared conditions generated
# once) -> continuation-only scores; E4 logits per model x trait (no sampling) -> tables B-T1..T7 -> claims B0-B10
# and figures B-F1..F8. Spec: /work/shared/spec/paper-B-nonidentifiability.md; settings: paperB.schema.yaml.
from steerlimits.paperb import FIGURE_FILES, TABLE_FILES


validate(config["paperB"], "../schemas/paperB.schema.yaml")

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
    _missing = [t for t in PB_TRAITS if t not in BEHAVIOURS]
    if _missing:
        raise WorkflowError(f"paperB.traits {_missing} have no vectors: add them to vectors.behaviours")
    _unknown = [m for m in PB_MODELS if m not in MODELS]
    if _unknown:
        raise WorkflowError(f"paperB.models {_unknown} are not in the config's models {MODELS}")
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
        "../scripts/paperB_nullspace.py"


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
        "../scripts/paperB_generate.py"


rule paperB_score:
    """Score continuations only with the validated scorer of each trait (offline substitutes named); one job for
    every pool, so the embedding model loads once."""
    input:
        generations=PB_GENERATIONS,
        heads=f"{RESULTS}/scorers/heads",
    output:
        scores=PB_SCORES,
    params:
        traits=[t for _, t in PB_POOLS],
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
        "../scripts/paperB_score.py"


rule paperB_logits:
    """E4: next-token logit distances and KL under v + u (all families) and v + r, every trait; no sampling."""
    input:
        model=model_marker,
        vectors=expand(f"{RESULTS}/vectors/{{{{model}}}}/{{trait}}.safetensors", trait=PB_TRAITS),
        bases=f"{PB_DIR}/nullspace/{{model}}.safetensors",
    output:
        rows=f"{PB_DIR}/logits/{{model}}.csv",
    params:
        traits=PB_TRAITS,
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
        "../scripts/paperB_logits.py"


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
    log:
        f"{LOGS}/paperB/tables.log",
    benchmark:
        f"{BENCH}/paperB_tables.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    script:
        "../scripts/paperB_tables.py"


rule paperB_claims:
    """Claims rows B0-B10 per model x trait with the spec's fixed thresholds (paper and strict equivalence)."""
    input:
        **PB_TABLES,
    output:
        table=report(f"{PB_DIR}/claims.csv", **PB_REPORT["claims"]),
    log:
        f"{LOGS}/paperB/claims.log",
    conda:
        "../../envs/steerlimits.yaml"
    script:
        "../scripts/paperB_claims.py"


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
    log:
        f"{LOGS}/paperB/figures.log",
    benchmark:
        f"{BENCH}/paperB_figures.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    script:
        "../scripts/paperB_figures.py"
