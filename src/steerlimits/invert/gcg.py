"""GCG-style whole-sequence activation matching (after arXiv 2307.15043 and nanoGCG; docs/concepts/inversion.md).

Searched ids ``s`` sit between fixed ``prefix_ids`` and fixed ``suffix_ids``; the loss is
``Σ_t w_t ‖h^m_t(prefix, s, suffix) − target_t‖²`` over the positions after the prefix (``target_mask`` gives
``w_t``). One step:

1. the gradient of the loss with respect to the one-hot matrix of the current best ``s`` gives, per slot, the
   ``topk`` tokens with the most negative gradient (tokens outside ``allowed`` never qualify);
2. ``search_width`` candidates, each changing ``r`` distinct random slots (``r`` uniform in 1 … ``n_replace``)
   to a random one of that slot's top-k (nanoGCG's multi-position swaps, mixed with single swaps so that a
   single wrong slot can still be fixed);
3. candidates that do not survive ``keep`` are dropped (nanoGCG's ``filter_ids``: the searched ids must
   round-trip through decode → encode, so the result is a prompt a user could type), as are duplicates;
4. every candidate's loss is computed exactly, in batches, through blocks ``0 … m-1`` only, with the prefix's
   key/value cache shared by all rows (:meth:`TruncatedLM.run`); with a bf16 ``screen_model`` the candidates
   are screened in bf16 and the ``n_verify`` best are re-scored in float32 (all reported losses are float32);
5. the best candidate enters a buffer of the ``buffer_size`` best sequences seen (nanoGCG's attack buffer); the
   next step starts from the buffer's best (``buffer_size = 0``: from the step's best candidate, as the original
   GCG, even when it is worse).

Features and their sources: one-hot gradients and sampled swaps (GCG, Zou et al. 2023); multi-position swaps,
the round-trip filter, the buffer and the prefix cache (nanoGCG); truncation after the measurement block and bf16
screening (this project). ``stop_loss`` ends the search once a float32 loss is at or below it (a reachable
target reached), ``stop_fraction`` once it is at or below that fraction of the initial loss.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from steerlimits.invert._forward import PrefixKV, TruncatedLM, embedding_matrix

__all__ = ["GCGConfig", "GCGResult", "allowed_tokens", "gcg", "gcg_search", "roundtrip_filter"]

logger = logging.getLogger(__name__)

KeepFn = Callable[[Tensor], Tensor]  # (B, T) candidate ids -> (B,) bool


@dataclass(frozen=True)
class GCGConfig:
    """Every knob of :func:`gcg`; defaults are nanoGCG's where it has one."""

    n_steps: int = 250
    search_width: int = 512
    topk: int = 256
    n_replace: int = 1  # at most this many slots changed per candidate (uniform in 1 … n_replace)
    buffer_size: int = 1  # best sequences kept; the search continues from the best (0: from the step's best)
    batch_size: int = 256  # candidates per forward
    n_verify: int = 8  # bf16 screen: candidates re-scored in float32 per step
    stop_loss: float | None = None  # stop once the float32 loss is <= this
    stop_fraction: float | None = None  # stop once the float32 loss is <= this fraction of the initial loss
    seed: int = 0
    layers_path: str | None = None

    def __post_init__(self) -> None:
        for name in ("search_width", "topk", "n_replace", "batch_size", "n_verify"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_steps < 0 or self.buffer_size < 0:
            raise ValueError("n_steps and buffer_size must be >= 0")


@dataclass
class GCGResult:
    """``losses[i]``: float32 loss of step ``i``'s best candidate (``losses[0]``: the initial sequence);
    ``best_losses[i]``: the best loss seen up to step ``i`` (non-increasing)."""

    best_ids: list[int]
    best_loss: float
    losses: list[float]
    best_losses: list[float]
    init_ids: list[int]
    init_loss: float
    n_evaluated: int  # float32 candidate evaluations
    n_screened: int = 0  # bf16 candidate evaluations
    n_filtered: int = 0  # candidates dropped by ``keep``
    n_steps_run: int = 0
    wall_s: float = 0.0
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def returned_init(self) -> bool:
        """True when no step improved on the initial sequence."""
        return self.best_ids == self.init_ids

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "returned_init": self.returned_init}


