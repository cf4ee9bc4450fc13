import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from cryoorient import model_cache, training
from cryoorient.cli import main
from cryoorient.geometry import quaternion_distance
from cryoorient.model_cache import trained_model
from cryoorient.sampling import sample_orientations, sample_uniform_distance_pairs
from cryoorient.siamese import SiameseDistance, cosine_distance, geodesic_distance, orientation_distance
from cryoorient.training import TrainingConfig, evaluate_distances, load_model, train_distance

TINY = {"image_size": 16, "epochs": 2, "batch_size": 8, "n_features": 16, "validation_pairs": 50}


@pytest.fixture(scope="module")
def data(toy_projections):
    images, q = toy_projections
    splits = {"train": np.arange(0, 32), "validation": np.arange(32, 40), "test": np.arange(40, 48)}
    return images, q, splits


def test_feature_shapes_and_distance_range():
    model = SiameseDistance("compact", 16)
    f = model.features(torch.randn(5, 20, 20))
    assert f.shape == (5, 16)
    d = model.pairwise(f)
    assert d.shape == (5, 5) and (d >= 0).all() and (d <= math.pi + 1e-6).all()
    assert torch.allclose(d, d.T, atol=1e-6) and d.diagonal().abs().max() < 1e-5
    assert sum(p.numel() for p in SiameseDistance("paper", 512).parameters()) == 4_517_888
    assert SiameseDistance("paper", 4).features(torch.randn(2, 40, 40)).shape == (2, 4)


def test_cosine_distance_is_the_angle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert cosine_distance(a, b).item() == pytest.approx(math.pi / 4)
    assert cosine_distance(a, -a).item() == pytest.approx(math.pi)


def test_the_paper_feature_distance_is_d_q_on_unit_features(quaternions):
    """The paper sets d_f = d_q: on quaternion features (any scale, either sign) it is d_q exactly;
    on non-negative features (the paper's network ends in ReLU) it is twice their angle."""
    q = quaternions.double()
    scaled = q * torch.linspace(0.5, 3, len(q), dtype=q.dtype)[:, None]
    d = geodesic_distance(scaled[:, None], -q[None])
    assert torch.allclose(d, quaternion_distance(q[:, None], q[None]), atol=1e-6)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert geodesic_distance(a, b).item() == pytest.approx(2 * cosine_distance(a, b).item())
    assert geodesic_distance(a, torch.tensor([0.0, 2.0])).item() == pytest.approx(math.pi)
    f = torch.randn(6, 5, requires_grad=True)
    SiameseDistance("compact", 5, "geodesic").pairwise(f).sum().backward()
    assert torch.isfinite(f.grad).all()


def test_orientation_distance_is_exact_on_the_rotation_embedding(quaternions):
    q = quaternions.double()
    embedding = (q[:, :, None] * q[:, None, :]).flatten(1) * torch.linspace(0.5, 3, len(q), dtype=q.dtype)[
        :, None
    ]
    d = orientation_distance(embedding[:, None], embedding[None])  # the norm of features does not matter
    assert torch.allclose(d, quaternion_distance(q[:, None], q[None]), atol=2e-3)  # 2e-3: the cos floor
    near = orientation_distance(embedding[:50], embedding[:50] + 1e-7 * torch.randn(50, 16, dtype=q.dtype))
    assert near.max() < 1e-5  # accurate near 0
    f = torch.randn(7, 12, requires_grad=True)
    d = SiameseDistance("compact", 12, "orientation").pairwise(f)
    assert torch.allclose(d, d.T, atol=1e-6) and (d >= 0).all() and (d <= math.pi + 1e-6).all()
    d.sum().backward()
    assert torch.isfinite(f.grad).all()


def test_uniform_distance_pairs_are_uniform():
    q = sample_orientations(400, seed=2)
    pairs = sample_uniform_distance_pairs(q, 5000, seed=3)
    d = quaternion_distance(q[pairs[:, 0]], q[pairs[:, 1]]).numpy()
    assert len(np.unique(pairs.numpy(), axis=0)) == 5000 and (pairs[:, 0] < pairs[:, 1]).all()
    assert stats.kstest(d[d > 0.6], stats.uniform(0.6, math.pi - 0.6).cdf).pvalue > 0.01


