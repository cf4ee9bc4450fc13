"""The bootstrap loop: orientations without the map, from an estimator trained on something else.

The distance estimator is trained on projections of a map; a user does not have the map of the
protein being solved, at best an initial model (a low-resolution map, a homologue) or an estimator
trained on other proteins. One round of the loop (issue 33 of the tracker):

1. **recover** the particles' orientations from the current estimator's distances
   (:func:`cryoorient.pipeline.recover_from_images`);
2. **fix the gauge** from the images (:func:`cryoorient.gauge.fix_gauge`), so the orientations
   are consistent with one map rather than an arbitrary O(4) image of it;
3. **refine** them against half maps of the particles themselves (:func:`cryoorient.refinement.refine`;
   no reference, no truth) and take the average of the two half maps as the round's map;
4. **fine-tune** the estimator on fresh projections of that map (uniform orientations, the
   estimator's own noise level drawn on the fly), starting from its current weights.

The next round recovers with the fine-tuned estimator. Everything here is reference-free: the map
is the particles' own; scoring against the truth is the caller's (a benchmark or notebook).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryoorient._checks import check_positive_int
from cryoorient.dataset import simulate_particles, split_indices
from cryoorient.density import DensityMap, write_map
from cryoorient.gauge import fix_gauge
from cryoorient.geometry import matrix_to_quaternion, quaternion_to_matrix
from cryoorient.paths import atomic_write
from cryoorient.pipeline import recover_from_images
from cryoorient.refinement import Refinement, refine
from cryoorient.sampling import sample_orientations
from cryoorient.siamese import SiameseDistance
from cryoorient.training import TrainingConfig, load_model, save_model, train_distance

__all__ = ["ROUND_RECORD", "BootstrapRound", "BootstrapSettings", "bootstrap_round", "run_rounds"]

ROUND_RECORD = "round.json"
"""Written last in a round's folder (beside ``model.pt``, ``map.mrc``, ``quaternions.npy``): the
round is complete, and a rerun loads it instead of running it again."""


@dataclass(frozen=True)
class BootstrapSettings:
    """How much each round does.

    Attributes
    ----------
    refine_rounds : rounds of :func:`~cryoorient.refinement.refine` (each two reconstructions and
        two local searches).
    n_train : projections of the round's map the estimator is fine-tuned on (half for training,
        the rest split between validation and a spare test part, as :func:`split_indices` does).
    epochs : fine-tuning epochs.
    learning_rate : fine-tuning peak learning rate (the curriculum's, 3e-4, by default).
    seed : seeds the recovery, the gauge, the halves, the projections and the fine-tuning; round
        ``k`` adds ``k`` so rounds draw different projections.
    """

    refine_rounds: int = 4
    n_train: int = 5000
    epochs: int = 10
    learning_rate: float = 3e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("refine_rounds", "n_train", "epochs"):
            check_positive_int(name, getattr(self, name))
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate!r}")


@dataclass
class BootstrapRound:
    """What one round found.

    Attributes
    ----------
    quaternions : (P, 4) float64 the particles' orientations after refinement (unit, scalar first),
        in the frame of the round's map.
    recovered : (P, 4) float64 the orientations after recovery and the gauge, before refinement.
    volume : (D, D, D) float32 the round's map ``[z, y, x]``: the mean of the refinement's half maps.
    refinement : the :class:`~cryoorient.refinement.Refinement` (half-map FSC, rounds).
    model : the estimator fine-tuned on the map's projections (the next round's).
    config : its configuration.
    history : the fine-tuning's learning curve.
    seconds : wall time of each step: ``recover``, ``gauge``, ``refine``, ``simulate``, ``train``.
    """

    quaternions: torch.Tensor
    recovered: torch.Tensor
    volume: torch.Tensor
    refinement: Refinement
    model: SiameseDistance
    config: TrainingConfig
    history: list[dict]
    seconds: dict[str, float]


def bootstrap_round(
    images: torch.Tensor | np.ndarray,
    model: SiameseDistance,
    config: TrainingConfig,
    pixel_size: float,
    *,
    settings: BootstrapSettings = BootstrapSettings(),
    number: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> BootstrapRound:
    """One round of the loop (see the module docstring) on a particle stack.

    Parameters
    ----------
    images : (P, D, D) centred particles ``[y, x]``, preprocessed as ``model``'s training images
        (unit variance over the stack), P >= 4.
    model, config : the current estimator and its configuration (its ``image_size`` and on-the-fly
        ``noise_variance`` carry over to the fine-tuning; a CTF ``treatment`` is not supported).
    pixel_size : Å per pixel of the particles.
    settings : :class:`BootstrapSettings`.
    number : the round's number (0 first), added to the seed.
    device : where to compute (``None``: CUDA when available).
    progress : progress bars and one line per step.

    Returns
    -------
    :class:`BootstrapRound`.
    """
    if config.treatment is not None:
        raise ValueError("the bootstrap loop does not handle a CTF yet: use an estimator without a treatment")
    images = torch.as_tensor(images, dtype=torch.float32)
    seed = settings.seed + int(number)
    seconds = {}

    tic = time.perf_counter()
    recovery, _ = recover_from_images(model, images, config.image_size, seed=seed, device=device,
                                      progress=progress)
    seconds["recover"] = time.perf_counter() - tic
    tic = time.perf_counter()
    gauge = fix_gauge(images, recovery.quaternions.cpu(), seed=seed, device=device, progress=progress)
    recovered = gauge.quaternions.cpu().double()
    seconds["gauge"] = time.perf_counter() - tic

    tic = time.perf_counter()
    refinement = refine(images, quaternion_to_matrix(recovered), pixel_size=pixel_size,
                        max_rounds=settings.refine_rounds, seed=seed, device=device, progress=progress)
    volume = (refinement.half_maps[0] + refinement.half_maps[1]) / 2
    seconds["refine"] = time.perf_counter() - tic

    tic = time.perf_counter()
    density = DensityMap(volume.numpy(), pixel_size, name=f"bootstrap round {number}", source="bootstrap")
    orientations = sample_orientations(settings.n_train, seed=seed)
    simulated = simulate_particles(density, orientations, seed=seed, device=device, progress=progress)
    seconds["simulate"] = time.perf_counter() - tic

    tic = time.perf_counter()
    tuned = dataclasses.replace(config, epochs=settings.epochs, learning_rate=settings.learning_rate,
                                warm_start=None, seed=seed, patience=None)
    result = train_distance(torch.from_numpy(simulated.images), orientations,
                            split_indices(settings.n_train, seed=seed), tuned, device=device,
                            progress=progress, initial=model.state_dict())
    seconds["train"] = time.perf_counter() - tic
    return BootstrapRound(
        quaternions=matrix_to_quaternion(refinement.rotations).double(),
        recovered=recovered,
        volume=volume,
        refinement=refinement,
        model=result.model.eval(),
        config=tuned,
        history=result.history,
        seconds=seconds,
    )


def _save_round(folder: Path, found: BootstrapRound, pixel_size: float, number: int) -> dict:
    """Write a round's model, map and orientations; returns its record (written by the caller, last)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_model(found.model, found.config, folder / "model.pt")
    write_map(folder / "map.mrc", DensityMap(found.volume.numpy(), pixel_size, name=f"round {number}",
                                              source="cryoorient bootstrap"))
    atomic_write(folder / "quaternions.npy", lambda f: np.save(f, found.quaternions.numpy()))
    record = {
        "round": number,
        "half_map_resolution": found.refinement.resolution,
        "refinement_rounds": len(found.refinement.rounds),
        "converged": found.refinement.converged,
        "validation_mae": found.history[-1]["validation_mae"] if found.history else None,
        "seconds": found.seconds,
    }
    return record


