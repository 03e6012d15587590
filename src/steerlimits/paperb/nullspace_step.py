"""E7: null-space dimensionality per model (covariance and Jacobian, layers L/4, L/2, 3L/4) and exported bases.

One definition for both estimators (docs/concepts/null-space.md): **singular values relative to the top one**
(column ``threshold_rel_sigma1``), participation ratio of ``σ²``.

* **Estimation prompts** (:func:`estimation_texts`) are the project texts that paper B never evaluates: trait
  pairs, persona questions, refusal requests and responses, scorer-validation sentences (optional external
  corpora after them). Neutral stems (calibration and evaluation, E1/E2/E4/E5/E6) and environment prompts (E3)
  are never used, so a null space is never fitted on the prompts it is tested on.
* **Covariance.** Token activations at the input of each layer, at least ``cov_min_tokens`` tokens after
  excluding the first non-pad position of every prompt (:data:`steerlimits.nullspace.EXCLUDE_RULE`); singular
  values ``σ_i = √λ_i``. Method ``covariance`` keeps every other token; ``covariance_no_outliers`` also
  excludes high-norm outlier tokens (:data:`OUTLIER_RULE`: ‖h‖ > ``outlier_factor`` × the median token norm of
  the first batch at that layer); at the steering layer ``covariance_with_pos0`` keeps position 0 too (reported
  once). Accumulated in float64 around a shift (the first batch's mean).
* **Jacobian.** float32 autograd of the last-position log-probabilities per prompt
  (:func:`steerlimits.nullspace.logprob_jacobian_grams`), stacked over prompts: ``jacobian`` (plain ``JᵀJ``)
  and ``jacobian_fisher`` (``Jᵀ diag(p) J``, the form that matches KL), both at the unsteered point;
  ``jac_prompts`` at the steering layer, ``jac_prompts_other`` at the other E7 layers (a recorded reduction).
  Attention runs in ``eager`` mode during the Jacobian (sdpa's backward has no vmap rule on CPU). The steered
  point αv needs the calibrated α and is computed per trait in ``paperB_logits``.

Bases at the steering layer: ``null_cov`` (``covariance_no_outliers`` below the covariance threshold, the
family sampled), ``null_cov_pos0`` (``covariance``, for B11), ``null_jac`` (plain Jacobian), ``null_fisher``,
``active`` (the top ``active_k`` right singular vectors of the plain stacked Jacobian: the most sensitive
directions) and ``cov_vectors`` (all right singular vectors of ``covariance_no_outliers``, decreasing; B11's
low-variance tail).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlimits import data as D
from steerlimits import nullspace as ns
from steerlimits.hooks import forward_hidden
from steerlimits.prompting import left_pad, pad_id

__all__ = [
    "OUTLIER_RULE",
    "CovAccumulator",
    "collect_covariances",
    "e7_layers",
    "estimation_texts",
    "jacobian_grams",
    "project_texts",
    "spectrum_rows",
]

logger = logging.getLogger(__name__)

#: The recorded high-norm outlier rule of ``covariance_no_outliers`` (on top of :data:`ns.EXCLUDE_RULE`).
OUTLIER_RULE = (
    "tokens with residual norm > outlier_factor x the median token norm (first position excluded) of "
    "the first batch at that layer"
)


def e7_layers(n_layers: int, steer_layer: int) -> dict[int, str]:
    """``{layer: label}`` for L/4, L/2, 3L/4 (integer division) and the steering layer if different."""
    out = {n_layers // 4: "L/4", n_layers // 2: "L/2", (3 * n_layers) // 4: "3L/4"}
    out.setdefault(steer_layer, "steer")
    return dict(sorted(out.items()))


def project_texts(data_dir: str | None, extra: Sequence[str] = ()) -> list[str]:
    """Every project text in a fixed order (duplicates removed): stems, environments, trait pairs, the rest."""
    texts: list[str] = list(D.neutral_stems(data_dir))
    for prompts in D.environments(data_dir).values():
        texts += prompts
    for trait in ("sentiment", "formality"):
        for pair in D.contrast_pairs(trait, data_dir):
            texts += [pair.positive.user, pair.negative.user]
    for name in (
        "persona_questions",
        "refusal",
        "refusal_paraphrases",
        "formality_validation",
        "sentiment_validation",
        "refusal_responses",
        "offensive_validation",
    ):
        for rec in D.load_records(name, data_dir):
            texts += [str(rec[k]) for k in ("text", "formal", "informal") if k in rec and rec[k]]
    texts += list(extra)
    return list(dict.fromkeys(t for t in texts if t.strip()))


def estimation_texts(data_dir: str | None, extra: Sequence[str] = ()) -> list[str]:
    """The null-space estimation prompts: :func:`project_texts` without any neutral stem (calibration or
    evaluation) or environment prompt, i.e. disjoint from every prompt paper B steers and scores (tested)."""
    evaluated = set(D.neutral_stems(data_dir))
    for prompts in D.environments(data_dir).values():
        evaluated.update(prompts)
    return [t for t in project_texts(data_dir, extra) if t not in evaluated]


class CovAccumulator:
    """Streaming covariance of rows ``(n, d)`` in float64, centred around the first batch's mean."""

    def __init__(self) -> None:
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().double().cpu()
        if x.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = x.mean(0)
            self.s1 = torch.zeros_like(self.shift)
            self.s2 = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
        assert self.s1 is not None and self.s2 is not None
        y = x - self.shift
        self.s1 += y.sum(0)
        self.s2 += y.T @ y
        self.n += x.shape[0]

    def decomposition(self) -> tuple[np.ndarray, np.ndarray]:
        """Singular values ``√λ`` (decreasing) of the centred activations and right singular vectors ``(d, d)``."""
        if self.n < 2 or self.s1 is None or self.s2 is None:
            raise ValueError(f"covariance needs >= 2 token activations, got {self.n}")
        mu = self.s1 / self.n
        cov = (self.s2 - self.n * torch.outer(mu, mu)) / (self.n - 1)
        values, vectors = np.linalg.eigh(0.5 * (cov + cov.T).numpy())
        order = np.argsort(values)[::-1]
        return np.sqrt(np.clip(values[order], 0.0, None)), vectors[:, order]


