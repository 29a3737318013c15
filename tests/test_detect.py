"""Tests of tracking.detect: DoG detection on synthetic frames with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion import Acquisition
from napari_spt_diffusion.simulation.render import camera_image as camera
from napari_spt_diffusion.simulation.render import expected_photons
from napari_spt_diffusion.tracking import (
    DetectionSettings,
    TrackingInputError,
    border_noise_gain,
    detect_and_localize,
    detect_frame,
    dog_filter,
    dog_sigmas_px,
)

ACQ = Acquisition()  # standard: sigma 1 px, 10 bg photons, offset 100 ADU, gain 1, read noise 1.5 e-


def render(shape, positions_yx, photons, acq=ACQ):
    """Expected signal photons of static spots (simulator's pixel-integrated PSF), summed."""
    positions = np.atleast_2d(np.asarray(positions_yx, dtype=float))
    return expected_photons(positions[:, None, :], shape, acq, photons).sum(axis=0)


def grid_positions(shape, spacing, rng):
    g0 = np.arange(spacing // 2, shape[0] - spacing // 2 + 1, spacing)
    g1 = np.arange(spacing // 2, shape[1] - spacing // 2 + 1, spacing)
    yy, xx = np.meshgrid(g0, g1, indexing="ij")
    return np.column_stack([yy.ravel(), xx.ravel()]) + rng.uniform(-0.5, 0.5, (yy.size, 2))


def match_count(peaks, truth, radius=1.0):
    """Number of true positions with a detected peak within ``radius`` px (one-to-one enough here)."""
    if len(peaks) == 0:
        return 0
    d = np.linalg.norm(truth[:, None, :] - peaks[None, :, :], axis=-1)
    return int(np.sum(d.min(axis=1) <= radius))


# ----------------------------------------------------------------------------- filter
def test_dog_sigmas_are_matched_to_pixel_integrated_psf():
    s1, s2 = dog_sigmas_px(1.0)
    assert s1 == pytest.approx(math.sqrt(1 + 1 / 12))
    assert s2 == pytest.approx(2.5 * s1)


def test_dog_is_zero_on_constants_and_peaks_on_a_spot():
    flat = np.full((40, 50), 1234.0)
    out = dog_filter(flat, 1.0)
    assert out.shape == (40, 50) and out.dtype == np.float32
    assert np.abs(out).max() < 1e-3
    spot = dog_filter(render((41, 41), (20.0, 20.0), 1000.0), 1.0)
    assert np.unravel_index(np.argmax(spot), spot.shape) == (20, 20)


# ------------------------------------------------------------------------- detection
def test_finds_all_spots_and_nothing_else_at_standard_and_low_photons():
    rng = np.random.default_rng(1)
    shape = (128, 128)
    truth = grid_positions(shape, 16, rng)
    for photons in (1000.0, 250.0):
        frame = camera(render(shape, truth, photons), ACQ, rng)
        peaks = detect_frame(frame, ACQ)
        assert peaks.dtype == np.int64 and peaks.shape[1] == 2
        assert match_count(peaks, truth) == len(truth)
        assert len(peaks) == len(truth)


def test_noise_only_frame_has_no_detections():
    # 5 x 256 x 256 pixels of pure background noise: the 5-sigma DoG threshold must hold,
    # also on the border where the reflected image makes the filtered noise larger.
    rng = np.random.default_rng(2)
    for _ in range(5):
        frame = camera(np.zeros((256, 256)), ACQ, rng)
        assert len(detect_frame(frame, ACQ)) == 0
    # at threshold 3.5 (expected false-alarm rate ~1e-4 per pixel-sized cell) noise
    # maxima appear, spread over interior and border alike, not piled up on the edges
    loose = DetectionSettings(threshold_snr=3.5)
    peaks = np.concatenate([detect_frame(camera(np.zeros((256, 256)), ACQ, rng), ACQ, loose) for _ in range(5)])
    edge = (np.minimum(peaks, 255 - peaks).min(axis=1) < 3).mean()
    assert len(peaks) > 5
    assert edge < 0.1  # the outer 3-px band is 4.6 % of the frame


def test_border_noise_gain_map():
    gain = border_noise_gain((64, 80), 1.0)
    assert gain.shape == (64, 80)
    assert gain[32, 40] == pytest.approx(1.0, abs=1e-6)
    assert gain[0, 40] == pytest.approx(1.31, abs=0.02) and gain[0, 0] == pytest.approx(1.70, abs=0.03)
    # empirical check: std of the DoG of white noise, edge row vs interior rows
    rng = np.random.default_rng(9)
    stack = np.stack([dog_filter(rng.normal(0, 1, (64, 80)), 1.0) for _ in range(200)])
    ratio = stack[:, 0, 20:60].std() / stack[:, 20:44, 20:60].std()
    assert ratio == pytest.approx(gain[0, 40], rel=0.05)


@pytest.mark.parametrize("value", [0, 100, 4000, 65535])
def test_constant_frame_has_no_detections(value):
    assert len(detect_frame(np.full((64, 80), value, dtype=np.uint16), ACQ)) == 0
    assert len(detect_frame(np.full((64, 80), float(value)), ACQ)) == 0


def test_zero_size_frame_has_no_detections():
    assert detect_frame(np.zeros((0, 10), dtype=np.uint16), ACQ).shape == (0, 2)


def test_nan_or_inf_pixels_are_refused():
    frame = np.full((32, 32), 110.0)
    frame[3, 4] = np.nan
    with pytest.raises(TrackingInputError, match="NaN"):
        detect_frame(frame, ACQ)
    frame[3, 4] = np.inf
    with pytest.raises(ValueError):
        detect_frame(frame, ACQ)


def test_wrong_dimensions_are_refused():
    with pytest.raises(TrackingInputError, match="2-D"):
        detect_frame(np.zeros((2, 8, 8)), ACQ)


def test_spots_on_the_border_and_in_the_corner_are_found():
    rng = np.random.default_rng(3)
    truth = np.array([[0.2, 30.3], [63.0, 12.6], [25.4, 0.0], [40.0, 63.3], [0.0, 0.0], [63.0, 63.0]])
    frame = camera(render((64, 64), truth, 1000.0), ACQ, rng)
    peaks = detect_frame(frame, ACQ)
    assert len(peaks) == len(truth)
    assert match_count(peaks, truth) == len(truth)


def test_two_spots_closer_than_the_separation_give_one_detection():
    rng = np.random.default_rng(4)
    settings = DetectionSettings(min_separation_px=4.0)
    close = np.array([[30.0, 30.0], [30.0, 33.0]])  # 3 px apart, below 4 px
    frame = camera(render((64, 64), close, [1000.0, 600.0]), ACQ, rng)
    peaks = detect_frame(frame, ACQ, settings)
    assert len(peaks) == 1
    assert np.linalg.norm(peaks[0] - close[0]) <= 1.0  # the brighter one is kept
    far = np.array([[30.0, 30.0], [30.0, 36.0]])  # 6 px apart
    frame = camera(render((64, 64), far, [1000.0, 600.0]), ACQ, rng)
    assert len(detect_frame(frame, ACQ, settings)) == 2


def test_default_separation_scales_with_psf():
    settings = DetectionSettings()
    assert settings.resolved_min_separation_px(ACQ) == pytest.approx(2.0)
    assert settings.resolved_min_separation_px(ACQ.replace(psf_sigma_nm=200.0)) == pytest.approx(4.0)
    assert DetectionSettings(min_separation_px=3.0).resolved_min_separation_px(ACQ) == 3.0


def test_same_detections_whatever_the_camera_offset_and_gain():
    rng = np.random.default_rng(5)
    truth = grid_positions((96, 96), 16, rng)
    electrons = rng.poisson(render((96, 96), truth, 400.0) + 10.0) + rng.normal(0, 1.5, (96, 96))
    for gain, offset in ((1.0, 100.0), (2.5, 100.0), (1.0, 1000.0), (0.5, 400.0)):
        acq = ACQ.replace(gain_adu_per_e=gain, offset_adu=offset)
        frame = np.clip(np.rint(electrons * gain + offset), 0, 65535).astype(np.uint16)
        peaks = detect_frame(frame, acq)
        # the same spots, nothing else (ADU rounding may move a peak by one pixel)
        assert len(peaks) == len(truth)
        assert match_count(peaks, truth) == len(truth)


def test_settings_are_validated():
    with pytest.raises(ValueError):
        DetectionSettings(threshold_snr=0)
    with pytest.raises(ValueError):
        DetectionSettings(min_separation_px=float("nan"))
    with pytest.raises(TypeError):  # the PSF width comes from the acquisition only
        DetectionSettings(psf_sigma_px=1.0)


# ----------------------------------------------------------------- whole movies
class LazyMovie:
    """Array-like movie that renders frames on demand and records which frames were read."""

    def __init__(self, n_frames, shape, positions, seed):
        self.shape = (n_frames, *shape)
        self.dtype = np.dtype(np.uint16)
        self.ndim = 3
        self.positions = positions
        self.seed = seed
        self.reads = []

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)):
            raise AssertionError(f"the whole movie was requested with {index!r}")
        self.reads.append(int(index))
        rng = np.random.default_rng(self.seed + int(index))
        return camera(render(self.shape[1:], self.positions + 0.1 * index, 800.0), ACQ, rng)

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole movie was converted to an array")


def test_detect_and_localize_reads_one_frame_at_a_time_and_reports_progress():
    rng = np.random.default_rng(6)
    positions = grid_positions((48, 48), 16, rng)
    movie = LazyMovie(6, (48, 48), positions, seed=10)
    reports = []
    table = detect_and_localize(movie, ACQ, progress=lambda f, m: reports.append((f, m)))
    assert movie.reads == list(range(6))
    assert list(table.columns[:8]) == ["frame", "y_px", "x_px", "photons", "background", "sigma_px", "loc_precision_nm",
                                       "fit_ok"]
    assert table["frame"].dtype == np.int64 and table["fit_ok"].dtype == bool
    assert (table.groupby("frame").size() == len(positions)).all()
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in reports)
    # localized positions follow the known drift of 0.1 px per frame
    for frame, group in table.groupby("frame"):
        expected = positions + 0.1 * frame
        d = np.linalg.norm(group[["y_px", "x_px"]].to_numpy()[:, None] - expected[None], axis=-1).min(axis=1)
        assert d.max() < 0.3
    assert table.attrs["stopped_early"] is False and table.attrs["frames_processed"] == 6


