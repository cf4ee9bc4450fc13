# %% [markdown]
# # 08 · Learned distances against common lines
#
# **What it asks.** The paper did not compare with the standard ab-initio route. Given the same
# test projections, how does the learned method (distances, recovery, gauge fixed from the images)
# compare with common lines, on the raw projections and on class averages, at each noise level?
#
# **What it needs.** The estimators of notebook 02 (cached or shipped), notebook 04's chance level
# (its saved results), the test projections of notebook 01's datasets, and ASPIRE (the
# `notebooks` extra, which this notebook's Colab cell installs). The comparison is cached in
# `data/baselines/` (its time the first time: README, the Colab-like table); where ASPIRE is missing the
# notebook shows the committed numbers.
#

# %%
# Colab only: install the package with ASPIRE (the notebooks extra), and fetch the saved results (does
# nothing elsewhere).
import os
import subprocess
import sys

REPOSITORY = "https://github.com/cryoorient/cryoorient"
if "google.colab" in sys.modules:
    package = f"cryoorient[notebooks] @ git+{REPOSITORY}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)
    subprocess.run(["git", "clone", "-q", "--depth", "1", REPOSITORY, "/content/cryoorient"], check=False)
    os.environ.setdefault("CRYOORIENT_PAPER", "/content/cryoorient/paper")

# %% tags=["parameters"]
profile = "default"  # the study (cryoorient/studies/PROFILE.yml): map, box, P, model, noise, seeds
common_lines_levels = [0.0, 1.0, 4.0, 16.0]  # σ² of the comparison
common_lines_size = 200  # projections both methods recover (and class averages made), P
common_lines_box = 32  # px: common lines run on Fourier-downsampled images
device = None  # torch device for the network; None picks CUDA when available

# %%
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from cryoorient.baseline_comparison import METHODS, compare_with_common_lines, comparison_subset
from cryoorient.common_lines import ASPIRE_PIN, aspire_version
from cryoorient.dataset import study_dataset
from cryoorient.model_cache import model_config, noise_curriculum
from cryoorient.plotting import file_tag, save_figure, use_style
from cryoorient.provenance import portable_path
from cryoorient.results import ResultsError, load_results, save_results
from cryoorient.study import load_study

use_style()
study = load_study(profile)
print(study)

clean = study_dataset(study, noise_variance=0.0)
test = clean.splits["test"]
tag = file_tag(clean.map_name)
chance_error = load_results("04_orientation_recovery", profile).values["chance"]["e_or"]
config = model_config(study.model, seed=study.seed)
image_size = config.image_size
chain = noise_curriculum(clean, config, [0.0, *study.noise_study_levels], epochs=study.curriculum_epochs,
                         learning_rate=study.curriculum_learning_rate, device=device)

# ## 1 · The comparison
# The paper did not compare with the standard ab-initio route, **common lines**: two projections
# of one map share a central line in Fourier space, and orientations consistent with every pair's
# line can be found by synchronization, with no training. We run ASPIRE's `CLSyncVoting`
# (`cryoorient.common_lines`) beside the learned method on the **same** test projections (a
# seeded subset of P = 200, the same noise draw), at σ² = 0, 1, 4 and 16:
#
# * **learned**: distances from that level's estimator → recovery → the gauge fixed from the
#   images (notebook 06), so that both methods end where a user without the truth would;
# * **common lines** on the projections, Fourier-downsampled to 32 px;
# * **class averages + common lines** (noisy levels), as practitioners do at low SNR: ASPIRE
#   classifies the whole test split (1,650 images) by rotation-invariant features, averages 10
#   aligned neighbours per class, and common lines orient 200 of the averages; each is scored
#   against its reference image's true orientation (other images than the subset, as many).
#
# Both error measures: the paper's $E_{OR}$ (O(4) alignment with the truth) and $E_{OR,reg}$
# (a global rotation and the mirror only; ASPIRE's `mean_aligned_angular_distance`), means and
# medians. Times are wall times on this machine, the three methods run one after the other; the
# estimator's training (notebook 02) is listed apart. The results are cached (`data/baselines/`);
# where ASPIRE cannot be installed the section shows the committed numbers.

# %%
subset = comparison_subset(test, common_lines_size, seed=study.seed)
missing = [v for v in common_lines_levels if v not in chain]
if missing:
    raise ValueError(f"common_lines_levels {missing} have no estimator; choose among {sorted(chain)}")
if aspire_version() is not None:
    comparison = {
        f"{noise:g}": compare_with_common_lines(
            chain[noise].model, chain[noise].folder.name, study_dataset(study, noise_variance=noise),
            subset, test, image_size,
            class_averaging=noise > 0, box_size=common_lines_box, seed=study.seed, device=device,
        )
        for noise in common_lines_levels
    }
    comparison_origin = f"computed here with ASPIRE {aspire_version()}"
