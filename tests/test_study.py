"""The study specification: one home for the experiment's settings (issue 30)."""

import dataclasses
import json

import pytest

from cryoorient.model_cache import CURRICULUM_EPOCHS, CURRICULUM_LEARNING_RATE, DEFAULT_MODEL, NOISE_LEVELS
from cryoorient.snr import matched_noise_variance
from cryoorient.study import (
    CHANCE_SEED_OFFSET,
    Study,
    StudyError,
    available_studies,
    load_study,
    notebook_parameters,
)
from cryoorient.training import TrainingConfig


def test_shipped_profiles_load():
    assert {"default", "long", "paper"} <= set(available_studies())
    for name in available_studies():
        study = load_study(name)
        assert study.profile == name
        TrainingConfig(**study.model)  # every profile's model is a valid configuration
        TrainingConfig(**study.paper_method)  # and so is its paper's method


def test_default_study_is_the_one_home_of_the_model():
    """DEFAULT_MODEL, TrainingConfig's defaults and the curriculum constants all come from default.yml."""
    study = load_study("default")
    assert dict(study.model) == DEFAULT_MODEL
    assert TrainingConfig() == TrainingConfig(**study.model)
    assert (study.noise_levels, study.curriculum_epochs, study.curriculum_learning_rate) == (
        NOISE_LEVELS, CURRICULUM_EPOCHS, CURRICULUM_LEARNING_RATE,
    )


def test_default_values_are_the_experiment_the_results_were_made_with():
    study = load_study("default")
    assert (study.map_name, study.box_size, study.voxel_size, study.n_projections, study.seed) == (
        "5j0n", 64, None, 5000, 0,
    )
    assert study.matched_noise_variance == pytest.approx(16 * (64 / 116) ** 2)  # ≈ 4.87
    assert study.noise_study_levels == (1.0, 4.0, study.matched_noise_variance, 16.0, 32.0)
    assert study.chance_seed == study.seed + CHANCE_SEED_OFFSET == 7


def test_extends_changes_only_what_it_names():
    default, long, paper = (load_study(n) for n in ("default", "long", "paper"))
    assert long.box_size == 96 and long.curriculum_epochs == 30
    assert dict(long.model) == DEFAULT_MODEL | {"image_size": 48, "epochs": 60}
    assert long.n_projections == default.n_projections and long.map_name == default.map_name
    assert long.matched_noise_variance == pytest.approx(matched_noise_variance(16.0, 96))
    assert paper.matched_noise_variance == pytest.approx(16.0)  # the paper's own box: matched is 16
    assert paper.noise_study_levels == (1.0, 4.0, 16.0, 32.0)
    assert paper.model["distance"] == "geodesic" and paper.model["image_size"] is None
    assert notebook_parameters(long, "03_distance_accuracy") == {"profile": "long", "grid_epochs": 20}
    # a profile changes single settings of the paper's method too (the paper trains 150 epochs)
    assert dict(paper.paper_method) == dict(default.paper_method) | {"epochs": 150, "patience": None}
    assert dict(long.paper_method) == dict(default.paper_method)
    assert notebook_parameters(long, "04_orientation_recovery") == {"profile": "long"}


def test_study_is_frozen_and_plain_when_recorded():
    study = load_study("long")
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.box_size = 32
    with pytest.raises(TypeError):
        study.model["epochs"] = 1
    record = study.to_dict()
    assert json.loads(json.dumps(record)) == record
    assert Study(**record) == study  # a recorded study rebuilds the same object


def test_simulation_arguments():
    study = load_study("default")
    assert study.simulation(noise_variance=4.0) == {
        "map": "5j0n", "n_projections": 5000, "box_size": 64, "voxel_size": None, "seed": 0,
        "noise_variance": 4.0,
    }
    assert study.simulation(n_projections=10)["n_projections"] == 10
    second = study.second_protein_simulation(noise_variance=1.0)
    expected = study.simulation(map="5a1a", map_resolution=3.0, orientations="quarter", noise_variance=1.0)
    assert second == expected


def _write(folder, name, text):
    (folder / f"{name}.yml").write_text(text)


def test_user_profiles_from_a_folder(tmp_path):
    _write(tmp_path, "base", (
        "study:\n  map_name: pseudo\n  box_size: 32\n  voxel_size: null\n  n_projections: 100\n  seed: 3\n"
        "  model: {epochs: 2, distance: cosine}\n  noise_levels: [2]\n  curriculum_epochs: 1\n"
        "  curriculum_learning_rate: 0.001\n  paper_noise_variance: 16\n  paper_box_size: 116\n"
    ))
    _write(tmp_path, "mine", "extends: base\nstudy:\n  model: {epochs: 5}\nnotebooks:\n  02_x: {n: 1}\n")
    mine = load_study("mine", tmp_path)
    assert dict(mine.model) == {"epochs": 5, "distance": "cosine"}
    assert mine.box_size == 32 and mine.seed == 3 and mine.noise_levels == (2.0,)
    assert dict(mine.notebooks["02_x"]) == {"n": 1}
    assert available_studies(tmp_path) == ["base", "mine"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("extends: default\nstudy:\n  boxsize: 3\n", "unknown study field.*boxsize"),
        ("extends: default\nsettings: {}\n", "unknown section.*settings"),
        ("extends: default\nstudy:\n  box_size: 0\n", "box_size must be a positive integer"),
        ("extends: default\nstudy:\n  box_size: true\n", "box_size must be a positive integer"),
        ("extends: default\nstudy:\n  noise_levels: [0, 4]\n", "noise_levels must be σ² > 0"),
        ("extends: default\nstudy:\n  voxel_size: -1\n", "voxel_size must be > 0"),
        ("extends: default\nstudy:\n  model: 3\n", "study.model` must map"),
        ("extends: default\nnotebooks:\n  02_x: 3\n", "each a mapping"),
        ("study:\n  box_size: 64\n", "leaves map_name, voxel_size"),
        ("extends: bad\n", "cycle: bad -> bad"),
        ("study: [1, 2\n", "not valid YAML"),
        ("- 1\n", "expected a mapping"),
    ],
)
def test_malformed_profiles_name_the_file_and_the_entry(tmp_path, text, message):
    _write(tmp_path, "default", _DEFAULT_TEXT)  # a user folder whose profiles extend its own default
    _write(tmp_path, "bad", text)
    with pytest.raises(StudyError, match=message) as error:
        load_study("bad", tmp_path)
    assert "bad" in str(error.value)


def test_unknown_profile():
    with pytest.raises(StudyError, match="unknown profile 'gpu'.*known profiles: default, long, paper"):
        load_study("gpu")
    with pytest.raises(StudyError, match="named by a word"):
        load_study("../default")


_DEFAULT_TEXT = (
    "study:\n  map_name: 5j0n\n  box_size: 64\n  voxel_size: null\n  n_projections: 5000\n  seed: 0\n"
    "  model: {epochs: 40}\n  noise_levels: [1, 4, 16, 32]\n  curriculum_epochs: 20\n"
    "  curriculum_learning_rate: 0.0003\n  paper_noise_variance: 16\n  paper_box_size: 116\n"
)
