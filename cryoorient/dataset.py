"""Projection datasets on disk: an ``.mrcs`` stack plus a RELION ``.star`` file, splits, caching.

A dataset folder holds

``particles.mrcs``
    the images, ``(N, D, D)`` float32 ``[n, y, x]``, pixel size in the header;
``particles.star``
    RELION 3.1 style: an ``optics`` table (pixel size, image size, voltage, Cs, amplitude
    contrast) and a ``particles`` table (``rlnImageName``, ``rlnAngleRot/Tilt/Psi`` in degrees,
    ``rlnOriginXAngst/YAngst``, and ``rlnDefocusU/V/Angle`` when a CTF was applied), so the
    same particles can be used in RELION;
``quaternions.npy``
    the true orientations ``(N, 4)`` (scalar first) at full precision;
``splits.npz``
    disjoint training / validation / test indices (the paper's 50 / 17 / 33 %);
``dataset.json``
    the parameters that produced it, the map used, the cache schema, the package version and file
    checksums.

Datasets are cached under ``data_dir()/datasets/KEY`` where ``KEY`` hashes the parameters and
the map's content; a folder is written in a temporary place and renamed into place, and one whose
record or checksums do not match is rebuilt with a warning, never used.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoorient._memory import release_free_memory
from cryoorient._version import __version__
from cryoorient.density import DensityMap, load_map
from cryoorient.geometry import matrix_to_euler, quaternion_to_matrix
from cryoorient.paths import CACHE_SCHEMA, atomic_dir, data_dir, sha256_file
from cryoorient.projection import (
    add_noise,
    apply_ctf,
    ctf_2d,
    normalize_images,
    project,
    sample_defocus,
    sample_shifts,
)
from cryoorient.provenance import map_record
from cryoorient.relion import CTF_OPTICS, DatasetError, ParticleStack, read_particles, write_particles
from cryoorient.sampling import SAMPLING_SCHEMES, sample_orientations

if TYPE_CHECKING:
    from cryoorient.study import Study

__all__ = [
    "PAPER_SPLIT",
    "CacheWarning",
    "Dataset",
    "DatasetError",
    "SimulationParameters",
    "load_dataset",
    "open_dataset",
    "map_provenance",
    "save_dataset",
    "simulate_dataset",
    "simulate_particles",
    "split_indices",
    "study_dataset",
]

PAPER_SPLIT = {"train": 0.50, "validation": 0.17, "test": 0.33}

class CacheWarning(UserWarning):
    """A cached dataset was stale or corrupt and is being rebuilt."""


# --- splits ------------------------------------------------------------------------------------------


def split_indices(
    n: int, fractions: dict[str, float] | None = None, seed: int | np.random.Generator = 0
) -> dict[str, np.ndarray]:
    """Randomly split ``range(n)`` into disjoint parts.

    Parameters
    ----------
    n : number of items.
    fractions : part name -> fraction, summing to 1 (default :data:`PAPER_SPLIT`, the paper's
        Table 1: 50 % training, 17 % validation, 33 % test).
    seed : seed (or generator) of the permutation.

    Returns
    -------
    Part name -> sorted indices; every index is in exactly one part (rounding goes to the last).
    """
    fractions = PAPER_SPLIT if fractions is None else fractions
    if any(f < 0 for f in fractions.values()) or not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-9):
        raise ValueError(f"split fractions must be non-negative and sum to 1; got {fractions}")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum([0.0, *fractions.values()]) * n).astype(int)
    bounds[-1] = n
    return {
        name: np.sort(order[lo:hi]) for name, lo, hi in zip(fractions, bounds[:-1], bounds[1:], strict=True)
    }


# --- simulation --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationParameters:
    """Everything that determines a simulated dataset (and its cache key).

    Attributes
    ----------
    map : map name or MRC path, resolved by :func:`cryoorient.density.load_map`.
    n_projections : number of particles P.
    box_size : image size D in pixels (the map is resampled to it); ``None`` keeps the map's.
    voxel_size : Å per pixel after resampling; ``None`` keeps the map's.
    orientations : sampling scheme, one of :data:`cryoorient.sampling.SAMPLING_SCHEMES`.
    shift_limit : in-plane shifts from a triangular distribution on ``[-t, t]`` pixels.
    noise_variance : σ² of white noise relative to unit-variance clean projections.
    ctf : apply a CTF with defocus uniform in ``defocus_range`` (Å), 300 kV, Cs 2.7 mm, 10 %.
    seed : seeds every random choice (orientations, shifts, defoci, noise, splits).
    map_resolution : Å, the resolution an atomic model (or pseudo-protein) ``map`` is rendered at
        (:func:`cryoorient.density.load_map`'s ``resolution``); ``None``: its default, 11 Å.
    map_low_pass : Å, project the map low-pass filtered to this resolution
        (:func:`cryoorient.density.load_map`'s ``low_pass``): a low-resolution initial model of the
        structure, with the same orientations, shifts and noise as the dataset of the map itself
        (same seed); ``None``: the map as loaded.
    """

    map: str = "pseudo"
    n_projections: int = 1000
    box_size: int | None = None
    voxel_size: float | None = None
    orientations: str = "uniform"
    shift_limit: float = 0.0
    noise_variance: float = 0.0
    ctf: bool = False
    defocus_range: tuple[float, float] = (10000.0, 25000.0)
    seed: int = 0
    split: dict[str, float] = field(default_factory=lambda: dict(PAPER_SPLIT))
    map_resolution: float | None = None
    map_low_pass: float | None = None

    def __post_init__(self) -> None:
        if int(self.n_projections) != self.n_projections or self.n_projections < 1:
            raise ValueError(f"n_projections must be a positive integer; got {self.n_projections!r}")
        if self.orientations not in SAMPLING_SCHEMES:
            raise ValueError(
                f"unknown orientations {self.orientations!r}; choose one of {', '.join(SAMPLING_SCHEMES)}"
            )
        if not self.noise_variance >= 0:
            raise ValueError(f"noise_variance must be >= 0; got {self.noise_variance}")
        if not self.shift_limit >= 0:
            raise ValueError(f"shift_limit must be >= 0 pixels; got {self.shift_limit}")
        if self.box_size is not None and self.shift_limit > self.box_size / 2:
            raise ValueError(
                f"shift_limit {self.shift_limit} px is larger than half the box ({self.box_size} px)"
            )
        if self.map_low_pass is not None and not self.map_low_pass > 0:
            raise ValueError(f"map_low_pass must be a positive number of Å; got {self.map_low_pass!r}")
        low, high = self.defocus_range
        if not 0 < low <= high:
            raise ValueError(f"defocus_range must satisfy 0 < low <= high (Å); got {self.defocus_range}")

    def to_dict(self) -> dict:
        """JSON-ready parameters."""
        d = asdict(self)
        d["defocus_range"] = list(self.defocus_range)
        for name in ("map_resolution", "map_low_pass"):  # absent by default: older caches keep their keys
            if d[name] is None:
                del d[name]
        return d


def simulate_particles(
    density: DensityMap,
    quaternions: torch.Tensor,
    *,
    shift_limit: float = 0.0,
    noise_variance: float = 0.0,
    ctf: bool = False,
    defocus_range: tuple[float, float] = (10000.0, 25000.0),
    seed: int | np.random.Generator = 0,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> ParticleStack:
    """Project a map at given orientations and perturb the projections as in the paper.

    Order: project (with shifts, as origins), apply the CTF, normalise the stack to zero mean and
    unit variance over the whole dataset, add white noise of variance ``noise_variance``.

    Parameters
    ----------
    density : a cubic map (see :func:`cryoorient.density.load_map`).
    quaternions : (N, 4) orientations, scalar first.
    shift_limit : triangular shift limit t in pixels (0: no shifts).
    noise_variance : σ² relative to the unit-variance clean stack (0: noiseless).
    ctf : apply a CTF with defocus uniform in ``defocus_range`` Å and :data:`CTF_OPTICS`.
    seed : seed (or generator) from which independent streams for shifts, defoci and noise derive.
    device : where to project (``None``: CUDA when available).
    batch_size : images projected at once (bounds memory).
    progress : show a progress bar.
    """
    quaternions = torch.as_tensor(quaternions, dtype=torch.float64)
    n, box = len(quaternions), density.data.shape[-1]
    if shift_limit > box / 2:
        raise ValueError(f"shift_limit {shift_limit} px is larger than half the box ({box} px)")
    shift_rng, defocus_rng, noise_rng = np.random.default_rng(seed).spawn(3)
    shifts = sample_shifts(n, shift_limit, seed=shift_rng) if shift_limit > 0 else torch.zeros(n, 2)
    rotations = quaternion_to_matrix(quaternions).to(torch.float32)
    volume = torch.as_tensor(density.data, dtype=torch.float32)
    ctf_params = None
    if ctf:
        defocus = sample_defocus(n, *defocus_range, seed=defocus_rng).double().numpy()
        ctf_params = {
            "defocus_u": defocus,
            "defocus_v": defocus.copy(),
            "astigmatism_angle": np.zeros(n),
        } | CTF_OPTICS
    chunks = []
    for start in tqdm(range(0, n, batch_size), desc="projecting", unit="batch", disable=not progress):
        part = slice(start, start + batch_size)
        images = project(volume, rotations[part], shifts[part], device=device).cpu()
        if ctf_params is not None:
            transfer = ctf_2d(
                box,
                density.voxel_size,
                defocus_u=torch.as_tensor(ctf_params["defocus_u"][part]),
                **{k: ctf_params[k] for k in CTF_OPTICS},
            )
            images = apply_ctf(images, transfer)
        chunks.append(images)
    images = normalize_images(torch.cat(chunks))
    if noise_variance > 0:
        images = add_noise(images, variance=noise_variance, seed=noise_rng)
    angles = matrix_to_euler(quaternion_to_matrix(quaternions)).numpy()
    return ParticleStack(
        images.numpy().astype(np.float32), angles, shifts.double().numpy(), density.voxel_size, ctf_params
    )


# --- cached datasets ---------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A simulated dataset loaded from its cache folder."""

    path: Path
    particles: ParticleStack
    quaternions: torch.Tensor  # (N, 4) float64, exact
    splits: dict[str, np.ndarray]
    record: dict  # parameters, map provenance, version

    @property
    def map_name(self) -> str:
        """The map actually used (may be a fallback; see ``record["map"]``)."""
        return self.record["map"]["name"]


def _dataset_key(params: SimulationParameters, density: DensityMap) -> str:
    """Cache key of a dataset.

    The parameters, what the map was made from (:attr:`DensityMap.origin`; its voxels when that
    is unknown), its voxel size and the cache schema (:data:`cryoorient.paths.CACHE_SCHEMA`).
    """
    content = density.origin or hashlib.sha256(
        np.ascontiguousarray(density.data, dtype=np.float32).tobytes()
    ).hexdigest()
    blob = json.dumps(
        {"params": params.to_dict(), "map": content, "voxel": density.voxel_size, "version": CACHE_SCHEMA},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_cached(folder: Path, expected: dict) -> Dataset:
    """Load a dataset folder, checking its record and checksums; raise ``DatasetError`` if off."""
    record_path = folder / "dataset.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{record_path}: unreadable record ({error})") from error
    for key, value in expected.items():
        recorded = record.get(key)
        if key == "cache_schema" and recorded is None:  # written before the schema had its own field
            recorded = record.get("cryoorient")
        if recorded != value:
            raise DatasetError(f"{folder}: recorded {key} {recorded!r} does not match {value!r}")
    for name, digest in record["files"].items():
        if not (folder / name).is_file() or sha256_file(folder / name) != digest:
            raise DatasetError(f"{folder / name}: missing or checksum mismatch")
    particles = read_particles(folder / "particles.star")
    quaternions = torch.from_numpy(np.load(folder / "particles_quaternions.npy"))
    with np.load(folder / "splits.npz") as z:
        splits = {k: z[k] for k in z.files}
    return Dataset(folder, particles, quaternions, splits, record)


def open_dataset(path: str | Path, *, seed: int = 0, project_dir: str | Path | None = None) -> Dataset:
    """Open a dataset folder (from ``cryoorient simulate``) or any RELION particle STAR file.

    A folder is checked against its recorded checksums and brings its true quaternions and splits.
    A STAR file's orientations come from its Euler angles, and it is split with
    :func:`split_indices` (the paper's fractions, ``seed``); its image names are read relative to
    ``project_dir`` (the RELION project folder; ``None``: the working directory), else beside it
    (:func:`cryoorient.relion.resolve_image_names`).

    Raises
    ------
    DatasetError naming the path when it is neither, or when a file is missing or damaged.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "dataset.json").is_file():
            raise DatasetError(f"{path}: no dataset.json; give a folder written by `cryoorient simulate`")
        return _load_cached(path, {})
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset folder or STAR file")
    particles = read_particles(path, project_dir=project_dir)
    splits = split_indices(len(particles), seed=seed)
    record = {"source": str(path), "map": {"name": path.stem}, "pixel_size": particles.pixel_size}
    return Dataset(path, particles, particles.quaternions, splits, record)


def map_provenance(density: DensityMap) -> dict:
    """Which map a dataset used: name, SHA-256 of its data, source, voxel size (Å); no machine paths."""
    return {"map": map_record(density)}


def simulate_dataset(
    params: SimulationParameters,
    density: DensityMap,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[ParticleStack, torch.Tensor, dict[str, np.ndarray]]:
    """Simulate the particles, exact orientations and splits that ``params`` describe.

    Parameters
    ----------
    params : the simulation parameters (its ``map`` field is not read: ``density`` is used).
    density : the map, already at the wanted box and voxel size.
    device : where to project (``None``: CUDA when available).
    progress : show a progress bar.

    Returns
    -------
    The particle stack, the (N, 4) float64 true quaternions, and the splits.
    """
    orientation_rng, simulation_rng, split_rng = np.random.default_rng(params.seed).spawn(3)
    quaternions = sample_orientations(params.n_projections, params.orientations, seed=orientation_rng)
    stack = simulate_particles(
        density,
        quaternions,
        shift_limit=params.shift_limit,
        noise_variance=params.noise_variance,
        ctf=params.ctf,
        defocus_range=params.defocus_range,
        seed=simulation_rng,
        device=device,
        progress=progress,
    )
    return stack, quaternions, split_indices(params.n_projections, params.split, seed=split_rng)


def save_dataset(
    folder: str | Path,
    stack: ParticleStack,
    quaternions: torch.Tensor,
    splits: dict[str, np.ndarray],
    record: dict,
) -> Path:
    """Write a dataset folder atomically: built beside ``folder``, then renamed into place.

    ``folder`` must not exist or be empty. ``record`` (JSON-ready) is stored in ``dataset.json``
    with the SHA-256 of every file, which :func:`load_dataset` checks before trusting a cache.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise DatasetError(f"{folder} exists and is not empty; choose a new output folder")
    try:
        with atomic_dir(folder) as tmp:
            write_particles(tmp, stack)
            np.save(tmp / "particles_quaternions.npy", quaternions.numpy())  # exact, not via Euler angles
            np.savez(tmp / "splits.npz", **splits)
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
            record = record | {
                "box_size": int(stack.images.shape[-1]),
                "pixel_size": stack.pixel_size,
                "files": files,
            }
            (tmp / "dataset.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    except OSError as error:
        if folder.exists() and any(folder.iterdir()):  # another process filled ``folder`` meanwhile
            raise DatasetError(f"{folder} exists and is not empty; choose a new output folder") from error
        raise
    return folder


def study_dataset(study: Study, *, progress: bool = True, **changes: Any) -> Dataset:
    """The dataset of ``study`` with ``changes`` (:meth:`Study.simulation`), from the cache or simulated.

    E.g. ``study_dataset(study, noise_variance=4.0)`` or ``study_dataset(study, n_projections=1500,
    orientations="quarter")``: the study's map, box, voxel size, P and seed unless changed, so every
    σ² of a study has the same orientations and splits.
    """
    return load_dataset(SimulationParameters(**study.simulation(**changes)), progress=progress)


def load_dataset(
    params: SimulationParameters,
    *,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Dataset:
    """Load the dataset for ``params`` from the cache, simulating and caching it when missing.

    The cache key hashes the parameters, what the map was made from (the SHA-256 of its file, or
    the name of a generated map, and how it was resampled: :attr:`DensityMap.origin`) and the
    cache schema (:data:`cryoorient.paths.CACHE_SCHEMA`, not the package version), so a changed
    map or parameter never reuses an old dataset, a release finds the datasets cached before it,
    and the same parameters find the same dataset on any machine, whatever FFT library resampled
    the map. A cached folder whose record or checksums do not match is rebuilt with a
    :class:`CacheWarning`.

    Parameters
    ----------
    params : the simulation parameters.
    cache_dir : parent folder of the cache (default ``data_dir()/datasets``).
    device : where to project (``None``: CUDA when available).
    progress : show a progress bar while simulating.
    """
    density = load_map(
        params.map,
        box_size=params.box_size,
        voxel_size=params.voxel_size,
        resolution=params.map_resolution,
        low_pass=params.map_low_pass,
    )
    root = Path(cache_dir) if cache_dir is not None else data_dir() / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / _dataset_key(params, density)
    expected = {"parameters": params.to_dict(), "cache_schema": CACHE_SCHEMA}
    if folder.exists():
        try:
            return _load_cached(folder, expected)
        except DatasetError as error:
            warnings.warn(f"rebuilding cached dataset: {error}", CacheWarning, stacklevel=2)
            shutil.rmtree(folder)

    stack, quaternions, splits = simulate_dataset(params, density, device=device, progress=progress)
    try:
        record = expected | {"cryoorient": __version__} | map_provenance(density)
        save_dataset(folder, stack, quaternions, splits, record)
    except DatasetError:
        if not folder.exists():
            raise
        # a concurrent run (two notebooks, two helpers) cached the same dataset first: use theirs
    del stack, quaternions, splits  # the cache is read back below; the simulation's heap goes back to the OS
    release_free_memory()
    return _load_cached(folder, expected)
