rule validate_scorers:
    """Train the embedding heads (sentiment, formality) and validate every scorer on held-out data."""
    input:
        data=DATA_FILES,
    output:
        heads=directory(f"{RESULTS}/scorers/heads"),
        table=report(
            f"{RESULTS}/scorers/validation.csv",
            caption="../report/scorer_validation.rst",
            category="Scorers",
        ),
    log:
        f"{LOGS}/validate_scorers.log",
    benchmark:
        f"{BENCH}/validate_scorers.tsv"
    conda:
        "../../envs/steerlimits.yaml"
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        settings=settings("validate_scorers"),
    script:
        STEP


ALL_BENCHMARKS.extend(bench_files("validate_scorers"))
