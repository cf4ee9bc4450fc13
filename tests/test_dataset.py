import json
import math

import numpy as np
import pytest

from cryoorient import dataset as ds
from cryoorient.dataset import (
    CacheWarning,
    SimulationParameters,
    load_dataset,
    simulate_particles,
    split_indices,
)
from cryoorient.density import load_map
from cryoorient.geometry import quaternion_distance
from cryoorient.sampling import sample_orientations

SMALL = {"map": "pseudo:1", "n_projections": 24, "box_size": 32, "voxel_size": 8.0}


@pytest.fixture(scope="module")
def density():
    return load_map("pseudo:1", box_size=32, voxel_size=8.0)


# --- splits ------------------------------------------------------------------------------------------


def test_paper_splits():
    splits = split_indices(5000, seed=3)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2500, "validation": 850, "test": 1650}
    joined = np.concatenate(list(splits.values()))
    assert np.array_equal(np.sort(joined), np.arange(5000))  # disjoint and complete
    assert all(
        np.array_equal(a, b)
        for a, b in zip(splits.values(), split_indices(5000, seed=3).values(), strict=True)
    )
    assert not np.array_equal(splits["test"], split_indices(5000, seed=4)["test"])
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, {"a": 0.5, "b": 0.6})


# --- simulation and cache ----------------------------------------------------------------------------


def test_parameters_validate():
    with pytest.raises(ValueError, match="noise_variance must be >= 0; got -1"):
        SimulationParameters(noise_variance=-1)
    with pytest.raises(ValueError, match="larger than half the box"):
        SimulationParameters(box_size=32, shift_limit=17)
    with pytest.raises(ValueError, match="unknown orientations 'sphere'"):
        SimulationParameters(orientations="sphere")
    with pytest.raises(ValueError, match="positive integer"):
        SimulationParameters(n_projections=0)


def test_simulate_particles_normalised_noise_and_seeded(density):
    q = sample_orientations(40, seed=0)
    clean = simulate_particles(density, q, seed=1, progress=False)
    assert clean.images.shape == (40, 32, 32) and clean.images.dtype == np.float32
    assert abs(clean.images.mean()) < 1e-5 and abs(clean.images.var() - 1) < 1e-4
    noisy = simulate_particles(density, q, noise_variance=4.0, seed=1, progress=False)
    assert abs((noisy.images - clean.images).var() - 4.0) < 0.1
    again = simulate_particles(density, q, noise_variance=4.0, seed=1, progress=False)
    assert np.array_equal(noisy.images, again.images)
    shifted = simulate_particles(density, q, shift_limit=3.0, ctf=True, seed=1, progress=False)
    assert np.abs(shifted.shifts).max() <= 3.0 and np.abs(shifted.shifts).max() > 0
    assert shifted.ctf is not None and 1e4 <= shifted.ctf["defocus_u"].min()
    with pytest.raises(ValueError, match="larger than half the box"):
        simulate_particles(density, q, shift_limit=20.0, progress=False)


def test_load_dataset_caches_and_resumes(tmp_path, monkeypatch):
    params = SimulationParameters(**SMALL)
    first = load_dataset(params, cache_dir=tmp_path, progress=False)
    assert first.particles.images.shape == (24, 32, 32)
    assert {k: len(v) for k, v in first.splits.items()} == {"train": 12, "validation": 4, "test": 8}
    assert first.map_name == "pseudo:1"
    assert quaternion_distance(first.quaternions, first.particles.quaternions).max() < 1e-6

    def not_again(*args, **kwargs):
        raise AssertionError("the cached dataset should have been used")

    monkeypatch.setattr(ds, "simulate_dataset", not_again)
    second = load_dataset(params, cache_dir=tmp_path, progress=False)
    assert np.array_equal(second.particles.images, first.particles.images)
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temporary folders left


def test_concurrent_writer_of_the_same_dataset_is_used(tmp_path, monkeypatch):
    params = SimulationParameters(**SMALL)
    simulate = ds.simulate_dataset
    winner = {}

    def race(*args, **kwargs):  # another process caches the same dataset while this one simulates
        monkeypatch.setattr(ds, "simulate_dataset", simulate)
        winner["dataset"] = load_dataset(params, cache_dir=tmp_path, progress=False)
        return simulate(*args, **kwargs)

    monkeypatch.setattr(ds, "simulate_dataset", race)
    loser = load_dataset(params, cache_dir=tmp_path, progress=False)
    assert loser.path == winner["dataset"].path
    assert np.array_equal(loser.particles.images, winner["dataset"].particles.images)
    assert [p.name for p in tmp_path.iterdir()] == [loser.path.name]


def test_corrupt_cache_is_rebuilt(tmp_path):
    params = SimulationParameters(**SMALL)
    first = load_dataset(params, cache_dir=tmp_path, progress=False)
    with open(first.path / "particles.mrcs", "r+b") as f:
        f.seek(2000)
        f.write(b"\xff" * 16)
    with pytest.warns(CacheWarning, match="checksum mismatch"):
        rebuilt = load_dataset(params, cache_dir=tmp_path, progress=False)
    assert np.array_equal(rebuilt.particles.images, first.particles.images)  # same parameters, same data
    record = json.loads((rebuilt.path / "dataset.json").read_text())
    record["parameters"]["seed"] = 99
    (rebuilt.path / "dataset.json").write_text(json.dumps(record))
    with pytest.warns(CacheWarning, match="does not match"):
        load_dataset(params, cache_dir=tmp_path, progress=False)


