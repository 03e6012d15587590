"""Where v lives (claim B11, descriptive): how much of ‖v‖² falls in each estimated null space and in the
covariance's low-variance tail, and how variance and sensitivity weight v, against norm-matched random
directions.

Recent work reports that difference-of-means directions concentrate in the low-variance tail of the activation
covariance. If v does, "null space of the covariance" (low variance) and "behaviourally inert" (low Jacobian or
Fisher sensitivity) are different things: the table puts the two side by side.

* ``fraction``: ``‖P_S v‖² / ‖v‖²`` for a subspace S (an orthonormal basis); a uniformly random direction has
  expectation ``dim S / d``.
* ``rayleigh_ratio``: ``(vᵀ A v / ‖v‖²) / (tr A / d)`` for A = the covariance (variance along v), the plain
  ``JᵀJ`` or the Fisher matrix (sensitivity along v), from their decompositions; 1 for a random direction on
  average, < 1 means v points where the estimator is small.

Random references: ``n_random`` seeded Gaussian directions (norm is irrelevant for both quantities), their mean
and 2.5 / 97.5 % quantiles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["fraction", "rayleigh_ratio", "where_v_lives"]


def fraction(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``‖Bᵀx‖² / ‖x‖²`` per row of ``x`` ``(n, d)`` (or one ``(d,)``) for an orthonormal ``basis`` ``(d, k)``."""
    x2 = np.atleast_2d(x)
    if basis.shape[1] == 0:
        return np.zeros(x2.shape[0])
    return np.sum((x2 @ basis) ** 2, axis=1) / np.sum(x2**2, axis=1)


def rayleigh_ratio(x: np.ndarray, sv: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``(xᵀAx / ‖x‖²) / (tr A / d)`` per row of ``x`` for ``A = V diag(sv²) Vᵀ`` (singular values ``sv``)."""
    x2 = np.atleast_2d(x)
    lam = np.asarray(sv, np.float64) ** 2
    mean = lam.sum() / lam.size
    if mean <= 0:
        return np.full(x2.shape[0], np.nan)
    proj = (x2 @ vectors) ** 2
    return (proj @ lam) / np.sum(x2**2, axis=1) / mean


def where_v_lives(
    v: Tensor, tensors: Mapping[str, Tensor], *, inject_layer: int, n_random: int, seed: int
) -> list[dict[str, Any]]:
    """B11 rows for one vector ``v`` ``(d,)`` from the bases file of ``paperB_nullspace`` (``tensors``)."""
    vv = v.detach().double().numpy()
    d = vv.size
    rnd = torch.randn(n_random, d, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64).numpy()
    rows: list[dict[str, Any]] = []

    def add(estimator: str, quantity: str, value: float, ref: np.ndarray, expected: float, dim: int | None) -> None:
        lo, hi = np.percentile(ref, [2.5, 97.5]) if ref.size else (np.nan, np.nan)
        rows.append(
            {
                "estimator": estimator,
                "quantity": quantity,
                "value": float(value),
                "expected_random": expected,
                "random_mean": float(ref.mean()) if ref.size else np.nan,
                "random_lo": float(lo),
                "random_hi": float(hi),
                "ratio_to_random": float(value / expected) if expected else np.nan,
                "dim": dim,
                "d": d,
            }
        )

    cov_vecs = tensors["cov_vectors"].double().numpy()
    subspaces = {
        "null_cov (no outliers)": tensors["null_cov"],
        "null_cov (pos0 excluded only)": tensors["null_cov_pos0"],
        "null_jac": tensors["null_jac"],
        "null_fisher": tensors["null_fisher"],
        "active (top-k)": tensors["active"],
        "covariance lower half (low-variance tail)": torch.from_numpy(cov_vecs[:, d - d // 2 :].copy()),
    }
    for name, basis in subspaces.items():
        b = basis.double().numpy()
        add(name, "fraction of ||v||^2", float(fraction(vv, b)[0]), fraction(rnd, b), b.shape[1] / d, int(b.shape[1]))
    spectra = {
        "covariance (no outliers)": ("sv/covariance_no_outliers", "cov_vectors"),
        "jacobian": ("sv/jacobian", "jac_vectors"),
        "jacobian_fisher": ("sv/jacobian_fisher", "fisher_vectors"),
    }
    for name, (sv_key, vec_key) in spectra.items():
        sv = tensors[f"{sv_key}/L{inject_layer}"].double().numpy()
        vecs = tensors[vec_key].double().numpy()
        add(
            name,
            "rayleigh ratio (v'Av/|v|^2 over tr A/d)",
            float(rayleigh_ratio(vv, sv, vecs)[0]),
            rayleigh_ratio(rnd, sv, vecs),
            1.0,
            None,
        )
    return rows
