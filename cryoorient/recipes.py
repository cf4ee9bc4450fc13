"""Training recipes: what one epoch of :func:`cryoorient.training.train_distance` steps through.

A recipe decides the optimiser and its schedule, the batches of an epoch, the pairs of a batch
and their weights in the loss; the training loop does the rest (augmentation, the loss, the
optimiser step, validation and checkpoints). Two recipes, named by ``TrainingConfig.recipe``:

``"paper"`` (:class:`PaperRecipe`)
    the paper's: a fixed set of training pairs resampled so that their ``d_q`` are uniform on
    ``[0, π]`` (a ``pairs_fraction`` of all pairs, 1 % in the paper), mini-batches of
    ``batch_size`` pairs, every pair of weight 1, RMSProp at a constant learning rate.
``"inbatch"`` (:class:`InBatchRecipe`)
    a batch of ``batch_size`` images gives all its ``B (B − 1) / 2`` pairs for ``B`` forward
    passes; each pair is weighted by the inverse of the training pairs' distance density
    (:func:`distance_weights`), so the loss is again an average over uniformly distributed
    distances; AdamW with a cosine learning-rate schedule over the whole training.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from cryoorient.geometry import quaternion_distance
from cryoorient.sampling import sample_uniform_distance_pairs

if TYPE_CHECKING:
    from cryoorient.training import TrainingConfig

__all__ = [
    "RECIPES",
    "InBatchRecipe",
    "PaperRecipe",
    "Recipe",
    "distance_weights",
    "epoch_steps",
    "make_recipe",
    "paper_pair_count",
]


def distance_weights(distances: torch.Tensor, reference: torch.Tensor, n_bins: int = 32, cap: float = 20.0):
    """Weights that make a set of pair distances count as if uniform on ``[0, π]``.

    Parameters
    ----------
    distances : (M,) pair distances to weight, radians.
    reference : (K,) distances whose histogram estimates the pair distance density.
    n_bins : histogram bins on ``[0, π]``.
    cap : largest weight (rare, very small distances would otherwise dominate).

    Returns
    -------
    (M,) weights ``1 / (π density(d))``, capped, so that uniform distances get weight 1.
    """
    counts = torch.histc(reference.double(), bins=n_bins, min=0.0, max=math.pi)
    density = counts / counts.sum() * n_bins / math.pi
    index = (distances.double() / math.pi * n_bins).long().clamp(0, n_bins - 1)
    return (1.0 / (math.pi * density[index]).clamp_min(1.0 / cap)).to(distances.dtype)


def paper_pair_count(config: TrainingConfig, n_train: int) -> int:
    """Training pairs the paper's recipe keeps: ``pairs_fraction`` of the ``n_train (n_train - 1) / 2``."""
    return max(1, int(config.pairs_fraction * n_train * (n_train - 1) / 2))


def epoch_steps(config: TrainingConfig, n_train: int) -> int:
    """Optimisation steps in one epoch over ``n_train`` training images.

    The paper's recipe steps through its fixed pairs, ``batch_size`` pairs a step; the in-batch
    recipe through the images, ``batch_size`` images a step (the last partial batch dropped).
    """
    if config.recipe == "paper":
        return math.ceil(paper_pair_count(config, n_train) / config.batch_size)
    return n_train // config.batch_size


