"""Track & Estimate widget with the real pipeline on the bundled sample movie (CPU).

The movie is cut to its first frames to keep the test fast. The run uses a bundled
model when the package has one; the plumbing test uses a tiny, untrained model
exported here through the checkpoint code, chosen in the widget as a model file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_spt_diffusion import io
from napari_spt_diffusion._napari import _dialogs
from napari_spt_diffusion._napari import layers as L
from napari_spt_diffusion._napari.track_widget import TrackEstimateWidget
from napari_spt_diffusion.acquisition import Acquisition

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("_isolated")]

N_FRAMES = 40


@pytest.fixture(scope="module")
def sample():
    movie = io.read_movie(io.sample_movie_path())
    acq = movie.acquisition()
    data = np.array(movie.data[:N_FRAMES])
    movie.close()
    return data, acq


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from napari_spt_diffusion.training.card import export_checkpoint
    from napari_spt_diffusion.training.models import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(
        kind="pointwise", embed_dim=16, n_heads=2, mlp_hidden=32, n_cross=1, n_self=1, n_joint=1,
        cnn_channels=(4, 8), head_hidden=16,
    )
    card = {
        "kind": "pointwise",
        "motion_model": "binding",
        "input_contract": {"patch_size_px": 11, "min_frames": 5, "max_frames": 30},
        "outputs": {"columns": ["D1_px2_frame", "D2_px2_frame", "sin2theta", "cos2theta"]},
        "training_acquisition": Acquisition().to_dict(),
    }
    return export_checkpoint(build_model(cfg), card, tmp_path_factory.mktemp("ckpt"), "tiny")


@pytest.fixture
def viewer_widget(make_napari_viewer_proxy, sample):
    viewer = make_napari_viewer_proxy()
    data, acq = sample
    movie, kwargs, _ = L.image_layer(data, acq, name="sample")
    viewer.add_image(movie, **kwargs)
    widget = TrackEstimateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Track & Estimate")
    widget.device_combo.value = "cpu"
    return viewer, widget


def _run_and_wait(widget, qtbot, timeout_ms=120_000):
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout_ms)


def _check_results_layers(viewer, widget, sample):
    data, acq = sample
    res = widget.results
    assert res is not None and res.n_tracks > 5
    tracks = viewer.layers["sample tracks"]
    assert tuple(tracks.scale) == pytest.approx((acq.frame_interval_s, acq.pixel_size_um, acq.pixel_size_um))
    assert tracks.data.shape == (len(res.tracks), 4)
    keys = np.asarray(tracks.data)[:, :2]
    assert np.array_equal(np.lexsort((keys[:, 1], keys[:, 0])), np.arange(len(keys)))
    for col in ("D1_um2_s", "D2_um2_s", "theta_deg", "anisotropy", "state", "D_msd_um2_s", "D_cve_um2_s"):
        assert col in tracks.features.columns
    assert tracks.features["track_id"].to_numpy().tolist() == keys[:, 0].astype(int).tolist()
    assert np.all(np.asarray(tracks.data)[:, 1] < N_FRAMES)
    ellipses = viewer.layers["sample tensor ellipses"]
    assert ellipses.nshapes > 0 and tuple(ellipses.scale) == tuple(tracks.scale)
    # a changepoints layer only when there are changepoints (no empty layer left behind)
    assert ("sample changepoints" in viewer.layers) == bool(res.summary["n_changepoints"].sum() > 0)
    assert widget.progress.value == 1000 and widget.export_button.enabled


def test_end_to_end_with_model_file_and_export(viewer_widget, qtbot, monkeypatch, tmp_path, sample, tiny_checkpoint,
                                               _isolated):
    viewer, widget = viewer_widget
    widget.model_combo.value = "custom"
    assert not widget.checkpoint.native.isHidden()  # shown for a model file (viewer window not shown)
    widget.checkpoint.value = tiny_checkpoint
    _run_and_wait(widget, qtbot)
    assert not [m for level, m in _isolated if level == "error"], _isolated
    _check_results_layers(viewer, widget, sample)
    # an untrained model: the guard may find it biased on this movie and report the
    # classical values instead, flagged on every track
    guard = widget.results.meta["guard"]
    expected = {"classical"} if guard["rejected"] else {"tiny"}
    assert set(widget.results.summary["model"]) == expected
    warnings = widget.results.summary["warnings"].astype(object).fillna("").astype(str)
    assert warnings.str.contains("model_rejected").all() == guard["rejected"]

    monkeypatch.setattr(_dialogs, "ask_save_path", lambda *a, **k: str(tmp_path / "sample_run.csv"))
    written = widget.export_csv()
    assert [p.name for p in written] == ["sample_run_tracks.csv", "sample_run_summary.csv", "sample_run_meta.json"]
    back = io.read_results(tmp_path / "sample_run")
    assert back.n_tracks == widget.results.n_tracks
    assert np.allclose(back.summary["D1_um2_s"], widget.results.summary["D1_um2_s"], rtol=1e-6, equal_nan=True)
    meta = json.loads((tmp_path / "sample_run_meta.json").read_text())
    assert meta["acquisition"]["pixel_size_nm"] == pytest.approx(sample[1].pixel_size_nm)


def test_cancel_stops_the_real_run(viewer_widget, qtbot, tiny_checkpoint, _isolated):
    import time

    viewer, widget = viewer_widget
    widget.model_combo.value = "custom"
    widget.checkpoint.value = tiny_checkpoint
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value > 0 or "detect" in widget.status.value, timeout=30_000)
    t0 = time.perf_counter()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert time.perf_counter() - t0 < 10
    assert widget.status.value == "cancelled" and widget.results is None
    assert "sample tracks" not in viewer.layers
    assert not [m for level, m in _isolated if level == "error"]
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_missing_model_file_is_one_notification(viewer_widget, _isolated):
    viewer, widget = viewer_widget
    widget.model_combo.value = "custom"
    assert widget.run() is None
    assert [level for level, _ in _isolated] == ["error"] and "model file" in _isolated[0][1]


def test_end_to_end_bundled_binding_model(viewer_widget, qtbot, sample, _isolated):
    from napari_spt_diffusion.estimation.checkpoint import available_models

    if "binding" not in available_models():
        pytest.skip("no bundled 'binding' model in this checkout yet")
    viewer, widget = viewer_widget
    widget.model_combo.value = "binding"
    _run_and_wait(widget, qtbot)
    assert not [m for level, m in _isolated if level == "error"], _isolated
    _check_results_layers(viewer, widget, sample)


def _foreign_na08_movie():
    from napari_spt_diffusion.validation.foreign_renderer import (
        ForeignCamera,
        ForeignMotion,
        ForeignOptics,
        ForeignScene,
        render_foreign_movie,
    )

    scene = ForeignScene(shape_yx=(96, 96), n_frames=40, n_particles=14, photons=3000.0, background=600.0)
    return render_foreign_movie(scene, ForeignOptics(na=0.8, wavelength_nm=640.0), ForeignCamera(),
                                ForeignMotion(kind="free"), 4201)


def _run_on_foreign_movie(viewer, truth, qtbot):
    """The widget run with its defaults (CPU, tracks of >= 10 frames) on the foreign movie as a plain image."""
    viewer.add_image(truth.movie, name="foreign", scale=(0.01, 0.1, 0.1), axis_labels=("t", "y", "x"),
                     units=("s", "um", "um"))
    widget = TrackEstimateWidget(viewer)
    widget.device_combo.value = "cpu"
    widget.min_length.value = 10
    _run_and_wait(widget, qtbot)
    return widget


def test_a_movie_from_another_microscope_is_calibrated_and_the_biased_model_rejected(
        make_napari_viewer_proxy, qtbot, _isolated, monkeypatch):
    """A movie from the independent renderer (Airy PSF, sCMOS camera of unknown gain and
    offset), opened as a plain image: the widget measures the acquisition, shows it in the
    fields, and warns that the guard reported the classical values. (No bundled model for any
    microscope to switch to here: the rejection path.)"""
    from napari_spt_diffusion.estimation import model_choice

    monkeypatch.setattr(model_choice, "ALTERNATIVES", {})
    truth = _foreign_na08_movie()
    widget = _run_on_foreign_movie(make_napari_viewer_proxy(), truth, qtbot)
    res = widget.results
    measured = res.meta["acquisition_measured"]
    assert measured["psf_sigma_nm"]["value"] == pytest.approx(truth.acquisition["psf_sigma_equivalent_nm"], rel=0.05)
    assert widget.acq_boxes["psf_sigma_nm"].value == pytest.approx(measured["psf_sigma_nm"]["value"], rel=1e-3)
    assert widget.acq_source.value.startswith("measured from the movie")
    assert res.meta["guard"]["rejected"]
    assert set(res.summary["method"]) == {"classical"}
    qtbot.waitUntil(lambda: any(level == "warning" and ("biased" in m or "outside" in m) for level, m in _isolated),
                    timeout=5000)
    assert "model rejected" in widget.status.value


def test_the_model_for_any_microscope_takes_over_in_the_widget(make_napari_viewer_proxy, qtbot, _isolated):
    """The same movie with the defaults: 'aniso' was not trained for it, 'aniso_any' runs instead and
    the widget says so."""
    truth = _foreign_na08_movie()
    widget = _run_on_foreign_movie(make_napari_viewer_proxy(), truth, qtbot)
    res = widget.results
    assert res.meta["model"] == "aniso_any"
    assert res.meta["model_switch"]["asked"] == "aniso"
    qtbot.waitUntil(lambda: any(level == "warning" and "is used instead" in m for level, m in _isolated),
                    timeout=5000)
    widget.keep_box.value = True  # "keep this model": the settings ask for no switch
    from napari_spt_diffusion._napari.track_widget import pipeline_settings

    assert pipeline_settings(widget.values()).model_switch is False
    assert pipeline_settings(widget.values()).rescale_model is True
    widget.scale_box.value = True  # "keep the model's scale"
    assert pipeline_settings(widget.values()).rescale_model is False
    assert pipeline_settings(widget.values()).model_range_check is True
    widget.range_box.value = True  # "keep the model's values beyond its D range"
    assert pipeline_settings(widget.values()).model_range_check is False
