"""Second pass over one frame's fits: streak merge, pair split and neighbour refits.

:func:`resolve_overlaps` takes the single-spot fits of :mod:`.localize` for one frame and
corrects the three cases a round-spot fit gets wrong: the two lobes of one motion-blurred
streak (merged into one localization), two particles closer than about 3 px that gave one
detection (split into two), and the spots next to either (refitted with that neighbour's
light modelled). Isolated round spots come back exactly as fitted. The method is described
in the comment block below; every fit here is a compiled Poisson-likelihood
Levenberg-Marquardt fit, as in :mod:`.localize`.

The state every step shares is held in two small objects instead of long argument lists:
:class:`FitContext` (the frame, its PSF and fit limits) and :class:`SpotState` (the frame's
localization table and, per row, what model explains its light).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from ..acquisition import Acquisition
from .localize import (
    LOCALIZATION_COLUMNS,
    MAX_SHIFT_PX,
    FitLimits,
    default_window_half_px,
    fit_spots,
    gather_windows,
    mortensen_precision_nm,
    spot_model_and_jacobian,
    spot_score,
)
from .streak_models import (
    Emitters,
    emitters_of,
    fit_pairs,
    fit_segments,
    neighbour_light_of,
)

__all__ = ["resolve_overlaps", "FitContext", "SpotState"]


@dataclass(frozen=True)
class FitContext:
    """What every fit of one frame's second pass shares.

    Attributes
    ----------
    frame
        ``(Y, X)`` frame in photo-electrons (float32 or float64; fit windows are float64).
    acquisition
        Camera, pixel size and PSF of the movie.
    sigma_psf
        PSF sigma (px), from the acquisition.
    half
        Half-width (px) of a round spot's fit window.
    limits
        Read-noise variance and width bounds of the fits.
    max_iterations
        Levenberg-Marquardt iterations at most.
    """

    frame: np.ndarray
    acquisition: Acquisition
    sigma_psf: float
    half: int
    limits: FitLimits
    max_iterations: int

    @classmethod
    def for_frame(
        cls, frame: np.ndarray, acquisition: Acquisition, window_half_px: int | None, max_iterations: int
    ) -> FitContext:
        """The context of ``frame`` (photo-electrons) with the acquisition's PSF."""
        sigma_psf = float(acquisition.psf_sigma_px)
        half = int(window_half_px) if window_half_px is not None else default_window_half_px(sigma_psf)
        return cls(frame, acquisition, sigma_psf, half, FitLimits.for_psf(acquisition, sigma_psf), int(max_iterations))


@dataclass
class SpotState:
    """A frame's localizations during the second pass, with the light model of each row.

    Attributes
    ----------
    table
        Dict of ``(K,)`` arrays with the :data:`~.localize.LOCALIZATION_COLUMNS` keys.
    parent
        ``(K,)`` index of the input row each row comes from.
    kind
        ``(K,)`` 0: a round spot (a split pair is two round emitters), 1: a streak.
    segment
        ``(K, 2)`` streak vectors (px); zero for round spots.
    streak_width
        ``(K,)`` PSF width (px) of a merged streak's light; NaN: use the row's ``sigma_px``.
    """

    table: dict[str, np.ndarray]
    parent: np.ndarray
    kind: np.ndarray
    segment: np.ndarray
    streak_width: np.ndarray

    @classmethod
    def start(cls, fitted: dict[str, Any]) -> SpotState:
        """Copy of the single-spot fits, every row a round spot of its own."""
        k = len(fitted["y_px"])
        table = {c: np.array(fitted[c], copy=True) for c in LOCALIZATION_COLUMNS}
        return cls(table, np.arange(k), np.zeros(k, dtype=np.int64), np.zeros((k, 2)), np.full(k, np.nan))

    def positions(self) -> np.ndarray:
        """``(K, 2)`` positions ``(y, x)`` in px."""
        return np.column_stack([self.table["y_px"], self.table["x_px"]])

    def finite(self) -> np.ndarray:
        """``(K,)`` rows with finite position, width and photons."""
        out = self.table
        return (
            np.all(np.isfinite(self.positions()), axis=1) & np.isfinite(out["sigma_px"]) & np.isfinite(out["photons"])
        )


class Merges(NamedTuple):
    """Merged streak pairs: the row kept ``(M,)`` (the brighter spot), the row removed ``(M,)``,
    the streak fit ``(M, 7)`` with its centre in absolute px (y, x, N, b, s, vy, vx), and
    whether it converged ``(M,)``."""

    keep: np.ndarray
    drop: np.ndarray
    p_seg: np.ndarray
    converged: np.ndarray




