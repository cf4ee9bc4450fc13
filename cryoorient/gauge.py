"""Fix the gauge of orientations recovered from distances, from the images alone (common lines).

Distances ``d_q`` are invariant under all of O(4), so orientations recovered from them
(:func:`cryoorient.recovery.recover_orientations`) are the true ones up to ``q ↦ a·q·b`` or
``q ↦ a·q̄·b``. With RELION's ``A = R(q)`` (volume → image coordinates) the images fix part of that
group (see notebook 06):

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

Verdict. A failed recovery gets a best gauge too, and its score alone does not say it failed: what
random orientations score depends on the protein and the noise (0.195 on 64-px projections of
5j0n, 0.16 at σ² = 16, 0.94 on the tests' blobby 32-px map, whose low-passed lines all look alike).
So :func:`fix_gauge` measures chance on every stack: the result's orientations shuffled among the
images (the same orientations, carrying no information about which image is which), scored on
``n_chance`` sets of fresh pairs, give ``chance_score`` (mean) and ``chance_spread`` (standard
deviation: the noise of one score). The shuffle keeps the orientations' distribution, so a clustered
or degenerate recovery is held to its own chance level (0.217 for the untrained network below,
against 0.195 for Haar-random orientations). ``score`` and ``other_score`` are measured on fresh
pairs that the search did not see, so the search's optimism through noise does not count
(2-6 spreads on failed recoveries when measured on the refinement pairs). Then
:attr:`GaugeResult.diagnosis` is

* ``"chance"`` when ``score`` is less than :data:`CHANCE_MARGIN` = 8 spreads above chance: the
  orientations do not fit the images. Either the recovery failed or the images are too noisy for
  common lines to check it (which one, images alone cannot say);
* ``"tie"`` when above chance but ``score - other_score`` is less than :data:`TIE_MARGIN` = 6
  spreads: the class is undecided. Correct orientations always separated the classes; a tie came
  from an untrained network, whose distances only say which images look alike;
* ``"ok"`` otherwise.

Calibration (``fix_gauge`` at its defaults; 500 projections of the test split of the default
dataset: 5j0n, 64 px, seed 0; σ² of the images; "good": recovered from exact distances ``d_q``;
"learned": from the shipped estimators of that σ²; E_OR the O(4) error of the orientations,
E_OR,reg after the gauge fix; "above" ``(score - chance) / spread``, "apart"
``(score - other) / spread``)::

    case                        score  other  chance ± spread   above  apart  E_OR  E_OR,reg  verdict
    good σ² = 0                 0.976  0.236  0.195 ± 0.0030    256    243    0.000  0.000    ok
    good σ² = 16                0.426  0.180  0.163 ± 0.0021    127    119    0.000  0.021    ok
    good σ² = 32                0.329  0.165  0.150 ± 0.0022     81     74    0.000  0.024    ok
    learned σ² = 0              0.918  0.231  0.195 ± 0.0025    294    279    0.072  0.072    ok
    learned σ² = 4              0.563  0.202  0.178 ± 0.0019    207    194    0.151  0.152    ok
    learned σ² = 16             0.339  0.182  0.163 ± 0.0023     77     69    0.362  0.362    ok
    learned σ² = 32             0.240  0.168  0.151 ± 0.0023     39     31    0.754  0.761    ok
    Haar-random, σ² = 0         0.197  0.196  0.194 ± 0.0021    1.3    0.7    2.093  2.120    chance
    Haar-random, σ² = 16        0.162  0.163  0.163 ± 0.0028   -0.4   -0.5    2.088  2.147    chance
    untrained network, σ² = 0   0.291  0.291  0.217 ± 0.0021     36    0.0    2.140  2.140    tie
    untrained network, σ² = 16  0.171  0.170  0.170 ± 0.0025    0.5    0.6    2.140  2.140    chance
    learned σ² = 0, permuted    0.193  0.194  0.195 ± 0.0021   -0.9   -0.5    2.090  2.141    chance
    good σ² = 16, permuted      0.167  0.164  0.163 ± 0.0026    1.4    1.1    2.092  2.133    chance
    good σ² = 64                0.243  0.142  0.133 ± 0.0019     57     53    0.000  0.026    ok
    good σ² = 128               0.176  0.113  0.106 ± 0.0027     26     24    0.000  0.027    ok
    good σ² = 256               0.117  0.088  0.080 ± 0.0022     17     13    0.000  0.047    ok
    good σ² = 512               0.071  0.056  0.051 ± 0.0023    8.7    6.6    0.000  0.129    ok

Every failure is within 1.4 spreads of chance, except the untrained network on clean images: 36
spreads above chance (its orientations put look-alike images together) but its classes 0.0 apart.
Every good and learned case is at least 39 spreads above chance and 31 apart, so both thresholds
sit about 5 times from either side. The learned
σ² = 16 case (E_OR 0.36 rad) is 77 spreads above chance and 69 apart, about ten times the
thresholds. Exact orientations stay checkable far beyond the noise at which learned distances fail
(σ² = 32 gives 0.75 rad); near σ² = 512 (64 px, 500 images) even they approach the threshold, and
beyond it the verdict becomes "chance" for orientations that may be right: images that noisy cannot
check them, which the warning says. The spread falls as ``1 / sqrt(n_refine_pairs)``: with fewer
pairs every margin shrinks accordingly (the tests' 1,500 pairs: about a third of the above). The
verdict costs ``n_chance + 2`` scores of ``n_refine_pairs`` pairs: 0.3-0.5 s here, against 20-30 s
for the search.

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

__all__ = [
    "CHANCE_MARGIN",
    "GAUGE_CLASSES",
    "TIE_MARGIN",
    "GaugeResult",
    "apply_gauge",
    "common_line_score",
    "fix_gauge",
]

#: The two classes of O(4) that the images distinguish: ``q ↦ a·q`` and ``q ↦ a·q̄``.
GAUGE_CLASSES = ("proper", "improper")

Device = torch.device | str | None

#: :attr:`GaugeResult.diagnosis` is ``"chance"`` below this many spreads above the chance level.
CHANCE_MARGIN = 8.0
#: :attr:`GaugeResult.diagnosis` is ``"tie"`` below this many spreads between the two classes.
TIE_MARGIN = 6.0

_TINY = 1e-12


@dataclass(frozen=True)
class GaugeResult:
    """Orientations made consistent with their images, and whether they are.

    Attributes
    ----------
    quaternions : (P, 4) corrected orientations ``a·q`` or ``a·q̄``, unit, ``w >= 0``, float64,
        on the input quaternions' device. Still defined up to a global right factor ``q ↦ q·b``
        (a rotation of the map) and the mirror ``q ↦ k·q·k̄``, which images cannot fix.
    left : (4,) the left factor ``a``, unit quaternion, scalar first.
    gauge_class : ``"proper"`` (``q ↦ a·q``) or ``"improper"`` (``q ↦ a·q̄``, every ``A`` transposed).
    score : mean common-line correlation of the result (in ``[-1, 1]``), on fresh pairs that the
        search did not see, so that a search through noise gains nothing from its own optimism.
    other_score : the same for the best gauge of the other class (how clearly the class is decided).
    seconds : wall-clock time.
    chance_score : what orientations that carry no information about these images score on them:
        the mean score of the result with its orientations shuffled among the images (same
        orientations, wrong images; the same number of fresh pairs as ``score``). It depends on the
        protein and the noise, so it is measured on every stack. ``nan`` when not measured.
    chance_spread : the standard deviation of those shuffled scores: the noise of ``score`` itself.

    Properties :attr:`diagnosis` and :attr:`warning` say whether the result can be trusted.
    """

    quaternions: torch.Tensor
    left: torch.Tensor
    gauge_class: str
    score: float
    other_score: float
    seconds: float
    chance_score: float = math.nan
    chance_spread: float = math.nan

    @property
    def chance_margin(self) -> float:
        """``(score - chance_score) / chance_spread``: how far above chance, in spreads."""
        return (self.score - self.chance_score) / max(self.chance_spread, _TINY)

    @property
    def class_margin(self) -> float:
        """``(score - other_score) / chance_spread``: how far apart the two classes, in spreads."""
        return (self.score - self.other_score) / max(self.chance_spread, _TINY)

    @property
    def diagnosis(self) -> str:
        """``"ok"``, ``"chance"`` or ``"tie"`` (see :data:`CHANCE_MARGIN` and :data:`TIE_MARGIN`).

        ``"chance"``: the score is not :data:`CHANCE_MARGIN` spreads above chance (or chance was
        not measured): the orientations do not fit the images. ``"tie"``: above chance, but the
        classes are less than :data:`TIE_MARGIN` spreads apart: the class is undecided.
        """
        if not self.chance_margin >= CHANCE_MARGIN:  # also when nan
            return "chance"
        if not self.class_margin >= TIE_MARGIN:
            return "tie"
        return "ok"

    @property
    def warning(self) -> str | None:
        """One line for a person when :attr:`diagnosis` is not ``"ok"``, else ``None``."""
        diagnosis = self.diagnosis
        if diagnosis == "ok":
            return None
        if not (math.isfinite(self.chance_score) and math.isfinite(self.chance_spread)):
            return (
                f"common-line score {self.score:.3f} cannot be judged: no chance level was measured "
                "for these images (fix_gauge measures it)"
            )
        above, apart = (round(m, 1) + 0.0 for m in (self.chance_margin, self.class_margin))  # no "-0.0"
        if diagnosis == "chance":
            return (
                f"common-line score {self.score:.3f} is at chance level: the same orientations shuffled "
                f"among the images score {self.chance_score:.3f} ± {self.chance_spread:.3f} ({above:g} "
                f"spreads above it, {CHANCE_MARGIN:g} needed). These orientations do not fit these images: "
                "the recovery failed, or the images are too noisy for common lines to check it"
            )
        return (
            f"the two gauge classes score alike ({self.score:.3f} {self.gauge_class}, {self.other_score:.3f} "
            f"the other; {apart:g} spreads apart, {TIE_MARGIN:g} needed): whether every orientation is "
            "to be transposed is undecided. Correct orientations separate the classes clearly; distances "
            "that only encode which images look alike give this tie, so the recovery is suspect"
        )


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

    def __init__(self, images: torch.Tensor, r_max: float, radial_step: float = 0.5, chunk: int = 512):
        p, d, _ = images.shape
        pad = 2
        n = pad * d
        lo = n // 2 - d // 2
        half = int(math.ceil(pad * r_max)) + 2
        c = n // 2
        # ``chunk`` images at a time: the padded transform takes (2D)² complex values an image, of
        # which only the (w, w) window is kept (10 GB at 20,000 images of 64 px, done at once)
        windows = []
        for start in range(0, p, chunk):
            part = images[start : start + chunk]
            padded = torch.zeros(len(part), n, n, dtype=images.dtype, device=images.device)
            padded[:, lo : lo + d, lo : lo + d] = part  # image centre D // 2 lands on N // 2
            spectrum = torch.fft.fftshift(
                torch.fft.fft2(torch.fft.ifftshift(padded, dim=(-2, -1))), dim=(-2, -1)
            )
            windows.append(spectrum[:, c - half : c + half + 1, c - half : c + half + 1].clone())
        self.window = torch.cat(windows)  # (P, w, w)
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
    return _mean_correlation(lines, quaternion_to_matrix(q), i, j)


def _mean_correlation(lines: _Lines, rot: torch.Tensor, i: np.ndarray, j: np.ndarray) -> float:
    """Mean over pairs ``(i, j)`` of the correlation of the common lines that ``A = rot`` predict."""
    eye = torch.eye(3, dtype=torch.float64, device=rot.device)[None]
    a_i, a_j = _candidate_angles(eye, _pair_rotations(rot[i], rot[j]).to(torch.float64))
    dev = lines.window.device
    li = lines.sample(torch.from_numpy(i).to(dev), a_i[0].to(dev))
    lj = lines.sample(torch.from_numpy(j).to(dev), a_j[0].to(dev))
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
    n_chance: int = 16,
) -> GaugeResult:
    """Find the left factor and class that make recovered orientations consistent with the images.

    Searches ``a ∈ SO(3)`` and the class (``q ↦ a·q`` or ``q ↦ a·q̄``) for the highest mean
    common-line correlation (module docstring), using no true orientation, then judges the result
    against the chance level of the same images.

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
    n_chance : shuffles of the result's orientations among the images whose scores give the chance
        level and its spread (module docstring, "Verdict"); at least 2.

    Returns
    -------
    :class:`GaugeResult`; its :attr:`~GaugeResult.diagnosis` and :attr:`~GaugeResult.warning` say
    whether the orientations fit the images at all and whether the class was decided.

    Raises
    ------
    ValueError
        Images not a square stack, quaternions not ``(P, 4)`` or of another count, fewer than
        8 images, non-positive search sizes, or ``n_chance < 2``.
    """
    start = time.perf_counter()
    sizes = {"n_candidates": n_candidates, "n_pairs": n_pairs, "n_refine_pairs": n_refine_pairs}
    for name, value in (sizes | {"n_refine": n_refine, "n_angles": n_angles}).items():
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if isinstance(n_chance, bool) or int(n_chance) != n_chance or n_chance < 2:
        raise ValueError(f"n_chance must be an integer >= 2 (a spread needs two); got {n_chance!r}")
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
    # (K, L, L) real tables, filled a block of pairs at a time: the complex products of all pairs at
    # once would hold twice the table (and the pairs' lines) at the peak
    tables = torch.empty(int(n_pairs), int(n_angles), int(n_angles), device=dev)
    for first in range(0, int(n_pairs), 256):
        rows = slice(first, first + 256)
        tables[rows] = torch.einsum("klr,kmr->klm", all_lines[pi[rows]], all_lines[pj[rows]].conj()).real
    del all_lines
    candidates = quaternion_to_matrix(torch.from_numpy(_haar(int(n_candidates), rng))).to(dev)  # (C, 3, 3)
    pair_rows = torch.arange(int(n_pairs), device=dev)
    chunk = max(1, (1 << 20) // int(n_pairs))  # candidates per block: (chunk, K) temporaries of ~4 MB
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

    # the verdict, on fresh pairs: each class's best, and the winner's orientations shuffled among
    # the images (chance: the same orientations, carrying no information about which image is which)
    lefts = {c: matrix_to_quaternion(torch.from_numpy(best[c][1])) for c in GAUGE_CLASSES}
    fixed = {c: apply_gauge(q, lefts[c], c) for c in GAUGE_CLASSES}
    hi, hj = _random_pairs(p, int(n_refine_pairs), rng)
    held = {
        c: _mean_correlation(lines, quaternion_to_matrix(fixed[c]).to(dev), hi, hj) for c in GAUGE_CLASSES
    }
    rot = quaternion_to_matrix(fixed[winner]).to(dev)
    chance = []
    for _ in range(int(n_chance)):
        shuffled = torch.from_numpy(rng.permutation(p)).to(dev)
        chance.append(_mean_correlation(lines, rot[shuffled], *_random_pairs(p, int(n_refine_pairs), rng)))
    return GaugeResult(
        quaternions=fixed[winner].to(out_device),
        left=lefts[winner].to(out_device),
        gauge_class=winner,
        score=held[winner],
        other_score=held[other],
        seconds=time.perf_counter() - start,
        chance_score=float(np.mean(chance)),
        chance_spread=float(np.std(chance, ddof=1)),
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