def test_detect_and_localize_stops_when_asked():
    rng = np.random.default_rng(7)
    movie = LazyMovie(10, (32, 32), grid_positions((32, 32), 16, rng), seed=3)
    table = detect_and_localize(movie, ACQ, should_stop=lambda: len(movie.reads) >= 3)
    assert movie.reads == [0, 1, 2]
    assert set(table["frame"]) <= {0, 1, 2}
    assert table.attrs["stopped_early"] is True and table.attrs["frames_processed"] == 3


@pytest.mark.parametrize("threads", ["2", "3"])
def test_detect_and_localize_with_threads_gives_the_one_thread_table(monkeypatch, threads):
    rng = np.random.default_rng(9)
    # close pairs as well as isolated spots, so that the overlap pass runs in the threads too
    positions = grid_positions((64, 64), 16, rng)
    positions = np.concatenate([positions, positions[:3] + np.array([0.0, 3.0])])
    movie = LazyMovie(9, (64, 64), positions, seed=21)
    monkeypatch.setenv("SPT_DIFFUSION_SPOT_THREADS", "1")
    one = detect_and_localize(movie, ACQ)
    monkeypatch.setenv("SPT_DIFFUSION_SPOT_THREADS", threads)
    reports = []
    movie.reads.clear()
    many = detect_and_localize(movie, ACQ, progress=lambda f, m: reports.append(f))
    assert movie.reads == list(range(9))  # still read in order, one frame at a time
    assert len(one) > 9 * len(positions) // 2
    pd.testing.assert_frame_equal(one, many)
    assert many.attrs == one.attrs
    assert reports == sorted(reports) and reports[-1] == 1.0


