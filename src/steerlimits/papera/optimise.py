"""E4: prompt tuning and GCG-style optimisation towards the steered states, each with a positive control
(docs/paperA.md, claim A9).

Target: steered states at ``hidden_states[l+1]`` on ``[x; y]`` (``y`` the steered greedy response). With
``x = [header; instruction; tail]`` (header/tail shared by the test prompts) every search is written as
``[header (fixed, cached); slots (searched); suffix (fixed)]``:

* *replacement*: the slots are the instruction (initialised from it, so positions stay aligned), the suffix is
  ``[tail; y]``;
* *prefix*: ``n_virtual`` slots between the header and the instruction (random initialisation), the suffix is
  ``[instruction; tail; y]``; the inserted positions are not compared.

Methods: GCG (:func:`steerlimits.invert.gcg`: activation loss, prefix cache, bf16 screening, multi-position swaps,
round-trip filter, buffer) and prompt tuning (free slot embeddings, AdamW; ``tuning_loss = "activation"``: the
same activation loss, ``"cross_entropy"``: the authors' cross-entropy on ``y``), then projection of each tuned
embedding to its nearest allowed token (L2).

**Positive control.** Each method is run again, with the same budget and initialisation, on a *reachable* target
whose optimum is known and exact: replacement: the natural states of ``[x'; y]`` with ``x'`` = x with
``control_k`` instruction tokens replaced by random allowed tokens (the slots then differ from the optimum in
``control_k`` places); prefix: the natural states of ``[header; r; instruction; tail; y]`` with ``r`` random
allowed tokens (the optimum is ``r``). For cross-entropy tuning the control's ``y`` is the natural greedy
continuation of the control prompt (the one its objective can reach). "Gap closed" = 1 − final distance /
the initialisation's distance, on either target; claim A9 uses a method only if it closes at least half of the
control's gap.

Distances are per-token L2 over the target's positions ``t ≥ 1`` (inserted positions removed), teacher-forced on
``y``; the natural displacement ``‖Δh_t‖`` over the same positions is beside them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from steerlimits.invert import (
    GCGConfig,
    PrefixKV,
    TruncatedLM,
    allowed_tokens,
    bf16_copy,
    embedding_matrix,
    gcg,
    roundtrip_filter,
)
from steerlimits.papera.context import ModelContext, common_prefix_len, responses_xy
from steerlimits.scoring import is_refusal
from steerlimits.seeds import derive_seed
from steerlimits.settings.papera import E4
from steerlimits.steer import greedy

__all__ = ["Problem", "curve_rows", "minimise_rows", "nearest_tokens", "random_slots", "run_e4", "spans", "tune"]

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
def nearest_tokens(
    table: Tensor, embeds: Tensor, chunk: int = 16384, allowed: Tensor | None = None
) -> tuple[list[int], list[float]]:
    """Nearest token (L2) of each row of ``embeds (p, d)`` in ``table (V, d)`` (among ``allowed`` tokens when
    given), and the distance."""
    dev = table.device
    ids = (torch.arange(table.shape[0]) if allowed is None else allowed.nonzero().reshape(-1)).to(dev)
    embeds = embeds.to(dev)
    best = torch.full((embeds.shape[0],), float("inf"), device=dev)
    arg = torch.zeros(embeds.shape[0], dtype=torch.long, device=dev)
    for lo in range(0, ids.numel(), chunk):
        d = torch.cdist(
            embeds.float(), table[ids[lo : lo + chunk]].float(), compute_mode="donot_use_mm_for_euclid_dist"
        )
        v, i = d.min(1)
        better = v < best
        best[better], arg[better] = v[better], ids[lo : lo + chunk][i[better]]
    return arg.tolist(), best.tolist()


def random_slots(
    tok: Any,
    allowed: Tensor,
    n: int,
    gen: torch.Generator,
    base: Sequence[int] | None = None,
    k: int | None = None,
    tries: int = 200,
) -> list[int]:
    """``n`` random allowed tokens (or ``base`` with ``k`` random slots replaced) whose sequence survives
    decode → encode, so a search restricted to allowed, round-tripping prompts can reach it exactly."""
    pool = allowed.nonzero().reshape(-1)
    keep = roundtrip_filter(tok)
    for _ in range(tries):
        if base is None:
            out = pool[torch.randint(0, pool.numel(), (n,), generator=gen)]
        else:
            out = torch.tensor(list(base))
            where = torch.randperm(len(base), generator=gen)[: min(k or 1, len(base))]
            out[where] = pool[torch.randint(0, pool.numel(), (where.numel(),), generator=gen)]
            if torch.equal(out, torch.tensor(list(base))):
                continue
        if bool(keep(out[None])[0]):
            return out.tolist()
    raise RuntimeError(f"no round-tripping random slots found in {tries} tries")


@dataclass
class Problem:
    """``[header; slots; suffix]`` against ``target_rows (S + len(suffix), d)`` (states after the header,
    ``mask`` 0 on inserted slots); ``target (T, d)`` is the full target on ``[x; y]`` for evaluation, where
    ``ins(t)`` maps a target position to the searched sequence's position."""

    header: list[int]
    init: list[int]
    suffix: list[int]
    target_rows: Tensor
    mask: Tensor
    target: Tensor
    n_inserted: int
    y: list[int]

    def ids(self, slots: Sequence[int]) -> list[int]:
        return self.header + list(slots) + self.suffix

    def ins(self, t: int) -> int:
        return t if t < len(self.header) else t + self.n_inserted


