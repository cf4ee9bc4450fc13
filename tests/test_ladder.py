"""The ablation ladder (cryoorient.ladder): its rungs, the paper's recovery, the evaluation pairs."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from cryoorient.alignment import align_orientations
from cryoorient.geometry import quaternion_distance, quaternion_distance_matrix
from cryoorient.ladder import evaluate, evaluation_pairs, ladder, paper_recovery, recover
from cryoorient.model_cache import model_config, paper_method_config
from cryoorient.recovery import perturb_distances
from cryoorient.sampling import sample_orientations
from cryoorient.siamese import SiameseDistance
from cryoorient.study import load_study


def test_the_ladder_goes_from_the_paper_method_to_ours_one_change_at_a_time():
    study = load_study("default")
    rungs = ladder(study)
    assert [r.name for r in rungs] == ["paper", "inbatch", "orientation", "mse", "compact", "spectral"]
    assert rungs[0].config == paper_method_config(study) and rungs[0].recovery == "paper"
    assert rungs[-1].config == rungs[-2].config == model_config(study.model, seed=study.seed)
    assert [r.recovery for r in rungs] == ["paper"] * 5 + ["ours"]
    changed = [
        sorted(k for k, v in asdict(b.config).items() if asdict(a.config)[k] != v)
        for a, b in zip(rungs, rungs[1:], strict=False)
    ]
    assert changed[1:] == [["distance"], ["loss"], ["architecture", "image_size", "n_features"], []]
    assert {"recipe", "rotations", "batch_size", "epochs"} <= set(changed[0])  # the recipe and its schedule
    assert ladder(study, seed=3)[2].config.seed == 3
    with pytest.raises(ValueError, match="not the study's model"):
        ladder(load_study("paper"))  # the paper profile's model is the paper's: no ladder to climb


def test_the_paper_recovery_recovers_exact_distances():
    """As the paper's App. B reports: from exact distances, Adam on random pairs recovers the orientations."""
    q = sample_orientations(60, seed=1)
    d = quaternion_distance_matrix(q)
    result = paper_recovery(d, steps=2000, seed=0)
    assert result.loss < 1e-8 and result.steps == 2000 and len(result.loss_history) == 2000
    assert align_orientations(q, result.quaternions, seed=0).error < 1e-3
    short = [paper_recovery(d, steps=20, seed=0).quaternions for _ in range(2)]
    assert torch.equal(*short)  # seeded: the same orientations
    noisy = paper_recovery(d, steps=2000, error_variance=0.1, seed=0)  # fresh errors every step
    error = align_orientations(q, noisy.quaternions, seed=0).error
    assert 1e-3 < error < 0.5, error  # errors cost accuracy, but the orientations are still found
    ours = recover(perturb_distances(d, 0.3, seed=2), "ours", seed=0)
    assert ours.converged
    with pytest.raises(ValueError, match="unknown recovery 'sgd'"):
        recover(d, "sgd")
    with pytest.raises(ValueError, match="P >= 4"):
        paper_recovery(d[:3, :3])
    with pytest.raises(ValueError, match="error_variance"):
        paper_recovery(d, error_variance=-1.0)


def test_evaluation_pairs():
    q = sample_orientations(200, seed=4)
    pairs = evaluation_pairs(q, 500, seed=0)
    for kind in ("uniform", "random"):
        ij = pairs[kind]
        assert ij.shape == (500, 2) and (ij[:, 0] != ij[:, 1]).all() and int(ij.max()) < 200
    uniform = quaternion_distance(q[pairs["uniform"][:, 0]], q[pairs["uniform"][:, 1]]).numpy()
    random = quaternion_distance(q[pairs["random"][:, 0]], q[pairs["random"][:, 1]]).numpy()
    assert np.mean(uniform < 1.0) > 2 * np.mean(random < 1.0)  # random pairs are rarely close
    assert torch.equal(evaluation_pairs(q, 500, seed=0)["random"], pairs["random"])


def _tiny_rung() -> tuple[torch.Tensor, torch.Tensor, dict, SiameseDistance]:
    """12 random orientations, noise images (16 px), 30 pairs of each kind and an untrained network."""
    q = sample_orientations(12, seed=2)
    images = torch.randn(12, 16, 16, generator=torch.Generator().manual_seed(0))
    pairs = evaluation_pairs(q, 30, seed=0)
    torch.manual_seed(0)
    return q, images, pairs, SiameseDistance("compact", 8, "orientation")


def test_evaluate_measures_distances_and_orientations_of_one_rung():
    q, images, pairs, model = _tiny_rung()
    values, arrays = evaluate(model, 16, images, q, pairs, "ours", seed=0)
    for kind in ("uniform", "random"):
        d_p, d_q = arrays[f"d_p/{kind}"], arrays[f"d_q/{kind}"]
        assert d_p.shape == d_q.shape == (30,)
        assert values[kind]["mae"] == pytest.approx(float((d_p - d_q).abs().mean()))
        torch.testing.assert_close(d_q, quaternion_distance(q[pairs[kind][:, 0]], q[pairs[kind][:, 1]]))
    assert arrays["errors"].shape == (12,) and arrays["recovered"].shape == (12, 4)
    assert values["e_or"] == pytest.approx(float(arrays["errors"].mean()))
    assert "e_or_starts" not in values


def test_evaluate_reports_every_start_of_a_random_start_recovery():
    q, images, pairs, model = _tiny_rung()
    values, _ = evaluate(model, 16, images, q, pairs, "paper", seed=3, starts=3)
    assert len(values["e_or_starts"]) == 3 and values["e_or_starts"][0] == values["e_or"]
    again, _ = evaluate(model, 16, images, q, pairs, "paper", seed=4, starts=1)
    assert values["e_or_starts"][1] == pytest.approx(again["e_or"])  # start k is the recovery at seed + k
    with pytest.raises(ValueError, match="starts"):
        evaluate(model, 16, images, q, pairs, "paper", starts=0)
