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
