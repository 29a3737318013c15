"""Measure the acquisition from the movie itself: camera, background, PSF width, signal.

A user's movie comes from a microscope we never simulated, often with no camera or PSF
metadata. :func:`calibrate_movie` measures, from the frames alone:

* **camera gain and offset** (ADU per photo-electron, ADU) from the background pixels
  (pixels with no spot near them in that frame), by their noise cumulants
  (:mod:`.calibration_camera`). Per pixel over time the background is
  ``offset + gain * (Poisson(b) + read noise)``, whose cumulants are
  ``k2 = g^2 (b + r^2)`` and ``k3 = g^3 b``; with the read noise ``r`` (e-) taken from the
  acquisition (it is not identifiable from one light level; its range 0-3 e- is carried
  into the gain's uncertainty) they give ``g`` (the root of ``r^2 g^3 - k2 g + k3 = 0``
  near ``k3 / k2``), ``b`` and the offset. Cumulants are pooled over pixels after removing
  each pixel's own mean (per-pixel sCMOS offsets cancel). An **EMCCD** (excess noise) is
  recognised by its fourth and fifth cumulants where the background is low (a few to a few
  tens of photons per pixel) and measured from them; the movie is then processed as the
  Poisson camera with the same noise, twice the gain and half the photons
  (:meth:`Calibration.apply`). At higher backgrounds an EMCCD cannot be told apart: give
  gain and offset for it.
* **background** photons per pixel per frame, from the same pixels;
* **PSF width and shape** from the most static single spots: every isolated spot is fitted
  with a free-width pixel-integrated Gaussian; the brighter half by detection SNR (not by
  fitted photons, which rise with the fitted width where the signal is low) whose photons
  are at most 1.5 x the median or whose fitted width is at most 1.15 x the median (two
  particles closer than the PSF make one bright, wide spot; a bright single emitter is not wider)
  are kept; the motion blur of each is measured from the mean squared step of its particle
  over up to 8 frames (a chain of nearest spots; Brownian blur over a continuous exposure
  adds ``D T / 3 = <|d|^2> / 8`` per axis, ``d`` the frame-to-frame step of the blurred
  positions, whose per-axis variance is ``(4 / 3) D T``), and the quarter with the least
  blur whose chain holds at least 4 steps (a chain broken by a step beyond the search bound
  would make a fast particle look slow) make a mean radial profile, fitted with a Gaussian
  and an Airy profile (:mod:`.calibration_psf`): the better one gives the shape and the
  Gaussian-equivalent width, corrected for pixel and blur (a free-width Gaussian fit reads
  an Airy spot several per cent narrow);
* **signal photons** per spot: the median fitted photons of the bright isolated single
  spots, times the profile's flux ratio (photons under the PSF over the Gaussian fit's:
  about 1.15 for an Airy PSF, whose rings the Gaussian fit does not collect); where the
  bright spots hold multiples (unresolved pairs, noise-lifted spots at the detection limit:
  their median far above all isolated spots'), the median of all isolated spots
  (:func:`~.calibration_spots.signal_estimate`).

Each value carries a standard uncertainty (bootstrap over frames or tiles, plus the
systematic parts named in each method: the assumed read noise's range in the gain, the gain's
uncertainty in the signal, the Airy profile's flux where the PSF shape is unknown). Values the
user gave are never replaced (:meth:`Calibration.apply`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .acquisition import Acquisition
from .calibration_camera import (
    MIN_NOISE_STEPS,
    NO_FIT_MARGIN,
    SLOW_CHANGE_SHARE,
    TILE_PX,
    SkewReading,
    adu_step,
    emccd_camera,
    excess_noise,
    field_background,
    gain_solution,
    points_below,
    poisson_camera,
    poisson_misfit,
    pooled_cumulants,
    skew_reading,
    tile_backgrounds,
    tile_cumulants,
    trend_free_cumulants,
    without_rounding,
)
from .calibration_psf import AIRY_FLUX_RATIO, MIN_BOOTSTRAP_GROUPS, MIN_PROFILE_SPOTS, measure_psf
from .calibration_spots import BOOTSTRAP, median_and_se, signal_estimate, spot_table, static_spots
from .errors import SptDiffusionError
from .tracking.detect import check_frame

__all__ = ["Measured", "Calibration", "CalibrationError", "calibrate_movie", "fields_to_measure", "format_uncertainty",
           "CALIBRATED_FIELDS"]

#: Output variance of an EMCCD over a Poisson camera of the same mean gain (excess noise factor squared).
EMCCD_EXCESS_NOISE_FACTOR = 2.0
#: Acquisition fields that calibration can measure.
CALIBRATED_FIELDS = ("offset_adu", "gain_adu_per_e", "background_photons", "psf_sigma_nm", "signal_photons")
_FRAMES_USED = 120
#: Consecutive frames per block when a longer movie is sampled: the blur correction follows
#: particles frame to frame, and each frame's background mask comes from its neighbours.
_BLOCK_FRAMES = 12
#: Spots are masked out of the background down to this DoG signal-to-noise ratio (lower than
#: the tracker's 5: dim and blurred spots would otherwise skew the background statistics) ...
MASK_THRESHOLD_SNR = 3.0
#: ... over ``3 sigma`` plus this margin (px), for streak tails.
MASK_MARGIN_PX = 4.0
#: A frame's own detections above this DoG signal-to-noise ratio mask it too (the others mask only
#: its neighbours: :func:`_background_mask`).
MASK_OWN_SNR = 8.0
_BOOTSTRAP = BOOTSTRAP  # replicates of every bootstrap here, as of the spots' medians
#: Where slow changes make more than this share of the background's variance and the camera could not be measured
#: without them, a note asks for the camera (on the calibration grid's steady movies the share stays under 0.8 %).
_SLOW_NOTE_SHARE = 0.02
#: Trend-free tiles needed before the camera is measured from them (:func:`_slow_changes_matter`).
_MIN_SWITCH_TILES = 16
#: A note says the background is uneven where its tiles' 90th percentile exceeds this many times their 10th.
UNEVEN_BACKGROUND = 1.5
#: Read-noise range (e-) over which an unmeasured read noise moves the gain.
_READ_NOISE_RANGE_E = (0.0, 3.0)


def fields_to_measure(known: Iterable[str]) -> tuple[str, ...]:
    """The :data:`CALIBRATED_FIELDS` not in ``known`` (the fields the user or the file gave),
    in their fixed order: what the command line and the widget measure from a movie."""
    known = set(known)
    return tuple(name for name in CALIBRATED_FIELDS if name not in known)


def format_uncertainty(value: float, prefix: str = "") -> str:
    """An uncertainty to two significant digits after ``prefix``, without an exponent below a million (``183.19`` ->
    ``"180"``, ``0.3048`` -> ``"0.3"``); ``"not bounded"`` (no prefix) where it is not finite."""
    if not math.isfinite(value):
        return "not bounded"
    text = f"{value:.2g}"
    return prefix + (f"{float(text):.0f}" if "e+" in text and abs(value) < 1e6 else text)


class CalibrationError(SptDiffusionError, ValueError):
    """The movie does not allow a measurement (one sentence)."""


@dataclass(frozen=True)
class Measured:
    """One measured quantity: value, standard uncertainty, unit and how it was measured."""

    value: float
    uncertainty: float
    unit: str
    method: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN as None)."""
        return {
            "value": self.value if math.isfinite(self.value) else None,
            "uncertainty": self.uncertainty if math.isfinite(self.uncertainty) else None,
            "unit": self.unit,
            "method": self.method,
        }


