"""A movie renderer independent of the training renderer ("foreign optics", protocol v1).

Everything here is written from the physics and shares no code with
:mod:`napari_spt_diffusion.simulation` (nor with ``tracking``, ``estimation`` or ``training``;
a test checks the imports). Only numpy and scipy are used for the rendering; ``tifffile`` is
imported by the writer and ``pandas`` by :meth:`ForeignMovie.truth_dataframe` only.

Conventions
-----------
* Positions are in pixels, pixel centres at integers: pixel ``(i, j)`` covers
  ``[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]``, ``x`` along columns, ``y`` along rows, image
  ``y`` pointing down. The field ``(Y, X)`` spans ``[-0.5, Y - 0.5) x [-0.5, X - 0.5)``.
* Angles ``theta`` (degrees, in ``[0, 180)``) give the D1 axis, measured from +x towards +y.

Optics
------
The scalar, in-focus Airy pattern of a circular pupil, as a probability density per unit area
(normalised to 1 over the infinite plane)::

    p(r) = (pi NA^2 / lambda^2) [2 J1(v) / v]^2,     v = 2 pi NA r / lambda.

Its encircled energy is ``1 - J0(v)^2 - J1(v)^2`` (Rayleigh), so a disc of radius ``v`` misses
about ``2 / (pi v)`` of the light: Airy tails are long. The Gaussian-equivalent width is
``sigma = 0.21 lambda / NA`` (:data:`AIRY_SIGMA_FACTOR`; a least-squares Gaussian fit to the
pattern gives 0.209-0.211 lambda / NA).

Pixel integration: ``p`` is evaluated on a grid of ``oversample x oversample`` (default 7 x 7)
points per pixel, at the exact fractional offset of the emitter, and the samples of each pixel
are averaged (midpoint rule). The pattern is split smoothly at radius ``r_a`` (default
``max(3 px, 4 sigma)``, cosine taper to ``r_a + 2 px``) into

* a **core** (everything inside ``r_a + 2 px``), evaluated for every emitter position exactly,
  by linear interpolation of the radial profile tabulated in ``r^2`` on a step of 0.002 px^2
  (relative interpolation error below 1e-5); and
* a **tail** (the smooth rest, out to a square window of half-width ``tail_radius_px + 0.5``,
  default 48.5 px), tabulated once for an 8 x 8 grid of sub-pixel offsets (1/8 px) with the
  same 7 x 7 pixel integration (radial profile from direct Bessel functions on a 0.0005-px
  step), and interpolated bilinearly
  between those offsets for each emitter position.

Light beyond the tail window is lost: for a centred emitter, 0.65 % at NA 1.45 / 520 nm and
1.47 % at NA 0.8 / 640 nm with 100 nm pixels (:meth:`AiryPSF.window_fraction`; it changes by
less than 1e-4 with the sub-pixel offset). The ``photons`` of a movie are photons over the
infinite plane; the recorded ``enclosed_fraction`` says how many of them reach the image.

Motion blur: a frame's image is the mean of the PSFs at its ``substeps`` sub-positions times the
frame's photons. Camera: Poisson photo-electrons (quantum efficiency 1) of signal + background,
optional EMCCD gamma multiplication, Gaussian read noise, a per-pixel gain and offset, rounding
to ADU and clipping to uint16.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy import integrate, special

from .foreign_illumination import ForeignIllumination
from .foreign_motion import ForeignMotion, simulate_foreign_paths

__all__ = [
    "AIRY_SIGMA_FACTOR",
    "FOREIGN_CASES",
    "EXTRA_CASES",
    "EXTRA_MOTION",
    "EXTRA_CAMERA",
    "EXTRA_SCENE",
    "AiryPSF",
    "ForeignCamera",
    "ForeignMotion",
    "ForeignMovie",
    "ForeignOptics",
    "ForeignScene",
    "airy_sigma_equivalent_nm",
    "foreign_case",
    "render_foreign_movie",
    "simulate_foreign_paths",
    "write_imagej_tiff",
]

#: Gaussian-equivalent sigma of the Airy pattern, in units of lambda / NA.
AIRY_SIGMA_FACTOR: float = 0.21

_TABLE_STEP_PX2 = 0.002  # step of the core's radial table in r^2 (px^2)


def airy_sigma_equivalent_nm(na: float, wavelength_nm: float) -> float:
    """Gaussian-equivalent sigma of the Airy PSF, ``0.21 lambda / NA``.

    Parameters
    ----------
    na
        Numerical aperture of the objective.
    wavelength_nm
        Emission wavelength (nm).

    Returns
    -------
    float
        sigma in nm (e.g. 75.3 nm at NA 1.45 / 520 nm, 168 nm at NA 0.8 / 640 nm).
    """
    if na <= 0 or wavelength_nm <= 0:
        raise ValueError(f"NA and wavelength must be positive, got {na}, {wavelength_nm}")
    return AIRY_SIGMA_FACTOR * wavelength_nm / na


# --------------------------------------------------------------------------------------------
# optics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForeignOptics:
    """Objective, emission and sampling of the Airy PSF.

    Attributes
    ----------
    na
        Numerical aperture.
    wavelength_nm
        Emission wavelength (nm).
    pixel_size_nm
        Camera pixel side in the sample plane (nm).
    oversample
        Samples per pixel along each axis for the pixel integration (>= 5).
    core_radius_px
        Radius ``r_a`` (px) inside which the PSF is all core; ``None``: ``max(3, 4 sigma)``.
    taper_px
        Width (px) of the cosine taper from core to tail.
    tail_radius_px
        Half-width (px, integer) of the square tail window around the emitter's pixel.
    tail_offsets
        Sub-pixel offsets per pixel at which the tail is tabulated (bilinear in between).
    """

    na: float
    wavelength_nm: float
    pixel_size_nm: float = 100.0
    oversample: int = 7
    core_radius_px: float | None = None
    taper_px: float = 2.0
    tail_radius_px: int = 48
    tail_offsets: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.na < 1.6 or self.wavelength_nm <= 0 or self.pixel_size_nm <= 0:
            raise ValueError(f"unphysical optics: {self}")
        if self.oversample < 5:
            raise ValueError("oversample must be >= 5 samples per pixel")
        if self.taper_px <= 0 or self.tail_radius_px < 1 or self.tail_offsets < 2:
            raise ValueError(f"bad PSF sampling settings: {self}")

    @property
    def sigma_equivalent_nm(self) -> float:
        """Gaussian-equivalent sigma (nm), ``0.21 lambda / NA``."""
        return airy_sigma_equivalent_nm(self.na, self.wavelength_nm)

    @property
    def sigma_equivalent_px(self) -> float:
        """Gaussian-equivalent sigma (px)."""
        return self.sigma_equivalent_nm / self.pixel_size_nm

    @property
    def kappa_per_px(self) -> float:
        """``2 pi NA pixel / lambda``: the Airy argument ``v`` per pixel of radius (1/px)."""
        return 2.0 * math.pi * self.na * self.pixel_size_nm / self.wavelength_nm


class AiryPSF:
    """Pixel-integrated scalar Airy PSF of :class:`ForeignOptics`, rendered at exact offsets.

    Parameters
    ----------
    optics
        The optics; see the module docstring for the core / tail scheme.
    """

    def __init__(self, optics: ForeignOptics) -> None:
        self.optics = optics
        self.kappa = optics.kappa_per_px
        self.ov = int(optics.oversample)
        ra = optics.core_radius_px
        self.r_a = float(max(3.0, 4.0 * optics.sigma_equivalent_px) if ra is None else ra)
        self.r_b = self.r_a + float(optics.taper_px)
        #: half-width (px) of the core box around the emitter's nearest pixel
        self.core_half = int(math.ceil(self.r_b)) + 1
        self.tail_half = int(optics.tail_radius_px)
        if self.tail_half < self.core_half:
            raise ValueError("tail_radius_px must be at least the core box half-width")
        self.n_off = int(optics.tail_offsets)
        # sample positions (px) relative to the centre of pixel 0, for pixels -H..H
        self.core_samples = self._sample_offsets(self.core_half)
        s_max = 2.0 * (self.core_half + 1.0) ** 2 + 1.0
        s = np.arange(0.0, s_max + 2 * _TABLE_STEP_PX2, _TABLE_STEP_PX2)
        r = np.sqrt(s)
        table = self.density(r) * self._taper(r)
        # float32 halves the cost of the lookups; its rounding (1e-7 relative) is far below
        # the table's interpolation error
        self._table = table.astype(np.float32)
        self._slope = np.append(np.diff(table), 0.0).astype(np.float32)

    # ---- the continuous PSF --------------------------------------------------------------
    def density(self, r_px: np.ndarray | float) -> np.ndarray:
        """Airy intensity per px^2, normalised to 1 over the infinite plane.

        Parameters
        ----------
        r_px
            Distance from the emitter (px), any shape.

        Returns
        -------
        numpy.ndarray
            ``(kappa^2 / 4 pi) [2 J1(v) / v]^2`` with ``v = kappa r`` (1/px^2), same shape.
        """
        v = self.kappa * np.asarray(r_px, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            amp = np.where(v < 1e-8, 1.0, 2.0 * special.j1(v) / v)
        return (self.kappa**2 / (4.0 * math.pi)) * amp * amp

    def encircled_energy(self, r_px: np.ndarray | float) -> np.ndarray:
        """Fraction of the light inside a disc of radius ``r_px`` (px): ``1 - J0^2 - J1^2``."""
        v = self.kappa * np.asarray(r_px, dtype=float)
        return 1.0 - special.j0(v) ** 2 - special.j1(v) ** 2

    def window_fraction(self, half_width_px: float | None = None) -> float:
        """Fraction of the light inside a square of half-width ``half_width_px`` centred on the emitter.

        The disc inscribed in the square plus, for radii between ``h`` and ``h sqrt 2``, the
        share of each circle that lies inside the square (``1 - (4/pi) arccos(h / r)``).

        Parameters
        ----------
        half_width_px
            Half-width of the square (px); default the rendered window, ``tail_radius_px + 0.5``.

        Returns
        -------
        float
            Enclosed fraction (dimensionless).
        """
        h = self.tail_half + 0.5 if half_width_px is None else float(half_width_px)

        def ring(r: float) -> float:
            return float(self.density(r)) * 2.0 * math.pi * r * (1.0 - 4.0 / math.pi * math.acos(h / r))

        extra, _ = integrate.quad(ring, h, h * math.sqrt(2.0), limit=400)
        return float(self.encircled_energy(h)) + extra

    # ---- sampling helpers ----------------------------------------------------------------
    def _taper(self, r: np.ndarray) -> np.ndarray:
        t = np.clip((r - self.r_a) / (self.r_b - self.r_a), 0.0, 1.0)
        return 0.5 * (1.0 + np.cos(math.pi * t))

    def _sample_offsets(self, half: int) -> np.ndarray:
        pix = np.arange(-half, half + 1, dtype=float)
        sub = (np.arange(self.ov) + 0.5) / self.ov - 0.5
        return (pix[:, None] + sub[None, :]).ravel()

    def _core_from_table(self, s: np.ndarray) -> np.ndarray:
        u = s * np.float32(1.0 / _TABLE_STEP_PX2)
        i = u.astype(np.int32)
        np.minimum(i, self._table.size - 2, out=i)
        u -= i
        return self._table[i] + u * self._slope[i]

    def core_pixels(self, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
        """Pixel-integrated core of the PSF for emitters at fractional offsets.

        Parameters
        ----------
        fy, fx
            Offsets (px) of each emitter from the centre of its nearest pixel, shape ``(n,)``,
            in ``[-0.5, 0.5]``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n, 2H + 1, 2H + 1)``, ``H = core_half``: light fraction per pixel, pixel
            ``(a, b)`` at row offset ``a - H`` and column offset ``b - H`` from the nearest pixel.
        """
        fy = np.atleast_1d(np.asarray(fy, dtype=float))
        fx = np.atleast_1d(np.asarray(fx, dtype=float))
        n, k, ov = fy.size, 2 * self.core_half + 1, self.ov
        dy2 = ((self.core_samples[None, :] - fy[:, None]) ** 2).astype(np.float32)
        dx2 = ((self.core_samples[None, :] - fx[:, None]) ** 2).astype(np.float32)
        vals = self._core_from_table(dy2[:, :, None] + dx2[:, None, :])
        return vals.reshape(n, k, ov, k, ov).sum(axis=(2, 4), dtype=np.float64) / (ov * ov)

    @cached_property
    def tail_table(self) -> np.ndarray:
        """Pixel-integrated tail for emitters at offsets ``(cy, cx) / tail_offsets`` (px).

        Returns
        -------
        numpy.ndarray
            Shape ``(n_off, n_off, 2T + 1, 2T + 1)`` with ``T = tail_half``: entry
            ``[cy, cx, a, b]`` is the tail light in pixel ``(a - T, b - T)`` for an emitter at
            ``(cy / n_off, cx / n_off)`` relative to the centre of pixel ``(0, 0)``.
        """
        t, ov, n_off = self.tail_half, self.ov, self.n_off
        k = 2 * t + 1
        base = self._sample_offsets(t)
        # radial profile of the tail on a 0.0005-px step in r (linear interpolation error
        # below 1e-6 of the local ring amplitude), direct Bessel functions
        step = 0.0005
        r_tab = np.arange(0.0, math.sqrt(2.0) * (t + 2.0), step)
        prof = self.density(r_tab) * (1.0 - self._taper(r_tab))
        slope = np.append(np.diff(prof), 0.0)
        out = np.empty((n_off, n_off, k, k))
        for cy in range(n_off):
            dy2 = (base - cy / n_off) ** 2
            for cx in range(cy, n_off):  # (cx, cy) is the transpose of (cy, cx)
                dx2 = (base - cx / n_off) ** 2
                u = np.sqrt(dy2[:, None] + dx2[None, :]) * (1.0 / step)
                i = np.minimum(u.astype(np.int64), prof.size - 2)
                vals = prof[i] + (u - i) * slope[i]
                out[cy, cx] = vals.reshape(k, ov, k, ov).mean(axis=(1, 3))
                out[cx, cy] = out[cy, cx].T
        return out

    # ---- rendering ----------------------------------------------------------------------
    def add_to_image(self, image: np.ndarray, y: np.ndarray, x: np.ndarray, weights: np.ndarray | float,
                     chunk: int = 64) -> None:
        """Add ``sum_k weights[k] * PSF(y[k], x[k])``, integrated over pixels, to ``image`` in place.

        Parameters
        ----------
        image
            Float image, shape ``(Y, X)``; modified in place.
        y, x
            Emitter positions (px), shape ``(n,)``; may lie outside the image.
        weights
            Photons of each emitter (scalar or shape ``(n,)``).
        chunk
            Emitters evaluated together (memory: ``chunk * (7 (2H + 1))^2`` floats).
        """
        y = np.atleast_1d(np.asarray(y, dtype=float))
        x = np.atleast_1d(np.asarray(x, dtype=float))
        w = np.broadcast_to(np.asarray(weights, dtype=float), y.shape)
        ny, nx = image.shape
        reach = self.tail_half + 2
        keep = (y > -reach) & (y < ny - 1 + reach) & (x > -reach) & (x < nx - 1 + reach) & (w != 0)
        y, x, w = y[keep], x[keep], w[keep]
        if y.size == 0:
            return
        # core: exact evaluation at each emitter's fractional offset
        iy = np.floor(y + 0.5).astype(np.int64)
        ix = np.floor(x + 0.5).astype(np.int64)
        h = self.core_half
        for start in range(0, y.size, chunk):
            sl = slice(start, start + chunk)
            pix = self.core_pixels(y[sl] - iy[sl], x[sl] - ix[sl]) * w[sl, None, None]
            for k in range(pix.shape[0]):
                _add_clipped(image, pix[k], int(iy[sl][k]) - h, int(ix[sl][k]) - h)
        # tail: bilinear between tabulated sub-pixel offsets, merged over emitters
        n_off, t = self.n_off, self.tail_half
        table = self.tail_table
        uy, ux = y * n_off, x * n_off
        my0, mx0 = np.floor(uy).astype(np.int64), np.floor(ux).astype(np.int64)
        ty, tx = uy - my0, ux - mx0
        keys_y = np.concatenate([my0, my0, my0 + 1, my0 + 1])
        keys_x = np.concatenate([mx0, mx0 + 1, mx0, mx0 + 1])
        kw = np.concatenate([(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx]) * np.tile(w, 4)
        pairs, inverse = np.unique(np.stack([keys_y, keys_x], axis=1), axis=0, return_inverse=True)
        summed = np.bincount(inverse.ravel(), weights=kw, minlength=len(pairs))
        for (my, mx), wt in zip(pairs, summed):
            if wt == 0:
                continue
            py, cy = divmod(int(my), n_off)
            px, cx = divmod(int(mx), n_off)
            _add_clipped(image, wt * table[cy, cx], py - t, px - t)

    def expected_image(self, shape_yx: tuple[int, int], y: np.ndarray, x: np.ndarray,
                       weights: np.ndarray | float) -> np.ndarray:
        """Noise-free image (photons per pixel) of emitters, shape ``shape_yx``; see :meth:`add_to_image`."""
        image = np.zeros(shape_yx)
        self.add_to_image(image, y, x, weights)
        return image


def _add_clipped(image: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """``image[top:top+h, left:left+w] += patch``, the parts outside ``image`` dropped."""
    ph, pw = patch.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + ph, image.shape[0]), min(left + pw, image.shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    image[y0:y1, x0:x1] += patch[y0 - top:y1 - top, x0 - left:x1 - left]


# --------------------------------------------------------------------------------------------
# camera
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForeignCamera:
    """Camera model: photo-electrons to ADU.

    Attributes
    ----------
    kind
        ``"scmos"``: per-pixel gain and offset maps drawn once per movie (normal, means
        ``gain_adu_per_e`` / ``offset_adu``, standard deviations ``gain_sd`` / ``offset_sd``);
        ``"plain"``: scalar gain and offset; ``"emccd"``: scalar gain and offset after a gamma
        multiplication register of mean gain ``em_gain`` (excess-noise factor sqrt 2).
    gain_adu_per_e
        Mean conversion gain (ADU per electron leaving the multiplication register, or per
        photo-electron without one).
    gain_sd
        Pixel-to-pixel standard deviation of the gain (ADU/e-; sCMOS only).
    offset_adu
        Mean offset (ADU).
    offset_sd
        Pixel-to-pixel standard deviation of the offset (ADU; sCMOS only).
    read_noise_e
        Gaussian read noise (electrons rms, after multiplication).
    em_gain
        Mean electron multiplication (EMCCD only).
    """

    kind: str = "scmos"
    gain_adu_per_e: float = 20.0
    gain_sd: float = 1.0
    offset_adu: float = 1000.0
    offset_sd: float = 20.0
    read_noise_e: float = 1.6
    em_gain: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("scmos", "plain", "emccd"):
            raise ValueError(f"camera kind must be scmos, plain or emccd, got {self.kind!r}")
        if self.gain_adu_per_e <= 0 or self.read_noise_e < 0 or self.em_gain <= 0:
            raise ValueError(f"unphysical camera: {self}")

    def maps(self, shape_yx: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel gain (ADU/e-) and offset (ADU) maps, each of shape ``shape_yx``.

        sCMOS maps are drawn from ``rng`` (gain clipped at 5 % of its mean); other kinds are
        constant and draw nothing.
        """
        if self.kind == "scmos":
            gain = rng.normal(self.gain_adu_per_e, self.gain_sd, shape_yx)
            gain = np.maximum(gain, 0.05 * self.gain_adu_per_e)
            offset = rng.normal(self.offset_adu, self.offset_sd, shape_yx)
            return gain, offset
        return np.full(shape_yx, float(self.gain_adu_per_e)), np.full(shape_yx, float(self.offset_adu))

    def expose(self, photons: np.ndarray, gain_map: np.ndarray, offset_map: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
        """Noisy ADU image of an expected photon image.

        Parameters
        ----------
        photons
            Expected photons per pixel (signal + background), shape ``(..., Y, X)``.
        gain_map, offset_map
            From :meth:`maps`, shape ``(Y, X)``.
        rng
            Random generator.

        Returns
        -------
        numpy.ndarray
            uint16 ADU, same shape: ``round(offset + gain (electrons + read noise))`` clipped
            to ``[0, 65535]``; electrons Poisson (then gamma-multiplied for EMCCD).
        """
        electrons = rng.poisson(np.maximum(photons, 0.0)).astype(float)
        if self.kind == "emccd":
            electrons = np.where(electrons > 0, rng.gamma(np.maximum(electrons, 1e-12), self.em_gain), 0.0)
        electrons += rng.normal(0.0, self.read_noise_e, electrons.shape) if self.read_noise_e > 0 else 0.0
        adu = np.rint(offset_map + gain_map * electrons)
        return np.clip(adu, 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------------------------
# movie
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForeignScene:
    """Field, timing and photometry of a foreign-optics movie.

    Attributes
    ----------
    shape_yx
        Field (px).
    n_frames, n_particles, substeps
        Frames, particles (all present from frame 0) and sub-steps per frame.
    frame_interval_s
        Frame interval (s); the exposure is continuous.
    photons
        Signal photons per particle per frame over the infinite plane.
    background
        Background photons per pixel per frame.
    start_margin_px
        Particles start at least this far from the field's border (px).
    illumination
        Excitation profile over the field and bleaching over time (default: even, none); ``photons``
        and ``background`` are then the values at the field's centre in frame 0.
    """

    shape_yx: tuple[int, int] = (128, 128)
    n_frames: int = 120
    n_particles: int = 24
    substeps: int = 10
    frame_interval_s: float = 0.01
    photons: float = 3000.0
    background: float = 600.0
    start_margin_px: float = 16.0
    illumination: ForeignIllumination = field(default_factory=ForeignIllumination)


@dataclass
class ForeignMovie:
    """A rendered movie with its ground truth.

    Attributes
    ----------
    movie
        uint16 ADU, shape ``(T, Y, X)``.
    truth
        Columns (1-D arrays of one length, one row per particle-frame inside the field):
        ``track_id``, ``frame``, ``x_px``, ``y_px`` (mean of the frame's sub-positions),
        ``D1_um2_s``, ``D2_um2_s``, ``theta_deg``, ``state`` (labelled state: 0, or for binding
        0 bound / 1 unbound), ``D_substep_mean_um2_s`` (mean over the frame's sub-steps of
        (D1 + D2) / 2) and ``photons`` (the frame's signal photons over the infinite plane, with the
        scene's illumination and bleaching).
    acquisition
        The true acquisition (JSON-able; see :func:`render_foreign_movie`).
    gain_map, offset_map
        Camera maps, shape ``(Y, X)`` (ADU/e-, ADU).
    expected
        Expected photons per pixel, ``(T, Y, X)``, when asked for; else ``None``.
    """

    movie: np.ndarray
    truth: dict[str, np.ndarray]
    acquisition: dict[str, Any]
    gain_map: np.ndarray
    offset_map: np.ndarray
    expected: np.ndarray | None = field(default=None, repr=False)

    def truth_dataframe(self) -> Any:
        """The truth as a ``pandas.DataFrame`` (pandas imported here only)."""
        import pandas as pd

        return pd.DataFrame(self.truth)


def render_foreign_movie(scene: ForeignScene, optics: ForeignOptics, camera: ForeignCamera,
                         motion: ForeignMotion, rng: np.random.Generator | int,
                         keep_expected: bool = False, psf: AiryPSF | None = None) -> ForeignMovie:
    """Render one movie.

    Random numbers come from ``rng`` in this order: camera maps, start positions, motion
    parameters / switches / steps, the illumination's flicker (only where it has one), then the noise
    frame by frame.

    Parameters
    ----------
    scene, optics, camera, motion
        What to render.
    rng
        A ``numpy.random.Generator`` or an integer seed.
    keep_expected
        Keep the expected photon images (``ForeignMovie.expected``).
    psf
        An :class:`AiryPSF` of ``optics`` to reuse (its tail table takes about 2 s to build);
        default: a new one.

    Returns
    -------
    ForeignMovie
        Movie, truth and the true acquisition: ``pixel_size_nm``, ``frame_interval_s``,
        ``substeps_per_frame``, ``na``, ``wavelength_nm``, ``psf`` (``"airy"``),
        ``psf_sigma_equivalent_nm`` / ``_px``, ``signal_photons`` (infinite plane),
        ``enclosed_fraction`` (share of them inside the rendered window),
        ``signal_photons_in_window``, ``background_photons`` (at the field's centre in frame 0),
        ``signal_photons_field_mean`` and ``background_photons_field_mean`` (means over the particle-frames
        in the field and over the pixel-frames: the same values under even light), ``camera``, ``gain_map_mean``,
        ``gain_map_sd``, ``offset_map_mean``, ``offset_map_sd``, ``read_noise_e``,
        ``em_gain``, ``motion`` and ``scene`` (the settings) and ``seed`` (when an integer).
    """
    seed = rng if isinstance(rng, (int, np.integer)) else None
    gen = np.random.default_rng(rng) if seed is not None else rng
    ny, nx = scene.shape_yx
    t_frames, s_sub = scene.n_frames, scene.substeps
    if psf is None:
        psf = AiryPSF(optics)
    elif psf.optics != optics:
        raise ValueError("the given psf was built for other optics")
    gain_map, offset_map = camera.maps((ny, nx), gen)
    m = scene.start_margin_px
    start = np.stack([gen.uniform(m - 0.5, ny - 0.5 - m, scene.n_particles),
                      gen.uniform(m - 0.5, nx - 0.5 - m, scene.n_particles)], axis=1)
    paths = simulate_foreign_paths(motion, start, t_frames, s_sub, scene.frame_interval_s,
                                   optics.pixel_size_nm / 1000.0, gen)
    movie = np.empty((t_frames, ny, nx), dtype=np.uint16)
    expected = np.empty((t_frames, ny, nx)) if keep_expected else None
    light = scene.illumination
    background = float(scene.background) * light.field((ny, nx))
    lit = light.excitation(paths["y"], paths["x"], (ny, nx))  # (N, T S) relative excitation per sub-step
    brightness = light.fade(np.arange(t_frames)) * light.power(t_frames, gen)  # (T,) bleaching and flicker
    for f in range(t_frames):
        sl = slice(f * s_sub, (f + 1) * s_sub)
        fade = float(brightness[f])
        image = background * fade
        psf.add_to_image(image, paths["y"][:, sl].ravel(), paths["x"][:, sl].ravel(),
                         (scene.photons / s_sub) * fade * lit[:, sl].ravel())
        if expected is not None:
            expected[f] = image
        movie[f] = camera.expose(image, gain_map, offset_map, gen)
    photons = scene.photons * lit.reshape(len(lit), t_frames, s_sub).mean(axis=2) * brightness
    truth = _truth_columns(paths, scene, s_sub, photons)
    frac = psf.window_fraction()
    acq: dict[str, Any] = {
        "pixel_size_nm": optics.pixel_size_nm,
        "frame_interval_s": scene.frame_interval_s,
        "substeps_per_frame": s_sub,
        "psf": "airy",
        "na": optics.na,
        "wavelength_nm": optics.wavelength_nm,
        "psf_sigma_equivalent_nm": optics.sigma_equivalent_nm,
        "psf_sigma_equivalent_px": optics.sigma_equivalent_px,
        "signal_photons": scene.photons,
        "enclosed_fraction": frac,
        "signal_photons_in_window": scene.photons * frac,
        "background_photons": scene.background,
        # means over the movie (particle-frames in the field, pixel-frames): the scene's values when the light is even
        "signal_photons_field_mean": float(np.mean(truth["photons"])) if len(truth["photons"]) else scene.photons,
        "background_photons_field_mean": float(background.mean() * np.mean(brightness)),
        "camera": camera.kind,
        "gain_map_mean": float(gain_map.mean()),
        "gain_map_sd": float(gain_map.std()),
        "offset_map_mean": float(offset_map.mean()),
        "offset_map_sd": float(offset_map.std()),
        "read_noise_e": camera.read_noise_e,
        "em_gain": camera.em_gain if camera.kind == "emccd" else 1.0,
        "optics": asdict(optics),
        "camera_settings": asdict(camera),
        "motion": asdict(motion),
        "scene": asdict(scene),
        "seed": int(seed) if seed is not None else None,
    }
    return ForeignMovie(movie, truth, acq, gain_map, offset_map, expected)


def _truth_columns(paths: dict[str, np.ndarray], scene: ForeignScene, s_sub: int,
                   photons: np.ndarray) -> dict[str, np.ndarray]:
    n, t_frames = paths["label"].shape
    xf = paths["x"].reshape(n, t_frames, s_sub).mean(axis=2)
    yf = paths["y"].reshape(n, t_frames, s_sub).mean(axis=2)
    rows = np.arange(n)[:, None]
    lab = paths["label"]
    d_sub = 0.5 * (paths["D1"][rows, paths["state"]] + paths["D2"][rows, paths["state"]])
    ny, nx = scene.shape_yx
    inside = (xf >= -0.5) & (xf < nx - 0.5) & (yf >= -0.5) & (yf < ny - 0.5)
    pid, fr = np.nonzero(inside)
    return {
        "track_id": pid.astype(np.int64),
        "frame": fr.astype(np.int64),
        "x_px": xf[pid, fr],
        "y_px": yf[pid, fr],
        "D1_um2_s": paths["D1"][pid, lab[pid, fr]],
        "D2_um2_s": paths["D2"][pid, lab[pid, fr]],
        "theta_deg": paths["theta_deg"][pid, lab[pid, fr]],
        "state": lab[pid, fr].astype(np.int64),
        "D_substep_mean_um2_s": d_sub.reshape(n, t_frames, s_sub).mean(axis=2)[pid, fr],
        "photons": photons[pid, fr],
    }


def write_imagej_tiff(path: str | Path, movie: np.ndarray, pixel_size_nm: float, frame_interval_s: float) -> Path:
    """Write ``movie`` (T, Y, X) as an ImageJ TIFF holding only pixel size and frame interval.

    Parameters
    ----------
    path
        Output file.
    movie
        uint16 array, shape ``(T, Y, X)``.
    pixel_size_nm
        Pixel side (nm); stored as resolution ``1 / um`` with unit ``um``.
    frame_interval_s
        Stored as ImageJ ``finterval`` (s).

    Returns
    -------
    pathlib.Path
        The path written. No PSF, photon or camera information is stored.
    """
    import tifffile

    px_um = pixel_size_nm / 1000.0
    path = Path(path)
    tifffile.imwrite(path, np.asarray(movie, dtype=np.uint16), imagej=True, resolution=(1.0 / px_um, 1.0 / px_um),
                     metadata={"unit": "um", "finterval": float(frame_interval_s), "axes": "TYX"})
    return path


# --------------------------------------------------------------------------------------------
# protocol cases
# --------------------------------------------------------------------------------------------

#: The cases of protocol "foreign optics" v1: name -> (NA, wavelength nm, motion kind,
#: photons per frame, background photons/px, seed). Seeds 4001-4004 are reserved for this set.
FOREIGN_CASES: dict[str, tuple[float, float, str, float, float, int]] = {
    "free_narrow": (1.45, 520.0, "free", 3000.0, 600.0, 4001),
    "free_wide": (0.8, 640.0, "free", 5000.0, 600.0, 4002),
    "aniso_narrow": (1.45, 520.0, "aniso", 3000.0, 600.0, 4003),
    "binding_narrow": (1.45, 520.0, "binding", 3000.0, 600.0, 4004),
}

#: Cases outside the protocol, for diagnostics (same fields; seeds from 4005): binding/unbinding
#: tracks at the wide optics of ``free_wide``, which the protocol has only for free diffusion.
EXTRA_CASES: dict[str, tuple[float, float, str, float, float, int]] = {
    "binding_wide": (0.8, 640.0, "binding", 5000.0, 600.0, 4005),
    "free_fast": (1.45, 520.0, "free", 3000.0, 600.0, 4006),
    "free_fast_sparse": (1.45, 520.0, "free", 3000.0, 600.0, 4007),
    "free_beam": (1.45, 520.0, "free", 3000.0, 600.0, 4008),
    "free_emccd": (1.45, 520.0, "free", 1000.0, 20.0, 4009),
    "free_emccd_bright": (1.45, 520.0, "free", 1000.0, 40.0, 4010),
}

#: Motion of the extra cases other than the default :class:`ForeignMotion` of their kind: ``free_fast`` and
#: ``free_fast_sparse`` have D log-uniform in 0.05-20 um^2/s, a fifth of the particles faster than the bundled
#: models were trained for (the per-track range check, ``estimation/model_range.py``).
EXTRA_MOTION: dict[str, dict[str, Any]] = {
    "free_fast": {"d_range": (0.05, 20.0)},
    "free_fast_sparse": {"d_range": (0.05, 20.0)},
}

#: Scene of the extra cases other than the protocol's: ``free_fast_sparse`` has 10 particles instead of 24, so
#: that fewer of the fast particles' tracks are lost to linking (steps of up to about 6 px per frame);
#: ``free_beam`` is ``free_narrow`` lit by a Gaussian beam (corners at 35 % of the centre, the middle of each edge
#: at 59 %) that bleaches to half over the 120 frames and flickers by 1.5 % rms from frame to frame
#: (:mod:`.foreign_illumination`).
#: Camera of the extra cases other than the default sCMOS: ``free_emccd`` is an EMCCD (multiplication 300, 0.05 ADU per
#: electron out of the register: 15 ADU per photo-electron; 60 e- of read noise after multiplication, offset 500 ADU)
#: at 20 background photons/px and 1,000 signal photons, a moderate light for it; ``free_emccd_bright`` the same camera
#: at 40 background photons/px, where its excess noise no longer shows in the background's fifth cumulant.
_EMCCD = ForeignCamera(kind="emccd", gain_adu_per_e=0.05, offset_adu=500.0, read_noise_e=60.0, em_gain=300.0)
EXTRA_CAMERA: dict[str, ForeignCamera] = {"free_emccd": _EMCCD, "free_emccd_bright": _EMCCD}

EXTRA_SCENE: dict[str, dict[str, Any]] = {
    "free_fast_sparse": {"n_particles": 10},
    "free_beam": {"illumination": ForeignIllumination(corner_relative=0.35, bleach_half_life_frames=120.0,
                                                      flicker_sd=0.015)},
}


def foreign_case(name: str, quick: bool = False) -> dict[str, Any]:
    """Settings of one protocol case.

    Parameters
    ----------
    name
        A key of :data:`FOREIGN_CASES` (or of :data:`EXTRA_CASES`).
    quick
        Smaller movie for smoke runs (40 frames, 12 particles, 96 x 96 px).

    Returns
    -------
    dict
        ``scene``, ``optics``, ``camera``, ``motion`` (dataclasses) and ``seed`` (int).
    """
    na, lam, kind, photons, background, seed = {**FOREIGN_CASES, **EXTRA_CASES}[name]
    scene = ForeignScene(photons=photons, background=background, **EXTRA_SCENE.get(name, {}))
    if quick:
        scene = dataclasses.replace(scene, shape_yx=(96, 96), n_frames=40, n_particles=12)
    return {"scene": scene, "optics": ForeignOptics(na=na, wavelength_nm=lam),
            "camera": EXTRA_CAMERA.get(name, ForeignCamera()),
            "motion": ForeignMotion(kind=kind, **EXTRA_MOTION.get(name, {})), "seed": seed}
