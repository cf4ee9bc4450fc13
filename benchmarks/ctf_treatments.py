"""With a CTF (issue 34): how each input treatment lets the estimator see through the CTF.

Every real particle is its projection convolved with the microscope's CTF, a defocus per particle.
For each ``--treatments`` entry this trains the default profile's estimator and noise curriculum on
CTF-affected projections of 5j0n (the default dataset's orientations and splits, defocus uniform in
1.0-2.5 µm, 300 kV, Cs 2.7 mm, 10 % amplitude contrast; no astigmatism, so in-plane rotations stay
exact; normalised to unit variance after the CTF, noise added after that, as a detector adds it),
each image prepared for the network after the noise (:mod:`cryoorient.ctf_correction`):

- ``raw``: as recorded;
- ``phase_flip``: every frequency times the sign of its CTF;
- ``wiener``: ``CTF / (CTF² + σ²)``, the σ² trained at (floored at 0.01);
- ``two_channel``: raw and phase-flipped side by side (the network takes two channels);
- ``none``: the reference point, the shipped estimators on the same projections *without* a CTF.

At each ``--noise`` level it orients the first ``--images`` test projections (with a CTF, at that
σ²): distances, recovery, the gauge fixed from the phase-flipped images (common lines, as ASPIRE
phase-flips before them). Rows: E_OR (O(4), the paper's), E_OR,reg (the gauge found from the
images, what a user meets), medians, shares within 5° and 10°; FSC 0.5 against the true map of the
map from those orientations with the CTF in the reconstruction's forward model (CGLS), and, for
contrast, of the map that ignores the CTF. Per level, ``truth`` rows give both maps from the true
orientations: the ceiling.

Writes ``benchmarks/results/ctf_treatments.json`` after every row, atomically; a rerun with the same
parameters skips the rows already there. Trainings are cached in ``data/models`` and resume from
their last epoch: the noiseless estimator (40 epochs) then one fine-tuned stage per curriculum level
up to the last ``--noise`` level (20 epochs each), about 90 min per treatment on two CPU cores up to
σ² = 16. Ship each treatment's models (``python -m cryoorient.model_cache KEY --orientations
uniform``) as soon as they are trained.

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/ctf_treatments.py
        [--treatments none phase_flip raw wiener two_channel] [--noise 0 matched 16] [--images 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from _common import (
    CONTEST_HEADER,
    contest_cells,
    curriculum_plan,
    print_levels,
    resumed_result,
    write_json,
)

from cryoorient.alignment import score_orientations
from cryoorient.ctf_correction import TREATMENTS, ctf_grids, phase_flip
from cryoorient.dataset import Dataset, SimulationParameters, study_dataset
from cryoorient.density import load_map
from cryoorient.fsc import fourier_shell_correlation, resolution
from cryoorient.gauge import fix_gauge
from cryoorient.geometry import quaternion_to_matrix
from cryoorient.model_cache import noise_curriculum
from cryoorient.paths import git_commit
from cryoorient.pipeline import learned_recovery
from cryoorient.reconstruction import reconstruct
from cryoorient.refinement import map_in_frame
from cryoorient.study import default_study
from cryoorient.training import TrainingResult, input_treatment

RESULT = Path(__file__).resolve().parent / "results" / "ctf_treatments.json"
CHOICES = ("none", *TREATMENTS)


def dataset_ctfs(data: Dataset) -> torch.Tensor | None:
    """(N, D, D) CTFs of the dataset's particles, ``None`` without a CTF."""
    ctf = data.particles.ctf
    return None if ctf is None else ctf_grids(ctf, data.particles.images.shape[-1], data.particles.pixel_size)


def learned_row(
    estimator: TrainingResult, data: Dataset, subset: np.ndarray, volume: torch.Tensor, seed: int
) -> dict:
    """One treatment at one level: orientations from the estimator's distances, scored, and their maps."""
    images = torch.from_numpy(data.particles.images)
    pixel = data.particles.pixel_size
    config = estimator.config
    every_ctf = dataset_ctfs(data)
    ctf = None if every_ctf is None else every_ctf[torch.from_numpy(subset)]
    tic = time.perf_counter()
    run = learned_recovery(estimator.model, images, data.quaternions, subset, config.image_size, seed=seed,
                           ctf=every_ctf, treatment=input_treatment(config))
    chosen = images[torch.from_numpy(subset)].float()
    seen = chosen if ctf is None else phase_flip(chosen, ctf)
    fixed = fix_gauge(seen, run.recovery.quaternions.cpu(), seed=seed, progress=False)
    seconds = time.perf_counter() - tic
    found = fixed.quaternions.cpu().double()
    true_q = torch.as_tensor(data.quaternions, dtype=torch.float64)[torch.from_numpy(subset)]
    rotations = quaternion_to_matrix(found).float()
    row = score_orientations(true_q, found, seed=seed).to_dict() | {
        "seconds": seconds, "n": len(subset), "model": estimator.folder.name if estimator.folder else None,
        "resolution": map_in_frame(chosen, rotations, volume, pixel, seed=seed, ctf=ctf).resolution,
    }
    if ctf is not None:
        row["resolution_uncorrected"] = map_in_frame(chosen, rotations, volume, pixel, seed=seed).resolution
    return row


