rule prepare_model:
    """Verify the model source (sha256) and cache it as float32 safetensors under models/<model>/."""
    output:
        marker="models/{model}/steerlimits_model.json",
        meta=f"{RESULTS}/models/{{model}}.json",
    log:
        f"{LOGS}/prepare_model/{{model}}.log",
    benchmark:
        f"{BENCH}/prepare_model/{{model}}.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=8000,
        runtime=10,
    params:
        settings=settings("prepare_model"),
    script:
        STEP


ALL_BENCHMARKS.extend(bench_files("prepare_model", model=MODELS))
