"""What a network sees of a CTF-affected image: the input treatments of the CTF ablation (issue 34).

Every real particle is the projection convolved with the microscope's contrast transfer function
(:func:`cryoorient.projection.ctf_2d`), which flips the sign of alternate rings of frequencies and
empties those near its zeros. Learned pose methods prepare the image in one of a few ways before
their encoder sees it (cryoDRGN, ASPIRE and CESPED phase-flip; cryoPARES feeds raw and flipped
together), and the ablation compares them:

- ``"raw"``: the image as recorded;
- ``"phase_flip"``: each frequency multiplied by the sign of the CTF, which undoes the sign
  reversals and leaves the amplitudes (the zeros stay empty);
- ``"wiener"``: ``CTF / (CTF² + 1 / SNR)``, which also restores the amplitudes where the signal is
  above the noise;
- ``"two_channel"``: ``raw`` and ``phase_flip`` stacked as two channels.

The functions take a stack and its CTFs in the unshifted layout of :func:`torch.fft.fft2`, and
work on any device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryoorient._checks import check_images

__all__ = ["TREATMENTS", "phase_flip", "treat_images", "wiener_filter"]

TREATMENTS = ("raw", "phase_flip", "wiener", "two_channel")
"""The input treatments, in the order the ablation reports them."""


def _spectra(images: torch.Tensor | np.ndarray, ctf: torch.Tensor | np.ndarray):
    img = check_images(images)
    c = check_images(ctf, "ctf").to(img.device)
    if tuple(c.shape[-2:]) != tuple(img.shape[-2:]):
        raise ValueError(f"ctf grid {tuple(c.shape[-2:])} does not match images {tuple(img.shape[-2:])}")
    return img, torch.fft.fft2(img.to(torch.float64)), c.to(torch.float64)


def phase_flip(images: torch.Tensor | np.ndarray, ctf: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Images with every frequency multiplied by the sign of its CTF (0 where the CTF is 0).

    Parameters
    ----------
    images : (..., H, W) real images ``[y, x]``.
    ctf : (..., H, W) their CTFs, unshifted layout; broadcasts against ``images``.

    Returns
    -------
    (..., H, W) images in ``images``' dtype and device. Flipping twice gives the image back
    wherever the CTF is not zero.
    """
    img, spectrum, c = _spectra(images, ctf)
    return torch.fft.ifft2(spectrum * torch.sign(c)).real.to(img.dtype)


def wiener_filter(
    images: torch.Tensor | np.ndarray, ctf: torch.Tensor | np.ndarray, snr: float
) -> torch.Tensor:
    """Images filtered by ``CTF / (CTF² + 1 / snr)``: the CTF undone where the signal dominates.

    Parameters
    ----------
    images : (..., H, W) real images ``[y, x]``.
    ctf : (..., H, W) their CTFs, unshifted layout; broadcasts against ``images``.
    snr : the signal-to-noise ratio assumed at every frequency (> 0), e.g. ``1 / σ²`` for
        unit-variance projections under white noise of variance ``σ²``. Large values approach
        division by the CTF; small ones approach multiplying by ``snr · CTF``.

    Returns
    -------
    (..., H, W) images in ``images``' dtype and device.
    """
    if not (isinstance(snr, int | float) and math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number; got {snr!r}")
    img, spectrum, c = _spectra(images, ctf)
    return torch.fft.ifft2(spectrum * c / (c**2 + 1.0 / snr)).real.to(img.dtype)


def treat_images(
    images: torch.Tensor | np.ndarray,
    ctf: torch.Tensor | np.ndarray,
    treatment: str,
    *,
    snr: float = 1.0,
) -> torch.Tensor:
    """The images as the network sees them under ``treatment`` (one of :data:`TREATMENTS`).

    Parameters
    ----------
    images : (N, H, W) real images.
    ctf : (N, H, W) or (H, W) their CTFs, unshifted layout.
    treatment : ``"raw"``, ``"phase_flip"``, ``"wiener"`` or ``"two_channel"``.
    snr : the Wiener filter's SNR (:func:`wiener_filter`); ignored by the other treatments.

    Returns
    -------
    (N, H, W) images, or (N, 2, H, W) for ``"two_channel"`` (raw first, then flipped).
    """
    if treatment not in TREATMENTS:
        raise ValueError(f"unknown treatment {treatment!r}; choose one of {', '.join(TREATMENTS)}")
    img = check_images(images)
    if img.ndim != 3:
        raise ValueError(f"images must be a (N, H, W) stack; got shape {tuple(img.shape)}")
    if treatment == "raw":
        return img
    if treatment == "phase_flip":
        return phase_flip(img, ctf)
    if treatment == "wiener":
        return wiener_filter(img, ctf, snr)
    return torch.stack((img, phase_flip(img, ctf)), dim=1)
