"""Spot detection of a batch of frames on torch tensors: the method of :mod:`~..tracking.detect`.

Per frame, as :func:`~napari_spt_diffusion.tracking.detect.detect_photons`: the frame (in
photo-electrons) minus a rough level, filtered by the Difference of Gaussians matched to
the PSF (scipy's kernels: width ``sigma``, radius ``int(3.5 sigma + 0.5)``, borders
reflected about the pixel edge, each 1-D pass summed in float64 and stored in float32);
the robust noise (1.4826 x MAD of the DoG on a regular grid of about 16,000 pixels, never
below the acquisition's noise floor); every pixel whose DoG, divided by the border noise
gain, exceeds ``threshold_snr`` times that noise and that is a maximum of its
``(2 floor(min_sep) + 1)^2`` window (edges replicated) is a candidate. The filtering, noise
and maxima run on the tensors' device for the whole batch at once; the few candidates then
go to the CPU, where the greedy minimum-separation rule of the numpy path is applied to
each frame (brightest first), so ties are broken as there.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..acquisition import Acquisition
from ..tracking.detect import (
    _MAD_TO_SIGMA,
    _TRUNCATE,
    DetectionSettings,
    _dog_kernel_l2,
    _enforce_separation,
    border_noise_gain,
    dog_sigmas_px,
)

__all__ = ["dog_filter_batch", "robust_noise_batch", "detect_batch"]


def _gaussian_weights(sigma: float, device: torch.device) -> tuple[torch.Tensor, int]:
    """scipy.ndimage's 1-D Gaussian kernel (float64, sums to 1) and its radius (px)."""
    radius = int(_TRUNCATE * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 / (float(sigma) ** 2) * x**2)
    weights /= weights.sum()
    return torch.as_tensor(weights, device=device), radius


