# %% [markdown]
# # 09 · The paper's own method, reproduced, and the ladder from it to ours
#
# **What it asks.** Every estimator in notebooks 02-08 is *ours*: it differs from the paper's in
# its training pairs, feature distance, loss, network, input size, noise curriculum and recovery.
# Here: does the paper's own method, trained until its validation curve is flat, give the paper's
# numbers at our images? And going from the paper's method to ours one change at a time (the
# *ladder*), which change buys what?
#
# **What it needs.** The clean dataset of notebook 01 (and, for the paper's half coverage, notebook
# 05's, noiseless and noisy) and the estimators measured: shipped in `models/` (every rung on full
# coverage, the paper's method on half coverage noiseless), else trained here (the paper's method
# takes about an hour on two CPU cores, each in-batch rung about 15 minutes).
#
# The paper's method, as its authors ran it (§ 3 and App. B of the paper; `cryoorient/studies/default.yml`,
# `paper_method`): the 7-stage network (32-512 channels, ReLU, max pooling, no normalisation,
# $n_f$ = 512), its feature distance $d_f = d_q$ on the unit features
# ($2\arccos|\langle u_i, u_j\rangle|$), training pairs fixed once (1 % of the training
# pairs, resampled uniform in $d_q$), 256 pairs a step, RMSProp at a constant $10^{-3}$, and the
# mean *absolute* error as $L_{DE}$. Its recovery: unit quaternions from a random start, 7,000 Adam
# steps at a learning rate of 0.5, each on 256 random pairs. What differs here: the network sees
# our 64-px images (the paper: 116 px; its pooling takes either), and the training stops when the
# validation MAE is flat (the best of the last 3 epochs less than 1 % below the best before them)
# or after about 2 h, instead of 150 epochs on a GPU.

# %%
# Colab only: install the package (does nothing elsewhere).
import subprocess
import sys

REPOSITORY = "https://github.com/cryoorient/cryoorient"
if "google.colab" in sys.modules:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"cryoorient @ git+{REPOSITORY}"], check=True
    )

# %% tags=["parameters"]
profile = "default"  # the study (cryoorient/studies/PROFILE.yml): map, box, P, model, noise, seeds
# the paper's method, trained and tested on each [orientations, σ²]: "uniform" (full coverage) or
# "paper_half" (its noise study's half coverage); σ² a number or "matched" (the paper's σ² = 16
# matched in SNR), the noise added once to the images, as the authors did. All three are shipped;
# an estimator that is not trains here (about an hour on two CPU cores)
estimators = [["uniform", 0], ["paper_half", 0], ["paper_half", "matched"]]
# rungs measured (cryoorient.ladder), all shipped; an estimator that is not trains here
ladder_rungs = ["paper", "inbatch", "orientation", "mse", "compact", "spectral"]
n_pairs = 4000  # test pairs on which L_DE is measured, of each kind (uniform in d_q; random)
recovery_starts = 3  # recoveries from this many random starts on the same distances (seeds 0, 1, ...)
device = None  # torch device for the network; None picks CUDA when available

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from cryoorient.alignment import align_orientations
from cryoorient.claims import load_claims
from cryoorient.dataset import SimulationParameters, load_dataset, study_dataset
from cryoorient.ladder import evaluate, evaluation_pairs, ladder
from cryoorient.model_cache import dataset_model, paper_method_config
from cryoorient.plotting import (
    plot_distance_agreement,
    plot_ladder,
    plot_learning_curves,
    save_figure,
    use_style,
)
from cryoorient.provenance import portable_path
from cryoorient.recipes import epoch_steps
from cryoorient.report import seed_note
from cryoorient.results import save_results
from cryoorient.sampling import sample_orientations
from cryoorient.study import load_study
from cryoorient.training import FLAT_TOLERANCE, training_seconds

use_style()
study = load_study(profile)
claims = load_claims()
print(study)

# %% [markdown]
# ## 1 · Training the paper's method until its validation curve is flat
# One estimator per coverage and noise level, each trained and validated on its own dataset (the
# paper's noise study used half coverage; its full pipeline, § 3.5, full coverage). As the authors
# did, a noisy dataset's noise is drawn once per image, not afresh at every step as our curriculum's.
# The curves are the MAE, the loss it trains, on the training batches and on fixed validation pairs
# uniform in $d_q$.

