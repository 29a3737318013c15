"""Does a track diffuse isotropically? A test on its displacements, and the movie's verdict.

Why: the eigenvalues of a tensor estimated from a short track split even when the motion is
isotropic (the larger reads high, the smaller low), so every track of a free-diffusion movie
shows some anisotropy ``1 - D2 / D1`` and an orientation ``theta``. This module says where more
than chance is seen.

Per track (:func:`isotropy_p_value`): the null hypothesis is that the track's frame-to-frame
displacements have an isotropic covariance: ``D1 = D2``, an isotropic localization error (a round
PSF) and no elongated confinement (a particle diffusing with ``D1 = D2`` inside a rod-shaped
compartment takes anisotropic steps, and the test says so); the steps radially symmetric (their
directions independent of their lengths) and correlated only with their neighbours. The statistic
is the 2-D sphericity ratio of the displacements' scatter matrix ``S`` (each segment's mean
displacement taken out, so a constant drift or flow does not count)::

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
steps of any sizes (about ``n + 1`` for Gaussian steps of one size, hence the second factor);
``rho`` is the lag-1 correlation of the steps, estimated on the track (pooled over segments and
axes), and its square has ``1 / n`` taken off (about twice its small-sample bias; chosen so that
noise-dominated tracks keep the nominal rate, ``tests/test_isotropy.py``). Only displacements
between consecutive frames within one segment are used (none across a gap or a changepoint), and
single-frame excursions inside a segment are left out first (:func:`without_excursions`): a
localization pulled off by a neighbour's light makes two large, opposite steps along one line, an
anisotropic localization error that would otherwise count as anisotropic motion. On the foreign
renderer's free-diffusion movies at NA 0.8 the false alarms at p < 0.05 were 10.1 % without that
rule and 5.7 % with it on the seeds it was chosen on (``benchmarks/reports/isotropy_without_excursions.md``,
``isotropy.md``), 9.5 % with it on five other seeds (``isotropy_heldout.md``), and 4.2 % on five more run
once after every choice (``isotropy_check.md``, the independent check of false alarms and power: 7.0 % at
NA 1.45 and on binding and unbinding tracks, each within the range of chance). Segments
with different orientations are pooled into one ``S``, where their anisotropies can cancel.

The test uses the positions only, whatever estimator gave the track's D1 / D2 (a model, or the
classical tensor); it does not read the spots' shapes. Even a strongly anisotropic short track is
often not shown anisotropic (``isotropy_check.md``: of the tracks that follow one particle with
``D2 / D1`` 0.1-0.4, 19 % at 5-20 frames).

Per movie (:func:`movie_isotropy`): the number of tracks with ``p < alpha`` is compared with what a
per-track rate of :data:`MOVIE_NULL_RATE` (twice ``alpha``) gives, not ``alpha``: on the independent
renderer's isotropic movies at NA 0.8 the per-track rate reached 9.5 % on one set of seeds (its cause is
not measured; a scratch look at another set pointed at slow particles beside a neighbour), and against
5 % so small an excess
would call a large isotropic movie anisotropic (computed from the binomial: at a rate of 9.5 %, 62 % of
isotropic movies of 220 tracks and 94 % of 500; against 10 %, 0.3 %). The
movie's p-value is that binomial upper tail. The share of anisotropic tracks is bounded from below
from the p-values above 1/2 (Storey's estimator of the null share): a track whose anisotropy the test
cannot see counts as isotropic there, so the true share can be far higher (the anisotropic test
movies, every track anisotropic, read 19-60 % over the three reports).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "MOVIE_ALPHA", "MOVIE_NULL_RATE", "MovieIsotropy", "isotropy_p_value", "movie_isotropy",
           "without_excursions"]

#: Per-track level at which a track is counted as anisotropic in the movie's verdict.
ALPHA = 0.05
#: Level of the movie's binomial test (the verdict says "anisotropic" below it).
MOVIE_ALPHA = 0.01
#: Per-track rate of ``p < ALPHA`` that the movie verdict allows before it calls a movie anisotropic:
#: twice ``ALPHA``, since the rate reached 9.5 % on the independent renderer's isotropic movies at NA 0.8
#: (``benchmarks/reports/isotropy_heldout.md``; the cause is not measured).
MOVIE_NULL_RATE = 0.10
#: Fewest judged frames in a segment before its excursions are looked for (the median of fewer is noisy).
MIN_EXCURSION_FRAMES = 8
#: Fewest effective degrees of freedom for a p-value (below: NaN).
MIN_DOF = 2.0
#: Quantile beyond which a frame's distance from its neighbours' midpoint makes it an excursion.
EXCURSION_LEVEL = 0.999


def isotropy_p_value(positions_px: np.ndarray, frames: np.ndarray, segments: np.ndarray | None = None) -> float:
    """p-value of the hypothesis that one track's displacements are isotropic (``D1 = D2``, a round PSF, no
    elongated confinement; module docstring).

    Parameters
    ----------
    positions_px
        ``(T, 2)`` positions of the track's localizations (any consistent unit: the test is
        scale-free), one row per localization, in frame order.
    frames
        ``(T,)`` integer frame of each row (increasing); only displacements between consecutive
        frames are used.
    segments
        ``(T,)`` segment (state) label of each row, e.g. the tracks table's ``state``; each run of
        one label is a segment (a label that comes back starts a new one); displacements across a
        change are not used. ``None``: one segment.

    Returns
    -------
    float
        ``p`` in [0, 1]: small when the displacements are anisotropic beyond chance (0 for steps
        all along one line); NaN when the track has too few usable displacements (fewer than
        :data:`MIN_DOF` effective degrees of freedom) or does not move at all.
    """
    pos = np.asarray(positions_px, dtype=float)
    fr = np.asarray(frames)
    if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) != len(fr) or (segments is not None
                                                                       and len(segments) != len(fr)):
        raise ValueError(f"positions_px must be (T, 2) with T = len(frames) = len(segments); got {pos.shape}, "
                         f"{len(fr)} frames, {len(fr) if segments is None else len(segments)} segment labels")
    seg = _runs(segments, len(fr))
    if len(pos) < 3:
        return float("nan")
    pos = without_excursions(pos, fr, seg)
    located = np.all(np.isfinite(pos), axis=1)
    usable = (np.diff(fr) == 1) & (seg[1:] == seg[:-1]) & located[1:] & located[:-1]
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
    # than others (segments of different D, heavy tails): 2 (sum q)^2 / sum q^2, about n + 1 there
    dof = 2.0 * trace**2 / float(np.sum(squared**2)) * (n_steps - n_segments) / (n_steps + 1.0)
    pairs = used[1:] & used[:-1] & (step_segment[1:] == step_segment[:-1])
    if pairs.any():
        rho = float(np.sum(centred[1:][pairs] * centred[:-1][pairs]) / trace)
        dof /= 1.0 + 2.0 * max(rho * rho - 1.0 / n_steps, 0.0)
    if dof < MIN_DOF:
        return float("nan")
    ratio = 4.0 * float(np.linalg.det(scatter)) / trace**2
    return float(np.clip(ratio, 0.0, 1.0) ** ((dof - 1.0) / 2.0))


def _runs(labels: np.ndarray | None, n: int) -> np.ndarray:
    """``(n,)`` index of each row's run of equal labels (0, 1, 2, ...); all 0 for ``None``."""
    if labels is None:
        return np.zeros(n, dtype=np.int64)
    values = np.asarray(labels)
    return np.r_[0, np.cumsum(values[1:] != values[:-1])].astype(np.int64) if n else np.zeros(0, dtype=np.int64)


