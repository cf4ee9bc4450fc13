# %% [markdown]
# # 11 · With the map: projection matching, and refinement from our answer
#
# **What it asks.** The estimator of notebooks 02-08 is trained on projections of the very map
# whose images it then orients. Anyone holding that map would orient the images by *projection
# matching* against it, with no training at all. Does the learned method beat that baseline
# anywhere? And since every real pipeline refines its ab-initio answer against the map the images
# themselves give, what does the learned answer refine to, beside common lines and random
# orientations refined the same way?
#
# **What it needs.** The estimators of notebook 02 (shipped), the test projections of notebook
# 01's datasets and the true map; ASPIRE for the common-lines rows (the `notebooks` extra, which
# this notebook's Colab cell installs). Section 1 runs the contest here at a small size (by default
# 100 test projections at the SNR-matched σ², about two minutes on two CPU cores); section 2 reads
# the full study, `benchmarks/who_wins.py`, from its committed run (its size and time are printed
# there).
#
# The contenders (`cryoorient.contest`), all on the same test projections:
#
# * **projection matching against the true map** (`cryoorient.matching`): every image against the
#   projections of a grid of orientations (1,000 directions × 48 in-plane angles, 7.5° apart),
#   compared by their normalised cross-correlation up to a quarter of the sampling rate, then a
#   local search to Nyquist on a shrinking step. The correlation is what a Gaussian likelihood
#   gives when each image has its own scale and offset, and needs no noise estimate;
# * **learned distances** → recovery → gauge fixed from the images (notebooks 04 and 06);
# * **common lines** (ASPIRE, `n_theta` 360, no shift search: the images are centred) and common
#   lines on **class averages** (full study only);
# * the same **refinement** from the learned, the common-lines and **random** orientations:
#   split the images into two halves, reconstruct a map from each, match each half against its
#   own map up to the half maps' FSC-0.143 resolution, and repeat until the orientations stop
#   changing (`cryoorient.refinement`). No truth enters it.
#
# Every contender gets the same scores: $E_{OR}$ (the paper's O(4) alignment), $E_{OR,reg}$ (a
# global rotation and the mirror only: what a user without the truth meets), their medians, the
# share of images within 5° and 10°, the wall time (training apart), and the FSC-0.5 resolution
# against the true map of the map the images give with those orientations. The ceiling beside
# them is the map from the same images with their true orientations.

# %%
# Colab only: install the package with ASPIRE (the notebooks extra), and fetch the committed study
# (does nothing elsewhere).
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
contest_levels = ["matched"]  # σ² of section 1 (numbers, or "matched" for the SNR-matched level)
contest_size = 100  # test projections every contender orients in section 1, P
contest_rounds = 3  # refinement rounds at most
# contenders of section 1 (cryoorient.contest.CONTENDERS); common_lines needs ASPIRE
contest_contenders = ["truth", "matching", "learned", "learned+refined", "random+refined"]
device = None  # torch device; None picks CUDA when available

# %%
import json

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from cryoorient.common_lines import aspire_version
from cryoorient.contest import CONTENDERS, ContestSettings, contest_level, contest_verdict, estimator_level
from cryoorient.dataset import study_dataset
from cryoorient.density import load_map
from cryoorient.model_cache import model_config, noise_curriculum
from cryoorient.paths import paper_dir
from cryoorient.plotting import file_tag, plot_contest, save_figure, use_style
from cryoorient.provenance import portable_path
from cryoorient.results import save_results
from cryoorient.study import load_study

use_style()
study = load_study(profile)
print(study)

clean = study_dataset(study, noise_variance=0.0)
tag = file_tag(clean.map_name)
truth_map = load_map(study.map_name, box_size=study.box_size, voxel_size=study.voxel_size)
config = model_config(study.model, seed=study.seed)
chain = noise_curriculum(clean, config, [0.0, *study.noise_study_levels], epochs=study.curriculum_epochs,
                         learning_rate=study.curriculum_learning_rate, device=device)


