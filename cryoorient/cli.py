"""The ``cryoorient`` command line.

``cryoorient project MAP --angles PARTICLES.star --output OUT.mrcs``
    Project a map at the orientations and origins of a STAR file, like ``relion_project``.
``cryoorient simulate MAP -n N [--noise-var V | --snr-db S] [--shift T] [--ctf] -o DIR``
    Simulate a dataset folder: ``particles.mrcs`` + ``particles.star`` + true quaternions + splits.
``cryoorient train DATASET -o DIR [...]``
    Train the Siamese distance estimator; ``torchrun --nproc-per-node K -m cryoorient.cli train ...``
    trains with DistributedDataParallel.
``cryoorient recover PARTICLES.star (--model MODEL_DIR | --distances-from-angles [--perturb V]) -o OUT.star``
    Orientations from the particles alone: distances, recovery, gauge fixed from the images.
``cryoorient reconstruct PARTICLES.star -o MAP.mrc [--method cgls|fourier]``
    A map from the particles at the STAR file's orientations.
``cryoorient fsc MAP1.mrc MAP2.mrc [--align] [-o CURVE.csv]``
    FSC 0.5 / 0.143 resolutions of two maps, after a rigid alignment (rotation + mirror) if asked.

MAP is an MRC file or a named map (``5j0n``, a PDB ID such as ``5a1a``, ``pseudo[:SEED]``,
``pseudo-d2[:SEED]``). Errors name the file and the bad value and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cryoorient._version import __version__
from cryoorient.alignment import registration_error
from cryoorient.dataset import (
    DatasetError,
    SimulationParameters,
    map_provenance,
    open_dataset,
    save_dataset,
    simulate_dataset,
)
from cryoorient.density import DensityMap, load_map, read_map, write_map
from cryoorient.fsc import fourier_shell_correlation, resolution
from cryoorient.gauge import fix_gauge
from cryoorient.geometry import euler_to_matrix, quaternion_distance_matrix, quaternion_to_euler
from cryoorient.map_alignment import align_maps
from cryoorient.paths import atomic_write
from cryoorient.pipeline import estimated_distances
from cryoorient.projection import apply_ctf, ctf_2d, noise_variance, project
from cryoorient.recipes import RECIPES
from cryoorient.reconstruction import RECONSTRUCTION_METHODS, reconstruct_particles
from cryoorient.recovery import perturb_distances, recover_orientations
from cryoorient.relion import CTF_OPTICS, read_particles, read_star, write_stack, write_star
from cryoorient.sampling import SAMPLING_SCHEMES
from cryoorient.siamese import ARCHITECTURES, DISTANCES
from cryoorient.training import (
    TrainingConfig,
    evaluate_distances,
    load_model,
    split_pairs,
    train_distance,
)

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
                   help="images (inbatch) or pairs (paper) per step (default: %(default)s)")
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
    _add_recovery_commands(sub)
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
        )
    finally:
        if world > 1:
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    _record_training_data(args.output, images.shape[-1], data.particles.pixel_size)
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


#: Beside ``model.pt``: the box and pixel size of the images a CLI-trained model learned from.
TRAINING_DATA = "training_data.json"


def _record_training_data(folder: Path, box_size: int, pixel_size: float) -> None:
    record = {"box_size": int(box_size), "pixel_size": float(pixel_size)}
    text = (json.dumps(record, indent=2) + "\n").encode()
    atomic_write(folder / TRAINING_DATA, lambda f: f.write(text))


def _check_training_data(model_file: Path, box_size: int, pixel_size: float) -> None:
    """Refuse a stack whose box or pixel size differs from the model's training images."""
    record_file = model_file.parent / TRAINING_DATA
    if not record_file.is_file():
        print(
            f"note: {model_file.parent} does not record the box and pixel size it was trained at "
            f"(no {TRAINING_DATA}); make sure this stack ({box_size} px at {pixel_size:g} Å) matches them",
            file=sys.stderr,
        )
        return
    try:
        trained = json.loads(record_file.read_text())
        trained_box, trained_pixel = int(trained["box_size"]), float(trained["pixel_size"])
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(
            f"{record_file}: not a valid training record ({error!r}); it must be JSON with box_size and "
            f"pixel_size. Restore it (`cryoorient train` writes it) or delete it to skip this check"
        ) from error
    if trained_box != box_size:
        raise DatasetError(
            f"{model_file}: the model was trained on {trained_box}-px images ({record_file.name}); "
            f"this stack has {box_size} px. Window or rescale the particles to the training box, or "
            f"train a model on {box_size}-px images"
        )
    if abs(trained_pixel - pixel_size) > 0.01 * trained_pixel:
        raise DatasetError(
            f"{model_file}: the model was trained at {trained_pixel:g} Å/px ({record_file.name}); "
            f"this stack is at {pixel_size:g} Å/px. Rescale the particles to the training pixel size, or "
            f"train a model at {pixel_size:g} Å/px"
        )


