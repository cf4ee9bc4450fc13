"""Run the seven benchmarks one after another and write ``paper/benchmarks.md`` from their results.

The benchmarks (each its own interpreter, in this order, with the arguments of :func:`commands`,
chosen so that the whole run takes about 35 minutes on 2 CPU cores):

``projection``
    our projector at the paper's P = 5,000 and 116 px, beside ASPIRE's (``--peer-python``);
``recovery``
    orientation recovery and O(4) alignment at P = 1,650 (best of 2) and the sampled-pair path at
    P = 10k, 30k, 100k;
``reconstruction``
    Fourier and CGLS reconstruction of 5j0n at 64³ from 1,650 projections, best of 2;
``training``
    distance-learning throughput, default and paper configurations;
``common_lines``
    learned distances against ASPIRE's common lines (raw and on class averages) on the same 200
    test projections as notebook 08, at σ² = 0, 1, 4, 16: errors and times side by side, timed
    afresh (``--fresh``; without it the script reads notebook 08's cached comparison);
``recover_scale``
    ``cryoorient recover``'s path from images (embedding, distances and recovery, gauge fixing)
    at P = 1,000, 5,000, 20,000 of 64 px: time per stage and peak memory, each P in its own
    interpreter;
``matching``
    projection matching of the 1,650 test images against the true map (global then local search),
    and the refinement of the learned start against the images' own half maps, at σ² = 0, the
    SNR-matched σ² and 16 (issue 32's targets: matching ≤ 10 min, refinement ≤ 5 min).

Every benchmark runs with ``--threads`` CPU threads (default 1): recovery, reconstruction,
training, common_lines and recover_scale get ``--threads``, and every script, ASPIRE's interpreter
included, gets ``OMP_NUM_THREADS``, so the two projectors are compared at the same thread count.
Two threads next to another busy process wait for each other: on this 2-core machine, shared with
other work, a two-thread run of recovery took 1,328 s where one-thread runs take minutes, and a
tiny training step ran 45× slower. Pass ``--threads 2`` on an idle machine.

Then ``paper/benchmarks.md`` gets the machine (CPU, cores, torch and its threads, load, date,
commit) and one section per benchmark with its numbers and the ratios measured side by side,
every number read from ``benchmarks/results/*.json``. ``--report-only`` rewrites the report from
the existing JSON files without running anything.

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/run_all.py
        [--peer-python PYTHON] [--threads 1] [--skip training ...] [--report-only]

``--peer-python`` defaults to ``$ASPIRE_PYTHON`` (an interpreter of a virtual environment with
``pip install aspire``); without either, the projection benchmark records that the peer did not run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import machine_info

from cryoorient.paths import git_commit

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPORT = HERE.parent / "paper" / "benchmarks.md"
BENCHMARKS = (
    "projection", "recovery", "reconstruction", "training", "common_lines", "recover_scale", "matching",
)
DEFAULT_PEER = os.environ.get("ASPIRE_PYTHON", "")


def commands(peer_python: str, threads: int) -> dict[str, list[str]]:
    """The arguments each benchmark script runs with under ``make benchmark``.

    ``threads`` torch CPU threads for recovery, reconstruction and training (the projection script
    uses torch's default).
    """
    t = ["--threads", str(threads)]
    return {
        "projection": ["--n", "5000", "--size", "116", "--peer-python", peer_python],
        "recovery": ["--repeats", "2", "--scale", "10000", "30000", "100000", "--epochs", "3", *t],
        "reconstruction": ["--repeats", "2", *t],
        "training": t,
        "common_lines": ["--size", "200", "--fresh", *t],
        "recover_scale": ["--sizes", "1000", "5000", "20000", *t],
        "matching": ["--noise", "0", "4.87", "16", *t],
    }


def run_benchmark(name: str, arguments: list[str], threads: int) -> dict:
    """Run ``benchmarks/NAME.py`` in its own interpreter (``OMP_NUM_THREADS=threads``), output shown."""
    command = [sys.executable, str(HERE / f"{name}.py"), *arguments]
    print(f"\n=== {name}: OMP_NUM_THREADS={threads} {' '.join(command[1:])}", flush=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(command, check=False, env=os.environ | {"OMP_NUM_THREADS": str(threads)})
    seconds = time.perf_counter() - start
    print(f"=== {name}: exit {proc.returncode} after {seconds:.0f} s", flush=True)
    return {
        "arguments": [f"OMP_NUM_THREADS={threads}", *arguments],
        "seconds": seconds,
        "returncode": proc.returncode,
        "load_average_1_5_15_min_before": load_before,
        "load_average_1_5_15_min_after": os.getloadavg(),
    }


# --- report helpers ----------------------------------------------------------------------------------


def table(rows: list[tuple[str, ...]], align: str | None = None) -> list[str]:
    """A Markdown table; ``align`` has one ``l``/``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(rows[0]) - 1)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(cells) -> str:
        padded = [
            c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * w if a == "l" else "-" * (w - 1) + ":" for w, a in zip(widths, align, strict=True)]
    return [line(rows[0]), "| " + " | ".join(rule) + " |", *(line(r) for r in rows[1:]), ""]


