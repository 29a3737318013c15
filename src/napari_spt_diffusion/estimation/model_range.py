"""Per track: does a track move faster, or slower, than the model was trained for?

A learned model answers inside the range of diffusion coefficients it was trained on. Beyond
it, it does not extrapolate: it reads the track as the nearest thing it knows. Measured on
our simulator (``benchmarks/reports/model_range.md``), the bundled ``aniso`` model, trained on
``D1`` of 0.05-6 um^2/s at 100 nm pixels and 10 ms frames, reads tracks of 9-14 um^2/s at
about 0.4 x and of 20-40 um^2/s at about 0.2 x, where the CVE reads them without bias. The
movie-wide guard (:mod:`.guard`) catches this only where such tracks dominate the movie; a few
fast molecules among slow ones would pass, each silently off by several times.

So each track's mean diffusivity ``D = (D1 + D2) / 2`` is tested against the range the model
saw, using only the covariance-based estimator (CVE), which is unbiased whatever the blur and the
localization noise (:mod:`.classical`): a track lies above the range when its CVE exceeds the
range's top by more than ``z`` standard deviations of the CVE *at* that top (one-sided test at
``confidence``, 95 % by default; :func:`~.classical.cve_variance_px2` gives the exact variance
for the track's length, localization noise and blur), and below it likewise. For such tracks
the classical values are reported instead of the model's, flagged ``beyond_model_range``. A track is
called faster only where a robust D from its median squared step (:func:`median_step_d_px2`) lies above the
top too: one jump where the links swap between two particles lifts a track's CVE far, its median step
little (on the independent renderer's movies of fast particles, slow tracks with one such jump were called
fast without it). A CVE far
below zero (beyond the 99.95 % quantile of its spread) fits no Brownian motion at all: such a track's links
swap between particles (short mislinked tracks of fast particles do this), and it is not called slower
than the range.

With ``confidence`` 0.95 a track exactly at the edge of the range is sent to the classical
values in 5 % of cases (which costs precision, not accuracy), and one far beyond it almost
always; with 30 frames a track must lie about 2-3 x above the top to be caught reliably
(``benchmarks/reports/model_range.md``), a longer track less.

The range (:func:`trained_mean_d_range_px2`) is in the model's own units, px^2/frame of its
input: that of its motion model (:data:`MEAN_D_RANGES_UM2_S`, converted at the card's training
acquisition), widened by the training range's ``pixel_scale`` (a larger pixel makes the same
motion smaller in px^2/frame) and by a motion prior, if the card names them. Few training tracks lie near
the extremes of such a widened range, and the model's reading thins out toward them. At the top the test
counts the whole range all the same (``aniso_any`` reads tracks of 9-14 um^2/s at its standard acquisition
about 0.87 x, of 14-20 about 0.79 x, its top being 16.7; a 30-frame track's CVE scatters by about 35 %, and a
model 13 % low is still the better estimate: a cut of both ends to the pixel scales that a quarter of the chunks
reach was tried, and at the top it sent more of those tracks to the noisier CVE). At the bottom the reading fails
fast instead: in its own units ``aniso_any`` reads tracks of 0.0085-0.0125 px^2/frame at 1.13 x, of
0.006-0.0085 at 1.26-1.35 x and of 0.0041-0.006 at 1.63-1.68 x, at PSF 1 px as at 2 px, where the CVE reads
0.92-1.00 x (``benchmarks/reports/model_range.md``, the sections on its reading at the bottom of its range). So the
bottom is taken at the 75th percentile of the training chunks' drawn pixel scales (:data:`LOW_EDGE_PIXEL_SHARE`; the
chunks at the base pixel, ``standard_share`` of them, not counted; 0.0085 px^2/frame for ``aniso_any``), not at
the largest (0.0041). A model run in PSF
units sees the movie's D times ``s^2`` (:mod:`.psf_units`), so the range in the movie's
px^2/frame is the model's divided by ``s^2``. Only the card's last training stage counts: a
warm start from a model trained on a wider range does not widen it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import gamma, norm, poisson

from ..acquisition import Acquisition
from ..simulation.trajectories import (
    BOUND_D_RANGE_UM2_S,
    D1_GRID_UM2_S,
    D2_OVER_D1_RANGE,
    UNBOUND_D1_RANGE_UM2_S,
)
from .classical import cve_variance_px2
from .guard import MIN_TRACKS

__all__ = ["MEAN_D_RANGES_UM2_S", "RangeCheck", "trained_mean_d_range_px2", "median_step_d_px2",
           "median_step_variance_px2", "d_from_step_variance", "range_sides", "tested", "check_tracks",
           "guard_left_out", "low_edge_pixel_scale", "DEFAULT_CONFIDENCE", "GUARD_TRIM", "LOW_EDGE_PIXEL_SHARE", "FLAG",
           "NEAR_FLAG"]

#: Range of a track's mean diffusivity ``(D1 + D2) / 2`` (um^2/s) that each motion model's simulation draws,
#: at its base acquisition (:mod:`~napari_spt_diffusion.simulation.trajectories`): ``aniso`` D1 over the
#: grid with ``D2 / D1`` in 0.1-1; ``binding`` bound (isotropic) to unbound; ``twostate`` two isotropic
#: states from the grid.
MEAN_D_RANGES_UM2_S: dict[str, tuple[float, float]] = {
    "aniso": (float(D1_GRID_UM2_S.min()) * (1.0 + D2_OVER_D1_RANGE[0]) / 2.0, float(D1_GRID_UM2_S.max())),
    "binding": (float(BOUND_D_RANGE_UM2_S[0]), float(UNBOUND_D1_RANGE_UM2_S[1])),
    "twostate": (float(D1_GRID_UM2_S.min()), float(D1_GRID_UM2_S.max())),
}
#: One-sided confidence with which a track must be shown outside the range.
DEFAULT_CONFIDENCE = 0.95
#: A track whose CVE lies further below zero than this one-sided quantile of its spread at the range's bottom
#: fits no Brownian motion (mislinked): it is not sent to the classical values as slower than the range.
CONSISTENT_CONFIDENCE = 0.9995
#: Where more tracks lie above the range than chance explains, the guard leaves out those the model reads above
#: this share of its top (below it: under its bottom divided by this): :meth:`RangeCheck.left_out_of_guard`.
GUARD_TRIM = 0.6
#: ... and more than this share of the tested tracks: the chance model counts too few flags where the localization
#: precision reads low (on the robustness grid's 0.7 px / 250-photon cell 6 of 1,000 tracks of 5-30 frames, all
#: inside the range, were flagged against 1.2 expected)
MIN_SHARE_BEYOND = 0.02
#: The low edge of a range widened by a training ``pixel_scale`` is taken at this quantile of the pixel scales the
#: training chunks drew (log-uniform; the chunks at the base pixel not counted), not at the largest
#: (:func:`trained_mean_d_range_px2`).
LOW_EDGE_PIXEL_SHARE = 0.75
#: The flag of a track whose classical values are reported for this reason.
FLAG = "beyond_model_range"
#: The flag of a track whose model values are reported although the model reads it near the edge of its range
#: beyond which more tracks were found than chance explains (left out of the guard: :func:`guard_left_out`).
NEAR_FLAG = "near_model_range_edge"


def trained_mean_d_range_px2(card: dict[str, Any]) -> tuple[float, float] | None:
    """``(low, high)`` mean diffusivity the model was trained on, px^2/frame of its input, or ``None``.

    ``None`` where the card names no motion model of :data:`MEAN_D_RANGES_UM2_S` (no check).
    """
    motion = card.get("motion_model")
    if motion not in MEAN_D_RANGES_UM2_S:
        return None
    training = card.get("training") or {}
    low, high = MEAN_D_RANGES_UM2_S[motion]
    prior = training.get("motion_prior")
    if prior and prior.get("d1_range_um2_s"):
        p_low, p_high = (float(v) for v in prior["d1_range_um2_s"])
        low, high = min(low, p_low * (1.0 + D2_OVER_D1_RANGE[0]) / 2.0), max(high, p_high)
    base = Acquisition(**{k: v for k, v in (card.get("training_acquisition") or {}).items()
                          if k in ("pixel_size_nm", "frame_interval_s")})
    low_px2, high_px2 = (float(base.diffusion_to_px2_per_frame(v)) for v in (low, high))
    scale = (training.get("acquisition_range") or {}).get("pixel_scale")
    if scale:  # a chunk's pixel `p` times the base's: the same motion is 1 / p^2 in its px^2/frame
        p_low, p_high = (float(v) for v in scale)
        low_px2, high_px2 = low_px2 / low_edge_pixel_scale(p_low, p_high) ** 2, high_px2 / p_low**2
    return low_px2, high_px2


def low_edge_pixel_scale(p_low: float, p_high: float) -> float:
    """The pixel scale behind the range's low edge: the :data:`LOW_EDGE_PIXEL_SHARE` quantile of the training
    chunks' pixel scales, drawn log-uniform in ``p_low``-``p_high`` (dimensionless)."""
    return float(np.exp(np.log(p_low) + LOW_EDGE_PIXEL_SHARE * (np.log(p_high) - np.log(p_low))))


