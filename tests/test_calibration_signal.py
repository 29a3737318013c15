"""The signal's estimate and the honesty of its uncertainty (calibration_spots.signal_estimate), and the
systematic part of an unknown PSF shape (calibration_psf)."""

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.calibration import calibrate_movie
from napari_spt_diffusion.calibration_psf import measure_psf
from napari_spt_diffusion.calibration_spots import MULTIPLES_RATIO, StaticSpots, signal_estimate
from napari_spt_diffusion.validation.foreign_renderer import AiryPSF, ForeignOptics


def _spots(all_photons: np.ndarray) -> StaticSpots:
    """Spots whose brighter half (here by photons) are the bright ones."""
    empty = np.zeros(0)
    bright = all_photons[all_photons >= np.median(all_photons)] if all_photons.size else empty
    return StaticSpots(empty, bright, empty, np.zeros(0, dtype=np.int64), empty, 0, all_photons)


def test_single_emitters_give_the_bright_half_and_the_gain_counts_in_the_uncertainty():
    rng = np.random.default_rng(3)
    photons = rng.normal(1000.0, 120.0, 400)  # one emitter's photons with 12 % fit noise
    bright_median = float(np.median(photons[photons >= np.median(photons)]))
    est = signal_estimate(_spots(photons), (1.15, 0.01), 0.0, np.random.default_rng(0))
    assert est.note is None and est.bright_half_ratio < MULTIPLES_RATIO
    assert est.photons == pytest.approx(1.15 * bright_median, rel=1e-9)
    without_gain = est.uncertainty
    with_gain = signal_estimate(_spots(photons), (1.15, 0.01), 0.10, np.random.default_rng(0)).uncertainty
    # every photon count moves with the gain: its 10 % is in the signal's uncertainty
    assert with_gain == pytest.approx(np.hypot(without_gain, 0.10 * est.photons), rel=1e-6)
    # the flux ratio's uncertainty, times the spots' median
    wider = signal_estimate(_spots(photons), (1.15, 0.10), 0.0, np.random.default_rng(0)).uncertainty
    assert wider >= 0.10 * bright_median


def test_bright_spots_that_hold_pairs_fall_back_to_all_isolated_spots():
    rng = np.random.default_rng(4)
    singles = rng.normal(250.0, 50.0, 300)
    pairs = rng.normal(500.0, 70.0, 200)  # unresolved pairs: twice the photons, easier to detect
    photons = np.concatenate([singles, pairs])
    bright_median = float(np.median(photons[photons >= np.median(photons)]))
    est = signal_estimate(_spots(photons), (1.0, 0.0), 0.0, np.random.default_rng(0))
    assert est.bright_half_ratio > MULTIPLES_RATIO
    assert est.photons == pytest.approx(float(np.median(photons)), rel=1e-9)
    assert est.note is not None and "pairs" in est.note
    # the uncertainty reaches half-way to the brighter half's median
    assert est.uncertainty >= 0.5 * (bright_median - est.photons)
    # an EMCCD's Poisson-equivalent photons are doubled back; the ratio does not change
    doubled = signal_estimate(_spots(photons), (1.0, 0.0), 0.0, np.random.default_rng(0), photon_factor=2.0)
    assert doubled.photons == pytest.approx(2.0 * est.photons) and doubled.bright_half_ratio == pytest.approx(
        est.bright_half_ratio)


def test_no_spots_give_no_signal():
    est = signal_estimate(_spots(np.zeros(0)), (1.0, 0.0), 0.0, np.random.default_rng(0))
    assert np.isnan(est.photons)


def _airy_spots(sigma_px: float):
    rng = np.random.default_rng(5)
    optics = ForeignOptics(na=0.21 * 600.0 / (sigma_px * 100.0), wavelength_nm=600.0, pixel_size_nm=100.0)
    psf = AiryPSF(optics)
    y, x, frame = [], [], []
    for t in range(4):
        for i in range(3):
            for j in range(3):
                y.append(25 + 30 * i + rng.uniform(-0.5, 0.5))
                x.append(25 + 30 * j + rng.uniform(-0.5, 0.5))
                frame.append(t)
    y, x, frame = np.array(y), np.array(x), np.array(frame)
    photons = np.stack([psf.expected_image((111, 111), y[frame == t], x[frame == t], 5000.0) for t in range(4)])
    table = {"frame": frame, "y_px": y, "x_px": x, "photons": np.full(len(y), 5000.0), "background": np.zeros(len(y))}
    return photons, table


def test_an_unknown_psf_shape_carries_half_the_two_profiles_difference():
    photons, table = _airy_spots(1.2)
    rows = np.arange(len(table["y_px"]))
    known = measure_psf(photons, table, rows, 1.3, 0.0, np.random.default_rng(0), n_boot=20)
    # a blur beyond a quarter of the width squared leaves the shape unjudged (the same noise-free spots)
    unknown = measure_psf(photons, table, rows, 1.3, 0.5, np.random.default_rng(0), n_boot=20)
    assert known is not None and known.shape == "airy"
    assert unknown is not None and unknown.shape == "unknown"
    # noise-free spots: the bootstrap spreads nothing; what is left is systematic
    assert known.flux_ratio_se < 0.01
    # the unknown shape takes the Gaussian's flux; the Airy profile's (about 1) is within two uncertainties
    assert abs(known.flux_ratio - unknown.flux_ratio) > 0.05
    assert unknown.flux_ratio_se == pytest.approx(0.5 * abs(known.flux_ratio - unknown.flux_ratio), rel=0.1)


def test_the_calibrated_signal_carries_the_measured_gains_uncertainty():
    from napari_spt_diffusion.io import read_movie, sample_movie_path

    with read_movie(sample_movie_path()) as movie:
        cal = calibrate_movie(movie.data, Acquisition(), max_frames=80)
    gain, signal = cal.values["gain_adu_per_e"], cal.values["signal_photons"]
    assert signal.uncertainty >= 0.99 * signal.value * gain.uncertainty / gain.value
    assert "gain's uncertainty" in signal.method
    assert cal.to_dict()["bright_half_ratio"] == pytest.approx(cal.bright_half_ratio)
    assert 0.9 <= cal.bright_half_ratio < MULTIPLES_RATIO  # the sample movie's spots are single emitters
