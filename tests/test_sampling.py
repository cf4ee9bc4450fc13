import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from cryoorient.geometry import quaternion_distance, quaternion_to_euler
from cryoorient.sampling import (
    PAPER_HALF_COVERAGE,
    SAMPLING_SCHEMES,
    haar_distance_cdf,
    haar_distance_pdf,
    haar_quaternions,
    random_pairs,
    sample_euler_box,
    sample_orientations,
)

ALPHA = 0.01


@pytest.mark.parametrize("scheme", SAMPLING_SCHEMES)
def test_shapes_norms_and_hemisphere(scheme):
    q = sample_orientations(300, scheme, seed=0)
    assert q.shape == (300, 4) and q.dtype == torch.float64
    assert (q.norm(dim=-1) - 1).abs().max() < 1e-12
    assert (q[:, 0] >= 0).all()


@pytest.mark.parametrize("scheme", SAMPLING_SCHEMES)
def test_seeded(scheme):
    assert torch.equal(sample_orientations(50, scheme, seed=3), sample_orientations(50, scheme, seed=3))
    assert not torch.equal(sample_orientations(50, scheme, seed=3), sample_orientations(50, scheme, seed=4))
    rng = np.random.default_rng(3)
    first, second = sample_orientations(50, scheme, seed=rng), sample_orientations(50, scheme, seed=rng)
    assert not torch.equal(first, second)  # a Generator is consumed, not reset


def test_uniform_matches_haar_distance_density():
    q = sample_orientations(5000, "uniform", seed=11)
    fixed = sample_orientations(1, "uniform", seed=12)[0]
    assert stats.kstest(quaternion_distance(q, fixed).numpy(), haar_distance_cdf).pvalue > ALPHA
    pairs = quaternion_distance(q[0::2], q[1::2]).numpy()  # independent pairs
    assert stats.kstest(pairs, haar_distance_cdf).pvalue > ALPHA


def test_uniform_euler_angles_are_not_haar():
    # the test above has power: uniform Euler angles over-sample the poles and fail it
    q = sample_orientations(5000, "euler", seed=11)
    identity = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    assert stats.kstest(quaternion_distance(q, identity).numpy(), haar_distance_cdf).pvalue < 1e-3


def test_uniform_has_uniform_directions_and_inplane():
    rot, tilt, psi = quaternion_to_euler(sample_orientations(5000, "uniform", seed=13)).unbind(-1)
    assert stats.kstest(tilt.cos().numpy(), stats.uniform(-1, 2).cdf).pvalue > ALPHA
    assert stats.kstest((psi % (2 * math.pi)).numpy(), stats.uniform(0, 2 * math.pi).cdf).pvalue > ALPHA
    assert stats.kstest((rot % (2 * math.pi)).numpy(), stats.uniform(0, 2 * math.pi).cdf).pvalue > ALPHA


@pytest.mark.parametrize(("scheme", "rot_max"), [("half", 2 * math.pi), ("quarter", math.pi)])
def test_restricted_coverage(scheme, rot_max):
    rot, tilt, psi = quaternion_to_euler(sample_orientations(5000, scheme, seed=17)).unbind(-1)
    assert tilt.max() <= math.pi / 2 + 1e-9
    rot = rot % (2 * math.pi)
    assert rot.max() <= rot_max + 1e-9
    # uniform over the allowed patch of directions: cos(tilt) and rot uniform in their ranges
    assert stats.kstest(tilt.cos().numpy(), stats.uniform(0, 1).cdf).pvalue > ALPHA
    assert stats.kstest(rot.numpy(), stats.uniform(0, rot_max).cdf).pvalue > ALPHA
    assert stats.kstest((psi % (2 * math.pi)).numpy(), stats.uniform(0, 2 * math.pi).cdf).pvalue > ALPHA


def test_haar_density_normalised():
    theta = np.linspace(0, np.pi, 100001)
    assert abs(integrate.trapezoid(haar_distance_pdf(theta), theta) - 1) < 1e-8
    assert haar_distance_cdf(0.0) == 0 and abs(haar_distance_cdf(np.pi) - 1) < 1e-15
    assert np.allclose(
        np.gradient(haar_distance_cdf(theta), theta)[1:-1], haar_distance_pdf(theta)[1:-1], atol=1e-6
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown sampling scheme 'sphere'"):
        sample_orientations(5, "sphere")
    with pytest.raises(ValueError, match="non-negative integer"):
        sample_orientations(-1)
    with pytest.raises(ValueError, match="non-negative integer"):
        sample_orientations(2.5)
    assert sample_orientations(0).shape == (0, 4)


def test_euler_box_is_the_euler_scheme_at_full_range():
    box = sample_euler_box(200, (2.0, 1.0, 2.0), seed=5)
    assert torch.equal(box, sample_orientations(200, "euler", seed=5))


def test_paper_half_coverage_is_uniform_in_the_angles():
    q = sample_euler_box(5000, PAPER_HALF_COVERAGE, seed=19)
    assert (q.norm(dim=-1) - 1).abs().max() < 1e-12 and (q[:, 0] >= 0).all()
    rot, tilt, psi = quaternion_to_euler(q).unbind(-1)
    assert tilt.max() <= math.pi / 2 + 1e-9
    # uniform in tilt itself (the authors' uniform_angles), so not in cos(tilt) as Haar would be
    assert stats.kstest(tilt.numpy(), stats.uniform(0, math.pi / 2).cdf).pvalue > ALPHA
    assert stats.kstest(tilt.cos().numpy(), stats.uniform(0, 1).cdf).pvalue < 1e-3
    assert stats.kstest((rot % (2 * math.pi)).numpy(), stats.uniform(0, 2 * math.pi).cdf).pvalue > ALPHA
    assert torch.equal(q, sample_euler_box(5000, PAPER_HALF_COVERAGE, seed=19))


def test_paper_half_scheme_is_the_euler_box():
    """``"paper_half"`` is the box the authors sampled, so datasets and the CLI can ask for it by name."""
    assert torch.equal(sample_orientations(300, "paper_half", seed=4), sample_euler_box(300, seed=4))


@pytest.mark.parametrize("coverage", [(0.0, 0.5, 2.0), (2.0, 1.5, 2.0), (2.5, 0.5, 2.0)])
def test_euler_box_rejects_bad_coverage(coverage):
    with pytest.raises(ValueError, match="coverage must be"):
        sample_euler_box(5, coverage)


def test_haar_quaternions_are_unit_seeded_and_spread():
    q = haar_quaternions(4000, torch.Generator().manual_seed(3))
    assert q.shape == (4000, 4) and q.dtype == torch.float64
    torch.testing.assert_close(torch.linalg.vector_norm(q, dim=1), torch.ones(4000, dtype=torch.float64))
    torch.testing.assert_close(q, haar_quaternions(4000, torch.Generator().manual_seed(3)))
    # uniform on the 3-sphere: every coordinate has mean 0 and second moment 1/4
    assert q.mean(0).abs().max() < 0.05 and ((q**2).mean(0) - 0.25).abs().max() < 0.02


def test_random_pairs_are_distinct_and_cover_every_offset():
    i, j = random_pairs(7, 20000, torch.Generator().manual_seed(0))
    assert i.shape == j.shape == (20000,) and (i != j).all()
    assert int(i.min()) == 0 and int(max(i.max(), j.max())) == 6
    # j is uniform over the 6 others: every offset 1..6 about equally often
    counts = torch.bincount((j - i) % 7, minlength=7)
    assert counts[0] == 0 and (counts[1:] - 20000 / 6).abs().max() < 300
