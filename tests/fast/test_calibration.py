"""Calibration to a target false-positive rate: the bound, the threshold, and the rate on fresh clean data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from adae_stream.detector.calibration import binomial_cdf, calibrate, clopper_pearson_upper, min_held_out
from adae_stream.errors import CalibrationError


@pytest.mark.parametrize("k, n", [(0, 10), (1, 100), (5, 200), (50, 1000), (99, 100), (300, 20000)])
def test_clopper_pearson_matches_the_beta_quantile(k, n):
    """The exact one-sided bound is the Beta(k+1, n-k) quantile; scipy computes it independently."""
    assert clopper_pearson_upper(k, n, 0.95) == pytest.approx(stats.beta.ppf(0.95, k + 1, n - k), rel=1e-6)


def test_binomial_cdf_matches_scipy():
    for k, n, p in [(3, 50, 0.1), (0, 1000, 0.001), (500, 10000, 0.05)]:
        assert binomial_cdf(k, n, p) == pytest.approx(stats.binom.cdf(k, n, p), rel=1e-9)


def test_threshold_leaves_the_target_share_above_it():
    scores = np.random.default_rng(0).gamma(2.0, size=4000)
    cal = calibrate(scores, 0.05)
    assert cal.flagged_held_out == 200 == int((scores > cal.threshold).sum())
    assert cal.expected_fpr == 0.05 and cal.fpr_upper_bound > 0.05


def test_too_few_held_out_instances_are_refused_with_the_number_needed():
    with pytest.raises(CalibrationError, match=f"at least {min_held_out(0.01)}"):
        calibrate(np.arange(500.0), 0.01)


def test_bound_holds_on_a_large_fresh_clean_sample():
    """Calibrate on 2,000 held-out scores, then flag 200,000 fresh ones from the same distribution: the true
    rate sits below the 95 % upper bound in (nearly) every repetition, and near the target."""
    rng = np.random.default_rng(7)
    covered, rates = 0, []
    for _ in range(40):
        cal = calibrate(rng.lognormal(size=2000), 0.05)
        fresh = float((rng.lognormal(size=200_000) > cal.threshold).mean())
        covered += fresh <= cal.fpr_upper_bound
        rates.append(fresh)
    assert covered >= 36  # 95 % coverage; 36 of 40 or more happens with probability > 0.86 even at exactly 95 %
    assert abs(np.mean(rates) - 0.05) < 0.005
