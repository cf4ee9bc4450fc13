import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cryoorient.plotting import (  # noqa: E402
    file_tag,
    grouped_bars,
    plot_contest,
    plot_directions,
    plot_distance_agreement,
    plot_distance_histogram,
    plot_error_histogram,
    plot_error_vs_noise,
    plot_errors_and_fsc,
    plot_exact_recovery,
    plot_ladder,
    plot_learned_recovery,
    plot_learning_curves,
    plot_loss_history,
    plot_one_to_all,
    plot_perturbation_sweep,
    plot_squared_errors,
    plot_validation_curves,
    save_figure,
)


@pytest.fixture
def figures(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_FIGURES", str(tmp_path))
    return tmp_path


def test_save_figure_writes_pdf_png_and_provenance(figures):
    fig, ax = plt.subplots()
    plot_distance_histogram(ax, np.linspace(0, np.pi, 100))
    written = save_figure(fig, "demo", profile="default", map="pseudo", n=100)
    assert sorted(p.name for p in written) == ["demo.json", "demo.pdf", "demo.png"]
    assert sorted(p.name for p in figures.iterdir()) == ["demo.json", "demo.pdf", "demo.png"]  # no temp files
    stamp = json.loads((figures / "demo.json").read_text())
    assert stamp["profile"] == "default" and stamp["map"] == "pseudo" and stamp["n"] == 100
    assert stamp["commit"]
    first = {p.name: p.read_bytes() for p in written}
    save_figure(fig, "demo", profile="default", map="pseudo", n=100)
    assert {p.name: p.read_bytes() for p in written} == first  # same figure, same bytes
    plt.close(fig)


def test_save_figure_keeps_other_profiles_in_their_own_folder(figures):
    fig = plt.figure()
    save_figure(fig, "demo", profile="default")
    save_figure(fig, "demo", profile="long")
    assert sorted(p.name for p in figures.iterdir()) == ["demo.json", "demo.pdf", "demo.png", "long"]
    assert sorted(p.name for p in (figures / "long").iterdir()) == ["demo.json", "demo.pdf", "demo.png"]
    assert json.loads((figures / "long" / "demo.json").read_text())["profile"] == "long"
    with pytest.raises(ValueError, match="plain name"):
        save_figure(fig, "demo", profile="../default")
    plt.close(fig)


@pytest.mark.parametrize("name", ["", "../x", ".hidden"])
def test_save_figure_rejects_paths(figures, name):
    fig = plt.figure()
    with pytest.raises(ValueError, match="plain file stem"):
        save_figure(fig, name, profile="default")
    plt.close(fig)


def test_plot_directions_places_poles_and_equator():
    fig = plt.figure()
    ax = fig.add_subplot(projection="mollweide")
    plot_directions(ax, np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    lon_lat = ax.collections[0].get_offsets()
    assert np.allclose(lon_lat, [[0.0, np.pi / 2], [np.pi / 2, 0.0]])
    plt.close(fig)


def test_plot_directions_checks_its_input():
    fig = plt.figure()
    with pytest.raises(ValueError, match="mollweide"):
        plot_directions(fig.add_subplot(), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        plot_directions(fig.add_subplot(projection="mollweide"), np.zeros((3, 2)))
    plt.close(fig)


def test_grouped_bars_places_one_bar_per_series_and_group():
    fig, ax = plt.subplots()
    grouped_bars(ax, ["a", "b", "c"], {"x": [1, 2, 3], "y": [0.1, 0.2, 0.3]}, log=True)
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [0.1, 0.2, 0.3, 1, 2, 3] and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        grouped_bars(ax, ["a", "b", "c"], {"x": [1, 2]})
    with pytest.raises(ValueError, match="empty"):
        grouped_bars(ax, ["a"], {})
    plt.close(fig)


def _lines(ax):
    return [np.asarray(line.get_ydata(), dtype=float).tolist() for line in ax.get_lines()]


def test_learning_curves_and_loss_history_draw_their_data_on_a_log_axis():
    fig, (left, right) = plt.subplots(1, 2)
    plot_learning_curves(left, [1, 2, 3], [0.3, 0.2, 0.1], [0.4, 0.3, 0.25])
    assert _lines(left) == [[0.3, 0.2, 0.1], [0.4, 0.3, 0.25]] and left.get_yscale() == "log"
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["training", "validation"]
    plot_loss_history(right, np.array([1.0, 0.5, 0.4]), label="σ² = 0")
    assert _lines(right) == [[1.0, 0.5, 0.4]] and right.get_yscale() == "log"
    assert right.get_xlabel() == "L-BFGS step"
    plt.close(fig)


def test_distance_agreement_draws_the_diagonal_and_checks_shapes():
    fig, (points, bins) = plt.subplots(1, 2)
    d_q = np.linspace(0, np.pi, 50)
    plot_distance_agreement(points, d_q, d_q + 0.1, color="C1")
    assert np.allclose(points.collections[0].get_offsets()[:, 1], d_q + 0.1)
    assert _lines(points) == [[0, np.pi]]  # the diagonal of a perfect estimate
    plot_distance_agreement(bins, d_q, d_q, hexbin=True)
    assert bins.get_ylim() == (0, np.pi) and bins.collections[0].get_array().sum() == len(d_q)
    with pytest.raises(ValueError, match="differ in shape"):
        plot_distance_agreement(points, d_q, d_q[:-1])
    plt.close(fig)


def test_squared_errors_one_box_per_group_in_order():
    fig, ax = plt.subplots()
    plot_squared_errors(ax, {"training": [0.0, 0.1, 0.2], "validation": [0.0, 0.3, 0.6]})
    assert [t.get_text() for t in ax.get_xticklabels()] == ["training", "validation"]
    medians = [line.get_ydata()[0] for line in ax.get_lines() if line.get_color() not in ("black", "k")]
    assert np.allclose(sorted(set(medians)), [0.1, 0.3])
    with pytest.raises(ValueError, match="empty"):
        plot_squared_errors(ax, {})
    plt.close(fig)


def test_error_histogram_marks_mean_and_median():
    fig, ax = plt.subplots()
    errors = np.array([0.1, 0.2, 0.3, 2.0])
    plot_error_histogram(ax, errors, label="σ² = 0", color="C2")
    assert sum(p.get_height() for p in ax.patches) == len(errors)
    assert [line.get_xdata()[0] for line in ax.get_lines()] == pytest.approx([0.65, 0.25])
    (text,) = ax.get_legend().get_texts()
    assert text.get_text() == "σ² = 0: $E_{OR}$ 0.650 rad, median 0.250 rad"
    plt.close(fig)


def test_perturbation_sweep_and_noise_curve_draw_mean_median_and_references():
    fig, (sweep, noise) = plt.subplots(1, 2)
    plot_perturbation_sweep(sweep, [0.0, 0.1], [0.01, 0.2], [0.005, 0.15])
    plot_perturbation_sweep(sweep, [0.0, 0.1], [0.02, 0.3], [0.01, 0.25], label="half", color="C1")
    assert _lines(sweep) == [[0.01, 0.2], [0.005, 0.15], [0.02, 0.3], [0.01, 0.25]]
    lines = sweep.get_lines()
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color() == lines[3].get_color()
    assert [line.get_label() for line in lines[2:]] == ["mean ($E_{OR}$), half", "median, half"]
    plot_error_vs_noise(noise, [0, 1, 16], [0.07, 0.1, 0.3], [0.06, 0.08, 0.2], chance=2.14, matched=4.9,
                        paper=0.25, box_size=64)
    ys = _lines(noise)
    assert ys[:2] == [[0.07, 0.1, 0.3], [0.06, 0.08, 0.2]] and ys[2] == [2.14, 2.14] and ys[4] == [0.25]
    assert noise.get_lines()[3].get_xdata()[0] == 4.9 and noise.get_xscale() == "symlog"
    assert "64 px" in noise.get_xlabel()
    plt.close(fig)


def test_plot_ladder_draws_a_bar_per_rung_and_medians_only_when_given():
    fig, (left, right) = plt.subplots(1, 2)
    plot_ladder(left, ["a", "b", "c"], [1.7, 0.08, 0.07], [1.6, 0.07, 0.06], reference={"chance": 2.1})
    placed = {t.get_text(): y for t, y in zip(left.get_yticklabels(), left.get_yticks(), strict=True)}
    assert len(left.patches) == 3 and placed["a"] > placed["b"] > placed["c"]  # the first rung on top
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["median", "chance", "mean"]
    plot_ladder(right, ["a", "b"], [0.5, 0.06], [np.nan, np.nan])  # no medians: no median marker or entry
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["mean"]
    with pytest.raises(ValueError, match="labels"):
        plot_ladder(right, ["a"], [1.0, 2.0], [1.0, 2.0])
    plt.close(fig)


def test_plot_contest_draws_a_line_per_contender_with_rows_sorted_by_noise():
    levels = {"16": {"matching": {"e_reg": 0.05, "resolution": 20.0}},
              "0": {"matching": {"e_reg": 0.004, "resolution": 8.0},
                    "learned+refined": {"e_reg": 0.01, "resolution": 9.0}}}
    labels = {"matching": "matching", "learned+refined": "refined", "random+refined": "random"}
    fig, axes = plt.subplots(1, 2)
    plot_contest(axes, levels, labels, chance=2.0, ceilings={"0": 7.5, "16": 19.0})
    matching, refined = axes[0].get_lines()[:2]
    np.testing.assert_allclose(matching.get_xdata(), [0.0, 16.0])  # sorted by σ², not by key order
    np.testing.assert_allclose(matching.get_ydata(), [0.004, 0.05])
    assert refined.get_linestyle() == "--" and matching.get_linestyle() == "-"
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert legend == ["matching", "refined", "random orientations, 2.00"]  # no row, no line
    np.testing.assert_allclose(axes[1].get_lines()[-1].get_ydata(), [7.5, 19.0])  # the ceiling
    with pytest.raises(ValueError, match="two axes"):
        plot_contest(axes[:1], levels, labels)
    plt.close(fig)


def test_one_to_all_draws_a_colour_per_reference_and_refuses_mismatched_shapes():
    rng = np.random.default_rng(0)
    d_q = rng.uniform(0, np.pi, (3, 40))
    fig, axes = plt.subplots(1, 2)
    plot_one_to_all(axes, d_q, {"learned": d_q + 0.1, "euclidean": d_q * 0.5})
    assert [len(ax.collections) for ax in axes] == [3, 3]  # one scatter per reference
    np.testing.assert_allclose(axes[1].collections[2].get_offsets()[:, 1], d_q[2] * 0.5)
    assert [ax.get_title() for ax in axes] == ["learned", "euclidean"]
    with pytest.raises(ValueError, match="bad: estimates of shape"):
        plot_one_to_all(axes[:1], d_q, {"bad": d_q[:2]})
    plt.close(fig)


def test_validation_curves_one_line_per_model_and_file_tags():
    histories = {"a": [{"epoch": 1, "validation_loss": 0.5}, {"epoch": 2, "validation_loss": 0.25}],
                 "b": [{"epoch": 1, "validation_loss": 0.4}]}
    fig, ax = plt.subplots()
    plot_validation_curves(ax, histories)
    assert [line.get_label() for line in ax.lines] == ["a", "b"] and ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.5, 0.25])
    plt.close(fig)
    assert file_tag("pseudo-d2:3") == "pseudo-d2-3" and file_tag("maps/emd_1.mrc") == "maps-emd_1.mrc"


def _directions(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_recovery_figure_shows_loss_errors_and_three_direction_maps():
    before, after = np.array([1.0, 2.0, 3.0]), np.array([1e-9, 2e-9, 3e-9])
    sets = [(_directions(20, k), name) for k, name in enumerate(("true", "recovered", "aligned"))]
    fig = plot_exact_recovery(np.array([0.5]), before, after, sets)
    loss, hist_before, hist_after, *maps = fig.axes
    assert len(maps) == 3 and [ax.get_title() for ax in maps] == [
        "true directions (20)", "recovered directions (20)", "aligned directions (20)"]
    assert "0 steps" in loss.texts[0].get_text()  # one loss value: the spectral start was exact
    assert hist_before.get_title() == "before: mean 2.00 rad"
    assert hist_after.get_title() == "after: $E_{OR}$ = 2.0e-09 rad"
    assert sum(p.get_height() for p in hist_after.patches) == 3
    plt.close(fig)
    fig = plot_exact_recovery(np.array([1.0, 0.1]), before, after, sets)
    assert not fig.axes[0].texts  # the loss fell: no note
    plt.close(fig)
    with pytest.raises(ValueError, match="three"):
        plot_exact_recovery(np.array([1.0]), before, after, sets[:2])
    plt.close("all")


def test_learned_recovery_figure_has_the_papers_three_panels():
    fig = plot_learned_recovery({"training": [0.01, 0.02], "validation": [0.02, 0.04]},
                                np.array([0.3, 0.1, 0.2]), np.array([0.1, 0.2, 0.6]), title="σ² = 0")
    boxes, loss, errors = fig.axes
    assert [t.get_text() for t in boxes.get_xticklabels()] == ["training", "validation"]
    assert loss.get_title() == "$L_{OR}$, minimum 0.1000 rad²"
    assert loss.get_lines()[-1].get_ydata()[0] == pytest.approx(0.1)  # the minimum marked
    assert [line.get_xdata()[0] for line in errors.get_lines()] == pytest.approx([0.3, 0.2])  # mean, median
    assert fig._suptitle.get_text() == "σ² = 0"
    plt.close(fig)


def test_errors_and_fsc_figure_one_column_per_set():
    frequencies = np.linspace(0, 0.1, 11)
    curves = {"true": (frequencies, np.linspace(1, 0, 11), 12.0),
              "recovered": (frequencies, np.linspace(1, -0.1, 11), 14.5)}
    columns = {"uniform": (_directions(30, 0), np.full(30, 0.1), curves),
               "half": (_directions(30, 1), np.full(30, 2.0), curves)}
    fig = plot_errors_and_fsc(columns, title="non-uniform")
    top_left, top_right = (ax for ax in fig.axes if ax.name == "mollweide")
    bottom_left, bottom_right = (ax for ax in fig.axes if ax.get_legend() is not None)
    assert top_left.get_title() == "uniform" and top_right.get_title() == "half"
    assert top_right.collections[0].get_array().max() == 2.0  # errors colour the directions
    legend = [t.get_text() for t in bottom_right.get_legend().get_texts()]
    assert legend == ["true: 12.0 Å", "recovered: 14.5 Å"]
    assert bottom_left.get_ylabel() == "FSC with the true map"
    assert fig._suptitle.get_text() == "non-uniform"
    plt.close("all")
