import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoorient.snr import (
    PAPER_BOX_SIZE,
    integrated_snr,
    matched_noise_variance,
    matched_noise_variance_from_images,
    pair_difference_energy,
)

sizes = st.integers(8, 512)
variances = st.floats(1e-3, 1e3)


@settings(deadline=None)  # no timing in tests: shared CPUs stall single examples
@given(variances, sizes, sizes)
def test_matched_level_has_the_reference_integrated_snr(sigma2, box, reference):
    matched = matched_noise_variance(sigma2, box, reference)
    assert integrated_snr(matched, box) == pytest.approx(integrated_snr(sigma2, reference), rel=1e-12)


@settings(deadline=None)
@given(variances, sizes)
def test_same_size_is_the_same_level(sigma2, box):
    assert matched_noise_variance(sigma2, box, box) == pytest.approx(sigma2, rel=1e-12)


def test_the_papers_sigma2_16_at_64_px():
    assert PAPER_BOX_SIZE == 116
    assert matched_noise_variance(16, 64) == pytest.approx(16 * 64**2 / 116**2)
    assert 4.8 < matched_noise_variance(16, 64) < 4.9
    assert integrated_snr(16, 116) == pytest.approx(116**2 / 16)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf])
def test_bad_values_are_named(bad):
    with pytest.raises(ValueError, match="noise_variance"):
        matched_noise_variance(bad, 64)
    with pytest.raises(ValueError, match="box_size"):
        integrated_snr(1.0, bad)


def test_pair_difference_energy_scales_with_the_square_of_the_units():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 8, 8))
    energy = pair_difference_energy(images)
    assert pair_difference_energy(3.0 * images + 5.0) == pytest.approx(9.0 * energy)  # offsets cancel
    assert energy == pytest.approx(2 * 64, rel=0.15)  # independent unit pixels: 2 per pixel
    assert pair_difference_energy(images[:41]) == pair_difference_energy(images[:40])  # odd N: last left out
    with pytest.raises(ValueError, match="N >= 2"):
        pair_difference_energy(images[:1])


def test_matching_from_images_carries_the_units_and_reduces_to_the_pixel_count():
    """The same stack in other units matches at σ² scaled by the units; two unit-variance stacks of
    independent pixels match by their pixel counts, as matched_noise_variance says."""
    rng = np.random.default_rng(1)
    ours = rng.normal(size=(200, 16, 16))
    assert matched_noise_variance_from_images(ours, 0.5 * ours, 16.0) == pytest.approx(64.0)
    reference = rng.normal(size=(200, 29, 29))
    matched = matched_noise_variance_from_images(ours, reference, 16.0)
    assert matched == pytest.approx(matched_noise_variance(16.0, 16, 29), rel=0.05)
