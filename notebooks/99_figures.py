# %% [markdown]
# # 99 · The paper's figures, and the reproduction report
#
# The last chapter, whatever studies come before it (hence 99). Notebooks 01–11 each end by saving
# what they measured — numbers, and the arrays behind their plots — under
# `paper/results/PROFILE/`. This notebook trains nothing and recomputes nothing: it
# reads those results and assembles the multi-panel figures of the paper (method overview aside),
# then writes the claim-by-claim report `paper/README.md`, `paper/numbers.json` and the LaTeX
# macros `paper/numbers.tex` that `paper/main.tex` uses.
#
# `figures/README.md` maps every paper figure to the files made here and by notebooks 01–11, with
# what differs from the paper. Each figure's JSON sidecar records the profile, map and commit of
# the runs it was drawn from.

# %%
# Colab only: install the package and fetch the repository's saved results (does nothing elsewhere).
import os
import subprocess
import sys

REPOSITORY = "https://github.com/cryoorient/cryoorient"
if "google.colab" in sys.modules:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"cryoorient @ git+{REPOSITORY}"], check=True
    )
    subprocess.run(["git", "clone", "-q", "--depth", "1", REPOSITORY, "/content/cryoorient"], check=False)
    os.environ.setdefault("CRYOORIENT_PAPER", "/content/cryoorient/paper")

# %% tags=["parameters"]
profile = "default"  # profile whose saved results are drawn (notebooks 01-08 must have run at it)

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from cryoorient.claims import load_claims
from cryoorient.geometry import viewing_direction
from cryoorient.paths import paper_dir
from cryoorient.plotting import (
    noise_axis,
    plot_directions,
    plot_distance_agreement,
    plot_error_histogram,
    plot_error_vs_noise,
    plot_fsc,
    plot_learning_curves,
    plot_loss_history,
    plot_perturbation_sweep,
    plot_squared_errors,
    save_figure,
    show_images,
    use_style,
)
from cryoorient.report import numbers_document, readme_table, write_report
from cryoorient.results import load_results

use_style()

sampling = load_results("01_data_generation", profile)
learning = load_results("02_distance_learning", profile)
accuracy = load_results("03_distance_accuracy", profile)
recovery = load_results("04_orientation_recovery", profile)
reconstruction = load_results("07_reconstruction", profile)
tag = recovery.values["map"].replace(":", "-").replace("/", "-")
made = []


def stamp(name: str, *sources) -> None:
    """Save the current figure with the profile, maps and commits of the results it draws."""
    runs = {r.notebook: {"map": r.values.get("map"), "commit": r.provenance["commit"]} for r in sources}
    maps = sorted({str(run["map"]) for run in runs.values()})
    save_figure(plt.gcf(), name, profile=profile, map=", ".join(maps), drawn_from=runs)
    made.append(name)


print(f"profile {profile}: results of 01-07 found; map {recovery.values['map']}")

# %% [markdown]
# ## Orientation sampling (paper appendix)
# Projection directions of four sampling schemes and the distribution of pairwise distances
# they induce, against the density $(1-\cos\theta)/\pi$ of uniformly random orientations.

# %%
schemes = ["uniform", "euler", "half", "quarter"]
bins = sampling.arrays["distance_bins"]
fig = plt.figure(figsize=(13, 3.2))
for k, scheme in enumerate(schemes):
    ax = fig.add_subplot(1, 5, k + 1, projection="mollweide")
    plot_directions(ax, sampling.arrays[f"directions_{scheme}"][:1000], color=f"C{k}")
    ax.set_title(f"({'abcd'[k]}) {scheme}", fontsize=9)
    if k:
        ax.set_ylabel("")
ax = fig.add_subplot(1, 5, 5)
centres = (bins[:-1] + bins[1:]) / 2
for k, scheme in enumerate(schemes):
    label = f"{scheme} (KS p {sampling.values['ks_pvalue'][scheme]:.2f})"
    ax.plot(centres, sampling.arrays[f"distance_density_{scheme}"], color=f"C{k}", label=label)