def test_training_lowers_the_validation_loss(data):
    images, q, splits = data
    result = train_distance(images, q, splits, TrainingConfig(**TINY | {"epochs": 4}), progress=False)
    losses = [h["validation_loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]


@pytest.mark.slow
def test_resume_gives_the_uninterrupted_result(data, tmp_path):
    images, q, splits = data
    config = TrainingConfig(**TINY)
    whole = train_distance(images, q, splits, config, folder=tmp_path / "a", progress=False)
    # interrupted during epoch 2 (4 steps per epoch): only epoch 1's checkpoint survives
    train_distance(images, q, splits, config, folder=tmp_path / "b", progress=False, max_steps=5)
    assert not (tmp_path / "b" / "model.pt").exists()
    resumed = train_distance(images, q, splits, config, folder=tmp_path / "b", progress=False)
    for key, value in whole.model.state_dict().items():
        assert torch.allclose(value, resumed.model.state_dict()[key], atol=1e-6), key
    model, loaded = load_model(tmp_path / "b" / "model.pt")
    assert loaded == config
    pairs = torch.tensor([[40, 41], [42, 47]])
    metrics = evaluate_distances(model, images, q, pairs, 16)
    assert set(metrics) >= {"rmse", "pearson", "rmse_above_2"}


@pytest.mark.slow
def test_paper_recipe_runs(data):
    images, q, splits = data
    config = TrainingConfig(**TINY | {"recipe": "paper", "pairs_fraction": 0.2})
    assert len(train_distance(images, q, splits, config, progress=False).history) == 2


def test_mae_loss_trains_and_keeps_the_old_cache_keys(data):
    """``loss="mae"`` (the paper's authors' loss) trains on |d̂_p − d_q|; fields left at their defaults
    stay out of ``to_dict``, so the models cached before the fields existed keep their keys."""
    images, q, splits = data
    assert "loss" not in TrainingConfig().to_dict() and "patience" not in TrainingConfig().to_dict()
    assert {"loss": "mae", "patience": 2}.items() <= TrainingConfig(loss="mae", patience=2).to_dict().items()
    config = TrainingConfig(**TINY | {"loss": "mae", "epochs": 3})
    assert config.to_dict()["loss"] == "mae" and "patience" not in config.to_dict()
    model = SiameseDistance("compact", 4)
    features = torch.randn(6, 4)
    i, j = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])
    target, weight = torch.tensor([0.5, 1.0, 2.0]), torch.ones(3)
    error = model.feature_distance(features[i], features[j]) - target
    identity = torch.nn.Identity()
    mae = training._batch_loss(model, identity, features, i, j, target, weight, "mae")
    mse = training._batch_loss(model, identity, features, i, j, target, weight, "mse")
    assert mae.item() == pytest.approx(error.abs().mean().item())
    assert mse.item() == pytest.approx((error**2).mean().item())
    history = train_distance(images, q, splits, config, progress=False).history
    assert len(history) == 3 and all(h["validation_mae"] > 0 for h in history)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        TrainingConfig(loss="l1")
    with pytest.raises(ValueError, match="patience"):
        TrainingConfig(patience=0)


def test_patience_stops_when_the_validation_curve_is_flat(data):
    """Flat: the best of the last ``patience`` epochs is less than 1 % below the best before them."""
    config = TrainingConfig(patience=2)
    curve = [{"validation_loss": v, "validation_mae": 1.0} for v in (1.0, 0.5, 0.499, 0.6)]
    assert training.validation_flat(curve, config)
    assert not training.validation_flat(curve[:2], config)  # too short to tell
    assert not training.validation_flat(curve[:3] + [{"validation_loss": 0.4, "validation_mae": 1.0}], config)
    assert not training.validation_flat(curve, TrainingConfig())  # no patience: never
    assert training.validation_flat(curve, TrainingConfig(patience=2, loss="mae"))  # the MAE curve: flat
    images, q, splits = data
    stopped = train_distance(images, q, splits, TrainingConfig(**TINY | {"epochs": 8, "patience": 1,
                                                                         "learning_rate": 0.0}),
                             progress=False)
    assert len(stopped.history) == 2  # nothing learnt at a zero learning rate: flat after one more epoch


