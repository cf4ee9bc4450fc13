import math

import numpy as np
import pytest
import torch

from cryoorient.alignment import align_orientations
from cryoorient.geometry import quaternion_distance, quaternion_distance_matrix, quaternion_multiply
from cryoorient.recovery import (
    RecoveryResult,
    orientation_loss,
    perturb_distances,
    recover_orientations,
    recover_orientations_sampled,
    reliability_weights,
    spectral_orientations,
)
from cryoorient.sampling import sample_orientations

P = 150


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def truth() -> torch.Tensor:
    return sample_orientations(P, "uniform", seed=11)


@pytest.fixture(scope="module")
def exact(truth) -> torch.Tensor:
    return quaternion_distance_matrix(truth)


def perturbed(distances: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    """Symmetric Gaussian errors of standard deviation ``std`` on the distances, clipped to [0, π]."""
    n = len(distances)
    noise = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, n))).triu(1) * std
    return (distances + noise + noise.T).clamp(0.0, math.pi)


def error(truth: torch.Tensor, result: RecoveryResult) -> float:
    return align_orientations(truth, result.quaternions).error


# --- the full-batch path ---------------------------------------------------------------------------


def test_exact_distances_are_recovered(truth, exact):
    result = recover_orientations(exact, device="cpu")
    assert isinstance(result, RecoveryResult)
    assert error(truth, result) < 1e-3
    assert result.loss < 1e-12
    assert result.converged
    assert result.quaternions.shape == (P, 4)
    assert bool((result.quaternions[:, 0] >= 0).all())
    assert torch.allclose(
        torch.linalg.vector_norm(result.quaternions, dim=1), torch.ones(P, dtype=torch.float64)
    )


@pytest.mark.parametrize("scheme", ["quarter", "euler"])
def test_exact_distances_non_uniform_orientations(scheme):
    q = sample_orientations(120, scheme, seed=12)
    result = recover_orientations(quaternion_distance_matrix(q), device="cpu")
    assert error(q, result) < 1e-3


@pytest.mark.slow
def test_spectral_initialisation_is_exact_for_exact_distances(truth, exact):
    q = spectral_orientations(exact, device="cpu")
    assert align_orientations(truth, q).error < 1e-6


@pytest.mark.parametrize("n", [4, 6, 8, 9])
def test_fewer_than_nine_projections_still_recover(n):
    # the spectral start's embedding is 9-D; below 9 projections it has rank P, padded with zeros
    q = sample_orientations(n, seed=20 + n)
    result = recover_orientations(quaternion_distance_matrix(q), device="cpu", n_restarts=4)
    found = quaternion_distance_matrix(result.quaternions)
    assert result.quaternions.shape == (n, 4) and torch.isfinite(result.quaternions).all()
    assert float((found - quaternion_distance_matrix(q)).abs().max()) < 1e-3


def test_refinement_from_a_rough_start(truth, exact):
    # a start 0.2 rad away from the truth, refined by L-BFGS on L_OR alone
    noise = torch.from_numpy(np.random.default_rng(13).standard_normal((P, 4))) * 0.05
    result = recover_orientations(exact, init=truth + noise, device="cpu")
    assert error(truth, result) < 1e-3
    assert result.steps > 0


def test_loss_decreases(truth, exact):
    noise = torch.from_numpy(np.random.default_rng(14).standard_normal((P, 4))) * 0.1
    history = recover_orientations(perturbed(exact, 0.2), init=truth + noise, device="cpu").loss_history
    assert history[-1] < 0.5 * history[0]
    assert bool(np.all(np.diff(history) <= 1e-12))  # Armijo line search: monotone


def test_random_initialisation_decreases_the_loss(exact):
    # random starts often end in a local minimum (hence the spectral default); the loss still falls
    result = recover_orientations(exact, init="random", n_restarts=2, max_steps=100, device="cpu")
    assert result.loss < 0.5 * result.loss_history[0]


@pytest.mark.slow
def test_adam_reaches_the_same_minimum(exact):
    noisy = perturbed(exact, 0.3, seed=15)
    lbfgs = recover_orientations(noisy, device="cpu")
    adam = recover_orientations(noisy, optimizer="adam", lr=0.003, max_steps=2000, tol=1e-8, device="cpu")
    assert adam.loss == pytest.approx(lbfgs.loss, rel=5e-3)  # Adam jitters near the minimum
    assert lbfgs.steps < adam.steps


@pytest.mark.slow
def test_perturbed_distances_error_grows_with_noise(truth, exact):
    errors = [
        error(truth, recover_orientations(perturbed(exact, std, seed=16), device="cpu"))
        for std in (0.1, 0.3, 0.6)
    ]
    assert errors[0] < errors[1] < errors[2]
    assert errors[0] < 0.05
    assert errors[2] < 0.3  # sensible: far below the ~2.2 rad of unrelated orientations


