"""The generation pool of one model × trait: every sampled condition of E1, E2, E3, E5 and E6 (spec B §4, §9).

A :class:`Condition` is one steering offset ``δ`` (the vector actually added at the input of block l, α applied)
with its prompts and sample indices. Conditions that several experiments share are planned once and selected
by their labels later (:mod:`steerlimits.paperb.tables`):

* E2 at α = 0 is E1's ``zero``; at α = ``alpha`` it is E1's ``v`` and E1's ``random_orth`` seeds ``< e2.n_seeds``
  (the same u draws), so only the other α values are generated for E2.
* E6 compares against E1's ``v`` and ``zero`` (same stems).
* Every perturbation u of family f and seed s is the same draw in E1, E2 and E3
  (``derive_seed(seed, "u", f, s)``).

Families whose subspace ∩ v⊥ is empty (or too small for E6's orthonormal sets) are skipped or reduced, and
each such reduction is returned in :attr:`Pool.notes` (recorded in the outputs' sidecars).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerlimits.seeds import derive_seed
from steerlimits.settings.paperb import PaperBGenerate
from steerlimits.samplers import combine, intersection_projector, sample_perturbations

__all__ = ["LABELS", "Condition", "Pool", "env_indices", "plan_pool", "subspace_dim"]

logger = logging.getLogger(__name__)

#: Label columns every generation row carries (the pool's "design matrix").
LABELS = ("cond", "experiment", "kind", "alpha", "family", "seed", "environment", "direction", "k", "draw",
          "prompt_set")


@dataclass
class Condition:
    """One steering offset with its prompts.

    ``offset`` is ``(d,)``: the vector added at the input of block l (α already applied; zero for α = 0).
    ``jobs`` are ``(prompt index in prompt_set, sample index)`` pairs, one generation each.
    """

    cond: str
    experiment: str  # e1 | e2 | e3 | e5 | e6a | e6b
    kind: str  # zero | v | neg_v | v+u | u | pca | v+comb
    offset: Tensor
    prompt_set: str  # "stems" or "env:<environment>"
    jobs: list[tuple[int, int]]
    max_new_tokens: int
    alpha: float = 1.0
    family: str = ""
    seed: int = -1
    environment: str = ""
    direction: int = -1
    k: int = 0
    draw: int = -1

    def labels(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in LABELS}


@dataclass
class Pool:
    conditions: list[Condition]
    perturbations: dict[str, Tensor] = field(default_factory=dict)  # name -> (n, d) draws, for the record
    notes: list[str] = field(default_factory=list)

    def n_generations(self) -> int:
        return sum(len(c.jobs) for c in self.conditions)


def subspace_dim(v: Tensor, basis: Tensor | None) -> int:
    """``dim(span(basis) ∩ v⊥)`` (``d − 1`` for ``basis=None``)."""
    if basis is not None and basis.shape[1] == 0:
        return 0
    return int(round(float(torch.trace(intersection_projector(v, basis)))))


def env_indices(n_available: int, n: int) -> list[int]:
    """``n`` evenly spaced indices in ``range(n_available)`` (covers every sub-genre of a file-ordered set)."""
    n = min(n, n_available)
    return sorted({int(round(x)) for x in np.linspace(0, n_available - 1, n)})


def _grid(indices: list[int], samples: int) -> list[tuple[int, int]]:
    return [(i, s) for s in range(samples) for i in indices]


def plan_pool(s: PaperBGenerate, *, v: Tensor, v_pca: Tensor, bases: Mapping[str, Tensor | None],
              n_stems: int, environments: Mapping[str, int], seed: int) -> Pool:
    """All conditions of one model × trait.

    Parameters
    ----------
    s : the settings of the ``paperB_generate`` job.
    v, v_pca : ``(d,)`` mean-difference vector (raw) and PC1 (oriented, norm-matched) at the steering layer.
    bases : ``null_cov``, ``null_jac``, ``active`` -> ``(d, k)`` orthonormal bases (``None``/``k = 0`` if empty).
    n_stems : neutral stems available; environments : environment -> number of prompts available.
    seed : the model × trait seed every draw is derived from.
    """
    a, tok, d = s.alpha, s.max_new_tokens, v.numel()
    zero = torch.zeros(d, dtype=v.dtype)
    e1, e2, e3, e5, e6 = s.e1, s.e2, s.e3, s.e5, s.e6
    if e1.n_stems > n_stems or e5.n_prompts > n_stems:
        raise ValueError(f"paperB needs {max(e1.n_stems, e5.n_prompts)} neutral stems, {n_stems} available")
    pool = Pool([])
    conds = pool.conditions
    stems = list(range(e1.n_stems))

    def basis_of(family: str) -> Tensor | None:
        return None if family == "random_orth" else bases.get(family)

    def usable(family: str, need: int = 1) -> int:
        if family != "random_orth" and basis_of(family) is None:
            return 0
        return subspace_dim(v, basis_of(family))

    draws: dict[tuple[str, int], Tensor] = {}

    def u_draw(family: str, s: int) -> Tensor:
        if (family, s) not in draws:
            draws[(family, s)] = sample_perturbations(v, family, 1, seed=derive_seed(seed, "u", family, s),  # type: ignore[arg-type]
                                                      basis=basis_of(family))[0]
            pool.perturbations[f"u/{family}/s{s}"] = draws[(family, s)][None]
        return draws[(family, s)]

    families = []
    for fam in s.families:
        dim = usable(fam)
        if dim == 0:
            pool.notes.append(f"family {fam}: subspace ∩ v⊥ is empty at the steering layer; skipped everywhere")
        else:
            families.append(fam)

    # ---- E1: zero, v, −v, v + u per family × seed, u alone per family
    conds.append(Condition("e1/zero", "e1", "zero", zero, "stems", _grid(stems, e1.samples_v), tok, alpha=0.0))
    conds.append(Condition("e1/v", "e1", "v", a * v, "stems", _grid(stems, e1.samples_v), tok, alpha=a))
    conds.append(Condition("e1/neg_v", "e1", "neg_v", -a * v, "stems", _grid(stems, e1.samples_neg), tok,
                           alpha=a, family="neg_v"))
    for fam in families:
        for s in range(e1.n_seeds):
            conds.append(Condition(f"e1/v+u/{fam}/s{s}", "e1", "v+u", a * (v + u_draw(fam, s)), "stems",
                                   _grid(stems, e1.samples_per_seed), tok, alpha=a, family=fam, seed=s))
        conds.append(Condition(f"e1/u/{fam}", "e1", "u", a * u_draw(fam, 0), "stems", _grid(stems, e1.samples_u),
                               tok, alpha=a, family=fam, seed=0))

    # ---- E2: α sweep of v and v + u (random_orth by default); α = 0 and α = alpha come from E1
    fam2 = e2.family
    reuse = fam2 in families and e2.n_seeds <= e1.n_seeds and e2.samples_per_seed == e1.samples_per_seed
    if fam2 not in families:
        pool.notes.append(f"E2: family {fam2} unavailable; E2 has v only")
    for alpha in e2.alphas:
        alpha = float(alpha)
        if alpha == 0.0 or (alpha == a and reuse):
            continue
        conds.append(Condition(f"e2/v/a{alpha:g}", "e2", "v", alpha * v, "stems", _grid(stems, e2.samples_v), tok,
                               alpha=alpha))
        for s in range(e2.n_seeds if fam2 in families else 0):
            conds.append(Condition(f"e2/v+u/{fam2}/s{s}/a{alpha:g}", "e2", "v+u", alpha * (v + u_draw(fam2, s)),
                                   "stems", _grid(stems, e2.samples_per_seed), tok, alpha=alpha, family=fam2,
                                   seed=s))

    # ---- E3: environments (zero, v, v + u per seed), longer continuations
    fam3 = e3.family
    for env, n_avail in environments.items():
        idx = env_indices(n_avail, e3.n_prompts)
        grid = _grid(idx, e3.samples)
        ps, t3 = f"env:{env}", int(e3.max_new_tokens)
        conds.append(Condition(f"e3/{env}/zero", "e3", "zero", zero, ps, grid, t3, alpha=0.0, environment=env))
        conds.append(Condition(f"e3/{env}/v", "e3", "v", a * v, ps, grid, t3, alpha=a, environment=env))
        for s in range(e3.n_seeds if fam3 in families else 0):
            conds.append(Condition(f"e3/{env}/v+u/{fam3}/s{s}", "e3", "v+u", a * (v + u_draw(fam3, s)), ps, grid, t3,
                                   alpha=a, family=fam3, seed=s, environment=env))

    # ---- E5: mean difference vs PCA (norm-matched, oriented), α = 0 included
    grid5 = _grid(list(range(e5.n_prompts)), e5.samples)
    conds.append(Condition("e5/zero", "e5", "zero", zero, "stems", grid5, tok, alpha=0.0))
    conds.append(Condition("e5/v", "e5", "v", a * v, "stems", grid5, tok, alpha=a))
    conds.append(Condition("e5/pca", "e5", "pca", a * v_pca, "stems", grid5, tok, alpha=a, family="pca"))

    # ---- E6: orthonormal directions per family, (a) singly, (b) random unit combinations of the first k
    ks_all = sorted(int(k) for k in e6.ks)
    for fam in e6.families:
        dim = usable(fam) if fam in families else 0
        in_b = fam in e6.families_b
        want = max(e6.n_directions, ks_all[-1] if in_b else 0)
        n = min(want, dim)
        if n == 0:
            pool.notes.append(f"E6: family {fam} unavailable; skipped")
            continue
        if n < want:
            pool.notes.append(f"E6: family {fam}: dim(subspace ∩ v⊥) = {dim} < {want}; using {n} directions")
        us = sample_perturbations(v, fam, n, seed=derive_seed(seed, "e6", fam), basis=basis_of(fam),  # type: ignore[arg-type]
                                  orthonormal=True)
        pool.perturbations[f"e6/{fam}"] = us
        for i in range(min(e6.n_directions, n)):
            jobs = [((i * e6.samples + j) % len(stems), j) for j in range(e6.samples)]
            conds.append(Condition(f"e6a/v+u/{fam}/i{i}", "e6a", "v+u", a * (v + us[i]), "stems", jobs, tok, alpha=a,
                                   family=fam, direction=i))
            conds.append(Condition(f"e6a/u/{fam}/i{i}", "e6a", "u", a * us[i], "stems", jobs, tok, alpha=a,
                                   family=fam, direction=i))
        if not in_b:
            continue
        for k in ks_all:
            if k > n:
                pool.notes.append(f"E6b: family {fam}: k = {k} > {n} available directions; skipped")
                continue
            for dr in range(e6.n_draws):
                w = combine(us[:k], seed=derive_seed(seed, "e6b", fam, k, dr), target_norm=float(v.norm()))
                conds.append(Condition(f"e6b/{fam}/k{k}/d{dr}", "e6b", "v+comb", a * (v + w), "stems",
                                       _grid(stems, e6.samples_per_draw), tok, alpha=a, family=fam, k=k, draw=dr))
    logger.info("paper B pool: %d conditions, %d generations; notes: %s", len(conds), pool.n_generations(),
                pool.notes)
    return pool
