"""Cutting tracks where two particles may have swapped identities (close encounters).

A nearest-neighbour linker joins localizations frame to frame; when two particles come
close, the assignment it picks can hand one particle's future to the other's past, and
with Brownian motion nothing in the positions can tell the two stories apart. Rather than
report a track that holds two particles (whose diffusion estimate is then wrong), we cut
both tracks where their identity is ambiguous, so that every piece holds one particle.

Two rules, applied after linking:

1. **Swap test.** Every link ``a0 (frame ta0) -> a1 (frame ta1)`` of a track spans the
   frame boundaries ``ta0 .. ta1 - 1``. For every pair of links ``A``, ``B`` of different
   tracks spanning a common boundary, the tails after it can be exchanged, giving the
   links ``a0 -> b1`` and ``b0 -> a1``. Under isotropic Brownian steps of variance
   ``dt sigma^2`` per axis (``dt`` in frames), a step ``d`` has the 2-D log-likelihood
   ``-|d|^2 / (2 dt sigma^2) - log(2 pi dt sigma^2)``. The log-likelihood ratio

   ``LLR = log L(linked) - log L(swapped)``

   gives each particle the step variance of its past: ``sigma_A^2`` for ``a0 -> a1`` and
   ``a0 -> b1``, ``sigma_B^2`` for ``b0 -> b1`` and ``b0 -> a1`` (so a fast particle
   passing a slow one is told apart from it), each track's own robust step variance: the
   median of ``|d|^2 / dt`` over its links divided by ``2 ln 2`` (the median of a 2-D
   Gaussian step's squared length is ``2 ln 2 sigma^2``; the median ignores the few wrong
   links), floored at twice the localization variance. For one-frame links and equal
   variances this is ``LLR = (a0 - b0) . (a1 - b1) / sigma^2``: the dot product of the
   pair's separation vectors before and after, in units of the step variance. When
   ``LLR < threshold`` (the swap is not clearly less likely), both links are cut. The
   default threshold, 5 nats (the linked assignment less than ~150 times as likely as
   the swap), was chosen on the field and binding benchmarks
   (``benchmarks/reports/encounters.md``).
2. **Gap rule.** A link bridging a gap (``ta1 - ta0 >= 2``, the linker's memory) while a
   localization of another track lay within ``gap_radius_px`` of the bridged path (the
   straight line from ``a0`` to ``a1``, at the missing frames) is cut: the particle may
   have been hidden in, or fused with, that other spot, and either of the two may be the
   one that reappears. The other track is cut at the gap's exit (its link spanning the
   boundary ``ta1 - 1 | ta1``), where the two identities separate again.

Two refinements make the rules cut only where a cut changes the science (issue 14: on
movies of fast particles the plain swap test cut two thirds of all tracks, most of them
where the two particles diffuse alike and a swap cannot bias either estimate):

* **Repair before cutting.** A pair whose swapped assignment is more likely than the linked
  one by more than ``repair_margin`` nats (``LLR < -repair_margin``) is relinked: the two
  tails are exchanged, not cut. The nearest-neighbour linker minimises squared distances
  and ignores that one particle diffuses faster than the other; the LLR uses each track's
  own step variance. Repairs are applied from the most to the least likely, one per track
  per round, for up to :data:`_REPAIR_ROUNDS` rounds (the variances are re-measured between
  rounds).
* **Cut only when the swap would matter.** With equal priors the probability that the
  pair was swapped is ``p = 1 / (1 + exp(LLR))``. If it was, each track mixes steps of
  variance ``v_A`` and ``v_B`` and its diffusion estimate moves by about
  ``|v_A - v_B| / (v_A + v_B)`` (relative; half-and-half mix). A pair is cut when
  ``LLR < llr_threshold`` *and* the expected relative bias
  ``p |C_A - C_B| / |C_A + C_B|`` is at least ``max_expected_bias`` (default 0.02), where
  ``C`` is a track's 2 x 2 step covariance per frame (Frobenius norms; for isotropic motion
  this is ``p |v_A - v_B| / (v_A + v_B)``, and for anisotropic motion a different
  orientation counts too). The covariances here are local: of up to
  :data:`_LOCAL_WINDOW_LINKS` links of each track before the encounter (after it when
  the track starts there), so a track that was already swapped once still shows the
  particle it holds at that moment. ``max_expected_bias = 0`` gives the plain swap test.

  The same expected-bias condition applies to the gap rule: a bridged link is cut only
  when the other track's local variance differs enough from its own that taking one for
  the other would bias an estimate by ``max_expected_bias`` (with ``p = 1/2``: nothing in
  the bridged frames tells the two apart).

  Optionally (``EncounterRules.weigh_by_share``, off by default) the expected bias is
  weighted by the *swapped share*: a swap hands a track's steps on one side of the link to
  the other particle, and the track's estimate is dominated by its longer side, so the
  shorter side's links over all of the track's links (the larger share of the two tracks of
  a pair) weigh the bias, and a swap two frames after a track begins is not cut. On the
  standard end-to-end sets it cut fewer tracks but left more swaps
  (``benchmarks/reports/encounters.md``).

Everything is vectorised per frame boundary (a :class:`scipy.spatial.cKDTree` of the
links' positions), with no loop over pairs of tracks (the repairs loop over the few
repaired pairs only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_GAP_RADIUS_PX",
    "DEFAULT_LLR_THRESHOLD",
    "DEFAULT_MAX_EXPECTED_BIAS",
    "DEFAULT_REPAIR_MARGIN",
    "DEFAULT_TAIL_LINKS",
    "EncounterRules",
    "EncounterSplit",
    "LinkEnds",
    "split_encounters",
    "swap_log_likelihood_ratio",
    "track_step_variance_px2",
]

#: Cut when the linked assignment is less than ``exp(5) ~ 150`` times as likely as the swap.
DEFAULT_LLR_THRESHOLD = 5.0
#: A bridged gap is ambiguous when another track's localization lies this close (px) to its path.
DEFAULT_GAP_RADIUS_PX = 2.0
#: Cut only where a swap would bias a track's diffusion estimate by at least this much, in expectation.
DEFAULT_MAX_EXPECTED_BIAS = 0.02
#: Relink (exchange the tails) when the swapped assignment is this many nats more likely than the linked one.
DEFAULT_REPAIR_MARGIN = 1.0
#: Links before (or after) an encounter whose steps give a track's local step variance.
_LOCAL_WINDOW_LINKS = 10
#: Links after an encounter whose steps the tail test weighs (``EncounterRules.tail_links`` default: off).
DEFAULT_TAIL_LINKS = 0
#: Links a track needs before an encounter for its local covariance to enter the tail test.
_MIN_LINKS_BEFORE_TAIL = 3
#: Rounds of swap repair (variances re-measured between rounds).
_REPAIR_ROUNDS = 5
#: Floor of the per-axis step variance (px^2) when no localization precision is known.
_MIN_STEP_VARIANCE_PX2 = 1e-3
_TWO_LN2 = 2.0 * math.log(2.0)


@dataclass(frozen=True)
class EncounterRules:
    """Thresholds of the two rules of :func:`split_encounters`.

    Attributes
    ----------
    llr_threshold
        Swap test: links of a pair are cut when ``log L(linked) - log L(swapped)`` is below
        this (nats); ``-inf`` disables the swap test.
    gap_radius_px
        Gap rule radius (px); ``0`` disables it.
    max_expected_bias
        Cut only pairs whose expected relative bias of a diffusion estimate, were they
        left linked, is at least this (dimensionless); ``0``: every pair below the LLR
        threshold (the plain swap test).
    repair_margin
        Exchange the tails of a pair when ``LLR < -repair_margin`` (nats); ``inf``: never.
    weigh_by_share
        Weigh the expected bias by the share of a track's links that a swap would hand to the
        other particle (encounters near a track's ends are then kept). Off by default: it cuts
        fewer tracks, but leaves more swaps in them (``benchmarks/reports/encounters.md``).
    tail_links
        Swap test (cuts only, not the repairs): add to the LLR of a pair the log-likelihood ratio of the
        two tracks' next this many links, each under its own local step covariance before the encounter
        against the other's, where it is positive: after the encounter each particle keeps moving as it
        did before, so where the two diffuse differently the tails can show that an ambiguous crossing
        was linked right and spare the cut. ``0`` (the default): the crossing step alone. Off by default:
        on the foreign-optics movies it spared a quarter of the swap cuts but left more identity
        switches (``benchmarks/reports/encounters.md``).
    motion_linking
        Before any cut, relink the linker's tracks by the likelihood of each step under the
        particle's own step variance (:mod:`~napari_spt_diffusion.tracking.motion_link`), so
        that who is who where particles meet is decided by their motion, not by the shorter
        step (used by :func:`~napari_spt_diffusion.tracking.link.link`, with or without cuts).
    """

    llr_threshold: float = DEFAULT_LLR_THRESHOLD
    gap_radius_px: float = DEFAULT_GAP_RADIUS_PX
    max_expected_bias: float = DEFAULT_MAX_EXPECTED_BIAS
    repair_margin: float = DEFAULT_REPAIR_MARGIN
    weigh_by_share: bool = False
    motion_linking: bool = True
    tail_links: int = DEFAULT_TAIL_LINKS


@dataclass(frozen=True)
class LinkEnds:
    """The two ends of ``P`` links (one particle's step from one localization to the next).

    Attributes
    ----------
    start_px, end_px
        ``(P, 2)`` positions ``(y, x)`` (px) of the links' first and last localization.
    start_frame, end_frame
        ``(P,)`` their frames.
    """

    start_px: np.ndarray
    end_px: np.ndarray
    start_frame: np.ndarray
    end_frame: np.ndarray


@dataclass
class EncounterSplit:
    """Output of :func:`split_encounters`.

    Attributes
    ----------
    track_id
        ``(N,)`` int64 new track ids, one per input row, in the input's row order;
        0..n-1 in order of first appearance (frame, then row order within a frame).
    n_swap_cuts
        Links cut by the swap test.
    n_gap_cuts
        Links cut by the gap rule (bridged links and the other tracks' exit links).
    n_tracks_before, n_tracks_after
        Number of tracks before and after the cuts.
    n_repairs
        Pairs relinked (tails exchanged) because the swap was the more likely assignment.
    touches_cut
        ``(N,)`` bool per input row: its new track begins or ends at a cut link (``None``
        only for the empty input).
    """

    track_id: np.ndarray
    n_swap_cuts: int = 0
    n_gap_cuts: int = 0
    n_tracks_before: int = 0
    n_tracks_after: int = 0
    n_repairs: int = 0
    touches_cut: np.ndarray | None = None

    @property
    def n_cuts(self) -> int:
        """Links cut in all (one cut splits one track in two)."""
        return int(self.n_tracks_after - self.n_tracks_before)

    def message(self) -> str:
        """One sentence for ``LinkResult.messages``."""
        repaired = (f"; {self.n_repairs} pairs of links were exchanged where the swap was the more likely"
                    if self.n_repairs else "")
        return (
            f"Encounter splitting cut {self.n_cuts} links where two particles may have swapped identities "
            f"({self.n_swap_cuts} by the swap test, {self.n_gap_cuts} at gaps bridged past another spot): "
            f"{self.n_tracks_before} tracks became {self.n_tracks_after}{repaired}."
        )


def track_step_variance_px2(
    track_id: np.ndarray,
    dt_frames: np.ndarray,
    step_px: np.ndarray,
    floor_px2: np.ndarray | float = _MIN_STEP_VARIANCE_PX2,
) -> dict[int, float]:
    """Robust per-axis step variance (px^2 per frame) of each track, from its links.

    Parameters
    ----------
    track_id
        ``(L,)`` track of each link.
    dt_frames
        ``(L,)`` frames spanned by each link (>= 1).
    step_px
        ``(L, 2)`` displacement of each link (px).
    floor_px2
        Scalar or ``(L,)`` lower bound (px^2), e.g. twice the localization variance.

    Returns
    -------
    dict
        ``{track_id: median(|d|^2 / dt) / (2 ln 2)}``, at least the (largest) floor of its links.
    """
    import pandas as pd

    if len(track_id) == 0:
        return {}
    r2 = np.sum(np.asarray(step_px, dtype=float) ** 2, axis=1) / np.asarray(dt_frames, dtype=float)
    floor = np.broadcast_to(np.asarray(floor_px2, dtype=float), r2.shape)
    frame = pd.DataFrame({"t": track_id, "v": r2 / _TWO_LN2, "f": floor})
    grouped = frame.groupby("t")
    var = np.maximum(grouped["v"].median(), grouped["f"].max())
    return {int(k): float(v) for k, v in var.items()}


def swap_log_likelihood_ratio(
    a: LinkEnds,
    b: LinkEnds,
    variance_px2: np.ndarray,
    variance_b_px2: np.ndarray | None = None,
) -> np.ndarray:
    """``log L(a0->a1, b0->b1) - log L(a0->b1, b0->a1)`` under isotropic Brownian steps.

    Parameters
    ----------
    a, b
        The two links of each of ``P`` pairs: ``a0 = a.start_px``, ``a1 = a.end_px`` (px)
        at frames ``ta0 = a.start_frame``, ``ta1 = a.end_frame``, and the same for ``b``;
        the swap must keep time order (``ta0 < tb1``, ``tb0 < ta1``).
    variance_px2
        ``(P,)`` per-axis step variance per frame (px^2) of the particle seen at ``a0``
        (used for ``a0 -> a1`` and ``a0 -> b1``).
    variance_b_px2
        The same for the particle seen at ``b0`` (``b0 -> b1``, ``b0 -> a1``);
        ``None``: ``variance_px2``.

    Returns
    -------
    numpy.ndarray
        ``(P,)`` log-likelihood ratios (nats); large means the linked assignment is clearly
        the more likely one.
    """

    a0, a1, ta0, ta1 = a.start_px, a.end_px, a.start_frame, a.end_frame
    b0, b1, tb0, tb1 = b.start_px, b.end_px, b.start_frame, b.end_frame
    var_b = variance_px2 if variance_b_px2 is None else variance_b_px2

    def cost(d: np.ndarray, dt: np.ndarray, var: np.ndarray) -> np.ndarray:
        dt = np.asarray(dt, dtype=float)
        return np.sum(d * d, axis=1) / (2.0 * dt * var) + np.log(dt)

    linked = cost(a1 - a0, ta1 - ta0, variance_px2) + cost(b1 - b0, tb1 - tb0, var_b)
    swapped = cost(b1 - a0, tb1 - ta0, variance_px2) + cost(a1 - b0, ta1 - tb0, var_b)
    return swapped - linked


def split_encounters(
    track_id: np.ndarray,
    frame: np.ndarray,
    positions_px: np.ndarray,
    *,
    loc_precision_px: np.ndarray | None = None,
    rules: EncounterRules | None = None,
    llr_threshold: float | None = None,
    gap_radius_px: float | None = None,
) -> EncounterSplit:
    """Relink swapped pairs, then cut linked tracks where two particles may have exchanged identities.

    Parameters
    ----------
    track_id
        ``(N,)`` integer track of each localization (as given by the linker).
    frame
        ``(N,)`` integer frame of each localization; one localization per track and frame.
    positions_px
        ``(N, 2)`` ``(y, x)`` positions (px).
    loc_precision_px
        ``(N,)`` localization precision (px, per axis), or ``None``; twice its square
        floors each link's step variance.
    rules
        :class:`EncounterRules` (defaults when ``None``).
    llr_threshold, gap_radius_px
        Override the same fields of ``rules`` (``-inf`` / ``0`` disable the swap test / gap rule).

    Returns
    -------
    EncounterSplit
        New track ids (input row order) and the counts of repairs and cuts.
    """
    rules = rules or EncounterRules()
    threshold = float(rules.llr_threshold if llr_threshold is None else llr_threshold)
    radius = float(rules.gap_radius_px if gap_radius_px is None else gap_radius_px)
    max_bias, margin = float(rules.max_expected_bias), float(rules.repair_margin)
    tid = np.asarray(track_id, dtype=np.int64)
    frm = np.asarray(frame, dtype=np.int64)
    pos = np.asarray(positions_px, dtype=np.float64)
    n = len(tid)
    if frm.shape != (n,) or pos.shape != (n, 2):
        raise ValueError(
            "track_id, frame and positions_px must have shapes (N,), (N,), (N, 2); "
            f"got {tid.shape}, {frm.shape}, {pos.shape}"
        )
    if math.isnan(threshold):
        raise ValueError("llr_threshold must be a number (or -inf to disable the swap test), got nan")
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"gap_radius_px must be a number >= 0, got {radius!r}")
    if not (math.isfinite(max_bias) and max_bias >= 0):
        raise ValueError(f"max_expected_bias must be a number >= 0, got {max_bias!r}")
    if math.isnan(margin) or margin < 0:
        raise ValueError(f"repair_margin must be >= 0 (inf: never relink), got {margin!r}")
    if int(rules.tail_links) != rules.tail_links or rules.tail_links < 0:
        raise ValueError(f"tail_links must be an integer >= 0, got {rules.tail_links!r}")
    if n == 0:
        return EncounterSplit(np.zeros(0, dtype=np.int64), touches_cut=np.zeros(0, dtype=bool))
    order = np.lexsort((frm, tid))
    t_s, f_s, p_s = tid[order], frm[order], pos[order]
    if np.any((t_s[1:] == t_s[:-1]) & (f_s[1:] == f_s[:-1])):
        raise ValueError("a track has two localizations in one frame")
    prec = None if loc_precision_px is None else np.asarray(loc_precision_px, dtype=float)[order]
    n_before = int(len(np.unique(t_s)))

    n_repairs = 0
    if threshold > -math.inf and math.isfinite(margin):
        # rows stay in place; the track ids of the tails change (rows re-sorted after each round)
        for _ in range(_REPAIR_ROUNDS):
            links = _measure_links(t_s, f_s, p_s, prec)
            done, t_new = _repair_round(links, t_s, f_s, p_s, max(threshold, -margin), margin)
            if not done:
                break
            n_repairs += done
            resort = np.lexsort((f_s, t_new))
            t_s, f_s, p_s, order = t_new[resort], f_s[resort], p_s[resort], order[resort]
            prec = None if prec is None else prec[resort]

    links = _measure_links(t_s, f_s, p_s, prec)
    cut = np.zeros(len(links.at), dtype=bool)
    n_swap = n_gap = 0
    if len(links.at):
        if threshold > -math.inf:
            swap_cut = _swap_cuts(links, f_s, p_s, threshold, max_bias, rules.weigh_by_share, int(rules.tail_links))
            n_swap = int(swap_cut.sum())
            cut |= swap_cut
        if radius > 0:
            gap_cut = _gap_cuts(links, t_s, f_s, p_s, radius, max_bias, rules.weigh_by_share)
            n_gap = int((gap_cut & ~cut).sum())
            cut |= gap_cut

    start = np.ones(n, dtype=bool)
    start[links.at + 1] = cut  # a row starts a piece unless it continues an uncut link
    piece = np.cumsum(start) - 1
    new_sorted = _relabel_by_first_appearance(piece, f_s)
    new = np.empty(n, dtype=np.int64)
    new[order] = new_sorted
    cut_rows = np.concatenate([links.at[cut], links.at[cut] + 1])  # the two ends of every cut link
    touches = np.zeros(n, dtype=bool)
    touches[order] = np.isin(piece, piece[cut_rows])
    return EncounterSplit(new, n_swap, n_gap, n_before, int(new_sorted.max()) + 1, n_repairs, touches)


@dataclass
class _Links:
    """The links of rows sorted by (track, frame): link ``k`` joins rows ``at[k]`` and ``at[k] + 1``.

    ``var``: ``(L,)`` the track's robust per-axis step variance (px^2 per frame) at each link;
    ``local``: ``(L, 3)`` the step covariance ``(yy, xx, yx)`` (px^2 per frame) of up to
    :data:`_LOCAL_WINDOW_LINKS` links of the same track before the link (after it when fewer
    than 3 precede it; else ``(var, var, 0)``), the diagonal floored like ``var``.
    ``links_before`` / ``links_after``: ``(L,)`` how many links of the same track come before / after
    the link.
    """

    at: np.ndarray
    var: np.ndarray
    local: np.ndarray
    links_before: np.ndarray
    links_after: np.ndarray


def _measure_links(t_s: np.ndarray, f_s: np.ndarray, p_s: np.ndarray, prec: np.ndarray | None) -> _Links:
    """Links, whole-track and local step variances of rows sorted by (track, frame)."""
    link_at = np.flatnonzero(t_s[1:] == t_s[:-1])
    n_links = len(link_at)
    if n_links == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Links(link_at, np.zeros(0), np.zeros(0), empty, empty)
    floor = np.full(n_links, _MIN_STEP_VARIANCE_PX2)
    if prec is not None:
        p2 = np.fmax(prec[link_at], prec[link_at + 1]) ** 2  # NaN only where both ends lack one
        floor = np.where(np.isfinite(p2), np.maximum(2.0 * p2, floor), floor)
    steps = p_s[link_at + 1] - p_s[link_at]
    dts = f_s[link_at + 1] - f_s[link_at]
    track = t_s[link_at]
    var = _lookup(track_step_variance_px2(track, dts, steps, floor), track)
    # local step covariance (yy, xx, yx) per frame: running sums of d d^T / dt within each track's links
    outer = np.stack([steps[:, 0] ** 2, steps[:, 1] ** 2, steps[:, 0] * steps[:, 1]], axis=1) / dts[:, None]
    idx = np.arange(n_links)
    first = np.maximum.accumulate(np.where(np.r_[True, track[1:] != track[:-1]], idx, 0))
    last = np.minimum.accumulate(np.where(np.r_[track[1:] != track[:-1], True], idx, n_links - 1)[::-1])[::-1]
    csum = np.concatenate([np.zeros((1, 3)), np.cumsum(outer, axis=0)])
    lo = np.maximum(first, idx - _LOCAL_WINDOW_LINKS)
    n_b = idx - lo
    hi = np.minimum(last + 1, idx + 1 + _LOCAL_WINDOW_LINKS)
    n_a = hi - idx - 1
    before = (csum[idx] - csum[lo]) / np.maximum(n_b, 1)[:, None]
    after = (csum[hi] - csum[idx + 1]) / np.maximum(n_a, 1)[:, None]
    whole = np.stack([var, var, np.zeros(n_links)], axis=1)
    local = np.where((n_b >= 3)[:, None], before, np.where((n_a >= 3)[:, None], after, whole))
    local[:, :2] = np.maximum(local[:, :2], floor[:, None])
    return _Links(link_at, var, local, idx - first, last - idx)


def _lookup(mapping: dict[int, float], keys: np.ndarray) -> np.ndarray:
    """Vectorised ``[mapping[k] for k in keys]``."""
    k = np.fromiter(mapping.keys(), dtype=np.int64, count=len(mapping))
    v = np.fromiter(mapping.values(), dtype=float, count=len(mapping))
    o = np.argsort(k)
    return v[o][np.searchsorted(k[o], keys)]


def _relabel_by_first_appearance(piece: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Renumber piece labels 0..n-1 in order of first frame (then row order)."""
    import pandas as pd

    order = np.lexsort((np.arange(len(frame)), frame))
    codes, _ = pd.factorize(piece[order])
    out = np.empty(len(piece), dtype=np.int64)
    out[order] = codes
    return out


def _tensor_difference(cov_a: np.ndarray, cov_b: np.ndarray) -> np.ndarray:
    """``|C_A - C_B| / |C_A + C_B|`` (Frobenius norms) of ``(P, 3)`` covariances ``(yy, xx, yx)``;
    ``|v_A - v_B| / (v_A + v_B)`` for isotropic ones. A swap mixes the two tensors: this is about the
    relative change of each (its diffusion coefficients and, for anisotropic motion, its axes)."""

    def norm(c: np.ndarray) -> np.ndarray:
        return np.sqrt(c[:, 0] ** 2 + c[:, 1] ** 2 + 2.0 * c[:, 2] ** 2)

    return norm(cov_a - cov_b) / np.maximum(norm(cov_a + cov_b), 1e-300)


def _expected_bias(llr: np.ndarray, cov_a: np.ndarray, cov_b: np.ndarray) -> np.ndarray:
    """``p(swap) |C_A - C_B| / |C_A + C_B|`` with ``p(swap) = 1 / (1 + exp(LLR))``."""
    from scipy.special import expit

    return expit(-llr) * _tensor_difference(cov_a, cov_b)


def _swapped_share(links: _Links, i: np.ndarray) -> np.ndarray:
    """Share of a track's links that a swap at its link ``i`` would give to the other particle: the
    shorter of the two sides (the links before it, the link and those after) over all of its links."""
    before = links.links_before[i].astype(float)
    after = links.links_after[i].astype(float) + 1.0
    return np.minimum(before, after) / (before + after)


def _candidate_pairs(
    links: _Links, f_s: np.ndarray, p_s: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of links ``(i, j)`` of different tracks spanning a common frame boundary whose LLR may lie
    below ``threshold``, and their LLR (with the whole-track variances); ``(P,)`` arrays each."""
    from scipy.spatial import cKDTree

    link_at, var = links.at, links.var
    t0, t1 = f_s[link_at], f_s[link_at + 1]
    p0, p1 = p_s[link_at], p_s[link_at + 1]
    span = t1 - t0
    empty = np.zeros(0, dtype=np.int64)
    if len(link_at) < 2:
        return empty, empty, np.zeros(0)
    # one entry per (link, boundary b it spans): boundaries t0 .. t1 - 1; entries come sorted by
    # (boundary, link), so that the pairs come out as a loop over the boundaries would give them
    link_rep = np.repeat(np.arange(len(link_at)), span)
    boundary = t0[link_rep] + (np.arange(len(link_rep)) - np.repeat(np.cumsum(span) - span, span))
    by_boundary = np.lexsort((link_rep, boundary))
    link_rep, boundary = link_rep[by_boundary], boundary[by_boundary]
    frac = (boundary + 0.5 - t0[link_rep]) / span[link_rep]
    mid = p0[link_rep] + (p1 - p0)[link_rep] * frac[:, None]
    step2 = np.sum((p1 - p0) ** 2, axis=1)
    # Beyond a mid-boundary separation of 2 sqrt(threshold max(var) + max|d|^2) each of the two terms
    # of the LLR of one-frame links is >= threshold / 2: no cut is possible there. The maxima are
    # those of the boundary's links; the longest span among them widens the radius for links over gaps.
    group_start = np.flatnonzero(np.r_[True, boundary[1:] != boundary[:-1]])
    group_size = np.diff(np.r_[group_start, len(boundary)])
    reach2 = (max(threshold, 0.0) * np.maximum.reduceat(var[link_rep], group_start)
              * np.maximum.reduceat(span[link_rep], group_start)
              + np.maximum.reduceat(step2[link_rep], group_start))
    radius = np.repeat(2.0 * np.sqrt(reach2) + 1e-9, group_size)  # (E,) each entry's boundary's radius
    # One k-d tree per band of similar radii (within a factor 1.5) instead of one per boundary: the
    # boundaries are stacked along a third axis, farther apart than the band's radius, so no pair
    # crosses one; each pair is then held to its own boundary's radius.
    band = np.floor(np.log(radius) / math.log(1.5)).astype(np.int64)
    band[np.repeat(group_size, group_size) < 2] = np.iinfo(np.int64).min  # alone at its boundary: no pair
    pairs_a, pairs_b = [], []
    for level in np.unique(band):
        if level == np.iinfo(np.int64).min:
            continue
        rows = np.flatnonzero(band == level)
        r_max = float(radius[rows].max())
        stack = boundary[rows].astype(np.float64)
        points = np.column_stack([mid[rows], (stack - stack.min()) * (2.0 * r_max + 1.0)])
        found = cKDTree(points).query_pairs(r_max, output_type="ndarray")
        if len(found) == 0:
            continue
        a, b = rows[found[:, 0]], rows[found[:, 1]]
        a, b = np.minimum(a, b), np.maximum(a, b)
        keep = np.sum((mid[a] - mid[b]) ** 2, axis=1) <= radius[a] ** 2
        pairs_a.append(a[keep])
        pairs_b.append(b[keep])
    if not pairs_a or not sum(len(a) for a in pairs_a):
        return empty, empty, np.zeros(0)
    a, b = np.concatenate(pairs_a), np.concatenate(pairs_b)
    ordered = np.lexsort((b, a))  # entries are sorted by (boundary, link): boundary by boundary
    i, j = link_rep[a[ordered]], link_rep[b[ordered]]
    llr = swap_log_likelihood_ratio(LinkEnds(p0[i], p1[i], t0[i], t1[i]), LinkEnds(p0[j], p1[j], t0[j], t1[j]),
                                    var[i], var[j])
    return i, j, llr


def _swap_cuts(links: _Links, f_s: np.ndarray, p_s: np.ndarray, threshold: float, max_bias: float,
               weigh_by_share: bool = False, tail_links: int = 0) -> np.ndarray:
    """Links cut by the swap test (rule 1), ``(L,)`` bool."""
    cut = np.zeros(len(links.at), dtype=bool)
    i, j, llr = _candidate_pairs(links, f_s, p_s, threshold)
    if tail_links > 0 and len(i):  # the tails may spare a cut, never make one
        llr = llr + np.maximum(_tail_log_likelihood_ratio(links, f_s, p_s, i, j, tail_links), 0.0)
    hit = llr < threshold
    if max_bias > 0:
        bias = _expected_bias(llr, links.local[i], links.local[j])
        if weigh_by_share:
            bias = bias * np.maximum(_swapped_share(links, i), _swapped_share(links, j))
        hit &= bias >= max_bias
    cut[i[hit]] = True
    cut[j[hit]] = True
    return cut


def _predictive_log_density(d: np.ndarray, cov: np.ndarray, dt: np.ndarray, n_links: np.ndarray) -> np.ndarray:
    """Log density of 2-D steps ``d (..., 2)`` ``(y, x)`` over ``dt (...)`` frames under a step covariance per
    frame ``C (..., 3)`` ``(yy, xx, yx)`` measured on ``n_links (...)`` (>= 3) steps: the posterior
    predictive of a zero-mean Gaussian step whose covariance is known only from those steps (Jeffreys
    prior), a bivariate Student t with ``nu = n - 1`` degrees of freedom and scale ``dt C n / nu``.
    Heavier tails than the plug-in Gaussian, so a covariance measured on few steps cannot make the
    tail test sure. The off-diagonal is held inside +-0.99 sqrt(yy xx) (positive definite)."""
    from scipy.special import gammaln

    nu = np.asarray(n_links, dtype=float) - 1.0
    scale = dt * np.asarray(n_links, dtype=float) / nu
    bound = 0.99 * np.sqrt(cov[..., 0] * cov[..., 1])
    yy, xx = cov[..., 0] * scale, cov[..., 1] * scale
    yx = np.clip(cov[..., 2], -bound, bound) * scale
    det = yy * xx - yx * yx
    quad = (xx * d[..., 0] ** 2 - 2.0 * yx * d[..., 0] * d[..., 1] + yy * d[..., 1] ** 2) / det
    return (gammaln(0.5 * (nu + 2.0)) - gammaln(0.5 * nu) - np.log(nu * math.pi) - 0.5 * np.log(det)
            - 0.5 * (nu + 2.0) * np.log1p(quad / nu))


def _tail_log_likelihood_ratio(links: _Links, f_s: np.ndarray, p_s: np.ndarray, i: np.ndarray, j: np.ndarray,
                               tail_links: int) -> np.ndarray:
    """``(P,)`` log L(tails as linked) - log L(tails exchanged) of the pairs of links ``(i, j)``.

    The tail of a link is the next ``tail_links`` links of its track (fewer where the track ends);
    linked, each tail is weighed under its own track's local step covariance before the encounter
    (``links.local``, measured on up to :data:`_LOCAL_WINDOW_LINKS` links: the predictive density of
    :func:`_predictive_log_density`), exchanged under the other track's. 0 where either track has fewer
    than :data:`_MIN_LINKS_BEFORE_TAIL` links before the encounter (its covariance would then be
    measured on the tail itself).
    """
    steps = p_s[links.at + 1] - p_s[links.at]
    dts = (f_s[links.at + 1] - f_s[links.at]).astype(float)
    offsets = np.arange(1, tail_links + 1)
    known = (links.links_before[i] >= _MIN_LINKS_BEFORE_TAIL) & (links.links_before[j] >= _MIN_LINKS_BEFORE_TAIL)
    out = np.zeros(len(i))
    if not known.any():
        return out
    i, j = i[known], j[known]
    n_local = np.minimum(links.links_before, _LOCAL_WINDOW_LINKS)
    total = np.zeros(len(i))
    for own, other in ((i, j), (j, i)):
        idx = own[:, None] + offsets[None, :]
        valid = offsets[None, :] <= links.links_after[own][:, None]
        idx = np.where(valid, idx, own[:, None])
        d, dt = steps[idx], dts[idx]
        mine = _predictive_log_density(d, links.local[own][:, None, :], dt, n_local[own][:, None])
        theirs = _predictive_log_density(d, links.local[other][:, None, :], dt, n_local[other][:, None])
        total += np.sum(np.where(valid, mine - theirs, 0.0), axis=1)
    out[known] = total
    return out


def _repair_round(
    links: _Links, t_s: np.ndarray, f_s: np.ndarray, p_s: np.ndarray, reach: float, margin: float
) -> tuple[int, np.ndarray]:
    """One round of swap repair: exchange the tails of pairs with ``LLR < -margin``, most likely
    first, each track at most once. Returns ``(pairs exchanged, new track id of each sorted row)``."""
    i, j, llr = _candidate_pairs(links, f_s, p_s, reach)
    bad = np.flatnonzero(llr < -margin)
    new = t_s.copy()
    if len(bad) == 0:
        return 0, new
    used: set[int] = set()
    done = 0
    ends = np.searchsorted(t_s, t_s, side="right")  # one past the last row of each row's track
    for k in bad[np.argsort(llr[bad], kind="stable")]:
        a, b = int(links.at[i[k]]), int(links.at[j[k]])
        ta, tb = int(t_s[a]), int(t_s[b])
        if ta in used or tb in used:
            continue
        used.update((ta, tb))
        new[a + 1:ends[a]] = tb
        new[b + 1:ends[b]] = ta
        done += 1
    return done, new


def _gap_cuts(links: _Links, t_s: np.ndarray, f_s: np.ndarray, p_s: np.ndarray, radius: float,
              max_bias: float, weigh_by_share: bool = False) -> np.ndarray:
    """Links cut by the gap rule (rule 2), ``(L,)`` bool."""
    from scipy.spatial import cKDTree

    link_at = links.at
    cut = np.zeros(len(link_at), dtype=bool)
    t0, t1 = f_s[link_at], f_s[link_at + 1]
    gaps = np.flatnonzero(t1 - t0 >= 2)
    if len(gaps) == 0:
        return cut
    var_of_track = dict(zip(t_s[link_at].tolist(), links.var.tolist()))
    # one entry per (gap link, missing frame)
    missing = t1[gaps] - t0[gaps] - 1
    g_rep = np.repeat(gaps, missing)
    f_miss = t0[g_rep] + 1 + (np.arange(len(g_rep)) - np.repeat(np.cumsum(missing) - missing, missing))
    frac = (f_miss - t0[g_rep]) / (t1[g_rep] - t0[g_rep])
    path = p_s[link_at[g_rep]] + (p_s[link_at[g_rep] + 1] - p_s[link_at[g_rep]]) * frac[:, None]
    rows_by_frame = np.argsort(f_s, kind="stable")
    sorted_frames = f_s[rows_by_frame]
    other_tracks: list[np.ndarray] = []
    exit_boundary: list[np.ndarray] = []
    for f in np.unique(f_miss):
        sel = np.flatnonzero(f_miss == f)
        lo, hi = np.searchsorted(sorted_frames, [f, f + 1])
        rows = rows_by_frame[lo:hi]
        if len(rows) == 0:
            continue
        near = cKDTree(p_s[rows]).query_ball_point(path[sel], radius)
        for k, hits in zip(sel, near):
            own = t_s[link_at[g_rep[k]]]
            others = t_s[rows[hits]] if len(hits) else np.zeros(0, dtype=np.int64)
            others = others[others != own]
            if len(others) and max_bias > 0:
                # nothing in the bridged frames tells the two apart (p = 1/2): keep the link when
                # taking one particle for the other would not bias an estimate by max_bias
                own_cov = links.local[g_rep[k]][None, :]
                v_other = np.array([var_of_track.get(int(o), math.nan) for o in others])
                other_cov = np.stack([v_other, v_other, np.zeros(len(others))], axis=1)
                share = _swapped_share(links, np.array([g_rep[k]])) if weigh_by_share else 1.0
                differ = 0.5 * share * _tensor_difference(np.repeat(own_cov, len(others), axis=0), other_cov)
                others = others[~(differ < max_bias)]  # an unknown variance (NaN) keeps the cut
            if len(others):
                cut[g_rep[k]] = True
                other_tracks.append(others)
                exit_boundary.append(np.full(len(others), t1[g_rep[k]] - 1))
    if other_tracks:
        cut[_links_spanning(link_at, t_s, f_s, np.concatenate(other_tracks), np.concatenate(exit_boundary))] = True
    return cut


def _links_spanning(
    link_at: np.ndarray, t_s: np.ndarray, f_s: np.ndarray, track: np.ndarray, boundary: np.ndarray
) -> np.ndarray:
    """Indices of the links of ``track`` spanning ``boundary | boundary + 1`` (where such a link exists)."""
    # rows are sorted by (track, frame): the last row of the track at or before the boundary
    key_rows = np.stack([t_s, f_s])
    pos = _searchsorted_pairs(key_rows, track, boundary, side="right") - 1
    ok = (pos >= 0) & (pos < len(t_s) - 1)
    pos = pos[ok]
    ok2 = (t_s[pos] == track[ok]) & (t_s[pos + 1] == track[ok])
    rows = pos[ok2]
    link_index = np.searchsorted(link_at, rows)
    valid = (link_index < len(link_at)) & (link_at[np.minimum(link_index, len(link_at) - 1)] == rows)
    return link_index[valid]


def _searchsorted_pairs(keys: np.ndarray, a: np.ndarray, b: np.ndarray, side: str) -> np.ndarray:
    """``searchsorted`` of pairs ``(a, b)`` in rows sorted lexicographically by ``keys = (A, B)``."""
    big = np.int64(keys[1].max() - min(keys[1].min(), b.min()) + 2)
    base = min(keys[1].min(), b.min())
    flat = keys[0].astype(np.int64) * big + (keys[1] - base)
    return np.searchsorted(flat, a.astype(np.int64) * big + (b - base), side=side)
