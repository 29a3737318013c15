"""Per-segment tables of a track split at its changepoints.

A changepoint ``c`` (a row index along the track) means that rows ``< c`` belong to one
state and rows ``>= c`` to the next (:mod:`~napari_spt_diffusion.estimation.changepoints`).
Each segment is summarised by its time-averaged tensor
(:func:`~napari_spt_diffusion.estimation.tensor.mean_tensor`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .changepoints import ChangepointError, state_labels
from .tensor import mean_tensor

__all__ = ["segments"]


def segments(
    changepoints: Any,
    D1_um2_s: Any,
    D2_um2_s: Any,
    theta_deg: Any,
    frames: Any | None = None,
) -> pd.DataFrame:
    """Per-segment state index and mean tensor.

    Parameters
    ----------
    changepoints
        Indices along the sequence (as returned by
        :func:`~napari_spt_diffusion.estimation.changepoints.multiple_changepoints`).
    D1_um2_s, D2_um2_s, theta_deg
        ``(T,)`` per-frame estimates (um^2/s, degrees).
    frames
        Optional ``(T,)`` frame numbers of the samples; default ``0..T-1``.

    Returns
    -------
    pandas.DataFrame
        One row per segment: ``state, start_frame, end_frame`` (inclusive),
        ``n_frames, D1_um2_s, D2_um2_s, theta_deg`` (the segment's time-averaged
        tensor, :func:`mean_tensor`).
    """
    d1 = np.asarray(D1_um2_s, dtype=float).reshape(-1)
    d2 = np.asarray(D2_um2_s, dtype=float).reshape(-1)
    th = np.asarray(theta_deg, dtype=float).reshape(-1)
    n = d1.size
    if d2.size != n or th.size != n:
        raise ChangepointError("D1, D2 and theta sequences must have the same length")
    fr = np.arange(n) if frames is None else np.asarray(frames).reshape(-1)
    if fr.size != n:
        raise ChangepointError("frames must have one entry per sample")
    state_labels(n, changepoints)  # validates the changepoints
    bounds = [0, *np.asarray(changepoints, dtype=np.int64).reshape(-1).tolist(), n]
    rows = []
    for state, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        m1, m2, mt = mean_tensor(d1[a:b], d2[a:b], th[a:b])
        rows.append(
            {
                "state": state,
                "start_frame": int(fr[a]),
                "end_frame": int(fr[b - 1]),
                "n_frames": int(b - a),
                "D1_um2_s": m1,
                "D2_um2_s": m2,
                "theta_deg": mt,
            }
        )
    columns = ["state", "start_frame", "end_frame", "n_frames", "D1_um2_s", "D2_um2_s", "theta_deg"]
    return pd.DataFrame(rows, columns=columns)
