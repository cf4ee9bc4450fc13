"""The method end to end on a set of projections: learned distances → orientations → alignment.

Step (i) gives a trained estimator ``d̂_p`` (:mod:`cryoorient.training`); this module applies it to
projections whose orientations are to be recovered (the test split, as in the paper), recovers
the orientations from the estimated distances (:mod:`cryoorient.recovery`), aligns them with the
truth for evaluation (:mod:`cryoorient.alignment`) or, without the truth, fixes their gauge from the
images (:mod:`cryoorient.gauge`); :func:`cryoorient.relion.write_orientations`
writes them as a RELION particle STAR file so that any reconstruction program can use them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from cryoorient.alignment import AlignmentResult, align_orientations
from cryoorient.dataset import Dataset
from cryoorient.gauge import fix_gauge
from cryoorient.recovery import RecoveryResult, recover_orientations
from cryoorient.results import ResultsError, load_results
from cryoorient.siamese import SiameseDistance
from cryoorient.training import embed

__all__ = [
    "LearnedRecovery",
    "SavedRecovery",
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
    alignment : the O(4) alignment with the truth (``E_OR``, aligned orientations, proper or improper class).
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


@dataclass
class SavedRecovery:
    """One noise level's recovered orientations, as notebook 04 saved them or computed now.

    Attributes
    ----------
    recovered : (P, 4) float64 orientations as the recovery returned them (arbitrary O(4) gauge).
    aligned : (P, 4) float64 the same after the O(4) alignment with the truth (the paper's way).
    gauge_fixed : (P, 4) float64 the same with the gauge fixed from the images alone
        (:func:`cryoorient.gauge.fix_gauge`), or ``None`` when not asked for.
    e_or : ``E_OR`` of ``aligned``, radians.
    origin : ``"saved"`` (read from notebook 04's results) or ``"computed"``.
    """

    recovered: torch.Tensor
    aligned: torch.Tensor
    gauge_fixed: torch.Tensor | None
    e_or: float
    origin: str


def recovered_or_saved(
    models: dict[float, SiameseDistance],
    model_keys: dict[float, str],
    datasets: Callable[[float], Dataset],
    indices: np.ndarray,
    image_size: int | None,
    *,
    profile: str,
    gauge_levels: Iterable[float] = (),
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[float, SavedRecovery]:
    """Orientations recovered at each noise level: notebook 04's, else computed now.

    Notebook 04 saves the raw, aligned and gauge-fixed orientations of the levels it recovered; a
    later notebook reads them when they come from the same models (the cache keys agree) and
    recovers the others with :func:`learned_recovery` (and :func:`cryoorient.gauge.fix_gauge`,
    from that level's images), so it still runs on its own (e.g. in Colab).

    Parameters
    ----------
    models : ``{σ²: estimator}``; model_keys : ``{σ²: the estimator's cache key}``.
    datasets : ``σ² ↦`` the dataset whose images carry that noise (same orientations and splits).
    indices : the projections to recover (the test split).
    image_size : the estimators' input size.
    profile : the results profile to read notebook 04's orientations from.
    gauge_levels : the levels whose gauge-fixed orientations are wanted too.
    seed, device : as for :func:`learned_recovery`.

    Returns
    -------
    ``{σ²: SavedRecovery}``.
    """
    try:
        saved = load_results("04_orientation_recovery", profile)
    except ResultsError:
        saved = None
    wanted = {f"{level:g}" for level in gauge_levels}
    out = {}
    for level, model in models.items():
        key = f"{level:g}"
        entry = saved.values.get("learned", {}).get(key, {}) if saved is not None else {}
        names = [f"noise{key}/{kind}" for kind in ("recovered", "aligned", "gauge_fixed")]
        needed = names if key in wanted else names[:2]
        if entry.get("model") == model_keys[level] and all(name in saved.arrays for name in needed):
            arrays = [torch.as_tensor(saved.arrays[name], dtype=torch.float64) for name in needed]
            gauge = arrays[2] if key in wanted else None
            out[level] = SavedRecovery(arrays[0], arrays[1], gauge, float(entry["e_or"]), "saved")
            continue
        data = datasets(level)
        images = torch.from_numpy(data.particles.images)
        run = learned_recovery(model, images, data.quaternions, indices, image_size, seed=seed, device=device)
        gauge = None
        if key in wanted:
            fixed = fix_gauge(images[np.asarray(indices)], run.recovery.quaternions.cpu(), seed=seed,
                              device=device, progress=False)
            gauge = fixed.quaternions.cpu()
        raw = run.recovery.quaternions.cpu().to(torch.float64)
        out[level] = SavedRecovery(raw, run.alignment.aligned, gauge, run.alignment.error, "computed")
    return out
