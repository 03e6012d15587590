"""Batched steered generation: left padding, explicit positions, greedy or seeded sampling.

The prompt ids come from :mod:`steerlimits.prompting` (chat template applied once, where used). Each batch is
left-padded (``generate`` derives position ids from the attention mask), steered by
:func:`steerlimits.hooks.add_vector` at the input of block ``layer``, and its continuation is decoded separately
from the prompt. Sampling is seeded per batch: ``seed`` of a record is the seed its batch was drawn with, so a run
is reproducible for a given batch size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlimits.hooks import Positions, add_vector, directional_ablation
from steerlimits.prompting import left_pad, pad_id

__all__ = ["Generation", "GenerationConfig", "as_dtype", "eos_ids", "generate", "greedy", "shipped_decoding"]


@dataclass(frozen=True)
class GenerationConfig:
    """Explicit decoding: ``top_k`` and ``repetition_penalty`` None mean off (never a library default)."""

    max_new_tokens: int = 24
    temperature: float = 0.8  # 0 = greedy
    top_p: float = 1.0
    batch_size: int = 32
    seed: int = 0
    top_k: int | None = None
    repetition_penalty: float | None = None
    dtype: str = "float32"  # "bfloat16": sample from a bfloat16 copy of the model (as_dtype); D3


_DTYPE_COPIES: dict[tuple[int, str], tuple[Any, Any]] = {}


def as_dtype(model: Any, dtype: str) -> Any:
    """``model`` itself if it already has ``dtype`` (``float32`` / ``bfloat16``), else a converted copy in eval
    mode, made once per model and kept while the model lives (the original is never modified). Steering
    vectors are cast to the copy's dtype inside :func:`steerlimits.hooks.add_vector`."""
    import copy
    import weakref

    target = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype)
    if target is None:
        raise ValueError(f"unknown generation dtype {dtype!r}; expected 'float32' or 'bfloat16'")
    if next(model.parameters()).dtype == target:
        return model
    key = (id(model), dtype)
    hit = _DTYPE_COPIES.get(key)
    if hit is not None and hit[0]() is model:
        return hit[1]
    converted = copy.deepcopy(model).to(target).eval()
    _DTYPE_COPIES[key] = (weakref.ref(model), converted)
    return converted


def shipped_decoding(model: Any) -> dict[str, Any]:
    """The sampling settings ``model.generate()`` applies when the caller leaves them unset (what the papers' code
    got): the checkpoint's ``generation_config`` where it sets top-p, top-k and repetition penalty, otherwise
    transformers' global defaults (top-k 50, top-p 1, repetition penalty 1). ``source`` says which, per key."""
    from transformers import GenerationConfig as HFGenerationConfig

    shipped = getattr(model, "generation_config", None)
    defaults = HFGenerationConfig._get_default_generation_params()
    out: dict[str, Any] = {"source": {}}
    for key in ("top_p", "top_k", "repetition_penalty"):
        value = getattr(shipped, key, None) if shipped is not None else None
        out[key] = value if value is not None else defaults[key]
        out["source"][key] = "checkpoint generation_config" if value is not None else "transformers global default"
    return out


