"""The spots a calibration measures the PSF and the signal from, and the signal itself.

:func:`spot_table` fits every detection of a movie's frames with a free-width Gaussian;
:func:`static_spots` keeps the bright, isolated single spots and, among them, the most static
ones (the PSF's, :mod:`.calibration_psf`); :func:`signal_estimate` gives the photons of one
emitter per frame from the bright ones, with an uncertainty that carries the camera's gain and
the PSF profile's flux, and falls back to all isolated spots where the bright ones hold
multiples (unresolved pairs of particles, noise-lifted spots at the detection limit).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from .acquisition import Acquisition
from .tracking.detect import DetectionSettings, detect_photons
from .tracking.localize import localize_arrays

__all__ = ["BOOTSTRAP", "MULTIPLES_RATIO", "SignalEstimate", "StaticSpots", "median_and_se", "signal_estimate",
           "spot_table", "static_spots"]

#: Bootstrap replicates of a median.
BOOTSTRAP = 200


def spot_table(photons: np.ndarray, acquisition: Acquisition, threshold_snr: float = 5.0) -> dict[str, np.ndarray]:
    """Free-width single-spot fits of every detection in ``(T, Y, X)`` photon frames."""
    parts: dict[str, list[np.ndarray]] = {}
    settings = DetectionSettings(threshold_snr=threshold_snr)
    for t, frame in enumerate(photons):
        peaks, snr = detect_photons(frame, acquisition, settings)
        if not len(peaks):
            continue
        fit = localize_arrays(frame, peaks, acquisition, neighbours=False)
        fit["frame"] = np.full(len(peaks), t)
        fit["snr"] = np.asarray(snr, dtype=np.float64)
        for key, value in fit.items():
            parts.setdefault(key, []).append(np.asarray(value))
    return {key: np.concatenate(value) for key, value in parts.items()}


#: Frame-to-frame steps averaged for each spot's blur correction (:func:`static_spots`).
_BLUR_STEPS = 8
#: Share of the Brownian blur variance ``D T / 3`` that the free-width Gaussian fit takes up (1: all
#: of it, the Brownian value; benchmarks/reports/calibration.md gives what it leaves on the grid).
_BLUR_SEEN = 1.0
#: Spots whose chain of nearest spots breaks before this many steps are not used (fast or crowded).
_MIN_CHAIN_STEPS = 4
#: The PSF width is the median over the spots with the smallest blur: this quantile of them ...
_STATIC_QUANTILE = 0.25
#: ... or more, so that at least this many spots are used where there are.
_MIN_STATIC_SPOTS = 60
#: Spots with more than this many times the median photons of the isolated spots and a fitted width
#: more than :data:`_PAIR_WIDTH` x their median are taken for two unresolved particles and not used.
_SINGLE_EMITTER_PHOTONS = 1.5
_PAIR_WIDTH = 1.15


class StaticSpots(NamedTuple):
    """The spots :func:`static_spots` keeps (px widths, photons of the Gaussian fits)."""

    widths_px: np.ndarray  #: ``(S,)`` blur-corrected Gaussian-fit widths of the most static spots
    photons: np.ndarray  #: ``(B,)`` fitted photons of every bright isolated single spot
    raw_widths_px: np.ndarray  #: ``(S,)`` the static spots' widths before the blur correction
    rows: np.ndarray  #: ``(S,)`` the static spots' rows in the spot table
    blur_px2: np.ndarray  #: ``(S,)`` the static spots' blur variance (px^2 per axis)
    n_pairs: int = 0  #: isolated spots left out as unresolved pairs
    #: ``(A,)`` fitted photons of every isolated spot, followed over frames or not, bright or not (a chain of
    #: detections over 4 frames favours what is easy to detect: unresolved pairs, near the detection limit)
    all_photons: np.ndarray = np.zeros(0)


def static_spots(
    spots: dict[str, np.ndarray], psf_guess_px: float, successor: np.ndarray | None = None, provisional: bool = False
) -> StaticSpots:
    """The most static bright isolated single spots, and all bright isolated single spots.

    A spot's blur comes from the mean squared step of its particle over up to :data:`_BLUR_STEPS`
    frames (a chain of nearest isolated spots, frame to frame): one step's ``|d|^2`` is
    exponentially distributed, so a correction by one step is mostly too small or far too
    large; 8 steps give the particle's blur to about 35 %. Bright: the upper half by detection
    SNR among the spots that do not look like two unresolved particles (photons above
    :data:`_SINGLE_EMITTER_PHOTONS` x the median and width above :data:`_PAIR_WIDTH` x the
    median). The static spots are the quarter of the bright ones with the smallest blur, whose
    correction is small. ``successor`` (:func:`_successors`) says which read frame follows each
    in the movie (default: the next one read).

    Ranking by SNR avoids the wide fits that absorb background as photons where the signal is
    low, but it needs detection at about the right scale: a detector tuned far narrower than
    the PSF ranks narrow noise peaks first, and its noise detections make the real spots look
    like pairs by their photons. The first pass, with the PSF still unknown (``provisional``),
    therefore ranks by fitted photons and keeps every photon count.
    """
    empty = np.zeros(0)
    nothing = StaticSpots(empty, empty, empty, np.zeros(0, dtype=np.int64), empty)
    if not spots or len(spots.get("y_px", ())) == 0:
        return nothing
    yx = np.column_stack([spots["y_px"], spots["x_px"]])
    frame = spots["frame"]
    n = len(frame)
    isolation = 6.0 * psf_guess_px + 2.0
    alone = np.zeros(n, dtype=bool)
    next_row = np.full(n, -1, dtype=np.int64)
    step2 = np.full(n, np.nan)
    for t in np.unique(frame):
        now = np.flatnonzero(frame == t)
        following = t + 1 if successor is None else int(successor[int(t)])
        nxt = np.flatnonzero(frame == following) if following >= 0 else np.zeros(0, dtype=np.int64)
        if now.size < 1 or nxt.size < 1:
            continue
        if now.size > 1:
            d_self, _ = cKDTree(yx[now]).query(yx[now], k=2)
            alone[now] = d_self[:, 1] > isolation
        else:
            alone[now] = True
        step, j = cKDTree(yx[nxt]).query(yx[now], k=1, distance_upper_bound=3.0 * psf_guess_px + 2.0)
        found = np.isfinite(step)
        next_row[now[found]] = nxt[j[found]]
        step2[now[found]] = step[found] ** 2
    step2 = np.where(alone, step2, np.nan)  # a chain stops at a spot with a neighbour: it may jump to it
    total = np.where(np.isfinite(step2), step2, 0.0)
    count = np.isfinite(step2).astype(float)
    current = next_row.copy()
    for _ in range(_BLUR_STEPS - 1):
        valid = current >= 0
        following = np.where(valid, step2[np.maximum(current, 0)], np.nan)
        ok = np.isfinite(following)
        total += np.where(ok, following, 0.0)
        count += ok
        # the chain ends at the first missing step: a step beyond the search bound (a fast
        # particle) must not leave the particle looking slow
        current = np.where(ok, next_row[np.maximum(current, 0)], -1)
    keep = alone & np.isfinite(step2) & spots["fit_ok"] & (count >= _MIN_CHAIN_STEPS)
    n_pairs = 0
    if np.any(keep) and not provisional:
        # two particles closer than the PSF are one bright, wide spot
        pair = keep & (spots["photons"] > _SINGLE_EMITTER_PHOTONS * np.median(spots["photons"][keep])) \
            & (spots["sigma_px"] > _PAIR_WIDTH * np.median(spots["sigma_px"][keep]))
        n_pairs = int(pair.sum())
        keep &= ~pair
    if not np.any(keep):
        return nothing
    blur_all = _BLUR_SEEN * (total[keep] / count[keep]) / 8.0
    raw_all = spots["sigma_px"][keep]
    widths_all = np.sqrt(np.clip(raw_all**2 - blur_all, 0.0, None))
    rank = spots["photons" if provisional else "snr"][keep]
    bright = rank >= np.median(rank)
    # at least _MIN_STATIC_SPOTS spots where there are that many: a few wide, dim spots give a noisy median
    quantile = min(1.0, max(_STATIC_QUANTILE, _MIN_STATIC_SPOTS / max(int(bright.sum()), 1)))
    static = bright & (blur_all <= np.quantile(blur_all[bright], quantile))
    return StaticSpots(widths_all[static], spots["photons"][keep][bright], raw_all[static],
                       np.flatnonzero(keep)[static], blur_all[static], n_pairs,
                       spots["photons"][alone & spots["fit_ok"]])



def median_and_se(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    if values.size == 0:
        return float("nan"), float("nan")
    boot = np.median(values[rng.integers(0, values.size, size=(BOOTSTRAP, values.size))], axis=1)
    return float(np.median(values)), float(np.std(boot))


#: Ratio of the brighter half's median photons to all isolated single spots' above which the brighter half is taken
#: to hold multiples. Fit and photon noise spread one emitter's photons by at most about 20 % rms at the detection
#: threshold (SNR 5), which puts the brighter half's median at most about 1.15 x the whole's; a larger ratio says
#: the bright spots are not the same emitters lifted by noise: unresolved pairs of particles, or, near the
#: detection limit, spots that noise and a neighbour's light made detectable. On the calibration grid the ratio
#: lies at 0.99-1.07 in 34 cells and at 1.60-1.76 in three at 250 photons and 2-2.5 px, whose brighter half read
#: the signal 51-97 % high (``benchmarks/reports/calibration.md``); on a second set of its movies at 0.98-1.13 and
#: 1.42-1.57 (``calibration_seeds2.md``).
MULTIPLES_RATIO = 1.3


class SignalEstimate(NamedTuple):
    """Photons of one emitter per frame (:func:`signal_estimate`)."""

    photons: float  #: photo-electrons per spot per frame, over the whole PSF
    uncertainty: float  #: standard uncertainty (photons; NaN where the gain is too uncertain to bound it)
    bright_half_ratio: float  #: brighter half's median photons over all isolated single spots' (NaN: none)
    method: str  #: how it was measured (one phrase)
    note: str | None  #: a sentence for the user where the brighter half stands far above all spots


def signal_estimate(static: StaticSpots, flux: tuple[float, float], gain_factors: tuple[float, ...],
                    rng: np.random.Generator, photon_factor: float = 1.0, light_uneven: bool = False) -> SignalEstimate:
    """Signal photons per spot from the bright isolated single spots of :func:`static_spots`.

    The median fitted photons of the brighter half (times ``photon_factor``, 2 for an EMCCD's
    Poisson-equivalent photons), times the PSF profile's flux ratio (photons under the whole PSF over
    a free-width Gaussian fit's: about 1.15 for an Airy PSF). Where that median exceeds
    :data:`MULTIPLES_RATIO` x the median of all isolated single spots, the brighter half holds
    multiples: the signal is then the median of all of them (a note says so), and half the
    difference counts in the uncertainty. Under uneven or fading light (``light_uneven``) the spots'
    own brightness spreads as the light does, so the brighter half is kept there; a note says so, and
    half the difference counts in the uncertainty as well.

    Parameters
    ----------
    static
        The spots (:func:`static_spots`), photons from free-width Gaussian fits.
    flux
        ``(ratio, standard uncertainty)`` of the profile's flux (:class:`~.calibration_psf.ProfileFit`;
        ``(1, 0)`` without a profile).
    gain_factors
        What the photons become, as multiples of those counted, at the gains the camera measurement
        leaves plausible (e.g. ``g / (g + u)`` and ``g / (g - u)`` for a gain ``g +- u``, or each
        candidate camera's ``g / g_c``; ``inf`` where the gain may be near 0; empty where the gain was
        given): the largest departure from 1 counts in the uncertainty (photons scale as 1 / gain).
    rng
        Generator of the median's bootstrap.
    photon_factor
        Factor on the fitted photons (photo-electrons per fitted photon).
    light_uneven
        The background shows uneven illumination or slow changes (bleaching).

    Returns
    -------
    SignalEstimate (NaN photons where there is no bright spot).
    """
    ratio_flux, flux_se = (float(v) for v in flux)
    bright = np.asarray(static.photons, dtype=float) * photon_factor
    every = np.asarray(static.all_photons, dtype=float) * photon_factor
    n, n_se = median_and_se(bright, rng)
    n_every = float(np.median(every)) if every.size else float("nan")
    ratio = n / n_every if n_every > 0 else float("nan")
    method = f"median of the brighter half ({bright.size}) of {every.size} isolated spots, those followed over 4 frames"
    note, spread_se = None, 0.0
    if math.isfinite(ratio) and ratio > MULTIPLES_RATIO:
        n_bright = n
        spread_se = 0.5 * (n_bright - n_every)
        head = (f"the brighter half of the isolated spots holds {ratio:.2f} x the median photons of all of them, more "
                "than noise spreads one emitter's (about 1.15 x)")
        if light_uneven:
            note = (f"{head}; the light is uneven or fades over the movie, which spreads them as well: the signal "
                    f"({n_bright * ratio_flux:.0f} photons) is the brighter half's, and its uncertainty reaches "
                    f"half-way to the median of all isolated spots ({n_every * ratio_flux:.0f})")
            method += " (uncertainty widened: brighter half far above all spots under uneven light)"
        else:
            n, n_se = median_and_se(every, rng)
            method = f"median of all {every.size} isolated spots (the brighter half, followed over 4 frames, far above)"
            note = (f"{head}: many are unresolved pairs of particles or noise-lifted spots near the detection limit "
                    f"(or the labels differ in brightness); the signal ({n * ratio_flux:.0f} photons) is the median of "
                    f"all isolated spots, and its uncertainty reaches half-way to the brighter half's "
                    f"({n_bright * ratio_flux:.0f})")
    photons = n * ratio_flux
    gain_part = max((abs(f - 1.0) for f in gain_factors if not math.isnan(f)), default=0.0) * photons
    uncertainty = math.hypot(n_se * ratio_flux, n * flux_se, gain_part, spread_se * ratio_flux)
    return SignalEstimate(photons, uncertainty if math.isfinite(uncertainty) else float("nan"), ratio, method, note)
