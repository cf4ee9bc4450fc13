"""Comparing noise levels across image sizes and normalisations: how much noise hides a projection.

This package adds white noise of variance ``σ²`` per pixel to projections standardised to zero
mean and unit variance over the whole stack. The paper's authors added theirs to the *raw* line
integrals of their map (116-px images of 3.67-Å pixels, a 425-Å field of view) and standardised
afterwards, so their ``σ²`` is in the units of the raw projections, whose variance is ≈ 1.06 for
their 5j0n map (measured by ``benchmarks/snr_matching.py``), and their box holds more empty
background than ours (64 px cover the map's 275 Å).

What a distance estimator can extract is how far two projections stand apart above the noise:
the energy of their difference, ``Σ_pixels (p_i − p_j)²``, against the variance ``2 σ²`` per pixel
of the difference of two noisy images (a matched filter, or a network that learns one, sums the
evidence of every pixel: the integrated SNR of the difference).
:func:`matched_noise_variance_from_images` equates that ratio between two stacks, from the images
themselves: ``benchmarks/snr_matching.py`` applies it to the paper's raw projections and ours. The
older estimate :func:`matched_noise_variance` counts pixels only (``σ² · (D / 116)²``, the
integrated SNR ``D² / σ²`` of two unit-variance stacks). The studies still use it: at the default's
64 px it gives 4.87 where the images give 4.96 (``benchmarks/results/snr_matching.json``), 2 % less
noise, against E_OR changing by about 0.02 rad per unit of σ² between σ² = 4 and 16 (notebook 04),
far from the 0.1 rad between our E_OR and the paper's at that level.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "PAPER_BOX_SIZE",
    "integrated_snr",
    "matched_noise_variance",
    "matched_noise_variance_from_images",
    "pair_difference_energy",
]

PAPER_BOX_SIZE = 116
"""The paper's image size D in pixels (Table 1), for its projections of 5j0n at 3.67 Å."""


def _check(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


def integrated_snr(noise_variance: float, box_size: int, signal_variance: float = 1.0) -> float:
    """Integrated SNR ``D² · var(s) / σ²`` of a ``D × D`` image with per-pixel noise ``σ²``.

    Parameters
    ----------
    noise_variance : σ² per pixel (``> 0``), in the units of the stack.
    box_size : image size D, pixels.
    signal_variance : variance of the clean stack (1 after standardisation).

    Returns
    -------
    The ratio (dimensionless); ``integrated_snr(16, 116) ≈ 841``.
    """
    return _check("box_size", box_size) ** 2 * _check("signal_variance", signal_variance) / _check(
        "noise_variance", noise_variance
    )


def matched_noise_variance(
    noise_variance: float, box_size: int, reference_box_size: int = PAPER_BOX_SIZE
) -> float:
    """σ² at which ``box_size``-pixel images have the integrated SNR of the reference at ``noise_variance``.

    Both stacks are standardised to unit variance and show the same particle, so only the pixel
    counts differ: ``σ² · (box_size / reference_box_size)²``.

    Parameters
    ----------
    noise_variance : σ² of the reference images (e.g. the paper's 16).
    box_size : our image size D, pixels.
    reference_box_size : the reference image size (the paper's 116 px by default).

    Returns
    -------
    The matched σ² (``matched_noise_variance(16, 64) ≈ 4.87``).
    """
    ratio = _check("box_size", box_size) / _check("reference_box_size", reference_box_size)
    return _check("noise_variance", noise_variance) * ratio**2


def pair_difference_energy(images: np.ndarray) -> float:
    """Mean energy ``Σ_pixels (p_i − p_j)²`` of the difference of two projections of a stack.

    Parameters
    ----------
    images : (N, D, D) projections (N >= 2, in the units the noise is added in), paired as
        ``(0, 1), (2, 3), …`` (independent, random orientations make random pairs).

    Returns
    -------
    The mean over the pairs, in the images' units squared (summed over the pixels, not averaged).
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3 or len(x) < 2 or not np.isfinite(x).all():
        raise ValueError(f"images must be a finite (N >= 2, D, D) stack; got shape {x.shape}")
    n = len(x) // 2 * 2
    return float(((x[0:n:2] - x[1:n:2]) ** 2).sum(axis=(1, 2)).mean())


def matched_noise_variance_from_images(
    images: np.ndarray, reference: np.ndarray, reference_noise_variance: float
) -> float:
    """σ² at which two of ``images`` stand out of the noise as two of ``reference`` do at theirs.

    ``σ² = σ²_ref · E(images) / E(reference)`` with ``E`` the :func:`pair_difference_energy`, so
    that the matched-filter SNR of a pair's difference, ``E / (2 σ²)`` (the difference's energy
    against the noise variance per pixel of a difference of two noisy images), is the same in both
    stacks. For two unit-variance stacks of the same particle it reduces to the pixel count of
    :func:`matched_noise_variance`; it also carries the reference's own units (the paper's raw
    projections) and what its box holds besides the particle.

    Parameters
    ----------
    images : (N, D, D) our clean projections, in the units our noise is added in (standardised).
    reference : (M, D', D') the reference's clean projections, in its noise's units (the paper's:
        the raw line integrals of its map, at its box and pixel size).
    reference_noise_variance : the reference's σ² (the paper's 16).
    """
    return _check("reference_noise_variance", reference_noise_variance) * (
        pair_difference_energy(images) / pair_difference_energy(reference)
    )
