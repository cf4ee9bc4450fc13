"""Gauge fixing from the images: geometry against the project's projector, and recovery of the truth
up to what images cannot fix (a global rotation and the mirror)."""

import time

import numpy as np
import pytest
import torch

from cryoorient.alignment import o4_transform, register_orientations
from cryoorient.density import load_map
from cryoorient.gauge import (
    CHANCE_MARGIN,
    GAUGE_CLASSES,
    TIE_MARGIN,
    GaugeResult,
    _candidate_angles,
    _pair_rotations,
    apply_gauge,
    common_line_score,
    fix_gauge,
)
from cryoorient.geometry import quaternion_conjugate, quaternion_multiply, quaternion_to_matrix
from cryoorient.projection import add_noise, normalize_images, project
from cryoorient.sampling import sample_orientations

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"n_candidates": 600, "n_pairs": 800, "n_refine_pairs": 1500, "n_refine": 2, "progress": False}


@pytest.fixture(scope="module")
def stack() -> tuple[torch.Tensor, torch.Tensor]:
    """(120, 32, 32) unit-variance projections of the pseudo-protein and their orientations."""
    density = load_map("pseudo:1", box_size=32, voxel_size=8.0)
    q = sample_orientations(120, seed=3)
    images = project(density.data, quaternion_to_matrix(q).float(), device="cpu")
    return normalize_images(images), q


def test_candidate_angles_are_the_common_lines():
    rng = np.random.default_rng(0)
    q = sample_orientations(40, seed=1)
    m = quaternion_to_matrix(sample_orientations(3, seed=2))  # (3, 3, 3) candidates
    rot = quaternion_to_matrix(q)
    i, j = rng.integers(0, 40, 30), (rng.integers(1, 40, 30) + np.arange(30)) % 40
    keep = i != j
    i, j = i[keep], j[keep]
    a_i, a_j = _candidate_angles(m, _pair_rotations(rot[i], rot[j]))
    for c in range(3):
        a = m[c] @ rot  # (P, 3, 3) orientations A = M R
        n = torch.linalg.cross(a[i, 2], a[j, 2])  # v = Aᵀ e_z is the third row of A
        line_i = (a[i] @ n[:, :, None])[..., 0]
        line_j = (a[j] @ n[:, :, None])[..., 0]
        assert float(line_i[:, 2].abs().max()) < 1e-12 and float(line_j[:, 2].abs().max()) < 1e-12
        torch.testing.assert_close(a_i[c], torch.atan2(line_i[:, 1], line_i[:, 0]))
        torch.testing.assert_close(a_j[c], torch.atan2(line_j[:, 1], line_j[:, 0]))


def test_true_orientations_agree_with_the_projector(stack):
    images, q = stack
    right = sample_orientations(1, seed=5)[0]
    k = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    true = common_line_score(images, q)
    assert true > 0.95
    # what images cannot see: a global right factor, the mirror
    assert common_line_score(images, quaternion_multiply(q, right)) == pytest.approx(true, abs=1e-4)
    mirrored = quaternion_multiply(quaternion_multiply(k, q), quaternion_conjugate(k))
    assert common_line_score(images, mirrored) == pytest.approx(true, abs=1e-4)
    # what they see: a left factor, the O(4) conjugation
    left = sample_orientations(1, seed=6)[0]
    assert common_line_score(images, quaternion_multiply(left, q)) < true - 0.02
    assert common_line_score(images, quaternion_conjugate(q)) < true - 0.02


@pytest.mark.parametrize("improper", [False, True])
def test_fix_gauge_recovers_the_truth_up_to_rotation_and_mirror(stack, improper):
    images, q = stack
    rng = np.random.default_rng(11 + improper)
    a, b = (torch.from_numpy(rng.standard_normal(4)) for _ in range(2))
    scrambled = q @ o4_transform(a / a.norm(), b / b.norm(), improper=improper).T
    assert register_orientations(q, scrambled).error > 0.5
    tic = time.perf_counter()
    result = fix_gauge(images, scrambled, seed=1, **FAST)
    assert 0 < result.seconds <= time.perf_counter() - tic  # its own wall time, not another clock's
    assert result.gauge_class == GAUGE_CLASSES[int(improper)]
    assert result.score > result.other_score + 0.01
    assert register_orientations(q, result.quaternions).error < 0.02
    # correct orientations: far above what the same orientations on the wrong images score
    assert result.diagnosis == "ok" and result.warning is None
    assert result.chance_margin > 2 * CHANCE_MARGIN and result.class_margin > 2 * TIE_MARGIN
    torch.testing.assert_close(result.quaternions, apply_gauge(scrambled, result.left, result.gauge_class))


