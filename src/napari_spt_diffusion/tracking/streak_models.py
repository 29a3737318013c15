"""Light models for the second localization pass: two round spots, a streak, known neighbours.

Used by :mod:`.overlaps`. A *streak* is ``N`` photons spread evenly along a segment, each
point blurred by the pixel-integrated Gaussian PSF of :mod:`.localize`; a *pair* is two
round spots sharing background and width. :func:`fit_pairs` and :func:`fit_segments`
maximise the Poisson likelihood of these models for a batch of windows (compiled
Levenberg-Marquardt on the Fisher information, :mod:`.lm_kernels`; :func:`fit_model` is the
numpy reference for any model). :class:`Emitters` are point sources that reproduce
the light of a frame's spots, so that each fit can include its neighbours' light.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from .lm_kernels import PAIR, SEGMENT, fit_windows
from .lm_kernels import SEGMENT_POINTS as KERNEL_SEGMENT_POINTS
from .localize import FitLimits, psf_1d

#: Points along the segment of the streak model (spaced <= 0.75 px for streaks <= 3 px); the
#: compiled model of :mod:`.lm_kernels` uses the same number.
SEGMENT_POINTS = KERNEL_SEGMENT_POINTS
_SEGMENT_T = np.linspace(-0.5, 0.5, SEGMENT_POINTS)


class Emitters(NamedTuple):
    """Point sources of light: positions ``(M, 2)`` px, photons ``(M,)``, widths ``(M,)`` px
    and the row ``(M,)`` each belongs to."""

    yx: np.ndarray
    n: np.ndarray
    s: np.ndarray
    owner: np.ndarray


def pair_model_and_jacobian(params: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two round spots sharing background and width.

    ``params`` ``(K, 8)`` = y1, x1, N1, y2, x2, N2, b, s (px, photons, photons/pixel, px).
    Returns the expected photons ``(K, W*W)`` and the Jacobian ``(K, W*W, 8)``.
    """
    y1, x1, n1, y2, x2, n2, b, s = params.T
    ey1, dy1, sy1 = psf_1d(y1, s, offsets)
    ex1, dx1, sx1 = psf_1d(x1, s, offsets)
    ey2, dy2, sy2 = psf_1d(y2, s, offsets)
    ex2, dx2, sx2 = psf_1d(x2, s, offsets)
    k, w = ey1.shape
    shape1 = ey1[:, :, None] * ex1[:, None, :]
    shape2 = ey2[:, :, None] * ex2[:, None, :]
    n1_, n2_ = n1[:, None, None], n2[:, None, None]
    model = b[:, None, None] + n1_ * shape1 + n2_ * shape2
    jac = np.empty((k, w, w, 8))
    jac[..., 0] = n1_ * dy1[:, :, None] * ex1[:, None, :]
    jac[..., 1] = n1_ * ey1[:, :, None] * dx1[:, None, :]
    jac[..., 2] = shape1
    jac[..., 3] = n2_ * dy2[:, :, None] * ex2[:, None, :]
    jac[..., 4] = n2_ * ey2[:, :, None] * dx2[:, None, :]
    jac[..., 5] = shape2
    jac[..., 6] = 1.0
    jac[..., 7] = n1_ * (sy1[:, :, None] * ex1[:, None, :] + ey1[:, :, None] * sx1[:, None, :]) + n2_ * (
        sy2[:, :, None] * ex2[:, None, :] + ey2[:, :, None] * sx2[:, None, :]
    )
    return model.reshape(k, w * w), jac.reshape(k, w * w, 8)


