"""The widening of D intervals for a movie-wide bias keeps each level's coverage at the ends of the bias interval."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from napari_spt_diffusion.estimation.bias_widening import bias_shifts, level_z


def _coverage(width: float, coverage: float, down: float, up: float, beta: float) -> float:
    """Coverage of a Gaussian log error (spread from the interval's width) shifted by ``beta``."""
    sigma = width / (2 * level_z(coverage))
    return float(norm.cdf((width / 2 + down - beta) / sigma) - norm.cdf((-width / 2 - up - beta) / sigma))


@pytest.mark.parametrize("coverage", [0.68, 0.95])
@pytest.mark.parametrize("bias", [(0.92, 1.08), (0.7, 1.3), (0.85, 1.02)])
def test_coverage_is_nominal_at_the_ends_of_the_bias_interval_and_above_inside(coverage, bias):
    widths = np.array([0.1, 0.5, 1.5, 4.0])
    down, up = bias_shifts(widths, coverage, *bias)
    assert np.all(down >= 0) and np.all(up >= 0)
    assert np.all(down <= math.log(bias[1]) + 1e-9) and np.all(up <= -math.log(bias[0]) + 1e-9)  # never the whole
    for w, d, u in zip(widths, down, up):
        ends = [_coverage(w, coverage, d, u, math.log(b)) for b in bias]
        assert min(ends) >= coverage - 1e-6
        if d > 0 and u > 0:  # no side held where it was: exactly nominal at the worse end
            assert min(ends) == pytest.approx(coverage, abs=1e-6)
        inside = [_coverage(w, coverage, d, u, beta) for beta in np.linspace(math.log(bias[0]), math.log(bias[1]), 9)]
        assert min(inside) >= coverage - 1e-6


def test_no_bias_left_adds_nothing_and_a_narrow_interval_needs_nearly_the_whole_factor():
    down, up = bias_shifts(np.array([0.5]), 0.68, 1.0, 1.0)
    assert down[0] == 0 and up[0] == 0
    down, up = bias_shifts(np.array([1e-3]), 0.68, 0.8, 1.25)  # an interval far narrower than the bias
    np.testing.assert_allclose([down[0], up[0]], [math.log(1.25), -math.log(0.8)], rtol=0.02)
    # a wide interval barely notices a small bias
    down, up = bias_shifts(np.array([3.0]), 0.68, 0.95, 1.05)
    assert down[0] < 0.1 * math.log(1.05) and up[0] < 0.1 * -math.log(0.95)


def test_a_bias_interval_on_one_side_moves_only_that_side_and_undefined_widths_take_the_whole_factor():
    down, up = bias_shifts(np.array([0.6, np.nan, 0.0]), 0.95, 1.02, 1.3)  # reads high: truth lower
    assert down[0] > 0 and up[0] == 0
    np.testing.assert_allclose(down[1:], math.log(1.3))
    np.testing.assert_allclose(up[1:], 0.0)


def test_monte_carlo_coverage_of_shifted_gaussian_errors_at_the_bias_ends():
    rng = np.random.default_rng(3)
    sigma, n = 0.4, 400_000
    for coverage in (0.68, 0.95):
        half = level_z(coverage) * sigma
        down, up = bias_shifts(np.array([2 * half]), coverage, 0.9, 1.1)
        for beta in (math.log(0.9), math.log(1.1)):
            errors = rng.normal(0.0, sigma, n) + beta  # ln(est / true) of tracks off by the factor
            held = np.mean((errors >= -half - up[0]) & (errors <= half + down[0]))
            assert held == pytest.approx(coverage, abs=0.004)
