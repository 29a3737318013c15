"""Per-track intervals: calibration tables and their coverage."""

import json

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import intervals as I
from napari_spt_diffusion.training import interval_calibration as IC


def _synthetic(n: int, seed: int):
    """Tracks whose log error is normal with sd 1 / sqrt(frames) plus a localization-noise term."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(5, 31, n).astype(float)
    d1 = np.exp(rng.uniform(-3, 1, n))
    d2 = d1 * rng.uniform(0.1, 1.0, n)
    loc_var = np.full(n, 0.01)
    sd = lambda d: 1.0 / np.sqrt(frames) + 0.3 * np.sqrt(loc_var / d)  # noisier when slow  # noqa: E731
    theta = rng.uniform(0, 180, n)
    truth = {"D1_um2_s": d1, "D2_um2_s": d2, "theta_deg": theta}
    est = {"D1_um2_s": d1 * np.exp(rng.normal(0, 1, n) * sd(d1)), "D2_um2_s": d2 * np.exp(rng.normal(0, 1, n) * sd(d2)),
           "theta_deg": np.mod(theta + rng.normal(0, 1, n) * 40 / np.sqrt(frames) * (1 + d2 / d1), 180)}
    return est, truth, frames, loc_var


def _coverage(iv, truth, key, level):
    t = truth[f"{key}_um2_s"]
    return np.mean((t >= iv[f"{key}_lo{level}_um2_s"]) & (t <= iv[f"{key}_hi{level}_um2_s"]))


def test_intervals_calibrated_on_one_set_cover_a_new_set():
    table = I.fit_interval_table(*_synthetic(20_000, 1)[:2], *_synthetic(20_000, 1)[2:], 1.0, "synthetic")
    est, truth, frames, loc_var = _synthetic(20_000, 2)
    iv = I.apply_intervals(table, est, frames, loc_var, 1.0)
    for key in ("D1", "D2"):
        assert _coverage(iv, truth, key, "68") == pytest.approx(0.68, abs=0.02)
        assert _coverage(iv, truth, key, "95") == pytest.approx(0.95, abs=0.01)
    # conditional on the length: short tracks get wider intervals, and are still covered
    short = frames < 8
    width = np.log(iv["D1_hi95_um2_s"] / iv["D1_lo95_um2_s"])
    assert width[short].mean() > 1.5 * width[frames >= 25].mean()
    assert _coverage({k: v[short] for k, v in iv.items()}, {k: v[short] for k, v in truth.items()}, "D1", "95") \
        == pytest.approx(0.95, abs=0.03)
    err = np.abs(np.mod(est["theta_deg"] - truth["theta_deg"] + 90, 180) - 90)
    aniso = truth["D1_um2_s"] / truth["D2_um2_s"] >= 1.5
    assert np.mean(err[aniso] <= iv["theta_pm95_deg"][aniso]) == pytest.approx(0.95, abs=0.02)


def test_a_table_that_ignores_the_noise_would_miss_slow_tracks():
    """The noise feature matters: a table fitted on fast tracks only under-covers slow ones."""
    est, truth, frames, loc_var = _synthetic(20_000, 3)
    fast = est["D1_um2_s"] > 1.0
    table = I.fit_interval_table({k: v[fast] for k, v in est.items()}, {k: v[fast] for k, v in truth.items()},
                                 frames[fast], loc_var[fast], 1.0, "fast only")
    slow = est["D1_um2_s"] < 0.1
    iv = I.apply_intervals(table, {k: v[slow] for k, v in est.items()}, frames[slow], loc_var[slow], 1.0)
    assert _coverage(iv, {k: v[slow] for k, v in truth.items()}, "D1", "95") < 0.85


def test_table_round_trips_through_json_and_refuses_other_bins():
    est, truth, frames, loc_var = _synthetic(3000, 4)
    table = I.fit_interval_table(est, truth, frames, loc_var, 1.0, "x")
    data = json.loads(json.dumps(table.to_dict()))
    again = I.IntervalTable.from_dict(data)
    np.testing.assert_allclose(again.d_log_quantiles["D1"], table.d_log_quantiles["D1"], atol=1e-5)
    data["noise_edges_log10"][1] = -9.0
    with pytest.raises(ValueError):
        I.IntervalTable.from_dict(data)


def test_classical_intervals_cover_simulated_tracks():
    """The CVE tensor's table, calibrated on one small simulated set, covers another (spot path)."""
    cal = IC.calibration_set("aniso", 200, Acquisition(), None, chunk=200, seed=9100)
    table = IC.calibrate(IC.classical_estimates(cal), cal, "classical", {})
    test = IC.calibration_set("aniso", 200, Acquisition(), None, chunk=200, seed=9200)
    est = IC.classical_estimates(test)
    n_frames, loc_var, scale = test.features()
    iv = I.apply_intervals(table, est, n_frames, loc_var, float(scale[0]))
    truth = test.truth()
    ok = np.isfinite(iv["D1_lo95_um2_s"])
    t = truth["D1_um2_s"][ok]
    cover = np.mean((t >= iv["D1_lo95_um2_s"][ok]) & (t <= iv["D1_hi95_um2_s"][ok]))
    assert cover == pytest.approx(0.95, abs=0.06)
    assert ok.mean() > 0.95