def allowed_tokens(tok: Any, vocab_size: int, ascii_only: bool = True) -> Tensor:
    """``(V,)`` bool: tokens a searched slot may take: not special, non-empty, (ASCII printable), and
    round-tripping alone (``encode(decode([t])) == [t]``) — nanoGCG's ``not_allowed_ids`` plus the round trip."""
    n = min(vocab_size, len(tok))
    texts = tok.batch_decode([[i] for i in range(n)], clean_up_tokenization_spaces=False)
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    special = {int(i) for i in tok.all_special_ids}
    special |= {int(i) for i, t in getattr(tok, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    ok = torch.zeros(vocab_size, dtype=torch.bool)
    for i, (text, e) in enumerate(zip(texts, enc)):
        ok[i] = (
            bool(text) and e == [i] and i not in special and (not ascii_only or (text.isascii() and text.isprintable()))
        )
    return ok


def roundtrip_filter(tok: Any) -> KeepFn:
    """nanoGCG's ``filter_ids``: keep candidates whose searched ids survive decode → encode unchanged."""

    def keep(ids: Tensor) -> Tensor:
        texts = tok.batch_decode(ids.tolist(), clean_up_tokenization_spaces=False)
        enc = tok(texts, add_special_tokens=False)["input_ids"]
        return torch.tensor([e == row for e, row in zip(enc, ids.tolist())], dtype=torch.bool)

    return keep


class _Scorer:
    """Loss of candidate slot fillings ``(B, T)`` through one truncated model, with the prefix cache."""

    def __init__(
        self,
        model: nn.Module,
        measure_at: int,
        layers_path: str | None,
        prefix: Tensor,
        suffix: Tensor,
        target: Tensor,
        mask: Tensor,
    ) -> None:
        self.tl = TruncatedLM(model, measure_at, layers_path)
        with torch.no_grad():
            self.kv = self.tl.extend_many(PrefixKV(), prefix)[0] if prefix.numel() else PrefixKV()
        self.suffix = suffix.to(self.tl.device)
        self.target = target.to(self.tl.device, torch.float32)
        self.mask = mask.to(self.tl.device, torch.float32)

    @torch.no_grad()
    def losses(self, cands: Tensor, batch_size: int) -> Tensor:
        out = []
        for lo in range(0, cands.shape[0], batch_size):
            chunk = cands[lo : lo + batch_size].to(self.tl.device)
            ids = torch.cat([chunk, self.suffix.expand(chunk.shape[0], -1)], dim=1)
            states = self.tl.run(self.kv, input_ids=ids)[0].float()
            out.append(((states - self.target).pow(2).sum(-1) * self.mask).sum(-1))
        return torch.cat(out).cpu() if out else torch.empty(0)

    def grad(self, current: Tensor, table: Tensor) -> Tensor:
        """``(T, V)`` gradient of the loss with respect to the one-hot matrix of ``current (T,)``."""
        one_hot = torch.nn.functional.one_hot(current, table.shape[0]).to(table.dtype).requires_grad_(True)
        with torch.enable_grad():
            embeds = torch.cat([one_hot @ table, table[self.suffix]])[None]
            states = self.tl.run(self.kv, inputs_embeds=embeds)[0][0].float()
            loss = ((states - self.target).pow(2).sum(-1) * self.mask).sum()
            (grad,) = torch.autograd.grad(loss, one_hot)
        return grad


def _sample(current: Tensor, top: Tensor, width: int, n_replace: int, gen: torch.Generator) -> Tensor:
    """``(width, T)`` candidates: each changes ``r`` distinct random slots (``r`` uniform in 1 … ``n_replace``) to a
    random one of that slot's top-k."""
    n_slots = current.numel()
    r_max = min(n_replace, n_slots)
    order = torch.argsort(torch.rand(width, n_slots, generator=gen), dim=1)[:, :r_max]  # (W, r_max) slots
    picks = torch.randint(0, top.shape[1], (width, r_max), generator=gen)
    n_swap = torch.randint(1, r_max + 1, (width, 1), generator=gen)
    use = torch.arange(r_max)[None, :] < n_swap  # (W, r_max): the first n_swap chosen slots change
    values = torch.where(use, top[order, picks], current[order])
    cands = current.expand(width, -1).clone()
    cands.scatter_(1, order, values)
    return cands


def gcg(
    model: nn.Module,
    target: Tensor,
    measure_at: int,
    config: GCGConfig,
    *,
    init_ids: Tensor | None = None,
    prefix_ids: Tensor | None = None,
    suffix_ids: Tensor | None = None,
    target_mask: Tensor | None = None,
    allowed: Tensor | None = None,
    keep: KeepFn | None = None,
    screen_model: nn.Module | None = None,
) -> GCGResult:
    """Search ids ``s (T,)`` minimising ``Σ_t w_t ‖h^m_t(prefix, s, suffix) − target_t‖²`` (module docstring).

    Parameters
    ----------
    target
        ``(T + S, d)``: the ``T`` searched slots, then the ``S`` fixed ``suffix_ids`` (states at
        ``hidden_states[measure_at]``).
    target_mask
        ``(T + S,)`` bool or float weights ``w_t`` (default all 1).
    init_ids
        ``(T,)`` starting slots; default uniform random ``allowed`` tokens drawn with ``config.seed``.
    allowed
        ``(V,)`` bool: tokens the slots may take (default all); ``keep`` filters whole candidates
        (:func:`roundtrip_filter`).
    screen_model
        A bf16 copy of ``model`` (:func:`steerlimits.invert.bf16_copy`) to screen candidates.
    """
    start = time.perf_counter()
    dev = model.get_input_embeddings().weight.device
    gen = torch.Generator().manual_seed(config.seed)
    prefix = torch.as_tensor([] if prefix_ids is None else prefix_ids, dtype=torch.long, device=dev).reshape(-1)
    suffix = torch.as_tensor([] if suffix_ids is None else suffix_ids, dtype=torch.long, device=dev).reshape(-1)
    n_pos = target.shape[0] - suffix.numel()
    if n_pos < 1:
        raise ValueError(f"target has {target.shape[0]} rows, fewer than suffix ({suffix.numel()}) + 1 slot")
    mask = (
        torch.ones(target.shape[0])
        if target_mask is None
        else torch.as_tensor(target_mask).to(torch.float32).reshape(-1)
    )
    if mask.numel() != target.shape[0]:
        raise ValueError(f"target_mask has {mask.numel()} entries, target has {target.shape[0]} rows")
    table = embedding_matrix(model).detach()
    vocab = table.shape[0]
    allowed = torch.ones(vocab, dtype=torch.bool) if allowed is None else allowed.to(torch.bool).cpu()
    pool = allowed.nonzero().reshape(-1)
    if init_ids is None:
        current = pool[torch.randint(0, pool.numel(), (n_pos,), generator=gen)].to(dev)
    else:
        current = torch.as_tensor(init_ids, dtype=torch.long, device=dev).reshape(-1)
        if current.numel() != n_pos:
            raise ValueError(f"init_ids has {current.numel()} tokens, target has {n_pos} searched positions")
    s32 = _Scorer(model, measure_at, config.layers_path, prefix, suffix, target.detach(), mask)
    s16 = (
        None
        if screen_model is None
        else _Scorer(screen_model, measure_at, config.layers_path, prefix, suffix, target.detach(), mask)
    )
    init_loss = float(s32.losses(current[None], 1)[0])
    buffer: list[tuple[float, Tensor]] = [(init_loss, current.clone())]
    best_ids, best_loss = current.clone(), init_loss
    losses, best_losses = [init_loss], [init_loss]
    n_eval, n_screen, n_filtered, steps, stopped = 1, 0, 0, 0, False
    blocked = ~allowed.to(dev)
    for step in range(config.n_steps):
        if (config.stop_loss is not None and best_loss <= config.stop_loss) or (
            config.stop_fraction is not None and best_loss <= config.stop_fraction * init_loss
        ):
            stopped = True
            break
        steps += 1
        base = buffer[0][1]
        grad = s32.grad(base, table)
        grad[:, blocked] = float("inf")
        top = (-grad).topk(min(config.topk, int(allowed.sum())), dim=1).indices.cpu()  # (T, topk)
        cands = _sample(base.cpu(), top, config.search_width, config.n_replace, gen)
        cands = torch.unique(cands[(cands != base.cpu()).any(dim=1)], dim=0)
        if keep is not None and cands.shape[0]:
            ok = keep(cands)
            n_filtered += int((~ok).sum())
            cands = cands[ok]
        if cands.shape[0] == 0:
            losses.append(losses[-1])
            best_losses.append(best_loss)
            continue
        if s16 is not None:
            l16 = s16.losses(cands, config.batch_size)
            n_screen += cands.shape[0]
            cands = cands[torch.argsort(l16)[: config.n_verify]]
        cand_losses = s32.losses(cands, config.batch_size)
        n_eval += cands.shape[0]
        i = int(cand_losses.argmin())
        step_ids, step_loss = cands[i].to(dev), float(cand_losses[i])
        if config.buffer_size == 0:
            buffer = [(step_loss, step_ids)]
        elif len(buffer) < config.buffer_size or step_loss < buffer[-1][0]:
            buffer = sorted([*buffer, (step_loss, step_ids)], key=lambda b: b[0])[: config.buffer_size]
        if step_loss < best_loss:
            best_ids, best_loss = step_ids.clone(), step_loss
        losses.append(step_loss)
        best_losses.append(best_loss)
        logger.debug("gcg step %d: loss %.4g (best %.4g)", step, step_loss, best_loss)
    return GCGResult(
        best_ids=best_ids.tolist(),
        best_loss=best_loss,
        losses=losses,
        best_losses=best_losses,
        init_ids=current.tolist(),
        init_loss=init_loss,
        n_evaluated=n_eval,
        n_screened=n_screen,
        n_filtered=n_filtered,
        n_steps_run=steps,
        wall_s=time.perf_counter() - start,
        stopped_early=stopped,
    )


def gcg_search(
    model: nn.Module,
    target: Tensor,
    measure_at: int,
    n_steps: int = 20,
    search_width: int = 64,
    topk: int = 32,
    seed: int = 0,
    *,
    init_ids: Tensor | None = None,
    prefix_ids: Tensor | None = None,
    batch_size: int = 256,
    layers_path: str | None = None,
    suffix_ids: Tensor | None = None,
    target_mask: Tensor | None = None,
) -> GCGResult:
    """:func:`gcg` with keyword sizes (the original GCG: single swaps, no buffer, no filter)."""
    config = GCGConfig(
        n_steps=n_steps,
        search_width=search_width,
        topk=topk,
        n_replace=1,
        buffer_size=0,
        batch_size=batch_size,
        seed=seed,
        layers_path=layers_path,
    )
    return gcg(
        model,
        target,
        measure_at,
        config,
        init_ids=init_ids,
        prefix_ids=prefix_ids,
        suffix_ids=suffix_ids,
        target_mask=target_mask,
    )
