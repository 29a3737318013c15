"""Shared helpers for 2-D diffusion tensors.

Conventions (``docs/results_contract.md``): tensors are written in ``(y, x)`` order, i.e. a
``(..., 2, 2)`` array ``[[D_yy, D_yx], [D_xy, D_xx]]``; ``theta_deg`` is the angle of
the D1 (largest eigenvalue) axis measured from +x towards +y, in ``[0, 180)``; the D1
unit vector in ``(y, x)`` order is ``(sin theta, cos theta)``.

For a symmetric tensor the eigen-decomposition has the closed form

``D1,2 = (D_xx + D_yy)/2 +- sqrt(((D_xx - D_yy)/2)^2 + D_xy^2)``,
``theta = atan2(2 D_xy, D_xx - D_yy) / 2``,

which is used here, vectorised over any leading shape, instead of ``numpy.linalg.eigh``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "tensor_from_eigen",
    "eigen_from_tensor",
    "wrap_angle_deg",
    "theta_from_sin_cos_2theta",
    "sin_cos_2theta",
    "mean_tensor",
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
    D1, D2, theta = np.broadcast_arrays(
        np.asarray(D1, float), np.asarray(D2, float), np.deg2rad(np.asarray(theta_deg, float))
    )
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


def mean_tensor(D1_um2_s: Any, D2_um2_s: Any, theta_deg: Any, weights: Any = None) -> tuple[float, float, float]:
    """Time-averaged tensor of per-frame estimates.

    The per-frame tensors ``D1 u1 u1^T + D2 u2 u2^T`` are averaged and eigen-decomposed
    (the same definition as the simulator's truth tables for multi-segment tracks). Its
    angle is the doubled-angle mean of the frames' angles weighted by ``D1 - D2``
    (so 179 and 1 degrees average to 0, and an isotropic frame, whose angle means
    nothing, does not pull it); its eigenvalues are ``mean((D1 + D2) / 2)`` plus/minus
    the length of that weighted mean. Non-finite frames are ignored.

    Parameters
    ----------
    D1_um2_s, D2_um2_s
        ``(T,)`` per-frame eigenvalues (um^2/s, or any one unit).
    theta_deg
        ``(T,)`` per-frame D1 angles (degrees).
    weights
        ``(T,)`` non-negative weights of the average (``None``: equal).

    Returns
    -------
    (float, float, float)
        ``D1_um2_s, D2_um2_s, theta_deg`` with theta in ``[0, 180)`` (0 for an isotropic
        mean); NaN if no frame is finite.
    """
    d1 = np.asarray(D1_um2_s, dtype=float).reshape(-1)
    d2 = np.asarray(D2_um2_s, dtype=float).reshape(-1)
    th = np.deg2rad(np.asarray(theta_deg, dtype=float).reshape(-1))
    wt = np.ones_like(d1) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    ok = np.isfinite(d1) & np.isfinite(d2) & np.isfinite(th) & np.isfinite(wt) & (wt > 0)
    if not np.any(ok):
        return float("nan"), float("nan"), float("nan")
    d1, d2, th, wt = d1[ok], d2[ok], th[ok], wt[ok]
    half_diff = 0.5 * (d1 - d2)
    c = float(np.average(half_diff * np.cos(2 * th), weights=wt))
    s = float(np.average(half_diff * np.sin(2 * th), weights=wt))
    centre = float(np.average(0.5 * (d1 + d2), weights=wt))
    radius = math.hypot(c, s)
    theta = float(np.rad2deg(0.5 * math.atan2(s, c)) % 180.0) if radius > 1e-12 * max(abs(centre), 1e-300) else 0.0
    if theta >= 180.0:
        theta = 0.0
    return centre + radius, centre - radius, theta
