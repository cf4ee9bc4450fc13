"""Benchmark of :func:`cryoorient.reconstruction.reconstruct` at the notebooks' scale.

Reconstructs ``--map`` (default ``5j0n``, the paper's map, at ``--size`` = 64 px; the embedded
pseudo-protein when the map cannot be found: set ``CRYOORIENT_MAPS`` to the folder holding
``5j0n.mrc``) from ``--n`` = 1,650 noiseless projections at Haar-random orientations, and measures
the time and the resolution against the ground-truth map (FSC 0.5 and 0.143) of

* the direct Fourier solver,
* conjugate gradients as configured by default (Fourier initial guess, Fourier-weight
  preconditioner) and plain CGLS from zero (the paper's ASTRA CGLS), with the same iteration
  budget and tolerance,
* both solvers again from *random* orientations: the contrast that shows what orientations buy,
* both solvers on the same images with a CTF applied (defocus 1.0-2.5 µm, 300 kV, as the
  simulated datasets), given the CTFs.

Each timing is the best of ``--repeats`` runs (the machine may be shared). Prints a table and writes
``benchmarks/results/reconstruction.json`` with the FSC curves and the machine.

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/reconstruction.py
        [--n 1650] [--size 64] [--map 5j0n] [--iterations 20] [--tol 1e-4] [--repeats 2]
        [--threads 1]

On a machine shared with other work, ``--threads 1`` gives steadier timings: PyTorch's CPU threads
wait for each other, and a core taken by another process can slow a two-thread run many times over.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from _common import machine_info, print_table

from cryoorient.density import load_map
from cryoorient.fsc import fourier_shell_correlation, resolution
from cryoorient.geometry import quaternion_to_matrix
from cryoorient.projection import apply_ctf, ctf_2d, project, sample_defocus
from cryoorient.provenance import map_record
from cryoorient.reconstruction import reconstruct
from cryoorient.sampling import sample_orientations

RESULTS = Path(__file__).resolve().parent / "results" / "reconstruction.json"


def run(images, rotations, ctf, truth, repeats: int, **kwargs) -> dict:
    """Best-of-``repeats`` timing of one configuration, with its residuals and resolutions."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = reconstruct(images, rotations, ctf=ctf, device="cpu", progress=False, **kwargs)
        timings.append(time.perf_counter() - start)
    frequencies, fsc = fourier_shell_correlation(result.volume, truth.data, truth.voxel_size)
    last = len(fsc) - 1
    return {
        "settings": kwargs | {"ctf": ctf is not None},
        "seconds": min(timings),
        "all_runs_seconds": timings,
        "iterations": result.iterations,
        "converged": result.converged,
        "residuals": result.residuals,
        "normal_residuals": result.normal_residuals,
        "resolution_fsc_0.5_angstrom": resolution(frequencies, fsc, 0.5),
        "resolution_fsc_0.143_angstrom": resolution(frequencies, fsc, 0.143),
        "fsc_at_nyquist": float(fsc[last]),
        "min_fsc_up_to_0.9_nyquist": float(fsc[: int(0.9 * last) + 1].min()),
        "fsc": fsc.tolist(),
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table, write the JSON results and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1650, help="number of projections (default 1650)")
    parser.add_argument("--size", type=int, default=64, help="box size in px (default 64)")
    parser.add_argument("--map", default="5j0n", help="map name or path (default 5j0n)")
    parser.add_argument("--iterations", type=int, default=20, help="maximum CG iterations (default 20)")
    parser.add_argument("--tol", type=float, default=1e-4, help="CG tolerance (default 1e-4)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration (best kept)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        truth = load_map(args.map, box_size=args.size)
    fallback = [str(w.message) for w in caught]
    volume = torch.as_tensor(truth.data)
    rotations = quaternion_to_matrix(sample_orientations(args.n, "uniform", seed=0))  # (n, 3, 3)
    wrong = quaternion_to_matrix(sample_orientations(args.n, "uniform", seed=1))
    images = project(volume, rotations, device="cpu")  # noiseless, gridding-corrected like the datasets
    defocus = sample_defocus(args.n, seed=2).double()  # 1.0-2.5 µm, as the simulated datasets
    ctf = ctf_2d(args.size, truth.voxel_size, defocus_u=defocus, device="cpu")  # (n, D, D)
    with_ctf = apply_ctf(images, ctf)

    load_before = os.getloadavg()
    cg = {"n_iterations": args.iterations, "tol": args.tol}
    plain = {"method": "cgls", "initial": None, "precondition": False, **cg}
    configurations = {
        "fourier": (images, rotations, None, {"method": "fourier"}),
        "cgls (Fourier start, preconditioned)": (images, rotations, None, {"method": "cgls", **cg}),
        "cgls (from zero, plain)": (images, rotations, None, plain),
        "fourier, random orientations": (images, wrong, None, {"method": "fourier"}),
        "cgls, random orientations": (images, wrong, None, {"method": "cgls", **cg}),
        "fourier, CTF": (with_ctf, rotations, ctf, {"method": "fourier"}),
        "cgls, CTF": (with_ctf, rotations, ctf, {"method": "cgls", **cg}),
    }
    runs = {}
    for name, (stack, rot, transfer, kwargs) in configurations.items():
        runs[name] = run(stack, rot, transfer, truth, args.repeats, **kwargs)
        print(f"  {name}: {runs[name]['seconds']:.1f} s", flush=True)
    load_after = os.getloadavg()

    nyquist = 2 * truth.voxel_size
    results = {
        "benchmark": "reconstruction",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "map": map_record(truth),
        "map_warnings": fallback,
        "n_images": args.n,
        "size": args.size,
        "noise": "none (exact projections by cryoorient.projection.project, gridding-corrected)",
        "ctf_runs": "defocus uniform 1.0-2.5 µm (sample_defocus, seed 2), 300 kV, Cs 2.7 mm, Q0 0.1",
        "nyquist_resolution_angstrom": nyquist,
        "targets": {
            "seconds": 60.0,
            "resolution_fsc_0.5_angstrom": f"within 10 % of 2 x pixel size ({1.1 * nyquist:.2f} Å)",
        },
        "runs": runs,
        "machine": machine_info(
            load_average_1_5_15_min_before=load_before, load_average_1_5_15_min_after=load_after
        ),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    rows = [
        ("configuration", "seconds", "iterations", "residual", "FSC 0.5 (Å)", "FSC 0.143 (Å)", "FSC@Nyquist")
    ]
    for name, r in runs.items():
        rows.append(
            (
                name,
                f"{r['seconds']:.1f}",
                str(r["iterations"]),
                f"{r['residuals'][-1]:.1e}",
                f"{r['resolution_fsc_0.5_angstrom']:.2f}",
                f"{r['resolution_fsc_0.143_angstrom']:.2f}",
                f"{r['fsc_at_nyquist']:.3f}",
            )
        )
    print_table(rows)
    print(
        f"map {truth.name} at {args.size}³, {truth.voxel_size:.3f} Å/voxel: Nyquist {nyquist:.2f} Å "
        f"(target for FSC 0.5: <= {1.1 * nyquist:.2f} Å; time target 60 s)"
    )
    for message in fallback:
        print(f"warning: {message}")
    print(
        f"machine: {results['machine']['cpu_model']}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, load {load_before[0]:.1f} -> {load_after[0]:.1f}, "
        f"torch {torch.__version__}"
    )
    print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