def level_of(asked: float | str) -> float:
    """The estimator's σ² for a level asked as a number or as "matched"."""
    return estimator_level(asked, chain, study.matched_noise_variance)


if "common_lines" in contest_contenders and aspire_version() is None:
    raise RuntimeError("contest_contenders asks for common_lines, which needs ASPIRE: "
                       "pip install 'cryoorient[notebooks]', or leave common_lines out")


def show_rows(levels: dict) -> None:
    """One line per contender and level: errors, share within 5° and 10°, map resolution, time."""
    print(f"{'σ²':>7}  {'contender':<32} {'E_OR':>6} {'E_OR,reg':>9} {'median':>7} {'< 5°':>6} {'< 10°':>6}"
          f" {'FSC 0.5':>8} {'time':>7}")
    for level, rows in levels.items():
        for name, r in rows.items():
            print(f"{level:>7}  {CONTENDERS[name]:<32} {r['e_or']:6.3f} {r['e_reg']:9.3f} "
                  f"{r['e_reg_median']:7.3f} {r['within_5']:6.1%} {r['within_10']:6.1%} "
                  f"{r['resolution']:6.1f} Å {r['seconds']:5.0f} s")


# %% [markdown]
# ## 1 · The contest, here
# The first `contest_size` test projections of each level's dataset, every contender on the same
# images (the default is a small size that runs in a couple of minutes; the full study is in
# section 2).

# %%
settings = ContestSettings(rounds=contest_rounds, seed=study.seed, chance_seed=study.chance_seed)
here = {}
for asked in contest_levels:
    level = level_of(asked)
    data = study_dataset(study, noise_variance=level)
    test = data.splits["test"]
    print(f"σ² = {level:g}: P = {min(contest_size, len(test))} test projections")
    here[f"{level:g}"] = contest_level(
        data.particles.images, data.quaternions, test[:contest_size], test, truth_map.data,
        data.particles.pixel_size, model=chain[level].model, image_size=config.image_size,
        contenders=contest_contenders, settings=settings, device=device, progress=True,
    )
show_rows(here)

# %%
# NBVAL_CHECK_OUTPUT
for level, rows in here.items():
    if "matching" in rows:
        found = rows["matching"]["e_reg"]
        assert found < 0.2, f"σ² = {level}: matching failed, E_OR,reg {found:.3f}"
    if "learned+refined" in rows and "learned" in rows:
        before, after = rows["learned"]["e_reg"], rows["learned+refined"]["e_reg"]
        assert after <= before * 1.05, f"σ² = {level}: refinement made it worse ({before:.3f} → {after:.3f})"
print("projection matching below 0.2 rad; refinement never made the learned start worse")

# %% [markdown]
# ## 2 · Who wins where: the full study
# `benchmarks/who_wins.py` runs every contender at every noise level on the same test projections
# (its size, rounds, commit and machine are in its JSON); the table, the figure and the verdict
# below are read from its committed run. Where it has not been run, they show section 1's rows.

# %%
full_path = paper_dir().parent / "benchmarks" / "results" / "who_wins.json"
if full_path.is_file():
    full = json.loads(full_path.read_text())
    levels = {k: full["levels"][k] for k in sorted(full["levels"], key=float)}
    origin = (f"benchmarks/who_wins.py at {full['commit'][:7]} ({full['date']}), "
              f"P = {full['parameters']['images']} test projections, "
              f"{full['parameters']['rounds']} rounds at most")
else:
    full, levels = None, here
    origin = f"section 1 (the full study has not been run here: no {portable_path(full_path)})"
print(origin)
show_rows(levels)

