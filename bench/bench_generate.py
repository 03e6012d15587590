"""Batched vs one-at-a-time steered generation throughput on SmolLM2 (printed as a ratio, measured in one run).

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_generate.py [--n 32] [--tokens 24] [--batch 32] [--threads 2]
Throughput counts useful tokens only (up to each sequence's EOS), so padding in a batch is not credited.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from steerlimits import data as D  # noqa: E402
from steerlimits.models import load_model  # noqa: E402
from steerlimits.prompting import encode_all  # noqa: E402
from steerlimits.steer import GenerationConfig, generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model("smollm2-135m")
    layer = model.config.num_hidden_layers // 2
    prompts = encode_all(tok, D.test_prompts("sentiment")[: args.n], "raw")
    v = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    v = v / v.norm() * 10
    generate(model, tok, prompts[:2], GenerationConfig(max_new_tokens=2, batch_size=2), progress=False)  # warm-up
    rates = {}
    for label, bs in (("batched", args.batch), ("one-at-a-time", 1)):
        cfg = GenerationConfig(max_new_tokens=args.tokens, temperature=0.8, batch_size=bs, seed=1)
        t = time.perf_counter()
        gens = generate(
            model,
            tok,
            prompts,
            cfg,
            vector=v,
            alpha=1.0,
            layer=layer,
            positions="last_prompt_and_generated",
            progress=False,
        )
        dt = time.perf_counter() - t
        n_tok = sum(g.n_new_tokens for g in gens)
        rates[label] = n_tok / dt
        print(
            f"{label:>14}: batch {bs:>3}, {len(gens)} generations, {n_tok} tokens in {dt:6.2f} s "
            f"= {rates[label]:7.1f} tok/s"
        )
    print(f"ratio batched / one-at-a-time = {rates['batched'] / rates['one-at-a-time']:.2f}x (target >= 5x)")


if __name__ == "__main__":
    main()
