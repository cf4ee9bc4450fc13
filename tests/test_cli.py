import json
import shutil
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import torch

from cryoorient.cli import main
from cryoorient.density import DensityMap, load_map, write_map
from cryoorient.projection import normalize_images
from cryoorient.relion import read_particles, read_stack

SIMULATE = ["simulate", "pseudo:1", "-n", "12", "--box-size", "32", "--voxel-size", "8", "--quiet"]


def test_simulate_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main([*SIMULATE, "--shift", "2", "--snr-db", "0", "-o", str(out)]) == 0
    assert "wrote 12 projections of pseudo:1 (32 px" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "dataset.json",
        "particles.mrcs",
        "particles.star",
        "particles_quaternions.npy",
        "splits.npz",
    ]
    record = json.loads((out / "dataset.json").read_text())
    assert record["parameters"]["noise_variance"] == pytest.approx(1.0)  # 0 dB
    assert record["map"]["name"] == "pseudo:1"
    particles = read_particles(out / "particles.star")
    assert particles.images.shape == (12, 32, 32) and np.abs(particles.shifts).max() <= 2


def test_project_reproduces_the_simulated_images(tmp_path):
    out = tmp_path / "ds"
    assert main([*SIMULATE, "--shift", "3", "-o", str(out)]) == 0
    map_path = write_map(tmp_path / "map.mrc", load_map("pseudo:1", box_size=32, voxel_size=8.0))
    projected = tmp_path / "proj.mrcs"
    assert (
        main(["project", str(map_path), "--angles", str(out / "particles.star"), "--output", str(projected)])
        == 0
    )
    images, pixel = read_stack(projected)
    assert images.shape == (12, 32, 32) and pixel == pytest.approx(8.0)
    simulated = read_particles(out / "particles.star").images  # normalised over the dataset
    again = normalize_images(torch.from_numpy(images)).numpy()
    assert np.abs(again - simulated).max() < 1e-3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--noise-var", "-1"], "noise_variance must be >= 0; got -1"),
        (["--shift", "40"], "larger than half the box"),
    ],
)
def test_simulate_bad_values(tmp_path, capsys, extra, message):
    assert main([*SIMULATE, *extra, "-o", str(tmp_path / "ds")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_simulate_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    assert main([*SIMULATE, "-o", str(tmp_path / "ds")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "ds" / "keep.txt").read_text() == "mine"


def test_project_errors_name_the_file(tmp_path, capsys):
    star = tmp_path / "coords.star"
    star.write_text("data_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n10 20\n")
    assert main(["project", "pseudo:1", "--angles", str(star), "--output", str(tmp_path / "o.mrcs")]) == 2
    assert "coords.star: no particle table with rlnAngleRot" in capsys.readouterr().err
    assert (
        main(
            ["project", str(tmp_path / "missing.mrc"), "--angles", str(star), "-o", str(tmp_path / "o.mrcs")]
        )
        == 2
    )
    assert "missing.mrc" in capsys.readouterr().err
    assert not (tmp_path / "o.mrcs").exists()


@pytest.mark.slow
def test_installed_command_help():
    exe = shutil.which("cryoorient") or str(__import__("pathlib").Path(sys.executable).parent / "cryoorient")
    for command, options in [
        ("project", ["--angles", "--output", "--ctf", "--device"]),
        (
            "simulate",
            ["--noise-var", "--snr-db", "--shift", "--ctf", "--defocus", "--orientations", "--seed"],
        ),
    ]:
        result = subprocess.run([exe, command, "--help"], capture_output=True, text=True, check=True)
        assert all(option in result.stdout for option in options)


TRAIN = ["--image-size", "16", "--n-features", "8", "--batch-size", "6", "--epochs", "2", "--quiet"]


def test_train_on_a_dataset_folder_and_on_a_star_file(tmp_path, capsys):
    data = tmp_path / "ds"
    assert main([*SIMULATE[:3], "40", *SIMULATE[4:], "-o", str(data)]) == 0
    assert main(["train", str(data), "-o", str(tmp_path / "model"), *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "trained 2 epochs" in out and "RMSE" in out and "Pearson r" in out
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert (tmp_path / "model" / "model.pt").is_file()
    # a plain RELION STAR file: truth from its angles, the paper's split made here
    assert main(["train", str(data / "particles.star"), "-o", str(tmp_path / "star"), *TRAIN]) == 0
    assert "trained 2 epochs" in capsys.readouterr().out


def test_train_errors_name_the_input(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m"), *TRAIN]) == 2
    assert "nowhere: no such dataset folder or STAR file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "-o", str(tmp_path / "m"), *TRAIN]) == 2
    assert "no dataset.json" in capsys.readouterr().err


# --- bad input, every command: a clear error naming the file and the fix, status 2, nothing left ---


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small dataset folder, its map and broken variants of both."""
    root = tmp_path_factory.mktemp("inputs")
    assert main([*SIMULATE, "-o", str(root / "ds")]) == 0
    density = load_map("pseudo:1", box_size=32, voxel_size=8.0)
    good = write_map(root / "map.mrc", density)
    (root / "truncated.mrc").write_bytes(good.read_bytes()[:2000])
    (root / "text.mrc").write_text("this is not an MRC file\n" * 20)
    with pytest.warns(RuntimeWarning, match="NaN"), mrcfile.new(root / "nan.mrc") as mrc:
        data = density.data.copy()
        data[3, 4, 5] = np.nan
        mrc.set_data(data)
        mrc.voxel_size = 8.0
    half = DensityMap(density.data, 4.0, name="half", source="test")
    write_map(root / "other_pixel.mrc", half)
    star = (root / "ds" / "particles.star").read_text()
    stacks = root / "stacks"
    stacks.mkdir()
    stack = (root / "ds" / "particles.mrcs").read_bytes()
    (stacks / "truncated.mrcs").write_bytes(stack[: len(stack) // 2])
    (stacks / "truncated.star").write_text(star.replace("@particles.mrcs", "@truncated.mrcs"))
    (stacks / "text.mrcs").write_text("not a stack\n" * 200)
    (stacks / "text.star").write_text(star.replace("@particles.mrcs", "@text.mrcs"))
    (stacks / "particles.mrcs").write_bytes(stack)
    (stacks / "past_end.star").write_text(star.replace("000012@particles.mrcs", "000099@particles.mrcs"))
    (stacks / "no_angles.star").write_text(star.replace("_rlnAngleTilt", "_rlnAngleTiltPrior"))
    return root


def _simulate(root, out, map_name="map.mrc"):
    return ["simulate", str(root / map_name), "-n", "6", "--quiet", "-o", str(out)]


def _project(root, out, map_name="map.mrc", star="ds/particles.star"):
    return ["project", str(root / map_name), "--angles", str(root / star), "-o", str(out)]


def _train(root, out, star):
    return ["train", str(root / "stacks" / star), "-o", str(out), *TRAIN]


BAD_INPUT = {
    # name: (command line from (inputs, output), words the error must contain)
    "simulate truncated map": (lambda r, o: _simulate(r, o, "truncated.mrc"), ["truncated.mrc", "MRC"]),
    "simulate non-MRC map": (lambda r, o: _simulate(r, o, "text.mrc"), ["text.mrc", "MRC"]),
    "simulate NaN map": (lambda r, o: _simulate(r, o, "nan.mrc"), ["nan.mrc", "NaN", "repair"]),
    "project truncated map": (lambda r, o: _project(r, o, "truncated.mrc"), ["truncated.mrc", "MRC"]),
    "project NaN map": (lambda r, o: _project(r, o, "nan.mrc"), ["nan.mrc", "NaN", "repair"]),
    "project STAR without angles": (
        lambda r, o: _project(r, o, star="stacks/no_angles.star"),
        ["no_angles.star", "rlnAngleTilt"],
    ),
    "project pixel size off the map's": (
        lambda r, o: _project(r, o, "other_pixel.mrc"),
        ["particles.star", "8", "4", "resample the map"],
    ),
    "train truncated stack": (lambda r, o: _train(r, o, "truncated.star"), ["truncated.mrcs", "regenerate"]),
    "train non-MRC stack": (lambda r, o: _train(r, o, "text.star"), ["text.mrcs", "regenerate"]),
    "train STAR without angles": (
        lambda r, o: _train(r, o, "no_angles.star"),
        ["no_angles.star", "rlnAngleTilt"],
    ),
    "train image past the stack's end": (
        lambda r, o: _train(r, o, "past_end.star"),
        ["past_end.star", "000099@particles.mrcs", "12 images"],
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_a_clear_error_and_leaves_nothing(inputs, tmp_path, capsys, case):
    command, words = BAD_INPUT[case]
    out = tmp_path / ("out.mrcs" if command(inputs, tmp_path)[0] == "project" else "out")
    assert main(command(inputs, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cryoorient {command(inputs, out)[0]}: error: ")
    missing = [w for w in words if w not in err]
    assert not missing, f"{case}: {missing} not in {err!r}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], f"{case} left {list(tmp_path.iterdir())}"


@pytest.mark.parametrize("command", ["simulate", "project", "train"])
def test_existing_outputs_are_refused_or_kept(inputs, tmp_path, capsys, command):
    if command == "simulate":
        out = tmp_path / "ds"
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        args = _simulate(inputs, out)
    elif command == "project":
        out = tmp_path / "missing" / "out.mrcs"
        args = _project(inputs, out)
    else:
        out = tmp_path / "model"
        out.write_text("mine")
        args = ["train", str(inputs / "ds"), "-o", str(out), *TRAIN]
    assert main(args) == 2
    err = capsys.readouterr().err
    fix = {"simulate": "choose a new output folder", "project": "create it first", "train": "choose a folder"}
    assert str(out) in err and fix[command] in err, err
    if command == "project":
        assert not out.parent.exists()
    else:
        assert "mine" in (out / "keep.txt" if out.is_dir() else out).read_text()
