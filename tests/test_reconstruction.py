import math

import numpy as np
import pytest
import torch

from cryoorient.dataset import simulate_particles
from cryoorient.density import DensityMap, load_map, map_fsc, read_map
from cryoorient.fsc import fourier_shell_correlation, resolution
from cryoorient.geometry import euler_to_matrix, quaternion_to_matrix
from cryoorient.projection import apply_ctf, ctf_2d, project
from cryoorient.reconstruction import ReconstructionResult, reconstruct
from cryoorient.relion import read_particles, read_star, reconstruct_particles, write_reconstruction
from cryoorient.sampling import sample_orientations

D = 32  # box of the reconstruction tests; 0.8 Nyquist is shell 12.8
N = 400


@pytest.fixture(scope="module")
def truth() -> DensityMap:
    return load_map("pseudo:0", box_size=D)


@pytest.fixture(scope="module")
def rotations() -> torch.Tensor:
    return quaternion_to_matrix(sample_orientations(N, "uniform", seed=11))


@pytest.fixture(scope="module")
def images(truth, rotations) -> torch.Tensor:
    return project(torch.as_tensor(truth.data), rotations, device="cpu")


def fsc_up_to(volume, reference, fraction=0.8) -> torch.Tensor:
    """FSC of the shells up to ``fraction`` of Nyquist (shell 0 included)."""
    reference = reference.data if isinstance(reference, DensityMap) else reference
    _, fsc = fourier_shell_correlation(volume, reference)
    return fsc[: int(fraction * (len(fsc) - 1)) + 1]


# --- reconstruction of a known map ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fourier", "cgls"])
def test_reconstruct_known_map_from_exact_projections(truth, rotations, images, method, device):
    result = reconstruct(
        images.to(device), rotations, method=method, n_iterations=8, device=device, progress=False
    )
    assert isinstance(result, ReconstructionResult)
    assert result.volume.shape == (D, D, D) and result.volume.dtype == torch.float32
    assert result.volume.device.type == torch.device(device).type
    assert result.method == method and result.seconds > 0
    fsc = fsc_up_to(result.volume.cpu(), truth)
    assert fsc.min() > 0.9, fsc
    if method == "cgls":
        # least squares fits the data far better than one Fourier pass
        fourier = reconstruct(images, rotations, method="fourier", progress=False)
        assert result.residuals[-1] < 0.1 * fourier.residuals[0]
        assert fsc.min() > 0.995, fsc


def test_plain_cgls_from_zero_converges_too(truth, rotations, images):
    result = reconstruct(
        images, rotations, initial=None, precondition=False, n_iterations=15, tol=0, progress=False
    )
    assert result.residuals[0] == pytest.approx(1.0)
    assert result.iterations == 15 and not result.converged
    assert fsc_up_to(result.volume, truth).min() > 0.99


def test_preconditioning_reaches_a_lower_residual_in_the_same_iterations(rotations, images):
    common = dict(initial=None, n_iterations=6, tol=0, progress=False)
    plain = reconstruct(images, rotations, precondition=False, **common)
    preconditioned = reconstruct(images, rotations, precondition=True, **common)
    assert preconditioned.residuals[-1] < 0.8 * plain.residuals[-1]


def test_initial_volume_is_used(truth, rotations, images):
    result = reconstruct(
        images, rotations, initial=torch.as_tensor(truth.data), n_iterations=0, progress=False
    )
    assert result.iterations == 0
    torch.testing.assert_close(result.volume, torch.as_tensor(truth.data))
    assert result.residuals[0] < 0.01  # the map explains its own projections


def test_random_orientations_give_a_poor_map(truth, images):
    wrong = quaternion_to_matrix(sample_orientations(N, "uniform", seed=99))
    result = reconstruct(images, wrong, method="fourier", progress=False)
    frequencies, fsc = fourier_shell_correlation(result.volume, truth.data, truth.voxel_size)
    assert fsc[4:].max() < 0.5
    assert resolution(frequencies, fsc, 0.5) > 3 * 2 * truth.voxel_size


# --- stopping rule, residuals, damping -----------------------------------------------------------------


def test_residuals_decrease_and_the_rule_stops_early(rotations, images):
    full = reconstruct(images, rotations, n_iterations=8, tol=0, progress=False)
    assert full.iterations == 8 and not full.converged
    assert len(full.residuals) == len(full.normal_residuals) == 9
    assert all(b <= a * (1 + 1e-6) for a, b in zip(full.residuals, full.residuals[1:], strict=False))
    assert full.residuals[-1] < 0.1 * full.residuals[0]

    tol = 10 * full.normal_residuals[-1]
    early = reconstruct(images, rotations, n_iterations=8, tol=tol, progress=False)
    assert early.converged and early.iterations < 8
    assert early.normal_residuals[-1] <= tol < early.normal_residuals[-2]


