"""The common-lines baseline: orientations from the images themselves, by ASPIRE.

Any two projections of one map share a central line in Fourier space (the Fourier slice
theorem): the intersection of their two central planes. Finding that line in each pair of
images, then finding orientations consistent with all the lines at once (synchronization), is
the standard ab-initio route the paper did not compare with. We do not write it again: ASPIRE
(``aspire`` on the package index, Princeton's Singer and Shkolnisky groups) implements it well.

* :func:`common_lines_orientations` runs ASPIRE's ``CLSyncVoting`` (common lines found by polar
  Fourier correlation, made robust by voting over third images, then the synchronization
  matrix's top eigenvectors) on a stack, after downsampling it in Fourier space (fewer radial
  samples: faster, and at low SNR the discarded high frequencies are mostly noise).
* :func:`class_averages` makes 2-D class averages as practitioners do before common lines at low
  SNR: ASPIRE's rotation-invariant classification (``RIRClass2D``), classes chosen so that no
  class's reference image is a member of a class chosen before (repulsion, for coverage), and
  the members aligned in-plane and averaged (``BFTAverager2D``). Each average lies in its
  reference image's frame, so the true orientation of an average is that of its reference.

Conventions: ASPIRE's rotation ``R_i`` of an image maps image axes into the volume frame; our
(RELION's) ``A_i = R(q_i)`` maps volume into image coordinates, so ``A_i = R_iᵀ`` (checked in the
tests: the registration error of clean 5j0n projections is below 0.01 rad with ``R_iᵀ`` and about
1.4 rad with ``R_i``). ASPIRE is optional (the ``notebooks`` extra installs it);
:func:`aspire_version` says whether it can be imported.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from cryoorient._checks import check_positive_int
from cryoorient._memory import release_free_memory
from cryoorient.geometry import matrix_to_quaternion

__all__ = [
    "ASPIRE_PIN",
    "ClassAverages",
    "CommonLinesResult",
    "aspire_version",
    "class_averages",
    "common_lines_orientations",
]

ASPIRE_PIN = "0.14.3"
"""The ASPIRE version the notebooks extra installs and the committed numbers were made with."""


def aspire_version() -> str | None:
    """The installed ASPIRE version, or ``None`` when ``import aspire`` would fail."""
    try:
        version = importlib.metadata.version("aspire")
        import aspire  # noqa: F401
    except (importlib.metadata.PackageNotFoundError, ImportError):
        return None
    return version


def _require_aspire() -> None:
    if aspire_version() is None:
        raise ImportError(
            f"the common-lines baseline needs ASPIRE: pip install aspire=={ASPIRE_PIN} "
            "(`make install` brings it with the notebooks extra)"
        )


def _source(images: np.ndarray | torch.Tensor, pixel_size: float, box_size: int | None, name: str):
    """An ASPIRE image source of a ``(N, D, D)`` stack, Fourier-downsampled to ``box_size``.

    Callers check :func:`_require_aspire` first (before their own ASPIRE imports).
    """
    from aspire.image import Image
    from aspire.source import ArrayImageSource

    stack = np.asarray(torch.as_tensor(images).detach().cpu(), dtype=np.float64)
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2] or len(stack) < 3:
        raise ValueError(f"{name} must be a stack of at least 3 square images (N, D, D); got {stack.shape}")
    if not np.isfinite(stack).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    if not np.isfinite(pixel_size) or pixel_size <= 0:
        raise ValueError(f"pixel_size must be a positive number of Å; got {pixel_size!r}")
    source = ArrayImageSource(Image(stack, pixel_size=float(pixel_size)))
    if box_size is not None and check_positive_int("box_size", box_size) < stack.shape[-1]:
        source = source.downsample(int(box_size))
    return source


@contextmanager
def _quiet_aspire(progress: bool) -> Iterator[None]:
    """Errors only from ASPIRE's logger, and its progress bars only when ``progress``.

    ASPIRE logs every step at INFO (and harmless covariance warnings); both settings are
    restored afterwards. One NumPy warning is silenced while ASPIRE runs: its covariance shrinkage
    (``aspire.covariance.covar2d.shrink_covar``) writes the eigenvalues of a symmetric matrix,
    complex-typed by ``scipy.linalg.eig`` but real up to rounding, into a real array, which NumPy 2.5 reports
    as a ``ComplexWarning`` (NumPy 2.4 cast them silently).
    """
    import aspire

    logger = logging.getLogger("aspire")
    level, disabled = logger.level, aspire.config["logging"]["tqdm_disable"].get()
    logger.setLevel(logging.ERROR)
    aspire.config["logging"]["tqdm_disable"] = not progress
    try:
        with warnings.catch_warnings():
            message = "Casting complex values to real discards the imaginary part"
            warnings.filterwarnings("ignore", message, np.exceptions.ComplexWarning)
            yield
    finally:
        logger.setLevel(level)
        aspire.config["logging"]["tqdm_disable"] = disabled


@dataclass(frozen=True)
class CommonLinesResult:
    """Orientations found by common lines.

    Attributes
    ----------
    quaternions : (N, 4) float64 unit quaternions, scalar first, in RELION's convention (as the
        rest of the package), defined up to a global rotation and the mirror.
    seconds : wall time of ASPIRE's estimation (common-line search, voting, synchronization).
    box_size : edge of the images common lines ran on, pixels.
    n_theta : number of in-plane angles of the polar Fourier transform.
    """

    quaternions: torch.Tensor
    seconds: float
    box_size: int
    n_theta: int


def common_lines_orientations(
    images: np.ndarray | torch.Tensor,
    pixel_size: float,
    *,
    box_size: int | None = 32,
    n_theta: int = 180,
    seed: int = 0,
    progress: bool = False,
) -> CommonLinesResult:
    """Orientations of a stack of centred projections by ASPIRE's ``CLSyncVoting``.

    Parameters
    ----------
    images : (N, D, D) projections, N >= 3 (noisy or class averages).
    pixel_size : Å per pixel of ``images``.
    box_size : Fourier-downsample to this edge first (``None``: as given); from 64 px of 4.3 Å,
        32 px keep detail to a Nyquist of 17 Å and make the search several times faster.
    n_theta : in-plane angles of the polar grid (ASPIRE's default is 360).
    seed : seed of the random choices ASPIRE draws from NumPy's global generator. The result
        is reproducible to about 1e-10 (scipy's ``eigsh`` draws its start vector itself).
    progress : show ASPIRE's progress bar of the common-line search.

    Returns
    -------
    A :class:`CommonLinesResult`.
    """
    check_positive_int("n_theta", n_theta)
    if n_theta % 2:
        raise ValueError(f"n_theta must be even (ASPIRE pairs each line with its opposite); got {n_theta}")
    _require_aspire()
    from aspire.abinitio import CLSyncVoting
    from aspire.utils.random import Random

    start = time.perf_counter()
    with _quiet_aspire(progress), Random(seed):
        source = _source(images, pixel_size, box_size, "images")
        estimator = CLSyncVoting(source, n_theta=int(n_theta))
        estimator.estimate_rotations()
        rotations = np.asarray(estimator.rotations, dtype=np.float64)
    seconds = time.perf_counter() - start
    box = int(source.L)
    del source, estimator
    release_free_memory()  # the common-lines matrices and voting temporaries otherwise stay resident
    matrices = torch.from_numpy(np.ascontiguousarray(rotations.transpose(0, 2, 1)))  # A_i = R_iᵀ
    return CommonLinesResult(matrix_to_quaternion(matrices), seconds, box, int(n_theta))


@dataclass(frozen=True)
class ClassAverages:
    """2-D class averages of a stack.

    Attributes
    ----------
    images : (K, d, d) float64 averages at the classification's box size.
    references : (K,) indices into the input stack of each class's reference image (the average
        lies in its frame, so the reference's orientation is the average's).
    members : (K, n_neighbours) indices of the images averaged in each class (reference first).
    pixel_size : Å per pixel of ``images``.
    seconds : wall time of classification, selection and averaging.
    """

    images: np.ndarray
    references: np.ndarray
    members: np.ndarray
    pixel_size: float
    seconds: float


def class_averages(
    images: np.ndarray | torch.Tensor,
    pixel_size: float,
    n_classes: int,
    *,
    n_neighbours: int = 10,
    box_size: int | None = 32,
    seed: int = 0,
    allow_fewer: bool = False,
    progress: bool = False,
) -> ClassAverages:
    """``n_classes`` class averages of a stack by ASPIRE (classification, selection, averaging).

    Parameters
    ----------
    images : (N, D, D) projections, N > n_classes.
    pixel_size : Å per pixel of ``images``.
    n_classes : averages to make, K.
    n_neighbours : images per class, the reference included.
    box_size : Fourier-downsample to this edge first (``None``: as given).
    seed : seed of ASPIRE's randomized PCA and nearest-neighbour search.
    allow_fewer : when the selector keeps fewer than ``n_classes`` classes, return those it kept
        instead of raising ``ValueError``. Clean stacks do this: their neighbourhoods overlap, and
        a class whose reference already belongs to a better class is dropped (306 of 400 asked
        for from 1,650 noiseless 64-px projections of 5j0n with 10 neighbours).
    progress : show ASPIRE's progress bars.

    Returns
    -------
    :class:`ClassAverages` of the K classes whose nearest-neighbour distances vary least
    (ASPIRE's ``NeighborVarianceWithRepulsionClassSelector``: no reference that is already a
    member of a better class), in that order.
    """
    n_classes = check_positive_int("n_classes", n_classes)
    n_neighbours = check_positive_int("n_neighbours", n_neighbours, minimum=2)
    n = len(images)
    if n_classes * 2 > n:
        raise ValueError(f"{n} images are too few for {n_classes} classes; give at least {2 * n_classes}")
    _require_aspire()
    from aspire.basis import FFBBasis2D
    from aspire.classification import (
        BFTAverager2D,
        NeighborVarianceWithRepulsionClassSelector,
        RIRClass2D,
    )
    from aspire.utils.random import Random

    start = time.perf_counter()
    with _quiet_aspire(progress), Random(seed):
        source = _source(images, pixel_size, box_size, "images")
        # ASPIRE's DefaultClassAvgSource settings (400 and 300 components), fewer for small stacks
        fspca = min(400, n)
        classifier = RIRClass2D(
            source, fspca_components=fspca, bispectrum_components=min(300, int(0.75 * fspca)),
            n_nbor=n_neighbours, large_pca_implementation="legacy", nn_implementation="sklearn",
            bispectrum_implementation="legacy", seed=seed,
        )
        classes, reflections, distances = classifier.classify()
        # ASPIRE's ClassAvgSource cannot index the averages after a selector that drops classes
        # (0.14.3: IndexError), so the selection and the averaging are called directly.
        order = NeighborVarianceWithRepulsionClassSelector().select(classes, reflections, distances)
        if len(order) < n_classes and not (allow_fewer and len(order) > 0):
            raise ValueError(
                f"ASPIRE selected {len(order)} classes, fewer than the {n_classes} asked for; ask for fewer, "
                "or pass allow_fewer=True to take those it selected"
            )
        chosen = np.asarray(order[:n_classes], dtype=np.int64)
        averager = BFTAverager2D(
            composite_basis=FFBBasis2D(source.L, dtype=source.dtype), src=source, dtype=source.dtype
        )
        stack = averager.average(classes[chosen], reflections[chosen]).asnumpy().astype(np.float64)
    members = np.asarray(classes[chosen], dtype=np.int64)
    seconds = time.perf_counter() - start
    averages_pixel_size = float(source.pixel_size)  # after the downsampling
    del source, classifier, averager, classes, reflections, distances
    release_free_memory()  # ASPIRE's temporaries (bispectrum, PCA) otherwise stay resident
    return ClassAverages(stack, members[:, 0].copy(), members, averages_pixel_size, seconds)
