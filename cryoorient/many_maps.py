"""One estimator trained on many maps, projections drawn on the fly (issue 33, "many proteins").

An estimator that never saw the protein it orients must learn from others. Training on ``N`` maps
the way :func:`cryoorient.training.train_distance` trains on one dataset would hold ``N`` stacks of
projections in memory; here each step projects a batch afresh instead: it picks one map, draws
``batch_size`` orientations uniform on SO(3), projects them (:func:`cryoorient.projection.project`),
scales them by that map's own projection scale (so each map's projections have unit variance, as a
dataset's stack does), adds the configuration's noise and shifts, and takes every pair of the batch
(the in-batch recipe's pairs, weighted by the inverse density of uniform-orientation distances).
A batch never mixes maps: the distance between projections of two different proteins has no
orientation to estimate. Memory is the maps themselves (``N · D³`` floats, 1 MiB per 64³ map) and
one batch, whatever ``N``; the data never repeat, so there is no epoch in the dataset's sense: an
"epoch" is ``steps_per_epoch`` steps, then validation and a checkpoint.

Validation uses fixed images given by the caller (e.g. projections of a held-out map, or of each
training map), so the learning curve says what the caller wants it to.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoorient._checks import check_positive_int, resolve_device
from cryoorient.geometry import quaternion_distance, quaternion_to_matrix
from cryoorient.projection import project
from cryoorient.recipes import distance_weights
from cryoorient.sampling import sample_orientations
from cryoorient.training import (
    TrainingConfig,
    TrainingResult,
    _batch_loss,
    _check_finite,
    _initial_model,
    _resume,
    _save_atomic,
    _seeded,
    _write_history,
    evaluate_distances,
    prepare_images,
    save_model,
    split_pairs,
)

__all__ = ["projection_scales", "train_on_maps"]

#: Orientations whose projections set each map's scale (:func:`projection_scales`).
SCALE_PROBES = 256


def projection_scales(volumes: Sequence[torch.Tensor], *, seed: int = 0, device=None) -> torch.Tensor:
    """(N,) the standard deviation of each map's projections over :data:`SCALE_PROBES` random orientations.

    Dividing a map's projections by it gives them unit variance, as a dataset's normalised stack
    has (:func:`cryoorient.projection.normalize_images`), whatever the map's own scale.
    """
    rotations = quaternion_to_matrix(sample_orientations(SCALE_PROBES, seed=seed)).float()
    scales = []
    for volume in volumes:
        images = project(torch.as_tensor(volume, dtype=torch.float32), rotations, device=device).cpu()
        scales.append(float(images.double().std()))
    if not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError("every map must have projections of non-zero, finite variance")
    return torch.tensor(scales, dtype=torch.float64)


def train_on_maps(
    volumes: Sequence[torch.Tensor | np.ndarray],
    config: TrainingConfig,
    validation_images: torch.Tensor,
    validation_quaternions: torch.Tensor,
    *,
    steps_per_epoch: int,
    folder: str | Path | None = None,
    resume: bool = True,
    device: torch.device | str | None = None,
    progress: bool = True,
    initial: dict | None = None,
) -> TrainingResult:
    """Train one estimator on projections of every map in ``volumes``, drawn on the fly.

    Parameters
    ----------
    volumes : N (D, D, D) maps ``[z, y, x]``, all on the same grid (box and voxel size).
    config : the training configuration: the ``inbatch`` recipe (AdamW, cosine schedule over
        ``epochs × steps_per_epoch`` steps), no CTF treatment; ``batch_size`` images per step.
    validation_images : (M, D, D) fixed validation images (unit variance; noise is added as in
        training, from a fixed seed); validation_quaternions : (M, 4) their orientations.
    steps_per_epoch : steps between validations and checkpoints.
    folder, resume, device, progress, initial : as for :func:`cryoorient.training.train_distance`
        (``checkpoint.pt`` after every epoch, ``model.pt`` and ``history.json`` at the end).

    Returns
    -------
    The :class:`~cryoorient.training.TrainingResult`; ``history`` also counts each epoch's steps
    per map (``steps_per_map``).
    """
    if config.recipe != "inbatch" or config.treatment is not None:
        raise ValueError("train_on_maps takes the inbatch recipe without a CTF treatment")
    steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
    maps = [torch.as_tensor(v, dtype=torch.float32) for v in volumes]
    if not maps or any(v.ndim != 3 or v.shape != maps[0].shape for v in maps):
        raise ValueError("volumes must be one or more (D, D, D) maps of the same shape")
    device = resolve_device(device)
    scales = projection_scales(maps, seed=config.seed, device=device)
    validation_quaternions = torch.as_tensor(validation_quaternions, dtype=torch.float64)
    val_pairs = split_pairs(validation_quaternions, np.arange(len(validation_quaternions)),
                            config.validation_pairs, seed=_seeded(config, 2))
    reference_q = sample_orientations(2 * 4096, seed=_seeded(config, 1))
    reference = quaternion_distance(reference_q[:4096], reference_q[4096:])  # uniform pairs' distances

    model = _initial_model(config, initial, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    folder = Path(folder) if folder is not None else None
    start, history = 0, []
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        if resume and (folder / "checkpoint.pt").exists():
            start, history = _resume(folder / "checkpoint.pt", config, model, optimizer, scheduler, device)
    elapsed = history[-1]["seconds"] if history else 0.0
    i, j = torch.triu_indices(config.batch_size, config.batch_size, offset=1)
    bar = tqdm(range(start, config.epochs), desc="training on maps", unit="epoch", disable=not progress,
               initial=start, total=config.epochs)
    for epoch in bar:
        tic = time.perf_counter()
        rng = _seeded(config, 3, epoch)
        model.train()
        losses, counts = [], np.zeros(len(maps), dtype=int)
        for _ in range(steps_per_epoch):
            m = int(rng.integers(len(maps)))
            counts[m] += 1
            q = sample_orientations(config.batch_size, seed=rng)
            images = project(maps[m], quaternion_to_matrix(q).float(), device=device).cpu() / scales[m]
            x = prepare_images(images.float(), config.image_size, noise_variance=config.noise_variance,
                               shift_limit=config.shift_limit, generator=rng).to(device)
            target = quaternion_distance(q[i], q[j]).float()
            weight = distance_weights(target, reference)
            loss = _batch_loss(model, model.network, x, i.to(device), j.to(device), target.to(device),
                               weight.to(device), config.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        _check_finite(losses, epoch + 1, folder)
        val = evaluate_distances(model, validation_images, validation_quaternions, val_pairs,
                                 config.image_size, device=device, noise_variance=config.noise_variance,
                                 shift_limit=config.shift_limit, seed=_seeded(config, 4))
        elapsed += time.perf_counter() - tic
        _check_finite([val["loss"]], epoch + 1, folder, "validation")
        history.append({
            "epoch": epoch + 1, "train_loss": float(np.mean(losses)), "validation_loss": val["loss"],
            "validation_mae": val["mae"], "learning_rate": optimizer.param_groups[0]["lr"],
            "seconds": elapsed, "steps_per_map": counts.tolist(),
        })
        bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val=f"{val['loss']:.3f}")
        if folder is not None:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                     "history": history, "config": config.to_dict(), "scheduler": scheduler.state_dict()}
            _save_atomic(state, folder / "checkpoint.pt")
    if folder is not None:
        save_model(model, config, folder / "model.pt")
        _write_history(folder / "history.json", history)
    return TrainingResult(model.eval(), config, history, folder)