def test_spot_threads_from_the_environment(monkeypatch):
    from napari_spt_diffusion.tracking.spots import MAX_SPOT_THREADS, spot_threads

    monkeypatch.setenv("SPT_DIFFUSION_SPOT_THREADS", "3")
    assert spot_threads() == 3
    for bad in ("0", "-2", "two", ""):
        monkeypatch.setenv("SPT_DIFFUSION_SPOT_THREADS", bad)
        assert 1 <= spot_threads() <= MAX_SPOT_THREADS


def test_detect_and_localize_on_empty_movie_and_bad_shapes():
    table = detect_and_localize(np.full((3, 20, 20), 100, dtype=np.uint16), ACQ)
    assert len(table) == 0 and "frame" in table.columns and "y_px" in table.columns
    with pytest.raises(TrackingInputError, match="3-D"):
        detect_and_localize(np.zeros((20, 20)), ACQ)
    movie = np.full((2, 20, 20), 100.0)
    movie[1, 5, 5] = np.nan
    with pytest.raises(TrackingInputError, match="NaN"):
        detect_and_localize(movie, ACQ)


# ------------------------------------------------------------ close pairs (second pass)
def _pairs_frame(rng, separation, photons, shape=(160, 160), spacing=20):
    """A grid of single spots where every other site holds a pair ``separation`` px apart.

    Returns ``(frame_adu, singles (M, 2), pairs (P, 2, 2))``: the singles give the frame its
    reference brightness, as the many isolated particles of a real movie do.
    """
    sites = grid_positions(shape, spacing, rng)
    is_pair = np.arange(len(sites)) % 2 == 0
    angle = rng.uniform(0.0, np.pi, is_pair.sum())
    half = 0.5 * separation * np.column_stack([np.sin(angle), np.cos(angle)])
    pairs = np.stack([sites[is_pair] - half, sites[is_pair] + half], axis=1)
    singles = sites[~is_pair]
    truth = np.concatenate([singles, pairs.reshape(-1, 2)])
    return camera(render(shape, truth, photons), ACQ, rng), singles, pairs


