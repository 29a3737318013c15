"""TIFF movies: read ``(T, Y, X)`` movies without loading them, write calibrated ones.

* :func:`read_movie` opens a TIFF movie ``(T, Y, X)`` without loading it: a
  ``numpy.memmap`` when the pixel data lie uncompressed and contiguous in the file,
  otherwise a :class:`LazyTiffFrames` reader that decodes frames on demand. The pixel
  size and frame interval come from the file's metadata (see :mod:`.tiff_metadata`).
* :func:`write_movie` writes an ImageJ hyperstack (``uint16``, axes ``TYX``) calibrated
  the way ImageJ itself writes it, the full :class:`~napari_spt_diffusion.acquisition.Acquisition`
  in the ImageJ ``Info`` property, through a temporary file renamed into place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..acquisition import Acquisition
from ..acquisition_resolver import resolve_acquisition
from ._atomic import AtomicFileSet
from ._errors import InputError
from ._shape import _movie_shape
from .tiff_metadata import file_calibration, imagej_movie_kwargs, stored_acquisition
from .zarr_movie import is_zarr_path, read_zarr_movie

#: tifffile's logger: its messages on damaged files are collected and reported by this module.
_TIFFFILE_LOGGER = logging.getLogger("tifffile")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    """Collect tifffile's log messages (e.g. ``invalid page offset``) instead of printing them on stderr."""
    handler = _Collect()
    propagate = _TIFFFILE_LOGGER.propagate
    _TIFFFILE_LOGGER.addHandler(handler)
    _TIFFFILE_LOGGER.propagate = False
    try:
        yield handler.messages
    finally:
        _TIFFFILE_LOGGER.removeHandler(handler)
        _TIFFFILE_LOGGER.propagate = propagate


__all__ = ["LazyTiffFrames", "MovieFile", "read_movie", "sample_movie_path", "write_movie", "write_movie_file"]


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
        with _tifffile_log():
            self._tif = tifffile.TiffFile(self._path)
            self._lock = threading.Lock()
            self._series = self._tif.series[series]
            shape = _movie_shape(self._series.shape, self._series.axes, self._path)
            self.shape: tuple[int, int, int] = shape
            self.dtype = np.dtype(self._series.dtype)
            self._pages = self._series.pages
            # one page per frame: any other layout would need the whole series decoded at once
            if len(self._pages) != shape[0] or any(p is None for p in (self._pages[0], self._pages[-1])):
                self._tif.close()
                raise InputError(
                    f"{self._path.name} stores its {shape[0]} frames in {len(self._pages)} compressed or scattered "
                    "pages, which cannot be read one frame at a time; save it as one page per frame (e.g. with "
                    "Fiji's File > Save As > Tiff)")

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
        with self._lock, _tifffile_log() as logged:
            out = np.empty((len(indices), ny, nx), dtype=self.dtype)
            for k, i in enumerate(indices):
                try:
                    out[k] = self._pages[int(i)].asarray().reshape(ny, nx)
                except Exception as exc:  # zlib.error, ValueError, ... from a damaged page
                    detail = "; ".join(logged[-1:] + [f"{type(exc).__name__}: {exc}"])
                    raise InputError(f"frame {int(i)} of {self._path.name} cannot be decoded ({detail}): the file "
                                     "is damaged or truncated; copy or export the movie again") from None
            return out

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
        Where the calibration came from: ``"imagej"``, ``"ome"``, ``"tiff-tags"``, ``"ome-zarr"`` or ``None``.
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

        Precedence, lowest first (:func:`~napari_spt_diffusion.acquisition_resolver.resolve_acquisition`):
        ``base`` (default: the standard acquisition), the acquisition stored by this
        package in the file, the file's ImageJ/OME calibration, then
        ``pixel_size_nm`` (nm), ``frame_interval_s`` (s) and ``changes`` given here
        (``None`` for the first two means "not given").

        Raises
        ------
        InputError
            If ``require_calibration`` and the pixel size or frame interval is neither
            in the file nor given.
        """
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
        given = {"pixel_size_nm": pixel_size_nm, "frame_interval_s": frame_interval_s}
        explicit = {**{k: v for k, v in given.items() if v is not None}, **changes}
        return resolve_acquisition(self.acquisition_dict, self.calibration, explicit, base=base)

    @property
    def calibration(self) -> dict[str, float | None]:
        """The file's own calibration: ``pixel_size_nm`` (nm) and ``frame_interval_s`` (s), ``None`` if unknown."""
        return {"pixel_size_nm": self.pixel_size_nm, "frame_interval_s": self.frame_interval_s}

    def close(self) -> None:
        """Release the file (a memmap is released when no array refers to it any more)."""
        if self._closer is not None:
            self._closer()

    def __enter__(self) -> MovieFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_movie(path: str | os.PathLike[str]) -> MovieFile:
    """Open a single-channel TIFF or OME-Zarr movie ``(T, Y, X)`` without loading it into memory.

    Parameters
    ----------
    path
        A TIFF file (ImageJ hyperstack, OME-TIFF or a plain multi-page TIFF), or an
        OME-Zarr folder (its full-resolution level, :mod:`.zarr_movie`). The
        one non-singleton axis besides Y and X is taken as time, whatever it is
        called in the file (T, Z, pages).

    Returns
    -------
    MovieFile
        ``.data`` is a read-only memmap when possible, else a :class:`LazyTiffFrames`
        (a :class:`~.zarr_movie.ZarrFrames` for OME-Zarr).

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
    if is_zarr_path(path):
        frames, pixel_size_nm, frame_interval_s, axes, source = read_zarr_movie(path)
        return MovieFile(path=path, data=frames, pixel_size_nm=pixel_size_nm, frame_interval_s=frame_interval_s,
                         metadata_source=source, axes=axes)
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    with _tifffile_log() as logged:  # tifffile's complaints about a damaged file become the message
        return _read_movie(path, logged)


def _read_movie(path: Path, logged: list[str]) -> MovieFile:
    """:func:`read_movie` of an existing file, tifffile's log messages collected in ``logged``."""
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
        damage = _damage(tif, series, path, logged)
        if damage:
            raise InputError(f"{path.name} is truncated or damaged: {damage}; copy or export the movie again")
        shape = _movie_shape(series.shape, series.axes, path)
        dtype = np.dtype(series.dtype)
        if dtype.kind not in "uif":
            raise InputError(f"{path.name} has pixel type {dtype}, not grey values (integers or floats)")
        pixel_size_nm, frame_interval_s, source = file_calibration(tif)
        acquisition_dict = stored_acquisition(tif)
        axes = str(series.axes)
        memmappable = series.dataoffset is not None
    except InputError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise _unreadable(path, exc, logged) from None
    tif.close()

    data: Any = None
    closer = None
    if memmappable:
        try:
            with _tifffile_log():
                data = tifffile.memmap(path, series=0, mode="r").reshape(shape)
        except (ValueError, OSError):
            data = None
    if data is None:
        try:
            lazy = LazyTiffFrames(path)
        except InputError:
            raise
        except Exception as exc:
            raise _unreadable(path, exc, logged) from None
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


