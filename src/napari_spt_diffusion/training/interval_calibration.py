"""Calibration of the per-track intervals (:mod:`~napari_spt_diffusion.estimation.intervals`).

A bundled estimator's :class:`~napari_spt_diffusion.estimation.intervals.IntervalTable` is
measured on simulated tracks made through the pipeline's spot path
(:func:`~.samples.make_samples`), at acquisitions drawn from the range the estimator is
meant for, with seeds that no training or test set uses. Each 30-frame track is cut to a
random length of 5-30 frames (the model sees only those frames, as a short track in the
pipeline), so the table covers every length a window can have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..acquisition import Acquisition
from ..estimation import psf_units
from ..estimation.classical import cve_tensor_batch
from ..estimation.intervals import IntervalTable, fit_interval_table
from ..estimation.tensor import theta_from_sin_cos_2theta
from .acquisition_ranges import AcquisitionRange
from .motion_priors import MotionPrior
from .samples import SampleBatch, SampleSettings, make_samples

__all__ = ["CalibrationSet", "calibration_set", "model_estimates", "classical_estimates", "calibrate"]

#: Seeds of interval calibration sets: ``INTERVAL_SEED + i`` for the i-th chunk.
INTERVAL_SEED = 5100
MIN_LENGTH = 5
#: The tensors of the ``aniso`` calibration tracks: each track with probability 1/2 as the motion model draws it,
#: else isotropic with D log-uniform over the motion model's D1 range, 0.05-6 um^2/s. Calibrated on the motion
#: model's tracks alone, whose ``D2 / D1`` is uniform over 0.1-1, the D intervals of an isotropic track (free
#: diffusion, what most movies hold) were centred too low for D1 and too high for D2: a short track's sorted
#: eigenvalues split, and its estimated D1 reads above the truth. Since 2026-12-07.
ANISO_CALIBRATION_PRIOR = MotionPrior("isotropic_half", broad_share=0.5, d1_range_um2_s=(0.05, 6.0),
                                      isotropic_share=1.0)


class CalibrationSet:
    """Simulated tracks cut to random lengths, with their truth (one acquisition per chunk).

    Attributes
    ----------
    batches
        ``[(SampleBatch, lengths (N,))]`` per chunk.
    """

    def __init__(self, batches: list[tuple[SampleBatch, np.ndarray]]) -> None:
        self.batches = batches

    def truth(self) -> dict[str, np.ndarray]:
        """True ``D1_um2_s, D2_um2_s, theta_deg`` per track (mean over the kept frames)."""
        parts = []
        for batch, lengths in self.batches:
            keep = np.arange(batch.D1_um2_s.shape[1])[None, :] < lengths[:, None]
            d1 = np.where(keep, batch.D1_um2_s, np.nan)
            d2 = np.where(keep, batch.D2_um2_s, np.nan)
            parts.append({"D1_um2_s": np.nanmean(d1, axis=1), "D2_um2_s": np.nanmean(d2, axis=1),
                          "theta_deg": batch.theta_deg[:, 0].astype(float)})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(n_frames, loc_var_px2, um2_s_per_px2_frame)`` per track."""
        n, var, scale = [], [], []
        for batch, lengths in self.batches:
            acq = batch.acquisition
            prec = np.asarray(batch.loc_precision_nm, float) / acq.pixel_size_nm
            keep = np.arange(prec.shape[1])[None, :] < lengths[:, None]
            with np.errstate(all="ignore"):
                var.append(np.nanmean(np.where(keep, prec**2, np.nan), axis=1))
            n.append(lengths.astype(float))
            scale.append(np.full(len(lengths), acq.um2_s_per_px2_frame))
        return np.concatenate(n), np.concatenate(var), np.concatenate(scale)


