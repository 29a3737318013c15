"""Crowding measure (``tracking.crowding``) and the pipeline's ``crowded`` track flag."""

from __future__ import annotations

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.pipeline import Settings, track_and_estimate
from napari_spt_diffusion.simulation.render import camera_image, expected_photons
from napari_spt_diffusion.tracking.crowding import CROWDED_RADIUS_PX, crowded_share, nearest_other_px

ACQ = Acquisition()


def test_nearest_other_distance_per_frame():
    frame = np.array([0, 0, 0, 1, 2, 2, 2])
    y = np.array([0.0, 3.0, 10.0, 5.0, 1.0, np.nan, 1.0])
    x = np.array([0.0, 4.0, 4.0, 5.0, 1.0, 1.0, 3.0])
    d = nearest_other_px(frame, y, x)
    assert d[:3] == pytest.approx([5.0, 5.0, 7.0])
    assert np.isinf(d[3])  # alone in its frame
    assert d[4] == pytest.approx(2.0) and d[6] == pytest.approx(2.0)
    assert np.isinf(d[5])  # a NaN position neither gets nor gives a distance
    assert crowded_share(d[:3]) == pytest.approx(2 / 3)
    assert crowded_share(d[:3], radius_px=4.0) == 0.0
    assert crowded_share(np.array([])) == 0.0
    with pytest.raises(ValueError, match="same length"):
        nearest_other_px(frame[:3], y, x)


def test_pipeline_flags_tracks_with_a_close_neighbour(toy_models):
    rng = np.random.default_rng(4)
    centres = np.array([[20.0, 20.0], [20.0, 20.0 + CROWDED_RADIUS_PX - 2.0], [45.0, 45.0]])
    n_frames, s = 12, ACQ.substeps_per_frame
    frames = []
    for _ in range(n_frames):
        pos = centres + rng.normal(0.0, 0.05, centres.shape)
        sub = np.repeat(pos[:, None, :], s, axis=1)  # (3, S, 2): static within the frame
        frames.append(camera_image(expected_photons(sub, (64, 64), ACQ).sum(axis=0), ACQ, rng))
    movie = np.stack(frames)
    settings = Settings(model=toy_models["sequence"], device="cpu", min_track_length=5)
    results = track_and_estimate(movie, ACQ, settings)
    summary = results.summary
    assert len(summary) == 3
    crowded = summary["notes"].astype(object).fillna("").str.contains("crowded")
    far = (summary["x_mean_px"] - 45).abs() < 1
    assert not crowded[far].any()
    assert crowded[~far].all()


def test_encounter_flag_on_pieces_of_a_cut_track():
    import pandas as pd

    from napari_spt_diffusion.pipeline import _track_flags

    table = pd.DataFrame({"encounter_cut": [False, False, True, True], "nearest_other_px": [20.0] * 4})
    assert _track_flags(("windows",), table, 0, 2) == ["windows"]
    assert _track_flags((), table, 2, 4) == ["encounter"]


def test_pipeline_notes_tracks_at_the_field_edge(toy_models):
    rng = np.random.default_rng(5)
    centres = np.array([[32.0, 2.2], [32.0, 32.0]])  # (y, x): one 2.2 px from the left border
    n_frames, s = 12, ACQ.substeps_per_frame
    frames = []
    for _ in range(n_frames):
        pos = centres + rng.normal(0.0, 0.05, centres.shape)
        sub = np.repeat(pos[:, None, :], s, axis=1)
        frames.append(camera_image(expected_photons(sub, (64, 64), ACQ).sum(axis=0), ACQ, rng))
    results = track_and_estimate(np.stack(frames), ACQ, Settings(model=toy_models["sequence"], device="cpu",
                                                                  min_track_length=5))
    summary = results.summary
    assert len(summary) == 2
    edge = summary["notes"].astype(object).fillna("").str.split(";").apply(lambda f: "edge" in f)
    assert edge[summary["x_mean_px"] < 10].all() and not edge[summary["x_mean_px"] > 10].any()