def seconds_text(s: float) -> str:
    """A duration in s, min or h, whichever reads best."""
    if s >= 2 * 3600:
        return f"{s / 3600:.3g} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    if s >= 1:
        return f"{s:.1f} s"
    return f"{s * 1e3:.0f} ms"


def load_text(machine: dict, run: dict | None = None) -> str:
    """The 1-minute load averages a benchmark recorded, else those ``run_all`` saw around it."""
    for source, suffix in ((machine, ""), (run or {}, " (seen by run_all)")):
        before = source.get("load_average_1_5_15_min_before")
        after = source.get("load_average_1_5_15_min_after") or source.get("load_average_at_end")
        if before and after:
            return f"{before[0]:.1f} → {after[0]:.1f}{suffix}"
        if after:
            return f"{after[0]:.1f} at the end{suffix}"
    return "not recorded"


def load_results(names=BENCHMARKS) -> dict[str, dict]:
    """The results JSON of each benchmark that has one."""
    out = {}
    for name in names:
        path = RESULTS / f"{name}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


# --- one section per benchmark -----------------------------------------------------------------------


def projection_section(r: dict) -> list[str]:
    """Our projector against ASPIRE's, same map, same angles, same run."""
    ours, peer, acc = r["cryoorient"], r["peer"], r["accuracy_subset"]
    lines = [
        f"{r['n_images']:,} projections of {r['size']}×{r['size']} px from a {r['size']}³ map "
        f"({r['volume']}), Haar-random orientations. Accuracy: largest relative error on "
        f"{acc['n_images']} images against the real-space line integral (float64). "
        f"Times are the best of {len(ours['all_runs_seconds'])} runs for cryoorient, one run for the peer.",
        "",
    ]
    rows = [("projector", "seconds", "images/s", "max. rel. error vs line integral")]
    rows.append(
        (
            f"cryoorient `project` (Fourier slice, pad {ours['pad_factor']})",
            f"{ours['seconds']:.2f}",
            f"{ours['images_per_second']:.0f}",
            f"{acc['max_relative_error']:.4f}",
        )
    )
    if peer["status"] == "ok":
        versions = ", ".join(f"{k} {v}" for k, v in peer["versions"].items())
        rows.append(
            (
                f"ASPIRE `Volume.project` (NUFFT; {versions})",
                f"{peer['seconds']:.2f}",
                f"{peer['images_per_second']:.0f}",
                f"{peer['max_relative_error_vs_real_space']:.4f}",
            )
        )
        lines += table(rows)
        speedup = ours["images_per_second"] / peer["images_per_second"]
        lines += [
            f"**Side by side:** cryoorient projects {speedup:.1f}× "
            f"as many images per second as ASPIRE ({ours['seconds']:.1f} s vs {peer['seconds']:.1f} s). "
            f"ASPIRE is the more accurate ({peer['max_relative_error_vs_real_space']:.4f} vs "
            f"{acc['max_relative_error']:.4f} relative error against the line integral); the two differ "
            f"by at most {peer['max_relative_error_vs_cryoorient']:.4f} (relative) on the subset.",
            "",
        ]
    else:
        lines += table(rows)
        lines += [
            f"**The peer projector was not run** ({peer['status']}): {peer['reason']}. "
            "No ratio is reported. To run it: `python3 -m venv VENV && VENV/bin/pip install aspire`, "
            "then `ASPIRE_PYTHON=VENV/bin/python make benchmark` (or "
            "`benchmarks/run_all.py --peer-python VENV/bin/python`).",
            "",
        ]
    return lines


