"""Orientation distributions used in the paper and its appendix.

Five schemes, all seeded:

``"uniform"``
    Uniform (Haar) on SO(3): every orientation equally likely. Drawn as a normalised 4-D
    Gaussian, which is uniform on the unit 3-sphere of quaternions.
``"euler"``
    Uniform on the Euler angles ``rot, psi ∈ [0, 2π)``, ``tilt ∈ [0, π]`` (the authors'
    ``uniform_angles``). *Not* uniform on SO(3): directions crowd at the poles.
``"half"``
    Haar restricted to half the sphere of projection directions, ``tilt ∈ [0, π/2]``.
``"quarter"``
    Haar restricted to a quarter of the sphere, ``tilt ∈ [0, π/2]`` and ``rot ∈ [0, π)``.
``"paper_half"``
    The paper's half coverage, as its perturbation and noise studies drew it: the three Euler
    angles uniform, ``rot, psi ∈ [0, 2π)``, ``tilt ∈ [0, π/2]`` (:func:`sample_euler_box` with
    :data:`PAPER_HALF_COVERAGE`). Uniform in the angles, not on SO(3).

The restricted schemes draw ``rot``, ``cos(tilt)`` and ``psi`` uniformly in their ranges, which is
the Haar measure (``sin(tilt) d rot d tilt d psi`` in ZYZ angles) conditioned on the range; this is
what the authors obtained by rejecting uniform quaternions outside the Euler-angle box.

The paper's perturbation and noise studies used neither ``"uniform"`` nor ``"half"``: the authors'
``uniform_angles`` draws the three Euler angles uniformly in a box (``"paper_half"``), which crowds
the directions at the pole as ``"euler"`` does.

Distances between independent Haar orientations, or from a fixed orientation to a Haar one,
have the density ``(1 - cos θ) / π`` on ``[0, π]`` (:func:`haar_distance_pdf`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryoorient.geometry import canonical_quaternion, euler_to_quaternion, quaternion_distance_matrix

__all__ = [
    "PAPER_HALF_COVERAGE",
    "SAMPLING_SCHEMES",
    "haar_distance_cdf",
    "haar_distance_pdf",
    "haar_quaternions",
    "random_pairs",
    "sample_euler_box",
    "sample_orientations",
    "sample_uniform_distance_pairs",
]

SAMPLING_SCHEMES = ("uniform", "euler", "half", "quarter", "paper_half")

# the authors' AngCoverage of their half-coverage studies: rot, tilt, psi up to these multiples of π
PAPER_HALF_COVERAGE = (2.0, 0.5, 2.0)

# (rot range, cos(tilt) range or None for uniform tilt, psi range), radians
_EULER_BOXES = {
    "euler": ((0.0, 2 * math.pi), None, (0.0, 2 * math.pi)),
    "half": ((0.0, 2 * math.pi), (0.0, 1.0), (0.0, 2 * math.pi)),
    "quarter": ((0.0, math.pi), (0.0, 1.0), (0.0, 2 * math.pi)),
}


def haar_quaternions(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 4) float64 Haar-random unit quaternions drawn from a torch ``generator`` (CPU).

    The random starts of the recoveries; :func:`sample_orientations` is the seeded entry point
    for datasets.
    """
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return q / torch.linalg.vector_norm(q, dim=1, keepdim=True)


