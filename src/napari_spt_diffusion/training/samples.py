"""Training and test samples made through the pipeline's spot path.

A model must never see data made differently from inference data (docs/architecture.md). So a
sample is not cut from the simulator's truth: for ``N`` simulated trajectories, every
frame is rendered as a small camera window that follows the particle (motion blur,
pixel-integrated PSF, Poisson and read noise, uint16 ADU), and then the *tracker*
finds and fits the spot exactly as in a movie:

1. all windows of a chunk are tiled side by side into one mosaic image per chunk, and
   :func:`~napari_spt_diffusion.tracking.spots.locate_frame` runs on the mosaic: the
   pipeline's per-frame path (detection, maximum-likelihood fit, then the overlap pass
   that merges the two lobes of a motion-blurred streak and splits two overlapping
   emitters);
2. each window keeps the localization nearest to the particle's true position (within
   ``match_radius_px``, ``detected = True``); a window without one is fitted at the
   pixel under the true position by the single-spot fit
   (:func:`~napari_spt_diffusion.tracking.localize.localize_frame`) and flagged
   (``detected = False``) -- in a movie such a frame would be a gap in the track;
3. :func:`~napari_spt_diffusion.tracking.patches.crop_patches` cuts the ``P x P`` patch
   around the *localized* position from the window, in photo-electrons, with the same
   centring, sub-pixel offset and edge handling as :func:`extract_track_patches`;
4. displacements are differences of the localized positions (image coordinates).

Windows are tiled edge to edge: the particle stays near the middle of its window (the
window is centred on the pixel under its true frame position), so a spot's DoG and fit
windows do not reach its neighbours when ``window_size >= patch_size + 8``.

Crowding: with ``neighbour_fraction > 0`` (:func:`make_samples`), that share of the samples
gets a second particle of the same motion model, started 1.5-6 px away (by default) and
diffusing on its own; its light is rendered into the same windows before the camera noise,
so the detector, the localizer and the patch see both, as in a crowded movie (the window
keeps whatever localization of the spot path lies nearest the first particle). The labels
stay those of the first particle. A model trained only on isolated particles reads a
neighbour inside its patch as fast motion (``benchmarks/reports/accuracy.md``: on the
``field`` benchmark movie, the crowded tracks carried most of such a model's per-track D1
error).

``make_samples(model, n, n_frames, acquisition, seed)`` returns a :class:`SampleBatch`;
:func:`save_samples` / :func:`load_samples` write and read it as ``.npz``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..acquisition import Acquisition
from ..io._atomic import atomic_path
from ..simulation.fixed_pattern import apply_fixed_pattern
from ..simulation.motion_models import get_motion_model
from ..simulation.optics import RenderOptics
from ..simulation.render import camera_image, render_windows
from ..simulation.trajectories import SimulationError, Trajectories, as_generator
from ..tracking.detect import DetectionSettings
from ..tracking.localize import localize_frame
from ..tracking.patches import crop_patches, displacements_from_positions
from ..tracking.spots import locate_frame
from .motion_priors import MotionPrior

__all__ = ["SampleBatch", "SampleSettings", "make_samples", "samples_from_trajectories", "save_samples", "load_samples"]

_FORMAT_VERSION = 1
_MAX_TILES_PER_MOSAIC = 4096


@dataclass
class SampleBatch:
    """``N`` samples of ``T`` frames, as the models see them, with their ground truth.

    Attributes
    ----------
    patches
        ``(N, T, P, P)`` float32 photo-electrons, centred on the localized positions.
    displacements
        ``(N, T, 2)`` float32 ``(dy, dx)`` px between consecutive localized positions;
        row 0 is 0.
    positions_px
        ``(N, T, 2)`` float64 localized ``(y, x)`` positions (image pixels).
    subpixel_offset_px
        ``(N, T, 2)`` float32 localized position minus the patch's centre pixel.
    outside_mask
        ``(N, T, P, P)`` bool, True where a patch left its rendered window.
    D1_um2_s, D2_um2_s, theta_deg
        ``(N, T)`` float32 per-frame labels (um^2/s, um^2/s, degrees in [0, 180)).
    state
        ``(N, T)`` int8 segment index along the track (0, 1, ...).
    true_positions_px
        ``(N, T, 2)`` float64 true camera positions (mean of the exposed sub-positions).
    changepoint_frames
        ``(N, K)`` int64 true changepoint frames, padded with -1.
    detected
        ``(N, T)`` bool, False where the detector missed the spot (fallback peak).
    fit_ok
        ``(N, T)`` bool, the localizer's fit flag.
    photons, background, loc_precision_nm
        ``(N, T)`` float32 outputs of the localizer (photo-electrons, photo-electrons per
        pixel, nm).
    model
        Motion model name.
    acquisition
        Acquisition the samples were made with.
    meta
        Generation parameters (seed, window size, ...).
    """

    patches: np.ndarray
    displacements: np.ndarray
    positions_px: np.ndarray
    subpixel_offset_px: np.ndarray
    outside_mask: np.ndarray
    D1_um2_s: np.ndarray
    D2_um2_s: np.ndarray
    theta_deg: np.ndarray
    state: np.ndarray
    true_positions_px: np.ndarray
    changepoint_frames: np.ndarray
    detected: np.ndarray
    fit_ok: np.ndarray
    photons: np.ndarray
    background: np.ndarray
    loc_precision_nm: np.ndarray
    model: str
    acquisition: Acquisition
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Number of samples ``N``."""
        return int(self.patches.shape[0])

    def __len__(self) -> int:
        return self.n_samples

    @property
    def n_frames(self) -> int:
        """Frames per sample ``T``."""
        return int(self.patches.shape[1])

    @property
    def valid(self) -> np.ndarray:
        """``(N, T)`` bool, True for real frames (all of them: samples have no padding)."""
        return np.ones(self.patches.shape[:2], dtype=bool)

    @property
    def labels(self) -> np.ndarray:
        """``(N, T, 4)`` float32 ``D1_um2_s, D2_um2_s, theta_deg, state`` per frame."""
        return np.stack([self.D1_um2_s, self.D2_um2_s, self.theta_deg, self.state.astype(np.float32)], axis=-1)

    def changepoints(self, i: int) -> np.ndarray:
        """True changepoint frames of sample ``i`` (unpadded)."""
        row = self.changepoint_frames[i]
        return row[row >= 0]


