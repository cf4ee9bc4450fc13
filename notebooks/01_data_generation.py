# %% [markdown]
# # 01 · Data generation: a density map, orientations, projections and the dataset
#
# **What it asks.** Single-particle cryo-EM records many projections of one protein, each in an
# unknown orientation. What is the paper's raw material, and is it what it claims to be (uniform
# orientations, the stated noise, RELION's conventions)? Step by step:
#
# 1. the **density map** (PDB 5j0n, the paper's protein, or an embedded pseudo-protein offline);
# 2. **orientations**, drawn under the four schemes of the paper's appendix, and the distances
#    between them;
# 3. **projections** in RELION's convention, clean, noisy, shifted and with a CTF (the paper's
#    projection examples; the CTF goes beyond the paper);
# 4. the **dataset** on disk (`.mrcs` + RELION `.star`) and its training / validation / test split
#    (the paper's Table 1).
#
# Orientations are unit quaternions $q = (w, x, y, z)$ (scalar first; $q$ and $-q$ are the same
# orientation), and the distance between two orientations is the geodesic distance on SO(3)
#
# $$d_q(q_i, q_j) = 2 \arccos \left| \langle q_i, q_j \rangle \right| \in [0, \pi],$$
#
# the angle of the rotation that takes one to the other. Step (i) of the method learns to predict
# $d_q$ from two projections.
#
# **What it needs.** Nothing but the package: the map is read from `CRYOORIENT_MAPS` or the cache,
# downloaded once, or replaced by the embedded pseudo-protein offline (with a warning). It writes the
# dataset that every later notebook loads from the cache (each simulates it again when run alone).

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
n_orientations = 2000  # orientations per scheme in the sampling figure
shift_limit = 5.0  # ± pixels, triangular in-plane shifts in the examples
defocus = 15000.0  # Å, defocus of the CTF example

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display
from scipy import stats

from cryoorient import (
    SAMPLING_SCHEMES,
    haar_distance_cdf,
    load_map,
    quaternion_distance,
    quaternion_distance_matrix,
    quaternion_to_euler,
    sample_orientations,
    viewing_direction,
)
from cryoorient.dataset import simulate_particles, study_dataset
from cryoorient.plotting import (
    plot_directions,
    plot_distance_histogram,
    plot_map_slices,
    save_figure,
    show_images,
    use_style,
)
from cryoorient.projection import ctf_2d, snr_db
from cryoorient.provenance import portable_path
from cryoorient.results import save_results
from cryoorient.study import load_study

use_style()
study = load_study(profile)
print(study)

# %% [markdown]
# ## 1 · The density map
# `load_map` resolves the name the same way everywhere: `5j0n` is the authors' map (checked by
# its SHA-256, read from `$CRYOORIENT_MAPS` or the cache, downloaded once otherwise). If it cannot
# be had, a loud warning says so and the embedded pseudo-protein stands in; the map actually used
# is recorded with every figure. The map is padded to a cube about its box centre and resampled
# (Fourier cropping) to `box_size` voxels, keeping its field of view.

# %%
density = load_map(study.map_name, box_size=study.box_size, voxel_size=study.voxel_size)
print(f"map used: {density.name}  (source: {portable_path(density.source)})")
print(f"voxel size {density.voxel_size:.2f} Å, field of view {density.voxel_size * study.box_size:.0f} Å")

# %%
# NBVAL_CHECK_OUTPUT
print(f"map shape {density.shape}, values in [{density.data.min():.0f}, {density.data.max():.0f}]")

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
plot_map_slices(axes, density.data, density.voxel_size)
fig.suptitle(
    f"Density map {density.name}: central slices ({study.box_size}³ voxels of {density.voxel_size:.2f} Å)"
)
fig.tight_layout()
save_figure(
    fig, "map_slices", profile=profile, map=density.name, map_source=portable_path(density.source),
    box_size=study.box_size,
)
plt.show()

# %% [markdown]
# ## 2 · Orientations and how they are distributed
# Each scheme draws `n_orientations` orientations from the same seed:
#
# * **uniform**: uniform (Haar) on SO(3), the paper's main setting;
# * **euler**: uniform on the Euler angles, which over-samples the poles;
# * **half** and **quarter**: uniform orientations whose projection directions cover only half or a
#   quarter of the sphere (the appendix's restricted coverage);
# * **paper_half**: the half coverage the paper's perturbation and noise studies drew (the authors'
#   `uniform_angles`): Euler angles uniform with tilt up to 90°, so directions crowd at the pole.
#
# Euler angles follow RELION's ZYZ convention (rot, tilt, psi); the projection direction of an
# orientation is $(\sin\mathrm{tilt}\cos\mathrm{rot}, \sin\mathrm{tilt}\sin\mathrm{rot}, \cos\mathrm{tilt})$.
# The tilt range shows the coverage: the half, quarter and paper_half schemes never tilt past 90°.

