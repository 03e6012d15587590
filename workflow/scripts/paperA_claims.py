"""Thin adapter: rule paperA_claims -> steerlimits.papera.steps.claims."""
from steerlimits import pipeline
from steerlimits.papera import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0])
steps.claims(sm.config, {k: list(v) for k, v in sm.input.items()}, sm.output.table)
