"""Who wins where (issue 32): matching, learned distances, common lines and random starts, refined alike.

On the default profile's test images (the first ``--images`` of the test split, the same images for
every method) at each noise level ``--noise``:

* ``matching``: projection matching against the true map (global grid, then local search);
* ``learned``: the study's estimator for that level → recovery → gauge fixed from the images;
* ``learned+refined``: those orientations refined against the images' own half maps;
* ``common_lines``: ASPIRE on the same images, ``n_theta`` 360 (its default), no shift search (the
  images are centred);
* ``common_lines+refined``, ``random+refined``: the same refinement from common lines and from
  random orientations (what an initial model is worth).

Each gets :func:`cryoorient.alignment.score_orientations` (E_OR, E_OR,reg, within 5° and 10°), its
wall time (training apart: the estimators are the shipped ones) and the FSC-0.5 resolution against
the true map of the map the images give with its orientations, brought into the true map's frame
(:func:`cryoorient.refinement.map_in_frame`).
Refined rows also record the half maps' FSC-0.143 resolution, which needs no truth.

Writes ``benchmarks/results/who_wins.json`` after every row, atomically; a rerun with the same
parameters skips the rows already there (``--again`` recomputes them).

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/who_wins.py [--images 1650]
        [--noise 0 1 4 4.87 16 32] [--contenders matching learned ...] [--rounds 8] [--threads 2]
        [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, print_table

from cryoorient.alignment import score_orientations
from cryoorient.common_lines import common_lines_orientations
from cryoorient.dataset import study_dataset
from cryoorient.density import load_map
from cryoorient.gauge import fix_gauge
from cryoorient.geometry import matrix_to_quaternion, quaternion_to_matrix
from cryoorient.matching import match_to_map
from cryoorient.model_cache import model_config, noise_curriculum
from cryoorient.paths import atomic_write, git_commit
from cryoorient.pipeline import learned_recovery
from cryoorient.refinement import map_in_frame, refine
from cryoorient.sampling import sample_orientations
from cryoorient.study import default_study

RESULT = Path(__file__).resolve().parent / "results" / "who_wins.json"
CONTENDERS = (
    "matching", "learned", "learned+refined", "common_lines", "common_lines+refined", "random+refined"
)


def parameters_key(parameters: dict) -> str:
    """A short hash of the parameters a row depends on (rows of other parameters are recomputed)."""
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:12]


def write(result: dict, path: Path) -> None:
    """The JSON, atomically."""
    text = (json.dumps(result, indent=1) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))


def run_level(study, level: float, model, image_size, volume: torch.Tensor, args: argparse.Namespace,
              rows: dict, save) -> None:
    """The rows of one noise level asked for in ``args``, into ``rows``; ``save()`` after each."""
    data = study_dataset(study, noise_variance=level, progress=False)
    subset = data.splits["test"][: args.images]
    images = torch.from_numpy(data.particles.images[subset])
    true_q = torch.as_tensor(data.quaternions[subset], dtype=torch.float64)
    pixel = data.particles.pixel_size

    def wanted(name: str) -> bool:
        return name in args.contenders and (args.again or name not in rows)

    def record(name: str, found_q: torch.Tensor, seconds: float, **extra) -> None:
        tic = time.perf_counter()
        rotations = quaternion_to_matrix(found_q).float()
        resolution = map_in_frame(images, rotations, volume, pixel, seed=study.seed).resolution
        timing = {"seconds": seconds, "resolution": resolution, "map_seconds": time.perf_counter() - tic}
        rows[name] = score_orientations(true_q, found_q, seed=study.seed).to_dict() | timing | extra
        save()
        print(f"σ² = {level:g}, {name}: E_OR,reg {rows[name]['e_reg']:.3f} rad, "
              f"FSC 0.5 {resolution:.1f} Å ({seconds:.0f} s)", flush=True)

    if wanted("matching"):
        matches, seconds = match_to_map(images, volume, progress=True)
        record("matching", matrix_to_quaternion(matches.rotations), seconds)
    starts: dict[str, torch.Tensor] = {}
    if wanted("learned") or wanted("learned+refined"):
        tic = time.perf_counter()
        run = learned_recovery(model, torch.from_numpy(data.particles.images), data.quaternions, subset,
                               image_size, seed=study.seed)
        fixed = fix_gauge(images, run.recovery.quaternions.cpu(), seed=study.seed, progress=False)
        starts["learned"] = fixed.quaternions.cpu().double()
        if wanted("learned"):
            record("learned", starts["learned"], time.perf_counter() - tic)
    if wanted("common_lines") or wanted("common_lines+refined"):
        found = common_lines_orientations(images, pixel, n_theta=args.n_theta, seed=study.seed)
        starts["common_lines"] = found.quaternions.double()
        if wanted("common_lines"):
            record("common_lines", starts["common_lines"], found.seconds)
    if wanted("random+refined"):
        starts["random"] = sample_orientations(len(subset), seed=study.chance_seed)
    for origin, start in starts.items():
        name = f"{origin}+refined"
        if wanted(name):
            tic = time.perf_counter()
            refinement = refine(images, quaternion_to_matrix(start), pixel_size=pixel, max_rounds=args.rounds,
                                seed=study.seed, progress=True)
            record(name, matrix_to_quaternion(refinement.rotations), time.perf_counter() - tic,
                   half_map_resolution=refinement.resolution,
                   rounds=len(refinement.rounds), converged=refinement.converged)


def main(argv: list[str] | None = None) -> dict:
    """Run the rows asked for, skipping those already measured with the same parameters."""
    study = default_study()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1650, help="first N images of the test split")
    parser.add_argument("--noise", type=float, nargs="+", default=None,
                        help="σ² levels (default: the study's 0, its noise levels and the matched one)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--rounds", type=int, default=8, help="refinement rounds at most")
    parser.add_argument("--n-theta", type=int, default=360, help="ASPIRE's in-plane angles")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--again", action="store_true", help="recompute rows already in the JSON")
    parser.add_argument("--output", type=Path, default=RESULT, help="the JSON (e.g. elsewhere for a trial)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    levels = args.noise if args.noise is not None else sorted(
        {0.0, *study.noise_study_levels, study.matched_noise_variance})
    truth_map = load_map(study.map_name, box_size=study.box_size, voxel_size=study.voxel_size)
    volume = torch.from_numpy(truth_map.data)
    config = model_config(study.model, seed=study.seed)
    parameters = {"images": args.images, "rounds": args.rounds, "n_theta": args.n_theta, "seed": study.seed,
                  "map": truth_map.name, "box_size": study.box_size, "model": config.to_dict()}
    key = parameters_key(parameters)
    result = json.loads(args.output.read_text()) if args.output.is_file() else {}
    if result.get("parameters_key") != key:
        result = {"benchmark": "who_wins", "parameters": parameters, "parameters_key": key, "levels": {}}
    result |= {"date": datetime.date.today().isoformat(), "commit": git_commit(), "machine": machine_info()}
    clean = study_dataset(study, progress=False)
    chain = noise_curriculum(clean, config, [0.0, *study.noise_study_levels],
                             epochs=study.curriculum_epochs, learning_rate=study.curriculum_learning_rate)
    for asked in levels:
        level = next((v for v in chain if abs(v - asked) < 0.01), None)  # 4.87 is the matched 4.87039
        if level is None:
            raise SystemExit(f"σ² = {asked:g} has no estimator; the study's levels are {sorted(chain)}")
        run_level(study, level, chain[level].model, config.image_size, volume, args,
                  result["levels"].setdefault(f"{level:g}", {}), lambda: write(result, args.output))
    header = ["σ²", "contender", "E_OR", "E_OR,reg", "median", "< 5°", "< 10°", "FSC 0.5 (Å)", "seconds"]
    table = [
        [level, name, *(f"{r[k]:.3f}" for k in ("e_or", "e_reg", "e_reg_median", "within_5", "within_10")),
         f"{r['resolution']:.1f}", f"{r['seconds']:.0f}"]
        for level, rows in result["levels"].items()
        for name, r in rows.items()
    ]
    print_table([header, *table])
    print(f"\nwrote {args.output.name}")
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
