"""Spots of a memory-mapped movie found by worker processes: the same table as one thread."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion import streaming
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation.movie import simulate_movie
from napari_spt_diffusion.tracking import spot_processes
from napari_spt_diffusion.tracking.detect import TrackingInputError
from napari_spt_diffusion.tracking.spots import detect_and_localize

ACQ = Acquisition()

pytestmark = pytest.mark.skipif(spot_processes.spot_processes(2) == 0 and os.environ.get(
    spot_processes.SPOT_PROCESSES_ENV, "") == "", reason="worker processes are forked on Linux only")


@pytest.fixture(scope="module")
def mapped_file(tmp_path_factory):
    """A 70-frame 64 x 64 movie with 12 particles, saved as .npy and mapped back."""
    sim = simulate_movie((64, 64), 70, ACQ, 31, model="aniso", particles=12.0)
    path = tmp_path_factory.mktemp("spots") / "movie.npy"
    np.save(path, np.asarray(sim.movie))
    return path


def _one_thread(monkeypatch, movie):
    monkeypatch.setenv("SPT_DIFFUSION_SPOT_THREADS", "1")
    monkeypatch.setenv(spot_processes.SPOT_PROCESSES_ENV, "0")
    return detect_and_localize(np.asarray(movie), ACQ)


def _with_workers(monkeypatch, movie, workers="1", **kwargs):
    monkeypatch.setenv("SPT_DIFFUSION_SPOT_THREADS", "2")
    monkeypatch.setenv(spot_processes.SPOT_PROCESSES_ENV, workers)
    return detect_and_localize(movie, ACQ, **kwargs)


def test_workers_give_the_one_thread_table(monkeypatch, mapped_file, tmp_path):
    movie = np.load(mapped_file, mmap_mode="r")
    assert spot_processes.mapped_source(movie) is not None
    one = _one_thread(monkeypatch, movie)
    real = spot_processes._chunk_in_worker
    marks = tmp_path / "workers"
    marks.mkdir()

    def marked(start, stop):  # runs in a worker: leaves its process id and signal dispositions behind
        quiet = signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        (marks / f"{os.getpid()}_{start}_{int(quiet)}").touch()
        return real(start, stop)

    marked.__module__, marked.__qualname__ = spot_processes.__name__, "_chunk_in_worker"
    monkeypatch.setattr(spot_processes, "_chunk_in_worker", marked)
    reports = []
    many = _with_workers(monkeypatch, movie, "2", progress=lambda f, m: reports.append(f))
    assert len(one) > 70 * 6
    pd.testing.assert_frame_equal(one, many)
    assert many.attrs == one.attrs
    assert reports == sorted(reports) and reports[-1] == 1.0
    pids = {int(mark.name.split("_")[0]) for mark in marks.iterdir()}
    assert pids and os.getpid() not in pids  # worker processes found some of the frames
    # Ctrl-C (sent to the whole process group) is left to the calling process, SIGTERM ends a worker quietly
    assert all(mark.name.endswith("_1") for mark in marks.iterdir())


def test_workers_read_windows_and_views_of_the_file(monkeypatch, mapped_file):
    movie = np.load(mapped_file, mmap_mode="r")
    reference = _one_thread(monkeypatch, movie)
    # a window of the page-releasing reader (the chunked pipeline's input) and a sliced view
    for framed, first in ((streaming.FrameWindow(streaming.releasing(movie), 3, 69), 3), (movie[2:], 2)):
        assert spot_processes.mapped_source(framed) is not None
        table = _with_workers(monkeypatch, framed)
        expected = reference[(reference["frame"] >= first) & (reference["frame"] < first + framed.shape[0])].copy()
        expected["frame"] -= first
        pd.testing.assert_frame_equal(table, expected.reset_index(drop=True))


def test_workers_read_the_callers_map_not_the_file_on_disk(monkeypatch, mapped_file, tmp_path):
    path = tmp_path / "replaced.npy"
    path.write_bytes(mapped_file.read_bytes())
    movie = np.load(path, mmap_mode="r")
    reference = _one_thread(monkeypatch, movie)
    # the file is saved again under the same name (a new file renamed over it) after it was opened,
    # with other pixels in every frame but the first and the last
    fresh = tmp_path / "fresh.npy"
    other = np.array(movie)
    other[1:-1] = 100
    np.save(fresh, other)
    os.replace(fresh, path)
    pd.testing.assert_frame_equal(_with_workers(monkeypatch, movie), reference)


def test_what_is_not_a_read_only_map_is_left_to_threads(monkeypatch, mapped_file):
    assert spot_processes.mapped_source(np.zeros((80, 8, 8), dtype=np.uint16)) is None
    movie = np.load(mapped_file, mmap_mode="r")
    assert spot_processes.mapped_source(movie[0]) is None  # one frame
    # a copy-on-write map changed in memory: the workers must not read the file's pixels instead
    changed = np.load(mapped_file, mmap_mode="c")
    changed[1:-1] = 100
    assert spot_processes.mapped_source(changed) is None
    pd.testing.assert_frame_equal(_with_workers(monkeypatch, changed), _one_thread(monkeypatch, np.array(changed)))


def test_no_workers_outside_the_main_thread(monkeypatch):
    monkeypatch.delenv(spot_processes.SPOT_PROCESSES_ENV, raising=False)
    assert spot_processes.spot_processes(2) == 1
    seen = []
    thread = threading.Thread(target=lambda: seen.append(spot_processes.spot_processes(2)))
    thread.start()
    thread.join()
    assert seen == [0]


def _in_daemon_process(queue):
    queue.put(spot_processes.spot_processes(2))


def test_no_workers_from_a_daemon_process(monkeypatch):
    monkeypatch.delenv(spot_processes.SPOT_PROCESSES_ENV, raising=False)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_in_daemon_process, args=(queue,), daemon=True)
    child.start()
    assert queue.get(timeout=30) == 0  # a daemon may not have children
    child.join(timeout=30)


def _state(pid):
    """The process's state letter (``Z``: zombie), or ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_a_worker_ends_when_the_calling_process_is_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    middle = os.fork()
    if middle == 0:  # the "calling process": starts a worker, then dies at once without cleaning up
        try:
            worker = os.fork()
            if worker == 0:
                spot_processes._end_with_parent(os.getppid())
                time.sleep(60)
                os._exit(0)
            pid_file.write_text(str(worker))
        finally:
            os._exit(0)
    os.waitpid(middle, 0)
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    for _ in range(100):
        if _state(worker) in (None, "Z"):
            break
        time.sleep(0.05)
    state = _state(worker)
    if state not in (None, "Z"):
        os.kill(worker, signal.SIGKILL)
    assert state in (None, "Z")


