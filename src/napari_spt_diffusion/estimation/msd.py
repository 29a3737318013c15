"""Mean squared displacement curves: per track and over the ensemble, with their line fits.

The MSD at lag ``n`` frames is the mean of ``|r(t + n) - r(t)|^2`` (2-D, um^2) over all
pairs of localizations ``n`` frames apart: of one track (time average; the same numbers as
trackpy's ``imsd``) or of all tracks pooled (ensemble: every displacement of every track
counts once, i.e. the per-track curves weighted by their number of displacements; trackpy's
``emsd`` weights them by an effective number of independent displacements instead, which
gives close but not equal values). Tracks with gaps use only the pairs that exist.

Model of the line fits (2-D, per lag ``t = n dt``, Brownian motion observed with
localization noise of variance ``s^2`` per axis and motion blur of coefficient ``R``;
Berglund 2010)::

    MSD(t) = 4 D t + offset,      offset = 4 s^2 - 8 R D dt

so the offset is the localization error *minus* the blur of a camera that integrates over
the exposure (``R = 1/6`` for continuous exposure, 0 for flashes): a fast particle can give
a negative offset, and the offset alone is not ``4 s^2``. ``loc_sigma_nm`` undoes the blur
term with the acquisition's ``R`` and the fitted ``D`` (NaN when that leaves a negative
variance). For anomalous or confined motion the line is only the first-lags slope.

* per track: the fit of ``estimation.classical.msd_diffusion_batch`` (the number of lags that
  minimises the variance of the slope, Michalet 2010), so ``D_fit_um2_s`` equals the summary's
  ``D_msd_um2_s`` (clipped at 0 like it);
* ensemble: an ordinary least-squares line over lags ``1..ensemble_fit_lags`` (default 4: with
  many tracks the first lags hold nearly all the information, Michalet 2010).

:func:`msd_table` returns both in one long table (:data:`MSD_COLUMNS`), the table written as
``PREFIX_msd.csv``; :func:`results_msd_table` makes it from a :class:`~..results.Results`
(the napari results dock plots it). Nothing here draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..acquisition import Acquisition
from ..errors import SptDiffusionError
from ..results import Results
from .classical import msd_curve_batch, msd_diffusion_batch, regular_positions
from .drift import subtract_drift

__all__ = [
    "MSD_COLUMNS",
    "MsdError",
    "DEFAULT_MAX_LAG",
    "DEFAULT_ENSEMBLE_FIT_LAGS",
    "track_msd",
    "ensemble_msd",
    "msd_table",
    "results_msd_table",
]

#: Largest lag of the curves (frames), as trackpy's ``max_lagtime`` default.
DEFAULT_MAX_LAG = 100
#: Lags of the ensemble line fit.
DEFAULT_ENSEMBLE_FIT_LAGS = 4

#: Columns of the MSD table, units in the names. ``curve`` is ``track`` or ``ensemble``;
#: ``track_id`` is empty on ensemble rows; ``msd_fit_um2`` is the fitted line at the lag;
#: ``D_fit_um2_s``, ``offset_um2``, ``loc_sigma_nm`` and ``fit_lags`` repeat the curve's fit
#: on each of its rows.
MSD_COLUMNS: tuple[str, ...] = (
    "curve",
    "track_id",
    "lag_frames",
    "lag_s",
    "msd_um2",
    "n_displacements",
    "msd_fit_um2",
    "D_fit_um2_s",
    "offset_um2",
    "loc_sigma_nm",
    "fit_lags",
)


class MsdError(SptDiffusionError, ValueError):
    """Tracks or settings from which no MSD curve can be made."""


def _check(tracks: pd.DataFrame, acquisition: Acquisition, max_lag: int) -> None:
    missing = [c for c in ("track_id", "frame", "y_px", "x_px") if c not in tracks.columns]
    if missing:
        raise MsdError(f"the tracks table lacks column(s) {', '.join(missing)}")
    if not isinstance(acquisition, Acquisition):
        raise MsdError("acquisition must be an Acquisition")
    if isinstance(max_lag, bool) or int(max_lag) != max_lag or max_lag < 1:
        raise MsdError(f"max_lag must be a whole number >= 1, got {max_lag!r}")


def _grouped_curves(
    tracks: pd.DataFrame, max_lag: int, drift_px: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per group of tracks of one frame span: ``(ids, grids (N, L, 2), msd_sum (N, lags) px^2, counts)``."""
    table = tracks.sort_values(["track_id", "frame"], kind="stable")
    ids = table["track_id"].to_numpy()
    frames = table["frame"].to_numpy().astype(np.int64)
    pos = table[["y_px", "x_px"]].to_numpy(dtype=float)
    if drift_px is not None:
        pos = subtract_drift(pos, frames, drift_px)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(ids)].astype(np.int64)
    groups: dict[int, list[tuple[Any, np.ndarray]]] = {}
    for a, b in zip(starts, ends):
        grid = regular_positions(pos[a:b], frames[a:b])
        groups.setdefault(len(grid), []).append((ids[a], grid))
    out = []
    for length, members in sorted(groups.items()):
        if length < 2:
            continue
        stack = np.stack([g for _, g in members])
        msd, counts = msd_curve_batch(stack, min(max_lag, length - 1))
        out.append((np.array([i for i, _ in members]), stack, msd[..., 0, 0] + msd[..., 1, 1], counts))
    return out