theta = np.linspace(0, np.pi, 200)
ax.plot(theta, (1 - np.cos(theta)) / np.pi, "k--", lw=1, label="uniform SO(3)")
ax.set_xlabel("$d_q$ (rad)")
ax.set_ylabel("density")
ax.set_title("(e) pairwise distances", fontsize=9)
ax.legend(fontsize=6, frameon=False)
fig.tight_layout()
stamp("fig_sampling", sampling)
plt.show()

# %% [markdown]
# ## Distance learning (paper: learning curves and $\hat d_p$ against $d_q$)
# (a) $L_{DE}$ per epoch; (b) the learned distance against the true one on test pairs with
# uniform $d_q$; (c) the Euclidean distance between the images, affinely fitted, on the same
# kind of pairs (paper appendix).

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
a = learning.arrays
plot_learning_curves(axes[0], a["epoch"], a["train_loss"], a["validation_loss"])
axes[0].set_title(f"(a) learning curves, {learning.values['training_minutes']:.1f} min", fontsize=9)
t = learning.values["test_uniform"]
plot_distance_agreement(axes[1], a["test_d_q"], a["test_d_p"], hexbin=True)
axes[1].set_title(f"(b) learned: RMSE {t['rmse']:.3f} rad, r = {t['pearson']:.3f}", fontsize=9)
axes[1].set_ylabel(r"$\hat d_p$ (rad)")
e = accuracy.values["euclidean"]
plot_distance_agreement(axes[2], accuracy.arrays["d_q"], accuracy.arrays["euclidean"], color="C1")
axes[2].set_title(f"(c) Euclidean: RMSE {e['rmse']:.3f} rad, r = {e['pearson']:.3f}", fontsize=9)
axes[2].set_ylabel("affinely fitted Euclidean distance (rad)")
fig.tight_layout()
stamp(f"fig_distance_learning_{tag}", learning, accuracy)
plt.show()

# %% [markdown]
# ## Sensitivity and ablations (paper: $L_{DE}$ box plots)
# Per-pair squared errors on test pairs of the small grid models of notebook 03: trained and
# tested with (a) in-plane shifts and (b) noise; (c) the feature distance $d_f$ and (d) the
# feature dimension $n_f$.

# %%
v = accuracy.values
panels = [
    ("(a) shifts", v["shift_labels"]),
    ("(b) noise", v["noise_labels"]),
    ("(c) feature distance $d_f$", v["distance_labels"]),
    ("(d) feature dimension $n_f$", v["feature_labels"]),
]
fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), sharey=True)
for ax, (title, labels) in zip(axes, panels, strict=True):
    named = [k.replace("shift ±0 px", "σ² = 0") if "noise" in title else k for k in labels]
    ticks = [k.split("= ")[-1].replace("shift ", "") for k in named]
    errors = {t: accuracy.arrays[f"grid_sq_error/{k}"] for t, k in zip(ticks, labels, strict=True)}
    plot_squared_errors(ax, errors)
    ax.set_title(title, fontsize=9)
    if ax is not axes[0]:
        ax.set_ylabel("")
s = v["grid_sizes"]
fig.suptitle(f"{v['map']}: {s['n_projections']} projections, {s['epochs']} epochs per model", fontsize=9)
fig.tight_layout()
stamp(f"fig_sensitivity_{tag}", accuracy)
plt.show()

# %% [markdown]
# ## Orientation recovery (paper: perturbed distances; $L_{DE}$, $L_{OR}$, $E_{OR}$ panels)
# (a) $E_{OR}$ (mean) and the median error (the statistic of the paper's curve) from exact distances
# plus errors of growing variance, for Haar-uniform orientations over all of SO(3) (ours) and for
# Euler angles drawn uniformly over half coverage (the paper's protocol); (b) per-pair $L_{DE}$ of
# the distance estimators on training and validation pairs; (c) $L_{OR}$ during recovery from
# learned distances; (d) the per-projection errors after alignment, with $E_{OR}$.

# %%
r = recovery.values
noisy = "16" if "16" in r["learned"] else max(r["learned"], key=float)  # the paper's noisiest σ²
fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
sweep = r["perturbed"]
variances = [x["variance"] for x in sweep]
plot_perturbation_sweep(axes[0], variances, [x["e_or"] for x in sweep], [x["median"] for x in sweep],
                        label="full", color="C0")