def random_pairs(n: int, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random ordered pairs ``(i, j)``, ``i != j``, of ``n`` items: two (count,) long tensors.

    ``j`` is ``i`` plus a uniform offset in ``[1, n)``, modulo ``n``: uniform over the other items.
    """
    i = torch.randint(n, (count,), generator=generator)
    j = (i + torch.randint(1, n, (count,), generator=generator)) % n
    return i, j


def sample_orientations(
    n: int,
    scheme: str = "uniform",
    seed: int | np.random.Generator = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Draw ``n`` orientations from one of :data:`SAMPLING_SCHEMES`.

    Parameters
    ----------
    n : number of orientations (``>= 0``).
    scheme : ``"uniform"``, ``"euler"``, ``"half"``, ``"quarter"`` or ``"paper_half"`` (see the module
        docstring).
    seed : an integer seed or a :class:`numpy.random.Generator` (consumed in place).
    dtype : floating dtype of the result.

    Returns
    -------
    (n, 4) unit quaternions, scalar first, ``w >= 0``.
    """
    if scheme not in SAMPLING_SCHEMES:
        raise ValueError(f"unknown sampling scheme {scheme!r}; choose one of {', '.join(SAMPLING_SCHEMES)}")
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    rng = np.random.default_rng(seed)
    n = int(n)
    if scheme == "uniform":
        q = rng.standard_normal((n, 4))  # (n, 4)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        return canonical_quaternion(torch.from_numpy(q).to(dtype))
    if scheme == "paper_half":
        return sample_euler_box(n, PAPER_HALF_COVERAGE, rng, dtype)
    (rot_lo, rot_hi), cos_tilt, (psi_lo, psi_hi) = _EULER_BOXES[scheme]
    rot = rng.uniform(rot_lo, rot_hi, n)
    tilt = rng.uniform(0.0, math.pi, n) if cos_tilt is None else np.arccos(rng.uniform(*cos_tilt, n))
    psi = rng.uniform(psi_lo, psi_hi, n)
    angles = torch.from_numpy(np.stack((rot, tilt, psi), axis=-1))  # (n, 3)
    return euler_to_quaternion(angles).to(dtype)


def sample_euler_box(
    n: int,
    coverage: tuple[float, float, float] = PAPER_HALF_COVERAGE,
    seed: int | np.random.Generator = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Draw ``n`` orientations with Euler angles uniform in ``[0, c π]`` each (the authors' sampling).

    Uniform in the angles, not on SO(3): ``rot ∈ [0, c₀π)``, ``tilt ∈ [0, c₁π]``, ``psi ∈ [0, c₂π)``,
    RELION ZYZ, as the authors' ``uniform_angles`` with ``AngCoverage = coverage``. With
    ``(2, 1, 2)`` this is the ``"euler"`` scheme; :data:`PAPER_HALF_COVERAGE` is their half coverage.

    Parameters
    ----------
    n : number of orientations (``>= 0``).
    coverage : ``(c₀, c₁, c₂)``, the upper end of each angle's range in multiples of π, with
        ``0 < c₀, c₂ <= 2`` and ``0 < c₁ <= 1``.
    seed : an integer seed or a :class:`numpy.random.Generator` (consumed in place).
    dtype : floating dtype of the result.

    Returns
    -------
    (n, 4) unit quaternions, scalar first, ``w >= 0``.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    c_rot, c_tilt, c_psi = (float(c) for c in coverage)
    if not (0 < c_rot <= 2 and 0 < c_tilt <= 1 and 0 < c_psi <= 2):
        raise ValueError(
            "coverage must be (rot, tilt, psi) multiples of π in (0, 2], (0, 1], (0, 2]; "
            f"got {tuple(coverage)}"
        )
    rng = np.random.default_rng(seed)
    n = int(n)
    rot = rng.uniform(0.0, c_rot * math.pi, n)
    tilt = rng.uniform(0.0, c_tilt * math.pi, n)
    psi = rng.uniform(0.0, c_psi * math.pi, n)
    angles = torch.from_numpy(np.stack((rot, tilt, psi), axis=-1))  # (n, 3)
    return euler_to_quaternion(angles).to(dtype)


def haar_distance_pdf(theta: np.ndarray | float) -> np.ndarray:
    """Density ``(1 - cos θ) / π`` of the distance between two independent Haar orientations.

    Parameters
    ----------
    theta : angles in radians, in ``[0, π]``.
    """
    theta = np.asarray(theta, dtype=float)
    return (1.0 - np.cos(theta)) / np.pi


def haar_distance_cdf(theta: np.ndarray | float) -> np.ndarray:
    """Cumulative distribution ``(θ - sin θ) / π`` of :func:`haar_distance_pdf`.

    Parameters
    ----------
    theta : angles in radians; clipped to ``[0, π]``.
    """
    theta = np.clip(np.asarray(theta, dtype=float), 0.0, np.pi)
    return (theta - np.sin(theta)) / np.pi


def sample_uniform_distance_pairs(
    quaternions: torch.Tensor,
    n_pairs: int,
    n_bins: int = 32,
    seed: int | np.random.Generator = 0,
) -> torch.Tensor:
    """Draw distinct pairs ``(i, j)``, ``i < j``, whose distances ``d_q`` are uniform on ``[0, π]``.

    Random orientations are rarely close (density ``(1 - cos θ)/π``), so training on all pairs
    would hardly ever show small distances. As the paper does, pairs are resampled: the range is
    cut into ``n_bins`` equal bins and the same number of pairs is drawn from each (all of a bin's
    pairs when it has fewer; the shortfall goes to the other bins).

    Parameters
    ----------
    quaternions : (N, 4) orientations of the items to pair (e.g. one split).
    n_pairs : number of pairs wanted (at most N (N - 1) / 2).
    n_bins : distance bins.
    seed : seed or generator.

    Returns
    -------
    (n_pairs, 2) int64 indices into ``quaternions``.
    """
    q = torch.as_tensor(quaternions, dtype=torch.float64)
    n = len(q)
    total = n * (n - 1) // 2
    if int(n_pairs) != n_pairs or not 0 < n_pairs <= total:
        raise ValueError(f"n_pairs must be an integer in [1, {total}] for {n} items; got {n_pairs!r}")
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(n, k=1)
    bins = np.minimum((quaternion_distance_matrix(q).numpy()[i, j] / np.pi * n_bins).astype(int), n_bins - 1)
    members = [np.flatnonzero(bins == b) for b in range(n_bins)]
    # fill bins in order of availability so that small bins give all they have
    quota, chosen = int(n_pairs), []
    for rank, b in enumerate(sorted(range(n_bins), key=lambda b: len(members[b]))):
        take = min(len(members[b]), quota // (n_bins - rank))
        chosen.append(rng.choice(members[b], size=take, replace=False))
        quota -= take
    picked = rng.permutation(np.concatenate(chosen))
    return torch.from_numpy(np.stack((i[picked], j[picked]), axis=1)).long()
