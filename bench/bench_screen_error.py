"""How well a bf16 screen resolves the certification sweep at one position, in ONE run: the per-candidate
distance ``‖h^m(prefix; c) − target‖`` over random candidates ``c``, in float32 (the reference), with a bf16 copy of
the model (what :func:`steerlimits.invert.certify` screens with today) and under CPU autocast (bf16 matrix
multiplications, float32 residual stream). Prints each path's time and its largest and 99th-percentile absolute
error against float32, absolute and relative to the screened distance (the certifier's margin is relative), beside
the median distance: a screen whose relative error reaches 1 re-verifies every candidate.

Usage: ``HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_screen_error.py [--model smollm2-135m] [--prefix 4]
[--n 4096] [--threads 1]`` (the prefix is the first ``--prefix`` tokens of a chat-templated prompt; the target is
the natural state of the next token, at the input of the middle block + 1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _harness import cpu_line  # noqa: E402

from steerlimits.invert import PrefixKV, TruncatedLM, bf16_copy  # noqa: E402
from steerlimits.invert.screen import relative_error, sweep_distances  # noqa: E402
from steerlimits.models import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prefix", type=int, default=4)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", default="Name a color of the sky at dusk.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    m = model.config.num_hidden_layers // 2 + 1
    ids = tok.apply_chat_template(
        [{"role": "user", "content": args.prompt}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"][0]
    prefix = ids[: args.prefix]
    tl32 = TruncatedLM(model, m)
    cands = torch.randperm(tl32.vocab_size, generator=torch.Generator().manual_seed(0))[: args.n]

    def sweep(tl: TruncatedLM, autocast: bool = False) -> tuple[torch.Tensor, float]:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        start = time.perf_counter()
        with ctx:
            kv = tl.extend_many(PrefixKV(), prefix)[0]
            dist = sweep_distances(tl, kv, cands, target, 256)
        return dist.float(), time.perf_counter() - start

    with torch.no_grad():
        target = tl32.full(input_ids=ids[None, : args.prefix + 1])[0, args.prefix : args.prefix + 1]
        d32, t32 = sweep(tl32)
        d16, t16 = sweep(TruncatedLM(bf16_copy(model), m))
        dac, tac = sweep(tl32, autocast=True)
    print(
        f"{args.model}, prefix length {args.prefix}, {args.n} candidates, hidden_states[{m}], median distance "
        f"{float(d32.median()):.3g}; {cpu_line()}"
    )
    print(f"  float32          {t32:6.1f} s")
    for label, d, t in (("bf16 copy", d16, t16), ("autocast bf16", dac, tac)):
        err = (d - d32).abs().reshape(-1)
        rel = relative_error(d, d32).reshape(-1)
        print(
            f"  {label:<16} {t:6.1f} s  max error {float(err.max()):.3g}, 99th percentile "
            f"{float(err.quantile(0.99)):.3g}; relative to the screened distance: max {float(rel.max()):.3g}, "
            f"99th percentile {float(rel.quantile(0.99)):.3g}  ({t32 / t:.1f}x faster)"
        )


if __name__ == "__main__":
    main()
