"""Thin adapter: rule paperA_e7 -> steerlimits.papera.steps.e7."""
from steerlimits import pipeline
from steerlimits.papera import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.e7(sm.config, sm.wildcards.model, dict(zip(sm.params.vectors, sm.input.vectors)),
         {"ratios": sm.output.ratios, "pairs": sm.output.pairs})
