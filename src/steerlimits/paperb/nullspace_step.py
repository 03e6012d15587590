"""E7: null-space dimensionality per model (covariance and Jacobian, layers L/4, L/2, 3L/4) and exported bases.

* **Covariance.** Token activations at the input of each layer over project prompts (neutral stems, environments,
  both sides of the trait pairs, then the remaining project texts; optional external corpora), at least
  ``cov_min_tokens`` tokens after excluding the first non-pad position of every prompt
  (:data:`steerlimits.nullspace.EXCLUDE_RULE`). The covariance is accumulated in float64 around a shift (the
  first batch's mean) so that any number of tokens fits in memory. At the steering layer the spectrum WITH
  position 0 is reported once as well (method ``covariance_with_pos0``).
* **Jacobian.** float32 autograd ``JᵀJ`` of the last-position log-probabilities per prompt
  (:func:`steerlimits.nullspace.logprob_jacobian_gram`), stacked over prompts; ``jac_prompts`` at the steering
  layer, ``jac_prompts_other`` at the other E7 layers (a recorded reduction). Attention runs in ``eager`` mode
  during the Jacobian (sdpa's backward has no vmap rule on CPU and falls back to a slow loop).

Bases at the steering layer (spec B §7: the null/active split uses the 1 % Jacobian and 1e-2 covariance
thresholds): ``null_cov``, ``active_cov``, ``null_jac`` and ``active`` (= the Jacobian's active subspace).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlimits import data as D
from steerlimits import nullspace as ns
from steerlimits.hooks import forward_hidden
from steerlimits.prompting import left_pad, pad_id

__all__ = ["CovAccumulator", "collect_covariances", "e7_layers", "jacobian_grams", "project_texts",
           "spectrum_rows"]

logger = logging.getLogger(__name__)


def e7_layers(n_layers: int, steer_layer: int) -> dict[int, str]:
    """``{layer: label}`` for L/4, L/2, 3L/4 (integer division) and the steering layer if different."""
    out = {n_layers // 4: "L/4", n_layers // 2: "L/2", (3 * n_layers) // 4: "3L/4"}
    out.setdefault(steer_layer, "steer")
    return dict(sorted(out.items()))


def project_texts(data_dir: str | None, extra: Sequence[str] = ()) -> list[str]:
    """Prompt texts for the covariance, in a fixed order (duplicates removed)."""
    texts: list[str] = list(D.neutral_stems(data_dir))
    for prompts in D.environments(data_dir).values():
        texts += prompts
    for trait in ("sentiment", "formality"):
        for pair in D.contrast_pairs(trait, data_dir):
            texts += [pair.positive.user, pair.negative.user]
    for name in ("persona_questions", "refusal", "refusal_paraphrases", "formality_validation",
                 "sentiment_validation", "refusal_responses", "offensive_validation"):
        for rec in D.load_records(name, data_dir):
            texts += [str(rec[k]) for k in ("text", "formal", "informal") if k in rec and rec[k]]
    texts += list(extra)
    return list(dict.fromkeys(t for t in texts if t.strip()))


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
        """Singular values (decreasing) and right singular vectors ``(d, d)`` of the centred covariance."""
        if self.n < 2 or self.s1 is None or self.s2 is None:
            raise ValueError(f"covariance needs >= 2 token activations, got {self.n}")
        mu = self.s1 / self.n
        cov = (self.s2 - self.n * torch.outer(mu, mu)) / (self.n - 1)
        values, vectors = np.linalg.eigh(0.5 * (cov + cov.T).numpy())
        order = np.argsort(values)[::-1]
        return np.clip(values[order], 0.0, None), vectors[:, order]


@dataclass
class CovarianceResult:
    excluded: dict[int, CovAccumulator]
    with_pos0: CovAccumulator
    n_prompts: int
    n_excluded: int


@torch.no_grad()
def collect_covariances(model: Any, tok: Any, texts: Iterable[str], layers: Sequence[int], *, min_tokens: int,
                        steer_layer: int, batch_size: int = 16, progress: bool = True) -> CovarianceResult:
    """Covariance accumulators per layer (first position excluded) until ``min_tokens`` tokens are counted."""
    pid = pad_id(tok)
    acc = {layer: CovAccumulator() for layer in layers}
    incl = CovAccumulator()
    texts = list(texts)
    n_prompts = n_excl = 0
    bar = tqdm(total=min_tokens, desc="covariance tokens", disable=not progress)
    for start in range(0, len(texts), batch_size):
        ids = [tok(t, add_special_tokens=True)["input_ids"] for t in texts[start:start + batch_size]]
        batch, mask = left_pad(ids, pid)
        hidden = forward_hidden(model, batch, mask)
        for layer in layers:  # hidden_states[l] = input of block l
            acts, k = ns.gather_token_activations([hidden[layer]], [mask], exclude_first=True)
            acc[layer].add(acts)
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
    return CovarianceResult(acc, incl, n_prompts, n_excl)


def jacobian_grams(model: Any, prompt_ids: Sequence[Sequence[int]], layer: int, *, chunk_size: int | None = None,
                   progress: bool = True) -> list[torch.Tensor]:
    """Per-prompt ``JᵀJ`` ``(d, d)`` float64 at the input of block ``layer``; eager attention while computing."""
    previous = getattr(model.config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        grams = []
        for ids in tqdm(prompt_ids, desc=f"jacobian L{layer}", disable=not progress):
            grams.append(ns.logprob_jacobian_gram(model, torch.tensor([list(ids)]), None, layer,
                                                  chunk_size=chunk_size))
        return grams
    finally:
        if switch:
            model.set_attn_implementation(previous)


def spectrum_rows(sv: np.ndarray, *, layer: int, label: str, method: str, thresholds: Sequence[float],
                  n_samples: int, excluded: str, pr_of_squares: bool = False, **extra: Any) -> list[dict[str, Any]]:
    """B-T7 rows for one spectrum. ``pr_of_squares``: participation ratio of ``s²`` (the Jacobian's ``JᵀJ``
    eigenvalues, the variance-like spectrum) instead of ``s`` (already eigenvalues for the covariance)."""
    pr = ns.participation_ratio(np.asarray(sv) ** 2 if pr_of_squares else sv)
    return [{"layer": layer, "layer_label": label, "method": method, "threshold": float(t),
             "effective_rank": ns.effective_rank(sv, t), "null_fraction": ns.null_fraction(sv, t),
             "participation_ratio": pr, "d": int(np.asarray(sv).size), "n_samples": n_samples,
             "excluded_positions": excluded, **extra} for t in thresholds]


def per_prompt_rows(grams: Sequence[torch.Tensor], *, layer: int, label: str,
                    thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """Mean over prompts of the per-prompt Jacobian rank (method ``jacobian_per_prompt``)."""
    svs = [np.sqrt(np.clip(np.linalg.eigvalsh(g.numpy())[::-1], 0.0, None)) for g in grams]
    d = svs[0].size
    return [{"layer": layer, "layer_label": label, "method": "jacobian_per_prompt", "threshold": float(t),
             "effective_rank": float(np.mean([ns.effective_rank(s, t) for s in svs])),
             "null_fraction": float(np.mean([ns.null_fraction(s, t) for s in svs])),
             "participation_ratio": float(np.mean([ns.participation_ratio(s**2) for s in svs])), "d": d,
             "n_samples": len(svs), "excluded_positions": "none (last position only)",
             "note": "mean over prompts"} for t in thresholds]


def timed(fn: Any, timings: dict[str, float], key: str) -> Any:
    t0 = time.perf_counter()
    out = fn()
    timings[key] = round(time.perf_counter() - t0, 2)
    return out


def bases_from(sv: np.ndarray, vecs: np.ndarray, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(null, active)`` float32 bases ``(d, k)``, ``(d, d − k)`` at ``threshold`` relative to ``s_max``."""
    null = ns.null_basis(sv, vecs, threshold).float().contiguous()
    active = ns.active_basis(sv, vecs, threshold).float().contiguous()
    return null, active


def thresholds_of(e7: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    return [float(t) for t in e7["cov_thresholds"]], [float(t) for t in e7["jac_thresholds"]]
