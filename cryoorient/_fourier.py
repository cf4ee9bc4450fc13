"""Fourier-slice helpers shared by the projector and the reconstruction (RELION's conventions).

The layouts and conventions are those documented in :mod:`cryoorient.projection`: unshifted
transforms, RELION's signed frequencies (Nyquist at ``+n/2``), a padded box made even, and a
centred, oversampled half spectrum sampled by trilinear interpolation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "centred_half_spectrum",
    "frequency_radius",
    "padded_size",
    "signed_frequencies",
    "slice_frequencies",
    "trilinear_half",
]


def signed_frequencies(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer frequencies of an unshifted axis of length ``n``, RELION's way.

    Index ``i`` is frequency ``i`` for ``i <= n // 2`` and ``i - n`` above, so for even ``n`` the
    Nyquist bin is ``+n/2`` (``torch.fft.fftfreq`` says ``-n/2``).
    """
    i = torch.arange(n, device=device)
    return torch.where(i <= n // 2, i, i - n)


def frequency_radius(d: int, device: torch.device | None = None) -> torch.Tensor:
    """``|k|`` at every frequency of an unshifted ``(D, D, D)`` transform, in Fourier shells.

    ``k`` are ``torch.fft.fftfreq``'s integer frequencies (Nyquist at ``-D/2`` for even ``D``, the
    same radius as ``+D/2``); float64 on ``device``. ``round(|k|)`` is the shell of a frequency
    (``|k|`` is never a half-integer).
    """
    k = (torch.fft.fftfreq(d, device=device, dtype=torch.float64) * d) ** 2  # (D,) squared
    return torch.sqrt(k[:, None, None] + k[None, :, None] + k[None, None, :])


def padded_size(d: int, pad_factor: float) -> int:
    """RELION's padded box: ``round(pad_factor · D)``, made even."""
    p = int(round(pad_factor * d))
    return p + p % 2


def centred_half_spectrum(vol: torch.Tensor, pad_factor: float, gridding_correction: bool) -> torch.Tensor:
    """Oversampled half spectrum of the volume, ready for slicing.

    Parameters
    ----------
    vol : (D, D, D) real volume, ``[z, y, x]``, origin at ``D // 2``.
    pad_factor : oversampling; the padded box is :func:`padded_size`.
    gridding_correction : divide by ``sinc²(r / P)`` first, as RELION's ``griddingCorrect``.

    Returns
    -------
    (P + 1, P + 1, P // 2 + 1) complex: ``F[kz + P/2, ky + P/2, kx] = Σ_r V(r) exp(-2πi k·r / P)``
    for ``-P/2 <= kz, ky <= P/2`` and ``0 <= kx <= P/2``, zero beyond RELION's radius
    ``round((D // 2) · P / D)``.
    """
    d = vol.shape[0]
    p = padded_size(d, pad_factor)
    if gridding_correction:
        r = (torch.arange(d, device=vol.device, dtype=torch.float64) - d // 2) ** 2
        r = torch.sqrt(r[:, None, None] + r[None, :, None] + r[None, None, :])  # (D, D, D) voxels
        vol = vol / (torch.sinc(r / p) ** 2).to(vol.dtype)
    lo = p // 2 - d // 2
    hi = p - d - lo
    padded = F.pad(vol, (lo, hi, lo, hi, lo, hi))  # (P, P, P), origin at P // 2
    padded = torch.roll(padded, shifts=(-(p // 2),) * 3, dims=(0, 1, 2))  # origin at the corner
    spectrum = torch.fft.rfftn(padded, dim=(0, 1, 2))  # (P, P, P // 2 + 1)
    spectrum = torch.fft.fftshift(spectrum, dim=(0, 1))  # kz, ky from -P/2 at index 0
    # The DFT is periodic: append the -P/2 planes again as +P/2 so both Nyquist planes are present.
    spectrum = torch.cat((spectrum, spectrum[:1]), dim=0)
    spectrum = torch.cat((spectrum, spectrum[:, :1]), dim=1)  # (P + 1, P + 1, P // 2 + 1)
    k = torch.arange(p + 1, device=vol.device) - p // 2
    kx = torch.arange(p // 2 + 1, device=vol.device)
    r2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2
    r_max = int(round((d // 2) * p / d))
    return spectrum * (r2 <= r_max * r_max)


def slice_frequencies(d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The half-plane frequencies RELION fills, and where they go in an ``rfft2`` array.

    Returns
    -------
    k : (M, 2) integer frequencies ``(k_x, k_y)`` with ``k_x >= 0`` and ``|k| <= D // 2``.
    flat : (M,) their flat indices in a ``(D, D // 2 + 1)`` half spectrum.
    """
    half = d // 2 + 1
    ky = signed_frequencies(d, device)[:, None].expand(d, half)  # (D, half)
    kx = torch.arange(half, device=device)[None, :].expand(d, half)
    keep = (kx**2 + ky**2 <= (d // 2) ** 2).reshape(-1)
    k = torch.stack((kx.reshape(-1), ky.reshape(-1)), dim=-1)[keep]  # (M, 2)
    flat = torch.arange(d * half, device=device)[keep]
    return k, flat


def trilinear_half(spectrum: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of a centred half spectrum (see :func:`centred_half_spectrum`).

    Points with ``x < 0`` are read at ``-coords`` and conjugated (Friedel symmetry of a real
    volume), as RELION's ``Projector::project`` does. Corners outside the array count as zero.

    Parameters
    ----------
    spectrum : (Q, Q, H) complex, ``[kz, ky, kx]``, ``kz, ky`` centred at ``Q // 2``.
    coords : (..., 3) real ``(x, y, z)`` frequency coordinates in padded-grid units.

    Returns
    -------
    (...) complex interpolated values.
    """
    p, _, h = spectrum.shape  # p = P + 1 is odd: its centre p // 2 = P / 2
    flat = spectrum.reshape(-1)
    x, y, z = coords.unbind(-1)
    flip = x < 0
    sign = 1.0 - 2.0 * flip.to(coords.dtype)
    x, y, z = x * sign, y * sign, z * sign
    x0f, y0f, z0f = torch.floor(x), torch.floor(y), torch.floor(z)
    fx, fy, fz = x - x0f, y - y0f, z - z0f
    x0 = x0f.long()
    y0 = y0f.long() + p // 2
    z0 = z0f.long() + p // 2
    out = None
    for dz, wz in ((0, 1 - fz), (1, fz)):
        zi = z0 + dz
        z_ok = (zi >= 0) & (zi < p)
        zi = zi.clamp(0, p - 1)
        for dy, wy in ((0, 1 - fy), (1, fy)):
            yi = y0 + dy
            zy_ok = z_ok & (yi >= 0) & (yi < p)
            zy = (zi * p + yi.clamp(0, p - 1)) * h
            for dx, wx in ((0, 1 - fx), (1, fx)):
                xi = x0 + dx
                ok = zy_ok & (xi < h)
                w = wz * wy * wx * ok
                term = flat[zy + xi.clamp(max=h - 1)] * w
                out = term if out is None else out + term
    return torch.complex(out.real, out.imag * sign)
