"""Tests of tracking.motion_link: relinking with each particle's own diffusivity."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.tracking import motion_link as ml
from napari_spt_diffusion.tracking.encounters import EncounterRules
from napari_spt_diffusion.tracking.link import link
from napari_spt_diffusion.tracking.motion_link import prior_step_variance_px2, relink_by_motion


def _identities_kept(tracks: pd.DataFrame) -> bool:
    """Every output track holds localizations of one particle only (column ``truth``)."""
    return bool(tracks.groupby("track_id")["truth"].nunique().eq(1).all())


def _slow_fast_pass(rng: np.random.Generator, n: int = 40) -> pd.DataFrame:
    """A nearly immobile particle (0.03 px steps) and a fast one (about 2 px steps) that jumps across
    it, 1 px before and 1 px after it, at frames 19 -> 20: nearest-neighbour linking (the smaller sum
    of squared steps) hands the fast particle's future to the slow one there."""
    slow = np.array([30.0, 30.0]) + np.cumsum(rng.normal(0.0, 0.03, size=(n, 2)), axis=0)
    fast = np.cumsum(rng.normal(0.0, 1.4, size=(n, 2)), axis=0)
    fast += (slow[19] + np.array([0.0, -1.0])) - fast[19]
    fast[20:] += (slow[20] + np.array([0.0, 1.0])) - fast[20]
    rows = [(f, *slow[f], 0) for f in range(n)] + [(f, *fast[f], 1) for f in range(n)]
    table = pd.DataFrame(rows, columns=["frame", "y_px", "x_px", "truth"])
    table["frame"] = table["frame"].astype(int)
    table["loc_precision_nm"] = 2.0
    return table


def test_a_slow_particle_keeps_its_track_when_a_fast_one_passes():
    # 20 random versions of the scene: a real trap for nearest-neighbour linking, and the first pass's swap
    # must not mislead the relinking through the priors of the swapped localizations
    acq = Acquisition()
    nearest_kept = relinked_kept = 0
    for seed in range(20):
        table = _slow_fast_pass(np.random.default_rng(seed))
        nearest = link(table, acq, search_range_px=8.0, encounter_rules=EncounterRules(motion_linking=False)).tracks
        relinked = link(table, acq, search_range_px=8.0, encounter_rules=EncounterRules(motion_linking=True)).tracks
        nearest_kept += _identities_kept(nearest)
        relinked_kept += _identities_kept(relinked) and relinked["track_id"].nunique() == 2
    assert nearest_kept <= 2
    assert relinked_kept >= 18


def test_a_particle_that_unbinds_stays_one_track():
    # bound (0.03 px steps) for 40 frames, then free (2 px steps) for 40, alone in the field
    rng = np.random.default_rng(5)
    steps = np.r_[rng.normal(0.0, 0.03, size=(40, 2)), rng.normal(0.0, 2.0, size=(40, 2))]
    path = np.array([40.0, 40.0]) + np.cumsum(steps, axis=0)
    table = pd.DataFrame({"frame": np.arange(80), "y_px": path[:, 0], "x_px": path[:, 1]})
    out = link(table, Acquisition(), search_range_px=12.0, encounter_rules=EncounterRules(motion_linking=True)).tracks
    assert out["track_id"].nunique() == 1


def test_gaps_within_memory_are_bridged():
    rng = np.random.default_rng(7)
    path = np.array([20.0, 20.0]) + np.cumsum(rng.normal(0.0, 0.3, size=(30, 2)), axis=0)
    frames = np.delete(np.arange(30), [10, 11, 20])  # a gap of 2 frames and one of 1
    ids = relink_by_motion(frames, path[frames], np.full(len(frames), 0.09), search_range_px=5.0, memory_frames=2)
    assert len(np.unique(ids)) == 1
    ids = relink_by_motion(frames, path[frames], np.full(len(frames), 0.09), search_range_px=5.0, memory_frames=1)
    assert len(np.unique(ids)) == 2  # the 2-frame gap is beyond a memory of 1


def test_links_stay_within_the_search_range():
    frames = np.array([0, 1, 2, 3])
    positions = np.array([[10.0, 10.0], [10.0, 11.0], [10.0, 16.0], [10.0, 17.0]])
    ids = relink_by_motion(frames, positions, np.full(4, 1.0), search_range_px=3.0, memory_frames=0)
    assert ids.tolist() == [0, 0, 1, 1]


