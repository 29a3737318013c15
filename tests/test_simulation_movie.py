"""Full-field simulated movies and their ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.results import SUMMARY_COLUMNS, TRACKS_COLUMNS, Results, parse_changepoint_frames
from napari_spt_diffusion.simulation import (
    SimulationError,
    expected_photons,
    iter_movie_frames,
    movie_model_names,
    plan_movie,
    simulate_movie,
)
from napari_spt_diffusion.simulation.movie import MovieOptions

ACQ = Acquisition()


@pytest.fixture(scope="module")
def aniso_movie():
    return simulate_movie((64, 80), 150, ACQ, 3, model="aniso", particles=25)


def test_movie_shape_dtype_and_truth_contract(aniso_movie):
    sim = aniso_movie
    assert sim.movie.shape == (150, 64, 80) and sim.movie.dtype == np.uint16
    assert isinstance(sim.truth, Results) and sim.acquisition == ACQ
    tracks, summary = sim.truth.tracks, sim.truth.summary
    assert list(tracks.columns[: len(TRACKS_COLUMNS)]) == list(TRACKS_COLUMNS)
    assert list(summary.columns[: len(SUMMARY_COLUMNS)]) == list(SUMMARY_COLUMNS)
    assert summary["track_id"].is_unique and (summary["model"] == "truth").all()
    assert summary[["D_msd_um2_s", "D_cve_um2_s", "alpha_msd"]].isna().all().all()
    # true positions inside the field, units consistent
    assert tracks["x_px"].between(-0.5, 79.5).all() and tracks["y_px"].between(-0.5, 63.5).all()
    np.testing.assert_allclose(tracks["x_um"], tracks["x_px"] * 0.1)
    np.testing.assert_allclose(tracks["t_s"], tracks["frame"] * 0.01)
    assert (tracks["photons"] == 1000.0).all() and (tracks["background"] == 10.0).all()
    assert tracks["loc_precision_nm"].between(3.0, 6.0).all()  # CRLB at 1000 photons, b = 10
    # single-state model: labels constant per track, D1 within the field protocol's range
    assert not tracks["is_changepoint"].any() and (tracks["state"] == 0).all()
    assert summary["D1_um2_s"].between(0.05, 3.0).all()
    assert (summary["anisotropy"] == 1 - summary["D2_um2_s"] / summary["D1_um2_s"]).all()
    per_track = tracks.groupby("track_id")
    assert (per_track["D1_um2_s"].nunique() == 1).all()
    np.testing.assert_array_equal(summary["n_frames"], per_track.size())
    np.testing.assert_array_equal(summary["frame_start"], per_track["frame"].min())
    np.testing.assert_allclose(summary["x_mean_px"], per_track["x_px"].mean())
    assert sim.truth.meta["model"] == "truth" and sim.truth.meta["acquisition"] == ACQ.to_dict()


def test_mean_number_present_matches_request():
    sim = plan_movie((96, 96), 400, ACQ, 11, particles=40, options=MovieOptions(mean_lifetime_frames=50))
    per_frame = sim.truth.tracks.groupby("frame").size().reindex(range(400), fill_value=0)
    # Poisson count (variance 40) correlated over ~ a lifetime: ~8 independent blocks of 50 frames
    se = math.sqrt(40 / 8)
    assert abs(per_frame.mean() - 40) < 4 * se, per_frame.mean()
    assert per_frame.var() > 10  # particles come and go


def test_tracks_end_when_leaving_and_are_gapless_without_blinking(aniso_movie):
    tracks = aniso_movie.truth.tracks
    for _, t in tracks.groupby("track_id"):
        assert np.all(np.diff(t["frame"]) == 1)
    # a particle's tracks never overlap and are separated by frames outside the field
    spans = tracks.groupby("track_id").agg(p=("particle_id", "first"), a=("frame", "min"), b=("frame", "max"))
    for _, s in spans.groupby("p"):
        if len(s) > 1:
            s = s.sort_values("a")
            assert np.all(s["a"].to_numpy()[1:] > s["b"].to_numpy()[:-1] + 1)
    # tracks enter across the borders and particles are born inside the field
    first = tracks.groupby("track_id").first()
    border = (first["x_px"] < 3) | (first["x_px"] > 76) | (first["y_px"] < 3) | (first["y_px"] > 60)
    late = first["frame"] > 0
    assert (late & border).sum() > 5 and (late & ~border).sum() > 2


def test_movie_pixels_match_truth_positions():
    """Static particles: the time-averaged movie equals offset + background + PSF at the truth positions."""
    acq = Acquisition(signal_photons=600.0)
    n_frames = 60
    sim = simulate_movie(
        (40, 48), n_frames, acq, 5, particles=6, D1_range_um2_s=(0.0, 0.0), mean_lifetime_frames=1e9
    )
    tracks = sim.truth.tracks
    assert tracks["track_id"].nunique() == len(tracks) // n_frames  # every particle lives all along
    positions = tracks.groupby("track_id")[["y_px", "x_px"]].first().to_numpy()
    model = expected_photons(positions[:, None, :], (40, 48), acq).sum(axis=0)
    mean_adu = sim.movie.astype(np.float64).mean(axis=0)
    residual = mean_adu - (acq.offset_adu + acq.background_photons + model)
    var = (acq.background_photons + model + acq.read_noise_e**2 + 1 / 12) / n_frames
    z = residual / np.sqrt(var)
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / z.size)
    # a position error of a quarter pixel would show: the peak pixels move by many sigmas
    shifted = expected_photons(positions[:, None, :] + [0.25, 0.0], (40, 48), acq).sum(axis=0)
    z_bad = (mean_adu - (acq.offset_adu + acq.background_photons + shifted)) / np.sqrt(var)
    assert z_bad.var() > 2


def test_blinking_removes_rows_but_keeps_tracks():
    sim = plan_movie(
        (64, 64), 200, ACQ, 17, particles=30,
        options=MovieOptions(D1_range_um2_s=(0.01, 0.05), blink_off_probability=0.3, blink_on_probability=0.5,
                             mean_lifetime_frames=1e9),
    )
    tracks = sim.truth.tracks
    spans = tracks.groupby("track_id")["frame"].agg(["min", "max", "size"])
    missing = 1 - spans["size"].sum() / (spans["max"] - spans["min"] + 1).sum()
    # stationary off fraction 0.3 / 0.8, slightly less inside spans (they start and end on)
    assert 0.3 < missing < 0.39
    # the renderer gets light exactly from the truth rows inside the field (no light when off)
    centre = sim.emitter_substeps_px.mean(axis=1)
    inside = np.all((centre >= -0.5) & (centre < 63.5), axis=1)
    assert inside.sum() == len(tracks)
    np.testing.assert_array_equal(np.sort(sim.emitter_frame[inside]), np.sort(tracks["frame"].to_numpy()))


def test_binding_movie_labels_and_changepoints():
    sim = plan_movie((64, 64), 300, ACQ, 23, model="binding", particles=15, options=MovieOptions(switch_rate_per_s=3.0))
    tracks, summary = sim.truth.tracks, sim.truth.summary
    bound = tracks["state_kind"] == 0
    assert tracks.loc[bound, "D1_um2_s"].between(0.005, 0.01).all()
    assert (tracks.loc[bound, "theta_deg"] == 0).all()
    assert (tracks.loc[bound, "D1_um2_s"] == tracks.loc[bound, "D2_um2_s"]).all()
    assert tracks.loc[~bound, "D1_um2_s"].between(3.0, 6.0).all()
    assert summary["n_changepoints"].sum() > 10
    for tid, t in tracks.groupby("track_id"):
        kind = t["state_kind"].to_numpy()
        change = np.r_[False, kind[1:] != kind[:-1]]
        np.testing.assert_array_equal(t["is_changepoint"], change)
        np.testing.assert_array_equal(t["state"], np.cumsum(change))
        row = summary.loc[summary["track_id"] == tid].iloc[0]
        assert row["n_changepoints"] == change.sum()
        assert parse_changepoint_frames(row["changepoint_frames"]) == list(t["frame"].to_numpy()[change])


def test_multi_segment_summary_is_time_averaged_tensor():
    sim = plan_movie((64, 64), 300, ACQ, 29, model="binding", particles=15, options=MovieOptions(switch_rate_per_s=3.0))
    tracks, summary = sim.truth.tracks, sim.truth.summary
    tid = summary.loc[summary["n_changepoints"] >= 1, "track_id"].iloc[0]
    t = tracks[tracks["track_id"] == tid]
    th = np.deg2rad(t["theta_deg"].to_numpy())
    u = np.stack([np.cos(th), np.sin(th)], axis=1)  # D1 axis in (x, y)
    v = np.stack([-np.sin(th), np.cos(th)], axis=1)
    tensors = (
        t["D1_um2_s"].to_numpy()[:, None, None] * u[:, :, None] * u[:, None, :]
        + t["D2_um2_s"].to_numpy()[:, None, None] * v[:, :, None] * v[:, None, :]
    )
    w, vec = np.linalg.eigh(tensors.mean(axis=0))
    row = summary.loc[summary["track_id"] == tid].iloc[0]
    assert row["D1_um2_s"] == pytest.approx(w[1], rel=1e-9)
    assert row["D2_um2_s"] == pytest.approx(w[0], rel=1e-9, abs=1e-12)
    angle = math.degrees(math.atan2(vec[1, 1], vec[0, 1])) % 180
    assert abs((row["theta_deg"] - angle + 90) % 180 - 90) < 1e-6


def test_mixed_and_twostate_models():
    mixed = plan_movie((64, 64), 100, ACQ, 31, model="mixed", particles=40, options=MovieOptions(binding_fraction=0.25))
    kinds = mixed.truth.summary["particle_model"].value_counts()
    assert set(kinds.index) == {"aniso", "binding"} and kinds["aniso"] > kinds["binding"]
    two = plan_movie((64, 64), 200, ACQ, 37, model="twostate", particles=20,
                     options=MovieOptions(switch_rate_per_s=4.0))
    t = two.truth.tracks
    assert (t["D1_um2_s"] == t["D2_um2_s"]).all() and (t["theta_deg"] == 0).all()
    assert t["is_changepoint"].sum() > 10


def test_same_seed_same_movie_and_streaming(tmp_path):
    a = simulate_movie((32, 40), 30, ACQ, 41, particles=8, model="mixed")
    b = simulate_movie((32, 40), 30, ACQ, 41, particles=8, model="mixed")
    np.testing.assert_array_equal(a.movie, b.movie)
    assert a.truth.tracks.equals(b.truth.tracks)
    # plan + generator is the same computation as simulate_movie
    gen = np.random.default_rng(41)
    plan = plan_movie((32, 40), 30, ACQ, gen, particles=8, model="mixed")
    frames = np.stack(list(iter_movie_frames(plan, gen)))
    np.testing.assert_array_equal(frames, a.movie)
    # writing into a preallocated memory map, chunk by chunk, with progress reports
    out = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype=np.uint16, shape=(30, 32, 40))
    calls = []
    res = simulate_movie((32, 40), 30, ACQ, 41, particles=8, model="mixed", out=out, chunk_frames=4,
                         progress=lambda f, m: calls.append(f))
    assert res.movie is out and calls[-1] == 1.0
    assert res.truth.tracks.equals(a.truth.tracks)


def test_empty_movie_has_empty_truth():
    sim = simulate_movie((16, 16), 5, ACQ, 1, particles=0)
    assert sim.truth.n_tracks == 0 and len(sim.truth.tracks) == 0
    assert abs(sim.movie.mean() - 110) < 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "brownian"},
        {"particles": -1},
        {"shape_yx": (0, 10)},
        {"n_frames": 0},
        {"D1_range_um2_s": (2.0, 1.0)},
        {"blink_off_probability": 1.5},
        {"blink_off_probability": 0.2, "blink_on_probability": 0.0},
        {"mean_lifetime_frames": 0.5},
        {"switch_rate_per_s": -2.0},
        {"out": np.zeros((3, 3, 3), dtype=np.uint16)},
    ],
)
def test_bad_movie_input(kwargs):
    args = {"shape_yx": (16, 16), "n_frames": 5}
    args.update(kwargs)
    with pytest.raises(SimulationError):
        simulate_movie(args.pop("shape_yx"), args.pop("n_frames"), ACQ, 0, **args)


def test_models_listed():
    assert movie_model_names() == ("aniso", "binding", "twostate", "mixed")
