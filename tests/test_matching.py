import math

import numpy as np
import pytest
import torch

from cryoorient import matching
from cryoorient.alignment import score_orientations
from cryoorient.density import load_map
from cryoorient.geometry import matrix_to_quaternion, quaternion_to_matrix
from cryoorient.matching import (
    axis_angle_matrix,
    global_search,
    grid_spacing,
    local_search,
    match_to_map,
    orientation_grid,
)
from cryoorient.projection import add_noise, normalize_images, project
from cryoorient.refinement import rotation_change
from cryoorient.sampling import sample_orientations


@pytest.fixture(scope="module")
def volume():
    return torch.from_numpy(load_map("pseudo:1", box_size=32).data)


@pytest.fixture(scope="module")
def truth():
    return quaternion_to_matrix(sample_orientations(12, seed=3))


def test_orientation_grid_is_rotations_with_fibonacci_directions_and_even_in_plane_angles():
    grid = orientation_grid(50, 8)
    assert grid.shape == (400, 3, 3) and grid.dtype == torch.float64
    eye = torch.eye(3, dtype=torch.float64).expand(400, 3, 3)
    torch.testing.assert_close(grid @ grid.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(grid), torch.ones(400, dtype=torch.float64))
    directions = grid[::8, 2, :]  # A^T e_z: one per direction
    z = torch.sort(directions[:, 2]).values
    torch.testing.assert_close(z, torch.linspace(-1 + 1 / 50, 1 - 1 / 50, 50, dtype=torch.float64))
    torch.testing.assert_close(grid[:8, 2, :], directions[:1].expand(8, 3))  # same direction, 8 angles
    nearest = torch.cdist(directions, directions).fill_diagonal_(math.inf).min(dim=1).values
    assert 0.5 * math.sqrt(4 * math.pi / 50) < nearest.median() < 1.5 * math.sqrt(4 * math.pi / 50)
    assert grid_spacing(50, 8) == pytest.approx(2 * math.pi / 8)
    with pytest.raises(ValueError, match="n_in_plane"):
        orientation_grid(10, 0)


def test_axis_angle_matrices_rotate_by_the_vectors_length():
    rng = np.random.default_rng(0)
    v = torch.from_numpy(rng.normal(size=(20, 3)))
    angles = torch.linspace(0.01, math.pi - 0.01, 20, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True) * angles[:, None]
    r = axis_angle_matrix(v)
    eye = torch.eye(3, dtype=torch.float64).expand(20, 3, 3)
    torch.testing.assert_close(r @ axis_angle_matrix(-v), eye)  # the inverse is the opposite vector
    torch.testing.assert_close(rotation_change(r, eye), v.norm(dim=1))
    torch.testing.assert_close(r @ v[:, :, None], v[:, :, None])  # the axis is fixed
    torch.testing.assert_close(axis_angle_matrix(torch.zeros(3)), torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("max_frequency", [0.5, 0.2])
def test_the_score_is_the_pearson_correlation_of_the_band_limited_images(max_frequency):
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.normal(size=(3, 24, 24)).astype(np.float32))
    band = matching._band(24, max_frequency, torch.device("cpu"))
    features = matching._image_features(images, band)
    mask = torch.zeros(24 * 13, dtype=torch.bool)
    mask[band.flat] = True
    spectra = torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1))) * mask.reshape(24, 13)
    filtered = torch.fft.irfft2(spectra, s=(24, 24)).reshape(3, -1).double()
    assert filtered.mean(dim=1).abs().max() < 1e-6  # no zero frequency: zero mean
    pearson = torch.corrcoef(filtered)
    torch.testing.assert_close((features @ features.T).double(), pearson, atol=1e-5, rtol=0)


def test_global_search_finds_noiseless_projections_among_the_candidates(volume, truth):
    images = project(volume, truth)
    candidates = torch.cat((orientation_grid(60, 12), truth))
    found = global_search(images, volume, candidates, batch_size=100)
    torch.testing.assert_close(found.rotations, truth)
    assert found.scores.min() > 0.999 and found.scores.max() <= 1 + 1e-6
    assert torch.isnan(found.steps).all()


def test_global_then_local_search_recovers_noisy_orientations_to_the_noise_limit(volume, truth):
    images = add_noise(normalize_images(project(volume, truth)), variance=0.5, seed=0)  # SNR 2
    grid = orientation_grid(300, 24)  # about 12° apart
    start = global_search(images, volume, grid, max_frequency=0.25)
    coarse = rotation_change(start.rotations, truth)
    assert coarse.median() < grid_spacing(300, 24)
    kept = start.rotations.clone()
    refined = local_search(images, volume, start.rotations, step=math.radians(6))
    torch.testing.assert_close(start.rotations, kept)  # the starting rotations are not changed in place
    error = rotation_change(refined.rotations, truth)
    assert error.median() < math.radians(2.5) < coarse.median()
    assert (refined.steps < math.radians(0.25)).all()  # every image ran until its step was small
    # noise moves the best match off the truth: the search from the truth ends as far, no higher
    from_truth = local_search(images, volume, truth, step=math.radians(2))
    assert (refined.scores >= from_truth.scores - 1e-3).all()
    assert 0.5 < error.median() / rotation_change(from_truth.rotations, truth).median() < 2


