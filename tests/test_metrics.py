"""Tests of metrics.py: MAE, angle similarity (published and axial), changepoint matching and scores."""

from __future__ import annotations

import numpy as np
import pytest

from napari_spt_diffusion import metrics as M


def test_angle_similarity_published_and_axial():
    assert M.angle_cos(179.0, 1.0) == pytest.approx(np.cos(np.deg2rad(178.0)))
    assert M.angle_similarity_published([179.0, 10.0], [1.0, 10.0]) == pytest.approx((np.cos(np.deg2rad(178)) + 1) / 2)
    assert M.angle_similarity_axial([179.0, 10.0], [1.0, 10.0]) == pytest.approx((np.cos(np.deg2rad(2)) + 1) / 2)
    # angles are wrapped to [0, 180) first: -1 is 179
    assert M.angle_cos(-1.0, 1.0) == pytest.approx(np.cos(np.deg2rad(178.0)))
    # random guesses: axial similarity 2/pi
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 180, 20000), rng.uniform(0, 180, 20000)
    assert M.angle_similarity_axial(a, b) == pytest.approx(2 / np.pi, abs=0.01)
    # NaN predictions are ignored; all NaN gives NaN
    assert M.angle_similarity_published([np.nan, 10.0], [1.0, 10.0]) == pytest.approx(1.0)
    assert np.isnan(M.angle_similarity_axial([np.nan], [1.0]))


def test_mean_absolute_error_ignores_nan():
    assert M.mean_absolute_error([1.0, np.nan, 3.0], [2.0, 5.0, 3.0]) == pytest.approx(0.5)
    assert np.isnan(M.mean_absolute_error([np.nan], [1.0]))


def test_match_and_scores():
    pairs = M.match_changepoints([10, 50, 90], [11, 48, 70, 91])
    assert sorted(pairs) == [(10, 11), (50, 48), (90, 91)]
    s = M.changepoint_scores([[10, 50, 90], []], [[11, 48, 70, 91], [5]], tolerance=2)
    assert s["precision"] == pytest.approx(3 / 5)
    assert s["recall"] == pytest.approx(1.0)
    assert s["f1"] == pytest.approx(2 * 3 / 8)
    assert s["mean_position_error_frames"] == pytest.approx(4 / 3)
    assert M.match_changepoints([], [3]) == []
    empty = M.changepoint_scores([[]], [[]])
    assert empty["n_matched"] == 0 and np.isnan(empty["f1"])
    with pytest.raises(M.MetricInputError):
        M.changepoint_scores([[1]], [])
    assert issubclass(M.MetricInputError, ValueError)
