"""bfloat16 vs float32 batched generation throughput at one thread (printed as a ratio, measured in one run). Paper
B generates its behavioural samples in bfloat16 (``paperB.dtype``) and paper A's E3 writes its demonstrations in
bfloat16 (``paperA.e3.demo_dtype``); on a CPU with AMX the bfloat16 matrix multiplications run on the tile units.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_generate_bf16.py [--n 64] [--tokens 16] [--batch 64]
       [--threads 1] [--repeats 2] [--path generate|paperb|greedy] [--model smollm2-135m]
``--path``: ``generate`` (:func:`steerlimits.steer.generate`, steered sampling), ``paperb`` (paper B's own path,
common random numbers, ``paperb.generation.generate_rows``) or ``greedy`` (:func:`steerlimits.steer.greedy` with
the vector's direction ablated: how E3 writes its demonstrations). Throughput counts useful tokens only (up to
each sequence's EOS); each dtype is warmed up first and the best of ``--repeats`` runs is kept.
"""

from __future__ import annotations

import argparse

from _harness import Bench, cpu_line, line, setup, steered, timed

from steerlimits.steer import as_dtype, greedy


def run(b: Bench, path: str, dtype: str, prompts: list[list[int]], tokens: int, batch: int) -> int:
    """Tokens generated along ``path`` in ``dtype``."""
    if path == "paperb":
        from steerlimits.paperb.generation import generate_rows

        rows = generate_rows(
            as_dtype(b.model, dtype),
            b.tok,
            prompts,
            b.vector.expand(len(prompts), -1),
            list(range(len(prompts))),
            layer=b.layer,
            positions="last_prompt_and_generated",
            max_new_tokens=tokens,
            temperature=0.8,
            batch_size=batch,
            progress=False,
        )
        return sum(n for _, n in rows)
    if path == "greedy":
        out = greedy(as_dtype(b.model, dtype), b.tok, prompts, tokens, ablate=b.vector, batch_size=batch)
        return sum(len(o) for o in out)
    return steered(b, prompts, tokens, batch, dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--path", choices=("generate", "paperb", "greedy"), default="generate")
    ap.add_argument("--paperb", action="store_true", help="the same as --path paperb")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    path = "paperb" if args.paperb else args.path
    b = setup(args.n, args.threads, norm=30.0, model=args.model)
    rates = {}
    for dtype in ("float32", "bfloat16"):
        run(b, path, dtype, b.prompts[:4], 2, 4)  # warm-up (and the bf16 copy)
        best = 0.0
        for _ in range(args.repeats):
            n_tok, dt = timed(lambda dtype=dtype: run(b, path, dtype, b.prompts, args.tokens, args.batch))
            best = max(best, n_tok / dt)
            print(line(dtype, args.batch, len(b.prompts), n_tok, dt), flush=True)
        rates[dtype] = best
    print(f"{args.model}, path {path}, {args.threads} thread(s); {cpu_line()}")
    print(f"ratio bfloat16 / float32 = {rates['bfloat16'] / rates['float32']:.2f}x (target >= 1.7x)")


if __name__ == "__main__":
    main()
