"""The command line as a practitioner uses it: on a RELION project, from its root, with a shipped model.

The miniature project (:mod:`relion_project`) is what RELION's Extract job leaves: a STAR file with
two optics groups, no angles, image names relative to the project folder, and columns the
command line must carry through untouched. Its particles are projections of the paper's map 5j0n
at the default profile's box and pixel size, so the shipped noiseless model applies to them.
"""

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import starfile
import torch
from relion_project import make_relion_project

from cryoorient import model_cache
from cryoorient.alignment import align_orientations
from cryoorient.cli import main
from cryoorient.density import load_map, read_map
from cryoorient.relion import read_particles, read_star, write_particles
from cryoorient.sampling import sample_orientations

#: The default profile's noiseless estimator and its σ² = 4 stage (models/registry.json).
NOISELESS, NOISE4 = "116867f8d67a9d5c", "379918b52338078c"
BOX, PIXEL = 64, 4.296875  # the default profile's 5j0n: 64 px at 4.297 Å


def _shipped(key: str) -> Path:
    shipped = model_cache.shipped_models_dir()
    if shipped is None or not os.environ.get("CRYOORIENT_MAPS"):
        pytest.skip("needs a checkout's models/ and 5j0n.mrc (CRYOORIENT_MAPS)")
    return shipped / key


