"""Classical diffusion tensors from the spot images: blur moments and their combination with the CVE.

* :func:`blur_moment_tensor` -- the intra-frame spread of the spot (motion blur): the
  second moment of a frame's image exceeds the static spot's by ``2 R dt D``.
* :func:`combined_tensor` -- minimum-variance combination of the CVE
  (:func:`~napari_spt_diffusion.estimation.classical.cve_tensor`) and blur-moment
  tensors (inverse-variance weights corrected for their shared path noise).

As in :mod:`~napari_spt_diffusion.estimation.classical`, every estimator works in pixels
and frames internally, returns um^2/s, and has a single-track form and a vectorised
``*_batch`` form over ``N`` tracks of equal length (NaN rows mark missing frames).
Patches are ``(T, P, P)`` (or ``(N, T, P, P)``) photo-electron images centred on the
localized positions, ``P`` odd.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

from ..acquisition import Acquisition
from .classical import (
    ClassicalInputError,
    TensorEstimate,
    _as_batch,
    _finish_tensor,
    cve_tensor_batch,
    cve_variance_px2,
    regular_positions,
)
from .tensor import eigen_from_tensor, tensor_from_eigen

__all__ = [
    "blur_moment_tensor",
    "blur_moment_tensor_batch",
    "combined_tensor",
    "combined_tensor_batch",
]


# --------------------------------------------------------------------- blur moments


def _patch_grid(patch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    half = patch_size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    ring = (np.abs(yy) == half) | (np.abs(xx) == half)
    return yy, xx, ring


def _weighted_moments(
    images: np.ndarray, weights: np.ndarray, yy: np.ndarray, xx: np.ndarray, frame_ok: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame weighted central second moments ``(N, T, 3)`` (yy, xx, xy) and their frame mean ``(N, 3)``."""
    n, t, p, _ = images.shape
    basis = np.stack(
        [np.ones(p * p), yy.ravel(), xx.ravel(), (yy * yy).ravel(), (xx * xx).ravel(), (yy * xx).ravel()], axis=1
    )
    raw = ((images * weights).reshape(n * t, p * p) @ basis).reshape(n, t, 6)
    total = raw[..., 0]
    ok = frame_ok & (total > 0)
    total = np.where(ok, total, 1.0)
    cy = raw[..., 1] / total
    cx = raw[..., 2] / total
    per_frame = np.stack(
        [raw[..., 3] / total - cy * cy, raw[..., 4] / total - cx * cx, raw[..., 5] / total - cy * cx], axis=-1
    )
    per_frame = np.where(ok[..., None], per_frame, np.nan)
    with np.errstate(invalid="ignore"):
        if t == 0 or not np.any(ok):
            mean = np.full((n, 3), np.nan)
        else:
            counts = ok.sum(axis=1)[:, None]
            mean = np.where(counts > 0, np.nansum(per_frame, axis=1) / np.maximum(counts, 1), np.nan)
    return per_frame, mean