# --- from particles alone: recover, reconstruct, fsc ---------------------------------------------

#: Fewer particles than this cannot fix the gauge (common lines need pairs) nor recover reliably.
MIN_PARTICLES = 8


def _add_recovery_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "recover",
        help="recover orientations of a particle stack (distances → recovery → gauge from the images)",
        description="Recover the orientations of the particles in a RELION STAR file: distances between "
        "every pair (from a trained model, or from the STAR's own angles for the paper's exact/perturbed "
        "experiment), orientation recovery, then the gauge fixed from the images by common lines. Writes "
        "a STAR file with the new rlnAngleRot/Tilt/Psi (the input angles are never copied); the result "
        "is defined up to a global rotation and the mirror image, as any ab-initio result.",
    )
    r.add_argument("star", type=Path, metavar="PARTICLES.star", help="RELION 3.0/3.1 STAR with images")
    source = r.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, metavar="MODEL_DIR", help="folder of `cryoorient train`")
    source.add_argument(
        "--distances-from-angles", action="store_true", help="exact distances from the STAR's angles"
    )
    r.add_argument("--perturb", type=float, default=0.0, metavar="VARIANCE",
                   help="with --distances-from-angles: Gaussian errors of this variance, rad²")
    r.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.star", help="output STAR file")
    r.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    r.add_argument("--device", default=None, help="torch device (default: CUDA when available, else CPU)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    c = sub.add_parser(
        "reconstruct",
        help="reconstruct a map from a particle STAR file (its angles, origins and CTF)",
        description="Reconstruct a map from the particles, angles, origins and CTF of a STAR file.",
    )
    c.add_argument("star", type=Path, metavar="PARTICLES.star", help="RELION 3.0/3.1 STAR with images")
    c.add_argument("-o", "--output", type=Path, required=True, metavar="MAP.mrc", help="output map")
    c.add_argument("--method", choices=RECONSTRUCTION_METHODS, default="cgls", help="least squares or direct")
    c.add_argument("--device", default=None, help="torch device (default: CUDA when available, else CPU)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    f = sub.add_parser(
        "fsc",
        help="Fourier shell correlation of two maps (optionally after rigid alignment)",
        description="Print the resolutions where the FSC of two maps of the same box falls below 0.5 and "
        "0.143, and write the curve as CSV (frequency in 1/Å, FSC).",
    )
    f.add_argument("map1", type=Path, metavar="MAP1.mrc")
    f.add_argument("map2", type=Path, metavar="MAP2.mrc")
    f.add_argument("--align", action="store_true", help="first align MAP1 onto MAP2 (rotation + mirror)")
    f.add_argument("-o", "--output", type=Path, default=Path("fsc.csv"), metavar="CURVE.csv",
                   help="where to write the curve (default fsc.csv)")
    f.add_argument("--seed", type=int, default=0, help="seed of the alignment's search")


def _read_particles_checked(star: Path) -> tuple:
    """The particles of a STAR file and their image names, or a DatasetError naming what is missing."""
    meta = read_star(star)
    if meta.image_names is None:
        raise DatasetError(f"{star}: no rlnImageName column, so no images to use; add the particle stack")
    particles = read_particles(star)
    if len(particles) < MIN_PARTICLES:
        raise DatasetError(f"{star}: {len(particles)} particles; at least {MIN_PARTICLES} are needed")
    return particles, meta.image_names


def _relocated_names(names: list[str], star: Path, output: Path) -> list[str]:
    """Image names of ``star`` rewritten relative to ``output``'s folder."""
    out = []
    for entry in names:
        index, _, file = entry.partition("@")
        target = (star.parent / file).resolve()
        out.append(f"{index}@{os.path.relpath(target, output.parent.resolve())}")
    return out


