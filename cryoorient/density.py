"""Density maps: MRC I/O, atomic model -> map, an embedded pseudo-protein, and maps by name.

Conventions (the README's "Conventions" section):

* A volume is a ``float32`` array indexed ``[z, y, x]`` as MRC files store it; the voxel size is
  in Å; the centre of a box of ``N`` voxels is index ``N // 2`` on every axis (RELION's centre).
* Atomic coordinates are ``(x, y, z)`` in Å, as PDB/mmCIF files store them.

:func:`load_map` is the one resolver every notebook and the command line use. It accepts

* a path to an MRC map (``.mrc``, ``.map``, ``.ccp4``) or to an atomic model (``.pdb``, ``.ent``,
  ``.cif``, ``.mmcif``, optionally ``.gz``);
* ``"5j0n"``, the authors' map, found in :func:`cryoorient.paths.map_dirs` or downloaded once
  from their repository and checked against its SHA-256;
* any other 4-character PDB ID (e.g. ``"5a1a"``), whose mmCIF model is downloaded from RCSB and
  rendered with :func:`atoms_to_map`;
* ``"pseudo"``, ``"pseudo:SEED"``, ``"pseudo-d2"``, ``"pseudo-d2:SEED"``: the embedded
  pseudo-protein of :func:`cryoorient.pseudo_protein.pseudo_protein`, which needs no network.

When a named map cannot be downloaded, :func:`load_map` warns with :class:`MapFallbackWarning`
and returns the pseudo-protein instead (``"pseudo-d2:0"`` for the D2-symmetric ``"5a1a"``,
``"pseudo:0"`` otherwise), recording the substitution in :attr:`DensityMap.source`.

Generated maps follow Chimera's ``molmap``: each atom is a normalised 3-D Gaussian of standard
deviation ``σ = resolution / (π √2) ≈ 0.225 resolution`` weighted by its atomic number. The
defaults, :data:`DEFAULT_RESOLUTION` = 11 Å on a grid of :data:`DEFAULT_VOXEL_SIZE` = 11/3 Å
(molmap's default spacing, resolution / 3), are those the authors' ``5j0n.mrc`` was evidently
made with: its voxel size is 3.667 Å, and its box leaves ~33 Å (molmap's default padding of
3 resolutions) around the molecule.

At ~730 lines this module is over the package's ~600: MRC files, resampling, atomic models and
the resolver by name stay together because :func:`load_map` records in :attr:`DensityMap.origin`
how each of them made the map, and the dataset keys hash that record (the pseudo-protein, which
needs none of it, is :mod:`cryoorient.pseudo_protein`).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import scipy.fft
import torch

from cryoorient.filters import low_pass as low_pass_filter
from cryoorient.fsc import fourier_shell_correlation
from cryoorient.paths import atomic_path, atomic_write, data_dir, map_dirs, sha256_file
from cryoorient.pseudo_protein import pseudo_protein

__all__ = [
    "DEFAULT_RESOLUTION",
    "DEFAULT_VOXEL_SIZE",
    "MAP_5J0N_SHA256",
    "MAP_5J0N_URL",
    "SIGMA_FACTOR",
    "DensityMap",
    "MapError",
    "MapFallbackWarning",
    "atoms_to_map",
    "load_map",
    "map_fsc",
    "normalize_map",
    "pad_to_cube",
    "read_map",
    "read_model",
    "resample_map",
    "write_map",
]

# The authors' map (Banjac et al. 2021), stored with Git LFS in their repository.
MAP_5J0N_URL = (
    "https://media.githubusercontent.com/media/JelenaBanjac/protein-reconstruction/master/data/5j0n.mrc"
)
MAP_5J0N_SHA256 = "48d3147ccc6d17c11e57651b43e65494e2cef2e3bb92de4938c29a5189d837ee"
_RCSB_URL = "https://files.rcsb.org/download/{pdb_id}.cif"

#: molmap's ``sigmaFactor``: Gaussian standard deviation per unit of resolution, ``1 / (π √2)``.
SIGMA_FACTOR = 1.0 / (math.pi * math.sqrt(2.0))
#: Resolution (Å) at which atomic models and the pseudo-protein are rendered by :func:`load_map`.
DEFAULT_RESOLUTION = 11.0
#: Voxel size (Å) of rendered maps: molmap's ``resolution / 3``, the 3.667 Å of ``5j0n.mrc``.
DEFAULT_VOXEL_SIZE = DEFAULT_RESOLUTION / 3.0
# Rendered boxes extend this many σ beyond the atoms (molmap's default cutoff range).
_CUTOFF_SIGMAS = 5.0
# Fourier resampling pads the box so the achieved voxel size is within this relative tolerance.
_VOXEL_SIZE_RTOL = 1e-3

_MAP_SUFFIXES = (".mrc", ".map", ".ccp4")
_MODEL_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
_PSEUDO_RE = re.compile(r"pseudo(?P<d2>-d2)?(?::(?P<seed>\d+))?")
_PDB_ID_RE = re.compile(r"[1-9][a-z0-9]{3}")
# Named maps whose stand-in is the D2 pseudo-protein (β-galactosidase is D2-symmetric).
_D2_FALLBACKS = frozenset({"5a1a"})
_ACCEPTED = (
    "a path to an MRC map (.mrc, .map, .ccp4) or an atomic model (.pdb, .cif, optionally .gz), "
    '"5j0n" (the authors\' map), a 4-character PDB ID such as "5a1a", '
    '"pseudo", "pseudo:SEED", "pseudo-d2" or "pseudo-d2:SEED"'
)


class MapError(ValueError):
    """A map input is missing, corrupt or unavailable; the message names it and says what to do."""


class MapFallbackWarning(UserWarning):
    """A requested named map could not be obtained and the embedded pseudo-protein is used instead."""


@dataclass(frozen=True, eq=False)
class DensityMap:
    """A density map with its voxel size and provenance.

    Attributes
    ----------
    data : (z, y, x) float32 density (converted to float32 on construction).
    voxel_size : edge of a voxel in Å.
    name : what the map is: ``"5j0n"``, ``"pseudo:0"``, ``"pseudo-d2:3"``, ``"5a1a"`` or a path.
    source : where the data came from (file path, URL, ``"generated: ..."``,
        ``"fallback for 5j0n: <reason>; ..."``), for provenance records.
    origin : what the data were computed from, the same on every machine: ``"sha256:<digest>"``
        of the file read, ``"generated:pseudo:0"``, then the processing :func:`load_map` applied
        (``"; 64 px at 4.297 Å, normalised"``); empty when unknown (e.g. a map built in memory).
        Caches key on it rather than on the voxels, whose last bits depend on the FFT library
        that resampled them (NumPy/SciPy versions differ), so the same map and parameters find
        the same cached datasets and shipped models everywhere. A change to how maps are made
        must therefore change the origin too (a recipe tag): ``tests/test_density.py`` pins
        fingerprints of the maps and fails until then.
    """

    data: np.ndarray
    voxel_size: float
    name: str
    source: str
    origin: str = ""

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim != 3 or min(data.shape) < 1:
            raise ValueError(f"density data must be a non-empty (z, y, x) array; got shape {data.shape}")
        if not np.isfinite(self.voxel_size) or self.voxel_size <= 0:
            raise ValueError(f"voxel_size must be a positive number of Å; got {self.voxel_size!r}")
        object.__setattr__(self, "data", np.ascontiguousarray(data, dtype=np.float32))
        object.__setattr__(self, "voxel_size", float(self.voxel_size))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(z, y, x)`` in voxels."""
        return tuple(self.data.shape)

    @property
    def box_size(self) -> int:
        """Edge of the cubic box in voxels (``ValueError`` when the map is not a cube)."""
        if len(set(self.data.shape)) != 1:
            raise ValueError(f"map {self.name!r} is not a cube: shape {self.data.shape}; see pad_to_cube")
        return self.data.shape[0]

    @property
    def extent(self) -> tuple[float, float, float]:
        """Box edges ``(z, y, x)`` in Å."""
        return tuple(n * self.voxel_size for n in self.data.shape)