def test_pipeline_summary_gets_ordered_intervals_from_the_bundled_tables():
    import pandas as pd

    from napari_spt_diffusion.estimation_stage import with_intervals

    acq = Acquisition()
    summary = pd.DataFrame({
        "track_id": [1, 2, 3, 4], "n_frames": [30, 8, 30, 12], "D1_um2_s": [1.0, 0.3, 2.0, 0.0],
        "D2_um2_s": [0.5, 0.2, 1.0, 0.0], "theta_deg": [10.0, 50.0, 170.0, 0.0],
        "model": ["aniso", "aniso", "classical", "no_such_model"],
    })
    out, meta = with_intervals(summary, {1: 0.01, 2: 0.01, 3: 0.01, 4: 0.01}, acq)
    assert set(I.INTERVAL_COLUMNS) <= set(out.columns)
    model_rows = out[out["model"] != "no_such_model"]
    for key in ("D1", "D2"):
        lo95, lo68, hi68, hi95 = (model_rows[f"{key}_{n}_um2_s"].to_numpy() for n in ("lo95", "lo68", "hi68", "hi95"))
        assert np.all(np.isfinite(lo95)) and np.all(lo95 < lo68) and np.all(lo68 < hi68) and np.all(hi68 < hi95)
    # a short track is less certain than a long one of the same kind
    width = np.log(out["D1_hi95_um2_s"] / out["D1_lo95_um2_s"]).to_numpy()
    assert width[1] > width[0]
    assert out.loc[3, ["D1_lo95_um2_s", "theta_pm95_deg"]].isna().all()  # an estimator without a table
    assert meta["tables"]["no_such_model"].startswith("none")
    # every bundled model has its table, and the classical fallback of a motion model its own where there is one
    from napari_spt_diffusion.estimation.checkpoint import available_models

    assert all(I.bundled_interval_table(name) is not None for name in available_models())
    _, meta = with_intervals(summary.assign(model="classical"), {}, acq, motion_model="binding")
    assert meta["tables"]["classical"].startswith("classical_binding")


def test_model_intervals_widen_by_the_guards_bias_interval_and_classical_ones_do_not():
    import pandas as pd

    from napari_spt_diffusion.estimation_stage import with_intervals

    acq = Acquisition()
    summary = pd.DataFrame({
        "track_id": [1, 2], "n_frames": [30, 30], "D1_um2_s": [1.0, 1.0], "D2_um2_s": [0.5, 0.5],
        "theta_deg": [10.0, 10.0], "model": ["aniso", "classical"],
    })
    loc = {1: 0.01, 2: 0.01}
    plain, meta_plain = with_intervals(summary, loc, acq)
    low_model, meta = with_intervals(summary, loc, acq, model_bias=(0.8, 0.96))
    high_model, _ = with_intervals(summary, loc, acq, model_bias=(1.05, 1.25))
    unmeasured, meta_nan = with_intervals(summary, loc, acq, model_bias=(float("nan"), float("nan")))
    assert meta_plain["model_bias_widening"] is None and meta["model_bias_widening"]["bias_low"] == 0.8
    assert meta_nan["model_bias_widening"] is None  # not measured: nothing widened, nothing said
    for key in ("D1", "D2"):
        hi = [f"{key}_hi68_um2_s", f"{key}_hi95_um2_s"]
        lo = [f"{key}_lo68_um2_s", f"{key}_lo95_um2_s"]
        # a model reading low (factor below 1) may hide a larger truth: only the high bounds move, by 1 / 0.8
        np.testing.assert_allclose(low_model.loc[0, hi].to_numpy(float), plain.loc[0, hi].to_numpy(float) / 0.8)
        np.testing.assert_allclose(low_model.loc[0, lo].to_numpy(float), plain.loc[0, lo].to_numpy(float))
        np.testing.assert_allclose(high_model.loc[0, lo].to_numpy(float), plain.loc[0, lo].to_numpy(float) / 1.25)
        np.testing.assert_allclose(high_model.loc[0, hi].to_numpy(float), plain.loc[0, hi].to_numpy(float))
        # the classical row and an unmeasured bias are left alone
        for out in (low_model, high_model, unmeasured):
            np.testing.assert_allclose(out.loc[1, hi + lo].to_numpy(float), plain.loc[1, hi + lo].to_numpy(float))
        np.testing.assert_allclose(unmeasured.loc[0, hi + lo].to_numpy(float), plain.loc[0, hi + lo].to_numpy(float))
    assert (low_model["theta_pm95_deg"] == plain["theta_pm95_deg"]).all()
