"""The note on a two-state model's movie with few confirmed changes of state."""

import numpy as np
import pandas as pd

from napari_spt_diffusion.estimation.state_check import MIN_SHARE, state_change_note


def _summary(n_model: int, with_change: int, short: int = 0, classical: int = 0) -> pd.DataFrame:
    n = n_model + short + classical
    return pd.DataFrame({
        "model": ["binding_any"] * (n_model + short) + ["classical"] * classical,
        "n_frames": [30] * n_model + [10] * short + [30] * classical,
        "n_changepoints": [1] * with_change + [0] * (n - with_change),
    })


def test_few_confirmed_changes_give_a_note_and_many_do_not():
    note, record = state_change_note(_summary(30, 3), "binding_any")
    assert "3 of 30" in note and "--model aniso" in note
    assert record["note"] and record["tracks"] == 30 and record["with_change"] == 3
    assert np.isclose(record["share"], 0.1)
    note, record = state_change_note(_summary(30, 24), "binding_any")
    assert note == "" and not record["note"] and np.isclose(record["share"], 0.8)
    # just below and at the share
    below = int(np.ceil(MIN_SHARE * 40)) - 1
    assert state_change_note(_summary(40, below), "binding_any")[1]["note"]
    assert not state_change_note(_summary(40, int(MIN_SHARE * 40)), "binding_any")[1]["note"]


def test_only_the_models_long_tracks_count_and_too_few_say_nothing():
    # short tracks and classical rows (a track too short for the model, or the guard's fallback) are not counted
    _, record = state_change_note(_summary(20, 2, short=50, classical=50), "binding_any")
    assert record["tracks"] == 20 and record["with_change"] == 2 and record["note"]
    note, record = state_change_note(_summary(11, 0), "binding_any")
    assert note == "" and not record["note"] and record["tracks"] == 11
    note, record = state_change_note(_summary(0, 0, classical=30), "binding_any")
    assert note == "" and record["tracks"] == 0 and record["share"] is None


def test_only_binding_models_are_checked():
    from napari_spt_diffusion.estimation.state_check import applies_to

    assert applies_to("binding")
    assert not applies_to("twostate") and not applies_to("aniso") and not applies_to(None)
