"""RELION file formats: MRC stacks, STAR files and particle sets round-trip, and bad files fail clearly."""

import mrcfile
import numpy as np
import pandas as pd
import pytest
from relion_project import JOB, make_relion_project

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


# --- a RELION project: Extract job output, optics groups, paths, carried metadata -------------------


def test_extract_particles_read_from_the_project_root(tmp_path, monkeypatch):
    project = make_relion_project(tmp_path, n=6)
    monkeypatch.chdir(tmp_path)
    star = read_star(JOB / "particles.star", angles_required=False)
    assert star.angles is None and star.pixel_size == 1.5 and star.defaulted == ()
    stack = read_particles(JOB / "particles.star", angles_required=False)
    assert np.array_equal(stack.images, project.images)  # STAR order, alternating between the stacks
    assert not stack.has_angles and np.array_equal(stack.angles, np.zeros((6, 3)))
    assert stack.pixel_size == 1.5 and np.array_equal(stack.shifts, np.zeros((6, 2)))
    # each particle's optics from its group; mixed voltages become per-particle arrays
    assert np.array_equal(stack.ctf["voltage"], np.where(project.groups == 1, 200.0, 300.0))
    assert np.array_equal(stack.ctf["amplitude_contrast"], np.where(project.groups == 1, 0.1, 0.07))
    paths = relion.resolve_image_names(project.star, project.image_names)
    assert paths == [project.stacks[g - 1] for g in project.groups]


def test_no_angles_is_still_an_error_by_default(tmp_path, monkeypatch):
    make_relion_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    for read in (read_star, read_particles):
        with pytest.raises(DatasetError, match=r"particles.star: no particle table with rlnAngleRot.*Tilt"):
            read(JOB / "particles.star")


def test_image_names_resolve_against_the_project_not_the_star_folder(tmp_path, monkeypatch):
    project = make_relion_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(DatasetError) as error:
        read_particles(project.star, angles_required=False)
    message = str(error.value)
    tried_project = elsewhere / JOB / "Movies" / "mic1.mrcs"
    tried_star = project.star.parent / JOB / "Movies" / "mic1.mrcs"
    for words in (str(project.star), "000001@Extract/job005/Movies/mic1.mrcs", str(tried_project),
                  str(tried_star), "project folder"):
        assert words in message
    stack = read_particles(project.star, angles_required=False, project_dir=project.root)
    assert np.array_equal(stack.images, project.images)


def test_self_contained_folder_reads_from_any_working_directory(tmp_path, monkeypatch):
    given = random_stack(n=4)
    star = write_particles(tmp_path / "ds", given)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert np.array_equal(read_particles(star).images, given.images)
    assert np.array_equal(read_particles(star, project_dir=tmp_path / "cwd").images, given.images)
    monkeypatch.chdir(tmp_path / "ds")  # the STAR file's own folder: one file, no ambiguity
    assert np.array_equal(read_particles("particles.star").images, given.images)


def test_two_different_stacks_of_one_name_are_ambiguous(tmp_path, monkeypatch):
    given = random_stack(n=4)
    star = write_particles(tmp_path / "ds", given)
    write_stack(tmp_path / "particles.mrcs", np.zeros((4, 16, 16)), 2.5)  # an unrelated stack in the cwd
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=r"000001@particles.mrcs' names two different stacks.*project_dir"):
        read_particles(star)
    assert np.array_equal(read_particles(star, project_dir=star.parent).images, given.images)
    assert not read_particles(star, project_dir=tmp_path).images.any()