def segment_model_and_jacobian(params: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A streak: ``N`` photons spread evenly along a segment, each point blurred by the PSF.

    ``params`` ``(K, 7)`` = y, x (segment centre, px), N, b, s, vy, vx (segment vector, px);
    the light is the mean of ``SEGMENT_POINTS`` pixel-integrated Gaussians at
    ``centre + t v``, ``t`` evenly spaced in [-1/2, 1/2]. Returns ``(K, W*W)`` and ``(K, W*W, 7)``.
    """
    y, x, n, b, s, vy, vx = params.T
    k, m = len(params), SEGMENT_POINTS
    t = _SEGMENT_T
    ys = (y[:, None] + t[None, :] * vy[:, None]).ravel()
    xs = (x[:, None] + t[None, :] * vx[:, None]).ravel()
    ss = np.repeat(s, m)
    ey, dey, dsy = (a.reshape(k, m, -1) for a in psf_1d(ys, ss, offsets))
    ex, dex, dsx = (a.reshape(k, m, -1) for a in psf_1d(xs, ss, offsets))
    w = ey.shape[2]
    scale = n[:, None, None] / m
    shape = np.einsum("kmi,kmj->kij", ey, ex) / m
    jac = np.empty((k, w, w, 7))
    jac[..., 0] = scale * np.einsum("kmi,kmj->kij", dey, ex)
    jac[..., 1] = scale * np.einsum("kmi,kmj->kij", ey, dex)
    jac[..., 2] = shape
    jac[..., 3] = 1.0
    jac[..., 4] = scale * (np.einsum("kmi,kmj->kij", dsy, ex) + np.einsum("kmi,kmj->kij", ey, dsx))
    jac[..., 5] = scale * np.einsum("m,kmi,kmj->kij", t, dey, ex)
    jac[..., 6] = scale * np.einsum("m,kmi,kmj->kij", t, ey, dex)
    model = b[:, None, None] + n[:, None, None] * shape
    return model.reshape(k, w * w), jac.reshape(k, w * w, 7)


def pair_bounds(half: float, limits: FitLimits) -> tuple[np.ndarray, np.ndarray]:
    """Box ``(lower, upper)`` ``(8,)`` of the pair model's parameters in a window of half-width ``half``."""
    rv, lo, hi = limits.read_var, limits.sigma_lo, limits.sigma_hi
    return (np.array([-half, -half, 1e-3, -half, -half, 1e-3, 1e-3 - rv, lo]),
            np.array([half, half, np.inf, half, half, np.inf, np.inf, hi]))


def segment_bounds(half: float, limits: FitLimits) -> tuple[np.ndarray, np.ndarray]:
    """Box ``(lower, upper)`` ``(7,)`` of the streak model's parameters in a window of half-width
    ``half`` (the segment vector within ``+-2 half``)."""
    rv, lo, hi = limits.read_var, limits.sigma_lo, limits.sigma_hi
    return (np.array([-half, -half, 1e-3, 1e-3 - rv, lo, -2.0 * half, -2.0 * half]),
            np.array([half, half, np.inf, np.inf, hi, 2.0 * half, 2.0 * half]))


def fit_pairs(data: np.ndarray, valid: np.ndarray, offsets: np.ndarray, start: np.ndarray, limits: FitLimits,
              extra: np.ndarray, max_iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit the pair model (:func:`pair_model_and_jacobian`) to K windows, compiled; as
    :func:`fit_model` with the box of :func:`pair_bounds`. Returns ``(params (K, 8), loglik (K,),
    fisher (K, 8, 8), converged (K,))``."""
    return fit_windows(PAIR, (data, valid), offsets, start, pair_bounds(float(offsets[-1]), limits), extra,
                       max_iterations)


def fit_segments(data: np.ndarray, valid: np.ndarray, offsets: np.ndarray, start: np.ndarray, limits: FitLimits,
                 extra: np.ndarray, max_iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit the streak model (:func:`segment_model_and_jacobian`) to K windows, compiled; as
    :func:`fit_model` with the box of :func:`segment_bounds`. Returns ``(params (K, 7), loglik (K,),
    fisher (K, 7, 7), converged (K,))``."""
    return fit_windows(SEGMENT, (data, valid), offsets, start, segment_bounds(float(offsets[-1]), limits), extra,
                       max_iterations)


def fit_model(
    model_fn: Any,
    clip_fn: Any,
    data: np.ndarray,
    valid: np.ndarray,
    start: np.ndarray,
    extra: np.ndarray,
    max_iterations: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched numpy Levenberg-Marquardt maximisation of the Poisson likelihood for any model (the
    reference that the compiled :func:`fit_pairs` and :func:`fit_segments` reproduce; kept for the tests).

    ``model_fn(params (K, P), offsets)`` returns ``(mu (K, W*W), jac (K, W*W, P))``
    (offsets are bound by the caller); ``clip_fn`` keeps parameters in bounds (in place);
    ``extra`` ``(K, W*W)`` is known light added to the model (read variance, neighbours).
    Stops a spot when an accepted step gains < 1e-5 in log-likelihood or moves no
    parameter by more than 1e-3 (px / relative photons). Returns ``(params, loglik,
    fisher (K, P, P), converged)``.
    """

    def score(p, d, v, e):
        model, jac = model_fn(p)
        mu = model + e
        ll = np.sum(v * (d * np.log(mu) - mu), axis=1)
        weight = v / mu
        grad = np.einsum("kp,kpi->ki", (d - mu) * weight, jac)
        fisher = np.matmul(jac.transpose(0, 2, 1), jac * weight[:, :, None])
        return ll, grad, fisher

    k, n_par = start.shape
    params = clip_fn(start.copy())
    loglik, grad, fisher = score(params, data, valid, extra)
    lam = np.full(k, 1e-3)
    converged = np.zeros(k, dtype=bool)
    active = np.arange(k)
    eye = np.eye(n_par)
    scale = np.maximum(np.abs(params), 1.0)  # photons move in relative terms, px in absolute
    for _ in range(max_iterations):
        if active.size == 0:
            break
        f_act = fisher[active]
        damped = f_act + lam[active, None, None] * (f_act * eye + 1e-9 * eye)
        try:
            step = np.linalg.solve(damped, grad[active][:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(m, g, rcond=None)[0] for m, g in zip(damped, grad[active])])
        trial = clip_fn(params[active] + step)
        ll_t, g_t, f_t = score(trial, data[active], valid[active], extra[active])
        better = np.isfinite(ll_t) & (ll_t >= loglik[active] - 1e-10 * np.abs(loglik[active]))
        gain = ll_t - loglik[active]
        moved = np.max(np.abs(trial - params[active]) / scale[active], axis=1)
        idx_ok = active[better]
        params[idx_ok], loglik[idx_ok], grad[idx_ok], fisher[idx_ok] = (
            trial[better],
            ll_t[better],
            g_t[better],
            f_t[better],
        )
        lam[idx_ok] = np.maximum(lam[idx_ok] * 0.1, 1e-7)
        lam[active[~better]] *= 10.0
        done = (better & ((moved < 1e-3) | (gain < 1e-5))) | (lam[active] > 1e6)
        converged[active[done]] = True
        active = active[~done]
    return params, loglik, fisher, converged


def windowed_light(centres: np.ndarray, source_yx: np.ndarray, source_n: np.ndarray, source_s: np.ndarray,
           target: np.ndarray, offsets: np.ndarray, n_targets: int) -> np.ndarray:
    """Summed round-spot light ``(n_targets, W*W)`` of sources in target windows.

    ``centres`` ``(n_targets, 2)`` integer window centres; ``source_yx`` ``(M, 2)`` absolute
    positions, ``source_n``/``source_s`` ``(M,)`` photons and widths; ``target`` ``(M,)`` the
    window index each source row lights (a source may appear once per target).
    """
    w = offsets.size
    light = np.zeros((n_targets, w, w))
    if len(target):
        rel = source_yx - centres[target]
        ey = psf_1d(rel[:, 0], source_s, offsets)[0]
        ex = psf_1d(rel[:, 1], source_s, offsets)[0]
        np.add.at(light, target, source_n[:, None, None] * ey[:, :, None] * ex[:, None, :])
    return light.reshape(n_targets, w * w)


def emitters_of(positions: np.ndarray, photons: np.ndarray, sigma: np.ndarray, kind: np.ndarray,
              segment: np.ndarray) -> Emitters:
    """Point sources that reproduce every spot's light with its best model.

    Round spots are one point; streaks (``kind == 1``, ``segment`` ``(K, 2)`` vectors) are
    ``SEGMENT_POINTS`` points sharing the photons. ``owner`` maps each point to its spot
    (an index into the given rows).
    """
    streak = np.flatnonzero(kind == 1)
    round_ = np.flatnonzero(kind != 1)
    yx = [positions[round_]]
    n = [photons[round_]]
    s = [sigma[round_]]
    owner = [round_]
    if streak.size:
        pts = positions[streak, None, :] + _SEGMENT_T[None, :, None] * segment[streak, None, :]
        yx.append(pts.reshape(-1, 2))
        n.append(np.repeat(photons[streak] / SEGMENT_POINTS, SEGMENT_POINTS))
        s.append(np.repeat(sigma[streak], SEGMENT_POINTS))
        owner.append(np.repeat(streak, SEGMENT_POINTS))
    return Emitters(np.concatenate(yx), np.concatenate(n), np.concatenate(s), np.concatenate(owner))


def neighbour_light_of(centres: np.ndarray, spot_index: np.ndarray, emitters: Emitters, offsets: np.ndarray,
                        reach: float, second_index: np.ndarray | None = None) -> np.ndarray:
    """Light ``(len(centres), W*W)`` of all emitters not owned by ``spot_index[i]`` (nor by
    ``second_index[i]`` when given) within ``reach`` px of window i."""
    yx, n, s, owner = emitters
    if len(yx) == 0 or len(centres) == 0:
        return np.zeros((len(centres), offsets.size**2))
    hits = cKDTree(yx).query_ball_point(centres.astype(np.float64), reach)
    target = np.fromiter((i for i, h in enumerate(hits) for _ in h), dtype=np.int64)
    source = np.fromiter((j for h in hits for j in h), dtype=np.int64)
    keep = owner[source] != spot_index[target]
    if second_index is not None:
        keep &= owner[source] != second_index[target]
    target, source = target[keep], source[keep]
    return windowed_light(centres, yx[source], n[source], s[source], target, offsets, len(centres))