def test_bad_inputs(data, tmp_path):
    images, q, splits = data
    with pytest.raises(ValueError, match="unknown recipe"):
        TrainingConfig(recipe="magic")
    with pytest.raises(ValueError, match="split 'validation'"):
        train_distance(images, q, {"train": splits["train"]}, TrainingConfig(**TINY), progress=False)
    bad = images.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_distance(bad, q, splits, TrainingConfig(**TINY), progress=False)
    (tmp_path / "model.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="model.pt: not a usable cryoorient model"):
        load_model(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="outside"):
        evaluate_distances(SiameseDistance("compact", 16), images, q, torch.tensor([[0, 99]]), 16)
    with pytest.raises(ValueError, match=r"square images \(N, D, D\)"):
        train_distance(images[:, :, :-1], q, splits, TrainingConfig(**TINY), progress=False)
    # a model file of another architecture: named, not half-loaded
    other = {"model": SiameseDistance("paper", 512).state_dict(), "config": TrainingConfig(**TINY).to_dict()}
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a usable cryoorient model"):
        load_model(tmp_path / "other.pt")
    # a corrupt checkpoint: a clear error when resuming by hand, a warning and a fresh start when cached
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="checkpoint.pt: unreadable checkpoint"):
        train_distance(images, q, splits, TrainingConfig(**TINY), folder=tmp_path / "run", progress=False)
    config = TrainingConfig(**TINY)
    cached = tmp_path / "cache" / model_cache.config_key(config, "data")
    cached.mkdir(parents=True)
    (cached / "checkpoint.pt").write_bytes(b"\x00" * 10)
    with pytest.warns(model_cache.ModelCacheWarning, match="starting over"):
        result = trained_model(
            images, q, splits, config, "data", cache_dir=tmp_path / "cache", progress=False
        )
    assert len(result.history) == config.epochs and (cached / "model.pt").is_file()


def _train_args(dataset, output):
    return ["train", str(dataset), "-o", str(output), "--image-size", "16", "--n-features", "16",
            "--batch-size", "8", "--max-steps", "2", "--quiet"]


@pytest.mark.slow
def test_torchrun_with_gloo_matches_one_process(tmp_path):
    """DistributedDataParallel on 2 CPU processes: same losses as one process on the same batches."""
    dataset = tmp_path / "data"
    assert main(["simulate", "pseudo", "-n", "64", "--box-size", "24", "-o", str(dataset), "--quiet"]) == 0
    assert main(_train_args(dataset, tmp_path / "single")) == 0
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "cryoorient.cli", *_train_args(dataset, tmp_path / "ddp")]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    single = json.loads((tmp_path / "single" / "history.json").read_text())[-1]["train_losses"]
    ddp = json.loads((tmp_path / "ddp" / "history.json").read_text())[-1]["train_losses"]
    assert len(single) == len(ddp) == 2
    assert single[1] != single[0]  # the step did change the weights
    # The first loss checks the forward pass (per-process batch statistics were 2 % off), the second
    # the averaged gradient of the first step. Summation order differs (two processes, gathered
    # features, all-reduced statistics) and Adam's first, sign-like steps amplify rounding: ~2e-4.
    np.testing.assert_allclose(ddp, single, rtol=1e-3)
    assert not (tmp_path / "ddp" / "model.pt").exists()  # a partial run leaves no model


