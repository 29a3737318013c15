"""PSF width, shape and flux from the mean radial profile (calibration_psf), on noise-free spots of
the independent renderer's scalar Airy PSF and of a pixel-integrated Gaussian, and end to end on a
bright Airy movie that a free-width Gaussian fit reads too narrow."""

import math

import numpy as np
import pytest
from scipy import special

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.calibration import calibrate_movie
from napari_spt_diffusion.calibration_psf import measure_psf
from napari_spt_diffusion.validation.foreign_renderer import (
    AiryPSF,
    ForeignCamera,
    ForeignMotion,
    ForeignOptics,
    ForeignScene,
    render_foreign_movie,
)

TOTAL_PHOTONS = 5000.0


def _gaussian_image(shape, y, x, sigma_px, photons):
    """Pixel-integrated isotropic Gaussian spots (photons per pixel)."""
    edges_y = np.arange(shape[0] + 1) - 0.5
    edges_x = np.arange(shape[1] + 1) - 0.5
    image = np.zeros(shape)
    for yy, xx in zip(y, x):
        cy = np.diff(special.ndtr((edges_y - yy) / sigma_px))
        cx = np.diff(special.ndtr((edges_x - xx) / sigma_px))
        image += photons * np.outer(cy, cx)
    return image


def _spot_table(y, x, frame):
    n = len(y)
    return {"frame": np.asarray(frame), "y_px": np.asarray(y, float), "x_px": np.asarray(x, float),
            "photons": np.full(n, TOTAL_PHOTONS), "background": np.zeros(n)}


def _spots_on_a_grid(rng, n_frames=4, per_row=3, spacing=30, margin=25):
    ys, xs, frames = [], [], []
    for t in range(n_frames):
        for i in range(per_row):
            for j in range(per_row):
                ys.append(margin + i * spacing + rng.uniform(-0.5, 0.5))
                xs.append(margin + j * spacing + rng.uniform(-0.5, 0.5))
                frames.append(t)
    return np.array(ys), np.array(xs), np.array(frames)


@pytest.mark.parametrize("sigma_px", [0.8, 1.6])
def test_an_airy_psf_reads_its_gaussian_equivalent_width_and_all_its_photons(sigma_px):
    rng = np.random.default_rng(1)
    wavelength_nm = 600.0
    optics = ForeignOptics(na=0.21 * wavelength_nm / (sigma_px * 100.0), wavelength_nm=wavelength_nm,
                           pixel_size_nm=100.0)
    psf = AiryPSF(optics)
    y, x, frame = _spots_on_a_grid(rng)
    shape = (2 * 25 + 2 * 30 + 1, 2 * 25 + 2 * 30 + 1)
    photons = np.stack([psf.expected_image(shape, y[frame == t], x[frame == t], TOTAL_PHOTONS)
                        for t in range(frame.max() + 1)])
    fit = measure_psf(photons, _spot_table(y, x, frame), np.arange(len(y)), 1.1 * sigma_px, 0.0, rng, n_boot=20)
    assert fit is not None and fit.shape == "airy" and fit.evidence > 2
    assert fit.sigma_px == pytest.approx(sigma_px, rel=0.03)
    # the spots were divided by their true total photons: the profile holds all of them
    assert fit.flux_ratio == pytest.approx(1.0, rel=0.05)


def test_a_gaussian_psf_reads_its_width_with_the_pixel_and_the_blur_removed():
    rng = np.random.default_rng(2)
    sigma_px, blur_px2 = 1.2, 0.3
    y, x, frame = _spots_on_a_grid(rng)
    shape = (111, 111)
    seen = math.sqrt(sigma_px**2 + blur_px2)  # an isotropic blur as the image shows it
    photons = np.stack([_gaussian_image(shape, y[frame == t], x[frame == t], seen, TOTAL_PHOTONS)
                        for t in range(frame.max() + 1)])
    fit = measure_psf(photons, _spot_table(y, x, frame), np.arange(len(y)), 1.3, blur_px2, rng, n_boot=20)
    assert fit is not None and fit.shape == "gaussian" and fit.evidence < 0.1
    assert fit.sigma_px == pytest.approx(sigma_px, rel=0.02)
    assert fit.flux_ratio == pytest.approx(1.0, rel=0.03)
    assert fit.sigma_se_px > 0 and fit.n_spots == len(y)
    # too few spots inside the frames: no profile
    assert measure_psf(photons, _spot_table(y, x, frame), np.arange(5), 1.0, 0.0, rng) is None