def _loc_sigma_nm(offset_um2: np.ndarray, d_um2_s: np.ndarray, acquisition: Acquisition) -> np.ndarray:
    """Localization error per axis from the offset ``4 s^2 - 8 R D dt`` (nm; NaN where negative)."""
    s2 = (np.asarray(offset_um2, float) + 8.0 * acquisition.blur_coefficient * np.asarray(d_um2_s, float)
          * acquisition.frame_interval_s) / 4.0
    with np.errstate(invalid="ignore"):
        return np.where(s2 >= 0, 1000.0 * np.sqrt(np.abs(s2)), np.nan)


def track_msd(
    tracks: pd.DataFrame,
    acquisition: Acquisition,
    *,
    max_lag: int = DEFAULT_MAX_LAG,
    drift_px: np.ndarray | None = None,
) -> pd.DataFrame:
    """Time-averaged MSD curve of every track, with its line fit.

    Parameters
    ----------
    tracks
        Localizations with columns ``track_id``, ``frame``, ``y_px``, ``x_px`` (pixels), e.g.
        ``Results.tracks``.
    acquisition
        Pixel size, frame interval and blur coefficient.
    max_lag
        Largest lag in frames (at most the track's span minus one).
    drift_px
        Optional ``(T, 2)`` drift per frame (px) subtracted first
        (:func:`~.drift.ensemble_drift_px`).

    Returns
    -------
    pandas.DataFrame
        :data:`MSD_COLUMNS`, ``curve = "track"``, one row per track and lag with at least one
        displacement, sorted by ``(track_id, lag_frames)``.
    """
    _check(tracks, acquisition, max_lag)
    parts = []
    px2 = acquisition.pixel_size_um**2
    dt = acquisition.frame_interval_s
    for ids, stack, msd_sum, counts in _grouped_curves(tracks, int(max_lag), drift_px):
        n, lags = msd_sum.shape
        if stack.shape[1] >= 3:
            with np.errstate(all="ignore"):
                fit = msd_diffusion_batch(stack, acquisition)
            d, offset, p = fit["D_um2_s"], fit["offset_um2"], fit["n_points"]
        else:
            d = offset = np.full(n, np.nan)
            p = np.zeros(n, dtype=np.int64)
        lag = np.broadcast_to(np.arange(1, lags + 1), (n, lags))
        keep = counts > 0
        rows = np.nonzero(keep)
        parts.append(pd.DataFrame({
            "curve": "track",
            "track_id": ids[rows[0]],
            "lag_frames": lag[keep],
            "lag_s": lag[keep] * dt,
            "msd_um2": msd_sum[keep] * px2,
            "n_displacements": counts[keep],
            "msd_fit_um2": offset[rows[0]] + 4.0 * d[rows[0]] * lag[keep] * dt,
            "D_fit_um2_s": d[rows[0]],
            "offset_um2": offset[rows[0]],
            "loc_sigma_nm": _loc_sigma_nm(offset, d, acquisition)[rows[0]],
            "fit_lags": p[rows[0]],
        }))
    if not parts:
        return _empty()
    out = pd.concat(parts, ignore_index=True).sort_values(["track_id", "lag_frames"], kind="stable")
    out["track_id"] = out["track_id"].astype("Int64")
    return out.reset_index(drop=True)[list(MSD_COLUMNS)]


