"""Exhaustive per-position sweeps with a bf16 screen and float32 re-verification: the one certifier.

A *sweep* at a prefix ``ŝ_<t`` scores every candidate token ``c`` (default all of 𝒱) as the next token and returns,
per target state, the top-k ``(token, distance)`` with ``δ(c) = ‖h^m_t(ŝ_<t, c) − target‖₂`` in float32. It serves
the engine's exhaustive mode (:func:`steerlimits.invert.invert`, ``screen_dtype="bfloat16"``) and paper A's
certificates (:func:`certify`, several targets sharing one prefix share one sweep).

bf16 screen (AMX matrix units make bf16 matmuls several times faster than float32 on current CPUs):

1. a bf16 copy of the model (:func:`bf16_copy`) scores every candidate: ``δ16(c)``;
2. a calibration set (``n_random`` seeded random candidates, at most 1/16 of them but at least 32, + the
   ``n_best`` best screened ones per target) is scored in float32: ``e_cal = max |δ16 − δ32|`` over it (all targets);
3. ``margin = safety × e_cal``; every candidate with ``δ16(c) ≤ δ16_(k) + 2·margin`` (``δ16_(k)`` the k-th smallest
   screened distance of any target) is re-verified in float32, and the top-k is taken from float32 distances only.

Why step 3 is exact when ``margin ≥ e = max_c |δ16(c) − δ32(c)|`` over *all* candidates: the k best screened
candidates have ``δ32 ≤ δ16_(k) + e ≤ δ16_(k) + margin`` and are re-verified; every excluded ``c`` has
``δ32(c) ≥ δ16(c) − e > δ16_(k) + 2·margin − e ≥ δ16_(k) + margin``; so k re-verified candidates beat every
excluded one. The only assumption is ``e ≤ safety × e_cal``: the largest error over 𝒱 is at most ``safety`` times
the largest error on the calibration set. That ratio is *measured* with ``cross_check=True`` (the same sweep also
run entirely in float32: ``e`` itself, and whether the screened top-k equals the float32 top-k), and callers set
``safety`` from it (paper A: :func:`certify` measures the ratio on its cross-check sweeps first, then screens the
others with ``safety × max(1, measured ratio)``). ``screen=None`` sweeps in float32 (margin 0).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from steerlimits.invert._forward import PrefixKV, TruncatedLM

__all__ = ["CertItem", "Prefixes", "Sweep", "bf16_copy", "certify", "screened_sweep", "sweep_distances"]

logger = logging.getLogger(__name__)


def bf16_copy(model: nn.Module) -> nn.Module:
    """A bfloat16 deep copy of ``model`` (the original is untouched), for screening."""
    return copy.deepcopy(model).to(torch.bfloat16).eval()


@torch.no_grad()
def sweep_distances(
    tl: TruncatedLM, kv: PrefixKV, cands: Tensor, targets: Tensor, batch_size: int, bar: tqdm | None = None
) -> Tensor:
    """``(n, K)`` float32 distances of the candidates' states (``tl``'s dtype, upcast) to ``targets (K, d)``."""
    out = []
    for lo in range(0, cands.numel(), batch_size):
        states = tl.score(kv, cands[lo : lo + batch_size]).float()
        out.append(torch.cdist(states, targets, compute_mode="donot_use_mm_for_euclid_dist"))
        if bar is not None:
            bar.update(states.shape[0])
    return torch.cat(out) if out else torch.empty(0, targets.shape[0])


@dataclass
class Sweep:
    """One target's result of a sweep: float32 top-k and what the screen did."""

    tokens: list[int]
    dists: list[float]
    n_screened: int  # bf16 evaluations (0: float32 sweep)
    n_verified: int  # float32 evaluations
    margin: float  # safety x calibration error (0 for a float32 sweep)
    calib_error: float | None = None  # max |d16 - d32| on the calibration set
    safety: float | None = None
    full_error: float | None = None  # cross-check: max |d16 - d32| over every candidate
    screen_topk_ok: bool | None = None  # cross-check: screened top-k == float32 top-k (tokens)
    wall_s: float = 0.0