# --------------------------------------------------------------------------------------------
# MRC files


def read_map(path: str | os.PathLike) -> DensityMap:
    """Read a 3-D density map from an MRC/CCP4 file.

    The voxel size comes from the header (it must be isotropic and set). Axes are reordered to
    ``[z, y, x]`` when the header's ``mapc, mapr, maps`` say the file stores another order. The
    header origin is ignored: the centre is index ``N // 2`` (see the module docstring).

    Parameters
    ----------
    path : the ``.mrc`` / ``.map`` file.

    Returns
    -------
    A :class:`DensityMap` named and sourced by the path.

    Raises
    ------
    MapError
        The file is missing, is not a readable MRC file, does not hold a 3-D volume, has no
        isotropic voxel size, is all zeros, or contains NaN or infinite values.
    """
    path = Path(path)
    if not path.is_file():
        raise MapError(f"{path}: no such map file; check the path (named maps: {_ACCEPTED})")
    try:
        with mrcfile.open(path, mode="r", permissive=False) as mrc:
            data = np.array(mrc.data, dtype=np.float32)
            voxel = mrc.voxel_size
            voxel = (float(voxel.x), float(voxel.y), float(voxel.z))
            order = (int(mrc.header.maps), int(mrc.header.mapr), int(mrc.header.mapc))
    except Exception as err:  # mrcfile raises ValueError, OSError, ... for corrupt files
        raise MapError(
            f"{path}: not a readable MRC map ({type(err).__name__}: {err}); "
            "check that the file is a complete MRC/CCP4 volume"
        ) from err
    if data.ndim != 3:
        raise MapError(f"{path}: holds an array of shape {data.shape}, not a 3-D volume")
    if sorted(order) != [1, 2, 3]:
        raise MapError(f"{path}: invalid axis order (maps, mapr, mapc) = {order} in the header")
    # data[s, r, c] with labels (maps, mapr, mapc) in 1 = x, 2 = y, 3 = z; we want [z, y, x]
    data = np.ascontiguousarray(data.transpose([order.index(3), order.index(2), order.index(1)]))
    if min(voxel) <= 0 or not np.allclose(voxel, voxel[0], rtol=1e-3):
        raise MapError(
            f"{path}: the header's voxel size {voxel} Å is unset or anisotropic; "
            "set it (e.g. mrcfile's voxel_size, or relion_image_handler --angpix)"
        )
    if not np.isfinite(data).all():
        raise MapError(f"{path}: the map contains NaN or infinite values; repair or regenerate it")
    if not data.any():
        raise MapError(f"{path}: the map is all zeros; regenerate it or choose another map")
    origin = f"sha256:{sha256_file(path)}"
    return DensityMap(data, voxel[0], name=str(path), source=str(path.resolve()), origin=origin)


