"""Tests of tracking.localize: pixel-integrated Gaussian MLE, fallback, Mortensen precision."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from napari_spt_diffusion import Acquisition
from napari_spt_diffusion.simulation.render import camera_image as camera
from napari_spt_diffusion.simulation.render import expected_photons
from napari_spt_diffusion.tracking import (
    LOCALIZATION_COLUMNS,
    TrackingInputError,
    detect_frame,
    localize_frame,
    mortensen_precision_nm,
)

ACQ = Acquisition()


def render(shape, positions_yx, photons, acq=ACQ):
    """Expected signal photons of static spots (simulator's pixel-integrated PSF), summed."""
    positions = np.atleast_2d(np.asarray(positions_yx, dtype=float))
    return expected_photons(positions[:, None, :], shape, acq, photons).sum(axis=0)


def spot_grid(rng, shape=(192, 192), spacing=12):
    g0 = np.arange(spacing // 2, shape[0] - spacing // 2 + 1, spacing)
    yy, xx = np.meshgrid(g0, g0, indexing="ij")
    return np.column_stack([yy.ravel(), xx.ravel()]) + rng.uniform(-0.5, 0.5, (yy.size, 2))


def localize_grid(photons, n_frames, seed, acq=ACQ):
    """Localize isolated spots at known positions; returns (errors (M, 2) px, table of fits)."""
    rng = np.random.default_rng(seed)
    errors, tables = [], []
    for _ in range(n_frames):
        truth = spot_grid(rng)
        frame = camera(render((192, 192), truth, photons), acq, rng)
        table = localize_frame(frame, np.rint(truth).astype(int), acq)
        errors.append(table[["y_px", "x_px"]].to_numpy() - truth)
        tables.append(table)
    import pandas as pd

    return np.concatenate(errors), pd.concat(tables, ignore_index=True)


# --------------------------------------------------------------------------- precision
def test_mortensen_formula_limits_and_value():
    # no background: var = s_a^2 / N exactly
    s_a = math.sqrt(100.0**2 + 100.0**2 / 12)
    assert mortensen_precision_nm(1000, 0, 100.0, 100.0) == pytest.approx(s_a / math.sqrt(1000), rel=1e-6)
    # against direct quadrature of eq. 6 at the standard acquisition (b = 10 + 1.5^2)
    b = 10 + 1.5**2
    tau = 2 * math.pi * s_a**2 * b / (1000 * 100.0**2)
    integral = integrate.quad(lambda t: math.log(t) / (1 + t / tau), 0, 1)[0]
    expected = math.sqrt(s_a**2 / 1000 / (1 + integral))
    assert mortensen_precision_nm(1000, 10, 100.0, 100.0, read_noise_e=1.5) == pytest.approx(expected, rel=1e-4)
    # more background or fewer photons is worse; N <= 0 is undefined
    values = mortensen_precision_nm([1000, 1000, 250], [0, 50, 50], 100.0, 100.0)
    assert values[0] < values[1] < values[2]
    assert np.isnan(mortensen_precision_nm(0, 10, 100.0, 100.0))
    # far above the table (huge background): the asymptote 1/(4 tau) continues smoothly
    big = mortensen_precision_nm(1.0, [1e9, 1e10], 100.0, 100.0)
    assert big[1] / big[0] == pytest.approx(math.sqrt(10), rel=1e-3)


# ----------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("photons, seed", [(1000.0, 1), (250.0, 2)])
def test_unbiased_with_rmse_at_the_crlb(photons, seed):
    errors, table = localize_grid(photons, n_frames=3, seed=seed)  # 3 x 256 spots
    n = len(errors)
    assert table["fit_ok"].all()
    crlb_px = mortensen_precision_nm(photons, ACQ.background_photons, 100.0, 100.0, ACQ.read_noise_e) / 100.0
    # bias: each axis mean within 4 standard errors of 0
    assert np.all(np.abs(errors.mean(axis=0)) < 4 * crlb_px / math.sqrt(n))
    # RMSE per axis near the CRLB: the sampling error of an RMSE over 2n values is ~1/sqrt(4n) = 1.8 %
    rmse = math.sqrt(np.mean(errors**2))
    assert 0.9 < rmse / crlb_px < 1.15
    # the reported precision is the formula at the fitted values: close to the true CRLB
    assert table["loc_precision_nm"].median() / 100.0 == pytest.approx(crlb_px, rel=0.06)
    # photons and background recovered (relative SE of the mean photons is below 1 %); at 250
    # photons the MLE with a free width overestimates N by ~2 % (finite-sample bias, N-width coupling)
    assert table["photons"].mean() == pytest.approx(photons, rel=0.02 if photons >= 1000 else 0.04)
    assert table["background"].mean() == pytest.approx(ACQ.background_photons, rel=0.03)
    assert table["sigma_px"].mean() == pytest.approx(1.0, rel=0.02)


def test_fitted_width_follows_a_wider_spot_and_camera_settings():
    rng = np.random.default_rng(3)
    acq = ACQ.replace(gain_adu_per_e=2.0, offset_adu=500.0)
    truth = spot_grid(rng)
    frame = camera(render((192, 192), truth, 2000.0, acq=acq.replace(psf_sigma_nm=150.0)), acq, rng)
    table = localize_frame(frame, np.rint(truth).astype(int), acq)
    assert table["fit_ok"].all()
    assert table["sigma_px"].median() == pytest.approx(1.5, rel=0.03)
    assert table["photons"].median() == pytest.approx(2000.0, rel=0.03)  # ADU -> photons via gain
    assert table["background"].median() == pytest.approx(10.0, rel=0.1)
    assert np.abs(table[["y_px", "x_px"]].to_numpy() - truth).max() < 0.2


def test_spots_on_the_border_are_localized():
    rng = np.random.default_rng(4)
    truth = np.array([[0.3, 20.2], [31.0, 10.4], [15.6, 0.0], [0.0, 0.0], [31.0, 31.0], [12.2, 31.4]])
    errors = []
    for _ in range(20):
        frame = camera(render((32, 32), truth, 1500.0), ACQ, rng)
        table = localize_frame(frame, np.clip(np.rint(truth), 0, 31).astype(int), ACQ)
        assert table["fit_ok"].all()
        errors.append(table[["y_px", "x_px"]].to_numpy() - truth)
    errors = np.stack(errors)  # (20, 6, 2)
    # half (on an edge) or three quarters (in a corner) of the spot is cut off: precision is
    # worse than in the interior (0.25 px instead of 0.04 px in the corner), but no bias
    spread = errors.std(axis=0)
    assert np.all(spread < 0.35)
    assert np.all(np.abs(errors.mean(axis=0)) < 4 * spread / math.sqrt(len(errors)) + 0.01)


def test_bad_spots_fall_back_without_crashing():
    rng = np.random.default_rng(5)
    frame = camera(np.zeros((40, 40)), ACQ, rng)
    frame[20, 20] = 5000  # a hot pixel: far narrower than the PSF
    peaks = np.array([[20, 20], [5, 5], [0, 39]])  # hot pixel, pure background, corner background
    table = localize_frame(frame, peaks, ACQ)
    assert list(table.columns) == list(LOCALIZATION_COLUMNS)
    assert len(table) == 3
    assert np.isfinite(table[["y_px", "x_px", "photons", "background", "sigma_px"]].to_numpy()).all()
    assert not table.loc[0, "fit_ok"]  # width pinned at its lower bound
    # fallback positions stay in the fit window around their peak
    assert np.all(np.abs(table[["y_px", "x_px"]].to_numpy() - peaks) <= 3.0)
    # a frame of zeros (no photons at all) does not crash either
    zeros = localize_frame(np.full((16, 16), 100, dtype=np.uint16), np.array([[8, 8]]), ACQ)
    assert np.isfinite(zeros[["y_px", "x_px"]].to_numpy()).all()


def test_detect_then_localize_pipeline_order_and_empty_input():
    rng = np.random.default_rng(6)
    truth = spot_grid(rng, shape=(64, 64), spacing=16)
    frame = camera(render((64, 64), truth, 1000.0), ACQ, rng)
    peaks = detect_frame(frame, ACQ)
    table = localize_frame(frame, peaks, ACQ)
    assert len(table) == len(peaks)
    assert np.all(np.abs(table[["y_px", "x_px"]].to_numpy() - peaks) <= 1.0)  # row k belongs to peak k
    empty = localize_frame(frame, np.zeros((0, 2), dtype=int), ACQ)
    assert len(empty) == 0 and list(empty.columns) == list(LOCALIZATION_COLUMNS)
    assert empty["fit_ok"].dtype == bool


def test_bad_inputs_are_refused():
    frame = np.full((16, 16), 100.0)
    with pytest.raises(TrackingInputError, match="inside"):
        localize_frame(frame, np.array([[16, 3]]), ACQ)
    with pytest.raises(TrackingInputError, match=r"\(K, 2\)"):
        localize_frame(frame, np.array([1, 2, 3]), ACQ)
    frame[2, 2] = np.nan
    with pytest.raises(TrackingInputError, match="NaN"):
        localize_frame(frame, np.array([[8, 8]]), ACQ)


def test_neighbour_refit_removes_the_pull_of_a_close_spot():
    # pairs 3.5 px apart (inside each other's 7 x 7 window), the second twice as bright
    rng = np.random.default_rng(8)
    base = spot_grid(rng, spacing=16)
    second = base + np.array([0.0, 3.5])
    truth = np.concatenate([base, second])
    photons = np.concatenate([np.full(len(base), 1000.0), np.full(len(base), 2000.0)])
    frame = camera(render((192, 192), truth, photons), ACQ, rng)
    peaks = np.rint(truth).astype(int)
    errors = {}
    for neighbours in (False, True):
        table = localize_frame(frame, peaks, ACQ, neighbours=neighbours)
        errors[neighbours] = table[["y_px", "x_px"]].to_numpy()[: len(base)] - base
    # without the correction the dim spot's fit slides onto the bright one (+x)
    assert errors[False][:, 1].mean() > 0.3
    # with it, the pair is resolved: no systematic pull, errors cut several-fold
    assert abs(errors[True][:, 1].mean()) < 0.05
    assert np.sqrt(np.mean(errors[True] ** 2)) < 0.3 * np.sqrt(np.mean(errors[False] ** 2))


# ------------------------------------------------------- second pass over wide spots
def _streaks(rng, centres, D_um2_s, acq=ACQ):
    """Sub-step positions ``(M, S, 2)`` of Brownian particles whose exposure mean is ``centres``."""
    steps = rng.normal(0.0, math.sqrt(2 * D_um2_s * acq.substep_interval_s) / acq.pixel_size_um,
                       (len(centres), acq.substeps_per_frame, 2))
    path = np.cumsum(steps, axis=1)
    return centres[:, None, :] + path - path.mean(axis=1, keepdims=True)


def test_isolated_spots_are_unchanged_by_the_second_pass():
    # isolated static spots and isolated fast streaks (D = 2 um^2/s, wide fits that are
    # tested): every localization with no other one within 3 x the window half-width
    # (9 px) must be the same, bit for bit, with and without the second pass. (A streak
    # the DoG sees as two maxima ~4 px apart is not isolated: its two localizations are
    # merged into one, as intended.)
    from scipy.spatial import cKDTree

    from napari_spt_diffusion.tracking import detect_and_localize

    rng = np.random.default_rng(31)
    frames = []
    for _ in range(10):
        sites = spot_grid(rng, spacing=16)
        fast = np.arange(len(sites)) % 3 == 0
        positions = np.concatenate([np.repeat(sites[~fast, None, :], ACQ.substeps_per_frame, axis=1),
                                    _streaks(rng, sites[fast], 2.0)])
        frames.append(camera(expected_photons(positions, (192, 192), ACQ, 1000.0).sum(axis=0), ACQ, rng))
    movie = np.stack(frames)
    before = detect_and_localize(movie, ACQ, overlaps=False)
    after = detect_and_localize(movie, ACQ)
    assert after.attrs["n_split"] == 0
    assert len(after) == len(before) - after.attrs["n_merged"]
    isolated = np.zeros(len(before), dtype=bool)
    for _, rows in before.groupby("frame").indices.items():
        positions = before[["y_px", "x_px"]].to_numpy()[rows]
        distance, _ = cKDTree(positions).query(positions, k=2)
        isolated[rows] = distance[:, 1] > 9.0
    assert isolated.mean() > 0.95
    # merged rows are never isolated ones, so the isolated rows keep their order
    same = after.merge(before[isolated], how="inner")
    np.testing.assert_array_equal(same.to_numpy(), before[isolated].to_numpy())


def test_slow_spot_next_to_a_passing_streak_is_localized_better():
    # a static spot with a fast particle's streak (D = 3 um^2/s) passing 3.5 - 5.5 px away:
    # the second pass separates the two and fits the slow spot with the streak's light known
    from napari_spt_diffusion.tracking import detect_and_localize

    rng = np.random.default_rng(32)
    frames, slow_truth = [], []
    for _ in range(12):
        slow = spot_grid(rng, spacing=24)
        angle = rng.uniform(0.0, 2 * np.pi, len(slow))
        centres = slow + rng.uniform(3.5, 5.5, (len(slow), 1)) * np.column_stack([np.sin(angle), np.cos(angle)])
        positions = np.concatenate([np.repeat(slow[:, None, :], ACQ.substeps_per_frame, axis=1),
                                    _streaks(rng, centres, 3.0)])
        frames.append(camera(expected_photons(positions, (192, 192), ACQ, 1000.0).sum(axis=0), ACQ, rng))
        slow_truth.append(slow)
    movie = np.stack(frames)
    rmse, matched = {}, {}
    for overlaps in (False, True):
        table = detect_and_localize(movie, ACQ, overlaps=overlaps)
        errors = []
        for t, truth in enumerate(slow_truth):
            fitted = table.loc[table["frame"] == t, ["y_px", "x_px"]].to_numpy()
            distance = np.linalg.norm(truth[:, None, :] - fitted[None, :, :], axis=-1)
            nearest = distance.argmin(axis=1)
            close = distance.min(axis=1) <= 1.0
            errors.append(fitted[nearest[close]] - truth[close])
        errors = np.concatenate(errors)
        rmse[overlaps] = float(np.sqrt(np.mean(errors**2)))
        matched[overlaps] = len(errors)
    assert matched[True] >= matched[False]
    assert rmse[True] < 0.7 * rmse[False]
