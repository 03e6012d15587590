"""Tests for steerlimits.nullspace and steerlimits.samplers with planted ground truth."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import transformers as tf

from steerlimits import nullspace as ns
from steerlimits import samplers as sp


# --------------------------------------------------------------------------------------------- fixtures
def _low_rank(n: int, d: int, r: int, seed: int, noise: float = 1e-5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0]  # (d, r) orthonormal
    scales = np.linspace(1.0, 0.5, r)
    return rng.standard_normal((n, r)) * scales @ basis.T + noise * rng.standard_normal((n, d)) + 3.0


def _tiny(kind: str, *, d: int = 32, vocab: int = 200, layers: int = 3, cap: float | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "llama":
        cfg = tf.LlamaConfig(
            vocab_size=vocab,
            hidden_size=d,
            intermediate_size=2 * d,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    else:
        cfg = tf.Gemma3TextConfig(
            vocab_size=vocab,
            hidden_size=d,
            intermediate_size=2 * d,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=d // 4,
            sliding_window=4,
            final_logit_softcapping=cap,
        )
    return tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


# ------------------------------------------------------------------------------------- covariance spectra
def test_covariance_spectrum_matches_numpy() -> None:
    x = np.random.default_rng(0).standard_normal((50, 6))
    # singular values of the centred activation matrix / sqrt(n - 1) = sqrt of the covariance eigenvalues
    ref = np.linalg.svd((x - x.mean(0)) / math.sqrt(49), compute_uv=False)
    np.testing.assert_allclose(ns.covariance_spectrum(torch.tensor(x, dtype=torch.float64)), ref, rtol=1e-10)
    np.testing.assert_allclose(
        ns.covariance_spectrum(x) ** 2, np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1], rtol=1e-10
    )


@pytest.mark.parametrize("r", [3, 7])
def test_planted_rank_recovered(r: int) -> None:
    d = 40
    sv = ns.covariance_spectrum(torch.tensor(_low_rank(600, d, r, seed=r), dtype=torch.float32))
    for thr in (1e-2, 1e-3):
        assert ns.effective_rank(sv, thr) == r
        assert ns.null_fraction(sv, thr) == pytest.approx(1 - r / d)


def test_participation_ratio_and_rank_by_hand() -> None:
    assert ns.participation_ratio(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(4.0)
    assert ns.participation_ratio(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert ns.participation_ratio(np.array([3.0, 1.0])) == pytest.approx(16 / 10)
    assert ns.effective_rank(np.array([1.0, 0.01, 0.009]), 1e-2) == 2  # inclusive threshold
    assert ns.effective_rank(np.zeros(4), 1e-2) == 0
    assert math.isnan(ns.participation_ratio(np.zeros(3)))


def test_spectrum_summary_rows() -> None:
    sv = np.array([10.0, 1.0, 0.05, 0.001])
    spec = ns.Spectrum(sv, method="covariance", layer=3, n_samples=100, excluded_positions=ns.EXCLUDE_RULE)
    rows = spec.summary([1e-2, 1e-3])
    assert [r["effective_rank"] for r in rows] == [2, 3]
    assert [r["null_fraction"] for r in rows] == pytest.approx([0.5, 0.25])
    assert rows[0]["participation_ratio"] == pytest.approx((sv**2).sum() ** 2 / (sv**4).sum())  # of s²
    assert spec.to_dict()["singular_values"] == sv.tolist()


def test_null_and_active_bases_split_planted_space() -> None:
    d, r = 20, 5
    x = _low_rank(400, d, r, seed=1)
    sv, vecs = ns.covariance_decomposition(x)
    active, null = ns.active_basis(sv, vecs, 1e-2), ns.null_basis(sv, vecs, 1e-2)
    assert active.shape == (d, r) and null.shape == (d, d - r)
    full = torch.cat([active, null], 1).double()
    torch.testing.assert_close(full.T @ full, torch.eye(d, dtype=torch.float64), atol=1e-10, rtol=0)
    centred = torch.tensor(x - x.mean(0), dtype=torch.float64)
    assert float((centred @ null).norm() / centred.norm()) < 1e-4  # data has no variance in the null basis


def test_principal_angles_known_values() -> None:
    e = torch.eye(4, dtype=torch.float64)
    for theta in (1e-7, 0.3, 1.2):
        b = math.cos(theta) * e[:, 0] + math.sin(theta) * e[:, 1]
        assert ns.principal_angles(e[:, :1], b[:, None])[0] == pytest.approx(theta, rel=1e-6)
    angles = ns.principal_angles(e[:, :2], e[:, 1:4])  # share e1, then orthogonal
    np.testing.assert_allclose(angles, [0.0, math.pi / 2], atol=1e-12)
    rot = torch.linalg.qr(torch.randn(4, 2, dtype=torch.float64))[0]
    np.testing.assert_allclose(
        ns.principal_angles(rot, rot @ torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)), 0.0, atol=1e-7
    )


# ---------------------------------------------------------------------------- position-0 outlier (trap 6)
def test_position0_exclusion_restores_rank() -> None:
    d, r, n_prompts = 24, 5, 60
    rng = np.random.default_rng(2)
    sink = rng.standard_normal(d)
    sink *= 100.0 * math.sqrt(d) / np.linalg.norm(sink)  # ~100x the other positions' norm, one direction
    hidden, masks = [], []
    for i in range(n_prompts):
        seq, pad = 8 + i % 5, i % 3
        x = _low_rank(seq, d, r, seed=100 + i, noise=1e-6) - 3.0
        x[0] = sink + 0.5 * rng.standard_normal(d)
        h = np.concatenate([np.full((pad, d), 1e6), x])  # left padding filled with garbage
        hidden.append(torch.tensor(h, dtype=torch.float32))
        masks.append(torch.tensor([0] * pad + [1] * seq))
    acts, n_excl = ns.gather_token_activations(hidden, masks)
    assert n_excl == n_prompts and acts.shape[0] == sum(int(m.sum()) - 1 for m in masks)
    assert float(acts.abs().max()) < 1e3  # neither pads nor sinks
    with_all, n0 = ns.gather_token_activations(hidden, masks, exclude_first=False)
    assert n0 == 0 and with_all.shape[0] == acts.shape[0] + n_prompts
    # the planted rank-r generators use a different basis per prompt, so the pooled rank is min(d, r * prompts);
    # what matters: the sink swamps the spectrum unless excluded
    sv_ex, sv_all = ns.covariance_spectrum(acts), ns.covariance_spectrum(with_all)
    assert ns.effective_rank(sv_ex, 1e-2) == d
    assert ns.effective_rank(sv_all, 1e-2) == 1
    assert ns.null_fraction(sv_all, 1e-2) == pytest.approx(1 - 1 / d)


def test_gather_single_rank_generator_with_batched_input() -> None:
    d, r = 16, 4
    x = torch.tensor(_low_rank(3 * 10, d, r, seed=5), dtype=torch.float32).reshape(3, 10, d)
    x[:, 0] = 500.0  # constant sink at position 0
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, :2] = 0
    acts, n_excl = ns.gather_token_activations([x], [mask])
    assert n_excl == 3 and acts.shape == (30 - 2 - 3, d)
    torch.testing.assert_close(acts[:7], x[0, 3:])
    assert ns.effective_rank(ns.covariance_spectrum(acts), 1e-2) == r
    assert (
        ns.effective_rank(
            ns.covariance_spectrum(ns.gather_token_activations([x], [mask], exclude_first=False)[0]), 1e-2
        )
        == 1
    )


# --------------------------------------------------------------------------------------------- Jacobians
@pytest.mark.parametrize(("kind", "cap"), [("llama", None), ("gemma", None), ("gemma", 2.0)])
def test_fast_jacobian_gram_equals_bruteforce(kind: str, cap: float | None, caplog: pytest.LogCaptureFixture) -> None:
    model = _tiny(kind, cap=cap)
    gen = torch.Generator().manual_seed(1)
    for layer, seq in ((0, 7), (1, 9), (2, 1)):
        ids = torch.randint(3, 200, (1, seq), generator=gen)
        with caplog.at_level(logging.WARNING, logger="steerlimits.nullspace"):
            fast = ns.logprob_jacobian_gram(model, ids, torch.ones_like(ids), layer)
        ref = ns.logprob_jacobian_gram_autograd(model, ids, None, layer)
        assert fast.shape == (32, 32) and fast.dtype == torch.float64
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    assert "brute-force" not in caplog.text  # the analytic head was used


@pytest.mark.parametrize(("kind", "cap"), [("llama", None), ("gemma", 2.0)])
def test_fisher_and_steered_grams_equal_bruteforce(kind: str, cap: float | None) -> None:
    """The analytic Fisher form J^T diag(p) J (all tokens: fisher_mass 1) and both forms at a steered point
    equal the brute-force V x d Jacobian; the truncated Fisher records the mass it covers."""
    model = _tiny(kind, cap=cap)
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(3, 200, (1, 6), generator=gen)
    at = 3.0 * torch.randn(32, generator=gen)
    for point in (None, at):
        fast = ns.logprob_jacobian_grams(model, ids, None, 1, at=point, fisher_mass=1.0)
        ref = ns._grams_autograd(model, ids, 1, torch.zeros(32) if point is None else point, 1.0, None)
        for form in ("plain", "fisher"):
            torch.testing.assert_close(fast[form], ref[form], rtol=0, atol=1e-5 * float(ref[form].abs().max()))
        assert fast["fisher_covered"] == pytest.approx(1.0)
    steered, unsteered = (ns.logprob_jacobian_grams(model, ids, None, 1, at=a)["plain"] for a in (at, None))
    assert float((steered - unsteered).abs().max()) > 1e-3 * float(unsteered.abs().max())  # the point matters
    part = ns.logprob_jacobian_grams(model, ids, None, 1, fisher_mass=0.5)
    assert 0.5 <= part["fisher_covered"] < 1.0 and part["fisher_tokens"] < 200
    ev = torch.linalg.eigvalsh(part["fisher"])
    assert float(ev.min()) >= -1e-9 * float(ev.max())  # truncated Fisher stays PSD


@pytest.mark.parametrize(("kind", "cap"), [("llama", None), ("gemma", 2.0)])
def test_cached_float64_unembedding_changes_no_bit(
    kind: str, cap: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The float64 unembedding is converted once per weight: the grams of a prompt are bit-identical whether the
    copy is cold (just made), warm (reused) or absent (an unembedding over the size cap, converted per prompt),
    and a weight changed in place gets a fresh copy."""
    model = _tiny(kind, cap=cap)
    weight = model.get_output_embeddings().weight
    ids = torch.randint(3, 200, (1, 6), generator=torch.Generator().manual_seed(5))
    ns._DOUBLE_CACHE.clear(), ns._GRAM_CACHE.clear()
    cold = ns.logprob_jacobian_grams(model, ids, None, 1, fisher_mass=0.9)
    wd = ns.double_unembedding(weight)
    assert wd is not None and torch.equal(wd, weight.detach().double())
    assert ns.double_unembedding(weight) is wd  # reused
    warm = ns.logprob_jacobian_grams(model, ids, None, 1, fisher_mass=0.9)
    monkeypatch.setattr(ns, "DOUBLE_CACHE_MAX", 0)
    ns._GRAM_CACHE.clear()
    assert ns.double_unembedding(weight) is None
    uncached = ns.logprob_jacobian_grams(model, ids, None, 1, fisher_mass=0.9)
    for form in ("plain", "fisher"):
        assert torch.equal(cold[form], warm[form]) and torch.equal(cold[form], uncached[form])
    monkeypatch.undo()
    with torch.no_grad():
        weight.mul_(2.0)  # in place: same object, new version
    fresh = ns.double_unembedding(weight)
    assert fresh is not None and fresh is not wd and torch.equal(fresh, weight.detach().double())
    if cap is None:  # the Gram matrix is cached by the same rule
        torch.testing.assert_close(ns.unembedding_gram(weight)[0], fresh.T @ fresh)


