"""The generation pool of one model × trait: every sampled condition of E1, E2, E3, E5 and E6
(docs/paperB.md).

A :class:`Condition` is one steering offset ``δ`` (the vector actually added at the input of block l, α applied)
with its jobs, ``(prompt index, sample index)`` pairs. The design is **paired**: every condition of an experiment
runs on the same evaluation stems (or environment prompts) and a job's sampling stream belongs to its (prompt,
sample) pair (common random numbers, :mod:`steerlimits.paperb.generation`), so conditions are compared stem by
stem. Seed ``s`` of a perturbation family is generated at sample index ``s``, so ``v + u_s`` is paired with the
``s``-th sample of ``v`` and of α = 0.

* α is the calibrated coefficient (``paperB_calibrate``), and ``samples`` (per stem) comes from its power
  calculation; E2's α values are multiples of it.
* E2 at α = 0 and at 1 × α is E1's ``zero``, ``v`` and family seeds; E5 compares the PCA vector against E1's ``v``
  and ``zero`` (same stems and samples); E6 compares against E1's ``v`` and ``zero``.
* Every perturbation u of family f and seed s is the same draw in E1, E2 and E3
  (``derive_seed(seed, "u", f, s)``), and in the calibration pilot.

Families whose subspace ∩ v⊥ is empty are skipped; their dimension is recorded (:attr:`Pool.family_dims`, rows
needing independent draws read ``na`` below 2) and every reduction is returned in :attr:`Pool.notes`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerlimits.samplers import combine, intersection_projector, sample_perturbations
from steerlimits.seeds import derive_seed
from steerlimits.settings.paperb import PaperBGenerate

__all__ = ["LABELS", "Condition", "Pool", "env_indices", "plan_pool", "stem_split", "subspace_dim", "u_draw"]

logger = logging.getLogger(__name__)

#: Label columns every generation row carries (the pool's "design matrix").
LABELS = (
    "cond",
    "experiment",
    "kind",
    "alpha",
    "alpha_multiple",
    "family",
    "seed",
    "environment",
    "direction",
    "k",
    "draw",
    "prompt_set",
)


@dataclass
class Condition:
    """One steering offset with its jobs.

    ``offset`` is ``(d,)``: the vector added at the input of block l (α already applied; zero for α = 0).
    ``jobs`` are ``(prompt index in prompt_set, sample index)`` pairs, one generation each.
    """

    cond: str
    experiment: str  # e1 | e2 | e3 | e5 | e6a | e6b | cal
    kind: str  # zero | v | neg_v | v+u | u | pca | v+comb
    offset: Tensor
    prompt_set: str  # "stems" or "env:<environment>"
    jobs: list[tuple[int, int]]
    max_new_tokens: int
    alpha: float = 1.0
    alpha_multiple: float = 1.0
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
    family_dims: dict[str, int] = field(default_factory=dict)

    def n_generations(self) -> int:
        return sum(len(c.jobs) for c in self.conditions)


def stem_split(n_stems: int, n_calibration: int) -> tuple[list[int], list[int]]:
    """``(evaluation, calibration)`` stem indices: the last ``n_calibration`` stems calibrate α, the others are
    evaluated (E1, E2, E4, E5, E6). Disjoint by construction (tested)."""
    if not 0 < n_calibration < n_stems - 1:
        raise ValueError(
            f"paperB.calibration.n_stems = {n_calibration} leaves fewer than 2 of {n_stems} stems for evaluation"
        )
    return list(range(n_stems - n_calibration)), list(range(n_stems - n_calibration, n_stems))


def subspace_dim(v: Tensor, basis: Tensor | None) -> int:
    """``dim(span(basis) ∩ v⊥)`` (``d − 1`` for ``basis=None``)."""
    if basis is not None and basis.shape[1] == 0:
        return 0
    return int(round(float(torch.trace(intersection_projector(v, basis)))))


def u_draw(v: Tensor, family: str, s: int, *, seed: int, basis: Tensor | None) -> Tensor:
    """Perturbation ``u`` of ``family`` and seed ``s`` (``(d,)``, ‖u‖ = ‖v‖, u ⟂ v): the same draw wherever it is
    used (E1, E2, E3 and the calibration pilot)."""
    return sample_perturbations(v, family, 1, seed=derive_seed(seed, "u", family, s), basis=basis)[0]  # type: ignore[arg-type]


def env_indices(n_available: int, n: int) -> list[int]:
    """``n`` evenly spaced indices in ``range(n_available)`` (covers every sub-genre of a file-ordered set)."""
    n = min(n, n_available)
    return sorted({int(round(x)) for x in np.linspace(0, n_available - 1, n)})


def _grid(indices: Sequence[int], samples: int) -> list[tuple[int, int]]:
    return [(i, s) for s in range(samples) for i in indices]


def plan_pool(
    s: PaperBGenerate,
    *,
    v: Tensor,
    v_pca: Tensor,
    bases: Mapping[str, Tensor | None],
    alpha: float,
    samples: int,
    eval_stems: Sequence[int],
    environments: Mapping[str, int],
    seed: int,
) -> Pool:
    """All conditions of one model × trait.

    Parameters
    ----------
    s : the settings of the ``paperB_generate`` job.
    v, v_pca : ``(d,)`` mean-difference vector (raw) and PC1 (oriented, norm-matched) at the steering layer.
    bases : ``null_cov``, ``null_jac``, ``active`` -> ``(d, k)`` orthonormal bases (``None``/``k = 0`` if empty).
    alpha, samples : the calibrated coefficient and samples per evaluation stem (``paperB_calibrate``).
    eval_stems : evaluation stem indices (E1 uses the first ``e1.n_stems`` of them, all by default).
    environments : environment -> number of prompts available. seed : the model × trait seed.
    """
    tok, d = s.decoding.max_new_tokens, v.numel()
    zero = torch.zeros(d, dtype=v.dtype)
    e1, e2, e3, e6 = s.e1, s.e2, s.e3, s.e6
    stems = list(eval_stems)[: e1.n_stems] if e1.n_stems else list(eval_stems)
    if len(stems) < 2:
        raise ValueError(f"paperB needs at least 2 evaluation stems, got {len(stems)}")
    a, S = float(alpha), int(samples)
    pool = Pool([])
    conds = pool.conditions

    def basis_of(family: str) -> Tensor | None:
        return None if family == "random_orth" else bases.get(family)

    draws: dict[tuple[str, int], Tensor] = {}

    def u(family: str, k: int) -> Tensor:
        if (family, k) not in draws:
            draws[(family, k)] = u_draw(v, family, k, seed=seed, basis=basis_of(family))
            pool.perturbations[f"u/{family}/s{k}"] = draws[(family, k)][None]
        return draws[(family, k)]

    families = []
    for fam in s.families:
        dim = d - 1 if fam == "random_orth" else (0 if basis_of(fam) is None else subspace_dim(v, basis_of(fam)))
        pool.family_dims[fam] = dim
        if dim == 0:
            pool.notes.append(f"family {fam}: subspace ∩ v⊥ is empty at the steering layer; skipped everywhere")
            continue
        if dim < 2:
            pool.notes.append(
                f"family {fam}: dim(subspace ∩ v⊥) = {dim} < 2: its draws are ±one direction, so rows "
                "that need independent draws read na"
            )
        families.append(fam)

    # ---- E1: zero, v, −v, v + u_s per family (seed s at sample s), u alone per family; E5: the PCA vector
    full = _grid(stems, S)
    conds.append(Condition("e1/zero", "e1", "zero", zero, "stems", full, tok, alpha=0.0, alpha_multiple=0.0))
    conds.append(Condition("e1/v", "e1", "v", a * v, "stems", full, tok, alpha=a))
    conds.append(
        Condition(
            "e1/neg_v", "e1", "neg_v", -a * v, "stems", _grid(stems, e1.samples_neg), tok, alpha=a, family="neg_v"
        )
    )
    for fam in families:
        for k in range(S):
            conds.append(
                Condition(
                    f"e1/v+u/{fam}/s{k}",
                    "e1",
                    "v+u",
                    a * (v + u(fam, k)),
                    "stems",
                    [(p, k) for p in stems],
                    tok,
                    alpha=a,
                    family=fam,
                    seed=k,
                )
            )
        conds.append(
            Condition(
                f"e1/u/{fam}",
                "e1",
                "u",
                a * u(fam, 0),
                "stems",
                _grid(stems, e1.samples_u),
                tok,
                alpha=a,
                family=fam,
                seed=0,
            )
        )
    conds.append(Condition("e5/pca", "e5", "pca", a * v_pca, "stems", full, tok, alpha=a, family="pca"))

    # ---- E2: multiples m of alpha for αv and α(v + u_s); m = 0 and m = 1 come from E1
    fam2 = e2.family
    if fam2 not in families:
        pool.notes.append(f"E2: family {fam2} unavailable; E2 has v only")
    for m in sorted({float(x) for x in e2.alphas}):
        if m in (0.0, 1.0):
            continue
        am = m * a
        conds.append(
            Condition(
                f"e2/v/m{m:g}", "e2", "v", am * v, "stems", _grid(stems, e2.samples), tok, alpha=am, alpha_multiple=m
            )
        )
        for k in range(e2.samples if fam2 in families else 0):
            conds.append(
                Condition(
                    f"e2/v+u/{fam2}/s{k}/m{m:g}",
                    "e2",
                    "v+u",
                    am * (v + u(fam2, k)),
                    "stems",
                    [(p, k) for p in stems],
                    tok,
                    alpha=am,
                    alpha_multiple=m,
                    family=fam2,
                    seed=k,
                )
            )
    if e2.samples > S and fam2 in families:
        pool.notes.append(f"E2 at 1 x alpha reuses E1, which has {S} samples per stem (E2 asks {e2.samples})")

    # ---- E3: environments (zero, v, v + u_s at sample s), longer continuations
    fam3 = e3.family
    for env, n_avail in environments.items():
        idx = env_indices(n_avail, e3.n_prompts)
        ps, t3 = f"env:{env}", int(e3.max_new_tokens)
        conds.append(
            Condition(
                f"e3/{env}/zero",
                "e3",
                "zero",
                zero,
                ps,
                _grid(idx, e3.samples),
                t3,
                alpha=0.0,
                alpha_multiple=0.0,
                environment=env,
            )
        )
        conds.append(
            Condition(f"e3/{env}/v", "e3", "v", a * v, ps, _grid(idx, e3.samples), t3, alpha=a, environment=env)
        )
        for k in range(e3.samples if fam3 in families else 0):
            conds.append(
                Condition(
                    f"e3/{env}/v+u/{fam3}/s{k}",
                    "e3",
                    "v+u",
                    a * (v + u(fam3, k)),
                    ps,
                    [(i, k) for i in idx],
                    t3,
                    alpha=a,
                    family=fam3,
                    seed=k,
                    environment=env,
                )
            )

    # ---- E6: orthonormal directions per family, (a) singly, (b) random unit combinations of the first k
    ks_all = sorted(int(k) for k in e6.ks)
    stems_b = stems[: e6.n_stems_b]
    for fam in e6.families:
        dim = pool.family_dims.get(fam, 0) if fam in families else 0
        in_b = fam in e6.families_b
        want = max(e6.n_directions, ks_all[-1] if in_b else 0)
        n = min(want, dim)
        if n == 0:
            pool.notes.append(f"E6: family {fam} unavailable; skipped")
            continue
        if n < want:
            pool.notes.append(f"E6: family {fam}: dim(subspace ∩ v⊥) = {dim} < {want}; using {n} directions")
        us = sample_perturbations(
            v,
            fam,
            n,
            seed=derive_seed(seed, "e6", fam),
            basis=basis_of(fam),  # type: ignore[arg-type]
            orthonormal=True,
        )
        pool.perturbations[f"e6/{fam}"] = us
        for i in range(min(e6.n_directions, n)):
            jobs = [(stems[(i * e6.samples + j) % len(stems)], 0) for j in range(e6.samples)]
            conds.append(
                Condition(
                    f"e6a/v+u/{fam}/i{i}",
                    "e6a",
                    "v+u",
                    a * (v + us[i]),
                    "stems",
                    jobs,
                    tok,
                    alpha=a,
                    family=fam,
                    direction=i,
                )
            )
            conds.append(
                Condition(
                    f"e6a/u/{fam}/i{i}", "e6a", "u", a * us[i], "stems", jobs, tok, alpha=a, family=fam, direction=i
                )
            )
        if not in_b:
            continue
        for k in ks_all:
            if k > n:
                pool.notes.append(f"E6b: family {fam}: k = {k} > {n} available directions; skipped")
                continue
            for dr in range(e6.n_draws):
                w = combine(us[:k], seed=derive_seed(seed, "e6b", fam, k, dr), target_norm=float(v.norm()))
                conds.append(
                    Condition(
                        f"e6b/{fam}/k{k}/d{dr}",
                        "e6b",
                        "v+comb",
                        a * (v + w),
                        "stems",
                        [(p, dr % S) for p in stems_b],
                        tok,
                        alpha=a,
                        family=fam,
                        k=k,
                        draw=dr,
                    )
                )
    logger.info("paper B pool: %d conditions, %d generations; notes: %s", len(conds), pool.n_generations(), pool.notes)
    return pool
