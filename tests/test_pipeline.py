import math
import types

import numpy as np
import pytest
import torch

from cryoorient import pipeline
from cryoorient.alignment import align_orientations
from cryoorient.geometry import quaternion_distance
from cryoorient.pipeline import (
    _distance_matrix,
    embed_images,
    estimated_distances,
    feature_distance_function,
    learned_recovery,
    recover_from_features,
    recover_from_images,
    recovered_or_saved,
)
from cryoorient.recovery import recover_orientations, recover_orientations_sampled
from cryoorient.relion import read_particles, write_orientations
from cryoorient.results import save_results
from cryoorient.sampling import sample_orientations
from cryoorient.siamese import SiameseDistance
from cryoorient.training import embed


@pytest.fixture(scope="module")
def stack(toy_projections):
    images, q = toy_projections
    return images[:12], q[:12]


def test_estimated_distances_are_a_symmetric_matrix_in_range(stack):
    images, _ = stack
    torch.manual_seed(0)
    d = estimated_distances(SiameseDistance("compact", 8, "orientation"), images, 16)
    assert d.shape == (12, 12) and d.dtype == torch.float64
    assert torch.equal(d, d.T) and d.diagonal().abs().max() == 0
    assert d.min() >= 0 and d.max() <= math.pi


def test_ctf_treated_distances_take_each_particles_own_ctf(toy_projections):
    """learned_recovery indexes the stack's CTFs with its images; the features are those of the
    treated particles (what the model saw in training)."""
    from cryoorient.ctf_correction import treat_images
    from cryoorient.projection import ctf_2d

    images, q = toy_projections
    ctf = ctf_2d(16, 4.3, defocus_u=torch.linspace(10000.0, 25000.0, len(images), dtype=torch.float64),
                 device="cpu")
    torch.manual_seed(0)
    model = SiameseDistance("compact", 8, "orientation", in_channels=2)
    seen = {"treatment": "two_channel", "snr": 1.0}
    idx = np.arange(5, 17)
    run = learned_recovery(model, images, q, idx, 16, ctf=ctf, treatment=seen)
    features = model.eval().features(treat_images(images[idx].float(), ctf[idx], "two_channel"))
    torch.testing.assert_close(run.distances, _distance_matrix(model, features), atol=1e-6, rtol=0)
    direct = estimated_distances(model, images[idx], 16, ctf=ctf[idx], treatment=seen)
    assert torch.equal(run.distances, direct)


def test_learned_recovery_runs_end_to_end_and_refuses_euclidean(stack):
    images, q = stack
    torch.manual_seed(0)
    model = SiameseDistance("compact", 8, "cosine")
    result = learned_recovery(model, images, q, np.arange(2, 12), 16)
    assert result.recovery.quaternions.shape == (10, 4) and result.alignment.errors.shape == (10,)
    assert result.alignment.error == pytest.approx(float(result.alignment.errors.mean()))
    with pytest.raises(ValueError, match="Euclidean"):
        learned_recovery(SiameseDistance("compact", 8, "euclidean"), images, q, np.arange(12), 16)


def test_written_orientations_read_back(stack, tmp_path):
    images, q = stack
    star = write_orientations(tmp_path / "out", images.numpy(), q, pixel_size=4.2)
    back = read_particles(star)
    assert back.pixel_size == pytest.approx(4.2) and np.allclose(back.images, images.numpy())
    assert quaternion_distance(back.quaternions, q).max() < 1e-4  # via Euler angles in degrees


