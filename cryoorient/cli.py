"""The ``cryoorient`` command line: simulate, train, recover, reconstruct and compare, on RELION files.

Run from a RELION project folder: image names in STAR files (``000001@Extract/job005/mic1.mrcs``)
are read relative to the working directory, as RELION does, and, failing that, relative to the STAR
file's own folder (a self-contained folder such as the datasets ``simulate`` writes).
Every command refuses to overwrite an existing output unless given ``--force``, writes
``OUTPUT.provenance.json`` (command, version, commit, inputs' SHA-256) beside what it writes, and
stops on bad input with a message naming the file, the value and the remedy (exit status 2).
``recover`` exits with status 3 when its own check finds the orientations no better than chance
(the STAR file is still written, for inspection). The full reference is ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cryoorient._version import __version__
from cryoorient.alignment import registration_error
from cryoorient.bootstrap import BootstrapSettings, run_rounds
from cryoorient.ctf_correction import TREATMENTS, ctf_grids, treatment_channels
from cryoorient.dataset import (
    DatasetError,
    SimulationParameters,
    map_provenance,
    open_dataset,
    save_dataset,
    simulate_dataset,
    simulate_particles,
    split_indices,
)
from cryoorient.density import DensityMap, MapFallbackWarning, load_map, read_map, write_map
from cryoorient.fsc import fourier_shell_correlation, resolution
from cryoorient.gauge import fix_gauge
from cryoorient.geometry import (
    euler_to_matrix,
    matrix_to_euler,
    quaternion_distance_matrix,
    quaternion_to_euler,
)
from cryoorient.many_maps import train_on_maps
from cryoorient.map_alignment import align_maps
from cryoorient.matching import grid_spacing, match_to_map
from cryoorient.model_cache import DEFAULT_MODEL, dataset_ctf, model_config
from cryoorient.model_input import InputRecord, model_input, read_record, standardise_stack, write_record
from cryoorient.paths import atomic_write, git_commit, sha256_file
from cryoorient.pipeline import recover_from_images
from cryoorient.projection import apply_ctf, ctf_2d, noise_variance, project, shift_images
from cryoorient.recipes import RECIPES
from cryoorient.reconstruction import RECONSTRUCTION_METHODS, reconstruct
from cryoorient.recovery import perturb_distances, recover_orientations
from cryoorient.refinement import refine
from cryoorient.relion import (
    CTF_OPTICS,
    CTF_OPTICS_COLUMNS,
    read_particles,
    read_star,
    reconstruct_particles,
    resolve_image_names,
    write_stack,
    write_star_like,
)
from cryoorient.sampling import SAMPLING_SCHEMES, sample_orientations
from cryoorient.siamese import ARCHITECTURES, DISTANCES
from cryoorient.training import (
    TrainingConfig,
    evaluate_distances,
    input_treatment,
    load_model,
    split_pairs,
    train_distance,
)

__all__ = ["main"]

OVERVIEW = """\
commands, in the order of a study:
  simulate     projections of a map at random orientations (a dataset to learn from)
  project      projections of a map at the orientations of a STAR file (like relion_project)
  resample     a map at another box and pixel size (e.g. a reference at a stack's)
  train        learn the distance d̂_p(p_i, p_j) ≈ d_q(q_i, q_j) from projections of known orientation
  recover      orientations of a particle stack from its images alone (learned distances, recovery,
               gauge fixed by common lines); input angles are neither needed nor used
  reconstruct  a map from a STAR file's particles, angles and origins (and its CTF with --ctf)
  fsc          Fourier shell correlation of two maps (after a rigid alignment if asked)
  match        orientations by projection matching against a map you have (global, then local)
  refine       orientations refined against half maps reconstructed from the particles themselves
  abinitio     orientations without the map: recover, refine, fine-tune on the particles' own map, in
               rounds, from an initial model or an estimator trained on something else

a workflow from a RELION project folder (its root, where RELION runs):
  cryoorient resample 5j0n --box-size 64 --voxel-size 4.3 -o Reference/ref.mrc
  cryoorient simulate Reference/ref.mrc -n 5000 --noise-var 4 -o cryoorient/train_set
  cryoorient train cryoorient/train_set -o cryoorient/model
  cryoorient recover Extract/job005/particles.star --model cryoorient/model -o cryoorient/recovered.star
  cryoorient reconstruct cryoorient/recovered.star -o cryoorient/map.mrc
  cryoorient fsc cryoorient/map.mrc Reference/ref.mrc --align -o cryoorient/fsc.csv

`cryoorient COMMAND --help` lists a command's options; docs/cli.md is the reference."""

#: Fewer particles than this cannot fix the gauge (common lines need pairs) nor recover reliably.
MIN_PARTICLES = 8

#: ``--snr-db`` outside this range (σ² from 10⁻⁴ to 10⁴) is a typing error rather than an experiment.
SNR_DB_RANGE = (-40.0, 40.0)

#: Bytes of memory per simulated pixel: float32 projections, their float64 normalisation, the copy
#: written out (measured peak of ``simulate`` ≈ 17 bytes per pixel; 20 leaves a margin).
SIMULATION_BYTES_PER_PIXEL = 20

#: Python field names in the package's messages, and the flags a command-line user knows them by.
FLAGS = {
    "batch_size": "--batch-size",
    "n_features": "--n-features",
    "learning_rate": "--lr",
    "noise_variance": "--noise-var",
    "shift_limit": "--shift",
    "image_size": "--image-size",
    "n_projections": "-n/--n-projections",
    "box_size": "--box-size",
    "voxel_size": "--voxel-size",
    "defocus_range": "--defocus",
    "resume=False": "--restart",
    "epochs": "--epochs",
    "project_dir": "--project-dir",
}


class _Formatter(argparse.HelpFormatter):
    """Shows every option's default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = "default" in text or action.default in (None, False, argparse.SUPPRESS)
        if shown or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class _TopFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """The top-level help: the overview's line breaks kept."""


class _Version(argparse.Action):
    """``--version``, whose text (it asks git for the commit) is made only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(_version())
        parser.exit()


def _version() -> str:
    return (
        f"cryoorient {__version__} (commit {git_commit()}), Python {platform.python_version()}, "
        f"PyTorch {torch.__version__}"
    )


def _common(
    p: argparse.ArgumentParser, *, device: bool = True, force: bool = True, quiet: bool = False
) -> None:
    if device:
        p.add_argument(
            "--device",
            default=None,
            help="torch device: cpu, cuda, cuda:N (default: CUDA when available, else CPU)",
        )
    if force:
        p.add_argument("--force", action="store_true", help="overwrite an existing output")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bar")


def _project_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--project-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the RELION project folder image names are relative to (default: the working folder)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryoorient",
        description="Orientations of cryo-EM projections from learned distances (companion to "
        "arXiv:2104.06237), on RELION STAR files and MRC stacks.",
        epilog=OVERVIEW,
        formatter_class=_TopFormatter,
    )
    parser.add_argument("--version", action=_Version, help="show the version, commit, Python and PyTorch")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=description, formatter_class=_Formatter)

    s = command(
        "simulate",
        "simulate a dataset folder (.mrcs + .star + true orientations + splits)",
        "Simulate N projections of MAP at random orientations, with optional shifts, CTF and noise, and "
        "write them with their RELION STAR file, true quaternions and the paper's 50/17/33 % "
        "train/validation/test split into a new folder. The clean projections are normalised to zero mean "
        "and unit variance over the stack before the noise is added, so σ² is relative to the signal.",
    )
    s.add_argument("map", metavar="MAP", help="MRC file or named map (5j0n, 5a1a, pseudo, pseudo:SEED, ...)")
    s.add_argument(
        "-n", "--n-projections", type=int, required=True, metavar="N", help="number of projections"
    )
    s.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="new output folder")
    noise = s.add_mutually_exclusive_group()
    noise.add_argument("--noise-var", type=float, default=0.0, metavar="V", help="noise variance σ²")
    noise.add_argument(
        "--snr-db",
        type=float,
        default=None,
        metavar="S",
        help=f"signal-to-noise ratio in dB, {SNR_DB_RANGE[0]:g} to {SNR_DB_RANGE[1]:g} (σ² = 10^(-S/10))",
    )
    s.add_argument("--shift", type=float, default=0.0, metavar="T", help="triangular shift limit ±T pixels")
    s.add_argument(
        "--ctf", action="store_true", help="apply a CTF (300 kV, Cs 2.7 mm, 10%% amplitude contrast)"
    )
    s.add_argument(
        "--defocus",
        type=float,
        nargs=2,
        default=(10000.0, 25000.0),
        metavar=("LOW", "HIGH"),
        help="defocus range, Å",
    )
    s.add_argument(
        "--orientations", choices=SAMPLING_SCHEMES, default="uniform", help="orientation distribution"
    )
    s.add_argument(
        "--box-size",
        type=int,
        default=None,
        metavar="D",
        help="image size in pixels (default: the map's, or with --voxel-size its field of view)",
    )
    s.add_argument(
        "--voxel-size",
        type=float,
        default=None,
        metavar="Å",
        help="pixel size after resampling (default: the map's)",
    )
    s.add_argument(
        "--allow-fallback",
        action="store_true",
        help="when a named map cannot be had offline, simulate the embedded pseudo-protein instead",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    _common(s, force=False, quiet=True)

    p = command(
        "project",
        "project a map at the orientations of a STAR file (like relion_project)",
        "Project MAP at the Euler angles and origins listed in a STAR file. Images come in STAR order, "
        "box size = map size, float32, with the map's voxel size in the header.",
    )
    p.add_argument("map", metavar="MAP", help="MRC file or named map (5j0n, 5a1a, pseudo, pseudo:SEED, ...)")
    p.add_argument(
        "--angles", required=True, type=Path, metavar="PARTICLES.star", help="RELION 3.0 or 3.1 STAR"
    )
    p.add_argument("--output", "-o", required=True, type=Path, metavar="OUT.mrcs", help="output image stack")
    p.add_argument(
        "--ctf", action="store_true", help="apply the CTF given by the STAR file's defocus columns"
    )
    _common(p)

    m = command(
        "resample",
        "a map at another box and pixel size (a reference at a stack's)",
        "Write MAP resampled to --voxel-size Å and cropped or padded to --box-size voxels around its centre "
        "(or at the box and pixel size of a STAR file's particles with --like). An MRC file's values are "
        "kept as they are; a named map (5j0n, a PDB ID, pseudo) is normalised to a maximum of 1.",
    )
    m.add_argument("map", metavar="MAP", help="MRC file or named map (5j0n, 5a1a, pseudo, pseudo:SEED, ...)")
    m.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.mrc", help="output map")
    m.add_argument("--box-size", type=int, default=None, metavar="D", help="edge of the output cube, voxels")
    m.add_argument("--voxel-size", type=float, default=None, metavar="Å", help="output voxel size")
    m.add_argument(
        "--like",
        type=Path,
        default=None,
        metavar="PARTICLES.star",
        help="take the box and pixel size of this STAR file's particles",
    )
    _common(m, device=False)

    t = command(
        "train",
        "train the distance estimator on projections of known orientation (runs under torchrun)",
        "Train d̂_p(p_i, p_j) ≈ d_q(q_i, q_j) on the training split of DATASET (a folder from `cryoorient "
        "simulate`, or a RELION particle STAR file whose angles are trusted), validate on its validation "
        "split and report RMSE and Pearson r on its test split. The defaults are the notebooks' model "
        f"(the default study, cryoorient/studies/default.yml: "
        f"{', '.join(f'{k} {v}' for k, v in DEFAULT_MODEL.items())}); "
        "its 40 epochs on 2,500 training images of 64 px take 22-30 min on two CPU cores. The stack is "
        "standardised (zero mean, unit variance over the stack) and OUTPUT/training_data.json records what "
        "the network saw, so that `recover` gives it the same. An interrupted run resumes when the same "
        "command is run again. Under `torchrun --nproc-per-node K -m cryoorient.cli train ...` it trains "
        "with DistributedDataParallel.",
    )
    t.add_argument("dataset", metavar="DATASET", type=Path, help="dataset folder or particle STAR file")
    t.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="model folder")
    t.add_argument(
        "--maps",
        nargs="+",
        default=None,
        metavar="MAP",
        help="train on projections drawn afresh at every step from these maps (files or names, each "
        "brought to DATASET's box and pixel size; a batch is one map's), DATASET validating and testing: "
        "an estimator for proteins it has not seen",
    )
    t.add_argument(
        "--steps-per-epoch",
        type=int,
        default=40,
        metavar="K",
        help="with --maps: steps between validations and checkpoints (default 40)",
    )
    t.add_argument(
        "--init-model",
        type=Path,
        default=None,
        metavar="MODEL_DIR",
        help="start from this trained model (fine-tuning, e.g. to a higher noise level or to "
        "train a finished model longer); its network settings are kept",
    )
    t.add_argument(
        "--recipe",
        choices=RECIPES,
        default=None,
        help=f"in-batch pairs or the paper's (default: {DEFAULT_MODEL['recipe']})",
    )
    t.add_argument(
        "--architecture",
        choices=ARCHITECTURES,
        default=None,
        help=f"CNN G_w (default: {DEFAULT_MODEL['architecture']})",
    )
    t.add_argument(
        "--n-features",
        type=int,
        default=None,
        metavar="N_F",
        help=f"feature dimension n_f (default: {DEFAULT_MODEL['n_features']})",
    )
    t.add_argument(
        "--distance",
        choices=DISTANCES,
        default=None,
        help=f"feature distance d_f (default: {DEFAULT_MODEL['distance']}; the paper's cosine "
        "cannot represent d_q, see notebook 02)",
    )
    t.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="S",
        help=f"downsample to S px for the network (default: {DEFAULT_MODEL['image_size']})",
    )
    t.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"passes over the training split (default: {DEFAULT_MODEL['epochs']})",
    )
    t.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="B",
        help=f"images (inbatch) or pairs (paper) per step (default: {DEFAULT_MODEL['batch_size']})",
    )
    t.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate (default: {DEFAULT_MODEL['learning_rate']:g}; 3e-4 with --init-model)",
    )
    t.add_argument(
        "--noise-var",
        type=float,
        default=0.0,
        metavar="V",
        help="noise σ² added on the fly, relative to the standardised stack",
    )
    t.add_argument("--shift", type=float, default=0.0, metavar="T", help="shifts ±T px added on the fly")
    t.add_argument(
        "--treatment",
        choices=TREATMENTS,
        default=None,
        help="train on CTF-affected particles (the STAR's defocus columns), each prepared this way after "
        "the on-the-fly noise: raw, phase_flip, wiener, or two_channel (raw + flipped); `recover` "
        "prepares its particles the same way (default: none, or --init-model's)",
    )
    t.add_argument("--seed", type=int, default=0, help="seed of training (and of a STAR file's split)")
    t.add_argument(
        "--max-steps", type=int, default=None, metavar="K", help="stop after K steps (smoke tests)"
    )
    t.add_argument("--restart", action="store_true", help="ignore a checkpoint in OUTPUT and start over")
    _project_dir(t)
    _common(t, quiet=True)

    r = command(
        "recover",
        "recover orientations of a particle stack from its images alone",
        "Recover the orientations of the particles of a RELION STAR file: distances between every pair "
        "(from a trained model, or from the STAR's own angles for the paper's exact/perturbed experiment), "
        "orientation recovery, then the gauge fixed from the images by common lines, checked against "
        "chance (the same orientations shuffled among the images). Writes the input STAR file with "
        "every column and optics group as it was and new rlnAngleRot/Tilt/Psi (input angles are not "
        "needed, and never copied); the result is defined up to a global rotation and the mirror image, "
        "as any ab-initio result. Exit status 3: the check found the orientations no better than chance "
        "(the file is written anyway).",
    )
    r.add_argument("star", type=Path, metavar="PARTICLES.star", help="RELION 3.0/3.1 STAR with images")
    source = r.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model", type=Path, metavar="MODEL_DIR", help="folder of `cryoorient train` or models/KEY"
    )
    source.add_argument(
        "--distances-from-angles", action="store_true", help="exact distances from the STAR's angles"
    )
    r.add_argument(
        "--perturb",
        type=float,
        default=0.0,
        metavar="VARIANCE",
        help="with --distances-from-angles: Gaussian errors of this variance, rad²",
    )
    r.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.star", help="output STAR file")
    _project_dir(r)
    r.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    _common(r, quiet=True)

    c = command(
        "reconstruct",
        "reconstruct a map from a particle STAR file (its angles and origins; its CTF with --ctf)",
        "Reconstruct a map from the particles, angles and origins of a STAR file, and with --ctf from its "
        "defocus columns and optics too (as relion_reconstruct, which applies no CTF unless told to).",
    )
    c.add_argument("star", type=Path, metavar="PARTICLES.star", help="RELION 3.0/3.1 STAR with images")
    c.add_argument("-o", "--output", type=Path, required=True, metavar="MAP.mrc", help="output map")
    c.add_argument("--method", choices=RECONSTRUCTION_METHODS, default="cgls", help="least squares or direct")
    c.add_argument(
        "--ctf",
        action="store_true",
        help="apply the CTF of the STAR file's defocus columns, as relion_reconstruct --ctf does "
        "(without it the particles are taken as CTF-free or phase-flipped)",
    )
    _project_dir(c)
    _common(c, quiet=True)

    f = command(
        "fsc",
        "Fourier shell correlation of two maps (optionally after rigid alignment)",
        "Print the resolution where the FSC of two maps of the same box falls below the criterion: 0.5 "
        "against a reference map (the default), 0.143 between independent half maps (--half-maps). With "
        "-o, write the curve as CSV (frequency in 1/Å, FSC) and a plot beside it (same name, .png).",
    )
    f.add_argument("map1", type=Path, metavar="MAP1.mrc")
    f.add_argument("map2", type=Path, metavar="MAP2.mrc", help="the reference, or the other half map")
    f.add_argument("--align", action="store_true", help="first align MAP1 onto MAP2 (rotation + mirror)")
    f.add_argument("--half-maps", action="store_true", help="the maps are independent half maps: FSC 0.143")
    f.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="CURVE.csv",
        help="write the curve (and CURVE.png); nothing is written without it",
    )
    f.add_argument("--seed", type=int, default=0, help="seed of the alignment's search")
    _common(f, device=False)

    m = command(
        "match",
        "orientations by projection matching against a reference map (global grid, then local)",
        "Find each particle's orientation by comparing it with projections of a reference map: a global "
        "search over a grid of orientations (Fibonacci directions x in-plane angles), then a local search "
        "around the best. The score is the normalised cross-correlation of the band-limited images "
        "(the likelihood under white noise with a free scale and offset). Particles are re-centred by "
        "their origins first and the origins are kept; with --ctf each projection is multiplied by the "
        "particle's CTF before the comparison (else phase-flip the particles first). Writes the STAR "
        "file with every column as it was and new rlnAngleRot/Tilt/Psi.",
    )
    m.add_argument("star", type=Path, metavar="PARTICLES.star", help="RELION 3.0/3.1 STAR with images")
    m.add_argument(
        "--reference",
        type=Path,
        required=True,
        metavar="MAP.mrc",
        help="map at the particles' box and pixel size (cryoorient resample makes one)",
    )
    m.add_argument(
        "-o", "--output", type=Path, required=True, metavar="MATCHED.star", help="output STAR file"
    )
    m.add_argument(
        "--directions", type=int, default=1000, metavar="N", help="projection directions of the grid"
    )
    m.add_argument("--in-plane", type=int, default=48, metavar="M", help="in-plane angles per direction")
    m.add_argument(
        "--max-frequency",
        type=float,
        default=0.25,
        metavar="F",
        help="band of the global search, cycles per pixel (0.5 is Nyquist)",
    )
    m.add_argument(
        "--local-frequency",
        type=float,
        default=0.5,
        metavar="F",
        help="band of the local search, cycles per pixel",
    )
    m.add_argument("--no-local", action="store_true", help="stop after the global search")
    m.add_argument(
        "--ctf",
        action="store_true",
        help="compare each particle with projections times its CTF (the STAR's defocus columns and optics); "
        "without it the particles are taken as CTF-free or phase-flipped",
    )
    _project_dir(m)
    _common(m, quiet=True)

    e = command(
        "refine",
        "refine orientations against half maps reconstructed from the particles (no reference)",
        "Refine the orientations of INIT.star (default: the particles' own angles) the gold-standard way: "
        "the particles are split into two random halves, each half is reconstructed, and each particle is "
        "matched locally against its own half's map (FSC-weighted, up to the half maps' FSC-0.143 "
        "resolution), until the orientations stop moving. Writes the STAR file with new angles and "
        "rlnRandomSubset (1 or 2); with --map-out, the map, both half maps, their FSC curve (CSV and "
        "PNG) and the resolution at 0.143. Particles are re-centred by their origins, which are kept.",
    )
    e.add_argument("star", type=Path, metavar="PARTICLES.star", help="RELION 3.0/3.1 STAR with images")
    e.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="INIT.star",
        help="the starting angles, one row per particle in the same order (default: PARTICLES.star's)",
    )
    e.add_argument(
        "-o", "--output", type=Path, required=True, metavar="REFINED.star", help="output STAR file"
    )
    e.add_argument(
        "--map-out",
        type=Path,
        default=None,
        metavar="MAP.mrc",
        help="also write the map, MAP_half1.mrc, MAP_half2.mrc and MAP_fsc.csv/.png",
    )
    e.add_argument("--rounds", type=int, default=8, metavar="K", help="refinement rounds at most")
    e.add_argument("--seed", type=int, default=0, help="seed of the split into halves")
    e.add_argument(
        "--ctf",
        action="store_true",
        help="reconstruct the half maps with each particle's CTF and compare each particle with their "
        "projections times its CTF (the STAR's defocus columns); without it the particles are taken as "
        "CTF-free or phase-flipped",
    )
    _project_dir(e)
    _common(e, quiet=True)

    b = command(
        "abinitio",
        "orientations without the map: the bootstrap loop from an initial model or another estimator",
        "Orient particles without their map. Start from an estimator trained on something else: on "
        "projections of an initial model (--init-model MAP.mrc: a low-resolution map, a homologue; trained "
        "here first) or a trained model (--pretrained MODEL_DIR). Each round recovers the orientations from "
        "the current estimator's distances, fixes the gauge from the images, refines them against the "
        "particles' own half maps, and fine-tunes the estimator on projections of their map. Writes "
        "OUT/round_K/ (particles.star with the round's angles, map.mrc, model.pt) and resumes after the last "
        "finished round when run again. No reference is needed; nothing is scored against a truth.",
    )
    b.add_argument("star", type=Path, metavar="PARTICLES.star", help="RELION 3.0/3.1 STAR with images")
    start = b.add_mutually_exclusive_group(required=True)
    start.add_argument("--init-model", type=Path, metavar="MAP.mrc",
                       help="an initial map at the particles' box and pixel size (cryoorient resample)")
    start.add_argument("--pretrained", type=Path, metavar="MODEL_DIR",
                       help="a trained model folder (cryoorient train, models/KEY)")
    b.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output folder")
    b.add_argument("--rounds", type=int, default=3, metavar="K", help="rounds of the loop (default 3)")
    b.add_argument("--refine-rounds", type=int, default=4, metavar="R",
                   help="refinement rounds in each round (default 4)")
    b.add_argument("--n-train", type=int, default=5000, metavar="N",
                   help="projections of each round's map to fine-tune on (default 5000)")
    b.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per round (default 10)")
    b.add_argument("--init-epochs", type=int, default=DEFAULT_MODEL["epochs"], metavar="E",
                   help=f"with --init-model: epochs of its training (default {DEFAULT_MODEL['epochs']})")
    b.add_argument("--noise-var", type=float, default=0.0, metavar="V",
                   help="with --init-model: noise σ² added on the fly in training, as in the particles")
    b.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    _project_dir(b)
    _common(b, force=False, quiet=True)
    return parser


# --- checks shared by the commands -------------------------------------------------------------------


def _device(value: str | None) -> str | None:
    """``--device`` checked: a torch device this build can use, or an error naming the remedy."""
    if value is None:
        return None
    try:
        device = torch.device(value)
    except RuntimeError as error:
        raise DatasetError(f"--device {value}: not a device ({error}); use cpu, cuda or cuda:N") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = (
                "a CPU-only build"
                if torch.version.cuda is None
                else f"CUDA {torch.version.cuda}, no GPU visible"
            )
            raise DatasetError(
                f"--device {value}: this PyTorch ({torch.__version__}, {build}) cannot use CUDA. Leave "
                '--device out to run on the CPU, or install a CUDA build: make install TORCH="torch==2.13.0 '
                '--index-url https://download.pytorch.org/whl/cu126"'
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DatasetError(f"--device {value}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DatasetError(f"--device {value}: MPS is not available here; leave --device out")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DatasetError(f"--device {value}: unsupported device type {device.type!r}; use cpu or cuda")
    return value


def _flag_words(message: str) -> str:
    """A package message with Python field names replaced by the flags that set them."""
    for field, flag in FLAGS.items():
        message = re.sub(rf"(?<![\w-]){re.escape(field)}(?![\w-])", flag, message)
    return message


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _claim_output(
    path: Path, force: bool, inputs: tuple[Path, ...] = (), *, create_parent: bool = True
) -> None:
    """Refuse to write ``path`` over an input, over a folder, or over an existing file without ``--force``.

    Nothing is created here: a missing parent folder is made just before the output is written
    (:func:`_parent`), so that a command stopped by bad input leaves nothing behind.
    """
    for given in inputs:
        if given is not None and _same_file(path, given):
            raise DatasetError(f"{path} is an input of this command; choose another output name")
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; give the name of the file to write")
    if path.exists() and not force:
        raise DatasetError(f"{path} exists; choose another output name, or add --force to overwrite it")
    if not create_parent and not path.parent.is_dir():
        raise DatasetError(f"{path}: folder {path.parent} does not exist; create it first")


def _parent(path: Path) -> Path:
    """``path``, after making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _provenance(output: Path, argv: list[str], inputs: list[Path], **facts: object) -> Path:
    """Write ``OUTPUT.provenance.json`` (``OUTPUT/provenance.json`` for a folder): how it was made."""
    target = (
        output / "provenance.json" if output.is_dir() else output.with_name(output.name + ".provenance.json")
    )
    unique = list(dict.fromkeys(Path(p) for p in inputs))
    record = {
        "command": ["cryoorient", *argv],
        "working_directory": os.getcwd(),
        "cryoorient": __version__,
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": {str(p): sha256_file(p) for p in unique if p.is_file()},
    } | facts
    text = (json.dumps(record, indent=2, default=str) + "\n").encode()
    atomic_write(target, lambda f: f.write(text))
    return target


def _stacks(star: Path, names: list[str] | None, project_dir: Path | None) -> list[Path]:
    """The image stacks a STAR file's particles come from (for provenance)."""
    return [] if names is None else sorted(set(resolve_image_names(star, names, project_dir)))


def _read_particles_checked(star: Path, *, angles: bool, project_dir: Path | None = None):
    """The particles of a STAR file (images read), or a DatasetError naming what is missing."""
    meta = read_star(star, angles_required=angles)
    if meta.image_names is None:
        raise DatasetError(f"{star}: no rlnImageName column, so no images to use; add the particle stack")
    try:
        particles = read_particles(star, angles_required=angles, project_dir=project_dir)
    except DatasetError as error:
        raise DatasetError(_flag_words(str(error))) from error
    if len(particles) < MIN_PARTICLES:
        raise DatasetError(f"{star}: {len(particles)} particles; at least {MIN_PARTICLES} are needed")
    return particles, meta


def _uniform_ctf(star: Path, particles, defaulted: tuple[str, ...] = ()) -> dict | None:
    """The particles' CTF, refused when its optics (voltage, Cs, amplitude contrast) differ by group."""
    ctf = particles.ctf
    if ctf is not None and any(np.ndim(ctf[k]) for k in CTF_OPTICS):
        raise DatasetError(
            f"{star}: the optics groups differ in voltage, Cs or amplitude contrast, which this command "
            "applies as one; process one optics group at a time"
        )
    if ctf is not None and defaulted:
        assumed = ", ".join(f"{CTF_OPTICS_COLUMNS[k]} {CTF_OPTICS[k]:g}" for k in defaulted)
        missing = ", ".join(CTF_OPTICS_COLUMNS[k] for k in defaulted)
        print(f"warning: {star} does not give {missing}; the CTF assumes {assumed}", file=sys.stderr)
    return ctf


def _model_ctf(
    star: Path, particles, defaulted: tuple[str, ...], model_file: Path, config: TrainingConfig
) -> torch.Tensor | None:
    """The particles' (N, D, D) CTFs for a model trained with a CTF treatment, else ``None``.

    Refuses a stack without CTF columns for such a model; warns when a stack's CTF meets a model
    trained without one (the images are then used as they are).
    """
    if config.treatment is None:
        if particles.ctf is not None:
            print(
                f"warning: {star} has CTF columns but {model_file} was trained without a CTF; the images "
                "are used as they are (train a model with --treatment, or phase-flip the particles first)",
                file=sys.stderr,
            )
        return None
    if particles.ctf is None:
        raise DatasetError(
            f"{model_file} was trained on CTF-affected images ({config.treatment}); {star} has no "
            "rlnDefocusU/rlnDefocusV columns. Use a model trained without a CTF for CTF-free particles"
        )
    ctf = _uniform_ctf(star, particles, defaulted)
    return ctf_grids(ctf, particles.images.shape[-1], particles.pixel_size)


# --- simulate, project, resample ---------------------------------------------------------------------


def _load_named_map(name: str, allow_fallback: bool, **resample) -> DensityMap:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MapFallbackWarning)
        try:
            density = load_map(name, fallback=allow_fallback, **resample)
        except ValueError as error:
            raise DatasetError(_flag_words(str(error))) from error
    for warning in caught:
        if issubclass(warning.category, MapFallbackWarning):
            print(
                f"warning: map {name!r} could not be had; simulating {density.name!r} instead "
                "(--allow-fallback). The dataset records which map it used.",
                file=sys.stderr,
            )
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return density


