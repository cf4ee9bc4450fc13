"""RELION file formats: MRC stacks, STAR files and particle sets round-trip, and bad files fail clearly."""

import mrcfile
import numpy as np
import pytest

from cryoorient import relion
from cryoorient.geometry import quaternion_distance
from cryoorient.relion import (
    DatasetError,
    ParticleStack,
    read_particles,
    read_stack,
    read_star,
    write_particles,
    write_stack,
    write_star,
)


def random_stack(n=6, box=16, ctf=False, seed=0):
    rng = np.random.default_rng(seed)
    angles = np.stack(
        [rng.uniform(-np.pi, np.pi, n), rng.uniform(0, np.pi, n), rng.uniform(-np.pi, np.pi, n)], 1
    )
    ctf_params = None
    if ctf:
        ctf_params = {
            "defocus_u": rng.uniform(1e4, 2e4, n),
            "defocus_v": rng.uniform(1e4, 2e4, n),
            "astigmatism_angle": rng.uniform(0, np.pi, n),
            "voltage": 200.0,
            "spherical_aberration": 2.0,
            "amplitude_contrast": 0.07,
        }
    images = rng.standard_normal((n, box, box)).astype(np.float32)
    return ParticleStack(images, angles, rng.uniform(-3, 3, (n, 2)), 2.5, ctf_params)


# --- files -------------------------------------------------------------------------------------------


def test_star_round_trip_relion31(tmp_path):
    stack = random_stack(ctf=True)
    path = write_star(tmp_path / "p.star", stack.angles, stack.shifts, stack.pixel_size, 16, None, stack.ctf)
    star = read_star(path)
    assert np.abs(star.angles - stack.angles).max() < 1e-7  # %.6f degrees
    assert np.abs(star.shifts - stack.shifts).max() < 1e-5
    assert star.pixel_size == 2.5
    for key in ("defocus_u", "defocus_v", "astigmatism_angle"):
        assert np.allclose(star.ctf[key], stack.ctf[key], atol=1e-5)
    assert star.ctf["voltage"] == 200.0 and star.ctf["amplitude_contrast"] == 0.07
    text = path.read_text()
    assert "data_optics" in text and "data_particles" in text and "_rlnOriginXAngst" in text


def test_reads_relion30_star(tmp_path):
    path = tmp_path / "old.star"
    path.write_text(
        "\ndata_\n\nloop_\n_rlnImageName #1\n_rlnAngleRot #2\n_rlnAngleTilt #3\n_rlnAnglePsi #4\n"
        "_rlnOriginX #5\n_rlnOriginY #6\n_rlnDetectorPixelSize #7\n_rlnMagnification #8\n"
        "000001@old.mrcs 10.0 20.0 30.0 1.5 -2.0 5.0 10000.0\n"
        "000002@old.mrcs -45.0 90.0 0.0 0.0 0.5 5.0 10000.0\n"
    )
    star = read_star(path)
    assert np.allclose(np.degrees(star.angles), [[10, 20, 30], [-45, 90, 0]])
    assert np.allclose(star.shifts, [[1.5, -2.0], [0.0, 0.5]])  # RELION 3.0 origins are in pixels
    assert star.pixel_size == pytest.approx(5.0)  # 5 µm / 10,000 x
    assert star.image_names == ["000001@old.mrcs", "000002@old.mrcs"]


def test_star_without_angles_is_an_error(tmp_path):
    path = tmp_path / "coords.star"
    path.write_text("data_particles\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n10 20\n30 40\n")
    with pytest.raises(
        DatasetError, match=r"coords.star: no particle table with rlnAngleRot.*rlnCoordinateX"
    ):
        read_star(path)


def test_missing_and_corrupt_star(tmp_path):
    with pytest.raises(DatasetError, match="nothere.star: no such STAR file"):
        read_star(tmp_path / "nothere.star")
    bad = tmp_path / "bad.star"
    bad.write_bytes(b"\x00\x01 not a star file")
    with pytest.raises(DatasetError, match="bad.star"):
        read_star(bad)


def test_stack_round_trip_and_header(tmp_path):
    stack = random_stack()
    write_stack(tmp_path / "s.mrcs", stack.images, 2.5)
    images, pixel = read_stack(tmp_path / "s.mrcs")
    assert np.array_equal(images, stack.images) and pixel == pytest.approx(2.5)
    with mrcfile.open(tmp_path / "s.mrcs") as mrc:
        assert mrc.is_image_stack() and mrc.data.dtype == np.float32