# %%
datasets, trained, noise_of = {}, {}, {}
for orientations, noise in estimators:
    level = study.matched_noise_variance if noise == "matched" else float(noise)
    suffix = "matched" if noise == "matched" else f"{level:g}"
    coverage = orientations if level == 0 else f"{orientations}_{suffix}"  # as the claims' paths name it
    noise_of[coverage] = level
    datasets[coverage] = study_dataset(study, noise_variance=level, orientations=orientations)
    config = paper_method_config(study)
    trained[coverage] = dataset_model(datasets[coverage], config, device=device)
    history = trained[coverage].history
    stopped = "flat" if len(history) < config.epochs else "at the epoch limit"
    steps = epoch_steps(config, len(datasets[coverage].splits["train"]))
    print(f"{coverage}: {steps} optimiser steps an epoch (the paper's 150 epochs: {150 * steps:,})")
    print(f"{coverage}: model {trained[coverage].folder.name}, {len(history)} epochs ({stopped}), "
          f"{training_seconds(history) / 60:.0f} min; validation MAE {history[-1]['validation_mae']:.3f} rad")
coverages = list(trained)
tag = datasets[coverages[0]].map_name.replace(":", "-")

# %%
fig, axes = plt.subplots(1, len(coverages), figsize=(5 * len(coverages), 3.4), squeeze=False)
for ax, coverage in zip(axes[0], coverages, strict=True):
    history = trained[coverage].history
    plot_learning_curves(ax, [h["epoch"] for h in history], [h["train_loss"] for h in history],
                         [h["validation_mae"] for h in history], ylabel=r"$L_{DE}$ (MAE, rad)")
    ax.set_title(f"the paper's method, {coverage}, σ² = {noise_of[coverage]:.3g}")
fig.suptitle(f"flat: the best of the last {paper_method_config(study).patience} epochs under "
             f"{FLAT_TOLERANCE:.0%} below the best before them", fontsize=9)
fig.tight_layout()
save_figure(fig, f"paper_method_learning_{tag}", profile=profile, map=tag,
            config=paper_method_config(study).to_dict())
plt.show()

# %% [markdown]
# ## 2 · Its distances and its orientations
# On each coverage's test split: $L_{DE}$ as the MAE on pairs uniform in $d_q$ (as our notebooks
# measure it) and on random pairs (whose $d_q$ are mostly large, where a constant guess is already
# close), then $E_{OR}$ (mean and median over the test projections, after the O(4) alignment)
# from the paper's recovery, and from ours on the same distances. The paper's recovery starts from
# random orientations, so it runs from `recovery_starts` starts: the range shows how much the
# minimum it lands in depends on the start (the values reported are the first start's).

# %%
def span(values: dict) -> str:
    """The range of E_OR over the recovery's starts (rad), as text."""
    return f"{min(values['e_or_starts']):.3f}–{max(values['e_or_starts']):.3f}"


method = {}
for coverage in coverages:
    test = datasets[coverage].splits["test"]
    images = torch.from_numpy(datasets[coverage].particles.images[test])
    q_test = datasets[coverage].quaternions[test]
    pairs = evaluation_pairs(q_test, n_pairs, seed=study.seed)
    runs = {}
    for recovery in ("paper", "ours"):
        model, size = trained[coverage].model, trained[coverage].config.image_size
        runs[recovery] = evaluate(model, size, images, q_test, pairs, recovery, seed=study.seed,
                                  device=device, starts=recovery_starts)
    random = sample_orientations(len(test), seed=study.chance_seed)  # the chance level, as notebook 04's
    chance = align_orientations(q_test, random, seed=study.seed)
    runs["chance"] = chance.error
    method[coverage] = runs
    values = runs["paper"][0]
    print(f"{coverage}: MAE {values['uniform']['mae']:.3f} rad on uniform pairs, "
          f"{values['random']['mae']:.3f} on random pairs; E_OR {values['e_or']:.3f} rad "
          f"(median {values['median']:.3f}; {span(values)} over {recovery_starts} starts) by its recovery, "
          f"{runs['ours'][0]['e_or']:.3f} by ours; "
          f"chance {chance.error:.3f} rad")

