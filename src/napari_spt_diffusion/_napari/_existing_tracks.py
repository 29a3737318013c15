"""Inputs of "Estimate on existing tracks" (Track & Estimate widget): a Tracks layer or a track file.

The tracks come from a napari Tracks layer (``data`` rows ``[track_id, t, y, x]``, pixels and
frames, :func:`~napari_spt_diffusion.io.track_tables.tracks_from_layer_data`) or from a file
(TrackMate XML/CSV, trackpy CSV, our ``_tracks.csv``:
:func:`~napari_spt_diffusion.io.track_tables.read_track_file`); the job is
:func:`~napari_spt_diffusion.estimate_tracks.estimate_tracks`. Points layers are not offered
(a Points layer holds no track identity by convention). No science here.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

__all__ = ["FROM_FILE", "TRACK_FILE_FILTER", "tracks_layer_choices", "table_from_layer", "run_estimate"]

#: The choice that asks for a file.
FROM_FILE = "from file…"
TRACK_FILE_FILTER = "Track files (*.xml *.csv);;TrackMate XML (*.xml);;CSV tables (*.csv)"
#: Per-localization columns that a results tracks layer carries along (kept, so no refit is needed).
_PHOTOMETRY = ("photons", "background", "loc_precision_nm")


def tracks_layer_choices(viewer: Any) -> list[tuple[str, Any]]:
    """``(name, layer)`` of each Tracks layer of ``viewer`` (not the selection highlight), then "from file…"."""
    from napari.layers import Tracks

    layers = [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Tracks)
              and (layer.metadata or {}).get("spt_kind") != "selected_track"]
    return [*layers, (FROM_FILE, FROM_FILE)]


def table_from_layer(layer: Any) -> pd.DataFrame:
    """The tracks of a Tracks layer in pixels and frames, ready for ``estimate_tracks``.

    A layer made by this plugin (``metadata["spt_results"]``) also gives the photometry
    of its localizations (``photons``, ``background``, ``loc_precision_nm``), so the
    estimate uses the same values as the run that made it; other layers get them fitted
    in the movie.
    """
    from ..io.track_tables import tracks_from_layer_data

    table = tracks_from_layer_data(layer.data)
    results = (layer.metadata or {}).get("spt_results")
    tracks = getattr(results, "tracks", None)
    if isinstance(tracks, pd.DataFrame) and all(c in tracks.columns for c in _PHOTOMETRY):
        keys = tracks[["track_id", "frame", *_PHOTOMETRY]].drop_duplicates(["track_id", "frame"])
        keys = keys.astype({"track_id": "int64", "frame": "int64"})
        merged = table.merge(keys, on=["track_id", "frame"], how="left", validate="one_to_one")
        if len(merged) == len(table):
            table = merged
    return table


def run_estimate(movie: Any, tracks: Any, acquisition: Any, settings: Any, progress: Any, should_stop: Any) -> Any:
    """The worker's job: one library call (module level so tests can patch it).

    The library's warnings are recorded in the results' ``meta`` and shown when the run ends.
    """
    from ..estimate_tracks import estimate_tracks

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"napari_spt_diffusion(\.|$)")
        return estimate_tracks(movie, tracks, acquisition, settings, progress, should_stop)
