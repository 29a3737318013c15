"""The interval widening for linked tracks (estimation/linked_widening.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import linked_widening as L
from napari_spt_diffusion.estimation.intervals import INTERVAL_COLUMNS


def _widening(crowded: float = 2.0, others: float = 1.0) -> L.LinkedWidening:
    keys = [f"{k}_{lv}" for k, lv in L.INTERVALS]
    return L.LinkedWidening({g: dict.fromkeys(keys, crowded if g == "crowded" else others) for g in L.GROUPS})


def _summary() -> pd.DataFrame:
    return pd.DataFrame({
        "track_id": [1, 2, 3, 4], "D1_um2_s": [1.0, 1.0, 0.0, 2.0], "D2_um2_s": [0.5, 0.5, 0.0, 1.0],
        "notes": ["crowded;encounter", "gaps", "crowded", np.nan],
        **{f"{k}_lo{lv}_um2_s": [v * 0.5 for v in (1.0, 1.0, 0.1, 2.0)] if k == "D1" else
           [v * 0.5 for v in (0.5, 0.5, 0.1, 1.0)] for k, lv in L.INTERVALS},
        **{f"{k}_hi{lv}_um2_s": [v * 3.0 for v in (1.0, 1.0, 0.1, 2.0)] if k == "D1" else
           [v * 3.0 for v in (0.5, 0.5, 0.1, 1.0)] for k, lv in L.INTERVALS},
    })


def test_groups_come_from_the_notes_in_order_edge_gaps_crowded_plain():
    assert list(L.track_group(_summary()["notes"])) == ["crowded", "gaps", "crowded", "plain"]
    notes = pd.Series(["crowded;gaps;edge", "gaps;crowded", "windows;encounter", "", "edge"])
    assert list(L.track_group(notes)) == ["edge", "gaps", "plain", "plain", "edge"]


def test_widening_scales_log_half_widths_of_the_group_and_unwidening_undoes_it():
    summary = _summary()
    out = L.widen_linked(summary, _widening(crowded=2.0, others=1.0))
    # crowded track 1: log half-width doubled around the log centre c = sqrt(1.5): [0.5, 3] -> [0.25 / c, 9 / c]
    c = np.sqrt(1.5)
    assert out.loc[0, "D1_lo95_um2_s"] == pytest.approx(0.25 / c)
    assert out.loc[0, "D1_hi68_um2_s"] == pytest.approx(9.0 / c)
    assert out.loc[0, "D2_hi95_um2_s"] == pytest.approx(0.5 * 9.0 / c)
    assert np.log(out.loc[0, "D1_hi95_um2_s"] / out.loc[0, "D1_lo95_um2_s"]) == pytest.approx(2 * np.log(6.0))
    # tracks of other groups (factor 1) are left as they were; crowded track 3 (its value 0) is widened all the same
    cols = [c for c in summary if "_lo" in c or "_hi" in c]
    np.testing.assert_allclose(out.loc[[1, 3], cols].to_numpy(float), summary.loc[[1, 3], cols].to_numpy(float))
    assert out.loc[2, "D1_lo95_um2_s"] < summary.loc[2, "D1_lo95_um2_s"]
    back = L.unwiden_linked(out, _widening(crowded=2.0, others=1.0))
    np.testing.assert_allclose(back[cols].to_numpy(float), summary[cols].to_numpy(float), rtol=1e-12)
    assert summary.loc[0, "D1_lo95_um2_s"] == 0.5  # the input is not modified


def test_an_interval_that_does_not_hold_the_value_is_widened_on_both_sides_not_moved():
    """A short track's D2 reads low: its table interval can lie wholly above the value."""
    summary = pd.DataFrame({"D1_um2_s": [1.0], "D2_um2_s": [1.0], "notes": ["crowded"],
                            **{f"{k}_lo{lv}_um2_s": [1.1] for k, lv in L.INTERVALS},
                            **{f"{k}_hi{lv}_um2_s": [2.0] for k, lv in L.INTERVALS}})
    out = L.widen_linked(summary, _widening(crowded=1.5))
    assert out.loc[0, "D2_lo68_um2_s"] < 1.1 and out.loc[0, "D2_hi68_um2_s"] > 2.0
    back = L.unwiden_linked(out, _widening(crowded=1.5))
    np.testing.assert_allclose(back[["D2_lo68_um2_s", "D2_hi68_um2_s"]].to_numpy(float), [[1.1, 2.0]])