# %%
paper_value = {"uniform": claims.claim("eor_learned_clean").paper,
               "paper_half": claims.claim("eor_paper_half_clean").paper,
               "paper_half_matched": claims.claim("eor_paper_half_matched").paper}
rows = ["| coverage, σ² | MAE, uniform pairs (rad) | MAE, random pairs (rad) | E_OR, its recovery (rad) "
        f"| median | over {recovery_starts} starts | E_OR, our recovery | chance | the paper's E_OR |",
        "| --- |" + " ---: |" * 8]
for coverage, runs in method.items():
    v, ours = runs["paper"][0], runs["ours"][0]
    rows.append(f"| {coverage}, {noise_of[coverage]:.3g} | {v['uniform']['mae']:.3f} | "
                f"{v['random']['mae']:.3f} | {v['e_or']:.3f} | {v['median']:.3f} | {span(v)} | "
                f"{ours['e_or']:.3f} | "
                f"{runs['chance']:.3f} | "
                f"{paper_value.get(coverage, float('nan')):.2f} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# Why the orientations fail: the estimated distances against the true ones on the test pairs
# uniform in $d_q$. A distance that is a poor function of $d_q$ (flat, or folded) leaves the
# recovery no orientation set to find.

# %%
fig, axes = plt.subplots(1, len(coverages), figsize=(4.2 * len(coverages), 3.8), squeeze=False)
for ax, coverage in zip(axes[0], coverages, strict=True):
    arrays = method[coverage]["paper"][1]
    plot_distance_agreement(ax, arrays["d_q/uniform"], arrays["d_p/uniform"], hexbin=True)
    ax.set_title(f"the paper's method, {coverage}, σ² = {noise_of[coverage]:.3g}", fontsize=9)
fig.tight_layout()
save_figure(fig, f"paper_method_distances_{tag}", profile=profile, map=tag, n_pairs=n_pairs)
plt.show()

# %% [markdown]
# ## 3 · The ladder: from the paper's method to ours, one change at a time
# Every rung is measured on the same test projections (full coverage, noiseless): $L_{DE}$ (MAE,
# the paper's) on uniform pairs, $E_{OR}$ mean and median, its range over the recovery's starts, and
# the time it took (training on this machine, plus the recovery). The rungs and what each changes
# are in `cryoorient/ladder.py`.

# %%
clean = datasets.get("uniform") or load_dataset(SimulationParameters(**study.simulation()))
test = clean.splits["test"]
images = torch.from_numpy(clean.particles.images[test])
q_test = clean.quaternions[test]
pairs = evaluation_pairs(q_test, n_pairs, seed=study.seed)
ladder_chance = align_orientations(q_test, sample_orientations(len(test), seed=study.chance_seed),
                                   seed=study.seed)
rungs = [r for r in ladder(study) if r.name in ladder_rungs]
measured = {}
for rung in rungs:
    result = dataset_model(clean, rung.config, device=device)
    if rung.name == "paper" and "uniform" in method:
        values, arrays = method["uniform"]["paper"]
    else:
        values, arrays = evaluate(result.model, rung.config.image_size, images, q_test, pairs, rung.recovery,
                                  seed=study.seed, device=device, starts=recovery_starts)
    history = result.history
    values = dict(values) | {"change": rung.change, "model": result.folder.name, "epochs": len(history),
                             "training_minutes": training_seconds(history) / 60}
    measured[rung.name] = (values, arrays)
    print(f"{rung.name:12s} MAE {values['uniform']['mae']:.3f} rad, E_OR {values['e_or']:.3f} rad "
          f"(median {values['median']:.3f}; {span(values)} over {recovery_starts} starts); "
          f"{values['training_minutes']:.0f} min of training, "
          f"{values['recovery_seconds']:.0f} s of recovery")

# %%
rows = ["| rung | change | MAE, uniform pairs (rad) | E_OR (rad) | median (rad) "
        f"| E_OR over {recovery_starts} starts (rad) | training (min) | recovery (s) |",
        "| --- | --- |" + " ---: |" * 6]
for name, (v, _) in measured.items():
    rows.append(f"| {name} | {v['change']} | {v['uniform']['mae']:.3f} | {v['e_or']:.3f} | "
                f"{v['median']:.3f} | {span(v)} | {v['training_minutes']:.0f} | "
                f"{v['recovery_seconds']:.0f} |")
display(Markdown("\n".join(rows)))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(measured) + 1.6), sharey=True)
labels = [measured[name][0]["change"] for name in measured]
rung_values = [v for v, _ in measured.values()]
plot_ladder(axes[0], labels, [v["e_or"] for v in rung_values], [v["median"] for v in rung_values],
            reference={"the paper (§ 3.5)": paper_value["uniform"], "chance": ladder_chance.error})
