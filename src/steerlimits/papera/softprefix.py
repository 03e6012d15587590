"""E5: a soft prefix of length p, then projection to tokens, with a warm-started chain over p and a positive
control (docs/paperA.md, claim A10).

Target: steered prompt-only states at ``hidden_states[l+1]`` of ``x = [header; rest]`` at the original positions
after the insertion point. ``p`` free embeddings sit after the header; Adam on the mean squared error at the
original (shifted) positions; the header's key/value cache is computed once.

Adam's step size is ``lr × std(E)`` by default (``lr_units``): the embedding tables of the default models differ
in scale by a factor of 60, so an absolute step that suits one model diverges or stalls on another.

**Warm start.** ``p`` runs in increasing order; the ``p``-slot prefix starts from the previous ``p'``-slot
solution with ``p − p'`` new slots *prepended*, so the old slots keep their places next to the instruction; the new
slots are filled with whichever of three candidates perturbs the previous solution least (:func:`_warm_init`).
A p-slot prefix cannot reproduce a shorter one exactly (every later position shifts and attends to the new
slot), so the run's own best can still exceed the previous one; the table gives both the run's own distance
(``l2_per_token``) and the best over ``p' ≤ p`` (``l2_best_upto_p``, non-increasing by construction).

**Positive control.** The same chain, budget and initialisations aimed at a reachable target: the natural states
of ``[header; r_p; rest]`` with ``r_p`` random tokens (nested: ``r_p`` = new tokens + ``r_p'``), whose exact
solution is their embeddings. "Gap closed" = 1 − final distance / the distance of a cold random ``p``-slot
initialisation, on either target. The steered and control prefixes are optimised in one batched forward.
"""

from __future__ import annotations

import logging
import math

import pandas as pd
import torch
from torch import Tensor

from steerlimits.invert import PrefixKV, TruncatedLM, embedding_matrix
from steerlimits.papera.context import ModelContext
from steerlimits.papera.optimise import curve_rows, minimise_rows, nearest_tokens, spans
from steerlimits.scoring import is_refusal
from steerlimits.seeds import derive_seed
from steerlimits.settings.papera import E5
from steerlimits.steer import greedy

__all__ = ["fit_soft_prefix", "run_e5"]

logger = logging.getLogger(__name__)


def fit_soft_prefix(
    tl: TruncatedLM, kv: PrefixKV, rest: Tensor, target: Tensor, init: Tensor, steps: int, lr: float
) -> tuple[Tensor, list[list[float]]]:
    """Adam on ``mean ‖h_t − target_t‖²/d`` over the ``rest`` positions after the soft slots, for ``B`` independent
    prefixes at once (one batched forward; Adam is elementwise, so each row is optimised as if alone).

    ``rest (R, d)`` embeddings shared by the rows, ``target (B, R, d)``, ``init (B, p, d)``. Returns each row's best
    iterate (its initialisation included) ``(B, p, d)`` and its loss before each step plus the final one
    (:func:`steerlimits.papera.optimise.minimise_rows`)."""
    n_rows, p = init.shape[0], init.shape[1]
    rest_b = rest.to(init.device).expand(n_rows, -1, -1)

    def mse(s: Tensor) -> Tensor:
        h = tl.run(kv, inputs_embeds=torch.cat([s, rest_b], dim=1))[0][:, p:]
        return (h - target).pow(2).mean(dim=(1, 2))  # (B,)

    return minimise_rows(mse, init, steps, lr)


