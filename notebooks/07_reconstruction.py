# %% [markdown]
# # 07 · Reconstruction: closing the loop
#
# **What it asks.** Do the recovered orientations rebuild the protein, how close to what the true
# orientations give, and what does a user without the truth get?
#
# **What it needs.** The orientations of notebooks 04 (recovered and aligned, every noise level),
# 05 (non-uniform orientations) and 06 (gauge-fixed), read from their saved results (a level
# missing there is recovered here, with the cached or shipped estimators, in about a minute per
# level), and the test projections of notebook 01's datasets.
#
# As the paper does, we reconstruct from the test projections with (a) the **true** orientations,
# the ceiling; (b) **random** ones; (c) orientations **recovered** at every noise level (notebook
# 04), aligned with the truth by O(4). Section 3 does it without the truth. Reconstruction is least
# squares by conjugate gradients (the paper: ASTRA's CGLS) from a direct Fourier start; the FSC
# against the true map gives the resolution at 0.5 (0.143 is for two half-maps; not here).

# %%
# Colab only: install the package, and fetch the saved results of notebooks 01-06 (does nothing elsewhere).
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
method = "cgls"  # "cgls" (least squares, the paper's) or "fourier" (direct)
n_iterations = 20  # conjugate-gradient iterations at most
device = None  # torch device; None picks CUDA when available

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from cryoorient.dataset import study_dataset
from cryoorient.density import load_map
from cryoorient.fsc import fourier_shell_correlation, resolution
from cryoorient.geometry import quaternion_to_matrix, viewing_direction
from cryoorient.model_cache import model_config, noise_curriculum
from cryoorient.paths import data_dir
from cryoorient.pipeline import map_in_frame, recovered_or_saved
from cryoorient.plotting import file_tag, plot_errors_and_fsc, plot_fsc, save_figure, show_images, use_style
from cryoorient.provenance import portable_path
from cryoorient.reconstruction import reconstruct
from cryoorient.relion import write_reconstruction
from cryoorient.results import load_results, save_results
from cryoorient.sampling import sample_orientations
from cryoorient.study import load_study

use_style()
study = load_study(profile)
print(study)
truth = load_map(study.map_name, box_size=study.box_size, voxel_size=study.voxel_size)
clean = study_dataset(study)
test = clean.splits["test"]
pixel = clean.particles.pixel_size
tag = file_tag(clean.map_name)
print(
    f"map {truth.name}: {len(test)} test projections of {study.box_size} px at {pixel:.2f} Å "
    f"(Nyquist {2 * pixel:.2f} Å)"
)

# %% [markdown]
# ## 1 · Orientations: true, random and recovered at every noise level
# Notebook 04's recovered and notebook 06's gauge-fixed orientations (from their saved results,
# else recovered now), aligned with the truth by the O(4) transform, as the paper does.

# %%
matched = study.matched_noise_variance
levels = [0.0, *study.noise_study_levels]
config = model_config(study.model, seed=study.seed)
chain = noise_curriculum(clean, config, levels, epochs=study.curriculum_epochs,
                         learning_rate=study.curriculum_learning_rate, device=device)
gauge_levels = {0.0: "clean", matched: "matched"}  # section 3: levels and their names in the results
recovered = recovered_or_saved(
    {v: r.model for v, r in chain.items()}, {v: r.folder.name for v, r in chain.items()},
    lambda v: study_dataset(study, noise_variance=v), test,
    config.image_size, profile=profile, gauge_levels=gauge_levels, seed=study.seed, device=device,
)
orientations, notes = {"true": clean.quaternions[test]}, {}
orientations["random"] = sample_orientations(len(test), seed=study.chance_seed)
for level, saved_run in recovered.items():
    label = f"recovered, σ² = {level:.3g}"
    orientations[label] = saved_run.aligned
    notes[label] = f"E_OR {saved_run.e_or:.3f} rad ({saved_run.origin})"
    print(f"{label}: {notes[label]}")