@dataclass(frozen=True)
class Calibration:
    """The acquisition measured from a movie.

    Attributes
    ----------
    values
        ``{field: Measured}`` for the fields of :data:`CALIBRATED_FIELDS` that could be
        measured (an Acquisition field name each), and ``read_noise_e`` for an EMCCD (its read
        noise is measurable there, from the variance its gain and background leave).
    psf_shape
        ``"gaussian"``, ``"airy"`` or ``"unknown"``; ``psf_shape_evidence`` the ratio of the
        two profiles' squared residuals (Gaussian / Airy: above 1 favours Airy).
    n_frames, n_spots
        Frames and spots the measurement used.
    notes
        Sentences on what could not be measured and why.
    camera
        ``"poisson"`` (sCMOS, CCD), ``"emccd"`` (excess noise recognised) or ``"unknown"``
        (camera given by the user, or not measurable).
    excess_noise_statistic
        ``(Q, low, high)``: ``k3 k5 / k4^2`` of the background and its 95 % interval
        (:func:`~.calibration_camera.excess_noise`); None when the camera was not measured.
    background_share
        Share of the pixel-frames read that the camera measurement used as background (the rest lay
        near spots, or in pixels with fewer than 10 background frames); NaN when the camera was given.
        The gain's precision scales as one over its square root.
    adu_step
        Quantization step of the values (ADU; from each pixel's differences over time, so a fractional
        offset or a dark map subtracted keeps it; 0 for continuous data), taken out of the background's
        variance where its noise spans at least 0.6 steps (:func:`~.calibration_camera.adu_step`,
        :func:`~.calibration_camera.without_rounding`).
    slow_change_share
        Share of the background's variance from changes slower than a few frames (bleaching, a drifting
        lamp or focus; :func:`~.calibration_camera.trend_free_cumulants`); above
        :data:`~.calibration_camera.SLOW_CHANGE_SHARE`, and where the gain they give moves beyond twice its own
        spread (:func:`_slow_changes_matter`), the camera was measured from the trend-free cumulants (with a note;
        ``background_share`` then counts the values those used). Measured with the camera given too (the signal
        asks whether the light fades: :func:`~.calibration_spots.signal_estimate`); NaN without background.
    background_range
        10th and 90th percentiles (photons/px/frame) of the background over the field's tiles (with the
        camera measured or given; None otherwise); a note says when the first is under
        1 / :data:`UNEVEN_BACKGROUND` of the second (uneven illumination).
    bright_half_ratio
        Median photons of the brighter half of the isolated single spots over all of theirs; above
        :data:`~.calibration_spots.MULTIPLES_RATIO` the signal comes from all of them
        (:func:`~.calibration_spots.signal_estimate`). NaN where the signal was not measured.
    """

    values: dict[str, Measured]
    psf_shape: str = "unknown"
    psf_shape_evidence: float = float("nan")
    n_frames: int = 0
    n_spots: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    camera: str = "unknown"
    excess_noise_statistic: tuple[float, float, float] | None = None
    background_share: float = float("nan")
    adu_step: float = 0.0
    slow_change_share: float = float("nan")
    background_range: tuple[float, float] | None = None
    bright_half_ratio: float = float("nan")

    @property
    def excess_noise_factor(self) -> float:
        """Variance of the camera's output over a Poisson camera's of the same gain: 2 for an EMCCD, else 1."""
        return EMCCD_EXCESS_NOISE_FACTOR if self.camera == "emccd" else 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, as saved under ``acquisition_measured`` in ``_meta.json``."""
        evidence = self.psf_shape_evidence
        return {
            **{key: m.to_dict() for key, m in self.values.items()},
            "psf_shape": self.psf_shape,
            "psf_shape_evidence": evidence if math.isfinite(evidence) else None,
            "n_frames": self.n_frames,
            "n_spots": self.n_spots,
            "notes": list(self.notes),
            "camera": self.camera,
            "excess_noise_factor": self.excess_noise_factor,
            "excess_noise_statistic": None if self.excess_noise_statistic is None else [
                v if math.isfinite(v) else None for v in self.excess_noise_statistic],
            "background_share": self.background_share if math.isfinite(self.background_share) else None,
            "adu_step": self.adu_step,
            "slow_change_share": self.slow_change_share if math.isfinite(self.slow_change_share) else None,
            "background_range": None if self.background_range is None else list(self.background_range),
            "bright_half_ratio": self.bright_half_ratio if math.isfinite(self.bright_half_ratio) else None,
        }

    def apply(self, acquisition: Acquisition, given: set[str] | frozenset[str] = frozenset()) -> Acquisition:
        """``acquisition`` with every measured value the user did not give (``given``).

        For an EMCCD (:attr:`excess_noise_factor` 2) the measured gain is doubled and the measured
        background and signal photons halved: the Poisson camera with the EMCCD's noise, which is what
        the spot fits, the localization precisions and the models assume.
        """
        # an offset may be 0 or negative (offset-subtracted or shifted data), a background 0
        lowest = {"offset_adu": -math.inf, "background_photons": 0.0, "read_noise_e": 0.0}
        factor = self.excess_noise_factor
        scale = {"gain_adu_per_e": factor, "background_photons": 1.0 / factor, "signal_photons": 1.0 / factor,
                 "read_noise_e": 1.0 / factor}
        changes = {
            key: m.value * scale.get(key, 1.0) for key, m in self.values.items()
            if key not in given and math.isfinite(m.value)
            and (m.value >= lowest[key] if key in lowest else m.value > 0)
        }
        return acquisition.replace(**changes) if changes else acquisition

    def table(self) -> list[tuple[str, str, str, str]]:
        """Rows ``(quantity, value, uncertainty, method)`` for printing."""
        rows = []
        for key, m in self.values.items():
            rows.append((key, f"{m.value:.4g} {m.unit}".strip(), format_uncertainty(m.uncertainty, "+- "), m.method))
        rows.append(("psf_shape", self.psf_shape, f"evidence {self.psf_shape_evidence:.3g}", "radial profile"))
        if self.excess_noise_statistic is not None:
            q, low, high = self.excess_noise_statistic
            rows.append(("camera", self.camera, f"k3 k5 / k4^2 {q:.3g} ({low:.3g}-{high:.3g})",
                         "background cumulants (1.25: EMCCD, 1: Poisson camera)"))
        if math.isfinite(self.background_share):
            rows.append(("background pixels", f"{100 * self.background_share:.0f} % of pixel-frames",
                         f"values in steps of {self.adu_step:g} ADU" if self.adu_step > 0 else "unquantized values",
                         "away from spots; the camera's precision grows with their number"))
        return rows


def _emccd_fits(skew: SkewReading) -> bool:
    """Can the background's skew be an EMCCD's? Not where ``k4 k2 / k3^2`` lies surely under its 4/3."""
    return not skew.ratio_high < 4.0 / 3.0


def _misfit_candidates(skew: SkewReading, read_known: bool = False) -> list[float]:
    """The Poisson-equivalent gains (ADU/e-) of the cameras that fit: the sCMOS/CCD's (not where the read noise was
    given: its read noise differs), and the EMCCD's (twice its gain) where it can be one; finite ones only."""
    gains = ([] if read_known else [skew.poisson_gain]) + ([2.0 * skew.emccd_gain] if _emccd_fits(skew) else [])
    return [g for g in gains if math.isfinite(g) and g > 0]


