"""Truncated, prefix-cached forward passes of blocks ``0 … m-1`` shared by the inversion methods.

Sites follow :mod:`steerlimits.hooks`: ``measure_at = m`` is a ``hidden_states`` index, i.e. the output of
block ``m - 1``; the forward is stopped there by a temporary hook that raises :class:`_StopForward` (removed
in a ``finally``), so blocks ``m … L-1`` and the LM head never run.

Shared-prefix attention
-----------------------
The sequential search scores a batch of ``B`` one-token continuations of the same prefix ``ŝ_<t``. Instead of
a ``DynamicCache`` per batch (whose ``update`` concatenates the prefix, copied ``B`` times), the prefix
keys/values are kept once as :class:`PrefixKV` (``(n_kv_heads, T, head_dim)`` per block, never mutated:
:meth:`extend` returns a new object) and the attention core of the model's own attention modules is swapped,
only inside these calls, for :func:`_shared_prefix_attention`: scores of the ``B·G`` queries against the
shared prefix are one GEMM per key/value head, plus each candidate's score against its own key. Projections,
rotary embeddings, q/k norms, MLPs and norms stay the Hugging Face modules' own; the swap is a temporary
change of ``config._attn_implementation`` on the attention configs, restored in a ``finally``. Tests check the
result against full uncached passes (:func:`steerlimits.invert.reference_sweep`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from steerlimits import hooks

__all__ = ["PrefixKV", "TruncatedLM", "embedding_matrix"]

logger = logging.getLogger(__name__)

_ATTN_NAME = "steerlimits_shared_prefix"
_CALL_KW = "steerlimits_prefix_call"


class _StopForward(Exception):
    """Raised by the hook on block ``m - 1``; carries that block's output ``(batch, seq, d_model)``."""

    def __init__(self, output: Tensor) -> None:
        super().__init__("forward stopped after the measurement block")
        self.output = output


@dataclass(frozen=True)
class PrefixKV:
    """Keys/values of a prefix for blocks ``0 … m-1``: ``keys[l]``, ``values[l]`` are
    ``(n_kv_heads, T, head_dim)``.

    Immutable by convention: nothing writes into these tensors; :meth:`TruncatedLM.extend` builds a new
    object.
    ``length = 0`` (the empty prefix) has empty tuples.
    """

    keys: tuple[Tensor, ...] = ()
    values: tuple[Tensor, ...] = ()
    length: int = 0


@dataclass
class _Call:
    prefix: PrefixKV
    record: bool = False
    new_keys: dict[int, Tensor] = field(default_factory=dict)
    new_values: dict[int, Tensor] = field(default_factory=dict)


