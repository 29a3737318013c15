"""Tests of napari_spt_diffusion.io: TIFF reading/writing with calibration, atomic result files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_spt_diffusion import io as sio
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.io import InputError, read_movie, read_results, write_movie, write_results
from napari_spt_diffusion.io import results as results_module
from napari_spt_diffusion.results import (
    SUMMARY_COLUMNS,
    TRACKS_COLUMNS,
    Results,
    empty_summary_table,
    empty_tracks_table,
)


def _movie(n_frames=6, ny=12, nx=17, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(90, 4000, size=(n_frames, ny, nx)).astype(np.uint16)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


def _results(seed=1) -> Results:
    rng = np.random.default_rng(seed)
    rows = []
    for tid, frames in ((0, range(0, 5)), (3, range(2, 9))):
        for f in frames:
            rows.append(
                {
                    "track_id": tid,
                    "frame": f,
                    "t_s": f * 0.01,
                    "x_px": rng.uniform(0, 50),
                    "y_px": rng.uniform(0, 50),
                    "x_um": rng.uniform(0, 5),
                    "y_um": rng.uniform(0, 5),
                    "photons": rng.uniform(500, 1500),
                    "background": 10.0,
                    "loc_precision_nm": np.nan if f == 3 else rng.uniform(5, 20),
                    "D1_um2_s": 1.2345678,
                    "D2_um2_s": 0.5,
                    "theta_deg": 123.0,
                    "state": int(f >= 6),
                    "is_changepoint": f == 6,
                    "extra_flag": f % 2,
                }
            )
    tracks = pd.DataFrame(rows)
    summary = pd.DataFrame(
        [
            {c: 0.25 for c in SUMMARY_COLUMNS}
            | {"track_id": 0, "n_frames": 5, "frame_start": 0, "frame_end": 4, "n_changepoints": 0,
               "changepoint_frames": "", "model": "aniso", "alpha_msd": np.nan},
            {c: 0.5 for c in SUMMARY_COLUMNS}
            | {"track_id": 3, "n_frames": 7, "frame_start": 2, "frame_end": 8, "n_changepoints": 1,
               "changepoint_frames": "6", "model": "aniso"},
        ]
    )
    meta = {"acquisition": Acquisition(pixel_size_nm=65.0).to_dict(), "note": np.float32(2.5), "ids": np.arange(3)}
    return Results(tracks, summary, meta)


# ------------------------------------------------------------------ read/write movies
def test_write_movie_round_trip_imagej_calibration(tmp_path):
    movie = _movie()
    acq = Acquisition(pixel_size_nm=65.0, frame_interval_s=0.02, psf_sigma_nm=130.0, signal_photons=400.0)
    path = write_movie(tmp_path / "m.tif", movie, acq)
    opened = read_movie(path)
    assert opened.is_memmap and opened.shape == movie.shape and opened.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(opened.data), movie)
    assert opened.pixel_size_nm == pytest.approx(65.0, rel=1e-9)
    assert opened.frame_interval_s == pytest.approx(0.02, rel=1e-12)
    assert opened.metadata_source == "imagej"
    assert Acquisition.from_dict(opened.acquisition_dict) == acq
    assert opened.acquisition() == acq
    # written exactly as ImageJ writes a calibration: pixels per um, unit=um, no TIFF unit
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"
        assert tif.imagej_metadata["unit"] == "um"
        assert tif.imagej_metadata["finterval"] == pytest.approx(0.02)
        assert tif.pages[0].resolution[0] == pytest.approx(1000.0 / 65.0)
        assert tif.pages[0].resolutionunit == 1
    opened.close()
    assert _leftovers(tmp_path) == []


def test_write_movie_compressed_gives_lazy_reader(tmp_path):
    movie = _movie(n_frames=9)
    path = write_movie(tmp_path / "z.tif", movie, Acquisition(), compression="zlib")
    with read_movie(path) as opened:
        assert not opened.is_memmap and isinstance(opened.data, sio.LazyTiffFrames)
        data = opened.data
        np.testing.assert_array_equal(data[4], movie[4])
        np.testing.assert_array_equal(data[-1], movie[-1])
        np.testing.assert_array_equal(data[2:7:2], movie[2:7:2])
        np.testing.assert_array_equal(data[[1, 5]], movie[[1, 5]])
        np.testing.assert_array_equal(data[3, 2:5, 1], movie[3, 2:5, 1])
        np.testing.assert_array_equal(data[..., 3], movie[..., 3])
        bright = movie.mean(axis=(1, 2)) > movie.mean()
        np.testing.assert_array_equal(data[bright], movie[bright])
        np.testing.assert_array_equal(np.asarray(data), movie)
        assert data.shape == movie.shape and data.ndim == 3 and len(data) == 9
        with pytest.raises(IndexError):
            data[9]
        assert opened.pixel_size_nm == pytest.approx(100.0)


def test_write_movie_converts_floats_and_refuses_out_of_range(tmp_path):
    movie = _movie().astype(np.float64) + 0.4
    path = write_movie(tmp_path / "f.tif", movie, Acquisition())
    with read_movie(path) as opened:
        np.testing.assert_array_equal(np.asarray(opened.data), np.rint(movie).astype(np.uint16))
    bad = _movie().astype(np.int32)
    bad[3, 0, 0] = -5
    with pytest.raises(InputError, match="uint16"):
        write_movie(tmp_path / "bad.tif", bad, Acquisition())
    nan = movie.copy()
    nan[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_movie(tmp_path / "nan.tif", nan, Acquisition())
    with pytest.raises(InputError, match=r"\(T, Y, X\)"):
        write_movie(tmp_path / "2d.tif", movie[0], Acquisition())
    assert not (tmp_path / "bad.tif").exists() and not (tmp_path / "nan.tif").exists()
    assert _leftovers(tmp_path) == []


def test_imagej_file_from_other_software(tmp_path):
    movie = _movie()
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(path, movie, imagej=True, resolution=(1 / 0.16, 1 / 0.16),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": 50, "tunit": "ms"})
    with read_movie(path) as opened:
        assert opened.pixel_size_nm == pytest.approx(160.0)
        assert opened.frame_interval_s == pytest.approx(0.05)
        assert opened.acquisition_dict is None
        acq = opened.acquisition(psf_sigma_nm=150.0)
        assert acq.pixel_size_nm == pytest.approx(160.0) and acq.psf_sigma_nm == 150.0
        assert acq.signal_photons == Acquisition().signal_photons
    # escaped micro sign, nanometres, stack saved by ImageJ as slices (axis Z)
    path2 = tmp_path / "fiji2.tif"
    tifffile.imwrite(path2, movie, imagej=True, resolution=(1 / 107.0, 1 / 107.0),
                     metadata={"axes": "ZYX", "unit": "nm"})
    with read_movie(path2) as opened:
        assert opened.shape == movie.shape
        assert opened.pixel_size_nm == pytest.approx(107.0)
        assert opened.frame_interval_s is None
        with pytest.raises(InputError, match="frame interval"):
            opened.acquisition()
        assert opened.acquisition(frame_interval_s=0.03).frame_interval_s == 0.03
    path3 = tmp_path / "fiji3.tif"
    tifffile.imwrite(path3, movie, imagej=True, resolution=(10.0, 10.0),
                     metadata={"axes": "TYX", "unit": "\\u00B5m", "finterval": 0.1})
    with read_movie(path3) as opened:
        assert opened.pixel_size_nm == pytest.approx(100.0)


def test_ome_metadata(tmp_path):
    movie = _movie()
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(path, movie, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": 65.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 65.0,
        "PhysicalSizeYUnit": "nm", "TimeIncrement": 30.0, "TimeIncrementUnit": "ms"})
    with read_movie(path) as opened:
        assert opened.metadata_source == "ome"
        assert opened.pixel_size_nm == pytest.approx(65.0)
        assert opened.frame_interval_s == pytest.approx(0.03)
        np.testing.assert_array_equal(np.asarray(opened.data), movie)
    # default OME units (um, s) and the interval from the planes' DeltaT
    path2 = tmp_path / "b.ome.tif"
    tifffile.imwrite(path2, movie, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": 0.108, "Plane": {"DeltaT": [0.0, 0.025, 0.05, 0.075, 0.1, 0.125]}})
    with read_movie(path2) as opened:
        assert opened.pixel_size_nm == pytest.approx(108.0)
        assert opened.frame_interval_s == pytest.approx(0.025)


def test_plain_tiff_and_bare_resolution_tags(tmp_path):
    movie = _movie()
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, movie)
    with read_movie(plain) as opened:
        assert opened.pixel_size_nm is None and opened.frame_interval_s is None
        assert opened.metadata_source is None
        with pytest.raises(InputError, match="pixel size"):
            opened.acquisition()
        acq = opened.acquisition(pixel_size_nm=90.0, frame_interval_s=0.02)
        assert (acq.pixel_size_nm, acq.frame_interval_s) == (90.0, 0.02)
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, movie, metadata=None, resolution=(1e5, 1e5), resolutionunit="CENTIMETER")
    with read_movie(cm) as opened:
        assert opened.pixel_size_nm == pytest.approx(100.0) and opened.metadata_source == "tiff-tags"
    dpi = tmp_path / "dpi.tif"
    tifffile.imwrite(dpi, movie, metadata=None, resolution=(72, 72), resolutionunit="INCH")
    with read_movie(dpi) as opened:
        assert opened.pixel_size_nm is None  # a screen resolution is not a microscope calibration


# --------------------------------------------------------------------- bad input
def test_bad_inputs_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_movie(tmp_path / "missing.tif")
    with pytest.raises(InputError, match="not a file"):
        read_movie(tmp_path)
    text = tmp_path / "notes.tif"
    text.write_text("this is not an image\n")
    with pytest.raises(InputError, match="not a TIFF"):
        read_movie(text)
    truncated = tmp_path / "truncated.tif"
    tifffile.imwrite(truncated, _movie())
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(InputError):
        read_movie(truncated)

    cases = {
        "single.tif": (np.zeros((12, 17), np.uint16), {}, "single 2-D image"),
        "oneframe.tif": (np.zeros((1, 12, 17), np.uint16), {"imagej": True, "metadata": {"axes": "TYX"}},
                         "single 2-D image"),
        "rgb.tif": (np.zeros((12, 17, 3), np.uint8), {"photometric": "rgb"}, "RGB"),
        "rgbstack.tif": (np.zeros((4, 12, 17, 3), np.uint8), {"photometric": "rgb"}, "RGB"),
        "channels.tif": (np.zeros((5, 2, 12, 17), np.uint16), {"imagej": True, "metadata": {"axes": "TCYX"}},
                         "2 channels"),
        "tz.tif": (np.zeros((5, 3, 12, 17), np.uint16), {"imagej": True, "metadata": {"axes": "TZYX"}},
                   "more than one non-spatial axis"),
        "complex.tif": (np.zeros((4, 12, 17), np.complex64), {"photometric": "minisblack"}, "pixel type"),
    }
    for name, (data, kwargs, message) in cases.items():
        tifffile.imwrite(tmp_path / name, data, **kwargs)
        with pytest.raises(InputError, match=message):
            read_movie(tmp_path / name)
    with pytest.warns(UserWarning):
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 12, 17), np.uint16))
    with pytest.raises(InputError, match="empty"):
        read_movie(tmp_path / "empty.tif")


# --------------------------------------------------------------- atomic writing
def test_existing_file_untouched_without_overwrite(tmp_path):
    target = tmp_path / "m.tif"
    target.write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists"):
        write_movie(target, _movie(), Acquisition())
    assert target.read_bytes() == b"precious"
    write_movie(target, _movie(), Acquisition(), overwrite=True)
    with read_movie(target) as opened:
        np.testing.assert_array_equal(np.asarray(opened.data), _movie())
    assert _leftovers(tmp_path) == []


def test_unwritable_destinations(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_movie(tmp_path / "nofolder" / "m.tif", _movie(), Acquisition())
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_movie(afile / "m.tif", _movie(), Acquisition())
    with pytest.raises(InputError, match="is a folder"):
        write_movie(tmp_path, _movie(), Acquisition())
    with pytest.raises(InputError, match="folder"):
        write_results(tmp_path / "nofolder" / "run", _results())
    with pytest.raises(InputError, match="is a folder"):
        write_results(tmp_path, _results())


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_no_file(tmp_path, monkeypatch, error):
    target = tmp_path / "m.tif"
    real_imwrite = tifffile.imwrite

    def failing_imwrite(path, data, **kwargs):
        frames = iter(data)

        def first_frames():
            for _ in range(2):
                yield next(frames)
            raise error

        real_imwrite(path, first_frames(), **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", failing_imwrite)
    expected = InputError if isinstance(error, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        write_movie(target, _movie(), Acquisition())
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    # an existing file survives a failed overwrite
    target.write_bytes(b"old")
    with pytest.raises(expected):
        write_movie(target, _movie(), Acquisition(), overwrite=True)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]


# ---------------------------------------------------------------------- results
def test_results_round_trip(tmp_path):
    results = _results()
    written = write_results(tmp_path / "run1", results)
    assert [p.name for p in written] == ["run1_tracks.csv", "run1_summary.csv", "run1_meta.json"]
    header = written[0].read_text().splitlines()[0].split(",")
    assert header[: len(TRACKS_COLUMNS)] == list(TRACKS_COLUMNS) and header[-1] == "extra_flag"
    back = read_results(tmp_path / "run1")
    pd.testing.assert_frame_equal(back.tracks, results.tracks, check_dtype=False, rtol=1e-8)
    assert back.tracks["is_changepoint"].dtype == bool and back.tracks["track_id"].dtype == np.int64
    assert list(back.summary["changepoint_frames"]) == ["", "6"]
    pd.testing.assert_frame_equal(back.summary, results.summary, check_dtype=False, rtol=1e-8)
    meta = json.loads(written[2].read_text())
    assert meta["acquisition"]["pixel_size_nm"] == 65.0
    assert meta["model"] == "aniso" and meta["software"] == "napari-spt-diffusion"
    assert meta["software_version"] and meta["created_utc"].endswith("+00:00")
    assert meta["note"] == 2.5 and meta["ids"] == [0, 1, 2]
    assert back.meta["n_tracks"] == 2
    # reading from one of the files works too
    assert read_results(written[1]).n_tracks == 2


def test_empty_results_round_trip(tmp_path):
    empty = Results(empty_tracks_table(), empty_summary_table(), {"model": "binding"})
    assert empty.acquisition is None
    write_results(tmp_path / "unknown", empty)
    assert json.loads((tmp_path / "unknown_meta.json").read_text())["acquisition"] is None
    assert read_results(tmp_path / "unknown").acquisition is None
    empty.acquisition = Acquisition()
    write_results(tmp_path / "none", empty)
    back = read_results(tmp_path / "none")
    assert back.n_tracks == 0 and tuple(back.tracks.columns) == TRACKS_COLUMNS
    assert json.loads((tmp_path / "none_meta.json").read_text())["acquisition"]["pixel_size_nm"] == 100.0
    assert back.acquisition == Acquisition()


def test_results_carry_their_acquisition(tmp_path):
    results = _results()
    assert results.acquisition == Acquisition(pixel_size_nm=65.0)
    results.acquisition = Acquisition(pixel_size_nm=80.0, exposure_s=0.005)
    assert results.meta["acquisition"] == Acquisition(pixel_size_nm=80.0, exposure_s=0.005).to_dict()
    write_results(tmp_path / "run", results)
    assert read_results(tmp_path / "run").acquisition == Acquisition(pixel_size_nm=80.0, exposure_s=0.005)
    meta_file = tmp_path / "run_meta.json"
    meta_file.write_text(meta_file.read_text().replace('"pixel_size_nm": 80.0', '"pixel_size_nm": -1'))
    with pytest.raises(InputError, match="invalid acquisition"):
        read_results(tmp_path / "run")
    meta_file.write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        read_results(tmp_path / "run")


def test_results_all_or_nothing(tmp_path, monkeypatch):
    results = _results()
    existing = tmp_path / "run_summary.csv"
    existing.write_text("keep me")
    with pytest.raises(InputError, match="already exists"):
        write_results(tmp_path / "run", results)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_summary.csv"]
    assert existing.read_text() == "keep me"

    # failure while writing the second table: no file, no temporary
    calls = {"n": 0}
    real_write_rows = results_module.write_csv_rows

    def failing_write_rows(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_write_rows(*args, **kwargs)

    monkeypatch.setattr(results_module, "write_csv_rows", failing_write_rows)
    with pytest.raises(InputError, match="No space"):
        write_results(tmp_path / "other", results)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_summary.csv"]

    # failure at the second rename: the first file placed is taken back
    real_replace = os.replace
    renames = {"n": 0}

    def failing_replace(src, dst):
        renames["n"] += 1
        if renames["n"] == 2:
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(InputError):
        write_results(tmp_path / "third", results)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_summary.csv"]

    write_results(tmp_path / "run", results, overwrite=True)
    assert read_results(tmp_path / "run").n_tracks == 2


def test_read_results_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_results(tmp_path / "nothing")
    write_results(tmp_path / "r", _results())
    (tmp_path / "r_tracks.csv").write_text("track_id,frame\n1,2\n")
    with pytest.raises(InputError, match="does not match the SHA-256"):  # the sidecar's checksum
        read_results(tmp_path / "r")
    with pytest.raises(InputError, match="lacks column"):
        read_results(tmp_path / "r", verify=False)


def test_write_simulation_writes_movie_and_truth(tmp_path):
    results = _results()
    written = sio.write_simulation(tmp_path / "sim.tif", _movie(), results)
    assert [p.name for p in written] == ["sim.tif", "sim_truth_tracks.csv", "sim_truth_summary.csv",
                                         "sim_truth_meta.json"]
    assert read_results(tmp_path / "sim_truth").n_tracks == 2
    with read_movie(tmp_path / "sim.tif") as movie:  # calibrated with the truth's acquisition
        assert movie.acquisition() == results.acquisition
    with pytest.raises(InputError, match="already exists"):
        sio.write_simulation(tmp_path / "sim.tif", _movie(), results)
    (tmp_path / "sim.tif").unlink()
    with pytest.raises(InputError, match="already exists"):  # the truth files still block
        sio.write_simulation(tmp_path / "sim.tif", _movie(), results)
    assert not (tmp_path / "sim.tif").exists()