@dataclass
class CovarianceResult:
    excluded: dict[int, CovAccumulator]  # first position excluded
    clean: dict[int, CovAccumulator]  # first position and high-norm outliers excluded
    with_pos0: CovAccumulator
    n_prompts: int
    n_excluded: int
    outlier_threshold: dict[int, float]
    n_outliers: dict[int, int]


@torch.no_grad()
def collect_covariances(
    model: Any,
    tok: Any,
    texts: Iterable[str],
    layers: Sequence[int],
    *,
    min_tokens: int,
    steer_layer: int,
    outlier_factor: float = 8.0,
    batch_size: int = 16,
    progress: bool = True,
) -> CovarianceResult:
    """Covariance accumulators per layer (first position excluded; and also high-norm outliers excluded,
    :data:`OUTLIER_RULE`) until ``min_tokens`` tokens are counted."""
    pid = pad_id(tok)
    acc = {layer: CovAccumulator() for layer in layers}
    clean = {layer: CovAccumulator() for layer in layers}
    thresholds: dict[int, float] = {}
    n_out = {layer: 0 for layer in layers}
    incl = CovAccumulator()
    texts = list(texts)
    n_prompts = n_excl = 0
    bar = tqdm(total=min_tokens, desc="covariance tokens", disable=not progress)
    for start in range(0, len(texts), batch_size):
        ids = [tok(t, add_special_tokens=True)["input_ids"] for t in texts[start : start + batch_size]]
        batch, mask = left_pad(ids, pid)
        hidden = forward_hidden(model, batch, mask)
        for layer in layers:  # hidden_states[l] = input of block l
            acts, k = ns.gather_token_activations([hidden[layer]], [mask], exclude_first=True)
            acc[layer].add(acts)
            norms = acts.norm(dim=-1)
            if layer not in thresholds:
                thresholds[layer] = float(outlier_factor * norms.median())
            keep = norms <= thresholds[layer]
            n_out[layer] += int((~keep).sum())
            clean[layer].add(acts[keep])
        n_excl += k
        incl.add(ns.gather_token_activations([hidden[steer_layer]], [mask], exclude_first=False)[0])
        n_prompts += len(ids)
        bar.update(min(acts.shape[0], max(0, min_tokens - bar.n)))
        if acc[layers[0]].n >= min_tokens:
            break
    bar.close()
    got = acc[layers[0]].n
    if got < min_tokens:
        logger.warning("covariance: only %d tokens available (asked for %d)", got, min_tokens)
    return CovarianceResult(acc, clean, incl, n_prompts, n_excl, thresholds, n_out)


