# %% [markdown]
# # 02 · Distance learning: a Siamese network that estimates orientation distances
#
# Step (i) of the method. Two projections $p_i, p_j$ go through the same convolutional network
# $G_w$; a distance $d_f$ between their features estimates the distance between their unknown
# orientations:
#
# $$\hat d_p(p_i, p_j) = d_f\big(G_w(p_i), G_w(p_j)\big) \approx d_q(q_i, q_j),$$
#
# trained on projections with known orientations by minimising
# $L_{DE} = \operatorname{mean}\,(\hat d_p - d_q)^2$ over pairs whose distances are spread uniformly
# on $[0, \pi]$.
#
# **What it asks.** Can such a network learn $d_q$ from pairs of projections, and how well does
# it do on projections it never saw, noiseless and noisy? Notebook 03 looks at that accuracy in
# detail.
#
# **What it needs.** Notebook 01's dataset (the cache, or simulated here). The estimators are
# cached by their parameters and shipped in `models/`, so this notebook loads them; trained from
# scratch (no shipped model, or other parameters) the noiseless one and the noise curriculum take
# tens of minutes on two CPU cores. A later notebook that needs them finds them the same way.
#
# **What differs from the paper by default, and why** (the paper's recipe is one parameter away:
# `model = {"recipe": "paper", "architecture": "paper", "distance": "cosine", ...}`; the `paper`
# profile sets it; the defaults are `cryoorient.model_cache.DEFAULT_MODEL`):
#
# * `distance="orientation"`: $d_f = 2\arccos\sqrt{\max(\cos\theta, 0)}$ with $\theta$ the angle
#   between the features, instead of the paper's $d_f = \theta$ (cosine). The cosine *cannot*
#   represent $d_q$: all the orientations at distance $\pi$ from one orientation form a
#   2-sphere, and the cosine would have to send them all to the single antipodal feature. Notebook
#   03 shows that even free feature vectors fitted directly (no network, no images) stall at the
#   paper's plateau with the cosine, and reach $d_q$ with the orientation distance.
# * `recipe="inbatch"`: every batch of $B$ images gives all $B(B-1)/2$ pairs, weighted so that
#   their distances count as uniform, instead of a fixed 1 % of pairs.
# * `rotations`: each image is turned by a random in-plane angle $\delta$ and its orientation by
#   $\psi \to \psi + \delta$ — an exact new example, so the network sees fresh pairs every epoch.
# * a compact network with batch normalisation on 32-pixel images, to train in minutes on a CPU.

# %%
# Colab only: install the package from the repository (does nothing elsewhere).
import subprocess
import sys

REPOSITORY = "https://github.com/cryoorient/cryoorient"
if "google.colab" in sys.modules:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"cryoorient @ git+{REPOSITORY}"], check=True
    )

# %% tags=["parameters"]
profile = "default"  # the study (cryoorient/studies/PROFILE.yml): map, box, P, model, noise, seeds
n_test_pairs = 4000  # test pairs with uniform d_q for the accuracy figures
device = None  # torch device; None picks CUDA when available

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from cryoorient.dataset import study_dataset
from cryoorient.model_cache import (
    dataset_model,
    model_config,
    noise_curriculum,
)
from cryoorient.plotting import plot_distance_agreement, plot_learning_curves, save_figure, use_style
from cryoorient.provenance import portable_path
from cryoorient.results import save_results
from cryoorient.snr import integrated_snr
from cryoorient.study import load_study
from cryoorient.training import evaluate_distances, split_pairs

use_style()
study = load_study(profile)
print(study)

# %% [markdown]
# ## 1 · The data
# The clean dataset of notebook 01 (loaded from its cache, or simulated now at the same
# parameters). Noise and shifts are added on the fly during training, so one clean dataset
# serves every noise level. Training uses the training split; the validation split gives the
# learning curves; the test split is touched only for the final numbers.

# %%
dataset = study_dataset(study)
print(f"map used: {dataset.map_name}; images {study.box_size} px of {dataset.particles.pixel_size:.2f} Å")