def test_two_spots_2px_apart_are_both_found_and_localized():
    rng = np.random.default_rng(21)
    frame, singles, pairs = _pairs_frame(rng, 2.0, 4000.0)
    found = {}
    for overlaps in (False, True):
        table = detect_and_localize(frame[None], ACQ, overlaps=overlaps)
        fitted = table[["y_px", "x_px"]].to_numpy()
        truth = pairs.reshape(-1, 2)
        distance = np.linalg.norm(truth[:, None, :] - fitted[None, :, :], axis=-1)
        found[overlaps] = distance.min(axis=1)
        if overlaps:
            assert table.attrs["n_split"] == len(pairs)
            assert len(table) == len(singles) + truth.shape[0]  # nothing else was split
            # each true position has its own localization (no two share one)
            assert len(np.unique(distance.argmin(axis=1))) == len(truth)
    # before: one fit between the two spots, about 1 px from each
    assert np.median(found[False]) > 0.7
    # after: both spots, each within 0.2 px
    assert found[True].max() < 0.2


def test_a_single_spot_is_never_split():
    # 200 noisy frames of isolated static spots, 9 per frame (1,800 spots), at the standard
    # and at a low photon count: the second pass must split none of them
    rng = np.random.default_rng(22)
    for photons in (1000.0, 250.0):
        frames = []
        for _ in range(200):
            truth = grid_positions((60, 60), 20, rng)
            frames.append(camera(render((60, 60), truth, photons), ACQ, rng))
        table = detect_and_localize(np.stack(frames), ACQ)
        assert table.attrs["n_split"] == 0
        assert len(table) == 200 * 9
