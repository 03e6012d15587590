"""Batched vs one-at-a-time steered generation throughput on SmolLM2 (printed as a ratio, measured in one run).

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_generate.py [--n 32] [--tokens 24] [--batch 32] [--threads 2]
Throughput counts useful tokens only (up to each sequence's EOS), so padding in a batch is not credited.
"""

from __future__ import annotations

import argparse

from _harness import cpu_line, line, setup, steered, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    b = setup(args.n, args.threads, norm=10.0, stems="sentiment")
    steered(b, b.prompts[:2], 2, 2)  # warm-up
    rates = {}
    for label, bs in (("batched", args.batch), ("one-at-a-time", 1)):
        n_tok, dt = timed(lambda bs=bs: steered(b, b.prompts, args.tokens, bs))
        rates[label] = n_tok / dt
        print(line(label, bs, len(b.prompts), n_tok, dt))
    print(cpu_line())
    print(f"ratio batched / one-at-a-time = {rates['batched'] / rates['one-at-a-time']:.2f}x (target >= 5x)")


if __name__ == "__main__":
    main()