def write_map(path: str | os.PathLike, density: DensityMap) -> Path:
    """Write a map to an MRC file atomically (temporary file beside it, then rename).

    Parameters
    ----------
    path : destination ``.mrc`` file; its folder must exist. An existing file is replaced.
    density : the map; written as float32 with its voxel size in the header.

    Returns
    -------
    The path written.

    Raises
    ------
    MapError
        The data contain NaN or infinite values, or the file cannot be written; nothing is left
        behind at ``path`` (nor a temporary file), and an existing file there is unchanged.
    """
    if not isinstance(density, DensityMap):
        raise TypeError(f"density must be a DensityMap; got {type(density).__name__}")
    path = Path(path)
    if not np.isfinite(density.data).all():
        raise MapError(f"{path}: refusing to write map {density.name!r}: it contains NaN or infinite values")
    if not path.parent.is_dir():
        raise MapError(f"{path}: folder {path.parent} does not exist; create it first")
    try:
        with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(density.data, dtype=np.float32))
            mrc.voxel_size = density.voxel_size  # after set_data, which resets the cell
    except (OSError, ValueError) as err:
        raise MapError(f"{path}: could not write the map ({err}); nothing was written") from err
    return path


# --------------------------------------------------------------------------------------------
# Boxes, resampling, normalisation


