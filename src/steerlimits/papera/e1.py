"""E1 (natural vs steered inversion) and E2 (coefficient sweep) of one model, with certificates (spec A §4).

One model per call, because the linear decoder (per measurement site) and the certification sweeps are shared
by both vectors and every coefficient: a sweep at a prefix ``ŝ_<t`` serves every target with that prefix
(natural, steered, each E2 coefficient; both vectors in the shared template header).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from steerlimits import data as D
from steerlimits.invert import embedding_matrix
from steerlimits.papera.certify import CertItem, certify
from steerlimits.settings.papera import Decoder, PaperAInversion
from steerlimits.papera.context import ModelContext
from steerlimits.papera.inversion import PromptRun, SearchSetup, invert_condition, natural_states
from steerlimits.papera.ranking import DecoderRank, LinearDecoder, fit_decoder
from steerlimits.prompting import encode

__all__ = ["decoder_sequences", "run_e1_e2", "special_ids"]

logger = logging.getLogger(__name__)


def decoder_sequences(ctx: ModelContext, vector: str, cfg: Decoder, seed: int) -> list[list[int]]:
    """Training sequences of the linear decoder: training contrast prompts of every paper-A vector, the
    project's neutral stems and the instructions of ``extra_traits`` (never a test prompt), and seeded
    random-token sequences after the template start (coverage of the vocabulary)."""
    data_dir = ctx.data_dir
    prompts: list[D.Prompt] = []
    for behaviour in cfg.vectors:
        for pair in D.contrast_pairs(behaviour, data_dir)[:cfg.max_pairs]:
            prompts += [pair.positive, pair.negative]
    if cfg.extra_texts:
        prompts += [D.Prompt(t) for t in D.neutral_stems(data_dir)]
        prompts += [D.Prompt(r[k]) for r in D.load_records("traits", data_dir) if r["trait"] in cfg.extra_traits
                    for k in ("positive", "negative")]
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
        rows.append({**base, "prompt": run.prompt_index, "position": t, "in_header": t < run.header_len,
                     "true_token": run.ids[t], "chosen_token": p.chosen_token, "top1": p.topk_dist[0],
                     "top2": p.topk_dist[1] if len(p.topk_dist) > 1 else math.nan,
                     "delta_h": run.delta_h[t], "floor": run.floor[t], "tau": run.tau0 if t == 0 else run.tau,
                     "exact": p.exact, "certified": p.certified, "n_verified": p.n_verified,
                     "recovered_to_natural": run.recovered_to_natural[t],
                     "recovered_to_target": run.recovered_to_target[t], "wall_s": p.wall_s,
                     "topk_tokens": json.dumps(p.topk_tokens), "topk_dist": json.dumps(p.topk_dist)})
    return rows


def _prompt_row(base: dict[str, Any], run: PromptRun) -> dict[str, Any]:
    pos = slice(1, None)  # position 0 (the attention sink) excluded, style §5.6
    ids, rec = np.array(run.ids), np.array(run.recovered)
    sq = lambda d: float(np.mean(np.square(d[pos]))) / run.target.shape[1]  # noqa: E731 - MSE per dimension
    return {**base, "prompt": run.prompt_index, "n_tokens": len(run.ids), "header_len": run.header_len,
            "exact_match": run.exact_match, "token_accuracy": float((ids[pos] == rec[pos]).mean()),
            "ids": json.dumps(run.ids), "recovered": json.dumps(run.recovered), "tau": run.tau, "tau0": run.tau0,
            "max_floor": float(max(run.floor[1:])), "floor0": run.floor[0],
            "mse_recovered_to_target": sq(np.array(run.recovered_to_target)),
            "mse_recovered_to_natural": sq(np.array(run.recovered_to_natural)),
            "delta_h_per_token": float(np.mean(run.delta_h[1:])),
            "recovered_to_natural_per_token": float(np.mean(run.recovered_to_natural[1:])),
            "n_verified": sum(p.n_verified for p in run.positions[1:]), "wall_s": run.wall_s}


def _audit_positions(run: PromptRun, mode: str | int) -> list[int]:
    if mode == "all":
        return list(range(1, len(run.ids)))
    own = list(range(max(run.header_len, 1), len(run.ids)))
    k = min(int(mode), len(own))
    return sorted({own[int(round(j))] for j in np.linspace(0, len(own) - 1, k)}) if k else []


def run_e1_e2(ctx: ModelContext, s: PaperAInversion) -> dict[str, Any]:
    """All E1/E2 tables of one model: ``positions``, ``prompts``, ``certificates`` DataFrames and ``meta``."""
    e1, e2 = s.e1, s.e2
    model, seed = ctx.model, ctx.seed
    table = embedding_matrix(model).detach()
    specials = special_ids(ctx.tok)
    decoders: dict[int, LinearDecoder] = {}
    pos_rows, prompt_rows, cert_items = [], [], {}
    mode = e1.certify
    meta: dict[str, Any] = {"certify": mode, "decoders": {}, "reused": []}
    for vector in ctx.vectors:
        m, l = ctx.measure_at(vector), ctx.layer[vector]
        if m not in decoders:
            seqs = decoder_sequences(ctx, vector, s.decoder, seed)
            decoders[m] = fit_decoder(model, seqs, m, s.decoder.ridge, ctx.spec.layers_path)
            meta["decoders"][m] = {"n_tokens": decoders[m].n_tokens, "n_sequences": len(seqs)}
        rank = DecoderRank(decoders[m], table, first_at_zero=specials)
        setup = SearchSetup(measure_at=m, inject_layer=l, rank=rank, n_candidates=e1.n_candidates,
                            batch_size=e1.batch_size, top_k=e1.top_k, seed=seed,
                            layers_path=ctx.spec.layers_path)
        prompts = ctx.prompt_ids(vector, s.n_prompts)
        nat = {i: natural_states(model, p, m, ctx.spec.layers_path) for i, p in enumerate(prompts)}
        v, alpha = ctx.vectors[vector], ctx.alpha[vector]
        base = {"model": ctx.key, "vector": vector, "layer": l, "measure_at": m, "n_prechecked": 0}
        natural = invert_condition(model, prompts, setup, natural=nat)
        warm = {r.prompt_index: r.recovered for r in natural}
        setup1 = setup if e1.gradient_ranking else replace(setup, rank=rank.decoder_only())
        steered = invert_condition(model, prompts, setup1, vector=v, alpha=alpha, natural=nat, warm=warm)
        runs: list[tuple[dict[str, Any], list[PromptRun]]] = [
            ({**base, "experiment": "E1", "condition": "natural", "alpha": 0.0, "n_candidates": 0,
              "n_prechecked": setup.precheck}, natural),
            ({**base, "experiment": "E1", "condition": "steered", "alpha": alpha,
              "n_candidates": e1.n_candidates}, steered)]
        n2 = min(e2.n_prompts, len(prompts))
        rank2 = rank if e2.gradient_ranking else rank.decoder_only()
        setup2 = replace(setup, n_candidates=e2.n_candidates, rank=rank2)
        sign = math.copysign(1.0, alpha)
        for c in e2.coefficients:
            a = sign * float(c)
            e2base = {**base, "experiment": "E2", "condition": "steered", "alpha": a,
                      "n_candidates": e2.n_candidates}
            if math.isclose(a, alpha):
                meta["reused"].append(f"{vector}: E2 alpha={a:g} reuses E1's steered runs "
                                      f"({e1.n_candidates} candidates) on its first {n2} prompts")
                runs.append(({**e2base, "n_candidates": e1.n_candidates}, steered[:n2]))
                continue
            runs.append((e2base, invert_condition(model, prompts[:n2], setup2, vector=v, alpha=a,
                                                  natural={i: nat[i] for i in range(n2)}, warm=warm)))
        for b, rs in runs:
            for r in rs:
                pos_rows += _position_rows(b, r)
                prompt_rows.append(_prompt_row(b, r))
        # certificates: the shortest prompts, every condition that ran on them (E2's too when the prompt is one
        # of E2's); the E2 run at E1's alpha is E1's own run
        for c_idx in sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))[:e1.certify_prompts]:
            for b, rs in runs:
                r = next((r for r in rs if r.prompt_index == c_idx), None)
                if r is not None and not (b["experiment"] == "E2" and math.isclose(b["alpha"], alpha)):
                    key = (vector, b["experiment"], b["condition"], b["alpha"], c_idx)
                    cert_items.setdefault(m, []).append(
                        (b, r, CertItem(key=key, recovered=r.recovered, target=r.target,
                                        positions=_audit_positions(r, mode), tau=r.tau)))
    cert_rows = []
    for m, entries in cert_items.items():
        results = certify(model, [c for _, _, c in entries], m, batch_size=e1.batch_size, top_k=e1.top_k,
                          safety=e1.screen_safety, seed=seed, screen_dtype=e1.screen_dtype,
                          layers_path=ctx.spec.layers_path)
        lookup = {id(c): (b, r) for b, r, c in entries}
        for item, p in results:
            b, r = lookup[id(item)]
            t = p.position
            search = r.positions[t]
            cert_rows.append({**b, "prompt": r.prompt_index, "position": t, "true_token": r.ids[t],
                              "certified_token": p.chosen_token, "min_dist": p.topk_dist[0],
                              "second_dist": p.topk_dist[1] if len(p.topk_dist) > 1 else math.nan,
                              "tau": r.tau, "min_gt_tau": p.topk_dist[0] > r.tau,
                              "argmin_is_x": p.chosen_token == r.ids[t], "delta_h": r.delta_h[t],
                              "search_token": search.chosen_token, "search_dist": search.topk_dist[0],
                              "search_found_min": search.topk_dist[0] <= p.topk_dist[0] + r.tau,
                              "prefix_is_x": r.recovered[:t] == r.ids[:t], "margin": p.screen_margin,
                              "n_screened": p.n_screened, "n_verified": p.n_verified, "wall_s": p.wall_s})
    return {"positions": pd.DataFrame(pos_rows), "prompts": pd.DataFrame(prompt_rows),
            "certificates": pd.DataFrame(cert_rows), "meta": meta}