def _misfit_note(skew: SkewReading, read_noise_e: float, read_known: bool = False) -> str:
    """The note where no sCMOS/CCD with the assumed (or given: ``read_known``) read noise fits the background's
    noise."""
    word = "given" if read_known else "assumed"
    head = (f"no sCMOS/CCD with the {word} read noise ({read_noise_e:g} e-) fits the background's noise, which is "
            f"more skewed (k4 k2 / k3^2 = {skew.ratio:.2f}, 95 % interval {skew.ratio_low:.2f}-{skew.ratio_high:.2f}; "
            "4/3 or more for an EMCCD, 1 + r^2 / b for an sCMOS/CCD). ")
    scmos = (f"an sCMOS/CCD of about {skew.poisson_gain:.3g} ADU/e- with {skew.poisson_read_noise_e:.2g} e- of read "
             + ("noise (is the given read noise right?)" if read_known else
                "noise (give --read-noise-e; in the widget, the camera read noise)"))
    if not _emccd_fits(skew):
        return (head + f"It fits {scmos}; the gain where the fit with {read_noise_e:g} e- comes closest was taken, "
                "its uncertainty covering that camera's")
    return (head + "Two cameras fit it and its noise cannot tell them apart: an EMCCD of about "
            f"{skew.emccd_gain:.3g} ADU per photo-electron (give --offset-adu and, as --gain-adu-per-e, twice that, "
            "its Poisson-equivalent gain; in the widget, the camera fields with 'measure camera and PSF from the "
            f"movie' off) or {scmos}; the gain between them where the fit comes closest was taken, its uncertainty "
            "covering both")


