"""sCMOS fixed-pattern noise: per-pixel gain and offset that stay put while the particles move.

An sCMOS camera amplifies each pixel with its own gain and adds its own offset. Both vary
from pixel to pixel by a few per cent of the mean gain and a few ADU, and they do not change
from frame to frame. Under a bright background the gain map alone puts a static texture of
``background * gain_cv`` photo-electrons rms on the image (30 e- at 600 background photons
and a 5 % spread), comparable to the background's own shot noise (24 e-), which a model
trained on a uniform camera never sees. This module puts that texture on the training
renderer's windows (:func:`apply_fixed_pattern`).

The training windows follow their particle (:mod:`~napari_spt_diffusion.training.samples`):
a window's pixel ``(r, c)`` is the movie pixel ``origin + (r, c)``. So that the pattern is
fixed in the movie, not in the window, each pixel's gain and offset are a function of its
movie coordinates, the track and a key: a counter-based hash (splitmix64) turned into normal
deviates (Box-Muller), which needs no map in memory and is the same wherever the track's
windows overlap.
"""

from __future__ import annotations

import numpy as np

from ..acquisition import Acquisition

__all__ = ["pixel_normals", "apply_fixed_pattern"]

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_P_TRACK, _P_Y, _P_X = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)


def _splitmix(z: np.ndarray) -> np.ndarray:
    z = z ^ (z >> np.uint64(30))
    z = z * _M1
    z = z ^ (z >> np.uint64(27))
    z = z * _M2
    return z ^ (z >> np.uint64(31))


def _uniform(key: int, track: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Uniform deviates in ``(0, 1]``, one per ``(key, track, y, x)`` (broadcast int arrays)."""
    with np.errstate(over="ignore"):
        z = (np.uint64(key) + np.asarray(track, np.int64).astype(np.uint64) * _P_TRACK
             + np.asarray(y, np.int64).astype(np.uint64) * _P_Y + np.asarray(x, np.int64).astype(np.uint64) * _P_X)
        z = _splitmix(_splitmix(z))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 2.0**53)


def pixel_normals(key: int, track: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Standard normal deviates, one per ``(key, track, movie pixel y, x)``: the same for the
    same arguments, independent for different ones (broadcast int arrays; float64)."""
    u1 = _uniform(2 * int(key), track, y, x)
    u2 = _uniform(2 * int(key) + 1, track, y, x)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def apply_fixed_pattern(
    windows_adu: np.ndarray,
    origins_px: np.ndarray,
    tracks: np.ndarray,
    acquisition: Acquisition,
    gain_cv: float,
    offset_sd_e: float,
    key: int,
) -> np.ndarray:
    """Camera windows as a camera with per-pixel gain and offset would record them.

    Parameters
    ----------
    windows_adu
        ``(K, W, W)`` uint16 windows of a uniform camera (``offset + gain * (electrons + read
        noise)``, :func:`~.render.camera_image`).
    origins_px
        ``(K, 2)`` int movie pixel ``(y, x)`` of each window's first pixel.
    tracks
        ``(K,)`` int: the track each window belongs to (each track its own patch of camera).
    acquisition
        Gain (ADU/e-) and offset (ADU) of the uniform camera.
    gain_cv
        Pixel-to-pixel standard deviation of the gain over its mean (dimensionless).
    offset_sd_e
        Pixel-to-pixel standard deviation of the offset, in photo-electrons.
    key
        Selects the camera (a random integer per training chunk).

    Returns
    -------
    ``(K, W, W)`` uint16: ``offset + (adu - offset) * (1 + gain_cv * n1) + gain * offset_sd_e * n2``
    rounded and clipped to ``[0, 65535]``, with ``n1, n2`` standard normal per movie pixel.
    """
    k, w = windows_adu.shape[0], windows_adu.shape[1]
    grid = np.arange(w, dtype=np.int64)
    y = np.asarray(origins_px, np.int64)[:, 0, None, None] + grid[None, :, None]
    x = np.asarray(origins_px, np.int64)[:, 1, None, None] + grid[None, None, :]
    t = np.asarray(tracks, np.int64).reshape(k, 1, 1)
    offset, gain = float(acquisition.offset_adu), float(acquisition.gain_adu_per_e)
    out = windows_adu.astype(np.float64) - offset
    if gain_cv > 0:
        out *= np.maximum(1.0 + gain_cv * pixel_normals(key, t, y, x), 0.05)
    if offset_sd_e > 0:
        out += gain * offset_sd_e * pixel_normals(key + 7919, t, y, x)
    return np.clip(np.rint(out + offset), 0, 65535).astype(np.uint16)
