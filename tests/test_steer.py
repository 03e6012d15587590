"""Steered generation: batching is exact, alpha=0 is identity, continuations are separate from prompts."""

from __future__ import annotations

import torch

from steerlimits.data import Prompt
from steerlimits.prompting import encode_all, left_pad
from steerlimits.steer import GenerationConfig, generate, shipped_decoding

PROMPTS = [
    Prompt("Tell me about the harbour"),
    Prompt("A short note on the weather in spring, please"),
    Prompt("Why"),
    Prompt("Describe the old library on the hill in a few words"),
]


def test_batched_greedy_equals_one_at_a_time(tiny_llama) -> None:
    model, tok = tiny_llama
    ids = encode_all(tok, PROMPTS, "chat")
    v = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    cfg_b = GenerationConfig(max_new_tokens=6, temperature=0.0, batch_size=4)
    cfg_1 = GenerationConfig(max_new_tokens=6, temperature=0.0, batch_size=1)
    for positions in ("all", "last_prompt_and_generated"):
        batched = generate(model, tok, ids, cfg_b, vector=v, alpha=3.0, layer=1, positions=positions, progress=False)
        single = generate(model, tok, ids, cfg_1, vector=v, alpha=3.0, layer=1, positions=positions, progress=False)
        assert [g.continuation for g in batched] == [g.continuation for g in single]


def test_alpha_zero_is_identity_and_steering_changes_output(tiny_llama) -> None:
    model, tok = tiny_llama
    ids = encode_all(tok, PROMPTS, "raw")
    cfg = GenerationConfig(max_new_tokens=8, temperature=0.8, batch_size=4, seed=5)
    v = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(2)) * 20
    plain = generate(model, tok, ids, cfg, progress=False)
    zero = generate(model, tok, ids, cfg, vector=v, alpha=0.0, layer=1, progress=False)
    steered = generate(model, tok, ids, cfg, vector=v, alpha=4.0, layer=1, progress=False)
    assert [g.continuation for g in plain] == [g.continuation for g in zero]
    assert [g.continuation for g in plain] != [g.continuation for g in steered]


def test_seeded_sampling_reproducible_and_continuation_separate(tiny_llama) -> None:
    model, tok = tiny_llama
    ids = encode_all(tok, PROMPTS, "chat")
    cfg = GenerationConfig(max_new_tokens=5, temperature=1.0, batch_size=2, seed=11)
    a = generate(model, tok, ids, cfg, n_samples=2, progress=False)
    b = generate(model, tok, ids, cfg, n_samples=2, progress=False)
    assert [g.to_dict() for g in a] == [g.to_dict() for g in b]
    assert len(a) == 8 and {g.sample for g in a} == {0, 1}
    for g in a:
        assert g.prompt == tok.decode(ids[g.prompt_index], skip_special_tokens=False)
        assert "<|assistant|>" not in g.continuation  # the template is in the prompt, not the continuation
        assert g.n_new_tokens <= 5


def test_left_pad() -> None:
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_limit_keeps_first_jobs(tiny_llama) -> None:
    model, tok = tiny_llama
    ids = encode_all(tok, PROMPTS, "raw")
    cfg = GenerationConfig(max_new_tokens=4, temperature=0.0, batch_size=3)
    full = generate(model, tok, ids, cfg, n_samples=2, progress=False)
    part = generate(model, tok, ids, cfg, n_samples=2, limit=5, progress=False)
    assert len(full) == 8 and len(part) == 5
    assert [(g.prompt_index, g.sample, g.continuation) for g in part] == [
        (g.prompt_index, g.sample, g.continuation) for g in full[:5]
    ]


def test_explicit_decoding_is_really_explicit_and_faithful_uses_shipped_defaults(tiny_llama, monkeypatch) -> None:
    """Trap: leaving top_k unset lets transformers apply top-k 50; explicit decoding must switch it off."""
    from steerlimits.paperb.steps import decoding_settings
    from steerlimits.settings.paperb import Decoding

    model, tok = tiny_llama
    seen: list[set[str]] = []
    original = model._get_logits_processor

    def spy(*args, **kwargs):
        procs = original(*args, **kwargs)
        seen.append({type(p).__name__ for p in procs})
        return procs

    monkeypatch.setattr(model, "_get_logits_processor", spy)
    ids = encode_all(tok, PROMPTS[:2], "raw")
    explicit = decoding_settings(Decoding("explicit", temperature=0.8, top_p=1.0, batch_size=2), model)
    assert explicit["top_k"] is None and explicit["repetition_penalty"] is None
    generate(model, tok, ids, GenerationConfig(max_new_tokens=2, batch_size=2), progress=False)
    assert seen[-1] == {"TemperatureLogitsWarper"}

    faithful = decoding_settings(Decoding("faithful", temperature=0.8, top_p=1.0, batch_size=2), model)
    assert faithful["top_k"] == 50 and faithful["source"]["top_k"] == "transformers global default"
    cfg = GenerationConfig(
        max_new_tokens=2,
        batch_size=2,
        top_k=faithful["top_k"],
        top_p=faithful["top_p"],
        repetition_penalty=faithful["repetition_penalty"],
    )
    generate(model, tok, ids, cfg, progress=False)
    assert "TopKLogitsWarper" in seen[-1]

    monkeypatch.setattr(model.generation_config, "top_k", 20)
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.05)
    shipped = shipped_decoding(model)
    assert shipped["top_k"] == 20 and shipped["repetition_penalty"] == 1.05
    assert shipped["source"]["top_k"] == "checkpoint generation_config"
    cfg = GenerationConfig(
        max_new_tokens=2,
        batch_size=2,
        top_k=shipped["top_k"],
        top_p=shipped["top_p"],
        repetition_penalty=shipped["repetition_penalty"],
    )
    generate(model, tok, ids, cfg, progress=False)
    assert {"TopKLogitsWarper", "RepetitionPenaltyLogitsProcessor"} <= seen[-1]
