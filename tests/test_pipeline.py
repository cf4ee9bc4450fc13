import math
import types

import numpy as np
import pytest
import torch

from cryoorient.geometry import quaternion_distance
from cryoorient.pipeline import estimated_distances, learned_recovery, recovered_or_saved
from cryoorient.relion import read_particles, write_orientations
from cryoorient.results import save_results
from cryoorient.siamese import SiameseDistance


@pytest.fixture(scope="module")
def stack(toy_projections):
    images, q = toy_projections
    return images[:12], q[:12]


def test_estimated_distances_are_a_symmetric_matrix_in_range(stack):
    images, _ = stack
    torch.manual_seed(0)
    d = estimated_distances(SiameseDistance("compact", 8, "orientation"), images, 16)
    assert d.shape == (12, 12) and d.dtype == torch.float64
    assert torch.equal(d, d.T) and d.diagonal().abs().max() == 0
    assert d.min() >= 0 and d.max() <= math.pi


def test_learned_recovery_runs_end_to_end_and_refuses_euclidean(stack):
    images, q = stack
    torch.manual_seed(0)
    model = SiameseDistance("compact", 8, "cosine")
    result = learned_recovery(model, images, q, np.arange(2, 12), 16)
    assert result.recovery.quaternions.shape == (10, 4) and result.alignment.errors.shape == (10,)
    assert result.alignment.error == pytest.approx(float(result.alignment.errors.mean()))
    with pytest.raises(ValueError, match="Euclidean"):
        learned_recovery(SiameseDistance("compact", 8, "euclidean"), images, q, np.arange(12), 16)


def test_written_orientations_read_back(stack, tmp_path):
    images, q = stack
    star = write_orientations(tmp_path / "out", images.numpy(), q, pixel_size=4.2)
    back = read_particles(star)
    assert back.pixel_size == pytest.approx(4.2) and np.allclose(back.images, images.numpy())
    assert quaternion_distance(back.quaternions, q).max() < 1e-4  # via Euler angles in degrees


def test_recovered_or_saved_reads_notebook_04_only_for_the_same_models(
    toy_projections, tmp_path, monkeypatch
):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path))
    images, q = toy_projections
    dataset = types.SimpleNamespace(particles=types.SimpleNamespace(images=images.numpy()), quaternions=q)
    torch.manual_seed(0)
    model = SiameseDistance("compact", 8, "cosine")
    test = np.arange(8, 48)
    args = ({0.0: model}, {0.0: "key-a"}, lambda level: dataset, test, 16)
    computed = recovered_or_saved(*args, profile="unit", gauge_levels=[0.0], seed=1)[0.0]
    assert computed.origin == "computed" and computed.gauge_fixed.shape == (40, 4)
    assert computed.recovered.dtype == torch.float64 and computed.aligned.shape == (40, 4)
    stamp = {"learned": {"0": {"model": "key-a", "e_or": 0.5}}}
    arrays = {"noise0/recovered": computed.recovered + 0, "noise0/aligned": q[test],
              "noise0/gauge_fixed": q[test]}
    save_results("04_orientation_recovery", stamp, profile="unit", arrays=arrays)
    saved = recovered_or_saved(*args, profile="unit", gauge_levels=[0.0])[0.0]
    assert saved.origin == "saved" and saved.e_or == 0.5
    assert torch.equal(saved.aligned, q[test].double()) and torch.equal(saved.gauge_fixed, q[test].double())
    assert recovered_or_saved(*args, profile="unit")[0.0].gauge_fixed is None  # not asked for
    other = recovered_or_saved({0.0: model}, {0.0: "key-b"}, lambda level: dataset, test, 16, profile="unit")
    assert other[0.0].origin == "computed"  # another estimator: notebook 04's orientations do not apply