# %%
# NBVAL_CHECK_OUTPUT
orientations = {
    scheme: sample_orientations(n_orientations, scheme, seed=study.seed) for scheme in SAMPLING_SCHEMES
}
for scheme, q in orientations.items():
    rot, tilt, psi = quaternion_to_euler(q).rad2deg().unbind(-1)
    rot = rot % 360
    unit = torch.allclose(q.norm(dim=-1), torch.ones(len(q), dtype=q.dtype))
    print(
        f"{scheme:10s} {tuple(q.shape)}  unit norm: {unit}  "
        f"tilt in [{tilt.min():.0f}°, {tilt.max():.0f}°]  rot in [{rot.min():.0f}°, {rot.max():.0f}°]"
    )

# %% [markdown]
# Top row: each orientation's projection direction on an equal-area map of the sphere, so that
# equal densities of points mean equal densities of directions. Bottom row: the histogram of
# $d_q$ over all pairs, against the density $(1-\cos\theta)/\pi$ of distances between uniformly
# random orientations. Uniform orientations are rarely close: small distances are rare for every
# scheme, which is why the paper resamples training pairs to make their distances uniform.

# %%
pairwise = {}
for scheme, q in orientations.items():
    d = quaternion_distance_matrix(q)  # (n, n)
    pairwise[scheme] = d[torch.triu_indices(len(q), len(q), offset=1).unbind()]  # (n (n - 1) / 2,)

n_schemes = len(SAMPLING_SCHEMES)
fig = plt.figure(figsize=(3 * n_schemes, 5.2))
for k, scheme in enumerate(SAMPLING_SCHEMES):
    ax = fig.add_subplot(2, n_schemes, k + 1, projection="mollweide")
    plot_directions(ax, viewing_direction(orientations[scheme]), color=f"C{k}")
    ax.set_title(f"{scheme}: projection directions")
    ax = fig.add_subplot(2, n_schemes, k + 1 + n_schemes)
    plot_distance_histogram(ax, pairwise[scheme], color=f"C{k}")
    ax.set_title(f"{scheme}: pairwise $d_q$")
fig.suptitle(f"Orientation sampling schemes ({n_orientations} orientations each, study.seed {study.seed})")
fig.tight_layout()
save_figure(fig, "orientation_sampling", profile=profile, n_orientations=n_orientations, seed=study.seed)
plt.show()

# %% [markdown]
# **Is "uniform" really uniform on SO(3)?** If the orientations are Haar-distributed, the distance
# from any fixed orientation (here the identity) to them follows the density $(1-\cos\theta)/\pi$,
# whose cumulative distribution is $(\theta - \sin\theta)/\pi$. A Kolmogorov–Smirnov test compares
# the two; sampling uniformly on the Euler angles instead fails it, which is the appendix's point.
# The table also gives the mean pairwise distance; for Haar orientations it is
# $\pi/2 + 2/\pi \approx 2.207$ rad.

# %%
# NBVAL_CHECK_OUTPUT
identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
alpha = 0.01  # significance level of the uniformity test
print(f"{'scheme':10s} {'mean pairwise d_q':>18s} {'KS p-value':>11s}  uniform on SO(3) at alpha={alpha}")
ks = {}
for scheme, q in orientations.items():
    ks[scheme] = stats.kstest(quaternion_distance(q, identity).numpy(), haar_distance_cdf).pvalue
    verdict = "yes" if ks[scheme] > alpha else "no"
    print(f"{scheme:10s} {pairwise[scheme].mean():18.2f} {ks[scheme]:11.2f}  {verdict}")

assert ks["uniform"] > alpha, "uniform sampling should pass the Haar KS test"
assert ks["euler"] < alpha, "uniform Euler angles should fail the Haar KS test"
assert abs(pairwise["uniform"].mean() - (np.pi / 2 + 2 / np.pi)) < 0.02

