"""A bundled model the guard rejects gives way to its model for any microscope (estimation_fallback.py)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimate_tracks import estimate_tracks
from napari_spt_diffusion.estimation import guard
from napari_spt_diffusion.pipeline import Settings
from napari_spt_diffusion.simulation.movie import simulate_movie

REJECTED = (0.70, 0.62, 0.78, 50)  # shown beyond the 10 % margin
ACCEPTED = (1.00, 0.95, 1.05, 50)


@pytest.fixture(scope="module")
def movie():
    return simulate_movie((48, 48), 40, Acquisition(), rng=11, model="aniso", particles=6,
                          D1_range_um2_s=(0.5, 2.0))


@pytest.fixture(scope="module")
def tracks(movie):
    t = movie.truth.tracks[["track_id", "frame", "y_px", "x_px"]].copy()
    return t[t.groupby("track_id")["frame"].transform("size") >= 8].reset_index(drop=True)


def _guard_says(monkeypatch, *verdicts):
    """The guard's population test made up: one verdict per run of the stage, in order."""
    queue = list(verdicts)
    monkeypatch.setattr(guard, "population_ratio", lambda *a, **k: queue.pop(0) if len(queue) > 1 else queue[0])


def _run(movie, tracks, settings):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = estimate_tracks(movie.movie, tracks, Acquisition(), settings)
    return out, [str(w.message) for w in caught]


def test_a_rejected_model_gives_way_to_its_model_for_any_microscope(monkeypatch, movie, tracks):
    _guard_says(monkeypatch, REJECTED, ACCEPTED)
    out, said = _run(movie, tracks, Settings(model="aniso", device="cpu", min_track_length=5))
    assert out.meta["model"] == "aniso_any" and not out.meta["guard"]["rejected"]
    assert out.meta["model_switch"]["asked"] == "aniso" and out.meta["model_switch"]["used"] == "aniso_any"
    assert "biased" in out.meta["model_switch"]["reasons"][0]
    assert set(out.summary["model"]) == {"aniso_any"} and (out.summary["method"] == "model").all()
    assert any("was run instead and the guard accepts it" in m for m in said)
    assert not any("classical estimates are reported instead" in m for m in said)  # the first run's, held back
    assert any("was run instead" in m for m in out.meta["warnings"])


def test_both_rejected_leave_the_classical_values_and_the_first_verdict(monkeypatch, movie, tracks):
    _guard_says(monkeypatch, REJECTED, REJECTED)
    out, said = _run(movie, tracks, Settings(model="aniso", device="cpu", min_track_length=5))
    assert out.meta["model"] == "aniso" and out.meta["guard"]["rejected"] and out.meta["model_switch"] is None
    assert (out.summary["method"] == "classical").all()
    assert any("classical estimates are reported instead" in m for m in said)
    assert not any("was run instead" in m for m in said)


@pytest.mark.parametrize("change", [{"model_switch": False}, {"trust_model": True}])
def test_keep_model_and_trust_model_never_fall_back(monkeypatch, movie, tracks, change):
    _guard_says(monkeypatch, REJECTED, ACCEPTED)
    settings = dataclasses.replace(Settings(model="aniso", device="cpu", min_track_length=5), **change)
    out, _ = _run(movie, tracks, settings)
    assert out.meta["model"] == "aniso" and out.meta["model_switch"] is None
    assert out.meta["guard"]["rejected"]


def test_track_and_estimate_falls_back_too(monkeypatch, movie):
    from napari_spt_diffusion.pipeline import track_and_estimate

    _guard_says(monkeypatch, REJECTED, ACCEPTED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = track_and_estimate(movie.movie, Acquisition(), Settings(model="aniso", device="cpu", min_track_length=5))
    assert out.meta["model"] == "aniso_any" and out.meta["model_switch"]["used"] == "aniso_any"
    assert set(out.summary["model"]) == {"aniso_any"}


def test_the_fallback_is_recorded_and_old_rejected_sets_are_rerun_in_a_batch(monkeypatch, movie, tracks):
    from napari_spt_diffusion import batch

    _guard_says(monkeypatch, REJECTED, ACCEPTED)
    out, _ = _run(movie, tracks, Settings(model="aniso", device="cpu", min_track_length=5))
    record = out.meta["guard_fallback"]
    assert record["tried"] == "aniso_any" and record["reported"] and record["rejected_guard"]["rejected"]
    old = {"guard": {"rejected": True}, "model": "aniso"}  # a set written before the fallback
    assert batch._made_before_the_fallback(old, Settings())
    assert not batch._made_before_the_fallback({**old, "guard_fallback": {"tried": None}}, Settings())
    assert not batch._made_before_the_fallback(old, Settings(model_switch=False))
    assert not batch._made_before_the_fallback(old, Settings(trust_model=True))
    assert not batch._made_before_the_fallback({**old, "model": "aniso_any"}, Settings())
    assert not batch._made_before_the_fallback({**old, "guard": {"rejected": False}}, Settings())