def test_damping_shrinks_the_map(rotations, images):
    norms = {}
    for method in ("fourier", "cgls"):
        for damping in (0.0, 1e4):
            volume = reconstruct(
                images, rotations, method=method, damping=damping, n_iterations=5, progress=False
            ).volume
            norms[method, damping] = float(volume.norm())
        assert norms[method, 1e4] < 0.9 * norms[method, 0.0]
    # the Fourier solver's λ D² / P³ stands for the same Tikhonov weight
    ratio = {m: norms[m, 1e4] / norms[m, 0.0] for m in ("fourier", "cgls")}
    assert ratio["fourier"] == pytest.approx(ratio["cgls"], abs=0.15)


# --- shifts, CTF, gridding -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fourier", pytest.param("cgls", marks=pytest.mark.slow)])
def test_shifts_are_undone(truth, rotations, images, method):
    shifts = torch.from_numpy(np.random.default_rng(5).uniform(-4, 4, (N, 2)))
    shifted = project(torch.as_tensor(truth.data), rotations, shifts, device="cpu")
    kwargs = dict(method=method, n_iterations=5, tol=0, progress=False)
    unshifted = reconstruct(images, rotations, **kwargs).volume
    with_shifts = reconstruct(shifted, rotations, shifts, **kwargs).volume
    difference = float((with_shifts - unshifted).norm() / unshifted.norm())
    assert difference < 5e-3  # even D: project drops the imaginary part of shifted Nyquist bins
    assert fsc_up_to(with_shifts, unshifted, 0.9).min() > 0.9999
    ignored = reconstruct(shifted, rotations, **kwargs).volume  # shifts not given: blurred
    assert fsc_up_to(ignored, truth).min() < 0.9 < fsc_up_to(with_shifts, truth).min()


