"""E1/E2: sequential inversion of natural and steered states, with certificates (docs/paperA.md,
docs/concepts/inversion.md).

Per condition (natural, or ``α · v`` at the input of block ``l`` at every position) and prompt set:

* natural targets ``h^m(x)`` come from the engine's cached incremental path, token by token (the path the search
  scores candidates on, so a natural prompt can reach distance 0); steered targets ``h̃^m(x)`` (E1, cold start,
  E2) from one pass per prompt with the same shared-prefix attention (:meth:`TruncatedLM.extend_many`); the noise
  floor is ``‖full pass − incremental pass‖`` on the prompt itself, ``τ_exact = 10 · max_{t≥1} floor_t`` and, for
  the attention sink, ``τ_0 = 10 · floor_0`` (position 0 is reported apart);
* the template header shared by every prompt of the set (longest common prefix) has the same targets for all of
  them (causality), so it is inverted once and its recovered ids are the prefix of every prompt's own search;
* natural targets: ``mode="exhaustive"`` with early exit in :class:`~steerlimits.papera.ranking.DecoderRank`
  order, the gradient order computed only where the decoder's first ``precheck`` tokens hold no match (exact;
  all of 𝒱 is swept if ever needed); steered targets: ``mode="ranked"`` with ``n_candidates``
  verified candidates per position, the first being the natural inversion's token at that position (warm
  start: the minimum found is never worse than the prompt's own token, as in an exhaustive sweep);
* certificates are a separate pass (:func:`steerlimits.invert.certify`, called from :mod:`steerlimits.papera.e1`)
  over the recovered prefixes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from steerlimits.invert import InversionConfig, PositionResult, PrefixKV, TruncatedLM, invert
from steerlimits.papera.context import common_prefix_len
from steerlimits.papera.ranking import DecoderRank

__all__ = ["PromptRun", "SearchSetup", "invert_condition", "natural_states", "natural_states_many"]

logger = logging.getLogger(__name__)


@dataclass
class SearchSetup:
    """Shared search settings of one model × vector (``measure_at = inject_layer + 1``)."""

    measure_at: int
    inject_layer: int
    rank: DecoderRank
    n_candidates: int = 128
    batch_size: int = 1024
    top_k: int = 10
    screen_safety: float = 2.0
    seed: int = 0
    layers_path: str | None = None

    precheck: int = 32  # natural targets: decoder-ordered tokens verified before any gradient order

    def config(self, kind: str, tau: float) -> InversionConfig:
        common: dict[str, Any] = dict(
            measure_at=self.measure_at,
            batch_size=self.batch_size,
            top_k=self.top_k,
            tau_exact=tau,
            seed=self.seed,
            layers_path=self.layers_path,
            screen_safety=self.screen_safety,
        )
        if kind == "natural":  # the lazy ranking's head (precheck) is verified first, then batches from 32
            return InversionConfig(mode="exhaustive", early_exit=True, first_batch=32, **common)
        return InversionConfig(mode="ranked", n_candidates=self.n_candidates, early_exit=False, **common)


@dataclass
class PromptRun:
    """One prompt under one condition: recovered ids with a :class:`PositionResult` per absolute position."""

    prompt_index: int
    alpha: float
    ids: list[int]
    recovered: list[int]
    positions: list[PositionResult]
    floor: list[float]
    tau: float
    tau0: float
    delta_h: list[float]
    header_len: int
    target: Tensor  # (T, d) the searched target states
    recovered_to_natural: list[float] = field(default_factory=list)  # ‖h(ŝ)_t − h(x)_t‖
    recovered_to_target: list[float] = field(default_factory=list)  # ‖h(ŝ)_t − target_t‖
    wall_s: float = 0.0

    @property
    def exact_match(self) -> bool:
        return self.recovered == self.ids


@torch.no_grad()
def natural_states(
    model: nn.Module, ids: Sequence[int], measure_at: int, layers_path: str | None = None
) -> tuple[Tensor, Tensor]:
    """``(states (T, d), floor (T,))``: incremental-path natural states and ``‖full − incremental‖``."""
    tl = TruncatedLM(model, measure_at, layers_path)
    x = torch.as_tensor(list(ids), dtype=torch.long)
    incremental = tl.prefix_of(x)[1]
    full = tl.full(input_ids=x[None])[0]
    return incremental, torch.linalg.vector_norm(full - incremental, dim=-1)


@torch.no_grad()
def natural_states_many(
    model: nn.Module, prompts: Sequence[Sequence[int]], measure_at: int, layers_path: str | None = None
) -> dict[int, tuple[Tensor, Tensor]]:
    """:func:`natural_states` of every prompt, the shared template header's incremental pass computed once: the
    same operations in the same order as token by token from the start, so the states are identical."""
    tl = TruncatedLM(model, measure_at, layers_path)
    header = common_prefix_len(prompts)
    kv, head_states = tl.prefix_of(torch.as_tensor(list(prompts[0][:header]), dtype=torch.long))
    out = {}
    for i, ids in enumerate(prompts):
        prefix, states = kv, [head_states]
        for token in list(ids)[header:]:
            prefix, state = tl.extend(prefix, int(token))
            states.append(state[None])
        incremental = torch.cat(states)
        full = tl.full(input_ids=torch.as_tensor([list(ids)], dtype=torch.long))[0]
        out[i] = (incremental, torch.linalg.vector_norm(full - incremental, dim=-1))
    return out


def _shift(results: Sequence[PositionResult], offset: int) -> list[PositionResult]:
    return [replace(p, position=p.position + offset) for p in results]


def _search(
    model: nn.Module,
    target: Tensor,
    setup: SearchSetup,
    kind: str,
    tau: float,
    prefix: Sequence[int],
    floor: Tensor,
    rank: DecoderRank,
    cache: PrefixKV | None = None,
) -> tuple[list[int], list[PositionResult]]:
    """One :func:`~steerlimits.invert.invert` call over ``target (T, d)`` after ``prefix`` (whose key/value cache
    ``cache`` may be given); natural targets use the lazy ranking (gradient order only where the decoder's first
    ``precheck`` tokens miss)."""
    rk = rank.lazy(setup.precheck) if kind == "natural" and setup.precheck > 0 else rank
    res = invert(
        model,
        target,
        setup.config(kind, tau),
        prefix_ids=torch.tensor(list(prefix), dtype=torch.long),
        floor=floor,
        rank_fn=rk,
        progress=False,
        prefix_cache=cache,
    )
    return list(res.ids), list(res.positions)


@torch.no_grad()
def _steered_targets(
    model: nn.Module, prompts: Sequence[Sequence[int]], setup: SearchSetup, vector: Tensor, alpha: float
) -> list[Tensor]:
    """Steered target states ``(T, d)`` of each prompt: one pass per prompt over its tokens with the shared-prefix
    attention (:meth:`TruncatedLM.extend_many`), steering ``alpha · vector`` at the input of block
    ``inject_layer`` at every position; every steered target (E1, cold start, E2) comes from this one path."""
    from steerlimits import hooks

    tl = TruncatedLM(model, setup.measure_at, setup.layers_path)
    with hooks.add_vector(model, setup.inject_layer, vector, alpha, positions="all", layers_path=setup.layers_path):
        return [tl.extend_many(PrefixKV(), torch.as_tensor(list(ids), dtype=torch.long))[1] for ids in prompts]


def invert_condition(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    setup: SearchSetup,
    *,
    vector: Tensor | None = None,
    alpha: float = 0.0,
    natural: Mapping[int, tuple[Tensor, Tensor]] | None = None,
    warm: Mapping[int, Sequence[int]] | None = None,
) -> list[PromptRun]:
    """Invert every prompt of ``prompts`` under one condition (natural when ``alpha == 0``).

    Parameters
    ----------
    natural
        ``prompt index -> (natural states (T, d), floor (T,))`` (from :func:`natural_states`); computed when
        missing. The floor and τ of a prompt are those of its natural pass in every condition.
    warm
        ``prompt index -> tokens (T,)`` tried first at each position of a steered search (the natural
        inversion's recovered ids); ignored for natural targets.
    """
    kind = "natural" if (vector is None or alpha == 0.0) else "steered"
    m, lp = setup.measure_at, setup.layers_path
    natural = dict(natural or {})
    for i, ids in enumerate(prompts):
        if i not in natural:
            natural[i] = natural_states(model, ids, m, lp)
    if kind == "natural":
        targets = [natural[i][0] for i in range(len(prompts))]
    else:
        assert vector is not None
        targets = _steered_targets(model, prompts, setup, vector, alpha)
    floors = [natural[i][1] for i in range(len(prompts))]
    taus = [10.0 * float(f[1:].max()) if f.numel() > 1 else 10.0 * float(f[0]) for f in floors]

    def rank_for(i: int) -> DecoderRank:
        if kind == "natural" or warm is None:
            return setup.rank
        return setup.rank.with_warm({t: [int(tok)] for t, tok in enumerate(warm[i])})

    header = common_prefix_len(prompts)
    start = time.perf_counter()
    shared: list[PositionResult] = []
    prefix: list[int] = []
    for lo, hi in ((0, min(header, 1)), (1, header)):  # the sink alone (its own, larger floor), then the rest
        if hi <= lo:
            continue
        hdr_floor = floors[0][lo:hi]
        ids, positions = _search(
            model, targets[0][lo:hi], setup, kind, 10.0 * float(hdr_floor.max()), prefix, hdr_floor, rank_for(0)
        )
        prefix += ids
        shared += _shift(positions, lo)
    with torch.no_grad():  # the recovered header's cache, built once on the incremental path, reused per prompt
        cache = TruncatedLM(model, m, lp).prefix_of(torch.as_tensor(prefix, dtype=torch.long))[0]
    shared_s = time.perf_counter() - start
    runs = []
    for i, ids in enumerate(prompts):
        start = time.perf_counter()
        _, own = _search(
            model, targets[i][header:], setup, kind, taus[i], prefix, floors[i][header:], rank_for(i), cache
        )
        positions = shared + _shift(own, header)
        tau_i, tau0_i = taus[i], 10.0 * float(floors[i][0])
        positions = [replace(p, exact=p.topk_dist[0] <= (tau0_i if p.position == 0 else tau_i)) for p in positions]
        delta = torch.linalg.vector_norm(targets[i] - natural[i][0], dim=-1)
        recovered = [p.chosen_token for p in positions]
        if recovered == list(ids):
            rec_states = natural[i][0]
        else:
            with torch.no_grad():
                rec_states = TruncatedLM(model, m, lp).extend_many(PrefixKV(), torch.as_tensor(recovered))[1]
        run = PromptRun(
            prompt_index=i,
            alpha=alpha if kind == "steered" else 0.0,
            ids=list(ids),
            recovered=recovered,
            positions=positions,
            floor=floors[i].tolist(),
            tau=tau_i,
            tau0=tau0_i,
            delta_h=delta.tolist(),
            header_len=header,
            target=targets[i],
            recovered_to_natural=torch.linalg.vector_norm(rec_states - natural[i][0], dim=-1).tolist(),
            recovered_to_target=torch.linalg.vector_norm(rec_states - targets[i], dim=-1).tolist(),
            wall_s=time.perf_counter() - start + shared_s / len(prompts),
        )
        logger.info(
            "%s alpha=%g prompt %d: %d/%d tokens recovered, exact match %s, median top-1 (t>=1) %.4g "
            "(tau %.3g), %.1f s",
            kind,
            alpha,
            i,
            sum(a == b for a, b in zip(run.recovered, run.ids)),
            len(ids),
            run.exact_match,
            float(torch.tensor([p.topk_dist[0] for p in positions[1:]]).median()),
            tau_i,
            run.wall_s,
        )
        runs.append(run)
    return runs
