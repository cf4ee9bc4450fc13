"""Distance learning: train ``G_w`` so that ``d̂_p(p_i, p_j) ≈ d_q(q_i, q_j)``.

The loss is the paper's ``L_DE = mean (d̂_p − d_q)²`` over pairs of training projections, weighted
as the recipe says. Two recipes, ``"paper"`` and ``"inbatch"`` (:mod:`cryoorient.recipes`), decide
the optimiser, the batches, the pairs and their weights; this module holds the loop around them.

Both can add noise and shifts on the fly (``noise_variance``, ``shift_limit``), so one clean
dataset serves every noise level, and can downsample the images (``image_size``) for speed.

Training is checkpointed after every epoch (atomically) and resumes where it stopped, to the same
result as an uninterrupted run: every epoch's randomness derives from ``(seed, epoch)``. Under
``torchrun`` (``torch.distributed`` initialised) the network is wrapped in
DistributedDataParallel: each process computes the features of its share of a batch, features are
gathered, and every process evaluates the loss of the whole batch; batch normalisation uses the
statistics of the whole batch (:class:`cryoorient.siamese.BatchNorm2d`), so a step equals one
process's step on the same batch.

Trained models are cached, found by their configuration, and built from the notebooks' preset in
:mod:`cryoorient.model_cache`.
"""

from __future__ import annotations

import functools
import json
import math
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from cryoorient._checks import resolve_device
from cryoorient._version import __version__
from cryoorient.ctf_correction import TREATMENTS, treat_images, treatment_channels, wiener_snr
from cryoorient.geometry import quaternion_distance, rotate_in_plane
from cryoorient.paths import atomic_write
from cryoorient.projection import add_noise, rotate_images, sample_shifts, shift_images
from cryoorient.recipes import RECIPES, Recipe, make_recipe
from cryoorient.sampling import sample_uniform_distance_pairs
from cryoorient.siamese import SiameseDistance
from cryoorient.study import default_study

__all__ = [
    "FLAT_TOLERANCE",
    "LOSSES",
    "TrainingConfig",
    "TrainingResult",
    "embed",
    "evaluate_distances",
    "input_treatment",
    "split_pairs",
    "load_model",
    "prepare_images",
    "save_model",
    "train_distance",
    "network_for",
    "training_seconds",
    "validation_flat",
]

_MODEL = default_study().model

