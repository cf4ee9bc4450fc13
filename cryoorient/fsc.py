"""Resolution of a map: the Fourier shell correlation of two maps, and where it crosses a threshold.

Against a noise-free reference map the criterion is FSC 0.5; between two half-maps, each made from
half of the particles, it is 0.143 (Rosenthal & Henderson 2003). Frequencies are in 1/Å when the
voxel size is known, else in cycles per voxel.

The functions take arrays and a voxel size; two :class:`cryoorient.density.DensityMap` s are compared
with :func:`cryoorient.density.map_fsc`, which passes their data and voxel size here.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryoorient._checks import check_volume
from cryoorient._fourier import frequency_radius

__all__ = ["fourier_shell_correlation", "resolution"]


def fourier_shell_correlation(
    map1: torch.Tensor | np.ndarray,
    map2: torch.Tensor | np.ndarray,
    voxel_size: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fourier shell correlation of two maps of the same box.

    ``FSC(s) = Re Σ F₁ F₂* / sqrt(Σ |F₁|² Σ |F₂|²)`` over the shell of frequencies ``k`` (integer
    voxel units, ``-D/2 <= k_i < D/2`` for even ``D``, ``|k_i| <= (D - 1)/2`` for odd) with
    ``round(|k|) = s``, for ``s = 0 .. D // 2``. The full 3-D transform is used, so each frequency
    counts once for even and odd boxes alike; frequencies in the cube's corners (``|k| > D // 2 + 1/2``)
    are left out. A shell where either map has no power gets 0.

    Parameters
    ----------
    map1, map2 : (D, D, D) maps ``[z, y, x]`` (tensors or arrays). Computed on ``map1``'s device in
        float64.
    voxel_size : Å per voxel; ``None`` gives frequencies in 1/voxel. (Two
        :class:`~cryoorient.density.DensityMap` s: :func:`cryoorient.density.map_fsc`.)

    Returns
    -------
    frequencies : (D // 2 + 1,) float64 shell frequencies ``s / (D · voxel_size)`` in 1/Å (or
        ``s / D`` in 1/voxel); the last is Nyquist, ``1 / (2 voxel_size)``, for even ``D``.
    fsc : (D // 2 + 1,) float64 correlations in ``[-1, 1]``; shell 0 is the mean density's.

    Raises
    ------
    ValueError
        Non-cubic or non-finite maps, maps of different shapes, or a ``voxel_size`` that is not
        positive.
    TypeError
        A map given as a :class:`~cryoorient.density.DensityMap` (use :func:`~cryoorient.density.map_fsc`).
    """
    for name, volume in (("map1", map1), ("map2", map2)):
        if hasattr(volume, "voxel_size"):  # a DensityMap, which this numerical module does not import
            raise TypeError(
                f"{name} is a {type(volume).__name__}; pass its .data and voxel_size=, or compare two maps "
                "with cryoorient.density.map_fsc"
            )
    v1 = check_volume(map1, "map1", integer_dtype=torch.float64)
    v2 = check_volume(map2, "map2", integer_dtype=torch.float64)
    if v1.shape != v2.shape:
        raise ValueError(f"maps of different shapes: {tuple(v1.shape)} and {tuple(v2.shape)}")
    if voxel_size is not None and not (math.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive number of Å; got {voxel_size!r}")
    voxel = 1.0 if voxel_size is None else voxel_size
    d = v1.shape[0]
    f1 = torch.fft.fftn(v1.to(torch.float64))
    f2 = torch.fft.fftn(v2.to(v1.device, torch.float64))
    shell = torch.round(frequency_radius(d, v1.device)).long().reshape(-1)  # |k| is never a half-integer
    keep = shell <= d // 2
    shell = shell[keep]
    n_shells = d // 2 + 1

    def shell_sum(values: torch.Tensor) -> torch.Tensor:
        return torch.bincount(shell, weights=values.reshape(-1)[keep], minlength=n_shells)

    cross = shell_sum((f1 * f2.conj()).real)
    power = shell_sum(f1.abs() ** 2) * shell_sum(f2.abs() ** 2)
    fsc = torch.where(power > 0, cross / torch.sqrt(power), torch.zeros_like(cross)).clamp(-1, 1)
    frequencies = torch.arange(n_shells, device=v1.device, dtype=torch.float64) / (d * voxel)
    return frequencies, fsc


def resolution(
    frequencies: torch.Tensor | np.ndarray, fsc: torch.Tensor | np.ndarray, threshold: float = 0.143
) -> float:
    """Resolution where an FSC curve first falls below a threshold.

    Starting from shell 1 (shell 0, the mean, is skipped), finds the first shell ``i`` with
    ``fsc[i] < threshold`` and interpolates linearly between shells ``i - 1`` and ``i`` for the
    frequency ``f*`` where the curve crosses the threshold; the resolution is ``1 / f*``.

    Use 0.5 when comparing with a known map, 0.143 between two independent half maps
    (Rosenthal & Henderson 2003).

    Parameters
    ----------
    frequencies : (S,) increasing shell frequencies starting at 0, as
        :func:`fourier_shell_correlation` returns them (1/Å, or 1/voxel).
    fsc : (S,) correlations.
    threshold : the FSC threshold, in ``(-1, 1)``.

    Returns
    -------
    The resolution in Å (voxels when the frequencies are in 1/voxel). When the curve never falls
    below the threshold, the resolution of the highest shell, ``1 / frequencies[-1]``: the Nyquist
    resolution ``2 · voxel_size`` for even boxes (``2 D / (D - 1)`` voxels for odd ones), a bound
    rather than a measurement. ``inf`` when shell 1 is already below the threshold and so is
    shell 0 (no correlated signal).

    Raises
    ------
    ValueError
        Curves of different lengths, fewer than two shells, frequencies not increasing from 0, or
        a threshold outside ``(-1, 1)``.
    """
    f = np.asarray(torch.as_tensor(frequencies).detach().cpu(), dtype=np.float64)
    c = np.asarray(torch.as_tensor(fsc).detach().cpu(), dtype=np.float64)
    if f.ndim != 1 or c.shape != f.shape:
        raise ValueError(f"frequencies and fsc must be 1-D of the same length; got {f.shape} and {c.shape}")
    if len(f) < 2:
        raise ValueError(f"need at least two shells; got {len(f)}")
    if not (f[0] >= 0 and np.all(np.diff(f) > 0)):
        raise ValueError(f"frequencies must increase from >= 0; got {f[:4]}...")
    if not (math.isfinite(threshold) and -1 < threshold < 1):
        raise ValueError(f"threshold must be in (-1, 1); got {threshold!r}")
    below = np.nonzero(c[1:] < threshold)[0]
    if len(below) == 0:
        return float(1 / f[-1])
    i = int(below[0]) + 1
    if c[i - 1] < threshold:  # only possible for i = 1: shell 0 is below too
        return math.inf
    crossing = f[i - 1] + (c[i - 1] - threshold) / (c[i - 1] - c[i]) * (f[i] - f[i - 1])
    return float(1 / crossing) if crossing > 0 else math.inf