@dataclass(frozen=True)
class Generation:
    prompt_index: int
    sample: int
    prompt: str
    continuation: str
    alpha: float
    seed: int
    n_new_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batches(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    for b, start in enumerate(range(0, len(items), size)):
        yield b, items[start : start + size]


@torch.no_grad()
def generate(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    cfg: GenerationConfig,
    *,
    vector: torch.Tensor | None = None,
    alpha: float = 0.0,
    layer: int | None = None,
    positions: Positions = "all",
    n_samples: int = 1,
    limit: int | None = None,
    progress: bool = True,
) -> list[Generation]:
    """Generate ``n_samples`` continuations per prompt, steered by ``alpha * vector`` at block ``layer``'s input.

    Parameters
    ----------
    prompts : token ids per prompt (unpadded).
    vector : Float[Tensor, "d_model"], Float[Tensor, "n_prompts d_model"] (one vector per prompt, so that
        different conditions share batches), or None (no steering).
    positions : ``all`` or ``last_prompt_and_generated`` (decision D4).
    limit : keep only the first ``limit`` (prompt, sample) jobs, in sample-major order.
    """
    if vector is not None and layer is None:
        raise ValueError("a steering vector needs a layer")
    if vector is not None and vector.ndim == 2 and vector.shape[0] != len(prompts):
        raise ValueError(f"{vector.shape[0]} per-prompt vectors for {len(prompts)} prompts")
    jobs = [(i, s) for s in range(n_samples) for i in range(len(prompts))][:limit]
    model = as_dtype(model, cfg.dtype)
    if cfg.temperature <= 0:  # greedy decoding has one path in this project: greedy()
        firsts = sorted({i for i, _ in jobs})
        conts = dict(
            zip(
                firsts,
                greedy(
                    model,
                    tok,
                    [prompts[i] for i in firsts],
                    cfg.max_new_tokens,
                    batch_size=cfg.batch_size,
                    vector=None if vector is None else (vector if vector.ndim == 1 else vector[torch.tensor(firsts)]),
                    alpha=alpha,
                    layer=layer,
                    positions=positions,
                ),
            )
        )
        return [
            Generation(
                prompt_index=i,
                sample=s,
                prompt=tok.decode(prompts[i], skip_special_tokens=False),
                continuation=tok.decode(conts[i], skip_special_tokens=True),
                alpha=float(alpha),
                seed=cfg.seed * 1_000_003,
                n_new_tokens=len(conts[i]),
            )
            for i, s in jobs
        ]
    pid, out = pad_id(tok), []
    eos = tok.eos_token_id
    n_batches = -(-len(jobs) // cfg.batch_size)
    for b, batch in tqdm(
        _batches(jobs, cfg.batch_size), total=n_batches, desc=f"generate a={alpha:g}", disable=not progress
    ):
        ids, mask = left_pad([prompts[i] for i, _ in batch], pid)
        seed = cfg.seed * 1_000_003 + b
        torch.manual_seed(seed)
        sampling = cfg.temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=cfg.max_new_tokens,
            do_sample=sampling,
            pad_token_id=pid,
            eos_token_id=eos,
            top_k=cfg.top_k,
            repetition_penalty=cfg.repetition_penalty,
        )
        if sampling:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(temperature=None, top_p=None)
        if vector is not None and alpha != 0.0:
            assert layer is not None
            rows = vector if vector.ndim == 1 else vector[torch.tensor([i for i, _ in batch])]
            with add_vector(model, layer, rows, alpha, positions=positions, prompt_length=ids.shape[1]):
                gen = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        else:
            gen = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        new = gen[:, ids.shape[1] :]
        for row, (i, s) in enumerate(batch):
            toks = new[row]
            if eos is not None and (toks == eos).any():
                toks = toks[: int((toks == eos).nonzero()[0])]
            toks = toks[toks != pid]
            out.append(
                Generation(
                    prompt_index=i,
                    sample=s,
                    prompt=tok.decode(prompts[i], skip_special_tokens=False),
                    continuation=tok.decode(toks, skip_special_tokens=True),
                    alpha=float(alpha),
                    seed=seed,
                    n_new_tokens=int(toks.numel()),
                )
            )
    return out


def eos_ids(model: Any, tok: Any) -> list[int]:
    """Every end-of-sequence id: the checkpoint's ``generation_config.eos_token_id`` (one or several, e.g. Qwen's
    ``<|im_end|>`` and ``<|endoftext|>``) and the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
    if tok is not None and tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    return sorted({int(i) for i in ids if i is not None})


def _until_eos(new: torch.Tensor, eos: set[int]) -> list[int]:
    out = []
    for t in new.tolist():
        if t in eos:
            break
        out.append(int(t))
    return out


@torch.no_grad()
def greedy(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    vector: torch.Tensor | None = None,
    alpha: float = 0.0,
    layer: int | None = None,
    positions: Positions = "all",
    layers_path: str | None = None,
    ablate: torch.Tensor | None = None,
    batch_size: int = 16,
    min_new_tokens: int = 0,
    past_key_values: Any = None,
    inputs_embeds: torch.Tensor | None = None,
) -> list[list[int]]:
    """Greedy continuation ids of each prompt (EOS and after removed): the project's one greedy path.

    Left-padded batches (``generate`` derives position ids from the mask); steered by ``alpha · vector``
    (``(d,)`` or one row per prompt) at the input of block ``layer`` at ``positions``, and/or with the direction
    ``ablate`` removed everywhere (:func:`steerlimits.hooks.directional_ablation`). ``min_new_tokens`` suppresses
    EOS until that many tokens exist (fixed-length completions). ``past_key_values`` (a cache of a prefix of the
    single prompt) or ``inputs_embeds`` (``(T, d)``, a soft prompt; ``prompts`` ignored) need one prompt.
    """
    from contextlib import ExitStack

    if vector is not None and layer is None:
        raise ValueError("a steering vector needs a layer")
    eos = eos_ids(model, tok)
    pid = pad_id(tok)
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        repetition_penalty=None,
        pad_token_id=pid,
        eos_token_id=eos,
    )
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    if inputs_embeds is not None:
        batches: list[tuple[list[int], torch.Tensor | None]] = [([0], None)]
    else:
        batches = [
            (list(range(lo, min(lo + batch_size, len(prompts)))), None) for lo in range(0, len(prompts), batch_size)
        ]
    if (past_key_values is not None or inputs_embeds is not None) and len(batches[0][0]) != 1:
        raise ValueError("past_key_values / inputs_embeds need a single prompt")
    out: list[list[int]] = []
    for rows, _ in batches:
        with ExitStack() as stack:
            if inputs_embeds is not None:
                call = dict(
                    inputs_embeds=inputs_embeds[None],
                    attention_mask=torch.ones(1, inputs_embeds.shape[0], dtype=torch.long, device=inputs_embeds.device),
                )
                width = 0  # generate returns only the new tokens for embeddings input
            else:
                ids, mask = left_pad([prompts[i] for i in rows], pid)
                call = dict(input_ids=ids, attention_mask=mask, past_key_values=past_key_values)
                width = ids.shape[1]
            if vector is not None and alpha != 0.0:
                assert layer is not None
                vec = vector if vector.ndim == 1 else vector[torch.tensor(rows)]
                stack.enter_context(
                    add_vector(
                        model,
                        layer,
                        vec,
                        alpha,
                        positions=positions,
                        prompt_length=width or None,
                        layers_path=layers_path,
                    )
                )
            if ablate is not None:
                stack.enter_context(directional_ablation(model, ablate, layers_path))
            gen = model.generate(**call, **kwargs)
        out += [_until_eos(row[width:], set(eos)) for row in gen]
    return out
