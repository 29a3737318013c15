"""Sub-pixel localization: pixel-integrated Gaussian fit by Poisson maximum likelihood.

Every detected spot is fitted in a square window around its peak pixel with

    mu_ij = b + N * Ey_i(y, s) * Ex_j(x, s),
    Ex_j(x, s) = 1/2 [erf((j - x + 1/2) / (sqrt2 s)) - erf((j - x - 1/2) / (sqrt2 s))],

the Gaussian PSF integrated over each pixel, with five parameters per spot: position
``(y, x)`` (px), photons ``N``, background ``b`` (photons/pixel) and width ``s`` (px).
The camera's Gaussian read noise (variance ``r^2`` in e-^2) is folded into the Poisson
likelihood by the usual shift (Huang et al. 2013): ``d + r^2`` is treated as Poisson with
mean ``mu + r^2``. The likelihood is maximised by Levenberg-Marquardt steps on the Fisher
information (Fisher scoring), every window in one compiled loop (:func:`fit_spots`, numba,
:mod:`.lm_kernels`; :func:`fit_spots_reference` is the same fit batched in numpy). A spot
whose fit fails (position wandering more than 1.5 px from its peak, width pinned at a bound, non-finite values) gets the
background-subtracted centroid instead and ``fit_ok = False``; a fit that is sane but
has not converged within ``max_iterations`` keeps its last iterate, also flagged
``fit_ok = False``. Spots whose windows overlap are refitted once with their
neighbours' fitted light added to the model (a cheap multi-emitter correction). Windows that
cross the image border use only the pixels inside the image.

A second pass over a frame's fits (:func:`~napari_spt_diffusion.tracking.overlaps.resolve_overlaps`,
run by :mod:`~napari_spt_diffusion.tracking.spots`) merges the two localizations of one
motion-blurred streak into one, splits spots that are two close particles and refits the
spots next to streaks with the streak's light modelled; isolated spots whose round fit is
not wider than the PSF are left exactly as fitted here.

Localization precision (nm) follows Mortensen et al. 2010 (Nat. Methods 7:377), eq. 6:
``var = s_a^2 / N * F(tau)^-1``, ``F(tau) = 1 + int_0^1 ln(t) / (1 + t / tau) dt``,
``s_a^2 = s^2 + a^2 / 12``, ``tau = 2 pi s_a^2 b / (N a^2)``, with ``a`` the pixel size,
``s`` the fitted width and ``b`` the fitted background plus the read-noise variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
from .lm_kernels import SPOT, STOP_SPOT, fit_windows

__all__ = [
    "LOCALIZATION_COLUMNS",
    "localize_frame",
    "localize_photons",
    "localize_arrays",
    "mortensen_precision_nm",
    "default_window_half_px",
    "FitLimits",
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


@dataclass(frozen=True)
class FitLimits:
    """Bounds shared by every Poisson-likelihood fit of one frame.

    Attributes
    ----------
    read_var
        Camera read-noise variance (e-^2), folded into the likelihood as a shift.
    sigma_lo, sigma_hi
        Bounds of a fitted width (px): :data:`SIGMA_BOUNDS` times the PSF sigma.
    """

    read_var: float
    sigma_lo: float
    sigma_hi: float

    @classmethod
    def for_psf(cls, acquisition: Acquisition, sigma_psf: float) -> FitLimits:
        """Limits for a PSF of ``sigma_psf`` px on the acquisition's camera."""
        return cls(float(acquisition.read_noise_e) ** 2, SIGMA_BOUNDS[0] * sigma_psf, SIGMA_BOUNDS[1] * sigma_psf)


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
        integral, _ = integrate.quad(lambda t, tau=tau: 1.0 / (1.0 + t / tau), 0.0, 1.0, weight="alg-loga",
                                     wvar=(0.0, 0.0))
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
def psf_1d(centre: np.ndarray, sigma: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def spot_model_and_jacobian(params: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected photons ``(K, W*W)`` and Jacobian ``(K, W*W, 5)`` for params ``(K, 5)`` = y, x, N, b, s."""
    y, x, n, b, s = params.T
    ey, dey, dsy = psf_1d(y, s, offsets)
    ex, dex, dsx = psf_1d(x, s, offsets)
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


def spot_score(params: np.ndarray, offsets: np.ndarray, data: np.ndarray, valid: np.ndarray, extra: Any):
    """Log-likelihood ``(K,)``, gradient ``(K, 5)`` and Fisher information ``(K, 5, 5)``.

    ``extra`` (a number or ``(K, W*W)``) is added to the model's mean: the read-noise
    variance, plus the light of neighbouring spots when they are known.
    """
    model, jac = spot_model_and_jacobian(params, offsets)
    mu = model + extra
    loglik = np.sum(valid * (data * np.log(mu) - mu), axis=1)
    weight = valid / mu
    residual = (data - mu) * weight
    grad = np.einsum("kp,kpi->ki", residual, jac)
    fisher = np.matmul(jac.transpose(0, 2, 1), jac * weight[:, :, None])
    return loglik, grad, fisher


def _clip_params(params: np.ndarray, half: float, limits: FitLimits) -> np.ndarray:
    params[:, 0:2] = np.clip(params[:, 0:2], -half, half)
    params[:, 2] = np.maximum(params[:, 2], 1e-3)
    params[:, 3] = np.maximum(params[:, 3], 1e-3 - limits.read_var)
    params[:, 4] = np.clip(params[:, 4], limits.sigma_lo, limits.sigma_hi)
    return params


def spot_bounds(half: float, limits: FitLimits) -> tuple[np.ndarray, np.ndarray]:
    """Box ``(lower, upper)`` ``(5,)`` of a round spot's parameters (y, x, N, b, s), window half-width ``half``."""
    lower = np.array([-half, -half, 1e-3, 1e-3 - limits.read_var, limits.sigma_lo])
    upper = np.array([half, half, np.inf, np.inf, limits.sigma_hi])
    return lower, upper


def fit_spots(
    data: np.ndarray,
    valid: np.ndarray,
    offsets: np.ndarray,
    start: np.ndarray,
    limits: FitLimits,
    max_iterations: int,
    extra: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt maximisation of the Poisson likelihood of a round spot in each window.

    ``data`` ``(K, W*W)`` photons + read variance (clipped at 0), ``valid`` ``(K, W*W)``
    float mask, ``start`` ``(K, 5)``, ``extra`` ``(K, W*W)`` known light added to the
    model besides the read-noise variance (neighbours). Returns ``(params (K, 5), converged (K,))``.
    Compiled (:func:`~.lm_kernels.fit_windows`); the same fit as :func:`fit_spots_reference`
    up to round-off.
    """
    read_var = limits.read_var
    known = read_var if extra is None else read_var + extra
    params, _, _, converged = fit_windows(SPOT, (data, valid), offsets, start, spot_bounds(float(offsets[-1]), limits),
                                          known, max_iterations, STOP_SPOT)
    return params, converged


def fit_spots_reference(
    data: np.ndarray,
    valid: np.ndarray,
    offsets: np.ndarray,
    start: np.ndarray,
    limits: FitLimits,
    max_iterations: int,
    extra: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched numpy Levenberg-Marquardt maximisation of the Poisson likelihood (the reference
    that :func:`fit_spots` reproduces; kept for the tests).

    ``data`` ``(K, W*W)`` photons + read variance (clipped at 0), ``valid`` ``(K, W*W)``
    float mask, ``start`` ``(K, 5)``, ``extra`` ``(K, W*W)`` known light added to the
    model besides the read-noise variance (neighbours). Returns ``(params (K, 5), converged (K,))``.
    """
    read_var = limits.read_var
    offset_all = read_var if extra is None else read_var + extra
    k = len(start)
    half = float(offsets[-1])
    params = _clip_params(start.copy(), half, limits)
    loglik, grad, fisher = spot_score(params, offsets, data, valid, offset_all)
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
        trial = _clip_params(params[active] + step, half, limits)
        off = offset_all if extra is None else offset_all[active]
        ll_t, g_t, f_t = spot_score(trial, offsets, data[active], valid[active], off)
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
def gather_windows(frame: np.ndarray, peaks: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    ring_values = windows[:, ring]
    med = np.median(ring_values, axis=1) if ring_values.size else np.zeros(len(windows))
    # windows cut by the image border: the median of the ring pixels inside it (nanmedian is
    # slow, so only for those rows)
    cut = ~np.all(valid[:, ring], axis=1)
    if np.any(cut):
        values = np.where(valid[cut][:, ring], ring_values[cut], np.nan)
        with np.errstate(all="ignore"):
            med[cut] = np.nanmedian(values, axis=1)
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
    if len(peaks) and (
        peaks.min(axis=0)[0] < 0
        or peaks.min(axis=0)[1] < 0
        or peaks[:, 0].max() >= height
        or peaks[:, 1].max() >= width
    ):
        raise TrackingInputError("every peak must lie inside the frame")
    sigma_psf = float(acquisition.psf_sigma_px)
    half = int(window_half_px) if window_half_px is not None else default_window_half_px(sigma_psf)
    k = len(peaks)
    empty_f = np.zeros(0, dtype=np.float64)
    if k == 0:
        return {
            "y_px": empty_f, "x_px": empty_f.copy(), "photons": empty_f.copy(), "background": empty_f.copy(),
            "sigma_px": empty_f.copy(), "loc_precision_nm": empty_f.copy(), "fit_ok": np.zeros(0, dtype=bool),
        }
    limits = FitLimits.for_psf(acquisition, sigma_psf)
    read_var = limits.read_var
    windows, valid, offsets = gather_windows(frame, peaks, half)
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
    sigma_lo, sigma_hi = limits.sigma_lo, limits.sigma_hi
    with np.errstate(all="ignore"):
        params, converged = fit_spots(data, mask, offsets, start, limits, int(max_iterations))
        if neighbours and k > 1:
            # Alternating fits: each crowded spot is refitted with its neighbours' current
            # fitted light in the model, until positions settle (a block Gauss-Seidel
            # version of a joint multi-emitter fit).
            # the pairs of peaks close enough to share light: the same in every round
            pairs = cKDTree(peaks.astype(np.float64)).query_pairs(3.0 * half, output_type="ndarray")
            for _ in range(NEIGHBOUR_ROUNDS if len(pairs) else 0):
                crowded, light = _neighbour_light(peaks, pairs, (params, converged), offsets)
                if crowded.size == 0:
                    break
                before = params[crowded, :2].copy()
                # restart from the peak-based start: a first fit may have slid onto its neighbour
                params[crowded], converged[crowded] = fit_spots(
                    data[crowded], mask[crowded], offsets, start[crowded], limits, int(max_iterations),
                    extra=light,
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
    precision = mortensen_precision_nm(
        params[:, 2], params[:, 3], sigma_nm, acquisition.pixel_size_nm, acquisition.read_noise_e
    )
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
    peaks: np.ndarray, pairs: np.ndarray, fits: tuple[np.ndarray, np.ndarray], offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Light of neighbouring spots inside each crowded spot's window, from their current fits.

    ``pairs`` ``(P, 2)``: the pairs of peaks within ``3 * half`` px of each other; ``fits`` =
    ``(params (K, 5), converged (K,))``. Returns ``(crowded, light)``: indices of the spots with
    another usable fitted spot in such a pair, and ``(len(crowded), W*W)`` expected photons of
    those neighbours over each crowded spot's window.
    """
    params, converged = fits
    # a fit more than 1 px from its own peak pixel has been captured by something else
    # (an isolated spot's peak pixel is within ~0.7 px of it): not a usable neighbour
    usable = converged & np.all(np.isfinite(params), axis=1) & np.all(np.abs(params[:, :2]) <= 1.0, axis=1)
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
    ey = psf_1d(centre[:, 0], sigma, offsets)[0]
    ex = psf_1d(centre[:, 1], sigma, offsets)[0]
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
    return pd.DataFrame(
        localize_arrays(frame_photons, peaks_yx, acquisition, **options), columns=list(LOCALIZATION_COLUMNS)
    )


def localize_frame(
    frame_adu: np.ndarray,
    peaks_yx: np.ndarray,
    acquisition: Acquisition,
    *,
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
        Camera conversion, read noise, pixel size and PSF width (the start value and
        the width bounds, ``0.5 - 5 x`` the PSF sigma).
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
        window_half_px=window_half_px, max_iterations=max_iterations,
        neighbours=neighbours,
    )
