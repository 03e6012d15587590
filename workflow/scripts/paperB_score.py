"""Thin adapter: rule paperB_score -> steerlimits.paperb.steps.score_pool, for every model x trait pool."""
from steerlimits import pipeline
from steerlimits.paperb import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
for trait, generations, scores in zip(sm.params.traits, sm.input.generations, sm.output.scores, strict=True):
    steps.score_pool(sm.config, trait, generations, sm.input.heads, scores)
