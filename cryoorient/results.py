"""What each notebook measured, saved for the figures notebook and the reproduction report.

A notebook ends with :func:`save_results`: its numbers (a JSON-serialisable mapping) and the arrays
behind its plots go to ``paper/results/PROFILE/NOTEBOOK.json`` and ``.npz``
(:func:`cryoorient.paths.paper_dir`), stamped with the profile, map and commit. Notebook
``99_figures`` and :mod:`cryoorient.report` read them back with :func:`load_results` and never
retrain anything. The JSON records the SHA-256 of its ``.npz``; a pair that does not match (a run
interrupted between the two renames, a hand edit) is refused with the notebook to rerun.

The files are committed and read on other machines, so they record no machine paths: an absolute
path among the values or the provenance is saved relative to the repository, or as the file's
name and SHA-256 when outside it (``/work/shared/data/5j0n.mrc`` becomes
``5j0n.mrc (SHA-256 …)``; :func:`cryoorient.provenance.portable`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cryoorient._version import __version__
from cryoorient.paths import atomic_write, git_commit, paper_dir, repo_root
from cryoorient.provenance import portable

__all__ = [
    "COMPARISON_METHODS",
    "Results",
    "ResultsError",
    "available_profiles",
    "load_results",
    "results_dir",
    "save_results",
    "write_record",
]

COMPARISON_METHODS = {
    "learned": "learned distances, recovery, gauge",
    "common_lines": "common lines (ASPIRE) on the projections",
    "class_averages": "common lines on class averages (ASPIRE)",
}
"""Notebook 08's comparison with common lines: the methods, by the keys its saved rows use
(:func:`cryoorient.baseline_comparison.compare_with_common_lines`, which computes them), and their
names in notebook 08, its figure and the report (:mod:`cryoorient.report`, which renders them)."""


class ResultsError(RuntimeError):
    """Saved results are missing, corrupt or inconsistent; the message names the notebook to run."""


@dataclass(frozen=True)
class Results:
    """One notebook's saved results.

    Attributes
    ----------
    notebook : notebook stem, e.g. ``"04_orientation_recovery"``.
    profile : parameter profile of the run.
    values : the numbers (nested mappings of floats, ints, strings, lists).
    arrays : named arrays behind the plots.
    provenance : commit, map and package version of the run, plus what the notebook added.
    """

    notebook: str
    profile: str
    values: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


def results_dir(profile: str) -> Path:
    """``paper/results/PROFILE`` (created if missing)."""
    _check_name(profile, "profile")
    folder = paper_dir() / "results" / profile
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def available_profiles() -> list[str]:
    """Profiles with at least one saved notebook result, sorted."""
    root = paper_dir() / "results"
    return (
        sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.json")))
        if root.is_dir()
        else []
    )


def _check_name(name: str, what: str) -> None:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"{what} must be a plain name; got {name!r}")


def _plain(value: object, where: str) -> object:
    """``value`` with tensors, arrays and NumPy scalars turned into JSON types; NaN and ±inf into ``None``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN: "no value" (e.g. an RMSE over an empty set)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{where}: cannot save a {type(value).__name__} as a result")


def save_results(
    notebook: str,
    values: Mapping[str, object],
    *,
    profile: str,
    arrays: Mapping[str, np.ndarray | torch.Tensor] | None = None,
    **provenance: object,
) -> Path:
    """Save a notebook's numbers and plot arrays for ``profile`` (atomically); return the JSON path.

    Parameters
    ----------
    notebook : notebook stem, e.g. ``"02_distance_learning"``.
    values : the numbers the notebook reports (units in the key names or the notebook's text).
    profile : parameter profile of the run.
    arrays : named arrays (any shape) for the figures notebook.
    **provenance : facts about the run (map, sizes, model key); JSON-serialisable.

    Absolute paths in ``values`` and ``provenance`` are saved without the machine's folders (see
    the module docstring).
    """
    return write_record(notebook, profile, values, arrays, commit=git_commit(), version=__version__,
                        provenance=provenance)


