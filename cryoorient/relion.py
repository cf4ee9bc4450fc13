"""RELION's file formats in one place: MRC particle stacks, STAR files, particle sets, maps + angles.

Every file the package exchanges with RELION (and with other cryo-EM programs) is read or written
here; the numerical modules (:mod:`cryoorient.projection`, :mod:`cryoorient.reconstruction`,
:mod:`cryoorient.pipeline`) do no file I/O. Maps themselves are read and written by
:func:`cryoorient.density.read_map` / :func:`~cryoorient.density.write_map`. The numerical core
takes arrays, not the types defined here (``make lint`` checks its imports):
:func:`reconstruct_particles` hands a :class:`ParticleStack` to the reconstruction as arrays.

Conventions at the file boundary: Euler angles are RELION's ZYZ ``(rot, tilt, psi)`` in degrees
(radians in memory), origins are ``rlnOriginX/YAngst`` in Å (pixels in memory), image stacks are
float32 ``[n, y, x]`` with the pixel size in the MRC header.

STAR files follow RELION 3.1: an ``optics`` table and a ``particles`` table. RELION 3.1's
observation model refuses an optics table without ``rlnImagePixelSize``, ``rlnVoltage`` and
``rlnSphericalAberration`` ("not all necessary variables defined in _optics.star file"), so the
optics group is always complete (:data:`OPTICS_COLUMNS`), with :data:`CTF_OPTICS` values when the
images carry no CTF. Such files have no ``rlnDefocusU/V`` columns; RELION programs then must not
apply a CTF: ``relion_reconstruct`` and ``relion_refine`` do so only when given ``--ctf``, so leave
it out (``relion_reconstruct --i particles.star --o map.mrc``).

Files from a RELION project are read as RELION reads them: each particle takes its pixel size and
optics from its own optics group (``rlnOpticsGroup``), the stack named in ``rlnImageName`` is found
relative to the project folder (RELION's working directory), input angles are optional
(``angles_required=False``: an Extract job's particles have none), and :func:`write_star_like`
writes such a file back with every block, column and optics group it had, new angles added.

Writes are atomic (temporary file beside the target, then rename) and leave files with the mode
the umask gives (:func:`cryoorient.paths.atomic_path`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile
import torch

from cryoorient._checks import check_rotations, check_shifts, check_volume
from cryoorient.density import DensityMap, write_map
from cryoorient.geometry import euler_to_matrix, euler_to_quaternion, matrix_to_euler, quaternion_to_euler
from cryoorient.paths import atomic_path
from cryoorient.projection import ctf_2d
from cryoorient.reconstruction import ReconstructionResult, reconstruct

__all__ = [
    "ANGLE_COLUMNS",
    "CTF_COLUMNS",
    "CTF_OPTICS",
    "CTF_OPTICS_COLUMNS",
    "OPTICS_COLUMNS",
    "PIXEL_SIZE_RTOL",
    "DatasetError",
    "ParticleStack",
    "StarParticles",
    "read_particles",
    "read_stack",
    "read_star",
    "reconstruct_particles",
    "resolve_image_names",
    "write_orientations",
    "write_particles",
    "write_reconstruction",
    "write_stack",
    "write_star",
    "write_star_like",
]

ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
CTF_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")
#: The optics written for every particle file: 300 kV, Cs 2.7 mm, 10 % amplitude contrast (also
#: the simulated CTF's, :func:`cryoorient.dataset.simulate_particles`).
CTF_OPTICS = {"voltage": 300.0, "spherical_aberration": 2.7, "amplitude_contrast": 0.1}
#: The STAR column of each optics value of a CTF (keys of :data:`CTF_OPTICS` and of ``ctf`` dicts).
CTF_OPTICS_COLUMNS = {
    "voltage": "rlnVoltage",
    "spherical_aberration": "rlnSphericalAberration",
    "amplitude_contrast": "rlnAmplitudeContrast",
}
#: Relative tolerance within which particles' pixel sizes count as one.
PIXEL_SIZE_RTOL = 1e-4
#: The columns of every optics table written here: those RELION 3.1 requires and the CTF's optics.
OPTICS_COLUMNS = (
    "rlnOpticsGroup",
    "rlnOpticsGroupName",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnImageDimensionality",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
)


class DatasetError(ValueError):
    """A particle stack, STAR file or dataset folder that cannot be used as given."""


@dataclass
class ParticleStack:
    """Particle images with their orientations, origins and optional CTF parameters.

    Attributes
    ----------
    images : (N, D, D) float32 images ``[n, y, x]``.
    angles : (N, 3) RELION Euler angles ``(rot, tilt, psi)`` in radians.
    shifts : (N, 2) origins ``(x, y)`` in pixels (RELION's ``rlnOriginX/YAngst`` / pixel size).
    pixel_size : Å per pixel.
    ctf : per-particle CTF parameters or ``None``: ``defocus_u``, ``defocus_v`` (N,) Å,
        ``astigmatism_angle`` (N,) radians, and ``voltage`` kV, ``spherical_aberration`` mm,
        ``amplitude_contrast``: floats when every particle has the same, (N,) float64 arrays when
        the particles come from optics groups that differ (:func:`read_star`; consumers that take
        one value, such as :func:`cryoorient.projection.ctf_2d`, must refuse those).
    has_angles : ``False`` when the STAR file gave no angles and :attr:`angles` are placeholder
        zeros (:func:`read_particles` with ``angles_required=False``).
    """

    images: np.ndarray
    angles: np.ndarray
    shifts: np.ndarray
    pixel_size: float
    ctf: dict | None = None
    has_angles: bool = True

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 3 or self.images.shape[1] != self.images.shape[2]:
            raise DatasetError(f"images must be a stack of square images (N, D, D); got {self.images.shape}")
        if self.angles.shape != (n, 3) or self.shifts.shape != (n, 2):
            raise DatasetError(
                f"{n} images but angles {self.angles.shape} and shifts {self.shifts.shape}; "
                f"expected ({n}, 3) and ({n}, 2)"
            )
        if not self.pixel_size > 0:
            raise DatasetError(f"pixel size must be positive; got {self.pixel_size}")

    @property
    def quaternions(self) -> torch.Tensor:
        """(N, 4) unit quaternions of :attr:`angles`, float64."""
        return euler_to_quaternion(torch.from_numpy(np.asarray(self.angles, dtype=np.float64)))

    def __len__(self) -> int:
        return len(self.images)


def write_stack(path: str | Path, images: np.ndarray, pixel_size: float) -> Path:
    """Write an image stack as MRC (float32, pixel size in the header), atomically.

    Parameters
    ----------
    path : output ``.mrcs`` file.
    images : (N, D, D) images ``[n, y, x]``.
    pixel_size : Å per pixel.
    """
    path = Path(path)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise DatasetError(f"{path.name}: a stack must have shape (N, D, D); got {images.shape}")
    with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(images)
        mrc.set_image_stack()
        mrc.voxel_size = pixel_size
    return path


def read_stack(path: str | Path) -> tuple[np.ndarray, float]:
    """Read an MRC image stack.

    Returns
    -------
    images : (N, D, D) float32 ``[n, y, x]`` (a single 2-D image gives N = 1).
    pixel_size : Å per pixel from the header.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such particle stack")
    try:
        with mrcfile.open(path, permissive=False) as mrc:
            images = np.array(mrc.data, dtype=np.float32)
            pixel_size = float(mrc.voxel_size.x)
    except ValueError as error:
        raise DatasetError(
            f"{path}: not a readable MRC stack ({error}); check the file or regenerate it"
        ) from error
    images = images[None] if images.ndim == 2 else images
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DatasetError(f"{path}: images must be square; the stack has shape {images.shape}")
    if not np.isfinite(images).all():
        raise DatasetError(f"{path}: the stack contains NaN or infinite values")
    return images, pixel_size


def write_star(
    path: str | Path,
    angles: np.ndarray,
    shifts: np.ndarray,
    pixel_size: float,
    image_size: int,
    image_names: list[str] | None = None,
    ctf: dict | None = None,
) -> Path:
    """Write particles as a RELION 3.1 STAR file (optics + particles tables), atomically.

    The optics table always has every column of :data:`OPTICS_COLUMNS` (RELION 3.1 needs voltage
    and Cs even for CTF-free images); without ``ctf`` they hold :data:`CTF_OPTICS` and no defocus
    columns are written, so RELION applies no CTF unless told to with ``--ctf``.

    Parameters
    ----------
    path : output ``.star`` file.
    angles : (N, 3) ``(rot, tilt, psi)`` radians (written in degrees).
    shifts : (N, 2) origins ``(x, y)`` in pixels (written in Å as ``rlnOriginX/YAngst``).
    pixel_size : Å per pixel; image_size : D.
    image_names : RELION image names (``"000001@particles.mrcs"``); none are written when omitted.
    ctf : CTF parameters as in :class:`ParticleStack`.
    """
    path = Path(path)
    angles = np.degrees(np.asarray(angles, dtype=np.float64))
    shifts = np.asarray(shifts, dtype=np.float64) * pixel_size
    lens = CTF_OPTICS if ctf is None else {k: ctf[k] for k in CTF_OPTICS}
    mixed = [k for k, v in lens.items() if np.ndim(v) != 0]
    if mixed:
        raise DatasetError(
            f"{path}: write_star writes one optics group, but the CTF's {', '.join(mixed)} differ "
            "between particles; write the input's optics groups with write_star_like"
        )
    optics = {
        "rlnOpticsGroup": [1],
        "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnImagePixelSize": [pixel_size],
        "rlnImageSize": [image_size],
        "rlnImageDimensionality": [2],
        "rlnVoltage": [lens["voltage"]],
        "rlnSphericalAberration": [lens["spherical_aberration"]],
        "rlnAmplitudeContrast": [lens["amplitude_contrast"]],
    }
    particles = {}
    if image_names is not None:
        particles["rlnImageName"] = image_names
    particles |= dict(zip(ANGLE_COLUMNS, angles.T, strict=True))
    particles |= {"rlnOriginXAngst": shifts[:, 0], "rlnOriginYAngst": shifts[:, 1]}
    if ctf is not None:
        particles |= {
            "rlnDefocusU": ctf["defocus_u"],
            "rlnDefocusV": ctf["defocus_v"],
            "rlnDefocusAngle": np.degrees(ctf["astigmatism_angle"]),
        }
    particles["rlnOpticsGroup"] = np.ones(len(angles), dtype=int)
    with atomic_path(path) as tmp:
        starfile.write({"optics": pd.DataFrame(optics), "particles": pd.DataFrame(particles)}, tmp)
    return path


@dataclass
class StarParticles:
    """What a STAR file says about its particles (see :func:`read_star`).

    Attributes
    ----------
    angles : (N, 3) RELION Euler angles ``(rot, tilt, psi)`` in radians, or ``None`` when the file
        has none (only with ``read_star(..., angles_required=False)``).
    shifts : (N, 2) origins ``(x, y)`` in pixels, each converted with its particle's pixel size.
    pixel_size : Å per pixel when every particle has the same (within :data:`PIXEL_SIZE_RTOL`),
        else ``None``: unknown, or differing between optics groups (see :attr:`pixel_sizes`).
    image_names : the ``rlnImageName`` entries, or ``None``.
    ctf : CTF parameters as in :class:`ParticleStack` (optics values are (N,) arrays when the
        particles' optics groups differ), or ``None`` without ``rlnDefocusU/V``.
    pixel_sizes : (N,) Å per pixel of each particle (from its optics group), or ``None`` when the
        file gives no pixel size and none was passed.
    particles_table : the particle table as read, every column (``None`` when not read from a file).
    optics_table : the ``optics`` table as read, every group, or ``None`` (RELION 3.0 files).
    blocks : every data block of the file in order, name to table (``pandas.DataFrame``) or to a
        ``dict`` of a simple block; :func:`write_star_like` writes them back.
    particles_block : the name of the particle table's block (``"particles"``; ``""`` for the
        single ``data_`` block of a RELION 3.0 file).
    defaulted : the CTF optics values (keys of :data:`CTF_OPTICS`, columns in
        :data:`CTF_OPTICS_COLUMNS`) that the file lacks, for some or all particles, and that were
        given :data:`CTF_OPTICS` values; empty without a CTF.
    """

    angles: np.ndarray | None
    shifts: np.ndarray
    pixel_size: float | None
    image_names: list[str] | None
    ctf: dict | None
    pixel_sizes: np.ndarray | None = None
    particles_table: pd.DataFrame | None = None
    optics_table: pd.DataFrame | None = None
    blocks: dict = field(default_factory=dict)
    particles_block: str | None = None
    defaulted: tuple[str, ...] = ()


def _float_column(path: Path, table: pd.DataFrame, column: str) -> np.ndarray:
    """(rows,) float64 copy of a numeric column, or a DatasetError naming the file and the column."""
    try:
        # copy=True: pandas 3 hands out read-only views, and torch.from_numpy warns about those
        return table[column].to_numpy(dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise DatasetError(
            f"{path}: column {column} is not numeric ({error}); repair the STAR file"
        ) from error


def _particle_table(tables: dict[str, pd.DataFrame]) -> str | None:
    """The particle table's name: ``particles``, else the first with angles, names, or not ``optics``."""
    if "particles" in tables:
        return "particles"
    for wanted in (ANGLE_COLUMNS[0], "rlnImageName"):
        for name, table in tables.items():
            if wanted in table.columns:
                return name
    return next((name for name in tables if name != "optics"), None)


def _optics_rows(path: Path, particles: pd.DataFrame, optics: pd.DataFrame | None) -> np.ndarray | None:
    """(N,) row of the optics table of each particle (through ``rlnOpticsGroup``), or ``None``."""
    if optics is None or len(optics) == 0:
        return None
    if "rlnOpticsGroup" in optics.columns and "rlnOpticsGroup" in particles.columns:
        groups = pd.Index(optics["rlnOpticsGroup"])
        if not groups.is_unique:
            raise DatasetError(
                f"{path}: the optics table lists a group twice ({groups.tolist()}); "
                "give each optics group one row"
            )
        rows = groups.get_indexer(particles["rlnOpticsGroup"])
        if (rows < 0).any():
            unknown = sorted(set(particles["rlnOpticsGroup"][rows < 0].tolist()), key=str)
            raise DatasetError(
                f"{path}: particles of optics group {', '.join(map(str, unknown))} but the optics table "
                f"has only {', '.join(map(str, groups.tolist()))}; repair rlnOpticsGroup or the optics table"
            )
        return rows
    if len(optics) == 1:
        return np.zeros(len(particles), dtype=int)
    raise DatasetError(
        f"{path}: {len(optics)} optics groups but no rlnOpticsGroup column to say which group each "
        "particle belongs to; add it (RELION 3.1 writes it in both tables)"
    )


def read_star(
    path: str | Path, pixel_size: float | None = None, *, angles_required: bool = True
) -> StarParticles:
    """Read particle orientations, origins, optics and CTF from a RELION 3.0 or 3.1 STAR file.

    RELION 3.1 files have an ``optics`` table, one row per optics group, with
    ``rlnImagePixelSize``, ``rlnVoltage``, ... and origins in Å (``rlnOriginXAngst``); each
    particle takes the values of its group (``rlnOpticsGroup``). RELION 3.0 files have one table
    with origins in pixels (``rlnOriginX``) and the pixel size as ``rlnDetectorPixelSize`` (µm) /
    ``rlnMagnification``, per particle. The tables themselves are kept (``particles_table``,
    ``optics_table``, ``blocks``) for :func:`write_star_like`.

    Parameters
    ----------
    path : the STAR file.
    pixel_size : Å per pixel, used when the file does not say (needed to convert Å origins).
    angles_required : raise a :class:`DatasetError` when the particles have no
        ``rlnAngleRot/Tilt/Psi``; with ``False`` such a file (e.g. from RELION's Extract job) gives
        ``angles=None``.

    Returns
    -------
    :class:`StarParticles` with angles in radians and origins in pixels (zeros when absent). Its
    ``pixel_size`` is ``None`` when the particles' pixel sizes differ; ``pixel_sizes`` has each.
    Missing voltage, Cs or amplitude contrast of a CTF take :data:`CTF_OPTICS` values and are
    listed in ``defaulted``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such STAR file")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as error:  # starfile raises assorted parser errors
        raise DatasetError(f"{path}: not a readable STAR file ({error})") from error
    tables = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    key = _particle_table(tables)
    particles = None if key is None else tables[key]
    has_angles = particles is not None and set(ANGLE_COLUMNS) <= set(particles.columns)
    if particles is None or (angles_required and not has_angles):
        have = [] if particles is None else list(particles.columns)
        raise DatasetError(
            f"{path}: no particle table with {', '.join(ANGLE_COLUMNS)}; "
            f"columns found: {', '.join(have) or 'none'}"
        )
    optics = tables.get("optics") if key != "optics" else None
    rows = _optics_rows(path, particles, optics)
    n = len(particles)

    def column(name: str) -> np.ndarray | None:
        """(N,) per-particle values of ``name``, from the particle's optics group or its own row."""
        if optics is not None and rows is not None and name in optics.columns:
            return _float_column(path, optics, name)[rows]
        return _float_column(path, particles, name) if name in particles.columns else None

    pixel_sizes = column("rlnImagePixelSize")
    if pixel_sizes is None:
        detector, magnification = column("rlnDetectorPixelSize"), column("rlnMagnification")
        if detector is not None and magnification is not None:
            pixel_sizes = detector * 1e4 / magnification
    if pixel_sizes is None and pixel_size is not None:
        pixel_sizes = np.full(n, float(pixel_size))
    pixel = pixel_size if n == 0 else None
    if pixel_sizes is not None and n:
        if not (np.isfinite(pixel_sizes) & (pixel_sizes > 0)).all():
            bad = pixel_sizes[~(np.isfinite(pixel_sizes) & (pixel_sizes > 0))][0]
            raise DatasetError(f"{path}: pixel size {bad} Å; pixel sizes must be positive, repair the file")
        if np.all(np.abs(pixel_sizes - pixel_sizes[0]) <= PIXEL_SIZE_RTOL * pixel_sizes[0]):
            pixel = float(pixel_sizes[0])

    angles = None
    if has_angles:
        angles = np.radians(np.stack([_float_column(path, particles, c) for c in ANGLE_COLUMNS], axis=1))
    if {"rlnOriginXAngst", "rlnOriginYAngst"} <= set(particles.columns):
        if pixel_sizes is None:
            raise DatasetError(
                f"{path}: origins are in Å but the file gives no pixel size; pass the pixel size"
            )
        origins = np.stack([_float_column(path, particles, f"rlnOrigin{a}Angst") for a in "XY"], axis=1)
        shifts = origins / pixel_sizes[:, None]
    elif {"rlnOriginX", "rlnOriginY"} <= set(particles.columns):
        shifts = np.stack([_float_column(path, particles, f"rlnOrigin{a}") for a in "XY"], axis=1)
    else:
        shifts = np.zeros((n, 2))
    names = particles["rlnImageName"].astype(str).tolist() if "rlnImageName" in particles.columns else None

    ctf, defaulted = None, []
    if set(CTF_COLUMNS[:2]) <= set(particles.columns):
        ctf = {
            "defocus_u": _float_column(path, particles, "rlnDefocusU"),
            "defocus_v": _float_column(path, particles, "rlnDefocusV"),
            "astigmatism_angle": np.radians(
                _float_column(path, particles, "rlnDefocusAngle")
                if "rlnDefocusAngle" in particles.columns
                else np.zeros(n)
            ),
        }
        for name, star_column in CTF_OPTICS_COLUMNS.items():
            values = column(star_column)
            if values is None or np.isnan(values).any():
                defaulted.append(name)
                values = np.full(n, CTF_OPTICS[name]) if values is None else values
                values[np.isnan(values)] = CTF_OPTICS[name]
            distinct = np.unique(values)
            if len(distinct) > 1:
                ctf[name] = values  # optics groups that differ: one value per particle
            else:
                ctf[name] = float(distinct[0]) if len(distinct) else CTF_OPTICS[name]
    return StarParticles(
        angles=angles,
        shifts=shifts,
        pixel_size=pixel,
        image_names=names,
        ctf=ctf,
        pixel_sizes=pixel_sizes,
        particles_table=particles,
        optics_table=optics,
        blocks=dict(blocks),
        particles_block=key,
        defaulted=tuple(defaulted),
    )


def _exact_float(value: float) -> str:
    """The shortest text that reads back as the same float64 (Python's ``repr``)."""
    return repr(float(value))


def write_star_like(
    path: str | Path,
    source: StarParticles,
    *,
    angles: np.ndarray | None = None,
    image_names: Sequence[str] | None = None,
    drop: Iterable[str] = (),
    columns: Mapping[str, Sequence] | None = None,
) -> Path:
    """Write a STAR file as ``source`` was read, with new angles or image names, atomically.

    Every data block of ``source.blocks`` is written in its order, with every column and every
    optics group unchanged (the particle and optics tables are ``source.particles_table`` and
    ``source.optics_table``), so that micrograph names, coordinates, random subsets, optics groups
    and blocks unknown here survive. Numbers are written with the shortest text that reads back as
    the same float64, so reading the output with :func:`read_star` gives equal tables. A RELION 3.0
    file (one ``data_`` block) stays one.

    Parameters
    ----------
    path : output ``.star`` file (its folder must exist).
    source : what :func:`read_star` returned for the input.
    angles : (N, 3) RELION ``(rot, tilt, psi)`` in radians, written in degrees as
        ``rlnAngleRot/Tilt/Psi`` in place of the input's (appended when it has none); ``None``
        keeps the input's.
    image_names : N ``rlnImageName`` entries in place of the input's (e.g. re-pointed relative to
        ``path``'s folder; see :func:`resolve_image_names`); ``None`` keeps them.
    drop : particle columns to leave out, e.g. priors or scores of an earlier refinement that no
        longer describe the new angles (``rlnAnglePsiPrior``, ``rlnMaxValueProbDistribution``);
        names the table lacks are ignored. Applied before ``angles`` and ``image_names``.
    columns : particle columns to set, name to N values (e.g. ``{"rlnRandomSubset": halves}``),
        replacing the input's column of that name or appended.

    Returns
    -------
    ``path``.
    """
    path = Path(path)
    particles = source.particles_table
    if particles is None:
        raise DatasetError(
            f"{path}: the source particles carry no STAR tables to write; read them with read_star"
        )
    n = len(particles)
    particles = particles.drop(columns=[c for c in drop if c in particles.columns])
    if angles is not None:
        degrees = np.degrees(np.asarray(angles, dtype=np.float64))
        if degrees.shape != (n, 3) or not np.isfinite(degrees).all():
            raise DatasetError(
                f"{path}: angles must be ({n}, 3) finite radians, one row per particle of the source; "
                f"got shape {degrees.shape}"
            )
        for column, values in zip(ANGLE_COLUMNS, degrees.T, strict=True):
            particles[column] = values
    for column, values in (columns or {}).items():
        if len(values) != n:
            raise DatasetError(f"{path}: {len(values)} values of {column} for {n} particles; give one each")
        particles[column] = np.asarray(values)
    if image_names is not None:
        if len(image_names) != n:
            raise DatasetError(f"{path}: {len(image_names)} image names for {n} particles; give one each")
        particles["rlnImageName"] = [str(name) for name in image_names]
    key = "particles" if source.particles_block is None else source.particles_block
    blocks = dict(source.blocks) or ({} if source.optics_table is None else {"optics": None})
    if source.optics_table is not None:
        blocks["optics"] = source.optics_table
    blocks[key] = particles  # both keep their places in the source's order
    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp, float_format=_exact_float)
    return path


def write_particles(folder: str | Path, stack: ParticleStack, name: str = "particles") -> Path:
    """Write ``NAME.mrcs``, ``NAME.star`` and ``NAME_quaternions.npy`` into ``folder``.

    Returns
    -------
    The path of the STAR file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_stack(folder / f"{name}.mrcs", stack.images, stack.pixel_size)
    names = [f"{i + 1:06d}@{name}.mrcs" for i in range(len(stack))]
    np.save(folder / f"{name}_quaternions.npy", stack.quaternions.numpy())
    return write_star(
        folder / f"{name}.star",
        stack.angles,
        stack.shifts,
        stack.pixel_size,
        stack.images.shape[-1],
        names,
        stack.ctf,
    )


def _split_image_name(entry: str) -> tuple[str, str]:
    """``"000001@Movies/a.mrcs"`` to ``("000001", "Movies/a.mrcs")``; a bare file name is image 1."""
    index, at, file = entry.partition("@")
    return (index, file) if at else ("1", entry)


def _find_stack(star: Path, entry: str, file: str, project: Path, explicit: bool) -> Path:
    """The stack file of one image name (see :func:`resolve_image_names`)."""
    given = Path(file)
    if given.is_absolute():
        if given.is_file():
            return given
        raise DatasetError(f"{star}: no such particle stack for image {entry!r}: {given}; repair the name")
    in_project, beside_star = project / given, star.parent / given
    found = [p for p in (in_project, beside_star) if p.is_file()]
    if not found:
        raise DatasetError(
            f"{star}: no such particle stack for image {entry!r}: tried {in_project.absolute()} (in the "
            f"project folder, where RELION looks) and {beside_star.absolute()} (beside the STAR file); run "
            "from the RELION project folder, or give the project folder (project_dir)"
        )
    if len(found) == 2 and not explicit and not os.path.samefile(*found):
        raise DatasetError(
            f"{star}: image {entry!r} names two different stacks, {in_project.absolute()} (in the current "
            f"folder, where RELION would look) and {beside_star.absolute()} (beside the STAR file); give "
            "the project folder (project_dir): the RELION project's, or the STAR file's own folder"
        )
    return Path(os.path.abspath(found[0]))


def resolve_image_names(
    star: str | Path, names: Sequence[str], project_dir: str | Path | None = None
) -> list[Path]:
    """The stack file of each RELION image name, found as RELION finds it.

    RELION reads the file part of ``rlnImageName`` (``000001@Extract/job005/Movies/mic1.mrcs``)
    relative to the project folder, the folder it runs in, not the STAR file's. Each file is
    taken as it is when absolute; else ``project_dir / file`` when that exists; else
    ``star.parent / file`` when that exists (a self-contained folder, such as the datasets written
    by :func:`write_particles`, with ``000001@particles.mrcs`` beside the STAR file).

    Parameters
    ----------
    star : the STAR file the names come from (for the fallback and for messages).
    names : ``rlnImageName`` entries, ``INDEX@FILE`` (a bare ``FILE`` is a single image).
    project_dir : the RELION project folder; ``None`` means the current working directory. When
        it is ``None`` and both candidates exist as different files, the choice is ambiguous and a
        :class:`DatasetError` asks for ``project_dir``.

    Returns
    -------
    One absolute stack path per name (symbolic links kept, so that a path re-pointed relative to
    an output with :func:`os.path.relpath` stays inside the project).

    Raises
    ------
    DatasetError naming the STAR file, the image name and the paths tried when a stack is missing.
    """
    star = Path(star)
    project = Path.cwd() if project_dir is None else Path(project_dir)
    found: dict[str, Path] = {}
    paths = []
    for entry in names:
        file = _split_image_name(entry)[1]
        if file not in found:
            found[file] = _find_stack(star, entry, file, project, explicit=project_dir is not None)
        paths.append(found[file])
    return paths


def _mixed_pixel_sizes(star: Path, meta: StarParticles) -> DatasetError:
    """The error for particles whose pixel sizes differ, listing each optics group's."""
    sizes = meta.pixel_sizes
    particles, optics = meta.particles_table, meta.optics_table
    if optics is not None and particles is not None and "rlnOpticsGroup" in particles.columns:
        groups = []
        for number, count in particles["rlnOpticsGroup"].value_counts(sort=False).sort_index().items():
            first = int(np.flatnonzero((particles["rlnOpticsGroup"] == number).to_numpy())[0])
            row = optics[optics["rlnOpticsGroup"] == number]
            name = f" {row['rlnOpticsGroupName'].iloc[0]!r}" if "rlnOpticsGroupName" in optics.columns else ""
            groups.append(f"optics group {number}{name}: {sizes[first]:g} Å ({count} particles)")
    else:
        values, counts = np.unique(sizes, return_counts=True)
        groups = [f"{v:g} Å ({c} particles)" for v, c in zip(values, counts, strict=True)]
    return DatasetError(
        f"{star}: the particles have different pixel sizes, {'; '.join(groups)}; one stack needs one pixel "
        "size: process one optics group at a time (split the STAR file by rlnOpticsGroup, e.g. with "
        "RELION's Subset selection) or rescale the particles to one pixel size (re-extract them)"
    )


def read_particles(
    star: str | Path, *, angles_required: bool = True, project_dir: str | Path | None = None
) -> ParticleStack:
    """Read a particle stack described by a STAR file (images from its ``rlnImageName`` entries).

    Parameters
    ----------
    star : the STAR file (RELION 3.0 or 3.1, see :func:`read_star`).
    angles_required : as in :func:`read_star`. With ``False`` and no angles in the file, the
        stack's ``angles`` are zeros and ``has_angles`` is ``False``.
    project_dir : the RELION project folder the image names are relative to; ``None`` means the
        current working directory, with the STAR file's folder as the fallback
        (:func:`resolve_image_names`).

    Returns
    -------
    :class:`ParticleStack` in the STAR file's order, at the particles' common pixel size.

    Raises
    ------
    DatasetError when a stack or image is missing, or when the particles' pixel sizes (optics
    groups) or box sizes differ: one stack has one pixel size.
    """
    star = Path(star)
    meta = read_star(star, angles_required=angles_required)
    if meta.image_names is None:
        raise DatasetError(f"{star}: no rlnImageName column, so no images to read")
    if not meta.image_names:
        raise DatasetError(f"{star}: the particle table is empty, so no images to read")
    if meta.pixel_sizes is not None and meta.pixel_size is None:
        raise _mixed_pixel_sizes(star, meta)
    paths = resolve_image_names(star, meta.image_names, project_dir)
    stacks: dict[Path, np.ndarray] = {}
    images = []
    pixel = meta.pixel_size
    for entry, mrcs in zip(meta.image_names, paths, strict=True):
        if mrcs not in stacks:
            stacks[mrcs], stack_pixel = read_stack(mrcs)
            pixel = pixel or stack_pixel
        index = _split_image_name(entry)[0]
        if not (index.isdigit() and 1 <= int(index) <= len(stacks[mrcs])):
            raise DatasetError(f"{star}: image {entry!r} is not in {mrcs.name} ({len(stacks[mrcs])} images)")
        images.append(stacks[mrcs][int(index) - 1])
    boxes = {path: stack.shape[-1] for path, stack in stacks.items()}
    if len(set(boxes.values())) > 1:
        listed = ", ".join(f"{path.name} {box} px" for path, box in boxes.items())
        raise DatasetError(
            f"{star}: the stacks have different box sizes ({listed}); process one box size at a time"
        )
    n = len(meta.image_names)
    angles = meta.angles if meta.angles is not None else np.zeros((n, 3))
    return ParticleStack(
        np.stack(images), angles, meta.shifts, float(pixel), meta.ctf, has_angles=meta.angles is not None
    )


def write_orientations(
    folder: str | Path,
    images: np.ndarray,
    quaternions: torch.Tensor,
    pixel_size: float,
    *,
    name: str = "particles",
) -> Path:
    """Write projections with (recovered, aligned) orientations as ``NAME.mrcs`` + ``NAME.star``.

    Parameters
    ----------
    folder : output folder (created).
    images : (P, D, D) projections.
    quaternions : (P, 4) their orientations (e.g. ``LearnedRecovery.alignment.aligned``).
    pixel_size : Å per pixel.
    name : file stem.

    Returns
    -------
    The STAR file's path; ``relion_reconstruct --i`` reads it.
    """
    images = np.asarray(images, dtype=np.float32)
    angles = quaternion_to_euler(torch.as_tensor(quaternions, dtype=torch.float64)).numpy()
    stack = ParticleStack(images, angles, np.zeros((len(images), 2)), float(pixel_size))
    return write_particles(folder, stack, name=name)


def write_reconstruction(
    folder: str | os.PathLike,
    volume: torch.Tensor | np.ndarray,
    voxel_size: float,
    rotations: torch.Tensor | np.ndarray,
    shifts: torch.Tensor | np.ndarray | None = None,
    *,
    images: torch.Tensor | np.ndarray | None = None,
    ctf: dict | None = None,
    name: str = "reconstruction",
) -> tuple[Path, Path]:
    """Write a reconstruction and the orientations it used, so RELION can repeat it.

    Writes ``NAME.mrc`` (the map, float32, voxel size in the header, with
    :func:`~cryoorient.density.write_map`) and ``NAME.star`` (RELION 3.1 optics and particles
    tables with ``rlnAngleRot/Tilt/Psi`` and ``rlnOriginX/YAngst``, with
    :func:`write_star`). With ``images``, also ``NAME_particles.mrcs`` and the
    STAR file's ``rlnImageName`` column, so that::

        relion_reconstruct --i NAME.star --o NAME_relion.mrc [--ctf]

    reconstructs the same particles at the same orientations (RELION normalises its map
    differently; compare the two with :func:`cryoorient.fsc.fourier_shell_correlation`).

    Parameters
    ----------
    folder : output folder (created when missing).
    volume : (D, D, D) map ``[z, y, x]``.
    voxel_size : Å per voxel, also the particles' pixel size.
    rotations : (N, 3, 3) RELION matrices used for the reconstruction (written as RELION angles
        with :func:`cryoorient.geometry.matrix_to_euler`).
    shifts : (N, 2) origins ``(x, y)`` in pixels, or ``None`` for zeros.
    images : (N, D, D) the particles, or ``None`` to write no stack.
    ctf : CTF parameters as in :class:`ParticleStack` (defoci in Å, angle in
        radians, optics), or ``None``.
    name : file stem.

    Returns
    -------
    The paths of the MRC map and of the STAR file.
    """
    vol = check_volume(volume)
    if not (math.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive number of Å; got {voxel_size!r}")
    rot = check_rotations(rotations)
    n, d = rot.shape[0], vol.shape[0]
    sh = torch.zeros(n, 2, dtype=torch.float64) if shifts is None else check_shifts(shifts, n)
    if images is not None:
        images = np.asarray(torch.as_tensor(images).detach().cpu(), dtype=np.float32)
        if images.shape != (n, d, d):
            raise ValueError(f"images must have shape ({n}, {d}, {d}) to match; got {images.shape}")
    if ctf is not None:
        for key in ("defocus_u", "defocus_v", "astigmatism_angle"):
            if np.shape(ctf[key]) != (n,):
                raise ValueError(f"ctf[{key!r}] must have shape ({n},); got {np.shape(ctf[key])}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    density = DensityMap(
        vol.detach().cpu().numpy(), voxel_size, name=name, source="cryoorient.reconstruction.reconstruct"
    )
    map_path = write_map(folder / f"{name}.mrc", density)
    names = None
    if images is not None:
        write_stack(folder / f"{name}_particles.mrcs", images, voxel_size)
        names = [f"{i + 1:06d}@{name}_particles.mrcs" for i in range(n)]
    angles = matrix_to_euler(rot.detach().cpu().to(torch.float64)).numpy()
    star_path = write_star(
        folder / f"{name}.star",
        angles,
        sh.detach().cpu().to(torch.float64).numpy(),
        voxel_size,
        d,
        names,
        ctf,
    )
    return map_path, star_path


def reconstruct_particles(
    stack: ParticleStack, rotations: torch.Tensor | np.ndarray | None = None, **kwargs
) -> ReconstructionResult:
    """Reconstruct a :class:`ParticleStack` with its shifts and CTF.

    The stack handed to :func:`cryoorient.reconstruction.reconstruct` as arrays: its images, its
    angles as RELION matrices (unless ``rotations`` are given), its shifts and its CTFs.

    Parameters
    ----------
    stack : the particles; its ``shifts`` and, when present, its CTF parameters (rebuilt with
        :func:`~cryoorient.projection.ctf_2d` at the stack's pixel size) are used.
    rotations : (N, 3, 3) RELION matrices to use instead of the stack's angles, e.g. recovered and
        aligned orientations (``quaternion_to_matrix(aligned_q)``).
    **kwargs : passed to :func:`~cryoorient.reconstruction.reconstruct` (``method``,
        ``n_iterations``, ``device``, ...).

    Returns
    -------
    :class:`~cryoorient.reconstruction.ReconstructionResult`.
    """
    images = torch.as_tensor(stack.images)
    n, d = images.shape[0], images.shape[-1]
    if rotations is None:
        rotations = euler_to_matrix(torch.as_tensor(np.asarray(stack.angles, dtype=np.float64)))
    ctf = None
    if stack.ctf is not None:
        params = stack.ctf
        ctf = ctf_2d(
            d,
            stack.pixel_size,
            defocus_u=torch.as_tensor(np.asarray(params["defocus_u"], dtype=np.float64)),
            defocus_v=torch.as_tensor(np.asarray(params["defocus_v"], dtype=np.float64)),
            astigmatism_angle=torch.as_tensor(np.asarray(params["astigmatism_angle"], dtype=np.float64)),
            voltage=params["voltage"],
            spherical_aberration=params["spherical_aberration"],
            amplitude_contrast=params["amplitude_contrast"],
            device=images.device,
        )
        if ctf.shape != (n, d, d):
            raise ValueError(
                f"the stack's CTF parameters give CTFs of shape {tuple(ctf.shape)} for {n} images"
            )
    shifts = torch.as_tensor(np.asarray(stack.shifts, dtype=np.float64))
    return reconstruct(images, rotations, shifts, ctf, **kwargs)