def _unreadable(path: Path, exc: BaseException, logged: Sequence[str]) -> InputError:
    """The error for a file tifffile failed on: damaged when tifffile logged why, else the exception."""
    text = f"{type(exc).__name__}: {exc}"
    if logged:
        return InputError(f"{path.name} is truncated or damaged (tifffile: {logged[-1]}; {text}); copy or export "
                          "the movie again")
    return InputError(f"{path.name} could not be read as a TIFF movie ({text})")


def _damage(tif: Any, series: Any, path: Path, logged: Sequence[str]) -> str | None:
    """Why a TIFF file is truncated or damaged (pixel data past its end, fewer pages than its
    metadata announce, a broken page chain), or ``None`` when nothing is wrong."""
    size = path.stat().st_size
    if series.dataoffset is not None and int(series.dataoffset) + int(series.nbytes) > size:
        return (f"its pixel data would end at byte {int(series.dataoffset) + int(series.nbytes):,} but the file has "
                f"{size:,} bytes")
    pages = [p for p in (series.pages[0], series.pages[-1]) if p is not None] if len(series.pages) else []
    for page in pages:
        offsets, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
        if len(offsets) and max(int(o) + int(c) for o, c in zip(offsets, counts)) > size:
            return f"a page's pixel data run past the end of the file ({size:,} bytes)"
    announced = 0
    if tif.is_imagej and tif.imagej_metadata:
        announced = int(tif.imagej_metadata.get("images", 0) or 0)
    if announced > 1 and int(np.prod(series.shape[:-2], dtype=np.int64)) < announced and len(tif.pages) < announced:
        return f"its ImageJ metadata announce {announced} frames but only {len(tif.pages)} page(s) can be read"
    broken = [m for m in logged if "invalid page offset" in m or "corrupted" in m]
    if broken:
        return f"tifffile: {broken[0]}"
    return None


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


def write_movie_file(tmp: Path, movie: Any, acquisition: Acquisition, compression: str | None) -> None:
    """Write ``movie`` to ``tmp`` directly, as :func:`write_movie` describes (the caller stages the file)."""
    shape = tuple(int(n) for n in (movie.shape if hasattr(movie, "shape") else np.shape(movie)))
    if len(shape) != 3:
        raise InputError(f"a movie must be a (T, Y, X) array, got shape {shape}")
    if min(shape) == 0:
        raise InputError(f"the movie is empty (shape {shape})")
    kwargs = imagej_movie_kwargs(acquisition)
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
    with AtomicFileSet([target], overwrite) as staging:
        write_movie_file(staging.temp(target), movie, acquisition, compression)
        staging.commit()
    return target


def sample_movie_path() -> Path:
    """Path of the bundled sample movie (``sample_data/sample_movie.tif`` in the package).

    Its ground truth lies beside it (``sample_movie_truth_*.csv``) and the command that
    generated it is in ``sample_data/README.md``.
    """
    path = Path(__file__).resolve().parent.parent / "sample_data" / "sample_movie.tif"
    if not path.is_file():
        raise InputError(f"the bundled sample movie is missing ({path}); reinstall napari-spt-diffusion")
    return path
