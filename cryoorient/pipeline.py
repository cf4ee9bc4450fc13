"""The method end to end on a set of projections: learned distances → orientations → alignment.

Step (i) gives a trained estimator ``d̂_p`` (:mod:`cryoorient.training`); this module applies it to
projections whose orientations are to be recovered (the test split, as in the paper), recovers
the orientations from the estimated distances (:mod:`cryoorient.recovery`), aligns them with the
truth for evaluation (:mod:`cryoorient.alignment`); :func:`cryoorient.relion.write_orientations`
writes them as a RELION particle STAR file so that any reconstruction program can use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cryoorient.alignment import AlignmentResult, align_orientations
from cryoorient.dataset import Dataset
from cryoorient.recovery import RecoveryResult, recover_orientations
from cryoorient.results import ResultsError, load_results
from cryoorient.siamese import SiameseDistance
from cryoorient.training import embed

__all__ = [
    "LearnedRecovery",
    "estimated_distances",
    "learned_recovery",
    "recovered_or_saved",
]


@dataclass
class LearnedRecovery:
    """Orientations recovered from learned distances, and their evaluation.

    Attributes
    ----------
    indices : (P,) indices of the projections in their dataset.
    distances : (P, P) estimated distances ``d̂_p``, radians.
    true : (P, 4) true orientations (used only by the alignment).
    recovery : the recovery (``L_OR`` curve, raw orientations).
    alignment : the O(4) alignment with the truth (``E_OR``, aligned orientations, handedness).
    """

    indices: np.ndarray
    distances: torch.Tensor
    true: torch.Tensor
    recovery: RecoveryResult
    alignment: AlignmentResult


def estimated_distances(
    model: SiameseDistance,
    images: torch.Tensor,
    image_size: int | None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """All estimated distances ``D[i, j] = d̂_p(p_i, p_j)`` of a stack, features computed once.

    Parameters
    ----------
    model : the trained estimator.
    images : (P, D, D) projections, normalised as the training data.
    image_size : the size the model was trained at.
    device : where to run the network.

    Returns
    -------
    (P, P) float64 symmetric distances with a zero diagonal, radians.
    """
    features = embed(model, torch.as_tensor(images), image_size, device=device)
    with torch.no_grad():
        d = model.pairwise(features).double()
    d = (d + d.T) / 2
    d.fill_diagonal_(0.0)
    return d


def learned_recovery(
    model: SiameseDistance,
    images: torch.Tensor,
    quaternions: torch.Tensor,
    indices: np.ndarray,
    image_size: int | None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> LearnedRecovery:
    """Recover the orientations of ``images[indices]`` from the estimator's distances.

    Parameters
    ----------
    model : the trained estimator (its ``d_f`` must be bounded by π: cosine or orientation).
    images : (N, D, D) projections of the dataset (already noisy if the experiment is).
    quaternions : (N, 4) their true orientations, for the evaluation only.
    indices : the projections to recover (e.g. the test split), P >= 4.
    image_size : the size the model was trained at.
    seed : seed of the recovery's and alignment's random starts.
    device : where to run the network.
    """
    if model.config["distance"] == "euclidean":
        raise ValueError(
            "Euclidean feature distances are not radians; recover from a cosine or orientation d_f"
        )
    indices = np.asarray(indices)
    images = torch.as_tensor(images)
    distances = estimated_distances(model, images[indices], image_size, device=device)
    recovery = recover_orientations(distances, seed=seed)
    true = torch.as_tensor(quaternions, dtype=torch.float64)[indices]
    alignment = align_orientations(true, recovery.quaternions.cpu(), seed=seed)
    return LearnedRecovery(indices, distances, true, recovery, alignment)


def recovered_or_saved(
    models: dict[float, SiameseDistance],
    model_keys: dict[float, str],
    datasets: Callable[[float], Dataset],
    indices: np.ndarray,
    image_size: int | None,
    *,
    profile: str,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[float, tuple[torch.Tensor, float, str]]:
    """Truth-aligned orientations recovered at each noise level: notebook 04's, else computed now.

    Notebook 04 saves the aligned orientations of every level it recovered; a later notebook reads
    them when they come from the same models (the cache keys agree) and recovers the others with
    :func:`learned_recovery`, so it still runs on its own (e.g. in Colab).

    Parameters
    ----------
    models : ``{σ²: estimator}``; model_keys : ``{σ²: the estimator's cache key}``.
    datasets : ``σ² ↦`` the dataset whose images carry that noise (same orientations and splits).
    indices : the projections to recover (the test split).
    image_size : the estimators' input size.
    profile : the results profile to read notebook 04's orientations from.
    seed, device : as for :func:`learned_recovery`.

    Returns
    -------
    ``{σ²: ((P, 4) aligned quaternions, E_OR in radians, "saved" or "computed")}``.
    """
    try:
        saved = load_results("04_orientation_recovery", profile)
    except ResultsError:
        saved = None
    out = {}
    for level, model in models.items():
        entry = saved.values.get("learned", {}).get(f"{level:g}", {}) if saved is not None else {}
        name = f"noise{level:g}/aligned"
        if entry.get("model") == model_keys[level] and name in saved.arrays:
            out[level] = (torch.as_tensor(saved.arrays[name], dtype=torch.float64), entry["e_or"], "saved")
            continue
        data = datasets(level)
        run = learned_recovery(model, torch.from_numpy(data.particles.images), data.quaternions, indices,
                               image_size, seed=seed, device=device)  # fmt: skip
        out[level] = (run.alignment.aligned, run.alignment.error, "computed")
    return out
