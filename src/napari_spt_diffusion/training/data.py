"""Training data: datasets of simulated samples, their cache, targets and augmentation.

A dataset is a dict of arrays as :func:`make_dataset` returns it (``N`` tracks of ``T``
frames, patches ``P x P``)::

    patches        (N, T, P, P) float32  photo-electrons
    displacements  (N, T, 2)    float32  (dy, dx) px between localized positions, row 0 = 0
    valid          (N, T)       bool     True for real frames
    D1_um2_s, D2_um2_s, theta_deg  (N, T) float32 per-frame labels (um^2/s, um^2/s, degrees)
    state          (N, T)       int8     segment index along the track

It is generated once through the tracking path (:func:`.samples.make_samples`) and can be
cached as ``.npz`` with the settings it was made with.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..acquisition import Acquisition
from ..io._atomic import atomic_path, atomic_write_json
from .acquisition_ranges import AcquisitionRange
from .config import TrainingError
from .motion_priors import MotionPrior

__all__ = [
    "Progress",
    "Split",
    "sample_arrays",
    "make_dataset",
    "load_dataset",
    "targets_from_labels",
    "to_split",
    "augment",
]

#: ``progress(fraction in [0, 1], message)`` callback.
Progress = Callable[[float, str], None]

_FIELDS = {"patches": np.float32, "displacements": np.float32, "D1_um2_s": np.float32, "D2_um2_s": np.float32,
           "theta_deg": np.float32, "state": np.int8}


def sample_arrays(batch: Any) -> dict[str, np.ndarray]:
    """The dataset arrays of a ``SampleBatch`` (or of a dict with the same fields).

    A missing ``valid`` (or ``mask``) means every frame is real.
    """

    def get(name: str) -> Any:
        return batch[name] if isinstance(batch, dict) else getattr(batch, name)

    out = {name: np.asarray(get(name), dtype=dtype) for name, dtype in _FIELDS.items()}
    valid = None
    for name in ("valid", "mask"):
        try:
            valid = get(name)
            break
        except (KeyError, AttributeError):
            continue
    n, t = out["patches"].shape[:2]
    out["valid"] = np.ones((n, t), bool) if valid is None else np.asarray(valid, dtype=bool)
    return out


#: Samples per chunk (one acquisition each) when training over an acquisition range.
RANGE_CHUNK = 250


@dataclass(frozen=True)
class DataOptions:
    """What a training set varies beyond its motion model and size.

    Attributes
    ----------
    neighbour_fraction
        Share of samples with a second particle nearby
        (:func:`~napari_spt_diffusion.training.samples.make_samples`).
    acquisition_range
        Draw each chunk's acquisition from this range (None: one acquisition).
    motion_prior
        Draw the ``aniso`` tracks' tensors from this prior (:mod:`.motion_priors`; None: the
        motion model's own).
    """

    neighbour_fraction: float = 0.0
    acquisition_range: AcquisitionRange | None = None
    motion_prior: MotionPrior | None = None


def make_dataset(
    model: str,
    n_samples: int,
    n_frames: int,
    acquisition: Acquisition,
    seed: int,
    progress: Progress | None = None,
    chunk: int = 2000,
    options: DataOptions | None = None,
) -> dict[str, np.ndarray]:
    """Generate ``n_samples`` training samples of ``n_frames`` frames through the tracking path.

    Chunks of ``chunk`` samples get independent child seeds of ``seed``
    (``numpy.random.SeedSequence``), so the result depends on ``chunk`` (fixed) but not on
    how the work is run. ``options`` (:class:`DataOptions`): crowded samples, and an
    acquisition range, with which chunks hold :data:`RANGE_CHUNK` samples and each is
    simulated at its own acquisition drawn from the range (the frame interval stays
    ``acquisition``'s; a range that varies the pixel size gets its chunks' D labels converted
    to ``acquisition``'s pixel size, ``D * (base / chunk pixel)^2``, so that every label means
    the same px^2/frame as the patches show).
    """
    from .samples import SampleSettings, make_samples  # numpy simulator + tracking path, no torch

    options = options or DataOptions()
    neighbour_fraction, acquisition_range = options.neighbour_fraction, options.acquisition_range
    if acquisition_range is not None:
        chunk = RANGE_CHUNK
    children = np.random.SeedSequence(seed).spawn(math.ceil(n_samples / chunk))
    parts: list[dict[str, np.ndarray]] = []
    done = 0
    for child in children:
        n = min(chunk, n_samples - done)
        rng = np.random.default_rng(child)
        acq = acquisition if acquisition_range is None else acquisition_range.draw(rng, acquisition)
        optics = None
        if acquisition_range is not None and acq is not acquisition and acquisition_range.varies_optics:
            optics = acquisition_range.draw_optics(rng)
        settings = (SampleSettings(optics=optics, motion_prior=options.motion_prior)
                    if optics is not None or options.motion_prior is not None else None)
        arrays = sample_arrays(make_samples(model, n, n_frames=n_frames, acquisition=acq, seed=rng,
                                            settings=settings, neighbour_fraction=neighbour_fraction))
        if acq.pixel_size_nm != acquisition.pixel_size_nm:
            # labels at the base pixel size: the same px^2/frame when converted with `acquisition`
            ratio2 = np.float32((acquisition.pixel_size_nm / acq.pixel_size_nm) ** 2)
            arrays["D1_um2_s"] = arrays["D1_um2_s"] * ratio2
            arrays["D2_um2_s"] = arrays["D2_um2_s"] * ratio2
        parts.append(arrays)
        done += n
        if progress is not None:
            progress(done / n_samples, f"generated {done}/{n_samples} {model} samples")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_dataset(
    path: str | os.PathLike[str] | None,
    model: str,
    n_samples: int,
    n_frames: int,
    acquisition: Acquisition,
    seed: int,
    progress: Progress | None = None,
    options: DataOptions | None = None,
) -> dict[str, np.ndarray]:
    """Load a cached ``.npz`` dataset made with the same settings, or make and cache one.

    ``path`` ``None``: make the dataset without caching it. A cache made with other
    settings raises :class:`TrainingError`. Beside a new cache, ``<name>.gen.json`` records
    the settings and the generation time (s).
    """
    meta: dict[str, Any] = {
        "model": model,
        "n_samples": int(n_samples),
        "n_frames": int(n_frames),
        "seed": int(seed),
        "acquisition": acquisition.to_dict(),
    }
    options = options or DataOptions()
    if options.neighbour_fraction:
        meta["neighbour_fraction"] = float(options.neighbour_fraction)
    if options.acquisition_range is not None:
        meta["acquisition_range"] = options.acquisition_range.to_dict()
    if options.motion_prior is not None:
        meta["motion_prior"] = options.motion_prior.to_dict()
    if path is not None and Path(path).is_file():
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["meta"]))
            if stored != meta:
                raise TrainingError(f"dataset {path} was made with other settings ({stored}); "
                                    "delete it or pass another path")
            return {k: z[k] for k in z.files if k != "meta"}
    t0 = time.perf_counter()
    data = make_dataset(model, n_samples, n_frames, acquisition, seed, progress, options=options)
    if path is not None:
        _write_cache(Path(path), data, meta, round(time.perf_counter() - t0, 2))
    return data


def _write_cache(path: Path, data: dict[str, np.ndarray], meta: dict[str, Any], generation_time_s: float) -> None:
    """Write a dataset cache (``.npz`` all or nothing) and its ``.gen.json``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        np.savez(fh, meta=json.dumps(meta), **data)
    atomic_write_json(path.with_suffix(".gen.json"), {**meta, "generation_time_s": generation_time_s})


