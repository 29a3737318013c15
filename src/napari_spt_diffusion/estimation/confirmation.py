"""Confirmation of changepoints on the frame-to-frame displacements.

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

The changepoints themselves come from
:mod:`~napari_spt_diffusion.estimation.changepoints` (row indices along a track: rows
``< c`` belong to one state, rows ``>= c`` to the next).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .changepoints import ChangepointError, state_labels

__all__ = [
    "DEFAULT_CONFIRM_ALPHA",
    "DEFAULT_CONFIRM_GUARD",
    "displacement_variance_test",
    "confirm_changepoints",
]

#: Family-wise error rate per track of the displacement confirmation.
DEFAULT_CONFIRM_ALPHA: float = 0.05
#: Displacements left out on each side of a changepoint by the confirmation.
DEFAULT_CONFIRM_GUARD: int = 0


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
    the merged segments, until every remaining one passes ``alpha``. The candidates were
    chosen where the estimates jump most, which the p-values do not know about; on
    simulated one-state tracks through the bundled models this selection kept the
    family-wise rate below ``alpha`` (measured in ``benchmarks/reports/changepoints.md``:
    at ``alpha = 0.05`` at most 2 % of the one-state tracks of 30-200 frames kept a
    changepoint, 4.2 % in the worst D1 sub-range). ``scan_correction`` additionally
    multiplies each p-value by the number of positions the changepoint could have taken
    between its neighbours (Bonferroni over the scan: guaranteed, but it measured 0 false
    changepoints at the price of 2-4 % of the binding switches).

    Parameters
    ----------
    changepoints
        ``(m,)`` increasing row indices (as from
        :func:`~napari_spt_diffusion.estimation.changepoints.multiple_changepoints`).
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
