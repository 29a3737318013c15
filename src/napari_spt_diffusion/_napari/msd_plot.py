"""The results dock's MSD tab: the ensemble MSD and the selected track's MSD, each with its line fit.

The curves and fits come from :func:`napari_spt_diffusion.estimation.msd.results_msd_table`
(lag in s, MSD in um^2; the drift correction of the run is applied there); this module only
draws them, log-log, in the napari theme's colours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import SptDiffusionError
from ..results import Results
from .plots import D1_COLOR, ThemedCanvas

__all__ = ["MsdCanvas"]

ENSEMBLE_COLOR = "#b0b0b0"


class MsdCanvas(ThemedCanvas):
    """MSD (um^2) against lag (s), log-log: the ensemble curve and the selected track's, with their fits.

    :meth:`set_results` computes the table of a result set once (``None`` clears);
    :meth:`set_track` picks the track drawn beside the ensemble.
    """

    def __init__(self, viewer: Any = None, parent: Any = None) -> None:
        super().__init__(viewer, parent=parent)
        self.ax = self.figure.add_subplot(111)
        self.table: pd.DataFrame | None = None
        self.message = ""
        self.track_id: int | None = None
        self.redraw()

    def set_results(self, results: Results | None) -> None:
        """Compute the MSD curves of ``results`` (an error becomes a line on the plot)."""
        from ..estimation.msd import results_msd_table

        self.table, self.message = None, ""
        if results is not None:
            try:
                self.table = results_msd_table(results)
            except SptDiffusionError as exc:
                self.message = f"no MSD: {exc}"
        self.redraw()

    def set_track(self, track_id: int | None) -> None:
        """Draw the curve of ``track_id`` beside the ensemble (``None``: the ensemble only)."""
        self.track_id = None if track_id is None else int(track_id)
        self.redraw()

    def curve(self, which: str) -> pd.DataFrame:
        """Rows of the ensemble curve (``"ensemble"``) or of the selected track (``"track"``); may be empty."""
        if self.table is None or not len(self.table):
            return pd.DataFrame()
        rows = self.table[self.table["curve"] == which]
        if which == "track":
            if self.track_id is None:
                return rows.iloc[:0]
            rows = rows[rows["track_id"] == self.track_id]
        return rows

    def _plot(self, rows: pd.DataFrame, color: str, label: str) -> None:
        lag = rows["lag_s"].to_numpy(float)
        msd = rows["msd_um2"].to_numpy(float)
        fit = rows["msd_fit_um2"].to_numpy(float)
        ok = np.isfinite(msd) & (msd > 0)
        self.ax.plot(lag[ok], msd[ok], "o", ms=3, color=color, label=label)
        line = np.isfinite(fit) & (fit > 0)
        d = float(rows["D_fit_um2_s"].iloc[0]) if len(rows) else np.nan
        if line.any() and np.isfinite(d):
            self.ax.plot(lag[line], fit[line], "-", lw=1.2, color=color, alpha=0.9,
                         label=f"fit: D = {d:.3g} um²/s ({int(rows['fit_lags'].iloc[0])} lags)")

    def redraw(self) -> None:
        ax = self.ax
        ax.clear()
        self.style_axes(ax)
        ensemble, track = self.curve("ensemble"), self.curve("track")
        if not len(ensemble) and not len(track):
            ax.text(0.5, 0.5, self.message or "no results", ha="center", va="center", transform=ax.transAxes,
                    color=self.colors["text"], fontsize=8, wrap=True)
            ax.set_xticks([])
            ax.set_yticks([])
            self.draw_idle()
            return
        if len(ensemble):
            self._plot(ensemble, ENSEMBLE_COLOR, "ensemble")
        if len(track):
            self._plot(track, D1_COLOR, f"track {self.track_id}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("lag (s)")
        ax.set_ylabel("MSD (um²)")
        ax.set_title("ensemble MSD" + (f" and track {self.track_id}" if len(track) else
                                       " (select a track to add its curve)"), fontsize=9)
        self.legend(ax)
        self.draw_idle()
