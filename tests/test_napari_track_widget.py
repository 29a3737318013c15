"""The Track & Estimate dock widget: inputs, preview, run, cancel, export, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from napari_spt_diffusion._napari import _dialogs, track_widget
from napari_spt_diffusion._napari import layers as L
from napari_spt_diffusion._napari.track_widget import TrackEstimateWidget
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.results import Results
from napari_spt_diffusion.simulation.render import camera_image, expected_photons

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("_isolated")]

ACQ = Acquisition(pixel_size_nm=100.0, frame_interval_s=0.01)
SPOTS_YX = np.array([[10.3, 12.6], [30.2, 40.1], [50.7, 20.4], [45.1, 52.8]])


def static_spot_movie(n_frames: int = 4, shape=(64, 64), seed: int = 0) -> np.ndarray:
    """Four static spots of the standard brightness (camera counts, uint16)."""
    rng = np.random.default_rng(seed)
    expected = expected_photons(SPOTS_YX[:, None, :], shape, ACQ).sum(axis=0)
    return np.stack([camera_image(expected, ACQ, rng) for _ in range(n_frames)])


@pytest.fixture
def viewer_widget(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    data, kwargs, _ = L.image_layer(static_spot_movie(), ACQ.replace(pixel_size_nm=107.0), name="spots")
    viewer.add_image(data, **kwargs)
    widget = TrackEstimateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Track & Estimate")
    return viewer, widget


def test_prefill_from_layer_and_units_shown(viewer_widget):
    viewer, widget = viewer_widget
    assert widget.layer_combo.value.name == "spots"
    assert widget.acq_boxes["pixel_size_nm"].value == pytest.approx(107.0)
    assert widget.acq_boxes["frame_interval_s"].value == pytest.approx(0.01)
    assert widget.acq_boxes["pixel_size_nm"].native.suffix() == " nm"
    assert widget.acq_boxes["frame_interval_s"].native.suffix() == " s"
    assert "layer metadata" in widget.acq_source.value
    widget.acq_boxes["psf_sigma_nm"].value = 150.0
    acq = widget.acquisition_from_fields()
    assert acq.pixel_size_nm == pytest.approx(107.0) and acq.psf_sigma_nm == pytest.approx(150.0)


def test_prefill_from_layer_scale_units(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    viewer.add_image(np.zeros((3, 16, 16), np.uint16), scale=(0.05, 0.16, 0.16), units=("s", "um", "um"), name="plain")
    widget = TrackEstimateWidget(viewer)
    assert widget.acq_boxes["pixel_size_nm"].value == pytest.approx(160.0)
    assert widget.acq_boxes["frame_interval_s"].value == pytest.approx(0.05)
    assert "layer scale" in widget.acq_source.value


def test_bad_input_gives_one_notification(make_napari_viewer_proxy, _isolated):
    """A 2-D image, an RGB image and a labels layer: one clear sentence each, no exception."""
    viewer = make_napari_viewer_proxy()
    viewer.add_image(np.zeros((32, 32), np.uint16), name="2d")
    viewer.add_image(np.zeros((4, 32, 32, 3), np.uint8), rgb=True, name="rgb")
    viewer.add_labels(np.zeros((4, 32, 32), np.int32), name="labels")
    widget = TrackEstimateWidget(viewer)
    for name, expected in (("2d", "single 2-D image"), ("rgb", "RGB"), ("labels", "labels layer")):
        _isolated.clear()
        widget.layer_combo.value = viewer.layers[name]
        assert widget.run() is None
        assert widget.preview_detections() is None
        errors = [m for level, m in _isolated if level == "error"]
        assert len(errors) == 2 and all(expected in m for m in errors), (name, errors)
        assert all(m.count(". ") == 0 and m.endswith(".") for m in errors)  # one sentence
        assert widget.worker is None and widget.run_button.enabled


def test_preview_detections_current_frame(viewer_widget):
    viewer, widget = viewer_widget
    viewer.dims.set_current_step(0, 2)
    points = widget.preview_detections()
    assert points is not None and points.name == "detections (preview)"
    data = np.asarray(points.data)
    assert data.shape == (4, 3) and np.all(data[:, 0] == 2)
    # sub-pixel localizations within 0.3 px of the true spots
    d = np.linalg.norm(data[:, None, 1:] - SPOTS_YX[None], axis=-1)
    assert np.all(d.min(axis=1) < 0.3)
    assert points.scale[1] == pytest.approx(0.107)
    assert "4 detections" in widget.status.value
    # a very high threshold finds nothing, and the layer is replaced, not duplicated
    widget.threshold.value = 1000.0
    points = widget.preview_detections()
    assert len(points.data) == 0
    assert [layer.name for layer in viewer.layers].count("detections (preview)") == 1


def test_parameters_remembered_between_sessions(viewer_widget, make_napari_viewer_proxy):
    viewer, widget = viewer_widget
    widget.threshold.value = 7.5
    widget.model_combo.value = "binding"
    widget.device_combo.value = "cpu"
    widget.min_length.value = 12
    assert widget.split_box.value is True and widget.motion_box.value is True
    widget.split_box.value = False
    widget.motion_box.value = False
    other = TrackEstimateWidget(viewer)
    assert other.threshold.value == pytest.approx(7.5)
    assert other.model_combo.value == "binding"
    assert other.device_combo.value == "cpu"
    assert other.min_length.value == 12
    assert other.split_box.value is False
    settings = track_widget.pipeline_settings(other.values())
    assert settings.split_encounters is False and settings.min_track_length == 12
    assert other.motion_box.value is False and settings.motion_linking is False


def test_pipeline_error_becomes_notification(viewer_widget, qtbot, monkeypatch, _isolated):
    viewer, widget = viewer_widget

    def failing(movie, acquisition, settings, progress, should_stop):
        progress(0.1, "detecting")
        raise ValueError("no particles were found in the movie\nmore detail")

    monkeypatch.setattr(track_widget, "run_pipeline", failing)
    monkeypatch.setattr(track_widget, "pipeline_settings", lambda values: values)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert ("error", "no particles were found in the movie.") in _isolated
    assert widget.worker is None and widget.run_button.enabled and not widget.cancel_button.enabled
    assert widget.status.value.startswith("failed")


@pytest.fixture(scope="module")
def simulated():
    from napari_spt_diffusion.simulation import simulate_movie

    return simulate_movie((64, 64), 30, ACQ, 5, model="binding", particles=6)


def test_run_shows_results_then_export(viewer_widget, qtbot, monkeypatch, tmp_path, simulated, _isolated):
    """Widget plumbing with a stand-in job: progress, layers at the image's scale, export."""
    viewer, widget = viewer_widget
    seen = {}

    def job(movie, acquisition, settings, progress, should_stop):
        seen["acq"] = acquisition
        progress(0.5, "halfway")
        truth = simulated.truth  # as the pipeline's results do, they carry the run's acquisition
        return Results(truth.tracks, truth.summary, {**truth.meta, "acquisition": acquisition.to_dict()})

    monkeypatch.setattr(track_widget, "run_pipeline", job)
    monkeypatch.setattr(track_widget, "pipeline_settings", lambda values: values)
    widget.run()
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert seen["acq"].pixel_size_nm == pytest.approx(107.0)
    tracks = viewer.layers["spots tracks"]
    assert tuple(tracks.scale) == tuple(viewer.layers["spots"].scale)
    assert len(tracks.data) == len(simulated.truth.tracks)
    assert "spots tensor ellipses" in viewer.layers and "spots changepoints" in viewer.layers
    assert widget.export_button.enabled and widget.progress.value == 1000

    from napari_spt_diffusion import io

    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *a, **k: str(tmp_path / "run1.csv"))
    written = widget.export_csv()
    assert [p.name for p in written] == ["run1_tracks.csv", "run1_summary.csv", "run1_meta.json"]
    back = io.read_results(tmp_path / "run1")
    assert back.n_tracks == simulated.truth.n_tracks
    assert np.allclose(back.tracks["x_px"], simulated.truth.tracks["x_px"])
    import json

    meta = json.loads((tmp_path / "run1_meta.json").read_text())
    assert meta["acquisition"]["pixel_size_nm"] == pytest.approx(107.0)
    # exporting again to the same prefix never overwrites: one notification instead
    assert widget.export_csv() is None
    assert any(level == "error" and "exist" in m for level, m in _isolated)
    # a cancelled dialog writes nothing
    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *a, **k: None)
    assert widget.export_csv() is None