def _windows_mosaic(windows: np.ndarray) -> tuple[np.ndarray, int]:
    """Tile ``(K, W, W)`` windows into one ``(rows W, cols W)`` image; returns it and ``cols``."""
    k, w, _ = windows.shape
    cols = int(math.ceil(math.sqrt(k)))
    rows = int(math.ceil(k / cols))
    pad = rows * cols - k
    if pad:
        # empty tiles hold a copy of the first window's background level, never a spot
        filler = np.broadcast_to(np.median(windows[0]).astype(windows.dtype), (pad, w, w))
        windows = np.concatenate([windows, filler], axis=0)
    mosaic = windows.reshape(rows, cols, w, w).transpose(0, 2, 1, 3).reshape(rows * w, cols * w)
    return np.ascontiguousarray(mosaic), cols


@dataclass(frozen=True)
class SampleSettings:
    """How samples are drawn and cut from the rendered windows (defaults: those of the bundled models).

    Attributes
    ----------
    patch_size
        Odd patch side (px).
    window_size
        Side of the rendered window that follows each particle (px); ``None``:
        ``patch_size + 8`` (19 for 11-px patches), enlarged for wide PSFs so that the
        window holds the patch plus ``4 psf_sigma`` of margin.
    detection
        Detection settings of the spot path (``None``: the tracker's defaults).
    match_radius_px
        A localization farther than this from the true position (px) does not count as
        the particle's.
    optics
        PSF shape and camera kind beyond the acquisition (ellipticity, Airy-like halo,
        EMCCD excess noise; :class:`~napari_spt_diffusion.simulation.optics.RenderOptics`);
        ``None``: round Gaussian PSF, sCMOS/CCD camera.
    motion_prior
        ``aniso`` only (:func:`make_samples`): draw the tracks' ``D1`` and ``D2 / D1`` from this
        prior (:mod:`.motion_priors`) instead of the motion model's own; ``None``: the model's
        own, drawn exactly as without this option. Neighbours keep the model's own.
    """

    patch_size: int = 11
    window_size: int | None = None
    detection: DetectionSettings | None = None
    match_radius_px: float = 3.0
    optics: RenderOptics | None = None
    motion_prior: MotionPrior | None = None


_SPOT_FIELDS = ("y_px", "x_px", "photons", "background", "loc_precision_nm", "fit_ok")


