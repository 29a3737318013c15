"""Batched single-spot Poisson MLE on torch tensors: the fit of :mod:`~..tracking.localize`.

The spots of a whole batch of frames are fitted at once, as
:func:`~napari_spt_diffusion.tracking.localize.localize_arrays` fits those of one frame:
the same model (pixel-integrated Gaussian, five parameters ``y, x, N, b, s``), the same
read-noise shift, start values (3 x 3 centroid above the window ring's median), bounds,
Levenberg-Marquardt damping, stopping rules and neighbour refits (up to
:data:`~..tracking.localize.NEIGHBOUR_ROUNDS` rounds, stopped per frame when its crowded
spots move by less than 0.01 px), all in float64. A spot that has converged keeps its
parameters while the others go on (each step works on the spots not yet converged, as
in numpy). Neighbours are paired within a frame only.
The centroid fallback of failed fits and the Mortensen precision are the numpy functions,
applied on the CPU to the fitted parameters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..acquisition import Acquisition
from ..tracking.localize import (
    LOCALIZATION_COLUMNS,
    MAX_SHIFT_PX,
    NEIGHBOUR_ROUNDS,
    FitLimits,
    _centroid_fallback,
    default_window_half_px,
    mortensen_precision_nm,
)

__all__ = ["localize_batch"]

_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)


def _psf_1d(centre: torch.Tensor, sigma: torch.Tensor, offsets: torch.Tensor):
    """Pixel-integrated 1-D Gaussian ``(K, W)`` and its derivatives by centre and width."""
    inv = 1.0 / (_SQRT2 * sigma)[:, None]
    upper = (offsets[None, :] - centre[:, None] + 0.5) * inv
    lower = (offsets[None, :] - centre[:, None] - 0.5) * inv
    g_up = torch.exp(-upper * upper)
    g_lo = torch.exp(-lower * lower)
    value = 0.5 * (torch.erf(upper) - torch.erf(lower))
    d_centre = -(g_up - g_lo) * inv / _SQRT_PI
    d_sigma = -(upper * g_up - lower * g_lo) / (sigma[:, None] * _SQRT_PI)
    return value, d_centre, d_sigma


def _score(params: torch.Tensor, offsets: torch.Tensor, data: torch.Tensor, valid: torch.Tensor, extra):
    """Log-likelihood ``(K,)``, gradient ``(K, 5)``, Fisher information ``(K, 5, 5)`` of params ``(K, 5)``."""
    y, x, n, b, s = params.unbind(1)
    ey, dey, dsy = _psf_1d(y, s, offsets)
    ex, dex, dsx = _psf_1d(x, s, offsets)
    k, w = ey.shape
    nn = n[:, None, None]
    shape_2d = ey[:, :, None] * ex[:, None, :]
    model = b[:, None, None] + nn * shape_2d
    jac = torch.stack(
        [nn * dey[:, :, None] * ex[:, None, :], nn * ey[:, :, None] * dex[:, None, :], shape_2d,
         torch.ones_like(shape_2d), nn * (dsy[:, :, None] * ex[:, None, :] + ey[:, :, None] * dsx[:, None, :])],
        dim=-1,
    ).reshape(k, w * w, 5)
    mu = model.reshape(k, w * w) + extra
    loglik = (valid * (data * torch.log(mu) - mu)).sum(dim=1)
    weight = valid / mu
    residual = (data - mu) * weight
    grad = torch.einsum("kp,kpi->ki", residual, jac)
    fisher = jac.transpose(1, 2) @ (jac * weight[:, :, None])
    return loglik, grad, fisher


def _clip(params: torch.Tensor, half: float, limits: FitLimits) -> torch.Tensor:
    return torch.stack(
        [params[:, 0].clamp(-half, half), params[:, 1].clamp(-half, half), params[:, 2].clamp(min=1e-3),
         params[:, 3].clamp(min=1e-3 - limits.read_var), params[:, 4].clamp(limits.sigma_lo, limits.sigma_hi)],
        dim=1,
    )


def _solve(damped: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Steps ``(K, 5)``; a singular system gets the least-squares (pseudo-inverse) solution."""
    step, info = torch.linalg.solve_ex(damped, grad[:, :, None])
    step = step[:, :, 0]
    singular = (info != 0) & torch.isfinite(damped).all(dim=2).all(dim=1)
    if bool(singular.any()):
        step[singular] = (torch.linalg.pinv(damped[singular]) @ grad[singular][:, :, None])[:, :, 0]
    return step


