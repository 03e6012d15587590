"""GCG-style whole-sequence activation matching (after arXiv 2307.15043; paper A §3 method 2, D5).

Loss ``Σ_t ‖h^m_t(s) − target_t‖²`` over the positions after ``prefix_ids`` (the searched slots, then
any fixed ``suffix_ids``, optionally masked by ``target_mask``). Each step: the gradient of the
loss with respect to the one-hot matrix of ``s`` gives, per slot, the ``topk`` tokens with the most negative
gradient; ``search_width`` single-token swaps (uniform slot, uniform token among that slot's top-k) are
evaluated exactly by full uncached passes through blocks ``0 … m-1``; the best swap becomes the current
sequence (as in GCG, even when it is worse), and the best sequence ever seen is returned.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from steerlimits.invert._forward import TruncatedLM, embedding_matrix

__all__ = ["GCGResult", "gcg_search"]

logger = logging.getLogger(__name__)


@dataclass
class GCGResult:
    """``losses[i]``: loss of the current sequence after step ``i`` (``losses[0]``: the initial sequence)."""

    best_ids: list[int]
    best_loss: float
    losses: list[float]
    init_ids: list[int]
    n_evaluated: int
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def _losses(tl: TruncatedLM, prefix: Tensor, seqs: Tensor, target: Tensor, batch_size: int,
            suffix: Tensor, mask: Tensor) -> Tensor:
    out = []
    for start in range(0, seqs.shape[0], batch_size):
        chunk = seqs[start:start + batch_size]
        n = chunk.shape[0]
        ids = torch.cat([prefix.expand(n, -1), chunk, suffix.expand(n, -1)], dim=1)
        states = tl.full(input_ids=ids)[:, prefix.numel():]
        out.append(((states - target).pow(2) * mask[:, None]).sum(dim=(1, 2)))
    return torch.cat(out)


def gcg_search(model: nn.Module, target: Tensor, measure_at: int, n_steps: int = 20, search_width: int = 64,
               topk: int = 32, seed: int = 0, *, init_ids: Tensor | None = None,
               prefix_ids: Tensor | None = None, batch_size: int = 256,
               layers_path: str | None = None, suffix_ids: Tensor | None = None,
               target_mask: Tensor | None = None) -> GCGResult:
    """Search ids ``s (T,)`` minimising ``Σ_t w_t ‖h^m_t(prefix, s, suffix) − target_t‖²``.

    ``target`` is ``(T + S, d)``: the ``T`` searched slots, then the ``S`` fixed ``suffix_ids`` (default none);
    ``target_mask (T + S,)`` (bool or float weights ``w_t``, default all 1) excludes positions from the loss.
    ``init_ids`` default: uniform random tokens drawn with ``seed``.
    """
    start = time.perf_counter()
    tl = TruncatedLM(model, measure_at, layers_path)
    device = tl.device
    target = target.detach().to(device, tl.dtype)
    vocab = tl.vocab_size
    gen = torch.Generator().manual_seed(seed)
    prefix = torch.as_tensor([] if prefix_ids is None else prefix_ids, dtype=torch.long, device=device)
    prefix = prefix.reshape(-1)
    suffix = torch.as_tensor([] if suffix_ids is None else suffix_ids, dtype=torch.long, device=device)
    suffix = suffix.reshape(-1)
    n_pos = target.shape[0] - suffix.numel()
    if n_pos < 1:
        raise ValueError(f"target has {target.shape[0]} rows, fewer than suffix ({suffix.numel()}) + 1 slot")
    mask = (torch.ones(target.shape[0], device=device) if target_mask is None
            else torch.as_tensor(target_mask, device=device).to(tl.dtype).reshape(-1))
    if mask.numel() != target.shape[0]:
        raise ValueError(f"target_mask has {mask.numel()} entries, target has {target.shape[0]} rows")
    if init_ids is None:
        current = torch.randint(0, vocab, (n_pos,), generator=gen).to(device)
    else:
        current = torch.as_tensor(init_ids, dtype=torch.long, device=device).reshape(-1)
        if current.numel() != n_pos:
            raise ValueError(f"init_ids has {current.numel()} tokens, target has {n_pos} searched positions")
    table = embedding_matrix(model).detach()
    prefix_embeds, suffix_embeds = table[prefix], table[suffix]
    current_loss = float(_losses(tl, prefix, current[None], target, batch_size, suffix, mask)[0])
    best_ids, best_loss, losses, n_eval = current.clone(), current_loss, [current_loss], 1
    init = current.tolist()
    for step in range(n_steps):
        one_hot = torch.nn.functional.one_hot(current, vocab).to(table.dtype).requires_grad_(True)
        with torch.enable_grad():
            embeds = torch.cat([prefix_embeds, one_hot @ table, suffix_embeds])[None]
            states = tl.full(inputs_embeds=embeds)[0, prefix.numel():]
            loss = ((states - target).pow(2) * mask[:, None]).sum()
            (grad,) = torch.autograd.grad(loss, one_hot)
        top = (-grad).topk(min(topk, vocab), dim=1).indices  # (T, topk)
        slots = torch.randint(0, n_pos, (search_width,), generator=gen).to(device)
        picks = torch.randint(0, top.shape[1], (search_width,), generator=gen).to(device)
        cands = current.expand(search_width, -1).clone()
        cands[torch.arange(search_width, device=device), slots] = top[slots, picks]
        cands = torch.unique(cands[(cands != current).any(dim=1)], dim=0)
        if cands.shape[0] == 0:
            losses.append(current_loss)
            continue
        cand_losses = _losses(tl, prefix, cands, target, batch_size, suffix, mask)
        n_eval += cands.shape[0]
        i = int(cand_losses.argmin())
        current, current_loss = cands[i].clone(), float(cand_losses[i])
        losses.append(current_loss)
        if current_loss < best_loss:
            best_ids, best_loss = current.clone(), current_loss
        logger.debug("gcg step %d: loss %.4g (best %.4g)", step, current_loss, best_loss)
    return GCGResult(best_ids=best_ids.tolist(), best_loss=best_loss, losses=losses, init_ids=init,
                     n_evaluated=n_eval, wall_s=time.perf_counter() - start)
