"""The camera's background cumulants: the quantization step of the values and its correction, and the
choice between the two solutions for the gain."""

import numpy as np
import pytest

from napari_spt_diffusion.calibration_camera import (
    adu_step,
    gain_solution,
    poisson_camera,
    pooled_cumulants,
    tile_cumulants,
    without_rounding,
)


def _background_movie(gain: float, step: float = 1.0, seed: int = 0, background: float = 10.0,
                      read_noise_e: float = 1.5) -> np.ndarray:
    """100 x 128 x 128 frames of ``background`` photons/px, Gaussian read noise, offset 100 ADU, rounded
    to multiples of ``step`` ADU."""
    rng = np.random.default_rng(seed)
    shape = (100, 128, 128)
    adu = 100.0 + gain * (rng.poisson(background, shape) + rng.normal(0.0, read_noise_e, shape))
    return (np.round(adu / step) * step).astype(np.uint16).astype(np.float64)


def _camera(movie: np.ndarray, corrected: bool = True, read_noise_e: float = 1.5) -> tuple[float, float, float]:
    """The camera as calibrate_movie measures it, every pixel counted as background."""
    raw = tile_cumulants(movie, np.ones(movie.shape, dtype=bool))
    tiles = without_rounding(raw, adu_step(movie))[0] if corrected else raw
    return poisson_camera(tiles, read_noise_e)


def test_the_quantization_step_is_found():
    movie = _background_movie(1.0)
    assert adu_step(movie) == 1.0
    # a 12-bit sensor read out in the high bits of a 16-bit word counts in steps of 16
    assert adu_step(_background_movie(16.0, step=16.0)) == 16.0
    # processing that adds the same to every frame keeps the rounding: a fractional offset, a dark map
    assert adu_step(movie + 0.25) == 1.0
    dark = np.random.default_rng(1).normal(0.0, 3.0, movie.shape[1:])
    assert adu_step((movie - dark).astype(np.float32)) == 1.0
    # continuous data (here: two frames averaged) carry no step, nor does a constant movie
    assert adu_step(0.5 * (movie[:-1] + movie[1:]) + np.random.default_rng(2).uniform(0, 1, movie[1:].shape)) == 0.0
    assert adu_step(np.full((3, 8, 8), 7.0)) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_rounding_no_longer_reads_as_read_noise(seed):
    """At 0.4 ADU per photo-electron the rounding's variance (1/12 ADU^2) is 4 % of the background's:
    read as read noise it lowered the gain by about 8 % and raised the background by about 28 %."""
    movie = _background_movie(0.4, seed=seed)
    gain, offset, background = _camera(movie)
    assert gain == pytest.approx(0.4, rel=0.04)
    assert background == pytest.approx(10.0, rel=0.1)
    assert offset == pytest.approx(100.0, abs=0.5)
    raw_gain, _, raw_background = _camera(movie, corrected=False)
    assert raw_gain < 0.38 and raw_background > 12.0  # what the correction removes


def test_a_coarse_step_is_taken_out_too():
    """Steps of 16 ADU at 6 ADU per photo-electron: the rounding's 21 ADU^2 is 4 % of the background's."""
    movie = _background_movie(6.0, step=16.0, seed=3)
    gain, _, background = _camera(movie)
    assert gain == pytest.approx(6.0, rel=0.05) and background == pytest.approx(10.0, rel=0.12)
    assert _camera(movie, corrected=False)[0] < 0.95 * 6.0


def test_the_fourth_cumulant_is_corrected_with_the_right_sign():
    tiles = tile_cumulants(_background_movie(1.0, seed=4), np.ones((100, 128, 128), dtype=bool))
    corrected, done = without_rounding(tiles, 1.0)
    assert done
    assert np.allclose(corrected[:, 2], tiles[:, 2] - 1.0 / 12.0)
    assert np.allclose(corrected[:, 4], tiles[:, 4] + 1.0 / 120.0)
    assert np.array_equal(corrected[:, 3], tiles[:, 3])  # the third cumulant is unchanged


