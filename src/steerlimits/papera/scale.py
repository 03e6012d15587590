"""E7: the steering displacement compared with the distance between different prompts (docs/paperA.md).

Prompt-only states at ``hidden_states[l+1]`` (one uncached pass each). Spans: the *user* span (after the shared
template header, before the shared template tail), trimmed to the shortest one in the set so positions align,
and the *tail* (the shared assistant-template tokens, aligned from the end). For prompt ``i``: displacement
``s_i = mean_t ‖h̃_t(x_i) − h_t(x_i)‖``; cross-prompt ``c_ij = mean_t ‖h_t(x_j) − h_t(x_i)‖`` and
``c̃_ij = mean_t ‖h̃_t(x_j) − h_t(x_i)‖``; ratio ``median_{j≠i} c_ij / s_i``. Sets: the test prompts of the
vector; for refusal also each test prompt with its paraphrases (groups of 6) and all of them pooled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from steerlimits import data as D
from steerlimits.papera.context import ModelContext, common_prefix_len
from steerlimits.settings.papera import E7

__all__ = ["cross_prompt", "run_e7"]

logger = logging.getLogger(__name__)


def _common_suffix_len(seqs: Sequence[Sequence[int]]) -> int:
    return common_prefix_len([list(reversed(s)) for s in seqs])


def cross_prompt(
    natural: Sequence[torch.Tensor], steered: Sequence[torch.Tensor], spans: Sequence[slice]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s (n,), c (n, n), c̃ (n, n))`` over aligned spans (each ``spans[i]`` of equal length)."""
    nat = torch.stack([h[sp] for h, sp in zip(natural, spans)])  # (n, k, d)
    ste = torch.stack([h[sp] for h, sp in zip(steered, spans)])
    s = torch.linalg.vector_norm(ste - nat, dim=-1).mean(-1)
    c = torch.linalg.vector_norm(nat[None, :] - nat[:, None], dim=-1).mean(-1)  # c[i, j] = ‖h(x_j) − h(x_i)‖
    ct = torch.linalg.vector_norm(ste[None, :] - nat[:, None], dim=-1).mean(-1)
    return s.cpu().numpy(), c.cpu().numpy(), ct.cpu().numpy()


def _rows(
    ctx: ModelContext,
    vector: str,
    set_name: str,
    names: Sequence[str],
    ids: Sequence[Sequence[int]],
    nat: Sequence[torch.Tensor],
    ste: Sequence[torch.Tensor],
) -> tuple[list[dict], list[dict]]:
    head, tail = common_prefix_len(ids), _common_suffix_len(ids)
    user = min(len(x) - head - tail for x in ids)
    spans = {"user": [slice(head, head + user) for _ in ids], "tail": [slice(len(x) - tail, len(x)) for x in ids]}
    rows, pairs = [], []
    for span_name, sp in spans.items():
        if sp[0].stop - sp[0].start < 1:
            continue
        s, c, ct = cross_prompt(nat, ste, sp)
        n = len(ids)
        for i in range(n):
            others = [j for j in range(n) if j != i]
            rows.append(
                {
                    "model": ctx.key,
                    "vector": vector,
                    "set": set_name,
                    "span": span_name,
                    "prompt": names[i],
                    "n_positions": sp[i].stop - sp[i].start,
                    "n_others": len(others),
                    "displacement": float(s[i]),
                    "cross_median": float(np.median(c[i, others])),
                    "cross_steered_median": float(np.median(ct[i, others])),
                    "ratio": float(np.median(c[i, others]) / s[i]),
                }
            )
            pairs += [
                {
                    "model": ctx.key,
                    "vector": vector,
                    "set": set_name,
                    "span": span_name,
                    "i": names[i],
                    "j": names[j],
                    "displacement": float(s[i]),
                    "cross": float(c[i, j]),
                    "cross_steered": float(ct[i, j]),
                }
                for j in others
            ]
    return rows, pairs


def run_e7(ctx: ModelContext, vector: str, cfg: E7) -> dict[str, pd.DataFrame]:
    """``ratios`` (one row per set × span × prompt) and ``pairs`` (every (i, j)) tables."""
    data_dir = ctx.data_dir
    texts = [p.user for p in D.test_prompts(vector, data_dir)]
    names = [f"test{i}" for i in range(len(texts))]
    groups: dict[str, list[int]] = {}
    if vector == "refusal" and cfg.paraphrases:
        test_ids = [
            r["id"] for r in D.load_records("refusal", data_dir) if r["label"] == "harmful" and r["split"] == "test"
        ]
        for tid, paras in D.refusal_paraphrases(data_dir).items():
            if tid not in test_ids:
                raise ValueError(f"paraphrases refer to unknown test prompt {tid!r}")
            members = [test_ids.index(tid)]
            for k, text in enumerate(paras):
                members.append(len(texts))
                texts.append(text)
                names.append(f"{tid}/para{k}")
            groups[tid] = members
    ids = [ctx.encode(vector, t) for t in texts]
    nat = [ctx.states(vector, x) for x in ids]
    ste = [ctx.states(vector, x, steered=True) for x in ids]
    n_test = len(D.test_prompts(vector, data_dir))
    sets = {"test": list(range(n_test))}
    sets.update({f"group:{g}": m for g, m in groups.items()})
    if groups:
        sets["all_paraphrases"] = list(range(len(ids)))
    rows, pairs = [], []
    for set_name, members in sets.items():
        r, p = _rows(
            ctx,
            vector,
            set_name,
            [names[i] for i in members],
            [ids[i] for i in members],
            [nat[i] for i in members],
            [ste[i] for i in members],
        )
        rows += r
        pairs += p
    table = pd.DataFrame(rows)
    logger.info(
        "E7 %s: median ratio cross/steer (test, user span) %.3g",
        vector,
        table[(table["set"] == "test") & (table["span"] == "user")]["ratio"].median(),
    )
    return {"ratios": table, "pairs": pd.DataFrame(pairs)}
