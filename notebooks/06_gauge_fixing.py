# %% [markdown]
# # 06 · From the projections alone: fixing the gauge
#
# **What it asks.** Notebooks 04 and 05 score every recovery after the best O(4) transform found
# *with the true orientations*. A user has no truth. Can the images themselves fix what the
# distances leave arbitrary, so that the orientations mean what they say, and how close does that
# come to the truth-aligned result?
#
# **What it needs.** Notebook 04's recovered orientations (as recovered, before any alignment:
# exact, perturbed and learned, read from its saved results) and the test projections of notebook
# 01's datasets (cached, or simulated here in a minute or two). It saves the gauge-fixed
# orientations that notebooks 07 and 08 read, and writes them as RELION STAR files.
#

# %%
# Colab only: install the package, and fetch the saved results of notebooks 01-05 (does nothing elsewhere).
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
profile = "default"  # the study (cryoorient/studies/PROFILE.yml): map, box, P, model, noise, seeds
gauge_perturbation = 0.2  # one of notebook 04's perturbation variances, whose orientations get a gauge
device = None  # torch device; None picks CUDA when available

# %%
import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

from cryoorient.alignment import registration_error
from cryoorient.dataset import study_dataset
from cryoorient.gauge import fix_gauge
from cryoorient.paths import data_dir
from cryoorient.plotting import file_tag, grouped_bars, save_figure, use_style
from cryoorient.provenance import portable_path
from cryoorient.relion import write_orientations
from cryoorient.results import load_results, save_results
from cryoorient.study import load_study

use_style()
study = load_study(profile)
print(study)

recovery = load_results("04_orientation_recovery", profile)  # notebook 04's orientations, not recovered again
clean = study_dataset(study, noise_variance=0.0)
test = clean.splits["test"]
q_test = clean.quaternions[test]
tag = file_tag(clean.map_name)
matched = study.matched_noise_variance
chance_error = recovery.values["chance"]["e_or"]


def saved_orientations(name: str) -> torch.Tensor:
    """(P, 4) orientations notebook 04 saved under ``name`` (e.g. ``"noise0/recovered"``), dtype as saved."""
    if name not in recovery.arrays:
        raise KeyError(f"notebook 04's results at profile {profile!r} have no {name!r}: rerun "
                       "notebooks/04_orientation_recovery.py with the parameters this notebook needs")
    return torch.as_tensor(recovery.arrays[name])


print(f"map {clean.map_name}: the {len(test)} test orientations recovered by notebook 04 "
      f"(commit {recovery.provenance['commit']})")

# %% [markdown]
# ## 1 · The gauge, and how the images fix it
# $E_{OR}$ forgives every $T \in O(4)$, but the images do not. With RELION's $A = R(q)$ (volume to
# image coordinates), only two parts of O(4) leave the images' meaning unchanged:
#
# * a right factor, $q \mapsto q\,b$: the whole map rotated, the same images;
# * the mirror, $q \mapsto k\,q\,\bar k$ with $k = (0, 0, 0, 1)$: $A \mapsto JAJ$,
#   $J = \mathrm{diag}(1, 1, -1)$, the same images of the mirror-image map (handedness).
#
# Any other left factor $a$ in $q \mapsto a\,q$, and the *improper* class $q \mapsto a\,\bar q$ (which
# transposes every $A$; it is not the mirror), change what the images say. Recovery from distances
# leaves them arbitrary, so orientations straight out of `recover_orientations` rebuild nothing
# (notebook 07). `gauge.fix_gauge` finds $a$ and the class from the images alone, by common lines:
# for a candidate gauge, every pair of images must agree along the line their orientations
# predict; the mean correlation of those lines over thousands of random pairs is scored on 4,000
# random rotations in both classes, and the best few are refined locally. One pair is unreliable on
# noisy images; three parameters averaged over thousands of pairs are not.
#
# Beside the paper's $E_{OR}$ we report $E_{OR,reg}$, the mean error after the best global
# rotation and mirror only (`alignment.registration_error`), which is what any cryo-EM comparison
# of two orientation sets allows: before gauge fixing it is large even when $E_{OR}$ is tiny; after,
# it should come back to $E_{OR}$. No true orientation enters `fix_gauge`; the truth is used only
# to score its result. At σ² = 16 the gauge is fixed twice, from the noisy images the orientations
# came from and from the clean images of the same particles, to see whether the gauge or the
# orientations limit the result.