def targets_from_labels(data: dict[str, np.ndarray], acquisition: Acquisition, kind: str) -> dict[str, torch.Tensor]:
    """Training targets from the labels: log D (px^2/frame), (sin 2theta, cos 2theta), anisotropy.

    Sequence models use the label of the first frame (the track has one state).

    Returns
    -------
    dict
        ``log_d`` ``(N, 2)``, ``angle`` ``(N, 2)``, ``aniso`` ``(N,)`` (sequence) or
        ``(N, T, 2)``, ``(N, T, 2)``, ``(N, T)`` (pointwise); ``aniso = 1 - D2/D1``.
    """
    d1 = np.asarray(acquisition.diffusion_to_px2_per_frame(data["D1_um2_s"]), np.float64)
    d2 = np.asarray(acquisition.diffusion_to_px2_per_frame(data["D2_um2_s"]), np.float64)
    d1 = np.clip(d1, 1e-6, None)
    d2 = np.clip(np.minimum(d2, d1), 1e-6, None)
    th = np.deg2rad(data["theta_deg"].astype(np.float64))
    ang = np.stack([np.sin(2 * th), np.cos(2 * th)], axis=-1)
    aniso = 1.0 - d2 / d1
    if kind == "sequence":
        d1, d2, ang, aniso = d1[:, 0], d2[:, 0], ang[:, 0], aniso[:, 0]

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return {"log_d": tensor(np.stack([np.log(d1), np.log(d2)], axis=-1)), "angle": tensor(ang), "aniso": tensor(aniso)}


