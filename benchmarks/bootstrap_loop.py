"""Without the map, 3 (issue 33): the bootstrap loop from a low-resolution initial model.

The user's case: particles of an unknown structure and, at best, a low-resolution initial model of
it. This starts from the default profile's estimator trained on 5j0n low-pass filtered to
``--start`` Å (the estimators of ``benchmarks/degraded_maps.py``, trained here when missing: same
curriculum, same datasets) and runs ``--rounds`` rounds of :mod:`cryoorient.bootstrap` on the first
``--images`` test projections of the *true* 5j0n at each ``--noise`` level: recover, fix the gauge
from the images, refine against the particles' own half maps, fine-tune the estimator on
projections of their map. Nothing in the loop sees the truth.

Each round is scored against the truth afterwards: E_OR (O(4), the paper's), E_OR,reg (the
orientations as the loop left them, registered by a rotation), medians, shares within 5° and 10°,
the FSC 0.5 against the true map of the map from those orientations (put in the true map's frame,
:func:`cryoorient.refinement.map_in_frame`), and the half maps' own FSC-0.143 resolution (what a
user sees). Round 0 is the starting estimator alone (recover and gauge, no refinement).

Writes ``benchmarks/results/bootstrap_loop.json`` after every round, atomically; each level's
rounds are kept in ``data/bootstrap/LEVEL/round_K/`` and a rerun resumes after the last finished
one. About 6 min per round on two CPU cores at 400 images (most of it the fine-tuning), after the
starting estimator's training (about 75 min when ``degraded_maps.py`` has not trained it).

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/bootstrap_loop.py
        [--start 40] [--noise 0 matched] [--images 400] [--rounds 5]
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
from cryoorient.bootstrap import BootstrapSettings, run_rounds
from cryoorient.dataset import study_dataset
from cryoorient.density import load_map
from cryoorient.gauge import fix_gauge
from cryoorient.geometry import quaternion_to_matrix
from cryoorient.model_cache import noise_curriculum
from cryoorient.paths import data_dir, git_commit
from cryoorient.pipeline import recover_from_images
from cryoorient.refinement import map_in_frame
from cryoorient.study import default_study
from cryoorient.training import TrainingResult

RESULT = Path(__file__).resolve().parent / "results" / "bootstrap_loop.json"


def scored(true_q: torch.Tensor, found_q: torch.Tensor, images: torch.Tensor, volume: torch.Tensor,
           pixel_size: float, seed: int) -> dict:
    """Errors of ``found_q`` against the truth, and the FSC 0.5 of their map against the true map."""
    framed = map_in_frame(images, quaternion_to_matrix(found_q).float(), volume, pixel_size, seed=seed)
    return score_orientations(true_q, found_q, seed=seed).to_dict() | {"resolution": framed.resolution}


def run_level(result: dict, level: float, start: TrainingResult, args: argparse.Namespace,
              settings: BootstrapSettings, volume: torch.Tensor, key: str, commit: str) -> None:
    """Round 0 (the starting estimator alone) and the loop's rounds at one noise level, scored."""
    study = default_study()
    rows = result["levels"].setdefault(f"{level:g}", {})
    data = study_dataset(study, noise_variance=level, progress=False)
    subset = data.splits["test"][: args.images]
    images = torch.from_numpy(data.particles.images[subset]).float()
    true_q = torch.as_tensor(data.quaternions, dtype=torch.float64)[torch.from_numpy(subset)]
    pixel = data.particles.pixel_size

    def keep(name: str, row: dict) -> None:
        rows[name] = row | {"commit": commit}
        write_json(result, args.output)
        print(f"σ² = {level:g}, round {name}: E_OR {row['e_or']:.3f} rad, E_OR,reg {row['e_reg']:.3f} rad, "
              f"FSC 0.5 {row['resolution']:.1f} Å", flush=True)

    if "0" not in rows:
        tic = time.perf_counter()
        recovery, _ = recover_from_images(start.model, images, start.config.image_size, seed=study.seed,
                                          progress=False)
        fixed = fix_gauge(images, recovery.quaternions.cpu(), seed=study.seed, progress=False)
        row = scored(true_q, fixed.quaternions.cpu().double(), images, volume, pixel, study.seed)
        keep("0", row | {"seconds": time.perf_counter() - tic, "model": start.folder.name})

    def score_round(number: int, _folder: Path, quaternions: torch.Tensor) -> None:
        keep(str(number), scored(true_q, quaternions, images, volume, pixel, study.seed))

    folder = data_dir() / "bootstrap" / f"{key}-{level:g}"
    records = run_rounds(images, start.model, start.config, pixel, folder, args.rounds, settings=settings,
                         on_round=score_round, progress=False)
    for record in records:  # the loop's own numbers beside the scores (also for resumed rounds)
        if str(record["round"]) not in rows:  # finished in an earlier run whose scores were not kept here
            found = torch.from_numpy(np.load(folder / f"round_{record['round']}" / "quaternions.npy"))
            score_round(record["round"], folder, found)
        rows[str(record["round"])] |= {"half_map_resolution": record["half_map_resolution"],
                                       "round_seconds": sum(record["seconds"].values())}
    write_json(result, args.output)


def main(argv: list[str] | None = None) -> dict:
    """Train the starting estimator when missing, then run and score the rounds not yet measured."""
    study = default_study()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=float, default=40.0, help="Å of the initial model's low-pass")
    parser.add_argument("--noise", nargs="+", default=["0", "matched"],
                        help="σ² levels of the test images (numbers or 'matched')")
    parser.add_argument("--images", type=int, default=400, help="first N images of the test split")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the loop")
    parser.add_argument("--refine-rounds", type=int, default=4, help="refinement rounds in each round")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs in each round")
    parser.add_argument("--n-train", type=int, default=5000, help="projections of each round's map")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--trial-epochs", type=int, default=None,
                        help="epochs of the starting estimator's stages, for a quick trial (changes the key)")
    parser.add_argument("--output", type=Path, default=RESULT, help="the JSON (e.g. elsewhere for a trial)")
    args = parser.parse_args(argv)
    if not args.start > 0:
        raise SystemExit(f"--start must be a resolution in Å > 0; got {args.start:g}")
    torch.set_num_threads(args.threads)
    config, stage_epochs, levels, stages = curriculum_plan(study, args.noise, args.trial_epochs)
    settings = BootstrapSettings(refine_rounds=args.refine_rounds, n_train=args.n_train, epochs=args.epochs,
                                 seed=study.seed)
    truth_map = load_map(study.map_name, box_size=study.box_size, voxel_size=study.voxel_size)
    volume = torch.from_numpy(truth_map.data)
    parameters = {"images": args.images, "seed": study.seed, "map": truth_map.name, "start": args.start,
                  "box_size": study.box_size, "model": config.to_dict(), "curriculum_epochs": stage_epochs,
                  "settings": dataclasses.asdict(settings)}
    result = resumed_result(args.output, "bootstrap_loop", parameters, levels={})
    key = result["parameters_key"]
    commit = git_commit()
    training = study_dataset(study, noise_variance=0.0, map_low_pass=args.start)
    chain = noise_curriculum(training, config, stages, epochs=stage_epochs,
                             learning_rate=study.curriculum_learning_rate)
    for level in levels:
        run_level(result, level, chain[level], args, settings, volume, key, commit)
    print_levels(["σ²", "round", *CONTEST_HEADER, "half maps (Å)"], result["levels"],
                 lambda r: [*contest_cells(r), f"{r.get('half_map_resolution', float('nan')):.1f}"],
                 args.output)
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
