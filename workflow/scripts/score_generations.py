"""Thin adapter: rule score_generations -> steerlimits.pipeline.score_generations."""
from steerlimits import pipeline

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
pipeline.score_generations(sm.config, sm.wildcards.behaviour, sm.input.generations, sm.input.heads,
                           sm.output.scores)
