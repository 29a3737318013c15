"""Changepoints in per-frame diffusion estimates.

The per-frame estimates of a pointwise model (D1, D2, theta for every frame of a
track) are segmented into stretches of constant diffusive state.

Cost and conventions
--------------------
The cost of a segment is the summed squared deviation of its values from the segment's
mean (the cost of the cross-transformer report). A changepoint ``c`` (an index along
the sequence) means that samples ``< c`` belong to one state and samples ``>= c`` to
the next, as in the results contract.

The values segmented by the pipeline are :func:`changepoint_features`:
``log10 D1`` and ``log10 D2`` per frame. In log space a relative error of the
estimates is the same everywhere, so one noise scale fits slow and fast states alike.

Deciding whether a change happened
----------------------------------
:func:`single_changepoint` always returns the best split (the report's protocol, used
on predictions and labels alike). :func:`decide_single_changepoint` then asks whether
that split is real. At the best split ``c`` the noise of every feature is estimated
from the within-segment residuals: variance ``s_d^2`` and lag-1 autocorrelation
``rho_d`` (per-frame estimates of a model that sees neighbouring frames are
correlated), giving the long-run variance ``s_d^2 (1 + rho_d) / (1 - rho_d)``. The
autocorrelation is corrected for its small-sample bias and then raised by 1.5 standard
errors (``1.5 sqrt((1 - rho^2) / n)``): on a 20-frame track the estimate is too
uncertain to be taken at face value, and without this the false-positive rate of short
correlated sequences would be several times that of long ones. The statistic is the
cost gain of the split in units of that variance, summed over features:

    Z = sum_d gain_d(c) / (s_d^2 (1 + rho_d) / (1 - rho_d))

which for independent Gaussian noise is the likelihood-ratio statistic of a mean change
(-2 log LR), roughly chi^2 with ``k`` degrees of freedom plus the maximisation over
``c``. A change is accepted when

    Z > penalty * (k + 1) * ln(T)         (a BIC-type penalty, k features, T samples)

and the two segment means differ by at least ``min_effect`` in at least one feature
(``min_effect = 0.15`` in log10 D, a factor 1.41 in D: smaller differences are not
resolved by per-frame estimates and, on long smooth sequences, a statistically
"significant" drift of the estimates is not a change of state). ``s_d`` is floored at
``noise_floor`` so that an almost constant sequence cannot produce an enormous ``Z``.

Several changepoints
--------------------
:func:`multiple_changepoints` standardises the features by one long-run noise variance
per feature: first a robust batch-means estimate (:func:`robust_noise_variance`, little
affected by the jumps themselves), then, up to twice, the residual-based estimate around
the current segmentation. With ``method="binseg"`` (default) the standardised sequence
is cut by binary segmentation, a split being kept when its cost gain exceeds
``penalty * (k + 1) * ln(n)`` for its segment of ``n`` samples; every changepoint is then
moved to the best split between its neighbours. ``method="pelt"`` runs PELT (:func:`pelt`,
the exact l2 problem of ``ruptures.Pelt`` with every index allowed, vectorised here
because ruptures takes about 0.3 s per 200-frame track) with ``penalty * (k + 1) * ln(T)``
per changepoint. Either way neighbouring segments whose means differ by less than
``min_effect`` in every feature are merged.

Confirmation on the displacements
---------------------------------
The per-frame estimates of a model fluctuate, most on tracks unlike its training data:
the binding model (trained on bound D ~ 0.0075 and unbound D1 >= 3 um^2/s) gave 9-14 %
of one-state anisotropic tracks with D1 in 0.05-6 um^2/s a spurious changepoint (85
changepoints on the bundled sample movie, whose truth has 11). The pipeline therefore
keeps a changepoint only if the frame-to-frame displacements on its two sides differ
significantly (:func:`confirm_changepoints`, :func:`displacement_variance_test`): an
F-test of the mean squared displacement, with degrees of freedom corrected for the
anisotropy of the tensor and for the lag-1 correlation that motion blur and localization
noise give consecutive displacements, Bonferroni over the track's candidates, at
``DEFAULT_CONFIRM_ALPHA = 0.05`` per track. Measured on simulated one-state tracks through
the bundled models (``calibrate_changepoints.py --confirm``, report
``benchmarks/reports/changepoints.md``): with the binding model the false-changepoint rate
per one-state anisotropic track (30/100/200 frames) falls from 9.3/9.3/14 % to 0.7/0.7/0 %
(at most 4.2 % in any D1 sub-range, both models); binding-switch F1 0.99 -> 0.96 (one
switch in 30 frames) and 0.92 -> 0.93 (Markov, 200 frames); on two isotropic states the
recall drops a little (F1 0.48 -> 0.47, Markov). A changepoint leaving a single frame at a
track end cannot be confirmed (no displacement of its own) and is dropped. On the bundled
sample movie the binding model's changepoints go from 81 to 14 (truth: 11).

Calibration
-----------
``benchmarks/calibrate_changepoints.py`` (seed 11; table in
``benchmarks/reports/changepoints.md``) chose the penalties on simulated per-frame
sequences of log10 D: the true labels plus Gaussian AR(1) noise of 0.10 decades (0.25
below 0.05 um^2/s) with lag-1 correlation 0 and 0.5, on tracks of the seed-aniso,
seed-binding and seed-twostate physics:

* single change, ``DEFAULT_PENALTY = 2.0``: false positives on one-state tracks at most
  0.1 % (uncorrelated noise) and 1.0 % (correlation 0.5) at 20-200 frames; 30-frame
  binding/unbinding switches detected in 100 % / 97 % of tracks, at the true frame.
* several changes (binary segmentation), ``DEFAULT_PENALTY_MULTI = 1.5``: no false
  positive on 300 one-state tracks of 200 frames; F1 (within 2 frames) 0.94 / 0.93 on
  200-frame binding tracks with four switches on average.
* PELT, ``DEFAULT_PENALTY_PELT = 1.0``: F1 0.95 on the same binding tracks (correlated
  noise) but a lower recall than binary segmentation on two isotropic states.

Two isotropic states drawn from the same range often differ by less than
``min_effect`` (about a third of the switches of the seed-twostate physics), which
bounds the recall there whatever the penalty.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SptDiffusionError

__all__ = [
    "DEFAULT_PENALTY",
    "DEFAULT_PENALTY_MULTI",
    "DEFAULT_PENALTY_PELT",
    "robust_noise_variance",
    "pelt",
    "DEFAULT_MIN_EFFECT",
    "DEFAULT_NOISE_FLOOR",
    "DEFAULT_CONFIRM_ALPHA",
    "DEFAULT_CONFIRM_GUARD",
    "displacement_variance_test",
    "confirm_changepoints",
    "ChangepointError",
    "changepoint_features",
    "single_changepoint",
    "changepoint_statistic",
    "decision_threshold",
    "decide_single_changepoint",
    "multiple_changepoints",
    "state_labels",
    "segments",
    "mean_tensor",
    "match_changepoints",
    "changepoint_scores",
]

#: Multiplier of the BIC-type threshold ``(k + 1) ln T`` of the single-change test
#: (calibrated, see the module docstring).
DEFAULT_PENALTY: float = 2.0
#: Multiplier of ``(k + 1) ln T`` for the splits of binary segmentation (standardised).
DEFAULT_PENALTY_MULTI: float = 1.5
#: Same for the penalty per changepoint of PELT on standardised features.
DEFAULT_PENALTY_PELT: float = 1.0
#: Smallest difference of segment means accepted as a change (units of the values;
#: log10 D for :func:`changepoint_features`).
DEFAULT_MIN_EFFECT: float = 0.15
#: Smallest noise standard deviation assumed (units of the values).
DEFAULT_NOISE_FLOOR: float = 0.02
#: Family-wise error rate per track of the displacement confirmation.
DEFAULT_CONFIRM_ALPHA: float = 0.05
#: Displacements left out on each side of a changepoint by the confirmation.
DEFAULT_CONFIRM_GUARD: int = 0

_RHO_MAX = 0.95
_SE_MULT = 1.5


class ChangepointError(SptDiffusionError, ValueError):
    """Raised for value sequences that cannot be segmented (wrong shape, NaN)."""


# --------------------------------------------------------------------- inputs
def changepoint_features(D1_um2_s: Any, D2_um2_s: Any, floor_um2_s: float = 1e-3) -> np.ndarray:
    """Per-frame features segmented by the pipeline: ``log10 D1`` and ``log10 D2``.

    Parameters
    ----------
    D1_um2_s, D2_um2_s
        ``(T,)`` per-frame estimates (um^2/s).
    floor_um2_s
        Values below this (um^2/s) are raised to it before the logarithm: slower motion
        (a few nm per frame) is not resolved at usual frame rates and localization
        precisions, and without a floor an estimate clipped at 0 would be an outlier.

    Returns
    -------
    numpy.ndarray
        ``(T, 2)`` float64.
    """
    d1 = np.asarray(D1_um2_s, dtype=float).reshape(-1)
    d2 = np.asarray(D2_um2_s, dtype=float).reshape(-1)
    if d1.shape != d2.shape:
        raise ChangepointError("D1 and D2 sequences must have the same length")
    return np.log10(np.maximum(np.stack([d1, d2], axis=1), floor_um2_s))


def _as_2d(values: Any) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ChangepointError(f"values must have shape (T,) or (T, k), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ChangepointError("values contain NaN or infinite numbers")
    return x


def _split_gains(x: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cost gain of every admissible split, per feature.

    Returns ``(splits (M,), gains (M, k), left_means (M, k), right_means (M, k))``.
    The gain of splitting ``[0, T)`` at ``c`` is ``c (T - c) / T * (mean_left - mean_right)^2``.
    """
    n, k = x.shape
    csum = np.vstack([np.zeros((1, k)), np.cumsum(x, axis=0)])
    splits = np.arange(min_size, n - min_size + 1)
    if splits.size == 0:
        return splits, np.zeros((0, k)), np.zeros((0, k)), np.zeros((0, k))
    left = csum[splits] / splits[:, None]
    right = (csum[n] - csum[splits]) / (n - splits)[:, None]
    gains = (splits * (n - splits) / n)[:, None] * (left - right) ** 2
    return splits, gains, left, right


