"""Relinking tracks with each particle's own diffusivity (a second, motion-aware linking pass).

trackpy links by nearest neighbour: every link costs its squared length, whatever the
particle. When a slow particle passes near a fast one, the shorter link is often the wrong
one, and the encounter splitter then cuts the tracks in pieces (issue 14; the effect of this
pass on the foreign-optics and end-to-end benchmarks is in ``benchmarks/reports/encounters.md``).

This pass relinks the localizations frame by frame as an assignment problem whose costs are
the negative log-likelihoods of each step under the track's own motion:

* **Each track's step variance.** A localization's *prior* variance ``v_prior`` comes from
  the first pass (trackpy's tracks): the median of ``|d|^2 / (2 dt)`` over up to
  :data:`PRIOR_WINDOW_LINKS` links on either side of it, divided by ``ln 2`` (``|d|^2 / (2 v
  dt)`` of a 2-D Gaussian step is exponentially distributed, median ``ln 2``; the median
  ignores the first pass's few wrong links). Localizations of first-pass tracks without a
  link get the median of all links. While relinking, a track's variance is
  ``v = (sum of its last K values |d|^2 / (2 dt) + n0 v_prior) / (K + n0)`` with
  ``K <= ``:data:`ONLINE_WINDOW_LINKS` and ``n0 = ``:data:`PRIOR_WEIGHT_LINKS`, ``v_prior``
  the median of the priors of the track's last ``K`` localizations (so a track follows a
  change of state, e.g. a particle that unbinds, but not the one localization that the first
  pass gave to another particle at an encounter). Variances are floored at twice the
  localization variance and capped at ``v_max`` below.
* **Cost of a link** ``i -> j`` over ``dt`` frames with step ``d``: ``-log[(1 - eps)
  N(d; dt v_i) + eps N(d; dt v_max)]`` with ``N(d; V) = exp(-|d|^2 / (2 V)) / (2 pi V)``,
  i.e. the track's own Brownian step, mixed with a small probability ``eps``
  (:data:`SWITCH_PROBABILITY`) of a step at the fastest diffusivity the search range allows
  (``v_max = R^2 / 18``: the range ``R`` is 3 x the fastest 2-D step scale), so that a
  particle that changes state is still linked. (Over a gap of ``dt`` frames the whole
  variance, localization noise included, is scaled by ``dt``: a slight overestimate.)
* **Assignment.** Every frame, the tracks seen within the last ``memory + 1`` frames are
  assigned to the frame's localizations within ``R`` px, or left unlinked at a cost above
  that of any allowed link: as with trackpy, a lone candidate within the range is always
  linked; where several compete, the joint likelihood decides (scipy's dense
  ``linear_sum_assignment`` for up to :data:`_DENSE_LIMIT` competing tracks, else its sparse
  ``min_weight_full_bipartite_matching`` on the candidate graph: memory grows with the
  candidate pairs, not with the square of the crowd). Localizations left over begin new
  tracks.

The pass costs one assignment per frame (no loop over localizations in Python).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

__all__ = [
    "MIN_VARIANCE_PX2",
    "ONLINE_WINDOW_LINKS",
    "PRIOR_WEIGHT_LINKS",
    "PRIOR_WINDOW_LINKS",
    "SWITCH_PROBABILITY",
    "prior_step_variance_px2",
    "relink_by_motion",
]

#: Links on either side of a localization whose median step gives its prior variance.
PRIOR_WINDOW_LINKS = 5
#: A track's variance while relinking: its last this many links ...
ONLINE_WINDOW_LINKS = 10
#: ... plus its prior counted as this many links.
PRIOR_WEIGHT_LINKS = 3.0
#: Probability that a step comes from the fastest motion allowed instead of the track's own.
SWITCH_PROBABILITY = 0.03
#: Variance floor (px^2 per frame and axis) where no localization precision is known.
MIN_VARIANCE_PX2 = 1e-3
#: Links whose windows are held at once while the priors are measured.
_CHUNK_LINKS = 200_000
#: Above this many competing tracks a frame's assignment is solved on the sparse candidate graph.
_DENSE_LIMIT = 40


def prior_step_variance_px2(
    track_id: np.ndarray,
    frame: np.ndarray,
    positions_px: np.ndarray,
    floor_px2: np.ndarray | float = MIN_VARIANCE_PX2,
) -> np.ndarray:
    """Local per-axis step variance (px^2 per frame) at every localization, from a first linking.

    Parameters
    ----------
    track_id, frame
        ``(N,)`` integer track and frame of each localization (one per track and frame).
    positions_px
        ``(N, 2)`` positions ``(y, x)`` (px).
    floor_px2
        Scalar or ``(N,)`` lower bound (px^2), e.g. twice the localization variance (NaN: none).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 in input row order: ``median(|d|^2 / (2 dt)) / ln 2`` over the links
        within :data:`PRIOR_WINDOW_LINKS` of the localization's outgoing link (its incoming
        link at a track's end) in its track; the median over all links where its track has
        none.
    """
    tid = np.asarray(track_id, dtype=np.int64)
    frm = np.asarray(frame, dtype=np.int64)
    pos = np.asarray(positions_px, dtype=np.float64)
    n = len(tid)
    floor = np.broadcast_to(np.asarray(floor_px2, dtype=np.float64), (n,))
    out = np.full(n, np.nan)
    if n == 0:
        return out
    order = np.lexsort((frm, tid))
    t_s, f_s, p_s = tid[order], frm[order], pos[order]
    link_at = np.flatnonzero(t_s[1:] == t_s[:-1])
    if len(link_at) == 0:
        return np.fmax(np.full(n, MIN_VARIANCE_PX2), floor)
    steps = p_s[link_at + 1] - p_s[link_at]
    value = np.sum(steps * steps, axis=1) / (2.0 * (f_s[link_at + 1] - f_s[link_at]))
    track = t_s[link_at]
    n_links = len(link_at)
    idx = np.arange(n_links)
    new_track = np.r_[True, track[1:] != track[:-1]]
    first = np.maximum.accumulate(np.where(new_track, idx, 0))
    end_track = np.r_[track[1:] != track[:-1], True]
    last = np.minimum.accumulate(np.where(end_track, idx, n_links - 1)[::-1])[::-1]
    offsets = np.arange(-PRIOR_WINDOW_LINKS, PRIOR_WINDOW_LINKS + 1)
    local = np.empty(n_links)
    for c0 in range(0, n_links, _CHUNK_LINKS):  # bounded memory: (chunk, window) at a time
        c1 = min(c0 + _CHUNK_LINKS, n_links)
        window = idx[c0:c1, None] + offsets[None, :]
        inside = (window >= first[c0:c1, None]) & (window <= last[c0:c1, None])
        values = np.where(inside, value[np.clip(window, 0, n_links - 1)], np.nan)
        local[c0:c1] = np.nanmedian(values, axis=1) / math.log(2.0)
    # each localization: its outgoing link, or its incoming one at the end of a track
    per_row = np.full(n, np.nan)
    per_row[link_at] = local
    ends = link_at + 1
    at_end = ends[end_track]
    per_row[at_end] = local[end_track]
    population = float(np.median(value)) / math.log(2.0)
    per_row = np.where(np.isfinite(per_row), per_row, population)
    out[order] = per_row
    return np.fmax(np.fmax(out, floor), MIN_VARIANCE_PX2)  # fmax: a NaN floor (unknown precision) is ignored


def relink_by_motion(
    frame: np.ndarray,
    positions_px: np.ndarray,
    prior_variance_px2: np.ndarray,
    *,
    search_range_px: float,
    memory_frames: int,
    floor_px2: np.ndarray | float = MIN_VARIANCE_PX2,
) -> np.ndarray:
    """Link localizations frame by frame by the likelihood of each step under its track's motion.

    Parameters
    ----------
    frame
        ``(N,)`` integer frame of each localization.
    positions_px
        ``(N, 2)`` positions ``(y, x)`` (px).
    prior_variance_px2
        ``(N,)`` prior per-axis step variance per frame (px^2) at each localization, e.g.
        :func:`prior_step_variance_px2` of a first linking.
    search_range_px
        Largest link length (px); also sets the fastest motion ``v_max = R^2 / 18``.
    memory_frames
        A track may skip up to this many frames.
    floor_px2
        Scalar or ``(N,)`` lower bound of a track's variance (px^2; NaN: none).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64 track ids (0..n-1, in the order tracks begin; input row order).
    """
    frm = np.asarray(frame, dtype=np.int64)
    pos = np.asarray(positions_px, dtype=np.float64)
    n = len(frm)
    track = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return track
    radius = float(search_range_px)
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"search_range_px must be a positive number, got {search_range_px!r}")
    if int(memory_frames) != memory_frames or memory_frames < 0:
        raise ValueError(f"memory_frames must be a whole number >= 0, got {memory_frames!r}")
    v_max = radius * radius / 18.0
    floor = np.broadcast_to(np.asarray(floor_px2, dtype=np.float64), (n,))
    floor = np.clip(np.where(np.isfinite(floor), floor, MIN_VARIANCE_PX2), MIN_VARIANCE_PX2, v_max)
    prior = np.asarray(prior_variance_px2, dtype=np.float64)
    prior = np.clip(np.where(np.isfinite(prior), prior, v_max), floor, v_max)
    max_gap = int(memory_frames) + 1
    eps = SWITCH_PROBABILITY
    log_keep, log_eps = math.log1p(-eps), math.log(eps)
    death_cost = -log_eps + radius * radius / (2.0 * v_max) + math.log(2.0 * math.pi * max_gap * v_max) + 1.0

    order = np.argsort(frm, kind="stable")
    sorted_frames = frm[order]
    bounds = np.flatnonzero(np.r_[True, sorted_frames[1:] != sorted_frames[:-1], True])
    k = ONLINE_WINDOW_LINKS
    # active tracks (seen within max_gap frames): id, last position, last frame, recent steps, prior
    a_id = np.zeros(0, dtype=np.int64)
    a_pos = np.zeros((0, 2))
    a_frame = np.zeros(0, dtype=np.int64)
    a_steps = np.zeros((0, k))
    a_count = np.zeros(0, dtype=np.int64)
    a_priors = np.zeros((0, k))  # a ring of the priors of the track's last k localizations (NaN: none yet)
    a_floor = np.zeros(0)
    next_id = 0
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        rows = order[b0:b1]
        t = int(frm[rows[0]])
        keep = t - a_frame <= max_gap
        a_id, a_pos, a_frame = a_id[keep], a_pos[keep], a_frame[keep]
        a_steps, a_count, a_priors, a_floor = a_steps[keep], a_count[keep], a_priors[keep], a_floor[keep]
        p = pos[rows]
        linked_track = np.full(len(rows), -1, dtype=np.int64)  # index into the active arrays
        if len(a_id):
            pairs = cKDTree(a_pos).sparse_distance_matrix(cKDTree(p), radius, output_type="ndarray")
            if len(pairs):
                i, j, d = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
                n_used = np.minimum(a_count, k)
                a_prior = _ring_median(a_priors, np.minimum(a_count + 1, k))
                var = (a_steps.sum(axis=1) + PRIOR_WEIGHT_LINKS * a_prior) / (n_used + PRIOR_WEIGHT_LINKS)
                var = np.maximum(var, a_floor)
                dt = (t - a_frame[i]).astype(np.float64)
                v_own = dt * var[i]
                v_far = dt * v_max
                d2 = d * d
                own = log_keep - d2 / (2.0 * v_own) - np.log(2.0 * math.pi * v_own)
                far = log_eps - d2 / (2.0 * v_far) - np.log(2.0 * math.pi * v_far)
                cost = -np.logaddexp(own, far)
                for ti, lj in _assign(i, j, cost, death_cost):
                    linked_track[lj] = ti
        linked = linked_track >= 0
        # update the linked tracks
        ti = linked_track[linked]
        if len(ti):
            step = p[linked] - a_pos[ti]
            dt = (t - a_frame[ti]).astype(np.float64)
            value = np.sum(step * step, axis=1) / (2.0 * dt)
            a_steps[ti, a_count[ti] % k] = value  # a ring of the last k values
            a_count[ti] += 1
            a_priors[ti, a_count[ti] % k] = prior[rows[linked]]  # slot 0 holds the first localization's
            a_pos[ti] = p[linked]
            a_frame[ti] = t
            a_floor[ti] = floor[rows[linked]]
            track[rows[linked]] = a_id[ti]
        # the rest begin tracks
        born = rows[~linked]
        if len(born):
            ids = np.arange(next_id, next_id + len(born), dtype=np.int64)
            next_id += len(born)
            track[born] = ids
            a_id = np.concatenate([a_id, ids])
            a_pos = np.concatenate([a_pos, pos[born]])
            a_frame = np.concatenate([a_frame, np.full(len(born), t, dtype=np.int64)])
            a_steps = np.concatenate([a_steps, np.zeros((len(born), k))])
            a_count = np.concatenate([a_count, np.zeros(len(born), dtype=np.int64)])
            first_priors = np.full((len(born), k), np.nan)
            first_priors[:, 0] = prior[born]
            a_priors = np.concatenate([a_priors, first_priors])
            a_floor = np.concatenate([a_floor, floor[born]])
    return track


def _ring_median(values: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """Row medians of ``(A, k)`` rings whose ``n_valid`` (``(A,)``, >= 1) filled entries are finite and
    the rest NaN (``np.nanmedian``, without its per-call cost: NaN sorts last)."""
    ordered = np.sort(values, axis=1)
    rows = np.arange(len(values))
    return 0.5 * (ordered[rows, (n_valid - 1) // 2] + ordered[rows, n_valid // 2])


def _assign(i: np.ndarray, j: np.ndarray, cost: np.ndarray, death_cost: float) -> list[tuple[int, int]]:
    """Minimum-cost links between tracks ``i`` and localizations ``j`` (candidate pairs with ``cost``),
    each track linked at most once or left unlinked at ``death_cost``; returns ``(track, localization)``."""
    # a track with one candidate that no other track wants: always linked (any allowed link costs less
    # than none); only the contested pairs need an assignment
    lone = (np.bincount(i)[i] == 1) & (np.bincount(j)[j] == 1)
    out = list(zip(i[lone].tolist(), j[lone].tolist()))
    if lone.all():
        return out
    i, j, cost = i[~lone], j[~lone], cost[~lone]
    ui, ri = np.unique(i, return_inverse=True)
    uj, rj = np.unique(j, return_inverse=True)
    if len(ui) <= _DENSE_LIMIT:
        return out + _solve(ui, uj, ri, rj, cost, death_cost)
    # sparse: every track is matched once (to a localization or to its own 'unlinked' column), so a
    # constant added to every cost changes nothing; it keeps the weights positive (zero means no edge)
    n_i, n_j = len(ui), len(uj)
    shift = 1.0 - min(float(np.min(cost)), death_cost)
    rows = np.concatenate([ri, np.arange(n_i)])
    cols = np.concatenate([rj, n_j + np.arange(n_i)])
    weights = np.concatenate([cost + shift, np.full(n_i, death_cost + shift)])
    graph = csr_matrix((weights, (rows, cols)), shape=(n_i, n_j + n_i))
    r, c = min_weight_full_bipartite_matching(graph)
    chosen = c < n_j
    return out + list(zip(ui[r[chosen]].tolist(), uj[c[chosen]].tolist()))


def _solve(ui: np.ndarray, uj: np.ndarray, ri: np.ndarray, rj: np.ndarray, cost: np.ndarray,
           death_cost: float) -> list[tuple[int, int]]:
    """Dense assignment of ``len(ui)`` tracks to ``len(uj)`` localizations or to their own 'unlinked' column."""
    n_i, n_j = len(ui), len(uj)
    matrix = np.full((n_i, n_j + n_i), np.inf)
    matrix[ri, rj] = cost
    matrix[np.arange(n_i), n_j + np.arange(n_i)] = death_cost
    rows, cols = linear_sum_assignment(matrix)
    chosen = cols < n_j
    return list(zip(ui[rows[chosen]].tolist(), uj[cols[chosen]].tolist()))
