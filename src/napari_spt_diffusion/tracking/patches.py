"""Per-track image patches and displacements: the single input path of the estimators.

Both inference (tracks found in a movie) and training-sample generation
(``training/samples.py``) go through :func:`crop_patches`, so a model never sees
patches made differently from the ones it was trained on:

* each patch is ``P x P`` pixels centred on the integer pixel nearest the *localized*
  position, ``centre = floor(position + 0.5)``; the sub-pixel offset
  ``position - centre`` (in ``[-0.5, 0.5)``) is kept beside it;
* pixel values are photo-electrons (:meth:`Acquisition.adu_to_photons`);
* pixels that fall outside the image are filled with the patch's local background
  (the median of its valid pixels) and flagged in ``outside_mask``;
* displacements are differences of consecutive *localized* positions, with the frames
  that follow a gap flagged (``gap_before``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..acquisition import Acquisition
from ..errors import SptDiffusionError

__all__ = [
    "PatchError",
    "TrackPatches",
    "PatchArray",
    "crop_patches",
    "displacements_from_positions",
    "extract_track_patches",
    "extract_patches_array",
]


class PatchError(SptDiffusionError, ValueError):
    """Raised for inputs from which patches cannot be cut."""


@dataclass
class TrackPatches:
    """Patches and displacements of one track.

    Attributes
    ----------
    track_id
        Track identifier (as in the tracks table).
    frames
        ``(T,)`` int frame numbers, increasing.
    positions_px
        ``(T, 2)`` float64 localized ``(y, x)`` positions in pixels.
    patches_photons
        ``(T, P, P)`` float32 photo-electrons, centred on ``floor(position + 0.5)``.
    subpixel_offset_px
        ``(T, 2)`` ``position - integer centre`` in pixels, in ``[-0.5, 0.5)``.
    outside_mask
        ``(T, P, P)`` bool, True where the patch left the image (filled with local background).
    displacements_px
        ``(T, 2)`` ``position[k] - position[k-1]`` in pixels; row 0 is 0.
    gap_before
        ``(T,)`` bool, True where ``frame[k] - frame[k-1] > 1``; row 0 is True.
    """

    track_id: int
    frames: np.ndarray
    positions_px: np.ndarray
    patches_photons: np.ndarray
    subpixel_offset_px: np.ndarray
    outside_mask: np.ndarray
    displacements_px: np.ndarray
    gap_before: np.ndarray

    @property
    def n_frames(self) -> int:
        """Number of localizations (rows) in the track."""
        return int(len(self.frames))


@dataclass
class PatchArray:
    """Patches of ``N`` equal-length tracks of ``T`` frames (no gaps), as used for training.

    Attributes
    ----------
    patches_photons
        ``(N, T, P, P)`` float32 photo-electrons.
    subpixel_offset_px
        ``(N, T, 2)`` float32, position minus integer patch centre, ``(y, x)``.
    outside_mask
        ``(N, T, P, P)`` bool, True where the patch left its image.
    displacements_px
        ``(N, T, 2)`` float64 displacements of the given positions; ``[:, 0]`` is 0.
    """

    patches_photons: np.ndarray
    subpixel_offset_px: np.ndarray
    outside_mask: np.ndarray
    displacements_px: np.ndarray


def _nearest_pixel(positions_px: np.ndarray) -> np.ndarray:
    """Integer pixel whose square contains each position (half-integers go up)."""
    return np.floor(np.asarray(positions_px, dtype=float) + 0.5).astype(np.int64)


def crop_patches(
    images: np.ndarray,
    positions_px: np.ndarray,
    patch_size: int = 11,
    image_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut ``P x P`` patches centred on the pixel nearest each position (vectorised).

    Parameters
    ----------
    images
        ``(H, W)`` one image for all positions, or ``(M, H, W)`` a stack, with
        ``image_index`` naming the image of each position. Values are returned as they
        are (convert to photons first); must be finite where patches read them.
    positions_px
        ``(K, 2)`` ``(y, x)`` positions in the pixel coordinates of the images.
    patch_size
        Odd patch side ``P`` in pixels.
    image_index
        ``(K,)`` int, index into ``images`` for each position (stack input only).

    Returns
    -------
    patches
        ``(K, P, P)`` float32; pixels outside the image hold the median of the patch's
        valid pixels (0 if no pixel of the patch is inside the image).
    outside_mask
        ``(K, P, P)`` bool, True where the patch left the image.
    subpixel_offset_px
        ``(K, 2)`` float64, ``position - integer centre`` in ``[-0.5, 0.5)``.
    """
    if int(patch_size) != patch_size or patch_size < 1 or patch_size % 2 == 0:
        raise PatchError(f"patch_size must be a positive odd whole number, got {patch_size!r}")
    patch_size = int(patch_size)
    positions = np.asarray(positions_px, dtype=float).reshape(-1, 2)
    if not np.all(np.isfinite(positions)):
        raise PatchError("positions must be finite numbers (a localization is NaN or infinite)")
    images = np.asarray(images) if not isinstance(images, np.ndarray) else images
    if images.ndim == 2:
        height, width = images.shape
        stack = False
    elif images.ndim == 3:
        _, height, width = images.shape
        stack = True
        if image_index is None or len(image_index) != len(positions):
            raise PatchError("a stack of images needs one image_index per position")
    else:
        raise PatchError(f"images must be (H, W) or (M, H, W), got shape {images.shape}")

    k = len(positions)
    half = patch_size // 2
    centre = _nearest_pixel(positions)
    offsets = positions - centre
    span = np.arange(-half, half + 1)
    rows = centre[:, 0:1] + span  # (K, P)
    cols = centre[:, 1:2] + span
    rows_ok = (rows >= 0) & (rows < height)
    cols_ok = (cols >= 0) & (cols < width)
    rows_c = np.clip(rows, 0, height - 1)
    cols_c = np.clip(cols, 0, width - 1)
    if stack:
        idx = np.asarray(image_index, dtype=np.int64)
        patches = images[idx[:, None, None], rows_c[:, :, None], cols_c[:, None, :]]
    else:
        patches = images[rows_c[:, :, None], cols_c[:, None, :]]
    patches = np.asarray(patches, dtype=np.float32).reshape(k, patch_size, patch_size)
    outside = ~(rows_ok[:, :, None] & cols_ok[:, None, :])
    if not np.all(np.isfinite(patches[~outside])):
        raise PatchError("the image holds NaN or infinite pixel values where a patch was cut")
    partial = np.flatnonzero(outside.reshape(k, -1).any(axis=1))
    if len(partial):
        sub = patches[partial].copy()
        sub[outside[partial]] = np.nan
        flat = sub.reshape(len(partial), -1)
        has_valid = np.isfinite(flat).any(axis=1)
        fill = np.zeros(len(partial), dtype=np.float32)
        if has_valid.any():
            fill[has_valid] = np.nanmedian(flat[has_valid], axis=1)
        sub = np.where(outside[partial], fill[:, None, None], sub)
        patches[partial] = sub
    return patches, outside, offsets


