"""Tests of steerlimits.hooks on tiny random-init models of five families (style §3, §5; paper A D2/D4)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
import transformers as tf
from torch import nn

from steerlimits.hooks import (
    LAYER_TABLE,
    BlockLocation,
    add_vector,
    forward_hidden,
    position_ids_from_mask,
    record,
    resolve_blocks,
    rewrap,
    unwrap,
)

torch.set_num_threads(1)

V, D, L = 128, 32, 3
COMMON = dict(vocab_size=V, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _llama() -> nn.Module:
    return tf.LlamaForCausalLM(
        tf.LlamaConfig(
            hidden_size=D,
            intermediate_size=64,
            num_hidden_layers=L,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            **COMMON,
        )
    )


def _qwen2() -> nn.Module:
    return tf.Qwen2ForCausalLM(
        tf.Qwen2Config(
            hidden_size=D,
            intermediate_size=64,
            num_hidden_layers=L,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            **COMMON,
        )
    )


def _gemma3() -> nn.Module:  # a sliding layer with a short window and a full layer, as in the real model
    cfg = tf.Gemma3TextConfig(
        hidden_size=D,
        intermediate_size=64,
        num_hidden_layers=L,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        **COMMON,
    )
    return tf.Gemma3ForCausalLM(cfg)


def _gpt2() -> nn.Module:
    return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=D, n_layer=L, n_head=4, n_positions=64, **COMMON))


def _neox() -> nn.Module:
    cfg = tf.GPTNeoXConfig(
        hidden_size=D,
        intermediate_size=64,
        num_hidden_layers=L,
        num_attention_heads=4,
        max_position_embeddings=64,
        **COMMON,
    )
    return tf.GPTNeoXForCausalLM(cfg)


# family -> (builder, expected block path, final norm path)
FAMILIES: dict[str, tuple[Callable[[], nn.Module], str, str]] = {
    "llama": (_llama, "model.layers", "model.norm"),
    "qwen2": (_qwen2, "model.layers", "model.norm"),
    "gemma3": (_gemma3, "model.layers", "model.norm"),
    "gpt2": (_gpt2, "transformer.h", "transformer.ln_f"),
    "gpt_neox": (_neox, "gpt_neox.layers", "gpt_neox.final_layer_norm"),
}


def build(family: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return FAMILIES[family][0]().to(dtype).eval()


@pytest.fixture(params=list(FAMILIES), scope="module")
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(family: str) -> nn.Module:
    return build(family)


def ids(batch: int = 2, seq: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, V, (batch, seq), generator=g)


def steer_vector(seed: int = 2) -> torch.Tensor:
    return torch.randn(D, generator=torch.Generator().manual_seed(seed))


def logits(model: nn.Module, input_ids: torch.Tensor, **kw: object) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, use_cache=False, **kw).logits


# --------------------------------------------------------------------------------------- 1. resolution
def test_resolve_blocks_table(family: str, model: nn.Module) -> None:
    loc, blocks = resolve_blocks(model)
    assert loc == BlockLocation(FAMILIES[family][1], L, "table")
    assert blocks is model.get_submodule(FAMILIES[family][1])
    assert LAYER_TABLE[model.config.model_type] == loc.path


def test_resolve_blocks_base_model_without_head() -> None:
    torch.manual_seed(0)
    base = tf.LlamaModel(_llama().config)
    loc, blocks = resolve_blocks(base)
    assert (loc.path, loc.how) == ("layers", "table") and blocks is base.layers


def test_resolve_blocks_guess_for_unknown_model_type(
    model: nn.Module, family: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(model.config, "model_type", "renamed_" + family, raising=False)
    with caplog.at_level(logging.WARNING, logger="steerlimits.hooks"):
        loc, blocks = resolve_blocks(model)
    assert loc == BlockLocation(FAMILIES[family][1], L, "guess")
    assert blocks is model.get_submodule(FAMILIES[family][1])
    assert any(r.levelno == logging.WARNING and FAMILIES[family][1] in r.getMessage() for r in caplog.records)


class _Wrapper(nn.Module):
    """An unknown architecture: blocks under a custom name, plus other ModuleLists."""

    def __init__(self, model_type: str, n: int, extra: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(model_type=model_type, n_layer=n)
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(n))
        self.backbone = nn.ModuleList(nn.Linear(4, 4) for _ in range(n))
        self.extra = nn.ModuleList(nn.Linear(4, 4) for _ in range(extra))


def test_resolve_blocks_guess_uses_n_layer_and_override_wins(caplog: pytest.LogCaptureFixture) -> None:
    # table hit for "llama": model.layers, even though `backbone` would also match the length
    wrapped = _Wrapper("llama", 3, 2)
    assert resolve_blocks(wrapped)[0] == BlockLocation("model.layers", 3, "table")
    # the override wins over the table
    loc, blocks = resolve_blocks(wrapped, layers_path="extra")
    assert loc == BlockLocation("extra", 2, "override") and blocks is wrapped.extra
    # unknown type: two ModuleLists of length n_layer -> ambiguous, the message lists both
    with pytest.raises(ValueError, match=r"'model\.layers', 'backbone'.*layers_path"):
        resolve_blocks(_Wrapper("mystery", 3, 2))
    # unknown type with a unique match (n_layer = 2 -> only `extra`)
    odd = _Wrapper("mystery", 3, 5)
    odd.config.n_layer = 5
    with caplog.at_level(logging.WARNING, logger="steerlimits.hooks"):
        assert resolve_blocks(odd)[0] == BlockLocation("extra", 5, "guess")
    assert "'extra'" in caplog.text


def test_resolve_blocks_errors() -> None:
    class NoBlocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = SimpleNamespace(model_type="strange_lm", num_hidden_layers=3)
            self.body = nn.Sequential(nn.Linear(3, 3))

    with pytest.raises(ValueError, match=r"model_type='strange_lm'.*layers_path"):
        resolve_blocks(NoBlocks())
    with pytest.raises(ValueError, match=r"layers_path='body.missing'"):
        resolve_blocks(NoBlocks(), layers_path="body.missing")
    with pytest.raises(ValueError, match="ModuleList"):
        resolve_blocks(NoBlocks(), layers_path="body")  # a Sequential, not a ModuleList


def test_resolve_blocks_gemma3_multimodal() -> None:
    torch.manual_seed(0)
    text = tf.Gemma3TextConfig(
        hidden_size=D,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        **COMMON,
    )
    vision = tf.SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    cfg = tf.Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4)
    model = tf.Gemma3ForConditionalGeneration(cfg)
    loc, blocks = resolve_blocks(model)
    assert loc == BlockLocation("model.language_model.layers", 2, "table")
    assert blocks is model.model.language_model.layers


# -------------------------------------------------------------------------------- 2. index conventions
def test_record_matches_hidden_states_and_final_norm(family: str, model: nn.Module) -> None:
    x = ids()
    with torch.no_grad(), record(model, range(L), ("resid_pre", "resid_post")) as rec:
        hs = forward_hidden(model, x)
    assert len(hs) == L + 1
    assert all(len(v) == 1 for v in rec.values())
    for layer in range(L):
        assert rec["resid_pre", layer][0].shape == (2, 7, D)
        assert torch.equal(rec["resid_pre", layer][0], hs[layer])
    for layer in range(L - 1):
        assert torch.equal(rec["resid_post", layer][0], hs[layer + 1])
    last_raw = rec["resid_post", L - 1][0]
    final_norm = model.get_submodule(FAMILIES[family][2])
    with torch.no_grad():
        assert torch.equal(hs[L], final_norm(last_raw))
    assert not torch.allclose(hs[L], last_raw, atol=1e-3)  # the last entry is NOT the raw block output


# ---------------------------------------------------------------------------------------- 3. alpha = 0
@pytest.mark.parametrize("positions", ["all", "last_prompt_and_generated"])
def test_alpha_zero_is_bit_identical(model: nn.Module, positions: str) -> None:
    x = ids()
    ref = logits(model, x)
    v = steer_vector()
    with add_vector(model, 1, v, 0.0, positions, prompt_length=4) as handle:  # type: ignore[arg-type]
        got = logits(model, x)
    assert torch.equal(got, ref)
    assert handle.calls == [(0, 7)] and not handle.changed[0].any()


# ---------------------------------------------------------------------------------- 4. which positions
def _run_all_sites(model: nn.Module, x: torch.Tensor) -> tuple[dict, torch.Tensor, tuple[torch.Tensor, ...]]:
    with torch.no_grad(), record(model, range(L), ("resid_pre", "resid_post")) as rec:
        hs = forward_hidden(model, x)
        out = logits(model, x)
    return {k: v[0] for k, v in rec.items()}, out, hs


def test_positions_all(model: nn.Module) -> None:
    x, v, alpha, layer = ids(), steer_vector(), 2.0, 1
    base, base_logits, base_hs = _run_all_sites(model, x)
    with add_vector(model, layer, v, alpha, "all") as handle:  # record entered inside: sees the steered input
        steered, steered_logits, steered_hs = _run_all_sites(model, x)
    assert handle.start == 0 and handle.calls == [(0, 7), (0, 7)]
    assert all(bool(c.all()) for c in handle.changed)
    diff = steered["resid_pre", layer] - base["resid_pre", layer]
    torch.testing.assert_close(diff, (alpha * v).expand_as(diff), atol=1e-6, rtol=0)
    for earlier in range(layer):
        assert torch.equal(steered["resid_pre", earlier], base["resid_pre", earlier])
        assert torch.equal(steered["resid_post", earlier], base["resid_post", earlier])
    sites = ("resid_pre", "resid_post")
    downstream = [("resid_post", layer)] + [(s, k) for k in range(layer + 1, L) for s in sites]
    for site, later in downstream:
        per_pos = (steered[site, later] - base[site, later]).abs().amax(dim=-1)
        assert bool((per_pos > 1e-4).all()), (site, later)
    assert bool(((steered_logits - base_logits).abs().amax(-1) > 1e-6).all())
    # Hugging Face's hidden_states: [layer] is still block layer-1's unsteered output, [layer+1] is steered
    assert torch.equal(steered_hs[layer], base_hs[layer])
    assert not torch.allclose(steered_hs[layer + 1], base_hs[layer + 1])


def test_positions_last_prompt_and_generated(model: nn.Module) -> None:
    x, v, alpha, layer, prompt_length = ids(), steer_vector(), 2.0, 1, 4
    base, base_logits, _ = _run_all_sites(model, x)
    # record entered FIRST, steering second: the prepended steering hook still runs before the recorder
    mode = "last_prompt_and_generated"
    with torch.no_grad(), record(model, range(L), ("resid_pre", "resid_post")) as rec:
        with add_vector(model, layer, v, alpha, mode, prompt_length=prompt_length) as handle:
            steered_logits = logits(model, x)
    steered = {k: val[0] for k, val in rec.items()}
    expected = torch.arange(7) >= prompt_length - 1
    assert handle.start == prompt_length - 1 and handle.calls == [(0, 7)]
    assert torch.equal(handle.changed[0], expected)
    keep = slice(0, prompt_length - 1)
    for key in steered:  # causality: earlier positions are bit-identical at every site and layer
        assert torch.equal(steered[key][:, keep], base[key][:, keep]), key
    assert torch.equal(steered_logits[:, keep], base_logits[:, keep])
    diff = steered["resid_pre", layer] - base["resid_pre", layer]
    torch.testing.assert_close(diff[:, expected], (alpha * v).expand_as(diff[:, expected]), atol=1e-6, rtol=0)
    for site, later in [("resid_post", layer), ("resid_pre", layer + 1), ("resid_post", L - 1)]:
        changed = (steered[site, later] - base[site, later]).abs().amax(-1) > 1e-4
        assert torch.equal(changed, expected.expand_as(changed)), (site, later)
    assert bool(((steered_logits - base_logits).abs().amax(-1)[:, expected] > 1e-6).all())


# ----------------------------------------------------------------------------- 5. generation, KV cache
def _generate(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """Greedy generation of exactly ``n`` tokens: (sequences, scores of the first generated token)."""
    with torch.no_grad():
        out = model.generate(
            input_ids=x,
            attention_mask=mask,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            output_scores=True,
        )
    return out.sequences, out.scores[0]


def test_generation_with_kv_cache_matches_manual_loop(model: nn.Module) -> None:
    n_new, layer, alpha, v, mode = 4, 1, 6.0, steer_vector(), "last_prompt_and_generated"
    x = ids(2, 6, seed=3)
    mask = torch.ones_like(x)
    x[0, :2], mask[0, :2] = 0, 0  # left padding on row 0: its prompt is 4 tokens, row 1 has 6
    prompt_length = x.shape[1]
    base_seq, base_first = _generate(model, x, mask, n_new)
    with add_vector(model, layer, v, alpha, mode, prompt_length=prompt_length) as handle:
        seq, first_scores = _generate(model, x, mask, n_new)
    assert handle.calls == [(0, prompt_length)] + [(prompt_length + i, 1) for i in range(n_new - 1)]
    assert torch.equal(handle.changed[0], torch.arange(prompt_length) == prompt_length - 1)
    assert all(bool(c.all()) and c.shape == (1,) for c in handle.changed[1:])
    # the first generated token is steered (its logits come from the last prompt position)
    assert not torch.allclose(first_scores, base_first, atol=1e-4)
    assert not torch.equal(seq, base_seq)
    # off-by-one control: starting one position later misses the first generated token entirely
    with add_vector(model, layer, v, alpha, mode, prompt_length=prompt_length + 1):
        _, late_first = _generate(model, x, mask, n_new)
    assert torch.equal(late_first, base_first)
    # a manual no-cache loop over the full sequence under the same steering gives the same greedy tokens
    cur, cur_mask = x.clone(), mask.clone()
    with add_vector(model, layer, v, alpha, mode, prompt_length=prompt_length) as manual:
        for _ in range(n_new):
            with torch.no_grad():
                pos = position_ids_from_mask(cur_mask)
                out = model(input_ids=cur, attention_mask=cur_mask, position_ids=pos, use_cache=False)
            step = out.logits[:, -1]
            cur = torch.cat([cur, step.argmax(-1, keepdim=True)], dim=1)
            cur_mask = torch.cat([cur_mask, torch.ones_like(cur_mask[:, :1])], dim=1)
    assert torch.equal(cur, seq)
    assert [c[0] for c in manual.calls] == [0] * n_new
    assert torch.equal(manual.changed[-1], torch.arange(cur.shape[1] - 1) >= prompt_length - 1)


# ------------------------------------------------------------------------------------- 6. left padding
def test_position_ids_from_mask() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    expected = torch.tensor([[1, 1, 0, 1, 2], [0, 1, 2, 3, 4], [1, 0, 1, 2, 3]])
    assert torch.equal(position_ids_from_mask(mask), expected)


def test_left_padded_batch_equals_single_runs(model: nn.Module) -> None:
    lengths, width = [3, 7, 5], 7
    prompts = [ids(1, n, seed=10 + n)[0] for n in lengths]
    batch = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for row, p in enumerate(prompts):
        batch[row, width - len(p) :], mask[row, width - len(p) :] = p, 1
    with torch.no_grad():
        hs_batch = forward_hidden(model, batch, mask)
        for row, p in enumerate(prompts):
            hs_single = forward_hidden(model, p[None])
            for k in range(L + 1):
                got = hs_batch[k][row, width - len(p) :]
                assert (got - hs_single[k][0]).abs().max() <= 1e-5, (row, k)


# --------------------------------------------------------------------------- 7. tuple-returning blocks
class _TupleBlock(nn.Module):
    """An old-style block: takes ``hidden_states=`` by keyword and returns ``(hidden, None)``."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.Tanh(), nn.Linear(2 * D, D))

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, None]:
        return hidden_states + self.mlp(hidden_states), None


