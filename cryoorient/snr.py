"""Comparing noise levels across image sizes: the integrated signal-to-noise ratio.

The paper, like this package, adds white noise of variance ``σ²`` per pixel to projections
standardised to zero mean and unit variance over the whole stack (the authors'
``global_standardization`` before ``add_gaussian_noise``). What a distance estimator can extract
from one image depends on the *integrated* SNR, the signal energy of the image over the noise
variance per pixel:

    SNR_int = Σ_pixels s² / σ² = D² / σ²      (a unit-variance stack of D × D images),

because a matched filter (or a network that learns one) sums the evidence of every pixel. The
same ``σ²`` therefore hides more of a small image than of a large one with the same field of view:
the paper's 116-pixel projections at σ² = 16 have ``116² / 16 ≈ 841`` units of integrated SNR,
which 64-pixel projections reach at ``σ² = 16 · (64 / 116)² ≈ 4.87``.

Had the authors added the noise to the raw line integrals instead of the standardised stack, the
factor would also carry the raw stack's variance, which depends on the map's scale. We use the
standardised reading, which is what their preprocessing code does.
"""

from __future__ import annotations

import math

__all__ = ["PAPER_BOX_SIZE", "integrated_snr", "matched_noise_variance"]

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