# %%
# NBVAL_CHECK_OUTPUT
print({name: len(indices) for name, indices in dataset.splits.items()})

# %% [markdown]
# ## 2 · Training
# The model is cached under the data folder, keyed by the training configuration and the
# dataset; an interrupted run resumes from its last completed epoch.

# %%
config = model_config(study.model, seed=study.seed)
image_size = config.image_size
print(config)
tic = time.perf_counter()
result = dataset_model(dataset, config, device=device)
history = result.history
minutes = history[-1]["seconds"] / 60
print(f"model {result.folder.name}: {len(history)} epochs, {minutes:.1f} min of training")
print(f"(this session: {time.perf_counter() - tic:.0f} s)")

# %% [markdown]
# ## 3 · Learning curves
# $L_{DE}$ (here the mean squared error, rad², the loss we train) per epoch on the training batches
# (weighted to uniform distances) and on fixed validation pairs with uniform distances. The
# paper's corresponding panels show the loss "converged"; a validation curve that rises while the
# training curve falls would mean over-fitting.

# %%
epoch = [h["epoch"] for h in history]
fig, ax = plt.subplots(figsize=(5.5, 3.5))
plot_learning_curves(ax, epoch, [h["train_loss"] for h in history], [h["validation_loss"] for h in history])
noise_tag = f"noise{config.noise_variance:g}"
ax.set_title(f"{dataset.map_name}, σ² = {config.noise_variance:g}, {image_size or study.box_size} px, "
             f"{config.distance} $d_f$")
fig.tight_layout()
save_figure(
    fig, f"distance_learning_loss_{dataset.map_name.replace(':', '-')}_{noise_tag}", profile=profile,
    map=dataset.map_name, config=config.to_dict(), n_projections=study.n_projections, box_size=study.box_size,
)
plt.show()

# %% [markdown]
# ## 4 · Accuracy on the test split
# RMSE and mean absolute error (MAE, the paper's $L_{DE}$: its authors trained with it and plot it)
# of $\hat d_p - d_q$ on test pairs whose $d_q$ are uniform on $[0, \pi]$ (as the loss
# weights them), Pearson's correlation, the RMSE where $d_q > 2$ rad (where the paper's estimator
# plateaus), and the RMSE on pairs drawn at random (most random pairs are far apart: $d_q$ has
# density $(1 - \cos d)/\pi$). Test images get the training noise and shifts, drawn once from a
# fixed seed.

# %%
test = dataset.splits["test"]
images = torch.from_numpy(dataset.particles.images)
degrade = {"noise_variance": config.noise_variance, "shift_limit": config.shift_limit, "seed": study.seed + 1}
pairs = split_pairs(dataset.quaternions, test, n_test_pairs, seed=study.seed)
uniform = evaluate_distances(result.model, images, dataset.quaternions, pairs, image_size, **degrade)
rng = np.random.default_rng(study.seed)
random_pairs = torch.from_numpy(test[rng.integers(0, len(test), (n_test_pairs, 2))])
random_pairs = random_pairs[random_pairs[:, 0] != random_pairs[:, 1]]
natural = evaluate_distances(result.model, images, dataset.quaternions, random_pairs, image_size, **degrade)
u, n = uniform, natural
print(f"test, {len(u['d_q'])} pairs with uniform d_q:")
print(
    f"  RMSE {u['rmse']:.3f} rad, MAE {u['mae']:.3f} rad, Pearson r {u['pearson']:.3f}, "
    f"RMSE for d_q > 2: {u['rmse_above_2']:.3f} rad"
)
print(f"  L_DE {u['loss']:.4f} rad²")
print(f"test, {len(n['d_q'])} random pairs: RMSE {n['rmse']:.3f} rad, Pearson r {n['pearson']:.3f}")