def displacements_from_positions(
    positions_px: np.ndarray, frames: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Frame-to-frame displacements of localized positions.

    Parameters
    ----------
    positions_px
        ``(..., T, 2)`` ``(y, x)`` positions in pixels.
    frames
        ``(..., T)`` frame numbers; ``None`` means consecutive frames (no gaps).

    Returns
    -------
    displacements_px
        ``(..., T, 2)``, ``position[k] - position[k-1]`` (spanning the gap where there is
        one); row 0 is 0.
    gap_before
        ``(..., T)`` bool, True where ``frame[k] - frame[k-1] > 1``; row 0 is True.
    """
    positions = np.asarray(positions_px, dtype=float)
    disp = np.zeros_like(positions)
    disp[..., 1:, :] = np.diff(positions, axis=-2)
    gap = np.zeros(positions.shape[:-1], dtype=bool)
    gap[..., 0] = True
    if frames is not None:
        frames = np.asarray(frames)
        gap[..., 1:] = np.diff(frames, axis=-1) > 1
    return disp, gap


def _require_columns(tracks: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in tracks.columns]
    if missing:
        raise PatchError(f"the tracks table lacks column(s) {', '.join(missing)}")


def extract_track_patches(
    movie: Any,
    tracks: pd.DataFrame,
    acquisition: Acquisition,
    patch_size: int = 11,
) -> list[TrackPatches]:
    """Cut the patch of every localization of every track, reading each frame once.

    Parameters
    ----------
    movie
        ``(T, Y, X)`` camera movie in ADU: a numpy array, memmap or any array-like whose
        ``movie[t]`` returns one frame (only the frames used by tracks are read).
    tracks
        Linked localizations with columns ``track_id``, ``frame``, ``y_px``, ``x_px``
        (localized positions in pixels), e.g. ``tracking.link(...).tracks``.
    acquisition
        Camera settings, used to convert ADU to photo-electrons.
    patch_size
        Odd patch side in pixels (11 for the bundled models).

    Returns
    -------
    list of TrackPatches
        One per track, in increasing ``track_id`` order, rows sorted by frame.
    """
    _require_columns(tracks, ("track_id", "frame", "y_px", "x_px"))
    shape = getattr(movie, "shape", None)
    if shape is None or len(shape) != 3:
        raise PatchError(f"the movie must be a (T, Y, X) array, got shape {shape}")
    if len(tracks) == 0:
        return []
    table = tracks.sort_values(["track_id", "frame"], kind="stable")
    if table.duplicated(["track_id", "frame"]).any():
        raise PatchError("a track has two localizations in the same frame")
    frames = table["frame"].to_numpy().astype(np.int64)
    if frames.min() < 0 or frames.max() >= shape[0]:
        raise PatchError(f"track frames run outside the movie's {shape[0]} frames")
    positions = table[["y_px", "x_px"]].to_numpy(dtype=float)
    track_ids = table["track_id"].to_numpy()

    n = len(table)
    patches = np.empty((n, patch_size, patch_size), dtype=np.float32)
    outside = np.empty((n, patch_size, patch_size), dtype=bool)
    offsets = np.empty((n, 2), dtype=float)
    order = np.argsort(frames, kind="stable")
    unique_frames, starts = np.unique(frames[order], return_index=True)
    bounds = np.append(starts, n)
    for i, frame in enumerate(unique_frames):
        rows = order[bounds[i] : bounds[i + 1]]
        image = acquisition.adu_to_photons(np.asarray(movie[int(frame)]))
        p, m, o = crop_patches(image, positions[rows], patch_size)
        patches[rows], outside[rows], offsets[rows] = p, m, o

    result: list[TrackPatches] = []
    ids, first = np.unique(track_ids, return_index=True)
    ends = np.append(first[1:], n)
    for tid, a, b in zip(ids, first, ends):
        disp, gap = displacements_from_positions(positions[a:b], frames[a:b])
        result.append(
            TrackPatches(
                track_id=int(tid),
                frames=frames[a:b].copy(),
                positions_px=positions[a:b].copy(),
                patches_photons=patches[a:b],
                subpixel_offset_px=offsets[a:b],
                outside_mask=outside[a:b],
                displacements_px=disp,
                gap_before=gap,
            )
        )
    return result


def extract_patches_array(
    frames_stack: np.ndarray,
    positions_px: np.ndarray,
    acquisition: Acquisition | None = None,
    patch_size: int = 11,
    *,
    in_photons: bool = False,
) -> PatchArray:
    """Batched patch cutting for ``N`` equal-length, gap-free tracks (training path).

    Parameters
    ----------
    frames_stack
        Either ``(T, H, W)`` frames shared by all tracks (a movie), or ``(N, T, H, W)``
        one image per track and frame (e.g. the small simulated windows that follow each
        particle). Camera ADU unless ``in_photons``.
    positions_px
        ``(N, T, 2)`` localized ``(y, x)`` positions, in the pixel coordinates of the
        image each patch is cut from.
    acquisition
        Needed to convert ADU to photo-electrons (ignored when ``in_photons``).
    patch_size
        Odd patch side in pixels.
    in_photons
        True when ``frames_stack`` already holds photo-electrons.

    Returns
    -------
    PatchArray
        Patches ``(N, T, P, P)`` and their offsets, masks and displacements.
    """
    positions = np.asarray(positions_px, dtype=float)
    if positions.ndim != 3 or positions.shape[-1] != 2:
        raise PatchError(f"positions_px must be (N, T, 2), got shape {positions.shape}")
    n, t = positions.shape[:2]
    stack = np.asarray(frames_stack)
    if not in_photons:
        if acquisition is None:
            raise PatchError("an acquisition is needed to convert ADU to photo-electrons")
        stack = acquisition.adu_to_photons(stack)
    if stack.ndim == 4:
        if stack.shape[:2] != (n, t):
            raise PatchError(f"frames_stack (N, T, H, W) {stack.shape} does not match positions (N, T) = {(n, t)}")
        images = stack.reshape((n * t,) + stack.shape[2:])
        index = np.arange(n * t)
    elif stack.ndim == 3:
        if stack.shape[0] != t:
            raise PatchError(f"frames_stack (T, H, W) has {stack.shape[0]} frames, positions have {t}")
        images = stack
        index = np.tile(np.arange(t), n)
    else:
        raise PatchError(f"frames_stack must be (T, H, W) or (N, T, H, W), got shape {stack.shape}")
    patches, outside, offsets = crop_patches(images, positions.reshape(-1, 2), patch_size, image_index=index)
    disp, _ = displacements_from_positions(positions)
    return PatchArray(
        patches_photons=patches.reshape(n, t, patch_size, patch_size),
        subpixel_offset_px=offsets.reshape(n, t, 2).astype(np.float32),
        outside_mask=outside.reshape(n, t, patch_size, patch_size),
        displacements_px=disp,
    )
