"""PSF width, shape and flux from the mean radial profile of a movie's sharpest spots.

A free-width Gaussian fit reads an Airy spot narrower than its Gaussian-equivalent width
(``0.21 lambda / NA``, the width the models are trained at) and misses the photons in its
rings, the more so the brighter the spot (``benchmarks/reports/calibration.md``). The mean
radial profile of many spots, each centred on its fitted position and divided by its fitted
photons, shows the PSF itself; :func:`measure_psf` fits it by least squares with a Gaussian
and with a scalar Airy profile, each of free width and scale:

* the **shape** is the profile that fits better by :data:`SHAPE_EVIDENCE` in squared residuals
  (else ``"unknown"``);
* the **width** is that profile's, corrected for the pixel (a pixelated image seen about
  sub-pixel centres is the PSF convolved with the pixel: ``+1/12 px^2`` per axis) and for the
  spots' motion blur (``px^2`` per axis, given by the caller); for ``"unknown"`` (also whenever
  the blur is large: it makes an Airy profile look Gaussian) the mean of the two profiles' widths;
* the **flux ratio** is the photons under the fitted profile over the photons of the
  Gaussian fits the spots were divided by (the scale times the profile's integral:
  ``2 pi s^2`` for a Gaussian, ``4 pi / k^2`` for the Airy ``[2 J1(k r) / (k r)]^2``). It is
  about 1 for a Gaussian PSF and about 1.15 for an Airy one, whose rings and tails a
  Gaussian fit does not collect; ``"unknown"`` takes the Gaussian's.

Each profile is fitted with a free scale and a free constant (a Gaussian fit's background takes
some of an Airy spot's ring light). Uncertainties come from a bootstrap over groups of spots that
lie close together (a static particle gives many spots on the same pixels, whose fixed-pattern
camera noise, e.g. an sCMOS camera's per-pixel gain, they share: they are one sample, not many),
keeping the full sample's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, sparse, special
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

__all__ = ["AIRY_FLUX_RATIO", "ProfileFit", "SHAPE_EVIDENCE", "measure_psf", "radial_sums"]

#: The PSF shape is called Gaussian or Airy only when one profile's squared residuals are this
#: many times smaller than the other's (on the grid, wrong verdicts had ratios 0.82-1.41).
SHAPE_EVIDENCE = 1.5
#: Radial bin width (px) of the mean profile.
BIN_PX = 0.25
#: Variance (px^2 per axis) that integration over a pixel adds to a PSF seen about sub-pixel centres.
PIXEL_VARIANCE_PX2 = 1.0 / 12.0
#: Gaussian-equivalent width of the Airy intensity, in units of lambda / NA (first zero at 1.22).
AIRY_SIGMA_PER_LAMBDA_NA = 0.21
#: Photons under an Airy PSF over a free-width Gaussian fit's, about (the profile measures it; this is what a
#: calibration without a profile allows for: ``benchmarks/reports/calibration.md``, the Airy cells' flux ratios).
AIRY_FLUX_RATIO = 1.15
#: Fewest spots a profile is fitted on.
MIN_PROFILE_SPOTS = 10
#: Widths searched, as multiples of the caller's guess.
_SEARCH = (0.4, 2.5)
#: Above this blur variance (x the guess squared) the shape is not judged: blur washes out the rings.
BLUR_SHAPE_LIMIT = 0.25
#: Fewest groups of nearby spots (particles) the bootstrap resamples; with fewer it resamples the
#: spots, and the uncertainty is a lower bound.
MIN_BOOTSTRAP_GROUPS = 8


@dataclass(frozen=True)
class ProfileFit:
    """PSF measured from the mean radial profile of ``n_spots`` spots.

    Attributes
    ----------
    shape
        ``"gaussian"``, ``"airy"`` or ``"unknown"``.
    evidence
        Squared residuals of the best Gaussian over those of the best Airy profile (above 1
        favours Airy).
    sigma_px, sigma_se_px
        Gaussian-equivalent PSF width (px), corrected for pixel and blur, and its standard
        uncertainty (bootstrap over groups of nearby spots, plus half the blur correction as a
        systematic part).
    flux_ratio, flux_ratio_se
        Photons under the PSF over a free-width Gaussian fit's photons (dimensionless), and
        its uncertainty (bootstrap; for an ``"unknown"`` shape, which takes the Gaussian's, also
        half the difference from the Airy profile's).
    n_spots
        Spots in the profile.
    n_groups
        Groups of nearby spots the bootstrap resampled (spots when fewer than
        :data:`MIN_BOOTSTRAP_GROUPS` groups: then ``n_spots``).
    """

    shape: str
    evidence: float
    sigma_px: float
    sigma_se_px: float
    flux_ratio: float
    flux_ratio_se: float
    n_spots: int
    n_groups: int


def radial_sums(photons: np.ndarray, spots: dict[str, np.ndarray], rows: np.ndarray,
                half_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per spot, the binned sums and pixel counts of its normalised excess over radius.

    Parameters
    ----------
    photons
        ``(T, Y, X)`` frames in photons.
    spots
        Spot table with ``frame``, ``y_px``, ``x_px``, ``photons``, ``background`` (``(K,)`` each).
    rows
        Rows of ``spots`` to use; spots whose ``(2 half_px + 1)`` px window leaves the frame are skipped.
    half_px
        Half-width (px) of the square window around each spot.

    Returns
    -------
    sums, counts
        ``(n, B)``: per used spot and radial bin of width :data:`BIN_PX`, the sum of
        ``(pixel - background) / photons`` and the number of pixels.
    centres
        ``(B,)`` bin centres (px).
    used
        ``(n,)`` the rows of ``spots`` behind each line of ``sums``.
    """
    edges = np.arange(0.0, float(half_px), BIN_PX)
    n_bins = len(edges) - 1
    offsets = np.arange(-half_px, half_px + 1)
    _, height, width = photons.shape
    sums, counts, used = [], [], []
    for i in np.asarray(rows, dtype=np.int64):
        t, y, x = int(spots["frame"][i]), float(spots["y_px"][i]), float(spots["x_px"][i])
        cy, cx = int(round(y)), int(round(x))
        if cy - half_px < 0 or cx - half_px < 0 or cy + half_px >= height or cx + half_px >= width:
            continue
        window = photons[t, cy - half_px : cy + half_px + 1, cx - half_px : cx + half_px + 1]
        radius = np.hypot(offsets[:, None] + cy - y, offsets[None, :] + cx - x).ravel()
        excess = ((window - spots["background"][i]) / max(float(spots["photons"][i]), 1.0)).ravel()
        index = np.digitize(radius, edges) - 1
        inside = (index >= 0) & (index < n_bins)
        sums.append(np.bincount(index[inside], weights=excess[inside], minlength=n_bins))
        counts.append(np.bincount(index[inside], minlength=n_bins).astype(np.float64))
        used.append(i)
    centres = 0.5 * (edges[:-1] + edges[1:])
    if not sums:
        return np.zeros((0, n_bins)), np.zeros((0, n_bins)), centres, np.zeros(0, dtype=np.int64)
    return np.array(sums), np.array(counts), centres, np.array(used, dtype=np.int64)


def _gaussian(r: np.ndarray, s: float) -> np.ndarray:
    return np.exp(-(r**2) / (2.0 * s**2))


def _airy(r: np.ndarray, s: float) -> np.ndarray:
    v = np.maximum(AIRY_SIGMA_PER_LAMBDA_NA * 2.0 * math.pi * r / s, 1e-9)  # v = 2 pi NA r / lambda
    return (2.0 * special.j1(v) / v) ** 2


def _integral(profile: str, s: float) -> float:
    """Integral over the plane (px^2) of the unit-peak profile of width ``s`` px."""
    if profile == "gaussian":
        return 2.0 * math.pi * s**2
    k = AIRY_SIGMA_PER_LAMBDA_NA * 2.0 * math.pi / s
    return 4.0 * math.pi / k**2


def _best(profile: str, centres: np.ndarray, values: np.ndarray, guess: float
          ) -> tuple[float, float, float, bool]:
    """Least-squares ``(width px, squared residuals, flux ratio, at a search bound)`` of one profile
    shape, with a free scale and a free constant (the spots' fitted backgrounds are not exact: a
    Gaussian fit takes some of an Airy spot's ring light for background)."""
    model_of = _gaussian if profile == "gaussian" else _airy

    def residuals(s: float) -> tuple[float, float]:
        design = np.column_stack([model_of(centres, s), np.ones_like(centres)])
        coef, *_ = np.linalg.lstsq(design, values, rcond=None)
        return float(np.sum((values - design @ coef) ** 2)), float(coef[0])

    low, high = guess * _SEARCH[0], guess * _SEARCH[1]
    found = optimize.minimize_scalar(lambda s: residuals(s)[0], bounds=(low, high), method="bounded",
                                     options={"xatol": 1e-4 * guess})
    s = float(found.x)
    sse, scale = residuals(s)
    at_bound = s < low * 1.01 or s > high * 0.99
    return s, sse, scale * _integral(profile, s), at_bound


def _fit(sums: np.ndarray, counts: np.ndarray, centres: np.ndarray, guess: float, shape: str | None = None,
         blurred: bool = False) -> tuple[str, float, float, float, bool, float]:
    """``(shape, evidence, width px before corrections, flux ratio, at a search bound, Airy flux ratio)`` of one
    set of spots; the last is NaN but for ``"unknown"``, whose width is the two profiles' mean and whose flux the
    Gaussian's. ``shape`` given: that shape's width and flux (the bootstrap
    keeps the full sample's; a Gaussian or Airy shape then fits that profile alone and returns no evidence,
    NaN); ``blurred``: no verdict (motion blur makes an Airy profile look Gaussian)."""
    total = counts.sum(axis=0)
    used = total > 5
    values = sums.sum(axis=0)[used] / total[used]
    r = centres[used]
    nan = float("nan")
    if shape in ("gaussian", "airy"):
        width, _, flux, at_bound = _best(shape, r, values, guess)
        return shape, nan, width, flux, at_bound, nan
    s_g, sse_g, flux_g, bound_g = _best("gaussian", r, values, guess)
    s_a, sse_a, flux_a, bound_a = _best("airy", r, values, guess)
    evidence = sse_g / max(sse_a, 1e-30)
    if shape is None:
        shape = "unknown"
        if not blurred and evidence >= SHAPE_EVIDENCE:
            shape = "airy"
        elif not blurred and evidence <= 1.0 / SHAPE_EVIDENCE:
            shape = "gaussian"
    if shape == "airy":
        return shape, evidence, s_a, flux_a, bound_a, nan
    if shape == "gaussian":
        return shape, evidence, s_g, flux_g, bound_g, nan
    return shape, evidence, 0.5 * (s_g + s_a), flux_g, bound_g or bound_a, flux_a


def _corrected(width_px: float, blur_px2: float) -> float:
    return math.sqrt(max(width_px**2 - PIXEL_VARIANCE_PX2 - blur_px2, 0.0))


def _groups(y_px: np.ndarray, x_px: np.ndarray, link_px: float) -> list[np.ndarray]:
    """Indices of spots closer than ``link_px`` to each other, chained (one group per static particle)."""
    n = len(y_px)
    pairs = cKDTree(np.column_stack([y_px, x_px])).query_pairs(link_px, output_type="ndarray")
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)) if len(pairs) \
        else sparse.coo_matrix((n, n))
    n_groups, label = csgraph.connected_components(graph, directed=False)
    return [np.flatnonzero(label == g) for g in range(n_groups)]


