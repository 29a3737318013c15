"""The guard as ``track`` runs it, over a benchmark's test tracks (bench_grid.py, bench_intervals.py).

``pipeline.guard_model`` works on the pipeline's track estimates; the benchmarks hold their tracks as
arrays. :func:`guard_decision` makes the same decision from those: the population test of the model's
mean diffusivity against the CVE of each track (``estimation.guard``) with the acquisition check of the
model's card in the model's units (``psf_units.model_acquisition``). :func:`as_reported` applies what
``track`` then does to an accepted model's values: the rescale of ``estimation.rescale``.
"""

from __future__ import annotations

import numpy as np

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import guard
from napari_spt_diffusion.estimation import psf_units as pu
from napari_spt_diffusion.estimation.classical import cve_tensor_batch
from napari_spt_diffusion.estimation.estimator import check_acquisition
from napari_spt_diffusion.estimation.rescale import rescale_factor, residual_bias


def guard_decision(d_model_px2: np.ndarray, positions_px: np.ndarray, loc_var_px2: np.ndarray,
                   acquisition: Acquisition, card: dict, scale: float) -> tuple[guard.GuardDecision, list[str]]:
    """The guard's decision and the card's acquisition messages (empty: inside its range).

    ``d_model_px2``: ``(N,)`` the model's mean diffusivity per track (px^2/frame); ``positions_px``:
    ``(N, T, 2)`` localized positions, NaN rows for missing frames; ``loc_var_px2``: ``(N,)`` mean squared
    localization precision; ``acquisition``: the movie's as ``track`` would judge it (the PSF width told or
    calibrated); ``scale``: the PSF-units scale the model ran at.
    """
    with np.errstate(all="ignore"):
        cve = cve_tensor_batch(positions_px, acquisition)
    bias = guard.population_ratio(d_model_px2, 0.5 * np.trace(cve["tensor_px2_frame"], axis1=1, axis2=2),
                                  loc_var_px2, cve["n_displacements"], blur=acquisition.blur_coefficient)
    judged = pu.model_acquisition(acquisition, scale, pu.card_psf_sigma_px(card))
    messages = check_acquisition(card, judged, virtual_pixels=judged is not acquisition)
    return guard.decide(bias, messages), messages


def as_reported(est: dict[str, np.ndarray], decision: guard.GuardDecision
                ) -> tuple[dict[str, np.ndarray], float | None, tuple[float, float]]:
    """The model's estimates as ``track`` reports them where the guard accepts the model: divided by the
    guard's factor where it shows a bias beyond 5 % (``estimation.rescale``), with the interval of the bias
    left to widen the D intervals by."""
    factor = rescale_factor(decision)
    if factor is not None:
        est = {**est, "D1_um2_s": est["D1_um2_s"] / factor, "D2_um2_s": est["D2_um2_s"] / factor}
    return est, factor, residual_bias(decision, factor)
