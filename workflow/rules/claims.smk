rule claims:
    """All papers' claims rows (D12) in one table: paper, claim_id, model, statement, metric, value, threshold, holds."""
    input:
        tables=CLAIM_TABLES,
    output:
        table=report(
            f"{RESULTS}/claims.csv",
            caption="../report/claims.rst",
            category="Claims",
        ),
    params:
        settings=settings("claims"),
    log:
        f"{LOGS}/claims.log",
    conda:
        "../../envs/steerlimits.yaml"
    script:
        STEP
