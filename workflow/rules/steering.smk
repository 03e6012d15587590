rule steer_generate:
    """Steered generations over the dose-response coefficients (continuations kept apart from prompts)."""
    input:
        model=model_marker,
        vectors=f"{RESULTS}/vectors/{{model}}/{{behaviour}}.safetensors",
        data=DATA_FILES,
    output:
        generations=f"{RESULTS}/steering/{{model}}/{{behaviour}}.jsonl",
    params:
        settings=settings("steer_generate"),
    log:
        f"{LOGS}/steer_generate/{{model}}/{{behaviour}}.log",
    benchmark:
        f"{BENCH}/steer_generate/{{model}}/{{behaviour}}.tsv"
    resources:
        mem_mb=8000,
        runtime=30,
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    conda:
        "../../envs/steerlimits.yaml"
    script:
        STEP


rule score_generations:
    """Score continuations only, with the validated scorer configured for the behaviour."""
    input:
        generations=f"{RESULTS}/steering/{{model}}/{{behaviour}}.jsonl",
        heads=f"{RESULTS}/scorers/heads",
    output:
        scores=f"{RESULTS}/steering/{{model}}/{{behaviour}}.scores.jsonl",
    params:
        settings=settings("score_generations"),
    log:
        f"{LOGS}/score_generations/{{model}}/{{behaviour}}.log",
    benchmark:
        f"{BENCH}/score_generations/{{model}}/{{behaviour}}.tsv"
    resources:
        mem_mb=4000,
        runtime=10,
    threads: 1
    conda:
        "../../envs/steerlimits.yaml"
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
    params:
        settings=settings("dose_response"),
    log:
        f"{LOGS}/dose_response.log",
    conda:
        "../../envs/steerlimits.yaml"
    script:
        STEP
