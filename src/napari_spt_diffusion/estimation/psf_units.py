"""Model inputs in units of the PSF: patches and displacements rescaled to the model's trained PSF width.

The physics of motion blur and localization does not depend on the unit of length: a movie
whose PSF is ``sigma_m`` movie pixels wide looks like a movie of the model's training PSF
``sigma_t`` pixels wide once lengths are measured in *virtual pixels* of
``1 / s`` movie pixels, with the scale factor ``s`` (virtual px per movie px) about
``sigma_t / sigma_m``. So, with PSF units on, a model trained at one PSF width is given

* patches resampled onto an ``P x P`` grid of virtual pixels (:func:`resample_patches`;
  cut from a larger region of the movie, :func:`source_patch_size`); the rebinning is
  area-weighted, so photon counts stay additive: the spot keeps its photons, and the
  background per *virtual* pixel is the movie's background per pixel divided by ``s^2``
  (the background photons under the PSF, which set the signal-to-noise ratio, are unchanged);
* displacements multiplied by ``s`` (virtual px);

and its diffusion coefficients (virtual px^2/frame) are divided by ``s^2`` to give movie
px^2/frame (:func:`d_to_movie_px2`). Angles are unchanged (the scaling is isotropic).

Scale factor
------------
The model sees pixel values: the PSF integrated over pixels. Resampling movie pixels onto
virtual pixels of another size widens the spot a little (the light inside a movie pixel is
spread evenly over it; roughly ``1/12`` movie px^2 of variance where the two grids are out of
step, nothing where they coincide at ``s = 1``). :func:`psf_scale` therefore chooses ``s`` so
that the *resampled* pixel-integrated Gaussian of the movie's width has the second moment of
the pixel-integrated Gaussian of the training width (averaged over sub-pixel positions; a
one-dimensional root search), which is close to ``sigma_t / sqrt(sigma_m^2 + 1/12)`` far from
``s = 1`` and equals 1 when the widths are equal; ``pixel_correction=False`` gives the plain
ratio ``sigma_t / sigma_m``. At ``s = 1`` no resampling is done: the model gets the centre
``P x P`` pixels of the cut region (:func:`model_inputs` is then the identity).

Resampling
----------
The movie patch is read as a density that is constant over each movie pixel (box), and each
virtual pixel receives the integral of that density over its area: area-weighted rebinning
when the virtual pixels are larger (``s < 1``), piecewise-constant interpolation when they are
smaller (``s > 1``). Either way photon counts are additive: the virtual pixels covering a
movie pixel share its photons exactly. (``basis="tent"``, the density of linear interpolation,
is kept for experiments: smoother for ``s > 1`` but it widens the spot by ``1/6`` movie px^2.)

Centring
--------
As in training (:mod:`~napari_spt_diffusion.tracking.patches`), the particle lies within
+-0.5 virtual px of the centre of its virtual patch: with ``u = s * position`` (the track's
position in virtual px, the displacements' frame of reference), the virtual patch is centred
on ``floor(u + 0.5)``, so the virtual patch centres of a track sit on one integer lattice.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..errors import SptDiffusionError

__all__ = [
    "PSF_UNITS_MODES",
    "PsfUnitsError",
    "card_psf_sigma_px",
    "centre_crop",
    "d_to_movie_px2",
    "model_acquisition",
    "psf_scale",
    "resample_patches",
    "scale_for",
    "source_patch_size",
]

#: ``auto``: on when the movie's PSF width lies outside the model's tolerance (see :func:`scale_for`);
#: ``on``: always rescaled to the card's training PSF; ``off``: the movie's pixels as they are.
PSF_UNITS_MODES = ("auto", "on", "off")

#: Scale factors closer to 1 than this are treated as 1 (no resampling).
UNIT_SCALE_TOLERANCE = 1e-6


class PsfUnitsError(SptDiffusionError, ValueError):
    """Bad PSF-unit settings or inputs (one sentence)."""


def card_psf_sigma_px(card: dict[str, Any]) -> float | None:
    """The PSF sigma (px) of the model card's ``training_acquisition``; ``None`` when the card lacks it."""
    trained = card.get("training_acquisition") or {}
    try:
        sigma_px = float(trained["psf_sigma_nm"]) / float(trained["pixel_size_nm"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return sigma_px if math.isfinite(sigma_px) and sigma_px > 0 else None


def _gaussian_spots(sigma_px: float, size: int, offsets: np.ndarray) -> np.ndarray:
    """``(K, size, size)`` unit-sum pixel-integrated Gaussians at ``offsets`` ``(K, 2)`` px from the centre pixel."""
    edges = np.arange(-(size // 2), size // 2 + 2, dtype=float) - 0.5
    cdf = 0.5 * (1.0 + _erf((edges[None, None, :] - offsets[:, :, None]) / (sigma_px * math.sqrt(2.0))))
    prof = np.diff(cdf, axis=2)  # (K, 2, size)
    return prof[:, 0, :, None] * prof[:, 1, None, :]


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[float])(x)


#: Sub-pixel positions (px) over which :func:`psf_scale` averages the spot's second moment.
_PHASES = np.array([(y, x) for y in np.linspace(-0.45, 0.45, 7) for x in np.linspace(-0.45, 0.45, 7)])


def _second_moment(patches: np.ndarray, offsets: np.ndarray) -> float:
    """Mean over patches and axes of the second moment (px^2) of ``(K, P, P)`` patches about ``offsets``."""
    half = patches.shape[1] // 2
    i = np.arange(-half, half + 1, dtype=float)
    tot = patches.sum(axis=(1, 2))
    var_y = (patches.sum(axis=2) * (i[None] - offsets[:, :1]) ** 2).sum(axis=1) / tot
    var_x = (patches.sum(axis=1) * (i[None] - offsets[:, 1:]) ** 2).sum(axis=1) / tot
    return float(np.mean(np.r_[var_y, var_x]))


@lru_cache(maxsize=64)
def _matched_scale(train_sigma_px: float, movie_sigma_px: float, patch_size: int, basis: str) -> float:
    target = _second_moment(_gaussian_spots(train_sigma_px, patch_size, _PHASES), _PHASES)

    def excess(s: float) -> float:
        spots = _gaussian_spots(movie_sigma_px, source_patch_size(s, patch_size), _PHASES)
        virtual, offsets = resample_patches(spots, _PHASES, s, patch_size, basis=basis)
        return _second_moment(virtual, offsets) - target

    guess = train_sigma_px / movie_sigma_px
    low, high = 0.5 * guess, 1.5 * guess
    if excess(low) > 0 or excess(high) < 0:  # not bracketed (should not happen): the plain ratio
        return guess
    for _ in range(40):  # bisection to ~1e-12 relative
        mid = 0.5 * (low + high)
        low, high = (mid, high) if excess(mid) < 0 else (low, mid)
    return 0.5 * (low + high)


def psf_scale(
    train_sigma_px: float, movie_sigma_px: float, *, pixel_correction: bool = True, patch_size: int = 11,
    basis: str = "box",
) -> float:
    """Virtual px per movie px that brings a PSF of ``movie_sigma_px`` to ``train_sigma_px`` (both px).

    ``pixel_correction``: the scale at which the resampled pixel-integrated Gaussian has the
    training spot's second moment (module docstring; exactly 1 for equal widths); ``False``: the
    plain ratio ``train / movie``.
    """
    t, m = float(train_sigma_px), float(movie_sigma_px)
    if not (math.isfinite(t) and math.isfinite(m) and t > 0 and m > 0):
        raise PsfUnitsError(f"PSF widths must be positive numbers, got {train_sigma_px!r} and {movie_sigma_px!r}")
    if not pixel_correction or t == m:
        return t / m
    return _matched_scale(round(t, 6), round(m, 6), int(patch_size), basis)


def scale_for(
    card: dict[str, Any], acquisition: Acquisition, mode: str, tolerance: tuple[float, float] = (0.85, 1.15)
) -> float:
    """The scale factor ``s`` to use for a movie with a model card (1.0: the movie's own pixels).

    ``mode`` ``"off"``: 1. ``"on"``: :func:`psf_scale` from the card's training PSF
    (``training_acquisition``) to the movie's (``acquisition.psf_sigma_px``, as told or
    calibrated). ``"auto"``: as ``"on"`` when the movie's PSF lies outside what the model was
    trained for, else 1: outside the card's ``training_ranges["psf_sigma_px"]`` (px) when it
    gives one (a model trained across PSF widths), else outside ``tolerance`` (lowest, highest
    ratio of the movie's width to the card's; the acquisition check's range). A card without a
    training PSF gives 1.
    """
    if mode not in PSF_UNITS_MODES:
        raise PsfUnitsError(f"psf_units must be one of {', '.join(PSF_UNITS_MODES)}, got {mode!r}")
    train = card_psf_sigma_px(card)
    if mode == "off" or train is None:
        return 1.0
    movie = float(acquisition.psf_sigma_px)
    trained_range = (card.get("training_ranges") or {}).get("psf_sigma_px")
    low, high = (float(v) for v in trained_range) if trained_range else (train * tolerance[0], train * tolerance[1])
    if mode == "auto" and low <= movie <= high:
        return 1.0
    s = psf_scale(train, movie)
    return 1.0 if abs(s - 1.0) < UNIT_SCALE_TOLERANCE else s


def source_patch_size(scale: float, patch_size: int = 11) -> int:
    """Odd side (movie px) of the region to cut so that ``patch_size`` virtual px can be resampled from it.

    ``patch_size`` at ``scale == 1``; else ``2 H + 1`` with ``H = ceil((P // 2 + 1) / s + 0.5)``
    (the virtual patch reaches ``(P // 2 + 1) / s`` movie px from the particle, plus the tent's
    half pixel), and never less than ``patch_size`` (the classical estimators take the centre
    ``patch_size`` px of the same cut).
    """
    if abs(float(scale) - 1.0) < UNIT_SCALE_TOLERANCE:
        return int(patch_size)
    half = int(math.ceil((patch_size // 2 + 1) / float(scale) + 0.5))
    return max(int(patch_size), 2 * half + 1)


def centre_crop(patches: np.ndarray, patch_size: int) -> np.ndarray:
    """The centre ``patch_size x patch_size`` pixels of ``(..., Q, Q)`` patches (a view; ``Q >= patch_size``, odd)."""
    q = patches.shape[-1]
    if q < patch_size or (q - patch_size) % 2:
        raise PsfUnitsError(f"cannot take the centre {patch_size} px of {q}-px patches")
    a = (q - patch_size) // 2
    return patches[..., a : a + patch_size, a : a + patch_size]


def _cdf_box(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 0.5, 0.0, 1.0)


def _cdf_tent(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, -1.0, 1.0)
    return np.where(x < 0.0, 0.5 * (x + 1.0) ** 2, 1.0 - 0.5 * (1.0 - x) ** 2)


def _axis_weights(
    u: np.ndarray, offset: np.ndarray, scale: float, patch_size: int, source: int, cdf: Any
) -> np.ndarray:
    """``(K, P, Q)``: share of movie pixel ``q`` (box or tent density) inside virtual pixel ``p``, one axis."""
    half_p, half_q = patch_size // 2, source // 2
    centre = np.floor(u + 0.5)  # (K,) virtual patch centre
    edges = centre[:, None] + np.arange(-half_p, half_p + 2) - 0.5  # (K, P + 1) virtual edges
    local = (edges - u[:, None]) / scale + offset[:, None]  # movie px from the source patch's centre pixel
    k = np.arange(-half_q, half_q + 1, dtype=float)
    c = cdf(local[:, :, None] - k[None, None, :])  # (K, P + 1, Q)
    return (c[:, 1:, :] - c[:, :-1, :]).astype(np.float32)


def resample_patches(
    patches_photons: np.ndarray,
    offsets_px: np.ndarray,
    scale: float,
    patch_size: int = 11,
    positions_px: np.ndarray | None = None,
    block: int = 4096,
    basis: str = "box",
) -> tuple[np.ndarray, np.ndarray]:
    """Patches on a grid of virtual pixels (``1 / scale`` movie px each), photon counts additive.

    Parameters
    ----------
    patches_photons
        ``(K, Q, Q)`` photo-electrons, each centred on the movie pixel nearest its particle
        (as :func:`~napari_spt_diffusion.tracking.patches.crop_patches` cuts them), ``Q`` at
        least :func:`source_patch_size` ``(scale, patch_size)``.
    offsets_px
        ``(K, 2)`` ``(y, x)`` position of the particle minus the patch's centre pixel (movie px).
    scale
        Virtual px per movie px (:func:`psf_scale`).
    patch_size
        Odd side ``P`` of the virtual patches.
    positions_px
        ``(K, 2)`` the particle's positions in the frame of reference of the displacements
        (movie px); they place the virtual patch centres on one lattice,
        ``floor(scale * position + 0.5)``. ``None``: the offsets (each patch on its own lattice).
    block
        Patches resampled at a time (memory ``~ block * P * Q * 8`` bytes).
    basis
        ``"box"`` (module docstring) or ``"tent"`` (linear interpolation, for experiments).

    Returns
    -------
    patches
        ``(K, P, P)`` float32 photo-electrons per virtual pixel.
    offsets
        ``(K, 2)`` float64 virtual px, particle minus virtual patch centre, in ``[-0.5, 0.5)``.
    """
    patches = np.asarray(patches_photons)
    off = np.asarray(offsets_px, dtype=float).reshape(-1, 2)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2] or patches.shape[1] % 2 == 0:
        raise PsfUnitsError(f"patches must be (K, Q, Q) with Q odd, got shape {patches.shape}")
    if len(off) != len(patches):
        raise PsfUnitsError(f"{len(patches)} patches but {len(off)} offsets")
    s = float(scale)
    if not (math.isfinite(s) and s > 0):
        raise PsfUnitsError(f"scale must be a positive number, got {scale!r}")
    q = patches.shape[1]
    need = source_patch_size(s, patch_size)
    if q < need:
        raise PsfUnitsError(f"resampling {patch_size} virtual px at scale {s:.3g} needs {need}-px patches, got {q}")
    pos = off if positions_px is None else np.asarray(positions_px, dtype=float).reshape(-1, 2)
    u = s * pos
    if basis not in ("box", "tent"):
        raise PsfUnitsError(f"basis must be 'box' or 'tent', got {basis!r}")
    cdf = _cdf_box if basis == "box" else _cdf_tent
    out = np.empty((len(patches), patch_size, patch_size), dtype=np.float32)
    for a in range(0, len(patches), block):
        b = min(len(patches), a + block)
        wy = _axis_weights(u[a:b, 0], off[a:b, 0], s, patch_size, q, cdf)
        wx = _axis_weights(u[a:b, 1], off[a:b, 1], s, patch_size, q, cdf)
        out[a:b] = np.matmul(np.matmul(wy, patches[a:b].astype(np.float32)), wx.transpose(0, 2, 1))
    return out, u - np.floor(u + 0.5)


def model_inputs(
    patches_photons: np.ndarray,
    offsets_px: np.ndarray,
    positions_px: np.ndarray,
    displacements_px: np.ndarray,
    scale: float,
    patch_size: int = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """One track's model inputs in PSF units: ``(patches (T, P, P) photo-electrons per virtual px,
    displacements (T, 2) virtual px)``. At ``scale == 1`` the centre ``P x P`` pixels and the
    displacements as they are (the identity); else :func:`resample_patches` and ``scale *``
    displacements. Shapes as in :class:`~napari_spt_diffusion.tracking.patches.TrackPatches`."""
    if abs(float(scale) - 1.0) < UNIT_SCALE_TOLERANCE:
        return centre_crop(np.asarray(patches_photons), patch_size), np.asarray(displacements_px)
    virtual, _ = resample_patches(patches_photons, offsets_px, scale, patch_size, positions_px)
    return virtual, float(scale) * np.asarray(displacements_px, dtype=float)


def batch_model_inputs(
    patches_photons: np.ndarray,
    offsets_px: np.ndarray,
    positions_px: np.ndarray,
    displacements_px: np.ndarray,
    scale: float,
    patch_size: int = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`model_inputs` of ``N`` tracks of ``T`` frames at once: ``(N, T, Q, Q)`` patches and
    ``(N, T, 2)`` offsets, positions and displacements (px) -> ``((N, T, P, P), (N, T, 2))``."""
    n, t, q, _ = np.shape(patches_photons)
    flat = (np.reshape(a, (n * t, 2)) for a in (offsets_px, positions_px, displacements_px))
    patches, disp = model_inputs(np.reshape(patches_photons, (n * t, q, q)), *flat, scale, patch_size)
    return np.asarray(patches).reshape(n, t, patch_size, patch_size), np.asarray(disp).reshape(n, t, 2)


def d_to_movie_px2(d_virtual_px2: Any, scale: float) -> Any:
    """Diffusion coefficients (or variances) from virtual px^2/frame to movie px^2/frame: ``/ scale^2``."""
    return d_virtual_px2 / float(scale) ** 2


def model_acquisition(acquisition: Acquisition, scale: float, train_sigma_px: float | None) -> Acquisition:
    """The acquisition as the model sees it with PSF units at ``scale`` (for the acquisition check).

    Lengths in virtual pixels: pixel size ``pixel_size_nm / scale`` (it sets which D in um^2/s the
    model's trained range of px^2/frame means), the PSF at the card's training width
    (``train_sigma_px`` virtual px: normalised), the background per virtual pixel
    (``background / scale^2``; the background under the PSF is unchanged); frame interval, signal
    and exposure are the movie's. At ``scale == 1`` (or without a training width) the acquisition
    unchanged.
    """
    if abs(float(scale) - 1.0) < UNIT_SCALE_TOLERANCE or train_sigma_px is None:
        return acquisition
    pixel_nm = acquisition.pixel_size_nm / float(scale)
    return acquisition.replace(pixel_size_nm=pixel_nm, psf_sigma_nm=float(train_sigma_px) * pixel_nm,
                               background_photons=acquisition.background_photons / float(scale) ** 2)