@pytest.mark.slow
def test_deterministic_for_a_seed(exact):
    noisy = perturbed(exact, 0.3, seed=17)
    a = recover_orientations(noisy, seed=3, device="cpu")
    b = recover_orientations(noisy, seed=3, device="cpu")
    assert torch.equal(a.quaternions, b.quaternions)
    assert np.array_equal(a.loss_history, b.loss_history)


# --- the sampled-pair path -------------------------------------------------------------------------


@pytest.mark.slow
def test_sampled_path_agrees_with_full_batch_on_exact_distances(truth, exact):
    full = recover_orientations(exact, device="cpu")
    sampled = recover_orientations_sampled(exact, device="cpu")
    assert error(truth, full) < 1e-3
    assert error(truth, sampled) < 1e-3


@pytest.mark.slow
def test_sampled_path_refines_to_the_full_batch_minimum(truth, exact):
    # from the same rough start, the stochastic and the full-batch minimisations end together
    noisy = perturbed(exact, 0.3, seed=18)
    start = truth + torch.from_numpy(np.random.default_rng(19).standard_normal((P, 4))) * 0.05
    full = recover_orientations(noisy, init=start, device="cpu")
    sampled = recover_orientations_sampled(noisy, init=start, pairs_per_step=4096, device="cpu")
    e_full, e_sampled = error(truth, full), error(truth, sampled)
    assert e_sampled == pytest.approx(e_full, rel=0.25)
    assert sampled.converged
    assert sampled.epochs == len(sampled.loss_history) - 1


@pytest.mark.slow
def test_sampled_path_converges_linearly_on_exact_distances(truth, exact):
    # the per-row Gauss-Newton step cancels residuals geometrically: no jitter at an exact solution
    start = truth + torch.from_numpy(np.random.default_rng(21).standard_normal((P, 4))) * 0.05
    result = recover_orientations_sampled(exact, init=start, pairs_per_step=1024, device="cpu")
    assert error(truth, result) < 1e-6
    assert result.loss_history[-1] < 1e-12 * result.loss_history[0]
    stays = recover_orientations_sampled(exact, init=truth, max_epochs=3, loss_atol=0.0, device="cpu")
    assert error(truth, stays) < 1e-9


