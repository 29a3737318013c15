"""Movies larger than memory: detection in chunks of frames, localizations spilled to Parquet.

:func:`~napari_spt_diffusion.pipeline.track_and_estimate` holds the whole localization table
in memory for short movies (about 0.2 kB per localization with its copies). For long movies
(``Settings.chunk_frames``, or more than :data:`AUTO_CHUNK_ABOVE_FRAMES` frames) it calls
:func:`detect_to_spill` instead:

1. the movie is read in windows of ``chunk_frames`` frames (one frame at a time inside a
   window, as always); each window's localizations (all columns of
   :func:`~.tracking.spots.detect_and_localize` plus ``nearest_other_px``) are appended to a
   Parquet file (one row group per window) in a temporary folder and dropped from memory;
2. only the columns linking needs stay in memory, as compact arrays (``frame``, ``y_px``,
   ``x_px``, ``loc_precision_nm`` and the row in the file: 36 bytes per localization);
3. the estimation stage reads back, for each chunk of tracks it estimates, only the rows of
   those tracks (:meth:`SpilledLocalizations.complete`), one row group at a time.

The results are the same as those of the in-memory path (``tests/test_streaming.py``): every
per-frame quantity is computed frame by frame, and linking sees the same localizations.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .acquisition import Acquisition
from .mapped_pages import release_pages
from .tracking.crowding import nearest_other_px
from .tracking.detect import DetectionSettings
from .tracking.spots import detect_and_localize

__all__ = [
    "AUTO_CHUNK_ABOVE_FRAMES",
    "DEFAULT_CHUNK_FRAMES",
    "STREAM_CHUNK_LOCALIZATIONS",
    "FrameWindow",
    "SpilledLocalizations",
    "ReleasingFrames",
    "chunk_frames_for",
    "releasing",
    "detect_to_spill",
    "spill_folder",
    "trim_memory",
]

#: Movies with more frames than this are processed in chunks unless told otherwise.
AUTO_CHUNK_ABOVE_FRAMES = 4000
#: Frames per chunk when chunking was chosen automatically.
DEFAULT_CHUNK_FRAMES = 1000
#: Tracks are estimated in chunks of at most this many localizations when the movie is chunked:
#: the model's inputs of a chunk of 200,000 localizations took about 0.75 GB (512 x 512 x 20,000 movie).
STREAM_CHUNK_LOCALIZATIONS = 50_000
#: Columns kept in memory for linking (the rest stay in the Parquet file).
LINK_COLUMNS = ("frame", "y_px", "x_px", "loc_precision_nm")


def chunk_frames_for(n_frames: int, chunk_frames: int | None) -> int | None:
    """Frames per chunk for a movie of ``n_frames`` frames: ``chunk_frames`` when given (``0``:
    never chunk), else :data:`DEFAULT_CHUNK_FRAMES` above :data:`AUTO_CHUNK_ABOVE_FRAMES`
    frames; ``None``: the whole movie in memory."""
    if chunk_frames is None:
        return DEFAULT_CHUNK_FRAMES if n_frames > AUTO_CHUNK_ABOVE_FRAMES else None
    return None if int(chunk_frames) == 0 else int(chunk_frames)


class FrameWindow:
    """Frames ``start .. stop - 1`` of a ``(T, Y, X)`` movie as a movie of its own (no copy).

    ``window[t]`` reads frame ``start + t`` of the movie (one frame at a time).
    """

    def __init__(self, movie: Any, start: int, stop: int) -> None:
        self.movie = movie
        self.start = int(start)
        self.stop = int(stop)
        shape = tuple(int(n) for n in movie.shape)
        self.shape = (self.stop - self.start, *shape[1:])
        self.dtype = getattr(movie, "dtype", None)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> np.ndarray:
        t = int(t)
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"frame {t} outside a window of {self.shape[0]} frames")
        return np.asarray(self.movie[self.start + t])

    def frame_source(self) -> tuple[Any, int]:
        """``(movie, first frame)``: where this window's frames come from (spot worker processes map it)."""
        return self.movie, self.start


#: A memory-mapped movie's pages read so far are dropped from the process after this many bytes.
RELEASE_EVERY_BYTES = 64 * 2**20


