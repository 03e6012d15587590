"""Null-space estimation for paper B (docs/concepts/null-space.md; decision D8; E7).

Two estimators of the directions at block ``layer`` that the downstream computation ignores:

* **Covariance** (the paper's stated method): singular values of the centred activation matrix,
  ``σ_i = √λ_i`` with ``λ_i`` the eigenvalues of the covariance of token activations (position 0 of every prompt,
  an attention-sink outlier, excluded by :data:`EXCLUDE_RULE`), effective rank at a threshold relative to the top
  singular value, null fraction, participation ratio of ``σ²``. Both estimators are stated as singular values
  relative to ``σ₁``, so one threshold means one thing (docs/concepts/null-space.md).
* **Jacobian** (float32 autograd): ``JᵀJ`` for ``J = ∂ log_softmax(z_last) / ∂h``, ``h`` the residual at the
  input of block ``layer`` at the last position; Jacobians stacked over prompts by summing their Gram matrices.
  The final norm and unembedding are applied analytically: with ``M = ∂ h_final / ∂δ`` (``h_final`` the
  normed final hidden state, i.e. the ``lm_head`` input) and ``W`` the unembedding,
  ``JᵀJ = Mᵀ (G − u sᵀ − s uᵀ + V u uᵀ) M``, ``G = WᵀW`` (cached), ``u = Wᵀp``, ``s = Wᵀ1``, ``V = |𝒱|``.
  A ``final_logit_softcapping`` head is handled exactly in vocabulary chunks; any other head falls back to
  brute-force autograd of the full ``V × d`` Jacobian (:func:`logprob_jacobian_gram_autograd`).
* **Fisher form** (:func:`logprob_jacobian_grams`): ``F = J_zᵀ(diag p − ppᵀ)J_z = Jᵀ diag(p) J``, the metric of
  ``KL(p_h ‖ p_{h+u}) ≈ ½ uᵀFu``; the sum over the vocabulary is taken over the most probable tokens covering
  ``fisher_mass`` of the probability (recorded; the remainder is a PSD term of trace at most the tail mass times
  the largest ``‖y_v‖²``). Both forms can be taken at the unsteered point or at a steered point ``αv``.

Bases are columns of right singular vectors: ``null_basis`` (``s < τ s_max``), ``active_basis`` (the rest) and
``top_basis`` (the first k: the most sensitive directions).
The perturbation samplers live in :mod:`steerlimits.samplers` and are re-exported here.
"""

from __future__ import annotations

import copy
import logging
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from steerlimits.hooks import add_vector
from steerlimits.samplers import combine, sample_perturbations

__all__ = [
    "EXCLUDE_RULE",
    "Spectrum",
    "active_basis",
    "combine",
    "covariance_decomposition",
    "covariance_spectrum",
    "effective_rank",
    "gather_token_activations",
    "jacobian_decomposition",
    "jacobian_spectrum",
    "logprob_jacobian_gram",
    "logprob_jacobian_gram_autograd",
    "logprob_jacobian_grams",
    "null_basis",
    "null_fraction",
    "participation_ratio",
    "principal_angles",
    "sample_perturbations",
    "top_basis",
    "unembedding_gram",
]

logger = logging.getLogger(__name__)

#: The recorded position-exclusion rule of the covariance estimator.
EXCLUDE_RULE = "first non-pad position of every prompt (attention-sink outlier)"


@dataclass
class Spectrum:
    """A spectrum with its provenance; ``singular_values`` sorted in decreasing order, float64."""

    singular_values: np.ndarray
    method: str  # "covariance" | "jacobian" | "jacobian_prompt"
    layer: int
    n_samples: int  # token activations (covariance) or prompts (jacobian)
    excluded_positions: str

    def summary(self, thresholds: Sequence[float]) -> list[dict[str, Any]]:
        """One row per threshold: effective rank, null fraction, participation ratio of ``s²`` (table B-T7)."""
        pr = participation_ratio(self.singular_values**2)
        return [
            {
                "layer": self.layer,
                "method": self.method,
                "threshold": float(t),
                "d": int(self.singular_values.size),
                "n_samples": self.n_samples,
                "excluded_positions": self.excluded_positions,
                "effective_rank": effective_rank(self.singular_values, t),
                "null_fraction": null_fraction(self.singular_values, t),
                "participation_ratio": pr,
            }
            for t in thresholds
        ]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["singular_values"] = self.singular_values.tolist()
        return out


