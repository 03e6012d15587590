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
from steerlimits.invert import InversionConfig, PrefixKV, TruncatedLM, embedding_matrix, gcg_search, invert
from steerlimits.invert import reference_sweep, target_states
from steerlimits.models import ModelSpec
from steerlimits.papera import claims as C
from steerlimits.papera import tables as T
from steerlimits.papera.certify import CertItem, certify
from steerlimits.papera.context import ModelContext, common_prefix_len
from steerlimits.papera.e1 import special_ids
from steerlimits.papera.generation import directional_ablation
from steerlimits.papera.icl import demo_pool, run_e3
from steerlimits.papera.inversion import SearchSetup, invert_condition, natural_states
from steerlimits.papera.optimise import nearest_tokens
from steerlimits.papera.ranking import DecoderRank, _interleave, fit_decoder
from steerlimits.papera.scale import cross_prompt
from steerlimits.settings import from_params
from steerlimits.settings.papera import E3, PaperAContext, VectorSite

torch.set_num_threads(1)
SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "paperA.schema.yaml"
LAYER = 2  # inject at the input of block 2, measure at hidden_states[3]


def _settings(**over: object) -> dict:
    pa = {"enabled": True, "n_prompts": 3, "max_new_tokens": 4, "decoder": {"max_pairs": 4, "random_tokens": 256},
          "e1": {"n_candidates": 16}, "e2": {"coefficients": [0.5, 1, 2], "n_prompts": 2, "n_candidates": 8},
          "e3": {"n_prompts": 1, "y_tokens": 4, "shots": [0, 1, 2], "demo_tokens": 4, "pool": 4}, **over}
    validate(pa, str(SCHEMA), set_default=True)
    return pa


@pytest.fixture(scope="module", params=["llama", "gemma3_text"])
def ctx(request: pytest.FixtureRequest) -> ModelContext:
    from steerlimits.tiny import build_random_model

    model, tok = build_random_model(request.param, {"n_layers": 4, "d_model": 64, "n_heads": 4, "vocab_size": 512,
                                                    "seed": 1})
    gen = torch.Generator().manual_seed(0)
    vecs = {v: torch.randn(64, generator=gen) * 3 for v in ("refusal", "persona_evil")}
    spec = ModelSpec(key="tiny", source="random", architecture=request.param, n_layers=4, d_model=64)
    sites = {"refusal": VectorSite(LAYER, -1.0, "chat"), "persona_evil": VectorSite(LAYER, 1.0, "chat")}
    settings = PaperAContext(spec, "mean_diff_last", sites, seed=3, data_dir="data", refusal_trained=True)
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
    assert order0[:len(specials)].tolist() == specials
    assert sorted(order0.tolist()) == list(range(tl.vocab_size))  # a permutation of the vocabulary
    ids = torch.tensor(ctx.encode("refusal", "hello there"))
    prefix, _ = tl.prefix_of(ids[:3])
    warm = setup.rank.with_warm({3: [123]})
    assert int(warm(tl, prefix, target, cfg)[0]) == 123
    assert setup.rank.warm is None  # the shared rank is not modified


def test_lazy_rank_skips_the_gradient_on_a_precheck_hit(ctx: ModelContext, monkeypatch: pytest.MonkeyPatch) -> None:
    import steerlimits.papera.ranking as R

    setup = _setup(ctx)
    tl = TruncatedLM(ctx.model, setup.measure_at)
    ids = torch.tensor(ctx.encode("refusal", "hello there"))
    target0 = tl.prefix_of(ids[:1])[1][0]
    calls = []
    monkeypatch.setattr(R, "gradient_order", lambda *a: calls.append(1) or torch.arange(tl.vocab_size))
    cfg = InversionConfig(measure_at=setup.measure_at, tau_exact=1e-3)
    order = setup.rank.lazy(32)(tl, PrefixKV(), target0, cfg)
    assert int(order[0]) == int(ids[0]) and not calls  # the sink token is special: found without a gradient
    setup.rank.lazy(32)(tl, PrefixKV(), target0 + 10.0, cfg)  # no match within tau: the gradient is used
    assert calls == [1]


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
    # a precheck hit is re-verified with the precheck's runner-up (first batch of 2), so top-2 is always known
    assert setup.config("natural", 1e-3).first_batch == 2
    counts = [p.n_verified for r in runs for p in r.positions]
    assert min(counts) == 2  # hits cost two verifications; misses ramp 2, 4, 8, ... over the gradient order
    assert all(len(p.topk_dist) >= 2 and p.topk_dist[1] > p.topk_dist[0] for r in runs for p in r.positions)


