"""Sequential (SipIt-style) prompt inversion with per-position certificates (docs/concepts/inversion.md).

Per position ``t`` the key/value cache of the tokens chosen so far ``ŝ_<t`` is built once (:class:`PrefixKV`),
candidates ``c`` are scored in batches through blocks ``0 … m-1`` only, and the distance
``δ_t(c) = ‖h^m_t(ŝ_<t, c) − target_t‖₂`` is kept for every verified candidate; the top-1 is appended.

* ``mode="ranked"``: ``n_candidates`` tokens in the order of a gradient ranking (below), verified exactly,
  stopping early once the best distance is ``<= tau_exact``.
* ``mode="exhaustive"``: the whole vocabulary is swept; the position is *certified*: the minimum over 𝒱 given
  ``ŝ_<t`` (not over all sequences); with ``early_exit`` a position stops at the first batch (ranked order,
  batches ramping up from 32) that reaches ``tau_exact``: exact, but then not certified. With
  ``screen_dtype="bfloat16"`` a bf16 copy screens 𝒱 and every candidate that a relative margin cannot exclude
  is re-verified in float32 (:mod:`steerlimits.invert.screen`, the one certifier: ``ρ = screen_safety ×`` the
  largest ``|δ_bf16 − δ_fp32| / δ_bf16`` on a random calibration sample); ρ is stored with the certificate.

Gradient ranking (``grad_steps = 0``, the default; first-order, as GCG's one-hot gradients): with
``L(e) = ‖h^m_t(ŝ_<t, e) − target_t‖²`` for a continuous input embedding ``e`` at ``t``, order 1 sorts
tokens by ``∇L(ē) · E_c`` (linearised at the mean embedding ``ē``, i.e. the one-hot gradient at the uniform
mixture) and order 2 by ``Σ_a ĝ_a · E_c``, the sum of unit gradients at ``ē`` and at ``rank_anchors`` seeded
token embeddings; the two orders are interleaved (a token's place is about twice its better rank). With
``grad_steps > 0`` instead, ``e`` is optimised by Adam from ``ē`` and tokens are ordered by ``‖E_c − e‖₂``.
Measured on SmolLM2-135M (two natural templated prompts, ``m = 16``, positions ≥ 2): the true token is among
the first 32 candidates at 61 of 75 positions and the first 168 at all (order 1 alone: worst 563); the
attention-sink start (positions 0–1, no prefix) ranks beyond 6,000 with every variant tried, and the Adam
variant was worse everywhere. So ranked mode with 128 candidates does not guarantee exact natural recovery
on real models; ``mode="exhaustive"`` with ``early_exit`` does, at the cost of a few batches per position (a
full sweep at the sink).

Noise floor (D3): ``floor_t = ‖full pass − cached incremental pass‖`` on the same ids; ``tau_exact`` defaults
to ``10 × max_t floor_t`` measured on ``floor_ids`` (the ids that produced the target, when the caller has
them) or else on a seeded random probe of the same length.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from steerlimits import hooks
from steerlimits.invert._forward import PrefixKV, TruncatedLM, embedding_matrix
from steerlimits.invert.screen import bf16_copy, screened_sweep

__all__ = [
    "InversionConfig",
    "InversionResult",
    "PositionResult",
    "RankFn",
    "exhaustive_sweep",
    "gradient_order",
    "invert",
    "noise_floor",
    "target_states",
]

logger = logging.getLogger(__name__)


@dataclass
class InversionConfig:
    """Every knob of :func:`invert`; the defaults are the project's (docs/concepts/inversion.md)."""

    measure_at: int  # hidden_states index m (= inject layer l + 1): output of block m-1
    mode: Literal["ranked", "exhaustive"] = "ranked"
    n_candidates: int = 128  # verified candidates per position in ranked mode
    batch_size: int = 1024
    top_k: int = 10
    grad_steps: int = 0  # 0: first-order ranking (below); >0: Adam steps on e, rank tokens by L2 to e
    rank_anchors: int = 8  # token embeddings (seeded) whose gradients form the second first-order order
    grad_lr: float = 0.1  # Adam step size in units of the embedding table's standard deviation
    tau_exact: float | None = None  # absolute; None: 10 x measured noise floor (max over positions)
    early_exit: bool = True  # stop verifying at a position once the best distance <= tau_exact
    first_batch: int = 32  # early exit: size of the first verified batch (it doubles up to batch_size)
    screen_dtype: Literal["float32", "bfloat16"] = "float32"  # bf16 screen (exhaustive; no early exit)
    screen_safety: float = 2.0  # the measured relative bf16-fp32 error is multiplied by this
    seed: int = 0
    layers_path: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("ranked", "exhaustive"):
            raise ValueError(f"mode must be 'ranked' or 'exhaustive', got {self.mode!r}")
        if self.screen_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"screen_dtype must be 'float32' or 'bfloat16', got {self.screen_dtype!r}")
        if self.screen_dtype == "bfloat16" and self.mode != "exhaustive":
            raise ValueError("screen_dtype='bfloat16' is only defined for mode='exhaustive'")
        for name in ("n_candidates", "batch_size", "top_k", "first_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.grad_steps < 0 or self.rank_anchors < 0:
            raise ValueError(f"grad_steps and rank_anchors must be >= 0, got {self.grad_steps}, {self.rank_anchors}")


@dataclass
class PositionResult:
    """One position: top-k (token, distance) among the verified candidates, and what was established."""

    position: int
    chosen_token: int
    topk_tokens: list[int]
    topk_dist: list[float]
    n_verified: int  # float32 exact evaluations
    certified: bool  # all of 𝒱 covered: topk_dist[0] is the minimum over 𝒱 given ŝ_<t (bf16: given margin)
    exact: bool  # topk_dist[0] <= tau_exact
    n_screened: int = 0  # bf16 screening evaluations
    screen_margin: float | None = None  # relative bf16-fp32 margin used (calibration max x screen_safety)
    screen_calib_error: float | None = None  # max |d_bf16 - d_fp32| / d_bf16 on the random calibration sample
    screen_full_error: float | None = None  # cross-check: the same over every excludable candidate
    screen_topk_ok: bool | None = None  # cross-check: the screened top-k equals the float32 top-k
    wall_s: float = 0.0


@dataclass
class InversionResult:
    """Recovered ids (positions after ``prefix_ids``) with per-position certificates and provenance."""

    ids: list[int]
    positions: list[PositionResult]
    noise_floor: list[float]  # per position, on the ids named by floor_source
    tau_exact: float
    floor_source: Literal["floor_ids", "probe", "given"]  # tau_exact = 10 x max floor unless config.tau_exact
    n_verified_total: int
    vocab_size: int
    wall_s: float
    config: InversionConfig
    prefix_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------- states and floors
def _ids_1d(ids: Tensor | list[int], device: torch.device) -> Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1:
        raise ValueError(f"ids must have shape (T,) or (1, T), got {tuple(ids.shape)}")
    return ids


@torch.no_grad()
def target_states(
    model: nn.Module,
    ids: Tensor,
    measure_at: int,
    *,
    vector: Tensor | None = None,
    alpha: float = 0.0,
    inject_layer: int | None = None,
    layers_path: str | None = None,
) -> Tensor:
    """States ``(T, d)`` at ``hidden_states[measure_at]`` by the cached incremental path the search uses.

    Natural (``alpha = 0`` or no vector) or steered: ``alpha · vector`` added at the input of block
    ``inject_layer`` (default ``measure_at - 1``) at every position, via :func:`steerlimits.hooks.add_vector`.
    """
    tl = TruncatedLM(model, measure_at, layers_path)
    ids = _ids_1d(ids, tl.device)
    if vector is None or alpha == 0.0:
        return tl.prefix_of(ids)[1]
    layer = measure_at - 1 if inject_layer is None else inject_layer
    if not 0 <= layer < measure_at:
        raise ValueError(f"inject_layer={layer} must be < measure_at={measure_at} to affect the measured state")
    with hooks.add_vector(model, layer, vector, alpha, positions="all", layers_path=layers_path):
        return tl.prefix_of(ids)[1]


@torch.no_grad()
def noise_floor(model: nn.Module, ids: Tensor, measure_at: int, layers_path: str | None = None) -> Tensor:
    """``(T,)``: ``‖full-sequence pass − cached incremental pass‖₂`` per position on the same ``ids``."""
    tl = TruncatedLM(model, measure_at, layers_path)
    ids = _ids_1d(ids, tl.device)
    full = tl.full(input_ids=ids[None])[0]
    return torch.linalg.vector_norm(full - tl.prefix_of(ids)[1], dim=-1)


# ------------------------------------------------------------------------------------------------ searching
#: Candidate order hook of :func:`invert`: ``(tl, prefix, target_t (d,), config) -> (V,)`` token ids, most
#: promising first (default :func:`gradient_order`). A rank function may also have a method
#: ``head(tl, prefix, target_t, config) -> (k,)``: a cheap first few candidates. With early exit the engine verifies
#: the head first (one batch) and computes the full order only if no head candidate is within ``tau_exact``.
RankFn = Callable[[TruncatedLM, PrefixKV, Tensor, InversionConfig], Tensor]


def gradient_order(tl: TruncatedLM, prefix: PrefixKV, target_t: Tensor, config: InversionConfig) -> Tensor:
    """All token ids ``(V,)``, most promising first (the default :data:`RankFn`, module docstring)."""
    return _rank(tl, prefix, target_t, config)


def _rank(tl: TruncatedLM, prefix: PrefixKV, target_t: Tensor, config: InversionConfig) -> Tensor:
    """All token ids ``(V,)``, most promising first (see module docstring)."""
    table = embedding_matrix(tl.model).detach()
    mean = table.mean(0, keepdim=True)
    if config.grad_steps == 0:
        gen = torch.Generator().manual_seed(config.seed)
        anchors = table[torch.randperm(table.shape[0], generator=gen)[: config.rank_anchors].to(table.device)]
        points = torch.cat([mean, anchors]).requires_grad_(True)
        with torch.enable_grad():
            loss = (tl.step(prefix, inputs_embeds=points)[0] - target_t).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, points)  # rows are independent: per-point gradients
        first = torch.argsort(table @ grad[0])
        if config.rank_anchors == 0:
            return first
        unit = grad / grad.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
        second = torch.argsort(table @ unit.sum(0))
        ranks = torch.empty((2, table.shape[0]), dtype=torch.long, device=table.device)
        positions = torch.arange(table.shape[0], device=table.device)
        ranks[0, first], ranks[1, second] = positions, positions
        key = 2 * ranks.min(0).values + (ranks[1] < ranks[0]).long()  # interleave the two orders
        return torch.argsort(key, stable=True)
    e = mean.clone().requires_grad_(True)
    opt = torch.optim.Adam([e], lr=config.grad_lr * float(table.std()))
    with torch.enable_grad():
        for _ in range(config.grad_steps):
            loss = (tl.step(prefix, inputs_embeds=e)[0][0] - target_t).pow(2).sum()
            (e.grad,) = torch.autograd.grad(loss, e)  # never accumulates into the model's parameters
            opt.step()
    return torch.argsort(torch.linalg.vector_norm(table - e.detach(), dim=-1))


