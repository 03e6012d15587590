# Paper A (non-surjectivity) rules: enabled by `paperA: {enabled: true}` in the config (issue 3).
# Per model: E1 + E2 inversion with certificates -> E1 behaviour (generations from x, steered x, recovered ids);
# steered responses y -> E3 many-shot, E4 tuning/GCG, E6 copying; E5 soft prefix; E7 cross-prompt scale.
# Then tables A-T1..T5 (+ E2, E3, behaviour, screening cross-check, positive controls), figures A-F1..F7 and
# claims A1..A12.
# Docs: docs/paperA.md; settings: workflow/schemas/paperA.schema.yaml -> steerlimits.settings.papera.
from steerlimits.papera import FIGURES as PA_FIGURE_STEMS, TABLE_FILES as PA_TABLE_FILES

PA = config["paperA"]
PA_DIR = f"{RESULTS}/paperA"
PA_MODELS = PA["models"] or MODELS
PA_VECTORS = sorted(set(PA["vectors"]) | set(PA["responses"]["vectors"]) | set(PA["e7"]["vectors"]))
PA_TABLES = {key: f"{PA_DIR}/{name}" for key, name in PA_TABLE_FILES.items()}
PA_FIGURES = {  # output name "A-F2_png" <-> figure A-F2
    f"{fid}_{ext}": f"{FIGURES}/{stem}.{ext}" for fid, stem in PA_FIGURE_STEMS.items() for ext in ("png", "pdf")
}
PA_RAW = {  # raw per-model tables read by the tables, figures and claims rules
    "positions": f"{PA_DIR}/inversion/{{model}}.positions.csv",
    "prompts": f"{PA_DIR}/inversion/{{model}}.prompts.csv",
    "certificates": f"{PA_DIR}/inversion/{{model}}.certificates.csv",
    "behaviour": f"{PA_DIR}/behaviour/{{model}}.csv",
    "e3": f"{PA_DIR}/e3/{{model}}.summary.csv",
    "e3_positions": f"{PA_DIR}/e3/{{model}}.positions.csv",
    "e4": f"{PA_DIR}/e4/{{model}}.csv",
    "e4_curves": f"{PA_DIR}/e4/{{model}}.curves.csv",
    "e5": f"{PA_DIR}/e5/{{model}}.csv",
    "e5_generations": f"{PA_DIR}/e5/{{model}}.generations.csv",
    "e5_curves": f"{PA_DIR}/e5/{{model}}.curves.csv",
    "e6": f"{PA_DIR}/e6/{{model}}.csv",
    "e7": f"{PA_DIR}/e7/{{model}}.ratios.csv",
    "e7_pairs": f"{PA_DIR}/e7/{{model}}.pairs.csv",
}

if PA["enabled"]:
    PAPER_TARGETS.extend(list(PA_TABLES.values()) + list(PA_FIGURES.values()))
    CLAIM_TABLES.append(f"{PA_DIR}/claims.csv")


PA_RAW_ALL = {key: expand(path, model=PA_MODELS) for key, path in PA_RAW.items()}


rule paperA_inversion:
    """E1 natural vs steered inversion (10 prompts per vector) + E2 coefficient sweep + certificates."""
    input:
        model=model_marker,
        vectors=vector_files(PA["vectors"]),
        data=DATA_FILES,
    output:
        positions=PA_RAW["positions"],
        prompts=PA_RAW["prompts"],
        certificates=PA_RAW["certificates"],
    log:
        f"{LOGS}/paperA/inversion/{{model}}.log",
    benchmark:
        f"{BENCH}/paperA_inversion/{{model}}.tsv"
    priority: size_priority(1000)
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=8000,
        runtime=180,  # minutes (a SLURM time limit): Qwen2.5-0.5B took about an hour at one thread
    params:
        settings=settings("paperA_inversion"),
    script:
        STEP


rule paperA_behaviour:
    """E1 behaviour: greedy generations from x, steered x and the recovered ids (unsteered), scored."""
    input:
        model=model_marker,
        vectors=vector_files(PA["vectors"]),
        prompts=PA_RAW["prompts"],
    output:
        table=PA_RAW["behaviour"],
    log:
        f"{LOGS}/paperA/behaviour/{{model}}.log",
    benchmark:
        f"{BENCH}/paperA_behaviour/{{model}}.tsv"
    priority: size_priority(0)
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=20,
    params:
        settings=settings("paperA_behaviour"),
    script:
        STEP


rule paperA_responses:
    """Steered greedy responses y to the first test prompts (shared by E3, E4, E6)."""
    input:
        model=model_marker,
        vectors=vector_files(PA["responses"]["vectors"]),
    output:
        responses=f"{PA_DIR}/responses/{{model}}.json",
    log:
        f"{LOGS}/paperA/responses/{{model}}.log",
    benchmark:
        f"{BENCH}/paperA_responses/{{model}}.tsv"
    priority: size_priority(0)
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1
    params:
        settings=settings("paperA_responses"),
    script:
        STEP


rule paperA_e3:
    """E3 many-shot ICL: distance to the steered states and attack success vs N demonstrations."""
    input:
        model=model_marker,
        vectors=vector_files(PA["responses"]["vectors"]),
        responses=f"{PA_DIR}/responses/{{model}}.json",
        data=DATA_FILES,
    output:
        summary=PA_RAW["e3"],
        positions=PA_RAW["e3_positions"],
    log:
        f"{LOGS}/paperA/e3/{{model}}.log",
    benchmark:
        f"{BENCH}/paperA_e3/{{model}}.tsv"
    priority: size_priority(0)
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=90,  # minutes: Qwen2.5-0.5B took 15-30 min at one thread
    params:
        settings=settings("paperA_e3"),
    script:
        STEP


