"""Diffusion tensors and changepoints of tracks made elsewhere (TrackMate, trackpy, a napari layer).

:func:`estimate_tracks` takes a movie and its tracks, already linked by another tool, and
runs the pipeline's estimation stage on them (:mod:`~napari_spt_diffusion.estimation_stage`:
patches, classical estimators, the model, the guard, changepoints, tables), so the
result is the same :class:`~napari_spt_diffusion.results.Results` as
:func:`~napari_spt_diffusion.pipeline.track_and_estimate` gives, with the user's track ids
kept. Detection and linking are skipped; in their place:

* the tracks are checked (:func:`~.io.track_tables.normalize_tracks`: columns, whole
  frames from 0, one spot per track and frame) and must lie inside the movie
  (:func:`~.io.track_tables.check_tracks_in_movie`); tracks shorter than
  ``settings.min_track_length`` are left out, with a note;
* where the table does not hold ``photons``, ``background`` and ``loc_precision_nm``, each
  spot is fitted at its given position (:func:`~.tracking.photometry.measure_at_positions`,
  the pipeline's own fit) for those values, which the guard and the changepoint test use;
  the given positions are kept. A median distance above 0.5 px between the given and the
  fitted positions is warned about: the tracks probably do not belong to the movie as
  given (pixel size, origin, another movie);
* ``nearest_other_px`` (the ``crowded`` flag) is measured among the imported localizations, and
  the distance to the field's border (the ``edge`` flag) from the movie's frame size.

The model sees patches cut at the imported positions: a tracker whose positions are less
precise than ours gives the model noisier displacements than it was trained on; the guard
still compares the model with the classical estimate on every movie.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .acquisition import Acquisition
from .estimation.estimator import Estimator
from .estimation_fallback import estimate_with_fallback
from .estimation_stage import _warn, calibrate_and_load
from .io.track_tables import ImportedTracks, check_tracks_in_movie, normalize_tracks
from .pipeline import NoParticlesFound, PipelineError, ProgressCallback, Settings, _check_movie, _Progress
from .results import Results
from .tracking.crowding import nearest_other_px
from .tracking.photometry import measure_at_positions

__all__ = ["estimate_tracks", "MAX_MEDIAN_SHIFT_PX"]

#: Median distance (px) between given and fitted positions above which the tracks are said
#: not to match the movie.
MAX_MEDIAN_SHIFT_PX = 0.5
_PHOTOMETRY = ("photons", "background", "loc_precision_nm")


def _settings(settings: Settings | Mapping[str, Any] | None) -> Settings:
    if settings is None:
        return Settings()
    if isinstance(settings, Mapping):
        try:
            return Settings(**{k: v for k, v in settings.items() if v is not None})
        except TypeError as exc:
            raise PipelineError(f"unknown pipeline setting ({exc})") from None
    return settings


def _long_enough(table: pd.DataFrame, min_length: int, notes: list[str]) -> pd.DataFrame:
    sizes = table.groupby("track_id")["frame"].transform("size")
    keep = sizes >= max(int(min_length), 1)
    n_short = int(table.loc[~keep, "track_id"].nunique())
    if n_short:
        notes.append(f"{n_short} track(s) shorter than {min_length} localizations were left out")
    out = table[keep].reset_index(drop=True)
    if len(out) == 0:
        raise NoParticlesFound(
            f"no imported track has at least {min_length} localizations; lower min_track_length"
        )
    return out


def estimate_tracks(
    movie: Any,
    tracks: pd.DataFrame | ImportedTracks,
    acquisition: Acquisition,
    settings: Settings | Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    estimator: Estimator | None = None,
) -> Results:
    """Estimate the diffusion tensors and changepoints of tracks linked by another tool.

    Parameters
    ----------
    movie
        ``(T, Y, X)`` camera movie in ADU (numpy array, memmap or ``io.read_movie(path).data``).
    tracks
        A table with ``track_id``, ``frame`` (from 0), ``y_px``, ``x_px`` (pixels, pixel
        centres at integers; optional ``photons``, ``background``, ``loc_precision_nm``), e.g.
        :func:`~.io.track_tables.tracks_from_layer_data` of a napari Tracks layer, or the
        :class:`~.io.track_tables.ImportedTracks` of :func:`~.io.track_tables.read_track_file`
        (its record goes to ``meta["tracks_source"]``).
    acquisition
        The movie's acquisition.
    settings
        :class:`~napari_spt_diffusion.pipeline.Settings` (or a dict of its fields). Used:
        ``model``, ``device``, ``batch_size``, ``min_track_length``, the changepoint
        settings, ``chunk_localizations``, ``measure``, ``read_noise_known``, ``trust_model``, ``rescale_model``,
        ``model_range_check``, ``model_switch``, ``psf_units``, ``drift_correction``; detection and linking
        settings do not apply.
    progress, should_stop, estimator
        As for :func:`~napari_spt_diffusion.pipeline.track_and_estimate`.

    Returns
    -------
    Results
        The tables of the results contract (summary with ``method`` and ``flags``), with the
        given track ids; ``meta`` as the pipeline's (no detection or linking entries) plus
        ``tracks_source`` (file, format, units, conversion, notes, ``photometry``,
        ``median_refit_shift_px``), ``n_tracks_imported`` and ``n_localizations_imported``.

    Raises
    ------
    TrackTableError
        Missing columns, tracks outside the movie's frames or field.
    NoParticlesFound
        No track of ``min_track_length`` localizations.
    PipelineError, Cancelled, CheckpointError, EstimatorError
        As for :func:`~napari_spt_diffusion.pipeline.track_and_estimate`.
    """
    settings = _settings(settings)
    if not isinstance(acquisition, Acquisition):
        raise PipelineError("acquisition must be an Acquisition")
    shape = _check_movie(movie)
    source: dict[str, Any] = {}
    if isinstance(tracks, ImportedTracks):
        source = tracks.to_meta()
        table, notes = normalize_tracks(tracks.tracks, Path(tracks.path).name)
        notes = list(tracks.notes) + notes
    elif isinstance(tracks, pd.DataFrame):
        table, notes = normalize_tracks(tracks)
        source = {"file": None, "format": "table", "units": "px", "notes": []}
    else:
        raise PipelineError("tracks must be a pandas DataFrame or ImportedTracks")
    check_tracks_in_movie(table, shape, "the tracks")
    n_imported, n_locs_imported = int(table["track_id"].nunique()), int(len(table))
    table = _long_enough(table, settings.min_track_length, notes)
    for note in notes[len(source.get("notes") or []):]:
        _warn(note)
    messages = list(notes)

    bar = _Progress(progress, should_stop)
    prepared, estimator, acquisition_messages, timings = calibrate_and_load(
        movie, acquisition, settings, estimator, bar)
    acquisition, measured = prepared.acquisition, prepared.measured
    messages += prepared.messages

    bar.begin("detect", "fitting the spots at the given positions")
    t0 = time.perf_counter()
    table, photometry, shift = _photometry(movie, table, acquisition, bar.inner)
    if shift > MAX_MEDIAN_SHIFT_PX:
        text = (f"the imported positions lie {shift:.2f} px (median) from the spots fitted in the movie: check the "
                "pixel size or units of the track file, its origin, and that it belongs to this movie")
        _warn(text)
        messages.append(text)
    table["nearest_other_px"] = nearest_other_px(table["frame"].to_numpy(), table["y_px"].to_numpy(),
                                                 table["x_px"].to_numpy())
    timings["photometry_s"] = time.perf_counter() - t0
    bar.end()
    bar.begin("link", "tracks given")
    bar.end()

    stage, fallback = estimate_with_fallback(movie, table, acquisition, estimator, settings, bar,
                                             acquisition_messages)
    if fallback is not None:  # the guard rejected the model: its model for any microscope is reported
        prepared.model_switch = fallback
    timings.update(stage.timings)
    meta = {
        "acquisition": acquisition.to_dict(),
        "acquisition_measured": None if measured is None else measured.to_dict(),
        **stage.meta,
        "model_switch": None if prepared.model_switch is None else prepared.model_switch.to_dict(),
        "tracks_source": {**source, "notes": notes, "photometry": photometry, "median_refit_shift_px": shift},
        "n_frames": int(shape[0]),
        "n_tracks_imported": n_imported,
        "n_localizations_imported": n_locs_imported,
        "warnings": messages + stage.messages,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }
    return Results(stage.tracks, stage.summary, meta)


def _photometry(
    movie: Any, table: pd.DataFrame, acquisition: Acquisition, progress: Any
) -> tuple[pd.DataFrame, str, float]:
    """Fill ``photons``, ``background``, ``loc_precision_nm`` where the table lacks them.

    Returns the table, where the values came from (``"from the tracks"`` or ``"fitted at the
    given positions"``) and the median distance given -> fitted position (px; NaN when
    nothing was fitted).
    """
    have = all(c in table.columns and np.isfinite(table[c].to_numpy(dtype=float)).all() for c in _PHOTOMETRY)
    if have:
        return table, "from the tracks", float("nan")
    fitted = measure_at_positions(movie, table, acquisition, progress)
    out = table.copy()
    for column in _PHOTOMETRY:
        given = out[column].to_numpy(dtype=float) if column in out.columns else np.full(len(out), np.nan)
        out[column] = np.where(np.isfinite(given), given, fitted[column].to_numpy())
    shift = fitted["refit_shift_px"].to_numpy()
    median = float(np.nanmedian(shift)) if np.isfinite(shift).any() else float("nan")
    return out, "fitted at the given positions", median