def test_bad_stacks(tmp_path):
    with mrcfile.new(tmp_path / "rect.mrcs") as mrc:
        mrc.set_data(np.zeros((3, 8, 6), np.float32))
    with pytest.raises(DatasetError, match="rect.mrcs: images must be square"):
        read_stack(tmp_path / "rect.mrcs")
    with pytest.warns(RuntimeWarning, match="NaN"), mrcfile.new(tmp_path / "nan.mrcs") as mrc:
        mrc.set_data(np.full((2, 4, 4), np.nan, np.float32))
    with pytest.raises(DatasetError, match="nan.mrcs: the stack contains NaN"):
        read_stack(tmp_path / "nan.mrcs")
    (tmp_path / "junk.mrcs").write_bytes(b"junk" * 100)
    with pytest.raises(DatasetError, match="junk.mrcs: not a readable MRC stack"):
        read_stack(tmp_path / "junk.mrcs")
    with pytest.raises(DatasetError, match="none.mrcs: no such particle stack"):
        read_stack(tmp_path / "none.mrcs")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(relion.mrcfile, "new", broken)
    with pytest.raises(OSError, match="disk full"):
        write_stack(tmp_path / "s.mrcs", np.zeros((2, 4, 4)), 1.0)
    assert list(tmp_path.iterdir()) == []


def test_particles_round_trip(tmp_path):
    stack = random_stack(ctf=True)
    star = write_particles(tmp_path, stack)
    back = read_particles(star)
    assert np.array_equal(back.images, stack.images)
    assert np.abs(back.angles - stack.angles).max() < 1e-7 and back.pixel_size == 2.5
    assert quaternion_distance(back.quaternions, stack.quaternions).max() < 1e-6


def test_particles_with_missing_image(tmp_path):
    star = write_particles(tmp_path, random_stack(n=3))
    star.write_text(star.read_text().replace("000003@particles.mrcs", "000009@particles.mrcs"))
    with pytest.raises(DatasetError, match=r"'000009@particles.mrcs' is not in particles.mrcs \(3 images\)"):
        read_particles(star)


def test_particle_stack_validates():
    with pytest.raises(DatasetError, match="square"):
        ParticleStack(np.zeros((2, 4, 5)), np.zeros((2, 3)), np.zeros((2, 2)), 1.0)
    with pytest.raises(DatasetError, match=r"2 images but angles \(3, 3\)"):
        ParticleStack(np.zeros((2, 4, 4)), np.zeros((3, 3)), np.zeros((2, 2)), 1.0)


# What RELION 3.1's ObservationModel reads from an optics table (it stops with "not all necessary
# variables defined in _optics.star file" when the pixel size, voltage or Cs is missing), and what
# relion_reconstruct needs in the particles table. Written out here, not taken from relion.py, so
# the test fails if a column is dropped there.
RELION31_OPTICS = {"rlnOpticsGroup", "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality",
                   "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"}
RELION31_PARTICLES = {"rlnImageName", "rlnOpticsGroup", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
                      "rlnOriginXAngst", "rlnOriginYAngst"}
RELION31_CTF = {"rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"}


def _columns(text: str, table: str) -> set[str]:
    block = text.split(f"data_{table}", 1)[1].split("data_", 1)[0]
    return {line.split()[0].lstrip("_") for line in block.splitlines() if line.startswith("_rln")}


@pytest.mark.parametrize("ctf", [False, True], ids=["no CTF", "CTF"])
def test_written_particles_have_every_column_relion31_requires(tmp_path, ctf):
    stack = random_stack(ctf=ctf)
    text = write_particles(tmp_path / "out", stack).read_text()
    optics, particles = _columns(text, "optics"), _columns(text, "particles")
    assert RELION31_OPTICS <= optics, f"optics table lacks {sorted(RELION31_OPTICS - optics)}"
    assert RELION31_PARTICLES <= particles, f"particles table lacks {sorted(RELION31_PARTICLES - particles)}"
    assert (RELION31_CTF <= particles) == ctf  # defocus columns only when a CTF was applied
