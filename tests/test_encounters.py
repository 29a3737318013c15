"""Tests of tracking.encounters: cutting tracks where two particles may have swapped."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.tracking.encounters import (
    EncounterRules,
    LinkEnds,
    split_encounters,
    swap_log_likelihood_ratio,
    track_step_variance_px2,
)
from napari_spt_diffusion.tracking.link import link


def _table(tracks: dict[int, list[tuple[int, float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``{track: [(frame, y, x), ...]}`` -> (track_id, frame, positions) arrays."""
    rows = [(k, f, y, x) for k, pts in tracks.items() for f, y, x in pts]
    a = np.array(rows, dtype=float)
    return a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2:4]


def _cut_links(old: np.ndarray, frame: np.ndarray, new: np.ndarray) -> set[tuple[int, int]]:
    """Links ``(old track, frame before the cut)`` that the new ids separate."""
    order = np.lexsort((frame, old))
    o, f, n = old[order], frame[order], new[order]
    same = o[1:] == o[:-1]
    cut = same & (n[1:] != n[:-1])
    return {(int(o[k]), int(f[k])) for k in np.flatnonzero(cut)}


def _crossing_pair(rng: np.random.Generator, n: int = 21, separation: float = 0.5):
    """Two particles on parallel lines ``separation`` px apart, passing each other at frame n // 2."""
    t = np.arange(n)
    noise = rng.normal(0.0, 0.05, size=(2, n, 2))
    a = [(int(f), 10.0 + noise[0, f, 0], float(f) + noise[0, f, 1]) for f in t]
    b = [(int(f), 10.0 + separation + noise[1, f, 0], float(n - 1 - f) + noise[1, f, 1]) for f in t]
    return _table({0: a, 1: b})


#: The swap and gap rules alone: no repair, every ambiguous pair cut (version 0.1's rule).
PLAIN = EncounterRules(max_expected_bias=0.0, repair_margin=math.inf)
#: The default with the tail test over ten links.
TAILS = EncounterRules(tail_links=10)


def _fast_slow_crossing(rng: np.random.Generator, n: int = 21, separation: float = 0.3):
    """A diffusing particle (1 px steps per axis) meets a slower one (0.3 px) between frames
    n // 2 - 1 and n // 2: ``separation`` px apart, then both step so that the swap is not
    clearly less likely than the links (LLR about 1 nat at the default separation)."""
    mid = n // 2
    paths = []
    for sigma, start, step in ((1.0, (10.0, 10.0), (0.2, 0.5)), (0.3, (10.0 + separation, 10.0), (-0.2, 0.1))):
        steps = rng.normal(0.0, sigma, size=(n, 2))
        steps[0] = 0.0
        steps[mid] = step
        path = np.cumsum(steps, axis=0)
        paths.append(path - path[mid - 1] + np.array(start))
    return _table({k: [(int(f), *paths[k][f]) for f in range(n)] for k in (0, 1)})


def test_crossing_at_half_a_pixel_is_cut_on_both_tracks():
    tid, frame, pos = _crossing_pair(np.random.default_rng(1))
    split = split_encounters(tid, frame, pos, rules=PLAIN)
    cuts = _cut_links(tid, frame, split.track_id)
    middle = 10
    for track in (0, 1):
        near = [f for k, f in cuts if k == track]
        assert near, f"track {track} was not cut at the crossing"
        assert all(middle - 2 <= f <= middle + 1 for f in near), near
    assert split.n_swap_cuts == len(cuts)
    assert split.n_tracks_after == split.n_tracks_before + len(cuts)


def test_crossing_of_particles_moving_alike_is_kept_by_default():
    # same step variance: whichever assignment is true, neither track's diffusion estimate moves
    tid, frame, pos = _crossing_pair(np.random.default_rng(1))
    split = split_encounters(tid, frame, pos)
    assert split.n_cuts == 0 and split.n_repairs == 0
    assert split.n_swap_cuts == 0


def test_crossing_of_a_fast_and_a_slow_particle_is_cut_by_default():
    tid, frame, pos = _fast_slow_crossing(np.random.default_rng(11))
    split = split_encounters(tid, frame, pos)
    cuts = _cut_links(tid, frame, split.track_id)
    for track in (0, 1):
        assert any(k == track and 8 <= f <= 11 for k, f in cuts), (track, cuts)
    # far apart, the same two particles are left alone
    tid, frame, pos = _fast_slow_crossing(np.random.default_rng(11), separation=8.0)
    assert split_encounters(tid, frame, pos).n_cuts == 0