def test_no_correction_where_the_noise_spans_too_few_steps():
    """At 0.1 ADU per photo-electron the background's noise spans a third of a step: the rounding is not
    a uniform error there, and nothing is taken out."""
    tiles = tile_cumulants(_background_movie(0.1, seed=5), np.ones((100, 128, 128), dtype=bool))
    corrected, done = without_rounding(tiles, 1.0)
    assert not done and np.array_equal(corrected, tiles)


@pytest.mark.parametrize("background", [4.5, 6.0, 10.0, 30.0])
def test_the_gain_is_found_at_and_above_two_read_variances(background):
    """With the read noise known, k2 and k3 leave two solutions, one with the background above 2 r^2 (4.5
    photons at 1.5 e-) and one below, which meet there: at 4.5 photons sampling noise often leaves none,
    and the meeting point is taken (it had given no gain at all)."""
    movie = _background_movie(1.0, seed=6, background=background)
    gain, _, measured_background = _camera(movie)
    assert gain == pytest.approx(1.0, rel=0.06)
    assert measured_background == pytest.approx(background, rel=0.35)


def test_below_two_read_variances_the_solution_above_is_still_taken():
    """A known limitation, measured in the calibration report's noise floor: at 2 photons/px the solution
    above 2 r^2 reads the gain low and the background high."""
    gain, _, background = _camera(_background_movie(1.0, seed=6, background=2.0))
    assert 0.4 < gain < 0.75 and background > 6.0


def test_gain_solution_says_how_it_chose():
    # g = 1, r = 1.5: b = 10 -> k2 = 12.25, k3 = 10 (two roots: 1.0, background above 2 r^2, and about 1.66)
    assert gain_solution(12.25, 10.0, 1.5) == (pytest.approx(1.0), "above 2 r^2")
    assert gain_solution(12.25, 10.0, 1.5, "below")[0] == pytest.approx(1.66, abs=0.01)
    # b = 1: k2 = 3.25, k3 = 1: the root below 2 r^2 is the right one
    assert gain_solution(3.25, 1.0, 1.5, "below") == (pytest.approx(1.0), "below 2 r^2")
    # no root: k2 a little low for b = 4.5 (k2 = 6.75 exactly at the meeting point)
    g, how = gain_solution(6.6, 4.5, 1.5)
    assert how == "where the solutions meet" and g == pytest.approx(np.sqrt(6.6 / (3 * 2.25)))
    assert gain_solution(6.6, 4.5, 1.5, meeting=False)[1] == "none"
    assert gain_solution(12.25, 10.0, 0.0) == (pytest.approx(10.0 / 12.25), "single")
    assert np.isnan(gain_solution(0.0, 1.0, 1.5)[0])


def test_calibrate_movie_takes_the_step_out_of_the_camera():
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import calibrate_movie

    movie = _background_movie(0.4, seed=2).astype(np.uint16)
    cal = calibrate_movie(movie, Acquisition(read_noise_e=1.5))
    values = cal.values
    assert cal.adu_step == 1.0 and cal.to_dict()["adu_step"] == 1.0
    # no spot, but noise peaks above the mask's SNR of 3 mask their neighbourhoods in the frames around them
    assert 0.3 < cal.background_share < 1.0
    assert cal.to_dict()["background_share"] == pytest.approx(cal.background_share)
    assert values["gain_adu_per_e"].value == pytest.approx(0.4, rel=0.04)
    assert values["background_photons"].value == pytest.approx(10.0, rel=0.1)


