"""Paper A (steerlimits.papera) on tiny random-init models: known answers, the engine's full-pass oracle,
planted structure and hand-computed tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from snakemake.utils import validate

from steerlimits import hooks
from steerlimits.hooks import directional_ablation
from steerlimits.invert import (
    CertItem,
    InversionConfig,
    PrefixKV,
    TruncatedLM,
    certify,
    embedding_matrix,
    gcg_search,
    invert,
    reference_sweep,
    target_states,
)
from steerlimits.papera import claims as C
from steerlimits.papera import tables as T
from steerlimits.papera.context import ModelContext, common_prefix_len
from steerlimits.papera.e1 import special_ids
from steerlimits.papera.icl import demo_pool, distinct_fraction, neutral_pool, run_e3
from steerlimits.papera.inversion import SearchSetup, invert_condition, natural_states
from steerlimits.papera.optimise import nearest_tokens
from steerlimits.papera.ranking import DecoderRank, _interleave, fit_decoder
from steerlimits.papera.scale import cross_prompt
from steerlimits.registry import ModelSource
from steerlimits.settings import from_params
from steerlimits.settings.papera import E3, PaperAContext, VectorSite

torch.set_num_threads(1)
SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "paperA.schema.yaml"
LAYER = 2  # inject at the input of block 2, measure at hidden_states[3]


def _settings(**over: object) -> dict:
    pa = {
        "enabled": True,
        "n_prompts": 3,
        "max_new_tokens": 4,
        "decoder": {"max_pairs": 4, "random_tokens": 256},
        "e1": {"n_candidates": 16},
        "e2": {"coefficients": [0.5, 1, 2], "n_prompts": 2, "n_candidates": 8},
        "e3": {"n_prompts": 1, "y_tokens": 4, "shots": [0, 1, 2], "demo_tokens": 4, "pool": 4},
        **over,
    }
    validate(pa, str(SCHEMA), set_default=True)
    return pa


@pytest.fixture(scope="module", params=["llama", "gemma3_text"])
def ctx(request: pytest.FixtureRequest) -> ModelContext:
    from steerlimits.tiny import build_random_model

    model, tok = build_random_model(
        request.param, {"n_layers": 4, "d_model": 64, "n_heads": 4, "vocab_size": 512, "seed": 1}
    )
    gen = torch.Generator().manual_seed(0)
    vecs = {v: torch.randn(64, generator=gen) * 3 for v in ("refusal", "persona_evil")}
    spec = ModelSource(key="tiny", source="random", architecture=request.param, n_layers=4, d_model=64)
    sites = {"refusal": VectorSite(LAYER, -1.0, "chat"), "persona_evil": VectorSite(LAYER, 1.0, "chat")}
    settings = PaperAContext(spec, "mean_diff_last", sites, seed=3, data_dir="data", refusal_trained=True, device="cpu")
    return ModelContext(key="tiny", model=model, tok=tok, spec=spec, settings=settings, vectors=vecs)


def _setup(ctx: ModelContext, n_candidates: int = 16) -> SearchSetup:
    m = LAYER + 1
    seqs = [ctx.encode("refusal", f"tell me about item {i} and its history") for i in range(12)]
    decoder = fit_decoder(ctx.model, seqs, m)
    rank = DecoderRank(decoder, embedding_matrix(ctx.model), first_at_zero=special_ids(ctx.tok))
    return SearchSetup(measure_at=m, inject_layer=LAYER, rank=rank, n_candidates=n_candidates)


# ------------------------------------------------------------------------------------------------ helpers
def test_fit_decoder_batched_equals_one_sequence_at_a_time(ctx: ModelContext) -> None:
    seqs = [ctx.encode("refusal", f"tell me about item {i} and its history") for i in range(6)]
    seqs += [ctx.encode("refusal", "a longer request about the weather in the hills this spring"), [5]]
    one = fit_decoder(ctx.model, seqs, LAYER + 1, batch_size=1)
    batched = fit_decoder(ctx.model, seqs, LAYER + 1, batch_size=4)
    assert batched.n_tokens == one.n_tokens == sum(len(s) - 1 for s in seqs if len(s) > 1)
    torch.testing.assert_close(batched.weight, one.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched.mean, one.mean, rtol=1e-5, atol=1e-5)


def test_common_prefix_len_known_answers() -> None:
    assert common_prefix_len([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2  # every prompt keeps one position of its own
    assert common_prefix_len([[7, 8]]) == 1
    assert common_prefix_len([[1], [2]]) == 0


def test_interleave_places_each_token_by_its_best_rank() -> None:
    a, b = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([4, 3, 2, 1, 0])
    assert _interleave([a, b]).tolist() == [0, 4, 1, 3, 2]


def test_decoder_rank_prefers_specials_at_zero_and_warm_tokens(ctx: ModelContext) -> None:
    setup = _setup(ctx)
    tl = TruncatedLM(ctx.model, setup.measure_at)
    cfg = InversionConfig(measure_at=setup.measure_at)
    target = torch.randn(64)
    specials = list(dict.fromkeys(setup.rank.first_at_zero))
    order0 = setup.rank(tl, PrefixKV(), target, cfg)
    assert order0[: len(specials)].tolist() == specials
    assert sorted(order0.tolist()) == list(range(tl.vocab_size))  # a permutation of the vocabulary
    ids = torch.tensor(ctx.encode("refusal", "hello there"))
    prefix, _ = tl.prefix_of(ids[:3])
    warm = setup.rank.with_warm({3: [123]})
    assert int(warm(tl, prefix, target, cfg)[0]) == 123
    assert setup.rank.warm is None  # the shared rank is not modified


def test_lazy_rank_skips_the_gradient_on_a_precheck_hit(ctx: ModelContext, monkeypatch: pytest.MonkeyPatch) -> None:
    import steerlimits.papera.ranking as R

    setup = _setup(ctx)
    ids = torch.tensor(ctx.encode("refusal", "hello there"))
    m = setup.measure_at
    target = target_states(ctx.model, ids, m)
    calls = []
    real = R.gradient_order
    monkeypatch.setattr(R, "gradient_order", lambda *a: calls.append(1) or real(*a))
    cfg = InversionConfig(measure_at=m, mode="exhaustive", early_exit=True, tau_exact=1e-3)
    res = invert(ctx.model, target, cfg, rank_fn=setup.rank.lazy(32), floor_ids=ids, progress=False)
    hits = [p.n_verified == 32 for p in res.positions]  # a hit costs exactly the precheck (one batch)
    assert res.ids == ids.tolist() and len(calls) == len(hits) - sum(hits)  # the gradient only where it missed
    assert sum(hits) >= 1
    blind = DecoderRank(
        R.LinearDecoder(setup.rank.decoder.mean, torch.zeros_like(setup.rank.decoder.weight), 1, 0.01),
        setup.rank.table,
        precheck=4,
    )
    res = invert(ctx.model, target, cfg, rank_fn=blind, floor_ids=ids, progress=False)  # the head misses
    assert res.ids == ids.tolist() and len(calls) > len(hits) - sum(hits)


# --------------------------------------------------------------------------------------------- inversion
def test_natural_inverts_exactly_and_header_memo_matches_single_runs(ctx: ModelContext) -> None:
    setup = _setup(ctx)
    prompts = ctx.prompt_ids("refusal", 3)
    runs = invert_condition(ctx.model, prompts, setup)
    assert all(r.exact_match for r in runs)
    assert runs[0].header_len == common_prefix_len(prompts) > 1
    assert all(p.exact for r in runs for p in r.positions)
    alone = invert_condition(ctx.model, prompts[1:2], setup)[0]
    assert alone.recovered == runs[1].recovered
    assert [p.topk_tokens[0] for p in alone.positions] == [p.topk_tokens[0] for p in runs[1].positions]
    # the precheck (32 decoder-ordered tokens) is one verified batch, so a hit also knows its runner-up (top-2)
    counts = [p.n_verified for r in runs for p in r.positions]
    assert min(counts) == setup.precheck  # hits cost the precheck; misses go on over the full order
    assert all(len(p.topk_dist) >= 2 and p.topk_dist[1] > p.topk_dist[0] for r in runs for p in r.positions)


def test_natural_recovers_when_the_decoder_precheck_misses(ctx: ModelContext) -> None:
    from dataclasses import replace

    setup = _setup(ctx)
    blind = replace(setup.rank.decoder, weight=torch.zeros_like(setup.rank.decoder.weight))  # useless decoder
    setup = replace(
        setup, rank=DecoderRank(blind, setup.rank.table, first_at_zero=setup.rank.first_at_zero), precheck=1
    )
    runs = invert_condition(ctx.model, ctx.prompt_ids("persona_evil", 2), setup)
    assert all(r.exact_match for r in runs)
    assert max(p.n_verified for r in runs for p in r.positions[1:]) > 1  # the full search took over


def test_steered_gap_is_at_most_the_displacement_with_a_warm_start(ctx: ModelContext) -> None:
    setup = _setup(ctx)
    prompts = ctx.prompt_ids("refusal", 2)
    nat = {i: natural_states(ctx.model, p, setup.measure_at) for i, p in enumerate(prompts)}
    natural = invert_condition(ctx.model, prompts, setup, natural=nat)
    steered = invert_condition(
        ctx.model,
        prompts,
        setup,
        vector=ctx.vectors["refusal"],
        alpha=-1.0,
        natural=nat,
        warm={r.prompt_index: r.recovered for r in natural},
    )
    for r in steered:
        top1 = np.array([p.topk_dist[0] for p in r.positions])
        assert (top1[1:] > 100 * r.tau).all()  # no preimage found anywhere
        # the prompt's own token is a candidate wherever the recovered prefix equals x
        same = [t for t in range(len(r.ids)) if r.recovered[:t] == r.ids[:t]]
        assert all(top1[t] <= r.delta_h[t] * (1 + 1e-5) + 1e-5 for t in same)
        target = target_states(
            ctx.model,
            torch.tensor(r.ids),
            setup.measure_at,
            vector=ctx.vectors["refusal"],
            alpha=-1.0,
            inject_layer=LAYER,
        )
        torch.testing.assert_close(r.target, target)


def test_rank_fn_hook_reaches_the_engine(ctx: ModelContext) -> None:
    ids = torch.tensor(ctx.encode("refusal", "a short prompt"))
    m = LAYER + 1
    target = target_states(ctx.model, ids, m)

    def oracle(tl, prefix, target_t, config):  # noqa: ANN001, ANN202 - the true token first
        t = prefix.length
        rest = torch.tensor([i for i in range(tl.vocab_size) if i != int(ids[t])])
        return torch.cat([ids[t : t + 1], rest])

    res = invert(
        ctx.model,
        target,
        InversionConfig(measure_at=m, mode="ranked", n_candidates=1),
        rank_fn=oracle,
        floor_ids=ids,
        progress=False,
    )
    assert res.ids == ids.tolist() and res.n_verified_total == len(ids)


@pytest.mark.parametrize("screen", ["bfloat16", "float32"])
def test_certificates_match_the_full_pass_oracle(ctx: ModelContext, screen: str) -> None:
    m = LAYER + 1
    ids = ctx.encode("refusal", "explain the weather")
    natural, _ = natural_states(ctx.model, ids, m)
    steered = target_states(
        ctx.model, torch.tensor(ids), m, vector=ctx.vectors["refusal"], alpha=-1.0, inject_layer=LAYER
    )
    positions = [3, len(ids) - 1]
    items = [
        CertItem(key=("nat",), recovered=ids, target=natural, positions=positions, tau=1e-3, cross_check=(3,)),
        CertItem(key=("steer",), recovered=ids, target=steered, positions=positions, tau=1e-3),
    ]
    out, info = certify(ctx.model, items, m, top_k=5, screen_dtype=screen)
    assert len(out) == 4
    vocab = ctx.model.get_input_embeddings().weight.shape[0]
    for cert in out:
        t, sw = cert.position, cert.sweep
        tokens, dists = reference_sweep(ctx.model, torch.tensor(ids[:t]), cert.item.target[t], m, top_k=5)
        assert sw.tokens == tokens.tolist()
        np.testing.assert_allclose(sw.dists, dists.numpy(), rtol=1e-4, atol=1e-4)
        assert cert.n_targets == 2  # natural and steered share the sweep of each prefix
        assert sw.n_screened == (vocab if screen == "bfloat16" else 0)
        if cert.item.key == ("nat",):
            assert sw.tokens[0] == ids[t] and cert.exact
        if screen == "bfloat16" and t == 3:  # the cross-checked sweep: measured over every token, top-k agrees
            assert sw.full_error is not None and sw.screen_topk_ok
            assert sw.full_error >= sw.calib_error  # the calibration set is a subset of the vocabulary
    if screen == "bfloat16":
        assert info["n_cross_checked"] == 1 and info["measured_ratio"] >= 1.0
        assert info["safety_used"] == pytest.approx(2.0 * info["measured_ratio"])
        late = [c.sweep for c in out if c.position != 3]
        assert all(sw.safety == pytest.approx(info["safety_used"]) for sw in late)  # scaled after the check


def test_unscreenable_positions_move_to_alternates(ctx: ModelContext) -> None:
    """A sweep whose relative margin is >= 1 (forced here by a huge safety factor) is not run in float32 with
    ``swap``: the position moves to the item's next alternate, the certificate there equals the oracle's and
    records ``swapped_from``; an item without alternates (a rider) is dropped. Without ``swap`` the same
    position is certified by a float32 sweep of every token."""
    m = LAYER + 1
    ids = ctx.encode("refusal", "explain the weather")
    natural, _ = natural_states(ctx.model, ids, m)
    vocab = ctx.model.get_input_embeddings().weight.shape[0]
    items = [
        CertItem(key=("nat",), recovered=ids, target=natural, positions=[3], tau=1e-3, alternates=[5, 6]),
        CertItem(key=("rider",), recovered=ids, target=natural, positions=[3], tau=1e-3),
    ]
    out, info = certify(ctx.model, items, m, top_k=5, safety=1e9, swap=True)
    assert [(c.item.key, c.position, c.swapped_from) for c in out] == [(("nat",), 6, 3)]  # 5 swapped on too
    assert {"key": ["rider"], "from": 3, "to": None} in info["swaps"]
    assert {"key": ["nat"], "from": 3, "to": 5} in info["swaps"] and {"key": ["nat"], "from": 5, "to": 6} in info[
        "swaps"
    ]
    cert = out[0]
    tokens, dists = reference_sweep(ctx.model, torch.tensor(ids[:6]), natural[6], m, top_k=5)
    assert cert.sweep.tokens == tokens.tolist() and cert.sweep.n_verified == vocab  # no alternate left: float32
    np.testing.assert_allclose(cert.sweep.dists, dists.numpy(), rtol=1e-4, atol=1e-4)
    kept, info = certify(ctx.model, items[:1], m, top_k=5, safety=1e9, swap=False)
    assert [(c.position, c.swapped_from) for c in kept] == [(3, None)] and not info["swaps"]
    assert kept[0].sweep.margin >= 1 and kept[0].sweep.n_verified == vocab
    # a swap that lands on a prefix already swept (for another item) is swept again, not lost
    late = [
        CertItem(key=("a",), recovered=ids, target=natural, positions=[5], tau=1e-3),
        CertItem(key=("b",), recovered=ids, target=natural, positions=[7], tau=1e-3, alternates=[5]),
    ]
    again, info = certify(ctx.model, late, m, top_k=5, safety=1e9, swap=True)
    assert sorted((c.item.key, c.position, c.swapped_from) for c in again) == [(("a",), 5, None), (("b",), 5, 7)]
    assert again[0].sweep.tokens == again[1].sweep.tokens


def test_cold_start_finds_no_closer_state_than_the_displacement(ctx: ModelContext) -> None:
    setup = _setup(ctx, n_candidates=64)
    prompts = ctx.prompt_ids("persona_evil", 1)
    cold = invert_condition(ctx.model, prompts, setup, vector=ctx.vectors["persona_evil"], alpha=1.0)[0]
    top1 = np.array([p.topk_dist[0] for p in cold.positions[1:]])
    assert (top1 > 100 * cold.tau).all()
    assert np.median(top1 / np.array(cold.delta_h[1:])) > 0.5  # no warm start, still about the displacement


# ----------------------------------------------------------------------------------------- other pieces
def test_directional_ablation_removes_the_direction_and_leaves_no_hooks(ctx: ModelContext) -> None:
    v = ctx.vectors["refusal"]
    x = torch.tensor([ctx.encode("refusal", "how do I open a lock")])
    with torch.no_grad():
        before = ctx.model(x).logits
        with directional_ablation(ctx.model, v), hooks.record(ctx.model, range(4)) as rec:
            ctx.model(x)
        after = ctx.model(x).logits
    unit = v / v.norm()
    for layer in range(4):
        h = rec[("resid_pre", layer)][0]
        assert float((h @ unit).abs().max()) < 1e-4 * float(h.norm(dim=-1).max())
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_many_shot_cache_reproduces_a_full_pass(ctx: ModelContext) -> None:
    x = ctx.encode("refusal", "write something rude")
    y = [int(t) for t in torch.randint(10, 400, (4,), generator=torch.Generator().manual_seed(1))]
    rows = [{"prompt": 0, "x": x, "y": y, "y_text": "sure"}]
    cfg = from_params(E3, _settings()["e3"])
    res = run_e3(ctx, "refusal", rows, cfg)
    assert cfg.demo_dtype == "bfloat16"  # the demonstrations' writer; the states compared below are float32
    demos, written = demo_pool(ctx, "refusal", 2, 4, 4, ctx.seed, cfg.batch_size, cfg.demo_dtype)
    neutral, _ = neutral_pool(ctx, "refusal", [len(d) for d in demos], 4, ctx.seed, cfg.batch_size, cfg.demo_dtype)
    assert [len(d) for d in neutral] == [len(d) for d in demos]  # same lengths: x at the same positions
    assert all(d[-1 - len(c) : -1] == c for d, c in zip(demos, written))  # completions: the demonstration's tail
    icl = res["summary"][res["summary"]["kind"] == "icl"]
    assert icl["demo_distinct"].iloc[0] == pytest.approx(float(np.median([distinct_fraction(c) for c in written])))
    m = LAYER + 1
    target = ctx.states("refusal", x + y, steered=True)
    summary = res["summary"]
    for kind, pool in (("icl", demos), ("neutral", neutral)):
        for n in (0, 1, 2):
            prefix = [t for d in pool[:n] for t in d]
            with torch.no_grad():
                h = hooks.forward_hidden(ctx.model, torch.tensor([prefix + x + y]))[m][0, len(prefix) :]
            l2 = torch.linalg.vector_norm(h - target, dim=-1)[len(x) :].mean()
            got = summary[(summary["n_shots"] == n) & summary["kind"].isin([kind if n else "none"])]["l2_response"]
            assert got.iloc[0] == pytest.approx(float(l2), rel=1e-4)
    icl2 = summary[(summary["kind"] == "icl") & (summary["n_shots"] == 2)].iloc[0]
    assert 0 <= icl2["control_l2_response"] and icl2["control_init_response"] > 0


def test_gcg_suffix_and_mask() -> None:
    from steerlimits.tiny import build_random_model

    model, _ = build_random_model("llama", {"n_layers": 3, "d_model": 32, "n_heads": 4, "vocab_size": 300, "seed": 0})
    ids = torch.randint(10, 300, (9,), generator=torch.Generator().manual_seed(0))
    states = TruncatedLM(model, 2).full(input_ids=ids[None])[0].detach()
    res = gcg_search(model, states[2:], 2, n_steps=0, init_ids=ids[2:5], prefix_ids=ids[:2], suffix_ids=ids[5:])
    assert res.best_loss < 1e-8  # the true ids match the target everywhere, suffix included
    noisy = states[2:].clone()
    noisy[:3] += 5.0
    masked = gcg_search(
        model,
        noisy,
        2,
        n_steps=0,
        init_ids=ids[2:5],
        prefix_ids=ids[:2],
        suffix_ids=ids[5:],
        target_mask=torch.tensor([0, 0, 0, 1, 1, 1, 1.0]),
    )
    assert masked.best_loss < 1e-8  # mismatched rows are masked out


def test_nearest_tokens_brute_force() -> None:
    table = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))
    q = table[[5, 17]] + 1e-3
    tokens, dists = nearest_tokens(table, q, chunk=64)
    assert tokens == [5, 17]
    np.testing.assert_allclose(dists, torch.linalg.vector_norm(q - table[[5, 17]], dim=-1).numpy(), rtol=1e-5)


def test_cross_prompt_known_answer() -> None:
    nat = [torch.zeros(3, 2), torch.full((3, 2), 3.0)]
    ste = [torch.full((3, 2), 1.0), torch.full((3, 2), 3.0)]
    s, c, ct = cross_prompt(nat, ste, [slice(0, 3), slice(0, 3)])
    np.testing.assert_allclose(s, [math.sqrt(2), 0.0])
    np.testing.assert_allclose(c, [[0, 3 * math.sqrt(2)], [3 * math.sqrt(2), 0]], rtol=1e-6)
    np.testing.assert_allclose(ct[0, 1], 3 * math.sqrt(2), rtol=1e-6)  # ‖h̃(x_1) − h(x_0)‖


# ------------------------------------------------------------------------------------------ tables, claims
def _synthetic() -> dict[str, pd.DataFrame]:
    rows, pos = [], []
    for cond, alpha, exact, top in (("natural", 0.0, True, 1e-4), ("steered", -1.0, True, 10.0)):
        for p in range(2):
            rows.append(
                {
                    "model": "m",
                    "vector": "refusal",
                    "experiment": "E1",
                    "condition": cond,
                    "alpha": alpha,
                    "prompt": p,
                    "exact_match": exact,
                    "token_accuracy": 1.0,
                    "max_floor": 1e-4,
                    "tau": 1e-3,
                    "tau0": 0.1,
                    "mse_recovered_to_target": 0.2,
                    "mse_recovered_to_natural": 0.0,
                    "n_candidates": 16,
                    "layer": 2,
                    "refusal_trained": True,
                    "ids": json.dumps([1, 2, 3]),
                }
            )
            for t in range(4):
                pos.append(
                    {
                        "model": "m",
                        "vector": "refusal",
                        "experiment": "E1",
                        "condition": cond,
                        "alpha": alpha,
                        "prompt": p,
                        "position": t,
                        "top1": top * (1 + t),
                        "top2": 5.0,
                        "delta_h": 10.0 * (1 + t) if cond == "steered" else 0.0,
                        "tau": 1e-3,
                        "n_verified": 32,
                        "vocab_size": 320,
                    }
                )
    for alpha in (-0.5, -1.0, -2.0):
        for t in range(1, 4):
            pos.append(
                {
                    "model": "m",
                    "vector": "refusal",
                    "experiment": "E2",
                    "condition": "steered",
                    "alpha": alpha,
                    "prompt": 0,
                    "position": t,
                    "top1": abs(alpha) * 10,
                    "top2": 50.0,
                    "delta_h": abs(alpha) * 10,
                    "tau": 1e-3,
                    "n_verified": 8,
                    "vocab_size": 320,
                }
            )
    certs = pd.DataFrame(
        [
            {
                "model": "m",
                "vector": "refusal",
                "experiment": "E1",
                "condition": "steered",
                "alpha": -1.0,
                "prompt": 0,
                "position": t,
                "min_gt_tau": t != 2,
                "argmin_is_x": True,
                "search_found_min": True,
                "second_dist": 20.0,
                "screen": "bfloat16",
                "safety": 3.0,
                "calib_error": 0.1,
                "cross_checked": t == 1,
                "full_error": 0.15 if t == 1 else np.nan,
                "screen_topk_ok": True,
            }
            for t in (1, 2, 3)
        ]
    )
    beh = pd.DataFrame(
        [
            {
                "model": "m",
                "vector": "refusal",
                "condition": c,
                "refusal": r,
                "attack_success": 1 - r,
                "refusal_trained": True,
            }
            for c, r in (("baseline", 1.0), ("steered", 0.0), ("recovered", 1.0))
        ]
    )
    # E4: GCG passes its control (closes 90 % of the reachable gap) and stays at 0.8 x Δh on the steered target;
    # tuning fails its control
    e4 = pd.DataFrame(
        [
            {
                "model": "m",
                "vector": "refusal",
                "prompt": 0,
                "mode": "replacement",
                "target": tgt,
                "method": meth,
                "ratio_to_delta_h": r,
                "gap_closed": g,
                "returned_init": False,
            }
            for meth, tgt, r, g in (
                ("gcg", "steered", 0.8, 0.2),
                ("gcg", "control", 3.0, 0.9),
                ("tuned_projected", "steered", 0.6, 0.1),
                ("tuned_projected", "control", 2.0, 0.1),
            )
        ]
    )
    return {
        "prompts": pd.DataFrame(rows),
        "positions": pd.DataFrame(pos),
        "certificates": certs,
        "behaviour": beh,
        "e4": e4,
    }


def test_inversion_summary_by_hand() -> None:
    t = _synthetic()
    table = T.inversion_summary(t["prompts"], t["positions"], t["certificates"])
    s = table.set_index("condition")
    assert s.loc["natural", "top1_mean"] == pytest.approx(1e-4 * 3)  # positions 1..3: mean of 2, 3, 4 × 1e-4
    assert s.loc["steered", "delta_h_per_token"] == pytest.approx(30.0)
    assert s.loc["steered", "certified_positions"] == 3 and s.loc["steered", "certified_above_tau"] == 2
    assert s.loc["natural", "certified_positions"] == 0
    assert s.loc["natural", "vocab_fraction_verified"] == pytest.approx(0.1)
    assert list(table.columns[:5]) == ["model", "vector", "coefficient", "condition", "n_prompts"]
    md = T.markdown(table[["model", "condition", "top1_mean"]])
    assert md.splitlines()[0] == "| model | condition | top1_mean |" and md.count("\n") == 4


def test_a3_note_reports_the_cross_check_and_moved_positions() -> None:
    """A3's note states what the certificate rests on: the float32 cross-check (sweeps, error ratio, top-k) and
    how many certified positions were moved off a scheduled position whose bf16 screen could exclude nothing."""
    t = _synthetic()
    note = C.paper_a_claims(t).set_index("claim_id").loc["A3", "note"]
    assert "1 sweep(s) of this model also run entirely in float32" in note and "error 1.5" in note
    assert "moved from a scheduled position" not in note  # no column, no swaps
    t["certificates"]["swapped_from"] = [np.nan, 0.0, 0.0]
    note = C.paper_a_claims(t).set_index("claim_id").loc["A3", "note"]
    assert "; 2 position(s) moved from a scheduled position whose bf16 screen could exclude no token" in note


def test_claims_rows_and_thresholds() -> None:
    claims = C.paper_a_claims(_synthetic()).set_index("claim_id")
    assert claims.loc["A1", "holds"] == "true"
    assert claims.loc["A2", "value"] == pytest.approx(0.4) and claims.loc["A2", "holds"] == "true"
    assert claims.loc["A3", "value"] == pytest.approx(2 / 3) and claims.loc["A3", "holds"] == "false"
    assert claims.loc["A4", "value"] == pytest.approx(1e5)
    assert claims.loc["A5", "value"] == pytest.approx(1.0)
    assert claims.loc["A6", "value"] == pytest.approx(1.0) and claims.loc["A6", "holds"] == "true"
    assert claims.loc["A7", "value"] == pytest.approx(-1.0) and claims.loc["A7", "holds"] == "true"
    t = _synthetic()
    t["behaviour"].loc[t["behaviour"]["condition"] == "baseline", "refusal"] = 0.0  # precondition fails
    assert C.paper_a_claims(t).set_index("claim_id").loc["A7", "holds"] == "na"
    # A9: the value is the validated method's (GCG, 0.8), not the unvalidated tuning's 0.6
    assert claims.loc["A9", "value"] == pytest.approx(0.8) and claims.loc["A9", "holds"] == "true"
    t["e4"].loc[t["e4"]["method"] == "gcg", "gap_closed"] = 0.3  # no method passes its control
    a9 = C.paper_a_claims(t).set_index("claim_id").loc["A9"]
    assert a9["holds"] == "inconclusive" and "positive control failed" in a9["note"]
    t["e4"].loc[(t["e4"]["method"] == "tuned_projected") & (t["e4"]["target"] == "steered"), "ratio_to_delta_h"] = 0.2
    assert C.paper_a_claims(t).set_index("claim_id").loc["A9", "holds"] == "false"  # a method closed the gap


def test_claims_treat_uncomputed_values_as_not_shown() -> None:
    """A NaN never makes a row hold: a black-box method without a steered value is neither best nor closing (in
    any order), A4 without natural rows, A5 without a cold-start value and A7 without baseline rows are not
    shown."""
    nan = float("nan")
    for methods in ([("a", 1.0, 0.6), ("b", nan, 0.6)], [("b", nan, 0.6), ("a", 1.0, 0.6)]):
        row = C._black_box("A9", "m", "refusal", "s", "metric", methods, ">=", 0.5)
        assert row.holds == "true" and row.value == 1.0
    row = C._black_box("A9", "m", "refusal", "s", "metric", [("b", nan, 0.6)], ">=", 0.5)
    assert row.holds == "false" and "not computed" in row.note
    t = _synthetic()
    t["positions"] = t["positions"][t["positions"]["condition"] != "natural"]
    a4 = C.paper_a_claims(t).set_index("claim_id").loc["A4"]
    assert a4["holds"] == "false" and math.isnan(a4["value"])
    t = _synthetic()
    cold = t["positions"][t["positions"]["condition"] == "steered"].assign(condition="steered_cold", top1=nan)
    t["positions"] = pd.concat([t["positions"], cold.assign(chosen_token=0, true_token=0)], ignore_index=True)
    a5 = C.paper_a_claims(t).set_index("claim_id").loc["A5"]
    assert a5["holds"] == "false" and math.isnan(a5["value"])
    t = _synthetic()
    t["behaviour"] = t["behaviour"][t["behaviour"]["condition"] != "baseline"]
    a7 = C.paper_a_claims(t).set_index("claim_id").loc["A7"]
    assert a7["holds"] == "na" and "no baseline rows" in a7["note"]


def test_distinct_fraction_tells_a_loop_from_text() -> None:
    assert distinct_fraction([7, 8] * 24) == pytest.approx(2 / 48)
    assert distinct_fraction(list(range(48))) == 1.0
    assert math.isnan(distinct_fraction([]))


def test_a8_is_na_when_the_ablated_demonstrations_are_degenerate() -> None:
    t = _synthetic()
    e3 = [
        {"model": "m", "vector": "refusal", "prompt": 0, "kind": k, "n_shots": n, "l2_response": l2}
        | ({"control_gap_closed_response": 0.8} if k == "icl" else {})
        for k, n, l2 in (("none", 0, 10.0), ("icl", 1, 9.0), ("icl", 2, 8.0), ("neutral", 1, 2.0), ("neutral", 2, 2.0))
    ]
    t["e3"] = pd.DataFrame(e3)
    t["e3"]["demo_distinct"] = [float("nan"), 0.7, 0.7, 0.8, 0.8]
    t["e3"]["demos_degenerate"] = False
    a8 = C.paper_a_claims(t).set_index("claim_id").loc["A8"]
    assert a8["holds"] == "true" and a8["value"] == pytest.approx(0.8)
    t["e3"]["demo_distinct"] = [float("nan"), 0.05, 0.05, 0.8, 0.8]
    t["e3"]["demos_degenerate"] = True
    a8 = C.paper_a_claims(t).set_index("claim_id").loc["A8"]
    assert a8["holds"] == "na" and "degenerate" in a8["note"] and "0.05" in a8["note"]


def _e5(soft: float, proj: float, ctrl: float, dh: float = 1.0) -> pd.DataFrame:
    rows = []
    for p in (1, 2):
        rows += [
            {
                "model": "m",
                "vector": "refusal",
                "target": "steered",
                "kind": "soft",
                "p": p,
                "l2_per_token": soft + (p == 1),
                "delta_h": dh,
                "gap_closed": 0.0,
            },
            {
                "model": "m",
                "vector": "refusal",
                "target": "steered",
                "kind": "projected",
                "p": p,
                "l2_per_token": proj,
                "delta_h": dh,
                "gap_closed": 0.0,
            },
            {
                "model": "m",
                "vector": "refusal",
                "target": "control",
                "kind": "soft",
                "p": p,
                "l2_per_token": 0.1,
                "delta_h": dh,
                "gap_closed": ctrl,
            },
        ]
    return pd.DataFrame(rows)


def test_a10_needs_a_passing_positive_control() -> None:
    t = _synthetic()
    for soft, ctrl, expected in (
        (0.5, 0.9, "true"),
        (0.5, 0.2, "inconclusive"),
        (1.5, 0.9, "na"),
        (1.5, 0.2, "inconclusive"),
    ):
        t["e5"] = _e5(soft, 2.0, ctrl)
        a10 = C.paper_a_claims(t).set_index("claim_id").loc["A10"]
        assert a10["holds"] == expected, (soft, ctrl, a10["note"])
    t["e5"] = _e5(0.5, 0.4, 0.9)  # projection as good as the soft prefix: the claim fails, whatever the control
    assert C.paper_a_claims(t).set_index("claim_id").loc["A10", "holds"] == "false"


def test_verification_batches_ramp_from_first_batch() -> None:
    from steerlimits.invert.sequential import _chunks

    assert _chunks(100, 64, True, first=1) == [(0, 1), (1, 3), (3, 7), (7, 15), (15, 31), (31, 63), (63, 100)]
    assert _chunks(100, 64, True) == [(0, 32), (32, 96), (96, 100)]
    assert _chunks(100, 64, False, first=1) == [(0, 64), (64, 100)]


def test_responses_xy_truncates_and_skips_empty_responses() -> None:
    from steerlimits.papera.context import responses_xy

    rows = [
        {"prompt": 0, "x": [1, 2], "y": [3, 4, 5]},
        {"prompt": 1, "x": [6], "y": []},
        {"prompt": 2, "x": [7], "y": [8]},
        {"prompt": 3, "x": [9], "y": [10]},
    ]
    assert list(responses_xy(rows, 3, 2, "E6")) == [(0, [1, 2], [3, 4]), (2, [7], [8])]


def test_partial_interleave_equals_the_head_of_the_full_interleave() -> None:
    from steerlimits.papera.ranking import _interleave_partial

    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        orders = [torch.randperm(300, generator=gen) for _ in range(2)]
        full = _interleave(orders)
        part = _interleave_partial([o[:40] for o in orders])
        assert part.tolist() == full[: part.numel()].tolist() and part.numel() >= 40


def test_e4_controls_are_reachable_and_runs_are_recorded(ctx: ModelContext) -> None:
    from steerlimits.papera.optimise import run_e4
    from steerlimits.settings.papera import E4

    x = ctx.prompt_ids("refusal", 1)[0]
    rows = [
        {
            "prompt": 0,
            "x": x,
            "y": [int(t) for t in torch.randint(10, 400, (4,), generator=torch.Generator().manual_seed(2))],
            "y_text": "sure",
        }
    ]
    cfg = from_params(
        E4,
        _settings(
            e4={
                "n_prompts": 1,
                "y_tokens": 4,
                "n_virtual": 2,
                "tuning_steps": 2,
                "gcg_steps": 2,
                "gcg_width": 8,
                "gcg_topk": 8,
                "gcg_verify": 2,
            }
        )["e4"],
    )
    out = run_e4(ctx, "refusal", rows, cfg)
    table, curves = out["table"], out["curves"]
    assert set(table["target"]) == {"steered", "control"} and set(table["mode"]) == {"replacement", "prefix"}
    init = table[table["method"] == "init"]
    steered_init = init[(init["mode"] == "replacement") & (init["target"] == "steered")].iloc[0]
    assert steered_init["l2_teacher_forced"] == pytest.approx(steered_init["delta_h"], rel=1e-5)  # init = x
    assert (init["l2_init"] == init["l2_teacher_forced"]).all()
    for _, g in curves.groupby(["mode", "target", "method"]):  # best-so-far never increases
        assert (np.diff(g.sort_values("step")["best_loss"].to_numpy()) <= 1e-9).all()
    # the control target is reachable: its own prompt sits at distance ~0 from it
    from steerlimits.invert import allowed_tokens
    from steerlimits.papera.optimise import random_slots

    allowed = allowed_tokens(ctx.tok, ctx.model.get_input_embeddings().weight.shape[0])
    base = x[3:8]
    new = random_slots(ctx.tok, allowed, len(base), torch.Generator().manual_seed(0), base=base, k=2)
    assert 1 <= sum(a != b for a, b in zip(new, base)) <= 2 and all(bool(allowed[t]) for t in set(new) - set(base))


def test_e5_warm_chain_and_best_so_far(ctx: ModelContext) -> None:
    from steerlimits.papera.softprefix import fit_soft_prefix, run_e5
    from steerlimits.settings.papera import E5

    cfg = from_params(E5, _settings(e5={"n_prompts": 1, "p_values": [1, 2, 3], "steps": 3})["e5"])
    out = run_e5(ctx, "refusal", cfg, 2)
    soft = out["table"][out["table"]["kind"] == "soft"]
    for _, g in soft.groupby("target"):
        env = g.sort_values("p")["l2_best_upto_p"].to_numpy()
        own = g.sort_values("p")["l2_per_token"].to_numpy()
        assert (np.diff(env) <= 1e-9).all() and np.allclose(env, np.minimum.accumulate(own))
    # the returned prefix is the best iterate: never worse than its initialisation; a planted reachable target
    # (natural states after real token embeddings) is approached from a perturbed start
    m = LAYER + 1
    tl = TruncatedLM(ctx.model, m)
    table = embedding_matrix(ctx.model).detach()
    x = ctx.prompt_ids("refusal", 1)[0]
    r = [11, 23]
    tgt = ctx.states("refusal", x[:2] + r + x[2:])[4:]
    with torch.no_grad():
        kv = tl.extend_many(PrefixKV(), torch.tensor(x[:2]))[0]
    init = table[r] + 0.3 * table.std() * torch.randn(2, table.shape[1], generator=torch.Generator().manual_seed(0))
    best, (losses,) = fit_soft_prefix(
        tl, kv, table[torch.tensor(x[2:])], tgt[None], init[None], 30, 0.05 * float(table.std())
    )
    assert min(losses) <= losses[0] and min(losses) < 0.5 * losses[0]
    assert ctx.model.get_input_embeddings().weight.grad is None  # gradients reach the slots only


def test_natural_states_many_equals_one_prompt_at_a_time(ctx: ModelContext) -> None:
    from steerlimits.papera.inversion import natural_states_many

    prompts = ctx.prompt_ids("refusal", 3)
    many = natural_states_many(ctx.model, prompts, LAYER + 1)
    for i, p in enumerate(prompts):
        one = natural_states(ctx.model, p, LAYER + 1)
        assert torch.equal(many[i][0], one[0]) and torch.equal(many[i][1], one[1])  # bit-identical


def test_one_greedy_path(ctx: ModelContext) -> None:
    """steer.greedy (the project's one greedy path): batched == one at a time, embeddings == ids, fixed lengths,
    and generate(temperature=0) is the same path."""
    from steerlimits.steer import GenerationConfig, generate, greedy

    prompts = ctx.prompt_ids("refusal", 3)
    batched = greedy(ctx.model, ctx.tok, prompts, 5, batch_size=3)
    single = [greedy(ctx.model, ctx.tok, [p], 5)[0] for p in prompts]
    assert batched == single
    table = embedding_matrix(ctx.model).detach()
    assert greedy(ctx.model, ctx.tok, [], 5, inputs_embeds=table[torch.tensor(prompts[0])])[0] == single[0]
    fixed = greedy(ctx.model, ctx.tok, prompts, 7, min_new_tokens=7)
    assert all(len(f) == 7 for f in fixed)
    gens = generate(
        ctx.model, ctx.tok, prompts, GenerationConfig(max_new_tokens=5, temperature=0.0, batch_size=2), progress=False
    )
    assert [g.continuation for g in gens] == [ctx.tok.decode(s, skip_special_tokens=True) for s in single]
