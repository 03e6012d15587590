"""Benchmark of the sequential inversion engine on SmolLM2-135M-Instruct, one position, float32, in ONE run.

1. Exhaustive per-position sweep (cached prefix, blocks 0 … m-1 only, batches of 1,024) over the whole
   vocabulary vs the authors' method (:func:`reference_sweep`: prefix + candidate through the whole model)
   timed on a random subset of candidates and extrapolated per candidate; both are run on that subset and
   their top-10 compared.
2. Achieved FLOP/s of the sweep, ``2 · P_m · |𝒱| / t`` with ``P_m`` the parameters of blocks 0 … m-1 (matmul
   weights; attention scores, norms and the prefix build are not counted, so this is a lower bound), vs a
   float32 GEMM (``torch.matmul`` of two 2048 × 2048 matrices, best of 3) timed in the same run.

Usage: ``HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_invert.py [--threads 1] [--ref-candidates 512]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from steerlimits import hooks
from steerlimits.invert import TruncatedLM, exhaustive_sweep, reference_sweep, target_states
from steerlimits.models import load_model


def gemm_rate(n: int = 2048, repeats: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
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
    ids = tok.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                  return_tensors="pt")["input_ids"][0]
    t = ids.numel() - 1  # the last position: the longest prefix of this prompt
    with torch.no_grad():
        resid = hooks.forward_hidden(model, ids[None])[layer][0, 1:]
    v = torch.randn(resid.shape[-1])
    v = v / v.norm() * resid.norm(dim=-1).mean()
    target = target_states(model, ids, m, vector=v, alpha=1.0)[t]  # steered: no ~0 distances
    vocab = model.get_input_embeddings().weight.shape[0]
    p_m = sum(p.numel() for p in blocks[:m].parameters())

    gemm = gemm_rate()

    exhaustive_sweep(model, ids[:t], target, m, candidate_ids=torch.arange(64))  # warm-up
    start = time.perf_counter()
    exhaustive_sweep(model, ids[:t], target, m, batch_size=1024)
    sweep_s = time.perf_counter() - start
    tl = TruncatedLM(model, m)
    with torch.no_grad():
        start = time.perf_counter()
        tl.prefix_of(ids[:t])
        prefix_s = time.perf_counter() - start

    subset = torch.randperm(vocab)[: args.ref_candidates]
    start = time.perf_counter()
    ref = reference_sweep(model, ids[:t], target, m, batch_size=256, candidate_ids=subset)
    ref_s = time.perf_counter() - start
    fast = exhaustive_sweep(model, ids[:t], target, m, candidate_ids=subset)
    same_tokens = fast[0].tolist() == ref[0].tolist()
    max_rel = float(((fast[1] - ref[1]).abs() / ref[1]).max())

    ref_full_s = ref_s / subset.numel() * vocab
    flops = 2 * p_m * vocab / sweep_s
    report = {
        "model": "smollm2-135m", "inject_layer": layer, "measure_at": m, "position": t, "prefix_len": t,
        "vocab": vocab, "threads": args.threads, "P_m": p_m,
        "fast_sweep_s": round(sweep_s, 2), "fast_prefix_build_s": round(prefix_s, 3),
        "fast_us_per_candidate": round(1e6 * sweep_s / vocab, 1),
        "reference_candidates": subset.numel(), "reference_s": round(ref_s, 2),
        "reference_us_per_candidate": round(1e6 * ref_s / subset.numel(), 1),
        "reference_full_sweep_extrapolated_s": round(ref_full_s, 1),
        "speedup": round(ref_full_s / sweep_s, 1),
        "top10_identical": same_tokens, "top10_max_rel_diff": max_rel,
        "sweep_gflops": round(flops / 1e9, 1), "gemm_gflops": round(gemm / 1e9, 1),
        "fraction_of_gemm": round(flops / gemm, 3),
    }
    print(json.dumps(report, indent=1))
    print(f"(1) speedup over the reference sweep: {report['speedup']}x (target >= 40x); "
          f"identical top-10: {'yes' if same_tokens else 'no'} (max rel. diff {max_rel:.1e})")
    print(f"(2) sweep {report['sweep_gflops']} GFLOP/s = 2*P_m*|V|/t vs GEMM {report['gemm_gflops']} "
          f"GFLOP/s: {100 * report['fraction_of_gemm']:.0f}% (target >= 40%)")


if __name__ == "__main__":
    main()