def recovery_section(r: dict) -> list[str]:
    """Recovery and alignment against the paper's reported times, and the scale points."""
    p, paper = r["p"], r["paper"]
    lines = [
        f"Haar-random orientations, P = {p:,} (the paper's test split). Times are the best of the "
        f"repeats. The paper's figures are those recorded in the JSON (`paper`: {paper['source']}).",
        "",
    ]
    rows = [("measurement", "this run", "paper", "paper / this run")]
    if "exact" in r:
        e = r["exact"]
        paper_s = paper["recovery_seconds_exact_p1650"]
        rows.append(
            (
                f"recovery from exact d_q: time ({e['steps']} L-BFGS steps)",
                seconds_text(e["seconds"]),
                seconds_text(paper_s),
                f"{paper_s / e['seconds']:,.0f}×",
            )
        )
        rows.append(("recovery from exact d_q: E_OR", f"{e['e_or_rad']:.1e} rad", "", ""))
    if "perturbed" in r:
        for name, label in (("variance_0.8", "variance 0.8"), ("std_0.8", "std 0.8")):
            e = r["perturbed"][name]
            paper_e = paper["e_or_variance_0.8_rad"] if name == "variance_0.8" else None
            rows.append(
                (
                    f"recovery, frozen errors of {label} (clipped): E_OR",
                    f"{e['e_or_rad']:.3f} rad ({seconds_text(e['seconds'])})",
                    f"{paper_e} rad" if paper_e is not None else "",
                    f"{paper_e / e['e_or_rad']:.1f}×" if paper_e is not None else "",
                )
            )
        e = r["perturbed"]["fresh_noise_variance_0.8"]
        rows.append(
            (
                "recovery, fresh errors of variance 0.8 per evaluation: E_OR",
                f"{e['e_or_rad']:.3f} rad ({seconds_text(e['seconds'])})",
                "",
                "",
            )
        )
    if "alignment" in r:
        paper_s = paper["alignment_seconds_p1650"]
        for name in ("exact", "variance_0.8"):
            a = r["alignment"][name]
            rows.append(
                (
                    f"alignment ({name.replace('_', ' ')}): `align_orientations`",
                    f"{seconds_text(a['fast']['seconds'])}, E_OR {a['fast']['e_or_rad']:.1e}",
                    seconds_text(paper_s),
                    f"{paper_s / a['fast']['seconds']:,.0f}×",
                )
            )
            rows.append(
                (
                    f"alignment ({name.replace('_', ' ')}): paper's SGD approach, here",
                    f"{seconds_text(a['reference']['seconds'])}, E_OR {a['reference']['e_or_rad']:.1e}",
                    "",
                    f"{paper_s / a['reference']['seconds']:,.0f}×",
                )
            )
    lines += table(rows, "lrrr")
    if "alignment" in r:
        a = r["alignment"]["exact"]
        speedup = a["reference"]["seconds"] / a["fast"]["seconds"]
        lines += [
            f"**Side by side:** the closed-form aligner is {speedup:.0f}× "
            "faster than the paper's approach run here on the same orientations, with "
            + ("equal or lower" if a["fast_not_worse"] else "HIGHER")
            + " error.",
            "",
        ]
    if "scale" in r:
        rows = [("P", "s / epoch (16 P pairs)", "s / million pairs", "init", "peak memory", "P × P matrix")]
        for s in r["scale"]["points"]:
            if s["status"] != "ok":
                rows.append((f"{s['n']:,}", s["status"], s.get("reason", "")[:60], "", "", ""))
                continue
            rows.append(
                (
                    f"{s['n']:,}",
                    f"{s['seconds_per_epoch']:.2f}",
                    f"{s['seconds_per_million_pairs']:.2f}",
                    seconds_text(s["init_seconds"]),
                    f"+{s['peak_rss_above_baseline_mib']:.0f} MiB",
                    f"{s['full_matrix_would_need_mib'] / 1024:,.1f} GiB",
                )
            )
        lines += ["Sampled-pair recovery from a distance function, each P in a fresh interpreter:", ""]
        lines += table(rows)
        if r["scale"]["scaling"]:
            slope = r["scale"]["scaling"]["log_log_slope_seconds_per_epoch_vs_n"]
            lines += [f"Time per epoch grows as P^{slope:.2f} (log-log slope; 1 is linear).", ""]
    return lines