def _recover(args: argparse.Namespace) -> None:
    particles, names = _read_particles_checked(args.star)
    images = torch.from_numpy(particles.images).float()
    images = (images - images.mean()) / images.std()
    progress = not args.quiet
    if args.model is not None:
        if args.perturb:
            raise DatasetError("--perturb applies to --distances-from-angles only")
        model_file = args.model / "model.pt" if args.model.is_dir() else args.model
        if not model_file.is_file():
            raise DatasetError(f"{args.model}: no model.pt; train one with `cryoorient train`")
        model, config = load_model(model_file, device=args.device)
        box = images.shape[-1]
        if config.image_size is not None and config.image_size > box:
            raise DatasetError(
                f"{model_file}: the model was trained on {config.image_size}-px images, larger than this "
                f"stack's {box} px; use a stack at the training data's box and pixel size"
            )
        if config.distance == "euclidean":
            raise DatasetError(f"{model_file}: a Euclidean d_f is not in radians; use a cosine model")
        _check_training_data(model_file, box, particles.pixel_size)
        distances = estimated_distances(model, images, config.image_size, device=args.device)
        what = f"distances from {model_file}"
    else:
        if not args.perturb >= 0:
            raise DatasetError(f"--perturb must be a variance >= 0; got {args.perturb}")
        distances = quaternion_distance_matrix(particles.quaternions)
        if args.perturb:
            distances = perturb_distances(distances, math.sqrt(args.perturb), seed=args.seed)
        what = f"distances from the STAR's angles (perturbation variance {args.perturb:g})"
    recovery = recover_orientations(distances.double(), seed=args.seed, device=args.device)
    gauge = fix_gauge(
        images, recovery.quaternions.cpu(), shifts=torch.from_numpy(particles.shifts),
        seed=args.seed, device=args.device, progress=progress,
    )
    angles = quaternion_to_euler(gauge.quaternions.cpu()).numpy()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_star(
        args.output, angles, particles.shifts, particles.pixel_size, images.shape[-1],
        _relocated_names(names, args.star, args.output), particles.ctf,
    )
    print(
        f"recovered {len(particles)} orientations ({what}): L_OR {recovery.loss:.3g} rad², gauge "
        f"{gauge.gauge_class}, common-line score {gauge.score:.3f} (other class {gauge.other_score:.3f}); "
        f"wrote {args.output}"
    )
    if args.distances_from_angles:
        error = registration_error(particles.quaternions, gauge.quaternions.cpu())
        print(f"E_OR,reg against the STAR's angles (global rotation and mirror only): {error:.4f} rad")


def _reconstruct(args: argparse.Namespace) -> None:
    particles, _ = _read_particles_checked(args.star)
    result = reconstruct_particles(particles, method=args.method, device=args.device, progress=not args.quiet)
    volume = result.volume.detach().cpu().numpy()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_map(
        args.output, DensityMap(volume, particles.pixel_size, str(args.output), f"reconstruct {args.star}")
    )
    print(f"reconstructed {len(particles)} particles ({args.method}) into {args.output}")


def _fsc(args: argparse.Namespace) -> None:
    map1, map2 = read_map(args.map1), read_map(args.map2)
    if map1.shape != map2.shape or abs(map1.voxel_size - map2.voxel_size) > 1e-3 * map2.voxel_size:
        raise DatasetError(
            f"{args.map1} ({map1.shape}, {map1.voxel_size:g} Å) and {args.map2} ({map2.shape}, "
            f"{map2.voxel_size:g} Å) differ in box or voxel size; resample one first"
        )
    data1 = map1.data
    if args.align:
        aligned = align_maps(map1.data, map2.data, seed=args.seed)
        data1 = aligned.aligned
        print(
            f"aligned {args.map1} onto {args.map2}: correlation {aligned.correlation:.3f}"
            f"{' (mirrored)' if aligned.mirrored else ''}"
        )
    frequencies, fsc = fourier_shell_correlation(data1, map2.data, voxel_size=map2.voxel_size)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    table = np.stack((frequencies.numpy(), fsc.numpy()), axis=1)
    np.savetxt(args.output, table, delimiter=",", header="frequency_per_angstrom,fsc", comments="")
    print(
        f"FSC 0.5: {resolution(frequencies, fsc, 0.5):.2f} Å, "
        f"FSC 0.143: {resolution(frequencies, fsc, 0.143):.2f} Å; "
        f"curve in {args.output}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        commands = {"project": _project, "simulate": _simulate, "train": _train}
        commands |= {"recover": _recover, "reconstruct": _reconstruct, "fsc": _fsc}
        commands[args.command](args)
    except (ValueError, OSError) as error:  # MapError and DatasetError are ValueErrors
        print(f"cryoorient {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