def _check_resources(n: int, box: int, output: Path) -> None:
    """Refuse a simulation that cannot fit in memory or on disk, before starting it."""
    pixels = n * box * box
    need_memory = pixels * SIMULATION_BYTES_PER_PIXEL
    need_disk = pixels * 4 + n * 250  # the float32 stack and about a line of STAR per particle
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        available = None
    if available is not None and need_memory > available:
        raise DatasetError(
            f"-n {n} projections of {box} px need about {need_memory / 2**30:.1f} GiB of memory; "
            f"{available / 2**30:.1f} GiB are free. Simulate fewer projections (several datasets if needed) "
            "or a smaller --box-size"
        )
    folder = output.parent if output.parent.exists() else Path.cwd()
    free = shutil.disk_usage(folder).free
    if need_disk > free:
        raise DatasetError(
            f"-n {n} projections of {box} px need about {need_disk / 2**30:.1f} GiB on disk; "
            f"{free / 2**30:.1f} GiB are free in {folder}"
        )


def _simulate(args: argparse.Namespace, argv: list[str]) -> None:
    if args.n_projections < 1:
        raise DatasetError(f"-n/--n-projections must be at least 1; got {args.n_projections}")
    if args.snr_db is not None and not SNR_DB_RANGE[0] <= args.snr_db <= SNR_DB_RANGE[1]:
        raise DatasetError(
            f"--snr-db {args.snr_db:g} is outside {SNR_DB_RANGE[0]:g} to {SNR_DB_RANGE[1]:g} dB "
            f"(σ² = {noise_variance(args.snr_db):.3g}); check the sign and the unit"
        )
    variance = noise_variance(args.snr_db) if args.snr_db is not None else args.noise_var
    try:
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
    except ValueError as error:
        raise DatasetError(_flag_words(str(error))) from error
    if args.output.exists() and (not args.output.is_dir() or any(args.output.iterdir())):
        raise DatasetError(f"{args.output} exists and is not empty; choose a new output folder")
    density = _load_named_map(
        params.map, args.allow_fallback, box_size=params.box_size, voxel_size=params.voxel_size
    )
    _check_resources(params.n_projections, density.box_size, args.output)
    try:
        stack, quaternions, splits = simulate_dataset(
            params, density, device=args.device, progress=not args.quiet
        )
    except ValueError as error:
        raise DatasetError(_flag_words(str(error))) from error
    record = {"parameters": params.to_dict(), "cryoorient": __version__} | map_provenance(density)
    save_dataset(args.output, stack, quaternions, splits, record)
    inputs = [Path(args.map)] if Path(args.map).is_file() else []
    _provenance(args.output, argv, inputs, map=map_provenance(density)["map"])
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    print(
        f"wrote {len(stack)} projections of {density.name} ({stack.images.shape[-1]} px, "
        f"{stack.pixel_size:.2f} Å/px, σ² = {variance:g}) to {args.output}/ ({sizes})"
    )


