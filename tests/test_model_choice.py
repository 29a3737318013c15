"""A bundled model for any microscope takes over outside the asked model's range (model_choice)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import model_choice
from napari_spt_diffusion.pipeline import Settings, track_and_estimate
from napari_spt_diffusion.simulation import simulate_movie


@pytest.fixture
def wide_psf_movie():
    acq = Acquisition(psf_sigma_nm=170.0, signal_photons=3000.0)
    sim = simulate_movie((64, 64), 40, acq, 31, model="aniso", particles=6.0)
    return np.asarray(sim.movie), acq


@pytest.fixture
def alternative(monkeypatch):
    # the bundled aniso_wide (trained over PSF 0.6-2.6 px) stands in for the model for any microscope
    monkeypatch.setitem(model_choice.ALTERNATIVES, "aniso", "aniso_wide")


def test_switches_outside_the_range_and_records_it(wide_psf_movie, alternative):
    movie, acq = wide_psf_movie
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = track_and_estimate(movie, acq, Settings(model="aniso"))
    assert res.meta["model"] == "aniso_wide"
    assert res.meta["model_switch"]["asked"] == "aniso" and res.meta["model_switch"]["used"] == "aniso_wide"
    assert "is outside what model 'aniso' was trained for" in res.meta["model_switch"]["reasons"][0]
    assert any("is used instead" in str(w.message) for w in caught)
    assert set(res.summary["model"]) <= {"aniso_wide", "classical"}


def test_keeps_the_model_when_asked_or_inside_its_range(wide_psf_movie, alternative):
    movie, acq = wide_psf_movie
    kept = track_and_estimate(movie, acq, Settings(model="aniso", model_switch=False))
    assert kept.meta["model"] == "aniso" and kept.meta["model_switch"] is None
    standard = Acquisition()
    sim = simulate_movie((64, 64), 40, standard, 32, model="aniso", particles=6.0)
    inside = track_and_estimate(np.asarray(sim.movie), standard, Settings(model="aniso"))
    assert inside.meta["model"] == "aniso" and inside.meta["model_switch"] is None


def test_no_switch_without_a_bundled_alternative(monkeypatch):
    acq = Acquisition(psf_sigma_nm=170.0)
    outside = ["PSF sigma 1.7 px is outside what model 'aniso' was trained for"]
    monkeypatch.setitem(model_choice.ALTERNATIVES, "aniso", "no_such_model")
    assert model_choice.alternative_for("aniso", outside, acq, lambda name, a: []) is None
    monkeypatch.setitem(model_choice.ALTERNATIVES, "aniso", "aniso_wide")
    switch = model_choice.alternative_for("aniso", outside, acq, lambda name, a: [])
    assert switch is not None and switch.used == "aniso_wide" and "--keep-model" in switch.message
    # outside the alternative's range too, inside the asked model's, or not a bundled name: no switch
    assert model_choice.alternative_for("aniso", outside, acq, lambda name, a: ["also outside"]) is None
    assert model_choice.alternative_for("aniso", [], acq, lambda name, a: []) is None
    assert model_choice.alternative_for("runs/x/aniso.pt", outside, acq, lambda name, a: []) is None


def test_a_psf_units_card_is_not_judged_on_the_virtual_pixel():
    from napari_spt_diffusion.estimation.estimator import check_acquisition

    card = {"name": "m", "training_acquisition": Acquisition().to_dict(),
            "training": {"acquisition_range": {"name": "psf_units_airy"}},
            "training_ranges": {"psf_sigma_px": [0.85, 1.15], "background_photons": [1.0, 7000.0]}}
    virtual = Acquisition(pixel_size_nm=173.0, psf_sigma_nm=173.0, background_photons=1900.0)
    assert check_acquisition(card, virtual, virtual_pixels=True) == []
    # nor when its card names the virtual pixels it was trained over (a PSF of 2.5 px: 250 nm)
    ranged = {**card, "training_ranges": {**card["training_ranges"], "pixel_size_nm": [80.0, 180.0]}}
    assert check_acquisition(ranged, Acquisition(pixel_size_nm=250.0, psf_sigma_nm=250.0), virtual_pixels=True) == []
    # in the movie's own pixels (no resampling) its card's pixel range is what it is judged against
    own_200 = check_acquisition(ranged, Acquisition(pixel_size_nm=200.0, psf_sigma_nm=220.0))
    own_150 = check_acquisition(ranged, Acquisition(pixel_size_nm=150.0, psf_sigma_nm=150.0))
    assert any("pixel size" in m for m in own_200) and not any("pixel size" in m for m in own_150)
    # the movie's own pixels, or a card without a PSF range: the pixel size is judged
    assert any("pixel size" in m for m in check_acquisition(card, virtual))
    plain = {"name": "m", "training_acquisition": Acquisition().to_dict()}
    assert any("pixel size" in m for m in check_acquisition(plain, virtual, virtual_pixels=True))
    # a model trained over PSF widths in the movie's pixels (like aniso_wide) is still judged on it
    wide = {**card, "training": {"acquisition_range": {"name": "wide"}}}
    assert any("pixel size" in m for m in check_acquisition(wide, virtual, virtual_pixels=True))


def test_every_alternative_is_a_bundled_model_of_the_same_motion_for_psf_units():
    from napari_spt_diffusion.estimation.checkpoint import read_card

    assert set(model_choice.ALTERNATIVES) == {"aniso", "binding", "twostate"}
    for asked, used in model_choice.ALTERNATIVES.items():
        a, u = read_card(asked), read_card(used)
        assert a["motion_model"] == u["motion_model"]
        assert u["training"]["acquisition_range"]["name"].startswith("psf_units")


@pytest.mark.parametrize("model", ["twostate", "binding"])
def test_a_movie_outside_a_two_state_models_range_runs_its_model_for_any_microscope(model):
    acq = Acquisition(psf_sigma_nm=170.0, signal_photons=3000.0)
    sim = simulate_movie((64, 64), 40, acq, 33, model=model, particles=6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = track_and_estimate(np.asarray(sim.movie), acq, Settings(model=model))
    assert res.meta["model"] == f"{model}_any"
    assert res.meta["model_switch"]["asked"] == model and res.meta["model_switch"]["used"] == f"{model}_any"
    if model != "twostate":
        return
    # --keep-model keeps it, and a movie inside twostate's range never switches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = track_and_estimate(np.asarray(sim.movie), acq, Settings(model="twostate", model_switch=False))
        standard = Acquisition()
        inside = simulate_movie((64, 64), 40, standard, 34, model="twostate", particles=6.0)
        stays = track_and_estimate(np.asarray(inside.movie), standard, Settings(model="twostate"))
    assert kept.meta["model"] == "twostate" and kept.meta["model_switch"] is None
    assert stays.meta["model"] == "twostate" and stays.meta["model_switch"] is None
