"""The results contract: the per-localization and per-track tables (docs/results_contract.md).

Both the tracker's output and the simulator's ground truth use exactly these
columns, so a truth table and a result table can be compared column by column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .acquisition import Acquisition

__all__ = [
    "TRACKS_COLUMNS",
    "SUMMARY_COLUMNS",
    "Results",
    "empty_tracks_table",
    "empty_summary_table",
    "format_changepoint_frames",
    "parse_changepoint_frames",
    "validate_tables",
]

#: One row per localization, sorted by (track_id, frame).
TRACKS_COLUMNS: tuple[str, ...] = (
    "track_id",
    "frame",
    "t_s",
    "x_px",
    "y_px",
    "x_um",
    "y_um",
    "photons",
    "background",
    "loc_precision_nm",
    "D1_um2_s",
    "D2_um2_s",
    "theta_deg",
    "state",
    "is_changepoint",
)

#: One row per track, sorted by track_id.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "track_id",
    "n_frames",
    "frame_start",
    "frame_end",
    "x_mean_px",
    "y_mean_px",
    "D1_um2_s",
    "D2_um2_s",
    "theta_deg",
    "anisotropy",
    "D_msd_um2_s",
    "D_cve_um2_s",
    "alpha_msd",
    "n_changepoints",
    "changepoint_frames",
    "model",
)

_TRACKS_DTYPES: dict[str, Any] = {
    "track_id": np.int64,
    "frame": np.int64,
    "state": np.int64,
    "is_changepoint": bool,
}
_SUMMARY_DTYPES: dict[str, Any] = {
    "track_id": np.int64,
    "n_frames": np.int64,
    "frame_start": np.int64,
    "frame_end": np.int64,
    "n_changepoints": np.int64,
    "changepoint_frames": object,
    "model": object,
}


def empty_tracks_table() -> pd.DataFrame:
    """A tracks table with the contract's columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=_TRACKS_DTYPES.get(c, float)) for c in TRACKS_COLUMNS})


def empty_summary_table() -> pd.DataFrame:
    """A summary table with the contract's columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=_SUMMARY_DTYPES.get(c, float)) for c in SUMMARY_COLUMNS})


def format_changepoint_frames(frames: Any) -> str:
    """Format changepoint frame numbers as the contract's ``;``-separated string."""
    return ";".join(str(int(f)) for f in frames)


def parse_changepoint_frames(text: Any) -> list[int]:
    """Parse a ``changepoint_frames`` cell back to a list of frame numbers."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    text = str(text).strip()
    if not text:
        return []
    return [int(float(part)) for part in text.split(";") if part.strip()]


def validate_tables(tracks: pd.DataFrame, summary: pd.DataFrame) -> None:
    """Raise ``ValueError`` naming the problem if the tables break the contract."""
    missing = [c for c in TRACKS_COLUMNS if c not in tracks.columns]
    if missing:
        raise ValueError(f"tracks table lacks column(s): {', '.join(missing)}")
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"summary table lacks column(s): {', '.join(missing)}")
    if len(tracks):
        # neighbouring rows only (no sorted copy of the table): sorted when no (track_id, frame) key
        # is smaller than the one before it, and without duplicates when none is equal to it
        tid, frame = tracks["track_id"].to_numpy(), tracks["frame"].to_numpy()
        same_track = tid[1:] == tid[:-1]
        if np.any((tid[1:] < tid[:-1]) | (same_track & (frame[1:] < frame[:-1]))):
            raise ValueError("tracks table must be sorted by (track_id, frame)")
        if np.any(same_track & (frame[1:] == frame[:-1])):
            raise ValueError("tracks table has two rows for the same (track_id, frame)")
    ids_tracks = set(np.unique(tracks["track_id"])) if len(tracks) else set()
    ids_summary = set(summary["track_id"]) if len(summary) else set()
    if ids_tracks != ids_summary:
        raise ValueError("tracks and summary tables do not hold the same track ids")


@dataclass
class Results:
    """Output of tracking + estimation (or ground truth of a simulation).

    Attributes
    ----------
    tracks
        One row per localization, columns :data:`TRACKS_COLUMNS`.
    summary
        One row per track, columns :data:`SUMMARY_COLUMNS`.
    meta
        JSON-serialisable metadata: ``{"acquisition": {...}, "model": ..., ...}``.
        ``meta["acquisition"]`` (``Acquisition.to_dict()`` form) is the acquisition the
        tables were measured or simulated with; :attr:`acquisition` reads and sets it.
    """

    tracks: pd.DataFrame
    summary: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_tables(self.tracks, self.summary)

    @property
    def n_tracks(self) -> int:
        """Number of tracks."""
        return int(len(self.summary))

    @property
    def acquisition(self) -> Acquisition | None:
        """The acquisition of the movie these tables describe, ``None`` if unknown.

        Read from ``meta["acquisition"]`` (an :class:`Acquisition` or its dictionary);
        setting it stores ``Acquisition.to_dict()`` there.

        Raises
        ------
        napari_spt_diffusion.acquisition.AcquisitionError
            If ``meta["acquisition"]`` is a dictionary that is not a valid acquisition.
        """
        value = (self.meta or {}).get("acquisition")
        if isinstance(value, Acquisition):
            return value
        if isinstance(value, Mapping):
            return Acquisition.from_dict(dict(value))
        return None

    @acquisition.setter
    def acquisition(self, value: Acquisition | None) -> None:
        if value is not None and not isinstance(value, Acquisition):
            raise TypeError(f"acquisition must be an Acquisition or None, got {type(value).__name__}")
        if self.meta is None:
            self.meta = {}
        self.meta["acquisition"] = None if value is None else value.to_dict()