def test_parameters_change_the_key(tmp_path):
    a = load_dataset(SimulationParameters(**SMALL), cache_dir=tmp_path, progress=False)
    b = load_dataset(SimulationParameters(**SMALL, noise_variance=1.0), cache_dir=tmp_path, progress=False)
    assert a.path != b.path
    assert not np.array_equal(a.particles.images, b.particles.images)


def test_a_low_passed_map_gives_the_same_orientations_blurred_images_and_its_own_key(tmp_path):
    plain = load_dataset(SimulationParameters(**SMALL), cache_dir=tmp_path, progress=False)
    params = SimulationParameters(**SMALL, map_low_pass=40.0)
    blurred = load_dataset(params, cache_dir=tmp_path, progress=False)
    assert blurred.path != plain.path
    assert np.array_equal(blurred.quaternions, plain.quaternions)  # same seed: same orientations
    assert {k: list(v) for k, v in blurred.splits.items()} == {k: list(v) for k, v in plain.splits.items()}

    def fine_power(images: np.ndarray) -> float:  # share of the power beyond 1/32 Å⁻¹ (shell 8 of 32)
        f = np.abs(np.fft.fft2(images - images.mean(axis=(1, 2), keepdims=True))) ** 2
        k = np.fft.fftfreq(32, d=1 / 32)
        fine = np.hypot(k[:, None], k[None, :]) > 8
        return float(f[:, fine].sum() / f.sum())

    assert fine_power(blurred.particles.images) < 0.01 * fine_power(plain.particles.images)
    assert "map_low_pass" not in plain.record["parameters"]  # the default: older datasets keep their keys
    assert blurred.record["parameters"]["map_low_pass"] == 40.0
    with pytest.raises(ValueError, match=r"map_low_pass must be a positive number of Å; got -1"):
        SimulationParameters(**SMALL, map_low_pass=-1.0)


def test_interrupted_write_leaves_no_dataset(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ds.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(SimulationParameters(**SMALL), cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_noise_variance_matches_paper_snr():
    from cryoorient.projection import noise_variance

    assert noise_variance(-12.0412) == pytest.approx(16.0, rel=1e-4)
    assert math.isclose(10 * math.log10(1 / 16), -12.0412, abs_tol=1e-4)


def test_dataset_key_follows_the_maps_origin_not_its_last_bits(tmp_path):
    import mrcfile

    from cryoorient.density import DensityMap

    params = SimulationParameters(map="pseudo:2", n_projections=10, box_size=16)
    density = load_map("pseudo:2", box_size=16)
    assert density.origin.startswith("generated:pseudo:2;") and "16 px" in density.origin
    # another FFT library rounds the resampled voxels differently: the same key
    nudged = DensityMap(np.nextafter(density.data, np.float32(2)), density.voxel_size, density.name,
                        density.source, density.origin)
    assert ds._dataset_key(params, nudged) == ds._dataset_key(params, density)
    # a map without a known origin falls back to its voxels, so changed voxels change the key
    bare = DensityMap(density.data, density.voxel_size, density.name, density.source)
    bare_nudged = DensityMap(nudged.data, density.voxel_size, density.name, density.source)
    assert ds._dataset_key(params, bare) != ds._dataset_key(params, bare_nudged)
    # an MRC file is known by its SHA-256: rewriting it with other values changes the key
    path = tmp_path / "m.mrc"
    for values in (density.data, 2 * density.data):
        with mrcfile.new(path, overwrite=True) as f:
            f.set_data(values)
            f.voxel_size = density.voxel_size
        loaded = load_map(path)
        key = ds._dataset_key(SimulationParameters(map=str(path), n_projections=10), loaded)
        assert loaded.origin.startswith("sha256:") and str(tmp_path) not in loaded.origin
        if values is density.data:
            first = key
    assert key != first


def test_study_dataset_is_the_studys_simulation_with_changes(tmp_path, monkeypatch):
    import dataclasses

    from cryoorient.study import default_study

    monkeypatch.setenv("CRYOORIENT_DATA", str(tmp_path))
    small = {"map_name": "pseudo:1", "n_projections": 24, "box_size": 32, "voxel_size": 8.0}
    study = dataclasses.replace(default_study(), **small)
    noisy = ds.study_dataset(study, progress=False, noise_variance=2.0)
    assert noisy.path.parent == tmp_path / "datasets"
    expected = SimulationParameters(**SMALL, noise_variance=2.0, seed=study.seed).to_dict()
    assert noisy.record["parameters"] == json.loads(json.dumps(expected))  # as the record stores it
    clean = ds.study_dataset(study, progress=False)
    np.testing.assert_array_equal(clean.quaternions, noisy.quaternions)  # same orientations at every σ²
    assert {k: list(v) for k, v in clean.splits.items()} == {k: list(v) for k, v in noisy.splits.items()}
    assert ds.study_dataset(study, progress=False, n_projections=30).particles.images.shape == (30, 32, 32)
