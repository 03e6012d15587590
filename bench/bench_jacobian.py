"""Paper B's Jacobian grams per prompt with the float64 unembedding converted once (warm cache) against converting it
for every prompt (the cache emptied before each one, as before the cache existed), in one run: the ratio of the
per-prompt times and whether the grams are bit-identical.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_jacobian.py --threads 1 [--model gemma3-270m --n 4]
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _harness import cpu_line, model_bench  # noqa: E402

from steerlimits import nullspace as ns  # noqa: E402
from steerlimits.paperb import nullspace_step as N  # noqa: E402


def main() -> None:
    args, model, tok = model_bench(
        __doc__.splitlines()[0], "gemma3-270m", ("--n", 4, "estimation prompts timed per mode")
    )
    layer = model.config.num_hidden_layers // 2
    prompts = [torch.tensor([tok(t)["input_ids"]]) for t in N.estimation_texts(None)[: args.n]]
    ns.unembedding_gram(model.get_output_embeddings().weight)  # the Gram matrix is cached in both modes

    def grams(cold: bool) -> tuple[list[dict], float]:
        out, t0 = [], time.perf_counter()
        for ids in prompts:
            if cold:
                ns._DOUBLE_CACHE.clear()
            out.append(ns.logprob_jacobian_grams(model, ids, None, layer, fisher_mass=0.9999))
        return out, (time.perf_counter() - t0) / len(prompts)

    grams(False)  # warm-up: first forwards, the float64 copy
    cold, t_cold = grams(True)
    warm, t_warm = grams(False)
    same = all(torch.equal(a[f], b[f]) for a, b in zip(cold, warm, strict=True) for f in ("plain", "fisher"))
    print(f"{args.model}, {args.n} prompts, layer {layer}, {args.threads} thread(s); {cpu_line()}")
    print(f"  converted per prompt {t_cold:6.2f} s/prompt\n  converted once       {t_warm:6.2f} s/prompt")
    print(f"ratio = {t_cold / t_warm:.2f}x; grams bit-identical: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
