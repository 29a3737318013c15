"""Sub-pixel localization: pixel-integrated Gaussian fit by Poisson maximum likelihood.

Every detected spot is fitted in a square window around its peak pixel with

    mu_ij = b + N * Ey_i(y, s) * Ex_j(x, s),
    Ex_j(x, s) = 1/2 [erf((j - x + 1/2) / (sqrt2 s)) - erf((j - x - 1/2) / (sqrt2 s))],

the Gaussian PSF integrated over each pixel, with five parameters per spot: position
``(y, x)`` (px), photons ``N``, background ``b`` (photons/pixel) and width ``s`` (px).
The camera's Gaussian read noise (variance ``r^2`` in e-^2) is folded into the Poisson
likelihood by the usual shift (Huang et al. 2013): ``d + r^2`` is treated as Poisson with
mean ``mu + r^2``. The likelihood is maximised by Levenberg-Marquardt steps on the Fisher
information (Fisher scoring), all spots of a frame at once as batched 5 x 5 systems:
there is no Python loop over spots. A spot whose fit fails (position wandering more than
1.5 px from its peak, width pinned at a bound, non-finite values) gets the
background-subtracted centroid instead and ``fit_ok = False``; a fit that is sane but
has not converged within ``max_iterations`` keeps its last iterate, also flagged
``fit_ok = False``. Spots whose windows overlap are refitted once with their
neighbours' fitted light added to the model (a cheap multi-emitter correction). Windows that
cross the image border use only the pixels inside the image.

A second pass over a frame's fits (:func:`resolve_overlaps`, run by
``detect_and_localize``) merges the two localizations of one motion-blurred streak into
one, splits spots that are two close particles and refits the spots next to streaks with
the streak's light modelled; isolated spots whose round fit is not wider than the PSF are
left exactly as fitted here (see the comment block above :func:`resolve_overlaps`).

Localization precision (nm) follows Mortensen et al. 2010 (Nat. Methods 7:377), eq. 6:
``var = s_a^2 / N * F(tau)^-1``, ``F(tau) = 1 + int_0^1 ln(t) / (1 + t / tau) dt``,
``s_a^2 = s^2 + a^2 / 12``, ``tau = 2 pi s_a^2 b / (N a^2)``, with ``a`` the pixel size,
``s`` the fitted width and ``b`` the fitted background plus the read-noise variance.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import integrate
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree
from scipy.special import erf

from ..acquisition import Acquisition
from .detect import TrackingInputError, check_frame

__all__ = [
    "LOCALIZATION_COLUMNS",
    "localize_frame",
    "localize_photons",
    "localize_arrays",
    "mortensen_precision_nm",
    "default_window_half_px",
    "resolve_overlaps",
]

#: Columns of a localization table, in order.
LOCALIZATION_COLUMNS: tuple[str, ...] = (
    "y_px",
    "x_px",
    "photons",
    "background",
    "sigma_px",
    "loc_precision_nm",
    "fit_ok",
)

_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)
#: A fitted position further than this from its peak pixel (px) means the fit went astray.
MAX_SHIFT_PX = 1.5
#: Rounds of refitting crowded spots with their neighbours' light (alternating fits).
NEIGHBOUR_ROUNDS = 6
#: Bounds of the fitted width, as multiples of the PSF sigma.
SIGMA_BOUNDS = (0.5, 5.0)


def default_window_half_px(psf_sigma_px: float) -> int:
    """Half-width (px) of the fit window: ``ceil(3 sigma)``, at least 2 (a 5 x 5 window)."""
    return max(2, int(math.ceil(3.0 * float(psf_sigma_px))))


# --------------------------------------------------------------------- precision
@lru_cache(maxsize=1)
def _mortensen_table() -> tuple[np.ndarray, CubicSpline]:
    """``log10(tau)`` grid and a cubic spline of ``log F`` over it, by adaptive quadrature (computed once)."""
    log_tau = np.linspace(-8.0, 8.0, 321)
    values = []
    for lt in log_tau:
        tau = 10.0**lt
        # int_0^1 ln(t) w(t) dt with w = 1 / (1 + t / tau): quad's algebraic-log weight.
        integral, _ = integrate.quad(lambda t: 1.0 / (1.0 + t / tau), 0.0, 1.0, weight="alg-loga", wvar=(0.0, 0.0))
        values.append(1.0 + integral)
    return log_tau, CubicSpline(log_tau, np.log(np.asarray(values)))


def _mortensen_factor(tau: np.ndarray) -> np.ndarray:
    """``F(tau) = 1 + int_0^1 ln t / (1 + t/tau) dt`` (in (0, 1]); ``1/(4 tau)`` beyond the table."""
    log_tau, log_f = _mortensen_table()
    tau = np.asarray(tau, dtype=np.float64)
    lt = np.log10(np.clip(tau, 1e-300, None))
    out = np.exp(log_f(np.clip(lt, log_tau[0], log_tau[-1])))
    high = lt > log_tau[-1]
    if np.any(high):
        out = np.where(high, 1.0 / (4.0 * np.maximum(tau, 1e-300)), out)
    return out


def mortensen_precision_nm(
    photons: Any,
    background_photons: Any,
    sigma_nm: Any,
    pixel_size_nm: float,
    read_noise_e: float = 0.0,
) -> np.ndarray:
    """Localization precision (standard deviation per axis, nm) of an MLE Gaussian fit.

    Mortensen et al. 2010, eq. 6 (no EM gain, so no excess-noise factor).

    Parameters
    ----------
    photons
        Signal photons of the spot ``N`` (array or scalar).
    background_photons
        Background photons per pixel ``b``; the read-noise variance is added to it.
    sigma_nm
        PSF standard deviation ``s`` (nm).
    pixel_size_nm
        Pixel size ``a`` (nm).
    read_noise_e
        Camera read noise (e- rms); its variance acts as extra background.

    Returns
    -------
    np.ndarray
        Precision in nm (same shape as the broadcast inputs); NaN where ``N <= 0``.
    """
    n = np.asarray(photons, dtype=np.float64)
    b = np.maximum(np.asarray(background_photons, dtype=np.float64), 0.0) + float(read_noise_e) ** 2
    a = float(pixel_size_nm)
    s_a2 = np.asarray(sigma_nm, dtype=np.float64) ** 2 + a * a / 12.0
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = 2.0 * math.pi * s_a2 * b / (n * a * a)
        var = s_a2 / n / _mortensen_factor(np.where(n > 0, tau, 1.0))
    return np.where(n > 0, np.sqrt(var), np.nan)


# --------------------------------------------------------------------- the model
def _psf_1d(centre: np.ndarray, sigma: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-integrated 1-D Gaussian and its derivatives.

    ``centre``, ``sigma``: ``(K,)``; ``offsets``: ``(W,)`` pixel centres. Returns
    ``E, dE/dcentre, dE/dsigma``, each ``(K, W)``.
    """
    inv = 1.0 / (_SQRT2 * sigma)[:, None]
    upper = (offsets[None, :] - centre[:, None] + 0.5) * inv
    lower = (offsets[None, :] - centre[:, None] - 0.5) * inv
    g_up = np.exp(-upper * upper)
    g_lo = np.exp(-lower * lower)
    value = 0.5 * (erf(upper) - erf(lower))
    d_centre = -(g_up - g_lo) * inv / _SQRT_PI
    d_sigma = -(upper * g_up - lower * g_lo) / (sigma[:, None] * _SQRT_PI)
    return value, d_centre, d_sigma


