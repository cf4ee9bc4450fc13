"""The one preprocessing of a model's images, and the training record beside every model."""

import json
import math

import numpy as np
import pytest
import torch

from cryoorient import model_cache
from cryoorient.density import load_map
from cryoorient.model_input import (
    TRAINING_RECORD,
    InputRecord,
    model_input,
    read_record,
    standardise_stack,
    write_record,
)
from cryoorient.paths import sha256_file
from cryoorient.relion import ParticleStack
from cryoorient.sampling import sample_orientations


def test_standardise_gives_the_asked_statistics_and_ignores_the_input_scale():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(3.0, 2.0, size=(20, 16, 16)))
    out = standardise_stack(x, 2.5)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert abs(float(out.double().mean())) < 1e-6
    assert float(out.double().std(correction=0)) == pytest.approx(2.5, rel=1e-6)
    # a law: any positive affine change of the input gives the same output
    assert torch.allclose(standardise_stack(7.0 * x - 100.0, 2.5), out, atol=1e-5)


def test_standardise_refuses_constant_and_non_finite_stacks():
    with pytest.raises(ValueError, match="zero variance"):
        standardise_stack(torch.ones(3, 4, 4))
    bad = torch.zeros(3, 4, 4)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        standardise_stack(bad)


def test_a_stack_of_the_models_own_kind_passes_unchanged():
    """Why the notebooks may feed their simulated datasets as they are: a dataset at the σ² the model
    was trained for (clean unit variance + noise σ²) is already at the record's statistics."""
    from cryoorient.dataset import simulate_particles

    density = load_map("pseudo:2", box_size=32, voxel_size=8.0)
    q = sample_orientations(400, seed=1)
    for sigma2 in (0.0, 4.0, 16.0):
        stack: ParticleStack = simulate_particles(density, q, noise_variance=sigma2, seed=2, progress=False)
        record = InputRecord.of_training(32, 8.0, sigma2)
        images = torch.from_numpy(stack.images)
        fed = model_input(images, record)
        relative = float((fed - images).norm() / images.norm())
        assert relative < 2e-3, (sigma2, relative)
        # the same particles at another scale (counts, a RELION per-particle normalisation) come out alike
        assert torch.allclose(model_input(40.0 * images + 3.0, record), fed, atol=1e-4)


def test_record_round_trip_legacy_and_errors(tmp_path):
    record = InputRecord.of_training(64, 4.296875, 4.0, 2500)
    assert record.input_std == pytest.approx(math.sqrt(5.0))
    path = write_record(tmp_path, record)
    assert path.name == TRAINING_RECORD and read_record(tmp_path) == record
    assert json.loads(path.read_text())["preprocessing"] == "global standardisation"
    assert read_record(tmp_path / "none") is None
    (tmp_path / "old").mkdir()  # written by cryoorient train before input_std was recorded
    (tmp_path / "old" / TRAINING_RECORD).write_text('{"box_size": 32, "pixel_size": 8.0}')
    old = read_record(tmp_path / "old", noise_variance=16.0)
    assert (old.box_size, old.pixel_size, old.input_std) == (32, 8.0, pytest.approx(math.sqrt(17.0)))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / TRAINING_RECORD).write_text('{"box_size": "big"}')
    with pytest.raises(ValueError, match=r"bad.*training_data\.json: not a valid training record"):
        read_record(tmp_path / "bad")
    with pytest.raises(ValueError, match="pixel_size must be a positive number"):
        InputRecord(32, -1.0)


def test_every_shipped_model_carries_its_training_record():
    shipped = model_cache.shipped_models_dir()
    if shipped is None:
        pytest.skip("needs a checkout's models/")
    registry = json.loads((shipped / "registry.json").read_text())
    for key, entry in registry.items():
        assert sha256_file(shipped / key / TRAINING_RECORD) == entry[TRAINING_RECORD], key
        record = read_record(shipped / key)
        assert record.noise_variance == pytest.approx(entry["noise_variance"])
        # the images' variance: 1 for the projections, plus the noise added in training and any noise
        # drawn once into the dataset itself (the paper's method at the SNR-matched σ²), whose sample
        # variance over 2,500 × 64² pixels is σ² to a few 1e-4
        drawn = entry.get("dataset_noise_variance", 0.0)
        total = entry["noise_variance"] + drawn
        assert record.input_std == pytest.approx(math.sqrt(1 + total), rel=1e-3 if drawn else 1e-6), key
        assert record.box_size in (64, 96) and record.n_images == 2500