def _perpendicular_crossing(rng: np.random.Generator, n: int = 31) -> tuple:
    """Two particles of equal step variance along perpendicular axes (1 and 0.1 px per axis) meeting
    0.3 px apart between frames n // 2 - 1 and n // 2."""
    mid = n // 2
    paths = []
    for scale, start, step in (((1.0, 0.1), (10.0, 10.0), (0.2, 0.5)), ((0.1, 1.0), (10.3, 10.0), (-0.2, 0.1))):
        steps = rng.normal(0.0, 1.0, size=(n, 2)) * np.array(scale)
        steps[0] = 0.0
        steps[mid] = step
        path = np.cumsum(steps, axis=0)
        paths.append(path - path[mid - 1] + np.array(start))
    return _table({k: [(f, *paths[k][f]) for f in range(n)] for k in (0, 1)})


def _exchange_tails(tid: np.ndarray, frame: np.ndarray, after_frame: int) -> np.ndarray:
    """Track ids of the two tracks 0 and 1 with their rows after ``after_frame`` exchanged."""
    out = tid.copy()
    late = frame > after_frame
    out[late] = 1 - tid[late]
    return out


@pytest.mark.parametrize("scene", ["fast_slow", "perpendicular"])
def test_tails_spare_the_cut_of_an_ambiguous_crossing_linked_right(scene):
    # the crossing step alone is ambiguous (cut); the ten links after it show that each track kept its
    # particle: with the tail test the tracks are kept whole (but for their last link, which has no tail).
    # Linked the wrong way (tails exchanged), the tails cannot spare the cut: it stays. (Repairs off: they
    # judge the crossing step alone, and in the fast-slow scene one of its steps favours an exchange.)
    rng = np.random.default_rng(11 if scene == "fast_slow" else 14)
    tid, frame, pos = (_fast_slow_crossing(rng, n=31) if scene == "fast_slow" else _perpendicular_crossing(rng))
    mid = 15
    no_repair = EncounterRules(repair_margin=math.inf)
    assert split_encounters(tid, frame, pos, rules=no_repair).n_swap_cuts > 0
    tails = EncounterRules(repair_margin=math.inf, tail_links=10)
    right = split_encounters(tid, frame, pos, rules=tails)
    assert not {c for c in _cut_links(tid, frame, right.track_id) if c[1] < 29}
    wrong = _exchange_tails(tid, frame, mid - 1)
    cut = _cut_links(wrong, frame, split_encounters(wrong, frame, pos, rules=tails).track_id)
    assert {(0, mid - 1), (1, mid - 1)} <= cut
    # nor can they make a cut the crossing steps do not ask for: earlier links, clear on their own, stay
    # (the tails that follow them hold the exchange and read as swapped)
    plain_cuts = _cut_links(wrong, frame, split_encounters(wrong, frame, pos, rules=no_repair).track_id)
    assert {c for c in cut if c[1] < mid - 2} <= {c for c in plain_cuts if c[1] < mid - 2}


def test_tail_test_is_off_for_tracks_that_begin_at_the_encounter():
    # a track with fewer than three links before the encounter has no covariance of its own there: the
    # crossing step alone decides
    tid, frame, pos = _fast_slow_crossing(np.random.default_rng(11), n=31)
    late = (frame >= 13) & (frame <= 16)  # boundaries 13|14 .. 15|16: at most two links before each
    with_tail = split_encounters(tid[late], frame[late], pos[late], rules=TAILS)
    without = split_encounters(tid[late], frame[late], pos[late])
    assert with_tail.n_swap_cuts == without.n_swap_cuts > 0


def test_weighing_by_share_keeps_an_encounter_near_a_track_end():
    # the same ambiguous crossing, once mid-track and once two links after both tracks begin: a swap there
    # would hand the other particle two of a track's links, too few to bias its estimate
    share = EncounterRules(weigh_by_share=True)
    tid, frame, pos = _fast_slow_crossing(np.random.default_rng(11), n=41)
    assert split_encounters(tid, frame, pos, rules=share).n_swap_cuts > 0
    late = frame >= 18  # the encounter is between frames 19 and 20
    assert split_encounters(tid[late], frame[late], pos[late], rules=share).n_swap_cuts == 0
    # the default rule (no weighing) still cuts it
    assert split_encounters(tid[late], frame[late], pos[late]).n_swap_cuts > 0