LOSSES = ("mse", "mae")
# The relative improvement of the best validation loss below which a curve counts as flat
# (``TrainingConfig.patience``).
FLAT_TOLERANCE = 0.01


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that determines a trained distance estimator (with the data it is trained on).

    Attributes
    ----------
    recipe : ``"inbatch"`` or ``"paper"`` (:mod:`cryoorient.recipes`).
    architecture, n_features, distance : the network (:class:`cryoorient.siamese.SiameseDistance`).
    image_size : images are downsampled (area averaging) to this size; ``None`` keeps them.
    epochs : passes over the training images (``inbatch``) or training pairs (``paper``).
    batch_size : images per step (``inbatch``) or pairs per step (``paper``).
    learning_rate, weight_decay : optimiser settings.
    rotations : ``inbatch`` recipe: turn every image by a random in-plane angle ``δ`` and its
        orientation by ``psi → psi + δ`` (exact new examples; see
        :func:`cryoorient.projection.rotate_images`), so the network never sees the same pair twice.
        ``None`` (default): on for ``inbatch``, off for ``paper``.
    noise_variance : σ² of white noise added on the fly (relative to the unit-variance stack).
    shift_limit : triangular shifts ±t pixels added on the fly (pixels of the dataset).
    pairs_fraction : ``paper`` recipe: fraction of all training pairs kept after resampling.
    validation_pairs : validation pairs (uniform in ``d_q``) evaluated after each epoch.
    seed : seeds initialisation, batches, augmentation and pair sampling.
    warm_start : cache key (:func:`cryoorient.model_cache.config_key`) of a trained model whose
        weights start this training (same architecture), e.g. the noiseless model before training
        on noisy images; ``None`` starts from a seeded random initialisation.
        :func:`cryoorient.model_cache.trained_model` resolves it.
    loss : ``"mse"``, the mean squared distance error (ours), or ``"mae"``, the mean absolute error
        (the paper's authors trained their estimators with it); rad² or rad, pairs weighted as the
        recipe says.
    patience : stop before ``epochs`` when the validation curve is flat: when the best validation
        value of the training loss (MSE or MAE, as ``loss``) over the last ``patience`` epochs is
        less than :data:`FLAT_TOLERANCE` (relative) below the best of all earlier epochs.
        ``epochs`` is then the most the training may take; ``None`` trains all ``epochs``.
    treatment : how CTF-affected images are prepared for the network, one of
        :data:`~cryoorient.ctf_correction.TREATMENTS` (``"raw"``, ``"phase_flip"``, ``"wiener"``,
        ``"two_channel"``), applied after the on-the-fly noise, so the noise passes through it as a
        microscope's would; training then needs each image's CTF. ``None`` (default): images
        without a CTF, used as given.
    """

    # the model's settings default to the default study's (cryoorient/studies/default.yml)
    recipe: str = _MODEL["recipe"]
    architecture: str = _MODEL["architecture"]
    n_features: int = _MODEL["n_features"]
    distance: str = _MODEL["distance"]
    image_size: int | None = _MODEL["image_size"]
    epochs: int = _MODEL["epochs"]
    batch_size: int = _MODEL["batch_size"]
    learning_rate: float = _MODEL["learning_rate"]
    weight_decay: float = 1e-4
    rotations: bool | None = None
    noise_variance: float = 0.0
    shift_limit: float = 0.0
    pairs_fraction: float = 0.01
    validation_pairs: int = 4000
    seed: int = 0
    warm_start: str | None = None
    loss: str = "mse"
    patience: int | None = None
    treatment: str | None = None

    def __post_init__(self) -> None:
        if self.treatment is not None and self.treatment not in TREATMENTS:
            choices = ", ".join(TREATMENTS)
            raise ValueError(f"unknown treatment {self.treatment!r}; choose one of {choices} or None")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.patience is not None and (int(self.patience) != self.patience or self.patience < 1):
            raise ValueError(f"patience must be a positive integer or None; got {self.patience!r}")
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        for name in ("epochs", "batch_size", "validation_pairs"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.recipe == "inbatch" and self.batch_size < 2:
            raise ValueError(f"the inbatch recipe needs batch_size >= 2 images; got {self.batch_size}")
        if not self.noise_variance >= 0 or not self.shift_limit >= 0:
            raise ValueError(
                f"noise_variance and shift_limit must be >= 0; got {self.noise_variance}, {self.shift_limit}"
            )
        if self.rotations is None:
            object.__setattr__(self, "rotations", self.recipe == "inbatch")
        if self.recipe == "paper" and self.rotations:
            raise ValueError(
                "the paper recipe trains on fixed pairs resampled to uniform distances, which in-plane "
                "rotations would change; use rotations=False with recipe='paper'"
            )
        if not 0 < self.pairs_fraction <= 1:
            raise ValueError(f"pairs_fraction must be in (0, 1]; got {self.pairs_fraction}")
        network_for(self)  # validates the network

    def to_dict(self) -> dict:
        """JSON-ready parameters.

        ``warm_start``, ``loss``, ``patience`` and ``treatment`` appear only when they differ from
        their defaults, so the cache keys of the models trained before the fields were added did
        not change.
        """
        d = asdict(self)
        for name, default in (("warm_start", None), ("loss", "mse"), ("patience", None), ("treatment", None)):
            if d[name] == default:
                del d[name]
        return d


def input_treatment(config: TrainingConfig) -> dict:
    """How ``config``'s model sees CTF-affected images: ``treatment`` and ``snr`` keywords.

    For :func:`prepare_images`, :func:`embed` and :func:`evaluate_distances`, in training and after
    it alike: the Wiener filter's SNR is :func:`~cryoorient.ctf_correction.wiener_snr` of the σ²
    the model was trained at, whatever the noise of the images it is later given.
    """
    return {"treatment": config.treatment, "snr": wiener_snr(config.noise_variance)}


def network_for(config: TrainingConfig) -> SiameseDistance:
    """A freshly initialised estimator with ``config``'s network (its channels from ``treatment``)."""
    return SiameseDistance(config.architecture, config.n_features, config.distance,
                           in_channels=treatment_channels(config.treatment))


@dataclass
class TrainingResult:
    """A trained estimator and its learning curves.

    ``history`` has one entry per epoch: ``epoch``, ``train_loss`` (mean L_DE of the epoch's
    batches, rad²), ``validation_loss`` (L_DE on uniform-distance validation pairs, rad²),
    ``learning_rate`` and ``seconds`` (cumulative).
    """

    model: SiameseDistance
    config: TrainingConfig
    history: list[dict]
    folder: Path | None = None


# --- data --------------------------------------------------------------------------------------------


def prepare_images(
    images: torch.Tensor,
    image_size: int | None,
    *,
    noise_variance: float = 0.0,
    shift_limit: float = 0.0,
    generator: np.random.Generator | None = None,
    ctf: torch.Tensor | None = None,
    treatment: str | None = None,
    snr: float = 1.0,
) -> torch.Tensor:
    """Augment (shifts, then noise), treat for the CTF and downsample a batch of images for the network.

    Parameters
    ----------
    images : (B, D, D) images, normalised to unit variance over their dataset.
    image_size : output size (area averaging); ``None`` keeps ``D``.
    noise_variance : σ² of added white noise, at the dataset's pixel size.
    shift_limit : triangular shifts ±t pixels, at the dataset's pixel size.
    generator : numpy generator for the augmentation (required when augmenting).
    ctf : (B, D, D) the images' CTFs (unshifted layout), required with ``treatment``.
    treatment : one of :data:`~cryoorient.ctf_correction.TREATMENTS`, applied after the noise;
        ``None`` leaves the images as they are.
    snr : the Wiener filter's SNR; a model's is fixed by its configuration (:func:`input_treatment`).

    Returns
    -------
    (B, C, S, S) float32 images: C = 2 for ``"two_channel"``, else 1.
    """
    x = images.float()
    if (noise_variance > 0 or shift_limit > 0) and generator is None:
        raise ValueError("a generator is needed for on-the-fly augmentation")
    if treatment is not None and ctf is None:
        raise ValueError(f"the {treatment!r} treatment needs the images' CTFs (ctf=)")
    if shift_limit > 0:
        x = shift_images(x, sample_shifts(len(x), shift_limit, seed=generator).to(x.device))
    if noise_variance > 0:
        x = add_noise(x, variance=noise_variance, seed=generator)  # float32 draws from ``generator``
    if treatment is None:
        x = x[:, None]
    else:
        x = treat_images(x, ctf.to(x.device), treatment, snr=snr)
        x = x[:, None] if x.ndim == 3 else x
    if image_size is not None and image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="area")
    return x