def reconstruction_section(r: dict) -> list[str]:
    """Fourier against CGLS, with true, random and CTF-affected data."""
    runs = r["runs"]
    repeats = len(next(iter(runs.values()))["all_runs_seconds"])
    lines = [
        f"Map {r['map']['name']} at {r['size']}³ ({r['map']['voxel_size']:.3f} Å voxels; Nyquist "
        f"{r['nyquist_resolution_angstrom']:.2f} Å), {r['n_images']:,} noiseless projections at "
        f"Haar-random orientations; times are the best of {repeats} "
        f"runs with {r['machine']['torch_threads']} torch thread(s). Resolution against the true map; "
        "where the FSC never crosses the threshold the Nyquist bound is shown.",
        "",
    ]
    rows = [
        ("configuration", "seconds", "iterations", "data residual", "FSC 0.5", "FSC 0.143", "FSC at Nyquist")
    ]
    for name, run in runs.items():
        rows.append(
            (
                name,
                f"{run['seconds']:.1f}",
                str(run["iterations"]),
                f"{run['residuals'][-1]:.1e}",
                f"{run['resolution_fsc_0.5_angstrom']:.2f} Å",
                f"{run['resolution_fsc_0.143_angstrom']:.2f} Å",
                f"{run['fsc_at_nyquist']:.3f}",
            )
        )
    lines += table(rows)
    fourier = runs.get("fourier")
    cg = runs.get("cgls (Fourier start, preconditioned)")
    plain = runs.get("cgls (from zero, plain)")
    if fourier and cg and plain:
        fit = fourier["residuals"][-1] / cg["residuals"][-1]
        lines += [
            "**Side by side:** CGLS as configured by default (Fourier start, preconditioned) takes "
            f"{cg['seconds'] / fourier['seconds']:.1f}× the Fourier solver's time "
            f"({cg['seconds']:.1f} s vs {fourier['seconds']:.1f} s), plain CGLS "
            f"from zero {plain['seconds'] / fourier['seconds']:.1f}×; least squares fits the data "
            f"{fit:.0f}× better (residual {cg['residuals'][-1]:.1e} "
            f"vs {fourier['residuals'][-1]:.1e}).",
            "",
        ]
    return lines


