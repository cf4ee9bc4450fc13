"""The low-pass filter: what it keeps, what it removes, where its edge sits, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryoorient.filters import low_pass, low_pass_weights
from cryoorient.fsc import fourier_shell_correlation, resolution


def _wave(d: int, cycles: int) -> torch.Tensor:
    """A plane wave along x with ``cycles`` periods across the box: one frequency, shell ``cycles``."""
    x = torch.arange(d, dtype=torch.float64)
    return torch.cos(2 * math.pi * cycles * x / d).expand(d, d, d).clone()


def test_a_wave_below_the_cut_passes_and_one_above_is_removed():
    d, voxel = 32, 2.0  # cut at 20 Å: shell 32 * 2 / 20 = 3.2, edge from 2.2 to 4.2
    kept = low_pass(_wave(d, 2), voxel, 20.0)
    gone = low_pass(_wave(d, 6), voxel, 20.0)
    torch.testing.assert_close(kept.double(), _wave(d, 2), atol=1e-5, rtol=0)
    assert gone.abs().max() < 1e-5


def test_the_amplitude_is_halved_at_the_stated_resolution():
    d, voxel = 40, 1.5
    for cycles in (3, 5, 8):
        resolution_at = d * voxel / cycles  # Å of shell `cycles`
        out = low_pass(_wave(d, cycles), voxel, resolution_at)
        ratio = float(out.double().abs().max() / _wave(d, cycles).abs().max())
        assert ratio == pytest.approx(0.5, abs=1e-5)


def test_the_weights_fall_monotonically_from_one_to_zero_over_the_edge():
    d, voxel, res, edge = 48, 1.0, 6.0, 3.0  # cut at shell 8, edge 6.5 .. 9.5
    w = low_pass_weights(d, voxel, res, edge)
    k = torch.fft.fftfreq(d, d=1.0 / d, dtype=torch.float64) ** 2
    radius = torch.sqrt(k[:, None, None] + k[None, :, None] + k[None, None, :]).reshape(-1)
    order = torch.argsort(radius)
    along = w.reshape(-1)[order]
    assert torch.all(along[1:] <= along[:-1] + 1e-12)
    assert torch.all(w.reshape(-1)[radius <= 6.5] == 1.0)
    assert torch.all(w.reshape(-1)[radius >= 9.5] == 0.0)
    assert w.min() >= 0 and w.max() <= 1


def test_a_hard_cut_keeps_exactly_the_shells_inside():
    w = low_pass_weights(16, 1.0, 4.0, edge_shells=0)  # cut at shell 4
    k = torch.fft.fftfreq(16, d=1.0 / 16, dtype=torch.float64) ** 2
    radius = torch.sqrt(k[:, None, None] + k[None, :, None] + k[None, None, :])
    assert torch.equal(w, (radius <= 4.0).double())


def test_the_mean_is_kept_and_the_result_is_real_float32():
    rng = np.random.default_rng(0)
    vol = rng.standard_normal((24, 24, 24)) + 3.0
    out = low_pass(vol, 2.0, 15.0)
    assert out.dtype == torch.float32 and out.shape == (24, 24, 24)
    assert float(out.double().mean()) == pytest.approx(float(vol.mean()), abs=1e-5)


def test_filtering_twice_at_a_coarser_resolution_equals_the_coarser_filter_alone():
    rng = np.random.default_rng(1)
    vol = torch.as_tensor(rng.standard_normal((20, 20, 20)))
    once = low_pass(vol, 1.0, 8.0, edge_shells=0)
    twice = low_pass(low_pass(vol, 1.0, 4.0, edge_shells=0), 1.0, 8.0, edge_shells=0)
    torch.testing.assert_close(once, twice, atol=1e-5, rtol=0)


def test_the_filtered_map_agrees_with_the_original_up_to_about_the_stated_resolution():
    rng = np.random.default_rng(2)
    d, voxel = 32, 3.0
    vol = torch.as_tensor(rng.standard_normal((d, d, d)))
    noisy = vol + 1e-3 * torch.as_tensor(rng.standard_normal((d, d, d)))
    frequencies, fsc = fourier_shell_correlation(low_pass(vol, voxel, 16.0), noisy, voxel_size=voxel)
    found = resolution(frequencies, fsc, threshold=0.5)
    # the FSC ignores a shell's scale, so it stays near 1 while any amplitude is left: the crossing
    # is at the edge's far side, within a shell of 32 * 3 / 16 + 1 = 7 shells
    shell_found = d * voxel / found
    assert 6.0 <= shell_found <= 8.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resolution": 3.0}, r"at or above the Nyquist limit 2 × 2 = 4 Å; got 3.0"),
        ({"resolution": float("nan")}, r"resolution must be"),
        ({"voxel_size": 0.0}, r"voxel_size must be a positive number of Å; got 0.0"),
        ({"edge_shells": -1.0}, r"edge_shells must be a non-negative"),
    ],
)
def test_bad_values_are_refused_with_the_value(kwargs, message):
    arguments = {"voxel_size": 2.0, "resolution": 20.0, "edge_shells": 2.0} | kwargs
    with pytest.raises(ValueError, match=message):
        low_pass(torch.zeros(8, 8, 8), **arguments)


def test_a_non_cubic_volume_is_refused():
    with pytest.raises(ValueError, match=r"cubic \(D, D, D\) map; got shape \(8, 8, 9\)"):
        low_pass(torch.zeros(8, 8, 9), 1.0, 4.0)
