"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cryoorient.paths import atomic_write, git_commit


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(**extra: object) -> dict:
    """What a benchmark ran on (CPU, cores, torch threads, versions), plus ``extra`` entries."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    } | extra


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows of strings as left-aligned columns (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def status_mib(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (Linux: ``VmRSS``, ``VmHWM``) in MiB, or NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def write_json(result: dict, path: Path, indent: int = 1) -> None:
    """Write a benchmark's JSON atomically, so that an interrupted run keeps what it had finished."""
    text = (json.dumps(result, indent=indent, default=float) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))


def parameters_key(parameters: dict) -> str:
    """A short hash of the parameters a resumable run's rows depend on (rows of others are redone)."""
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:12]


CONTEST_HEADER = ["E_OR", "E_OR,reg", "median", "< 5°", "< 10°", "FSC 0.5 (Å)"]
"""Column names of :func:`contest_cells`."""


def contest_cells(row: dict) -> list[str]:
    """A :func:`cryoorient.contest.contest_level` row's errors, shares and resolution, as table cells."""
    shares = (f"{row[k]:.3f}" for k in ("e_or", "e_reg", "e_reg_median", "within_5", "within_10"))
    return [*shares, f"{row['resolution']:.1f}"]


def print_levels(header: list[str], levels: dict, cells, output: Path) -> None:
    """Print a study's ``{level: {name: row}}`` as a table (the level, the name, then ``cells(row)``).

    ``header`` names every column; the last line says which file was written.
    """
    rows = ([level, name, *cells(r)] for level, by_name in levels.items() for name, r in by_name.items())
    print_table([header, *rows])
    print(f"\nwrote {output.name}")


def curriculum_plan(study, noise: list[str], trial_epochs: int | None = None):
    """What a study that trains the default estimator and its noise curriculum runs.

    Returns ``(config, stage_epochs, levels, stages)``: the default model's configuration, the
    epochs of each fine-tuned stage (both ``trial_epochs`` for a quick trial), the σ² levels that
    ``noise`` names (``--noise``: numbers or ``"matched"``; a bad one exits with the choices), and
    the curriculum's levels up to the last of them.
    """
    import dataclasses

    from cryoorient.contest import estimator_level
    from cryoorient.model_cache import model_config

    config = model_config(study.model, seed=study.seed)
    stage_epochs = study.curriculum_epochs
    if trial_epochs is not None:
        config, stage_epochs = dataclasses.replace(config, epochs=trial_epochs), trial_epochs
    chain_levels = [0.0, *study.noise_study_levels]
    try:
        levels = [estimator_level(a, chain_levels, study.matched_noise_variance) for a in noise]
    except ValueError as error:
        raise SystemExit(f"--noise: {error}") from None
    return config, stage_epochs, levels, [v for v in chain_levels if v <= max(levels)]


def resumed_result(path: Path, benchmark: str, parameters: dict, **empty: object) -> dict:
    """A resumable study's result, stamped with today, the commit and the machine.

    ``path``'s rows when they were measured with the same ``parameters``, else a fresh result holding
    ``empty`` (e.g. ``levels={}``).
    """
    key = parameters_key(parameters)
    result = json.loads(path.read_text()) if path.is_file() else {}
    if result.get("parameters_key") != key:
        result = {"benchmark": benchmark, "parameters": parameters, "parameters_key": key, **empty}
    stamp = {"date": datetime.date.today().isoformat(), "commit": git_commit(), "machine": machine_info()}
    return result | stamp
