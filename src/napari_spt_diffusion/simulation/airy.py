"""A scalar Airy PSF for the training renderer: pixel integrals tabulated once, then interpolated.

The Airy pattern of a circular pupil is ``I(r) = k^2 / (4 pi) (2 J1(k r) / (k r))^2`` per unit
area (it integrates to 1 over the plane), with ``k = 2 pi NA / lambda``. Its width is given
here as the usual sigma-equivalent ``sigma = 0.21 lambda / NA`` (the Gaussian that matches its
core), so ``k = 0.21 * 2 pi / sigma``; a PSF sigma of an :class:`~napari_spt_diffusion.acquisition.Acquisition`
then means the same width for both shapes, as the calibration measures it.

:func:`airy_pixel_table` integrates the pattern over a pixel (a ``_OVERSAMPLE x _OVERSAMPLE``
midpoint rule) for pixel centres on a grid of offsets ``1 / _SUB`` px apart;
:func:`airy_windows` renders moving emitters by bilinear interpolation in that table. Light
further than ``radius_px`` from the emitter (the far rings, a few per cent of it) is dropped,
as a wide window of the real PSF would spread it thinly into the background.

The independent test renderer (:mod:`napari_spt_diffusion.validation`) computes its Airy PSF
with its own code; nothing is shared with it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import j1

__all__ = ["AIRY_SIGMA_FACTOR", "airy_pixel_table", "airy_windows", "airy_radius_px"]

#: sigma-equivalent of the Airy pattern in units of lambda / NA.
AIRY_SIGMA_FACTOR = 0.21
#: Table samples per pixel along each axis (bilinear interpolation in between).
_SUB = 8
#: Integration points per pixel along each axis.
_OVERSAMPLE = 6
#: Frames (windows) rendered per vectorised block.
_BLOCK = 256


def airy_radius_px(sigma_px: float, window_px: int) -> int:
    """Half-width (px) of the table: the window's size (an emitter may sit anywhere in it), at
    most 12 sigma-equivalents (the third dark ring lies at about 15 sigma)."""
    return int(max(2, min(int(window_px) + 1, math.ceil(12.0 * float(sigma_px)))))


@functools.lru_cache(maxsize=8)
def airy_pixel_table(sigma_px: float, radius_px: int) -> np.ndarray:
    """``(N, N)`` float32 share of the photons falling in a pixel whose centre lies at
    ``(dy, dx) = (i, j) / _SUB - radius_px`` px from the emitter, ``N = 2 radius_px _SUB + 1``."""
    if not (math.isfinite(sigma_px) and sigma_px > 0):
        raise ValueError(f"sigma_px must be positive, got {sigma_px!r}")
    k = AIRY_SIGMA_FACTOR * 2.0 * math.pi / float(sigma_px)
    n = 2 * int(radius_px) * _SUB + 1
    centres = np.arange(n) / _SUB - radius_px
    inner = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    points = (centres[:, None] + inner[None, :]).ravel()  # (n * o,) sample coordinates
    r = np.hypot(points[:, None], points[None, :])
    v = np.maximum(k * r, 1e-12)
    density = (k * k / (4.0 * math.pi)) * (2.0 * j1(v) / v) ** 2
    o = _OVERSAMPLE
    return density.reshape(n, o, n, o).mean(axis=(1, 3)).astype(np.float32)


def airy_windows(flat_px: np.ndarray, per_sub: np.ndarray, sigma_px: float, out: np.ndarray) -> None:
    """Write into ``out`` ``(n, H, W)`` the photons of the Airy PSF.

    ``flat_px`` ``(n, S, 2)``: sub-positions (px, window coordinates, pixel centres at
    integers); ``per_sub`` ``(n,)``: photons per sub-position.
    """
    n, h, w = out.shape
    radius = airy_radius_px(sigma_px, max(h, w))
    table = airy_pixel_table(round(float(sigma_px), 4), radius)
    last = table.shape[0] - 1
    rows = np.arange(h, dtype=np.float64)
    cols = np.arange(w, dtype=np.float64)
    for a in range(0, n, _BLOCK):
        b = min(a + _BLOCK, n)
        pos = flat_px[a:b]
        # table coordinates of every (window, sub-position, row) and (window, sub-position, column)
        ty = (rows[None, None, :] - pos[:, :, 0:1] + radius) * _SUB  # (m, S, H)
        tx = (cols[None, None, :] - pos[:, :, 1:2] + radius) * _SUB  # (m, S, W)
        iy = np.floor(ty).astype(np.int64)
        ix = np.floor(tx).astype(np.int64)
        fy = (ty - iy).astype(np.float32)[..., :, None]
        fx = (tx - ix).astype(np.float32)[..., None, :]
        inside = ((iy >= 0) & (iy < last))[..., :, None] & ((ix >= 0) & (ix < last))[..., None, :]
        iy = np.clip(iy, 0, last - 1)[..., :, None]
        ix = np.clip(ix, 0, last - 1)[..., None, :]
        value = (
            table[iy, ix] * (1 - fy) * (1 - fx)
            + table[iy + 1, ix] * fy * (1 - fx)
            + table[iy, ix + 1] * (1 - fy) * fx
            + table[iy + 1, ix + 1] * fy * fx
        )  # (m, S, H, W)
        value = np.where(inside, value, np.float32(0.0))
        np.einsum("mshw,m->mhw", value, per_sub[a:b].astype(np.float32), out=out[a:b])
