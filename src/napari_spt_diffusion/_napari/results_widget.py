"""The results dock: which results to show (one entry per movie / run), colour-by selector
with its colour bar, ellipse controls, the guard's banner and the run's warnings, and tabs:
the per-track table, the D(t) timeline of the selected track, the per-track D1/D2
histogram, the MSD curves (ensemble and selected track; :meth:`ResultsWidget.add_tab` adds more).

It drives one :class:`~.display.ResultsDisplay` at a time (the layers) and listens to it:
selecting a table row or clicking a track selects the track everywhere; clicking the
timeline moves the viewer to that frame. The displays of earlier runs and other movies
stay (their layers too) and come back when picked in "results of".
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
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..results import SUMMARY_COLUMNS
from .display import DisplayOptions, ResultsDisplay
from .layers import COLOR_KEYS
from .msd_plot import MsdCanvas
from .plots import ColorBarCanvas, HistogramCanvas, TimelineCanvas

__all__ = ["ResultsWidget", "TABLE_COLUMNS", "run_warnings", "show_results"]

#: The dock's smallest height (its content scrolls below it).
MIN_DOCK_HEIGHT_PX = 120
#: Share of the main window's height the dock takes when it first opens.
START_HEIGHT_FRACTION = 0.42
BANNER_STYLE = "background-color: #8a3b12; color: white; padding: 4px; border-radius: 3px;"
WARNING_STYLE = "color: #ffb347;"


def run_warnings(meta: dict[str, Any] | None) -> list[str]:
    """Every warning a run recorded in its ``meta``, once each, in order.

    ``meta["warnings"]`` (calibration notes, linking messages, the guard's verdict),
    the acquisition check of the model (``meta["guard"]["acquisition_messages"]``, e.g.
    "pixel size 160 nm is outside what model 'binding' was trained for...") and the
    guard's reason when it has one, last (a notification shown last is on top).
    """
    meta = meta or {}
    guard = meta.get("guard") or {}
    reason = str(guard.get("reason") or "").strip()
    found = [*(meta.get("warnings") or ()), *(guard.get("acquisition_messages") or ())]
    out: list[str] = []
    for message in found:
        text = str(message).strip()
        if text and text not in out and text != reason:
            out.append(text)
    return [*out, reason] if reason else out


def isotropy_line(meta: dict[str, Any] | None) -> str:
    """The movie's isotropy verdict (``meta["isotropy"]["text"]``, estimation/isotropy.py) as a second
    paragraph of the dock's header, ``""`` for results without one (older files, imported tables)."""
    verdict = (meta or {}).get("isotropy") or {}
    return f"\n{verdict['text']}" if verdict.get("text") else ""


def beyond_range_count(results: Any) -> int:
    """Tracks given the classical values because they lie outside the model's range of D (warning
    ``beyond_model_range``, ``estimation/model_range.py``; with --trust-model they keep the model's: not counted)."""
    summary = results.summary
    if "warnings" not in summary.columns or "method" not in summary.columns:
        return 0
    flagged = summary["warnings"].astype(object).fillna("").astype(str).str.split(";").apply(
        lambda flags: "beyond_model_range" in flags)
    return int((flagged & (summary["method"] == "classical")).sum())


def guard_banner(results: Any) -> str:
    """The banner text when the guard rejected the model (``""`` otherwise)."""
    meta = results.meta or {}
    guard = meta.get("guard") or {}
    flags = None
    for column in ("warnings", "flags"):  # "flags": result sets written before the split
        if column in results.summary.columns:
            flags = results.summary[column].astype(object).fillna("").astype(str)
            break
    n_rejected = int(flags.str.contains("model_rejected").sum()) if flags is not None else 0
    if not (guard.get("rejected") or n_rejected):
        return ""
    model = meta.get("model") or "the model"
    if guard.get("model_reported", True) and not n_rejected:
        return f"The guard rejected model '{model}' on this movie; its values are shown anyway (trust model)."
    return (f"The guard rejected model '{model}' on this movie: the classical (CVE) estimates are shown"
            f"{f' for {n_rejected} tracks' if n_rejected else ''} (why: the warnings tab).")

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
    ("isotropy_p", "isotropy p", "{:.2g}"),
    ("n_changepoints", "CPs", "{:d}"),
    ("changepoint_frames", "CP frames", "{}"),
    ("warnings", "warnings", "{}"),
)
#: Columns that the pipeline adds beside the contract (empty cells when a table lacks them).
#: ``notes`` (informational flags) are not shown in the table; they are in the CSV.
_EXTRA_COLUMNS = ("warnings", "isotropy_p")
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
    """Dock widget showing one :class:`ResultsDisplay` at a time (call :meth:`set_display`).

    Every display given to :meth:`set_display` is kept under its name (the layer-name
    prefix, e.g. ``"movie1"``) until its layers are removed; "results of" switches.
    """

    def __init__(self, viewer: Any, parent: Any = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.display: ResultsDisplay | None = None
        self.displays: dict[str, ResultsDisplay] = {}
        self._updating = False

        self.source_combo = QComboBox()
        self.source_combo.setToolTip("Results of which movie or run (earlier runs stay until their layers are removed)")
        self.source_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.source_combo.setMinimumContentsLength(10)
        self.color_combo = QComboBox()
        for key, (_, label, unit) in COLOR_KEYS.items():
            self.color_combo.addItem(f"{label} ({unit})" if unit else label, key)
        self.color_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.color_combo.setMinimumContentsLength(8)
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
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(BANNER_STYLE)
        self.banner.setVisible(False)
        self.warnings_label = QLabel("")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setStyleSheet(WARNING_STYLE)
        self.warnings_label.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.warnings_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        for label in (self.info, self.banner, self.warnings_label):
            label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Minimum)
        warnings_page = QScrollArea()
        warnings_page.setWidgetResizable(True)
        warnings_page.setFrameShape(QFrame.NoFrame)
        warnings_page.setWidget(self.warnings_label)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("results of"))
        controls.addWidget(self.source_combo, 2)
        controls.addWidget(QLabel("colour by"))
        controls.addWidget(self.color_combo, 1)
        controls.addWidget(self.ellipse_check)
        controls.addWidget(self.ellipse_factor)

        self.colorbar = ColorBarCanvas(viewer)
        self.colorbar.setMinimumHeight(46)
        self.colorbar.setMaximumHeight(62)
        self.colorbar.setMinimumWidth(240)
        controls.addWidget(self.colorbar, 4)  # the colour bar shares the row: more height for the tabs
        self.timeline = TimelineCanvas(viewer)
        self.histogram = HistogramCanvas(viewer)
        self.msd = MsdCanvas(viewer)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels([c[1] for c in TABLE_COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(60)
        for canvas in (self.timeline, self.histogram, self.msd):
            canvas.setMinimumHeight(80)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.add_tab(self.table, "tracks")
        self.add_tab(self.timeline, "D(t) of the selected track")
        self.add_tab(self.histogram, "D histogram")
        self.msd_tab = self.add_tab(self.msd, "MSD")
        self.warnings_tab = self.add_tab(warnings_page, "warnings")

        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(3)
        layout.addLayout(controls)
        layout.addWidget(self.banner)
        layout.addWidget(self.info)
        layout.addWidget(self.tabs, 1)
        # the dock may be shorter than its content (it scrolls): the main window fits 1280 x 800
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setWidget(body)
        self.scroll.setMinimumHeight(MIN_DOCK_HEIGHT_PX)
        self.scroll.setMinimumWidth(body.minimumSizeHint().width())
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)

        self.source_combo.currentIndexChanged.connect(self._on_source)
        self.color_combo.currentIndexChanged.connect(self._on_color_by)
        self.ellipse_check.toggled.connect(self._on_ellipses_toggled)
        self.ellipse_factor.valueChanged.connect(self._on_ellipse_factor)
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        self.timeline.frame_clicked.connect(self.go_to_frame)
        viewer.dims.events.current_step.connect(self._on_frame)
        viewer.layers.events.removed.connect(self._on_layer_removed)

    def add_tab(self, widget: QWidget, title: str) -> int:
        """Add a page to the tabs below the colour bar (e.g. an MSD plot); returns its index.

        A page that shows per-display content can follow :meth:`set_display` through
        ``self.displays`` / ``self.display`` or the display's ``selection_changed`` signal.
        """
        return self.tabs.addTab(widget, title)

    # ------------------------------------------------------------------ wiring
    @staticmethod
    def display_name(display: ResultsDisplay) -> str:
        """The entry of ``display`` in "results of": its layer-name prefix (``"movie1"``)."""
        return display.prefix.strip() or "results"

    def set_display(self, display: ResultsDisplay | None) -> None:
        """Show this display's results (``None`` clears); it joins "results of" and stays there."""
        if display is not None:
            name = self.display_name(display)
            old = self.displays.get(name)
            if old is not None and old is not display:
                old.close()
            self.displays[name] = display
            self._updating = True
            if self.source_combo.findText(name) < 0:
                self.source_combo.addItem(name)
            self.source_combo.setCurrentIndex(self.source_combo.findText(name))
            self._updating = False
        self._show(display)

    def _show(self, display: ResultsDisplay | None) -> None:
        if self.display is not None and self.display is not display:
            try:
                self.display.selection_changed.disconnect(self._on_selection)
            except (TypeError, ValueError, RuntimeError):
                pass
            self.display.close()  # keeps its layers; clicks go to the shown display only
        self.display = display
        if display is None:
            self.info.setText("no results")
            self.banner.setVisible(False)
            self._set_warnings([])
            self.table.setRowCount(0)
            self.timeline.set_track(None, None)
            self.histogram.set_results(None)
            self.msd.set_results(None)
            self.colorbar.set_scale(None)
            self._show_legend()
            return
        display.connect()
        display.selection_changed.connect(self._on_selection)
        res = display.results
        n_cp = int(res.summary["n_changepoints"].sum()) if len(res.summary) else 0
        model = res.meta.get("model") or ", ".join(sorted(set(res.summary["model"].astype(str)))) or "?"
        guard = res.meta.get("guard") or {}
        if not guard.get("model_reported", True):
            model = f"{model}, rejected by the guard: classical values shown"
        elif n_beyond := beyond_range_count(res):
            model = f"{model}; classical values for {n_beyond} tracks beyond its D range"
        warnings = run_warnings(res.meta)
        noted = f"; ⚠ {len(warnings)} warning{'s' if len(warnings) != 1 else ''} (tab)" if warnings else ""
        self.info.setText(
            f"{display.prefix}{res.n_tracks} tracks, {len(res.tracks)} localizations, {n_cp} changepoints "
            f"(model: {model}){noted}{isotropy_line(res.meta)}"
        )
        banner = guard_banner(res)
        self.banner.setText(banner)
        self.banner.setVisible(bool(banner))
        self._set_warnings(warnings)
        idx = self.color_combo.findData(display.color_by)
        self._updating = True
        self.color_combo.setCurrentIndex(max(idx, 0))
        self.ellipse_factor.setValue(display.ellipse_scale_factor)
        self._updating = False
        self.colorbar.set_scale(display.color_scale)
        self._show_legend()
        self.histogram.set_results(res)
        self.msd.track_id = display.selected_track
        self.msd.set_results(res)
        self._fill_table()
        self.timeline.set_current_frame(display.current_frame())
        self._on_selection(display.selected_track)

    def _set_warnings(self, warnings: list[str]) -> None:
        """Fill the warnings tab (its title counts them, in the warning colour when there are any)."""
        from qtpy.QtGui import QColor

        self.warnings_label.setText("\n\n".join(f"⚠ {w}" for w in warnings) or "no warnings")
        self.tabs.setTabText(self.warnings_tab, f"warnings ({len(warnings)})")
        bar = self.tabs.tabBar()
        plain = bar.palette().color(bar.foregroundRole())
        bar.setTabTextColor(self.warnings_tab, QColor("#ffb347") if warnings else plain)

    def _show_legend(self) -> None:
        """A one-line legend of the colour scale on the canvas (napari's text overlay, top left)."""
        try:
            overlay = self.viewer.canvas.overlays["text"]
        except (AttributeError, KeyError, TypeError):  # an older napari: the dock's colour bar only
            return
        if self.display is None:
            overlay.visible = False
            return
        scale = self.display.color_scale
        _, labels = scale.ticks(5)
        low, high = ("blue", "red") if not scale.categorical else ("blue", "red (last state)")
        overlay.text = f"colour: {scale.title}, {labels[0]} ({low}) to {labels[-1]} ({high})"
        overlay.position = "top_left"
        overlay.font_size = 10
        overlay.visible = True

    def _on_source(self, index: int) -> None:
        if self._updating or index < 0:
            return
        display = self.displays.get(self.source_combo.itemText(index))
        if display is not None and display is not self.display:
            self._show(display)

    def _on_layer_removed(self, event: Any = None) -> None:
        """Forget the displays whose tracks layer was removed."""
        for name, display in list(self.displays.items()):
            if not display.alive:
                display.close(remove_layers=False)
                del self.displays[name]
                self._updating = True
                self.source_combo.removeItem(self.source_combo.findText(name))
                self._updating = False
                if display is self.display:
                    self.display = None
                    rest = list(self.displays.values())
                    self._show(rest[-1] if rest else None)
                    if rest:
                        self.source_combo.setCurrentIndex(self.source_combo.findText(self.display_name(rest[-1])))

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
            else:  # a table without the column (a truth table, an older file): "" or "–" cells
                values = np.full(len(summary), "" if fmt == "{}" else np.nan, dtype=object)
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
        self._show_legend()

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
        self.msd.set_track(track_id)
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
        for ev, callback in ((self.viewer.dims.events.current_step, self._on_frame),
                             (self.viewer.layers.events.removed, self._on_layer_removed)):
            try:
                ev.disconnect(callback)
            except (TypeError, ValueError, RuntimeError):
                pass
        for display in self.displays.values():
            display.close()
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
            dock = widget.parentWidget()  # the Qt dock itself (napari may hand back a proxy)
            main = dock.parentWidget() if dock is not None else None
            if isinstance(main, QMainWindow):  # a useful height at first (the user may drag it)
                main.resizeDocks([dock], [int(START_HEIGHT_FRACTION * main.height())], Qt.Vertical)
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

    Displays of other prefixes (other movies, the truth of another simulation) stay in
    the dock's "results of" list with their layers; an earlier display of the same prefix
    is replaced (its layers too, by name). ``display_options`` are the fields of
    :class:`~.display.DisplayOptions` (``color_by``, ``max_static_ellipses``, ``adopt_layers``...).

    Returns
    -------
    (ResultsDisplay, ResultsWidget)
    """
    widget = _results_widget_for(viewer)
    if widget.display is not None:
        widget.display.close()
    same = widget.displays.get((prefix or "").strip() or "results")
    if same is not None:
        same.close()
    display = ResultsDisplay(
        viewer, results, acquisition, geometry, prefix=prefix, options=DisplayOptions(**display_options)
    )
    widget.set_display(display)
    return display, widget

