"""The bootstrap loop's round: recover, fix the gauge, refine, fine-tune on the round's own map."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cryoorient.bootstrap import BootstrapSettings, bootstrap_round
from cryoorient.density import load_map
from cryoorient.geometry import quaternion_to_matrix
from cryoorient.projection import normalize_images, project
from cryoorient.sampling import sample_orientations
from cryoorient.training import TrainingConfig, train_distance

SMALL = BootstrapSettings(refine_rounds=1, n_train=64, epochs=1, seed=3)


@pytest.fixture(scope="module")
def start():
    """60 particles of pseudo:1 (24 px, 10 Å); an estimator trained briefly on another map's projections."""
    truth = torch.from_numpy(load_map("pseudo:1", box_size=24, voxel_size=10.0).data)
    q = sample_orientations(60, seed=5)
    particles = normalize_images(project(truth, quaternion_to_matrix(q).float()))
    other = torch.from_numpy(load_map("pseudo:2", box_size=24, voxel_size=10.0).data)
    q_other = sample_orientations(48, seed=6)
    images = normalize_images(project(other, quaternion_to_matrix(q_other).float()))
    config = TrainingConfig(image_size=16, epochs=1, batch_size=8, n_features=16, validation_pairs=40,
                            distance="orientation")
    splits = {"train": torch.arange(0, 32).numpy(), "validation": torch.arange(32, 48).numpy()}
    trained = train_distance(images, q_other, splits, config, progress=False)
    return particles, trained.model, config


@pytest.mark.slow
def test_a_round_gives_orientations_a_map_and_a_fine_tuned_estimator(start):
    particles, model, config = start
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = bootstrap_round(particles, model, config, 10.0, settings=SMALL)
    assert found.quaternions.shape == (60, 4) and found.recovered.shape == (60, 4)
    torch.testing.assert_close(found.quaternions.norm(dim=1), torch.ones(60, dtype=torch.float64))
    assert found.volume.shape == (24, 24, 24) and torch.isfinite(found.volume).all()
    assert len(found.refinement.rounds) == 1 and len(found.history) == 1
    assert set(found.seconds) == {"recover", "gauge", "refine", "simulate", "train"}
    assert found.config.epochs == 1 and found.config.learning_rate == 3e-4 and found.config.warm_start is None
    # the estimator started from the given weights and moved; the caller's model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in found.model.state_dict().items())
    again = bootstrap_round(particles, model, config, 10.0, settings=SMALL)  # the same seed: the same round
    torch.testing.assert_close(again.quaternions, found.quaternions)


def test_a_round_refuses_a_ctf_estimator_and_bad_settings(start):
    particles, model, config = start
    with pytest.raises(ValueError, match="does not handle a CTF yet"):
        bootstrap_round(particles, model, dataclasses.replace(config, treatment="phase_flip"), 10.0)
    with pytest.raises(ValueError, match="epochs"):
        BootstrapSettings(epochs=0)
    with pytest.raises(ValueError, match=r"learning_rate must be > 0; got -1"):
        BootstrapSettings(learning_rate=-1.0)


@pytest.mark.slow
def test_rounds_are_kept_per_folder_and_a_rerun_resumes_after_the_last_finished(start, tmp_path):
    import numpy as np

    from cryoorient.bootstrap import ROUND_RECORD, run_rounds
    from cryoorient.density import read_map

    particles, model, config = start
    called = []

    def note(number, folder, quaternions):
        called.append(number)
        assert (folder / "model.pt").is_file() and not (folder / ROUND_RECORD).exists()

    records = run_rounds(particles, model, config, 10.0, tmp_path, 2, settings=SMALL, on_round=note)
    assert called == [1, 2] and [r["round"] for r in records] == [1, 2]
    for number in (1, 2):
        here = tmp_path / f"round_{number}"
        assert read_map(here / "map.mrc").data.shape == (24, 24, 24)
        assert np.load(here / "quaternions.npy").shape == (60, 4)
    first_q = np.load(tmp_path / "round_2" / "quaternions.npy")
    (tmp_path / "round_2" / ROUND_RECORD).unlink()  # round 2 interrupted before its record
    called.clear()
    again = run_rounds(particles, model, config, 10.0, tmp_path, 2, settings=SMALL, on_round=note)
    assert called == [2] and again[0] == records[0]  # round 1 loaded, round 2 run again from its model
    np.testing.assert_allclose(np.load(tmp_path / "round_2" / "quaternions.npy"), first_q, atol=1e-6)