@torch.no_grad()
def _warm_init(
    tl: TruncatedLM, kv: PrefixKV, rest: Tensor, targets: Tensor, prev: Tensor, fresh: Tensor, last_header: Tensor
) -> Tensor:
    """``(B, p, d)``: the previous solutions ``prev (B, p', d)`` with ``k = p − p'`` new slots prepended, chosen per row
    among three fillings by the lowest loss at the start: random (``fresh (k, d)``), copies of the header's last
    token embedding (``last_header``: the header looks one token longer) or copies of the row's first slot. A new
    slot is never inert (RMSNorm removes any small scale, and later positions shift by one and attend to it), so
    the least disruptive filling is measured, not assumed."""
    n_rows, k = prev.shape[0], fresh.shape[0]
    options = [fresh.expand(n_rows, -1, -1), last_header.expand(n_rows, k, -1), prev[:, :1].expand(-1, k, -1)]
    best = torch.cat([options[0], prev], dim=1)
    best_loss = torch.full((n_rows,), math.inf, device=prev.device)
    for new in options:
        cand = torch.cat([new, prev], dim=1)
        p = cand.shape[1]
        h = tl.run(kv, inputs_embeds=torch.cat([cand, rest.expand(n_rows, -1, -1)], dim=1))[0][:, p:]
        loss = (h - targets).pow(2).mean(dim=(1, 2))
        best_loss = best_loss.to(loss.device)
        better = loss < best_loss
        best[better], best_loss[better] = cand[better], loss[better]
    return best


