"""The model's scale anchored to the movie's classical estimate, where the guard measured a bias.

The guard (:mod:`~.estimation.guard`) measures, over a movie's tracks, the factor ``b`` by which
the model's mean diffusivity differs from the covariance-based estimate (CVE), which is unbiased
whatever the optics and the camera, with a bootstrap confidence interval ``[b_low, b_high]``. A
model it does not reject may still read a movie several percent off (on the independent renderer's
NA 0.8 movies ``aniso_any`` read 0.86-0.88 x, its seventh stage 0.86-0.87 x, inside the guard's 10 % margin;
``benchmarks/reports/foreign.md``). Where that bias is shown (the interval excludes 1) and is
larger than the guard's own systematic error (:data:`MIN_RESCALE`: on unbiased cells of our
simulator the guard reads within 3 %, ``benchmarks/reports/guard.md``), the model's D1 and D2 are
divided by ``b``: the model keeps what it is good at, each track's value relative to the others,
its anisotropy and orientation, and the population's scale is the classical estimate's. The
intervals then only need widening by the factor's remaining uncertainty,
``[b_low / b, b_high / b]`` (:func:`~.estimation.intervals.widen_for_bias`).

What it cannot do: correct a bias that differs between the movie's tracks (one factor serves
them all), or a model the guard rejects (the classical values are reported there). Theta does not
change, nor do the changepoints, which are decided on log D differences, except where a per-frame D
lies near the 1e-3 um^2/s floor those features are clipped at (``changepoints.changepoint_features``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .estimator import TrackEstimate
from .guard import MIN_TRACKS, GuardDecision

__all__ = ["MIN_RESCALE", "RESCALED_FLAG", "rescale_factor", "rescaled", "rescale_note", "residual_bias"]

#: Smallest bias (relative, |b - 1|) that is corrected: below it the guard's own systematic error
#: on unbiased cells of our simulator (within 3 %) would be corrected as much as the model's.
MIN_RESCALE = 0.05
#: Flag of a track whose model values were rescaled (summary ``flags``).
RESCALED_FLAG = "rescaled"


def rescale_factor(decision: GuardDecision, min_rescale: float = MIN_RESCALE) -> float | None:
    """The factor ``b`` to divide an accepted model's D by, or ``None`` (no correction).

    ``b`` is the guard's bias factor (model / classical) where the guard accepted the model,
    measured it on at least :data:`~.guard.MIN_TRACKS` tracks, its interval excludes 1 and
    ``|b - 1| > min_rescale``.
    """
    factor, low, high = decision.bias_factor, decision.bias_low, decision.bias_high
    if decision.rejected or decision.n_tracks < MIN_TRACKS:
        return None
    if not all(math.isfinite(v) and v > 0 for v in (factor, low, high)):
        return None
    if low <= 1.0 <= high or abs(factor - 1.0) <= min_rescale:
        return None
    return float(factor)


def rescaled(estimate: TrackEstimate, factor: float) -> TrackEstimate:
    """A model estimate with D1 and D2 (per frame and per track, um^2/s) divided by ``factor``,
    flagged :data:`RESCALED_FLAG`; classical estimates are returned unchanged."""
    if estimate.method != "model":
        return estimate
    return replace(
        estimate,
        D1_um2_s=np.asarray(estimate.D1_um2_s, dtype=float) / factor,
        D2_um2_s=np.asarray(estimate.D2_um2_s, dtype=float) / factor,
        track_D1_um2_s=float(estimate.track_D1_um2_s) / factor,
        track_D2_um2_s=float(estimate.track_D2_um2_s) / factor,
        flags=tuple(estimate.flags) + (RESCALED_FLAG,),
    )


def residual_bias(decision: GuardDecision, factor: float | None) -> tuple[float, float]:
    """The interval of the model's bias left after dividing by ``factor`` (``None``: as measured)."""
    if factor is None:
        return decision.bias_low, decision.bias_high
    return decision.bias_low / factor, decision.bias_high / factor


def rescale_note(decision: GuardDecision, factor: float, model_name: str) -> str:
    """One sentence for the user: the bias measured and the correction made."""
    return (
        f"model '{model_name}' reads this movie's diffusion coefficients {factor:.2f} x the classical estimate over "
        f"{decision.n_tracks} tracks ({100 * decision.confidence:.0f} % interval {decision.bias_low:.2f}-"
        f"{decision.bias_high:.2f}); its D1 and D2 are divided by {factor:.2f} (flag '{RESCALED_FLAG}'; "
        "--keep-model-scale, or 'keep the model's scale' in the widget, keeps them as the model gave them)"
    )
