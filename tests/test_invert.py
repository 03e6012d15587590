"""Tests of steerlimits.invert on tiny random-init Llama, Qwen2 and Gemma3 models (paper A D3/D5).

Ground truth: known prompts (natural targets must invert to themselves), the authors' full-pass sweep
(:func:`reference_sweep`, the oracle) and Hugging Face's own ``hidden_states``.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from torch import nn

from steerlimits import hooks
from steerlimits.invert import (
    InversionConfig,
    PrefixKV,
    TruncatedLM,
    embedding_matrix,
    exhaustive_sweep,
    gcg_search,
    invert,
    noise_floor,
    reference_sweep,
    target_states,
)

torch.set_num_threads(1)

V, D, L, M = 256, 64, 4, 2  # vocab, width, blocks, measure_at (inject at l = 1)
T = 8
COMMON = dict(vocab_size=V, pad_token_id=0, bos_token_id=1, eos_token_id=2, max_position_embeddings=64)
ARCHS = ("llama", "qwen2", "gemma3")


def _build(arch: str) -> nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        cfg = tf.LlamaConfig(
            hidden_size=D,
            intermediate_size=128,
            num_hidden_layers=L,
            num_attention_heads=4,
            num_key_value_heads=2,
            **COMMON,
        )
        return tf.LlamaForCausalLM(cfg).eval()
    if arch == "qwen2":
        cfg = tf.Qwen2Config(
            hidden_size=D,
            intermediate_size=128,
            num_hidden_layers=L,
            num_attention_heads=4,
            num_key_value_heads=2,
            **COMMON,
        )
        return tf.Qwen2ForCausalLM(cfg).eval()
    # sliding layers with a window shorter than the prompt, as in the real model; q/k norms, scaled embeddings
    cfg = tf.Gemma3TextConfig(
        hidden_size=D,
        intermediate_size=128,
        num_hidden_layers=L,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"] * 2,
        **COMMON,
    )
    return tf.Gemma3ForCausalLM(cfg).eval()


@pytest.fixture(scope="module", params=ARCHS)
def model(request: pytest.FixtureRequest) -> nn.Module:
    return _build(request.param)


def _ids(seed: int = 1, n: int = T) -> torch.Tensor:
    return torch.randint(3, V, (n,), generator=torch.Generator().manual_seed(seed))


def _steer_vector(model: nn.Module, ids: torch.Tensor, seed: int = 2) -> torch.Tensor:
    """Random direction with the norm of the residual at the input of block M-1 (positions >= 1)."""
    with torch.no_grad():
        resid = hooks.forward_hidden(model, ids[None])[M - 1][0, 1:]
    v = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * resid.norm(dim=-1).mean()


# ------------------------------------------------------------------------------------------ forward plumbing
def test_truncated_paths_match_hidden_states(model: nn.Module) -> None:
    ids = _ids(n=10)  # longer than gemma's window of 4
    with torch.no_grad():
        hidden = hooks.forward_hidden(model, ids[None])
        for m in range(1, L):
            tl = TruncatedLM(model, m)
            torch.testing.assert_close(tl.full(ids[None])[0], hidden[m][0], rtol=0, atol=0)
            _, inc = tl.prefix_of(ids)
            scale = hidden[m][0].norm(dim=-1, keepdim=True)
            assert ((inc - hidden[m][0]).norm(dim=-1, keepdim=True) / scale).max() < 1e-5
            # batched candidate scoring equals the one-token extension of each candidate
            prefix, _ = tl.prefix_of(ids[:6])
            cands = torch.tensor([5, int(ids[6]), 200])
            scored = tl.score(prefix, cands)
            for i, c in enumerate(cands.tolist()):
                single = tl.extend(prefix, c)[1]
                assert (scored[i] - single).norm() <= 1e-6 * single.norm()


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
def test_other_families_invert(arch: str) -> None:
    torch.manual_seed(0)
    if arch == "gpt2":
        other = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=D, n_layer=3, n_head=4, n_positions=64, vocab_size=V))
    else:
        other = tf.GPTNeoXForCausalLM(
            tf.GPTNeoXConfig(
                hidden_size=D, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, vocab_size=V
            )
        )
    other.eval()
    ids = _ids()
    target = target_states(other, ids, M)
    with torch.no_grad():
        hidden = hooks.forward_hidden(other, ids[None])[M][0]
    assert ((target - hidden).norm(dim=-1) / hidden.norm(dim=-1)).max() < 1e-5
    config = InversionConfig(measure_at=M, mode="exhaustive")
    result = invert(other, target, config, floor_ids=ids, progress=False)
    assert result.ids == ids.tolist() and all(p.exact for p in result.positions)


def test_model_left_unchanged(model: nn.Module) -> None:
    ids = _ids()
    _, blocks = hooks.resolve_blocks(model)

    def installed() -> list[list[int]]:  # Hugging Face installs its own output-capturing hooks once, lazily
        return [[*b._forward_hooks, *b._forward_pre_hooks] for b in blocks]

    with torch.no_grad():
        before = model(ids[None]).logits
    hooks_before = installed()
    target = target_states(model, ids, M, vector=_steer_vector(model, ids), alpha=1.0)
    invert(model, target, InversionConfig(measure_at=M), progress=False)
    assert installed() == hooks_before
    assert model.config._attn_implementation == "sdpa"
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(ids[None]).logits, before, rtol=0, atol=0)


def test_embedding_matrix_matches_embedding_layer(model: nn.Module) -> None:
    ids = _ids()
    onehot = torch.nn.functional.one_hot(ids, V).float()
    with torch.no_grad():
        torch.testing.assert_close(onehot @ embedding_matrix(model), model.get_input_embeddings()(ids))


def test_invalid_sites_raise() -> None:
    model = _build("llama")
    with pytest.raises(ValueError, match="final norm"):
        TruncatedLM(model, L)
    with pytest.raises(ValueError, match="inject_layer"):
        target_states(model, _ids(), M, vector=torch.ones(D), alpha=1.0, inject_layer=M)
    with pytest.raises(ValueError, match="bfloat16"):
        InversionConfig(measure_at=M, screen_dtype="bfloat16")


# ------------------------------------------------------------------------------------------- natural targets
def test_noise_floor_tiny_and_tau(model: nn.Module) -> None:
    ids = _ids()
    floor = noise_floor(model, ids, M)
    norms = target_states(model, ids, M).norm(dim=-1)
    assert floor.shape == (T,)
    assert (floor / norms).max() < 1e-4
    result = invert(model, target_states(model, ids, M), InversionConfig(measure_at=M), floor_ids=ids, progress=False)
    assert result.floor_source == "floor_ids"
    assert result.tau_exact == pytest.approx(10 * float(floor.max()))


@pytest.mark.parametrize("mode", ["ranked", "exhaustive"])
def test_natural_inversion_is_exact(model: nn.Module, mode: str) -> None:
    ids = _ids()
    target = target_states(model, ids, M)
    config = InversionConfig(measure_at=M, mode=mode, n_candidates=128, batch_size=64)
    result = invert(model, target, config, floor_ids=ids, progress=False)
    assert result.ids == ids.tolist()
    assert all(p.exact and p.topk_dist[0] <= result.tau_exact for p in result.positions)
    assert all(p.n_verified <= (128 if mode == "ranked" else V) for p in result.positions)
    # without floor_ids the floor comes from a random probe and is still tiny
    probe = invert(model, target, config, progress=False)
    assert probe.floor_source == "probe" and probe.ids == ids.tolist()
    json.dumps(result.to_dict())


def test_exhaustive_without_early_exit_certifies_natural(model: nn.Module) -> None:
    ids = _ids(n=4)
    config = InversionConfig(measure_at=M, mode="exhaustive", early_exit=False, batch_size=100)
    result = invert(model, target_states(model, ids, M), config, floor_ids=ids, progress=False)
    assert result.ids == ids.tolist()
    for p in result.positions:
        assert p.certified and p.n_verified == V and p.exact
        assert p.topk_dist[1] > 100 * result.tau_exact  # the runner-up is far: no collision
        assert p.topk_dist == sorted(p.topk_dist) and len(p.topk_tokens) == 10


# ------------------------------------------------------------------------------------------- steered targets
def test_steered_target_matches_full_pass_within_floor(model: nn.Module) -> None:
    ids = _ids()
    v = _steer_vector(model, ids)
    steered = target_states(model, ids, M, vector=v, alpha=1.0)
    with torch.no_grad(), hooks.add_vector(model, M - 1, v, 1.0, positions="all"):
        full = TruncatedLM(model, M).full(ids[None])[0]
    assert (steered - full).norm(dim=-1).max() <= 10 * noise_floor(model, ids, M).max()
    natural = target_states(model, ids, M)
    assert (steered - natural).norm(dim=-1).min() > 0.1 * v.norm()


def test_steered_target_has_no_preimage(model: nn.Module) -> None:
    ids = _ids()
    v = _steer_vector(model, ids)
    steered = target_states(model, ids, M, vector=v, alpha=1.0)
    config = InversionConfig(measure_at=M, mode="exhaustive", early_exit=False)
    result = invert(model, steered, config, floor_ids=ids, progress=False)
    assert all(p.certified and p.n_verified == V for p in result.positions)
    assert not any(p.exact for p in result.positions[1:])
    assert all(p.topk_dist[0] > result.tau_exact for p in result.positions[1:])
    for t in (0, 3, T - 1):  # certified minimum == brute force over all tokens by the oracle
        tokens, dists = reference_sweep(model, torch.tensor(result.ids[:t], dtype=torch.long), steered[t], M)
        assert result.positions[t].topk_tokens == tokens.tolist()
        torch.testing.assert_close(torch.tensor(result.positions[t].topk_dist), dists, rtol=1e-4, atol=0)


def test_fast_sweep_matches_reference_top10(model: nn.Module) -> None:
    ids = _ids()
    v = _steer_vector(model, ids)
    natural = target_states(model, ids, M)
    steered = target_states(model, ids, M, vector=v, alpha=1.0)
    tau = 10 * float(noise_floor(model, ids, M).max())
    cands = torch.randperm(V, generator=torch.Generator().manual_seed(3))[:150]
    for t in (0, 2, 5):
        prefix = ids[:t]
        for target, candidate_ids in ((natural[t], None), (steered[t], None), (steered[t], cands)):
            fast = exhaustive_sweep(model, prefix, target, M, candidate_ids=candidate_ids, batch_size=37)
            ref = reference_sweep(model, prefix, target, M, batch_size=64, candidate_ids=candidate_ids)
            assert fast[0].tolist() == ref[0].tolist()
            torch.testing.assert_close(fast[1], ref[1], rtol=1e-4, atol=tau)  # atol: the ~0 natural top-1
        assert exhaustive_sweep(model, prefix, natural[t], M)[0][0] == ids[t]


def test_prefix_cache_not_mutated_and_batch_size_independent(model: nn.Module) -> None:
    ids = _ids()
    tl = TruncatedLM(model, M)
    with torch.no_grad():
        prefix, _ = tl.prefix_of(ids[:5])
        saved = PrefixKV(tuple(k.clone() for k in prefix.keys), tuple(v.clone() for v in prefix.values), 5)
        first = tl.score(prefix, torch.arange(0, 100))
        tl.score(prefix, torch.arange(100, V))
        tl.extend(prefix, 7)
        again = tl.score(prefix, torch.arange(0, 100))
    assert all(torch.equal(a, b) for a, b in zip(prefix.keys + prefix.values, saved.keys + saved.values))
    torch.testing.assert_close(again, first, rtol=0, atol=0)

    steered = target_states(model, ids, M, vector=_steer_vector(model, ids), alpha=1.0)
    results = [
        invert(
            model,
            steered,
            InversionConfig(measure_at=M, mode="exhaustive", early_exit=False, batch_size=bs),
            floor_ids=ids,
            progress=False,
        )
        for bs in (7, 1024)
    ]
    assert results[0].ids == results[1].ids
    for a, b in zip(results[0].positions, results[1].positions):
        assert a.topk_tokens == b.topk_tokens
        torch.testing.assert_close(torch.tensor(a.topk_dist), torch.tensor(b.topk_dist), rtol=1e-5, atol=0)


def test_recorded_candidate_keys_append_like_extend(model: nn.Module) -> None:
    """The engine grows its prefix from the keys/values recorded while the chosen token was scored in a batch
    (:meth:`TruncatedLM.append`); that prefix must equal :meth:`TruncatedLM.extend`'s up to rounding."""
    ids = _ids()
    tl = TruncatedLM(model, M)
    with torch.no_grad():
        prefix, _ = tl.prefix_of(ids[:4])
        cands = torch.arange(0, 64)
        _, call = tl.step(prefix, input_ids=cands, record=True)
        j = 17
        grown = tl.append(prefix, [call.new_keys[b][j] for b in range(M)], [call.new_values[b][j] for b in range(M)])
        ref, _ = tl.extend(prefix, int(cands[j]))
        assert grown.length == ref.length == 5
        for a, b in zip(grown.keys + grown.values, ref.keys + ref.values):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        probe = torch.arange(100, 140)
        torch.testing.assert_close(tl.score(grown, probe), tl.score(ref, probe), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        tl.append(prefix, [call.new_keys[0][0]], [call.new_values[0][0]])


def test_bf16_screen_reproduces_fp32_certificate(model: nn.Module) -> None:
    ids = _ids(n=4)
    steered = target_states(model, ids, M, vector=_steer_vector(model, ids), alpha=1.0)
    base = dict(measure_at=M, mode="exhaustive", early_exit=False)
    fp32 = invert(model, steered, InversionConfig(**base), floor_ids=ids, progress=False)
    screened = InversionConfig(**base, screen_dtype="bfloat16")
    bf16 = invert(model, steered, screened, floor_ids=ids, progress=False)
    assert bf16.ids == fp32.ids
    for a, b in zip(fp32.positions, bf16.positions):
        assert a.topk_tokens == b.topk_tokens and a.topk_dist == pytest.approx(b.topk_dist, rel=1e-5)
        assert b.certified and b.n_screened == V and b.screen_margin is not None and b.screen_margin > 0
        assert b.n_verified < V  # only the calibration set and the candidates within the margin


def test_ranked_mode_respects_budget_and_orders_by_gradient(model: nn.Module) -> None:
    ids = _ids()
    v = _steer_vector(model, ids)
    steered = target_states(model, ids, M, vector=v, alpha=1.0)
    config = InversionConfig(measure_at=M, n_candidates=96, batch_size=16)
    result = invert(model, steered, config, floor_ids=ids, progress=False)
    assert all(p.n_verified == 96 and not p.certified for p in result.positions)
    # natural targets: the gradient order puts the true token early, so early exit saves most of the budget
    natural = invert(model, target_states(model, ids, M), config, floor_ids=ids, progress=False)
    assert natural.ids == ids.tolist() and natural.n_verified_total <= T * 96 // 3


# ------------------------------------------------------------------------------------------------------ GCG
def test_gcg_recovers_three_token_prompt(model: nn.Module) -> None:
    ids = _ids(n=3)
    target = target_states(model, ids, M)
    result = gcg_search(model, target, M, n_steps=30, search_width=64, topk=16, seed=0)
    assert result.best_loss < result.losses[0]
    assert result.best_ids == ids.tolist()
    assert result.best_loss <= 3 * (10 * float(noise_floor(model, ids, M).max())) ** 2
    assert len(result.losses) == 31 and result.init_ids != ids.tolist()


# ---------------------------------------------------------------------------------- multi-token continuation
def test_run_continuation_matches_full_pass(model: nn.Module) -> None:
    """``TruncatedLM.run``: S new tokens per row over a shared prefix (gemma: longer than its window of 4)."""
    ids = _ids(n=14)
    tl = TruncatedLM(model, M)
    with torch.no_grad():
        full = tl.full(ids[None])[0]
        for p in (0, 3, 7):
            prefix, _ = tl.prefix_of(ids[:p])
            other = torch.randint(3, V, (14 - p,), generator=torch.Generator().manual_seed(p))
            out, _ = tl.run(prefix, input_ids=torch.stack([ids[p:], other]))
            own = tl.full(torch.cat([ids[:p], other])[None])[0][p:]
            scale = full.norm(dim=-1).max()
            assert (out[0] - full[p:]).norm(dim=-1).max() < 1e-5 * scale
            assert (out[1] - own).norm(dim=-1).max() < 1e-5 * scale
            grown, states = tl.extend_many(prefix, ids[p:])
            assert grown.length == 14 and (states - full[p:]).norm(dim=-1).max() < 1e-5 * scale


# ------------------------------------------------------------------------------------------- the certifier
def test_screened_sweep_cross_check_and_float32_agree_with_oracle(model: nn.Module) -> None:
    from steerlimits.invert import bf16_copy, screened_sweep

    ids = _ids()
    steered = target_states(model, ids, M, vector=_steer_vector(model, ids), alpha=1.0)
    tl, tl16 = TruncatedLM(model, M), TruncatedLM(bf16_copy(model), M)
    t = 5
    with torch.no_grad():
        kv, kv16 = tl.prefix_of(ids[:t])[0], tl16.prefix_of(ids[:t])[0]
    ref_tokens, ref_dists = reference_sweep(model, ids[:t], steered[t], M)
    fp32 = screened_sweep(tl, kv, steered[t][None])[0]
    checked = screened_sweep(tl, kv, steered[t][None], screen=(tl16, kv16), cross_check=True)[0]
    for sw in (fp32, checked):
        assert sw.tokens == ref_tokens.tolist()
        torch.testing.assert_close(torch.tensor(sw.dists), ref_dists, rtol=1e-4, atol=0)
    assert fp32.n_screened == 0 and fp32.margin == 0
    assert checked.screen_topk_ok and checked.full_error >= checked.calib_error > 0
    assert checked.n_verified >= V  # the cross-check sweeps every token in float32 as well


# ------------------------------------------------------------------------------------------------ GCG (full)
def test_gcg_reaches_a_planted_reachable_target(model: nn.Module) -> None:
    """Positive control of the optimiser itself: the target is the natural states of a prompt that differs from
    the initialisation in two slots; GCG with multi-position swaps, the buffer and a bf16 screen reaches it."""
    from steerlimits.invert import GCGConfig, bf16_copy, gcg

    ids = _ids(n=10)
    planted = ids.clone()
    planted[[3, 5]] = torch.tensor([17, 201])
    target = target_states(model, planted, M)[2:]
    config = GCGConfig(
        n_steps=60, search_width=64, topk=64, n_replace=2, buffer_size=2, n_verify=4, stop_loss=1e-6, seed=0
    )
    res = gcg(
        model,
        target,
        M,
        config,
        init_ids=ids[2:8],
        prefix_ids=ids[:2],
        suffix_ids=planted[8:],
        screen_model=bf16_copy(model),
    )
    assert res.best_ids == planted[2:8].tolist() and res.best_loss <= 1e-6 and res.stopped_early
    assert not res.returned_init and res.n_screened > res.n_evaluated  # candidates screened, the best verified
    assert all(b >= a for a, b in zip(res.best_losses[1:], res.best_losses))  # best-so-far never increases
    # the allowed set is honoured: with the planted tokens forbidden the target cannot be reached exactly
    allowed = torch.ones(V, dtype=torch.bool)
    allowed[[17, 201]] = False
    blocked = gcg(
        model,
        target,
        M,
        GCGConfig(n_steps=5, search_width=32, topk=16, seed=0),
        init_ids=ids[2:8],
        prefix_ids=ids[:2],
        suffix_ids=planted[8:],
        allowed=allowed,
    )
    assert not ({17, 201} & (set(blocked.best_ids) - set(ids[2:8].tolist())))
