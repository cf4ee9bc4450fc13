"""Fourier filters of a map: a low-pass to a stated resolution, the "initial model" a user may hold.

A user without the structure has at best a low-resolution map of it (an initial model, a blurred
homologue). :func:`low_pass` makes one from a map: the amplitudes of every shell finer than the
stated resolution are removed behind a raised-cosine edge, which rings less than a hard cut. The
edge has the shape of RELION's low-pass (``relion_image_handler --lowpass``, edge width 2 shells
by default): a cosine over ``edge_shells`` Fourier shells centred on the cut, so the amplitude at
the stated resolution is halved (RELION also rounds the cut to a whole shell; we do not).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryoorient._checks import check_volume
from cryoorient._fourier import frequency_radius

__all__ = ["low_pass", "low_pass_weights"]


def low_pass_weights(
    box_size: int, voxel_size: float, resolution: float, edge_shells: float = 2.0
) -> torch.Tensor:
    """The low-pass filter's weight at every frequency of an unshifted ``(D, D, D)`` transform.

    The cut sits at shell ``c = D · voxel_size / resolution`` (``|k|`` in integer frequencies):
    weight 1 below ``c - edge_shells / 2``, 0 above ``c + edge_shells / 2``, and between them
    ``(1 + cos(π (|k| - c + edge_shells / 2) / edge_shells)) / 2``, which is 1/2 at ``c``.

    Parameters
    ----------
    box_size : D, voxels.
    voxel_size : Å per voxel.
    resolution : Å, at least the Nyquist limit ``2 · voxel_size``.
    edge_shells : width of the cosine edge in Fourier shells (0: a hard cut at ``c``).

    Returns
    -------
    (D, D, D) float64 weights in [0, 1], laid out as ``torch.fft.fftn`` orders frequencies.
    """
    if not (isinstance(box_size, int) and box_size >= 2):
        raise ValueError(f"box_size must be an integer >= 2; got {box_size!r}")
    if not (math.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive number of Å; got {voxel_size!r}")
    if not (math.isfinite(resolution) and resolution >= 2 * voxel_size):
        raise ValueError(
            f"resolution must be a number of Å at or above the Nyquist limit 2 × {voxel_size:g} = "
            f"{2 * voxel_size:g} Å; got {resolution!r}"
        )
    if not (math.isfinite(edge_shells) and edge_shells >= 0):
        raise ValueError(f"edge_shells must be a non-negative number of Fourier shells; got {edge_shells!r}")
    radius = frequency_radius(box_size)  # shells
    cut = box_size * voxel_size / resolution
    if edge_shells == 0:
        return (radius <= cut).to(torch.float64)
    t = ((radius - (cut - edge_shells / 2)) / edge_shells).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * t))


def low_pass(
    volume: torch.Tensor | np.ndarray, voxel_size: float, resolution: float, edge_shells: float = 2.0
) -> torch.Tensor:
    """The map with every shell finer than ``resolution`` removed (a raised-cosine edge).

    Parameters
    ----------
    volume : (D, D, D) map ``[z, y, x]``.
    voxel_size : Å per voxel.
    resolution : Å, where the amplitude is halved; at least ``2 · voxel_size`` (Nyquist).
    edge_shells : width of the edge in Fourier shells (:func:`low_pass_weights`).

    Returns
    -------
    (D, D, D) float32 filtered map on ``volume``'s device; its mean (the zero frequency) is kept.
    """
    vol = check_volume(volume, "volume")
    weights = low_pass_weights(vol.shape[0], voxel_size, resolution, edge_shells).to(vol.device)
    return torch.fft.ifftn(torch.fft.fftn(vol.to(torch.float64)) * weights).real.float()
