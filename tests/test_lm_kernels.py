"""The compiled fits (tracking/lm_kernels.py) and the FFT DoG against their numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_spt_diffusion.tracking.detect import dog_filter, dog_sigmas_px
from napari_spt_diffusion.tracking.lm_kernels import SPOT, fit_windows
from napari_spt_diffusion.tracking.localize import (
    FitLimits,
    fit_spots,
    fit_spots_reference,
    spot_bounds,
    spot_model_and_jacobian,
)
from napari_spt_diffusion.tracking.streak_models import (
    fit_model,
    fit_pairs,
    fit_segments,
    pair_bounds,
    pair_model_and_jacobian,
    segment_bounds,
    segment_model_and_jacobian,
)

LIMITS = FitLimits(read_var=4.0, sigma_lo=0.5, sigma_hi=5.0)


def _box_clip(bounds):
    lower, upper = bounds

    def clip(p):
        p[:] = np.minimum(np.maximum(p, lower), upper)
        return p

    return clip


def _noisy(model, rng):
    return np.clip(rng.poisson(model) + rng.normal(0.0, 2.0, model.shape) + LIMITS.read_var, 0.0, None)


@pytest.mark.parametrize("with_neighbours", [False, True])
def test_compiled_spot_fit_matches_the_numpy_fit(with_neighbours):
    rng = np.random.default_rng(3)
    half, k = 3, 200
    offsets = np.arange(-half, half + 1.0)
    truth = np.column_stack([rng.uniform(-0.8, 0.8, (k, 2)), rng.uniform(80, 3000, k), rng.uniform(2, 30, k),
                             rng.uniform(0.8, 1.6, k)])
    data = _noisy(spot_model_and_jacobian(truth, offsets)[0], rng)
    valid = np.ones_like(data)
    valid[:30, :14] = 0.0  # windows cut by the image border
    start = np.column_stack([np.zeros((k, 2)), np.maximum(data.sum(1) - 49 * 10, 1.0), np.full(k, 10.0),
                             np.full(k, 1.0)])
    extra = rng.uniform(0.0, 20.0, data.shape) if with_neighbours else None
    p_ref, ok_ref = fit_spots_reference(data, valid, offsets, start, LIMITS, 50, extra=extra)
    p_new, ok_new = fit_spots(data, valid, offsets, start, LIMITS, 50, extra=extra)
    assert np.mean(ok_ref == ok_new) >= 0.99
    same = ok_ref & ok_new
    np.testing.assert_allclose(p_new[same, :2], p_ref[same, :2], atol=1e-6)
    np.testing.assert_allclose(p_new[same, 2:], p_ref[same, 2:], rtol=1e-6, atol=1e-6)
    # and the fits are fits: positions close to the truth for bright spots
    bright = same & (truth[:, 2] > 1000)
    assert np.sqrt(np.mean((p_new[bright, :2] - truth[bright, :2]) ** 2)) < 0.1


def test_compiled_pair_and_streak_fits_match_the_numpy_fits():
    rng = np.random.default_rng(5)
    half, k = 4, 150
    offsets = np.arange(-half, half + 1.0)
    pair = np.column_stack([rng.uniform(-2, 0, (k, 2)), rng.uniform(300, 2000, k), rng.uniform(0, 2, (k, 2)),
                            rng.uniform(300, 2000, k), rng.uniform(5, 20, k), rng.uniform(0.8, 1.4, k)])
    data = _noisy(pair_model_and_jacobian(pair, offsets)[0], rng)
    valid = np.ones_like(data)
    extra = LIMITS.read_var + rng.uniform(0.0, 5.0, data.shape)
    start = pair + rng.normal(0.0, 0.3, pair.shape)
    start[:, [2, 5]] *= 1.2
    bounds = pair_bounds(half, LIMITS)
    ref = fit_model(lambda p: pair_model_and_jacobian(p, offsets), _box_clip(bounds), data, valid, start, extra, 50)
    new = fit_pairs(data, valid, offsets, start, LIMITS, extra, 50)
    assert np.mean(ref[3] == new[3]) >= 0.99
    np.testing.assert_allclose(new[0], ref[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new[1], ref[1], rtol=1e-9)
    np.testing.assert_allclose(new[2], ref[2], rtol=1e-5, atol=1e-6)

    segment = np.column_stack([rng.uniform(-0.5, 0.5, (k, 2)), rng.uniform(300, 2000, k), rng.uniform(5, 20, k),
                               rng.uniform(0.8, 1.4, k), rng.uniform(-3, 3, (k, 2))])
    data = _noisy(segment_model_and_jacobian(segment, offsets)[0], rng)
    start = segment + rng.normal(0.0, 0.3, segment.shape)
    bounds = segment_bounds(half, LIMITS)
    ref = fit_model(lambda p: segment_model_and_jacobian(p, offsets), _box_clip(bounds), data, valid, start, extra,
                    12)
    new = fit_segments(data, valid, offsets, start, LIMITS, extra, 12)
    assert np.mean(ref[3] == new[3]) >= 0.99
    np.testing.assert_allclose(new[0], ref[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new[1], ref[1], rtol=1e-9)


def test_compiled_fit_respects_the_bounds_and_refuses_a_wrong_parameter_count():
    rng = np.random.default_rng(8)
    offsets = np.arange(-3, 4.0)
    data = rng.poisson(10.0, (20, 49)).astype(float) + LIMITS.read_var
    start = np.column_stack([np.full((20, 2), 5.0), np.full(20, 100.0), np.full(20, 10.0), np.full(20, 9.0)])
    bounds = spot_bounds(3.0, LIMITS)
    params, loglik, fisher, _ = fit_windows(SPOT, (data, np.ones_like(data)), offsets, start, bounds, 4.0, 20)
    assert np.all(params >= bounds[0]) and np.all(params <= bounds[1])
    assert loglik.shape == (20,) and fisher.shape == (20, 5, 5)
    np.testing.assert_allclose(fisher, fisher.transpose(0, 2, 1))
    with pytest.raises(ValueError):
        fit_windows(SPOT, (data, np.ones_like(data)), offsets, start[:, :4], bounds, 4.0, 20)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (20, 31), (300, 17), (256, 256)])
@pytest.mark.parametrize("psf_sigma", [0.6, 1.0, 2.3])
def test_fft_dog_is_the_reflected_gaussian_difference(shape, psf_sigma):
    rng = np.random.default_rng(1)
    image = (rng.poisson(10.0, shape) + 50.0 * (rng.random(shape) > 0.99)).astype(np.float32)
    sigma1, sigma2 = dog_sigmas_px(psf_sigma)
    centred = image - np.float32(image[::16, ::16].mean())
    expected = (ndimage.gaussian_filter(centred, sigma1, mode="reflect", truncate=3.5)
                - ndimage.gaussian_filter(centred, sigma2, mode="reflect", truncate=3.5))
    out = dog_filter(image, psf_sigma)
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5 * max(1.0, float(np.abs(expected).max())))