# %% [markdown]
# ## 3 · Projections
# A projection of the map $V$ in orientation $R$ (RELION's matrix of the Euler angles) is the line
# integral $p(x, y) = \int V(R^\top (x, y, z)^\top)\, dz$, computed with the Fourier-slice theorem
# as RELION does, so that a STAR file we write means the same thing in RELION. The paper's
# perturbations, each seeded:
#
# * the clean projections of the whole dataset are normalised to unit variance, and white
#   Gaussian noise of variance $\sigma^2$ is added: $\mathrm{SNR} = 1/\sigma^2$, so $\sigma^2 = 16$
#   is −12 dB;
# * in-plane shifts are drawn from a triangular distribution on $[-t, t]$ pixels in $x$ and $y$
#   (stored as RELION origins: the particle's centre sits at the box centre minus the origin);
# * beyond the paper, a contrast transfer function (CTF) with RELION's formula.
#
# The examples use the first 200 orientations of a uniform draw (normalisation is over those 200).

# %%
examples = sample_orientations(200, "uniform", seed=study.seed)
noise_variance = study.paper_noise_variance  # the paper's noisiest σ²
variants = {
    "clean": {},
    f"noise σ²={noise_variance:g}": {"noise_variance": noise_variance},
    f"shift ±{shift_limit:g} px": {"shift_limit": shift_limit},
    "noise + shift": {"noise_variance": noise_variance, "shift_limit": shift_limit},
    f"CTF {defocus / 1e4:g} µm": {"ctf": True, "defocus_range": (defocus, defocus)},
}
stacks = {
    name: simulate_particles(density, examples, seed=study.seed, progress=False, **kw)
    for name, kw in variants.items()
}

# %%
# NBVAL_CHECK_OUTPUT
clean = stacks["clean"].images
noisy = stacks[f"noise σ²={noise_variance:g}"].images
measured = (noisy - clean).var()
print(f"clean stack {clean.shape}: |mean| < 1e-3: {abs(clean.mean()) < 1e-3}, variance {clean.var():.2f}")
print(f"noise variance within 5 % of {noise_variance:g}: {abs(measured / noise_variance - 1) < 0.05}")
print(f"SNR {snr_db(noise_variance):.1f} dB")
largest = np.abs(stacks["noise + shift"].shifts).max()
print(f"largest shift within ±{shift_limit:g} px: {largest <= shift_limit}")

# %%
n_show = 4
fig, axes = plt.subplots(len(variants), n_show, figsize=(1.9 * n_show, 1.9 * len(variants)))
for row, (name, stack) in zip(axes, stacks.items(), strict=True):
    show_images(row, stack.images[:n_show])
    row[0].set_ylabel(name)
for col in range(n_show):
    rot, tilt, psi = quaternion_to_euler(examples[col]).rad2deg().tolist()
    axes[0, col].set_title(f"rot {rot:.0f}°, tilt {tilt:.0f}°\npsi {psi:.0f}°", fontsize=8)
fig.suptitle(f"Projections of {density.name} ({study.box_size} px)")
fig.tight_layout()
save_figure(
    fig, "projection_examples", profile=profile, map=density.name, box_size=study.box_size,
    noise_variance=noise_variance, shift_limit=shift_limit, defocus=defocus, seed=study.seed,
)
plt.show()

# %% [markdown]
# The CTF multiplies each image's Fourier transform. With RELION's formula,
# $\mathrm{CTF}(u) = -\sin\gamma(u)$, $\gamma = \pi\lambda\Delta f u^2 + \tfrac{\pi}{2} C_s \lambda^3 u^4
# - \arctan\!\big(Q_0/\sqrt{1-Q_0^2}\big)$ (300 kV, $C_s$ = 2.7 mm, $Q_0$ = 0.1): its rings flip the
# contrast of whole frequency bands, which is why the CTF example above looks so different.

# %%
transfer = ctf_2d(study.box_size, density.voxel_size, defocus_u=defocus)  # (D, D), origin at [0, 0]
frequencies = np.fft.fftfreq(study.box_size, d=density.voxel_size)  # 1/Å
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1, 2]})
nyquist = 1 / (2 * density.voxel_size)
left.imshow(np.fft.fftshift(transfer.numpy()), cmap="RdBu_r", vmin=-1, vmax=1, origin="lower",
            extent=(-nyquist, nyquist, -nyquist, nyquist))
