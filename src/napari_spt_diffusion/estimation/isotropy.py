"""Does a track diffuse isotropically? A test of ``D1 = D2`` on its displacements, and the movie's verdict.

Why: the eigenvalues of a tensor estimated from a short track split even when the motion is
isotropic (the larger reads high, the smaller low), so every track of a free-diffusion movie
shows some anisotropy ``1 - D2 / D1`` and an orientation ``theta``. This module says which of
them chance explains.

Per track (:func:`isotropy_p_value`): the null hypothesis is that the track's frame-to-frame
displacements have an isotropic covariance: ``D1 = D2`` and an isotropic localization error (a
round PSF). The statistic is the 2-D sphericity ratio of the displacements' scatter matrix ``S``
(each segment's mean displacement taken out, so a constant drift or flow does not count)::

    V = 4 det(S) / tr(S)^2 = 1 - ((l1 - l2) / (l1 + l2))^2        (l1, l2: eigenvalues of S)

For ``k`` independent Gaussian 2-vectors of isotropic covariance (Wishart scatter with ``k``
degrees of freedom), ``P(V <= v) = v^((k - 1) / 2)`` exactly (the sphericity test in two
dimensions), so ``p = V^((k - 1) / 2)``. A track's displacements are not independent: localization
noise and motion blur correlate neighbours (lag-1 correlation ``rho`` between -1/2, noise alone,
and +1/4, blur alone), and the steps need not be of one size (segments of different D, a transient
binding the estimator did not cut, heavy-tailed localization errors). Both lower the information in
``S``, so ``k`` is replaced by an effective value estimated on the track::

    k_eff = 2 (sum_i q_i)^2 / sum_i q_i^2 * (n - m) / (n + 1) / (1 + 2 rho^2)

with ``q_i`` the squared length of step ``i`` (its segment's mean taken out), ``n`` the steps, ``m``
the segments. Under isotropy the variance of the statistic's anisotropic part is ``sum E q_i^2 / 8``
for any radially symmetric steps, so the first factor is the Satterthwaite degrees of freedom of
steps of any sizes (``n + 1`` on average for Gaussian steps of one size, hence the second factor);
``rho`` is the lag-1 correlation of the steps, estimated on the track (pooled over segments and axes;
its square less its ``1 / n`` small-sample bias). Only displacements between
consecutive frames within one segment are used (none across a gap or a changepoint), and single-frame
excursions are left out first (:func:`without_excursions`): a localization pulled off by a
neighbour's light makes two large, opposite steps along one line, an anisotropic localization error
that would otherwise count as anisotropic motion (on the foreign renderer's free-diffusion movies at
NA 0.8 the false alarms at p < 0.05 were 10.1 % with them, 5.8 % without, on the seeds the rule was chosen on:
``benchmarks/reports/isotropy_without_excursions.md``, ``isotropy.md``). Checked on
simulated tracks in ``tests/test_isotropy.py`` and end to end on the foreign renderer's movies in
``benchmarks/reports/isotropy.md``.

The test uses the positions only. It is therefore independent of the estimator that gave the
track's D1 / D2 (a model, or the classical tensor), and weaker than what a model reads from the
spots' blurred shapes: a short track of moderate anisotropy is often not shown anisotropic.

Per movie (:func:`movie_isotropy`): under isotropic diffusion of every track, the number of
tracks with ``p < alpha`` is binomial ``(n, alpha)``; its upper tail is the movie's p-value. The
share of anisotropic tracks is estimated from the p-values above 1/2 (Storey's estimator of the
null share), which does not need the test's power.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "MOVIE_ALPHA", "MovieIsotropy", "isotropy_p_value", "movie_isotropy", "without_excursions"]

#: Per-track level at which a track is counted as anisotropic in the movie's verdict.
ALPHA = 0.05
#: Level of the movie's binomial test (the verdict says "anisotropic beyond chance" below it).
MOVIE_ALPHA = 0.01
#: Fewest effective degrees of freedom for a p-value (below: NaN).
MIN_DOF = 2.0
#: Quantile beyond which a frame's distance from its neighbours' midpoint makes it an excursion.
EXCURSION_LEVEL = 0.999


def isotropy_p_value(positions_px: np.ndarray, frames: np.ndarray, segments: np.ndarray | None = None) -> float:
    """p-value of the hypothesis that one track diffuses isotropically (``D1 = D2``).

    Parameters
    ----------
    positions_px
        ``(T, 2)`` positions of the track's localizations (any consistent unit: the test is
        scale-free), one row per localization, in frame order.
    frames
        ``(T,)`` integer frame of each row (increasing); only displacements between consecutive
        frames are used.
    segments
        ``(T,)`` segment (state) index of each row, e.g. the tracks table's ``state``;
        displacements across a change are not used. ``None``: one segment.

    Returns
    -------
    float
        ``p`` in (0, 1]: small when the displacements are anisotropic beyond chance; NaN when the
        track has too few usable displacements (fewer than :data:`MIN_DOF` effective degrees of
        freedom) or does not move at all.
    """
    pos = np.asarray(positions_px, dtype=float)
    fr = np.asarray(frames)
    seg = np.zeros(len(fr), dtype=np.int64) if segments is None else np.asarray(segments)
    if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) != len(fr) or len(seg) != len(fr):
        raise ValueError(f"positions_px must be (T, 2) with T = len(frames) = len(segments); got {pos.shape}, "
                         f"{len(fr)} frames, {len(seg)} segment labels")
    if len(pos) < 3:
        return float("nan")
    pos = without_excursions(pos, fr, seg)
    usable = (np.diff(fr) == 1) & (seg[1:] == seg[:-1]) & np.all(np.isfinite(pos), axis=1)[1:] & np.all(
        np.isfinite(pos), axis=1)[:-1]
    steps = np.diff(pos, axis=0)
    step_segment = seg[:-1]
    centred = np.full_like(steps, np.nan)  # each segment's mean step taken out
    n_segments = 0
    for s in np.unique(step_segment[usable]):
        rows = usable & (step_segment == s)
        if rows.sum() >= 2:
            centred[rows] = steps[rows] - steps[rows].mean(axis=0)
            n_segments += 1
    used = np.isfinite(centred[:, 0])
    d = centred[used]
    n_steps = len(d)
    squared = np.sum(d * d, axis=1)
    trace = float(squared.sum())
    if n_steps - n_segments < MIN_DOF or not trace > 0:
        return float("nan")
    scatter = d.T @ d
    # the Gaussian value n - (segments) where the steps are alike; less where some steps are much larger
    # than others (segments of different D, heavy tails): 2 (sum q)^2 / sum q^2, whose mean is n + 1 there
    dof = 2.0 * trace**2 / float(np.sum(squared**2)) * (n_steps - n_segments) / (n_steps + 1.0)
    pairs = used[1:] & used[:-1] & (step_segment[1:] == step_segment[:-1])
    if pairs.any():
        rho = float(np.sum(centred[1:][pairs] * centred[:-1][pairs]) / trace)
        dof /= 1.0 + 2.0 * max(rho * rho - 1.0 / n_steps, 0.0)
    if dof < MIN_DOF:
        return float("nan")
    ratio = 4.0 * float(np.linalg.det(scatter)) / trace**2
    return float(np.clip(ratio, 0.0, 1.0) ** ((dof - 1.0) / 2.0))


def without_excursions(positions: np.ndarray, frames: np.ndarray, segments: np.ndarray | None = None,
                       level: float = EXCURSION_LEVEL) -> np.ndarray:
    """The positions with single-frame excursions set to NaN (a copy; ``(T, 2)``, any unit).

    A localization that a neighbour's light pulls off, or a linking slip to another spot for one
    frame, makes two large, opposite steps along one direction: anisotropic, whatever the particle
    does. Frame ``k`` is an excursion when its distance from the midpoint of frames ``k - 1`` and
    ``k + 1``, ``e_k = x_k - (x_{k-1} + x_{k+1}) / 2``, is beyond what the track's spread gives:
    ``|e_k|^2`` over the median of ``|e|^2`` in its segment (``segments``, ``(T,)``; ``None``: one),
    times ``2 ln 2`` (the median of a chi-square with 2 degrees of freedom), beyond the chi-square's
    ``level`` quantile, and not below either neighbour's (an excursion moves its neighbours' midpoints
    by half its own). Only frames whose two neighbours are the frames before and after, in the same
    segment, are judged. Under Gaussian steps fewer than 1 frame in ``1 / (1 - level)`` is left out.
    """
    pos = np.array(positions, dtype=float, copy=True)
    fr = np.asarray(frames)
    seg = np.zeros(len(fr), dtype=np.int64) if segments is None else np.asarray(segments)
    if len(pos) < 5:
        return pos
    judged = ((fr[2:] - fr[:-2]) == 2) & (seg[2:] == seg[1:-1]) & (seg[:-2] == seg[1:-1])
    dev = pos[1:-1] - 0.5 * (pos[:-2] + pos[2:])
    dev2 = np.sum(dev * dev, axis=1)
    judged &= np.isfinite(dev2)
    # an excursion at k moves its neighbours' midpoints by half as much: only the largest of three counts
    padded = np.r_[-np.inf, np.where(judged, dev2, -np.inf), -np.inf]
    peak = (padded[1:-1] >= padded[:-2]) & (padded[1:-1] >= padded[2:])
    out = np.zeros(len(pos), dtype=bool)
    threshold = stats.chi2.ppf(level, 2) / (2.0 * math.log(2.0))
    for s in np.unique(seg[1:-1][judged]):
        rows = judged & (seg[1:-1] == s)
        if rows.sum() >= 3:
            out[1:-1] |= rows & peak & (dev2 > threshold * np.median(dev2[rows]))
    pos[out] = np.nan
    return pos


@dataclass(frozen=True)
class MovieIsotropy:
    """The movie's isotropy verdict from its tracks' p-values (:func:`movie_isotropy`).

    ``n_tested``: tracks with a p-value; ``n_anisotropic``: those with ``p < alpha``;
    ``expected_by_chance``: ``alpha n_tested``; ``movie_p``: binomial upper tail of
    ``n_anisotropic`` (NaN without tracks); ``anisotropic_share``: estimated share of the tracks
    that are anisotropic, ``1 - 2 #(p > 1/2) / n_tested`` clipped to [0, 1] (Storey's estimator,
    lambda = 1/2), with ``anisotropic_share_se`` its binomial standard error; ``anisotropic``:
    ``movie_p < movie_alpha``; ``text``: one sentence for the user.
    """

    n_tested: int
    n_anisotropic: int
    alpha: float
    expected_by_chance: float
    movie_p: float
    movie_alpha: float
    anisotropic_share: float
    anisotropic_share_se: float
    anisotropic: bool
    text: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def movie_isotropy(p_values: Sequence[float] | np.ndarray, alpha: float = ALPHA,
                   movie_alpha: float = MOVIE_ALPHA) -> MovieIsotropy:
    """The movie's verdict: are more of its tracks anisotropic than chance explains?

    ``p_values``: the tracks' :func:`isotropy_p_value` (NaN entries are left out). The tracks are
    taken as independent (one particle each).
    """
    p = np.asarray(p_values, dtype=float)
    p = p[np.isfinite(p)]
    n = int(p.size)
    if n == 0:
        return MovieIsotropy(0, 0, alpha, 0.0, float("nan"), movie_alpha, float("nan"), float("nan"), False,
                             "Isotropy: no track had enough steps to test.")
    hits = int((p < alpha).sum())
    movie_p = float(stats.binom.sf(hits - 1, n, alpha))
    above = int((p > 0.5).sum())
    share = float(np.clip(1.0 - 2.0 * above / n, 0.0, 1.0))
    share_se = float(2.0 * math.sqrt(max(above * (n - above), 0) / n) / n)
    anisotropic = movie_p < movie_alpha
    counted = f"{hits} of {n} tracks anisotropic at p < {alpha:g} ({alpha * n:.1f} expected by chance"
    if anisotropic:
        text = (f"Isotropy: {counted}; movie p = {movie_p:.2g}): some tracks diffuse anisotropically, about "
                f"{100 * share:.0f} +- {100 * share_se:.0f} % of them; a track's D1 / D2 split and theta mean "
                f"something where its isotropy_p is small.")
    else:
        text = (f"Isotropy: {counted}; movie p = {movie_p:.2g}): the tracks are consistent with isotropic "
                f"diffusion; the split between their D1 and D2, and their theta, are within chance.")
    return MovieIsotropy(n, hits, alpha, alpha * n, movie_p, movie_alpha, share, share_se, anisotropic, text)