def run_e5(ctx: ModelContext, vector: str, cfg: E5, max_new_tokens: int) -> dict[str, pd.DataFrame]:
    """``table``: one row per prompt × target (steered / control) × p × kind (``soft`` / ``projected``);
    ``generations``: natural, steered, soft-prefix and projected-prefix continuations at the best p;
    ``curves``: loss per step of every run."""
    m, model = ctx.measure_at(vector), ctx.model
    tl = TruncatedLM(model, m, ctx.spec.layers_path)
    table = embedding_matrix(model).detach()
    std, d = float(table.std()), table.shape[1]
    rows, gens, curves = [], [], []
    p_values = sorted(set(int(p) for p in cfg.p_values))
    lr = cfg.lr * std if cfg.lr_units == "embedding_std" else cfg.lr
    for i, x in enumerate(ctx.prompt_ids(vector, cfg.n_prompts)):
        head, _ = spans(ctx, vector, x)
        header = torch.tensor(x[:head])
        with torch.no_grad():
            kv = tl.extend_many(PrefixKV(), header)[0] if head else PrefixKV()
        rest = table[torch.tensor(x[head:])]
        steered = ctx.states(vector, x, steered=True).detach()
        natural = ctx.states(vector, x)
        gap = float(torch.linalg.vector_norm(natural[head:] - steered[head:], dim=-1).mean())
        seed = derive_seed(ctx.seed, "paperA-e5", ctx.key, vector, i)
        vocab = table.shape[0]
        control_tokens = torch.randint(
            0, vocab, (max(p_values),), generator=torch.Generator().manual_seed(derive_seed(seed, "control"))
        )
        best: dict[str, tuple[float, int, Tensor, list[int]]] = {}
        kinds = ("steered", "control")
        prev = torch.empty(len(kinds), 0, d, device=table.device)
        envelope = {k: math.inf for k in kinds}
        for p in p_values:
            g = torch.Generator().manual_seed(derive_seed(seed, "init", p))
            # the cold initialisation, drawn on the CPU (the same draws on every device)
            fresh = (torch.randn(p, d, generator=g) * cfg.init_scale * std).to(table.device)
            r_p = control_tokens[max(p_values) - p :].tolist()  # nested: longer = new tokens + shorter
            targets = torch.stack([steered[head:], ctx.states(vector, x[:head] + r_p + x[head:]).detach()[head + p :]])
            if cfg.warm_start and prev.shape[1]:
                init = _warm_init(tl, kv, rest, targets, prev, fresh[: p - prev.shape[1]], table[x[head - 1]])
            else:
                init = fresh.expand(len(kinds), -1, -1).clone()
            softs, losses = fit_soft_prefix(tl, kv, rest, targets, init, cfg.steps, lr)
            prev = softs
            with torch.no_grad():
                h_cold = tl.run(kv, inputs_embeds=torch.cat([fresh, rest])[None])[0][0, p:]
            for j, target_kind in enumerate(kinds):
                soft, tgt = softs[j], targets[j]
                base = {"model": ctx.key, "vector": vector, "prompt": i, "target": target_kind, "p": p}
                curves += curve_rows({**base, "method": "soft_prefix", "mode": "prefix"}, losses[j], "mse")
                proj, pdist = nearest_tokens(table, soft)
                with torch.no_grad():
                    h_soft = tl.run(kv, inputs_embeds=torch.cat([soft, rest])[None])[0][0, p:]
                h_proj = ctx.states(vector, x[:head] + proj + x[head:])[head + p :]
                l2_cold = float(torch.linalg.vector_norm(h_cold - tgt, dim=-1).mean())
                for kind, h in (("soft", h_soft), ("projected", h_proj)):
                    dist = torch.linalg.vector_norm(h - tgt, dim=-1)
                    l2 = float(dist.mean())
                    if kind == "soft":
                        envelope[target_kind] = min(envelope[target_kind], l2)
                        l2_soft = l2
                    rows.append(
                        {
                            **base,
                            "kind": kind,
                            "best_mse": min(losses[j]) if kind == "soft" else float(dist.pow(2).mean() / h.shape[1]),
                            "l2_total": float(dist.sum()),
                            "l2_per_token": l2,
                            "l2_best_upto_p": envelope[target_kind] if kind == "soft" else math.nan,
                            "l2_init": l2_cold,
                            "gap_closed": 1 - l2 / l2_cold if l2_cold else math.nan,
                            "rms_run_init": math.sqrt(losses[j][0] * d) if kind == "soft" else math.nan,
                            "delta_h": gap,
                            "nearest_tokens": proj,
                            "nearest_dist_mean": sum(pdist) / len(pdist),
                            "n_positions": len(x) - head,
                            "steps": cfg.steps,
                            "warm_start": cfg.warm_start,
                            "returned_init": float(torch.equal(soft, init[j])) if kind == "soft" else math.nan,
                            "projection_is_control": float(proj == r_p) if target_kind == "control" else math.nan,
                        }
                    )
                logger.info(
                    "E5 prompt %d %s p=%d: soft %.4g (best up to p %.4g), projected %.4g per token; cold "
                    "init %.4g; delta_h %.4g",
                    i,
                    target_kind,
                    p,
                    rows[-2]["l2_per_token"],
                    envelope[target_kind],
                    rows[-1]["l2_per_token"],
                    l2_cold,
                    gap,
                )
                if target_kind not in best or l2_soft < best[target_kind][0]:
                    best[target_kind] = (l2_soft, p, soft.clone(), proj)
        _, p, soft_best, proj = best["steered"]
        embeds = torch.cat([table[torch.tensor(x[:head])], soft_best, rest])
        outs = {
            "natural": greedy(model, ctx.tok, [x], max_new_tokens)[0],
            "steered": greedy(
                model,
                ctx.tok,
                [x],
                max_new_tokens,
                vector=ctx.vectors[vector],
                alpha=ctx.alpha[vector],
                layer=ctx.layer[vector],
                layers_path=ctx.spec.layers_path,
            )[0],
            "soft_prefix": greedy(model, ctx.tok, [], max_new_tokens, inputs_embeds=embeds)[0],
            "projected_prefix": greedy(model, ctx.tok, [x[:head] + proj + x[head:]], max_new_tokens)[0],
        }
        for kind, ids in outs.items():
            text = ctx.tok.decode(ids, skip_special_tokens=True)
            gens.append(
                {
                    "model": ctx.key,
                    "vector": vector,
                    "prompt": i,
                    "best_p": p,
                    "kind": kind,
                    "attack_success": float(not is_refusal(text)),
                    "continuation": text,
                }
            )
    return {"table": pd.DataFrame(rows), "generations": pd.DataFrame(gens), "curves": pd.DataFrame(curves)}