# --------------------------------------------------------------- single change
def single_changepoint(values: Any, min_size: int = 1) -> tuple[int, float]:
    """The split minimising the summed squared deviation from each segment's mean.

    This is the changepoint of the cross-transformer report (one change assumed).

    Parameters
    ----------
    values
        ``(T,)`` or ``(T, k)`` per-frame values; with ``k`` features the costs are summed.
    min_size
        Smallest number of samples in each segment.

    Returns
    -------
    (int, float)
        ``c``, the index of the first sample of the second segment, and the cost gain
        ``cost(whole) - cost(left) - cost(right)`` (units of the values squared).
        For a sequence too short to split (``T < 2 min_size``) returns ``(0, 0.0)``.
    """
    x = _as_2d(values)
    if min_size < 1:
        raise ChangepointError("min_size must be at least 1")
    splits, gains, _, _ = _split_gains(x, min_size)
    if splits.size == 0:
        return 0, 0.0
    total = gains.sum(axis=1)
    i = int(np.argmax(total))
    return int(splits[i]), float(total[i])


def _noise_scale(residuals: np.ndarray, boundaries: list[int], noise_floor: float) -> np.ndarray:
    """Long-run noise variance per feature from within-segment residuals.

    ``boundaries`` are the segment limits ``[0, c1, ..., T]``. The lag-1 autocorrelation
    is computed within segments, corrected for its small-sample bias
    (``E[rho_hat] ~ rho - (1 + 3 rho) / n`` for AR(1) around an estimated mean) and
    raised by ``_SE_MULT`` standard errors; the variance is floored at ``noise_floor^2``.
    """
    n, k = residuals.shape
    n_seg = len(boundaries) - 1
    ss = (residuals**2).sum(axis=0)
    var = ss / max(n - n_seg, 1)
    lag = residuals[1:] * residuals[:-1]
    keep = np.ones(n - 1, dtype=bool)
    for b in boundaries[1:-1]:
        keep[b - 1] = False
    with np.errstate(invalid="ignore", divide="ignore"):
        rho_hat = np.where(ss > 0, lag[keep].sum(axis=0) / ss, 0.0)
    n_per_segment = max(n / n_seg, 4.0)
    rho = (rho_hat + 1.0 / n_per_segment) / (1.0 - 3.0 / n_per_segment)
    rho = np.clip(rho, 0.0, _RHO_MAX)
    # an upper confidence value of rho: its sampling error is large on short tracks
    rho = np.clip(rho + _SE_MULT * np.sqrt((1.0 - rho**2) / max(n - n_seg, 1)), 0.0, _RHO_MAX)
    var = np.maximum(var, noise_floor**2)
    return var * (1.0 + rho) / (1.0 - rho)