@torch.no_grad()
def screened_sweep(
    tl32: TruncatedLM,
    kv32: PrefixKV,
    targets: Tensor,
    *,
    screen: tuple[TruncatedLM, PrefixKV] | None = None,
    candidates: Tensor | None = None,
    top_k: int = 10,
    safety: float = 2.0,
    n_random: int = 256,
    n_best: int = 64,
    batch_size: int = 1024,
    seed: int = 0,
    cross_check: bool = False,
    progress: bool = False,
) -> list[Sweep]:
    """Top-k per target ``targets (K, d)`` over ``candidates`` (default 𝒱) appended to the prefix ``kv32``.

    ``screen``: ``(bf16 TruncatedLM, its prefix cache of the same ids)``, or None for a float32 sweep.
    ``cross_check``: also sweep every candidate in float32 and record the largest screening error and whether
    the screened top-k is the float32 top-k (the returned top-k is then the float32 sweep's, which is exact).
    """
    start = time.perf_counter()
    targets = targets.float().reshape(-1, targets.shape[-1])
    cands = (
        torch.arange(tl32.vocab_size, device=tl32.device)
        if candidates is None
        else candidates.to(tl32.device).reshape(-1)
    )
    n, n_targets = cands.numel(), targets.shape[0]
    k = min(top_k, n)
    bar = tqdm(total=n, desc="sweep", disable=not progress, leave=False)
    if screen is None:
        d32 = sweep_distances(tl32, kv32, cands, targets, batch_size, bar)
        bar.close()
        out = []
        for j in range(n_targets):
            top = torch.topk(d32[:, j], k, largest=False)
            out.append(
                Sweep(cands[top.indices].tolist(), top.values.tolist(), 0, n, 0.0, wall_s=time.perf_counter() - start)
            )
        return out
    tl16, kv16 = screen
    d16 = sweep_distances(tl16, kv16, cands, targets, batch_size, bar)  # (n, K)
    bar.close()
    # cross-check: every candidate in float32 once; the screen's own float32 evaluations are then read from it
    full = sweep_distances(tl32, kv32, cands, targets, batch_size) if cross_check else None
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randperm(n, generator=gen)[: min(n_random, max(32, n // 16))].to(d16.device)
    best = torch.topk(d16, min(n_best, n), dim=0, largest=False).indices.reshape(-1)
    calib = torch.unique(torch.cat([sample, best]))  # indices into cands
    d32_cal = (full[calib] if full is not None else sweep_distances(tl32, kv32, cands[calib], targets, batch_size)).to(
        d16.device
    )
    calib_error = float((d16[calib] - d32_cal).abs().max())
    margin = safety * calib_error
    kth = torch.kthvalue(d16, k, dim=0).values  # (K,)
    need = (d16 <= kth + 2 * margin).any(dim=1)
    need[calib] = False
    rest = need.nonzero().reshape(-1)
    idx = torch.cat([calib, rest])
    d32_rest = full[rest] if full is not None else sweep_distances(tl32, kv32, cands[rest], targets, batch_size)
    d32_rest = d32_rest.to(d16.device)
    d32 = torch.cat([d32_cal, d32_rest])  # (m, K)
    full_error = float((d16 - full).abs().max()) if full is not None else None  # all targets, like calib_error
    out = []
    for j in range(n_targets):
        top = torch.topk(d32[:, j], min(k, idx.numel()), largest=False)
        tokens, dists = cands[idx[top.indices]].tolist(), top.values.tolist()
        sw = Sweep(
            tokens,
            dists,
            n,
            n if full is not None else int(idx.numel()),
            margin,
            calib_error,
            safety,
            wall_s=time.perf_counter() - start,
        )
        if full is not None:
            ftop = torch.topk(full[:, j], k, largest=False)
            sw.full_error = full_error
            sw.screen_topk_ok = cands[ftop.indices].tolist() == tokens
            sw.tokens, sw.dists = cands[ftop.indices].tolist(), ftop.values.tolist()
        out.append(sw)
    return out


class Prefixes:
    """Prefix caches of one truncated model, each built from its longest cached ancestor (one pass per
    extension)."""

    def __init__(self, tl: TruncatedLM) -> None:
        self.tl = tl
        self.cache: dict[tuple[int, ...], PrefixKV] = {(): PrefixKV()}

    @torch.no_grad()
    def get(self, prefix: Sequence[int]) -> PrefixKV:
        prefix = tuple(int(t) for t in prefix)
        j = len(prefix)
        while prefix[:j] not in self.cache:
            j -= 1
        kv = self.cache[prefix[:j]]
        if j < len(prefix):
            kv, _ = self.tl.extend_many(kv, torch.tensor(prefix[j:], dtype=torch.long, device=self.tl.device))
            self.cache[prefix] = kv
        return kv


@dataclass
class CertItem:
    """Certify ``positions`` of one inverted prompt: prefixes come from ``recovered``, targets ``(T, d)``.

    ``cross_check``: positions of this item whose sweep is also run entirely in float32 (a subset of
    ``positions``)."""

    key: tuple
    recovered: Sequence[int]
    target: Tensor
    positions: Sequence[int]
    tau: float
    cross_check: Sequence[int] = field(default_factory=tuple)


@dataclass
class Certificate:
    """One (item, position) certificate: the float32 top-k over all of 𝒱 given the recovered prefix."""

    item: CertItem
    position: int
    sweep: Sweep
    n_targets: int  # targets served by the same sweep

    @property
    def exact(self) -> bool:
        return self.sweep.dists[0] <= self.item.tau


@torch.no_grad()
def certify(
    model: nn.Module,
    items: Sequence[CertItem],
    measure_at: int,
    *,
    batch_size: int = 1024,
    top_k: int = 10,
    safety: float = 2.0,
    n_random: int = 256,
    n_best: int = 64,
    seed: int = 0,
    screen_dtype: str = "bfloat16",
    screen_model: nn.Module | None = None,
    layers_path: str | None = None,
) -> tuple[list[Certificate], dict[str, float]]:
    """Certified top-k per (item, position); one sweep of 𝒱 per distinct prefix ``ŝ_<t``.

    Sweeps named by any item's ``cross_check`` run first, screened *and* in float32; the largest ratio
    ``full_error / calib_error`` they show sets the safety of every other screened sweep to
    ``safety × max(1, ratio)``. Returns the certificates and ``{"measured_ratio", "safety_used",
    "n_cross_checked"}``.
    """
    if screen_dtype not in ("bfloat16", "float32"):
        raise ValueError(f"screen_dtype must be 'bfloat16' or 'float32', got {screen_dtype!r}")
    tl32 = TruncatedLM(model, measure_at, layers_path)
    p32 = Prefixes(tl32)
    p16 = None
    if screen_dtype == "bfloat16":
        p16 = Prefixes(
            TruncatedLM(screen_model if screen_model is not None else bf16_copy(model), measure_at, layers_path)
        )
    groups: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    checked: set[tuple[int, ...]] = set()
    for i, item in enumerate(items):
        for t in item.positions:
            if not 0 <= t < item.target.shape[0]:
                raise ValueError(f"certify: position {t} outside 0 … {item.target.shape[0] - 1} for {item.key}")
            prefix = tuple(int(x) for x in item.recovered[:t])
            groups.setdefault(prefix, []).append((i, t))
            if t in item.cross_check:
                checked.add(prefix)
    order = sorted(groups, key=lambda p: (p not in checked, len(p), p))  # cross-checks first
    ratio, safety_used = 0.0, safety
    out: list[Certificate] = []
    for prefix in tqdm(order, desc=f"certify m={measure_at}"):
        members = groups[prefix]
        targets = torch.stack([items[i].target[t].float() for i, t in members])  # (K, d)
        screen = None if p16 is None else (p16.tl, p16.get(prefix))
        cross = p16 is not None and prefix in checked
        sweeps = screened_sweep(
            tl32,
            p32.get(prefix),
            targets,
            screen=screen,
            top_k=top_k,
            safety=safety if cross else safety_used,
            n_random=n_random,
            n_best=n_best,
            batch_size=batch_size,
            seed=seed + len(prefix),
            cross_check=cross,
        )
        if cross:
            for sw in sweeps:
                if sw.calib_error and sw.full_error is not None:
                    ratio = max(ratio, sw.full_error / sw.calib_error)
            safety_used = safety * max(1.0, ratio)
        for (i, t), sw in zip(members, sweeps):
            out.append(Certificate(items[i], t, sw, len(members)))
        sw0 = sweeps[0]
        logger.info(
            "certified prefix length %d for %d target(s): margin %.3g, %d float32 evaluations%s, %.1f s",
            len(prefix),
            len(members),
            sw0.margin,
            sw0.n_verified,
            f", cross-check max error {max(s.full_error or 0 for s in sweeps):.3g} vs calibration {sw0.calib_error:.3g}"
            if cross
            else "",
            sw0.wall_s,
        )
    return out, {"measured_ratio": ratio, "safety_used": safety_used, "n_cross_checked": len(checked)}
