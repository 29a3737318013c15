"""Image formation: pixel-integrated Gaussian PSF with motion blur, and camera noise.

Pixel convention (API_CONTRACT.md): pixel ``(i, j)`` covers ``y in [i - 0.5, i + 0.5)``
and ``x in [j - 0.5, j + 0.5)``, so its centre is the coordinate ``(i, j)``.

A frame's expected signal is the sum, over the exposed sub-positions, of the Gaussian
PSF integrated over every pixel (separable erf form); the frame's photons are split
evenly over those sub-positions. The camera then adds background photons, Poisson shot
noise, Gaussian read noise, gain and offset, and rounds to ``uint16`` ADU.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import erf  # exact erf for scalar figures; images use fast_erf
from scipy.stats import poisson as _poisson_dist

from ..acquisition import Acquisition
from .airy import airy_windows
from .optics import IDEAL_OPTICS, RenderOptics
from .trajectories import SimulationError

__all__ = [
    "expected_photons",
    "fast_erf",
    "render_windows",
    "camera_image",
    "camera_image_from_counts",
    "sample_poisson",
    "photons_to_adu",
    "peak_pixel_fraction",
    "static_snr",
    "signal_photons_for_snr",
    "localization_crlb_nm",
]

#: Largest number of frames rendered in one vectorised block (bounds temporary memory).
_RENDER_BLOCK_FRAMES = 1024
#: Largest number of pixels given camera noise in one block.
_NOISE_BLOCK_PIXELS = 1 << 18


# Abramowitz & Stegun 7.1.26 coefficients.
_AS_P = np.float32(0.3275911)
_AS_A = tuple(np.float32(v) for v in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429))


def fast_erf(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Error function of a float32 array, about 4x faster than ``scipy.special.erf``.

    Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7 in exact arithmetic, below 1e-6
    in float32), evaluated with vectorised numpy operations. ``out`` may be ``x``.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0:
        return fast_erf(x.reshape(1)).reshape(())
    ax = np.abs(x)
    t = ax * _AS_P
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    poly = _AS_A[4] * t
    for coef in (_AS_A[3], _AS_A[2], _AS_A[1], _AS_A[0]):
        poly += coef
        poly *= t
    np.multiply(ax, ax, out=ax)
    np.negative(ax, out=ax)
    np.exp(ax, out=ax)
    poly *= ax
    np.subtract(np.float32(1.0), poly, out=poly)
    return np.copysign(poly, x, out=poly if out is None else out)


def _exposed(positions: np.ndarray, acquisition: Acquisition) -> np.ndarray:
    s = positions.shape[-2]
    if s == acquisition.substeps_per_frame:
        return positions[..., : acquisition.exposed_substeps, :]
    return positions


def expected_photons(
    positions_px: Any,
    window_shape: tuple[int, int],
    acquisition: Acquisition,
    photons_per_frame: Any = None,
    optics: RenderOptics | None = None,
) -> np.ndarray:
    """Expected signal photons per pixel of a moving particle's frame (no background, no noise).

    Parameters
    ----------
    positions_px
        ``(..., S, 2)`` sub-positions ``(y, x)`` in pixels, relative to the window's pixel
        grid (pixel ``(i, j)`` of the window is centred at ``(i, j)``). When ``S`` equals
        ``acquisition.substeps_per_frame`` only the first ``acquisition.exposed_substeps``
        are used (the camera's exposure); any other ``S`` is taken as the list of exposed
        sub-positions (``S = 1`` for a static particle).
    window_shape
        ``(H, W)`` pixels.
    acquisition
        Supplies the PSF sigma (``psf_sigma_px``) and the default photon count.
    photons_per_frame
        Photons detected per frame, a number or an array broadcastable to the leading
        shape ``(...)``; ``None``: ``acquisition.signal_photons``.
    optics
        PSF shape (ellipticity, Airy-like halo; :class:`~.optics.RenderOptics`); ``None``:
        the round Gaussian of sigma ``acquisition.psf_sigma_px``.

    Returns
    -------
    ``(..., H, W)`` float32 expected photons; the sum over an infinite window is
    ``photons_per_frame``.
    """
    pos = np.asarray(positions_px, dtype=float)
    if pos.ndim < 2 or pos.shape[-1] != 2 or pos.shape[-2] < 1:
        raise SimulationError(f"positions_px must have shape (..., S, 2), got {pos.shape}")
    h, w = (int(v) for v in window_shape)
    if h < 1 or w < 1:
        raise SimulationError(f"window_shape must be two positive sizes, got {window_shape!r}")
    pos = _exposed(pos, acquisition)
    lead = pos.shape[:-2]
    s = pos.shape[-2]
    photons = np.broadcast_to(
        np.asarray(acquisition.signal_photons if photons_per_frame is None else photons_per_frame, dtype=np.float32),
        lead,
    )
    flat = pos.reshape(-1, s, 2)
    per_sub = (photons.reshape(-1) / np.float32(s)).astype(np.float32)
    if optics is not None and optics.airy:
        out = np.empty((flat.shape[0], h, w), dtype=np.float32)
        airy_windows(flat, per_sub, float(acquisition.psf_sigma_px), out)
        return out.reshape(*lead, h, w)
    components = (optics or IDEAL_OPTICS).components(acquisition.psf_sigma_px)
    # one component is written straight into ``out``; several are summed into it
    out = (np.zeros if len(components) > 1 else np.empty)((flat.shape[0], h, w), dtype=np.float32)
    part = np.empty_like(out) if len(components) > 1 else out
    for weight, sigma_y, sigma_x in components:
        _gaussian_windows(flat, per_sub * np.float32(weight), (sigma_y, sigma_x), part)
        if part is not out:
            out += part
    return out.reshape(*lead, h, w)


def _gaussian_windows(
    flat_px: np.ndarray, per_sub: np.ndarray, sigma_yx_px: tuple[float, float], out: np.ndarray
) -> None:
    """Write into ``out`` ``(n, H, W)`` the photons of an axis-aligned Gaussian PSF.

    ``flat_px`` ``(n, S, 2)`` sub-positions; ``per_sub`` ``(n,)`` photons per sub-position.
    """
    n, h, w = out.shape
    s = flat_px.shape[1]
    scale = np.array([1.0 / (math.sqrt(2.0) * v) for v in sigma_yx_px], dtype=np.float32)  # (2,): y, x
    e = max(h, w) + 1
    edges = (np.arange(e, dtype=np.float32) - np.float32(0.5))[None, :] * scale[:, None]  # (2, E)
    for a in range(0, n, _RENDER_BLOCK_FRAMES):
        b = min(a + _RENDER_BLOCK_FRAMES, n)
        p = (flat_px[a:b] * scale).astype(np.float32).transpose(0, 2, 1)  # (n, 2, S): y then x
        cum = fast_erf(edges[None, :, None, :] - p[..., None])  # (n, 2, S, E)
        frac = cum[..., 1:] - cum[..., :-1]  # (n, 2, S, E - 1): twice the pixel fractions
        # (n, H, S) y-fractions times the photons per sub-position, contiguous for matmul
        fy_t = np.multiply(
            frac[:, 0, :, :h].transpose(0, 2, 1),
            (per_sub[a:b] * np.float32(0.25))[:, None, None],
            out=np.empty((b - a, h, s), dtype=np.float32),
        )
        np.matmul(fy_t, frac[:, 1, :, :w], out=out[a:b])


def render_windows(
    substep_positions_px: Any,
    window_origin_px: Any,
    window_size: int,
    acquisition: Acquisition,
    photons_per_frame: Any = None,
    optics: RenderOptics | None = None,
) -> np.ndarray:
    """Expected photons in square windows placed on the image grid.

    Parameters
    ----------
    substep_positions_px
        ``(..., S, 2)`` sub-positions ``(y, x)`` in image pixels.
    window_origin_px
        ``(..., 2)`` integer image pixel of each window's top-left pixel.
    window_size
        Side ``P`` of the windows (pixels).
    photons_per_frame, optics
        As in :func:`expected_photons`.

    Returns
    -------
    ``(..., P, P)`` float32 expected signal photons (see :func:`expected_photons`).
    """
    pos = np.asarray(substep_positions_px, dtype=float)
    origin = np.asarray(window_origin_px)
    if origin.shape != pos.shape[:-2] + (2,):
        raise SimulationError(f"window_origin_px must have shape {pos.shape[:-2] + (2,)}, got {origin.shape}")
    rel = pos - origin[..., None, :].astype(float)
    return expected_photons(rel, (window_size, window_size), acquisition, photons_per_frame, optics)


# ---------------------------------------------------------------- camera noise
# Exact Poisson sampling, several times faster than numpy's per-element sampler on the
# many small, varying means of rendered frames. Poisson additivity splits a pixel's mean
# into a constant background, a multiple of 1/8 photon and a remainder below 1/8: the
# first two are drawn from Walker alias tables of the exact distributions (support cut
# where the tail probability is below 1e-17), the remainders by Poisson splitting, and
# means of 64 or more by numpy. The result has the exact Poisson law up to float64
# rounding; tests/test_simulation_render.py checks it with chi-square tests.
_GRID_STEP = 0.125  # means below _GRID_MAX are split into a multiple of this and a remainder
_GRID_MAX = 64.0
_GRID_ROWS = int(_GRID_MAX / _GRID_STEP) + 1


def _alias_row(pmf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table of one distribution: (acceptance probability, alias index)."""
    m = pmf.shape[0]
    q = (pmf / pmf.sum() * m).tolist()
    prob = [1.0] * m
    alias = list(range(m))
    small = [i for i in range(m) if q[i] < 1.0]
    large = [i for i in range(m) if q[i] >= 1.0]
    while small and large:
        i = small.pop()
        j = large[-1]
        prob[i] = q[i]
        alias[i] = j
        q[j] = (q[j] + q[i]) - 1.0
        if q[j] < 1.0:
            small.append(large.pop())
    return np.asarray(prob), np.asarray(alias)


class _AliasRows:
    """Exact samplers of ``R`` fixed discrete distributions on ``first, first + 1, ...``.

    Walker's alias method: one uniform and two table look-ups per draw, no search.
    """

    def __init__(self, pmf_rows: np.ndarray, first: int = 0) -> None:
        pmf_rows = np.atleast_2d(np.asarray(pmf_rows, dtype=float))
        self.width = pmf_rows.shape[1]
        rows = [_alias_row(row) for row in pmf_rows]
        self.prob = np.concatenate([r[0] for r in rows])
        self.alias = np.concatenate([r[1] for r in rows]).astype(np.int32)
        self.first = int(first)

    def sample(self, rows: np.ndarray | None, size: int, rng: np.random.Generator) -> np.ndarray:
        """``size`` int64 draws, from row ``rows[i]`` for draw ``i`` (``None``: row 0)."""
        x = rng.random(size) * self.width
        j = x.astype(np.int64)
        x -= j  # the fractional part is a fresh uniform, independent of j
        idx = j if rows is None else rows * self.width + j
        k = np.where(x < self.prob[idx], j, self.alias[idx])
        if self.first:
            k += self.first
        return k


_TABLES: dict[tuple, Any] = {}


def _cached(key: tuple, build: Any) -> Any:
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) > 32:
            _TABLES.clear()
        table = _TABLES[key] = build()
    return table