def training_section(r: dict) -> list[str]:
    """Throughput of the default and the paper configuration, and what it means for a training."""
    profiles = r["profiles"]
    lines = [f"Dataset: {r['dataset']}. Timing: {r['timing']}. Per epoch: {r['epoch_extrapolation']}.", ""]
    rows = [
        (
            "profile",
            "network, recipe, d_f",
            "px",
            "device",
            "s / step",
            "images / step",
            "pairs / step",
            "images/s",
            "pairs/s",
            "steps / epoch",
            "per epoch",
            "epochs",
            "whole training",
        )
    ]
    for name, p in profiles.items():
        c = p["config"]
        rows.append(
            (
                name,
                f"{c['architecture']} (n_f {c['n_features']}), {c['recipe']}, {c['distance']}",
                str(p["network_image_size"]),
                p["device"],
                f"{p['median_step_seconds']:.2f}",
                f"{p['images_per_step']:.0f}",
                str(p["pairs_per_step"]),
                f"{p['images_per_second']:.0f}",
                f"{p['pairs_per_second']:.0f}",
                str(p["steps_per_epoch"]),
                seconds_text(p["seconds_per_epoch"]),
                str(p["epochs"]),
                seconds_text(p["training_hours"] * 3600),
            )
        )
    lines += table(rows, "llllrrrrrrrrr")
    lines.append(
        "s / step: median of "
        + ", ".join(f"{p['timed_steps']} ({name})" for name, p in profiles.items())
        + " timed steps after "
        + ", ".join(f"{p['warmup_steps']}" for p in profiles.values())
        + " warm-up step(s); training on "
        + ", ".join(sorted({f"{p['n_train']:,}" for p in profiles.values()}))
        + " images; images / step counts the distinct images through the network."
    )
    lines.append("")
    ratios = r.get("ratios_default_over_paper")
    if ratios:
        d, p = profiles["default"], profiles["paper"]
        lines += [
            f"**Side by side:** the default configuration processes {ratios['images_per_second']:.1f}× as "
            f"many images per second as the paper's ({d['images_per_second']:.0f} vs "
            f"{p['images_per_second']:.0f}) and {ratios['pairs_per_second']:.0f}× as many pairs "
            f"(all {d['pairs_per_step']:,} pairs of a batch of {d['config']['batch_size']} vs "
            f"{p['pairs_per_step']} pairs). On this machine the paper profile's {p['epochs']} epochs would "
            f"take {seconds_text(p['training_hours'] * 3600)} "
            f"({seconds_text(p['seconds_per_epoch'])} per epoch); the default profile's {d['epochs']} "
            f"take {seconds_text(d['training_hours'] * 3600)}.",
            "",
        ]
    return lines


def common_lines_section(r: dict) -> list[str]:
    """Learned distances against common lines on the same projections, errors and times."""
    from cryoorient.baseline_comparison import METHODS

    lines = [
        f"{r['dataset']}: the same {r['subset_size']} projections (seeded subset) for the learned method "
        f"and for common lines at each σ², the same noise draw; class averages made from the whole test "
        f"split ({r['pool_size']:,} images), {r['subset_size']} of them oriented, each scored against its "
        f"reference image. Common lines on images Fourier-downsampled to {r['box_size']} px (ASPIRE "
        f"{r['aspire']}). E_OR: the paper's, after the best O(4) transform; E_OR,reg: after a global "
        "rotation and the mirror only (what a user without the truth reaches). Radians.",
        "",
    ]
    rows = [("σ²", "method", "E_OR mean", "E_OR median", "E_OR,reg mean", "E_OR,reg median", "time")]
    for level, methods in r["levels"].items():
        for method, row in methods.items():
            errors = [f"{row[k]:.3f}" for k in ("e_or", "e_or_median", "e_reg", "e_reg_median")]
            rows.append((level, METHODS[method], *errors, seconds_text(row["seconds"])))
    lines += table(rows, "llrrrrr")
    training = sum(r["training_seconds_per_stage"].values())
    lines += [
        "Times are wall times of the run that computed them, the three methods one after the other in one "
        "process; the "
        "learned method's include the distances, the recovery and the gauge search, not the training of "
        f"the estimators (done once: {seconds_text(training)} for the whole noise curriculum on this "
        "machine, recorded when they were trained). Class averages: classification and averaging, then "
        "common lines." + (" Read from the cache of notebook 08's identical run (`--fresh` times again)."
                         if r.get("cached") else ""),
        "",
    ]
    return lines


