"""bfloat16 vs float32 batched steered generation throughput on SmolLM2 at one thread (printed as a ratio, measured
in one run). Paper B generates its behavioural samples in bfloat16 (``paperB.dtype``); on a CPU with AMX the
bfloat16 matrix multiplications run on the tile units.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_generate_bf16.py [--n 64] [--tokens 16] [--batch 64]
       [--threads 1] [--repeats 2] [--paperb]
``--paperb`` times paper B's own generation path (common random numbers, ``paperb.generation.generate_rows``)
instead of :func:`steerlimits.steer.generate`. Throughput counts useful tokens only (up to each sequence's EOS);
each dtype is warmed up first and the best of ``--repeats`` runs is kept.
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
from steerlimits.steer import GenerationConfig, as_dtype, generate  # noqa: E402


def _amx() -> str:
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return "unknown"
    return "yes" if "amx_bf16" in flags else "no"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--paperb", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model("smollm2-135m")
    layer = model.config.num_hidden_layers // 2
    stems = D.neutral_stems()
    prompts = encode_all(tok, [D.Prompt(stems[i % len(stems)]) for i in range(args.n)], "raw")
    v = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    v = v / v.norm() * 30

    def run(dtype: str) -> tuple[int, float]:
        t = time.perf_counter()
        if args.paperb:
            from steerlimits.paperb.generation import generate_rows

            rows = generate_rows(
                as_dtype(model, dtype),
                tok,
                prompts,
                v.expand(len(prompts), -1),
                list(range(len(prompts))),
                layer=layer,
                positions="last_prompt_and_generated",
                max_new_tokens=args.tokens,
                temperature=0.8,
                batch_size=args.batch,
                progress=False,
            )
            n_tok = sum(n for _, n in rows)
        else:
            cfg = GenerationConfig(
                max_new_tokens=args.tokens, temperature=0.8, batch_size=args.batch, seed=1, dtype=dtype
            )
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
            n_tok = sum(g.n_new_tokens for g in gens)
        return n_tok, time.perf_counter() - t

    rates = {}
    for dtype in ("float32", "bfloat16"):
        cfg = GenerationConfig(max_new_tokens=2, batch_size=4, dtype=dtype)
        generate(
            model,
            tok,
            prompts[:4],
            cfg,
            vector=v,
            alpha=1.0,
            layer=layer,
            positions="last_prompt_and_generated",
            progress=False,
        )  # warm-up (and the bf16 copy)
        best = 0.0
        for _ in range(args.repeats):
            n_tok, dt = run(dtype)
            best = max(best, n_tok / dt)
            print(
                f"{dtype:>9}: batch {args.batch}, {args.n} generations, {n_tok} tokens in {dt:6.2f} s "
                f"= {n_tok / dt:7.1f} tok/s",
                flush=True,
            )
        rates[dtype] = best
    path = "paper B generate_rows (common random numbers)" if args.paperb else "steer.generate"
    print(f"{path}, {args.threads} thread(s), AMX bf16: {_amx()}")
    print(f"ratio bfloat16 / float32 = {rates['bfloat16'] / rates['float32']:.2f}x (target >= 1.7x)")


if __name__ == "__main__":
    main()
