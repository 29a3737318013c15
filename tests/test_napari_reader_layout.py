"""Issue 17: docks that fit 1280 x 800, warnings that reach the user, results that reload."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_spt_diffusion._napari import _dialogs, track_widget
from napari_spt_diffusion._napari import layers as L
from napari_spt_diffusion._napari.reader import get_reader, read_results_layers
from napari_spt_diffusion._napari.results_widget import _results_widget_for, run_warnings, show_results
from napari_spt_diffusion._napari.simulator_widget import SimulatorWidget
from napari_spt_diffusion._napari.track_widget import TrackEstimateWidget, values_from_meta
from napari_spt_diffusion._napari.writer import write_tracks_layer
from napari_spt_diffusion.acquisition import Acquisition

pytestmark = pytest.mark.gui

#: outside the bundled models' training (100 nm, 0.01 s): the results carry the guard's warnings (the frame
#: interval; the pixel size alone no longer is: PSF units give the model 122-nm virtual pixels)
ACQ = Acquisition(pixel_size_nm=160.0, frame_interval_s=0.02)


@pytest.fixture(scope="module")
def run():
    """A tiny simulated movie through the whole pipeline (binding model, CPU; a few seconds)."""
    from napari_spt_diffusion import pipeline
    from napari_spt_diffusion.simulation import simulate_movie

    sim = simulate_movie((64, 64), 30, ACQ, 5, model="binding", particles=8)
    with pytest.warns(UserWarning):
        results = pipeline.track_and_estimate(sim.movie, ACQ, pipeline.Settings(model="binding", device="cpu"))
    return sim.movie, results


@pytest.fixture
def config(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SPT_DIFFUSION_CONFIG_DIR", str(tmp_path / "config"))


def test_min_window_size_fits_1280x800(make_napari_viewer_proxy, config, run):
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer_proxy(show=True)
    movie, results = run
    data, kwargs, _ = L.image_layer(movie, ACQ, name="movie")
    viewer.add_image(data, **kwargs)
    track = TrackEstimateWidget(viewer)
    viewer.window.add_dock_widget(track, name="Track & Estimate", area="right")
    sim = SimulatorWidget(viewer)
    viewer.window.add_dock_widget(sim, name="Simulator", area="right")
    track.acq_group.expand(animate=False)  # even with every group open
    show_results(viewer, results, ACQ, prefix="movie ")
    QApplication.processEvents()
    window = viewer.window._qt_window
    hint = window.minimumSizeHint()
    assert hint.width() <= 1280 and hint.height() <= 800, hint
    window.resize(1280, 800)
    QApplication.processEvents()
    assert window.width() == 1280 and window.height() == 800
    assert viewer.window._qt_viewer.canvas.native.width() >= 400  # the movie keeps room
    # the results sit in tabs; another helper's page can join them
    dock = _results_widget_for(viewer)
    titles = [dock.tabs.tabText(i) for i in range(dock.tabs.count())]
    assert titles[0] == "tracks" and any("D(t)" in t for t in titles) and any("histogram" in t for t in titles)
    from qtpy.QtWidgets import QLabel

    assert dock.add_tab(QLabel("MSD"), "MSD") == len(titles)


def test_pipeline_warnings_become_napari_notifications(make_napari_viewer_proxy, config, qtbot, monkeypatch, run):
    """Every warning the pipeline recorded: a napari notification, a line in the widget, the guard's banner."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    movie, results = run
    expected = run_warnings(results.meta)
    assert any("frame interval 0.02 s is outside" in w for w in expected)
    assert len(expected) == len(set(expected))
    viewer = make_napari_viewer_proxy()
    data, kwargs, _ = L.image_layer(movie, ACQ, name="movie")
    viewer.add_image(data, **kwargs)
    widget = TrackEstimateWidget(viewer)
    viewer.add_points(np.zeros((1, 3)), name="detections (preview)", **L.LayerGeometry.from_acquisition(ACQ).kwargs())
    monkeypatch.setattr(track_widget, "run_pipeline", lambda *a: results)
    monkeypatch.setattr(track_widget, "pipeline_settings", lambda values: values)
    shown: list = []
    monkeypatch.setattr(notification_manager, "dispatch", lambda n: shown.append(n))
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    qtbot.waitUntil(lambda: len(shown) >= len(expected), timeout=5000)  # once the layout has settled
    warned = [n.message for n in shown if n.severity == NotificationSeverity.WARNING]
    assert any("frame interval 0.02 s is outside" in m for m in warned), warned
    assert len(warned) == len(expected)
    assert not widget.warnings_label.native.isHidden() and "frame interval 0.02 s" in widget.warnings_label.value
    assert f"{len(expected)} warnings" in widget.status.value
    dock = _results_widget_for(viewer)
    assert not dock.banner.isHidden() and "rejected" in dock.banner.text()
    assert "frame interval 0.02 s" in dock.warnings_label.text()
    assert dock.tabs.tabText(dock.warnings_tab) == f"warnings ({len(expected)})"
    # the preview's circles go; a run without changepoints leaves no empty changepoints layer
    assert "detections (preview)" not in viewer.layers
    if int(results.summary["n_changepoints"].sum()) == 0:
        assert "movie changepoints" not in viewer.layers


