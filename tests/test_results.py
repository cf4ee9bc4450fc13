import json

import numpy as np
import pytest
import torch

from cryoorient import results
from cryoorient.results import ResultsError, available_profiles, load_results, save_results


@pytest.fixture(autouse=True)
def paper(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path))
    return tmp_path


def test_round_trip_keeps_values_arrays_and_provenance(paper):
    arrays = {"noise0/errors": np.arange(5.0), "slice/recovered, σ² = 16": torch.ones(3, 2)}
    values = {"e_or": torch.tensor(0.25), "sweep": [{"variance": np.float64(0.1)}], "map": "5j0n"}
    path = save_results("04_orientation_recovery", values, profile="default", arrays=arrays, map="5j0n")
    assert path == paper / "results" / "default" / "04_orientation_recovery.json"
    r = load_results("04_orientation_recovery", "default")
    assert r.values == {"e_or": 0.25, "sweep": [{"variance": 0.1}], "map": "5j0n"}
    assert set(r.arrays) == set(arrays)
    np.testing.assert_array_equal(r.arrays["noise0/errors"], np.arange(5.0))
    assert r.arrays["slice/recovered, σ² = 16"].shape == (3, 2)
    assert r.provenance["map"] == "5j0n" and r.provenance["commit"]
    assert available_profiles() == ["default"]


def test_non_finite_values_are_saved_as_none():
    save_results("02_x", {"rmse_above_2": float("nan"), "big": float("inf")}, profile="p")
    assert load_results("02_x", "p").values == {"rmse_above_2": None, "big": None}


def test_missing_results_name_the_notebook_to_run():
    with pytest.raises(ResultsError, match=r"notebooks/07_reconstruction\.py.*make figures PROFILE=paper"):
        load_results("07_reconstruction", "paper")


def test_arrays_that_do_not_match_their_record_are_refused(paper):
    save_results("03_x", {"a": 1}, profile="default", arrays={"x": np.zeros(3)})
    save_results("03_y", {"a": 1}, profile="default", arrays={"x": np.ones(3)})
    folder = paper / "results" / "default"
    (folder / "03_x.npz").write_bytes((folder / "03_y.npz").read_bytes())  # stale arrays
    with pytest.raises(ResultsError, match="does not match"):
        load_results("03_x", "default")


def test_corrupt_json_is_refused(paper):
    save_results("01_x", {"a": 1}, profile="default")
    (paper / "results" / "default" / "01_x.json").write_text("{not json")
    with pytest.raises(ResultsError, match="cannot be read"):
        load_results("01_x", "default")


def test_unsaveable_values_and_names_are_errors():
    with pytest.raises(TypeError, match=r"values\.model"):
        save_results("01_x", {"model": object()}, profile="default")
    with pytest.raises(ValueError, match="plain name"):
        save_results("../01_x", {}, profile="default")
    with pytest.raises(ValueError, match="plain name"):
        save_results("01_x", {}, profile="a/b")


def test_the_json_is_plain_and_sorted(paper):
    save_results("01_x", {"b": 1, "a": [1, 2]}, profile="default")
    record = json.loads((paper / "results" / "default" / "01_x.json").read_text())
    assert record["values"] == {"a": [1, 2], "b": 1} and record["arrays"] == []


def test_a_missing_result_says_how_long_its_notebook_takes(tmp_path, monkeypatch):
    """The Colab-like check's time for the notebook, when the checkout has it (default profile)."""
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path / "paper"))
    root = tmp_path / "checkout"
    (root / "benchmarks" / "results").mkdir(parents=True)
    timed = {"notebooks": [{"notebook": "07_reconstruction", "wall_seconds": 412.0}]}
    (root / "benchmarks" / "results" / "colab_like.json").write_text(json.dumps(timed))
    monkeypatch.setattr(results, "repo_root", lambda: root)
    with pytest.raises(ResultsError, match=r"07_reconstruction\.py at profile 'default' first \(about 7 min"):
        load_results("07_reconstruction", "default")
    with pytest.raises(ResultsError, match=r"at profile 'paper' first \(`make figures"):
        load_results("07_reconstruction", "paper")  # measured at the default profile only
    monkeypatch.setattr(results, "repo_root", lambda: None)  # an installed copy: no timing
    with pytest.raises(ResultsError, match=r"at profile 'default' first \(`make figures"):
        load_results("07_reconstruction", "default")
