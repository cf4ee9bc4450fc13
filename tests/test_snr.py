import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoorient.snr import PAPER_BOX_SIZE, integrated_snr, matched_noise_variance

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
