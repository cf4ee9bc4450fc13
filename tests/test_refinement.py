import math

import numpy as np
import pytest
import torch

from cryoorient.alignment import score_orientations
from cryoorient.density import load_map
from cryoorient.fsc import fourier_shell_correlation, resolution
from cryoorient.geometry import matrix_to_quaternion, quaternion_multiply, quaternion_to_matrix
from cryoorient.matching import axis_angle_matrix
from cryoorient.projection import add_noise, normalize_images, project
from cryoorient.reconstruction import reconstruct
from cryoorient.refinement import fsc_weighted, map_in_frame, refine, rotation_change, split_halves
from cryoorient.sampling import sample_orientations


@pytest.fixture(scope="module")
def particles():
    """160 noisy projections (SNR 10) of a 32-px pseudo-protein, their true rotations and the map."""
    volume = torch.from_numpy(load_map("pseudo:2", box_size=32).data)
    truth = quaternion_to_matrix(sample_orientations(160, seed=5))
    images = add_noise(normalize_images(project(volume, truth)), variance=0.1, seed=1)
    return images, truth, volume


def perturbed(rotations: torch.Tensor, degrees: float, seed: int) -> torch.Tensor:
    """Each rotation turned by ``degrees`` about a random axis."""
    rng = np.random.default_rng(seed)
    axes = torch.from_numpy(rng.normal(size=(len(rotations), 3)))
    vectors = axes / axes.norm(dim=1, keepdim=True) * math.radians(degrees)
    return axis_angle_matrix(vectors) @ rotations


def test_split_halves_is_balanced_and_seeded():
    labels = split_halves(11, seed=3)
    assert labels.dtype == torch.int64 and sorted(labels.bincount().tolist()) == [5, 6]
    torch.testing.assert_close(labels, split_halves(11, seed=3))
    assert not torch.equal(split_halves(100, seed=0), split_halves(100, seed=1))
    with pytest.raises(ValueError, match="n must be"):
        split_halves(1)


def test_rotation_change_is_the_angle_between_the_rotations():
    start = quaternion_to_matrix(sample_orientations(5, seed=0))
    torch.testing.assert_close(
        rotation_change(start, start), torch.zeros(5, dtype=torch.float64), atol=1e-7, rtol=0
    )
    torch.testing.assert_close(
        rotation_change(start, perturbed(start, 7.0, seed=0)),
        torch.full((5,), math.radians(7.0), dtype=torch.float64),
    )


def test_refinement_brings_perturbed_orientations_back_without_the_truth(particles):
    images, truth, _ = particles
    start = perturbed(truth, 6.0, seed=2)
    result = refine(images, start, pixel_size=4.0, max_rounds=3, step=math.radians(4), seed=0)
    before, after = rotation_change(start, truth), rotation_change(result.rotations, truth)
    assert after.median() < before.median() / 2  # from 6° to under 3° in three rounds
    changes = [r.median_change for r in result.rounds]
    assert len(changes) == 3 and changes == sorted(changes, reverse=True)  # settling down
    assert not result.converged  # still moving by more than the tolerance (0.1°)
    assert set(result.halves.tolist()) == {0, 1} and result.half_maps[0].shape == (32, 32, 32)
    assert result.frequencies.shape == result.fsc.shape == (17,)
    assert 8.0 <= result.resolution < 16.0  # at most Nyquist (2 × 4 Å)


def test_refinement_from_the_truth_stays_near_it(particles):
    images, truth, _ = particles
    result = refine(images, truth, pixel_size=4.0, max_rounds=1, step=math.radians(1))
    assert rotation_change(result.rotations, truth).median() < math.radians(2)


def test_fsc_weighting_keeps_agreeing_shells_and_removes_the_others():
    rng = np.random.default_rng(0)
    volume = torch.from_numpy(rng.normal(size=(16, 16, 16)).astype(np.float32))
    k = torch.fft.fftfreq(16, d=1 / 16, dtype=torch.float64)
    shell = torch.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2).round()
    before = torch.fft.fftn(volume.double())
    for fsc, kept in ((torch.ones(9), 9), (torch.tensor([1.0] * 3 + [0.0] * 6), 3), (torch.zeros(9), 0)):
        after = torch.fft.fftn(fsc_weighted(volume, fsc).double())
        inside = shell < kept
        torch.testing.assert_close(after[inside], before[inside], atol=1e-4, rtol=1e-5)
        assert after[~inside].abs().max() < 1e-4  # shells beyond, and the cube's corners, removed
    half = torch.fft.fftn(fsc_weighted(volume, torch.full((9,), 1 / 3)).double())
    torch.testing.assert_close(half[shell < 9], before[shell < 9] * 0.5**0.5, atol=1e-4, rtol=1e-5)


def test_refinement_refuses_mismatched_inputs(particles):
    images, truth, _ = particles
    with pytest.raises(ValueError, match="160 images but 3 rotations"):
        refine(images, truth[:3])
    with pytest.raises(ValueError, match="min_step"):
        refine(images, truth, step=0.01, min_step=0.1)


