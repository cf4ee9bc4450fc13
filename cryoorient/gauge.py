"""Fix the gauge of orientations recovered from distances, from the images alone (common lines).

Distances ``d_q`` are invariant under all of O(4), so orientations recovered from them
(:func:`cryoorient.recovery.recover_orientations`) are the true ones up to ``q ↦ a·q·b`` or
``q ↦ a·q̄·b``. With RELION's ``A = R(q)`` (volume → image coordinates) the images fix part of that
group (see notebook 04, section 4):

* the right factor ``b`` rotates the whole map; the images are the same. Unresolvable, harmless;
* ``q ↦ k·q·k̄``, ``k = (0, 0, 0, 1)`` (``A ↦ J A J``, ``J = diag(1, 1, -1)``) gives the same images of
  the mirror-image map. Unresolvable (handedness);
* any other left factor ``a``, and the improper class ``q ↦ a·q̄`` (every ``A`` becomes ``Aᵀ``),
  change what the images mean. :func:`fix_gauge` finds them from the images.

Common lines. By the Fourier-slice theorem the 2-D transform of image ``i`` at in-plane frequency
``u`` is the volume's 3-D transform at ``A_iᵀ (u, 0)``. Two central slices share the line along
``n ∝ v_i × v_j`` (``v_i = A_iᵀ e_z``, the viewing direction), which lies in image ``i`` along
``A_i n`` and in image ``j`` along ``A_j n``::

    p̂_i(r A_i n) = V̂(r n) = p̂_j(r A_j n)        for every radius r.

So a candidate gauge ``(a, class)`` predicts, for each pair of images, one line in each; the score
is the mean over many random pairs of the normalised correlation
``Re <ℓ_i, ℓ_j> / (‖ℓ_i‖ ‖ℓ_j‖)`` of the two predicted lines, low-passed (radii ``1 .. r_max``
pixels of frequency, each radius weighted by the inverse RMS of all lines there, so low
frequencies do not dominate). Single pairs are unreliable on noisy images, but the gauge has only
three parameters and a class, and the mean over thousands of pairs is not.

Search. The lines of every image are tabulated at ``n_angles`` in-plane angles (bilinear
interpolation of the 2×-padded transform), and for each pair the ``(n_angles, n_angles)`` table of
line correlations is computed once; a candidate's score is then a bilinear look-up per pair. The
search scores ``n_candidates`` Haar-random rotations ``a`` in both classes, then refines the best
few of each class by Nelder-Mead over a rotation vector, scoring with lines interpolated at the
exact predicted angles on a fresh, larger set of pairs.

Not handled: CTFs (phase-flip the images first) and heterogeneous particles. Shifts are undone
when given.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation
from tqdm.auto import tqdm

from cryoorient._checks import check_images, resolve_device
from cryoorient.geometry import (
    canonical_quaternion,
    matrix_to_quaternion,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_to_matrix,
)
from cryoorient.projection import shift_images

__all__ = ["GAUGE_CLASSES", "GaugeResult", "apply_gauge", "common_line_score", "fix_gauge"]

#: The two classes of O(4) that the images distinguish: ``q ↦ a·q`` and ``q ↦ a·q̄``.
GAUGE_CLASSES = ("proper", "improper")

Device = torch.device | str | None


@dataclass(frozen=True)
class GaugeResult:
    """Orientations made consistent with their images.

    Attributes
    ----------
    quaternions : (P, 4) corrected orientations ``a·q`` or ``a·q̄``, unit, ``w >= 0``, float64,
        on the input quaternions' device. Still defined up to a global right factor ``q ↦ q·b``
        (a rotation of the map) and the mirror ``q ↦ k·q·k̄``, which images cannot fix.
    left : (4,) the left factor ``a``, unit quaternion, scalar first.
    gauge_class : ``"proper"`` (``q ↦ a·q``) or ``"improper"`` (``q ↦ a·q̄``, every ``A`` transposed).
    score : mean common-line correlation of the result on the refinement pairs (in ``[-1, 1]``).
    other_score : the best score found in the other class (how clearly the class is decided).
    seconds : wall-clock time.
    """

    quaternions: torch.Tensor
    left: torch.Tensor
    gauge_class: str
    score: float
    other_score: float
    seconds: float


def apply_gauge(
    quaternions: torch.Tensor | np.ndarray, left: torch.Tensor | np.ndarray, gauge_class: str
) -> torch.Tensor:
    """``q ↦ a·q`` (``"proper"``) or ``q ↦ a·q̄`` (``"improper"``).

    Parameters
    ----------
    quaternions : (P, 4) unit quaternions, scalar first.
    left : (4,) unit quaternion ``a``.
    gauge_class : one of :data:`GAUGE_CLASSES`.

    Returns
    -------
    (P, 4) float64 unit quaternions with ``w >= 0``.
    """
    if gauge_class not in GAUGE_CLASSES:
        raise ValueError(f"gauge_class must be one of {GAUGE_CLASSES}; got {gauge_class!r}")
    q = torch.as_tensor(quaternions).to(torch.float64)
    a = torch.as_tensor(left).to(device=q.device, dtype=torch.float64)
    if q.ndim != 2 or q.shape[1] != 4 or a.shape != (4,):
        raise ValueError(
            f"expected (P, 4) quaternions and a (4,) left factor; got {tuple(q.shape)}, {tuple(a.shape)}"
        )
    if gauge_class == "improper":
        q = quaternion_conjugate(q)
    out = quaternion_multiply(a / torch.linalg.vector_norm(a), q)
    return canonical_quaternion(out / torch.linalg.vector_norm(out, dim=1, keepdim=True))


# --- Fourier lines -----------------------------------------------------------------------------


class _Lines:
    """Low-passed central Fourier lines of a stack, interpolated at any in-plane angle.

    The centred transform of each image, zero-padded to ``2 D`` (so frequencies are sampled every
    half pixel of frequency), is kept inside the disc of radius ``r_max`` only.
    """

    def __init__(self, images: torch.Tensor, r_max: float, radial_step: float = 0.5):
        p, d, _ = images.shape
        pad = 2
        n = pad * d
        lo = n // 2 - d // 2
        padded = torch.zeros(p, n, n, dtype=images.dtype, device=images.device)
        padded[:, lo : lo + d, lo : lo + d] = images  # image centre D // 2 lands on N // 2
        spectrum = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(padded, dim=(-2, -1))), dim=(-2, -1))
        half = int(math.ceil(pad * r_max)) + 2
        c = n // 2
        self.window = spectrum[:, c - half : c + half + 1, c - half : c + half + 1].contiguous()  # (P, w, w)
        self.centre = half
        self.pad = pad
        self.radii = torch.arange(1.0, r_max + 1e-9, radial_step, dtype=images.dtype, device=images.device)
        self.weights = torch.ones_like(self.radii)
        # Whiten radially, so that every radius weighs the same in a correlation. (Removing each
        # image's rotational average as well sharpens the score on blobby maps but amplifies the
        # interpolation error of the remainder, which biased the optimum on the tests' 32-px maps.)
        probe = torch.arange(72, dtype=images.dtype, device=images.device) * (2 * math.pi / 72)
        index = torch.arange(p, device=images.device)[:, None].expand(p, 72)
        rms = self._raw(index, probe.expand(p, 72)).abs().pow(2).mean(dim=(0, 1)).sqrt()
        self.weights = 1 / rms.clamp(min=1e-30)

    def _raw(self, index: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Bilinearly interpolated transform of images ``index`` along ``angles``: (..., R) complex."""
        w = self.window.shape[-1]
        angles = angles.to(self.radii.dtype)
        x = self.centre + self.pad * self.radii * torch.cos(angles)[..., None]  # (..., R) column
        y = self.centre + self.pad * self.radii * torch.sin(angles)[..., None]  # (..., R) row
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        x0, y0 = x0.long().clamp(0, w - 2), y0.long().clamp(0, w - 2)
        flat = self.window.reshape(-1)
        base = index[..., None] * (w * w) + y0 * w + x0
        return (
            flat[base] * ((1 - fx) * (1 - fy))
            + flat[base + 1] * (fx * (1 - fy))
            + flat[base + w] * ((1 - fx) * fy)
            + flat[base + w + 1] * (fx * fy)
        )

    def sample(self, index: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Whitened, unit-norm lines of images ``index`` at ``angles``.

        Parameters
        ----------
        index : (...) image indices.
        angles : (...) in-plane angles, radians, from the image's x axis towards y.

        Returns
        -------
        (..., R) complex lines, each of unit norm.
        """
        line = self._raw(index, angles) * self.weights
        norm = (line.real.square() + line.imag.square()).sum(-1, keepdim=True).sqrt()
        return line / norm.clamp(min=1e-30)


def _pair_rotations(rot_i: torch.Tensor, rot_j: torch.Tensor) -> torch.Tensor:
    """(K, 9) flattened ``R_i R_jᵀ``: all a pair contributes to its common-line angles."""
    return (rot_i @ rot_j.transpose(-1, -2)).reshape(-1, 9)


def _candidate_angles(matrices: torch.Tensor, relative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """In-plane angles of each pair's common line, for candidate left factors ``M`` (``A = M R``).

    With ``m_1, m_2, m_3`` the rows of ``M``, ``R_ij = R_i R_jᵀ`` and ``n = v_i × v_j`` (``v = Aᵀ e_z =
    Rᵀ m_3``), rotating the cross product gives ``R_i n = m_3 × R_ij m_3`` and
    ``R_j n = R_ijᵀ m_3 × m_3``, so the line ``A_i n = M R_i n`` in image ``i`` points along
    ``(x, y) = (-<R_ij, m_2 m_3ᵀ>, <R_ij, m_1 m_3ᵀ>)`` and ``A_j n`` in image ``j`` along
    ``(<R_ij, m_3 m_2ᵀ>, -<R_ij, m_3 m_1ᵀ>)`` (``<X, Y>`` the Frobenius product): four matrix
    products for all candidates and pairs at once.

    Parameters
    ----------
    matrices : (C, 3, 3) candidate rotations ``M``.
    relative : (K, 9) :func:`_pair_rotations`.

    Returns
    -------
    (C, K) angles in image ``i`` and in image ``j``, radians.
    """
    m1, m2, m3 = matrices[:, 0], matrices[:, 1], matrices[:, 2]  # (C, 3)

    def outer(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u[:, :, None] * v[:, None, :]).reshape(-1, 9)  # (C, 9)

    rt = relative.T.to(matrices.dtype)  # (9, K)
    angle_i = torch.atan2(outer(m1, m3) @ rt, -(outer(m2, m3) @ rt))
    angle_j = torch.atan2(-(outer(m3, m1) @ rt), outer(m3, m2) @ rt)
    return angle_i, angle_j


def _random_pairs(p: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random pairs ``i != j`` (with repetition across pairs)."""
    i = rng.integers(0, p, count)
    j = (i + rng.integers(1, p, count)) % p
    return i, j


def _class_rotations(quaternions: torch.Tensor, gauge_class: str) -> torch.Tensor:
    """``R(q)`` for the proper class, ``R(q)ᵀ = R(q̄)`` for the improper one."""
    rot = quaternion_to_matrix(quaternions)
    return rot.transpose(-1, -2) if gauge_class == "improper" else rot


def common_line_score(
    images: torch.Tensor | np.ndarray,
    quaternions: torch.Tensor | np.ndarray,
    *,
    n_pairs: int = 3000,
    max_radius: float | None = None,
    shifts: torch.Tensor | np.ndarray | None = None,
    seed: int | np.random.Generator = 0,
) -> float:
    """Mean common-line correlation of images with the orientations given (no gauge search).

    Parameters
    ----------
    images : (P, D, D) projections ``[y, x]``, origin at ``D // 2``.
    quaternions : (P, 4) their orientations (RELION's ``A = R(q)``).
    n_pairs : random pairs averaged over.
    max_radius : low-pass, in pixels of frequency (cycles per box); ``D / 8`` when ``None``.
    shifts : (P, 2) RELION origins in pixels to undo first, or ``None``.
    seed : seed of the pairs.

    Returns
    -------
    The mean over pairs of ``Re <ℓ_i, ℓ_j>`` for unit-norm, radially whitened lines: near 1 for
    clean images at their true orientations, near the background level for wrong ones.
    """
    img, q = _check_inputs(images, quaternions, shifts, 2)
    lines = _Lines(img.to(torch.float32), max_radius if max_radius is not None else img.shape[-1] / 8)
    i, j = _random_pairs(len(q), int(n_pairs), np.random.default_rng(seed))
    rot = quaternion_to_matrix(q)
    eye = torch.eye(3, dtype=torch.float64)[None]
    a_i, a_j = _candidate_angles(eye, _pair_rotations(rot[i], rot[j]))
    li = lines.sample(torch.from_numpy(i), a_i[0])
    lj = lines.sample(torch.from_numpy(j), a_j[0])
    return float((li * lj.conj()).real.sum(-1).mean())


def _check_inputs(images, quaternions, shifts, min_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    img = check_images(images)
    if img.ndim != 3 or img.shape[1] != img.shape[2]:
        raise ValueError(f"images must be a stack of square images (P, D, D); got shape {tuple(img.shape)}")
    q = torch.as_tensor(quaternions)
    if q.ndim != 2 or q.shape[1] != 4:
        raise ValueError(f"quaternions must have shape (P, 4); got {tuple(q.shape)}")
    if q.shape[0] != img.shape[0]:
        raise ValueError(f"got {q.shape[0]} quaternions for {img.shape[0]} images")
    if img.shape[0] < min_images:
        raise ValueError(f"gauge fixing needs at least {min_images} images; got {img.shape[0]}")
    q = q.detach().cpu().to(torch.float64)
    if not torch.isfinite(q).all() or float(torch.linalg.vector_norm(q, dim=1).min()) < 1e-12:
        raise ValueError("quaternions contain NaN, infinite or zero rows")
    q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True)
    img = img.detach().cpu()
    if shifts is not None:
        # an origin s moved the particle by -s (RELION); shift_images(img, -s) moves it back by +s
        img = shift_images(img, -torch.as_tensor(shifts).detach().cpu().to(torch.float64))
    return img, q


def fix_gauge(
    images: torch.Tensor | np.ndarray,
    quaternions: torch.Tensor | np.ndarray,
    *,
    shifts: torch.Tensor | np.ndarray | None = None,
    n_candidates: int = 4000,
    n_pairs: int = 3000,
    n_refine_pairs: int = 15000,
    n_refine: int = 3,
    n_angles: int = 90,
    max_radius: float | None = None,
    seed: int | np.random.Generator = 0,
    device: Device = None,
    progress: bool = True,
) -> GaugeResult:
    """Find the left factor and class that make recovered orientations consistent with the images.

    Searches ``a ∈ SO(3)`` and the class (``q ↦ a·q`` or ``q ↦ a·q̄``) for the highest mean
    common-line correlation (module docstring), using no true orientation.

    Parameters
    ----------
    images : (P, D, D) projections ``[y, x]``, origin at ``D // 2`` (noisy is fine: the score
        averages over pairs; normalisation does not matter).
    quaternions : (P, 4) orientations recovered from distances, scalar first, any gauge.
    shifts : (P, 2) RELION origins ``(x, y)`` in pixels, undone before the lines are taken, or
        ``None`` for centred particles.
    n_candidates : Haar-random rotations ``a`` scored in each class.
    n_pairs : random image pairs of the coarse search (its table takes
        ``n_pairs · n_angles² · 4`` bytes: 97 MB at the defaults).
    n_refine_pairs : fresh random pairs scored by the refinement. Their number sets the precision on
        noisy images: on 1,650 images of 5j0n at σ² = 16 (64 px, exact distances), 5,000 pairs left
        0.020 rad of registration error, 15,000 pairs 0.006-0.009 rad (about 30 s on two CPU cores),
        30,000 pairs no better.
    n_refine : best candidates of each class refined locally.
    n_angles : in-plane angles tabulated per image for the coarse search (4° at 90).
    max_radius : low-pass, in pixels of frequency (cycles per box); ``D / 8`` when ``None``
        (8 for 64-px images).
    seed : integer seed or :class:`numpy.random.Generator` of the pairs and candidates.
    device : where to compute the tables and the coarse search; ``None`` is CUDA when available.
    progress : show a progress bar.

    Returns
    -------
    :class:`GaugeResult`.

    Raises
    ------
    ValueError
        Images not a square stack, quaternions not ``(P, 4)`` or of another count, fewer than
        8 images, or non-positive search sizes.
    """
    start = time.perf_counter()
    sizes = {"n_candidates": n_candidates, "n_pairs": n_pairs, "n_refine_pairs": n_refine_pairs}
    for name, value in (sizes | {"n_refine": n_refine, "n_angles": n_angles}).items():
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    out_device = torch.as_tensor(quaternions).device
    img, q = _check_inputs(images, quaternions, shifts, 8)
    p, d = img.shape[0], img.shape[-1]
    r_max = float(max_radius) if max_radius is not None else d / 8
    if not (math.isfinite(r_max) and 1 <= r_max <= d / 2):
        raise ValueError(
            f"max_radius must be between 1 and D / 2 = {d / 2:g} pixels of frequency; got {r_max!r}"
        )
    rng = np.random.default_rng(seed)
    dev = resolve_device(device)
    lines = _Lines(img.to(dev, torch.float32), r_max)

    # coarse: per-pair tables of line correlations at n_angles in-plane angles
    table_angles = torch.arange(int(n_angles), device=dev, dtype=torch.float32) * (2 * math.pi / n_angles)
    all_lines = lines.sample(
        torch.arange(p, device=dev)[:, None].expand(p, int(n_angles)), table_angles.expand(p, int(n_angles))
    ).to(torch.complex64)  # (P, L, R)
    pi, pj = _random_pairs(p, int(n_pairs), rng)
    tables = torch.einsum("klr,kmr->klm", all_lines[pi], all_lines[pj].conj()).real  # (K, L, L)
    del all_lines
    candidates = quaternion_to_matrix(torch.from_numpy(_haar(int(n_candidates), rng))).to(dev)  # (C, 3, 3)
    pair_rows = torch.arange(int(n_pairs), device=dev)
    chunk = max(1, (1 << 22) // int(n_pairs))
    coarse: dict[str, torch.Tensor] = {}
    bar = tqdm(total=2 * int(n_candidates), desc="gauge search", unit="candidate", disable=not progress)
    for gauge_class in GAUGE_CLASSES:
        rot = _class_rotations(q, gauge_class).to(dev)
        relative = _pair_rotations(rot[pi], rot[pj]).float()  # (K, 9)
        scores = []
        for block in candidates.float().split(chunk):
            a_i, a_j = _candidate_angles(block, relative)  # (c, K)
            scores.append(_bilinear_table(tables, pair_rows, a_i, a_j, int(n_angles)).mean(dim=1))
            bar.update(len(block))
        coarse[gauge_class] = torch.cat(scores).cpu()
    bar.close()
    del tables

    # refine the best few of each class with exact lines on fresh pairs
    ri, rj = _random_pairs(p, int(n_refine_pairs), rng)
    ri_t, rj_t = torch.from_numpy(ri).to(dev), torch.from_numpy(rj).to(dev)
    best: dict[str, tuple[float, np.ndarray]] = {}
    for gauge_class in GAUGE_CLASSES:
        rot = _class_rotations(q, gauge_class).to(dev)
        relative = _pair_rotations(rot[ri_t], rot[rj_t])  # (K', 9)

        def score(matrix: np.ndarray, relative=relative) -> float:
            m = torch.from_numpy(matrix).to(dev)[None]
            a_i, a_j = _candidate_angles(m, relative)
            li, lj = lines.sample(ri_t, a_i[0]), lines.sample(rj_t, a_j[0])
            return float((li * lj.conj()).real.sum(-1).mean())

        for index in torch.argsort(coarse[gauge_class], descending=True)[: int(n_refine)].tolist():
            m0 = candidates[index].cpu().double().numpy()

            def objective(omega: np.ndarray, m0=m0, score=score) -> float:
                return -score(Rotation.from_rotvec(omega).as_matrix() @ m0)

            found = minimize(
                objective,
                np.zeros(3),
                method="Nelder-Mead",
                options={"initial_simplex": _simplex(0.05), "xatol": 1e-4, "fatol": 1e-7, "maxiter": 300},
            )
            value = -float(found.fun)
            if gauge_class not in best or value > best[gauge_class][0]:
                best[gauge_class] = (value, Rotation.from_rotvec(found.x).as_matrix() @ m0)
    winner = max(GAUGE_CLASSES, key=lambda c: best[c][0])
    other = next(c for c in GAUGE_CLASSES if c != winner)
    left = matrix_to_quaternion(torch.from_numpy(best[winner][1]))
    corrected = apply_gauge(q, left, winner)
    return GaugeResult(
        quaternions=corrected.to(out_device),
        left=left.to(out_device),
        gauge_class=winner,
        score=best[winner][0],
        other_score=best[other][0],
        seconds=time.perf_counter() - start,
    )


def _haar(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 4) Haar-random unit quaternions."""
    g = rng.standard_normal((n, 4))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _simplex(size: float) -> np.ndarray:
    """A regular-ish starting simplex of ``size`` radians around 0 in rotation-vector space."""
    return np.vstack([np.zeros(3), size * np.eye(3)]) - size / 4


def _bilinear_table(tables: torch.Tensor, rows: torch.Tensor, a_i: torch.Tensor, a_j: torch.Tensor, n: int):
    """Periodic bilinear look-up ``tables[k, a_i / step, a_j / step]`` for every candidate and pair.

    ``tables`` (K, L, L), ``rows`` (K,), angles (C, K) → (C, K).
    """
    step = 2 * math.pi / n
    u = torch.remainder(a_i, 2 * math.pi) / step
    v = torch.remainder(a_j, 2 * math.pi) / step
    u0, v0 = u.floor(), v.floor()
    fu, fv = u - u0, v - v0
    u0 = u0.long() % n
    v0 = v0.long() % n
    u1, v1 = (u0 + 1) % n, (v0 + 1) % n
    flat = tables.reshape(-1)
    base = rows * (n * n)
    return (
        flat[base + u0 * n + v0] * ((1 - fu) * (1 - fv))
        + flat[base + u1 * n + v0] * (fu * (1 - fv))
        + flat[base + u0 * n + v1] * ((1 - fu) * fv)
        + flat[base + u1 * n + v1] * (fu * fv)
    )
