"""Thin adapter: rule paperB_claims -> steerlimits.paperb.report.claims_step (B0-B10)."""
from steerlimits import pipeline
from steerlimits.paperb.report import TABLES, claims_step

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
claims_step(sm.config, {key: getattr(sm.input, key) for key in TABLES}, sm.output.table)