axes[0].set_title("orientation error, noiseless test split")
plot_ladder(axes[1], labels, [v["uniform"]["mae"] for v in rung_values], [np.nan] * len(measured),
            xlabel=r"$L_{DE}$ (MAE on pairs uniform in $d_q$, rad)")
axes[1].set_title("distance error")
fig.tight_layout()
save_figure(fig, f"ladder_{tag}", profile=profile, map=tag, rungs=list(measured), p=len(test))
plt.show()

# %% [markdown]
# ## 4 · Saved results
# To `paper/results/PROFILE/09_paper_method.json` (and `.npz`): read by the report and notebook 99.

# %%
values = {
    "map": clean.map_name,
    "p": len(test),
    "paper_method": {
        coverage: {
            "model": trained[coverage].folder.name, "noise_variance": noise_of[coverage],
            "epochs": len(trained[coverage].history),
            "max_epochs": trained[coverage].config.epochs,
            "training_minutes": training_seconds(trained[coverage].history) / 60,
            "paper_recovery": runs["paper"][0], "our_recovery": runs["ours"][0], "chance": runs["chance"],
            "steps_per_epoch": epoch_steps(trained[coverage].config, len(datasets[coverage].splits["train"])),
        }
        for coverage, runs in method.items()
    },
    "ladder": {name: v for name, (v, _) in measured.items()},
}
arrays = {f"{coverage}/{r}/{name}": a for coverage, runs in method.items() for r in ("paper", "ours")
          for name, a in runs[r][1].items() if name != "recovered"}
arrays |= {f"ladder/{name}/errors": a["errors"] for name, (_, a) in measured.items()}
arrays |= {f"{coverage}/learning": np.array([[h["train_loss"], h["validation_mae"]] for h in result.history])
           for coverage, result in trained.items()}
saved = save_results("09_paper_method", values, profile=profile, arrays=arrays, map=clean.map_name)
print(f"saved {portable_path(saved)} and its .npz")

# %% [markdown]
# ## What we found
# Rendered from the results just saved (nothing typed by hand).

# %%
findings = []
for coverage, entry in values["paper_method"].items():
    v = entry["paper_recovery"]
    findings.append(
        f"* **The paper's method, {coverage} (σ² = {entry['noise_variance']:.3g})**: trained "
        f"{entry['epochs']} epochs "
        f"({entry['training_minutes']:.0f} min), its $L_{{DE}}$ (MAE) {v['uniform']['mae']:.3f} rad on "
        f"uniform pairs and {v['random']['mae']:.3f} on random pairs; $E_{{OR}}$ {v['e_or']:.3f} rad (median "
        f"{v['median']:.3f}; {span(v)} over {recovery_starts} starts) by its recovery, "
        f"{entry['our_recovery']['e_or']:.3f} by ours; the paper: "
        f"{paper_value.get(coverage, float('nan')):.2f} rad. "
        + (f"$E_{{OR}}$ over {seed_note('eor_paper_method_clean', profile, claims)} "
           "(`benchmarks/seed_spread.py`)." if coverage == "uniform" else "One training seed.")
    )
if measured:
    first, last = next(iter(measured.values()))[0], list(measured.values())[-1][0]
    findings.append(
        f"* **The ladder** goes from $E_{{OR}}$ {first['e_or']:.3f} rad to {last['e_or']:.3f} rad; per rung: "
        + "; ".join(f"{v['change']} {v['e_or']:.3f}" for v, _ in measured.values()) + "."
    )
display(Markdown("\n".join(findings)))
