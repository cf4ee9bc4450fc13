import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation

from cryoorient import geometry
from cryoorient.geometry import (
    canonical_quaternion,
    euler_to_matrix,
    euler_to_quaternion,
    matrix_to_euler,
    matrix_to_quaternion,
    quaternion_conjugate,
    quaternion_distance,
    quaternion_distance_matrix,
    quaternion_multiply,
    quaternion_to_euler,
    quaternion_to_matrix,
    viewing_direction,
)
from cryoorient.sampling import sample_orientations

TOL = 1e-6  # float64 round trips


def random_angles(rng: np.random.Generator, n: int) -> torch.Tensor:
    """(n, 3) RELION angles: rot, psi in [-π, π), tilt in [0, π]."""
    return torch.from_numpy(
        np.stack([rng.uniform(-np.pi, np.pi, n), rng.uniform(0, np.pi, n), rng.uniform(-np.pi, np.pi, n)], -1)
    )


def same_orientation(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Max deviation between quaternions up to the sign ambiguity (robust where w ≈ 0)."""
    return torch.minimum((q1 - q2).abs().amax(-1), (q1 + q2).abs().amax(-1)).max()


# --- agreement with SciPy, an independent implementation -----------------------------------------


def test_euler_matrix_is_relion_convention(rng):
    angles = random_angles(rng, 200)
    expected = Rotation.from_euler("ZYZ", angles.numpy()).inv().as_matrix()
    assert np.abs(euler_to_matrix(angles).numpy() - expected).max() < 1e-12


def test_relion_matrix_written_out():
    # A(rot, tilt, psi) = Rz(psi) Ry(tilt) Rz(rot) in RELION's (passive) form, checked on one case by hand:
    # rot = 90°, tilt = 0, psi = 0 maps the x axis to -y in image coordinates.
    a = euler_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(
        a @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0, -1.0, 0], dtype=torch.float64)
    )
    # tilt = 90° turns the projection direction (third row) to the x axis
    a = euler_to_matrix(torch.tensor([0.0, math.pi / 2, 0.0], dtype=torch.float64))
    assert torch.allclose(a[2], torch.tensor([1.0, 0, 0], dtype=torch.float64), atol=1e-15)


def test_quaternion_matrix_matches_scipy(quaternions):
    expected = Rotation.from_quat(quaternions[:, [1, 2, 3, 0]].numpy()).as_matrix()  # SciPy is scalar last
    assert np.abs(quaternion_to_matrix(quaternions).numpy() - expected).max() < 1e-12


def test_matrices_are_rotations(quaternions):
    r = quaternion_to_matrix(quaternions)
    eye = torch.eye(3, dtype=r.dtype).expand_as(r)
    assert (r @ r.transpose(-1, -2) - eye).abs().max() < 1e-12
    assert (torch.linalg.det(r) - 1).abs().max() < 1e-12


# --- round trips between all representations ------------------------------------------------------


def test_quaternion_matrix_round_trip(quaternions):
    assert same_orientation(matrix_to_quaternion(quaternion_to_matrix(quaternions)), quaternions) < TOL


def test_quaternion_euler_round_trip(quaternions):
    assert same_orientation(euler_to_quaternion(quaternion_to_euler(quaternions)), quaternions) < TOL


def test_euler_matrix_round_trip(rng):
    angles = random_angles(rng, 500)
    back = matrix_to_euler(euler_to_matrix(angles))
    assert (back - angles).abs().max() < TOL  # angles in the canonical ranges come back unchanged
    assert (euler_to_matrix(back) - euler_to_matrix(angles)).abs().max() < TOL


def test_half_turns_round_trip():
    # w = 0: the quaternion method must not divide by a vanishing scalar part
    q = torch.tensor([[0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0], [0, 0.6, 0.8, 0]], dtype=torch.float64)
    assert same_orientation(matrix_to_quaternion(quaternion_to_matrix(q)), q) < TOL


@pytest.mark.parametrize("tilt", [0.0, math.pi, 1e-9, math.pi - 1e-9])
def test_gimbal_lock(rng, tilt):
    angles = random_angles(rng, 50)
    angles[:, 1] = tilt
    back = matrix_to_euler(euler_to_matrix(angles))
    assert torch.isfinite(back).all()
    assert (euler_to_matrix(back) - euler_to_matrix(angles)).abs().max() < TOL
    if tilt in (0.0, math.pi):
        assert (back[:, 0] == 0).all()  # RELION's choice: everything in psi
        assert (back[:, 1] - tilt).abs().max() < TOL
    q = euler_to_quaternion(angles)
    assert same_orientation(euler_to_quaternion(quaternion_to_euler(q)), q) < TOL


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (4,), elements=st.floats(-1, 1)).filter(lambda v: np.linalg.norm(v) > 1e-3))
def test_round_trip_property(v):
    q = torch.from_numpy(v / np.linalg.norm(v))
    assert same_orientation(matrix_to_quaternion(quaternion_to_matrix(q)), q) < TOL
    angles = quaternion_to_euler(q)
    # Within RELION's gimbal-lock band (|sin tilt| <= 16 FLT_EPSILON) rot is set to 0 and the tilt
    # kept, so the orientation moves by up to 2 |sin tilt| (its tilt axis turns by rot); outside, exact.
    sin_tilt = abs(math.sin(float(angles[1])))
    bound = TOL + (2 * sin_tilt if sin_tilt <= geometry._GIMBAL_EPS else 0.0)
    assert same_orientation(euler_to_quaternion(angles), q) < bound


def test_round_trip_inside_the_gimbal_lock_band():
    # the example Hypothesis found under Python 3.13: tilt 1.4e-6 rad, inside the band
    q = torch.tensor([1.0, 0.0, 1e-6, 1.0], dtype=torch.float64)
    q = q / q.norm()
    angles = quaternion_to_euler(q)
    assert float(angles[0]) == 0.0 and 0 < math.sin(float(angles[1])) <= geometry._GIMBAL_EPS
    assert same_orientation(euler_to_quaternion(angles), q) < TOL + 2 * math.sin(float(angles[1]))


def test_float32_and_batch_shapes():
    q = sample_orientations(24, seed=3, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert quaternion_to_matrix(q).shape == (2, 3, 4, 3, 3)
    assert quaternion_to_euler(q).shape == (2, 3, 4, 3)
    assert quaternion_to_euler(q).dtype == torch.float32
    assert same_orientation(euler_to_quaternion(quaternion_to_euler(q)), q) < 1e-5


def test_canonical_quaternion(quaternions):
    c = canonical_quaternion(quaternions)
    assert (c[:, 0] >= 0).all()
    assert same_orientation(c, quaternions) == 0


def test_numpy_input_accepted():
    q = np.array([1.0, 0, 0, 0])
    assert torch.allclose(quaternion_to_matrix(q), torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("function", "shape"),
    [
        (quaternion_to_matrix, (3,)),
        (matrix_to_quaternion, (3, 4)),
        (euler_to_matrix, (4,)),
        (matrix_to_euler, (9,)),
    ],
)
def test_bad_shapes_raise(function, shape):
    with pytest.raises(ValueError, match="must have shape"):
        function(torch.zeros(shape))


# --- the geodesic distance --------------------------------------------------------------------------


def test_distance_is_rotation_angle(quaternions):
    q1, q2 = quaternions[:250], quaternions[250:]
    relative = Rotation.from_matrix(
        (quaternion_to_matrix(q1).transpose(-1, -2) @ quaternion_to_matrix(q2)).numpy()
    )
    assert np.abs(quaternion_distance(q1, q2).numpy() - relative.magnitude()).max() < TOL
    arccos_form = 2 * torch.arccos((q1 * q2).sum(-1).abs().clamp(max=1))
    assert (quaternion_distance(q1, q2) - arccos_form).abs().max() < TOL


def test_metric_axioms(quaternions):
    d = quaternion_distance_matrix(quaternions)  # (500, 500)
    assert (d - d.T).abs().max() < TOL  # symmetry
    assert d.diagonal().abs().max() < TOL  # identity
    assert quaternion_distance(quaternions, -quaternions).abs().max() < TOL  # q and -q are one orientation
    assert d.min() >= 0 and d.max() <= math.pi
    # triangle inequality on all triples of the first 120 orientations
    small = d[:120, :120]
    slack = small[:, None, :] - small[:, :, None] - small[None, :, :]  # d(i,k) - d(i,j) - d(j,k)
    assert slack.max() < TOL


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_triangle_inequality_property(seed):
    a, b, c = sample_orientations(3, seed=seed)
    assert quaternion_distance(a, c) <= quaternion_distance(a, b) + quaternion_distance(b, c) + TOL


def test_distance_invariances(quaternions):
    q1, q2 = quaternions[:250], quaternions[250:]
    a, b = sample_orientations(2, seed=7)
    d = quaternion_distance(q1, q2)
    left_right = quaternion_distance(
        quaternion_multiply(quaternion_multiply(a, q1), b), quaternion_multiply(quaternion_multiply(a, q2), b)
    )
    assert (left_right - d).abs().max() < TOL
    conjugated = quaternion_distance(quaternion_conjugate(q1), quaternion_conjugate(q2))
    assert (conjugated - d).abs().max() < TOL


def test_multiply_composes_rotations(quaternions):
    a, b = quaternions[:250], quaternions[250:]
    lhs = quaternion_to_matrix(quaternion_multiply(a, b))
    assert (lhs - quaternion_to_matrix(a) @ quaternion_to_matrix(b)).abs().max() < 1e-12


def test_small_distances_are_accurate():
    # 2 arccos|<q1, q2>| loses ~1e-4 rad in float32 near 0; the atan2 form keeps full relative precision
    angle = 1e-5
    q1 = torch.tensor([1.0, 0, 0, 0], dtype=torch.float32)
    q2 = torch.tensor([math.cos(angle / 2), math.sin(angle / 2), 0, 0], dtype=torch.float32)
    assert abs(quaternion_distance(q1, q2).item() - angle) < 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_at_zero_and_pi(dtype):
    q = sample_orientations(8, seed=5, dtype=dtype)
    orthogonal = quaternion_multiply(q, torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=dtype))  # half turn: d = π
    for target, expected in ((q.clone(), 0.0), (orthogonal, math.pi)):
        x = q.clone().requires_grad_(True)
        d = quaternion_distance(x, target)
        assert (d - expected).abs().max() < 1e-5
        d.sum().backward()
        assert torch.isfinite(x.grad).all()


def test_distance_broadcasts():
    q = sample_orientations(12, seed=4)
    d = quaternion_distance(q[:5, None, :], q[None, 5:, :])
    assert d.shape == (5, 7)
    assert torch.allclose(d, quaternion_distance_matrix(q[:5], q[5:]))


def test_distance_matrix_rejects_batches():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        quaternion_distance_matrix(torch.zeros(2, 3, 4))


def test_viewing_direction_formula(rng):
    angles = random_angles(rng, 100)
    rot, tilt = angles[:, 0], angles[:, 1]
    expected = torch.stack([tilt.sin() * rot.cos(), tilt.sin() * rot.sin(), tilt.cos()], -1)
    assert (viewing_direction(euler_to_quaternion(angles)) - expected).abs().max() < TOL
