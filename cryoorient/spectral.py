"""Spectral orientations: rotations from the Gram matrix of their distances, in closed form.

For rotations ``R_i``, ``tr(R_iᵀ R_j) = 1 + 2 cos d_ij``, so ``M = 1 + 2 cos D`` is the Gram
matrix of the 9-vectors ``vec R_i``: rank 9 for exact distances. Its top-9 eigenvectors, scaled by
the square roots of the eigenvalues, give ``Y = [vec R] Oᵀ`` for an unknown ``O ∈ O(9)``, found by
alternating projections (rotations nearest to the rows of ``Y Oᵀ``, then the orthogonal
Procrustes ``O``) from many random starts on a subsample of rows, keeping the smallest residual.
Exact for exact distances (up to the global O(4) ambiguity of the distances); with noisy ones a
start in the basin of the global minimum of :mod:`cryoorient.recovery`'s loss, which checks the
inputs and calls these.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cryoorient._linalg import project_so3
from cryoorient.geometry import matrix_to_quaternion

__all__ = ["rotations_from_embedding", "spectral_quaternions"]


def _top_eigenvectors(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, k: int, generator, like):
    """Top-``k`` eigenpairs of a symmetric ``n × n`` operator by randomised subspace iteration."""
    block = min(n, k + 8)
    z = torch.randn(n, block, generator=generator, dtype=torch.float64).to(like)
    z = torch.linalg.qr(z).Q
    for _ in range(12):  # the rank-9 signal is well separated: a few iterations suffice
        z = torch.linalg.qr(matvec(z)).Q
    small = z.T @ matvec(z)  # Rayleigh-Ritz
    values, vectors = torch.linalg.eigh((small + small.T) / 2)
    order = values.argsort(descending=True)[:k]
    return values[order], z @ vectors[:, order]


def _search_o9(y: torch.Tensor, n_starts: int, generator, max_iter: int = 100) -> tuple[torch.Tensor, float]:
    """``O ∈ O(9)`` making the rows of ``y Oᵀ`` (reshaped 3×3) closest to rotations; best of many starts.

    Alternating projections from ``n_starts`` random orthogonal matrices, run together; after a
    fifth of the iterations only the best quarter of the starts continues (successive halving).
    """
    o = torch.linalg.qr(torch.randn(n_starts, 9, 9, generator=generator, dtype=torch.float64).to(y)).Q
    scale = float((y**2).sum())
    previous = None
    for iteration in range(max_iter):
        a = torch.einsum("nk,sjk->snj", y, o).reshape(len(o), -1, 3, 3)  # (S, n, 3, 3)
        flip = torch.where(torch.linalg.det(a).mean(1) < 0, -1.0, 1.0).to(y)  # vec R and -vec R
        o, a = o * flip[:, None, None], a * flip[:, None, None, None]
        r = project_so3(a)
        residual = ((a - r) ** 2).sum((1, 2, 3)) / scale  # (S,)
        if iteration == max_iter // 5 and len(o) > 4:
            keep = residual.argsort()[: max(4, len(o) // 4)]
            o, r, residual, previous = o[keep], r[keep], residual[keep], None
        u, _, vh = torch.linalg.svd(torch.einsum("snk,nj->skj", r.reshape(len(o), -1, 9), y))
        o = u @ vh
        if previous is not None and float((previous - residual).abs().max()) < 1e-13:
            break
        previous = residual
    best = int(residual.argmin())
    return o[best], float(residual[best])


def rotations_from_embedding(y: torch.Tensor, n_starts: int, generator, subsample: int = 128):
    """Unit quaternions from a 9-D embedding ``y ≈ [vec R] Oᵀ`` with unknown ``O``.

    ``O`` is searched on ``subsample`` rows, polished on up to 4,096 rows (``O`` has 36 degrees of
    freedom), then every row is projected once: the cost beyond the search is ``O(P)``.
    """
    n = y.shape[0]
    order = torch.randperm(n, generator=generator).to(y.device)
    o, _ = _search_o9(y[order[:subsample]], n_starts, generator)
    rows = y[order[:4096]]
    for _ in range(50):  # alternating projections from the best start: monotone
        r = project_so3((rows @ o.T).reshape(-1, 3, 3))
        u, _, vh = torch.linalg.svd(r.reshape(-1, 9).T @ rows)
        new = u @ vh
        change = float((new - o).abs().max())
        o = new
        if change < 1e-13:
            break
    a = (y @ o.T).reshape(n, 3, 3)
    if float(torch.linalg.det(a).mean()) < 0:
        a = -a
    return matrix_to_quaternion(project_so3(a))


def spectral_quaternions(d: torch.Tensor, n_starts: int, generator: torch.Generator) -> torch.Tensor:
    """(P, 4) unit quaternions from a checked (P, P) float64 distance matrix ``d`` (radians).

    ``n_starts`` random starts of the ``O(9)`` search, drawn from the CPU ``generator``.
    """
    m = 1.0 + 2.0 * torch.cos(d)
    values, vectors = _top_eigenvectors(lambda z: m @ z, m.shape[0], 9, generator, m)
    y = vectors * values.clamp(min=0).sqrt()
    if y.shape[1] < 9:  # P < 9: the embedding has rank P at most, its missing axes are zero
        y = torch.nn.functional.pad(y, (0, 9 - y.shape[1]))
    return rotations_from_embedding(y, n_starts, generator)