def test_jacobian_left_padding_and_fallback(caplog: pytest.LogCaptureFixture) -> None:
    model = _tiny("llama")
    ids = torch.randint(3, 200, (1, 6), generator=torch.Generator().manual_seed(3))
    plain = ns.logprob_jacobian_gram(model, ids, None, 1)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], 1)
    torch.testing.assert_close(ns.logprob_jacobian_gram(model, padded, mask, 1), plain)
    # a head the analytic route cannot reproduce (config claims softcapping, Llama ignores it) -> brute force
    model.config.final_logit_softcapping = 0.5
    with caplog.at_level(logging.WARNING, logger="steerlimits.nullspace"):
        fallback = ns.logprob_jacobian_gram(model, ids, None, 1)
    assert "brute-force" in caplog.text
    torch.testing.assert_close(fallback, plain, rtol=0, atol=1e-5 * float(plain.abs().max()))


def test_jacobian_spectrum_is_stacked_svd() -> None:
    rng = np.random.default_rng(0)
    js = [rng.standard_normal((7, 5)) for _ in range(3)]
    sv = ns.jacobian_spectrum([torch.tensor(j.T @ j) for j in js])
    np.testing.assert_allclose(sv, np.linalg.svd(np.vstack(js), compute_uv=False), rtol=1e-10)