def test_calibrate_movie_notes_a_background_near_two_read_variances_and_too_coarse_steps():
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import calibrate_movie

    near = calibrate_movie(_background_movie(1.0, seed=7, background=4.5).astype(np.uint16),
                           Acquisition(read_noise_e=1.5))
    assert near.camera == "poisson" and near.values["gain_adu_per_e"].value == pytest.approx(1.0, rel=0.1)
    assert any("twice the square of the assumed read noise" in n for n in near.notes)
    # below 2 r^2 the solution above is taken (wrong), and a note says the noise points below
    low = calibrate_movie(_background_movie(1.0, seed=8, background=1.5).astype(np.uint16),
                          Acquisition(read_noise_e=1.5))
    assert low.values["gain_adu_per_e"].value < 0.75
    assert any("also fits a background below" in n for n in low.notes)
    # at 10 photons/px no such note
    usual = calibrate_movie(_background_movie(1.0, seed=7).astype(np.uint16), Acquisition(read_noise_e=1.5))
    assert not any("twice the square" in n for n in usual.notes)
    coarse = calibrate_movie(_background_movie(0.1, seed=8).astype(np.uint16), Acquisition(read_noise_e=1.5))
    assert any("too few for the camera's gain" in n for n in coarse.notes)


def test_frames_without_pixels_are_refused_in_one_line():
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import CalibrationError, calibrate_movie

    with pytest.raises(CalibrationError, match="frames with pixels"):
        calibrate_movie(np.zeros((5, 0, 8), dtype=np.uint16), Acquisition())


def test_pooled_cumulants_weigh_tiles_by_their_samples():
    tiles = np.array([[10.0, 1, 2, 3, 4, 5], [30.0, 5, 6, 7, 8, 9]])
    assert pooled_cumulants(tiles) == pytest.approx((4.0, 5.0, 6.0, 7.0, 8.0))


def _bleaching_movie(half_life_frames: float | None, seed: int = 0, background: float = 100.0, gain: float = 2.0,
                     shape: tuple[int, int, int] = (60, 64, 64), read_noise_e: float = 1.5) -> np.ndarray:
    """Background-only frames (offset 100 ADU) whose background fades as 2^(-t / half_life_frames) (steady for
    None), rounded to whole ADU."""
    rng = np.random.default_rng(seed)
    fade = np.ones(shape[0]) if half_life_frames is None else 0.5 ** (np.arange(shape[0]) / half_life_frames)
    electrons = rng.poisson(background * fade[:, None, None] * np.ones(shape)) + rng.normal(0.0, read_noise_e, shape)
    return np.round(100.0 + gain * electrons)


def _successors(n: int) -> np.ndarray:
    return np.r_[np.arange(1, n), -1]


def test_trend_free_cumulants_hold_under_bleaching_where_the_pixel_means_fail():
    from napari_spt_diffusion.calibration_camera import trend_free_cumulants

    movie = _bleaching_movie(60.0)  # the background halves over the 60 frames: 100 -> 50 photons/px
    mask = np.ones(movie.shape, dtype=bool)
    free, share = trend_free_cumulants(movie, mask, _successors(len(movie)))
    mean_background = 100.0 * np.mean(0.5 ** (np.arange(60) / 60.0))
    gain, offset, background = poisson_camera(without_rounding(free, 1.0)[0], 1.5)
    assert gain == pytest.approx(2.0, rel=0.08)
    assert background == pytest.approx(mean_background, rel=0.16)
    assert offset == pytest.approx(100.0, abs=0.1 * 2.0 * mean_background)
    # the fade is 70 % of the background's variance over the movie (the noise: 4 (75 + 2.25) ADU^2); each
    # pixel's mean leaves it in
    assert 0.6 < share < 0.8
    plain_gain, _, plain_background = poisson_camera(without_rounding(tile_cumulants(movie, mask), 1.0)[0], 1.5)
    assert plain_gain > 1.5 * 2.0 or plain_background < 0.5 * mean_background


@pytest.mark.parametrize("seed", [0, 1])
def test_trend_free_cumulants_match_the_pixel_means_on_a_steady_background(seed):
    """Without slow changes the share is nil, and k2 ... k4 are those of a Poisson camera (``g^j b``) after the
    filter's factors are divided out; values the mask leaves out (here holding spot light) are not used."""
    from napari_spt_diffusion.calibration_camera import trend_free_cumulants

    movie = _bleaching_movie(None, seed=seed, background=2.0, gain=1.0, shape=(60, 64, 64), read_noise_e=0.0)
    mask = np.random.default_rng(seed).random(movie.shape) > 0.1
    movie[~mask] += 50.0  # spot light where the mask says so: neither a sample nor a neighbour
    free, share = trend_free_cumulants(movie, mask, _successors(len(movie)))
    assert abs(share) < 0.005
    _, k2, k3, k4, _ = pooled_cumulants(free)  # whole photo-electrons at 1 ADU each: nothing was rounded
    assert k2 == pytest.approx(2.0, rel=0.02)
    assert k3 == pytest.approx(2.0, rel=0.06)
    assert k4 == pytest.approx(2.0, rel=0.2)
    assert free[:, 0].sum() < mask.sum()  # values without all six neighbours in the background are left out