def _aligned_l2(h: Tensor, prob: Problem, keep: Sequence[int]) -> float:
    idx = torch.as_tensor([prob.ins(t) for t in keep])
    tgt = prob.target[torch.as_tensor(list(keep))]
    return float(torch.linalg.vector_norm(h[idx] - tgt, dim=-1).mean())


def tune(
    tl: TruncatedLM,
    table: Tensor,
    probs: Sequence[Problem],
    init: Tensor,
    steps: int,
    lr: float,
    *,
    loss: str = "activation",
    model: Any = None,
    decoupled: bool = True,
) -> tuple[Tensor, list[list[float]]]:
    """Free slot embeddings for ``B`` problems with the same header and shapes (a steered target and its control),
    optimised in one batched forward: Adam(W) on the activation loss (sum over compared positions of
    ``‖h_t − target_t‖²``, header cached) or on the cross-entropy of each problem's ``y``. ``init (B, S, d)``.
    Returns each row's best iterate and its loss before each step plus the final one (:func:`minimise_rows`)."""
    header = probs[0].header
    with torch.no_grad():
        kv = tl.extend_many(PrefixKV(), torch.tensor(header))[0] if header else PrefixKV()
    suffix = torch.stack([table[torch.tensor(p.suffix, dtype=torch.long)] for p in probs])  # (B, R, d)
    rows = torch.stack([p.target_rows for p in probs])
    mask = torch.stack([p.mask for p in probs])
    head_e = table[torch.tensor(header, dtype=torch.long)].expand(len(probs), -1, -1)
    ys = torch.tensor([p.y for p in probs], device=table.device)
    n_y = ys.shape[1]

    def objective(s: Tensor) -> Tensor:  # (B,)
        if loss == "activation":
            h = tl.run(kv, inputs_embeds=torch.cat([s, suffix], dim=1))[0]
            return ((h - rows).pow(2).sum(-1) * mask).sum(-1)
        logits = model(
            inputs_embeds=torch.cat([head_e, s, suffix], dim=1), logits_to_keep=n_y + 1, use_cache=False
        ).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ys, reduction="none").mean(-1)

    return minimise_rows(objective, init, steps, lr, decoupled=decoupled)


def minimise_rows(
    objective: Callable[[Tensor], Tensor], init: Tensor, steps: int, lr: float, *, decoupled: bool = False
) -> tuple[Tensor, list[list[float]]]:
    """Adam (``decoupled``: AdamW) on ``B`` independent rows at once: ``objective (B, ...) -> (B,)`` is evaluated in
    one batched forward and the sum of its rows is differentiated (Adam is elementwise, so each row moves as if
    alone). Returns each row's best iterate (its initialisation included) and its loss before each step plus the
    final one; gradients are taken with respect to the rows only."""
    soft = init.clone().requires_grad_(True)
    opt = (torch.optim.AdamW if decoupled else torch.optim.Adam)([soft], lr=lr)
    n_rows = init.shape[0]
    best = soft.detach().clone()
    best_loss = torch.full((n_rows,), math.inf, device=soft.device)
    losses: list[list[float]] = [[] for _ in range(n_rows)]
    for step in range(steps + 1):
        with torch.enable_grad():
            per_row = objective(soft)
        values = per_row.detach().float()
        for j in range(n_rows):
            losses[j].append(float(values[j]))
        best_loss = best_loss.to(values.device)
        better = values < best_loss
        best[better], best_loss[better] = soft.detach()[better], values[better]
        if step == steps:
            break
        with torch.enable_grad():
            (soft.grad,) = torch.autograd.grad(per_row.sum(), soft)
        opt.step()
    return best, losses


