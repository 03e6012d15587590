"""Thin adapter: rule paperB_generate -> steerlimits.paperb.steps.generate_pool."""
from steerlimits import pipeline
from steerlimits.paperb import steps

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
steps.generate_pool(sm.config, sm.wildcards.model, sm.wildcards.trait, sm.input.vectors, sm.input.bases,
                    sm.output.generations, sm.output.perturbations)
