"""Thin adapter: rule paperA_inversion -> steerlimits.papera.steps.inversion."""
from steerlimits import pipeline
from steerlimits.papera import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.inversion(sm.config, sm.wildcards.model, dict(zip(sm.params.vectors, sm.input.vectors)),
                {k: sm.output[k] for k in ("positions", "prompts", "certificates")})
