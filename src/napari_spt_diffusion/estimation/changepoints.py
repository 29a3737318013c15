"""Changepoints in per-frame diffusion estimates.

The per-frame estimates of a pointwise model (D1, D2, theta for every frame of a
track) are segmented into stretches of constant diffusive state.

Cost and conventions
--------------------
The cost of a segment is the summed squared deviation of its values from the segment's
mean (the cost of the cross-transformer report). A changepoint ``c`` (an index along
the sequence) means that samples ``< c`` belong to one state and samples ``>= c`` to
the next, as in the results contract (``docs/results_contract.md``).

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
Changepoints found in the per-frame estimates are then confirmed on the frame-to-frame
displacements by :mod:`~napari_spt_diffusion.estimation.confirmation`; per-segment
tables are made by :mod:`~napari_spt_diffusion.estimation.segments`.

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

from typing import Any

import numpy as np

from ..errors import SptDiffusionError

__all__ = [
    "DEFAULT_PENALTY",
    "DEFAULT_PENALTY_MULTI",
    "DEFAULT_PENALTY_PELT",
    "robust_noise_variance",
    "pelt",
    "DEFAULT_MIN_EFFECT",
    "DEFAULT_NOISE_FLOOR",
    "ChangepointError",
    "changepoint_features",
    "single_changepoint",
    "changepoint_statistic",
    "decision_threshold",
    "decide_single_changepoint",
    "multiple_changepoints",
    "state_labels",
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
        neighbours) or ``"pelt"`` (this module's exact PELT, :func:`pelt`: the l2 cost, every
        index allowed, the problem ``ruptures.Pelt`` solves; ruptures itself is not used).
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
                float(
                    ((whole - whole.mean(0)) ** 2).sum()
                    - ((left - left.mean(0)) ** 2).sum()
                    - ((right - right.mean(0)) ** 2).sum()
                )
            )
        del cps[int(np.argmin(gains))]
    return cps


# ------------------------------------------------------------------ labels
def state_labels(n_samples: int, changepoints: Any) -> np.ndarray:
    """``(T,)`` int segment index of every sample (0 before the first changepoint, ...)."""
    cps = np.asarray(changepoints, dtype=np.int64).reshape(-1)
    if cps.size and (np.any(cps <= 0) or np.any(cps >= n_samples) or np.any(np.diff(cps) <= 0)):
        raise ChangepointError("changepoints must be increasing indices inside (0, T)")
    return np.searchsorted(cps, np.arange(n_samples), side="right").astype(np.int64)