class ReleasingFrames:
    """A ``(T, Y, X)`` memory-mapped movie read frame by frame, its pages dropped every
    :data:`RELEASE_EVERY_BYTES` bytes read.

    The pages of a memory-mapped file that were read stay mapped, and count in the process's
    resident memory, until the mapping is closed: reading every frame of a 10 GB movie through
    a ``numpy.memmap`` makes the process 10 GB "large" although nothing is held (the kernel
    may drop them, but only under memory pressure). Here ``madvise(MADV_DONTNEED)`` drops them
    from the process (they stay in the kernel's page cache). ``reader[t]`` returns a copy of
    frame ``t``; any other key is passed to the movie.
    """

    def __init__(self, movie: np.memmap) -> None:
        self.movie = movie
        self.shape = tuple(int(n) for n in movie.shape)
        self.dtype = movie.dtype
        self.ndim = len(self.shape)
        self._frame_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * movie.dtype.itemsize
        self._read = 0
        self.released = 0

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, int | np.integer):
            frame = np.array(self.movie[int(key)])
            self._read += self._frame_bytes
            if self._read >= RELEASE_EVERY_BYTES:
                self.release()
            return frame
        return np.asarray(self.movie[key])

    def frame_source(self) -> tuple[np.memmap, int]:
        """``(memmap, 0)``: the mapped movie (spot worker processes map its file themselves)."""
        return self.movie, 0

    def release(self) -> None:
        """Drop the movie's mapped pages from this process (they are read again from the page cache when needed)."""
        self._read = 0
        if release_pages(self.movie):
            self.released += 1


def releasing(movie: Any) -> Any:
    """``movie`` wrapped in :class:`ReleasingFrames` when it is a ``numpy.memmap`` (else as it is)."""
    return ReleasingFrames(movie) if isinstance(movie, np.memmap) else movie


def trim_memory() -> None:
    """Hand the memory freed by a large step back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Many small arrays freed after linking or a chunk of tables stay in the allocator's heap and
    keep counting in the process's resident memory (about 160 bytes per localization after
    linking); returning them keeps the peak of the next step lower.
    """
    import ctypes
    import ctypes.util
    import sys

    if "pyarrow" in sys.modules:  # Arrow's own allocator keeps freed buffers for reuse
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to do
        pass


@contextmanager
def spill_folder(folder: str | Path | None = None) -> Iterator[Path]:
    """A temporary folder for the spilled localizations (in ``folder``, default the system's
    temporary folder, ``TMPDIR``), removed afterwards whatever happens."""
    with tempfile.TemporaryDirectory(prefix="spt_diffusion_spill_", dir=folder) as name:
        yield Path(name)


