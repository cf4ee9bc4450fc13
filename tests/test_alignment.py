import math

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from cryoorient._reference import align_orientations_reference
from cryoorient.alignment import (
    AlignmentResult,
    OrientationScore,
    align_orientations,
    o4_transform,
    orientation_errors,
    orientation_recovery_error,
    score_orientations,
)
from cryoorient.geometry import quaternion_conjugate, quaternion_multiply, quaternion_to_matrix
from cryoorient.sampling import sample_orientations

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_o4(seed: int, proper: bool) -> torch.Tensor:
    """A Haar-random element of O(4) with the requested determinant (SciPy, independent of ours)."""
    t = torch.from_numpy(ortho_group.rvs(4, random_state=seed))
    if (float(torch.linalg.det(t)) > 0) != proper:
        t[:, 0] = -t[:, 0]
    return t


def random_signs(n: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, 1)))


def transformed(q: torch.Tensor, t: torch.Tensor, seed: int, noise: float = 0.0) -> torch.Tensor:
    """``T q_i`` with random signs, plus isotropic noise on the 4-vectors, renormalised."""
    r = (q @ t.T) * random_signs(len(q), seed)
    if noise:
        r = r + noise * torch.from_numpy(np.random.default_rng(seed + 1).standard_normal(r.shape))
    return r / torch.linalg.vector_norm(r, dim=1, keepdim=True)


def same_transform_up_to_sign(a: torch.Tensor, b: torch.Tensor) -> float:
    """``T`` and ``-T`` act identically on orientations."""
    return min(float((a - b).abs().max()), float((a + b).abs().max()))


# --- exact recovery of a global transform ---------------------------------------------------------


@pytest.mark.parametrize("proper", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_random_o4_transform(quaternions, proper, seed):
    t = random_o4(seed, proper)
    recovered = transformed(quaternions, t, seed)
    result = align_orientations(quaternions, recovered)
    assert result.error < 1e-6
    assert float(result.errors.max()) < 1e-6
    assert result.transform_class == ("proper" if proper else "improper")
    assert same_transform_up_to_sign(result.transform, t.T) < 1e-6  # T⁻¹ = Tᵀ
    # the aligned set is the true one, up to the sign of each quaternion
    assert (
        float(torch.minimum((result.aligned - quaternions).abs(), (result.aligned + quaternions).abs()).max())
        < 1e-6
    )


@pytest.mark.parametrize("scheme", ["half", "quarter", "euler"])
def test_recovers_transform_for_non_uniform_orientations(scheme):
    q = sample_orientations(400, scheme, seed=3)
    for proper in (True, False):
        result = align_orientations(q, transformed(q, random_o4(7, proper), 4))
        assert result.error < 1e-6


def test_recovers_transform_without_refinement(quaternions):
    result = align_orientations(quaternions, transformed(quaternions, random_o4(5, False), 6), refine=False)
    assert result.error < 1e-6


def test_identical_sets_have_zero_error(quaternions):
    result = align_orientations(quaternions, quaternions)
    assert result.error < 1e-12
    assert result.transform_class == "proper"
    assert same_transform_up_to_sign(result.transform, torch.eye(4, dtype=torch.float64)) < 1e-9
    assert orientation_recovery_error(quaternions, quaternions) < 1e-12


# --- invariances ----------------------------------------------------------------------------------


def test_invariant_to_sign_flips_of_recovered(quaternions):
    recovered = transformed(quaternions, random_o4(11, True), 12, noise=0.1)
    flipped = recovered * random_signs(len(recovered), 13)
    a = align_orientations(quaternions, recovered)
    b = align_orientations(quaternions, flipped)
    assert abs(a.error - b.error) < 1e-12
    assert torch.allclose(a.errors, b.errors, atol=1e-12)


def test_invariant_to_a_further_transform_of_recovered(quaternions):
    recovered = transformed(quaternions, random_o4(21, True), 22, noise=0.1)
    again = transformed(recovered, random_o4(23, False), 24)
    assert (
        abs(align_orientations(quaternions, recovered).error - align_orientations(quaternions, again).error)
        < 1e-9
    )


def test_error_helper_matches_result(quaternions):
    recovered = transformed(quaternions, random_o4(31, False), 32, noise=0.2)
    result = align_orientations(quaternions, recovered)
    assert isinstance(result, AlignmentResult)
    assert abs(orientation_recovery_error(quaternions, recovered, result.transform) - result.error) < 1e-12
    assert torch.allclose(orientation_errors(quaternions, recovered, result.transform), result.errors)
    assert result.errors.shape == (len(quaternions),)
    assert bool((result.aligned[:, 0] >= 0).all())
    assert abs(float(torch.linalg.det(result.transform))) == pytest.approx(1.0)


def test_error_without_transform_is_unaligned(quaternions):
    recovered = transformed(quaternions, random_o4(41, True), 42)
    eye = torch.eye(4, dtype=torch.float64)
    assert orientation_recovery_error(quaternions, recovered) == pytest.approx(
        orientation_recovery_error(quaternions, recovered, eye)
    )
    assert orientation_recovery_error(quaternions, recovered) > 0.5  # a random T moves everything


# --- the fast solver against the paper's approach --------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "noise"),
    [
        pytest.param(51, 0.02, marks=pytest.mark.slow),
        (52, 0.1),
        (53, 0.3),
        pytest.param(54, 1.0, marks=pytest.mark.slow),
    ],
)
def test_fast_solver_never_worse_than_reference(seed, noise):
    q = sample_orientations(300, seed=seed)
    recovered = transformed(q, random_o4(seed, seed % 2 == 0), seed, noise=noise)
    fast = align_orientations(q, recovered)
    reference = align_orientations_reference(q, recovered, steps=150, seed=seed)
    assert fast.error <= reference.error + 1e-9
    # and never worse than the transform that generated the data
    assert fast.error <= orientation_recovery_error(q, recovered, random_o4(seed, seed % 2 == 0).T) + 1e-9