@pytest.mark.slow
def test_map_in_frame_remakes_a_globally_rotated_map_in_the_references_frame():
    truth = torch.from_numpy(load_map("pseudo:1", box_size=24, voxel_size=10.0).data)
    rotations = quaternion_to_matrix(sample_orientations(300, seed=4)).float()
    images = project(truth, rotations)
    # orientations right up to one global rotation M: the map made from them is V(M^T x)
    turn = axis_angle_matrix(torch.tensor([[0.3, -1.1, 0.5]], dtype=torch.float64))[0].float()
    framed = map_in_frame(images, rotations @ turn, truth, 10.0, method="fourier", n_candidates=300)
    direct = reconstruct(images, rotations, method="fourier", progress=False).volume
    best = resolution(*fourier_shell_correlation(direct, truth, 10.0), 0.5)
    assert framed.alignment.correlation > 0.9
    assert framed.resolution == pytest.approx(best, rel=0.1)  # as good as the true frame's map
    assert framed.resampled_resolution >= framed.resolution - 1e-6  # resampling never helps
    assert framed.volume.shape == truth.shape and len(framed.frequencies) == len(framed.fsc)


@pytest.mark.slow
def test_map_in_frame_with_the_ctfs_corrects_for_them():
    """CTF-affected images: given their CTFs, the map in the reference's frame is as good as the
    CTF-free images' map; without them it is worse (alternate rings of frequencies sign-flipped)."""
    from cryoorient.projection import apply_ctf, ctf_2d

    pixel = 4.0  # CTF zeros below Nyquist (0.125 / Å) at 1-2.5 µm
    truth = torch.from_numpy(load_map("pseudo:1", box_size=24, voxel_size=pixel).data)
    rotations = quaternion_to_matrix(sample_orientations(300, seed=4)).float()
    clean = project(truth, rotations)
    defocus = torch.linspace(10000.0, 25000.0, 300, dtype=torch.float64)
    ctf = ctf_2d(24, pixel, defocus_u=defocus, device="cpu")
    images = apply_ctf(clean, ctf)
    turn = axis_angle_matrix(torch.tensor([[0.3, -1.1, 0.5]], dtype=torch.float64))[0].float()
    cases = (("clean", clean, None), ("corrected", images, ctf), ("ignored", images, None))
    found = {
        name: map_in_frame(stack, rotations @ turn, truth, pixel, n_candidates=300, ctf=given).resolution
        for name, stack, given in cases
    }  # measured: clean and corrected 8.0 Å (Nyquist), ignored 20.8 Å
    assert found["corrected"] == pytest.approx(found["clean"], rel=0.1), found
    assert found["ignored"] > 1.2 * found["corrected"], found


@pytest.mark.slow
def test_refine_from_perturbed_quaternions_gets_closer_and_the_map_scores_against_the_truth():
    volume = torch.from_numpy(load_map("pseudo:1", box_size=24, voxel_size=10.0).data)
    q = sample_orientations(60, seed=3)
    images = project(volume, quaternion_to_matrix(q))
    noise = sample_orientations(60, seed=5)
    # each orientation turned by about 5° about a random axis
    axis = noise[:, 1:] / noise[:, 1:].norm(dim=1, keepdim=True)
    half = math.radians(5) / 2
    cosine = torch.full((60, 1), math.cos(half), dtype=torch.float64)
    small_turn = torch.cat([cosine, axis * math.sin(half)], 1)
    start = quaternion_multiply(small_turn, q)
    refinement = refine(images, quaternion_to_matrix(start), pixel_size=10.0, max_rounds=2, method="fourier")
    refined = matrix_to_quaternion(refinement.rotations)
    assert score_orientations(q, refined).e_reg < score_orientations(q, start).e_reg
    assert len(refinement.rounds) == 2
    framed = map_in_frame(images, quaternion_to_matrix(refined).float(), volume, 10.0, method="fourier")
    resolution = framed.resolution
    assert 20.0 <= resolution < 80.0  # Nyquist is 20 Å; a refined noiseless map gets near it


@pytest.mark.slow
def test_refining_ctf_images_with_their_ctfs_gets_closer_than_without(particles):
    """CTF-affected particles refined with their CTFs (half maps and matching both CTF-aware) end
    closer to the truth than refined as if CTF-free, from the same 3° perturbed start."""
    from cryoorient.projection import apply_ctf, ctf_2d

    _, truth, volume = particles
    defocus = torch.linspace(10000.0, 25000.0, len(truth), dtype=torch.float64)
    ctf = ctf_2d(32, 4.0, defocus_u=defocus, device="cpu")  # 4 Å: zeros below Nyquist
    images = add_noise(normalize_images(apply_ctf(project(volume, truth), ctf)), variance=0.1, seed=1)
    start = perturbed(truth, 3.0, seed=2)
    q = matrix_to_quaternion(truth)
    error = {
        name: score_orientations(q, matrix_to_quaternion(refine(images, start, pixel_size=4.0, max_rounds=3,
                                                                ctf=given).rotations)).e_reg
        for name, given in (("with", ctf), ("without", None))
    }
    before = score_orientations(q, matrix_to_quaternion(start)).e_reg
    # measured: 0.052 rad before, 0.015 with the CTFs, 0.034 without
    assert error["with"] < before and error["with"] < error["without"], (before, error)
    with pytest.raises(ValueError, match=r"ctf must have the images' shape"):
        refine(images, start, ctf=ctf[:5])
