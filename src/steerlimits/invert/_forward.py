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
    """Attention of one new token per row over a shared prefix plus itself.

    ``query (B, H, 1, hd)``, ``key``/``value (B, KV, 1, hd)`` (after rotary/q-k norms); returns
    ``(B, 1, H, hd)`` like the Hugging Face attention functions. Head ``h`` uses key/value head
    ``h // (H / KV)`` (``repeat_kv``). Gemma-style sliding windows (a token sees the last ``sliding_window``
    positions, itself included) and logit soft-capping are honoured.
    """
    call: _Call | None = kwargs.pop(_CALL_KW, None)
    if call is None:  # not one of our calls: behave like sdpa
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, scaling=scaling,
                                               dropout=dropout, sliding_window=sliding_window, **kwargs)
    batch, n_heads, q_len, head_dim = query.shape
    if q_len != 1:
        raise ValueError(f"shared-prefix attention scores one new token per row, got {q_len}")
    n_kv = key.shape[1]
    groups = n_heads // n_kv
    layer = int(module.layer_idx)
    if call.record:
        call.new_keys[layer] = key[:, :, 0]  # (B, KV, hd)
        call.new_values[layer] = value[:, :, 0]
    scale = head_dim**-0.5 if scaling is None else scaling
    q = query.reshape(batch, n_kv, groups, head_dim).transpose(0, 1)  # (KV, B, G, hd)
    k_self = key.reshape(batch, n_kv, head_dim).transpose(0, 1).unsqueeze(2)  # (KV, B, 1, hd)
    v_self = value.reshape(batch, n_kv, head_dim).transpose(0, 1).unsqueeze(2)
    s_self = (q * k_self).sum(-1, keepdim=True)  # (KV, B, G, 1)
    pk = pv = None
    if call.prefix.length > 0:
        pk, pv = call.prefix.keys[layer], call.prefix.values[layer]  # (KV, T, hd)
        if sliding_window is not None and pk.shape[1] >= sliding_window:
            keep = sliding_window - 1
            pk, pv = pk[:, pk.shape[1] - keep:], pv[:, pv.shape[1] - keep:]
    if pk is not None and pk.shape[1] > 0:
        q_flat = q.reshape(n_kv, batch * groups, head_dim)
        s_pre = torch.bmm(q_flat, pk.transpose(1, 2)).view(n_kv, batch, groups, -1)
        scores = torch.cat([s_pre, s_self], dim=-1) * scale
    else:
        scores = s_self * scale
    softcap = getattr(module, "attn_logit_softcapping", None) or kwargs.get("softcap")
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = probs[..., -1:] * v_self  # (KV, B, G, hd)
    if pk is not None and pk.shape[1] > 0:
        p_pre = probs[..., :-1].reshape(n_kv, batch * groups, -1)
        out = out + torch.bmm(p_pre, pv).view(n_kv, batch, groups, head_dim)
    return out.permute(1, 0, 2, 3).reshape(batch, 1, n_heads, head_dim), None


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
            raise ValueError(
                f"no attention module with `layer_idx` and `config` in blocks 0 … {measure_at - 1}")

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
            self.model(use_cache=False, **model_kwargs)
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

    def step(self, prefix: PrefixKV, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
             record: bool = False) -> tuple[Tensor, _Call]:
        """States ``(B, d)`` of ``B`` one-token continuations at position ``prefix.length``."""
        if input_ids is not None:
            input_ids = input_ids.reshape(-1, 1)
        if inputs_embeds is not None:
            inputs_embeds = inputs_embeds.reshape(inputs_embeds.shape[0], 1, -1)
        call = _Call(prefix=prefix, record=record)
        position_ids = torch.full((1, 1), prefix.length, dtype=torch.long, device=self.device)
        with self._shared_prefix_mode():
            out = self._run(input_ids=input_ids, inputs_embeds=inputs_embeds, position_ids=position_ids,
                            **{_CALL_KW: call})
        return out[:, 0], call

    def extend(self, prefix: PrefixKV, token_id: int) -> tuple[PrefixKV, Tensor]:
        """Append one token: the new (never aliased) prefix and that token's state ``(d,)`` (cached
        incremental path; the same code scores candidates in :meth:`score`)."""
        ids = torch.tensor([token_id], dtype=torch.long, device=self.device)
        state, call = self.step(prefix, input_ids=ids, record=True)
        n = self.measure_at
        if sorted(call.new_keys) != list(range(n)):
            raise RuntimeError(f"recorded keys for blocks {sorted(call.new_keys)}, expected 0 … {n - 1}")
        new_k = [call.new_keys[layer][0].unsqueeze(1) for layer in range(n)]  # (KV, 1, hd)
        new_v = [call.new_values[layer][0].unsqueeze(1) for layer in range(n)]
        if prefix.length == 0:
            keys, values = tuple(k.clone() for k in new_k), tuple(v.clone() for v in new_v)
        else:
            keys = tuple(torch.cat([old, k], dim=1) for old, k in zip(prefix.keys, new_k))
            values = tuple(torch.cat([old, v], dim=1) for old, v in zip(prefix.values, new_v))
        return PrefixKV(keys, values, prefix.length + 1), state[0]

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