class SpilledLocalizations:
    """Localizations written to a Parquet file chunk by chunk; linking columns kept in memory.

    Attributes
    ----------
    path
        The Parquet file (in a temporary folder).
    n
        Localizations written.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "localizations.parquet"
        self.n = 0
        self._writer: Any = None
        self._schema: Any = None
        self._compact: dict[str, list[np.ndarray]] = {c: [] for c in LINK_COLUMNS}
        self._group_starts: np.ndarray = np.zeros(1, dtype=np.int64)
        self.attrs: dict[str, Any] = {"n_split": 0, "n_merged": 0}

    def append(self, table: pd.DataFrame) -> None:
        """Write one chunk's localizations (frame numbers of the whole movie) and keep its linking columns."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = pa.Table.from_pandas(table, preserve_index=False)
        if self._writer is None:
            self._schema = arrow.schema
            self._writer = pq.ParquetWriter(self.path, self._schema)
        self._writer.write_table(arrow.cast(self._schema), row_group_size=max(len(table), 1))
        for c in LINK_COLUMNS:
            self._compact[c].append(table[c].to_numpy(dtype=np.int64 if c == "frame" else np.float64))
        self.n += len(table)

    def close(self) -> None:
        """Finish the file (after the last :meth:`append`)."""
        import pyarrow.parquet as pq

        if self._writer is not None:
            self._writer.close()
            self._writer = None
            meta = pq.ParquetFile(self.path).metadata
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            self._group_starts = np.r_[0, np.cumsum(sizes)].astype(np.int64)

    def linking_table(self) -> pd.DataFrame:
        """``frame, y_px, x_px, loc_precision_nm, row`` of every localization (``row``: its row in the file).

        The compact arrays are handed over (and dropped here), so call it once.
        """
        data = {c: np.concatenate(v) if v else np.zeros(0, dtype=np.int64 if c == "frame" else np.float64)
                for c, v in self._compact.items()}
        self._compact = {c: [] for c in LINK_COLUMNS}
        data["row"] = np.arange(self.n, dtype=np.int64)
        return pd.DataFrame(data)

    def columns(self, names: list[str]) -> pd.DataFrame:
        """The columns ``names`` of every localization (for the medians of the plausibility checks)."""
        import pyarrow.parquet as pq

        if self.n == 0:
            return pd.DataFrame({n: np.zeros(0) for n in names})
        return pq.read_table(self.path, columns=names).to_pandas()

    def complete(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """``chunk`` (rows with a ``row`` column) with the spilled columns it lacks, read back group by group."""
        import pyarrow.parquet as pq

        if len(chunk) == 0 or self.n == 0:
            return chunk
        rows = chunk["row"].to_numpy(dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        missing = [c for c in self._schema.names if c not in chunk.columns]
        parts: dict[str, list[np.ndarray]] = {c: [] for c in missing}
        first = int(np.searchsorted(self._group_starts, wanted[0], side="right") - 1)
        last = int(np.searchsorted(self._group_starts, wanted[-1], side="right") - 1)
        reader = pq.ParquetFile(self.path)
        for g in range(first, last + 1):
            lo, hi = self._group_starts[g], self._group_starts[g + 1]
            a, b = np.searchsorted(wanted, [lo, hi])
            if a == b:
                continue
            group = reader.read_row_group(g, columns=missing)
            take = wanted[a:b] - lo
            for c in missing:
                parts[c].append(group.column(c).to_numpy()[take])
        out = chunk.copy()
        for c in missing:
            values = np.empty(len(rows), dtype=parts[c][0].dtype)
            values[order] = np.concatenate(parts[c])
            out[c] = values
        return out


def detect_to_spill(
    movie: Any,
    acquisition: Acquisition,
    detection: DetectionSettings,
    chunk_frames: int,
    folder: Path,
    progress: Callable[[float, str], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    detect: Callable[..., Any] = detect_and_localize,
) -> SpilledLocalizations | None:
    """Detect and localize every frame of ``movie`` (``(T, Y, X)`` ADU) in windows of ``chunk_frames``
    frames, spilling each window's localizations (plus ``nearest_other_px``, px) to Parquet in ``folder``.
    ``detect``: the spot function, with the signature of :func:`~.tracking.spots.detect_and_localize`
    (the pipeline's choice for its device, :func:`~.accel.torch_spots.spot_function`).

    Returns the closed :class:`SpilledLocalizations`, or ``None`` when ``should_stop()`` stopped it.
    """
    n_frames = int(movie.shape[0])
    spill = SpilledLocalizations(folder)
    for start in range(0, n_frames, int(chunk_frames)):
        stop = min(n_frames, start + int(chunk_frames))

        def report(fraction: float, message: str, start: int = start, stop: int = stop) -> None:
            done = start + int(round(fraction * (stop - start)))
            if progress is not None:
                progress(done / n_frames, f"detecting and localizing: frame {done} of {n_frames}")

        part = detect(FrameWindow(movie, start, stop), acquisition, detection, progress=report,
                      should_stop=should_stop)
        if part.attrs.get("stopped_early"):
            spill.close()
            return None
        for key in ("n_split", "n_merged"):
            spill.attrs[key] += int(part.attrs.get(key, 0))
        part["frame"] = part["frame"].to_numpy(dtype=np.int64) + start
        part["nearest_other_px"] = (nearest_other_px(part["frame"].to_numpy(), part["y_px"].to_numpy(),
                                                     part["x_px"].to_numpy()) if len(part) else np.zeros(0))
        spill.append(part)
        del part
        trim_memory()
    spill.close()
    return spill
