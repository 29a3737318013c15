"""The one per-frame spot path: detection, single-spot fit, then the overlap pass.

Every place that turns camera frames into localizations goes through this module, so a
model never sees spots found differently at inference than in its training data:

* the pipeline (:func:`detect_and_localize`, frame by frame over a movie);
* the training samples (:func:`locate_frame` on a mosaic of rendered windows);
* the napari widget's Preview (:func:`locate_frame` on the current frame).

Per frame (:func:`find_spots`): Difference-of-Gaussians detection
(:func:`~.detect.detect_photons`), Poisson maximum-likelihood fit of a pixel-integrated
Gaussian to every detection (:func:`~.localize.localize_arrays`), and the second pass over
those fits (:func:`~.overlaps.resolve_overlaps`: streak merge, pair split, neighbour
refits). The PSF width comes from the acquisition only.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..acquisition import Acquisition
from . import spot_processes as _spot_processes
from .detect import DetectionSettings, TrackingInputError, check_frame, detect_photons
from .localize import LOCALIZATION_COLUMNS, localize_arrays
from .overlaps import resolve_overlaps

__all__ = ["SPOT_COLUMNS", "FoundSpots", "find_spots", "locate_frame", "detect_and_localize"]

#: Columns of a spot table (one frame), in order: the localization columns plus ``snr``.
SPOT_COLUMNS: tuple[str, ...] = (*LOCALIZATION_COLUMNS, "snr")


@dataclass
class FoundSpots:
    """The spots of one frame.

    Attributes
    ----------
    table
        Dict of ``(K,)`` arrays with the :data:`SPOT_COLUMNS` keys (``y_px, x_px`` in px,
        pixel centres at integers; ``photons`` signal photo-electrons; ``background``
        photo-electrons per pixel; ``sigma_px`` fitted width; ``loc_precision_nm``;
        ``fit_ok``; ``snr`` the DoG response in units of the frame's DoG noise).
    n_split
        Detections split into two emitters by the overlap pass.
    n_merged
        Detections merged into a neighbour's streak by the overlap pass.
    """

    table: dict[str, np.ndarray]
    n_split: int = 0
    n_merged: int = 0


def find_spots(
    frame_photons: np.ndarray,
    acquisition: Acquisition,
    settings: DetectionSettings | None = None,
    *,
    overlaps: bool = True,
    **localize_options: Any,
) -> FoundSpots:
    """Detect, fit and resolve overlaps in one frame already in photo-electrons.

    Parameters
    ----------
    frame_photons
        ``(Y, X)`` frame in photo-electrons (finite values).
    acquisition
        Camera read noise, pixel size and PSF width.
    settings
        :class:`~.detect.DetectionSettings`; defaults when ``None``.
    overlaps
        Run the second pass (:func:`~.overlaps.resolve_overlaps`); ``False`` keeps one
        single-spot fit per detection.
    **localize_options
        ``window_half_px``, ``max_iterations`` (both passes) and ``neighbours`` (the
        single-spot fit's neighbour refits) of :func:`~.localize.localize_arrays`.

    Returns
    -------
    FoundSpots
        Rows in detection order (brightest first); a split spot's second emitter is
        appended at the end. Spots whose centre lies outside the frame are kept (see
        :func:`detect_and_localize`).
    """
    peaks, snr = detect_photons(frame_photons, acquisition, settings)
    if not len(peaks):
        table = {c: np.zeros(0, dtype=bool if c == "fit_ok" else np.float64) for c in SPOT_COLUMNS}
        return FoundSpots(table)
    fitted = localize_arrays(frame_photons, peaks, acquisition, **localize_options)
    n_split = n_merged = 0
    if overlaps:
        fitted, parent = resolve_overlaps(
            frame_photons, fitted, acquisition,
            **{key: value for key, value in localize_options.items() if key != "neighbours"},
        )
        n_kept = len(np.unique(parent))
        n_split = len(parent) - n_kept
        n_merged = len(peaks) - n_kept
        # a split spot's two emitters share the detection's DoG response; a merged streak
        # keeps its brighter lobe's
        snr = snr[parent]
    fitted["snr"] = snr
    return FoundSpots(fitted, n_split, n_merged)


def locate_frame(
    frame_adu: np.ndarray,
    acquisition: Acquisition,
    settings: DetectionSettings | None = None,
    *,
    overlaps: bool = True,
) -> pd.DataFrame:
    """Localizations of one camera frame, by the pipeline's per-frame path.

    Parameters
    ----------
    frame_adu
        ``(Y, X)`` camera counts (ADU); NaN/inf pixels raise
        :class:`~.detect.TrackingInputError`.
    acquisition
        Camera conversion, read noise, pixel size and PSF width.
    settings
        :class:`~.detect.DetectionSettings`; defaults when ``None``.
    overlaps
        Run the second pass, as the pipeline does.

    Returns
    -------
    pandas.DataFrame
        One row per localization, columns :data:`SPOT_COLUMNS` (see :class:`FoundSpots`),
        including spots whose centre lies outside the frame.
    """
    frame = check_frame(frame_adu)
    found = find_spots(acquisition.adu_to_photons(frame), acquisition, settings, overlaps=overlaps)
    return pd.DataFrame({c: found.table[c] for c in SPOT_COLUMNS}, columns=list(SPOT_COLUMNS))


#: Environment variable that caps the threads of :func:`detect_and_localize` (default: the CPUs
#: this process may use, at most :data:`MAX_SPOT_THREADS`).
SPOT_THREADS_ENV = "SPT_DIFFUSION_SPOT_THREADS"
MAX_SPOT_THREADS = 4


def spot_threads() -> int:
    """Threads that find the spots of a movie's frames: ``$SPT_DIFFUSION_SPOT_THREADS`` when it is a
    positive integer, else the CPUs available to this process, at most :data:`MAX_SPOT_THREADS`."""
    value = os.environ.get(SPOT_THREADS_ENV, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(MAX_SPOT_THREADS, available))


def _inside(table: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """``(K,)`` rows whose centre lies inside a frame of ``shape`` ``(Y, X)``."""
    return (
        (table["y_px"] >= -0.5) & (table["y_px"] < shape[0] - 0.5)
        & (table["x_px"] >= -0.5) & (table["x_px"] < shape[1] - 0.5)
    )


def detect_and_localize(
    movie: Any,
    acquisition: Acquisition,
    settings: DetectionSettings | None = None,
    progress: Callable[[float, str], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    overlaps: bool = True,
    **localize_options: Any,
) -> pd.DataFrame:
    """Detect and localize spots in every frame of a movie, frame by frame.

    Frames are read one at a time, in order, by the calling thread; their spots are found by
    :func:`spot_threads` threads (at most two frames per thread in memory at once). A movie of at
    least :data:`~.spot_processes.MIN_FRAMES` frames mapped read-only from its file
    (``numpy.memmap``: an uncompressed TIFF or ``.npy``) is instead shared out in chunks between
    the calling thread and forked worker processes, which read their frames through the same
    reader (:mod:`~napari_spt_diffusion.tracking.spot_processes`: Linux, main thread; one fewer
    than the threads, or ``$SPT_DIFFUSION_SPOT_PROCESSES``). The table depends on neither.

    Parameters
    ----------
    movie
        ``(T, Y, X)`` array-like in ADU: a numpy array, memmap, dask/zarr array or
        any object with ``shape`` and ``__getitem__(t)``; frames are read one at a
        time (a few are held while their spots are found).
    acquisition
        Camera conversion, PSF width and pixel size.
    settings
        :class:`DetectionSettings` (defaults when ``None``).
    progress
        Optional ``progress(fraction, message)`` callback, ``fraction`` in [0, 1];
        called about 100 times over the movie and once at the end.
    should_stop
        Optional ``should_stop() -> bool`` checked before every frame; when it
        returns True the frames done so far are returned and
        ``result.attrs["stopped_early"]`` is True.
    overlaps
        Run :func:`~napari_spt_diffusion.tracking.overlaps.resolve_overlaps` on every
        frame's fits: two nearby spots that are the two lobes of one motion-blurred
        streak (a streak model explains their pixels about as well as two spots, and
        together they hold about one particle's light) are merged into one localization
        at the streak's centre; spots wider than the PSF are tested for two emitters
        (split when a two-spot model is significantly better than both a round spot and
        a streak); spots next to a streak or a split pair are refitted with that
        neighbour's light. Isolated round spots are not affected.
    **localize_options
        Passed to :func:`~napari_spt_diffusion.tracking.localize.localize_arrays`
        (``window_half_px``, ``max_iterations``).

    Returns
    -------
    pandas.DataFrame
        One row per localization, columns ``frame, y_px, x_px, photons,
        background, sigma_px, loc_precision_nm, fit_ok, snr`` (``snr``: the DoG
        response in units of the frame's noise), sorted by frame. Spots whose
        fitted centre lies outside the image (``y < -0.5`` or ``y >= Y - 0.5``, same
        for x: particles outside the field whose light spills in) are left out.
        ``attrs``: ``n_frames`` (frames in the movie), ``frames_processed``,
        ``stopped_early``, ``n_split`` (spots split into two emitters), ``n_merged``
        (spots merged into a neighbour's streak).
    """
    shape = getattr(movie, "shape", None)
    if shape is None:
        movie = np.asarray(movie)
        shape = movie.shape
    if len(shape) != 3:
        raise TrackingInputError(f"a movie must be a 3-D (T, Y, X) array, got shape {tuple(shape)}")
    n_frames = int(shape[0])
    settings = settings or DetectionSettings()
    columns = ["frame", *SPOT_COLUMNS]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    last_report = -1
    done = 0
    n_split = 0
    n_merged = 0

    def spots_of(frame: np.ndarray) -> FoundSpots:
        return find_spots(acquisition.adu_to_photons(frame), acquisition, settings, overlaps=overlaps,
                          **localize_options)

    def collect(t: int, frame_shape: tuple[int, ...], found: FoundSpots) -> None:
        nonlocal n_split, n_merged, done, last_report
        n_split += found.n_split
        n_merged += found.n_merged
        if len(found.table["y_px"]):
            found.table["frame"] = np.full(len(found.table["y_px"]), t, dtype=np.int64)
            # a spot whose centre lies outside the image belongs to a particle outside the
            # field of view whose light spills in: not a localization of this movie
            inside = _inside(found.table, frame_shape)
            for c in columns:
                parts[c].append(found.table[c][inside])
        done = t + 1
        if progress is not None:
            percent = (100 * done) // max(n_frames, 1)
            if percent != last_report:
                last_report = percent
                progress(done / n_frames, f"detecting and localizing: frame {done} of {n_frames}")

    def with_threads(workers: int) -> bool:
        """Frames read here, in order (a lazy reader need not be thread-safe), their spots found by
        ``workers`` threads (the FFT and the compiled fits release the GIL); results collected in
        frame order, at most 2 per thread in flight (memory stays a few frames). True if stopped."""
        with ThreadPoolExecutor(max_workers=workers) if workers > 1 else nullcontext() as pool:
            pending: deque = deque()
            stopped_here = False
            for t in range(n_frames):
                if should_stop is not None and should_stop():
                    stopped_here = True
                    break
                frame = check_frame(movie[t], index=int(t))
                if pool is None:
                    collect(t, frame.shape, spots_of(frame))
                    continue
                pending.append((t, frame.shape, pool.submit(spots_of, frame)))
                while len(pending) > 2 * workers or (pending and pending[0][2].done()):
                    t_done, frame_shape, future = pending.popleft()
                    collect(t_done, frame_shape, future.result())
            while pending:
                t_done, frame_shape, future = pending.popleft()
                collect(t_done, frame_shape, future.result())
        return stopped_here

    workers = spot_threads() if n_frames > 1 else 1
    processes = _spot_processes.spot_processes(workers) if n_frames >= _spot_processes.MIN_FRAMES else 0
    mapped = _spot_processes.mapped_source(movie) if processes > 0 else None
    if mapped is None:
        stopped = with_threads(workers)
    else:
        # A movie mapped read-only from its file: forked worker processes read it too and find the
        # spots of some chunks of frames, this thread those of the others (no interpreter lock shared).
        found_in_order = _spot_processes.found_in_order(
            n_frames, lambda t: check_frame(movie[t], index=int(t)), spots_of, mapped, processes, should_stop)
        with closing(found_in_order):  # the workers end here even when collect() raises
            for t, frame_shape, found in found_in_order:
                collect(t, frame_shape, found)
        stopped = done < n_frames
    dtypes = {"frame": np.int64, "fit_ok": bool}
    result = pd.DataFrame(
        {
            c: (np.concatenate(parts[c]) if parts[c] else np.zeros(0)).astype(dtypes.get(c, np.float64))
            for c in columns
        }
    )
    result.attrs.update({"n_frames": n_frames, "frames_processed": done, "stopped_early": stopped, "n_split": n_split,
                         "n_merged": n_merged})
    if progress is not None and not stopped:
        progress(1.0, f"detected {len(result)} spots in {n_frames} frames")
    return result