def test_prior_variance_measures_brownian_steps():
    rng = np.random.default_rng(11)
    rows = []
    for k, sigma in enumerate((0.2, 1.0)):
        path = np.cumsum(rng.normal(0.0, sigma, size=(400, 2)), axis=0)
        rows += [(k, f, *path[f]) for f in range(400)]
    a = np.array(rows)
    prior = prior_step_variance_px2(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2:4])
    for k, sigma in enumerate((0.2, 1.0)):
        assert np.median(prior[a[:, 0] == k]) == pytest.approx(sigma**2, rel=0.15)
    # a track without links gets the median of all links; the floor applies
    single = prior_step_variance_px2(np.array([0, 0, 1]), np.array([0, 1, 0]),
                                     np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0]]), floor_px2=0.01)
    assert single[2] == pytest.approx(0.5 / math.log(2.0))


def test_empty_and_bad_input():
    assert len(relink_by_motion(np.zeros(0, int), np.zeros((0, 2)), np.zeros(0), search_range_px=3.0,
                                memory_frames=2)) == 0
    with pytest.raises(ValueError, match="search_range_px"):
        relink_by_motion(np.zeros(1, int), np.zeros((1, 2)), np.ones(1), search_range_px=float("nan"), memory_frames=2)


def test_prior_follows_each_row_whatever_the_row_order():
    rng = np.random.default_rng(2)
    rows = []
    for k, sigma in enumerate((0.1, 0.5, 2.0)):
        path = np.cumsum(rng.normal(0.0, sigma, size=(30, 2)), axis=0)
        rows += [(k, f, *path[f]) for f in range(30)]
    a = np.array(rows)
    prior = prior_step_variance_px2(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2:4])
    shuffle = rng.permutation(len(a))
    b = a[shuffle]
    shuffled = prior_step_variance_px2(b[:, 0].astype(int), b[:, 1].astype(int), b[:, 2:4])
    np.testing.assert_allclose(shuffled, prior[shuffle])
    assert np.median(prior[a[:, 0] == 0]) < np.median(prior[a[:, 0] == 1]) < np.median(prior[a[:, 0] == 2])


def test_sparse_and_dense_assignments_agree():
    # a crowd larger than the dense limit: the sparse matching must find the same minimum total cost
    rng = np.random.default_rng(9)
    n_tracks, n_locs = 80, 70
    i, j = np.nonzero(rng.random((n_tracks, n_locs)) < 0.08)
    cost = rng.normal(0.0, 3.0, size=len(i))
    death = 8.0
    sparse = ml._assign(i, j, cost, death)
    ui, ri = np.unique(i, return_inverse=True)
    uj, rj = np.unique(j, return_inverse=True)
    dense = ml._solve(ui, uj, ri, rj, cost, death)
    lookup = {(a, b): c for a, b, c in zip(i.tolist(), j.tolist(), cost.tolist())}

    def total(pairs):
        linked = {a for a, _ in pairs}
        assert len(linked) == len(pairs) and len({b for _, b in pairs}) == len(pairs)  # one to one
        return sum(lookup[p] for p in pairs) + death * (len(ui) - len(linked))

    assert total(sparse) == pytest.approx(total(dense))


def test_bad_priors_and_memory():
    frames = np.array([0, 1, 2])
    positions = np.array([[5.0, 5.0], [5.0, 5.5], [5.0, 6.0]])
    ids = relink_by_motion(frames, positions, np.array([np.nan, np.inf, 0.2]), search_range_px=3.0, memory_frames=0)
    assert ids.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="memory_frames"):
        relink_by_motion(frames, positions, np.ones(3), search_range_px=3.0, memory_frames=-1)


def test_link_says_how_many_links_the_relinking_changed():
    table = _slow_fast_pass(np.random.default_rng(0))
    result = link(table, Acquisition(), search_range_px=8.0)
    notes = [m for m in result.messages if m.startswith("Relinking by each particle's own motion changed")]
    assert len(notes) == 1 and int(notes[0].split("changed ")[1].split()[0]) >= 1
    off = link(table, Acquisition(), search_range_px=8.0, encounter_rules=EncounterRules(motion_linking=False))
    assert not any("Relinking" in m for m in off.messages)


def test_ring_median_matches_nanmedian():
    rng = np.random.default_rng(4)
    values = rng.random((50, 10))
    n_valid = rng.integers(1, 11, size=50)
    values[np.arange(10)[None, :] >= n_valid[:, None]] = np.nan
    np.testing.assert_allclose(ml._ring_median(values, n_valid), np.nanmedian(values, axis=1))