def test_recovered_or_saved_reads_notebooks_04_and_06_only_for_the_same_models(
    toy_projections, tmp_path, monkeypatch
):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path))
    images, q = toy_projections
    dataset = types.SimpleNamespace(particles=types.SimpleNamespace(images=images.numpy()), quaternions=q)
    torch.manual_seed(0)
    model = SiameseDistance("compact", 8, "cosine")
    test = np.arange(8, 48)
    args = ({0.0: model}, {0.0: "key-a"}, lambda level: dataset, test, 16)
    computed = recovered_or_saved(*args, profile="unit", gauge_levels=[0.0], seed=1)[0.0]
    assert computed.origin == "computed" and computed.gauge_fixed.shape == (40, 4)
    assert computed.recovered.dtype == torch.float64 and computed.aligned.shape == (40, 4)
    stamp = {"learned": {"0": {"model": "key-a", "e_or": 0.5}}}
    arrays = {"noise0/recovered": computed.recovered + 0, "noise0/aligned": q[test]}
    save_results("04_orientation_recovery", stamp, profile="unit", arrays=arrays)
    # notebook 04's orientations but no gauge from notebook 06: the level is computed again
    partly = recovered_or_saved(*args, profile="unit", gauge_levels=[0.0])[0.0]
    assert partly.origin == "computed" and partly.gauge_fixed.shape == (40, 4)
    assert recovered_or_saved(*args, profile="unit")[0.0].origin == "saved"  # no gauge wanted
    # notebook 06 fixed the gauge of another estimator's orientations: not used
    gauge = {"noise0/gauge_fixed": q[test]}
    save_results("06_gauge_fixing", {"models": {"0": "key-old"}}, profile="unit", arrays=gauge)
    assert recovered_or_saved(*args, profile="unit", gauge_levels=[0.0])[0.0].origin == "computed"
    save_results("06_gauge_fixing", {"models": {"0": "key-a"}}, profile="unit", arrays=gauge)
    saved = recovered_or_saved(*args, profile="unit", gauge_levels=[0.0])[0.0]
    assert saved.origin == "saved" and saved.e_or == 0.5
    assert torch.equal(saved.aligned, q[test].double()) and torch.equal(saved.gauge_fixed, q[test].double())
    assert recovered_or_saved(*args, profile="unit")[0.0].gauge_fixed is None  # not asked for
    other = recovered_or_saved({0.0: model}, {0.0: "key-b"}, lambda level: dataset, test, 16, profile="unit")
    assert other[0.0].origin == "computed"  # another estimator: notebook 04's orientations do not apply


# --- distances at scale: blocked pairwise, sampled pairs ------------------------------------------


