"""The robustness grid's references: the positions-only Bayes estimator and the bootstrap interval of a ratio."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import multivariate_normal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _bayes_tensor import axis_loglik, consecutive_runs, posterior_medians
from bench_grid import ratio_interval


def test_the_tridiagonal_likelihood_is_that_of_blurred_noisy_displacements():
    rng = np.random.default_rng(0)
    m, blur = 6, 1.0 / 6.0
    var = rng.uniform(0.01, 0.2, m + 1)
    x = rng.normal(0.0, 1.0, (3, m))
    d = np.array([0.05, 0.7, 3.0])
    got = axis_loglik(x, var, d, blur)
    for j, dj in enumerate(d):
        cov = np.diag(2 * dj * (1 - 2 * blur) + var[:-1] + var[1:])
        off = 2 * dj * blur - var[1:-1]
        cov += np.diag(off, 1) + np.diag(off, -1)
        for a in range(3):
            assert got[a, j] == pytest.approx(multivariate_normal(np.zeros(m), cov).logpdf(x[a]), abs=1e-9)
    assert consecutive_runs(np.array([1, 1, 0, 1, 0, 1, 1, 1], bool)) == [(0, 2), (5, 8)]


def test_the_posterior_medians_read_simulated_tensors_without_bias():
    rng = np.random.default_rng(1)
    n, t, sigma = 120, 30, 0.15
    d1 = rng.choice(np.arange(1, 121) * 0.05, n)
    d2 = d1 * rng.uniform(0.1, 1.0, n)
    theta = rng.uniform(0.0, np.pi, n)
    along = rng.normal(0.0, 1.0, (n, t, 2)) * np.sqrt(2.0 * np.stack([d1, d2], 1))[:, None, :]
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    steps = np.stack([sin * along[..., 0] + cos * along[..., 1], cos * along[..., 0] - sin * along[..., 1]], -1)
    positions = np.cumsum(steps, axis=1) + rng.normal(0.0, sigma, (n, t, 2))  # (y, x), no blur
    positions[0, 10] = np.nan  # a gap splits a track into two runs
    m1, m2 = posterior_medians(positions, np.full((n, t), sigma), 0.0, 1.0)
    assert np.all(np.isfinite(m1)) and np.all(m2 <= m1 + 1e-12)
    assert np.median(m1 / d1) == pytest.approx(1.0, abs=0.08)
    assert np.median(m2 / d2) == pytest.approx(1.0, abs=0.12)
    # better than the plain covariance of the displacements on D1, which knows neither the prior nor the noise
    cov = np.einsum("ntk,ntl->nkl", np.diff(positions[1:], axis=1), np.diff(positions[1:], axis=1)) / (t - 1)
    plain = (np.linalg.eigvalsh(cov)[:, 1] - 2 * sigma**2) / 2
    assert np.mean(np.abs(m1[1:] - d1[1:])) < np.mean(np.abs(plain - d1[1:]))


def test_the_ratio_interval_brackets_the_ratio_and_ignores_unfinished_tracks():
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.1, 6.0, 400)
    model = truth + rng.normal(0.0, 0.3, 400)
    reference = truth + rng.normal(0.0, 0.5, 400)
    ratio = np.mean(np.abs(model - truth)) / np.mean(np.abs(reference - truth))
    low, high = ratio_interval(model, reference, truth, seed=3)
    assert low < ratio < high and high - low < 0.3
    model[:10] = np.nan
    assert ratio_interval(model, reference, truth, seed=3) != (low, high)
    assert all(np.isfinite(ratio_interval(model, reference, truth, seed=3)))
