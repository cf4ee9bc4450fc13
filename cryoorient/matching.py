"""Projection matching: each image's orientation from a map, by correlating it with the map's projections.

What anyone holding the map would do (the baseline of the projection-matching study): compare
every image with projections of the map and keep the orientation of the best match. Here the
comparison happens in Fourier space, where a projection is a central slice of the map's spectrum
(the Fourier-slice theorem, the same slices :func:`cryoorient.projection.project` turns into
images), so a candidate orientation costs one interpolated slice and no inverse transform.

**Score.** The normalised cross-correlation of the image and the projection, both band-limited to
``|k| <= max_frequency · D`` and without their means (the zero frequency), i.e. their Pearson
correlation after a low-pass filter. It is what maximum likelihood under white Gaussian noise gives
when each image may have its own scale and offset (``x = a·p + b + n`` with ``a, b`` fitted:
the residual is ``|x − b|² (1 − r²)``, smallest where the correlation ``r`` is largest), and it
needs no noise estimate. Limiting the band speeds the search and keeps the noisiest frequencies
out of it, as RELION's coarse passes do.

Two searches, both batched in torch (CPU or CUDA):

* :func:`global_search`: every image against every orientation of a grid
  (:func:`orientation_grid`: quasi-uniform directions × uniform in-plane angles);
* :func:`local_search`: around a current orientation per image, a shrinking neighbourhood of
  small rotations (hill climbing on ``{-1, 0, 1}³`` steps of the rotation vector).

No shift search: the images are assumed centred (the simulated stacks are; a stack with
``rlnOriginX/Y`` is re-centred first).

**With a CTF** (``ctf=``, one per image): the projection is compared as the microscope would have
recorded it, ``CTF_i · P``, so the score is ``⟨CTF_i P, I_i⟩ / (‖CTF_i P‖ ‖I_i‖)``. Both parts are
sums over the band, the numerator a dot product of the image's features times its CTF with the
projection's, the denominator one of ``CTF_i²`` with the projection's power: still two matrix
products for a batch of candidates, whatever the number of distinct CTFs.

Conventions: rotations are RELION matrices ``A`` (volume → image coordinates, see
:func:`cryoorient.geometry.euler_to_matrix`); images ``[y, x]`` and volumes ``[z, y, x]`` with
their origin at index ``D // 2``; angles in radians.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from cryoorient._checks import (
    Device,
    check_images,
    check_positive_int,
    check_rotations,
    check_volume,
    resolve_device,
)
from cryoorient._fourier import centred_half_spectrum, slice_frequencies, trilinear_half
from cryoorient.geometry import euler_to_matrix

__all__ = [
    "Matches",
    "axis_angle_matrix",
    "global_search",
    "grid_spacing",
    "local_search",
    "match_to_map",
    "orientation_grid",
]


@dataclass(frozen=True)
class Matches:
    """The best orientation found for each image.

    Attributes
    ----------
    rotations : (N, 3, 3) float64 RELION matrices of the best matches.
    scores : (N,) float64 their normalised cross-correlations, in ``[-1, 1]``.
    steps : (N,) float64 the local search's final step per image (radians); NaN after a global
        search (the grid's spacing is :func:`grid_spacing`).
    """

    rotations: torch.Tensor
    scores: torch.Tensor
    steps: torch.Tensor


def orientation_grid(n_directions: int, n_in_plane: int) -> torch.Tensor:
    """A quasi-uniform grid on SO(3): Fibonacci-sphere directions × uniform in-plane angles.

    Parameters
    ----------
    n_directions : projection directions, spread over the whole sphere by the Fibonacci lattice
        (nearest neighbours about ``sqrt(4π / n_directions)`` rad apart).
    n_in_plane : in-plane angles ``psi = 2π j / n_in_plane`` per direction.

    Returns
    -------
    (n_directions · n_in_plane, 3, 3) float64 RELION matrices; direction ``i``'s angles are rows
    ``i · n_in_plane`` to ``(i + 1) · n_in_plane − 1``.
    """
    n_directions = check_positive_int("n_directions", n_directions)
    n_in_plane = check_positive_int("n_in_plane", n_in_plane)
    i = torch.arange(n_directions, dtype=torch.float64) + 0.5
    tilt = torch.acos(1 - 2 * i / n_directions)  # z = cos(tilt) uniform in (-1, 1)
    rot = torch.remainder(i * math.pi * (3 - math.sqrt(5)), 2 * math.pi)  # the golden angle
    psi = torch.arange(n_in_plane, dtype=torch.float64) * (2 * math.pi / n_in_plane)
    angles = torch.stack(
        (
            rot[:, None].expand(-1, len(psi)),
            tilt[:, None].expand(-1, len(psi)),
            psi[None, :].expand(len(rot), -1),
        ),
        dim=-1,
    )
    return euler_to_matrix(angles.reshape(-1, 3))


def grid_spacing(n_directions: int, n_in_plane: int) -> float:
    """The typical step of :func:`orientation_grid`, radians: the larger of its two steps."""
    return max(math.sqrt(4 * math.pi / n_directions), 2 * math.pi / n_in_plane)


def axis_angle_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of rotation vectors (axis × angle), by Rodrigues' formula.

    Parameters
    ----------
    vectors : (..., 3) rotation vectors, radians.

    Returns
    -------
    (..., 3, 3) rotation matrices (the identity for a zero vector).
    """
    v = torch.as_tensor(vectors, dtype=torch.float64)
    angle = torch.linalg.vector_norm(v, dim=-1, keepdim=True)  # (..., 1)
    axis = v / angle.clamp_min(1e-300)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack(
        (torch.stack((zero, -z, y), -1), torch.stack((z, zero, -x), -1), torch.stack((-y, x, zero), -1)), -2
    )  # (..., 3, 3) cross-product matrix
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=torch.float64, device=v.device)
    return eye + s * k + (1 - c) * (k @ k)


