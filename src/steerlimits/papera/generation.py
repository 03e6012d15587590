"""The steered responses ``y`` shared by E3, E4 and E6, and the E1 behaviour generations, through the project's one
greedy path (:func:`steerlimits.steer.greedy`; docs/paperA.md): generation starts from recovered ids, never re-templated
or re-encoded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from steerlimits.papera.context import ModelContext
from steerlimits.steer import greedy

__all__ = ["greedy_ids", "steered_responses"]

logger = logging.getLogger(__name__)


def greedy_ids(
    ctx: ModelContext,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    vector: str | None = None,
    batch_size: int = 16,
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (EOS and after removed), steered by ``vector`` at its configured site and
    coefficient at every position, or unsteered."""
    if vector is None:
        return greedy(ctx.model, ctx.tok, prompts, max_new_tokens, batch_size=batch_size)
    return greedy(
        ctx.model,
        ctx.tok,
        prompts,
        max_new_tokens,
        vector=ctx.vectors[vector],
        alpha=ctx.alpha[vector],
        layer=ctx.layer[vector],
        positions="all",
        layers_path=ctx.spec.layers_path,
        batch_size=batch_size,
    )


def steered_responses(ctx: ModelContext, vector: str, n_prompts: int, y_tokens: int) -> list[dict[str, Any]]:
    """The steered greedy response ``y`` (α·v at every position, EOS removed, ≤ ``y_tokens``) and the natural
    greedy response to each of the first ``n_prompts`` test prompts (ids only; text for reading)."""
    prompts = ctx.prompt_ids(vector, n_prompts)
    steered = greedy_ids(ctx, prompts, y_tokens, vector=vector)
    natural = greedy_ids(ctx, prompts, y_tokens)
    rows = []
    for i, (ids, y, nat) in enumerate(zip(prompts, steered, natural)):
        rows.append(
            {
                "model": ctx.key,
                "vector": vector,
                "prompt": i,
                "alpha": ctx.alpha[vector],
                "x": ids,
                "y": y,
                "y_natural": nat,
                "y_text": ctx.tok.decode(y, skip_special_tokens=True),
                "y_natural_text": ctx.tok.decode(nat, skip_special_tokens=True),
            }
        )
        logger.info(
            "%s prompt %d: steered %r | natural %r", vector, i, rows[-1]["y_text"][:80], rows[-1]["y_natural_text"][:80]
        )
    return rows
