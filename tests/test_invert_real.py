"""steerlimits.invert on the real SmolLM2-135M-Instruct (packaged GGUF, float32), l = L // 2 = 15, m = 16.

The fast cached/truncated sweep must reproduce the authors' full-pass sweep (the oracle) on a restricted
candidate set; natural states must invert exactly; steered ones must not.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from steerlimits import hooks
from steerlimits.invert import (
    InversionConfig,
    exhaustive_sweep,
    invert,
    noise_floor,
    reference_sweep,
    target_states,
)

pytestmark = pytest.mark.real_model

M = 16  # inject at the input of block 15 (L // 2), measure at its output


@pytest.fixture(scope="module")
def smol() -> tuple[nn.Module, torch.Tensor]:
    from steerlimits.models import AssetError, load_model

    torch.set_num_threads(1)
    try:
        model, tok = load_model("smollm2-135m")
    except AssetError as err:  # package not installed on this machine
        pytest.skip(f"smollm2-135m unavailable: {err}")
    messages = [{"role": "user", "content": "How do I bake bread at home?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")["input_ids"][0]
    return model, ids


def _steer_vector(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        resid = hooks.forward_hidden(model, ids[None])[M - 1][0, 1:]  # position 0 (the sink) excluded
    v = torch.randn(resid.shape[-1], generator=torch.Generator().manual_seed(0))
    return v / v.norm() * resid.norm(dim=-1).mean()


def test_noise_floor_is_tiny(smol: tuple[nn.Module, torch.Tensor]) -> None:
    model, ids = smol
    floor = noise_floor(model, ids, M)
    norms = target_states(model, ids, M).norm(dim=-1)
    assert (floor / norms).max() < 1e-5
    assert norms[0] > 50 * norms[1:].median()  # the attention sink (style §5.6): why tau uses absolute floors


def test_fast_sweep_matches_reference_on_2048_candidates(smol: tuple[nn.Module, torch.Tensor]) -> None:
    model, ids = smol
    natural = target_states(model, ids, M)
    steered = target_states(model, ids, M, vector=_steer_vector(model, ids), alpha=1.0)
    tau = 10 * float(noise_floor(model, ids, M).max())
    vocab = model.get_input_embeddings().weight.shape[0]
    for t, target in ((2, natural[2]), (3, steered[3])):
        others = torch.randperm(vocab, generator=torch.Generator().manual_seed(t))
        cands = torch.cat([ids[t : t + 1], others[others != ids[t]][:2047]])
        fast = exhaustive_sweep(model, ids[:t], target, M, candidate_ids=cands)
        ref = reference_sweep(model, ids[:t], target, M, candidate_ids=cands)
        assert fast[0].tolist() == ref[0].tolist()
        torch.testing.assert_close(fast[1], ref[1], rtol=1e-4, atol=tau)
        if target is natural[t]:
            assert fast[0][0] == ids[t] and fast[1][0] <= tau < fast[1][1]


def test_natural_inverts_exactly_and_steered_does_not(smol: tuple[nn.Module, torch.Tensor]) -> None:
    model, ids = smol
    span = slice(2, 7)  # after the attention-sink start, which only a full sweep recovers
    config = InversionConfig(measure_at=M, mode="exhaustive", early_exit=True)
    natural = invert(
        model, target_states(model, ids, M)[span], config, prefix_ids=ids[:2], floor_ids=ids[span], progress=False
    )
    assert natural.ids == ids[span].tolist()
    assert all(p.exact for p in natural.positions)
    assert natural.n_verified_total < 5 * 2048  # early exit in gradient order, far below 5 x 49,152

    v = _steer_vector(model, ids)
    steered_all = target_states(model, ids, M, vector=v, alpha=1.0)
    ranked = InversionConfig(measure_at=M, mode="ranked", n_candidates=128)
    steered = invert(model, steered_all[span], ranked, prefix_ids=ids[:2], floor_ids=ids[span], progress=False)
    assert not any(p.exact for p in steered.positions)
    assert min(p.topk_dist[0] for p in steered.positions) > 100 * steered.tau_exact


def test_screened_sweep_matches_float32_on_512_candidates(smol: tuple[nn.Module, torch.Tensor]) -> None:
    """The certifier's bf16 screen (float32 re-verification inside the margin) returns the float32 top-10 on a
    real model, and its cross-check measures the largest screening error over every candidate."""
    from steerlimits.invert import TruncatedLM, bf16_copy, screened_sweep

    model, ids = smol
    steered = target_states(model, ids, M, vector=_steer_vector(model, ids), alpha=1.0)
    t = 5
    cands = torch.randperm(model.get_input_embeddings().weight.shape[0], generator=torch.Generator().manual_seed(1))
    cands = cands[:512]
    tl, tl16 = TruncatedLM(model, M), TruncatedLM(bf16_copy(model), M)
    with torch.no_grad():
        kv, kv16 = tl.prefix_of(ids[:t])[0], tl16.prefix_of(ids[:t])[0]
    sw = screened_sweep(tl, kv, steered[t][None], screen=(tl16, kv16), candidates=cands, cross_check=True)[0]
    ref = reference_sweep(model, ids[:t], steered[t], M, candidate_ids=cands)
    assert sw.tokens == ref[0].tolist() and sw.screen_topk_ok
    assert sw.full_error <= sw.safety * sw.calib_error  # the margin covered the largest error here