# %% [markdown]
# ## 2 · Reconstructions
# True and random orientations with the noiseless test projections; recovered orientations with
# the test projections they were recovered from (noisy at σ² > 0), as a user would reconstruct.
# The paper instead reconstructs from the noiseless projections with the orientations recovered
# from noisy ones (§ 3.5); that protocol runs too, at the SNR-matched σ² and at σ² = 16, for the
# comparison with its numbers. Beside every map from noisy projections, the map from the same
# noisy projections with the *true* orientations: the ceiling the noise leaves to any recovery.
# Noiseless projections made and reconstructed with the same projector reach Nyquist with the true
# orientations: there the resolution is a bound, and FSC curves that stay at 1 say so.

# %%
def images_at(level: float) -> torch.Tensor:
    """The test projections at noise variance ``level``."""
    return torch.from_numpy(study_dataset(study, noise_variance=level).particles.images[test])


# (name, σ² of the images, orientations); each stack is read when its map is made, so that only one
# is in memory at a time
runs = [(name, 0.0, q) for name, q in list(orientations.items())[:2]]
runs += [(f"recovered, σ² = {v:.3g}", v, orientations[f"recovered, σ² = {v:.3g}"]) for v in levels]
# the ceiling: the same noisy projections with their true orientations
ceilings = {v: f"true, σ² = {v:.3g}" for v in levels if v > 0}
runs += [(name, v, orientations["true"]) for v, name in ceilings.items()]
# the paper's protocol (§ 3.5): the noiseless projections with the orientations recovered from noisy ones
paper_protocol = {
    v: f"recovered, σ² = {v:.3g}, noiseless images" for v in (matched, study.paper_noise_variance)
}
runs += [(name, 0.0, orientations[name.removesuffix(", noiseless images")])
         for name in paper_protocol.values()]
maps, curves, seconds = {}, {}, {}
for name, level, q in runs:
    result = reconstruct(images_at(level), quaternion_to_matrix(q).float(), method=method,
                         n_iterations=n_iterations, device=device, progress=False)
    maps[name] = result.volume.cpu()
    seconds[name] = result.seconds
    freq, fsc = fourier_shell_correlation(maps[name], truth.data, pixel)
    curves[name] = (freq, fsc, resolution(freq, fsc, 0.5))
    print(f"{name:>42}: FSC 0.5 at {curves[name][2]:6.1f} Å ({result.seconds:.1f} s, "
          f"{result.iterations} iterations)")

# %%
# NBVAL_CHECK_OUTPUT
at_half = {name: c[2] for name, c in curves.items()}
noiseless = f"recovered, σ² = {0.0:g}"
print(f"true orientations reach within 10 % of Nyquist: {at_half['true'] <= 1.1 * 2 * pixel}")
print(f"recovered orientations beat random ones: {at_half[noiseless] < at_half['random']}")

# %%
shown = ["true", "random", f"recovered, σ² = {0.0:.3g}", f"recovered, σ² = {matched:.3g}",
         f"recovered, σ² = {study.paper_noise_variance:.3g}"]
volumes = {"ground truth": torch.as_tensor(truth.data)} | {name: maps[name] for name in shown}
fig, axes = plt.subplots(3, len(volumes), figsize=(2.3 * len(volumes), 7.2))
c = study.box_size // 2
for col, (name, vol) in enumerate(volumes.items()):
    v = vol.numpy()
    show_images(axes[:, col], np.stack([v[c], v[:, c], v[:, :, c]]))
    resolution_note = "" if name == "ground truth" else f"\n0.5: {curves[name][2]:.1f} Å"
    axes[0, col].set_title(name.replace(", σ²", ",\nσ²") + resolution_note, fontsize=8)
for ax, label in zip(axes[:, 0], "zyx", strict=True):
    ax.set_ylabel(f"central {label} slice")
fig.suptitle(f"{truth.name}: reconstructions from {len(test)} projections ({method})")
fig.tight_layout()
save_figure(fig, f"reconstructions_{tag}", profile=profile, map=truth.name, p=len(test), method=method,
            resolution_05=at_half, notes=notes)
