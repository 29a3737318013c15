"""Tests of pipeline.py: the whole job on a small simulated movie, contract, progress, cancel.

The model here is a tiny TorchScript "toy tensor" model built in the test that follows
the checkpoint contract and estimates each window's tensor from the covariance of its
displacements (a real, if crude, estimator), so the wiring from movie to tables can be
checked against the simulation's truth without the bundled checkpoints.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.estimator import Estimator, TrackEstimate
from napari_spt_diffusion.io import InputError
from napari_spt_diffusion.pipeline import (
    Cancelled,
    NoParticlesFound,
    PipelineError,
    Settings,
    _tables,
    segments_table,
    track_and_estimate,
    track_changepoints,
)
from napari_spt_diffusion.results import (
    SUMMARY_COLUMNS,
    TRACKS_COLUMNS,
    Results,
    parse_changepoint_frames,
    validate_tables,
)
from napari_spt_diffusion.simulation.movie import simulate_movie

STANDARD = Acquisition()


@pytest.fixture(scope="module")
def small_movie():
    return simulate_movie((64, 64), 40, STANDARD, rng=3, model="aniso", particles=6, D1_range_um2_s=(0.5, 2.0))


@pytest.fixture(scope="module")
def run(small_movie, toy_models):
    seen: list[tuple[float, str]] = []
    settings = Settings(model=toy_models["sequence"], device="cpu", min_track_length=3)
    results = track_and_estimate(small_movie.movie, STANDARD, settings, progress=lambda f, m: seen.append((f, m)))
    return results, seen


def _match_truth(results: Results, truth: Results) -> dict[int, int]:
    """Result track id -> truth track id sharing most rows (positions within 1 px)."""
    merged = results.tracks[["track_id", "frame", "x_px", "y_px"]].merge(
        truth.tracks[["track_id", "frame", "x_px", "y_px"]], on="frame", suffixes=("", "_t")
    )
    close = np.hypot(merged["x_px"] - merged["x_px_t"], merged["y_px"] - merged["y_px_t"]) < 1.0
    pairs = merged[close].groupby(["track_id", "track_id_t"]).size().reset_index(name="n")
    best = pairs.sort_values("n").groupby("track_id").tail(1)
    return dict(zip(best["track_id"], best["track_id_t"]))


# --------------------------------------------------------------- end to end
def test_pipeline_results_follow_the_contract(run):
    results, _ = run
    assert isinstance(results, Results)
    validate_tables(results.tracks, results.summary)
    assert list(results.tracks.columns) == list(TRACKS_COLUMNS)
    assert list(results.summary.columns)[: len(SUMMARY_COLUMNS)] == list(SUMMARY_COLUMNS)
    s, t = results.summary, results.tracks
    assert len(s) >= 3
    assert (s["n_frames"] >= 3).all()
    counts = t.groupby("track_id").size()
    assert np.array_equal(counts.loc[s["track_id"]].to_numpy(), s["n_frames"].to_numpy())
    assert np.allclose(t["t_s"], t["frame"] * STANDARD.frame_interval_s)
    assert np.allclose(t["x_um"], t["x_px"] * 0.1) and np.allclose(t["y_um"], t["y_px"] * 0.1)
    assert ((s["theta_deg"] >= 0) & (s["theta_deg"] < 180)).all()
    assert np.allclose(s["anisotropy"], 1 - s["D2_um2_s"] / s["D1_um2_s"])
    assert (s["n_changepoints"] == 0).all() and (t["state"] == 0).all()  # sequence model
    assert set(s["method"]) <= {"model", "classical"}
    assert results.meta["model"] == "toyseq" and results.meta["acquisition"] == STANDARD.to_dict()
    assert results.meta["state_changes"] is None  # no states to count for a one-state model
    assert all(np.isfinite(v) for v in results.meta["timings_s"].values())


def test_pipeline_estimates_agree_with_truth(run, small_movie):
    results, _ = run
    truth = small_movie.truth
    match = _match_truth(results, truth)
    assert len(match) >= 3
    s = results.summary.set_index("track_id")
    ts = truth.summary.set_index("track_id")
    ratios, msd_ratios = [], []
    for rid, tid in match.items():
        if s.loc[rid, "n_frames"] >= 10:
            ratios.append(s.loc[rid, "D1_um2_s"] / ts.loc[tid, "D1_um2_s"])
            msd_ratios.append(s.loc[rid, "D_msd_um2_s"] / (0.5 * (ts.loc[tid, "D1_um2_s"] + ts.loc[tid, "D2_um2_s"])))
    # the toy model ignores blur (factor 1 - 2R = 0.67) and localization noise; short tracks
    assert 0.3 < np.median(ratios) < 1.5
    assert 0.4 < np.median(msd_ratios) < 2.5
    # localizations lie on the true positions
    merged = results.tracks.merge(truth.tracks, on="frame", suffixes=("", "_t"))
    d = np.hypot(merged["x_px"] - merged["x_px_t"], merged["y_px"] - merged["y_px_t"])
    nearest = d.groupby([merged["track_id"], merged["frame"]]).min()
    assert np.median(nearest) < 0.3


def test_every_track_carries_its_isotropy_test_and_the_movie_its_verdict(run):
    from napari_spt_diffusion.estimation.isotropy import isotropy_p_value

    results, _ = run
    s, t = results.summary.set_index("track_id"), results.tracks
    assert "isotropy_p" in s.columns
    for tid, rows in t.groupby("track_id"):
        expected = isotropy_p_value(rows[["y_px", "x_px"]].to_numpy(), rows["frame"].to_numpy(),
                                    rows["state"].to_numpy())
        got = s.loc[tid, "isotropy_p"]
        assert (np.isnan(expected) and np.isnan(got)) or got == pytest.approx(expected, rel=1e-9)
    verdict = results.meta["isotropy"]
    assert verdict["n_tested"] == int(np.isfinite(s["isotropy_p"]).sum()) >= 3
    assert verdict["n_anisotropic"] == int((s["isotropy_p"] < verdict["alpha"]).sum())
    assert verdict["text"].startswith("Isotropy: ")


def test_progress_is_monotone_and_complete(run):
    _, seen = run
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)
    assert len(fractions) > 10 and all(isinstance(m, str) and m for _, m in seen)


def test_pointwise_model_gives_per_frame_values_and_segments(small_movie, toy_models):
    settings = Settings(model=toy_models["pointwise"], device="cpu", min_track_length=3)
    results = track_and_estimate(small_movie.movie, STANDARD, settings)
    validate_tables(results.tracks, results.summary)
    seg = segments_table(results)
    assert set(seg["track_id"]) == set(results.summary["track_id"])
    assert (seg.groupby("track_id")["n_frames"].sum().loc[results.summary["track_id"]].to_numpy()
            == results.summary["n_frames"].to_numpy()).all()
    n_cp = results.summary["n_changepoints"].to_numpy()
    assert np.array_equal(seg.groupby("track_id").size().loc[results.summary["track_id"]].to_numpy(), n_cp + 1)
    # the confirmed changes of state are counted over the model's tracks of >= 20 frames, when its values
    # are reported (the guard rejects this toy model: then there is nothing to count)
    assert results.meta["guard"]["rejected"] and results.meta["state_changes"] is None
    trusted = track_and_estimate(small_movie.movie, STANDARD, Settings(model=toy_models["pointwise"], device="cpu",
                                                                        min_track_length=3, trust_model=True))
    record, s = trusted.meta["state_changes"], trusted.summary
    long_model = s[(s["model"] == trusted.meta["model"]) & (s["n_frames"] >= 20)]
    assert record["tracks"] == len(long_model) > 0
    assert record["with_change"] == int((long_model["n_changepoints"] > 0).sum())


def test_chunked_estimation_gives_the_same_results(run, small_movie, toy_models):
    results, _ = run
    settings = Settings(model=toy_models["sequence"], device="cpu", min_track_length=3, chunk_localizations=40)
    chunked = track_and_estimate(small_movie.movie, STANDARD, settings)
    pd.testing.assert_frame_equal(chunked.tracks, results.tracks)
    pd.testing.assert_frame_equal(chunked.summary, results.summary)


def test_estimator_can_be_reused(small_movie, toy_models):
    est = Estimator(toy_models["sequence"], device="cpu")
    a = track_and_estimate(small_movie.movie[:20], STANDARD, Settings(min_track_length=3), estimator=est)
    assert a.meta["model"] == "toyseq"
    # settings may also come as a dict (None values ignored), as the CLI builds them
    b = track_and_estimate(small_movie.movie[:20], STANDARD,
                           {"model": toy_models["sequence"], "device": "cpu", "min_track_length": 3,
                            "batch_size": None})
    pd.testing.assert_frame_equal(a.summary, b.summary)
    with pytest.raises(PipelineError, match="unknown pipeline setting"):
        track_and_estimate(small_movie.movie[:20], STANDARD, {"colour": "red"}, estimator=est)


# ------------------------------------------------------------- changepoints
def _estimate(track_id: int, frames: np.ndarray, d1: np.ndarray, pointwise: bool = True) -> TrackEstimate:
    n = len(frames)
    return TrackEstimate(track_id, frames, d1, 0.5 * d1, np.full(n, 30.0), float(d1.mean()), float(d1.mean() / 2),
                         30.0, "model", (), 1, pointwise)


def _walk(d_um2_s: np.ndarray, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(T, 2) positions (px) of a random walk with per-frame D (um^2/s) and 5 nm localization noise."""
    sigma_px = np.sqrt(2 * d_um2_s * STANDARD.frame_interval_s) / STANDARD.pixel_size_um
    steps = rng.normal(size=(len(frames), 2)) * sigma_px[:, None] * np.sqrt(np.diff(frames, prepend=frames[0]))[:, None]
    return 50.0 + np.cumsum(steps, axis=0) + rng.normal(0, 0.05, size=(len(frames), 2))


