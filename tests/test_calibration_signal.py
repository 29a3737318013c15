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
    est = signal_estimate(_spots(photons), (1.15, 0.01), (), np.random.default_rng(0))
    assert est.note is None and est.bright_half_ratio < MULTIPLES_RATIO
    assert est.photons == pytest.approx(1.15 * bright_median, rel=1e-9)
    without_gain = est.uncertainty
    # every photon count moves with the gain, as 1 / gain: a gain of 1 +- 0.1 makes them 1 / 1.1 or 1 / 0.9 x
    factors = (1 / 1.1, 1 / 0.9)
    with_gain = signal_estimate(_spots(photons), (1.15, 0.01), factors, np.random.default_rng(0)).uncertainty
    assert with_gain == pytest.approx(np.hypot(without_gain, (1 / 0.9 - 1) * est.photons), rel=1e-6)
    # a gain that may be near 0 bounds nothing
    assert np.isnan(signal_estimate(_spots(photons), (1.15, 0.01), (0.5, np.inf), np.random.default_rng(0)).uncertainty)
    # the flux ratio's uncertainty, times the spots' median
    wider = signal_estimate(_spots(photons), (1.15, 0.10), (), np.random.default_rng(0)).uncertainty
    assert wider >= 0.10 * bright_median


def test_bright_spots_that_hold_pairs_fall_back_to_all_isolated_spots():
    rng = np.random.default_rng(4)
    singles = rng.normal(250.0, 50.0, 300)
    pairs = rng.normal(500.0, 70.0, 200)  # unresolved pairs: twice the photons, easier to detect
    photons = np.concatenate([singles, pairs])
    bright_median = float(np.median(photons[photons >= np.median(photons)]))
    est = signal_estimate(_spots(photons), (1.0, 0.0), (), np.random.default_rng(0))
    assert est.bright_half_ratio > MULTIPLES_RATIO
    assert est.photons == pytest.approx(float(np.median(photons)), rel=1e-9)
    assert est.note is not None and "pairs" in est.note and f"({bright_median:.0f})" in est.note
    # the uncertainty reaches half-way to the brighter half's median
    assert est.uncertainty >= 0.5 * (bright_median - est.photons)
    # under uneven or fading light the spots' brightness spreads with the light: the brighter half is kept, with
    # the same widened uncertainty
    uneven = signal_estimate(_spots(photons), (1.0, 0.0), (), np.random.default_rng(0), light_uneven=True)
    assert uneven.photons == pytest.approx(bright_median, rel=1e-9) and "uneven" in uneven.note
    assert uneven.uncertainty >= 0.5 * (bright_median - float(np.median(photons)))
    # an EMCCD's Poisson-equivalent photons are doubled back; the ratio does not change
    doubled = signal_estimate(_spots(photons), (1.0, 0.0), (), np.random.default_rng(0), photon_factor=2.0)
    assert doubled.photons == pytest.approx(2.0 * est.photons) and doubled.bright_half_ratio == pytest.approx(
        est.bright_half_ratio)


def test_no_spots_give_no_signal():
    est = signal_estimate(_spots(np.zeros(0)), (1.0, 0.0), (), np.random.default_rng(0))
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
    # the unknown shape takes the Gaussian's flux; the Airy profile's (about 1 here: the spots were divided by their
    # true photons, not by a Gaussian fit's) lies within two of its uncertainties
    assert abs(known.flux_ratio - unknown.flux_ratio) > 0.05
    assert unknown.flux_ratio_se == pytest.approx(0.5 * abs(known.flux_ratio - unknown.flux_ratio), rel=0.1)
    # the width, the two profiles' mean, needs no such part: their Gaussian-equivalent widths agree
    from napari_spt_diffusion.calibration_psf import _corrected, _fit, radial_sums

    sums, counts, centres, _ = radial_sums(photons, table, rows, int(np.ceil(5.0 * 1.3)) + 2)
    gauss, airy = (_corrected(_fit(sums, counts, centres, 1.3, shape=s)[2], 0.5) for s in ("gaussian", "airy"))
    assert abs(gauss - airy) < 0.01 * unknown.sigma_px


def test_the_calibrated_signal_carries_the_measured_gains_uncertainty():
    from napari_spt_diffusion.io import read_movie, sample_movie_path

    with read_movie(sample_movie_path()) as movie:
        cal = calibrate_movie(movie.data, Acquisition(), max_frames=80)
    gain, signal = cal.values["gain_adu_per_e"], cal.values["signal_photons"]
    assert signal.uncertainty >= 0.99 * signal.value * gain.uncertainty / gain.value
    assert "gain's uncertainty" in signal.method
    assert cal.to_dict()["bright_half_ratio"] == pytest.approx(cal.bright_half_ratio)
    assert 0.9 <= cal.bright_half_ratio < MULTIPLES_RATIO  # the sample movie's spots are single emitters


