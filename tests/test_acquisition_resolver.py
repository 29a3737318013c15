"""The one rule that builds an acquisition from a file's stored values, its calibration and the user's."""

from __future__ import annotations

import pytest

from napari_spt_diffusion.acquisition import Acquisition, AcquisitionError
from napari_spt_diffusion.acquisition_resolver import acquisition_values, resolve_acquisition

STORED = Acquisition(pixel_size_nm=65.0, frame_interval_s=0.02, exposure_s=0.015, psf_sigma_nm=120.0).to_dict()


def test_nothing_known_gives_the_standard_acquisition():
    assert resolve_acquisition() == Acquisition()
    assert acquisition_values() == {}
    assert resolve_acquisition(base=Acquisition(signal_photons=50.0)) == Acquisition(signal_photons=50.0)


def test_precedence_stored_then_calibration_then_explicit():
    calibration = {"pixel_size_nm": 70.0, "frame_interval_s": None}
    acq = resolve_acquisition(STORED, calibration)
    assert (acq.pixel_size_nm, acq.frame_interval_s, acq.psf_sigma_nm) == (70.0, 0.02, 120.0)
    acq = resolve_acquisition(STORED, calibration, {"pixel_size_nm": 80.0, "signal_photons": 300.0})
    assert (acq.pixel_size_nm, acq.signal_photons, acq.exposure_s) == (80.0, 300.0, 0.015)
    known = acquisition_values(None, calibration, {"psf_sigma_nm": 90.0})
    assert known == {"pixel_size_nm": 70.0, "psf_sigma_nm": 90.0}


def test_unknown_stored_fields_are_ignored_unknown_explicit_ones_refused():
    assert resolve_acquisition({**STORED, "from_the_future": 1}) == Acquisition.from_dict(STORED)
    with pytest.raises(AcquisitionError, match="unknown"):
        resolve_acquisition(explicit={"pixel_size": 1.0})


def test_explicit_none_is_applied():
    assert resolve_acquisition(STORED, explicit={"exposure_s": None}).exposure_s is None


def test_a_shorter_explicit_frame_interval_drops_a_longer_exposure():
    assert resolve_acquisition(STORED, explicit={"frame_interval_s": 0.01}).exposure_s is None
    assert resolve_acquisition(STORED, explicit={"frame_interval_s": 0.016}).exposure_s == 0.015
    with pytest.raises(AcquisitionError, match="exposure_s"):  # both given: refused, not silently changed
        resolve_acquisition(STORED, explicit={"frame_interval_s": 0.01, "exposure_s": 0.015})
