"""Thin adapter: rule paperA_e3 -> steerlimits.papera.steps.e3."""
from steerlimits import pipeline
from steerlimits.papera import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.e3(sm.config, sm.wildcards.model, dict(zip(sm.params.vectors, sm.input.vectors)), sm.input.responses,
         {"summary": sm.output.summary, "positions": sm.output.positions})