def truth_row(data: Dataset, subset: np.ndarray, volume: torch.Tensor) -> dict:
    """The maps from the true orientations of the same CTF-affected images: corrected, and not."""
    chosen = torch.from_numpy(data.particles.images[subset]).float()
    rotations = quaternion_to_matrix(torch.as_tensor(data.quaternions, dtype=torch.float64)[subset]).float()
    pixel = data.particles.pixel_size

    def fsc_05(ctf: torch.Tensor | None) -> float:
        volume_found = reconstruct(chosen, rotations, ctf=ctf, n_iterations=20, progress=False).volume.cpu()
        return resolution(*fourier_shell_correlation(volume_found, volume, pixel), 0.5)

    ctf = dataset_ctfs(data)[torch.from_numpy(subset)]
    return {"resolution": fsc_05(ctf), "resolution_uncorrected": fsc_05(None), "n": len(subset)}


def main(argv: list[str] | None = None) -> dict:
    """Train what is missing, run the rows asked for, skip those already measured."""
    study = default_study()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--treatments", nargs="+", choices=CHOICES, default=list(CHOICES),
                        help="input treatments to train and test ('none': the shipped CTF-free estimators)")
    parser.add_argument("--noise", nargs="+", default=["0", "matched", "16"],
                        help="σ² levels of the test images (numbers or 'matched')")
    parser.add_argument("--images", type=int, default=400, help="first N images of the test split")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--trial-epochs", type=int, default=None,
                        help="epochs of every training stage, for a quick trial (changes the results' key)")
    parser.add_argument("--output", type=Path, default=RESULT, help="the JSON (e.g. elsewhere for a trial)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config, stage_epochs, levels, stages = curriculum_plan(study, args.noise, args.trial_epochs)
    truth_map = load_map(study.map_name, box_size=study.box_size, voxel_size=study.voxel_size)
    volume = torch.from_numpy(truth_map.data)
    simulated = SimulationParameters(**study.simulation(ctf=True))
    parameters = {"images": args.images, "seed": study.seed, "map": truth_map.name,
                  "box_size": study.box_size, "pixel_size": truth_map.voxel_size,
                  "defocus_range": list(simulated.defocus_range), "model": config.to_dict(),
                  "curriculum_epochs": stage_epochs}
    result = resumed_result(args.output, "ctf_treatments", parameters, levels={})
    commit = git_commit()

    def keep(level: float, name: str, row: dict) -> None:
        result["levels"].setdefault(f"{level:g}", {})[name] = row | {"commit": commit}
        write_json(result, args.output)

    for level in levels:
        if "truth" not in result["levels"].get(f"{level:g}", {}):
            data = study_dataset(study, noise_variance=level, ctf=True, progress=False)
            keep(level, "truth", truth_row(data, data.splits["test"][: args.images], volume))
    for treatment in args.treatments:
        with_ctf = treatment != "none"
        trained = dataclasses.replace(config, treatment=treatment if with_ctf else None)
        print(f"treatment: {treatment}", flush=True)
        training = study_dataset(study, noise_variance=0.0, ctf=with_ctf)
        chain = noise_curriculum(training, trained, stages, epochs=stage_epochs,
                                 learning_rate=study.curriculum_learning_rate)
        for level in levels:
            if treatment in result["levels"].get(f"{level:g}", {}):
                continue
            data = study_dataset(study, noise_variance=level, ctf=with_ctf, progress=False)
            subset = data.splits["test"][: args.images]
            row = learned_row(chain[level], data, subset, volume, study.seed)
            keep(level, treatment, row)
            print(f"σ² = {level:g}: E_OR {row['e_or']:.3f} rad, E_OR,reg {row['e_reg']:.3f} rad, "
                  f"FSC 0.5 {row['resolution']:.1f} Å", flush=True)
    def cells(r: dict) -> list[str]:
        errors = contest_cells(r) if "e_or" in r else ["", "", "", "", "", f"{r['resolution']:.1f}"]
        return [*errors, f"{r['resolution_uncorrected']:.1f}" if "resolution_uncorrected" in r else ""]

    print_levels(["σ²", "treatment", *CONTEST_HEADER, "ignoring the CTF (Å)"], result["levels"], cells,
                 args.output)
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