def test_trend_free_cumulants_use_consecutive_frames_only():
    """Frames read in separate blocks (a long movie sampled): no value takes neighbours across a gap, so a jump
    of the background between blocks does not count as noise."""
    from napari_spt_diffusion.calibration_camera import trend_free_cumulants

    movie = _bleaching_movie(None, background=20.0, gain=1.0, shape=(24, 64, 64))
    movie[12:] += 500.0  # the second block was read much later, at another lamp power
    successor = _successors(24)
    successor[11] = -1  # frames 0-11 and 12-23 are two blocks
    free, share = trend_free_cumulants(movie, np.ones(movie.shape, dtype=bool), successor)
    assert free[:, 0].sum() == 2 * 4 * 64 * 64  # frames 4-7 of each block have frames 2-4 away on each side
    assert pooled_cumulants(free)[1] == pytest.approx(20.0 + 1.5**2 + 1 / 12, rel=0.05)
    assert share > 0.9  # the jump dominates each pixel's variance about its mean over the movie


def test_calibrate_movie_measures_a_bleaching_camera_and_says_so():
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import calibrate_movie

    # 20 -> 10 photons/px over the movie; without a spot the background mask keeps under a tenth of the
    # pixel-frames here (noise peaks on the provisional photon scale), so the gain is good to about 15 %
    cal = calibrate_movie(_bleaching_movie(60.0, seed=7, background=20.0, shape=(60, 128, 128)).astype(np.uint16),
                          Acquisition(read_noise_e=1.5))
    assert cal.values["gain_adu_per_e"].value == pytest.approx(2.0, rel=0.15)
    assert any("changes slowly over the movie" in n for n in cal.notes)
    assert cal.to_dict()["slow_change_share"] == pytest.approx(cal.slow_change_share) and cal.slow_change_share > 0.1
    steady = calibrate_movie(_bleaching_movie(None, seed=7, background=20.0, shape=(60, 128, 128)).astype(np.uint16),
                             Acquisition(read_noise_e=1.5))
    assert not any("changes slowly" in n for n in steady.notes) and abs(steady.slow_change_share) < 0.005


def test_an_uneven_background_is_given_as_the_field_mean_with_a_note():
    """Steady light rising from 10 to 30 photons/px across the field: the background is the field's mean
    (20), not the mean of the background values, and a note gives the tiles' range; steady light, no note."""
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import calibrate_movie
    from napari_spt_diffusion.calibration_camera import field_background

    rng = np.random.default_rng(11)
    shape = (60, 128, 128)
    level = 10.0 + 20.0 * np.arange(128) / 127.0  # photons/px along x; mean 20
    electrons = rng.poisson(np.broadcast_to(level, shape)) + rng.normal(0.0, 1.5, shape)
    movie = np.round(100.0 + 2.0 * electrons).astype(np.uint16)
    cal = calibrate_movie(movie, Acquisition(read_noise_e=1.5))
    assert cal.values["gain_adu_per_e"].value == pytest.approx(2.0, rel=0.1)
    assert cal.values["background_photons"].value == pytest.approx(20.0, rel=0.15)
    low, high = cal.background_range
    assert 10.0 < low < 16.0 and 24.0 < high < 30.0
    assert any("varies over the field" in n for n in cal.notes)
    assert cal.to_dict()["background_range"] == pytest.approx([low, high])
    # the tiles weighted alike, whatever their number of background values
    tiles = np.array([[100.0, 120.0, 1, 1, 1, 1], [900.0, 140.0, 1, 1, 1, 1]])
    assert field_background(tiles, gain=2.0, offset=100.0) == pytest.approx(15.0)
    steady = calibrate_movie(_bleaching_movie(None, seed=3, background=20.0, shape=(60, 128, 128)).astype(np.uint16),
                             Acquisition(read_noise_e=1.5))
    assert not any("varies over the field" in n for n in steady.notes)


