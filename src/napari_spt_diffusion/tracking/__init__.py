"""Tracking: spot detection, sub-pixel localization, linking and patch extraction.

Headless numpy/scipy/trackpy code (no Qt, no torch). The data flow is
``detect_and_localize(movie, acquisition)`` -> ``link(localizations, acquisition)``
-> ``extract_track_patches(movie, tracks, acquisition)``. :mod:`.spots` is the one
per-frame path (detection, single-spot fit, overlap pass) used by the pipeline, the
training samples and the napari Preview alike; it sits above :mod:`.detect`,
:mod:`.localize` and :mod:`.overlaps`, none of which imports it.
"""

from .detect import (
    DetectionSettings,
    TrackingInputError,
    border_noise_gain,
    check_frame,
    detect_frame,
    detect_photons,
    dog_filter,
    dog_sigmas_px,
    robust_noise,
)
from .link import LinkingError, LinkingWarning, LinkResult, default_search_range_px, link
from .localize import (
    LOCALIZATION_COLUMNS,
    localize_arrays,
    localize_frame,
    localize_photons,
    mortensen_precision_nm,
)
from .overlaps import resolve_overlaps
from .patches import TrackPatches, extract_track_patches
from .spots import SPOT_COLUMNS, FoundSpots, detect_and_localize, find_spots, locate_frame

__all__ = [
    "DetectionSettings",
    "TrackingInputError",
    "border_noise_gain",
    "check_frame",
    "detect_and_localize",
    "detect_frame",
    "detect_photons",
    "dog_filter",
    "dog_sigmas_px",
    "robust_noise",
    "LOCALIZATION_COLUMNS",
    "localize_arrays",
    "localize_frame",
    "localize_photons",
    "mortensen_precision_nm",
    "resolve_overlaps",
    "SPOT_COLUMNS",
    "FoundSpots",
    "find_spots",
    "locate_frame",
    "LinkResult",
    "LinkingError",
    "LinkingWarning",
    "default_search_range_px",
    "link",
    "TrackPatches",
    "extract_track_patches",
]
