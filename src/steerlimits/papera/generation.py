"""Greedy generation from token ids (steered, unsteered or under directional ablation) and the E1 behaviour
check: generations from the prompt, the steered prompt and the recovered ids (unsteered), scored on the
continuation only (spec A §4 E1; §6: generate from recovered ids, never re-template or re-encode them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from steerlimits import hooks
from steerlimits.papera.context import ModelContext

__all__ = ["directional_ablation", "greedy", "greedy_batch", "greedy_embeds", "steered_responses"]

logger = logging.getLogger(__name__)


def _contribution_modules(block: nn.Module) -> list[nn.Module]:
    """Modules whose outputs are added to the residual stream: attention and MLP outputs, or (Gemma-style
    sandwich norms) the post-attention and post-feed-forward norms."""
    if hasattr(block, "post_feedforward_layernorm") and hasattr(block, "post_attention_layernorm"):
        return [block.post_attention_layernorm, block.post_feedforward_layernorm]
    found = [getattr(block, name) for name in ("self_attn", "attn", "attention", "mlp") if hasattr(block, name)]
    if len(found) != 2:
        raise ValueError(f"cannot find the attention and MLP outputs of {type(block).__name__} for ablation")
    return found


@contextmanager
def directional_ablation(model: nn.Module, vector: Tensor, layers_path: str | None = None) -> Iterator[None]:
    """``h ↦ h − (h·v̂)v̂`` at every block input and every attention / MLP output (Arditi et al. 2024)."""
    _, blocks = hooks.resolve_blocks(model, layers_path)
    unit = vector / vector.norm()

    def project(h: Tensor) -> Tensor:
        u = unit.to(h.dtype)
        return h - (h @ u)[..., None] * u

    def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        hidden = hooks._block_input(args, kwargs)
        return hooks._replace_block_input(args, kwargs, project(hidden))

    def post(module: nn.Module, args: Any, output: Any) -> Any:
        return hooks.rewrap(output, project(hooks.unwrap(output)))

    handles = []
    try:
        for block in blocks:
            handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
            handles += [mod.register_forward_hook(post) for mod in _contribution_modules(block)]
        yield
    finally:
        for h in handles:
            h.remove()


def _strip(new: Tensor, eos: set[int]) -> list[int]:
    out = []
    for tok in new.tolist():
        if tok in eos:
            break
        out.append(int(tok))
    return out


def _eos(ctx: ModelContext) -> set[int]:
    ids = ctx.model.generation_config.eos_token_id
    ids = ids if isinstance(ids, (list, tuple)) else [ids]
    out = {int(i) for i in ids if i is not None}
    return out | ({int(ctx.tok.eos_token_id)} if ctx.tok.eos_token_id is not None else set())


def _kwargs(ctx: ModelContext, max_new_tokens: int) -> dict[str, Any]:
    pad = ctx.tok.pad_token_id if ctx.tok.pad_token_id is not None else ctx.tok.eos_token_id
    return dict(max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                repetition_penalty=None, pad_token_id=pad, eos_token_id=sorted(_eos(ctx)))


@torch.no_grad()
def greedy(ctx: ModelContext, ids: Sequence[int], max_new_tokens: int, *, vector: str | None = None,
           alpha: float | None = None, ablate: str | None = None, past_key_values: Any = None) -> list[int]:
    """Greedy continuation ids (EOS and after removed) of ``ids``; steered by ``vector`` (α default the
    configured one) at every position, or with ``ablate``'s direction removed everywhere."""
    x = torch.as_tensor([list(ids)], dtype=torch.long)
    with ExitStack() as stack:
        if vector is not None:
            stack.enter_context(ctx.steering(vector, alpha))
        if ablate is not None:
            stack.enter_context(directional_ablation(ctx.model, ctx.vectors[ablate], ctx.spec.layers_path))
        out = ctx.model.generate(input_ids=x, attention_mask=torch.ones_like(x), past_key_values=past_key_values,
                                 **_kwargs(ctx, max_new_tokens))
    return _strip(out[0, x.shape[1]:], _eos(ctx))


@torch.no_grad()
def greedy_batch(ctx: ModelContext, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                 vector: str | None = None, ablate: str | None = None, batch_size: int = 16) -> list[list[int]]:
    """Greedy continuations of several prompts in left-padded batches (``generate`` derives position ids from
    the mask), optionally steered at every position or with a direction ablated."""
    from steerlimits.prompting import left_pad, pad_id

    out: list[list[int]] = []
    for lo in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[lo:lo + batch_size], pad_id(ctx.tok))
        with ExitStack() as stack:
            if vector is not None:
                stack.enter_context(ctx.steering(vector))
            if ablate is not None:
                stack.enter_context(directional_ablation(ctx.model, ctx.vectors[ablate], ctx.spec.layers_path))
            gen = ctx.model.generate(input_ids=ids, attention_mask=mask, **_kwargs(ctx, max_new_tokens))
        out += [_strip(row[ids.shape[1]:], _eos(ctx)) for row in gen]
    return out


@torch.no_grad()
def greedy_embeds(ctx: ModelContext, embeds: Tensor, max_new_tokens: int) -> list[int]:
    """Greedy continuation of input embeddings ``(T, d)`` (a soft prompt), unsteered."""
    mask = torch.ones(1, embeds.shape[0], dtype=torch.long)
    out = ctx.model.generate(inputs_embeds=embeds[None], attention_mask=mask, **_kwargs(ctx, max_new_tokens))
    return _strip(out[0], _eos(ctx))


def steered_responses(ctx: ModelContext, vector: str, n_prompts: int, y_tokens: int) -> list[dict[str, Any]]:
    """The steered greedy response ``y`` (α·v at every position, EOS removed, ≤ ``y_tokens``) and the natural
    greedy response to each of the first ``n_prompts`` test prompts (ids only; text for reading)."""
    rows = []
    for i, ids in enumerate(ctx.prompt_ids(vector, n_prompts)):
        y = greedy(ctx, ids, y_tokens, vector=vector)
        natural = greedy(ctx, ids, y_tokens)
        rows.append({"model": ctx.key, "vector": vector, "prompt": i, "alpha": ctx.alpha[vector], "x": ids,
                     "y": y, "y_natural": natural, "y_text": ctx.tok.decode(y, skip_special_tokens=True),
                     "y_natural_text": ctx.tok.decode(natural, skip_special_tokens=True)})
        logger.info("%s prompt %d: steered %r | natural %r", vector, i, rows[-1]["y_text"][:80],
                    rows[-1]["y_natural_text"][:80])
    return rows
