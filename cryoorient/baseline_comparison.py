"""Learned distances against common lines, on the same projections (notebook 08, ``make benchmark``).

At one noise level, on one subset of test projections (the same images, the same noise draw):

* **learned**: the estimator's distances → :func:`cryoorient.recovery.recover_orientations` →
  the gauge fixed from the images (:func:`cryoorient.gauge.fix_gauge`);
* **common lines**: ASPIRE's ``CLSyncVoting`` on the raw projections
  (:func:`cryoorient.common_lines.common_lines_orientations`);
* **class averages + common lines** (noisy levels): ASPIRE's 2-D class averages of the whole
  test split, then common lines on ``n_classes`` of them; each average is scored against its
  reference image's true orientation (another set of images than the subset, the same count).

Each gets both error measures: the paper's ``E_OR`` (O(4) alignment with the truth) and ``E_OR,reg``
(a global rotation and the mirror only, what a user without the truth can reach; ASPIRE's
``mean_aligned_angular_distance`` in radians), with means and medians, and its wall time
(training the estimator is not included: it is done once, in notebook 02). The three methods run
one after the other in the same process, so their times share the machine's load.

Results are cached as JSON in ``data_dir()/baselines``, keyed by everything that determines them
(dataset, model, subset, parameters, ASPIRE and package versions), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from cryoorient.alignment import score_orientations
from cryoorient.common_lines import aspire_version, class_averages, common_lines_orientations
from cryoorient.dataset import Dataset
from cryoorient.gauge import fix_gauge
from cryoorient.paths import CACHE_SCHEMA, atomic_write, data_dir
from cryoorient.pipeline import estimated_distances
from cryoorient.recovery import recover_orientations
from cryoorient.results import COMPARISON_METHODS
from cryoorient.siamese import SiameseDistance

__all__ = ["METHODS", "compare_with_common_lines", "comparison_subset"]

METHODS = COMPARISON_METHODS
"""The compared methods, by the keys of :func:`compare_with_common_lines`' rows, and their names
in notebook 08, its figure and the report: :data:`cryoorient.results.COMPARISON_METHODS`, which the
report reads from there (it renders saved results and imports no study)."""


def comparison_subset(indices: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """``size`` of ``indices`` (sorted), drawn with a seeded generator: the shared subset."""
    indices = np.asarray(indices)
    if not 3 <= size <= len(indices):
        raise ValueError(f"subset size must be between 3 and {len(indices)}; got {size}")
    return np.sort(np.random.default_rng(seed).choice(indices, size, replace=False))


def _errors(true: torch.Tensor, found: torch.Tensor, seed: int) -> dict:
    scores = score_orientations(true, found, seed=seed).to_dict()
    return {k: scores[k] for k in ("e_or", "e_or_median", "e_reg", "e_reg_median")}


def _cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def compare_with_common_lines(
    model: SiameseDistance,
    model_key: str,
    data: Dataset,
    subset: np.ndarray,
    pool: np.ndarray,
    image_size: int | None,
    *,
    class_averaging: bool = True,
    box_size: int = 32,
    n_theta: int = 180,
    n_neighbours: int = 10,
    seed: int = 0,
    device: torch.device | str | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, dict]:
    """The three methods at one noise level, on ``data``'s images (cached).

    Parameters
    ----------
    model, model_key : the estimator for this noise level and its cache key.
    data : the dataset whose images carry this noise level.
    subset : (P,) indices of the projections both the learned method and common lines see.
    pool : indices the class averages are made from (e.g. the test split; ``subset`` ⊂ ``pool``);
        ``len(subset)`` averages are used.
    image_size : the estimator's input size.
    class_averaging : also run class averages + common lines (skip it for clean images).
    box_size, n_theta : for common lines (:func:`cryoorient.common_lines.common_lines_orientations`).
    n_neighbours : images per class average.
    seed : of the recovery, gauge search, alignment and ASPIRE's random choices.
    device : for the network, recovery and gauge search.
    cache_dir : where results are cached (default ``data_dir()/baselines``).

    Returns
    -------
    ``{method: row}`` with ``method`` in :data:`METHODS` and row keys ``e_or``, ``e_or_median``,
    ``e_reg``, ``e_reg_median`` (radians), ``seconds``, ``n`` (images scored), plus the parts of
    the time (``seconds_averaging``, ``seconds_common_lines``) for class averages.
    """
    version = aspire_version()
    if version is None:
        raise ImportError("the comparison needs ASPIRE (pip install aspire; see cryoorient.common_lines)")
    subset, pool = np.asarray(subset), np.asarray(pool)
    if not np.isin(subset, pool).all():
        raise ValueError("subset must be drawn from pool (the projections the class averages use)")
    key = _cache_key({
        "dataset": data.path.name, "model": model_key, "subset": subset.tolist(), "pool": pool.tolist(),
        "image_size": image_size, "class_averaging": class_averaging, "box_size": box_size,
        "n_theta": n_theta, "n_neighbours": n_neighbours, "seed": seed, "aspire": version,
        "cache_schema": CACHE_SCHEMA,
    })
    path = Path(cache_dir) if cache_dir is not None else data_dir() / "baselines"
    path = path / f"{key}.json"
    if path.is_file():
        try:
            rows = json.loads(path.read_text())
            if set(rows) == set(METHODS) - (set() if class_averaging else {"class_averages"}):
                return rows
        except (ValueError, OSError):
            pass  # unreadable: computed again and rewritten below
    images = torch.from_numpy(data.particles.images)
    true = torch.as_tensor(data.quaternions, dtype=torch.float64)
    pixel_size = data.particles.pixel_size
    rows = {}

    start = time.perf_counter()
    distances = estimated_distances(model, images[subset], image_size, device=device)
    recovered = recover_orientations(distances, seed=seed, device=device).quaternions.cpu()
    gauge = fix_gauge(images[subset], recovered, seed=seed, device=device, progress=False)
    seconds = time.perf_counter() - start
    o4 = _errors(true[subset], recovered.double(), seed)  # E_OR does not depend on the gauge
    fixed = _errors(true[subset], gauge.quaternions.cpu().double(), seed)
    rows["learned"] = o4 | {k: fixed[k] for k in ("e_reg", "e_reg_median")} | {
        "seconds": seconds, "n": len(subset),
    }

    raw = common_lines_orientations(images[subset], pixel_size, box_size=box_size, n_theta=n_theta, seed=seed)
    rows["common_lines"] = _errors(true[subset], raw.quaternions, seed) | {
        "seconds": raw.seconds, "n": len(subset),
    }

    if class_averaging:
        averages = class_averages(
            images[pool], pixel_size, len(subset), n_neighbours=n_neighbours, box_size=box_size, seed=seed
        )
        found = common_lines_orientations(averages.images, averages.pixel_size, box_size=None,
                                          n_theta=n_theta, seed=seed)
        rows["class_averages"] = _errors(true[pool[averages.references]], found.quaternions, seed) | {
            "seconds": averages.seconds + found.seconds, "seconds_averaging": averages.seconds,
            "seconds_common_lines": found.seconds, "n": len(averages.references),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(rows, indent=1).encode()))
    return rows