def changepoint_statistic(
    values: Any, min_size: int = 2, noise_floor: float = DEFAULT_NOISE_FLOOR
) -> tuple[int, float, float]:
    """Best split and its normalised likelihood-ratio statistic ``Z``.

    The split is first chosen by the unweighted cost (:func:`single_changepoint`), the
    long-run noise variance of each feature is estimated from the residuals around the
    two segment means, and the split is chosen again with every feature weighted by the
    inverse of that variance.

    Returns
    -------
    (int, float, float)
        ``c``, ``Z`` (dimensionless) and the largest absolute difference of the two
        segment means over the features (units of the values). ``(0, 0.0, 0.0)`` when
        the sequence is too short to split.
    """
    x = _as_2d(values)
    n = x.shape[0]
    splits, gains, left, right = _split_gains(x, min_size)
    if splits.size == 0:
        return 0, 0.0, 0.0
    i = int(np.argmax(gains.sum(axis=1)))
    c = int(splits[i])
    residuals = x.copy()
    residuals[:c] -= left[i]
    residuals[c:] -= right[i]
    var_lr = _noise_scale(residuals, [0, c, n], noise_floor)
    z_all = (gains / var_lr).sum(axis=1)
    j = int(np.argmax(z_all))
    return int(splits[j]), float(z_all[j]), float(np.max(np.abs(left[j] - right[j])))


def decision_threshold(n_samples: int, n_features: int, penalty: float = DEFAULT_PENALTY) -> float:
    """Threshold on ``Z``: ``penalty * (n_features + 1) * ln(n_samples)``."""
    return float(penalty) * (n_features + 1) * float(np.log(max(n_samples, 2)))


def decide_single_changepoint(
    values: Any,
    penalty: float = DEFAULT_PENALTY,
    min_size: int = 1,
    min_effect: float = DEFAULT_MIN_EFFECT,
    noise_floor: float = DEFAULT_NOISE_FLOOR,
) -> int | None:
    """The single changepoint if the test accepts one, else ``None``.

    Parameters
    ----------
    values
        ``(T,)`` or ``(T, k)`` per-frame values (e.g. :func:`changepoint_features`).
    penalty
        Multiplier of the threshold, see :func:`decision_threshold`.
    min_size
        Smallest segment length (samples). 1 by default: with one switch drawn uniformly
        over a 30-frame track, 7 % of the switches leave a single frame in one state.
    min_effect
        Smallest accepted difference of the segment means (units of the values).
    noise_floor
        Smallest noise standard deviation assumed (units of the values).
    """
    x = _as_2d(values)
    c, z, effect = changepoint_statistic(x, min_size=min_size, noise_floor=noise_floor)
    if c == 0:
        return None
    if z > decision_threshold(x.shape[0], x.shape[1], penalty) and effect >= min_effect:
        return c
    return None


