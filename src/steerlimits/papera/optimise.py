"""E4 (prompt tuning and GCG-style optimisation) and E5 (soft prefix, then projection) (spec A §4 E4, E5; D11).

Target: steered states at ``hidden_states[l+1]`` on ``[x; y]`` (E4; ``y`` the steered greedy response) or on ``x``
alone (E5). ``x = [header; instruction; tail]`` with the header/tail shared by the test prompts.

* E4 *replacement*: the instruction is replaced by free embeddings initialised from it (one per instruction
  token, so positions stay aligned); *prefix*: ``n_virtual`` free embeddings before the instruction, small
  random init. Tuning minimises cross-entropy on ``y`` (AdamW), then each embedding is projected to its nearest
  token (L2). GCG (:func:`steerlimits.invert.gcg_search`) searches the same slots with the activation loss.
* E5: ``p`` free embeddings after the header, Adam on the MSE to the steered prompt-only states at the original
  (shifted) positions after the insertion point, then projection.

Distances are per-token L2 over the target's positions ``t ≥ 1`` (inserted positions removed), with the natural
displacement ``‖Δh_t‖`` over the same positions beside them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from steerlimits.seeds import derive_seed
from steerlimits.invert import TruncatedLM, embedding_matrix, gcg_search
from steerlimits.settings.papera import E4, E5
from steerlimits.papera.context import ModelContext, common_prefix_len, responses_xy
from steerlimits.papera.generation import greedy, greedy_embeds
from steerlimits.scoring import is_refusal

__all__ = ["nearest_tokens", "run_e4", "run_e5", "spans"]

logger = logging.getLogger(__name__)


def spans(ctx: ModelContext, vector: str, x: Sequence[int]) -> tuple[int, int]:
    """``(header, tail)`` lengths shared by the vector's test prompts (the instruction lies between)."""
    ids = ctx.prompt_ids(vector)
    head = common_prefix_len(ids)
    tail = common_prefix_len([list(reversed(s)) for s in ids])
    if head + tail >= len(x):
        raise ValueError(f"prompt of {len(x)} tokens has no instruction between header {head} and tail {tail}")
    return head, tail


@torch.no_grad()
def nearest_tokens(table: Tensor, embeds: Tensor, chunk: int = 16384) -> tuple[list[int], list[float]]:
    """Nearest token (L2) of each row of ``embeds (p, d)`` in ``table (V, d)``, and the distance."""
    best = torch.full((embeds.shape[0],), float("inf"))
    arg = torch.zeros(embeds.shape[0], dtype=torch.long)
    for lo in range(0, table.shape[0], chunk):
        d = torch.cdist(embeds.float(), table[lo:lo + chunk].float(), compute_mode="donot_use_mm_for_euclid_dist")
        v, i = d.min(1)
        better = v < best
        best[better], arg[better] = v[better], i[better] + lo
    return arg.tolist(), best.tolist()


