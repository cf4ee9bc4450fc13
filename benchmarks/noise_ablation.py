"""What limits the noisy distance estimator: training-side ablations at σ² = 16 (issue 12).

Every contender is the default network and recipe (``cryoorient.model_cache.DEFAULT_MODEL``) trained
on the default profile's dataset (5j0n, 5,000 projections of 64 px, noise drawn afresh at every
step), and evaluated as notebook 04 evaluates its estimators: distances on 4,000 uniform test
pairs (RMSE, MAE) and the orientations of the 1,650 test projections recovered from them (``E_OR``
mean and median, O(4) alignment). The contenders differ only in how training reaches σ² = 16:

``cold``
    from random weights, 20 epochs at the default learning rate (the recipe before issue 12 was
    this with 40 epochs);
``warm``
    fine-tuned from the noiseless estimator in one jump, 20 epochs at 3e-4;
``warm, 40 epochs``
    the same jump with twice the epochs (is it the number of steps?);
``curriculum``
    the notebooks' estimator: noiseless → 1 → 4 → 4.87 → 16, 20 epochs per stage at 3e-4;
``curriculum + 20``
    that estimator trained 20 more epochs at σ² = 16 (does the last stage underfit?).

Models are cached by their configuration (``data/models``; the curriculum's come with the
repository), so a rerun only evaluates. The JSON goes to ``benchmarks/results/noise_ablation.json``
with the machine, the commit and each training's wall time (its epochs', recorded when it was
trained; for the curriculum, its last stage's); notebook 05 shows the table.

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/noise_ablation.py [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, print_table

from cryoorient.dataset import SimulationParameters, load_dataset
from cryoorient.model_cache import (
    CURRICULUM_EPOCHS,
    CURRICULUM_LEARNING_RATE,
    config_key,
    dataset_model,
    model_config,
    noise_curriculum,
    warm_started,
)
from cryoorient.paths import atomic_write, git_commit
from cryoorient.pipeline import learned_recovery
from cryoorient.study import default_study
from cryoorient.training import evaluate_distances, split_pairs

RESULT = Path(__file__).resolve().parent / "results" / "noise_ablation.json"
STUDY = default_study()
NOISE = STUDY.paper_noise_variance
BOX = STUDY.box_size


def dataset(noise: float):
    """The default profile's dataset at σ² = ``noise`` (same orientations and splits at every σ²)."""
    return load_dataset(SimulationParameters(**STUDY.simulation(noise_variance=noise)))


def contenders(clean) -> dict[str, object]:
    """``{name: TrainingConfig}`` of every contender at σ² = 16 (the curriculum's is resolved later)."""
    key = clean.path.name
    noiseless = model_config(seed=0)
    return {
        "cold": model_config(noise_variance=NOISE, epochs=CURRICULUM_EPOCHS, seed=0),
        "warm": warm_started(noiseless, key, noise_variance=NOISE, epochs=CURRICULUM_EPOCHS,
                             learning_rate=CURRICULUM_LEARNING_RATE),
        "warm, 40 epochs": warm_started(noiseless, key, noise_variance=NOISE, epochs=2 * CURRICULUM_EPOCHS,
                                        learning_rate=CURRICULUM_LEARNING_RATE),
    }


def evaluate(model, config, noisy, *, seed: int = 0) -> dict:
    """Test-pair distance errors and ``E_OR`` of the test split recovered from ``model``'s distances."""
    images = torch.from_numpy(noisy.particles.images)
    test = noisy.splits["test"]
    pairs = split_pairs(noisy.quaternions, test, 4000, seed=seed)
    distances = evaluate_distances(model, images, noisy.quaternions, pairs, config.image_size)
    run = learned_recovery(model, images, noisy.quaternions, test, config.image_size, seed=seed)
    return {
        "rmse": distances["rmse"], "mae": distances["mae"],
        "e_or": run.alignment.error, "e_or_median": float(run.alignment.errors.median()),
        "l_or": run.recovery.loss,
    }


def main(argv: list[str] | None = None) -> dict:
    """Train (or load) every contender, evaluate it, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clean, noisy = dataset(0.0), dataset(NOISE)
    key = clean.path.name
    configs = contenders(clean)
    levels = [0.0, *STUDY.noise_study_levels]
    start = time.perf_counter()
    chain = noise_curriculum(clean, model_config(seed=0), levels, progress=False)
    chain_seconds = time.perf_counter() - start
    configs["curriculum"] = chain[NOISE].config
    configs["curriculum + 20"] = replace(
        chain[NOISE].config, epochs=CURRICULUM_EPOCHS, warm_start=config_key(chain[NOISE].config, key)
    )
    rows = {}
    for name, config in configs.items():
        start = time.perf_counter()
        trained = dataset_model(clean, config, progress=True)
        seconds = time.perf_counter() - start
        rows[name] = {
            "model": trained.folder.name, "warm_start": config.warm_start, "epochs": config.epochs,
            "learning_rate": config.learning_rate,
            # wall time of its training, as recorded when it was trained (this run, or the cached model's
            # run); the history's "seconds" are cumulative
            "training_seconds": trained.history[-1]["seconds"],
            "loaded_from_cache": seconds < 5,
            "validation_loss_last": trained.history[-1]["validation_loss"],
            "train_loss_last": trained.history[-1]["train_loss"],
        } | evaluate(trained.model, config, noisy)
        row = rows[name]
        print(f"{name:>16}: E_OR {row['e_or']:.3f} rad (median {row['e_or_median']:.3f}), RMSE "
              f"{row['rmse']:.3f}, MAE {row['mae']:.3f} rad", flush=True)
    print()
    header = ["contender", "epochs at σ²=16", "E_OR (rad)", "median", "RMSE", "MAE"]
    numbers = ("e_or", "e_or_median", "rmse", "mae")
    table = [[name, str(r["epochs"])] + [f"{r[k]:.3f}" for k in numbers] for name, r in rows.items()]
    print_table([header, *table])
    result = {
        "benchmark": "noise_ablation",
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "machine": machine_info(),
        "noise_variance": NOISE,
        "box_size": BOX,
        "map": clean.map_name,
        "p_test": int(len(noisy.splits["test"])),
        "curriculum_levels": levels,
        "curriculum_seconds_if_trained_now": chain_seconds if chain_seconds > 5 else None,
        "rows": rows,
    }
    text = (json.dumps(result, indent=2, default=float) + "\n").encode()
    atomic_write(RESULT, lambda f: f.write(text))
    print(f"\nwrote {RESULT.relative_to(Path.cwd()) if RESULT.is_relative_to(Path.cwd()) else RESULT.name}")
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