def _project(args: argparse.Namespace, argv: list[str]) -> None:
    _claim_output(args.output, args.force, (args.angles,), create_parent=False)
    density = load_map(args.map, fallback=False)
    star = read_star(args.angles, pixel_size=density.voxel_size)
    if star.pixel_size is None and star.pixel_sizes is not None:
        raise DatasetError(
            f"{args.angles}: its optics groups have different pixel sizes; project one at a time"
        )
    if star.pixel_size is not None and abs(star.pixel_size - density.voxel_size) > 1e-3:
        raise DatasetError(
            f"{args.angles}: pixel size {star.pixel_size} Å differs from the map's voxel size "
            f"{density.voxel_size} Å; resample the map (cryoorient resample MAP --like {args.angles}) "
            "or edit the STAR file"
        )
    if args.ctf and star.ctf is None:
        raise DatasetError(f"{args.angles}: --ctf needs rlnDefocusU/rlnDefocusV columns")
    rotations = euler_to_matrix(torch.from_numpy(star.angles)).float()
    images = project(density.data, rotations, torch.from_numpy(star.shifts).float(), device=args.device).cpu()
    if args.ctf:
        ctf = _uniform_ctf(args.angles, star, star.defaulted)
        transfer = ctf_2d(
            density.data.shape[-1],
            density.voxel_size,
            defocus_u=torch.from_numpy(ctf["defocus_u"]),
            defocus_v=torch.from_numpy(ctf["defocus_v"]),
            astigmatism_angle=torch.from_numpy(ctf["astigmatism_angle"]),
            **{k: ctf[k] for k in CTF_OPTICS},
        )
        images = apply_ctf(images, transfer)
    write_stack(args.output, images.numpy(), density.voxel_size)
    inputs = [args.angles] + ([Path(args.map)] if Path(args.map).is_file() else [])
    _provenance(args.output, argv, inputs)
    print(f"wrote {len(images)} projections of {density.name} ({images.shape[-1]} px) to {args.output}")


