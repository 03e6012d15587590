"""Thin adapter: rule paperB_tables -> steerlimits.paperb.report.tables_step (B-T1..B-T7)."""
from steerlimits import pipeline
from steerlimits.paperb.report import TABLES, tables_step

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
tables_step(sm.config, list(sm.input.scores), list(sm.input.logits), list(sm.input.nullspace),
            {key: getattr(sm.output, key) for key in TABLES})