# %%
perturbed = {row["variance"]: row for row in recovery.values["perturbed"]}
if gauge_perturbation not in perturbed:
    raise ValueError(f"gauge_perturbation = {gauge_perturbation} is not one of notebook 04's perturbation "
                     f"variances {sorted(perturbed)}")


def test_images(level: float) -> torch.Tensor:
    """The test split's projections at noise variance ``level``."""
    return torch.from_numpy(study_dataset(study, noise_variance=level).particles.images[test])


exact = (saved_orientations("exact/recovered"), recovery.values["exact"]["e_or"])
# (name, σ² of the images the gauge is fixed from, raw orientations, O(4) E_OR, learned level or None)
experiments = [
    ("exact distances", 0.0, *exact, None),
    ("exact distances", study.paper_noise_variance, *exact, None),
    (f"perturbed, variance {gauge_perturbation:g}", 0.0,
     saved_orientations(f"perturbed{gauge_perturbation:g}/recovered"), perturbed[gauge_perturbation]["e_or"],
     None),
]
keys = ["exact_clean", "exact_noisy", "perturbed"]
gauge_levels = {0.0: "learned_clean", matched: "learned_matched", study.paper_noise_variance: "learned_noisy"}
for v in gauge_levels:
    raw = saved_orientations(f"noise{v:g}/recovered")
    experiments.append((f"learned σ² = {v:.3g}", v, raw, recovery.values["learned"][f"{v:g}"]["e_or"], v))
    keys.append(gauge_levels[v])
# the same orientations, the gauge fixed from the clean images of the same particles
experiments.append((f"learned σ² = {study.paper_noise_variance:g}", 0.0, *experiments[-1][2:4], None))
keys.append("learned_noisy_clean_images")
gauge_rows, gauge_fixed = [], {}
for key, (name, image_level, raw, o4_error, level) in zip(keys, experiments, strict=True):
    fixed = fix_gauge(test_images(image_level), raw, seed=study.seed, device=device, progress=False)
    row = {
        "key": key, "experiment": name, "images": image_level, "e_or": o4_error,
        "e_or_reg_raw": registration_error(q_test, raw),
        "e_or_reg": registration_error(q_test, fixed.quaternions.cpu()),
        "gauge_class": fixed.gauge_class, "score": fixed.score, "other_score": fixed.other_score,
        "seconds": fixed.seconds,
    }
    gauge_rows.append(row)
    if level is not None:
        gauge_fixed[level] = fixed.quaternions.cpu()
    print(f"{name:>30}, gauge from σ² = {image_level:<4.3g} images: E_OR {o4_error:.3f} | E_OR,reg "
          f"{row['e_or_reg_raw']:.3f} → {row['e_or_reg']:.4f} rad ({fixed.gauge_class}, common-line "
          f"score {fixed.score:.3f}, other class {fixed.other_score:.3f}, "
          f"{fixed.seconds:.0f} s)")

# %%
# NBVAL_CHECK_OUTPUT
by_key = {r["key"]: r for r in gauge_rows}
exact_clean, exact_noisy, noiseless = by_key["exact_clean"], by_key["exact_noisy"], by_key["learned_clean"]
assert exact_clean["e_or_reg"] < 0.01, f"exact distances, clean images: {exact_clean}"
assert exact_noisy["e_or_reg"] < 0.03, f"exact distances, noisy images: {exact_noisy}"
assert abs(noiseless["e_or_reg"] - noiseless["e_or"]) < 0.05, f"learned noiseless: {noiseless}"
assert all(r["e_or_reg"] <= r["e_or_reg_raw"] for r in gauge_rows), "gauge fixing made something worse"
assert all(r["e_or_reg"] - r["e_or"] < 0.01 for r in gauge_rows), "E_OR,reg > E_OR + 0.01 rad somewhere"
print("without the truth, E_OR,reg after gauge fixing: < 0.01 rad (exact distances, clean images), "
      "< 0.03 rad (noisy images), and within 0.01 rad of the O(4) E_OR in every experiment")

