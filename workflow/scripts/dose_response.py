"""Thin adapter: rule dose_response -> steerlimits.pipeline.dose_response."""
from steerlimits import pipeline

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
pipeline.dose_response(sm.config, sm.input.scores, sm.output.table, [sm.output.png, sm.output.pdf])
