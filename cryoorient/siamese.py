"""The Siamese distance estimator ``d̂_p(p_i, p_j) = d_f(G_w(p_i), G_w(p_j))``.

``G_w`` is a fully convolutional network ending in global average pooling, so its features do not
depend on where the particle sits in the image (up to border effects) and it takes any image size.
``d_f`` compares two feature vectors:

``"geodesic"`` (the paper's)
    ``d_q`` itself applied to the unit feature vectors, ``2 arccos |<u_i, u_j>|`` in ``[0, π]``:
    the paper "set[s] d_f = d_q" (its § 2.2; its appendix writes the same ``2 arccos`` of the
    cosine similarity). Twice the angle between the features (for a non-negative inner product):
    the paper's network ends in ReLU and average pooling, so its features are non-negative, their
    angle at most π/2, and doubling it reaches π. Computed as ``4 atan2(|u_i − s u_j|, |u_i + s u_j|)``
    with ``s`` the sign of ``<u_i, u_j>`` (as :func:`cryoorient.geometry.quaternion_distance`).
``"cosine"``
    the angle between the feature vectors, ``arccos(<f_i, f_j> / (|f_i| |f_j|))`` in ``[0, π]``.
    Computed as ``2 atan2(|u_i − u_j|, |u_i + u_j|)`` on the unit vectors ``u``, which is exact and
    has finite gradients everywhere. Not the paper's ``d_f`` (which doubles the angle): with the
    paper's network, whose features are non-negative, it cannot exceed π/2.
``"euclidean"`` (ablation)
    ``|f_i − f_j|``, unbounded.
``"orientation"`` (ours)
    ``2 arccos √(max(cos θ, 0))`` with ``θ`` the angle between the feature vectors. The paper's
    cosine cannot represent ``d_q``: every orientation has a whole 2-sphere of orientations at
    ``d_q = π`` (itself turned by a half-turn about any axis), which the cosine would all have to
    map to the single point ``−u_i``, although they are up to π apart from each other. Even free
    feature vectors, one per orientation and no network at all, then fit uniformly distributed
    distances no better than RMSE ≈ 0.56 rad (0.83 rad for ``d_q > 2``): the paper's plateau
    (notebook 03 measures it). This distance is exact for the continuous embedding
    ``q ↦ vec(q qᵀ)`` (10 numbers, the rotation matrix in disguise), since
    ``<q_i q_iᵀ, q_j q_jᵀ> = <q_i, q_j>² = cos²(d_q / 2)``; orientations at ``d_q = π`` map to
    orthogonal features, of which there are plenty. Any ``n_f ≥ 10`` can thus fit ``d_q`` exactly.
    Computed as ``2 atan2(|u_i − u_j| / √2, √cos θ)``, accurate near 0.

Architectures (:data:`ARCHITECTURES`):

``"paper"``
    seven 3×3 convolution stages with 32-64-128-256-256-512-512 channels, each followed by ReLU
    and 2×2 max pooling, then global average pooling: n_f = 512 features, ~4.5 M parameters.
``"compact"``
    for CPUs: five stages of two 3×3 convolutions (32-64-128-256-256 channels), each followed by
    batch normalisation and ReLU, max pooling between stages, global average pooling and a
    linear map to ``n_features`` (~2.4 M parameters). Batch normalisation trains much better here
    than group normalisation (test RMSE 0.40 vs 0.63 rad after the same 7 minutes on one core,
    5j0n, orientation ``d_f``, no rotations); under distributed training its statistics are over
    the whole batch (:class:`BatchNorm2d`). Zero padding: circular padding would make the features
    exactly invariant to circular shifts, but costs a third more time per epoch on a CPU;
    invariance to shifts is learned from on-the-fly shifts instead.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "DISTANCES",
    "PAIRWISE_MEMORY_BUDGET",
    "SiameseDistance",
    "cosine_distance",
    "distance_function",
    "euclidean_distance",
    "geodesic_distance",
    "feature_network",
    "orientation_distance",
    "pairwise_block_rows",
]

ARCHITECTURES = ("paper", "compact")
DISTANCES = ("geodesic", "cosine", "euclidean", "orientation")


def _unit(f: torch.Tensor) -> torch.Tensor:
    """(..., n_f) features scaled to unit length (zero vectors stay zero)."""
    return f / torch.linalg.vector_norm(f, dim=-1, keepdim=True).clamp_min(1e-12)


def _cosine_parts(f1: torch.Tensor, f2: torch.Tensor) -> list[torch.Tensor]:
    """``|u_1 − u_2|`` and ``|u_1 + u_2|`` of the unit feature vectors (reductions over n_f)."""
    u1, u2 = _unit(f1), _unit(f2)
    return [torch.linalg.vector_norm(u1 - u2, dim=-1), torch.linalg.vector_norm(u1 + u2, dim=-1)]


def _geodesic_parts(f1: torch.Tensor, f2: torch.Tensor) -> list[torch.Tensor]:
    """``|u_1 − s u_2|`` and ``|u_1 + s u_2|``, ``s`` the sign of ``<u_1, u_2>`` (reductions over n_f)."""
    u1, u2 = _unit(f1), _unit(f2)
    u2 = torch.where((u1 * u2).sum(-1, keepdim=True) < 0, -u2, u2)
    return [torch.linalg.vector_norm(u1 - u2, dim=-1), torch.linalg.vector_norm(u1 + u2, dim=-1)]


def _quarter_angle(parts: list[torch.Tensor]) -> torch.Tensor:
    """``4 atan2(a, b)`` of ``parts = [a, b]`` (emptied, as :func:`_half_angle`)."""
    return 2 * _half_angle(parts)


def _orientation_parts(f1: torch.Tensor, f2: torch.Tensor) -> list[torch.Tensor]:
    """``|u_1 − u_2| / √2`` and ``√cos θ`` (floored) of the unit feature vectors."""
    u1, u2 = _unit(f1), _unit(f2)
    cos = (u1 * u2).sum(-1).clamp(1e-6, 1.0)  # the floor keeps the gradient of √ finite near π
    return [torch.linalg.vector_norm(u1 - u2, dim=-1) / math.sqrt(2), cos.sqrt()]


def _euclidean_parts(f1: torch.Tensor, f2: torch.Tensor) -> list[torch.Tensor]:
    """``|f_1 − f_2|``."""
    return [torch.linalg.vector_norm(f1 - f2, dim=-1)]


def _half_angle(parts: list[torch.Tensor]) -> torch.Tensor:
    """``2 atan2(a, b)`` of ``parts = [a, b]``; empties the list so that ``a`` and ``b`` can be freed."""
    angle = torch.atan2(parts[0], parts[1])
    parts.clear()
    return 2 * angle


def _only(parts: list[torch.Tensor]) -> torch.Tensor:
    """The one part, which is the distance."""
    return parts.pop()


def cosine_distance(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Angle between feature vectors, in radians.

    Parameters
    ----------
    f1, f2 : (..., n_f) features; leading dimensions broadcast.

    Returns
    -------
    (...) angles in ``[0, π]``.
    """
    return _half_angle(_cosine_parts(f1, f2))