@pytest.fixture
def fixed_threads():
    """The same intra-op threads for the two computations compared (CPU kernels finish each thread's
    range of an element-wise op with scalar code, so today's unblocked matrix itself depends on it)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("distance", ["geodesic", "cosine", "orientation", "euclidean"])
@pytest.mark.parametrize("threads", [1, 2])
def test_blocked_pairwise_is_bit_identical_to_the_unblocked(distance, threads, fixed_threads):
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    # 203² pairs: more than one grain (32,768 elements) of torch's CPU parallelism, and an odd tail
    f = torch.randn(203, 16, generator=generator) * torch.rand(203, 1, generator=generator) * 3
    f[5], f[7], f[9] = f[3], -f[2], 0.0  # equal, opposite and zero features
    model = SiameseDistance("compact", 16, distance)
    whole = model.feature_distance(f[:, None, :], f[None, :, :])  # the unblocked computation
    blocks = (1, 3, 7, 64, 202) if threads == 1 else (3, 64)  # two threads on shared cores are slow
    for rows in blocks:
        assert torch.equal(model.pairwise(f, block_rows=rows), whole), rows
    assert torch.equal(model.pairwise(f, memory_budget=400_000), whole)  # budget-chosen blocks of 10
    g = f[:50]
    assert torch.equal(model.pairwise(g, f, block_rows=4), model.feature_distance(g[:, None], f[None]))


def test_pairwise_block_rows_follow_the_memory_budget():
    from cryoorient.siamese import pairwise_block_rows

    assert pairwise_block_rows(5000, 128, 4, 256 * 2**20) == 256 * 2**20 // (3 * 5000 * 128 * 4)
    assert pairwise_block_rows(10**6, 512, 4, 1) == 1
    with pytest.raises(ValueError, match="block_rows"):
        SiameseDistance("compact", 8, "cosine").pairwise(torch.ones(4, 8), block_rows=0)
    with pytest.raises(ValueError, match="memory_budget"):
        pairwise_block_rows(10, 8, 4, 0)


def rotation_features(q: torch.Tensor, noise: float, seed: int, width: int = 32) -> torch.Tensor:
    """float32 features ``vec(q qᵀ)`` (for which the orientation d_f is exactly d_q) plus Gaussian noise."""
    exact = (q[:, :, None] * q[:, None, :]).reshape(len(q), 16)
    padded = torch.cat([exact, exact.new_zeros(len(q), width - 16)], 1)
    draws = torch.from_numpy(np.random.default_rng(seed).standard_normal(padded.shape))
    return (padded + noise * draws).float()


def test_feature_distance_function_gives_the_dense_matrix_entries():
    q = sample_orientations(120, seed=5)
    f = rotation_features(q, 0.05, seed=6)
    model = SiameseDistance("compact", 32, "orientation")
    dense = _distance_matrix(model, f)
    i, j = torch.randint(120, (5000,)), torch.randint(120, (5000,))
    d = feature_distance_function(model, f, device="cpu", chunk=777)(i, j)
    assert d.dtype == torch.float64 and d.shape == (5000,)
    off = i != j
    assert torch.allclose(d[off], dense[i, j][off], rtol=0, atol=1e-6)  # float32 round-off of atan2
    exact = feature_distance_function(model, rotation_features(q, 0.0, seed=0), device="cpu")(i, j)
    error = (exact - quaternion_distance(q[i], q[j]))[off].abs()
    below = quaternion_distance(q[i], q[j])[off] < 3.1
    assert error[below].max() < 1e-5 and error.max() < 2.5e-3  # d_f's floor on cos θ: π − 2e-3 at most


def test_recover_from_images_dense_path_is_the_command_lines(stack, monkeypatch):
    images, _ = stack
    torch.manual_seed(0)
    model = SiameseDistance("compact", 8, "orientation")
    options = {"seed": 3, "device": "cpu", "progress": False}
    result, what = recover_from_images(model, images, 16, dense_limit=12, **options)
    before = recover_orientations(estimated_distances(model, images, 16).double(), seed=3, device="cpu")
    assert what == "dense, 12×12 distances" and torch.equal(result.quaternions, before.quaternions)

    calls = []

    def short(*args, **kwargs):  # the sampled path, wiring only: two epochs
        calls.append(kwargs)
        return recover_orientations_sampled(*args, **kwargs | {"max_epochs": 2, "pairs_per_epoch": 1000})

    monkeypatch.setattr(pipeline, "recover_orientations_sampled", short)
    result, what = recover_from_images(model, images, 16, dense_limit=11, **options)
    assert what.startswith("sampled pairs, 12 particles > dense limit 11: 2 epochs")
    assert result.quaternions.shape == (12, 4) and calls[0]["seed"] == 3
    with pytest.raises(ValueError, match="Euclidean"):
        recover_from_images(SiameseDistance("compact", 8, "euclidean"), images, 16, progress=False)
    with pytest.raises(ValueError, match="dense_limit"):
        recover_from_images(model, images, 16, dense_limit=-1, progress=False)
    with pytest.raises(ValueError, match="at least 4"):
        recover_from_images(model, images[:3], 16, progress=False)


def test_embed_images_in_chunks_is_embed():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(700, 12, 12, generator=generator)
    torch.manual_seed(0)
    model = SiameseDistance("compact", 8, "cosine")
    chunked = embed_images(model, images, None, device="cpu", progress=False, chunk=256)
    assert torch.equal(chunked, embed(model, images, None, device="cpu"))
    with pytest.raises(ValueError, match="multiple of"):
        embed_images(model, images, None, chunk=300)


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_sampled_path_matches_the_dense_path_at_2000(noise, fixed_threads):
    """Both paths from the same features: exact ones recover the truth, noisy ones the same E_OR.

    Tolerances: exact features are float32, so d_f carries ~1e-7 relative round-off and E_OR is
    ~3e-6 rad on either path; with noise (E_OR ≈ 0.11 rad on the dense path) the sampled path
    was 5e-4 rad from it: it must stay within 0.01 rad (10 % of the error itself).
    """
    torch.set_num_threads(1)
    q = sample_orientations(2000, seed=3)
    f = rotation_features(q, noise, seed=4)
    model = SiameseDistance("compact", 32, "orientation")
    dense, dense_what = recover_from_features(model, f, dense_limit=2000, seed=0, device="cpu")
    sampled, sampled_what = recover_from_features(model, f, dense_limit=1999, seed=0, device="cpu")
    assert dense_what.startswith("dense") and sampled_what.startswith("sampled pairs")
    e_dense = align_orientations(q, dense.quaternions).error
    e_sampled = align_orientations(q, sampled.quaternions).error
    if noise == 0:
        assert e_dense < 1e-4 and e_sampled < 1e-4
    else:
        assert 0.05 < e_dense < 0.2
        assert abs(e_sampled - e_dense) < 0.01, (e_sampled, e_dense)

