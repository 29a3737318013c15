"""Reading movies and writing results: TIFF in, CSV/JSON out, nothing half-written.

* :func:`read_movie` opens a TIFF movie ``(T, Y, X)`` without loading it: a
  ``numpy.memmap`` when the pixel data lie uncompressed and contiguous in the file,
  otherwise a :class:`LazyTiffFrames` reader that decodes frames on demand. The pixel
  size and frame interval come from ImageJ metadata (``XResolution`` + ``unit``,
  ``finterval``) or OME-XML (``PhysicalSizeX`` + unit, ``TimeIncrement``/``DeltaT``).
* :func:`write_movie` writes an ImageJ hyperstack (``uint16``, axes ``TYX``) calibrated
  the way ImageJ itself writes it: ``XResolution``/``YResolution`` in pixels per um,
  ``unit=um``, ``finterval`` in s; the full :class:`~.acquisition.Acquisition` travels
  in the ImageJ ``Info`` property as JSON.
* :func:`write_results` / :func:`read_results` handle the results contract
  (``<prefix>_tracks.csv``, ``<prefix>_summary.csv``, ``<prefix>_meta.json``).

Every write goes to a temporary file in the target's folder that is renamed into
place only once everything is written (``os.replace``); an existing file is never
replaced unless ``overwrite=True``. Problems a user can fix raise :class:`InputError`
with one sentence.
"""

from __future__ import annotations

import json
import math
import os
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import tifffile

from ..acquisition import Acquisition
from ..errors import SptDiffusionError
from ..results import (
    SUMMARY_COLUMNS,
    TRACKS_COLUMNS,
    Results,
    empty_summary_table,
    empty_tracks_table,
)

__all__ = [
    "InputError",
    "MovieFile",
    "LazyTiffFrames",
    "read_movie",
    "write_movie",
    "write_results",
    "read_results",
    "write_simulation",
    "check_outputs",
    "results_paths",
    "simulation_paths",
    "sample_movie_path",
]

#: Marker of the JSON this package stores in the ImageJ ``Info`` property.
_INFO_KEY = "napari_spt_diffusion"
#: Pixel sizes read from bare TIFF resolution tags outside this range (nm) are ignored.
_PLAUSIBLE_PIXEL_NM = (1.0, 100_000.0)
_CSV_FLOAT_FORMAT = "%.9g"


class InputError(SptDiffusionError, ValueError):
    """A problem with the user's input or output paths, described in one sentence."""


