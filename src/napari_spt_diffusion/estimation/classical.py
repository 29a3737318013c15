"""Classical per-track diffusion estimators from positions: MSD and CVE.

These are the baselines of the learned models. All estimators work internally in pixels
and frames and return um^2/s through
:class:`~napari_spt_diffusion.acquisition.Acquisition`. Each has a single-track form
(positions ``(T, 2)``, optional ``frames`` for tracks with gaps) and a ``*_batch`` form
over ``N`` tracks of equal length (``(N, T, 2)``; NaN rows mark missing frames) that is
vectorised for benchmarks of thousands of tracks.

Models of the observed positions (per axis, blur coefficient ``R``, localization
variance ``s^2``, frame interval ``dt``; Berglund 2010, Vestergaard et al. 2014)::

    <dx_k^2>          = 2 D dt (1 - 2R) + 2 s^2
    <dx_k dx_(k+1)>   = 2 R D dt - s^2
    MSD_1D(n)         = 2 D n dt + 2 s^2 - 4 R D dt

* :func:`msd_diffusion` -- linear fit of the 2-D MSD over the first ``p`` lags with ``p``
  the number of points that minimises the variance of the fitted slope (Michalet 2010;
  Michalet & Berglund 2012), found iteratively from the reduced localization error
  ``x = s^2 / (D dt)``; the variance is computed exactly from the covariance of the MSD
  points of a blurred, noisy Brownian track (it agrees with Michalet's approximation
  ``p ~ 2 + 2.3 x^0.52`` for long tracks). ``alpha`` from the log-log fit.
* :func:`cve_tensor` -- covariance-based estimator (Vestergaard et al. 2014) in tensor form.

The estimators that also use the spot images, the blur-moment tensor and its combination
with the CVE, are in :mod:`~napari_spt_diffusion.estimation.blur_moments`; they share this
module's input checks (:class:`ClassicalInputError`), result type
(:class:`TensorEstimate`) and :func:`regular_positions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..acquisition import Acquisition
from ..errors import SptDiffusionError
from .tensor import eigen_from_tensor

__all__ = [
    "ClassicalInputError",
    "TensorEstimate",
    "regular_positions",
    "msd_curve_batch",
    "optimal_msd_points",
    "msd_diffusion",
    "msd_diffusion_batch",
    "msd_tensor_batch",
    "cve_tensor",
    "cve_tensor_batch",
    "cve_variance_px2",
]


class ClassicalInputError(SptDiffusionError, ValueError):
    """Raised for track data the classical estimators cannot use."""


@dataclass
class TensorEstimate:
    """A track's diffusion tensor.

    Attributes
    ----------
    D1_um2_s, D2_um2_s
        Eigenvalues (um^2/s), ``D1 >= D2 >= 0``.
    theta_deg
        Angle of the D1 axis from +x towards +y, in ``[0, 180)`` degrees.
    loc_variance_um2
        Estimated localization variance per axis (um^2), NaN where not estimated.
    clipped
        True when the raw estimate was not positive-definite and eigenvalues were
        clipped at 0 (or the estimate could not be formed).
    """

    D1_um2_s: float
    D2_um2_s: float
    theta_deg: float
    loc_variance_um2: float = float("nan")
    clipped: bool = False


# ---------------------------------------------------------------------------- input


def regular_positions(positions_px: np.ndarray, frames: np.ndarray | None = None) -> np.ndarray:
    """Place a track's positions on a regular frame grid, NaN where frames are missing.

    Parameters
    ----------
    positions_px
        ``(T, 2)`` ``(y, x)`` positions in pixels.
    frames
        ``(T,)`` increasing frame numbers; ``None`` means consecutive.

    Returns
    -------
    numpy.ndarray
        ``(frames[-1] - frames[0] + 1, 2)`` float64 positions with NaN rows in gaps.
    """
    positions = np.asarray(positions_px, dtype=float)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ClassicalInputError(f"positions must have shape (T, 2), got {positions.shape}")
    if frames is None:
        return positions.copy()
    frames = np.asarray(frames).astype(np.int64)
    if frames.shape != (len(positions),):
        raise ClassicalInputError("frames must hold one frame number per position")
    if len(frames) and np.any(np.diff(frames) <= 0):
        raise ClassicalInputError("frames must be strictly increasing")
    if len(frames) == 0:
        return positions.copy()
    out = np.full((frames[-1] - frames[0] + 1, 2), np.nan)
    out[frames - frames[0]] = positions
    return out


def _as_batch(positions_px: np.ndarray) -> np.ndarray:
    positions = np.asarray(positions_px, dtype=float)
    if positions.ndim != 3 or positions.shape[-1] != 2:
        raise ClassicalInputError(f"positions must have shape (N, T, 2), got {positions.shape}")
    return positions


def _pad_short(positions: np.ndarray) -> np.ndarray:
    """Pad tracks shorter than 3 positions with NaN rows: their estimates come out NaN."""
    n, t, _ = positions.shape
    if t >= 3:
        return positions
    return np.concatenate([positions, np.full((n, 3 - t, 2), np.nan)], axis=1)


def _px2_frame_to_um2_s(value: np.ndarray, acquisition: Acquisition) -> np.ndarray:
    return np.asarray(acquisition.diffusion_to_um2_s(np.asarray(value, dtype=float)), dtype=float)


# ------------------------------------------------------------------------------ MSD


def msd_curve_batch(positions_px: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Time-averaged MSD tensors of ``N`` tracks for lags ``1..max_lag`` (frames).

    Parameters
    ----------
    positions_px
        ``(N, T, 2)`` positions in pixels, NaN rows for missing frames.
    max_lag
        Largest lag in frames.

    Returns
    -------
    msd_px2
        ``(N, max_lag, 2, 2)`` mean of ``d d^T`` over all pairs ``n`` frames apart (px^2),
        NaN where a lag has no pair.
    counts
        ``(N, max_lag)`` number of pairs used per lag.
    """
    positions = _as_batch(positions_px)
    n, t, _ = positions.shape
    max_lag = int(max(0, min(max_lag, t - 1)))
    msd = np.full((n, max_lag, 2, 2), np.nan)
    counts = np.zeros((n, max_lag), dtype=np.int64)
    # All pairs of a group of lags at once, summed per lag with reduceat; groups keep the
    # temporary (N, pairs, 3) arrays to a few million elements.
    budget = max(1, 4_000_000 // max(1, n))
    lag = 1
    while lag <= max_lag:
        lags = []
        size = 0
        while lag <= max_lag and (not lags or size + (t - lag) <= budget):
            lags.append(lag)
            size += t - lag
            lag += 1
        first = np.concatenate([np.arange(t - g) for g in lags])
        second = first + np.repeat(lags, [t - g for g in lags])
        starts = np.cumsum([0] + [t - g for g in lags[:-1]])
        d = positions[:, second] - positions[:, first]  # (N, pairs, 2)
        valid = np.isfinite(d[..., 0]) & np.isfinite(d[..., 1])
        d = np.where(valid[..., None], d, 0.0)
        prods = np.stack([d[..., 0] * d[..., 0], d[..., 1] * d[..., 1], d[..., 0] * d[..., 1]], axis=-1)
        sums = np.add.reduceat(prods, starts, axis=1)  # (N, len(lags), 3)
        c = np.add.reduceat(valid.astype(np.int64), starts, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / c[..., None]
        mean[c == 0] = np.nan
        sl = slice(lags[0] - 1, lags[-1])
        msd[:, sl, 0, 0] = mean[..., 0]
        msd[:, sl, 1, 1] = mean[..., 1]
        msd[:, sl, 0, 1] = msd[:, sl, 1, 0] = mean[..., 2]
        counts[:, sl] = c
    return msd, counts


_X_GRID = np.concatenate([[0.0], np.logspace(-3, 3, 61)])
#: Largest MSD lag used by the fits (frames): the optimal number of points stays below 60
#: for reduced errors up to 1e3, and alpha uses at most T // 4 lags up to this cap.
_MAX_MSD_LAG = 64


@lru_cache(maxsize=64)
def _msd_points_table(n_positions: int, blur_key: int) -> np.ndarray:
    """Optimal number of MSD points for each reduced error in ``_X_GRID`` (one track length).

    For a 1-D Brownian track of ``n_positions`` positions (units ``D dt = 1``) with
    localization variance ``x`` and blur coefficient ``R``, the observed positions have
    the variogram ``V(k) = 2|k| - 4R + 2x`` (``k != 0``). The covariance of the MSD points
    follows exactly from Isserlis' theorem, ``Cov(u^2, v^2) = 2 Cov(u, v)^2``, and the
    variance of the unweighted least-squares slope over lags ``1..p`` is ``w^T C w``.
    The returned table holds, for every ``x`` of the grid, the ``p >= 2`` minimising it.
    """
    blur = blur_key / 1e6
    n_pos = int(n_positions)
    max_lag = max(2, min(n_pos - 1, 60))
    lags = np.arange(1, max_lag + 1)

    # Cov(y_{i+n} - y_i, y_{j+m} - y_j) with delta = j - i, as u(delta) + x * w(delta):
    # 1/2 [V(n - delta) + V(delta + m) - V(n - m - delta) - V(delta)].
    def parts(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonzero = k != 0
        return np.where(nonzero, 2.0 * np.abs(k) - 4.0 * blur, 0.0), np.where(nonzero, 2.0, 0.0)

    c0 = np.zeros((max_lag, max_lag))
    c1 = np.zeros((max_lag, max_lag))
    c2 = np.zeros((max_lag, max_lag))
    deltas = np.arange(-(n_pos - 1), n_pos)
    for a, nl in enumerate(lags):
        m = lags[:, None]  # (L, 1)
        dl = deltas[None, :]
        count = np.minimum(n_pos - nl - 1, n_pos - m - 1 - dl) - np.maximum(0, -dl) + 1
        count = np.clip(count, 0, None).astype(float)
        terms = [parts(nl - dl), parts(dl + m), parts(nl - m - dl), parts(dl)]
        u = 0.5 * (terms[0][0] + terms[1][0] - terms[2][0] - terms[3][0])
        w = 0.5 * (terms[0][1] + terms[1][1] - terms[2][1] - terms[3][1])
        norm = 2.0 / ((n_pos - nl) * (n_pos - lags.astype(float)))
        c0[a] = norm * np.sum(count * u * u, axis=1)
        c1[a] = norm * np.sum(count * 2.0 * u * w, axis=1)
        c2[a] = norm * np.sum(count * w * w, axis=1)

    best = np.full(len(_X_GRID), 2, dtype=np.int64)
    best_var = np.full(len(_X_GRID), np.inf)
    for p in range(2, max_lag + 1):
        design = np.stack([np.ones(p), lags[:p].astype(float)], axis=1)
        weights = np.linalg.pinv(design)[1]  # slope = weights @ msd[:p]
        q0 = weights @ c0[:p, :p] @ weights
        q1 = weights @ c1[:p, :p] @ weights
        q2 = weights @ c2[:p, :p] @ weights
        var = q0 + _X_GRID * q1 + _X_GRID**2 * q2
        better = var < best_var * (1 - 1e-12)
        best[better] = p
        best_var[better] = var[better]
    return best


def _length_key(n_positions: int) -> int:
    """Exact for short tracks; longer ones share tables on a geometric grid of lengths.

    Beyond 256 positions the table of 256 is used: the optimal number of points (at most
    60 here) no longer depends on the length once it is a small fraction of it.
    """
    if n_positions <= 32:
        return int(n_positions)
    return int(round(2 ** (round(4 * math.log2(min(n_positions, 256))) / 4)))


def optimal_msd_points(reduced_error: np.ndarray, n_positions: int, blur_coefficient: float) -> np.ndarray:
    """Number of MSD points minimising the variance of the fitted D (Michalet & Berglund 2012).

    Parameters
    ----------
    reduced_error
        Reduced localization error ``x = s^2 / (D dt)`` (dimensionless), any shape;
        negative values are treated as 0, NaN/inf as very large.
    n_positions
        Number of positions of the track.
    blur_coefficient
        Motion-blur coefficient ``R`` of the acquisition.

    Returns
    -------
    numpy.ndarray
        Integer number of points (lags ``1..p``), ``2 <= p <= n_positions - 1``.
    """
    x = np.asarray(reduced_error, dtype=float)
    x = np.where(np.isfinite(x), np.clip(x, 0.0, None), _X_GRID[-1])
    if n_positions < 3:
        return np.full(x.shape, 2, dtype=np.int64)
    table = _msd_points_table(_length_key(int(n_positions)), int(round(blur_coefficient * 1e6)))
    log_grid = np.log(_X_GRID[1:])
    pos = np.interp(np.log(np.clip(x, _X_GRID[1], None)), log_grid, np.arange(1, len(_X_GRID)))
    idx = np.where(x < 0.5 * _X_GRID[1], 0, np.rint(pos).astype(np.int64))
    return np.minimum(table[idx], n_positions - 1)


def _line_fit(y: np.ndarray, x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unweighted least-squares line ``y = a + b x`` per row over ``mask`` (vectorised)."""
    w = mask & np.isfinite(y)
    yy = np.where(w, y, 0.0)
    n = w.sum(axis=1).astype(float)
    sx = np.sum(np.where(w, x, 0.0), axis=1)
    sxx = np.sum(np.where(w, x * x, 0.0), axis=1)
    sy = yy.sum(axis=1)
    sxy = np.sum(np.where(w, x * yy, 0.0), axis=1)
    den = n * sxx - sx * sx
    with np.errstate(invalid="ignore", divide="ignore"):
        b = (n * sxy - sx * sy) / den
        a = (sy - b * sx) / n
    bad = (n < 2) | (den <= 0)
    return np.where(bad, np.nan, a), np.where(bad, np.nan, b)


def _msd_fit(
    msd_1d_sum: np.ndarray, counts: np.ndarray, n_positions: np.ndarray, blur: float, max_iter: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterate ``p -> (a, b) -> x -> p`` on summed-over-axes MSD curves ``(N, L)``.

    Returns offset ``a`` and slope ``b`` (px^2, px^2/frame, of the 2-D MSD) and ``p``.
    """
    n_tracks, max_lag = msd_1d_sum.shape
    lags = np.arange(1, max_lag + 1, dtype=float)[None, :]
    p = np.full(n_tracks, 2, dtype=np.int64)
    a = b = np.full(n_tracks, np.nan)
    for _ in range(max_iter):
        mask = (lags <= p[:, None]) & (counts > 0)
        a, b = _line_fit(msd_1d_sum, lags, mask)
        # 2-D: MSD(n) = 4 D n + 4 s^2 - 8 R D, so b = 4 D and x = s^2 / D = (a + 2 R b) / b.
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where(b > 0, (a + 2.0 * blur * b) / b, np.inf)
        new_p = np.empty_like(p)
        for length in np.unique(n_positions):
            sel = n_positions == length
            new_p[sel] = optimal_msd_points(x[sel], int(length), blur)
        new_p = np.clip(new_p, 2, max(2, max_lag))
        if np.array_equal(new_p, p):
            break
        p = new_p
    return a, b, p


def msd_diffusion_batch(positions_px: np.ndarray, acquisition: Acquisition) -> dict[str, np.ndarray]:
    """Isotropic MSD estimate of ``N`` tracks (see :func:`msd_diffusion`).

    Parameters
    ----------
    positions_px
        ``(N, T, 2)`` ``(y, x)`` positions in pixels, NaN rows for missing frames.
    acquisition
        Frame interval, pixel size and blur coefficient.

    Returns
    -------
    dict
        ``D_um2_s`` (N,) clipped at 0, ``alpha`` (N,), ``n_points`` (N,) int,
        ``offset_um2`` (N,) fitted 2-D MSD offset ``4 s^2 - 8 R D dt`` (um^2).
    """
    positions = _pad_short(_as_batch(positions_px))
    n, t, _ = positions.shape
    msd, counts = msd_curve_batch(positions, min(t - 1, _MAX_MSD_LAG))
    msd_sum = msd[..., 0, 0] + msd[..., 1, 1]
    valid_len = np.sum(np.all(np.isfinite(positions), axis=-1), axis=1)
    # Tracks with gaps use the table of their span length (their counts are smaller).
    n_positions = np.full(n, t, dtype=np.int64)
    n_positions[valid_len < t] = np.maximum(3, valid_len[valid_len < t])
    a, b, p = _msd_fit(msd_sum, counts, n_positions, acquisition.blur_coefficient)
    D_px2_frame = np.clip(b / 4.0, 0.0, None)
    alpha = _alpha_loglog(msd_sum, counts, a, p, t)
    return {
        "D_um2_s": _px2_frame_to_um2_s(D_px2_frame, acquisition),
        "alpha": alpha,
        "n_points": p,
        "offset_um2": a * acquisition.pixel_size_um**2,
    }


def _alpha_loglog(msd_sum: np.ndarray, counts: np.ndarray, offset: np.ndarray, p: np.ndarray, t: int) -> np.ndarray:
    """Anomalous exponent: slope of ``log(MSD(n) - offset)`` against ``log n``.

    The offset of the linear fit (localization noise minus motion blur) is removed first,
    otherwise localization noise bends the log-log curve down (alpha < 1 for slow
    particles) and motion blur bends it up (alpha > 1 for fast ones). Lags
    ``1..max(p, T // 4, 3)`` (at most 64) are used, keeping only points above the offset.
    """
    n_tracks, max_lag = msd_sum.shape
    lags = np.arange(1, max_lag + 1, dtype=float)[None, :]
    n_alpha = np.minimum(np.maximum(np.maximum(p, t // 4), 3), max_lag)
    corrected = msd_sum - np.where(np.isfinite(offset), offset, 0.0)[:, None]
    mask = (lags <= n_alpha[:, None]) & (counts > 0) & (corrected > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_y = np.log(np.where(mask, corrected, 1.0))
    _, slope = _line_fit(log_y, np.log(lags) + np.zeros_like(log_y), mask)
    return slope


def msd_diffusion(
    positions_px: np.ndarray, acquisition: Acquisition, frames: np.ndarray | None = None
) -> tuple[float, float, int]:
    """MSD estimate of an isotropic D with the optimal number of fitted points.

    The 2-D MSD of lags ``1..p`` is fitted with a line ``a + b n``; ``D = b / (4 dt)``.
    ``p`` is chosen iteratively (start at 2, then from the reduced localization error
    ``x = s^2 / (D dt)`` of the current fit) as the number of points that minimises the
    variance of the slope for a track of this length, localization error and blur
    (Michalet 2010; Michalet & Berglund 2012).

    Parameters
    ----------
    positions_px
        ``(T, 2)`` ``(y, x)`` positions in pixels.
    acquisition
        Frame interval, pixel size and blur coefficient.
    frames
        ``(T,)`` frame numbers for tracks with gaps; ``None`` means consecutive.

    Returns
    -------
    D_um2_s, alpha, n_points
        D (um^2/s, clipped at 0), the anomalous exponent from the log-log fit
        (NaN if it cannot be formed) and the number of MSD points used.
    """
    grid = regular_positions(positions_px, frames)
    out = msd_diffusion_batch(grid[None], acquisition)
    return float(out["D_um2_s"][0]), float(out["alpha"][0]), int(out["n_points"][0])


def msd_tensor_batch(positions_px: np.ndarray, acquisition: Acquisition) -> dict[str, np.ndarray]:
    """MSD tensor: the line fit of :func:`msd_diffusion` on each component of ``<d d^T>``.

    The number of points is the optimal ``p`` of the isotropic fit; the slope tensor
    ``B`` gives ``D = B / (2 dt)``, eigen-decomposed (clipped at 0 and flagged when not
    positive-definite).

    Returns
    -------
    dict
        ``D1_um2_s, D2_um2_s, theta_deg`` (N,), ``clipped`` (N,) bool, ``n_points`` (N,).
    """
    positions = _pad_short(_as_batch(positions_px))
    n, t, _ = positions.shape
    iso = msd_diffusion_batch(positions, acquisition)
    msd, counts = msd_curve_batch(positions, min(t - 1, _MAX_MSD_LAG))
    lags = np.arange(1, msd.shape[1] + 1, dtype=float)[None, :]
    mask = (lags <= iso["n_points"][:, None]) & (counts > 0)
    slope = np.empty((n, 2, 2))
    for i, j in ((0, 0), (1, 1), (0, 1)):
        _, b = _line_fit(msd[..., i, j], lags, mask)
        slope[:, i, j] = b
    slope[:, 1, 0] = slope[:, 0, 1]
    D1, D2, theta = eigen_from_tensor(slope / 2.0)
    return _finish_tensor(D1, D2, theta, acquisition) | {"n_points": iso["n_points"]}


def _finish_tensor(
    D1_px: np.ndarray, D2_px: np.ndarray, theta: np.ndarray, acquisition: Acquisition
) -> dict[str, np.ndarray]:
    """Clip non-positive-definite tensors (px^2/frame) at 0, flag them, convert to um^2/s."""
    bad = ~np.isfinite(D1_px) | ~np.isfinite(D2_px)
    clipped = bad | (D2_px < 0)
    D1c = np.where(bad, np.nan, np.clip(D1_px, 0.0, None))
    D2c = np.where(bad, np.nan, np.clip(D2_px, 0.0, None))
    return {
        "D1_um2_s": _px2_frame_to_um2_s(D1c, acquisition),
        "D2_um2_s": _px2_frame_to_um2_s(D2c, acquisition),
        "theta_deg": np.where(bad, np.nan, theta),
        "clipped": clipped,
    }


# ------------------------------------------------------------------------------ CVE


def _cve_moments(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """S0 = mean(d d^T), S1 = sym(mean(d_k d_(k+1)^T)) per track (px^2), with their counts."""
    d = positions[:, 1:] - positions[:, :-1]  # (N, T-1, 2)
    valid = np.all(np.isfinite(d), axis=-1)
    d0 = np.where(valid[..., None], d, 0.0)
    n0 = valid.sum(axis=1)
    pair = valid[:, 1:] & valid[:, :-1]
    n1 = pair.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s0 = np.einsum("nki,nkj->nij", d0, d0) / n0[:, None, None]
        a = np.where(pair[..., None], d0[:, :-1], 0.0)
        b = np.where(pair[..., None], d0[:, 1:], 0.0)
        s1 = np.einsum("nki,nkj->nij", a, b) / n1[:, None, None]
    s1 = 0.5 * (s1 + np.swapaxes(s1, -1, -2))
    return s0, s1, n0, n1


def cve_variance_px2(
    D_px2_frame: np.ndarray, loc_var_px2: np.ndarray, blur: float, n_displacements: np.ndarray
) -> np.ndarray:
    """Variance of the 1-D CVE ``D = <dx^2>/2 + <dx dx'>`` (px^2/frame)^2 for a Brownian axis.

    Exact for Gaussian increments: with ``c0 = 2D(1 - 2R) + 2 s^2`` and ``c1 = 2RD - s^2``
    the increment covariance is ``C = c0 I + c1 T`` (``T`` the off-diagonal ones), the
    estimator is ``d^T A d`` with ``A = I / (2K) + T / (2(K - 1))``, and
    ``Var = 2 tr(A C A C)``, a quadratic form in ``(c0, c1)`` whose coefficients depend on
    the number of displacements ``K`` only.
    """
    D = np.asarray(D_px2_frame, dtype=float)
    s2 = np.asarray(loc_var_px2, dtype=float)
    k = np.asarray(n_displacements, dtype=float)
    c0 = 2.0 * D * (1.0 - 2.0 * blur) + 2.0 * s2
    c1 = 2.0 * blur * D - s2
    with np.errstate(invalid="ignore", divide="ignore"):
        # tr(A^2), tr(A^2 T), tr(A T A T) for A = alpha I + beta T, T tridiagonal of ones:
        # tr(T) = 0, tr(T^2) = 2(K-1), tr(T^3) = 0, tr(T^4) = 6K - 10 (K >= 2).
        alpha = 1.0 / (2.0 * k)
        beta = 1.0 / (2.0 * (k - 1.0))
        t2, t4 = 2.0 * (k - 1.0), 6.0 * k - 10.0
        tr_a2 = alpha**2 * k + beta**2 * t2
        tr_a2t = 2.0 * alpha * beta * t2
        tr_atat = alpha**2 * t2 + beta**2 * t4
        var = 2.0 * (c0**2 * tr_a2 + 2.0 * c0 * c1 * tr_a2t + c1**2 * tr_atat)
    return np.where(k >= 2, var, np.nan)


def cve_tensor_batch(positions_px: np.ndarray, acquisition: Acquisition) -> dict[str, np.ndarray]:
    """CVE diffusion tensor of ``N`` tracks (see :func:`cve_tensor`).

    Parameters
    ----------
    positions_px
        ``(N, T, 2)`` ``(y, x)`` positions in pixels, NaN rows for missing frames.
    acquisition
        Frame interval, pixel size and blur coefficient.

    Returns
    -------
    dict
        ``D1_um2_s, D2_um2_s, theta_deg`` (N,), ``loc_variance_um2`` (N,) per axis,
        clipped at 0, ``clipped`` (N,) bool, ``tensor_px2_frame`` (N, 2, 2) raw tensor,
        ``n_displacements`` (N,) int, ``var_D1_um2_s2, var_D2_um2_s2`` (N,) the expected
        sampling variance of each eigenvalue.
    """
    positions = _pad_short(_as_batch(positions_px))
    blur = acquisition.blur_coefficient
    s0, s1, n0, n1 = _cve_moments(positions)
    tensor = 0.5 * s0 + s1  # px^2/frame (dt = 1 frame)
    D1, D2, theta = eigen_from_tensor(tensor)
    loc_var_px2 = 0.5 * (blur * np.trace(s0, axis1=1, axis2=2) + (2.0 * blur - 1.0) * np.trace(s1, axis1=1, axis2=2))
    loc_var_px2 = np.clip(loc_var_px2, 0.0, None)
    out = _finish_tensor(D1, D2, theta, acquisition)
    out["clipped"] = out["clipped"] | (n1 < 1)
    scale = acquisition.um2_s_per_px2_frame**2
    out["var_D1_um2_s2"] = cve_variance_px2(np.clip(D1, 0, None), loc_var_px2, blur, n0) * scale
    out["var_D2_um2_s2"] = cve_variance_px2(np.clip(D2, 0, None), loc_var_px2, blur, n0) * scale
    out["loc_variance_um2"] = loc_var_px2 * acquisition.pixel_size_um**2
    out["tensor_px2_frame"] = tensor
    out["n_displacements"] = n0
    return out


def cve_tensor(positions_px: np.ndarray, acquisition: Acquisition, frames: np.ndarray | None = None) -> TensorEstimate:
    """Covariance-based estimator of the diffusion tensor (Vestergaard et al. 2014).

    With displacements ``d_k`` (px), ``S0 = mean(d_k d_k^T)`` and
    ``S1 = sym(mean(d_k d_(k+1)^T))``, the tensor is ``D = S0 / (2 dt) + S1 / dt``
    (unbiased whatever the blur and localization noise), eigen-decomposed into
    ``D1 >= D2`` and ``theta``. The localization variance per axis is
    ``s^2 = R tr(S0)/2 + (2R - 1) tr(S1)/2`` with the acquisition's blur coefficient ``R``.
    Non-positive-definite results (short or slow tracks) are clipped at 0 and flagged.
    Displacements across gaps are not used.

    Parameters
    ----------
    positions_px
        ``(T, 2)`` ``(y, x)`` localized positions in pixels (``T >= 3``).
    acquisition
        Frame interval, pixel size and blur coefficient.
    frames
        ``(T,)`` frame numbers for tracks with gaps; ``None`` means consecutive.

    Returns
    -------
    TensorEstimate
    """
    grid = regular_positions(positions_px, frames)
    out = cve_tensor_batch(grid[None], acquisition)
    return TensorEstimate(
        D1_um2_s=float(out["D1_um2_s"][0]),
        D2_um2_s=float(out["D2_um2_s"][0]),
        theta_deg=float(out["theta_deg"][0]),
        loc_variance_um2=float(out["loc_variance_um2"][0]),
        clipped=bool(out["clipped"][0]),
    )
