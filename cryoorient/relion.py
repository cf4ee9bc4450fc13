"""RELION's file formats in one place: MRC particle stacks, STAR files, particle sets, maps + angles.

Every file the package exchanges with RELION (and with other cryo-EM programs) is read or written
here; the numerical modules (:mod:`cryoorient.projection`, :mod:`cryoorient.reconstruction`,
:mod:`cryoorient.pipeline`) do no file I/O. Maps themselves are read and written by
:func:`cryoorient.density.read_map` / :func:`~cryoorient.density.write_map`.

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

Writes are atomic (temporary file beside the target, then rename) and leave files with the mode
the umask gives (:func:`cryoorient.paths.atomic_path`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile
import torch

from cryoorient._checks import check_rotations, check_shifts, check_volume
from cryoorient.density import DensityMap, write_map
from cryoorient.geometry import euler_to_quaternion, matrix_to_euler, quaternion_to_euler
from cryoorient.paths import atomic_path

__all__ = [
    "ANGLE_COLUMNS",
    "CTF_COLUMNS",
    "CTF_OPTICS",
    "OPTICS_COLUMNS",
    "DatasetError",
    "ParticleStack",
    "StarParticles",
    "read_particles",
    "read_stack",
    "read_star",
    "write_orientations",
    "write_particles",
    "write_reconstruction",
    "write_stack",
    "write_star",
]

ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
CTF_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")
#: The optics written for every particle file: 300 kV, Cs 2.7 mm, 10 % amplitude contrast (also
#: the simulated CTF's, :func:`cryoorient.dataset.simulate_particles`).
CTF_OPTICS = {"voltage": 300.0, "spherical_aberration": 2.7, "amplitude_contrast": 0.1}
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
        ``astigmatism_angle`` (N,) radians, and scalars ``voltage`` kV, ``spherical_aberration``
        mm, ``amplitude_contrast``.
    """

    images: np.ndarray
    angles: np.ndarray
    shifts: np.ndarray
    pixel_size: float
    ctf: dict | None = None

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
    """What a STAR file says about its particles (see :func:`read_star`)."""

    angles: np.ndarray  # (N, 3) radians
    shifts: np.ndarray  # (N, 2) pixels
    pixel_size: float | None
    image_names: list[str] | None
    ctf: dict | None


def read_star(path: str | Path, pixel_size: float | None = None) -> StarParticles:
    """Read particle orientations, origins and CTF from a RELION 3.0 or 3.1 STAR file.

    RELION 3.1 files have an ``optics`` table with ``rlnImagePixelSize`` and origins in Å
    (``rlnOriginXAngst``); RELION 3.0 files have one table with origins in pixels
    (``rlnOriginX``) and the pixel size as ``rlnDetectorPixelSize`` (µm) / ``rlnMagnification``.

    Parameters
    ----------
    path : the STAR file.
    pixel_size : Å per pixel, used when the file does not say (needed to convert Å origins).

    Returns
    -------
    :class:`StarParticles` with angles in radians and origins in pixels (zeros when absent).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such STAR file")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as error:  # starfile raises assorted parser errors
        raise DatasetError(f"{path}: not a readable STAR file ({error})") from error
    tables = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    particles = tables.get("particles")
    if particles is None:
        with_angles = [v for v in tables.values() if "rlnAngleRot" in v.columns]
        particles = with_angles[0] if with_angles else next(iter(tables.values()), None)
    if particles is None or not set(ANGLE_COLUMNS) <= set(particles.columns):
        have = [] if particles is None else list(particles.columns)
        raise DatasetError(
            f"{path}: no particle table with {', '.join(ANGLE_COLUMNS)}; "
            f"columns found: {', '.join(have) or 'none'}"
        )
    optics = tables.get("optics")

    def optics_value(column: str):
        if optics is not None and column in optics.columns:
            return float(optics[column].iloc[0])
        return float(particles[column].iloc[0]) if column in particles.columns else None

    star_pixel = optics_value("rlnImagePixelSize")
    if star_pixel is None and {"rlnDetectorPixelSize", "rlnMagnification"} <= set(particles.columns):
        star_pixel = (
            float(particles["rlnDetectorPixelSize"].iloc[0])
            * 1e4
            / float(particles["rlnMagnification"].iloc[0])
        )
    pixel = star_pixel if star_pixel is not None else pixel_size

    # copy=True: pandas 3 hands out read-only views, and torch.from_numpy warns about those
    angles = np.radians(particles[list(ANGLE_COLUMNS)].to_numpy(dtype=np.float64, copy=True))
    if {"rlnOriginXAngst", "rlnOriginYAngst"} <= set(particles.columns):
        if pixel is None:
            raise DatasetError(
                f"{path}: origins are in Å but the file gives no pixel size; pass the pixel size"
            )
        origins = particles[["rlnOriginXAngst", "rlnOriginYAngst"]]
        shifts = origins.to_numpy(dtype=np.float64, copy=True) / pixel
    elif {"rlnOriginX", "rlnOriginY"} <= set(particles.columns):
        shifts = particles[["rlnOriginX", "rlnOriginY"]].to_numpy(dtype=np.float64, copy=True)
    else:
        shifts = np.zeros((len(particles), 2))
    names = particles["rlnImageName"].astype(str).tolist() if "rlnImageName" in particles.columns else None
    ctf = None
    if set(CTF_COLUMNS[:2]) <= set(particles.columns):
        n = len(particles)
        ctf = {
            "defocus_u": particles["rlnDefocusU"].to_numpy(dtype=np.float64, copy=True),
            "defocus_v": particles["rlnDefocusV"].to_numpy(dtype=np.float64, copy=True),
            "astigmatism_angle": np.radians(
                particles["rlnDefocusAngle"].to_numpy(dtype=np.float64, copy=True)
                if "rlnDefocusAngle" in particles.columns
                else np.zeros(n)
            ),
            "voltage": optics_value("rlnVoltage") or 300.0,
            "spherical_aberration": optics_value("rlnSphericalAberration") or 2.7,
            "amplitude_contrast": optics_value("rlnAmplitudeContrast") or 0.1,
        }
    return StarParticles(angles=angles, shifts=shifts, pixel_size=pixel, image_names=names, ctf=ctf)


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


def read_particles(star: str | Path) -> ParticleStack:
    """Read a particle stack described by a STAR file (images from its ``rlnImageName`` entries)."""
    star = Path(star)
    meta = read_star(star)
    if meta.image_names is None:
        raise DatasetError(f"{star}: no rlnImageName column, so no images to read")
    stacks: dict[Path, np.ndarray] = {}
    images = []
    pixel = meta.pixel_size
    for entry in meta.image_names:
        index, _, file = entry.partition("@")
        mrcs = (star.parent / file).resolve()
        if mrcs not in stacks:
            stacks[mrcs], stack_pixel = read_stack(mrcs)
            pixel = pixel or stack_pixel
        try:
            images.append(stacks[mrcs][int(index) - 1])
        except (ValueError, IndexError) as error:
            raise DatasetError(
                f"{star}: image {entry!r} is not in {mrcs.name} ({len(stacks[mrcs])} images)"
            ) from error
    return ParticleStack(np.stack(images), meta.angles, meta.shifts, float(pixel), meta.ctf)


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
