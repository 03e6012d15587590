"""Thin adapter: rule paperA_responses -> steerlimits.papera.steps.responses."""
from steerlimits import pipeline
from steerlimits.papera import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.responses(sm.config, sm.wildcards.model, dict(zip(sm.params.vectors, sm.input.vectors)),
                sm.output.responses)