def _tree(root: Path, skip: Path | None = None) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (outside ``skip``)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (skip is None or skip not in p.parents)
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A RELION project whose Extract job holds 200 noiseless 5j0n projections in two optics groups."""
    from cryoorient.dataset import simulate_particles

    _shipped(NOISELESS)
    density = load_map("5j0n", box_size=BOX, fallback=False)
    assert density.voxel_size == pytest.approx(PIXEL)
    truth = sample_orientations(200, seed=11)
    stack = simulate_particles(density, truth, seed=12, progress=False)
    root = tmp_path_factory.mktemp("relion_project")
    made = make_relion_project(
        root,
        n=200,
        box=BOX,
        pixel_sizes=(PIXEL, PIXEL),
        images=stack.images,
        extra_blocks=["data_general\n\n_rlnNrClasses 1\n"],
    )
    return made, truth


@pytest.mark.slow
def test_practitioner_workflow_from_the_project_root(project, monkeypatch, capsys):
    made, truth = project
    root = made.root
    monkeypatch.chdir(root)
    before = _tree(root)
    star = "Extract/job005/particles.star"
    model = str(_shipped(NOISELESS))

    # a reference at the stack's box and pixel size, from the STAR file itself
    assert main(["resample", "5j0n", "--like", star, "-o", "cryoorient/reference.mrc"]) == 0
    reference = read_map(root / "cryoorient/reference.mrc")
    assert reference.shape == (BOX,) * 3 and reference.voxel_size == pytest.approx(PIXEL, rel=1e-4)

    status = main(["recover", star, "--model", model, "-o", "cryoorient/recovered.star", "--quiet"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "recovered 200 orientations" in printed.out and "WARNING" not in printed.err

    # every input column, every optics group and the other blocks come through; angles are added
    given = starfile.read(root / star, always_dict=True)
    written = starfile.read(root / "cryoorient/recovered.star", always_dict=True)
    assert list(written) == list(given) == ["optics", "particles", "general"]
    assert written["optics"].equals(given["optics"])
    for column in given["particles"].columns:
        assert written["particles"][column].equals(given["particles"][column]), column
    assert {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"} <= set(written["particles"].columns)
    assert written["general"] == given["general"]  # a single-row block: a dict

    # the recovered orientations are the truth up to a global O(4) transform (noiseless: small)
    recovered = read_particles("cryoorient/recovered.star")
    np.testing.assert_array_equal(recovered.images, made.images)
    error = align_orientations(truth, recovered.quaternions).error
    assert error < 0.15, error
    provenance = json.loads((root / "cryoorient/recovered.star.provenance.json").read_text())
    assert provenance["check"]["diagnosis"] == "ok" and provenance["inputs"]

    # a map from the recovered orientations, and its resolution against the reference
    assert (
        main(
            [
                "reconstruct",
                "cryoorient/recovered.star",
                "-o",
                "cryoorient/map.mrc",
                "--method",
                "fourier",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(["fsc", "cryoorient/map.mrc", "cryoorient/reference.mrc", "--align", "-o", "cryoorient/fsc.csv"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "FSC 0.5:" in printed and (root / "cryoorient/fsc.png").is_file()
    aligned = float(printed.split("FSC 0.5: ")[1].split(" Å")[0])
    assert aligned < 30, printed  # 200 noiseless particles; Nyquist is 8.6 Å

    # nothing outside the output folder was touched, nothing left in the project root
    assert _tree(root, skip=root / "cryoorient") == before
    assert sorted(p.name for p in root.iterdir()) == ["Extract", "cryoorient"]

    # the outputs are never overwritten without --force, and never the input
    assert main(["recover", star, "--model", model, "-o", "cryoorient/recovered.star"]) == 2
    assert "exists; choose another output name, or add --force" in capsys.readouterr().err
    assert main(["recover", star, "--model", model, "-o", star, "--force"]) == 2
    assert "is an input of this command" in capsys.readouterr().err
    assert _tree(root, skip=root / "cryoorient") == before


@pytest.mark.slow
def test_the_project_folder_is_where_image_names_start(project, tmp_path, monkeypatch, capsys):
    made, _ = project
    monkeypatch.chdir(tmp_path)  # elsewhere: the names do not resolve, and the message says why
    star = str(made.star)
    model = str(_shipped(NOISELESS))
    out = str(tmp_path / "out.star")
    assert main(["recover", star, "--model", model, "-o", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Extract/job005/Movies/mic1.mrcs" in err and "project" in err
    assert (
        main(["recover", star, "--model", model, "-o", out, "--project-dir", str(made.root), "--quiet"]) == 0
    )
    capsys.readouterr()
    assert len(read_star(out).image_names) == 200


def test_mixed_pixel_sizes_are_refused_clearly(tmp_path, monkeypatch, capsys):
    made = make_relion_project(tmp_path, n=20, box=16, pixel_sizes=(8.59, 5.0))
    monkeypatch.chdir(made.root)
    star = "Extract/job005/particles.star"
    before = _tree(made.root)
    assert main(["recover", star, "--model", str(tmp_path / "model"), "-o", "out/recovered.star"]) == 2
    err = capsys.readouterr().err
    assert "8.59" in err and "5" in err and "optics group" in err, err
    assert main(["recover", star, "--distances-from-angles", "-o", "out/recovered.star"]) == 2  # needs angles
    assert "rlnAngle" in capsys.readouterr().err
    assert _tree(made.root) == before and not (made.root / "out").exists()


def test_mixed_optics_with_a_ctf_are_refused_one_group_at_a_time(tmp_path, monkeypatch, capsys):
    angles = np.zeros((20, 3))
    made = make_relion_project(tmp_path, n=20, box=16, pixel_sizes=(4.0, 4.0), voltages=(200.0, 300.0))
    monkeypatch.chdir(made.root)
    meta = read_star("Extract/job005/particles.star", angles_required=False)
    from cryoorient.relion import write_star_like

    write_star_like(tmp_path / "with_angles.star", meta, angles=angles)
    assert main(["reconstruct", str(tmp_path / "with_angles.star"), "-o", "map.mrc", "--ctf"]) == 2
    assert "one optics group at a time" in capsys.readouterr().err
    # without --ctf (relion_reconstruct's default) the particles are taken as they are
    assert (
        main(
            [
                "reconstruct",
                str(tmp_path / "with_angles.star"),
                "-o",
                "map.mrc",
                "--quiet",
                "--method",
                "fourier",
            ]
        )
        == 0
    )
    assert (made.root / "map.mrc").is_file()


@pytest.mark.slow
def test_a_shipped_noisy_model_through_the_cli_matches_notebook_04(tmp_path, capsys):
    """The σ² = 4 estimator on its own kind of stack (the default dataset's test split at σ² = 4),
    through `cryoorient recover`: E_OR within 0.01 rad of what notebook 04 reports for it."""
    from cryoorient.dataset import SimulationParameters, load_dataset
    from cryoorient.paths import repo_root

    model = _shipped(NOISE4)
    committed = repo_root() / "paper" / "results" / "default" / "04_orientation_recovery.json"
    saved = json.loads(committed.read_text())["values"]["learned"]["4"]  # the committed run, not build/test
    assert saved["model"] == NOISE4
    data = load_dataset(
        SimulationParameters(map="5j0n", n_projections=5000, box_size=BOX, noise_variance=4.0, seed=0)
    )
    test = data.splits["test"]
    p = data.particles
    stack = type(p)(p.images[test], p.angles[test], p.shifts[test], p.pixel_size)
    star = write_particles(tmp_path / "test_split", stack)
    out = tmp_path / "recovered.star"
    assert main(["recover", str(star), "--model", str(model), "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    recovered = read_particles(out).quaternions
    error = align_orientations(data.quaternions[test], recovered).error
    print(f"E_OR through the CLI {error:.4f} rad; notebook 04 {saved['e_or']:.4f} rad; {printed}")
    assert abs(error - saved["e_or"]) < 0.01, (error, saved["e_or"])
    assert math.isfinite(error) and torch.is_tensor(recovered)
