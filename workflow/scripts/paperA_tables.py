"""Thin adapter: rule paperA_tables -> steerlimits.papera.steps.tables."""
from steerlimits import pipeline
from steerlimits.papera import TABLE_FILES, steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0])
inputs = {k: list(v) for k, v in sm.input.items()}
steps.tables(sm.config, inputs, {k: sm.output[k] for k in TABLE_FILES})
