"""The Siamese distance estimator ``d̂_p(p_i, p_j) = d_f(G_w(p_i), G_w(p_j))``.

``G_w`` is a fully convolutional network ending in global average pooling, so its features do not
depend on where the particle sits in the image (up to border effects) and it takes any image size.
``d_f`` compares two feature vectors:

``"cosine"`` (the paper's)
    the angle between the feature vectors, ``arccos(<f_i, f_j> / (|f_i| |f_j|))`` in ``[0, π]``,
    the same range as the orientation distance ``d_q``. Computed as
    ``2 atan2(|u_i − u_j|, |u_i + u_j|)`` on the unit vectors ``u``, which is exact and has finite
    gradients everywhere.
``"euclidean"`` (ablation)
    ``|f_i − f_j|``, unbounded.

Architectures (:data:`ARCHITECTURES`):

``"paper"``
    seven 3×3 convolution stages with 32-64-128-256-256-512-512 channels, each followed by ReLU
    and 2×2 max pooling, then global average pooling: n_f = 512 features, ~4.5 M parameters.
``"compact"``
    for CPUs: four stages of two 3×3 convolutions (32-64-128-256 channels) with group
    normalisation and ReLU, max pooling between stages, global average pooling and a linear map to
    ``n_features``. Group (not batch) normalisation makes every image's features independent of
    the others in its batch, so distributed training equals single-process training.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "DISTANCES",
    "SiameseDistance",
    "cosine_distance",
    "euclidean_distance",
    "feature_network",
]

ARCHITECTURES = ("paper", "compact")
DISTANCES = ("cosine", "euclidean")


def cosine_distance(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Angle between feature vectors, in radians.

    Parameters
    ----------
    f1, f2 : (..., n_f) features; leading dimensions broadcast.

    Returns
    -------
    (...) angles in ``[0, π]``.
    """
    u1 = f1 / torch.linalg.vector_norm(f1, dim=-1, keepdim=True).clamp_min(1e-12)
    u2 = f2 / torch.linalg.vector_norm(f2, dim=-1, keepdim=True).clamp_min(1e-12)
    return 2 * torch.atan2(
        torch.linalg.vector_norm(u1 - u2, dim=-1), torch.linalg.vector_norm(u1 + u2, dim=-1)
    )


def euclidean_distance(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between feature vectors (finite gradient at 0).

    Parameters
    ----------
    f1, f2 : (..., n_f) features; leading dimensions broadcast.

    Returns
    -------
    (...) distances, non-negative.
    """
    return torch.linalg.vector_norm(f1 - f2, dim=-1)


_DISTANCE_FUNCTIONS = {"cosine": cosine_distance, "euclidean": euclidean_distance}


def _paper_network() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = (1, 32, 64, 128, 256, 256, 512, 512)
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def _compact_network(n_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = (1, 32, 64, 128, 256)
    for stage, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        if stage > 0:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        for c in (c_in, c_out):
            layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.GroupNorm(8, c_out), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], n_features)]
    return nn.Sequential(*layers)


def feature_network(architecture: str = "compact", n_features: int = 128) -> nn.Sequential:
    """The feature extractor ``G_w``: ``(B, 1, H, W)`` images to ``(B, n_f)`` features.

    Parameters
    ----------
    architecture : ``"paper"`` (n_f is 512, ``n_features`` must be 512) or ``"compact"``.
    n_features : n_f, the feature dimension.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if int(n_features) != n_features or n_features < 1:
        raise ValueError(f"n_features must be a positive integer; got {n_features!r}")
    if architecture == "paper":
        if n_features != 512:
            raise ValueError(f"the paper's architecture has n_f = 512 features; got n_features={n_features}")
        return _paper_network()
    return _compact_network(int(n_features))


class SiameseDistance(nn.Module):
    """``d̂_p(p_i, p_j) = d_f(G_w(p_i), G_w(p_j))`` with shared weights ``w``.

    Parameters
    ----------
    architecture : see :func:`feature_network`.
    n_features : n_f.
    distance : ``"cosine"`` or ``"euclidean"`` (``d_f``).
    """

    def __init__(
        self, architecture: str = "compact", n_features: int = 128, distance: str = "cosine"
    ) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"unknown feature distance {distance!r}; choose one of {', '.join(DISTANCES)}")
        self.config = {"architecture": architecture, "n_features": int(n_features), "distance": distance}
        self.network = feature_network(architecture, n_features)
        self._distance = _DISTANCE_FUNCTIONS[distance]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``G_w``: (B, H, W) or (B, 1, H, W) images to (B, n_f) features."""
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must have shape (B, H, W) or (B, 1, H, W); got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        return self.network(images)

    def feature_distance(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """``d_f`` on (..., n_f) features, broadcasting."""
        return self._distance(f1, f2)

    def pairwise(self, f1: torch.Tensor, f2: torch.Tensor | None = None) -> torch.Tensor:
        """All distances ``D[i, j] = d_f(f1[i], f2[j])`` between (N, n_f) and (M, n_f) features."""
        f2 = f1 if f2 is None else f2
        return self._distance(f1[:, None, :], f2[None, :, :])

    def forward(self, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
        """``d̂_p`` for (B, H, W) pairs of images: (B,) distances."""
        return self._distance(self.features(p1), self.features(p2))
