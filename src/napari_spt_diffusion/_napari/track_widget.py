"""The "Track & Estimate" dock widget.

Pick the movie layer, check the acquisition (prefilled from the layer / TIFF metadata;
a collapsible group), choose the motion model and device, tune detection with "Preview
detections", then "Run": :func:`napari_spt_diffusion.pipeline.track_and_estimate` runs in
a worker thread with a progress bar and a working Cancel, and the results appear as
layers plus the results dock; every warning of the run becomes a napari notification and
a line in the widget. "Estimate on existing tracks" runs only the estimation on the
tracks of a Tracks layer or of a track file (TrackMate, trackpy, ours) in the same way.
"Export CSV" writes the results contract; "Load settings from results" fills the fields
from a ``_meta.json``. The dock scrolls: it fits a 1280 x 800 screen.

No science here: every computation is a library call.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QSizePolicy

from ..acquisition import Acquisition
from ..acquisition_resolver import resolve_acquisition
from ..simulation.motion_models import MOTION_MODELS
from . import _dialogs, _existing_tracks
from ._inputs import acquisition_values_from_layer, current_frame_index, movie_from_layer
from ._layout import collapsible, mount_scrollable, stack
from ._persist import load_values, save_values
from .layers import LayerGeometry, detections_layer
from .results_widget import WARNING_STYLE, beyond_range_count, run_warnings, show_results
from .writer import results_prefix

__all__ = ["TrackEstimateWidget", "MODEL_CHOICES", "DEVICE_CHOICES", "values_from_meta"]

#: (label, bundled model name): one per motion model of the registry, then a model file
MODEL_CHOICES: tuple[tuple[str, str], ...] = (
    *((m.label, name) for name, m in MOTION_MODELS.items()),
    ("other model file (.pt)", "custom"),
)
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
SETTINGS_NAME = "track_estimate"
#: Delay of the warning notifications after a run (ms): the window's layout settles first.
NOTIFY_DELAY_MS = 150

#: Acquisition fields shown: name -> (label, unit suffix, min, max, step, decimals)
ACQUISITION_FIELDS: dict[str, tuple[str, str, float, float, float, int]] = {
    "pixel_size_nm": ("pixel size", " nm", 1.0, 100_000.0, 1.0, 1),
    "frame_interval_s": ("frame interval", " s", 1e-5, 1000.0, 0.001, 5),
    "psf_sigma_nm": ("PSF sigma", " nm", 1.0, 100_000.0, 5.0, 1),
    "signal_photons": ("signal", " photons/frame", 0.0, 1e9, 50.0, 0),
    "background_photons": ("background", " photons/px", 0.0, 1e7, 1.0, 1),
    "gain_adu_per_e": ("camera gain", " ADU/e⁻", 1e-4, 1e4, 0.1, 3),
    "offset_adu": ("camera offset", " ADU", -65535.0, 65535.0, 1.0, 1),  # negative: shifted signed data
    # assumed where an sCMOS/CCD is measured (a warning says when the background's noise calls for less); a value
    # other than the default counts as known (pipeline_settings)
    "read_noise_e": ("camera read noise", " e⁻", 0.0, 1000.0, 0.1, 2),
}


class _ProgressRelay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progress = Signal(float, str)


def _float_box(
    name: str, label: str, suffix: str, lo: float, hi: float, step: float, decimals: int, value: float
) -> FloatSpinBox:
    box = FloatSpinBox(name=name, label=label, min=lo, max=hi, step=step, value=min(max(value, lo), hi))
    box.native.setDecimals(decimals)
    box.native.setSuffix(suffix)
    box.native.setKeyboardTracking(False)
    return box


def pipeline_settings(values: dict[str, Any]) -> Any:
    """Build :class:`napari_spt_diffusion.pipeline.Settings` from the widget's values."""
    from .. import pipeline
    from ..tracking import DetectionSettings

    model = values["model"]
    if model == "custom":
        path = str(values.get("checkpoint") or "").strip()
        if not path or not Path(path).is_file():
            raise ValueError("Choose the model file (.pt) of your own checkpoint, or a bundled model")
        model = path
    return pipeline.Settings(
        model=model,
        device=values["device"],
        detection=DetectionSettings(threshold_snr=float(values["threshold_snr"])),
        max_D_um2_s=float(values["max_D_um2_s"]),
        memory_frames=int(values["memory_frames"]),
        min_track_length=int(values["min_track_length"]),
        split_encounters=bool(values.get("split_encounters", True)),
        motion_linking=bool(values.get("motion_linking", True)),
        trust_model=bool(values.get("trust_model", False)),
        model_switch=not bool(values.get("keep_model", False)),
        rescale_model=not bool(values.get("keep_model_scale", False)),
        model_range_check=not bool(values.get("keep_model_beyond_range", False)),
        measure=tuple(values.get("measure", ())),
        # the read-noise field holds the assumed 1.5 e- unless the user set another value: that one is known
        read_noise_known=values.get("read_noise_e") is not None
        and abs(float(values["read_noise_e"]) - Acquisition().read_noise_e) > 1e-9,
    )


