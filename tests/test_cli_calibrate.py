"""``spt-diffusion calibrate``: the measured acquisition as a table and a JSON file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile

from napari_spt_diffusion import cli
from napari_spt_diffusion import io as sio


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def movie(tmp_path):
    path = tmp_path / "movie.tif"
    shutil.copy(sio.sample_movie_path(), path)
    return path


def test_calibrate_prints_the_table_and_writes_json_beside_the_movie(movie, capsys):
    code, out, err = _run(["calibrate", str(movie), "--psf-sigma-nm", "100"], capsys)
    assert code == 0, err
    written = movie.with_name("movie_calibration.json")
    assert f"wrote {written}" in out
    for quantity in ("gain_adu_per_e", "offset_adu", "background_photons", "signal_photons", "camera", "psf_shape",
                     "background pixels", "values in steps of 1 ADU"):
        assert quantity in out
    record = json.loads(written.read_text())
    measured = record["acquisition_measured"]
    # the sample movie's camera: gain 1 ADU/e-, offset 100 ADU, 10 background photons (sample_data/README.md)
    assert measured["gain_adu_per_e"]["value"] == pytest.approx(1.0, rel=0.15)
    assert measured["offset_adu"]["value"] == pytest.approx(100.0, abs=10)
    assert measured["camera"] == "poisson"
    assert "psf_sigma_nm" not in measured and record["acquisition"]["psf_sigma_nm"] == 100.0  # given, not measured
    assert record["given"] == ["psf_sigma_nm"]
    # the sample movie stores its acquisition (written by this package): track uses that, so does "acquisition"
    assert record["acquisition_stored_in_file"] is True and "stores its acquisition" in out
    assert record["acquisition"]["gain_adu_per_e"] == 1.0 and record["acquisition"]["offset_adu"] == 100.0
    assert "read noise 1.5 e- assumed" in measured["gain_adu_per_e"]["method"]


def test_calibrate_takes_a_read_noise_given_as_known(movie, capsys):
    code, out, err = _run(["calibrate", str(movie), "--read-noise-e", "1.5", "--frames", "40"], capsys)
    assert code == 0, err
    measured = json.loads(movie.with_name("movie_calibration.json").read_text())["acquisition_measured"]
    assert "read noise 1.5 e- given" in measured["gain_adu_per_e"]["method"]


def test_calibrate_uses_the_measured_values_for_a_movie_without_stored_acquisition(tmp_path, capsys):
    from napari_spt_diffusion.io import read_movie

    with read_movie(sio.sample_movie_path()) as sample:
        frames = np.asarray(sample.data[:60])
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, frames, imagej=True, resolution=(10.0, 10.0),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 0.01})
    code, out, err = _run(["calibrate", str(plain)], capsys)
    assert code == 0, err
    record = json.loads(plain.with_name("plain_calibration.json").read_text())
    assert record["acquisition_stored_in_file"] is False
    measured = record["acquisition_measured"]
    assert record["acquisition"]["gain_adu_per_e"] == pytest.approx(measured["gain_adu_per_e"]["value"])
    assert record["acquisition"]["psf_sigma_nm"] == pytest.approx(measured["psf_sigma_nm"]["value"])


def test_calibrate_refuses_to_overwrite_and_reports_bad_input_in_one_line(movie, tmp_path, capsys):
    out_file = tmp_path / "cal.json"
    out_file.write_text("keep me")
    code, out, err = _run(["calibrate", str(movie), "--out", str(out_file)], capsys)
    assert code == 2 and "exists" in err and len(err.strip().splitlines()) == 1
    assert out_file.read_text() == "keep me"  # checked before any work, nothing written
    code, out, err = _run(["calibrate", str(movie), "--out", str(out_file), "--overwrite"], capsys)
    assert code == 0 and json.loads(out_file.read_text())["movie"] == str(movie)
    code, out, err = _run(["calibrate", str(tmp_path / "missing.tif")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, out, err = _run(["calibrate", str(movie), "--pixel-size-nm", "-3"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, out, err = _run(["calibrate", str(movie), "--frames", "5"], capsys)
    assert code == 2 and "10" in err and len(err.strip().splitlines()) == 1
    # the output may not replace the movie itself
    before = movie.read_bytes()
    code, out, err = _run(["calibrate", str(movie), "--out", str(movie), "--overwrite"], capsys)
    assert code == 2 and "overwrite the movie" in err and movie.read_bytes() == before
    # nothing measurable: an error, no file
    tiny = tmp_path / "tiny.tif"
    tifffile.imwrite(tiny, np.random.default_rng(0).poisson(10, (12, 12, 12)).astype(np.uint16) + 100, imagej=True,
                     resolution=(10.0, 10.0), metadata={"axes": "TYX", "unit": "um", "finterval": 0.01})
    code, out, err = _run(["calibrate", str(tiny)], capsys)
    assert code == 2 and "nothing could be measured" in err and len(err.strip().splitlines()) == 1
    assert not tiny.with_name("tiny_calibration.json").exists()


def test_calibrate_applies_an_emccds_measured_read_noise_as_track_does(tmp_path, capsys):
    """An EMCCD movie (background only, 3 photons/px): the read noise given with --read-noise-e is the assumption
    for an sCMOS/CCD; the EMCCD's is measured, and the acquisition written (what track would use) holds its
    Poisson-equivalent value, as track's does."""
    rng = np.random.default_rng(3)
    shape = (60, 128, 128)
    electrons = rng.poisson(3.0, shape)
    multiplied = np.where(electrons > 0, rng.gamma(np.maximum(electrons, 1), 100.0), 0.0)
    frames = np.round(100.0 + 0.1 * (multiplied + rng.normal(0.0, 150.0, shape))).astype(np.uint16)
    path = tmp_path / "emccd.tif"
    tifffile.imwrite(path, frames, imagej=True, resolution=(10.0, 10.0),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 0.01})
    code, out, err = _run(["calibrate", str(path), "--read-noise-e", "2"], capsys)
    assert code == 0, err
    record = json.loads(path.with_name("emccd_calibration.json").read_text())
    measured = record["acquisition_measured"]
    assert measured["camera"] == "emccd"
    assert record["acquisition"]["read_noise_e"] == pytest.approx(measured["read_noise_e"]["value"] / 2)
    assert record["acquisition"]["gain_adu_per_e"] == pytest.approx(2 * measured["gain_adu_per_e"]["value"])


def test_an_unbounded_uncertainty_prints_as_such():
    from napari_spt_diffusion import _cli_calibrate
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.calibration import Calibration, Measured

    cal = Calibration({"signal_photons": Measured(700.0, float("nan"), "photons/frame", "median")})
    assert _cli_calibrate._rows(cal, Acquisition(), {})[0][2] == "not bounded"