# ------------------------------------------------------------------------------------------------ spectra
def _sorted_sv(values: np.ndarray, vectors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Eigenvalues of a symmetric PSD matrix -> non-negative, decreasing singular values (and matching columns)."""
    order = np.argsort(values)[::-1]
    sv = np.clip(values[order], 0.0, None)
    return sv, (vectors[:, order] if vectors is not None else None)


def covariance_decomposition(acts: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (decreasing, float64) of the centred activation matrix ``Xc / √(n − 1)`` (``√`` of the
    covariance eigenvalues) and the right singular vectors ``(d, d)``.

    ``acts`` is ``(n_tokens, d)``; the covariance is ``XcᵀXc / (n − 1)`` in float64.
    """
    x = acts.detach().cpu().double().numpy() if isinstance(acts, Tensor) else np.asarray(acts, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"acts must be (n_tokens >= 2, d), got shape {x.shape}")
    xc = x - x.mean(axis=0, keepdims=True)
    cov = xc.T @ xc / (x.shape[0] - 1)
    values, vectors = np.linalg.eigh(cov)
    sv, vecs = _sorted_sv(values, vectors)
    assert vecs is not None
    return np.sqrt(sv), vecs


def covariance_spectrum(acts: Tensor | np.ndarray) -> np.ndarray:
    """Singular values of the centred activation matrix of ``acts`` ``(n_tokens, d)`` (√ covariance eigenvalues),
    decreasing, float64."""
    return covariance_decomposition(acts)[0]


def effective_rank(sv: np.ndarray, rel_threshold: float) -> int:
    """``#{s_i >= rel_threshold · s_max}`` (0 for an all-zero spectrum)."""
    s = np.asarray(sv, np.float64)
    if s.size == 0 or s.max() <= 0:
        return 0
    return int(np.sum(s >= rel_threshold * s.max()))


def null_fraction(sv: np.ndarray, rel_threshold: float) -> float:
    """``1 − effective_rank / d`` with ``d = len(sv)``."""
    s = np.asarray(sv)
    return 1.0 - effective_rank(s, rel_threshold) / s.size


def participation_ratio(sv: np.ndarray) -> float:
    """``(Σ λ)² / Σ λ²`` over a variance-like spectrum ``λ`` (pass ``s²`` for singular values); nan for an
    all-zero spectrum."""
    s = np.asarray(sv, np.float64)
    denom = float(np.sum(s**2))
    return float(np.sum(s) ** 2 / denom) if denom > 0 else float("nan")


def _split(sv: np.ndarray, vectors: Tensor | np.ndarray, rel_threshold: float, null: bool) -> Tensor:
    s = np.asarray(sv, np.float64)
    v = vectors if isinstance(vectors, Tensor) else torch.from_numpy(np.asarray(vectors))
    if v.ndim != 2 or v.shape[1] != s.size:
        raise ValueError(f"vectors must be (d, {s.size}) with one column per singular value, got {tuple(v.shape)}")
    keep = s < rel_threshold * s.max() if null else s >= rel_threshold * s.max()
    return v[:, torch.from_numpy(keep)]


def null_basis(sv: np.ndarray, vectors: Tensor | np.ndarray, rel_threshold: float) -> Tensor:
    """Orthonormal ``(d, k)`` basis of the right singular vectors with ``s < rel_threshold · s_max``."""
    return _split(sv, vectors, rel_threshold, null=True)


def active_basis(sv: np.ndarray, vectors: Tensor | np.ndarray, rel_threshold: float) -> Tensor:
    """Orthonormal ``(d, d − k)`` complement of :func:`null_basis` (``s >= rel_threshold · s_max``)."""
    return _split(sv, vectors, rel_threshold, null=False)


def top_basis(vectors: Tensor | np.ndarray, k: int) -> Tensor:
    """The first ``k`` columns (the top right singular vectors, ``(d, k)``) of a decreasing decomposition."""
    v = vectors if isinstance(vectors, Tensor) else torch.from_numpy(np.asarray(vectors))
    if not 0 < k <= v.shape[1]:
        raise ValueError(f"k must lie in [1, {v.shape[1]}], got {k}")
    return v[:, :k]


def principal_angles(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> np.ndarray:
    """Principal angles (radians, increasing) between ``span(a)`` ``(d, k)`` and ``span(b)`` ``(d, k2)``.

    Cosines from the SVD of ``QaᵀQb``, sines from the SVD of ``(I − QaQaᵀ)Qb``; combined with ``arctan2`` so
    small angles are accurate. Returns ``min(k, k2)`` angles.
    """
    qa = np.linalg.qr(np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, np.float64))[0]
    qb = np.linalg.qr(np.asarray(b.detach().cpu() if isinstance(b, Tensor) else b, np.float64))[0]
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    k = qb.shape[1]
    cos = np.linalg.svd(qa.T @ qb, compute_uv=False)[:k]  # decreasing
    sin = np.linalg.svd(qb - qa @ (qa.T @ qb), compute_uv=False)  # decreasing
    sin = np.sort(sin)[:k]  # increasing, pairs with decreasing cosines
    return np.arctan2(sin, np.clip(cos, 0.0, 1.0))


# ------------------------------------------------------------------------------------- token activations
def gather_token_activations(
    hidden_list: Sequence[Tensor],
    attention_masks: Sequence[Tensor | None] | None = None,
    *,
    exclude_first: bool = True,
) -> tuple[Tensor, int]:
    """Flatten per-prompt activations at non-pad positions into ``(n_tokens, d)``.

    Parameters
    ----------
    hidden_list
        Tensors ``(seq, d)`` or ``(batch, seq, d)``.
    attention_masks
        Matching 0/1 masks ``(seq,)`` / ``(batch, seq)``; ``None`` (or a ``None`` entry) means no padding.
    exclude_first
        Drop the first non-pad position of every prompt (:data:`EXCLUDE_RULE`): position 0 without padding, the
        first real token under left padding.

    Returns
    -------
    acts, n_excluded
        The activations (float32) and the number of positions excluded.
    """
    rows: list[Tensor] = []
    n_excluded = 0
    masks = list(attention_masks) if attention_masks is not None else [None] * len(hidden_list)
    if len(masks) != len(hidden_list):
        raise ValueError(f"{len(hidden_list)} hidden tensors but {len(masks)} masks")
    for hidden, mask in zip(hidden_list, masks, strict=True):
        h = hidden.detach().float().cpu()
        h = h[None] if h.ndim == 2 else h
        m = torch.ones(h.shape[:2], dtype=torch.bool) if mask is None else mask.detach().cpu().bool()
        m = m[None] if m.ndim == 1 else m
        if h.ndim != 3 or m.shape != h.shape[:2]:
            raise ValueError(f"hidden {tuple(hidden.shape)} and mask {tuple(m.shape)} do not match")
        for row, row_mask in zip(h, m, strict=True):
            idx = torch.nonzero(row_mask).reshape(-1)
            if exclude_first and idx.numel() > 0:
                idx, n_excluded = idx[1:], n_excluded + 1
            rows.append(row[idx])
    if not rows:
        raise ValueError("no activations given")
    return torch.cat(rows, dim=0), n_excluded


# ------------------------------------------------------------------------------------------- Jacobians
_GRAM_CACHE: dict[int, tuple[weakref.ref[Tensor], int, Tensor, Tensor]] = {}
_DOUBLE_CACHE: dict[int, tuple[weakref.ref[Tensor], int, Tensor]] = {}


def _cached(cache: dict[int, Any], weight: Tensor) -> Any:
    """The entry of ``cache`` made for ``weight`` as it is now (same object, not modified since), else None; entries
    of freed weights are dropped."""
    for key in [k for k, entry in cache.items() if entry[0]() is None]:
        del cache[key]
    hit = cache.get(id(weight))
    return hit if hit is not None and hit[0]() is weight and hit[1] == weight._version else None


#: Largest unembedding (V·d values) whose float64 copy is kept: 2^28 values, 2 GiB (Gemma-3-270M has 168 M).
#: Larger ones (paper-scale models) are converted chunk by chunk for every prompt, as before the cache existed.
DOUBLE_CACHE_MAX = 1 << 28


def double_unembedding(weight: Tensor) -> Tensor | None:
    """A float64 CPU copy of the unembedding ``W`` ``(V, d)``, made once per weight (cached), or None when ``W``
    has more than :data:`DOUBLE_CACHE_MAX` values. Every Jacobian prompt reads it (``u = Wᵀp``, the Fisher head's
    rows) instead of converting ``V × d`` values again."""
    if weight.numel() > DOUBLE_CACHE_MAX:
        return None
    hit = _cached(_DOUBLE_CACHE, weight)
    if hit is not None:
        return hit[2]
    with torch.no_grad():
        wd = weight.detach().cpu().double()
    _DOUBLE_CACHE[id(weight)] = (weakref.ref(weight), weight._version, wd)
    return wd


def double_rows(weight: Tensor, rows: slice | Tensor) -> Tensor:
    """Rows ``rows`` of the unembedding in float64: from the cached copy where there is one, else converted now.
    The values are those of a fresh conversion either way, so the grams do not change by a bit
    (test_nullspace, ``bench/bench_jacobian.py``)."""
    wd = double_unembedding(weight)
    return wd[rows] if wd is not None else weight[rows].detach().cpu().double()


def unembedding_gram(weight: Tensor, chunk: int = 16384) -> tuple[Tensor, Tensor]:
    """``G = WᵀW`` ``(d, d)`` and ``s = Wᵀ1`` ``(d,)`` in float64 for an unembedding ``W`` ``(V, d)``; cached."""
    hit = _cached(_GRAM_CACHE, weight)
    if hit is not None:
        return hit[2], hit[3]
    d = weight.shape[1]
    g = torch.zeros(d, d, dtype=torch.float64)
    s = torch.zeros(d, dtype=torch.float64)
    for start in range(0, weight.shape[0], chunk):
        w = double_rows(weight, slice(start, start + chunk))
        g += w.T @ w
        s += w.sum(0)
    _GRAM_CACHE[id(weight)] = (weakref.ref(weight), weight._version, g, s)
    return g, s


def _prompt_ids(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    ids = input_ids.reshape(-1) if input_ids.ndim == 1 or input_ids.shape[0] == 1 else None
    if ids is None:
        raise ValueError(f"one prompt at a time: input_ids must be (seq,) or (1, seq), got {tuple(input_ids.shape)}")
    if attention_mask is not None:
        mask = attention_mask.reshape(-1).bool()
        if not bool(mask[-1]):
            raise ValueError("the last position is padding: use left padding (or strip pads)")
        ids = ids[mask.to(ids.device)]
    return ids[None]


def _head(model: nn.Module) -> tuple[Tensor, Tensor | None, float | None]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{type(model).__name__}: output embeddings are not an nn.Linear ({type(head).__name__})")
    config = getattr(model, "config", None)
    cap = getattr(config, "final_logit_softcapping", None)
    return head.weight, head.bias, (float(cap) if cap else None)


def logprob_jacobian_gram_autograd(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, layer: int, *, chunk_size: int | None = None
) -> Tensor:
    """Brute-force ``JᵀJ`` ``(d, d)`` float64: the full ``V × d`` Jacobian of the model's own last-position
    log-probabilities with respect to a vector added at the input of block ``layer`` (reference/fallback)."""
    ids = _prompt_ids(input_ids, attention_mask)
    seq = ids.shape[1]
    d = int(model.get_input_embeddings().weight.shape[1])

    def logp(delta: Tensor) -> Tensor:
        with add_vector(model, layer, delta, 1.0, positions="last_prompt_and_generated", prompt_length=seq):
            logits = model(input_ids=ids, use_cache=False).logits[0, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    zero = torch.zeros(d, device=ids.device, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop")
        jac = torch.func.jacrev(logp, chunk_size=chunk_size)(zero).double().cpu()  # grams live on the CPU
    return jac.T @ jac


def logprob_jacobian_grams(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    layer: int,
    *,
    at: Tensor | None = None,
    fisher_mass: float | None = None,
    chunk_size: int | None = None,
    vocab_chunk: int = 16384,
    max_fisher_tokens: int = 8192,
) -> dict[str, Any]:
    """Gram matrices ``(d, d)`` float64 of ``J = ∂ log_softmax(logits_last) / ∂h_layer`` at the last prompt position.

    One prompt (``(seq,)`` or ``(1, seq)``, pads stripped by ``attention_mask``). ``at`` ``(d,)``: the derivative is
    taken at ``h + at`` (the steered point; the offset is added at the last position only, as steering does for
    the next token); None = the unsteered point. Returns ``{"plain": JᵀJ}`` and, with ``fisher_mass``, also
    ``"fisher"`` (``Jᵀ diag(p) J``, tokens covering ``fisher_mass`` of the probability, at most
    ``max_fisher_tokens``) with ``"fisher_tokens"`` and ``"fisher_covered"`` (the mass covered).

    The prefix is run once into a KV cache; ``M = ∂ h_final / ∂δ`` is taken by reverse-mode autograd
    (``torch.func.jacrev``, ``d`` cotangents vmapped, ``chunk_size`` at a time) through the last token only, with
    ``δ`` added by :func:`steerlimits.hooks.add_vector`. The head is applied analytically (module docstring); if it
    does not reproduce the model's logits, brute force is used instead (logged as a WARNING).
    """
    if next(model.parameters()).dtype != torch.float32:
        logger.warning("model dtype is %s, not float32 (D3)", next(model.parameters()).dtype)
    ids = _prompt_ids(input_ids, attention_mask)
    seq = ids.shape[1]
    base = model.base_model
    weight, bias, cap = _head(model)
    d = int(weight.shape[1])
    cache = None
    if seq > 1:
        with torch.no_grad():
            cache = base(input_ids=ids[:, :-1], use_cache=True).past_key_values
    last_ids = ids[:, -1:]
    position_ids = torch.full((1, 1), seq - 1, device=ids.device, dtype=torch.long)

    def final_hidden(delta: Tensor) -> Tensor:
        kv = copy.deepcopy(cache) if cache is not None else None
        with add_vector(model, layer, delta, 1.0, positions="last_prompt_and_generated", prompt_length=seq):
            out = base(input_ids=last_ids, past_key_values=kv, use_cache=kv is not None, position_ids=position_ids)
        return out.last_hidden_state[0, -1]

    point = (
        torch.zeros(d, device=ids.device, dtype=torch.float32)
        if at is None
        else at.detach().to(device=ids.device, dtype=torch.float32).reshape(d)
    )
    with torch.no_grad():
        h = final_hidden(point)
        kv = copy.deepcopy(cache) if cache is not None else None
        with add_vector(model, layer, point, 1.0, positions="last_prompt_and_generated", prompt_length=seq):
            ref = (
                model(input_ids=last_ids, past_key_values=kv, use_cache=kv is not None, position_ids=position_ids)
                .logits[0, -1]
                .double()
            )
        pre = (weight @ h + (bias if bias is not None else 0.0)).double()
        logits = cap * torch.tanh(pre / cap) if cap else pre
        if not torch.allclose(logits, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max())):
            logger.warning(
                "%s: lm_head(h_final) does not reproduce the logits; using brute-force autograd", type(model).__name__
            )
            return _grams_autograd(model, ids, layer, point, fisher_mass, chunk_size)
        p = torch.softmax(logits, dim=0).cpu()
        vocab = p.numel()
        scale = (1.0 - torch.tanh(pre / cap) ** 2).cpu() if cap else None
        if cap is None:
            g, s = unembedding_gram(weight, vocab_chunk)
            u = sum(
                double_rows(weight, slice(i, i + vocab_chunk)).T @ p[i : i + vocab_chunk]
                for i in range(0, vocab, vocab_chunk)
            )
        else:  # Y = diag(1 − tanh²) W, accumulated in vocabulary chunks
            assert scale is not None
            g = torch.zeros(d, d, dtype=torch.float64)
            s = torch.zeros(d, dtype=torch.float64)
            u = torch.zeros(d, dtype=torch.float64)
            for start in range(0, vocab, vocab_chunk):
                y = double_rows(weight, slice(start, start + vocab_chunk)) * scale[start : start + vocab_chunk, None]
                g += y.T @ y
                s += y.sum(0)
                u += y.T @ p[start : start + vocab_chunk]
        head_gram = g - torch.outer(u, s) - torch.outer(s, u) + vocab * torch.outer(u, u)
        fisher_head = None
        extra: dict[str, Any] = {}
        if fisher_mass is not None:
            top = _top_mass(p, fisher_mass, max_fisher_tokens)
            y = double_rows(weight, top)
            if scale is not None:
                y = y * scale[top, None]
            pw = p[top]
            mean = y.T @ pw
            fisher_head = (y * pw[:, None]).T @ y - torch.outer(mean, mean)
            extra = {"fisher_tokens": int(top.numel()), "fisher_covered": float(pw.sum())}
        with warnings.catch_warnings():  # sdpa's backward has no vmap batching rule on CPU: a slower fallback
            warnings.filterwarnings("ignore", message="There is a performance drop")
            m = torch.func.jacrev(final_hidden, chunk_size=chunk_size)(point).detach().cpu().double()
    out: dict[str, Any] = {"plain": m.T @ head_gram @ m}
    if fisher_head is not None:
        out["fisher"] = m.T @ fisher_head @ m
        out.update(extra)
    return out


def _top_mass(p: Tensor, mass: float, cap: int) -> Tensor:
    """Indices of the most probable tokens covering ``mass`` of ``p`` (at least one, at most ``cap``)."""
    order = torch.argsort(p, descending=True)
    k = int(torch.searchsorted(torch.cumsum(p[order], 0), torch.tensor(mass, dtype=p.dtype))) + 1
    return order[: max(1, min(k, cap, p.numel()))]


def _grams_autograd(
    model: nn.Module, ids: Tensor, layer: int, point: Tensor, fisher_mass: float | None, chunk_size: int | None
) -> dict[str, Any]:
    """Brute-force plain and Fisher grams from the full ``V × d`` Jacobian (Fisher over every token: exact)."""
    seq = ids.shape[1]

    def logp(delta: Tensor) -> Tensor:
        with add_vector(model, layer, delta, 1.0, positions="last_prompt_and_generated", prompt_length=seq):
            logits = model(input_ids=ids, use_cache=False).logits[0, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop")
        jac = torch.func.jacrev(logp, chunk_size=chunk_size)(point).double().cpu()  # grams live on the CPU
        p = logp(point).double().exp().cpu()
    out: dict[str, Any] = {"plain": jac.T @ jac}
    if fisher_mass is not None:
        out.update(fisher=(jac * p[:, None]).T @ jac, fisher_tokens=int(p.numel()), fisher_covered=1.0)
    return out


def logprob_jacobian_gram(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    layer: int,
    *,
    chunk_size: int | None = None,
    vocab_chunk: int = 16384,
) -> Tensor:
    """``JᵀJ`` ``(d, d)`` float64 for ``J = ∂ log_softmax(logits_last) / ∂h_layer`` at the last prompt position,
    at the unsteered point (the plain form of :func:`logprob_jacobian_grams`)."""
    out = logprob_jacobian_grams(
        model, input_ids, attention_mask, layer, chunk_size=chunk_size, vocab_chunk=vocab_chunk
    )
    return out["plain"]  # type: ignore[no-any-return]


def jacobian_decomposition(grams: Sequence[Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (decreasing) and right singular vectors ``(d, d)`` of the vertically stacked Jacobians,
    from ``eig(Σ_i J_iᵀJ_i)``: ``s = sqrt(λ)``."""
    if not grams:
        raise ValueError("no Jacobian Gram matrices given")
    total = sum(g.detach().cpu().double() for g in grams)
    assert isinstance(total, Tensor)
    total = 0.5 * (total + total.T)
    values, vectors = np.linalg.eigh(total.numpy())
    sv, vecs = _sorted_sv(values, vectors)
    assert vecs is not None
    return np.sqrt(sv), vecs


def jacobian_spectrum(grams: Sequence[Tensor]) -> np.ndarray:
    """Singular values of the stacked Jacobians ``[J_1; …; J_n]`` (decreasing, float64)."""
    return jacobian_decomposition(grams)[0]
