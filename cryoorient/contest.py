"""Who wins where: projection matching, learned distances, common lines and random starts, refined alike.

The study of notebook 11 and ``benchmarks/who_wins.py`` (one noise level at a time, on the same
test images for every method):

* ``truth``: the same images with their true orientations, the ceiling of every map below;
* ``matching``: projection matching against the *true* map (what anyone holding the map would do;
  :func:`cryoorient.matching.match_to_map`);
* ``learned``: the estimator's distances → recovery → gauge fixed from the images (no truth);
* ``common_lines``: ASPIRE's common lines on the same images (``n_theta`` 360, its default; no
  shift search, the images are centred);
* ``class_averages``: common lines on 2-D class averages of the test split, each scored against
  its reference image's true orientation (other images than the subset, as many where the split
  allows and ASPIRE's selection keeps them: fewer on clean images; the row's ``n`` says how many);
* ``learned+refined``, ``common_lines+refined``, ``random+refined``: the same refinement against
  half maps reconstructed from the images (:func:`cryoorient.refinement.refine`, no truth) from
  the learned, the common-lines and random orientations (what an initial model is worth).

Every row holds :func:`cryoorient.alignment.score_orientations` (E_OR, E_OR,reg, medians, within
5° and 10°), the wall time (training apart), and the FSC-0.5 resolution against the true map of
the map the images give with those orientations, brought into the true map's frame
(:func:`cryoorient.refinement.map_in_frame`; evaluation only). Refined rows also hold the half maps'
FSC-0.143 resolution, which needs no truth, and the rounds run.

:func:`contest_verdict` turns the rows into sentences, so that the notebook's and the report's
verdicts come from the numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from cryoorient._checks import Device
from cryoorient.alignment import score_orientations
from cryoorient.common_lines import class_averages, common_lines_orientations
from cryoorient.fsc import fourier_shell_correlation, resolution
from cryoorient.gauge import fix_gauge
from cryoorient.geometry import matrix_to_quaternion, quaternion_to_matrix
from cryoorient.matching import match_to_map
from cryoorient.pipeline import learned_recovery
from cryoorient.reconstruction import reconstruct
from cryoorient.refinement import map_in_frame, refine
from cryoorient.sampling import sample_orientations
from cryoorient.siamese import SiameseDistance

__all__ = [
    "CONTENDERS", "REFINED_FROM", "ContestSettings", "contest_level", "contest_verdict", "estimator_level",
]

CONTENDERS: dict[str, str] = {
    "truth": "true orientations (the ceiling)",
    "matching": "projection matching (true map)",
    "learned": "learned distances + gauge",
    "learned+refined": "learned, refined",
    "common_lines": "common lines",
    "class_averages": "class averages + common lines",
    "common_lines+refined": "common lines, refined",
    "random+refined": "random, refined",
}
"""The contenders, in the order they run, and their labels for tables and figures. ``truth`` is
the ceiling, not a contender: the map from the same images with their true orientations."""

REFINED_FROM: dict[str, str] = {
    "learned+refined": "learned",
    "common_lines+refined": "common_lines",
    "random+refined": "random",
}
"""Each refined contender and the start it refines."""


@dataclass(frozen=True)
class ContestSettings:
    """What the contenders share besides the images.

    Attributes
    ----------
    rounds : refinement rounds at most (:func:`cryoorient.refinement.refine`).
    n_theta : common lines' in-plane angles (ASPIRE's default 360).
    n_neighbours : images per class average.
    seed : seed of the recovery, the gauge, the halves, ASPIRE and the alignments.
    chance_seed : seed of the random starts.
    """

    rounds: int = 8
    n_theta: int = 360
    n_neighbours: int = 10
    seed: int = 0
    chance_seed: int = 1


def estimator_level(asked: float | str, levels: Iterable[float], matched: float, *,
                    tolerance: float = 0.01) -> float:
    """The σ² among ``levels`` (those with an estimator) that ``asked`` names.

    Parameters
    ----------
    asked : a σ² (a number, or its text) or ``"matched"``: the SNR-matched level.
    levels : the σ² that have an estimator (a noise curriculum's keys).
    matched : the study's SNR-matched σ² (e.g. 4.87039; asked as 4.87 on a command line).
    tolerance : how far ``asked`` may be from a level and still name it.

    Raises
    ------
    ValueError : no level within ``tolerance``; the message lists the choices.
    """
    levels = sorted(set(levels))
    value = matched if asked == "matched" else float(asked)
    found = [v for v in levels if abs(v - value) < tolerance]
    if not found:
        choices = [f"{v:g}" for v in levels]
        raise ValueError(f"σ² = {asked} has no estimator; choose among {choices} or 'matched'")
    return min(found, key=lambda v: abs(v - value))


def contest_level(
    images: torch.Tensor | np.ndarray,
    quaternions: torch.Tensor | np.ndarray,
    subset: np.ndarray,
    pool: np.ndarray,
    volume: torch.Tensor | np.ndarray,
    pixel_size: float,
    *,
    model: SiameseDistance | None,
    image_size: int | None,
    contenders: Collection[str] = tuple(CONTENDERS),
    settings: ContestSettings = ContestSettings(),
    done: Collection[str] = (),
    on_row: Callable[[str, dict], None] | None = None,
    reference: torch.Tensor | np.ndarray | None = None,
    device: Device = None,
    progress: bool = False,
) -> dict[str, dict]:
    """The rows of one noise level.

    Parameters
    ----------
    images : (N, D, D) the dataset's projections at this noise level ``[n, y, x]``.
    quaternions : (N, 4) their true orientations (scoring and the learned recovery's report only).
    subset : (P,) indices of the images every contender orients (e.g. the first P of the test split).
    pool : indices the class averages are made from (the test split), ``len(pool) >= 2``.
    volume : (D, D, D) the true map ``[z, y, x]`` on the images' grid (matching; evaluation).
    pixel_size : Å per pixel.
    model, image_size : the estimator of this level and its input size (``None`` only when no
        learned contender is asked for).
    contenders : which of :data:`CONTENDERS` to run.
    settings : :class:`ContestSettings`.
    done : contenders to skip (already measured); their starts are recomputed when a refined
        contender needs them.
    on_row : called with each new row's name and dict as soon as it is measured (to save it).
    reference : (D, D, D) the map projection matching searches against, on the images' grid
        (``None``: ``volume``, the true map); e.g. a low-pass filtered map, a user's initial model.
        Every row is still scored against ``volume``.
    device : where to compute (``None``: CUDA when available).
    progress : progress bars and one line per row.

    Returns
    -------
    ``{contender: row}`` for the contenders run here, in :data:`CONTENDERS` order.
    """
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        raise ValueError(f"unknown contenders {sorted(unknown)}; choose among {list(CONTENDERS)}")
    subset = np.asarray(subset)
    if len(subset) < 4:
        raise ValueError(f"the contest needs at least 4 images; got {len(subset)}")
    all_images = torch.as_tensor(images, dtype=torch.float32)
    all_q = torch.as_tensor(quaternions, dtype=torch.float64)
    chosen = all_images[torch.from_numpy(subset)]
    true_q = all_q[torch.from_numpy(subset)]
    volume = torch.as_tensor(volume, dtype=torch.float32)
    wanted = [c for c in CONTENDERS if c in contenders and c not in done]
    rows: dict[str, dict] = {}

    def emit(name: str, row: dict, line: str) -> None:
        rows[name] = row
        if on_row is not None:
            on_row(name, row)
        if progress:
            print(f"{CONTENDERS[name]}: {line}", flush=True)

    def record(name: str, found_q: torch.Tensor, seconds: float, truth: torch.Tensor = true_q,
               stack: torch.Tensor = chosen, **extra) -> None:
        tic = time.perf_counter()
        framed = map_in_frame(stack, quaternion_to_matrix(found_q).float(), volume, pixel_size,
                              seed=settings.seed, device=device)
        row = score_orientations(truth, found_q, seed=settings.seed).to_dict() | {
            "seconds": seconds, "resolution": framed.resolution, "map_seconds": time.perf_counter() - tic,
            "n": len(found_q),
        } | extra
        emit(name, row,
             f"E_OR,reg {row['e_reg']:.3f} rad, FSC 0.5 {framed.resolution:.1f} Å ({seconds:.0f} s)")

    if "truth" in wanted:  # already in the true map's frame: reconstructed as is, no map alignment
        tic = time.perf_counter()
        volume_true = reconstruct(chosen, quaternion_to_matrix(true_q).float(), method="cgls",
                                  n_iterations=20, device=device, progress=False).volume.cpu()
        ceiling = resolution(*fourier_shell_correlation(volume_true, volume, pixel_size), 0.5)
        row = score_orientations(true_q, true_q, seed=settings.seed).to_dict() | {
            "seconds": 0.0, "resolution": ceiling, "map_seconds": time.perf_counter() - tic, "n": len(true_q)}
        emit("truth", row, f"FSC 0.5 {ceiling:.1f} Å")
    if "matching" in wanted:
        against = volume if reference is None else torch.as_tensor(reference, dtype=torch.float32)
        matches, seconds = match_to_map(chosen, against, device=device, progress=progress)
        record("matching", matrix_to_quaternion(matches.rotations), seconds)
    starts: dict[str, torch.Tensor] = {}
    needs = {REFINED_FROM[c] for c in wanted if c in REFINED_FROM}
    if "learned" in wanted or "learned" in needs:
        if model is None:
            raise ValueError("the learned contenders need the level's estimator (model)")
        tic = time.perf_counter()
        run = learned_recovery(model, all_images, all_q, subset, image_size, seed=settings.seed,
                               device=device)
        fixed = fix_gauge(chosen, run.recovery.quaternions.cpu(), seed=settings.seed, device=device,
                          progress=False)
        starts["learned"] = fixed.quaternions.cpu().double()
        if "learned" in wanted:
            record("learned", starts["learned"], time.perf_counter() - tic)
    if "common_lines" in wanted or "common_lines" in needs:
        found = common_lines_orientations(chosen, pixel_size, box_size=None, n_theta=settings.n_theta,
                                          seed=settings.seed)
        starts["common_lines"] = found.quaternions.double()
        if "common_lines" in wanted:
            record("common_lines", starts["common_lines"], found.seconds, n_theta=settings.n_theta)
    if "class_averages" in wanted:
        pool = np.asarray(pool)
        n_classes = min(len(subset), len(pool) // 2)
        averages = class_averages(all_images[torch.from_numpy(pool)], pixel_size, n_classes,
                                  n_neighbours=settings.n_neighbours, box_size=None, seed=settings.seed,
                                  allow_fewer=True)  # clean stacks: fewer classes pass the selection
        found = common_lines_orientations(averages.images, averages.pixel_size, box_size=None,
                                          n_theta=settings.n_theta, seed=settings.seed)
        record("class_averages", found.quaternions.double(), averages.seconds + found.seconds,
               truth=all_q[torch.from_numpy(pool[averages.references])],
               stack=torch.as_tensor(averages.images, dtype=torch.float32),
               n_theta=settings.n_theta, n_neighbours=settings.n_neighbours)
    if "random" in needs:
        starts["random"] = sample_orientations(len(subset), seed=settings.chance_seed)
    for name in (c for c in wanted if c in REFINED_FROM):
        tic = time.perf_counter()
        refinement = refine(chosen, quaternion_to_matrix(starts[REFINED_FROM[name]]), pixel_size=pixel_size,
                            max_rounds=settings.rounds, seed=settings.seed, device=device, progress=progress)
        record(name, matrix_to_quaternion(refinement.rotations), time.perf_counter() - tic,
               half_map_resolution=refinement.resolution, rounds=len(refinement.rounds),
               converged=refinement.converged)
    return rows


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}×" if b > 0 else "∞×"


def contest_verdict(levels: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    """Sentences that say who wins where, from the rows of :func:`contest_level` per level.

    Parameters
    ----------
    levels : ``{σ² as text: {contender: row}}``; rows need ``e_reg`` (the ``truth`` row, the
        ceiling, is not ranked).

    Returns
    -------
    One sentence per level (the ranking by mean ``E_OR,reg``, the error measure a user without the
    truth meets), then, where the rows exist, what the learned start gives against projection
    matching and what refinement does from the learned and from random starts.
    """
    lines = []
    for level, every in levels.items():
        rows = {c: r for c, r in every.items() if c != "truth"}
        if rows:
            ranking = sorted(rows, key=lambda c: rows[c]["e_reg"])
            ranked = "; ".join(f"{CONTENDERS.get(c, c)} {rows[c]['e_reg']:.3f} rad" for c in ranking)
            lines.append(f"σ² = {level}: lowest E_OR,reg first: {ranked}.")

    def having(*names: str) -> list[tuple[str, Mapping]]:
        return [(lv, r) for lv, r in levels.items() if all(n in r for n in names)]

    pairs = having("matching", "learned")
    if pairs:
        lost = [lv for lv, r in pairs if r["learned"]["e_reg"] > r["matching"]["e_reg"]]
        span = ", ".join(f"σ² = {lv}: {_ratio(r['learned']['e_reg'], r['matching']['e_reg'])}"
                         for lv, r in pairs)
        if len(lost) == len(pairs):
            where = "lose to projection matching against the true map at every level measured"
        elif not lost:
            where = "beat projection matching against the true map at every level measured"
        else:
            where = f"lose to projection matching at σ² = {', '.join(lost)} and win elsewhere"
        lines.append(f"Learned distances, unrefined, {where} (their E_OR,reg over matching's: {span}).")
    refined = having("learned+refined", "matching")
    if refined:
        span = ", ".join(f"σ² = {lv}: {r['learned+refined']['e_reg']:.3f} against "
                         f"{r['matching']['e_reg']:.3f} rad" for lv, r in refined)
        lines.append("Refined against the images' own half maps (no truth), the learned start ends at "
                     f"{span} (matching against the true map).")
    randoms = having("random+refined", "learned+refined")
    if randoms:
        fine = [lv for lv, r in randoms if r["random+refined"]["e_reg"] <= 2 * r["learned+refined"]["e_reg"]]
        worth = f"a random start does as well at σ² = {', '.join(fine)}" if fine else (
            "the initial model matters")
        span = ", ".join(f"σ² = {lv}: {r['random+refined']['e_reg']:.3f} rad" for lv, r in randoms)
        lines.append(f"The same refinement from random orientations ends at {span}: {worth}.")
    return lines
