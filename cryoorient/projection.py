"""Forward model of the paper's data: projections of a density map, shifts, noise and the CTF.

Conventions, pinned against RELION's source (``3dem/relion``) so that images made here and a STAR
file written with the same ``(rot, tilt, psi)`` and origins mean the same thing in RELION:

Geometry
    Volumes are ``(D, D, D)`` cubes indexed ``[z, y, x]``, images ``(D, D)`` indexed ``[y, x]``; the
    origin is index ``D // 2`` on every axis, also for even ``D`` (RELION's ``setXmippOrigin``).
    A projection at rotation ``A`` (:func:`cryoorient.geometry.euler_to_matrix`, which maps volume
    coordinates to image coordinates) is the line sum with unit step
    ``p(x, y) = Σ_z V(A^T (x, y, z)^T)`` in voxel units, so a feature at volume position ``u``
    lands at image position ``(A u)[:2]`` and ``Σ p = Σ V``. ASPIRE's ``Volume.project`` takes
    ``R = A^T`` for the same images (and returns them divided by ``D``).
Projector
    As ``relion_project`` (``src/projector.cpp``, ``Projector::computeFourierTransformMap`` and
    ``Projector::project``): the map is divided by the gridding correction ``sinc²(r / (pad D))``
    (``griddingCorrect``, on by default), zero-padded to ``pad D`` (made even), Fourier transformed
    once with its origin moved to the corner, then every image's central slice is sampled with
    trilinear interpolation at ``pad · A^T (k_x, k_y, 0)``. Only frequencies with
    ``k_x² + k_y² <= (D // 2)²`` are kept (RELION's ``r_max``), the slice is inverse transformed
    with ``1 / D²`` and the origin moved back to ``D // 2`` (``CenterFFT``). The Fourier-slice
    theorem makes this equal to the line sum above up to interpolation error: about 2.5-4 % (relative
    L2 per image) at ``pad = 2`` for a smooth map, 1 % at ``pad = 4``. The gridding correction
    makes ``Σ p = Σ V / sinc²(r / (pad D))``, a few % above ``Σ V``. One detail differs from RELION
    on purpose: both Nyquist planes ``±pad D / 2`` of the padded grid hold the (periodic) transform,
    where RELION leaves ``-pad D / 2`` empty; this touches only the outermost ring ``|k| ≈ D / 2``.
Shifts
    ``shifts`` are RELION origins ``(rlnOriginX, rlnOriginY)`` in pixels
    (``rlnOriginXAngst / pixel size``). ``relion_project`` (``src/apps/project.cpp``) calls
    ``shiftImageInFourierTransform(F2D, F2D, D, -xoff, -yoff)``, and that function
    (``src/fftw.cpp``) multiplies ``F(k)`` by ``exp(-2πi k·t / D)`` for a shift ``t``, i.e. moves the
    image content by ``+t``. So an origin ``s`` moves the projected particle by ``-s``:
    ``p_s(x) = p(x + s)``, and the particle centre sits at pixel ``D // 2 - s``. (RELION re-centres
    an image by translating it by ``+s``.)
CTF
    RELION's ``CTF::getCTF`` (``src/ctf.h``, ``src/ctf.cpp``)::

        λ = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))         (Å, V in volts)
        Δf(φ) = -(ΔfU + ΔfV)/2 - (ΔfU - ΔfV)/2 · cos 2(φ - φ_astig)
        γ = π λ Δf(φ) u² + (π/2) Cs λ³ u⁴ - phase_shift - atan(Q0 / sqrt(1 - Q0²))
        CTF = -sin(γ) · exp(-B u² / 4)

    with ``u`` in 1/Å, ``Cs`` in Å (mm · 1e7), defocus positive for underfocus. At ``u = 0`` it is
    ``sin(phase_shift + atan(Q0 / sqrt(1 - Q0²)))``, i.e. ``+Q0`` without a phase plate; without
    ``Cs`` and ``Q0`` the first zero is at ``u = 1 / sqrt(λ Δf)``.
FFT layout
    Every Fourier-space array here is *unshifted* (origin at ``[0, 0]``, as :func:`torch.fft.fft2`
    returns it; use :func:`torch.fft.fftshift` to display). Real images are transformed with
    ``rfft2``/``irfft2`` like RELION's half transforms; for even sizes the Nyquist row is taken at
    ``+D/2`` as RELION does.

Noise
    We normalise clean projections to unit variance over the dataset (:func:`normalize_images`)
    and add white Gaussian noise of variance ``σ²``; ``SNR = 1 / σ²`` and ``snr_db = 10 log10 SNR``
    (``σ² = 16`` is ``-12.04`` dB). The paper's authors added theirs to the raw projections and
    standardised afterwards, so their σ² is in other units: :mod:`cryoorient.snr` matches the two.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from cryoorient._checks import (
    Device,
    check_images,
    check_rotations,
    check_shifts,
    check_volume,
    resolve_device,
)
from cryoorient._fourier import (
    centred_half_spectrum,
    signed_frequencies,
    slice_frequencies,
    trilinear_half,
)

__all__ = [
    "add_noise",
    "apply_ctf",
    "ctf_2d",
    "noise_variance",
    "normalize_images",
    "project",
    "sample_defocus",
    "rotate_images",
    "sample_shifts",
    "shift_images",
    "snr_db",
]


def project(
    volume: torch.Tensor | np.ndarray,
    rotations: torch.Tensor | np.ndarray,
    shifts: torch.Tensor | np.ndarray | None = None,
    *,
    pad_factor: float = 2,
    batch_size: int = 256,
    gridding_correction: bool = True,
    device: Device = None,
) -> torch.Tensor:
    """Projections of a volume by the Fourier-slice method, as ``relion_project`` makes them.

    Parameters
    ----------
    volume : (D, D, D) density, indexed ``[z, y, x]``, origin at index ``D // 2``.
    rotations : (N, 3, 3) RELION matrices ``A`` (:func:`cryoorient.geometry.euler_to_matrix`),
        mapping volume coordinates to image coordinates.
    shifts : (N, 2) RELION origins ``(rlnOriginX, rlnOriginY)`` in pixels, or ``None`` for none.
        The projected particle moves by ``-shifts`` (its centre lands at ``D // 2 - shift``); see
        the module docstring for the RELION source this sign comes from.
    pad_factor : oversampling of the 3-D Fourier transform (``>= 1``; RELION's ``--pad``, default
        2). The padded box is ``round(pad_factor · D)`` made even.
    batch_size : images interpolated at once; the temporaries take roughly
        ``batch_size · D² · 100`` bytes, besides the ``(pad D)³ / 2`` complex spectrum
        (8 bytes each: 100 MB for ``D = 116``).
    gridding_correction : divide the map by ``sinc²(r / (pad D))`` before transforming, as
        ``relion_project`` does; turn off to get the bare interpolated central slices.
    device : where to compute; ``None`` means CUDA when available, else CPU. The result is
        returned on the volume's device.

    Returns
    -------
    (N, D, D) float32 images ``[y, x]``: ``p(x, y) ≈ Σ_z V(A^T (x, y, z))`` in voxel units
    (the line sum with unit step; ``Σ p = Σ V`` exactly without the gridding correction, and
    ``Σ V / sinc²(r / (pad D))`` with it). Differentiable with respect to ``volume``.

    Raises
    ------
    ValueError
        For a non-cube or non-finite volume, rotations not ``(N, 3, 3)``, shifts not ``(N, 2)``,
        ``pad_factor < 1`` or ``batch_size < 1``.
    """
    vol = check_volume(volume)
    rot = check_rotations(rotations)
    n = rot.shape[0]
    sh = None if shifts is None else check_shifts(shifts, n)
    if not pad_factor >= 1:
        raise ValueError(f"pad_factor must be >= 1; got {pad_factor!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    out_device = vol.device
    dev = resolve_device(device)
    d = vol.shape[0]
    half = d // 2 + 1

    spectrum = centred_half_spectrum(vol.to(dev, torch.float32), pad_factor, gridding_correction)
    scale = (spectrum.shape[0] - 1) / d  # effective padding factor
    k, flat = slice_frequencies(d, dev)  # (M, 2), (M,)
    kf = k.to(torch.float64)
    images = []
    for start in range(0, n, int(batch_size)):
        a = rot[start : start + int(batch_size)].to(dev, torch.float64)  # (B, 3, 3)
        b = a.shape[0]
        # A^T (kx, ky, 0) = kx A[0, :] + ky A[1, :], in padded-grid units
        coords = (scale * kf @ a[:, :2, :]).to(torch.float32)  # (B, M, 3)
        values = trilinear_half(spectrum, coords)  # (B, M)
        if sh is not None:
            s = sh[start : start + b].to(dev, torch.float64)  # (B, 2)
            # RELION: shiftImageInFourierTransform(F, F, D, -s) multiplies by exp(+2πi k·s / D)
            phase = (2 * math.pi / d) * (s @ kf.T)  # (B, M)
            values = values * torch.polar(torch.ones_like(phase), phase).to(values.dtype)
        buffer = values.new_zeros(b, d * half)
        buffer[:, flat] = values
        image = torch.fft.irfft2(buffer.view(b, d, half), s=(d, d))  # origin at the corner
        images.append(torch.fft.fftshift(image, dim=(-2, -1)))  # origin at D // 2
    if not images:
        return torch.zeros(0, d, d, dtype=torch.float32, device=out_device)
    return torch.cat(images).to(out_device)


def shift_images(images: torch.Tensor | np.ndarray, shifts: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Translate images by a Fourier phase ramp, with RELION's origin sign.

    ``out(x) = images(x + s)``: the content moves by ``-s``, exactly as :func:`project` applies its
    ``shifts`` (RELION origins). Sub-pixel and periodic (what leaves one edge enters the other).
    For even sizes the Nyquist row and column are handled as RELION does (real part kept), so a
    non-integer round trip ``+s`` then ``-s`` damps only the Nyquist components.

    Parameters
    ----------
    images : (N, H, W) images ``[y, x]``.
    shifts : (N, 2) origins ``(x, y)`` in pixels.

    Returns
    -------
    (N, H, W) shifted images, same dtype and device as ``images``.
    """
    img = check_images(images)
    if img.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W); got {tuple(img.shape)}")
    n, h, w = img.shape
    sh = check_shifts(shifts, n).to(img.device, torch.float64)
    ky = signed_frequencies(h, img.device).to(torch.float64) / h  # (H,) cycles per pixel
    kx = torch.arange(w // 2 + 1, device=img.device, dtype=torch.float64) / w  # (W // 2 + 1,)
    phase = (
        2 * math.pi * (sh[:, 0, None, None] * kx + sh[:, 1, None, None] * ky[:, None])
    )  # (N, H, W // 2 + 1)
    spectrum = torch.fft.rfft2(img)  # (N, H, W // 2 + 1)
    ramp = torch.polar(torch.ones_like(phase), phase).to(spectrum.dtype)
    return torch.fft.irfft2(spectrum * ramp, s=(h, w)).to(img.dtype)


def rotate_images(images: torch.Tensor | np.ndarray, angles: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Rotate images in-plane about their centre pixel ``(N // 2, N // 2)``, bilinearly.

    Rotating by ``δ`` gives the projection at the same ``rot`` and ``tilt`` and at ``psi + δ``
    (RELION's convention; see :func:`cryoorient.geometry.rotate_in_plane`), so the rotated images
    and their updated orientations are new, exact training examples, up to interpolation and
    the corners (filled with zero). Quarter turns are exact.

    Parameters
    ----------
    images : (N, H, W) images ``[y, x]``, square.
    angles : (N,) in-plane angles ``δ``, radians.

    Returns
    -------
    (N, H, W) rotated images, same dtype and device as ``images``.
    """
    img = check_images(images)
    if img.ndim != 3 or img.shape[1] != img.shape[2]:
        raise ValueError(f"images must have shape (N, D, D); got {tuple(img.shape)}")
    n, d, _ = img.shape
    angle = torch.as_tensor(angles, dtype=torch.float64, device=img.device)
    if angle.shape != (n,):
        raise ValueError(f"expected ({n},) angles; got {tuple(angle.shape)}")
    # output pixel (y, x) reads input at R(δ)ᵀ-rotated coordinates about the centre c = d // 2
    c = d // 2
    coords = torch.arange(d, dtype=torch.float64, device=img.device) - c
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    src_x = cos * x - sin * y + c
    src_y = sin * x + cos * y + c
    # grid_sample's normalised coordinates (align_corners=True): -1 at pixel 0, +1 at pixel d - 1
    grid = torch.stack((src_x, src_y), dim=-1) * (2.0 / (d - 1)) - 1.0
    dtype = img.dtype if img.is_floating_point() else torch.float32
    out = F.grid_sample(
        img[:, None].to(dtype), grid.to(dtype), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out[:, 0].to(img.dtype)


def sample_shifts(n: int, limit: float, seed: int | np.random.Generator = 0) -> torch.Tensor:
    """Random in-plane shifts, each coordinate triangular on ``[-limit, limit]`` with mode 0.

    The paper's "triangular with limits ±t px". Use the result as RELION origins (``shifts`` of
    :func:`project`).

    Parameters
    ----------
    n : number of shifts (``>= 0``).
    limit : half-width ``t`` in pixels (``>= 0``; 0 gives no shift).
    seed : an integer seed or a :class:`numpy.random.Generator` (consumed in place).

    Returns
    -------
    (n, 2) float32 shifts ``(x, y)`` in pixels, on the CPU.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    if not (math.isfinite(limit) and limit >= 0):
        raise ValueError(f"limit must be a finite number >= 0; got {limit!r}")
    rng = np.random.default_rng(seed)
    if limit == 0:
        return torch.zeros(int(n), 2, dtype=torch.float32)
    draws = rng.triangular(-limit, 0.0, limit, size=(int(n), 2))
    return torch.from_numpy(draws).to(torch.float32)


def normalize_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Scale a stack to zero mean and unit variance over the whole dataset.

    One mean and one standard deviation (population, over every pixel of every image), so the
    relative intensities of the images are kept. We normalise the clean projections this way
    before adding noise of variance ``σ²`` (the paper's authors standardised after adding theirs).

    Parameters
    ----------
    images : (..., H, W) images.

    Returns
    -------
    (..., H, W) ``(images - mean) / std``, same dtype and device.

    Raises
    ------
    ValueError
        For a constant stack (zero variance) or non-finite values.
    """
    img = check_images(images)
    std, mean = torch.std_mean(img.to(torch.float64), correction=0)
    if not std > 0:
        raise ValueError(f"cannot normalise a stack of zero variance (constant value {mean.item():g})")
    return ((img - mean.to(img.dtype)) / std.to(img.dtype)).to(img.dtype)


def noise_variance(snr_db: float) -> float:
    """Noise variance ``σ² = 10^(-snr_db / 10)`` for unit-variance signal.

    Parameters
    ----------
    snr_db : signal-to-noise ratio ``10 log10(1 / σ²)`` in decibels.
    """
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite; got {snr_db!r}")
    return 10.0 ** (-snr_db / 10.0)


def snr_db(variance: float) -> float:
    """Signal-to-noise ratio in decibels, ``10 log10(1 / σ²)``, for unit-variance signal.

    Parameters
    ----------
    variance : noise variance ``σ²`` (``> 0``); ``σ² = 16`` gives ``-12.04`` dB.
    """
    if not (math.isfinite(variance) and variance > 0):
        raise ValueError(f"variance must be a finite number > 0; got {variance!r}")
    return -10.0 * math.log10(variance)


def add_noise(
    images: torch.Tensor | np.ndarray,
    *,
    variance: float | None = None,
    snr_db: float | None = None,
    seed: int | np.random.Generator | torch.Generator = 0,
) -> torch.Tensor:
    """Add white Gaussian noise of a given variance or SNR.

    ``σ²`` and the SNR are relative to unit-variance clean images: call :func:`normalize_images`
    first (``SNR = 1 / σ²``); the paper's σ² is in other units (:mod:`cryoorient.snr`).

    Parameters
    ----------
    images : (..., H, W) clean images.
    variance : noise variance ``σ² >= 0`` (0 adds nothing).
    snr_db : or the SNR in decibels, ``σ² = 10^(-snr_db / 10)``. Give exactly one of the two.
    seed : an integer seed or a :class:`numpy.random.Generator` (NumPy draws the noise), or a CPU
        :class:`torch.Generator` (torch draws it); a generator is consumed in place. The noise is
        drawn on the CPU, so a seed gives the same noise on every device.

    Returns
    -------
    (..., H, W) noisy images, same dtype and device as ``images``.
    """
    if (variance is None) == (snr_db is None):
        raise ValueError(f"give exactly one of variance or snr_db; got {variance=!r}, {snr_db=!r}")
    if variance is None:
        variance = noise_variance(snr_db)
    if not (math.isfinite(variance) and variance >= 0):
        raise ValueError(f"noise variance must be a finite number >= 0; got {variance!r}")
    img = check_images(images)
    if isinstance(seed, torch.Generator):
        noise = torch.randn(img.shape, generator=seed, dtype=img.dtype)
    else:
        rng = np.random.default_rng(seed)
        noise = torch.from_numpy(rng.standard_normal(tuple(img.shape), dtype=np.float32)).to(img.dtype)
    return img + math.sqrt(variance) * noise.to(img.device)


def _electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å (RELION's ``CTF::initialise``)."""
    volts = voltage_kv * 1e3
    return 12.2643247 / math.sqrt(volts * (1.0 + volts * 0.978466e-6))


def ctf_2d(
    box_size: int,
    pixel_size: float,
    *,
    defocus_u: float | torch.Tensor,
    defocus_v: float | torch.Tensor | None = None,
    astigmatism_angle: float | torch.Tensor = 0.0,
    voltage: float = 300.0,
    spherical_aberration: float = 2.7,
    amplitude_contrast: float = 0.1,
    phase_shift: float | torch.Tensor = 0.0,
    b_factor: float | torch.Tensor = 0.0,
    device: Device = None,
) -> torch.Tensor:
    """RELION's contrast transfer function on the full, unshifted 2-D frequency grid.

    See the module docstring for the formula (``CTF::getCTF``). Its value at zero frequency is
    ``sin(phase_shift + atan(Q0 / sqrt(1 - Q0²)))``, i.e. ``+amplitude_contrast`` without a phase
    plate; ``|CTF| <= 1``.

    Parameters
    ----------
    box_size : image size ``D`` in pixels.
    pixel_size : Å per pixel.
    defocus_u : defocus along the direction ``astigmatism_angle`` in Å, positive for underfocus
        (``rlnDefocusU``); a float or a tensor of any leading shape ``(...)``.
    defocus_v : defocus perpendicular to it (``rlnDefocusV``); ``defocus_u`` when omitted.
    astigmatism_angle : angle from the x axis to the U direction, in radians
        (``rlnDefocusAngle`` is in degrees).
    voltage : acceleration voltage in kV.
    spherical_aberration : ``Cs`` in mm.
    amplitude_contrast : ``Q0`` in ``[0, 1)``.
    phase_shift : phase-plate shift in radians (``rlnPhaseShift`` is in degrees).
    b_factor : envelope ``exp(-B u² / 4)`` in Å².
    device : where to build the grid; ``None`` means the device of a tensor argument, else CUDA
        when available, else CPU.

    Returns
    -------
    (..., D, D) float32 CTF ``[k_y, k_x]`` in the unshifted layout of :func:`torch.fft.fft2`
    (``[0, 0]`` is zero frequency, frequencies ``torch.fft.fftfreq(D, pixel_size)`` except that
    for even ``D`` the Nyquist bin is taken at ``+1 / (2 pixel_size)``, as RELION does), where
    ``(...)`` is the broadcast shape of the tensor parameters.
    """
    if int(box_size) != box_size or box_size < 1:
        raise ValueError(f"box_size must be a positive integer; got {box_size!r}")
    if not pixel_size > 0:
        raise ValueError(f"pixel_size must be > 0 Å; got {pixel_size!r}")
    if not voltage > 0:
        raise ValueError(f"voltage must be > 0 kV; got {voltage!r}")
    if not 0 <= amplitude_contrast < 1:
        raise ValueError(f"amplitude_contrast must be in [0, 1); got {amplitude_contrast!r}")
    if defocus_v is None:
        defocus_v = defocus_u
    params = (defocus_u, defocus_v, astigmatism_angle, phase_shift, b_factor)
    if device is None:
        device = next((p.device for p in params if isinstance(p, torch.Tensor)), None)
    dev = resolve_device(device)
    du, dv, angle, shift, bfac = torch.broadcast_tensors(
        *(torch.as_tensor(p, dtype=torch.float64, device=dev) for p in params)
    )
    if not all(torch.isfinite(t).all() for t in (du, dv, angle, shift, bfac)):
        raise ValueError("CTF parameters contain NaN or infinite values")
    d = int(box_size)
    lam = _electron_wavelength(voltage)
    k1 = math.pi * lam
    k2 = math.pi / 2 * (spherical_aberration * 1e7) * lam**3
    k3 = math.atan(amplitude_contrast / math.sqrt(1 - amplitude_contrast**2))
    freq = signed_frequencies(d, dev).to(torch.float64) / (d * pixel_size)  # (D,) 1/Å, RELION's bins
    fy, fx = freq[:, None], freq[None, :]
    u2 = fx**2 + fy**2  # (D, D)
    azimuth = torch.atan2(fy, fx)  # (D, D); at the origin u2 = 0 so Δf does not matter
    e = (...,) + (None, None)
    average = -(du + dv)[e] / 2
    deviation = -(du - dv)[e] / 2
    deltaf = average + deviation * torch.cos(2 * (azimuth - angle[e]))  # (..., D, D)
    gamma = k1 * deltaf * u2 + k2 * u2**2 - shift[e] - k3
    ctf = -torch.sin(gamma) * torch.exp(-bfac[e] / 4 * u2)
    return ctf.to(torch.float32)


def apply_ctf(images: torch.Tensor | np.ndarray, ctf: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Multiply images by a CTF in Fourier space.

    Parameters
    ----------
    images : (..., H, W) real images ``[y, x]``. A CTF is a real, even filter (a convolution),
        so the result does not depend on where the image origin is.
    ctf : (..., H, W) CTF in the unshifted layout of :func:`ctf_2d`; broadcasts against
        ``images`` (one CTF for a stack, or one per image).

    Returns
    -------
    (..., H, W) ``Re(ifft2(fft2(images) · ctf))``, in the images' dtype, on their device.
    """
    img = check_images(images)
    c = check_images(ctf, "ctf").to(img.device)
    if tuple(c.shape[-2:]) != tuple(img.shape[-2:]):
        raise ValueError(f"ctf grid {tuple(c.shape[-2:])} does not match images {tuple(img.shape[-2:])}")
    spectrum = torch.fft.fft2(img)
    return torch.fft.ifft2(spectrum * c).real.to(img.dtype)


def sample_defocus(
    n: int,
    low: float = 10000.0,
    high: float = 25000.0,
    seed: int | np.random.Generator = 0,
) -> torch.Tensor:
    """Defocus values drawn uniformly in ``[low, high)`` Å (1.0–2.5 µm underfocus by default).

    Parameters
    ----------
    n : number of values (``>= 0``).
    low, high : range in Å, ``low <= high`` (positive is underfocus, as in RELION).
    seed : an integer seed or a :class:`numpy.random.Generator` (consumed in place).

    Returns
    -------
    (n,) float32 defocus values in Å, on the CPU.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"need finite low <= high; got low={low!r}, high={high!r}")
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(low, high, int(n))).to(torch.float32)
