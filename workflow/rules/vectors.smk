rule extract_vectors:
    """Contrastive vectors (difference of means, PCA of paired differences) at every block input."""
    input:
        model=model_marker,
        data=DATA_FILES,
    output:
        vectors=f"{RESULTS}/vectors/{{model}}/{{behaviour}}.safetensors",
    log:
        f"{LOGS}/extract_vectors/{{model}}/{{behaviour}}.log",
    benchmark:
        f"{BENCH}/extract_vectors/{{model}}/{{behaviour}}.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=8000,
        runtime=20,
    params:
        settings=settings("extract_vectors"),
    script:
        STEP


ALL_BENCHMARKS.extend(bench_files("extract_vectors", model=MODELS, behaviour=BEHAVIOURS))