def test_fix_gauge_on_noisy_shifted_images(stack):
    images, q = stack
    shifts = torch.from_numpy(np.random.default_rng(4).uniform(-2, 2, (len(q), 2)))
    density = load_map("pseudo:1", box_size=32, voxel_size=8.0)
    shifted = normalize_images(
        project(density.data, quaternion_to_matrix(q).float(), shifts.float(), device="cpu")
    )
    noisy = add_noise(shifted, variance=1.0, seed=2)
    scrambled = quaternion_conjugate(quaternion_multiply(sample_orientations(1, seed=9)[0], q))
    result = fix_gauge(noisy, scrambled, shifts=shifts, seed=3, **FAST)
    # measured 0.057 rad here (σ² = 1, 32 px, 120 images, the fast search): a small systematic offset
    # of the left factor, against ~1.5-2 rad for a wrong gauge
    assert result.gauge_class == "improper"
    assert register_orientations(q, result.quaternions).error < 0.1
    # 14.6 spreads above chance here, with the fast search's 1,500 pairs (√10 times the default's spread)
    assert result.diagnosis == "ok"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orientations_unrelated_to_the_images_are_diagnosed_as_chance(stack, seed):
    images, q = stack
    failures = {
        "random": sample_orientations(len(q), seed=40 + seed),
        "permuted": q[torch.from_numpy(np.random.default_rng(seed).permutation(len(q)))],
    }
    for name, wrong in failures.items():
        result = fix_gauge(images, wrong, seed=seed, **FAST)
        assert result.diagnosis == "chance", (name, result)
        # the search cannot lift them off chance: within a few spreads of the shuffled baseline, which
        # is the level of random orientations on these images (0.936 on this blobby 32-px map, where
        # all low-passed lines look alike), far below the true orientations (0.997)
        assert abs(result.chance_margin) < 4, (name, result)
        assert result.chance_score == pytest.approx(common_line_score(images, wrong, seed=seed), abs=0.01)
        assert common_line_score(images, q) > result.chance_score + 20 * result.chance_spread
        assert "chance level" in result.warning and "recovery failed" in result.warning


def test_the_verdict_is_deterministic_under_a_seed(stack):
    images, q = stack
    wrong = sample_orientations(len(q), seed=50)
    first, second = (fix_gauge(images, wrong, seed=7, **FAST) for _ in range(2))
    for name in ("score", "other_score", "chance_score", "chance_spread"):
        assert getattr(first, name) == getattr(second, name), name
    other = fix_gauge(images, wrong, seed=8, **FAST)
    assert other.chance_score != first.chance_score
    assert 0 < first.chance_spread < 0.05


def test_diagnosis_laws():
    def result(score, other, chance=0.2, spread=0.01, gauge_class="proper"):
        q = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
        return GaugeResult(q, q[0], gauge_class, score, other, 1.0, chance, spread)

    assert result(0.2 + CHANCE_MARGIN * 0.01 + 0.1, 0.2).diagnosis == "ok"
    # below the chance margin: chance, whatever the other class scores
    assert result(0.2 + (CHANCE_MARGIN - 0.5) * 0.01, 0.2).diagnosis == "chance"
    assert result(0.19, 0.1).diagnosis == "chance"
    # above chance but the classes not apart: a tie
    tie = result(0.5, 0.5 - (TIE_MARGIN - 0.5) * 0.01, gauge_class="improper")
    assert tie.diagnosis == "tie" and tie.class_margin == pytest.approx(TIE_MARGIN - 0.5)
    assert "undecided" in tie.warning and "0.500 improper" in tie.warning
    # no baseline measured (a result built by hand): not ok, and says why
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    unmeasured = GaugeResult(q, q[0], "proper", 0.9, 0.2, 1.0)
    assert unmeasured.diagnosis == "chance" and "cannot be judged" in unmeasured.warning
    # a zero spread does not divide by zero
    assert result(0.2, 0.2, spread=0.0).diagnosis == "chance"
    assert result(0.9, 0.2, spread=0.0).diagnosis == "ok"


def test_fix_gauge_rejects_bad_input(stack):
    images, q = stack
    with pytest.raises(ValueError, match="got 119 quaternions for 120 images"):
        fix_gauge(images, q[:-1], **FAST)
    with pytest.raises(ValueError, match="at least 8 images"):
        fix_gauge(images[:4], q[:4], **FAST)
    with pytest.raises(ValueError, match="n_candidates"):
        fix_gauge(images, q, **(FAST | {"n_candidates": 0}))
    with pytest.raises(ValueError, match=r"n_chance must be an integer >= 2 .*; got 1"):
        fix_gauge(images, q, n_chance=1, **FAST)
    with pytest.raises(ValueError, match="max_radius"):
        fix_gauge(images, q, max_radius=40.0, **FAST)
    with pytest.raises(ValueError, match="gauge_class"):
        apply_gauge(q, q[0], "mirror")