# ------------------------------------------------------------- several changes
def robust_noise_variance(values: Any, noise_floor: float = DEFAULT_NOISE_FLOOR) -> np.ndarray:
    """Long-run noise variance per feature, robust to a few changepoints.

    Batch means: the sequence is cut into blocks of ``b = max(3, round(T^(1/3)))``
    samples; for noise correlated over fewer than ``b`` samples the difference of two
    consecutive block means has variance ``2 LRV / b`` (LRV the long-run variance), so
    ``LRV = b * MAD(differences)^2 / 2`` with the median absolute deviation scaled to a
    Gaussian standard deviation. A jump of the mean spoils only the one or two differences
    around it. Used as the starting noise scale of :func:`multiple_changepoints` (it
    underestimates strongly correlated noise; the residual-based estimate that follows
    corrects it).

    Returns
    -------
    numpy.ndarray
        ``(k,)`` variances (units of the values squared), at least ``noise_floor^2``.
    """
    x = _as_2d(values)
    n, k = x.shape
    b = max(3, int(round(n ** (1.0 / 3.0))))
    n_blocks = n // b
    if n_blocks < 3:
        return np.full(k, noise_floor**2)
    means = x[: n_blocks * b].reshape(n_blocks, b, k).mean(axis=1)
    d = np.diff(means, axis=0)
    mad = 1.4826 * np.median(np.abs(d - np.median(d, axis=0)), axis=0)
    return np.maximum(b * mad**2 / 2.0, noise_floor**2)


def multiple_changepoints(
    values: Any,
    penalty: float | None = None,
    method: str = "binseg",
    min_size: int = 2,
    min_effect: float = DEFAULT_MIN_EFFECT,
    noise_floor: float = DEFAULT_NOISE_FLOOR,
    max_changepoints: int | None = None,
) -> np.ndarray:
    """Changepoints of a sequence with any number of state changes.

    The features are standardised by a global long-run noise variance, first from
    :func:`robust_noise_variance`, then (twice at most) from the residuals around the
    segment means of the current binary segmentation, which is redone after each update.
    ``"pelt"`` then runs PELT once with the final noise scale. Neighbouring segments whose
    means differ by less than ``min_effect`` in every feature are merged.

    Parameters
    ----------
    values
        ``(T,)`` or ``(T, k)`` per-frame values.
    penalty
        Multiplier of ``(k + 1) ln T``: for ``"binseg"`` the threshold of the cost gain
        (in noise-variance units) of each split, for ``"pelt"`` the penalty per
        changepoint. ``None`` for the calibrated default (:data:`DEFAULT_PENALTY_MULTI`,
        :data:`DEFAULT_PENALTY_PELT`).
    method
        ``"binseg"`` (binary segmentation, each split tested against the threshold of its
        own segment length, then every changepoint moved to the best split between its
        neighbours) or ``"pelt"`` (``ruptures`` PELT, l2 cost, every index allowed).
    min_size
        Smallest segment length (samples).
    min_effect
        Smallest accepted difference of neighbouring segment means (units of the values).
    noise_floor
        Smallest noise standard deviation assumed (units of the values).
    max_changepoints
        Optional upper bound on the number of changepoints (the weakest are dropped).

    Returns
    -------
    numpy.ndarray
        Sorted ``(m,)`` int indices ``c`` (samples ``< c`` and ``>= c`` differ).
    """
    x = _as_2d(values)
    if method not in ("binseg", "pelt"):
        raise ChangepointError(f"method must be 'binseg' or 'pelt', got {method!r}")
    if min_size < 1:
        raise ChangepointError("min_size must be at least 1")
    if penalty is None:
        penalty = DEFAULT_PENALTY_MULTI if method == "binseg" else DEFAULT_PENALTY_PELT
    penalty = float(penalty)
    n = x.shape[0]
    if n < 2 * min_size:
        return np.zeros(0, dtype=np.int64)
    binseg_penalty = penalty if method == "binseg" else DEFAULT_PENALTY_MULTI
    var = robust_noise_variance(x, noise_floor)
    cps: list[int] = []
    for iteration in range(3):
        new = _binary_segmentation(x / np.sqrt(var), binseg_penalty, min_size)
        new = _merge_small_effects(x, new, min_effect)
        if iteration > 0 and new == cps:
            break
        cps = new
        var = _noise_scale(_residuals(x, cps), [0, *cps, n], noise_floor)
    if method == "pelt":
        # one PELT pass with the noise scale of the binary-segmentation result
        cps = _merge_small_effects(x, _pelt(x / np.sqrt(var), penalty, min_size), min_effect)
    if max_changepoints is not None and len(cps) > max_changepoints:
        cps = _strongest(x, cps, max_changepoints)
    return np.asarray(sorted(cps), dtype=np.int64)


def _residuals(x: np.ndarray, cps: list[int]) -> np.ndarray:
    bounds = [0, *cps, x.shape[0]]
    r = x.copy()
    for a, b in zip(bounds[:-1], bounds[1:]):
        r[a:b] -= x[a:b].mean(axis=0)
    return r


