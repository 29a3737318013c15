"""Batch mode of ``spt-diffusion track`` (napari_spt_diffusion.batch): several movies on a Dask cluster.

The cluster test runs ``track FOLDER --workers 2``: a two-worker ``LocalCluster`` of worker
*processes* (as users get it), on three tiny simulated movies (48 x 48 px, 20 frames), one
of them truncated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion import batch, cli
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.io import InputError, read_results, write_movie
from napari_spt_diffusion.simulation.movie import simulate_movie

ACQ = Acquisition()


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def movies(tmp_path_factory) -> Path:
    """A folder of three tiny movies: a.tif and b.tif good, c.tif cut to a third of its bytes."""
    folder = tmp_path_factory.mktemp("movies")
    for seed, name in enumerate(("a", "b", "c")):
        sim = simulate_movie((48, 48), 20, ACQ, rng=10 + seed, model="aniso", particles=4,
                             D1_range_um2_s=(0.5, 2.0))
        write_movie(folder / f"{name}.tif", sim.movie, ACQ)
    broken = folder / "c.tif"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    return folder


def _report(out: Path) -> dict:
    return json.loads((out / batch.REPORT_JSON).read_text())


@pytest.mark.slow
def test_two_worker_local_cluster_three_movies_one_broken_then_rerun(movies, tmp_path, capsys):
    out = tmp_path / "results"
    code, text, err = _run(["track", movies, "--out", out, "--workers", "2"], capsys)
    # some movies failed: exit 1, the others are written, the failure is named in the report
    assert code == batch.EXIT_SOME_FAILED == 1, err
    assert "1 of 3 movies failed" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a_meta.json", "a_summary.csv", "a_tracks.csv", "b_meta.json", "b_summary.csv", "b_tracks.csv",
         "batch_report.csv", "batch_report.json", "combined_summary.csv"])
    report = _report(out)
    assert report["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    assert report["cluster"].startswith("local Dask cluster, 2 worker processes")
    by_name = {m["name"]: m for m in report["movies"]}
    assert by_name["c"]["status"] == "failed" and "truncated" in by_name["c"]["error"]
    assert {by_name["a"]["status"], by_name["b"]["status"]} == {"done"}
    # each result set is the library's, complete, and records the batch's options
    sets = {name: read_results(out / name) for name in ("a", "b")}
    for name, results in sets.items():
        assert results.n_tracks == by_name[name]["n_tracks"] > 0
        assert results.meta["batch"]["acquisition_options"]["calibrate"] is True
        assert results.meta["command"].startswith("spt-diffusion track ")
    # the combined summary: every movie's summary, a leading movie column
    combined = pd.read_csv(out / batch.COMBINED_SUMMARY)
    assert list(combined.columns[:2]) == ["movie", "track_id"]
    assert combined["movie"].value_counts().to_dict() == {n: r.n_tracks for n, r in sets.items()}
    a_rows = combined[combined["movie"] == "a"].reset_index(drop=True)
    np.testing.assert_allclose(a_rows["D1_um2_s"], sets["a"].summary["D1_um2_s"], rtol=1e-6)
    report_csv = pd.read_csv(out / batch.REPORT_CSV)
    assert list(report_csv["status"]) == ["done", "done", "failed"]

    # rerun of the two good movies: both complete for the same settings and model -> skipped, no cluster
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("[ab]_*")}
    code, text, err = _run(["track", movies / "a.tif", movies / "b.tif", "--out", out, "--workers", "2"], capsys)
    assert code == 0, err
    assert text.count("skipped (results complete for the same settings and model)") == 2
    assert _report(out)["counts"] == {"done": 0, "skipped": 2, "failed": 0}
    assert _report(out)["cluster"].startswith("none")
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("[ab]_*")} == before
    assert len(pd.read_csv(out / batch.COMBINED_SUMMARY)) == len(combined)

    # other settings: both run again (and replace their sets); the broken one fails again
    code, text, err = _run(["track", f"{movies}/*.tif", "--out", out, "--workers", "2", "--min-track-length", "6"],
                           capsys)
    assert code == 1, err
    assert text.count("to run again (other settings: result set replaced)") == 2
    report = _report(out)
    assert report["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    for name in ("a", "b"):
        assert read_results(out / name).meta["settings"]["min_track_length"] == 6


def test_run_movie_reports_a_failure_instead_of_raising(movies, tmp_path):
    job = batch.plan_batch([movies / "c.tif"], tmp_path / "out")[0]
    outcome = batch.run_movie(job, batch.BatchOptions())
    assert outcome.status == "failed" and "truncated" in outcome.error and outcome.worker is None
    assert not (tmp_path / "out").exists()


def test_a_complete_set_of_other_acquisition_options_or_an_incomplete_set_runs_again(movies, tmp_path):
    job = batch.plan_batch([movies / "a.tif"], tmp_path)[0]
    options = batch.BatchOptions()
    sha = batch._model_sha256("aniso")
    assert batch.completed_set(job, options, sha) == "new"
    assert batch.run_movie(job, options).status == "done"
    assert batch.completed_set(job, options, sha) is None
    assert batch.completed_set(job, options, "0" * 64).startswith("another model")
    faster = batch.BatchOptions(frame_interval_s=0.02)
    assert batch.completed_set(job, faster, sha).startswith("other acquisition options")
    Path(f"{job.prefix}_tracks.csv").write_text("edited\n")
    assert batch.completed_set(job, options, sha).startswith("incomplete result set")


def test_a_movie_that_switched_model_or_an_older_set_is_complete(tmp_path):
    """A movie outside `aniso`'s range runs `aniso_any` (model_choice): a rerun compares the results
    with that model's checksum, and a sidecar written before a setting existed counts it as default."""
    wide = Acquisition(psf_sigma_nm=170.0, signal_photons=3000.0)
    sim = simulate_movie((64, 64), 30, wide, rng=33, model="aniso", particles=6, D1_range_um2_s=(0.5, 2.0))
    write_movie(tmp_path / "w.tif", sim.movie, wide)
    job = batch.plan_batch([tmp_path / "w.tif"], tmp_path / "out")[0]
    options = batch.BatchOptions()
    sha = batch._model_sha256("aniso")
    assert batch.run_movie(job, options).status == "done"
    meta = read_results(job.prefix).meta
    assert meta["model_switch"]["used"] == meta["model"] != "aniso"
    assert batch.completed_set(job, options, sha) is None
    meta_path = Path(f"{job.prefix}_meta.json")
    stored = json.loads(meta_path.read_text())
    del stored["settings"]["model_switch"]
    assert batch._with_defaults(stored["settings"]) == meta["settings"]
    # a set made before the guard rescaled a model kept the model's values: not the same work either
    without_rescale = {k: v for k, v in stored["settings"].items() if k != "rescale_model"}
    assert batch._with_defaults(without_rescale)["rescale_model"] is False
    # a set made before the per-track range check reported the model's values for every track
    without_range = {k: v for k, v in stored["settings"].items() if k != "model_range_check"}
    assert batch._with_defaults(without_range)["model_range_check"] is False
    # a set made before tracks were relinked by motion used trackpy's links: it is not the same work
    del stored["settings"]["motion_linking"]
    assert batch._with_defaults(stored["settings"])["motion_linking"] is False
    meta_path.write_text(json.dumps(stored))
    assert batch.completed_set(job, options, sha) == "other settings: result set replaced"