def without_excursions(positions: np.ndarray, frames: np.ndarray, segments: np.ndarray | None = None,
                       level: float = EXCURSION_LEVEL) -> np.ndarray:
    """The positions with single-frame excursions set to NaN (a copy; ``(T, 2)``, any unit).

    A localization that a neighbour's light pulls off, or a linking slip to another spot for one
    frame, makes two large, opposite steps along one direction: anisotropic, whatever the particle
    does. Frame ``k`` is an excursion when its distance from the midpoint of frames ``k - 1`` and
    ``k + 1``, ``e_k = x_k - (x_{k-1} + x_{k+1}) / 2``, is beyond what the track's spread gives:
    ``|e_k|^2`` over the median of ``|e|^2`` in its segment (``segments``, ``(T,)`` labels, each run
    one segment; ``None``: one), times ``2 ln 2`` (the median of a chi-square with 2 degrees of
    freedom), beyond the chi-square's ``level`` quantile, and not below either neighbour's (an
    excursion moves its neighbours' midpoints by half its own). Only frames whose two neighbours are
    the frames before and after, in the same segment, are judged, and only in segments with at least
    :data:`MIN_EXCURSION_FRAMES` such frames; the first and last frame of a track, and frames beside
    a gap or a change, are never left out. Under Gaussian steps a few frames in 1,000 are left out
    (more in short segments, whose median is noisier).
    """
    pos = np.array(positions, dtype=float, copy=True)
    fr = np.asarray(frames)
    seg = _runs(segments, len(fr))
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
        if rows.sum() >= MIN_EXCURSION_FRAMES:
            out[1:-1] |= rows & peak & (dev2 > threshold * np.median(dev2[rows]))
    pos[out] = np.nan
    return pos


