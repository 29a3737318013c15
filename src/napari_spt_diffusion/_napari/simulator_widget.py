"""The "Simulator" dock widget: simulate a movie with ground truth, preview it live.

Every change of a parameter schedules (debounced) a short preview movie of a few
frames, rendered by :func:`napari_spt_diffusion.simulation.simulate_movie` in a
fraction of a second and shown inside the dock with its true tracks (a frame slider
and a looping player), never as a layer under the user's movie. "Generate" simulates
the full movie in a worker thread (progress bar) and adds it as a new layer
("simulated movie", "simulated movie 2", ...) with its truth layers and an entry in the
results dock; earlier movies and results stay. "Save as TIFF + truth" writes the movie
and the truth tables (:func:`napari_spt_diffusion.io.write_simulation`). The dock scrolls.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QSizePolicy, QSlider, QToolButton, QVBoxLayout, QWidget

from ..acquisition import Acquisition
from ..acquisition_resolver import resolve_acquisition
from ..simulation.motion_models import movie_model_choices
from . import _dialogs
from ._layout import collapsible, mount_scrollable, stack
from ._persist import load_values, save_values
from .layers import LayerGeometry, image_layer
from .plots import MoviePreviewCanvas
from .results_widget import show_results

__all__ = ["SimulatorWidget", "simulation_kwargs", "SIM_MODEL_CHOICES"]

#: (label, movie model name), from the motion-model registry
SIM_MODEL_CHOICES: tuple[tuple[str, str], ...] = movie_model_choices()
SETTINGS_NAME = "simulator"
PREVIEW_FRAMES = 20
PREVIEW_MAX_SIDE_PX = 256
DEBOUNCE_MS = 300
PLAY_INTERVAL_MS = 100
#: groups of the dock: title -> (field names, expanded at start)
FIELD_GROUPS: dict[str, tuple[tuple[str, ...], bool]] = {
    "Motion (D ranges, switching)": (
        ("D1_min_um2_s", "D1_max_um2_s", "D2_over_D1_min", "D2_over_D1_max", "switch_rate_per_s"), True),
    "Acquisition (pixel, frame interval, PSF, photons)": (
        ("pixel_size_nm", "frame_interval_s", "psf_sigma_nm", "signal_photons", "background_photons"), False),
    "Movie (particles, frames, field, seed)": (("particles", "n_frames", "size_y_px", "size_x_px", "seed"), False),
}

# name -> (label, suffix, min, max, step, decimals, default)
FLOAT_FIELDS: dict[str, tuple[str, str, float, float, float, int, float]] = {
    "D1_min_um2_s": ("D1 from", " um²/s", 0.0, 100.0, 0.05, 3, 0.05),
    "D1_max_um2_s": ("D1 to", " um²/s", 0.0, 100.0, 0.05, 3, 3.0),
    "D2_over_D1_min": ("D2/D1 from", "", 0.0, 1.0, 0.05, 2, 0.1),
    "D2_over_D1_max": ("D2/D1 to", "", 0.0, 1.0, 0.05, 2, 1.0),
    "switch_rate_per_s": ("switch rate", " /s", 0.0, 1000.0, 0.5, 2, 1.0),
    "pixel_size_nm": ("pixel size", " nm", 1.0, 10_000.0, 5.0, 1, 100.0),
    "frame_interval_s": ("frame interval", " s", 1e-4, 10.0, 0.001, 4, 0.01),
    "psf_sigma_nm": ("PSF sigma", " nm", 10.0, 10_000.0, 10.0, 1, 100.0),
    "signal_photons": ("signal", " photons/frame", 1.0, 1e7, 50.0, 0, 1000.0),
    "background_photons": ("background", " photons/px", 0.0, 1e5, 1.0, 1, 10.0),
}
# name -> (label, min, max, default)
INT_FIELDS: dict[str, tuple[str, int, int, int]] = {
    "particles": ("particles (mean in view)", 0, 100_000, 30),
    "n_frames": ("frames", 2, 1_000_000, 200),
    "size_y_px": ("field height (px)", 8, 8192, 128),
    "size_x_px": ("field width (px)", 8, 8192, 128),
    "seed": ("seed", 0, 2**31 - 1, 1),
}


def simulation_kwargs(values: dict[str, Any]) -> tuple[tuple[int, int], int, Acquisition, dict[str, Any]]:
    """Arguments of :func:`~napari_spt_diffusion.simulation.simulate_movie` from the widget values.

    The D1 range applies to the anisotropic particles and the two-state states; for
    the binding model it is the unbound state's D1 range.

    Returns
    -------
    (shape_yx, n_frames, acquisition, options)
    """
    fields = ("pixel_size_nm", "frame_interval_s", "psf_sigma_nm", "signal_photons", "background_photons")
    acq = resolve_acquisition(explicit={name: float(values[name]) for name in fields})
    d1 = (float(values["D1_min_um2_s"]), float(values["D1_max_um2_s"]))
    ratio = (float(values["D2_over_D1_min"]), float(values["D2_over_D1_max"]))
    if d1[0] > d1[1]:
        raise ValueError(f"D1 'from' ({d1[0]:g}) must not exceed D1 'to' ({d1[1]:g})")
    if ratio[0] > ratio[1]:
        raise ValueError(f"D2/D1 'from' ({ratio[0]:g}) must not exceed D2/D1 'to' ({ratio[1]:g})")
    model = str(values["model"])
    options: dict[str, Any] = {
        "model": model,
        "particles": float(values["particles"]),
        "D2_over_D1_range": ratio,
        "switch_rate_per_s": float(values["switch_rate_per_s"]),
    }
    if model == "binding":
        options["unbound_D1_range_um2_s"] = d1
    else:
        options["D1_range_um2_s"] = d1
    shape = (int(values["size_y_px"]), int(values["size_x_px"]))
    return shape, int(values["n_frames"]), acq, options


class _Relay(QObject):
    progress = Signal(float, str)


class SimulatorWidget(Container):
    """Dock widget: simulate SPT movies with ground truth.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when docking the widget).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.simulated: Any = None
        self.worker: Any = None
        self._loading = False
        self._stop = threading.Event()
        self._relay = _Relay()
        self._relay.progress.connect(self._on_progress)

        self.model_combo = ComboBox(name="model", label="motion model", choices=list(SIM_MODEL_CHOICES), value="aniso")
        self.float_boxes: dict[str, FloatSpinBox] = {}
        for name, (label, suffix, lo, hi, step, dec, default) in FLOAT_FIELDS.items():
            box = FloatSpinBox(name=name, label=label, min=lo, max=hi, step=step, value=default)
            box.native.setDecimals(dec)
            box.native.setSuffix(suffix)
            box.native.setKeyboardTracking(False)
            self.float_boxes[name] = box
        self.int_boxes: dict[str, SpinBox] = {
            name: SpinBox(name=name, label=label, min=lo, max=hi, value=default)
            for name, (label, lo, hi, default) in INT_FIELDS.items()
        }
        for box in self.int_boxes.values():
            box.native.setKeyboardTracking(False)
        self.live = CheckBox(name="live_preview", text="live preview", value=True)
        self.generate_button = PushButton(name="generate", text="Generate")
        self.save_button = PushButton(name="save", text="Save as TIFF + truth…", enabled=False)
        self.progress = ProgressBar(name="progress", label="", min=0, max=1000, value=0)
        self.status = Label(name="status", label="", value="")
        self.preview_canvas = MoviePreviewCanvas(napari_viewer)
        self.frame_slider = QSlider(Qt.Horizontal)
        self.frame_slider.setRange(0, 0)
        self.frame_slider.setToolTip("Frame of the preview")
        self.play_button = QToolButton()
        self.play_button.setText("▶")
        self.play_button.setCheckable(True)
        self.play_button.setToolTip("Play the preview in a loop")
        player = QWidget()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.play_button)
        row.addWidget(self.frame_slider, 1)
        column = QVBoxLayout(player)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.preview_canvas, 1)
        column.addLayout(row)
        self._play_timer = QTimer()
        self._play_timer.setInterval(PLAY_INTERVAL_MS)
        self._play_timer.timeout.connect(self._next_frame)
        self.play_button.toggled.connect(lambda on: self._play_timer.start() if on else self._play_timer.stop())
        self.frame_slider.valueChanged.connect(self.preview_canvas.set_frame)

        boxes = {**self.float_boxes, **self.int_boxes}
        groups = [
            collapsible(title, Container(labels=True, widgets=[boxes[n] for n in names]), expanded=expanded)
            for title, (names, expanded) in FIELD_GROUPS.items()
        ]
        assert sorted(n for names, _ in FIELD_GROUPS.values() for n in names) == sorted(boxes)
        top = Container(labels=True, widgets=[self.model_combo])
        actions = Container(labels=False, widgets=[
            self.live, self.generate_button, self.save_button, self.progress, self.status,
        ])
        self.preview_group = collapsible("Live preview (in this dock)", player, expanded=True)
        self.scroll = mount_scrollable(self, stack(top, *groups, self.preview_group, actions))
        self.status.native.setWordWrap(True)
        self.status.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)  # wraps, never widens
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.preview)
        self._load_settings()
        for w in self._persisted_widgets():
            w.changed.connect(self._on_param_changed)
        self.live.changed.connect(self._on_param_changed)
        self.generate_button.changed.connect(self.generate)
        self.save_button.changed.connect(self.save)

    # ------------------------------------------------------------------ parameters
    def _persisted_widgets(self) -> list[Any]:
        return [self.model_combo, *self.float_boxes.values(), *self.int_boxes.values()]

    def values(self) -> dict[str, Any]:
        """The widget's parameters (JSON-serialisable)."""
        return {w.name: w.value for w in self._persisted_widgets()}

    def _load_settings(self) -> None:
        saved = load_values(SETTINGS_NAME)
        self._loading = True
        try:
            for w in self._persisted_widgets():
                if w.name in saved:
                    try:
                        w.value = saved[w.name]
                    except (ValueError, TypeError):
                        pass
        finally:
            self._loading = False

    def _on_param_changed(self, *args: Any) -> None:
        if self._loading:
            return
        save_values(SETTINGS_NAME, self.values())
        if self.live.value and self.worker is None:
            self._timer.start()  # restarts: the preview runs DEBOUNCE_MS after the last change

    # ------------------------------------------------------------------ preview
    def preview(self) -> Any:
        """Simulate a short movie (<= 20 frames, <= 256 px a side) and show it with its true tracks."""
        from ..simulation import simulate_movie

        try:
            shape, n_frames, acq, options = simulation_kwargs(self.values())
            shape = (min(shape[0], PREVIEW_MAX_SIDE_PX), min(shape[1], PREVIEW_MAX_SIDE_PX))
            sim = simulate_movie(
                shape, min(n_frames, PREVIEW_FRAMES), acq, int(self.int_boxes["seed"].value), **options
            )
        except Exception as exc:  # shown as one notification
            _dialogs.notify_error(exc)
            return None
        self._show_preview(sim)
        self.status.value = (
            f"preview: {sim.movie.shape[0]} frames of {sim.movie.shape[1]} x {sim.movie.shape[2]} px, "
            f"{sim.truth.n_tracks} true tracks"
        )
        return sim

    def _next_frame(self) -> None:
        n = self.frame_slider.maximum() + 1
        self.frame_slider.setValue((self.frame_slider.value() + 1) % max(n, 1))

    def _show_preview(self, sim: Any) -> None:
        """Show the preview movie and its true tracks in the dock (the viewer's layers are untouched)."""
        frame = self.frame_slider.value()
        self.preview_canvas.set_movie(sim.movie, sim.truth.tracks)
        self.frame_slider.blockSignals(True)
        self.frame_slider.setRange(0, len(sim.movie) - 1)
        self.frame_slider.setValue(min(frame, len(sim.movie) - 1))
        self.frame_slider.blockSignals(False)
        self.preview_canvas.set_frame(self.frame_slider.value())

    # ------------------------------------------------------------------ generate
    def generate(self, *args: Any) -> Any:
        """Simulate the full movie in a worker thread; returns the worker (None on bad input)."""
        if self.worker is not None:
            return self.worker
        self._timer.stop()  # a pending preview would only be replaced by the full movie
        try:
            shape, n_frames, acq, options = simulation_kwargs(self.values())
        except Exception as exc:
            _dialogs.notify_error(exc)
            return None
        from napari.qt.threading import create_worker

        from ..simulation import simulate_movie

        seed = int(self.int_boxes["seed"].value)
        worker = create_worker(
            simulate_movie, shape, n_frames, acq, seed, progress=self._relay.progress.emit, **options,
            _start_thread=False, _ignore_errors=True,
        )
        worker.returned.connect(self._on_generated)
        worker.errored.connect(lambda exc: _dialogs.notify_error(exc))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.generate_button.enabled = False
        self.progress.value = 0
        self.status.value = f"simulating {n_frames} frames of {shape[0]} x {shape[1]} px…"
        worker.start()
        return worker

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.value = int(round(1000 * min(max(float(fraction), 0.0), 1.0)))
        self.status.value = message

    def _new_movie_name(self) -> str:
        """``"simulated movie"``, then ``"simulated movie 2"``... : a name no layer has (nor its truth)."""
        k, name = 1, "simulated movie"
        while name in self.viewer.layers or f"{name} truth tracks" in self.viewer.layers:
            k += 1
            name = f"simulated movie {k}"
        return name

    def _on_generated(self, sim: Any) -> None:
        self.simulated = sim
        self._play_timer.stop()
        self.play_button.setChecked(False)
        data, kwargs, _ = image_layer(sim.movie, sim.acquisition, name=self._new_movie_name())
        layer = self.viewer.add_image(data, **kwargs)
        if len(sim.truth.tracks):
            show_results(self.viewer, sim.truth, sim.acquisition, LayerGeometry.from_layer(layer),
                         prefix=f"{layer.name} truth ")
        self.viewer.layers.selection.active = layer
        self.progress.value = 1000
        self.status.value = (
            f"simulated {sim.movie.shape[0]} frames, {sim.truth.n_tracks} true tracks, "
            f"{int(sim.truth.summary['n_changepoints'].sum())} changepoints"
        )
        self.save_button.enabled = True

    def _on_finished(self) -> None:
        self.worker = None
        self.generate_button.enabled = True

    # ------------------------------------------------------------------ save
    def save(self, *args: Any) -> list[Path] | None:
        """Ask for a .tif name; write the movie and ``<stem>_truth_*`` tables beside it."""
        if self.simulated is None:
            _dialogs.notify_error("Nothing to save yet: press Generate first")
            return None
        path = _dialogs.ask_save_path(self.native, "Save simulated movie", "simulated.tif", "TIFF movie (*.tif *.tiff)")
        if not path:
            return None
        target = Path(path)
        if target.suffix.lower() not in (".tif", ".tiff"):
            target = target.with_name(target.name + ".tif")
        from .. import io

        sim = self.simulated
        try:
            # the save dialog already asked before replacing an existing movie file
            written = io.write_simulation(target, sim.movie, sim.truth, overwrite=target.exists())
        except Exception as exc:
            _dialogs.notify_error(exc)
            return None
        self.status.value = f"saved {', '.join(p.name for p in written)}"
        return written
