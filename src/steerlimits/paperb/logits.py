"""E4: next-token logits under v, v + u (every family) and v + r (norm-matched random control); no sampling.

For each prefix x the last-position logits ``z_δ(x)`` are computed with ``δ`` added at the input of block l at the
last prompt position (positions ``last_prompt_and_generated``; for the next token only the last position
matters). Metrics against ``z_v``: L2 distance ``‖z_v − z_δ‖``, ``KL(p_v ‖ p_δ)``, argmax agreement and top-10
overlap; the baseline is ``‖z_v − z_0‖``. Random controls ``r`` are Gaussian draws rescaled to ``‖u‖ = ‖v‖``
(not orthogonalised), so every perturbation has the same norm (D7). The authors' other control, another trait's
vector ``w`` rescaled to ``‖v‖`` and steered in place of ``v`` (condition ``other``, family = that trait), shows
how far a different direction of the same norm moves the logits.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from steerlimits.hooks import add_vector, position_ids_from_mask
from steerlimits.prompting import left_pad, pad_id
from steerlimits.samplers import sample_perturbations
from steerlimits.seeds import derive_seed

__all__ = ["PrefixCache", "logit_metrics", "next_token_logits", "plan_offsets", "run_e4"]

logger = logging.getLogger(__name__)


def logit_metrics(z_ref: Tensor, z: Tensor, top: int = 10) -> dict[str, Tensor]:
    """Per-row metrics of logits ``z`` ``(n, V)`` against ``z_ref`` ``(n, V)``: l2, kl (ref ‖ z), argmax, topk."""
    z_ref, z = z_ref.double(), z.double()
    lp_ref, lp = torch.log_softmax(z_ref, -1), torch.log_softmax(z, -1)
    kl = (lp_ref.exp() * (lp_ref - lp)).sum(-1).clamp_min(0.0)
    t_ref, t = z_ref.topk(top, dim=-1).indices, z.topk(top, dim=-1).indices
    overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / top for a, b in zip(t_ref, t, strict=True)])
    return {
        "l2": (z_ref - z).norm(dim=-1),
        "kl": kl,
        "argmax_agree": (z_ref.argmax(-1) == z.argmax(-1)).double(),
        "top10_overlap": overlap.double(),
    }


class PrefixCache:
    """Left-padded prompt batches with the KV cache of every position but the last, computed once.

    Steering acts only at the last prompt position here, so every condition reuses the cache and runs one token:
    ``logits(offset)`` equals a full steered forward (tested) at a fraction of its cost.
    """

    @torch.no_grad()
    def __init__(self, model: Any, tok: Any, prompts: Sequence[Sequence[int]], batch_size: int = 32) -> None:
        self.model, self.batches = model, []
        for start in range(0, len(prompts), batch_size):
            ids, mask = left_pad(prompts[start : start + batch_size], pad_id(tok))
            pos = position_ids_from_mask(mask)
            cache = None
            if ids.shape[1] > 1:
                cache = model(
                    input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True
                ).past_key_values
            self.batches.append((ids, mask, pos, cache))

    @torch.no_grad()
    def logits(self, offsets: Tensor, layer: int) -> Tensor:
        """Last-position logits ``(n, V)`` float32, row i steered by ``offsets[i]`` ``(n, d)`` at block ``layer``."""
        out, start = [], 0
        for ids, mask, pos, cache in self.batches:
            rows = offsets[start : start + ids.shape[0]]
            start += ids.shape[0]
            kv = copy.deepcopy(cache) if cache is not None else None
            first = ids.shape[1] - 1 if kv is not None else 0
            with add_vector(
                self.model, layer, rows, 1.0, positions="last_prompt_and_generated", prompt_length=ids.shape[1]
            ):
                logits = self.model(
                    input_ids=ids[:, first:],
                    attention_mask=mask,
                    position_ids=pos[:, first:],
                    past_key_values=kv,
                    use_cache=kv is not None,
                ).logits[:, -1]
            out.append(logits.float().cpu())
        return torch.cat(out)


def next_token_logits(
    model: Any, tok: Any, prompts: Sequence[Sequence[int]], offsets: Tensor, layer: int, batch_size: int = 32
) -> Tensor:
    """Last-position logits ``(n, V)`` for row i = prompt i steered by ``offsets[i]`` ``(n, d)`` (full forwards,
    no cache: the reference for :class:`PrefixCache`)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            ids, mask = left_pad(prompts[start : start + batch_size], pad_id(tok))
            with add_vector(
                model,
                layer,
                offsets[start : start + batch_size],
                1.0,
                positions="last_prompt_and_generated",
                prompt_length=ids.shape[1],
            ):
                logits = model(
                    input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
                ).logits[:, -1]
            out.append(logits.float().cpu())
    return torch.cat(out)


