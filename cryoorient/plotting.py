"""Figure functions with one shared style, and saving with provenance.

Every saved figure is written as PDF and PNG under :func:`cryoorient.paths.figures_dir` (a
profile other than ``default`` in its subfolder ``PROFILE/``), with a JSON sidecar recording the
profile, the commit and whatever else produced it (map, sizes).
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

from cryoorient._version import __version__
from cryoorient.paths import atomic_write, figures_dir, git_commit
from cryoorient.provenance import portable
from cryoorient.sampling import haar_distance_pdf

__all__ = [
    "grouped_bars",
    "plot_directions",
    "plot_contest",
    "plot_errors_and_fsc",
    "plot_distance_agreement",
    "plot_distance_histogram",
    "plot_error_histogram",
    "plot_exact_recovery",
    "plot_error_vs_noise",
    "plot_fsc",
    "noise_axis",
    "plot_ladder",
    "plot_learned_recovery",
    "plot_learning_curves",
    "plot_loss_history",
    "plot_map_slices",
    "plot_one_to_all",
    "plot_perturbation_sweep",
    "plot_squared_errors",
    "plot_validation_curves",
    "file_tag",
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


def file_tag(name: str) -> str:
    """A map name as it appears in figure file names: ``"pseudo:3"`` → ``"pseudo-3"``, paths flattened."""
    return name.replace(":", "-").replace("/", "-")


def save_figure(fig: Figure, name: str, *, profile: str, **provenance: object) -> list[Path]:
    """Write ``fig`` as ``NAME.pdf``, ``NAME.png`` and ``NAME.json`` (provenance), atomically.

    Parameters
    ----------
    fig : the figure.
    name : file stem saying what the figure shows, e.g. ``"orientation_sampling"``.
    profile : parameter profile that produced it (``"default"``, ``"paper"``, ...). The default
        profile's figures go to :func:`~cryoorient.paths.figures_dir`, any other profile's to its
        subfolder ``PROFILE/``, so that ``make figures PROFILE=long`` does not overwrite them.
    **provenance : further facts to record (map name, sizes, seeds); must be JSON-serialisable.
        Absolute paths in it are recorded relative to the repository, or as the file's name and
        SHA-256 when outside it (:func:`cryoorient.provenance.portable`).

    Returns
    -------
    The paths written.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"figure name must be a plain file stem; got {name!r}")
    if not profile or "/" in profile or profile.startswith("."):
        raise ValueError(f"profile must be a plain name such as 'default'; got {profile!r}")
    folder = figures_dir() if profile == "default" else figures_dir() / profile
    folder.mkdir(exist_ok=True)
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


def plot_ladder(
    ax: Axes,
    labels: Sequence[str],
    mean: Sequence[float],
    median: Sequence[float],
    *,
    reference: Mapping[str, float] | None = None,
    xlabel: str = r"$E_{OR}$ (rad)",
) -> None:
    """A ladder: one horizontal bar per rung (top to bottom), its mean, and its median as a dot.

    Parameters
    ----------
    ax : cartesian axes.
    labels : one label per rung, first rung at the top.
    mean, median : (R,) values per rung, in the unit ``xlabel`` names; NaN leaves a rung empty.
    reference : ``{label: value}`` vertical lines (e.g. the paper's value, the chance level).
    xlabel : the value axis' label.
    """
    if not len(mean) == len(median) == len(labels):
        raise ValueError(f"{len(labels)} labels, {len(mean)} means and {len(median)} medians")
    y = np.arange(len(labels))[::-1]
    mean, median = np.asarray(mean, dtype=float), np.asarray(median, dtype=float)
    ax.barh(y, mean, color="C0", alpha=0.8, label="mean")
    if np.isfinite(median).any():
        ax.plot(median, y, "o", color="k", ms=4, label="median")
    for yy, m in zip(y, mean, strict=True):
        if np.isfinite(m):
            ax.text(m, yy, f" {m:.3f}", va="center", fontsize=7)
    for k, (name, value) in enumerate((reference or {}).items()):
        ax.axvline(value, color=f"C{k + 1}", ls="--", lw=1, label=name)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7, loc="lower right")


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


_Array = torch.Tensor | np.ndarray | Sequence[float]