def median_step_d_px2(positions_px: np.ndarray, loc_var_px2: Any, blur: float) -> np.ndarray:
    """``(N,)`` a robust D (px^2/frame) of each track from the median squared step: a jump where the links swap
    between particles moves it little, where it moves the CVE far.

    For Brownian steps each axis's step variance is ``2 D (1 - 2 R) + 2 sigma^2`` (``R`` the blur coefficient,
    ``sigma^2`` the localization variance), and the squared 2-D step ``r^2`` is that variance times a
    chi-square of two degrees of freedom, whose median is ``2 ln 2``. ``positions_px``: ``(N, T, 2)``, NaN rows
    for missing frames (steps across them are not counted); NaN for a track without a step. The sample median
    of few steps reads high, the more so the fewer the steps: as a confirmation of a flag above the range this
    errs on the side of the flag.
    """
    return d_from_step_variance(median_step_variance_px2(positions_px), loc_var_px2, blur)


def median_step_variance_px2(positions_px: np.ndarray) -> np.ndarray:
    """``(N,)`` each track's per-axis step variance (px^2) from its median squared 2-D step over ``2 ln 2``
    (:func:`median_step_d_px2`); ``positions_px`` ``(N, T, 2)``."""
    pos = np.asarray(positions_px, dtype=float)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: a track without a step
        r2 = np.sum(np.diff(pos, axis=1) ** 2, axis=2)
        return np.nanmedian(r2, axis=1) / (2.0 * np.log(2.0))