def test_reader_round_trip(make_napari_viewer_proxy, config, qtbot, tmp_path, run):
    """Pipeline results -> the plugin's writer -> the plugin's reader: the same layers and dock entry."""
    movie, results = run
    data, kwargs, _ = L.tracks_layer(results, geometry=L.LayerGeometry.from_acquisition(ACQ))
    written = write_tracks_layer(str(tmp_path / "movie1.csv"), data, {"metadata": kwargs["metadata"]})
    assert get_reader(str(tmp_path / "other.csv")) is None and get_reader(str(tmp_path / "none_tracks.csv")) is None
    for path in written:  # any of the three files opens the prefix
        assert get_reader(path) is read_results_layers

    viewer = make_napari_viewer_proxy()
    layers = viewer.open(str(tmp_path / "movie1_meta.json"), plugin="napari-spt-diffusion")
    tracks = viewer.layers["movie1 tracks"]
    assert tracks in layers and "movie1 tensor ellipses" in viewer.layers
    assert np.allclose(np.asarray(tracks.data), data)
    assert tuple(tracks.scale) == pytest.approx((0.02, 0.16, 0.16))
    assert np.allclose(tracks.features["D1_um2_s"], kwargs["features"]["D1_um2_s"])
    assert tracks.color_by == "D1 colour"
    dock = _results_widget_for(viewer)
    qtbot.waitUntil(lambda: "movie1" in dock.displays, timeout=5000)
    display = dock.displays["movie1"]
    # the dock took the reader's layers (no copies added)
    assert display.tracks_layer.metadata["spt_source"].endswith("movie1_meta.json")
    assert len(viewer.layers) == len(layers)
    assert dock.table.rowCount() == results.n_tracks
    assert "frame interval 0.02 s" in dock.warnings_label.text()
    # a second file of another run keeps the first in the dock
    write_tracks_layer(str(tmp_path / "movie2.csv"), data, {"metadata": kwargs["metadata"]})
    viewer.open(str(tmp_path / "movie2_tracks.csv"), plugin="napari-spt-diffusion")
    qtbot.waitUntil(lambda: "movie2" in dock.displays, timeout=5000)
    assert set(dock.displays) == {"movie1", "movie2"} and dock.display is dock.displays["movie2"]
    viewer.layers.remove("movie2 tracks")
    assert set(dock.displays) == {"movie1"} and dock.display is display


def test_load_settings_from_results(make_napari_viewer_proxy, config, tmp_path, monkeypatch, run):
    from napari_spt_diffusion import io

    _, results = run
    io.write_results(tmp_path / "r", results)
    viewer = make_napari_viewer_proxy()
    widget = TrackEstimateWidget(viewer)
    widget.threshold.value = 9.0
    widget.min_length.value = 30
    monkeypatch.setattr(_dialogs, "ask_open_path", lambda *a, **k: str(tmp_path / "r_tracks.csv"))
    values = widget.load_settings_from_results()
    assert values["model"] == "binding" and widget.model_combo.value == "binding"
    assert widget.acq_boxes["pixel_size_nm"].value == pytest.approx(160.0)
    assert widget.acq_boxes["frame_interval_s"].value == pytest.approx(0.02)
    assert widget.threshold.value == pytest.approx(results.meta["settings"]["detection"]["threshold_snr"])
    assert widget.min_length.value == results.meta["settings"]["min_track_length"]
    # a model file becomes "other model file" + its path; an unrelated JSON is one clear error
    assert values_from_meta({"settings": {"model": "/x/m.pt"}}) == {"model": "custom", "checkpoint": "/x/m.pt"}
    (tmp_path / "bad_meta.json").write_text(json.dumps({"hello": 1}))
    errors: list = []
    monkeypatch.setattr(_dialogs, "notify_error", lambda m: errors.append(str(m)))
    assert widget.load_settings_from_results(path=tmp_path / "bad_meta.json") is None
    assert errors and "records no settings" in errors[0]


def test_a_read_noise_set_in_the_widget_counts_as_known():
    values = {"model": "aniso", "device": "cpu", "threshold_snr": 5.0, "max_D_um2_s": 5.0, "memory_frames": 2,
              "min_track_length": 5}
    assert track_widget.pipeline_settings({**values, "read_noise_e": 1.5}).read_noise_known is False  # the default
    assert track_widget.pipeline_settings({**values, "read_noise_e": 0.8}).read_noise_known is True
    assert track_widget.pipeline_settings(values).read_noise_known is False
