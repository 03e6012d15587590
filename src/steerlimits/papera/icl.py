"""E3: many-shot in-context learning does not reach the steered states (docs/paperA.md, claim A8).

Per test prompt ``x`` with steered greedy response ``y``: the target is the steered states on ``[x; y]`` (teacher
forced); ``N = 0`` is the natural states on ``[x; y]``. Two kinds of ``N`` demonstrations come before ``x``:

* ``icl`` (the method): a templated harmful request from the training pool (never a test prompt) + the model's
  own completion under directional ablation of the refusal direction, cut to ``demo_tokens``, ended by EOS;
* ``neutral`` (the control): a templated harmless request + the model's natural greedy completion, forced to
  the same length as the ``icl`` demonstration it stands for (EOS suppressed, then cut), ended by EOS — so ``x``
  sits at the same absolute positions after either kind.

Per ``N`` and kind, the natural states of ``[demos_N; x; y]`` on the ``[x; y]`` part are compared position by
position (L2 and cosine; ``x``'s first token excluded) with the steered target, with the ``N = 0`` natural
states (how far the demonstrations move ``x`` at all) and, for ``icl``, with the ``neutral`` states at the same
``N``: that is the **positive control** — a reachable target (natural states of ``x`` after ``N`` other
demonstrations of the same lengths) — and "gap closed" = 1 − d(icl_N, neutral_N) / d(x alone, neutral_N). The
attack success of the greedy continuation of ``[demos_N; x]`` is scored for both kinds. Demonstrations are nested
(``demos_N`` = the first ``N`` of one seeded order), so one key/value cache per kind serves every ``N`` and
prompt.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from steerlimits import data as D
from steerlimits.papera.context import ModelContext
from steerlimits.scoring import is_refusal
from steerlimits.settings.papera import E3
from steerlimits.steer import as_dtype, greedy

__all__ = ["demo_pool", "distinct_fraction", "neutral_pool", "run_e3"]

logger = logging.getLogger(__name__)

KINDS = ("icl", "neutral")


def _requests(ctx: ModelContext, vector: str, label: str, n: int, pool: int, seed: int) -> list[list[int]]:
    records = [r for r in D.load_records("refusal", ctx.data_dir) if r["label"] == label and r["split"] != "test"]
    order = np.random.default_rng(seed).permutation(len(records))[: min(pool, len(records))]
    return [ctx.encode(vector, records[int(j)]["text"]) for j in order[:n]]


def demo_pool(
    ctx: ModelContext,
    vector: str,
    n: int,
    pool: int,
    demo_tokens: int,
    seed: int,
    batch_size: int = 16,
    dtype: str = "float32",
) -> tuple[list[list[int]], list[list[int]]]:
    """``(demonstrations, completions)``: ``n`` demonstrations, a seeded draw of training/validation harmful requests
    (test split excluded, at most ``pool``), each templated + its greedy completion under directional ablation
    (left-padded batches, written by the model in ``dtype``) + EOS; and the completions alone."""
    eos = int(ctx.tok.eos_token_id)
    requests = _requests(ctx, vector, "harmful", n, pool, seed)
    completions = greedy(
        as_dtype(ctx.model, dtype),
        ctx.tok,
        requests,
        demo_tokens,
        ablate=ctx.vectors[vector],
        layers_path=ctx.spec.layers_path,
        batch_size=batch_size,
    )
    return [ids + completion + [eos] for ids, completion in zip(requests, completions)], completions


def neutral_pool(
    ctx: ModelContext,
    vector: str,
    lengths: Sequence[int],
    pool: int,
    seed: int,
    batch_size: int = 16,
    dtype: str = "float32",
) -> tuple[list[list[int]], list[list[int]]]:
    """``(demonstrations, completions)``: one neutral demonstration per entry of ``lengths``, exactly that long: a
    templated harmless request (seeded order, test split excluded; one short enough for the length) + its natural
    greedy completion with EOS suppressed, cut to fit, + EOS; and the completions alone."""
    eos = int(ctx.tok.eos_token_id)
    requests = _requests(ctx, vector, "harmless", pool, pool, seed)
    chosen, used = [], set()
    for length in lengths:
        j = next((j for j in range(len(requests)) if j not in used and len(requests[j]) <= length - 2), None)
        if j is None:
            j = next((j for j in range(len(requests)) if len(requests[j]) <= length - 2), None)
        if j is None:
            raise ValueError(f"no harmless request shorter than a demonstration of {length} tokens")
        used.add(j)
        chosen.append(j)
    need = [length - len(requests[j]) - 1 for length, j in zip(lengths, chosen)]
    width = max(need)
    completions = greedy(
        as_dtype(ctx.model, dtype),
        ctx.tok,
        [requests[j] for j in chosen],
        width,
        min_new_tokens=width,
        batch_size=batch_size,
    )
    out, written = [], []
    for j, n_new, comp in zip(chosen, need, completions):
        if len(comp) < n_new:
            raise RuntimeError(f"neutral completion stopped at {len(comp)} < {n_new} tokens")
        out.append(requests[j] + comp[:n_new] + [eos])
        written.append(comp[:n_new])
    return out, written


def _caches(ctx: ModelContext, demos: Sequence[Sequence[int]], usable: Sequence[int]) -> dict[int, DynamicCache]:
    """Key/value cache of the first ``N`` demonstrations for every ``N`` in ``usable`` (one pass, snapshots)."""
    caches: dict[int, DynamicCache] = {}
    cache = DynamicCache(config=ctx.model.config)
    for n in range(max(usable) + 1):
        if n in usable:
            caches[n] = copy.deepcopy(cache)
        if n < max(usable):
            ctx.model(input_ids=torch.tensor([list(demos[n])]), past_key_values=cache, use_cache=True, logits_to_keep=1)
    return caches


@torch.no_grad()
def run_e3(ctx: ModelContext, vector: str, responses: Sequence[Mapping[str, Any]], cfg: E3) -> dict[str, Any]:
    """``summary`` (one row per prompt × N × kind) and ``positions`` (per prompt × N × kind × position) tables."""
    m = ctx.measure_at(vector)
    limit = int(getattr(ctx.model.config, "max_position_embeddings", 1 << 30))
    seed = ctx.seed
    shots = sorted(set(int(n) for n in cfg.shots) | {0})
    rows, pos_rows, notes = [], [], []
    prompts = list(responses)[: cfg.n_prompts]
    longest = max(len(r["x"]) + len(r["y"][: cfg.y_tokens]) for r in prompts) + cfg.y_tokens
    demos, written = {}, {}
    demos["icl"], written["icl"] = demo_pool(
        ctx, vector, max(shots), cfg.pool, cfg.demo_tokens, seed, cfg.batch_size, cfg.demo_dtype
    )
    if len(demos["icl"]) < max(shots):
        notes.append(f"pool has {len(demos['icl'])} demonstrations: N capped")
    demos["neutral"], written["neutral"] = (
        neutral_pool(ctx, vector, [len(d) for d in demos["icl"]], cfg.pool, seed, cfg.batch_size, cfg.demo_dtype)
        if cfg.neutral
        else ([], [])
    )
    kinds = [k for k in KINDS if demos[k]]
    distinct = {k: float(np.median([distinct_fraction(c) for c in written[k]])) for k in kinds}
    degenerate = distinct["icl"] < cfg.min_demo_distinct
    if degenerate:
        notes.append(
            f"{vector}: the ablated demonstrations are degenerate (median distinct-token fraction "
            f"{distinct['icl']:.3g} < {cfg.min_demo_distinct:g}): ablating the direction breaks this model's writing"
        )
    lengths = np.cumsum([0] + [len(d) for d in demos["icl"]])
    usable = [n for n in shots if n <= len(demos["icl"]) and lengths[n] + longest <= limit]
    if len(usable) < len(shots):
        notes.append(f"N limited to {usable} by the context limit {limit} / pool")
    caches = {k: _caches(ctx, demos[k], usable) for k in kinds}
    for r in tqdm(prompts, desc=f"E3 {ctx.key}/{vector} prompts"):
        x, y = list(r["x"]), list(r["y"])[: cfg.y_tokens]
        if not y:
            notes.append(f"prompt {r['prompt']}: empty steered response, skipped")
            continue
        target = ctx.states(vector, x + y, steered=True)
        spans = {
            "instruction": slice(1, len(x)),
            "response": slice(len(x), len(x) + len(y)),
            "all": slice(1, len(x) + len(y)),
        }
        states: dict[tuple[str, int], torch.Tensor] = {}
        for n in usable:
            for kind in kinds:
                if n == 0 and kind != kinds[0]:
                    states[(kind, 0)] = states[(kinds[0], 0)]
                    continue
                out = ctx.model(
                    input_ids=torch.tensor([x + y]),
                    past_key_values=copy.deepcopy(caches[kind][n]),
                    use_cache=True,
                    output_hidden_states=True,
                    logits_to_keep=1,
                )
                states[(kind, n)] = out.hidden_states[m][0]
        h0 = states[(kinds[0], 0)]
        for n in usable:
            for kind in kinds:
                if n == 0 and kind != kinds[0]:
                    continue
                h = states[(kind, n)]
                l2 = torch.linalg.vector_norm(h - target, dim=-1).cpu().numpy()
                cos = (1 - torch.nn.functional.cosine_similarity(h, target, dim=-1)).cpu().numpy()
                moved = torch.linalg.vector_norm(h - h0, dim=-1).cpu().numpy()
                prefix = [t for d in demos[kind][:n] for t in d]
                cache = copy.deepcopy(caches[kind][n]) if n else None
                cont = greedy(ctx.model, ctx.tok, [prefix + x], cfg.y_tokens, past_key_values=cache)[0]
                text = ctx.tok.decode(cont, skip_special_tokens=True)
                row = {
                    "model": ctx.key,
                    "vector": vector,
                    "prompt": r["prompt"],
                    "kind": kind if n else "none",
                    "n_shots": n,
                    "n_demo_tokens": int(lengths[n]),
                    "x_len": len(x),
                    "y_len": len(y),
                    "attack_success": float(not is_refusal(text)),
                    "continuation": text,
                    "demo_distinct": distinct[kind] if n else float("nan"),
                    "demos_degenerate": degenerate,
                }
                ctrl = states.get(("neutral", n)) if kind == "icl" and n else None
                for name, sl in spans.items():
                    row[f"l2_{name}"] = float(l2[sl].mean())
                    row[f"cos_{name}"] = float(cos[sl].mean())
                    row[f"moved_{name}"] = float(moved[sl].mean())
                    if ctrl is not None:
                        d_ctrl = float(torch.linalg.vector_norm(h - ctrl, dim=-1)[sl].mean())
                        d_init = float(torch.linalg.vector_norm(h0 - ctrl, dim=-1)[sl].mean())
                        row[f"control_l2_{name}"] = d_ctrl
                        row[f"control_init_{name}"] = d_init
                        row[f"control_gap_closed_{name}"] = 1 - d_ctrl / d_init if d_init > 0 else float("nan")
                rows.append(row)
                pos_rows += [
                    {
                        "model": ctx.key,
                        "vector": vector,
                        "prompt": r["prompt"],
                        "kind": row["kind"],
                        "n_shots": n,
                        "position": t,
                        "span": "instruction" if t < len(x) else "response",
                        "l2": float(l2[t]),
                        "cos": float(cos[t]),
                        "moved": float(moved[t]),
                    }
                    for t in range(1, len(x) + len(y))
                ]
                logger.info(
                    "E3 prompt %d %s N=%d: L2 response %.4g (moved %.4g%s), attack success %d",
                    r["prompt"],
                    row["kind"],
                    n,
                    row["l2_response"],
                    row["moved_response"],
                    f", control gap closed {row['control_gap_closed_response']:.3f}" if ctrl is not None else "",
                    row["attack_success"],
                )
    return {
        "summary": pd.DataFrame(rows),
        "positions": pd.DataFrame(pos_rows),
        "notes": notes,
        "steered_attack_success": [float(not is_refusal(r["y_text"])) for r in prompts],
        "demo_lengths": {k: [len(d) for d in demos[k]] for k in kinds},
        "demo_distinct": distinct,
    }


def distinct_fraction(tokens: Sequence[int]) -> float:
    """Distinct tokens / tokens of one completion: most of it for prose, near 0 for a loop of a few tokens."""
    return len(set(tokens)) / len(tokens) if len(tokens) else float("nan")