def _pair_targets(quaternions: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    return quaternion_distance(quaternions[i], quaternions[j]).float()


# --- evaluation --------------------------------------------------------------------------------------


@torch.no_grad()
def embed(
    model: SiameseDistance,
    images: torch.Tensor,
    image_size: int | None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    noise_variance: float = 0.0,
    shift_limit: float = 0.0,
    seed: int | np.random.Generator = 0,
    ctf: torch.Tensor | None = None,
    treatment: str | None = None,
    snr: float = 1.0,
) -> torch.Tensor:
    """Features ``G_w(p)`` of a stack, computed once in batches: (N, D, D) -> (N, n_f) on CPU.

    ``noise_variance`` and ``shift_limit`` degrade the images first, as in training, with noise and
    shifts drawn from ``seed`` (so a given seed always gives the same noisy test set); ``ctf``
    ((N, D, D)), ``treatment`` and ``snr`` prepare them as :func:`prepare_images` does (a model's
    treatment and SNR: ``**input_treatment(config)``).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = np.random.default_rng(seed)
    model.eval()
    out = [
        model.features(
            prepare_images(images[s : s + batch_size], image_size, noise_variance=noise_variance,
                           shift_limit=shift_limit, generator=generator, treatment=treatment, snr=snr,
                           ctf=None if ctf is None else ctf[s : s + batch_size]).to(device)
        ).cpu()
        for s in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, model.config["n_features"])


def evaluate_distances(
    model: SiameseDistance,
    images: torch.Tensor,
    quaternions: torch.Tensor,
    pairs: torch.Tensor,
    image_size: int | None,
    *,
    device: torch.device | str | None = None,
    noise_variance: float = 0.0,
    shift_limit: float = 0.0,
    seed: int | np.random.Generator = 0,
    ctf: torch.Tensor | None = None,
    treatment: str | None = None,
    snr: float = 1.0,
) -> dict:
    """Estimated vs true distances on given pairs, and the summary metrics.

    Parameters
    ----------
    model : the estimator.
    images : (N, D, D) images; quaternions : (N, 4) their true orientations.
    pairs : (M, 2) index pairs into ``images``.
    image_size : as in training.
    noise_variance, shift_limit, seed : degrade the images used, as :func:`embed` does.
    ctf, treatment, snr : (N, D, D) the images' CTFs, their treatment and its SNR, as in training.

    Returns
    -------
    ``d_p`` and ``d_q`` (M,) float arrays, and ``loss`` (mean (d̂_p − d_q)², rad²), ``rmse``
    (rad), ``mae`` (mean |d̂_p − d_q|, rad: the paper's L_DE, which its authors trained and
    plotted), ``pearson``, ``rmse_above_2`` (RMSE over pairs with ``d_q > 2`` rad).
    """
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
        raise ValueError(f"pairs must be a non-empty (M, 2) index array; got shape {tuple(pairs.shape)}")
    if int(pairs.min()) < 0 or int(pairs.max()) >= len(images):
        raise ValueError(f"pairs reference images outside 0..{len(images) - 1}")
    used, inverse = torch.unique(pairs.flatten(), return_inverse=True)
    features = embed(model, images[used], image_size, device=device, noise_variance=noise_variance,
                     shift_limit=shift_limit, seed=seed, treatment=treatment, snr=snr,
                     ctf=None if ctf is None else ctf[used])
    inverse = inverse.reshape(-1, 2)
    d_p = model.feature_distance(features[inverse[:, 0]], features[inverse[:, 1]]).numpy()
    d_q = _pair_targets(quaternions, pairs[:, 0], pairs[:, 1]).numpy()
    error = d_p - d_q
    far = d_q > 2
    return {
        "d_p": d_p,
        "d_q": d_q,
        "loss": float(np.mean(error**2)),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "pearson": float(np.corrcoef(d_p, d_q)[0, 1]),
        "rmse_above_2": float(np.sqrt(np.mean(error[far] ** 2))) if far.any() else float("nan"),
    }


# --- training ----------------------------------------------------------------------------------------


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _batch_loss(
    model: SiameseDistance,
    network: torch.nn.Module,
    x: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    loss: str = "mse",
) -> torch.Tensor:
    """Weighted L_DE of pairs ``(i, j)`` of a batch of prepared images ``x`` (B, 1, S, S).

    ``loss``: ``"mse"`` averages the squared errors, ``"mae"`` the absolute ones.

    Under DDP every process embeds its share of ``x`` and the features are gathered (with
    gradients), so the loss, and after DDP's averaging the gradient, equal those of one process
    embedding the whole batch.
    """
    rank, world = _distributed()
    if world > 1:
        from torch.distributed.nn.functional import all_gather

        chunks = torch.tensor_split(torch.arange(len(x)), world)
        local = network(x[chunks[rank]])
        sizes = [len(c) for c in chunks]
        padded = F.pad(local, (0, 0, 0, max(sizes) - len(local)))  # all_gather needs equal shapes
        features = torch.cat([g[:n] for g, n in zip(all_gather(padded), sizes, strict=True)])
    else:
        features = network(x)
    error = model.feature_distance(features[i], features[j]) - target
    error = error.abs() if loss == "mae" else error**2
    return (weight * error).sum() / weight.sum()


def _save_atomic(obj: object, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def save_model(model: SiameseDistance, config: TrainingConfig, path: str | Path) -> Path:
    """Write ``model.pt`` (weights, configuration, version) atomically, as :func:`load_model` reads it."""
    path = Path(path)
    _save_atomic({"model": model.state_dict(), "config": config.to_dict(), "version": __version__}, path)
    return path


def _seeded(config: TrainingConfig, *stream: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, *stream])


def _deterministic_on_cpu(train):
    """Run ``train`` with PyTorch's deterministic algorithms when it trains on the CPU.

    With two or more threads some CPU kernels reduce in a scheduling-dependent order, so two runs
    of the same configuration drifted apart (test RMSE 0.094 vs 0.092 rad after 40 epochs);
    deterministic mode removes that at no measured cost here. The caller's setting is restored.
    """

    @functools.wraps(train)
    def wrapper(*args, device: torch.device | str | None = None, **kwargs):
        resolved = resolve_device(device)
        previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        if resolved.type == "cpu":
            torch.use_deterministic_algorithms(True)
        try:
            return train(*args, device=device, **kwargs)
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])

    return wrapper


@_deterministic_on_cpu
def train_distance(
    images: torch.Tensor,
    quaternions: torch.Tensor,
    splits: dict[str, np.ndarray],
    config: TrainingConfig,
    *,
    folder: str | Path | None = None,
    resume: bool = True,
    device: torch.device | str | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    initial: dict | None = None,
    ctf: torch.Tensor | None = None,
) -> TrainingResult:
    """Train a Siamese distance estimator on the ``train`` split, validating on ``validation``.

    Parameters
    ----------
    images : (N, D, D) images normalised to unit variance over the dataset.
    quaternions : (N, 4) their true orientations.
    splits : ``train`` and ``validation`` index arrays (disjoint, so are their pairs).
    config : the training configuration.
    folder : where checkpoints (``checkpoint.pt``, after every epoch), the final ``model.pt`` and
        ``history.json`` go; nothing is written when ``None``.
    resume : continue from ``folder/checkpoint.pt`` when it exists (same configuration).
    device : ``None``: CUDA when available, else CPU.
    progress : show a progress bar (epoch, losses, time left).
    max_steps : stop after this many optimisation steps (smoke tests, tests of distributed
        training); the partial epoch's per-step losses go to ``history.json`` but no ``model.pt``
        is written.
    initial : a ``state_dict`` to start from instead of the random initialisation (the weights
        of ``config.warm_start``; :func:`cryoorient.model_cache.trained_model` loads them).
    ctf : (N, D, D) the images' CTFs (:func:`cryoorient.ctf_correction.ctf_grids`), required
        exactly when ``config.treatment`` is set. With ``config.rotations`` they must be isotropic
        (no astigmatism): a turned image keeps its CTF.
    """
    images = _checked_images(images, quaternions, splits)
    ctf = _checked_ctf(ctf, images, config)
    if config.recipe == "inbatch" and len(splits["train"]) < config.batch_size:
        raise ValueError(
            f"the training split holds {len(splits['train'])} images, fewer than one batch "
            f"(batch_size={config.batch_size}): no step could be taken. Use more images or a smaller batch"
        )
    rank, world = _distributed()
    device = resolve_device(device)
    quaternions = torch.as_tensor(quaternions, dtype=torch.float64)
    train_idx = torch.as_tensor(np.asarray(splits["train"]), dtype=torch.long)
    val_idx = torch.as_tensor(np.asarray(splits["validation"]), dtype=torch.long)

    model = _initial_model(config, initial, device)
    network = model.network
    if world > 1:
        network = DistributedDataParallel(network, device_ids=[device] if device.type == "cuda" else None)
    recipe = make_recipe(config, quaternions, train_idx, _seeded(config, 1))
    optimizer = recipe.optimizer(model.parameters())
    scheduler = recipe.scheduler(optimizer)
    val_pairs = split_pairs(quaternions, val_idx, config.validation_pairs, seed=_seeded(config, 2))

    folder = Path(folder) if folder is not None else None
    checkpoint = folder / "checkpoint.pt" if folder is not None else None
    start, history = 0, []
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        if resume and checkpoint.exists():
            start, history = _resume(checkpoint, config, model, optimizer, scheduler, device)

    steps = 0
    elapsed = history[-1]["seconds"] if history else 0.0
    bar = tqdm(range(start, config.epochs), desc="training", unit="epoch", disable=not progress or rank != 0,
               initial=start, total=config.epochs)
    for epoch in bar:
        if validation_flat(history, config):  # also when a run that had stopped is resumed
            break
        tic = time.perf_counter()
        model.train()
        budget = None if max_steps is None else max_steps - steps
        losses = _train_epoch(
            model, network, recipe, optimizer, scheduler, images, quaternions, _seeded(config, 3, epoch),
            device, budget, ctf,
        )
        steps += len(losses)
        _check_finite(losses, epoch + 1, folder)
        if max_steps is not None and steps >= max_steps:  # a partial epoch: no model.pt
            history = history + [{"epoch": epoch + 1, "train_losses": losses}]
            if folder is not None and rank == 0:
                _write_history(folder / "history.json", history)
            return TrainingResult(model, config, history, folder)
        val = evaluate_distances(
            model, images, quaternions, val_pairs, config.image_size, device=device,
            noise_variance=config.noise_variance, shift_limit=config.shift_limit, seed=_seeded(config, 4),
            ctf=ctf, **input_treatment(config),
        )  # the same degraded validation images every epoch
        elapsed += time.perf_counter() - tic
        _check_finite([val["loss"]], epoch + 1, folder, "validation")
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "validation_loss": val["loss"],
                "validation_mae": val["mae"],
                "learning_rate": optimizer.param_groups[0]["lr"],
                "seconds": elapsed,
            }
        )
        bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val=f"{val['loss']:.3f}")
        if checkpoint is not None and rank == 0:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1}
            state |= {"history": history, "config": config.to_dict()}
            if scheduler is not None:
                state["scheduler"] = scheduler.state_dict()
            _save_atomic(state, checkpoint)
    if folder is not None and rank == 0:
        save_model(model, config, folder / "model.pt")
        _write_history(folder / "history.json", history)
    return TrainingResult(model, config, history, folder)


def training_seconds(history: list[dict]) -> float:
    """The training time of a ``history``: its epochs times the median epoch's duration, seconds.

    The history's ``seconds`` are cumulative wall time, so a run that was paused (suspended, or
    waiting on a busy machine) counts the wait in the epoch it fell in; the median epoch does not.
    ``0.0`` for an empty history; the last ``seconds`` for a single epoch.
    """
    seconds = [h["seconds"] for h in history if "seconds" in h]
    if len(seconds) < 2:
        return float(seconds[-1]) if seconds else 0.0
    durations = np.diff([0.0, *seconds])
    return float(len(durations) * np.median(durations))


def validation_flat(history: list[dict], config: TrainingConfig) -> bool:
    """Whether the validation curve ``history`` is flat by ``config.patience`` (see :class:`TrainingConfig`).

    The curve is the validation value of the loss trained (``validation_loss``, MSE, or
    ``validation_mae``); it needs more than ``patience`` epochs, and always ``False`` without one.
    """
    patience = config.patience
    if patience is None or len(history) <= patience:
        return False
    name = "validation_mae" if config.loss == "mae" else "validation_loss"
    values = [h[name] for h in history]
    before, last = min(values[:-patience]), min(values[-patience:])
    return last > (1 - FLAT_TOLERANCE) * before


def _check_finite(losses: list[float], epoch: int, folder: Path | None, which: str = "training") -> None:
    """Stop, writing no model, when a loss is NaN or infinite (diverged training)."""
    if all(math.isfinite(v) for v in losses):
        return
    where = f"; the checkpoint in {folder} holds the last finite epoch" if folder is not None else ""
    raise ValueError(
        f"the {which} loss became NaN or infinite in epoch {epoch}: training diverged and no model was "
        f"written{where}. Lower the learning rate, or check the images for outliers"
    )


def _write_history(path: Path, history: list[dict]) -> None:
    """``history.json``, strict JSON (NaN is refused, never written), atomically."""
    text = (json.dumps(history, indent=2, allow_nan=False) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))


def _checked_images(images, quaternions, splits: dict[str, np.ndarray]) -> torch.Tensor:
    """``images`` as a tensor, after checking them, their orientations and the splits against each other."""
    for name in ("train", "validation"):
        if name not in splits or len(splits[name]) < 2:
            raise ValueError(f"split {name!r} must hold at least 2 images; got {len(splits.get(name, []))}")
    images = torch.as_tensor(images)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be a stack of square images (N, D, D); got {tuple(images.shape)}")
    if len(quaternions) != len(images):
        raise ValueError(f"{len(images)} images but {len(quaternions)} orientations")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    return images


def _checked_ctf(ctf, images: torch.Tensor, config: TrainingConfig) -> torch.Tensor | None:
    """``ctf`` as a float32 tensor, checked against the images and the configuration's treatment."""
    if config.treatment is None:
        if ctf is not None:
            raise ValueError("CTFs were given but config.treatment is None: choose how the network sees them")
        return None
    if ctf is None:
        raise ValueError(f"config.treatment={config.treatment!r} needs the images' CTFs (ctf=)")
    ctf = torch.as_tensor(ctf, dtype=torch.float32)
    if tuple(ctf.shape) != tuple(images.shape):
        raise ValueError(f"ctf must have the images' shape {tuple(images.shape)}; got {tuple(ctf.shape)}")
    return ctf