def test_tables_place_changepoints_on_frame_numbers(toy_models):
    est = Estimator(toy_models["pointwise"], device="cpu")
    rng = np.random.default_rng(0)
    frames_a = np.r_[np.arange(10, 22), np.arange(24, 40)]  # 28 rows with a gap
    true_a = np.where(np.arange(28) < 12, 0.008, 4.0)
    d1_a = true_a * np.exp(rng.normal(0, 0.1, 28))
    frames_b = np.arange(0, 20)
    true_b = np.full(20, 2.0)
    d1_b = true_b * np.exp(rng.normal(0, 0.1, 20))
    frames_c = np.arange(0, 90)  # longer than max_frames (20): several changepoints
    true_c = np.where((frames_c < 30) | (frames_c >= 60), 0.01, 3.0)
    d1_c = true_c * np.exp(rng.normal(0, 0.1, 90))
    positions = np.vstack([_walk(true_a, frames_a, rng), _walk(true_b, frames_b, rng), _walk(true_c, frames_c, rng)])
    tracks = pd.DataFrame(
        {
            "track_id": np.r_[np.zeros(28), np.ones(20), np.full(90, 2)].astype(int),
            "frame": np.r_[frames_a, frames_b, frames_c],
            "x_px": positions[:, 1],
            "y_px": positions[:, 0],
            "loc_precision_nm": 5.0,
        }
    )
    estimates = [_estimate(0, frames_a, d1_a), _estimate(1, frames_b, d1_b), _estimate(2, frames_c, d1_c)]
    classical = {i: {"D_msd_um2_s": 1.0, "D_cve_um2_s": 1.0, "alpha_msd": 1.0} for i in range(3)}
    # particles that do not move at all: the displacements confirm no change of state
    still = tracks.assign(x_px=5.0, y_px=6.0)
    _, s_still = _tables(still, estimates, classical, STANDARD, est, Settings(), "auto")
    assert (s_still["n_changepoints"] == 0).all()
    _, s_unconfirmed = _tables(still, estimates, classical, STANDARD, est, Settings(changepoint_confirm=False), "auto")
    assert s_unconfirmed["n_changepoints"].tolist() == [1, 0, 2]
    t, s = _tables(tracks, estimates, classical, STANDARD, est, Settings(), "auto")
    validate_tables(t, s)
    assert parse_changepoint_frames(s.loc[0, "changepoint_frames"]) == [24]  # row 12 is frame 24
    assert s.loc[1, "n_changepoints"] == 0 and s.loc[1, "changepoint_frames"] == ""
    assert parse_changepoint_frames(s.loc[2, "changepoint_frames"]) == [30, 60]
    rows = t[t["track_id"] == 0]
    assert rows.loc[rows["is_changepoint"], "frame"].tolist() == [24]
    assert (rows["state"].to_numpy() == (rows["frame"].to_numpy() >= 24)).all()
    assert t[t["track_id"] == 2]["state"].max() == 2
    t_none, s_none = _tables(tracks, estimates, classical, STANDARD, est, Settings(), "none")
    assert (s_none["n_changepoints"] == 0).all() and not t_none["is_changepoint"].any()