# A second pass over the fits of one frame (``resolve_overlaps``). The single-spot fit
# of :mod:`.localize` explains a round spot; three things break it in crowded or fast movies: two
# particles closer than ~3 px give one DoG maximum, hence one fit (wide, between them,
# often more than 1 px from both); a fast particle's motion-blurred streak is not round, so
# its light is misplaced when it is used as a neighbour's known light; and a long streak
# (D = 3-6 um^2/s at 10 ms: a Brownian path several px long) has two DoG maxima, hence two
# localizations of one particle a few px apart, each with about half its light and
# neither at its position -- the main cause of broken and swapped tracks end to end.
#
# Design: a model comparison on the spots that can need it, rather than a residual
# re-detection.
#
# Merging first (``_merge_streak_pairs``): every two spots closer than
# ``MERGE_MAX_DISTANCE_PX`` are refitted together, in a window around them with the other
# spots' light known, as two round spots (8 parameters, started on the two fits) and as one
# streak (7 parameters, started between them). They are one particle's streak, merged into
# one localization at the streak's centre with the streak's photons, when the streak runs
# through both (each within ``MERGE_MAX_OFF_SEGMENT_PX`` of the segment) and
#   * with a brightness reference: the pair holds at most ``SINGLE_PARTICLE_LIGHT_RATIO`` x
#     the typical spot photons (one particle's light, not two: on the binding movie the
#     lobes of one streak hold 0.90-1.10 x, two particles 3-6 px apart 1.77-2.08 x, 5th-95th
#     percentiles) and the two-spot model beats the streak by at most
#     ``MERGE_MAX_PAIR_GAIN`` (a Brownian path is only roughly a uniform segment, so the
#     shape test is loose and the light decides); or
#   * without one: the streak explains the pixels at least as well as two spots.
# A spot joins at most one streak (the most streak-like pairs first). The merged row keeps
# the brighter lobe's index; the dimmer lobe's row is removed.
#
# Splitting then: every spot (not merged) whose round fit is wider than
# ``SPLIT_WIDTH_GATE`` x the PSF (pairs and streaks both widen it; a sharp spot is never
# touched) is refitted, in a window one pixel larger and with the other spots' light known,
# with a round spot (5 parameters), a streak (a uniform segment of light, 7 parameters) and
# two round spots (8 parameters, started on the fit and on the largest 3 x 3 residual of the
# round model). It is split
# into two emitters when the two emitters are >= ``SPLIT_MIN_SEPARATION_PX`` apart, each is
# significant on its own (``SPLIT_MIN_EMITTER_SNR``), neither lands on another detected
# spot, and either
#   * shape alone: the two-spot model beats *both* one-spot models by
#     ``SPLIT_MIN_LOGLIK_GAIN`` -- testing against the streak model is what keeps fast,
#     blurred particles whole, since a streak is two-lobed as much as a pair is; or
#   * shape plus light: the spot holds >= ``SPLIT_BRIGHTNESS_RATIO`` x the photons of the
#     frame's typical single spot, is not round (gain over the round model >
#     ``SPLIT_MIN_GAIN_BRIGHT``) and both emitters are sharp (``SPLIT_MAX_PAIR_WIDTH``).
#     Below ~2.5 px a pair and a streak have nearly the same shape (gain of the two-spot
#     over the streak model: median 2 at 2 px, 8 at 2.5 px, 24 at 3 px, against a 99th
#     percentile of 28 for D = 3 um^2/s streaks, all at 1,000 photons), and only the
#     doubled light tells them apart.
# With a brightness reference, a spot with no other spot within ``MERGE_MAX_DISTANCE_PX``
# that holds at most ``SINGLE_PARTICLE_LIGHT_RATIO`` x the typical photons is never split,
# whatever its shape: such shape-only splits were one streak cut in two in 20 of 20 cases
# (field and binding movies, 120 frames each, measured without the merge); next to another
# spot, where the light is shared out between fits, 3 of 5 were, and the two particles of a
# close pair can hold less than that in their fit, so those are left to the shape rule.
# Spots next to a streak (merged or tested) or a split pair are then refitted with that
# neighbour's light from its better model (the segment, or the two emitters). Spots that
# are not wide, not merged and have no such neighbour come back bit for bit as
# ``localize_arrays`` fitted them, so isolated spots -- those the training samples are made
# of -- are unchanged. The brightness reference ("typical spot photons") is the median
# photons of the frame's round spots with no other spot within ``MERGE_MAX_DISTANCE_PX``
# (:func:`_reference_photons`). Limits: a
# single particle twice as bright as the frame's typical one and blurred can be split; a
# pair of fast (blurred) particles closer than ~3 px is only split on shape evidence;
# frames with fewer than ``SPLIT_MIN_SPOTS_FOR_REFERENCE`` sharp spots have no brightness
# reference and use the shape rules only. Two particles 3-7 px apart that together hold
# no more than 1.4 x the typical light (e.g. two dim ones) and look streak-like are merged;
# a streak whose dim tail lies beyond the fitted segment, and streaks with three maxima,
# are only partly merged (pairs only).

#: A round fit wider than this multiple of the PSF sigma is tested for two emitters.
SPLIT_WIDTH_GATE = 1.1
#: Shape evidence alone: minimum log-likelihood gain of the two-spot model over the
#: better of the round and streak models. A motion-blurred streak (D = 3 um^2/s, 10 ms
#: frames) exceeds 30 in about 1 % of frames; two equal spots 3.5 px apart nearly always do.
SPLIT_MIN_LOGLIK_GAIN = 30.0
#: Shape plus brightness: a spot carrying at least this multiple of the frame's typical
#: spot photons (median of the untested, round fits) is split when the two-spot model beats the
#: round one by ``SPLIT_MIN_GAIN_BRIGHT`` (it is not round) -- below ~2.5 px two spots and a
#: streak have nearly the same shape, and only the doubled light tells them apart.
SPLIT_BRIGHTNESS_RATIO = 1.6
SPLIT_MIN_GAIN_BRIGHT = 10.0
#: ... and when the two spots are sharp (fitted width <= this multiple of the PSF sigma):
#: the halves of a long streak (D > 3 um^2/s) are themselves blurred, two particles are not.
SPLIT_MAX_PAIR_WIDTH = 1.2
#: Frames with fewer spots than this use no brightness reference (shape evidence only).
SPLIT_MIN_SPOTS_FOR_REFERENCE = 8
#: The two emitters of a split must be at least this far apart (px).
SPLIT_MIN_SEPARATION_PX = 1.0
#: Each emitter's photons must stand this many standard deviations above the background
#: light under its PSF: ``N / sqrt(N + 4 pi s^2 (b + r^2)) >= SPLIT_MIN_EMITTER_SNR``.
SPLIT_MIN_EMITTER_SNR = 5.0
#: Iterations of the model-comparison fits: the log-likelihoods are compared against
#: margins of 10 - 30, so they need not be converged to 1e-5; accepted splits are then
#: polished with the full ``max_iterations``.
TEST_ITERATIONS = 12

