"""bfloat16 vs float32 on this CPU, in one run: matmuls on a model's own shapes, and the certifier's forward (prefix
cached, stopped after block L/2) on a slice of the vocabulary, extrapolated to one full-vocabulary sweep. bf16 is
the faster of the two only on CPUs with AMX or AVX512-BF16 (docs/howto/cpu-speed.md).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_dtype.py --threads 1 [--model gemma3-270m --candidates 4096]
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _harness import cpu_line, model_bench  # noqa: E402

from steerlimits import hooks  # noqa: E402
from steerlimits.invert import TruncatedLM, bf16_copy  # noqa: E402


def linear_rate(rows: int, k: int, n: int, dtype: torch.dtype, repeats: int = 3) -> float:
    """GFLOP/s of ``F.linear`` for a (rows, k) input and an (n, k) weight, best of ``repeats``."""
    x, w = torch.randn(rows, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    torch.nn.functional.linear(x, w)
    best = min(_timed(lambda: torch.nn.functional.linear(x, w)) for _ in range(repeats))
    return 2 * rows * k * n / best / 1e9


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    args, model, tok = model_bench(
        __doc__.splitlines()[0], "qwen2.5-coder-0.5b", ("--candidates", 2048, "vocabulary slice timed per dtype")
    )
    cfg = model.config
    d, ffn, vocab = cfg.hidden_size, cfg.intermediate_size, model.get_input_embeddings().weight.shape[0]
    print(f"{args.model}, {args.threads} thread(s); {cpu_line()}")
    for label, (k, n) in (("d -> ffn", (d, ffn)), ("ffn -> d", (ffn, d)), ("d -> vocab", (d, vocab))):
        f32, b16 = (linear_rate(64, k, n, dt) for dt in (torch.float32, torch.bfloat16))
        print(f"  F.linear 64 x {label:<10} float32 {f32:6.0f} GFLOP/s, bf16 {b16:6.0f} GFLOP/s ({b16 / f32:.2f}x)")
    _, blocks = hooks.resolve_blocks(model)
    m = len(blocks) // 2 + 1
    p_m = sum(p.numel() for p in blocks[:m].parameters())
    ids = torch.tensor(tok("Write a short note about the weather in the mountains today.")["input_ids"])
    cand = torch.arange(1000, 1000 + args.candidates)
    sweep = {}
    for name, mdl in (("float32", model), ("bfloat16", bf16_copy(model))):
        tl = TruncatedLM(mdl, m)
        with torch.no_grad():
            kv, _ = tl.prefix_of(ids[:-1])
            tl.score(kv, cand[:64])  # warm-up
            dt = _timed(lambda tl=tl, kv=kv: [tl.score(kv, cand[s : s + 1024]) for s in range(0, cand.numel(), 1024)])
        sweep[name] = dt / cand.numel() * vocab
        print(
            f"  certifier forward, {name:<8}: {cand.numel()} candidates in {dt:.1f} s -> one {vocab}-token sweep "
            f"{sweep[name]:.0f} s ({2 * p_m * cand.numel() / dt / 1e9:.0f} GFLOP/s, P_m = {p_m / 1e6:.0f} M)"
        )
    print(f"ratio bf16 / float32 sweep speed = {sweep['float32'] / sweep['bfloat16']:.2f}x")


if __name__ == "__main__":
    main()
