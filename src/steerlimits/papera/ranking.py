"""Cheap exact inversion aids: a linear state→embedding decoder for candidate ranking, and the position-0 table.

Candidate order (a :data:`steerlimits.invert.RankFn`). The engine's gradient order alone misses the true token
at many positions of the default models (measured on one prompt per vector: ranks > 100,000 at 9 of 26 positions
of Gemma-3-270m; on SmolLM2 and Qwen it ranks beyond 6,000 at positions 0–1). A ridge regression from a state
``h^m_t`` to the input embedding ``E_{x_t}`` of its own token, fitted on natural states of *training* prompts
(never the test prompts), puts the true token first at almost every position where the gradient fails, and vice
versa. :class:`DecoderRank` interleaves three orders, each token placed by its best rank in any of them:
cosine and L2 between ``E_c`` and the decoded embedding, and the engine's gradient order. Verification stays
exact (float32 forwards); the order only decides how soon the true token (or the best candidate) is reached.

Position 0 (the attention sink, no prefix) defeats both orders (ranks beyond 4,000 in every model; Gemma's
``<bos>`` state is ≥ 77,000 away from the position-0 state of any of 4,096 random tokens). There the tokenizer's
special tokens are tried first (a template or BOS token is the usual first token); this prior does not use the
prompt. For a *steered* search the order can be warm-started with given tokens per position (the natural
inversion's recovered token ``x_t``): one candidate more, so the minimum found is never worse than the prompt's
own token, as in an exhaustive sweep.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from steerlimits.invert import InversionConfig, PrefixKV, TruncatedLM, embedding_matrix, gradient_order

__all__ = ["DecoderRank", "LinearDecoder", "fit_decoder"]

logger = logging.getLogger(__name__)


@dataclass
class LinearDecoder:
    """``ê = (h − mean) @ weight``: ``mean (d,)``, ``weight (d, d)``; fitted on ``n_tokens`` states (t ≥ 1)."""

    mean: Tensor
    weight: Tensor
    n_tokens: int
    ridge: float

    def predict(self, h: Tensor) -> Tensor:
        """Decoded embedding(s) ``(..., d)`` of states ``h (..., d)``."""
        return (h.to(self.mean.dtype) - self.mean) @ self.weight


@torch.no_grad()
def fit_decoder(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    measure_at: int,
    ridge: float = 1e-2,
    layers_path: str | None = None,
    batch_size: int = 32,
    states_model: nn.Module | None = None,
) -> LinearDecoder:
    """Ridge regression ``h^m_t → E_{x_t}`` on natural states of ``sequences`` (position 0 excluded: the sink);
    sequences of equal length are run ``batch_size`` at a time.

    ``ridge`` is relative: ``λ = ridge · mean_j Var(h_j) · n``. ``states_model``: a copy of ``model`` (e.g.
    bf16, :func:`steerlimits.invert.bf16_copy`) whose states train the decoder; it only orders candidates, and
    every distance is verified in float32, so a cheaper forward changes cost, never a result's validity.
    """
    tl = TruncatedLM(states_model if states_model is not None else model, measure_at, layers_path)
    table = embedding_matrix(model).detach()
    xs, ys = [], []
    by_length: dict[int, list[list[int]]] = {}
    for seq in sequences:  # equal-length sequences share a forward (no padding, so states are unchanged)
        if len(seq) >= 2:
            by_length.setdefault(len(seq), []).append(list(seq))
    for length in sorted(by_length):
        group = by_length[length]
        for start in range(0, len(group), batch_size):
            ids = torch.as_tensor(group[start : start + batch_size], dtype=torch.long, device=tl.device)
            with torch.no_grad():
                xs.append(tl.full(input_ids=ids)[:, 1:].reshape(-1, table.shape[1]).float())
            ys.append(table[ids[:, 1:].reshape(-1)])
    if not xs:
        raise ValueError("fit_decoder needs at least one sequence of two or more tokens")
    x, y = torch.cat(xs).double(), torch.cat(ys).double()
    mean = x.mean(0)
    xc = x - mean
    lam = ridge * float(xc.pow(2).sum(0).mean())
    weight = torch.linalg.solve(xc.T @ xc + lam * torch.eye(x.shape[1], dtype=x.dtype, device=x.device), xc.T @ y)
    return LinearDecoder(mean=mean.float(), weight=weight.float(), n_tokens=int(x.shape[0]), ridge=ridge)


def _interleave_partial(orders: Sequence[Tensor]) -> Tensor:
    """:func:`_interleave` of the heads of several orders (each ``(k,)``): the tokens of any head, by their best
    rank in any of them; equal to the first ``k`` of the full interleave."""
    best: dict[int, tuple[int, int]] = {}
    for i, order in enumerate(orders):
        for rank, tok in enumerate(order.tolist()):
            key = (rank, i)
            if tok not in best or key < best[tok]:
                best[tok] = key
    return torch.tensor(sorted(best, key=best.__getitem__), dtype=torch.long)


def _interleave(orders: Sequence[Tensor]) -> Tensor:
    """Tokens sorted by their best rank in any of ``orders`` (each ``(V,)``); ties by order index."""
    k, vocab = len(orders), orders[0].numel()
    ranks = torch.empty((k, vocab), dtype=torch.long)
    positions = torch.arange(vocab)
    for i, order in enumerate(orders):
        ranks[i, order.cpu()] = positions
    best, which = ranks.min(0)
    return torch.argsort(k * best + which, stable=True)


@dataclass
class DecoderRank:
    """:data:`~steerlimits.invert.RankFn`: interleaved decoder-cosine, decoder-L2 and gradient orders.

    ``first_at_zero``: tokens tried first at position 0 (the tokenizer's special ids); ``warm``: absolute
    position -> tokens tried first there (a steered search's warm start). The position is ``prefix.length``.
    ``precheck`` (natural targets, :meth:`lazy`): :meth:`head` gives the first ``precheck`` decoder-ordered tokens,
    which the engine verifies first; the full order with the gradient order (a forward and backward pass) is
    computed only where none of them matches within ``tau_exact``. The precheck's evaluations are counted in the
    engine's ``n_verified``.
    """

    decoder: LinearDecoder
    table: Tensor
    use_gradient: bool = True
    first_at_zero: tuple[int, ...] = ()
    warm: Mapping[int, Sequence[int]] | None = None
    precheck: int = 0  # > 0: verify this many decoder-ordered tokens first; the gradient only if none is exact

    def __post_init__(self) -> None:
        self.table = self.table.detach()
        self._sq = self.table.pow(2).sum(-1)
        self._norm = self._sq.sqrt().clamp_min(1e-12)

    def with_warm(self, warm: Mapping[int, Sequence[int]] | None) -> DecoderRank:
        """A copy with another warm start (shares the tables)."""
        out = copy.copy(self)
        out.warm = warm
        return out

    def decoder_only(self) -> DecoderRank:
        """A copy without the gradient order (shares the tables)."""
        out = copy.copy(self)
        out.use_gradient = False
        return out

    def lazy(self, precheck: int = 32) -> DecoderRank:
        """A copy that computes the gradient order only where the first ``precheck`` decoder-ordered tokens
        contain no match within ``config.tau_exact`` (natural targets: the match is then tried first)."""
        out = copy.copy(self)
        out.precheck = precheck
        return out

    def orders(self, target_t: Tensor, k: int | None = None) -> list[Tensor]:
        """Decoder orders ``[cosine, L2]`` of all tokens ``(V,)`` for one target state ``(d,)``; with ``k`` only
        their first ``k`` tokens (a partial sort, O(V))."""
        dots = self.table @ self.decoder.predict(target_t.detach())
        scores = [-dots / self._norm, self._sq - 2 * dots]
        if k is None or k >= dots.numel():
            return [torch.argsort(sc) for sc in scores]
        return [torch.topk(sc, k, largest=False, sorted=True).indices for sc in scores]

    def head(self, tl: TruncatedLM, prefix: PrefixKV, target_t: Tensor, config: InversionConfig) -> Tensor | None:
        """With ``precheck > 0`` (:meth:`lazy`): the first ``precheck`` candidates (the position's first tokens, then
        the decoder orders interleaved), which the engine verifies before it asks for the full order (and with it
        the gradient order, a forward and backward pass); None otherwise."""
        if self.precheck <= 0:
            return None
        first = self._first(prefix)
        head = torch.cat(
            [
                torch.tensor(first, dtype=torch.long),
                _interleave_partial(self.orders(target_t, self.precheck + len(first))),
            ]
        )
        return torch.tensor(list(dict.fromkeys(head.tolist())), dtype=torch.long)[: self.precheck]

    def _first(self, prefix: PrefixKV) -> list[int]:
        first = list(self.first_at_zero) if prefix.length == 0 else []
        return first + list((self.warm or {}).get(prefix.length, []))

    def __call__(self, tl: TruncatedLM, prefix: PrefixKV, target_t: Tensor, config: InversionConfig) -> Tensor:
        first = self._first(prefix)
        # ranked mode verifies only the first n_candidates: partial orders suffice (the first n of an interleave
        # come from the first n of its orders), unless the gradient order (always full) joins
        partial = config.mode == "ranked" and not self.use_gradient
        if self.use_gradient:
            orders = [*self.orders(target_t), gradient_order(tl, prefix, target_t, config)]
            return self._head_first(_interleave(orders), first, target_t)
        orders = self.orders(target_t, config.n_candidates + len(first) if partial else None)
        order = _interleave_partial(orders) if partial else _interleave(orders)
        return self._head_first(order, first, target_t)

    @staticmethod
    def _head_first(order: Tensor, first: Sequence[int], target_t: Tensor) -> Tensor:
        if first:
            head = torch.tensor(list(dict.fromkeys(first)), dtype=torch.long)
            order = torch.cat([head, order[~torch.isin(order, head)]])
        return order.to(target_t.device)