def _chunks(n: int, batch_size: int, ramp: bool, first: int = 32) -> list[tuple[int, int]]:
    """Batch bounds; with ``ramp`` the sizes grow ``first``, 2·first, … up to ``batch_size`` (early exit usually
    comes in the first batches of a ranked order, so small first batches save most of the work)."""
    bounds, start, size = [], 0, min(first, batch_size) if ramp else batch_size
    while start < n:
        bounds.append((start, min(start + size, n)))
        start, size = start + size, min(2 * size, batch_size)
    return bounds


@torch.no_grad()
def _distances(
    tl: TruncatedLM,
    prefix: PrefixKV,
    target_t: Tensor,
    cands: Tensor,
    batch_size: int,
    bar: Any = None,
    tau: float | None = None,
    first: int = 32,
    best_kv: dict[str, Any] | None = None,
) -> tuple[Tensor, int]:
    """Distances ``(n,)`` for ``cands`` (inf where not evaluated) and the number evaluated; with ``tau`` the
    batches ramp up from ``first`` and stop after the first batch whose minimum is ``<= tau``. With ``best_kv``
    (a dict, filled in) the keys/values of the best candidate so far are kept from the scoring passes themselves,
    so appending it to the prefix needs no further forward."""
    dist = torch.full((cands.numel(),), float("inf"), device=target_t.device)
    done = 0
    for lo, hi in _chunks(cands.numel(), batch_size, ramp=tau is not None, first=first):
        out, call = tl.step(prefix, input_ids=cands[lo:hi], record=best_kv is not None)
        dist[lo:hi] = torch.linalg.vector_norm(out.to(target_t.dtype) - target_t, dim=-1)
        if best_kv is not None:
            j = int(torch.argmin(dist[lo:hi]))
            if float(dist[lo + j]) < best_kv.get("dist", float("inf")):
                best_kv.update(
                    dist=float(dist[lo + j]),
                    token=int(cands[lo + j]),
                    keys=[call.new_keys[b][j].clone() for b in sorted(call.new_keys)],
                    values=[call.new_values[b][j].clone() for b in sorted(call.new_values)],
                )
        done = hi
        if bar is not None:
            bar.update(hi - lo)
        if tau is not None and float(dist[lo:hi].min()) <= tau:
            break
    return dist, done


