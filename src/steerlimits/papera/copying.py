"""E6: the unsteered model copying the steered response does not reproduce the steered states (docs/paperA.md).

References on the response span of ``[x; y]`` at ``hidden_states[l+1]``: *steered* (steering on, as generated)
and *natural* (same ids, steering off); their per-token distance is the reference gap. Variants make the
unsteered model produce ``y``: *explicit* (a templated "repeat verbatim" request containing ``y``'s text) and
*ICL-n* (``y``'s ids repeated ``n`` times after the template start, each followed by a blank-line separator,
which is also the cue). Teacher-forced: the variant prompt followed by ``y`` itself; free: followed by its own
greedy continuation (compared position by position over the common length).

**Positive control** (claim A11): the natural reference is reachable (``x`` itself reaches it), so a copying
prompt that controls ``y``'s states should bring them close to it. Its starting point is ``y`` with no context
(after ``x``'s first token only); "gap closed" = 1 − L2(copy, natural reference) / L2(bare ``y``, natural
reference), teacher-forced.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from steerlimits.papera.context import ModelContext, responses_xy
from steerlimits.settings.papera import E6
from steerlimits.steer import greedy

__all__ = ["copy_prompts", "run_e6"]

logger = logging.getLogger(__name__)

EXPLICIT = "Repeat the following text exactly, word for word, and write nothing else:\n\n{text}"


def copy_prompts(
    ctx: ModelContext, vector: str, x: Sequence[int], y: Sequence[int], icl_n: Sequence[int]
) -> dict[str, list[int]]:
    """Variant prompts (ids) whose continuation should be ``y``."""
    text = ctx.tok.decode(list(y), skip_special_tokens=True)
    out = {"explicit": ctx.encode(vector, EXPLICIT.format(text=text))}
    sep = ctx.tok("\n\n", add_special_tokens=False)["input_ids"]
    for n in icl_n:
        out[f"icl-{n}"] = list(x[:1]) + (list(y) + sep) * n
    return out


def _dist(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(mean per-token L2, MSE per dimension) over the common length."""
    k = min(a.shape[0], b.shape[0])
    if k == 0:
        return float("nan"), float("nan")
    d = torch.linalg.vector_norm(a[:k] - b[:k], dim=-1)
    return float(d.mean()), float(d.pow(2).mean() / a.shape[1])


@torch.no_grad()
def run_e6(ctx: ModelContext, vector: str, responses: Sequence[Mapping[str, Any]], cfg: E6) -> pd.DataFrame:
    """One row per prompt × variant × mode (teacher-forced / free)."""
    rows = []
    for idx, x, y in responses_xy(responses, cfg.n_prompts, cfg.y_tokens, "E6"):
        span = slice(len(x), len(x) + len(y))
        steered_ref = ctx.states(vector, x + y, steered=True)[span]
        natural_ref = ctx.states(vector, x + y)[span]
        gap = float(torch.linalg.vector_norm(steered_ref - natural_ref, dim=-1).mean())
        bare = ctx.states(vector, x[:1] + y)[1:]  # y after the first token only: copying's starting point
        l2_bare, _ = _dist(bare, natural_ref)
        for variant, prompt in copy_prompts(ctx, vector, x, y, cfg.icl_n).items():
            gen = greedy(ctx.model, ctx.tok, [prompt], len(y))[0]
            match = [a == b for a, b in zip(gen, y)]
            prefix_len = next((i for i, ok in enumerate(match) if not ok), len(match))
            for mode, cont in (("teacher_forced", y), ("free", gen)):
                h = ctx.states(vector, prompt + cont)[len(prompt) :]
                l2_s, mse_s = _dist(h, steered_ref)
                l2_n, mse_n = _dist(h, natural_ref)
                rows.append(
                    {
                        "model": ctx.key,
                        "vector": vector,
                        "prompt": idx,
                        "variant": variant,
                        "mode": mode,
                        "y_len": len(y),
                        "gen_len": len(gen),
                        "exact_match": gen == y,
                        "matched_prefix": prefix_len,
                        "position_match": float(np.mean(match)) if match else 0.0,
                        "l2_to_steered": l2_s,
                        "mse_to_steered": mse_s,
                        "l2_to_natural": l2_n,
                        "mse_to_natural": mse_n,
                        "reference_gap": gap,
                        "ratio_to_gap": l2_s / gap if gap > 0 else float("nan"),
                        "l2_bare_to_natural": l2_bare,
                        "control_gap_closed": 1 - l2_n / l2_bare if l2_bare > 0 else float("nan"),
                        "continuation": ctx.tok.decode(gen, skip_special_tokens=True),
                    }
                )
            logger.info(
                "E6 prompt %d %s: exact %s, prefix %d/%d, L2 to steered %.3g (gap %.3g)",
                idx,
                variant,
                gen == y,
                prefix_len,
                len(y),
                rows[-2]["l2_to_steered"],
                gap,
            )
    return pd.DataFrame(rows)