def test_inputs_expand_from_files_folders_and_globs(movies, tmp_path):
    names = [p.name for p in batch.expand_inputs([str(movies)])]
    assert names == ["a.tif", "b.tif", "c.tif"]
    assert [p.name for p in batch.expand_inputs([f"{movies}/[ab].tif", str(movies / "a.tif")])] == ["a.tif", "b.tif"]
    with pytest.raises(InputError, match="does not exist"):
        batch.expand_inputs([str(movies / "nope.tif")])
    with pytest.raises(InputError, match="no .tif movie matches"):
        batch.expand_inputs([f"{movies}/*.tiff"])
    with pytest.raises(InputError, match="holds no .tif movie"):
        batch.expand_inputs([str(tmp_path)])
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.tif").write_bytes((movies / "a.tif").read_bytes())
    with pytest.raises(InputError, match="two movies are named a"):
        batch.plan_batch(batch.expand_inputs([str(movies), str(other)]), tmp_path / "out")
    (other / "combined.tif").write_bytes(b"")
    with pytest.raises(InputError, match="combined_summary.csv"):
        batch.plan_batch([other / "combined.tif"], tmp_path / "out")


@pytest.mark.parametrize("extra, message", [
    (["--workers", "2"], "needs --out FOLDER"),
    (["--out", "{movies}/a.tif"], "is a file"),
])
def test_bad_batch_commands_are_one_line_and_exit_2(movies, tmp_path, capsys, extra, message):
    argv = ["track", movies / "a.tif", movies / "b.tif", *[e.format(movies=movies) for e in extra]]
    code, text, err = _run(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    code, text, err = _run(["track", f"{tmp_path}/*.tif", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "no .tif movie matches" in err
    assert not (tmp_path / "o").exists()


def test_help_and_single_movie_runs_do_not_import_dask(movies, tmp_path):
    code = (
        "import sys\n"
        "from napari_spt_diffusion import cli\n"
        f"assert cli.main(['track', {str(movies / 'a.tif')!r}, '--out', {str(tmp_path / 'one')!r}]) == 0\n"
        "assert cli.main(['--help']) == 0\n"
        "assert 'distributed' not in sys.modules and 'dask' not in sys.modules, 'dask imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_results(tmp_path / "one").n_tracks > 0


def test_a_scheduler_that_cannot_be_reached_is_one_line_and_leaves_nothing(movies, tmp_path, capsys):
    out = tmp_path / "out"
    code, text, err = _run(["track", movies / "a.tif", movies / "b.tif", "--out", out, "--scheduler", "noport"],
                           capsys)
    assert code == 2 and "cannot reach the Dask scheduler at noport" in err and err.count("\n") == 1
    assert not out.exists()


def test_estimate_of_a_folder_is_no_batch(movies, tmp_path, capsys):
    code, text, err = _run(["estimate", movies, "--tracks", movies / "a.tif", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "is not a file" in err and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_sigterm_stops_the_batch_reports_the_movies_cancelled_and_a_rerun_completes(movies, tmp_path):
    """SIGTERM while the worker writes the first set (paused there by the test hook): exit 143, one line,
    the report marks both movies cancelled, no result set appears; the next run cleans up and writes both."""
    import os
    import signal
    import time

    out = tmp_path / "out"
    command = [sys.executable, "-m", "napari_spt_diffusion.cli", "track", str(movies / "a.tif"),
               str(movies / "b.tif"), "--out", str(out), "--workers", "1"]
    env = {**os.environ, "SPT_DIFFUSION_TEST_PAUSE": "writing", "SPT_DIFFUSION_TEST_PAUSE_S": "60"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line, deadline = "", time.monotonic() + 120
        while "test pause at writing" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the batch ended before the pause"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().startswith("spt-diffusion: terminated after writing") and err.count("\n") == 1
    report = _report(out)
    assert report["interrupted"] is True and report["counts"]["cancelled"] == 2
    assert not list(out.glob("[ab]_*"))
    code = subprocess.run(command, capture_output=True, text=True, timeout=300).returncode
    assert code == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert _report(out)["counts"] == {"done": 2, "skipped": 0, "failed": 0}