def test_local_search_stays_at_noiseless_truth(volume, truth):
    images = project(volume, truth)
    found = local_search(images, volume, truth, step=math.radians(2), min_step=math.radians(0.5))
    assert rotation_change(found.rotations, truth).max() < math.radians(0.5)


def test_bad_inputs_are_named(volume, truth):
    images = project(volume, truth)
    with pytest.raises(ValueError, match="24 px cannot be matched with a 32³ map"):
        global_search(images[:, :24, :24], volume, truth)
    with pytest.raises(ValueError, match="max_frequency"):
        global_search(images, volume, truth, max_frequency=0.7)
    with pytest.raises(ValueError, match="12 images but 3 starting rotations"):
        local_search(images, volume, truth[:3])
    with pytest.raises(ValueError, match="shrink"):
        local_search(images, volume, truth, shrink=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        global_search(images, volume, truth, batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_searches_on_cuda_agree_with_the_cpu(volume, truth):
    images = add_noise(normalize_images(project(volume, truth)), variance=0.5, seed=0)
    grid = orientation_grid(100, 12)
    on_cpu, on_gpu = (global_search(images, volume, grid, device=d) for d in ("cpu", "cuda"))
    same = rotation_change(on_cpu.rotations, on_gpu.rotations) < 1e-6
    assert same.float().mean() > 0.9  # ties may differ
    local = local_search(images, volume, on_cpu.rotations, device="cuda")
    assert local.rotations.device.type == "cpu" and (local.scores >= on_cpu.scores - 1e-4).all()


def test_match_to_map_finds_noiseless_orientations_in_the_maps_frame():
    volume = torch.from_numpy(load_map("pseudo:1", box_size=24, voxel_size=10.0).data)
    q = sample_orientations(12, seed=3)
    images = project(volume, quaternion_to_matrix(q))
    matches, seconds = match_to_map(images, volume, directions=300, in_plane=24)
    found = score_orientations(q, matrix_to_quaternion(matches.rotations))
    assert found.e_reg < math.radians(3) and seconds > 0  # the grid alone: about 13° apart


def _ctf_stack(volume, truth, pixel=4.0):
    """The projections of ``truth`` with RELION CTFs (1-2.5 µm at ``pixel`` Å: zeros below Nyquist)."""
    from cryoorient.projection import apply_ctf, ctf_2d

    d = volume.shape[0]
    defocus = torch.linspace(10000.0, 25000.0, len(truth), dtype=torch.float64)
    ctf = ctf_2d(d, pixel, defocus_u=defocus, device="cpu")
    return apply_ctf(project(volume, truth.float()), ctf), ctf


def test_the_ctf_score_is_the_correlation_with_the_ctf_affected_projection(volume, truth):
    """Laws of the CTF score: a CTF of ones is no CTF; the CTF's scale does not matter; at the true
    orientation it is the band-limited correlation of the image with CTF · P, computed directly."""
    from cryoorient.projection import apply_ctf

    images, ctf = _ctf_stack(volume, truth)
    plain = global_search(images, volume, truth, max_frequency=0.4)
    ones = global_search(images, volume, truth, max_frequency=0.4, ctf=torch.ones_like(ctf))
    torch.testing.assert_close(ones.scores, plain.scores, atol=1e-5, rtol=0)
    scaled = global_search(images, volume, truth, max_frequency=0.4, ctf=3 * ctf)
    with_ctf = global_search(images, volume, truth, max_frequency=0.4, ctf=ctf)
    torch.testing.assert_close(scaled.scores, with_ctf.scores, atol=1e-5, rtol=0)
    # direct: correlate each image with its own CTF-affected projection on the same band
    recorded = apply_ctf(project(volume, truth.float()), ctf)
    band = matching._band(volume.shape[0], 0.4, torch.device("cpu"))
    a, b = matching._image_features(images, band), matching._image_features(recorded, band)
    direct = (a * b).sum(1).double()
    best_self = torch.stack([with_ctf.scores[i] for i in range(len(truth))])
    assert torch.all(best_self >= direct - 1e-4)  # the best of the candidates is at least the truth's
    local = local_search(images, volume, truth, step=1e-3, min_step=1e-3, max_rounds=1, max_frequency=0.4,
                         ctf=ctf)
    torch.testing.assert_close(local.scores, direct, atol=2e-4, rtol=0)  # at the truth, ties keep it


@pytest.mark.slow
def test_matching_ctf_images_needs_their_ctfs(volume):
    truth = quaternion_to_matrix(sample_orientations(40, seed=8))
    images, ctf = _ctf_stack(volume, truth)
    images = add_noise(normalize_images(images), variance=0.5, seed=1)
    found = {
        name: match_to_map(images, volume, directions=300, in_plane=24, ctf=given)[0].rotations
        for name, given in (("with", ctf), ("without", None))
    }
    error = {name: score_orientations(matrix_to_quaternion(truth), matrix_to_quaternion(r)).e_reg
             for name, r in found.items()}
    assert error["with"] < 0.05 and error["without"] > 2 * error["with"], error  # measured 0.016, 0.317
