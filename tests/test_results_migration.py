"""Saved results of the sequence before the course split are rewritten as today's notebooks."""

import numpy as np
import pytest

from cryoorient._results_migration import split_results
from cryoorient.results import ResultsError, load_results, write_record


def old_layout(profile: str) -> None:
    """Notebook 04 and 05 results as the pre-split notebooks saved them, stamped by an old run."""
    learned = {"0": {"e_or": 0.07, "model": "key-0"}, "4": {"e_or": 0.15, "model": "key-4"}}
    values = {
        "map": "5j0n", "p": 3, "exact": {"e_or": 1e-15}, "learned": learned, "chance": {"e_or": 1.9},
        "paper_way": {"clean": {"e_or": 0.08}}, "weighted_recovery": {"4": {"unweighted": 0.15}},
        "nonuniform": {"half": {"e_or": 0.2, "e_or_clean": 0.1, "median": 0.1, "median_clean": 0.05,
                                "fsc_true": 8.0, "fsc_recovered": 9.5}},
        "gauge": [{"key": "learned_clean", "e_or_reg": 0.071}],
        "common_lines": {"levels": {"0": {"learned": {"e_reg": 0.07}}}, "p": 3},
    }
    arrays = {"noise0/aligned": np.eye(3, 4), "noise0/gauge_fixed": np.ones((3, 4)),
              "noise4/gauge_fixed": np.zeros((3, 4))}
    write_record("04_orientation_recovery", profile, values, arrays, commit="old04", version="0.1.0",
                 provenance={"map": "5j0n"})
    write_record("05_reconstruction", profile, {"map": "5j0n", "resolution_05": {"true": 7.3}},
                 {"frequency": np.arange(3.0)}, commit="old05", version="0.1.0", provenance={})


def test_old_results_are_split_into_todays_notebooks_with_their_stamps(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path))
    old_layout("unit")
    written = split_results("unit")
    assert [p.stem for p in written] == ["05_noise_study", "06_gauge_fixing", "07_reconstruction",
                                        "08_common_lines", "04_orientation_recovery"]
    recovery = load_results("04_orientation_recovery", "unit")
    assert set(recovery.values) == {"map", "p", "exact", "learned", "chance"}
    assert list(recovery.arrays) == ["noise0/aligned"]
    assert recovery.provenance["commit"] == "old04"
    assert recovery.provenance["migrated_from"] == "04_orientation_recovery"
    noise = load_results("05_noise_study", "unit").values
    assert noise["paper_way"] == {"clean": {"e_or": 0.08}}
    errors = {"e_or": 0.2, "e_or_clean": 0.1, "median": 0.1, "median_clean": 0.05}
    assert noise["nonuniform"] == {"half": errors}
    gauge = load_results("06_gauge_fixing", "unit")
    assert gauge.values["gauge"] == [{"key": "learned_clean", "e_or_reg": 0.071}]
    assert gauge.values["models"] == {"0": "key-0", "4": "key-4"}
    assert np.array_equal(gauge.arrays["noise0/gauge_fixed"], np.ones((3, 4)))
    maps = load_results("07_reconstruction", "unit")
    assert maps.values["resolution_05"] == {"true": 7.3} and maps.provenance["commit"] == "old05"
    assert maps.values["nonuniform"] == {"half": {"fsc_true": 8.0, "fsc_recovered": 9.5}}
    assert np.array_equal(maps.arrays["frequency"], np.arange(3.0))
    assert load_results("08_common_lines", "unit").values["common_lines"]["p"] == 3
    with pytest.raises(ResultsError):
        load_results("05_reconstruction", "unit")  # removed once rewritten
    assert split_results("unit") == []  # already split: nothing to do


def test_nothing_to_split_without_results(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path))
    assert split_results("unit") == []
