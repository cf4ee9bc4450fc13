import math

import numpy as np
import pytest
import torch
from scipy import stats

from cryoorient._reference import project_real_space
from cryoorient.density import load_map
from cryoorient.geometry import (
    euler_to_matrix,
    euler_to_quaternion,
    quaternion_distance,
    quaternion_to_matrix,
    rotate_in_plane,
)
from cryoorient.projection import (
    add_noise,
    apply_ctf,
    ctf_2d,
    noise_variance,
    normalize_images,
    project,
    rotate_images,
    sample_defocus,
    sample_shifts,
    shift_images,
    snr_db,
)
from cryoorient.sampling import sample_orientations

ALPHA = 0.01
DEG = math.pi / 180


def blob_volume(d: int, blobs, dtype=torch.float64) -> torch.Tensor:
    """Sum of anisotropic Gaussians; ``blobs`` holds ((x0, y0, z0), (sx, sy, sz), amplitude) in voxels."""
    axis = torch.arange(d, dtype=dtype) - d // 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    vol = torch.zeros(d, d, d, dtype=dtype)
    for (x0, y0, z0), (sx, sy, sz), amplitude in blobs:
        vol += amplitude * torch.exp(
            -((x - x0) ** 2) / (2 * sx**2) - (y - y0) ** 2 / (2 * sy**2) - (z - z0) ** 2 / (2 * sz**2)
        )
    return vol


def molecule(d: int) -> torch.Tensor:
    """An asymmetric molecule-like map: four anisotropic blobs, scaled with the box."""
    s = d / 32
    return blob_volume(
        d,
        [
            ((4 * s, -3 * s, 2 * s), (2.5 * s, 2.0 * s, 3.0 * s), 1.0),
            ((-5 * s, 2 * s, -4 * s), (2.0 * s, 2.5 * s, 2.0 * s), 0.7),
            ((1 * s, 6 * s, 5 * s), (3.0 * s, 2.0 * s, 2.2 * s), 0.5),
            ((-2 * s, -6 * s, 0.0), (2.2 * s, 3.0 * s, 2.0 * s), 0.8),
        ],
    )


def random_rotations(n: int, seed: int) -> torch.Tensor:
    return quaternion_to_matrix(sample_orientations(n, "uniform", seed=seed))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image ``‖a - b‖ / ‖b‖``."""
    a, b = a.double(), b.double()
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


def peak_centroid(image: torch.Tensor, radius: int = 5) -> tuple[float, float]:
    """Centroid (x, y), relative to the centre D // 2, of a window around the brightest pixel."""
    d = image.shape[-1]
    iy, ix = divmod(int(image.argmax()), d)
    window = image[max(iy - radius, 0) : iy + radius + 1, max(ix - radius, 0) : ix + radius + 1].double()
    ys = torch.arange(max(iy - radius, 0), min(iy + radius + 1, d), dtype=torch.float64) - d // 2
    xs = torch.arange(max(ix - radius, 0), min(ix + radius + 1, d), dtype=torch.float64) - d // 2
    mass = window.sum()
    return float((window.sum(0) * xs).sum() / mass), float((window.sum(1) * ys).sum() / mass)


def euler(rot: float, tilt: float, psi: float) -> torch.Tensor:
    return euler_to_matrix(torch.tensor([[rot, tilt, psi]], dtype=torch.float64))


# ---------------------------------------------------------------- convention: real-space reference


@pytest.mark.parametrize("d", [32, 33])
def test_fourier_projector_matches_real_space_line_integral(d):
    vol = molecule(d)
    rotations = random_rotations(12, seed=d)
    fourier = project(vol, rotations, device="cpu")
    real = project_real_space(vol, rotations)
    error = relative_error(fourier, real)
    assert error.max() < 0.05, error  # pad 2, as relion_project: ~3.5-4 % (interpolation ghosts)
    # a finer Fourier grid converges to the same line integral
    finer = relative_error(project(vol, rotations, pad_factor=4, device="cpu"), real)
    assert finer.max() < 0.025 and finer.mean() < error.mean()


# ---------------------------------------------------------------- known answers pinning the convention

X0, Y0, Z0 = 5.0, -3.0, 4.0


