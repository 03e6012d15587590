"""Thin adapter: rule paperB_nullspace -> steerlimits.paperb.steps.nullspace (E7 + bases)."""
from steerlimits import pipeline
from steerlimits.paperb import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.nullspace(sm.config, sm.wildcards.model, sm.output.bases, sm.output.table)
