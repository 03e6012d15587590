"""Run a generation pool in as few batched ``generate()`` calls as possible.

All conditions of one model × trait that share a continuation length go into ONE :func:`steer.generate` call:
each job (condition, prompt, sample) is one row with its own steering offset (per-row vectors), rows are sorted
by prompt length (less padding) and batched ``batch_size`` at a time. Sampling is seeded per batch from the
config, so a run is reproducible for a given config; a job's random stream depends on its batch, not its
condition.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from steerlimits.seeds import derive_seed
from steerlimits.paperb.plan import Condition
from steerlimits.steer import GenerationConfig, generate

__all__ = ["run_pool"]

logger = logging.getLogger(__name__)


def run_pool(model: Any, tok: Any, conditions: Sequence[Condition], prompt_ids: Mapping[str, Sequence[Sequence[int]]],
             *, layer: int, positions: str, temperature: float, top_p: float, batch_size: int, seed: int,
             top_k: int | None = None, repetition_penalty: float | None = None,
             progress: bool = True) -> list[dict[str, Any]]:
    """Generate every job of ``conditions``; one row per generation (labels, prompt, continuation).

    Parameters
    ----------
    prompt_ids : prompt set name -> token ids per prompt (unpadded).
    layer : steering at the input of block ``layer``; positions : D4 (paper B: ``last_prompt_and_generated``).
    seed : the model × trait seed; the call for continuation length T uses ``derive_seed(seed, "generate", T)``.
    top_k, repetition_penalty : None = off (explicit decoding); set from :func:`steer.shipped_decoding` when
        ``paperB.decoding`` is ``faithful``.
    """
    rows: list[dict[str, Any]] = []
    for max_new in sorted({c.max_new_tokens for c in conditions}):
        jobs = [(c, p, s) for c in conditions if c.max_new_tokens == max_new for p, s in c.jobs]
        jobs.sort(key=lambda j: len(prompt_ids[j[0].prompt_set][j[1]]))  # stable: deterministic order
        ids = [list(prompt_ids[c.prompt_set][p]) for c, p, _ in jobs]
        offsets = torch.stack([c.offset.float() for c, _, _ in jobs])
        cfg = GenerationConfig(max_new_tokens=max_new, temperature=temperature, top_p=top_p, batch_size=batch_size,
                               seed=derive_seed(seed, "generate", max_new), top_k=top_k,
                               repetition_penalty=repetition_penalty)
        logger.info("generate: %d jobs of %d conditions, %d new tokens, batch %d", len(jobs),
                    len({c.cond for c, _, _ in jobs}), max_new, batch_size)
        gens = generate(model, tok, ids, cfg, vector=offsets, alpha=1.0, layer=layer,
                        positions=positions, n_samples=1, progress=progress)  # type: ignore[arg-type]
        for g in gens:
            c, p, s = jobs[g.prompt_index]
            rows.append({**c.labels(), "prompt_index": p, "sample": s, "prompt": g.prompt,
                         "continuation": g.continuation, "n_new_tokens": g.n_new_tokens, "max_new_tokens": max_new,
                         "batch_seed": g.seed, "offset_norm": float(c.offset.norm())})
    return rows
