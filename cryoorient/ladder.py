"""The ablation ladder: from the paper's method to ours, one change at a time (notebook 09).

Our estimator differs from the paper's in several ways at once, so a verdict "better than the
paper" says nothing about which change bought what. The ladder starts from the paper's method at
our images (``Study.paper_method``: its recipe, 7-stage network, its ``d_f = d_q`` on the
features, MAE loss, RMSProp, and its recovery: a random start and Adam) and makes one change per
rung, ending at our method:

====  =======================  ==============================================================
rung  name                     what it changes (everything else as the rung before)
====  =======================  ==============================================================
0     ``paper``                nothing: the paper's method at the study's images
1     ``inbatch``              in-batch pairs: every pair of a batch of images, weighted to
                               uniform distances, in-plane rotations, AdamW with a cosine
                               schedule over the study's epochs (:mod:`cryoorient.recipes`)
2     ``orientation``          the orientation ``d_f`` instead of the paper's geodesic one
3     ``mse``                  the squared error as the training loss instead of the MAE
4     ``compact``              the compact network on 32-px inputs with ``n_f = 128``: our
                               estimator (``Study.model``)
5     ``spectral``             our recovery: the spectral start and L-BFGS instead of a random
                               start and Adam: our method
====  =======================  ==============================================================

Rung 4's estimator is the study's own model, and rung 5 changes only the recovery, so only rungs
0-3 train estimators of their own. Every rung is evaluated on the same noiseless test split.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from cryoorient.alignment import align_orientations
from cryoorient.geometry import canonical_quaternion, quaternion_distance
from cryoorient.model_cache import model_config, paper_method_config
from cryoorient.pipeline import estimated_distances
from cryoorient.recovery import RecoveryResult, orientation_loss, recover_orientations
from cryoorient.sampling import haar_quaternions, random_pairs, sample_uniform_distance_pairs
from cryoorient.siamese import SiameseDistance
from cryoorient.study import Study
from cryoorient.training import TrainingConfig

__all__ = [
    "PAPER_RECOVERY",
    "RECOVERIES",
    "Rung",
    "evaluate",
    "evaluation_pairs",
    "ladder",
    "paper_recovery",
    "recover",
]

RECOVERIES = ("paper", "ours")
PAPER_RECOVERY = {"steps": 7000, "batch_size": 256, "learning_rate": 0.5}
"""The paper's recovery (its App. B, and § 3.5 "with the same experimental setting"): 7,000 Adam
steps at a learning rate of 0.5, each on 256 random pairs."""


@dataclass(frozen=True)
class Rung:
    """One rung of the ladder.

    Attributes
    ----------
    name : short name (``paper``, ``inbatch``, ...).
    change : what the rung changes from the one before, in words.
    config : the distance estimator's training configuration.
    recovery : ``"paper"`` (random start, Adam) or ``"ours"`` (spectral start, L-BFGS).
    """

    name: str
    change: str
    config: TrainingConfig
    recovery: str


def ladder(study: Study, seed: int | None = None) -> list[Rung]:
    """The rungs from the paper's method to ours (module docstring), noiseless, for ``study``.

    ``seed`` trains every estimator with another seed (default: the study's).
    """
    seed = study.seed if seed is None else seed
    ours = model_config(study.model, seed=seed)
    paper = paper_method_config(study, seed=seed)
    inbatch = replace(
        paper, recipe="inbatch", rotations=True, batch_size=ours.batch_size, learning_rate=ours.learning_rate,
        weight_decay=ours.weight_decay, epochs=ours.epochs, patience=None,
    )
    orientation = replace(inbatch, distance=ours.distance)
    mse = replace(orientation, loss=ours.loss)
    compact = replace(
        mse, architecture=ours.architecture, n_features=ours.n_features, image_size=ours.image_size
    )
    if compact != ours:
        raise ValueError(
            f"profile {study.profile!r}: the ladder's last estimator is not the study's model; they differ "
            f"in {sorted(k for k, v in compact.to_dict().items() if ours.to_dict().get(k) != v)}"
        )
    return [
        Rung("paper", "the paper's method at our images", paper, "paper"),
        Rung("inbatch", "+ in-batch pairs (AdamW, cosine schedule, rotations)", inbatch, "paper"),
        Rung("orientation", "+ orientation d_f", orientation, "paper"),
        Rung("mse", "+ squared-error loss", mse, "paper"),
        Rung("compact", f"+ compact network, {ours.image_size} px, n_f = {ours.n_features}", ours, "paper"),
        Rung("spectral", "+ spectral start and L-BFGS recovery", ours, "ours"),
    ]


def paper_recovery(
    distances: torch.Tensor | np.ndarray,
    *,
    steps: int = PAPER_RECOVERY["steps"],
    batch_size: int = PAPER_RECOVERY["batch_size"],
    learning_rate: float = PAPER_RECOVERY["learning_rate"],
    error_variance: float = 0.0,
    seed: int = 0,
) -> RecoveryResult:
    """The paper's recovery: Adam on ``L_OR`` over mini-batches of random pairs, from a random start.

    Each orientation is a free 4-vector, started at a Haar-random unit quaternion; every step draws
    ``batch_size`` pairs ``(i, j)`` of distinct projections uniformly and takes an Adam step on
    ``mean (d̂_ij − d_q(q_i / |q_i|, q_j / |q_j|))²`` (the vectors are normalised inside ``d_q``
    only, never rescaled). As in the authors' code, where each orientation is its own variable, Adam
    moves and updates the moments of only the orientations a step touches (its bias correction
    counts every step). The authors initialised Euler angles over part of their ranges; a Haar
    start is the unbiased choice.

    Parameters
    ----------
    distances : (P, P) estimated distances, radians; P >= 4.
    steps, batch_size, learning_rate : :data:`PAPER_RECOVERY` by default.
    error_variance : the paper's perturbation protocol (its Fig. 5): every step adds fresh
        Gaussian errors of this variance (rad²) to its batch's distances, not clipped to
        ``[0, π]``; 0 uses the distances as given.
    seed : seeds the start, the pairs and the errors.

    Returns
    -------
    :class:`~cryoorient.recovery.RecoveryResult` whose ``loss_history`` holds every step's batch
    loss (rad²) and ``loss`` the full ``L_OR`` at the end; ``converged`` is ``False`` (a fixed
    number of steps, no stopping rule).
    """
    tic = time.perf_counter()
    d = torch.as_tensor(distances, dtype=torch.float64)
    n = len(d)
    if d.shape != (n, n) or n < 4:
        raise ValueError(f"distances must be a (P, P) matrix with P >= 4; got shape {tuple(d.shape)}")
    if not error_variance >= 0:
        raise ValueError(f"error_variance must be >= 0 (rad²); got {error_variance!r}")
    generator = torch.Generator().manual_seed(int(seed))
    x = haar_quaternions(n, generator)
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    beta1, beta2, eps = 0.9, 0.999, 1e-7  # Keras' Adam, which the authors used
    history = np.empty(steps)
    for step in range(1, steps + 1):
        i, j = random_pairs(n, batch_size, generator)
        rows = torch.cat([i, j]).unique()
        xr = x[rows].requires_grad_(True)
        where = torch.searchsorted(rows, torch.stack([i, j]))
        unit = xr / torch.linalg.vector_norm(xr, dim=1, keepdim=True)
        target = d[i, j]
        if error_variance > 0:
            target = target + math.sqrt(error_variance) * torch.randn(
                batch_size, generator=generator, dtype=torch.float64
            )
        loss = ((target - quaternion_distance(unit[where[0]], unit[where[1]])) ** 2).mean()
        (grad,) = torch.autograd.grad(loss, xr)
        m[rows] = beta1 * m[rows] + (1 - beta1) * grad
        v[rows] = beta2 * v[rows] + (1 - beta2) * grad**2
        step_size = learning_rate * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        x[rows] -= step_size * m[rows] / (v[rows].sqrt() + eps)
        history[step - 1] = float(loss.detach())
    q = canonical_quaternion(x / torch.linalg.vector_norm(x, dim=1, keepdim=True))
    return RecoveryResult(
        quaternions=q, loss_history=history, loss=orientation_loss(q, d), steps=steps, converged=False,
        seconds=time.perf_counter() - tic,
    )


def recover(distances: torch.Tensor | np.ndarray, method: str, *, seed: int = 0) -> RecoveryResult:
    """Orientations from a ``(P, P)`` distance matrix (radians): the paper's recovery or ours.

    ``"paper"``: :func:`paper_recovery`; ``"ours"``: the spectral start and L-BFGS
    (:func:`cryoorient.recovery.recover_orientations`).
    """
    if method not in RECOVERIES:
        raise ValueError(f"unknown recovery {method!r}; choose one of {', '.join(RECOVERIES)}")
    if method == "ours":
        return recover_orientations(distances, seed=seed)
    return paper_recovery(distances, seed=seed)


def evaluation_pairs(quaternions: torch.Tensor, n_pairs: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Pairs of the test projections on which ``L_DE`` is measured: (n_pairs, 2) indices into ``quaternions``.

    ``"uniform"``: distances ``d_q`` uniform on ``[0, π]`` (as the training pairs; the notebooks'
    test pairs); ``"random"``: pairs of distinct projections drawn uniformly, whose ``d_q`` follow
    the distribution of random orientations (density ``(1 − cos θ)/π``, mostly large).
    """
    q = torch.as_tensor(quaternions, dtype=torch.float64)
    i, j = random_pairs(len(q), n_pairs, torch.Generator().manual_seed(int(seed)))
    return {
        "uniform": sample_uniform_distance_pairs(q, n_pairs, seed=np.random.default_rng([seed, 8])),
        "random": torch.stack([i, j], dim=1),
    }


def evaluate(
    model: SiameseDistance,
    image_size: int | None,
    images: torch.Tensor,
    quaternions: torch.Tensor,
    pairs: dict[str, torch.Tensor],
    recovery: str,
    *,
    seed: int = 0,
    device: str | None = None,
    starts: int = 1,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """One rung measured on test projections: its distances, recovery and alignment.

    Parameters
    ----------
    model, image_size : the rung's estimator and its input size.
    images : (P, D, D) the test projections; quaternions : (P, 4) their true orientations.
    pairs : :func:`evaluation_pairs` of the test projections.
    recovery : ``"paper"`` or ``"ours"`` (:func:`recover`).
    seed : seed of the recovery's start and the alignment.
    device : where to run the network.
    starts : recoveries from this many starts (seeds ``seed``, ``seed + 1``, ...) on the same
        distances; more than one adds ``e_or_starts``, the E_OR of each (rad), so a reader sees
        whether a random start's minimum is the one reported. The other values are the first start's.

    Returns
    -------
    ``(values, arrays)``: ``values`` holds ``mae`` and ``rmse`` on each kind of pairs (rad),
    ``e_or`` and ``median`` (rad, after the O(4) alignment), ``l_or`` (rad²), the recovery's
    ``steps``, ``converged`` and ``recovery_seconds`` (and ``e_or_starts``, see ``starts``);
    ``arrays`` the ``errors`` (P,) per projection, the ``recovered`` (P, 4) quaternions, and for
    each kind of pairs ``d_p/KIND`` and ``d_q/KIND`` (M,), the estimated and true distances (rad).
    """
    if starts < 1:
        raise ValueError(f"starts must be at least 1; got {starts}")
    q = torch.as_tensor(quaternions, dtype=torch.float64)
    distances = estimated_distances(model, images, image_size, device=device)
    values: dict = {}
    arrays: dict = {}
    for kind, ij in pairs.items():
        d_p = distances[ij[:, 0], ij[:, 1]]
        d_q = quaternion_distance(q[ij[:, 0]], q[ij[:, 1]])
        error = d_p - d_q
        values[kind] = {"mae": float(error.abs().mean()), "rmse": float(error.pow(2).mean().sqrt())}
        arrays |= {f"d_p/{kind}": d_p.cpu(), f"d_q/{kind}": d_q.cpu()}
    result = recover(distances, recovery, seed=seed)
    aligned = align_orientations(q, result.quaternions.cpu(), seed=seed)
    values |= {
        "e_or": aligned.error, "median": float(aligned.errors.median()), "l_or": result.loss,
        "steps": result.steps, "converged": result.converged, "recovery_seconds": result.seconds,
    }
    if starts > 1:
        others = [recover(distances, recovery, seed=seed + k).quaternions.cpu() for k in range(1, starts)]
        values["e_or_starts"] = [aligned.error] + [align_orientations(q, o, seed=seed).error for o in others]
    return values, arrays | {"errors": aligned.errors, "recovered": result.quaternions.cpu()}