def _top(cands: Tensor, dist: Tensor, k: int) -> tuple[list[int], list[float]]:
    k = min(k, int(torch.isfinite(dist).sum()))
    best = torch.topk(dist, k, largest=False)
    return cands[best.indices].tolist(), best.values.tolist()


def _search_position(
    t: int,
    tl: TruncatedLM,
    prefix: PrefixKV,
    target_t: Tensor,
    config: InversionConfig,
    tau: float,
    screen: tuple[TruncatedLM, PrefixKV] | None,
    progress: bool,
    rank_fn: RankFn | None = None,
) -> tuple[PositionResult, tuple[list[Tensor], list[Tensor]] | None]:
    """One position: its result and, when the chosen token was scored on the float32 path, its recorded
    keys/values (so the prefix grows without another forward)."""
    start = time.perf_counter()
    vocab = tl.vocab_size
    exhaustive = config.mode == "exhaustive"
    n = vocab if exhaustive else min(config.n_candidates, vocab)
    with tqdm(total=n, desc=f"position {t}", disable=not (progress and exhaustive), leave=False) as bar:
        if screen is not None:
            return _screened_position(t, tl, prefix, target_t, config, tau, screen, bar, start), None
        best_kv: dict[str, Any] = {}
        head_fn = getattr(rank_fn, "head", None) if config.early_exit else None
        head = head_fn(tl, prefix, target_t, config) if head_fn is not None else None
        if head is not None and head.numel():  # a cheap head of the order, verified before the full order exists
            head = head[:n].to(tl.device)
            dist, done = _distances(tl, prefix, target_t, head, head.numel(), bar, best_kv=best_kv)
            order = head
            if float(dist.min()) > tau and head.numel() < n:
                rest = (rank_fn or _rank)(tl, prefix, target_t, config)
                rest = rest[~torch.isin(rest, head.to(rest.device))][: n - head.numel()].to(tl.device)
                d_rest, done_rest = _distances(
                    tl, prefix, target_t, rest, config.batch_size, bar, tau, first=config.first_batch, best_kv=best_kv
                )
                order, dist, done = torch.cat([head, rest]), torch.cat([dist, d_rest]), done + done_rest
        else:
            if exhaustive and not config.early_exit:
                order = torch.arange(vocab, device=tl.device)
            else:
                order = (rank_fn or _rank)(tl, prefix, target_t, config)[:n]
            dist, done = _distances(
                tl,
                prefix,
                target_t,
                order,
                config.batch_size,
                bar,
                tau if config.early_exit else None,
                first=config.first_batch,
                best_kv=best_kv,
            )
    tokens, dists = _top(order, dist, config.top_k)
    res = PositionResult(
        position=t,
        chosen_token=tokens[0],
        topk_tokens=tokens,
        topk_dist=dists,
        n_verified=done,
        certified=done == vocab,
        exact=dists[0] <= tau,
        wall_s=time.perf_counter() - start,
    )
    return res, ((best_kv["keys"], best_kv["values"]) if best_kv.get("token") == tokens[0] else None)


