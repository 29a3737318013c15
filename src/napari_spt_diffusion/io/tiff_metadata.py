"""TIFF metadata: the calibration ImageJ and OME-TIFF files carry, and the acquisition
this package stores in the movies it writes.

* :func:`file_calibration` reads the pixel size and frame interval from ImageJ metadata
  (``XResolution`` + ``unit``, ``finterval`` + ``tunit``), OME-XML (``PhysicalSizeX`` +
  unit, ``TimeIncrement`` or the spacing of the planes' ``DeltaT``) or, failing both,
  bare TIFF resolution tags in metric units.
* :func:`stored_acquisition` reads the full acquisition that :func:`imagej_movie_kwargs`
  writes as JSON in the ImageJ ``Info`` property.

Units: pixel sizes in nm, frame intervals in s.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import tifffile

from ..acquisition import Acquisition

__all__ = ["file_calibration", "imagej_movie_kwargs", "stored_acquisition"]

#: Marker of the JSON this package stores in the ImageJ ``Info`` property.
_INFO_KEY = "napari_spt_diffusion"
#: Pixel sizes read from bare TIFF resolution tags outside this range (nm) are ignored.
_PLAUSIBLE_PIXEL_NM = (1.0, 100_000.0)

_LENGTH_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometers": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometers": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "å": 0.1,
    "angstrom": 0.1,
    "pm": 1e-3,
}
_TIME_S = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "msec": 1e-3,
    "millisecond": 1e-3,
    "milliseconds": 1e-3,
    "µs": 1e-6,
    "us": 1e-6,
    "usec": 1e-6,
    "microsecond": 1e-6,
    "ns": 1e-9,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}
#: TIFF ResolutionUnit codes with a physical meaning (tifffile's extension 4, 5 included).
_RESUNIT_NM = {3: 1e7, 4: 1e6, 5: 1e3}


def _normalise_unit(unit: Any) -> str:
    text = unit.decode("latin-1") if isinstance(unit, bytes) else str(unit)
    text = text.strip().lower()
    for mu in ("\\u00b5", "\\u03bc", "\u03bc", "u\u00b5"):
        text = text.replace(mu, "µ")
    return text


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def file_calibration(tif: tifffile.TiffFile) -> tuple[float | None, float | None, str | None]:
    """Pixel size (nm), frame interval (s) and the metadata they came from.

    Returns
    -------
    (float or None, float or None, str or None)
        Pixel size in the sample plane (nm), time between frames (s), each ``None`` when
        the file does not give it, and the source: ``"imagej"``, ``"ome"``,
        ``"tiff-tags"`` or ``None``.
    """
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    if tif.is_imagej and tif.imagej_metadata is not None:
        pixel, interval = _imagej_calibration(tif.imagej_metadata, page)
        if pixel is not None or interval is not None:
            return pixel, interval, "imagej"
    if tif.is_ome and tif.ome_metadata:
        pixel, interval = _ome_calibration(tif.ome_metadata)
        if pixel is not None or interval is not None:
            return pixel, interval, "ome"
    pixel = _tag_pixel_size_nm(page)
    if pixel is not None:
        return pixel, None, "tiff-tags"
    return None, None, None


def _x_resolution(page: Any) -> float | None:
    try:
        xres = page.resolution[0]
    except Exception:
        return None
    return _positive(xres)


def _imagej_calibration(meta: dict[str, Any], page: Any) -> tuple[float | None, float | None]:
    pixel_nm = None
    xres = _x_resolution(page)
    resunit = int(getattr(page, "resolutionunit", 1) or 1)
    if xres is not None:
        if resunit in _RESUNIT_NM:
            # physical unit in the tag (ImageJ converts cm + unit=um the same way)
            pixel_nm = _RESUNIT_NM[resunit] / xres
        else:
            unit = _normalise_unit(meta.get("unit", ""))
            if unit in _LENGTH_NM:
                pixel_nm = _LENGTH_NM[unit] / xres
    interval = _positive(meta.get("finterval"))
    if interval is not None:
        tunit = _normalise_unit(meta.get("tunit", "sec"))
        factor = _TIME_S.get(tunit)
        interval = interval * factor if factor is not None else None
    return pixel_nm, interval


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_calibration(xml: str) -> tuple[float | None, float | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    pixels = next((el for el in root.iter() if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        return None, None
    pixel_nm = None
    size = _positive(pixels.get("PhysicalSizeX"))
    if size is not None:
        factor = _LENGTH_NM.get(_normalise_unit(pixels.get("PhysicalSizeXUnit", "µm")))
        pixel_nm = size * factor if factor is not None else None
    interval = _positive(pixels.get("TimeIncrement"))
    if interval is not None:
        factor = _TIME_S.get(_normalise_unit(pixels.get("TimeIncrementUnit", "s")))
        interval = interval * factor if factor is not None else None
    else:
        interval = _ome_delta_t(pixels)
    return pixel_nm, interval


def _ome_delta_t(pixels: ET.Element) -> float | None:
    """Median spacing of the ``Plane`` ``DeltaT`` values of channel 0, plane 0 (s)."""
    times: dict[int, float] = {}
    for plane in pixels:
        if _local(plane.tag) != "Plane" or plane.get("DeltaT") is None:
            continue
        if int(plane.get("TheC", 0)) != 0 or int(plane.get("TheZ", 0)) != 0:
            continue
        try:
            value = float(plane.get("DeltaT"))  # type: ignore[arg-type]
        except ValueError:
            continue
        factor = _TIME_S.get(_normalise_unit(plane.get("DeltaTUnit", "s")))
        if factor is None:
            return None
        times[int(plane.get("TheT", 0))] = value * factor
    if len(times) < 2:
        return None
    ordered = np.array([times[t] for t in sorted(times)])
    steps = np.diff(ordered)
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else None


def _tag_pixel_size_nm(page: Any) -> float | None:
    """Pixel size from bare TIFF tags, only for metric units and plausible values."""
    resunit = int(getattr(page, "resolutionunit", 1) or 1)
    xres = _x_resolution(page)
    if xres is None or resunit not in _RESUNIT_NM:
        return None
    pixel_nm = _RESUNIT_NM[resunit] / xres
    low, high = _PLAUSIBLE_PIXEL_NM
    return pixel_nm if low <= pixel_nm <= high else None


def stored_acquisition(tif: tifffile.TiffFile) -> dict[str, Any] | None:
    """The acquisition stored by :func:`imagej_movie_kwargs` (``Acquisition.to_dict()``).

    ``None`` when the file holds none, or one that is not a valid acquisition.
    """
    meta = tif.imagej_metadata if tif.is_imagej else None
    info = meta.get("Info") if meta else None
    if not info:
        return None
    try:
        parsed = json.loads(info)
    except (TypeError, ValueError):
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get(_INFO_KEY), dict):
        return None
    acquisition = parsed[_INFO_KEY].get("acquisition")
    if not isinstance(acquisition, dict):
        return None
    try:
        Acquisition.from_dict(acquisition)
    except (ValueError, TypeError):
        return None
    return acquisition



def imagej_movie_kwargs(acquisition: Acquisition) -> dict[str, Any]:
    """``tifffile.imwrite`` arguments of a calibrated ImageJ hyperstack (axes ``TYX``).

    The calibration is written as ImageJ writes it (``XResolution``/``YResolution`` in
    pixels per um, ``unit=um``, ``finterval`` in s); the whole acquisition travels as JSON
    in the ImageJ ``Info`` property.
    """
    px_per_um = 1.0 / acquisition.pixel_size_um
    from .. import __version__

    info = {_INFO_KEY: {"version": __version__, "acquisition": acquisition.to_dict()}}
    return {
        "imagej": True,
        "resolution": (px_per_um, px_per_um),
        "metadata": {
            "axes": "TYX",
            "unit": "um",
            "finterval": float(acquisition.frame_interval_s),
            "tunit": "sec",
            "Info": json.dumps(info),
        },
    }

