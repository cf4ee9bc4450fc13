"""The model cache: trained distance estimators, found by their configuration and dataset.

:func:`trained_model` returns the estimator for a :class:`~cryoorient.training.TrainingConfig`
trained on a dataset: from the cache folder ``data/models/KEY`` when it is there, else from the
repository's shipped ``models/KEY`` (checked by SHA-256), else trained now with
:func:`~cryoorient.training.train_distance` (resuming an interrupted run) and cached. ``KEY``
(:func:`config_key`) hashes the configuration, the dataset's key, the cache schema
(:data:`cryoorient.paths.CACHE_SCHEMA`, so a release finds the shipped models) and the network's
layout, so a changed setting never reuses a stale model, and an unreadable model is
retrained with a :class:`ModelCacheWarning`.

The notebooks build their configurations here too: :data:`DEFAULT_MODEL` and :func:`model_config`
(the preset a profile changes), and the noise study's estimators, each fine-tuned from the one
below (:func:`noise_curriculum`, :func:`warm_started`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cryoorient.ctf_correction import ctf_grids
from cryoorient.dataset import Dataset
from cryoorient.model_input import TRAINING_RECORD, InputRecord, write_record
from cryoorient.paths import CACHE_SCHEMA, atomic_write, data_dir, installed_source, repo_root, sha256_file
from cryoorient.sampling import SAMPLING_SCHEMES
from cryoorient.study import Study, default_study
from cryoorient.training import TrainingConfig, TrainingResult, load_model, network_for, train_distance

__all__ = [
    "CURRICULUM_EPOCHS",
    "CURRICULUM_LEARNING_RATE",
    "DEFAULT_MODEL",
    "NOISE_LEVELS",
    "ModelCacheWarning",
    "config_key",
    "curriculum_stage",
    "dataset_ctf",
    "dataset_model",
    "dataset_record",
    "model_config",
    "noise_curriculum",
    "paper_method_config",
    "ship_model",
    "shipped_models_dir",
    "trained_model",
    "warm_started",
]

_STUDY = default_study()

DEFAULT_MODEL = dict(_STUDY.model)
"""The default profile's distance model (``cryoorient/studies/default.yml``, its one home): a profile
changes it with its ``model`` mapping (``paper.yml`` gives the paper's), and every notebook builds
the same configuration with :func:`model_config`, so a model trained by one is found in the cache
by the others. :class:`~cryoorient.training.TrainingConfig`'s defaults and the CLI's ``train``
defaults are the same settings."""

NOISE_LEVELS = _STUDY.noise_levels
"""Noise variances σ² of the default study's noise study, beside the noiseless model."""

CURRICULUM_EPOCHS = _STUDY.curriculum_epochs
"""Epochs of each stage of :func:`noise_curriculum` in the default study."""

CURRICULUM_LEARNING_RATE = _STUDY.curriculum_learning_rate
"""Peak learning rate of the fine-tuning stages of :func:`noise_curriculum` (the noiseless model
trains at 1e-3; restarting each stage at 1e-3 undid part of what the previous level learnt: at σ² = 1
after 5 epochs, E_OR 0.170 rad against 0.147 at 3e-4, and the same at σ² = 4)."""


class ModelCacheWarning(UserWarning):
    """A cached model was unusable and is being retrained."""


def shipped_models_dir() -> Path | None:
    """The repository's ``models/`` folder of shipped estimators, or ``None`` outside a checkout.

    It holds the default profile's trained estimators (``models/KEY/model.pt`` and
    ``history.json``, KEY as in the cache) and ``registry.json``, their SHA-256. Training them
    takes about an hour on two CPU cores; shipped, a notebook (or the test suite) that asks for
    the same configuration on the same dataset loads them instead. Any other configuration, or a
    file whose hash does not match, is trained as usual.
    """
    root = repo_root()
    return root / "models" if root is not None and (root / "models" / "registry.json").is_file() else None


RAW_URL = "https://raw.githubusercontent.com/{owner}/{name}/{commit}/"
"""Where a GitHub repository's files are served at a commit (:func:`_fetch_shipped`). The
environment variable ``CRYOORIENT_RAW_URL`` replaces it (same placeholders): a mirror, or the local
server of ``benchmarks/colab_like.py``, which stands in for GitHub."""


def ship_model(
    key: str,
    orientations: str,
    cache_dir: Path | None = None,
    models: Path | None = None,
    dataset_noise_variance: float | None = None,
) -> dict:
    """Copy the cached model ``key`` into the repository's ``models/`` and pin it in ``registry.json``.

    For maintainers, after a notebook has trained a default-profile estimator worth shipping
    (``python -m cryoorient.model_cache KEY --orientations SCHEME``). The registry entry records
    the SHA-256 of ``model.pt``, ``history.json`` and (when the cache has it) ``training_data.json``,
    and the noise variance, epochs and warm start read from the model's own configuration;
    ``orientations`` (one of :data:`~cryoorient.sampling.SAMPLING_SCHEMES`) names the
    dataset's orientations, which the model file does not hold; so does ``dataset_noise_variance``,
    the noise simulated once into the dataset's images (the paper's way), beside the configuration's
    ``noise_variance``, drawn afresh at every step.

    Parameters
    ----------
    key : cache key of the model (:func:`config_key`), the name of its folder in the cache.
    orientations : sampling scheme of the dataset it was trained on.
    cache_dir : the model cache (default ``data_dir() / "models"``).
    models : the shipped-models folder holding ``registry.json`` (default :func:`shipped_models_dir`).
    dataset_noise_variance : σ² of the noise in the dataset's images, recorded when given (and not 0).

    Returns
    -------
    The registry entry written.
    """
    if orientations not in SAMPLING_SCHEMES:
        choices = ", ".join(SAMPLING_SCHEMES)
        raise ValueError(f"unknown orientations {orientations!r}; choose one of {choices}")
    source = (data_dir() / "models" if cache_dir is None else Path(cache_dir)) / key
    models = shipped_models_dir() if models is None else Path(models)
    if models is None or not (models / "registry.json").is_file():
        raise FileNotFoundError("no models/registry.json: run this in a checkout of the repository")
    missing = [name for name in _MODEL_FILES[:2] if not (source / name).is_file()]
    if missing:
        lacking = " and ".join(missing)
        raise FileNotFoundError(f"{source} lacks {lacking}: train the model first (run its notebook)")
    config = load_model(source / "model.pt")[1]  # ValueError naming the file when it is not a model
    target = models / key
    names = [name for name in _MODEL_FILES if (source / name).is_file()]
    _copy_files(target, {name: source / name for name in names})
    entry = {name: sha256_file(target / name) for name in names} | {
        "noise_variance": config.noise_variance,
        "epochs": config.epochs,
        "warm_start": config.warm_start,
        "orientations": orientations,
    }
    if dataset_noise_variance:
        entry["dataset_noise_variance"] = float(dataset_noise_variance)
    registry = json.loads((models / "registry.json").read_text())
    registry[key] = entry
    text = json.dumps(registry, indent=1) + "\n"
    atomic_write(models / "registry.json", lambda f: f.write(text.encode()))
    return entry


def main(argv: list[str] | None = None) -> None:
    """``python -m cryoorient.model_cache KEY --orientations SCHEME``: ship a cached model (maintainers)."""
    parser = argparse.ArgumentParser(
        prog="python -m cryoorient.model_cache",
        description="Copy a cached model into models/ and pin it in models/registry.json (maintainers).",
    )
    parser.add_argument("key", help="cache key of the model: its folder name in data/models/")
    parser.add_argument("--orientations", required=True, choices=SAMPLING_SCHEMES,
                        help="sampling scheme of the dataset it was trained on")
    parser.add_argument("--dataset-noise", type=float, default=None, metavar="SIGMA2",
                        help="σ² of the noise simulated into the dataset's images (omit when clean)")
    args = parser.parse_args(argv)
    try:
        entry = ship_model(args.key, args.orientations, dataset_noise_variance=args.dataset_noise)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(1, f"error: {error}\n")
    print(f"models/{args.key} shipped: {json.dumps(entry)}")


_MODEL_FILES = ("model.pt", "history.json", TRAINING_RECORD)
"""A shipped model's files: the weights and the learning curve (both required), and the training
record (:mod:`cryoorient.model_input`: box, pixel size and the statistics the network saw), which
:func:`dataset_model` writes and which the command line needs to apply the model."""


def _copy_files(folder: Path, files: dict[str, Path]) -> None:
    """Copy a model's files (``files``: name to source) into ``folder``, ``model.pt`` last."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == "model.pt"):  # model.pt last: it marks a complete copy
        data = files[name].read_bytes()
        atomic_write(folder / name, lambda f, data=data: f.write(data))


def _copy_model(folder: Path, files: dict[str, Path], note: str) -> None:
    """Copy a model's checked ``model.pt`` and ``history.json`` into the cache ``folder``."""
    _copy_files(folder, files)
    (folder / "shipped.txt").write_text(note + "\n")


def _install_shipped(folder: Path) -> bool:
    """Copy the shipped model ``folder.name`` into the cache ``folder``, checked by SHA-256."""
    shipped = shipped_models_dir()
    if shipped is None:
        return _fetch_shipped(folder)
    entry = json.loads((shipped / "registry.json").read_text()).get(folder.name)
    if entry is None:
        return False
    source = shipped / folder.name
    names = [name for name in _MODEL_FILES if name in entry]
    for name in names:
        if not (source / name).is_file() or sha256_file(source / name) != entry[name]:
            warnings.warn(f"shipped model {source / name} is missing or altered; training instead",
                          ModelCacheWarning, stacklevel=3)
            return False
    files = {name: source / name for name in names}
    _copy_model(folder, files, f"copied from the repository's models/{folder.name}")
    return True


def _models_url() -> tuple[str, str] | None:
    """``(URL of models/, commit)`` of the GitHub repository pip installed this package from, or ``None``."""
    source = installed_source()
    if source is None:
        return None
    repository, commit = source
    match = re.fullmatch(r"(?:git\+)?https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", repository)
    if match is None:
        return None
    base = os.environ.get("CRYOORIENT_RAW_URL") or RAW_URL
    return base.format(owner=match[1], name=match[2], commit=commit) + "models/", commit


def _fetch_shipped(folder: Path) -> bool:
    """Outside a checkout (e.g. Colab's ``pip install git+...``): download the shipped model.

    From the repository and commit pip installed (its ``direct_url.json``): ``models/registry.json``
    at that commit, then the model's two files, each checked against the registry's SHA-256 by
    pooch. Unreachable or altered: a :class:`ModelCacheWarning`, and the caller trains instead.
    """
    found = _models_url()
    if found is None:
        return False
    base, commit = found
    import pooch

    where = data_dir() / "downloads" / "models"
    try:
        registry = pooch.retrieve(base + "registry.json", known_hash=None, fname=f"registry-{commit}.json",
                                  path=where, progressbar=False)  # pinned by the commit
        entry = json.loads(Path(registry).read_text()).get(folder.name)
        if entry is None:
            return False
        files = {
            name: Path(pooch.retrieve(f"{base}{folder.name}/{name}", known_hash=f"sha256:{entry[name]}",
                                      fname=f"{folder.name}-{name}", path=where, progressbar=False))
            for name in _MODEL_FILES
            if name in entry
        }
    except (OSError, ValueError) as error:  # unreachable (requests' errors are OSErrors), hash mismatch
        text = str(error) if len(str(error)) <= 200 else str(error)[:200] + "..."
        warnings.warn(f"could not download the shipped model {folder.name} from {base} ({text}); "
                      "training instead", ModelCacheWarning, stacklevel=3)
        return False
    _copy_model(folder, files, f"downloaded from {base}{folder.name}/")
    return True


def trained_model(
    images: torch.Tensor,
    quaternions: torch.Tensor,
    splits: dict[str, np.ndarray],
    config: TrainingConfig,
    dataset_key: str,
    *,
    cache_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    ctf: torch.Tensor | None = None,
) -> TrainingResult:
    """The model for ``config`` trained on a dataset: from the cache, else trained and cached.

    The cache folder ``cache_dir/KEY`` (default ``data_dir()/models``) is keyed by
    :func:`config_key` of the configuration and ``dataset_key`` (e.g. the dataset's cache folder
    name, itself a hash of its parameters and map). A run interrupted part-way resumes from its
    last epoch; an unreadable model is retrained with a :class:`ModelCacheWarning`.

    Parameters
    ----------
    images, quaternions, splits : as for :func:`train_distance`.
    config : the training configuration.
    dataset_key : identifies the data ``images`` come from.
    cache_dir, device, progress : where models live, where to train, progress bar.
    ctf : (N, D, D) the images' CTFs, for a configuration with a ``treatment`` (as for
        :func:`train_distance`); they come from the dataset, which ``dataset_key`` names.
    """
    root = Path(cache_dir) if cache_dir is not None else data_dir() / "models"
    folder = root / config_key(config, dataset_key)
    model_path = folder / "model.pt"
    if not model_path.is_file() and cache_dir is None:
        _install_shipped(folder)
    if model_path.is_file():
        try:
            model, stored = load_model(model_path, device=device)
            history = json.loads((folder / "history.json").read_text())
            if stored != config:
                raise ValueError(f"{model_path} holds another configuration")
            return TrainingResult(model, config, history, folder)
        except (ValueError, OSError) as error:
            warnings.warn(f"retraining: {error}", ModelCacheWarning, stacklevel=2)
            model_path.unlink(missing_ok=True)
    initial = None
    if config.warm_start is not None:
        start = root / config.warm_start / "model.pt"
        if not start.is_file():
            raise ValueError(f"warm start {start} does not exist: train (or load) the starting model first")
        initial = load_model(start)[0].state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.txt").write_text(dataset_key + "\n")
    try:
        result = train_distance(
            images, quaternions, splits, config, folder=folder, resume=True, device=device,
            progress=progress, initial=initial, ctf=ctf,
        )
    except ValueError as error:
        if "checkpoint" not in str(error):
            raise
        warnings.warn(f"starting over: {error}", ModelCacheWarning, stacklevel=2)
        (folder / "checkpoint.pt").unlink(missing_ok=True)
        result = train_distance(
            images, quaternions, splits, config, folder=folder, resume=False, device=device,
            progress=progress, initial=initial, ctf=ctf,
        )
    result.model.eval()
    return result


def dataset_model(
    dataset: Dataset,
    config: TrainingConfig,
    *,
    cache_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> TrainingResult:
    """:func:`trained_model` on a cached dataset (:func:`cryoorient.dataset.load_dataset`).

    The dataset's cache folder name (a hash of its parameters and map) keys the model. A
    configuration with a ``treatment`` trains on the dataset's CTFs (a dataset simulated with
    ``ctf=True``); with in-plane rotations they must be isotropic (``defocus_u == defocus_v``).
    """
    images = torch.from_numpy(dataset.particles.images)
    result = trained_model(
        images, dataset.quaternions, dataset.splits, config, dataset.path.name,
        cache_dir=cache_dir, device=device, progress=progress, ctf=dataset_ctf(dataset, config),
    )
    if result.folder is not None and not (result.folder / TRAINING_RECORD).is_file():
        write_record(result.folder, dataset_record(dataset, config))
    return result


def dataset_ctf(dataset: Dataset, config: TrainingConfig) -> torch.Tensor | None:
    """The (N, D, D) CTFs ``config`` trains on: ``None`` without a ``treatment``.

    Raises ``ValueError`` when the configuration has a treatment and the dataset no CTF, or when
    its CTFs are astigmatic and the configuration turns images in-plane (the turned image's CTF
    would turn with it).
    """
    if config.treatment is None:
        return None
    ctf = dataset.particles.ctf
    if ctf is None:
        raise ValueError(
            f"treatment {config.treatment!r} needs a dataset with a CTF; {dataset.path.name} has none "
            "(simulate it with ctf=True)"
        )
    if config.rotations and not np.array_equal(ctf["defocus_u"], ctf["defocus_v"]):
        raise ValueError(f"{dataset.path.name}: astigmatic CTFs and in-plane rotations do not mix; "
                         "use rotations=False")
    images = dataset.particles.images
    return ctf_grids(ctf, images.shape[-1], dataset.particles.pixel_size)


def dataset_record(dataset: Dataset, config: TrainingConfig) -> InputRecord:
    """The :class:`~cryoorient.model_input.InputRecord` of a model trained on ``dataset`` with ``config``.

    The stack's own standard deviation (1 for the clean, normalised datasets; ``√(1 + σ²)`` for a
    dataset simulated with noise) and the configuration's on-the-fly noise make what the network saw.
    """
    images = dataset.particles.images
    return InputRecord.of_training(
        images.shape[-1], dataset.particles.pixel_size, config.noise_variance,
        len(dataset.splits["train"]), stack_std=float(np.std(images, dtype=np.float64)),
    )


def model_config(changes: dict | None = None, **fixed) -> TrainingConfig:
    """The distance model's configuration: :data:`DEFAULT_MODEL`, then ``changes``, then ``fixed``.

    Parameters
    ----------
    changes : a profile's changes to the preset (``{"image_size": None, "epochs": 150, ...}``);
        a name that is not a :class:`TrainingConfig` field is an error.
    fixed : what the experiment itself sets, e.g. ``noise_variance`` and ``seed``.
    """
    changes = dict(changes or {})
    fields = set(TrainingConfig.__dataclass_fields__)
    unknown = sorted(set(changes) - fields)
    if unknown:
        known = ", ".join(sorted(fields))
        raise ValueError(f"unknown model parameter(s) {', '.join(unknown)}; known: {known}")
    return TrainingConfig(**(DEFAULT_MODEL | changes | fixed))


def paper_method_config(study: Study, **fixed) -> TrainingConfig:
    """The paper's own distance model at ``study``'s images (``study.paper_method``), then ``fixed``.

    E.g. ``paper_method_config(study, seed=1, noise_variance=4.87)``; every setting the study does
    not name keeps :class:`~cryoorient.training.TrainingConfig`'s default.
    """
    return TrainingConfig(**(dict(study.paper_method) | {"seed": study.seed} | fixed))


def noise_curriculum(
    dataset: Dataset,
    config: TrainingConfig,
    levels: list[float] | tuple[float, ...],
    *,
    epochs: int = CURRICULUM_EPOCHS,
    learning_rate: float | None = CURRICULUM_LEARNING_RATE,
    cache_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[float, TrainingResult]:
    """Estimators for increasing noise levels, each fine-tuned from the one before (a curriculum).

    The noise is drawn afresh at every step, so one clean dataset serves every level. Training at
    σ² = 16 from scratch leaves the network to discover, through the noise, what a projection's
    orientation looks like; starting from the estimator of the previous, lower level only asks it
    to see through a little more noise. Every model is cached by its configuration, which names the
    model it starts from (``warm_start``), so a rerun loads the whole chain and a changed level or
    epoch count retrains only from there on.

    Parameters
    ----------
    dataset : the clean dataset (:func:`cryoorient.dataset.load_dataset`).
    config : configuration of the first model of the chain (usually the noiseless one, with its
        own ``noise_variance`` and ``epochs``); trained, or loaded from the cache, first.
    levels : noise variances σ² in increasing order; a level equal to ``config.noise_variance`` is
        the first model itself.
    epochs : epochs of each fine-tuning stage (a fresh cosine learning-rate schedule each).
    learning_rate : peak learning rate of the fine-tuning stages (:data:`CURRICULUM_LEARNING_RATE`);
        ``None`` keeps ``config``'s.
    cache_dir, device, progress : as for :func:`trained_model`.

    Returns
    -------
    ``{σ²: TrainingResult}`` for every level; ``result.history`` is that stage's learning curve.
    """
    levels = [float(v) for v in levels]
    if any(b <= a for a, b in zip(levels, levels[1:], strict=False)):
        raise ValueError(f"noise levels must increase strictly; got {levels}")
    if levels and levels[0] < config.noise_variance:
        raise ValueError(
            f"noise levels must start at or above the first model's σ² = {config.noise_variance:g}; "
            f"got {levels[0]:g}"
        )
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer; got {epochs!r}")
    key = dataset.path.name
    current = dataset_model(dataset, config, cache_dir=cache_dir, device=device, progress=progress)
    results = {}
    for level in levels:
        if level != current.config.noise_variance:
            stage = curriculum_stage(current.config, key, level, epochs=epochs, learning_rate=learning_rate)
            current = dataset_model(dataset, stage, cache_dir=cache_dir, device=device, progress=progress)
        results[level] = current
    return results


def curriculum_stage(
    config: TrainingConfig,
    dataset_key: str,
    noise_variance: float,
    *,
    epochs: int = CURRICULUM_EPOCHS,
    learning_rate: float | None = CURRICULUM_LEARNING_RATE,
) -> TrainingConfig:
    """The :func:`noise_curriculum` stage at ``noise_variance`` (σ²) after the model ``config``.

    That model is trained on ``dataset_key``; the stage fine-tunes it, and its cache key names the
    chain so far, so the keys of a whole chain can be derived without training.
    ``learning_rate=None`` keeps ``config``'s.
    """
    return warm_started(
        config, dataset_key, noise_variance=float(noise_variance), epochs=int(epochs),
        learning_rate=config.learning_rate if learning_rate is None else learning_rate,
    )


def warm_started(config: TrainingConfig, dataset_key: str, **changes) -> TrainingConfig:
    """A configuration that starts from the model ``config`` trains on ``dataset_key``.

    E.g. ``warm_started(clean, key, noise_variance=16.0, epochs=20)``: fine-tune the noiseless
    model on noisy images instead of learning the noisy task from scratch.
    """
    return replace(config, warm_start=config_key(config, dataset_key), **changes)


def config_key(config: TrainingConfig, dataset_key: str) -> str:
    """Cache key of a model: its configuration and the dataset it is trained on."""
    network = network_for(config).network
    blob = json.dumps(
        {
            "config": config.to_dict(),
            "dataset": dataset_key,
            "version": CACHE_SCHEMA,  # the field's name from when it hashed the package version
            "network": repr(network),
        },
        sort_keys=True,
    )  # the network's layout is in the key, so a changed architecture never reuses an old model
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


if __name__ == "__main__":
    main()
