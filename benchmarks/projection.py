"""Benchmark of :func:`cryoorient.projection.project` at the paper's scale, beside a peer projector.

Times ``project`` for ``--n`` images (default 5,000, the paper's P) of ``--size`` px (default 116)
from a synthetic ``size³`` map, checks its per-image accuracy against the real-space line integral
:func:`cryoorient._reference.project_real_space` on a small subset, and runs ASPIRE's
``Volume.project`` (a NUFFT projector) on the same map and angles in a *separate* interpreter
(``--peer-python``, a throwaway virtual environment with ``pip install aspire``; ASPIRE is not a
dependency of cryoorient). ASPIRE samples the volume's transform at ``R (k_x, k_y, 0)``, so it gets
``R = A^T`` for our RELION matrix ``A``, and it returns the line sum divided by the box size.

Prints a table and writes ``benchmarks/results/projection.json``.

Usage::

    .venv/bin/python benchmarks/projection.py [--n 5000] [--size 116] [--subset 8]
        [--peer-python PYTHON]  (default: $ASPIRE_PYTHON)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, print_table

from cryoorient._reference import project_real_space
from cryoorient.geometry import quaternion_to_matrix
from cryoorient.projection import project
from cryoorient.sampling import sample_orientations

RESULTS = Path(__file__).resolve().parent / "results" / "projection.json"

# Runs in the peer's interpreter: times ASPIRE's projector and saves the accuracy subset.
PEER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import aspire
    from aspire.volume import Volume

    folder, subset = sys.argv[1], int(sys.argv[2])
    vol = Volume(np.load(folder + "/volume.npy"))
    rotations = np.ascontiguousarray(np.load(folder + "/aspire_rotations.npy"))  # R = A^T
    size = vol.resolution
    vol.project(rotations[:8])  # warm-up
    start = time.perf_counter()
    images = vol.project(rotations).asnumpy()
    seconds = time.perf_counter() - start
    np.save(folder + "/peer_subset.npy", images[:subset] * size)  # ASPIRE returns the line sum / L
    versions = {"aspire": aspire.__version__}
    try:
        import finufft
        versions["finufft"] = finufft.__version__
    except Exception:  # noqa: BLE001 - only a version label
        pass
    print(json.dumps({"seconds": seconds, "n": int(len(images)), "versions": versions}))
    """
)


def synthetic_volume(size: int) -> torch.Tensor:
    """An asymmetric molecule-like map of anisotropic Gaussian blobs, scaled with the box."""
    s = size / 32
    axis = torch.arange(size, dtype=torch.float64) - size // 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    blobs = [
        ((4, -3, 2), (2.5, 2.0, 3.0), 1.0),
        ((-5, 2, -4), (2.0, 2.5, 2.0), 0.7),
        ((1, 6, 5), (3.0, 2.0, 2.2), 0.5),
        ((-2, -6, 0), (2.2, 3.0, 2.0), 0.8),
    ]
    vol = torch.zeros(size, size, size, dtype=torch.float64)
    for (x0, y0, z0), (sx, sy, sz), amplitude in blobs:
        vol += amplitude * torch.exp(
            -((x - s * x0) ** 2) / (2 * (s * sx) ** 2)
            - (y - s * y0) ** 2 / (2 * (s * sy) ** 2)
            - (z - s * z0) ** 2 / (2 * (s * sz) ** 2)
        )
    return vol


