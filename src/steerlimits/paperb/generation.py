"""Run a generation pool with common random numbers, and score fluency.

**Common random numbers (paired design, docs/paperB.md).** Every job is one (condition, prompt, sample)
row. Its sampling stream belongs to the pair (prompt set, prompt, sample), not to its condition or its batch:
at every step row r draws one uniform ``U`` from its own ``torch.Generator`` seeded with
``derive_seed(seed, "crn", prompt_set, prompt, sample)`` and takes the token where ``U`` falls in the cumulative
distribution (inverse-CDF sampling in token-id order). Two conditions with the same offset therefore give the same
continuation for the same (prompt, sample) whichever batch they land in, and two offsets with nearly equal
next-token distributions pick the same token unless ``U`` falls in the small stretch where their cumulative
distributions differ. Different (prompt, sample) pairs get independent streams. Temperature, top-k and top-p are
applied with transformers' own warpers first, so each token is an exact draw from the same distribution as
``do_sample=True`` (:class:`CRNSampler`, tested against the softmax). One uniform per row and step costs nothing
beside the forward (a Gumbel-max coupling would need |V| draws per row and step: 262,144 for Gemma).

All conditions that share a continuation length go into one call per batch of ``batch_size`` rows (per-row
offsets, rows sorted by prompt length for less padding). Generations may run in bfloat16 (``dtype``): a
converted copy of the model is used and the steering offset is cast to the model's dtype inside the hook.

**Fluency.** :func:`continuation_nll` is the mean per-token negative log-likelihood of each continuation under
the *unsteered* model (teacher forcing, float32): the calibration's perplexity criterion.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlimits.hooks import add_vector, position_ids_from_mask
from steerlimits.paperb.plan import Condition
from steerlimits.prompting import left_pad, pad_id
from steerlimits.seeds import derive_seed
from steerlimits.steer import as_dtype

__all__ = ["CRNSampler", "continuation_nll", "crn_seed", "generate_rows", "run_pool"]

logger = logging.getLogger(__name__)


def crn_seed(seed: int, prompt_set: str, prompt: int, sample: int) -> int:
    """The sampling seed of one (prompt set, prompt, sample) pair: the same in every condition."""
    return derive_seed(seed, "crn", prompt_set, int(prompt), int(sample))


class CRNSampler:
    """A logits processor that turns greedy decoding into seeded sampling, one random stream per row.

    ``scores`` (``(batch, V)``) are warped by temperature, top-k and top-p (transformers' warpers); each row then
    draws ``U ~ U(0, 1)`` from its own generator and the token ``i`` with ``F(i − 1) ≤ U·F(V) < F(i)`` is chosen,
    ``F`` the cumulative warped softmax in token-id order: an exact draw up to float32 rounding of ``F`` (the
    same precision as ``torch.multinomial`` on float32 probabilities). The chosen token's score is set to +inf in
    place, so greedy decoding picks it. Use with ``do_sample=False``. Cost: the same few vocabulary-wide passes
    as transformers' own sampling.
    """

    def __init__(
        self, row_seeds: Sequence[int], *, temperature: float, top_p: float = 1.0, top_k: int | None = None
    ) -> None:
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        if temperature <= 0:
            raise ValueError("CRNSampler needs temperature > 0 (use greedy decoding otherwise)")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in row_seeds]
        self.warpers: list[Any] = [TemperatureLogitsWarper(float(temperature))]
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k=int(top_k)))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=float(top_p)))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows but {len(self.generators)} row generators")
        for w in self.warpers:
            scores = w(input_ids, scores)
        cdf = torch.cumsum(torch.softmax(scores.float(), dim=-1), dim=-1)
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators]).to(cdf.device)
        pick = torch.searchsorted(cdf, (u.float() * cdf[:, -1])[:, None], right=True).clamp_max(cdf.shape[-1] - 1)
        scores.scatter_(1, pick, float("inf"))  # the temperature warper returned a new tensor: safe in place
        return scores


def generate_rows(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    offsets: torch.Tensor,
    row_seeds: Sequence[int],
    *,
    layer: int,
    positions: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> list[tuple[list[int], int]]:
    """Continuation ids and their length per row: row i is prompt ``prompts[i]`` steered by ``offsets[i]``
    ``(n, d)`` at the input of block ``layer`` and sampled with stream ``row_seeds[i]`` (:class:`CRNSampler`).

    Rows are processed in the given order, ``batch_size`` at a time; the result of a row does not depend on the
    batch it lands in (up to float rounding of the batched forward).
    """
    from transformers import LogitsProcessorList

    pid, eos = pad_id(tok), tok.eos_token_id
    out: list[tuple[list[int], int]] = []
    n_batches = -(-len(prompts) // batch_size)
    for start in tqdm(range(0, len(prompts), batch_size), total=n_batches, desc="generate", disable=not progress):
        ids, mask = left_pad(list(prompts[start : start + batch_size]), pid)
        rows = offsets[start : start + batch_size]
        sampler = CRNSampler(row_seeds[start : start + batch_size], temperature=temperature, top_p=top_p, top_k=top_k)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pid,
            eos_token_id=eos,
            temperature=None,
            top_p=None,
            top_k=None,
            repetition_penalty=repetition_penalty,
            logits_processor=LogitsProcessorList([sampler]),
        )
        with add_vector(
            model,
            layer,
            rows,
            1.0,
            positions=positions,  # type: ignore[arg-type]
            prompt_length=ids.shape[1],
        ):
            gen = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        new = gen[:, ids.shape[1] :]
        for row in new:
            toks = row
            if eos is not None and (toks == eos).any():
                toks = toks[: int((toks == eos).nonzero()[0])]
            toks = toks[toks != pid]
            out.append((toks.tolist(), int(toks.numel())))
    return out


def run_pool(
    model: Any,
    tok: Any,
    conditions: Sequence[Condition],
    prompt_ids: Mapping[str, Sequence[Sequence[int]]],
    *,
    layer: int,
    positions: str,
    temperature: float,
    top_p: float,
    batch_size: int,
    seed: int,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    dtype: str = "float32",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate every job of ``conditions``; one row per generation (labels, prompt, continuation, ids).

    Parameters
    ----------
    prompt_ids : prompt set name -> token ids per prompt (unpadded).
    layer : steering at the input of block ``layer``; positions : D4 (paper B: ``last_prompt_and_generated``).
    seed : the pool's seed; job (prompt set, prompt, sample) samples with :func:`crn_seed`.
    top_k, repetition_penalty : None = off (explicit decoding); set from :func:`steer.shipped_decoding` when
        ``paperB.decoding`` is ``faithful``.
    dtype : ``float32`` or ``bfloat16`` (a converted copy of the model generates).
    """
    gen_model = as_dtype(model, dtype)
    rows: list[dict[str, Any]] = []
    for max_new in sorted({c.max_new_tokens for c in conditions}):
        jobs = [(c, p, s) for c in conditions if c.max_new_tokens == max_new for p, s in c.jobs]
        jobs.sort(key=lambda j: len(prompt_ids[j[0].prompt_set][j[1]]))  # stable: deterministic order
        ids = [list(prompt_ids[c.prompt_set][p]) for c, p, _ in jobs]
        offsets = torch.stack([c.offset.float() for c, _, _ in jobs]) if jobs else torch.zeros(0)
        seeds = [crn_seed(seed, c.prompt_set, p, s) for c, p, s in jobs]
        logger.info(
            "generate: %d jobs of %d conditions, %d new tokens, batch %d, %s",
            len(jobs),
            len({c.cond for c, _, _ in jobs}),
            max_new,
            batch_size,
            dtype,
        )
        gens = generate_rows(
            gen_model,
            tok,
            ids,
            offsets,
            seeds,
            layer=layer,
            positions=positions,
            max_new_tokens=max_new,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            batch_size=batch_size,
            progress=progress,
        )
        for (c, p, s), rid, (toks, n_new) in zip(jobs, seeds, gens, strict=True):
            rows.append(
                {
                    **c.labels(),
                    "prompt_index": p,
                    "sample": s,
                    "prompt": tok.decode(prompt_ids[c.prompt_set][p], skip_special_tokens=False),
                    "continuation": tok.decode(toks, skip_special_tokens=True),
                    "continuation_ids": toks,
                    "n_new_tokens": n_new,
                    "max_new_tokens": max_new,
                    "crn_seed": rid,
                    "offset_norm": float(c.offset.norm()),
                }
            )
    return rows


@torch.no_grad()
def continuation_nll(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    batch_size: int = 32,
) -> list[float]:
    """Mean per-token negative log-likelihood (nats) of each continuation given its prompt under ``model``
    (unsteered, teacher forcing; NaN for an empty continuation)."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    pid = pad_id(tok)
    out: list[float] = [float("nan")] * len(prompts)
    order = [i for i in range(len(prompts)) if len(continuations[i]) > 0]
    order.sort(key=lambda i: len(prompts[i]) + len(continuations[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seqs = [list(prompts[i]) + list(continuations[i]) for i in idx]
        ids, mask = left_pad(seqs, pid)
        # left padding puts every continuation at the end: only the last n_max + 1 positions need the unembedding
        # and the log-softmax over the vocabulary (most of the cost on large vocabularies)
        keep = max(len(continuations[i]) for i in idx) + 1
        kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False)
        try:
            logits = model(**kwargs, logits_to_keep=keep).logits.float()
        except TypeError:  # a model class without logits_to_keep: every position
            logits = model(**kwargs).logits.float()
        logits = logits[:, -keep:]
        target = ids[:, -keep + 1 :].to(logits.device)
        tok_lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, target[..., None])[..., 0]
        for row, i in enumerate(idx):
            n_c = len(continuations[i])
            out[i] = float(-tok_lp[row, keep - 1 - n_c :].mean())
    return out