def _model_and_jacobian(params: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected photons ``(K, W*W)`` and Jacobian ``(K, W*W, 5)`` for params ``(K, 5)`` = y, x, N, b, s."""
    y, x, n, b, s = params.T
    ey, dey, dsy = _psf_1d(y, s, offsets)
    ex, dex, dsx = _psf_1d(x, s, offsets)
    k, w = ey.shape
    shape_2d = ey[:, :, None] * ex[:, None, :]
    model = b[:, None, None] + n[:, None, None] * shape_2d
    jac = np.empty((k, w, w, 5))
    jac[..., 0] = n[:, None, None] * dey[:, :, None] * ex[:, None, :]
    jac[..., 1] = n[:, None, None] * ey[:, :, None] * dex[:, None, :]
    jac[..., 2] = shape_2d
    jac[..., 3] = 1.0
    jac[..., 4] = n[:, None, None] * (dsy[:, :, None] * ex[:, None, :] + ey[:, :, None] * dsx[:, None, :])
    return model.reshape(k, w * w), jac.reshape(k, w * w, 5)


def _score(params: np.ndarray, offsets: np.ndarray, data: np.ndarray, valid: np.ndarray, extra: Any):
    """Log-likelihood ``(K,)``, gradient ``(K, 5)`` and Fisher information ``(K, 5, 5)``.

    ``extra`` (a number or ``(K, W*W)``) is added to the model's mean: the read-noise
    variance, plus the light of neighbouring spots when they are known.
    """
    model, jac = _model_and_jacobian(params, offsets)
    mu = model + extra
    loglik = np.sum(valid * (data * np.log(mu) - mu), axis=1)
    weight = valid / mu
    residual = (data - mu) * weight
    grad = np.einsum("kp,kpi->ki", residual, jac)
    fisher = np.matmul(jac.transpose(0, 2, 1), jac * weight[:, :, None])
    return loglik, grad, fisher


def _clip_params(params: np.ndarray, half: float, sigma_lo: float, sigma_hi: float, read_var: float) -> np.ndarray:
    params[:, 0:2] = np.clip(params[:, 0:2], -half, half)
    params[:, 2] = np.maximum(params[:, 2], 1e-3)
    params[:, 3] = np.maximum(params[:, 3], 1e-3 - read_var)
    params[:, 4] = np.clip(params[:, 4], sigma_lo, sigma_hi)
    return params


def _fit_spots(
    data: np.ndarray,
    valid: np.ndarray,
    offsets: np.ndarray,
    start: np.ndarray,
    read_var: float,
    sigma_lo: float,
    sigma_hi: float,
    max_iterations: int,
    extra: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched Levenberg-Marquardt maximisation of the Poisson likelihood.

    ``data`` ``(K, W*W)`` photons + read variance (clipped at 0), ``valid`` ``(K, W*W)``
    float mask, ``start`` ``(K, 5)``, ``extra`` ``(K, W*W)`` known light added to the
    model besides the read-noise variance (neighbours). Returns ``(params (K, 5), converged (K,))``.
    """
    offset_all = read_var if extra is None else read_var + extra
    k = len(start)
    half = float(offsets[-1])
    params = _clip_params(start.copy(), half, sigma_lo, sigma_hi, read_var)
    loglik, grad, fisher = _score(params, offsets, data, valid, offset_all)
    lam = np.full(k, 1e-3)
    converged = np.zeros(k, dtype=bool)
    active = np.arange(k)
    eye = np.eye(5)
    for _ in range(max_iterations):
        if active.size == 0:
            break
        f_act = fisher[active]
        damped = f_act + lam[active, None, None] * (f_act * eye + 1e-9 * eye)
        try:
            step = np.linalg.solve(damped, grad[active][:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(m, g, rcond=None)[0] for m, g in zip(damped, grad[active])])
        trial = _clip_params(params[active] + step, half, sigma_lo, sigma_hi, read_var)
        off = offset_all if extra is None else offset_all[active]
        ll_t, g_t, f_t = _score(trial, offsets, data[active], valid[active], off)
        better = np.isfinite(ll_t) & (ll_t >= loglik[active] - 1e-10 * np.abs(loglik[active]))
        gain = ll_t - loglik[active]
        moved = trial - params[active]
        idx_ok = active[better]
        params[idx_ok] = trial[better]
        loglik[idx_ok] = ll_t[better]
        grad[idx_ok] = g_t[better]
        fisher[idx_ok] = f_t[better]
        lam[idx_ok] = np.maximum(lam[idx_ok] * 0.1, 1e-7)
        lam[active[~better]] *= 10.0
        # Fisher scoring contracts linearly in the (photons, width) direction; stop when an
        # accepted step moves the position and width by < 1e-3 px (0.1 nm at 100 nm pixels,
        # 1 % of the best precision) and the photons by < 0.1 %, or gains < 1e-5 in
        # log-likelihood, or when no step can improve any more.
        small = (
            (np.abs(moved[:, 0]) < 1e-3)
            & (np.abs(moved[:, 1]) < 1e-3)
            & (np.abs(moved[:, 4]) < 1e-3)
            & (np.abs(moved[:, 2]) < 1e-3 * np.maximum(params[active, 2], 1.0))
        )
        done = (better & (small | (gain < 1e-5))) | (lam[active] > 1e6)
        converged[active[done]] = True
        active = active[~done]
    return params, converged


# ------------------------------------------------------------------ public API
def _windows(frame: np.ndarray, peaks: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gather ``(K, W, W)`` windows around the peaks and the mask of pixels inside the image."""
    height, width = frame.shape
    offsets = np.arange(-half, half + 1)
    rows = peaks[:, 0:1] + offsets[None, :]
    cols = peaks[:, 1:2] + offsets[None, :]
    valid = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    rows = np.clip(rows, 0, height - 1)
    cols = np.clip(cols, 0, width - 1)
    windows = frame[rows[:, :, None], cols[:, None, :]].astype(np.float64)
    return windows, valid, offsets.astype(np.float64)


def _ring_median(windows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Median of the valid pixels on the outer ring of each window ``(K,)``."""
    ring = np.zeros(windows.shape[1:], dtype=bool)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    values = np.where(valid[:, ring], windows[:, ring], np.nan)
    with np.errstate(all="ignore"):
        med = np.nanmedian(values, axis=1) if values.size else np.zeros(len(windows))
    # A window whose ring is entirely outside the image cannot occur for a peak inside it,
    # but guard anyway: fall back on the smallest valid pixel.
    bad = ~np.isfinite(med)
    if np.any(bad):
        med[bad] = np.where(valid[bad], windows[bad], np.inf).reshape(bad.sum(), -1).min(axis=1)
    return med


def localize_arrays(
    frame_photons: np.ndarray,
    peaks_yx: np.ndarray,
    acquisition: Acquisition,
    *,
    psf_sigma_px: float | None = None,
    window_half_px: int | None = None,
    max_iterations: int = 50,
    neighbours: bool = True,
) -> dict[str, np.ndarray]:
    """Localize spots in a frame already in photo-electrons; returns a dict of ``(K,)`` arrays.

    Keys are :data:`LOCALIZATION_COLUMNS`. See :func:`localize_frame` for the meaning.
    """
    peaks = np.asarray(peaks_yx)
    if peaks.size == 0:
        peaks = np.zeros((0, 2), dtype=np.int64)
    if peaks.ndim != 2 or peaks.shape[1] != 2:
        raise TrackingInputError(f"peaks_yx must have shape (K, 2), got {peaks.shape}")
    peaks = np.rint(peaks).astype(np.int64)
    frame = np.asarray(frame_photons)
    if frame.ndim != 2:
        raise TrackingInputError(f"a frame must be a 2-D (Y, X) array, got shape {frame.shape}")
    height, width = frame.shape
    if len(peaks) and (peaks.min(axis=0)[0] < 0 or peaks.min(axis=0)[1] < 0 or peaks[:, 0].max() >= height or peaks[:, 1].max() >= width):
        raise TrackingInputError("every peak must lie inside the frame")
    sigma_psf = float(acquisition.psf_sigma_px if psf_sigma_px is None else psf_sigma_px)
    half = int(window_half_px) if window_half_px is not None else default_window_half_px(sigma_psf)
    k = len(peaks)
    empty_f = np.zeros(0, dtype=np.float64)
    if k == 0:
        return {
            "y_px": empty_f, "x_px": empty_f.copy(), "photons": empty_f.copy(), "background": empty_f.copy(),
            "sigma_px": empty_f.copy(), "loc_precision_nm": empty_f.copy(), "fit_ok": np.zeros(0, dtype=bool),
        }
    read_var = float(acquisition.read_noise_e) ** 2
    windows, valid, offsets = _windows(frame, peaks, half)
    background0 = _ring_median(windows, valid)

    # Start: centroid of the 3 x 3 core above the ring background, photons from the window sum.
    excess = np.where(valid, windows - background0[:, None, None], 0.0)
    core = np.clip(excess[:, half - 1 : half + 2, half - 1 : half + 2], 0.0, None)
    core_sum = core.sum(axis=(1, 2))
    safe = np.where(core_sum > 0, core_sum, 1.0)
    dy0 = np.where(core_sum > 0, (core.sum(axis=2) * np.array([-1.0, 0.0, 1.0])).sum(axis=1) / safe, 0.0)
    dx0 = np.where(core_sum > 0, (core.sum(axis=1) * np.array([-1.0, 0.0, 1.0])).sum(axis=1) / safe, 0.0)
    photons0 = np.maximum(excess.sum(axis=(1, 2)), 1.0)
    start = np.column_stack([dy0, dx0, photons0, background0, np.full(k, sigma_psf)])

    data = np.clip(windows + read_var, 0.0, None).reshape(k, -1)
    mask = valid.reshape(k, -1).astype(np.float64)
    sigma_lo, sigma_hi = SIGMA_BOUNDS[0] * sigma_psf, SIGMA_BOUNDS[1] * sigma_psf
    with np.errstate(all="ignore"):
        params, converged = _fit_spots(data, mask, offsets, start, read_var, sigma_lo, sigma_hi, int(max_iterations))
        if neighbours and k > 1:
            # Alternating fits: each crowded spot is refitted with its neighbours' current
            # fitted light in the model, until positions settle (a block Gauss-Seidel
            # version of a joint multi-emitter fit).
            for _ in range(NEIGHBOUR_ROUNDS):
                crowded, light = _neighbour_light(peaks, params, converged, offsets, half)
                if crowded.size == 0:
                    break
                before = params[crowded, :2].copy()
                # restart from the peak-based start: a first fit may have slid onto its neighbour
                params[crowded], converged[crowded] = _fit_spots(
                    data[crowded], mask[crowded], offsets, start[crowded], read_var, sigma_lo, sigma_hi,
                    int(max_iterations), extra=light,
                )
                if np.max(np.abs(params[crowded, :2] - before)) < 0.01:
                    break

    sane = (
        np.all(np.isfinite(params), axis=1)
        & (np.abs(params[:, 0]) <= MAX_SHIFT_PX)
        & (np.abs(params[:, 1]) <= MAX_SHIFT_PX)
        & (params[:, 2] > 1e-3)
        & (params[:, 4] > sigma_lo * 1.001)
        & (params[:, 4] < sigma_hi * 0.999)
    )
    ok = converged & sane
    # Not converged but sane (LM still creeping after max_iterations): keep the last
    # iterate, which beats a centroid, but flag it. Insane fits get the centroid.
    if not np.all(sane):
        params[~sane] = _centroid_fallback(excess[~sane], offsets, sigma_psf, background0[~sane])

    sigma_nm = acquisition.px_to_nm(params[:, 4])
    precision = mortensen_precision_nm(params[:, 2], params[:, 3], sigma_nm, acquisition.pixel_size_nm, acquisition.read_noise_e)
    return {
        "y_px": peaks[:, 0] + params[:, 0],
        "x_px": peaks[:, 1] + params[:, 1],
        "photons": params[:, 2],
        "background": params[:, 3],
        "sigma_px": params[:, 4],
        "loc_precision_nm": precision,
        "fit_ok": ok,
    }


def _neighbour_light(
    peaks: np.ndarray, params: np.ndarray, converged: np.ndarray, offsets: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """Light of neighbouring spots inside each crowded spot's window, from their first fits.

    Returns ``(crowded, light)``: indices of the spots with another fitted spot whose
    centre is within ``3 * half`` px of their peak, and ``(len(crowded), W*W)`` expected
    photons of those neighbours over each crowded spot's window.
    """
    # a fit more than 1 px from its own peak pixel has been captured by something else
    # (an isolated spot's peak pixel is within ~0.7 px of it): not a usable neighbour
    usable = converged & np.all(np.isfinite(params), axis=1) & np.all(np.abs(params[:, :2]) <= 1.0, axis=1)
    tree = cKDTree(peaks.astype(np.float64))
    pairs = tree.query_pairs(3.0 * half, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, offsets.size**2))
    target = np.concatenate([pairs[:, 0], pairs[:, 1]])
    source = np.concatenate([pairs[:, 1], pairs[:, 0]])
    keep = usable[source]
    target, source = target[keep], source[keep]
    if target.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, offsets.size**2))
    centre = peaks[source] + params[source, :2] - peaks[target]  # neighbour in the target's window frame
    sigma = params[source, 4]
    ey = _psf_1d(centre[:, 0], sigma, offsets)[0]
    ex = _psf_1d(centre[:, 1], sigma, offsets)[0]
    contribution = params[source, 2, None, None] * ey[:, :, None] * ex[:, None, :]
    crowded, slot = np.unique(target, return_inverse=True)
    light = np.zeros((crowded.size, offsets.size, offsets.size))
    np.add.at(light, slot, contribution)
    return crowded, light.reshape(crowded.size, -1)


