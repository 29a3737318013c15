"""Spots of a memory-mapped movie found by worker processes beside the calling thread.

Threads share one interpreter lock: between the FFT and the compiled fits, which release it,
the spot path makes many small numpy calls that hold it, so two threads find spots 1.47 x as
fast as one on two cores, and two independent processes 1.94 x
(``benchmarks/reports/cpu_scaling.md``). A movie that lies uncompressed in a file (a
``numpy.memmap``: an uncompressed TIFF, a ``.npy``) can be read by other processes from the
file itself, so its frames are shared out in chunks of :data:`CHUNK_FRAMES`: the calling
thread finds the spots of some chunks, worker processes those of the others, each mapping the
file itself for one chunk at a time (the pages it read leave it with the chunk). Each frame's
spots depend on that frame only, so the table is the same as with threads.

The workers are forked (Linux only): they start at once, with the spot path already imported
and compiled, and share the calling process's memory until either writes to it. A spawned
worker would take a second or two to start and would run the calling script again where it
lacks an ``if __name__ == "__main__":`` guard. Elsewhere the spots are found by threads.

:func:`spot_processes` decides how many workers a run gets (``$SPT_DIFFUSION_SPOT_PROCESSES``,
else one fewer than :func:`~.spots.spot_threads`; none where processes cannot be forked or the
caller is not the main thread, as in the napari widget),
:func:`mapped_source` whether a movie can be mapped again, and :func:`found_in_order` yields
every frame's spots in frame order.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CHUNK_FRAMES", "MIN_FRAMES", "SPOT_PROCESSES_ENV", "MappedMovie", "found_in_order", "mapped_source",
           "spot_processes"]

#: Frames per chunk handed to a worker (a chunk's frames are mapped, read and unmapped together).
CHUNK_FRAMES = 8
#: Movies with fewer frames are left to threads (starting a worker is not worth it).
MIN_FRAMES = 64
#: Environment variable setting the number of worker processes (``0``: threads only).
SPOT_PROCESSES_ENV = "SPT_DIFFUSION_SPOT_PROCESSES"


def spot_processes(threads: int) -> int:
    """Worker processes for a memory-mapped movie: ``$SPT_DIFFUSION_SPOT_PROCESSES`` when it is a
    whole number >= 0, else ``threads - 1`` (the calling thread is the last worker); 0 where
    processes cannot be forked (not Linux) and when called from a thread other than the main one
    (the napari widget's worker thread, a Dask task)."""
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    if threading.current_thread() is not threading.main_thread():
        return 0  # a GUI's worker thread or a Dask task: no fork from beside other threads' work
    value = os.environ.get(SPOT_PROCESSES_ENV, "").strip()
    if value.isdigit():
        return int(value)
    return max(0, int(threads) - 1)


@dataclass(frozen=True)
class MappedMovie:
    """Where a memory-mapped ``(T, Y, X)`` movie lies in its file.

    Attributes
    ----------
    path
        The file.
    offset_bytes
        Byte offset of frame ``first_frame`` of the movie in the file.
    dtype
        Pixel type (numpy dtype string, byte order included).
    shape
        ``(T, Y, X)`` of the frames from ``offset_bytes`` on (C order).
    """

    path: str
    offset_bytes: int
    dtype: str
    shape: tuple[int, int, int]

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start .. stop - 1`` as a read-only map of the file (``(stop - start, Y, X)``)."""
        frame_bytes = int(np.dtype(self.dtype).itemsize) * self.shape[1] * self.shape[2]
        return np.memmap(self.path, dtype=np.dtype(self.dtype), mode="r",
                         offset=self.offset_bytes + int(start) * frame_bytes,
                         shape=(int(stop) - int(start), self.shape[1], self.shape[2]))


def mapped_source(movie: Any) -> MappedMovie | None:
    """The file region of a movie that other processes can map, or ``None``.

    ``movie`` is a ``numpy.memmap`` of a file (C-contiguous, 3-D) or a wrapper of one that
    exposes ``frame_source() -> (inner movie, first frame)`` (the streaming module's windows and
    page-releasing readers). The region is checked by mapping it again and comparing its first
    and last frames with the movie's.
    """
    n_frames = int(movie.shape[0])
    first = 0
    for _ in range(8):  # unwrap windows of page-releasing readers of a memmap
        source = getattr(movie, "frame_source", None)
        if source is None:
            break
        movie, start = source()
        first += int(start)
    if not isinstance(movie, np.memmap) or movie.ndim != 3 or not movie.flags.c_contiguous:
        return None
    path = getattr(movie, "filename", None)
    if path is None or not os.path.isfile(path) or n_frames == 0 or first + n_frames > movie.shape[0]:
        return None
    offset = _file_offset(movie)
    if offset is None:
        return None
    frame_bytes = movie.dtype.itemsize * movie.shape[1] * movie.shape[2]
    mapped = MappedMovie(str(path), offset + first * frame_bytes, movie.dtype.str,
                         (n_frames, int(movie.shape[1]), int(movie.shape[2])))
    try:
        last = n_frames - 1
        same = (np.array_equal(mapped.frames(0, 1)[0], movie[first])
                and np.array_equal(mapped.frames(last, last + 1)[0], movie[first + last]))
    except (OSError, ValueError):  # the file shrank or cannot be mapped again: threads it is
        return None
    return mapped if same else None


def _file_offset(movie: np.memmap) -> int | None:
    """Byte offset in its file of the first element of a memmap, views of one included (``None``
    when it cannot be told: numpy's map of the file is not where numpy keeps it)."""
    handle = getattr(movie, "_mmap", None)
    if handle is None:
        return None
    try:
        mapped_at = np.frombuffer(handle, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError):  # a closed map
        return None
    # numpy maps the file from the offset rounded down to the allocation granularity
    mapped_from = int(movie.offset) - int(movie.offset) % mmap.ALLOCATIONGRANULARITY
    return mapped_from + int(movie.ctypes.data) - int(mapped_at)


# ------------------------------------------------------------------- worker side
_WORKER: dict[str, Any] = {}


def _start_worker(mapped: MappedMovie, spots_of: Callable[[np.ndarray], Any],
                  check_frame: Callable[..., np.ndarray]) -> None:
    # Ctrl-C reaches the whole process group: the calling process stops the run and its workers
    # (a worker interrupted on its own would print a traceback); SIGTERM ends a worker quietly
    # instead of running the handler the command line installed in the calling process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # forked: the functions are the calling process's own (nothing is imported in the worker)
    _WORKER.update(mapped=mapped, spots_of=spots_of, check_frame=check_frame)


def _chunk_in_worker(start: int, stop: int) -> list[Any]:
    """The spots of frames ``start .. stop - 1`` (a worker's task); the map is dropped after the chunk."""
    frames = _WORKER["mapped"].frames(start, stop)
    out = []
    for k in range(stop - start):
        frame = _WORKER["check_frame"](np.array(frames[k]), index=start + k)
        out.append((frame.shape, _WORKER["spots_of"](frame)))
    del frames  # unmapped: the pages read leave this process
    return out


# ------------------------------------------------------------------- calling side
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


def found_in_order(
    movie: Any,
    mapped: MappedMovie,
    spots_of: Callable[[np.ndarray], Any],
    read_frame: Callable[[int], np.ndarray],
    check_frame: Callable[..., np.ndarray],
    n_workers: int,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[int, tuple[int, ...], Any]]:
    """``(frame, frame shape, spots)`` of every frame, in frame order, found by the calling thread and
    ``n_workers`` processes.

    Parameters
    ----------
    movie
        The ``(T, Y, X)`` movie (its frame count; the calling thread reads its own chunks with ``read_frame``).
    mapped
        The movie's file region (:func:`mapped_source`), which the workers map.
    spots_of
        ``spots_of(frame_adu) -> FoundSpots``, run by the calling thread and the workers.
    read_frame
        ``read_frame(t) -> (Y, X)`` checked frame ``t`` in ADU (the calling thread's reads).
    check_frame
        ``check_frame(frame, index=t) -> frame``: the workers' check of the frames they read.
    n_workers
        Worker processes (>= 1).
    should_stop
        Checked before every frame of the calling thread; when it returns True the generator stops
        (the workers' pending chunks are cancelled).

    A worker's error (a frame with NaN pixels, say) is raised here as it is. When the workers cannot be
    started or die, the calling thread finds the spots of their chunks itself.
    """
    chunks = _Chunks(int(movie.shape[0]))
    remote: dict[int, Future] = {}
    ready: dict[int, list[Any]] = {}
    emit = 0
    broken = False
    pool = ProcessPoolExecutor(max_workers=int(n_workers), mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(mapped, spots_of, check_frame))

    def local(index: int) -> list[Any] | None:
        start, stop = chunks.bounds[index]
        out = []
        for t in range(start, stop):
            if should_stop is not None and should_stop():
                return None
            frame = read_frame(t)
            out.append((frame.shape, spots_of(frame)))
        return out

    try:
        while emit < len(chunks.bounds):
            if not broken:  # two chunks in flight per worker
                while len(remote) < 2 * n_workers:
                    index = chunks.take()
                    if index is None:
                        break
                    try:
                        remote[index] = pool.submit(_chunk_in_worker, *chunks.bounds[index])
                    except (BrokenProcessPool, RuntimeError, OSError):
                        broken = True
                        chunks.next = index  # this one is done here
                        break
            if emit in ready:
                start = chunks.bounds[emit][0]
                for k, (shape, found) in enumerate(ready.pop(emit)):
                    yield start + k, shape, found
                emit += 1
                continue
            future = remote.get(emit)
            if future is not None and (future.done() or broken or chunks.next >= len(chunks.bounds)):
                del remote[emit]
                try:
                    ready[emit] = future.result()
                except BrokenProcessPool:
                    broken = True
                    found = local(emit)
                    if found is None:
                        return
                    ready[emit] = found
                continue
            index = emit if future is None else chunks.take()
            if index is None:
                continue
            if broken and future is not None:  # the workers are gone: this chunk is done here
                index = emit
            found = local(index)
            if found is None:
                return
            ready[index] = found
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
