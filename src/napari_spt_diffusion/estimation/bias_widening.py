"""How far to widen a track's D interval so that it keeps its coverage under a movie-wide bias.

The interval tables (:mod:`.intervals`) are calibrated where the estimator is unbiased. On a movie
the guard measures the model's bias factor ``b`` (model / classical) with an interval
``[b_low, b_high]``; a factor common to every track of the movie shifts each track's log error
``e = ln(D_est / D_true)`` by ``beta = ln b``. The interval of a track must hold for the movie's
own factor, wherever in the guard's interval it lies, so the widening is chosen for the worst
factor in that interval, not averaged over it (in quadrature; tried 2026-12-07 and not kept:
``benchmarks/reports/foreign_quadrature_widening.md``).

Widening each bound by the whole factor (``b_high`` on the low bound, ``b_low`` on the high one;
the rule until 2026-12-07) over-covers: a shift of ``beta`` moves a share of the track's errors
out of one end of its interval and a smaller share into the other, so only the difference needs
making up. This module makes up exactly that difference, under a Gaussian model of the track's
log error at each level: with the interval's log width ``W = ln(high / low)`` at the level's
central coverage ``p`` (``z = Phi^-1((1 + p) / 2)``), the error's spread is ``sigma = W / (2 z)``.
With the bias interval in log units ``[beta_low, beta_high]`` (each end clipped to include 0:
a factor is never assumed to narrow an interval), its midpoint ``m`` and half-width ``H``, the
interval's log error bounds are shifted by ``m`` and widened by ``w`` on each side, with ``w`` the
smallest value that gives coverage ``p`` at both ends of the bias interval::

    Phi(z + (w - H) / sigma) - Phi(-z - (w + H) / sigma) = p,     0 <= w <= H

(``w = H`` always suffices: the interval then holds the whole shift). A side whose shift
``m + w`` (or ``w - m``) comes out negative is left where it was. The coverage is then at least
``p`` for every factor in the interval under the Gaussian model, and exactly ``p`` at its ends;
with no bias left (``H`` small against ``sigma``) nearly nothing is added.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["bias_shifts", "level_z"]

#: Bisection steps for ``w`` (the bracket ``[0, H]`` halves each step).
BISECTION_STEPS = 48


def level_z(coverage: float) -> float:
    """``Phi^-1((1 + coverage) / 2)``: half-width in standard deviations of a central interval of ``coverage``."""
    return float(ndtri(0.5 * (1.0 + coverage)))


def bias_shifts(log_width: np.ndarray, coverage: float, bias_low: float,
                bias_high: float) -> tuple[np.ndarray, np.ndarray]:
    """Log shifts of the low and high bounds of D intervals that keep ``coverage`` under a common bias.

    Parameters
    ----------
    log_width
        ``(N,)`` ``ln(high / low)`` of each track's interval at this level (dimensionless; NaN
        where the interval is not defined).
    coverage
        The interval's nominal central coverage (0.68 or 0.95).
    bias_low, bias_high
        The guard's interval of the factor ``D_est / D_true`` common to all tracks (positive; each
        end is clipped to include 1).

    Returns
    -------
    ``(down, up)``, each ``(N,)`` and ``>= 0``: the new low bound is ``low * exp(-down)``, the new
    high bound ``high * exp(up)``. Where ``log_width`` is not finite and positive, the whole factor
    (``ln max(bias_high, 1)`` and ``-ln min(bias_low, 1)``).
    """
    width = np.asarray(log_width, float)
    beta_low = math.log(min(float(bias_low), 1.0))
    beta_high = math.log(max(float(bias_high), 1.0))
    mid, half = 0.5 * (beta_low + beta_high), 0.5 * (beta_high - beta_low)
    z = level_z(coverage)
    ok = np.isfinite(width) & (width > 0)
    sigma = np.where(ok, width / (2.0 * z), 1.0)
    lo, hi = np.zeros_like(sigma), np.full_like(sigma, half)
    if half > 0:
        for _ in range(BISECTION_STEPS):
            w = 0.5 * (lo + hi)
            held = ndtr(z + (w - half) / sigma) - ndtr(-z - (w + half) / sigma) >= coverage
            hi, lo = np.where(held, w, hi), np.where(held, lo, w)
    w = hi  # the smallest w found to hold the coverage (``half`` when none smaller did)
    down = np.where(ok, np.maximum(mid + w, 0.0), beta_high)  # the truth lies lower where the model reads high
    up = np.where(ok, np.maximum(w - mid, 0.0), -beta_low)
    return down, up
