"""A reference estimator for seed-aniso tracks: the posterior median of D1 and D2 from the positions alone.

What an estimator could reach from a track's positions if it knew the prior the tracks were drawn from and the
likelihood they were made with. The posterior median of each of ``D1`` and ``D2`` minimises the expected absolute
error given the positions, so no estimator that sees only the positions has a lower expected MAE, up to the
approximations below. Estimators that also read the images (blur moments, the models) see more than the positions
and can do better; where a model does worse than this reference, there is room left in the positions alone.

Prior (seed-aniso, ``simulation.trajectories.simulate_aniso``): ``D1`` uniform over the 120 values of
``D1_GRID_UM2_S``, ``D2 = r D1`` with ``r`` uniform in 0.1-1, ``theta`` uniform in 0-180 degrees.

Likelihood: in the frame of the tensor's axes (angle ``theta``) the two coordinates of a track diffuse
independently with ``D1`` and ``D2`` (px^2/frame). Along one axis the displacements ``x_{i+1} - x_i`` of a track
seen with motion blur (coefficient ``R``) and Gaussian localization noise (per-axis sd ``sigma_i`` in frame ``i``)
are jointly Gaussian with variance ``2 D (1 - 2 R) + sigma_i^2 + sigma_{i+1}^2`` and covariance
``2 D R - sigma_{i+1}^2`` between neighbours, zero beyond (a tridiagonal covariance). Approximations: the
``sigma_i`` are the localizer's own estimates (``loc_precision_nm``), not the truth; a track with missing positions
is split into runs of consecutive positions, taken as independent; the posterior is computed on grids (``theta``
every :data:`THETA_STEP_DEG` degrees, ``D2`` on :data:`N_D2` log-spaced values).
"""

from __future__ import annotations

import numpy as np

from napari_spt_diffusion.simulation.trajectories import D1_GRID_UM2_S, D2_OVER_D1_RANGE

#: Grid step of theta (degrees) over 0-180.
THETA_STEP_DEG = 3.0
#: Number of log-spaced values of D2 (0.1 x the smallest D1 to the largest D1).
N_D2 = 200


def axis_loglik(x: np.ndarray, var_px2: np.ndarray, d_px2: np.ndarray, blur: float) -> np.ndarray:
    """``(A, K)`` Gaussian log-likelihood of one run of displacements along one axis.

    ``x`` ``(A, M)``: the run's ``M`` displacements (px) projected on ``A`` axis angles; ``var_px2`` ``(M + 1,)``
    per-axis localization variances of its positions; ``d_px2`` ``(K,)`` diffusion coefficients (px^2/frame);
    ``blur`` the motion-blur coefficient ``R``. The tridiagonal covariance is factorised (LDL^T) for every ``D``
    at once, with the forward substitution alongside.
    """
    m = x.shape[1]
    diag = 2.0 * d_px2[None, :] * (1.0 - 2.0 * blur) + (var_px2[:-1] + var_px2[1:])[:, None]  # (M, K)
    off = 2.0 * d_px2[None, :] * blur - var_px2[1:-1][:, None]  # (M - 1, K)
    pivot = diag[0]
    y = np.repeat(x[:, :1], d_px2.size, axis=1)
    log_det = np.log(pivot)
    quad = y**2 / pivot
    for i in range(1, m):
        factor = off[i - 1] / pivot
        pivot = diag[i] - factor * off[i - 1]
        y = x[:, i : i + 1] - factor[None, :] * y
        log_det = log_det + np.log(pivot)
        quad = quad + y**2 / pivot
    return -0.5 * (log_det[None, :] + quad + m * np.log(2.0 * np.pi))


def consecutive_runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of at least two consecutive True values of ``valid`` ``(T,)``."""
    out, start = [], None
    for i, v in enumerate([*np.asarray(valid, bool), False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start >= 2:
                out.append((start, i))
            start = None
    return out


def posterior_medians(positions_px: np.ndarray, loc_sd_px: np.ndarray, blur: float,
                      um2_s_per_px2_frame: float) -> tuple[np.ndarray, np.ndarray]:
    """Posterior medians of ``D1`` and ``D2`` (um^2/s), ``(N,)`` each, NaN for a track without two positions.

    ``positions_px`` ``(N, T, 2)`` ``(y, x)`` (NaN rows for missing frames), ``loc_sd_px`` ``(N, T)`` per-axis
    localization sd (px), ``blur`` the motion-blur coefficient ``R``, ``um2_s_per_px2_frame`` the unit conversion.
    """
    d1_px2 = D1_GRID_UM2_S.astype(float) / um2_s_per_px2_frame
    d2_px2 = np.geomspace(d1_px2.min() * D2_OVER_D1_RANGE[0], d1_px2.max(), N_D2)
    both = np.concatenate([d1_px2, d2_px2])
    theta = np.deg2rad(np.arange(0.0, 180.0, THETA_STEP_DEG))
    lo, hi = D2_OVER_D1_RANGE
    # prior over (D1_i, D2_j): r = D2 / D1 uniform in [lo, hi): density 1 / ((hi - lo) D1) in D2, times the D2 grid's
    # cell (log-spaced: proportional to D2)
    inside = (d2_px2[None, :] >= lo * d1_px2[:, None]) & (d2_px2[None, :] < hi * d1_px2[:, None])
    with np.errstate(divide="ignore"):
        log_prior = np.where(inside, np.log(d2_px2[None, :]) - np.log((hi - lo) * d1_px2[:, None]), -np.inf)
    cos, sin = np.cos(theta), np.sin(theta)
    n = positions_px.shape[0]
    med1, med2 = np.full(n, np.nan), np.full(n, np.nan)
    for k in range(n):
        pos = np.asarray(positions_px[k], float)
        var = np.asarray(loc_sd_px[k], float) ** 2
        runs = consecutive_runs(np.all(np.isfinite(pos), axis=1) & np.isfinite(var))
        if not runs:
            continue
        loglik_u = np.zeros((theta.size, both.size))
        loglik_v = np.zeros((theta.size, both.size))
        for start, stop in runs:
            steps = np.diff(pos[start:stop], axis=0)  # (M, 2) as (dy, dx)
            u = cos[:, None] * steps[None, :, 1] + sin[:, None] * steps[None, :, 0]  # along the axis at theta
            v = -sin[:, None] * steps[None, :, 1] + cos[:, None] * steps[None, :, 0]
            loglik_u += axis_loglik(u, var[start:stop], both, blur)
            loglik_v += axis_loglik(v, var[start:stop], both, blur)
        log_post = loglik_u[:, : d1_px2.size, None] + loglik_v[:, None, d1_px2.size :] + log_prior[None]
        post = np.exp(log_post - np.max(log_post))
        med1[k] = weighted_median(d1_px2, post.sum(axis=(0, 2))) * um2_s_per_px2_frame
        med2[k] = weighted_median(d2_px2, post.sum(axis=(0, 1))) * um2_s_per_px2_frame
    return med1, med2


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of the discrete distribution ``weights`` over the sorted ``values``."""
    c = np.cumsum(weights)
    return float(values[np.searchsorted(c, 0.5 * c[-1])])