def test_mixed_pixel_sizes_read_but_make_no_stack(tmp_path, monkeypatch):
    origins = np.round(np.random.default_rng(3).uniform(-6, 6, (6, 2)), 6)  # Å, as written
    project = make_relion_project(tmp_path, pixel_sizes=(1.0, 1.6), origins_angst=origins)
    monkeypatch.chdir(tmp_path)
    star = read_star(project.star, angles_required=False)
    assert star.pixel_size is None
    assert np.array_equal(star.pixel_sizes, np.where(project.groups == 1, 1.0, 1.6))
    assert np.allclose(star.shifts, origins / project.pixel_sizes[:, None], rtol=0, atol=1e-12)
    with pytest.raises(DatasetError) as error:
        read_particles(project.star, angles_required=False)
    message = str(error.value)
    for words in ("particles.star", "different pixel sizes", "'opticsGroup1': 1 Å (3 particles)",
                  "'opticsGroup2': 1.6 Å (3 particles)", "one optics group at a time", "rescale"):
        assert words in message


def test_one_group_or_equal_optics_give_scalars(tmp_path, monkeypatch):
    make_relion_project(tmp_path, voltages=(300.0, 300.0), spherical_aberrations=(2.7, 2.7),
                        amplitude_contrasts=(0.1, 0.1), pixel_sizes=(1.2, 1.2))
    monkeypatch.chdir(tmp_path)
    star = read_star(JOB / "particles.star", angles_required=False)
    assert star.pixel_size == 1.2
    assert {k: star.ctf[k] for k in relion.CTF_OPTICS} == {
        "voltage": 300.0, "spherical_aberration": 2.7, "amplitude_contrast": 0.1
    }


def test_missing_optics_values_are_defaulted_and_recorded(tmp_path):
    path = tmp_path / "p.star"
    path.write_text(
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n_rlnAmplitudeContrast #3\n"
        "1 2.0 0.0\n\ndata_particles\n\nloop_\n_rlnOpticsGroup #1\n_rlnDefocusU #2\n_rlnDefocusV #3\n"
        "1 10000.0 11000.0\n1 12000.0 12500.0\n"
    )
    star = read_star(path, angles_required=False)
    assert star.defaulted == ("voltage", "spherical_aberration")
    assert star.ctf["voltage"] == 300.0 and star.ctf["spherical_aberration"] == 2.7
    assert star.ctf["amplitude_contrast"] == 0.0  # given as 0, not replaced by the default
    written = write_star(tmp_path / "q.star", np.zeros((2, 3)), np.zeros((2, 2)), 2.0, 8)
    assert read_star(written).defaulted == ()


def test_unknown_optics_group_is_an_error(tmp_path, monkeypatch):
    project = make_relion_project(tmp_path)
    project.star.write_text(project.star.read_text().replace("opticsGroup2            2", "opticsGroup2  7"))
    with pytest.raises(DatasetError, match=r"particles.star: particles of optics group 2 .* has only 1, 7"):
        read_star(project.star, angles_required=False)


def _assert_same_blocks(a, b):
    assert list(a) == list(b)
    for name in a:
        if isinstance(a[name], dict):
            assert a[name] == b[name]
        else:
            pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)


def test_write_star_like_carries_every_block_column_and_group(tmp_path, monkeypatch):
    extra = ("data_general\n\n_rlnNote    \"kept as it is\"\n_rlnValue 0.1234567890123\n",
             "data_notes\n\nloop_\n_rlnName #1\n_rlnNumber #2\nfirst 1.5\nsecond 2.25\n")
    project = make_relion_project(tmp_path, pixel_sizes=(1.0, 1.6), extra_blocks=extra)
    monkeypatch.chdir(tmp_path)
    source = read_star(project.star, angles_required=False)
    assert list(source.blocks) == ["optics", "particles", "general", "notes"]
    angles = np.random.default_rng(1).uniform(-np.pi, np.pi, (6, 3)) * [1, 0.5, 1] + [0, np.pi / 2, 0]
    out = relion.write_star_like(tmp_path / "out.star", source, angles=angles)
    back = read_star(out)
    pd.testing.assert_frame_equal(back.optics_table, source.optics_table, check_exact=True)
    assert back.blocks["general"] == {"rlnNote": "kept as it is", "rlnValue": 0.1234567890123}
    pd.testing.assert_frame_equal(back.blocks["notes"], source.blocks["notes"], check_exact=True)
    # every input column unchanged, in order, then the three angles (degrees) exactly as given
    particles = back.particles_table
    columns = list(source.particles_table.columns)
    assert list(particles.columns) == columns + list(relion.ANGLE_COLUMNS)
    pd.testing.assert_frame_equal(particles[columns], source.particles_table, check_exact=True)
    assert np.array_equal(particles[list(relion.ANGLE_COLUMNS)].to_numpy(), np.degrees(angles))
    assert np.array_equal(np.radians(np.degrees(angles)), back.angles)
    assert np.array_equal(back.pixel_sizes, source.pixel_sizes)
    # written again unchanged, it reads back equal: nothing is lost or rounded
    _assert_same_blocks(read_star(relion.write_star_like(tmp_path / "again.star", back)).blocks, back.blocks)


