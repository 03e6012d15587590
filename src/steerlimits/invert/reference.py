"""The authors' inversion sweep, kept as the test oracle: what the fast path must reproduce
(docs/concepts/inversion.md).

Every candidate is appended to the full prefix and the whole sequence is run through the *whole* model with
``output_hidden_states`` (no cache, no truncation), float32; ``|𝒱| · T`` full passes per prompt, which is why
the project does not use it for real runs (defect table, row 4). Only the last position's logits are requested
(``logits_to_keep=1``): the hidden states are unaffected and batches of 1,024 fit in memory.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from steerlimits import hooks

__all__ = ["reference_sweep"]


@torch.no_grad()
def reference_sweep(
    model: nn.Module,
    prefix_ids: Tensor,
    target_t: Tensor,
    measure_at: int,
    batch_size: int = 1024,
    *,
    candidate_ids: Tensor | None = None,
    top_k: int = 10,
    layers_path: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-``top_k`` ``(tokens, distances)`` of ``‖hidden_states[measure_at][prefix + c][-1] − target_t‖₂``.

    Parameters
    ----------
    prefix_ids
        ``(P,)`` tokens before the candidate position (``P = 0`` allowed).
    target_t
        ``(d_model,)`` target state at the candidate position.
    candidate_ids
        ``(n,)`` tokens to try; default the whole vocabulary.
    """
    _, blocks = hooks.resolve_blocks(model, layers_path)
    if not 1 <= measure_at <= len(blocks) - 1:
        raise ValueError(f"measure_at={measure_at} must be in 1 … {len(blocks) - 1} (a block output)")
    device = model.get_input_embeddings().weight.device
    vocab = model.get_input_embeddings().weight.shape[0]
    prefix = torch.as_tensor(prefix_ids, dtype=torch.long, device=device).reshape(-1)
    if candidate_ids is None:
        cands = torch.arange(vocab, device=device)
    else:
        cands = candidate_ids.to(device).reshape(-1)
    target_t = target_t.to(device=device, dtype=torch.float32)
    dist = torch.empty(cands.numel(), device=device)
    for start in range(0, cands.numel(), batch_size):
        chunk = cands[start : start + batch_size]
        ids = torch.cat([prefix.expand(chunk.numel(), -1), chunk[:, None]], dim=1)
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False, logits_to_keep=1)
        states = out.hidden_states[measure_at][:, -1].float()
        dist[start : start + chunk.numel()] = torch.linalg.vector_norm(states - target_t, dim=-1)
    best = torch.topk(dist, min(top_k, cands.numel()), largest=False)
    return cands[best.indices].cpu(), best.values.cpu()
