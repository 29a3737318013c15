"""Spot photometry at positions found elsewhere (tracks imported from TrackMate, trackpy, ...).

Tracks made by another tracker carry positions but rarely the photons, background and
localization precision that the guard and the changepoint test use. :func:`measure_at_positions`
fits every listed spot with the same Poisson maximum-likelihood fit as the pipeline's own
localizations (:func:`~.localize.localize_arrays`, window centred on the pixel nearest the
given position, neighbours in the same frame modelled) and returns the fitted photons,
background and Mortensen precision, plus the distance between the fitted and the given
position. The given positions themselves are kept by the caller: a large median distance
says the positions do not match the movie (another pixel size, origin or movie).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..acquisition import Acquisition
from .localize import localize_arrays

__all__ = ["PHOTOMETRY_COLUMNS", "measure_at_positions"]

#: Columns returned by :func:`measure_at_positions`.
PHOTOMETRY_COLUMNS: tuple[str, ...] = ("photons", "background", "loc_precision_nm", "refit_shift_px")


def measure_at_positions(
    movie: Any,
    tracks: pd.DataFrame,
    acquisition: Acquisition,
    progress: Any = None,
) -> pd.DataFrame:
    """Fit the spot at each localization of ``tracks`` in its frame of ``movie``.

    Parameters
    ----------
    movie
        ``(T, Y, X)`` camera movie in ADU (``movie[t]`` one frame; only the frames used are read).
    tracks
        Columns ``frame``, ``y_px``, ``x_px`` (pixels, inside the frame).
    acquisition
        Camera conversion, PSF width, read noise, pixel size.
    progress
        Optional ``progress(fraction, message)``.

    Returns
    -------
    pandas.DataFrame
        Index of ``tracks``; :data:`PHOTOMETRY_COLUMNS`: ``photons`` (photo-electrons per
        frame), ``background`` (photo-electrons per pixel per frame), ``loc_precision_nm``
        (nm, Mortensen et al. 2010 for the fitted spot), ``refit_shift_px`` (px, distance
        from the given position to the fitted one).
    """
    frames = tracks["frame"].to_numpy().astype(np.int64)
    pos = tracks[["y_px", "x_px"]].to_numpy(dtype=float)
    out = np.full((len(tracks), len(PHOTOMETRY_COLUMNS)), np.nan)
    unique = np.unique(frames)
    for k, frame in enumerate(unique):
        rows = np.flatnonzero(frames == frame)
        image = acquisition.adu_to_photons(np.asarray(movie[int(frame)], dtype=float))
        peaks = np.floor(pos[rows] + 0.5).astype(np.int64)
        peaks[:, 0] = np.clip(peaks[:, 0], 0, image.shape[0] - 1)
        peaks[:, 1] = np.clip(peaks[:, 1], 0, image.shape[1] - 1)
        fit = localize_arrays(image, peaks, acquisition)
        shift = np.hypot(fit["y_px"] - pos[rows, 0], fit["x_px"] - pos[rows, 1])
        out[rows] = np.column_stack([fit["photons"], fit["background"], fit["loc_precision_nm"], shift])
        if progress is not None:
            progress((k + 1) / len(unique), f"fitting spots at the given positions, frame {k + 1} of {len(unique)}")
    return pd.DataFrame(out, columns=list(PHOTOMETRY_COLUMNS), index=tracks.index)