def _best_split(z: np.ndarray, min_size: int) -> tuple[int, float]:
    splits, gains, _, _ = _split_gains(z, min_size)
    if splits.size == 0:
        return 0, 0.0
    total = gains.sum(axis=1)
    i = int(np.argmax(total))
    return int(splits[i]), float(total[i])


def _binary_segmentation(z: np.ndarray, penalty: float, min_size: int) -> list[int]:
    """Binary segmentation of standardised values; each split must beat its threshold."""
    k = z.shape[1]
    cps: list[int] = []
    stack = [(0, z.shape[0])]
    while stack:
        a, b = stack.pop()
        if b - a < 2 * min_size:
            continue
        c, gain = _best_split(z[a:b], min_size)
        if c == 0 or gain <= decision_threshold(b - a, k, penalty):
            continue
        cps.append(a + c)
        stack.append((a, a + c))
        stack.append((a + c, b))
    cps.sort()
    # move every changepoint to the best split between its neighbours
    for _ in range(5):
        moved = False
        for i in range(len(cps)):
            a = cps[i - 1] if i > 0 else 0
            b = cps[i + 1] if i + 1 < len(cps) else z.shape[0]
            c, _ = _best_split(z[a:b], min_size)
            if c and a + c != cps[i]:
                cps[i] = a + c
                moved = True
        if not moved:
            break
    return cps


def pelt(values: Any, penalty_per_changepoint: float, min_size: int = 2) -> np.ndarray:
    """Exact penalised segmentation with the l2 cost (PELT, Killick et al. 2012).

    Minimises ``sum over segments of cost(segment) + penalty_per_changepoint * m`` over
    all segmentations with ``m`` changepoints and segments of at least ``min_size``
    samples, where ``cost`` is the summed squared deviation from the segment mean. Same
    problem as ``ruptures.Pelt(model="l2", min_size=min_size, jump=1)``, vectorised over
    the candidate set with cumulative sums (milliseconds for hundreds of samples).

    Parameters
    ----------
    values
        ``(T,)`` or ``(T, k)`` values (standardise them first).
    penalty_per_changepoint
        Added cost of each changepoint (units of the values squared).
    min_size
        Smallest segment length (samples).

    Returns
    -------
    numpy.ndarray
        Sorted ``(m,)`` int changepoints.
    """
    x = _as_2d(values)
    n = x.shape[0]
    beta = float(penalty_per_changepoint)
    if n < 2 * min_size:
        return np.zeros(0, dtype=np.int64)
    c1 = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    c2 = np.concatenate([[0.0], np.cumsum((x * x).sum(axis=1))])

    def cost(starts: np.ndarray, end: int) -> np.ndarray:
        length = end - starts
        seg = c1[end] - c1[starts]
        return c2[end] - c2[starts] - (seg * seg).sum(axis=1) / length

    best = np.full(n + 1, np.inf)
    best[0] = -beta
    last = np.zeros(n + 1, dtype=np.int64)
    candidates = np.array([0], dtype=np.int64)
    for t in range(min_size, n + 1):
        if t - min_size >= min_size:
            candidates = np.append(candidates, t - min_size)
        partial = best[candidates] + cost(candidates, t)
        i = int(np.argmin(partial))
        best[t] = partial[i] + beta
        last[t] = candidates[i]
        # prune: a start that cannot beat the optimum now never will (l2 cost, K = 0)
        candidates = candidates[partial <= best[t]]
    cps = []
    t = n
    while t > 0:
        t = int(last[t])
        if t > 0:
            cps.append(t)
    return np.asarray(sorted(cps), dtype=np.int64)


def _pelt(z: np.ndarray, penalty: float, min_size: int) -> list[int]:
    n, k = z.shape
    return [int(c) for c in pelt(z, penalty * (k + 1) * np.log(n), min_size)]


