"""E3: many-shot in-context learning does not reach the steered states (spec A §4 E3).

Per test prompt ``x`` with steered greedy response ``y``: the target is the steered states on ``[x; y]`` (teacher
forced); ``N = 0`` is the natural states on ``[x; y]``. For ``N`` demonstrations (a templated harmful request
from the training pool, never a test prompt, + the model's own completion under directional ablation of the
refusal direction, cut to ``demo_tokens``, ended by EOS), the natural states of ``[demos_N; x; y]`` on the
``[x; y]`` part are compared with the target position by position (L2 and cosine distance; ``x``'s first token,
the attention sink when ``x`` stands alone, is excluded) and the attack success of the greedy continuation of
``[demos_N; x]`` is scored. Demonstrations are nested (``demos_N`` = the first ``N`` of one seeded order), so
one key/value cache of the demonstrations serves every ``N`` and every prompt.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import DynamicCache

from steerlimits import data as D
from steerlimits.settings.papera import E3
from steerlimits.papera.context import ModelContext
from steerlimits.papera.generation import greedy, greedy_batch
from steerlimits.scoring import is_refusal

__all__ = ["demo_pool", "run_e3"]

logger = logging.getLogger(__name__)


def demo_pool(ctx: ModelContext, vector: str, n: int, pool: int, demo_tokens: int, seed: int,
              batch_size: int = 16) -> list[list[int]]:
    """``n`` demonstrations: seeded draw of training/validation harmful requests (test split excluded, at most
    ``pool``), each templated + its greedy completion under directional ablation (left-padded batches) + EOS."""
    records = [r for r in D.load_records("refusal", ctx.data_dir)
               if r["label"] == "harmful" and r["split"] != "test"]
    order = np.random.default_rng(seed).permutation(len(records))[:min(pool, len(records))]
    eos = int(ctx.tok.eos_token_id)
    requests = [ctx.encode(vector, records[int(j)]["text"]) for j in order[:n]]
    completions = greedy_batch(ctx, requests, demo_tokens, ablate=vector, batch_size=batch_size)
    demos = [ids + completion + [eos] for ids, completion in zip(requests, completions)]
    return demos


@torch.no_grad()
def run_e3(ctx: ModelContext, vector: str, responses: Sequence[Mapping[str, Any]], cfg: E3) -> dict[str, pd.DataFrame]:
    """``summary`` (one row per prompt × N) and ``positions`` (per prompt × N × position) tables."""
    m = ctx.measure_at(vector)
    limit = int(getattr(ctx.model.config, "max_position_embeddings", 1 << 30))
    seed = ctx.seed
    shots = sorted(set(int(n) for n in cfg.shots) | {0})
    rows, pos_rows, notes = [], [], []
    prompts = list(responses)[:cfg.n_prompts]
    longest = max(len(r["x"]) + len(r["y"][:cfg.y_tokens]) for r in prompts) + cfg.y_tokens
    demos = demo_pool(ctx, vector, max(shots), cfg.pool, cfg.demo_tokens, seed, cfg.batch_size)
    if len(demos) < max(shots):
        notes.append(f"pool has {len(demos)} demonstrations: N capped")
    lengths = np.cumsum([0] + [len(d) for d in demos])
    usable = [n for n in shots if n <= len(demos) and lengths[n] + longest <= limit]
    if len(usable) < len(shots):
        notes.append(f"N limited to {usable} by the context limit {limit} / pool")
    # one cache of the demonstrations, snapshot at every N
    caches: dict[int, DynamicCache] = {}
    cache = DynamicCache(config=ctx.model.config)
    for n in range(max(usable) + 1):
        if n in usable:
            caches[n] = copy.deepcopy(cache)
        if n < max(usable):
            ctx.model(input_ids=torch.tensor([demos[n]]), past_key_values=cache, use_cache=True, logits_to_keep=1)
    for r in prompts:
        x, y = list(r["x"]), list(r["y"])[:cfg.y_tokens]
        if not y:
            notes.append(f"prompt {r['prompt']}: empty steered response, skipped")
            continue
        target = ctx.states(vector, x + y, steered=True)
        spans = {"instruction": slice(1, len(x)), "response": slice(len(x), len(x) + len(y)),
                 "all": slice(1, len(x) + len(y))}
        for n in usable:
            out = ctx.model(input_ids=torch.tensor([x + y]), past_key_values=copy.deepcopy(caches[n]),
                            use_cache=True, output_hidden_states=True, logits_to_keep=1)
            h = out.hidden_states[m][0]
            l2 = torch.linalg.vector_norm(h - target, dim=-1).numpy()
            cos = (1 - torch.nn.functional.cosine_similarity(h, target, dim=-1)).numpy()
            prefix = [t for d in demos[:n] for t in d]
            cont = greedy(ctx, prefix + x, cfg.y_tokens, past_key_values=copy.deepcopy(caches[n]) if n else None)
            text = ctx.tok.decode(cont, skip_special_tokens=True)
            row = {"model": ctx.key, "vector": vector, "prompt": r["prompt"], "n_shots": n,
                   "n_demo_tokens": int(lengths[n]), "x_len": len(x), "y_len": len(y),
                   "attack_success": float(not is_refusal(text)), "continuation": text}
            for name, sl in spans.items():
                row[f"l2_{name}"] = float(l2[sl].mean())
                row[f"cos_{name}"] = float(cos[sl].mean())
            rows.append(row)
            pos_rows += [{"model": ctx.key, "vector": vector, "prompt": r["prompt"], "n_shots": n, "position": t,
                          "span": "instruction" if t < len(x) else "response", "l2": float(l2[t]),
                          "cos": float(cos[t])} for t in range(1, len(x) + len(y))]
            logger.info("E3 prompt %d N=%d: L2 instruction %.3g response %.3g, attack success %d", r["prompt"], n,
                        row["l2_instruction"], row["l2_response"], row["attack_success"])
    return {"summary": pd.DataFrame(rows), "positions": pd.DataFrame(pos_rows), "notes": notes,
            "steered_attack_success": [float(not is_refusal(r["y_text"])) for r in prompts]}
