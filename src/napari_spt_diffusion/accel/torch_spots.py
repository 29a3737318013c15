"""A movie's spots on a torch device, and the choice of spot path for a device.

:func:`detect_and_localize_torch` is :func:`~napari_spt_diffusion.tracking.spots.detect_and_localize`
with the detection (:mod:`.torch_detect`) and the single-spot fits (:mod:`.torch_localize`)
run on a torch device, a batch of frames at a time; it takes the same settings and gives the
same table (columns, order, ``attrs``). The overlap pass
(:func:`~napari_spt_diffusion.tracking.overlaps.resolve_overlaps`: streak merge, pair split,
neighbour refits) is not ported: it runs on the CPU, frame by frame, on the fits that came
back from the device, exactly as in the numpy path. Frames are read and converted to
photo-electrons on the CPU (where NaN frames are refused), then sent to the device.

:func:`spot_function` picks the path for the pipeline: the torch path when the device
resolves to a CUDA GPU (or when asked for by ``backend="torch"``, also on the CPU, for
testing), the numpy path otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..acquisition import Acquisition
from ..errors import SptDiffusionError
from ..estimation.estimator import resolve_device
from ..tracking.detect import DetectionSettings, TrackingInputError, check_frame
from ..tracking.overlaps import resolve_overlaps
from ..tracking.spots import SPOT_COLUMNS, detect_and_localize
from .torch_detect import detect_batch
from .torch_localize import localize_batch

__all__ = ["SPOT_BACKENDS", "SpotBackendError", "check_spot_backend", "detect_and_localize_torch", "spot_function",
           "DEFAULT_BATCH_FRAMES"]

#: ``"auto"``: torch on a CUDA device, numpy otherwise; ``"numpy"``: always numpy/scipy;
#: ``"torch"``: torch on the resolved device, the CPU included.
SPOT_BACKENDS: tuple[str, ...] = ("auto", "numpy", "torch")
#: Frames sent to the device at once: ``{device type: frames}`` (a GPU's run time per batch is
#: mostly the fixed cost of the fit's small kernels, so it gets larger batches).
DEFAULT_BATCH_FRAMES: dict[str, int] = {"cuda": 128, "cpu": 32}
_LOCALIZE_OPTIONS = frozenset({"window_half_px", "max_iterations", "neighbours"})


class SpotBackendError(SptDiffusionError, ValueError):
    """An unknown spot backend was asked for (one sentence)."""


def check_spot_backend(backend: Any) -> str:
    """``backend`` if it is one of :data:`SPOT_BACKENDS`, else :class:`SpotBackendError`."""
    if backend not in SPOT_BACKENDS:
        raise SpotBackendError(f"spot_backend must be one of {', '.join(SPOT_BACKENDS)}, got {backend!r}")
    return str(backend)


def spot_function(device: str | torch.device = "auto", backend: str = "auto") -> Callable[..., pd.DataFrame]:
    """The detect-and-localize function for a device.

    Parameters
    ----------
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` (as for the model; ``"cuda"`` without a GPU raises
        :class:`~napari_spt_diffusion.estimation.estimator.EstimatorError`).
    backend
        One of :data:`SPOT_BACKENDS`.

    Returns
    -------
    callable
        With the signature of :func:`~napari_spt_diffusion.tracking.spots.detect_and_localize`:
        that function itself, or :func:`detect_and_localize_torch` bound to the resolved device.
    """
    backend = check_spot_backend(backend)
    if backend == "numpy":
        return detect_and_localize
    resolved = resolve_device(device)
    if backend == "auto" and resolved.type != "cuda":
        return detect_and_localize
    return partial(detect_and_localize_torch, device=resolved)


def _read_batch(movie: Any, frames: range, acquisition: Acquisition) -> np.ndarray:
    """``(B, Y, X)`` float32 photo-electrons of the given frames (NaN frames refused, named)."""
    return np.stack([acquisition.adu_to_photons(check_frame(movie[t], index=int(t))) for t in frames])


def _frame_spots(photons: np.ndarray, table: dict[str, np.ndarray], snr: np.ndarray, acquisition: Acquisition,
                 options: dict[str, Any]) -> tuple[dict[str, np.ndarray], int, int]:
    """One frame's device fits through the overlap pass (on the CPU), as ``find_spots`` does; adds ``snr``."""
    n_split = n_merged = 0
    if options.pop("overlaps"):
        k = len(table["y_px"])
        table, parent = resolve_overlaps(photons, table, acquisition, **options)
        n_kept = len(np.unique(parent))
        n_split, n_merged = len(parent) - n_kept, k - n_kept
        snr = snr[parent]
    table["snr"] = snr
    return table, n_split, n_merged


def detect_and_localize_torch(
    movie: Any,
    acquisition: Acquisition,
    settings: DetectionSettings | None = None,
    progress: Callable[[float, str], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    overlaps: bool = True,
    *,
    device: str | torch.device = "cpu",
    batch_frames: int | None = None,
    **localize_options: Any,
) -> pd.DataFrame:
    """Detect and localize the spots of every frame, detection and fits on a torch device.

    Parameters
    ----------
    movie, acquisition, settings, progress, overlaps, **localize_options
        As for :func:`~napari_spt_diffusion.tracking.spots.detect_and_localize`.
    should_stop
        Optional ``should_stop() -> bool``, checked before every batch of frames; True
        returns the frames done so far with ``attrs["stopped_early"]`` True.
    device
        Torch device of the detection and fits (``"cpu"``, ``"cuda"``, ``"auto"`` or a
        ``torch.device``).
    batch_frames
        Frames sent to the device at once (``(batch_frames, Y, X)`` float32 on the device,
        about ten times that in work space); ``None``: :data:`DEFAULT_BATCH_FRAMES` of the device.

    Returns
    -------
    pandas.DataFrame
        As :func:`~napari_spt_diffusion.tracking.spots.detect_and_localize`: columns
        ``frame, y_px, x_px, photons, background, sigma_px, loc_precision_nm, fit_ok, snr``
        sorted by frame, spots whose centre lies outside the image left out, ``attrs``
        ``n_frames, frames_processed, stopped_early, n_split, n_merged``.
    """
    unknown = set(localize_options) - _LOCALIZE_OPTIONS
    if unknown:
        raise TypeError(f"unexpected localization option(s) {sorted(unknown)}")
    shape = getattr(movie, "shape", None)
    if shape is None:
        movie = np.asarray(movie)
        shape = movie.shape
    if len(shape) != 3:
        raise TrackingInputError(f"a movie must be a 3-D (T, Y, X) array, got shape {tuple(shape)}")
    if int(shape[1]) * int(shape[2]) == 0:  # nothing to put on a device: the numpy path's empty answer
        return detect_and_localize(movie, acquisition, settings, progress, should_stop, overlaps, **localize_options)
    target = resolve_device(device)
    if batch_frames is None:
        batch_frames = DEFAULT_BATCH_FRAMES.get(target.type, DEFAULT_BATCH_FRAMES["cpu"])
    if isinstance(batch_frames, bool) or int(batch_frames) < 1:
        raise TrackingInputError(f"batch_frames must be a whole number >= 1, got {batch_frames!r}")
    settings = settings or DetectionSettings()
    n_frames = int(shape[0])
    columns = ["frame", *SPOT_COLUMNS]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    counts = {"done": 0, "n_split": 0, "n_merged": 0, "last_report": -1}
    stopped = False
    pass_options = {k: v for k, v in localize_options.items() if k != "neighbours"}
    with torch.inference_mode():
        for first in range(0, n_frames, int(batch_frames)):
            if should_stop is not None and should_stop():
                stopped = True
                break
            frames = range(first, min(first + int(batch_frames), n_frames))
            photons = _read_batch(movie, frames, acquisition)
            on_device = torch.from_numpy(photons).to(target)
            found = detect_batch(on_device, acquisition, settings)
            peaks = np.concatenate([p for p, _ in found]) if found else np.zeros((0, 2), np.int64)
            frame_of = np.repeat(np.arange(len(found)), [len(p) for p, _ in found])
            fitted = localize_batch(on_device, peaks, frame_of, acquisition, **localize_options)
            bounds = np.searchsorted(frame_of, np.arange(len(found) + 1))
            for b, t in enumerate(frames):
                if bounds[b + 1] == bounds[b]:
                    continue
                rows = slice(bounds[b], bounds[b + 1])
                table, n_split, n_merged = _frame_spots(
                    photons[b], {c: fitted[c][rows] for c in fitted}, found[b][1], acquisition,
                    {"overlaps": overlaps, **pass_options})
                counts["n_split"] += n_split
                counts["n_merged"] += n_merged
                table["frame"] = np.full(len(table["y_px"]), t, dtype=np.int64)
                inside = ((table["y_px"] >= -0.5) & (table["y_px"] < shape[1] - 0.5)
                          & (table["x_px"] >= -0.5) & (table["x_px"] < shape[2] - 0.5))
                for c in columns:
                    parts[c].append(table[c][inside])
            counts["done"] = frames.stop
            _report(progress, counts, n_frames)
    dtypes = {"frame": np.int64, "fit_ok": bool}
    result = pd.DataFrame({
        c: (np.concatenate(parts[c]) if parts[c] else np.zeros(0)).astype(dtypes.get(c, np.float64)) for c in columns
    })
    result.attrs.update({"n_frames": n_frames, "frames_processed": counts["done"], "stopped_early": stopped,
                         "n_split": counts["n_split"], "n_merged": counts["n_merged"]})
    if progress is not None and not stopped:
        progress(1.0, f"detected {len(result)} spots in {n_frames} frames")
    return result


def _report(progress: Callable[[float, str], Any] | None, counts: dict[str, int], n_frames: int) -> None:
    """``progress(fraction, message)`` when the percentage of frames done has changed."""
    if progress is None:
        return
    done = counts["done"]
    percent = (100 * done) // max(n_frames, 1)
    if percent != counts["last_report"]:
        counts["last_report"] = percent
        progress(done / n_frames, f"detecting and localizing: frame {done} of {n_frames}")
