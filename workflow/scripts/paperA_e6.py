"""Thin adapter: rule paperA_e6 -> steerlimits.papera.steps.e6."""
from steerlimits import pipeline
from steerlimits.papera import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.e6(sm.config, sm.wildcards.model, dict(zip(sm.params.vectors, sm.input.vectors)), sm.input.responses,
         sm.output.table)