def jacobian_grams(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    layer: int,
    *,
    chunk_size: int | None = None,
    fisher_mass: float | None = None,
    at: torch.Tensor | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Per-prompt grams (``plain`` ``JᵀJ``, and ``fisher`` with ``fisher_mass``) ``(d, d)`` float64 at the input of
    block ``layer``, at the unsteered point or at ``at`` (the steered offset); eager attention while computing."""
    previous = getattr(model.config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        grams = []
        for ids in tqdm(prompt_ids, desc=f"jacobian L{layer}", disable=not progress):
            grams.append(
                ns.logprob_jacobian_grams(
                    model,
                    torch.tensor([list(ids)], device=model.device),
                    None,
                    layer,
                    at=at,
                    fisher_mass=fisher_mass,
                    chunk_size=chunk_size,
                )
            )
        return grams
    finally:
        if switch:
            model.set_attn_implementation(previous)


def spectrum_rows(
    sv: np.ndarray,
    *,
    layer: int,
    label: str,
    method: str,
    thresholds: Sequence[float],
    n_samples: int,
    excluded: str,
    **extra: Any,
) -> list[dict[str, Any]]:
    """B-T7 rows for one spectrum of singular values ``sv`` (both estimators): effective rank and null fraction at
    each threshold relative to ``σ₁``, participation ratio of ``σ²`` (the variance-like spectrum)."""
    pr = ns.participation_ratio(np.asarray(sv) ** 2)
    return [
        {
            "layer": layer,
            "layer_label": label,
            "method": method,
            "threshold_rel_sigma1": float(t),
            "effective_rank": ns.effective_rank(sv, t),
            "null_fraction": ns.null_fraction(sv, t),
            "participation_ratio": pr,
            "d": int(np.asarray(sv).size),
            "n_samples": n_samples,
            "excluded_positions": excluded,
            **extra,
        }
        for t in thresholds
    ]


def per_prompt_rows(
    grams: Sequence[torch.Tensor], *, layer: int, label: str, thresholds: Sequence[float]
) -> list[dict[str, Any]]:
    """Mean over prompts of the per-prompt (plain) Jacobian rank (method ``jacobian_per_prompt``)."""
    svs = [np.sqrt(np.clip(np.linalg.eigvalsh(g.numpy())[::-1], 0.0, None)) for g in grams]
    d = svs[0].size
    return [
        {
            "layer": layer,
            "layer_label": label,
            "method": "jacobian_per_prompt",
            "threshold_rel_sigma1": float(t),
            "effective_rank": float(np.mean([ns.effective_rank(s, t) for s in svs])),
            "null_fraction": float(np.mean([ns.null_fraction(s, t) for s in svs])),
            "participation_ratio": float(np.mean([ns.participation_ratio(s**2) for s in svs])),
            "d": d,
            "n_samples": len(svs),
            "excluded_positions": "none (last position only)",
            "note": "mean over prompts",
        }
        for t in thresholds
    ]


def timed(fn: Any, timings: dict[str, float], key: str) -> Any:
    t0 = time.perf_counter()
    out = fn()
    timings[key] = round(time.perf_counter() - t0, 2)
    return out


def null_from(sv: np.ndarray, vecs: np.ndarray, threshold: float) -> torch.Tensor:
    """The float32 null basis ``(d, k)`` (singular values below ``threshold · σ₁``)."""
    return ns.null_basis(sv, vecs, threshold).float().contiguous()