def recover_scale_section(r: dict) -> list[str]:
    """Time per stage and peak memory of the recover path from images, at growing P."""
    model = r["model"]
    lines = [
        f"`cryoorient recover`'s path from {r['box_size']}-px particles ({r['particles']}): a "
        f"{model['architecture']} network (n_f {model['n_features']}, {model['distance']} d_f, "
        f"{model['image_size']}-px input) with random weights, the dense (P, P) matrix up to "
        f"{r['dense_limit']:,} particles and sampled pairs beyond, then the gauge fixing. Each P in its "
        "own interpreter; peak memory is its resident high-water mark (VmHWM) with the particles in "
        "memory, the simulation of the particles excluded.",
        "",
    ]
    rows = [
        ("P", "path", "embedding", "distances + recovery", "gauge", "total", "peak memory", "of which",
         "the command: time", "its peak memory")
    ]
    for p in r["points"]:
        if p["status"] != "ok":
            rows.append((f"{p['n']:,}", p["status"], p.get("reason", "")[:60], *[""] * 7))
            continue
        cli = p.get("cli") or {}
        command = (seconds_text(cli["seconds"]), f"{cli['peak_rss_mib'] / 1024:.2f} GiB") \
            if cli.get("peak_rss_mib") is not None else ("", "")
        s, stages = p["seconds"], p.get("stage_peak_rss_mib")
        split = ""
        if stages:
            before = max(stages["embedding"], stages["recovery"])
            split = f"{before / 1024:.2f} GiB before the gauge step"
        rows.append(
            (
                f"{p['n']:,}",
                p["path"].split(":")[0],
                seconds_text(s["embedding"]),
                seconds_text(s["recovery"]),
                seconds_text(s["gauge"]),
                seconds_text(s["total"]),
                f"{p['peak_rss_mib'] / 1024:.2f} GiB",
                split,
                *command,
            )
        )
    lines += table(rows, "llrrrrrlrr")
    lines += [
        "The command: `cryoorient recover STAR --model DIR` itself, in its own process (reading the "
        "stack, the preprocessing, the path above, writing the STAR file); its peak memory is the "
        "process's (ru_maxrss).",
        "",
    ]
    target = r["target"]
    if r.get("meets_target") is not None:
        lines += [
            f"Target: the whole path at P = {target['n']:,} within {target['peak_rss_gib']:g} GiB: "
            + ("**met**" if r["meets_target"] else "**not met**")
            + ("" if r.get("cli_meets_target") is None else
               "; by the command: " + ("**met**" if r["cli_meets_target"] else "**not met**")) + ".",
            "",
        ]
    return lines


MATCHING_TARGETS = {"matching": 600.0, "refinement": 300.0}
"""Issue 32's time targets for the 1,650 test images of 64 px, seconds."""


