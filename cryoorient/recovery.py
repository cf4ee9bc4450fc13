"""Orientation recovery from pairwise distances (the paper's step ii).

Given estimated distances ``d̂_ij`` between the orientations of projections ``i`` and ``j`` (exact,
perturbed, or predicted by a Siamese network), find unit quaternions ``q̂_1 … q̂_P`` minimising

    L_OR = mean_{i<j} (d̂_ij - d_q(q̂_i, q̂_j))²,      d_q(a, b) = 2 arccos |<a, b>|,

the paper's sum divided by the number of pairs (radians², so values compare across ``P``). The
solution is defined up to a global O(4) transform (see :mod:`cryoorient.alignment`).

Two paths:

:func:`recover_orientations`
    from a ``(P, P)`` matrix. Full-batch L-BFGS on unconstrained 4-vectors that the loss
    normalises (rows are renormalised after every step, a retraction onto the sphere), with an
    analytic gradient computed in row blocks (memory ``O(block · P)`` beyond the matrix itself).
    Started from a spectral initialisation, it converges in tens of iterations.
:func:`recover_orientations_sampled`
    from a distance *function* evaluated on sampled index pairs (e.g. a Siamese network applied
    to features computed once) or a matrix through the same path. Mini-batches of pairs, each
    orientation moved by a per-row Gauss-Newton step averaged over the pairs that touch it, so
    memory is ``O(P + pairs_per_step)`` and an epoch costs ``O(P)``.

Spectral initialisation. Like metric MDS, the loss has local minima that random starts can fall into
(in ``benchmarks/recovery.py``: 3 runs in 10 at ``P = 200`` with exact distances, 1 in 3 at
``P = 1,650`` with perturbed ones), so both paths start from a closed-form estimate instead. For
rotations ``R_i``, ``tr(R_iᵀ R_j) = 1 + 2 cos d_ij``, so ``M = 1 + 2 cos D̂`` is the Gram matrix of the
9-vectors ``vec R_i``: rank 9 for exact distances. Its top-9 eigenvectors give ``Y = [vec R] Oᵀ``
for an unknown ``O ∈ O(9)``; ``O`` is found by alternating projections (rotations nearest to the
rows of ``Y Oᵀ``, then the orthogonal Procrustes ``O``) from many random starts on a subsample of
rows, keeping the start with the smallest residual. For exact distances this recovers the
orientations to machine precision; with noisy ones it lands in the basin of the global minimum. The
sampled path computes the embedding from distances to a few hundred landmarks (a Nyström extension),
which keeps it linear in ``P``. The linear algebra is :mod:`cryoorient.spectral`.

At ~780 lines this module is over the package's ~600: the two paths share their input checks,
starts, stopping rules and result type, which would otherwise cross module boundaries as private
imports.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cryoorient._checks import Device, check_positive, check_positive_int, resolve_device
from cryoorient.geometry import canonical_quaternion, quaternion_distance
from cryoorient.sampling import haar_quaternions, random_pairs
from cryoorient.spectral import rotations_from_embedding, spectral_quaternions

__all__ = [
    "INITIALISATIONS",
    "RecoveryResult",
    "orientation_loss",
    "perturb_distances",
    "recover_orientations",
    "recover_orientations_sampled",
    "reliability_weights",
    "spectral_orientations",
]

INITIALISATIONS = ("spectral", "random")

DistanceFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Distances may exceed [0, π] or be asymmetric by this much (float32 round-off of a network).
_DISTANCE_TOL = 1e-5
# Elements per (block, P) slab of the full-batch loss.
_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class RecoveryResult:
    """Recovered orientations and the optimisation record.

    Attributes
    ----------
    quaternions : (P, 4) recovered unit quaternions, scalar first, ``w >= 0``; defined up to a
        global O(4) transform (align with :func:`cryoorient.alignment.align_orientations`).
    loss_history : (n,) ``L_OR`` (mean squared distance residual, radians²) at the start and after
        every step (full batch) or the mean batch loss of every epoch (sampled path).
    loss : final ``L_OR``: exact for :func:`recover_orientations`, the last epoch's mean batch loss
        for :func:`recover_orientations_sampled`.
    steps : optimiser steps (parameter updates) of the returned run.
    converged : whether the stopping criterion was met before the step or epoch limit.
    seconds : wall-clock time, initialisation and restarts included.
    epochs : passes over the pairs (sampled path only, else ``None``).
    """

    quaternions: torch.Tensor
    loss_history: np.ndarray
    loss: float
    steps: int
    converged: bool
    seconds: float
    epochs: int | None = None


# --- input checks --------------------------------------------------------------------------------


def perturb_distances(
    distances: torch.Tensor, std: float, seed: int | np.random.Generator = 0
) -> torch.Tensor:
    """Distances with symmetric, frozen Gaussian errors, clipped to ``[0, π]`` (the paper's test).

    Parameters
    ----------
    distances : (P, P) symmetric distances, radians.
    std : standard deviation of the errors, radians (the paper's "variance v" is ``std = √v``).
    seed : seed of the errors (one draw per pair ``i < j``, mirrored; the diagonal is kept).

    Returns
    -------
    (P, P) float64 perturbed distances.
    """
    d = torch.as_tensor(distances, dtype=torch.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square (P, P) matrix; got shape {tuple(d.shape)}")
    if not std >= 0:
        raise ValueError(f"std must be >= 0; got {std}")
    noise = torch.from_numpy(np.random.default_rng(seed).standard_normal(d.shape)).triu(1) * std
    return (d + noise.to(d.device) + noise.T.to(d.device)).clamp(0.0, math.pi)


def orientation_loss(quaternions: torch.Tensor, distances: torch.Tensor) -> float:
    """``L_OR`` of orientations against a distance matrix, in radians².

    The mean over pairs ``i < j`` of ``(d_ij − d_q(q_i, q_j))²``, normalised as in
    :class:`RecoveryResult`.

    Parameters
    ----------
    quaternions : (P, 4) unit quaternions.
    distances : (P, P) target distances, radians.
    """
    q = torch.as_tensor(quaternions, dtype=torch.float64)
    d = torch.as_tensor(distances, dtype=torch.float64, device=q.device)
    if d.shape != (len(q), len(q)):
        raise ValueError(f"{len(q)} orientations but a distance matrix of shape {tuple(d.shape)}")
    residual = quaternion_distance(q[:, None], q[None]) - d
    n = len(q)
    return float((residual**2).triu(1).sum() / (n * (n - 1) / 2))


def reliability_weights(
    distances: torch.Tensor | np.ndarray, *, scale: float | None = None, neighbours: int | None = None
) -> torch.Tensor:
    """Pair weights that trust small estimated distances more, for a weighted ``L_OR``.

    A distance estimator is often more reliable for close pairs (similar projections) than for far
    ones; weighting ``L_OR`` towards them is the recovery-side defence against bad estimates.
    Give exactly one of:

    scale : Gaussian weights ``exp(-(d_ij / scale)²)``, ``scale`` in radians.
    neighbours : 1 for the ``neighbours`` smallest distances of each row, or of each column, else 0.

    Parameters
    ----------
    distances : (P, P) estimated distances, radians.

    Returns
    -------
    (P, P) float64 symmetric weights with a zero diagonal (for :func:`recover_orientations`).
    """
    d = torch.as_tensor(distances, dtype=torch.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square (P, P) matrix; got shape {tuple(d.shape)}")
    if (scale is None) == (neighbours is None):
        raise ValueError(f"give exactly one of scale or neighbours; got {scale=!r}, {neighbours=!r}")
    if scale is not None:
        w = torch.exp(-((d / check_positive("scale", scale)) ** 2))
    else:
        k = check_positive_int("neighbours", neighbours)
        if k >= d.shape[0]:
            raise ValueError(f"neighbours must be below P = {d.shape[0]}; got {k}")
        masked = d.clone()
        masked.fill_diagonal_(math.inf)
        nearest = masked.argsort(dim=1)[:, :k]
        w = torch.zeros_like(d).scatter_(1, nearest, 1.0)
        w = ((w + w.T) > 0).to(d.dtype)
    w = (w + w.T) / 2
    w.fill_diagonal_(0.0)
    return w


def _check_distances(distances: torch.Tensor | np.ndarray, device: torch.device, dtype: torch.dtype):
    """A finite, symmetric ``(P, P)`` matrix with entries in ``[0, π]`` (to a tolerance), ``P >= 4``."""
    d = torch.as_tensor(distances)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square (P, P) matrix; got shape {tuple(d.shape)}")
    if d.shape[0] < 4:
        raise ValueError(f"orientation recovery needs at least 4 orientations; got P = {d.shape[0]}")
    d = d.to(device=device, dtype=dtype)
    bad = ~torch.isfinite(d)
    if bool(bad.any()):
        i, j = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"distances has {int(bad.sum())} NaN or infinite entries; first at ({i}, {j}): {d[i, j]}"
        )
    asym = (d - d.T).abs()
    if float(asym.max()) > _DISTANCE_TOL:
        i, j = (int(v) for v in (asym == asym.max()).nonzero()[0])
        raise ValueError(
            f"distances must be symmetric; |D[{i}, {j}] - D[{j}, {i}]| = {float(asym[i, j]):.3g} "
            f"({float(d[i, j]):.6g} vs {float(d[j, i]):.6g})"
        )
    _check_range(d)
    return ((d + d.T) / 2).clamp_(0.0, math.pi)


def _check_range(d: torch.Tensor) -> None:
    """ValueError naming the worst entry when distances leave ``[0, π]`` beyond the tolerance."""
    low, high = float(d.min()), float(d.max())
    if low < -_DISTANCE_TOL or high > math.pi + _DISTANCE_TOL:
        worst = low if -low > high - math.pi else high
        where = tuple(int(v) for v in (d == worst).nonzero()[0])
        raise ValueError(
            f"distances must lie in [0, π] radians (clip perturbed distances); found {worst:.6g} at {where}"
        )


def _check_weights(weights: torch.Tensor | np.ndarray, n: int, device: torch.device, dtype: torch.dtype):
    """Pair weights: a finite, non-negative, symmetric ``(n, n)`` matrix, zero on the diagonal."""
    w = torch.as_tensor(weights).to(device=device, dtype=dtype)
    if w.shape != (n, n):
        raise ValueError(f"weights must have the distances' shape ({n}, {n}); got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or float(w.min()) < 0:
        raise ValueError(f"weights must be finite and >= 0; smallest {float(w.min()):.3g}")
    if float((w - w.T).abs().max()) > _DISTANCE_TOL * max(1.0, float(w.abs().max())):
        raise ValueError("weights must be symmetric (w_ij = w_ji)")
    w = (w + w.T) / 2
    w.fill_diagonal_(0.0)
    if not float(w.sum()) > 0:
        raise ValueError("weights are zero for every pair")
    return w


def _torch_generator(seed: int | np.random.Generator | torch.Generator, device: torch.device):
    """A CPU :class:`torch.Generator` from an integer seed, a NumPy generator, or itself."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(2**63 - 1))
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _random_quaternions(n: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype):
    """(n, 4) Haar-random unit quaternions (:func:`~cryoorient.sampling.haar_quaternions`) on ``device``."""
    return haar_quaternions(n, generator).to(device=device, dtype=dtype)


def _check_init(init, n: int, device: torch.device, dtype: torch.dtype):
    """A name in :data:`INITIALISATIONS`, or a ``(n, 4)`` tensor of starting quaternions."""
    if isinstance(init, str):
        if init not in INITIALISATIONS:
            raise ValueError(
                f"unknown init {init!r}; choose one of {', '.join(INITIALISATIONS)} or pass (P, 4)"
            )
        return init
    q = torch.as_tensor(init)
    if q.shape != (n, 4):
        raise ValueError(f"init quaternions must have shape ({n}, 4); got {tuple(q.shape)}")
    q = q.to(device=device, dtype=dtype)
    norms = torch.linalg.vector_norm(q, dim=1, keepdim=True)
    if not bool(torch.isfinite(q).all()) or float(norms.min()) < 1e-12:
        raise ValueError("init quaternions must be finite and non-zero")
    return q / norms


# --- spectral initialisation ---------------------------------------------------------------------


def spectral_orientations(
    distances: torch.Tensor | np.ndarray,
    *,
    n_starts: int = 64,
    seed: int | np.random.Generator | torch.Generator = 0,
    device: Device = None,
) -> torch.Tensor:
    """Closed-form orientations from a distance matrix (the initialisation of the recovery).

    ``M = 1 + 2 cos D̂`` is the Gram matrix of ``vec R_i`` (``tr(R_iᵀ R_j) = 1 + 2 cos d_ij``);
    its top-9 eigenvectors, scaled by the square roots of the eigenvalues, give ``vec R_i`` up to an
    ``O(9)`` transform, found by alternating projections from ``n_starts`` random starts. Exact
    for exact distances (up to the global O(4) ambiguity); an approximation for noisy ones.

    Parameters
    ----------
    distances : (P, P) symmetric distances in radians, in ``[0, π]``, ``P >= 4``.
    n_starts : random starts of the ``O(9)`` search (run together; each succeeds with probability
        roughly 0.1-0.5, and the best residual picks the right one).
    seed : integer seed, :class:`numpy.random.Generator` or :class:`torch.Generator`.
    device : where to compute; ``None`` means CUDA when available, else CPU.

    Returns
    -------
    (P, 4) unit quaternions, ``w >= 0``, float64, on ``device``.
    """
    device = resolve_device(device)
    n_starts = check_positive_int("n_starts", n_starts)
    d = _check_distances(distances, device, torch.float64)
    return spectral_quaternions(d, n_starts, _torch_generator(seed, device))


# --- full-batch recovery -------------------------------------------------------------------------


def _loss_and_gradient(x: torch.Tensor, d: torch.Tensor, with_grad: bool = True, weights=None):
    """``L_OR`` of the normalised rows of ``x`` and its gradient with respect to ``x``.

    ``G = Q Qᵀ``, ``d_ij = 2 arccos |G_ij|``; ``∂L/∂Q = 2 W Q`` with ``W_ij = ∂L/∂G_ij``, computed in
    row blocks. The gradient is exactly tangent to each row's sphere (radially invariant loss).
    With ``weights`` (P, P) (symmetric, zero diagonal) the loss is the weighted mean
    ``Σ w_ij r_ij² / Σ w_ij``; without, every pair counts once.
    """
    n = x.shape[0]
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    q = x / norms
    # mean over ordered pairs i != j = mean over unordered pairs
    scale = 1.0 / (n * (n - 1)) if weights is None else 1.0 / float(weights.sum())
    block = max(1, min(n, _BLOCK_ELEMENTS // n))
    total = x.new_zeros(())
    grad = torch.empty_like(q) if with_grad else None
    for start in range(0, n, block):
        stop = min(n, start + block)
        g = q[start:stop] @ q.T  # (b, n)
        a = g.abs().clamp_(max=1.0)
        r = torch.acos(a).mul_(2.0).sub_(d[start:stop])  # residuals d_q - d̂
        rows = torch.arange(stop - start, device=x.device)
        r[rows, rows + start] = 0.0
        if weights is not None:
            r.mul_(weights[start:stop].sqrt())  # √w r: the squares give w r², the gradient w r
        total += (r * r).sum()
        if with_grad and weights is not None:
            r.mul_(weights[start:stop].sqrt())
        if with_grad:
            # ∂d/∂G = -2 sign(G) / sqrt(1 - G²); the 1/sqrt is cancelled by the tangent projection
            w = r.mul_(torch.sign(g)).mul_((1.0 - a * a).clamp_(min=1e-30).rsqrt_())
            grad[start:stop] = w @ q
    loss = total * scale
    if not with_grad:
        return loss, None
    grad = grad * (-8.0 * scale)
    grad = grad - (grad * q).sum(1, keepdim=True) * q  # tangent part (removes round-off)
    return loss, grad / norms


def _stalled(history: list[float], window: int, tol: float, loss_atol: float) -> bool:
    """Whether a full-batch run has converged.

    True when the loss is at most ``loss_atol``, or when its running minimum fell by less than
    ``tol`` (relative) over the last ``window`` steps (robust to a non-monotone optimiser: Adam).
    """
    if history[-1] <= loss_atol:
        return True
    if len(history) <= window:
        return False
    before, now = min(history[:-window]), min(history)
    return before - now <= tol * before


def _lbfgs(x, d, *, max_steps, tol, window, history_size, loss_atol, weights=None):
    """L-BFGS with Armijo backtracking; rows renormalised after each step. Returns x, history, converged."""
    loss, grad = _loss_and_gradient(x, d, weights=weights)
    history = [float(loss)]
    pairs: deque = deque(maxlen=history_size)
    converged = float(loss) <= loss_atol
    steps = 0
    while not converged and steps < max_steps:
        # two-loop recursion for the quasi-Newton direction
        direction = -grad
        alphas = []
        for s, y, rho in reversed(pairs):
            alpha = rho * (s * direction).sum()
            direction = direction - alpha * y
            alphas.append(alpha)
        if pairs:
            s, y, _ = pairs[-1]
            direction = direction * ((s * y).sum() / (y * y).sum())
            for (s, y, rho), alpha in zip(pairs, reversed(alphas), strict=True):
                beta = rho * (y * direction).sum()
                direction = direction + (alpha - beta) * s
            step = 1.0
        else:  # first step: move the fastest orientation by at most 0.1 (radians, on the sphere)
            step = 0.1 / max(float(direction.abs().max()), 1e-300)
        slope = float((grad * direction).sum())
        if not slope < 0:  # not a descent direction: restart from steepest descent
            pairs.clear()
            direction = -grad
            slope = float((grad * direction).sum())
            step = 0.1 / max(float(direction.abs().max()), 1e-300)
        for _ in range(40):
            candidate = x + step * direction
            new_loss, new_grad = _loss_and_gradient(candidate, d, weights=weights)
            if float(new_loss) <= float(loss) + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            converged = True  # no decrease along a descent direction: at round-off level
            break
        norms = torch.linalg.vector_norm(candidate, dim=1, keepdim=True)
        candidate, new_grad = candidate / norms, new_grad * norms  # retraction; loss is unchanged
        s, y = candidate - x, new_grad - grad
        sy = float((s * y).sum())
        if sy > 1e-12 * float(torch.linalg.vector_norm(s) * torch.linalg.vector_norm(y)):
            pairs.append((s, y, 1.0 / sy))
        x, loss, grad = candidate, new_loss, new_grad
        steps += 1
        history.append(float(loss))
        converged = _stalled(history, window, tol, loss_atol)
    return x, history, converged, steps


def _adam(x, d, *, max_steps, tol, window, lr, loss_atol, weights=None):
    """Full-batch Adam with the same analytic gradient and stopping rule."""
    x = x.clone()
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    beta1, beta2 = 0.9, 0.999
    loss, grad = _loss_and_gradient(x, d, weights=weights)
    history = [float(loss)]
    converged = history[0] <= loss_atol
    steps = 0
    while not converged and steps < max_steps:
        steps += 1
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        x = x - lr * (m / (1 - beta1**steps)) / ((v / (1 - beta2**steps)).sqrt() + 1e-12)
        x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
        loss, grad = _loss_and_gradient(x, d, weights=weights)
        history.append(float(loss))
        converged = _stalled(history, window, tol, loss_atol)
    return x, history, converged, steps


def recover_orientations(
    distances: torch.Tensor | np.ndarray,
    *,
    init: str | torch.Tensor = "spectral",
    weights: torch.Tensor | np.ndarray | None = None,
    n_restarts: int = 1,
    optimizer: str = "lbfgs",
    lr: float = 0.01,
    max_steps: int = 500,
    tol: float = 1e-6,
    window: int | None = None,
    loss_atol: float = 1e-20,
    history_size: int = 20,
    n_starts: int = 64,
    seed: int | np.random.Generator | torch.Generator = 0,
    device: Device = None,
    dtype: torch.dtype = torch.float64,
) -> RecoveryResult:
    """Recover orientations from a ``(P, P)`` distance matrix by full-batch minimisation of ``L_OR``.

    Parameters
    ----------
    distances : (P, P) symmetric distances in radians, in ``[0, π]`` (exact, perturbed and
        clipped, or estimated); ``P >= 4``. The diagonal is ignored.
    init : ``"spectral"`` (closed form from the eigenvectors of ``1 + 2 cos D̂``, see the module
        docstring), ``"random"`` (Haar quaternions; can end in a local minimum, more often for
        small ``P`` or noisy distances), or a ``(P, 4)`` tensor to start from.
    weights : optional (P, P) non-negative symmetric weights of the pairs (the diagonal is
        ignored): ``L_OR`` becomes ``Σ w_ij r_ij² / Σ w_ij``, so pairs whose distances are more
        reliable can count more (see :func:`reliability_weights`). ``None``: every pair counts once.
    n_restarts : independent runs (different seeds for the random parts); the lowest final loss
        wins.
    optimizer : ``"lbfgs"`` (default, the fastest measured on CPU: see ``benchmarks/recovery.py``) or
        ``"adam"``.
    lr : Adam's learning rate (unused by L-BFGS, whose line search sets the step).
    max_steps : optimiser step limit per run.
    tol : converged when the lowest ``L_OR`` so far decreased by less than ``tol`` (relative) over
        the last ``window`` steps.
    window : steps over which the relative decrease is measured; default 5 for L-BFGS (monotone)
        and 50 for Adam (whose loss oscillates).
    loss_atol : converged when ``L_OR <= loss_atol`` (exact distances reach round-off).
    history_size : L-BFGS memory (pairs of steps and gradient changes).
    n_starts : random starts of the spectral ``O(9)`` search.
    seed : integer seed, :class:`numpy.random.Generator` or :class:`torch.Generator`.
    device : where to compute; ``None`` means CUDA when available, else CPU.
    dtype : floating dtype of the optimisation (float64 keeps ``d_q`` accurate for close pairs).

    Returns
    -------
    :class:`RecoveryResult` with quaternions on ``device``.
    """
    start_time = time.perf_counter()
    device = resolve_device(device)
    n_restarts = check_positive_int("n_restarts", n_restarts)
    max_steps = check_positive_int("max_steps", max_steps, minimum=0)
    window = check_positive_int("window", (5 if optimizer == "lbfgs" else 50) if window is None else window)
    history_size = check_positive_int("history_size", history_size)
    n_starts = check_positive_int("n_starts", n_starts)
    check_positive("lr", lr)
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"unknown optimizer {optimizer!r}; choose 'lbfgs' or 'adam'")
    if not tol >= 0 or not loss_atol >= 0:
        raise ValueError(f"tol and loss_atol must be non-negative; got {tol!r}, {loss_atol!r}")
    d = _check_distances(distances, device, dtype)
    n = d.shape[0]
    w = None if weights is None else _check_weights(weights, n, device, dtype)
    init = _check_init(init, n, device, dtype)
    generator = _torch_generator(seed, device)
    best = None
    for _ in range(n_restarts):
        if isinstance(init, torch.Tensor):
            x0 = init.clone()
        elif init == "spectral":
            x0 = spectral_quaternions(d.to(torch.float64), n_starts, generator).to(dtype)
        else:
            x0 = _random_quaternions(n, generator, device, dtype)
        if optimizer == "lbfgs":
            x, history, converged, steps = _lbfgs(
                x0,
                d,
                max_steps=max_steps,
                tol=tol,
                window=window,
                history_size=history_size,
                loss_atol=loss_atol,
                weights=w,
            )
        else:
            x, history, converged, steps = _adam(
                x0, d, max_steps=max_steps, tol=tol, window=window, lr=lr, loss_atol=loss_atol, weights=w
            )
        if best is None or history[-1] < best[1][-1]:
            best = (x, history, converged, steps)
    x, history, converged, steps = best
    q = canonical_quaternion(x / torch.linalg.vector_norm(x, dim=1, keepdim=True))
    return RecoveryResult(
        quaternions=q,
        loss_history=np.asarray(history),
        loss=history[-1],
        steps=steps,
        converged=converged,
        seconds=time.perf_counter() - start_time,
    )


# --- sampled-pair recovery -----------------------------------------------------------------------


def _matrix_distance_function(d: torch.Tensor) -> DistanceFunction:
    def lookup(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return d[i, j]

    return lookup


def _evaluate(distance_fn: DistanceFunction, i: torch.Tensor, j: torch.Tensor, dtype) -> torch.Tensor:
    """Call ``distance_fn`` on index pairs and check what it returns."""
    out = distance_fn(i, j)
    out = torch.as_tensor(out)
    if out.shape != i.shape:
        raise ValueError(
            f"distance_fn must return shape {tuple(i.shape)} for {len(i)} pairs; got {tuple(out.shape)}"
        )
    out = out.to(device=i.device, dtype=dtype)
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        raise ValueError(
            f"distance_fn returned {int(bad.sum())} NaN or infinite distances; first for pair "
            f"({int(i[k])}, {int(j[k])}): {out[k]}"
        )
    low, high = float(out.min()), float(out.max())
    if low < -_DISTANCE_TOL or high > math.pi + _DISTANCE_TOL:
        k = int(out.argmin()) if -low > high - math.pi else int(out.argmax())
        raise ValueError(
            f"distance_fn must return distances in [0, π] radians (clip perturbed distances); "
            f"got {float(out[k]):.6g} for pair ({int(i[k])}, {int(j[k])})"
        )
    return out.clamp(0.0, math.pi)  # not in place: the function may return its own storage


def _landmark_spectral(distance_fn, n, n_landmarks, n_starts, generator, device, chunk_pairs):
    """Spectral initialisation from distances to landmarks only (Nyström extension): ``O(P · L)``."""
    landmarks = torch.randperm(n, generator=generator)[: min(n, n_landmarks)].to(device)
    k = len(landmarks)
    li, lj = torch.meshgrid(landmarks, landmarks, indexing="ij")
    m_ll = 1.0 + 2.0 * torch.cos(_evaluate(distance_fn, li.reshape(-1), lj.reshape(-1), torch.float64))
    m_ll = m_ll.reshape(k, k)
    m_ll = (m_ll + m_ll.T) / 2
    values, vectors = torch.linalg.eigh(m_ll)
    values, vectors = values[-9:].clamp(min=1e-12), vectors[:, -9:]
    extend = vectors / values.sqrt()  # y_i = m_iL V Λ^{-1/2}
    y = torch.empty(n, 9, dtype=torch.float64, device=device)
    rows = max(1, chunk_pairs // k)
    for start in range(0, n, rows):
        idx = torch.arange(start, min(n, start + rows), device=device)
        i = idx.repeat_interleave(k)
        j = landmarks.repeat(len(idx))
        m_il = 1.0 + 2.0 * torch.cos(_evaluate(distance_fn, i, j, torch.float64)).reshape(len(idx), k)
        y[start : start + len(idx)] = m_il @ extend
    return rotations_from_embedding(y, n_starts, generator)


def _sample_pairs(n: int, count: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~cryoorient.sampling.random_pairs` on ``device``."""
    i, j = random_pairs(n, count, generator)
    return i.to(device), j.to(device)


def _plateau(history: list[float], window: int, tol: float) -> bool:
    """Whether the mean of the last ``window`` entries is less than ``tol`` below the ``window`` before."""
    before = sum(history[-2 * window : -window]) / window
    after = sum(history[-window:]) / window
    return before - after <= tol * before


def recover_orientations_sampled(
    distances: DistanceFunction | torch.Tensor | np.ndarray,
    n: int | None = None,
    *,
    pairs_per_step: int = 16384,
    pairs_per_epoch: int | None = None,
    init: str | torch.Tensor = "spectral",
    n_landmarks: int = 256,
    lr: float = 0.5,
    lr_halvings: int = 4,
    max_epochs: int = 300,
    tol: float = 1e-3,
    window: int = 4,
    loss_atol: float = 1e-20,
    n_starts: int = 64,
    seed: int | np.random.Generator | torch.Generator = 0,
    device: Device = None,
    dtype: torch.dtype = torch.float64,
) -> RecoveryResult:
    """Recover orientations from distances evaluated on sampled pairs (stochastic minimisation of ``L_OR``).

    Each step draws ``pairs_per_step`` random pairs ``(i, j)``, ``i != j``, evaluates
    ``distance_fn(i, j)`` and moves only the orientations it touched, by a per-row Gauss-Newton
    step: ``|∂d_q/∂q_i| = 2`` on the sphere, so ``q_i ← q_i - lr · mean_k(r_k ∂d_k/∂q_i) / 4``
    over the ``k`` pairs of the batch that contain ``i`` (residual ``r_k = d_q - d̂``) would cancel
    a lone pair's residual at ``lr = 1``. Unlike Adam, whose per-coordinate normalisation keeps
    steps of size ``lr`` even when the residuals vanish, this converges linearly to exact
    solutions. A step costs ``O(pairs_per_step)`` whatever ``P``; memory is ``O(P)`` for the
    parameters plus the batch, and nothing of size ``P²`` is formed. The step is halved at each
    plateau of the loss, and the iterates at the ends of the last phase's epochs are averaged (Polyak
    averaging), which removes most of the mini-batch jitter when the distances are noisy.

    Parameters
    ----------
    distances : a function ``distance_fn(i, j) -> d̂`` taking two ``(B,)`` int64 index tensors on
        ``device`` and returning ``(B,)`` distances in radians in ``[0, π]`` (e.g. a Siamese
        network on cached features), or a ``(P, P)`` matrix (then ``n`` may be omitted).
    n : number of orientations ``P`` (``>= 4``); required with a function.
    pairs_per_step : pairs per mini-batch.
    pairs_per_epoch : pairs per epoch; default ``max(16 P, 16 pairs_per_step)`` (each orientation
        in at least 32 pairs on average), so an epoch costs ``O(P)``.
    init : ``"spectral"`` (landmark spectral initialisation: ``O(P · n_landmarks)`` distance
        evaluations), ``"random"``, or a ``(P, 4)`` tensor.
    n_landmarks : landmarks of the spectral initialisation (at least 10).
    lr : initial fraction of the per-row Gauss-Newton step (dimensionless; 1 is the fastest for
        exact distances, smaller values average noisy ones over more pairs).
    lr_halvings : when the loss stops decreasing (the mean batch loss of the last ``window``
        epochs is less than ``tol`` (relative) below that of the ``window`` before) the learning
        rate is halved, up to this many times; the next plateau ends the run as converged.
        Mini-batch gradients are noisy, so a decreasing step is what lets the iterates settle at
        the minimum of the full ``L_OR``.
    max_epochs : epoch limit.
    tol : plateau threshold on the relative decrease between consecutive windows of epochs.
    window : epochs per window (averaging windows makes the test robust to batch noise).
    loss_atol : converged when an epoch's mean batch loss is ``<= loss_atol``.
    n_starts : random starts of the spectral ``O(9)`` search.
    seed : integer seed, :class:`numpy.random.Generator` or :class:`torch.Generator` (pairs,
        landmarks, starts).
    device : where to compute; ``None`` means CUDA when available, else CPU.
    dtype : floating dtype of the parameters.

    Returns
    -------
    :class:`RecoveryResult`; ``loss_history`` holds one mean batch loss per epoch (the first entry
    before any update), ``loss`` the last one.
    """
    start_time = time.perf_counter()
    device = resolve_device(device)
    if callable(distances):
        if n is None:
            raise ValueError("n (the number of orientations) is required with a distance function")
        n = check_positive_int("n", n)
        if n < 4:
            raise ValueError(f"orientation recovery needs at least 4 orientations; got n = {n}")
        distance_fn = distances
    else:
        d = _check_distances(distances, device, dtype)
        if n is not None and n != d.shape[0]:
            raise ValueError(f"n = {n} does not match the ({d.shape[0]}, {d.shape[0]}) distance matrix")
        n = d.shape[0]
        distance_fn = _matrix_distance_function(d)
    pairs_per_step = check_positive_int("pairs_per_step", pairs_per_step)
    if pairs_per_epoch is None:
        pairs_per_epoch = 16 * max(n, pairs_per_step)
    pairs_per_epoch = check_positive_int("pairs_per_epoch", pairs_per_epoch)
    lr_halvings = check_positive_int("lr_halvings", lr_halvings, minimum=0)
    n_landmarks = check_positive_int("n_landmarks", n_landmarks, minimum=10)
    max_epochs = check_positive_int("max_epochs", max_epochs, minimum=0)
    window = check_positive_int("window", window)
    n_starts = check_positive_int("n_starts", n_starts)
    lr = check_positive("lr", lr)
    if not tol >= 0 or not loss_atol >= 0:
        raise ValueError(f"tol and loss_atol must be non-negative; got {tol!r}, {loss_atol!r}")
    init = _check_init(init, n, device, dtype)
    generator = _torch_generator(seed, device)
    chunk = max(pairs_per_step, 1 << 16)

    if isinstance(init, torch.Tensor):
        x = init.clone()
    elif init == "spectral":
        x = _landmark_spectral(distance_fn, n, n_landmarks, n_starts, generator, device, chunk).to(dtype)
    else:
        x = _random_quaternions(n, generator, device, dtype)

    def batch_loss(count: int) -> float:
        """Mean loss on fresh pairs at the current parameters (the epoch-0 entry)."""
        i, j = _sample_pairs(n, count, generator, device)
        q = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
        return float(((quaternion_distance(q[i], q[j]) - _evaluate(distance_fn, i, j, dtype)) ** 2).mean())

    history = [batch_loss(min(pairs_per_epoch, chunk))]
    steps_per_epoch = max(1, math.ceil(pairs_per_epoch / pairs_per_step))
    steps, epochs, halvings, since = 0, 0, 0, 0
    average, averaged = torch.zeros_like(x), 0  # Polyak average of the final phase's epochs
    converged = history[0] <= loss_atol
    while not converged and epochs < max_epochs:
        total = 0.0
        for _ in range(steps_per_epoch):
            i, j = _sample_pairs(n, pairs_per_step, generator, device)
            target = _evaluate(distance_fn, i, j, dtype)
            xi = x[i].requires_grad_(True)
            xj = x[j].requires_grad_(True)
            d = quaternion_distance(
                xi / torch.linalg.vector_norm(xi, dim=1, keepdim=True),
                xj / torch.linalg.vector_norm(xj, dim=1, keepdim=True),
            )
            residual = (d - target).detach()  # (B,)
            total += float((residual * residual).mean())
            gi, gj = torch.autograd.grad((residual * d).sum(), (xi, xj))  # r_k ∂d_k/∂x, (B, 4) each
            rows, inverse = torch.unique(torch.cat((i, j)), return_inverse=True)
            pull = torch.zeros(len(rows), 4, dtype=dtype, device=device)
            pull.index_add_(0, inverse, torch.cat((gi, gj)))  # (u, 4) summed over each row's pairs
            count = torch.zeros(len(rows), dtype=dtype, device=device)
            count.index_add_(0, inverse, torch.ones(len(inverse), dtype=dtype, device=device))
            new = x[rows] - (lr * 0.5**halvings / 4) * pull / count[:, None]
            x[rows] = new / torch.linalg.vector_norm(new, dim=1, keepdim=True)
            steps += 1
        epochs += 1
        if halvings == lr_halvings:
            average += x
            averaged += 1
        history.append(total / steps_per_epoch)
        if history[-1] <= loss_atol:
            converged = True
        elif epochs - since >= 2 * window and _plateau(history, window, tol):
            if halvings == lr_halvings:
                converged = True
            halvings, since = halvings + 1, epochs
    if averaged:  # the iterates of the last phase jitter around the minimum: return their mean
        x = average  # rows move little within the phase, so their signs agree
    q = canonical_quaternion(x / torch.linalg.vector_norm(x, dim=1, keepdim=True))
    return RecoveryResult(
        quaternions=q.detach(),
        loss_history=np.asarray(history),
        loss=history[-1],
        steps=steps,
        converged=converged,
        seconds=time.perf_counter() - start_time,
        epochs=epochs,
    )
