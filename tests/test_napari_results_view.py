"""Results layers in a viewer, the results dock (timeline, histogram, table, colour by)."""

from __future__ import annotations

import numpy as np
import pytest
from test_napari_layers import results_from_trajectories

from napari_spt_diffusion._napari import layers as L
from napari_spt_diffusion._napari.results_widget import show_results
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation.trajectories import simulate_binding

pytestmark = pytest.mark.gui

ACQ = Acquisition(pixel_size_nm=100.0, frame_interval_s=0.01)


@pytest.fixture(scope="module")
def binding():
    return results_from_trajectories(simulate_binding(6, 30, ACQ, rng=3), "binding", offset_px=(30, 30))


@pytest.fixture
def viewer_with_movie(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    movie = np.full((30, 64, 64), 100, np.uint16)
    data, kwargs, _ = L.image_layer(movie, ACQ)
    viewer.add_image(data, **kwargs)
    return viewer


def test_show_results_layers_and_dock(viewer_with_movie, binding, qtbot):
    viewer = viewer_with_movie
    display, widget = show_results(viewer, binding, ACQ)
    names = [layer.name for layer in viewer.layers]
    assert {"tracks", "tensor ellipses", "changepoints"} <= set(names)
    tracks = viewer.layers["tracks"]
    assert tracks.scale[1] == pytest.approx(0.1) and tracks.scale[0] == pytest.approx(0.01)
    assert tracks.color_by == "D1 colour"
    assert len(tracks.features) == len(binding.tracks)
    assert viewer.layers["tensor ellipses"].nshapes == len(binding.tracks)  # few: all built at once
    assert len(viewer.layers["changepoints"].data) == int(binding.summary["n_changepoints"].sum())
    assert widget.table.rowCount() == binding.n_tracks
    assert "um²/s" in widget.colorbar.scale.title
    # the scale is also written on the canvas (napari's text overlay)
    legend = viewer.canvas.overlays["text"]
    assert legend.visible and legend.text.startswith("colour: D1 (um²/s)")

    # colour by D2 -> tracks colour feature and colour bar follow
    widget.color_combo.setCurrentIndex(widget.color_combo.findData("D2"))
    assert tracks.color_by == "D2 colour" and widget.colorbar.scale.key == "D2"
    assert legend.text.startswith("colour: D2 (um²/s)")
    # state is categorical
    widget.color_combo.setCurrentIndex(widget.color_combo.findData("state"))
    assert tracks.color_by == "state colour"

    # table row -> track selected, timeline shows it, highlight layer holds it
    with qtbot.waitSignal(display.selection_changed, timeout=2000):
        widget.table.selectRow(2)
    tid = widget.table.item(2, 0).data(0x0100)
    assert display.selected_track == tid
    assert widget.timeline.track_id == tid
    assert len(widget.timeline.frames) == 30
    cps = [int(c) for c in str(binding.summary.set_index("track_id").loc[tid, "changepoint_frames"]).split(";") if c]
    assert widget.timeline.changepoints == cps
    assert len(display.selected_layer.data) == 30

    # clicking the timeline moves the viewer to that frame
    widget.timeline.frame_clicked.emit(17)
    assert viewer.dims.current_step[0] == 17
    assert widget.timeline.current_frame == 17

    # ellipse scale factor doubles the semi-axes
    before = np.asarray(viewer.layers["tensor ellipses"].data[0])
    widget.ellipse_factor.setValue(2.0)
    after = np.asarray(viewer.layers["tensor ellipses"].data[0])
    size = lambda c: np.linalg.norm(c[0, 1:] - c[2, 1:])  # noqa: E731
    assert size(after) == pytest.approx(2 * size(before), rel=1e-4)


def test_ellipses_follow_frame_when_many(viewer_with_movie, binding):
    viewer = viewer_with_movie
    display, _ = show_results(viewer, binding, ACQ, max_static_ellipses=10)
    layer = viewer.layers["tensor ellipses"]
    assert display.follow_frame
    assert layer.nshapes == 6  # one per track in frame 0
    viewer.dims.set_current_step(0, 5)
    assert layer.nshapes == 6
    assert set(np.asarray(layer.features["frame"])) == {5}
    assert all(np.allclose(np.asarray(s)[:, 0], 5) for s in layer.data)


def test_click_selects_nearest_track(viewer_with_movie, binding):
    viewer = viewer_with_movie
    display, widget = show_results(viewer, binding, ACQ)
    row = binding.tracks[(binding.tracks.track_id == 4) & (binding.tracks.frame == 0)]
    yx = row[["y_px", "x_px"]].to_numpy()[0]
    assert display.track_near(yx + 0.5, 0) == 4
    assert display.track_near(yx + 50, 0) is None
    display.select_track(4)
    assert widget.timeline.track_id == 4
    display.select_track(None)
    assert widget.timeline.track_id is None


def test_canvas_click_without_drag_selects(viewer_with_movie, binding):
    """The viewer mouse callback: press + release at a track's position selects it; a drag does not."""
    from types import SimpleNamespace

    viewer = viewer_with_movie
    display, widget = show_results(viewer, binding, ACQ)
    viewer.dims.set_current_step(0, 3)
    row = binding.tracks[(binding.tracks.track_id == 2) & (binding.tracks.frame == 3)]
    world = np.array([3 * ACQ.frame_interval_s, *(row[["y_px", "x_px"]].to_numpy()[0] * ACQ.pixel_size_um)])

    def click(positions):
        event = SimpleNamespace(type="mouse_press", position=tuple(positions[0]), modifiers=[])
        gen = display._on_mouse_drag(viewer, event)
        next(gen)
        for pos in positions[1:]:
            event.type, event.position = "mouse_move", tuple(pos)
            next(gen)
        event.type = "mouse_release"
        with pytest.raises(StopIteration):
            next(gen)

    click([world, world + [0, 2.0, 2.0]])  # dragged: a pan, no selection
    assert display.selected_track is None
    click([world])
    assert display.selected_track == 2 and widget.timeline.track_id == 2


def test_table_shows_the_pipeline_flags(viewer_with_movie, binding):
    from napari_spt_diffusion._napari.results_widget import TABLE_COLUMNS
    from napari_spt_diffusion.results import Results

    summary = binding.summary.copy()
    summary["warnings"] = ["clipped" if i == 0 else "" for i in range(len(summary))]
    flagged = Results(binding.tracks, summary, dict(binding.meta))
    _, widget = show_results(viewer_with_movie, flagged, ACQ)
    col = [c[0] for c in TABLE_COLUMNS].index("warnings")
    texts = {widget.table.item(r, 0).data(0x0100): widget.table.item(r, col).text()
             for r in range(widget.table.rowCount())}
    first = int(summary["track_id"].iloc[0])
    assert texts[first] == "clipped"
    assert all(t == "" for k, t in texts.items() if k != first)
    # a table without the column (e.g. a contract CSV from elsewhere) shows empty cells
    _, plain = show_results(viewer_with_movie, binding, ACQ)
    assert all(plain.table.item(r, col).text() == "" for r in range(plain.table.rowCount()))


def test_the_isotropy_column_and_the_movies_verdict(viewer_with_movie, binding):
    from napari_spt_diffusion._napari.results_widget import TABLE_COLUMNS
    from napari_spt_diffusion.estimation.isotropy import movie_isotropy
    from napari_spt_diffusion.results import Results

    summary = binding.summary.copy()
    summary["isotropy_p"] = np.linspace(0.001, 0.9, len(summary))
    meta = {**binding.meta, "isotropy": movie_isotropy(summary["isotropy_p"]).to_dict()}
    _, widget = show_results(viewer_with_movie, Results(binding.tracks, summary, meta), ACQ)
    col = [c[0] for c in TABLE_COLUMNS].index("isotropy_p")
    texts = {widget.table.item(r, 0).data(0x0100): widget.table.item(r, col).text()
             for r in range(widget.table.rowCount())}
    assert texts[int(summary["track_id"].iloc[0])] == "0.001"
    assert widget.info.text().endswith("\n" + meta["isotropy"]["text"])
    _, plain = show_results(viewer_with_movie, binding, ACQ)  # no column, no verdict: "–" cells, no line
    assert plain.table.item(0, col).text() == "–" and "Isotropy" not in plain.info.text()


def test_the_info_line_counts_the_tracks_beyond_the_models_range(viewer_with_movie, binding):
    from napari_spt_diffusion._napari.results_widget import beyond_range_count
    from napari_spt_diffusion.results import Results

    summary = binding.summary.copy()
    summary["method"] = ["classical", "classical", "model"] + ["model"] * (len(summary) - 3)
    # the first two given the classical values (one of them also clipped); the third kept by --trust-model
    summary["warnings"] = ["beyond_model_range", "beyond_model_range;clipped", "beyond_model_range"] + [""] * (
        len(summary) - 3)
    flagged = Results(binding.tracks, summary, dict(binding.meta))
    assert beyond_range_count(flagged) == 2 and beyond_range_count(binding) == 0
    _, widget = show_results(viewer_with_movie, flagged, ACQ)
    assert "classical values for 2 tracks beyond its D range" in widget.info.text()


def test_msd_tab_draws_ensemble_and_selected_track(viewer_with_movie, binding, qtbot):
    """The MSD tab: the ensemble curve with its fit, then the selected track's curve and fit (log-log, units)."""
    from napari_spt_diffusion.estimation.msd import results_msd_table

    display, widget = show_results(viewer_with_movie, binding, ACQ)
    assert widget.tabs.tabText(widget.msd_tab) == "MSD"
    widget.tabs.setCurrentIndex(widget.msd_tab)
    canvas = widget.msd
    assert canvas.ax.get_xscale() == "log" and canvas.ax.get_yscale() == "log"
    assert canvas.ax.get_xlabel() == "lag (s)" and canvas.ax.get_ylabel() == "MSD (um²)"
    table = results_msd_table(binding)
    ensemble = table[table["curve"] == "ensemble"]
    assert len(canvas.ax.lines) == 2  # ensemble points and fit line, no track yet
    np.testing.assert_allclose(canvas.ax.lines[0].get_xdata(), ensemble["lag_s"], rtol=1e-12)
    with qtbot.waitSignal(display.selection_changed, timeout=2000):
        widget.table.selectRow(1)
    tid = widget.table.item(1, 0).data(0x0100)
    assert canvas.track_id == tid and len(canvas.ax.lines) == 4
    mine = table[(table["curve"] == "track") & (table["track_id"] == tid)]
    np.testing.assert_allclose(canvas.ax.lines[2].get_ydata(), mine["msd_um2"], rtol=1e-12)
    fit = mine["msd_fit_um2"].to_numpy()
    np.testing.assert_allclose(canvas.ax.lines[3].get_ydata(), fit[fit > 0], rtol=1e-12)
    assert f"track {tid}" in canvas.ax.get_title()
    widget.set_display(None)
    assert canvas.table is None and len(canvas.ax.lines) == 0
