"""One estimator on many maps, projections drawn on the fly: scales, batches, resume, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from cryoorient.density import load_map
from cryoorient.geometry import quaternion_to_matrix
from cryoorient.many_maps import projection_scales, train_on_maps
from cryoorient.projection import normalize_images, project
from cryoorient.sampling import sample_orientations
from cryoorient.training import TrainingConfig, load_model

CONFIG = TrainingConfig(image_size=16, epochs=2, batch_size=8, n_features=8, validation_pairs=30,
                        distance="orientation", noise_variance=0.5)


@pytest.fixture(scope="module")
def maps():
    """Two training maps and 24 validation projections of a third (held out), all 16 px at 12 Å."""
    volumes = [torch.from_numpy(load_map(f"pseudo:{s}", box_size=16, voxel_size=12.0).data) for s in (1, 2)]
    held_out = torch.from_numpy(load_map("pseudo:3", box_size=16, voxel_size=12.0).data)
    q = sample_orientations(24, seed=9)
    return volumes, normalize_images(project(held_out, quaternion_to_matrix(q).float())), q


def test_projection_scales_follow_each_maps_own_scale(maps):
    volumes, _, _ = maps
    scales = projection_scales([volumes[0], 3 * volumes[0], volumes[1]])
    assert float(scales[1]) == pytest.approx(3 * float(scales[0]), rel=1e-5) and bool((scales > 0).all())


def test_training_on_maps_checkpoints_resumes_and_repeats(maps, tmp_path):
    volumes, images, q = maps
    result = train_on_maps(volumes, CONFIG, images, q, steps_per_epoch=3, folder=tmp_path, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(sum(h["steps_per_map"]) == 3 and len(h["steps_per_map"]) == 2 for h in result.history)
    assert all(h["validation_loss"] > 0 for h in result.history)
    model, stored = load_model(tmp_path / "model.pt")
    assert stored == CONFIG
    assert json.loads((tmp_path / "history.json").read_text()) == result.history
    again = train_on_maps(volumes, CONFIG, images, q, steps_per_epoch=3, folder=tmp_path, progress=False)
    assert again.history == result.history  # every epoch was in the checkpoint: nothing retrained
    fresh = train_on_maps(volumes, CONFIG, images, q, steps_per_epoch=3, progress=False)
    for name, tensor in fresh.model.state_dict().items():  # seeded: the same run gives the same weights
        torch.testing.assert_close(tensor, model.state_dict()[name])


def test_training_on_maps_refuses_what_it_cannot_do(maps):
    volumes, images, q = maps
    with pytest.raises(ValueError, match="inbatch recipe without a CTF treatment"):
        train_on_maps(volumes, TrainingConfig(recipe="paper", batch_size=8), images, q, steps_per_epoch=1)
    with pytest.raises(ValueError, match="maps of the same shape"):
        train_on_maps([volumes[0], volumes[1][:8]], CONFIG, images, q, steps_per_epoch=1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        train_on_maps(volumes, CONFIG, images, q, steps_per_epoch=0)