#: Two spots closer than this (px) are tested as the two lobes of one streak (the lobes of
#: D = 3-6 um^2/s streaks at 10 ms frames and 100 nm pixels lie 3-6 px apart).
MERGE_MAX_DISTANCE_PX = 7.0
#: Light of at most this multiple of the frame's typical spot photons is one particle's
#: (the geometric middle of one and two particles' light): two spots holding it together
#: are merged (with the shape test below), one spot holding it is never split.
SINGLE_PARTICLE_LIGHT_RATIO = 1.4
#: ... and the two-spot model beats the streak model by at most this log-likelihood margin
#: (a Brownian path is not a uniform segment: on the binding movie the lobes of one
#: particle's streak gave a median margin of 16, 95th percentile 51; two particles 3-6 px
#: apart a median of 71).
MERGE_MAX_PAIR_GAIN = 60.0
#: Without a brightness reference (fewer than SPLIT_MIN_SPOTS_FOR_REFERENCE sharp spots),
#: merge only when the streak (7 parameters) explains the pixels at least as well as two
#: spots (8 parameters).
MERGE_SHAPE_ONLY_MAX_GAIN = 0.0
#: Both spots must lie within this distance (px) of the fitted streak's segment.
MERGE_MAX_OFF_SEGMENT_PX = 1.5
#: The streak fit starts with this multiple of the lobe-to-lobe vector as its segment.
MERGE_SEGMENT_START_STRETCH = 1.4


def _emitter_snr(photons: np.ndarray, background: np.ndarray, sigma: np.ndarray, read_var: float) -> np.ndarray:
    """Significance of a spot's photons over the background light under its PSF (see SPLIT_MIN_EMITTER_SNR)."""
    noise = photons + 4.0 * math.pi * sigma**2 * (np.maximum(background, 0.0) + read_var)
    return photons / np.sqrt(np.maximum(noise, 1e-12))


