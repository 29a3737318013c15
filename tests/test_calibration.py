"""Calibration from the movie: a known camera and PSF are recovered (our simulator and the
independent foreign renderer)."""

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.calibration import CalibrationError, calibrate_movie
from napari_spt_diffusion.validation.foreign_renderer import (
    ForeignCamera,
    ForeignMotion,
    ForeignOptics,
    ForeignScene,
    render_foreign_movie,
)


@pytest.fixture(scope="module")
def foreign_movie():
    scene = ForeignScene(shape_yx=(96, 96), n_frames=60, n_particles=16, photons=3000.0, background=600.0)
    return render_foreign_movie(scene, ForeignOptics(na=1.45, wavelength_nm=520.0), ForeignCamera(),
                                ForeignMotion(kind="free"), 4101)


def test_recovers_an_unknown_scmos_camera_and_airy_psf(foreign_movie):
    truth = foreign_movie.acquisition
    cal = calibrate_movie(foreign_movie.movie, Acquisition(read_noise_e=1.6))
    v = cal.values
    assert v["psf_sigma_nm"].value == pytest.approx(truth["psf_sigma_equivalent_nm"], rel=0.05)
    assert v["gain_adu_per_e"].value == pytest.approx(truth["gain_map_mean"], rel=0.15)
    # the background follows the gain (b = k2 / g^2 - r^2): twice its relative error
    assert v["background_photons"].value == pytest.approx(truth["background_photons"], rel=0.3)
    assert v["signal_photons"].value == pytest.approx(truth["signal_photons"], rel=0.15)
    # the shape check reads the mean radial profile; on this small movie it is not decisive
    # (benchmarks/reports/foreign.md gives its record on the full protocol movies)
    assert cal.psf_shape in ("airy", "unknown") and np.isfinite(cal.psf_shape_evidence)
    assert all(m.uncertainty > 0 for m in v.values())
    used = cal.apply(Acquisition(), given={"psf_sigma_nm"})
    assert used.psf_sigma_nm == 100.0 and used.gain_adu_per_e == pytest.approx(v["gain_adu_per_e"].value)
    assert cal.to_dict()["psf_sigma_nm"]["unit"] == "nm"


def test_recovers_the_standard_camera_on_the_sample_movie():
    from napari_spt_diffusion.io import read_movie, sample_movie_path

    with read_movie(sample_movie_path()) as movie:
        cal = calibrate_movie(movie.data, Acquisition(), max_frames=80)
    v = cal.values
    assert v["psf_sigma_nm"].value == pytest.approx(100.0, rel=0.05)
    assert v["gain_adu_per_e"].value == pytest.approx(1.0, rel=0.1)
    assert v["offset_adu"].value == pytest.approx(100.0, abs=5.0)
    assert v["background_photons"].value == pytest.approx(10.0, rel=0.15)
    assert cal.psf_shape == "gaussian"


def test_given_values_are_not_measured_and_bad_input_is_refused():
    rng = np.random.default_rng(0)
    movie = rng.poisson(50, size=(4, 64, 64)).astype(np.uint16) + 100
    cal = calibrate_movie(movie, Acquisition(gain_adu_per_e=1.0, offset_adu=100.0),
                          given={"gain_adu_per_e", "offset_adu"})
    assert "gain_adu_per_e" not in cal.values
    assert cal.values["background_photons"].value == pytest.approx(50.0, rel=0.02)
    with pytest.raises(CalibrationError):
        calibrate_movie(movie[:1], Acquisition())


def test_long_movies_are_read_in_blocks_of_consecutive_frames():
    from napari_spt_diffusion.calibration import _chosen_frames, _successors

    chosen = _chosen_frames(1000, 120)
    assert len(chosen) == 120 and chosen[0] == 0 and chosen[-1] == 999
    nxt = _successors(chosen)
    # inside a block every read frame is followed by the next movie frame; blocks end with -1
    assert np.all(chosen[nxt[nxt >= 0]] == chosen[nxt >= 0] + 1)
    assert (nxt < 0).sum() == 10
    assert np.array_equal(_chosen_frames(50, 120), np.arange(50))