else:
    try:
        committed = load_results("08_common_lines", profile)
        saved_levels = committed.values["common_lines"]["levels"]  # saved with sorted keys: reorder
        comparison = {
            level: {m: saved_levels[level][m] for m in METHODS if m in saved_levels[level]}
            for level in sorted(saved_levels, key=float)
        }
    except (ResultsError, KeyError) as error:
        raise RuntimeError(
            f"ASPIRE is not installed (pip install aspire=={ASPIRE_PIN}) and no committed comparison "
            f"for profile {profile!r} was found: {error}"
        ) from error
    commit = committed.provenance.get("commit")
    comparison_origin = f"ASPIRE is not installed here: the committed numbers ({commit})"
stage_seconds = {v: trained.history[-1]["seconds"] for v, trained in chain.items()}
training_minutes = {f"{v:g}": sum(t for u, t in stage_seconds.items() if u <= v) / 60 for v in chain}
print(f"P = {len(subset)} test projections; {comparison_origin}")
print(f"{'σ²':>5}  {'method':<41} {'E_OR mean / median':>19}  {'E_OR,reg mean / median':>23}  {'time':>7}")
for level, rows in comparison.items():
    for method, row in rows.items():
        print(f"{level:>5}  {METHODS[method]:<41} {row['e_or']:8.3f} / {row['e_or_median']:.3f}  "
              f"{row['e_reg']:12.3f} / {row['e_reg_median']:.3f}  {row['seconds']:6.0f} s")
    print(f"{'':>5}  (training the estimators up to σ² = {level}: {training_minutes[level]:.0f} min, once)")

# %%
# NBVAL_CHECK_OUTPUT
clean_lines = comparison["0"]["common_lines"]["e_reg"]
assert clean_lines < 0.05, f"common lines, clean projections: E_OR,reg {clean_lines:.3f} rad, expected < 0.05"
learned_reg = {level: rows["learned"]["e_reg"] for level, rows in comparison.items()}
assert max(learned_reg.values()) < 1.0, f"the learned method failed somewhere: E_OR,reg {learned_reg}"
print("common lines on clean projections: E_OR,reg below 0.05 rad; learned distances below 1 rad everywhere")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
x = [float(v) for v in comparison]
measures = [("e_or", "$E_{OR}$ (O(4), the paper's)"), ("e_reg", "$E_{OR,reg}$ (rotation + mirror)")]
for ax, (measure, label) in zip(axes, measures, strict=True):
    for (method, name), marker in zip(METHODS.items(), ("o-", "s-", "^-"), strict=True):
        points = [(v, comparison[f"{v:g}"][method][measure]) for v in x if method in comparison[f"{v:g}"]]
        ax.plot(*np.array(points).T, marker, label=name)
    ax.axhline(chance_error, color="0.5", lw=0.8, ls=":", label=f"random, O(4): {chance_error:.2f}")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel(f"noise variance σ² (per pixel, {study.box_size} px images)")
    ax.set_title(label, fontsize=9)
axes[0].set_ylabel("mean orientation error (rad)")
axes[0].legend(fontsize=7)
fig.suptitle(f"{clean.map_name}, the same P = {len(subset)} test projections: learned vs common lines")
fig.tight_layout()
save_figure(fig, f"common_lines_{tag}", profile=profile, map=clean.map_name, p=len(subset),
            comparison=comparison, origin=comparison_origin)
plt.show()

# %%
for level, rows in comparison.items():
    best = min(rows, key=lambda m: rows[m]["e_reg"])
    others = ", ".join(f"{m.replace('_', ' ')} {r['e_reg']:.3f}" for m, r in rows.items() if m != best)
    name = best.replace("_", " ")
    print(f"σ² = {level:>2}: lowest E_OR,reg {name} ({rows[best]['e_reg']:.3f} rad; {others})")

# %% [markdown]
# ## 2 · Results for the figures notebook and the report
# The table above goes to `paper/results/PROFILE/08_common_lines.json` (the report renders it).

# %%
values = {
    "map": clean.map_name,
    "common_lines": {
        "levels": comparison, "p": len(subset), "box_size": common_lines_box, "origin": comparison_origin,
        "aspire": aspire_version() or f"not installed (committed numbers made with {ASPIRE_PIN})",
        "training_minutes": training_minutes,
    },
}
saved = save_results("08_common_lines", values, profile=profile, map=clean.map_name)
print(f"saved {portable_path(saved)} and its .npz")

# %% [markdown]
# ## What we found
# Rendered from the results (nothing typed by hand): the lowest $E_{OR,reg}$, what a user without
# the truth gets, at each level.

# %%
display(Markdown("\n".join(
    f"* σ² = {level}: " + ", ".join(
        f"{METHODS[m]} {r['e_reg']:.3f} rad" for m, r in sorted(rows.items(), key=lambda mr: mr[1]["e_reg"])
    )
    for level, rows in comparison.items()
)))
