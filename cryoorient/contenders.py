"""Who orients best: one stack's orientations by each contender, refined alike and scored alike.

The study of issue 32 ("who wins where") asks, on the same test images at each noise level:

* **matching** against the true map (:func:`match_to_map`): the baseline anyone holding the map
  the estimator was trained on would use;
* **learned** distances → recovery → gauge fixed from the images (the method; its orientations
  come from :mod:`cryoorient.pipeline`);
* **common lines** (ASPIRE, :mod:`cryoorient.common_lines`);
* **random** orientations (what no information gives);

and each of the last three followed by the same **refinement** against maps reconstructed from
the images alone (:func:`refine_from`, :func:`cryoorient.refinement.refine`).

Every set of orientations is scored the same way (:func:`score`): ``E_OR`` (the paper's O(4)
alignment with the truth) and ``E_OR,reg`` (the best global rotation and mirror only, what a user
without the truth can reproduce), means and medians, and the share of images within 5° and 10°
after that registration; and the map made from the images with them, brought into the true map's
frame by a map-to-map alignment (:func:`cryoorient.refinement.map_in_frame`), by its FSC-0.5
resolution against the true map (:func:`map_score`). The truth enters the scores only.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from cryoorient._checks import Device
from cryoorient.alignment import align_orientations, register_orientations
from cryoorient.geometry import matrix_to_quaternion, quaternion_to_matrix
from cryoorient.matching import global_search, grid_spacing, local_search, orientation_grid
from cryoorient.refinement import Refinement, map_in_frame, refine

__all__ = ["Score", "map_score", "match_to_map", "refine_from", "score"]


@dataclass(frozen=True)
class Score:
    """How close a set of orientations is to the truth.

    Attributes
    ----------
    e_or, e_or_median : mean (the paper's ``E_OR``) and median error after the best O(4)
        transform, radians.
    e_reg, e_reg_median : mean (``E_OR,reg``) and median error after the best global rotation and
        mirror only, radians.
    within_5, within_10 : fraction of images whose error after that registration is below 5° and
        10°.
    """

    e_or: float
    e_or_median: float
    e_reg: float
    e_reg_median: float
    within_5: float
    within_10: float

    def to_dict(self) -> dict[str, float]:
        """Plain floats by field name, for JSON."""
        return asdict(self)


def score(true_q: torch.Tensor, found_q: torch.Tensor, *, seed: int = 0) -> Score:
    """:class:`Score` of ``found_q`` against ``true_q``, both (P, 4) unit quaternions, scalar first."""
    true_q = torch.as_tensor(true_q, dtype=torch.float64)
    found_q = torch.as_tensor(found_q, dtype=torch.float64)
    o4 = align_orientations(true_q, found_q, seed=seed)
    reg = register_orientations(true_q, found_q)
    errors = reg.errors.double()
    return Score(
        e_or=float(o4.error),
        e_or_median=float(o4.errors.median()),
        e_reg=float(reg.error),
        e_reg_median=float(errors.median()),
        within_5=float((errors < math.radians(5)).double().mean()),
        within_10=float((errors < math.radians(10)).double().mean()),
    )


def map_score(
    images: torch.Tensor,
    rotations: torch.Tensor,
    truth: torch.Tensor | np.ndarray,
    pixel_size: float,
    *,
    method: str = "cgls",
    n_iterations: int = 20,
    seed: int = 0,
    device: Device = None,
) -> float:
    """FSC-0.5 resolution (Å) against ``truth`` of the map the ``images`` give with ``rotations``.

    The map is made in the frame of ``rotations`` (any global rotation and the mirror), aligned onto
    ``truth`` from the two maps alone, and made again in ``truth``'s frame
    (:func:`cryoorient.refinement.map_in_frame`; ``method`` and ``n_iterations`` as
    :func:`cryoorient.reconstruction.reconstruct`).
    """
    framed = map_in_frame(images, rotations, truth, pixel_size, method=method, n_iterations=n_iterations,
                          seed=seed, device=device)
    return framed.resolution


def match_to_map(
    images: torch.Tensor,
    volume: torch.Tensor,
    *,
    directions: int = 1000,
    in_plane: int = 48,
    max_frequency: float = 0.25,
    device: Device = None,
    progress: bool = False,
) -> tuple[torch.Tensor, float]:
    """Orientations of ``images`` by projection matching against ``volume``, and the seconds taken.

    A global search over ``directions`` × ``in_plane`` orientations
    (:func:`cryoorient.matching.orientation_grid`) compared up to ``max_frequency`` (cycles per
    pixel), then a local search up to Nyquist from half the grid's spacing.

    Returns
    -------
    ``((N, 3, 3) float64 RELION matrices, seconds)``.
    """
    start = time.perf_counter()
    grid = orientation_grid(directions, in_plane)
    coarse = global_search(images, volume, grid, max_frequency=max_frequency, device=device,
                           progress=progress)
    fine = local_search(images, volume, coarse.rotations, step=grid_spacing(directions, in_plane) / 2,
                        device=device, progress=progress)
    return fine.rotations, time.perf_counter() - start


def refine_from(
    images: torch.Tensor,
    start_q: torch.Tensor,
    pixel_size: float,
    *,
    max_rounds: int = 8,
    step: float = math.radians(4),
    method: str = "cgls",
    n_iterations: int = 10,
    seed: int = 0,
    device: Device = None,
    progress: bool = False,
) -> tuple[Refinement, torch.Tensor, float]:
    """Refine orientations ``start_q`` ((P, 4) quaternions in any gauge) against the images' own maps.

    The gold-standard loop of :func:`cryoorient.refinement.refine` (its ``max_rounds``, ``step``,
    ``method``, ``n_iterations``, ``seed``); no truth is used.

    Returns
    -------
    ``(refinement, (P, 4) refined quaternions, seconds)``.
    """
    start = time.perf_counter()
    rotations = quaternion_to_matrix(torch.as_tensor(start_q, dtype=torch.float64))
    result = refine(images, rotations, pixel_size=pixel_size, max_rounds=max_rounds, step=step,
                    method=method, n_iterations=n_iterations, seed=seed, device=device, progress=progress)
    return result, matrix_to_quaternion(result.rotations), time.perf_counter() - start