@pytest.mark.parametrize(
    ("angles", "expected"),
    [
        ((0.0, 0.0, 0.0), (X0, Y0)),  # identity: the image is the sum over z
        ((90 * DEG, 0.0, 0.0), (Y0, -X0)),  # rot = 90°: A = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]
        ((0.0, 90 * DEG, 0.0), (-Z0, Y0)),  # tilt = 90°: A = [[0, 0, -1], [0, 1, 0], [1, 0, 0]]
        ((0.0, 0.0, 90 * DEG), (Y0, -X0)),  # psi = 90° at tilt 0 acts like rot
        ((30 * DEG, 60 * DEG, -110 * DEG), None),  # generic: (A u)[:2]
    ],
)
@pytest.mark.parametrize("d", [32, 33])
@pytest.mark.parametrize("projector", ["fourier", "real"])
def test_offcentre_blob_lands_at_a_times_its_position(angles, expected, d, projector):
    vol = blob_volume(d, [((X0, Y0, Z0), (1.5, 1.5, 1.5), 1.0)])
    a = euler(*angles)
    if expected is None:
        expected = (a[0] @ torch.tensor([X0, Y0, Z0], dtype=torch.float64))[:2].tolist()
    image = project(vol, a, device="cpu")[0] if projector == "fourier" else project_real_space(vol, a)[0]
    x, y = peak_centroid(image)
    assert x == pytest.approx(expected[0], abs=0.1) and y == pytest.approx(expected[1], abs=0.1)


