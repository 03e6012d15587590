"""Thin adapter: rule steer_generate -> steerlimits.pipeline.steer_generate."""
from steerlimits import pipeline

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
pipeline.steer_generate(sm.config, sm.wildcards.model, sm.wildcards.behaviour, sm.input.vectors,
                        sm.output.generations)