def test_write_star_like_replaces_angles_names_and_drops(tmp_path):
    path = write_particles(tmp_path, random_stack(n=4, ctf=True))
    source = read_star(path)
    angles = np.zeros((4, 3))
    out = relion.write_star_like(
        tmp_path / "out.star", source, angles=angles, image_names=[f"{i:06d}@x.mrcs" for i in range(1, 5)],
        drop=("rlnDefocusAngle", "rlnNotThere"),
    )
    back = read_star(out)
    kept = [c for c in source.particles_table.columns if c != "rlnDefocusAngle"]
    assert list(back.particles_table.columns) == kept
    assert np.array_equal(back.angles, angles) and back.image_names[0] == "000001@x.mrcs"
    with pytest.raises(DatasetError, match=r"out.star: angles must be \(4, 3\)"):
        relion.write_star_like(tmp_path / "out.star", source, angles=np.zeros((3, 3)))
    with pytest.raises(DatasetError, match="3 image names for 4 particles"):
        relion.write_star_like(tmp_path / "out.star", source, image_names=["1@a", "2@a", "3@a"])


def test_write_star_like_keeps_a_relion30_file_one_table(tmp_path):
    path = tmp_path / "old.star"
    path.write_text(
        "\ndata_\n\nloop_\n_rlnImageName #1\n_rlnMicrographName #2\n_rlnDefocusU #3\n_rlnDefocusV #4\n"
        "_rlnOriginX #5\n_rlnOriginY #6\n_rlnDetectorPixelSize #7\n_rlnMagnification #8\n_rlnVoltage #9\n"
        "000001@old.mrcs mic1.mrc 10000.5 9000.25 1.5 -2.0 5.0 10000.0 300.0\n"
        "000002@old.mrcs mic1.mrc 12000.125 11000.0 0.0 0.5 5.0 10000.0 300.0\n"
    )
    source = read_star(path, angles_required=False)
    assert source.particles_block == "" and source.optics_table is None and source.pixel_size == 5.0
    assert source.defaulted == ("spherical_aberration", "amplitude_contrast")
    angles = np.array([[0.1, 0.2, 0.3], [-0.4, 1.5, 3.0]])
    out = relion.write_star_like(tmp_path / "out.star", source, angles=angles)
    assert "data_optics" not in out.read_text() and "data_\n" in out.read_text()
    back = read_star(out)
    columns = list(source.particles_table.columns)
    pd.testing.assert_frame_equal(back.particles_table[columns], source.particles_table, check_exact=True)
    assert np.array_equal(back.angles, np.radians(np.degrees(angles))) and back.pixel_size == 5.0


def test_written_floats_read_back_exactly(tmp_path):
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-9, 9, 2000),
                             [0.0, 1.0, 1e-300, 123456789.123456789, 1 / 3]])
    source = relion.StarParticles(None, np.zeros((len(values), 2)), None, None, None,
                                  particles_table=pd.DataFrame({"rlnAutopickFigureOfMerit": values}))
    back = read_star(relion.write_star_like(tmp_path / "f.star", source), angles_required=False)
    assert np.array_equal(back.particles_table["rlnAutopickFigureOfMerit"].to_numpy(), values)
    assert back.particles_table["rlnAutopickFigureOfMerit"].dtype == np.float64  # 1.0, not 1