def test_a_bad_frame_read_by_a_worker_is_named(monkeypatch, tmp_path):
    movie = np.full((80, 32, 32), 100.0, dtype=np.float32)
    movie[77, 4, 4] = np.nan  # in the last chunk: read by a worker while this thread reads the first
    path = tmp_path / "nan.npy"
    np.save(path, movie)
    with pytest.raises(TrackingInputError, match="frame 77"):
        _with_workers(monkeypatch, np.load(path, mmap_mode="r"))


def test_stop_ends_early_and_dead_workers_are_replaced(monkeypatch, mapped_file, tmp_path):
    movie = np.load(mapped_file, mmap_mode="r")
    reference = _one_thread(monkeypatch, movie)
    real = spot_processes._chunk_in_worker
    first_done = tmp_path / "chunk0_done"

    def marked(start, stop):  # runs in a worker: leaves a mark when it has found the first chunk
        found = real(start, stop)
        if start == 0:
            first_done.touch()
        return found

    marked.__module__, marked.__qualname__ = spot_processes.__name__, "_chunk_in_worker"
    monkeypatch.setattr(spot_processes, "_chunk_in_worker", marked)
    calls = []

    def stop():
        # after 10 frames of this thread, once the worker has found frames 0-7 (a slow machine may take
        # longer to fork it than this thread takes over 10 frames, and then no frame follows the first)
        calls.append(1)
        if len(calls) <= 10:
            return False
        for _ in range(600):
            if first_done.exists():
                break
            time.sleep(0.05)
        time.sleep(1.0)  # the chunk's spots on their way back through the pipe
        return True

    stopped = _with_workers(monkeypatch, movie, should_stop=stop)
    assert stopped.attrs["stopped_early"] is True
    assert 8 <= stopped.attrs["frames_processed"] < 70
    assert stopped["frame"].max() < stopped.attrs["frames_processed"]
    first = reference[reference["frame"] < stopped.attrs["frames_processed"]]
    pd.testing.assert_frame_equal(stopped.reset_index(drop=True), first.reset_index(drop=True))
    monkeypatch.setattr(spot_processes, "_chunk_in_worker", real)

    def die(start, stop):  # a worker killed (out of memory, say) in the middle of its chunk
        os._exit(3)

    die.__module__, die.__qualname__ = spot_processes.__name__, "_chunk_in_worker"
    monkeypatch.setattr(spot_processes, "_chunk_in_worker", die)
    table = _with_workers(monkeypatch, movie)
    pd.testing.assert_frame_equal(table, reference)
    assert not multiprocessing.active_children()


