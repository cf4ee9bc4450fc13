"""The CTF input treatments: what each undoes, their laws, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoorient.ctf_correction import (
    TREATMENTS,
    WIENER_NOISE_FLOOR,
    ctf_grids,
    phase_flip,
    treat_images,
    treatment_channels,
    wiener_filter,
    wiener_snr,
)
from cryoorient.projection import apply_ctf, ctf_2d

D, PIXEL = 47, 3.0  # odd: every frequency has its negative on the grid, so an astigmatic CTF is Hermitian


@pytest.fixture(scope="module")
def stack() -> torch.Tensor:
    """Six smooth random images (a low-passed noise field each), float64."""
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.standard_normal((6, D, D)))
    k = torch.fft.fftfreq(D, dtype=torch.float64)
    blur = torch.exp(-((k[:, None] ** 2 + k[None, :] ** 2) / 0.02))
    return torch.fft.ifft2(torch.fft.fft2(noise) * blur).real


@pytest.fixture(scope="module")
def ctfs() -> torch.Tensor:
    """(6, D, D) RELION CTFs at six defoci from 1 to 2.5 µm, astigmatic."""
    defocus = torch.linspace(10000.0, 25000.0, 6, dtype=torch.float64)
    return ctf_2d(D, PIXEL, defocus_u=defocus, defocus_v=defocus - 800.0, astigmatism_angle=0.6,
                  device="cpu").double()


def test_phase_flipping_a_ctf_image_leaves_every_frequency_in_phase_with_the_projection(stack, ctfs):
    flipped = phase_flip(apply_ctf(stack, ctfs), ctfs)
    # its spectrum is |CTF| times the projection's: real, non-negative ratios
    expected = torch.fft.fft2(stack) * ctfs.abs().to(torch.complex128)
    torch.testing.assert_close(torch.fft.fft2(flipped), expected, atol=1e-9, rtol=0)


def test_phase_flipping_twice_gives_the_image_back(stack, ctfs):
    torch.testing.assert_close(phase_flip(phase_flip(stack, ctfs), ctfs), stack, atol=1e-9, rtol=0)


def test_phase_flipping_brings_the_image_closer_to_the_projection(stack, ctfs):
    raw = apply_ctf(stack, ctfs)

    def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a - a.mean((1, 2), keepdim=True), b - b.mean((1, 2), keepdim=True)
        return (a * b).sum((1, 2)) / (a.norm(dim=(1, 2)) * b.norm(dim=(1, 2)))

    assert torch.all(correlation(phase_flip(raw, ctfs), stack) > correlation(raw, stack))


def test_the_wiener_filter_inverts_a_ctf_without_zeros_at_high_snr_and_is_snr_times_ctf_at_low(stack, ctfs):
    bounded = torch.sign(ctfs) * (0.3 + ctfs.abs())  # an even filter never near zero
    recorded = apply_ctf(stack, bounded)
    torch.testing.assert_close(wiener_filter(recorded, bounded, 1e9), stack, atol=1e-6, rtol=0)
    low = wiener_filter(recorded, bounded, 1e-9) / 1e-9
    torch.testing.assert_close(low, apply_ctf(recorded, bounded), atol=1e-6, rtol=1e-6)


def test_treatments_shapes_and_channels(stack, ctfs):
    for treatment in TREATMENTS:
        out = treat_images(stack, ctfs, treatment, snr=0.5)
        assert out.shape == ((6, 2, D, D) if treatment == "two_channel" else (6, D, D))
        assert out.dtype == stack.dtype
    both = treat_images(stack, ctfs, "two_channel")
    assert torch.equal(both[:, 0], stack) and torch.equal(both[:, 1], phase_flip(stack, ctfs))
    assert torch.equal(treat_images(stack, ctfs, "raw"), stack)
    one = wiener_filter(stack, ctfs[0], 2.0)  # one CTF for the whole stack broadcasts
    torch.testing.assert_close(treat_images(stack, ctfs[0], "wiener", snr=2.0), one)


def test_bad_input_is_refused_with_the_value(stack, ctfs):
    with pytest.raises(ValueError, match=r"unknown treatment 'flip'; choose one of raw, phase_flip"):
        treat_images(stack, ctfs, "flip")
    with pytest.raises(ValueError, match=r"snr must be a positive number; got 0"):
        wiener_filter(stack, ctfs, 0)
    with pytest.raises(ValueError, match=r"ctf grid \(32, 32\) does not match images \(47, 47\)"):
        phase_flip(stack, torch.ones(32, 32))
    with pytest.raises(ValueError, match=r"a \(N, H, W\) stack; got shape \(47, 47\)"):
        treat_images(stack[0], ctfs[0], "raw")


def test_channels_and_the_wiener_snr():
    assert [treatment_channels(t) for t in (None, *TREATMENTS)] == [1, 1, 1, 1, 2]
    assert wiener_snr(4.0) == 0.25 and wiener_snr(0.0) == 1 / WIENER_NOISE_FLOOR
    with pytest.raises(ValueError, match=r"unknown treatment 'flip'"):
        treatment_channels("flip")
    with pytest.raises(ValueError, match=r"noise_variance must be a finite number >= 0; got -1"):
        wiener_snr(-1.0)


def test_ctf_grids_are_each_particles_ctf_and_refuse_mixed_optics(ctfs):
    defocus = np.linspace(10000.0, 25000.0, 6)
    params = {"defocus_u": defocus, "defocus_v": defocus - 800.0, "astigmatism_angle": np.full(6, 0.6),
              "voltage": 300.0, "spherical_aberration": 2.7, "amplitude_contrast": 0.1}
    grids = ctf_grids(params, D, PIXEL)
    assert grids.shape == (6, D, D) and grids.dtype == torch.float32
    torch.testing.assert_close(grids.double(), ctfs, atol=1e-6, rtol=0)
    torch.testing.assert_close(ctf_grids(params, D, PIXEL, index=np.array([4, 1])), grids[[4, 1]])
    same = params | {"voltage": np.full(6, 300.0)}  # one optics group written per particle
    torch.testing.assert_close(ctf_grids(same, D, PIXEL), grids)
    mixed = params | {"voltage": np.array([300.0] * 3 + [200.0] * 3)}
    with pytest.raises(ValueError, match=r"the particles' voltage differs between them"):
        ctf_grids(mixed, D, PIXEL)