def _shared_prefix_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Attention of ``S`` new tokens per row over a shared prefix plus themselves (causal).

    ``query (B, H, S, hd)``, ``key``/``value (B, KV, S, hd)`` (after rotary/q-k norms); returns
    ``(B, S, H, hd)`` like the Hugging Face attention functions. Head ``h`` uses key/value head
    ``h // (H / KV)`` (``repeat_kv``). Gemma-style sliding windows (a query at position ``q`` sees keys at
    positions ``k`` with ``q - W < k <= q``) and logit soft-capping are honoured. ``S = 1`` (candidate scoring)
    takes a fast path without masks.
    """
    call: _Call | None = kwargs.pop(_CALL_KW, None)
    if call is None:  # not one of our calls: behave like sdpa
        return ALL_ATTENTION_FUNCTIONS["sdpa"](
            module,
            query,
            key,
            value,
            attention_mask,
            scaling=scaling,
            dropout=dropout,
            sliding_window=sliding_window,
            **kwargs,
        )
    batch, n_heads, q_len, head_dim = query.shape
    n_kv = key.shape[1]
    groups = n_heads // n_kv
    layer = int(module.layer_idx)
    if call.record:
        call.new_keys[layer] = key  # (B, KV, S, hd)
        call.new_values[layer] = value
    scale = head_dim**-0.5 if scaling is None else scaling
    softcap = getattr(module, "attn_logit_softcapping", None) or kwargs.get("softcap")
    n_pre = call.prefix.length
    pk = pv = None
    if n_pre > 0:
        pk, pv = call.prefix.keys[layer], call.prefix.values[layer]  # (KV, T, hd)
        if sliding_window is not None:  # keys older than the window of the first new token never matter
            keep = min(n_pre, sliding_window - 1 + q_len - 1)
            pk, pv = pk[:, n_pre - keep :], pv[:, n_pre - keep :]
    q = query.reshape(batch, n_kv, groups, q_len, head_dim).transpose(0, 1)  # (KV, B, G, S, hd)
    k_self = key.transpose(0, 1).unsqueeze(2)  # (KV, B, 1, S, hd)
    v_self = value.transpose(0, 1).unsqueeze(2)
    if q_len == 1:
        s_self = (q * k_self).sum(-1, keepdim=True)  # (KV, B, G, 1, 1)
    else:
        s_self = torch.matmul(q, k_self.transpose(-1, -2))  # (KV, B, G, S, S)
    n_keep = 0 if pk is None else pk.shape[1]
    if n_keep > 0:
        q_flat = q.reshape(n_kv, batch * groups * q_len, head_dim)
        s_pre = torch.bmm(q_flat, pk.transpose(1, 2)).view(n_kv, batch, groups, q_len, n_keep)
        scores = torch.cat([s_pre, s_self], dim=-1) * scale
    else:
        scores = s_self * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if q_len > 1 or (sliding_window is not None and n_keep >= sliding_window):
        # absolute positions: kept prefix keys n_pre - n_keep … n_pre - 1, new tokens n_pre … n_pre + S - 1
        dev = scores.device
        q_pos = n_pre + torch.arange(q_len, device=dev)[:, None]
        k_pos = torch.cat([torch.arange(n_pre - n_keep, n_pre, device=dev), n_pre + torch.arange(q_len, device=dev)])
        visible = k_pos[None, :] <= q_pos
        if sliding_window is not None:
            visible &= k_pos[None, :] > q_pos - sliding_window
        scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if q_len == 1:
        out = probs[..., -1:] * v_self  # (KV, B, G, 1, hd)
    else:
        out = torch.matmul(probs[..., n_keep:], v_self)  # (KV, B, G, S, hd)
    if n_keep > 0:
        p_pre = probs[..., :n_keep].reshape(n_kv, batch * groups * q_len, n_keep)
        out = out + torch.bmm(p_pre, pv).view(n_kv, batch, groups, q_len, head_dim)
    return out.permute(1, 3, 0, 2, 4).reshape(batch, q_len, n_heads, head_dim), None


AttentionInterface.register(_ATTN_NAME, _shared_prefix_attention)


def embedding_matrix(model: nn.Module) -> Tensor:
    """Effective input embeddings ``(V, d_model)``: the table times any ``embed_scale`` (Gemma), so that
    ``one_hot(ids) @ E`` equals ``model.get_input_embeddings()(ids)``."""
    emb = model.get_input_embeddings()
    weight = emb.weight
    scale = getattr(emb, "embed_scale", None)
    if scale is None:
        return weight
    return weight * torch.as_tensor(scale, dtype=weight.dtype, device=weight.device)


class TruncatedLM:
    """Blocks ``0 … m-1`` of a causal LM: full passes, one-token prefix extensions, batched candidate scoring.

    Parameters
    ----------
    model
        A Hugging Face causal LM (its parameters and modules are never modified).
    measure_at
        ``hidden_states`` index ``m``, ``1 <= m <= L - 1`` (``hidden_states[L]`` carries the final norm and is
        not a block output, so it is rejected).
    """

    def __init__(self, model: nn.Module, measure_at: int, layers_path: str | None = None) -> None:
        self.model = model
        self.location, self.blocks = hooks.resolve_blocks(model, layers_path)
        n_blocks = len(self.blocks)
        if not 1 <= measure_at <= n_blocks - 1:
            raise ValueError(
                f"measure_at={measure_at} must be a hidden_states index in 1 … {n_blocks - 1} (the output "
                f"of block measure_at-1); hidden_states[{n_blocks}] has the final norm applied and is not a "
                "block output"
            )
        self.measure_at = measure_at
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self._attn_configs = {
            id(mod.config): mod.config
            for block in self.blocks[:measure_at]
            for mod in block.modules()
            if hasattr(mod, "layer_idx") and hasattr(mod, "config")
        }
        if not self._attn_configs:
            raise ValueError(f"no attention module with `layer_idx` and `config` in blocks 0 … {measure_at - 1}")

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    # --------------------------------------------------------------------------------------------- plumbing
    def _run(self, **model_kwargs: Any) -> Tensor:
        def stop(module: nn.Module, args: Any, output: Any) -> None:
            raise _StopForward(hooks.unwrap(output))

        handle = self.blocks[self.measure_at - 1].register_forward_hook(stop)
        try:
            dev = self.device
            self.model(
                use_cache=False, **{k: v.to(dev) if isinstance(v, Tensor) else v for k, v in model_kwargs.items()}
            )
        except _StopForward as stopped:
            return stopped.output
        finally:
            handle.remove()
        raise RuntimeError(f"block {self.measure_at - 1} did not run during the forward pass")

    @contextmanager
    def _shared_prefix_mode(self) -> Iterator[None]:
        saved = {key: cfg._attn_implementation_internal for key, cfg in self._attn_configs.items()}
        try:
            for cfg in self._attn_configs.values():
                cfg._attn_implementation_internal = _ATTN_NAME
            yield
        finally:
            for key, cfg in self._attn_configs.items():
                cfg._attn_implementation_internal = saved[key]

    # ------------------------------------------------------------------------------------------------- public
    def full(self, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None) -> Tensor:
        """States ``hidden_states[m]`` ``(B, T, d)``: one ordinary uncached pass (the model's attention)."""
        return self._run(input_ids=input_ids, inputs_embeds=inputs_embeds)

    def run(
        self,
        prefix: PrefixKV,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        record: bool = False,
    ) -> tuple[Tensor, _Call]:
        """States ``(B, S, d)`` of ``B`` continuations of ``S`` tokens each (``input_ids (B, S)`` or
        ``inputs_embeds (B, S, d)``) at positions ``prefix.length … prefix.length + S - 1``, attending to the shared
        prefix (its keys/values are used once for all rows, never copied per row) and causally to themselves."""
        x = input_ids if input_ids is not None else inputs_embeds
        if x is None:
            raise ValueError("run needs input_ids or inputs_embeds")
        n_new = x.shape[1]
        call = _Call(prefix=prefix, record=record)
        position_ids = (prefix.length + torch.arange(n_new, device=self.device))[None]
        with self._shared_prefix_mode():
            out = self._run(
                input_ids=input_ids, inputs_embeds=inputs_embeds, position_ids=position_ids, **{_CALL_KW: call}
            )
        return out, call

    def step(
        self,
        prefix: PrefixKV,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        record: bool = False,
    ) -> tuple[Tensor, _Call]:
        """States ``(B, d)`` of ``B`` one-token continuations at position ``prefix.length``."""
        if input_ids is not None:
            input_ids = input_ids.reshape(-1, 1)
        if inputs_embeds is not None:
            inputs_embeds = inputs_embeds.reshape(inputs_embeds.shape[0], 1, -1)
        out, call = self.run(prefix, input_ids=input_ids, inputs_embeds=inputs_embeds, record=record)
        return out[:, 0], call

    def extend_many(
        self, prefix: PrefixKV, ids: Tensor | None = None, inputs_embeds: Tensor | None = None
    ) -> tuple[PrefixKV, Tensor]:
        """Append ``ids (S,)`` (or ``inputs_embeds (S, d)``) in one pass: the new (never aliased) prefix and the
        new tokens' states ``(S, d)``."""
        if ids is not None:
            ids = ids.reshape(1, -1)
        if inputs_embeds is not None:
            inputs_embeds = inputs_embeds.reshape(1, inputs_embeds.shape[-2], -1)
        states, call = self.run(prefix, input_ids=ids, inputs_embeds=inputs_embeds, record=True)
        n = self.measure_at
        if sorted(call.new_keys) != list(range(n)):
            raise RuntimeError(f"recorded keys for blocks {sorted(call.new_keys)}, expected 0 … {n - 1}")
        new_k = [call.new_keys[layer][0] for layer in range(n)]  # (KV, S, hd)
        new_v = [call.new_values[layer][0] for layer in range(n)]
        if prefix.length == 0:
            keys, values = tuple(k.clone() for k in new_k), tuple(v.clone() for v in new_v)
        else:
            keys = tuple(torch.cat([old, k], dim=1) for old, k in zip(prefix.keys, new_k))
            values = tuple(torch.cat([old, v], dim=1) for old, v in zip(prefix.values, new_v))
        return PrefixKV(keys, values, prefix.length + states.shape[1]), states[0]

    def append(self, prefix: PrefixKV, keys: list[Tensor], values: list[Tensor]) -> PrefixKV:
        """Append one token whose per-block keys/values ``(KV, 1, hd)`` were recorded while it was scored as a
        candidate (:meth:`step` with ``record=True``), without another forward; they equal :meth:`extend`'s up to
        the rounding of a batched matrix product."""
        if len(keys) != self.measure_at or len(values) != self.measure_at:
            raise ValueError(f"need keys/values of {self.measure_at} blocks, got {len(keys)}/{len(values)}")
        if prefix.length == 0:
            return PrefixKV(tuple(k.clone() for k in keys), tuple(v.clone() for v in values), 1)
        return PrefixKV(
            tuple(torch.cat([old, k], dim=1) for old, k in zip(prefix.keys, keys)),
            tuple(torch.cat([old, v], dim=1) for old, v in zip(prefix.values, values)),
            prefix.length + 1,
        )

    def extend(self, prefix: PrefixKV, token_id: int) -> tuple[PrefixKV, Tensor]:
        """Append one token: the new (never aliased) prefix and that token's state ``(d,)`` (cached
        incremental path; the same code scores candidates in :meth:`score`)."""
        ids = torch.tensor([token_id], dtype=torch.long, device=self.device)
        new, states = self.extend_many(prefix, ids)
        return new, states[0]

    def prefix_of(self, ids: Tensor) -> tuple[PrefixKV, Tensor]:
        """Prefix cache of ``ids (T,)`` built token by token, and the incremental states ``(T, d)``."""
        prefix, states = PrefixKV(), []
        for token in ids.reshape(-1).tolist():
            prefix, state = self.extend(prefix, int(token))
            states.append(state)
        d = self.model.get_input_embeddings().weight.shape[1]
        stacked = torch.stack(states) if states else torch.empty(0, d, dtype=self.dtype, device=self.device)
        return prefix, stacked

    def score(self, prefix: PrefixKV, token_ids: Tensor) -> Tensor:
        """States ``(B, d)`` at position ``prefix.length`` for the candidate tokens ``token_ids (B,)``."""
        return self.step(prefix, input_ids=token_ids)[0]
