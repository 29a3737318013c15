"""The checks between the model's track estimates and the reported values: the guard, the range check.

Called by :func:`~napari_spt_diffusion.estimation_stage.estimate_stage`: :func:`guard_model` (is the model biased
on this movie's tracks? :mod:`~.estimation.guard`), :func:`range_check` (which tracks lie outside the range of D the
model was trained on? :mod:`~.estimation.model_range`) and :func:`classical_for` (the CVE tensor standing in for
the model's estimate of a track).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from .acquisition import Acquisition
from .estimation import guard, model_range
from .estimation.estimator import Estimator, TrackEstimate

__all__ = ["guard_model", "range_check", "classical_for"]


def guard_model(
    estimates: list[TrackEstimate],
    classical: dict[int, dict[str, float]],
    acquisition: Acquisition,
    estimator: Estimator,
    acquisition_messages: list[str],
    loc_var_px2: Mapping[int, float],
) -> guard.GuardDecision:
    """The guard's verdict on the model's estimates of this movie's tracks.

    Compares the model's mean diffusivity ``(D1 + D2) / 2`` per track with the unclipped
    CVE of the same track (``classical[id]["D_cve_raw_px2"]``, see
    :func:`_classical_estimates`) over the whole population (:mod:`~.estimation.guard`);
    ``loc_var_px2`` the mean squared localization precision (px^2) of each track.
    """
    used = [e for e in estimates if e.method == "model" and e.track_id in classical]
    d_model = acquisition.diffusion_to_px2_per_frame(
        np.array([0.5 * (e.track_D1_um2_s + e.track_D2_um2_s) for e in used], dtype=float))
    d_cve = np.array([classical[e.track_id]["D_cve_raw_px2"] for e in used], dtype=float)
    loc_var = np.array([loc_var_px2.get(e.track_id, np.nan) for e in used], dtype=float)
    n_disp = np.array([classical[e.track_id]["n_displacements"] for e in used], dtype=float)
    bias = guard.population_ratio(d_model, d_cve, loc_var, n_disp, blur=acquisition.blur_coefficient)
    return guard.decide(bias, acquisition_messages, model_name=estimator.model_name)


def range_check(
    estimates: list[TrackEstimate], classical: dict[int, dict[str, float]], loc_var_px2: Mapping[int, float],
    acquisition: Acquisition, estimator: Estimator,
) -> model_range.RangeCheck | None:
    """Which of the model's tracks the CVE shows outside the range of D the model was trained on
    (:mod:`~.estimation.model_range`); ``None`` where its card gives no range."""
    used = [e for e in estimates if e.method == "model" and e.track_id in classical]
    loc_var = np.array([loc_var_px2.get(e.track_id, np.nan) for e in used], dtype=float)
    step_var = np.array([classical[e.track_id]["step_var_median_px2"] for e in used], dtype=float)
    return model_range.check_tracks(
        [e.track_id for e in used], [classical[e.track_id]["D_cve_raw_px2"] for e in used], loc_var,
        [classical[e.track_id]["n_displacements"] for e in used], acquisition, estimator.card,
        estimator.psf_scale(acquisition),
        d_median_px2=model_range.d_from_step_variance(step_var, loc_var, acquisition.blur_coefficient))


def _rejected(model: TrackEstimate, classical: Mapping[str, Any]) -> TrackEstimate:
    """The CVE tensor of a track standing in for a rejected model's estimate (:func:`_classical_for`)."""
    return classical_for(model, classical, "model_rejected")


def classical_for(model: TrackEstimate, classical: Mapping[str, Any], reason: str, keep: bool = False,
                  isotropic: bool = False) -> TrackEstimate:
    """The CVE tensor of a track standing in for the model's estimate, flagged ``classical`` and ``reason``.

    The CVE needs nothing of the optics or the camera (blur and localization noise cancel),
    so it is the estimate to trust where the model is not; the blur-moment estimator
    would assume the Gaussian PSF of the acquisition (``clipped`` when the tensor was not positive
    definite). ``keep``: the model's estimate, only flagged ``reason``. ``isotropic``: ``D1 = D2`` = the
    track's isotropic CVE (clipped at 0), for a track slower than the model's range, whose CVE tensor is
    mostly noise (its D2 clipped to 0 in most 30-frame tracks of an immobile particle).
    """
    if keep:
        return dataclasses.replace(model, flags=(*model.flags, reason))
    n = len(model.frames)
    d1, d2, theta = (float(classical[k]) for k in ("cve_D1_um2_s", "cve_D2_um2_s", "cve_theta_deg"))
    flags = ["classical", reason]
    if isotropic:
        d1 = d2 = max(float(classical["D_cve_um2_s"]), 0.0)
    elif classical.get("cve_clipped"):
        flags.append("clipped")
    flags += [f for f in model.flags if f == "gaps"]
    return TrackEstimate(
        track_id=model.track_id, frames=model.frames, D1_um2_s=np.full(n, d1), D2_um2_s=np.full(n, d2),
        theta_deg=np.full(n, theta), track_D1_um2_s=d1, track_D2_um2_s=d2, track_theta_deg=theta,
        method="classical", flags=tuple(flags), n_windows=0, pointwise=False,
    )