def _screened_position(
    t: int,
    tl: TruncatedLM,
    prefix: PrefixKV,
    target_t: Tensor,
    config: InversionConfig,
    tau: float,
    screen: tuple[TruncatedLM, PrefixKV],
    bar: Any,
    start: float,
) -> PositionResult:
    """bf16 screen of 𝒱, then float32 re-verification of every candidate the margin cannot exclude
    (:func:`steerlimits.invert.screen.screened_sweep`, the one certifier)."""
    sw = screened_sweep(
        tl,
        prefix,
        target_t[None],
        screen=screen,
        top_k=config.top_k,
        safety=config.screen_safety,
        batch_size=config.batch_size,
        seed=config.seed + t,
    )[0]
    bar.update(tl.vocab_size)
    return PositionResult(
        position=t,
        chosen_token=sw.tokens[0],
        topk_tokens=sw.tokens,
        topk_dist=sw.dists,
        n_verified=sw.n_verified,
        certified=True,
        exact=sw.dists[0] <= tau,
        n_screened=sw.n_screened,
        screen_margin=sw.margin,
        screen_calib_error=sw.calib_error,
        wall_s=time.perf_counter() - start,
    )


@torch.no_grad()
def exhaustive_sweep(
    model: nn.Module,
    prefix_ids: Tensor,
    target_t: Tensor,
    measure_at: int,
    *,
    candidate_ids: Tensor | None = None,
    batch_size: int = 1024,
    top_k: int = 10,
    layers_path: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Fast counterpart of :func:`steerlimits.invert.reference_sweep`: top-k ``(tokens, distances)`` over
    ``candidate_ids`` (default 𝒱) appended to ``prefix_ids (P,)`` (``P = 0`` allowed), via the cached path."""
    tl = TruncatedLM(model, measure_at, layers_path)
    prefix, _ = tl.prefix_of(_ids_1d(prefix_ids, tl.device))
    if candidate_ids is None:
        cands = torch.arange(tl.vocab_size, device=tl.device)
    else:
        cands = candidate_ids.to(tl.device).reshape(-1)
    dist, _ = _distances(tl, prefix, target_t.to(tl.device, tl.dtype), cands, batch_size)
    tokens, dists = _top(cands, dist, top_k)
    return torch.tensor(tokens), torch.tensor(dists)


def invert(
    model: nn.Module,
    target: Tensor,
    config: InversionConfig,
    *,
    prefix_ids: Tensor | None = None,
    floor_ids: Tensor | None = None,
    progress: bool = True,
    rank_fn: RankFn | None = None,
    floor: Tensor | None = None,
    prefix_cache: PrefixKV | None = None,
) -> InversionResult:
    """Invert ``target (T, d)`` (states at ``hidden_states[config.measure_at]``) position by position.

    Parameters
    ----------
    prefix_ids
        ``(P,)`` fixed tokens before the first inverted position (BOS or a template header); ``target`` covers
        the ``T`` positions after it.
    floor_ids
        ``(T,)`` ids on which the noise floor is measured (those that produced ``target``); default: a random
        probe drawn with ``config.seed``. Ignored for ``tau_exact`` when ``config.tau_exact`` is set (the
        floor is still measured and stored).
    floor
        ``(T,)`` noise floor already measured by the caller on the ids that produced ``target`` (e.g. once per
        prompt, shared by several calls); skips the measurement (``floor_source = "given"``).
    rank_fn
        Candidate order per position (ranked mode, and exhaustive mode with ``early_exit``); default
        :func:`gradient_order`. Exhaustive certificates do not depend on it (all of 𝒱 is swept).
    prefix_cache
        The key/value cache of ``prefix_ids`` already built by the caller on this model's incremental path
        (:meth:`TruncatedLM.prefix_of`), reused instead of rebuilding it (several searches after one header).
    """
    start = time.perf_counter()
    tl = TruncatedLM(model, config.measure_at, config.layers_path)
    target = target.detach().to(tl.device, tl.dtype)
    if target.ndim != 2:
        raise ValueError(f"target must have shape (T, d_model), got {tuple(target.shape)}")
    prefix_ids = _ids_1d([] if prefix_ids is None else prefix_ids, tl.device)
    n_pos = target.shape[0]
    source: Literal["floor_ids", "probe", "given"]
    if floor is not None:  # measured by the caller on the ids that produced the target
        floor = torch.as_tensor(floor, dtype=torch.float32).reshape(-1)
        if floor.numel() != n_pos:
            raise ValueError(f"floor has {floor.numel()} entries, target has {n_pos} positions")
        source = "given"
    else:
        if floor_ids is None:
            gen = torch.Generator().manual_seed(config.seed)
            probe = torch.randint(0, tl.vocab_size, (n_pos,), generator=gen).to(tl.device)
        else:
            probe = _ids_1d(floor_ids, tl.device)
        floor = noise_floor(model, torch.cat([prefix_ids, probe]), config.measure_at, config.layers_path)
        floor = floor[prefix_ids.numel() :]
        source = "probe" if floor_ids is None else "floor_ids"
    tau = float(config.tau_exact) if config.tau_exact is not None else 10.0 * float(floor.max())

    if prefix_cache is not None and prefix_cache.length != prefix_ids.numel():
        raise ValueError(f"prefix_cache covers {prefix_cache.length} tokens, prefix_ids has {prefix_ids.numel()}")
    with torch.no_grad():
        prefix = prefix_cache if prefix_cache is not None else tl.prefix_of(prefix_ids)[0]
    screen = None
    if config.mode == "exhaustive" and config.screen_dtype == "bfloat16":
        screen_tl = TruncatedLM(bf16_copy(model), config.measure_at, config.layers_path)
        with torch.no_grad():
            screen = (screen_tl, screen_tl.prefix_of(prefix_ids)[0])
    positions: list[PositionResult] = []
    for t in tqdm(range(n_pos), desc="inverting", disable=not progress):
        pos, kv = _search_position(t, tl, prefix, target[t], config, tau, screen, progress, rank_fn)
        positions.append(pos)
        with torch.no_grad():
            prefix = tl.append(prefix, *kv) if kv is not None else tl.extend(prefix, pos.chosen_token)[0]
            if screen is not None:
                screen = (screen[0], screen[0].extend(screen[1], pos.chosen_token)[0])
        logger.info(
            "position %d: token %d, best %.3g (tau %.3g), %d verified%s",
            t,
            pos.chosen_token,
            pos.topk_dist[0],
            tau,
            pos.n_verified,
            ", certified" if pos.certified else "",
        )
    return InversionResult(
        ids=[p.chosen_token for p in positions],
        positions=positions,
        noise_floor=floor.tolist(),
        tau_exact=tau,
        floor_source=source,
        n_verified_total=sum(p.n_verified for p in positions),
        vocab_size=tl.vocab_size,
        wall_s=time.perf_counter() - start,
        config=config,
        prefix_ids=prefix_ids.tolist(),
    )
