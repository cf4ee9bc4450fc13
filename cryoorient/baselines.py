"""Baseline distances between projections, to set the learned distance ``d̂_p`` against.

The paper's appendix asks whether a learned distance is needed at all: is the plain Euclidean
distance between two projections, ``|p_i − p_j|``, already a usable estimate of the orientation
distance ``d_q(q_i, q_j)``? It is not: it is informative for nearby orientations only and then
saturates (far orientations give unrelated images), and a symmetric protein makes distinct
orientations give identical projections. This module computes that baseline and the affine
calibration that puts it on the radian scale of ``d_q``, so the two can be compared by RMSE.

It also gives the opposite bound, :func:`free_embedding`: the best any network could do with a
given feature distance ``d_f``, found by fitting free feature vectors, one per orientation, to
the true distances. A ``d_f`` whose free embedding cannot fit ``d_q`` caps every network that
uses it (the paper's cosine distance does; see :mod:`cryoorient.siamese`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cryoorient.geometry import quaternion_distance_matrix

__all__ = ["FreeEmbedding", "calibrate", "free_embedding", "image_distance_matrix", "image_distances"]


def _flat(images: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.ndim != 3:
        raise ValueError(f"{name} must be a stack of images (N, H, W); got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return x.reshape(len(x), -1).double()


def image_distances(images: torch.Tensor | np.ndarray, pairs: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Euclidean distances ``|p_i − p_j|`` between pairs of projections.

    Parameters
    ----------
    images : (N, H, W) projections (same normalisation for all).
    pairs : (M, 2) integer index pairs into ``images``.

    Returns
    -------
    (M,) float64 distances, in the images' units.
    """
    x = _flat(images, "images")
    pairs = torch.as_tensor(pairs, dtype=torch.long)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must be an (M, 2) index array; got shape {tuple(pairs.shape)}")
    if len(pairs) and (int(pairs.min()) < 0 or int(pairs.max()) >= len(x)):
        raise ValueError(f"pairs reference images outside 0..{len(x) - 1}")
    return torch.linalg.vector_norm(x[pairs[:, 0]] - x[pairs[:, 1]], dim=-1)


def image_distance_matrix(
    images: torch.Tensor | np.ndarray, others: torch.Tensor | np.ndarray | None = None
) -> torch.Tensor:
    """All Euclidean distances ``D[i, j] = |p_i − o_j|``.

    Parameters
    ----------
    images : (N, H, W) projections.
    others : (M, H, W) projections (default: ``images``).

    Returns
    -------
    (N, M) float64 distances.
    """
    x = _flat(images, "images")
    y = x if others is None else _flat(others, "others")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"images of {x.shape[1]} pixels cannot be compared with images of {y.shape[1]}")
    return torch.cdist(x, y)


def calibrate(distances: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Least-squares affine map ``a·d + b ≈ d_q`` from a baseline distance to radians.

    Fit on training pairs, apply to test pairs: the baseline then gets the best RMSE any affine
    rescaling can give it, which makes the comparison with ``d̂_p`` fair to the baseline.

    Parameters
    ----------
    distances : (M,) baseline distances.
    targets : (M,) orientation distances ``d_q``, radians.

    Returns
    -------
    ``(a, b)``.
    """
    d = np.asarray(distances, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    if d.shape != t.shape or d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need two equal-length 1-d arrays of >= 2 values; got {d.shape} and {t.shape}")
    a, b = np.polyfit(d, t, 1)
    return float(a), float(b)


@dataclass
class FreeEmbedding:
    """Free feature vectors fitted to orientation distances.

    ``features`` (N, n_f); ``distances`` (N, N) their ``d_f``; ``loss`` the final weighted
    L_DE (rad², distances counted as if uniform on [0, π]); ``history`` the loss per step.
    """

    features: torch.Tensor
    distances: torch.Tensor
    loss: float
    history: list[float]


def free_embedding(
    quaternions: torch.Tensor,
    distance: str = "cosine",
    n_features: int = 16,
    *,
    steps: int = 600,
    learning_rate: float = 0.05,
    seed: int = 0,
) -> FreeEmbedding:
    """Fit one free feature vector per orientation so that ``d_f(f_i, f_j) ≈ d_q(q_i, q_j)``.

    No images and no network: this is the best a perfect ``G_w`` could do with this ``d_f``.
    All pairs are used, weighted so that their distances count as uniform on ``[0, π]`` (as in
    training); Adam with the learning rate divided by 5 for the last third of the steps.

    Parameters
    ----------
    quaternions : (N, 4) orientations (N of a few hundred: the cost is O(N² n_f) per step).
    distance : a name from :data:`cryoorient.siamese.DISTANCES`.
    n_features : n_f.
    steps, learning_rate, seed : the optimisation (the start is seeded Gaussian).
    """
    from cryoorient.recipes import distance_weights
    from cryoorient.siamese import distance_function

    d_f = distance_function(distance)
    if int(n_features) != n_features or n_features < 1:
        raise ValueError(f"n_features must be a positive integer; got {n_features!r}")
    target = quaternion_distance_matrix(torch.as_tensor(quaternions, dtype=torch.float64)).float()
    weight = distance_weights(target.flatten(), target.flatten()).reshape(target.shape)
    weight.fill_diagonal_(0.0)
    features = torch.randn(len(target), n_features, generator=torch.Generator().manual_seed(seed))
    features.requires_grad_(True)
    optimizer = torch.optim.Adam([features], lr=learning_rate)
    history = []
    for step in range(steps):
        if step == 2 * steps // 3:
            optimizer.param_groups[0]["lr"] = learning_rate / 5
        loss = (weight * (d_f(features[:, None], features[None]) - target) ** 2).sum() / weight.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        distances = d_f(features[:, None], features[None])
        loss = float((weight * (distances - target) ** 2).sum() / weight.sum())
    return FreeEmbedding(features.detach(), distances, loss, history)