def calibration_set(
    model: str,
    n_tracks: int,
    base: Acquisition,
    acquisition_range: AcquisitionRange | None,
    chunk: int = 250,
    seed: int = INTERVAL_SEED,
    patch_size: int = 11,
    motion_prior: MotionPrior | None = None,
) -> CalibrationSet:
    """``n_tracks`` tracks of motion model ``model`` in chunks of ``chunk``, each chunk at an
    acquisition of ``acquisition_range`` (``None``: all at ``base``), with the range's PSF shapes
    and cameras where it varies them, cut as ``patch_size`` px patches (larger than 11 for a model
    run in PSF units, ``psf_units.source_patch_size``). ``motion_prior`` (``aniso`` only,
    :mod:`.motion_priors`): the tracks' tensors drawn from it instead of the motion model's own
    (the ``aniso`` tables use :data:`ANISO_CALIBRATION_PRIOR`)."""
    batches = []
    for i, start in enumerate(range(0, n_tracks, chunk)):
        rng = np.random.default_rng([seed, i])
        acq = base if acquisition_range is None else acquisition_range.draw(rng, base)
        optics = None
        if acquisition_range is not None and acquisition_range.varies_optics:
            optics = acquisition_range.draw_optics(rng)
        n = min(chunk, n_tracks - start)
        settings = (None if optics is None and patch_size == 11 and motion_prior is None
                    else SampleSettings(patch_size=patch_size, optics=optics, motion_prior=motion_prior))
        batch = make_samples(model, n, n_frames=30, acquisition=acq, seed=rng, settings=settings)
        lengths = rng.integers(MIN_LENGTH, batch.patches.shape[1] + 1, size=n)
        batches.append((batch, lengths))
    return CalibrationSet(batches)


def model_estimates(module: Any, cal: CalibrationSet, batch_size: int = 512,
                    scale: float | Callable[[Acquisition], float] = 1.0,
                    patch_size: int = 11) -> dict[str, np.ndarray]:
    """A sequence model's ``D1_um2_s, D2_um2_s, theta_deg`` on the cut tracks (``(N,)`` each, D in
    um^2/s of the tracks' own acquisition).

    ``scale``: virtual px per movie px of a model run in units of the PSF
    (:mod:`~napari_spt_diffusion.estimation.psf_units`): the sets' patches, which must then be
    larger than the model's ``patch_size`` (``psf_units.source_patch_size``), are resampled and
    the displacements scaled, as the pipeline does, and the model's D is divided by ``scale^2``.
    At ``scale = 1`` the centre ``patch_size`` pixels are used (the identity for 11-px sets). A
    callable gives each chunk's scale from its acquisition (``psf_units.scale_for(card, acq, mode)``).
    """
    out: dict[str, list[np.ndarray]] = {"D1_um2_s": [], "D2_um2_s": [], "theta_deg": []}
    with torch.no_grad():
        for batch, lengths in cal.batches:
            acq = batch.acquisition
            chunk_scale = float(scale(acq)) if callable(scale) else float(scale)
            t = batch.patches.shape[1]
            patches, disp = psf_units.batch_model_inputs(batch.patches, batch.subpixel_offset_px, batch.positions_px,
                                                         batch.displacements, chunk_scale, patch_size)
            for a in range(0, len(lengths), batch_size):
                sl = slice(a, a + batch_size)
                valid = torch.from_numpy(np.arange(t)[None, :] < lengths[sl, None])
                p = torch.from_numpy(np.ascontiguousarray(patches[sl], dtype=np.float32))
                d = torch.from_numpy(np.ascontiguousarray(disp[sl], dtype=np.float32))
                y = module(p, d, valid).numpy().astype(np.float64)
                if y.ndim == 3:  # pointwise model: the mean over the kept frames
                    y = np.nanmean(np.where(valid.numpy()[..., None], y, np.nan), axis=1)
                for key, column in (("D1_um2_s", 0), ("D2_um2_s", 1)):
                    out[key].append(acq.diffusion_to_um2_s(psf_units.d_to_movie_px2(y[:, column], chunk_scale)))
                out["theta_deg"].append(theta_from_sin_cos_2theta(y[:, 2], y[:, 3]))
    return {k: np.concatenate(v) for k, v in out.items()}


def classical_estimates(cal: CalibrationSet) -> dict[str, np.ndarray]:
    """The CVE tensor (the pipeline's classical fallback) on the cut tracks."""
    parts = []
    for batch, lengths in cal.batches:
        pos = np.asarray(batch.positions_px, float).copy()
        pos[np.arange(pos.shape[1])[None, :] >= lengths[:, None]] = np.nan
        with np.errstate(all="ignore"):
            cve = cve_tensor_batch(pos, batch.acquisition)
        parts.append({k: np.asarray(cve[k], float) for k in ("D1_um2_s", "D2_um2_s", "theta_deg")})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def calibrate(estimate: dict[str, np.ndarray], cal: CalibrationSet, method: str,
              description: dict[str, Any]) -> IntervalTable:
    """The interval table of ``estimate`` (made on ``cal``), with ``description`` as its provenance."""
    n_frames, loc_var, scale = cal.features()
    table = fit_interval_table(estimate, cal.truth(), n_frames, loc_var, scale, method)
    return IntervalTable(table.method, table.d_log_quantiles, table.theta_halfwidth_deg, table.counts,
                         {**description, "n_tracks": int(len(n_frames))})
