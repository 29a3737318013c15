"""Plausibility checks of what is given, read, assumed or measured about a movie.

Unusual cameras and typos must not give silent nonsense. Each check ends in one sentence
that says what is wrong and which option fixes it:

* :func:`check_units` refuses (:class:`PlausibilityError`) a pixel size outside
  10-5,000 nm, a frame interval outside 10 us-1,000 s, and a PSF outside 0.3-10 px: a
  typo in the units (``--pixel-size-nm 0.1``) would otherwise make sizes derived from
  them (filter kernels, search ranges) grow without bound;
* :func:`check_scaled_float` refuses a floating-point movie scaled to 0-1 unless its camera
  scale is known, and :func:`check_offset` a camera offset above the movie's background (the
  background would be negative, e.g. an offset-subtracted movie with the standard offset);
* :func:`acquisition_warnings` and :func:`localization_warnings` return warnings for signal
  photons outside 10-10^6, a negative background and a localization precision outside
  1-100 nm; :func:`linking_warnings` for frames too dense to link without ambiguity.

Units: nm, s, px, photons (photo-electrons), ADU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .acquisition import Acquisition, AcquisitionError
from .tracking.detect import check_frame

__all__ = [
    "PlausibilityError",
    "PIXEL_SIZE_NM_RANGE",
    "FRAME_INTERVAL_S_RANGE",
    "PSF_SIGMA_PX_RANGE",
    "PRECISION_NM_RANGE",
    "PHOTONS_RANGE",
    "AMBIGUOUS_NEIGHBOURS",
    "check_units",
    "check_settings",
    "check_scaled_float",
    "check_offset",
    "acquisition_warnings",
    "localization_warnings",
    "linking_warnings",
    "particles_per_frame",
    "sample_frames",
    "movie_dtype",
    "estimate_warnings",
]

#: Plausible pixel sizes in the sample plane (nm).
PIXEL_SIZE_NM_RANGE = (10.0, 5000.0)
#: Plausible frame intervals (s).
FRAME_INTERVAL_S_RANGE = (1e-5, 1000.0)
#: Plausible PSF standard deviations in pixels (after converting nm with the pixel size).
PSF_SIGMA_PX_RANGE = (0.3, 10.0)
#: Plausible median localization precision (nm).
PRECISION_NM_RANGE = (1.0, 100.0)
#: Plausible signal photons per particle per frame.
PHOTONS_RANGE = (10.0, 1e6)
#: Background (photons/px/frame) below which it counts as negative: a few photons of read
#: noise and fit scatter around 0 are normal for a dark camera.
NEGATIVE_BACKGROUND = -2.0
#: Linking is ambiguous when a particle's search disc holds on average this many other
#: localizations of the next frame (standard movie: ~1.3; 1,000 particles in 128^2 px: ~40).
AMBIGUOUS_NEIGHBOURS = 5.0
#: Lowest plausible detection threshold (units of the filtered image's noise).
THRESHOLD_SNR_MIN = 2.0
#: Highest plausible largest diffusion coefficient (um^2/s).
MAX_D_UM2_S = 1000.0
#: Frames read by :func:`sample_frames`.
SAMPLE_FRAMES = 8

_ORIGIN_TEXT = {"given": "given", "file": "from the file", "measured": "measured from the movie",
                "assumed": "the standard value", "stored": "stored in the file"}


class PlausibilityError(AcquisitionError):
    """An acquisition or movie that cannot be what the user meant (one sentence with the fix)."""


def _origin(origins: Mapping[str, str] | None, name: str) -> str:
    return _ORIGIN_TEXT.get((origins or {}).get(name, ""), "")


def _with_origin(text: str, origins: Mapping[str, str] | None, name: str) -> str:
    origin = _origin(origins, name)
    return f"{text} ({origin})" if origin else text


def check_units(acquisition: Acquisition, origins: Mapping[str, str] | None = None) -> None:
    """Refuse a pixel size, frame interval or PSF width outside its plausible range.

    ``origins`` maps field names to ``"given"``, ``"file"``, ``"measured"``, ``"stored"`` or
    ``"assumed"`` for the message. Raises :class:`PlausibilityError`.
    """
    lo, hi = PIXEL_SIZE_NM_RANGE
    px = float(acquisition.pixel_size_nm)
    if not lo <= px <= hi:
        raise PlausibilityError(
            _with_origin(f"the pixel size {px:g} nm", origins, "pixel_size_nm")
            + f" is outside the plausible {lo:g}-{hi:,.0f} nm (a typo or another unit?); "
            "give the pixel size in the sample plane in nm with --pixel-size-nm")
    lo, hi = FRAME_INTERVAL_S_RANGE
    dt = float(acquisition.frame_interval_s)
    if not lo <= dt <= hi:
        raise PlausibilityError(
            _with_origin(f"the frame interval {dt:g} s", origins, "frame_interval_s")
            + f" is outside the plausible 10 us-{hi:,.0f} s (a typo or another unit?); "
            "give it in seconds with --frame-interval-s")
    lo, hi = PSF_SIGMA_PX_RANGE
    sigma_px = float(acquisition.psf_sigma_px)
    if not lo <= sigma_px <= hi:
        raise PlausibilityError(
            _with_origin(f"the PSF sigma {acquisition.psf_sigma_nm:g} nm", origins, "psf_sigma_nm")
            + f" is {sigma_px:.3g} px at {px:g} nm per pixel, outside the plausible {lo:g}-{hi:g} px; "
            "check --psf-sigma-nm and --pixel-size-nm (both in nm)")


def check_settings(threshold_snr: float, max_D_um2_s: float) -> None:
    """Refuse a detection threshold (units of the filtered image's noise) below
    :data:`THRESHOLD_SNR_MIN`, which detects the noise itself (thousands of false spots, a run
    of hours), and a largest diffusion coefficient (um^2/s) above :data:`MAX_D_UM2_S`, whose
    linking search range would span any field. Raises :class:`PlausibilityError`."""
    if not float(threshold_snr) >= THRESHOLD_SNR_MIN:
        raise PlausibilityError(
            f"a detection threshold of {float(threshold_snr):g} x noise detects the noise itself (and takes hours); "
            f"give --threshold-snr {THRESHOLD_SNR_MIN:g} or more (default 5)")
    if not float(max_D_um2_s) <= MAX_D_UM2_S:
        raise PlausibilityError(
            f"a largest diffusion coefficient of {float(max_D_um2_s):g} um^2/s is above any particle's (small dyes in "
            f"water: ~400 um^2/s); give --max-d in um^2/s, at most {MAX_D_UM2_S:,.0f}")


def sample_frames(movie: Any, n: int = SAMPLE_FRAMES) -> np.ndarray:
    """Up to ``n`` frames spread evenly over a ``(T, Y, X)`` movie, as ``(n, Y, X)`` float64.

    Raises ``TrackingInputError`` naming the frame for NaN or infinite pixels.
    """
    n_total = int(movie.shape[0])
    chosen = np.unique(np.linspace(0, n_total - 1, min(int(n), n_total)).round().astype(int))
    return np.stack([check_frame(movie[int(t)], index=int(t)).astype(np.float64) for t in chosen])


def check_scaled_float(frames: np.ndarray, dtype: Any, acquisition: Acquisition, measure: Iterable[str] = ()) -> None:
    """Refuse a floating-point movie scaled to 0-1 whose camera scale is not known.

    Parameters
    ----------
    frames
        ``(n, Y, X)`` sample frames (:func:`sample_frames`).
    dtype
        The movie's pixel type.
    acquisition
        The camera gain (ADU/e-) given or assumed: a gain below 0.05 ADU/e- says the scale
        of such a movie is known (e.g. 1/65535 for 16-bit counts divided by 65535).
    measure
        The fields about to be measured from the movie: a gain to be measured is not known.

    Raises
    ------
    PlausibilityError
        Floats within -1..1 and a gain that is measured or at least 0.05 ADU/e-.
    """
    if np.dtype(dtype).kind != "f" or frames.size == 0:
        return
    low, high = float(np.min(frames)), float(np.max(frames))
    if -1.0 <= low and high <= 1.0 and ("gain_adu_per_e" in set(measure) or acquisition.gain_adu_per_e >= 0.05):
        raise PlausibilityError(
            f"the movie holds floating-point values from {low:.3g} to {high:.3g}, scaled or normalised "
            "rather than camera counts: track the raw camera movie, or give the scaling with "
            "--gain-adu-per-e (e.g. 1.5259e-5 for 16-bit counts divided by 65535) and --offset-adu")


def check_offset(frames: np.ndarray, acquisition: Acquisition, origins: Mapping[str, str] | None = None) -> None:
    """Refuse a camera offset (ADU) so far above the movie's median pixel (``frames``, ADU) that
    the background would be negative, e.g. an offset-subtracted movie read with the standard
    100 ADU offset. Raises :class:`PlausibilityError`."""
    if frames.size == 0:
        return
    median = float(np.median(frames))
    gain, offset = float(acquisition.gain_adu_per_e), float(acquisition.offset_adu)
    background = (median - offset) / gain
    if background < NEGATIVE_BACKGROUND:
        raise PlausibilityError(
            _with_origin(f"with the camera offset of {offset:.4g} ADU", origins, "offset_adu")
            + f" the background would be {background:.3g} photons/px (the median pixel is {median:.4g} ADU); "
            "give the camera's offset with --offset-adu (0 for a movie whose offset was already subtracted)")


def acquisition_warnings(acquisition: Acquisition, origins: Mapping[str, str] | None = None) -> list[str]:
    """Warnings for given, assumed or measured signal photons outside 10-10^6 per frame."""
    out = []
    lo, hi = PHOTONS_RANGE
    photons = float(acquisition.signal_photons)
    if not lo <= photons <= hi:
        out.append(_with_origin(f"the signal of {photons:.4g} photons per frame", origins, "signal_photons")
                   + f" is outside the plausible {lo:g}-{hi:.0e}; check --photons and the camera gain "
                   "(--gain-adu-per-e)")
    return out


def localization_warnings(locs: Any, acquisition: Acquisition) -> list[str]:
    """Warnings on the medians of the localizations (a table with ``photons`` (photons/frame),
    ``background`` (photons/px/frame) and ``loc_precision_nm`` (nm) columns)."""
    out = []
    if len(locs) == 0:
        return out

    def median(name: str) -> float:
        if name not in locs:
            return math.nan
        values = np.asarray(locs[name], dtype=float)
        values = values[np.isfinite(values)]
        return float(np.median(values)) if values.size else math.nan

    background = median("background")
    if background < NEGATIVE_BACKGROUND:
        out.append(f"the fitted background is {background:.3g} photons/px (median over {len(locs)} localizations), "
                   f"negative: the camera offset of {acquisition.offset_adu:.4g} ADU is too high; give it with "
                   "--offset-adu")
    lo, hi = PHOTONS_RANGE
    photons = median("photons")
    if math.isfinite(photons) and not lo <= photons <= hi:
        out.append(f"the fitted signal is {photons:.3g} photons per spot (median), outside the plausible "
                   f"{lo:g}-{hi:.0e}: the camera gain of {acquisition.gain_adu_per_e:.4g} ADU/e- is probably "
                   "wrong; give it with --gain-adu-per-e")
    lo, hi = PRECISION_NM_RANGE
    precision = median("loc_precision_nm")
    if math.isfinite(precision) and not lo <= precision <= hi:
        out.append(f"the localization precision is {precision:.3g} nm (median), outside the plausible "
                   f"{lo:g}-{hi:g} nm: "
                   "check --pixel-size-nm, --gain-adu-per-e and --offset-adu")
    return out


def particles_per_frame(frames: np.ndarray, acquisition: Acquisition) -> float:
    """How many particles the light of the frames suggests: the median over the ``(n, Y, X)``
    sample frames (ADU) of the photons above the acquisition's background, divided by its
    signal photons per particle. Counts particles too crowded to be detected one by one."""
    if frames.size == 0 or acquisition.signal_photons <= 0:
        return 0.0
    photons = (frames - float(acquisition.offset_adu)) / float(acquisition.gain_adu_per_e)
    excess = np.sum(photons, axis=(1, 2)) - float(acquisition.background_photons) * frames[0].size
    return max(float(np.median(excess)), 0.0) / float(acquisition.signal_photons)


def linking_warnings(
    n_localizations: int,
    n_in_tracks: int,
    shape: tuple[int, int, int],
    search_range_px: float,
    min_track_length: int,
    particles_from_light: float = 0.0,
) -> list[str]:
    """Warnings when the frames are too dense to link (or detect) without ambiguity.

    Parameters
    ----------
    n_localizations
        Localizations found in the whole movie.
    n_in_tracks
        Localizations in the tracks reported (of at least ``min_track_length``).
    shape
        ``(T, Y, X)`` of the movie.
    search_range_px
        The linker's search range (px).
    min_track_length
        Shortest track reported (localizations).
    particles_from_light
        Particles per frame the light suggests (:func:`particles_per_frame`); when it is
        several times the localizations per frame, the particles overlap.
    """
    n_frames, ny, nx = shape
    found = n_localizations / max(n_frames, 1)
    per_frame = max(found, particles_from_light)
    # the others a particle's search disc holds: at most all the others in the frame
    neighbours = min(per_frame / max(ny * nx, 1) * math.pi * search_range_px**2, max(per_frame - 1.0, 0.0))
    if neighbours <= AMBIGUOUS_NEIGHBOURS:
        return []
    kept = n_in_tracks / max(n_localizations, 1)
    if particles_from_light > 3 * found:
        what = (f"the light of each frame is that of about {particles_from_light:,.0f} particles but only "
                f"{found:.1f} spots per frame were found (they overlap)")
    else:
        what = f"{found:.0f} localizations per frame"
    return [f"the movie is too dense to track reliably: {what} in {ny} x {nx} px put {neighbours:.0f} others "
            f"within the search range of {search_range_px:.1f} px, and {kept:.0%} of the {n_localizations} "
            f"localizations ended in tracks of >= {min_track_length} frames; lower --max-d if the particles are "
            "slower, or image fewer particles per field"]


def estimate_warnings(summary: Any) -> list[str]:
    """A warning when tracks of a summary table (``D1_um2_s`` column) have no diffusion estimate."""
    missing = int(np.isnan(np.asarray(summary["D1_um2_s"], dtype=float)).sum()) if len(summary) else 0
    if not missing:
        return []
    return [f"{missing} of {len(summary)} tracks have no diffusion estimate (empty D columns): a track needs at "
            "least 3 localizations; give --min-track-length 3 or more, or a longer movie"]


def movie_dtype(movie: Any) -> np.dtype:
    """The pixel type of a ``(T, Y, X)`` array-like (its ``dtype``, else that of its first frame)."""
    dtype = getattr(movie, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.asarray(movie[0]).dtype
