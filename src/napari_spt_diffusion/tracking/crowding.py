"""How crowded each localization is: the distance to the nearest other spot of its frame.

A second particle inside a track's 11 x 11 patch changes what the models and the
blur-moment estimator see (``benchmarks/reports/crowding.md``); the pipeline flags tracks
that spend more than :data:`CROWDED_SHARE` of their frames with another localization
closer than :data:`CROWDED_RADIUS_PX`, so that users can tell those estimates apart.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["CROWDED_RADIUS_PX", "CROWDED_SHARE", "nearest_other_px", "crowded_share"]

#: Another spot closer than this (px) is inside or at the edge of an 11 x 11 patch (half-width 5 px).
CROWDED_RADIUS_PX = 6.0
#: A track is flagged ``crowded`` when more than this share of its frames have such a neighbour.
CROWDED_SHARE = 0.05


def nearest_other_px(frame: np.ndarray, y_px: np.ndarray, x_px: np.ndarray) -> np.ndarray:
    """Distance (px) from every localization to the nearest other one of the same frame.

    Parameters
    ----------
    frame
        ``(N,)`` integer frame index of each localization.
    y_px, x_px
        ``(N,)`` positions (px); non-finite positions neither get nor give a distance.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 distances; ``inf`` for a localization alone in its frame.
    """
    frame = np.asarray(frame)
    yx = np.column_stack([np.asarray(y_px, dtype=float), np.asarray(x_px, dtype=float)])
    if frame.shape != (len(yx),):
        raise ValueError("frame, y_px and x_px must be 1-D arrays of the same length")
    out = np.full(len(yx), np.inf)
    ok = np.all(np.isfinite(yx), axis=1)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return out
    order = idx[np.argsort(frame[idx], kind="stable")]
    f = frame[order]
    bounds = np.flatnonzero(np.r_[True, f[1:] != f[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a < 2:
            continue
        rows = order[a:b]
        out[rows] = cKDTree(yx[rows]).query(yx[rows], k=2)[0][:, 1]
    return out


def crowded_share(nearest_px: np.ndarray, radius_px: float = CROWDED_RADIUS_PX) -> float:
    """Share of a track's frames (``nearest_px`` ``(T,)``) with another spot closer than ``radius_px``."""
    d = np.asarray(nearest_px, dtype=float)
    return float(np.mean(d < radius_px)) if len(d) else 0.0
