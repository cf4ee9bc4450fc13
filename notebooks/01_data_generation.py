# %% [markdown]
# # 01 · Data generation: orientations and how they are distributed
#
# Single-particle cryo-EM records many projections of one protein, each in an unknown
# orientation. The paper describes an orientation by a unit quaternion
# $q = (w, x, y, z)$ (scalar first; $q$ and $-q$ are the same orientation) and measures how far
# apart two orientations are by the geodesic distance on SO(3)
#
# $$d_q(q_i, q_j) = 2 \arccos \left| \langle q_i, q_j \rangle \right| \in [0, \pi],$$
#
# the angle of the rotation that takes one orientation to the other. Step (i) of the method
# learns to predict $d_q$ from two projections; which distances it sees during training depends
# on how the orientations were drawn. This notebook draws orientations under the four schemes
# of the paper's appendix and shows the projection directions and the distances they induce:
#
# * **uniform**: uniform (Haar) on SO(3), the paper's main setting;
# * **euler**: uniform on the Euler angles, which over-samples the poles;
# * **half** and **quarter**: uniform orientations whose projection directions cover only half or a
#   quarter of the sphere (the appendix's restricted coverage).
#
# Euler angles follow RELION's ZYZ convention (rot, tilt, psi); the projection direction of an
# orientation is $(\sin\mathrm{tilt}\cos\mathrm{rot}, \sin\mathrm{tilt}\sin\mathrm{rot}, \cos\mathrm{tilt})$.

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
profile = "default"  # parameter profile, recorded with every figure
n_orientations = 2000  # orientations drawn per sampling scheme
seed = 0  # seed of every random draw in this notebook

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats

from cryoorient import (
    SAMPLING_SCHEMES,
    haar_distance_cdf,
    quaternion_distance,
    quaternion_distance_matrix,
    quaternion_to_euler,
    sample_orientations,
    viewing_direction,
)
from cryoorient.plotting import plot_directions, plot_distance_histogram, save_figure, use_style

use_style()

# %% [markdown]
# ## Drawing orientations
# Each scheme draws `n_orientations` unit quaternions from the same seed. The tilt range shows
# the coverage: the half and quarter schemes never tilt past 90°.

# %%
# NBVAL_CHECK_OUTPUT
orientations = {scheme: sample_orientations(n_orientations, scheme, seed=seed) for scheme in SAMPLING_SCHEMES}
for scheme, q in orientations.items():
    rot, tilt, psi = quaternion_to_euler(q).rad2deg().unbind(-1)
    rot = rot % 360
    unit = torch.allclose(q.norm(dim=-1), torch.ones(len(q), dtype=q.dtype))
    print(
        f"{scheme:8s} {tuple(q.shape)}  unit norm: {unit}  "
        f"tilt in [{tilt.min():.0f}°, {tilt.max():.0f}°]  rot in [{rot.min():.0f}°, {rot.max():.0f}°]"
    )

# %% [markdown]
# ## Projection directions and pairwise distances
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

fig = plt.figure(figsize=(12, 5.2))
for k, scheme in enumerate(SAMPLING_SCHEMES):
    ax = fig.add_subplot(2, 4, k + 1, projection="mollweide")
    plot_directions(ax, viewing_direction(orientations[scheme]), color=f"C{k}")
    ax.set_title(f"{scheme}: projection directions")
    ax = fig.add_subplot(2, 4, k + 5)
    plot_distance_histogram(ax, pairwise[scheme], color=f"C{k}")
    ax.set_title(f"{scheme}: pairwise $d_q$")
fig.suptitle(f"Orientation sampling schemes ({n_orientations} orientations each, seed {seed})")
fig.tight_layout()
save_figure(fig, "orientation_sampling", profile=profile, n_orientations=n_orientations, seed=seed)
plt.show()

# %% [markdown]
# ## Is "uniform" really uniform on SO(3)?
# If the orientations are Haar-distributed, the distance from any fixed orientation (here the
# identity) to them follows the density $(1-\cos\theta)/\pi$, whose cumulative distribution is
# $(\theta - \sin\theta)/\pi$. A Kolmogorov–Smirnov test compares the two; sampling uniformly on
# the Euler angles instead fails it, which is the appendix's point. The table also gives the mean
# pairwise distance; for Haar orientations it is $\pi/2 + 2/\pi \approx 2.207$ rad.

# %%
# NBVAL_CHECK_OUTPUT
identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
alpha = 0.01  # significance level of the uniformity test
print(f"{'scheme':8s} {'mean pairwise d_q':>18s} {'KS p-value':>11s}  uniform on SO(3) at alpha={alpha}")
ks = {}
for scheme, q in orientations.items():
    ks[scheme] = stats.kstest(quaternion_distance(q, identity).numpy(), haar_distance_cdf).pvalue
    verdict = "yes" if ks[scheme] > alpha else "no"
    print(f"{scheme:8s} {pairwise[scheme].mean():18.2f} {ks[scheme]:11.2f}  {verdict}")

assert ks["uniform"] > alpha, "uniform sampling should pass the Haar KS test"
assert ks["euler"] < alpha, "uniform Euler angles should fail the Haar KS test"
assert abs(pairwise["uniform"].mean() - (np.pi / 2 + 2 / np.pi)) < 0.02