class Recipe:
    """How a recipe trains on the images ``train`` of a dataset with orientations ``quaternions``.

    Parameters
    ----------
    config : the training configuration (its ``recipe`` names the subclass).
    quaternions : (N, 4) float64 orientations of the whole dataset.
    train : (n,) long indices of the training images.
    rng : draws what the recipe fixes once for the whole training (the paper's pairs).
    """

    def __init__(
        self, config: TrainingConfig, quaternions: torch.Tensor, train: torch.Tensor, rng: np.random.Generator
    ) -> None:
        self.config = config
        self.train = train
        self.steps_per_epoch = epoch_steps(config, len(train))

    def optimizer(self, parameters) -> torch.optim.Optimizer:
        """The optimiser of the network's ``parameters``."""
        raise NotImplementedError

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        """The learning-rate schedule, stepped after every optimisation step; ``None``: constant."""
        return None

    def batches(self, rng: np.random.Generator) -> list[torch.Tensor]:
        """One epoch's batches, in the order ``rng`` shuffles them."""
        raise NotImplementedError

    def pairs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The images a batch embeds and its pairs: ``(used, i, j)``.

        ``used`` indexes the dataset; the pairs are ``(used[i], used[j])``, ``i`` and ``j`` (M,)
        long indices into ``used``.
        """
        raise NotImplementedError

    def weights(self, target: torch.Tensor) -> torch.Tensor:
        """(M,) weights of the pairs of true distances ``target`` (rad) in the loss."""
        return torch.ones_like(target)


class PaperRecipe(Recipe):
    """The paper's: fixed pairs uniform in ``d_q``, batches of pairs, RMSProp (module docstring)."""

    def __init__(
        self, config: TrainingConfig, quaternions: torch.Tensor, train: torch.Tensor, rng: np.random.Generator
    ) -> None:
        super().__init__(config, quaternions, train, rng)
        n_pairs = paper_pair_count(config, len(train))
        self.train_pairs = train[sample_uniform_distance_pairs(quaternions[train], n_pairs, seed=rng)]

    def optimizer(self, parameters) -> torch.optim.Optimizer:
        """RMSProp at the configured learning rate."""
        return torch.optim.RMSprop(parameters, lr=self.config.learning_rate)

    def batches(self, rng: np.random.Generator) -> list[torch.Tensor]:
        """The fixed pairs, shuffled, ``batch_size`` pairs a batch ((B, 2) indices)."""
        order = self.train_pairs[torch.from_numpy(rng.permutation(len(self.train_pairs)))]
        size = self.config.batch_size
        return [order[s : s + size] for s in range(0, len(order), size)]

    def pairs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The distinct images of the batch's pairs, each embedded once."""
        used, inverse = torch.unique(batch.flatten(), return_inverse=True)
        i, j = inverse.reshape(-1, 2).unbind(-1)
        return used, i, j


class InBatchRecipe(Recipe):
    """Every pair of a batch of images, density-weighted, AdamW and a cosine schedule (module docstring)."""

    def __init__(
        self, config: TrainingConfig, quaternions: torch.Tensor, train: torch.Tensor, rng: np.random.Generator
    ) -> None:
        super().__init__(config, quaternions, train, rng)
        q = quaternions[train]
        self.reference = quaternion_distance(q[:, None], q[None]).flatten()

    def optimizer(self, parameters) -> torch.optim.Optimizer:
        """AdamW at the configured learning rate and weight decay."""
        config = self.config
        return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """Cosine annealing to 0 over every step of the training."""
        total = self.config.epochs * self.steps_per_epoch
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)

    def batches(self, rng: np.random.Generator) -> list[torch.Tensor]:
        """The training images, shuffled, ``batch_size`` a batch (the last partial one dropped)."""
        order = self.train[torch.from_numpy(rng.permutation(len(self.train)))]
        size = self.config.batch_size
        return [order[s * size : (s + 1) * size] for s in range(self.steps_per_epoch)]

    def pairs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every pair of distinct images of the batch."""
        i, j = torch.triu_indices(len(batch), len(batch), offset=1)
        return batch, i, j

    def weights(self, target: torch.Tensor) -> torch.Tensor:
        """Inverse density of the training pairs' distances (:func:`distance_weights`)."""
        return distance_weights(target, self.reference)


_RECIPES: dict[str, type[Recipe]] = {"inbatch": InBatchRecipe, "paper": PaperRecipe}
RECIPES = tuple(_RECIPES)


def make_recipe(
    config: TrainingConfig, quaternions: torch.Tensor, train: torch.Tensor, rng: np.random.Generator
) -> Recipe:
    """The recipe ``config.recipe`` over the training images ``train`` (see :class:`Recipe`)."""
    return _RECIPES[config.recipe](config, quaternions, train, rng)
