"""The ``cryoorient`` command line.

``cryoorient project MAP --angles PARTICLES.star --output OUT.mrcs``
    Project a map at the orientations and origins of a STAR file, like ``relion_project``.
``cryoorient simulate MAP -n N [--noise-var V | --snr-db S] [--shift T] [--ctf] -o DIR``
    Simulate a dataset folder: ``particles.mrcs`` + ``particles.star`` + true quaternions + splits.
``cryoorient train DATASET -o DIR [...]``
    Train the Siamese distance estimator; ``torchrun --nproc-per-node K -m cryoorient.cli train ...``
    trains with DistributedDataParallel.

MAP is an MRC file or a named map (``5j0n``, a PDB ID such as ``5a1a``, ``pseudo[:SEED]``,
``pseudo-d2[:SEED]``). Errors name the file and the bad value and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cryoorient._version import __version__
from cryoorient.dataset import (
    DatasetError,
    SimulationParameters,
    map_provenance,
    open_dataset,
    save_dataset,
    simulate_dataset,
)
from cryoorient.density import load_map
from cryoorient.geometry import euler_to_matrix
from cryoorient.projection import apply_ctf, ctf_2d, noise_variance, project
from cryoorient.relion import CTF_OPTICS, read_star, write_stack
from cryoorient.sampling import SAMPLING_SCHEMES
from cryoorient.siamese import ARCHITECTURES, DISTANCES
from cryoorient.training import RECIPES, TrainingConfig, evaluate_distances, split_pairs, train_distance

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryoorient",
        description="Simulate cryo-EM projections in RELION's conventions (companion to arXiv:2104.06237).",
    )
    parser.add_argument("--version", action="version", version=f"cryoorient {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "project",
        help="project a map at the orientations of a STAR file (like relion_project)",
        description="Project MAP at the Euler angles and origins listed in a STAR file. Images come in "
        "STAR order, box size = map size, float32, with the map's voxel size in the header.",
    )
    p.add_argument("map", metavar="MAP", help="MRC file or named map (5j0n, 5a1a, pseudo, pseudo:SEED, ...)")
    p.add_argument(
        "--angles", required=True, type=Path, metavar="PARTICLES.star", help="RELION 3.0 or 3.1 STAR"
    )
    p.add_argument("--output", "-o", required=True, type=Path, metavar="OUT.mrcs", help="output image stack")
    p.add_argument(
        "--ctf", action="store_true", help="apply the CTF given by the STAR file's defocus columns"
    )
    p.add_argument("--device", default=None, help="torch device (default: CUDA when available, else CPU)")

    s = sub.add_parser(
        "simulate",
        help="simulate a dataset folder (.mrcs + .star + true orientations + splits)",
        description="Simulate N projections of MAP at random orientations, with optional shifts, CTF and "
        "noise, and write them with their RELION STAR file, true quaternions and the paper's 50/17/33 % "
        "train/validation/test split into a new folder.",
    )
    s.add_argument("map", metavar="MAP", help="MRC file or named map (5j0n, 5a1a, pseudo, pseudo:SEED, ...)")
    s.add_argument(
        "-n", "--n-projections", type=int, required=True, metavar="N", help="number of projections"
    )
    s.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="new output folder")
    noise = s.add_mutually_exclusive_group()
    noise.add_argument(
        "--noise-var", type=float, default=0.0, metavar="V", help="noise variance σ² (default 0)"
    )
    noise.add_argument("--snr-db", type=float, default=None, metavar="S", help="signal-to-noise ratio in dB")
    s.add_argument("--shift", type=float, default=0.0, metavar="T", help="triangular shift limit ±T pixels")
    s.add_argument(
        "--ctf", action="store_true", help="apply a CTF (300 kV, Cs 2.7 mm, 10%% amplitude contrast)"
    )
    s.add_argument(
        "--defocus", type=float, nargs=2, default=(10000.0, 25000.0), metavar=("LOW", "HIGH"), help="Å"
    )
    s.add_argument(
        "--orientations", choices=SAMPLING_SCHEMES, default="uniform", help="orientation distribution"
    )
    s.add_argument("--box-size", type=int, default=None, metavar="D", help="image size in pixels")
    s.add_argument("--voxel-size", type=float, default=None, metavar="Å", help="pixel size after resampling")
    s.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    s.add_argument("--device", default=None, help="torch device (default: CUDA when available, else CPU)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser(
        "train",
        help="train the Siamese distance estimator on a dataset (runs under torchrun too)",
        description="Train d̂_p(p_i, p_j) ≈ d_q(q_i, q_j) on the training split of DATASET (a folder from "
        "`cryoorient simulate`, or a RELION particle STAR file whose angles are the truth), validate on its "
        "validation split and report RMSE and Pearson r on its test split. Resumes an interrupted run in "
        "OUTPUT. Under `torchrun --nproc-per-node K` it trains with DistributedDataParallel (NCCL on GPUs, "
        "gloo on CPUs); every process reads the whole dataset.",
    )
    t.add_argument("dataset", metavar="DATASET", type=Path, help="dataset folder or particle STAR file")
    t.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="model folder")
    defaults = TrainingConfig()
    t.add_argument(
        "--recipe",
        choices=RECIPES,
        default=defaults.recipe,
        help="in-batch pairs or the paper's (default: %(default)s)",
    )
    t.add_argument(
        "--architecture",
        choices=ARCHITECTURES,
        default=defaults.architecture,
        help="CNN G_w (default: %(default)s)",
    )
    t.add_argument(
        "--n-features",
        type=int,
        default=defaults.n_features,
        metavar="N_F",
        help="feature dimension n_f (default: %(default)s)",
    )
    t.add_argument(
        "--distance",
        choices=DISTANCES,
        default=defaults.distance,
        help="feature distance d_f (default: %(default)s)",
    )
    t.add_argument(
        "--image-size",
        type=int,
        default=defaults.image_size,
        metavar="S",
        help="downsample to S px (default: %(default)s)",
    )
    t.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="passes over the training split (default: %(default)s)",
    )
    t.add_argument("--batch-size", type=int, default=defaults.batch_size, metavar="B",
                   help="images (inbatch) or pairs (paper) per step (default: %(default)s)")  # fmt: skip
    t.add_argument(
        "--lr",
        type=float,
        default=defaults.learning_rate,
        help="learning rate (default: %(default)s)",
    )
    t.add_argument(
        "--noise-var",
        type=float,
        default=0.0,
        metavar="V",
        help="noise σ² added on the fly (default: %(default)s)",
    )
    t.add_argument(
        "--shift",
        type=float,
        default=0.0,
        metavar="T",
        help="shifts ±T px added on the fly (default: %(default)s)",
    )
    t.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of training (and of a STAR file's split) (default: %(default)s)",
    )
    t.add_argument(
        "--max-steps", type=int, default=None, metavar="K", help="stop after K steps (smoke tests)"
    )
    t.add_argument("--restart", action="store_true", help="ignore a checkpoint in OUTPUT and start over")
    t.add_argument("--device", default=None, help="torch device (default: CUDA when available, else CPU)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _check_output_file(path: Path) -> None:
    """An output file must go into an existing folder and must not be a folder itself."""
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; give the name of the .mrcs file to write")
    if not path.parent.is_dir():
        raise DatasetError(f"{path}: folder {path.parent} does not exist; create it first")


def _project(args: argparse.Namespace) -> None:
    _check_output_file(args.output)
    density = load_map(args.map)
    star = read_star(args.angles, pixel_size=density.voxel_size)
    if star.pixel_size is not None and abs(star.pixel_size - density.voxel_size) > 1e-3:
        raise DatasetError(
            f"{args.angles}: pixel size {star.pixel_size} Å differs from the map's voxel size "
            f"{density.voxel_size} Å; resample the map or edit the STAR file"
        )
    if args.ctf and star.ctf is None:
        raise DatasetError(f"{args.angles}: --ctf needs rlnDefocusU/rlnDefocusV columns")
    rotations = euler_to_matrix(torch.from_numpy(star.angles)).float()
    images = project(density.data, rotations, torch.from_numpy(star.shifts).float(), device=args.device).cpu()
    if args.ctf:
        transfer = ctf_2d(
            density.data.shape[-1],
            density.voxel_size,
            defocus_u=torch.from_numpy(star.ctf["defocus_u"]),
            defocus_v=torch.from_numpy(star.ctf["defocus_v"]),
            astigmatism_angle=torch.from_numpy(star.ctf["astigmatism_angle"]),
            **{k: star.ctf[k] for k in CTF_OPTICS},
        )
        images = apply_ctf(images, transfer)
    write_stack(args.output, images.numpy(), density.voxel_size)
    print(f"wrote {len(images)} projections of {density.name} ({images.shape[-1]} px) to {args.output}")


def _simulate(args: argparse.Namespace) -> None:
    variance = noise_variance(args.snr_db) if args.snr_db is not None else args.noise_var
    params = SimulationParameters(
        map=args.map,
        n_projections=args.n_projections,
        box_size=args.box_size,
        voxel_size=args.voxel_size,
        orientations=args.orientations,
        shift_limit=args.shift,
        noise_variance=variance,
        ctf=args.ctf,
        defocus_range=tuple(args.defocus),
        seed=args.seed,
    )
    if args.output.exists() and any(args.output.iterdir()):
        raise DatasetError(f"{args.output} exists and is not empty; choose a new output folder")
    density = load_map(params.map, box_size=params.box_size, voxel_size=params.voxel_size)
    stack, quaternions, splits = simulate_dataset(
        params, density, device=args.device, progress=not args.quiet
    )
    record = {"parameters": params.to_dict(), "cryoorient": __version__} | map_provenance(density)
    save_dataset(args.output, stack, quaternions, splits, record)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    print(
        f"wrote {len(stack)} projections of {density.name} ({stack.images.shape[-1]} px, "
        f"{stack.pixel_size:.2f} Å/px, σ² = {variance:g}) to {args.output}/ ({sizes})"
    )


def _train(args: argparse.Namespace) -> None:
    config = TrainingConfig(
        recipe=args.recipe,
        architecture=args.architecture,
        n_features=args.n_features,
        distance=args.distance,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        noise_variance=args.noise_var,
        shift_limit=args.shift,
        seed=args.seed,
    )
    if args.output.exists() and not args.output.is_dir():
        raise DatasetError(f"{args.output} exists and is not a folder; choose a folder for the model")
    data = open_dataset(args.dataset, seed=args.seed)
    images = torch.from_numpy(data.particles.images).float()
    images = (images - images.mean()) / images.std()
    device = args.device
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # launched by torchrun
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        result = train_distance(
            images, data.quaternions, data.splits, config, folder=args.output, resume=not args.restart,
            device=device, progress=not args.quiet, max_steps=args.max_steps,
        )  # fmt: skip
    finally:
        if world > 1:
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if args.max_steps is not None and result.history and "train_losses" in result.history[-1]:
        print(f"stopped after {args.max_steps} steps; history in {args.output / 'history.json'}")
        return
    test = data.splits.get("test", np.array([], dtype=int))
    if len(test) < 2:
        print(f"trained {config.epochs} epochs into {args.output}/ (no test split to report on)")
        return
    pairs = split_pairs(data.quaternions, test, 4000, seed=args.seed)
    metrics = evaluate_distances(result.model, images, data.quaternions, pairs, config.image_size)
    print(
        f"trained {config.epochs} epochs into {args.output}/; test ({len(pairs)} pairs, uniform d_q): "
        f"RMSE {metrics['rmse']:.3f} rad, Pearson r {metrics['pearson']:.3f}, "
        f"RMSE for d_q > 2: {metrics['rmse_above_2']:.3f} rad"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        {"project": _project, "simulate": _simulate, "train": _train}[args.command](args)
    except (ValueError, OSError) as error:  # MapError and DatasetError are ValueErrors
        print(f"cryoorient {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