def _centroid_fallback(excess: np.ndarray, offsets: np.ndarray, sigma_psf: float, background: np.ndarray) -> np.ndarray:
    """Background-subtracted centroid ``(K, 5)`` params (dy, dx, N, b, s) that never fails."""
    weights = np.clip(np.nan_to_num(excess, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
    total = weights.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    dy = np.where(total > 0, (weights.sum(axis=2) * offsets).sum(axis=1) / safe, 0.0)
    dx = np.where(total > 0, (weights.sum(axis=1) * offsets).sum(axis=1) / safe, 0.0)
    photons = np.maximum(np.nan_to_num(excess).sum(axis=(1, 2)), 0.0)
    return np.column_stack([dy, dx, photons, np.nan_to_num(background), np.full(len(excess), sigma_psf)])


def localize_photons(
    frame_photons: np.ndarray,
    peaks_yx: np.ndarray,
    acquisition: Acquisition,
    **options: Any,
) -> pd.DataFrame:
    """As :func:`localize_frame` but for a frame already converted to photo-electrons."""
    return pd.DataFrame(localize_arrays(frame_photons, peaks_yx, acquisition, **options), columns=list(LOCALIZATION_COLUMNS))


def localize_frame(
    frame_adu: np.ndarray,
    peaks_yx: np.ndarray,
    acquisition: Acquisition,
    *,
    psf_sigma_px: float | None = None,
    window_half_px: int | None = None,
    max_iterations: int = 50,
    neighbours: bool = True,
) -> pd.DataFrame:
    """Fit a pixel-integrated Gaussian to every detected spot of one camera frame.

    Parameters
    ----------
    frame_adu
        ``(Y, X)`` camera counts (ADU); converted to photo-electrons with
        ``acquisition.adu_to_photons``. NaN/inf pixels raise
        :class:`~napari_spt_diffusion.tracking.detect.TrackingInputError`.
    peaks_yx
        ``(K, 2)`` integer peak pixels ``(y, x)`` inside the frame (from
        :func:`~napari_spt_diffusion.tracking.detect.detect_frame`).
    acquisition
        Camera conversion, read noise, pixel size and PSF width.
    psf_sigma_px
        PSF sigma (px) for the start value and the width bounds (``0.5 - 5 x``);
        ``None``: from the acquisition.
    window_half_px
        Half-width of the square fit window (px); ``None``: ``ceil(3 sigma)``, >= 2.
    max_iterations
        Levenberg-Marquardt iterations at most.
    neighbours
        Refit spots that have another spot within ``3 * window_half_px`` with that
        neighbour's fitted light included in the model.

    Returns
    -------
    pandas.DataFrame
        One row per peak, in the order given: ``y_px, x_px`` (sub-pixel position,
        pixel centres at integers), ``photons`` (signal photo-electrons),
        ``background`` (photo-electrons per pixel), ``sigma_px`` (fitted width),
        ``loc_precision_nm`` (Mortensen et al. 2010, per axis), ``fit_ok`` (False:
        the fit failed and the row holds the background-subtracted centroid with
        the PSF width, or it did not converge and holds the last iterate).
    """
    frame = check_frame(frame_adu)
    return localize_photons(
        acquisition.adu_to_photons(frame), peaks_yx, acquisition,
        psf_sigma_px=psf_sigma_px, window_half_px=window_half_px, max_iterations=max_iterations,
        neighbours=neighbours,
    )


# ----------------------------------------------------- overlapping and blurred spots
# A second pass over the fits of one frame (``resolve_overlaps``). The single-spot fit
# above explains a round spot; three things break it in crowded or fast movies: two
# particles closer than ~3 px give one DoG maximum, hence one fit (wide, between them,
# often more than 1 px from both); a fast particle's motion-blurred streak is not round, so
# its light is misplaced when it is used as a neighbour's known light; and a long streak
# (D = 3-6 um^2/s at 10 ms: a Brownian path several px long) has two DoG maxima, hence two
# localizations of one particle a few px apart, each with about half its light and
# neither at its position -- the main cause of broken and swapped tracks end to end.
#
# Design: a model comparison on the spots that can need it, rather than a residual
# re-detection.
#
# Merging first (``_merge_streak_pairs``): every two spots closer than
# ``MERGE_MAX_DISTANCE_PX`` are refitted together, in a window around them with the other
# spots' light known, as two round spots (8 parameters, started on the two fits) and as one
# streak (7 parameters, started between them). They are one particle's streak, merged into
# one localization at the streak's centre with the streak's photons, when the streak runs
# through both (each within ``MERGE_MAX_OFF_SEGMENT_PX`` of the segment) and
#   * with a brightness reference: the pair holds at most ``SINGLE_PARTICLE_LIGHT_RATIO`` x
#     the typical spot photons (one particle's light, not two: on the binding movie the
#     lobes of one streak hold 0.90-1.10 x, two particles 3-6 px apart 1.77-2.08 x, 5th-95th
#     percentiles) and the two-spot model beats the streak by at most
#     ``MERGE_MAX_PAIR_GAIN`` (a Brownian path is only roughly a uniform segment, so the
#     shape test is loose and the light decides); or
#   * without one: the streak explains the pixels at least as well as two spots.
# A spot joins at most one streak (the most streak-like pairs first). The merged row keeps
# the brighter lobe's index; the dimmer lobe's row is removed.
#
# Splitting then: every spot (not merged) whose round fit is wider than
# ``SPLIT_WIDTH_GATE`` x the PSF (pairs and streaks both widen it; a sharp spot is never
# touched) is refitted, in a window one pixel larger and with the other spots' light known,
# with a round spot (5 parameters), a streak (a uniform segment of light, 7 parameters) and
# two round spots (8 parameters, started on the fit and on the largest 3 x 3 residual of the
# round model). It is split
# into two emitters when the two emitters are >= ``SPLIT_MIN_SEPARATION_PX`` apart, each is
# significant on its own (``SPLIT_MIN_EMITTER_SNR``), neither lands on another detected
# spot, and either
#   * shape alone: the two-spot model beats *both* one-spot models by
#     ``SPLIT_MIN_LOGLIK_GAIN`` -- testing against the streak model is what keeps fast,
#     blurred particles whole, since a streak is two-lobed as much as a pair is; or
#   * shape plus light: the spot holds >= ``SPLIT_BRIGHTNESS_RATIO`` x the photons of the
#     frame's typical single spot, is not round (gain over the round model >
#     ``SPLIT_MIN_GAIN_BRIGHT``) and both emitters are sharp (``SPLIT_MAX_PAIR_WIDTH``).
#     Below ~2.5 px a pair and a streak have nearly the same shape (gain of the two-spot
#     over the streak model: median 2 at 2 px, 8 at 2.5 px, 24 at 3 px, against a 99th
#     percentile of 28 for D = 3 um^2/s streaks, all at 1,000 photons), and only the
#     doubled light tells them apart.
# With a brightness reference, a spot with no other spot within ``MERGE_MAX_DISTANCE_PX``
# that holds at most ``SINGLE_PARTICLE_LIGHT_RATIO`` x the typical photons is never split,
# whatever its shape: such shape-only splits were one streak cut in two in 20 of 20 cases
# (field and binding movies, 120 frames each, measured without the merge); next to another
# spot, where the light is shared out between fits, 3 of 5 were, and the two particles of a
# close pair can hold less than that in their fit, so those are left to the shape rule.
# Spots next to a streak (merged or tested) or a split pair are then refitted with that
# neighbour's light from its better model (the segment, or the two emitters). Spots that
# are not wide, not merged and have no such neighbour come back bit for bit as
# ``localize_arrays`` fitted them, so isolated spots -- those the training samples are made
# of -- are unchanged. The brightness reference ("typical spot photons") is the median
# photons of the frame's round spots with no other spot within ``MERGE_MAX_DISTANCE_PX``
# (:func:`_reference_photons`). Limits: a
# single particle twice as bright as the frame's typical one and blurred can be split; a
# pair of fast (blurred) particles closer than ~3 px is only split on shape evidence;
# frames with fewer than ``SPLIT_MIN_SPOTS_FOR_REFERENCE`` sharp spots have no brightness
# reference and use the shape rules only. Two particles 3-7 px apart that together hold
# no more than 1.4 x the typical light (e.g. two dim ones) and look streak-like are merged;
# a streak whose dim tail lies beyond the fitted segment, and streaks with three maxima,
# are only partly merged (pairs only).

#: A round fit wider than this multiple of the PSF sigma is tested for two emitters.
SPLIT_WIDTH_GATE = 1.1
#: Shape evidence alone: minimum log-likelihood gain of the two-spot model over the
#: better of the round and streak models. A motion-blurred streak (D = 3 um^2/s, 10 ms
#: frames) exceeds 30 in about 1 % of frames; two equal spots 3.5 px apart nearly always do.
SPLIT_MIN_LOGLIK_GAIN = 30.0
#: Shape plus brightness: a spot carrying at least this multiple of the frame's typical
#: spot photons (median of the untested, round fits) is split when the two-spot model beats the
#: round one by ``SPLIT_MIN_GAIN_BRIGHT`` (it is not round) -- below ~2.5 px two spots and a
#: streak have nearly the same shape, and only the doubled light tells them apart.
SPLIT_BRIGHTNESS_RATIO = 1.6
SPLIT_MIN_GAIN_BRIGHT = 10.0
#: ... and when the two spots are sharp (fitted width <= this multiple of the PSF sigma):
#: the halves of a long streak (D > 3 um^2/s) are themselves blurred, two particles are not.
SPLIT_MAX_PAIR_WIDTH = 1.2
#: Frames with fewer spots than this use no brightness reference (shape evidence only).
SPLIT_MIN_SPOTS_FOR_REFERENCE = 8
#: The two emitters of a split must be at least this far apart (px).
SPLIT_MIN_SEPARATION_PX = 1.0
#: Each emitter's photons must stand this many standard deviations above the background
#: light under its PSF: ``N / sqrt(N + 4 pi s^2 (b + r^2)) >= SPLIT_MIN_EMITTER_SNR``.
SPLIT_MIN_EMITTER_SNR = 5.0
#: Points along the segment of the streak model (spaced <= 0.75 px for streaks <= 3 px).
SEGMENT_POINTS = 5
#: Iterations of the model-comparison fits: the log-likelihoods are compared against
#: margins of 10 - 30, so they need not be converged to 1e-5; accepted splits are then
#: polished with the full ``max_iterations``.
TEST_ITERATIONS = 12
_SEGMENT_T = np.linspace(-0.5, 0.5, SEGMENT_POINTS)

#: Two spots closer than this (px) are tested as the two lobes of one streak (the lobes of
#: D = 3-6 um^2/s streaks at 10 ms frames and 100 nm pixels lie 3-6 px apart).
MERGE_MAX_DISTANCE_PX = 7.0
#: Light of at most this multiple of the frame's typical spot photons is one particle's
#: (the geometric middle of one and two particles' light): two spots holding it together
#: are merged (with the shape test below), one spot holding it is never split.
SINGLE_PARTICLE_LIGHT_RATIO = 1.4
#: ... and the two-spot model beats the streak model by at most this log-likelihood margin
#: (a Brownian path is not a uniform segment: on the binding movie the lobes of one
#: particle's streak gave a median margin of 16, 95th percentile 51; two particles 3-6 px
#: apart a median of 71).
MERGE_MAX_PAIR_GAIN = 60.0
#: Without a brightness reference (fewer than SPLIT_MIN_SPOTS_FOR_REFERENCE sharp spots),
#: merge only when the streak (7 parameters) explains the pixels at least as well as two
#: spots (8 parameters).
MERGE_SHAPE_ONLY_MAX_GAIN = 0.0
#: Both spots must lie within this distance (px) of the fitted streak's segment.
MERGE_MAX_OFF_SEGMENT_PX = 1.5
#: The streak fit starts with this multiple of the lobe-to-lobe vector as its segment.
MERGE_SEGMENT_START_STRETCH = 1.4


def _pair_model_and_jacobian(params: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two round spots sharing background and width.

    ``params`` ``(K, 8)`` = y1, x1, N1, y2, x2, N2, b, s (px, photons, photons/pixel, px).
    Returns the expected photons ``(K, W*W)`` and the Jacobian ``(K, W*W, 8)``.
    """
    y1, x1, n1, y2, x2, n2, b, s = params.T
    ey1, dy1, sy1 = _psf_1d(y1, s, offsets)
    ex1, dx1, sx1 = _psf_1d(x1, s, offsets)
    ey2, dy2, sy2 = _psf_1d(y2, s, offsets)
    ex2, dx2, sx2 = _psf_1d(x2, s, offsets)
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


def _segment_model_and_jacobian(params: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    ey, dey, dsy = (a.reshape(k, m, -1) for a in _psf_1d(ys, ss, offsets))
    ex, dex, dsx = (a.reshape(k, m, -1) for a in _psf_1d(xs, ss, offsets))
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


def _fit_model(
    model_fn: Any,
    clip_fn: Any,
    data: np.ndarray,
    valid: np.ndarray,
    start: np.ndarray,
    extra: np.ndarray,
    max_iterations: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched Levenberg-Marquardt maximisation of the Poisson likelihood for any model.

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
        params[idx_ok], loglik[idx_ok], grad[idx_ok], fisher[idx_ok] = trial[better], ll_t[better], g_t[better], f_t[better]
        lam[idx_ok] = np.maximum(lam[idx_ok] * 0.1, 1e-7)
        lam[active[~better]] *= 10.0
        done = (better & ((moved < 1e-3) | (gain < 1e-5))) | (lam[active] > 1e6)
        converged[active[done]] = True
        active = active[~done]
    return params, loglik, fisher, converged


def _light(centres: np.ndarray, source_yx: np.ndarray, source_n: np.ndarray, source_s: np.ndarray,
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
        ey = _psf_1d(rel[:, 0], source_s, offsets)[0]
        ex = _psf_1d(rel[:, 1], source_s, offsets)[0]
        np.add.at(light, target, source_n[:, None, None] * ey[:, :, None] * ex[:, None, :])
    return light.reshape(n_targets, w * w)


def _emitters(positions: np.ndarray, photons: np.ndarray, sigma: np.ndarray, kind: np.ndarray,
              segment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Point sources ``(yx, N, s, owner)`` that reproduce every spot's light with its best model.

    Round spots are one point; streaks (``kind == 1``, ``segment`` ``(K, 2)`` vectors) are
    ``SEGMENT_POINTS`` points sharing the photons. ``owner`` maps each point to its spot.
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
    return np.concatenate(yx), np.concatenate(n), np.concatenate(s), np.concatenate(owner)


def _neighbour_light_of(centres: np.ndarray, spot_index: np.ndarray, yx: np.ndarray, n: np.ndarray,
                        s: np.ndarray, owner: np.ndarray, offsets: np.ndarray, reach: float,
                        second_index: np.ndarray | None = None) -> np.ndarray:
    """Light ``(len(centres), W*W)`` of all emitters not owned by ``spot_index[i]`` (nor by
    ``second_index[i]`` when given) within ``reach`` px of window i."""
    if len(yx) == 0 or len(centres) == 0:
        return np.zeros((len(centres), offsets.size**2))
    hits = cKDTree(yx).query_ball_point(centres.astype(np.float64), reach)
    target = np.fromiter((i for i, h in enumerate(hits) for _ in h), dtype=np.int64)
    source = np.fromiter((j for h in hits for j in h), dtype=np.int64)
    keep = owner[source] != spot_index[target]
    if second_index is not None:
        keep &= owner[source] != second_index[target]
    target, source = target[keep], source[keep]
    return _light(centres, yx[source], n[source], s[source], target, offsets, len(centres))


def _emitter_snr(photons: np.ndarray, background: np.ndarray, sigma: np.ndarray, read_var: float) -> np.ndarray:
    """Significance of a spot's photons over the background light under its PSF (see SPLIT_MIN_EMITTER_SNR)."""
    noise = photons + 4.0 * math.pi * sigma**2 * (np.maximum(background, 0.0) + read_var)
    return photons / np.sqrt(np.maximum(noise, 1e-12))


def resolve_overlaps(
    frame_photons: np.ndarray,
    fitted: dict[str, np.ndarray],
    acquisition: Acquisition,
    *,
    psf_sigma_px: float | None = None,
    window_half_px: int | None = None,
    max_iterations: int = 50,
    min_loglik_gain: float = SPLIT_MIN_LOGLIK_GAIN,
    merge_streaks: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Second pass over one frame's fits: merge streak halves, split two-emitter spots, refit neighbours.

    See the comment block above this function for the method. Spots whose round fit is
    not wider than ``SPLIT_WIDTH_GATE`` x the PSF, that are not merged with a neighbour and
    that have no streak or split spot within ``3 * window_half_px`` px come back unchanged
    (bit for bit).

    Parameters
    ----------
    frame_photons
        ``(Y, X)`` frame in photo-electrons.
    fitted
        Output of :func:`localize_arrays` for this frame: dict of ``(K,)`` arrays.
    acquisition, psf_sigma_px, window_half_px, max_iterations
        As for :func:`localize_arrays`.
    min_loglik_gain
        Log-likelihood margin of the two-spot model over the better one-spot model.
    merge_streaks
        Test pairs of spots for being the two lobes of one motion-blurred streak and
        merge them (see :func:`_merge_streak_pairs`); ``False`` gives the pass without it.

    Returns
    -------
    (table, parent)
        ``table``: dict of ``(K - M + S,)`` arrays with the :data:`LOCALIZATION_COLUMNS`
        keys. Each of the ``M`` merged pairs keeps the row of its brighter spot, which now
        holds the streak: its centre, its photons, the width of a round spot with the same
        spread (``sqrt(s^2 + L^2 / 12)``, ``L`` the streak length) and the Mortensen
        precision of such a spot; the dimmer spot's row is removed. Each of the ``S``
        split spots keeps its row (now its first emitter) and its second emitter is
        appended at the end; a split emitter's ``loc_precision_nm`` comes from the inverse
        Fisher information of the joint two-spot fit. ``parent``: ``(K - M + S,)`` index of
        the input row each output row comes from (a merged row: its brighter spot's).
    """
    frame = np.asarray(frame_photons, dtype=np.float64)
    k = len(fitted["y_px"])
    parent = np.arange(k)
    sigma_psf = float(acquisition.psf_sigma_px if psf_sigma_px is None else psf_sigma_px)
    half = int(window_half_px) if window_half_px is not None else default_window_half_px(sigma_psf)
    out = {c: np.array(fitted[c], copy=True) for c in LOCALIZATION_COLUMNS}
    if k == 0:
        return out, parent
    positions = np.column_stack([out["y_px"], out["x_px"]])
    finite = np.all(np.isfinite(positions), axis=1) & np.isfinite(out["sigma_px"]) & np.isfinite(out["photons"])
    wide = finite & (out["sigma_px"] > SPLIT_WIDTH_GATE * sigma_psf)
    read_var = float(acquisition.read_noise_e) ** 2
    sigma_lo, sigma_hi = SIGMA_BOUNDS[0] * sigma_psf, SIGMA_BOUNDS[1] * sigma_psf
    reference = _reference_photons(positions, out["photons"], finite & out["fit_ok"] & ~wide)
    # 0 round, 1 streak (a split pair is two round emitters); streak vectors (px); the PSF
    # width of a merged streak's light (NaN: use the row's sigma_px)
    kind = np.zeros(k, dtype=np.int64)
    segment = np.zeros((k, 2))
    streak_width = np.full(k, np.nan)
    merged_any = False
    if merge_streaks and finite.sum() >= 2:
        with np.errstate(all="ignore"):
            merges = _merge_streak_pairs(frame, out, finite, half, sigma_psf, sigma_lo, sigma_hi, read_var,
                                         max_iterations, reference)
        if len(merges[0]):
            merged_any = True
            out, parent, kind, segment, streak_width = _apply_merges(out, parent, kind, segment, streak_width,
                                                                     *merges, acquisition)
            k = len(out["y_px"])
            positions = np.column_stack([out["y_px"], out["x_px"]])
            finite = np.all(np.isfinite(positions), axis=1) & np.isfinite(out["sigma_px"]) & np.isfinite(out["photons"])
    tested = np.flatnonzero(finite & (out["sigma_px"] > SPLIT_WIDTH_GATE * sigma_psf) & (kind == 0))
    if tested.size == 0 and not merged_any:
        return out, parent
    if tested.size:
        out, parent, kind, segment, streak_width = _split_pairs(
            frame, out, parent, kind, segment, streak_width, positions, finite, tested, half, sigma_psf, sigma_lo,
            sigma_hi, read_var, max_iterations, reference, min_loglik_gain, acquisition)
    with np.errstate(all="ignore"):
        out = _refit_neighbours(frame, out, kind, segment, streak_width, parent, half, sigma_psf, sigma_lo, sigma_hi,
                                read_var, max_iterations, acquisition)
    return out, parent


def _merge_streak_pairs(frame, table, finite, half, sigma_psf, sigma_lo, sigma_hi, read_var, max_iterations,
                        reference):
    """Find pairs of spots that are the two lobes of one streak (see the comment block above
    :func:`resolve_overlaps`).

    ``table``: the frame's fits (dict of ``(K,)`` arrays), ``finite`` ``(K,)`` usable rows,
    ``half`` the fit window's half-width (px), ``reference`` the typical spot photons or None.
    Returns ``(keep (M,), drop (M,), p_seg (M, 7), converged (M,))``: the row kept (the
    brighter spot) and the row removed for each merged pair, and the streak fit with its
    centre in absolute pixels (y, x, N, b, s, vy, vx).
    """
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 7)), np.zeros(0, dtype=bool))
    rows = np.flatnonzero(finite)
    positions = np.column_stack([table["y_px"], table["x_px"]])
    pairs = cKDTree(positions[rows]).query_pairs(MERGE_MAX_DISTANCE_PX, output_type="ndarray")
    if len(pairs) == 0:
        return empty
    # every close pair is fitted: the round fits' photons cannot pre-select, since two fits
    # of one streak's overlapping lobes both count the light they share
    first, second = rows[pairs[:, 0]], rows[pairs[:, 1]]
    photons = table["photons"]
    m = len(first)
    height, width = frame.shape
    whalf = half + int(math.ceil(MERGE_MAX_DISTANCE_PX / 2.0))
    n1, n2 = np.maximum(photons[first], 1.0), np.maximum(photons[second], 1.0)
    w1 = (n1 / (n1 + n2))[:, None]
    middle = w1 * positions[first] + (1.0 - w1) * positions[second]  # photon-weighted centre
    centres = np.rint(middle).astype(np.int64)
    centres[:, 0] = np.clip(centres[:, 0], 0, height - 1)
    centres[:, 1] = np.clip(centres[:, 1], 0, width - 1)
    windows, valid, offsets = _windows(frame, centres, whalf)
    data = np.clip(windows + read_var, 0.0, None).reshape(m, -1)
    mask = valid.reshape(m, -1).astype(np.float64)
    # the other spots' light (round fits) is known
    zeros = np.zeros(len(rows), dtype=np.int64)
    yx, n, s, owner = _emitters(positions[rows], photons[rows], table["sigma_px"][rows], zeros,
                                np.zeros((len(rows), 2)))
    extra = read_var + _neighbour_light_of(centres, first, yx, n, s, rows[owner], offsets, 3.0 * whalf,
                                           second_index=second)
    r1, r2 = positions[first] - centres, positions[second] - centres
    b0 = 0.5 * (table["background"][first] + table["background"][second])
    s0 = np.clip(0.5 * (table["sigma_px"][first] + table["sigma_px"][second]), sigma_lo, sigma_hi)

    def clip_pair(p):
        p[:, [0, 1, 3, 4]] = np.clip(p[:, [0, 1, 3, 4]], -whalf, whalf)
        p[:, [2, 5]] = np.maximum(p[:, [2, 5]], 1e-3)
        p[:, 6] = np.maximum(p[:, 6], 1e-3 - read_var)
        p[:, 7] = np.clip(p[:, 7], sigma_lo, sigma_hi)
        return p

    def clip_seg(p):
        p[:, 0:2] = np.clip(p[:, 0:2], -whalf, whalf)
        p[:, 2] = np.maximum(p[:, 2], 1e-3)
        p[:, 3] = np.maximum(p[:, 3], 1e-3 - read_var)
        p[:, 4] = np.clip(p[:, 4], sigma_lo, sigma_hi)
        p[:, 5:7] = np.clip(p[:, 5:7], -2.0 * whalf, 2.0 * whalf)
        return p

    iterations = int(max_iterations)
    p_pair, ll_pair, _, _ = _fit_model(lambda p: _pair_model_and_jacobian(p, offsets), clip_pair, data, mask,
                                       np.column_stack([r1, n1, r2, n2, b0, s0]), extra, iterations)
    # the streak starts on the two lobes, its ends beyond them (the lobes of a uniform streak
    # lie inside it)
    seg_start = np.column_stack([middle - centres, n1 + n2, b0, np.full(m, sigma_psf),
                                 MERGE_SEGMENT_START_STRETCH * (r2 - r1)])
    p_seg, ll_seg, _, converged = _fit_model(lambda p: _segment_model_and_jacobian(p, offsets), clip_seg, data, mask,
                                             seg_start, extra, iterations)
    # a failed two-spot fit gives no shape evidence either way: no merge
    gain = np.where(np.isfinite(ll_pair), ll_pair - ll_seg, np.inf)
    # the streak must run through both spots and stay inside the window
    ends = p_seg[:, None, 0:2] + np.array([-0.5, 0.5])[None, :, None] * p_seg[:, None, 5:7]
    through = (
        (_distance_to_segment(r1, ends[:, 0], ends[:, 1]) <= MERGE_MAX_OFF_SEGMENT_PX)
        & (_distance_to_segment(r2, ends[:, 0], ends[:, 1]) <= MERGE_MAX_OFF_SEGMENT_PX)
        & np.all(np.abs(ends) < whalf - 0.5, axis=(1, 2))
    )
    ok = np.isfinite(ll_seg) & np.all(np.isfinite(p_seg), axis=1) & through
    if reference is not None:
        # the pair's light from the joint fits (separate round fits of overlapping lobes
        # count their shared light twice)
        light = np.maximum(p_pair[:, 2] + p_pair[:, 5], p_seg[:, 2])
        merge = ok & (light <= SINGLE_PARTICLE_LIGHT_RATIO * reference) & (gain <= MERGE_MAX_PAIR_GAIN)
    else:
        merge = ok & (gain <= MERGE_SHAPE_ONLY_MAX_GAIN)
    # each spot joins at most one streak: the most streak-like pairs first
    used = np.zeros(len(table["y_px"]), dtype=bool)
    chosen = []
    for i in np.flatnonzero(merge)[np.argsort(gain[merge], kind="stable")]:
        if not (used[first[i]] or used[second[i]]):
            used[first[i]] = used[second[i]] = True
            chosen.append(i)
    chosen = np.asarray(chosen, dtype=np.int64)
    if chosen.size == 0:
        return empty
    brighter = photons[first[chosen]] >= photons[second[chosen]]
    keep = np.where(brighter, first[chosen], second[chosen])
    drop = np.where(brighter, second[chosen], first[chosen])
    p_abs = p_seg[chosen].copy()
    p_abs[:, 0:2] += centres[chosen]
    return keep, drop, p_abs, converged[chosen]


def _distance_to_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance ``(K,)`` from each point ``(K, 2)`` to the segment ``a``-``b`` (each ``(K, 2)``)."""
    ab = b - a
    length2 = np.sum(ab * ab, axis=1)
    t = np.clip(np.sum((points - a) * ab, axis=1) / np.maximum(length2, 1e-12), 0.0, 1.0)
    nearest = a + t[:, None] * ab
    return np.hypot(points[:, 0] - nearest[:, 0], points[:, 1] - nearest[:, 1])


def _apply_merges(out, parent, kind, segment, streak_width, keep, drop, p_seg, converged, acquisition):
    """Write each merged streak into its kept row and remove the dropped rows.

    The kept row gets the streak's centre and photons, the width ``sqrt(s^2 + L^2 / 12)`` of
    a round spot with the same spread and that spot's Mortensen precision; ``kind`` 1, its
    segment vector and PSF width are recorded for the neighbours' refits. Returns the
    updated ``(out, parent, kind, segment, streak_width)``.
    """
    s, vector = p_seg[:, 4], p_seg[:, 5:7]
    equivalent = np.sqrt(s**2 + np.sum(vector**2, axis=1) / 12.0)
    out["y_px"][keep], out["x_px"][keep] = p_seg[:, 0], p_seg[:, 1]
    out["photons"][keep], out["background"][keep] = p_seg[:, 2], p_seg[:, 3]
    out["sigma_px"][keep] = equivalent
    out["loc_precision_nm"][keep] = mortensen_precision_nm(
        p_seg[:, 2], p_seg[:, 3], acquisition.px_to_nm(equivalent), acquisition.pixel_size_nm, acquisition.read_noise_e)
    out["fit_ok"][keep] = converged
    kind[keep], segment[keep], streak_width[keep] = 1, vector, s
    remain = np.ones(len(parent), dtype=bool)
    remain[drop] = False
    out = {c: out[c][remain] for c in LOCALIZATION_COLUMNS}
    return out, parent[remain], kind[remain], segment[remain], streak_width[remain]


def _reference_photons(positions: np.ndarray, photons: np.ndarray, round_: np.ndarray) -> float | None:
    """A single particle's light in this frame (photons), or None when too few spots tell it.

    The median photons of the round spots (``round_`` ``(K,)``: fitted, not wide) that have
    no other spot within ``MERGE_MAX_DISTANCE_PX``, which are neither pairs nor streaks nor
    the lobes of a streak (in a frame where half the particles are fast, those lobes are
    round, hold about half a particle's light each and would otherwise pull the median
    down); with fewer than ``SPLIT_MIN_SPOTS_FOR_REFERENCE`` of them, the median over all
    round spots; with fewer round spots than that, None.
    """
    rows = np.flatnonzero(round_)
    if rows.size < SPLIT_MIN_SPOTS_FOR_REFERENCE:
        return None
    finite = np.flatnonzero(np.all(np.isfinite(positions), axis=1))
    alone = rows
    if finite.size > 1:
        distance, _ = cKDTree(positions[finite]).query(positions[rows], k=2)
        alone = rows[distance[:, 1] > MERGE_MAX_DISTANCE_PX]
    if alone.size >= SPLIT_MIN_SPOTS_FOR_REFERENCE:
        return float(np.median(photons[alone]))
    return float(np.median(photons[rows]))


def _split_pairs(frame, out, parent, kind, segment, streak_width, positions, finite, tested, half, sigma_psf,
                 sigma_lo, sigma_hi, read_var, max_iterations, reference, min_loglik_gain, acquisition):
    """Test the wide spots ``tested`` for two emitters and split those that pass (see the comment block).

    Returns the updated ``(out, parent, kind, segment, streak_width)``; a tested spot that the
    streak model explains best becomes ``kind`` 1 with its segment vector.
    """
    height, width = frame.shape
    with np.errstate(all="ignore"):
        models = _test_spots(frame, positions, out, tested, finite, half + 1, sigma_psf, sigma_lo, sigma_hi,
                             read_var, max_iterations, reference, kind, segment, streak_width)
    ll_round, ll_seg, ll_pair, p_seg, p_pair, pair_fisher, pair_ok, centres = models
    kind[tested[ll_seg > ll_round]] = 1
    segment[tested] = p_seg[:, 5:7]
    snr1 = _emitter_snr(p_pair[:, 2], p_pair[:, 6], p_pair[:, 7], read_var)
    snr2 = _emitter_snr(p_pair[:, 5], p_pair[:, 6], p_pair[:, 7], read_var)
    separation = np.hypot(p_pair[:, 0] - p_pair[:, 3], p_pair[:, 1] - p_pair[:, 4])
    bright = np.zeros(len(tested), dtype=bool)
    if reference is not None:
        bright = (
            (p_pair[:, 2] + p_pair[:, 5] >= SPLIT_BRIGHTNESS_RATIO * reference)
            & (ll_pair - ll_round > SPLIT_MIN_GAIN_BRIGHT)
            & (p_pair[:, 7] <= SPLIT_MAX_PAIR_WIDTH * sigma_psf)
        )
    split = (
        pair_ok
        & ((ll_pair - np.maximum(ll_round, ll_seg) > float(min_loglik_gain)) | bright)
        & (separation >= SPLIT_MIN_SEPARATION_PX)
        & (np.minimum(snr1, snr2) >= SPLIT_MIN_EMITTER_SNR)
    )
    abs1 = centres + p_pair[:, 0:2]
    abs2 = centres + p_pair[:, 3:5]
    if reference is not None:
        # a spot alone (no other spot within MERGE_MAX_DISTANCE_PX) holding about one
        # particle's light is one (blurred) particle, whatever its shape; next to another spot
        # the light is shared out between the fits and tells less
        alone = np.array([len(h) == 1 for h in cKDTree(positions[finite]).query_ball_point(positions[tested],
                                                                                           MERGE_MAX_DISTANCE_PX)])
        split &= ~alone | (p_pair[:, 2] + p_pair[:, 5] > SINGLE_PARTICLE_LIGHT_RATIO * reference)
    inside2 = (abs2[:, 0] >= -0.5) & (abs2[:, 0] < height - 0.5) & (abs2[:, 1] >= -0.5) & (abs2[:, 1] < width - 0.5)
    split &= inside2
    # an emitter that lands on another detected spot is that spot, seen twice
    others = np.flatnonzero(finite)
    if split.any() and others.size > 1:
        tree = cKDTree(positions[others])
        for emitter in (abs1, abs2):
            hits = tree.query_ball_point(emitter, SPLIT_MIN_SEPARATION_PX * 1.5)
            split &= np.array([all(others[j] == tested[i] for j in h) for i, h in enumerate(hits)], dtype=bool)
    if np.any(split):
        n_new = int(split.sum())
        out, parent = _apply_splits(out, parent, tested[split], abs1[split], abs2[split], p_pair[split],
                                    pair_fisher[split], acquisition)
        kind = np.concatenate([kind, np.full(n_new, 0)])
        kind[tested[split]] = 0
        segment = np.concatenate([segment, np.zeros((n_new, 2))])
        streak_width = np.concatenate([streak_width, np.full(n_new, np.nan)])
    return out, parent, kind, segment, streak_width


def _test_spots(frame, positions, table, tested, finite, half, sigma_psf, sigma_lo, sigma_hi, read_var, max_iterations,
                reference=None, kind=None, segment=None, streak_width=None):
    """Fit the round, streak and two-spot models to the tested spots (see :func:`resolve_overlaps`).

    The other spots' light is known: round fits, and merged streaks (``kind`` 1, with their
    ``segment`` vectors and ``streak_width``) as segments. Returns log-likelihoods ``(T,)`` of the three models, streak params ``(T, 7)``, pair
    params ``(T, 8)`` (positions relative to ``centres``), pair Fisher ``(T, 8, 8)``, pair
    convergence ``(T,)`` and the window centres ``(T, 2)`` int.
    """
    k = len(positions)
    height, width = frame.shape
    centres = np.rint(positions[tested]).astype(np.int64)
    centres[:, 0] = np.clip(centres[:, 0], 0, height - 1)
    centres[:, 1] = np.clip(centres[:, 1], 0, width - 1)
    windows, valid, offsets = _windows(frame, centres, half)
    t = len(tested)
    data = np.clip(windows + read_var, 0.0, None).reshape(t, -1)
    mask = valid.reshape(t, -1).astype(np.float64)
    # the other spots' light (round fits, merged streaks as segments) is known
    others = np.flatnonzero(finite)
    if kind is None:
        kind, segment, streak_width = np.zeros(k, dtype=np.int64), np.zeros((k, 2)), np.full(k, np.nan)
    widths = np.where(np.isfinite(streak_width), streak_width, table["sigma_px"])
    yx, n, s, owner = _emitters(positions[others], table["photons"][others], widths[others], kind[others],
                                segment[others])
    light = _neighbour_light_of(centres, tested, yx, n, s, others[owner], offsets, 3.0 * half)
    extra = read_var + light
    rel = positions[tested] - centres
    n0 = np.maximum(table["photons"][tested], 1.0)
    b0 = table["background"][tested]
    s0 = np.clip(table["sigma_px"][tested], sigma_lo, sigma_hi)
    start = np.column_stack([rel, n0, b0, s0])
    test_iterations = min(int(max_iterations), TEST_ITERATIONS)
    p_round, _ = _fit_spots(data, mask, offsets, start, read_var, sigma_lo, sigma_hi, test_iterations, extra=light)
    ll_round = _score(p_round, offsets, data, mask, extra)[0]
    mu_round = _model_and_jacobian(p_round, offsets)[0] + extra
    # the largest residual (3 x 3 sums) marks the second lobe of a pair or streak
    residual = ((data - mu_round) * mask).reshape(t, 2 * half + 1, 2 * half + 1)
    pad = np.pad(residual, ((0, 0), (1, 1), (1, 1)))
    box = sum(pad[:, i : i + 2 * half + 1, j : j + 2 * half + 1] for i in range(3) for j in range(3))
    peak = np.unravel_index(np.argmax(box.reshape(t, -1), axis=1), box.shape[1:])
    lobe = np.column_stack(peak).astype(np.float64) - half
    fit = p_round[:, 0:2]
    direction = lobe - fit
    length = np.hypot(direction[:, 0], direction[:, 1])
    unit = np.where(length[:, None] > 1e-6, direction / np.maximum(length, 1e-6)[:, None], np.array([0.0, 1.0]))
    n_r, b_r, s_r = p_round[:, 2], p_round[:, 3], p_round[:, 4]
    # streak: centre at the round fit, length from the excess width (uniform segment: L^2/12)
    seg_len = np.sqrt(12.0 * np.maximum(s_r**2 - sigma_psf**2, 0.05))
    seg_start = np.column_stack([fit, n_r, b_r, np.full(t, sigma_psf), unit * seg_len[:, None]])

    def clip_seg(p):
        p[:, 0:2] = np.clip(p[:, 0:2], -half, half)
        p[:, 2] = np.maximum(p[:, 2], 1e-3)
        p[:, 3] = np.maximum(p[:, 3], 1e-3 - read_var)
        p[:, 4] = np.clip(p[:, 4], sigma_lo, sigma_hi)
        p[:, 5:7] = np.clip(p[:, 5:7], -2.0 * half, 2.0 * half)
        return p

    # two spots: one on the lobe of the residual, one on the round fit moved away from it (a
    # second start, symmetric about the round fit, changed the outcome of < 2 % of 3.5 px pairs)
    start = np.column_stack([fit - 0.25 * direction, 0.7 * n_r, lobe, 0.3 * n_r, b_r, np.full(t, sigma_psf)])

    def clip_pair(p):
        p[:, [0, 1, 3, 4]] = np.clip(p[:, [0, 1, 3, 4]], -half, half)
        p[:, [2, 5]] = np.maximum(p[:, [2, 5]], 1e-3)
        p[:, 6] = np.maximum(p[:, 6], 1e-3 - read_var)
        p[:, 7] = np.clip(p[:, 7], sigma_lo, sigma_hi)
        return p

    p_pair, ll_pair, fisher, _ = _fit_model(lambda p: _pair_model_and_jacobian(p, offsets), clip_pair, data, mask,
                                            start, extra, test_iterations)
    ll_pair = np.where(np.isfinite(ll_pair), ll_pair, -np.inf)
    # polish the promising two-spot fits (those near enough to passing a split rule) to convergence
    gain = ll_pair - ll_round
    promising = gain > SPLIT_MIN_LOGLIK_GAIN - 5.0
    if reference is not None:
        promising |= (
            (gain > SPLIT_MIN_GAIN_BRIGHT - 2.0)
            & (p_pair[:, 2] + p_pair[:, 5] >= 0.9 * SPLIT_BRIGHTNESS_RATIO * reference)
            & (p_pair[:, 7] <= 1.1 * SPLIT_MAX_PAIR_WIDTH * sigma_psf)
        )
    promising = np.flatnonzero(promising)
    ok = np.zeros(t, dtype=bool)
    if promising.size:
        p_pol, ll_pol, f_pol, ok_pol = _fit_model(lambda p: _pair_model_and_jacobian(p, offsets), clip_pair,
                                                  data[promising], mask[promising], p_pair[promising],
                                                  extra[promising], int(max_iterations))
        p_pair[promising], ll_pair[promising], fisher[promising], ok[promising] = p_pol, ll_pol, f_pol, ok_pol
    # the two-spot model must not sit on the window's edge (a neighbour's light, not this spot's)
    ok &= np.all(np.abs(p_pair[:, [0, 1, 3, 4]]) < half - 0.5, axis=1)
    # The streak model is needed where it can change a decision -- the shape rule, which
    # needs ll_pair - ll_round > SPLIT_MIN_LOGLIK_GAIN anyway -- or where the spot has a
    # neighbour that will use its light. Elsewhere it is left unfitted (-inf: not a streak).
    crowded = np.array([len(h) > 1 for h in cKDTree(positions[finite]).query_ball_point(positions[tested], 3.0 * half)],
                       dtype=bool)
    need = np.flatnonzero(crowded | (ll_pair - ll_round > SPLIT_MIN_LOGLIK_GAIN))
    p_seg = seg_start.copy()
    ll_seg = np.full(t, -np.inf)
    if need.size:
        p_seg[need], ll_seg[need], _, _ = _fit_model(lambda p: _segment_model_and_jacobian(p, offsets), clip_seg,
                                                     data[need], mask[need], seg_start[need], extra[need],
                                                     test_iterations)
    ll_seg = np.where(np.isfinite(ll_seg), ll_seg, -np.inf)
    ll_round = np.where(np.isfinite(ll_round), ll_round, -np.inf)
    return ll_round, ll_seg, ll_pair, p_seg, p_pair, fisher, ok, centres


def _apply_splits(out, parent, rows, abs1, abs2, p_pair, fisher, acquisition):
    """Replace each split row by its first emitter and append the second one."""
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(fisher)
    var1 = np.clip(0.5 * (cov[:, 0, 0] + cov[:, 1, 1]), 0.0, None)
    var2 = np.clip(0.5 * (cov[:, 3, 3] + cov[:, 4, 4]), 0.0, None)
    precision1 = acquisition.px_to_nm(np.sqrt(var1))
    precision2 = acquisition.px_to_nm(np.sqrt(var2))
    out["y_px"][rows], out["x_px"][rows] = abs1[:, 0], abs1[:, 1]
    out["photons"][rows] = p_pair[:, 2]
    out["background"][rows] = p_pair[:, 6]
    out["sigma_px"][rows] = p_pair[:, 7]
    out["loc_precision_nm"][rows] = precision1
    out["fit_ok"][rows] = True
    new = {
        "y_px": abs2[:, 0], "x_px": abs2[:, 1], "photons": p_pair[:, 5], "background": p_pair[:, 6],
        "sigma_px": p_pair[:, 7], "loc_precision_nm": precision2, "fit_ok": np.ones(len(rows), dtype=bool),
    }
    out = {c: np.concatenate([out[c], np.asarray(new[c], dtype=out[c].dtype)]) for c in LOCALIZATION_COLUMNS}
    return out, np.concatenate([parent, parent[rows]])


def _refit_neighbours(frame, out, kind, segment, streak_width, parent, half, sigma_psf, sigma_lo, sigma_hi, read_var,
                      max_iterations, acquisition):
    """Refit the spots within ``3 * half`` px of a streak or a split pair, every neighbour's light known.

    A streak's light is its segment model's, a split pair's its two emitters', any other
    spot's its round fit's; the refitted spot's own window and start are those of a round
    fit around its current position. ``kind`` ``(K,)``: 1 for streaks; ``segment``
    ``(K, 2)`` streak vectors (px); ``streak_width`` ``(K,)`` PSF width of a merged streak's
    light (NaN: the row's ``sigma_px``); ``parent`` ``(K,)`` from :func:`_apply_splits`.
    Returns the updated table (a refit that goes astray keeps the previous values).
    """
    k = len(out["y_px"])
    positions = np.column_stack([out["y_px"], out["x_px"]])
    finite = np.all(np.isfinite(positions), axis=1) & np.isfinite(out["sigma_px"]) & np.isfinite(out["photons"])
    # spots whose light model changed: streaks and split pairs (a tested spot that stays a
    # round spot keeps the light its neighbours were already fitted with)
    changed = (kind != 0) | (np.bincount(parent, minlength=k)[parent] > 1)
    targets = np.flatnonzero(finite & ~changed)
    if targets.size == 0 or not np.any(changed & finite):
        return out
    tree = cKDTree(positions[changed & finite])
    near = tree.query_ball_point(positions[targets], 3.0 * half)
    targets = targets[np.array([len(h) > 0 for h in near], dtype=bool)]
    if targets.size == 0:
        return out
    height, width = frame.shape
    centres = np.rint(positions[targets]).astype(np.int64)
    centres[:, 0] = np.clip(centres[:, 0], 0, height - 1)
    centres[:, 1] = np.clip(centres[:, 1], 0, width - 1)
    windows, valid, offsets = _windows(frame, centres, half)
    t = len(targets)
    data = np.clip(windows + read_var, 0.0, None).reshape(t, -1)
    mask = valid.reshape(t, -1).astype(np.float64)
    sources = np.flatnonzero(finite)
    widths = np.where(np.isfinite(streak_width), streak_width, out["sigma_px"])
    yx, n, s, owner = _emitters(positions[sources], out["photons"][sources], widths[sources],
                                kind[sources], segment[sources])
    owner = sources[owner]
    light = _neighbour_light_of(centres, targets, yx, n, s, owner, offsets, 3.0 * half)
    start = np.column_stack([positions[targets] - centres, np.maximum(out["photons"][targets], 1.0),
                             out["background"][targets], np.clip(out["sigma_px"][targets], sigma_lo, sigma_hi)])
    params, converged = _fit_spots(data, mask, offsets, start, read_var, sigma_lo, sigma_hi, max_iterations,
                                   extra=light)
    sane = (
        np.all(np.isfinite(params), axis=1)
        & np.all(np.abs(params[:, :2] - start[:, :2]) <= MAX_SHIFT_PX, axis=1)
        & (params[:, 4] > sigma_lo * 1.001) & (params[:, 4] < sigma_hi * 0.999)
    )
    rows = targets[sane]
    p = params[sane]
    out["y_px"][rows] = centres[sane, 0] + p[:, 0]
    out["x_px"][rows] = centres[sane, 1] + p[:, 1]
    out["photons"][rows], out["background"][rows], out["sigma_px"][rows] = p[:, 2], p[:, 3], p[:, 4]
    out["loc_precision_nm"][rows] = mortensen_precision_nm(
        p[:, 2], p[:, 3], acquisition.px_to_nm(p[:, 4]), acquisition.pixel_size_nm, acquisition.read_noise_e)
    out["fit_ok"][rows] = converged[sane]
    return out