def test_cancel_plumbing(viewer_widget, qtbot, monkeypatch, _isolated):
    """Cancel sets should_stop; the job's Cancelled ends the run as 'cancelled', not an error."""
    import time

    from napari_spt_diffusion import pipeline

    viewer, widget = viewer_widget
    started = []

    def job(movie, acquisition, settings, progress, should_stop):
        started.append(True)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 20:
            if should_stop():
                raise pipeline.Cancelled("cancelled by the user")
            time.sleep(0.01)
        return None

    monkeypatch.setattr(track_widget, "run_pipeline", job)
    monkeypatch.setattr(track_widget, "pipeline_settings", lambda values: values)
    widget.run()
    qtbot.waitUntil(lambda: bool(started), timeout=5000)
    t0 = time.perf_counter()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=5000)
    assert time.perf_counter() - t0 < 5
    assert widget.status.value == "cancelled" and widget.results is None
    assert not [m for level, m in _isolated if level == "error"]


class _FrameGuard:
    """A ``(T, Y, X)`` array that records every read and refuses reads of more than one frame."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.frames_read = 0

    def __getitem__(self, key):
        out = self.data[key]
        n = 1 if out.ndim < 3 else out.shape[0]
        assert n <= 1, f"a read of {n} frames at once: {key!r}"
        self.frames_read += n
        return out


def test_run_on_a_dask_layer_reads_frame_by_frame(make_napari_viewer_proxy, qtbot, monkeypatch, toy_models):
    """A lazily loaded (dask) movie layer goes to the pipeline as it is: never turned into one array."""
    da = pytest.importorskip("dask.array")
    from napari_spt_diffusion import pipeline

    movie = static_spot_movie(n_frames=8)
    guard = _FrameGuard(movie)
    lazy = da.from_array(guard, chunks=(1, *movie.shape[1:]), asarray=False)
    viewer = make_napari_viewer_proxy()
    viewer.add_image(lazy, name="lazy", scale=(0.01, 0.1, 0.1))
    widget = TrackEstimateWidget(viewer)
    original = type(lazy).__array__

    def whole_array_refused(self, *args, **kwargs):
        assert not (self.ndim == 3 and self.shape[0] > 1), f"the whole {self.shape} movie was materialised"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(lazy), "__array__", whole_array_refused)
    viewer.dims.set_current_step(0, 3)
    points = widget.preview_detections()
    assert points is not None and len(points.data) == 4
    before = guard.frames_read
    monkeypatch.setattr(track_widget, "pipeline_settings", lambda values: pipeline.Settings(
        model=toy_models["sequence"], device="cpu", min_track_length=3))
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert "lazy tracks" in viewer.layers and len(viewer.layers["lazy tracks"].data) >= 4 * 6
    assert guard.frames_read - before >= movie.shape[0]  # every frame read, one at a time
    with pytest.raises(AssertionError, match="materialised"):  # the guard itself works
        np.asarray(lazy)


def test_an_emccd_measured_from_the_movie_is_named_beside_its_poisson_equivalent_fields(viewer_widget):
    from types import SimpleNamespace

    _, widget = viewer_widget
    measured = {"gain_adu_per_e": {"value": 10.0, "uncertainty": 0.3, "unit": "ADU/e-", "method": "EMCCD ..."},
                "background_photons": {"value": 10.0, "uncertainty": 0.5, "unit": "photons/px/frame", "method": ""},
                "camera": "emccd", "excess_noise_factor": 2.0}
    used = Acquisition(gain_adu_per_e=20.0, background_photons=5.0)
    widget._show_measured(SimpleNamespace(meta={"acquisition_measured": measured}, acquisition=used))
    assert widget.acq_boxes["gain_adu_per_e"].value == pytest.approx(20.0)  # what the run used
    assert "camera gain 10 ± 0.3" in widget.acq_source.value  # what was measured: photo-electrons
    assert "EMCCD" in widget.acq_source.value and "Poisson-equivalent" in widget.acq_source.value
    measured["camera"] = "poisson"
    widget._show_measured(SimpleNamespace(meta={"acquisition_measured": measured}, acquisition=used))
    assert "EMCCD" not in widget.acq_source.value


def test_a_measured_emccd_read_noise_is_shown_but_not_kept_for_the_next_movie(viewer_widget):
    """The read noise is the user's assumption for an sCMOS/CCD: an EMCCD's measured one is shown, not written into
    the field (the fields are remembered, and 0.3 e- assumed for the next sCMOS movie misread its gain); a
    measurement without an uncertainty is shown without one."""
    from types import SimpleNamespace

    _, widget = viewer_widget
    widget.acq_boxes["read_noise_e"].value = 1.5
    measured = {"gain_adu_per_e": {"value": 15.0, "uncertainty": None, "unit": "ADU/e-", "method": "EMCCD ..."},
                "read_noise_e": {"value": 0.6, "uncertainty": 0.4, "unit": "e-", "method": "EMCCD"},
                "camera": "emccd", "excess_noise_factor": 2.0}
    used = Acquisition(gain_adu_per_e=30.0, read_noise_e=0.3)
    widget._show_measured(SimpleNamespace(meta={"acquisition_measured": measured}, acquisition=used))
    assert widget.acq_boxes["read_noise_e"].value == pytest.approx(1.5)
    assert widget.acq_boxes["gain_adu_per_e"].value == pytest.approx(30.0)
    assert "camera read noise 0.6 ± 0.4" in widget.acq_source.value and "camera gain 15 ADU" in widget.acq_source.value