@dataclass(frozen=True)
class _Band:
    """The frequencies compared: where they are in an image's ``rfft2`` and their Parseval weights."""

    k: torch.Tensor  # (M, 2) integer (kx, ky), kx >= 0, 0 < |k| <= radius
    flat: torch.Tensor  # (M,) flat indices in a (D, D // 2 + 1) half spectrum
    root_weight: torch.Tensor  # (M,) sqrt of 1 (kx = 0 or D/2) or 2 (the other half-plane columns)


def _band(d: int, max_frequency: float, device: torch.device) -> _Band:
    if not 0 < max_frequency <= 0.5:
        raise ValueError(f"max_frequency must be in (0, 0.5] cycles per pixel; got {max_frequency!r}")
    k, flat = slice_frequencies(d, device)
    r2 = (k.to(torch.float64) ** 2).sum(-1)
    keep = (r2 > 0) & (r2 <= (max_frequency * d) ** 2)
    k, flat = k[keep], flat[keep]
    doubled = (k[:, 0] > 0) & (2 * k[:, 0] != d)
    return _Band(k, flat, torch.where(doubled, math.sqrt(2.0), 1.0).to(torch.float32))


def _unit(values: torch.Tensor, band: _Band) -> torch.Tensor:
    """(B, M) complex → (B, 2M) real, Parseval-weighted and scaled to unit norm."""
    weighted = torch.view_as_real(values * band.root_weight).reshape(len(values), -1)
    return weighted / torch.linalg.vector_norm(weighted, dim=1, keepdim=True).clamp_min(1e-30)


def _image_features(images: torch.Tensor, band: _Band) -> torch.Tensor:
    """(N, D, D) images → (N, 2M) unit features whose dot products are band-limited correlations."""
    spectra = torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1)))  # origin at the corner
    return _unit(spectra.reshape(len(images), -1)[:, band.flat], band)


class _Slicer:
    """Central slices of one map's spectrum on the band, as unit features (see :func:`_unit`)."""

    def __init__(self, volume: torch.Tensor, band: _Band, pad_factor: float) -> None:
        self.spectrum = centred_half_spectrum(volume, pad_factor, gridding_correction=True)
        self.scale = (self.spectrum.shape[0] - 1) / volume.shape[0]
        self.k = band.k.to(torch.float64)
        self.band = band

    def __call__(self, rotations: torch.Tensor) -> torch.Tensor:
        a = rotations.to(self.spectrum.device, torch.float64)  # (B, 3, 3)
        coords = (self.scale * self.k @ a[:, :2, :]).to(torch.float32)  # A^T (kx, ky, 0): (B, M, 3)
        return _unit(trilinear_half(self.spectrum, coords), self.band)