def run_rounds(
    images: torch.Tensor | np.ndarray,
    model: SiameseDistance,
    config: TrainingConfig,
    pixel_size: float,
    folder: str | Path,
    rounds: int,
    *,
    settings: BootstrapSettings = BootstrapSettings(),
    on_round: Callable[[int, Path, torch.Tensor], None] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> list[dict]:
    """``rounds`` rounds of the loop, each kept in ``folder/round_K/`` (K = 1, 2, ...), resumable.

    A round whose folder holds its record (:data:`ROUND_RECORD`) was finished: its estimator is
    loaded and the loop goes on from it, so an interrupted run loses at most the round in progress.

    Parameters
    ----------
    images, model, config, pixel_size, settings, device, progress : as for :func:`bootstrap_round`
        (``model`` starts round 1).
    folder : where the rounds go.
    rounds : how many rounds in all (finished ones included).
    on_round : called for each round run here with its number, its folder and (P, 4) quaternions,
        after its files and before its record (e.g. to write the particles' STAR file there, so a
        round interrupted in between is run again whole).

    Returns
    -------
    Every round's record, in order.
    """
    rounds = check_positive_int("rounds", rounds)
    folder = Path(folder)
    records = []
    for number in range(1, rounds + 1):
        here = folder / f"round_{number}"
        if (here / ROUND_RECORD).is_file():
            model, config = load_model(here / "model.pt", device=device)
            records.append(json.loads((here / ROUND_RECORD).read_text()))
            continue
        found = bootstrap_round(images, model, config, pixel_size, settings=settings, number=number,
                                device=device, progress=progress)
        record = _save_round(here, found, pixel_size, number)
        if on_round is not None:
            on_round(number, here, found.quaternions)
        text = (json.dumps(record, indent=2) + "\n").encode()
        atomic_write(here / ROUND_RECORD, lambda f, text=text: f.write(text))
        records.append(record)
        model, config = found.model, found.config
    return records
