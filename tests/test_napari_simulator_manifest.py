"""Simulator widget, sample data, tracks writer and the npe2 manifest."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from napari_spt_diffusion import io
from napari_spt_diffusion._napari import _dialogs, sample_data
from napari_spt_diffusion._napari.simulator_widget import SimulatorWidget, simulation_kwargs
from napari_spt_diffusion._napari.writer import results_prefix, write_tracks_layer

MANIFEST = Path(__file__).resolve().parents[1] / "src" / "napari_spt_diffusion" / "napari.yaml"

pytestmark = pytest.mark.usefixtures("_isolated")


# ---------------------------------------------------------------- manifest
def test_manifest_valid_and_importable():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    pm.validate_imports()
    contrib = pm.contributions
    assert {w.display_name for w in contrib.widgets} == {"Track & Estimate", "Simulator"}
    assert {s.key for s in contrib.sample_data} == {"sample_movie", "simulated_movie"}
    (writer,) = contrib.writers
    assert writer.layer_types == ["tracks"] and writer.filename_extensions == [".csv"]
    (reader,) = contrib.readers
    assert set(reader.filename_patterns) == {"*_tracks.csv", "*_summary.csv", "*_meta.json"}
    # every command referenced by a contribution is declared
    ids = {c.id for c in contrib.commands}
    assert ({w.command for w in contrib.widgets} | {s.command for s in contrib.sample_data}
            | {writer.command, reader.command} <= ids)


def test_manifest_entry_point_points_at_this_file():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="napari.manifest") if ep.name == "napari-spt-diffusion"]
    assert eps and eps[0].value == "napari_spt_diffusion:napari.yaml"


# ---------------------------------------------------------------- sample data / writer
def test_simulated_sample_data_has_scale_and_truth():
    layers = sample_data.simulated_movie(seed=3)
    (movie, kw, kind), (tracks, tkw, tkind) = layers
    assert kind == "image" and movie.shape == (sample_data.SIMULATED_FRAMES, *sample_data.SIMULATED_SHAPE_YX)
    assert movie.dtype == np.uint16
    assert kw["scale"] == pytest.approx((0.01, 0.1, 0.1)) and kw["metadata"]["seed"] == 3
    assert tkind == "tracks" and tkw["scale"] == kw["scale"]
    assert tracks.shape[1] == 4 and len(tkw["features"]) == len(tracks)


def test_bundled_sample_movie_or_clear_error():
    try:
        path = io.sample_movie_path()
    except io.InputError as exc:  # not generated yet in this checkout: the error says so
        assert "sample movie" in str(exc)
        return
    ((movie, kw, kind),) = sample_data.sample_movie()
    meta = io.read_movie(path)
    assert kind == "image" and movie.shape == meta.shape
    assert kw["scale"][1] == pytest.approx(meta.pixel_size_nm / 1000.0)
    assert kw["scale"][0] == pytest.approx(meta.frame_interval_s)


def test_writer_writes_results_contract(tmp_path):
    (_, _), (data, kw, _) = sample_data.simulated_movie(seed=4)[:1][0][:2], sample_data.simulated_movie(seed=4)[1]
    written = write_tracks_layer(str(tmp_path / "run1.csv"), data, {"metadata": kw["metadata"]})
    assert [Path(p).name for p in written] == ["run1_tracks.csv", "run1_summary.csv", "run1_meta.json"]
    back = io.read_results(tmp_path / "run1")
    truth = kw["metadata"]["spt_results"]
    assert back.n_tracks == truth.n_tracks
    assert np.allclose(back.tracks["D1_um2_s"], truth.tracks["D1_um2_s"])
    with pytest.raises(ValueError, match="not made by napari-spt-diffusion"):
        write_tracks_layer(str(tmp_path / "x.csv"), data, {"metadata": {}})
    assert results_prefix("a/b.csv") == Path("a/b") and results_prefix("a/b_tracks.csv") == Path("a/b_tracks.csv")


# ---------------------------------------------------------------- simulator widget
def test_simulation_kwargs_maps_ranges():
    values = {
        "model": "binding", "D1_min_um2_s": 2.0, "D1_max_um2_s": 4.0, "D2_over_D1_min": 0.2, "D2_over_D1_max": 0.5,
        "switch_rate_per_s": 2.0, "pixel_size_nm": 120.0, "frame_interval_s": 0.02, "psf_sigma_nm": 150.0,
        "signal_photons": 500.0, "background_photons": 5.0, "particles": 10, "n_frames": 50, "size_y_px": 64,
        "size_x_px": 96, "seed": 1,
    }
    shape, n, acq, opts = simulation_kwargs(values)
    assert shape == (64, 96) and n == 50
    assert acq.pixel_size_nm == 120.0 and acq.psf_sigma_nm == 150.0 and acq.signal_photons == 500.0
    assert opts["unbound_D1_range_um2_s"] == (2.0, 4.0) and "D1_range_um2_s" not in opts
    with pytest.raises(ValueError, match="must not exceed"):
        simulation_kwargs({**values, "D1_min_um2_s": 5.0})


@pytest.mark.gui
def test_simulator_preview_generate_save(make_napari_viewer_proxy, qtbot, monkeypatch, tmp_path, _isolated):
    viewer = make_napari_viewer_proxy()
    widget = SimulatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Simulator")
    widget.int_boxes["size_y_px"].value = 64
    widget.int_boxes["size_x_px"].value = 80
    widget.int_boxes["n_frames"].value = 40
    widget.int_boxes["particles"].value = 8
    widget.float_boxes["pixel_size_nm"].value = 80.0
    # a change schedules the debounced live preview
    assert widget._timer.isActive()
    widget.preview()  # the first preview creates the layers (napari's one-off cost)
    widget._loading = True  # change the seed without scheduling another preview
    widget.int_boxes["seed"].value = 2
    widget._loading = False
    t0 = time.perf_counter()
    sim = widget.preview()  # later previews redraw the dock's canvas: well under a second
    assert time.perf_counter() - t0 < 1.0
    # the preview lives in the dock, never as a layer under the user's movie
    assert len(viewer.layers) == 0
    assert widget.preview_canvas.movie.shape == (20, 64, 80)
    assert len(widget.preview_canvas.tracks) == len(sim.truth.tracks)
    widget.frame_slider.setValue(12)
    assert widget.preview_canvas.frame == 12 and widget.frame_slider.maximum() == 19
    with qtbot.waitSignal(widget._timer.timeout, timeout=3000):
        widget.int_boxes["seed"].value = 7

    widget.model_combo.value = "binding"
    widget.generate()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert widget.simulated is not None
    assert viewer.layers["simulated movie"].data.shape == (40, 64, 80)
    assert "simulated movie truth tracks" in viewer.layers and "simulated movie truth tensor ellipses" in viewer.layers
    assert widget.progress.value == 1000 and widget.save_button.enabled
    # a second Generate adds a movie and keeps the first one's results in the dock
    widget.generate()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert "simulated movie 2" in viewer.layers and "simulated movie truth tracks" in viewer.layers
    from napari_spt_diffusion._napari.results_widget import _results_widget_for

    dock = _results_widget_for(viewer)
    assert list(dock.displays) == ["simulated movie truth", "simulated movie 2 truth"]
    dock.source_combo.setCurrentIndex(0)
    assert dock.display is dock.displays["simulated movie truth"] and dock.display.connected
    assert not dock.displays["simulated movie 2 truth"].connected

    target = tmp_path / "sim"
    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *a, **k: str(target))
    written = widget.save()
    assert [p.name for p in written] == ["sim.tif", "sim_truth_tracks.csv", "sim_truth_summary.csv",
                                         "sim_truth_meta.json"]
    movie = io.read_movie(tmp_path / "sim.tif")
    assert movie.shape == (40, 64, 80) and movie.pixel_size_nm == pytest.approx(80.0)
    assert np.array_equal(np.asarray(movie.data), widget.simulated.movie)
    movie.close()
    assert not [m for level, m in _isolated if level == "error"]

    # bad parameters: one notification, no exception
    widget.float_boxes["D1_min_um2_s"].value = 5.0
    widget.float_boxes["D1_max_um2_s"].value = 1.0
    assert widget.preview() is None and widget.generate() is None
    errors = [m for level, m in _isolated if level == "error"]
    assert len(errors) == 2 and "must not exceed" in errors[0]