def test_refinement_lowers_the_mean_error():
    q = sample_orientations(300, seed=61)
    recovered = transformed(q, random_o4(62, True), 63, noise=0.5)
    assert (
        align_orientations(q, recovered).error <= align_orientations(q, recovered, refine=False).error + 1e-12
    )


@pytest.mark.slow
def test_reference_recovers_a_transform_full_batch():
    q = sample_orientations(200, seed=71)
    result = align_orientations_reference(
        q, transformed(q, random_o4(72, False), 73), batch_size=None, n_runs=3
    )
    assert result.error < 1e-3
    assert result.transform_class == "improper"


# --- o4_transform ----------------------------------------------------------------------------------


def test_o4_transform_is_left_right_multiplication(quaternions):
    a, b = sample_orientations(2, seed=81)
    proper = o4_transform(a, b)
    improper = o4_transform(a, b, improper=True)
    assert torch.allclose(quaternions @ proper.T, quaternion_multiply(quaternion_multiply(a, quaternions), b))
    expected = quaternion_multiply(quaternion_multiply(a, quaternion_conjugate(quaternions)), b)
    assert torch.allclose(quaternions @ improper.T, expected)
    assert torch.allclose(proper.T @ proper, torch.eye(4, dtype=torch.float64))
    assert float(torch.linalg.det(proper)) == pytest.approx(1.0)
    assert float(torch.linalg.det(improper)) == pytest.approx(-1.0)
    # on rotations: R ↦ A R B and R ↦ A Rᵀ B
    ra, rb, r = quaternion_to_matrix(a), quaternion_to_matrix(b), quaternion_to_matrix(quaternions)
    assert torch.allclose(quaternion_to_matrix(quaternions @ proper.T), ra @ r @ rb)
    assert torch.allclose(quaternion_to_matrix(quaternions @ improper.T), ra @ r.mT @ rb)


# --- devices and bad input --------------------------------------------------------------------------


def test_outputs_on_input_device(device):
    q = sample_orientations(50, seed=91).to(device)
    result = align_orientations(q, q.flip(1))
    for t in (result.errors, result.aligned, result.transform):
        assert t.device.type == device


@pytest.mark.parametrize(
    ("true_q", "recovered_q", "message"),
    [
        (torch.ones(10, 4), torch.ones(9, 4), "same number"),
        (torch.ones(3, 4), torch.ones(3, 4), "at least 4"),
        (torch.ones(10, 3), torch.ones(10, 3), r"shape \(P, 4\)"),
        (torch.ones(10, 4), torch.ones(10, 4, 1), r"shape \(P, 4\)"),
        (torch.ones(10, 4), torch.full((10, 4), math.nan), "NaN"),
        (torch.ones(10, 4), torch.zeros(10, 4), "zero quaternion"),
    ],
)
def test_bad_input(true_q, recovered_q, message):
    with pytest.raises(ValueError, match=message):
        align_orientations(true_q, recovered_q)
    with pytest.raises(ValueError, match=message):
        align_orientations_reference(true_q, recovered_q)
    with pytest.raises(ValueError, match=message):
        orientation_recovery_error(true_q, recovered_q)