def geodesic_distance(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """The paper's ``d_f = d_q`` on unit features: ``2 arccos |<u_1, u_2>|``, in radians.

    Parameters
    ----------
    f1, f2 : (..., n_f) features; leading dimensions broadcast.

    Returns
    -------
    (...) distances in ``[0, π]``; orthogonal features give π.
    """
    return _quarter_angle(_geodesic_parts(f1, f2))


def euclidean_distance(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between feature vectors (finite gradient at 0).

    Parameters
    ----------
    f1, f2 : (..., n_f) features; leading dimensions broadcast.

    Returns
    -------
    (...) distances, non-negative.
    """
    return _only(_euclidean_parts(f1, f2))


def orientation_distance(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """``2 arccos √(max(cos θ, 0))``, ``θ`` the angle between feature vectors, in radians.

    Equals ``d_q(q_i, q_j)`` when the features are ``vec(q_i q_iᵀ)`` and ``vec(q_j q_jᵀ)``.

    Parameters
    ----------
    f1, f2 : (..., n_f) features; leading dimensions broadcast.

    Returns
    -------
    (...) distances in ``[0, π]``; orthogonal or obtuse feature pairs give π.
    """
    return _half_angle(_orientation_parts(f1, f2))


_DISTANCE_FUNCTIONS = {
    "geodesic": geodesic_distance,
    "cosine": cosine_distance,
    "euclidean": euclidean_distance,
    "orientation": orientation_distance,
}
# Each d_f in two stages: reductions over n_f giving (...) parts, then an element-wise finish.
# :meth:`SiameseDistance.pairwise` computes the parts in row blocks and finishes the whole matrix at
# once: CPU kernels evaluate transcendental functions (atan2) with SIMD code except for the tail of
# each thread's range, which takes the scalar code (1 ulp apart), so only an element-wise finish on
# the whole (N, M) matrix reproduces the unblocked result bit for bit. The parts themselves are
# per-pair reductions and correctly rounded operations (+, −, ×, /, √, clamp): the same in any block.
_DISTANCE_STAGES = {
    "geodesic": (_geodesic_parts, _quarter_angle),
    "cosine": (_cosine_parts, _half_angle),
    "euclidean": (_euclidean_parts, _only),
    "orientation": (_orientation_parts, _half_angle),
}

#: Bytes of temporaries :meth:`SiameseDistance.pairwise` allows itself per block of rows by default.
PAIRWISE_MEMORY_BUDGET = 256 * 2**20
# Simultaneous (rows, M, n_f) temporaries of the widest d_f (orientation: u_i u_j and u_i - u_j), with
# one to spare for the allocator's slack.
_PAIRWISE_TEMPORARIES = 3


def pairwise_block_rows(
    m: int, n_features: int, element_size: int = 4, memory_budget: int = PAIRWISE_MEMORY_BUDGET
) -> int:
    """Rows per block of :meth:`SiameseDistance.pairwise` for temporaries within a memory budget.

    Parameters
    ----------
    m : columns M of the distance matrix (rows of ``f2``).
    n_features : n_f.
    element_size : bytes per feature value (4 for float32).
    memory_budget : bytes allowed for the ``(rows, M, n_f)`` temporaries.

    Returns
    -------
    The number of rows, at least 1 (a single row may exceed a tiny budget).
    """
    if isinstance(memory_budget, bool) or int(memory_budget) != memory_budget or memory_budget < 1:
        raise ValueError(f"memory_budget must be a positive number of bytes; got {memory_budget!r}")
    per_row = _PAIRWISE_TEMPORARIES * max(1, int(m)) * max(1, int(n_features)) * int(element_size)
    return max(1, int(memory_budget) // per_row)


def distance_function(name: str):
    """The feature distance ``d_f`` called ``name`` (one of :data:`DISTANCES`)."""
    if name not in DISTANCES:
        raise ValueError(f"unknown feature distance {name!r}; choose one of {', '.join(DISTANCES)}")
    return _DISTANCE_FUNCTIONS[name]


def _paper_network(n_features: int = 512, in_channels: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = (in_channels, 32, 64, 128, 256, 256, 512, 512)
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if n_features != channels[-1]:  # the appendix's n_f ablation: a linear map to n_f
        layers.append(nn.Linear(channels[-1], n_features))
    return nn.Sequential(*layers)


class BatchNorm2d(nn.BatchNorm2d):
    """Batch normalisation whose training statistics span all processes of a distributed run.

    Outside ``torch.distributed`` (or in evaluation) it is :class:`torch.nn.BatchNorm2d`. In a
    distributed run the per-channel sums are all-reduced (differentiably), so each process
    normalises its share of the batch with the statistics of the whole batch, as one process
    would. PyTorch's SyncBatchNorm does the same but only on GPUs; this one also runs on CPUs
    (gloo), which is what lets the tests check distributed training against one process.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        ):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum((0, 2, 3)), count]))
        n = sums[-1]
        mean = sums[:c] / n
        centred = x - mean.view(1, c, 1, 1)
        var = all_reduce((centred * centred).sum((0, 2, 3))) / n  # two passes, as accurate as BatchNorm2d
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), self.momentum)
        shape = (1, c, 1, 1)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def _compact_network(n_features: int, in_channels: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = (in_channels, 32, 64, 128, 256, 256)
    for stage, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        if stage > 0:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        for c in (c_in, c_out):
            layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), BatchNorm2d(c_out), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], n_features)]
    return nn.Sequential(*layers)