class _OldStyleLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(model_type="oldstyle", num_hidden_layers=L)
        self.embed = nn.Embedding(V, D)
        self.blocks = nn.ModuleList(_TupleBlock() for _ in range(L))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)
        for block in self.blocks:
            h = block(hidden_states=h)[0]
        return h


def test_unwrap_rewrap_tensor_and_tuple() -> None:
    h, other = torch.randn(2, 5, D), torch.randn(2, 5, D)
    assert unwrap(h) is h and unwrap((h, None)) is h  # a tensor is never sliced along the batch
    assert rewrap(h, other) is other
    wrapped = rewrap((h, None, "cache"), other)
    assert isinstance(wrapped, tuple) and wrapped[0] is other and wrapped[1:] == (None, "cache")
    with pytest.raises(TypeError):
        unwrap({"h": h})


def test_tuple_returning_blocks() -> None:
    torch.manual_seed(0)
    lm = _OldStyleLM().eval()
    x, v, alpha, layer = ids(2, 5), steer_vector(), 1.5, 1
    with torch.no_grad():
        manual = [lm.embed(x)]
        for block in lm.blocks:
            manual.append(block(hidden_states=manual[-1])[0])
        with record(lm, range(L), ("resid_pre", "resid_post")) as rec:
            lm(x)
        for k in range(L):
            assert rec["resid_pre", k][0].shape == (2, 5, D)
            assert torch.equal(rec["resid_pre", k][0], manual[k])
            assert torch.equal(rec["resid_post", k][0], manual[k + 1])
        h = manual[layer] + alpha * v
        for block in lm.blocks[layer:]:
            h = block(hidden_states=h)[0]
        with add_vector(lm, layer, v, alpha, "all"):
            steered = lm(x)
    assert resolve_blocks(lm)[0] == BlockLocation("blocks", L, "guess")
    torch.testing.assert_close(steered, h, atol=0, rtol=0)


