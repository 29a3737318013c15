"""The camera's background cumulants: the quantization step of the values and its correction."""

import numpy as np
import pytest

from napari_spt_diffusion.calibration_camera import adu_step, poisson_camera, tile_cumulants


def _background_movie(gain: float, step: float = 1.0, seed: int = 0) -> np.ndarray:
    """100 x 128 x 128 frames of 10 background photons/px, read noise 1.5 e-, offset 100 ADU, rounded
    to multiples of ``step`` ADU."""
    rng = np.random.default_rng(seed)
    shape = (100, 128, 128)
    adu = 100.0 + gain * (rng.poisson(10.0, shape) + rng.normal(0.0, 1.5, shape))
    return (np.round(adu / step) * step).astype(np.uint16).astype(np.float64)


def test_the_quantization_step_is_found():
    movie = _background_movie(1.0)
    assert adu_step(movie) == 1.0
    # a 12-bit sensor read out in the high bits of a 16-bit word counts in steps of 16
    assert adu_step(_background_movie(16.0, step=16.0)) == 16.0
    # floating-point data (processed, or offset-corrected by a fraction) carry no step
    assert adu_step(movie + 0.25) == 0.0
    assert adu_step(np.full((3, 8, 8), 7.0)) == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_rounding_no_longer_reads_as_read_noise(seed):
    """At 0.4 ADU per photo-electron the rounding's variance (1/12 ADU^2) is 4 % of the background's:
    read as read noise it lowered the gain by about 8 % and raised the background by about 28 %."""
    movie = _background_movie(0.4, seed=seed)
    everything = np.ones(movie.shape, dtype=bool)
    gain, offset, background = poisson_camera(tile_cumulants(movie, everything, adu_step(movie)), 1.5)
    assert gain == pytest.approx(0.4, rel=0.04)
    assert background == pytest.approx(10.0, rel=0.1)
    assert offset == pytest.approx(100.0, abs=0.5)
    raw_gain, _, raw_background = poisson_camera(tile_cumulants(movie, everything), 1.5)
    assert raw_gain < 0.38 and raw_background > 12.0  # what the correction removes


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
