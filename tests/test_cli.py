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
from cryoorient.relion import ParticleStack, read_particles, read_stack, write_particles

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
        "provenance.json",
        "splits.npz",
    ]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["command"][:2] == ["cryoorient", "simulate"] and provenance["map"]["name"] == "pseudo:1"
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
        (["--noise-var", "-1"], "--noise-var must be >= 0; got -1"),
        (["--snr-db", "60"], "--snr-db 60 is outside -40 to 40 dB"),
        (["-n", "0"], "-n/--n-projections must be at least 1; got 0"),
        (["--box-size", "0"], "--box-size must be a positive integer; got 0"),
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


# --- recover, reconstruct, fsc: from particles alone ---------------------------------------------

SMALL = ["simulate", "pseudo:1", "--box-size", "32", "--voxel-size", "8", "--quiet", "--seed", "3"]


@pytest.fixture(scope="module")
def particles_60(tmp_path_factory) -> "tuple[object, object]":
    """A 60-particle simulated stack (32 px) and the map it was projected from, as MRC files."""
    root = tmp_path_factory.mktemp("stack")
    assert main([*SMALL, "-n", "60", "-o", str(root / "ds")]) == 0
    truth = write_map(root / "truth.mrc", load_map("pseudo:1", box_size=32, voxel_size=8.0))
    return root / "ds" / "particles.star", truth