@pytest.mark.parametrize("layer", [1, 2])
def test_planted_jacobian_null_space_recovered(layer: int) -> None:
    """Tiny Llama whose stream never writes to and never reads from S: the logits ignore S to first order."""
    d, k = 32, 8
    model = _tiny("llama", d=d)
    s_basis = torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(7)))[0]
    keep = torch.eye(d) - s_basis @ s_basis.T
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight @ keep)  # tied with lm_head
        for blk in model.model.layers:
            att, mlp = blk.self_attn, blk.mlp
            for lin in (att.q_proj, att.k_proj, att.v_proj, mlp.gate_proj, mlp.up_proj):
                lin.weight.copy_(lin.weight @ keep)
            for lin in (att.o_proj, mlp.down_proj):
                lin.weight.copy_(keep @ lin.weight)
    gen = torch.Generator().manual_seed(layer)
    grams = [
        ns.logprob_jacobian_gram(model, torch.randint(3, 200, (1, 5 + i), generator=gen), None, layer) for i in range(4)
    ]
    sv, vecs = ns.jacobian_decomposition(grams)
    null = ns.null_basis(sv, vecs, 1e-3)
    assert null.shape == (d, k)
    assert ns.principal_angles(null, s_basis).max() <= 1e-4
    assert sv[d - k - 1] / sv[0] > 1e-2  # a clear gap, not a threshold artefact
    top = ns.top_basis(vecs, 4)  # the most sensitive directions lie outside S
    assert top.shape == (d, 4) and float((torch.as_tensor(top).T.double() @ s_basis.double()).abs().max()) < 1e-4