# %%
labels = {name: label for name, label in CONTENDERS.items() if name != "truth"}
ceilings = {lv: rows["truth"]["resolution"] for lv, rows in levels.items() if "truth" in rows}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
plot_contest(axes, levels, labels, ceilings=ceilings, box_size=study.box_size)
fig.suptitle(f"{clean.map_name}: who wins where ({origin.split(',')[0]})", fontsize=9)
fig.tight_layout()
save_figure(fig, f"who_wins_{tag}", profile=profile, map=clean.map_name, origin=origin, levels=levels)
plt.show()

# %% [markdown]
# ### The targets
# What the study was asked to show (default profile, two CPU cores): refinement from the learned
# start at the SNR-matched σ² to $E_{OR}$ ≤ 0.05 rad (stretch 0.03), noiseless ≤ 0.01 rad; the
# refined map within one shell of the ceiling; the half maps' FSC-0.143 within 1.5 shells of the
# FSC 0.5 against the truth; refinement of 1,650 images within 5 minutes and the global matching
# within 10.

# %%
shell = 1 / (study.box_size * clean.particles.pixel_size)  # 1/Å, one Fourier shell
matched = f"{level_of('matched'):g}"


def shells_apart(a: float, b: float) -> float:
    """How many Fourier shells separate two resolutions in Å."""
    return abs(1 / a - 1 / b) / shell


targets = []
for lv, bound in (("0", 0.01), (matched, 0.05)):
    r = levels.get(lv, {}).get("learned+refined")
    if r is not None:
        targets.append((f"learned, refined, σ² = {lv}: E_OR {r['e_or']:.3f} rad ≤ {bound}",
                        r["e_or"] <= bound))
        if "truth" in levels[lv]:
            gap = shells_apart(r["resolution"], levels[lv]["truth"]["resolution"])
            targets.append((f"σ² = {lv}: refined map {r['resolution']:.1f} Å, ceiling "
                            f"{levels[lv]['truth']['resolution']:.1f} Å: {gap:.1f} shells ≤ 1", gap <= 1))
        gap = shells_apart(r["half_map_resolution"], r["resolution"])
        targets.append((f"σ² = {lv}: half maps {r['half_map_resolution']:.1f} Å (0.143) against "
                        f"{r['resolution']:.1f} Å (0.5, truth): {gap:.1f} shells ≤ 1.5", gap <= 1.5))
for lv, rows in levels.items():
    n = rows.get("learned+refined", {}).get("n")
    if n:
        minutes = rows["learned+refined"]["seconds"] / 60 * 1650 / n
        scaled = "" if n == 1650 else f" (scaled from {n} images)"
        targets.append((f"σ² = {lv}: refinement {minutes:.1f} min per 1,650 images{scaled} ≤ 5",
                        minutes <= 5))
        break
for text, met in targets:
    print(f"{'met    ' if met else 'NOT met'}  {text}")

# %% [markdown]
# ## 3 · Results for the report
# Section 1's rows and the full study's go to `paper/results/PROFILE/11_projection_matching.json`;
# its noiseless and SNR-matched levels also give the claims table its projection-matching and
# refinement rows, beside the learned distances'.

# %%
verdict = contest_verdict(levels)
values = {
    "map": clean.map_name,
    "here": here,
    "full": None if full is None else {
        "levels": levels, "parameters": full["parameters"], "commit": full["commit"], "date": full["date"],
    },
    "labels": CONTENDERS,
    "at": {"noiseless": levels.get("0"), "matched": levels.get(matched)},  # the claims table's rows
    "verdict": verdict,
    "targets": [{"target": text, "met": met} for text, met in targets],
}
saved = save_results("11_projection_matching", values, profile=profile, map=clean.map_name)
print(f"saved {portable_path(saved)} and its .npz")

# %% [markdown]
# ## What we found
# Rendered from the results (nothing typed by hand): who wins at each level by $E_{OR,reg}$, and
# what refinement does.

# %%
display(Markdown(f"From {origin}:\n\n" + "\n".join(f"* {line}" for line in verdict)))