def test_natural_recovers_when_the_decoder_precheck_misses(ctx: ModelContext) -> None:
    from dataclasses import replace

    setup = _setup(ctx)
    blind = replace(setup.rank.decoder, weight=torch.zeros_like(setup.rank.decoder.weight))  # useless decoder
    setup = replace(setup, rank=DecoderRank(blind, setup.rank.table, first_at_zero=setup.rank.first_at_zero),
                    precheck=1)
    runs = invert_condition(ctx.model, ctx.prompt_ids("persona_evil", 2), setup)
    assert all(r.exact_match for r in runs)
    assert max(p.n_verified for r in runs for p in r.positions[1:]) > 1  # the full search took over


def test_steered_gap_is_at_most_the_displacement_with_a_warm_start(ctx: ModelContext) -> None:
    setup = _setup(ctx)
    prompts = ctx.prompt_ids("refusal", 2)
    nat = {i: natural_states(ctx.model, p, setup.measure_at) for i, p in enumerate(prompts)}
    natural = invert_condition(ctx.model, prompts, setup, natural=nat)
    steered = invert_condition(ctx.model, prompts, setup, vector=ctx.vectors["refusal"], alpha=-1.0, natural=nat,
                               warm={r.prompt_index: r.recovered for r in natural})
    for r in steered:
        top1 = np.array([p.topk_dist[0] for p in r.positions])
        assert (top1[1:] > 100 * r.tau).all()  # no preimage found anywhere
        # the prompt's own token is a candidate wherever the recovered prefix equals x
        same = [t for t in range(len(r.ids)) if r.recovered[:t] == r.ids[:t]]
        assert all(top1[t] <= r.delta_h[t] * (1 + 1e-5) + 1e-5 for t in same)
        target = target_states(ctx.model, torch.tensor(r.ids), setup.measure_at, vector=ctx.vectors["refusal"],
                               alpha=-1.0, inject_layer=LAYER)
        torch.testing.assert_close(r.target, target)


def test_rank_fn_hook_reaches_the_engine(ctx: ModelContext) -> None:
    ids = torch.tensor(ctx.encode("refusal", "a short prompt"))
    m = LAYER + 1
    target = target_states(ctx.model, ids, m)

    def oracle(tl, prefix, target_t, config):  # noqa: ANN001, ANN202 - the true token first
        t = prefix.length
        rest = torch.tensor([i for i in range(tl.vocab_size) if i != int(ids[t])])
        return torch.cat([ids[t:t + 1], rest])

    res = invert(ctx.model, target, InversionConfig(measure_at=m, mode="ranked", n_candidates=1), rank_fn=oracle,
                 floor_ids=ids, progress=False)
    assert res.ids == ids.tolist() and res.n_verified_total == len(ids)


@pytest.mark.parametrize("screen", ["bfloat16", "float32"])
def test_certificates_match_the_full_pass_oracle(ctx: ModelContext, screen: str) -> None:
    m = LAYER + 1
    ids = ctx.encode("refusal", "explain the weather")
    natural, _ = natural_states(ctx.model, ids, m)
    steered = target_states(ctx.model, torch.tensor(ids), m, vector=ctx.vectors["refusal"], alpha=-1.0,
                            inject_layer=LAYER)
    positions = [3, len(ids) - 1]
    items = [CertItem(key=("nat",), recovered=ids, target=natural, positions=positions, tau=1e-3),
             CertItem(key=("steer",), recovered=ids, target=steered, positions=positions, tau=1e-3)]
    out = certify(ctx.model, items, m, top_k=5, screen_dtype=screen)
    assert len(out) == 4
    for item, pos in out:
        tokens, dists = reference_sweep(ctx.model, torch.tensor(ids[:pos.position]), item.target[pos.position], m,
                                        top_k=5)
        assert pos.topk_tokens == tokens.tolist()
        np.testing.assert_allclose(pos.topk_dist, dists.numpy(), rtol=1e-4, atol=1e-4)
        vocab = ctx.model.get_input_embeddings().weight.shape[0]
        assert pos.certified and (pos.n_screened == vocab if screen == "bfloat16" else pos.n_verified == vocab)
        if item.key == ("nat",):
            assert pos.chosen_token == ids[pos.position]


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
    res = run_e3(ctx, "refusal", rows, from_params(E3, _settings()["e3"]))
    demos = demo_pool(ctx, "refusal", 2, 4, 4, ctx.seed, 16)
    m = LAYER + 1
    target = ctx.states("refusal", x + y, steered=True)
    for n in (0, 1, 2):
        prefix = [t for d in demos[:n] for t in d]
        with torch.no_grad():
            h = hooks.forward_hidden(ctx.model, torch.tensor([prefix + x + y]))[m][0, len(prefix):]
        l2 = torch.linalg.vector_norm(h - target, dim=-1)[len(x):].mean()
        got = res["summary"].query("n_shots == @n")["l2_response"].iloc[0]
        assert got == pytest.approx(float(l2), rel=1e-4)