def plan_offsets(
    v: Tensor,
    bases: Mapping[str, Tensor | None],
    families: Sequence[str],
    *,
    alpha: float,
    n_u: int,
    n_r: int,
    seed: int,
    others: Mapping[str, Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Conditions of E4: ``zero``, ``v``, ``v+u`` per family × draw, ``v+r`` per draw, and ``other`` per entry of
    ``others`` (trait -> vector ``(d,)``, rescaled to ``‖v‖``, in place of ``v``); offsets have α applied."""
    out: list[dict[str, Any]] = [
        {"condition": "zero", "family": "", "draw": -1, "offset": torch.zeros_like(v)},
        {"condition": "v", "family": "", "draw": -1, "offset": alpha * v},
    ]
    for fam in families:
        basis = None if fam == "random_orth" else bases.get(fam)
        if fam != "random_orth" and (basis is None or basis.shape[1] == 0):
            continue
        try:
            us = sample_perturbations(v, fam, n_u, seed=derive_seed(seed, "e4", fam), basis=basis)  # type: ignore[arg-type]
        except ValueError as err:  # subspace ∩ v⊥ empty
            logger.warning("E4: family %s skipped: %s", fam, err)
            continue
        out += [{"condition": "v+u", "family": fam, "draw": i, "offset": alpha * (v + u)} for i, u in enumerate(us)]
    gen = torch.Generator().manual_seed(derive_seed(seed, "e4", "random"))
    for i in range(n_r):
        r = torch.randn(v.numel(), generator=gen, dtype=torch.float64)
        r = (r / r.norm() * v.double().norm()).to(v.dtype)
        out.append({"condition": "v+r", "family": "random", "draw": i, "offset": alpha * (v + r)})
    for name, w in (others or {}).items():
        w_scaled = (w.double() / w.double().norm() * v.double().norm()).to(v.dtype)
        out.append({"condition": "other", "family": name, "draw": -1, "offset": alpha * w_scaled})
    return out


def run_e4(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    v: Tensor,
    bases: Mapping[str, Tensor | None],
    families: Sequence[str],
    *,
    layer: int,
    alpha: float,
    n_u: int,
    n_r: int,
    seed: int,
    batch_size: int = 32,
    others: Mapping[str, Tensor] | None = None,
) -> list[dict[str, Any]]:
    """One row per (prefix, condition) with the metrics against ``z_v`` (``zero`` is the baseline distance)."""
    conds = plan_offsets(v, bases, families, alpha=alpha, n_u=n_u, n_r=n_r, seed=seed, others=others)
    n = len(prompts)
    prefix = PrefixCache(model, tok, prompts, batch_size)
    z_v = prefix.logits((alpha * v).expand(n, -1), layer)
    rows: list[dict[str, Any]] = []
    for c in conds:
        if c["condition"] == "v":
            continue
        z = prefix.logits(c["offset"].expand(n, -1), layer)
        metrics = logit_metrics(z_v, z)
        for i in range(n):
            rows.append(
                {
                    "prefix": i,
                    "condition": c["condition"],
                    "family": c["family"],
                    "draw": c["draw"],
                    "offset_norm": float(c["offset"].norm()),
                    **{k: float(m[i]) for k, m in metrics.items()},
                }
            )
    return rows
