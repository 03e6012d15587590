"""Paper B (non-identifiability of steering vectors): experiments E1–E7, tables, figures and claims rows.

Modules
-------
``plan``        the generation pool: every sampled condition of E1, E2, E3, E5 and E6 for one model × trait,
                with its (norm-matched, seeded) perturbation and its prompts; shared conditions are generated once.
``generation``  runs the pool (few batched ``generate()`` calls with per-row vectors) and scores continuations.
``nullspace_step``  E7: covariance and Jacobian spectra at L/4, L/2, 3L/4 and the bases the samplers use.
``logits``      E4: next-token logit distances and KL under perturbations (no sampling).
``tables``      B-T1 … B-T7 from the scored pool and the spectra.
``claims``      claims rows B0–B10 (spec B §8) from the tables.
``figures``     B-F1 … B-F8.
"""

from __future__ import annotations

__all__ = ["FIGURE_FILES", "TABLE_FILES"]

#: spec id -> file stem under figures/<run>/ (PNG and PDF each)
FIGURE_FILES = {"B-F1": "paperB_orthogonal_d", "B-F2": "paperB_environments", "B-F3": "paperB_logits",
                "B-F4": "paperB_alpha_sweep", "B-F5": "paperB_mean_diff_vs_pca", "B-F6": "paperB_null_spanning",
                "B-F7": "paperB_spectra", "B-F8": "paperB_efficacy"}
#: table key -> (file name under results/<run>/paperB/, spec id)
TABLE_FILES = {"t1": ("orthogonal_test.csv", "B-T1"), "t2": ("alpha_sweep.csv", "B-T2"),
               "t3": ("environments.csv", "B-T3"), "t4": ("logit_distances.csv", "B-T4"),
               "t5": ("mean_diff_vs_pca.csv", "B-T5"), "t6": ("nullspace_spanning.csv", "B-T6"),
               "t7": ("nullspace_dim.csv", "B-T7")}