# ====================================================================== reading
class LazyTiffFrames:
    """Read-only ``(T, Y, X)`` array-like over a TIFF movie that decodes frames on demand.

    Used when the file cannot be memory-mapped (compressed or scattered pixel data).
    Indexing with an integer returns one ``(Y, X)`` frame; any other index on the
    first axis (slice, list, boolean mask) returns a ``(n, Y, X)`` array, and the
    remaining indices are applied to the frames read. Only the requested frames are
    decoded. Reads are serialised with a lock so that threads may share the reader.

    Parameters
    ----------
    path
        The TIFF file.
    series
        Index of the image series holding the movie (0 for single-series files).
    """

    def __init__(self, path: str | os.PathLike[str], series: int = 0) -> None:
        self._path = Path(path)
        self._tif = tifffile.TiffFile(self._path)
        self._lock = threading.Lock()
        self._series = self._tif.series[series]
        shape = _movie_shape(self._series.shape, self._series.axes, self._path)
        self.shape: tuple[int, int, int] = shape
        self.dtype = np.dtype(self._series.dtype)
        self._pages = self._series.pages
        # One page per frame is the normal layout; otherwise decode the whole series once.
        self._page_per_frame = len(self._pages) == shape[0] and all(
            p is not None for p in (self._pages[0], self._pages[-1])
        )
        self._cache: np.ndarray | None = None

    # array-like protocol -------------------------------------------------
    @property
    def ndim(self) -> int:
        return 3

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyTiffFrames({str(self._path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self._read(np.arange(self.shape[0]))
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None for k in key):
            return np.asarray(self)[key]
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (3 - (len(key) - 1))
            key = key[:i] + fill + key[i + 1 :]
        if len(key) > 3:
            raise IndexError(f"too many indices for a 3-D movie: {len(key)}")
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            index = int(first)
            if not -self.shape[0] <= index < self.shape[0]:
                raise IndexError(f"frame {index} is out of range for a movie of {self.shape[0]} frames")
            frame = self._read(np.array([index % self.shape[0]]))[0]
            return frame[rest] if rest else frame
        indices = np.arange(self.shape[0])[first]
        frames = self._read(np.atleast_1d(indices))
        return frames[(slice(None),) + rest] if rest else frames

    def _read(self, indices: np.ndarray) -> np.ndarray:
        _, ny, nx = self.shape
        with self._lock:
            if self._page_per_frame:
                out = np.empty((len(indices), ny, nx), dtype=self.dtype)
                for k, i in enumerate(indices):
                    out[k] = self._pages[int(i)].asarray().reshape(ny, nx)
                return out
            if self._cache is None:
                self._cache = np.asarray(self._series.asarray()).reshape(self.shape)
            return self._cache[indices]

    def close(self) -> None:
        """Close the underlying file."""
        with self._lock:
            self._tif.close()


@dataclass
class MovieFile:
    """A movie opened by :func:`read_movie`.

    Attributes
    ----------
    path
        The file.
    data
        ``(T, Y, X)`` array-like: a read-only ``numpy.memmap`` or a
        :class:`LazyTiffFrames`; ``data[t]`` is frame ``t`` as a ``(Y, X)`` array.
    pixel_size_nm
        Pixel size in the sample plane (nm) from the file's metadata, ``None`` if unknown.
    frame_interval_s
        Time between frames (s) from the file's metadata, ``None`` if unknown.
    metadata_source
        Where the calibration came from: ``"imagej"``, ``"ome"``, ``"tiff-tags"`` or ``None``.
    acquisition_dict
        The full acquisition stored by :func:`write_movie` (``Acquisition.to_dict()``),
        ``None`` for files from other software.
    axes
        tifffile's axes code of the series as stored (e.g. ``"TYX"``, ``"IYX"``).
    """

    path: Path
    data: Any
    pixel_size_nm: float | None = None
    frame_interval_s: float | None = None
    metadata_source: str | None = None
    acquisition_dict: dict[str, Any] | None = None
    axes: str = "TYX"
    _closer: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(T, Y, X)``."""
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        """Pixel data type as stored."""
        return np.dtype(self.data.dtype)

    @property
    def n_frames(self) -> int:
        """Number of frames ``T``."""
        return self.shape[0]

    @property
    def is_memmap(self) -> bool:
        """True when ``data`` is a memory map of the file."""
        return isinstance(self.data, np.memmap)

    def acquisition(
        self,
        base: Acquisition | None = None,
        *,
        pixel_size_nm: float | None = None,
        frame_interval_s: float | None = None,
        require_calibration: bool = True,
        **changes: Any,
    ) -> Acquisition:
        """The movie's :class:`Acquisition`: file metadata, then explicit values.

        Precedence, lowest first: ``base`` (default: the standard acquisition), the
        acquisition stored by this package in the file, the file's ImageJ/OME
        calibration, then ``pixel_size_nm``/``frame_interval_s``/``changes`` given here.

        Raises
        ------
        InputError
            If ``require_calibration`` and the pixel size or frame interval is neither
            in the file nor given.
        """
        values = (base or Acquisition()).to_dict()
        if self.acquisition_dict:
            values.update({k: v for k, v in self.acquisition_dict.items() if k in values})
        if self.pixel_size_nm is not None:
            values["pixel_size_nm"] = self.pixel_size_nm
        if self.frame_interval_s is not None:
            values["frame_interval_s"] = self.frame_interval_s
        if require_calibration:
            if pixel_size_nm is None and self.pixel_size_nm is None and not self.acquisition_dict:
                raise InputError(
                    f"{self.path.name} has no pixel size in its metadata: give it explicitly "
                    "(pixel_size_nm, or --pixel-size-nm on the command line)"
                )
            if frame_interval_s is None and self.frame_interval_s is None and not self.acquisition_dict:
                raise InputError(
                    f"{self.path.name} has no frame interval in its metadata: give it explicitly "
                    "(frame_interval_s, or --frame-interval-s on the command line)"
                )
        if pixel_size_nm is not None:
            values["pixel_size_nm"] = pixel_size_nm
        if frame_interval_s is not None:
            values["frame_interval_s"] = frame_interval_s
            exposure = values.get("exposure_s")
            if exposure is not None and exposure > frame_interval_s:
                values["exposure_s"] = None
        values.update(changes)
        return Acquisition.from_dict(values)

    def close(self) -> None:
        """Release the file (a memmap is released when no array refers to it any more)."""
        if self._closer is not None:
            self._closer()

    def __enter__(self) -> "MovieFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_movie(path: str | os.PathLike[str]) -> MovieFile:
    """Open a single-channel TIFF movie ``(T, Y, X)`` without loading it into memory.

    Parameters
    ----------
    path
        A TIFF file (ImageJ hyperstack, OME-TIFF or a plain multi-page TIFF). The
        one non-singleton axis besides Y and X is taken as time, whatever it is
        called in the file (T, Z, pages).

    Returns
    -------
    MovieFile
        ``.data`` is a read-only memmap when possible, else a :class:`LazyTiffFrames`.

    Raises
    ------
    InputError
        If the path is not a file, not a TIFF, holds a single 2-D image, an RGB or
        multichannel image, more than one non-spatial axis, no frames, or a pixel type
        that is not a real number.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    try:
        tif = tifffile.TiffFile(path)
    except tifffile.TiffFileError:
        raise InputError(f"{path.name} is not a TIFF file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # corrupt headers raise all sorts of errors
        raise InputError(f"{path.name} is not a readable TIFF file ({type(exc).__name__})") from None
    try:
        if not tif.series or not tif.pages:
            raise InputError(f"{path.name} contains no images")
        series = tif.series[0]
        shape = _movie_shape(series.shape, series.axes, path)
        dtype = np.dtype(series.dtype)
        if dtype.kind not in "uif":
            raise InputError(f"{path.name} has pixel type {dtype}, not grey values (integers or floats)")
        pixel_size_nm, frame_interval_s, source = _calibration(tif)
        acquisition_dict = _stored_acquisition(tif)
        axes = str(series.axes)
        memmappable = series.dataoffset is not None
    except InputError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise InputError(f"{path.name} could not be read as a TIFF movie ({type(exc).__name__}: {exc})") from None
    tif.close()

    data: Any = None
    closer = None
    if memmappable:
        try:
            data = tifffile.memmap(path, series=0, mode="r").reshape(shape)
        except (ValueError, OSError):
            data = None
    if data is None:
        try:
            lazy = LazyTiffFrames(path)
        except Exception as exc:
            raise InputError(f"{path.name} could not be read as a TIFF movie ({type(exc).__name__}: {exc})") from None
        data, closer = lazy, lazy.close
    return MovieFile(
        path=path,
        data=data,
        pixel_size_nm=pixel_size_nm,
        frame_interval_s=frame_interval_s,
        metadata_source=source,
        acquisition_dict=acquisition_dict,
        axes=axes,
        _closer=closer,
    )


def _movie_shape(shape: Sequence[int], axes: str, path: Path) -> tuple[int, int, int]:
    """Reduce a tifffile series shape/axes to ``(T, Y, X)`` or raise :class:`InputError`."""
    shape = tuple(int(n) for n in shape)
    axes = str(axes)
    name = path.name
    if len(axes) != len(shape):  # should not happen; be defensive
        axes = "Q" * (len(shape) - 2) + "YX"
    if any(n == 0 for n in shape):
        raise InputError(f"{name} is an empty movie (no frames)")
    sizes = dict(zip(axes, shape))
    if sizes.get("S", 1) > 1:
        raise InputError(
            f"{name} is an RGB/colour image ({sizes['S']} samples per pixel); "
            "a single-channel grey-value movie is needed"
        )
    if sizes.get("C", 1) > 1:
        raise InputError(
            f"{name} has {sizes['C']} channels; save the channel to track as a "
            "single-channel movie first"
        )
    if not axes.endswith(("YX", "YXS")):
        # tifffile ends image series with YX (or YXS); anything else is not a camera movie
        raise InputError(f"{name} has an unsupported axis layout {axes!r}")
    other = [(a, n) for a, n in zip(axes, shape) if a not in "YXS" and n > 1]
    ny, nx = sizes["Y"], sizes["X"]
    if not other:
        raise InputError(f"{name} holds a single 2-D image ({ny} x {nx}), not a movie")
    if len(other) > 1:
        desc = " x ".join(f"{n} {a}" for a, n in other)
        raise InputError(
            f"{name} has more than one non-spatial axis ({desc}); a (T, Y, X) movie is needed"
        )
    return (other[0][1], ny, nx)


# ----------------------------------------------------------- calibration
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


def _calibration(tif: tifffile.TiffFile) -> tuple[float | None, float | None, str | None]:
    """Pixel size (nm), frame interval (s) and the metadata they came from."""
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


def _stored_acquisition(tif: tifffile.TiffFile) -> dict[str, Any] | None:
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


# ====================================================================== writing
class _Staging:
    """Temporary files beside their targets, renamed into place together.

    ``check`` refuses existing targets (unless ``overwrite``) and missing folders
    before anything is written; ``commit`` renames every temporary onto its target,
    removing the ones already placed if a later rename fails (when nothing was
    overwritten); leaving the ``with`` block by an exception, ``KeyboardInterrupt``
    included, deletes every temporary.
    """

    def __init__(self, targets: Iterable[Path], overwrite: bool) -> None:
        self.targets = [Path(t) for t in targets]
        self.overwrite = bool(overwrite)
        self.temps: dict[Path, Path] = {}
        for target in self.targets:
            _check_target(target, self.overwrite)
        if len(set(self.targets)) != len(self.targets):
            raise InputError("two outputs would go to the same file")

    def temp(self, target: Path) -> Path:
        target = Path(target)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
        self.temps[target] = tmp
        return tmp

    def commit(self) -> list[Path]:
        placed: list[Path] = []
        try:
            for target in self.targets:
                if not self.overwrite and target.exists():
                    raise InputError(f"{target} appeared while writing; nothing was overwritten")
                os.replace(self.temps[target], target)
                placed.append(target)
        except BaseException:
            if not self.overwrite:
                for target in placed:
                    _unlink_quietly(target)
            raise
        finally:
            self.discard()
        return placed

    def discard(self) -> None:
        for tmp in self.temps.values():
            _unlink_quietly(tmp)

    def __enter__(self) -> "_Staging":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.discard()
        if isinstance(exc, OSError) and not isinstance(exc, InputError):
            where = exc.filename or (self.targets[0].parent if self.targets else "")
            raise InputError(f"cannot write to {where}: {exc.strerror or exc}") from exc


def check_outputs(paths: Iterable[str | os.PathLike[str]], overwrite: bool = False) -> None:
    """Raise :class:`InputError` now if any of ``paths`` could not be written later.

    Checks that each folder exists and is writable and that no file exists (unless
    ``overwrite``), so that a long computation does not end in a refused write.
    """
    _Staging([Path(p) for p in paths], overwrite)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _check_target(target: Path, overwrite: bool) -> None:
    folder = target.parent
    if not folder.exists():
        raise InputError(f"folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"folder {folder} is not writable")
    if target.is_dir():
        raise InputError(f"{target} is a folder, not a file name")
    if target.exists() and not overwrite:
        raise InputError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")


def _uint16_frames(movie: Any, n_frames: int) -> Iterator[np.ndarray]:
    """Yield the frames as ``uint16``, refusing values a camera could not produce."""
    for t in range(n_frames):
        frame = np.asarray(movie[t])
        kind = frame.dtype.kind
        if kind == "f":
            if not np.all(np.isfinite(frame)):
                raise InputError(f"frame {t} of the movie contains NaN or infinite values")
            frame = np.rint(frame)
        elif kind not in "ui":
            raise InputError(f"movie pixel type {frame.dtype} cannot be written as uint16 camera counts")
        if frame.size and (frame.min() < 0 or frame.max() > 65535):
            raise InputError(
                f"frame {t} has values from {frame.min()} to {frame.max()}, outside the "
                "uint16 range 0..65535 of camera counts"
            )
        yield frame.astype(np.uint16, copy=False)


def _imagej_movie_kwargs(acquisition: Acquisition) -> dict[str, Any]:
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


def _write_movie_file(tmp: Path, movie: Any, acquisition: Acquisition, compression: str | None) -> None:
    shape = tuple(int(n) for n in np.shape(movie)) if not hasattr(movie, "shape") else tuple(int(n) for n in movie.shape)
    if len(shape) != 3:
        raise InputError(f"a movie must be a (T, Y, X) array, got shape {shape}")
    if min(shape) == 0:
        raise InputError(f"the movie is empty (shape {shape})")
    kwargs = _imagej_movie_kwargs(acquisition)
    if compression is not None:
        kwargs["compression"] = compression
    tifffile.imwrite(tmp, _uint16_frames(movie, shape[0]), shape=shape, dtype=np.uint16, **kwargs)


def write_movie(
    path: str | os.PathLike[str],
    movie: Any,
    acquisition: Acquisition,
    overwrite: bool = False,
    *,
    compression: str | None = None,
) -> Path:
    """Write a ``(T, Y, X)`` movie as a calibrated ImageJ hyperstack TIFF (``uint16``).

    The calibration is written as ImageJ does (``XResolution``/``YResolution`` in
    pixels per um, ``unit=um``, ``finterval`` in s), so ImageJ/Fiji, napari readers
    using tifffile and this module's :func:`read_movie` all see the pixel size and
    frame interval; the whole acquisition is kept as JSON in the ImageJ ``Info``
    property. Frames are converted one at a time, so lazy array-likes are not loaded.

    Parameters
    ----------
    path
        Output ``.tif`` file.
    movie
        ``(T, Y, X)`` array-like of camera counts (ADU); integer or float values in
        ``0..65535`` (floats are rounded).
    acquisition
        Pixel size and frame interval are written as the file's calibration.
    overwrite
        Replace an existing file; otherwise an existing ``path`` raises :class:`InputError`.
    compression
        ``None`` (default, memory-mappable, readable everywhere) or ``"zlib"``
        (deflate, smaller; read by ImageJ/Fiji and libtiff-based readers).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not isinstance(acquisition, Acquisition):
        raise TypeError("acquisition must be an Acquisition")
    target = Path(path)
    with _Staging([target], overwrite) as staging:
        _write_movie_file(staging.temp(target), movie, acquisition, compression)
        staging.commit()
    return target


# ---------------------------------------------------------------- results
def results_paths(prefix: str | os.PathLike[str]) -> dict[str, Path]:
    """The three files of the results contract for ``prefix``: keys tracks, summary, meta."""
    prefix = _strip_results_suffix(Path(prefix))
    return {
        "tracks": prefix.with_name(prefix.name + "_tracks.csv"),
        "summary": prefix.with_name(prefix.name + "_summary.csv"),
        "meta": prefix.with_name(prefix.name + "_meta.json"),
    }


def _strip_results_suffix(prefix: Path) -> Path:
    for suffix in ("_tracks.csv", "_summary.csv", "_meta.json"):
        if prefix.name.endswith(suffix) and len(prefix.name) > len(suffix):
            return prefix.with_name(prefix.name[: -len(suffix)])
    return prefix


def _check_prefix(prefix: Path) -> None:
    if str(prefix).endswith(os.sep) or prefix.is_dir() or prefix.name in ("", ".", ".."):
        raise InputError(f"{prefix} is a folder; give a file-name prefix such as {prefix / 'results'}")


def _json_safe(value: Any) -> Any:
    """Make ``value`` strict-JSON serialisable (numpy scalars/arrays, NaN -> null, paths)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Acquisition):
        return value.to_dict()
    if isinstance(value, (Path, datetime)):
        return str(value)
    if hasattr(value, "to_dict"):
        return _json_safe(value.to_dict())
    return str(value)


def _results_meta(results: Results, paths: dict[str, Path], acquisition: Acquisition | None) -> dict[str, Any]:
    from .. import __version__

    meta: dict[str, Any] = dict(results.meta or {})
    if acquisition is not None:
        meta["acquisition"] = acquisition.to_dict()
    elif isinstance(meta.get("acquisition"), Acquisition):
        meta["acquisition"] = meta["acquisition"].to_dict()
    meta.setdefault("acquisition", None)
    if not meta.get("model"):
        models = sorted({str(m) for m in results.summary.get("model", pd.Series(dtype=object)).dropna() if str(m)})
        meta["model"] = models[0] if len(models) == 1 else (models or None)
    meta.update(
        {
            "software": "napari-spt-diffusion",
            "software_version": __version__,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {"tracks": paths["tracks"].name, "summary": paths["summary"].name},
            "n_tracks": int(len(results.summary)),
            "n_localizations": int(len(results.tracks)),
            "units": {
                "D1_um2_s": "um^2/s",
                "D2_um2_s": "um^2/s",
                "theta_deg": "degrees from +x towards +y (image y down), [0, 180)",
                "x_px": "pixels (pixel centre at integer coordinates)",
                "x_um": "um",
                "t_s": "s",
                "loc_precision_nm": "nm",
                "photons": "photo-electrons per frame",
                "background": "photo-electrons per pixel per frame",
            },
        }
    )
    return _json_safe(meta)


def _ordered_columns(table: pd.DataFrame, contract: Sequence[str]) -> pd.DataFrame:
    extra = [c for c in table.columns if c not in contract]
    return table.loc[:, list(contract) + extra]


def _write_results_files(
    staging: _Staging, paths: dict[str, Path], results: Results, acquisition: Acquisition | None
) -> None:
    tracks = _ordered_columns(results.tracks, TRACKS_COLUMNS)
    summary = _ordered_columns(results.summary, SUMMARY_COLUMNS)
    tracks.to_csv(staging.temp(paths["tracks"]), index=False, float_format=_CSV_FLOAT_FORMAT, lineterminator="\n")
    summary.to_csv(staging.temp(paths["summary"]), index=False, float_format=_CSV_FLOAT_FORMAT, lineterminator="\n")
    meta = _results_meta(results, paths, acquisition)
    with open(staging.temp(paths["meta"]), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2, allow_nan=False)
        handle.write("\n")


def write_results(
    prefix: str | os.PathLike[str],
    results: Results,
    overwrite: bool = False,
    *,
    acquisition: Acquisition | None = None,
) -> list[Path]:
    """Write ``<prefix>_tracks.csv``, ``<prefix>_summary.csv`` and ``<prefix>_meta.json``.

    All or nothing: every target is checked before anything is written, the three
    files are written as temporaries in the same folder and renamed into place at the
    end. The contract's columns come first, extra columns follow. The JSON sidecar
    holds the acquisition, the model name, the software version, the date (UTC) and
    every entry of ``results.meta``.

    Parameters
    ----------
    prefix
        Path prefix, e.g. ``out/movie1`` -> ``out/movie1_tracks.csv`` ...
    results
        Tables in the results contract.
    overwrite
        Replace existing files; otherwise any existing target raises :class:`InputError`
        and nothing is written.
    acquisition
        Recorded in the sidecar; default ``results.meta["acquisition"]``.

    Returns
    -------
    list of pathlib.Path
        The tracks, summary and meta files, in that order.
    """
    if not isinstance(results, Results):
        raise TypeError("results must be a Results")
    prefix = Path(prefix)
    _check_prefix(prefix)
    paths = results_paths(prefix)
    targets = [paths["tracks"], paths["summary"], paths["meta"]]
    with _Staging(targets, overwrite) as staging:
        _write_results_files(staging, paths, results, acquisition)
        staging.commit()
    return targets


def write_simulation(
    path: str | os.PathLike[str],
    movie: Any,
    acquisition: Acquisition,
    truth: Results,
    overwrite: bool = False,
    *,
    compression: str | None = None,
) -> list[Path]:
    """Write a simulated movie and its ground truth together, all or nothing.

    Files: ``path`` (see :func:`write_movie`) and ``<stem>_truth_tracks.csv``,
    ``<stem>_truth_summary.csv``, ``<stem>_truth_meta.json`` beside it (see
    :func:`write_results`).

    Returns
    -------
    list of pathlib.Path
        The movie, then the three truth files.
    """
    if not isinstance(acquisition, Acquisition):
        raise TypeError("acquisition must be an Acquisition")
    targets = simulation_paths(path)
    path = targets[0]
    paths = results_paths(_truth_prefix(path))
    with _Staging(targets, overwrite) as staging:
        _write_movie_file(staging.temp(path), movie, acquisition, compression)
        _write_results_files(staging, paths, truth, acquisition)
        staging.commit()
    return targets


def _truth_prefix(path: Path) -> Path:
    stem = path.name[: -len(path.suffix)] if path.suffix.lower() in (".tif", ".tiff") else path.name
    return path.with_name(stem + "_truth")


def simulation_paths(path: str | os.PathLike[str]) -> list[Path]:
    """Files written by :func:`write_simulation` for ``path``: the movie, then the truth files."""
    path = Path(path)
    if path.is_dir() or path.name in ("", ".", ".."):
        raise InputError(f"{path} is a folder, not a file name")
    paths = results_paths(_truth_prefix(path))
    return [path, paths["tracks"], paths["summary"], paths["meta"]]


def _read_table(path: Path, contract: Sequence[str], empty: pd.DataFrame, text_columns: Sequence[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={c: str for c in text_columns}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path.name} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path.name} is not a readable CSV table ({exc})") from None
    missing = [c for c in contract if c not in table.columns]
    if missing:
        raise InputError(f"{path.name} lacks column(s): {', '.join(missing)}")
    for column in text_columns:
        if column in table.columns:
            table[column] = table[column].fillna("").astype(object)
    if len(table) == 0:
        extra = [c for c in table.columns if c not in contract]
        return pd.concat([empty, table[extra]], axis=1) if extra else empty.copy()
    for column, dtype in empty.dtypes.items():
        if column in text_columns:
            continue
        try:
            if dtype == bool and table[column].dtype != bool:
                table[column] = table[column].astype(str).str.lower().map({"true": True, "false": False, "1": True, "0": False})
                if table[column].isna().any():
                    raise ValueError("not a boolean")
            table[column] = table[column].astype(dtype)
        except (ValueError, TypeError):
            raise InputError(f"column {column} of {path.name} does not hold {dtype} values") from None
    return table


def read_results(prefix: str | os.PathLike[str]) -> Results:
    """Read tables written by :func:`write_results` back into :class:`Results`.

    ``prefix`` may also be the path of one of the three files. A missing
    ``_meta.json`` gives ``meta = {}``.
    """
    paths = results_paths(prefix)
    for key in ("tracks", "summary"):
        if not paths[key].is_file():
            raise InputError(f"{paths[key]} does not exist")
    tracks = _read_table(paths["tracks"], TRACKS_COLUMNS, empty_tracks_table(), ())
    summary = _read_table(
        paths["summary"], SUMMARY_COLUMNS, empty_summary_table(), ("changepoint_frames", "model")
    )
    meta: dict[str, Any] = {}
    if paths["meta"].is_file():
        try:
            meta = json.loads(paths["meta"].read_text(encoding="utf-8"))
        except ValueError:
            raise InputError(f"{paths['meta'].name} is not valid JSON") from None
    try:
        return Results(tracks=tracks, summary=summary, meta=meta)
    except ValueError as exc:
        raise InputError(f"results {paths['tracks'].name}/{paths['summary'].name}: {exc}") from None


# ------------------------------------------------------------ sample data
def sample_movie_path() -> Path:
    """Path of the bundled sample movie (``sample_data/sample_movie.tif`` in the package).

    Its ground truth lies beside it (``sample_movie_truth_*.csv``) and the command that
    generated it is in ``sample_data/README.md``.
    """
    path = Path(__file__).resolve().parent.parent / "sample_data" / "sample_movie.tif"
    if not path.is_file():
        raise InputError(f"the bundled sample movie is missing ({path}); reinstall napari-spt-diffusion")
    return path
