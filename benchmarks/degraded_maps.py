"""Without the map, 1 (issue 33): estimators trained on the map low-pass filtered, the initial-model case.

A user does not have the map whose projections the estimator is trained on; at best a
low-resolution initial model of it. For each ``--resolutions`` (Å), this trains the default
profile's estimators, with the same noise curriculum, on projections of 5j0n low-pass filtered to
that resolution (:func:`cryoorient.filters.low_pass`; the same orientations, splits and noise
draws as the default datasets), then orients the *true* test images at each ``--noise`` level:

- ``learned``: the estimator's distances, recovery, the gauge fixed from the images;
- ``matching``: projection matching against the same filtered map, what the user holding that
  map could do instead (a fair competitor).

Every row is scored against the true orientations (E_OR, E_OR,reg, medians, share within 5° and
10°) and the true map (FSC 0.5 of the map from the images with the orientations found). The
resolution ``none`` is the true map itself: the shipped estimators, the reference point.

Writes ``benchmarks/results/degraded_maps.json`` after every row, atomically; a rerun with the same
parameters skips the rows already there. Trainings are cached in ``data/models`` and resume from
their last epoch: about 30 min for the noiseless estimator and 15 min per fine-tuned noise level
on two CPU cores, so about 75 min per resolution up to the SNR-matched σ².

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/degraded_maps.py
        [--resolutions none 40 25 15] [--noise 0 4.87] [--images 400] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import (
    CONTEST_HEADER,
    contest_cells,
    print_table,
    resumed_result,
    write_json,
)

from cryoorient.contest import ContestSettings, contest_level, estimator_level
from cryoorient.dataset import study_dataset
from cryoorient.density import load_map
from cryoorient.model_cache import model_config, noise_curriculum
from cryoorient.paths import git_commit
from cryoorient.study import default_study

RESULT = Path(__file__).resolve().parent / "results" / "degraded_maps.json"
CONTENDERS = ("learned", "matching")


def resolution_key(text: str) -> float | None:
    """``"none"`` (the true map) or a resolution in Å; argparse's type."""
    if text.lower() == "none":
        return None
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a resolution is a positive number of Å or 'none'; got {text!r}")
    return value


def main(argv: list[str] | None = None) -> dict:
    """Train what is missing, run the rows asked for, skip those already measured."""
    study = default_study()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=resolution_key, nargs="+", default=[None, 40.0, 25.0, 15.0],
                        help="Å of the training map's low-pass, or 'none' for the true map")
    parser.add_argument("--noise", nargs="+", default=["0", "matched"],
                        help="σ² levels of the test images (numbers or 'matched')")
    parser.add_argument("--images", type=int, default=400, help="first N images of the test split")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--output", type=Path, default=RESULT, help="the JSON (e.g. elsewhere for a trial)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = model_config(study.model, seed=study.seed)
    chain_levels = [0.0, *study.noise_study_levels]
    try:
        levels = [estimator_level(a, chain_levels, study.matched_noise_variance) for a in args.noise]
    except ValueError as error:
        raise SystemExit(f"--noise: {error}") from None
    stages = [v for v in chain_levels if v <= max(levels)]  # the curriculum up to the last level asked
    truth_map = load_map(study.map_name, box_size=study.box_size, voxel_size=study.voxel_size)
    volume = torch.from_numpy(truth_map.data)
    parameters = {"images": args.images, "seed": study.seed, "map": truth_map.name,
                  "box_size": study.box_size, "model": config.to_dict(),
                  "curriculum_epochs": study.curriculum_epochs}
    result = resumed_result(args.output, "degraded_maps", parameters, maps={})
    settings = ContestSettings(seed=study.seed, chance_seed=study.chance_seed)
    commit = git_commit()
    for low_pass in args.resolutions:
        name = "none" if low_pass is None else f"{low_pass:g}"
        print(f"training map: {'the true map' if low_pass is None else f'low-pass {name} Å'}", flush=True)
        training = study_dataset(study, noise_variance=0.0, map_low_pass=low_pass)
        chain = noise_curriculum(training, config, stages, epochs=study.curriculum_epochs,
                                 learning_rate=study.curriculum_learning_rate)
        reference = load_map(study.map_name, box_size=study.box_size, voxel_size=study.voxel_size,
                             low_pass=low_pass)
        for level in levels:
            rows = result["maps"].setdefault(name, {}).setdefault(f"{level:g}", {})
            data = study_dataset(study, noise_variance=level, progress=False)
            test = data.splits["test"]

            def keep(contender: str, row: dict, rows: dict = rows) -> None:
                rows[contender] = row | {"commit": commit}  # a resumed run may span commits
                write_json(result, args.output)

            print(f"σ² = {level:g}", flush=True)
            contest_level(data.particles.images, data.quaternions, test[: args.images], test, volume,
                          data.particles.pixel_size, model=chain[level].model, image_size=config.image_size,
                          contenders=CONTENDERS, settings=settings, done=set(rows), on_row=keep,
                          reference=torch.from_numpy(reference.data), progress=True)
    header = ["training map", "σ²", "contender", *CONTEST_HEADER]
    table = [
        [name, level, contender, *contest_cells(r)]
        for name, by_level in result["maps"].items()
        for level, rows in by_level.items()
        for contender, r in rows.items()
    ]
    print_table([header, *table])
    print(f"\nwrote {args.output.name}")
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