class _Scorer:
    """Normalised cross-correlations of the images with candidate slices, with or without their CTFs."""

    def __init__(self, features: torch.Tensor, ctf_squared: torch.Tensor | None) -> None:
        self.features = features  # (N, 2M) unit image features, times the CTF when there is one
        self.ctf_squared = ctf_squared  # (N, M) CTF² on the band, or None

    def __len__(self) -> int:
        return len(self.features)

    def all_against(self, slices: torch.Tensor) -> torch.Tensor:
        """(N, B) scores of every image against (B, 2M) unit slices."""
        scores = self.features @ slices.T
        if self.ctf_squared is not None:
            power = slices.reshape(len(slices), -1, 2).square().sum(-1)  # (B, M)
            scores = scores / (self.ctf_squared @ power.T).clamp_min(1e-30).sqrt()
        return scores

    def each_against(self, chunk: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        """(b, K) scores of the images ``chunk`` against their own (b, K, 2M) unit slices."""
        chunk = chunk.to(self.features.device)
        scores = (slices @ self.features[chunk, :, None]).squeeze(-1)
        if self.ctf_squared is not None:
            power = slices.reshape(*slices.shape[:2], -1, 2).square().sum(-1)  # (b, K, M)
            scores = scores / (power @ self.ctf_squared[chunk, :, None]).squeeze(-1).clamp_min(1e-30).sqrt()
        return scores


def _prepare(images, volume, max_frequency: float, pad_factor: float, device: Device, ctf=None):
    imgs = check_images(images)
    vol = check_volume(volume)
    if imgs.ndim != 3 or imgs.shape[1] != imgs.shape[2]:
        raise ValueError(f"images must be a stack of square images (N, D, D); got shape {tuple(imgs.shape)}")
    if imgs.shape[-1] != vol.shape[0]:
        raise ValueError(f"images of {imgs.shape[-1]} px cannot be matched with a {vol.shape[0]}³ map")
    dev = resolve_device(device)
    d = vol.shape[0]
    band = _band(d, max_frequency, dev)
    features = _image_features(imgs.to(dev, torch.float32), band)
    ctf_squared = None
    if ctf is not None:
        c = check_images(ctf, "ctf")
        if tuple(c.shape) != tuple(imgs.shape):
            raise ValueError(f"ctf must have the images' shape {tuple(imgs.shape)}; got {tuple(c.shape)}")
        # the unshifted fft2 layout's [ky mod D, kx] for kx <= D/2 is the rfft2 half spectrum's
        on_band = c.to(dev, torch.float32)[:, :, : d // 2 + 1].reshape(len(c), -1)[:, band.flat]  # (N, M)
        features = features * on_band.repeat_interleave(2, dim=1)
        ctf_squared = on_band.square()
    return _Scorer(features, ctf_squared), _Slicer(vol.to(dev, torch.float32), band, pad_factor)


def global_search(
    images: torch.Tensor,
    volume: torch.Tensor,
    rotations: torch.Tensor,
    *,
    max_frequency: float = 0.5,
    pad_factor: float = 2,
    batch_size: int = 1024,
    device: Device = None,
    progress: bool = False,
    ctf: torch.Tensor | None = None,
) -> Matches:
    """Each image's best orientation among ``rotations`` (e.g. :func:`orientation_grid`).

    Parameters
    ----------
    images : (N, D, D) centred images ``[y, x]``.
    volume : (D, D, D) map ``[z, y, x]`` on the images' pixel grid.
    rotations : (R, 3, 3) candidate RELION matrices.
    max_frequency : the band compared, cycles per pixel (0.5: up to Nyquist).
    pad_factor : oversampling of the map's spectrum, as in :func:`cryoorient.projection.project`.
    batch_size : candidate orientations sliced at once (memory ``≈ batch_size · (N + 60 M) · 8`` bytes
        for ``M`` frequencies in the band).
    device : where to compute (``None``: CUDA when available); results come back on the CPU.
    progress : show a progress bar over the batches.
    ctf : (N, D, D) the images' CTFs (unshifted layout, :func:`cryoorient.projection.ctf_2d`): each
        projection is compared as ``CTF · P`` (module docstring); ``None`` for CTF-free images.

    Returns
    -------
    :class:`Matches` with each image's best rotation and its score; ``steps`` is NaN (the grid's
    spacing is the caller's to state, e.g. :func:`grid_spacing`).
    """
    scorer, slicer = _prepare(images, volume, max_frequency, pad_factor, device, ctf)
    candidates = check_rotations(rotations)
    batch_size = check_positive_int("batch_size", batch_size)
    n = len(scorer)
    best = torch.full((n,), -math.inf, dtype=torch.float32, device=scorer.features.device)
    index = torch.zeros(n, dtype=torch.long, device=scorer.features.device)
    starts = range(0, len(candidates), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="global search", unit="batch")
    for start in starts:
        scores = scorer.all_against(slicer(candidates[start : start + batch_size]))  # (N, B)
        value, where = scores.max(dim=1)
        better = value > best
        best = torch.where(better, value, best)
        index = torch.where(better, where + start, index)
    return Matches(
        candidates[index.cpu()].to(torch.float64),
        best.cpu().to(torch.float64),
        torch.full((n,), math.nan, dtype=torch.float64),
    )


_NEIGHBOURS = torch.cartesian_prod(*(torch.tensor([0.0, -1.0, 1.0], dtype=torch.float64),) * 3)
"""The 27 rotation-vector directions of a local step, the centre first (so ties keep the centre)."""


def local_search(
    images: torch.Tensor,
    volume: torch.Tensor,
    rotations: torch.Tensor,
    *,
    step: float = math.radians(4),
    min_step: float = math.radians(0.25),
    shrink: float = 0.5,
    max_rounds: int = 30,
    max_frequency: float = 0.5,
    pad_factor: float = 2,
    batch_size: int = 64,
    device: Device = None,
    progress: bool = False,
    ctf: torch.Tensor | None = None,
) -> Matches:
    """Each image's orientation improved around ``rotations`` by hill climbing on a shrinking step.

    Every round compares each image with the 26 orientations ``Δ A`` one step away (``Δ`` the
    rotation by ``step · u``, ``u ∈ {-1, 0, 1}³``) and its current one: it moves to the best, or
    halves its step (``shrink``) when the current one is best. An image stops when its step is below
    ``min_step``; the search stops when every image has, or after ``max_rounds`` rounds.

    Parameters
    ----------
    images : (N, D, D) centred images ``[y, x]``.
    volume : (D, D, D) map ``[z, y, x]`` on the images' pixel grid.
    rotations : (N, 3, 3) RELION matrices to start from, one per image.
    step : first step, radians (along each axis of the rotation vector).
    min_step : an image's search ends when its step falls below it, radians.
    shrink : factor applied to the step when no neighbour is better (``0 < shrink < 1``).
    max_rounds : rounds at most.
    max_frequency, pad_factor, device, progress, ctf : as in :func:`global_search`.
    batch_size : images whose 27 candidates are sliced at once.

    Returns
    -------
    :class:`Matches`: the final rotation, its score and the final step of each image.
    """
    scorer, slicer = _prepare(images, volume, max_frequency, pad_factor, device, ctf)
    current = check_rotations(rotations).to(torch.float64, copy=True)  # the caller's tensor stays as it was
    n = len(scorer)
    if current.shape[0] != n:
        raise ValueError(f"{n} images but {current.shape[0]} starting rotations")
    if not (0 < shrink < 1):
        raise ValueError(f"shrink must be in (0, 1); got {shrink!r}")
    if not (0 < min_step <= step):
        raise ValueError(f"need 0 < min_step <= step; got min_step {min_step!r}, step {step!r}")
    batch_size = check_positive_int("batch_size", batch_size)
    steps = torch.full((n,), float(step), dtype=torch.float64)
    scores = torch.full((n,), -math.inf, dtype=torch.float64)
    rounds = range(check_positive_int("max_rounds", max_rounds))
    if progress:
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc="local search", unit="round")
    for _ in rounds:
        active = torch.nonzero(steps >= min_step).flatten()
        if len(active) == 0:
            break
        for chunk in active.split(batch_size):
            deltas = axis_angle_matrix(steps[chunk, None, None] * _NEIGHBOURS)  # (b, 27, 3, 3)
            candidates = deltas @ current[chunk, None]  # (b, 27, 3, 3)
            slices = slicer(candidates.reshape(-1, 3, 3)).reshape(len(chunk), len(_NEIGHBOURS), -1)
            values = scorer.each_against(chunk, slices).cpu()  # (b, 27)
            value, where = values.max(dim=1)
            current[chunk] = candidates[torch.arange(len(chunk)), where]
            scores[chunk] = value.to(torch.float64)
            stay = where == 0
            steps[chunk[stay]] *= shrink
    return Matches(current, scores, steps)


def match_to_map(
    images: torch.Tensor,
    volume: torch.Tensor,
    *,
    directions: int = 1000,
    in_plane: int = 48,
    max_frequency: float = 0.25,
    local: bool = True,
    local_frequency: float = 0.5,
    device: Device = None,
    progress: bool = False,
    ctf: torch.Tensor | None = None,
) -> tuple[Matches, float]:
    """Orientations of ``images`` by projection matching against ``volume``, and the seconds taken.

    A global search over ``directions`` × ``in_plane`` orientations
    (:func:`orientation_grid`) compared up to ``max_frequency`` (cycles per
    pixel), then, with ``local``, a local search up to ``local_frequency`` from half the grid's
    spacing. ``ctf``: the images' CTFs, as in :func:`global_search`.

    Returns
    -------
    ``(matches, seconds)``: :class:`Matches` (RELION matrices and scores).
    """
    start = time.perf_counter()
    grid = orientation_grid(directions, in_plane)
    found = global_search(images, volume, grid, max_frequency=max_frequency, device=device,
                          progress=progress, ctf=ctf)
    if local:
        found = local_search(images, volume, found.rotations, step=grid_spacing(directions, in_plane) / 2,
                             max_frequency=local_frequency, device=device, progress=progress, ctf=ctf)
    return found, time.perf_counter() - start