half = r["perturbed_half"]  # the paper's protocol: uniform Euler angles over half coverage
plot_perturbation_sweep(axes[0], variances, [x["e_or"] for x in half], [x["median"] for x in half],
                        label="half (paper)", color="C1")
axes[0].set_title("(a) perturbed distances", fontsize=9)
keys = ["0", noisy]
boxes = {
    f"σ²={k}\n{split[:5]}": recovery.arrays[f"noise{k}/sq_error_{split}"]
    for k in keys
    for split in ("train", "validation")
}
plot_squared_errors(axes[1], boxes)
axes[1].set_title(r"(b) $L_{DE}$ per pair", fontsize=9)
for k, colour in zip(keys, ("C0", "C3"), strict=True):
    plot_loss_history(axes[2], recovery.arrays[f"noise{k}/loss_history"], color=colour, label=f"σ² = {k}")
    plot_error_histogram(axes[3], recovery.arrays[f"noise{k}/errors"], label=f"σ² = {k}", color=colour)
axes[2].legend(fontsize=7)
axes[2].set_title(r"(c) $L_{OR}$ from learned distances", fontsize=9)
axes[3].set_title(f"(d) errors of the {r['p']} test orientations", fontsize=9)
fig.tight_layout()
stamp(f"fig_recovery_{tag}", recovery)
plt.show()

# %% [markdown]
# ## The noise study (paper: noise figure)
# How the method degrades with noise, one estimator per σ² (notebook 02's curriculum): (a) the
# distance estimator's error on test pairs (RMSE and MAE, the paper's $L_{DE}$), (b) $E_{OR}$ (mean)
# and the median error, against the chance level of random orientations, (c) the FSC-0.5
# resolution of the map reconstructed from the noisy test projections with their recovered
# orientations, beside the ceiling that the same noisy projections reach with their true
# orientations (the paper's own value was measured from the noiseless projections). The dotted line
# is the paper's σ² = 16 matched in integrated SNR; the paper's values at its σ² = 16 (116 px, read
# from `cryoorient/claims.yml`) are drawn there.

# %%
paper_value = {c.key: c.paper for c in load_claims().claims}  # the paper's values, from claims.yml
study = learning.values["noise_study"]
levels = sorted(study, key=float)
x = [float(k) for k in levels]
matched = r["matched_noise_variance"]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
axes[0].plot(x, [study[k]["rmse"] for k in levels], "o-", label="RMSE")
axes[0].plot(x, [study[k]["mae"] for k in levels], "s--", label="MAE")
axes[0].set_ylabel(r"$|\hat d_p - d_q|$ on test pairs (rad)")
axes[0].set_title("(a) distance estimation", fontsize=9)
rec = {k: r["learned"][k] for k in levels}
plot_error_vs_noise(
    axes[1], x, [rec[k]["e_or"] for k in levels], [rec[k]["median"] for k in levels],
    chance=r["chance"]["e_or"], matched=matched, paper=paper_value["eor_learned_matched"],
)
axes[1].set_title("(b) orientation recovery", fontsize=9)
fsc = reconstruction.values["noise_study"]
axes[2].plot(x, [fsc[k] for k in levels], "o-", label="FSC 0.5 vs the true map")
# the ceiling: the same noisy images back-projected with their true orientations (notebook 07)
ceiling = {float(k): v for k, v in reconstruction.values["ceiling"].items()}
ceiling[0.0] = reconstruction.values["resolution_05"]["true"]
axes[2].plot(sorted(ceiling), [ceiling[v] for v in sorted(ceiling)], "^:", color="0.35", ms=5,
             label="same images, true orientations (ceiling)")
axes[2].axhline(reconstruction.values["nyquist"], color="0.5", lw=0.8, ls=":", label="Nyquist")
# the paper's value came from the noiseless projections: beside it, ours measured the same way
axes[2].plot([matched], [reconstruction.values["resolution_matched_paper_protocol"]], "D", color="C1", ms=6,
             label="ours the paper's way (noiseless images)")
