"""Thin adapter: rule paperA_behaviour -> steerlimits.papera.steps.behaviour."""
from steerlimits import pipeline
from steerlimits.papera import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.behaviour(sm.config, sm.wildcards.model, dict(zip(sm.params.vectors, sm.input.vectors)), sm.input.prompts,
                sm.output.table)