def test_half_width_ratio_is_at_most_one_exactly_where_the_interval_covers():
    rng = np.random.default_rng(3)
    value = rng.lognormal(0, 1, 500)
    low, high = value * rng.uniform(0.2, 0.9, 500), value * rng.uniform(1.1, 5, 500)
    truth = value * rng.lognormal(0, 0.8, 500)
    ratio = L.half_width_ratio(low, high, truth)
    np.testing.assert_array_equal(ratio <= 1.0, (truth >= low) & (truth <= high))
    # and the interval widened by f (as widen_linked widens it) covers exactly the ratios <= f
    f = 1.7
    frame = pd.DataFrame({"D1_um2_s": value, "D2_um2_s": value, "notes": "crowded",
                          **{f"{k}_lo{lv}_um2_s": low for k, lv in L.INTERVALS},
                          **{f"{k}_hi{lv}_um2_s": high for k, lv in L.INTERVALS}})
    wide = L.widen_linked(frame, _widening(crowded=f))
    lo_f, hi_f = wide["D1_lo95_um2_s"].to_numpy(), wide["D1_hi95_um2_s"].to_numpy()
    np.testing.assert_array_equal(ratio <= f, (truth >= lo_f * (1 - 1e-12)) & (truth <= hi_f * (1 + 1e-12)))
    assert np.isnan(L.half_width_ratio(np.array([0.0]), np.array([1.0]), np.array([1.0]))[0])
    assert np.isnan(L.half_width_ratio(np.array([2.0]), np.array([1.0]), np.array([1.0]))[0])  # high < low


def test_fitted_factor_brings_heavy_tailed_errors_to_nominal_coverage_on_new_tracks():
    """Intervals calibrated on clean errors under-cover tracks of which 15 % are far off (a swap); the
    fitted factor, fitted on one sample, covers 95 % of another."""
    rng = np.random.default_rng(11)

    def sample(n):
        err = rng.normal(0, 0.3, n)
        swapped = rng.random(n) < 0.15
        err[swapped] += rng.normal(0, 1.0, swapped.sum())
        value = np.ones(n)
        half = 1.96 * 0.3  # the clean errors' 95 % half-width
        return L.half_width_ratio(value * np.exp(-half), value * np.exp(half), np.exp(err))

    fit, check = sample(4000), sample(4000)
    assert np.mean(check <= 1.0) < 0.90  # the tables alone under-cover
    f = L.fit_factor(fit, 0.95)
    assert f > 1.2
    assert np.mean(check <= f) == pytest.approx(0.95, abs=0.012)
    assert L.fit_factor(np.full(100, 0.5), 0.95) == 1.0  # never narrowed
    assert L.fit_factor(np.full(100, 1.2121), 0.95) == pytest.approx(1.213)  # rounded up, not down
    with pytest.raises(ValueError, match="not finite"):
        L.fit_factor(np.full(100, np.inf), 0.95)
    with pytest.raises(ValueError, match="no tracks"):
        L.fit_factor(np.array([np.nan]), 0.95)


def test_factors_below_one_or_missing_are_refused():
    with pytest.raises(ValueError, match=">= 1"):
        _widening(crowded=0.9)
    with pytest.raises(ValueError, match="plain"):
        L.LinkedWidening({g: f for g, f in _widening().factors.items() if g != "plain"})


def test_bundled_factors_load_and_the_pipeline_widens_crowded_tracks_with_them(monkeypatch):
    from napari_spt_diffusion import estimation_stage
    from napari_spt_diffusion.estimation_stage import with_intervals

    bundled = L.bundled_linked_widening()
    assert bundled is not None and bundled.calibration.get("movies", 0) > 0
    assert all(bundled.factor(g, k, lv) >= 1.0 for g in L.GROUPS for k, lv in L.INTERVALS)
    summary = pd.DataFrame({"track_id": [1, 2], "n_frames": [30, 30], "D1_um2_s": [1.0, 1.0],
                            "D2_um2_s": [0.5, 0.5], "theta_deg": [10.0, 10.0], "model": ["aniso", "aniso"],
                            "notes": ["edge;crowded", ""]})
    out, meta = with_intervals(summary, {1: 0.01, 2: 0.01}, Acquisition())
    monkeypatch.setattr(estimation_stage, "bundled_linked_widening", lambda: None)
    plain, plain_meta = with_intervals(summary, {1: 0.01, 2: 0.01}, Acquisition())
    assert plain_meta["linked_widening"] is None and meta["linked_widening"]["factors"] == bundled.factors
    cols = list(INTERVAL_COLUMNS)
    np.testing.assert_allclose(out[cols].to_numpy(float), L.widen_linked(plain, bundled)[cols].to_numpy(float))
    assert (out["theta_pm95_deg"] == plain["theta_pm95_deg"]).all()


def test_border_distance_and_the_edge_note_of_a_track():
    from napari_spt_diffusion.estimation_stage import _track_flags
    from napari_spt_diffusion.tracking.field_edge import EDGE_PX, border_distance_px, touches_edge

    d = border_distance_px(np.array([0.0, 5.0, 60.0, 10.0, np.inf]), np.array([40.0, 5.0, 30.0, 126.5, 3.0]),
                           (64, 128))
    np.testing.assert_allclose(d[:4], [0.0, 5.0, 3.0, 0.5])
    assert np.isnan(d[4]) and not touches_edge(d[4:])
    assert touches_edge(np.array([10.0, 2.9])) and not touches_edge(np.array([10.0, EDGE_PX]))
    table = pd.DataFrame({"border_px": [10.0, 8.0, 2.0, 10.0, 12.0], "nearest_other_px": np.inf})
    assert "edge" in _track_flags([], table, 0, 3) and "edge" not in _track_flags(["gaps"], table, 3, 5)
    with pytest.raises(ValueError, match="same length"):
        border_distance_px(np.zeros(3), np.zeros(2), (10, 10))
