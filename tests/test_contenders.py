import math

import pytest
import torch

from cryoorient.contenders import Score, map_score, match_to_map, refine_from, score
from cryoorient.density import load_map
from cryoorient.geometry import matrix_to_quaternion, quaternion_multiply, quaternion_to_matrix
from cryoorient.projection import project
from cryoorient.sampling import sample_orientations


@pytest.fixture(scope="module")
def small():
    """60 noiseless projections of a 24-px pseudo-protein, their quaternions and the map."""
    volume = torch.from_numpy(load_map("pseudo:1", box_size=24, voxel_size=10.0).data)
    q = sample_orientations(60, seed=3)
    return project(volume, quaternion_to_matrix(q)), q, volume


def test_score_is_zero_for_the_truth_and_blind_to_a_global_rotation():
    q = sample_orientations(100, seed=0)
    exact = score(q, q)
    assert isinstance(exact, Score)
    assert exact.e_or < 1e-6 and exact.e_reg < 1e-6 and exact.within_5 == exact.within_10 == 1.0
    turned = quaternion_multiply(q, sample_orientations(1, seed=1).expand(100, 4))  # q ↦ q b: the map turned
    again = score(q, turned)
    assert again.e_reg < 1e-6 and again.within_5 == 1.0
    chance = score(q, sample_orientations(100, seed=2))
    assert chance.e_reg > 1.0 and chance.e_or <= chance.e_reg + 1e-9  # O(4) removes more than registration
    assert chance.within_10 < 0.1
    assert set(chance.to_dict()) == {"e_or", "e_or_median", "e_reg", "e_reg_median", "within_5", "within_10"}


def test_match_to_map_finds_noiseless_orientations_in_the_maps_frame(small):
    images, q, volume = small
    rotations, seconds = match_to_map(images[:12], volume, directions=300, in_plane=24)
    found = score(q[:12], matrix_to_quaternion(rotations))
    assert found.e_reg < math.radians(3) and seconds > 0  # the grid alone: about 13° apart


@pytest.mark.slow
def test_refine_from_a_perturbed_start_gets_closer_and_the_map_scores_against_the_truth(small):
    images, q, volume = small
    noise = sample_orientations(60, seed=5)
    # each orientation turned by about 5° about a random axis
    axis = noise[:, 1:] / noise[:, 1:].norm(dim=1, keepdim=True)
    half = math.radians(5) / 2
    cosine = torch.full((60, 1), math.cos(half), dtype=torch.float64)
    small_turn = torch.cat([cosine, axis * math.sin(half)], 1)
    start = quaternion_multiply(small_turn, q)
    refinement, refined, seconds = refine_from(images, start, 10.0, max_rounds=2, method="fourier", seed=0)
    assert score(q, refined).e_reg < score(q, start).e_reg and len(refinement.rounds) == 2 and seconds > 0
    resolution = map_score(images, quaternion_to_matrix(refined).float(), volume, 10.0, method="fourier")
    assert 20.0 <= resolution < 80.0  # Nyquist is 20 Å; a refined noiseless map gets near it