def _camera_with_gain(tiles: np.ndarray, gain: float, read_noise_e: float,
                      read_range: tuple[float, float] = _READ_NOISE_RANGE_E) -> tuple[float, float, float, float]:
    """``(offset ADU, background photons/px, their uncertainties)`` of a Poisson camera of known ``gain`` (ADU per
    photo-electron) from pooled tile cumulants: ``b = k2 / g^2 - r^2`` (at least 0), ``offset = mean - g b``, the
    background the field's mean; the uncertainty holds the read noise's over ``read_range`` (e-; the 0-3 e- an
    assumed one may span, none where it is known) and the sampling's (each tile's ``k2`` varies as
    ``(k4 + 2 k2^2) / n`` over its ``n`` samples, tiles weighted by them)."""
    mean, k2 = pooled_cumulants(tiles)[:2]
    background = max(k2 / gain**2 - read_noise_e**2, 0.0)
    offset = mean - gain * background
    low, high = (max(k2 / gain**2 - r**2, 0.0) for r in sorted(read_range, reverse=True))
    spread = (high - low) / math.sqrt(12.0)  # a uniform read noise variance over the range
    # sampling: each tile's k2 varies as (k4 + 2 k2^2) / n about its own value (its light may differ from the
    # others', which is no error of the pooled k2)
    n = tiles[:, 0]
    sampling = math.sqrt(max(float(np.sum(n * (tiles[:, 4] + 2.0 * tiles[:, 2] ** 2)) / float(n.sum()) ** 2), 0.0))
    total = math.hypot(spread, sampling / gain**2)
    return offset, max(field_background(tiles, gain, offset), 0.0), gain * total, total


def _gain_factors(gain: Measured | None, own_se: float, alternatives: list[float]) -> tuple[tuple[float, ...], str]:
    """What the spots' photons become at the gains the camera measurement leaves plausible (multiples of those
    counted with ``gain``: photons scale as 1 / gain), and a phrase for the signal's method. ``gain``: the measured
    gain the photons were counted with (None where the user's was used); ``own_se``: its uncertainty before the
    cameras that fit widened it (NaN: that of ``gain``); ``alternatives``: the gains of the cameras that fit where
    none with the assumed read noise does (:func:`_misfit_candidates`)."""
    if gain is None or not (math.isfinite(gain.value) and gain.value > 0):
        return (), ""
    g = gain.value
    u = own_se if math.isfinite(own_se) else gain.uncertainty
    if not math.isfinite(u):
        return (math.inf,), "; not bounded: the gain's uncertainty could not be measured"
    used = [c for c in alternatives if math.isfinite(c) and c > 0]
    factors = (g / (g + u), g / (g - u) if u < g else math.inf, *(g / c for c in used))
    text = f"; the gain's uncertainty ({100 * u / g:.0f} %)"
    if used:
        text += f" and the gains of the cameras that fit ({', '.join(f'{c:.3g}' for c in used)} ADU/e-)"
    return factors, text + (" reaches 0: not bounded" if u >= g else " included")


def _uneven_background(tiles: np.ndarray, gain: float, offset: float) -> tuple[tuple[float, float], str | None]:
    """10th and 90th percentiles (photons/px) of the tiles' backgrounds, and a note where they span more than
    :data:`UNEVEN_BACKGROUND` x (None otherwise)."""
    low, high = (float(v) for v in np.percentile(tile_backgrounds(tiles, gain, offset), [10, 90]))
    if high > UNEVEN_BACKGROUND * low and high - low > 1.0:  # (noise spreads tiles near 0 photons/px)
        return (low, high), (f"the background varies over the field, from {low:.3g} to {high:.3g} photons/px (10th "
                             f"and 90th percentiles of its {TILE_PX} x {TILE_PX} px tiles; uneven illumination?): the "
                             "value given is the field's mean")
    return (low, high), None


def _child(gen: np.random.Generator) -> np.random.Generator:
    """An independent generator for a side computation, so that ``gen``'s own later draws stay what they were
    (``spawn``; for a generator that cannot spawn, one seeded from ``gen``)."""
    try:
        return gen.spawn(1)[0]
    except (AttributeError, TypeError):
        return np.random.default_rng(int(gen.integers(2**63)))


def _camera_gain(tiles: np.ndarray, read_noise_e: float, emccd: bool) -> float:
    """The gain (ADU per photo-electron) of a Poisson camera, or with ``emccd`` of an EMCCD, from ``tiles``."""
    return emccd_camera(tiles)[0] if emccd else poisson_camera(tiles, read_noise_e)[0]