def ensemble_msd(
    tracks: pd.DataFrame,
    acquisition: Acquisition,
    *,
    max_lag: int = DEFAULT_MAX_LAG,
    drift_px: np.ndarray | None = None,
    fit_lags: int = DEFAULT_ENSEMBLE_FIT_LAGS,
) -> pd.DataFrame:
    """Ensemble MSD: the displacements of all tracks pooled per lag, with a line fit.

    Same parameters as :func:`track_msd`; ``fit_lags`` is the number of first lags of the
    least-squares line ``MSD = 4 D t + offset``. Returns :data:`MSD_COLUMNS` with
    ``curve = "ensemble"`` and an empty ``track_id``, one row per lag with a displacement.
    """
    _check(tracks, acquisition, max_lag)
    if isinstance(fit_lags, bool) or int(fit_lags) != fit_lags or fit_lags < 2:
        raise MsdError(f"fit_lags must be a whole number >= 2, got {fit_lags!r}")
    sums = np.zeros(int(max_lag))
    counts = np.zeros(int(max_lag), dtype=np.int64)
    for _, _, msd_sum, c in _grouped_curves(tracks, int(max_lag), drift_px):
        lags = msd_sum.shape[1]
        sums[:lags] += np.nansum(np.where(c > 0, msd_sum, 0.0) * c, axis=0)
        counts[:lags] += c.sum(axis=0)
    keep = counts > 0
    if not keep.any():
        return _empty()
    dt = acquisition.frame_interval_s
    lag = np.arange(1, int(max_lag) + 1)[keep]
    msd_um2 = sums[keep] / counts[keep] * acquisition.pixel_size_um**2
    n_fit = int(min(int(fit_lags), lag.size))
    if n_fit >= 2:
        slope, offset = np.polyfit(lag[:n_fit] * dt, msd_um2[:n_fit], 1)
        d = float(slope) / 4.0
    else:
        d = offset = float("nan")
        n_fit = 0
    out = pd.DataFrame({
        "curve": "ensemble",
        "track_id": pd.array([pd.NA] * lag.size, dtype="Int64"),
        "lag_frames": lag,
        "lag_s": lag * dt,
        "msd_um2": msd_um2,
        "n_displacements": counts[keep],
        "msd_fit_um2": offset + 4.0 * d * lag * dt,
        "D_fit_um2_s": d,
        "offset_um2": offset,
        "loc_sigma_nm": float(_loc_sigma_nm(np.array([offset]), np.array([d]), acquisition)[0]),
        "fit_lags": n_fit,
    })
    return out[list(MSD_COLUMNS)]


def msd_table(
    tracks: pd.DataFrame,
    acquisition: Acquisition,
    *,
    max_lag: int = DEFAULT_MAX_LAG,
    drift_px: np.ndarray | None = None,
    ensemble_fit_lags: int = DEFAULT_ENSEMBLE_FIT_LAGS,
) -> pd.DataFrame:
    """The ensemble curve then every track's curve, in one table (:data:`MSD_COLUMNS`)."""
    ens = ensemble_msd(tracks, acquisition, max_lag=max_lag, drift_px=drift_px, fit_lags=ensemble_fit_lags)
    per_track = track_msd(tracks, acquisition, max_lag=max_lag, drift_px=drift_px)
    parts = [p for p in (ens, per_track) if len(p)]
    if not parts:
        return _empty()
    out = pd.concat(parts, ignore_index=True)
    out["track_id"] = out["track_id"].astype("Int64")
    return out


def results_msd_table(results: Results, *, max_lag: int = DEFAULT_MAX_LAG) -> pd.DataFrame:
    """:func:`msd_table` of a result set, with its acquisition and its drift correction (if any).

    The drift recorded in ``results.meta["drift_correction"]["drift_px"]`` is subtracted,
    so the curves describe the positions the estimates were made from.

    Raises
    ------
    MsdError
        When the results carry no acquisition.
    """
    acquisition = results.acquisition
    if acquisition is None:
        raise MsdError("the results carry no acquisition (meta['acquisition']): pixel size and frame interval unknown")
    record = (results.meta or {}).get("drift_correction") or {}
    drift = record.get("drift_px") if isinstance(record, dict) and record.get("enabled") else None
    drift_px = None if drift is None else np.asarray(drift, dtype=float).reshape(-1, 2)
    return msd_table(results.tracks, acquisition, max_lag=max_lag, drift_px=drift_px)


def _empty() -> pd.DataFrame:
    dtypes = {"curve": object, "track_id": "Int64", "lag_frames": np.int64, "n_displacements": np.int64,
              "fit_lags": np.int64}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, float)) for c in MSD_COLUMNS})
