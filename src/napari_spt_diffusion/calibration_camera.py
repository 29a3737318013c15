"""The camera from the noise of a movie's background pixels: gain, offset, background, EMCCD or not.

Per pixel over time the background is ``offset + gain * (photo-electrons + read noise)``. Its
cumulants (``k_m``, ADU^m; each pixel's own mean removed, so per-pixel offsets cancel) tell the
camera apart:

* a **Poisson camera** (sCMOS, CCD; ``b`` photo-electrons per pixel per frame, ``g`` ADU per
  photo-electron, Gaussian read noise ``r`` e-): ``k2 = g^2 (b + r^2)``, ``k3 = g^3 b``,
  ``k4 = g^4 b``, ``k5 = g^5 b``;
* an **EMCCD** at high multiplication (each photo-electron leaves the gain register as an
  exponential number of electrons: a compound Poisson sum, excess noise factor sqrt 2; ``g`` the
  mean ADU per photo-electron): ``k2 = 2 g^2 b + sigma^2``, ``k3 = 6 g^3 b``, ``k4 = 24 g^4 b``,
  ``k5 = 120 g^5 b``.

Gaussian read noise moves only ``k2``, so the ratio ``Q = k3 k5 / k4^2`` is 1 for a Poisson
camera and 1.25 for an EMCCD whatever the gain, the background and the read noise. The fourth and
fifth cumulants are precise only where the background is low (a few to a few tens of photons per
pixel with about a million background samples; EMCCDs are used at such light levels): there
:func:`excess_noise` recognises an EMCCD, elsewhere it cannot tell and the Poisson camera is
assumed (an EMCCD at a high background then reads its gain about 3 x too high).

A camera rounds to whole ADU (or to a coarser step: a 12-bit sensor read out in the high bits of
a 16-bit word counts in steps of 16). Rounding adds a uniform error of variance ``q^2 / 12`` for a
step of ``q`` ADU to ``k2`` and ``-q^4 / 120`` to ``k4`` (Sheppard's corrections; the odd cumulants
are unchanged), which read as read noise and lowered the gain by 1-1.5 % at 1 ADU per
photo-electron and by 5-6 % at 0.5 (the background then 3-5 % and 17-20 % high):
:func:`adu_step` finds the step and :func:`without_rounding` removes it, where the background's
noise spans enough steps for the rounding error to be uniform (:data:`MIN_NOISE_STEPS`).

For a Poisson camera with a known read noise, ``k2`` and ``k3`` leave two solutions, one with the
background above ``2 r^2`` and one below (they meet at ``b = 2 r^2``, 4.5 photons at 1.5 e-, where
sampling noise may leave none): :func:`gain_solution` takes the one above ``2 r^2``, the usual
backgrounds, and where there is none the point where the two meet. Below ``2 r^2`` that is the wrong
one (at 2 photons/px and 1.5 e- the gain reads about 0.6 x, the background about 5 x): ``k4 / k3``
equals the gain and could tell them apart, but light from spots left in the background raises
``k4``, and on a bright, wide-PSF cell of ``benchmarks/bench_calibration.py`` choosing by it took the
wrong solution; the noise floor of ``benchmarks/reports/calibration.md`` shows the cost at 2
photons/px.

For a Poisson camera the read noise is not identifiable from one light level: it is taken from
the acquisition and its range 0-3 e- is carried into the uncertainty (:func:`poisson_camera`).
For an EMCCD the gain comes from ``k4 / (4 k3)`` and the background from ``k3``, with no
assumption on the read noise (:func:`emccd_camera`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TILE_PX", "EMCCD_Q", "MIN_NOISE_STEPS", "adu_step", "tile_cumulants", "without_rounding", "gain_root",
           "gain_solution", "points_below", "pooled_cumulants", "poisson_camera", "emccd_camera",
           "excess_noise"]

#: Side (px) of the tiles whose background pixels are pooled (the unit of the bootstraps).
TILE_PX = 16
#: ``k3 k5 / k4^2`` of an EMCCD at high multiplication (1 for a Poisson camera).
EMCCD_Q = 1.25
#: An EMCCD is recognised when the bootstrap interval of ``Q`` lies inside this range (it excludes
#: a Poisson camera's 1) ...
EMCCD_Q_RANGE = (1.0, 1.5)
#: ... and is at most this wide. A Poisson camera's fifth cumulant is small against its noise, and
#: light from spots left in the background pixels spreads ``Q`` further, so its interval is wide: 2.3-9.2
#: on the 36 Poisson-camera cells of ``benchmarks/reports/calibration.md`` (10 background photons/px),
#: against 0.29 on its EMCCD cell.
EMCCD_Q_MAX_WIDTH = 0.4
_COLUMNS = 6  # n, mean, k2, k3, k4, k5
#: Pixels sampled by :func:`adu_step` (each over all its frames; the step is the same over the movie).
_STEP_PIXELS = 2_000
#: A difference within this of a whole number (ADU) counts as whole (float32 data shifted by a fraction).
_WHOLE_TOLERANCE = 1e-3
#: The rounding is taken out only where the background's noise spans at least this many steps (its
#: standard deviation in steps): below, the rounding error is not uniform (a gain of 0.1 ADU per
#: photo-electron puts 10 photo-electrons in one step) and Sheppard's correction does not hold.
MIN_NOISE_STEPS = 0.6


def adu_step(frames: np.ndarray) -> float:
    """The quantization step (ADU) of a movie's values, 0 where there is none.

    ``frames``: ``(T, Y, X)`` ADU. Each of up to :data:`_STEP_PIXELS` evenly spaced pixels is
    compared with itself over time: where every difference ``frame[t] - frame[0]`` is a whole number
    (to :data:`_WHOLE_TOLERANCE`), the step is their greatest common divisor. Differences of one
    pixel survive what processing adds to every frame alike (a fractional offset, a dark or
    offset map), which keeps the camera's rounding in the values; genuinely continuous data
    (averaged, filtered, resampled) give 0.
    """
    data = np.asarray(frames)
    if data.ndim != 3 or data.shape[0] < 2 or data.shape[1] * data.shape[2] == 0:
        return 0.0
    pixels = data.reshape(data.shape[0], -1)
    columns = np.unique(np.linspace(0, pixels.shape[1] - 1, min(_STEP_PIXELS, pixels.shape[1])).astype(np.int64))
    sample = pixels[:, columns].astype(np.float64)
    diffs = sample[1:] - sample[:1]
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0 or np.abs(diffs).max() >= 2.0**53:
        return 0.0
    whole = np.round(diffs)
    if np.any(np.abs(diffs - whole) > _WHOLE_TOLERANCE):
        return 0.0
    steps = np.abs(whole[whole != 0]).astype(np.int64)
    return float(np.gcd.reduce(steps)) if steps.size else 0.0


def without_rounding(tiles: np.ndarray, step_adu: float) -> tuple[np.ndarray, bool]:
    """Tile cumulants (:func:`tile_cumulants`) with the rounding to a step of ``step_adu`` ADU taken
    out (``k2 - q^2 / 12``, ``k4 + q^4 / 120``), and whether it was: not where the pooled background's
    standard deviation spans fewer than :data:`MIN_NOISE_STEPS` steps (nor without a step)."""
    if step_adu <= 0 or len(tiles) == 0:
        return tiles, False
    k2 = float(np.average(tiles[:, 2], weights=tiles[:, 0]))
    if not (k2 > 0 and math.sqrt(k2) >= MIN_NOISE_STEPS * step_adu):
        return tiles, False
    out = tiles.copy()
    out[:, 2] -= step_adu**2 / 12.0
    out[:, 4] += step_adu**4 / 120.0
    return out, True


def tile_cumulants(frames: np.ndarray, background_mask: np.ndarray) -> np.ndarray:
    """Per :data:`TILE_PX` tile: pooled ``(n, mean, k2, k3, k4, k5)`` of the background pixels.

    ``frames``: ``(T, Y, X)`` ADU; ``background_mask``: ``(T, Y, X)`` bool, True where a pixel
    is background in that frame. Each pixel's mean over its background frames is removed first;
    the cumulants are the unbiased per-pixel k-statistics, pooled with weights ``n_p`` (the
    pixel's background frames; pixels with fewer than 10 are left out). The values' rounding is
    still in them (:func:`without_rounding`). Returns ``(n_tiles, 6)``.
    """
    t, h, w = frames.shape
    x = np.where(background_mask, frames, 0.0)
    n_p = background_mask.sum(axis=0).astype(float)
    ok = n_p >= 10
    n = np.where(ok, n_p, 10.0)
    mean_p = x.sum(axis=0) / n
    centred = np.where(background_mask, frames - mean_p, 0.0)
    c2 = centred * centred  # products, not powers: this runs over every pixel of every frame read
    c3 = c2 * centred
    m2, m3 = c2.sum(axis=0) / n, c3.sum(axis=0) / n
    m4, m5 = (c2 * c2).sum(axis=0) / n, (c3 * c2).sum(axis=0) / n
    k2_p = n * m2 / (n - 1)
    k3_p = n**2 * m3 / ((n - 1) * (n - 2))
    k4_p = n**2 * ((n + 1) * m4 - 3 * (n - 1) * m2**2) / ((n - 1) * (n - 2) * (n - 3))
    k5_p = n**3 * ((n + 5) * m5 - 10 * (n - 1) * m2 * m3) / ((n - 1) * (n - 2) * (n - 3) * (n - 4))
    rows = []
    for y0 in range(0, h - TILE_PX + 1, TILE_PX):
        for x0 in range(0, w - TILE_PX + 1, TILE_PX):
            sl = (slice(y0, y0 + TILE_PX), slice(x0, x0 + TILE_PX))
            good = ok[sl]
            if good.sum() < TILE_PX:
                continue
            weight = n_p[sl][good]
            rows.append((weight.sum(), *(float(np.average(v[sl][good], weights=weight))
                                         for v in (mean_p, k2_p, k3_p, k4_p, k5_p))))
    return np.asarray(rows, dtype=float).reshape(-1, _COLUMNS)


def pooled_cumulants(tiles: np.ndarray) -> tuple[float, float, float, float, float]:
    """``(mean, k2, k3, k4, k5)`` over the tiles, weighted by their background samples."""
    n = tiles[:, 0]
    return tuple(float(np.average(tiles[:, i], weights=n)) for i in range(1, _COLUMNS))  # type: ignore[return-value]


def gain_solution(k2: float, k3: float, read_noise_e: float, branch: str = "above",
                  meeting: bool = True) -> tuple[float, str]:
    """Gain ``g`` with ``k2 = g^2 (b + r^2)``, ``k3 = g^3 b`` for a read noise ``r``, and how it was found.

    The positive roots of ``r^2 g^3 - k2 g + k3``: with ``r = 0`` the one, ``k3 / k2`` (``"single"``);
    else two, one with ``b`` above ``2 r^2`` (the smaller gain) and one below, and ``branch``
    (``"above"`` or ``"below"``) says which is taken; where sampling noise leaves
    none (the background near ``2 r^2``, where the two meet), the point where the cubic comes closest
    to zero, ``sqrt(k2 / (3 r^2))`` (``"where the solutions meet"``; NaN and ``"none"`` with
    ``meeting=False``: the read noise does not fit these cumulants). NaN (``"none"``) for no noise at
    all, a constant or saturated background.
    """
    nan = float("nan")
    if not (math.isfinite(k2) and math.isfinite(k3)) or k2 <= 0 or k3 <= 0:
        return nan, "none"
    r2 = read_noise_e**2
    if r2 <= 0:
        return k3 / k2, "single"
    roots = sorted(float(z.real) for z in np.roots([r2, 0.0, -k2, k3]) if abs(z.imag) <= 1e-9 * abs(z) and z.real > 0)
    if not roots:
        return (math.sqrt(k2 / (3.0 * r2)), "where the solutions meet") if meeting else (nan, "none")
    if len(roots) == 1:
        return roots[0], "single"
    return (roots[-1], "below 2 r^2") if branch == "below" else (roots[0], "above 2 r^2")


def gain_root(k2: float, k3: float, read_noise_e: float, branch: str = "above", meeting: bool = True) -> float:
    """The gain of :func:`gain_solution` (ADU per photo-electron; NaN where there is none)."""
    return gain_solution(k2, k3, read_noise_e, branch, meeting)[0]


def points_below(k2: float, k3: float, k4: float, read_noise_e: float) -> bool:
    """Does ``k4 / k3`` (the gain of a Poisson camera, whatever its read noise) lie nearer the gain's solution
    below ``2 r^2`` than the one above, both existing? (A note, not a choice: light from spots left in the
    background raises ``k4`` too; the note is given only where the background's ``Q`` interval holds a
    Poisson camera's 1, which that light mostly moves away from it.)"""
    above, how_above = gain_solution(k2, k3, read_noise_e, "above")
    below, _ = gain_solution(k2, k3, read_noise_e, "below")
    hint = k4 / k3 if k3 > 0 else float("nan")
    if how_above != "above 2 r^2" or not (math.isfinite(hint) and hint > 0 and below > above):
        return False
    return abs(math.log(below / hint)) < abs(math.log(above / hint))


def poisson_camera(tiles: np.ndarray, read_noise_e: float, branch: str = "above",
                   meeting: bool = True) -> tuple[float, float, float]:
    """``(gain ADU/e-, offset ADU, background photons)`` of a Poisson camera from pooled tile cumulants
    (``branch``, ``meeting``: :func:`gain_solution`; NaNs where there is no gain)."""
    mean, k2, k3, _, _ = pooled_cumulants(tiles)
    gain = gain_root(k2, k3, read_noise_e, branch, meeting)
    if not (math.isfinite(gain) and gain > 0):
        return float("nan"), float("nan"), float("nan")
    # from the variance (error 2x the gain's relative error; the third cumulant's is 3x)
    background = max(k2 / gain**2 - read_noise_e**2, 0.0)
    return gain, mean - gain * background, background


def emccd_camera(tiles: np.ndarray) -> tuple[float, float, float, float]:
    """``(gain ADU per photo-electron, offset ADU, background photons, read noise e-)`` of an EMCCD:
    ``g = k4 / (4 k3)``, ``b = k3 / (6 g^3)`` (no read-noise assumption), and the read noise from
    the variance these leave, ``sqrt(k2 - 2 g^2 b) / g`` in photo-electrons (0 where that is
    negative)."""
    mean, k2, k3, k4, _ = pooled_cumulants(tiles)
    if not (k3 > 0 and k4 > 0):
        return float("nan"), float("nan"), float("nan"), float("nan")
    gain = k4 / (4.0 * k3)
    background = k3 / (6.0 * gain**3)
    read_noise = math.sqrt(max(k2 - 2.0 * gain**2 * background, 0.0)) / gain
    return gain, mean - gain * background, background, read_noise


def excess_noise(tiles: np.ndarray, rng: np.random.Generator, n_boot: int = 200,
                 confidence: float = 0.95) -> tuple[bool, float, float, float]:
    """Is the camera an EMCCD? ``(emccd, Q, low, high)`` with ``Q = k3 k5 / k4^2`` and its bootstrap
    interval over tiles; ``emccd`` when the interval lies inside :data:`EMCCD_Q_RANGE` (around 1.25,
    excluding the Poisson camera's 1) and is no wider than :data:`EMCCD_Q_MAX_WIDTH`. NaNs (and
    False) with fewer than 8 tiles."""
    nan = float("nan")
    if len(tiles) < 8:
        return False, nan, nan, nan

    def q_of(t: np.ndarray) -> float:
        _, _, k3, k4, k5 = pooled_cumulants(t)
        return k3 * k5 / k4**2 if k4 != 0 else nan

    q = q_of(tiles)
    boot = np.array([q_of(tiles[rng.integers(0, len(tiles), len(tiles))]) for _ in range(n_boot)])
    boot = boot[np.isfinite(boot)]
    if boot.size < n_boot // 2 or not math.isfinite(q):
        return False, q, nan, nan
    alpha = 0.5 * (1.0 - confidence)
    low, high = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
    emccd = EMCCD_Q_RANGE[0] < low and high < EMCCD_Q_RANGE[1] and high - low <= EMCCD_Q_MAX_WIDTH
    return bool(emccd), q, low, high
