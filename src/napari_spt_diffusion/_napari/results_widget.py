"""The results dock: colour-by selector with its colour bar, ellipse controls, the D(t)
timeline of the selected track, the per-track D1/D2 histogram and the per-track table.

It drives a :class:`~.display.ResultsDisplay` (the layers) and listens to it: selecting
a table row or clicking a track selects the track everywhere; clicking the timeline
moves the viewer to that frame.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..results import SUMMARY_COLUMNS
from .display import DisplayOptions, ResultsDisplay
from .layers import COLOR_KEYS
from .plots import ColorBarCanvas, HistogramCanvas, TimelineCanvas

__all__ = ["ResultsWidget", "TABLE_COLUMNS", "show_results"]

#: Summary columns shown in the table (header shows the unit).
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("track_id", "track", "{:d}"),
    ("n_frames", "frames", "{:d}"),
    ("frame_start", "start", "{:d}"),
    ("D1_um2_s", "D1 (um²/s)", "{:.3g}"),
    ("D2_um2_s", "D2 (um²/s)", "{:.3g}"),
    ("theta_deg", "θ (°)", "{:.0f}"),
    ("anisotropy", "aniso", "{:.2f}"),
    ("D_msd_um2_s", "D MSD", "{:.3g}"),
    ("D_cve_um2_s", "D CVE", "{:.3g}"),
    ("n_changepoints", "CPs", "{:d}"),
    ("changepoint_frames", "CP frames", "{}"),
    ("flags", "flags", "{}"),
)
#: Columns that the pipeline adds beside the contract (empty cells when a table lacks them).
_EXTRA_COLUMNS = ("flags",)
assert all(c[0] in SUMMARY_COLUMNS or c[0] in _EXTRA_COLUMNS for c in TABLE_COLUMNS)


class _NumericItem(QTableWidgetItem):
    """Table item that sorts by its numeric value."""

    def __init__(self, text: str, value: float) -> None:
        super().__init__(text)
        self.value = value

    def __lt__(self, other: Any) -> bool:
        if isinstance(other, _NumericItem):
            return self.value < other.value
        return super().__lt__(other)


class ResultsWidget(QWidget):
    """Dock widget showing one :class:`ResultsDisplay` (call :meth:`set_display`)."""

    def __init__(self, viewer: Any, parent: Any = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.display: ResultsDisplay | None = None
        self._updating = False

        self.color_combo = QComboBox()
        for key, (_, label, unit) in COLOR_KEYS.items():
            self.color_combo.addItem(f"{label} ({unit})" if unit else label, key)
        self.ellipse_check = QCheckBox("ellipses")
        self.ellipse_check.setChecked(True)
        self.ellipse_check.setToolTip("Show the tensor ellipse of each particle in each frame")
        self.ellipse_factor = QDoubleSpinBox()
        self.ellipse_factor.setRange(0.1, 50.0)
        self.ellipse_factor.setSingleStep(0.5)
        self.ellipse_factor.setValue(1.0)
        self.ellipse_factor.setPrefix("× ")
        self.ellipse_factor.setToolTip(
            "Ellipse semi-axes = RMS displacement in one frame, sqrt(2 D dt), times this factor"
        )
        self.info = QLabel("no results")
        self.info.setWordWrap(True)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("colour by"))
        controls.addWidget(self.color_combo, 1)
        controls.addWidget(self.ellipse_check)
        controls.addWidget(self.ellipse_factor)

        self.colorbar = ColorBarCanvas(viewer)
        self.timeline = TimelineCanvas(viewer)
        self.histogram = HistogramCanvas(viewer)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels([c[1] for c in TABLE_COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(120)

        plots = QSplitter(Qt.Horizontal)
        plots.addWidget(self.timeline)
        plots.addWidget(self.histogram)
        plots.setStretchFactor(0, 3)
        plots.setStretchFactor(1, 2)
        body = QSplitter(Qt.Vertical)
        body.addWidget(plots)
        body.addWidget(self.table)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(controls)
        layout.addWidget(self.colorbar)
        layout.addWidget(self.info)
        layout.addWidget(body, 1)

        self.color_combo.currentIndexChanged.connect(self._on_color_by)
        self.ellipse_check.toggled.connect(self._on_ellipses_toggled)
        self.ellipse_factor.valueChanged.connect(self._on_ellipse_factor)
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        self.timeline.frame_clicked.connect(self.go_to_frame)
        viewer.dims.events.current_step.connect(self._on_frame)

    # ------------------------------------------------------------------ wiring
    def set_display(self, display: ResultsDisplay | None) -> None:
        """Show this display's results (``None`` clears)."""
        if self.display is not None:
            self.display.selection_changed.disconnect(self._on_selection)
        self.display = display
        if display is None:
            self.info.setText("no results")
            self.table.setRowCount(0)
            self.timeline.set_track(None, None)
            self.histogram.set_results(None)
            self.colorbar.set_scale(None)
            return
        display.selection_changed.connect(self._on_selection)
        res = display.results
        n_cp = int(res.summary["n_changepoints"].sum()) if len(res.summary) else 0
        model = res.meta.get("model") or ", ".join(sorted(set(res.summary["model"].astype(str)))) or "?"
        guard = res.meta.get("guard") or {}
        if not guard.get("model_reported", True):
            model = f"{model}, rejected by the guard: classical values shown"
        self.info.setText(
            f"{display.prefix}{res.n_tracks} tracks, {len(res.tracks)} localizations, {n_cp} changepoints "
            f"(model: {model})"
        )
        idx = self.color_combo.findData(display.color_by)
        self._updating = True
        self.color_combo.setCurrentIndex(max(idx, 0))
        self.ellipse_factor.setValue(display.ellipse_scale_factor)
        self._updating = False
        self.colorbar.set_scale(display.color_scale)
        self.histogram.set_results(res)
        self._fill_table()
        self.timeline.set_current_frame(display.current_frame())
        self._on_selection(display.selected_track)

    def _fill_table(self) -> None:
        summary = self.display.results.summary if self.display is not None else None
        self.table.setSortingEnabled(False)
        self.table.clearContents()
        self.table.setRowCount(0 if summary is None else len(summary))
        if summary is None:
            return
        for col, (name, _, fmt) in enumerate(TABLE_COLUMNS):
            if name in summary.columns:
                values = summary[name].to_numpy()
            else:
                values = np.full(len(summary), "", dtype=object)
            for row, value in enumerate(values):
                if fmt == "{}":
                    item = QTableWidgetItem("" if value is None or (isinstance(value, float) and not np.isfinite(value))
                                            else str(value))
                else:
                    v = float(value)
                    text = fmt.format(int(v)) if fmt == "{:d}" else (fmt.format(v) if np.isfinite(v) else "–")
                    item = _NumericItem(text, v if np.isfinite(v) else -np.inf)
                if col == 0:
                    item.setData(Qt.UserRole, int(value))
                self.table.setItem(row, col, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()

    def _row_of_track(self, track_id: int) -> int | None:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.data(Qt.UserRole) == track_id:
                return row
        return None

    # ------------------------------------------------------------------ callbacks
    def _on_color_by(self, index: int) -> None:
        if self._updating or self.display is None:
            return
        self.display.set_color_by(self.color_combo.itemData(index))
        self.colorbar.set_scale(self.display.color_scale)

    def _on_ellipses_toggled(self, on: bool) -> None:
        if self.display is not None and self.display.ellipses_layer is not None:
            self.display.ellipses_layer.visible = bool(on)
            if on:
                self.display.refresh_ellipses()

    def _on_ellipse_factor(self, value: float) -> None:
        if not self._updating and self.display is not None:
            self.display.set_ellipse_scale_factor(value)

    def _on_table_selection(self) -> None:
        if self._updating or self.display is None:
            return
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        track = self.table.item(rows[0].row(), 0).data(Qt.UserRole)
        self.display.select_track(int(track))

    def _on_selection(self, track_id: int | None) -> None:
        """The display's selected track changed: update timeline, histogram mark and table row."""
        res = self.display.results if self.display is not None else None
        self.timeline.set_track(res, track_id)
        if res is None or track_id is None:
            self.histogram.mark(None, None)
            return
        row = res.summary[res.summary["track_id"] == track_id]
        self.histogram.mark(float(row["D1_um2_s"].iloc[0]), float(row["D2_um2_s"].iloc[0]))
        table_row = self._row_of_track(track_id)
        if table_row is not None:
            self._updating = True
            self.table.selectRow(table_row)
            self.table.scrollToItem(self.table.item(table_row, 0))
            self._updating = False
        if self.display is not None:
            frames = res.tracks.loc[res.tracks["track_id"] == track_id, "frame"]
            current = self.display.current_frame()
            if len(frames) and not (frames.min() <= current <= frames.max()):
                self.go_to_frame(int(frames.min()))

    def _on_frame(self, event: Any = None) -> None:
        if self.display is not None:
            self.timeline.set_current_frame(self.display.current_frame())

    def go_to_frame(self, frame: int) -> None:
        """Move the viewer's time axis to ``frame``."""
        step = list(self.viewer.dims.current_step)
        if not step:
            return
        axis = len(step) - 3 if len(step) >= 3 else 0
        self.viewer.dims.set_current_step(axis, int(frame))

    def closeEvent(self, event: Any) -> None:  # Qt name
        try:
            self.viewer.dims.events.current_step.disconnect(self._on_frame)
        except (TypeError, ValueError, RuntimeError):
            pass
        if self.display is not None:
            self.display.close()
        super().closeEvent(event)


_WIDGETS: weakref.WeakKeyDictionary[Any, ResultsWidget] = weakref.WeakKeyDictionary()


def _results_widget_for(viewer: Any) -> ResultsWidget:
    """The viewer's results dock, created (and docked at the bottom) when missing or closed."""
    widget = _WIDGETS.get(viewer)
    alive = False
    if widget is not None:
        try:
            alive = widget.parent() is not None
        except RuntimeError:  # the C++ object was deleted with its dock
            alive = False
    if not alive:
        widget = ResultsWidget(viewer)
        window = getattr(viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            window.add_dock_widget(widget, name="SPT results", area="bottom")
        _WIDGETS[viewer] = widget
    return widget


def show_results(
    viewer: Any,
    results: Any,
    acquisition: Any,
    geometry: Any = None,
    *,
    prefix: str = "",
    **display_options: Any,
) -> tuple[ResultsDisplay, ResultsWidget]:
    """Add the layers of ``results`` to ``viewer`` and show them in the results dock.

    A previous display in the dock is disconnected (its layers stay unless they had
    the same names, in which case they are replaced). ``display_options`` are the fields
    of :class:`~.display.DisplayOptions` (``color_by``, ``max_static_ellipses``, ...).

    Returns
    -------
    (ResultsDisplay, ResultsWidget)
    """
    widget = _results_widget_for(viewer)
    if widget.display is not None:
        widget.display.close()
    display = ResultsDisplay(
        viewer, results, acquisition, geometry, prefix=prefix, options=DisplayOptions(**display_options)
    )
    widget.set_display(display)
    return display, widget