# ---------------------------------------------------------------------------------------------- samplers
@pytest.fixture
def v() -> torch.Tensor:
    return torch.randn(24, generator=torch.Generator().manual_seed(0)) * 3.0


def _check_norm_orth(u: torch.Tensor, v: torch.Tensor) -> None:
    torch.testing.assert_close(u.norm(dim=1), v.norm().expand(u.shape[0]), rtol=1e-5, atol=0)
    assert float((u @ v / (u.norm(dim=1) * v.norm())).abs().max()) < 1e-5


def test_random_orth_sampler(v: torch.Tensor) -> None:
    u = sp.sample_perturbations(v, "random_orth", 50, seed=3)
    assert u.shape == (50, 24) and u.dtype == v.dtype
    _check_norm_orth(u, v)
    torch.testing.assert_close(u, ns.sample_perturbations(v, "random_orth", 50, seed=3))
    assert not torch.allclose(u, sp.sample_perturbations(v, "random_orth", 50, seed=4))
    # isotropic in v⊥: E[u uᵀ] = ‖v‖² P / (d − 1)
    many = sp.sample_perturbations(v.double(), "random_orth", 6000, seed=5)
    proj = sp.intersection_projector(v, None)
    cov = many.T @ many / many.shape[0]
    assert float((cov - v.double().norm() ** 2 * proj / 23).abs().max()) < 0.1 * float(v.norm() ** 2 / 23)