@dataclass
class Split:
    """A dataset as tensors: ``patches`` (N, T, P, P), ``disp`` (N, T, 2), ``valid`` (N, T), targets."""

    patches: torch.Tensor
    disp: torch.Tensor
    valid: torch.Tensor
    target: dict[str, torch.Tensor]


def to_split(data: dict[str, np.ndarray], acquisition: Acquisition, kind: str) -> Split:
    """Tensors of a dataset (sharing its memory) and its targets for a model of ``kind``."""
    return Split(
        torch.from_numpy(data["patches"]),
        torch.from_numpy(data["displacements"]),
        torch.from_numpy(data["valid"]),
        targets_from_labels(data, acquisition, kind),
    )


def augment(
    patches: torch.Tensor, disp: torch.Tensor, angle: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random symmetry of the square pixel grid per track: flip y, flip x, transpose.

    Exact for an isotropic PSF. ``patches`` (N, T, P, P) in (y, x), ``disp`` (N, T, 2) as
    (dy, dx) px, ``angle`` (N, 2) or (N, T, 2) as (sin 2theta, cos 2theta). Flipping an axis
    maps theta -> -theta (sin 2theta changes sign); transposition maps theta -> 90 - theta
    (cos 2theta changes sign). Returns the three transformed tensors.
    """
    n = patches.shape[0]
    flips = torch.rand(n, 3, generator=gen) < 0.5
    ang_shape = (n,) + (1,) * (angle.dim() - 1)

    def sel(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view((n,) + (1,) * (a.dim() - 1)), a, b)

    sign_y = torch.tensor([-1.0, 1.0])
    sign_x = torch.tensor([1.0, -1.0])
    swap_c = torch.tensor([1.0, -1.0])
    flip_s = torch.tensor([-1.0, 1.0])
    # flip y
    m = flips[:, 0]
    patches = sel(m, patches.flip(-2), patches)
    disp = sel(m, disp * sign_y, disp)
    angle = sel(m.view(ang_shape), angle * flip_s, angle)
    # flip x
    m = flips[:, 1]
    patches = sel(m, patches.flip(-1), patches)
    disp = sel(m, disp * sign_x, disp)
    angle = sel(m.view(ang_shape), angle * flip_s, angle)
    # transpose
    m = flips[:, 2]
    patches = sel(m, patches.transpose(-1, -2), patches)
    disp = sel(m, disp.flip(-1), disp)
    angle = sel(m.view(ang_shape), angle * swap_c, angle)
    return patches, disp, angle