def _adam(params: list[Tensor], loss_fn: Callable[[], Tensor], steps: int, lr: float,
          decoupled: bool) -> list[float]:
    opt = (torch.optim.AdamW if decoupled else torch.optim.Adam)(params, lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        with torch.enable_grad():
            loss = loss_fn()
            loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _l2(h: Tensor, target: Tensor, keep: Sequence[int]) -> float:
    idx = torch.as_tensor(list(keep), dtype=torch.long)
    return float(torch.linalg.vector_norm(h[idx] - target[idx], dim=-1).mean()) if len(idx) else float("nan")


def run_e4(ctx: ModelContext, vector: str, responses: Sequence[Mapping[str, Any]], cfg: E4) -> pd.DataFrame:
    """One row per prompt × mode × method (tuned soft, tuned projected, GCG; ``original`` for reference)."""
    m, model = ctx.measure_at(vector), ctx.model
    tl = TruncatedLM(model, m, ctx.spec.layers_path)
    table = embedding_matrix(model).detach()
    rows = []
    for idx, x, y in responses_xy(responses, cfg.n_prompts, cfg.y_tokens, "E4"):
        head, tail = spans(ctx, vector, x)
        seq = x + y
        target = ctx.states(vector, seq, steered=True).detach()
        natural = ctx.states(vector, seq)
        keep = list(range(1, len(seq)))
        y_keep = list(range(len(x), len(seq)))
        gap, gap_y = _l2(natural, target, keep), _l2(natural, target, y_keep)
        seed = derive_seed(ctx.seed, "paperA-e4", ctx.key, vector, idx)

        def evaluate(mode: str, method: str, prompt_ids: list[int] | None, prompt_e: Tensor | None,
                     n_ins: int, extra: dict[str, Any]) -> None:
            if prompt_e is not None:  # a soft prompt: generation and states from its embeddings
                gen = greedy_embeds(ctx, prompt_e, len(y))
                with torch.no_grad():
                    h_tf = tl.full(inputs_embeds=torch.cat([prompt_e, table[y]])[None])[0]
                    h_fr = tl.full(inputs_embeds=torch.cat([prompt_e, table[gen]])[None])[0] if gen else None
                n_prompt = prompt_e.shape[0]
            else:
                assert prompt_ids is not None
                gen = greedy(ctx, prompt_ids, len(y))
                h_tf = ctx.states(vector, prompt_ids + y)
                h_fr = ctx.states(vector, prompt_ids + gen) if gen else None
                n_prompt = len(prompt_ids)
            ins = (lambda t: t) if mode == "replacement" else (lambda t: t if t < head else t + n_ins)
            aligned = torch.stack([h_tf[ins(t)] for t in range(len(seq))])
            l2_tf, l2_tf_y = _l2(aligned, target, keep), _l2(aligned, target, y_keep)
            k = min(len(gen), len(y))
            l2_free = (float(torch.linalg.vector_norm(h_fr[n_prompt:n_prompt + k] - target[len(x):len(x) + k],
                                                      dim=-1).mean()) if h_fr is not None and k else float("nan"))
            text = ctx.tok.decode(gen, skip_special_tokens=True)
            rows.append({"model": ctx.key, "vector": vector, "prompt": idx, "mode": mode, "method": method,
                         "l2_teacher_forced": l2_tf, "l2_teacher_forced_response": l2_tf_y,
                         "l2_free_response": l2_free, "delta_h": gap, "delta_h_response": gap_y,
                         "ratio_to_delta_h": l2_tf / gap, "exact_match": gen == y,
                         "token_overlap": sum(a == b for a, b in zip(gen, y)) / len(y) if y else float("nan"),
                         "attack_success": float(not is_refusal(text)), "continuation": text, **extra})
            logger.info("E4 prompt %d %s/%s: teacher-forced L2 %.3g (Δh %.3g), exact %s", idx, mode, method,
                        l2_tf, gap, gen == y)

        evaluate("replacement", "original", x, None, 0, {})
        for mode in cfg.modes:
            g = torch.Generator().manual_seed(seed + (mode == "prefix"))
            if mode == "replacement":
                soft = table[x[head:len(x) - tail]].clone()
                pieces = lambda s: [table[x[:head]], s, table[x[len(x) - tail:]]]  # noqa: E731
            else:
                soft = torch.randn(cfg.n_virtual, table.shape[1], generator=g) * 0.1 * float(table.std())
                pieces = lambda s: [table[x[:head]], s, table[x[head:]]]  # noqa: E731
            soft.requires_grad_(True)

            def ce() -> Tensor:
                emb = torch.cat(pieces(soft) + [table[y]])[None]
                logits = model(inputs_embeds=emb, logits_to_keep=len(y) + 1, use_cache=False).logits[0, :-1]
                return torch.nn.functional.cross_entropy(logits, torch.as_tensor(y))

            losses = _adam([soft], ce, cfg.tuning_steps, cfg.lr, decoupled=True)
            n_ins = soft.shape[0] if mode == "prefix" else 0
            proj, pdist = nearest_tokens(table, soft.detach())
            info = {"final_ce": losses[-1] if losses else float("nan"), "n_slots": soft.shape[0],
                    "projection_dist_mean": sum(pdist) / len(pdist)}
            evaluate(mode, "tuned_soft", None, torch.cat(pieces(soft.detach())), n_ins, info)
            ids = (x[:head] + proj + x[len(x) - tail:]) if mode == "replacement" else (x[:head] + proj + x[head:])
            evaluate(mode, "tuned_projected", ids, None, n_ins, info)
            if cfg.gcg_steps > 0:
                if mode == "replacement":
                    res = gcg_search(model, target[head:], m, cfg.gcg_steps, cfg.gcg_width, cfg.gcg_topk,
                                     seed, init_ids=torch.tensor(x[head:len(x) - tail]),
                                     prefix_ids=torch.tensor(x[:head]), suffix_ids=torch.tensor(x[len(x) - tail:] + y),
                                     layers_path=ctx.spec.layers_path)
                    ids = x[:head] + res.best_ids + x[len(x) - tail:]
                else:
                    n_v = cfg.n_virtual
                    full_t = torch.cat([torch.zeros(n_v, target.shape[1]), target[head:]])
                    mask = torch.cat([torch.zeros(n_v), torch.ones(len(seq) - head)])
                    res = gcg_search(model, full_t, m, cfg.gcg_steps, cfg.gcg_width, cfg.gcg_topk, seed,
                                     prefix_ids=torch.tensor(x[:head]), suffix_ids=torch.tensor(x[head:] + y),
                                     target_mask=mask, layers_path=ctx.spec.layers_path)
                    ids = x[:head] + res.best_ids + x[head:]
                evaluate(mode, "gcg", ids, None, n_ins if mode == "prefix" else 0,
                         {"gcg_loss": res.best_loss, "gcg_evaluated": res.n_evaluated, "n_slots": len(res.best_ids)})
    return pd.DataFrame(rows)


def run_e5(ctx: ModelContext, vector: str, cfg: E5, max_new_tokens: int) -> dict[str, pd.DataFrame]:
    """``table``: one row per prompt × p × kind (``soft`` / ``projected``); ``generations``: natural, steered,
    soft-prefix and projected-prefix continuations at the best p (by the soft prefix's per-token L2)."""
    m, model = ctx.measure_at(vector), ctx.model
    tl = TruncatedLM(model, m, ctx.spec.layers_path)
    table = embedding_matrix(model).detach()
    std = float(table.std())
    rows, gens = [], []
    for i, x in enumerate(ctx.prompt_ids(vector, cfg.n_prompts)):
        head, _ = spans(ctx, vector, x)
        best: tuple[float, int, Tensor, list[int]] | None = None
        target = ctx.states(vector, x, steered=True).detach()
        natural = ctx.states(vector, x)
        after = list(range(head, len(x)))
        gap = _l2(natural, target, after)
        for p in cfg.p_values:
            g = torch.Generator().manual_seed(derive_seed(ctx.seed, "paperA-e5", ctx.key, vector, i, p))
            soft = (torch.randn(p, table.shape[1], generator=g) * cfg.init_scale * std).requires_grad_(True)

            def states_of(s: Tensor) -> Tensor:
                h = tl.full(inputs_embeds=torch.cat([table[x[:head]], s, table[x[head:]]])[None])[0]
                return h[head + p:]  # the original positions after the insertion point

            def mse() -> Tensor:
                return (states_of(soft) - target[head:]).pow(2).mean()

            losses = _adam([soft], mse, cfg.steps, cfg.lr, decoupled=False)
            proj, pdist = nearest_tokens(table, soft.detach())
            with torch.no_grad():
                h_soft = states_of(soft.detach())
            h_proj = ctx.states(vector, x[:head] + proj + x[head:])[head + p:]
            for kind, h in (("soft", h_soft), ("projected", h_proj)):
                d = torch.linalg.vector_norm(h - target[head:], dim=-1)
                rows.append({"model": ctx.key, "vector": vector, "prompt": i, "p": p, "kind": kind,
                             "best_mse": min(losses) if losses and kind == "soft" else float(d.pow(2).mean() / h.shape[1]),
                             "l2_total": float(d.sum()), "l2_per_token": float(d.mean()), "delta_h": gap,
                             "nearest_tokens": proj, "nearest_dist_mean": sum(pdist) / len(pdist),
                             "n_positions": len(after)})
            logger.info("E5 prompt %d p=%d: soft %.3g, projected %.3g per token (Δh %.3g)", i, p,
                        rows[-2]["l2_per_token"], rows[-1]["l2_per_token"], gap)
            if best is None or rows[-2]["l2_per_token"] < best[0]:
                best = (rows[-2]["l2_per_token"], p, soft.detach().clone(), proj)
        assert best is not None
        _, p, soft_best, proj = best
        n_new = max_new_tokens
        outs = {"natural": greedy(ctx, x, n_new), "steered": greedy(ctx, x, n_new, vector=vector),
                "soft_prefix": greedy_embeds(ctx, torch.cat([table[x[:head]], soft_best, table[x[head:]]]), n_new),
                "projected_prefix": greedy(ctx, x[:head] + proj + x[head:], n_new)}
        for kind, ids in outs.items():
            text = ctx.tok.decode(ids, skip_special_tokens=True)
            gens.append({"model": ctx.key, "vector": vector, "prompt": i, "best_p": p, "kind": kind,
                         "attack_success": float(not is_refusal(text)), "continuation": text})
    return {"table": pd.DataFrame(rows), "generations": pd.DataFrame(gens)}
