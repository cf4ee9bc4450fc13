import numpy as np
import pytest
import torch

from cryoorient.baselines import calibrate, image_distance_matrix, image_distances


def test_image_distances_agree_with_the_matrix_and_are_a_metric(rng):
    images = torch.from_numpy(rng.standard_normal((6, 5, 4)))
    matrix = image_distance_matrix(images)
    pairs = torch.tensor([[0, 1], [2, 5], [4, 4]])
    assert torch.allclose(image_distances(images, pairs), matrix[pairs[:, 0], pairs[:, 1]], atol=1e-12)
    assert torch.allclose(matrix, matrix.T) and matrix.diagonal().abs().max() < 1e-6
    assert (matrix[:, :, None] <= matrix[:, None, :] + matrix.T[None, :, :] + 1e-9).all()  # triangle
    assert image_distances(images, pairs)[0] == pytest.approx(float(np.linalg.norm(images[0] - images[1])))


def test_calibrate_recovers_an_affine_map(rng):
    d = rng.uniform(0, 10, 200)
    a, b = calibrate(d, 0.3 * d + 0.2)
    assert a == pytest.approx(0.3) and b == pytest.approx(0.2)


def test_bad_input_is_named(rng):
    images = torch.from_numpy(rng.standard_normal((3, 4, 4)))
    with pytest.raises(ValueError, match="outside 0..2"):
        image_distances(images, torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="NaN"):
        image_distance_matrix(torch.full((2, 3, 3), float("nan")))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        image_distance_matrix(torch.zeros(3, 9))
    with pytest.raises(ValueError, match="cannot be compared"):
        image_distance_matrix(images, torch.zeros(2, 5, 5))
    with pytest.raises(ValueError, match="equal-length"):
        calibrate(np.zeros(3), np.zeros(4))
