"""Shared helpers for 2-D diffusion tensors and the accuracy metrics of the benchmarks.

Conventions (docs/API_CONTRACT.md): tensors are written in ``(y, x)`` order, i.e. a
``(..., 2, 2)`` array ``[[D_yy, D_yx], [D_xy, D_xx]]``; ``theta_deg`` is the angle of
the D1 (largest eigenvalue) axis measured from +x towards +y, in ``[0, 180)``; the D1
unit vector in ``(y, x)`` order is ``(sin theta, cos theta)``.

For a symmetric tensor the eigen-decomposition has the closed form

``D1,2 = (D_xx + D_yy)/2 +- sqrt(((D_xx - D_yy)/2)^2 + D_xy^2)``,
``theta = atan2(2 D_xy, D_xx - D_yy) / 2``,

which is used here, vectorised over any leading shape, instead of ``numpy.linalg.eigh``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "tensor_from_eigen",
    "eigen_from_tensor",
    "wrap_angle_deg",
    "theta_from_sin_cos_2theta",
    "sin_cos_2theta",
    "angle_cos",
    "angle_similarity_published",
    "angle_similarity_axial",
    "mean_absolute_error",
]


def wrap_angle_deg(theta_deg: np.ndarray | float) -> np.ndarray:
    """Map angles (degrees) of an axis to ``[0, 180)``; NaN stays NaN."""
    wrapped = np.mod(np.asarray(theta_deg, dtype=float), 180.0)
    # np.mod can return exactly 180.0 for tiny negative inputs through rounding.
    return np.where(wrapped >= 180.0, 0.0, wrapped)


def tensor_from_eigen(D1: np.ndarray | float, D2: np.ndarray | float, theta_deg: np.ndarray | float) -> np.ndarray:
    """Build symmetric tensors from eigenvalues and the D1 angle.

    Parameters
    ----------
    D1, D2
        Eigenvalues (any unit, e.g. um^2/s or px^2/frame), broadcastable shapes.
    theta_deg
        Angle of the D1 axis from +x towards +y (degrees).

    Returns
    -------
    numpy.ndarray
        ``(..., 2, 2)`` tensors in ``(y, x)`` order, same unit as ``D1``.
    """
    D1, D2, theta = np.broadcast_arrays(np.asarray(D1, float), np.asarray(D2, float), np.deg2rad(np.asarray(theta_deg, float)))
    c, s = np.cos(theta), np.sin(theta)
    out = np.empty(D1.shape + (2, 2))
    out[..., 1, 1] = D1 * c * c + D2 * s * s  # xx
    out[..., 0, 0] = D1 * s * s + D2 * c * c  # yy
    out[..., 0, 1] = out[..., 1, 0] = (D1 - D2) * s * c  # yx
    return out


def eigen_from_tensor(tensor_yx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues ``D1 >= D2`` and D1 angle of symmetric ``(..., 2, 2)`` tensors.

    Parameters
    ----------
    tensor_yx
        ``(..., 2, 2)`` tensors in ``(y, x)`` order (only the symmetric part is used).

    Returns
    -------
    D1, D2, theta_deg
        Arrays of shape ``(...)``: eigenvalues in the tensor's unit (``D1 >= D2``, either can
        be negative for a non-positive-definite input) and the angle of the D1 axis in
        ``[0, 180)`` degrees (0 for an isotropic tensor).
    """
    t = np.asarray(tensor_yx, dtype=float)
    if t.shape[-2:] != (2, 2):
        raise ValueError(f"tensors must have shape (..., 2, 2), got {t.shape}")
    d_yy = t[..., 0, 0]
    d_xx = t[..., 1, 1]
    d_xy = 0.5 * (t[..., 0, 1] + t[..., 1, 0])
    mean = 0.5 * (d_xx + d_yy)
    half_diff = 0.5 * (d_xx - d_yy)
    radius = np.hypot(half_diff, d_xy)
    theta = wrap_angle_deg(np.rad2deg(0.5 * np.arctan2(2.0 * d_xy, d_xx - d_yy)))
    return mean + radius, mean - radius, theta


def sin_cos_2theta(theta_deg: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """The continuous angle representation ``(sin 2 theta, cos 2 theta)`` used by the models."""
    rad = 2.0 * np.deg2rad(np.asarray(theta_deg, dtype=float))
    return np.sin(rad), np.cos(rad)


def theta_from_sin_cos_2theta(sin2: np.ndarray | float, cos2: np.ndarray | float) -> np.ndarray:
    """Angle in ``[0, 180)`` degrees from (not necessarily normalised) ``sin 2theta, cos 2theta``."""
    return wrap_angle_deg(np.rad2deg(0.5 * np.arctan2(np.asarray(sin2, float), np.asarray(cos2, float))))


def angle_cos(theta_pred_deg: np.ndarray | float, theta_true_deg: np.ndarray | float) -> np.ndarray:
    """``cos(theta_pred - theta_true)`` with both angles first wrapped to ``[0, 180)``.

    This is the per-track term of the published angle similarity: it is -1 for two almost
    identical axes on either side of 0/180 degrees (e.g. 179 and 1), which the axial
    version ``|cos|`` does not penalise.
    """
    a = np.deg2rad(wrap_angle_deg(theta_pred_deg))
    b = np.deg2rad(wrap_angle_deg(theta_true_deg))
    return np.cos(a - b)


def angle_similarity_published(theta_pred_deg: np.ndarray, theta_true_deg: np.ndarray) -> float:
    """Published angle similarity: mean of ``cos(theta_pred - theta_true)``, both in [0, 180).

    NaN predictions are ignored (the caller reports how many there were).
    """
    values = angle_cos(theta_pred_deg, theta_true_deg)
    return float(np.nanmean(values)) if np.any(np.isfinite(values)) else float("nan")


def angle_similarity_axial(theta_pred_deg: np.ndarray, theta_true_deg: np.ndarray) -> float:
    """Axial angle similarity: mean of ``|cos(theta_pred - theta_true)|`` (1 = perfect, 2/pi = random)."""
    values = np.abs(angle_cos(theta_pred_deg, theta_true_deg))
    return float(np.nanmean(values)) if np.any(np.isfinite(values)) else float("nan")


def mean_absolute_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error ignoring NaN predictions (same unit as the inputs)."""
    err = np.abs(np.asarray(pred, float) - np.asarray(true, float))
    return float(np.nanmean(err)) if np.any(np.isfinite(err)) else float("nan")
