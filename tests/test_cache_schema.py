"""Cache keys hash an explicit schema, not the package version (issue 30): a release keeps them."""

import json

import pytest

import cryoorient
from cryoorient import dataset, model_cache
from cryoorient.dataset import SimulationParameters, _dataset_key, load_dataset
from cryoorient.density import load_map
from cryoorient.paths import CACHE_SCHEMA
from cryoorient.training import TrainingConfig

CONFIG = TrainingConfig(
    recipe="inbatch", architecture="compact", n_features=128, distance="orientation", image_size=32,
    epochs=40, batch_size=64, learning_rate=1e-3,
)


def test_keys_are_those_of_the_cached_and_shipped_files():
    """The values every key had while the keys hashed the version string 0.1.0 (computed at 05c7abb)."""
    assert CACHE_SCHEMA == "0.1.0"
    assert model_cache.config_key(CONFIG, "0123456789abcdef") == "8f4eaecc23424236"
    params = SimulationParameters(map="pseudo", n_projections=100, box_size=32)
    assert _dataset_key(params, load_map("pseudo", box_size=32)) == "92636ad0d459179d"


def test_a_release_keeps_the_keys_and_a_schema_change_does_not(monkeypatch):
    params = SimulationParameters(map="pseudo", n_projections=100, box_size=32)
    density = load_map("pseudo", box_size=32)
    before = model_cache.config_key(CONFIG, "k"), _dataset_key(params, density)
    monkeypatch.setattr(cryoorient, "__version__", "9.9.9")
    monkeypatch.setattr(dataset, "__version__", "9.9.9")
    assert (model_cache.config_key(CONFIG, "k"), _dataset_key(params, density)) == before
    monkeypatch.setattr(model_cache, "CACHE_SCHEMA", "2")
    monkeypatch.setattr(dataset, "CACHE_SCHEMA", "2")
    after = model_cache.config_key(CONFIG, "k"), _dataset_key(params, density)
    assert after[0] != before[0] and after[1] != before[1]


@pytest.mark.parametrize("old_style", [False, True])
def test_cached_dataset_found_after_a_release(tmp_path, monkeypatch, old_style):
    """A dataset cached by another version loads; one cached under another schema is rebuilt."""
    params = SimulationParameters(map="pseudo", n_projections=20, box_size=16)
    first = load_dataset(params, cache_dir=tmp_path, progress=False)
    record_path = first.path / "dataset.json"
    if old_style:  # written before the schema had its own field: the version string stood for it
        record = json.loads(record_path.read_text())
        record.pop("cache_schema")
        record["cryoorient"] = CACHE_SCHEMA
        record_path.write_text(json.dumps(record))
    monkeypatch.setattr(dataset, "__version__", "9.9.9")
    again = load_dataset(params, cache_dir=tmp_path, progress=False)
    assert again.path == first.path and json.loads(record_path.read_text()) == again.record
    record = json.loads(record_path.read_text())
    record["cache_schema" if not old_style else "cryoorient"] = "0.0.1"
    record_path.write_text(json.dumps(record))
    with pytest.warns(dataset.CacheWarning, match="recorded cache_schema '0.0.1'"):
        load_dataset(params, cache_dir=tmp_path, progress=False)