def test_trained_model_is_cached_by_configuration(data, tmp_path, monkeypatch):
    images, q, splits = data
    config = TrainingConfig(**TINY)
    first = trained_model(images, q, splits, config, "data-a", cache_dir=tmp_path, progress=False)
    assert len(first.history) == config.epochs and (first.folder / "model.pt").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been used")

    monkeypatch.setattr(model_cache, "train_distance", no_training)
    again = trained_model(images, q, splits, config, "data-a", cache_dir=tmp_path, progress=False)
    assert again.folder == first.folder and again.history == first.history
    for a, b in zip(again.model.parameters(), first.model.parameters(), strict=True):
        assert torch.equal(a, b)
    other = TrainingConfig(**TINY | {"seed": 1})
    with pytest.raises(AssertionError, match="cached model"):  # another configuration: not cached
        trained_model(images, q, splits, other, "data-a", cache_dir=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="cached model"):  # another dataset: not cached
        trained_model(images, q, splits, config, "data-b", cache_dir=tmp_path, progress=False)
    monkeypatch.undo()
    (first.folder / "model.pt").write_bytes(b"not a model")
    with pytest.warns(model_cache.ModelCacheWarning, match="not a usable cryoorient model"):
        rebuilt = trained_model(images, q, splits, config, "data-a", cache_dir=tmp_path, progress=False)
    for a, b in zip(rebuilt.model.parameters(), first.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_evaluation_on_degraded_images_is_reproducible(data):
    images, q, splits = data
    model = SiameseDistance("compact", 8, "orientation")
    pairs = torch.tensor([[0, 1], [2, 3], [4, 5]])
    clean = evaluate_distances(model, images, q, pairs, 16)
    noisy = evaluate_distances(model, images, q, pairs, 16, noise_variance=4.0, seed=3)
    again = evaluate_distances(model, images, q, pairs, 16, noise_variance=4.0, seed=3)
    assert np.array_equal(noisy["d_p"], again["d_p"]) and not np.allclose(noisy["d_p"], clean["d_p"])
    assert ((noisy["d_p"] >= 0) & (noisy["d_p"] <= math.pi + 1e-6)).all()


@pytest.mark.slow
def test_features_are_shift_invariant(data):
    """Global average pooling over translation-equivariant layers: a particle moved in an empty box
    by a multiple of the network's stride (16 px) keeps its features exactly, as long as its
    influence (the receptive field, ~200 px) stays inside the box. (Invariance to other shifts is
    learned from on-the-fly shifts; notebook 03 measures it.)"""
    images = data[0][:4]
    canvas = torch.nn.functional.pad(images - images[:, :1, :1], (152, 152, 152, 152)).double()  # 320 px
    model = SiameseDistance("compact", 16).double().eval()
    torch.nn.init.zeros_(model.network[-1].bias)  # else the random start's features are ~ its bias
    with torch.no_grad():
        f = model.features(canvas)
        scale = (f - model.features(torch.roll(canvas, 1, dims=0))).norm(dim=1).min()  # another particle
        for shift in ((16, 0), (-16, 32), (32, 32)):
            moved = model.features(torch.roll(canvas, shift, dims=(1, 2)))
            assert (moved - f).norm(dim=1).max() < 1e-9 * scale, shift


def test_warm_start_begins_from_the_cached_model(data, tmp_path):
    images, q, splits = data
    config = TrainingConfig(**TINY)
    orphan = model_cache.warm_started(config, "data", noise_variance=1.0)
    with pytest.raises(ValueError, match="train \\(or load\\) the starting model first"):
        trained_model(images, q, splits, orphan, "data", cache_dir=tmp_path, progress=False)
    first = trained_model(images, q, splits, config, "data", cache_dir=tmp_path, progress=False)
    still = model_cache.warm_started(config, "data", learning_rate=1e-12, epochs=1)  # (almost) no steps
    assert still.warm_start == first.folder.name
    second = trained_model(images, q, splits, still, "data", cache_dir=tmp_path, progress=False)
    assert second.folder != first.folder
    for a, b in zip(second.model.parameters(), first.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="needs its weights"):
        train_distance(images, q, splits, still, progress=False)


def test_one_step_lowers_the_loss_on_a_fixed_batch(data):
    images, q, _ = data
    torch.manual_seed(0)
    model = SiameseDistance("compact", 16, "orientation")
    x = training.prepare_images(images[:16], 16)
    i, j = torch.triu_indices(16, 16, offset=1)
    target = quaternion_distance(q[i], q[j]).float()
    weight = torch.ones_like(target)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)  # small enough for a descent step
    before = training._batch_loss(model, model.network, x, i, j, target, weight)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = training._batch_loss(model, model.network, x, i, j, target, weight)
    assert after < before