def _resample(args: argparse.Namespace, argv: list[str]) -> None:
    _claim_output(args.output, args.force, (Path(args.map),))
    box, voxel = args.box_size, args.voxel_size
    if args.like is not None:
        if box is not None or voxel is not None:
            raise DatasetError(
                "--like takes the box and pixel size from the STAR file; drop --box-size/--voxel-size"
            )
        star = read_star(args.like, angles_required=False)
        if star.pixel_size is None:
            raise DatasetError(f"{args.like}: no single pixel size (rlnImagePixelSize) to resample to")
        voxel = star.pixel_size
        optics = star.optics_table
        if optics is not None and "rlnImageSize" in optics.columns and optics["rlnImageSize"].nunique() == 1:
            box = int(optics["rlnImageSize"].iloc[0])
        else:
            box = read_particles(args.like, angles_required=False).images.shape[-1]
    if box is None and voxel is None:
        raise DatasetError("give --box-size and/or --voxel-size, or --like PARTICLES.star")
    density = _load_named_map(args.map, False, box_size=box, voxel_size=voxel)
    write_map(_parent(args.output), density)
    _provenance(args.output, argv, [Path(args.map)] + ([args.like] if args.like else []))
    print(f"wrote {density.name} at {density.box_size} px, {density.voxel_size:g} Å/px to {args.output}")


