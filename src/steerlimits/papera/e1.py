"""E1 (natural vs steered inversion) and E2 (coefficient sweep) of one model, with certificates (docs/paperA.md).

One model per call, because the linear decoder (per measurement site) and the certification sweeps are shared
by both vectors and every coefficient: a sweep at a prefix ``ŝ_<t`` serves every target with that prefix
(natural, steered, each E2 coefficient; both vectors in the shared template header).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from steerlimits import data as D
from steerlimits.invert import CertItem, bf16_copy, certify, embedding_matrix
from steerlimits.papera.context import ModelContext
from steerlimits.papera.inversion import PromptRun, SearchSetup, invert_condition, natural_states_many
from steerlimits.papera.ranking import DecoderRank, LinearDecoder, fit_decoder
from steerlimits.prompting import encode
from steerlimits.settings.papera import Decoder, PaperAInversion

__all__ = ["decoder_sequences", "run_e1_e2", "special_ids"]

logger = logging.getLogger(__name__)


def decoder_sequences(ctx: ModelContext, vector: str, cfg: Decoder, seed: int) -> list[list[int]]:
    """Training sequences of the linear decoder: training contrast prompts of every paper-A vector, the
    project's neutral stems and the instructions of ``extra_traits`` (never a test prompt), and seeded
    random-token sequences after the template start (coverage of the vocabulary)."""
    data_dir = ctx.data_dir
    prompts: list[D.Prompt] = []
    for behaviour in cfg.vectors:
        for pair in D.contrast_pairs(behaviour, data_dir)[: cfg.max_pairs]:
            prompts += [pair.positive, pair.negative]
    if cfg.extra_texts:
        prompts += [D.Prompt(t) for t in D.neutral_stems(data_dir)]
        prompts += [
            D.Prompt(r[k])
            for r in D.load_records("traits", data_dir)
            if r["trait"] in cfg.extra_traits
            for k in ("positive", "negative")
        ]
    seqs = [encode(ctx.tok, p, ctx.fmt[vector]) for p in prompts]  # type: ignore[arg-type]
    vocab = int(ctx.model.get_input_embeddings().weight.shape[0])
    gen = torch.Generator().manual_seed(seed)
    start = seqs[0][:1] if seqs else []
    n_seq = -(-int(cfg.random_tokens) // 63)
    seqs += [start + torch.randint(0, vocab, (63,), generator=gen).tolist() for _ in range(n_seq)]
    return seqs


def special_ids(tok: Any) -> tuple[int, ...]:
    """The tokenizer's special tokens (``all_special_ids``, then other added tokens marked special, e.g. Qwen's
    ``<|im_start|>``): the candidates tried first at position 0."""
    extra = sorted(int(i) for i, t in getattr(tok, "added_tokens_decoder", {}).items() if getattr(t, "special", False))
    return tuple(dict.fromkeys([int(i) for i in tok.all_special_ids] + extra))


def _position_rows(base: dict[str, Any], run: PromptRun) -> list[dict[str, Any]]:
    rows = []
    for p in run.positions:
        t = p.position
        rows.append(
            {
                **base,
                "prompt": run.prompt_index,
                "position": t,
                "in_header": t < run.header_len,
                "true_token": run.ids[t],
                "chosen_token": p.chosen_token,
                "top1": p.topk_dist[0],
                "top2": p.topk_dist[1] if len(p.topk_dist) > 1 else math.nan,
                "delta_h": run.delta_h[t],
                "floor": run.floor[t],
                "tau": run.tau0 if t == 0 else run.tau,
                "exact": p.exact,
                "certified": p.certified,
                "n_verified": p.n_verified,
                "recovered_to_natural": run.recovered_to_natural[t],
                "recovered_to_target": run.recovered_to_target[t],
                "wall_s": p.wall_s,
                "topk_tokens": json.dumps(p.topk_tokens),
                "topk_dist": json.dumps(p.topk_dist),
            }
        )
    return rows


def _prompt_row(base: dict[str, Any], run: PromptRun) -> dict[str, Any]:
    pos = slice(1, None)  # position 0 (the attention sink) excluded (docs/paperA.md)
    ids, rec = np.array(run.ids), np.array(run.recovered)
    sq = lambda d: float(np.mean(np.square(d[pos]))) / run.target.shape[1]  # noqa: E731 - MSE per dimension
    return {
        **base,
        "prompt": run.prompt_index,
        "n_tokens": len(run.ids),
        "header_len": run.header_len,
        "exact_match": run.exact_match,
        "token_accuracy": float((ids[pos] == rec[pos]).mean()),
        "ids": json.dumps(run.ids),
        "recovered": json.dumps(run.recovered),
        "tau": run.tau,
        "tau0": run.tau0,
        "max_floor": float(max(run.floor[1:])),
        "floor0": run.floor[0],
        "mse_recovered_to_target": sq(np.array(run.recovered_to_target)),
        "mse_recovered_to_natural": sq(np.array(run.recovered_to_natural)),
        "delta_h_per_token": float(np.mean(run.delta_h[1:])),
        "recovered_to_natural_per_token": float(np.mean(run.recovered_to_natural[1:])),
        "n_verified": sum(p.n_verified for p in run.positions[1:]),
        "wall_s": run.wall_s,
    }


def _audit_positions(run: PromptRun, mode: str | int) -> list[int]:
    """Positions to certify: every ``t >= 1`` (``"all"``), or ``mode`` positions: half of them spread over the
    template header shared by every prompt (positions ``t >= 2``, away from the attention sink, whose bf16 error
    makes its sweep a float32 one; the same prefix for every vector, so one sweep certifies them all there) and
    the rest over the prompt's own tokens (all of them over its own tokens when the header is too short)."""
    if mode == "all":
        return list(range(1, len(run.ids)))
    own = list(range(max(run.header_len, 1), len(run.ids)))
    shared = list(range(2, run.header_len))
    k = int(mode)
    n_shared = min(k // 2, len(shared))
    return sorted(set(_spread(shared, n_shared)) | set(_spread(own, k - n_shared)))


def _alternates(run: PromptRun, chosen: list[int]) -> list[int]:
    """Replacement positions for a scheduled position whose bf16 screen is unusable: the prompt's own positions
    (after the shared header) not already chosen, nearest to the middle of the prompt first."""
    own = [t for t in range(max(run.header_len, 1), len(run.ids)) if t not in chosen]
    mid = (max(run.header_len, 1) + len(run.ids) - 1) / 2
    return sorted(own, key=lambda t: (abs(t - mid), t))


def _spread(items: list[Any], k: int) -> list[Any]:
    """``k`` elements of ``items`` spread evenly (first and last included)."""
    if k <= 0 or not items:
        return []
    k = min(k, len(items))
    return [items[int(round(j))] for j in np.linspace(0, len(items) - 1, k)]


def run_e1_e2(ctx: ModelContext, s: PaperAInversion) -> dict[str, Any]:
    """All E1/E2 tables of one model: ``positions``, ``prompts``, ``certificates`` DataFrames and ``meta``.

    Conditions per vector: ``natural`` (exact), ``steered`` (warm start: the natural token tried first at each
    position, so top-1 <= ‖Δh_t‖ wherever the recovered prefix is x's) and ``steered_cold`` on the first
    ``cold_prompts`` prompts (no warm start: the decoder/gradient order alone decides which tokens are
    verified); E2: the steered search at each coefficient. Certificates: E1 natural and steered targets of the
    ``certify_prompts`` shortest prompts at the audit positions; other conditions ride along where their
    recovered prefix equals a scheduled one (one sweep serves every target with that prefix).
    """
    e1, e2 = s.e1, s.e2
    model, seed = ctx.model, ctx.seed
    table = embedding_matrix(model).detach()
    specials = special_ids(ctx.tok)
    decoders: dict[int, LinearDecoder] = {}
    pos_rows, prompt_rows = [], []
    cert_items: dict[int, list[tuple[dict[str, Any], PromptRun, CertItem]]] = {}
    riders: dict[int, list[tuple[dict[str, Any], PromptRun]]] = {}
    mode = e1.certify
    meta: dict[str, Any] = {
        "certify": mode,
        "cross_check": e1.cross_check,
        "decoders": {},
        "reused": [],
        "cold_prompts": e1.cold_prompts,
    }
    timings: dict[str, float] = {}
    fast = bf16_copy(model)  # bf16 forwards where only an order is needed (decoder) and certification screens
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock[0]
        clock[0] = now
        logger.info("E1/E2 %s: %.1f s so far", name, timings[name])

    for vector in ctx.vectors:
        m, l = ctx.measure_at(vector), ctx.layer[vector]
        if m not in decoders:
            seqs = decoder_sequences(ctx, vector, s.decoder, seed)
            decoders[m] = fit_decoder(model, seqs, m, s.decoder.ridge, ctx.spec.layers_path, states_model=fast)
            meta["decoders"][m] = {"n_tokens": decoders[m].n_tokens, "n_sequences": len(seqs)}
        lap("decoder")
        rank = DecoderRank(decoders[m], table, first_at_zero=specials)
        setup = SearchSetup(
            measure_at=m,
            inject_layer=l,
            rank=rank,
            n_candidates=e1.n_candidates,
            batch_size=e1.batch_size,
            top_k=e1.top_k,
            seed=seed,
            layers_path=ctx.spec.layers_path,
        )
        prompts = ctx.prompt_ids(vector, s.n_prompts)
        nat = natural_states_many(model, prompts, m, ctx.spec.layers_path)
        v, alpha = ctx.vectors[vector], ctx.alpha[vector]
        base = {"model": ctx.key, "vector": vector, "layer": l, "measure_at": m}
        natural = invert_condition(model, prompts, setup, natural=nat)
        lap("natural")
        warm = {r.prompt_index: r.recovered for r in natural}
        setup1 = setup if e1.gradient_ranking else replace(setup, rank=rank.decoder_only())
        steered = invert_condition(model, prompts, setup1, vector=v, alpha=alpha, natural=nat, warm=warm)
        lap("steered")
        n_cold = min(e1.cold_prompts, len(prompts))
        cold = (
            invert_condition(
                model, prompts[:n_cold], setup1, vector=v, alpha=alpha, natural={i: nat[i] for i in range(n_cold)}
            )
            if n_cold
            else []
        )
        lap("steered_cold")
        runs: list[tuple[dict[str, Any], list[PromptRun]]] = [
            ({**base, "experiment": "E1", "condition": "natural", "alpha": 0.0, "n_candidates": 0}, natural),
            (
                {**base, "experiment": "E1", "condition": "steered", "alpha": alpha, "n_candidates": e1.n_candidates},
                steered,
            ),
        ]
        if cold:
            runs.append(
                (
                    {
                        **base,
                        "experiment": "E1",
                        "condition": "steered_cold",
                        "alpha": alpha,
                        "n_candidates": e1.n_candidates,
                    },
                    cold,
                )
            )
        n2 = min(e2.n_prompts, len(prompts))
        rank2 = rank if e2.gradient_ranking else rank.decoder_only()
        setup2 = replace(setup, n_candidates=e2.n_candidates, rank=rank2)
        sign = math.copysign(1.0, alpha)
        for c in e2.coefficients:
            a = sign * float(c)
            e2base = {**base, "experiment": "E2", "condition": "steered", "alpha": a, "n_candidates": e2.n_candidates}
            if math.isclose(a, alpha):
                meta["reused"].append(
                    f"{vector}: E2 alpha={a:g} reuses E1's steered runs "
                    f"({e1.n_candidates} candidates) on its first {n2} prompts"
                )
                runs.append(({**e2base, "n_candidates": e1.n_candidates}, steered[:n2]))
                continue
            runs.append(
                (
                    e2base,
                    invert_condition(
                        model,
                        prompts[:n2],
                        setup2,
                        vector=v,
                        alpha=a,
                        natural={i: nat[i] for i in range(n2)},
                        warm=warm,
                    ),
                )
            )
        lap("e2")
        for b, rs in runs:
            for r in rs:
                pos_rows += _position_rows(b, r)
                prompt_rows.append(_prompt_row(b, r))
        # certificates: E1 natural and steered on the shortest prompts; the rest ride along on shared prefixes
        chosen = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))[: e1.certify_prompts]
        for b, rs in runs:
            for r in rs:
                if r.prompt_index not in chosen:
                    continue
                if b["experiment"] == "E1" and b["condition"] in ("natural", "steered"):
                    key = (vector, b["experiment"], b["condition"], b["alpha"], r.prompt_index)
                    chosen_t = _audit_positions(r, mode)
                    cert_items.setdefault(m, []).append(
                        (
                            b,
                            r,
                            CertItem(
                                key=key,
                                recovered=r.recovered,
                                target=r.target,
                                positions=chosen_t,
                                tau=r.tau,
                                alternates=_alternates(r, chosen_t),
                            ),
                        )
                    )
                elif not (b["experiment"] == "E2" and math.isclose(b["alpha"], alpha)):
                    riders.setdefault(m, []).append((b, r))
    cert_rows: list[dict[str, Any]] = []
    meta["certification"] = {}
    screen_model = fast if e1.screen_dtype == "bfloat16" else None
    for m, entries in cert_items.items():
        scheduled = {(tuple(r.recovered[:t]), t) for _, r, c in entries for t in c.positions}
        n_riders = 0
        for b, r in riders.get(m, []):
            own = [t for t in range(1, len(r.ids)) if (tuple(r.recovered[:t]), t) in scheduled]
            if own:
                key = (b["vector"], b["experiment"], b["condition"], b["alpha"], r.prompt_index)
                entries.append(
                    (b, r, CertItem(key=key, recovered=r.recovered, target=r.target, positions=own, tau=r.tau))
                )
                n_riders += len(own)
        # cross-checks: sweeps spread over the scheduled natural items' own positions (after the shared header,
        # typical positions rather than the ones next to the attention sink), also run entirely in float32
        nat_items = [(r, c) for b, r, c in entries if b["condition"] == "natural" and b["experiment"] == "E1"]
        pairs = [(c, t) for r, c in nat_items for t in c.positions if t >= r.header_len] or [
            (c, t) for _, c in nat_items for t in c.positions
        ]
        for c, t in _spread(pairs, e1.cross_check if e1.screen_dtype == "bfloat16" else 0):
            c.cross_check = (*c.cross_check, t)
        certs, info = certify(
            model,
            [c for _, _, c in entries],
            m,
            batch_size=e1.batch_size,
            top_k=e1.top_k,
            safety=e1.screen_safety,
            seed=seed,
            screen_dtype=e1.screen_dtype,
            screen_model=screen_model,
            layers_path=ctx.spec.layers_path,
            swap=e1.screen_swap,
        )
        meta["certification"][m] = {
            **info,
            "rider_positions": n_riders,
            "n_sweeps": len({tuple(c.item.recovered[: c.position]) for c in certs}),
        }
        lap("certify")
        lookup = {id(c): (b, r) for b, r, c in entries}
        for cert in certs:
            b, r = lookup[id(cert.item)]
            t, sw = cert.position, cert.sweep
            search = r.positions[t]
            cert_rows.append(
                {
                    **b,
                    "prompt": r.prompt_index,
                    "position": t,
                    "true_token": r.ids[t],
                    "certified_token": sw.tokens[0],
                    "min_dist": sw.dists[0],
                    "second_dist": sw.dists[1] if len(sw.dists) > 1 else math.nan,
                    "tau": r.tau,
                    "min_gt_tau": sw.dists[0] > r.tau,
                    "argmin_is_x": sw.tokens[0] == r.ids[t],
                    "delta_h": r.delta_h[t],
                    "search_token": search.chosen_token,
                    "search_dist": search.topk_dist[0],
                    "search_found_min": search.topk_dist[0] <= sw.dists[0] + r.tau,
                    "prefix_is_x": r.recovered[:t] == r.ids[:t],
                    "swapped_from": cert.swapped_from,
                    "screen": e1.screen_dtype,
                    "margin": sw.margin,
                    "safety": sw.safety,
                    "calib_error": sw.calib_error,
                    "cross_checked": sw.full_error is not None,
                    "full_error": sw.full_error,
                    "screen_topk_ok": sw.screen_topk_ok,
                    "n_targets": cert.n_targets,
                    "n_screened": sw.n_screened,
                    "n_verified": sw.n_verified,
                    "wall_s": sw.wall_s,
                    "topk_tokens": json.dumps(sw.tokens),
                    "topk_dist": json.dumps(sw.dists),
                }
            )
    meta["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    return {
        "positions": pd.DataFrame(pos_rows),
        "prompts": pd.DataFrame(prompt_rows),
        "certificates": pd.DataFrame(cert_rows),
        "meta": meta,
    }