@torch.no_grad()
def _stops(prob: Problem, target_kind: str) -> tuple[float, float | None]:
    """``(stop_loss, stop_fraction)``: GCG stops on the steered target only once it is reached (loss ~0); on the
    control also once the loss is 1 % of the initialisation's (about 90 % of the L2 gap closed: enough to show the
    method works there)."""
    scale = float(((prob.target_rows.norm(dim=-1) ** 2) * prob.mask).sum())
    return 1e-8 * scale, (None if target_kind == "steered" else 0.01)


def curve_rows(base: Mapping[str, Any], losses: Sequence[float], kind: str) -> list[dict[str, Any]]:
    """Loss-curve rows (``step``, ``loss``, best so far, relative to the initial loss) for A-F7."""
    rows, best = [], math.inf
    first = losses[0] if losses else math.nan
    for step, value in enumerate(losses):
        best = min(best, value)
        rows.append(
            {
                **base,
                "loss_kind": kind,
                "step": step,
                "loss": value,
                "best_loss": best,
                "best_relative": best / first if first else math.nan,
            }
        )
    return rows


def run_e4(ctx: ModelContext, vector: str, responses: Sequence[Mapping[str, Any]], cfg: E4) -> dict[str, pd.DataFrame]:
    """``table``: one row per prompt × mode × target (steered / control) × method (init, tuned_soft,
    tuned_projected, gcg; ``original`` = x itself); ``curves``: the loss of every run per step."""
    table = embedding_matrix(ctx.model).detach()
    shared = {
        "tl": TruncatedLM(ctx.model, ctx.measure_at(vector), ctx.spec.layers_path),
        "table": table,
        "allowed": allowed_tokens(ctx.tok, table.shape[0]),
        "keep_fn": roundtrip_filter(ctx.tok),
        "screen": bf16_copy(ctx.model) if cfg.gcg_screen == "bfloat16" else None,
    }
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for idx, x, y in responses_xy(responses, cfg.n_prompts, cfg.y_tokens, "E4"):
        _e4_prompt(ctx, vector, cfg, idx, x, y, shared, rows, curves)
    return {"table": pd.DataFrame(rows), "curves": pd.DataFrame(curves)}


