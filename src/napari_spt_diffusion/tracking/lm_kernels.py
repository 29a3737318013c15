"""Compiled Levenberg-Marquardt fits of the spot, pair and streak models (numba).

The same Poisson maximum-likelihood fits as the numpy reference implementations
(:func:`~.localize.fit_spots_reference` and :func:`~.streak_models.fit_model`), one
window at a time in a compiled loop instead of batched numpy arrays. A frame's fits are
dozens to a few hundred windows of 7 x 7 to 15 x 15 pixels: in numpy each Levenberg-Marquardt
iteration was ~40 array operations on small arrays, so the time went to call overhead
(thousands of numpy calls per frame); compiled, a 7 x 7 spot costs ~1 us per iteration.

Models (``kind``), each evaluated on a ``W x W`` window with pixel-centre offsets
``offsets`` ``(W,)`` (consecutive integers):

* :data:`SPOT` (5 parameters ``y, x, N, b, s``): one pixel-integrated Gaussian;
* :data:`PAIR` (8: ``y1, x1, N1, y2, x2, N2, b, s``): two Gaussians sharing ``b`` and ``s``;
* :data:`SEGMENT` (7: ``y, x, N, b, s, vy, vx``): ``N`` photons spread over
  :data:`SEGMENT_POINTS` Gaussians at ``(y, x) + t (vy, vx)``, ``t`` evenly spaced in
  ``[-1/2, 1/2]``.

The likelihood, Fisher information, damping, bounds (a box ``lower <= p <= upper``) and
stopping rules are those of the references; see :func:`fit_windows`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["SPOT", "PAIR", "SEGMENT", "SEGMENT_POINTS", "STOP_SPOT", "STOP_RELATIVE", "fit_windows"]

SPOT = 0
PAIR = 1
SEGMENT = 2
#: Points along the segment of the streak model (as in :mod:`.streak_models`).
SEGMENT_POINTS = 5
#: Stopping rule of :func:`~.localize.fit_spots_reference`: position and width moved < 1e-3 px,
#: photons < 1e-3 relative (or a log-likelihood gain < 1e-5).
STOP_SPOT = 0
#: Stopping rule of :func:`~.streak_models.fit_model`: every parameter moved < 1e-3 of
#: ``max(|start|, 1)`` (or a log-likelihood gain < 1e-5).
STOP_RELATIVE = 1

_N_PARAMS = (5, 8, 7)
_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)


@njit(cache=True, nogil=True, error_model="numpy")
def _psf_1d(centre, sigma, first_offset, out, edges):
    """Pixel-integrated Gaussian over W consecutive pixels from ``first_offset``.

    ``out`` = ``(value, d_centre, d_sigma)``, each ``(W,)``: E, dE/dcentre, dE/dsigma.
    ``edges`` = three ``(W + 1,)`` work arrays: pixel j spans the edges j and j + 1.
    """
    value, d_centre, d_sigma = out
    edges_erf, edges_exp, edges_arg = edges
    w = value.shape[0]
    inv = 1.0 / (_SQRT2 * sigma)
    for j in range(w + 1):
        arg = (first_offset + j - centre - 0.5) * inv
        edges_arg[j] = arg
        edges_erf[j] = math.erf(arg)
        edges_exp[j] = math.exp(-arg * arg)
    for j in range(w):
        value[j] = 0.5 * (edges_erf[j + 1] - edges_erf[j])
        d_centre[j] = -(edges_exp[j + 1] - edges_exp[j]) * inv / _SQRT_PI
        d_sigma[j] = -(edges_arg[j + 1] * edges_exp[j + 1] - edges_arg[j] * edges_exp[j]) / (sigma * _SQRT_PI)


@njit(cache=True, nogil=True, error_model="numpy")
def _model(kind, p, first_offset, model, jac, work):
    """Expected photons ``model`` ``(W*W,)`` (without the known light) and Jacobian ``jac``
    ``(P, W*W)`` (parameter-major, so that the sums over pixels run over contiguous memory)
    of one window; ``work`` ``(6 * M + 3, W + 1)`` scratch rows (M points)."""
    w = work.shape[1] - 1
    edges = (work[0], work[1], work[2])
    n_par = jac.shape[0]
    if kind == SPOT or kind == PAIR:
        n_emit = 1 if kind == SPOT else 2
        col_s = 4 if kind == SPOT else 7
        col_b = 3 if kind == SPOT else 6
        s = p[col_s]
        b = p[col_b]
        for i in range(w * w):
            model[i] = b
            jac[col_b, i] = 1.0
            jac[col_s, i] = 0.0
        for e in range(n_emit):
            y, x, n = p[3 * e], p[3 * e + 1], p[3 * e + 2]
            ey, dey, sy = work[3][:w], work[4][:w], work[5][:w]
            ex, dex, sx = work[6][:w], work[7][:w], work[8][:w]
            _psf_1d(y, s, first_offset, (ey, dey, sy), edges)
            _psf_1d(x, s, first_offset, (ex, dex, sx), edges)
            jy, jx, jn, js = jac[3 * e], jac[3 * e + 1], jac[3 * e + 2], jac[col_s]
            for r in range(w):
                ey_r, ndey_r, nsy_r, ney_r = ey[r], n * dey[r], n * sy[r], n * ey[r]
                base = r * w
                for c in range(w):
                    i = base + c
                    shape = ey_r * ex[c]
                    model[i] += n * shape
                    jy[i] = ndey_r * ex[c]
                    jx[i] = ney_r * dex[c]
                    jn[i] = shape
                    js[i] += nsy_r * ex[c] + ney_r * sx[c]
        return
    # SEGMENT
    y, x, n, b, s, vy, vx = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    m = SEGMENT_POINTS
    for k in range(m):
        t = -0.5 + k / (m - 1)
        row = 3 + 6 * k
        _psf_1d(y + t * vy, s, first_offset, (work[row][:w], work[row + 1][:w], work[row + 2][:w]), edges)
        _psf_1d(x + t * vx, s, first_offset, (work[row + 3][:w], work[row + 4][:w], work[row + 5][:w]), edges)
    scale = n / m
    for i in range(w * w):
        model[i] = 0.0
        jac[3, i] = 1.0
    for a in (0, 1, 4, 5, 6):
        for i in range(w * w):
            jac[a, i] = 0.0
    for k in range(m):
        t = -0.5 + k / (m - 1)
        row = 3 + 6 * k
        for r in range(w):
            ey, dey, sy = work[row, r], work[row + 1, r], work[row + 2, r]
            base = r * w
            for c in range(w):
                i = base + c
                ex, dex, sx = work[row + 3, c], work[row + 4, c], work[row + 5, c]
                a0 = dey * ex
                a1 = ey * dex
                model[i] += ey * ex
                jac[0, i] += a0
                jac[1, i] += a1
                jac[4, i] += sy * ex + ey * sx
                jac[5, i] += t * a0
                jac[6, i] += t * a1
    for i in range(w * w):
        shape = model[i] / m
        model[i] = b + n * shape
        jac[2, i] = shape
    for a in (0, 1, 4, 5, 6):
        for i in range(w * w):
            jac[a, i] *= scale
    if n_par != 7:
        raise ValueError("the streak model has 7 parameters")


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _score(kind, p, first_offset, window, scratch, grad, fisher):
    """Log-likelihood of one window; fills ``grad`` ``(P,)`` and ``fisher`` ``(P, P)``.

    ``window`` = ``(data, valid, extra)`` rows ``(W*W,)``; ``scratch`` = ``(pixels, jac, work)``
    with ``pixels`` ``(3, W*W)`` (model, weight, weighted residual). The sums over pixels may
    be reordered by the compiler (vectorised): round-off differs from numpy's by ~1e-15 relative.
    """
    data, valid, extra = window
    pixels, jac, work = scratch
    model, weight, residual = pixels[0], pixels[1], pixels[2]
    npix = data.shape[0]
    _model(kind, p, first_offset, model, jac, work)
    n_par = jac.shape[0]
    ll = 0.0
    for i in range(npix):
        mu = model[i] + extra[i]
        d = data[i]
        v = valid[i]
        ll += v * (d * math.log(mu) - mu)
        wt = v / mu
        weight[i] = wt
        residual[i] = (d - mu) * wt
    for a in range(n_par):
        ja = jac[a]
        acc = 0.0
        for i in range(npix):
            acc += residual[i] * ja[i]
        grad[a] = acc
        for c in range(a + 1):
            jc = jac[c]
            acc = 0.0
            for i in range(npix):
                acc += ja[i] * weight[i] * jc[i]
            fisher[a, c] = acc
            fisher[c, a] = acc
    return ll


@njit(cache=True, nogil=True, error_model="numpy")
def _solve(matrix, rhs, out, lu):
    """``out = matrix^-1 rhs`` by Gaussian elimination with partial pivoting; False if singular."""
    n = rhs.shape[0]
    for a in range(n):
        out[a] = rhs[a]
        for c in range(n):
            lu[a, c] = matrix[a, c]
    for col in range(n):
        piv = col
        best = abs(lu[col, col])
        for r in range(col + 1, n):
            if abs(lu[r, col]) > best:
                best = abs(lu[r, col])
                piv = r
        if best == 0.0:
            return False
        if piv != col:
            for c in range(n):
                tmp = lu[col, c]
                lu[col, c] = lu[piv, c]
                lu[piv, c] = tmp
            tmp = out[col]
            out[col] = out[piv]
            out[piv] = tmp
        for r in range(col + 1, n):
            f = lu[r, col] / lu[col, col]
            if f != 0.0:
                for c in range(col, n):
                    lu[r, c] -= f * lu[col, c]
                out[r] -= f * out[col]
    for col in range(n - 1, -1, -1):
        acc = out[col]
        for c in range(col + 1, n):
            acc -= lu[col, c] * out[c]
        out[col] = acc / lu[col, col]
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def _clip(p, lower, upper):
    for a in range(p.shape[0]):
        if p[a] < lower[a]:
            p[a] = lower[a]
        if p[a] > upper[a]:
            p[a] = upper[a]


@njit(cache=True, nogil=True, error_model="numpy")
def _fit_rows(kind, inputs, first_offset, bounds, rules, outputs):
    """The Levenberg-Marquardt loop over every window (see :func:`fit_windows`).

    ``inputs`` = ``(data, valid, extra, start)``; ``bounds`` = ``(lower, upper)``; ``rules`` =
    ``(max_iterations, stop)``; ``outputs`` = ``(params, loglik, fisher, converged)``, filled.
    """
    data, valid, extra, start = inputs
    lower, upper = bounds
    max_iterations, stop = rules
    params, loglik, fisher_out, converged = outputs
    k, n_par = start.shape
    w = int(math.sqrt(data.shape[1]) + 0.5)
    pixels = np.empty((3, w * w))
    jac = np.empty((n_par, w * w))
    work = np.empty((3 + 6 * SEGMENT_POINTS, w + 1))
    grad = np.empty(n_par)
    fisher = np.empty((n_par, n_par))
    grad_t = np.empty(n_par)
    fisher_t = np.empty((n_par, n_par))
    damped = np.empty((n_par, n_par))
    lu = np.empty((n_par, n_par))
    step = np.empty(n_par)
    trial = np.empty(n_par)
    p = np.empty(n_par)
    scale = np.empty(n_par)
    for row in range(k):
        for a in range(n_par):
            p[a] = start[row, a]
        _clip(p, lower, upper)
        for a in range(n_par):
            scale[a] = max(abs(p[a]), 1.0)
        window = (data[row], valid[row], extra[row])
        scratch = (pixels, jac, work)
        ll = _score(kind, p, first_offset, window, scratch, grad, fisher)
        lam = 1e-3
        done = False
        for _ in range(max_iterations):
            for a in range(n_par):
                for c in range(n_par):
                    damped[a, c] = fisher[a, c]
                damped[a, a] = fisher[a, a] + lam * (fisher[a, a] + 1e-9)
            if not _solve(damped, grad, step, lu):
                step[:] = np.linalg.lstsq(damped, grad.copy())[0]
            for a in range(n_par):
                trial[a] = p[a] + step[a]
            _clip(trial, lower, upper)
            ll_t = _score(kind, trial, first_offset, window, scratch, grad_t, fisher_t)
            better = math.isfinite(ll_t) and ll_t >= ll - 1e-10 * abs(ll)
            gain = ll_t - ll
            if stop == STOP_SPOT:
                n_new = trial[2] if better else p[2]
                small = (abs(trial[0] - p[0]) < 1e-3 and abs(trial[1] - p[1]) < 1e-3
                         and abs(trial[4] - p[4]) < 1e-3 and abs(trial[2] - p[2]) < 1e-3 * max(n_new, 1.0))
            else:
                moved = 0.0
                for a in range(n_par):
                    moved = max(moved, abs(trial[a] - p[a]) / scale[a])
                small = moved < 1e-3
            if better:
                for a in range(n_par):
                    p[a] = trial[a]
                    grad[a] = grad_t[a]
                    for c in range(n_par):
                        fisher[a, c] = fisher_t[a, c]
                ll = ll_t
                lam = max(lam * 0.1, 1e-7)
            else:
                lam *= 10.0
            if (better and (small or gain < 1e-5)) or lam > 1e6:
                done = True
                break
        for a in range(n_par):
            params[row, a] = p[a]
            for c in range(n_par):
                fisher_out[row, a, c] = fisher[a, c]
        loglik[row] = ll
        converged[row] = done


def fit_windows(
    kind: int,
    windows: tuple[np.ndarray, np.ndarray],
    offsets: np.ndarray,
    start: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray],
    extra: np.ndarray | float,
    max_iterations: int,
    stop: int = STOP_RELATIVE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Poisson maximum-likelihood fit of one model to each of K windows (Levenberg-Marquardt).

    Parameters
    ----------
    kind
        :data:`SPOT`, :data:`PAIR` or :data:`SEGMENT`.
    windows
        ``(data, valid)``: ``(K, W*W)`` photons plus the read-noise variance, clipped at 0
        (row-major windows), and ``(K, W*W)`` 1 for pixels inside the image, 0 outside.
    offsets
        ``(W,)`` pixel-centre offsets of the window, consecutive integers (px).
    start
        ``(K, P)`` start parameters (positions relative to the window centre, px).
    bounds
        ``(lower, upper)``, each ``(P,)`` (``-inf``/``inf`` for none): every iterate is clipped into them.
    extra
        Known light added to the model's mean: a number (the read variance) or ``(K, W*W)``
        (read variance plus neighbours).
    max_iterations
        Levenberg-Marquardt iterations at most.
    stop
        :data:`STOP_SPOT` or :data:`STOP_RELATIVE` (see there).

    Returns
    -------
    params, loglik, fisher, converged
        ``(K, P)`` parameters, ``(K,)`` log-likelihood (up to the data's constant), ``(K, P, P)``
        Fisher information at the parameters, ``(K,)`` bool: a stopping rule was met (a
        window whose damping grew past 1e6, no step improving, also counts as converged).
    """
    start = np.ascontiguousarray(start, dtype=np.float64)
    k, n_par = start.shape
    if n_par != _N_PARAMS[kind]:
        raise ValueError(f"model {kind} has {_N_PARAMS[kind]} parameters, start has {n_par}")
    offsets = np.asarray(offsets, dtype=np.float64)
    w = offsets.size
    data = np.ascontiguousarray(windows[0], dtype=np.float64).reshape(k, w * w)
    valid = np.ascontiguousarray(windows[1], dtype=np.float64).reshape(k, w * w)
    if np.ndim(extra) == 0:
        extra = np.full((k, w * w), float(extra))
    extra = np.ascontiguousarray(extra, dtype=np.float64).reshape(k, w * w)
    lower = np.ascontiguousarray(bounds[0], dtype=np.float64)
    upper = np.ascontiguousarray(bounds[1], dtype=np.float64)
    params = np.empty((k, n_par))
    loglik = np.empty(k)
    fisher = np.empty((k, n_par, n_par))
    converged = np.zeros(k, dtype=np.bool_)
    if k:
        with np.errstate(all="ignore"):
            _fit_rows(int(kind), (data, valid, extra, start), float(offsets[0]), (lower, upper),
                      (int(max_iterations), int(stop)), (params, loglik, fisher, converged))
    return params, loglik, fisher, converged
