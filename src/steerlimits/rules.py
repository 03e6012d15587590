"""The workflow's rules, by group: the one list that the settings resolvers (``steerlimits.settings.STAGES``) and
the step functions (``steerlimits.steps.STEPS``) are both keyed by. Importing it imports nothing else."""

from __future__ import annotations

__all__ = ["RULES"]

RULES: dict[str, tuple[str, ...]] = {
    "foundation": (
        "prepare_model",
        "extract_vectors",
        "validate_scorers",
        "steer_generate",
        "score_generations",
        "dose_response",
        "claims",
        "examples",
        "manifest",
    ),
    "paperA": (
        "paperA_inversion",
        "paperA_behaviour",
        "paperA_responses",
        "paperA_e3",
        "paperA_e4",
        "paperA_e5",
        "paperA_e6",
        "paperA_e7",
        "paperA_tables",
        "paperA_figures",
        "paperA_claims",
    ),
    "paperB": (
        "paperB_nullspace",
        "paperB_calibrate",
        "paperB_generate",
        "paperB_score",
        "paperB_logits",
        "paperB_dtype_check",
        "paperB_tables",
        "paperB_claims",
        "paperB_figures",
    ),
}
