"""`cryoorient match` and `cryoorient refine` on a simulated RELION stack."""

import json
import math

import numpy as np
import pytest
import torch

from cryoorient.cli import main
from cryoorient.density import load_map, write_map
from cryoorient.geometry import euler_to_matrix, matrix_to_euler
from cryoorient.matching import axis_angle_matrix
from cryoorient.refinement import rotation_change
from cryoorient.relion import read_particles, read_star, write_star_like

SIMULATE = ["simulate", "pseudo:1", "--box-size", "32", "--voxel-size", "8", "--quiet", "--seed", "4"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A 120-particle simulated stack (32 px, 8 Å, σ² = 0.1) and its map as an MRC file."""
    root = tmp_path_factory.mktemp("stack")
    assert main([*SIMULATE, "-n", "120", "--noise-var", "0.1", "-o", str(root / "ds")]) == 0
    truth = write_map(root / "truth.mrc", load_map("pseudo:1", box_size=32, voxel_size=8.0))
    return root / "ds" / "particles.star", truth


def rotations(star) -> torch.Tensor:
    return euler_to_matrix(torch.from_numpy(read_star(star).angles))


def test_match_finds_the_orientations_of_the_particles(stack, tmp_path, capsys):
    star, truth = stack
    out = tmp_path / "matched.star"
    command = ["match", str(star), "--reference", str(truth), "-o", str(out), "--directions", "300"]
    assert main([*command, "--in-plane", "24", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "matched 120 particles" in printed and "7,200 orientations" in printed
    error = rotation_change(rotations(out), rotations(star))
    assert error.median() < math.radians(2)  # from a 15° grid to under 2° by the local search
    np.testing.assert_array_equal(read_particles(out).images, read_particles(star).images)
    record = json.loads((tmp_path / "matched.star.provenance.json").read_text())
    assert record["grid"]["orientations"] == 7200 and 0.9 < record["score"]["median"] <= 1


def test_match_refuses_a_reference_of_another_grid_and_bad_bands(stack, tmp_path, capsys):
    star, _ = stack
    other = write_map(tmp_path / "other.mrc", load_map("pseudo:1", box_size=24, voxel_size=8.0))
    out = tmp_path / "m.star"
    assert main(["match", str(star), "--reference", str(other), "-o", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "24x24x24 voxels of 8 Å" in error and "--box-size 32 --voxel-size 8" in error
    assert (
        main(["match", str(star), "--reference", str(other), "-o", str(out), "--max-frequency", "0.7"]) == 2
    )
    assert "--max-frequency must be in (0, 0.5]" in capsys.readouterr().err
    assert not out.exists()


def test_refine_improves_perturbed_angles_and_writes_half_maps(stack, tmp_path, capsys):
    star, _ = stack
    meta = read_star(star)
    truth = rotations(star)
    rng = np.random.default_rng(0)
    axes = torch.from_numpy(rng.normal(size=(len(truth), 3)))
    start = axis_angle_matrix(axes / axes.norm(dim=1, keepdim=True) * math.radians(5)) @ truth
    init = write_star_like(tmp_path / "init.star", meta, angles=matrix_to_euler(start).numpy())
    out, volume = tmp_path / "refined.star", tmp_path / "maps" / "map.mrc"
    command = ["refine", str(star), "--init", str(init), "-o", str(out), "--map-out", str(volume)]
    assert main([*command, "--rounds", "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "refined 120 particles in" in printed and "(FSC 0.143)" in printed
    # 60 particles a half pull their half maps towards their current angles: a few rounds move them
    # only part of the way (tests/test_refinement.py follows a larger stack further)
    assert rotation_change(rotations(out), truth).median() < math.radians(5) * 0.95
    table = read_star(out).particles_table
    assert sorted(set(table["rlnRandomSubset"])) == [1, 2]
    for name in ("map.mrc", "map_half1.mrc", "map_half2.mrc", "map_fsc.csv", "map_fsc.png"):
        assert (tmp_path / "maps" / name).stat().st_size > 0
    assert np.loadtxt(tmp_path / "maps" / "map_fsc.csv", delimiter=",", skiprows=1).shape == (17, 2)
    rounds = json.loads((tmp_path / "refined.star.provenance.json").read_text())["rounds"]
    assert len(rounds) <= 3 and all(r["resolution"] >= 16.0 for r in rounds)  # never beyond Nyquist


def test_refine_refuses_angles_of_other_particles(stack, tmp_path, capsys):
    star, _ = stack
    meta = read_star(star)
    names = list(reversed(meta.image_names))
    other = write_star_like(tmp_path / "other.star", meta, image_names=names)
    assert main(["refine", str(star), "--init", str(other), "-o", str(tmp_path / "r.star"), "--quiet"]) == 2
    assert "INIT.star lists other particles or another order" in capsys.readouterr().err
    assert not (tmp_path / "r.star").exists()


@pytest.mark.slow
def test_match_and_refine_with_the_particles_ctfs(tmp_path, capsys):
    """A CTF-affected stack (4 Å pixels: CTF zeros below Nyquist): `match --ctf` and `refine --ctf`
    use the STAR's defocus columns and find the orientations; without --ctf they warn and do worse."""
    ctf_sim = ["simulate", "pseudo:1", "--box-size", "32", "--voxel-size", "4", "--quiet", "--seed", "4"]
    assert main([*ctf_sim, "-n", "80", "--noise-var", "0.1", "--ctf", "-o", str(tmp_path / "ds")]) == 0
    star = tmp_path / "ds" / "particles.star"
    truth = write_map(tmp_path / "truth.mrc", load_map("pseudo:1", box_size=32, voxel_size=4.0))
    median = {}
    for flag in ("--ctf", None):
        out = tmp_path / f"matched{flag or ''}.star"
        command = ["match", str(star), "--reference", str(truth), "-o", str(out), "--directions", "300",
                   "--in-plane", "24", "--quiet", *([flag] if flag else [])]
        assert main(command) == 0
        median[flag] = float(rotation_change(rotations(out), rotations(star)).median())
        warned = "has CTF columns; the images are compared without a CTF" in capsys.readouterr().err
        assert warned == (flag is None)
    assert median["--ctf"] < math.radians(2) and median[None] > 2 * median["--ctf"], median
    # refine from the CTF-aware matches, with the CTFs: stays as close, writes half maps
    refined = tmp_path / "refined.star"
    command = ["refine", str(star), "--init", str(tmp_path / "matched--ctf.star"), "-o", str(refined),
               "--rounds", "2", "--ctf", "--quiet", "--map-out", str(tmp_path / "map.mrc")]
    assert main(command) == 0
    assert float(rotation_change(rotations(refined), rotations(star)).median()) < math.radians(2)
    plain = tmp_path / "plain"
    assert main([*ctf_sim, "-n", "20", "-o", str(plain)]) == 0  # the same grid, no CTF
    command = ["match", str(plain / "particles.star"), "--reference", str(truth), "-o", str(tmp_path / "x")]
    assert main([*command, "--ctf"]) == 2
    assert "--ctf needs rlnDefocusU/rlnDefocusV columns" in capsys.readouterr().err
