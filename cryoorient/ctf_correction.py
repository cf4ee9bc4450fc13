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
from cryoorient.projection import ctf_2d

__all__ = [
    "TREATMENTS",
    "WIENER_NOISE_FLOOR",
    "ctf_grids",
    "phase_flip",
    "treat_images",
    "treatment_channels",
    "wiener_filter",
    "wiener_snr",
]

TREATMENTS = ("raw", "phase_flip", "wiener", "two_channel")
"""The input treatments, in the order the ablation reports them."""

WIENER_NOISE_FLOOR = 0.01
"""The smallest σ² the Wiener filter assumes (:func:`wiener_snr`): on noiseless images it then
divides by the CTF only where ``|CTF| ≳ 0.1`` and lifts the frequencies near a zero at most 5 times,
instead of dividing by numbers near zero."""


def treatment_channels(treatment: str | None) -> int:
    """Channels per image the network sees under ``treatment``: 2 for ``"two_channel"``, else 1.

    ``None`` (images without a CTF, or used as given) is 1 channel too.
    """
    if treatment is not None and treatment not in TREATMENTS:
        raise ValueError(f"unknown treatment {treatment!r}; choose one of {', '.join(TREATMENTS)}")
    return 2 if treatment == "two_channel" else 1


def wiener_snr(noise_variance: float) -> float:
    """The Wiener filter's SNR for unit-variance images under white noise of variance ``noise_variance``.

    ``1 / max(σ², WIENER_NOISE_FLOOR)``: the signal's variance over the noise's, the same at every
    frequency (a flat spectrum: a coarse but parameter-free model).
    """
    if not (math.isfinite(noise_variance) and noise_variance >= 0):
        raise ValueError(f"noise_variance must be a finite number >= 0; got {noise_variance!r}")
    return 1.0 / max(float(noise_variance), WIENER_NOISE_FLOOR)


def ctf_grids(
    ctf: dict, box_size: int, pixel_size: float, index: np.ndarray | slice | None = None
) -> torch.Tensor:
    """The CTF of each particle of a stack: (N, D, D) float32, unshifted layout (:func:`ctf_2d`).

    Parameters
    ----------
    ctf : per-particle parameters as in :class:`cryoorient.relion.ParticleStack` (``defocus_u``,
        ``defocus_v`` (N,) Å, ``astigmatism_angle`` (N,) rad; ``voltage`` kV,
        ``spherical_aberration`` mm, ``amplitude_contrast``, each one value).
    box_size : D, pixels; pixel_size : Å per pixel.
    index : the particles wanted (all when ``None``).
    """
    lens = {}
    for name in ("voltage", "spherical_aberration", "amplitude_contrast"):
        value = np.asarray(ctf[name], dtype=np.float64)
        if value.ndim and len(np.unique(value)) > 1:
            raise ValueError(f"the particles' {name} differs between them (optics groups); give one value")
        lens[name] = float(value.flat[0])
    pick = slice(None) if index is None else index
    per_particle = {name: torch.as_tensor(np.asarray(ctf[name], dtype=np.float64)[pick])
                    for name in ("defocus_u", "defocus_v", "astigmatism_angle")}
    return ctf_2d(box_size, pixel_size, **per_particle, **lens, device="cpu")


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
