"""Benchmark of distance-learning throughput: :func:`cryoorient.training.train_distance` per step.

Two configurations of the Siamese distance estimator (:mod:`cryoorient.siamese`):

``default``
    the notebooks' default profile: recipe ``inbatch`` (all ``B (B − 1) / 2`` pairs of a batch of
    ``B = 64`` images), architecture ``compact``, ``n_f = 128``, ``d_f = "orientation"``, images of
    the 64 px dataset downsampled to 32 px, in-plane rotation augmentation, AdamW;
``paper``
    the paper's: recipe ``paper`` (fixed training pairs, 1 % of all pairs resampled to uniform
    ``d_q``, batches of 256 pairs), architecture ``paper`` (7 stages, ``n_f = 512``), cosine
    ``d_f``, full 116 px images (``--paper-size``), RMSProp.

Each trains for real, through ``train_distance(..., max_steps=warm-up + timed steps)``, on a
synthetic dataset made here: ``--n`` = 5,000 noiseless projections of ``--map`` (default
``5j0n``; set ``CRYOORIENT_MAPS`` to the folder holding ``5j0n.mrc``) at Haar-random orientations,
normalised to unit variance and split as the paper's (50 % train: 2,500 images; 17 % validation).
Steps are timed by a global optimizer-step hook (one timestamp at the end of every step, so a
step's time is everything the loop does: batch assembly, augmentation, forward, backward, update),
and the images through the network per step are counted by a hook on the network's first
convolution (for the ``paper`` recipe, the distinct images of 256 pairs). The first
``--warmup`` steps are not timed.

Seconds per epoch are extrapolated as ``steps per epoch × median step time + one validation
pass`` (validation is timed once with :func:`cryoorient.training.evaluate_distances` on the
configuration's validation pairs), with the package's steps per epoch: ``⌊train / B⌋`` for
``inbatch``; ``⌈⌊0.01 · train (train − 1) / 2⌋ / 256⌉`` for ``paper``. The total is that times
the profile's epochs (40, notebook 02's default; 150, the paper's).

Prints a table and writes ``benchmarks/results/training.json`` with the machine and its load.

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/training.py
        [--profiles default paper] [--warmup 1] [--steps-default 10] [--steps-paper 3]
        [--n 5000] [--paper-size 116] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, print_table
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook

from cryoorient.dataset import PAPER_SPLIT, split_indices
from cryoorient.density import load_map
from cryoorient.geometry import quaternion_to_matrix
from cryoorient.model_cache import model_config
from cryoorient.projection import project
from cryoorient.provenance import portable_path
from cryoorient.recipes import epoch_steps
from cryoorient.sampling import sample_orientations
from cryoorient.study import load_study
from cryoorient.training import TrainingConfig, evaluate_distances, split_pairs, train_distance

RESULTS = Path(__file__).resolve().parent / "results" / "training.json"


@dataclass(frozen=True)
class Profile:
    """A configuration to time and the dataset it trains on."""

    box_size: int  # px of the synthetic dataset
    voxel_size: float | None  # Å; None keeps the map's field of view in box_size px
    config: TrainingConfig
    source: str  # where the settings come from


def profiles(paper_size: int) -> dict[str, Profile]:
    """The default and the paper studies (``cryoorient/studies/*.yml``), the paper's at ``paper_size`` px."""
    default, paper = load_study("default"), load_study("paper")
    return {
        "default": Profile(
            box_size=default.box_size,
            voxel_size=default.voxel_size,
            config=model_config(default.model),
            source="cryoorient/studies/default.yml (the notebooks' default study)",
        ),
        "paper": Profile(
            box_size=paper_size,
            voxel_size=paper.voxel_size,
            config=model_config(paper.model),
            source="cryoorient/studies/paper.yml (paper, Table 1)",
        ),
    }


def synthetic_dataset(map_name: str, box_size: int, voxel_size: float | None, n: int):
    """Noiseless projections (n, D, D) at unit variance, their quaternions, splits, map warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        density = load_map(map_name, box_size=box_size, voxel_size=voxel_size)
    quaternions = sample_orientations(n, "uniform", seed=0)  # (n, 4)
    images = project(torch.as_tensor(density.data), quaternion_to_matrix(quaternions), device="cpu")
    images = (images - images.mean()) / images.std()  # (n, D, D), unit variance over the stack
    splits = split_indices(n, seed=0)
    return density, images, quaternions, splits, [str(w.message) for w in caught]


def pairs_per_step(config: TrainingConfig) -> int:
    """Training pairs in the loss of one (full) step."""
    if config.recipe == "paper":
        return config.batch_size
    return config.batch_size * (config.batch_size - 1) // 2


def time_steps(images, quaternions, splits, config, *, warmup: int, steps: int, device) -> dict:
    """Train for ``warmup + steps`` steps; per-step times and images through the network."""
    stamps: list[float] = []
    images_per_step: list[int] = []
    pending = [0]

    def after_step(optimizer, args, kwargs) -> None:  # noqa: ARG001 - hook signature
        stamps.append(time.perf_counter())
        images_per_step.append(pending[0])
        pending[0] = 0

    def before_forward(module, args) -> None:
        # every image goes once through the network's only single-channel convolution
        if isinstance(module, nn.Conv2d) and module.in_channels == 1 and module.training:
            pending[0] += args[0].shape[0]

    hooks = [register_optimizer_step_post_hook(after_step), register_module_forward_pre_hook(before_forward)]
    try:
        start = time.perf_counter()
        result = train_distance(
            images, quaternions, splits, config, max_steps=warmup + steps, device=device, progress=False
        )
        wall = time.perf_counter() - start
    finally:
        for hook in hooks:
            hook.remove()
    if len(stamps) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} optimizer steps, saw {len(stamps)}")
    seconds = np.diff(stamps)[warmup - 1 :].tolist()  # step k lasts from the end of step k - 1
    return {
        "result": result,
        "wall_seconds": wall,
        "setup_and_warmup_seconds": stamps[warmup - 1] - start,
        "step_seconds": seconds,
        "images_per_step": images_per_step[warmup:],
    }


def measure(name: str, profile: Profile, args: argparse.Namespace) -> dict:
    """Throughput of one profile and its extrapolated epoch and training times."""
    config = profile.config
    steps = args.steps_default if name == "default" else args.steps_paper
    tic = time.perf_counter()
    density, images, quaternions, splits, map_warnings = synthetic_dataset(
        args.map, profile.box_size, profile.voxel_size, args.n
    )
    data_seconds = time.perf_counter() - tic
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    timed = time_steps(images, quaternions, splits, config, warmup=args.warmup, steps=steps, device=device)
    model = timed["result"].model

    val_pairs = split_pairs(quaternions, splits["validation"], config.validation_pairs, seed=0)
    tic = time.perf_counter()
    evaluate_distances(model, images, quaternions, val_pairs, config.image_size, device=device)
    validation_seconds = time.perf_counter() - tic

    step = statistics.median(timed["step_seconds"])
    n_images = float(np.mean(timed["images_per_step"]))
    n_pairs = pairs_per_step(config)
    n_train = len(splits["train"])
    per_epoch = epoch_steps(config, n_train)
    epoch_seconds = per_epoch * step + validation_seconds
    return {
        "source": profile.source,
        "config": config.to_dict(),
        "dataset": {
            "map": density.name,
            "map_source": portable_path(density.source),
            "map_warnings": map_warnings,
            "box_size": profile.box_size,
            "voxel_size": density.voxel_size,
            "n_images": args.n,
            "split": {k: len(v) for k, v in splits.items()},
            "build_seconds": data_seconds,
        },
        "network_image_size": config.image_size or profile.box_size,
        "device": str(next(model.parameters()).device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "warmup_steps": args.warmup,
        "timed_steps": steps,
        "step_seconds": timed["step_seconds"],
        "median_step_seconds": step,
        "setup_and_warmup_seconds": timed["setup_and_warmup_seconds"],
        "images_per_step": n_images,
        "pairs_per_step": n_pairs,
        "images_per_second": n_images / step,
        "pairs_per_second": n_pairs / step,
        "validation_pairs": len(val_pairs),
        "validation_seconds": validation_seconds,
        "n_train": n_train,
        "steps_per_epoch": per_epoch,
        "seconds_per_epoch": epoch_seconds,
        "epochs": config.epochs,
        "training_hours": config.epochs * epoch_seconds / 3600,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table, write the JSON results and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["default", "paper"], choices=["default", "paper"])
    parser.add_argument("--n", type=int, default=5000, help="projections in the dataset (default 5000)")
    parser.add_argument("--map", default="5j0n", help="map name or path (default 5j0n)")
    parser.add_argument("--paper-size", type=int, default=116, help="image size of the paper profile")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (>= 1, default 1)")
    parser.add_argument("--steps-default", type=int, default=10, help="timed steps, default profile")
    parser.add_argument("--steps-paper", type=int, default=3, help="timed steps, paper profile")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps_default < 1 or args.steps_paper < 1:
        parser.error("--warmup and the timed steps must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    chosen = profiles(args.paper_size)
    runs = {}
    for name in args.profiles:
        runs[name] = measure(name, chosen[name], args)
        r = runs[name]
        print(
            f"  {name}: {r['median_step_seconds']:.2f} s/step, {r['images_per_second']:.0f} images/s",
            flush=True,
        )
    load_after = os.getloadavg()
    results = {
        "benchmark": "training",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dataset": f"{args.n} noiseless projections of {args.map} at Haar-random orientations (seed 0), "
        "unit variance, split "
        + " / ".join(f"{name} {fraction:.0%}" for name, fraction in PAPER_SPLIT.items()),
        "timing": "global optimizer-step hook: a step is everything between two optimizer updates; "
        "train_distance trains with deterministic algorithms on the CPU",
        "epoch_extrapolation": "steps_per_epoch x median step + one validation pass (evaluate_distances)",
        "profiles": runs,
        "machine": machine_info(
            load_average_1_5_15_min_before=load_before, load_average_1_5_15_min_after=load_after
        ),
    }
    if "default" in runs and "paper" in runs:
        d, p = runs["default"], runs["paper"]
        results["ratios_default_over_paper"] = {
            "images_per_second": d["images_per_second"] / p["images_per_second"],
            "pairs_per_second": d["pairs_per_second"] / p["pairs_per_second"],
            "seconds_per_epoch": d["seconds_per_epoch"] / p["seconds_per_epoch"],
            "training_hours": d["training_hours"] / p["training_hours"],
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    rows = [
        (
            "profile",
            "network",
            "px",
            "s/step",
            "images/s",
            "pairs/s",
            "steps/epoch",
            "s/epoch",
            "epochs",
            "hours",
        )
    ]
    for name, r in runs.items():
        c = r["config"]
        rows.append(
            (
                name,
                f"{c['architecture']} {c['recipe']} n_f={c['n_features']} {c['distance']}",
                str(r["network_image_size"]),
                f"{r['median_step_seconds']:.3f}",
                f"{r['images_per_second']:.0f}",
                f"{r['pairs_per_second']:.0f}",
                str(r["steps_per_epoch"]),
                f"{r['seconds_per_epoch']:.1f}",
                str(r["epochs"]),
                f"{r['training_hours']:.2f}",
            )
        )
    print_table(rows)
    devices = sorted({r["device"] for r in runs.values()})
    print(
        f"device {', '.join(devices)}; machine: {results['machine']['cpu_model']}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, load {load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