def test_expected_bias_threshold_decides_between_cut_and_keep():
    tid, frame, pos = _fast_slow_crossing(np.random.default_rng(12), separation=1.0)
    cut = split_encounters(tid, frame, pos, rules=EncounterRules(max_expected_bias=0.01))
    kept = split_encounters(tid, frame, pos, rules=EncounterRules(max_expected_bias=0.99))
    assert cut.n_swap_cuts > 0 and kept.n_swap_cuts == 0


def test_anisotropic_particles_with_other_axes_count_as_different():
    # equal step variance, perpendicular axes: a swap would turn each tensor, so the pair is cut even at
    # a bias threshold that an isotropic comparison (|v_A - v_B| / (v_A + v_B) ~ 0) would never reach
    # (with the tail test the two are also told apart by their tails, a test above)
    mid = 15
    tid, frame, pos = _perpendicular_crossing(np.random.default_rng(14))
    split = split_encounters(tid, frame, pos, rules=EncounterRules(max_expected_bias=0.3))
    cuts = _cut_links(tid, frame, split.track_id)
    assert {(0, mid - 1), (1, mid - 1)} <= cuts


def test_swapped_pair_is_repaired_not_cut():
    # a fast particle A (1 px steps) and a slow one B (0.05 px), 1 px apart at frame 30; the input
    # linked A's first 30 frames to B's last 10 and the other way round
    rng = np.random.default_rng(13)
    n, k = 40, 30
    a = np.cumsum(rng.normal(0, 1.0, size=(n, 2)), axis=0)
    a += np.array([20.0, 20.0]) - a[k - 1]
    b = np.cumsum(rng.normal(0, 0.05, size=(n, 2)), axis=0)
    b += np.array([21.0, 20.0]) - b[k - 1]
    wrong = {0: [(f, *a[f]) for f in range(k)] + [(f, *b[f]) for f in range(k, n)],
             1: [(f, *b[f]) for f in range(k)] + [(f, *a[f]) for f in range(k, n)]}
    tid, frame, pos = _table(wrong)
    truth = np.r_[np.zeros(k), np.ones(n - k), np.ones(k), np.zeros(n - k)].astype(int)  # row order of _table
    split = split_encounters(tid, frame, pos)
    assert split.n_repairs >= 1  # a wrong exchange of a round may be undone in the next (variances re-measured)
    assert split.n_cuts == 0
    assert pd.crosstab(split.track_id, truth).gt(0).sum(axis=1).eq(1).all()  # every track holds one particle
    assert "exchanged" in split.message()
    plain = split_encounters(tid, frame, pos, rules=PLAIN)
    assert plain.n_repairs == 0 and plain.n_cuts >= 2


def test_slow_tracks_three_pixels_apart_are_not_cut():
    rng = np.random.default_rng(2)
    n = 40
    a = [(f, 10.0 + rng.normal(0, 0.05), 10.0 + rng.normal(0, 0.05)) for f in range(n)]
    b = [(f, 13.0 + rng.normal(0, 0.05), 10.0 + rng.normal(0, 0.05)) for f in range(n)]
    tid, frame, pos = _table({0: a, 1: b})
    split = split_encounters(tid, frame, pos)
    assert split.n_cuts == 0
    assert split.n_tracks_after == 2
    # each old track keeps one id
    assert len(set(zip(tid.tolist(), split.track_id.tolist()))) == 2


def test_lone_track_is_never_cut_even_with_gaps_and_wild_steps():
    rng = np.random.default_rng(3)
    frames = np.array([0, 1, 2, 5, 6, 8, 9, 10, 11, 14])  # gaps of 3, 2 and 3 frames
    steps = rng.normal(0, 3.0, size=(len(frames), 2))
    pos = 50.0 + np.cumsum(steps, axis=0)
    split = split_encounters(np.zeros(len(frames), dtype=np.int64), frames, pos, llr_threshold=1e9, gap_radius_px=100.0)
    assert split.n_cuts == 0
    assert np.all(split.track_id == 0)