# --- train ---------------------------------------------------------------------------------------------


def _training_config(args: argparse.Namespace, initial: TrainingConfig | None) -> TrainingConfig:
    """The notebooks' model (:data:`DEFAULT_MODEL`), then the flags; with ``--init-model``, its network."""
    given = {
        "recipe": args.recipe,
        "architecture": args.architecture,
        "n_features": args.n_features,
        "distance": args.distance,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "treatment": args.treatment,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    if args.image_size is not None and args.image_size < 4:
        raise DatasetError(f"--image-size must be at least 4 pixels; got {args.image_size}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise DatasetError(f"--lr must be a positive learning rate; got {args.lr:g}")
    if initial is not None:
        network = {
            "architecture": initial.architecture,
            "n_features": initial.n_features,
            "distance": initial.distance,
            "image_size": initial.image_size,
        }
        clash = [k for k, v in network.items() if k in changes and changes[k] != v]
        if clash:
            flags = ", ".join(f"{FLAGS.get(k, '--' + k.replace('_', '-'))} {changes[k]}" for k in clash)
            raise DatasetError(
                f"{flags}: --init-model {args.init_model} has "
                f"{', '.join(f'{k} {network[k]}' for k in clash)}; a fine-tuned network keeps its layout: "
                "drop these flags or train from scratch"
            )
        changes = network | {"learning_rate": 3e-4, "treatment": initial.treatment} | changes
        if treatment_channels(changes["treatment"]) != treatment_channels(initial.treatment):
            raise DatasetError(
                f"--treatment {changes['treatment']}: --init-model {args.init_model} was trained with "
                f"treatment {initial.treatment}, whose network takes another number of channels; "
                "train from scratch instead"
            )
    try:
        return model_config(changes, noise_variance=args.noise_var, shift_limit=args.shift, seed=args.seed)
    except ValueError as error:
        raise DatasetError(_flag_words(str(error))) from error


def _training_maps(args: argparse.Namespace, data, config: TrainingConfig) -> list[torch.Tensor]:
    """``train --maps``: each map at DATASET's box and pixel size, checked against what it cannot do."""
    if config.recipe != "inbatch" or config.treatment is not None or args.max_steps is not None:
        raise DatasetError("--maps trains with the inbatch recipe, without --treatment or --max-steps")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DatasetError("--maps does not run under torchrun yet; train on one process")
    if args.steps_per_epoch < 1:
        raise DatasetError(f"--steps-per-epoch must be at least 1; got {args.steps_per_epoch}")
    box, pixel = data.particles.images.shape[-1], data.particles.pixel_size
    volumes = []
    for name in args.maps:
        try:
            density = load_map(name, box_size=box, voxel_size=pixel, fallback=False)
        except ValueError as error:
            raise DatasetError(f"--maps {name}: {error}") from error
        volumes.append(torch.from_numpy(np.asarray(density.data, dtype=np.float32)))
    return volumes


def _check_model_folder(output: Path, dataset: Path, force: bool, restart: bool) -> None:
    """The model folder must be new, empty, a previous run's (to resume), or overwritten with --force."""
    if output.exists() and not output.is_dir():
        raise DatasetError(f"{output} exists and is not a folder; choose a folder for the model")
    if output.is_dir() and (
        _same_file(output, dataset) or (dataset.is_file() and _same_file(output, dataset.parent))
    ):
        raise DatasetError(f"{output} is the dataset's own folder; choose a new folder for the model")
    if not output.is_dir():
        return
    files = sorted(p.name for p in output.iterdir())
    previous = {"checkpoint.pt", "model.pt"} & set(files)
    if files and not previous and not force:
        shown = ", ".join(files[:4]) + (", ..." if len(files) > 4 else "")
        raise DatasetError(
            f"{output} is not empty and holds no training run (found {shown}); choose a new folder, or add "
            "--force to write into it"
        )
    if previous and not restart:
        print(
            f"note: {output} holds a training run; resuming it (add --restart to start over)", file=sys.stderr
        )


def _train(args: argparse.Namespace, argv: list[str]) -> None:
    device = _device(args.device)
    initial, initial_config, init_file = None, None, None
    if args.init_model is not None:
        init_file = args.init_model / "model.pt" if args.init_model.is_dir() else args.init_model
        if not init_file.is_file():
            raise DatasetError(
                f"--init-model {args.init_model}: no model.pt; give a folder of `cryoorient train`"
            )
        loaded, initial_config = load_model(init_file)
        initial = loaded.state_dict()
    config = _training_config(args, initial_config)
    if init_file is not None:
        start = "sha256:" + sha256_file(init_file)[:16]  # the weights it starts from, named by their hash
        config = TrainingConfig(**(config.to_dict() | {"warm_start": start}))
    _check_model_folder(args.output, args.dataset, args.force, args.restart)
    try:
        data = open_dataset(args.dataset, seed=args.seed, project_dir=args.project_dir)
    except DatasetError as error:
        raise DatasetError(_flag_words(str(error))) from error
    n_train = len(data.splits["train"])
    if config.recipe == "inbatch" and n_train < config.batch_size:
        raise DatasetError(
            f"{args.dataset}: its training split holds {n_train} images, fewer than one batch "
            f"(--batch-size {config.batch_size}); use more images or a smaller --batch-size"
        )
    if len(data.splits.get("validation", [])) < 2:
        raise DatasetError(f"{args.dataset}: its validation split holds fewer than 2 images; use more images")
    try:
        images = standardise_stack(torch.from_numpy(data.particles.images))
        ctf = dataset_ctf(data, config)
    except ValueError as error:
        raise DatasetError(f"{args.dataset}: {error}") from error
    volumes = _training_maps(args, data, config) if args.maps else None
    if ctf is None and data.particles.ctf is not None:
        print(f"warning: {args.dataset} has CTF columns, which training without --treatment ignores",
              file=sys.stderr)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # launched by torchrun
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        if volumes is not None:
            validation = torch.from_numpy(data.splits["validation"])
            result = train_on_maps(
                volumes, config, images[validation], data.quaternions[validation],
                steps_per_epoch=args.steps_per_epoch, folder=args.output, resume=not args.restart,
                device=device, progress=not args.quiet, initial=initial,
            )
        else:
            result = train_distance(
                images,
                data.quaternions,
                data.splits,
                config,
                folder=args.output,
                resume=not args.restart,
                device=device,
                progress=not args.quiet,
                max_steps=args.max_steps,
                initial=initial,
                ctf=ctf,
            )
    except ValueError as error:
        if "checkpoint" in str(error):
            raise DatasetError(
                f"{args.output} holds a training run of another configuration or an unreadable checkpoint "
                f"({error}). Choose a new -o folder; add --restart to train over it from scratch; to train a "
                f"finished model longer, fine-tune it: --init-model {args.output} -o NEW_FOLDER --epochs K"
            ) from error
        raise DatasetError(_flag_words(str(error))) from error
    finally:
        if world > 1:
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    record = InputRecord.of_training(
        images.shape[-1], data.particles.pixel_size, config.noise_variance, n_train
    )
    write_record(args.output, record)
    inputs = (
        [args.dataset / "particles.star", args.dataset / "particles.mrcs"]
        if args.dataset.is_dir()
        else [args.dataset, *_stacks(args.dataset, read_star(args.dataset).image_names, args.project_dir)]
    )
    maps = [Path(m) for m in args.maps or [] if Path(m).is_file()]  # named maps are recorded by name
    on_maps = {"maps": args.maps, "steps_per_epoch": args.steps_per_epoch} if args.maps else {}
    _provenance(args.output, argv, inputs + maps + ([init_file] if init_file else []),
                config=config.to_dict(), **on_maps)
    if args.max_steps is not None and result.history and "train_losses" in result.history[-1]:
        print(f"stopped after {args.max_steps} steps; history in {args.output / 'history.json'}")
        return
    _plot_learning_curve(result.history, args.output / "learning_curve.png")
    test = data.splits.get("test", np.array([], dtype=int))
    if len(test) < 2:
        print(f"trained {config.epochs} epochs into {args.output}/ (no test split to report on)")
        return
    pairs = split_pairs(data.quaternions, test, 4000, seed=args.seed)
    metrics = evaluate_distances(
        result.model,
        images,
        data.quaternions,
        pairs,
        config.image_size,
        noise_variance=config.noise_variance,
        seed=args.seed,
        ctf=ctf,
        **input_treatment(config),
    )
    print(
        f"trained {config.epochs} epochs into {args.output}/; test ({len(pairs)} pairs, uniform d_q): "
        f"RMSE {metrics['rmse']:.3f} rad, Pearson r {metrics['pearson']:.3f}, "
        f"RMSE for d_q > 2: {metrics['rmse_above_2']:.3f} rad; learning curve in "
        f"{args.output}/learning_curve.png"
    )


def _plot_learning_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryoorient.plotting import plot_learning_curves

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    plot_learning_curves(
        ax, epochs, [h["train_loss"] for h in history], [h["validation_loss"] for h in history]
    )
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


# --- recover -----------------------------------------------------------------------------------------------


def _model_for_stack(given: Path, particles, device: str | None):
    """``(model_file, model, config, images)``: a trained model checked against a particle stack.

    The model must accept the stack's box (and pixel size, when its folder records them) and give
    radians; ``images`` are the particles preprocessed as its training images were.
    """
    model_file = given / "model.pt" if given.is_dir() else given
    if not model_file.is_file():
        raise DatasetError(f"{given}: no model.pt; train one with `cryoorient train`")
    model, config = load_model(model_file, device=device)
    box = particles.images.shape[-1]
    if config.image_size is not None and config.image_size > box:
        raise DatasetError(
            f"{model_file}: the model was trained on {config.image_size}-px images, larger than this "
            f"stack's {box} px; use a stack at the training data's box and pixel size"
        )
    if config.distance == "euclidean":
        raise DatasetError(
            f"{model_file}: a Euclidean d_f is not in radians; use a cosine or orientation model"
        )
    try:
        record = read_record(model_file.parent, config.noise_variance)
    except ValueError as error:
        raise DatasetError(str(error)) from error
    _check_training_data(model_file, record, box, particles.pixel_size)
    record = record or InputRecord.of_training(box, particles.pixel_size, config.noise_variance)
    return model_file, model, config, model_input(particles.images, record)


def _check_training_data(model_file: Path, record: InputRecord | None, box: int, pixel_size: float) -> None:
    """Refuse a stack whose box or pixel size differs from the model's training images."""
    if record is None:
        print(
            f"note: {model_file.parent} does not record the box and pixel size it was trained at "
            f"(no training_data.json); make sure this stack ({box} px at {pixel_size:g} Å) matches them",
            file=sys.stderr,
        )
        return
    name = "training_data.json"
    if record.box_size != box:
        raise DatasetError(
            f"{model_file}: the model was trained on {record.box_size}-px images ({name}); this stack has "
            f"{box} px. Window or rescale the particles to the training box, or train a model on "
            f"{box}-px images"
        )
    if abs(record.pixel_size - pixel_size) > 0.01 * record.pixel_size:
        raise DatasetError(
            f"{model_file}: the model was trained at {record.pixel_size:g} Å/px ({name}); this stack is at "
            f"{pixel_size:g} Å/px. Rescale the particles to the training pixel size, or train a model at "
            f"{pixel_size:g} Å/px"
        )


def _output_names(names: list[str], star: Path, output: Path, project_dir: Path | None) -> list[str]:
    """Image names for the output STAR file.

    Unchanged when they resolve from the project folder (RELION's rule; the output is read from
    there too), else rewritten relative to the output's folder.
    """
    project = Path.cwd() if project_dir is None else project_dir
    resolved = resolve_image_names(star, names, project_dir)
    out = []
    for entry, target in zip(names, resolved, strict=True):
        index, _, file = entry.partition("@")
        if Path(file).is_absolute() or (project / file).resolve() == target.resolve():
            out.append(entry)
        else:
            out.append(f"{index}@{os.path.relpath(target.resolve(), output.parent.resolve())}")
    return out


def _recover(args: argparse.Namespace, argv: list[str]) -> int:
    device = _device(args.device)
    _claim_output(args.output, args.force, (args.star,))
    particles, meta = _read_particles_checked(
        args.star, angles=args.distances_from_angles, project_dir=args.project_dir
    )
    progress = not args.quiet
    inputs = [args.star, *_stacks(args.star, meta.image_names, args.project_dir)]
    if args.model is not None:
        if args.perturb:
            raise DatasetError("--perturb applies to --distances-from-angles only")
        model_file, model, config, images = _model_for_stack(args.model, particles, device)
        recovery, how = recover_from_images(
            model, images, config.image_size, seed=args.seed, device=device, progress=progress,
            ctf=_model_ctf(args.star, particles, meta.defaulted, model_file, config),
            treatment=input_treatment(config),
        )
        what = f"distances from {model_file}, {how}"
        inputs.append(model_file)
    else:
        if not args.perturb >= 0:
            raise DatasetError(f"--perturb must be a variance >= 0; got {args.perturb}")
        images = standardise_stack(particles.images)
        distances = quaternion_distance_matrix(particles.quaternions)
        if args.perturb:
            distances = perturb_distances(distances, math.sqrt(args.perturb), seed=args.seed)
        recovery = recover_orientations(distances.double(), seed=args.seed, device=device)
        what = f"distances from the STAR's angles (perturbation variance {args.perturb:g})"
    gauge = fix_gauge(
        images,
        recovery.quaternions.cpu(),
        shifts=torch.from_numpy(particles.shifts),
        seed=args.seed,
        device=device,
        progress=progress,
    )
    angles = quaternion_to_euler(gauge.quaternions.cpu()).numpy()
    names = _output_names(meta.image_names, args.star, args.output, args.project_dir)
    write_star_like(_parent(args.output), meta, angles=angles, image_names=names)
    check = {
        "diagnosis": gauge.diagnosis,
        "warning": gauge.warning,
        "common_line_score": gauge.score,
        "other_class_score": gauge.other_score,
        "chance_score": gauge.chance_score,
        "chance_spread": gauge.chance_spread,
        "gauge_class": gauge.gauge_class,
        "loss_or": recovery.loss,
    }
    facts = {"distances": what, "check": check}
    if args.distances_from_angles:
        facts["e_or_reg"] = registration_error(particles.quaternions, gauge.quaternions.cpu())
    _provenance(args.output, argv, inputs, **facts)
    print(
        f"recovered {len(particles)} orientations ({what}): L_OR {recovery.loss:.3g} rad², gauge "
        f"{gauge.gauge_class}, common-line score {gauge.score:.3f} (other class {gauge.other_score:.3f}, "
        f"chance {gauge.chance_score:.3f} ± {gauge.chance_spread:.3f}: {gauge.diagnosis}); "
        f"wrote {args.output}"
    )
    if args.distances_from_angles:
        print(
            "E_OR,reg against the STAR's angles (global rotation and mirror only): "
            f"{facts['e_or_reg']:.4f} rad"
        )
    if gauge.diagnosis != "ok":
        print(f"WARNING: {gauge.warning} (recorded in {args.output}.provenance.json)", file=sys.stderr)
    return 3 if gauge.diagnosis == "chance" else 0


# --- reconstruct, fsc ------------------------------------------------------------------------------------


def _reconstruct(args: argparse.Namespace, argv: list[str]) -> None:
    device = _device(args.device)
    _claim_output(args.output, args.force, (args.star,))
    particles, meta = _read_particles_checked(args.star, angles=True, project_dir=args.project_dir)
    if args.ctf and particles.ctf is None:
        raise DatasetError(f"{args.star}: --ctf needs rlnDefocusU/rlnDefocusV columns")
    particles.ctf = _uniform_ctf(args.star, particles, meta.defaulted) if args.ctf else None
    result = reconstruct_particles(particles, method=args.method, device=device, progress=not args.quiet)
    volume = result.volume.detach().cpu().numpy()
    write_map(
        _parent(args.output),
        DensityMap(volume, particles.pixel_size, args.output.stem, f"reconstruct {args.star.name}"),
    )
    _provenance(args.output, argv, [args.star, *_stacks(args.star, meta.image_names, args.project_dir)])
    ctf = ", CTF applied" if args.ctf else ""
    print(f"reconstructed {len(particles)} particles ({args.method}{ctf}) into {args.output}")


def _fsc(args: argparse.Namespace, argv: list[str]) -> None:
    if args.output is not None:
        _claim_output(args.output, args.force, (args.map1, args.map2))
        _claim_output(args.output.with_suffix(".png"), args.force, (args.map1, args.map2))
    map1, map2 = read_map(args.map1), read_map(args.map2)
    if map1.shape != map2.shape or abs(map1.voxel_size - map2.voxel_size) > 1e-3 * map2.voxel_size:
        raise DatasetError(
            f"{args.map1} ({map1.shape}, {map1.voxel_size:g} Å) and {args.map2} ({map2.shape}, "
            f"{map2.voxel_size:g} Å) differ in box or voxel size; resample one first "
            f"(cryoorient resample {args.map2} --box-size {map1.shape[0]} "
            f"--voxel-size {map1.voxel_size:g} -o OUT.mrc)"
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
    threshold, between = (
        (0.143, "independent half maps") if args.half_maps else (0.5, "a map and a reference")
    )
    found = resolution(frequencies, fsc, threshold)
    text = f"FSC {threshold:g}: {found:.2f} Å (the criterion between {between})"
    if args.output is not None:
        _write_fsc_curve(_parent(args.output), frequencies, fsc)
        _plot_fsc(frequencies, fsc, threshold, found, args.output.with_suffix(".png"), args.map1.name)
        _provenance(args.output, argv, [args.map1, args.map2], resolution=found, threshold=threshold)
        text += f"; curve in {args.output} and {args.output.with_suffix('.png')}"
    print(text)


def _write_fsc_curve(path: Path, frequencies: torch.Tensor, fsc: torch.Tensor) -> None:
    """The FSC curve as CSV (frequency in 1/Å, FSC), atomically."""
    lines = ["frequency_per_angstrom,fsc"] + [
        f"{f:.8g},{c:.8g}" for f, c in zip(frequencies.tolist(), fsc.tolist(), strict=True)
    ]
    atomic_write(path, lambda f: f.write(("\n".join(lines) + "\n").encode()))


def _plot_fsc(frequencies, fsc, threshold: float, found: float, path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryoorient.plotting import plot_fsc

    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    plot_fsc(ax, {name: (frequencies, fsc)}, {name: found}, threshold=threshold)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


# --- match, refine ---------------------------------------------------------------------------------

#: Columns of an earlier refinement that no longer describe new angles.
STALE_COLUMNS = (
    "rlnAngleRotPrior",
    "rlnAngleTiltPrior",
    "rlnAnglePsiPrior",
    "rlnMaxValueProbDistribution",
    "rlnLogLikeliContribution",
    "rlnNrOfSignificantSamples",
)


def _centred_images(star: Path, particles, ctf: bool = False) -> torch.Tensor:
    """The particles re-centred by their origins (RELION's sign), warning when a CTF goes unused."""
    if particles.ctf is not None and not ctf:
        print(
            f"warning: {star} has CTF columns; the images are compared without a CTF "
            "(add --ctf, or phase-flip the particles first)",
            file=sys.stderr,
        )
    images = torch.from_numpy(np.asarray(particles.images, dtype=np.float32))
    if np.any(particles.shifts):
        images = shift_images(images, -torch.from_numpy(np.asarray(particles.shifts, dtype=np.float64)))
    return images


def _stack_ctfs(star: Path, particles, defaulted: tuple[str, ...], wanted: bool) -> torch.Tensor | None:
    """``--ctf``: the particles' (N, D, D) CTFs from their STAR file, else ``None``."""
    if not wanted:
        return None
    if particles.ctf is None:
        raise DatasetError(f"{star}: --ctf needs rlnDefocusU/rlnDefocusV columns")
    ctf = _uniform_ctf(star, particles, defaulted)
    return ctf_grids(ctf, particles.images.shape[-1], particles.pixel_size)


def _reference_for(star: Path, particles, reference: Path) -> torch.Tensor:
    """The reference map as a tensor, refused unless it has the particles' box and pixel size."""
    density = read_map(reference)
    box, pixel = particles.images.shape[-1], particles.pixel_size
    if density.shape != (box,) * 3 or abs(density.voxel_size - pixel) > 1e-3 * pixel:
        raise DatasetError(
            f"{reference} ({'x'.join(map(str, density.shape))} voxels of {density.voxel_size:g} Å) does not "
            f"match the particles of {star} ({box} px of {pixel:g} Å); resample it first "
            f"(cryoorient resample {reference} --box-size {box} --voxel-size {pixel:g} -o REF.mrc)"
        )
    return torch.from_numpy(np.asarray(density.data, dtype=np.float32))


def _band(flag: str, value: float) -> float:
    if not 0 < value <= 0.5:
        raise DatasetError(f"{flag} must be in (0, 0.5] cycles per pixel (0.5 is Nyquist); got {value:g}")
    return value


def _match(args: argparse.Namespace, argv: list[str]) -> None:
    device = _device(args.device)
    _claim_output(args.output, args.force, (args.star, args.reference))
    band, local_band = (
        _band("--max-frequency", args.max_frequency),
        _band("--local-frequency", args.local_frequency),
    )
    if args.directions < 1 or args.in_plane < 1:
        raise DatasetError(
            f"--directions and --in-plane must be at least 1; got {args.directions}, {args.in_plane}"
        )
    particles, meta = _read_particles_checked(args.star, angles=False, project_dir=args.project_dir)
    volume = _reference_for(args.star, particles, args.reference)
    images = _centred_images(args.star, particles, args.ctf)
    ctf = _stack_ctfs(args.star, particles, meta.defaulted, args.ctf)
    found, seconds = match_to_map(
        images,
        volume,
        directions=args.directions,
        in_plane=args.in_plane,
        max_frequency=band,
        local=not args.no_local,
        local_frequency=local_band,
        device=device,
        progress=not args.quiet,
        ctf=ctf,
    )
    n_grid, spacing = args.directions * args.in_plane, grid_spacing(args.directions, args.in_plane)
    names = _output_names(meta.image_names, args.star, args.output, args.project_dir)
    angles = matrix_to_euler(found.rotations).numpy()
    write_star_like(_parent(args.output), meta, angles=angles, image_names=names, drop=STALE_COLUMNS)
    inputs = [args.star, args.reference, *_stacks(args.star, meta.image_names, args.project_dir)]
    score = {"median": float(found.scores.median()), "min": float(found.scores.min())}
    _provenance(
        args.output,
        argv,
        inputs,
        grid={"orientations": n_grid, "spacing_degrees": math.degrees(spacing)},
        score=score,
        seconds=seconds,
    )
    print(
        f"matched {len(particles)} particles against {args.reference} ({n_grid:,} orientations "
        f"{math.degrees(spacing):.1f}° apart{'' if args.no_local else ', then a local search'}) in "
        f"{seconds:.0f} s: median correlation {score['median']:.3f}; wrote {args.output}"
    )


def _init_rotations(star: Path, init: Path | None, meta) -> torch.Tensor:
    """The starting rotations: INIT.star's angles, checked to be for the same particles, or the STAR's own."""
    source = meta if init is None else read_star(init, angles_required=True)
    if init is None and source.angles is None:
        raise DatasetError(f"{star}: no angles to refine; give starting angles with --init INIT.star")
    n = len(meta.image_names or meta.shifts)
    if len(source.angles) != n:
        raise DatasetError(f"{init}: {len(source.angles)} particles, {star}: {n}; give one row per particle")
    if init is not None and meta.image_names is not None and source.image_names is not None:
        for row, (a, b) in enumerate(zip(meta.image_names, source.image_names, strict=True)):
            if (
                a.split("@")[0].lstrip("0") != b.split("@")[0].lstrip("0")
                or Path(a.partition("@")[2]).name != Path(b.partition("@")[2]).name
            ):
                raise DatasetError(
                    f"{init} row {row + 1} is {b}, {star} row {row + 1} is {a}: INIT.star lists other "
                    "particles or another order; give the angles of these particles, in their order"
                )
    return euler_to_matrix(torch.from_numpy(np.asarray(source.angles, dtype=np.float64)))


def _refine(args: argparse.Namespace, argv: list[str]) -> None:
    device = _device(args.device)
    inputs_given = (args.star, args.init)
    _claim_output(args.output, args.force, inputs_given)
    maps = {}
    if args.map_out is not None:
        stem = args.map_out.with_suffix("")
        maps = {
            "map": args.map_out,
            "half1": Path(f"{stem}_half1.mrc"),
            "half2": Path(f"{stem}_half2.mrc"),
            "fsc": Path(f"{stem}_fsc.csv"),
            "plot": Path(f"{stem}_fsc.png"),
        }
        for path in maps.values():
            _claim_output(path, args.force, inputs_given)
    if args.rounds < 1:
        raise DatasetError(f"--rounds must be at least 1; got {args.rounds}")
    particles, meta = _read_particles_checked(args.star, angles=False, project_dir=args.project_dir)
    rotations = _init_rotations(args.star, args.init, meta)
    images = _centred_images(args.star, particles, args.ctf)
    ctf = _stack_ctfs(args.star, particles, meta.defaulted, args.ctf)
    tic = time.perf_counter()
    result = refine(
        images,
        rotations,
        pixel_size=particles.pixel_size,
        max_rounds=args.rounds,
        seed=args.seed,
        device=device,
        progress=not args.quiet,
        ctf=ctf,
    )
    seconds = time.perf_counter() - tic
    names = _output_names(meta.image_names, args.star, args.output, args.project_dir)
    angles = matrix_to_euler(result.rotations).numpy()
    write_star_like(
        _parent(args.output),
        meta,
        angles=angles,
        image_names=names,
        drop=STALE_COLUMNS,
        columns={"rlnRandomSubset": (result.halves + 1).numpy()},
    )
    if maps:
        full = reconstruct(images, result.rotations.float(), ctf=ctf, device=device, progress=False).volume
        for key, volume in (("map", full), ("half1", result.half_maps[0]), ("half2", result.half_maps[1])):
            data = volume.detach().cpu().numpy()
            write_map(
                _parent(maps[key]),
                DensityMap(data, particles.pixel_size, maps[key].stem, f"refine {args.star.name}"),
            )
        _write_fsc_curve(maps["fsc"], result.frequencies, result.fsc)
        _plot_fsc(result.frequencies, result.fsc, 0.143, result.resolution, maps["plot"], "half maps")
    rounds = [vars(r) | {"median_change_degrees": math.degrees(r.median_change)} for r in result.rounds]
    inputs = [
        args.star,
        *([args.init] if args.init else []),
        *_stacks(args.star, meta.image_names, args.project_dir),
    ]
    _provenance(
        args.output,
        argv,
        inputs,
        rounds=rounds,
        converged=result.converged,
        resolution_0143=result.resolution,
        seconds=seconds,
    )
    last = result.rounds[-1]
    print(
        f"refined {len(particles)} particles in {len(result.rounds)} rounds ({seconds:.0f} s; "
        f"{'converged' if result.converged else 'still moving'}: median change "
        f"{math.degrees(last.median_change):.2f}° in the last); half maps at {result.resolution:.1f} Å "
        f"(FSC 0.143); wrote {args.output}" + (f", {args.map_out} and its half maps" if maps else "")
    )


def _abinitio(args: argparse.Namespace, argv: list[str]) -> None:
    device = _device(args.device)
    out = args.output
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file; give a folder for the rounds")
    if out.is_dir() and any(out.iterdir()) and not (out / "abinitio.json").is_file():
        raise DatasetError(f"{out} holds other files; choose a new folder (abinitio resumes only its own)")
    counts = {"--rounds": args.rounds, "--refine-rounds": args.refine_rounds, "--n-train": args.n_train,
              "--epochs": args.epochs, "--init-epochs": args.init_epochs}
    for flag, value in counts.items():
        if value < 1:
            raise DatasetError(f"{flag} must be at least 1; got {value}")
    if not args.noise_var >= 0:
        raise DatasetError(f"--noise-var must be >= 0; got {args.noise_var}")
    particles, meta = _read_particles_checked(args.star, angles=False, project_dir=args.project_dir)
    progress = not args.quiet
    pixel = particles.pixel_size
    inputs = [args.star, *_stacks(args.star, meta.image_names, args.project_dir)]
    if args.pretrained is not None:
        model_file, model, config, images = _model_for_stack(args.pretrained, particles, device)
        inputs.append(model_file)
        if config.treatment is not None:
            raise DatasetError(f"{model_file}: a model with a CTF treatment; abinitio handles no CTF yet")
    else:
        volume = _reference_for(args.star, particles, args.init_model)
        inputs.append(args.init_model)
    out.mkdir(parents=True, exist_ok=True)  # the marker first: an interrupted run is resumed, not refused
    atomic_write(out / "abinitio.json", lambda f: f.write(b'{"started": true}\n'))
    if args.pretrained is None:
        orientations = sample_orientations(args.n_train, seed=args.seed)
        density = DensityMap(volume.numpy(), pixel, name=str(args.init_model), source=str(args.init_model))
        simulated = simulate_particles(density, orientations, seed=args.seed, device=device,
                                       progress=progress)
        config = model_config(None, epochs=args.init_epochs, noise_variance=args.noise_var, seed=args.seed)
        print(f"training the first estimator on {args.n_train} projections of {args.init_model} "
              f"({args.init_epochs} epochs; resumes from {out / 'initial'} when run again)")
        model = train_distance(torch.from_numpy(simulated.images), orientations,
                               split_indices(args.n_train, seed=args.seed), config, folder=out / "initial",
                               device=device, progress=progress).model
        images = standardise_stack(particles.images)

    def write_round(number: int, folder: Path, quaternions: torch.Tensor) -> None:
        star = folder / "particles.star"
        names = _output_names(meta.image_names, args.star, star, args.project_dir)
        write_star_like(star, meta, angles=quaternion_to_euler(quaternions).numpy(), image_names=names)
        print(f"round {number}: wrote {star}, {folder / 'map.mrc'}, {folder / 'model.pt'}")

    settings = BootstrapSettings(refine_rounds=args.refine_rounds, n_train=args.n_train, epochs=args.epochs,
                                 seed=args.seed)
    records = run_rounds(images, model, config, pixel, out, args.rounds, settings=settings,
                         on_round=write_round, device=device, progress=progress)
    _provenance(out, argv, inputs, rounds=records)
    summary = "; ".join(f"round {r['round']} {r['half_map_resolution']:.1f} Å" for r in records)
    print(f"abinitio: {len(records)} rounds in {out}/ (half maps, FSC 0.143: {summary})")


COMMANDS = {
    "simulate": _simulate,
    "project": _project,
    "resample": _resample,
    "train": _train,
    "recover": _recover,
    "reconstruct": _reconstruct,
    "fsc": _fsc,
    "match": _match,
    "refine": _refine,
    "abinitio": _abinitio,
}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    0 done, 2 bad input, 3 a failed check (``recover``), 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "device", None) is not None:
            _device(args.device)
        status = COMMANDS[args.command](args, argv)
    except (ValueError, OSError) as error:  # MapError and DatasetError are ValueErrors
        print(f"cryoorient {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "train":
            print(
                f"\ncryoorient train: interrupted. Every finished epoch is in {args.output}/checkpoint.pt: "
                "run the same command again to resume from it (--restart starts over)",
                file=sys.stderr,
            )
        else:
            print(
                f"\ncryoorient {args.command}: interrupted; no output was written (outputs are written "
                "whole or not at all)",
                file=sys.stderr,
            )
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