def test_an_emccd_background_fits_no_poisson_camera_with_the_assumed_read_noise():
    from napari_spt_diffusion.calibration_camera import poisson_misfit

    g, b = 15.0, 20.0  # an EMCCD: k2 = 2 g^2 b, k3 = 6 g^3 b; no Poisson camera with 1.5 e- fits below 68 photons/px
    assert poisson_misfit(2 * g**2 * b, 6 * g**3 * b, 1.5) == pytest.approx(1 - (2 / 9) * np.sqrt(b / 3.375))
    assert poisson_misfit(2 * g**2 * 80.0, 6 * g**3 * 80.0, 1.5) < 0
    # a Poisson camera with that read noise fits (its cubic's minimum is below zero), and touches at b = 2 r^2
    assert poisson_misfit(g**2 * (b + 2.25), g**3 * b, 1.5) < 0
    assert poisson_misfit(g**2 * (4.5 + 2.25), g**3 * 4.5, 1.5) == pytest.approx(0.0, abs=1e-12)
    assert poisson_misfit(g**2 * (b + 2.25), g**3 * b, 0.0) == -np.inf


def test_calibrate_movie_says_which_two_cameras_fit_an_emccd_background():
    """An EMCCD at 20 photons/px (too much light for its excess noise to show in k5): the note gives the
    EMCCD's gain (true 15 ADU per photo-electron) and the Poisson camera's, and the gain's uncertainty covers
    the Poisson-equivalent gain the tool would need (30)."""
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import calibrate_movie

    rng = np.random.default_rng(5)
    shape = (60, 128, 128)
    electrons = rng.poisson(20.0, shape)
    multiplied = np.where(electrons > 0, rng.gamma(np.maximum(electrons, 1), 300.0), 0.0)
    movie = np.round(500.0 + 0.05 * (multiplied + rng.normal(0.0, 60.0, shape))).astype(np.uint16)
    cal = calibrate_movie(movie, Acquisition(read_noise_e=1.5))
    note = next(n for n in cal.notes if n.startswith("no sCMOS/CCD with the assumed read noise"))
    emccd_gain = float(note.split("an EMCCD of about ")[1].split(" ")[0])
    assert emccd_gain == pytest.approx(15.0, rel=0.1)
    assert not any("twice the square of the assumed read noise" in n for n in cal.notes)
    gain = cal.values["gain_adu_per_e"]
    assert abs(gain.value - 30.0) < 1.5 * gain.uncertainty
    steady = calibrate_movie(_bleaching_movie(None, seed=3, background=20.0, shape=(60, 128, 128)).astype(np.uint16),
                             Acquisition(read_noise_e=1.5))
    assert not any("no sCMOS/CCD" in n for n in steady.notes)


def test_a_bleaching_emccd_is_still_recognised():
    """An EMCCD (10 ADU per photo-electron, 10 background photons/px fading to 7 over 100 frames, spots of 1,000
    photons; the foreign renderer): slow changes switch the camera to the trend-free values, whose excess-noise
    statistic is too noisy alone; the EMCCD is recognised from all the values and measured from the trend-free
    ones (a review found it read as a Poisson camera there, with the gain and signal far off)."""
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import calibrate_movie
    from napari_spt_diffusion.validation import (
        ForeignCamera,
        ForeignIllumination,
        ForeignMotion,
        ForeignOptics,
        ForeignScene,
        render_foreign_movie,
    )

    camera = ForeignCamera(kind="emccd", gain_adu_per_e=0.1, offset_adu=100.0, read_noise_e=150.0, em_gain=100.0)
    scene = ForeignScene(shape_yx=(128, 128), n_frames=100, n_particles=30, photons=1000.0, background=10.0,
                         illumination=ForeignIllumination(bleach_half_life_frames=200.0))
    optics = ForeignOptics(na=1.26, wavelength_nm=600.0)  # sigma 1 px
    movie = render_foreign_movie(scene, optics, camera, ForeignMotion(kind="free"), 8000)
    cal = calibrate_movie(movie.movie, Acquisition(read_noise_e=1.5))
    assert any("changes slowly" in n for n in cal.notes)
    assert cal.camera == "emccd"
    assert cal.values["gain_adu_per_e"].value == pytest.approx(10.0, rel=0.06)
    # (the signal is the median of the bright spots, brighter early in the movie than the movie's mean)
    assert cal.values["signal_photons"].value == pytest.approx(movie.acquisition["signal_photons_field_mean"], rel=0.15)