@pytest.mark.parametrize("d", [32, 33])
def test_projection_mass_is_the_volume_mass(d):
    vol = molecule(d)
    rotations = random_rotations(6, seed=3)
    total = vol.sum()
    # bare Fourier slices keep the DC term exactly
    bare = project(vol, rotations, gridding_correction=False, device="cpu").double().sum((1, 2))
    torch.testing.assert_close(bare, total.expand(6), rtol=1e-5, atol=0)
    # with RELION's gridding correction the mass is that of V / sinc²(r / P), P = 2 D
    axis = (torch.arange(d, dtype=torch.float64) - d // 2) ** 2
    r = (axis[:, None, None] + axis[None, :, None] + axis[None, None, :]).sqrt()
    corrected = (vol / torch.sinc(r / (2 * d)) ** 2).sum()
    relion = project(vol, rotations, device="cpu").double().sum((1, 2))
    torch.testing.assert_close(relion, corrected.expand(6), rtol=1e-5, atol=0)
    assert ((relion - total).abs() / total).max() < 0.06
    # the real-space line sum with unit step, up to its own interpolation
    real = project_real_space(vol, rotations).sum((1, 2))
    assert ((real - total).abs() / total).max() < 0.01


# ---------------------------------------------------------------- Fourier-slice theorem

GRID_ROTATIONS = [(0.0, 0.0, 0.0), (90 * DEG, 0.0, 0.0), (0.0, 90 * DEG, 0.0), (90 * DEG, 90 * DEG, 90 * DEG)]


def central_plane(vol: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """3-D DFT of the volume (origin at D // 2) on the plane A^T (kx, ky, 0), for grid-aligned A."""
    d = vol.shape[0]
    spectrum = torch.fft.fftn(torch.fft.ifftshift(vol))  # [kz, ky, kx], unshifted
    k = torch.fft.fftfreq(d, 1 / d, dtype=torch.float64).round()
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    plane = torch.stack((kx, ky, torch.zeros_like(kx)), dim=-1) @ a  # rows: (A^T k)^T = k^T A
    idx = plane.round().long() % d
    return spectrum[idx[..., 2], idx[..., 1], idx[..., 0]]  # [ky, kx]


@pytest.mark.parametrize("angles", GRID_ROTATIONS)
@pytest.mark.parametrize("d", [16, 17])
def test_fourier_slice_theorem_exact_for_the_line_integral(angles, d):
    vol = molecule(d)
    # for even D the faces at index 0 (coordinate -D/2) rotate out of the box; the DFT wraps them
    vol[0], vol[:, 0], vol[:, :, 0] = 0.0, 0.0, 0.0
    a = euler(*angles)[0]
    image = project_real_space(vol, a[None])[0]
    spectrum = torch.fft.fft2(torch.fft.ifftshift(image))
    torch.testing.assert_close(spectrum, central_plane(vol, a), rtol=1e-9, atol=1e-9 * vol.sum().item())


@pytest.mark.parametrize("angles", GRID_ROTATIONS)
@pytest.mark.parametrize("d", [16, 17])
def test_fourier_slice_theorem_for_the_fourier_projector(angles, d):
    vol = molecule(d)
    a = euler(*angles)[0]
    image = project(vol, a[None], gridding_correction=False, device="cpu")[0].double()
    spectrum = torch.fft.fft2(torch.fft.ifftshift(image))
    expected = central_plane(vol, a)
    k = torch.fft.fftfreq(d, 1 / d, dtype=torch.float64)
    inside = k[:, None] ** 2 + k[None, :] ** 2 <= (d // 2) ** 2  # RELION keeps |k| <= D // 2
    scale = vol.sum().item()
    torch.testing.assert_close(spectrum[inside], expected[inside], rtol=1e-5, atol=1e-5 * scale)
    assert spectrum[~inside].abs().max() < 1e-5 * scale


# ---------------------------------------------------------------- shifts


@pytest.mark.parametrize("d", [32, 33])
def test_project_with_shift_is_shift_images_of_project(d):
    vol = molecule(d)
    rotations = random_rotations(5, seed=4)
    shifts = torch.tensor([[1.5, -2.25], [0.0, 3.0], [-4.0, 0.5], [2.7, 2.7], [-0.3, -6.1]])
    shifted = project(vol, rotations, shifts, device="cpu")
    reference = shift_images(project(vol, rotations, device="cpu"), shifts)
    assert relative_error(shifted, reference).max() < 1e-4


@pytest.mark.parametrize("shift", [(3.0, -2.0), (-1.5, 2.5)])
def test_origin_moves_the_particle_by_minus_the_shift(shift):
    # RELION: relion_project shifts the slice by -rlnOrigin, so the particle centre is at D//2 - origin
    d = 32
    vol = blob_volume(d, [((0.0, 0.0, 0.0), (1.5, 1.5, 1.5), 1.0)])
    image = project(vol, euler(0.4, 1.0, -0.7), torch.tensor([shift]), device="cpu")[0]
    x, y = peak_centroid(image)
    assert x == pytest.approx(-shift[0], abs=0.05) and y == pytest.approx(-shift[1], abs=0.05)


def test_integer_shift_moves_a_delta_exactly():
    image = torch.zeros(1, 16, 17)
    image[0, 8, 8] = 1.0  # the centre (x, y) = (0, 0)
    out = shift_images(image, torch.tensor([[3.0, -2.0]]))
    assert torch.allclose(out[0, 8 + 2, 8 - 3], torch.tensor(1.0), atol=1e-6)
    assert out.abs().sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("size", [(16, 16), (15, 17)])
def test_shift_round_trip(size):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, *size, generator=g, dtype=torch.float64)
    integer = torch.tensor([[1.0, -3.0], [0.0, 2.0], [-5.0, 7.0], [4.0, 4.0]], dtype=torch.float64)
    there_and_back = shift_images(shift_images(images, integer), -integer)
    torch.testing.assert_close(there_and_back, images)  # exact for integer shifts, any size
    if size[0] % 2 and size[1] % 2:
        sub_pixel = integer + 0.37
        torch.testing.assert_close(shift_images(shift_images(images, sub_pixel), -sub_pixel), images)


def test_shift_round_trip_even_size_smooth_image():
    # even sizes: only the (ambiguous) Nyquist components are damped by a sub-pixel round trip
    image = project(molecule(32), euler(0.2, 0.5, 0.1), device="cpu").double()
    s = torch.tensor([[0.37, -1.61]], dtype=torch.float64)
    assert relative_error(shift_images(shift_images(image, s), -s), image).max() < 1e-4


def test_shift_images_keeps_dtype_and_rejects_bad_counts():
    images = torch.rand(3, 8, 8)
    assert shift_images(images, torch.zeros(3, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="2 shifts for 3 images"):
        shift_images(images, torch.zeros(2, 2))


# ---------------------------------------------------------------- sample_shifts


def test_sample_shifts_triangular():
    shifts = sample_shifts(20000, 10.0, seed=5)
    assert shifts.shape == (20000, 2) and shifts.dtype == torch.float32
    assert shifts.abs().max() <= 10.0
    assert abs(shifts.mean().item()) < 0.1
    triangular = stats.triang(c=0.5, loc=-10.0, scale=20.0)
    for column in shifts.T:
        assert stats.kstest(column.numpy(), triangular.cdf).pvalue > ALPHA
    uniform = stats.uniform(-10.0, 20.0)
    assert stats.kstest(shifts[:, 0].numpy(), uniform.cdf).pvalue < 1e-6  # the test has power


def test_sample_shifts_seeded_and_validated():
    assert torch.equal(sample_shifts(10, 3.0, seed=1), sample_shifts(10, 3.0, seed=1))
    assert not torch.equal(sample_shifts(10, 3.0, seed=1), sample_shifts(10, 3.0, seed=2))
    assert torch.equal(sample_shifts(4, 0.0), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="-1"):
        sample_shifts(10, -1.0)
    with pytest.raises(ValueError, match="n must be"):
        sample_shifts(-2, 1.0)


# ---------------------------------------------------------------- noise


def test_normalize_images():
    g = torch.Generator().manual_seed(0)
    images = 3.0 + 5.0 * torch.rand(20, 16, 16, generator=g)
    out = normalize_images(images)
    assert out.dtype == torch.float32
    assert out.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert out.double().var(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="zero variance"):
        normalize_images(torch.ones(2, 4, 4))


def test_noise_variance_matches_on_a_normalised_stack():
    clean = normalize_images(project(molecule(32), random_rotations(40, seed=6), device="cpu"))
    noisy = add_noise(clean, variance=16.0, seed=7)
    assert noisy.dtype == torch.float32
    noise = (noisy - clean).double()
    assert noise.var().item() == pytest.approx(16.0, rel=0.02)
    assert abs(noise.mean().item()) < 0.05
    signal_over_noise = clean.double().var() / noise.var()
    assert 10 * math.log10(signal_over_noise) == pytest.approx(snr_db(16.0), abs=0.1)
    by_db = add_noise(clean, snr_db=snr_db(16.0), seed=7)
    torch.testing.assert_close(by_db, noisy)


def test_snr_conversions():
    assert snr_db(16.0) == pytest.approx(-12.0412, abs=1e-4)
    assert noise_variance(-12.0412) == pytest.approx(16.0, rel=1e-4)
    for variance in (0.01, 1.0, 16.0, 1000.0):
        assert noise_variance(snr_db(variance)) == pytest.approx(variance, rel=1e-12)
    assert snr_db(1.0) == 0.0
    with pytest.raises(ValueError, match="-4"):
        snr_db(-4.0)


def test_add_noise_arguments_and_seeding():
    images = torch.zeros(3, 8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        add_noise(images)
    with pytest.raises(ValueError, match="exactly one"):
        add_noise(images, variance=1.0, snr_db=0.0)
    with pytest.raises(ValueError, match="-2.5"):
        add_noise(images, variance=-2.5)
    assert torch.equal(add_noise(images, variance=0.0), images)
    assert torch.equal(add_noise(images, variance=1.0, seed=3), add_noise(images, variance=1.0, seed=3))
    assert not torch.equal(add_noise(images, variance=1.0, seed=3), add_noise(images, variance=1.0, seed=4))
    for generator in (np.random.default_rng(3), torch.Generator().manual_seed(3)):
        first = add_noise(images, variance=1.0, seed=generator)
        assert not torch.equal(first, add_noise(images, variance=1.0, seed=generator))  # consumed, not reset


# ---------------------------------------------------------------- CTF

CTF_ARGS = {"box_size": 128, "pixel_size": 1.5, "device": "cpu"}


def test_add_noise_with_a_generator_is_the_training_augmentation():
    # training.prepare_images adds sqrt(σ²)·N(0, 1) float32 draws from its numpy generator; add_noise
    # given the same generator must give the same images and leave the generator in the same state
    images = torch.from_numpy(np.random.default_rng(0).standard_normal((5, 8, 8), dtype=np.float32))
    ours, theirs = np.random.default_rng(11), np.random.default_rng(11)
    noisy = add_noise(images, variance=2.5, seed=ours)
    draws = torch.from_numpy(theirs.standard_normal(images.shape, dtype=np.float32))
    expected = images + math.sqrt(2.5) * draws
    assert torch.equal(noisy, expected)
    assert ours.bit_generator.state == theirs.bit_generator.state


def radial_profile_x(ctf: torch.Tensor) -> torch.Tensor:
    """CTF along +k_x (row k_y = 0), bins 0 .. D // 2."""
    return ctf[..., 0, : ctf.shape[-1] // 2 + 1]


def test_ctf_at_zero_frequency_is_amplitude_contrast():
    # RELION: -sin(γ(0)) with γ(0) = -phase_shift - atan(Q0 / sqrt(1 - Q0²)) -> +Q0 without phase plate
    ctf = ctf_2d(**CTF_ARGS, defocus_u=15000.0, amplitude_contrast=0.1)
    assert ctf[0, 0].item() == pytest.approx(0.1, abs=1e-6)
    plate = ctf_2d(**CTF_ARGS, defocus_u=15000.0, amplitude_contrast=0.0, phase_shift=math.pi / 2)
    assert plate[0, 0].item() == pytest.approx(1.0, abs=1e-6)


def test_ctf_first_zero_where_expected():
    defocus, voltage = 20000.0, 300.0
    volts = voltage * 1e3
    wavelength = 12.2643247 / math.sqrt(volts * (1 + 0.978466e-6 * volts))  # Å, ≈ 0.0197
    first_zero = 1 / math.sqrt(wavelength * defocus)  # γ = -π λ Δf u² = -π
    d, pixel = 256, 1.0
    ctf = ctf_2d(d, pixel, defocus_u=defocus, spherical_aberration=0.0, amplitude_contrast=0.0, device="cpu")
    profile = radial_profile_x(ctf)
    assert (profile[1:5] > 0).all()  # underfocus: positive lobe at low frequency, as in RELION
    first_negative = int(torch.nonzero(profile < 0)[0])  # first bin past the zero
    assert first_negative - 1 <= first_zero * d * pixel <= first_negative


def test_ctf_astigmatism_rotates_with_the_angle():
    common = dict(CTF_ARGS, defocus_u=22000.0, defocus_v=14000.0)
    along_x = ctf_2d(**common, astigmatism_angle=0.0)
    along_y = ctf_2d(**common, astigmatism_angle=math.pi / 2)
    torch.testing.assert_close(along_y, along_x.T)
    # the U direction carries defocus U, the direction 90° from it defocus V
    diagonal = ctf_2d(**common, astigmatism_angle=math.pi / 4)
    iso_u = ctf_2d(**CTF_ARGS, defocus_u=22000.0)
    iso_v = ctf_2d(**CTF_ARGS, defocus_u=14000.0)
    k = torch.arange(1, 40)
    torch.testing.assert_close(diagonal[k, k], iso_u[k, k], atol=1e-5, rtol=0)
    torch.testing.assert_close(diagonal[k, -k], iso_v[k, -k], atol=1e-5, rtol=0)


def test_ctf_bounds_envelope_and_batching():
    ctf = ctf_2d(**CTF_ARGS, defocus_u=torch.tensor([[10000.0, 15000.0, 25000.0]]), amplitude_contrast=0.07)
    assert ctf.shape == (1, 3, 128, 128) and ctf.dtype == torch.float32
    assert ctf.abs().max() <= 1.0
    torch.testing.assert_close(ctf[0, 1], ctf_2d(**CTF_ARGS, defocus_u=15000.0, amplitude_contrast=0.07))
    # B-factor: the same CTF times exp(-B u² / 4)
    damped = ctf_2d(**CTF_ARGS, defocus_u=15000.0, b_factor=100.0)
    plain = ctf_2d(**CTF_ARGS, defocus_u=15000.0)
    f = torch.fft.fftfreq(128, 1.5, dtype=torch.float64).abs()
    u2 = f[:, None] ** 2 + f[None, :] ** 2
    torch.testing.assert_close(damped, plain * torch.exp(-100.0 / 4 * u2).float(), atol=1e-6, rtol=1e-5)


@pytest.mark.slow  # imports ASPIRE
@pytest.mark.parametrize(
    ("defocus_u", "defocus_v", "angle_degrees", "voltage", "cs", "q0"),
    [(15000.0, 15000.0, 0.0, 300.0, 2.7, 0.1), (22000.0, 14000.0, 30.0, 300.0, 2.7, 0.1),
     (9000.0, 12500.0, 125.0, 200.0, 2.0, 0.07)],
)
def test_ctf_agrees_with_aspires_independent_port_of_relions_up_to_its_sign(
    defocus_u, defocus_v, angle_degrees, voltage, cs, q0
):
    # ASPIRE's CTFFilter ports RELION's CTF independently (its MATLAB cryo_CTF_Relion): same defocus
    # columns (Å, positive underfocus), astigmatism angle from the x axis, kV, Cs in mm, Q0. Its
    # sign is the opposite of RELION's (ASPIRE's value at zero frequency is -Q0, RELION's +Q0, see
    # above); every frequency must agree once that sign is accounted for.
    filters = pytest.importorskip("aspire.operators.filters")
    d, pixel = 96, 1.3
    ours = ctf_2d(d, pixel, defocus_u=defocus_u, defocus_v=defocus_v, voltage=voltage,
                  astigmatism_angle=math.radians(angle_degrees), spherical_aberration=cs,
                  amplitude_contrast=q0, device="cpu").double()
    cycles = np.fft.fftfreq(d)  # cycles per pixel; RELION's Nyquist bin is +1/2, numpy's -1/2
    cycles[d // 2] = 0.5
    fy, fx = np.meshgrid(cycles, cycles, indexing="ij")
    omega = 2 * np.pi * np.stack([fx.ravel(), fy.ravel()])  # ASPIRE's x first, in radians per pixel
    theirs = filters.CTFFilter(voltage=voltage, defocus_u=defocus_u, defocus_v=defocus_v,
                               defocus_ang=math.radians(angle_degrees), Cs=cs, alpha=q0, B=0)
    aspire = torch.from_numpy(theirs._evaluate(omega, pixel_size=pixel).reshape(d, d))
    # the one difference: ASPIRE's electron wavelength, 12.2639 / sqrt(V + 0.97845e-6 V²) Å, is 3e-5
    # shorter than RELION's; the phase error it makes grows with u² (defocus) and u⁴ (Cs)
    volts = voltage * 1e3
    theirs_wavelength = 12.2639 / math.sqrt(volts + 0.97845e-6 * volts**2)
    relion_wavelength = 12.2643247 / math.sqrt(volts * (1 + 0.978466e-6 * volts))
    u2 = torch.from_numpy((fx**2 + fy**2) / pixel**2)  # 1/Å²
    phase_error = (math.pi * abs(relion_wavelength - theirs_wavelength) * max(defocus_u, defocus_v) * u2
                   + math.pi / 2 * cs * 1e7 * abs(relion_wavelength**3 - theirs_wavelength**3) * u2**2)
    # (at most 0.016 in the corners here: an astigmatism angle, defocus or unit wrong would be O(1))
    assert torch.all((ours + aspire).abs() <= phase_error + 1e-5)  # |Δ sin γ| <= |Δγ|


def test_ctf_rejects_bad_parameters():
    with pytest.raises(ValueError, match="1.5"):
        ctf_2d(**CTF_ARGS, defocus_u=1e4, amplitude_contrast=1.5)
    with pytest.raises(ValueError, match="pixel_size"):
        ctf_2d(32, 0.0, defocus_u=1e4)


def test_apply_ctf():
    images = project(molecule(32), random_rotations(3, seed=8), device="cpu")
    ones = torch.ones(32, 32)
    torch.testing.assert_close(apply_ctf(images, ones), images, atol=1e-5, rtol=1e-5)
    ctf = ctf_2d(32, 2.0, defocus_u=sample_defocus(3, seed=1), device="cpu")  # (3, 32, 32), one per image
    out = apply_ctf(images, ctf)
    assert out.shape == images.shape and out.dtype == torch.float32
    expected = torch.fft.fft2(images) * ctf
    torch.testing.assert_close(torch.fft.fft2(out), expected, atol=1e-3, rtol=1e-4)
    # the DC is scaled by CTF(0) = Q0
    torch.testing.assert_close(out.sum((1, 2)), 0.1 * images.sum((1, 2)), rtol=1e-4, atol=1e-3)


def test_sample_defocus():
    defocus = sample_defocus(5000, seed=2)
    assert defocus.shape == (5000,) and defocus.dtype == torch.float32
    assert defocus.min() >= 10000.0 and defocus.max() <= 25000.0
    assert stats.kstest(defocus.numpy(), stats.uniform(10000.0, 15000.0).cdf).pvalue > ALPHA
    assert torch.equal(sample_defocus(5, seed=2), sample_defocus(5, seed=2))
    with pytest.raises(ValueError, match="low=3"):
        sample_defocus(5, low=3.0, high=1.0)


# ---------------------------------------------------------------- device, dtype, batching, autograd


def test_device_dtype_and_batching():
    vol = molecule(17)  # float64 in
    rotations = random_rotations(7, seed=9)
    shifts = sample_shifts(7, 3.0, seed=9)
    whole = project(vol.numpy(), rotations.numpy(), shifts.numpy(), device="cpu")
    assert whole.shape == (7, 17, 17) and whole.dtype == torch.float32 and whole.device.type == "cpu"
    batched = project(vol, rotations, shifts, batch_size=3, device="cpu")
    torch.testing.assert_close(batched, whole)
    assert project(vol, rotations[:0], device="cpu").shape == (0, 17, 17)
    real = project_real_space(vol.float(), rotations)
    assert real.dtype == torch.float32 and real.device.type == "cpu"


def test_project_is_differentiable_and_its_gradient_is_the_adjoint():
    d = 16
    g = torch.Generator().manual_seed(0)
    vol = torch.randn(d, d, d, generator=g, requires_grad=True)
    other = torch.randn(d, d, d, generator=g)
    rotations = random_rotations(4, seed=10)
    weights = torch.randn(4, d, d, generator=g)
    (project(vol, rotations, device="cpu") * weights).sum().backward()
    # project is linear: <P v, w> = <v, P^T w>, and autograd gives P^T w
    lhs = (project(other, rotations, device="cpu").double() * weights).sum()
    rhs = (other.double() * vol.grad.double()).sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-4)


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_value_error_naming_the_problem():
    vol = molecule(16)
    rotations = random_rotations(3, seed=0)
    with pytest.raises(ValueError, match=r"cubic.*\(16, 16, 15\)"):
        project(vol[:, :, :15], rotations)
    with pytest.raises(ValueError, match=r"\(N, 3, 3\).*\(3, 3, 2\)"):
        project(vol, rotations[..., :2])
    with pytest.raises(ValueError, match="2 shifts for 3 images"):
        project(vol, rotations, torch.zeros(2, 2))
    bad = vol.clone()
    bad[3, 4, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        project(bad, rotations)
    with pytest.raises(ValueError, match="NaN"):
        project_real_space(bad, rotations)
    with pytest.raises(ValueError, match="pad_factor"):
        project(vol, rotations, pad_factor=0.5)
    with pytest.raises(ValueError, match="batch_size"):
        project(vol, rotations, batch_size=0)


def test_rotating_a_projection_is_projecting_at_psi_plus_delta():
    """Exact for quarter turns, bilinear-accurate otherwise (the basis of rotation augmentation)."""
    density = load_map("pseudo:3", box_size=32, voxel_size=6.0)
    angles = torch.tensor([[30.0, 50.0, 10.0], [200.0, 120.0, -40.0]], dtype=torch.float64).deg2rad()
    q = euler_to_quaternion(angles)
    images = project(density.data, euler_to_matrix(angles).float())
    for delta, tolerance in ((math.pi / 2, 1e-5), (-math.pi, 1e-5), (0.6, 0.08)):
        turned_q = rotate_in_plane(q, torch.full((2,), delta, dtype=torch.float64))
        expected = project(density.data, quaternion_to_matrix(turned_q).float())
        rotated = rotate_images(images, torch.full((2,), delta))
        inner = (slice(None), slice(1, -1), slice(1, -1))  # the border row that wraps in is zero-filled
        error = (rotated - expected)[inner].norm() / expected[inner].norm()
        assert error < tolerance, (delta, float(error))
        assert torch.allclose(quaternion_distance(q, turned_q), torch.tensor(abs(delta), dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected \(2,\) angles"):
        rotate_images(images, torch.zeros(3))