# ----------------------------------------------------------------------------- 8. model left unchanged
def _hook_state(model: nn.Module) -> dict[str, tuple]:
    return {
        name: (
            tuple(m._forward_hooks),
            tuple(m._forward_pre_hooks),
            tuple(m._forward_hooks_with_kwargs),
            tuple(m._forward_pre_hooks_with_kwargs),
            tuple(m._backward_hooks),
        )
        for name, m in model.named_modules()
    }


def test_model_unchanged_after_contexts(family: str) -> None:
    model = build(family)
    x = ids()
    with torch.no_grad():
        forward_hidden(model, x)  # transformers installs its own capture hooks on first use: the baseline
    hooks_before = _hook_state(model)
    params_before = {k: t.clone() for k, t in model.state_dict().items()}
    ref = logits(model, x)
    v = steer_vector()

    with record(model, range(L), ("resid_pre", "resid_post")), add_vector(model, 1, v, 3.0, "all"):
        assert _hook_state(model) != hooks_before
        logits(model, x)
    with add_vector(model, 0, v, 3.0, "last_prompt_and_generated", prompt_length=3):
        logits(model, x)
    for ctx in (lambda: record(model, [2], ["resid_post"]), lambda: add_vector(model, 2, v, 1.0)):
        with pytest.raises(RuntimeError, match="boom"), ctx():
            logits(model, x)
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="size"), add_vector(model, 1, torch.ones(D + 1), 1.0):
        logits(model, x)  # the error raised inside the hook still removes it

    assert _hook_state(model) == hooks_before
    assert all(torch.equal(t, params_before[k]) for k, t in model.state_dict().items())
    assert torch.equal(logits(model, x), ref)


