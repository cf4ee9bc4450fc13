"""The common-lines baseline (ASPIRE) and the side-by-side comparison with learned distances."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("aspire", reason="ASPIRE is in the notebooks extra (make install)")

from cryoorient import baseline_comparison, common_lines  # noqa: E402
from cryoorient.alignment import align_orientations, registration_error  # noqa: E402
from cryoorient.dataset import SimulationParameters, load_dataset  # noqa: E402
from cryoorient.geometry import quaternion_to_matrix  # noqa: E402
from cryoorient.siamese import SiameseDistance  # noqa: E402


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A small clean dataset of the pseudo-protein: 160 projections of 32 px."""
    params = SimulationParameters(map="pseudo:1", n_projections=160, box_size=32, seed=3)
    return load_dataset(params, cache_dir=tmp_path_factory.mktemp("datasets"), progress=False)


def test_common_lines_recover_clean_projections_in_our_convention(clean):
    from aspire.utils import mean_aligned_angular_distance

    index = np.arange(40)
    images, true = clean.particles.images[index], clean.quaternions[index]
    result = common_lines.common_lines_orientations(images, clean.particles.pixel_size, box_size=None, seed=0)
    assert result.quaternions.shape == (40, 4) and result.box_size == 32 and result.seconds > 0
    assert torch.allclose(result.quaternions.norm(dim=1), torch.ones(40, dtype=torch.float64))
    error = registration_error(true, result.quaternions)
    assert error < 0.05, f"clean common lines: E_OR,reg {error:.3f} rad"
    assert align_orientations(true, result.quaternions, seed=0).error <= error + 1e-6
    # ASPIRE's own measure (degrees, on its rotations R_i = A_iᵀ) agrees with ours
    ours = quaternion_to_matrix(result.quaternions).numpy()
    aspire_deg = mean_aligned_angular_distance(ours.transpose(0, 2, 1), quaternion_to_matrix(true).numpy()
                                               .transpose(0, 2, 1))
    assert np.radians(aspire_deg) == pytest.approx(error, abs=2e-3)
    # the other convention (A_i = R_i) is not a registration away from the truth
    transposed = torch.from_numpy(ours.transpose(0, 2, 1).copy())
    from cryoorient.geometry import matrix_to_quaternion

    assert registration_error(true, matrix_to_quaternion(transposed)) > 0.5


def test_common_lines_are_deterministic_and_check_their_input(clean):
    images = clean.particles.images[:12]
    first = common_lines.common_lines_orientations(images, 4.0, box_size=24, seed=1)
    again = common_lines.common_lines_orientations(images, 4.0, box_size=24, seed=1)
    # the same up to ARPACK's start vector (scipy's eigsh draws it from a state ASPIRE cannot seed)
    assert first.box_size == 24 and torch.allclose(first.quaternions, again.quaternions, atol=1e-8)
    with pytest.raises(ValueError, match="n_theta must be even"):
        common_lines.common_lines_orientations(images, 4.0, n_theta=181)
    with pytest.raises(ValueError, match="at least 3 square images"):
        common_lines.common_lines_orientations(images[:, :, :30], 4.0)
    with pytest.raises(ValueError, match="pixel_size"):
        common_lines.common_lines_orientations(images, 0.0)
    bad = images.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        common_lines.common_lines_orientations(bad, 4.0)


def test_class_averages_lie_in_their_reference_frame(clean):
    images = clean.particles.images
    pixel_size = clean.particles.pixel_size
    result = common_lines.class_averages(images, pixel_size, 12, n_neighbours=4, box_size=None)
    assert result.images.shape == (12, 32, 32) and result.members.shape == (12, 4)
    assert (result.members[:, 0] == result.references).all() and len(set(result.references)) == 12
    # each average looks like its reference image (clean images: neighbours are close views)
    for average, reference in zip(result.images, images[result.references], strict=True):
        assert np.corrcoef(average.ravel(), reference.ravel())[0, 1] > 0.8
    with pytest.raises(ValueError, match="too few"):
        common_lines.class_averages(images[:20], 4.0, 12)
    # clean images' neighbourhoods overlap: asked for half the stack, the selector keeps fewer
    with pytest.raises(ValueError, match=r"ASPIRE selected \d+ classes, fewer than the 80 asked for"):
        common_lines.class_averages(images, pixel_size, 80, n_neighbours=10, box_size=None)
    fewer = common_lines.class_averages(images, pixel_size, 80, n_neighbours=10, box_size=None,
                                        allow_fewer=True)
    k = len(fewer.references)
    assert 0 < k < 80 and fewer.images.shape == (k, 32, 32) and fewer.members.shape == (k, 10)
    with pytest.raises(ValueError, match="n_neighbours"):
        common_lines.class_averages(images, 4.0, 12, n_neighbours=1)


@pytest.mark.slow  # about two minutes: ASPIRE's classification and the gauge search
def test_comparison_rows_and_cache(clean, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = SiameseDistance("compact", 8, "cosine").eval()
    pool = np.arange(100)
    subset = baseline_comparison.comparison_subset(pool, 30, seed=0)
    assert len(set(subset)) == 30 and (np.diff(subset) > 0).all()
    rows = baseline_comparison.compare_with_common_lines(
        model, "untrained", clean, subset, pool, None, box_size=24, n_neighbours=3, cache_dir=tmp_path
    )
    assert set(rows) == set(baseline_comparison.METHODS)
    for name, row in rows.items():
        assert row["n"] == 30, name
        assert 0 <= row["e_or"] <= row["e_reg"] + 1e-6 <= np.pi, (name, row)  # O(4) can only do better
        assert row["seconds"] > 0
    assert rows["common_lines"]["e_reg"] < 0.1  # clean images: common lines work
    cached = list(tmp_path.glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == rows

    def fail(*args, **kwargs):
        raise AssertionError("the cached comparison should have been read")

    monkeypatch.setattr(baseline_comparison, "estimated_distances", fail)
    again = baseline_comparison.compare_with_common_lines(
        model, "untrained", clean, subset, pool, None, box_size=24, n_neighbours=3, cache_dir=tmp_path
    )
    assert again == rows
    cached[0].write_text("{not json")  # a damaged cache is computed again, not trusted
    with pytest.raises(AssertionError, match="cached comparison"):
        baseline_comparison.compare_with_common_lines(
            model, "untrained", clean, subset, pool, None, box_size=24, n_neighbours=3, cache_dir=tmp_path
        )
    with pytest.raises(ValueError, match="drawn from pool"):
        outside = np.array([150, 151, 152])
        baseline_comparison.compare_with_common_lines(model, "m", clean, outside, pool, None)
    with pytest.raises(ValueError, match="subset size"):
        baseline_comparison.comparison_subset(pool, 2)
