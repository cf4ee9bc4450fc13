import math

import numpy as np
import pytest
import torch
from scipy import stats

from cryoorient.geometry import quaternion_distance, quaternion_to_matrix
from cryoorient.projection import project
from cryoorient.sampling import sample_orientations, sample_uniform_distance_pairs
from cryoorient.siamese import SiameseDistance, cosine_distance
from cryoorient.training import TrainingConfig, evaluate_distances, load_model, train_distance

TINY = {"image_size": 16, "epochs": 2, "batch_size": 8, "n_features": 16, "validation_pairs": 50}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    volume = torch.zeros(16, 16, 16)
    for _ in range(4):
        z, y, x = rng.integers(5, 11, 3)
        volume[z - 1 : z + 2, y - 2 : y + 1, x - 1 : x + 1] += 1.0
    q = sample_orientations(48, seed=1)
    images = project(volume, quaternion_to_matrix(q).float())
    images = (images - images.mean()) / images.std()
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


def test_cosine_distance_is_the_angle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert cosine_distance(a, b).item() == pytest.approx(math.pi / 4)
    assert cosine_distance(a, -a).item() == pytest.approx(math.pi)


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


def test_paper_recipe_runs(data):
    images, q, splits = data
    config = TrainingConfig(**TINY | {"recipe": "paper", "pairs_fraction": 0.2})
    assert len(train_distance(images, q, splits, config, progress=False).history) == 2


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