def _fit(data, valid, offsets, start, limits: FitLimits, max_iterations: int, extra=None):
    """Levenberg-Marquardt on the Poisson likelihood, as :func:`~..tracking.localize.fit_spots`.

    ``data``, ``valid`` ``(K, W*W)``; ``start`` ``(K, 5)``; ``extra`` ``(K, W*W)`` known light
    or ``None``. Each step works on the spots not yet converged only. Returns
    ``(params (K, 5), converged (K,))``.
    """
    offset_all = limits.read_var if extra is None else limits.read_var + extra
    k = start.shape[0]
    device = start.device
    half = float(offsets[-1])
    params = _clip(start.clone(), half, limits)
    loglik, grad, fisher = _score(params, offsets, data, valid, offset_all)
    lam = torch.full((k,), 1e-3, dtype=torch.float64, device=device)
    converged = torch.zeros(k, dtype=torch.bool, device=device)
    active = torch.arange(k, device=device)
    eye = torch.eye(5, dtype=torch.float64, device=device)
    for _ in range(max_iterations):
        if active.numel() == 0:
            break
        f_act, ll_act, lam_act = fisher[active], loglik[active], lam[active]
        damped = f_act + lam_act[:, None, None] * (f_act * eye + 1e-9 * eye)
        trial = _clip(params[active] + _solve(damped, grad[active]), half, limits)
        off = offset_all if extra is None else offset_all[active]
        ll_t, g_t, f_t = _score(trial, offsets, data[active], valid[active], off)
        better = torch.isfinite(ll_t) & (ll_t >= ll_act - 1e-10 * ll_act.abs())
        gain = ll_t - ll_act
        moved = trial - params[active]
        ok = active[better]
        params[ok] = trial[better]
        loglik[ok] = ll_t[better]
        grad[ok] = g_t[better]
        fisher[ok] = f_t[better]
        lam_act = torch.where(better, (lam_act * 0.1).clamp(min=1e-7), lam_act * 10.0)
        lam[active] = lam_act
        small = (
            (moved[:, 0].abs() < 1e-3) & (moved[:, 1].abs() < 1e-3) & (moved[:, 4].abs() < 1e-3)
            & (moved[:, 2].abs() < 1e-3 * params[active, 2].clamp(min=1.0))
        )
        done = (better & (small | (gain < 1e-5))) | (lam_act > 1e6)
        converged[active[done]] = True
        active = active[~done]
    return params, converged


