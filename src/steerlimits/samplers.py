"""Seeded, norm-matched perturbation samplers for paper B (docs/concepts/null-space.md, D7/D8; E1, E4, E6).

``u = ‖v‖ · P g / ‖P g‖`` with ``g ~ N(0, I)`` and ``P`` the orthogonal projector onto ``S ∩ v⊥``:

* ``random_orth``: ``S = ℝᵈ`` (uniform on the sphere of radius ``‖v‖`` in ``v⊥``);
* ``null_cov`` / ``null_jac`` / ``active``: ``S = span(basis)``. For ``x ∈ S``, ``x·v = x·w`` with ``w = P_S v``,
  so ``S ∩ v⊥ = S ∩ w⊥`` and ``P = P_S − ŵŵᵀ`` (``P = P_S`` when ``v ⊥ S``): samples stay *inside* the subspace
  and exactly orthogonal to ``v``;
* ``neg_v``: ``n`` copies of ``−v`` (a control).

``orthonormal=True`` returns mutually orthogonal directions (a Haar-random ``n``-frame of ``S ∩ v⊥``, via QR of
``P G``), each rescaled to ``‖v‖`` (E6). Draws use a CPU ``torch.Generator`` seeded with ``seed`` in float64, so
results are identical across devices; the output has ``v``'s dtype and device.
"""

from __future__ import annotations

import logging
from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = ["Family", "combine", "intersection_projector", "sample_perturbations"]

logger = logging.getLogger(__name__)

Family = Literal["random_orth", "null_cov", "null_jac", "active", "neg_v"]


def intersection_projector(v: Tensor, basis: Tensor | None) -> Tensor:
    """Orthogonal projector ``(d, d)`` float64 onto ``span(basis) ∩ v⊥`` (``basis=None``: onto ``v⊥``)."""
    vv = v.detach().cpu().double()
    d = vv.numel()
    v_hat = vv / vv.norm()
    if basis is None:
        return torch.eye(d, dtype=torch.float64) - torch.outer(v_hat, v_hat)
    b = basis.detach().cpu().double()
    if b.ndim != 2 or b.shape[0] != d:
        raise ValueError(f"basis must be (d={d}, k), got {tuple(b.shape)}")
    q, _ = torch.linalg.qr(b)
    p = q @ q.T
    w = p @ vv
    if float(w.norm()) > 1e-12 * float(vv.norm()):
        w_hat = w / w.norm()
        p = p - torch.outer(w_hat, w_hat)
    return p


def sample_perturbations(
    v: Tensor,
    family: Family,
    n: int,
    *,
    seed: int,
    basis: Tensor | None = None,
    orthonormal: bool = False,
) -> Tensor:
    """``n`` perturbations ``(n, d)`` with ``‖u‖ = ‖v‖`` and ``u·v = 0`` (except ``neg_v``), from a seeded draw.

    Raises
    ------
    ValueError
        Unknown family, a subspace family without ``basis`` (or ``random_orth`` with one), ``v = 0``, or
        ``orthonormal`` with ``n`` larger than ``dim(S ∩ v⊥)``.
    """
    if family not in get_args(Family):
        raise ValueError(f"unknown family {family!r}; expected one of {get_args(Family)}")
    if v.ndim != 1:
        raise ValueError(f"v must be (d,), got {tuple(v.shape)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    norm = float(v.detach().double().norm())
    if norm == 0.0:
        raise ValueError("v has zero norm: norm-matched perturbations are undefined")
    if family == "neg_v":
        return (-v.detach()).expand(n, -1).clone()
    if family == "random_orth" and basis is not None:
        raise ValueError("random_orth samples from all of v⊥; do not pass a basis")
    if family != "random_orth" and basis is None:
        raise ValueError(f"family {family!r} needs the subspace basis (d, k)")
    proj = intersection_projector(v, basis if family != "random_orth" else None)
    dim = int(round(float(torch.trace(proj))))
    if dim == 0:
        raise ValueError(f"family {family!r}: the subspace ∩ v⊥ is empty")
    gen = torch.Generator().manual_seed(int(seed))
    g = torch.randn(v.numel(), n, generator=gen, dtype=torch.float64)
    u = proj @ g  # (d, n), columns in S ∩ v⊥
    if orthonormal:
        if n > dim:
            raise ValueError(f"orthonormal=True needs n <= dim(S ∩ v⊥) = {dim}, got n = {n}")
        u, _ = torch.linalg.qr(u)
        u = proj @ u  # remove rounding leakage outside the subspace
    u = u / u.norm(dim=0, keepdim=True) * norm
    return u.T.to(dtype=v.dtype, device=v.device).contiguous()


def combine(us: Tensor, *, seed: int, target_norm: float) -> Tensor:
    """``Σ_j c_j u_j`` for a seeded random unit coefficient vector ``c`` ``(k,)``, rescaled to ``target_norm``.

    ``us`` is ``(k, d)``; returns ``(d,)`` in ``us``'s dtype and device (E6 b).
    """
    if us.ndim != 2 or us.shape[0] == 0:
        raise ValueError(f"us must be (k >= 1, d), got {tuple(us.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    c = torch.randn(us.shape[0], generator=gen, dtype=torch.float64)
    c = c / c.norm()
    x = c @ us.detach().cpu().double()
    if float(x.norm()) == 0.0:
        raise ValueError("the combination is zero (linearly dependent directions)")
    return (x / x.norm() * target_norm).to(dtype=us.dtype, device=us.device)
