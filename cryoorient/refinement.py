"""Refinement without the truth: orientations improved against maps reconstructed from the images.

What every cryo-EM pipeline does after an initial model (RELION's auto-refine, cryoSPARC's
homogeneous refinement), reduced to its core: the "gold-standard" loop.

1. Split the particles into two random halves, once (:func:`split_halves`).
2. Reconstruct one map from each half with the current orientations
   (:func:`cryoorient.reconstruction.reconstruct`).
3. Their Fourier shell correlation at 0.143 (the half-map criterion of Rosenthal & Henderson) is
   the resolution the data support now; matching compares frequencies up to it, no further, so
   each half never sees more than its own map can tell.
4. Improve each half's orientations against its own map (:func:`cryoorient.matching.local_search`):
   the halves stay independent, so their FSC is an honest measure, never a product of one map
   fitting its own noise.
5. Repeat from 2 until the orientations stop changing (median change below a tolerance).

No truth is used anywhere in the loop. For evaluation, :func:`map_in_frame` brings a map made
from orientations known up to a global rotation into a reference map's frame (the true map, where
there is one), so that the two can be compared shell by shell. No shifts: the images are taken as
centred (see :mod:`cryoorient.matching`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cryoorient._checks import Device, check_positive, check_positive_int, check_rotations
from cryoorient._fourier import frequency_radius
from cryoorient.fsc import fourier_shell_correlation, resolution
from cryoorient.geometry import matrix_to_quaternion, quaternion_distance
from cryoorient.map_alignment import MapAlignment, align_maps
from cryoorient.matching import local_search
from cryoorient.reconstruction import reconstruct

__all__ = [
    "FramedMap",
    "Refinement",
    "RefinementRound",
    "fsc_weighted",
    "map_in_frame",
    "refine",
    "rotation_change",
    "split_halves",
]


@dataclass(frozen=True)
class RefinementRound:
    """One round of :func:`refine`: the half maps it started from and how far the orientations moved.

    Attributes
    ----------
    resolution : FSC-0.143 resolution of the two half maps before the round's search, Å (or
        pixels when ``pixel_size`` is 1).
    max_frequency : band the search compared, cycles per pixel.
    step : the local search's first step, radians.
    median_change, max_change : how far the orientations moved in the round, radians.
    mean_score : mean correlation of the images with their half map's projections after the round.
    """

    resolution: float
    max_frequency: float
    step: float
    median_change: float
    max_change: float
    mean_score: float


@dataclass(frozen=True)
class Refinement:
    """The refined orientations, the final half maps and how the refinement went.

    Attributes
    ----------
    rotations : (N, 3, 3) float64 refined RELION matrices.
    halves : (N,) int64 half of each particle (0 or 1).
    half_maps : two (D, D, D) float32 maps from the refined orientations (CPU).
    frequencies, fsc : (D // 2 + 1,) float64 their FSC curve (1/Å with ``pixel_size``).
    resolution : its 0.143 crossing, Å (a bound at Nyquist when it never crosses).
    rounds : every round, in order.
    converged : whether the median change fell below the tolerance before the last round.
    """

    rotations: torch.Tensor
    halves: torch.Tensor
    half_maps: tuple[torch.Tensor, torch.Tensor]
    frequencies: torch.Tensor
    fsc: torch.Tensor
    resolution: float
    rounds: tuple[RefinementRound, ...]
    converged: bool


def split_halves(n: int, seed: int | torch.Generator = 0) -> torch.Tensor:
    """A random split of ``n`` particles into two halves of ``n // 2`` and ``n - n // 2``.

    Returns
    -------
    (n,) int64 labels, 0 or 1; the same ``seed`` gives the same split.
    """
    n = check_positive_int("n", n, minimum=2)
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    labels = torch.zeros(n, dtype=torch.int64)
    labels[torch.randperm(n, generator=generator)[n // 2 :]] = 1
    return labels


def rotation_change(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(N,) angles of the rotations taking ``before`` to ``after``, radians (``d_q`` of their quaternions)."""
    return quaternion_distance(
        matrix_to_quaternion(check_rotations(before).to(torch.float64)),
        matrix_to_quaternion(check_rotations(after).to(torch.float64)),
    )


def fsc_weighted(volume: torch.Tensor, fsc: torch.Tensor) -> torch.Tensor:
    """A half map filtered shell by shell by ``sqrt(2 FSC / (1 + FSC))`` (0 where the FSC is <= 0).

    The weight Rosenthal & Henderson give a half map's shells to estimate the full map's correlation
    with the truth: shells the two halves agree on keep their amplitude, shells of noise fade
    instead of being cut at a hard resolution, and an image's own noise, back-projected into its
    half map, pulls it less towards where it is.

    Parameters
    ----------
    volume : (D, D, D) map.
    fsc : (D // 2 + 1,) the half maps' FSC per shell (:func:`cryoorient.fsc.fourier_shell_correlation`).

    Returns
    -------
    (D, D, D) float32 filtered map (frequencies beyond shell ``D // 2`` removed).
    """
    d = volume.shape[0]
    shell = frequency_radius(d).round().long()
    f = torch.as_tensor(fsc, dtype=torch.float64).clamp(min=0.0)
    weights = torch.sqrt(2 * f / (1 + f))
    weights = torch.cat((weights, torch.zeros(1, dtype=torch.float64)))  # beyond the last shell
    factor = weights[shell.clamp(max=len(weights) - 1)]
    return torch.fft.ifftn(torch.fft.fftn(volume.to(torch.float64)) * factor).real.float()


def _half_maps(images, rotations, halves, method, n_iterations, device, ctf=None):
    maps = []
    for h in (0, 1):
        chosen = halves == h
        result = reconstruct(
            images[chosen],
            rotations[chosen].float(),
            ctf=None if ctf is None else ctf[chosen],
            method=method,
            n_iterations=n_iterations,
            device=device,
            progress=False,
        )
        maps.append(result.volume.float().cpu())
    return maps


def refine(
    images: torch.Tensor,
    rotations: torch.Tensor,
    *,
    pixel_size: float = 1.0,
    max_rounds: int = 8,
    tolerance: float = math.radians(0.1),
    step: float = math.radians(4),
    min_step: float = math.radians(0.1),
    seed: int = 0,
    method: str = "cgls",
    n_iterations: int = 10,
    device: Device = None,
    progress: bool = False,
    ctf: torch.Tensor | None = None,
) -> Refinement:
    """Refine orientations against half maps reconstructed from the images (see the module docstring).

    Parameters
    ----------
    images : (N, D, D) centred images ``[y, x]``, e.g. normalised particles.
    rotations : (N, 3, 3) initial RELION matrices: recovered and gauge-fixed orientations, a STAR
        file's, or random ones (to see what an initial model is worth).
    pixel_size : Å per pixel, for the resolutions (1: in pixels).
    max_rounds : rounds at most (each: two reconstructions and two local searches).
    tolerance : stop when the median change of a round is below it, radians.
    step : the first round's first local step, radians; later rounds start at three times the
        previous round's median change (at most ``step``), as the orientations settle.
    min_step : the local search's smallest step, radians.
    seed : seed of the split into halves.
    method, n_iterations : the reconstruction's (:func:`cryoorient.reconstruction.reconstruct`).
    device : where to compute (``None``: CUDA when available).
    progress : print one line per round.
    ctf : (N, D, D) the images' CTFs (unshifted layout): the half maps are reconstructed with them
        in the forward model and each image is matched against its half map's projections times its
        CTF (:func:`cryoorient.matching.local_search`); ``None`` for CTF-free (or phase-flipped) images.

    Returns
    -------
    :class:`Refinement`.
    """
    current = check_rotations(rotations).to(torch.float64, copy=True)
    images = torch.as_tensor(images, dtype=torch.float32)
    if len(images) != len(current):
        raise ValueError(f"{len(images)} images but {len(current)} rotations")
    if ctf is not None:
        ctf = torch.as_tensor(ctf, dtype=torch.float32)
        if ctf.shape != images.shape:
            raise ValueError(f"ctf must have the images' shape {tuple(images.shape)}; got {tuple(ctf.shape)}")
    pixel_size = check_positive("pixel_size", pixel_size)
    max_rounds = check_positive_int("max_rounds", max_rounds)
    if not (0 < min_step <= step):
        raise ValueError(f"need 0 < min_step <= step; got min_step {min_step!r}, step {step!r}")
    halves = split_halves(len(images), seed)
    rounds: list[RefinementRound] = []
    converged = False
    round_step = float(step)
    for number in range(max_rounds):
        maps = _half_maps(images, current, halves, method, n_iterations, device, ctf)
        freq, fsc = fourier_shell_correlation(maps[0], maps[1], pixel_size)
        res = resolution(freq, fsc, 0.143)
        band = min(0.5, pixel_size / res) if math.isfinite(res) else 4 / images.shape[-1]  # 4 shells
        after = current.clone()
        scores = torch.empty(len(images), dtype=torch.float64)
        for h in (0, 1):
            chosen = halves == h
            found = local_search(
                images[chosen],
                fsc_weighted(maps[h], fsc),
                current[chosen],
                step=round_step,
                min_step=min_step,  # round_step never falls below it
                max_frequency=band,
                device=device,
                ctf=None if ctf is None else ctf[chosen],
            )
            after[chosen], scores[chosen] = found.rotations, found.scores
        change = rotation_change(current, after)
        rounds.append(
            RefinementRound(
                res, band, round_step, float(change.median()), float(change.max()), float(scores.mean())
            )
        )
        if progress:
            r = rounds[-1]
            print(
                f"round {number + 1}: half maps at {r.resolution:.1f} Å (FSC 0.143), "
                f"band {r.max_frequency:.3f}/px, "
                f"step {math.degrees(r.step):.2f}°: median change {math.degrees(r.median_change):.3f}°, "
                f"mean correlation {r.mean_score:.4f}",
                flush=True,
            )
        current = after
        if rounds[-1].median_change < tolerance:
            converged = True
            break
        round_step = max(min(float(step), 3 * rounds[-1].median_change), min_step)
    maps = _half_maps(images, current, halves, method, n_iterations, device, ctf)
    freq, fsc = fourier_shell_correlation(maps[0], maps[1], pixel_size)
    return Refinement(
        current,
        halves,
        (maps[0], maps[1]),
        freq.cpu(),
        fsc.cpu(),
        resolution(freq, fsc, 0.143),
        tuple(rounds),
        converged,
    )


@dataclass(frozen=True)
class FramedMap:
    """A map from orientations known up to a global rotation, remade in a reference map's frame.

    Attributes
    ----------
    volume : (D, D, D) float32 map made from the images with every rotation composed with the
        alignment's matrix (CPU): in the reference's frame exactly, never resampled.
    frequencies, fsc : (D // 2 + 1,) its FSC with the reference (1/Å).
    resolution : the FSC's 0.5 crossing, Å.
    resampled_resolution : the 0.5 crossing of the first map resampled onto the reference
        (``alignment.aligned``: what ``cryoorient fsc --align`` gives a user), Å.
    alignment : the map-to-map alignment found from the first map and the reference alone.
    """

    volume: torch.Tensor
    frequencies: torch.Tensor
    fsc: torch.Tensor
    resolution: float
    resampled_resolution: float
    alignment: MapAlignment


def map_in_frame(
    images: torch.Tensor,
    rotations: torch.Tensor,
    reference: torch.Tensor | np.ndarray,
    pixel_size: float,
    *,
    method: str = "cgls",
    n_iterations: int = 20,
    n_candidates: int = 1500,
    seed: int = 0,
    device: Device = None,
    ctf: torch.Tensor | np.ndarray | None = None,
) -> FramedMap:
    """Reconstruct, align the map onto ``reference``, and reconstruct again in its frame.

    Orientations recovered without the truth (as recovered, or gauge-fixed from the images) are
    right up to one rotation of the whole map and the mirror. The map from them is aligned onto the
    reference by :func:`cryoorient.map_alignment.align_maps` (``V(Mᵀ x)``); since
    ``project(V(Mᵀ x), A Mᵀ) = project(V, A)``, the same images with every ``A_i Mᵀ`` give the
    aligned map directly, so the comparison measures orientations, not the resampling's loss
    near Nyquist.

    Parameters
    ----------
    images : (N, D, D) projections ``[n, y, x]``.
    rotations : (N, 3, 3) RELION matrices, in any global frame.
    reference : (D, D, D) the map to compare with (for evaluation: the true map).
    pixel_size : Å per pixel, for the FSC.
    method, n_iterations : as :func:`cryoorient.reconstruction.reconstruct`.
    n_candidates, seed : number and seed of the alignment's candidate rotations
        (:func:`cryoorient.map_alignment.align_maps`).
    device : ``None`` is CUDA when available.
    ctf : (N, D, D) the images' CTFs (unshifted layout), in the reconstruction's forward model (a
        CTF-corrected map); ``None`` for images without a CTF.

    Returns
    -------
    :class:`FramedMap`.
    """
    first = reconstruct(images, rotations, ctf=ctf, method=method, n_iterations=n_iterations, device=device,
                        progress=False).volume.cpu()
    fit = align_maps(first, reference, n_candidates=n_candidates, seed=seed, device=device)
    reference = torch.as_tensor(reference)
    resampled = resolution(*fourier_shell_correlation(fit.aligned.cpu(), reference, pixel_size), 0.5)
    framed = torch.as_tensor(rotations).to(torch.float32) @ torch.from_numpy(fit.matrix.T).float()
    volume = reconstruct(images, framed, ctf=ctf, method=method, n_iterations=n_iterations, device=device,
                         progress=False).volume.cpu()
    frequencies, fsc = fourier_shell_correlation(volume, reference, pixel_size)
    return FramedMap(volume, frequencies, fsc, resolution(frequencies, fsc, 0.5), resampled, fit)
