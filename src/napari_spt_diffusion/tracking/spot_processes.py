"""Spots of a memory-mapped movie found by worker processes beside the calling thread.

Threads share one interpreter lock: between the FFT and the compiled fits, which release it,
the spot path makes many small numpy calls that hold it, so two threads find spots 1.47 x as
fast as one on two cores, and two independent processes 1.94 x
(``benchmarks/reports/cpu_scaling.md``). A movie mapped read-only from its file (a
``numpy.memmap`` in mode ``"r"``: an uncompressed TIFF, a ``.npy``) holds no frame in memory,
so forked workers can read it too: its frames are shared out in chunks of
:data:`CHUNK_FRAMES` between the calling thread and worker processes. A worker reads its
frames through the calling process's own reader (inherited by the fork: the same mapping of
the same file, even if the file is replaced on disk meanwhile) and drops the pages it read from
its memory every :data:`RELEASE_EVERY_BYTES`. Each frame's spots depend on that frame only, so
the table is the same as with threads.

The workers are forked (Linux only): they start at once, with the spot path already imported
and compiled. A spawned worker would take a second or two to start and would run the calling
script again where it lacks an ``if __name__ == "__main__":`` guard. A worker ignores Ctrl-C
(the calling process stops the run and its workers), ends quietly on SIGTERM and ends when the
calling process dies, even by SIGKILL. Elsewhere the spots are found by threads.

:func:`spot_processes` decides how many workers a run gets (``$SPT_DIFFUSION_SPOT_PROCESSES``,
else one fewer than :func:`~.spots.spot_threads`; none where processes cannot be forked, from a
thread other than the main one, as in the napari widget or a Dask task, and from a daemon
process), :func:`mapped_source` whether a movie qualifies, and :func:`found_in_order` yields
every frame's spots in frame order.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from ..mapped_pages import release_pages

__all__ = ["CHUNK_FRAMES", "MIN_FRAMES", "RELEASE_EVERY_BYTES", "SPOT_PROCESSES_ENV", "WORKER_TIMEOUT_S",
           "found_in_order", "mapped_source", "spot_processes"]

#: Frames per chunk handed to a worker.
CHUNK_FRAMES = 8
#: Movies with fewer frames are left to threads (starting a worker is not worth it).
MIN_FRAMES = 64
#: A worker drops the mapped pages it read from its memory after this many bytes of frames.
RELEASE_EVERY_BYTES = 64 * 2**20
#: Seconds the calling thread waits for one worker chunk before it takes the workers for hung,
#: ends them and finds the spots of their chunks itself (a chunk takes well under a second).
WORKER_TIMEOUT_S = 300.0
#: Environment variable setting the number of worker processes (``0``: threads only).
SPOT_PROCESSES_ENV = "SPT_DIFFUSION_SPOT_PROCESSES"


def spot_processes(threads: int) -> int:
    """Worker processes for a memory-mapped movie: ``$SPT_DIFFUSION_SPOT_PROCESSES`` when it is a
    whole number >= 0, else ``threads - 1`` (the calling thread is the last worker); 0 where
    processes cannot be forked (not Linux), when called from a thread other than the main one
    (the napari widget's worker thread, a Dask task) and from a daemon process (a
    ``multiprocessing`` pool's worker, which may not have children)."""
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    if threading.current_thread() is not threading.main_thread():
        return 0  # a GUI's worker thread or a Dask task: no fork from beside other threads' work
    if multiprocessing.current_process().daemon:
        return 0
    value = os.environ.get(SPOT_PROCESSES_ENV, "").strip()
    if value.isdigit():
        return int(value)
    return max(0, int(threads) - 1)


def mapped_source(movie: Any) -> np.memmap | None:
    """The read-only ``numpy.memmap`` under a movie, or ``None`` when it is not one.

    ``movie`` is a ``numpy.memmap`` or a wrapper of one that exposes ``frame_source() ->
    (inner movie, first frame)`` (the streaming module's windows and page-releasing readers).
    Only mode ``"r"`` qualifies: a copy-on-write map (``"c"``) may hold changes that exist only
    in the calling process's private pages, and dropping a worker's pages would read the file
    again instead.
    """
    for _ in range(8):  # unwrap windows of page-releasing readers of a memmap
        source = getattr(movie, "frame_source", None)
        if source is None:
            break
        movie = source()[0]
    if not isinstance(movie, np.memmap) or getattr(movie, "mode", None) != "r" or movie.ndim != 3:
        return None
    if getattr(movie, "_mmap", None) is None:  # numpy keeps its map of the file there
        return None
    return movie


# ------------------------------------------------------------------- worker side
_WORKER: dict[str, Any] = {}


def _end_with_parent(parent_pid: int) -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl: the worker ends when its task pipe closes
        pass
    if os.getppid() != parent_pid:  # the parent died before the request was made
        os._exit(0)


def _start_worker(read_frame: Callable[[int], np.ndarray], spots_of: Callable[[np.ndarray], Any],
                  mapped: np.memmap, frame_bytes: int, parent_pid: int) -> None:
    # Ctrl-C reaches the whole process group: the calling process stops the run and its workers
    # (a worker interrupted on its own would print a traceback); SIGTERM ends a worker quietly
    # instead of running the handler the command line installed in the calling process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with_parent(parent_pid)
    # forked: the reader, the spot function and the map are the calling process's own
    _WORKER.update(read_frame=read_frame, spots_of=spots_of, mapped=mapped, frame_bytes=frame_bytes, read=0)


def _chunk_in_worker(start: int, stop: int) -> list[Any]:
    """The spots of frames ``start .. stop - 1`` (a worker's task)."""
    out = []
    for t in range(start, stop):
        frame = _WORKER["read_frame"](t)
        out.append((frame.shape, _WORKER["spots_of"](frame)))
    _WORKER["read"] += (stop - start) * _WORKER["frame_bytes"]
    if _WORKER["read"] >= RELEASE_EVERY_BYTES:
        _WORKER["read"] = 0
        release_pages(_WORKER["mapped"])
    return out


# ------------------------------------------------------------------- calling side
class _Raised:
    """A chunk the calling thread could not finish: its error, raised when the chunk's turn comes
    (an earlier chunk, still in a worker, may hold an earlier bad frame)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Chunks:
    """The chunks of a movie, handed out in order to the calling thread and to the workers."""

    def __init__(self, n_frames: int) -> None:
        self.bounds = [(a, min(n_frames, a + CHUNK_FRAMES)) for a in range(0, n_frames, CHUNK_FRAMES)]
        self.next = 0

    def take(self) -> int | None:
        if self.next >= len(self.bounds):
            return None
        self.next += 1
        return self.next - 1


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate the pool's processes (hung workers); the pool is broken afterwards."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.terminate()
        except (OSError, AttributeError):
            pass


def found_in_order(
    n_frames: int,
    read_frame: Callable[[int], np.ndarray],
    spots_of: Callable[[np.ndarray], Any],
    mapped: np.memmap,
    n_workers: int,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[int, tuple[int, ...], Any]]:
    """``(frame, frame shape, spots)`` of every frame, in frame order, found by the calling thread and
    ``n_workers`` forked processes.

    Parameters
    ----------
    n_frames
        Frames of the movie.
    read_frame
        ``read_frame(t) -> (Y, X)`` checked frame ``t`` in ADU; run by the calling thread and, on
        their copy of the calling process, by the workers.
    spots_of
        ``spots_of(frame_adu) -> FoundSpots``, run by the calling thread and the workers.
    mapped
        The read-only memmap under the movie (:func:`mapped_source`): the workers drop its pages.
    n_workers
        Worker processes (>= 1).
    should_stop
        Checked before every frame of the calling thread and while it waits for a worker; when it
        returns True the frames found so far, in order, are yielded and the generator ends (the
        workers' pending chunks are cancelled).

    An error (a frame with NaN pixels, say) is raised here as it is when its chunk's turn comes,
    whether a worker or the calling thread met it, so that the first bad frame is the one named.
    When the workers cannot be started, die, or take :data:`WORKER_TIMEOUT_S` over a chunk, the
    calling thread finds the spots of their chunks itself. When the generator ends early (a stop,
    an error, ``close()``), a worker still busy is given 2 s to finish its chunk, then ended.
    """
    chunks = _Chunks(int(n_frames))
    remote: dict[int, Future] = {}
    ready: dict[int, list[Any] | _Raised] = {}
    emit = 0
    broken = hung = False
    frame_bytes = int(mapped.dtype.itemsize) * int(np.prod(mapped.shape[1:], dtype=np.int64))
    pool = ProcessPoolExecutor(max_workers=int(n_workers), mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker,
                               initargs=(read_frame, spots_of, mapped, frame_bytes, os.getpid()))

    def stop_asked() -> bool:
        return should_stop is not None and bool(should_stop())

    def local(index: int) -> tuple[list[Any], bool]:
        """The spots of a chunk's frames found here, and whether a stop was asked on the way."""
        start, stop = chunks.bounds[index]
        out = []
        for t in range(start, stop):
            if stop_asked():
                return out, True
            frame = read_frame(t)
            out.append((frame.shape, spots_of(frame)))
        return out, False

    def result_of(future: Future) -> list[Any] | None:
        """A worker chunk's spots, or ``None`` when a stop was asked or the workers are gone or hung."""
        nonlocal broken, hung
        if hung and not future.done():  # the workers were taken for hung: do not wait for another chunk
            return None
        started = time.monotonic()
        while not future.done():
            if stop_asked():
                return None
            wait([future], timeout=0.25)
            if time.monotonic() - started >= WORKER_TIMEOUT_S and not future.done():
                broken = hung = True
                _end_workers(pool)
                return None
        try:
            return future.result()
        except BrokenProcessPool:
            broken = True
            return None

    try:
        while emit < len(chunks.bounds):
            if not broken:  # two chunks in flight per worker
                while len(remote) < 2 * n_workers:
                    index = chunks.take()
                    if index is None:
                        break
                    try:
                        remote[index] = pool.submit(_chunk_in_worker, *chunks.bounds[index])
                    except Exception:
                        broken = True
                        chunks.next = index  # this one is done here
                        break
            if emit in ready:
                found = ready.pop(emit)
                if isinstance(found, _Raised):
                    raise found.error
                start = chunks.bounds[emit][0]
                for k, (shape, spots) in enumerate(found):
                    yield start + k, shape, spots
                emit += 1
                continue
            future = remote.get(emit)
            if future is not None:
                if future.done() or broken or chunks.next >= len(chunks.bounds):
                    found = result_of(future)
                    if found is None and not broken:  # a stop was asked while waiting
                        return
                    del remote[emit]
                    stopped = False
                    if found is None:  # the workers are gone: this chunk is done here
                        found, stopped = local(emit)
                    ready[emit] = found
                    if stopped:
                        break
                    continue
            index = chunks.take()
            if index is None:  # every chunk is taken, so the next one to yield is ready or in a worker
                raise RuntimeError(f"chunk {emit} of the spot workers was lost")
            try:
                found, stopped = local(index)
            except Exception as error:  # kept for its turn, as threads would meet it
                if index == emit:
                    raise
                ready[index], stopped = _Raised(error), False
            else:
                ready[index] = found
            if stopped:
                break
        # stopped: the frames found so far that follow each other from the first one
        while emit in ready or (emit in remote and remote[emit].done() and not broken):
            found = ready.pop(emit) if emit in ready else result_of(remote.pop(emit))
            if isinstance(found, _Raised):
                raise found.error
            if found is None:
                break
            start = chunks.bounds[emit][0]
            for k, (shape, spots) in enumerate(found):
                yield start + k, shape, spots
            if len(found) < chunks.bounds[emit][1] - start:
                break
            emit += 1
    finally:
        # a stop, an error or close(): do not wait long for a chunk still running in a worker (it may hang)
        for future in remote.values():
            future.cancel()
        running = [future for future in remote.values() if not future.done()]
        if hung or (running and wait(running, timeout=2.0).not_done):
            _end_workers(pool)  # before shutdown(), which forgets the pool's processes
        pool.shutdown(wait=True, cancel_futures=True)
