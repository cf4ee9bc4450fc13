"""Reconstruction of a density map from projections and orientations.

Forward model
    The reconstruction inverts the forward model of :mod:`cryoorient.projection`, with its
    conventions: volumes ``(D, D, D)`` indexed ``[z, y, x]``, images ``(N, D, D)`` indexed
    ``[n, y, x]``, origin at index ``D // 2``, rotations are RELION matrices ``A``
    (:func:`cryoorient.geometry.euler_to_matrix`, :func:`cryoorient.geometry.quaternion_to_matrix`),
    shifts are RELION origins in pixels, CTFs are 2-D arrays in the unshifted layout of
    :func:`cryoorient.projection.ctf_2d`. The operator is
    ``images = apply_ctf(project(V, rotations, shifts, gridding_correction=g), ctf)``.

    The gridding correction ``g`` is *on* by default, as in :func:`~cryoorient.projection.project`:
    it makes the trilinear slice interpolation approximate the line integral of a continuous
    object (without it the projections are those of ``V`` times roughly ``sinc²(r / P)``, ``P`` the
    padded box), so it is the better model of real images, and the simulated datasets are made
    with it. Both solvers use the same ``g``: conjugate gradients call
    ``project(..., gridding_correction=g)``, and the Fourier solver divides its result by the
    factor its Fourier-space averaging leaves (below). Pass ``gridding_correction=False`` only for
    images made without it.

Solvers
    ``"fourier"``: direct Fourier inversion, as RELION's ``BackProjector`` without its iterative
    weight refinement. Each image's half transform (times its CTF ``c``, with its shift undone) is
    inserted into the oversampled 3-D transform at ``P/D · A^T (k_x, k_y, 0)`` with trilinear
    weights ``w`` (the transpose of the projector's interpolation), ``c²`` is accumulated with the
    same weights, and the estimate is ``Σ w c F / max(Σ w c² + λ D² / P³, floor)`` (``λ`` the
    damping; ``floor`` is :data:`WEIGHT_FLOOR` times the mean weight inside the sampled ball, zero
    outside it). This weighted local average is the transform smoothed by the autocorrelation of
    the trilinear kernel, i.e. the map times about ``sinc⁴(r / P)`` in real space, times the
    ``1 / sinc²`` that ``project`` divides by: the result is divided by ``sinc²(r / P)`` (RELION's
    ``griddingCorrect``; by ``sinc⁴`` without the projector's correction). One pass over the data.
    ``"cgls"``: the least-squares solution of ``min ‖A V - b‖² + λ ‖V‖²``, the paper's method
    (ASTRA's CGLS), by conjugate gradients on the normal equations. ``A`` is
    :func:`~cryoorient.projection.project` (then the CTF) and ``A^T`` is its vector-Jacobian
    product from :func:`torch.autograd.grad` (``project`` is linear in the volume, so this is its
    exact transpose). An iteration is one forward and one backward pass over the data. By default
    it starts from the Fourier estimate and is preconditioned by the inverse of the same weights,
    ``M⁻¹ = crop F⁻¹ diag(D² / (P³ max(Σ w c² + λ D² / P³, floor))) F pad`` (between two factors
    ``1 / sinc²`` without the projector's correction), symmetric positive definite, an
    approximation of ``(A^T A + λ)⁻¹``. On the benchmark (``benchmarks/README.md``) the default
    meets ``tol = 1e-4`` in 9 iterations, where plain CGLS from zero has not after 20.
    ``precondition=False, initial=None`` is plain CGLS from zero. The data residual
    ``‖b - A V_k‖`` (with damping, ``‖b - A V_k‖² + λ ‖V_k‖²``) decreases at every iteration;
    iterations stop at ``n_iterations`` or when the normal-equation residual falls below ``tol``.
    With noisy data and no damping, the iteration count is the regulariser (CGLS fits the noise
    as it converges): keep it small, or set ``damping``.

Orientation frame
    Orientations recovered from distances are defined only up to a global ``O(4)`` transform of
    the quaternions (a global rotation of the volume, or its mirror image). This module takes
    rotations as given: align recovered orientations to a reference first
    (``cryoorient.alignment.align_orientations``) before comparing a reconstruction with a
    ground-truth map by FSC (:mod:`cryoorient.fsc`), or the FSC measures the misalignment rather
    than the reconstruction.

The resolution of a map (FSC) is :mod:`cryoorient.fsc`. The module takes arrays only: a RELION
particle set is reconstructed with :func:`cryoorient.relion.reconstruct_particles`, which passes
its images, angles, shifts and CTF here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cryoorient._checks import (
    Device,
    check_images,
    check_positive_int,
    check_rotations,
    check_shifts,
    resolve_device,
)
from cryoorient._fourier import padded_size, slice_frequencies
from cryoorient.projection import apply_ctf, project

__all__ = [
    "RECONSTRUCTION_METHODS",
    "WEIGHT_FLOOR",
    "ReconstructionResult",
    "reconstruct",
]

RECONSTRUCTION_METHODS = ("cgls", "fourier")
#: Fourier-space weights are floored at this fraction of their mean inside the sampled ball, so
#: that grid points touched only by the far tail of a trilinear kernel are not amplified.
WEIGHT_FLOOR = 1e-3


@dataclass
class ReconstructionResult:
    """A reconstructed map and how it was obtained.

    Attributes
    ----------
    volume : (D, D, D) float32 map ``[z, y, x]``, origin at ``D // 2``, on the images' device.
    residuals : relative data residuals ``‖b - A V_k‖ / ‖b‖``, one per iterate from the initial
        guess ``V_0`` on (a single value for the Fourier method).
    normal_residuals : relative normal-equation residuals ``‖A^T (b - A V_k) - λ V_k‖ / ‖A^T b‖``
        (what the stopping rule tests; empty for the Fourier method).
    iterations : conjugate-gradient iterations run (0 for the Fourier method).
    converged : whether the stopping rule ``normal_residuals[-1] <= tol`` was met (always ``True``
        for the Fourier method, which is direct).
    seconds : wall-clock time of the reconstruction.
    method : ``"cgls"`` or ``"fourier"``.
    """

    volume: torch.Tensor
    residuals: list[float]
    normal_residuals: list[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = True
    seconds: float = 0.0
    method: str = "fourier"


# --- input checks ------------------------------------------------------------------------------------


def _check_stack(images, rotations, shifts, ctf):
    """Validated ``(images, rotations, shifts, ctf)`` tensors (shifts and ctf may be ``None``)."""
    img = check_images(images)
    if img.ndim != 3 or img.shape[1] != img.shape[2]:
        raise ValueError(f"images must be a stack of square images (N, D, D); got shape {tuple(img.shape)}")
    n, d = img.shape[0], img.shape[1]
    if n < 1 or d < 2:
        raise ValueError(f"need at least one image of at least 2 × 2 pixels; got shape {tuple(img.shape)}")
    rot = check_rotations(rotations)
    if rot.shape[0] != n:
        raise ValueError(f"got {rot.shape[0]} rotations for {n} images")
    sh = None if shifts is None else check_shifts(shifts, n)
    c = None
    if ctf is not None:
        c = check_images(ctf, "ctf")
        if c.ndim == 2:
            c = c.expand(n, *c.shape)
        if tuple(c.shape) != (n, d, d):
            raise ValueError(
                f"ctf must have shape ({n}, {d}, {d}) (one per image) or ({d}, {d}); got {tuple(c.shape)}"
            )
    return img, rot, sh, c


# --- Fourier-space geometry --------------------------------------------------------------------------


def _gridding_factor(d: int, p: int, device: torch.device) -> torch.Tensor:
    """``sinc²(r / P)`` on the ``(D, D, D)`` grid (origin ``D // 2``), float64: ``project``'s divisor."""
    r = (torch.arange(d, device=device, dtype=torch.float64) - d // 2) ** 2
    r = torch.sqrt(r[:, None, None] + r[None, :, None] + r[None, None, :])
    return torch.sinc(r / p) ** 2


def _ball(p: int, device: torch.device, d: int) -> torch.Tensor:
    """Mask of the centred ``(P, P, P // 2 + 1)`` half grid inside ``project``'s radius."""
    k = torch.arange(p, device=device) - p // 2
    kx = torch.arange(p // 2 + 1, device=device)
    r2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2
    r_max = int(round((d // 2) * p / d))
    return r2 <= r_max * r_max


def _insert(
    num: torch.Tensor,
    den: torch.Tensor,
    q: int,
    coords: torch.Tensor,
    values: torch.Tensor,
    weights: torch.Tensor,
) -> None:
    """Add samples into a centred half grid with trilinear weights (transpose of the projector's read).

    Parameters
    ----------
    num : (Q * Q * H,) complex accumulator, flat view of ``[kz, ky, kx]``, ``kz, ky`` centred at
        ``Q // 2``; ``weight · value`` is added.
    den : (Q * Q * H,) real accumulator; ``weight · weights`` is added.
    q : the grid's ``Q`` (odd; ``H = den.numel() / Q²``).
    coords : (..., 3) real ``(x, y, z)`` coordinates in padded-grid units.
    values : (...) complex samples; points with ``x < 0`` are stored at ``-coords``, conjugated.
    weights : (...) real sample weights (squared CTF times the half-plane weight).
    """
    h = den.numel() // (q * q)
    x, y, z = coords.unbind(-1)
    flip = x < 0
    sign = 1.0 - 2.0 * flip.to(coords.dtype)
    x, y, z = x * sign, y * sign, z * sign
    values = torch.where(flip, values.conj(), values)
    x0f, y0f, z0f = torch.floor(x), torch.floor(y), torch.floor(z)
    fx, fy, fz = x - x0f, y - y0f, z - z0f
    x0 = x0f.long()
    y0 = y0f.long() + q // 2
    z0 = z0f.long() + q // 2
    for dz, wz in ((0, 1 - fz), (1, fz)):
        zi = z0 + dz
        z_ok = (zi >= 0) & (zi < q)
        for dy, wy in ((0, 1 - fy), (1, fy)):
            yi = y0 + dy
            zy_ok = z_ok & (yi >= 0) & (yi < q)
            zy = (zi.clamp(0, q - 1) * q + yi.clamp(0, q - 1)) * h
            for dx, wx in ((0, 1 - fx), (1, fx)):
                xi = x0 + dx
                w = wz * wy * wx * (zy_ok & (xi < h))
                index = (zy + xi.clamp(max=h - 1)).reshape(-1)
                num.index_add_(0, index, (w * values).reshape(-1))
                den.index_add_(0, index, (w * weights).reshape(-1))


def _fold_half_grid(grid: torch.Tensor, conjugate: bool) -> torch.Tensor:
    """``(P + 1, P + 1, H)`` centred half grid -> ``(P, P, H)``, periodic and Hermitian.

    The ``+P/2`` planes are the periodic copies of ``-P/2`` (index 0) and are added to them. The
    planes ``kx = 0`` and ``kx = P/2`` hold both a frequency and its negative; samples stored at
    one are added (conjugated) to the other, as the full grid would have them.
    """
    p = grid.shape[0] - 1
    out = grid[:p].clone()
    out[0] += grid[p]
    folded = out[:, :p].clone()
    folded[:, 0] += out[:, p]
    mirror = (p - torch.arange(p, device=grid.device)) % p
    for ix in (0, grid.shape[2] - 1):
        plane = folded[:, :, ix]
        partner = plane[mirror][:, mirror]
        folded[:, :, ix] = plane + (partner.conj() if conjugate else partner)
    return folded


def _to_padded_real(half: torch.Tensor, d: int) -> torch.Tensor:
    """Centred ``(P, P, H)`` half transform -> the ``(D, D, D)`` window of its inverse, origin ``D // 2``."""
    p = half.shape[0]
    padded = torch.fft.irfftn(torch.fft.ifftshift(half, dim=(0, 1)), s=(p, p, p), dim=(0, 1, 2))
    padded = torch.roll(padded, shifts=(p // 2,) * 3, dims=(0, 1, 2))  # origin at P // 2
    lo = p // 2 - d // 2
    return padded[lo : lo + d, lo : lo + d, lo : lo + d]


def _from_padded_real(vol: torch.Tensor, p: int) -> torch.Tensor:
    """``(D, D, D)`` volume (origin ``D // 2``) -> centred ``(P, P, H)`` transform of its zero-padding."""
    d = vol.shape[0]
    lo = p // 2 - d // 2
    hi = p - d - lo
    padded = F.pad(vol, (lo, hi, lo, hi, lo, hi))
    padded = torch.roll(padded, shifts=(-(p // 2),) * 3, dims=(0, 1, 2))
    return torch.fft.fftshift(torch.fft.rfftn(padded, dim=(0, 1, 2)), dim=(0, 1))


def _backproject(
    images: torch.Tensor,
    rotations: torch.Tensor,
    shifts: torch.Tensor | None,
    ctf: torch.Tensor | None,
    p: int,
    batch_size: int,
    dev: torch.device,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert every image's transform (times its CTF) and its squared CTF into the padded grid.

    Returns
    -------
    num : (P, P, P // 2 + 1) complex128 ``Σ w c F``, centred in ``kz, ky``.
    den : (P, P, P // 2 + 1) float64 ``Σ w c²``, so that ``num / den`` estimates the transform
        ``project`` samples (of ``V / sinc²`` when the gridding correction is on).
    """
    n, d = images.shape[0], images.shape[-1]
    half = d // 2 + 1
    q = p + 1
    num = torch.zeros(q * q * (p // 2 + 1), dtype=torch.complex128, device=dev)
    den = torch.zeros(q * q * (p // 2 + 1), dtype=torch.float64, device=dev)
    k, flat = slice_frequencies(d, dev)  # (M, 2), (M,)
    kf = k.to(torch.float64)
    # The half plane holds k and -k only on the kx = 0 column (and the Nyquist column): weight
    # them 1/2 so that every Friedel pair counts once, as in the full plane.
    pair = torch.where((k[:, 0] == 0) | (2 * k[:, 0] == d), 0.5, 1.0).to(torch.float64)  # (M,)
    scale = p / d
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="back-projecting", unit="batch", disable=not progress, leave=False):
        part = slice(start, start + batch_size)
        img = images[part].to(dev, torch.float64)  # (B, D, D)
        b = img.shape[0]
        spectrum = torch.fft.rfft2(torch.fft.ifftshift(img, dim=(-2, -1)))  # (B, D, half), origin corner
        values = spectrum.reshape(b, d * half)[:, flat]  # (B, M)
        if shifts is not None:
            s = shifts[part].to(dev, torch.float64)
            phase = (-2 * math.pi / d) * (s @ kf.T)  # undo project's exp(+2πi k·s / D)
            values = values * torch.polar(torch.ones_like(phase), phase)
        weights = pair.expand(b, -1)
        if ctf is not None:
            c = ctf[part].to(dev, torch.float64)[..., :half].reshape(b, d * half)[:, flat]  # (B, M)
            values = values * c
            weights = weights * c * c
        values = values * pair
        a = rotations[part].to(dev, torch.float64)
        coords = scale * kf @ a[:, :2, :]  # (B, M, 3): pad · A^T (kx, ky, 0)
        _insert(num, den, q, coords, values, weights)
    num = _fold_half_grid(num.view(q, q, -1), conjugate=True)
    den = _fold_half_grid(den.view(q, q, -1), conjugate=False)
    return num, den


def _inverse_weights(den: torch.Tensor, d: int, damping: float) -> torch.Tensor:
    """``1 / (den + λ D² / P³)`` inside the ball (floored), 0 outside; see the module docstring."""
    p = den.shape[0]
    inside = _ball(p, den.device, d)
    floor = float(WEIGHT_FLOOR * den[inside].mean())
    if not floor > 0:  # no image carries signal (e.g. CTFs that are zero everywhere)
        return torch.zeros_like(den)
    total = torch.clamp(den + damping * d * d / p**3, min=floor)
    return torch.where(inside, 1.0 / total, torch.zeros_like(total))


# --- solvers -----------------------------------------------------------------------------------------


@dataclass
class _Problem:
    """The data and forward model ``b = A V`` of one reconstruction, split into chunks of images."""

    images: torch.Tensor  # (N, D, D)
    rotations: torch.Tensor  # (N, 3, 3)
    shifts: torch.Tensor | None  # (N, 2)
    ctf: torch.Tensor | None  # (N, D, D)
    pad_factor: float
    gridding_correction: bool
    batch_size: int
    device: torch.device

    @property
    def chunks(self) -> list[slice]:
        n = self.images.shape[0]
        return [slice(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]

    def forward(self, volume: torch.Tensor, part: slice) -> torch.Tensor:
        """``A V`` for the images in ``part``: project (with shifts), then the CTF; differentiable."""
        images = project(
            volume,
            self.rotations[part],
            None if self.shifts is None else self.shifts[part],
            pad_factor=self.pad_factor,
            batch_size=min(self.batch_size, 256),
            gridding_correction=self.gridding_correction,
            device=self.device,
        )
        return images if self.ctf is None else apply_ctf(images, self.ctf[part])

    def data(self, part: slice) -> torch.Tensor:
        return self.images[part].to(self.device, torch.float32)

    def normal(self, volume: torch.Tensor, with_data: bool = False):
        """``A v`` (chunks), ``A^T A v`` and, ``with_data``, ``A^T b``: one forward and backward pass.

        ``project`` is linear in the volume, so the vector-Jacobian product of a chunk's projections
        with respect to the volume is the exact transpose ``A_c^T`` applied to the output gradient.
        """
        ata = torch.zeros_like(volume)
        atb = torch.zeros_like(volume) if with_data else None
        projections = []
        for part in self.chunks:
            leaf = volume.detach().requires_grad_(True)
            q = self.forward(leaf, part)
            if with_data:
                (g,) = torch.autograd.grad(q, leaf, self.data(part), retain_graph=True)
                atb += g
            (g,) = torch.autograd.grad(q, leaf, q.detach())
            ata += g
            projections.append(q.detach())
        return projections, ata, atb

    def relative_residual(self, volume: torch.Tensor) -> float:
        """``‖b - A V‖ / ‖b‖``."""
        squared = 0.0
        with torch.no_grad():
            for part in self.chunks:
                residual = self.data(part) - self.forward(volume, part)
                squared += _inner(residual, residual)
        norm = float(torch.linalg.vector_norm(self.images.double()))
        return math.sqrt(squared) / norm if norm > 0 else 0.0


def _inner(a: torch.Tensor, b: torch.Tensor) -> float:
    """``<a, b>`` accumulated in float64."""
    return float(torch.sum(a.double() * b.double()))


def _conjugate_gradients(
    problem: _Problem,
    x: torch.Tensor,
    precondition: Callable[[torch.Tensor], torch.Tensor],
    damping: float,
    n_iterations: int,
    tol: float,
    progress: bool,
) -> tuple[torch.Tensor, list[float], list[float], int, bool]:
    """(Preconditioned) conjugate gradients on ``(A^T A + λ) x = A^T b``, CGLS-style.

    The data residual ``r = b - A x`` is kept in image space (updated with the ``A p`` each
    iteration computes anyway) so its norm is exact; the normal residual
    ``s = A^T r - λ x`` is updated by recurrence, as in CGLS.

    Returns
    -------
    x, relative data residuals, relative normal residuals, iterations, converged.
    """
    q, ata, atb = problem.normal(x, with_data=True)
    r = [problem.data(p) - qc for p, qc in zip(problem.chunks, q, strict=True)]
    s = atb - ata - damping * x
    norm_b = math.sqrt(sum(_inner(bc, bc) for bc in (problem.data(p) for p in problem.chunks))) or 1.0
    norm_atb = float(torch.linalg.vector_norm(atb)) or 1.0

    def data_residual() -> float:
        return math.sqrt(sum(_inner(rc, rc) for rc in r)) / norm_b

    residuals = [data_residual()]
    normal_residuals = [float(torch.linalg.vector_norm(s)) / norm_atb]
    z = precondition(s)
    direction = z
    gamma = _inner(s, z)
    converged = normal_residuals[-1] <= tol
    iterations = 0
    bar = tqdm(total=n_iterations, desc="conjugate gradients", unit="it", disable=not progress, leave=False)
    while not converged and iterations < n_iterations and gamma > 0:
        q, ata, _ = problem.normal(direction)
        curvature = sum(_inner(qc, qc) for qc in q) + damping * _inner(direction, direction)
        if not curvature > 0:
            break
        alpha = gamma / curvature
        x = x + alpha * direction
        for rc, qc in zip(r, q, strict=True):
            rc -= alpha * qc
        s = s - alpha * (ata + damping * direction)
        z = precondition(s)
        gamma_new = _inner(s, z)
        direction = z + (gamma_new / gamma) * direction
        gamma = gamma_new
        iterations += 1
        residuals.append(data_residual())
        normal_residuals.append(float(torch.linalg.vector_norm(s)) / norm_atb)
        converged = normal_residuals[-1] <= tol
        bar.update(1)
        bar.set_postfix(residual=f"{residuals[-1]:.1e}", normal=f"{normal_residuals[-1]:.1e}")
    bar.close()
    return x, residuals, normal_residuals, iterations, converged


def reconstruct(
    images: torch.Tensor | np.ndarray,
    rotations: torch.Tensor | np.ndarray,
    shifts: torch.Tensor | np.ndarray | None = None,
    ctf: torch.Tensor | np.ndarray | None = None,
    *,
    method: str = "cgls",
    n_iterations: int = 20,
    tol: float = 1e-4,
    damping: float = 0.0,
    initial: str | torch.Tensor | np.ndarray | None = "fourier",
    precondition: bool = True,
    pad_factor: float = 2,
    gridding_correction: bool = True,
    batch_size: int = 512,
    device: Device = None,
    progress: bool = True,
) -> ReconstructionResult:
    """Reconstruct a map from projections with known orientations (and shifts, and CTFs).

    See the module docstring for the forward model and the two methods. Orientations are used as
    given: align recovered orientations first (``cryoorient.alignment.align_orientations``).

    Parameters
    ----------
    images : (N, D, D) projections ``[n, y, x]``, origin at ``D // 2``.
    rotations : (N, 3, 3) RELION matrices ``A`` (:func:`cryoorient.geometry.quaternion_to_matrix`
        of quaternions, :func:`cryoorient.geometry.euler_to_matrix` of RELION angles).
    shifts : (N, 2) RELION origins ``(x, y)`` in pixels, as :func:`~cryoorient.projection.project`
        takes them, or ``None``.
    ctf : (N, D, D) or (D, D) CTFs in the unshifted layout of :func:`~cryoorient.projection.ctf_2d`
        (as :func:`~cryoorient.projection.apply_ctf` applies them), or ``None``.
    method : ``"cgls"`` (least squares, the paper's) or ``"fourier"`` (direct, one pass).
    n_iterations : maximum conjugate-gradient iterations (``"cgls"``; 0 returns the initial guess).
    tol : ``"cgls"`` stops when ``‖A^T (b - A V) - λ V‖ <= tol ‖A^T b‖`` (0 runs every iteration).
    damping : Tikhonov weight ``λ >= 0`` on ``‖V‖²`` (0 for none); the Fourier method adds the
        equivalent ``λ D² / P³`` to its weights.
    initial : ``"fourier"`` (start from the Fourier reconstruction), ``None`` (from zero) or a
        ``(D, D, D)`` volume (``"cgls"`` only).
    precondition : precondition conjugate gradients by the Fourier-space weights (``"cgls"``).
    pad_factor : oversampling of the 3-D transform, as in ``project`` (``>= 1``).
    gridding_correction : the forward model's gridding correction, as in ``project``; keep ``True``
        for images made by ``project`` with its default, and for real data.
    batch_size : images per chunk. Conjugate gradients hold one chunk's projection graph (about
        ``batch_size · D² · 80`` bytes: 170 MB for 512 images of 64 px), two buffers the size of the
        stack (the residual and ``A p``), and each chunk transforms the ``(pad D)³`` volume once per
        iteration, so larger chunks are slightly faster.
    device : where to compute; ``None`` means CUDA when available, else CPU.
    progress : show progress bars.

    Returns
    -------
    :class:`ReconstructionResult` with the ``(D, D, D)`` float32 volume on the images' device.
    Images normalised by :func:`~cryoorient.projection.normalize_images` give the map scaled by
    ``1 / σ`` with a changed zero-frequency term (the mean subtracted from every image).

    Raises
    ------
    ValueError
        For images that are not a stack of square images, rotations, shifts or CTFs whose count or
        shape does not match the images, an unknown method or initial guess, or a negative
        ``n_iterations``, ``tol`` or ``damping``.
    """
    start = time.perf_counter()
    img, rot, sh, c = _check_stack(images, rotations, shifts, ctf)
    if method not in RECONSTRUCTION_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(RECONSTRUCTION_METHODS)}")
    if isinstance(n_iterations, bool) or int(n_iterations) != n_iterations or n_iterations < 0:
        raise ValueError(f"n_iterations must be a non-negative integer; got {n_iterations!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0; got {tol!r}")
    if not (math.isfinite(damping) and damping >= 0):
        raise ValueError(f"damping must be a finite number >= 0; got {damping!r}")
    if not pad_factor >= 1:
        raise ValueError(f"pad_factor must be >= 1; got {pad_factor!r}")
    batch_size = check_positive_int("batch_size", batch_size)
    d = img.shape[-1]
    initial_volume = None
    if isinstance(initial, str):
        if initial != "fourier":
            raise ValueError(f"initial must be 'fourier', None or a ({d}, {d}, {d}) volume; got {initial!r}")
    elif initial is not None:
        initial_volume = torch.as_tensor(initial)
        if tuple(initial_volume.shape) != (d, d, d):
            raise ValueError(
                f"initial volume must have shape ({d}, {d}, {d}); got {tuple(initial_volume.shape)}"
            )
    dev = resolve_device(device)
    p = padded_size(d, pad_factor)
    problem = _Problem(img, rot, sh, c, pad_factor, gridding_correction, batch_size, dev)

    # Real-space factors that turn Fourier-space estimates into volumes (see the module docstring):
    # num / den estimates the transform smoothed by the trilinear kernel's autocorrelation, i.e.
    # the volume times sinc⁴ (times 1 / sinc² more when project applies the gridding correction).
    sinc2 = _gridding_factor(d, p, dev)  # (D, D, D)
    post = 1 / sinc2 if gridding_correction else 1 / sinc2**2
    side = None if gridding_correction else 1 / sinc2
    inv_w = num = None
    if method == "fourier" or initial == "fourier" or precondition:
        num, den = _backproject(img, rot, sh, c, p, batch_size, dev, progress)
        inv_w = _inverse_weights(den, d, damping)

    if method == "fourier":
        volume = _to_padded_real(num * inv_w, d) * post
        return ReconstructionResult(
            volume=volume.to(img.device, torch.float32),
            residuals=[problem.relative_residual(volume)],
            seconds=time.perf_counter() - start,
            method="fourier",
        )

    def preconditioner(s: torch.Tensor) -> torch.Tensor:
        """``M⁻¹ s = side · crop F⁻¹ diag(D² / (P³ w)) F pad · side`` (symmetric positive definite)."""
        if not precondition:
            return s
        u = s if side is None else s * side
        z = _to_padded_real(_from_padded_real(u, p) * inv_w, d) * (d * d / p**3)
        return z if side is None else z * side

    if initial == "fourier":
        x = _to_padded_real(num * inv_w, d) * post
    elif initial_volume is not None:
        x = initial_volume.to(dev, torch.float64)
    else:
        x = torch.zeros(d, d, d, dtype=torch.float64, device=dev)
    x, residuals, normal_residuals, iterations, converged = _conjugate_gradients(
        problem, x, preconditioner, damping, int(n_iterations), tol, progress
    )
    return ReconstructionResult(
        volume=x.to(img.device, torch.float32),
        residuals=residuals,
        normal_residuals=normal_residuals,
        iterations=iterations,
        converged=converged,
        seconds=time.perf_counter() - start,
        method="cgls",
    )