left.set_xlabel("$u_x$ (1/Å)")
left.set_ylabel("$u_y$ (1/Å)")
left.set_title(f"CTF, defocus {defocus / 1e4:g} µm")
box = study.box_size
right.plot(frequencies[: box // 2], transfer[0, : box // 2].numpy(), label=f"{box} px grid")
fine = ctf_2d(8 * box, density.voxel_size, defocus_u=defocus)[0, : 4 * box]
right.plot(np.fft.fftfreq(8 * box, d=density.voxel_size)[: 4 * box], fine.numpy(), "k", lw=0.6,
           label="finely sampled")
right.axhline(0, color="grey", lw=0.5)
right.set_xlabel("spatial frequency (1/Å)")
right.set_ylabel("CTF")
right.legend(frameon=False)
right.set_title("radial profile")
fig.tight_layout()
save_figure(
    fig, "ctf_example", profile=profile, voxel_size=density.voxel_size, defocus=defocus, box_size=box
)
plt.show()

# %% [markdown]
# ## 4 · The dataset on disk and its split
# The dataset of `n_projections` clean projections at uniform orientations is written as
# `particles.mrcs` + a RELION 3.1 `particles.star` (so it can be read by RELION), with the exact
# quaternions and the split. It is cached under `data/datasets/`, keyed by a hash of the
# parameters and of the map's content: the later notebooks load it from there, or rebuild it when
# they run alone. Noise and shifts are added on the fly during training, so one clean dataset
# serves every noise level.
#
# As in the paper's Table 1, 50 % of the projections train the distance estimator, 17 % validate
# it and 33 % are kept for testing; the splits are disjoint, so are their pairs. The number of
# distinct pairs in a split of $n$ projections is $n(n-1)/2$.

# %%
dataset = study_dataset(study)
print(f"dataset folder: {portable_path(dataset.path)}")
print(f"map used: {dataset.map_name}")

# %%
# NBVAL_CHECK_OUTPUT
print(f"images {dataset.particles.images.shape}, quaternions {tuple(dataset.quaternions.shape)}")
print(f"{'split':12s} {'projections':>12s} {'share':>6s} {'distinct pairs':>15s}")
for name, indices in dataset.splits.items():
    n = len(indices)
    print(f"{name:12s} {n:12d} {n / study.n_projections:6.0%} {n * (n - 1) // 2:15,d}")
joined = np.concatenate(list(dataset.splits.values()))
print(f"disjoint and complete: {np.array_equal(np.sort(joined), np.arange(study.n_projections))}")

# %% [markdown]
# ## 5 · Results for the figures notebook and the report
# The numbers above and the arrays behind the sampling figure go to `paper/results/PROFILE/`,
# where notebook 99 and the reproduction report (`paper/README.md`) read them.

# %%
bins = np.linspace(0.0, np.pi, 51)
saved = save_results(
    "01_data_generation",
    {
        "map": dataset.map_name,
        "box_size": study.box_size,
        "pixel_size": float(dataset.particles.pixel_size),
        "n_projections": study.n_projections,
        "splits": {name: len(indices) for name, indices in dataset.splits.items()},
        "n_orientations": n_orientations,
        "seed": study.seed,
        "ks_pvalue": ks,
        "mean_pairwise_distance": {scheme: float(d.mean()) for scheme, d in pairwise.items()},
    },
    profile=profile,
    arrays={"distance_bins": bins}
    | {f"directions_{s}": viewing_direction(q).float() for s, q in orientations.items()}
    | {f"distance_density_{s}": np.histogram(d, bins=bins, density=True)[0] for s, d in pairwise.items()},
    map=dataset.map_name,
    map_source=portable_path(density.source),
)
print(f"saved {portable_path(saved)} and its .npz")

# %% [markdown]
# ## What we found
# Rendered from the results just saved (nothing typed by hand).

# %%
splits = {name: len(indices) for name, indices in dataset.splits.items()}
display(Markdown(rf"""
* **The data**: {study.n_projections:,} projections of {dataset.map_name} at {study.box_size} px of
  {dataset.particles.pixel_size:.2f} Å (field of view {study.box_size * dataset.particles.pixel_size:.0f} Å),
  split {" / ".join(f"{n:,} {name}" for name, n in splits.items())}, disjoint.
* **Uniform orientations**: drawn as the package draws them, they pass the test against the Haar
  distribution (KS p = {ks["uniform"]:.2f}; mean pairwise $d_q$ {pairwise["uniform"].mean():.3f} rad
  against $\pi/2 + 2/\pi$ = {np.pi / 2 + 2 / np.pi:.3f}); uniform Euler angles fail it
  (p = {ks["euler"]:.1e}).
* **Noise**: σ² = {noise_variance:g} on unit-variance projections measures {measured:.2f}, an SNR of
  {snr_db(noise_variance):.1f} dB.
"""))