def _e4_prompt(
    ctx: ModelContext,
    vector: str,
    cfg: E4,
    idx: int,
    x: list[int],
    y: list[int],
    shared: Mapping[str, Any],
    rows: list[dict[str, Any]],
    curves: list[dict[str, Any]],
) -> None:
    """Every E4 run of one prompt (both modes, steered and control targets), appended to ``rows``/``curves``."""
    m, model = ctx.measure_at(vector), ctx.model
    tl, table, allowed = shared["tl"], shared["table"], shared["allowed"]
    keep_fn, screen = shared["keep_fn"], shared["screen"]
    head, tail = spans(ctx, vector, x)
    instr = x[head : len(x) - tail]
    seq = x + y
    keep = list(range(1, len(seq)))
    y_keep = list(range(len(x), len(seq)))
    steered = ctx.states(vector, seq, steered=True).detach()
    natural = ctx.states(vector, seq).detach()
    dh = torch.linalg.vector_norm(steered - natural, dim=-1)
    gap, gap_y = float(dh[keep].mean()), float(dh[y_keep].mean())
    seed = derive_seed(ctx.seed, "paperA-e4", ctx.key, vector, idx)
    gen = torch.Generator().manual_seed(derive_seed(seed, "control"))
    base = {"model": ctx.key, "vector": vector, "prompt": idx, "delta_h": gap, "delta_h_response": gap_y}

    def evaluate(
        prob: Problem,
        mode: str,
        target_kind: str,
        method: str,
        slots: Sequence[int] | None,
        soft: Tensor | None,
        l2_init: float | None,
        extra: Mapping[str, Any],
    ) -> dict[str, Any]:
        with torch.no_grad():
            if soft is not None:
                embeds = torch.cat(
                    [
                        table[torch.tensor(prob.header, dtype=torch.long)],
                        soft,
                        table[torch.tensor(prob.suffix, dtype=torch.long)],
                    ]
                )
                h = tl.full(inputs_embeds=embeds[None])[0]
            else:
                assert slots is not None
                h = ctx.states(vector, prob.ids(slots))
        l2 = _aligned_l2(h, prob, keep)
        row = {
            **base,
            "mode": mode,
            "target": target_kind,
            "method": method,
            "l2_teacher_forced": l2,
            "l2_teacher_forced_response": _aligned_l2(h, prob, y_keep) if target_kind == "steered" else math.nan,
            "l2_init": l2_init if l2_init is not None else l2,
            "ratio_to_delta_h": l2 / gap,
            "gap_closed": 1 - l2 / l2_init if l2_init else math.nan,
            **extra,
        }
        if target_kind == "steered":  # behaviour of the steered runs only (controls: states only)
            n_prompt = (
                len(prob.header) + len(prob.suffix) - len(y) + (soft.shape[0] if soft is not None else len(slots or []))
            )
            if soft is not None:
                cont = greedy(model, ctx.tok, [], len(y), inputs_embeds=embeds[:n_prompt])[0]
            else:
                cont = greedy(model, ctx.tok, [prob.ids(slots or [])[:n_prompt]], len(y))[0]
            k = min(len(cont), len(y))
            if k:
                with torch.no_grad():
                    if soft is not None:
                        hf = tl.full(inputs_embeds=torch.cat([embeds[:n_prompt], table[cont]])[None])[0]
                    else:
                        hf = ctx.states(vector, prob.ids(slots or [])[:n_prompt] + cont)
                l2_free = float(
                    torch.linalg.vector_norm(
                        hf[n_prompt : n_prompt + k] - prob.target[len(x) : len(x) + k], dim=-1
                    ).mean()
                )
            else:
                l2_free = math.nan
            text = ctx.tok.decode(cont, skip_special_tokens=True)
            row.update(
                {
                    "l2_free_response": l2_free,
                    "exact_match": cont == y,
                    "token_overlap": sum(a == b for a, b in zip(cont, y)) / len(y),
                    "attack_success": float(not is_refusal(text)),
                    "continuation": text,
                }
            )
        rows.append(row)
        logger.info(
            "E4 prompt %d %s/%s/%s: L2 %.4g (init %.4g, delta_h %.4g)",
            idx,
            mode,
            target_kind,
            method,
            l2,
            row["l2_init"],
            gap,
        )
        return row

    problems: dict[tuple[str, str], Problem] = {}
    for mode in cfg.modes:
        if mode == "replacement":
            slots0, n_v = list(instr), 0
            suffix = x[len(x) - tail :] + y
            x_c = (
                x[:head]
                + random_slots(ctx.tok, allowed, len(instr), gen, base=instr, k=cfg.control_k)
                + x[len(x) - tail :]
            )
        else:
            n_v = cfg.n_virtual
            slots0 = random_slots(ctx.tok, allowed, n_v, torch.Generator().manual_seed(derive_seed(seed, "init")))
            suffix = x[head:] + y
            x_c = x[:head] + random_slots(ctx.tok, allowed, n_v, gen) + x[head:]
        mask = torch.cat([torch.zeros(n_v), torch.ones(len(seq) - head)]).to(steered.device)
        pad = torch.zeros(n_v, steered.shape[1], device=steered.device)
        problems[(mode, "steered")] = Problem(
            x[:head], slots0, suffix, torch.cat([pad, steered[head:]]), mask, steered, n_v, y
        )
        # the reachable control: natural states of x_c (teacher-forced on y, or on x_c's own greedy
        # continuation when the tuning objective is the cross-entropy of the response)
        y_c = y if cfg.tuning_loss == "activation" else greedy(model, ctx.tok, [x_c], len(y), min_new_tokens=len(y))[0]
        h_c = ctx.states(vector, x_c + y_c).detach()
        prob = Problem(
            x[:head],
            slots0,
            suffix[: len(suffix) - len(y)] + y_c,
            torch.cat([pad, h_c[head + n_v :]]),
            mask,
            h_c,
            n_v,
            y_c,
        )
        prob.target = torch.stack([h_c[prob.ins(t)] for t in range(len(seq))])
        problems[(mode, "control")] = prob
    for mode in cfg.modes:
        pair = [problems[(mode, "steered")], problems[(mode, "control")]]
        l2_0: dict[str, float] = {}
        for target_kind, prob in zip(("steered", "control"), pair):
            init_row = evaluate(prob, mode, target_kind, "init", prob.init, None, None, {})
            l2_0[target_kind] = init_row["l2_teacher_forced"]
            if mode == "replacement" and target_kind == "steered":
                rows.append({**init_row, "method": "original"})
        # prompt tuning: the steered target and its control in one batched run (same initialisation)
        if cfg.tuning_steps > 0:
            if mode == "replacement":
                soft0 = table[torch.tensor(pair[0].init)].clone()
            else:
                g = torch.Generator().manual_seed(derive_seed(seed, "soft-init", mode))
                soft0 = torch.randn(len(pair[0].init), table.shape[1], generator=g) * 0.1 * float(table.std())
                soft0 = soft0.to(table.device)  # drawn on the CPU: the same draws on every device
            lr = cfg.lr * float(table.std()) if cfg.lr_units == "embedding_std" else cfg.lr
            softs, losses = tune(
                tl, table, pair, soft0.expand(2, -1, -1), cfg.tuning_steps, lr, loss=cfg.tuning_loss, model=model
            )
            for j, (target_kind, prob) in enumerate(zip(("steered", "control"), pair)):
                run_base = {**base, "mode": mode, "target": target_kind}
                curves += curve_rows({**run_base, "method": "tuning"}, losses[j], cfg.tuning_loss)
                proj, pdist = nearest_tokens(table, softs[j])
                soft_init_l2 = (
                    l2_0[target_kind]
                    if mode == "replacement"
                    else evaluate(prob, mode, target_kind, "tuning_init", None, soft0, None, {})["l2_teacher_forced"]
                )
                info = {
                    "final_loss": min(losses[j]),
                    "init_loss": losses[j][0],
                    "steps": cfg.tuning_steps,
                    "n_slots": len(prob.init),
                    "projection_dist_mean": sum(pdist) / len(pdist),
                }
                evaluate(
                    prob,
                    mode,
                    target_kind,
                    "tuned_soft",
                    None,
                    softs[j],
                    soft_init_l2,
                    {**info, "returned_init": bool(torch.equal(softs[j], soft0))},
                )
                evaluate(
                    prob,
                    mode,
                    target_kind,
                    "tuned_projected",
                    proj,
                    None,
                    l2_0[target_kind],
                    {**info, "returned_init": proj == list(prob.init)},
                )
        if cfg.gcg_steps > 0:
            for target_kind, prob in zip(("steered", "control"), pair):
                gc = GCGConfig(
                    n_steps=cfg.gcg_steps,
                    search_width=cfg.gcg_width,
                    topk=cfg.gcg_topk,
                    n_replace=cfg.gcg_n_replace,
                    buffer_size=cfg.gcg_buffer,
                    n_verify=cfg.gcg_verify,
                    stop_loss=_stops(prob, target_kind)[0],
                    stop_fraction=_stops(prob, target_kind)[1],
                    seed=derive_seed(seed, "gcg", mode),
                    layers_path=ctx.spec.layers_path,
                )
                res = gcg(
                    model,
                    prob.target_rows,
                    m,
                    gc,
                    init_ids=torch.tensor(prob.init),
                    prefix_ids=torch.tensor(prob.header, dtype=torch.long),
                    suffix_ids=torch.tensor(prob.suffix, dtype=torch.long),
                    target_mask=prob.mask,
                    allowed=allowed,
                    keep=keep_fn,
                    screen_model=screen,
                )
                curves += curve_rows(
                    {**base, "mode": mode, "target": target_kind, "method": "gcg"}, res.best_losses, "activation"
                )
                evaluate(
                    prob,
                    mode,
                    target_kind,
                    "gcg",
                    res.best_ids,
                    None,
                    l2_0[target_kind],
                    {
                        "final_loss": res.best_loss,
                        "init_loss": res.init_loss,
                        "steps": res.n_steps_run,
                        "n_slots": len(res.best_ids),
                        "gcg_evaluated": res.n_evaluated,
                        "gcg_screened": res.n_screened,
                        "gcg_filtered": res.n_filtered,
                        "returned_init": res.returned_init,
                        "stopped_early": res.stopped_early,
                        "wall_s": res.wall_s,
                    },
                )