def d_from_step_variance(step_variance_px2: Any, loc_var_px2: Any, blur: float) -> np.ndarray:
    """D (px^2/frame) from a per-axis step variance: ``(variance - 2 sigma^2) / (2 (1 - 2 R))``."""
    return ((np.asarray(step_variance_px2, dtype=float) - 2.0 * np.asarray(loc_var_px2, dtype=float))
            / (2.0 * (1.0 - 2.0 * blur)))


def range_sides(
    d_cve_px2: Any, loc_var_px2: Any, n_displacements: Any, *, blur: float, low_px2: float, high_px2: float,
    confidence: float = DEFAULT_CONFIDENCE, d_median_px2: Any = None,
) -> np.ndarray:
    """Per track: +1 shown above ``high_px2``, -1 shown below ``low_px2``, 0 otherwise.

    Parameters
    ----------
    d_cve_px2
        ``(N,)`` the tracks' isotropic CVE (unclipped), movie px^2/frame.
    loc_var_px2
        ``(N,)`` localization variance per axis (px^2); NaN: the track is not tested.
    n_displacements
        ``(N,)`` frame-to-frame displacements behind each CVE (fewer than 3: not tested).
    blur
        Motion-blur coefficient ``R`` of the acquisition.
    low_px2, high_px2
        The range in the movie's px^2/frame.
    confidence
        One-sided confidence of each test.
    d_median_px2
        ``(N,)`` the tracks' :func:`median_step_d_px2`: a track is called faster than the range only where
        this, too, lies above its top (a jump where the links swap between particles, not the motion, can lift
        the CVE beyond it); ``None``: the CVE alone.
    """
    d = np.asarray(d_cve_px2, dtype=float)
    s2 = np.maximum(np.asarray(loc_var_px2, dtype=float), 0.0)
    k = np.asarray(n_displacements, dtype=float)
    z = float(norm.ppf(confidence))
    with np.errstate(invalid="ignore"):
        # the isotropic CVE averages two axes: half the 1-D variance, evaluated at the range's edge
        sd_high = np.sqrt(0.5 * cve_variance_px2(np.full_like(d, high_px2), s2, blur, k))
        sd_low = np.sqrt(0.5 * cve_variance_px2(np.full_like(d, low_px2), s2, blur, k))
        testable = tested(d, s2, k)
        above = testable & (d > high_px2 + z * sd_high)
        if d_median_px2 is not None:
            above &= np.asarray(d_median_px2, dtype=float) > high_px2
        # a CVE far below zero fits no Brownian motion (a track whose links swap between particles): not "slow";
        # and where the CVE scatters so much that even an immobile track would be called slow less than half the
        # time (low < z sd), the test only flags in-range tracks at its error rate: not made
        consistent = d > -float(norm.ppf(CONSISTENT_CONFIDENCE)) * sd_low
        below = testable & consistent & (low_px2 >= z * sd_low) & (d < low_px2 - z * sd_low)
    return np.where(above, 1, np.where(below, -1, 0)).astype(np.int8)