axes[2].plot([matched], [paper_value["res_matched"]], "k*", ms=9, label="paper, σ² = 16 (noiseless images)")
axes[2].set_ylabel("resolution (Å)")
axes[2].set_title("(c) reconstruction from the noisy projections", fontsize=9)
for ax in axes[::2]:  # panel (b) draws its own
    ax.axvline(matched, color="C3", lw=0.8, ls=":")
    noise_axis(ax)
    ax.set_xlabel("noise variance σ² (per pixel)")
    ax.legend(fontsize=7)
fig.suptitle(f"{r['map']}: the noise study; σ² = {matched:.2f} (red) is the paper's σ² = 16 in "
             "integrated SNR", fontsize=9)
fig.tight_layout()
stamp(f"fig_noise_{tag}", learning, recovery, reconstruction)
plt.show()

# %% [markdown]
# ## Alignment (paper appendix: true and recovered orientations)
# Projection directions of the true orientations and of the recovered ones after the O(4)
# alignment, coloured by each projection's error $d_q(q_i, T\hat q_i)$.

# %%
fig = plt.figure(figsize=(13, 3.4))
panels = [("(a) true", recovery.arrays["true"], None)] + [
    (f"({'bc'[i]}) recovered, σ² = {k}, aligned", recovery.arrays[f"noise{k}/aligned"],
     recovery.arrays[f"noise{k}/errors"])
    for i, k in enumerate(keys)
]
for i, (title, q, errors) in enumerate(panels):
    ax = fig.add_subplot(1, 3, i + 1, projection="mollweide")
    style = {"color": "k"} if errors is None else {"c": errors[:600], "cmap": "viridis", "vmin": 0,
                                                   "vmax": np.pi}
    plot_directions(ax, viewing_direction(torch.from_numpy(q[:600])), s=5, alpha=0.8, **style)
    ax.set_title(title, fontsize=9)
    if i:
        ax.set_ylabel("")
fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(0, np.pi), cmap="viridis"), ax=fig.axes, shrink=0.6,
             label="error (rad)")
stamp(f"fig_alignment_{tag}", recovery)
plt.show()

# %% [markdown]
# ## Reconstruction and resolution (paper: reconstructions and FSC)
# Central z slices of the ground truth and of the reconstructions from true, random and recovered
# orientations, and their Fourier shell correlation with the ground truth.

# %%
c = reconstruction.values
labels = ["ground truth"] + c["shown"]
fig = plt.figure(figsize=(2.2 * len(labels), 5.6))
titles = [
    name.replace(", σ²", ",\nσ²") + ("" if name == "ground truth" else f"\n{c['resolution_05'][name]:.1f} Å")
    for name in labels
]
slices = np.stack([reconstruction.arrays[f"slice/{name}"] for name in labels])
show_images([fig.add_subplot(2, len(labels), i + 1) for i in range(len(labels))], slices, titles)
for ax in fig.axes:
    ax.title.set_fontsize(7)
ax = fig.add_subplot(2, 1, 2)
frequency = reconstruction.arrays["frequency"]
fsc_curves = {name: (frequency, reconstruction.arrays[f"fsc/{name}"]) for name in c["labels"]}
plot_fsc(ax, fsc_curves, c["resolution_05"], fontsize=7, loc="center left", bbox_to_anchor=(1.005, 0.5))
fig.suptitle(f"{c['map']}: {c['p']} projections, {c['method']}; Nyquist {c['nyquist']:.2f} Å", fontsize=9)
fig.tight_layout()
stamp(f"fig_reconstruction_{tag}", reconstruction)
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print("figures assembled:", ", ".join(name.removesuffix(f"_{tag}") for name in made))

# %% [markdown]
# ## The reproduction report
# Every saved profile's numbers go to `paper/numbers.json`, the report `paper/README.md` and the
# macros `paper/numbers.tex`. The table below is the one `make figures` also copies into the
# repository's README. Verdicts compare numbers only; the report lists what limits each
# comparison (image size, hardware).

# %%
written = write_report()
print("written:", ", ".join(str(p.relative_to(paper_dir())) for p in written))

# %%
# NBVAL_IGNORE_OUTPUT
display(Markdown(readme_table(numbers_document())))