def plot_learning_curves(
    ax: Axes, epochs: _Array, train: _Array, validation: _Array, *, ylabel: str = r"$L_{DE}$ (MSE, rad$^2$)"
) -> None:
    """The distance estimator's loss per epoch on training batches and on validation pairs.

    Parameters
    ----------
    ax : cartesian axes.
    epochs : (E,) epoch numbers.
    train, validation : (E,) losses per epoch, in the unit ``ylabel`` names (log scale).
    ylabel : the y-axis label.
    """
    ax.plot(np.asarray(epochs), np.asarray(train, dtype=float), label="training")
    ax.plot(np.asarray(epochs), np.asarray(validation, dtype=float), label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend()


def plot_validation_curves(ax: Axes, histories: Mapping[str, Sequence[Mapping[str, float]]]) -> None:
    """Several models' validation loss per epoch, one line each, legend outside on the right.

    Parameters
    ----------
    ax : cartesian axes.
    histories : ``{label: history}``, a history being the training's per-epoch records with
        ``"epoch"`` and ``"validation_loss"`` (MSE, rad²; log scale).
    """
    for label, history in histories.items():
        epochs, losses = [h["epoch"] for h in history], [h["validation_loss"] for h in history]
        ax.plot(epochs, losses, marker=".", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"validation $L_{DE}$ (MSE, rad$^2$)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))


def plot_one_to_all(axes: Sequence[Axes], d_q: _Array, estimates: Mapping[str, _Array]) -> None:
    """Distances from a few reference projections to all others, against the true ``d_q``.

    Parameters
    ----------
    axes : one cartesian axes per estimate.
    d_q : (R, M) true distances from R references to M projections, radians.
    estimates : ``{title: (R, M) estimated distances}``, radians; one panel each, a colour per reference.
    """
    d_q = np.asarray(d_q, dtype=float)
    for ax, (title, values) in zip(axes, estimates.items(), strict=True):
        values = np.asarray(values, dtype=float)
        if values.shape != d_q.shape:
            raise ValueError(f"{title}: estimates of shape {values.shape} for d_q of shape {d_q.shape}")
        for k in range(len(d_q)):
            ax.scatter(d_q[k], values[k], s=3, alpha=0.4, label=f"reference {k + 1}")
        ax.plot([0, np.pi], [0, np.pi], color="k", lw=0.8, ls="--")
        ax.set_xlabel(r"$d_q$ to the reference (rad)")
        ax.set_title(title)
    axes[0].set_ylabel("estimated distance (rad)")
    axes[0].legend(markerscale=4, fontsize=8)


def plot_distance_agreement(
    ax: Axes, d_q: _Array, estimate: _Array, *, hexbin: bool = False, **scatter: object
) -> None:
    """Estimated distances against the true ones, with the diagonal of a perfect estimate.

    Parameters
    ----------
    ax : cartesian axes.
    d_q : (M,) true distances ``d_q`` of the pairs, radians.
    estimate : (M,) estimated distances of the same pairs, radians.
    hexbin : draw counts in hexagonal bins over ``[0, π]²`` (for many pairs) instead of points.
    **scatter : passed to :meth:`matplotlib.axes.Axes.scatter` (points only).
    """
    x, y = np.asarray(d_q, dtype=float), np.asarray(estimate, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"d_q and estimate differ in shape: {x.shape} and {y.shape}")
    if hexbin:
        ax.hexbin(x, y, gridsize=40, extent=(0, np.pi, 0, np.pi), cmap="Blues", mincnt=1)
        ax.set_ylim(0, np.pi)
    else:  # fitted baselines may leave [0, π]: the y range follows the points
        ax.scatter(x, y, **({"s": 3, "alpha": 0.4} | scatter))
    ax.plot([0, np.pi], [0, np.pi], color="k", lw=0.8, ls="--")
    ax.set_xlim(0, np.pi)
    ax.set_aspect("equal")
    ax.set_xlabel(r"$d_q$ (rad)")


def plot_squared_errors(ax: Axes, groups: Mapping[str, _Array]) -> None:
    """Box plots (no outliers) of per-pair squared distance errors ``(d̂_p - d_q)²``, one per group.

    Parameters
    ----------
    ax : cartesian axes.
    groups : ``{tick label: (M,) squared errors in rad²}``, in the order drawn.
    """
    if not groups:
        raise ValueError("groups is empty: give at least one {label: squared errors}")
    ax.boxplot([np.asarray(v, dtype=float) for v in groups.values()], showfliers=False)
    ax.set_xticks(range(1, len(groups) + 1), list(groups))
    ax.set_ylabel(r"$(\hat d_p - d_q)^2$ (rad$^2$)")


def plot_loss_history(ax: Axes, history: _Array, **line: object) -> None:
    """The recovery loss ``L_OR`` per L-BFGS step, on a log scale.

    Parameters
    ----------
    ax : cartesian axes.
    history : (S,) ``L_OR`` in rad² after each step.
    **line : passed to :meth:`matplotlib.axes.Axes.plot` (``label``, ``color``).
    """
    ax.plot(np.asarray(history, dtype=float), **line)
    ax.set_yscale("log")
    ax.set_xlabel("L-BFGS step")
    ax.set_ylabel(r"$L_{OR}$ (rad$^2$)")


def plot_error_histogram(
    ax: Axes, errors: _Array, *, label: str | None = None, color: str = "C0", summary: bool = True
) -> None:
    """Histogram of per-projection orientation errors over ``[0, π]``, with their mean and median.

    Parameters
    ----------
    ax : cartesian axes.
    errors : (P,) errors ``d_q(q_i, T q̂_i)`` after alignment, radians.
    label : legend label; the mean (``E_OR``) and the median are appended to it.
    color : colour of the bars and of the two summary lines.
    summary : draw the mean (solid) and the median (dashed) as vertical lines.
    """
    e = np.asarray(errors, dtype=float).ravel()
    stats = f"$E_{{OR}}$ {e.mean():.3f} rad, median {np.median(e):.3f} rad"
    ax.hist(e, bins=40, range=(0, np.pi), alpha=0.6, color=color,
            label=stats if label is None else f"{label}: {stats}")
    if summary:
        ax.axvline(e.mean(), color=color, lw=1)
        ax.axvline(float(np.median(e)), color=color, lw=1, ls="--")
    ax.set_xlim(0, np.pi)
    ax.set_xlabel(r"$d_q(q_i, T\hat q_i)$ (rad)")
    ax.set_ylabel("projections")
    ax.legend(fontsize=7)


def plot_exact_recovery(
    loss_history: _Array,
    errors_before: _Array,
    errors_after: _Array,
    directions: Sequence[tuple[_Array, str]],
) -> Figure:
    """Recovery from exact distances at a glance: the loss, the errors before and after alignment.

    Parameters
    ----------
    loss_history : (S,) ``L_OR`` in rad² per L-BFGS step (empty when the spectral start was exact).
    errors_before : (P,) ``d_q(q_i, q̂_i)`` before the O(4) alignment, radians.
    errors_after : (P,) ``d_q(q_i, T q̂_i)`` after it, radians (drawn as log10, they reach round-off).
    directions : three ``((M, 3) viewing directions, title)`` drawn on Mollweide maps in the bottom
        row, coloured by index so that the same projection has the same colour in each.

    Returns
    -------
    The 2×3 figure, open in pyplot (not saved).
    """
    import matplotlib.pyplot as plt  # a pyplot figure, so that the notebook's plt.show() shows it

    fig = plt.figure(figsize=(12, 6.4))
    ax = fig.add_subplot(2, 3, 1)
    history = np.asarray(loss_history, dtype=float)
    plot_loss_history(ax, history)
    if history.size <= 1:
        ax.text(0.5, 0.5, "0 steps: the spectral start\nis already exact", ha="center", va="center",
                transform=ax.transAxes, fontsize=9)
    ax.set_title("loss from exact distances")
    before = np.asarray(errors_before, dtype=float)
    ax = fig.add_subplot(2, 3, 2)
    ax.hist(before, bins=40, color="C1")
    ax.set_xlabel(r"$d_q(q_i, \hat q_i)$ before alignment (rad)")
    ax.set_title(f"before: mean {before.mean():.2f} rad")
    after = np.asarray(errors_after, dtype=float)
    ax = fig.add_subplot(2, 3, 3)
    ax.hist(np.log10(after + 1e-16), bins=40, color="C2")
    ax.set_xlabel(r"$\log_{10} d_q(q_i, T\hat q_i)$ after alignment")
    ax.set_title(f"after: $E_{{OR}}$ = {after.mean():.1e} rad")
    if len(directions) != 3:
        raise ValueError(f"directions: {len(directions)} sets; give three (e.g. true, recovered, aligned)")
    for k, (d, title) in enumerate(directions):
        ax = fig.add_subplot(2, 3, 4 + k, projection="mollweide")
        plot_directions(ax, d, c=np.arange(len(d)), cmap="viridis")
        ax.set_title(f"{title} directions ({len(d)})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_learned_recovery(
    squared_errors: Mapping[str, _Array], loss_history: _Array, errors: _Array, *, title: str = ""
) -> Figure:
    """The paper's learned-distance panels: ``L_DE`` per pair, the ``L_OR`` curve, the errors.

    Parameters
    ----------
    squared_errors : ``{split: (M,) (d̂_p - d_q)² in rad²}``, e.g. training and validation pairs.
    loss_history : (S,) ``L_OR`` per L-BFGS step, rad²; its minimum is marked.
    errors : (P,) per-projection errors after alignment, radians; mean and median marked.
    title : the figure's title.

    Returns
    -------
    The 1×3 figure, open in pyplot (not saved).
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    plot_squared_errors(ax[0], squared_errors)
    ax[0].set_title(r"$L_{DE}$ per pair")
    history = np.asarray(loss_history, dtype=float)
    plot_loss_history(ax[1], history)
    ax[1].axhline(history.min(), color="k", lw=0.7, ls=":")
    ax[1].set_title(f"$L_{{OR}}$, minimum {history.min():.4f} rad²")
    plot_error_histogram(ax[2], errors)
    ax[2].set_title("errors after alignment: mean (solid), median (dashed)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_errors_and_fsc(
    columns: Mapping[str, tuple[_Array, _Array, Mapping[str, tuple[_Array, _Array, float]]]],
    *,
    max_error: float = np.pi / 2,
    title: str = "",
) -> Figure:
    """One column per set of orientations: directions coloured by error above, FSC curves below.

    Parameters
    ----------
    columns : ``{title: (directions, errors, curves)}``: (M, 3) viewing directions, (M,) their
        orientation errors in radians, and ``{label: (frequencies 1/Å, fsc, resolution Å)}`` of the
        maps made from them. The title goes above the column's map of directions.
    max_error : top of the colour scale, radians (larger errors share its colour).
    title : the figure's title.

    Returns
    -------
    The 2×K figure, open in pyplot (not saved).
    """
    import matplotlib.pyplot as plt

    n = len(columns)
    fig = plt.figure(figsize=(4.2 * n, 6.6))
    for k, (heading, (directions, errors, curves)) in enumerate(columns.items()):
        ax = fig.add_subplot(2, n, k + 1, projection="mollweide")
        plot_directions(ax, directions, c=np.asarray(errors), cmap="viridis", vmin=0, vmax=max_error, s=4,
                        alpha=0.8)
        ax.set_title(heading, fontsize=8)
        fig.colorbar(ax.collections[0], ax=ax, orientation="horizontal", shrink=0.6, pad=0.08, extend="max",
                     label="orientation error (rad)")
        ax = fig.add_subplot(2, n, n + k + 1)
        plot_fsc(ax, {label: c[:2] for label, c in curves.items()},
                 {label: c[2] for label, c in curves.items()}, ylabel="FSC with the true map", fontsize=7,
                 loc="lower left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_perturbation_sweep(
    ax: Axes,
    variances: _Array,
    means: _Array,
    medians: _Array,
    *,
    label: str | None = None,
    color: str | None = None,
) -> None:
    """Orientation error against the variance of errors added to exact distances.

    Parameters
    ----------
    ax : cartesian axes.
    variances : (K,) variances of the distance errors, rad².
    means : (K,) ``E_OR`` (mean error after alignment), radians.
    medians : (K,) median errors (the statistic of the paper's curve), radians.
    label : what the orientations were (e.g. their coverage), appended to both legend entries;
        call once per set of orientations, with one ``color`` each, to compare them on one axes.
    color : colour of both curves (mean solid, median dashed); the next colour of the cycle if None.
    """
    v = np.asarray(variances, dtype=float)
    suffix = "" if label is None else f", {label}"
    mean = np.asarray(means, dtype=float)
    (mean_line,) = ax.plot(v, mean, "o-", color=color, label=f"mean ($E_{{OR}}$){suffix}")
    ax.plot(v, np.asarray(medians, dtype=float), "s--", color=mean_line.get_color(), label=f"median{suffix}")
    ax.set_xlabel("variance of the distance errors (rad²)")
    ax.set_ylabel("orientation error (rad)")
    ax.legend(fontsize=7)


def noise_axis(ax: Axes) -> None:
    """A noise-variance x axis: linear below σ² = 1, logarithmic above, starting at σ² = 0.

    Without the left limit, matplotlib pads below 0 and labels a "−10⁰" tick on the symmetric-log
    axis, a noise variance that cannot be.
    """
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)


def plot_error_vs_noise(
    ax: Axes,
    noise_variances: _Array,
    means: _Array,
    medians: _Array,
    *,
    chance: float,
    matched: float,
    paper: float | None = None,
    box_size: int | None = None,
) -> None:
    """Orientation error from learned distances against the image noise, with the chance level.

    Parameters
    ----------
    ax : cartesian axes (the x axis becomes symmetric-log, linear below σ² = 1).
    noise_variances : (K,) per-pixel noise variances σ² of the images.
    means : (K,) ``E_OR`` at each σ², radians.
    medians : (K,) median errors at each σ², radians.
    chance : ``E_OR`` of random orientations after the same alignment, radians (dotted line).
    matched : the σ² that matches the paper's σ² = 16 in integrated SNR (red dotted line).
    paper : the paper's value at its σ² = 16, drawn as a star at ``matched``; none if ``None``.
    box_size : image size in pixels, for the axis label.
    """
    x = np.asarray(noise_variances, dtype=float)
    ax.plot(x, np.asarray(means, dtype=float), "o-", label="mean ($E_{OR}$)")
    ax.plot(x, np.asarray(medians, dtype=float), "s--", label="median")
    ax.axhline(chance, color="0.5", lw=0.8, ls=":", label=f"random orientations, {chance:.2f}")
    ax.axvline(matched, color="C3", lw=0.8, ls=":", label="the paper's σ² = 16, matched in SNR")
    if paper is not None:
        ax.plot([matched], [paper], "k*", ms=9, label="paper, σ² = 16")
    noise_axis(ax)
    pixels = "" if box_size is None else f", {box_size} px images"
    ax.set_xlabel(f"noise variance σ² (per pixel{pixels})")
    ax.set_ylabel("orientation error (rad)")
    ax.legend(fontsize=7)


def plot_contest(
    axes: Sequence[Axes],
    levels: Mapping[str, Mapping[str, Mapping[str, float]]],
    labels: Mapping[str, str],
    *,
    chance: float | None = None,
    ceilings: Mapping[str, float] | None = None,
    box_size: int | None = None,
) -> None:
    """Who wins where: each contender's mean ``E_OR,reg`` (left) and map resolution (right) against σ².

    Parameters
    ----------
    axes : two cartesian axes (their x axes become symmetric-log, see :func:`noise_axis`).
    levels : ``{σ² as text: {contender: row}}``, rows with ``e_reg`` (radians) and ``resolution``
        (FSC 0.5 against the true map, Å), e.g. :func:`cryoorient.contest.contest_level`'s.
    labels : ``{contender: legend label}``, in the order to draw; contenders without rows are left out.
    chance : ``E_OR,reg`` of random orientations, radians (dotted line); none if ``None``.
    ceilings : ``{σ² as text: Å}`` the resolution of the map from the same images with the true
        orientations (dashed black line), where known.
    box_size : image size in pixels, for the axis labels.
    """
    if len(axes) != 2:
        raise ValueError(f"plot_contest draws on two axes; got {len(axes)}")
    for name, label in labels.items():
        points = sorted((float(v), rows[name]) for v, rows in levels.items() if name in rows)
        if not points:
            continue
        x = [v for v, _ in points]
        style = "s--" if "refined" in name else "o-"
        (line,) = axes[0].plot(x, [r["e_reg"] for _, r in points], style, label=label)
        axes[1].plot(x, [r["resolution"] for _, r in points], style, color=line.get_color(), label=label)
    if chance is not None:
        axes[0].axhline(chance, color="0.5", lw=0.8, ls=":", label=f"random orientations, {chance:.2f}")
    if ceilings:
        known = sorted((float(v), a) for v, a in ceilings.items())
        axes[1].plot(*zip(*known, strict=True), "k--", lw=1, label="true orientations (same images)")
    pixels = "" if box_size is None else f", {box_size} px images"
    for ax in axes:
        noise_axis(ax)
        ax.set_xlabel(f"noise variance σ² (per pixel{pixels})")
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"mean $E_{OR,reg}$ (rad)")
    axes[1].set_ylabel("FSC 0.5 against the true map (Å)")
    axes[0].legend(fontsize=7)