@pytest.mark.slow
def test_cpu_training_is_deterministic_and_restores_the_setting(data):
    images, q, splits = data
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # several threads is where CPU kernels can reduce in varying order
    try:
        runs = [train_distance(images, q, splits, TrainingConfig(**TINY), progress=False) for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert runs[0].history[-1]["validation_loss"] == runs[1].history[-1]["validation_loss"]
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is back


def test_noise_curriculum_chains_warm_starts(data, tmp_path):
    from pathlib import Path

    from cryoorient.dataset import Dataset, ParticleStack

    images, q, splits = data
    n = len(images)
    stack = ParticleStack(images.numpy(), np.zeros((n, 3)), np.zeros((n, 2)), 1.0)
    dataset = Dataset(Path("toy-dataset"), stack, q, splits, {"map": {"name": "toy"}})
    config = TrainingConfig(**TINY | {"epochs": 1})
    chain = model_cache.noise_curriculum(dataset, config, [0.0, 1.0, 4.0], epochs=1, cache_dir=tmp_path,
                                      progress=False)
    assert list(chain) == [0.0, 1.0, 4.0]
    assert chain[0.0].config == config
    for low, high in ((0.0, 1.0), (1.0, 4.0)):  # each level starts from the model of the level below
        assert chain[high].config.warm_start == chain[low].folder.name
        assert chain[high].config.noise_variance == high and len(chain[high].history) == 1
    again = model_cache.noise_curriculum(dataset, config, [0.0, 1.0, 4.0], epochs=1, cache_dir=tmp_path,
                                      progress=False)
    assert [r.folder for r in again.values()] == [r.folder for r in chain.values()]  # all cached
    with pytest.raises(ValueError, match="increase strictly"):
        model_cache.noise_curriculum(
            dataset, config, [4.0, 1.0], epochs=1, cache_dir=tmp_path, progress=False
        )
    with pytest.raises(ValueError, match="epochs"):
        model_cache.noise_curriculum(dataset, config, [1.0], epochs=0, cache_dir=tmp_path, progress=False)


def _ship(data, tmp_path, models: Path, monkeypatch) -> tuple[TrainingConfig, object]:
    """Train a tiny model, ship it (:func:`model_cache.ship_model`) into a ``models`` folder laid out
    as the repository's, and make any further training an error: the shipped copy must be used."""
    images, q, splits = data
    config = TrainingConfig(**TINY | {"epochs": 1})
    trained = trained_model(images, q, splits, config, "data-s", cache_dir=tmp_path / "other", progress=False)
    models.mkdir(parents=True)
    (models / "registry.json").write_text("{}\n")
    model_cache.ship_model(trained.folder.name, "uniform", cache_dir=tmp_path / "other", models=models)
    monkeypatch.setenv("CRYOORIENT_DATA", str(tmp_path / "cache"))

    def no_training(*args, **kwargs):
        raise AssertionError("the shipped model should have been used")

    monkeypatch.setattr(model_cache, "train_distance", no_training)
    return config, trained


def _check_shipped_copy(loaded, trained, note: str) -> None:
    assert loaded.folder.name == trained.folder.name and loaded.history == trained.history
    assert note in (loaded.folder / "shipped.txt").read_text()
    for a, b in zip(loaded.model.parameters(), trained.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_shipped_models_are_used_when_their_hashes_match(data, tmp_path, monkeypatch):
    images, q, splits = data
    shipped = tmp_path / "shipped"
    config, trained = _ship(data, tmp_path, shipped, monkeypatch)
    key = trained.folder.name
    monkeypatch.setattr(model_cache, "shipped_models_dir", lambda: shipped)
    loaded = trained_model(images, q, splits, config, "data-s", progress=False)
    _check_shipped_copy(loaded, trained, "copied from the repository's models/")
    (shipped / key / "model.pt").write_bytes(b"altered")  # a hash that no longer matches: trained instead
    (loaded.folder / "model.pt").unlink()
    altered = pytest.warns(model_cache.ModelCacheWarning, match="missing or altered")
    with altered, pytest.raises(AssertionError):
        trained_model(images, q, splits, config, "data-s", progress=False)


def test_ship_model_copies_a_cached_model_and_pins_it_in_the_registry(data, tmp_path, monkeypatch, capsys):
    from cryoorient.paths import sha256_file

    shipped = tmp_path / "shipped"
    _, trained = _ship(data, tmp_path, shipped, monkeypatch)
    key = trained.folder.name
    registry = json.loads((shipped / "registry.json").read_text())
    assert registry == {key: {
        "model.pt": sha256_file(trained.folder / "model.pt"),
        "history.json": sha256_file(trained.folder / "history.json"),
        "noise_variance": 0.0, "epochs": 1, "warm_start": None, "orientations": "uniform",
    }}
    (shipped / "registry.json").write_text(json.dumps({"other": {"epochs": 3}} | registry))
    monkeypatch.setattr(model_cache, "shipped_models_dir", lambda: shipped)
    monkeypatch.setenv("CRYOORIENT_DATA", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / key).symlink_to(trained.folder)  # the default cache, data/models/KEY
    model_cache.main([key, "--orientations", "paper_half"])  # shipped again, now as a half-coverage model
    assert f"models/{key} shipped" in capsys.readouterr().out
    registry = json.loads((shipped / "registry.json").read_text())
    assert list(registry) == ["other", key] and registry[key]["orientations"] == "paper_half"
    assert "dataset_noise_variance" not in registry[key]  # a clean dataset says nothing
    model_cache.main([key, "--orientations", "paper_half", "--dataset-noise", "4.87039"])  # noisy images
    entry = json.loads((shipped / "registry.json").read_text())[key]
    assert entry["dataset_noise_variance"] == 4.87039 and entry["noise_variance"] == 0.0
    with pytest.raises(ValueError, match="unknown orientations 'sphere'"):
        model_cache.ship_model(key, "sphere", models=shipped)
    with pytest.raises(FileNotFoundError, match="lacks model.pt and history.json: train the model first"):
        model_cache.ship_model("0123456789abcdef", "uniform", models=shipped)
    with pytest.raises(SystemExit) as exit_:
        model_cache.main(["0123456789abcdef", "--orientations", "uniform"])
    assert exit_.value.code == 1 and "train the model first" in capsys.readouterr().err


def _curriculum_keys(orientations: str, levels: list[float], density, study) -> list[str]:
    """The cache keys of a study's noiseless model and curriculum on ``orientations``.

    ``density`` is the study's map at its box size.
    """
    from cryoorient.dataset import SimulationParameters, _dataset_key

    key = _dataset_key(SimulationParameters(**study.simulation(orientations=orientations)), density)
    config = model_cache.model_config(study.model, seed=study.seed)
    found = [model_cache.config_key(config, key)]
    for level in levels:  # the chain noise_curriculum builds
        config = model_cache.curriculum_stage(
            config, key, level, epochs=study.curriculum_epochs, learning_rate=study.curriculum_learning_rate
        )
        found.append(model_cache.config_key(config, key))
    return found


PAPER_METHOD_SHIPPED: tuple[tuple[str, float | str], ...] = (
    ("uniform", 0.0), ("paper_half", 0.0), ("paper_half", "matched"))
"""(orientations, σ² or "matched") of notebook 09's shipped paper-method estimators: its ``estimators``."""
SECOND_PROTEIN_SHIPPED = True
"""Whether notebook 10's estimator on the second protein (5a1a) is shipped."""
LADDER_SHIPPED: tuple[str, ...] = ("inbatch", "orientation", "mse")
"""The rungs of notebook 09's ladder shipped beside the paper's method and ours (cryoorient.ladder)."""


def test_shipped_models_are_the_notebooks_models():
    """models/ holds the models the notebooks ask for, under their keys, so a fresh clone (any Python,
    any FFT library) loads them instead of training. The default profile: the noiseless model and
    noise curriculum on uniform orientations (every level of the noise study), and on the paper's half
    coverage (notebook 05's noise study the paper's way) the levels up to the SNR-matched σ². The
    long profile (cryoorient/studies/long.yml, issue 12): its noiseless model and curriculum on
    uniform orientations (notebook 02)."""
    from cryoorient.density import MapError, load_map
    from cryoorient.study import load_study

    shipped = model_cache.shipped_models_dir()
    default, long = load_study("default"), load_study("long")
    maps = os.environ.get("CRYOORIENT_MAPS")
    density = load_map("5j0n", box_size=default.box_size, fallback=False) if maps else None
    if shipped is None or density is None or density.name != "5j0n":
        pytest.skip("needs a checkout's models/ and 5j0n.mrc (CRYOORIENT_MAPS)")
    registry = json.loads((shipped / "registry.json").read_text())
    levels = default.noise_study_levels
    matched = default.matched_noise_variance
    long_density = load_map("5j0n", box_size=long.box_size, fallback=False)
    chains = {
        ("default", "uniform"): _curriculum_keys("uniform", levels, density, default),
        ("default", "paper_half"): _curriculum_keys(
            "paper_half", [v for v in levels if v <= matched], density, default
        ),
        ("long", "uniform"): _curriculum_keys("uniform", long.noise_study_levels, long_density, long),
    }
    # notebook 09: the paper's own method (issue 31), trained from scratch on each coverage
    from cryoorient.dataset import SimulationParameters, _dataset_key

    paper_method = [
        model_cache.config_key(
            model_cache.paper_method_config(default),
            _dataset_key(SimulationParameters(**default.simulation(
                orientations=orientations,
                noise_variance=default.matched_noise_variance if noise == "matched" else float(noise),
            )), density),
        )
        for orientations, noise in PAPER_METHOD_SHIPPED
    ]
    chains[("default", "paper_method")] = paper_method
    # notebook 10: our estimator on the second protein (5a1a at quarter coverage), when its model is here
    second = SimulationParameters(**default.second_protein_simulation())
    try:
        second_map = load_map(second.map, box_size=second.box_size, resolution=second.map_resolution,
                              fallback=False)
    except MapError:
        pytest.skip("needs 5a1a.cif on the map path (CRYOORIENT_MAPS) for notebook 10's model")
    second_key = model_cache.config_key(
        model_cache.model_config(default.model, seed=default.seed), _dataset_key(second, second_map)
    )
    chains[("default", "second_protein")] = [second_key] if SECOND_PROTEIN_SHIPPED else []
    # notebook 09: the ladder's rungs between the paper's method and ours, on the clean dataset
    from cryoorient.ladder import ladder

    clean_key = _dataset_key(SimulationParameters(**default.simulation()), density)
    rungs = {rung.name: rung.config for rung in ladder(default)}
    chains[("default", "ladder")] = [model_cache.config_key(rungs[n], clean_key) for n in LADDER_SHIPPED]
    assert [k for chain in chains.values() for k in chain] == list(registry), (
        "models/registry.json no longer matches the keys the notebooks ask for"
    )
    for (_, orientations), found in chains.items():
        if orientations in ("paper_method", "ladder", "second_protein"):
            continue
        for previous, name in zip([None, *found], found, strict=False):
            stored = load_model(shipped / name / "model.pt")[1]
            assert stored.warm_start == previous == registry[name]["warm_start"]
            assert registry[name]["orientations"] == orientations


def test_shipped_models_are_downloaded_outside_a_checkout(data, tmp_path, monkeypatch):
    """Colab installs the package from git without models/: the model comes from the repository at
    the installed commit, checked by the registry's SHA-256 (a local HTTP server stands in for GitHub)."""
    import functools
    import http.server
    import threading

    images, q, splits = data
    commit = "0123456789abcdef0123456789abcdef01234567"
    served = tmp_path / "site" / "owner" / "repo" / commit / "models"
    config, trained = _ship(data, tmp_path, served, monkeypatch)
    key = trained.folder.name
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        monkeypatch.setattr(model_cache, "RAW_URL", f"http://127.0.0.1:{port}/{{owner}}/{{name}}/{{commit}}/")
        monkeypatch.setattr(model_cache, "shipped_models_dir", lambda: None)
        github = ("https://github.com/owner/repo.git", commit)
        monkeypatch.setattr(model_cache, "installed_source", lambda: github)
        loaded = trained_model(images, q, splits, config, "data-s", progress=False)
        _check_shipped_copy(loaded, trained, "downloaded from http://127.0.0.1")
        # an altered file on the server fails pooch's hash check: a warning, then training
        (loaded.folder / "model.pt").unlink()
        for cached in (tmp_path / "cache" / "downloads").rglob("*model.pt"):
            cached.unlink()
        (served / key / "model.pt").write_bytes(b"altered")
        altered = pytest.warns(model_cache.ModelCacheWarning, match="could not download")
        with altered, pytest.raises(AssertionError):
            trained_model(images, q, splits, config, "data-s", progress=False)
    finally:
        server.shutdown()
        server.server_close()
    # a mirror named by CRYOORIENT_RAW_URL replaces GitHub's raw files (same placeholders)
    monkeypatch.setenv("CRYOORIENT_RAW_URL", "http://mirror.invalid/{owner}/{name}/{commit}/")
    assert model_cache._models_url() == (f"http://mirror.invalid/owner/repo/{commit}/models/", commit)
    # not a GitHub install (an index or editable install): nothing is fetched
    monkeypatch.setattr(model_cache, "installed_source", lambda: ("file:///somewhere", commit))
    assert model_cache._models_url() is None


def test_training_seconds_ignore_a_paused_epoch():
    history = [{"epoch": k + 1, "seconds": s} for k, s in enumerate([500.0, 1000.0, 4000.0, 4500.0, 5000.0])]
    assert training.training_seconds(history) == 5 * 500.0  # the 3,000 s pause in epoch 3 is not training
    assert training.training_seconds(history[:1]) == 500.0 and training.training_seconds([]) == 0.0


# --- training with a CTF (issue 34) -----------------------------------------------------------------


def _toy_ctfs(n: int, box: int = 16) -> torch.Tensor:
    """(n, box, box) isotropic CTFs, defocus 1-2.5 µm at 4.3 Å per pixel (the default profile's)."""
    from cryoorient.projection import ctf_2d

    return ctf_2d(box, 4.3, defocus_u=torch.linspace(10000.0, 25000.0, n, dtype=torch.float64), device="cpu")


def test_a_treatment_is_part_of_the_configuration_and_its_key_only_when_set():
    plain = TrainingConfig(**TINY)
    assert "treatment" not in plain.to_dict()  # the keys of every model trained without one stand
    flipped = TrainingConfig(**TINY, treatment="phase_flip")
    assert flipped.to_dict()["treatment"] == "phase_flip"
    assert model_cache.config_key(flipped, "k") != model_cache.config_key(plain, "k")
    assert training.network_for(TrainingConfig(**TINY, treatment="two_channel")).config["in_channels"] == 2
    with pytest.raises(ValueError, match=r"unknown treatment 'flip'; choose one of raw, phase_flip, wiener"):
        TrainingConfig(**TINY, treatment="flip")


def test_a_two_channel_network_takes_two_channel_images_only():
    model = SiameseDistance("compact", 8, in_channels=2)
    assert model.features(torch.randn(3, 2, 16, 16)).shape == (3, 8)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 2, H, W\); got \(3, 16, 16\)"):
        model.features(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match=r"in_channels must be a positive integer; got 0"):
        SiameseDistance("paper", 8, in_channels=0)


def test_prepared_images_are_noised_then_treated(toy_projections):
    from cryoorient.ctf_correction import treat_images, wiener_snr
    from cryoorient.projection import add_noise

    images = toy_projections[0][:6]
    ctf = _toy_ctfs(6)
    for treatment in ("phase_flip", "wiener", "two_channel"):
        config = TrainingConfig(**TINY, treatment=treatment, noise_variance=2.0)
        x = training.prepare_images(images, None, noise_variance=2.0, generator=np.random.default_rng(3),
                                    ctf=ctf, **training.input_treatment(config))
        noisy = add_noise(images.float(), variance=2.0, seed=np.random.default_rng(3))
        expected = treat_images(noisy, ctf, treatment, snr=wiener_snr(2.0))
        torch.testing.assert_close(x, expected if expected.ndim == 4 else expected[:, None])
    with pytest.raises(ValueError, match=r"the 'raw' treatment needs the images' CTFs"):
        training.prepare_images(images, None, treatment="raw")


@pytest.mark.parametrize("treatment", ["phase_flip", "two_channel"])
def test_training_with_a_treatment_trains_and_reloads(data, tmp_path, treatment):
    images, q, splits = data
    ctf = _toy_ctfs(len(images))
    config = TrainingConfig(**TINY, treatment=treatment, noise_variance=0.5)
    result = train_distance(images, q, splits, config, folder=tmp_path, progress=False, ctf=ctf)
    assert len(result.history) == 2 and all(math.isfinite(h["validation_loss"]) for h in result.history)
    model, stored = load_model(tmp_path / "model.pt")
    assert stored == config and model.config["in_channels"] == (2 if treatment == "two_channel" else 1)
    # the reloaded network sees the treated test images as the trained one does
    pairs = torch.tensor([[40, 41], [42, 47], [43, 44]])
    seen = training.input_treatment(stored)
    before = evaluate_distances(result.model, images, q, pairs, 16, ctf=ctf, **seen)
    after = evaluate_distances(model, images, q, pairs, 16, ctf=ctf, **seen)
    np.testing.assert_allclose(after["d_p"], before["d_p"], atol=1e-6)


def test_training_refuses_ctfs_that_do_not_fit_its_configuration(data):
    images, q, splits = data
    ctf = _toy_ctfs(len(images))
    with pytest.raises(ValueError, match=r"config.treatment='wiener' needs the images' CTFs"):
        train_distance(images, q, splits, TrainingConfig(**TINY, treatment="wiener"), progress=False)
    with pytest.raises(ValueError, match=r"CTFs were given but config.treatment is None"):
        train_distance(images, q, splits, TrainingConfig(**TINY), progress=False, ctf=ctf)
    raw = TrainingConfig(**TINY, treatment="raw")
    with pytest.raises(ValueError, match=r"the images. shape \(48, 16, 16\); got \(47, 16, 16\)"):
        train_distance(images, q, splits, raw, progress=False, ctf=ctf[:47])


def test_a_dataset_model_with_a_treatment_trains_on_the_datasets_ctfs(tmp_path):
    import dataclasses

    from cryoorient.ctf_correction import ctf_grids
    from cryoorient.dataset import SimulationParameters, load_dataset

    params = SimulationParameters(map="pseudo", n_projections=40, box_size=16, ctf=True)
    data = load_dataset(params, cache_dir=tmp_path / "data", progress=False)
    config = TrainingConfig(**TINY, treatment="phase_flip")
    grids = model_cache.dataset_ctf(data, config)
    torch.testing.assert_close(grids, ctf_grids(data.particles.ctf, 16, data.particles.pixel_size))
    assert model_cache.dataset_ctf(data, TrainingConfig(**TINY)) is None
    result = model_cache.dataset_model(data, config, cache_dir=tmp_path / "models", progress=False)
    assert result.config.treatment == "phase_flip" and len(result.history) == 2
    clean = load_dataset(dataclasses.replace(params, ctf=False), cache_dir=tmp_path / "data", progress=False)
    with pytest.raises(ValueError, match=r"treatment 'phase_flip' needs a dataset with a CTF; \w+ has none"):
        model_cache.dataset_ctf(clean, config)
    data.particles.ctf["defocus_v"] = data.particles.ctf["defocus_u"] - 500.0  # astigmatic
    with pytest.raises(ValueError, match=r"astigmatic CTFs and in-plane rotations do not mix"):
        model_cache.dataset_ctf(data, config)
    assert model_cache.dataset_ctf(data, dataclasses.replace(config, rotations=False)).shape == (40, 16, 16)
