"""``spt-diffusion estimate`` (tracks from another tool) and the optional files of track/estimate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion import cli
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.msd import MSD_COLUMNS
from napari_spt_diffusion.io import read_results, write_movie
from napari_spt_diffusion.io.track_tables import trackpy_table
from napari_spt_diffusion.simulation.movie import simulate_movie

ACQ = Acquisition()


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def movie_and_tracks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("est")
    sim = simulate_movie((40, 40), 30, ACQ, rng=7, model="aniso", particles=5, D1_range_um2_s=(0.5, 2.0))
    path = folder / "movie.tif"
    write_movie(path, sim.movie, ACQ)
    t = sim.truth.tracks
    t = t[t.groupby("track_id")["frame"].transform("size") >= 6]
    csv = folder / "linked_by_trackpy.csv"
    trackpy_table(t.assign(track_id=t["track_id"] + 500)).to_csv(csv, index=False)
    return path, csv, t


def test_estimate_writes_the_result_set_with_the_given_ids(movie_and_tracks, tmp_path, capsys, toy_models):
    movie, csv, truth = movie_and_tracks
    prefix = tmp_path / "est"
    code, out, err = _run(["estimate", movie, "--tracks", csv, "--out", prefix, "--model", toy_models["pointwise"],
                           "--device", "cpu", "--msd", "--trackpy-table", "--drift-correction"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["est_meta.json", "est_msd.csv", "est_summary.csv", "est_trackpy.csv", "est_tracks.csv"]
    results = read_results(prefix)
    assert set(results.summary["track_id"]) == set(truth["track_id"].unique() + 500)
    meta = json.loads((tmp_path / "est_meta.json").read_text())
    assert meta["tracks_source"]["format"] == "trackpy-csv"
    assert meta["command"].startswith("spt-diffusion estimate ")
    assert meta["drift_correction"]["enabled"] is True and len(meta["drift_correction"]["drift_px"]) == 30
    assert "trackpy-csv" in out and "wrote" in out
    msd = pd.read_csv(tmp_path / "est_msd.csv")
    assert list(msd.columns) == list(MSD_COLUMNS)
    assert set(msd["curve"]) == {"ensemble", "track"}
    traj = pd.read_csv(tmp_path / "est_trackpy.csv")
    assert list(traj.columns) == ["frame", "x", "y", "particle"]
    np.testing.assert_allclose(np.sort(traj["x"]), np.sort(results.tracks["x_px"]), atol=1e-6)


def test_estimate_errors_are_one_line_and_write_nothing(movie_and_tracks, tmp_path, capsys, toy_models):
    movie, csv, truth = movie_and_tracks
    base = ["estimate", movie, "--model", toy_models["sequence"], "--device", "cpu", "--out", tmp_path / "x"]
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"frame": [0, 1], "x": [1.0, 2.0], "y": [1.0, 2.0]}).to_csv(bad, index=False)
    cases = [
        ([*base, "--tracks", bad, "--tracks-format", "trackpy-csv"], "lacks column(s) particle"),
        ([*base, "--tracks", bad], "not a known track table"),
        ([*base, "--tracks", tmp_path / "missing.csv"], "does not exist"),
    ]
    late = tmp_path / "late.csv"
    trackpy_table(truth.assign(frame=truth["frame"] + 100)).to_csv(late, index=False)
    cases.append(([*base, "--tracks", late], "movie has 30 frames"))
    outside = tmp_path / "outside.csv"
    trackpy_table(truth).to_csv(outside, index=False)
    cases.append(([*base, "--tracks", outside, "--tracks-units", "um"], "outside the movie's 40 x 40 px field"))
    for argv, fragment in cases:
        code, _, err = _run(argv, capsys)
        assert code == cli.EXIT_USAGE, err
        errors = [line for line in err.strip().splitlines() if line.startswith("spt-diffusion: error: ")]
        assert len(errors) == 1 and fragment in errors[0], err
        assert "Traceback" not in err
        assert not list(tmp_path.glob("x_*")) and not list(tmp_path.glob(".x_*"))
    code, _, err = _run(["estimate", movie, "--out", tmp_path / "y"], capsys)
    assert code == cli.EXIT_USAGE and "--tracks" in err


def test_track_writes_the_optional_files(movie_and_tracks, tmp_path, capsys, toy_models):
    movie, _, _ = movie_and_tracks
    code, _, err = _run(["track", movie, "--out", tmp_path / "run", "--model", toy_models["sequence"], "--device",
                         "cpu", "--msd", "--min-track-length", "4"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["run_meta.json", "run_msd.csv", "run_summary.csv", "run_tracks.csv"]
    meta = json.loads((tmp_path / "run_meta.json").read_text())
    assert meta["drift_correction"] == {"enabled": False}
    # an existing optional file blocks the run before any work, and nothing is changed
    before = (tmp_path / "run_msd.csv").read_bytes()
    (tmp_path / "run_tracks.csv").unlink()
    code, _, err = _run(["track", movie, "--out", tmp_path / "run", "--model", toy_models["sequence"], "--device",
                         "cpu", "--msd"], capsys)
    assert code == cli.EXIT_USAGE and "already exists" in err
    assert (tmp_path / "run_msd.csv").read_bytes() == before and not (tmp_path / "run_tracks.csv").exists()


def test_a_batch_refuses_the_optional_files_it_does_not_write(movie_and_tracks, tmp_path, capsys):
    movie, _, _ = movie_and_tracks
    code, _, err = _run(["track", movie, movie, "--out", tmp_path / "batch", "--msd"], capsys)
    assert code == cli.EXIT_USAGE and "not written in a batch" in err
    assert not (tmp_path / "batch").exists()