def test_a_read_noise_given_leaves_the_assumed_range_out_of_the_uncertainties():
    from napari_spt_diffusion.io import read_movie, sample_movie_path

    with read_movie(sample_movie_path()) as movie:
        assumed = calibrate_movie(movie.data, Acquisition(), max_frames=40)
        known = calibrate_movie(movie.data, Acquisition(), given={"read_noise_e"}, max_frames=40)
    a, k = assumed.values, known.values
    assert "assumed" in a["gain_adu_per_e"].method and "given" in k["gain_adu_per_e"].method
    # the same values; the 0-3 e- range of an assumed read noise dominated the gain's uncertainty
    for name in ("gain_adu_per_e", "offset_adu", "background_photons", "signal_photons"):
        assert k[name].value == pytest.approx(a[name].value, rel=1e-9)
    assert k["gain_adu_per_e"].uncertainty < 0.5 * a["gain_adu_per_e"].uncertainty
    assert k["background_photons"].uncertainty < 0.5 * a["background_photons"].uncertainty
    assert k["signal_photons"].uncertainty < a["signal_photons"].uncertainty
    # with the gain given too, the offset and background carry no read-noise range either
    gain = {"gain_adu_per_e", "read_noise_e"}
    with read_movie(sample_movie_path()) as movie:
        with_gain = calibrate_movie(movie.data, Acquisition(gain_adu_per_e=1.0), given=gain, max_frames=40)
        assumed_gain = calibrate_movie(movie.data, Acquisition(gain_adu_per_e=1.0), given={"gain_adu_per_e"},
                                       max_frames=40)
    # (what is left is the sampling's, a small part)
    assert 0.0 < with_gain.values["background_photons"].uncertainty < 0.5 * assumed_gain.values[
        "background_photons"].uncertainty


def test_track_passes_a_known_read_noise_to_the_calibration():
    from napari_spt_diffusion.calibration import CALIBRATED_FIELDS
    from napari_spt_diffusion.estimation_stage import prepare_acquisition
    from napari_spt_diffusion.io import read_movie, sample_movie_path

    with read_movie(sample_movie_path()) as movie:
        frames = movie.data[:40]
    known = prepare_acquisition(frames, Acquisition(), CALIBRATED_FIELDS, read_noise_known=True)
    assumed = prepare_acquisition(frames, Acquisition(), CALIBRATED_FIELDS)
    assert "given" in known.measured.values["gain_adu_per_e"].method
    assert "assumed" in assumed.measured.values["gain_adu_per_e"].method


def test_under_a_beam_that_fades_the_brighter_half_is_kept():
    """A Gaussian beam with its corners at 20 % and bleaching to half in 40 frames spread the spots' photons beyond
    the multiples' threshold: the signal stays the brighter half's, near the movie's mean photons per spot, the
    uncertainty reaching half-way to all spots'."""
    import dataclasses

    from napari_spt_diffusion.validation.foreign_illumination import ForeignIllumination
    from napari_spt_diffusion.validation.foreign_renderer import foreign_case, render_foreign_movie

    case = foreign_case("free_beam")
    light = ForeignIllumination(corner_relative=0.2, bleach_half_life_frames=40.0, flicker_sd=0.015)
    scene = dataclasses.replace(case["scene"], illumination=light)
    movie = render_foreign_movie(scene, case["optics"], case["camera"], case["motion"], case["seed"])
    told = Acquisition(pixel_size_nm=case["optics"].pixel_size_nm, frame_interval_s=case["scene"].frame_interval_s)
    cal = calibrate_movie(np.asarray(movie.movie), told)
    signal, truth = cal.values["signal_photons"], movie.acquisition["signal_photons_field_mean"]
    assert cal.bright_half_ratio > MULTIPLES_RATIO
    assert any("uneven or fades" in note for note in cal.notes)
    assert signal.value == pytest.approx(truth, rel=0.15)
    assert abs(signal.value - truth) < 2 * signal.uncertainty
    # the same with the camera given: the light is judged uneven from the background all the same
    camera = {"gain_adu_per_e": movie.acquisition["gain_map_mean"], "offset_adu": movie.acquisition["offset_map_mean"]}
    given = calibrate_movie(np.asarray(movie.movie), told.replace(**camera), given=set(camera))
    assert given.background_range is not None and any("uneven or fades" in note for note in given.notes)
    assert given.values["signal_photons"].value == pytest.approx(truth, rel=0.15)


def test_an_unbounded_uncertainty_is_said_so():
    from napari_spt_diffusion.calibration import Calibration, Measured

    cal = Calibration({"signal_photons": Measured(700.0, float("nan"), "photons/frame", "median")})
    assert cal.table()[0][2] == "not bounded"
    assert cal.to_dict()["signal_photons"]["uncertainty"] is None