def _windows_around(
    frame: np.ndarray, points_yx: np.ndarray, half: int, read_var: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit windows of half-width ``half`` around the pixels nearest ``points_yx`` ``(K, 2)``.

    Returns the window centres ``(K, 2)`` int (clipped into the frame), the data ``(K, W*W)``
    (photons plus the read variance, clipped at 0), the mask of pixels inside the frame
    ``(K, W*W)`` float and the pixel offsets ``(W,)``.
    """
    height, width = frame.shape
    centres = np.rint(points_yx).astype(np.int64)
    centres[:, 0] = np.clip(centres[:, 0], 0, height - 1)
    centres[:, 1] = np.clip(centres[:, 1], 0, width - 1)
    windows, valid, offsets = gather_windows(frame, centres, half)
    k = len(centres)
    data = np.clip(windows + read_var, 0.0, None).reshape(k, -1)
    return centres, data, valid.reshape(k, -1).astype(np.float64), offsets


def _light_sources(
    positions: np.ndarray,
    photons: np.ndarray,
    widths: np.ndarray,
    shapes: tuple[np.ndarray, np.ndarray],
    rows: np.ndarray,
) -> Emitters:
    """Point sources of the light of table rows ``rows``: ``positions`` ``(K, 2)``, ``photons``
    and ``widths`` ``(K,)`` cover the whole table; ``shapes`` = ``(kind, segment)`` of those rows
    only. The sources' ``owner`` is a table row."""
    kind, segment = shapes
    emitters = emitters_of(positions[rows], photons[rows], widths[rows], kind, segment)
    return emitters._replace(owner=rows[emitters.owner])


def resolve_overlaps(
    frame_photons: np.ndarray,
    fitted: dict[str, np.ndarray],
    acquisition: Acquisition,
    *,
    window_half_px: int | None = None,
    max_iterations: int = 50,
    min_loglik_gain: float = SPLIT_MIN_LOGLIK_GAIN,
    merge_streaks: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Second pass over one frame's fits: merge streak halves, split two-emitter spots, refit neighbours.

    See the comment block above this function for the method. Spots whose round fit is
    not wider than ``SPLIT_WIDTH_GATE`` x the PSF, that are not merged with a neighbour and
    that have no streak or split spot within ``3 * window_half_px`` px come back unchanged
    (bit for bit).

    Parameters
    ----------
    frame_photons
        ``(Y, X)`` frame in photo-electrons.
    fitted
        Output of :func:`localize_arrays` for this frame: dict of ``(K,)`` arrays.
    acquisition, window_half_px, max_iterations
        As for :func:`~napari_spt_diffusion.tracking.localize.localize_arrays`.
    min_loglik_gain
        Log-likelihood margin of the two-spot model over the better one-spot model.
    merge_streaks
        Test pairs of spots for being the two lobes of one motion-blurred streak and
        merge them (see :func:`_merge_streak_pairs`); ``False`` gives the pass without it.

    Returns
    -------
    (table, parent)
        ``table``: dict of ``(K - M + S,)`` arrays with the :data:`LOCALIZATION_COLUMNS`
        keys. Each of the ``M`` merged pairs keeps the row of its brighter spot, which now
        holds the streak: its centre, its photons, the width of a round spot with the same
        spread (``sqrt(s^2 + L^2 / 12)``, ``L`` the streak length) and the Mortensen
        precision of such a spot; the dimmer spot's row is removed. Each of the ``S``
        split spots keeps its row (now its first emitter) and its second emitter is
        appended at the end; a split emitter's ``loc_precision_nm`` comes from the inverse
        Fisher information of the joint two-spot fit. ``parent``: ``(K - M + S,)`` index of
        the input row each output row comes from (a merged row: its brighter spot's).
    """
    frame = np.asarray(frame_photons)
    if not np.issubdtype(frame.dtype, np.floating):
        frame = frame.astype(np.float64)  # windows are gathered in float64 anyway: no copy of a float frame
    k = len(fitted["y_px"])
    ctx = FitContext.for_frame(frame, acquisition, window_half_px, max_iterations)
    state = SpotState.start(fitted)
    if k == 0:
        return state.table, state.parent
    positions, finite = state.positions(), state.finite()
    wide = finite & (state.table["sigma_px"] > SPLIT_WIDTH_GATE * ctx.sigma_psf)
    reference = _reference_photons(positions, state.table["photons"], finite & state.table["fit_ok"] & ~wide)
    merged_any = False
    if merge_streaks and finite.sum() >= 2:
        with np.errstate(all="ignore"):
            merges = _merge_streak_pairs(ctx, state.table, finite, reference)
        if len(merges.keep):
            merged_any = True
            state = _apply_merges(state, merges, acquisition)
            positions, finite = state.positions(), state.finite()
    tested = np.flatnonzero(finite & (state.table["sigma_px"] > SPLIT_WIDTH_GATE * ctx.sigma_psf) & (state.kind == 0))
    if tested.size == 0 and not merged_any:
        return state.table, state.parent
    if tested.size:
        state = _split_pairs(ctx, state, tested, reference, min_loglik_gain)
    with np.errstate(all="ignore"):
        _refit_neighbours(ctx, state)
    return state.table, state.parent


def _merge_streak_pairs(
    ctx: FitContext, table: dict[str, np.ndarray], finite: np.ndarray, reference: float | None
) -> Merges:
    """Find pairs of spots that are the two lobes of one streak (see the comment block above
    :func:`resolve_overlaps`).

    ``table``: the frame's fits (dict of ``(K,)`` arrays), ``finite`` ``(K,)`` usable rows,
    ``reference`` the typical spot photons or None. Returns the :class:`Merges`.
    """
    frame, half, sigma_psf, max_iterations = ctx.frame, ctx.half, ctx.sigma_psf, ctx.max_iterations
    read_var, sigma_lo, sigma_hi = ctx.limits.read_var, ctx.limits.sigma_lo, ctx.limits.sigma_hi
    empty = Merges(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 7)), np.zeros(0, dtype=bool))
    rows = np.flatnonzero(finite)
    positions = np.column_stack([table["y_px"], table["x_px"]])
    pairs = cKDTree(positions[rows]).query_pairs(MERGE_MAX_DISTANCE_PX, output_type="ndarray")
    if len(pairs) == 0:
        return empty
    # every close pair is fitted: the round fits' photons cannot pre-select, since two fits
    # of one streak's overlapping lobes both count the light they share
    first, second = rows[pairs[:, 0]], rows[pairs[:, 1]]
    photons = table["photons"]
    m = len(first)
    whalf = half + int(math.ceil(MERGE_MAX_DISTANCE_PX / 2.0))
    n1, n2 = np.maximum(photons[first], 1.0), np.maximum(photons[second], 1.0)
    w1 = (n1 / (n1 + n2))[:, None]
    middle = w1 * positions[first] + (1.0 - w1) * positions[second]  # photon-weighted centre
    centres, data, mask, offsets = _windows_around(frame, middle, whalf, read_var)
    # the other spots' light (round fits) is known
    zeros = np.zeros(len(rows), dtype=np.int64)
    emitters = _light_sources(positions, table["photons"], table["sigma_px"], (zeros, np.zeros((len(rows), 2))),
                              rows)
    extra = read_var + neighbour_light_of(centres, first, emitters, offsets, 3.0 * whalf, second_index=second)
    r1, r2 = positions[first] - centres, positions[second] - centres
    b0 = 0.5 * (table["background"][first] + table["background"][second])
    s0 = np.clip(0.5 * (table["sigma_px"][first] + table["sigma_px"][second]), sigma_lo, sigma_hi)

    iterations = int(max_iterations)
    p_pair, ll_pair, _, _ = fit_pairs(data, mask, offsets, np.column_stack([r1, n1, r2, n2, b0, s0]), ctx.limits,
                                      extra, iterations)
    # the streak starts on the two lobes, its ends beyond them (the lobes of a uniform streak
    # lie inside it)
    seg_start = np.column_stack([middle - centres, n1 + n2, b0, np.full(m, sigma_psf),
                                 MERGE_SEGMENT_START_STRETCH * (r2 - r1)])
    p_seg, ll_seg, _, converged = fit_segments(data, mask, offsets, seg_start, ctx.limits, extra, iterations)
    # a failed two-spot fit gives no shape evidence either way: no merge
    gain = np.where(np.isfinite(ll_pair), ll_pair - ll_seg, np.inf)
    # the streak must run through both spots and stay inside the window
    ends = p_seg[:, None, 0:2] + np.array([-0.5, 0.5])[None, :, None] * p_seg[:, None, 5:7]
    through = (
        (_distance_to_segment(r1, ends[:, 0], ends[:, 1]) <= MERGE_MAX_OFF_SEGMENT_PX)
        & (_distance_to_segment(r2, ends[:, 0], ends[:, 1]) <= MERGE_MAX_OFF_SEGMENT_PX)
        & np.all(np.abs(ends) < whalf - 0.5, axis=(1, 2))
    )
    ok = np.isfinite(ll_seg) & np.all(np.isfinite(p_seg), axis=1) & through
    if reference is not None:
        # the pair's light from the joint fits (separate round fits of overlapping lobes
        # count their shared light twice)
        light = np.maximum(p_pair[:, 2] + p_pair[:, 5], p_seg[:, 2])
        merge = ok & (light <= SINGLE_PARTICLE_LIGHT_RATIO * reference) & (gain <= MERGE_MAX_PAIR_GAIN)
    else:
        merge = ok & (gain <= MERGE_SHAPE_ONLY_MAX_GAIN)
    # each spot joins at most one streak: the most streak-like pairs first
    used = np.zeros(len(table["y_px"]), dtype=bool)
    chosen = []
    for i in np.flatnonzero(merge)[np.argsort(gain[merge], kind="stable")]:
        if not (used[first[i]] or used[second[i]]):
            used[first[i]] = used[second[i]] = True
            chosen.append(i)
    chosen = np.asarray(chosen, dtype=np.int64)
    if chosen.size == 0:
        return empty
    brighter = photons[first[chosen]] >= photons[second[chosen]]
    keep = np.where(brighter, first[chosen], second[chosen])
    drop = np.where(brighter, second[chosen], first[chosen])
    p_abs = p_seg[chosen].copy()
    p_abs[:, 0:2] += centres[chosen]
    return Merges(keep, drop, p_abs, converged[chosen])


def _distance_to_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance ``(K,)`` from each point ``(K, 2)`` to the segment ``a``-``b`` (each ``(K, 2)``)."""
    ab = b - a
    length2 = np.sum(ab * ab, axis=1)
    t = np.clip(np.sum((points - a) * ab, axis=1) / np.maximum(length2, 1e-12), 0.0, 1.0)
    nearest = a + t[:, None] * ab
    return np.hypot(points[:, 0] - nearest[:, 0], points[:, 1] - nearest[:, 1])


def _apply_merges(state: SpotState, merges: Merges, acquisition: Acquisition) -> SpotState:
    """Write each merged streak into its kept row and remove the dropped rows.

    The kept row gets the streak's centre and photons, the width ``sqrt(s^2 + L^2 / 12)`` of
    a round spot with the same spread and that spot's Mortensen precision; ``kind`` 1, its
    segment vector and PSF width are recorded for the neighbours' refits. Returns the
    updated state.
    """
    out, kind, segment, streak_width = state.table, state.kind, state.segment, state.streak_width
    keep, drop, p_seg, converged = merges
    s, vector = p_seg[:, 4], p_seg[:, 5:7]
    equivalent = np.sqrt(s**2 + np.sum(vector**2, axis=1) / 12.0)
    out["y_px"][keep], out["x_px"][keep] = p_seg[:, 0], p_seg[:, 1]
    out["photons"][keep], out["background"][keep] = p_seg[:, 2], p_seg[:, 3]
    out["sigma_px"][keep] = equivalent
    out["loc_precision_nm"][keep] = mortensen_precision_nm(
        p_seg[:, 2], p_seg[:, 3], acquisition.px_to_nm(equivalent), acquisition.pixel_size_nm, acquisition.read_noise_e)
    out["fit_ok"][keep] = converged
    kind[keep], segment[keep], streak_width[keep] = 1, vector, s
    remain = np.ones(len(state.parent), dtype=bool)
    remain[drop] = False
    out = {c: out[c][remain] for c in LOCALIZATION_COLUMNS}
    return SpotState(out, state.parent[remain], kind[remain], segment[remain], streak_width[remain])


def _reference_photons(positions: np.ndarray, photons: np.ndarray, round_: np.ndarray) -> float | None:
    """A single particle's light in this frame (photons), or None when too few spots tell it.

    The median photons of the round spots (``round_`` ``(K,)``: fitted, not wide) that have
    no other spot within ``MERGE_MAX_DISTANCE_PX``, which are neither pairs nor streaks nor
    the lobes of a streak (in a frame where half the particles are fast, those lobes are
    round, hold about half a particle's light each and would otherwise pull the median
    down); with fewer than ``SPLIT_MIN_SPOTS_FOR_REFERENCE`` of them, the median over all
    round spots; with fewer round spots than that, None.
    """
    rows = np.flatnonzero(round_)
    if rows.size < SPLIT_MIN_SPOTS_FOR_REFERENCE:
        return None
    finite = np.flatnonzero(np.all(np.isfinite(positions), axis=1))
    alone = rows
    if finite.size > 1:
        distance, _ = cKDTree(positions[finite]).query(positions[rows], k=2)
        alone = rows[distance[:, 1] > MERGE_MAX_DISTANCE_PX]
    if alone.size >= SPLIT_MIN_SPOTS_FOR_REFERENCE:
        return float(np.median(photons[alone]))
    return float(np.median(photons[rows]))


def _split_pairs(
    ctx: FitContext, state: SpotState, tested: np.ndarray, reference: float | None, min_loglik_gain: float
) -> SpotState:
    """Test the wide spots ``tested`` (row indices) for two emitters and split those that pass
    (see the comment block).

    Returns the updated state; a tested spot that the streak model explains best becomes
    ``kind`` 1 with its segment vector.
    """
    height, width = ctx.frame.shape
    sigma_psf, read_var = ctx.sigma_psf, ctx.limits.read_var
    kind, segment, streak_width = state.kind, state.segment, state.streak_width
    positions, finite = state.positions(), state.finite()
    with np.errstate(all="ignore"):
        models = _test_spots(replace(ctx, half=ctx.half + 1), state, positions, tested, finite, reference)
    ll_round, ll_seg, ll_pair, p_seg, p_pair, pair_fisher, pair_ok, centres = models
    kind[tested[ll_seg > ll_round]] = 1
    segment[tested] = p_seg[:, 5:7]
    snr1 = _emitter_snr(p_pair[:, 2], p_pair[:, 6], p_pair[:, 7], read_var)
    snr2 = _emitter_snr(p_pair[:, 5], p_pair[:, 6], p_pair[:, 7], read_var)
    separation = np.hypot(p_pair[:, 0] - p_pair[:, 3], p_pair[:, 1] - p_pair[:, 4])
    bright = np.zeros(len(tested), dtype=bool)
    if reference is not None:
        bright = (
            (p_pair[:, 2] + p_pair[:, 5] >= SPLIT_BRIGHTNESS_RATIO * reference)
            & (ll_pair - ll_round > SPLIT_MIN_GAIN_BRIGHT)
            & (p_pair[:, 7] <= SPLIT_MAX_PAIR_WIDTH * sigma_psf)
        )
    split = (
        pair_ok
        & ((ll_pair - np.maximum(ll_round, ll_seg) > float(min_loglik_gain)) | bright)
        & (separation >= SPLIT_MIN_SEPARATION_PX)
        & (np.minimum(snr1, snr2) >= SPLIT_MIN_EMITTER_SNR)
    )
    abs1 = centres + p_pair[:, 0:2]
    abs2 = centres + p_pair[:, 3:5]
    if reference is not None:
        # a spot alone (no other spot within MERGE_MAX_DISTANCE_PX) holding about one
        # particle's light is one (blurred) particle, whatever its shape; next to another spot
        # the light is shared out between the fits and tells less
        alone = cKDTree(positions[finite]).query_ball_point(positions[tested], MERGE_MAX_DISTANCE_PX,
                                                             return_length=True) == 1
        split &= ~alone | (p_pair[:, 2] + p_pair[:, 5] > SINGLE_PARTICLE_LIGHT_RATIO * reference)
    inside2 = (abs2[:, 0] >= -0.5) & (abs2[:, 0] < height - 0.5) & (abs2[:, 1] >= -0.5) & (abs2[:, 1] < width - 0.5)
    split &= inside2
    # an emitter that lands on another detected spot is that spot, seen twice
    others = np.flatnonzero(finite)
    if split.any() and others.size > 1:
        tree = cKDTree(positions[others])
        for emitter in (abs1, abs2):
            hits = tree.query_ball_point(emitter, SPLIT_MIN_SEPARATION_PX * 1.5)
            split &= np.array([all(others[j] == tested[i] for j in h) for i, h in enumerate(hits)], dtype=bool)
    out, parent = state.table, state.parent
    if np.any(split):
        n_new = int(split.sum())
        out, parent = _apply_splits(state, tested[split], (abs1[split], abs2[split]), p_pair[split],
                                    pair_fisher[split], ctx.acquisition)
        kind = np.concatenate([kind, np.full(n_new, 0)])
        kind[tested[split]] = 0
        segment = np.concatenate([segment, np.zeros((n_new, 2))])
        streak_width = np.concatenate([streak_width, np.full(n_new, np.nan)])
    return SpotState(out, parent, kind, segment, streak_width)


def _test_spots(
    ctx: FitContext,
    state: SpotState,
    positions: np.ndarray,
    tested: np.ndarray,
    finite: np.ndarray,
    reference: float | None,
) -> tuple[np.ndarray, ...]:
    """Fit the round, streak and two-spot models to the tested spots (see :func:`resolve_overlaps`).

    The other spots' light is known: round fits, and merged streaks (``state.kind`` 1, with
    their ``segment`` vectors and ``streak_width``) as segments. ``positions`` ``(K, 2)``
    and ``finite`` ``(K,)`` describe ``state.table``'s rows. Returns log-likelihoods ``(T,)``
    of the three models, streak params ``(T, 7)``, pair params ``(T, 8)`` (positions
    relative to ``centres``), pair Fisher ``(T, 8, 8)``, pair convergence ``(T,)`` and the
    window centres ``(T, 2)`` int.
    """
    frame, half, sigma_psf, max_iterations = ctx.frame, ctx.half, ctx.sigma_psf, ctx.max_iterations
    limits = ctx.limits
    read_var, sigma_lo, sigma_hi = limits.read_var, limits.sigma_lo, limits.sigma_hi
    table, kind, segment, streak_width = state.table, state.kind, state.segment, state.streak_width
    centres, data, mask, offsets = _windows_around(frame, positions[tested], half, read_var)
    t = len(tested)
    # the other spots' light (round fits, merged streaks as segments) is known
    others = np.flatnonzero(finite)
    widths = np.where(np.isfinite(streak_width), streak_width, table["sigma_px"])
    emitters = _light_sources(positions, table["photons"], widths, (kind[others], segment[others]), others)
    light = neighbour_light_of(centres, tested, emitters, offsets, 3.0 * half)
    extra = read_var + light
    rel = positions[tested] - centres
    n0 = np.maximum(table["photons"][tested], 1.0)
    b0 = table["background"][tested]
    s0 = np.clip(table["sigma_px"][tested], sigma_lo, sigma_hi)
    start = np.column_stack([rel, n0, b0, s0])
    test_iterations = min(int(max_iterations), TEST_ITERATIONS)
    p_round, _ = fit_spots(data, mask, offsets, start, limits, test_iterations, extra=light)
    ll_round = spot_score(p_round, offsets, data, mask, extra)[0]
    mu_round = spot_model_and_jacobian(p_round, offsets)[0] + extra
    # the largest residual (3 x 3 sums) marks the second lobe of a pair or streak
    residual = ((data - mu_round) * mask).reshape(t, 2 * half + 1, 2 * half + 1)
    pad = np.pad(residual, ((0, 0), (1, 1), (1, 1)))
    box = sum(pad[:, i : i + 2 * half + 1, j : j + 2 * half + 1] for i in range(3) for j in range(3))
    peak = np.unravel_index(np.argmax(box.reshape(t, -1), axis=1), box.shape[1:])
    lobe = np.column_stack(peak).astype(np.float64) - half
    fit = p_round[:, 0:2]
    direction = lobe - fit
    length = np.hypot(direction[:, 0], direction[:, 1])
    unit = np.where(length[:, None] > 1e-6, direction / np.maximum(length, 1e-6)[:, None], np.array([0.0, 1.0]))
    n_r, b_r, s_r = p_round[:, 2], p_round[:, 3], p_round[:, 4]
    # streak: centre at the round fit, length from the excess width (uniform segment: L^2/12)
    seg_len = np.sqrt(12.0 * np.maximum(s_r**2 - sigma_psf**2, 0.05))
    seg_start = np.column_stack([fit, n_r, b_r, np.full(t, sigma_psf), unit * seg_len[:, None]])

    # two spots: one on the lobe of the residual, one on the round fit moved away from it (a
    # second start, symmetric about the round fit, changed the outcome of < 2 % of 3.5 px pairs)
    start = np.column_stack([fit - 0.25 * direction, 0.7 * n_r, lobe, 0.3 * n_r, b_r, np.full(t, sigma_psf)])
    p_pair, ll_pair, fisher, _ = fit_pairs(data, mask, offsets, start, limits, extra, test_iterations)
    ll_pair = np.where(np.isfinite(ll_pair), ll_pair, -np.inf)
    # polish the promising two-spot fits (those near enough to passing a split rule) to convergence
    gain = ll_pair - ll_round
    promising = gain > SPLIT_MIN_LOGLIK_GAIN - 5.0
    if reference is not None:
        promising |= (
            (gain > SPLIT_MIN_GAIN_BRIGHT - 2.0)
            & (p_pair[:, 2] + p_pair[:, 5] >= 0.9 * SPLIT_BRIGHTNESS_RATIO * reference)
            & (p_pair[:, 7] <= 1.1 * SPLIT_MAX_PAIR_WIDTH * sigma_psf)
        )
    promising = np.flatnonzero(promising)
    ok = np.zeros(t, dtype=bool)
    if promising.size:
        p_pol, ll_pol, f_pol, ok_pol = fit_pairs(data[promising], mask[promising], offsets, p_pair[promising],
                                                 limits, extra[promising], int(max_iterations))
        p_pair[promising], ll_pair[promising], fisher[promising], ok[promising] = p_pol, ll_pol, f_pol, ok_pol
    # the two-spot model must not sit on the window's edge (a neighbour's light, not this spot's)
    ok &= np.all(np.abs(p_pair[:, [0, 1, 3, 4]]) < half - 0.5, axis=1)
    # The streak model is needed where it can change a decision -- the shape rule, which
    # needs ll_pair - ll_round > SPLIT_MIN_LOGLIK_GAIN anyway -- or where the spot has a
    # neighbour that will use its light. Elsewhere it is left unfitted (-inf: not a streak).
    crowded = cKDTree(positions[finite]).query_ball_point(positions[tested], 3.0 * half, return_length=True) > 1
    need = np.flatnonzero(crowded | (ll_pair - ll_round > SPLIT_MIN_LOGLIK_GAIN))
    p_seg = seg_start.copy()
    ll_seg = np.full(t, -np.inf)
    if need.size:
        p_seg[need], ll_seg[need], _, _ = fit_segments(data[need], mask[need], offsets, seg_start[need], limits,
                                                        extra[need], test_iterations)
    ll_seg = np.where(np.isfinite(ll_seg), ll_seg, -np.inf)
    ll_round = np.where(np.isfinite(ll_round), ll_round, -np.inf)
    return ll_round, ll_seg, ll_pair, p_seg, p_pair, fisher, ok, centres


def _apply_splits(
    state: SpotState,
    rows: np.ndarray,
    emitters_abs: tuple[np.ndarray, np.ndarray],
    p_pair: np.ndarray,
    fisher: np.ndarray,
    acquisition: Acquisition,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Replace each split row by its first emitter and append the second one.

    ``rows`` ``(S,)`` split rows; ``emitters_abs`` the two emitters' absolute positions,
    each ``(S, 2)`` px; ``p_pair`` ``(S, 8)`` and ``fisher`` ``(S, 8, 8)`` the joint fits.
    Returns the new ``(table, parent)``.
    """
    out, parent = state.table, state.parent
    abs1, abs2 = emitters_abs
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(fisher)
    var1 = np.clip(0.5 * (cov[:, 0, 0] + cov[:, 1, 1]), 0.0, None)
    var2 = np.clip(0.5 * (cov[:, 3, 3] + cov[:, 4, 4]), 0.0, None)
    precision1 = acquisition.px_to_nm(np.sqrt(var1))
    precision2 = acquisition.px_to_nm(np.sqrt(var2))
    out["y_px"][rows], out["x_px"][rows] = abs1[:, 0], abs1[:, 1]
    out["photons"][rows] = p_pair[:, 2]
    out["background"][rows] = p_pair[:, 6]
    out["sigma_px"][rows] = p_pair[:, 7]
    out["loc_precision_nm"][rows] = precision1
    out["fit_ok"][rows] = True
    new = {
        "y_px": abs2[:, 0], "x_px": abs2[:, 1], "photons": p_pair[:, 5], "background": p_pair[:, 6],
        "sigma_px": p_pair[:, 7], "loc_precision_nm": precision2, "fit_ok": np.ones(len(rows), dtype=bool),
    }
    out = {c: np.concatenate([out[c], np.asarray(new[c], dtype=out[c].dtype)]) for c in LOCALIZATION_COLUMNS}
    return out, np.concatenate([parent, parent[rows]])


def _refit_neighbours(ctx: FitContext, state: SpotState) -> None:
    """Refit the spots within ``3 * half`` px of a streak or a split pair, every neighbour's light known.

    A streak's light is its segment model's, a split pair's its two emitters', any other
    spot's its round fit's; the refitted spot's own window and start are those of a round
    fit around its current position (see :class:`SpotState` for ``kind``, ``segment``,
    ``streak_width`` and ``parent``). Updates ``state.table`` in place (a refit that goes
    astray keeps the previous values).
    """
    frame, half, max_iterations, acquisition = ctx.frame, ctx.half, ctx.max_iterations, ctx.acquisition
    limits = ctx.limits
    read_var, sigma_lo, sigma_hi = limits.read_var, limits.sigma_lo, limits.sigma_hi
    out, kind, segment, streak_width, parent = state.table, state.kind, state.segment, state.streak_width, state.parent
    k = len(out["y_px"])
    positions = np.column_stack([out["y_px"], out["x_px"]])
    finite = np.all(np.isfinite(positions), axis=1) & np.isfinite(out["sigma_px"]) & np.isfinite(out["photons"])
    # spots whose light model changed: streaks and split pairs (a tested spot that stays a
    # round spot keeps the light its neighbours were already fitted with)
    changed = (kind != 0) | (np.bincount(parent, minlength=k)[parent] > 1)
    targets = np.flatnonzero(finite & ~changed)
    if targets.size == 0 or not np.any(changed & finite):
        return
    tree = cKDTree(positions[changed & finite])
    targets = targets[tree.query_ball_point(positions[targets], 3.0 * half, return_length=True) > 0]
    if targets.size == 0:
        return
    centres, data, mask, offsets = _windows_around(frame, positions[targets], half, read_var)
    sources = np.flatnonzero(finite)
    widths = np.where(np.isfinite(streak_width), streak_width, out["sigma_px"])
    emitters = _light_sources(positions, out["photons"], widths, (kind[sources], segment[sources]), sources)
    light = neighbour_light_of(centres, targets, emitters, offsets, 3.0 * half)
    start = np.column_stack([positions[targets] - centres, np.maximum(out["photons"][targets], 1.0),
                             out["background"][targets], np.clip(out["sigma_px"][targets], sigma_lo, sigma_hi)])
    params, converged = fit_spots(data, mask, offsets, start, limits, max_iterations, extra=light)
    sane = (
        np.all(np.isfinite(params), axis=1)
        & np.all(np.abs(params[:, :2] - start[:, :2]) <= MAX_SHIFT_PX, axis=1)
        & (params[:, 4] > sigma_lo * 1.001) & (params[:, 4] < sigma_hi * 0.999)
    )
    rows = targets[sane]
    p = params[sane]
    out["y_px"][rows] = centres[sane, 0] + p[:, 0]
    out["x_px"][rows] = centres[sane, 1] + p[:, 1]
    out["photons"][rows], out["background"][rows], out["sigma_px"][rows] = p[:, 2], p[:, 3], p[:, 4]
    out["loc_precision_nm"][rows] = mortensen_precision_nm(
        p[:, 2], p[:, 3], acquisition.px_to_nm(p[:, 4]), acquisition.pixel_size_nm, acquisition.read_noise_e)
    out["fit_ok"][rows] = converged[sane]
