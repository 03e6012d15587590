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
    params:
        settings=settings("validate_scorers"),
    log:
        f"{LOGS}/validate_scorers.log",
    benchmark:
        f"{BENCH}/validate_scorers.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    threads: 1  # one torch thread per job: parallel jobs, no oversubscription on small machines
    conda:
        "../../envs/steerlimits.yaml"
    script:
        STEP