def test_bad_parameters(quaternions):
    with pytest.raises(ValueError, match="n_starts"):
        align_orientations(quaternions, quaternions, n_starts=0)
    with pytest.raises(ValueError, match="orthogonal"):
        orientation_errors(quaternions, quaternions, 2 * torch.eye(4))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        orientation_errors(quaternions, quaternions, torch.eye(3))
    with pytest.raises(ValueError, match="batch_size"):
        align_orientations_reference(quaternions, quaternions, batch_size=0)
    with pytest.raises(ValueError, match="shape"):
        o4_transform(torch.ones(3), torch.ones(4))


# --- registration by a global rotation and the mirror only (E_OR,reg) -------------------------------


def _mirror(q: torch.Tensor) -> torch.Tensor:
    """``k q k̄`` with ``k = (0, 0, 0, 1)``."""
    k = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=q.dtype)
    return quaternion_multiply(quaternion_multiply(k, q), quaternion_conjugate(k))


def test_mirror_quaternion_is_j_conjugation(quaternions):
    from cryoorient.alignment import MIRROR_QUATERNION

    assert MIRROR_QUATERNION == (0.0, 0.0, 0.0, 1.0)
    j = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    rotations = quaternion_to_matrix(quaternions)
    torch.testing.assert_close(quaternion_to_matrix(_mirror(quaternions)), j @ rotations @ j)


@pytest.mark.parametrize("mirrored", [False, True])
def test_registration_removes_a_right_factor_and_the_mirror(quaternions, mirrored):
    from cryoorient.alignment import register_orientations, registration_error

    q = quaternions[:200]
    b = sample_orientations(1, seed=7)[0]
    h = quaternion_multiply(q, b)
    h = _mirror(h) if mirrored else h
    h = h * random_signs(len(h), 3)
    result = register_orientations(q, h)
    assert result.error < 1e-7 and result.mirrored == mirrored
    assert registration_error(q, h) == pytest.approx(result.error)
    assert float(orientation_errors(q, result.aligned).max()) < 1e-6


def test_registration_is_the_median_under_noise(quaternions):
    from cryoorient.alignment import register_orientations

    q = quaternions[:300]
    noisy = transformed(q, torch.eye(4, dtype=torch.float64), seed=4, noise=0.05)
    b = sample_orientations(1, seed=8)[0]
    result = register_orientations(q, quaternion_multiply(noisy, b))
    direct = orientation_recovery_error(q, noisy)
    # the best right factor is at least as good as undoing b exactly, and close to it
    assert result.error <= direct + 1e-6
    assert result.error > 0.9 * direct


@pytest.mark.parametrize("what", ["left", "conjugate"])
def test_registration_does_not_remove_what_images_see(quaternions, what):
    from cryoorient.alignment import register_orientations

    q = quaternions[:300]
    axis = torch.tensor([0.48, -0.6, 0.64], dtype=torch.float64)
    a = torch.cat((torch.tensor([math.cos(0.75)], dtype=torch.float64), math.sin(0.75) * axis))  # 1.5 rad
    h = quaternion_multiply(a, q) if what == "left" else quaternion_conjugate(q)
    # the paper's O(4) alignment removes both...
    assert align_orientations(q, h).error < 1e-6
    # ...registration by a global rotation and the mirror does not
    assert register_orientations(q, h).error > 0.5


def test_registration_rejects_bad_input(quaternions):
    from cryoorient.alignment import register_orientations

    with pytest.raises(ValueError, match="same number"):
        register_orientations(quaternions[:10], quaternions[:9])
    with pytest.raises(ValueError, match="max_iter"):
        register_orientations(quaternions[:10], quaternions[:10], max_iter=-1)


def test_score_orientations_is_zero_for_the_truth_and_blind_to_a_global_rotation():
    q = sample_orientations(100, seed=0)
    exact = score_orientations(q, q)
    assert isinstance(exact, OrientationScore)
    assert exact.e_or < 1e-6 and exact.e_reg < 1e-6 and exact.within_5 == exact.within_10 == 1.0
    turned = quaternion_multiply(q, sample_orientations(1, seed=1).expand(100, 4))  # q ↦ q b: the map turned
    again = score_orientations(q, turned)
    assert again.e_reg < 1e-6 and again.within_5 == 1.0
    chance = score_orientations(q, sample_orientations(100, seed=2))
    assert chance.e_reg > 1.0 and chance.e_or <= chance.e_reg + 1e-9  # O(4) removes more than registration
    assert chance.within_10 < 0.1
    assert set(chance.to_dict()) == {"e_or", "e_or_median", "e_reg", "e_reg_median", "within_5", "within_10"}