def measure_psf(photons: np.ndarray, spots: dict[str, np.ndarray], rows: np.ndarray, sigma_guess_px: float,
                blur_px2: float, rng: np.random.Generator, n_boot: int = 200) -> ProfileFit | None:
    """Fit the mean radial profile of the spots ``rows`` (see the module docstring).

    Parameters
    ----------
    photons
        ``(T, Y, X)`` frames in photons.
    spots
        Spot table (:func:`radial_sums`), with free-width Gaussian fits' ``photons`` and ``background``.
    rows
        The spots to use: bright, isolated, single emitters with little motion blur.
    sigma_guess_px
        A first width (px), e.g. the spots' median Gaussian-fit width; it sets the window
        (``5 sigma + 2`` px: the first dark ring of an Airy PSF lies at ``5.8 sigma``) and the
        search range (0.4-2.5 x).
    blur_px2
        Motion-blur variance (px^2 per axis) of a typical spot of ``rows`` (the caller gives the
        median), removed from the width. Above :data:`BLUR_SHAPE_LIMIT` x the guess squared the
        shape is not judged (``"unknown"``).
    rng
        Generator of the bootstrap.
    n_boot
        Bootstrap replicates.

    Returns
    -------
    ProfileFit, or None when the guess is not a positive width, fewer than
    :data:`MIN_PROFILE_SPOTS` spots lie inside the frames, the best width lies at a bound of
    the search range (a guess far off), or nothing is left after the corrections.
    """
    guess = float(sigma_guess_px)
    if not math.isfinite(guess) or guess <= 0:
        return None
    half = int(math.ceil(5.0 * guess)) + 2
    sums, counts, centres, used = radial_sums(photons, spots, rows, half)
    n = len(sums)
    if n < MIN_PROFILE_SPOTS:
        return None
    blur = max(float(blur_px2), 0.0)
    shape, evidence, width, flux, at_bound, airy_flux = _fit(
        sums, counts, centres, guess, blurred=blur > BLUR_SHAPE_LIMIT * guess**2)
    sigma = _corrected(width, blur)
    if at_bound or sigma <= 0:
        return None
    members = _groups(spots["y_px"][used], spots["x_px"][used], 2.0 * guess + 1.0)
    if len(members) < MIN_BOOTSTRAP_GROUPS:
        members = [np.array([i]) for i in range(n)]  # too few particles: spots (a lower bound)
    widths, fluxes = [], []
    for _ in range(int(n_boot)):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        _, _, boot_width, boot_flux, _, _ = _fit(sums[pick], counts[pick], centres, guess, shape=shape)
        widths.append(_corrected(boot_width, blur))
        fluxes.append(boot_flux)
    systematic = 0.5 * (_corrected(width, 0.0) - sigma)  # the blur correction is approximate
    # an unknown shape takes the Gaussian's flux; the Airy profile may be the PSF's, so half their difference counts
    # as a systematic part (0 for a known shape). (Its width, the two profiles' mean, needs none: their
    # Gaussian-equivalent widths agree within 1 %: tests/test_calibration_signal.py.)
    shape_flux = 0.5 * abs(airy_flux - flux) if shape == "unknown" else 0.0
    sigma_se = math.hypot(float(np.std(widths)) if widths else math.nan, systematic)
    flux_se = math.hypot(float(np.std(fluxes)) if fluxes else math.nan, shape_flux)
    return ProfileFit(shape, float(evidence), sigma, sigma_se, float(flux), flux_se, n, len(members))