def _tile_origins(k: int, window: int, cols: int) -> np.ndarray:
    """``(K, 2)`` top-left pixel ``(y, x)`` of each tile of the mosaic."""
    tiles = np.arange(k)
    return np.stack([(tiles // cols) * window, (tiles % cols) * window], axis=1)


def _match_spots(
    spots: pd.DataFrame, true_local: np.ndarray, window: int, cols: int, match_radius_px: float
) -> np.ndarray:
    """Per tile, the row of ``spots`` nearest the true position within ``match_radius_px``, else -1.

    ``spots``: localizations in mosaic pixels (``y_px``, ``x_px``); a localization belongs
    to the tile of the pixel under it. ``true_local`` ``(K, 2)``: true positions in tile
    pixels. Returns ``(K,)`` int64 row indices.
    """
    k = len(true_local)
    chosen = np.full(k, -1, dtype=np.int64)
    yx = spots[["y_px", "x_px"]].to_numpy(dtype=np.float64)
    if not len(yx):
        return chosen
    pixel = np.floor(yx + 0.5)
    ok = np.isfinite(pixel).all(axis=1)
    pixel = np.where(ok[:, None], pixel, -1).astype(np.int64)
    ok &= (pixel >= 0).all(axis=1) & (pixel[:, 1] < cols * window)
    tile = (pixel[:, 0] // window) * cols + pixel[:, 1] // window
    ok &= tile < k
    rows, tile = np.flatnonzero(ok), tile[ok]
    dist = np.hypot(*(yx[rows] - _tile_origins(k, window, cols)[tile] - true_local[tile]).T)
    close = dist <= match_radius_px
    rows, tile, dist = rows[close], tile[close], dist[close]
    order = np.lexsort((dist, tile))
    first_tiles, first = np.unique(tile[order], return_index=True)
    chosen[first_tiles] = rows[order[first]]
    return chosen


def _tile_spots(
    mosaic: np.ndarray, true_local: np.ndarray, window: int, cols: int, acquisition: Acquisition,
    settings: SampleSettings,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One localization per tile of a mosaic (ADU): the pipeline's spot path, else a fit at the true pixel.

    Returns the ``(K,)`` arrays :data:`_SPOT_FIELDS` (``y_px, x_px`` in mosaic pixels) and
    the ``(K,)`` ``detected`` flags.
    """
    k = len(true_local)
    spots = locate_frame(mosaic, acquisition, settings.detection)
    row = _match_spots(spots, true_local, window, cols, settings.match_radius_px)
    detected = row >= 0
    out = {name: np.empty(k, dtype=spots[name].dtype) for name in _SPOT_FIELDS}
    for name in _SPOT_FIELDS:
        out[name][detected] = spots[name].to_numpy()[row[detected]]
    missed = np.flatnonzero(~detected)
    if len(missed):
        # a missed particle is fitted at the pixel under its true position
        pixel = np.clip(np.floor(true_local[missed] + 0.5).astype(np.int64), 0, window - 1)
        fits = localize_frame(mosaic, _tile_origins(k, window, cols)[missed] + pixel, acquisition)
        for name in _SPOT_FIELDS:
            out[name][missed] = fits[name].to_numpy()
    return out, detected


def _neighbour_rows(
    trajectories: Trajectories, neighbours: Trajectories | None, neighbour_index: Any
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per flat frame ``(N*T,)`` the row of the neighbour's sub-positions, or -1 (None: no neighbours)."""
    if neighbours is None:
        return None, None
    n, t = trajectories.n_tracks, trajectories.n_frames
    idx = np.asarray(neighbour_index, dtype=np.int64).reshape(-1)
    if neighbours.n_frames != t or neighbours.n_tracks != len(idx):
        raise SimulationError(f"neighbours must be {len(idx)} trajectories of {t} frames, got "
                              f"{neighbours.n_tracks} of {neighbours.n_frames}")
    if len(np.unique(idx)) != len(idx) or (len(idx) and (idx.min() < 0 or idx.max() >= n)):
        raise SimulationError(f"neighbour_index must hold distinct sample indices in [0, {n})")
    if neighbours.substep_positions_px.shape[2] != trajectories.substep_positions_px.shape[2]:
        raise SimulationError("neighbours must have as many sub-steps per frame as the trajectories")
    row_of = np.full((n, t), -1, dtype=np.int64)
    row_of[idx] = np.arange(len(idx) * t, dtype=np.int64).reshape(len(idx), t)
    sub = neighbours.substep_positions_px
    return row_of.reshape(n * t), sub.reshape((len(idx) * t,) + sub.shape[2:])


def samples_from_trajectories(
    trajectories: Trajectories,
    rng: np.random.Generator | int | None = None,
    *,
    settings: SampleSettings | None = None,
    photons_per_frame: Any = None,
    neighbours: Trajectories | None = None,
    neighbour_index: Any = None,
) -> SampleBatch:
    """Render trajectories and run the pipeline's spot path and patch cutting on them.

    Parameters
    ----------
    trajectories
        Simulated trajectories (their ``acquisition`` is used throughout).
    rng
        Generator or seed for the camera noise.
    settings
        Patch and window sizes, detection settings, match radius
        (:class:`SampleSettings`; ``None``: the defaults).
    photons_per_frame
        Signal photons per frame (number or ``(N, T)``); ``None``: the acquisition's.
    neighbours, neighbour_index
        Optional second particles: ``neighbours`` holds ``M`` trajectories of the same
        length in the same image coordinates, ``neighbour_index`` ``(M,)`` the sample each
        one joins (distinct indices). Their light (the acquisition's photons per frame) is
        added to those samples' windows before the camera noise; labels are unchanged.

    Returns
    -------
    SampleBatch
    """
    acq = trajectories.acquisition
    gen = as_generator(rng)
    settings = settings if settings is not None else SampleSettings()
    patch_size, window_size, match_radius_px = settings.patch_size, settings.window_size, settings.match_radius_px
    if int(patch_size) != patch_size or patch_size < 3 or patch_size % 2 == 0:
        raise SimulationError(f"patch_size must be an odd whole number >= 3, got {patch_size!r}")
    margin = max(4, int(math.ceil(4 * acq.psf_sigma_px)))
    window = int(window_size) if window_size is not None else patch_size + 2 * margin
    if window < patch_size:
        raise SimulationError(f"window_size ({window}) must be at least patch_size ({patch_size})")
    n, t = trajectories.n_tracks, trajectories.n_frames
    true_pos = trajectories.frame_positions_px  # (N, T, 2)
    centre = np.floor(true_pos + 0.5).astype(np.int64)
    origin = centre - window // 2
    sub = trajectories.substep_positions_px

    k_total = n * t
    flat_origin = origin.reshape(k_total, 2)
    flat_true = true_pos.reshape(k_total, 2)
    photons_flat = None
    if photons_per_frame is not None:
        photons_flat = np.broadcast_to(np.asarray(photons_per_frame, dtype=np.float32), (n, t)).reshape(k_total)

    patches = np.empty((k_total, patch_size, patch_size), dtype=np.float32)
    outside = np.empty((k_total, patch_size, patch_size), dtype=bool)
    offsets = np.empty((k_total, 2), dtype=np.float64)
    loc = np.empty((k_total, 2), dtype=np.float64)
    detected = np.empty(k_total, dtype=bool)
    fit_ok = np.empty(k_total, dtype=bool)
    photons = np.empty(k_total, dtype=np.float32)
    background = np.empty(k_total, dtype=np.float32)
    precision = np.empty(k_total, dtype=np.float32)

    sub_flat = sub.reshape((k_total,) + sub.shape[2:])
    neighbour_of, neighbour_sub = _neighbour_rows(trajectories, neighbours, neighbour_index)
    optics = settings.optics
    # drawn only for a fixed-pattern camera, so that other datasets stay the same
    pattern_key = int(gen.integers(0, 2**40)) if optics is not None and optics.has_fixed_pattern else None
    for a in range(0, k_total, _MAX_TILES_PER_MOSAIC):
        b = min(a + _MAX_TILES_PER_MOSAIC, k_total)
        expected = render_windows(
            sub_flat[a:b], flat_origin[a:b], window, acq, None if photons_flat is None else photons_flat[a:b],
            settings.optics,
        )
        if neighbour_of is not None:
            rows = neighbour_of[a:b]
            has = np.flatnonzero(rows >= 0)
            if len(has):
                expected[has] += render_windows(
                    neighbour_sub[rows[has]], flat_origin[a:b][has], window, acq, None, settings.optics
                )
        windows_adu = camera_image(expected, acq, gen, optics=settings.optics)  # (K, W, W) uint16
        if pattern_key is not None:  # per-pixel gain and offset, fixed in the movie under each track
            windows_adu = apply_fixed_pattern(windows_adu, flat_origin[a:b], np.arange(a, b) // t, acq,
                                              optics.pixel_gain_cv, optics.pixel_offset_sd_e, pattern_key)
        mosaic, cols = _windows_mosaic(windows_adu)
        table, found = _tile_spots(mosaic, flat_true[a:b] - flat_origin[a:b], window, cols, acq, settings)
        tiles = np.arange(b - a)
        local = np.stack([table["y_px"], table["x_px"]], axis=1) - _tile_origins(b - a, window, cols)
        p, m, o = crop_patches(acq.adu_to_photons(windows_adu), local, patch_size, image_index=tiles)
        patches[a:b], outside[a:b], offsets[a:b] = p, m, o
        loc[a:b] = local + flat_origin[a:b]
        detected[a:b] = found
        fit_ok[a:b] = table["fit_ok"]
        photons[a:b] = table["photons"]
        background[a:b] = table["background"]
        precision[a:b] = table["loc_precision_nm"]

    positions = loc.reshape(n, t, 2)
    disp, _ = displacements_from_positions(positions)
    cps = trajectories.changepoint_frames
    width = max([len(c) for c in cps] + [1])
    cp_array = np.full((n, width), -1, dtype=np.int64)
    for i, c in enumerate(cps):
        cp_array[i, : len(c)] = c
    return SampleBatch(
        patches=patches.reshape(n, t, patch_size, patch_size),
        displacements=disp.astype(np.float32),
        positions_px=positions,
        subpixel_offset_px=offsets.reshape(n, t, 2).astype(np.float32),
        outside_mask=outside.reshape(n, t, patch_size, patch_size),
        D1_um2_s=np.asarray(trajectories.D1_um2_s, dtype=np.float32),
        D2_um2_s=np.asarray(trajectories.D2_um2_s, dtype=np.float32),
        theta_deg=np.asarray(trajectories.theta_deg, dtype=np.float32),
        state=np.asarray(trajectories.state, dtype=np.int8),
        true_positions_px=true_pos,
        changepoint_frames=cp_array,
        detected=detected.reshape(n, t),
        fit_ok=fit_ok.reshape(n, t),
        photons=photons.reshape(n, t),
        background=background.reshape(n, t),
        loc_precision_nm=precision.reshape(n, t),
        model=trajectories.model,
        acquisition=acq,
        meta={"patch_size": int(patch_size), "window_size": int(window), "match_radius_px": float(match_radius_px),
              "n_with_neighbour": 0 if neighbours is None else int(neighbours.n_tracks)},
    )


def make_samples(
    model: str,
    n: int,
    n_frames: int = 30,
    acquisition: Acquisition | None = None,
    seed: int | np.random.Generator | None = None,
    *,
    settings: SampleSettings | None = None,
    neighbour_fraction: float = 0.0,
    neighbour_distance_px: tuple[float, float] = (1.5, 6.0),
) -> SampleBatch:
    """Simulate ``n`` tracks of a motion model and turn them into samples (tracking path).

    Parameters
    ----------
    model
        A motion model of :data:`~napari_spt_diffusion.simulation.motion_models.MOTION_MODELS`:
        ``"aniso"`` (seed-aniso), ``"binding"`` (seed-binding) or ``"twostate"``
        (seed-twostate), as in docs/protocols.md; its trajectory function draws the tracks.
    n
        Number of samples.
    n_frames
        Frames per sample.
    acquisition
        Acquisition; ``None`` for the standard one.
    seed
        Seed of the generator (a protocol test set: the model's ``MotionModel.test_seed``),
        or a ``numpy.random.Generator`` to draw from.
    settings
        Patch and window sizes, detection settings, match radius, optics and the motion prior
        (:class:`SampleSettings`).
    neighbour_fraction
        Share of the samples (each drawn with this probability) that get a second
        particle of the same motion model (its own D, anisotropy and angle), started at a
        distance drawn uniformly from ``neighbour_distance_px`` (px) in a uniform
        direction from the first one's start; see the module docstring. 0 (default): the
        isolated particles of the protocols, drawn exactly as without this option.

    Returns
    -------
    SampleBatch
        The random numbers are drawn in a fixed order (start offsets, trajectories,
        neighbours when asked for, camera noise), so a seed reproduces the set exactly.
    """
    simulate = get_motion_model(model).simulate
    acq = acquisition if acquisition is not None else Acquisition()
    gen = as_generator(seed)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise SimulationError(f"n must be a whole number >= 1, got {n!r}")
    n = int(n)
    # Random start within a pixel, so that the sub-pixel phase of slow particles is uniform.
    start = gen.uniform(-0.5, 0.5, (n, 2))
    motion_prior = None if settings is None else settings.motion_prior
    if motion_prior is None:
        traj = simulate(n, n_frames, acq, gen, start_px=start)
    elif model != "aniso":
        raise SimulationError(f"a motion prior applies to the 'aniso' motion model only, not {model!r}")
    else:
        traj = simulate(n, n_frames, acq, gen, start_px=start, **motion_prior.draw(n, gen))
    neighbours, index = _draw_neighbours(model, traj, gen, neighbour_fraction, neighbour_distance_px)
    batch = samples_from_trajectories(traj, gen, settings=settings, neighbours=neighbours, neighbour_index=index)
    batch.meta.update({"seed": None if isinstance(seed, np.random.Generator) else seed, "model": model,
                       "n_frames": int(n_frames),
                       "neighbour_fraction": float(neighbour_fraction),
                       "neighbour_distance_px": [float(v) for v in neighbour_distance_px]})
    if motion_prior is not None:
        batch.meta["motion_prior"] = motion_prior.to_dict()
    return batch


def _draw_neighbours(
    model: str, traj: Trajectories, gen: np.random.Generator, fraction: float, distance_px: tuple[float, float]
) -> tuple[Trajectories | None, np.ndarray | None]:
    """Second particles for a random share ``fraction`` of the samples (none drawn when 0)."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise SimulationError(f"neighbour_fraction must be in [0, 1], got {fraction!r}")
    lo, hi = (float(v) for v in distance_px)
    if not 0.0 <= lo <= hi:
        raise SimulationError(f"neighbour_distance_px must be (min, max) with 0 <= min <= max, got {distance_px!r}")
    if fraction == 0.0:
        return None, None
    index = np.flatnonzero(gen.random(traj.n_tracks) < fraction)
    if len(index) == 0:
        return None, None
    r = gen.uniform(lo, hi, len(index))
    phi = gen.uniform(0.0, 2.0 * math.pi, len(index))
    start = traj.substep_positions_px[index, 0, 0] + np.stack([r * np.sin(phi), r * np.cos(phi)], axis=1)
    others = get_motion_model(model).simulate(len(index), traj.n_frames, traj.acquisition, gen, start_px=start)
    return others, index


# ------------------------------------------------------------------------------- I/O

_ARRAY_FIELDS = tuple(f.name for f in fields(SampleBatch) if f.name not in ("model", "acquisition", "meta"))


def save_samples(path: str | os.PathLike[str], batch: SampleBatch, overwrite: bool = False) -> Path:
    """Write a :class:`SampleBatch` to ``.npz`` atomically (temporary file, then rename).

    Parameters
    ----------
    path
        Destination; ``.npz`` is appended when missing.
    batch
        Samples to write.
    overwrite
        Replace an existing file; otherwise an existing file raises ``FileExistsError``.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    out = Path(path)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    header = {
        "format_version": _FORMAT_VERSION,
        "model": batch.model,
        "acquisition": batch.acquisition.to_dict(),
        "meta": batch.meta,
    }
    arrays = {name: getattr(batch, name) for name in _ARRAY_FIELDS}
    with atomic_path(out) as tmp, open(tmp, "xb") as fh:
        np.savez(fh, header=np.array(json.dumps(header)), **arrays)
    return out


def load_samples(path: str | os.PathLike[str]) -> SampleBatch:
    """Read a :class:`SampleBatch` written by :func:`save_samples`.

    Raises
    ------
    SimulationError
        When the file is not a sample file of a known version.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {name: data[name] for name in _ARRAY_FIELDS}
    except (KeyError, ValueError, OSError) as exc:
        raise SimulationError(f"{path} is not a readable sample file ({exc})") from exc
    if header.get("format_version") != _FORMAT_VERSION:
        raise SimulationError(f"{path} has sample format {header.get('format_version')!r}, expected {_FORMAT_VERSION}")
    return SampleBatch(
        **arrays,
        model=header["model"],
        acquisition=Acquisition.from_dict(header["acquisition"]),
        meta=header.get("meta", {}),
    )
