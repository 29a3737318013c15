"""The model's scale anchored to the classical estimate where the guard shows a bias (estimation/rescale.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_guard import brownian_population

from napari_spt_diffusion import estimation_stage
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimate_tracks import estimate_tracks
from napari_spt_diffusion.estimation import guard
from napari_spt_diffusion.estimation.estimator import TrackEstimate
from napari_spt_diffusion.estimation.guard import decide, population_ratio
from napari_spt_diffusion.estimation.rescale import (
    MIN_RESCALE,
    RESCALED_FLAG,
    rescale_factor,
    rescaled,
    residual_bias,
)
from napari_spt_diffusion.estimation_stage import with_intervals
from napari_spt_diffusion.pipeline import Settings
from napari_spt_diffusion.simulation.movie import simulate_movie


def test_a_shown_bias_inside_the_margin_is_divided_out():
    rng = np.random.default_rng(21)
    model, cve, loc_var, k = brownian_population(rng, 3000, 0.92, frames=60)
    decision = decide(population_ratio(model, cve, loc_var, k, blur=0.0))
    assert not decision.rejected and decision.bias_high < 1.0  # accepted, and the bias is shown
    factor = rescale_factor(decision)
    assert factor == pytest.approx(0.92, rel=0.04)
    after = population_ratio(model / factor, cve, loc_var, k, blur=0.0)
    assert after[1] < 1.0 < after[2]  # the rescaled population agrees with the classical estimate
    low, high = residual_bias(decision, factor)
    assert low < 1.0 < high and high - low == pytest.approx((decision.bias_high - decision.bias_low) / factor)


def test_unbiased_models_are_rarely_rescaled_and_never_by_much():
    rng = np.random.default_rng(22)
    factors = [rescale_factor(decide(population_ratio(*brownian_population(rng, 100, 1.0), blur=0.0, rng=s)))
               for s in range(20)]
    assert sum(f is not None for f in factors) <= 1


def _decision(factor, low, high, n=50, rejected=False):
    return dataclasses.replace(decide((factor, low, high, n)), rejected=rejected)


def test_no_rescale_when_rejected_not_shown_too_small_or_too_few_tracks():
    assert rescale_factor(_decision(0.88, 0.80, 0.95)) == pytest.approx(0.88)
    assert rescale_factor(_decision(1.08, 1.02, 1.09)) == pytest.approx(1.08)
    assert rescale_factor(_decision(0.88, 0.80, 1.01)) is None  # the interval holds 1
    assert rescale_factor(_decision(0.97, 0.95, 0.99)) is None  # within the guard's own error
    assert rescale_factor(_decision(1.0 + MIN_RESCALE / 2, 1.01, 1.04)) is None
    assert rescale_factor(_decision(0.80, 0.75, 0.85, rejected=True)) is None
    assert rescale_factor(_decision(0.88, 0.80, 0.95, n=guard.MIN_TRACKS - 1)) is None
    assert rescale_factor(_decision(float("nan"), float("nan"), float("nan"))) is None


def _estimate(method):
    n = 4
    return TrackEstimate(track_id=3, frames=np.arange(n), D1_um2_s=np.full(n, 0.9), D2_um2_s=np.full(n, 0.45),
                         theta_deg=np.full(n, 30.0), track_D1_um2_s=0.9, track_D2_um2_s=0.45, track_theta_deg=30.0,
                         method=method, flags=("windows",), n_windows=1, pointwise=False)


def test_rescaled_divides_model_values_and_flags_them():
    out = rescaled(_estimate("model"), 0.9)
    np.testing.assert_allclose(out.D1_um2_s, 1.0)
    np.testing.assert_allclose(out.D2_um2_s, 0.5)
    assert out.track_D1_um2_s == pytest.approx(1.0) and out.track_D2_um2_s == pytest.approx(0.5)
    np.testing.assert_allclose(out.theta_deg, 30.0)
    assert out.flags == ("windows", RESCALED_FLAG)
    classical = _estimate("classical")
    assert rescaled(classical, 0.9) is classical


@pytest.fixture(scope="module")
def movie():
    return simulate_movie((48, 48), 40, Acquisition(), rng=11, model="aniso", particles=6,
                          D1_range_um2_s=(0.5, 2.0))


def test_the_stage_rescales_what_the_guard_accepts_with_a_shown_bias(monkeypatch, movie, toy_models):
    tracks = movie.truth.tracks[["track_id", "frame", "y_px", "x_px"]].copy()
    tracks = tracks[tracks.groupby("track_id")["frame"].transform("size") >= 8].reset_index(drop=True)
    settings = Settings(model=toy_models["sequence"], device="cpu", min_track_length=5)
    # the guard's measurement made up: 0.9 x, shown (interval 0.85-0.95) but inside the 10 % margin
    monkeypatch.setattr(guard, "population_ratio", lambda *a, **k: (0.9, 0.85, 0.95, 50))
    widened_by = []

    def recording(*args, model_bias=None, **kwargs):
        widened_by.append(model_bias)
        return with_intervals(*args, model_bias=model_bias, **kwargs)

    monkeypatch.setattr(estimation_stage, "with_intervals", recording)
    with pytest.warns(UserWarning, match="divided by 0.90"):
        out = estimate_tracks(movie.movie, tracks, Acquisition(), settings)
    kept = estimate_tracks(movie.movie, tracks, Acquisition(), dataclasses.replace(settings, rescale_model=False))
    model_rows = (kept.summary["method"] == "model").to_numpy()
    assert model_rows.any()
    np.testing.assert_allclose(out.summary["D1_um2_s"].to_numpy()[model_rows],
                               kept.summary["D1_um2_s"].to_numpy()[model_rows] / 0.9, rtol=1e-6)
    np.testing.assert_allclose(out.tracks["D2_um2_s"].to_numpy()[out.tracks["track_id"].isin(
        kept.summary["track_id"][model_rows])], kept.tracks["D2_um2_s"].to_numpy()[kept.tracks["track_id"].isin(
            kept.summary["track_id"][model_rows])] / 0.9, rtol=1e-6)
    assert out.summary["notes"][model_rows].str.contains(RESCALED_FLAG).all()
    assert not kept.summary["notes"].str.contains(RESCALED_FLAG).any()
    assert out.meta["guard"]["rescaled_by"] == pytest.approx(0.9) and kept.meta["guard"]["rescaled_by"] is None
    # the model's intervals are widened by what is left of the bias (0.94-1.06), not by the bias itself
    assert widened_by[0] == pytest.approx((0.85 / 0.9, 0.95 / 0.9)) and widened_by[1] == pytest.approx((0.85, 0.95))


def test_a_rejected_model_kept_with_trust_model_is_not_rescaled(monkeypatch, movie, toy_models):
    tracks = movie.truth.tracks[["track_id", "frame", "y_px", "x_px"]].copy()
    tracks = tracks[tracks.groupby("track_id")["frame"].transform("size") >= 8].reset_index(drop=True)
    settings = Settings(model=toy_models["sequence"], device="cpu", min_track_length=5, trust_model=True)
    kept = estimate_tracks(movie.movie, tracks, Acquisition(), dataclasses.replace(settings, rescale_model=False))
    # shown beyond the 10 % margin: rejected; --trust-model reports the model's values as it gave them
    monkeypatch.setattr(guard, "population_ratio", lambda *a, **k: (0.85, 0.80, 0.88, 50))
    with pytest.warns(UserWarning, match="biased on this movie"):
        out = estimate_tracks(movie.movie, tracks, Acquisition(), settings)
    assert out.meta["guard"]["rejected"] and out.meta["guard"]["rescaled_by"] is None
    np.testing.assert_allclose(out.summary["D1_um2_s"], kept.summary["D1_um2_s"], rtol=1e-9)
    assert not out.summary["notes"].str.contains(RESCALED_FLAG).any()


def test_a_pointwise_model_is_rescaled_frame_by_frame(monkeypatch, movie, toy_models):
    tracks = movie.truth.tracks[["track_id", "frame", "y_px", "x_px"]].copy()
    tracks = tracks[tracks.groupby("track_id")["frame"].transform("size") >= 8].reset_index(drop=True)
    settings = Settings(model=toy_models["pointwise"], device="cpu", min_track_length=5)
    kept = estimate_tracks(movie.movie, tracks, Acquisition(), dataclasses.replace(settings, rescale_model=False))
    monkeypatch.setattr(guard, "population_ratio", lambda *a, **k: (1.08, 1.06, 1.09, 50))
    with pytest.warns(UserWarning, match="divided by 1.08"):
        out = estimate_tracks(movie.movie, tracks, Acquisition(), settings)
    model_rows = (kept.tracks["track_id"].isin(kept.summary.loc[kept.summary["method"] == "model", "track_id"]))
    assert model_rows.any()
    for column in ("D1_um2_s", "D2_um2_s"):
        np.testing.assert_allclose(out.tracks[column][model_rows], kept.tracks[column][model_rows] / 1.08, rtol=1e-6)
    np.testing.assert_allclose(out.tracks["theta_deg"], kept.tracks["theta_deg"], rtol=1e-9)
    np.testing.assert_array_equal(out.tracks["is_changepoint"], kept.tracks["is_changepoint"])