def _model_estimates(traj, est: Estimator, rng: np.random.Generator):
    """Render, localize and estimate simulated trajectories; returns (estimates, positions, precision px)."""
    from napari_spt_diffusion.tracking.patches import TrackPatches
    from napari_spt_diffusion.training.samples import samples_from_trajectories

    batch = samples_from_trajectories(traj, rng)
    n, t = batch.patches.shape[:2]
    tracks = [
        TrackPatches(i, np.arange(t), batch.positions_px[i], batch.patches[i], batch.subpixel_offset_px[i],
                     batch.outside_mask[i], batch.displacements[i].astype(np.float64),
                     np.r_[True, np.zeros(t - 1, dtype=bool)])
        for i in range(n)
    ]
    return est.estimate(tracks, STANDARD), batch.positions_px, batch.loc_precision_nm / STANDARD.pixel_size_nm


def test_binding_model_changepoints_on_one_state_and_switching_tracks():
    # the bundled binding model on one-state anisotropic tracks (D1 0.05-6 um^2/s, outside its
    # training states): confirmed changepoints on at most 5 % of the tracks (measured 0.7 %,
    # benchmarks/reports/changepoints.md); a bound <-> unbound switch is still found within 2 frames
    from napari_spt_diffusion.simulation.trajectories import simulate_anisotropic, simulate_binding

    torch.set_num_threads(1)
    est = Estimator("binding", device="cpu")
    rng = np.random.default_rng(40)
    settings, unconfirmed = Settings(), Settings(changepoint_confirm=False)
    estimates, pos, prec = _model_estimates(simulate_anisotropic(120, 30, STANDARD, rng), est, rng)
    n_confirmed = sum(
        len(track_changepoints(e, "auto", est, settings, positions_px=pos[i], loc_precision_px=prec[i],
                               acquisition=STANDARD)) > 0
        for i, e in enumerate(estimates)
    )
    n_decided = sum(len(track_changepoints(e, "auto", est, unconfirmed)) > 0 for e in estimates)
    assert n_confirmed <= 6 and n_confirmed <= n_decided, (n_confirmed, n_decided)
    traj = simulate_binding(60, 30, STANDARD, rng)
    estimates, pos, prec = _model_estimates(traj, est, rng)
    found = 0
    for i, e in enumerate(estimates):
        c = track_changepoints(e, "auto", est, settings, positions_px=pos[i], loc_precision_px=prec[i],
                               acquisition=STANDARD)
        true = traj.changepoint_frames[i]
        found += len(c) == 1 and len(true) == 1 and abs(int(c[0]) - int(true[0])) <= 2
    n_inside = sum(len(t) == 1 and 2 <= int(t[0]) <= 28 for t in traj.changepoint_frames)
    assert found >= 0.9 * n_inside, (found, n_inside)