def test_gcg_suffix_and_mask() -> None:
    from steerlimits.tiny import build_random_model

    model, _ = build_random_model("llama", {"n_layers": 3, "d_model": 32, "n_heads": 4, "vocab_size": 300, "seed": 0})
    ids = torch.randint(10, 300, (9,), generator=torch.Generator().manual_seed(0))
    states = TruncatedLM(model, 2).full(input_ids=ids[None])[0].detach()
    res = gcg_search(model, states[2:], 2, n_steps=0, init_ids=ids[2:5], prefix_ids=ids[:2], suffix_ids=ids[5:])
    assert res.best_loss < 1e-8  # the true ids match the target everywhere, suffix included
    noisy = states[2:].clone()
    noisy[:3] += 5.0
    masked = gcg_search(model, noisy, 2, n_steps=0, init_ids=ids[2:5], prefix_ids=ids[:2], suffix_ids=ids[5:],
                        target_mask=torch.tensor([0, 0, 0, 1, 1, 1, 1.0]))
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
            rows.append({"model": "m", "vector": "refusal", "experiment": "E1", "condition": cond, "alpha": alpha,
                         "prompt": p, "exact_match": exact, "token_accuracy": 1.0, "max_floor": 1e-4, "tau": 1e-3,
                         "tau0": 0.1, "mse_recovered_to_target": 0.2, "mse_recovered_to_natural": 0.0,
                         "n_candidates": 16, "layer": 2, "refusal_trained": True, "ids": json.dumps([1, 2, 3])})
            for t in range(4):
                pos.append({"model": "m", "vector": "refusal", "experiment": "E1", "condition": cond, "alpha": alpha,
                            "prompt": p, "position": t, "top1": top * (1 + t), "top2": 5.0, "delta_h": 10.0 * (1 + t)
                            if cond == "steered" else 0.0, "tau": 1e-3, "n_verified": 32, "vocab_size": 320})
    for alpha in (-0.5, -1.0, -2.0):
        for t in range(1, 4):
            pos.append({"model": "m", "vector": "refusal", "experiment": "E2", "condition": "steered",
                        "alpha": alpha, "prompt": 0, "position": t, "top1": abs(alpha) * 10, "top2": 50.0,
                        "delta_h": abs(alpha) * 10, "tau": 1e-3, "n_verified": 8, "vocab_size": 320})
    certs = pd.DataFrame([{"model": "m", "vector": "refusal", "experiment": "E1", "condition": "steered",
                           "alpha": -1.0, "position": t, "min_gt_tau": t != 2, "argmin_is_x": True,
                           "search_found_min": True} for t in (1, 2, 3)])
    beh = pd.DataFrame([{"model": "m", "vector": "refusal", "condition": c, "refusal": r, "attack_success": 1 - r,
                         "refusal_trained": True} for c, r in (("baseline", 1.0), ("steered", 0.0), ("recovered", 1.0))])
    return {"prompts": pd.DataFrame(rows), "positions": pd.DataFrame(pos), "certificates": certs, "behaviour": beh}


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


def test_verification_batches_ramp_from_first_batch() -> None:
    from steerlimits.invert.sequential import _chunks

    assert _chunks(100, 64, True, first=1) == [(0, 1), (1, 3), (3, 7), (7, 15), (15, 31), (31, 63), (63, 100)]
    assert _chunks(100, 64, True) == [(0, 32), (32, 96), (96, 100)]
    assert _chunks(100, 64, False, first=1) == [(0, 64), (64, 100)]


def test_responses_xy_truncates_and_skips_empty_responses() -> None:
    from steerlimits.papera.context import responses_xy

    rows = [{"prompt": 0, "x": [1, 2], "y": [3, 4, 5]}, {"prompt": 1, "x": [6], "y": []},
            {"prompt": 2, "x": [7], "y": [8]}, {"prompt": 3, "x": [9], "y": [10]}]
    assert list(responses_xy(rows, 3, 2, "E6")) == [(0, [1, 2], [3, 4]), (2, [7], [8])]
