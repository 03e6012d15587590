"""Thin adapter: rule validate_scorers -> steerlimits.pipeline.train_and_validate_scorers."""
from steerlimits import pipeline

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
pipeline.train_and_validate_scorers(sm.config, sm.output.heads, sm.output.table)