def write_record(
    notebook: str,
    profile: str,
    values: Mapping[str, object],
    arrays: Mapping[str, np.ndarray | torch.Tensor] | None,
    *,
    commit: str,
    version: str,
    provenance: Mapping[str, object],
) -> Path:
    """Write one notebook's results with the given ``commit`` and package ``version`` (atomically).

    :func:`save_results` stamps the current checkout; a migration of saved results
    (:mod:`cryoorient._results_migration`) keeps the stamps of the run that measured them.
    """
    _check_name(notebook, "notebook")
    folder = results_dir(profile)
    buffer = io.BytesIO()
    packed = {
        name: np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a)
        for name, a in (arrays or {}).items()
    }
    np.savez_compressed(buffer, **packed)
    blob = buffer.getvalue()
    record = {
        "notebook": notebook,
        "profile": profile,
        "commit": commit,
        "cryoorient": version,
        "provenance": portable(_plain(dict(provenance), "provenance"), with_sha256=True),
        "values": portable(_plain(dict(values), "values"), with_sha256=True),
        "arrays": sorted(packed),
        "arrays_sha256": hashlib.sha256(blob).hexdigest(),
    }
    text = json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write(folder / f"{notebook}.npz", lambda f: f.write(blob))
    return atomic_write(folder / f"{notebook}.json", lambda f: f.write(text.encode()))


def notebook_duration(notebook: str, profile: str) -> str:
    """`` (about N min …)``: how long ``notebook`` took in the Colab-like check, or ``""``.

    Read from ``benchmarks/results/colab_like.json`` (``benchmarks/colab_like.py``: a fresh runtime,
    the default profile, two CPU cores) in a checkout; nothing for other profiles or without it.
    """
    root = repo_root()
    path = root / "benchmarks" / "results" / "colab_like.json" if root is not None else None
    if profile != "default" or path is None or not path.is_file():
        return ""
    try:
        entries = {e["notebook"]: e for e in json.loads(path.read_text())["notebooks"]}
        seconds = float(entries[notebook]["wall_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f" (about {max(1, round(seconds / 60))} min on two CPU cores from a fresh runtime)"


def _rerun(notebook: str, profile: str) -> str:
    """What to do when ``notebook``'s results at ``profile`` are missing or broken (error path only)."""
    return (
        f"run notebooks/{notebook}.py at profile {profile!r} first{notebook_duration(notebook, profile)} "
        f"(`make figures PROFILE={profile}` runs every notebook in order)"
    )


def load_results(notebook: str, profile: str) -> Results:
    """Read what :func:`save_results` wrote for ``notebook`` at ``profile``.

    Raises
    ------
    ResultsError : when the results are missing, unreadable, or their arrays do not match.
    """
    _check_name(notebook, "notebook")
    folder = paper_dir() / "results" / profile
    path = folder / f"{notebook}.json"
    if not path.is_file():
        raise ResultsError(f"no results of {notebook} at profile {profile!r} in {folder}: "
                           f"{_rerun(notebook, profile)}")
    try:
        record = json.loads(path.read_text())
        blob = (folder / f"{notebook}.npz").read_bytes()
    except (OSError, ValueError) as error:
        raise ResultsError(
            f"{path} or its .npz cannot be read ({error}): {_rerun(notebook, profile)}"
        ) from error
    if hashlib.sha256(blob).hexdigest() != record.get("arrays_sha256"):
        raise ResultsError(
            f"{path.with_suffix('.npz')} does not match {path.name} (interrupted run?): "
            f"{_rerun(notebook, profile)}"
        )
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    provenance = {k: record[k] for k in ("commit", "cryoorient")} | record.get("provenance", {})
    return Results(notebook, record["profile"], record["values"], arrays, provenance)