@pytest.mark.slow
def test_sampled_path_with_a_distance_function(truth):
    calls = []

    def distance_fn(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        calls.append(len(i))
        return quaternion_distance(truth[i], truth[j])

    result = recover_orientations_sampled(distance_fn, P, n_landmarks=40, max_epochs=3, device="cpu")
    assert error(truth, result) < 1e-3
    assert max(calls) <= 1 << 16  # evaluated in bounded chunks, never P² at once


@pytest.mark.slow
def test_sampled_path_is_deterministic(exact):
    noisy = perturbed(exact, 0.3, seed=20)
    a = recover_orientations_sampled(noisy, seed=5, max_epochs=5, device="cpu")
    b = recover_orientations_sampled(noisy, seed=5, max_epochs=5, device="cpu")
    assert torch.equal(a.quaternions, b.quaternions)


@pytest.mark.slow
def test_outputs_on_requested_device(exact, device):
    assert recover_orientations(exact, device=device).quaternions.device.type == device
    assert recover_orientations_sampled(exact, max_epochs=1, device=device).quaternions.device.type == device


# --- bad input ------------------------------------------------------------------------------------


def bad_matrices(exact: torch.Tensor):
    asymmetric = exact.clone()
    asymmetric[0, 1] += 0.1
    with_nan = exact.clone()
    with_nan[2, 3] = with_nan[3, 2] = math.nan
    above = exact.clone()
    above[4, 5] = above[5, 4] = math.pi + 0.01
    below = exact.clone()
    below[4, 5] = below[5, 4] = -0.01
    return [
        (exact[:, :-1], "square"),
        (exact[None], "square"),
        (asymmetric, "symmetric"),
        (with_nan, "NaN"),
        (above, r"\[0, π\]"),
        (below, r"\[0, π\]"),
        (exact[:3, :3], "at least 4"),
    ]


def test_bad_distance_matrices(exact):
    for matrix, message in bad_matrices(exact):
        for function in (recover_orientations, recover_orientations_sampled, spectral_orientations):
            with pytest.raises(ValueError, match=message):
                function(matrix, device="cpu")


@pytest.mark.slow
def test_tolerates_round_off(truth):
    q = truth.clone()
    q[1] = q[0]  # d = 0
    q[3] = quaternion_multiply(q[2], q.new_tensor([0.0, 1.0, 0.0, 0.0]))  # a half turn: d = π
    nudged = quaternion_distance_matrix(q)  # then off by float32 round-off: asymmetric, beyond [0, π]
    nudged[0, 1] = nudged[1, 0] = -1e-6
    nudged[2, 3] = nudged[3, 2] = math.pi + 1e-6
    nudged[4, 5] += 1e-6
    assert error(q, recover_orientations(nudged, device="cpu")) < 1e-3


def test_bad_distance_functions(truth):
    def wrong_shape(i, j):
        return torch.zeros(len(i) + 1)

    def with_nan(i, j):
        return torch.full((len(i),), math.nan)

    def negative(i, j):
        return -quaternion_distance(truth[i], truth[j]) - 0.1

    for fn, message in ((wrong_shape, "shape"), (with_nan, "NaN"), (negative, r"\[0, π\]")):
        with pytest.raises(ValueError, match=message):
            recover_orientations_sampled(fn, P, device="cpu")
    with pytest.raises(ValueError, match="n .* required"):
        recover_orientations_sampled(negative, device="cpu")
    with pytest.raises(ValueError, match="at least 4"):
        recover_orientations_sampled(negative, 3, device="cpu")


def test_bad_parameters(exact):
    with pytest.raises(ValueError, match="unknown init"):
        recover_orientations(exact, init="mds", device="cpu")
    with pytest.raises(ValueError, match=r"shape \(150, 4\)"):
        recover_orientations(exact, init=torch.ones(P, 3), device="cpu")
    with pytest.raises(ValueError, match="optimizer"):
        recover_orientations(exact, optimizer="sgd", device="cpu")
    with pytest.raises(ValueError, match="n_restarts"):
        recover_orientations(exact, n_restarts=0, device="cpu")
    with pytest.raises(ValueError, match="pairs_per_step"):
        recover_orientations_sampled(exact, pairs_per_step=0, device="cpu")
    with pytest.raises(ValueError, match="does not match"):
        recover_orientations_sampled(exact, n=P + 1, device="cpu")


def test_perturbed_distances_and_the_loss_they_give(rng):
    q = sample_orientations(40, seed=3)
    exact = quaternion_distance_matrix(q)
    assert orientation_loss(q, exact) < 1e-20
    noisy = perturb_distances(exact, 0.3, seed=1)
    assert torch.equal(noisy, noisy.T) and noisy.min() >= 0 and noisy.max() <= math.pi
    assert torch.equal(noisy, perturb_distances(exact, 0.3, seed=1))  # frozen by the seed
    residual = (noisy - exact)[torch.triu_indices(40, 40, 1).unbind()]
    assert 0.2 < float(residual.std()) < 0.32  # ~0.3, a little less where clipped
    assert orientation_loss(q, noisy) == pytest.approx(float((residual**2).mean()))
    with pytest.raises(ValueError, match="square"):
        perturb_distances(torch.zeros(3, 4), 0.1)
    with pytest.raises(ValueError, match="40 orientations"):
        orientation_loss(q, exact[:3, :3])


def test_weighted_recovery_with_uniform_weights_is_the_plain_one():
    q = sample_orientations(40, seed=3)
    d = perturb_distances(quaternion_distance_matrix(q), 0.2, seed=1)
    plain = recover_orientations(d, seed=0)
    weighted = recover_orientations(d, weights=3.0 * torch.ones(40, 40), seed=0)  # scale is irrelevant
    assert weighted.loss == pytest.approx(plain.loss, rel=1e-9)
    assert torch.allclose(weighted.quaternions, plain.quaternions, atol=1e-9)


def test_weighted_loss_ignores_zero_weight_pairs():
    q = sample_orientations(30, seed=4)
    d = quaternion_distance_matrix(q).clone()
    d[0, 1] = d[1, 0] = math.pi  # one wrong distance
    w = torch.ones(30, 30)
    w[0, 1] = w[1, 0] = 0.0  # ... given no weight
    result = recover_orientations(d, weights=w, seed=0)
    assert result.loss < 1e-12  # the other distances are exact and consistent
    assert align_orientations(q, result.quaternions).error < 1e-5


def test_reliability_weights():
    q = sample_orientations(50, seed=5)
    d = quaternion_distance_matrix(q)
    w = reliability_weights(d, scale=1.0)
    assert torch.allclose(w, w.T) and (w.diagonal() == 0).all() and ((w > 0) & (w <= 1)).sum() == 50 * 49
    knn = reliability_weights(d, neighbours=5)
    assert torch.equal(knn, knn.T) and (knn.sum(1) >= 5).all() and set(knn.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="exactly one"):
        reliability_weights(d)
    with pytest.raises(ValueError, match="neighbours must be below"):
        reliability_weights(d, neighbours=50)
    with pytest.raises(ValueError, match="weights must be symmetric"):
        recover_orientations(d, weights=torch.rand(50, 50) + 0.1)
