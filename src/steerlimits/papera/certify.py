"""Per-position certificates: the minimum over 𝒱 of ``‖h^m_t(ŝ_<t, c) − target_t‖`` given the recovered prefix.

Several targets often share a prefix ``ŝ_<t`` (the template header of every condition, or the prompt itself when
the steered inversion recovered ``x``); one sweep of 𝒱 then serves all of them. Each sweep is screened in bf16
and re-verified in float32 like the engine's screened exhaustive mode
(:mod:`steerlimits.invert.sequential`): a calibration set (256 seeded random tokens + the 64 best screened
tokens of every target) gives ``margin = safety × max |δ_bf16 − δ_fp32|``, and every token within
``2 × margin`` of any target's k-th smallest screened distance is re-verified in float32 (one pass for all
targets). The margin is stored with each certificate. Where bf16 errors are large (next to the attention sink)
the margin covers most of 𝒱 and the sweep is in effect a float32 one; its cost is recorded.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from steerlimits.invert import PositionResult, PrefixKV, TruncatedLM

__all__ = ["CertItem", "certify"]

logger = logging.getLogger(__name__)


@dataclass
class CertItem:
    """Certify ``positions`` of one inverted prompt: prefixes come from ``recovered``, targets ``(T, d)``."""

    key: tuple
    recovered: Sequence[int]
    target: Tensor
    positions: Sequence[int]
    tau: float


class _Prefixes:
    """Prefix caches of one truncated model, each built from its longest cached ancestor."""

    def __init__(self, tl: TruncatedLM) -> None:
        self.tl = tl
        self.cache: dict[tuple[int, ...], PrefixKV] = {(): PrefixKV()}

    @torch.no_grad()
    def get(self, prefix: tuple[int, ...]) -> PrefixKV:
        j = len(prefix)
        while prefix[:j] not in self.cache:
            j -= 1
        kv = self.cache[prefix[:j]]
        for k in range(j, len(prefix)):
            kv, _ = self.tl.extend(kv, prefix[k])
            self.cache[prefix[:k + 1]] = kv
        return kv


@torch.no_grad()
def _distances(tl: TruncatedLM, kv: PrefixKV, cands: Tensor, targets: Tensor, batch_size: int) -> Tensor:
    """``(n, K)`` float32 distances of the candidates' states to ``targets (K, d)``."""
    out = [torch.cdist(tl.score(kv, cands[lo:lo + batch_size]).float(), targets,
                       compute_mode="donot_use_mm_for_euclid_dist")
           for lo in range(0, cands.numel(), batch_size)]
    return torch.cat(out) if out else torch.empty(0, targets.shape[0])


@torch.no_grad()
def certify(model: nn.Module, items: Sequence[CertItem], measure_at: int, *, batch_size: int = 1024,
            top_k: int = 10, safety: float = 2.0, n_random: int = 256, seed: int = 0,
            screen_dtype: str = "bfloat16",
            layers_path: str | None = None) -> list[tuple[CertItem, PositionResult]]:
    """Certified top-k per (item, position); one sweep of 𝒱 per distinct prefix ``ŝ_<t``.

    ``screen_dtype="bfloat16"``: bf16 screen + float32 re-verification; ``"float32"``: the sweep itself is exact
    (margin 0). Returns ``(item, PositionResult)`` pairs (``certified=True``, ``n_screened = |𝒱|`` for a bf16
    screen, ``wall_s`` of the shared sweep, ``screen_margin`` the margin used).
    """
    if screen_dtype not in ("bfloat16", "float32"):
        raise ValueError(f"screen_dtype must be 'bfloat16' or 'float32', got {screen_dtype!r}")
    tl32 = TruncatedLM(model, measure_at, layers_path)
    exact = screen_dtype == "float32"
    tl16 = tl32 if exact else TruncatedLM(copy.deepcopy(model).to(torch.bfloat16), measure_at, layers_path)
    p32 = _Prefixes(tl32)
    p16 = p32 if exact else _Prefixes(tl16)
    vocab = tl32.vocab_size
    groups: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for i, item in enumerate(items):
        for t in item.positions:
            if not 0 <= t < item.target.shape[0]:
                raise ValueError(f"certify: position {t} outside 0 … {item.target.shape[0] - 1} for {item.key}")
            groups.setdefault(tuple(int(x) for x in item.recovered[:t]), []).append((i, t))
    every = torch.arange(vocab)
    gen = torch.Generator().manual_seed(seed)
    out: list[tuple[CertItem, PositionResult]] = []
    for prefix in tqdm(sorted(groups, key=len), desc=f"certify m={measure_at}"):
        start = time.perf_counter()
        members = groups[prefix]
        targets = torch.stack([items[i].target[t].float() for i, t in members])  # (K, d)
        d16 = _distances(tl16, p16.get(prefix), every, targets, batch_size)  # (V, K)
        if exact:
            for k, (i, t) in enumerate(members):
                top = torch.topk(d16[:, k], min(top_k, vocab), largest=False)
                out.append((items[i], PositionResult(
                    position=t, chosen_token=int(top.indices[0]), topk_tokens=top.indices.tolist(),
                    topk_dist=top.values.tolist(), n_verified=vocab, certified=True,
                    exact=float(top.values[0]) <= items[i].tau, n_screened=0, screen_margin=0.0,
                    wall_s=time.perf_counter() - start)))
            continue
        sample = torch.randperm(vocab, generator=gen)[:min(n_random, vocab)]
        best = torch.topk(d16, min(64, vocab), dim=0, largest=False).indices.reshape(-1)
        calib = torch.unique(torch.cat([sample, best]))
        kv32 = p32.get(prefix)
        d32_cal = _distances(tl32, kv32, calib, targets, batch_size)
        margin = safety * float((d16[calib] - d32_cal).abs().max())
        kth = torch.kthvalue(d16, min(top_k, vocab), dim=0).values  # (K,)
        need = (d16 <= kth + 2 * margin).any(dim=1) & ~torch.isin(every, calib)  # union over the targets
        rest = every[need]
        cands = torch.cat([calib, rest])
        dist = torch.cat([d32_cal, _distances(tl32, kv32, rest, targets, batch_size)])  # (n, K) float32
        for k, (i, t) in enumerate(members):
            top = torch.topk(dist[:, k], min(top_k, dist.shape[0]), largest=False)
            tokens, dists = cands[top.indices].tolist(), top.values.tolist()
            out.append((items[i], PositionResult(
                position=t, chosen_token=tokens[0], topk_tokens=tokens, topk_dist=dists,
                n_verified=int(cands.numel()), certified=True, exact=dists[0] <= items[i].tau,
                n_screened=vocab, screen_margin=margin, wall_s=time.perf_counter() - start)))
        logger.info("certified prefix length %d for %d target(s): margin %.3g, %d re-verified in float32, %.1f s",
                    len(prefix), len(members), margin, cands.numel(), time.perf_counter() - start)
    return out
