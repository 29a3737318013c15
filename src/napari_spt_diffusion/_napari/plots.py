"""Matplotlib canvases styled like the napari theme: timeline, histogram, colour bar, movie preview.

Each canvas is a ``FigureCanvasQTAgg`` whose colours follow the viewer's theme
(background, text) and that redraws only when told to (new track, new frame).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QSizePolicy

from ..results import Results, parse_changepoint_frames
from .layers import ColorScale

__all__ = ["ColorBarCanvas", "HistogramCanvas", "MoviePreviewCanvas", "ThemedCanvas", "TimelineCanvas", "theme_colors"]

D1_COLOR = "#ff7f0e"
D2_COLOR = "#1f9bd1"


def theme_colors(viewer: Any = None) -> dict[str, str]:
    """Background, axes and text colours (hex) of the viewer's napari theme."""
    from napari.utils.theme import get_theme

    name = getattr(viewer, "theme", None) or "dark"
    try:
        theme = get_theme(name)
    except (ValueError, KeyError):
        theme = get_theme("dark")
    return {
        "background": theme.background.as_hex(),
        "axes": theme.foreground.as_hex(),
        "text": theme.text.as_hex(),
        "highlight": theme.highlight.as_hex(),
        "current": theme.current.as_hex(),
    }


class ThemedCanvas(FigureCanvasQTAgg):
    """A figure canvas whose colours follow the napari theme of ``viewer``."""

    def __init__(self, viewer: Any = None, *, height_in: float = 2.2, parent: Any = None) -> None:
        self.figure = Figure(figsize=(4.0, height_in), dpi=90, layout="constrained")
        super().__init__(self.figure)
        if parent is not None:
            self.setParent(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumHeight(int(height_in * 50))
        self.viewer = viewer
        self.colors = theme_colors(viewer)
        if viewer is not None and hasattr(viewer, "events") and hasattr(viewer.events, "theme"):
            viewer.events.theme.connect(self._on_theme)

    def _on_theme(self, event: Any = None) -> None:
        self.colors = theme_colors(self.viewer)
        self.redraw()

    def style_axes(self, ax: Any) -> None:
        """Apply the theme colours to one axes."""
        c = self.colors
        self.figure.set_facecolor(c["background"])
        ax.set_facecolor(c["axes"])
        for spine in ax.spines.values():
            spine.set_color(c["text"])
        ax.tick_params(colors=c["text"], labelsize=8)
        ax.xaxis.label.set_color(c["text"])
        ax.yaxis.label.set_color(c["text"])
        ax.title.set_color(c["text"])

    def legend(self, ax: Any) -> None:
        """A small legend in the theme's colours."""
        leg = ax.legend(fontsize=7, frameon=False, loc="best")
        for text in leg.get_texts():
            text.set_color(self.colors["text"])

    def redraw(self) -> None:  # pragma: no cover - overridden
        self.draw_idle()


class TimelineCanvas(ThemedCanvas):
    """D1(t) and D2(t) of one track, changepoints as dashed lines, the current frame as a line.

    Clicking the plot emits :attr:`frame_clicked` with the nearest frame.
    """

    frame_clicked = Signal(int)

    def __init__(self, viewer: Any = None, parent: Any = None) -> None:
        super().__init__(viewer, parent=parent)
        self.ax = self.figure.add_subplot(111)
        self.track_id: int | None = None
        self.frames = np.zeros(0)
        self.D1 = np.zeros(0)
        self.D2 = np.zeros(0)
        self.changepoints: list[int] = []
        self.current_frame = 0
        self._frame_line: Any = None
        self.mpl_connect("button_press_event", self._on_click)
        self.redraw()

    def set_track(self, results: Results | None, track_id: int | None) -> None:
        """Plot the per-frame D1/D2 of ``track_id`` (``None`` clears the plot)."""
        self.track_id = track_id
        if results is None or track_id is None:
            self.frames = self.D1 = self.D2 = np.zeros(0)
            self.changepoints = []
        else:
            rows = results.tracks[results.tracks["track_id"] == track_id].sort_values("frame")
            self.frames = rows["frame"].to_numpy(float)
            self.D1 = rows["D1_um2_s"].to_numpy(float)
            self.D2 = rows["D2_um2_s"].to_numpy(float)
            summary = results.summary[results.summary["track_id"] == track_id]
            self.changepoints = (
                parse_changepoint_frames(summary["changepoint_frames"].iloc[0]) if len(summary) else []
            )
        self.redraw()

    def set_current_frame(self, frame: int) -> None:
        """Move the current-frame line (cheap: no full redraw)."""
        self.current_frame = int(frame)
        if self._frame_line is not None:
            self._frame_line.set_xdata([self.current_frame, self.current_frame])
            self.draw_idle()

    def redraw(self) -> None:
        ax = self.ax
        ax.clear()
        self.style_axes(ax)
        c = self.colors
        if self.track_id is None or self.frames.size == 0:
            ax.text(0.5, 0.5, "select a track (click it, or a table row)", ha="center", va="center",
                    transform=ax.transAxes, color=c["text"], fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            self._frame_line = None
            self.draw_idle()
            return
        ax.plot(self.frames, self.D1, "-", color=D1_COLOR, lw=1.4, label="D1")
        ax.plot(self.frames, self.D2, "-", color=D2_COLOR, lw=1.4, label="D2")
        positive = np.concatenate([self.D1, self.D2])
        positive = positive[np.isfinite(positive) & (positive > 0)]
        if positive.size:
            # limits with room around the lines: constant D1/D2 (one state) must not sit on the frame
            lo, hi = float(positive.min()), float(positive.max())
            if hi / max(lo, 1e-12) > 20:
                ax.set_yscale("log")
                ax.set_ylim(lo / 1.8, hi * 1.8)
            else:
                ax.set_ylim(0.0, hi * 1.3)
        for k, cp in enumerate(self.changepoints):
            ax.axvline(cp - 0.5, color="yellow", ls="--", lw=1.0, label="changepoint" if k == 0 else None)
        self._frame_line = ax.axvline(self.current_frame, color=c["text"], lw=1.0, alpha=0.8)
        ax.set_xlabel("frame")
        ax.set_ylabel("D (um²/s)")
        ax.set_title(f"track {self.track_id}", fontsize=9)
        ax.set_xlim(self.frames.min() - 0.5, self.frames.max() + 0.5)
        self.legend(ax)
        self.draw_idle()

    def _on_click(self, event: Any) -> None:
        if event.inaxes is not self.ax or event.xdata is None or self.frames.size == 0:
            return
        self.frame_clicked.emit(int(round(event.xdata)))


class HistogramCanvas(ThemedCanvas):
    """Histograms of the per-track D1 and D2 (log bins), with the selected track marked."""

    def __init__(self, viewer: Any = None, parent: Any = None) -> None:
        super().__init__(viewer, parent=parent)
        self.ax = self.figure.add_subplot(111)
        self.D1 = np.zeros(0)
        self.D2 = np.zeros(0)
        self.marked: tuple[float, float] | None = None
        self.redraw()

    def set_results(self, results: Results | None) -> None:
        """Histogram the summary's D1/D2 (um^2/s)."""
        if results is None:
            self.D1 = self.D2 = np.zeros(0)
        else:
            self.D1 = results.summary["D1_um2_s"].to_numpy(float)
            self.D2 = results.summary["D2_um2_s"].to_numpy(float)
        self.redraw()

    def mark(self, D1: float | None, D2: float | None) -> None:
        """Mark one track's D1/D2 with vertical lines (``None`` clears)."""
        self.marked = None if D1 is None else (float(D1), float(D2))
        self.redraw()

    def redraw(self) -> None:
        ax = self.ax
        ax.clear()
        self.style_axes(ax)
        values = np.concatenate([self.D1, self.D2])
        values = values[np.isfinite(values) & (values > 0)]
        if values.size == 0:
            ax.set_xticks([])
            ax.set_yticks([])
            self.draw_idle()
            return
        lo, hi = values.min(), values.max()
        if hi <= lo * 1.01:
            lo, hi = lo / 2, hi * 2
        bins = np.geomspace(lo, hi, 21)
        for vals, color, label in ((self.D1, D1_COLOR, "D1"), (self.D2, D2_COLOR, "D2")):
            v = vals[np.isfinite(vals) & (vals > 0)]
            ax.hist(v, bins=bins, color=color, alpha=0.6, label=f"{label} (n={v.size})")
        if self.marked is not None:
            ax.axvline(self.marked[0], color=D1_COLOR, lw=2)
            ax.axvline(self.marked[1], color=D2_COLOR, lw=2)
        ax.set_xscale("log")
        ax.set_xlabel("per-track D (um²/s)")
        ax.set_ylabel("tracks")
        self.legend(ax)
        self.draw_idle()


class ColorBarCanvas(ThemedCanvas):
    """A horizontal colour bar of a :class:`~.layers.ColorScale`, ticks in physical units."""

    def __init__(self, viewer: Any = None, parent: Any = None) -> None:
        super().__init__(viewer, height_in=0.75, parent=parent)
        self.setMinimumHeight(58)
        self.setMaximumHeight(80)
        self.ax = self.figure.add_subplot(111)
        self.scale: ColorScale | None = None
        self.redraw()

    def set_scale(self, scale: ColorScale | None) -> None:
        """Show this colour scale."""
        self.scale = scale
        self.redraw()

    def redraw(self) -> None:
        ax = self.ax
        ax.clear()
        self.style_axes(ax)
        ax.set_yticks([])
        if self.scale is None:
            ax.set_xticks([])
            self.draw_idle()
            return
        from matplotlib.colors import ListedColormap

        cmap = self.scale.napari_colormap()
        x = np.linspace(0.0, 1.0, 256)
        ax.imshow(x[None, :], aspect="auto", cmap=ListedColormap(np.asarray(cmap.map(x))), extent=(0, 1, 0, 1))
        pos, labels = self.scale.ticks(5)
        ax.set_xticks(pos)
        ax.set_xticklabels(labels)
        ax.set_xlim(0, 1)
        ax.set_xlabel(self.scale.title, fontsize=8)
        self.draw_idle()


class MoviePreviewCanvas(ThemedCanvas):
    """A short movie with its true tracks, drawn inside a dock (the Simulator's live preview).

    It never touches the viewer's layers, so a preview at its own scale and length
    cannot hide under (or rescale the time axis of) the user's movie. :meth:`set_movie`
    shows a new movie, :meth:`set_frame` one frame; the tracks are drawn up to that frame
    (the last :attr:`tail_frames` frames), coloured by track.
    """

    tail_frames = 10

    def __init__(self, viewer: Any = None, parent: Any = None) -> None:
        super().__init__(viewer, height_in=2.6, parent=parent)
        self.setMinimumHeight(160)
        self.ax = self.figure.add_subplot(111)
        self.movie: np.ndarray | None = None
        self.tracks: Any = None
        self.frame = 0
        self._image: Any = None
        self._lines: list[Any] = []
        self.redraw()

    def set_movie(self, movie: Any, tracks: Any = None) -> None:
        """Show ``movie`` ``(T, Y, X)`` (camera counts) and ``tracks`` (a results ``tracks`` table, px)."""
        self.movie = None if movie is None else np.asarray(movie)
        self.tracks = tracks
        self.frame = 0
        self.redraw()

    def set_frame(self, frame: int) -> None:
        """Show frame ``frame`` (clipped to the movie) and the tracks up to it."""
        if self.movie is None:
            return
        self.frame = int(min(max(frame, 0), len(self.movie) - 1))
        self._image.set_data(self.movie[self.frame])
        self._draw_tracks()
        self.draw_idle()

    def _draw_tracks(self) -> None:
        for line in self._lines:
            line.remove()
        self._lines = []
        t = self.tracks
        if t is None or not len(t):
            return
        from matplotlib import colormaps

        cmap = colormaps["tab10"]
        near = t[(t["frame"] <= self.frame) & (t["frame"] > self.frame - self.tail_frames)]
        for tid, rows in near.groupby("track_id"):
            rows = rows.sort_values("frame")
            (line,) = self.ax.plot(rows["x_px"], rows["y_px"], "-", lw=1.2, color=cmap(int(tid) % 10), alpha=0.9)
            self._lines.append(line)

    def redraw(self) -> None:
        ax = self.ax
        ax.clear()
        self._lines = []
        self.style_axes(ax)
        ax.set_xticks([])
        ax.set_yticks([])
        if self.movie is None or not len(self.movie):
            self._image = None
            ax.text(0.5, 0.5, "no preview", ha="center", va="center", transform=ax.transAxes,
                    color=self.colors["text"], fontsize=8)
            self.draw_idle()
            return
        lo, hi = np.percentile(self.movie[: min(len(self.movie), 5)], [0.5, 99.9])
        self._image = ax.imshow(self.movie[self.frame], cmap="gray", vmin=float(lo), vmax=float(max(hi, lo + 1)),
                                interpolation="nearest")
        ax.set_xlim(-0.5, self.movie.shape[2] - 0.5)
        ax.set_ylim(self.movie.shape[1] - 0.5, -0.5)
        self._draw_tracks()
        self.draw_idle()
