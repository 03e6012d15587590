"""Thin adapter: rule extract_vectors -> steerlimits.pipeline.extract_vectors."""
from steerlimits import pipeline

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
pipeline.extract_vectors(sm.config, sm.wildcards.model, sm.wildcards.behaviour, sm.output.vectors)