def run_pipeline(movie: Any, acquisition: Acquisition, settings: Any, progress: Any, should_stop: Any) -> Any:
    """The worker's job: one library call (kept at module level so tests can patch it).

    The library's own warnings are not relayed from the thread: the results record
    every one of them (``meta``), and the widget shows them once each when the run ends.
    """
    from .. import pipeline

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"napari_spt_diffusion(\.|$)")
        return pipeline.track_and_estimate(movie, acquisition, settings, progress=progress, should_stop=should_stop)


def values_from_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Widget values recorded in a results ``_meta.json`` (its ``settings`` and ``acquisition``).

    Returns the keys of :meth:`TrackEstimateWidget.values` that the file records (a
    model given as a file path becomes ``model="custom"`` plus ``checkpoint``); unknown
    entries are left out. Raises :class:`ValueError` when the file records neither.
    """
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    acquisition = meta.get("acquisition") if isinstance(meta.get("acquisition"), dict) else {}
    if not settings and not acquisition:
        raise ValueError("this _meta.json records no settings and no acquisition (was it written by a run?)")
    out: dict[str, Any] = {k: float(acquisition[k]) for k in ACQUISITION_FIELDS if acquisition.get(k) is not None}
    for key in ("max_D_um2_s", "memory_frames", "min_track_length", "split_encounters", "motion_linking", "device"):
        if settings.get(key) is not None:
            out[key] = settings[key]
    detection = settings.get("detection") if isinstance(settings.get("detection"), dict) else {}
    if detection.get("threshold_snr") is not None:
        out["threshold_snr"] = float(detection["threshold_snr"])
    model = settings.get("model") or meta.get("model")
    if model:
        bundled = {name for _, name in MODEL_CHOICES}
        out.update({"model": model} if model in bundled else {"model": "custom", "checkpoint": str(model)})
    return out


class TrackEstimateWidget(Container):
    """Dock widget: detect, link and estimate diffusion tensors on a movie layer.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when docking the widget).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.results: Any = None
        self.acquisition: Acquisition | None = None
        self.display: Any = None
        self.worker: Any = None
        self._stop = threading.Event()
        self._relay = _ProgressRelay()
        self._relay.progress.connect(self._on_progress)
        self._loading = False

        self.layer_combo = ComboBox(name="layer", label="movie", choices=self._layer_choices)
        defaults = Acquisition()
        self.acq_boxes = {
            name: _float_box(name, label, suffix, lo, hi, step, dec, float(getattr(defaults, name)))
            for name, (label, suffix, lo, hi, step, dec) in ACQUISITION_FIELDS.items()
        }
        self.acq_source = Label(name="acq_source", label="calibration", value="")
        self.measure_box = CheckBox(name="measure_acquisition", text="measure camera and PSF from the movie",
                                    value=True)
        self.measure_box.tooltip = ("Measure camera gain and offset, background, PSF width and signal from the movie "
                                    "wherever the file does not store them; the fields then show the measured values")
        self.model_combo = ComboBox(name="model", label="motion model", choices=list(MODEL_CHOICES), value="aniso")
        self.checkpoint = FileEdit(name="checkpoint", label="model file", mode="r", filter="*.pt", visible=False)
        self.checkpoint.tooltip = "A checkpoint made by `spt-diffusion train` (its .json model card must lie beside it)"
        self.device_combo = ComboBox(name="device", label="device", choices=list(DEVICE_CHOICES), value="auto")
        self.threshold = _float_box("threshold_snr", "detection threshold", " × noise", 0.5, 1000.0, 0.5, 1, 5.0)
        self.max_D = _float_box("max_D_um2_s", "max D (linking)", " um²/s", 0.001, 1000.0, 0.5, 3, 6.0)
        self.memory = SpinBox(name="memory_frames", label="gap memory (frames)", min=0, max=50, value=2)
        self.min_length = SpinBox(
            name="min_track_length", label="min track length (frames)", min=2, max=100_000, value=5
        )
        self.motion_box = CheckBox(name="motion_linking", text="relink by each particle's motion", value=True)
        self.motion_box.tooltip = ("Relink trackpy's nearest-neighbour tracks with each particle's own diffusivity, so "
                                   "that a slow particle is not handed the steps of a fast one passing by")
        self.split_box = CheckBox(name="split_encounters", text="cut tracks where particles meet", value=True)
        self.split_box.tooltip = ("Cut a track where another particle came close enough that the two may have swapped "
                                  "identities: shorter tracks, each holding one particle")
        self.trust_box = CheckBox(name="trust_model", text="report the model even if the guard rejects it", value=False)
        self.trust_box.tooltip = ("The guard compares the model with the classical estimate over all tracks; when the "
                                  "model is biased on this movie the classical values are reported unless this is on")
        self.keep_box = CheckBox(name="keep_model", text="keep this model outside its training range", value=False)
        self.keep_box.tooltip = ("Where the movie lies outside what the chosen bundled model was trained for, or the "
                                 "guard rejects it, its model for any microscope runs instead (aniso -> aniso_any, "
                                 "binding -> binding_any, twostate -> twostate_any); on: keep the chosen one")
        self.scale_box = CheckBox(name="keep_model_scale", text="keep the model's scale where the guard shows a bias",
                                  value=False)
        self.scale_box.tooltip = ("Where the guard accepts the model but shows its D off from the classical estimate "
                                  "by more than 5 %, the model's D1 and D2 are divided by that factor (flag "
                                  "'rescaled'); on: report them as the model gave them")
        self.range_box = CheckBox(name="keep_model_beyond_range", text="keep the model's values beyond its D range",
                                  value=False)
        self.range_box.tooltip = ("A track whose classical estimate shows it faster or slower than the range of D the "
                                  "model was trained on gets its classical values (flag 'beyond_model_range'); on: "
                                  "report the model's values for such tracks too")
        self.preview_button = PushButton(name="preview", text="Preview detections (current frame)")
        self.run_button = PushButton(name="run", text="Run Track && Estimate")
        self.cancel_button = PushButton(name="cancel", text="Cancel", enabled=False)
        self.progress = ProgressBar(name="progress", label="", min=0, max=1000, value=0)
        self.status = Label(name="status", label="", value="")
        self.warnings_label = Label(name="warnings", label="", value="")
        self.export_button = PushButton(name="export", text="Export CSV…", enabled=False)
        self.load_button = PushButton(name="load_settings", text="Load settings from results…")
        self.load_button.tooltip = "Fill the fields with the settings and acquisition of a run (its _meta.json)"
        self.tracks_combo = ComboBox(name="existing_tracks", label="tracks",
                                     choices=lambda w=None: _existing_tracks.tracks_layer_choices(self.viewer))
        self.tracks_combo.tooltip = ("A Tracks layer (track id, frame, y, x in pixels) or a track file: TrackMate "
                                     "XML/CSV, trackpy CSV or a _tracks.csv of this plugin")
        self.estimate_button = PushButton(name="estimate_existing", text="Estimate on existing tracks")
        self.estimate_button.tooltip = ("Skip detection and linking: estimate the tensors of these tracks in the movie "
                                        "above, with the model and settings above")

        acq_fields = Container(labels=True, widgets=[*self.acq_boxes.values(), self.measure_box])
        self.acq_group = collapsible("Acquisition (pixel, frame, camera, PSF)", acq_fields)
        options = Container(labels=True, widgets=[
            self.model_combo, self.checkpoint, self.device_combo, self.threshold, self.max_D, self.memory,
            self.min_length, self.motion_box, self.split_box, self.trust_box, self.keep_box, self.scale_box,
            self.range_box,
        ])
        self.options_group = collapsible("Model and tracking", options, expanded=True)
        actions = Container(labels=False, widgets=[
            self.preview_button, self.run_button, self.cancel_button, self.progress, self.status,
            self.warnings_label, self.export_button, self.load_button,
        ])
        existing = Container(labels=True, widgets=[self.tracks_combo, self.estimate_button])
        self.existing_group = collapsible("Estimate on existing tracks", existing, expanded=False)
        top = Container(labels=True, widgets=[self.layer_combo])
        self.acq_source.label = ""
        source = Container(labels=False, widgets=[self.acq_source])
        self.scroll = mount_scrollable(self, stack(top, source, self.acq_group, self.options_group, actions,
                                                           self.existing_group))
        for label in (self.status, self.acq_source, self.warnings_label):
            label.native.setWordWrap(True)
            # long text wraps to the dock's width instead of widening the dock
            label.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.warnings_label.native.setStyleSheet(WARNING_STYLE)
        self.warnings_label.visible = False
        self._load_settings()

        self.layer_combo.changed.connect(self._on_layer_changed)
        self.model_combo.changed.connect(self._on_model_changed)
        self._on_model_changed(self.model_combo.value)
        self.preview_button.changed.connect(self.preview_detections)
        self.run_button.changed.connect(self.run)
        self.estimate_button.changed.connect(self.estimate_existing)
        self.cancel_button.changed.connect(self.cancel)
        self.export_button.changed.connect(self.export_csv)
        self.load_button.changed.connect(self.load_settings_from_results)
        for widget in self._persisted_widgets():
            widget.changed.connect(self._save_settings)
        events = self.viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.connect(self._reset_layer_choices)
        active = self.viewer.layers.selection.active
        if active is not None and any(active is c for _, c in self._layer_choices()):
            self.layer_combo.value = active
        self._on_layer_changed(self.layer_combo.value)

    # ------------------------------------------------------------------ inputs
    def _layer_choices(self, widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image, Labels

        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, (Image, Labels))]

    def _reset_layer_choices(self, event: Any = None) -> None:
        self.layer_combo.reset_choices()
        self.tracks_combo.reset_choices()
        n_layers = len(self.tracks_combo.choices) - 1
        if not getattr(self, "_n_tracks_layers", 0) and n_layers > 0:  # the first Tracks layer, rather than a file
            self.tracks_combo.value = next(c for c in self.tracks_combo.choices if not isinstance(c, str))
        self._n_tracks_layers = n_layers

    def _persisted_widgets(self) -> list[Any]:
        return [
            *self.acq_boxes.values(),
            self.model_combo,
            self.checkpoint,
            self.device_combo,
            self.threshold,
            self.max_D,
            self.memory,
            self.min_length,
            self.motion_box,
            self.split_box,
            self.measure_box,
        ]

    def values(self) -> dict[str, Any]:
        """The widget's parameters (JSON-serialisable)."""
        values = {w.name: w.value for w in self._persisted_widgets()}
        values["checkpoint"] = str(values["checkpoint"]) if values["checkpoint"] else ""
        values["trust_model"] = bool(self.trust_box.value)  # never persisted: each run opts in again
        values["keep_model"] = bool(self.keep_box.value)
        values["keep_model_scale"] = bool(self.scale_box.value)
        values["keep_model_beyond_range"] = bool(self.range_box.value)
        return values

    def _load_settings(self) -> None:
        self._loading = True
        try:
            for w in self._persisted_widgets():
                if w.name in (saved := load_values(SETTINGS_NAME)) and saved[w.name] != "":
                    try:
                        w.value = saved[w.name]
                    except (ValueError, TypeError):
                        pass
        finally:
            self._loading = False

    def _save_settings(self, *args: Any) -> None:
        if not self._loading:
            save_values(SETTINGS_NAME, self.values())

    def _on_model_changed(self, model: str) -> None:
        self.checkpoint.visible = model == "custom"

    def _on_layer_changed(self, layer: Any) -> None:
        values, source = acquisition_values_from_layer(layer)
        self._loading = True
        try:
            for name, box in self.acq_boxes.items():
                if name in values and values[name] is not None:
                    box.value = float(values[name])
        finally:
            self._loading = False
        if layer is None:
            self.acq_source.value = ""
        elif source:
            self.acq_source.value = f"acquisition from {source}; check and edit"
        else:
            self.acq_source.value = "no calibration in this layer: enter pixel size and frame interval"

    def acquisition_from_fields(self) -> Acquisition:
        """The acquisition the fields describe (other fields from the layer or the defaults)."""
        known, _ = acquisition_values_from_layer(self.layer_combo.value)
        return resolve_acquisition(known, explicit={name: float(box.value) for name, box in self.acq_boxes.items()})

    def _inputs(self) -> tuple[Any, Any, Acquisition]:
        layer = self.layer_combo.value
        movie = movie_from_layer(layer)
        return layer, movie, self.acquisition_from_fields()

    # ------------------------------------------------------------------ preview
    def preview_detections(self, *args: Any) -> Any:
        """Detect and localize spots in the current frame; show them as a points layer."""
        from ..tracking import DetectionSettings, locate_frame

        try:
            layer, movie, acq = self._inputs()
            frame_index = current_frame_index(self.viewer, layer)
            frame = np.asarray(movie[frame_index])
            settings = DetectionSettings(threshold_snr=float(self.threshold.value))
            # the pipeline's own per-frame path: detection, fit and overlap pass
            locs = locate_frame(frame, acq, settings)
        except Exception as exc:  # every failure becomes one notification
            _dialogs.notify_error(exc)
            return None
        yx = locs[["y_px", "x_px"]].to_numpy()
        feats = locs.reset_index(drop=True) if len(locs) else None
        data, kwargs, _ = detections_layer(
            yx,
            frame_index,
            geometry=LayerGeometry.from_layer(layer),
            size_px=max(4.0, 4 * acq.psf_sigma_px),
            features=feats,
        )
        name = kwargs["name"]
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        points = self.viewer.add_points(data, **kwargs)
        self.viewer.layers.selection.active = layer
        self.status.value = f"frame {frame_index}: {len(yx)} detections at threshold {self.threshold.value:g} × noise"
        return points

    # ------------------------------------------------------------------ run
    def run(self, *args: Any) -> Any:
        """Start the pipeline in a worker thread (returns the worker, or None on bad input)."""
        if self.worker is not None:
            return self.worker
        try:
            layer, movie, acq = self._inputs()
            settings = pipeline_settings({**self.values(), "measure": self._fields_to_measure(layer)})
        except Exception as exc:
            _dialogs.notify_error(exc)
            return None
        return self._start(run_pipeline, (movie, acq, settings), layer, acq, f"{layer.name} ")

    def estimate_existing(self, *args: Any, path: str | Path | None = None) -> Any:
        """Estimate on the chosen Tracks layer or track file (asked for unless ``path``) in a worker thread.

        Returns the worker, or None (bad input: one notification; a cancelled file dialog).
        The results show as ``"<movie> imported ..."`` layers and a results dock entry.
        """
        if self.worker is not None:
            return self.worker
        choice = self.tracks_combo.value
        try:
            layer, movie, acq = self._inputs()
            settings = pipeline_settings({**self.values(), "measure": self._fields_to_measure(layer)})
            if choice is None:
                raise ValueError("No Tracks layer to estimate on: add one, or choose 'from file…'")
            if isinstance(choice, str) and choice == _existing_tracks.FROM_FILE:
                if path is None:
                    path = _dialogs.ask_open_path(self.native, "Estimate on the tracks of a file", "",
                                                  _existing_tracks.TRACK_FILE_FILTER)
                if not path:
                    return None
                from ..io.track_tables import read_track_file

                tracks: Any = read_track_file(path, acq)
            else:
                tracks = _existing_tracks.table_from_layer(choice)
        except Exception as exc:
            _dialogs.notify_error(exc)
            return None
        return self._start(_existing_tracks.run_estimate, (movie, tracks, acq, settings), layer, acq,
                           f"{layer.name} imported ")

    def _start(self, job: Any, args: tuple[Any, ...], layer: Any, acq: Acquisition, prefix: str) -> Any:
        """Run ``job(*args, progress, should_stop)`` in a worker thread; its results go to :meth:`_on_returned`."""
        from napari.qt.threading import create_worker

        self._save_settings()
        self._stop = threading.Event()
        self._run_layer = layer
        self._run_acquisition = acq
        self._run_prefix = prefix
        worker = create_worker(
            job, *args, self._relay.progress.emit, self._stop.is_set, _start_thread=False, _ignore_errors=True,
        )
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled = False
        self.preview_button.enabled = False
        self.estimate_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.status.value = f"running on '{layer.name}'…"
        worker.start()
        return worker

    def _fields_to_measure(self, layer: Any) -> tuple[str, ...]:
        """Calibrated fields the layer does not store (none when the box is off)."""
        from ..calibration import fields_to_measure

        if not self.measure_box.value:
            return ()
        known, _ = acquisition_values_from_layer(layer)
        return fields_to_measure(known)

    def _show_measured(self, results: Any) -> None:
        """Fill the fields with the measured acquisition and say so; warn when the guard rejected the model."""
        from ..calibration import format_uncertainty

        meta = results.meta or {}
        measured = meta.get("acquisition_measured") or {}
        used = results.acquisition
        shown = []
        for name, box in self.acq_boxes.items():
            entry = measured.get(name)
            if isinstance(entry, dict) and entry.get("value") is not None and used is not None:
                if name != "read_noise_e":  # an assumption the user sets: an EMCCD's measured one would stick
                    box.value = float(getattr(used, name))
                spread = entry.get("uncertainty")
                shown.append(f"{ACQUISITION_FIELDS[name][0]} {entry['value']:.4g}"
                             + (format_uncertainty(spread, " ± ") if isinstance(spread, (int, float)) else "")
                             + ACQUISITION_FIELDS[name][1])
        if shown and measured.get("camera") == "emccd":
            shown.append("camera: EMCCD (excess noise); the fields hold the Poisson-equivalent gain "
                         "(twice the measured) and photons (half the photo-electrons)")
        if shown:
            self.acq_source.value = "measured from the movie:\n" + "\n".join(shown)

    def _show_warnings(self, results: Any) -> list[str]:
        """Each warning of the run: one line in the widget now, one napari notification a moment later.

        The notifications wait for the window's layout to settle (the results dock may just
        have opened and shrunk the canvas, which would leave a pop-up below its edge).
        """
        from qtpy.QtCore import QTimer

        found = run_warnings(results.meta)

        def notify() -> None:
            for message in found:
                _dialogs.notify_warning(message)

        QTimer.singleShot(NOTIFY_DELAY_MS, notify)
        self.warnings_label.value = "\n".join(f"⚠ {m}" for m in found)
        self.warnings_label.visible = bool(found)
        return found

    def cancel(self, *args: Any) -> None:
        """Ask the running pipeline to stop at its next check."""
        if self.worker is not None:
            self._stop.set()
            self.status.value = "cancelling…"
            self.cancel_button.enabled = False

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.value = int(round(1000 * min(max(float(fraction), 0.0), 1.0)))
        if not self._stop.is_set():
            self.status.value = message

    def _on_returned(self, results: Any) -> None:
        self.results = results
        # the acquisition the run used: measured values where the movie was calibrated
        self.acquisition = results.acquisition or self._run_acquisition
        layer = self._run_layer
        if "detections (preview)" in self.viewer.layers:  # the preview's circles are done with
            self.viewer.layers.remove("detections (preview)")
        geometry = (
            LayerGeometry.from_layer(layer)
            if layer in self.viewer.layers
            else LayerGeometry.from_acquisition(self.acquisition)
        )
        try:
            self.display, _ = show_results(self.viewer, results, self.acquisition, geometry,
                                           prefix=getattr(self, "_run_prefix", f"{layer.name} "))
        except Exception as exc:
            _dialogs.notify_error(f"Could not show the results: {_dialogs.one_sentence(exc)}")
        self._show_measured(results)
        found = self._show_warnings(results)
        self.progress.value = 1000
        n = results.n_tracks
        guard = (results.meta or {}).get("guard") or {}
        rejected = " (model rejected by the guard: classical values)" if not guard.get("model_reported", True) else ""
        if not rejected and (n_beyond := beyond_range_count(results)):
            rejected = f" ({n_beyond} beyond the model's D range: classical values)"
        warned = f"; {len(found)} warning{'s' if len(found) != 1 else ''}" if found else ""
        self.status.value = f"done: {n} tracks, {len(results.tracks)} localizations{rejected}{warned}"
        self.export_button.enabled = True

    def _on_errored(self, exc: BaseException) -> None:
        try:
            from ..pipeline import Cancelled
        except ImportError:  # pragma: no cover - pipeline missing from a broken install
            Cancelled = ()  # type: ignore[assignment]
        if isinstance(exc, Cancelled) or self._stop.is_set():
            self.status.value = "cancelled"
            _dialogs.notify_info("Track & Estimate cancelled.")
        else:
            self.status.value = f"failed: {_dialogs.one_sentence(exc)}"
            _dialogs.notify_error(exc)
        self.progress.value = 0

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.enabled = True
        self.preview_button.enabled = True
        self.estimate_button.enabled = True
        self.cancel_button.enabled = False

    # ------------------------------------------------------------------ export
    def export_csv(self, *args: Any) -> list[Path] | None:
        """Ask for a prefix and write ``<prefix>_tracks.csv``, ``_summary.csv``, ``_meta.json``."""
        if self.results is None:
            _dialogs.notify_error("Nothing to export yet: run Track & Estimate first")
            return None
        layer = getattr(self, "_run_layer", None)
        start = ""
        source = getattr(getattr(layer, "source", None), "path", None)
        if source:
            start = str(Path(str(source)).with_suffix(""))
        path = _dialogs.ask_save_path(self.native, "Export results: file prefix", start, "CSV tables (*.csv)")
        if not path:
            return None
        from .. import io

        try:
            written = io.write_results(results_prefix(path), self.results, overwrite=False)
        except Exception as exc:
            _dialogs.notify_error(exc)
            return None
        self.status.value = f"exported {', '.join(p.name for p in written)}"
        _dialogs.notify_info(f"Exported {len(written)} files to {written[0].parent}")
        return written

    # ------------------------------------------------------------------ settings from results
    def load_settings_from_results(self, *args: Any, path: str | Path | None = None) -> dict[str, Any] | None:
        """Fill the fields from a run's ``_meta.json`` (asked for unless ``path``; any of the 3 files).

        Returns the values applied, or ``None`` (cancelled, or an unreadable file: one notification).
        """
        if path is None:
            path = _dialogs.ask_open_path(self.native, "Load settings from results", "",
                                          "Results (*_meta.json *_tracks.csv *_summary.csv)")
            if not path:
                return None
        from ..io import results_paths

        meta_path = results_paths(path)["meta"]
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError(f"{meta_path.name} is not a JSON object")
            values = values_from_meta(meta)
        except (OSError, ValueError) as exc:
            _dialogs.notify_error(f"Could not load settings from {meta_path.name}: {_dialogs.one_sentence(exc)}")
            return None
        widgets = {w.name: w for w in self._persisted_widgets()}
        self._loading = True
        try:
            for name, value in values.items():
                if name in widgets:
                    try:
                        widgets[name].value = value
                    except (ValueError, TypeError):
                        pass
        finally:
            self._loading = False
        self._save_settings()
        self.acq_source.value = f"acquisition and settings from {meta_path.name}; check and edit"
        self.status.value = f"settings loaded from {meta_path.name}"
        return values

    def __del__(self) -> None:  # stop a running worker with the widget
        try:
            self._stop.set()
        except Exception:
            pass