def _ring_median(windows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(K,)`` median of the valid pixels on each window's outer ring (numpy's nanmedian)."""
    ring = torch.zeros(windows.shape[1:], dtype=torch.bool, device=windows.device)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    values = torch.where(valid[:, ring], windows[:, ring], torch.inf)
    ordered = torch.sort(values, dim=1).values
    n = valid[:, ring].sum(dim=1)
    lo = ordered.gather(1, ((n - 1).clamp(min=0) // 2)[:, None])[:, 0]
    hi = ordered.gather(1, (n // 2).clamp(max=values.shape[1] - 1)[:, None])[:, 0]
    median = 0.5 * (lo + hi)
    # a ring entirely outside the image cannot occur for a peak inside it; guard as numpy does
    smallest = torch.where(valid, windows, torch.inf).flatten(1).min(dim=1).values
    return torch.where(n > 0, median, smallest)


def _gather(frames: torch.Tensor, peaks: torch.Tensor, frame_of: torch.Tensor, half: int):
    """Windows ``(K, W, W)`` float64 around the peaks, the mask of pixels inside the image and the offsets."""
    height, width = frames.shape[1:]
    offsets = torch.arange(-half, half + 1, device=frames.device)
    rows = peaks[:, 0:1] + offsets[None, :]
    cols = peaks[:, 1:2] + offsets[None, :]
    valid = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    rows = rows.clamp(0, height - 1)
    cols = cols.clamp(0, width - 1)
    windows = frames[frame_of[:, None, None], rows[:, :, None], cols[:, None, :]].to(torch.float64)
    return windows, valid, offsets.to(torch.float64)


def _start(windows: torch.Tensor, valid: torch.Tensor, half: int, sigma_psf: float):
    """Start parameters ``(K, 5)`` (centroid of the 3 x 3 core above the ring), ring background, excess."""
    background0 = _ring_median(windows, valid)
    excess = torch.where(valid, windows - background0[:, None, None], 0.0)
    core = excess[:, half - 1: half + 2, half - 1: half + 2].clamp(min=0.0)
    core_sum = core.sum(dim=(1, 2))
    safe = torch.where(core_sum > 0, core_sum, 1.0)
    arm = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, device=windows.device)
    dy0 = torch.where(core_sum > 0, (core.sum(dim=2) * arm).sum(dim=1) / safe, 0.0)
    dx0 = torch.where(core_sum > 0, (core.sum(dim=1) * arm).sum(dim=1) / safe, 0.0)
    photons0 = excess.sum(dim=(1, 2)).clamp(min=1.0)
    start = torch.stack([dy0, dx0, photons0, background0, torch.full_like(dy0, sigma_psf)], dim=1)
    return start, background0, excess


def _neighbour_pairs(peaks: np.ndarray, frame_of: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """``(target, source)`` indices of every ordered pair of peaks of one frame within ``radius`` px."""
    spacing = 2.0 * radius + 10.0  # frames further apart than any pair radius
    points = np.column_stack([frame_of * spacing, peaks]).astype(np.float64)
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])


def _neighbour_rounds(fit: dict, pairs: tuple[torch.Tensor, torch.Tensor], n_frames: int) -> None:
    """Refit crowded spots with their neighbours' fitted light, in place (``fit``: the batch's fit state)."""
    params, converged, peaks, frame_of, offsets = (fit[k] for k in ("params", "converged", "peaks", "frame_of",
                                                                    "offsets"))
    target, source = pairs
    device = params.device
    frame_active = torch.ones(n_frames, dtype=torch.bool, device=device)
    w = offsets.numel()
    for _ in range(NEIGHBOUR_ROUNDS):
        usable = converged & torch.isfinite(params).all(dim=1) & (params[:, :2].abs() <= 1.0).all(dim=1)
        keep = usable[source] & frame_active[frame_of[target]]
        t, s = target[keep], source[keep]
        if t.numel() == 0:
            break
        centre = peaks[s].to(torch.float64) + params[s, :2] - peaks[t].to(torch.float64)
        sigma = params[s, 4]
        ey = _psf_1d(centre[:, 0], sigma, offsets)[0]
        ex = _psf_1d(centre[:, 1], sigma, offsets)[0]
        contribution = params[s, 2, None, None] * ey[:, :, None] * ex[:, None, :]
        crowded, slot = torch.unique(t, return_inverse=True)
        light = torch.zeros((crowded.numel(), w, w), dtype=torch.float64, device=device)
        light.index_add_(0, slot, contribution)
        before = params[crowded, :2].clone()
        new, new_ok = _fit(fit["data"][crowded], fit["mask"][crowded], offsets, fit["start"][crowded], fit["limits"],
                           fit["max_iterations"], extra=light.reshape(crowded.numel(), -1))
        params[crowded] = new
        converged[crowded] = new_ok
        change = (new[:, :2] - before).abs().amax(dim=1)
        frames = frame_of[crowded]
        frame_change = torch.zeros(n_frames, dtype=torch.float64, device=device)
        frame_change = frame_change.scatter_reduce(0, frames, change, reduce="amax", include_self=True)
        had = torch.zeros(n_frames, dtype=torch.bool, device=device)
        had[frames] = True
        # numpy stops a frame's rounds when its crowded spots moved < 0.01 px (NaN: go on)
        frame_active &= had & ~(frame_change < 0.01)


def localize_batch(
    frames_photons: torch.Tensor,
    peaks_yx: np.ndarray,
    frame_of: np.ndarray,
    acquisition: Acquisition,
    *,
    window_half_px: int | None = None,
    max_iterations: int = 50,
    neighbours: bool = True,
) -> dict[str, np.ndarray]:
    """Localize the spots of a batch of frames already in photo-electrons.

    Parameters
    ----------
    frames_photons
        ``(B, Y, X)`` tensor (any device); the fit runs on its device.
    peaks_yx
        ``(K, 2)`` integer peak pixels ``(y, x)`` inside the frames.
    frame_of
        ``(K,)`` index in the batch of each peak's frame.
    acquisition
        Read noise, pixel size and PSF width.
    window_half_px, max_iterations, neighbours
        As for :func:`~napari_spt_diffusion.tracking.localize.localize_arrays`.

    Returns
    -------
    dict
        ``(K,)`` numpy arrays with the :data:`~..tracking.localize.LOCALIZATION_COLUMNS` keys
        (``y_px, x_px`` in px, ``photons`` and ``background`` in photo-electrons (per pixel),
        ``sigma_px``, ``loc_precision_nm``, ``fit_ok``), in the order of ``peaks_yx``.
    """
    peaks_np = np.asarray(peaks_yx, dtype=np.int64).reshape(-1, 2)
    frame_np = np.asarray(frame_of, dtype=np.int64).reshape(-1)
    k = len(peaks_np)
    if k == 0:
        out = {c: np.zeros(0, dtype=np.float64) for c in LOCALIZATION_COLUMNS}
        out["fit_ok"] = np.zeros(0, dtype=bool)
        return out
    device = frames_photons.device
    sigma_psf = float(acquisition.psf_sigma_px)
    half = int(window_half_px) if window_half_px is not None else default_window_half_px(sigma_psf)
    limits = FitLimits.for_psf(acquisition, sigma_psf)
    peaks = torch.as_tensor(peaks_np, device=device)
    frames = torch.as_tensor(frame_np, device=device)
    windows, valid, offsets = _gather(frames_photons, peaks, frames, half)
    start, background0, excess = _start(windows, valid, half, sigma_psf)
    data = (windows + limits.read_var).clamp(min=0.0).reshape(k, -1)
    mask = valid.reshape(k, -1).to(torch.float64)
    params, converged = _fit(data, mask, offsets, start, limits, int(max_iterations))
    if neighbours and k > 1:
        target, source = _neighbour_pairs(peaks_np, frame_np, 3.0 * half)
        if target.size:
            fit = {"params": params, "converged": converged, "peaks": peaks, "frame_of": frames, "offsets": offsets,
                   "data": data, "mask": mask, "start": start, "limits": limits,
                   "max_iterations": int(max_iterations)}
            pairs = (torch.as_tensor(target, device=device), torch.as_tensor(source, device=device))
            _neighbour_rounds(fit, pairs, int(frames_photons.shape[0]))
    sane = (
        torch.isfinite(params).all(dim=1)
        & (params[:, 0].abs() <= MAX_SHIFT_PX) & (params[:, 1].abs() <= MAX_SHIFT_PX)
        & (params[:, 2] > 1e-3)
        & (params[:, 4] > limits.sigma_lo * 1.001) & (params[:, 4] < limits.sigma_hi * 0.999)
    )
    ok = (converged & sane).cpu().numpy()
    sane_np = sane.cpu().numpy()
    params_np = params.cpu().numpy()
    if not sane_np.all():
        bad = ~sane
        params_np[~sane_np] = _centroid_fallback(excess[bad].cpu().numpy(), offsets.cpu().numpy(), sigma_psf,
                                                 background0[bad].cpu().numpy())
    sigma_nm = acquisition.px_to_nm(params_np[:, 4])
    precision = mortensen_precision_nm(params_np[:, 2], params_np[:, 3], sigma_nm, acquisition.pixel_size_nm,
                                       acquisition.read_noise_e)
    return {
        "y_px": peaks_np[:, 0] + params_np[:, 0],
        "x_px": peaks_np[:, 1] + params_np[:, 1],
        "photons": params_np[:, 2],
        "background": params_np[:, 3],
        "sigma_px": params_np[:, 4],
        "loc_precision_nm": precision,
        "fit_ok": ok,
    }