def _merge_small_effects(x: np.ndarray, cps: list[int], min_effect: float) -> list[int]:
    cps = list(cps)
    while cps:
        bounds = [0, *cps, x.shape[0]]
        means = [x[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]
        effects = [float(np.max(np.abs(means[i + 1] - means[i]))) for i in range(len(cps))]
        i = int(np.argmin(effects))
        if effects[i] >= min_effect:
            break
        del cps[i]
    return cps


def _strongest(x: np.ndarray, cps: list[int], m: int) -> list[int]:
    """Keep the ``m`` changepoints with the largest cost gain between their neighbours."""
    cps = list(cps)
    while len(cps) > m:
        bounds = [0, *cps, x.shape[0]]
        gains = []
        for i in range(len(cps)):
            a, c, b = bounds[i], bounds[i + 1], bounds[i + 2]
            left, right = x[a:c], x[c:b]
            whole = x[a:b]
            gains.append(
                float(((whole - whole.mean(0)) ** 2).sum() - ((left - left.mean(0)) ** 2).sum() - ((right - right.mean(0)) ** 2).sum())
            )
        del cps[int(np.argmin(gains))]
    return cps


# ------------------------------------------------- confirmation on displacements
def _usable_displacements(positions_px: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame-to-frame displacements between consecutive frames only.

    Returns ``(d (M, 2) px, start_row (M,))``: the displacement from row ``i`` to row
    ``i + 1`` where ``frames[i + 1] == frames[i] + 1`` and both positions are finite.
    """
    d = np.diff(positions_px, axis=0)
    ok = (np.diff(frames) == 1) & np.all(np.isfinite(d), axis=1)
    return d[ok], np.flatnonzero(ok)


def displacement_variance_test(
    left_px: Any, right_px: Any, blur_coefficient: float, loc_variance_px2: float | None = None
) -> float:
    """Two-sided p-value that two sets of displacements share one diffusion tensor.

    The statistic is the ratio of the mean squared displacement lengths,
    ``F = mean |d_left|^2 / mean |d_right|^2``. Under the null hypothesis the
    displacements are zero-mean Gaussian with one covariance ``S`` (estimated from both
    sets pooled, eigenvalues ``l_a``): per axis ``l_a = 2 D_a dt (1 - 2R) + 2 s^2`` and
    consecutive displacements correlate with ``rho_a = (2 R D_a dt - s^2) / l_a`` (motion
    blur ``R``, localization variance ``s^2``; Vestergaard et al. 2014). The sum of ``n``
    squared lengths is then close to a scaled chi^2 with
    ``nu = n (sum l_a)^2 / sum(l_a^2 (1 + 2 rho_a^2))`` degrees of freedom
    (Satterthwaite: anisotropy and the lag-1 correlation both lower ``nu``), and
    ``F ~ F(nu_left, nu_right)``. It is the likelihood-ratio test of a change of the
    displacement scale, robust to anisotropy, blur and localization noise.

    Parameters
    ----------
    left_px, right_px
        ``(n, 2)`` displacements (px per frame) of the two segments.
    blur_coefficient
        Motion-blur coefficient ``R`` (``Acquisition.blur_coefficient``).
    loc_variance_px2
        Localization variance per axis ``s^2`` (px^2); ``None`` estimates ``rho_a`` from
        the lag-1 products of each set instead (clipped to the range the model allows).

    Returns
    -------
    float
        p-value in ``[0, 1]``; 1.0 when either set is empty or all displacements vanish.
    """
    from scipy.stats import f as f_dist

    left = np.asarray(left_px, dtype=float).reshape(-1, 2)
    right = np.asarray(right_px, dtype=float).reshape(-1, 2)
    if len(left) == 0 or len(right) == 0:
        return 1.0
    pooled = np.vstack([left, right])
    cov = pooled.T @ pooled / len(pooled)
    lam = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    if lam.sum() <= 0:
        return 1.0
    R = float(blur_coefficient)
    rho_max = R / (1.0 - 2.0 * R) if R < 0.5 else 0.5
    if loc_variance_px2 is not None and np.isfinite(loc_variance_px2):
        s2 = float(loc_variance_px2)
        d_dt = np.clip((lam - 2.0 * s2) / (2.0 * (1.0 - 2.0 * R)), 0.0, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.where(lam > 0, (2.0 * R * d_dt - s2) / lam, 0.0)
    else:
        lag = [a[1:].T @ a[:-1] for a in (left, right) if len(a) > 1]
        n_lag = sum(len(a) - 1 for a in (left, right))
        if n_lag:
            _, vec = np.linalg.eigh(cov)
            c1 = sum(lag) / n_lag
            with np.errstate(invalid="ignore", divide="ignore"):
                rho = np.where(lam > 0, np.einsum("ia,ij,ja->a", vec, 0.5 * (c1 + c1.T), vec) / lam, 0.0)
        else:
            rho = np.zeros(2)
    rho = np.clip(rho, -0.5, rho_max)
    per_sample = lam.sum() ** 2 / np.sum(lam**2 * (1.0 + 2.0 * rho**2))
    nu_l, nu_r = len(left) * per_sample, len(right) * per_sample
    q_l = float(np.mean(np.sum(left**2, axis=1)))
    q_r = float(np.mean(np.sum(right**2, axis=1)))
    if q_r <= 0 or q_l <= 0:
        return 0.0 if q_l != q_r else 1.0
    ratio = q_l / q_r
    p = 2.0 * min(f_dist.cdf(ratio, nu_l, nu_r), f_dist.sf(ratio, nu_l, nu_r))
    return float(min(p, 1.0))


def confirm_changepoints(
    changepoints: Any,
    positions_px: Any,
    frames: Any,
    blur_coefficient: float,
    loc_precision_px: Any = None,
    alpha: float = DEFAULT_CONFIRM_ALPHA,
    guard: int = DEFAULT_CONFIRM_GUARD,
    scan_correction: bool = False,
) -> np.ndarray:
    """Keep only the changepoints that the displacements themselves confirm.

    The per-frame estimates of a model fluctuate, and more so on tracks unlike its
    training data (the binding model on a single-state anisotropic track); a changepoint
    found in them is kept only if the frame-to-frame displacements on its two sides
    (between the neighbouring changepoints) differ significantly
    (:func:`displacement_variance_test`). The displacement straddling the changepoint (it
    holds motion of both states) and ``guard`` more on each side are left out, as are
    displacements across gaps. A changepoint with no usable displacement on one side
    (a state of one frame at a track end) cannot be confirmed and is dropped.

    Multiple testing: the p-values are multiplied by the number of candidate
    changepoints of the track (Bonferroni over all candidates, kept fixed: a count of the
    remaining ones would let the last survivor, the best of several, pass at the full
    level); the least significant changepoint is removed and the tests are redone with
    the merged segments, until every remaining one passes ``alpha``. The candidates were chosen where the estimates jump most, which the
    p-values do not know about; on simulated one-state tracks through the bundled
    models this selection kept the family-wise rate below ``alpha`` (measured in
    ``benchmarks/reports/changepoints.md``: at ``alpha = 0.05`` at most 2 % of the
    one-state tracks of 30-200 frames kept a changepoint, 4.2 % in the worst D1
    sub-range). ``scan_correction``
    additionally multiplies each p-value by the number of positions the changepoint
    could have taken between its neighbours (Bonferroni over the scan: guaranteed, but
    it measured 0 false changepoints at the price of 2-4 % of the binding switches).

    Parameters
    ----------
    changepoints
        ``(m,)`` increasing row indices (as from :func:`multiple_changepoints`).
    positions_px
        ``(T, 2)`` localized positions (px).
    frames
        ``(T,)`` frame numbers of the rows.
    blur_coefficient
        Motion-blur coefficient ``R`` of the acquisition (``Acquisition.blur_coefficient``).
    loc_precision_px
        Localization precision per axis (px): a number or ``(T,)`` (the median of the
        finite values is used); ``None`` estimates the lag-1 correlation from the data.
    alpha
        Family-wise error rate per track.
    guard
        Displacements left out on each side of a changepoint besides the straddling one.
    scan_correction
        Also multiply by the number of admissible positions of each changepoint.

    Returns
    -------
    numpy.ndarray
        ``(m',)`` int64 confirmed changepoints, a subset of the input.
    """
    cps = [int(c) for c in np.asarray(changepoints, dtype=np.int64).reshape(-1)]
    pos = np.asarray(positions_px, dtype=float).reshape(-1, 2)
    fr = np.asarray(frames, dtype=np.int64).reshape(-1)
    if fr.size != len(pos):
        raise ChangepointError("positions and frames must have one row per sample")
    if not (0.0 < float(alpha) < 1.0):
        raise ChangepointError(f"alpha must be between 0 and 1, got {alpha!r}")
    if not cps:
        return np.zeros(0, dtype=np.int64)
    state_labels(len(pos), cps)  # validates the changepoints
    s2 = None
    if loc_precision_px is not None:
        prec = np.asarray(loc_precision_px, dtype=float).reshape(-1)
        prec = prec[np.isfinite(prec)]
        s2 = float(np.median(prec)) ** 2 if prec.size else None
    d, start = _usable_displacements(pos, fr)
    g = max(int(guard), 0)
    n_candidates = len(cps)
    while cps:
        bounds = [0, *cps, len(pos)]
        p_adj = []
        for j in range(len(cps)):
            a, c, b = bounds[j], bounds[j + 1], bounds[j + 2]
            # displacement i joins rows i and i + 1: left if i + 1 <= c - 1 - g, right if i >= c + g
            left = d[(start >= a) & (start + 1 <= c - 1 - g)]
            right = d[(start >= c + g) & (start + 1 <= b - 1)]
            p = displacement_variance_test(left, right, blur_coefficient, s2)
            if scan_correction:
                p *= max(b - a - 1, 1)
            p_adj.append(p * n_candidates)
        worst = int(np.argmax(p_adj))
        if p_adj[worst] <= alpha:
            break
        del cps[worst]
    return np.asarray(cps, dtype=np.int64)


# ------------------------------------------------------------------ segments
def state_labels(n_samples: int, changepoints: Any) -> np.ndarray:
    """``(T,)`` int segment index of every sample (0 before the first changepoint, ...)."""
    cps = np.asarray(changepoints, dtype=np.int64).reshape(-1)
    if cps.size and (np.any(cps <= 0) or np.any(cps >= n_samples) or np.any(np.diff(cps) <= 0)):
        raise ChangepointError("changepoints must be increasing indices inside (0, T)")
    return np.searchsorted(cps, np.arange(n_samples), side="right").astype(np.int64)


def mean_tensor(D1_um2_s: Any, D2_um2_s: Any, theta_deg: Any) -> tuple[float, float, float]:
    """Time-averaged tensor of per-frame estimates.

    The per-frame tensors ``D1 u1 u1^T + D2 u2 u2^T`` are averaged and eigen-decomposed
    (the same definition as the simulator's truth tables for multi-segment tracks). Its
    angle is the doubled-angle mean of the frames' angles weighted by ``D1 - D2``
    (so 179 and 1 degrees average to 0, and an isotropic frame, whose angle means
    nothing, does not pull it); its eigenvalues are ``mean((D1 + D2) / 2)`` plus/minus
    the length of that weighted mean. Non-finite frames are ignored.

    Returns
    -------
    (float, float, float)
        ``D1_um2_s, D2_um2_s, theta_deg`` with theta in ``[0, 180)`` (0 for an isotropic
        mean); NaN if no frame is finite.
    """
    d1 = np.asarray(D1_um2_s, dtype=float).reshape(-1)
    d2 = np.asarray(D2_um2_s, dtype=float).reshape(-1)
    th = np.deg2rad(np.asarray(theta_deg, dtype=float).reshape(-1))
    ok = np.isfinite(d1) & np.isfinite(d2) & np.isfinite(th)
    if not np.any(ok):
        return float("nan"), float("nan"), float("nan")
    d1, d2, th = d1[ok], d2[ok], th[ok]
    half_diff = 0.5 * (d1 - d2)
    c = float(np.mean(half_diff * np.cos(2 * th)))
    s = float(np.mean(half_diff * np.sin(2 * th)))
    centre = float(np.mean(0.5 * (d1 + d2)))
    radius = math.hypot(c, s)
    theta = float(np.rad2deg(0.5 * math.atan2(s, c)) % 180.0) if radius > 1e-12 * max(abs(centre), 1e-300) else 0.0
    if theta >= 180.0:
        theta = 0.0
    return centre + radius, centre - radius, theta


def segments(
    changepoints: Any,
    D1_um2_s: Any,
    D2_um2_s: Any,
    theta_deg: Any,
    frames: Any | None = None,
) -> pd.DataFrame:
    """Per-segment state index and mean tensor.

    Parameters
    ----------
    changepoints
        Indices along the sequence (as returned by :func:`multiple_changepoints`).
    D1_um2_s, D2_um2_s, theta_deg
        ``(T,)`` per-frame estimates (um^2/s, degrees).
    frames
        Optional ``(T,)`` frame numbers of the samples; default ``0..T-1``.

    Returns
    -------
    pandas.DataFrame
        One row per segment: ``state, start_frame, end_frame`` (inclusive),
        ``n_frames, D1_um2_s, D2_um2_s, theta_deg`` (the segment's time-averaged
        tensor, :func:`mean_tensor`).
    """
    d1 = np.asarray(D1_um2_s, dtype=float).reshape(-1)
    d2 = np.asarray(D2_um2_s, dtype=float).reshape(-1)
    th = np.asarray(theta_deg, dtype=float).reshape(-1)
    n = d1.size
    if d2.size != n or th.size != n:
        raise ChangepointError("D1, D2 and theta sequences must have the same length")
    fr = np.arange(n) if frames is None else np.asarray(frames).reshape(-1)
    if fr.size != n:
        raise ChangepointError("frames must have one entry per sample")
    state_labels(n, changepoints)  # validates the changepoints
    bounds = [0, *np.asarray(changepoints, dtype=np.int64).reshape(-1).tolist(), n]
    rows = []
    for state, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        m1, m2, mt = mean_tensor(d1[a:b], d2[a:b], th[a:b])
        rows.append(
            {
                "state": state,
                "start_frame": int(fr[a]),
                "end_frame": int(fr[b - 1]),
                "n_frames": int(b - a),
                "D1_um2_s": m1,
                "D2_um2_s": m2,
                "theta_deg": mt,
            }
        )
    return pd.DataFrame(rows, columns=["state", "start_frame", "end_frame", "n_frames", "D1_um2_s", "D2_um2_s", "theta_deg"])


# ---------------------------------------------------------------- evaluation
def match_changepoints(true_frames: Any, detected_frames: Any, tolerance: int = 2) -> list[tuple[int, int]]:
    """One-to-one matching of detected to true changepoints within ``tolerance`` frames.

    Pairs are chosen by a minimum-cost assignment on the absolute frame distance, among
    pairs at most ``tolerance`` apart.

    Returns
    -------
    list of (int, int)
        ``(true_frame, detected_frame)`` pairs.
    """
    from scipy.optimize import linear_sum_assignment

    t = np.asarray(true_frames, dtype=np.int64).reshape(-1)
    d = np.asarray(detected_frames, dtype=np.int64).reshape(-1)
    if t.size == 0 or d.size == 0:
        return []
    dist = np.abs(t[:, None] - d[None, :]).astype(float)
    big = 1e6
    cost = np.where(dist <= tolerance, dist, big)
    rows, cols = linear_sum_assignment(cost)
    return [(int(t[r]), int(d[c])) for r, c in zip(rows, cols) if cost[r, c] < big]


def changepoint_scores(
    true_per_track: list[Any], detected_per_track: list[Any], tolerance: int = 2
) -> dict[str, float]:
    """Precision, recall, F1 and mean position error of detected changepoints.

    Parameters
    ----------
    true_per_track, detected_per_track
        One sequence of changepoint frames per track (same order).
    tolerance
        A detection within this many frames of a true changepoint is a hit (frames).

    Returns
    -------
    dict
        ``n_true, n_detected, n_matched, precision, recall, f1`` and
        ``mean_position_error_frames`` (mean |true - detected| of matched pairs; NaN if none).
    """
    if len(true_per_track) != len(detected_per_track):
        raise ChangepointError("true and detected changepoints must be given for the same tracks")
    n_true = n_det = 0
    errors: list[int] = []
    for t, d in zip(true_per_track, detected_per_track):
        t = np.asarray(t).reshape(-1)
        d = np.asarray(d).reshape(-1)
        n_true += t.size
        n_det += d.size
        errors.extend(abs(a - b) for a, b in match_changepoints(t, d, tolerance))
    m = len(errors)
    precision = m / n_det if n_det else float("nan")
    recall = m / n_true if n_true else float("nan")
    f1 = 2 * m / (n_true + n_det) if (n_true + n_det) else float("nan")
    return {
        "n_true": float(n_true),
        "n_detected": float(n_det),
        "n_matched": float(m),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_position_error_frames": float(np.mean(errors)) if errors else float("nan"),
    }
