"""Thin adapter: rule paperB_figures -> steerlimits.paperb.report.figures_step (B-F1..B-F8)."""
from steerlimits import pipeline
from steerlimits.paperb import FIGURE_FILES
from steerlimits.paperb.report import TABLES, figures_step

sm = snakemake  # noqa: F821
pipeline.start(sm.log[0], sm.threads)
outs = {fid: [getattr(sm.output, f"{fid[2:]}_{ext}") for ext in ("png", "pdf")] for fid in FIGURE_FILES}
figures_step(sm.config, {key: getattr(sm.input, key) for key in TABLES}, list(sm.input.bases), outs)
