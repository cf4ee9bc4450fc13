import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cryoorient.plotting import grouped_bars, plot_directions, plot_distance_histogram, save_figure  # noqa: E402


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