def _crop_or_pad(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centred crop / zero-pad that maps index ``n // 2`` to ``m // 2`` on every axis."""
    out = np.zeros(shape, dtype=array.dtype)
    src, dst = [], []
    for n, m in zip(array.shape, shape, strict=True):
        offset = m // 2 - n // 2  # out[i + offset] = in[i]
        lo, hi = max(0, -offset), min(n, m - offset)
        src.append(slice(lo, hi))
        dst.append(slice(lo + offset, hi + offset))
    out[tuple(dst)] = array[tuple(src)]
    return out


def pad_to_cube(data: np.ndarray, center: str = "geometric") -> np.ndarray:
    """Zero-pad a volume to a cube.

    Parameters
    ----------
    data : (z, y, x) volume.
    center : ``"geometric"`` keeps the box centre: input index ``n // 2`` lands on ``N // 2``
        on every axis, with ``N = max(shape)`` (what :func:`load_map` does for files, so the
        authors' 69×57×75 ``5j0n.mrc`` becomes 75³ as they used it). ``"mass"`` shifts by whole
        voxels so that the centre of mass of the non-negative part of the density lands at
        ``N // 2`` (to within half a voxel), growing ``N`` beyond ``max(shape)`` when needed so
        nothing is cut.

    Returns
    -------
    (N, N, N) volume of the input's dtype.
    """
    data = np.asarray(data)
    if data.ndim != 3 or min(data.shape) < 1:
        raise ValueError(f"data must be a non-empty (z, y, x) volume; got shape {data.shape}")
    if center == "geometric":
        size = max(data.shape)
        return _crop_or_pad(data, (size,) * 3)
    if center != "mass":
        raise ValueError(f'center must be "geometric" or "mass"; got {center!r}')
    mass = np.clip(np.nan_to_num(data.astype(np.float64)), 0.0, None)
    total = mass.sum()
    if total <= 0:
        raise ValueError("center='mass' needs some positive density; the volume has none")
    com = [
        int(np.rint((mass.sum(axis=tuple(a for a in range(3) if a != axis)) * np.arange(n)).sum() / total))
        for axis, n in enumerate(data.shape)
    ]
    size = max(data.shape)
    while not all(size // 2 >= c and size - size // 2 >= n - c for c, n in zip(com, data.shape, strict=True)):
        size += 1
    out = np.zeros((size,) * 3, dtype=data.dtype)
    offsets = [size // 2 - c for c in com]
    out[tuple(slice(o, o + n) for o, n in zip(offsets, data.shape, strict=True))] = data
    return out


def _fourier_resize(volume: np.ndarray, size: int) -> np.ndarray:
    """Resize a cube to ``size``³ by cropping / zero-padding its centred spectrum (values kept)."""
    n = volume.shape[0]
    spectrum = scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.ifftshift(volume.astype(np.float32))))
    spectrum = _crop_or_pad(spectrum, (size,) * 3)
    out = scipy.fft.fftshift(scipy.fft.ifftn(scipy.fft.ifftshift(spectrum))).real
    return (out * (size / n) ** 3).astype(np.float32)


def _resample_sizes(n: int, ratio: float) -> tuple[int, int]:
    """Smallest padded size ``n' >= n`` whose resampled size ``m = round(n' ratio)`` is within tolerance."""
    best = None
    for padded in range(n, 2 * n + 1):
        m = max(1, round(padded * ratio))
        error = abs(padded * ratio / m - 1.0)
        if error <= _VOXEL_SIZE_RTOL:
            return padded, m
        if best is None or error < best[2]:
            best = (padded, m, error)
    return best[0], best[1]


def resample_map(
    density: DensityMap, box_size: int | None = None, voxel_size: float | None = None
) -> DensityMap:
    """Change a cubic map's voxel size (Fourier cropping / padding), then its box (centred).

    The voxel size changes by cropping (coarser voxels: an ideal low-pass, no aliasing) or
    zero-padding (finer voxels) the centred Fourier transform, which keeps the density *values*
    (not their sum) and the centre, index ``N // 2``. The box is first zero-padded when needed so
    that the achieved voxel size is within 0.1 % of the request (the exact value is the result's
    ``voxel_size``). Then the box is cropped or zero-padded in real space to ``box_size`` around
    index ``N // 2``.

    Parameters
    ----------
    density : a cubic map.
    box_size : edge of the output box in voxels; the resampled box when ``None``.
    voxel_size : output voxel size in Å; unchanged when ``None``.

    Returns
    -------
    A cubic :class:`DensityMap` with the same name and source.
    """
    if not isinstance(density, DensityMap):
        raise TypeError(f"density must be a DensityMap; got {type(density).__name__}")
    n = density.box_size  # raises for non-cubes
    if box_size is not None and (int(box_size) != box_size or box_size < 1):
        raise ValueError(f"box_size must be a positive integer; got {box_size!r}")
    if voxel_size is not None and (not np.isfinite(voxel_size) or voxel_size <= 0):
        raise ValueError(f"voxel_size must be a positive number of Å; got {voxel_size!r}")
    data, voxel = density.data, density.voxel_size
    if voxel_size is not None and abs(voxel / voxel_size - 1.0) > 1e-6:
        padded, size = _resample_sizes(n, voxel / voxel_size)
        data = _fourier_resize(_crop_or_pad(data, (padded,) * 3), size)
        voxel = voxel * padded / size
    if box_size is not None and int(box_size) != data.shape[0]:
        data = _crop_or_pad(data, (int(box_size),) * 3)
    return DensityMap(data, voxel, name=density.name, source=density.source, origin=density.origin)


def normalize_map(data: np.ndarray) -> np.ndarray:
    """Clip negative values to zero and scale so that the maximum is 1.

    Density is non-negative; negative voxels in maps are solvent flattening, noise or Fourier
    ringing, so they are set to zero. The scale is arbitrary in projection data, and a fixed
    maximum makes noise levels given as variances comparable between maps.

    Parameters
    ----------
    data : (z, y, x) volume with finite values and a positive maximum.

    Returns
    -------
    (z, y, x) float32 volume in ``[0, 1]`` with maximum 1.
    """
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise ValueError("cannot normalise a map with NaN or infinite values")
    peak = float(data.max(initial=0.0))
    if peak <= 0:
        raise ValueError(f"cannot normalise a map without positive density (maximum {peak})")
    return np.clip(data, 0.0, None) / np.float32(peak)


def map_fsc(map1: DensityMap, map2: DensityMap) -> tuple[torch.Tensor, torch.Tensor]:
    """Fourier shell correlation of two maps of one box and voxel size, frequencies in 1/Å.

    :func:`cryoorient.fsc.fourier_shell_correlation` of their data at their voxel size (which
    takes arrays; this reads them off the maps and checks that the voxel sizes agree).

    Parameters
    ----------
    map1, map2 : cubic maps of the same box, voxel sizes within 0.01 % of each other.

    Returns
    -------
    frequencies : (D // 2 + 1,) float64 shell frequencies in 1/Å (at ``map1``'s voxel size).
    fsc : (D // 2 + 1,) float64 correlations in ``[-1, 1]``.

    Raises
    ------
    ValueError
        Maps of different voxel sizes (resample one with :func:`resample_map`), or what
        :func:`~cryoorient.fsc.fourier_shell_correlation` refuses.
    """
    if not math.isclose(map1.voxel_size, map2.voxel_size, rel_tol=1e-4):
        raise ValueError(
            f"maps of different voxel sizes: {map1.name} {map1.voxel_size!r} Å, "
            f"{map2.name} {map2.voxel_size!r} Å; resample one (cryoorient.density.resample_map)"
        )
    return fourier_shell_correlation(map1.data, map2.data, voxel_size=map1.voxel_size)


# --------------------------------------------------------------------------------------------
# Atomic models


def read_model(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Atom positions and weights of the first model in a PDB or mmCIF file (read with gemmi).

    Waters are removed and only the first of alternative conformations is kept; hydrogens, ions
    and ligands present in the file are kept, as Chimera's ``molmap`` keeps them.

    Parameters
    ----------
    path : ``.pdb`` / ``.ent`` / ``.cif`` / ``.mmcif`` file, optionally gzipped.

    Returns
    -------
    positions : (n, 3) atom coordinates ``(x, y, z)`` in Å.
    weights : (n,) atomic numbers (``molmap``'s weights), float64.

    Raises
    ------
    MapError
        The file is missing, cannot be parsed, or holds no atoms.
    """
    import gemmi

    path = Path(path)
    if not path.is_file():
        raise MapError(f"{path}: no such model file; check the path")
    try:
        structure = gemmi.read_structure(str(path))
    except Exception as err:  # gemmi raises RuntimeError, ValueError, ... on bad input
        raise MapError(
            f"{path}: not a readable PDB/mmCIF model ({type(err).__name__}: {err}); check the file"
        ) from err
    if len(structure) == 0:
        raise MapError(f"{path}: the file holds no model (no ATOM/HETATM records)")
    structure.remove_alternative_conformations()
    structure.remove_waters()
    positions, weights = [], []
    for chain in structure[0]:
        for residue in chain:
            for atom in residue:
                positions.append((atom.pos.x, atom.pos.y, atom.pos.z))
                weights.append(atom.element.atomic_number)
    if not positions:
        raise MapError(f"{path}: no atoms found (only waters, or no ATOM/HETATM records)")
    positions = np.asarray(positions, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if not weights.any():
        raise MapError(f"{path}: no atom has a known element; check the element column")
    return positions, weights


def atoms_to_map(
    positions: np.ndarray,
    weights: np.ndarray,
    *,
    resolution: float,
    voxel_size: float,
    box_size: int,
) -> np.ndarray:
    """Render atoms as a sum of Gaussians, like Chimera's ``molmap``.

    Each atom is a normalised 3-D Gaussian of standard deviation
    ``σ = resolution / (π √2) ≈ 0.225 resolution`` Å (molmap's ``sigmaFactor``) scaled by its
    weight, so the map is in weight units per Å³ and ``map.sum() * voxel_size**3`` is the total
    weight of the atoms inside the box. The atoms' centroid (unweighted mean position) is placed
    at voxel ``N // 2``; density beyond the box is dropped. Gaussians are separable, so each chunk
    of atoms is a single matrix product, exact (no cutoff), with cost ``O(n_atoms N³)`` flops.

    Parameters
    ----------
    positions : (n, 3) atom coordinates ``(x, y, z)`` in Å.
    weights : (n,) weights, e.g. atomic numbers.
    resolution : resolution in Å that sets ``σ``.
    voxel_size : voxel edge in Å.
    box_size : edge ``N`` of the cubic box in voxels.

    Returns
    -------
    (N, N, N) float32 density indexed ``[z, y, x]``.
    """
    positions = np.asarray(positions, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) == 0:
        raise ValueError(f"positions must have shape (n, 3) with n >= 1; got {positions.shape}")
    if weights.shape != positions.shape[:1]:
        raise ValueError(f"weights must have shape ({len(positions)},); got {weights.shape}")
    if not (np.isfinite(positions).all() and np.isfinite(weights).all()):
        raise ValueError("positions and weights must be finite")
    if not np.isfinite(resolution) or resolution <= 0:
        raise ValueError(f"resolution must be a positive number of Å; got {resolution!r}")
    if not np.isfinite(voxel_size) or voxel_size <= 0:
        raise ValueError(f"voxel_size must be a positive number of Å; got {voxel_size!r}")
    if int(box_size) != box_size or box_size < 1:
        raise ValueError(f"box_size must be a positive integer; got {box_size!r}")
    box = int(box_size)
    sigma = SIGMA_FACTOR * resolution
    coords = torch.from_numpy(positions - positions.mean(axis=0)) / voxel_size  # (n, 3) voxels from N//2
    grid = torch.arange(box, dtype=torch.float64) - box // 2  # (N,) voxel indices relative to N//2
    amplitude = torch.from_numpy(weights) * (2 * math.pi) ** -1.5 / sigma**3  # per Å³
    volume = torch.zeros(box * box, box, dtype=torch.float32)  # (z*y, x)
    chunk = max(1, (1 << 24) // (box * box))  # ~64 MB of float32 per (chunk, z, y) block
    for start in range(0, len(coords), chunk):
        c = coords[start : start + chunk]  # (c, 3)
        g = torch.exp(-0.5 * ((grid - c[:, :, None]) * (voxel_size / sigma)) ** 2)  # (c, 3, N)
        gx, gy, gz = g[:, 0].float(), g[:, 1].float(), g[:, 2].float()  # (c, N) each
        zy = (gz * amplitude[start : start + chunk, None].float())[:, :, None] * gy[:, None, :]  # (c, z, y)
        volume.addmm_(zy.reshape(len(c), box * box).T, gx)
    return volume.reshape(box, box, box).numpy()


def _render_box(positions: np.ndarray, resolution: float, voxel_size: float) -> int:
    """Smallest even box holding, centred on the centroid, every rotation of the atoms plus 5 σ."""
    radius = np.linalg.norm(positions - positions.mean(axis=0), axis=1).max()
    half = math.ceil((radius + _CUTOFF_SIGMAS * SIGMA_FACTOR * resolution) / voxel_size)
    return 2 * (half + 1)


# --------------------------------------------------------------------------------------------
# Maps by name


class _Unavailable(Exception):
    """A named map's file could not be downloaded."""


def _download(url: str, fname: str, known_hash: str | None) -> Path:
    """Download ``url`` once into :func:`data_dir` with pooch (temp file, hash check, then move)."""
    import pooch

    try:
        return Path(
            pooch.retrieve(url, known_hash=known_hash, fname=fname, path=data_dir(), progressbar=False)
        )
    except (OSError, ValueError) as err:  # requests' errors are OSErrors; a hash mismatch is a ValueError
        text = str(err) if len(str(err)) <= 200 else str(err)[:200] + "..."
        raise _Unavailable(f"download of {url} failed ({type(err).__name__}: {text})") from err


def _find(fname: str) -> Path | None:
    for folder in map_dirs():
        if (folder / fname).is_file():
            return folder / fname
    return None


def _load_5j0n() -> DensityMap:
    path = _find("5j0n.mrc")
    if path is None:
        path = _download(MAP_5J0N_URL, "5j0n.mrc", f"sha256:{MAP_5J0N_SHA256}")
    elif (digest := sha256_file(path)) != MAP_5J0N_SHA256:
        raise MapError(
            f"{path}: SHA-256 {digest} differs from the authors' 5j0n.mrc ({MAP_5J0N_SHA256}); "
            "delete or replace the file"
        )
    density = read_map(path)
    return DensityMap(density.data, density.voxel_size, name="5j0n", source=str(path), origin=density.origin)


def _render_atoms(positions: np.ndarray, weights: np.ndarray, render: tuple[float, float]) -> np.ndarray:
    """The atoms rendered at ``render = (resolution, voxel size)`` in their smallest box."""
    resolution, voxel_size = render
    box = _render_box(positions, resolution, voxel_size)
    return atoms_to_map(positions, weights, resolution=resolution, voxel_size=voxel_size, box_size=box)


def _rendered_map(
    data: np.ndarray, render: tuple[float, float], name: str, source: str, origin: str
) -> DensityMap:
    """A rendering as a map, its source and origin saying how it was rendered."""
    resolution, voxel_size = render
    rendered = f"; atoms_to_map at {resolution:g} Å"
    return DensityMap(data, voxel_size, name=name, source=source + rendered, origin=origin + rendered)


def _render(
    positions: np.ndarray,
    weights: np.ndarray,
    render: tuple[float, float],
    name: str,
    source: str,
    origin: str,
) -> DensityMap:
    return _rendered_map(_render_atoms(positions, weights, render), render, name, source, origin)


_RENDER_CACHE_SCHEMA = 1
"""Version of the rendered-model cache's files; raise it when :func:`atoms_to_map` changes."""


def _read_render_cache(path: Path) -> np.ndarray | None:
    """A cached rendering: a finite float32 cube, else ``None`` (missing, corrupt or truncated file)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if data.dtype != np.float32 or data.ndim != 3 or len(set(data.shape)) != 1 or not np.isfinite(data).all():
        return None
    return data


def _render_model(path: Path, render: tuple[float, float], name: str, source: str) -> DensityMap:
    """An atomic model file rendered with :func:`_render_atoms`, cached in ``data_dir()/maps``.

    Rendering a large model at a fine resolution takes seconds (5A1A at 3 Å on a 1 Å grid: about
    13 s on two cores), so the rendered cube is kept, keyed by the file's SHA-256, the rendering
    (resolution, voxel size) and :data:`_RENDER_CACHE_SCHEMA`, written atomically; an unreadable
    or malformed cache file is rendered again and replaced.
    """
    origin = f"sha256:{sha256_file(path)}"
    resolution, voxel_size = render
    text = f"{_RENDER_CACHE_SCHEMA}|{origin}|{resolution!r}|{voxel_size!r}"
    cache = data_dir() / "maps" / f"render-{hashlib.sha256(text.encode()).hexdigest()[:16]}.npy"
    data = _read_render_cache(cache)
    if data is None:
        data = _render_atoms(*read_model(path), render)
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda f: np.save(f, data, allow_pickle=False))
    return _rendered_map(data, render, name, source, origin)


def _load_pdb(pdb_id: str, render: tuple[float, float]) -> DensityMap:
    fname = f"{pdb_id}.cif"
    path = _find(fname)
    url = _RCSB_URL.format(pdb_id=pdb_id.upper())
    if path is None:
        path = _download(url, fname, None)
    return _render_model(path, render, pdb_id, f"{path} (from {url})")


def _load_pseudo(seed: int, d2: bool, render: tuple[float, float]) -> DensityMap:
    positions, weights = pseudo_protein(seed, "D2" if d2 else None)
    name = f"pseudo{'-d2' if d2 else ''}:{seed}"
    return _render(
        positions,
        weights,
        render,
        name,
        f"generated: pseudo_protein({seed}, symmetry={'D2' if d2 else None!r})",
        f"generated:{name}",
    )


def _is_model(path: Path) -> bool:
    """Whether a path names an atomic model (rendered here) rather than a map (used as given)."""
    return any(s.lower() in _MODEL_SUFFIXES for s in path.suffixes[-2:])


def _load_file(path: Path, render: tuple[float, float]) -> DensityMap:
    is_model = _is_model(path)
    if not path.is_file():
        kind = "model" if is_model else "map"
        raise MapError(f"{path}: no such {kind} file; check the path (accepted: {_ACCEPTED})")
    if is_model:
        return _render_model(path, render, str(path), str(path.resolve()))
    return read_map(path)


def _is_path(name: str | os.PathLike) -> bool:
    if isinstance(name, os.PathLike):
        return True
    path = Path(name)
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    known = _MAP_SUFFIXES + _MODEL_SUFFIXES
    return any(s in known for s in suffixes) or os.sep in name or "/" in name


def load_map(
    name: str | os.PathLike,
    *,
    box_size: int | None = None,
    voxel_size: float | None = None,
    fallback: bool = True,
    resolution: float | None = None,
    low_pass: float | None = None,
) -> DensityMap:
    """Load a density map by path or by name, as a cube.

    Resolution (see the module docstring for the accepted names):

    * a path to an MRC map: :func:`read_map`, then :func:`pad_to_cube` with the *geometric*
      centre (the box centre stays the centre), then resampled with :func:`resample_map`. Its
      values are used **as given**: not clipped, not rescaled. Experimental maps have negative
      voxels (solvent noise, Fourier ringing, often half of them) and clipping them changes the
      projections by tens of percent against ``relion_project``'s;
    * ``"5j0n"``: ``5j0n.mrc`` from the first folder of :func:`cryoorient.paths.map_dirs`
      holding it, else downloaded once into :func:`cryoorient.paths.data_dir` from
      :data:`MAP_5J0N_URL`; its SHA-256 is checked either way. 3.667 Å voxels, 75³ once cubed;
    * a PDB ID: its mmCIF model (from ``map_dirs()`` as ``ID.cif``, else downloaded from RCSB
      into ``data_dir()``), or a path to a model file: rendered with :func:`atoms_to_map`;
    * ``"pseudo[:SEED]"`` / ``"pseudo-d2[:SEED]"`` (seed 0 by default): :func:`pseudo_protein`
      rendered with :func:`atoms_to_map`.

    Models and the pseudo-protein are rendered at :data:`DEFAULT_RESOLUTION` (11 Å), directly at
    ``voxel_size`` (default :data:`DEFAULT_VOXEL_SIZE`, 11/3 Å), in the smallest even box that
    holds every rotation of the molecule plus 5 σ of its Gaussians. With ``resolution``, they are
    rendered at that resolution on molmap's default grid, ``resolution / 3`` Å, then resampled to
    ``voxel_size`` / ``box_size`` like any map. A rendered model is cached in
    ``data_dir()/maps``, keyed by its file's SHA-256 and the rendering; the pseudo-protein is
    regenerated on each call (well under a second).

    Maps by name (``"5j0n"``, PDB IDs, pseudo-proteins) and rendered model files are normalised
    with :func:`normalize_map` (negative voxels clipped, maximum 1): the paper's modelling choice
    for density rendered from atoms, which is non-negative (``5j0n.mrc`` itself has no negative
    voxel; clipping removes only the ringing of resampling it).

    Parameters
    ----------
    name : a path or one of the names above (case-insensitive).
    box_size : edge of the returned cube in voxels. Alone, it keeps the field of view: the voxel
        size becomes ``natural voxel size × natural box / box_size``. With ``voxel_size``, the map
        is resampled first, then cropped or zero-padded around its centre. Natural box when ``None``.
    voxel_size : voxel size in Å of the returned map; the source's when ``None``.
    fallback : when a named map cannot be downloaded, warn with :class:`MapFallbackWarning` and
        return the pseudo-protein (``"pseudo-d2:0"`` for ``"5a1a"``, ``"pseudo:0"`` otherwise)
        with ``source`` starting ``"fallback for NAME: <reason>"``; when ``False``, raise
        :class:`MapError`.
    resolution : Å, the resolution atomic models and pseudo-proteins are rendered at (``None``:
        :data:`DEFAULT_RESOLUTION` at ``voxel_size``); an error for MRC maps, whose resolution
        is what it is.
    low_pass : Å: the map, once resampled (and normalised), is low-pass filtered to this
        resolution (:func:`cryoorient.filters.low_pass`: half amplitude there, a 2-shell cosine
        edge), as a user's low-resolution initial model of the structure; its values are then as
        the filter leaves them (with some ringing below zero), and :attr:`DensityMap.origin`
        records the filter. At least the Nyquist limit, twice the returned voxel size.

    Returns
    -------
    A cubic :class:`DensityMap`: an MRC file's values as given (resampled when asked), any other
    source normalised by :func:`normalize_map` (non-negative, maximum 1).

    Raises
    ------
    MapError
        Unknown name, missing or corrupt file, checksum mismatch, or (with ``fallback=False``)
        a download failure.
    """
    if box_size is not None and (int(box_size) != box_size or box_size < 1):
        raise ValueError(f"box_size must be a positive integer; got {box_size!r}")
    if voxel_size is not None and (not np.isfinite(voxel_size) or voxel_size <= 0):
        raise ValueError(f"voxel_size must be a positive number of Å; got {voxel_size!r}")
    if resolution is not None and (not np.isfinite(resolution) or resolution <= 0):
        raise ValueError(f"resolution must be a positive number of Å; got {resolution!r}")
    if low_pass is not None and (not np.isfinite(low_pass) or low_pass <= 0):
        raise ValueError(f"low_pass must be a positive number of Å; got {low_pass!r}")
    if resolution is None:
        render = (DEFAULT_RESOLUTION, DEFAULT_VOXEL_SIZE if voxel_size is None else float(voxel_size))
    else:
        render = (float(resolution), float(resolution) / 3.0)  # molmap's default grid spacing
    if not isinstance(name, str | os.PathLike):
        raise MapError(f"map name must be a string or a path; got {name!r}; accepted: {_ACCEPTED}")
    as_given = _is_path(name) and not _is_model(Path(name))
    if resolution is not None and (as_given or str(name).strip().lower() == "5j0n"):
        raise MapError(
            f"map {str(name)!r} is a density map, not an atomic model: a rendering resolution "
            f"({resolution!r} Å) applies only to models and pseudo-proteins; leave it unset"
        )
    if _is_path(name):
        density = _load_file(Path(name), render)
    else:
        key = name.strip().lower()
        pseudo = _PSEUDO_RE.fullmatch(key)
        if pseudo:
            density = _load_pseudo(int(pseudo["seed"] or 0), bool(pseudo["d2"]), render)
        elif _PDB_ID_RE.fullmatch(key):
            try:
                density = _load_5j0n() if key == "5j0n" else _load_pdb(key, render)
            except _Unavailable as err:
                density = _fall_back(key, str(err), render, fallback)
        else:
            raise MapError(f"unknown map {name!r}; accepted: {_ACCEPTED}")
    if len(set(density.shape)) != 1:  # files; rendered maps are cubes already
        density = DensityMap(
            pad_to_cube(density.data, "geometric"), density.voxel_size, density.name, density.source,
            density.origin + "; cubed",
        )
    if box_size is not None and voxel_size is None:
        # box alone: keep the field of view, so the whole map spans box_size voxels
        voxel_size = density.voxel_size * density.box_size / int(box_size)
    density = resample_map(density, box_size=box_size, voxel_size=voxel_size)
    processed = f"{density.origin}; {density.box_size} px at {density.voxel_size:.6g} Å"
    if as_given:
        density = DensityMap(density.data, density.voxel_size, density.name, density.source, processed)
    else:
        data = normalize_map(density.data)
        processed += ", normalised"
        density = DensityMap(data, density.voxel_size, density.name, density.source, processed)
    return density if low_pass is None else _low_passed(density, float(low_pass))


def _low_passed(density: DensityMap, resolution: float) -> DensityMap:
    """``density`` low-pass filtered to ``resolution`` Å, the filter recorded in its origin."""
    nyquist = 2 * density.voxel_size
    if resolution < nyquist:
        raise ValueError(
            f"low_pass {resolution:g} Å is finer than the map's Nyquist limit, {nyquist:.4g} Å "
            f"(twice its {density.voxel_size:.4g} Å voxels): ask for {nyquist:.4g} Å or coarser"
        )
    data = low_pass_filter(density.data, density.voxel_size, resolution).numpy()
    return DensityMap(
        data, density.voxel_size, density.name, density.source, f"{density.origin}; low-pass {resolution:g} Å"
    )


def _fall_back(key: str, reason: str, render: tuple[float, float], fallback: bool) -> DensityMap:
    d2 = key in _D2_FALLBACKS
    stand_in = f"pseudo{'-d2' if d2 else ''}:0"
    folders = ", ".join(str(p) for p in map_dirs())
    fname = f"{key}.mrc" if key == "5j0n" else f"{key}.cif"
    where = f"put {fname} in one of [{folders}] (or in a folder listed in $CRYOORIENT_MAPS)"
    if not fallback:
        raise MapError(f"map {key!r} is unavailable: {reason}. To use it offline, {where}.")
    warnings.warn(
        f"MAP {key!r} COULD NOT BE OBTAINED ({reason}); USING THE EMBEDDED PSEUDO-PROTEIN "
        f"{stand_in!r} INSTEAD. Results are not those of {key}. To use {key} offline, {where}; "
        "pass fallback=False to make this an error.",
        MapFallbackWarning,
        stacklevel=3,
    )
    density = _load_pseudo(0, d2, render)
    return DensityMap(
        density.data, density.voxel_size, stand_in, f"fallback for {key}: {reason}; {density.source}",
        density.origin,
    )
