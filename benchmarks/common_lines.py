"""Learned distances against common lines (ASPIRE), side by side in one process (issue 15).

At each σ² the same seeded subset of the default profile's test projections (5j0n, 64 px; the
dataset with that noise, its noise drawn once) goes through three methods, one after the other so
that they share the machine's load (:func:`cryoorient.baseline_comparison.compare_with_common_lines`):
learned distances → recovery → gauge from the images; ASPIRE's ``CLSyncVoting`` on the
projections (Fourier-downsampled to 32 px); ASPIRE's class averages of the whole test split, then
common lines on as many averages as the subset has images. Errors: ``E_OR`` (O(4), the paper's)
and ``E_OR,reg`` (global rotation and mirror only), mean and median, radians. The estimators are
the notebooks' (``models/``, trained once: their training time is listed apart). Results are
cached in ``data/baselines``, where notebook 08 caches the same comparison (same subset at
``--size 200``): without ``--fresh`` the script reads what the notebook measured, with it
everything is timed again. Written to ``benchmarks/results/common_lines.json``.

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/common_lines.py [--size 200] [--fresh]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import machine_info, print_table

from cryoorient.baseline_comparison import METHODS, compare_with_common_lines, comparison_subset
from cryoorient.common_lines import aspire_version
from cryoorient.dataset import SimulationParameters, load_dataset
from cryoorient.model_cache import model_config, noise_curriculum
from cryoorient.paths import atomic_write, git_commit
from cryoorient.study import default_study

RESULT = Path(__file__).resolve().parent / "results" / "common_lines.json"
STUDY = default_study()
LEVELS = (0.0, 1.0, 4.0, STUDY.paper_noise_variance)


def main() -> None:
    """Run the comparison at each level and write ``results/common_lines.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=200, help="projections in the shared subset (200)")
    parser.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), help="σ² (0 1 4 16)")
    parser.add_argument("--box", type=int, default=32, help="px common lines run at (32)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--fresh", action="store_true", help="do not read cached comparisons")
    args = parser.parse_args()
    if aspire_version() is None:
        raise SystemExit("ASPIRE is not installed: pip install aspire (make install brings it)")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    def dataset(noise: float):
        return load_dataset(SimulationParameters(**STUDY.simulation(noise_variance=noise)))

    clean = dataset(0.0)
    if clean.map_name != "5j0n":
        raise SystemExit(f"5j0n.mrc not found (got {clean.map_name}); set CRYOORIENT_MAPS to its folder")
    test = clean.splits["test"]
    config = model_config(STUDY.model, seed=STUDY.seed)
    chain = noise_curriculum(clean, config, [0.0, *STUDY.noise_study_levels])
    missing = [v for v in args.levels if v not in chain]
    if missing:
        raise SystemExit(f"no estimator for σ² {missing}; choose among {sorted(chain)}")
    subset = comparison_subset(test, args.size, seed=0)
    cache = tempfile.mkdtemp(prefix="common-lines-") if args.fresh else None
    levels = {}
    start = time.perf_counter()
    for noise in args.levels:
        print(f"σ² = {noise:g} ...", flush=True)
        levels[f"{noise:g}"] = compare_with_common_lines(
            chain[noise].model, chain[noise].folder.name, dataset(noise), subset, test, config.image_size,
            class_averaging=noise > 0, box_size=args.box, cache_dir=cache,
        )
    rows = [("σ²", "method", "E_OR mean", "median", "E_OR,reg mean", "median", "seconds")]
    for level, methods in levels.items():
        for method, r in methods.items():
            rows.append((level, METHODS[method], f"{r['e_or']:.3f}", f"{r['e_or_median']:.3f}",
                         f"{r['e_reg']:.3f}", f"{r['e_reg_median']:.3f}", f"{r['seconds']:.0f}"))
    print_table(rows)
    training = {f"{v:g}": chain[v].history[-1]["seconds"] for v in chain}
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(load_average_1_5_15_min_before=load_before,
                                load_average_1_5_15_min_after=os.getloadavg()),
        "aspire": aspire_version(),
        "dataset": "5j0n, 5,000 projections of 64 px (default profile), test split",
        "subset_size": args.size, "pool_size": len(test), "box_size": args.box, "cached": not args.fresh,
        "seconds": time.perf_counter() - start,
        "levels": levels,
        "training_seconds_per_stage": training,
    }
    atomic_write(RESULT, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()))
    print(f"wrote {RESULT.relative_to(RESULT.parents[2])}")


if __name__ == "__main__":
    main()