def tested(d_cve_px2: Any, loc_var_px2: Any, n_displacements: Any) -> np.ndarray:
    """``(N,)`` the tracks :func:`range_sides` tests: a finite CVE and localization variance, >= 3 displacements."""
    d = np.asarray(d_cve_px2, dtype=float)
    return np.isfinite(d) & np.isfinite(np.asarray(loc_var_px2, dtype=float)) & (np.asarray(n_displacements) >= 3)


@dataclass(frozen=True)
class RangeCheck:
    """The per-track range check of one movie.

    Attributes
    ----------
    low_um2_s, high_um2_s
        The model's trained range of ``(D1 + D2) / 2`` on this movie (um^2/s).
    above, below
        Track ids shown above / below it.
    n_tested
        Tracks tested.
    confidence
        One-sided confidence of each test.
    """

    low_um2_s: float
    high_um2_s: float
    above: tuple[int, ...]
    below: tuple[int, ...]
    n_tested: int
    confidence: float = DEFAULT_CONFIDENCE
    #: per tested track ``(localization variance px^2, displacements)``, the blur coefficient and px^2/frame per
    #: um^2/s of the movie: what :meth:`left_out_of_guard` needs to tell chance flags from a population beyond
    noise: dict[int, tuple[float, float]] = field(default_factory=dict, compare=False, repr=False)
    blur: float = field(default=1.0 / 6.0, compare=False, repr=False)
    px2_per_um2_s: float = field(default=1.0, compare=False, repr=False)

    @property
    def outside(self) -> frozenset[int]:
        """Ids of the tracks outside the range, either side."""
        return frozenset(self.above) | frozenset(self.below)

    def left_out_of_guard(self, model_mean_d_um2_s: dict[int, float], model_bias: float = 1.0) -> frozenset[int]:
        """Ids of the tracks the guard's population test leaves out, given the model's ``(D1 + D2) / 2`` per track
        (um^2/s of this movie) and its bias over the tracks inside the range (``model_bias``, the guard's factor
        over the tracks not flagged; 1: none), which :meth:`beyond_chance` divides the readings by.

        The tracks outside the range; and, where more tracks lie above it than chance explains
        (:meth:`beyond_chance`), every track the model reads above :data:`GUARD_TRIM` x the top (below it: under
        the bottom / :data:`GUARD_TRIM`). Leaving out only the tracks the CVE shows outside would keep the in-range
        tracks near the edge whose CVE happened to fall low (an unbiased model then reads 1.06-1.08 x on populations
        straddling the top) and the tracks beyond the range that the test missed, which a model reads near its top;
        the model's own reading selects them without looking at the CVE (``benchmarks/reports/model_range.md``).
        Where the flags are as many as an in-range population gives by chance, the guard keeps the other tracks
        (the chance counted at the model's readings divided by its bias: a model reading low would count too
        few chance flags).
        """
        out = set(self.outside)
        bias = model_bias if np.isfinite(model_bias) and model_bias > 0 else 1.0
        unbiased = {i: d / bias for i, d in model_mean_d_um2_s.items()}
        if self.above and self.beyond_chance(unbiased, above=True):
            out |= {i for i, d in model_mean_d_um2_s.items() if d > GUARD_TRIM * self.high_um2_s}
        if self.below and self.beyond_chance(unbiased, above=False):
            out |= {i for i, d in model_mean_d_um2_s.items() if d < self.low_um2_s / GUARD_TRIM}
        return frozenset(out)

    def beyond_chance(self, model_mean_d_um2_s: dict[int, float], above: bool) -> bool:
        """Whether more tracks are flagged on that side than a population inside the range would give: the
        count of flags against the 99 % quantile of a Poisson count whose mean sums, over the tested tracks,
        the test's chance to flag a track whose D is the model's reading, held inside the range (the larger of
        a gamma and a normal tail of the CVE's exact mean and variance; the median-step confirmation above the
        range is not counted, which counts a few chance flags too many, on the safe side), and against
        :data:`MIN_SHARE_BEYOND` of the tested tracks. False where no tested track has a reading."""
        z = float(norm.ppf(self.confidence))
        ids = [i for i in self.noise if i in model_mean_d_um2_s]
        if not ids:
            return False
        s2, k = (np.array([self.noise[i][j] for i in ids], dtype=float) for j in (0, 1))
        d = np.array([model_mean_d_um2_s[i] for i in ids], dtype=float) * self.px2_per_um2_s
        low, high = self.low_um2_s * self.px2_per_um2_s, self.high_um2_s * self.px2_per_um2_s

        def var(value: np.ndarray) -> np.ndarray:
            return 0.5 * cve_variance_px2(value, s2, self.blur, k)

        # the CVE of a track at D: the larger of a gamma law's and a normal law's tail, each with its mean D and
        # its exact variance (the gamma's upper tail follows the CVE's sum of squares, heavier than the normal's;
        # below, the CVE can go negative, which the gamma cannot, and the normal's lower tail is the heavier)
        with np.errstate(invalid="ignore", divide="ignore"):
            if above:
                d0 = np.clip(np.nan_to_num(d, nan=high), 1e-12, high)
                threshold = high + z * np.sqrt(var(np.full_like(d, high)))
                chance = np.maximum(gamma.sf(threshold, d0**2 / var(d0), scale=var(d0) / d0),
                                    norm.sf((threshold - d0) / np.sqrt(var(d0))))
            else:
                d0 = np.clip(np.nan_to_num(d, nan=low), low, None)
                sd_low = np.sqrt(var(np.full_like(d, low)))
                threshold = low - z * sd_low
                tail = np.maximum(gamma.cdf(threshold, d0**2 / var(d0), scale=var(d0) / d0),
                                  norm.cdf((threshold - d0) / np.sqrt(var(d0))))
                chance = np.where(low >= z * sd_low, tail, 0.0)
        expected = float(np.nansum(chance))
        observed = len(self.above if above else self.below)
        return observed > max(poisson.ppf(0.99, expected), MIN_SHARE_BEYOND * self.n_tested)

    def message(self, model_name: str, reported: bool, n_near_edge: int = 0) -> str:
        """One sentence for the user (empty when no track lies outside); ``n_near_edge``: the tracks the guard
        left out because the model reads them near the edge beyond which tracks were found (they keep the
        model's values, warning :data:`NEAR_FLAG`)."""
        parts = []
        if self.above:
            parts.append(f"{len(self.above)} faster than {_g(self.high_um2_s)} um^2/s")
        if self.below:
            parts.append(f"{len(self.below)} slower than {_g(self.low_um2_s)} um^2/s")
        if not parts:
            return ""
        what = ("the model's values are reported for them (--trust-model), flagged beyond_model_range" if reported
                else "their classical estimates (CVE) are reported, flagged beyond_model_range "
                     "(--keep-model-beyond-range, or 'keep the model's values beyond its D range' in the widget, "
                     "keeps the model's)")
        near = (f"; {n_near_edge} more tracks, which the model reads near that edge of its range and among which "
                f"tracks beyond it may lie that the test could not show, keep the model's values, flagged "
                f"{NEAR_FLAG}" if n_near_edge else "")
        return (f"{len(self.outside)} of the {self.n_tested} tracks the model estimated lie outside the range of mean "
                f"D, (D1 + D2) / 2, that model '{model_name}' was trained on ({' and '.join(parts)} on this movie): "
                f"{what}{near}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record for ``_meta.json``."""
        return {"mean_D_range_um2_s": [self.low_um2_s, self.high_um2_s], "n_tested": self.n_tested,
                "n_above": len(self.above), "n_below": len(self.below), "confidence_one_sided": self.confidence}


def _g(value: float) -> str:
    return f"{value:.3g}"


def check_tracks(
    track_ids: Any, d_cve_px2: Any, loc_var_px2: Any, n_displacements: Any, acquisition: Acquisition,
    card: dict[str, Any], scale: float = 1.0, d_median_px2: Any = None,
) -> RangeCheck | None:
    """The range check of a movie's tracks, or ``None`` where the card gives no range.

    ``track_ids``, ``d_cve_px2`` (movie px^2/frame), ``loc_var_px2`` (px^2), ``n_displacements``,
    ``d_median_px2``: ``(N,)`` per track, as in :func:`range_sides`; ``scale`` the PSF-units factor ``s``
    (virtual px per movie px) at which the model reads the movie (1: its own pixels). Each test at
    :data:`DEFAULT_CONFIDENCE`.
    """
    confidence = DEFAULT_CONFIDENCE
    trained = trained_mean_d_range_px2(card)
    if trained is None:
        return None
    low_px2, high_px2 = (v / float(scale) ** 2 for v in trained)
    ids = np.asarray(track_ids, dtype=np.int64)
    sides = range_sides(d_cve_px2, loc_var_px2, n_displacements, blur=acquisition.blur_coefficient,
                        low_px2=low_px2, high_px2=high_px2, confidence=confidence, d_median_px2=d_median_px2)
    mask = tested(d_cve_px2, loc_var_px2, n_displacements)
    s2, k = np.asarray(loc_var_px2, dtype=float), np.asarray(n_displacements, dtype=float)
    return RangeCheck(
        low_um2_s=float(acquisition.diffusion_to_um2_s(low_px2)),
        high_um2_s=float(acquisition.diffusion_to_um2_s(high_px2)),
        above=tuple(int(i) for i in ids[sides > 0]), below=tuple(int(i) for i in ids[sides < 0]),
        n_tested=int(mask.sum()), confidence=confidence,
        noise={int(i): (float(v), float(n)) for i, v, n, m in zip(ids, s2, k, mask, strict=True) if m},
        blur=float(acquisition.blur_coefficient), px2_per_um2_s=float(acquisition.diffusion_to_px2_per_frame(1.0)))


def guard_left_out(check: RangeCheck | None, model_mean_d_um2_s: dict[int, float],
                   first_bias: tuple[float, float, float, int]) -> frozenset[int]:
    """The tracks the guard's population test leaves out, as the estimation stage decides them.

    ``model_mean_d_um2_s``: the model's ``(D1 + D2) / 2`` per model track (um^2/s); ``first_bias``: the guard's
    ``population_ratio`` over the model's tracks not flagged (:attr:`RangeCheck.outside`). Nothing where no track is
    flagged. The bias divides the readings in :meth:`RangeCheck.beyond_chance` only where it was measured (at least
    :data:`~.guard.MIN_TRACKS` tracks, a finite interval); where the trim would leave the guard fewer than
    :data:`~.guard.MIN_TRACKS` tracks, only the flagged tracks are left out (the guard stays measurable).
    """
    if check is None or not check.outside:
        return frozenset()
    factor, low, high, n = first_bias
    measured = n >= MIN_TRACKS and all(np.isfinite(v) for v in (factor, low, high))
    left = check.left_out_of_guard(model_mean_d_um2_s, float(factor) if measured else 1.0)
    if sum(1 for i in model_mean_d_um2_s if i not in left) < MIN_TRACKS:
        return check.outside
    return left