def matching_section(r: dict) -> list[str]:
    """Projection matching against the true map, and the refined learned start, on the test split."""
    grid = r["grid"]
    lines = [
        f"{r['map']} at {r['box_size']} px: every test image matched against projections of the true map, "
        f"a global search over {grid['orientations']:,} orientations ({grid['directions']:,} directions × "
        f"{grid['in_plane']} in-plane angles, {grid['spacing_degrees']:.1f}° apart; band-limited to "
        f"{r['max_frequency']:g} cycles/px), then a local search to Nyquist. Errors are d_q to the truth "
        "(matching works in the map's frame), radians."
        + ("" if r.get("refinement_rounds") is None else
           " Refined: the learned start (distances → recovery → gauge, no truth) refined against half "
           f"maps of the images themselves (no map, at most {r['refinement_rounds']} rounds); its error is "
           "the paper's E_OR (O(4)), its time the refinement's alone; FSC 0.143 between its half maps, "
           "FSC 0.5 against the true map (evaluation only)."),
        "",
    ]
    rows = [
        ("σ²", "P", "stage", "mean", "median", "< 5°", "< 10°", "time", "half maps 0.143", "vs truth 0.5")
    ]
    worst = {"matching": 0.0, "refinement": 0.0}
    for level, row in r["levels"].items():
        for stage in ("global", "local"):
            e = row[stage]
            shares = (f"{e['within_5_degrees']:.1%}", f"{e['within_10_degrees']:.1%}")
            rows.append((level, f"{row['p']:,}", f"matching, {stage}", f"{e['mean']:.3f}",
                         f"{e['median']:.3f}", *shares, seconds_text(e["seconds"]), "", ""))
        worst["matching"] = max(worst["matching"], row["global"]["seconds"] + row["local"]["seconds"])
        refined = row.get("refined")
        if refined:
            rows.append((level, f"{refined['n']:,}", f"learned, refined ({refined['rounds']} rounds)",
                         f"{refined['e_or']:.3f}", f"{refined['e_or_median']:.3f}",
                         f"{refined['within_5']:.1%}", f"{refined['within_10']:.1%}",
                         seconds_text(refined["seconds"]),
                         f"{refined['half_map_resolution']:.1f} Å", f"{refined['resolution']:.1f} Å"))
            worst["refinement"] = max(worst["refinement"], refined["seconds"])
    lines += table(rows, "lrlrrrrrrr")
    verdicts = [
        f"{what} of {r['levels'][next(iter(r['levels']))]['p']:,} images in at most "
        f"{seconds_text(MATCHING_TARGETS[what])}: slowest level {seconds_text(worst[what])}, "
        + ("**met**" if worst[what] <= MATCHING_TARGETS[what] else "**not met**")
        for what in ("matching", "refinement") if worst[what] > 0
    ]
    lines += ["Targets (issue 32): " + "; ".join(verdicts) + ".", ""]
    return lines


SECTIONS = {
    "projection": ("Projection: cryoorient vs ASPIRE", projection_section),
    "recovery": ("Orientation recovery and alignment", recovery_section),
    "reconstruction": ("Reconstruction: Fourier vs CGLS", reconstruction_section),
    "training": ("Distance learning throughput", training_section),
    "common_lines": ("Learned distances vs common lines", common_lines_section),
    "recover_scale": ("Recovery from images at scale: time and memory", recover_scale_section),
    "matching": ("Projection matching and refinement", matching_section),
}


RUNS_MARKER = "<!-- run_all runs: "


def previous_runs(report: Path, results: dict[str, dict]) -> tuple[dict[str, dict], str]:
    """The run records and invocation saved in an earlier report, for results still the same."""
    try:
        line = next(x for x in report.read_text().splitlines() if x.startswith(RUNS_MARKER))
        saved = json.loads(line.removeprefix(RUNS_MARKER).removesuffix(" -->"))
    except (OSError, StopIteration, json.JSONDecodeError):
        return {}, ""
    runs = {
        name: run
        for name, run in saved.get("runs", {}).items()
        if name in results and run.get("results_date") == results[name]["date"]
    }
    return runs, saved.get("invocation", "") if runs else ""


