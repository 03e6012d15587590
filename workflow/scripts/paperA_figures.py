"""Thin adapter: rule paperA_figures -> steerlimits.papera.steps.figures."""
from steerlimits import pipeline
from steerlimits.papera import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0])
inputs = {k: list(v) for k, v in sm.input.items() if k != "e2"}
steps.figures(sm.config, inputs, sm.input.e2, dict(sm.output.items()))
