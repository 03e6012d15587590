rule steer_generate:
    """Steered generations over the dose-response coefficients (continuations kept apart from prompts)."""
    input:
        model=model_marker,
        vectors=f"{RESULTS}/vectors/{{model}}/{{behaviour}}.safetensors",
        data=DATA_FILES,
    output:
        generations=f"{RESULTS}/steering/{{model}}/{{behaviour}}.jsonl",
    log:
        f"{LOGS}/steer_generate/{{model}}/{{behaviour}}.log",
    benchmark:
        f"{BENCH}/steer_generate/{{model}}/{{behaviour}}.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        settings=settings("steer_generate"),
    script:
        STEP


rule score_generations:
    """Score continuations only, with the validated scorer configured for the behaviour."""
    input:
        generations=f"{RESULTS}/steering/{{model}}/{{behaviour}}.jsonl",
        heads=f"{RESULTS}/scorers/heads",
    output:
        scores=f"{RESULTS}/steering/{{model}}/{{behaviour}}.scores.jsonl",
    log:
        f"{LOGS}/score_generations/{{model}}/{{behaviour}}.log",
    benchmark:
        f"{BENCH}/score_generations/{{model}}/{{behaviour}}.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        settings=settings("score_generations"),
    script:
        STEP


rule dose_response:
    """Mean trait score vs alpha per model and behaviour, bootstrap CIs, Spearman trend, figure."""
    input:
        scores=expand(
            f"{RESULTS}/steering/{{model}}/{{behaviour}}.scores.jsonl",
            model=MODELS,
            behaviour=DOSE_BEHAVIOURS,
        ),
    output:
        table=report(
            f"{RESULTS}/steering/dose_response.csv",
            caption="../report/dose_response.rst",
            category="Steering",
        ),
        png=report(
            f"{FIGURES}/dose_response.png",
            caption="../report/dose_response.rst",
            category="Steering",
        ),
        pdf=f"{FIGURES}/dose_response.pdf",
    log:
        f"{LOGS}/dose_response.log",
    conda:
        "../../envs/steerlimits.yaml"
    params:
        settings=settings("dose_response"),
    script:
        STEP


ALL_BENCHMARKS.extend(
    bench_files("steer_generate", model=MODELS, behaviour=DOSE_BEHAVIOURS)
    + bench_files("score_generations", model=MODELS, behaviour=DOSE_BEHAVIOURS)
)
