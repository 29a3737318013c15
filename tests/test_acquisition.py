import math

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition, AcquisitionError


def test_defaults_are_the_standard_acquisition():
    acq = Acquisition()
    assert acq.pixel_size_nm == 100.0
    assert acq.frame_interval_s == 0.01
    assert acq.substeps_per_frame == 10
    assert acq.psf_sigma_px == pytest.approx(1.0)
    assert acq.signal_photons == 1000.0
    assert acq.background_photons == 10.0
    assert acq.exposure_time_s == pytest.approx(0.01)
    assert acq.substep_interval_s == pytest.approx(0.001)
    assert acq.exposed_substeps == 10


def test_diffusion_unit_round_trip_and_value():
    acq = Acquisition()
    # 1 um^2/s over 10 ms with 0.1 um pixels = 0.01 um^2 = 1 px^2 per frame.
    assert acq.diffusion_to_px2_per_frame(1.0) == pytest.approx(1.0)
    assert acq.diffusion_to_px2_per_substep(1.0) == pytest.approx(0.1)
    acq2 = Acquisition(pixel_size_nm=160.0, frame_interval_s=0.03)
    D = np.array([0.05, 1.0, 6.0])
    assert np.allclose(acq2.diffusion_to_um2_s(acq2.diffusion_to_px2_per_frame(D)), D)
    assert acq2.diffusion_to_px2_per_frame(1.0) == pytest.approx(0.03 / 0.16**2)


def test_length_conversions():
    acq = Acquisition(pixel_size_nm=160.0)
    assert acq.px_to_um(10) == pytest.approx(1.6)
    assert acq.um_to_px(1.6) == pytest.approx(10)
    assert np.allclose(acq.px_to_nm(np.array([1.0, 2.0])), [160.0, 320.0])
    assert acq.frames_to_s(5) == pytest.approx(0.05)


def test_blur_coefficient_matches_closed_forms():
    # Continuous exposure with n averaged sub-positions: R = (1 - 1/n^2) / 6, tending to 1/6 for many sub-steps.
    for n in (1, 2, 10, 50):
        acq = Acquisition(substeps_per_frame=n)
        assert acq.blur_coefficient == pytest.approx((1 - 1 / n**2) / 6)
    # Half the frame exposed: m = n/2 positions averaged over a frame of n sub-steps.
    acq = Acquisition(substeps_per_frame=10, exposure_s=0.005)
    assert acq.exposed_substeps == 5
    assert acq.blur_coefficient == pytest.approx((25 - 1) / (6 * 5 * 10))


def test_blur_coefficient_agrees_with_simulated_brownian_motion():
    # Monte-Carlo check of R through <dx_k dx_(k+1)> = 2 R D dt for averaged sub-positions.
    rng = np.random.default_rng(0)
    acq = Acquisition(substeps_per_frame=10, exposure_s=0.006)
    n, m = acq.substeps_per_frame, acq.exposed_substeps
    steps = rng.normal(size=(4000, 40 * n))
    x = np.cumsum(steps, axis=1).reshape(4000, 40, n)  # unit variance per sub-step
    frames = x[:, :, :m].mean(axis=2)
    d = np.diff(frames, axis=1)
    cov = np.mean(d[:, 1:] * d[:, :-1])
    two_D_dt = n  # variance accumulated over one frame interval (n sub-steps of variance 1)
    R = cov / two_D_dt
    se = np.std(d[:, 1:] * d[:, :-1]) / math.sqrt(d[:, 1:].size) / two_D_dt
    assert abs(R - acq.blur_coefficient) < 5 * se + 1e-3


@pytest.mark.parametrize(
    "field, value",
    [
        ("pixel_size_nm", 0),
        ("pixel_size_nm", -100),
        ("frame_interval_s", 0),
        ("psf_sigma_nm", float("nan")),
        ("signal_photons", -1),
        ("background_photons", float("inf")),
        ("substeps_per_frame", 0),
        ("substeps_per_frame", 2.5),
        ("gain_adu_per_e", 0),
        ("exposure_s", 0.02),
        ("pixel_size_nm", "abc"),
    ],
)
def test_invalid_values_are_refused_with_the_field_name(field, value):
    with pytest.raises(AcquisitionError, match=field):
        Acquisition(**{field: value})


def test_dict_round_trip_and_unknown_keys():
    acq = Acquisition(pixel_size_nm=108.0, exposure_s=0.008)
    assert Acquisition.from_dict(acq.to_dict()) == acq
    with pytest.raises(AcquisitionError, match="bogus"):
        Acquisition.from_dict({**acq.to_dict(), "bogus": 1})
    assert acq.replace(signal_photons=250).signal_photons == 250


def test_adu_to_photons():
    acq = Acquisition(gain_adu_per_e=2.0, offset_adu=100.0)
    assert np.allclose(acq.adu_to_photons(np.array([100, 120], dtype=np.uint16)), [0.0, 10.0])
