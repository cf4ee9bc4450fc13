"""Who wins where (issue 32): matching, learned distances, common lines and random starts, refined alike.

The full-size run of notebook 11's study (:mod:`cryoorient.contest`, where the contenders are
described): on the default profile's test images (the first ``--images`` of the test split, the
same images for every contender) at each noise level ``--noise``, every contender's E_OR,
E_OR,reg, medians, share within 5° and 10°, wall time (training apart: the estimators are the
shipped ones) and FSC-0.5 resolution against the true map; refined rows also the half maps'
FSC-0.143 resolution, which needs no truth.

Writes ``benchmarks/results/who_wins.json`` after every row, atomically; a rerun with the same
parameters skips the rows already there (``--again`` recomputes them).

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/who_wins.py [--images 1650]
        [--noise 0 1 4 4.87 16 32] [--contenders matching learned ...] [--rounds 8] [--threads 2]
        [--output PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import (
    CONTEST_HEADER,
    contest_cells,
    print_levels,
    resumed_result,
    write_json,
)

from cryoorient.contest import CONTENDERS, ContestSettings, contest_level, estimator_level
from cryoorient.dataset import study_dataset
from cryoorient.density import load_map
from cryoorient.model_cache import model_config, noise_curriculum
from cryoorient.paths import git_commit
from cryoorient.study import default_study

RESULT = Path(__file__).resolve().parent / "results" / "who_wins.json"


def run_level(study, level: float, model, image_size, volume: torch.Tensor, args: argparse.Namespace,
              rows: dict, save) -> None:
    """The rows of one noise level asked for in ``args``, into ``rows``; ``save()`` after each."""
    data = study_dataset(study, noise_variance=level, progress=False)
    test = data.splits["test"]
    settings = ContestSettings(rounds=args.rounds, n_theta=args.n_theta, seed=study.seed,
                               chance_seed=study.chance_seed)

    commit = git_commit()

    def keep(name: str, row: dict) -> None:
        rows[name] = row | {"commit": commit}  # a resumed run may span commits: each row names its own
        save()

    print(f"σ² = {level:g}", flush=True)
    contest_level(data.particles.images, data.quaternions, test[: args.images], test, volume,
                  data.particles.pixel_size, model=model, image_size=image_size, contenders=args.contenders,
                  settings=settings, done=() if args.again else set(rows), on_row=keep, progress=True)


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
    result = resumed_result(args.output, "who_wins", parameters, levels={})
    clean = study_dataset(study, progress=False)
    chain = noise_curriculum(clean, config, [0.0, *study.noise_study_levels],
                             epochs=study.curriculum_epochs, learning_rate=study.curriculum_learning_rate)
    for asked in levels:
        try:
            level = estimator_level(asked, chain, study.matched_noise_variance)  # 4.87: the matched 4.87039
        except ValueError as error:
            raise SystemExit(f"--noise: {error}") from None
        run_level(study, level, chain[level].model, config.image_size, volume, args,
                  result["levels"].setdefault(f"{level:g}", {}), lambda: write_json(result, args.output))
    print_levels(["σ²", "contender", *CONTEST_HEADER, "seconds"], result["levels"],
                 lambda r: [*contest_cells(r), f"{r['seconds']:.0f}"], args.output)
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