@pytest.mark.parametrize("method", ["fourier", pytest.param("cgls", marks=pytest.mark.slow)])
def test_ctf_is_undone_with_several_defoci(truth, rotations, images, method):
    defocus = torch.linspace(8000.0, 25000.0, 7).repeat(N // 7 + 1)[:N].double()
    ctf = ctf_2d(D, truth.voxel_size, defocus_u=defocus, device="cpu")  # (N, D, D)
    observed = apply_ctf(images, ctf)
    result = reconstruct(observed, rotations, None, ctf, method=method, n_iterations=10, progress=False)
    assert fsc_up_to(result.volume, truth).min() > 0.9
    blind = reconstruct(observed, rotations, method="fourier", progress=False).volume
    assert fsc_up_to(blind, truth).min() < 0.5  # the CTF's phase flips are not undone


def test_one_ctf_for_the_whole_stack(truth, rotations, images):
    ctf = ctf_2d(D, truth.voxel_size, defocus_u=12000.0, device="cpu")  # (D, D)
    result = reconstruct(apply_ctf(images, ctf), rotations, ctf=ctf, n_iterations=2, tol=0, progress=True)
    assert result.volume.shape == (D, D, D) and result.iterations == 2


@pytest.mark.slow
def test_without_gridding_correction(truth, rotations):
    images = project(torch.as_tensor(truth.data), rotations, gridding_correction=False, device="cpu")
    for method in ("fourier", "cgls"):
        result = reconstruct(
            images, rotations, method=method, gridding_correction=False, n_iterations=6, progress=False
        )
        assert fsc_up_to(result.volume, truth).min() > 0.9


@pytest.mark.slow
def test_odd_box(rotations):
    truth = load_map("pseudo:0", box_size=D - 1)
    images = project(torch.as_tensor(truth.data), rotations, device="cpu")
    for method in ("fourier", "cgls"):
        result = reconstruct(images, rotations, method=method, n_iterations=6, progress=False)
        assert fsc_up_to(result.volume, truth).min() > 0.9


def test_reconstruct_simulated_particle_stack(truth):
    q = sample_orientations(300, "uniform", seed=3)
    stack = simulate_particles(truth, q, shift_limit=3.0, ctf=True, seed=4, device="cpu", progress=False)
    result = reconstruct_particles(stack, method="cgls", n_iterations=8, progress=False)
    # normalised images: the map up to scale and its mean; FSC ignores both beyond shell 0
    assert fsc_up_to(result.volume, truth)[1:].min() > 0.9


# --- Fourier shell correlation and resolution ----------------------------------------------------------


@pytest.mark.parametrize("d", [16, 17])
def test_fsc_of_a_map_with_itself_is_one(d):
    volume = torch.from_numpy(np.random.default_rng(d).standard_normal((d, d, d)))
    frequencies, fsc = fourier_shell_correlation(volume, volume)
    assert fsc.shape == frequencies.shape == (d // 2 + 1,)
    torch.testing.assert_close(fsc, torch.ones_like(fsc))
    torch.testing.assert_close(frequencies, torch.arange(d // 2 + 1, dtype=torch.float64) / d)


@pytest.mark.parametrize("d", [32, 33])
def test_fsc_of_independent_noise_is_near_zero(d):
    rng = np.random.default_rng(d)
    a, b = (torch.from_numpy(rng.standard_normal((d, d, d))) for _ in range(2))
    _, fsc = fourier_shell_correlation(a, b)
    assert abs(float(fsc[1:].mean())) < 0.05
    assert float(fsc[4:].abs().max()) < 0.25  # shells of >= 100 frequencies: std <= 0.14


@pytest.mark.parametrize("d", [16, 17])
@pytest.mark.parametrize("shell", [1, 5, 8])
def test_fsc_shells_are_round_of_the_radius(d, shell):
    # negate exactly the frequencies with round(|k|) = shell: FSC -1 there, 1 elsewhere
    volume = torch.from_numpy(np.random.default_rng(0).standard_normal((d, d, d)))
    k = torch.fft.fftfreq(d, 1 / d, dtype=torch.float64)
    radius = (k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2).sqrt()
    flipped = torch.fft.ifftn(torch.fft.fftn(volume) * torch.where(radius.round() == shell, -1.0, 1.0)).real
    _, fsc = fourier_shell_correlation(volume, flipped)
    expected = torch.ones(d // 2 + 1, dtype=torch.float64)
    expected[shell] = -1
    torch.testing.assert_close(fsc, expected)


def test_fsc_frequencies_in_inverse_angstrom():
    a = DensityMap(np.random.default_rng(0).standard_normal((20, 20, 20)), 2.5, "a", "test")
    b = DensityMap(np.random.default_rng(1).standard_normal((20, 20, 20)), 2.5, "b", "test")
    frequencies, fsc = map_fsc(a, b)
    assert float(frequencies[-1]) == pytest.approx(1 / (2 * 2.5))  # Nyquist
    same = fourier_shell_correlation(a.data, b.data, voxel_size=2.5)
    assert torch.equal(frequencies, same[0]) and torch.equal(fsc, same[1])
    frequencies, _ = fourier_shell_correlation(a.data, b.data, voxel_size=2.0)
    assert float(frequencies[-1]) == pytest.approx(1 / 4.0)


def test_resolution_of_a_constructed_curve():
    # D = 20 voxels of 2 Å: shell s at s / 40 Å⁻¹; FSC falls by 0.1 per shell
    frequencies = torch.arange(11, dtype=torch.float64) / 40
    fsc = 1 - 0.1 * torch.arange(11, dtype=torch.float64)
    # 0.5 is reached exactly at shell 5 and first undershot at shell 6: 40 / 5 = 8 Å
    assert resolution(frequencies, fsc, threshold=0.5) == pytest.approx(8.0)
    # 0.143 lies between shell 8 (0.2) and 9 (0.1): shell 8.57, 40 / 8.57 = 4.667 Å
    assert resolution(frequencies, fsc, threshold=0.143) == pytest.approx(40 / 8.57)
    assert resolution(frequencies.numpy(), fsc.numpy(), 0.143) == pytest.approx(40 / 8.57)


def test_resolution_when_the_curve_never_crosses_is_nyquist():
    frequencies = torch.arange(11, dtype=torch.float64) / 40
    assert resolution(frequencies, torch.full((11,), 0.9), 0.143) == pytest.approx(4.0)  # 2 × 2 Å
    no_signal = torch.full((11,), 0.01)
    assert resolution(frequencies, no_signal, 0.5) == math.inf
    dc_only = torch.tensor([1.0] + [0.0] * 10)
    assert resolution(frequencies, dc_only, 0.5) == pytest.approx(80.0)  # halfway to shell 1


def test_resolution_of_a_reconstruction_is_nyquist_for_exact_data(truth, rotations, images):
    result = reconstruct(images, rotations, n_iterations=8, progress=False)
    frequencies, fsc = fourier_shell_correlation(result.volume, truth.data, truth.voxel_size)
    nyquist = 2 * truth.voxel_size
    for threshold in (0.5, 0.143):
        assert resolution(frequencies, fsc, threshold) <= 1.1 * nyquist


# --- bad input -----------------------------------------------------------------------------------------


def test_bad_reconstruction_input(rotations, images):
    with pytest.raises(ValueError, match="square"):
        reconstruct(images[:, :, :-1], rotations)
    with pytest.raises(ValueError, match="square"):
        reconstruct(images[0], rotations[:1])
    with pytest.raises(ValueError, match="399 rotations for 400 images"):
        reconstruct(images, rotations[:-1])
    with pytest.raises(ValueError, match="shifts"):
        reconstruct(images, rotations, torch.zeros(N - 1, 2))
    with pytest.raises(ValueError, match="ctf must have shape"):
        reconstruct(images, rotations, ctf=torch.ones(N, D, D - 1))
    with pytest.raises(ValueError, match="unknown method 'sirt'"):
        reconstruct(images, rotations, method="sirt")
    with pytest.raises(ValueError, match="damping"):
        reconstruct(images, rotations, damping=-1.0)
    with pytest.raises(ValueError, match="tol"):
        reconstruct(images, rotations, tol=float("nan"))
    with pytest.raises(ValueError, match="n_iterations"):
        reconstruct(images, rotations, n_iterations=-1)
    with pytest.raises(ValueError, match="initial"):
        reconstruct(images, rotations, initial="zeros")
    with pytest.raises(ValueError, match="initial volume"):
        reconstruct(images, rotations, initial=torch.zeros(D, D, D + 1))
    with pytest.raises(ValueError, match="NaN"):
        reconstruct(torch.full_like(images, float("nan")), rotations)


def test_bad_fsc_input():
    a = torch.zeros(8, 8, 8)
    with pytest.raises(ValueError, match="different shapes"):
        fourier_shell_correlation(a, torch.zeros(9, 9, 9))
    with pytest.raises(ValueError, match="cubic"):
        fourier_shell_correlation(torch.zeros(8, 8, 9), torch.zeros(8, 8, 9))
    with pytest.raises(ValueError, match="voxel sizes"):
        map_fsc(DensityMap(a.numpy(), 1.0, "a", "t"), DensityMap(a.numpy(), 1.5, "b", "t"))
    with pytest.raises(TypeError, match="map_fsc"):  # the numerical module takes arrays
        fourier_shell_correlation(DensityMap(a.numpy(), 1.0, "a", "t"), a, voxel_size=2.0)
    with pytest.raises(ValueError, match="voxel_size"):
        fourier_shell_correlation(a, a, voxel_size=0.0)
    frequencies = torch.arange(5.0)
    with pytest.raises(ValueError, match="same length"):
        resolution(frequencies, torch.ones(4))
    with pytest.raises(ValueError, match="threshold"):
        resolution(frequencies, torch.ones(5), threshold=1.5)
    with pytest.raises(ValueError, match="increase"):
        resolution(frequencies.flip(0), torch.ones(5))


# --- files ---------------------------------------------------------------------------------------------


def test_written_map_and_star_read_back(tmp_path, truth, rotations, images):
    n = 12
    shifts = torch.from_numpy(np.random.default_rng(2).uniform(-3, 3, (n, 2)))
    ctf = {
        "defocus_u": np.full(n, 15000.0),
        "defocus_v": np.full(n, 14000.0),
        "astigmatism_angle": np.full(n, 0.3),
        "voltage": 300.0,
        "spherical_aberration": 2.7,
        "amplitude_contrast": 0.1,
    }
    volume = torch.as_tensor(truth.data)
    map_path, star_path = write_reconstruction(
        tmp_path / "out", volume, truth.voxel_size, rotations[:n], shifts, images=images[:n], ctf=ctf
    )
    assert map_path.name == "reconstruction.mrc" and star_path.name == "reconstruction.star"
    density = read_map(map_path)
    assert density.voxel_size == pytest.approx(truth.voxel_size, rel=1e-5)
    np.testing.assert_allclose(density.data, truth.data)
    star = read_star(star_path)
    assert star.pixel_size == pytest.approx(truth.voxel_size)
    torch.testing.assert_close(
        euler_to_matrix(torch.from_numpy(star.angles)), rotations[:n], atol=1e-6, rtol=0
    )
    np.testing.assert_allclose(star.shifts, shifts.numpy(), atol=1e-5)
    np.testing.assert_allclose(star.ctf["defocus_v"], ctf["defocus_v"])
    particles = read_particles(star_path)
    np.testing.assert_allclose(particles.images, images[:n].numpy())


def test_write_reconstruction_without_images_or_shifts(tmp_path, truth, rotations):
    map_path, star_path = write_reconstruction(
        tmp_path, torch.as_tensor(truth.data), truth.voxel_size, rotations[:3], name="map"
    )
    assert map_path == tmp_path / "map.mrc"
    star = read_star(star_path)
    assert star.image_names is None and np.all(star.shifts == 0)


def test_bad_write_input(tmp_path, truth, rotations):
    volume = torch.as_tensor(truth.data)
    with pytest.raises(ValueError, match="cubic"):
        write_reconstruction(tmp_path, volume[:-1], 2.0, rotations[:3])
    with pytest.raises(ValueError, match="voxel_size"):
        write_reconstruction(tmp_path, volume, -1.0, rotations[:3])
    with pytest.raises(ValueError, match="images must have shape"):
        write_reconstruction(tmp_path, volume, 2.0, rotations[:3], images=torch.zeros(2, D, D))
