"""MSD curves (per track, ensemble, line fits), the trackpy table and the drift correction."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import trackpy

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimate_tracks import estimate_tracks
from napari_spt_diffusion.estimation.drift import ensemble_drift_px, subtract_drift
from napari_spt_diffusion.estimation.msd import (
    MSD_COLUMNS,
    MsdError,
    ensemble_msd,
    msd_table,
    results_msd_table,
    track_msd,
)
from napari_spt_diffusion.io.track_tables import trackpy_table
from napari_spt_diffusion.pipeline import Settings
from napari_spt_diffusion.result_extras import extra_paths, write_extras
from napari_spt_diffusion.results import Results
from napari_spt_diffusion.simulation.movie import simulate_movie

ACQ = Acquisition()  # 100 nm pixels, 10 ms frames


def _brownian(n_tracks, length, d_um2_s, sigma_nm, rng, *, gaps=False, drift_px=None):
    """Brownian tracks (no blur) with Gaussian localization noise, in the tracks-table form."""
    step_px = np.sqrt(2 * d_um2_s * ACQ.frame_interval_s) / ACQ.pixel_size_um
    rows = []
    for tid in range(n_tracks):
        f0 = int(rng.integers(0, 20))
        path = np.cumsum(rng.normal(0, step_px, (length, 2)), axis=0) + 200
        seen = path + rng.normal(0, sigma_nm / ACQ.pixel_size_nm, (length, 2))
        frames = f0 + np.arange(length)
        if drift_px is not None:
            seen = seen + drift_px[frames]
        keep = rng.random(length) > 0.15 if gaps else np.ones(length, bool)
        keep[:2] = True
        rows += [(tid, f, y, x) for f, (y, x) in zip(frames[keep], seen[keep])]
    return pd.DataFrame(rows, columns=["track_id", "frame", "y_px", "x_px"])


def _trackpy_msd(tracks, which, max_lag):
    traj = trackpy_table(tracks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn = trackpy.imsd if which == "imsd" else trackpy.emsd
        return fn(traj, ACQ.pixel_size_um, 1.0 / ACQ.frame_interval_s, max_lagtime=max_lag)


def test_track_msd_equals_trackpy_imsd_with_gaps():
    tracks = _brownian(12, 40, 1.0, 30.0, np.random.default_rng(1), gaps=True)
    ours = track_msd(tracks, ACQ, max_lag=15)
    assert list(ours.columns) == list(MSD_COLUMNS)
    assert (ours["curve"] == "track").all() and (ours["n_displacements"] > 0).all()
    theirs = _trackpy_msd(tracks, "imsd", 15)  # index lag in s, one column per particle (um^2)
    wide = ours.pivot(index="lag_frames", columns="track_id", values="msd_um2")
    np.testing.assert_allclose(wide.to_numpy(), theirs.to_numpy()[: len(wide)], rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(ours["lag_s"], ours["lag_frames"] * ACQ.frame_interval_s)


def test_trackpy_table_is_accepted_by_trackpy_emsd_and_imsd():
    tracks = _brownian(30, 50, 0.5, 20.0, np.random.default_rng(2))
    traj = trackpy_table(tracks)
    assert list(traj.columns) == ["frame", "x", "y", "particle"]
    em = _trackpy_msd(tracks, "emsd", 10)
    im = _trackpy_msd(tracks, "imsd", 10)
    assert em.shape == (10,) and im.shape == (10, 30)
    ens = ensemble_msd(tracks, ACQ, max_lag=10)
    # pooled displacements vs trackpy's effective-N weights: close, not equal (equal-length tracks)
    np.testing.assert_allclose(ens["msd_um2"].to_numpy(), em.to_numpy(), rtol=0.02)


def test_ensemble_fit_recovers_d_and_localization_error():
    d, sigma = 0.8, 40.0
    tracks = _brownian(400, 60, d, sigma, np.random.default_rng(3))
    ens = ensemble_msd(tracks, ACQ, max_lag=20, fit_lags=4)
    assert (ens["curve"] == "ensemble").all() and ens["track_id"].isna().all()
    assert ens["D_fit_um2_s"].iloc[0] == pytest.approx(d, rel=0.05)
    # no blur in these tracks; with the standard acquisition's R the estimate is corrected for a blur that
    # is not there: check the offset itself, 4 sigma^2
    assert ens["offset_um2"].iloc[0] == pytest.approx(4 * (sigma / 1000) ** 2, rel=0.15)
    line = ens["offset_um2"] + 4 * ens["D_fit_um2_s"] * ens["lag_s"]
    np.testing.assert_allclose(ens["msd_fit_um2"], line)
    # per-track fits agree with the summary's MSD estimator and scatter around the truth
    per = track_msd(tracks, ACQ, max_lag=20).groupby("track_id")["D_fit_um2_s"].first()
    assert per.median() == pytest.approx(d, rel=0.1)


def test_msd_table_and_bad_inputs():
    tracks = _brownian(5, 12, 1.0, 30.0, np.random.default_rng(4))
    table = msd_table(tracks, ACQ, max_lag=5)
    assert table["curve"].iloc[0] == "ensemble"
    assert (table["curve"] == "ensemble").sum() == 5 and (table["curve"] == "track").sum() == 25
    with pytest.raises(MsdError, match="lacks column"):
        track_msd(tracks.drop(columns="x_px"), ACQ)
    with pytest.raises(MsdError, match="max_lag"):
        track_msd(tracks, ACQ, max_lag=0)
    assert len(track_msd(tracks.iloc[:1], ACQ)) == 0  # one localization: no curve


def test_drift_estimate_recovers_a_linear_drift():
    n_frames = 80
    drift = np.column_stack([0.05 * np.arange(n_frames), -0.6 * np.arange(n_frames)])
    tracks = _brownian(60, 50, 0.5, 20.0, np.random.default_rng(5), drift_px=drift)
    found, n_steps = ensemble_drift_px(tracks, n_frames)
    assert found.shape == (n_frames, 2) and np.all(found[0] == 0)
    # each step's drift is a mean over the n tracks present: error ~ 1 px / sqrt(n) per step (D = 0.5 um^2/s)
    covered = n_steps >= 20
    step_error = (np.diff(found, axis=0) - np.diff(drift, axis=0))[covered]
    assert np.all(np.abs(step_error) < 5.0 / np.sqrt(n_steps[covered])[:, None])
    slope = np.polyfit(np.arange(n_frames)[1:][covered], found[1:][covered], 1)[0]
    np.testing.assert_allclose(slope, [0.05, -0.6], atol=0.03)
    corrected = subtract_drift(tracks[["y_px", "x_px"]].to_numpy(), tracks["frame"].to_numpy(), found)
    assert corrected.shape == (len(tracks), 2)
    # MSD of the corrected tracks is linear again: D within 10 % of the truth; without: far off
    d_raw = ensemble_msd(tracks, ACQ, max_lag=10)["D_fit_um2_s"].iloc[0]
    d_cor = ensemble_msd(tracks, ACQ, max_lag=10, drift_px=found)["D_fit_um2_s"].iloc[0]
    assert d_cor == pytest.approx(0.5, rel=0.1)
    assert d_raw > 1.3 * d_cor


@pytest.fixture(scope="module")
def drifting_movie():
    """A movie whose field drifts 1 px per frame along x (a window sliding over a wider field)."""
    n_frames, width = 30, 48
    wide = simulate_movie((48, width + n_frames), n_frames, ACQ, rng=21, model="aniso", particles=12,
                          D1_range_um2_s=(0.3, 1.0))
    frames = np.stack([wide.movie[t, :, t : t + width] for t in range(n_frames)])
    truth = wide.truth.tracks[["track_id", "frame", "y_px", "x_px"]].copy()
    truth["x_px"] -= truth["frame"]
    inside = truth["x_px"].between(1, width - 2) & truth["y_px"].between(1, 46)
    truth = truth[inside]
    truth = truth[truth.groupby("track_id")["frame"].transform("size") >= 10].reset_index(drop=True)
    still = wide.truth.tracks.merge(truth[["track_id", "frame"]], on=["track_id", "frame"])
    return frames, truth, still, wide


def test_drift_correction_on_a_drifting_movie(drifting_movie, toy_models):
    frames, truth, _, wide = drifting_movie
    assert truth["track_id"].nunique() >= 5
    base = dict(model=toy_models["sequence"], device="cpu", min_track_length=5)
    plain = estimate_tracks(frames, truth, ACQ, Settings(**base))
    fixed = estimate_tracks(frames, truth, ACQ, Settings(**base, drift_correction=True))
    record = fixed.meta["drift_correction"]
    assert record["enabled"] and len(record["drift_px"]) == len(frames)
    # the field moved 1 px per frame to the left: the particles drift -1 px/frame in x
    dx = np.diff(np.asarray(record["drift_px"])[:, 1])
    assert np.median(dx) == pytest.approx(-1.0, abs=0.15)
    assert plain.meta["drift_correction"] == {"enabled": False}
    # positions written as localized (the movie's), estimates from the corrected ones
    np.testing.assert_allclose(np.sort(fixed.tracks["x_px"]), np.sort(plain.tracks["x_px"]))
    d_true = wide.truth.summary.set_index("track_id").loc[fixed.summary["track_id"]]
    d_true = 0.5 * (d_true["D1_um2_s"] + d_true["D2_um2_s"]).to_numpy()
    d_plain = plain.summary["D_cve_um2_s"].to_numpy()
    d_fixed = fixed.summary["D_cve_um2_s"].to_numpy()
    err_plain = np.median(np.abs(np.log(d_plain / d_true)))
    err_fixed = np.median(np.abs(np.log(d_fixed / d_true)))
    assert err_fixed < 0.35 and err_plain > 2 * err_fixed
    # the MSD table of the results subtracts the recorded drift
    ens_fixed = results_msd_table(fixed)
    ens_plain = results_msd_table(plain)
    d_e_fixed = ens_fixed.loc[ens_fixed["curve"] == "ensemble", "D_fit_um2_s"].iloc[0]
    d_e_plain = ens_plain.loc[ens_plain["curve"] == "ensemble", "D_fit_um2_s"].iloc[0]
    assert d_e_plain > 2 * d_e_fixed
    assert d_e_fixed == pytest.approx(np.mean(d_true), rel=0.5)


def test_extra_files_are_written_beside_the_result_set(tmp_path):
    tracks = _brownian(4, 20, 1.0, 30.0, np.random.default_rng(6))
    from napari_spt_diffusion.results import empty_summary_table

    full = tracks.assign(t_s=0.0, x_um=0.0, y_um=0.0, photons=1.0, background=1.0, loc_precision_nm=1.0,
                         D1_um2_s=1.0, D2_um2_s=1.0, theta_deg=0.0, state=0, is_changepoint=False)
    summary = pd.DataFrame({"track_id": np.arange(4)})
    for column in empty_summary_table().columns:
        if column != "track_id":
            summary[column] = 0 if column in ("n_frames", "frame_start", "frame_end", "n_changepoints") else np.nan
    summary["changepoint_frames"], summary["model"] = "", "classical"
    results = Results(full, summary, {"acquisition": ACQ.to_dict()})
    paths = extra_paths(tmp_path / "run", msd=True, trackpy=True)
    assert [p.name for p in paths.values()] == ["run_msd.csv", "run_trackpy.csv"]
    assert extra_paths(tmp_path / "run_tracks.csv", msd=True)["msd"].name == "run_msd.csv"
    written = write_extras(tmp_path / "run", results, msd=True, trackpy=True)
    assert sorted(p.name for p in written) == ["run_msd.csv", "run_trackpy.csv"]
    msd = pd.read_csv(tmp_path / "run_msd.csv")
    assert list(msd.columns) == list(MSD_COLUMNS)
    assert msd.loc[msd["curve"] == "ensemble", "track_id"].isna().all()
    traj = pd.read_csv(tmp_path / "run_trackpy.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(trackpy.emsd(traj, 0.1, 100.0, max_lagtime=5)) == 5
    with pytest.raises(Exception, match="already exists"):
        write_extras(tmp_path / "run", results, msd=True)
    assert write_extras(tmp_path / "run", results) == []
