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
from typing import NamedTuple

import numpy as np

__all__ = ["TILE_PX", "EMCCD_Q", "MIN_NOISE_STEPS", "SLOW_CHANGE_SHARE", "adu_step", "tile_cumulants",
           "trend_free_cumulants", "without_rounding", "gain_root",
           "gain_solution", "points_below", "pooled_cumulants", "poisson_camera", "emccd_camera", "field_background",
           "poisson_misfit", "skew_reading", "SkewReading", "NO_FIT_MARGIN",
           "tile_backgrounds",
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


def field_background(tiles: np.ndarray, gain: float, offset: float) -> float:
    """Mean background (photons/px) over the field: each tile's ``(mean - offset) / gain``, tiles weighted
    alike. Under even light it is the pooled background; under a beam it does not lean towards the tiles that
    kept more background samples (fewer spots, dimmer light)."""
    return float(np.mean(tile_backgrounds(tiles, gain, offset))) if len(tiles) else float("nan")


def tile_backgrounds(tiles: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """``(n_tiles,)`` background of each tile (photons/px): ``(mean - offset) / gain``."""
    return (tiles[:, 1] - offset) / gain


def poisson_camera(tiles: np.ndarray, read_noise_e: float, branch: str = "above",
                   meeting: bool = True) -> tuple[float, float, float]:
    """``(gain ADU/e-, offset ADU, background photons)`` of a Poisson camera from pooled tile cumulants
    (``branch``, ``meeting``: :func:`gain_solution`; NaNs where there is no gain). The background is the
    field's mean (:func:`field_background`)."""
    mean, k2, k3, _, _ = pooled_cumulants(tiles)
    gain = gain_root(k2, k3, read_noise_e, branch, meeting)
    if not (math.isfinite(gain) and gain > 0):
        return float("nan"), float("nan"), float("nan")
    # from the variance (error 2x the gain's relative error; the third cumulant's is 3x)
    background = max(k2 / gain**2 - read_noise_e**2, 0.0)
    offset = mean - gain * background
    return gain, offset, max(field_background(tiles, gain, offset), 0.0)


def emccd_camera(tiles: np.ndarray) -> tuple[float, float, float, float]:
    """``(gain ADU per photo-electron, offset ADU, background photons, read noise e-)`` of an EMCCD:
    ``g = k4 / (4 k3)``, ``b = k3 / (6 g^3)`` (no read-noise assumption), and the read noise from
    the variance these leave, ``sqrt(k2 - 2 g^2 b) / g`` in photo-electrons (0 where that is
    negative). The background returned is the field's mean (:func:`field_background`)."""
    mean, k2, k3, k4, _ = pooled_cumulants(tiles)
    if not (k3 > 0 and k4 > 0):
        return float("nan"), float("nan"), float("nan"), float("nan")
    gain = k4 / (4.0 * k3)
    background = k3 / (6.0 * gain**3)
    read_noise = math.sqrt(max(k2 - 2.0 * gain**2 * background, 0.0)) / gain
    offset = mean - gain * background
    return gain, offset, max(field_background(tiles, gain, offset), 0.0), read_noise


#: No Poisson camera with the assumed read noise fits the background where the gain's cubic stays above zero by
#: more than this share of ``k3`` (:func:`poisson_misfit`) at the 2.5 % point of its bootstrap: near ``b = 2 r^2``,
#: where its minimum touches zero, sampling noise moves it by about +-0.02.
NO_FIT_MARGIN = 0.03
def poisson_misfit(k2: float, k3: float, read_noise_e: float) -> float:
    """How far the background's noise lies from every Poisson camera with read noise ``r``: the minimum over
    ``g > 0`` of ``r^2 g^3 - k2 g + k3`` (the gain's cubic, :func:`gain_solution`) over ``k3``. Zero or below: a
    gain fits; above: none does (the noise is more skewed than Poisson light plus ``r`` e- of read noise allows, as
    an EMCCD's, whose multiplication makes ``k3 = 6 g^3 b`` against ``k2 = 2 g^2 b``). NaN without noise or skew."""
    if not (math.isfinite(k2) and math.isfinite(k3)) or k2 <= 0 or k3 <= 0:
        return float("nan")
    r2 = read_noise_e**2
    if r2 <= 0:
        return -math.inf  # g = k3 / k2 always fits
    g = math.sqrt(k2 / (3.0 * r2))
    return (r2 * g**3 - k2 * g + k3) / k3


class SkewReading(NamedTuple):
    """What the background's ``k2 ... k4`` say where no Poisson camera with the assumed read noise fits them
    (:func:`skew_reading`). The two cameras that do fit cannot be told apart by these cumulants (only ``k5``,
    too noisy there, can): an EMCCD, or an sCMOS/CCD with less read noise."""

    misfit_low: float  #: 2.5 % bootstrap point of :func:`poisson_misfit` (above :data:`NO_FIT_MARGIN`: no fit)
    ratio: float  #: ``k4 k2 / k3^2``: 4/3 and above for an EMCCD, ``1 + r^2 / b`` for a Poisson camera
    ratio_low: float  #: its 95 % bootstrap interval
    ratio_high: float
    emccd_gain: float  #: ``k4 / (4 k3)``: the gain (ADU per photo-electron) if it is an EMCCD
    poisson_gain: float  #: ``k4 / k3``: the gain if it is a Poisson camera with less read noise ...
    poisson_read_noise_e: float  #: ... whose read noise is then ``sqrt(k2 / g^2 - k3 / g^3)`` (e-)


def skew_reading(tiles: np.ndarray, read_noise_e: float, rng: np.random.Generator, n_boot: int = 200) -> SkewReading:
    """:class:`SkewReading` of pooled tile cumulants, with bootstraps over the tiles (NaNs with fewer than 8)."""
    nan = float("nan")
    _, k2, k3, k4, _ = pooled_cumulants(tiles)
    ratio = k4 * k2 / k3**2 if k3 > 0 else nan
    emccd_gain = k4 / (4.0 * k3) if k3 > 0 and k4 > 0 else nan
    poisson_gain = 4.0 * emccd_gain
    read = math.sqrt(max(k2 / poisson_gain**2 - k3 / poisson_gain**3, 0.0)) if poisson_gain > 0 else nan
    if len(tiles) < 8:
        return SkewReading(nan, ratio, nan, nan, emccd_gain, poisson_gain, read)

    def stats(t: np.ndarray) -> tuple[float, float]:
        _, a2, a3, a4, _ = pooled_cumulants(t)
        return poisson_misfit(a2, a3, read_noise_e), (a4 * a2 / a3**2 if a3 > 0 else nan)

    boot = np.array([stats(tiles[rng.integers(0, len(tiles), len(tiles))]) for _ in range(n_boot)])
    misfit, ratios = (b[np.isfinite(b)] for b in boot.T)
    if misfit.size < n_boot // 2 or ratios.size < n_boot // 2:
        return SkewReading(nan, ratio, nan, nan, emccd_gain, poisson_gain, read)
    low, high = (float(v) for v in np.quantile(ratios, [0.025, 0.975]))
    return SkewReading(float(np.quantile(misfit, 0.025)), ratio, low, high, emccd_gain, poisson_gain, read)


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


#: The camera is measured from :func:`trend_free_cumulants` where slow changes make more than this share of the
#: background's variance (its second return value) and the gain they give differs from the usual one by more than
#: twice its own bootstrap spread (``calibration._slow_changes_matter``): without slow changes the share scatters
#: by a few tenths of a percent (-0.5 to +0.7 % on the calibration grid's cells, benchmarks/reports/calibration.md),
#: and the trend-free cumulants keep fewer values and are noisier, so the second test decides there.
SLOW_CHANGE_SHARE = 0.005
#: Frames on each side of a background value whose mean is taken out of it (:func:`trend_free_cumulants`); all
#: of them must be background in that pixel. They start two frames away: a frame counts as background where no
#: spot was found near it in the frames beside it, so the frames right beside a value would be kept only where
#: that value's own frame had no noise peak there, and its upper tail would be cut (the gain would read low).
TREND_HALF_WINDOW = 3
#: Samples of one tile in one frame needed for its cumulants (they are pooled over the frames).
_MIN_GROUP = 10


def _steps(successor: np.ndarray, k: int) -> np.ndarray:
    """``(T,)`` index of the read frame ``k`` movie frames after each (``successor`` applied ``k`` times), -1
    where that frame was not read."""
    out = np.arange(len(successor))
    for _ in range(k):
        out = np.where(out >= 0, successor[np.maximum(out, 0)], -1)
    return out


def _group_k_statistics(n: np.ndarray, sums: list[np.ndarray]) -> list[np.ndarray]:
    """Unbiased k-statistics ``k2 ... k5`` of groups of ``n`` values from their power sums ``sums[j] = sum x^j``
    (``j = 1 ... 5``; any shape, elementwise)."""
    mean = sums[0] / n
    raw = [s / n for s in sums]
    m2 = raw[1] - mean**2
    m3 = raw[2] - 3 * mean * raw[1] + 2 * mean**3
    m4 = raw[3] - 4 * mean * raw[2] + 6 * mean**2 * raw[1] - 3 * mean**4
    m5 = raw[4] - 5 * mean * raw[3] + 10 * mean**2 * raw[2] - 10 * mean**3 * raw[1] + 4 * mean**5
    k2 = n * m2 / (n - 1)
    k3 = n**2 * m3 / ((n - 1) * (n - 2))
    k4 = n**2 * ((n + 1) * m4 - 3 * (n - 1) * m2**2) / ((n - 1) * (n - 2) * (n - 3))
    k5 = n**3 * ((n + 5) * m5 - 10 * (n - 1) * m2 * m3) / ((n - 1) * (n - 2) * (n - 3) * (n - 4))
    return [k2, k3, k4, k5]


def trend_free_cumulants(frames: np.ndarray, background_mask: np.ndarray, successor: np.ndarray,
                         half_window: int = TREND_HALF_WINDOW) -> tuple[np.ndarray, float]:
    """Per :data:`TILE_PX` tile: ``(n, mean, k2, k3, k4, k5)`` of the background, free of slow changes; and the
    share of the background's variance those changes made.

    Like :func:`tile_cumulants`, but each background value ``x_t`` has the mean of ``2 K`` values of its pixel
    in time (``K = half_window`` on each side, from two frames away; all background) taken out instead of its
    pixel's mean over the movie: ``r_t = x_t - (1 / 2K) sum_{k=2}^{K+1} (x_{t-k} + x_{t+k})``. A background that
    changes slowly
    (bleaching, a drifting lamp or focus) cancels to first order in time while the noise is kept: for
    independent values ``k_j(r) = k_j (1 + (-1)^j (2K)^(1 - j))``, divided out. The values ``r`` of one tile
    in one frame come from different pixels and are independent: their k-statistics (about their own mean,
    which takes out what the trend's curvature leaves) are pooled over the frames with weights ``n``. Tiles
    with fewer than ``10 TILE_PX`` such values are left out. ``successor``: ``(T,)`` index of each read frame's
    next movie frame, -1 where it was not read. ``mean``: the tile's mean background value (the offset's
    reference).

    The share is ``1 - k2(r) / k2``, ``k2`` from the same values with their pixel's mean over the movie taken
    out, as :func:`tile_cumulants` does (NaN without tiles).
    """
    t, h, w = frames.shape
    data = np.asarray(frames, dtype=np.float64)
    neighbours = np.zeros(data.shape)
    use = background_mask.copy()
    predecessor = np.full(len(successor), -1, dtype=np.int64)
    has_next = successor >= 0
    predecessor[successor[has_next]] = np.flatnonzero(has_next)
    for k in range(2, half_window + 2):
        later, earlier = _steps(successor, k), _steps(predecessor, k)
        rows = (later >= 0) & (earlier >= 0)
        use[~rows] = False
        idx = np.flatnonzero(rows)
        use[idx] &= background_mask[earlier[idx]] & background_mask[later[idx]]
        neighbours[idx] += data[earlier[idx]] + data[later[idx]]
    r = np.where(use, data - neighbours / (2 * half_window), 0.0)
    n_bg = background_mask.sum(axis=0)
    mean_p = np.where(background_mask, data, 0.0).sum(axis=0) / np.maximum(n_bg, 1)
    plain = np.where(use, (data - mean_p) ** 2 * (n_bg / np.maximum(n_bg - 1, 1)), 0.0)
    ty, tx = h // TILE_PX, w // TILE_PX
    crop = (slice(None), slice(0, ty * TILE_PX), slice(0, tx * TILE_PX))

    def per_group(values: np.ndarray) -> np.ndarray:  # (T, ty, tx) sums over each tile in each frame
        return values[crop].reshape(t, ty, TILE_PX, tx, TILE_PX).sum(axis=(2, 4))

    n_g = per_group(use.astype(np.float64))
    powers, sums = r.copy(), []
    for _ in range(5):
        sums.append(per_group(powers))
        powers = powers * r
    ok = n_g >= _MIN_GROUP
    safe_n = np.where(ok, n_g, float(_MIN_GROUP))
    ks = [np.where(ok, k, 0.0) for k in _group_k_statistics(safe_n, sums)]
    weights = np.where(ok, n_g, 0.0)
    n_tile = weights.sum(axis=0)
    filter_sums = [1.0 + (-1) ** j * (2 * half_window) ** (1 - j) for j in range(2, 6)]  # k_j(r) / k_j
    rows_out, k2_free, k2_plain = [], 0.0, 0.0
    plain_tile = np.where(ok, per_group(plain), 0.0).sum(axis=0)
    pixel_means = mean_p[crop[1:]].reshape(ty, TILE_PX, tx, TILE_PX)
    pixel_n = n_bg[crop[1:]].reshape(ty, TILE_PX, tx, TILE_PX)
    for i in range(ty):
        for j in range(tx):
            n = float(n_tile[i, j])
            if n < 10 * TILE_PX:
                continue
            pooled = [float(np.sum(weights[:, i, j] * k[:, i, j]) / n) / filter_sum
                      for filter_sum, k in zip(filter_sums, ks)]
            mean = float(np.average(pixel_means[i, :, j, :], weights=pixel_n[i, :, j, :]))
            rows_out.append((n, mean, *pooled))
            k2_free += n * pooled[0]
            k2_plain += float(plain_tile[i, j])
    share = 1.0 - k2_free / k2_plain if k2_plain > 0 else float("nan")
    return np.asarray(rows_out, dtype=float).reshape(-1, _COLUMNS), share
