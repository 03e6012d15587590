"""Thin adapter: rule paperB_logits -> steerlimits.paperb.steps.logits (E4, every trait of one model)."""
from steerlimits import pipeline
from steerlimits.paperb import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.logits(sm.config, sm.wildcards.model, dict(zip(sm.params.traits, sm.input.vectors, strict=True)),
             sm.input.bases, sm.output.rows)