def _pooled_ring_mean(images: np.ndarray, ring_ok: np.ndarray) -> np.ndarray:
    """Mean of the valid outer-ring pixels of all frames of each track ``(N,)``."""
    total = np.sum(np.where(ring_ok, images, 0.0), axis=(1, 2, 3))
    count = np.sum(ring_ok, axis=(1, 2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, 0.0)


def _gaussian_images(cy: np.ndarray, cx: np.ndarray, cov: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Unit-flux Gaussian spots ``(N, T, P, P)`` float32 with per-track covariance ``cov`` (N, 3) at (cy, cx) (N, T)."""
    a, c, b = cov[:, 0], cov[:, 1], cov[:, 2]
    det = a * c - b * b
    f32 = np.float32
    iyy = (-0.5 * c / det).astype(f32)[:, None, None]
    ixx = (-0.5 * a / det).astype(f32)[:, None, None]
    ixy = (b / det).astype(f32)[:, None, None, None]  # -0.5 * 2 * (-b / det)
    dy = (yy[:, 0].astype(f32) - cy[..., None].astype(f32))  # (N, T, P)
    dx = (xx[0].astype(f32) - cx[..., None].astype(f32))
    q = (iyy * dy * dy)[..., :, None] + (ixx * dx * dx)[..., None, :]
    q += ixy * dy[..., :, None] * dx[..., None, :]
    np.exp(q, out=q)
    q *= (1.0 / (2.0 * np.pi * np.sqrt(det))).astype(f32)[:, None, None, None]
    return q


def _clamp_cov(cov: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Clamp the eigenvalues of symmetric covariances ``(N, 3)`` (yy, xx, xy) to ``[low, high]``."""
    tensor = np.stack([np.stack([cov[:, 0], cov[:, 2]], -1), np.stack([cov[:, 2], cov[:, 1]], -1)], -2)
    l1, l2, theta = eigen_from_tensor(tensor)
    out_of_range = (l2 < low) | (l1 > high)
    t = tensor_from_eigen(np.clip(l1, low, high), np.clip(l2, low, high), theta)
    return np.stack([t[:, 0, 0], t[:, 1, 1], t[:, 0, 1]], -1), out_of_range


def _unweight_gaussian(moments: np.ndarray, weight_sigma: float) -> np.ndarray:
    """Covariance ``C`` of a Gaussian spot whose Gaussian-weighted moments are ``M``.

    For an untruncated Gaussian spot of covariance ``C`` under a Gaussian weight
    ``W = w^2 I`` centred on it, the weighted moments are ``M = (C^-1 + W^-1)^-1``,
    so ``C = w^2 M (w^2 I - M)^-1``. ``M`` is ``(N, 3)`` (yy, xx, xy); eigenvalues of
    ``M`` are kept below ``0.95 w^2`` (beyond that the weight hides the spot's size).
    """
    w2 = weight_sigma**2
    m, _ = _clamp_cov(np.where(np.isfinite(moments), moments, 0.0), 1e-6, 0.95 * w2)
    a_yy, a_xx, a_xy = w2 - m[:, 0], w2 - m[:, 1], -m[:, 2]
    det = a_yy * a_xx - a_xy * a_xy
    c_yy = w2 * (m[:, 0] * a_xx - m[:, 2] * a_xy) / det
    c_xx = w2 * (m[:, 1] * a_yy - m[:, 2] * a_xy) / det
    c_xy = w2 * 0.5 * ((m[:, 2] * a_xx - m[:, 0] * a_xy) + (m[:, 2] * a_yy - m[:, 1] * a_xy)) / det
    out = np.stack([c_yy, c_xx, c_xy], axis=-1)
    return np.where(np.all(np.isfinite(moments), axis=-1, keepdims=True), out, np.nan)


_BLUR_CHUNK_TRACKS = 1024


def blur_moment_tensor_batch(
    patches_photons: np.ndarray,
    acquisition: Acquisition,
    *,
    subpixel_offset_px: np.ndarray | None = None,
    outside_mask: np.ndarray | None = None,
    frame_valid: np.ndarray | None = None,
    weight_sigma_px: float | None = None,
    max_iter: int = 10,
) -> dict[str, np.ndarray]:
    """Blur-moment diffusion tensor of ``N`` tracks (see :func:`blur_moment_tensor`).

    Tracks are processed in chunks of 1,024 so that memory stays bounded.

    Parameters
    ----------
    patches_photons
        ``(N, T, P, P)`` patches in photo-electrons, centred on the localized positions.
    acquisition
        PSF width, frame interval, pixel size and blur coefficient.
    subpixel_offset_px
        ``(N, T, 2)`` localized position minus patch centre (px); the weight's centre
        (the patch's intensity centroid) is kept within 1.5 px of it. ``None``: of the
        patch centre.
    outside_mask
        ``(N, T, P, P)`` True for pixels outside the image (ignored).
    frame_valid
        ``(N, T)`` False for frames to skip (e.g. padding).
    weight_sigma_px
        Width of the Gaussian weight of the moments (px); default ``2 * psf_sigma_px``.
    max_iter
        Iterations of the moment matching.

    Returns
    -------
    dict
        ``D1_um2_s, D2_um2_s, theta_deg`` (N,), ``clipped`` (N,) bool,
        ``var_D1_um2_s2, var_D2_um2_s2`` (N,) sampling variance estimated from the
        frame-to-frame scatter, ``tensor_px2_frame`` (N, 2, 2), ``background_photons`` (N,).
    """
    shape = np.shape(patches_photons)
    if len(shape) != 4 or shape[-1] != shape[-2] or shape[-1] % 2 == 0:
        raise ClassicalInputError(f"patches must have shape (N, T, P, P) with P odd, got {shape}")
    n = shape[0]
    parts = []
    for a in range(0, max(n, 1), _BLUR_CHUNK_TRACKS):
        rows = slice(a, min(a + _BLUR_CHUNK_TRACKS, n))
        parts.append(
            _blur_moment_chunk(
                np.asarray(patches_photons[rows], dtype=float), acquisition, _rows_of(subpixel_offset_px, rows),
                _rows_of(outside_mask, rows), _rows_of(frame_valid, rows), weight_sigma_px, max_iter,
            )
        )
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _rows_of(x: np.ndarray | None, rows: slice) -> np.ndarray | None:
    """Rows ``rows`` of an optional per-track array."""
    return None if x is None else np.asarray(x)[rows]


def _blur_moment_chunk(
    patches: np.ndarray,
    acquisition: Acquisition,
    subpixel_offset_px: np.ndarray | None,
    outside_mask: np.ndarray | None,
    frame_valid: np.ndarray | None,
    weight_sigma_px: float | None,
    max_iter: int,
) -> dict[str, np.ndarray]:
    """:func:`blur_moment_tensor_batch` on one chunk of tracks."""
    n, t, p, _ = patches.shape
    blur = acquisition.blur_coefficient
    yy, xx, ring = _patch_grid(p)
    valid_px = np.ones(patches.shape, dtype=bool) if outside_mask is None else ~np.asarray(outside_mask, dtype=bool)
    frame_ok = np.ones((n, t), dtype=bool) if frame_valid is None else np.asarray(frame_valid, dtype=bool)
    frame_ok = frame_ok & np.all(np.isfinite(patches), axis=(-1, -2))
    patches = np.where(np.isfinite(patches), patches, 0.0)
    valid_px = valid_px & frame_ok[..., None, None]
    ring_ok = ring & valid_px

    psf_var = acquisition.psf_sigma_px**2
    sw = 2.0 * acquisition.psf_sigma_px if weight_sigma_px is None else float(weight_sigma_px)
    background = _pooled_ring_mean(patches, ring_ok)
    signal = patches - background[:, None, None, None]
    # Centre of the weight: the intensity centroid of the background-subtracted patch,
    # an unbiased estimate of the mean exposed position of a blurred spot (a Gaussian fit
    # of a blurred streak leans towards its brightest part). With localized offsets given,
    # it is kept within 1.5 px of them (a guard against a bright neighbour).
    w0 = valid_px.astype(float)
    s = np.sum(signal * w0, axis=(-1, -2))
    s_safe = np.where(s > 0, s, 1.0)
    centroid = np.stack(
        [np.sum(signal * w0 * yy, axis=(-1, -2)) / s_safe, np.sum(signal * w0 * xx, axis=(-1, -2)) / s_safe], -1
    )
    if subpixel_offset_px is None:
        anchor = np.zeros((n, t, 2))
        centroid = np.where((s > 0)[..., None], centroid, 0.0)
    else:
        anchor = np.asarray(subpixel_offset_px, dtype=float).reshape(n, t, 2)
        anchor = np.where(np.isfinite(anchor), anchor, 0.0)
        centroid = np.where((s > 0)[..., None], centroid, anchor)
    centre = np.clip(centroid, anchor - 1.5, anchor + 1.5)
    weights = np.exp(-0.5 * ((yy - centre[..., 0, None, None]) ** 2 + (xx - centre[..., 1, None, None]) ** 2) / sw**2)
    weights = weights * valid_px

    per_frame, measured = _weighted_moments(signal, weights, yy, xx, frame_ok)
    pixel_var = psf_var + 1.0 / 12.0
    high = (p / 2.0) ** 2
    # Start from the closed-form inversion for an untruncated Gaussian spot, then correct
    # with the model: C <- C + G^-1(measured) - G^-1(predicted(C)), where predicted(C) is
    # a Gaussian spot of covariance C put through exactly the same background, weighting
    # and truncation steps as the data. Converges in a few iterations since
    # G^-1(predicted(C)) differs from C only by the small truncation/background terms.
    target = _unweight_gaussian(measured, sw)
    spot_cov = target.copy()
    saturated = np.zeros(n, dtype=bool)
    default_cov = np.array([pixel_var, pixel_var, 0.0])
    for _ in range(max_iter):
        model_cov, saturated = _clamp_cov(np.where(np.isfinite(spot_cov), spot_cov, default_cov), 0.5 * pixel_var, high)
        model = _gaussian_images(centre[..., 0], centre[..., 1], model_cov, yy, xx)
        model = model - _pooled_ring_mean(model, ring_ok)[:, None, None, None]
        _, predicted = _weighted_moments(model, weights, yy, xx, frame_ok)
        new_cov = model_cov + (target - _unweight_gaussian(predicted, sw))
        change = np.nanmax(np.abs(new_cov - spot_cov), initial=0.0)
        spot_cov = new_cov
        if change < 5e-4:
            break
    blur_cov = spot_cov - np.array([pixel_var, pixel_var, 0.0])

    tensor = np.stack(
        [np.stack([blur_cov[:, 0], blur_cov[:, 2]], -1), np.stack([blur_cov[:, 2], blur_cov[:, 1]], -1)], -2
    )
    tensor = tensor / (2.0 * blur) if blur > 0 else np.full_like(tensor, np.nan)
    D1, D2, theta = eigen_from_tensor(tensor)
    out = _finish_tensor(D1, D2, theta, acquisition)
    out["clipped"] = out["clipped"] | saturated | (np.sum(frame_ok, axis=1) < 1)

    # Sampling variance from the frame-to-frame scatter of the moments along each axis,
    # divided by the slope of the weighted moment with respect to the spot variance
    # ((w^2 / (c + w^2))^2 for a Gaussian spot of variance c under a Gaussian weight w).
    rad = np.deg2rad(np.where(np.isfinite(theta), theta, 0.0))
    axes = [np.stack([np.sin(rad), np.cos(rad)], -1), np.stack([np.cos(rad), -np.sin(rad)], -1)]
    n_ok = np.sum(frame_ok, axis=1)
    spot_var = [np.clip(D1, 0, None) * 2 * blur + pixel_var, np.clip(D2, 0, None) * 2 * blur + pixel_var]
    scale = acquisition.um2_s_per_px2_frame**2
    for name, e, c in zip(("var_D1_um2_s2", "var_D2_um2_s2"), axes, spot_var):
        proj = (
            per_frame[..., 0] * e[:, None, 0] ** 2
            + per_frame[..., 1] * e[:, None, 1] ** 2
            + 2.0 * per_frame[..., 2] * e[:, None, 0] * e[:, None, 1]
        )
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            var_mean = np.nanvar(proj, axis=1, ddof=1) / n_ok if t > 1 else np.full(n, np.nan)
            slope = (sw**2 / (c + sw**2)) ** 2
            out[name] = (
                np.where(n_ok > 1, var_mean / slope**2 / (2.0 * blur) ** 2 * scale, np.nan)
                if blur > 0
                else np.full(n, np.nan)
            )
    out["tensor_px2_frame"] = tensor
    out["background_photons"] = background
    return out


def blur_moment_tensor(
    patches_photons: np.ndarray,
    acquisition: Acquisition,
    *,
    subpixel_offset_px: np.ndarray | None = None,
    outside_mask: np.ndarray | None = None,
    weight_sigma_px: float | None = None,
) -> TensorEstimate:
    """Diffusion tensor from the motion blur of the spot within each exposure.

    During an exposure the camera averages the ``m`` exposed sub-positions of a frame of
    ``n`` sub-steps (each ``dt/n`` long). For Brownian motion their scatter about their
    mean has, per axis, the expected variance ``2 D (dt/n) (m^2 - 1) / (6 m) = 2 R D dt``
    with ``R = (m^2 - 1) / (6 m n)`` the acquisition's blur coefficient (``~ D T_e / 3``
    for continuous exposure ``T_e = dt``); as a tensor ``2 R dt D``. The image of a
    frame is the PSF (variance ``sigma^2``, plus ``1/12 px^2`` from pixel integration)
    convolved with that scatter, so its second moment exceeds the static spot's by
    ``2 R dt D``.

    Implementation: the background (mean of the patches' outer ring over the track) is
    subtracted; second moments under a Gaussian weight (width ``2 sigma_psf``, centred on
    each patch's intensity centroid; the weight cuts the noise of the outer pixels, which
    dominates unweighted moments) are averaged over frames; the spot covariance ``C`` is
    then found by moment matching -- starting from the closed form for an untruncated
    Gaussian, ``C = w^2 M (w^2 I - M)^-1``, ``C`` is corrected until a Gaussian spot of
    covariance ``C`` put through exactly the same background, weighting and truncation
    steps gives the measured moments ``M``. ``B = C - (sigma^2 + 1/12) I`` and
    ``D = B / (2 R dt)``, eigen-decomposed and clipped at 0 (flagged) when not
    positive-definite.

    The Gaussian model is exact for Gaussian spots; a blurred spot is a sum of PSFs along
    a random path, which the weighting sees slightly differently. Measured on noise-free
    standard-acquisition spots (10 exposed sub-steps), the bias of ``D1 + D2`` is -1 % at
    0.5 um^2/s and -4 % at 6 um^2/s; with only 2-3 exposed sub-positions (strongly
    bimodal spots) it grows to +5 % ... +35 %.

    Parameters
    ----------
    patches_photons
        ``(T, P, P)`` patches of one track in photo-electrons.
    acquisition
        PSF width, frame interval, pixel size and blur coefficient (``R = 0`` -- no motion
        blur -- gives NaN).
    subpixel_offset_px
        ``(T, 2)`` localized position minus patch centre (px), as in ``TrackPatches``.
    outside_mask
        ``(T, P, P)`` pixels outside the image, ignored.
    weight_sigma_px
        Width of the Gaussian weight (px); default ``2 * psf_sigma_px``.

    Returns
    -------
    TensorEstimate
        (``loc_variance_um2`` is NaN: this estimator does not use positions.)
    """
    patches = np.asarray(patches_photons, dtype=float)
    if patches.ndim != 3:
        raise ClassicalInputError(f"patches must have shape (T, P, P), got {patches.shape}")
    out = blur_moment_tensor_batch(
        patches[None],
        acquisition,
        subpixel_offset_px=None if subpixel_offset_px is None else np.asarray(subpixel_offset_px)[None],
        outside_mask=None if outside_mask is None else np.asarray(outside_mask)[None],
        weight_sigma_px=weight_sigma_px,
    )
    return TensorEstimate(
        D1_um2_s=float(out["D1_um2_s"][0]),
        D2_um2_s=float(out["D2_um2_s"][0]),
        theta_deg=float(out["theta_deg"][0]),
        clipped=bool(out["clipped"][0]),
    )


# ------------------------------------------------------------------------- combined


@lru_cache(maxsize=32)
def _cve_blur_path_covariance(n_frames: int, substeps: int, exposed: int) -> float:
    """Covariance of the CVE and blur-moment estimates due to the particle's own path.

    Both estimators are quadratic forms in the same sub-step increments ``z`` of a 1-D
    Brownian path (variance ``v = 2 D dt / n`` each): the CVE through the displacements
    of the frame-mean positions, the blur moments through the scatter of the exposed
    sub-positions within each frame. For ``z ~ N(0, v I)``,
    ``Cov(z^T A z, z^T B z) = 2 v^2 tr(A B)``. Returns ``kappa`` with
    ``Cov = kappa D^2`` (D in px^2/frame); tracks longer than 64 frames scale as ``1/T``.
    """
    frames = int(min(n_frames, 64))
    n = frames * substeps
    m = exposed
    blur = (m * m - 1) / (6.0 * m * substeps)
    if frames < 3 or blur <= 0:
        return 0.0
    walk = np.tril(np.ones((n, n)), -1)  # position at sub-step q = sum of increments j < q
    means = np.zeros((frames, n))
    spread = np.zeros((n, n))
    centre = np.eye(m) - 1.0 / m
    for f in range(frames):
        exposed_rows = walk[f * substeps : f * substeps + m]
        means[f] = exposed_rows.mean(axis=0)
        spread += exposed_rows.T @ centre @ exposed_rows / m
    spread /= 2.0 * blur * frames
    k = frames - 1
    disp = np.diff(means, axis=0)
    off = np.eye(k, k=1) + np.eye(k, k=-1)
    cve = disp.T @ (np.eye(k) / (2.0 * k) + off / (2.0 * (k - 1))) @ disp
    v = 2.0 / substeps
    kappa = 2.0 * v * v * float(np.sum(cve * spread))
    return kappa * frames / n_frames


def combined_tensor_batch(
    positions_px: np.ndarray,
    patches_photons: np.ndarray,
    acquisition: Acquisition,
    *,
    subpixel_offset_px: np.ndarray | None = None,
    outside_mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Minimum-variance combination of the CVE and blur-moment tensors of ``N`` tracks.

    The CVE uses the frame-to-frame displacements, the blur moments the spread *within*
    each frame. Their errors are partly independent (localization noise, pixel noise)
    and partly shared: both follow the realised path, so a path that happened to wander
    more inflates both. The combination is done per principal axis: both tensors are
    written in the eigenbasis of the blur-moment tensor (the more precise of the two for
    all but the slowest particles) and each diagonal element is averaged with the
    minimum-variance weight ``w_cve = (var_b - cov) / (var_b + var_c - 2 cov)``, clipped
    to [0, 1] (inverse-variance weighting when ``cov = 0``), where

    * ``var_b`` is the blur-moment variance from the frame-to-frame scatter of its moments,
    * ``var_c`` the CVE variance from its exact Gaussian-increment formula
      (:func:`cve_variance_px2`) at the blur-moment eigenvalue and the CVE localization
      variance (so that no weight depends on the CVE's own noisy value),
    * ``cov = kappa D^2`` the path covariance of the two, computed exactly for the
      acquisition's sub-step scheme (:func:`_cve_blur_path_covariance`).

    The off-diagonal element gets the mean CVE weight of the two axes.
    Falls back to whichever estimate exists when the other is undefined.

    Parameters
    ----------
    positions_px
        ``(N, T, 2)`` localized ``(y, x)`` positions, NaN rows for missing frames.
    patches_photons
        ``(N, T, P, P)`` patches in photo-electrons (rows of missing frames are ignored).
    acquisition
        Acquisition settings.
    subpixel_offset_px, outside_mask
        As in :func:`blur_moment_tensor_batch`.

    Returns
    -------
    dict
        ``D1_um2_s, D2_um2_s, theta_deg, clipped, loc_variance_um2, weight_cve_D1,
        weight_cve_D2`` (N,) arrays.
    """
    positions = _as_batch(positions_px)
    frame_valid = np.all(np.isfinite(positions), axis=-1)
    cve = cve_tensor_batch(positions, acquisition)
    blur = blur_moment_tensor_batch(
        patches_photons,
        acquisition,
        subpixel_offset_px=subpixel_offset_px,
        outside_mask=outside_mask,
        frame_valid=frame_valid,
    )
    to_px = 1.0 / acquisition.um2_s_per_px2_frame
    b1 = blur["D1_um2_s"] * to_px
    b2 = blur["D2_um2_s"] * to_px
    rad = np.deg2rad(np.where(np.isfinite(blur["theta_deg"]), blur["theta_deg"], 0.0))
    e1 = np.stack([np.sin(rad), np.cos(rad)], -1)  # (y, x) of the blur D1 axis
    e2 = np.stack([np.cos(rad), -np.sin(rad)], -1)
    v = cve["tensor_px2_frame"]
    v11 = np.einsum("ni,nij,nj->n", e1, v, e1)
    v22 = np.einsum("ni,nij,nj->n", e2, v, e2)
    v12 = np.einsum("ni,nij,nj->n", e1, v, e2)

    loc_var_px2 = cve["loc_variance_um2"] / acquisition.pixel_size_um**2
    k = cve["n_displacements"]
    var_c1 = cve_variance_px2(b1, loc_var_px2, acquisition.blur_coefficient, k)
    var_c2 = cve_variance_px2(b2, loc_var_px2, acquisition.blur_coefficient, k)
    var_b1 = blur["var_D1_um2_s2"] * to_px**2
    var_b2 = blur["var_D2_um2_s2"] * to_px**2

    kappa = _cve_blur_path_covariance(positions.shape[1], acquisition.substeps_per_frame, acquisition.exposed_substeps)
    cov1 = kappa * np.clip(b1, 0, None) ** 2
    cov2 = kappa * np.clip(b2, 0, None) ** 2

    def weight(var_cve: np.ndarray, var_blur: np.ndarray, cov: np.ndarray) -> np.ndarray:
        # minimum-variance weight of two correlated unbiased estimates, clipped to [0, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.clip((var_blur - cov) / (var_cve + var_blur - 2.0 * cov), 0.0, 1.0)
        w = np.where(np.isfinite(var_blur) & ~np.isfinite(var_cve), 0.0, w)
        w = np.where(~np.isfinite(var_blur) & np.isfinite(var_cve), 1.0, w)
        return np.where(np.isfinite(w), w, 0.5)

    w1, w2 = weight(var_c1, var_b1, cov1), weight(var_c2, var_b2, cov2)
    blur_ok = np.isfinite(b1) & np.isfinite(b2)
    cve_ok = np.all(np.isfinite(v), axis=(1, 2))
    w1 = np.where(~blur_ok, 1.0, np.where(~cve_ok, 0.0, w1))
    w2 = np.where(~blur_ok, 1.0, np.where(~cve_ok, 0.0, w2))
    d11 = w1 * np.where(cve_ok, v11, 0.0) + (1 - w1) * np.where(blur_ok, b1, 0.0)
    d22 = w2 * np.where(cve_ok, v22, 0.0) + (1 - w2) * np.where(blur_ok, b2, 0.0)
    d12 = 0.5 * (w1 + w2) * np.where(cve_ok, v12, 0.0)
    # back to the image frame: D = d11 e1 e1^T + d22 e2 e2^T + d12 (e1 e2^T + e2 e1^T)
    tensor = (
        d11[:, None, None] * np.einsum("ni,nj->nij", e1, e1)
        + d22[:, None, None] * np.einsum("ni,nj->nij", e2, e2)
        + d12[:, None, None] * (np.einsum("ni,nj->nij", e1, e2) + np.einsum("ni,nj->nij", e2, e1))
    )
    none = ~blur_ok & ~cve_ok
    tensor[none] = np.nan
    D1, D2, theta = eigen_from_tensor(tensor)
    out = _finish_tensor(D1, D2, theta, acquisition)
    out["loc_variance_um2"] = cve["loc_variance_um2"]
    out["weight_cve_D1"] = w1
    out["weight_cve_D2"] = w2
    return out


def combined_tensor(
    positions_px: np.ndarray,
    patches_photons: np.ndarray,
    acquisition: Acquisition,
    *,
    subpixel_offset_px: np.ndarray | None = None,
    outside_mask: np.ndarray | None = None,
    frames: np.ndarray | None = None,
) -> TensorEstimate:
    """CVE and blur-moment tensors combined by inverse-variance weighting (see
    :func:`combined_tensor_batch`).

    Parameters
    ----------
    positions_px
        ``(T, 2)`` localized ``(y, x)`` positions in pixels.
    patches_photons
        ``(T, P, P)`` the track's patches in photo-electrons (same rows as positions).
    acquisition
        Acquisition settings.
    subpixel_offset_px, outside_mask
        ``(T, 2)`` and ``(T, P, P)`` as in ``TrackPatches``.
    frames
        ``(T,)`` frame numbers for tracks with gaps; ``None`` means consecutive.

    Returns
    -------
    TensorEstimate
    """
    positions = np.asarray(positions_px, dtype=float)
    patches = np.asarray(patches_photons, dtype=float)
    if patches.ndim != 3 or len(patches) != len(positions):
        raise ClassicalInputError("patches must have shape (T, P, P) with one patch per position")
    grid = regular_positions(positions, frames)
    rows = np.arange(len(positions)) if frames is None else np.asarray(frames) - int(np.asarray(frames)[0])
    full = np.zeros((len(grid),) + patches.shape[1:])
    full[rows] = patches
    offsets = None
    if subpixel_offset_px is not None:
        offsets = np.zeros((len(grid), 2))
        offsets[rows] = np.asarray(subpixel_offset_px, dtype=float)
    mask = None
    if outside_mask is not None:
        mask = np.zeros(full.shape, dtype=bool)
        mask[rows] = np.asarray(outside_mask, dtype=bool)
    out = combined_tensor_batch(
        grid[None],
        full[None],
        acquisition,
        subpixel_offset_px=None if offsets is None else offsets[None],
        outside_mask=None if mask is None else mask[None],
    )
    return TensorEstimate(
        D1_um2_s=float(out["D1_um2_s"][0]),
        D2_um2_s=float(out["D2_um2_s"][0]),
        theta_deg=float(out["theta_deg"][0]),
        loc_variance_um2=float(out["loc_variance_um2"][0]),
        clipped=bool(out["clipped"][0]),
    )
