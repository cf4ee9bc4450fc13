"""Projection matching against the true map on the default profile's test images: time and accuracy.

The baseline a map holder would use (issue 32): the 1,650 test projections of the default profile
(5j0n, 64 px) at each noise level asked, each matched against projections of the very map they were
made from (:mod:`cryoorient.matching`): a global search over ``--directions`` × ``--in-plane``
orientations (:func:`cryoorient.matching.orientation_grid`), band-limited to ``--max-frequency``,
then a local search up to Nyquist. Matching against the map works in the map's frame, so the error
needs no alignment: ``d_q`` between found and true orientations (mean, median, % within 5° and
10°); ``E_OR`` after the O(4) alignment is reported beside it, as the notebooks measure recovered
orientations. Times are wall-clock on this machine.

Then, unless ``--no-refine``, the refinement the issue times (issue 32's target: 1,650 images of
64 px in at most 5 min): the learned start of that level (the estimator of the noise curriculum →
recovery → gauge fixed from the images) refined against half maps of the images themselves, no
truth and no map (:func:`cryoorient.contest.contest_level`'s ``learned+refined`` row, as notebook 11
and ``who_wins.py`` make it, here on every test image). Its time is the refinement's alone; the
start's is reported apart.

Writes ``benchmarks/results/matching.json`` (after every level, atomically) with the machine.

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/matching.py [--noise 0 4.87]
        [--directions 1000] [--in-plane 48] [--max-frequency 0.25] [--rounds 8] [--no-refine]
        [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, print_table

from cryoorient.alignment import align_orientations
from cryoorient.contest import ContestSettings, contest_level, estimator_level
from cryoorient.dataset import study_dataset
from cryoorient.density import load_map
from cryoorient.geometry import matrix_to_quaternion, quaternion_distance
from cryoorient.matching import global_search, grid_spacing, local_search, orientation_grid
from cryoorient.model_cache import model_config, noise_curriculum
from cryoorient.paths import atomic_write, git_commit
from cryoorient.study import default_study

RESULT = Path(__file__).resolve().parent / "results" / "matching.json"


def errors_summary(found: torch.Tensor, truth: torch.Tensor, seed: int) -> dict:
    """Errors of rotations ``found`` against quaternions ``truth``: direct and after the O(4) alignment."""
    direct = quaternion_distance(matrix_to_quaternion(found), truth)
    aligned = align_orientations(truth, matrix_to_quaternion(found), seed=seed)
    return {
        "mean": float(direct.mean()),
        "median": float(direct.median()),
        "within_5_degrees": float((direct < math.radians(5)).double().mean()),
        "within_10_degrees": float((direct < math.radians(10)).double().mean()),
        "e_or_aligned": aligned.error,
    }


def main(argv: list[str] | None = None) -> dict:
    """Match the test images at each noise level, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--noise", type=float, nargs="+", default=None, help="σ² levels (default: 0, matched)"
    )
    parser.add_argument("--directions", type=int, default=1000)
    parser.add_argument("--in-plane", type=int, default=48)
    parser.add_argument("--max-frequency", type=float, default=0.25, help="band of the global search")
    parser.add_argument("--rounds", type=int, default=8, help="refinement rounds at most (default 8)")
    parser.add_argument("--no-refine", dest="refine", action="store_false",
                        help="skip the refinement of the learned start")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    study = default_study()
    asked = args.noise if args.noise is not None else [0.0, study.matched_noise_variance]
    known = [0.0, *study.noise_study_levels, study.matched_noise_variance]
    try:  # 4.87 on the command line is the matched 4.87039
        levels = [estimator_level(a, known, study.matched_noise_variance) for a in asked]
    except ValueError as error:
        raise SystemExit(f"--noise: {error}") from None
    truth_map = load_map(study.map_name, box_size=study.box_size, voxel_size=study.voxel_size)
    volume = torch.from_numpy(truth_map.data)
    grid = orientation_grid(args.directions, args.in_plane)
    spacing = grid_spacing(args.directions, args.in_plane)
    result = {
        "benchmark": "matching",
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "machine": machine_info(),
        "map": truth_map.name,
        "box_size": study.box_size,
        "grid": {
            "directions": args.directions,
            "in_plane": args.in_plane,
            "orientations": len(grid),
            "spacing_degrees": math.degrees(spacing),
        },
        "max_frequency": args.max_frequency,
        "refinement_rounds": args.rounds if args.refine else None,
        "levels": {},
    }
    if args.refine:
        config = model_config(study.model, seed=study.seed)
        clean = study_dataset(study, progress=False)
        chain = noise_curriculum(clean, config, [0.0, *study.noise_study_levels],
                                 epochs=study.curriculum_epochs, learning_rate=study.curriculum_learning_rate)
    for level in levels:
        data = study_dataset(study, noise_variance=level, progress=False)
        test = data.splits["test"]
        images = torch.from_numpy(data.particles.images[test])
        truth = data.quaternions[test]
        tic = time.perf_counter()
        coarse = global_search(images, volume, grid, max_frequency=args.max_frequency, progress=True)
        global_seconds = time.perf_counter() - tic
        tic = time.perf_counter()
        fine = local_search(images, volume, coarse.rotations, step=spacing / 2, progress=True)
        local_seconds = time.perf_counter() - tic
        result["levels"][f"{level:g}"] = {
            "p": len(test),
            "global": errors_summary(coarse.rotations, truth, study.seed) | {"seconds": global_seconds},
            "local": errors_summary(fine.rotations, truth, study.seed) | {"seconds": local_seconds},
        }
        if args.refine:
            tic = time.perf_counter()
            rows = contest_level(
                data.particles.images, data.quaternions, test, test, volume, data.particles.pixel_size,
                model=chain[level].model, image_size=config.image_size, contenders=("learned+refined",),
                settings=ContestSettings(rounds=args.rounds, seed=study.seed, chance_seed=study.chance_seed),
                progress=True,
            )
            refined = rows["learned+refined"]
            result["levels"][f"{level:g}"]["refined"] = refined | {
                "start_and_map_seconds": time.perf_counter() - tic - refined["seconds"],
            }
        text = (json.dumps(result, indent=2) + "\n").encode()
        atomic_write(RESULT, lambda f, text=text: f.write(text))
        row = result["levels"][f"{level:g}"]
        print(
            f"σ² = {level:g}: global {row['global']['mean']:.3f} rad in {global_seconds:.0f} s, "
            f"then local {row['local']['mean']:.3f} rad in {local_seconds:.0f} s",
            flush=True,
        )
        if "refined" in row:
            r = row["refined"]
            print(f"σ² = {level:g}: learned start refined to E_OR {r['e_or']:.3f} rad "
                  f"(E_OR,reg {r['e_reg']:.3f}) in {r['seconds']:.0f} s, {r['rounds']} rounds; half maps "
                  f"{r['half_map_resolution']:.1f} Å, FSC 0.5 against the truth {r['resolution']:.1f} Å",
                  flush=True)
    header = ["σ²", "stage", "mean (rad)", "median", "< 5°", "< 10°", "E_OR aligned", "seconds"]
    table = [
        [level, stage]
        + [
            f"{r[stage][k]:.3f}"
            for k in ("mean", "median", "within_5_degrees", "within_10_degrees", "e_or_aligned")
        ]
        + [f"{r[stage]['seconds']:.0f}"]
        for level, r in result["levels"].items()
        for stage in ("global", "local")
    ]
    print_table([header, *table])
    print(f"\nwrote {RESULT.name}")
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
