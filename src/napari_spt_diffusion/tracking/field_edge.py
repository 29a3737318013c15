"""How close each localization lies to the border of the field of view.

A spot cut by the field's border is localized pulled inwards, and a particle that leaves the
field and comes back is followed by fragments; a track that comes close to the border is less
certain than its length and noise say (measured end to end on our simulator's movies:
``benchmarks/reports/linked_intervals_calibration.md``). The pipeline gives a track with a
localization within :data:`EDGE_PX` of the border the note ``edge``, and the intervals of such
tracks their own widening (:mod:`~..estimation.linked_widening`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["EDGE_PX", "border_distance_px", "touches_edge"]

#: A track with a localization closer than this (px) to the outermost pixel centres gets the note ``edge``
#: (closer than 3.5 px to the image's edge).
EDGE_PX = 3.0


def border_distance_px(y_px: np.ndarray, x_px: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Distance (px) from each position to the nearest border of a ``(Y, X)`` field.

    Parameters
    ----------
    y_px, x_px
        ``(N,)`` positions in pixels (pixel centres at integers, the field spanning ``0 .. Y - 1``
        and ``0 .. X - 1``).
    shape_yx
        The field's size ``(Y, X)`` in pixels.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64: ``min(y, x, Y - 1 - y, X - 1 - x)``; NaN for a non-finite position.
    """
    y = np.asarray(y_px, dtype=float)
    x = np.asarray(x_px, dtype=float)
    if y.shape != x.shape or y.ndim != 1:
        raise ValueError("y_px and x_px must be 1-D arrays of the same length")
    height, width = (float(v) for v in shape_yx[:2])
    out = np.minimum.reduce([y, x, height - 1.0 - y, width - 1.0 - x])
    out[~(np.isfinite(y) & np.isfinite(x))] = np.nan
    return out


def touches_edge(border_px: np.ndarray, edge_px: float = EDGE_PX) -> bool:
    """Whether any of a track's localizations (``border_px`` ``(T,)``) lies closer than ``edge_px`` to the
    outermost pixel centres (NaN: not)."""
    d = np.asarray(border_px, dtype=float)
    return bool(np.any(d < edge_px))