def relative_errors(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-image ``‖a - b‖ / ‖b‖``."""
    diff = (images.astype(np.float64) - reference).reshape(len(reference), -1)
    return np.linalg.norm(diff, axis=1) / np.linalg.norm(reference.reshape(len(reference), -1), axis=1)


def run_peer(python: str, volume: np.ndarray, rotations: np.ndarray, subset: int) -> dict:
    """Run ASPIRE in its own interpreter; returns timing, versions and the subset, or the failure."""
    if not python:
        return {"status": "not run", "reason": "no interpreter given (--peer-python or ASPIRE_PYTHON)"}
    if not Path(python).exists():
        return {"status": "not run", "reason": f"no interpreter at {python} (see benchmarks/README.md)"}
    with tempfile.TemporaryDirectory() as folder:
        np.save(f"{folder}/volume.npy", volume.astype(np.float32))
        np.save(f"{folder}/aspire_rotations.npy", rotations.transpose(0, 2, 1).astype(np.float32))
        proc = subprocess.run(
            [python, "-c", PEER_SCRIPT, folder, str(subset)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return {"status": "failed", "reason": " | ".join(tail)}
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["subset_images"] = np.load(f"{folder}/peer_subset.npy")
    result["status"] = "ok"
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table, write the JSON results and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="number of projections (default 5000)")
    parser.add_argument("--size", type=int, default=116, help="box size in px (default 116)")
    parser.add_argument(
        "--subset", type=int, default=8, help="images checked against the real-space reference"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="project's batch_size")
    parser.add_argument(
        "--peer-python",
        default=os.environ.get("ASPIRE_PYTHON", ""),
        help="interpreter with aspire (default: $ASPIRE_PYTHON; none: the peer is not run)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    volume = synthetic_volume(args.size)
    rotations = quaternion_to_matrix(sample_orientations(args.n, "uniform", seed=0))  # (n, 3, 3) float64
    vol32 = volume.to(torch.float32)

    project(vol32, rotations[:16], device="cpu")  # warm-up
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        images = project(vol32, rotations, batch_size=args.batch_size, device="cpu")
        timings.append(time.perf_counter() - start)
    seconds = min(timings)

    k = min(args.subset, args.n)
    start = time.perf_counter()
    reference = project_real_space(volume, rotations[:k]).numpy()  # float64
    reference_seconds = time.perf_counter() - start
    ours = images[:k].numpy()
    ours_vs_reference = relative_errors(ours, reference)

    peer = run_peer(args.peer_python, volume.numpy(), rotations.numpy(), k)
    if peer["status"] == "ok":
        peer_images = peer.pop("subset_images")
        peer["max_relative_error_vs_real_space"] = float(relative_errors(peer_images, reference).max())
        peer["max_relative_error_vs_cryoorient"] = float(
            relative_errors(ours, peer_images.astype(np.float64)).max()
        )
        peer["images_per_second"] = peer["n"] / peer["seconds"]

    results = {
        "benchmark": "projection",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "volume": f"synthetic: 4 anisotropic Gaussian blobs in a {args.size}^3 box",
        "n_images": args.n,
        "size": args.size,
        "cryoorient": {
            "function": "cryoorient.projection.project",
            "pad_factor": 2,
            "batch_size": args.batch_size,
            "seconds": seconds,
            "all_runs_seconds": timings,
            "images_per_second": args.n / seconds,
        },
        "accuracy_subset": {
            "n_images": k,
            "reference": "cryoorient._reference.project_real_space (float64 line sum)",
            "reference_seconds": reference_seconds,
            "max_relative_error": float(ours_vs_reference.max()),
            "mean_relative_error": float(ours_vs_reference.mean()),
        },
        "peer": {"name": "ASPIRE Volume.project (NUFFT), separate venv", **peer},
        "machine": machine_info(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    rows = [("projector", "images", "size", "seconds", "images/s", "max rel. err. (subset)")]
    rows.append(
        (
            "cryoorient.project",
            str(args.n),
            f"{args.size}²",
            f"{seconds:.2f}",
            f"{args.n / seconds:.0f}",
            f"{ours_vs_reference.max():.4f} vs real space",
        )
    )
    if peer["status"] == "ok":
        rows.append(
            (
                f"ASPIRE {peer['versions'].get('aspire', '')} project",
                str(peer["n"]),
                f"{args.size}²",
                f"{peer['seconds']:.2f}",
                f"{peer['images_per_second']:.0f}",
                f"{peer['max_relative_error_vs_real_space']:.4f} vs real space",
            )
        )
    print_table(rows)
    if peer["status"] == "ok":
        difference = peer["max_relative_error_vs_cryoorient"]
        print(f"cryoorient vs ASPIRE on the subset: max relative difference {difference:.4f}")
    else:
        print(f"peer projector {peer['status']}: {peer['reason']}")
    print(f"machine: {results['machine']['cpu_model']}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
