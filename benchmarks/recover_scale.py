"""Time and peak memory of ``cryoorient recover``'s path from particle images, P = 1,000 to 20,000.

The path :func:`cryoorient.pipeline.recover_from_images` takes, then the gauge fixing the command
line runs after it, in three timed stages:

``embedding``
    features ``G_w(p)`` of every image, once (:func:`cryoorient.pipeline.embed_images`);
``recovery``
    the distances and the orientation recovery (:func:`cryoorient.pipeline.recover_from_features`):
    the dense ``(P, P)`` matrix up to ``dense_limit`` particles, sampled pairs of features beyond;
``gauge``
    :func:`cryoorient.gauge.fix_gauge` from the images (common lines; seed 0, defaults).

The estimator is a randomly initialised network of the notebooks' default architecture
(``cryoorient.model_cache.DEFAULT_MODEL``: compact, n_f = 128, orientation ``d_f``, 32-px input):
accuracy is not the point, time and memory are, and they do not depend on the weights. The
particles are projections of the pseudo-protein (64 px, Haar-random orientations) with white noise
of σ² = 1, held as the command line holds them (the stack as read, and its normalised float32 copy).

Each size runs in its own interpreter; its peak memory is the ``VmHWM`` of that process, reset
(``/proc/self/clear_refs``) once the particles are made so that it covers what ``recover`` holds
and allocates, not the simulation, and reset again before each stage for the per-stage peaks. The
target: the whole path at P = 20,000 within 4 GB (GiB) of peak resident memory.

Prints a table and writes ``benchmarks/results/recover_scale.json`` with the machine it ran on.

Usage::

    .venv/bin/python benchmarks/recover_scale.py [--sizes 1000 5000 20000] [--threads 1]
        [--dense-limit N] [--device cpu]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, print_table, status_mib, write_json

from cryoorient.density import load_map
from cryoorient.gauge import fix_gauge
from cryoorient.geometry import quaternion_to_matrix
from cryoorient.model_cache import DEFAULT_MODEL
from cryoorient.paths import git_commit
from cryoorient.pipeline import DENSE_LIMIT, embed_images, recover_from_features
from cryoorient.projection import add_noise, project
from cryoorient.sampling import sample_orientations
from cryoorient.siamese import SiameseDistance

RESULT = Path(__file__).resolve().parent / "results" / "recover_scale.json"
BOX = 64
NOISE_VARIANCE = 1.0
TARGET = {"n": 20000, "peak_rss_gib": 4.0}
STAGES = ("embedding", "recovery", "gauge")


def reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current resident size (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def particles(n: int, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """(n, 64, 64) noisy projections of the pseudo-protein: as read (float32) and normalised."""
    volume = torch.from_numpy(load_map("pseudo", box_size=BOX).data)
    q = sample_orientations(n, seed=seed)
    clean = project(volume, quaternion_to_matrix(q).float(), device="cpu")
    clean = (clean - clean.mean()) / clean.std()
    stack = add_noise(clean, variance=NOISE_VARIANCE, seed=seed + 1).numpy()
    del clean
    images = torch.from_numpy(stack).float()
    images = (images - images.mean()) / images.std()  # what `cryoorient recover` does
    return stack, images


def worker(
    n: int, threads: int, seed: int, device: str | None, dense_limit: int, shifts: bool = False
) -> dict:
    """One size in this interpreter: the three stages' times and peak memory.

    ``shifts``: pass (zero) origins to the gauge fixing, as ``cryoorient recover`` passes the STAR
    file's, which makes it undo them first (a Fourier shift of the whole stack).
    """
    torch.set_num_threads(threads)
    stack, images = particles(n, seed)
    gc.collect()
    resettable = reset_peak()
    cuda = device is not None and device.startswith("cuda") or device is None and torch.cuda.is_available()
    rss_with_data = status_mib("VmRSS")
    torch.manual_seed(seed)
    config = [DEFAULT_MODEL[k] for k in ("architecture", "n_features", "distance")]
    model = SiameseDistance(*config).to(device or ("cuda" if cuda else "cpu"))
    seconds, peaks, cuda_peaks = {}, {}, {}

    def stage(name: str, run):
        reset_peak()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = run()
        if cuda:
            torch.cuda.synchronize()
            cuda_peaks[name] = torch.cuda.max_memory_allocated() / 2**20
        seconds[name] = time.perf_counter() - start
        peaks[name] = status_mib("VmHWM")
        return out

    features = stage(
        "embedding",
        lambda: embed_images(model, images, DEFAULT_MODEL["image_size"], device=device, progress=False),
    )
    recovery, path = stage(
        "recovery",
        lambda: recover_from_features(model, features, dense_limit=dense_limit, seed=seed, device=device),
    )
    origins = torch.zeros(n, 2, dtype=torch.float64) if shifts else None
    gauge = stage("gauge", lambda: fix_gauge(images, recovery.quaternions.cpu(), shifts=origins, seed=0,
                                             device=device, progress=False))
    del stack
    return {
        "n": n,
        "path": path,
        "dense": path.startswith("dense"),
        "gauge_with_shifts": shifts,
        "seconds": seconds | {"total": sum(seconds.values())},
        "peak_rss_mib": max(peaks.values()) if resettable else status_mib("VmHWM"),
        "stage_peak_rss_mib": peaks if resettable else None,
        "peak_covers": "the recover path with the particles in memory (reset after simulating them)"
        if resettable else "the whole process, simulation included (VmHWM could not be reset)",
        "rss_with_particles_mib": rss_with_data,
        "particles_mib": 2 * n * BOX * BOX * 4 / 2**20,
        "dense_matrix_mib": n * n * 8 / 2**20,
        "cuda_peak_allocated_mib": cuda_peaks or None,
        "device": str(recovery.quaternions.device),
        "recovery_steps": recovery.steps,
        "recovery_epochs": recovery.epochs,
        "recovery_converged": recovery.converged,
        "gauge_class": gauge.gauge_class,
    }


_CLI = (
    "import resource, sys\n"
    "from cryoorient.cli import main\n"
    "status = main(sys.argv[1:])\n"
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(status)\n"
)


def cli_point(n: int, seed: int, threads: int) -> dict:
    """The command itself: ``cryoorient recover STAR --model DIR`` on ``n`` particles, in its own process.

    The particles are written as a RELION stack and STAR file, the network (random weights, the
    notebooks' architecture) as a model folder with its training record; the command's whole
    process is measured (imports, reading the stack, preprocessing, recovery, gauge, writing).
    With random weights the check finds the orientations at chance: exit status 3, as it should.
    """
    import tempfile

    from cryoorient.model_cache import model_config
    from cryoorient.model_input import InputRecord, write_record
    from cryoorient.relion import ParticleStack, write_particles

    stack, _ = particles(n, seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pixel = load_map("pseudo", box_size=BOX).voxel_size
        given = ParticleStack(stack, np.zeros((n, 3)), np.zeros((n, 2)), pixel)
        star = write_particles(folder / "stack", given)
        del given
        del stack
        torch.manual_seed(seed)
        config = model_config(seed=seed)
        model = SiameseDistance(config.architecture, config.n_features, config.distance)
        (folder / "model").mkdir()
        torch.save({"model": model.state_dict(), "config": config.to_dict()}, folder / "model" / "model.pt")
        write_record(folder / "model", InputRecord.of_training(BOX, pixel, 0.0))
        command = [sys.executable, "-c", _CLI, "recover", str(star), "--model", str(folder / "model"),
                   "-o", str(folder / "out.star"), "--quiet", "--device", "cpu"]
        env = os.environ | {"OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        seconds = time.perf_counter() - start
    peak = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("peak_rss_kib")]
    return {
        "command": "cryoorient recover STAR --model DIR -o OUT --quiet --device cpu",
        "exit_status": proc.returncode,
        "seconds": seconds,
        "peak_rss_mib": int(peak[0]) / 1024 if peak else None,
        "stderr_tail": [line.replace(tmp, "TMP") for line in proc.stderr.strip().splitlines()[-2:]],
    }


def run_size(n: int, args: argparse.Namespace) -> dict:
    """``worker`` for one size in a fresh interpreter (its peak memory is this size's alone)."""
    command = [sys.executable, __file__, "--worker", str(n), "--threads", str(args.threads),
               "--seed", str(args.seed), "--dense-limit", str(args.dense_limit)]
    if args.device:
        command += ["--device", args.device]
    if args.shifts:
        command.append("--shifts")
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"n": n, "status": "failed", "reason": " | ".join(tail)}
    point = json.loads(proc.stdout.strip().splitlines()[-1])
    point = {"status": "ok", **point, "process_seconds": time.perf_counter() - start}
    if args.cli:
        point["cli"] = cli_point(n, args.seed, args.threads)
    return point



def main(argv: list[str] | None = None) -> dict:
    """Run each size in its own interpreter, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000], help="particles P")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the particles, weights and recovery")
    parser.add_argument("--dense-limit", type=int, default=DENSE_LIMIT,
                        help=f"most particles recovered from the dense matrix (default {DENSE_LIMIT})")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    parser.add_argument("--shifts", action="store_true",
                        help="give the gauge fixing (zero) particle origins, as `cryoorient recover` does")
    parser.add_argument("--no-cli", dest="cli", action="store_false",
                        help="skip running the `cryoorient recover` command itself at each size")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        point = worker(args.worker, args.threads, args.seed, args.device, args.dense_limit, args.shifts)
        print(json.dumps(point))
        return {}
    points: list[dict] = []
    result = {
        "benchmark": "recover_scale",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(
            torch_threads=args.threads, load_average_1_5_15_min_before=list(os.getloadavg())
        ),
        "model": {k: DEFAULT_MODEL[k] for k in ("architecture", "n_features", "distance", "image_size")}
        | {"weights": "random (seeded); time and memory do not depend on them"},
        "particles": f"projections of the pseudo-protein, {BOX}×{BOX} px, Haar-random orientations, "
        f"white noise σ² = {NOISE_VARIANCE:g}, normalised as `cryoorient recover` does",
        "box_size": BOX,
        "dense_limit": args.dense_limit,
        "stages": {
            "embedding": "features of every image (cryoorient.pipeline.embed_images)",
            "recovery": "distances and orientation recovery (cryoorient.pipeline.recover_from_features)",
            "gauge": "cryoorient.gauge.fix_gauge(images, quaternions, seed=0), defaults"
            + (", with zero shifts (origins) as the command line passes them" if args.shifts else ""),
        },
        "target": TARGET,
        "points": points,
    }
    for n in args.sizes:
        print(f"P = {n:,} ...", flush=True)
        points.append(run_size(n, args))
        result["machine"]["load_average_1_5_15_min_after"] = list(os.getloadavg())
        write_json(result, RESULT, indent=2)
    at_target = [p for p in points if p["status"] == "ok" and p["n"] == TARGET["n"]]
    result["meets_target"] = (
        at_target[0]["peak_rss_mib"] <= TARGET["peak_rss_gib"] * 1024 if at_target else None
    )
    cli_at_target = [p["cli"] for p in at_target if "cli" in p and p["cli"]["peak_rss_mib"] is not None]
    result["cli_meets_target"] = (
        cli_at_target[0]["peak_rss_mib"] <= TARGET["peak_rss_gib"] * 1024 if cli_at_target else None
    )
    write_json(result, RESULT, indent=2)
    header = ["P", "path", *(f"{s} (s)" for s in STAGES), "total (s)", "peak RSS (MiB)"]
    rows = [header + [f"peak {s} (MiB)" for s in STAGES] + ["recover command (s)", "its peak RSS (MiB)"]]
    for p in points:
        if p["status"] != "ok":
            rows.append([f"{p['n']:,}", "FAILED: " + p["reason"][:60]] + [""] * (len(rows[0]) - 2))
            continue
        stages = p["stage_peak_rss_mib"] or {}
        rows.append([f"{p['n']:,}", p["path"].split(",")[0], *(f"{p['seconds'][s]:.1f}" for s in STAGES),
                     f"{p['seconds']['total']:.1f}", f"{p['peak_rss_mib']:.0f}",
                     *(f"{stages[s]:.0f}" if s in stages else "" for s in STAGES),
                     *((f"{p['cli']['seconds']:.1f}", f"{p['cli']['peak_rss_mib']:.0f}")
                       if p.get("cli") and p["cli"]["peak_rss_mib"] is not None else ("", ""))])
    print_table(rows)
    if result["meets_target"] is not None:
        print(f"target (P = {TARGET['n']:,} within {TARGET['peak_rss_gib']:g} GiB): "
              + ("met" if result["meets_target"] else "NOT met") + " by the path"
              + ("" if result["cli_meets_target"] is None else
                 ", " + ("met" if result["cli_meets_target"] else "NOT met") + " by the command"))
    print(f"wrote {RESULT.name}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