def test_a_bleaching_background_only_emccd_is_measured_from_all_its_values():
    """Without spots the mask keeps few values with three background frames on each side, and an EMCCD's gain
    (k4 / 4 k3) from those is noisier than the 3 % slow change moves it: the camera is measured as usual."""
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import calibrate_movie

    rng = np.random.default_rng(6)
    shape = (100, 128, 128)
    fade = 0.5 ** (np.arange(shape[0]) / 200.0)
    electrons = rng.poisson(10.0 * fade[:, None, None] * np.ones(shape))
    multiplied = np.where(electrons > 0, rng.gamma(np.maximum(electrons, 1), 300.0), 0.0)
    movie = np.round(500.0 + 0.05 * (multiplied + rng.normal(0.0, 60.0, shape))).astype(np.uint16)
    cal = calibrate_movie(movie, Acquisition(read_noise_e=1.5))
    assert 0.02 < cal.slow_change_share < 0.05
    assert not any("measured from each pixel's departures" in n for n in cal.notes)
    assert any("too few background values" in n for n in cal.notes)  # the user is told all the same
    assert cal.camera == "emccd"
    assert cal.values["gain_adu_per_e"].value == pytest.approx(15.0, rel=0.08)


def test_trend_free_k_statistics_hold_for_few_values_per_tile_and_frame():
    """Twelve background pixels per tile: the k-statistics' small-sample factors and the filter's factors (with
    their signs) are what make k2 and k3 right; Poisson light of 3 photons/px at 1 ADU each, nothing rounded."""
    from napari_spt_diffusion.calibration_camera import trend_free_cumulants

    rng = np.random.default_rng(9)
    movie = rng.poisson(3.0, (200, 128, 128)).astype(np.float64) + 100.0
    successor = _successors(len(movie))
    # every value: k3 to about 0.3 % (the filter's factor for k3 is 1 - 1/36; with the wrong sign it reads 5 % high)
    _, k2, k3, _, _ = pooled_cumulants(trend_free_cumulants(movie, np.ones(movie.shape, dtype=bool), successor)[0])
    assert k2 == pytest.approx(3.0, rel=0.005) and k3 == pytest.approx(3.0, rel=0.015)
    mask = np.zeros(movie.shape, dtype=bool)
    mask[:, 2:14:4, 1:15:4] = True  # 3 x 4 = 12 pixels in every 16 x 16 tile, background in every frame
    mask = np.tile(mask[:, :16, :16], (1, 8, 8))
    free, _ = trend_free_cumulants(movie, mask, successor)
    _, k2, k3, _, _ = pooled_cumulants(free)  # without the small-sample factors: k2 0.92 x, k3 0.76 x
    assert k2 == pytest.approx(3.0, rel=0.03)
    assert k3 == pytest.approx(3.0, rel=0.12)