plt.show()

# %%
fig, ax = plt.subplots(figsize=(9, 4))
plot_fsc(ax, {name: c[:2] for name, c in curves.items()}, {name: c[2] for name, c in curves.items()},
         ylabel="FSC with the ground truth", fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
ax.set_title(f"{truth.name}, {study.box_size} px at {pixel:.2f} Å; resolutions at FSC 0.5")
fig.tight_layout()
save_figure(fig, f"fsc_{tag}", profile=profile, map=truth.name, resolution_05=at_half)
plt.show()

# %% [markdown]
# ## 3 · From the projections alone: no true orientation anywhere
# Every map above used the O(4) alignment with the truth. Without it, a user reconstructs from the
# orientations "as recovered", or after fixing their gauge from the images ("gauge-fixed",
# notebook 06). Either map matches the truth only up to a rotation and the mirror, so it is
# compared after a rigid map-to-map alignment found from the two maps alone
# (`map_alignment.align_maps`, as ChimeraX's `fitmap`). Resampling costs resolution near Nyquist, so
# the map is then made again with every orientation composed with that alignment ($A_i M^\top$),
# in the true map's frame exactly; the resampled map's FSC (`cryoorient fsc --align`) is printed
# beside it.

# %%
alone, alone_maps = {}, {}
for level in gauge_levels:
    images = images_at(level)
    row = {"truth_aligned": at_half[f"recovered, σ² = {level:.3g}"]}
    run = recovered[level]
    for kind, q in (("as recovered", run.recovered), ("gauge-fixed", run.gauge_fixed)):
        framed = map_in_frame(images, quaternion_to_matrix(q).float(), truth.data, pixel, method=method,
                              n_iterations=n_iterations, seed=study.seed, device=device)
        fit, name = framed.alignment, f"{kind}, σ² = {level:.3g}"
        alone_maps[name], curves[name] = framed.volume, (framed.frequencies, framed.fsc, framed.resolution)
        key = kind.replace(" ", "_").replace("-", "_")
        row |= {key: framed.resolution, f"{key}_resampled": framed.resampled_resolution,
                f"{key}_correlation": fit.correlation, f"{key}_mirrored": fit.mirrored}
        print(f"{name:>26}: map-to-map correlation {fit.correlation:.3f} "
              f"({'mirror' if fit.mirrored else 'rotation'}, {fit.seconds:.0f} s), FSC 0.5 at "
              f"{framed.resolution:.1f} Å (the aligned map resampled: {framed.resampled_resolution:.1f} Å); "
              f"truth-aligned {row['truth_aligned']:.1f} Å")
    alone[gauge_levels[level]] = row

# %%
# NBVAL_CHECK_OUTPUT
shell = 1 / (study.box_size * pixel)  # width of one Fourier shell, 1/Å
row = alone["clean"]
gap = abs(1 / row["gauge_fixed"] - 1 / row["truth_aligned"])
assert gap <= shell + 1e-9, f"gauge-fixed vs truth-aligned map: {row}"
assert row["as_recovered"] > row["gauge_fixed"], f"the map as recovered is not worse: {row}"
print("noiseless: the gauge-fixed map is within one Fourier shell of the truth-aligned one at FSC 0.5, "
      "and the map as recovered is worse")

# %%
# constrained layout keeps each row's two-line titles clear of the row above
fig, axes = plt.subplots(len(gauge_levels), 5, figsize=(11.5, 2.8 * len(gauge_levels)), layout="constrained")
for r, level in enumerate(gauge_levels):
    ceiling = ceilings.get(level, "true")  # the same (noisy) images with the true orientations
    panels = {"ground truth": torch.as_tensor(truth.data), "true orientations": maps[ceiling],
              "truth-aligned (paper)": maps[f"recovered, σ² = {level:.3g}"],
              "as recovered": alone_maps[f"as recovered, σ² = {level:.3g}"],
              "gauge-fixed": alone_maps[f"gauge-fixed, σ² = {level:.3g}"]}
    keys = [None, ceiling, f"recovered, σ² = {level:.3g}", f"as recovered, σ² = {level:.3g}",
            f"gauge-fixed, σ² = {level:.3g}"]
    titles = [title + ("" if key is None else f"\nFSC 0.5: {curves[key][2]:.1f} Å")
              for title, key in zip(panels, keys, strict=True)]
    show_images(axes[r], np.stack([vol.numpy()[c] for vol in panels.values()]), titles)
    for ax in axes[r]:
        ax.title.set_fontsize(8)
    axes[r, 0].set_ylabel(f"σ² = {level:.3g}\ncentral z slice")
fig.suptitle(f"{truth.name}: maps from {len(test)} projections, with and without the true orientations")
save_figure(fig, f"reconstructions_without_truth_{tag}", profile=profile, map=truth.name, p=len(test),
            method=method, rows=alone)
plt.show()

# %% [markdown]
# ## 4 · Non-uniform orientations (paper: appendix, FSC)
# The orientations notebook 05 recovered, at the SNR-matched σ², for Haar-uniform orientations and
# for two non-uniform datasets of the same map (**euler**: Euler angles uniform, directions
# crowding at the poles; **half**: directions on one hemisphere). Each map is made from the noisy
# test projections of that dataset with the true and with the recovered, aligned orientations,
# and compared with the true map by FSC; noiseless projections would put every curve at Nyquist,
# a bound rather than a result.

# %%
noise_study = load_results("05_noise_study", profile)
saved_rows = noise_study.values["nonuniform"]  # saved with sorted keys: the uniform reference first
rows = {scheme: saved_rows[scheme] for scheme in sorted(saved_rows, key=lambda s: (s != "uniform", s))}
nonuniform, nonuniform_curves = {}, {}
for scheme, errors_row in rows.items():
    data = study_dataset(study, noise_variance=matched, orientations=scheme)
    images = torch.from_numpy(data.particles.images[data.splits["test"]])
    row = {}
    for kind in ("true", "aligned"):
        q = torch.as_tensor(noise_study.arrays[f"nonuniform/{scheme}/{kind}"])
        result = reconstruct(images, quaternion_to_matrix(q).float(), method=method,
                             n_iterations=n_iterations, device=device, progress=False)
        freq, fsc = fourier_shell_correlation(result.volume.cpu(), truth.data, pixel)
        label = "true" if kind == "true" else "recovered"
        nonuniform_curves[f"{scheme}, {label}"] = (freq, fsc, resolution(freq, fsc, 0.5))
        row[f"fsc_{label}"] = nonuniform_curves[f"{scheme}, {label}"][2]
    nonuniform[scheme] = row
    print(f"{scheme:>7}: E_OR {errors_row['e_or']:.3f} rad at σ² = {matched:.2f} (notebook 05); FSC 0.5 "
          f"from those images: {row['fsc_true']:.1f} Å with the true orientations, "
          f"{row['fsc_recovered']:.1f} Å recovered")

# %%
# NBVAL_CHECK_OUTPUT
for scheme, row in nonuniform.items():
    assert row["fsc_recovered"] < 2 * row["fsc_true"], f"{scheme}: the recovered map is far worse: {row}"
print(f"every coverage ({', '.join(nonuniform)}): the map from recovered orientations within twice the "
      "resolution of the true orientations'")

# %%
columns = {}
for scheme, row in rows.items():
    q, errors = (noise_study.arrays[f"nonuniform/{scheme}/{kind}"] for kind in ("true", "errors"))
    title = (f"{scheme}: directions, coloured by error\n$E_{{OR}}$ {row['e_or']:.3f} rad, "
             f"median {row['median']:.3f} (noiseless: {row['e_or_clean']:.3f})")
    shown_curves = {f"{k} orientations": nonuniform_curves[f"{scheme}, {k}"] for k in ("true", "recovered")}
    columns[title] = (viewing_direction(torch.as_tensor(q[:800])), errors[:800], shown_curves)
fig = plot_errors_and_fsc(columns, title=f"{clean.map_name}, P = {len(test)}: the uniform-trained "
                          f"estimators on non-uniform orientations, σ² = {matched:.2f} (the paper's σ² = 16 "
                          "matched in SNR)")
save_figure(fig, f"nonuniform_{tag}", profile=profile, map=clean.map_name, noise_variance=matched,
            rows={scheme: rows[scheme] | nonuniform[scheme] for scheme in rows})
plt.show()

# %% [markdown]
# ## 5 · The maps and orientations, for RELION
# Each recovered reconstruction is written as an MRC map with its voxel size, beside a STAR file
# of the orientations it used and the particles, so that `relion_reconstruct --i NAME.star`
# repeats it.

# %%
folder = data_dir() / "reconstructions" / clean.path.name
for name, level, q in runs:
    if name.startswith("recovered"):
        stem = name.replace(", ", "_").replace(" = ", "").replace("σ²", "noise").replace(" ", "_")
        mrc, star = write_reconstruction(
            folder, maps[name], pixel, quaternion_to_matrix(q), images=images_at(level), name=stem
        )
        print(f"{mrc.relative_to(data_dir())}  +  {star.name}")

# %% [markdown]
# ## 6 · Results for the figures notebook and the report
# Resolutions, timings, the FSC curves and the central slices go to `paper/results/PROFILE/`
# (read by notebook 99 and the reproduction report).

# %%
saved = save_results(
    "07_reconstruction",
    {
        "map": truth.name, "p": len(test), "method": method, "n_iterations": n_iterations,
        "pixel_size": pixel, "nyquist": 2 * pixel, "shown": shown,
        "labels": [name for name in curves if name not in alone_maps],
        "resolution_05": {name: c[2] for name, c in curves.items()},
        "matched_noise_variance": matched,
        "noise_study": {f"{v:g}": at_half[f"recovered, σ² = {v:.3g}"] for v in levels},
        "resolution_matched": at_half[f"recovered, σ² = {matched:.3g}"],
        "resolution_matched_paper_protocol": at_half[paper_protocol[matched]],
        "ceiling": {f"{v:g}": at_half[name] for v, name in ceilings.items()},
        "resolution_matched_ceiling": at_half[ceilings[matched]],
        "without_truth": alone,
        "nonuniform": nonuniform,
        "seconds": seconds, "notes": notes,
    },
    profile=profile,
    arrays={"frequency": curves["true"][0], "slice/ground truth": truth.data[c]}
    | {f"fsc/{name}": curve[1] for name, curve in curves.items()}
    | {f"slice/{name}": volume[c] for name, volume in (maps | alone_maps).items()},
    map=truth.name,
)
print(f"saved {portable_path(saved)} and its .npz")

# %% [markdown]
# ## What we found
# Rendered from the results (nothing typed by hand).

# %%
display(Markdown(f"""
* With the **true** orientations the map reaches {at_half["true"]:.1f} Å at FSC 0.5 (Nyquist
  {2 * pixel:.1f} Å); **random** orientations give {at_half["random"]:.1f} Å.
* Orientations **recovered** from noiseless projections: {at_half[noiseless]:.1f} Å; at the SNR-matched
  σ² = {matched:.2f}, from those noisy images: {at_half[f"recovered, σ² = {matched:.3g}"]:.1f} Å
  (the paper's protocol, noiseless images: {at_half[paper_protocol[matched]]:.1f} Å); the same noisy
  images with their true orientations, the ceiling: {at_half[ceilings[matched]]:.1f} Å.
* **Without the truth** (noiseless): gauge-fixed {alone["clean"]["gauge_fixed"]:.1f} Å, as recovered
  {alone["clean"]["as_recovered"]:.1f} Å, truth-aligned {alone["clean"]["truth_aligned"]:.1f} Å.
"""))
