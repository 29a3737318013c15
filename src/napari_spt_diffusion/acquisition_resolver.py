"""The acquisition of a movie from what is known about it: one rule for every entry point.

What is known about a movie's acquisition comes from up to three places, and the later
ones win (each is optional):

1. ``stored``: the full acquisition this package wrote into the file (a movie written
   by :func:`~napari_spt_diffusion.io.write_movie`, an image layer made by the plugin);
2. ``file_calibration``: the pixel size and frame interval in the file's own metadata
   (ImageJ or OME-TIFF calibration), as read by
   :func:`~napari_spt_diffusion.io.read_movie`;
3. ``explicit``: values the user gave (command-line options, the widget's fields).

Fields known from none of them keep their standard values
(:class:`~napari_spt_diffusion.acquisition.Acquisition` defaults, or ``base``). The
command line, the napari widgets and :meth:`~napari_spt_diffusion.io.MovieFile.acquisition`
all build acquisitions through :func:`resolve_acquisition`. Pure functions: no file is
read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .acquisition import Acquisition

__all__ = ["acquisition_values", "resolve_acquisition"]


def acquisition_values(
    stored: Mapping[str, Any] | None = None,
    file_calibration: Mapping[str, float | None] | None = None,
    explicit: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The acquisition fields known from the three sources, merged by precedence.

    Parameters
    ----------
    stored
        Acquisition stored with the movie (``Acquisition.to_dict()`` form); keys that are
        not fields of :class:`Acquisition` are ignored (a file from another version).
    file_calibration
        ``pixel_size_nm`` (nm) and ``frame_interval_s`` (s) from the file's metadata;
        ``None`` values mean "not in the file" and are skipped.
    explicit
        Values given by the user; every key given is applied, ``None`` included (e.g.
        ``exposure_s=None`` for continuous exposure).

    Returns
    -------
    dict
        Only the fields some source gives (empty when none does), explicit values over
        the file's calibration over the stored acquisition.
    """
    fields = set(Acquisition.__dataclass_fields__)
    values: dict[str, Any] = {k: v for k, v in (stored or {}).items() if k in fields}
    values.update({k: v for k, v in (file_calibration or {}).items() if v is not None})
    values.update(explicit or {})
    return values


def resolve_acquisition(
    stored: Mapping[str, Any] | None = None,
    file_calibration: Mapping[str, float | None] | None = None,
    explicit: Mapping[str, Any] | None = None,
    *,
    base: Acquisition | None = None,
) -> Acquisition:
    """The :class:`Acquisition` described by the three sources, defaults for the rest.

    Precedence, lowest first: ``base`` (default: the standard ``Acquisition()``),
    ``stored``, ``file_calibration``, ``explicit`` (see :func:`acquisition_values`).
    When ``explicit`` sets the frame interval (s) but not the exposure, an exposure taken
    from elsewhere that would exceed the new interval is dropped (continuous exposure).

    Raises
    ------
    napari_spt_diffusion.acquisition.AcquisitionError
        For an unknown explicit field or values that cannot describe a movie.
    """
    values = (base or Acquisition()).to_dict()
    values.update(acquisition_values(stored, file_calibration, explicit))
    explicit = explicit or {}
    if "frame_interval_s" in explicit and "exposure_s" not in explicit:
        exposure, interval = values.get("exposure_s"), explicit["frame_interval_s"]
        if exposure is not None and interval is not None and exposure > interval:
            values["exposure_s"] = None
    return Acquisition.from_dict(values)