def feature_network(
    architecture: str = "compact", n_features: int = 128, in_channels: int = 1
) -> nn.Sequential:
    """The feature extractor ``G_w``: ``(B, C, H, W)`` images to ``(B, n_f)`` features.

    Parameters
    ----------
    architecture : ``"paper"`` (512 features; another ``n_features`` adds a linear map to it, as
        for the appendix's n_f ablation) or ``"compact"``.
    n_features : n_f, the feature dimension.
    in_channels : C, channels per image: 1, or 2 for a CTF-affected image beside its phase-flipped
        copy (:func:`cryoorient.ctf_correction.treat_images`, ``"two_channel"``).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if int(n_features) != n_features or n_features < 1:
        raise ValueError(f"n_features must be a positive integer; got {n_features!r}")
    if isinstance(in_channels, bool) or int(in_channels) != in_channels or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer; got {in_channels!r}")
    if architecture == "paper":
        return _paper_network(int(n_features), int(in_channels))
    return _compact_network(int(n_features), int(in_channels))


class SiameseDistance(nn.Module):
    """``d̂_p(p_i, p_j) = d_f(G_w(p_i), G_w(p_j))`` with shared weights ``w``.

    Parameters
    ----------
    architecture : see :func:`feature_network`.
    n_features : n_f.
    distance : ``d_f``, one of :data:`DISTANCES` (``"cosine"``, ``"euclidean"``, ``"orientation"``).
    in_channels : channels per image (see :func:`feature_network`).
    """

    def __init__(
        self,
        architecture: str = "compact",
        n_features: int = 128,
        distance: str = "cosine",
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self._distance = distance_function(distance)
        self.network = feature_network(architecture, n_features, in_channels)
        self.config = {"architecture": architecture, "n_features": int(n_features), "distance": distance,
                       "in_channels": int(in_channels)}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``G_w``: (B, C, H, W) images, or (B, H, W) when C = 1, to (B, n_f) features."""
        c = self.config["in_channels"]
        if images.ndim == 3 and c == 1:
            images = images[:, None]
        if images.ndim != 4 or images.shape[1] != c:
            shapes = "(B, H, W) or (B, 1, H, W)" if c == 1 else f"(B, {c}, H, W)"
            raise ValueError(f"images must have shape {shapes}; got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        return self.network(images)

    def feature_distance(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """``d_f`` on (..., n_f) features, broadcasting."""
        return self._distance(f1, f2)

    def pairwise(
        self,
        f1: torch.Tensor,
        f2: torch.Tensor | None = None,
        *,
        block_rows: int | None = None,
        memory_budget: int = PAIRWISE_MEMORY_BUDGET,
    ) -> torch.Tensor:
        """All distances ``D[i, j] = d_f(f1[i], f2[j])`` between (N, n_f) and (M, n_f) features.

        ``d_f`` is evaluated on broadcast ``(rows, M, n_f)`` slabs of pairs, a block of rows of
        ``f1`` at a time, so the temporaries take ``O(block_rows · M · n_f)`` memory, not
        ``O(N · M · n_f)`` (13 GB at N = M = 5,000, n_f = 128 in float32); the result and the
        ``(N, M)`` intermediate parts of ``d_f`` take a few ``N · M`` floats. The result is
        bit-identical to ``feature_distance(f1[:, None], f2[None])`` on the CPU whatever the block
        (the element-wise finish of ``d_f``, its ``atan2``, runs once on the whole matrix).

        Parameters
        ----------
        f1 : (N, n_f) features; f2 : (M, n_f) features, ``f1`` when ``None``.
        block_rows : rows of ``f1`` per block; ``None`` chooses the largest block whose temporaries
            fit ``memory_budget`` (see :func:`pairwise_block_rows`).
        memory_budget : bytes of temporaries per block when ``block_rows`` is ``None``.

        Returns
        -------
        (N, M) distances, in the features' dtype and on their device.
        """
        f2 = f1 if f2 is None else f2
        if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
            raise ValueError(
                f"features must be (N, n_f) and (M, n_f) with the same n_f; got {tuple(f1.shape)} "
                f"and {tuple(f2.shape)}"
            )
        n, m = f1.shape[0], f2.shape[0]
        if block_rows is None:
            block_rows = pairwise_block_rows(m, f2.shape[1], f2.element_size(), memory_budget)
        elif isinstance(block_rows, bool) or int(block_rows) != block_rows or block_rows < 1:
            raise ValueError(f"block_rows must be a positive integer; got {block_rows!r}")
        block_rows = int(block_rows)
        parts_of, finish = _DISTANCE_STAGES[self.config["distance"]]
        if block_rows >= n:
            return finish(parts_of(f1[:, None, :], f2[None, :, :]))
        parts: list[torch.Tensor] = []
        for start in range(0, n, block_rows):
            block = parts_of(f1[start : start + block_rows, None, :], f2[None, :, :])
            if not parts:
                parts = [b.new_empty((n, m)) for b in block]
            for whole, b in zip(parts, block, strict=True):
                whole[start : start + block_rows] = b
            del block
        return finish(parts)

    def forward(self, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
        """``d̂_p`` for (B, H, W) pairs of images: (B,) distances."""
        return self._distance(self.features(p1), self.features(p2))
