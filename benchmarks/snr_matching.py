"""The paper's σ² = 16 at our image sizes, derived from the images (issue 31, part 6).

The paper's authors added white noise of variance 16 to the *raw* projections of their 5j0n map
(116 px of 3.67 Å, a 425-Å box) and standardised afterwards; we standardise the clean projections
first and add σ² in those units, in a box of the map's own field of view (64 px cover 275 Å). The
pixel-count rule (``cryoorient.snr.matched_noise_variance``: ``16 · (D / 116)²``) ignores both
differences. Here both stacks are simulated from the paper's map (``../shared/data/5j0n.mrc``, the
authors' own), the same random orientations for every stack:

* the paper's: the raw map (not rescaled) padded to 116³ at its 3.67-Å voxels and projected (line
  sums in voxel units, as ASTRA's parallel projector gives them); its variance is reported;
* ours: the default, long and paper profiles' datasets (64 and 96 px in the map's 275-Å field of
  view, 116 px of 3.67 Å; also 116 px in 275 Å), the map by name resampled to the box, projected and
  standardised, as notebook 01 makes them;

and ``cryoorient.snr.matched_noise_variance_from_images`` equates the matched-filter SNR of the
difference of two projections, ``Σ (p_i − p_j)² / (2 σ²)``, between the two. The JSON
(``benchmarks/results/snr_matching.json``) records both estimates per size.

Usage::

    CRYOORIENT_MAPS=../shared/data .venv/bin/python benchmarks/snr_matching.py [--n 400]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, print_table

from cryoorient.density import load_map, read_map
from cryoorient.geometry import quaternion_to_matrix
from cryoorient.paths import atomic_write, git_commit
from cryoorient.projection import normalize_images, project
from cryoorient.sampling import sample_orientations
from cryoorient.snr import PAPER_BOX_SIZE, matched_noise_variance, matched_noise_variance_from_images

RESULT = Path(__file__).resolve().parent / "results" / "snr_matching.json"
PAPER_NOISE_VARIANCE = 16.0
SIZES = ((64, None), (96, None), (116, None), (116, 3.67))
"""(box, voxel size): the default, long and paper profiles' datasets; ``None`` keeps the map's field
of view (275 Å), 3.67 Å is the paper profile's (the paper's own 425-Å box)."""


def paper_stack(rotations: torch.Tensor) -> tuple[np.ndarray, float]:
    """The paper's clean projections in the units its noise was added in, and their voxel size (Å).

    The authors' map as it is (not rescaled), centred in a 116³ box at its own voxel size.
    """
    maps = os.environ.get("CRYOORIENT_MAPS")
    if not maps or not (Path(maps) / "5j0n.mrc").is_file():
        raise SystemExit("needs the paper's map: set CRYOORIENT_MAPS to the folder holding 5j0n.mrc")
    density = read_map(Path(maps) / "5j0n.mrc")
    data = np.asarray(density.data, dtype=np.float32)
    box = np.zeros((PAPER_BOX_SIZE,) * 3, dtype=np.float32)
    start = [(PAPER_BOX_SIZE - n) // 2 for n in data.shape]
    box[tuple(slice(s, s + n) for s, n in zip(start, data.shape, strict=True))] = data
    return project(torch.from_numpy(box), rotations).double().numpy(), density.voxel_size


def our_stack(rotations: torch.Tensor, box_size: int, voxel_size: float | None) -> tuple[np.ndarray, float]:
    """Our clean projections at ``box_size`` px, standardised as the datasets are, and the voxel size."""
    density = load_map("5j0n", box_size=box_size, voxel_size=voxel_size)
    images = project(torch.as_tensor(density.data), rotations)
    return normalize_images(images).double().numpy(), density.voxel_size


def main(argv: list[str] | None = None) -> dict:
    """Simulate the stacks, derive σ² per size, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="projections per stack (pairs: half of it)")
    parser.add_argument("--seed", type=int, default=3, help="seed of the random orientations")
    args = parser.parse_args(argv)
    rotations = quaternion_to_matrix(sample_orientations(args.n, seed=args.seed))
    reference, paper_voxel = paper_stack(rotations)
    rows, table = [], [["D (px)", "voxel (Å)", "box (Å)", "σ² by pixel count", "σ² from the images"]]
    for size, voxel_size in SIZES:
        images, voxel = our_stack(rotations, size, voxel_size)
        from_images = matched_noise_variance_from_images(images, reference, PAPER_NOISE_VARIANCE)
        by_pixels = matched_noise_variance(PAPER_NOISE_VARIANCE, size)
        rows.append({"box_size": size, "voxel_size": voxel, "field_of_view": size * voxel,
                     "by_pixel_count": by_pixels, "from_images": from_images})
        table.append([str(size), f"{voxel:.3f}", f"{size * voxel:.0f}", f"{by_pixels:.2f}",
                      f"{from_images:.2f}"])
    print_table(table)
    result = {
        "benchmark": "snr_matching",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "n_projections": args.n,
        "seed": args.seed,
        "paper": {"noise_variance": PAPER_NOISE_VARIANCE, "box_size": PAPER_BOX_SIZE,
                  "voxel_size": paper_voxel, "field_of_view": PAPER_BOX_SIZE * paper_voxel,
                  "raw_variance": float(reference.var())},
        "sizes": rows,
    }
    text = (json.dumps(result, indent=2) + "\n").encode()
    atomic_write(RESULT, lambda f: f.write(text))
    print(f"the paper's raw projections: variance {reference.var():.3f}; wrote {RESULT.name}")
    return result


if __name__ == "__main__":
    main()
