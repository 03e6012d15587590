"""Paper B (non-identifiability of steering vectors): experiments E1–E7, tables, figures and claims rows.

Modules
-------
``calibrate``   the calibrated α per model × trait on held-out calibration stems, and the sample size of the
                paired effect-relative TOST from a pilot (docs/paperB.md, Calibration).
``plan``        the generation pool: every sampled condition of E1, E2, E3, E5 and E6 for one model × trait,
                paired on the evaluation stems; shared conditions are generated once.
``generation``  runs a pool with common random numbers (one sampling stream per (prompt, sample)), optionally in
                bfloat16, and scores fluency (continuation NLL under the unsteered model).
``nullspace_step``  E7: covariance (with and without outlier tokens) and Jacobian (plain and Fisher) spectra at
                L/4, L/2, 3L/4 from prompts disjoint from every evaluated prompt, and the bases the samplers use.
``logits``      E4: next-token logit distances and KL under perturbations (no sampling).
``geometry``    B11: where v lives relative to each null space and the covariance's low-variance tail.
``tables``      B-T1 … B-T10 from the scored pools, calibrations, logits, spectra and the dtype check.
``claims``      claims rows B0–B13 (docs/paperB.md, The claims) from the tables.
``figures``     B-F1 … B-F9.
"""

from __future__ import annotations

__all__ = ["FIGURE_FILES", "TABLE_FILES"]

#: figure id -> file stem under figures/<run>/ (PNG and PDF each)
FIGURE_FILES = {
    "B-F1": "paperB_orthogonal_d",
    "B-F2": "paperB_environments",
    "B-F3": "paperB_logits",
    "B-F4": "paperB_alpha_sweep",
    "B-F5": "paperB_mean_diff_vs_pca",
    "B-F6": "paperB_null_spanning",
    "B-F7": "paperB_spectra",
    "B-F8": "paperB_efficacy",
    "B-F9": "paperB_calibration",
}
#: table key -> (file name under results/<run>/paperB/, table id)
TABLE_FILES = {
    "t1": ("orthogonal_test.csv", "B-T1"),
    "t2": ("alpha_sweep.csv", "B-T2"),
    "t3": ("environments.csv", "B-T3"),
    "t4": ("logit_distances.csv", "B-T4"),
    "t5": ("mean_diff_vs_pca.csv", "B-T5"),
    "t6": ("nullspace_spanning.csv", "B-T6"),
    "t7": ("nullspace_dim.csv", "B-T7"),
    "t8": ("calibration.csv", "B-T8"),
    "t9": ("where_v_lives.csv", "B-T9"),
    "t10": ("dtype_check.csv", "B-T10"),
}
