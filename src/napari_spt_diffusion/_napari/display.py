"""Show one :class:`Results` in a napari viewer and keep its layers in step.

:class:`ResultsDisplay` owns the layers made from one set of results (tracks,
tensor ellipses, changepoints, the selected-track highlight), the colour-by choice,
the ellipse scale factor and the selected track. It holds no Qt widget: the results
dock (:mod:`.results_widget`) drives it and listens to its signals.

Ellipses: napari triangulates every shape in Python (about 1 ms each), so when the
results have more than ``max_static_ellipses`` localizations the Shapes layer holds
the ellipses of the current frame only and is refilled (one call) when the frame
changes; below that, all ellipses are built once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from psygnal import Signal

from ..acquisition import Acquisition
from ..results import Results
from . import layers as L

__all__ = ["DisplayOptions", "ResultsDisplay", "MAX_STATIC_ELLIPSES"]

#: Above this many localizations the ellipse layer follows the current frame.
MAX_STATIC_ELLIPSES = 3000
#: A click selects the nearest track whose current-frame position is closer than this (px).
PICK_RADIUS_PX = 6.0


@dataclass(frozen=True)
class DisplayOptions:
    """How a :class:`ResultsDisplay` starts out.

    Attributes
    ----------
    color_by
        Initial colour key (:data:`~.layers.COLOR_KEYS`).
    ellipse_scale_factor
        Initial magnification of the tensor ellipses (dimensionless).
    show_ellipses, show_changepoints
        Whether to create those layers (no changepoints layer when there is none).
    max_static_ellipses
        Above this many localizations the ellipses follow the current frame (module docstring).
    adopt_layers
        Use layers already in the viewer that were made from these very results
        (``layer.metadata["spt_results"] is results``, same ``spt_kind``) instead of adding
        new ones: the layers a reader returned.
    """

    color_by: str = "D1"
    ellipse_scale_factor: float = 1.0
    show_ellipses: bool = True
    show_changepoints: bool = True
    max_static_ellipses: int = MAX_STATIC_ELLIPSES
    adopt_layers: bool = False


class ResultsDisplay:
    """Layers of one set of results in a viewer.

    Parameters
    ----------
    viewer
        The napari viewer.
    results
        Tracker output or simulated truth (results contract).
    acquisition
        Converts D to ellipse sizes.
    geometry
        Placement of the layers (copy of the image layer's); default from the acquisition.
    prefix
        Prepended to the layer names (``"truth "`` for simulated truth).
    options
        Initial colour key, ellipse scale, which layers to create (:class:`DisplayOptions`);
        ``None``: the defaults.
    """

    selection_changed = Signal(object)  # track id (int) or None
    color_by_changed = Signal(str)

    def __init__(
        self,
        viewer: Any,
        results: Results,
        acquisition: Acquisition,
        geometry: L.LayerGeometry | None = None,
        *,
        prefix: str = "",
        options: DisplayOptions | None = None,
    ) -> None:
        opts = DisplayOptions() if options is None else options
        color_by, ellipse_scale_factor = opts.color_by, opts.ellipse_scale_factor
        show_ellipses, show_changepoints, max_static_ellipses = (
            opts.show_ellipses, opts.show_changepoints, opts.max_static_ellipses
        )
        self.viewer = viewer
        self.results = results
        self.acquisition = acquisition
        self.geometry = geometry or L.LayerGeometry.from_acquisition(acquisition)
        self.prefix = prefix
        self.color_by = color_by
        self.ellipse_scale_factor = float(ellipse_scale_factor)
        self.selected_track: int | None = None
        self.follow_frame = len(results.tracks) > max_static_ellipses
        self.scales = {k: L.color_scale(results, k) for k in L.COLOR_KEYS}
        self._adopt = opts.adopt_layers
        self.connected = False

        self.tracks_layer = self._add(
            L.tracks_layer(results, color_by=color_by, geometry=self.geometry, name=f"{prefix}tracks")
        )
        self.ellipses_layer = None
        if show_ellipses:
            self.ellipses_layer = self._add(self._ellipse_tuple())
        self.changepoints_layer = None
        if show_changepoints:
            cp_tuple = L.changepoints_layer(results, geometry=self.geometry, name=f"{prefix}changepoints")
            if len(cp_tuple[0]):  # no empty layer when there is no changepoint
                self.changepoints_layer = self._add(cp_tuple)
            elif cp_tuple[1]["name"] in self.viewer.layers:  # an earlier run's, of the same name
                self.viewer.layers.remove(cp_tuple[1]["name"])
        self.selected_layer = None
        if self.follow_frame and self.ellipses_layer is not None:  # shown again (eye icon): draw the frame
            self.ellipses_layer.events.visible.connect(self._on_frame)
        self.connect()
        self.tracks_layer.selected = False

    # ------------------------------------------------------------------ layers
    def _add(self, layer_tuple: L.LayerDataTuple) -> Any:
        data, kwargs, kind = layer_tuple
        name = kwargs.get("name")
        if self._adopt:
            kind_name = kwargs.get("metadata", {}).get("spt_kind")
            for layer in self.viewer.layers:
                md = layer.metadata
                if md.get("spt_results") is self.results and md.get("spt_kind") == kind_name:
                    return layer
        if name in self.viewer.layers:  # replace an earlier run's layer of the same name
            self.viewer.layers.remove(name)
        return getattr(self.viewer, f"add_{kind}")(data, **kwargs)

    def connect(self) -> None:
        """Follow the viewer: clicks select tracks, frame changes refill the ellipses (idempotent)."""
        if self.connected:
            return
        if self.follow_frame:
            self.viewer.dims.events.current_step.connect(self._on_frame)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse_drag)
        self.connected = True

    @property
    def alive(self) -> bool:
        """Whether the tracks layer is still in the viewer."""
        return self.tracks_layer in self.viewer.layers

    @property
    def layers(self) -> list[Any]:
        """The napari layers this display owns (in creation order)."""
        return [
            lay
            for lay in (self.tracks_layer, self.ellipses_layer, self.changepoints_layer, self.selected_layer)
            if lay is not None
        ]

    def current_frame(self) -> int:
        """The viewer's current frame (index along the time axis of the layers)."""
        step = self.viewer.dims.current_step
        axis = len(step) - 3 if len(step) >= 3 else 0
        return int(step[axis])

    def _ellipse_tuple(self) -> L.LayerDataTuple:
        frames = [self.current_frame()] if self.follow_frame else None
        return L.ellipses_layer(
            self.results,
            self.acquisition,
            color_by=self.color_by,
            scale_factor=self.ellipse_scale_factor,
            frames=frames,
            geometry=self.geometry,
            name=f"{self.prefix}tensor ellipses",
        )

    def refresh_ellipses(self) -> None:
        """Rebuild the ellipses (one call) after a change of frame, colour or scale factor."""
        layer = self.ellipses_layer
        if layer is None or layer not in self.viewer.layers:
            return
        data, kwargs, _ = self._ellipse_tuple()
        if len(data) == 0:
            layer.data = []
            return
        layer.data = (list(data), ["ellipse"] * len(data))
        layer.features = kwargs["features"]
        layer.edge_width = kwargs["edge_width"]
        layer.edge_color = kwargs["edge_color"]
        layer.face_color = "transparent"
        layer.metadata.update(kwargs["metadata"])

    def _on_frame(self, event: Any = None) -> None:
        if self.ellipses_layer is not None and self.ellipses_layer.visible:
            self.refresh_ellipses()

    # ------------------------------------------------------------------ colours
    def set_color_by(self, key: str) -> None:
        """Colour tracks and ellipses by ``key`` (``"D1"``, ``"D2"``, ``"anisotropy"``, ``"isotropy"``, ``"state"``)."""
        if key not in L.COLOR_KEYS:
            raise ValueError(f"cannot colour by {key!r}; choose one of {', '.join(L.COLOR_KEYS)}")
        self.color_by = key
        self.tracks_layer.color_by = self.scales[key].color_feature
        self.refresh_ellipses()
        self.color_by_changed.emit(key)

    @property
    def color_scale(self) -> L.ColorScale:
        """The colour scale in use."""
        return self.scales[self.color_by]

    def set_ellipse_scale_factor(self, factor: float) -> None:
        """Multiply the ellipse semi-axes (RMS displacement in one frame) by ``factor``."""
        self.ellipse_scale_factor = float(factor)
        self.refresh_ellipses()

    # ------------------------------------------------------------------ selection
    def select_track(self, track_id: int | None) -> None:
        """Highlight one track (``None`` clears) and tell the listeners."""
        ids = set(int(i) for i in self.results.summary["track_id"])
        track_id = int(track_id) if track_id is not None and int(track_id) in ids else None
        if track_id == self.selected_track:
            return
        self.selected_track = track_id
        data, kwargs, _ = L.selected_track_layer(
            self.results, track_id, geometry=self.geometry, name=f"{self.prefix}selected track"
        )
        if self.selected_layer is None or self.selected_layer not in self.viewer.layers:
            if track_id is not None:
                active = self.viewer.layers.selection.active
                self.selected_layer = self.viewer.add_tracks(data, **kwargs)
                if active is not None:
                    self.viewer.layers.selection.active = active
        else:
            if track_id is not None:  # napari's Tracks cannot hold zero vertices: hide instead
                self.selected_layer.data = data
            self.selected_layer.metadata["track_id"] = track_id
            self.selected_layer.visible = track_id is not None
        self.selection_changed.emit(track_id)

    def track_near(self, yx_px: Any, frame: int, radius_px: float = PICK_RADIUS_PX) -> int | None:
        """Track whose position in ``frame`` is nearest to ``yx_px`` (data pixels), if close."""
        t = self.results.tracks
        at = np.asarray(t["frame"]) == int(frame)
        if not at.any():
            return None
        pos = np.column_stack([np.asarray(t["y_px"], float)[at], np.asarray(t["x_px"], float)[at]])
        d = np.hypot(*(pos - np.asarray(yx_px, float)[None, :]).T)
        k = int(np.argmin(d))
        return int(np.asarray(t["track_id"])[at][k]) if d[k] <= radius_px else None

    def _on_mouse_drag(self, viewer: Any, event: Any):
        """Select the track under a click (press and release without dragging)."""
        if event.type != "mouse_press" or "Shift" in [str(m) for m in event.modifiers]:
            return
        start = np.asarray(event.position, float)
        moved = False
        yield
        while event.type == "mouse_move":
            moved = moved or np.hypot(*(np.asarray(event.position, float) - start)[-2:]) > 1e-9
            yield
        if moved or self.tracks_layer not in self.viewer.layers:
            return
        data_pos = self.tracks_layer.world_to_data(start)
        frame = self.current_frame()
        track = self.track_near(np.asarray(data_pos)[-2:], frame)
        if track is not None:
            self.select_track(track)

    # ------------------------------------------------------------------ clean-up
    def close(self, remove_layers: bool = False) -> None:
        """Disconnect from the viewer (and optionally remove the layers); :meth:`connect` undoes it."""
        try:
            self.viewer.dims.events.current_step.disconnect(self._on_frame)
        except (TypeError, ValueError, RuntimeError):
            pass
        if self._on_mouse_drag in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_mouse_drag)
        self.connected = False
        if remove_layers:
            for layer in self.layers:
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