def test_without_a_profile_the_signal_allows_for_an_airy_psfs_rings(monkeypatch):
    """Too few spots for a profile: the shape is unknown, the Gaussian fits' photons are the signal, and half of
    what an Airy PSF's rings would add (about 15 %) is in its uncertainty."""
    from napari_spt_diffusion import calibration
    from napari_spt_diffusion.calibration_psf import AIRY_FLUX_RATIO
    from napari_spt_diffusion.io import read_movie, sample_movie_path

    monkeypatch.setattr(calibration, "measure_psf", lambda *args, **kwargs: None)
    camera = {"gain_adu_per_e": 1.0, "offset_adu": 100.0}  # given: no gain in the uncertainty
    with read_movie(sample_movie_path()) as movie:
        cal = calibrate_movie(movie.data, Acquisition(**camera), given=set(camera), max_frames=40)
    signal = cal.values["signal_photons"]
    assert cal.psf_shape == "unknown" and "no profile" in signal.method
    assert signal.uncertainty >= 0.5 * (AIRY_FLUX_RATIO - 1.0) * signal.value
    assert "median blur-corrected Gaussian-fit width" in cal.values["psf_sigma_nm"].method


def test_the_gain_factors_hold_the_gains_own_uncertainty_and_the_fitting_cameras():
    from napari_spt_diffusion.calibration import Measured, _gain_factors

    gain = Measured(2.0, 0.9, "ADU/e-", "")
    factors, text = _gain_factors(gain, float("nan"), [2.0])
    assert 2.0 / 2.9 in factors and 2.0 / 1.1 in factors and "cameras that fit (2 ADU/e-)" in text
    factors, _ = _gain_factors(Measured(2.0, 1.5, "ADU/e-", ""), 0.2, [1.0])  # widened by the camera at 1
    assert max(factors) == pytest.approx(2.0) and min(factors) == pytest.approx(2.0 / 2.2)
    assert _gain_factors(Measured(2.0, 2.5, "ADU/e-", ""), float("nan"), [])[1].endswith("not bounded")
    factors, text = _gain_factors(Measured(2.0, float("nan"), "ADU/e-", ""), float("nan"), [])
    assert factors == (np.inf,) and "could not be measured" in text
    assert _gain_factors(None, 0.1, [1.0]) == ((), "")


def test_a_read_noise_given_that_does_not_fit_is_questioned_not_asked_for():
    rng = np.random.default_rng(8)
    shape = (60, 128, 128)  # a camera with 0.3 e- of read noise, told 3 e-
    movie = (100.0 + rng.poisson(10.0, shape) + rng.normal(0.0, 0.3, shape)).round().astype(np.uint16)
    known = calibrate_movie(movie, Acquisition(read_noise_e=3.0), given={"read_noise_e"})
    assumed = calibrate_movie(movie, Acquisition(read_noise_e=3.0))
    known_note = [n for n in known.notes if n.startswith("no sCMOS/CCD")]
    assumed_note = [n for n in assumed.notes if n.startswith("no sCMOS/CCD")]
    assert assumed_note and "assumed read noise" in assumed_note[0] and "give --read-noise-e" in assumed_note[0]
    assert known_note and "given read noise" in known_note[0] and "is the given read noise right?" in known_note[0]
    assert "give --read-noise-e" not in known_note[0]


def test_the_background_with_a_given_gain_is_not_blamed_for_uneven_light():
    """Under a beam the tiles' variances differ by the light, not by sampling: the background's uncertainty with the
    gain and read noise given stays its sampling's (a few hundredths of a photon here)."""
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[:96, :96]
    light = 10.0 * np.exp(-((yy - 48.0) ** 2 + (xx - 48.0) ** 2) / (2 * 40.0**2))
    movie = (100.0 + 2.0 * (rng.poisson(np.broadcast_to(light, (40, 96, 96))) + rng.normal(0, 1.5, (40, 96, 96))))
    acq = Acquisition(gain_adu_per_e=2.0, read_noise_e=1.5)
    cal = calibrate_movie(movie.round().astype(np.uint16), acq, given={"gain_adu_per_e", "read_noise_e"})
    background = cal.values["background_photons"]
    assert background.value == pytest.approx(float(light.mean()), rel=0.05)
    assert 0.0 < background.uncertainty < 0.1


def test_uncertainties_print_without_an_exponent():
    from napari_spt_diffusion.calibration import format_uncertainty

    assert format_uncertainty(183.19) == "180" and format_uncertainty(195.4) == "200"
    assert format_uncertainty(4.76) == "4.8" and format_uncertainty(0.3048) == "0.3"
    assert format_uncertainty(2.5e6) == "2.5e+06" and format_uncertainty(float("nan")) == "not bounded"