def test_new_ids_are_unique_consecutive_and_refine_the_old_tracks():
    rng = np.random.default_rng(4)
    tracks = {}
    for k in range(12):  # a crowded little field: many crossings
        start = rng.uniform(0, 6, size=2)
        pts = start + np.cumsum(rng.normal(0, 0.8, size=(30, 2)), axis=0)
        first = int(rng.integers(0, 10))
        tracks[k * 7 + 3] = [(first + f, y, x) for f, (y, x) in enumerate(pts)]  # sparse old ids
    tid, frame, pos = _table(tracks)
    perm = rng.permutation(len(tid))  # row order must not matter
    tid, frame, pos = tid[perm], frame[perm], pos[perm]
    split = split_encounters(tid, frame, pos, rules=PLAIN)
    new = split.track_id
    assert split.n_cuts > 0
    # every new track lies within one old track, holds one row per frame, and is contiguous in it
    df = pd.DataFrame({"old": tid, "new": new, "frame": frame})
    assert (df.groupby("new")["old"].nunique() == 1).all()
    assert not df.duplicated(["new", "frame"]).any()
    for _, g in df.groupby("old"):
        g = g.sort_values("frame")
        changes = np.count_nonzero(np.diff(g["new"].to_numpy()))
        assert changes == g["new"].nunique() - 1  # pieces do not interleave
    # ids 0..n-1 in order of first appearance
    assert sorted(df["new"].unique()) == list(range(split.n_tracks_after))
    first = df.groupby("new")["frame"].min()
    assert (np.diff(first.to_numpy()) >= 0).all()
    assert split.n_tracks_after - split.n_tracks_before == split.n_cuts
    # without repairs, a row touches a cut exactly when its old track was cut
    pieces = df.groupby("old")["new"].transform("nunique").to_numpy()
    assert np.array_equal(split.touches_cut, pieces > 1)


@pytest.mark.parametrize(
    ("seed", "n_tracks", "box_px", "step_px"),
    [(5, 10, 8.0, (0.2, 1.0)),
     # steps of 0.05-4 px: the boundaries' search radii span several of the k-d tree's bands
     (6, 60, 40.0, (0.05, 4.0))],
)
def test_vectorised_swap_test_matches_a_pair_by_pair_loop(seed, n_tracks, box_px, step_px):
    rng = np.random.default_rng(seed)
    tracks = {}
    for k in range(n_tracks):
        sigma = math.exp(rng.uniform(math.log(step_px[0]), math.log(step_px[1])))
        pts = rng.uniform(0, box_px, size=2) + np.cumsum(rng.normal(0, sigma, size=(15, 2)), axis=0)
        frames = np.sort(rng.choice(np.arange(22), size=15, replace=False))  # with gaps
        tracks[k] = [(int(f), y, x) for f, (y, x) in zip(frames, pts)]
    tid, frame, pos = _table(tracks)
    threshold = 3.0
    split = split_encounters(tid, frame, pos, llr_threshold=threshold, gap_radius_px=0.0, rules=PLAIN)
    # the same test written pair by pair
    links = []
    for k, pts in tracks.items():
        for (fa, ya, xa), (fb, yb, xb) in zip(pts[:-1], pts[1:]):
            links.append((k, fa, fb, np.array([ya, xa]), np.array([yb, xb])))
    var = track_step_variance_px2(np.array([link[0] for link in links]),
                                  np.array([link[2] - link[1] for link in links]),
                                  np.array([link[4] - link[3] for link in links]))
    expected = set()
    for a, b in itertools.combinations(links, 2):
        if a[0] == b[0] or not (a[1] < b[2] and b[1] < a[2]):
            continue  # same track, or no common frame boundary
        llr = swap_log_likelihood_ratio(LinkEnds(a[3][None], a[4][None], np.array([a[1]]), np.array([a[2]])),
                                        LinkEnds(b[3][None], b[4][None], np.array([b[1]]), np.array([b[2]])),
                                        np.array([var[a[0]]]), np.array([var[b[0]]]))[0]
        if llr < threshold:
            expected |= {(a[0], a[1]), (b[0], b[1])}
    assert expected, "the random field should contain ambiguous pairs"
    assert _cut_links(tid, frame, split.track_id) == expected