rule paperA_e4:
    """E4 prompt tuning and GCG (replacement, prefix) towards the steered states, each with a positive control."""
    input:
        model=model_marker,
        vectors=vector_files(PA["responses"]["vectors"]),
        responses=f"{PA_DIR}/responses/{{model}}.json",
    output:
        table=PA_RAW["e4"],
        curves=PA_RAW["e4_curves"],
    log:
        f"{LOGS}/paperA/e4/{{model}}.log",
    benchmark:
        f"{BENCH}/paperA_e4/{{model}}.tsv"
    priority: size_priority(0)
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=90,  # minutes: Qwen2.5-0.5B took 15-30 min at one thread
    params:
        settings=settings("paperA_e4"),
    script:
        STEP


rule paperA_e5:
    """E5 soft prefix of length p (warm-started chain), then projection to tokens, with a positive control."""
    input:
        model=model_marker,
        vectors=vector_files(PA["responses"]["vectors"]),
    output:
        table=PA_RAW["e5"],
        generations=PA_RAW["e5_generations"],
        curves=PA_RAW["e5_curves"],
    log:
        f"{LOGS}/paperA/e5/{{model}}.log",
    benchmark:
        f"{BENCH}/paperA_e5/{{model}}.tsv"
    priority: size_priority(0)
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=90,  # minutes: Qwen2.5-0.5B took 15-30 min at one thread
    params:
        settings=settings("paperA_e5"),
    script:
        STEP


rule paperA_e6:
    """E6 copying baseline: explicit repetition and ICL-n copies of the steered response."""
    input:
        model=model_marker,
        vectors=vector_files(PA["responses"]["vectors"]),
        responses=f"{PA_DIR}/responses/{{model}}.json",
    output:
        table=PA_RAW["e6"],
    log:
        f"{LOGS}/paperA/e6/{{model}}.log",
    benchmark:
        f"{BENCH}/paperA_e6/{{model}}.tsv"
    priority: size_priority(0)
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1
    params:
        settings=settings("paperA_e6"),
    script:
        STEP


rule paperA_e7:
    """E7 steering displacement vs cross-prompt distances (test prompts, paraphrase groups)."""
    input:
        model=model_marker,
        vectors=vector_files(PA["e7"]["vectors"]),
        data=DATA_FILES,
    output:
        ratios=PA_RAW["e7"],
        pairs=PA_RAW["e7_pairs"],
    log:
        f"{LOGS}/paperA/e7/{{model}}.log",
    benchmark:
        f"{BENCH}/paperA_e7/{{model}}.tsv"
    priority: size_priority(0)
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1
    params:
        settings=settings("paperA_e7"),
    script:
        STEP


rule paperA_tables:
    """Tables A-T1 (+ Markdown), certificates, E2 sweep, A-T2..A-T5, E3 and reconstruction behaviour."""
    input:
        **PA_RAW_ALL,
    output:
        **{
            key: report(path, caption="../report/paperA_tables.rst", category="Paper A", labels={"table": key})
            for key, path in PA_TABLES.items()
        },
    log:
        f"{LOGS}/paperA/tables.log",
    benchmark:
        f"{BENCH}/paperA_tables.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    params:
        settings=settings("paperA_tables"),
    script:
        STEP


rule paperA_figures:
    """Figures A-F1..A-F7 (PNG + PDF), one panel per model x vector (A-F7: loss curves per method)."""
    input:
        **{
            key: PA_RAW_ALL[key]
            for key in ("positions", "e3", "e3_positions", "e5", "e7_pairs", "e4_curves", "e5_curves")
        },
        e2=PA_TABLES["e2"],
    output:
        **{
            key: report(path, caption="../report/paperA_figures.rst", category="Paper A", labels={"figure": key})
            for key, path in PA_FIGURES.items()
        },
    log:
        f"{LOGS}/paperA/figures.log",
    benchmark:
        f"{BENCH}/paperA_figures.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    params:
        settings=settings("paperA_figures"),
    script:
        STEP


rule paperA_claims:
    """Claims A1..A12 per model x vector (thresholds in steerlimits.papera.claims, docs/paperA.md)."""
    input:
        **PA_RAW_ALL,
    output:
        table=report(f"{PA_DIR}/claims.csv", caption="../report/paperA_claims.rst", category="Paper A"),
    log:
        f"{LOGS}/paperA/claims.log",
    benchmark:
        f"{BENCH}/paperA_claims.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    params:
        settings=settings("paperA_claims"),
    script:
        STEP


PA_BENCHMARKS = [
    path
    for rule in ("paperA_inversion", "paperA_behaviour", "paperA_responses")
    + tuple(f"paperA_e{i}" for i in (3, 4, 5, 6, 7))
    for path in bench_files(rule, model=PA_MODELS)
] + [f"{BENCH}/paperA_{part}.tsv" for part in ("tables", "figures", "claims")]
if PA["enabled"]:
    CLAIM_BENCHMARKS.extend(PA_BENCHMARKS)
    ALL_BENCHMARKS.extend(PA_BENCHMARKS)
    EXAMPLE_BEHAVIOUR.extend(PA_RAW_ALL["behaviour"])
