import math

import numpy as np
import pytest
import torch

from cryoorient.geometry import quaternion_distance
from cryoorient.recipes import InBatchRecipe, PaperRecipe, distance_weights, epoch_steps, make_recipe
from cryoorient.sampling import sample_orientations
from cryoorient.training import TrainingConfig

N_TRAIN = 50


@pytest.fixture(scope="module")
def quaternions():
    return sample_orientations(80, seed=3)


@pytest.fixture(scope="module")
def train():
    return torch.arange(10, 10 + N_TRAIN)


def test_inbatch_batches_are_disjoint_training_images_and_give_every_pair(quaternions, train):
    config = TrainingConfig(recipe="inbatch", batch_size=8)
    recipe = make_recipe(config, quaternions, train, np.random.default_rng(0))
    assert isinstance(recipe, InBatchRecipe)
    batches = recipe.batches(np.random.default_rng(0))
    assert len(batches) == recipe.steps_per_epoch == epoch_steps(config, N_TRAIN) == N_TRAIN // 8
    seen = torch.cat(batches)
    assert len(set(seen.tolist())) == len(seen) == 8 * (N_TRAIN // 8)  # each image once, last batch dropped
    assert set(seen.tolist()) <= set(train.tolist())
    used, i, j = recipe.pairs(batches[0])
    assert torch.equal(used, batches[0])
    assert len(i) == 8 * 7 // 2 and bool((i < j).all())


def test_paper_batches_step_through_every_fixed_pair_once(quaternions, train):
    config = TrainingConfig(recipe="paper", batch_size=16, pairs_fraction=0.1)
    recipe = make_recipe(config, quaternions, train, np.random.default_rng(0))
    assert isinstance(recipe, PaperRecipe)
    n_pairs = int(0.1 * N_TRAIN * (N_TRAIN - 1) / 2)
    assert recipe.train_pairs.shape == (n_pairs, 2)
    batches = recipe.batches(np.random.default_rng(0))
    assert len(batches) == recipe.steps_per_epoch == epoch_steps(config, N_TRAIN) == math.ceil(n_pairs / 16)
    assert sorted(map(tuple, torch.cat(batches).tolist())) == sorted(map(tuple, recipe.train_pairs.tolist()))
    used, i, j = recipe.pairs(batches[0])
    assert torch.equal(torch.stack([used[i], used[j]], 1), batches[0])  # each image embedded once
    assert len(used) == len(torch.unique(batches[0]))
    assert torch.equal(recipe.weights(torch.rand(5)), torch.ones(5))


def test_recipes_shuffle_from_the_generator_they_are_given(quaternions, train):
    for name in ("inbatch", "paper"):
        config = TrainingConfig(recipe=name, batch_size=8)
        recipe = make_recipe(config, quaternions, train, np.random.default_rng(0))
        first = recipe.batches(np.random.default_rng(1))
        again = recipe.batches(np.random.default_rng(1))
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
        assert not all(
            torch.equal(a, b) for a, b in zip(first, recipe.batches(np.random.default_rng(2)), strict=True)
        )


def test_optimisers_and_schedules(quaternions, train):
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    config = TrainingConfig(recipe="paper", learning_rate=0.01)
    paper = make_recipe(config, quaternions, train, np.random.default_rng(0))
    assert isinstance(paper.optimizer(parameters), torch.optim.RMSprop)
    assert paper.scheduler(paper.optimizer(parameters)) is None
    config = TrainingConfig(recipe="inbatch", epochs=3, batch_size=10)
    inbatch = make_recipe(config, quaternions, train, np.random.default_rng(0))
    optimizer = inbatch.optimizer(parameters)
    assert isinstance(optimizer, torch.optim.AdamW)
    schedule = inbatch.scheduler(optimizer)
    for _ in range(3 * inbatch.steps_per_epoch):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # annealed over the whole run


def test_distance_weights_make_a_skewed_set_count_as_uniform():
    # Haar-random pairs are far from uniform in d_q (density ∝ sin²(d/2)); weighted, each quarter
    # of [0, π] counts a quarter of the pairs
    q = sample_orientations(4000, seed=0)
    d = quaternion_distance(q[:2000], q[2000:]).float()
    r = sample_orientations(300, seed=1)
    reference = quaternion_distance(r[:, None], r[None]).flatten().float()
    w = distance_weights(d, reference, n_bins=8, cap=1e6)
    edges = torch.linspace(0, math.pi, 5)
    quarters = [(d >= lo) & (d < hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    mass = [float(w[inside].sum()) / len(d) for inside in quarters]
    counts = [float(inside.float().mean()) for inside in quarters]
    assert counts[0] < 0.05 and counts[-1] > 0.4  # unweighted: far from uniform
    assert mass[1:] == pytest.approx([0.25] * 3, rel=0.12)
    assert mass[0] == pytest.approx(0.25, rel=0.5)  # few pairs there, each weighted heavily
    assert distance_weights(torch.tensor([0.001]), reference, cap=20.0).item() <= 20.0
