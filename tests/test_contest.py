import numpy as np
import pytest
import torch

from cryoorient import contest
from cryoorient.contest import (
    CONTENDERS,
    REFINED_FROM,
    ContestSettings,
    contest_level,
    contest_verdict,
    estimator_level,
)
from cryoorient.density import load_map
from cryoorient.filters import low_pass
from cryoorient.geometry import quaternion_to_matrix
from cryoorient.matching import Matches
from cryoorient.projection import project
from cryoorient.sampling import sample_orientations


def row(e_reg: float, resolution: float = 20.0) -> dict:
    return {"e_reg": e_reg, "resolution": resolution}


def test_every_refined_contender_refines_a_start_that_is_a_contender_or_random():
    assert set(REFINED_FROM) <= set(CONTENDERS)
    assert set(REFINED_FROM.values()) <= set(CONTENDERS) | {"random"}


@pytest.mark.parametrize(("asked", "expected"), [
    ("matched", 4.87039), (4.87, 4.87039), ("4.87", 4.87039), (0, 0.0), ("16", 16.0), (16.004, 16.0),
])
def test_estimator_level_names_the_curriculum_level_within_the_tolerance(asked, expected):
    assert estimator_level(asked, [0.0, 1.0, 4.0, 4.87039, 16.0], 4.87039) == expected


def test_estimator_level_refuses_a_level_without_estimator_and_lists_the_choices():
    with pytest.raises(ValueError, match=r"σ² = 8 has no estimator; choose among \['0', '1', '16'\]"):
        estimator_level(8, [16.0, 0.0, 1.0], 4.87039)


def test_verdict_ranks_each_level_by_mean_registered_error():
    zero = {"truth": row(0.0), "learned": row(0.07), "matching": row(0.004)}
    lines = contest_verdict({"0": zero, "16": {}})
    assert lines[0].startswith("σ² = 0: lowest E_OR,reg first: projection matching (true map) 0.004 rad;")
    assert lines[0].index("matching") < lines[0].index("learned")
    assert "true orientations" not in lines[0]  # the ceiling is not a contender
    assert not any(line.startswith("σ² = 16") for line in lines)  # a level without rows says nothing


@pytest.mark.parametrize(
    ("learned", "expected"),
    [((0.1, 0.2), "lose to projection matching against the true map at every level"),
     ((0.01, 0.02), "beat projection matching against the true map at every level"),
     ((0.01, 0.2), "lose to projection matching at σ² = 16 and win elsewhere")],
)
def test_verdict_says_where_learned_distances_lose_to_matching(learned, expected):
    levels = {"0": {"matching": row(0.05), "learned": row(learned[0])},
              "16": {"matching": row(0.05), "learned": row(learned[1])}}
    assert any(expected in line for line in contest_verdict(levels))


def test_verdict_says_what_the_initial_model_is_worth():
    stuck = {"4": {"learned+refined": row(0.02), "random+refined": row(2.0), "matching": row(0.01)}}
    lines = contest_verdict(stuck)
    assert any("the initial model matters" in line for line in lines)
    assert any("learned start ends at σ² = 4: 0.020 against 0.010 rad" in line for line in lines)
    fine = {"4": {"learned+refined": row(0.02), "random+refined": row(0.03)}}
    assert any("a random start does as well at σ² = 4" in line for line in contest_verdict(fine))


@pytest.fixture(scope="module")
def tiny():
    """80 noiseless projections of a 24-px pseudo-protein at 10 Å per pixel and their orientations."""
    volume = torch.from_numpy(load_map("pseudo:1", box_size=24, voxel_size=10.0).data)
    q = sample_orientations(80, seed=3)
    return project(volume, quaternion_to_matrix(q)), q, volume


def test_contest_level_measures_each_contender_asked_for_and_reports_each_row(tiny):
    images, q, volume = tiny
    seen = []
    rows = contest_level(
        images, q, np.arange(60), np.arange(80), volume, 10.0, model=None, image_size=None,
        contenders=["random+refined", "matching", "truth"], settings=ContestSettings(rounds=1),
        on_row=lambda name, r: seen.append(name),
    )
    assert list(rows) == ["truth", "matching", "random+refined"] == seen  # in CONTENDERS order
    for r in rows.values():
        assert {"e_or", "e_reg", "within_5", "within_10", "seconds", "resolution", "n"} <= set(r)
        assert r["n"] == 60 and 20.0 <= r["resolution"]  # Nyquist is 20 Å
    assert rows["truth"]["e_reg"] < 1e-6 and rows["truth"]["seconds"] == 0.0
    assert rows["matching"]["e_reg"] < 0.1  # noiseless images against their own map
    assert rows["matching"]["resolution"] >= rows["truth"]["resolution"] - 1e-6  # truth is the ceiling
    assert rows["random+refined"]["rounds"] == 1 and "half_map_resolution" in rows["random+refined"]
    again = contest_level(images, q, np.arange(60), np.arange(80), volume, 10.0, model=None, image_size=None,
                          contenders=["matching"], done=["matching"])
    assert again == {}


def test_matching_searches_the_reference_and_is_scored_against_the_true_map(tiny, monkeypatch):
    images, q, volume = tiny
    searched = []

    def match_to_map(stack, against, **kwargs):  # records the map searched; finds the truth
        searched.append(against)
        zeros = torch.zeros(20, dtype=torch.float64)
        return Matches(quaternion_to_matrix(q[:20]), zeros, zeros * float("nan")), 0.0

    monkeypatch.setattr(contest, "match_to_map", match_to_map)
    blurred = low_pass(volume, 10.0, 40.0)  # a 40 Å initial model

    def row(reference):
        return contest_level(images, q, np.arange(20), np.arange(80), volume, 10.0, model=None,
                             image_size=None, contenders=["matching"], reference=reference)["matching"]

    plain, initial = row(None), row(blurred)
    assert torch.equal(searched[0], volume) and torch.equal(searched[1], blurred)
    assert initial["e_reg"] == plain["e_reg"] < 1e-6
    assert initial["resolution"] == plain["resolution"]  # the map from the images, against the true map


def test_contest_level_refuses_unknown_contenders_and_learned_rows_without_a_model(tiny):
    images, q, volume = tiny
    with pytest.raises(ValueError, match="unknown contenders"):
        contest_level(images, q, np.arange(10), np.arange(80), volume, 10.0, model=None, image_size=None,
                      contenders=["oracle"])
    with pytest.raises(ValueError, match="need the level's estimator"):
        contest_level(images, q, np.arange(10), np.arange(80), volume, 10.0, model=None, image_size=None,
                      contenders=["learned+refined"])
    with pytest.raises(ValueError, match="at least 4 images"):
        contest_level(images, q, np.arange(3), np.arange(80), volume, 10.0, model=None, image_size=None)