def test_recover_from_angles_writes_new_angles_in_the_gauge_of_the_images(particles_60, tmp_path, capsys):
    from cryoorient.alignment import registration_error

    star, _ = particles_60
    out = tmp_path / "elsewhere" / "recovered.star"
    assert main(["recover", str(star), "--distances-from-angles", "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "recovered 60 orientations" in printed and "E_OR,reg" in printed
    given, recovered = read_particles(star), read_particles(out)  # image names point back to the stack
    np.testing.assert_array_equal(recovered.images, given.images)
    assert not np.allclose(recovered.angles, given.angles, atol=1e-3)  # not copied
    assert registration_error(given.quaternions, recovered.quaternions) < 0.05


def test_recover_with_perturbed_distances(particles_60, tmp_path, capsys):
    star, _ = particles_60
    out = tmp_path / "perturbed.star"
    assert (
        main(
            ["recover", str(star), "--distances-from-angles", "--perturb", "0.01", "-o", str(out), "--quiet"]
        )
        == 0
    )
    assert "perturbation variance 0.01" in capsys.readouterr().out
    assert len(read_particles(out)) == 60


def test_reconstruct_and_fsc(particles_60, tmp_path, capsys):
    star, truth = particles_60
    volume = tmp_path / "map.mrc"
    assert main(["reconstruct", str(star), "-o", str(volume), "--method", "fourier", "--quiet"]) == 0
    assert "reconstructed 60 particles (fourier)" in capsys.readouterr().out
    curve = tmp_path / "curve.csv"
    assert main(["fsc", str(volume), str(truth), "-o", str(curve)]) == 0
    printed = capsys.readouterr().out
    assert "FSC 0.5:" in printed and "criterion between a map and a reference" in printed
    assert "0.143" not in printed  # the half-map criterion does not read a map against a reference
    table = np.loadtxt(curve, delimiter=",", skiprows=1)
    assert table.shape == (17, 2) and table[1, 1] > 0.9
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "curve.csv.provenance.json").read_text())["threshold"] == 0.5
    assert main(["fsc", str(volume), str(truth), "-o", str(curve)]) == 2  # no overwrite without --force
    assert "add --force" in capsys.readouterr().err
    assert main(["fsc", str(volume), str(truth), "--half-maps", "-o", str(curve), "--force"]) == 0
    assert "FSC 0.143:" in capsys.readouterr().out
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["fsc", str(volume), str(truth)]) == 0  # without -o nothing is written
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_fsc_align_registers_a_map_from_recovered_orientations(particles_60, tmp_path, capsys):
    star, truth = particles_60
    recovered = tmp_path / "recovered.star"
    assert main(["recover", str(star), "--distances-from-angles", "-o", str(recovered), "--quiet"]) == 0
    volume = tmp_path / "map.mrc"
    assert main(["reconstruct", str(recovered), "-o", str(volume), "--method", "fourier", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["fsc", str(volume), str(truth), "-o", str(tmp_path / "raw.csv")]) == 0
    raw = np.loadtxt(tmp_path / "raw.csv", delimiter=",", skiprows=1)
    assert main(["fsc", str(volume), str(truth), "--align", "-o", str(tmp_path / "aligned.csv")]) == 0
    assert "aligned" in capsys.readouterr().out
    aligned = np.loadtxt(tmp_path / "aligned.csv", delimiter=",", skiprows=1)
    assert aligned[1:6, 1].min() > 0.8 and aligned[1:6, 1].mean() > raw[1:6, 1].mean()


def test_recover_with_a_model_and_its_errors(particles_60, tmp_path, capsys):
    star, _ = particles_60
    model = tmp_path / "model"
    assert main(["train", str(star), "-o", str(model), *TRAIN]) == 0
    out = tmp_path / "learned.star"
    assert main(["recover", str(star), "--model", str(model), "-o", str(out), "--quiet"]) in (0, 3)
    assert "distances from" in capsys.readouterr().out and len(read_particles(out)) == 60
    out.unlink()
    # a stack smaller than the model's images
    given = read_particles(star)
    tiny = ParticleStack(given.images[:10, 10:22, 10:22].copy(), given.angles[:10], given.shifts[:10], 8.0)
    tiny_star = write_particles(tmp_path / "tiny", tiny)
    assert main(["recover", str(tiny_star), "--model", str(model), "-o", str(out)]) == 2
    assert "trained on 16-px images" in capsys.readouterr().err
    assert main(["recover", str(star), "--model", str(tmp_path / "none"), "-o", str(out)]) == 2
    assert "no model.pt" in capsys.readouterr().err
    # the same box at another pixel size: the model's training_data.json says what it learned from
    record = json.loads((model / "training_data.json").read_text())
    assert record["box_size"] == given.images.shape[-1]
    assert record["pixel_size"] == pytest.approx(given.pixel_size)
    assert record["input_std"] == 1.0 and record["preprocessing"] == "global standardisation"
    assert (model / "learning_curve.png").is_file() and (model / "provenance.json").is_file()
    other = ParticleStack(given.images, given.angles, given.shifts, 2 * given.pixel_size)
    other_star = write_particles(tmp_path / "other", other)
    assert main(["recover", str(other_star), "--model", str(model), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"trained at {given.pixel_size:g} Å/px" in err and "Rescale the particles" in err
    # a damaged record stops with its name, not a traceback
    (model / "training_data.json").write_text('{"box_size": 16')
    assert main(["recover", str(star), "--model", str(model), "-o", str(out)]) == 2
    assert "training_data.json: not a valid training record" in capsys.readouterr().err
    (model / "training_data.json").write_text('{"pixel_size": 8.0}')
    assert main(["recover", str(star), "--model", str(model), "-o", str(out)]) == 2
    assert "box_size" in capsys.readouterr().err
    # a model without the record (e.g. trained in Python): recovered, with a note to check by hand
    (model / "training_data.json").unlink()
    assert main(["recover", str(other_star), "--model", str(model), "-o", str(out), "--quiet"]) in (0, 3)
    assert "does not record the box and pixel size" in capsys.readouterr().err


def test_recover_errors_name_the_problem(particles_60, tmp_path, capsys):
    star, _ = particles_60
    out = str(tmp_path / "o.star")
    angles_only = tmp_path / "angles.star"
    angles_only.write_text(
        "data_particles\n\nloop_\n_rlnAngleRot #1\n_rlnAngleTilt #2\n_rlnAnglePsi #3\n"
        + "".join(f"{10 * i} {5 * i} {3 * i}\n" for i in range(12))
    )
    assert main(["recover", str(angles_only), "--distances-from-angles", "-o", out]) == 2
    assert "no rlnImageName column" in capsys.readouterr().err
    moved = tmp_path / "moved.star"
    moved.write_text(star.read_text())  # its images are not beside it
    assert main(["recover", str(moved), "--distances-from-angles", "-o", out]) == 2
    assert "no such particle stack" in capsys.readouterr().err
    given = read_particles(star)
    few = ParticleStack(given.images[:5], given.angles[:5], given.shifts[:5], given.pixel_size)
    assert (
        main(["recover", str(write_particles(tmp_path / "few", few)), "--distances-from-angles", "-o", out])
        == 2
    )
    assert "5 particles; at least 8" in capsys.readouterr().err
    assert main(["reconstruct", str(angles_only), "-o", str(tmp_path / "m.mrc")]) == 2
    assert "no rlnImageName column" in capsys.readouterr().err


# --- the command line as one program with the notebooks; bad input never a traceback -----------------


def test_train_defaults_are_the_notebooks_model():
    from cryoorient.cli import _parser, _training_config
    from cryoorient.model_cache import DEFAULT_MODEL, model_config

    args = _parser().parse_args(["train", "ds", "-o", "m"])
    assert _training_config(args, None) == model_config(seed=0, noise_variance=0.0, shift_limit=0.0)
    assert _training_config(args, None).distance == DEFAULT_MODEL["distance"] == "orientation"
    text = _parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "(default: orientation" in text and "(default: 40)" in text


def test_help_describes_every_command_and_version_names_the_commit(capsys):
    from cryoorient.cli import COMMANDS
    from cryoorient.paths import git_commit

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(f"\n  {name} " in text for name in COMMANDS), text
    with pytest.raises(SystemExit):
        main(["--version"])
    assert f"(commit {git_commit()})" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert "(default: uniform)" in capsys.readouterr().out


def test_fine_tuning_from_a_model_and_extending_a_finished_run(tmp_path, capsys):
    data = tmp_path / "ds"
    assert main([*SIMULATE[:3], "40", *SIMULATE[4:], "-o", str(data)]) == 0
    first = tmp_path / "first"
    assert main(["train", str(data), "-o", str(first), *TRAIN]) == 0
    # more epochs into the finished run's folder: another configuration, and the error says what to do
    longer = ["train", str(data), "-o", str(first), *TRAIN[:-3], "--epochs", "3", "--quiet"]
    assert main(longer) == 2
    err = capsys.readouterr().err
    assert f"--init-model {first} -o NEW_FOLDER --epochs K" in err and "--restart" in err
    assert "resume=False" not in err
    # fine-tuning: the network comes from the model, its weights start the training
    tuned = tmp_path / "tuned"
    assert main(["train", str(data), "-o", str(tuned), "--init-model", str(first), "--epochs", "1",
                 "--batch-size", "6", "--noise-var", "1", "--quiet"]) == 0
    from cryoorient.training import load_model

    config = load_model(tuned / "model.pt")[1]
    assert config.warm_start.startswith("sha256:") and config.n_features == 8 and config.image_size == 16
    assert config.learning_rate == 3e-4 and config.noise_variance == 1.0
    assert json.loads((tuned / "training_data.json").read_text())["input_std"] == pytest.approx(2**0.5)
    assert main(["train", str(data), "-o", str(tmp_path / "x"), "--init-model", str(first),
                 "--n-features", "16", "--quiet"]) == 2
    assert "--n-features 16: --init-model" in capsys.readouterr().err


def test_train_refuses_outputs_it_would_clobber_and_too_few_images(tmp_path, capsys, monkeypatch):
    data = tmp_path / "ds"
    assert main([*SIMULATE, "-o", str(data)]) == 0  # 12 images: 6 to train on
    assert main(["train", str(data), "-o", str(data), *TRAIN]) == 2
    assert "the dataset's own folder" in capsys.readouterr().err
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("mine")
    assert main(["train", str(data), "-o", str(other), *TRAIN]) == 2
    assert "holds no training run (found mine.txt)" in capsys.readouterr().err
    assert main(["train", str(data), "-o", str(tmp_path / "m"), *TRAIN[:4], "--batch-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "fewer than one batch (--batch-size 64)" in err and not (tmp_path / "m").exists()
    # Ctrl-C: a message that says how to resume, status 130, no traceback
    import cryoorient.cli as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train_distance", interrupted)
    assert main(["train", str(data), "-o", str(tmp_path / "m"), *TRAIN]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err


def test_diverged_training_writes_no_model(tmp_path, capsys):
    data = tmp_path / "ds"
    assert main([*SIMULATE[:3], "40", *SIMULATE[4:], "-o", str(data)]) == 0
    assert main(["train", str(data), "-o", str(tmp_path / "m"), *TRAIN, "--lr", "1e12"]) == 2
    err = capsys.readouterr().err
    assert "became NaN or infinite" in err and "Lower the learning rate" in err
    assert not (tmp_path / "m" / "model.pt").exists()


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu", "--device gpu: not a device"), ("cuda", "cannot use CUDA"), ("tpu:0", "not a device")],
)
def test_bad_devices_are_errors(tmp_path, capsys, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main([*SIMULATE, "--device", device, "-o", str(tmp_path / "ds")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "ds").exists()


def test_simulate_checks_memory_before_starting_and_missing_maps_are_errors(tmp_path, capsys, monkeypatch):
    assert main(["simulate", "pseudo:1", "-n", "1000000000", "--quiet", "-o", str(tmp_path / "big")]) == 2
    assert "GiB of memory" in capsys.readouterr().err and not (tmp_path / "big").exists()
    import cryoorient.density as density

    def offline():
        raise density._Unavailable("no network")

    monkeypatch.setattr(density, "_load_5j0n", offline)
    assert main(["simulate", "5j0n", "-n", "4", "--quiet", "-o", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "map '5j0n' is unavailable: no network" in err and "fallback=" not in err
    assert not (tmp_path / "ds").exists()
    assert main(["simulate", "5j0n", "-n", "4", "--box-size", "32", "--quiet", "--allow-fallback",
                 "-o", str(tmp_path / "ds")]) == 0
    captured = capsys.readouterr()
    assert "simulating 'pseudo:0' instead (--allow-fallback)" in captured.err
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["map"]["name"] == "pseudo:0"


def test_resample_and_outputs_not_overwritten(tmp_path, capsys):
    out = tmp_path / "ref.mrc"
    assert main(["resample", "pseudo:1", "--box-size", "24", "--voxel-size", "10", "-o", str(out)]) == 0
    density = __import__("cryoorient.density", fromlist=["read_map"]).read_map(out)
    assert density.shape == (24, 24, 24) and density.voxel_size == pytest.approx(10.0)
    assert main(["resample", "pseudo:1", "--box-size", "24", "-o", str(out)]) == 2
    assert "add --force" in capsys.readouterr().err
    assert main(["resample", "pseudo:1", "-o", str(tmp_path / "x.mrc")]) == 2
    assert "give --box-size and/or --voxel-size, or --like" in capsys.readouterr().err
    assert json.loads(out.with_name("ref.mrc.provenance.json").read_text())["command"][1] == "resample"


def test_recover_at_chance_is_a_loud_failure(tmp_path, capsys):
    """Pure-noise images cannot carry the orientations: the check says so, status 3, recorded."""
    rng = np.random.default_rng(0)
    noise = ParticleStack(rng.standard_normal((60, 32, 32)).astype(np.float32),
                          np.radians(rng.uniform(0, 180, (60, 3))), np.zeros((60, 2)), 8.0)
    star = write_particles(tmp_path / "noise", noise)
    out = tmp_path / "recovered.star"
    assert main(["recover", str(star), "--distances-from-angles", "-o", str(out), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "WARNING:" in err and "chance" in err
    check = json.loads(out.with_name("recovered.star.provenance.json").read_text())["check"]
    assert check["diagnosis"] == "chance" and out.is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "0"], "--epochs must be a positive integer; got 0"),
        (["--lr", "-1"], "--lr must be a positive learning rate; got -1"),
        (["--image-size", "0"], "--image-size must be at least 4 pixels; got 0"),
        (["--batch-size", "1"], "needs --batch-size >= 2"),
        (["--noise-var", "-2"], "--noise-var and --shift must be >= 0"),
    ],
)
def test_train_bad_values_name_their_flags(tmp_path, capsys, extra, message):
    data = tmp_path / "ds"
    assert main([*SIMULATE, "-o", str(data)]) == 0
    assert main(["train", str(data), "-o", str(tmp_path / "m"), "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_train_and_recover_on_a_ctf_stack_prepare_the_particles_alike(tmp_path, capsys):
    """A CTF-affected stack (simulate --ctf writes RELION's defocus columns): a model trained with
    --treatment records it, recover prepares the particles the same way from the STAR's columns,
    refuses CTF-free particles for it, and a CTF-free model warns that it ignores the columns."""
    ctf_data, plain_data = tmp_path / "ctf", tmp_path / "plain"
    assert main([*SIMULATE[:3], "40", *SIMULATE[4:], "--ctf", "-o", str(ctf_data)]) == 0
    assert main([*SIMULATE[:3], "40", *SIMULATE[4:], "-o", str(plain_data)]) == 0
    model = tmp_path / "flip"
    assert main(["train", str(ctf_data), "-o", str(model), *TRAIN, "--treatment", "phase_flip"]) == 0
    assert "trained 2 epochs" in capsys.readouterr().out
    assert torch.load(model / "model.pt", weights_only=False)["config"]["treatment"] == "phase_flip"
    out = tmp_path / "flip.star"
    star = ctf_data / "particles.star"
    assert main(["recover", str(star), "--model", str(model), "-o", str(out), "--quiet"]) in (0, 3)
    assert "distances from" in capsys.readouterr().out and len(read_particles(out)) == 40
    plain_star = plain_data / "particles.star"
    assert main(["recover", str(plain_star), "--model", str(model), "-o", str(tmp_path / "x.star")]) == 2
    err = capsys.readouterr().err
    assert "trained on CTF-affected images (phase_flip)" in err and "no rlnDefocusU/rlnDefocusV" in err
    # a model trained without a CTF on the CTF stack: training and recovery both say so
    plain_model = tmp_path / "plain_model"
    assert main(["train", str(ctf_data), "-o", str(plain_model), *TRAIN]) == 0
    assert "CTF columns, which training without --treatment ignores" in capsys.readouterr().err
    out2 = tmp_path / "plain.star"
    assert main(["recover", str(star), "--model", str(plain_model), "-o", str(out2), "--quiet"]) in (0, 3)
    assert "trained without a CTF; the images are used as they are" in capsys.readouterr().err
    # --treatment on a stack without a CTF, and a fine-tune that would change the network's channels
    assert main(["train", str(plain_data), "-o", str(tmp_path / "m"), *TRAIN, "--treatment", "wiener"]) == 2
    assert "needs a dataset with a CTF" in capsys.readouterr().err
    two = ["--init-model", str(model), "--treatment", "two_channel"]
    assert main(["train", str(ctf_data), "-o", str(tmp_path / "m2"), *TRAIN[2:], *two]) == 2
    assert "takes another number of channels" in capsys.readouterr().err


@pytest.mark.slow
def test_abinitio_runs_rounds_from_another_map_and_resumes(tmp_path, capsys):
    """The bootstrap loop on particles of pseudo:1, starting from a map of pseudo:2 (not theirs):
    each round's STAR, map and model in OUT/round_K/; run again with more rounds, only the new ones run."""
    data = tmp_path / "ds"
    assert main([*SIMULATE[:3], "40", *SIMULATE[4:], "-o", str(data)]) == 0
    init = write_map(tmp_path / "init.mrc", load_map("pseudo:2", box_size=32, voxel_size=8.0))
    out = tmp_path / "abinitio"
    quick = ["--refine-rounds", "1", "--n-train", "160", "--epochs", "1", "--init-epochs", "1", "--quiet"]
    star = str(data / "particles.star")
    assert main(["abinitio", star, "--init-model", str(init), "-o", str(out), "--rounds", "1", *quick]) == 0
    printed = capsys.readouterr().out
    assert "round 1: wrote" in printed and "abinitio: 1 rounds" in printed
    for name in ("particles.star", "map.mrc", "model.pt", "quaternions.npy", "round.json"):
        assert (out / "round_1" / name).is_file()
    assert (out / "initial" / "model.pt").is_file() and (out / "provenance.json").is_file()
    assert len(read_particles(out / "round_1" / "particles.star")) == 40
    assert main(["abinitio", star, "--init-model", str(init), "-o", str(out), "--rounds", "2", *quick]) == 0
    printed = capsys.readouterr().out
    assert "round 1: wrote" not in printed and "round 2: wrote" in printed and "abinitio: 2 rounds" in printed
    # a pretrained start: the first estimator's folder
    other = tmp_path / "from_model"
    assert main(["abinitio", star, "--pretrained", str(out / "initial"), "-o", str(other), "--rounds", "1",
                 *quick]) == 0
    assert (other / "round_1" / "particles.star").is_file()
    capsys.readouterr()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["abinitio", star, "--init-model", str(init), "-o", str(tmp_path / "busy"), *quick]) == 2
    assert "holds other files; choose a new folder" in capsys.readouterr().err
    bad = ["abinitio", star, "--init-model", str(init), "-o", str(tmp_path / "x"), "--rounds", "0"]
    assert main(bad) == 2
    assert "--rounds must be at least 1; got 0" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_train_on_several_maps_validates_on_the_dataset(tmp_path, capsys):
    """train --maps: projections drawn on the fly from other maps; DATASET validates and tests."""
    data = tmp_path / "ds"
    assert main([*SIMULATE[:3], "40", *SIMULATE[4:], "-o", str(data)]) == 0
    other = write_map(tmp_path / "other.mrc", load_map("pseudo:3", box_size=32, voxel_size=8.0))
    model = tmp_path / "model"
    maps = ["--maps", "pseudo:2", str(other), "--steps-per-epoch", "2"]
    assert main(["train", str(data), "-o", str(model), *TRAIN, *maps]) == 0
    assert "trained 2 epochs" in capsys.readouterr().out
    history = json.loads((model / "history.json").read_text())
    assert [sum(h["steps_per_map"]) for h in history] == [2, 2]
    provenance = json.loads((model / "provenance.json").read_text())
    assert provenance["maps"] == ["pseudo:2", str(other)] and str(other) in provenance["inputs"]
    bad = ["train", str(data), "-o", str(tmp_path / "m2"), *TRAIN, "--maps", "pseudo:2", "--recipe", "paper"]
    assert main(bad) == 2
    assert "--maps trains with the inbatch recipe" in capsys.readouterr().err