def _reflect_index(length: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices ``(length + 2 radius,)`` of scipy's 'reflect' border (``d c b a | a b c d | d c b a``)."""
    i = np.arange(-radius, length + radius) % (2 * length)
    i = np.where(i >= length, 2 * length - 1 - i, i)
    return torch.as_tensor(i, device=device)


def _gaussian_pass(image: torch.Tensor, sigma: float, dim: int) -> torch.Tensor:
    """One 1-D Gaussian pass along ``dim`` (1: y, 2: x) of ``(B, Y, X)`` float32: float64 sums, float32 out."""
    weights, radius = _gaussian_weights(sigma, image.device)
    length = image.shape[dim]
    padded = image.index_select(dim, _reflect_index(length, radius, image.device)).to(torch.float64)
    out = torch.zeros(image.shape, dtype=torch.float64, device=image.device)
    for k in range(2 * radius + 1):
        out += weights[k] * padded.narrow(dim, k, length)
    return out.to(torch.float32)


def dog_filter_batch(frames_photons: torch.Tensor, psf_sigma_px: float) -> torch.Tensor:
    """Difference-of-Gaussians of a batch ``(B, Y, X)`` (photo-electrons) -> ``(B, Y, X)`` float32.

    As :func:`~napari_spt_diffusion.tracking.detect.dog_filter` frame by frame: each frame's
    mean over a 16 px grid is removed first (float32 round-off), then ``G(sigma1) - G(sigma2)``.
    """
    image = frames_photons.to(torch.float32)
    level = image[:, ::16, ::16].mean(dim=(1, 2), keepdim=True)
    image = image - level
    sigma1, sigma2 = dog_sigmas_px(psf_sigma_px)
    narrow = _gaussian_pass(_gaussian_pass(image, sigma1, 1), sigma1, 2)
    wide = _gaussian_pass(_gaussian_pass(image, sigma2, 1), sigma2, 2)
    return narrow - wide


def _median_rows(values: torch.Tensor) -> torch.Tensor:
    """Median of each row of ``(B, N)``, the mean of the two middle values for even ``N`` (as numpy)."""
    ordered = torch.sort(values, dim=1).values
    n = values.shape[1]
    return 0.5 * (ordered[:, (n - 1) // 2] + ordered[:, n // 2])


def robust_noise_batch(dog: torch.Tensor) -> torch.Tensor:
    """``(B,)`` robust standard deviation of each DoG frame: 1.4826 x MAD on a regular grid (as numpy)."""
    size = dog.shape[1] * dog.shape[2]
    stride = max(1, int(math.sqrt(size / 16384.0)))
    sample = dog[:, ::stride, ::stride].reshape(dog.shape[0], -1)
    median = _median_rows(sample)
    return _MAD_TO_SIGMA * _median_rows((sample - median[:, None]).abs())


def _noise_floor_batch(frames: torch.Tensor, acquisition: Acquisition, psf_sigma_px: float) -> torch.Tensor:
    """``(B,)`` lower bound on the DoG noise (see :mod:`~..tracking.detect`): 10 % of the expected noise."""
    level = frames[:, ::8, ::8].to(torch.float32).mean(dim=(1, 2)).to(torch.float64)
    read = float(acquisition.read_noise_e)
    expected_std = torch.sqrt(level.clamp(min=0.0) + read * read)
    return _dog_kernel_l2(psf_sigma_px) * (0.1 * expected_std).clamp(min=1e-3)


def detect_batch(
    frames_photons: torch.Tensor,
    acquisition: Acquisition,
    settings: DetectionSettings | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Detect spots in a batch of frames already in photo-electrons.

    Parameters
    ----------
    frames_photons
        ``(B, Y, X)`` tensor (any device, any real dtype), ``Y, X >= 1``.
    acquisition
        PSF width and read noise.
    settings
        :class:`~napari_spt_diffusion.tracking.detect.DetectionSettings`; defaults when ``None``.

    Returns
    -------
    list of (peaks_yx, snr)
        One per frame, as :func:`~napari_spt_diffusion.tracking.detect.detect_photons`:
        ``(K, 2)`` int64 peak pixels brightest first, ``(K,)`` float32 DoG response in
        units of the frame's noise (numpy arrays on the CPU).
    """
    settings = settings or DetectionSettings()
    psf_sigma = float(acquisition.psf_sigma_px)
    n_frames, height, width = frames_photons.shape
    device = frames_photons.device
    dog = dog_filter_batch(frames_photons, psf_sigma)
    floor = _noise_floor_batch(frames_photons, acquisition, psf_sigma)
    noise = torch.maximum(robust_noise_batch(dog).to(torch.float64), floor)  # (B,) float64, as numpy's float
    threshold = (float(settings.threshold_snr) * noise).to(torch.float32)[:, None, None]
    gain = torch.from_numpy(border_noise_gain((int(height), int(width)), psf_sigma).copy()).to(device)
    values = dog / gain
    half = max(1, int(math.floor(settings.resolved_min_separation_px(acquisition))))
    padded = F.pad(dog[:, None], (half, half, half, half), mode="replicate")
    window_max = F.max_pool2d(padded, kernel_size=2 * half + 1, stride=1)[:, 0]
    candidate = (dog > threshold * gain.min()) & (values > threshold) & (dog >= window_max)
    where = torch.nonzero(candidate).cpu().numpy()  # (n, 3): frame, y, x in row-major order
    found = values[candidate].cpu().numpy()
    noise32 = noise.to(torch.float32).cpu().numpy()
    min_sep = settings.resolved_min_separation_px(acquisition)
    out = []
    bounds = np.searchsorted(where[:, 0], np.arange(n_frames + 1))
    for b in range(n_frames):
        rows = slice(bounds[b], bounds[b + 1])
        ys, xs, vals = where[rows, 1], where[rows, 2], found[rows]
        order = np.argsort(-vals, kind="stable")
        ys, xs, vals = ys[order], xs[order], vals[order]
        keep = _enforce_separation(np.column_stack([ys, xs]).astype(np.float64), min_sep)
        peaks = np.column_stack([ys[keep], xs[keep]]).astype(np.int64)
        out.append((peaks.reshape(-1, 2), (vals[keep] / noise32[b]).astype(np.float32)))
    return out
