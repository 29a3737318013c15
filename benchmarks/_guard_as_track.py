"""The guard as ``track`` runs it, over a benchmark's test tracks (bench_grid.py, bench_intervals.py).

``pipeline.guard_model`` works on the pipeline's track estimates; the benchmarks hold their tracks as
arrays. :func:`guard_decision` makes the same decision from those: the population test of the model's
mean diffusivity against the CVE of each track (``estimation.guard``) with the acquisition check of the
model's card in the model's units (``psf_units.model_acquisition``), over the tracks inside the range of D the model was
trained on (:func:`range_outside`, ``estimation.model_range``: ``track`` leaves the others out of the guard).
:func:`as_reported` applies what ``track`` then does to an accepted model's values: the rescale of
``estimation.rescale``, and the CVE tensor for the tracks outside the model's range of D.
"""

from __future__ import annotations

import numpy as np

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import guard, model_range
from napari_spt_diffusion.estimation import psf_units as pu
from napari_spt_diffusion.estimation.classical import cve_tensor_batch
from napari_spt_diffusion.estimation.estimator import check_acquisition
from napari_spt_diffusion.estimation.rescale import rescale_factor, residual_bias


def range_outside(positions_px: np.ndarray, loc_var_px2: np.ndarray, acquisition: Acquisition, card: dict,
                  scale: float, d_model_um2_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sides, left_out)``, ``(N,)`` each: +1 / -1 for the tracks whose CVE shows them above / below the range
    of D the model was trained on (0: inside), as ``track`` tests them (``estimation.model_range.check_tracks``),
    and the tracks the guard's population test leaves out (``RangeCheck.left_out_of_guard``, from the model's
    mean diffusivity per track ``d_model_um2_s``); other arguments as :func:`guard_decision`."""
    with np.errstate(all="ignore"):
        cve = cve_tensor_batch(positions_px, acquisition)
    d_cve = 0.5 * np.trace(cve["tensor_px2_frame"], axis1=1, axis2=2)
    d_median = model_range.median_step_d_px2(positions_px, loc_var_px2, acquisition.blur_coefficient)
    check = model_range.check_tracks(np.arange(len(d_cve)), d_cve, loc_var_px2, cve["n_displacements"], acquisition,
                                     card, scale, d_median_px2=d_median)
    sides, left_out = np.zeros(len(d_cve), np.int8), np.zeros(len(d_cve), bool)
    if check is not None and check.outside:
        sides[list(check.above)], sides[list(check.below)] = 1, -1
        d_model = np.asarray(d_model_um2_s, float)
        # as the stage: the guard over the tracks not flagged, then the tracks left out of the guard
        first = guard_decision(acquisition.diffusion_to_px2_per_frame(d_model), positions_px, loc_var_px2,
                               acquisition, card, scale, sides != 0)[0]
        left = model_range.guard_left_out(check, dict(enumerate(d_model.tolist())),
                                          (first.bias_factor, first.bias_low, first.bias_high, first.n_tracks))
        left_out[list(left)] = True
    return sides, left_out


def guard_decision(d_model_px2: np.ndarray, positions_px: np.ndarray, loc_var_px2: np.ndarray,
                   acquisition: Acquisition, card: dict, scale: float,
                   outside: np.ndarray | None = None) -> tuple[guard.GuardDecision, list[str]]:
    """The guard's decision and the card's acquisition messages (empty: inside its range).

    ``d_model_px2``: ``(N,)`` the model's mean diffusivity per track (px^2/frame); ``positions_px``:
    ``(N, T, 2)`` localized positions, NaN rows for missing frames; ``loc_var_px2``: ``(N,)`` mean squared
    localization precision; ``acquisition``: the movie's as ``track`` would judge it (the PSF width told or
    calibrated); ``scale``: the PSF-units scale the model ran at; ``outside``: ``(N,)`` the tracks the
    population test leaves out (:func:`range_outside`'s second array; ``None``: none).
    """
    with np.errstate(all="ignore"):
        cve = cve_tensor_batch(positions_px, acquisition)
    used = np.ones(len(d_model_px2), bool) if outside is None else ~np.asarray(outside, bool)
    d_cve = 0.5 * np.trace(cve["tensor_px2_frame"], axis1=1, axis2=2)
    bias = guard.population_ratio(np.asarray(d_model_px2)[used], d_cve[used], np.asarray(loc_var_px2)[used],
                                  cve["n_displacements"][used], blur=acquisition.blur_coefficient)
    judged = pu.model_acquisition(acquisition, scale, pu.card_psf_sigma_px(card))
    messages = check_acquisition(card, judged, virtual_pixels=judged is not acquisition)
    return guard.decide(bias, messages), messages


def as_reported(est: dict[str, np.ndarray], decision: guard.GuardDecision
                ) -> tuple[dict[str, np.ndarray], float | None, tuple[float, float]]:
    """The model's estimates as ``track`` reports them where the guard accepts the model: divided by the
    guard's factor where it shows a bias beyond 5 % (``estimation.rescale``), with the interval of the bias
    left to widen the D intervals by (the tracks outside the model's range: :func:`with_classical`)."""
    factor = rescale_factor(decision)
    if factor is not None:
        est = {**est, "D1_um2_s": est["D1_um2_s"] / factor, "D2_um2_s": est["D2_um2_s"] / factor}
    return est, factor, residual_bias(decision, factor)


def classical_values(positions_px: np.ndarray, acquisition: Acquisition, sides: np.ndarray) -> dict[str, np.ndarray]:
    """What ``track`` reports for the tracks outside the model's range (``stage_guard.classical_for``): the CVE
    tensor's D1, D2 and theta; for those below the range (``sides`` -1) D1 = D2 = the isotropic CVE, clipped
    at 0."""
    with np.errstate(all="ignore"):
        cve = cve_tensor_batch(positions_px, acquisition)
        iso = np.clip(acquisition.diffusion_to_um2_s(0.5 * np.trace(cve["tensor_px2_frame"], axis1=1, axis2=2)),
                      0.0, None)
    below = np.asarray(sides) < 0
    return {"D1_um2_s": np.where(below, iso, np.asarray(cve["D1_um2_s"], float)),
            "D2_um2_s": np.where(below, iso, np.asarray(cve["D2_um2_s"], float)),
            "theta_deg": np.asarray(cve["theta_deg"], float)}


def with_classical(est: dict[str, np.ndarray], positions_px: np.ndarray, acquisition: Acquisition,
                   sides: np.ndarray) -> dict[str, np.ndarray]:
    """Estimates (``(N,)`` per track, or ``(N, T)`` per frame) with :func:`classical_values` where the track lies
    outside the model's range (``sides`` != 0, ``(N,)``), as ``track`` reports them."""
    outside = np.asarray(sides) != 0
    if not outside.any():
        return est
    classical = classical_values(positions_px, acquisition, sides)
    out = dict(est)
    for key in ("D1_um2_s", "D2_um2_s", "theta_deg"):
        value = np.asarray(est[key], float)
        mask = outside.reshape(-1, *([1] * (value.ndim - 1)))
        out[key] = np.where(mask, classical[key].reshape(mask.shape), value)
    return out
