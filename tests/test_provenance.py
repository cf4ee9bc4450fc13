"""Generated records say which file, never where this machine keeps it."""

import hashlib
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from cryoorient import report
from cryoorient.dataset import map_provenance
from cryoorient.density import DensityMap, load_map, write_map
from cryoorient.paths import repo_root
from cryoorient.plotting import save_figure
from cryoorient.provenance import MACHINE_PATH, map_record, portable, portable_path, portable_text
from cryoorient.results import load_results, save_results

ROOT = repo_root()


@pytest.fixture
def mrc(tmp_path):
    """A small map written to a temporary (machine) folder, and the SHA-256 of the file."""
    data = np.zeros((8, 8, 8), np.float32)
    data[3:5, 2:6, 4] = 1.0
    path = tmp_path / "deep" / "folder" / "blob.mrc"
    path.parent.mkdir(parents=True)
    write_map(path, DensityMap(data, 2.0, "blob", "test"))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_paths_inside_the_repository_become_relative_and_others_their_name(tmp_path):
    assert portable_path(ROOT / "paper" / "results" / "default" / "x.json") == "paper/results/default/x.json"
    assert portable_path(tmp_path / "a" / "5j0n.mrc") == "5j0n.mrc"
    assert portable_path("relative/stays.txt") == "relative/stays.txt"
    assert portable_path(r"C:\Users\me\maps\5j0n.mrc") == "5j0n.mrc"


def test_a_file_outside_the_repository_keeps_its_sha256(mrc):
    path, digest = mrc
    assert portable_path(path, with_sha256=True) == f"blob.mrc (SHA-256 {digest})"
    assert portable_path(path.parent / "absent.mrc", with_sha256=True) == "absent.mrc"


UNCHANGED = [
    "fallback for 5j0n: download failed; generated: pseudo:0",
    "E_OR / L_OR, σ²/16, 1/2, rad/s, ../data, ./x, ~/y",
    "5a1a.cif (from https://files.rcsb.org/download/5A1A.cif)",
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/work/shared/data/5j0n.mrc", "5j0n.mrc"),
        ("map 5j0n (read from /home/me/maps/5j0n.mrc).", "map 5j0n (read from 5j0n.mrc)."),
        ("/tmp/x/5a1a.cif (from https://files.rcsb.org/download/5A1A.cif)", UNCHANGED[2]),
        (r"read C:\Users\me\5j0n.mrc, then", "read 5j0n.mrc, then"),
    ]
    + [(text, text) for text in UNCHANGED],
)
def test_portable_text_rewrites_absolute_paths_only(text, expected):
    assert portable_text(text) == expected
    assert portable_text(expected) == expected  # idempotent
    assert not MACHINE_PATH.search(portable_text(text))


def test_portable_walks_nested_records():
    record = {"/work/a/b.json": ["/tmp/c/d.npz", 1.5, None, ("/home/e/f.mrc",)], "n": 3}
    assert portable(record) == {"b.json": ["d.npz", 1.5, None, ("f.mrc",)], "n": 3}


def test_map_record_identifies_the_data_not_the_folder(mrc, tmp_path):
    path, digest = mrc
    density = load_map(path)
    record = map_record(density)
    assert record["name"] == "blob.mrc" and record["source"] == f"blob.mrc (SHA-256 {digest})"
    assert record["voxel_size"] == density.voxel_size
    copy = tmp_path / "elsewhere" / "blob.mrc"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert map_record(load_map(copy)) == record  # same file elsewhere: the same record
    changed = DensityMap(density.data * 2, density.voxel_size, density.name, density.source)
    assert map_record(changed)["sha256"] != record["sha256"]
    assert map_provenance(density) == {"map": record}
    assert str(tmp_path) not in json.dumps(map_provenance(density))


def test_saved_results_and_figure_stamps_hold_no_machine_path(mrc, tmp_path, monkeypatch):
    path, digest = mrc
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path / "paper"))
    monkeypatch.setenv("CRYOORIENT_FIGURES", str(tmp_path / "figures"))
    saved = save_results("01_x", {"map": "blob", "from": str(path)}, profile="default", map_source=str(path))
    text = saved.read_text()
    assert str(tmp_path) not in text and f"blob.mrc (SHA-256 {digest})" in text
    assert load_results("01_x", "default").provenance["map_source"] == f"blob.mrc (SHA-256 {digest})"
    fig = plt.figure()
    try:
        written = save_figure(fig, "blob", profile="default", map_source=str(path), data=path.parent)
    finally:
        plt.close(fig)
    stamp = json.loads(written[-1].read_text())
    assert stamp["map_source"] == f"blob.mrc (SHA-256 {digest})" and stamp["data"] == "folder"
    assert str(tmp_path) not in written[-1].read_text()


def test_the_report_drops_machine_paths_of_results_saved_before(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path))
    folder = tmp_path / "results" / "default"
    save_results("04_orientation_recovery", {"map": "5j0n", "exact": {"e_or": 1e-15}}, profile="default")
    record = json.loads((folder / "04_orientation_recovery.json").read_text())
    record["provenance"]["map_source"] = "/work/shared/data/5j0n.mrc"  # as written before the fix
    (folder / "04_orientation_recovery.json").write_text(json.dumps(record))
    document = report.numbers_document()
    assert document["profiles"]["default"]["runs"]["04_orientation_recovery"]["map_source"] == "5j0n.mrc"
    assert "/work" not in report.render_report(document) and "/work" not in json.dumps(document)