@dataclass(frozen=True)
class MovieIsotropy:
    """The movie's isotropy verdict from its tracks' p-values (:func:`movie_isotropy`).

    ``n_tested``: tracks with a p-value; ``n_anisotropic``: those with ``p < alpha``;
    ``expected_by_chance``: ``alpha n_tested``; ``null_rate``: the per-track rate the verdict
    allows (:data:`MOVIE_NULL_RATE`); ``movie_p``: the chance of ``n_anisotropic`` or more at that
    rate (binomial upper tail; NaN without tracks); ``anisotropic``: ``movie_p < movie_alpha``;
    ``anisotropic_share_lower_bound``: ``1 - 2 #(p > 1/2) / n_tested`` clipped to [0, 1] (Storey's
    estimator of the anisotropic share, lambda = 1/2: a lower bound, since tracks whose anisotropy
    the test cannot see count as isotropic), with ``anisotropic_share_se`` its counting (binomial)
    standard error only; ``text``: one sentence for the user.
    """

    n_tested: int
    n_anisotropic: int
    alpha: float
    expected_by_chance: float
    null_rate: float
    movie_p: float
    movie_alpha: float
    anisotropic: bool
    anisotropic_share_lower_bound: float
    anisotropic_share_se: float
    text: str

    def to_dict(self) -> dict[str, object]:
        """The fields as a JSON-ready dict (``_meta.json``'s ``isotropy``)."""
        return asdict(self)


def movie_isotropy(p_values: Sequence[float] | np.ndarray, alpha: float = ALPHA,
                   movie_alpha: float = MOVIE_ALPHA, null_rate: float = MOVIE_NULL_RATE) -> MovieIsotropy:
    """The movie's verdict: are more of its tracks anisotropic than a per-track rate of ``null_rate`` explains?

    ``p_values``: the tracks' :func:`isotropy_p_value` (NaN entries are left out). The tracks are
    taken as independent (one particle each). The count of ``p < alpha`` is tested against a
    per-track rate of ``null_rate`` (module docstring).
    """
    p = np.asarray(p_values, dtype=float)
    p = p[np.isfinite(p)]
    n = int(p.size)
    nan = float("nan")
    if n == 0:
        return MovieIsotropy(0, 0, alpha, 0.0, null_rate, nan, movie_alpha, False, nan, nan,
                             "Isotropy: no track had enough steps to test.")
    hits = int((p < alpha).sum())
    movie_p = float(stats.binom.sf(hits - 1, n, null_rate))
    above = int((p > 0.5).sum())
    share = float(np.clip(1.0 - 2.0 * above / n, 0.0, 1.0))
    share_se = float(2.0 * math.sqrt(above * (n - above) / n) / n)
    anisotropic = movie_p < movie_alpha
    counted = (f"{hits} of {n} tracks anisotropic at p < {alpha:g} ({alpha * n:.1f} expected by chance; the "
               f"verdict allows up to {null_rate * n:.1f}, movie p = {movie_p:.2g})")
    share_text = f", at least about {100 * share:.0f} % of them" if share > 0 else ""
    if anisotropic:
        text = (f"Isotropy: {counted}: some tracks diffuse anisotropically{share_text}; a track's D1 / D2 split and "
                f"theta mean something where its isotropy_p is small.")
    else:
        text = (f"Isotropy: {counted}: no evidence of anisotropic diffusion beyond that; the test is weak for short "
                f"tracks, and a short track's D1 / D2 split and theta do not show anisotropy by themselves.")
    return MovieIsotropy(n, hits, alpha, alpha * n, null_rate, movie_p, movie_alpha, anisotropic, share, share_se,
                         text)
