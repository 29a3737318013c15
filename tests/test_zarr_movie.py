"""OME-Zarr input (io/zarr_movie.py): level 0 read frame by frame, calibration from the NGFF scales."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from napari_spt_diffusion.acquisition import Acquisition  # noqa: E402
from napari_spt_diffusion.io import InputError, read_movie  # noqa: E402
from napari_spt_diffusion.io.zarr_movie import ZarrFrames  # noqa: E402

AXES = [{"name": "t", "type": "time", "unit": "millisecond"}, {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"}, {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}]


def _write(path, data, version="0.4", axes=AXES, scale=(20.0, 1.0, 1.0, 0.108, 0.108), levels=2):
    """A tiny OME-Zarr image (TCZYX), NGFF 0.4 on zarr v2 or 0.5 on zarr v3, with a half-size level 1."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    datasets = []
    for level in range(levels):
        step = 2**level
        array = data[..., ::step, ::step]
        stored = root.create_array(str(level), shape=array.shape, dtype=array.dtype,
                                   chunks=(1,) * (array.ndim - 2) + array.shape[-2:])
        stored[...] = array
        level_scale = list(scale[:-2]) + [scale[-2] * step, scale[-1] * step]
        datasets.append({"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": level_scale}]})
    multiscales = [{"version": version, "name": "movie", "axes": axes, "datasets": datasets}]
    if version == "0.4":
        root.attrs["multiscales"] = multiscales
    else:
        root.attrs["ome"] = {"version": version, "multiscales": multiscales}
    return path


@pytest.fixture
def frames():
    rng = np.random.default_rng(1)
    return rng.integers(100, 4000, size=(12, 1, 1, 24, 32), dtype=np.uint16)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_level0_and_calibration(tmp_path, frames, version):
    path = _write(tmp_path / "movie.ome.zarr", frames, version)
    movie = read_movie(path)
    assert isinstance(movie.data, ZarrFrames)
    assert movie.shape == (12, 24, 32) and movie.dtype == np.uint16
    assert movie.metadata_source == "ome-zarr" and movie.axes == "TCZYX"
    assert movie.pixel_size_nm == pytest.approx(108.0, rel=1e-12)
    assert movie.frame_interval_s == pytest.approx(0.02, rel=1e-12)
    np.testing.assert_array_equal(movie.data[3], frames[3, 0, 0])
    np.testing.assert_array_equal(movie.data[-1], frames[-1, 0, 0])
    np.testing.assert_array_equal(movie.data[2:5], frames[2:5, 0, 0])
    acq = movie.acquisition(Acquisition())
    assert acq.pixel_size_nm == pytest.approx(108.0) and acq.frame_interval_s == pytest.approx(0.02)


def test_ome_zarr_frames_are_read_one_at_a_time(tmp_path, frames):
    path = _write(tmp_path / "movie.ome.zarr", frames)
    movie = read_movie(path)
    reads = []
    inner = movie.data._array

    class Counting:
        shape, dtype = inner.shape, inner.dtype

        def __getitem__(self, key):
            reads.append(key)
            return inner[key]

    movie.data._array = Counting()
    movie.data[5]
    assert len(reads) == 1 and reads[0][0] == 5  # one frame's chunk, not the whole array


def test_bare_zarr_array_and_refusals(tmp_path, frames):
    bare = zarr.open_array(str(tmp_path / "bare.zarr"), mode="w", shape=(12, 24, 32), dtype="uint16",
                           chunks=(1, 24, 32))
    bare[...] = frames[:, 0, 0]
    movie = read_movie(tmp_path / "bare.zarr")
    assert movie.shape == (12, 24, 32) and movie.pixel_size_nm is None and movie.frame_interval_s is None
    np.testing.assert_array_equal(movie.data[7], frames[7, 0, 0])
    with pytest.raises(InputError, match="pixel size"):
        movie.acquisition()
    two_channels = np.concatenate([frames, frames], axis=1)
    with pytest.raises(InputError, match="2 channels"):
        read_movie(_write(tmp_path / "two.ome.zarr", two_channels))
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    group.attrs["note"] = "no image"
    with pytest.raises(InputError, match="multiscales"):
        read_movie(tmp_path / "plain.zarr")


def test_track_cli_on_ome_zarr(tmp_path):
    """``spt-diffusion track`` reads an OME-Zarr folder like a TIFF (calibration from the NGFF metadata)."""
    from napari_spt_diffusion.cli import main
    from napari_spt_diffusion.io import read_results
    from napari_spt_diffusion.simulation.movie import simulate_movie

    acq = Acquisition()
    sim = simulate_movie((48, 48), 30, acq, rng=4, model="aniso", particles=4, D1_range_um2_s=(0.5, 1.5))
    data = sim.movie[:, None, None]
    scale = (acq.frame_interval_s * 1e3, 1.0, 1.0, acq.pixel_size_nm / 1e3, acq.pixel_size_nm / 1e3)
    path = _write(tmp_path / "sim.ome.zarr", data, "0.5", scale=scale, levels=1)
    assert main(["track", str(path), "--out", str(tmp_path / "run"), "--min-track-length", "5"]) == 0
    results = read_results(tmp_path / "run")
    assert results.n_tracks >= 2
    assert results.meta["acquisition"]["pixel_size_nm"] == pytest.approx(acq.pixel_size_nm)
