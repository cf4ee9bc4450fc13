"""Figure functions with one shared style, and saving with provenance.

Every saved figure is written as PDF and PNG under :func:`cryoorient.paths.figures_dir`, with a
JSON sidecar recording the profile, the commit and whatever else produced it (map, sizes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cryoorient._provenance import portable
from cryoorient._version import __version__
from cryoorient.paths import atomic_write, figures_dir, git_commit
from cryoorient.sampling import haar_distance_pdf

__all__ = [
    "grouped_bars",
    "plot_directions",
    "plot_distance_histogram",
    "plot_fsc",
    "plot_map_slices",
    "save_figure",
    "show_images",
    "use_style",
]

_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def use_style() -> None:
    """Apply the project's matplotlib style (idempotent)."""
    mpl.rcParams.update(_STYLE)


def save_figure(fig: Figure, name: str, *, profile: str, **provenance: object) -> list[Path]:
    """Write ``fig`` as ``NAME.pdf``, ``NAME.png`` and ``NAME.json`` (provenance), atomically.

    Parameters
    ----------
    fig : the figure.
    name : file stem saying what the figure shows, e.g. ``"orientation_sampling"``.
    profile : parameter profile that produced it (``"default"``, ``"paper"``, ...).
    **provenance : further facts to record (map name, sizes, seeds); must be JSON-serialisable.
        Absolute paths in it are recorded relative to the repository, or as the file's name and
        SHA-256 when outside it (:func:`cryoorient._provenance.portable`).

    Returns
    -------
    The paths written.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"figure name must be a plain file stem; got {name!r}")
    folder = figures_dir()
    stamp = {"figure": name, "profile": profile, "commit": git_commit(), "cryoorient": __version__}
    stamp.update(portable(provenance, with_sha256=True))  # no machine paths: files by name and SHA-256
    written = []
    for suffix in (".pdf", ".png"):
        # fixed metadata so that the same figure gives the same bytes
        metadata = {"CreationDate": None} if suffix == ".pdf" else {"Software": None}
        written.append(
            atomic_write(
                folder / f"{name}{suffix}",
                lambda f, s=suffix, m=metadata: fig.savefig(f, format=s[1:], metadata=m),
            )
        )
    text = json.dumps(stamp, indent=2, sort_keys=True) + "\n"
    written.append(atomic_write(folder / f"{name}.json", lambda f: f.write(text.encode())))
    return written


def plot_directions(ax: Axes, directions: torch.Tensor | np.ndarray, **scatter: object) -> None:
    """Scatter projection directions on an equal-area (Mollweide) map of the sphere.

    Parameters
    ----------
    ax : axes created with ``projection="mollweide"``.
    directions : (N, 3) unit vectors (e.g. :func:`cryoorient.geometry.viewing_direction`).
    **scatter : passed to :meth:`matplotlib.axes.Axes.scatter`.
    """
    if ax.name != "mollweide":
        raise ValueError(f"plot_directions needs an axes with projection='mollweide'; got {ax.name!r}")
    d = np.asarray(directions, dtype=float)
    if d.ndim != 2 or d.shape[1] != 3:
        raise ValueError(f"directions must have shape (N, 3); got {d.shape}")
    longitude = np.arctan2(d[:, 1], d[:, 0])  # azimuth (RELION rot), radians
    latitude = np.arcsin(np.clip(d[:, 2], -1.0, 1.0))  # π/2 - tilt
    ax.scatter(longitude, latitude, **({"s": 1, "alpha": 0.5, "linewidths": 0} | scatter))
    ax.set_xticklabels([])
    ax.grid(True, linewidth=0.3)
    ax.set_xlabel("azimuth (rot)")
    ax.set_ylabel("elevation (90° − tilt)")


def grouped_bars(
    ax: Axes, labels: Sequence[str], series: dict[str, Sequence[float]], log: bool = False
) -> None:
    """Bars of several quantities side by side for each of ``len(labels)`` groups.

    Parameters
    ----------
    ax : cartesian axes.
    labels : one label per group (x axis).
    series : ``{legend label: values}``, one value per group each, in the groups' order.
    log : logarithmic value axis.
    """
    if not series:
        raise ValueError("series is empty: give at least one {label: values}")
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} labels")
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, np.asarray(values, dtype=float), width, label=name)
    ax.set_xticks(x, labels, fontsize=7)
    if log:
        ax.set_yscale("log")


def plot_distance_histogram(
    ax: Axes,
    distances: torch.Tensor | np.ndarray,
    bins: int | Sequence[float] = 50,
    show_haar: bool = True,
    **hist: object,
) -> None:
    """Histogram (as a density) of orientation distances, with the Haar density for reference.

    Parameters
    ----------
    ax : cartesian axes.
    distances : (M,) distances in radians, in ``[0, π]``.
    bins : histogram bins over ``[0, π]``.
    show_haar : overlay ``(1 - cos θ) / π``, the density for uniformly random orientations.
    **hist : passed to :meth:`matplotlib.axes.Axes.hist`.
    """
    d = np.asarray(distances, dtype=float).ravel()
    ax.hist(d, bins=bins, range=(0.0, np.pi), density=True, **({"color": "C0", "alpha": 0.7} | hist))
    if show_haar:
        theta = np.linspace(0.0, np.pi, 200)
        ax.plot(theta, haar_distance_pdf(theta), "k--", linewidth=1, label="uniform SO(3)")
        ax.legend(loc="upper left", frameon=False)
    ax.set_xlim(0.0, np.pi)
    ax.set_xticks([0, np.pi / 4, np.pi / 2, 3 * np.pi / 4, np.pi], ["0", "π/4", "π/2", "3π/4", "π"])
    ax.set_xlabel("$d_q$ (rad)")
    ax.set_ylabel("density")


def show_images(
    axes: Sequence[Axes], images: torch.Tensor | np.ndarray, titles: Sequence[str] | None = None
) -> None:
    """Show 2-D images ``[y, x]`` in grey, origin at the bottom (x right, y up), without ticks.

    Parameters
    ----------
    axes : one axes per image.
    images : (N, H, W) images.
    titles : optional title per image.
    """
    images = np.asarray(images, dtype=float)
    if images.ndim != 3 or len(images) != len(axes):
        raise ValueError(f"need (N, H, W) images for {len(axes)} axes; got shape {images.shape}")
    for k, (ax, image) in enumerate(zip(axes, images, strict=True)):
        ax.imshow(image, cmap="gray", origin="lower")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[k])


def plot_map_slices(axes: Sequence[Axes], volume: np.ndarray, voxel_size: float) -> None:
    """Central slices of a map ``[z, y, x]`` through index ``N // 2``: xy, xz and yz planes.

    Parameters
    ----------
    axes : three axes.
    volume : (D, H, W) map.
    voxel_size : Å per voxel, for the axis labels.
    """
    volume = np.asarray(volume, dtype=float)
    if volume.ndim != 3 or len(axes) != 3:
        raise ValueError(f"need a 3-D map and 3 axes; got shape {volume.shape} and {len(axes)} axes")
    cz, cy, cx = (n // 2 for n in volume.shape)
    planes = [
        (volume[cz], "x", "y", f"xy plane (z = {cz})"),
        (volume[:, cy], "x", "z", f"xz plane (y = {cy})"),
        (volume[:, :, cx], "y", "z", f"yz plane (x = {cx})"),
    ]
    vmax = volume.max()
    for ax, (plane, horizontal, vertical, title) in zip(axes, planes, strict=True):
        h, w = plane.shape
        extent = (
            -(w // 2) * voxel_size,
            (w - w // 2) * voxel_size,
            -(h // 2) * voxel_size,
            (h - h // 2) * voxel_size,
        )
        ax.imshow(plane, cmap="gray_r", origin="lower", extent=extent, vmin=0, vmax=vmax)
        ax.set_xlabel(f"{horizontal} (Å)")
        ax.set_ylabel(f"{vertical} (Å)")
        ax.set_title(title)


def plot_fsc(
    ax: Axes,
    curves: Mapping[str, tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]],
    resolutions: Mapping[str, float],
    *,
    threshold: float = 0.5,
    ylabel: str = "FSC",
    **legend: object,
) -> None:
    """FSC curves, each labelled with its resolution, and the threshold that reads them.

    Parameters
    ----------
    ax : cartesian axes.
    curves : ``{name: (frequencies, fsc)}``, (S,) shell frequencies in 1/Å and (S,) correlations,
        as :func:`cryoorient.fsc.fourier_shell_correlation` returns them.
    resolutions : ``{name: Å}`` at ``threshold``, for the legend.
    threshold : drawn as a dotted line (0.5 against a known map, 0.143 between half maps).
    ylabel : the y-axis label.
    **legend : passed to :meth:`matplotlib.axes.Axes.legend`.
    """
    for name, (frequencies, fsc) in curves.items():
        ax.plot(np.asarray(frequencies), np.asarray(fsc), label=f"{name}: {resolutions[name]:.1f} Å")
    ax.axhline(threshold, color="k", lw=0.6, ls=":")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.1, 1.02)
    ax.legend(**legend)
