"""Contrastive steering vectors at every layer: difference of means and PCA of paired differences.

Layer convention (D2): row ``l`` of every vector tensor is read at the INPUT of block ``l`` (``hidden_states[l]``,
site ``resid_pre``), for l = 0 .. L-1, which is where steering adds it.

Methods
-------
``mean_diff_last``  mean over pairs of the last-prompt-token activation, positive minus negative (CAA / paper B).
``mean_diff_mean``  the same with activations averaged over the prompt's tokens, excluding each prompt's first token
                    (the attention-sink outlier, ~100x larger than other positions) — the rule is recorded.
``pca``             first principal component of the centred paired differences (last token), oriented to a positive
                    dot product with ``mean_diff_last`` and rescaled to its norm (norm-matched, paper B E5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlimits.hooks import forward_hidden
from steerlimits.prompting import left_pad, pad_id

__all__ = ["METHODS", "VectorSet", "collect_activations", "contrastive_vectors"]

METHODS = ("mean_diff_last", "mean_diff_mean", "pca")


@dataclass
class VectorSet:
    """Vectors per method, each (n_layers, d_model); row l = input of block l."""

    vectors: dict[str, torch.Tensor]
    n_pairs: int
    meta: dict[str, Any] = field(default_factory=dict)

    def norms(self) -> dict[str, list[float]]:
        return {m: [round(float(x), 6) for x in v.norm(dim=-1)] for m, v in self.vectors.items()}


@torch.no_grad()
def collect_activations(
    model: Any, tok: Any, prompts: Sequence[Sequence[int]], batch_size: int = 16, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual activations at every block input for each prompt.

    Returns
    -------
    last : Float[Tensor, "n n_layers d_model"]  at the last prompt token
    mean : Float[Tensor, "n n_layers d_model"]  averaged over the prompt's tokens except its first
    """
    n_layers = model.config.num_hidden_layers
    lasts, means = [], []
    pid = pad_id(tok)
    for start in tqdm(range(0, len(prompts), batch_size), desc="activations", disable=not progress):
        ids, mask = left_pad(prompts[start : start + batch_size], pid)
        hidden = forward_hidden(model, ids, mask)
        states = torch.stack(hidden[:n_layers], dim=1).float().cpu()  # (b, L, t, d): hidden_states[l] = block l input
        lasts.append(states[:, :, -1, :].float())
        keep = mask.clone()
        first = mask.argmax(dim=1)  # first real token under left padding
        keep[torch.arange(len(keep)), first] = 0
        if (keep.sum(dim=1) == 0).any():  # one-token prompt: fall back to that token
            keep = mask.clone()
        w = keep[:, None, :, None].float()
        means.append((states * w).sum(dim=2) / w.sum(dim=2))
    return torch.cat(lasts), torch.cat(means)


def _first_pc(diffs: torch.Tensor) -> torch.Tensor:
    """First right singular vector of the centred rows of ``diffs`` (n, d)."""
    centred = diffs - diffs.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
    return vh[0].to(diffs.dtype)


def contrastive_vectors(
    pos_last: torch.Tensor, neg_last: torch.Tensor, pos_mean: torch.Tensor, neg_mean: torch.Tensor
) -> VectorSet:
    """All methods from paired activations, each input (n_pairs, n_layers, d)."""
    if pos_last.shape != neg_last.shape:
        raise ValueError(f"paired activations differ in shape: {tuple(pos_last.shape)} vs {tuple(neg_last.shape)}")
    md_last = pos_last.mean(0) - neg_last.mean(0)
    md_mean = pos_mean.mean(0) - neg_mean.mean(0)
    diffs = pos_last - neg_last
    pcs, signs = [], []
    for layer in range(diffs.shape[1]):
        pc = _first_pc(diffs[:, layer])
        sign = 1.0 if float(pc @ md_last[layer]) >= 0 else -1.0
        pcs.append(sign * pc * md_last[layer].norm())
        signs.append(sign)
    vs = VectorSet(
        {"mean_diff_last": md_last, "mean_diff_mean": md_mean, "pca": torch.stack(pcs)}, n_pairs=int(pos_last.shape[0])
    )
    vs.meta["pca_sign_flips"] = [i for i, s in enumerate(signs) if s < 0]
    vs.meta["cos_mean_diff_pca"] = [
        round(float(torch.nn.functional.cosine_similarity(md_last[i], vs.vectors["pca"][i], dim=0)), 6)
        for i in range(md_last.shape[0])
    ]
    return vs
