"""One model's paper-A setting: weights, prompt ids, vectors, sites and coefficients (docs/paperA.md).

Sites (D2): vector ``v`` is steered at the input of block ``l`` (``hidden_states[l]``) at **every** position (D4,
``positions="all"``) and states are measured at its output, ``measure_at = m = l + 1`` (``hidden_states[l+1]``).
Prompts are encoded once (:func:`steerlimits.prompting.encode`: the tokenizer's chat template, or a plain text
frame for a base model) and never decoded and re-encoded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from steerlimits import data as D
from steerlimits import hooks
from steerlimits.models import load_prepared
from steerlimits.prompting import encode
from steerlimits.registry import ModelSource
from steerlimits.settings.papera import PaperAContext

__all__ = ["ModelContext", "common_prefix_len", "load_context", "responses_xy"]

logger = logging.getLogger(__name__)


@dataclass
class ModelContext:
    """Everything an experiment needs about one model; ``vectors[b]`` is the raw ``(d,)`` vector of ``b``."""

    key: str
    model: nn.Module
    tok: Any
    spec: ModelSource
    settings: PaperAContext
    vectors: dict[str, Tensor] = field(default_factory=dict)

    @property
    def layer(self) -> dict[str, int]:
        return {v: site.layer for v, site in self.settings.sites.items()}

    @property
    def alpha(self) -> dict[str, float]:
        return {v: site.alpha for v, site in self.settings.sites.items()}

    @property
    def fmt(self) -> dict[str, str]:
        return {v: site.prompt_format for v, site in self.settings.sites.items()}

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def data_dir(self) -> str:
        return self.settings.data_dir

    @property
    def refusal_trained(self) -> bool:
        return self.settings.refusal_trained

    def measure_at(self, vector: str) -> int:
        return self.layer[vector] + 1

    def prompt_ids(self, vector: str, n: int | None = None) -> list[list[int]]:
        """Token ids of the first ``n`` held-out test prompts of ``vector`` (all when ``n`` is None)."""
        prompts = D.test_prompts(vector, self.data_dir)
        return [encode(self.tok, p, self.fmt[vector]) for p in prompts[:n]]  # type: ignore[arg-type]

    def encode(self, vector: str, user: str) -> list[int]:
        return encode(self.tok, D.Prompt(user), self.fmt[vector])  # type: ignore[arg-type]

    @contextmanager
    def steering(self, vector: str, alpha: float | None = None) -> Iterator[None]:
        """``alpha · v`` (default the configured α) added at the input of block ``l`` at every position."""
        a = self.alpha[vector] if alpha is None else alpha
        with hooks.add_vector(
            self.model, self.layer[vector], self.vectors[vector], a, positions="all", layers_path=self.spec.layers_path
        ):
            yield

    @torch.no_grad()
    def states(self, vector: str, ids: Sequence[int], steered: bool = False, alpha: float | None = None) -> Tensor:
        """States ``(T, d)`` at ``hidden_states[l + 1]`` of one uncached pass over ``ids`` (blocks ``0 … l``
        only), steered at every position when ``steered``."""
        from steerlimits.invert import TruncatedLM

        tl = TruncatedLM(self.model, self.measure_at(vector), self.spec.layers_path)
        x = torch.as_tensor([list(ids)], dtype=torch.long)
        if not steered:
            return tl.full(input_ids=x)[0]
        with self.steering(vector, alpha):
            return tl.full(input_ids=x)[0]

    def site_record(self, vector: str) -> dict[str, Any]:
        l = self.layer[vector]
        return {
            "inject_at": f"hidden_states[{l}] (input of block {l})",
            "measure_at": f"hidden_states[{l + 1}] (output of block {l})",
            "positions": "all",
            "layer": l,
            "alpha": self.alpha[vector],
            "prompt_format": self.fmt[vector],
            "vector_norm": float(self.vectors[vector].norm()) if vector in self.vectors else None,
        }


def load_context(
    s: PaperAContext, marker: str | Path, vector_paths: Sequence[str | Path], load: bool = True
) -> ModelContext:
    """Load the model (float32, eval) and row ``l`` of the ``method`` vectors of each vector file named in
    ``s.sites`` (``vector_paths`` may hold more; a file's stem names its vector)."""
    from safetensors.torch import load_file

    mdl, tok = load_prepared(s.model, marker, s.device) if load else (None, None)
    paths = {Path(p).stem: p for p in vector_paths}
    vecs = {}
    for vector, site in s.sites.items():
        table = load_file(str(paths[vector]))[s.method]
        if not 0 <= site.layer < table.shape[0] - 1:
            raise ValueError(
                f"paperA: layer {site.layer} of {s.model.key}/{vector} leaves no block output to "
                f"measure (the model has {table.shape[0]} blocks)"
            )
        vecs[vector] = table[site.layer].float()
    return ModelContext(key=s.model.key, model=mdl, tok=tok, spec=s.model, settings=s, vectors=vecs)


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``seqs`` (the shared template header), capped so that every
    sequence keeps at least one position of its own."""
    if not seqs:
        return 0
    if len(seqs) == 1:
        return min(1, len(seqs[0]))
    n = min(len(s) for s in seqs) - 1
    k = 0
    while k < n and all(s[k] == seqs[0][k] for s in seqs):
        k += 1
    return k


def responses_xy(
    responses: Sequence[Mapping[str, Any]], n_prompts: int, y_tokens: int, experiment: str
) -> Iterator[tuple[int, list[int], list[int]]]:
    """``(prompt index, x ids, first y_tokens steered-response ids)`` for the first ``n_prompts`` responses; an
    empty response is skipped with a warning (nothing to match)."""
    for r in list(responses)[:n_prompts]:
        x, y = list(r["x"]), list(r["y"])[:y_tokens]
        if not y:
            logger.warning("%s prompt %d: empty steered response, skipped", experiment, r["prompt"])
            continue
        yield int(r["prompt"]), x, y
