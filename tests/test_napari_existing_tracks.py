"""Track & Estimate widget, "Estimate on existing tracks": a Tracks layer or a track file -> results dock."""

from __future__ import annotations

import numpy as np
import pytest

from napari_spt_diffusion._napari import _dialogs
from napari_spt_diffusion._napari import layers as L
from napari_spt_diffusion._napari._existing_tracks import FROM_FILE
from napari_spt_diffusion._napari.results_widget import _results_widget_for
from napari_spt_diffusion._napari.track_widget import TrackEstimateWidget
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation.movie import simulate_movie

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("_isolated")]

ACQ = Acquisition()  # 100 nm pixels, 10 ms frames


@pytest.fixture(scope="module")
def movie():
    return simulate_movie((48, 48), 40, ACQ, rng=11, model="aniso", particles=6, D1_range_um2_s=(0.5, 2.0))


@pytest.fixture
def ran(make_napari_viewer_proxy, qtbot, movie, toy_models):
    """A viewer with the movie, the widget set to the toy model, and one real Track & Estimate run done."""
    viewer = make_napari_viewer_proxy()
    data, kwargs, _ = L.image_layer(movie.movie, ACQ, name="sim")
    viewer.add_image(data, **kwargs)
    widget = TrackEstimateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Track & Estimate")
    widget.model_combo.value = "custom"
    widget.checkpoint.value = toy_models["pointwise"]
    widget.device_combo.value = "cpu"
    widget.measure_box.value = False
    widget.min_length.value = 5
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.results is not None and widget.results.n_tracks >= 3, widget.status.value
    return viewer, widget, widget.results


def _dock_tensors(widget):
    results = widget.display.results
    s = results.summary.set_index("track_id").sort_index()
    return s[["D1_um2_s", "D2_um2_s"]].to_numpy()


def _run_tensors(results):
    return results.summary.set_index("track_id").sort_index()[["D1_um2_s", "D2_um2_s"]].to_numpy()


def test_estimate_on_the_run_tracks_layer_gives_the_run_values(ran, qtbot):
    viewer, widget, first = ran
    choices = list(widget.tracks_combo.choices)
    assert viewer.layers["sim tracks"] in choices and FROM_FILE in choices
    assert not any(getattr(c, "name", "") == "sim selected track" for c in choices)
    assert widget.tracks_combo.value.name == "sim tracks"  # the first Tracks layer, once there is one
    widget.tracks_combo.value = viewer.layers["sim tracks"]
    assert widget.estimate_existing() is not None
    assert not widget.estimate_button.enabled and not widget.run_button.enabled
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.estimate_button.enabled and widget.run_button.enabled
    assert widget.status.value.startswith("done"), widget.status.value
    assert "sim imported tracks" in viewer.layers and "sim tracks" in viewer.layers
    assert widget.display.prefix == "sim imported "
    assert widget.results.meta["tracks_source"]["photometry"] == "from the tracks"
    np.testing.assert_allclose(_dock_tensors(widget), _run_tensors(first), rtol=1e-6, atol=1e-12)
    assert widget.results.summary["track_id"].tolist() == sorted(first.summary["track_id"].tolist())
    # both runs stay in the results dock, and its MSD tab has the curves of the new one
    dock = _results_widget_for(viewer)
    assert {"sim", "sim imported"} <= set(dock.displays)
    assert dock.msd.table is not None and (dock.msd.table["curve"] == "ensemble").any()


def test_estimate_on_a_track_file(ran, qtbot, tmp_path, monkeypatch, _isolated):
    from napari_spt_diffusion import io

    viewer, widget, first = ran
    io.write_results(tmp_path / "run", first)
    widget.tracks_combo.value = FROM_FILE
    monkeypatch.setattr(_dialogs, "ask_open_path", lambda *a, **k: None)
    assert widget.estimate_existing() is None  # a cancelled dialog starts nothing
    monkeypatch.setattr(_dialogs, "ask_open_path", lambda *a, **k: str(tmp_path / "run_tracks.csv"))
    assert widget.estimate_existing() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.value.startswith("done"), widget.status.value
    assert widget.results.meta["tracks_source"]["format"] == "ours"
    np.testing.assert_allclose(_dock_tensors(widget), _run_tensors(first), rtol=1e-6, atol=1e-12)
    # a bad file: one notification, nothing started
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    assert widget.estimate_existing(path=str(bad)) is None
    assert any(level == "error" for level, _ in _isolated)