def test_the_misfit_note_leaves_out_an_emccd_the_skew_rules_out():
    """An sCMOS with 0.7 e- of read noise at 10 photons/px, 1.5 e- assumed: no camera with that read noise fits,
    and k4 k2 / k3^2 (1 + r^2 / b, about 1.05) lies surely under an EMCCD's 4/3: the note names the sCMOS only
    (about 2 ADU/e-, the truth) and the gain's uncertainty covers it, not a twice smaller EMCCD gain."""
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import calibrate_movie

    rng = np.random.default_rng(1)
    shape = (100, 128, 128)
    movie = np.round(100.0 + 2.0 * (rng.poisson(10.0, shape) + rng.normal(0.0, 0.7, shape))).astype(np.uint16)
    cal = calibrate_movie(movie, Acquisition(read_noise_e=1.5))
    note = next(n for n in cal.notes if n.startswith("no sCMOS/CCD with the assumed read noise"))
    assert "It fits an sCMOS/CCD of about" in note and "EMCCD of about" not in note
    named = float(note.split("It fits an sCMOS/CCD of about ")[1].split(" ")[0])
    assert named == pytest.approx(2.0, rel=0.15)
    gain = cal.values["gain_adu_per_e"]
    assert abs(gain.value - 2.0) < gain.uncertainty < 1.0


def test_on_a_small_fading_movie_the_fade_is_not_taken_for_the_camera():
    """A small background-only movie fading by half: the skew is the fade's, not the camera's, so no camera is
    suggested from it; the note on slow changes asks for the camera instead."""
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import calibrate_movie

    cal = calibrate_movie(_bleaching_movie(100.0, seed=2, background=8.0, shape=(100, 48, 48)).astype(np.uint16),
                          Acquisition(read_noise_e=1.5))
    assert any("too few background values" in n for n in cal.notes)
    assert not any(n.startswith("no sCMOS/CCD") for n in cal.notes)


def test_the_misfit_candidates_are_finite_and_a_legacy_generator_gets_a_child():
    import math

    from napari_spt_diffusion.calibration import _child, _misfit_candidates
    from napari_spt_diffusion.calibration_camera import SkewReading

    both = SkewReading(0.1, 1.35, 1.25, 1.45, emccd_gain=15.0, poisson_gain=60.0, poisson_read_noise_e=1.1)
    assert _misfit_candidates(both) == [60.0, 30.0]
    scmos = both._replace(ratio=1.1, ratio_low=1.0, ratio_high=1.2)  # surely under an EMCCD's 4/3
    assert _misfit_candidates(scmos) == [60.0]
    assert _misfit_candidates(both._replace(emccd_gain=math.nan, poisson_gain=math.nan)) == []  # k4 <= 0
    legacy = np.random.Generator(np.random.RandomState(1)._bit_generator)  # cannot spawn
    assert isinstance(_child(legacy), np.random.Generator)
    assert isinstance(_child(np.random.default_rng(1)), np.random.Generator)


def test_a_given_gain_puts_offset_background_and_signal_on_its_scale():
    """Only the gain given (a camera's data sheet gives it, rarely the offset): the offset and background come from
    the background's mean and variance with that gain, and the spots' photons are counted with it, instead of the
    measured gain's (the run uses the given one: a measured offset of another gain put them on two scales)."""
    from napari_spt_diffusion import io as sio
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import calibrate_movie
    from napari_spt_diffusion.io import read_movie

    with read_movie(sio.sample_movie_path()) as sample:  # gain 1 ADU/e-, offset 100 ADU, 10 photons/px
        frames = 100.0 + 2.0 * (np.asarray(sample.data[:100], dtype=np.float64) - 100.0)  # at 2 ADU/e-
    given = calibrate_movie(frames, Acquisition(gain_adu_per_e=2.0), given={"gain_adu_per_e"})
    assert given.values["offset_adu"].value == pytest.approx(100.0, abs=1.0)
    assert given.values["background_photons"].value == pytest.approx(10.0, rel=0.05)
    assert "with the given gain" in given.values["offset_adu"].method
    assert given.values["signal_photons"].value == pytest.approx(1000.0, rel=0.03)
    # a wrong gain is the user's to give: offset and background follow it (half the gain, four times the photons
    # of variance: 4 x 10 + 3 x 2.25)
    half = calibrate_movie(frames, Acquisition(gain_adu_per_e=1.0), given={"gain_adu_per_e"})
    assert half.values["background_photons"].value == pytest.approx(4 * 10.0 + 3 * 2.25, rel=0.1)
