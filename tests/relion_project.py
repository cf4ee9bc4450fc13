"""A miniature RELION project on disk, as RELION's Extract job leaves one, for tests.

``make_relion_project(root)`` writes, under ``root`` (the project folder, where RELION runs)::

    Extract/job005/particles.star        RELION 3.1: two optics groups, particles without angles
    Extract/job005/Movies/mic1.mrcs      the particles of micrograph 1 (optics group 1)
    Extract/job005/Movies/mic2.mrcs      the particles of micrograph 2 (optics group 2)

The STAR file is written as text in RELION's own layout (fixed-precision numbers, ``# version
30001``), not with :mod:`cryoorient.relion`, so that it is an independent input. Its image names
(``000001@Extract/job005/Movies/mic1.mrcs``) are relative to the project folder, as RELION writes
them. Particles alternate between the two micrographs, so reading them in the STAR file's order
takes images from both stacks in turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

JOB = Path("Extract/job005")


@dataclass
class RelionProject:
    """What :func:`make_relion_project` wrote.

    Attributes
    ----------
    root : the project folder.
    star : ``root / "Extract/job005/particles.star"`` (absolute when ``root`` is).
    images : (N, box, box) float32 images in the STAR file's order.
    groups : (N,) optics group (1 or 2) of each particle.
    pixel_sizes : (N,) Å per pixel of each particle (its group's).
    image_names : the N ``rlnImageName`` entries.
    stacks : the two ``.mrcs`` files, micrograph 1's then 2's.
    """

    root: Path
    star: Path
    images: np.ndarray
    groups: np.ndarray
    pixel_sizes: np.ndarray
    image_names: list[str]
    stacks: tuple[Path, Path]


def make_relion_project(
    root: str | Path,
    *,
    n: int = 6,
    box: int = 16,
    pixel_sizes: tuple[float, float] = (1.5, 1.5),
    voltages: tuple[float, float] = (200.0, 300.0),
    spherical_aberrations: tuple[float, float] = (2.7, 2.0),
    amplitude_contrasts: tuple[float, float] = (0.1, 0.07),
    images: np.ndarray | None = None,
    origins_angst: np.ndarray | None = None,
    extra_blocks: Sequence[str] = (),
    seed: int = 0,
) -> RelionProject:
    """Write an Extract job's particles with two optics groups under the project folder ``root``.

    Parameters
    ----------
    root : the project folder (created).
    n : number of particles (>= 2); particle ``i`` (0-based) is on micrograph ``i % 2 + 1``, in
        optics group ``i % 2 + 1``, image ``i // 2 + 1`` of that micrograph's stack.
    box : image size in pixels (the optics table's ``rlnImageSize``).
    pixel_sizes, voltages, spherical_aberrations, amplitude_contrasts : each optics group's, in Å,
        kV, mm and as a fraction.
    images : (n, box, box) the particles in STAR order; random normal when omitted.
    origins_angst : (n, 2) ``rlnOriginX/YAngst`` in Å to write; no origin columns when omitted
        (as from Extract).
    extra_blocks : STAR text of further data blocks (``"data_general\\n\\n_rlnX 1\\n"``) appended
        after the particles.
    seed : seed of the random images, coordinates and defoci.

    Returns
    -------
    :class:`RelionProject`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.standard_normal((n, box, box)).astype(np.float32)
    images = np.asarray(images, dtype=np.float32)
    groups = np.arange(n) % 2 + 1
    movies = root / JOB / "Movies"
    movies.mkdir(parents=True, exist_ok=True)
    stacks = (movies / "mic1.mrcs", movies / "mic2.mrcs")
    for g, path in enumerate(stacks):
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(images[groups == g + 1])
            mrc.set_image_stack()
            mrc.voxel_size = pixel_sizes[g]
    names = [f"{i // 2 + 1:06d}@{JOB.as_posix()}/Movies/mic{groups[i]}.mrcs" for i in range(n)]

    lines = ["", "# version 30001", "", "data_optics", "", "loop_ "]
    optics_columns = ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMicrographOriginalPixelSize", "rlnVoltage",
                      "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
                      "rlnImageDimensionality"]
    lines += [f"_{c} #{i + 1} " for i, c in enumerate(optics_columns)]
    for g in range(2):
        lines.append(
            f"opticsGroup{g + 1}            {g + 1}     0.885000   {voltages[g]:.6f}     "
            f"{spherical_aberrations[g]:.6f}     {amplitude_contrasts[g]:.6f}     {pixel_sizes[g]:.6f}"
            f"           {box}            2 "
        )
    lines += ["", "", "# version 30001", "", "data_particles", "", "loop_ "]
    particle_columns = ["rlnCoordinateX", "rlnCoordinateY", "rlnImageName", "rlnMicrographName",
                        "rlnOpticsGroup", "rlnCtfMaxResolution", "rlnCtfFigureOfMerit", "rlnDefocusU",
                        "rlnDefocusV", "rlnDefocusAngle", "rlnCtfBFactor", "rlnCtfScalefactor",
                        "rlnPhaseShift", "rlnRandomSubset"]
    if origins_angst is not None:
        particle_columns += ["rlnOriginXAngst", "rlnOriginYAngst"]
    lines += [f"_{c} #{i + 1} " for i, c in enumerate(particle_columns)]
    for i in range(n):
        defocus = rng.uniform(1e4, 2.5e4)
        row = (
            f"{rng.uniform(50, 3000):12.6f} {rng.uniform(50, 3000):12.6f} {names[i]} "
            f"MotionCorr/job002/Movies/mic{groups[i]}.mrc {groups[i]:12d} {rng.uniform(3, 8):12.6f} "
            f"{rng.uniform(0, 0.3):12.6f} {defocus:12.6f} {defocus - rng.uniform(0, 500):12.6f} "
            f"{rng.uniform(-90, 90):12.6f} {0.0:12.6f} {1.0:12.6f} {0.0:12.6f} {i % 2 + 1:12d}"
        )
        if origins_angst is not None:
            row += f" {origins_angst[i, 0]:12.6f} {origins_angst[i, 1]:12.6f}"
        lines.append(row + " ")
    lines += ["", ""]
    text = "\n".join(lines) + "".join(f"\n{block}\n" for block in extra_blocks)
    star = root / JOB / "particles.star"
    star.write_text(text)
    return RelionProject(
        root=root,
        star=star,
        images=images,
        groups=groups,
        pixel_sizes=np.asarray(pixel_sizes, dtype=np.float64)[groups - 1],
        image_names=names,
        stacks=stacks,
    )