def test_dim_spots_do_not_bias_the_gain():
    """A dim movie (250 photons, PSF 1.5 px): a frame masked around its own detections at SNR 3
    (noise peaks among them) gave a gain 8 % low and a background 23 % high on this movie;
    masked around its neighbours' detections (and its own above SNR 8) both are within 5 / 10 %."""
    from napari_spt_diffusion.simulation import simulate_movie

    acq = Acquisition(psf_sigma_nm=150.0, signal_photons=250.0, background_photons=10.0, read_noise_e=1.5)
    sim = simulate_movie((128, 128), 100, acq, 5007, model="aniso", particles=30.0)
    cal = calibrate_movie(np.asarray(sim.movie), Acquisition(read_noise_e=1.5))
    assert cal.values["gain_adu_per_e"].value == pytest.approx(1.0, rel=0.05)
    assert cal.values["background_photons"].value == pytest.approx(10.0, rel=0.1)


def _camera_movie(kind: str):
    """A 128 x 128 x 100 movie of the independent renderer at 10 background photons/px: an EMCCD (mean
    multiplication 100, 0.1 ADU per electron: 10 ADU per photo-electron) or an sCMOS (20 ADU/e-)."""
    emccd = kind == "emccd"
    camera = ForeignCamera(kind=kind, gain_adu_per_e=0.1 if emccd else 20.0, em_gain=100.0 if emccd else 1.0,
                           read_noise_e=150.0 if emccd else 1.6, offset_adu=100.0)
    scene = ForeignScene(shape_yx=(128, 128), n_frames=100, n_particles=12, photons=2000.0, background=10.0)
    return render_foreign_movie(scene, ForeignOptics(na=1.45, wavelength_nm=520.0), camera, ForeignMotion(kind="free"),
                                4102)


def test_an_emccd_is_recognised_by_its_excess_noise_and_measured():
    movie = _camera_movie("emccd")
    cal = calibrate_movie(movie.movie, Acquisition())
    assert cal.camera == "emccd" and cal.excess_noise_factor == 2.0
    q, low, high = cal.excess_noise_statistic
    assert 1.0 < low < 1.25 < high < 1.5 and high - low <= 0.4
    v = cal.values
    assert v["gain_adu_per_e"].value == pytest.approx(10.0, rel=0.1)  # photo-electron to ADU, multiplication included
    assert v["background_photons"].value == pytest.approx(10.0, rel=0.15)
    assert v["offset_adu"].value == pytest.approx(100.0, abs=10.0)
    assert "EMCCD" in v["gain_adu_per_e"].method
    # read noise 150 multiplied electrons x 0.1 ADU = 15 ADU = 1.5 photo-electrons at 10 ADU per photo-electron
    assert v["read_noise_e"].value == pytest.approx(1.5, rel=0.5)
    # processed as the Poisson camera with the same noise: twice the gain, half the photons
    used = cal.apply(Acquisition())
    assert used.gain_adu_per_e == pytest.approx(2 * v["gain_adu_per_e"].value)
    assert used.background_photons == pytest.approx(v["background_photons"].value / 2)
    assert used.signal_photons == pytest.approx(v["signal_photons"].value / 2)
    assert used.read_noise_e == pytest.approx(v["read_noise_e"].value / 2)
    assert cal.to_dict()["camera"] == "emccd" and any("Poisson-equivalent" in n for n in cal.notes)
    # the spots' photons are counted with the measured EMCCD gain even where a gain is given: its uncertainty is
    # the signal's too
    assert "gain's uncertainty" in v["signal_photons"].method
    given = calibrate_movie(movie.movie, Acquisition(gain_adu_per_e=40.0), given={"gain_adu_per_e"})
    assert given.camera == "emccd" and "gain's uncertainty" in given.values["signal_photons"].method
    assert given.values["signal_photons"].value == pytest.approx(v["signal_photons"].value, rel=0.01)


def test_an_scmos_at_the_same_light_is_not_taken_for_an_emccd():
    movie = _camera_movie("scmos")
    cal = calibrate_movie(movie.movie, Acquisition(read_noise_e=1.6))
    assert cal.camera == "poisson" and cal.excess_noise_factor == 1.0
    assert cal.values["gain_adu_per_e"].value == pytest.approx(movie.acquisition["gain_map_mean"], rel=0.1)
    used = cal.apply(Acquisition())
    assert used.gain_adu_per_e == pytest.approx(cal.values["gain_adu_per_e"].value)