def render_report(results: dict[str, dict], runs: dict[str, dict] | None = None, invocation: str = "") -> str:
    """The Markdown report from the benchmarks' results and the runs that wrote them, when known."""
    now = datetime.datetime.now(datetime.timezone.utc)
    here = machine_info()
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run_all.py` (`make benchmark`); do not edit by hand. Every number is "
        "read from `benchmarks/results/*.json`, written by the benchmark scripts; the table below names "
        "the CPU each ran on. Timings are of that machine and move with its load; they are not the paper's.",
        "",
        "## Machines",
        "",
        "Where this report was written (`--report-only` reuses results measured elsewhere: see the table):",
        "",
        f"- CPU: {here['cpu_model']}, {here['cpu_count']} cores (`os.cpu_count()`); no GPU was used "
        "unless a section says so",
        f"- PyTorch {here['torch']} (default {here['torch_threads']} CPU threads), NumPy {here['numpy']}, "
        f"Python {here['python']}",
        f"- platform: {here['platform']}",
        f"- report written {now.isoformat(timespec='seconds')}, commit `{git_commit()}`",
    ]
    if invocation:
        lines.append(f"- invocation: `{invocation}`")
    lines.append("")
    rows = [
        (
            "benchmark",
            "results written (UTC)",
            "CPU",
            "torch threads",
            "load (1 min)",
            "run time",
            "arguments",
        )
    ]
    for name in BENCHMARKS:
        run = (runs or {}).get(name)
        if name not in results:
            rows.append((name, "no results", "", "", "", "", ""))
            continue
        m = results[name]["machine"]
        status = ""
        if run is not None:
            status = seconds_text(run["seconds"])
            if run["returncode"] != 0:
                status += f" (FAILED, exit {run['returncode']}; results are older)"
        else:
            status = "no run record"
        rows.append(
            (
                name,
                results[name]["date"].replace("+00:00", ""),
                f"{m['cpu_model']} × {m['cpu_count']}",
                str(m["torch_threads"]),
                load_text(m, run),
                status,
                " ".join(run["arguments"]) if run is not None else "",
            )
        )
    lines += table(rows, "lllrlrl")
    if runs:
        total = sum(run["seconds"] for run in runs.values())
        lines += [f"Total run time of the benchmarks: {seconds_text(total)}.", ""]
    lines += [
        "The load is the 1-minute load average before → after (or at the end of) each benchmark: above "
        "the torch threads used, other work shared the cores and the times are pessimistic.",
        "",
    ]
    for name, (title, section) in SECTIONS.items():
        lines += [f"## {title}", ""]
        if name not in results:
            lines += [f"No results: `benchmarks/results/{name}.json` is missing.", ""]
            continue
        lines += section(results[name])
    # the run records, so that --report-only keeps them while the JSON files are unchanged
    lines += [RUNS_MARKER + json.dumps({"invocation": invocation, "runs": runs or {}}) + " -->"]
    return "\n".join(lines).rstrip() + "\n"


def write_report(text: str, path: Path) -> None:
    """Write the report atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (unless ``--report-only``), then write the report; 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", default=DEFAULT_PEER, help="interpreter with aspire, for projection")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of every benchmark (default 1: steady on a machine shared with other work)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=BENCHMARKS, help="benchmarks not to run")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the JSON")
    parser.add_argument(
        "--output", type=Path, default=REPORT, help="the report (default paper/benchmarks.md)"
    )
    args = parser.parse_args(argv)

    runs: dict[str, dict] = {}
    if not args.report_only:
        if not args.peer_python or not Path(args.peer_python).exists():
            where = args.peer_python or "(none given: set ASPIRE_PYTHON or pass --peer-python)"
            print(f"note: no peer interpreter {where}; the projection benchmark records why")
        for name, arguments in commands(args.peer_python, args.threads).items():
            if name not in args.skip:
                runs[name] = run_benchmark(name, arguments, args.threads)
    results = load_results()
    invocation = ("benchmarks/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    if args.report_only:
        runs, invocation = previous_runs(args.output, results)
    for name, run in runs.items():
        run["results_date"] = results.get(name, {}).get("date")
    text = render_report(results, runs, invocation)
    write_report(text, args.output)
    print(f"\nwrote {args.output}")
    failed = [name for name, run in runs.items() if run["returncode"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