@pytest.mark.parametrize("family", ["null_cov", "null_jac", "active"])
def test_subspace_sampler_stays_inside_and_orthogonal(v: torch.Tensor, family: str) -> None:
    gen = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(24, 6, generator=gen))[0]
    basis[:, 0] = 0.0  # make v partly inside the subspace: replace one column by v's direction
    basis = torch.linalg.qr(torch.cat([basis[:, 1:], v[:, None]], 1))[0]
    u = sp.sample_perturbations(v, family, 10, seed=2, basis=basis)  # type: ignore[arg-type]
    _check_norm_orth(u, v)
    residual = u - (u @ basis) @ basis.T
    assert float(residual.norm() / u.norm()) < 1e-5
    orth = sp.sample_perturbations(v, family, 5, seed=2, basis=basis, orthonormal=True)  # type: ignore[arg-type]
    _check_norm_orth(orth, v)
    torch.testing.assert_close(orth @ orth.T, v.norm() ** 2 * torch.eye(5), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="dim"):
        sp.sample_perturbations(v, family, 6, seed=2, basis=basis, orthonormal=True)  # type: ignore[arg-type]


def test_orthonormal_random_orth_and_controls(v: torch.Tensor) -> None:
    orth = sp.sample_perturbations(v, "random_orth", 23, seed=0, orthonormal=True)
    _check_norm_orth(orth, v)
    torch.testing.assert_close(orth @ orth.T, v.norm() ** 2 * torch.eye(23), atol=1e-4, rtol=0)
    neg = sp.sample_perturbations(v, "neg_v", 3, seed=0)
    torch.testing.assert_close(neg, -v.expand(3, -1))
    with pytest.raises(ValueError, match="needs the subspace basis"):
        sp.sample_perturbations(v, "null_jac", 2, seed=0)
    with pytest.raises(ValueError, match="zero norm"):
        sp.sample_perturbations(torch.zeros(4), "random_orth", 2, seed=0)


def test_combine(v: torch.Tensor) -> None:
    us = sp.sample_perturbations(v, "random_orth", 5, seed=1, orthonormal=True)
    x = sp.combine(us, seed=9, target_norm=float(v.norm()))
    assert float(x.norm()) == pytest.approx(float(v.norm()), rel=1e-5)
    coeffs = torch.linalg.lstsq(us.T.double(), x.double()[:, None]).solution
    assert float((us.T.double() @ coeffs - x.double()[:, None]).norm()) < 1e-4  # in span(us)
    assert abs(float(x @ v)) / float(x.norm() * v.norm()) < 1e-5
    torch.testing.assert_close(x, sp.combine(us, seed=9, target_norm=float(v.norm())))
    assert not torch.allclose(x, sp.combine(us, seed=10, target_norm=float(v.norm())))


# --------------------------------------------------------------------------------------------- real model
@pytest.mark.real_model
def test_smollm2_position0_outlier_dominates_covariance() -> None:
    from steerlimits.hooks import forward_hidden
    from steerlimits.models import load_model, model_dir

    if not (model_dir("smollm2-135m") / "steerlimits_model.json").exists():
        pytest.skip("smollm2-135m cache not prepared")
    model, tok = load_model("smollm2-135m")
    tok.padding_side = "left"
    prompts = [
        "Write a formal letter about the weather.",
        "Tell me a story about a dog in the park today.",
        "Describe the city at night.",
        "What is the capital of France and why is it famous?",
        "Explain how a bicycle works to a child.",
        "List three reasons to learn a new language.",
        "Summarise the plot of a mystery novel in two sentences.",
        "Write a short poem about rain.",
    ]
    batch = tok(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        hidden = forward_hidden(model, batch.input_ids, batch.attention_mask)[15]
    first = batch.attention_mask.argmax(1)
    norms0 = hidden[torch.arange(len(prompts)), first].norm(dim=-1)
    others = hidden[-1, -3:].norm(dim=-1)
    assert float(norms0.min()) > 20 * float(others.max())
    acts, _ = ns.gather_token_activations([hidden], [batch.attention_mask])
    acts_all, _ = ns.gather_token_activations([hidden], [batch.attention_mask], exclude_first=False)
    r_ex = ns.effective_rank(ns.covariance_spectrum(acts), 1e-2)
    r_all = ns.effective_rank(ns.covariance_spectrum(acts_all), 1e-2)
    assert r_all < r_ex
