"""Benchmark of the sequential inversion engine on SmolLM2-135M-Instruct, one position, in ONE run.

1. Exhaustive per-position sweep (cached prefix, blocks 0 … m-1 only, batches of 1,024) over the whole
   vocabulary, in float32 and as the certifier runs it (bf16 screen on the CPU's matrix units, float32
   re-verification inside the margin, :func:`steerlimits.invert.screened_sweep`), vs the authors' method
   (:func:`reference_sweep`: prefix + candidate through the whole model, float32) timed on a random subset of
   candidates and extrapolated per candidate. Top-10 agreement: both fast paths vs the reference on that subset,
   and the screened sweep vs the float32 sweep over the whole vocabulary.
2. Achieved FLOP/s of the sweeps, ``2 · P_m · |𝒱| / t`` with ``P_m`` the parameters of blocks 0 … m-1 (matmul
   weights; attention scores, norms and the prefix build are not counted, so this is a lower bound), vs float32
   and bf16 GEMMs (``torch.matmul`` of two 2048 × 2048 matrices, best of 3) timed in the same run.

Usage: ``HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_invert.py [--threads 1] [--ref-candidates 512]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from steerlimits import hooks
from steerlimits.hardware import cpu_info
from steerlimits.invert import TruncatedLM, bf16_copy, exhaustive_sweep, reference_sweep, screened_sweep, target_states
from steerlimits.models import load_model


def gemm_rate(n: int = 2048, repeats: int = 3, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ref-candidates", type=int, default=512)
    parser.add_argument("--prompt", default="Name a color.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, tok = load_model("smollm2-135m")
    _, blocks = hooks.resolve_blocks(model)
    layer = len(blocks) // 2
    m = layer + 1
    ids = tok.apply_chat_template(
        [{"role": "user", "content": args.prompt}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"][0]
    t = ids.numel() - 1  # the last position: the longest prefix of this prompt
    with torch.no_grad():
        resid = hooks.forward_hidden(model, ids[None])[layer][0, 1:]
    v = torch.randn(resid.shape[-1])
    v = v / v.norm() * resid.norm(dim=-1).mean()
    target = target_states(model, ids, m, vector=v, alpha=1.0)[t]  # steered: no ~0 distances
    vocab = model.get_input_embeddings().weight.shape[0]
    p_m = sum(p.numel() for p in blocks[:m].parameters())

    gemm, gemm16 = gemm_rate(), gemm_rate(dtype=torch.bfloat16)

    exhaustive_sweep(model, ids[:t], target, m, candidate_ids=torch.arange(64))  # warm-up
    start = time.perf_counter()
    fp32 = exhaustive_sweep(model, ids[:t], target, m, batch_size=1024)
    sweep_s = time.perf_counter() - start
    tl = TruncatedLM(model, m)
    with torch.no_grad():
        start = time.perf_counter()
        kv32, _ = tl.prefix_of(ids[:t])
        prefix_s = time.perf_counter() - start
    tl16 = TruncatedLM(bf16_copy(model), m)
    with torch.no_grad():
        kv16, _ = tl16.prefix_of(ids[:t])
        tl16.score(kv16, torch.arange(64))  # warm-up
    start = time.perf_counter()
    screened = screened_sweep(tl, kv32, target[None], screen=(tl16, kv16), top_k=10, batch_size=1024)[0]
    screen_s = time.perf_counter() - start

    subset = torch.randperm(vocab)[: args.ref_candidates]
    start = time.perf_counter()
    ref = reference_sweep(model, ids[:t], target, m, batch_size=256, candidate_ids=subset)
    ref_s = time.perf_counter() - start
    fast = exhaustive_sweep(model, ids[:t], target, m, candidate_ids=subset)
    fast16 = screened_sweep(tl, kv32, target[None], screen=(tl16, kv16), candidates=subset, top_k=10)[0]
    same_tokens = fast[0].tolist() == ref[0].tolist()
    same16 = fast16.tokens == ref[0].tolist()
    max_rel = float(((fast[1] - ref[1]).abs() / ref[1]).max())
    max_rel16 = float(((torch.tensor(fast16.dists) - ref[1]).abs() / ref[1]).max())
    full_same = screened.tokens == fp32[0].tolist()

    ref_full_s = ref_s / subset.numel() * vocab
    flops = 2 * p_m * vocab / sweep_s
    flops16 = 2 * p_m * vocab / screen_s
    report = {
        "model": "smollm2-135m",
        "inject_layer": layer,
        "measure_at": m,
        "position": t,
        "prefix_len": t,
        "vocab": vocab,
        "threads": args.threads,
        "P_m": p_m,
        "fast_sweep_s": round(sweep_s, 2),
        "fast_prefix_build_s": round(prefix_s, 3),
        "fast_us_per_candidate": round(1e6 * sweep_s / vocab, 1),
        "screened_sweep_s": round(screen_s, 2),
        "screened_n_verified_fp32": screened.n_verified,
        "screened_margin": round(screened.margin, 4),
        "reference_candidates": subset.numel(),
        "reference_s": round(ref_s, 2),
        "reference_us_per_candidate": round(1e6 * ref_s / subset.numel(), 1),
        "reference_full_sweep_extrapolated_s": round(ref_full_s, 1),
        "speedup_fp32": round(ref_full_s / sweep_s, 1),
        "speedup_screened": round(ref_full_s / screen_s, 1),
        "top10_identical_fp32": same_tokens,
        "top10_max_rel_diff_fp32": max_rel,
        "top10_identical_screened": same16,
        "top10_max_rel_diff_screened": max_rel16,
        "screened_top10_equals_fp32_full_vocab": full_same,
        "sweep_gflops_fp32": round(flops / 1e9, 1),
        "sweep_gflops_screened": round(flops16 / 1e9, 1),
        "gemm_gflops_fp32": round(gemm / 1e9, 1),
        "gemm_gflops_bf16": round(gemm16 / 1e9, 1),
        "fraction_of_gemm_fp32": round(flops / gemm, 3),
        "fraction_of_bf16_gemm_screened": round(flops16 / gemm16, 3),
        "cpu": cpu_info(),
    }
    print(json.dumps(report, indent=1))
    print(
        f"(1) speedup over the reference sweep: screened {report['speedup_screened']}x (target >= 100x), float32 "
        f"{report['speedup_fp32']}x; identical top-10 on the reference's candidates: screened "
        f"{'yes' if same16 else 'no'} (max rel. diff {max_rel16:.1e}), float32 {'yes' if same_tokens else 'no'} "
        f"({max_rel:.1e}); screened == float32 top-10 over the whole vocabulary: {'yes' if full_same else 'no'}"
    )
    print(
        f"(2) float32 sweep {report['sweep_gflops_fp32']} GFLOP/s = 2*P_m*|V|/t vs GEMM {report['gemm_gflops_fp32']} "
        f"GFLOP/s ({100 * report['fraction_of_gemm_fp32']:.0f}%); screened sweep {report['sweep_gflops_screened']} "
        f"GFLOP/s vs bf16 GEMM {report['gemm_gflops_bf16']} GFLOP/s "
        f"({100 * report['fraction_of_bf16_gemm_screened']:.0f}%)"
    )


if __name__ == "__main__":
    main()