def _poisson_kmax(mean: float) -> int:
    """Support cut-off: Poisson(mean) exceeds it with probability far below 1e-17."""
    return int(math.ceil(mean + 15.0 * math.sqrt(mean) + 40.0))


def _poisson_constant(mean: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` exact Poisson(mean) draws (float32) for a scalar mean."""
    if mean <= 0:
        return np.zeros(size, dtype=np.float32)
    if mean > 1e4:
        return rng.poisson(mean, size).astype(np.float32)
    table = _cached(
        ("poisson", float(mean)), lambda: _AliasRows(_poisson_dist.pmf(np.arange(_poisson_kmax(mean) + 1), mean))
    )
    return table.sample(None, size, rng).astype(np.float32)


def _grid_table() -> _AliasRows:
    """Alias tables of Poisson(i * _GRID_STEP), i = 0 .. _GRID_ROWS - 1."""
    kmax = _poisson_kmax(_GRID_MAX)
    lam = (np.arange(_GRID_ROWS) * _GRID_STEP)[:, None]
    return _cached(("grid",), lambda: _AliasRows(_poisson_dist.pmf(np.arange(kmax + 1)[None, :], lam)))


def _poisson_split(mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact Poisson draws (float32) for a 1-D array of small means, by Poisson splitting.

    The total count is one Poisson draw of the summed means; each event then falls in
    element ``i`` with probability ``mean[i] / sum``. The counts per element are then
    independent Poisson(mean[i]) variates; the cost grows with the total count only.
    """
    cum = np.cumsum(mean, dtype=np.float64)
    counts = np.zeros(mean.shape[0], dtype=np.float32)
    if not cum.size or cum[-1] <= 0:
        return counts
    total = cum[-1]
    n_events = int(rng.poisson(total))
    if n_events:
        events = rng.random(n_events)
        events.sort()  # sorted needles make the search cache-friendly
        where = np.searchsorted(cum, events * total, side="right")
        last = int(np.searchsorted(cum, total, side="left"))  # last element with a positive mean
        np.minimum(where, last, out=where)
        hit, n_hit = np.unique(where, return_counts=True)  # `where` is sorted: linear time
        counts[hit] = n_hit
    return counts


def _grid_split(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split means into grid rows and remainders; ``big`` indexes the means >= _GRID_MAX (row 0, no remainder)."""
    m = mean.astype(np.float64)
    row = np.floor(m * (1.0 / _GRID_STEP))
    rem = m - row * _GRID_STEP
    big = np.nonzero(m >= _GRID_MAX)[0] if m.size and m.max() >= _GRID_MAX else np.zeros(0, dtype=np.int64)
    if big.size:
        row[big] = 0.0
        rem[big] = 0.0
    return row.astype(np.int64), rem, big


def _poisson_variable(mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact Poisson draws (float32) for a 1-D array of non-negative means.

    A mean ``m < 64`` is split as ``i / 8 + d`` (``0 <= d < 1/8``): ``Poisson(i / 8)``
    comes from cached alias tables and ``Poisson(d)`` by Poisson splitting
    (:func:`_poisson_split`); larger means use ``numpy``'s sampler.
    """
    mean = np.asarray(mean, dtype=np.float32)
    row, rem, big = _grid_split(mean)
    out = _poisson_split(rem, rng)
    on_grid = np.nonzero(row)[0]
    if on_grid.size:
        out[on_grid] += _grid_table().sample(row[on_grid], on_grid.size, rng)
    if big.size:
        out[big] = rng.poisson(mean[big].astype(np.float64))
    return out


def sample_poisson(expected: Any, rng: np.random.Generator, background: Any = 0.0) -> np.ndarray:
    """Exact Poisson counts with mean ``expected + background``.

    Poisson additivity makes this several times faster than ``Generator.poisson`` on
    rendered frames: a scalar ``background`` is drawn from a cached inversion table,
    each ``expected`` value below 64 as a multiple of 1/8 (cached tables) plus a small
    remainder (sequential inversion), and larger means with ``numpy``. Every part is an
    exact Poisson draw.

    Parameters
    ----------
    expected
        Array of non-negative means (photons).
    rng
        Random generator.
    background
        Non-negative number (or array broadcastable to ``expected``) added to every mean.

    Returns
    -------
    float32 array of counts, same shape as ``expected``.
    """
    lam = np.asarray(expected, dtype=np.float32)
    bg = np.asarray(background, dtype=np.float64)
    if not np.isfinite(lam).all() or (lam < 0).any() or not np.isfinite(bg).all() or (bg < 0).any():
        raise SimulationError("Poisson means must be finite and non-negative")
    if bg.ndim > 0:
        total = np.broadcast_to(lam + bg.astype(np.float32), lam.shape)
        return _poisson_variable(total.reshape(-1), rng).reshape(lam.shape)
    flat = lam.reshape(-1)
    out = np.empty(flat.shape, dtype=np.float32)
    for a in range(0, flat.shape[0], _NOISE_BLOCK_PIXELS):
        b = min(a + _NOISE_BLOCK_PIXELS, flat.shape[0])
        out[a:b] = _poisson_constant(float(bg), b - a, rng)
        out[a:b] += _poisson_variable(flat[a:b], rng)
    return out.reshape(lam.shape)


def photons_to_adu(photon_counts: Any, acquisition: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Camera read-out: ``round(offset + gain * (counts + read_noise * N(0, 1)))`` clipped to uint16."""
    counts = np.asarray(photon_counts, dtype=np.float32)
    signal = counts
    if acquisition.read_noise_e > 0:
        signal = counts + np.float32(acquisition.read_noise_e) * rng.standard_normal(counts.shape, dtype=np.float32)
    adu = signal * np.float32(acquisition.gain_adu_per_e)
    adu += np.float32(acquisition.offset_adu)
    np.rint(adu, out=adu)
    np.clip(adu, 0, 65535, out=adu)
    return adu.astype(np.uint16)


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + erf(np.asarray(x, dtype=float) / math.sqrt(2.0)))


class _CameraTables:
    """Exact ADU distributions of a pixel, one per signal mean on the 1/8-photon grid.

    Row ``i`` is the distribution of ``round(offset + gain * (Poisson(b + i/8) +
    read_noise * z))`` for background ``b``. With a whole-number gain and offset,
    ``round(x + gain * k) = round(x) + gain * k`` for whole ``k``, so a pixel of signal
    mean ``s = i/8 + d`` is drawn exactly as a row-``i`` value plus ``gain * Poisson(d)``:
    one table look-up instead of two Poisson draws and a normal draw.
    """

    max_entries = 2_000_000

    def __init__(self, acquisition: Acquisition, background_photons: float) -> None:
        g = int(acquisition.gain_adu_per_e)
        r = acquisition.read_noise_e * g  # read noise in ADU
        kmax = _poisson_kmax(background_photons + _GRID_MAX)
        lam = background_photons + np.arange(_GRID_ROWS)[:, None] * _GRID_STEP
        pk = _poisson_dist.pmf(np.arange(kmax + 1)[None, :], lam)  # (rows, K + 1)
        lattice = np.zeros((_GRID_ROWS, kmax * g + 1))
        lattice[:, ::g] = pk
        if r > 0:
            half = int(math.ceil(10.0 * r)) + 1
            q = np.diff(_norm_cdf((np.arange(-half, half + 2) - 0.5) / r))
            pmf = np.stack([np.convolve(row, q) for row in lattice])
            first = int(acquisition.offset_adu) - half
        else:
            pmf = lattice
            first = int(acquisition.offset_adu)
        self.table = _AliasRows(pmf, first)
        self.gain = np.float32(g)

    @staticmethod
    def size(acquisition: Acquisition, background_photons: float) -> float:
        g = acquisition.gain_adu_per_e
        return _GRID_ROWS * (
            _poisson_kmax(background_photons + _GRID_MAX) * g + 20.0 * acquisition.read_noise_e * g + 3
        )

    @classmethod
    def get(cls, acquisition: Acquisition, background_photons: float) -> _CameraTables | None:
        g, off = acquisition.gain_adu_per_e, acquisition.offset_adu
        if not (float(g).is_integer() and float(off).is_integer()):
            return None
        if cls.size(acquisition, background_photons) > cls.max_entries:
            return None
        key = ("camera", float(background_photons), int(g), int(off), float(acquisition.read_noise_e))
        return _cached(key, lambda: cls(acquisition, background_photons))

    def sample(self, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """float32 ADU (not yet clipped) for a 1-D array of signal means (photons)."""
        row, rem, big = _grid_split(signal)
        adu = self.table.sample(row, row.shape[0], rng).astype(np.float32)
        extra = _poisson_split(rem, rng)
        if big.size:
            extra[big] = rng.poisson(signal[big].astype(np.float64))
        extra *= self.gain
        adu += extra
        return adu


def camera_image(
    expected_signal_photons: Any,
    acquisition: Acquisition,
    rng: np.random.Generator,
    *,
    background_photons: Any = None,
    optics: RenderOptics | None = None,
) -> np.ndarray:
    """Noisy camera frames (uint16 ADU) from expected signal photons.

    Parameters
    ----------
    expected_signal_photons
        Any-shape array of expected signal photons per pixel (e.g. ``(..., H, W)`` from
        :func:`expected_photons`).
    acquisition
        Background photons per pixel, read noise (e- rms), gain (ADU/e-), offset (ADU).
    rng
        Random generator.
    background_photons
        Overrides ``acquisition.background_photons`` (a number, or an array broadcastable
        to the input for a non-uniform background).
    optics
        With ``optics.em_gain > 1`` the camera is an EMCCD (see :mod:`.optics`): the
        Poisson counts pass a gamma-distributed gain register before the read noise.

    Returns
    -------
    uint16 array of the input's shape: ``round(offset + gain * (Poisson(signal +
    background) + read_noise * N(0, 1)))`` clipped to ``[0, 65535]``.

    Notes
    -----
    With a whole-number gain and offset and a uniform background, each pixel is drawn
    from cached tables of the exact ADU distribution for signal means on a 1/8-photon
    grid, plus ``gain * Poisson(remainder)``: the same distribution as the formula
    above in a fraction of the time (see ``_CameraTables``).
    """
    lam = np.asarray(expected_signal_photons, dtype=np.float32)
    if not np.isfinite(lam).all() or (lam < 0).any():
        raise SimulationError("expected signal photons must be finite and non-negative")
    bg = acquisition.background_photons if background_photons is None else background_photons
    bg_arr = np.asarray(bg, dtype=np.float64)
    if not np.isfinite(bg_arr).all() or (bg_arr < 0).any():
        raise SimulationError("background photons must be finite and non-negative")
    if optics is not None and optics.em_gain > 1:
        return _emccd_image(lam, bg_arr, acquisition, rng, optics.em_gain)
    flat = lam.reshape(-1)
    out = np.empty(flat.shape, dtype=np.uint16)
    tables = _CameraTables.get(acquisition, float(bg_arr)) if bg_arr.ndim == 0 else None
    if bg_arr.ndim > 0:
        bg_arr = np.broadcast_to(bg_arr, lam.shape).reshape(-1)
    for a in range(0, flat.shape[0], _NOISE_BLOCK_PIXELS):
        b = min(a + _NOISE_BLOCK_PIXELS, flat.shape[0])
        if tables is not None:
            adu = tables.sample(flat[a:b], rng)
            np.clip(adu, 0, 65535, out=adu)
            out[a:b] = adu
        else:
            bg_block = bg_arr[a:b] if bg_arr.ndim else bg_arr
            out[a:b] = photons_to_adu(sample_poisson(flat[a:b], rng, bg_block), acquisition, rng)
    return out.reshape(lam.shape)


def _emccd_image(
    signal: np.ndarray, background: np.ndarray, acquisition: Acquisition, rng: np.random.Generator, em_gain: float
) -> np.ndarray:
    """EMCCD frames: ``Gamma(Poisson(signal + background), em_gain) / em_gain`` electrons, then read-out."""
    counts = sample_poisson(signal, rng, background)
    electrons = np.zeros_like(counts)
    hit = counts > 0
    electrons[hit] = rng.gamma(counts[hit].astype(np.float64), em_gain) / em_gain
    return photons_to_adu(electrons, acquisition, rng)


def camera_image_from_counts(signal_counts: Any, acquisition: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Camera frames (uint16 ADU) from signal photo-electron counts that are already drawn.

    Adds Poisson(``acquisition.background_photons``) per pixel, Gaussian read noise, gain,
    offset, rounding and clipping, exactly as :func:`camera_image` does after its own
    signal draw. Used for movies, where each particle's photons are drawn in its own
    small box and then added into the frame.

    Parameters
    ----------
    signal_counts
        Any-shape array of whole, non-negative signal photo-electron counts.
    """
    counts = np.asarray(signal_counts, dtype=np.float32)
    flat = counts.reshape(-1)
    out = np.empty(flat.shape, dtype=np.uint16)
    bg = float(acquisition.background_photons)
    tables = _CameraTables.get(acquisition, bg)
    for a in range(0, flat.shape[0], _NOISE_BLOCK_PIXELS):
        b = min(a + _NOISE_BLOCK_PIXELS, flat.shape[0])
        if tables is not None:
            adu = tables.table.sample(None, b - a, rng).astype(np.float32)  # row 0: no signal
            adu += tables.gain * flat[a:b]
            np.clip(adu, 0, 65535, out=adu)
            out[a:b] = adu
        else:
            out[a:b] = photons_to_adu(_poisson_constant(bg, b - a, rng) + flat[a:b], acquisition, rng)
    return out.reshape(counts.shape)


# ------------------------------------------------------------ derived figures
def peak_pixel_fraction(acquisition: Acquisition) -> float:
    """Fraction of a static particle's photons in the pixel it is centred on."""
    return float(erf(0.5 / (math.sqrt(2.0) * acquisition.psf_sigma_px)) ** 2)


def static_snr(acquisition: Acquisition, photons_per_frame: float | None = None) -> float:
    """SNR of docs/protocols.md: peak pixel signal of a static, pixel-centred particle over the
    standard deviation of background pixels (photo-electrons: ``sqrt(background + read_noise^2)``)."""
    n = acquisition.signal_photons if photons_per_frame is None else float(photons_per_frame)
    noise = math.sqrt(acquisition.background_photons + acquisition.read_noise_e**2)
    if noise == 0:
        return math.inf
    return n * peak_pixel_fraction(acquisition) / noise


def signal_photons_for_snr(snr: float, acquisition: Acquisition) -> float:
    """Photons per frame that give a static particle the requested :func:`static_snr`."""
    if not (math.isfinite(snr) and snr > 0):
        raise SimulationError(f"snr must be a positive number, got {snr!r}")
    noise = math.sqrt(acquisition.background_photons + acquisition.read_noise_e**2)
    if noise == 0:
        raise SimulationError("with no background and no read noise the SNR is infinite at any photon count")
    return float(snr * noise / peak_pixel_fraction(acquisition))


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(200)


def localization_crlb_nm(photons: Any, background_photons: Any, acquisition: Acquisition) -> np.ndarray:
    """Cramer-Rao bound of the position (per axis, nm) of a static Gaussian spot.

    Mortensen et al. (2010), maximum likelihood on pixelated data with Poisson noise:
    ``var = s_a^2 / N / (1 + int_0^1 ln(t) / (1 + t / tau) dt)``, ``s_a^2 = s^2 + a^2/12``,
    ``tau = 2 pi s_a^2 b / (N a^2)``, with ``N`` photons, ``b`` background photons per
    pixel, ``s`` the PSF sigma and ``a`` the pixel size (read noise and motion blur ignored).
    Returns an array broadcast from the inputs (NaN where ``photons <= 0``).
    """
    n = np.asarray(photons, dtype=float)
    b = np.asarray(background_photons, dtype=float)
    a = acquisition.pixel_size_nm
    sa2 = acquisition.psf_sigma_nm**2 + a * a / 12.0
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = 2.0 * np.pi * sa2 * b / (n * a * a)
        t = 0.5 * (_GL_NODES + 1.0)
        tau_ = np.asarray(tau)[..., None]
        integral = 0.5 * np.sum(_GL_WEIGHTS * tau_ * np.log(t) / (tau_ + t), axis=-1)
        var = sa2 / n / (1.0 + integral)
        out = np.where(n > 0, np.sqrt(var), np.nan)
    return out