def _gain_and_spread(tiles: np.ndarray, read_noise_e: float, gen: np.random.Generator,
                     emccd: bool = False) -> tuple[float, float]:
    """The camera's gain from ``tiles`` (a Poisson camera's, or with ``emccd`` an EMCCD's, ``k4 / 4 k3``) and its
    relative standard deviation over bootstraps of the tiles (NaN and inf where there is no gain)."""
    gain = _camera_gain(tiles, read_noise_e, emccd)
    boot = np.array([_camera_gain(tiles[gen.integers(0, len(tiles), len(tiles))], read_noise_e, emccd)
                     for _ in range(_BOOTSTRAP)])
    boot = boot[np.isfinite(boot)]
    if not (math.isfinite(gain) and gain > 0 and boot.size > _BOOTSTRAP // 2):
        return gain, math.inf
    return gain, float(np.std(boot) / gain)


def _slow_changes_matter(plain: np.ndarray, free: np.ndarray, read_noise_e: float, gen: np.random.Generator) -> bool:
    """Should the camera be measured from the trend-free tile cumulants ``free`` rather than ``plain`` (both with
    the rounding taken out)? Where the gains they give differ by more than twice the trend-free gain's bootstrap
    spread: slow changes bias the gain from ``plain`` far beyond their share of the variance (their skew counts as
    the camera's), while on a dim movie with few background values the trend-free gain is noisier than a small
    bias. An EMCCD (recognised from all the values: the
    trend-free ones are too few to show its excess noise) is judged by its own gain, ``k4 / 4 k3``."""
    if len(free) < _MIN_SWITCH_TILES:  # a bootstrap over a few tiles understates the spread
        return False
    emccd = excess_noise(plain, gen)[0]
    if not emccd and gain_solution(*pooled_cumulants(free)[1:3], read_noise_e)[1] == "where the solutions meet":
        return False  # no trend-free gain to trust (its bootstraps sit at the same meeting point)
    gain_free, spread = _gain_and_spread(free, read_noise_e, gen, emccd)
    gain_plain = _camera_gain(plain, read_noise_e, emccd)
    if not math.isfinite(gain_plain):
        return math.isfinite(gain_free)
    return math.isfinite(spread) and abs(gain_plain / gain_free - 1.0) > 2.0 * spread


def _chosen_frames(n_total: int, max_frames: int) -> np.ndarray:
    """Movie frames read (ascending): all of a movie of at most ``max_frames`` frames, else blocks of
    :data:`_BLOCK_FRAMES` consecutive frames spread evenly over the movie (``max_frames`` in all)."""
    if n_total <= max_frames:
        return np.arange(n_total)
    block = min(_BLOCK_FRAMES, max_frames)
    starts = np.linspace(0, n_total - block, max(1, max_frames // block)).round().astype(int)
    return np.unique((starts[:, None] + np.arange(block)[None, :]).ravel())


def _successors(chosen: np.ndarray) -> np.ndarray:
    """``(T,)`` position in ``chosen`` of each read frame's next movie frame, -1 where it was not read."""
    nxt = np.full(len(chosen), -1, dtype=np.int64)
    follows = np.flatnonzero(np.diff(chosen) == 1)
    nxt[follows] = follows + 1
    return nxt


def _background_mask(shape: tuple[int, ...], spots: dict[str, np.ndarray], radius: int,
                     successor: np.ndarray) -> np.ndarray:
    """``(T, Y, X)`` True where a pixel is background: away from the spots of the neighbouring frames.

    A frame is masked around the spots detected in the frames before and after it, not around all
    of its own: those are selected by its own noise (noise peaks among them), and with that mask
    the gain from the background cumulants came out 5-9 % low on the dim movies of the calibration
    grid (``benchmarks/reports/calibration.md``). A slow particle moves little in one
    frame; a fast one may leave its neighbours' masks, so a frame is also masked around its own
    spots above :data:`MASK_OWN_SNR`, where noise peaks are rare. A frame read without a
    neighbour is masked around all its own spots.
    """
    mask = np.ones(shape, dtype=bool)
    predecessor = np.full(len(successor), -1, dtype=np.int64)
    has_next = successor >= 0
    predecessor[successor[has_next]] = np.flatnonzero(has_next)
    alone = (successor < 0) & (predecessor < 0)
    for t, y, x, snr in zip(spots["frame"], spots["y_px"], spots["x_px"], spots["snr"]):
        t = int(t)
        y0, x0 = int(round(y)), int(round(x))
        box = (slice(max(0, y0 - radius), y0 + radius + 1), slice(max(0, x0 - radius), x0 + radius + 1))
        for u in (predecessor[t], successor[t], t if alone[t] or snr >= MASK_OWN_SNR else -1):
            if u >= 0:
                mask[(u, *box)] = False
    return mask


def _nan_spread(rows: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Per column: the standard deviation of the finite values of ``rows`` (``(n, k)``), or with
    ``reference`` (``(k,)``) their largest absolute difference from it; NaN (silently) where none is
    finite."""
    rows = np.asarray(rows, dtype=float).reshape(len(rows), -1)
    out = np.full(rows.shape[1], np.nan)
    for j in range(rows.shape[1]):
        col = rows[:, j][np.isfinite(rows[:, j])]
        if col.size:
            out[j] = float(np.max(np.abs(col - reference[j]))) if reference is not None else float(np.std(col))
    return out


# --------------------------------------------------------------------- driver
def calibrate_movie(
    movie: Any,
    acquisition: Acquisition | None = None,
    *,
    given: set[str] | frozenset[str] = frozenset(),
    max_frames: int = _FRAMES_USED,
    rng: np.random.Generator | int | None = 0,
) -> Calibration:
    """Measure camera, background, PSF width and signal of a ``(T, Y, X)`` ADU movie.

    Parameters
    ----------
    movie
        ``(T, Y, X)`` array-like in ADU (``movie[t]`` reads one frame).
    acquisition
        Pixel size and frame interval (needed to express the PSF in nm), the read noise
        assumed for the camera, and any value the user gave; default: the standard one.
    given
        Acquisition fields the user gave: they are used as they are, not measured
        (giving ``gain_adu_per_e`` and ``offset_adu`` skips the camera measurement;
        ``read_noise_e`` given: the read noise is known, and the 0-3 e- range an assumed one
        may span is not carried into the uncertainties).
    max_frames
        Frames used at most: all of a shorter movie, else blocks of 12 consecutive frames spread evenly over it.
    rng
        Seed or generator of the bootstraps.

    Returns
    -------
    Calibration

    Raises
    ------
    CalibrationError
        Fewer than 2 frames, or no spot and no background to measure.
    """
    acq = acquisition or Acquisition()
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    shape = getattr(movie, "shape", None)
    if shape is None or len(shape) != 3 or shape[0] < 2:
        raise CalibrationError("calibration needs a (T, Y, X) movie of at least 2 frames")
    if int(shape[1]) * int(shape[2]) == 0:
        raise CalibrationError(f"calibration needs frames with pixels; this movie's frames are {shape[1]} x {shape[2]}")
    n_total = int(shape[0])
    chosen = _chosen_frames(n_total, int(max_frames))
    successor = _successors(chosen)
    frames = np.stack([check_frame(movie[int(t)], index=int(t)).astype(np.float64) for t in chosen])
    notes: list[str] = []
    values: dict[str, Measured] = {}

    # 1 - spots on a provisional photon scale (detection thresholds are in noise units, so
    # the scale does not matter), to mask them out of the background
    psf_guess = float(acq.psf_sigma_px) if "psf_sigma_nm" in given else 1.0
    provisional = acq.replace(psf_sigma_nm=psf_guess * acq.pixel_size_nm)
    rough_offset = float(np.percentile(frames, 1.0)) if "offset_adu" not in given else float(acq.offset_adu)
    rough_gain = float(acq.gain_adu_per_e) if "gain_adu_per_e" in given else 1.0
    provisional = provisional.replace(offset_adu=rough_offset, gain_adu_per_e=rough_gain)
    spots = spot_table(np.stack([provisional.adu_to_photons(f) for f in frames]), provisional,
                        threshold_snr=MASK_THRESHOLD_SNR)
    if spots and "psf_sigma_nm" not in given:
        widths = static_spots(spots, psf_guess, successor, provisional=True).widths_px
        if widths.size >= 5:
            psf_guess = float(np.clip(np.median(widths), 0.4, 8.0))
    mask = np.ones(frames.shape, dtype=bool)
    if spots:
        mask = _background_mask(frames.shape, spots, int(math.ceil(3.0 * psf_guess + MASK_MARGIN_PX)), successor)

    # 2 - camera and background
    camera_given = "gain_adu_per_e" in given and "offset_adu" in given
    read = float(acq.read_noise_e)
    read_known = "read_noise_e" in given
    read_range = (read, read) if read_known else _READ_NOISE_RANGE_E
    read_word = "given" if read_known else "assumed"
    read_text = f"read noise {acq.read_noise_e:g} e- {read_word}"
    camera_known = camera_given
    gain, offset = float(acq.gain_adu_per_e), float(acq.offset_adu)
    step = adu_step(frames)
    tiles = tile_cumulants(frames, mask)
    plain, slow_note = None, False
    free, slow_share = trend_free_cumulants(frames, mask, successor)  # (measured with the camera given too: the
    if not camera_given:                                               # signal asks whether the light fades)
        if slow_share > SLOW_CHANGE_SHARE and len(free) >= 4:
            # (the switch's bootstraps draw from their own generator: the others draw what they drew before)
            rounded = without_rounding(tiles, step)[0]
            if _slow_changes_matter(rounded, without_rounding(free, step)[0], acq.read_noise_e, _child(gen)):
                tiles, plain = free, rounded
                notes.append(f"the background changes slowly over the movie (bleaching or drift: "
                             f"{100 * slow_share:.1f} % of its variance); the camera was measured from each pixel's "
                             "departures from its neighbouring frames")
            elif slow_share > _SLOW_NOTE_SHARE:
                slow_note = True
                notes.append(f"the background changes slowly over the movie (bleaching or drift: "
                             f"{100 * slow_share:.1f} % of its variance), which can bias the camera's gain far beyond "
                             "that share, and the movie has too few background values to measure it without those "
                             "changes: give --gain-adu-per-e and --offset-adu if they are known")
    tiles, rounding_removed = without_rounding(tiles, step)
    background_share = float("nan") if camera_given else float(tiles[:, 0].sum() / frames.size)
    if step > 0 and not rounding_removed and not camera_given and len(tiles):
        notes.append(f"the background's noise spans less than {MIN_NOISE_STEPS:g} of the values' steps of "
                     f"{step:g} ADU, too few for the camera's gain to be measured reliably from it; give "
                     "--gain-adu-per-e and --offset-adu if they are known")
    camera_kind, excess, background_range = "unknown", None, None
    gain_alternatives: list[float] = []  # gains of the cameras that fit where none with the assumed read noise does
    gain_own_se = float("nan")  # the measured gain's uncertainty before those widen it
    light_uneven = math.isfinite(slow_share) and slow_share > _SLOW_NOTE_SHARE
    if camera_given:
        photons_bg = (frames[mask] - offset) / gain
        if photons_bg.size:
            b = float(np.mean(photons_bg))
            values["background_photons"] = Measured(b, float(np.std(photons_bg) / math.sqrt(photons_bg.size)),
                                                    "photons/px/frame", "mean of background pixels, given camera")
        if len(tiles):
            background_range, uneven = _uneven_background(tiles, gain, offset)
            light_uneven |= uneven is not None
            notes += [uneven] if uneven else []
    elif len(tiles) >= 4:
        is_emccd, q, q_low, q_high = excess_noise(tiles, gen)
        if not is_emccd and plain is not None:
            # the trend-free values are fewer and noisier: an EMCCD's excess noise may show only in all of them
            # (mild slow changes leave k3 k5 / k4^2 nearly as it is); its gain then still comes from the trend-free
            is_emccd, q, q_low, q_high = excess_noise(plain, gen)
        excess = (q, q_low, q_high)
        method = (f"EMCCD recognised by its excess noise (k3 k5 / k4^2 = {q:.2f}, 95 % interval "
                  f"{q_low:.2f}-{q_high:.2f}; 1.25 for an EMCCD, 1 for a Poisson camera); gain k4 / (4 k3)")
        skew = None
        if not is_emccd and "gain_adu_per_e" not in given and poisson_misfit(
                *pooled_cumulants(tiles)[1:3], float(acq.read_noise_e)) > 0:
            # no Poisson camera with the assumed read noise fits: an EMCCD, or less read noise? (its own
            # generator: the bootstraps below draw what they drew before)
            skew = skew_reading(tiles, float(acq.read_noise_e), _child(gen))
            if not skew.misfit_low > NO_FIT_MARGIN or slow_note:
                skew = None  # (with slow changes left in, the skew may be theirs, not the camera's)
        if is_emccd:
            camera_kind = "emccd"
            gain, offset, background, read_noise = emccd_camera(tiles)
            boot = np.array([emccd_camera(tiles[gen.integers(0, len(tiles), len(tiles))]) for _ in range(_BOOTSTRAP)])
            total = _nan_spread(boot)
            gain_own_se = float(total[0])
        else:
            camera_kind = "poisson"
            gain, offset, background = poisson_camera(tiles, read)  # the solution above 2 r^2
            _, k2, k3, k4, _ = pooled_cumulants(tiles)
            how = gain_solution(k2, k3, read)[1]
            if skew is not None:
                notes.append(_misfit_note(skew, float(acq.read_noise_e), read_known))
            elif how == "where the solutions meet":
                notes.append(f"the background lies near twice the square of the {read_word} read noise "
                             f"({acq.read_noise_e:g} e-), where its noise tells the gain least well; give "
                             "--gain-adu-per-e if it is known")
            elif how == "above 2 r^2" and q_low <= 1.0 <= q_high and points_below(k2, k3, k4, read):
                notes.append(f"the background's noise also fits a background below twice the square of the "
                             f"{read_word} read noise ({2 * read**2:.3g} photons/px at {acq.read_noise_e:g} e-), "
                             "with a higher gain, and its fourth cumulant points there (light from spots can do that "
                             "too); the higher background was taken: if the background is known to be that low, "
                             "give --gain-adu-per-e")
            boot = np.array([poisson_camera(tiles[gen.integers(0, len(tiles), len(tiles))], read)
                             for _ in range(_BOOTSTRAP)])
            spread = _nan_spread(boot)
            # the read noise is assumed, not measured: its plausible range moves the gain
            # (a read noise these cumulants do not fit, with no solution, is left out rather than met halfway)
            bounds = [poisson_camera(tiles, r, meeting=False) for r in read_range]
            read_spread = _nan_spread(np.array(bounds), reference=np.array([gain, offset, background])) / math.sqrt(3)
            total = np.sqrt(spread**2 + np.nan_to_num(read_spread) ** 2)
            method = f"background cumulants (k3/k2), {read_text}"
            candidates = _misfit_candidates(skew, read_known) if skew is not None else []
            gain_alternatives, gain_own_se = candidates, float(total[0])
            if candidates:  # the cameras that fit, as far apart as 2 x in the gain: the uncertainty covers them
                total[0] = math.hypot(total[0], max(abs(c - gain) for c in candidates))
                method += "; no such camera fits: the gain where the fit comes closest, between the two that do"
        if math.isfinite(offset) and offset < -0.5:
            notes.append(f"the measured camera offset ({offset:.0f} ADU) is negative: the movie may be "
                         "background-subtracted or shifted; give --offset-adu if the offset is known")
        if math.isfinite(gain) and gain > 0:
            camera_known = True
            values["gain_adu_per_e"] = Measured(gain, float(total[0]), "ADU/e-", method)
            values["offset_adu"] = Measured(offset, float(total[1]), "ADU", method)
            values["background_photons"] = Measured(background, float(total[2]), "photons/px/frame", method)
            background_range, uneven = _uneven_background(tiles, gain, offset)
            light_uneven |= uneven is not None
            notes += [uneven] if uneven else []
            if camera_kind == "emccd":
                values["read_noise_e"] = Measured(read_noise, float(total[3]), "e-",
                                                  "EMCCD: sqrt(k2 - 2 g^2 b) / g (photo-electrons)")
                notes.append("EMCCD camera: the tracks and estimates count Poisson-equivalent photons (half the "
                             "photo-electrons, at twice the measured gain), which carry the camera's noise; the "
                             "measured values here are photo-electrons")
                told = sorted(set(given) & {"gain_adu_per_e", "background_photons", "signal_photons"})
                if told:
                    notes.append(f"EMCCD camera: the given {', '.join(told)} are used as given, i.e. as "
                                 "Poisson-equivalent values (gain: twice the ADU per photo-electron; photons: half "
                                 "the photo-electrons)")
        if camera_known and camera_kind == "poisson" and "gain_adu_per_e" in given and "offset_adu" not in given:
            # the gain is known: offset and background from the background's mean and variance with it, so that
            # they and the spots' photons below are on the scale the run uses
            gain = float(acq.gain_adu_per_e)
            offset, background, offset_se, background_se = _camera_with_gain(tiles, gain, read, read_range)
            how = f"background mean and variance with the given gain, {read_text}"
            values["offset_adu"] = Measured(offset, offset_se, "ADU", how)
            values["background_photons"] = Measured(background, background_se, "photons/px/frame", how)
        if not camera_known:
            camera_kind = "unknown"
            notes.append("the background's noise statistics do not fit a Poisson camera (EMCCD or processed data?); "
                         "give --gain-adu-per-e and --offset-adu")
            gain, offset = float(acq.gain_adu_per_e), float(acq.offset_adu)
    else:
        notes.append("too little background without spots to measure the camera")

    # 3 - PSF and signal on the calibrated photon scale (an EMCCD's Poisson-equivalent one, whose noise
    # the spot fits assume; its spot photons are doubled back to photo-electrons)
    equivalent = EMCCD_EXCESS_NOISE_FACTOR if camera_kind == "emccd" else 1.0
    camera = acq.replace(gain_adu_per_e=gain * equivalent, offset_adu=offset,
                         psf_sigma_nm=psf_guess * acq.pixel_size_nm)
    photons = np.stack([camera.adu_to_photons(f) for f in frames])
    spots = spot_table(photons, camera)
    static = static_spots(spots, psf_guess, successor)
    n_spots = int(static.widths_px.size)
    shape_name, evidence, flux, flux_se, flux_text = "unknown", float("nan"), 1.0, 0.0, ""
    bright_half_ratio = float("nan")
    if n_spots >= 5:
        fit_width = float(np.median(static.widths_px))
        guess = float(acq.psf_sigma_px) if "psf_sigma_nm" in given else fit_width
        profile = measure_psf(photons, spots, static.rows, guess, float(np.median(static.blur_px2)), gen)
        if profile is not None:
            shape_name, evidence = profile.shape, profile.evidence
            flux, flux_se = profile.flux_ratio, profile.flux_ratio_se
            flux_text = f" x {flux:.2f} (photons under the {shape_name}-shape profile over the Gaussian fit's" + (
                "; the shape unknown: half the Airy profile's difference included)" if shape_name == "unknown" else ")")
            if profile.n_groups < MIN_BOOTSTRAP_GROUPS:
                notes.append(f"the PSF's spots come from fewer than {MIN_BOOTSTRAP_GROUPS} particles: the "
                             "uncertainties of its width and of the signal are lower bounds")
        else:  # no profile, the shape unknown: an Airy PSF's rings hold photons a Gaussian fit misses
            flux_se = 0.5 * (AIRY_FLUX_RATIO - 1.0)
            flux_text = (f" (no profile: half the {100 * (AIRY_FLUX_RATIO - 1):.0f} % more that an Airy PSF's rings "
                         "would hold included)")
        if static.n_pairs:
            notes.append(f"{static.n_pairs} bright, wide spots were taken for pairs of particles closer than the "
                         "PSF and left out of the PSF and the signal")
        if "psf_sigma_nm" not in given:
            if profile is not None:
                w, w_se = profile.sigma_px, profile.sigma_se_px
                method = (f"{shape_name}-shape mean radial profile of {profile.n_spots} bright isolated spots, "
                          "Gaussian-equivalent width, pixel and blur corrected" + (
                              "; the shape unknown: the two profiles' mean" if shape_name == "unknown" else ""))
            else:
                w, w_se = median_and_se(static.widths_px, gen)
                # the blur correction is approximate (it over-corrects nothing but under-corrects
                # fast, elongated streaks): half of it counts as a systematic uncertainty
                w_se = math.hypot(w_se, 0.5 * abs(float(np.median(static.raw_widths_px)) - w))
                method = (f"median blur-corrected Gaussian-fit width of {n_spots} bright isolated spots (no "
                          f"radial profile: fewer than {MIN_PROFILE_SPOTS} spots inside the frames, or its best "
                          "width at the edge of the search)")
            if w > 0:
                values["psf_sigma_nm"] = Measured(w * acq.pixel_size_nm, w_se * acq.pixel_size_nm, "nm", method)
                camera = camera.replace(psf_sigma_nm=w * acq.pixel_size_nm)
            else:
                notes.append("PSF width not measured: the spots' widths are all taken up by their motion blur")
        if camera_known:
            # the photons were counted with the measured gain unless the user's was used (an EMCCD's is measured)
            counted_with = values.get("gain_adu_per_e") if camera_kind == "emccd" or "gain_adu_per_e" not in given \
                else None
            factors, gain_text = _gain_factors(counted_with, gain_own_se, gain_alternatives)
            signal = signal_estimate(static, (flux, flux_se), factors, gen, photon_factor=equivalent,
                                     light_uneven=light_uneven)
            bright_half_ratio = signal.bright_half_ratio
            values["signal_photons"] = Measured(signal.photons, signal.uncertainty, "photons/frame",
                                                signal.method + flux_text + gain_text)
            if signal.note:
                notes.append(signal.note)
        else:
            notes.append("signal photons not measured: the camera's gain is neither given nor measurable")
    else:
        notes.append(f"only {n_spots} bright isolated spots: PSF width and signal not measured")
    if not values and not notes:
        raise CalibrationError("nothing in the movie could be measured")
    return Calibration(values, shape_name, evidence, int(len(chosen)), n_spots, tuple(notes), camera=camera_kind,
                       excess_noise_statistic=excess, background_share=background_share, adu_step=step,
                       slow_change_share=slow_share, background_range=background_range,
                       bright_half_ratio=bright_half_ratio)