def test_hung_workers_are_ended_and_their_chunks_found_here(monkeypatch, mapped_file):
    movie = np.load(mapped_file, mmap_mode="r")
    reference = _one_thread(monkeypatch, movie)

    def hang(start, stop):
        time.sleep(600)

    hang.__module__, hang.__qualname__ = spot_processes.__name__, "_chunk_in_worker"
    monkeypatch.setattr(spot_processes, "_chunk_in_worker", hang)
    monkeypatch.setattr(spot_processes, "WORKER_TIMEOUT_S", 1.0)
    started = time.monotonic()
    table = _with_workers(monkeypatch, movie)
    pd.testing.assert_frame_equal(table, reference)
    assert time.monotonic() - started < 60
    assert not multiprocessing.active_children()


def test_a_stop_while_a_worker_hangs_ends_it_at_once(monkeypatch, mapped_file):
    movie = np.load(mapped_file, mmap_mode="r")

    def hang(start, stop):
        time.sleep(600)

    hang.__module__, hang.__qualname__ = spot_processes.__name__, "_chunk_in_worker"
    monkeypatch.setattr(spot_processes, "_chunk_in_worker", hang)  # the default timeout: 300 s
    began = time.monotonic()
    table = _with_workers(monkeypatch, movie, should_stop=lambda: time.monotonic() - began > 1.0)
    assert table.attrs["stopped_early"] is True
    assert time.monotonic() - began < 60
    assert not multiprocessing.active_children()


def test_the_first_bad_frame_is_named_whoever_reads_it(monkeypatch, tmp_path):
    movie = np.full((100, 32, 32), 100.0, dtype=np.float32)
    movie[8:, 4, 4] = np.nan  # chunks 1.. are bad: a worker reads chunk 1 while this thread reads later ones
    path = tmp_path / "nans.npy"
    np.save(path, movie)
    for workers in ("1", "2", "3"):
        with pytest.raises(TrackingInputError, match="frame 8 "):
            _with_workers(monkeypatch, np.load(path, mmap_mode="r"), workers)
    assert not multiprocessing.active_children()


def test_workers_end_when_the_caller_raises(monkeypatch, mapped_file):
    movie = np.load(mapped_file, mmap_mode="r")

    def cancel(fraction, message):
        if fraction > 0.3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        _with_workers(monkeypatch, movie, progress=cancel)
    # the exception (its traceback holds the detection's frames) is still alive here, as in an
    # interactive session's sys.last_value or a GUI's error dialog: the workers must be gone already
    assert caught.value is not None and not multiprocessing.active_children()
