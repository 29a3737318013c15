"""Linking localizations into tracks: trackpy (nearest-neighbour, gap memory), then relinked by motion.

trackpy links every localization to its nearest neighbour in the next frames; the tracks are then
relinked frame by frame with each particle's own step variance
(:mod:`~napari_spt_diffusion.tracking.motion_link`, ``EncounterRules.motion_linking``, on by
default), and optionally cut where identities may have swapped (:mod:`~napari_spt_diffusion.tracking.encounters`).

The search range defaults to what the largest expected diffusion coefficient can
reach in one frame: for 2-D Brownian motion with coefficient ``D`` seen through
localizations of precision ``s`` (per axis), the frame-to-frame displacement
``r`` satisfies ``P(r > rho) = exp(-rho^2 / (4 D dt + 4 s^2))``. The default
``rho = 3 sqrt(4 D dt + 4 s^2)`` therefore loses a true link with probability
``exp(-9) ~ 1e-4`` per frame (motion blur only shortens displacements, so this
is conservative).

Crowded scenes can make trackpy give up with ``SubnetOversizeException``. We then
re-link with trackpy's adaptive search (crowded subnetworks are split by lowering
the range locally), and if that still fails, with a globally smaller range; every
such step is reported in ``LinkResult.messages`` and as a :class:`LinkingWarning`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..acquisition import Acquisition
from . import encounters as _encounters
from . import motion_link as _motion
from .detect import TrackingInputError

__all__ = [
    "LinkResult",
    "LinkingError",
    "LinkingWarning",
    "default_search_range_px",
    "link",
    "SEARCH_RANGE_FACTOR",
]

#: Default search range in units of the 2-D displacement scale sqrt(4 D dt + 4 s^2).
SEARCH_RANGE_FACTOR = 3.0
#: Below this global search range (px) we stop shrinking it and give up.
_MIN_SEARCH_RANGE_PX = 0.5
#: Adaptive search may lower the range inside crowded subnetworks down to this fraction.
_ADAPTIVE_STOP_FRACTION = 0.1


class LinkingError(TrackingInputError):
    """Linking could not be done (bad table, or a scene too crowded at any search range)."""


class LinkingWarning(UserWarning):
    """Linking succeeded only after changing the search range (see ``LinkResult.messages``)."""


@dataclass
class LinkResult:
    """Output of :func:`link`.

    Attributes
    ----------
    tracks
        The input table plus ``track_id`` (int64, 0..n-1 in order of first
        appearance), ``encounter_cut`` (bool, the track is one of several pieces of a
        linked track cut at close encounters; always False without ``split_encounters``)
        and ``is_short`` (bool, track shorter than ``min_track_length`` frames), sorted by
        ``(track_id, frame)`` with a fresh index.
    messages
        Human-readable notes on what the linker had to do (empty when nothing
        unusual happened), e.g. an oversize subnetwork and how it was recovered.
    search_range_px
        The global search range finally used (px).
    memory_frames
        The gap memory used (frames).
    """

    tracks: pd.DataFrame
    messages: list[str] = field(default_factory=list)
    search_range_px: float = float("nan")
    memory_frames: int = 0

    @property
    def n_tracks(self) -> int:
        """Number of tracks (short ones included)."""
        return int(self.tracks["track_id"].nunique()) if len(self.tracks) else 0


def default_search_range_px(
    acquisition: Acquisition,
    max_D_um2_s: float,
    loc_precision_nm: float = 0.0,
    factor: float = SEARCH_RANGE_FACTOR,
) -> float:
    """Search range (px) reaching ``factor`` x the 2-D displacement scale of the fastest particle.

    ``factor * sqrt(4 D dt + 4 s^2)`` converted to pixels, with ``D = max_D_um2_s``,
    ``dt`` the frame interval and ``s`` the localization precision.
    """
    if not (math.isfinite(max_D_um2_s) and max_D_um2_s > 0):
        raise LinkingError(f"max_D_um2_s must be a positive number, got {max_D_um2_s!r}")
    step_px2 = 4.0 * acquisition.diffusion_to_px2_per_frame(float(max_D_um2_s))
    s_px = float(loc_precision_nm) / acquisition.pixel_size_nm if math.isfinite(loc_precision_nm) else 0.0
    return float(factor) * math.sqrt(step_px2 + 4.0 * s_px * s_px)


@contextlib.contextmanager
def _quiet_trackpy() -> Iterator[None]:
    """Silence trackpy's per-frame INFO printing for the duration, then restore its level."""
    logger = logging.getLogger("trackpy")
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _frames_of(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, first, stop)``: rows in order of frame (stable), and where each frame ``first[0] .. `` begins
    and ends in that order (``first``, ``stop`` of length ``max - min + 1``; empty frames begin where they end)."""
    order = np.argsort(frames, kind="stable")
    sorted_frames = frames[order]
    span = np.arange(int(sorted_frames[0]), int(sorted_frames[-1]) + 2)
    edges = np.searchsorted(sorted_frames, span)
    return order, edges[:-1], edges[1:]


def _trackpy_link(coords: pd.DataFrame, search_range: float, memory: int, adaptive: bool) -> np.ndarray:
    """trackpy's particle id of every row of ``coords`` (``frame``, ``y``, ``x``), linked frame by frame.

    trackpy's iterative linker (``trackpy.link_iter``, what ``trackpy.link`` runs inside) is fed one
    frame's positions at a time and its ids are written into one integer array: none of
    ``trackpy.link``'s copies of the table nor its Python list of every id (about 150 bytes per
    localization in all, the largest share of a long movie's memory while linking).
    """
    from trackpy import link_iter

    kwargs = {}
    if adaptive:
        kwargs = {
            "adaptive_stop": max(_ADAPTIVE_STOP_FRACTION * search_range, _MIN_SEARCH_RANGE_PX),
            "adaptive_step": 0.9,
        }
    frames = coords["frame"].to_numpy(dtype=np.int64)
    positions = coords[["y", "x"]].to_numpy(dtype=np.float64)
    order, first, stop = _frames_of(frames)
    t0 = int(frames[order[0]])
    particle = np.full(len(frames), -1, dtype=np.int64)
    frames_in = ((t0 + k, positions[order[first[k]:stop[k]]]) for k in range(len(first)))
    with _quiet_trackpy(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*inplace keyword.*")
        for t, ids in link_iter(frames_in, search_range, memory=memory, **kwargs):
            k = int(t) - t0
            particle[order[first[k]:stop[k]]] = ids
    return particle


def link(
    localizations: pd.DataFrame,
    acquisition: Acquisition,
    *,
    max_D_um2_s: float = 6.0,
    memory_frames: int = 2,
    min_track_length: int = 5,
    search_range_px: float | None = None,
    split_encounters: bool = False,
    encounter_rules: _encounters.EncounterRules | None = None,
) -> LinkResult:
    """Link per-frame localizations into tracks.

    Parameters
    ----------
    localizations
        Table with at least ``frame`` (int), ``y_px`` and ``x_px`` (pixels), e.g.
        from :func:`~napari_spt_diffusion.tracking.detect.detect_and_localize`;
        other columns are carried through. A ``loc_precision_nm`` column, when
        present, widens the default search range by the median precision.
    acquisition
        Pixel size and frame interval, for the default search range.
    max_D_um2_s
        Largest diffusion coefficient expected (um^2/s); sets the default search
        range. The default 6 um^2/s is the top of the range the bundled models
        were trained on.
    memory_frames
        A particle may vanish for up to this many frames and still be linked.
    min_track_length
        Tracks with fewer localizations are kept but flagged ``is_short``.
    search_range_px
        Explicit search range (px); ``None`` uses :func:`default_search_range_px`.
    split_encounters
        Cut tracks where two particles may have swapped identities
        (:func:`~napari_spt_diffusion.tracking.encounters.split_encounters`); the
        number of cuts is reported in ``messages``.
    encounter_rules
        Thresholds of the cuts (:class:`~napari_spt_diffusion.tracking.encounters.EncounterRules`):
        the swap test threshold (nats; a pair of links is cut when the linked assignment is
        less than ``exp(threshold)`` times as likely as the swapped one) and the gap rule
        radius (px; a link bridging a gap is cut when another track's localization lay this
        close to its path during the gap). ``None``: the defaults (5 nats, 2 px). Its
        ``motion_linking`` (applied with or without ``split_encounters``; default on) relinks
        trackpy's tracks with each particle's own diffusivity
        (:func:`~napari_spt_diffusion.tracking.motion_link.relink_by_motion`: a slow particle is
        not handed the steps of a fast one that passes it); ``False`` keeps trackpy's
        nearest-neighbour links as they are.

    Returns
    -------
    LinkResult
        ``tracks`` sorted by ``(track_id, frame)``, ``messages``, the search range
        used. Also warns (:class:`LinkingWarning`) when the search range had to be
        reduced.
    """
    if not isinstance(localizations, pd.DataFrame):
        raise LinkingError("localizations must be a pandas DataFrame with columns frame, y_px, x_px")
    missing = [c for c in ("frame", "y_px", "x_px") if c not in localizations.columns]
    if missing:
        raise LinkingError(f"the localization table lacks column(s): {', '.join(missing)}")
    if int(memory_frames) != memory_frames or memory_frames < 0:
        raise LinkingError(f"memory_frames must be a whole number >= 0, got {memory_frames!r}")
    if int(min_track_length) != min_track_length or min_track_length < 1:
        raise LinkingError(f"min_track_length must be a whole number >= 1, got {min_track_length!r}")
    memory = int(memory_frames)

    table = localizations.drop(columns=[c for c in ("track_id", "encounter_cut", "is_short", "particle")
                                        if c in localizations.columns])
    table = table.reset_index(drop=True)
    frames = table["frame"].to_numpy()
    positions = table[["y_px", "x_px"]].to_numpy(dtype=np.float64)
    if len(table):
        if not np.all(np.isfinite(positions)):
            raise LinkingError("the localization table has NaN or infinite positions")
        if (
            not np.all(np.isfinite(frames.astype(float)))
            or np.any(frames.astype(float) != np.round(frames.astype(float)))
            or np.any(frames < 0)
        ):
            raise LinkingError("frame numbers must be whole numbers >= 0")

    if search_range_px is None:
        precision = 0.0
        if "loc_precision_nm" in table.columns and len(table):
            median = float(np.nanmedian(table["loc_precision_nm"].to_numpy(dtype=float)))
            precision = median if math.isfinite(median) else 0.0
        search_range = default_search_range_px(acquisition, float(max_D_um2_s), precision)
    else:
        search_range = float(search_range_px)
        if not (math.isfinite(search_range) and search_range > 0):
            raise LinkingError(f"search_range_px must be a positive number, got {search_range_px!r}")

    messages: list[str] = []
    if len(table) == 0:
        tracks = table.assign(track_id=pd.Series(dtype=np.int64), encounter_cut=pd.Series(dtype=bool),
                              is_short=pd.Series(dtype=bool))
        return LinkResult(tracks, messages, search_range, memory)

    coords = pd.DataFrame({"frame": frames.astype(np.int64), "y": positions[:, 0], "x": positions[:, 1]})
    particle, search_range = _link_with_recovery(coords, search_range, memory, messages)
    del coords  # long movies: hold as little as possible while the encounters are looked for
    for message in messages:
        warnings.warn(message, LinkingWarning, stacklevel=2)
    precision_px = None
    if "loc_precision_nm" in table.columns:
        precision_px = table["loc_precision_nm"].to_numpy(dtype=float) / acquisition.pixel_size_nm
    rules = _encounters.EncounterRules() if encounter_rules is None else encounter_rules
    if rules.motion_linking:
        relinked = _relink_by_motion(particle, frames.astype(np.int64), positions, precision_px, search_range, memory)
        changed = _links_not_in(relinked, particle, frames)
        if changed:
            messages.append(f"Relinking by each particle's own motion changed {changed} of trackpy's links.")
        particle = relinked

    # Relabel 0..n-1 in order of first appearance (frame, then row order within a frame).
    order = np.lexsort((np.arange(len(frames)), frames))
    codes, _ = pd.factorize(particle[order])
    track_id = np.empty(len(frames), dtype=np.int64)
    track_id[order] = codes
    del order, codes, particle
    if split_encounters:
        split = _encounters.split_encounters(
            track_id, frames.astype(np.int64), positions, loc_precision_px=precision_px, rules=rules,
        )
        # a piece of a linked trajectory that was cut in several: it begins or ends at an encounter
        encounter_cut = split.touches_cut
        track_id = split.track_id
        messages.append(split.message())
    else:
        encounter_cut = np.zeros(len(frames), dtype=bool)
    tracks = table.copy()
    tracks["frame"] = frames.astype(np.int64)
    tracks["track_id"] = track_id
    tracks["encounter_cut"] = encounter_cut
    lengths = np.bincount(track_id)
    tracks["is_short"] = lengths[track_id] < int(min_track_length)
    tracks = tracks.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)
    return LinkResult(tracks, messages, search_range, memory)


def _links_not_in(ids: np.ndarray, reference: np.ndarray, frames: np.ndarray) -> int:
    """How many links of the tracks ``ids`` (consecutive localizations of a track) the tracks
    ``reference`` do not have; both ``(N,)`` over the same rows with their ``frames``."""

    def link_keys(track: np.ndarray) -> np.ndarray:
        order = np.lexsort((frames, track))
        same = track[order][1:] == track[order][:-1]
        return order[:-1][same].astype(np.int64) * len(track) + order[1:][same]

    return int(np.count_nonzero(~np.isin(link_keys(ids), link_keys(reference))))


def _relink_by_motion(particle: np.ndarray, frames: np.ndarray, positions_px: np.ndarray,
                      precision_px: np.ndarray | None, search_range: float, memory: int) -> np.ndarray:
    """trackpy's ids ``particle`` relinked with each track's own step variance (``motion_link``)."""
    # twice the localization variance; NaN where a localization has no precision (both functions ignore it)
    floor = _motion.MIN_VARIANCE_PX2 if precision_px is None else 2.0 * precision_px**2
    prior = _motion.prior_step_variance_px2(particle, frames, positions_px, floor)
    return _motion.relink_by_motion(frames, positions_px, prior, search_range_px=search_range,
                                    memory_frames=memory, floor_px2=floor)


def _link_with_recovery(
    coords: pd.DataFrame, search_range: float, memory: int, messages: list[str]
) -> tuple[np.ndarray, float]:
    """Run trackpy, recovering from oversize subnetworks; returns (particle ids, final range)."""
    from trackpy.linking import SubnetOversizeException

    try:
        return _trackpy_link(coords, search_range, memory, adaptive=False), search_range
    except SubnetOversizeException as error:
        first_error = str(error)
    current = search_range
    messages.append(
        f"Linking at search range {search_range:.2f} px met a crowded group trackpy cannot solve "
        f"({first_error}); re-linking with an adaptive search range that shrinks only in crowded groups "
        f"(down to {max(_ADAPTIVE_STOP_FRACTION * current, _MIN_SEARCH_RANGE_PX):.2f} px)."
    )
    while True:
        try:
            particle = _trackpy_link(coords, current, memory, adaptive=True)
        except SubnetOversizeException as error:
            smaller = 0.7 * current
            if smaller < _MIN_SEARCH_RANGE_PX:
                raise LinkingError(
                    f"the scene is too crowded to link even at a search range of {current:.2f} px ({error})"
                ) from None
            messages.append(
                f"Adaptive linking at {current:.2f} px still failed ({error}); retrying with the whole "
                f"search range reduced to {smaller:.2f} px: fast particles may be split into shorter tracks."
            )
            current = smaller
            continue
        messages.append(f"Linking succeeded with the adaptive search range (global range {current:.2f} px).")
        return particle, current
