"""Exhaustive per-position sweeps with a bf16 screen and float32 re-verification: the one certifier.

A *sweep* at a prefix ``ŝ_<t`` scores every candidate token ``c`` (default all of 𝒱) as the next token and returns,
per target state, the top-k ``(token, distance)`` with ``δ(c) = ‖h^m_t(ŝ_<t, c) − target‖₂`` in float32. It serves
the engine's exhaustive mode (:func:`steerlimits.invert.invert`, ``screen_dtype="bfloat16"``) and paper A's
certificates (:func:`certify`, several targets sharing one prefix share one sweep).

bf16 screen (AMX matrix units make bf16 matmuls several times faster than float32; on a CPU without bf16
instructions they are slower, docs/howto/cpu-speed.md):

1. a bf16 copy of the model (:func:`bf16_copy`) scores every candidate: ``δ16(c)``;
2. a calibration set is scored in float32: ``n_random`` seeded random candidates (at most 1/16 of them but at
   least 32) and the ``n_best`` best screened ones per target. The screening error is modelled as *relative*:
   ``ρ_cal = max |δ16 − δ32| / δ16`` over the random part (it stands for the candidates that are never verified);
3. ``ρ = safety × ρ_cal``; with ``U_k`` the k-th smallest *float32* distance among the verified candidates
   (per target), every candidate with ``(1 − ρ) · δ16(c) ≤ U_k`` of any target is re-verified in float32, and the
   top-k is taken from float32 distances only (``ρ ≥ 1``: every candidate is re-verified, a float32 sweep).

Why step 3 is exact when ``|δ16(c) − δ32(c)| ≤ ρ · δ16(c)`` for every candidate: an excluded ``c`` has
``δ32(c) ≥ (1 − ρ) · δ16(c) > U_k``, so the k best verified candidates beat every excluded one. Why relative:
bf16's largest errors are heavy-tailed and sit on a few tokens whose states are far from any target (massive
activations that bf16 rounding switches on or off; measured by ``bench/bench_screen_error.py``: errors of 20–140
at distances of 100–1000), so an absolute margin sized by them would re-verify the whole vocabulary, while the
*relative* error stays well below 1 away from the attention sink. The only assumption is that the largest
relative error over 𝒱 is at most ``safety`` times the largest one on the random calibration sample. That ratio
is *measured* with ``cross_check=True`` (the same sweep also run entirely in float32: ``ρ_full`` over every
candidate the screen could have excluded, and whether the screened top-k equals the float32 top-k), and callers
set ``safety`` from it (paper A: :func:`certify` measures the ratio on its cross-check sweeps first, then screens
the others with ``safety × max(1, measured ratio)``). ``screen=None`` sweeps in float32 (``ρ = 0``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from steerlimits.invert._forward import PrefixKV, TruncatedLM

__all__ = [
    "CertItem",
    "Prefixes",
    "Sweep",
    "bf16_copy",
    "certify",
    "relative_error",
    "screened_sweep",
    "sweep_distances",
]

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


def relative_error(d16: Tensor, d32: Tensor) -> Tensor:
    """``|d16 − d32| / d16`` elementwise (a screened distance of 0 counts as relative error 1: it excludes
    nothing)."""
    d16, d32 = d16.float(), d32.float()
    return torch.where(d16 > 0, (d16 - d32).abs() / d16.clamp_min(torch.finfo(torch.float32).tiny), 1.0)


@dataclass
class Sweep:
    """One target's result of a sweep: float32 top-k and what the screen did."""

    tokens: list[int]
    dists: list[float]
    n_screened: int  # bf16 evaluations (0: float32 sweep)
    n_verified: int  # float32 evaluations
    margin: float  # relative: safety x calibration error (0 for a float32 sweep; >= 1: every candidate verified)
    calib_error: float | None = None  # max |d16 - d32| / d16 on the random calibration sample
    safety: float | None = None
    full_error: float | None = None  # cross-check: max |d16 - d32| / d16 over every excludable candidate
    screen_topk_ok: bool | None = None  # cross-check: screened top-k == float32 top-k (tokens)
    wall_s: float = 0.0
    screenable: bool = True  # False: margin >= 1 without fallback; tokens/dists are the sample's, not certified


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
    fallback: bool = True,
) -> list[Sweep]:
    """Top-k per target ``targets (K, d)`` over ``candidates`` (default 𝒱) appended to the prefix ``kv32``.

    ``screen``: ``(bf16 TruncatedLM, its prefix cache of the same ids)``, or None for a float32 sweep.
    ``cross_check``: also sweep every candidate in float32 and record the largest screening error and whether
    the screened top-k is the float32 top-k (the returned top-k is then the float32 sweep's, which is exact).
    ``fallback=False``: when the margin is ``>= 1`` (bf16 cannot exclude anything here), return at once with
    ``screenable=False`` and the calibration sample's float32 top-k (not a certificate) instead of sweeping every
    candidate in float32.
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
    # 1. the random calibration sample first: its relative error sets the margin before the full screen is paid
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randperm(n, generator=gen)[: min(n_random, max(32, n // 16))].to(cands.device)
    d32_sample = sweep_distances(tl32, kv32, cands[sample], targets, batch_size)
    calib_rel = float(relative_error(sweep_distances(tl16, kv16, cands[sample], targets, batch_size), d32_sample).max())
    margin = safety * calib_rel
    if margin >= 1.0 and not fallback and not cross_check:  # unscreenable: the caller certifies elsewhere
        bar.close()
        out = []
        for j in range(n_targets):
            top = torch.topk(d32_sample[:, j], min(k, sample.numel()), largest=False)
            out.append(
                Sweep(
                    cands[sample[top.indices]].tolist(),
                    top.values.tolist(),
                    int(sample.numel()),
                    int(sample.numel()),
                    margin,
                    calib_rel,
                    safety,
                    wall_s=time.perf_counter() - start,
                    screenable=False,
                )
            )
        return out
    # 2. the full bf16 screen; the n_best per target are verified too
    d16 = sweep_distances(tl16, kv16, cands, targets, batch_size, bar)  # (n, K)
    bar.close()
    # cross-check: every candidate in float32 once; the screen's own float32 evaluations are then read from it
    full = sweep_distances(tl32, kv32, cands, targets, batch_size) if cross_check else None
    best = torch.topk(d16, min(n_best, n), dim=0, largest=False).indices.reshape(-1)
    best = torch.unique(best[~torch.isin(best, sample)])
    d32_best = full[best] if full is not None else sweep_distances(tl32, kv32, cands[best], targets, batch_size)
    calib = torch.cat([sample, best])
    d32_cal = torch.cat([d32_sample, d32_best.to(d32_sample.device)]).to(d16.device)
    # 3. every candidate whose lower bound (1 - margin) * d16 does not clear the k-th verified distance
    upper = torch.kthvalue(d32_cal, min(k, calib.numel()), dim=0).values  # (K,)
    need = (
        (d16 * (1.0 - margin) <= upper).any(dim=1)
        if margin < 1.0
        else torch.ones(n, dtype=torch.bool, device=d16.device)
    )
    need[calib] = False
    rest = need.nonzero().reshape(-1)
    idx = torch.cat([calib, rest])
    d32_rest = full[rest] if full is not None else sweep_distances(tl32, kv32, cands[rest], targets, batch_size)
    d32 = torch.cat([d32_cal, d32_rest.to(d16.device)])  # (m, K)
    full_rel = None
    if full is not None:  # every candidate the screen could have excluded (all but the n_best per target)
        excludable = torch.ones(n, dtype=torch.bool, device=d16.device)
        excludable[best] = False
        full_rel = float(relative_error(d16[excludable], full[excludable]).max()) if excludable.any() else 0.0
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
            calib_rel,
            safety,
            wall_s=time.perf_counter() - start,
        )
        if full is not None:
            ftop = torch.topk(full[:, j], k, largest=False)
            sw.full_error = full_rel
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
    ``positions``). ``alternates``: positions, in order of preference, that replace a position whose bf16 screen
    cannot exclude anything (``certify(..., swap=True)``); the swap is recorded."""

    key: tuple
    recovered: Sequence[int]
    target: Tensor
    positions: Sequence[int]
    tau: float
    cross_check: Sequence[int] = field(default_factory=tuple)
    alternates: Sequence[int] = field(default_factory=tuple)