# -------------------------------------------------------- cancel and errors
def test_cancel_inside_detection(small_movie, toy_models):
    calls = {"n": 0}

    def stop_after_ten() -> bool:
        calls["n"] += 1
        return calls["n"] > 10

    with pytest.raises(Cancelled):
        track_and_estimate(small_movie.movie, STANDARD, Settings(model=toy_models["sequence"], device="cpu"),
                           should_stop=stop_after_ten)
    assert calls["n"] == 11  # stopped at the first poll that said so, inside the frame loop


def test_cancel_between_later_steps(small_movie, toy_models):
    est = Estimator(toy_models["sequence"], device="cpu")
    state = {"stop": False}

    def progress(fraction: float, message: str) -> None:
        if message.startswith("linking"):
            state["stop"] = True

    with pytest.raises(Cancelled):
        track_and_estimate(small_movie.movie, STANDARD, Settings(min_track_length=3), progress=progress,
                           should_stop=lambda: state["stop"], estimator=est)


def test_no_particles_and_bad_movies(toy_models):
    est = Estimator(toy_models["sequence"], device="cpu")
    rng = np.random.default_rng(0)
    background = (100 + rng.poisson(10, (5, 32, 32))).astype(np.uint16)
    with pytest.raises(NoParticlesFound, match="no particles were found") as info:
        track_and_estimate(background, STANDARD, estimator=est)
    assert isinstance(info.value, InputError) and str(info.value).count(". ") == 0
    with pytest.raises(PipelineError, match=r"\(T, Y, X\)"):
        track_and_estimate(np.zeros((32, 32), np.uint16), STANDARD, estimator=est)
    with pytest.raises(PipelineError, match="empty"):
        track_and_estimate(np.zeros((0, 32, 32), np.uint16), STANDARD, estimator=est)
    with pytest.raises(PipelineError):
        Settings(changepoints="sometimes")
    with pytest.raises(PipelineError, match="changepoint_confirm_alpha"):
        Settings(changepoint_confirm_alpha=1.5)
    with pytest.raises(PipelineError):
        Settings(min_track_length=0)