# %%
fig, ax = plt.subplots(figsize=(10, 3.8))
labels = [f"{r['experiment']}\ngauge from σ² = {r['images']:.3g}" for r in gauge_rows]
grouped_bars(ax, labels, {
    r"$E_{OR}$ (O(4), the paper's)": [r["e_or"] for r in gauge_rows],
    r"$E_{OR,reg}$ as recovered": [r["e_or_reg_raw"] for r in gauge_rows],
    r"$E_{OR,reg}$ after gauge fixing": [r["e_or_reg"] for r in gauge_rows],
}, log=True)
ax.set_ylim(1e-4, 5)  # exact distances: E_OR ~1e-15 rad, below the axis
ax.axhline(chance_error, color="0.5", lw=0.8, ls=":", label=f"random orientations, O(4): {chance_error:.2f}")
ax.set_ylabel("mean orientation error (rad)")
ax.legend(fontsize=7, loc="upper left", ncol=2)
ax.set_title(f"{clean.map_name}, P = {len(test)}: the gauge fixed from the images, without the truth")
fig.tight_layout()
save_figure(fig, f"gauge_{tag}", profile=profile, map=clean.map_name, p=len(test), rows=gauge_rows)
plt.show()

# %% [markdown]
# ## 2 · The orientations, for RELION
# The orientations go into RELION particle STAR files beside a copy of the test stack, so
# `relion_reconstruct --i particles.star` (or notebook 07) rebuilds the density from them: the
# truth-aligned ones (the paper's way, notebook 04's) and the gauge-fixed ones (what a user without
# the truth gets).

# %%
for noise in gauge_levels:
    data = study_dataset(study, noise_variance=noise)
    model = recovery.values["learned"][f"{noise:g}"]["model"]
    aligned = saved_orientations(f"noise{noise:g}/aligned")
    for kind, q in (("aligned", aligned), ("gauge_fixed", gauge_fixed[noise])):
        folder = data_dir() / "recovered" / f"{data.path.name}_{model}_{kind}"
        star = write_orientations(folder, data.particles.images[test], q, data.particles.pixel_size)
        print(f"σ² = {noise:g}, {kind}: {star.relative_to(data_dir())}")

# %% [markdown]
# ## 3 · Results for the notebooks that follow, the figures and the report
# Every experiment's errors before and after, its gauge class and scores, and the gauge-fixed
# orientations of the learned levels (with the estimators they came from) go to
# `paper/results/PROFILE/06_gauge_fixing.json` and `.npz`.

# %%
models = {f"{noise:g}": recovery.values["learned"][f"{noise:g}"]["model"] for noise in gauge_fixed}
saved = save_results(
    "06_gauge_fixing", {"map": clean.map_name, "p": len(test), "gauge": gauge_rows, "models": models},
    profile=profile, arrays={f"noise{noise:g}/gauge_fixed": q for noise, q in gauge_fixed.items()},
    map=clean.map_name,
)
print(f"saved {portable_path(saved)} and its .npz")

# %% [markdown]
# ## What we found
# Rendered from the results (nothing typed by hand).

# %%
display(Markdown("\n".join(
    f"* {r['experiment']}, gauge from σ² = {r['images']:.3g} images: $E_{{OR,reg}}$ "
    f"{r['e_or_reg_raw']:.3f} rad as recovered → {r['e_or_reg']:.4f} rad gauge-fixed ($E_{{OR}}$ with "
    f"the truth's O(4): {r['e_or']:.3g} rad; {r['seconds']:.0f} s)"
    for r in gauge_rows
)))
