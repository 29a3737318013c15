"""Result sets written as one (issue 15, items 5 and 6).

* Output targets of ``track`` are checked before any computation: each bad ``--out`` is one
  line, exit status 2, nothing written, and the pipeline never runs.
* ``_meta.json`` is renamed last and records the tables' SHA-256, size and row count;
  ``read_results`` refuses an incomplete set and one that mixes two writes.
* Temporaries left by a killed write are removed by the next write of the same targets.
* SIGTERM ends the CLI like Ctrl-C (exit 143, one line, no temporaries).
* Kill tests: ``spt-diffusion track --overwrite`` run as a subprocess, paused at a stage by
  the test hook ``SPT_DIFFUSION_TEST_PAUSE`` and sent SIGINT, SIGTERM or SIGKILL there; the
  folder then holds the complete old set or the complete new one (after SIGKILL between
  the renames: a mix that the reader refuses and the next run replaces).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_spt_diffusion import cli, pipeline
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.io import InputError, read_results, write_movie, write_results
from napari_spt_diffusion.io._atomic import AtomicFileSet, remove_stale_temporaries, temporary_path
from napari_spt_diffusion.results import Results

NAMES = ("r_tracks.csv", "r_summary.csv", "r_meta.json")


@pytest.fixture(scope="module")
def movie(tmp_path_factory) -> Path:
    """A small simulated movie (20 frames of 40 x 40 px, a few particles) and its truth."""
    folder = tmp_path_factory.mktemp("movie")
    code = cli.main(["simulate", str(folder / "k.tif"), "--frames", "20", "--particles", "4", "--size", "40",
                     "--seed", "3"])
    assert code == 0
    return folder / "k.tif"


@pytest.fixture(scope="module")
def truth(movie) -> Results:
    return read_results(movie.with_name("k_truth"))


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(code, err) -> str:
    assert code == cli.EXIT_USAGE and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spt-diffusion: error: "), err
    return lines[0]


def _dead_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ------------------------------------------------------------- output targets
@pytest.fixture
def no_pipeline(monkeypatch):
    """Fail the test if the tracking pipeline is started."""

    def must_not_run(*args, **kwargs):
        raise AssertionError("the pipeline ran before the output target was checked")

    monkeypatch.setattr(pipeline, "track_and_estimate", must_not_run)


@pytest.mark.parametrize(
    ("out", "fragment"),
    [
        ("existing", "is a folder; write into it with --out"),
        ("", "--out is empty"),
        (".", "is a folder; write into it with --out ./"),
        ("/proc/r", "cannot write to folder /proc"),
        ("/proc/", "cannot write to folder /proc"),
        ("clash", "clash_summary.csv is a folder"),
        ("afile.txt/", "is a file, not a folder"),
        ("afile.txt/sub/r", "afile.txt is not a folder"),
    ],
)
def test_bad_out_is_refused_before_any_work(movie, tmp_path, monkeypatch, capsys, no_pipeline, out, fragment):
    if out.startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("needs Linux /proc")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(movie, work / "k.tif")
    (work / "existing").mkdir()
    (work / "clash_summary.csv").mkdir()
    (work / "afile.txt").write_text("x")
    before = sorted(p.name for p in work.rglob("*"))
    monkeypatch.chdir(work)
    code, out_text, err = _run(["track", "k.tif", "--out", out], capsys)
    assert fragment in _one_error_line(code, err)
    assert sorted(p.name for p in work.rglob("*")) == before


def test_default_prefix_that_is_a_folder_is_refused_before_any_work(movie, tmp_path, capsys, no_pipeline):
    shutil.copy(movie, tmp_path / "k.tif")
    (tmp_path / "k").mkdir()
    code, _, err = _run(["track", tmp_path / "k.tif"], capsys)
    line = _one_error_line(code, err)
    assert "default output prefix" in line and f"--out {tmp_path / 'k'}{os.sep}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.tif"]


def test_trailing_slash_writes_into_the_folder(movie, truth, tmp_path, monkeypatch, capsys):
    """``--out DIR/`` puts the files into DIR (created), named after the movie."""
    monkeypatch.setattr(pipeline, "track_and_estimate", lambda *a, **k: Results(truth.tracks, truth.summary, {}))
    code, out, err = _run(["track", movie, "--out", f"{tmp_path / 'new' / 'deeper'}{os.sep}"], capsys)
    assert code == 0, err
    folder = tmp_path / "new" / "deeper"
    assert sorted(p.name for p in folder.iterdir()) == ["k_meta.json", "k_summary.csv", "k_tracks.csv"]
    assert read_results(folder / "k").n_tracks == truth.n_tracks
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["track", movie, "--out", "./"], capsys)  # the current folder
    assert code == 0, err
    assert (tmp_path / "k_meta.json").is_file()


def test_results_paths_refuse_prefixes_without_a_name(tmp_path):
    for prefix in ("", ".", "..", f"{tmp_path}{os.sep}"):
        with pytest.raises(InputError, match="empty|is a folder"):
            write_results(prefix, Results(*_tables()))
        with pytest.raises(InputError):
            read_results(prefix)


def _tables():
    from napari_spt_diffusion.results import empty_summary_table, empty_tracks_table

    return empty_tracks_table(), empty_summary_table()


# ------------------------------------------------------------ checksums, reader
def test_meta_records_checksums_of_the_tables(truth, tmp_path):
    write_results(tmp_path / "r", truth)
    meta = json.loads((tmp_path / "r_meta.json").read_text())
    checksums = meta["checksums"]
    assert checksums["algorithm"] == "sha256"
    for key, rows in (("tracks", len(truth.tracks)), ("summary", len(truth.summary))):
        data = (tmp_path / f"r_{key}.csv").read_bytes()
        assert checksums[key] == {"file": f"r_{key}.csv", "sha256": hashlib.sha256(data).hexdigest(),
                                  "bytes": len(data), "rows": rows}
    assert read_results(tmp_path / "r").n_tracks == truth.n_tracks


def test_reader_refuses_incomplete_or_mixed_sets(truth, tmp_path):
    write_results(tmp_path / "old", truth)
    changed = Results(truth.tracks.assign(t_s=truth.tracks["t_s"] * 2), truth.summary, dict(truth.meta))
    write_results(tmp_path / "new", changed)

    # a mix: new tracks beside the old summary and sidecar (a write killed between its renames)
    shutil.copy(tmp_path / "new_tracks.csv", tmp_path / "old_tracks.csv")
    with pytest.raises(InputError, match=r"incomplete or mixed result set .*old: old_tracks.csv does not match"):
        read_results(tmp_path / "old")
    np.testing.assert_allclose(read_results(tmp_path / "old", verify=False).tracks["t_s"], changed.tracks["t_s"],
                               rtol=1e-8)

    # the sidecar is renamed last: tables without it are an incomplete set
    (tmp_path / "new_meta.json").unlink()
    with pytest.raises(InputError, match=r"incomplete result set .*new: new_meta.json missing"):
        read_results(tmp_path / "new")
    assert read_results(tmp_path / "new", verify=False).meta == {}
    (tmp_path / "new_summary.csv").unlink()
    with pytest.raises(InputError, match="new_summary.csv, new_meta.json missing"):
        read_results(tmp_path / "new_tracks.csv")

    # a row count that disagrees with the sidecar (the checksum matched: the sidecar was edited)
    write_results(tmp_path / "rows", truth)
    meta = json.loads((tmp_path / "rows_meta.json").read_text())
    meta["checksums"]["summary"]["rows"] += 1
    (tmp_path / "rows_meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="rows_summary.csv has .* rows, rows_meta.json records"):
        read_results(tmp_path / "rows")

    # a sidecar of a version that recorded no checksums is read as it is
    del meta["checksums"]
    (tmp_path / "rows_meta.json").write_text(json.dumps(meta))
    assert read_results(tmp_path / "rows").n_tracks == truth.n_tracks


# -------------------------------------------------------- stale temporaries
def test_stale_temporaries_of_the_same_targets_are_removed(truth, tmp_path):
    dead = _dead_pid()
    target = tmp_path / "r_tracks.csv"
    stale = [
        tmp_path / f".r_tracks.csv.{dead}-0123456789ab.tmp",  # a killed process
        tmp_path / ".r_meta.json.0123456789ab.tmp",  # an earlier version (no process id)
    ]
    kept = [
        temporary_path(target),  # this process's own
        tmp_path / f".r_tracks.csv.{os.getppid()}-0123456789ab.tmp",  # a live process
        tmp_path / f".other_tracks.csv.{dead}-0123456789ab.tmp",  # another prefix
        tmp_path / f".r_tracks.csv.{dead}-notours.tmp",  # not our pattern
        tmp_path / "r_notes.txt",
    ]
    for path in stale + kept:
        path.write_text("x")
    assert sorted(remove_stale_temporaries([target])) == [stale[0]]
    write_results(tmp_path / "r", truth)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


# ----------------------------------------------------- signals in-process
def _default_sigint() -> None:
    """Restore the default SIGINT disposition (a shell starting a job in the background ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupt_during_the_renames_is_held_until_the_set_is_complete(truth, tmp_path, monkeypatch):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive run
    try:
        _interrupt_during_the_renames(truth, tmp_path, monkeypatch)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_during_the_renames(truth, tmp_path, monkeypatch):
    write_results(tmp_path / "r", truth)
    old = _contents(tmp_path)
    real_replace = os.replace
    calls = []

    def replace_and_interrupt(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives between the first and second rename
        real_replace(src, dst)

    changed = Results(truth.tracks.assign(t_s=truth.tracks["t_s"] * 3), truth.summary, dict(truth.meta))
    monkeypatch.setattr(os, "replace", replace_and_interrupt)
    with pytest.raises(KeyboardInterrupt) as caught:
        write_results(tmp_path / "r", changed, overwrite=True)
    monkeypatch.undo()
    assert len(calls) == 3 and [p.name for p in caught.value.files_written] == list(NAMES)
    assert _contents(tmp_path) != old and not _temporaries(tmp_path)
    np.testing.assert_allclose(read_results(tmp_path / "r").tracks["t_s"], changed.tracks["t_s"], rtol=1e-8)


def test_interrupt_before_the_renames_keeps_the_old_set(truth, tmp_path, monkeypatch):
    write_results(tmp_path / "r", truth)
    old = _contents(tmp_path)

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr("napari_spt_diffusion.io._atomic._fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_results(tmp_path / "r", truth, overwrite=True)
    assert _contents(tmp_path) == old and not _temporaries(tmp_path)


def test_sigterm_ends_the_cli_like_ctrl_c(movie, tmp_path, capsys, monkeypatch):
    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(pipeline, "track_and_estimate", terminated)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = _run(["track", movie, "--out", tmp_path / "r"], capsys)
    assert code == cli.EXIT_TERMINATED == 143
    assert err.strip().splitlines()[-1] == "spt-diffusion: terminated; no output file was written or changed"
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the CLI's only while it runs


def test_pause_hook_is_inert_without_the_variable(monkeypatch):
    from napari_spt_diffusion import _pause

    monkeypatch.delenv(_pause.PAUSE_ENV, raising=False)
    t0 = time.perf_counter()
    for stage in ("detection", "inference", "writing", "renaming"):
        _pause.pause_point(stage)
    assert time.perf_counter() - t0 < 0.05
    assert cli._with_pause_points(print) is print


def test_aborted_first_write_without_overwrite_leaves_nothing(tmp_path):
    """Without --overwrite a failure between the renames takes the placed files back."""
    targets = [tmp_path / n for n in NAMES]
    with pytest.raises(KeyboardInterrupt):
        with AtomicFileSet(targets, overwrite=False) as staging:
            for target in targets:
                staging.temp(target).write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- kill tests
def _command() -> list[str]:
    script = Path(sys.executable).with_name("spt-diffusion")
    return [str(script)] if script.exists() else [sys.executable, "-m", "napari_spt_diffusion.cli"]


@pytest.fixture(scope="module")
def old_set(movie, tmp_path_factory) -> dict[str, bytes]:
    """A complete result set of the movie written by ``track`` (frame interval 0.02 s, so that
    the runs below, with the file's 0.01 s, write different tables)."""
    folder = tmp_path_factory.mktemp("old")
    code = cli.main(["track", str(movie), "--out", str(folder / "r"), "--device", "cpu", "--no-calibrate",
                     "--frame-interval-s", "0.02"])
    assert code == 0
    contents = _contents(folder)
    assert sorted(contents) == sorted(NAMES)
    return contents


STAGES = ("detection", "inference", "writing", "renaming")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


@pytest.fixture(scope="module")
def killed_runs(movie, old_set, tmp_path_factory) -> dict[tuple[str, str], tuple[Path, int, str]]:
    """Every (stage, signal): ``track --overwrite`` into a folder holding ``old_set`` as ``r_*``,
    paused at the stage by the test hook and sent the signal there.

    The 12 runs go side by side (most of a run is Python importing torch), each signalled
    as soon as it says it has paused. Returns ``(folder, exit status, stderr)`` per run.
    """
    runs = {}
    try:
        for stage in STAGES:
            for sig in SIGNALS:
                folder = tmp_path_factory.mktemp(f"kill-{stage}-{sig.name}")
                for name, data in old_set.items():
                    (folder / name).write_bytes(data)
                env = dict(os.environ, SPT_DIFFUSION_TEST_PAUSE=stage,
                           SPT_DIFFUSION_TEST_PAUSE_S="1" if stage == "renaming" else "120")
                env.pop("SPT_DIFFUSION_DEBUG", None)
                log = folder.parent / f"{folder.name}.stderr"
                with open(log, "wb") as err:
                    child = subprocess.Popen(
                        [*_command(), "track", str(movie), "--out", str(folder / "r"), "--overwrite",
                         "--device", "cpu", "--no-calibrate"],
                        stdout=subprocess.DEVNULL, stderr=err, env=env,
                        preexec_fn=_default_sigint,  # a test run started with SIGINT ignored (nohup, &) passes it on
                    )
                runs[stage, sig.name] = (folder, log, child, sig)
        waiting = dict(runs)
        deadline = time.monotonic() + 240
        while waiting and time.monotonic() < deadline:
            for key, (_, log, child, sig) in list(waiting.items()):
                if _paused_at(key[0], log.read_text()) or child.poll() is not None:
                    if child.poll() is None:
                        child.send_signal(sig)
                    del waiting[key]
            time.sleep(0.02)
        outcomes = {}
        for key, (folder, log, child, _) in runs.items():
            status = child.wait(timeout=max(1.0, deadline - time.monotonic()))
            outcomes[key] = (folder, status, log.read_text())
        return outcomes
    finally:
        for _, _, child, _ in runs.values():
            if child.poll() is None:
                child.kill()
                child.wait()


def _paused_at(stage: str, text: str) -> bool:
    """Whether ``text`` holds the pause line of ``stage``, newline included (signal only after it)."""
    return any(line.startswith(f"spt-diffusion: test pause at {stage} ") and line.endswith("\n")
               for line in text.splitlines(keepends=True))


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _outcome(killed_runs, stage, sig) -> tuple[Path, int, str]:
    folder, status, err = killed_runs[stage, sig.name]
    assert f"test pause at {stage}" in err, err  # the signal came where it should
    return folder, status, err


KILLS = [(stage, sig) for stage in STAGES[:3] for sig in SIGNALS]


@pytest.mark.parametrize(("stage", "sig"), KILLS, ids=[f"{s}-{g.name}" for s, g in KILLS])
def test_kill_before_the_renames_keeps_the_old_set(killed_runs, old_set, stage, sig):
    folder, status, err = _outcome(killed_runs, stage, sig)
    assert _contents(folder) == old_set  # the complete old set, untouched
    read_results(folder / "r")
    if sig == signal.SIGKILL:
        assert status == -signal.SIGKILL
        # a kill at writing leaves the staged temporaries: the next write removes them
        assert bool(_temporaries(folder)) == (stage == "writing")
        write_results(folder / "r", read_results(folder / "r"), overwrite=True)
        assert not _temporaries(folder)
    else:
        assert status == (130 if sig == signal.SIGINT else 143)
        word = "interrupted" if sig == signal.SIGINT else "terminated"
        assert _last_line(err) == f"spt-diffusion: {word}; no output file was written or changed"
        assert "Traceback" not in err and not _temporaries(folder)


@pytest.mark.parametrize("sig", SIGNALS[:2], ids=lambda s: s.name)
def test_signal_between_the_renames_completes_the_new_set(killed_runs, old_set, sig):
    folder, status, err = _outcome(killed_runs, "renaming", sig)
    assert status == (130 if sig == signal.SIGINT else 143)
    assert _last_line(err).endswith("(complete)") and "Traceback" not in err
    new = _contents(folder)
    assert sorted(new) == sorted(NAMES) and new["r_tracks.csv"] != old_set["r_tracks.csv"]
    assert not _temporaries(folder)
    assert read_results(folder / "r").meta["acquisition"]["frame_interval_s"] == 0.01  # the new run's


def test_sigkill_between_the_renames_is_detected_and_repaired(killed_runs, movie, old_set, capsys):
    folder, status, _ = _outcome(killed_runs, "renaming", signal.SIGKILL)
    assert status == -signal.SIGKILL
    now = _contents(folder)
    assert now["r_tracks.csv"] != old_set["r_tracks.csv"] and now["r_meta.json"] == old_set["r_meta.json"]
    assert len(_temporaries(folder)) == 2  # the summary and sidecar never renamed
    with pytest.raises(InputError, match="incomplete or mixed result set"):
        read_results(folder / "r")
    # the next run removes the leftovers and writes a complete set
    code, out, err = _run(["track", movie, "--out", folder / "r", "--overwrite", "--device", "cpu",
                           "--no-calibrate"], capsys)
    assert code == 0, err
    assert "removed 2 temporary file(s)" in out
    assert not _temporaries(folder)
    assert read_results(folder / "r").n_tracks >= 1


def test_write_movie_leaves_no_probe_file(tmp_path):
    """write_movie still works through the probed AtomicFileSet (the probe leaves nothing)."""
    write_movie(tmp_path / "f.tif", np.full((3, 8, 8), 100, np.uint16), Acquisition())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif"]
