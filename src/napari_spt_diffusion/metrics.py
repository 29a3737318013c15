"""Evaluation metrics shared by the benchmarks, the training loop and the tests.

Everything here compares estimates with a ground truth and returns plain numbers; it
needs numpy only (scipy's assignment solver for :func:`match_changepoints`, imported
when called) and nothing of the tracking or the models.

* Diffusion coefficients: :func:`mean_absolute_error` (same unit as the inputs,
  um^2/s for D).
* Angles of the D1 axis: :func:`angle_similarity_published`, the published definition
  ``mean cos(theta_pred - theta_true)`` with both angles in ``[0, 180)`` degrees, and
  :func:`angle_similarity_axial`, ``mean |cos(theta_pred - theta_true)|`` (which does not
  penalise two almost identical axes on either side of 0/180 degrees); per-track term
  :func:`angle_cos`.
* Changepoints: :func:`match_changepoints` (one-to-one matching within a tolerance in
  frames) and :func:`changepoint_scores` (precision, recall, F1, position error).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import SptDiffusionError
from .estimation.tensor import wrap_angle_deg

__all__ = [
    "MetricInputError",
    "mean_absolute_error",
    "angle_cos",
    "angle_similarity_published",
    "angle_similarity_axial",
    "match_changepoints",
    "changepoint_scores",
]


class MetricInputError(SptDiffusionError, ValueError):
    """Raised for estimates and truths that cannot be compared (e.g. different track counts)."""


# ---------------------------------------------------------------- values
def mean_absolute_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error ignoring NaN predictions.

    Parameters
    ----------
    pred, true
        Broadcastable arrays (e.g. ``(N,)`` D in um^2/s).

    Returns
    -------
    float
        ``nanmean(|pred - true|)`` in the unit of the inputs; NaN if no pair is finite.
    """
    err = np.abs(np.asarray(pred, float) - np.asarray(true, float))
    return float(np.nanmean(err)) if np.any(np.isfinite(err)) else float("nan")


# ---------------------------------------------------------------- angles
def angle_cos(theta_pred_deg: np.ndarray | float, theta_true_deg: np.ndarray | float) -> np.ndarray:
    """``cos(theta_pred - theta_true)`` with both angles first wrapped to ``[0, 180)``.

    This is the per-track term of the published angle similarity: it is -1 for two almost
    identical axes on either side of 0/180 degrees (e.g. 179 and 1), which the axial
    version ``|cos|`` does not penalise.

    Parameters
    ----------
    theta_pred_deg, theta_true_deg
        Broadcastable angles of the D1 axis (degrees, any range).

    Returns
    -------
    numpy.ndarray
        Cosines in ``[-1, 1]``, the broadcast shape; NaN where an angle is NaN.
    """
    a = np.deg2rad(wrap_angle_deg(theta_pred_deg))
    b = np.deg2rad(wrap_angle_deg(theta_true_deg))
    return np.cos(a - b)


def angle_similarity_published(theta_pred_deg: np.ndarray, theta_true_deg: np.ndarray) -> float:
    """Published angle similarity: mean of ``cos(theta_pred - theta_true)``, both in [0, 180).

    NaN predictions are ignored (the caller reports how many there were).

    Parameters
    ----------
    theta_pred_deg, theta_true_deg
        ``(N,)`` angles of the D1 axis (degrees).

    Returns
    -------
    float
        In ``[-1, 1]`` (1 = perfect); NaN if no angle is finite.
    """
    values = angle_cos(theta_pred_deg, theta_true_deg)
    return float(np.nanmean(values)) if np.any(np.isfinite(values)) else float("nan")


def angle_similarity_axial(theta_pred_deg: np.ndarray, theta_true_deg: np.ndarray) -> float:
    """Axial angle similarity: mean of ``|cos(theta_pred - theta_true)|``.

    Parameters
    ----------
    theta_pred_deg, theta_true_deg
        ``(N,)`` angles of the D1 axis (degrees).

    Returns
    -------
    float
        In ``[0, 1]`` (1 = perfect, ``2/pi`` = random); NaN if no angle is finite.
    """
    values = np.abs(angle_cos(theta_pred_deg, theta_true_deg))
    return float(np.nanmean(values)) if np.any(np.isfinite(values)) else float("nan")


# ----------------------------------------------------------- changepoints
def match_changepoints(true_frames: Any, detected_frames: Any, tolerance: int = 2) -> list[tuple[int, int]]:
    """One-to-one matching of detected to true changepoints within ``tolerance`` frames.

    Pairs are chosen by a minimum-cost assignment on the absolute frame distance, among
    pairs at most ``tolerance`` apart.

    Parameters
    ----------
    true_frames, detected_frames
        ``(m,)`` and ``(n,)`` changepoint frames (or row indices) of one track.
    tolerance
        Largest distance of a matched pair (frames).

    Returns
    -------
    list of (int, int)
        ``(true_frame, detected_frame)`` pairs.
    """
    from scipy.optimize import linear_sum_assignment

    t = np.asarray(true_frames, dtype=np.int64).reshape(-1)
    d = np.asarray(detected_frames, dtype=np.int64).reshape(-1)
    if t.size == 0 or d.size == 0:
        return []
    dist = np.abs(t[:, None] - d[None, :]).astype(float)
    big = 1e6
    cost = np.where(dist <= tolerance, dist, big)
    rows, cols = linear_sum_assignment(cost)
    return [(int(t[r]), int(d[c])) for r, c in zip(rows, cols) if cost[r, c] < big]


def changepoint_scores(
    true_per_track: list[Any], detected_per_track: list[Any], tolerance: int = 2
) -> dict[str, float]:
    """Precision, recall, F1 and mean position error of detected changepoints.

    Parameters
    ----------
    true_per_track, detected_per_track
        One sequence of changepoint frames per track (same order).
    tolerance
        A detection within this many frames of a true changepoint is a hit (frames).

    Returns
    -------
    dict
        ``n_true, n_detected, n_matched, precision, recall, f1`` and
        ``mean_position_error_frames`` (mean |true - detected| of matched pairs; NaN if none).
    """
    if len(true_per_track) != len(detected_per_track):
        raise MetricInputError("true and detected changepoints must be given for the same tracks")
    n_true = n_det = 0
    errors: list[int] = []
    for t, d in zip(true_per_track, detected_per_track):
        t = np.asarray(t).reshape(-1)
        d = np.asarray(d).reshape(-1)
        n_true += t.size
        n_det += d.size
        errors.extend(abs(a - b) for a, b in match_changepoints(t, d, tolerance))
    m = len(errors)
    precision = m / n_det if n_det else float("nan")
    recall = m / n_true if n_true else float("nan")
    f1 = 2 * m / (n_true + n_det) if (n_true + n_det) else float("nan")
    return {
        "n_true": float(n_true),
        "n_detected": float(n_det),
        "n_matched": float(m),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_position_error_frames": float(np.mean(errors)) if errors else float("nan"),
    }
