"""Thin adapter: rule paperA_e4 -> steerlimits.papera.steps.e4."""
from steerlimits import pipeline
from steerlimits.papera import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.e4(sm.config, sm.wildcards.model, dict(zip(sm.params.vectors, sm.input.vectors)), sm.input.responses,
         sm.output.table)
