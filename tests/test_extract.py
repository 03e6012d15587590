"""Contrastive vectors: parity with the reference formulas computed from output_hidden_states."""

from __future__ import annotations

import torch

from steerlimits.data import Prompt
from steerlimits.extract import collect_activations, contrastive_vectors
from steerlimits.prompting import encode_all


def _reference_last(model, ids_list: list[list[int]]) -> torch.Tensor:
    """CAA / paper B read: hidden_states[l][:, -1] of each UNPADDED prompt, for l = 0..L-1."""
    rows = []
    with torch.no_grad():
        for ids in ids_list:
            hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
            rows.append(torch.stack([hs[l][0, -1] for l in range(model.config.num_hidden_layers)]))
    return torch.stack(rows)


def _reference_mean(model, ids_list: list[list[int]]) -> torch.Tensor:
    """Mean over prompt tokens, first token excluded."""
    rows = []
    with torch.no_grad():
        for ids in ids_list:
            hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
            rows.append(torch.stack([hs[l][0, 1:].mean(0) for l in range(model.config.num_hidden_layers)]))
    return torch.stack(rows)


def _prompts(tok) -> tuple[list[list[int]], list[list[int]]]:
    pos = [
        Prompt("Write a glowing note about the new park"),
        Prompt("Say something kind about rainy days at home"),
        Prompt("Describe a wonderful meal"),
    ]
    neg = [
        Prompt("Write a gloomy note about the new park"),
        Prompt("Say something harsh about rain"),
        Prompt("Describe an awful, cold and tasteless meal in the canteen"),
    ]
    return encode_all(tok, pos, "raw"), encode_all(tok, neg, "raw")


def test_batched_collection_matches_unpadded_reference(tiny_llama) -> None:
    model, tok = tiny_llama
    pos, neg = _prompts(tok)
    last, mean = collect_activations(model, tok, pos + neg, batch_size=4, progress=False)
    assert torch.allclose(last, _reference_last(model, pos + neg), atol=1e-5)
    assert torch.allclose(mean, _reference_mean(model, pos + neg), atol=1e-5)


def test_vectors_match_reference_formulas(tiny_llama) -> None:
    model, tok = tiny_llama
    pos, neg = _prompts(tok)
    pl, pm = collect_activations(model, tok, pos, batch_size=2, progress=False)
    nl, nm = collect_activations(model, tok, neg, batch_size=2, progress=False)
    vs = contrastive_vectors(pl, nl, pm, nm)
    ref_last = _reference_last(model, pos).mean(0) - _reference_last(model, neg).mean(0)
    ref_mean = _reference_mean(model, pos).mean(0) - _reference_mean(model, neg).mean(0)
    assert vs.vectors["mean_diff_last"].shape == (model.config.num_hidden_layers, model.config.hidden_size)
    assert torch.allclose(vs.vectors["mean_diff_last"], ref_last, atol=1e-5)
    assert torch.allclose(vs.vectors["mean_diff_mean"], ref_mean, atol=1e-5)
    # PCA: unit PC1 of centred paired differences (numpy SVD), sign towards the mean difference, norm-matched
    diffs = (_reference_last(model, pos) - _reference_last(model, neg)).double()
    for layer in range(model.config.num_hidden_layers):
        d = diffs[:, layer] - diffs[:, layer].mean(0)
        pc = torch.linalg.svd(d, full_matrices=False).Vh[0]
        pc = pc if pc @ ref_last[layer].double() >= 0 else -pc
        got = vs.vectors["pca"][layer].double()
        assert torch.allclose(got.norm(), ref_last[layer].double().norm(), rtol=1e-5)
        assert torch.allclose(got / got.norm(), pc, atol=1e-4)


def test_planted_direction_is_recovered() -> None:
    """Activations = noise + a planted offset on the positive side: mean difference and PCA find it."""
    g = torch.Generator().manual_seed(0)
    n, L, d = 200, 2, 16
    direction = torch.zeros(d)
    direction[3] = 5.0
    neg = torch.randn(n, L, d, generator=g)
    scale = 1 + torch.rand(n, 1, 1, generator=g)  # varying strength makes the difference direction the top PC
    pos = torch.randn(n, L, d, generator=g) * 0.1 + neg + scale * direction
    vs = contrastive_vectors(pos, neg, pos, neg)
    for method in ("mean_diff_last", "pca"):
        cos = torch.nn.functional.cosine_similarity(vs.vectors[method][0], direction, dim=0)
        assert cos > 0.99, (method, cos)
