rule claims:
    """All papers' claims rows in one table, each with its evidence, rebuild target, measured runtime and the papers'
    own values; the grid per paper as Markdown (claims.md) and as the HTML fragment that opens the report."""
    input:
        tables=CLAIM_TABLES,
        benchmarks=CLAIM_BENCHMARKS,
    output:
        table=report(
            f"{RESULTS}/claims.csv",
            caption="../report/claims.rst",
            category="0. Claims",
        ),
        markdown=f"{RESULTS}/claims.md",
        grid=f"{RESULTS}/claims_grid.html",
    log:
        f"{LOGS}/claims.log",
    conda:
        "../../envs/steerlimits.yaml"
    params:
        settings=settings("claims"),
    script:
        STEP


rule manifest:
    """results/<run>/MANIFEST.json: sha256 of every output, the config and its hash, model sha256s, Python and package
    versions, code version and the runtime of every job (`make verify` checks committed files against it)."""
    input:
        targets=[t for t in all_targets() if not t.endswith("MANIFEST.json")],
        models=expand("models/{model}/steerlimits_model.json", model=MODELS),
        benchmarks=ALL_BENCHMARKS,
    output:
        manifest=f"{RESULTS}/MANIFEST.json",
    log:
        f"{LOGS}/manifest.log",
    conda:
        "../../envs/steerlimits.yaml"
    params:
        settings=settings("manifest"),
    script:
        STEP


rule examples:
    """Example texts for the report, drawn with the seed: paper B continuations unsteered, steered and perturbed;
    paper A generations from x, steered x and the recovered prompt."""
    input:
        pools=EXAMPLE_POOLS,
        behaviour=EXAMPLE_BEHAVIOUR,
    output:
        table=f"{RESULTS}/examples.csv",
        html=report(
            f"{RESULTS}/examples.html",
            caption="../report/examples.rst",
            category="0. Claims",
        ),
    log:
        f"{LOGS}/examples.log",
    conda:
        "../../envs/steerlimits.yaml"
    params:
        settings=settings("examples"),
    script:
        STEP