def test_argument_validation(model: nn.Module) -> None:
    v, before = steer_vector(), _hook_state(model)
    with pytest.raises(ValueError, match="prompt_length"):
        add_vector(model, 1, v, 1.0, "last_prompt_and_generated").__enter__()
    with pytest.raises(ValueError, match="out of range"):
        add_vector(model, L, v, 1.0).__enter__()
    with pytest.raises(ValueError, match="positions"):
        add_vector(model, 0, v, 1.0, "first").__enter__()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="site"):
        record(model, [0], ["resid_mid"]).__enter__()  # type: ignore[list-item]
    assert _hook_state(model) == before


# ----------------------------------------------------------------------------------------- 9. autograd
@pytest.mark.parametrize("positions", ["all", "last_prompt_and_generated"])
def test_gradient_flows_to_vector(family: str, positions: str) -> None:
    model = build(family, torch.float64)
    x = ids(1, 6)
    v0 = steer_vector().double()

    def f(vec: torch.Tensor) -> torch.Tensor:
        with add_vector(model, 1, vec, 1.5, positions, prompt_length=4):  # type: ignore[arg-type]
            out = model(input_ids=x, use_cache=False).logits
        return out[0, -1, 5] - out[0, -1, 9]

    v = v0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(v), v)
    assert grad.abs().max() > 1e-8
    # central differences; eps is not tiny: some families (Llama's RMSNorm) compute in float32 internally
    eps = 2e-3
    with torch.no_grad():
        for seed in range(3):
            u = torch.randn(D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            fd = (f(v0 + eps * u) - f(v0 - eps * u)) / (2 * eps)
            torch.testing.assert_close(fd, grad @ u, rtol=1e-3, atol=1e-7)
