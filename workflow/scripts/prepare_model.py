"""Thin adapter: rule prepare_model -> steerlimits.pipeline.prepare_model."""
from steerlimits import pipeline

pipeline.start(snakemake.log[0], snakemake.threads)  # noqa: F821
pipeline.prepare_model(snakemake.config, snakemake.wildcards.model, snakemake.output.meta)  # noqa: F821
