"""Tests of the streak merge in tracking.localize.resolve_overlaps.

A fast particle's motion-blurred streak can show two DoG maxima a few px apart, hence two
localizations of one particle; ``resolve_overlaps`` merges them into one localization at
the streak's centre. Two separate particles must stay two, and isolated round spots must
come back exactly as ``localize_arrays`` fitted them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from napari_spt_diffusion import Acquisition
from napari_spt_diffusion.simulation.render import camera_image as camera
from napari_spt_diffusion.simulation.render import expected_photons
from napari_spt_diffusion.tracking import detect_and_localize, detect_frame, localize_frame, locate_frame
from napari_spt_diffusion.tracking.detect import detect_photons
from napari_spt_diffusion.tracking.localize import localize_arrays
from napari_spt_diffusion.tracking.overlaps import resolve_overlaps

ACQ = Acquisition()
SHAPE = (192, 192)
PHOTONS = 1000.0
#: Exposed fraction of the frame at each of the 10 sub-steps of a "dwelling" streak: the
#: particle lingers at both ends of its path (as a Brownian path often does), which gives
#: the two-lobed streak that the DoG sees as two maxima.
DWELL_T = np.array([-0.5, -0.5, -0.45, -0.4, -0.2, 0.2, 0.4, 0.45, 0.5, 0.5])


def grid(rng: np.random.Generator, spacing: int) -> np.ndarray:
    """Sites ``(M, 2)`` on a square grid over SHAPE, jittered by +-0.5 px."""
    g = np.arange(spacing // 2, SHAPE[0] - spacing // 2 + 1, spacing)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    return np.column_stack([yy.ravel(), xx.ravel()]).astype(float) + rng.uniform(-0.5, 0.5, (yy.size, 2))


def static(sites: np.ndarray) -> np.ndarray:
    """Sub-step positions ``(M, S, 2)`` of particles that do not move."""
    return np.repeat(sites[:, None, :], ACQ.substeps_per_frame, axis=1)


def dwell_streaks(rng: np.random.Generator, centres: np.ndarray, length_px: float) -> np.ndarray:
    """Sub-step positions ``(M, S, 2)`` of two-lobed streaks ``length_px`` long, random directions,
    whose exposure mean is ``centres``."""
    angle = rng.uniform(0.0, 2.0 * np.pi, len(centres))
    vector = length_px * np.column_stack([np.sin(angle), np.cos(angle)])
    path = DWELL_T[None, :, None] * vector[:, None, :]
    return centres[:, None, :] + path - path.mean(axis=1, keepdims=True)


def frame_of(rng: np.random.Generator, positions: np.ndarray) -> np.ndarray:
    """Camera frame (ADU) of particles at sub-step positions ``(M, S, 2)``, PHOTONS each."""
    return camera(expected_photons(positions, SHAPE, ACQ, PHOTONS).sum(axis=0), ACQ, rng)


def first_and_second_pass(frame_adu: np.ndarray, **options) -> tuple[dict, dict]:
    """Fits of ``localize_arrays`` and of ``resolve_overlaps`` on them, for one frame."""
    photons = ACQ.adu_to_photons(frame_adu)
    peaks, _ = detect_photons(photons, ACQ)
    fitted = localize_arrays(photons, peaks, ACQ)
    second, _ = resolve_overlaps(photons, fitted, ACQ, **options)
    return fitted, second


def positions_of(table: dict) -> np.ndarray:
    return np.column_stack([table["y_px"], table["x_px"]])


def counts_near(table: dict, points: np.ndarray, radius: float) -> np.ndarray:
    return np.array([len(h) for h in cKDTree(positions_of(table)).query_ball_point(points, radius)])


def test_streak_with_two_maxima_gives_one_localization_at_its_centre():
    # half the particles are fast, two-lobed streaks 5 px long, the others static (they give
    # the frame's typical single-spot light); without the merge nearly every streak gives two
    # localizations, with it one, near the streak's centre (its exposure mean), holding the
    # particle's light
    rng = np.random.default_rng(5)
    errors, photons, n_twice = [], [], 0
    for _ in range(2):
        sites = grid(rng, 24)
        fast = np.arange(len(sites)) % 2 == 0
        streaks = dwell_streaks(rng, sites[fast], 5.0)
        frame = frame_of(rng, np.concatenate([static(sites[~fast]), streaks]))
        fitted, merged = first_and_second_pass(frame)
        _, unmerged = first_and_second_pass(frame, merge_streaks=False)
        centres = streaks.mean(axis=1)
        twice = counts_near(unmerged, centres, 5.0) == 2
        n_twice += int(twice.sum())
        assert np.all(counts_near(merged, centres, 5.0)[twice] == 1)
        distance, index = cKDTree(positions_of(merged)).query(centres[twice])
        errors.append(distance)
        photons.append(merged["photons"][index])
        # the static spots keep one localization each
        assert np.all(counts_near(merged, sites[~fast], 4.0) == 1)
    assert n_twice >= 40  # of 50 streaks
    errors, photons = np.concatenate(errors), np.concatenate(photons)
    assert np.median(errors) < 0.3 and errors.max() < 1.0
    assert np.all(np.abs(photons / PHOTONS - 1.0) < 0.25)


def test_streak_alone_in_a_frame_is_merged_on_shape_alone():
    # a frame with one particle has no brightness reference: a straight streak 9 px long
    # (light spread evenly along it; the DoG often finds a maximum near each end) is
    # explained by the streak model at least as well as by two spots, so it is merged
    rng = np.random.default_rng(6)
    t = np.linspace(-0.5, 0.5, ACQ.substeps_per_frame)
    merged_any = 0
    for _trial in range(8):
        centre = np.array([[96.3, 95.6]]) + rng.uniform(-0.5, 0.5, (1, 2))
        angle = rng.uniform(0.0, 2.0 * np.pi)
        path = centre[:, None, :] + 9.0 * t[None, :, None] * np.array([np.sin(angle), np.cos(angle)])
        frame = frame_of(rng, path)
        _, unmerged = first_and_second_pass(frame, merge_streaks=False)
        _, merged = first_and_second_pass(frame)
        if counts_near(unmerged, centre, 6.0)[0] == 2:
            merged_any += 1
            assert counts_near(merged, centre, 6.0)[0] == 1
            assert cKDTree(positions_of(merged)).query(centre)[0][0] < 0.5
    assert merged_any >= 3


def test_two_round_particles_3_to_4_px_apart_stay_two():
    # pairs of static particles 3-4 px apart (random direction), among single static spots:
    # each pair holds two particles' light and two round spots explain it, so nothing is
    # merged -- the second pass gives exactly what it gives without the merge -- and nearly
    # every particle has a localization within 1 px (the first pass alone finds ~55 %)
    rng = np.random.default_rng(7)
    found, total = 0, 0
    for _ in range(2):
        sites = grid(rng, 24)
        paired = np.arange(len(sites)) % 2 == 0
        angle = rng.uniform(0.0, 2.0 * np.pi, paired.sum())
        separation = rng.uniform(3.0, 4.0, paired.sum())
        offset = 0.5 * separation[:, None] * np.column_stack([np.sin(angle), np.cos(angle)])
        particles = np.concatenate([sites[~paired], sites[paired] - offset, sites[paired] + offset])
        frame = frame_of(rng, static(particles))
        fitted, second = first_and_second_pass(frame)
        _, without = first_and_second_pass(frame, merge_streaks=False)
        for key in second:
            np.testing.assert_array_equal(second[key], without[key])
        in_pairs = particles[(~paired).sum():]
        distance, _ = cKDTree(positions_of(second)).query(in_pairs)
        found += int((distance < 1.0).sum())
        total += len(in_pairs)
    assert found / total >= 0.9


def test_two_round_particles_alone_in_a_frame_stay_two():
    # no brightness reference (two particles in the frame): the shape rule alone keeps
    # two round spots 3.5 px apart as two, one near each particle
    rng = np.random.default_rng(8)
    for _ in range(6):
        centre = np.array([96.0, 96.0]) + rng.uniform(-0.5, 0.5, 2)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        offset = 1.75 * np.array([np.sin(angle), np.cos(angle)])
        particles = np.array([centre - offset, centre + offset])
        _, second = first_and_second_pass(frame_of(rng, static(particles)))
        distance, index = cKDTree(positions_of(second)).query(particles)
        assert len(second["y_px"]) == 2 and index[0] != index[1] and np.all(distance < 1.5)


def test_isolated_round_spots_are_unchanged_next_to_merged_streaks():
    # isolated static spots (no other spot within 9 px = 3 window half-widths) come back from
    # the second pass bit for bit as localize_arrays fitted them, in frames where streaks
    # elsewhere are merged
    rng = np.random.default_rng(9)
    n_merged, n_isolated = 0, 0
    for _ in range(2):
        sites = grid(rng, 24)
        fast = np.arange(len(sites)) % 3 == 0
        frame = frame_of(rng, np.concatenate([static(sites[~fast]), dwell_streaks(rng, sites[fast], 5.0)]))
        fitted, second = first_and_second_pass(frame)
        n_merged += len(fitted["y_px"]) - len(second["y_px"])
        first = positions_of(fitted)
        distance, _ = cKDTree(first).query(first, k=2)
        isolated = np.flatnonzero(distance[:, 1] > 9.0)
        n_isolated += isolated.size
        # rows of the second pass that hold an isolated spot: same position bit for bit
        index = cKDTree(positions_of(second)).query(first[isolated])[1]
        for key in fitted:
            np.testing.assert_array_equal(second[key][index], fitted[key][isolated])
    assert n_merged >= 15 and n_isolated >= 80


def test_single_spot_fit_keeps_both_lobes_and_spot_path_merges_them():
    # detect_frame + localize_frame (the single-spot fit alone) keep one row per DoG maximum:
    # a two-lobed streak gives two rows there, and one in the spot path (detect_and_localize
    # and locate_frame, which the training samples and the napari Preview use)
    rng = np.random.default_rng(10)
    sites = grid(rng, 24)
    fast = np.arange(len(sites)) % 2 == 0
    streaks = dwell_streaks(rng, sites[fast], 5.0)
    frame = frame_of(rng, np.concatenate([static(sites[~fast]), streaks]))
    peaks = detect_frame(frame, ACQ)
    table = localize_frame(frame, peaks, ACQ)
    assert len(table) == len(peaks)
    centres = streaks.mean(axis=1)
    fitted = {c: table[c].to_numpy() for c in ("y_px", "x_px")}
    twice = counts_near(fitted, centres, 5.0) == 2
    assert twice.sum() >= 20
    result = detect_and_localize(frame[None], ACQ)
    assert result.attrs["n_merged"] >= twice.sum() - 1
    assert len(result) == len(table) - result.attrs["n_merged"] + result.attrs["n_split"]
    assert math.isfinite(float(result["loc_precision_nm"].max()))
    located = locate_frame(frame, ACQ)
    inside = located[located_inside(located, frame.shape)]
    for column in ("y_px", "x_px", "photons"):
        np.testing.assert_allclose(np.sort(inside[column].to_numpy()), np.sort(result[column].to_numpy()))


def located_inside(table, shape):
    """Rows of a ``locate_frame`` table whose centre lies inside a frame of ``shape``."""
    y, x = table["y_px"].to_numpy(), table["x_px"].to_numpy()
    return (y >= -0.5) & (y < shape[0] - 0.5) & (x >= -0.5) & (x < shape[1] - 0.5)
