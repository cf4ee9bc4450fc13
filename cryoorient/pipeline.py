"""The method end to end on a set of projections: learned distances → orientations → alignment.

Step (i) gives a trained estimator ``d̂_p`` (:mod:`cryoorient.training`); this module applies it to
projections whose orientations are to be recovered (the test split, as in the paper), recovers
the orientations from the estimated distances (:mod:`cryoorient.recovery`), aligns them with the
truth for evaluation (:mod:`cryoorient.alignment`) or, without the truth, fixes their gauge from the
images (:mod:`cryoorient.gauge`); :func:`cryoorient.relion.write_orientations`
writes them as a RELION particle STAR file so that any reconstruction program can use them.

Stacks of any size: :func:`recover_from_images` (what ``cryoorient recover`` runs) embeds the
images once, then recovers from the dense ``(P, P)`` matrix up to :data:`DENSE_LIMIT` particles
(``8 P²`` bytes and the recovery's copies: about 0.75 GB at P = 5,000) and from ``d_f`` evaluated on
sampled pairs of the features beyond (memory linear in ``P``; ``benchmarks/recover_scale.py``
measures both, with the gauge fixing, at P = 1,000 to 20,000).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoorient._checks import Device, check_positive_int, resolve_device
from cryoorient.alignment import AlignmentResult, align_orientations
from cryoorient.dataset import Dataset
from cryoorient.gauge import fix_gauge
from cryoorient.recovery import RecoveryResult, recover_orientations, recover_orientations_sampled
from cryoorient.refinement import FramedMap, map_in_frame
from cryoorient.results import Results, ResultsError, load_results
from cryoorient.siamese import SiameseDistance
from cryoorient.training import embed

__all__ = [
    "DENSE_LIMIT",
    "LearnedRecovery",
    "SavedRecovery",
    "embed_images",
    "estimated_distances",
    "FramedMap",
    "feature_distance_function",
    "learned_recovery",
    "map_in_frame",
    "recover_from_features",
    "recover_from_images",
    "recovered_or_saved",
]

#: Most particles :func:`recover_from_images` recovers from the dense (P, P) matrix; beyond, sampled pairs.
DENSE_LIMIT = 5000
# Pairs per mini-batch of the sampled path (recover_orientations_sampled's default).
SAMPLED_PAIRS_PER_STEP = 16384


@dataclass
class LearnedRecovery:
    """Orientations recovered from learned distances, and their evaluation.

    Attributes
    ----------
    indices : (P,) indices of the projections in their dataset.
    distances : (P, P) estimated distances ``d̂_p``, radians.
    true : (P, 4) true orientations (used only by the alignment).
    recovery : the recovery (``L_OR`` curve, raw orientations).
    alignment : the O(4) alignment with the truth (``E_OR``, aligned orientations, proper or improper class).
    """

    indices: np.ndarray
    distances: torch.Tensor
    true: torch.Tensor
    recovery: RecoveryResult
    alignment: AlignmentResult


def estimated_distances(
    model: SiameseDistance,
    images: torch.Tensor,
    image_size: int | None,
    *,
    device: torch.device | str | None = None,
    ctf: torch.Tensor | None = None,
    treatment: dict | None = None,
) -> torch.Tensor:
    """All estimated distances ``D[i, j] = d̂_p(p_i, p_j)`` of a stack, features computed once.

    Parameters
    ----------
    model : the trained estimator.
    images : (P, D, D) projections, normalised as the training data.
    image_size : the size the model was trained at.
    device : where to run the network.
    ctf, treatment : for a model trained on CTF-affected images, the images' (P, D, D) CTFs and
        :func:`~cryoorient.training.input_treatment` of its configuration.

    Returns
    -------
    (P, P) float64 symmetric distances with a zero diagonal, radians.
    """
    features = embed(model, torch.as_tensor(images), image_size, device=device, ctf=ctf, **(treatment or {}))
    return _distance_matrix(model, features)


def _distance_matrix(model: SiameseDistance, features: torch.Tensor) -> torch.Tensor:
    """(P, P) float64 symmetrised ``d_f`` of (P, n_f) features, zero diagonal (row-blocked, bit-stable)."""
    with torch.no_grad():
        d = model.pairwise(features).double()
    d = d.add(d.T).div_(2)  # = (d + d.T) / 2 bit for bit, one (P, P) temporary fewer
    d.fill_diagonal_(0.0)
    return d


def embed_images(
    model: SiameseDistance,
    images: torch.Tensor,
    image_size: int | None,
    *,
    device: Device = None,
    progress: bool = True,
    chunk: int = 4096,
    ctf: torch.Tensor | None = None,
    treatment: dict | None = None,
) -> torch.Tensor:
    """:func:`cryoorient.training.embed` with a progress bar: (P, D, D) images to (P, n_f) CPU features.

    ``embed`` runs the network on batches of 256 images; calling it on ``chunk`` images at a time
    (a multiple of 256) gives the same batches, hence the same features bit for bit.

    Parameters
    ----------
    model : the estimator; images : (P, D, D) preprocessed particles; image_size : network input
        size (``None``: the images'); device : where to run the network (``None``: where the
        model is, as for ``embed``); progress : show a progress bar; chunk : images per call of
        ``embed``; ctf, treatment : as for :func:`estimated_distances`.
    """
    if isinstance(chunk, bool) or int(chunk) != chunk or chunk < 256 or chunk % 256:
        raise ValueError(f"chunk must be a multiple of embed's batch of 256 images; got {chunk!r}")
    parts = []
    with tqdm(total=len(images), desc="features", unit="image", disable=not progress) as bar:
        for start in range(0, len(images), int(chunk)):
            part = slice(start, start + int(chunk))
            parts.append(embed(model, images[part], image_size, device=device,
                               ctf=None if ctf is None else ctf[part], **(treatment or {})))
            bar.update(len(parts[-1]))
    return torch.cat(parts) if parts else torch.empty(0, model.config["n_features"])


def learned_recovery(
    model: SiameseDistance,
    images: torch.Tensor,
    quaternions: torch.Tensor,
    indices: np.ndarray,
    image_size: int | None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    ctf: torch.Tensor | None = None,
    treatment: dict | None = None,
) -> LearnedRecovery:
    """Recover the orientations of ``images[indices]`` from the estimator's distances.

    Parameters
    ----------
    model : the trained estimator (its ``d_f`` must be bounded by π: cosine or orientation).
    images : (N, D, D) projections of the dataset (already noisy if the experiment is).
    quaternions : (N, 4) their true orientations, for the evaluation only.
    indices : the projections to recover (e.g. the test split), P >= 4.
    image_size : the size the model was trained at.
    seed : seed of the recovery's and alignment's random starts.
    device : where to run the network.
    ctf, treatment : (N, D, D) the images' CTFs and the model's treatment, as for
        :func:`estimated_distances`.
    """
    if model.config["distance"] == "euclidean":
        raise ValueError(
            "Euclidean feature distances are not radians; recover from a cosine or orientation d_f"
        )
    indices = np.asarray(indices)
    images = torch.as_tensor(images)
    distances = estimated_distances(model, images[indices], image_size, device=device,
                                    ctf=None if ctf is None else torch.as_tensor(ctf)[indices],
                                    treatment=treatment)
    recovery = recover_orientations(distances, seed=seed)
    true = torch.as_tensor(quaternions, dtype=torch.float64)[indices]
    alignment = align_orientations(true, recovery.quaternions.cpu(), seed=seed)
    return LearnedRecovery(indices, distances, true, recovery, alignment)


def feature_distance_function(
    model: SiameseDistance,
    features: torch.Tensor,
    *,
    device: Device = None,
    chunk: int = 1 << 14,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``d̂_p`` of index pairs from features computed once, for :func:`recover_orientations_sampled`.

    Each call evaluates ``d_f(f_i, f_j)`` on the requested pairs only, ``chunk`` pairs at a time, in
    the features' dtype (float32 for a network's), so memory is ``O(P · n_f + chunk · n_f)``
    whatever the number of pairs. The values are the entries of :func:`estimated_distances`'s
    matrix before its symmetrisation (``d_f`` is symmetric; the two agree to 1 float32 ulp).

    Parameters
    ----------
    model : the estimator (its ``d_f``).
    features : (P, n_f) features ``G_w(p)`` (:func:`cryoorient.training.embed`).
    device : where the features live and ``d_f`` is computed; ``None`` means CUDA when available.
    chunk : pairs per evaluation of ``d_f``; its temporaries are a few ``chunk · n_f`` floats.

    Returns
    -------
    ``distance_fn(i, j)``: two (B,) int64 index tensors to (B,) float64 distances on ``device``.
    """
    chunk = check_positive_int("chunk", chunk)
    if features.ndim != 2:
        raise ValueError(f"features must be a (P, n_f) matrix; got shape {tuple(features.shape)}")
    dev = resolve_device(device)
    f = features.detach().to(dev)

    def distance_fn(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        i, j = i.to(dev), j.to(dev)
        out = torch.empty(len(i), dtype=torch.float64, device=dev)
        with torch.no_grad():
            for start in range(0, len(i), chunk):
                stop = start + chunk
                out[start:stop] = model.feature_distance(f[i[start:stop]], f[j[start:stop]])
        return out

    return distance_fn


def recover_from_features(
    model: SiameseDistance,
    features: torch.Tensor,
    *,
    dense_limit: int = DENSE_LIMIT,
    seed: int = 0,
    device: Device = None,
) -> tuple[RecoveryResult, str]:
    """Orientations from features computed once: the dense path up to ``dense_limit``, else sampled pairs.

    See :func:`recover_from_images`, which embeds the images and calls this.

    Parameters
    ----------
    model : the estimator (a cosine or orientation ``d_f``, in radians).
    features : (P, n_f) features of the particles, ``P >= 4``.
    dense_limit, seed, device : as for :func:`recover_from_images`.

    Returns
    -------
    The :class:`~cryoorient.recovery.RecoveryResult` and a short description of the path taken.
    """
    if model.config["distance"] == "euclidean":
        raise ValueError(
            "Euclidean feature distances are not radians; recover from a cosine or orientation d_f"
        )
    dense_limit = check_positive_int("dense_limit", dense_limit, minimum=0)
    n = len(features)
    if n <= dense_limit:
        distances = _distance_matrix(model, features)
        recovery = recover_orientations(distances.double(), seed=seed, device=device)
        return recovery, f"dense, {n:,}×{n:,} distances"
    distance_fn = feature_distance_function(model, features, device=device)
    recovery = recover_orientations_sampled(
        distance_fn, n, pairs_per_step=SAMPLED_PAIRS_PER_STEP, seed=seed, device=device
    )
    pairs = recovery.steps * SAMPLED_PAIRS_PER_STEP
    return recovery, (
        f"sampled pairs, {n:,} particles > dense limit {dense_limit:,}: {recovery.epochs} epochs, "
        f"{pairs / 1e6:.3g} M pairs"
    )


def recover_from_images(
    model: SiameseDistance,
    images: torch.Tensor,
    image_size: int | None,
    *,
    dense_limit: int = DENSE_LIMIT,
    seed: int = 0,
    device: Device = None,
    progress: bool = True,
    ctf: torch.Tensor | None = None,
    treatment: dict | None = None,
) -> tuple[RecoveryResult, str]:
    """Orientations of a particle stack from the estimator's distances, in memory that suits ``P``.

    The images are embedded once (``G_w``, in batches). Up to ``dense_limit`` particles the whole
    ``(P, P)`` matrix of :func:`estimated_distances` goes to
    :func:`~cryoorient.recovery.recover_orientations` (full-batch L-BFGS, the notebooks' path);
    the float64 matrix and the recovery's copies of it peak at about ``4 · 8 P²`` bytes (0.75 GB
    measured at P = 5,000, where the whole path took 1.4 GB before the gauge fixing). Beyond,
    :func:`~cryoorient.recovery.recover_orientations_sampled` evaluates ``d_f`` on sampled pairs
    of the features only (:func:`feature_distance_function`): memory ``O(P)`` (1.3 GB for the
    whole path at P = 20,000, the particles' 0.6 GB included), time ``O(P)`` per epoch.

    Parameters
    ----------
    model : the trained estimator (a cosine or orientation ``d_f``: radians).
    images : (P, D, D) particles, already preprocessed as the model's training data (not
        normalised here), ``P >= 4``.
    image_size : the size the model was trained at (``None``: the images' own).
    dense_limit : most particles recovered from the dense matrix.
    seed : seed of the recovery (spectral starts, pairs).
    device : where to run the network, ``d_f`` of sampled pairs and the recovery; ``None``: the
        network runs where the model is (as in :func:`estimated_distances`), the rest on CUDA when
        available, else the CPU.
    progress : show a progress bar while embedding.
    ctf, treatment : for a model trained on CTF-affected images, the particles' (P, D, D) CTFs and
        :func:`~cryoorient.training.input_treatment` of its configuration.

    Returns
    -------
    The :class:`~cryoorient.recovery.RecoveryResult` (quaternions on ``device``, in an arbitrary
    O(4) gauge) and a short description of the path taken, e.g. ``"dense, 1,650×1,650 distances"``.

    Raises
    ------
    ValueError
        A Euclidean ``d_f``, images not a ``(P, D, D)`` stack, fewer than 4 images, or a negative
        ``dense_limit``.
    """
    images = torch.as_tensor(images)
    if images.ndim != 3:
        raise ValueError(f"images must be a (P, D, D) stack; got shape {tuple(images.shape)}")
    if len(images) < 4:
        raise ValueError(f"orientation recovery needs at least 4 images; got {len(images)}")
    if model.config["distance"] == "euclidean":
        raise ValueError(
            "Euclidean feature distances are not radians; recover from a cosine or orientation d_f"
        )
    features = embed_images(model, images, image_size, device=device, progress=progress, ctf=ctf,
                            treatment=treatment)
    return recover_from_features(model, features, dense_limit=dense_limit, seed=seed, device=device)


@dataclass
class SavedRecovery:
    """One noise level's recovered orientations, as notebooks 04 and 06 saved them or computed now.

    Attributes
    ----------
    recovered : (P, 4) float64 orientations as the recovery returned them (arbitrary O(4) gauge).
    aligned : (P, 4) float64 the same after the O(4) alignment with the truth (the paper's way).
    gauge_fixed : (P, 4) float64 the same with the gauge fixed from the images alone
        (:func:`cryoorient.gauge.fix_gauge`), or ``None`` when not asked for.
    e_or : ``E_OR`` of ``aligned``, radians.
    origin : ``"saved"`` (read from notebooks 04 and 06's results) or ``"computed"``.
    """

    recovered: torch.Tensor
    aligned: torch.Tensor
    gauge_fixed: torch.Tensor | None
    e_or: float
    origin: str


def _saved_orientations(profile: str) -> Results | None:
    """Notebook 04's results at ``profile`` with notebook 06's gauge-fixed orientations added.

    A level's ``noiseK/gauge_fixed`` is added only where notebook 06 fixed the gauge of the same
    estimator's orientations (its ``models`` agree with notebook 04's). ``None`` without notebook 04.
    """
    try:
        recovery = load_results("04_orientation_recovery", profile)
    except ResultsError:
        return None
    try:
        gauge = load_results("06_gauge_fixing", profile)
    except ResultsError:
        return recovery
    learned, fixed_models = recovery.values.get("learned", {}), gauge.values.get("models", {})
    added = {
        name: array
        for name, array in gauge.arrays.items()
        if (key := name.removeprefix("noise").removesuffix("/gauge_fixed")) in learned
        and fixed_models.get(key) == learned[key].get("model")
    }
    return Results(recovery.notebook, recovery.profile, recovery.values, recovery.arrays | added,
                   recovery.provenance)


def recovered_or_saved(
    models: dict[float, SiameseDistance],
    model_keys: dict[float, str],
    datasets: Callable[[float], Dataset],
    indices: np.ndarray,
    image_size: int | None,
    *,
    profile: str,
    gauge_levels: Iterable[float] = (),
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[float, SavedRecovery]:
    """Orientations recovered at each noise level: notebooks 04 and 06's, else computed now.

    Notebook 04 saves the raw and aligned orientations of the levels it recovered, and notebook 06
    the gauge-fixed ones of the levels it fixed; a later notebook reads them when they come from the
    same models (the cache keys agree, and notebook 06 ran on notebook 04's saved run) and
    recovers the others with :func:`learned_recovery` (and :func:`cryoorient.gauge.fix_gauge`,
    from that level's images), so it still runs on its own (e.g. in Colab).

    Parameters
    ----------
    models : ``{σ²: estimator}``; model_keys : ``{σ²: the estimator's cache key}``.
    datasets : ``σ² ↦`` the dataset whose images carry that noise (same orientations and splits).
    indices : the projections to recover (the test split).
    image_size : the estimators' input size.
    profile : the results profile to read notebooks 04 and 06's orientations from.
    gauge_levels : the levels whose gauge-fixed orientations are wanted too.
    seed, device : as for :func:`learned_recovery`.

    Returns
    -------
    ``{σ²: SavedRecovery}``.
    """
    saved = _saved_orientations(profile)
    wanted = {f"{level:g}" for level in gauge_levels}
    out = {}
    for level, model in models.items():
        key = f"{level:g}"
        entry = saved.values.get("learned", {}).get(key, {}) if saved is not None else {}
        names = [f"noise{key}/{kind}" for kind in ("recovered", "aligned", "gauge_fixed")]
        needed = names if key in wanted else names[:2]
        if entry.get("model") == model_keys[level] and all(name in saved.arrays for name in needed):
            arrays = [torch.as_tensor(saved.arrays[name], dtype=torch.float64) for name in needed]
            gauge = arrays[2] if key in wanted else None
            out[level] = SavedRecovery(arrays[0], arrays[1], gauge, float(entry["e_or"]), "saved")
            continue
        data = datasets(level)
        images = torch.from_numpy(data.particles.images)
        run = learned_recovery(model, images, data.quaternions, indices, image_size, seed=seed, device=device)
        gauge = None
        if key in wanted:
            fixed = fix_gauge(images[np.asarray(indices)], run.recovery.quaternions.cpu(), seed=seed,
                              device=device, progress=False)
            gauge = fixed.quaternions.cpu()
        raw = run.recovery.quaternions.cpu().to(torch.float64)
        out[level] = SavedRecovery(raw, run.alignment.aligned, gauge, run.alignment.error, "computed")
    return out

