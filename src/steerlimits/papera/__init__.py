"""Paper A (*Steered LLM activations are non-surjective*): experiments E1–E7, tables, figures and claims.

Modules: :mod:`context` (model, prompts, vectors, sites), :mod:`ranking` (candidate order), :mod:`inversion`
(sequential inversion per condition), :mod:`e1` (E1 + E2, certificates via :func:`steerlimits.invert.certify`),
:mod:`generation` (steered responses, via :func:`steerlimits.steer.greedy`), :mod:`icl` (E3), :mod:`optimise`
(E4), :mod:`softprefix` (E5), :mod:`copying` (E6), :mod:`scale` (E7), :mod:`tables`, :mod:`figures`,
:mod:`claims`, :mod:`steps` (the rules' step functions, :mod:`steerlimits.steps`). Docs: ``docs/paperA.md``.
"""

from __future__ import annotations

__all__ = ["FIGURES", "TABLE_FILES"]

#: output key -> file name under results/<run>/paperA/
TABLE_FILES: dict[str, str] = {
    "summary": "inversion_summary.csv",
    "summary_md": "inversion_summary.md",
    "certificates": "certificates.csv",
    "e2": "e2_sweep.csv",
    "e3": "e3_manyshot.csv",
    "e4": "e4_optimisation.csv",
    "e5": "e5_softprefix.csv",
    "e6": "e6_copying.csv",
    "e7": "e7_scale.csv",
    "behaviour": "reconstruction_behaviour.csv",
    "crosscheck": "screen_crosscheck.csv",
    "controls": "positive_controls.csv",
    "behaviour_summary": "reconstruction_behaviour_summary.csv",
}

#: figure id -> file stem under figures/<run>/ (PNG and PDF)
FIGURES: dict[str, str] = {
    "A-F1": "paperA_F1_concept_surface",
    "A-F2": "paperA_F2_topk_by_position",
    "A-F3": "paperA_F3_sweep",
    "A-F3b": "paperA_F3b_sweep_positions",
    "A-F4": "paperA_F4_many_shot",
    "A-F4b": "paperA_F4b_many_shot_heatmap",
    "A-F5": "paperA_F5_soft_prefix",
    "A-F6": "paperA_F6_cross_prompt",
    "A-F7": "paperA_F7_loss_curves",
}