# %%
# NBVAL_CHECK_OUTPUT
guess = float(np.std(u["d_q"]))  # RMSE of always answering the mean distance
assert ((u["d_p"] >= 0) & (u["d_p"] <= np.pi + 1e-6)).all(), "estimates leave [0, π]"
assert u["rmse"] < 0.5 * guess, f"RMSE {u['rmse']:.3f} rad is not half the constant guess's {guess:.2f} rad"
print(f"estimates within [0, π]; RMSE below half that of always answering the mean ({guess:.2f} rad)")

# %%
fig, ax = plt.subplots(figsize=(4.5, 4.2))
plot_distance_agreement(ax, uniform["d_q"], uniform["d_p"], hexbin=True)
ax.set_ylabel(r"$\hat d_p$ (rad)")
ax.set_title(f"test pairs: RMSE {uniform['rmse']:.2f} rad, r = {uniform['pearson']:.2f}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5 · The noise study: estimators for noisy projections
# The method exists for noisy data, so the paper's case rests on its noisy results. Noise is added
# as in the paper, white with variance $\sigma^2$ per pixel on the clean stack standardised to unit
# variance. What one image tells a matched filter (or a network that learns one) is its
# *integrated* SNR, $\sum_{\text{pixels}} s^2 / \sigma^2 = D^2 / \sigma^2$: the same $\sigma^2$ hides
# more of a $D = 64$ image than of the paper's $D = 116$ image of the same particle. The paper's
# σ² = 16 is therefore matched here by $\sigma^2 = 16\,(64/116)^2$, and both levels are studied:
# the matched one is what compares with the paper, σ² = 16 is a harder task than the paper's.
#
# Each noisy estimator starts from the one of the level below (a curriculum; noise is drawn afresh
# at every step from the same clean training images) instead of from scratch: at σ² = 16, a network
# trained cold must find through the noise what the orientation of a projection looks like, while
# one that already knows it from cleaner images only has to learn to see through more noise.
# Notebook 03 measures what this and other choices are worth.

# %%
matched = study.matched_noise_variance
levels = list(study.noise_study_levels)
stage_epochs = study.curriculum_epochs
print(f"paper: σ² = {study.paper_noise_variance:g} at {study.paper_box_size} px, integrated SNR "
      f"{integrated_snr(study.paper_noise_variance, study.paper_box_size):.0f}")
for level in levels:
    snr = integrated_snr(level, study.box_size)
    print(f"  σ² = {level:5.2f} at {study.box_size} px: integrated SNR {snr:7.0f}, "
          f"the paper's σ² ≈ {level * (study.paper_box_size / study.box_size) ** 2:5.1f}")

# %%
tic = time.perf_counter()
chain = noise_curriculum(dataset, config, [0.0, *levels], epochs=stage_epochs,
                         learning_rate=study.curriculum_learning_rate, device=device)
print(f"{len(levels)} noisy estimators, {stage_epochs} epochs each "
      f"(this session: {time.perf_counter() - tic:.0f} s)")

# %% [markdown]
# Every estimator's learning curve: the validation loss of each stage on validation images with
# that stage's noise (drawn once), starting where the previous stage ended.

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
start = 0
for level, trained in chain.items():
    stage = trained.history
    x = start + np.arange(1, len(stage) + 1)
    ax.plot(x, [h["validation_loss"] for h in stage], "-", label=f"σ² = {level:.3g}")
    start = x[-1]
ax.set_xlabel("epoch (stages one after another)")
ax.set_ylabel(r"validation $L_{DE}$ (MSE, rad$^2$)")
ax.set_yscale("log")
ax.legend(fontsize=8, ncol=2)
ax.set_title(f"{dataset.map_name}: the noise curriculum, {image_size or study.box_size} px network input")
fig.tight_layout()
save_figure(fig, f"distance_learning_curriculum_{dataset.map_name.replace(':', '-')}", profile=profile,
            map=dataset.map_name, levels=levels, epochs=stage_epochs,
            models=[r.folder.name for r in chain.values()])
plt.show()

# %% [markdown]
# Accuracy of each estimator on the test pairs, the test images carrying that level's noise (drawn
# once from a fixed seed).

# %%
by_level = {}
for level, trained in chain.items():
    e = evaluate_distances(trained.model, images, dataset.quaternions, pairs, image_size,
                           noise_variance=level, seed=study.seed + 1)
    minutes_level = trained.history[-1]["seconds"] / 60
    by_level[level] = {k: e[k] for k in ("rmse", "mae", "pearson", "loss")} | {
        "minutes": minutes_level, "epochs": len(trained.history), "model": trained.folder.name}
    print(f"σ² = {level:5.2f}: RMSE {e['rmse']:.3f} rad, MAE {e['mae']:.3f} rad, r {e['pearson']:.3f} "
          f"({len(trained.history)} epochs, {minutes_level:.1f} min)")

# %%
# NBVAL_CHECK_OUTPUT
rmse = [by_level[level]["rmse"] for level in chain]
assert all(r < guess for r in rmse), f"an estimator is worse than the constant guess: {rmse}"
assert rmse[0] <= min(rmse) + 0.01, f"the noiseless estimator should be the most accurate: {rmse}"
print(f"{len(chain)} estimators (σ² = 0 … {max(chain):g}), each better than the constant guess; "
      "the noiseless one the most accurate")

# %% [markdown]
# ## 6 · Results for the figures notebook and the report
# The numbers above, the learning curves and the test pairs go to `paper/results/PROFILE/`, where
# notebook 99 and the reproduction report (`paper/README.md`) read them, next to the paper's.
# The model lives in the printed cache folder (`model.pt`, `history.json`);
# `cryoorient.training.load_model` reads it, and notebooks 03-08 find it by the same
# parameters.

# %%
saved = save_results(
    "02_distance_learning",
    {
        "map": dataset.map_name,
        "config": config.to_dict(),
        "n_parameters": sum(p.numel() for p in result.model.parameters()),
        "epochs": len(history),
        "training_minutes": minutes,
        "test_uniform": {k: u[k] for k in ("rmse", "mae", "pearson", "rmse_above_2", "loss")}
        | {"pairs": len(u["d_q"])},
        "test_random": {k: n[k] for k in ("rmse", "mae", "pearson", "loss")} | {"pairs": len(n["d_q"])},
        "matched_noise_variance": matched,
        "paper_noise_variance": study.paper_noise_variance,
        "curriculum_epochs": stage_epochs,
        "noise_study": {f"{level:g}": values for level, values in by_level.items()},
        "matched": by_level[matched] | {"noise_variance": matched},
    },
    profile=profile,
    arrays={
        "epoch": np.array(epoch),
        "train_loss": np.array([h["train_loss"] for h in history]),
        "validation_loss": np.array([h["validation_loss"] for h in history]),
        "test_d_q": u["d_q"],
        "test_d_p": u["d_p"],
    }
    | {f"curriculum/{v:g}": np.array([h["validation_loss"] for h in r.history]) for v, r in chain.items()},
    map=dataset.map_name,
    model=result.folder.name,
    n_projections=study.n_projections,
    box_size=study.box_size,
)
print(f"saved {portable_path(saved)} and its .npz")

# %% [markdown]
# ## What we found
# Rendered from the results just saved (nothing typed by hand).

# %%
noisiest = max(by_level)
display(Markdown(f"""
* **Noiseless**: on {len(u["d_q"]):,} test pairs uniform in $d_q$, RMSE {u["rmse"]:.3f} rad, MAE
  {u["mae"]:.3f} rad (the paper's $L_{{DE}}$), r {u["pearson"]:.3f}; after {len(history)} epochs
  ({minutes:.0f} min of training).
* **Noisy**: each estimator of the curriculum on test images with its own noise: MAE
  {by_level[matched]["mae"]:.3f} rad at the SNR-matched σ² = {matched:.2f} (the paper's σ² =
  {study.paper_noise_variance:g} at our box), {by_level[noisiest]["mae"]:.3f} rad at σ² = {noisiest:g}.
"""))
