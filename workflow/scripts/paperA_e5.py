"""Thin adapter: rule paperA_e5 -> steerlimits.papera.steps.e5."""
from steerlimits import pipeline
from steerlimits.papera import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.e5(sm.config, sm.wildcards.model, dict(zip(sm.params.vectors, sm.input.vectors)),
         {"table": sm.output.table, "generations": sm.output.generations})
