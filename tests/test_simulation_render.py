"""Image formation and camera noise of the simulator (fixed seeds; tolerances from sampling error)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.integrate import quad
from scipy.optimize import curve_fit
from scipy.special import erf

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation import (
    SimulationError,
    camera_image,
    camera_image_from_counts,
    expected_photons,
    localization_crlb_nm,
    peak_pixel_fraction,
    render_windows,
    sample_poisson,
    signal_photons_for_snr,
    static_snr,
)
from napari_spt_diffusion.simulation.render import fast_erf

ACQ = Acquisition()


def _pixel_gaussian(h: int, w: int, y0: float, x0: float, sigma: float, photons: float) -> np.ndarray:
    """Independent reference: Gaussian integrated over each pixel, float64 scipy erf."""
    ey = erf((np.arange(h + 1) - 0.5 - y0) / (math.sqrt(2) * sigma))
    ex = erf((np.arange(w + 1) - 0.5 - x0) / (math.sqrt(2) * sigma))
    return photons * np.outer(np.diff(ey) / 2, np.diff(ex) / 2)


def test_fast_erf_matches_scipy():
    x = np.linspace(-8, 8, 200_001).astype(np.float32)
    err = np.abs(fast_erf(x).astype(np.float64) - erf(x.astype(np.float64)))
    assert err.max() < 1e-6
    assert fast_erf(np.float32(0.0)) == 0.0


@pytest.mark.parametrize("photons", [1.0, 1234.5])
def test_static_particle_photons_sum_to_request(photons):
    acq = Acquisition(psf_sigma_nm=150.0)
    img = expected_photons(np.array([[20.3, 19.8]]), (41, 41), acq, photons_per_frame=photons)
    assert img.shape == (41, 41) and img.dtype == np.float32
    assert abs(img.sum() - photons) < 1e-5 * photons + 1e-6


def test_pixel_convention_centre_of_pixel_is_integer_coordinate():
    img = expected_photons(np.array([[3.0, 5.0]]), (9, 11), ACQ)
    assert np.unravel_index(np.argmax(img), img.shape) == (3, 5)
    assert img[2, 5] == pytest.approx(img[4, 5], rel=1e-5) and img[3, 4] == pytest.approx(img[3, 6], rel=1e-5)
    half = expected_photons(np.array([[3.5, 5.0]]), (9, 11), ACQ)
    assert half[3, 5] == pytest.approx(half[4, 5], rel=1e-5)
    assert half[3, 5] > 1.5 * half[2, 5]


@pytest.mark.parametrize("sigma_px", [0.7, 1.0, 1.5, 2.0])
def test_matches_independent_erf_reference_and_fitted_width(sigma_px):
    acq = Acquisition(psf_sigma_nm=100.0 * sigma_px)
    y0, x0 = 10.27, 9.61
    img = expected_photons(np.array([[y0, x0]]), (21, 21), acq, photons_per_frame=1000.0).astype(np.float64)
    ref = _pixel_gaussian(21, 21, y0, x0, sigma_px, 1000.0)
    assert np.abs(img - ref).max() < 1e-3  # photons; fast_erf error < 1e-6 per edge
    # least-squares fit of a pixel-integrated Gaussian recovers the PSF width and position

    def model(_, y, x, s, n):
        return _pixel_gaussian(21, 21, y, x, s, n).ravel()

    popt, _ = curve_fit(model, None, img.ravel(), p0=(10.0, 10.0, 1.2, 900.0))
    assert popt[2] == pytest.approx(sigma_px, rel=1e-4)
    assert popt[0] == pytest.approx(y0, abs=1e-4) and popt[1] == pytest.approx(x0, abs=1e-4)
    assert popt[3] == pytest.approx(1000.0, rel=1e-4)


def test_pixel_integration_not_point_sampling():
    """At sigma 0.7 px the centre pixel holds erf-integral photons, 15 % below the point-sampled value."""
    sigma = 0.7
    acq = Acquisition(psf_sigma_nm=70.0)
    img = expected_photons(np.array([[5.0, 5.0]]), (11, 11), acq, photons_per_frame=1000.0)
    integrated = 1000.0 * erf(0.5 / (math.sqrt(2) * sigma)) ** 2
    point = 1000.0 / (2 * math.pi * sigma**2)
    assert img[5, 5] == pytest.approx(integrated, rel=1e-5)
    assert abs(img[5, 5] - point) > 0.1 * point
    assert peak_pixel_fraction(acq) == pytest.approx(integrated / 1000.0, rel=1e-12)


def test_motion_blur_is_mean_of_substep_images_over_exposure():
    rng = np.random.default_rng(0)
    sub = np.array([5.0, 5.0]) + np.cumsum(rng.normal(0, 0.4, (10, 2)), axis=0)
    full = expected_photons(sub, (11, 11), ACQ, photons_per_frame=800.0)
    parts = [expected_photons(p[None], (11, 11), ACQ, photons_per_frame=800.0) for p in sub]
    np.testing.assert_allclose(full, np.mean(parts, axis=0), rtol=1e-5, atol=1e-5)
    # with half the exposure only the first five sub-positions are seen, with all the photons
    half = Acquisition(exposure_s=0.005)
    img = expected_photons(sub, (11, 11), half, photons_per_frame=800.0)
    np.testing.assert_allclose(img, np.mean(parts[:5], axis=0), rtol=1e-5, atol=1e-5)
    assert img.sum() == pytest.approx(full.sum(), rel=1e-4)


def test_batched_leading_dimensions_and_photon_broadcast():
    rng = np.random.default_rng(1)
    pos = 5 + rng.normal(0, 0.5, (2, 3, 10, 2))
    photons = np.array([[100.0, 200.0, 300.0], [400.0, 500.0, 600.0]])
    img = expected_photons(pos, (11, 11), ACQ, photons_per_frame=photons)
    assert img.shape == (2, 3, 11, 11)
    for i in range(2):
        for j in range(3):
            single = expected_photons(pos[i, j], (11, 11), ACQ, photons_per_frame=photons[i, j])
            np.testing.assert_allclose(img[i, j], single, rtol=1e-6, atol=1e-6)
    windows = render_windows(pos + 100, np.full((2, 3, 2), 100), 11, ACQ, photons)
    np.testing.assert_allclose(windows, img, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("mean", [0.004, 0.3, 0.1249, 2.7, 13.9, 63.99, 64.0, 250.0])
def test_sample_poisson_is_poisson(mean):
    rng = np.random.default_rng(int(mean * 1000))
    n = 200_000
    counts = sample_poisson(np.full(n, mean, dtype=np.float32), rng)
    assert counts.dtype == np.float32
    lam = float(np.float32(mean))
    k = np.arange(int(lam + 10 * math.sqrt(lam) + 10))
    expected = stats.poisson.pmf(k, lam) * n
    observed = np.bincount(counts.astype(int), minlength=k.size)[: k.size]
    keep = expected > 20
    chi2 = np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep])
    dof = max(int(keep.sum()) - 1, 1)
    if keep.sum() >= 2:
        assert stats.chi2.sf(chi2, dof) > 1e-4, (chi2, dof)
    assert abs(counts.mean() - lam) < 5 * math.sqrt(lam / n)


def test_sample_poisson_mixed_means_and_background():
    rng = np.random.default_rng(3)
    means = np.tile(np.array([0.0, 0.05, 0.7, 5.3, 40.0, 120.0], dtype=np.float32), 50_000)
    counts = sample_poisson(means, rng, background=10.0).reshape(-1, 6)
    lam = means[:6] + 10.0
    n = counts.shape[0]
    assert np.all(np.abs(counts.mean(axis=0) - lam) < 5 * np.sqrt(lam / n))
    assert np.all(np.abs(counts.var(axis=0) / lam - 1) < 5 * math.sqrt(2 / n))
    with pytest.raises(SimulationError):
        sample_poisson(np.array([-1.0]), rng)


def _exact_background_adu_pmf(acq: Acquisition, b: float, values: np.ndarray) -> np.ndarray:
    """Independent reference: P(round(offset + g (k + r z)) = m), summed over Poisson k."""
    k = np.arange(int(b + 12 * math.sqrt(b) + 30))
    pk = stats.poisson.pmf(k, b)
    g, r, off = acq.gain_adu_per_e, acq.read_noise_e, acq.offset_adu
    centre = off + g * k  # (K,)
    hi = stats.norm.cdf((values[:, None] + 0.5 - centre) / (g * r))
    lo = stats.norm.cdf((values[:, None] - 0.5 - centre) / (g * r))
    return (hi - lo) @ pk


@pytest.mark.parametrize(
    "acq",
    [
        Acquisition(),
        Acquisition(gain_adu_per_e=2.0, offset_adu=50.0, read_noise_e=3.0, background_photons=4.0),
        Acquisition(gain_adu_per_e=2.5, offset_adu=100.0, read_noise_e=1.2, background_photons=7.5),
    ],
    ids=["standard", "gain2", "gain2.5"],
)
def test_background_mean_variance_and_distribution(acq):
    rng = np.random.default_rng(5)
    frame = camera_image(np.zeros((512, 512), dtype=np.float32), acq, rng)
    assert frame.dtype == np.uint16 and frame.shape == (512, 512)
    x = frame.astype(np.float64).ravel()
    n = x.size
    g, b, r = acq.gain_adu_per_e, acq.background_photons, acq.read_noise_e
    mean = acq.offset_adu + g * b
    var = g * g * (b + r * r) + 1.0 / 12.0  # + rounding (Sheppard)
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / n)
    assert abs(x.var() / var - 1) < 5 * math.sqrt(2 / n)
    # the whole histogram against the exact distribution
    values = np.arange(int(x.min()), int(x.max()) + 1)
    expected = _exact_background_adu_pmf(acq, b, values) * n
    observed = np.bincount(x.astype(int) - values[0], minlength=values.size)
    keep = expected > 20
    chi2 = np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep])
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4, chi2


@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_signal_pixels_mean_and_variance(gain):
    acq = Acquisition(gain_adu_per_e=gain)
    rng = np.random.default_rng(8)
    signal = np.tile(np.array([0.06, 3.3, 57.3, 150.0], dtype=np.float32), 100_000)
    adu = camera_image(signal, acq, rng).astype(np.float64).reshape(-1, 4)
    n = adu.shape[0]
    lam = signal[:4].astype(np.float64) + acq.background_photons
    mean = acq.offset_adu + gain * lam
    var = gain**2 * (lam + acq.read_noise_e**2) + 1 / 12
    assert np.all(np.abs(adu.mean(axis=0) - mean) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(adu.var(axis=0) / var - 1) < 5 * math.sqrt(2 / n) + 0.002)


def test_counts_path_matches_camera_image_statistics():
    rng = np.random.default_rng(9)
    counts = np.full((400, 400), 7.0, dtype=np.float32)
    adu = camera_image_from_counts(counts, ACQ, rng).astype(np.float64)
    mean = ACQ.offset_adu + 7.0 + ACQ.background_photons
    var = ACQ.background_photons + ACQ.read_noise_e**2 + 1 / 12  # counts are fixed: no signal shot noise
    assert abs(adu.mean() - mean) < 5 * math.sqrt(var / adu.size)
    assert abs(adu.var() / var - 1) < 5 * math.sqrt(2 / adu.size)


def test_clipping_to_uint16_range():
    rng = np.random.default_rng(2)
    low = Acquisition(offset_adu=0.0, background_photons=0.0, read_noise_e=3.0)
    frame = camera_image(np.zeros((100, 100), dtype=np.float32), low, rng)
    assert frame.min() == 0 and frame.max() < 30  # negative read noise clipped, not wrapped
    high = camera_image(np.full((10, 10), 1e6, dtype=np.float32), ACQ, rng)
    assert np.all(high == 65535)


def test_snr_helpers_match_protocol():
    # standard acquisition: about 40 (docs/protocols.md): 1000 * 0.1466 / sqrt(10 + 1.5^2)
    assert static_snr(ACQ) == pytest.approx(1000 * erf(0.5 / math.sqrt(2)) ** 2 / math.sqrt(12.25), rel=1e-9)
    assert 38 < static_snr(ACQ) < 44
    photons = signal_photons_for_snr(20.0, ACQ)
    assert static_snr(ACQ.replace(signal_photons=photons)) == pytest.approx(20.0, rel=1e-9)
    with pytest.raises(SimulationError):
        signal_photons_for_snr(-1.0, ACQ)


def test_crlb_matches_mortensen_integral():
    a, s = ACQ.pixel_size_nm, ACQ.psf_sigma_nm
    sa2 = s * s + a * a / 12
    for n_ph, b in ((1000.0, 10.0), (250.0, 10.0), (4000.0, 2.0)):
        tau = 2 * math.pi * sa2 * b / (n_ph * a * a)
        integral = quad(lambda t, tau=tau: math.log(t) / (1 + t / tau), 0, 1)[0]
        ref = math.sqrt(sa2 / n_ph / (1 + integral))
        assert float(localization_crlb_nm(n_ph, b, ACQ)) == pytest.approx(ref, rel=1e-4)
    # no background: sigma_a / sqrt(N)
    assert float(localization_crlb_nm(1000.0, 0.0, ACQ)) == pytest.approx(math.sqrt(sa2 / 1000.0), rel=1e-9)
    assert np.isnan(localization_crlb_nm(0.0, 10.0, ACQ))


def test_bad_render_input():
    with pytest.raises(SimulationError):
        expected_photons(np.zeros((3,)), (5, 5), ACQ)
    with pytest.raises(SimulationError):
        expected_photons(np.zeros((1, 2)), (0, 5), ACQ)
    with pytest.raises(SimulationError):
        camera_image(np.full((2, 2), np.nan), ACQ, np.random.default_rng(0))
