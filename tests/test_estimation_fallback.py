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
    assert set(out.summary["model"]) == {"aniso_any"} and (out.summary["method"] == "model").all()
    assert any("is run instead and reported where the guard accepts it" in m for m in said)
    assert not any("classical estimates are reported instead" in m for m in said)  # the first run's, held back
    assert any("is run instead" in m for m in out.meta["warnings"])
    assert not any("classical estimates are reported instead" in m for m in out.meta["warnings"])
    assert out.meta["model_switch"]["reasons"][0].startswith("the guard rejected it: 0.70 x")


def test_both_rejected_leave_the_classical_values_and_the_first_verdict(monkeypatch, movie, tracks):
    _guard_says(monkeypatch, REJECTED, REJECTED)
    out, said = _run(movie, tracks, Settings(model="aniso", device="cpu", min_track_length=5))
    assert out.meta["model"] == "aniso" and out.meta["guard"]["rejected"] and out.meta["model_switch"] is None
    assert (out.summary["method"] == "classical").all()
    assert any("classical estimates are reported instead" in m for m in said)
    assert any("'aniso_any' was rejected too" in m for m in said)
    assert any("was rejected too" in m for m in out.meta["warnings"])


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
    # an accepted set too: under 0.7 x the training photons `aniso` is now out of range
    assert batch._made_before_the_fallback({**old, "guard": {"rejected": False}}, Settings())
    switched = {**old, "model": "aniso_any", "model_switch": {"asked": "aniso", "used": "aniso_any"}}
    assert not batch._made_before_the_fallback(switched, Settings())
    assert not batch._made_before_the_fallback({**old, "settings": {"model": "/my/aniso.pt"}}, Settings())


def test_a_checkpoint_given_as_a_path_never_falls_back(monkeypatch, movie, tracks, tmp_path):
    import shutil

    from napari_spt_diffusion.estimation.checkpoint import CHECKPOINT_DIR

    for suffix in (".pt", ".json"):  # a user's copy of the bundled model, under the same name
        shutil.copy(CHECKPOINT_DIR / f"aniso{suffix}", tmp_path / f"aniso{suffix}")
    _guard_says(monkeypatch, REJECTED, ACCEPTED)
    out, said = _run(movie, tracks, Settings(model=str(tmp_path / "aniso.pt"), device="cpu", min_track_length=5))
    assert out.meta["model_switch"] is None and out.meta["guard"]["rejected"] and "guard_fallback" not in out.meta
    assert (out.summary["method"] == "classical").all()
    assert any("classical estimates are reported instead" in m for m in said)  # the rejection, shown


def test_aniso_and_twostate_are_out_of_range_under_0_7_x_their_training_photons():
    from napari_spt_diffusion.estimation.checkpoint import read_card
    from napari_spt_diffusion.estimation.estimator import check_acquisition

    dim = Acquisition(signal_photons=500.0)
    for name in ("aniso", "twostate"):
        assert any("signal" in m for m in check_acquisition(read_card(name), dim)), name
        assert not check_acquisition(read_card(name), Acquisition(signal_photons=800.0)), name
    assert not check_acquisition(read_card("binding"), dim)  # the binding model holds at 250-500 photons
    assert not check_acquisition(read_card("aniso_any"), Acquisition(signal_photons=200.0))