def _initial_model(config: TrainingConfig, initial: dict | None, device: torch.device) -> SiameseDistance:
    """The network before training: seeded random weights, or ``initial`` (a warm start)."""
    torch.manual_seed(config.seed)
    model = network_for(config).to(device)
    if initial is not None:
        model.load_state_dict(initial)
    elif config.warm_start is not None:
        raise ValueError(
            f"config.warm_start={config.warm_start!r} needs its weights: pass initial=, or use "
            "cryoorient.model_cache.trained_model"
        )
    return model


def _resume(
    checkpoint: Path,
    config: TrainingConfig,
    model: SiameseDistance,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device,
) -> tuple[int, list[dict]]:
    """Load ``checkpoint`` into the model, optimiser and schedule; return (epochs done, history)."""
    try:
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        stored = state["config"]
    except (OSError, RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"{checkpoint}: unreadable checkpoint ({error}); delete it or pass resume=False"
        ) from error
    if stored != config.to_dict():
        raise ValueError(f"{checkpoint} was written for another configuration; use a new folder")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], state["history"]


def _train_epoch(
    model: SiameseDistance,
    network: torch.nn.Module,
    recipe: Recipe,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    images: torch.Tensor,
    quaternions: torch.Tensor,
    rng: np.random.Generator,
    device: torch.device,
    budget: int | None = None,
    ctf: torch.Tensor | None = None,
) -> list[float]:
    """One epoch of optimisation steps (at most ``budget``); returns each step's loss.

    ``rng`` draws, in this order, the batch order, then per batch the in-plane rotations (when
    the config asks for them) and the on-the-fly shifts and noise.
    """
    config = recipe.config
    losses = []
    for batch in recipe.batches(rng):
        used, i, j = recipe.pairs(batch)
        batch_images, batch_q = images[used], quaternions[used]
        if config.rotations:
            delta = torch.from_numpy(rng.uniform(0.0, 2 * math.pi, len(used)))
            batch_images = rotate_images(batch_images, delta)
            batch_q = rotate_in_plane(batch_q, delta)
        target = _pair_targets(batch_q, i, j)
        weight = recipe.weights(target)
        x = prepare_images(
            batch_images, config.image_size, noise_variance=config.noise_variance,
            shift_limit=config.shift_limit, generator=rng, ctf=None if ctf is None else ctf[used],
            **input_treatment(config),
        ).to(device)
        i, j, target, weight = (t.to(device) for t in (i, j, target, weight))
        loss = _batch_loss(model, network, x, i, j, target, weight, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
        if budget is not None and len(losses) >= budget:
            break
    return losses


def load_model(
    path: str | Path, device: torch.device | str | None = None
) -> tuple[SiameseDistance, TrainingConfig]:
    """Load a ``model.pt`` written by :func:`train_distance`.

    Raises ``ValueError`` naming the file when it is corrupt or from another architecture.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=device or "cpu", weights_only=False)
        config = TrainingConfig(**state["config"])
        model = network_for(config)
        model.load_state_dict(state["model"])
    except (
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
    ) as error:
        raise ValueError(f"{path}: not a usable cryoorient model ({error}); delete it to retrain") from error
    return model.to(device or "cpu").eval(), config


def split_pairs(
    quaternions: torch.Tensor, indices: np.ndarray, n_pairs: int, seed: int | np.random.Generator = 0
) -> torch.Tensor:
    """Pairs of distinct items of a split whose distances ``d_q`` are uniform on ``[0, π]``.

    Parameters
    ----------
    quaternions : (N, 4) orientations of the whole dataset.
    indices : the split's indices into ``quaternions``.
    n_pairs : how many pairs (at most all pairs of the split).
    seed : seed of the resampling.

    Returns
    -------
    (n_pairs, 2) long indices into ``quaternions``.
    """
    indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    n_pairs = min(int(n_pairs), len(indices) * (len(indices) - 1) // 2)
    if n_pairs < 1:
        raise ValueError(f"a split of {len(indices)} items has no pairs")
    return indices[sample_uniform_distance_pairs(quaternions[indices], n_pairs, seed=seed)]