@dataclass
class Certificate:
    """One (item, position) certificate: the float32 top-k over all of 𝒱 given the recovered prefix;
    ``swapped_from``: the scheduled position it replaces (its bf16 screen was unusable), else None."""

    item: CertItem
    position: int
    sweep: Sweep
    n_targets: int  # targets served by the same sweep
    swapped_from: int | None = None

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
    n_random: int = 1024,
    n_best: int = 64,
    seed: int = 0,
    screen_dtype: str = "bfloat16",
    screen_model: nn.Module | None = None,
    layers_path: str | None = None,
    swap: bool = False,
) -> tuple[list[Certificate], dict[str, Any]]:
    """Certified top-k per (item, position); one sweep of 𝒱 per distinct prefix ``ŝ_<t``.

    Sweeps named by any item's ``cross_check`` run first, screened *and* in float32; the largest ratio
    ``full_error / calib_error`` they show sets the safety of every other screened sweep to
    ``safety × max(1, ratio)``. With ``swap``, a screened sweep whose margin is ``>= 1`` (next to the attention
    sink, bf16 cannot exclude any token) is not run in float32: each of its positions moves to the item's next
    unused alternate (the last resort, with no alternate left, is the float32 sweep); items without alternates
    (riders on another item's prefix) are dropped with it. Returns the certificates and ``{"measured_ratio",
    "safety_used", "n_cross_checked", "swaps"}`` (``swaps``: ``{"key", "from", "to"}``, ``to`` None for a dropped
    rider).
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
    # pending sweeps: prefix -> [(item index, position, scheduled position it replaces or None)]; a swap that lands
    # on a prefix already swept opens a new pending sweep of it (rare: alternates are the item's own positions)
    groups: dict[tuple[int, ...], list[tuple[int, int, int | None]]] = {}
    checked: set[tuple[int, ...]] = set()
    used: list[set[int]] = [set(item.positions) for item in items]

    def schedule(i: int, t: int, replaces: int | None) -> None:
        item = items[i]
        if not 0 <= t < item.target.shape[0]:
            raise ValueError(f"certify: position {t} outside 0 … {item.target.shape[0] - 1} for {item.key}")
        prefix = tuple(int(x) for x in item.recovered[:t])
        groups.setdefault(prefix, []).append((i, t, replaces))

    for i, item in enumerate(items):
        for t in item.positions:
            schedule(i, t, None)
            if t in item.cross_check:
                checked.add(tuple(int(x) for x in item.recovered[:t]))
    ratio, safety_used = 0.0, safety
    out: list[Certificate] = []
    swaps: list[dict[str, Any]] = []
    crossed: set[tuple[int, ...]] = set()  # a prefix is cross-checked once, even if a swap sweeps it again
    bar = tqdm(desc=f"certify m={measure_at}", total=len(groups))
    while groups:
        prefix = min(groups, key=lambda p: (p not in checked, len(p), p))
        members = groups.pop(prefix)
        targets = torch.stack([items[i].target[t].float() for i, t, _ in members])  # (K, d)
        screen = None if p16 is None else (p16.tl, p16.get(prefix))
        cross = p16 is not None and prefix in checked and prefix not in crossed
        if cross:
            crossed.add(prefix)
        nexts = {i: next((a for a in items[i].alternates if a not in used[i]), None) for i, _, _ in members}
        movable = [i for i, _, _ in members if items[i].alternates]  # items without alternates ride along only
        may_swap = swap and not cross and bool(movable) and all(nexts[i] is not None for i in movable)
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
            fallback=not may_swap,
        )
        sw0 = sweeps[0]
        if not sw0.screenable:
            for i, t, replaces in members:
                alt = nexts[i]
                swaps.append({"key": list(items[i].key), "from": t, "to": alt})
                if alt is not None:  # else a rider: dropped with the position it rode on
                    used[i].add(alt)
                    schedule(i, alt, t if replaces is None else replaces)
            bar.total = bar.n + 1 + len(groups)
            logger.info(
                "prefix length %d: bf16 screen unusable (relative margin %.3g >= 1), %d position(s) swapped, %.1f s",
                len(prefix),
                sw0.margin,
                len(members),
                sw0.wall_s,
            )
            bar.update()
            continue
        if cross:
            for sw in sweeps:
                if sw.calib_error and sw.full_error is not None:
                    ratio = max(ratio, sw.full_error / sw.calib_error)
            safety_used = safety * max(1.0, ratio)
        for (i, t, replaces), sw in zip(members, sweeps):
            out.append(Certificate(items[i], t, sw, len(members), replaces))
        logger.info(
            "certified prefix length %d for %d target(s): relative margin %.3g, %d float32 evaluations%s, %.1f s",
            len(prefix),
            len(members),
            sw0.margin,
            sw0.n_verified,
            f", cross-check max relative error {max(s.full_error or 0 for s in sweeps):.3g} vs calibration "
            f"{sw0.calib_error:.3g}"
            if cross
            else "",
            sw0.wall_s,
        )
        bar.update()
    bar.close()
    return out, {
        "measured_ratio": ratio,
        "safety_used": safety_used,
        "n_cross_checked": len(crossed),
        "swaps": swaps,
    }