def test_swap_llr_of_one_frame_links_is_the_separation_dot_product():
    a0, a1 = np.array([[0.0, 0.0]]), np.array([[0.3, 1.0]])
    b0, b1 = np.array([[2.0, 0.5]]), np.array([[1.0, 1.5]])
    one = np.array([0])
    llr = swap_log_likelihood_ratio(LinkEnds(a0, a1, one, one + 1), LinkEnds(b0, b1, one, one + 1), np.array([0.7]))
    expected = float(np.dot(a0[0] - b0[0], a1[0] - b1[0])) / 0.7
    assert llr[0] == pytest.approx(expected)


def _gap_scene():
    """Track 0 moves slowly along y = 10 and is missing at frames 5 and 6; track 1 crosses its path then."""
    a = [(f, 10.0, 10.0 + 0.1 * f) for f in range(12) if f not in (5, 6)]
    b = [(f, 10.0 - 3.0 * (5 - f), 40.0 + 0.1 * f) for f in range(2)]  # far away at first
    b += [(f, 10.0 + 0.05 * (f - 5), 10.5 + 0.1 * (f - 5)) for f in range(2, 12)]  # sits on track 0's path
    return _table({0: a, 1: b})


def test_gap_bridged_past_another_spot_is_cut_there_and_the_other_track_at_the_exit():
    tid, frame, pos = _gap_scene()
    split = split_encounters(tid, frame, pos, llr_threshold=-math.inf, gap_radius_px=2.0, rules=PLAIN)
    assert _cut_links(tid, frame, split.track_id) == {(0, 4), (1, 6)}
    assert split.n_gap_cuts == 2 and split.n_swap_cuts == 0
    off = split_encounters(tid, frame, pos, llr_threshold=-math.inf, gap_radius_px=0.0)
    assert off.n_cuts == 0


def test_gap_far_from_other_spots_is_kept():
    tid, frame, pos = _gap_scene()
    pos = pos.copy()
    pos[tid == 1, 0] += 20.0  # move track 1 away
    split = split_encounters(tid, frame, pos, gap_radius_px=2.0)
    assert split.n_cuts == 0


def test_link_splits_only_when_asked_and_says_so():
    rng = np.random.default_rng(6)
    tid, frame, pos = _fast_slow_crossing(rng, n=31)
    locs = pd.DataFrame({"frame": frame, "y_px": pos[:, 0], "x_px": pos[:, 1]})
    acq = Acquisition()
    plain = link(locs, acq, max_D_um2_s=1.0, min_track_length=5)
    assert plain.n_tracks == 2 and not any("Encounter" in m for m in plain.messages)
    split = link(locs, acq, max_D_um2_s=1.0, min_track_length=5, split_encounters=True)
    assert split.n_tracks > 2
    notes = [m for m in split.messages if m.startswith("Encounter splitting cut")]
    assert len(notes) == 1 and f"became {split.n_tracks}" in notes[0]
    t = split.tracks
    assert list(t.columns[-3:]) == ["track_id", "encounter_cut", "is_short"]
    assert t["encounter_cut"].all()  # both linked tracks were cut, so every piece touches a cut
    assert not plain.tracks["encounter_cut"].any()
    assert sorted(t["track_id"].unique()) == list(range(split.n_tracks))
    # both rules switched off through the rules object: nothing is cut
    off = link(locs, acq, max_D_um2_s=1.0, min_track_length=5, split_encounters=True,
               encounter_rules=EncounterRules(llr_threshold=-math.inf, gap_radius_px=0.0))
    assert off.n_tracks == 2
    lengths = t.groupby("track_id")["frame"].transform("size")
    assert (t["is_short"] == (lengths < 5)).all()
    assert t.equals(t.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True))


def test_bad_inputs_raise_one_clear_error():
    with pytest.raises(ValueError, match="two localizations in one frame"):
        split_encounters(np.array([0, 0]), np.array([3, 3]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shapes"):
        split_encounters(np.array([0, 0]), np.array([3, 4]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="gap_radius_px"):
        split_encounters(np.array([0]), np.array([0]), np.zeros((1, 2)), gap_radius_px=-1.0)
    assert len(split_encounters(np.zeros(0), np.zeros(0), np.zeros((0, 2))).track_id) == 0