def test_a_bright_airy_movie_is_calibrated_to_its_width_and_signal():
    """A free-width Gaussian fit reads a bright Airy spot about 8 % narrow and misses about 18 % of
    its photons (the calibration grid's airy-s1.0-n4000 cell before the profile was used)."""
    scene = ForeignScene(shape_yx=(96, 96), n_frames=40, n_particles=14, photons=4000.0, background=10.0)
    optics = ForeignOptics(na=0.21 * 600.0 / 100.0, wavelength_nm=600.0, pixel_size_nm=100.0)
    movie = render_foreign_movie(scene, optics, ForeignCamera(kind="plain", gain_adu_per_e=1.0, offset_adu=100.0,
                                                              read_noise_e=1.5),
                                 ForeignMotion(kind="free"), 4102)
    # the camera given, so that the signal's error is the PSF's part alone (a measured gain adds its own)
    camera = {"gain_adu_per_e": 1.0, "offset_adu": 100.0}
    cal = calibrate_movie(movie.movie, Acquisition(read_noise_e=1.5, **camera), given=set(camera))
    truth = movie.acquisition
    assert cal.psf_shape == "airy"
    assert cal.values["psf_sigma_nm"].value == pytest.approx(truth["psf_sigma_equivalent_nm"], rel=0.04)
    assert cal.values["signal_photons"].value == pytest.approx(truth["signal_photons"], rel=0.08)


def _noisy_static_airy(rng, n_particles, n_frames, sigma_px=1.0, photons=3000.0, background=10.0):
    optics = ForeignOptics(na=0.21 * 600.0 / (sigma_px * 100.0), wavelength_nm=600.0, pixel_size_nm=100.0)
    psf = AiryPSF(optics)
    shape = (120, 120)
    y = rng.uniform(20, 100, n_particles)
    x = rng.uniform(20, 100, n_particles)
    clean = psf.expected_image(shape, y, x, photons) + background
    frames = rng.poisson(np.broadcast_to(clean, (n_frames, *shape))).astype(float)
    spots = {"frame": np.repeat(np.arange(n_frames), n_particles), "y_px": np.tile(y, n_frames),
             "x_px": np.tile(x, n_frames), "photons": np.full(n_frames * n_particles, photons),
             "background": np.full(n_frames * n_particles, background)}
    return frames, spots


def test_the_bootstrap_resamples_particles_not_their_repeated_spots():
    rng = np.random.default_rng(3)
    frames, spots = _noisy_static_airy(rng, 3, 20)
    few = measure_psf(frames, spots, np.arange(60), 1.0, 0.0, rng, n_boot=30)
    # 3 static particles: too few groups, the bootstrap falls back on the spots
    assert few is not None and few.n_groups == few.n_spots == 60 and few.sigma_se_px > 0
    frames, spots = _noisy_static_airy(np.random.default_rng(4), 12, 5)
    many = measure_psf(frames, spots, np.arange(60), 1.0, 0.0, rng, n_boot=30)
    assert many is not None and many.n_groups <= 12 and many.n_groups >= 8


def test_heavy_blur_leaves_the_shape_unjudged_and_a_far_guess_gives_no_profile():
    rng = np.random.default_rng(5)
    frames, spots = _noisy_static_airy(rng, 12, 5)
    rows = np.arange(60)
    sharp = measure_psf(frames, spots, rows, 1.0, 0.0, rng, n_boot=5)
    assert sharp is not None and sharp.shape == "airy"
    blurred = measure_psf(frames, spots, rows, 1.0, 0.5, rng, n_boot=5)
    assert blurred is not None and blurred.shape == "unknown"
    assert measure_psf(frames, spots, rows, 0.2, 0.0, rng, n_boot=5) is None  # best width at the search edge


def test_bright_single_emitters_are_kept_and_wide_pairs_left_out():
    from napari_spt_diffusion.calibration_spots import static_spots as _static_widths

    n_frames, n = 10, 14
    rng = np.random.default_rng(6)
    y0 = np.arange(n) * 30.0 + 10.0  # far apart: every spot isolated
    photons = np.r_[np.full(8, 1000.0), np.full(4, 4000.0), np.full(2, 2500.0)]
    sigma = np.r_[np.full(12, 1.0), np.full(2, 1.6)]  # the last two: unresolved pairs
    jitter = rng.normal(0, 0.05, n * n_frames)
    spots = {"frame": np.repeat(np.arange(n_frames), n), "y_px": np.tile(y0, n_frames) + jitter,
             "x_px": np.full(n * n_frames, 50.0), "photons": np.tile(photons, n_frames),
             "sigma_px": np.tile(sigma, n_frames), "snr": np.tile(photons / 100.0, n_frames),
             "fit_ok": np.ones(n * n_frames, dtype=bool)}
    static = _static_widths(spots, 1.0)
    assert static.n_pairs == 2 * (n_frames - 4)  # the spots whose chain holds 4 steps
    assert np.any(static.photons == 4000.0)  # bright single emitters stay
    assert not np.any(static.photons == 2500.0)
    # the signal's reference sample: every isolated spot (of a frame read with its next), followed over 4 frames
    # or not, the wide ones included
    assert static.all_photons.size == (n_frames - 1) * n and np.any(static.all_photons == 2500.0)
