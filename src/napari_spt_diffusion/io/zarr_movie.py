"""OME-Zarr movies: the full-resolution level of an OME-NGFF image read frame by frame.

:func:`read_zarr_movie` opens a folder ``movie.ome.zarr`` (OME-NGFF 0.4, zarr v2, or 0.5,
zarr v3) with plain ``zarr``: the first multiscale's first dataset (level 0, full
resolution), its axes (``t``, ``c``, ``z``, ``y``, ``x``: the one non-singleton axis besides
``y`` and ``x`` is time, as for TIFF movies) and its ``scale`` transformations (dataset and
multiscale level multiplied) in the axes' units give the pixel size (nm) and the frame
interval (s). A bare zarr array of three dimensions is read as ``(T, Y, X)`` without a
calibration. Nothing is loaded: :class:`ZarrFrames` reads the chunks of one frame on demand.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError
from ._shape import _movie_shape

__all__ = ["ZarrFrames", "is_zarr_path", "read_zarr_movie"]

#: Length units of OME-NGFF axes, in nm.
_LENGTH_NM = {"angstrom": 0.1, "nanometer": 1.0, "micrometer": 1e3, "millimeter": 1e6, "centimeter": 1e7,
              "meter": 1e9, "nm": 1.0, "um": 1e3, "µm": 1e3, "micron": 1e3}
#: Time units of OME-NGFF axes, in s.
_TIME_S = {"nanosecond": 1e-9, "microsecond": 1e-6, "millisecond": 1e-3, "second": 1.0, "minute": 60.0,
           "hour": 3600.0, "s": 1.0, "ms": 1e-3, "sec": 1.0}
#: Files that mark a zarr folder (v2 group/array attributes, v3 metadata).
_MARKERS = (".zgroup", ".zarray", ".zattrs", "zarr.json")


def is_zarr_path(path: Path) -> bool:
    """True for a folder holding a zarr group or array (``.zarr`` / ``.ome.zarr``, or any folder with zarr metadata)."""
    return path.is_dir() and any((path / m).is_file() for m in _MARKERS)


class ZarrFrames:
    """Read-only ``(T, Y, X)`` view of an n-dimensional zarr array, one frame read at a time.

    Parameters
    ----------
    array
        The zarr array (any number of dimensions).
    time_axis, y_axis, x_axis
        Which of its axes are time, Y and X; every other axis has length 1 and is read at 0.
    """

    def __init__(self, array: Any, time_axis: int, y_axis: int, x_axis: int) -> None:
        self._array = array
        self._axes = (int(time_axis), int(y_axis), int(x_axis))
        shape = tuple(int(n) for n in array.shape)
        self.shape: tuple[int, int, int] = (shape[time_axis], shape[y_axis], shape[x_axis])
        self.dtype = np.dtype(array.dtype)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ZarrFrames(shape={self.shape}, dtype={self.dtype})"

    def _index(self, t: Any) -> tuple[Any, ...]:
        key: list[Any] = [0] * len(self._array.shape)
        key[self._axes[0]] = t
        key[self._axes[1]] = slice(None)
        key[self._axes[2]] = slice(None)
        return tuple(key)

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, int | np.integer):
            t = int(key)
            if not -self.shape[0] <= t < self.shape[0]:
                raise IndexError(f"frame {t} is out of range for a movie of {self.shape[0]} frames")
            frame = self._frame(t % self.shape[0])
            return frame[rest] if rest else frame
        frames = np.stack([self._frame(int(t)) for t in np.arange(self.shape[0])[key]]) if self.shape[0] else None
        if frames is None:
            return np.zeros((0, *self.shape[1:]), dtype=self.dtype)
        return frames[(slice(None), *rest)] if rest else frames

    def _frame(self, t: int) -> np.ndarray:
        frame = np.asarray(self._array[self._index(t)])
        if self._axes[1] > self._axes[2]:  # stored X before Y
            frame = frame.T
        return frame

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype, copy=False)


def _axes(multiscale: dict[str, Any], ndim: int) -> list[dict[str, Any]]:
    """The axes of an OME-NGFF multiscale as dicts with ``name`` (and ``type``, ``unit`` when given)."""
    axes = multiscale.get("axes")
    if axes is None:  # NGFF 0.1/0.2: always tczyx
        axes = ["t", "c", "z", "y", "x"][-ndim:]
    return [{"name": a} if isinstance(a, str) else dict(a) for a in axes]


def _scale(transforms: Any, ndim: int) -> np.ndarray:
    """The product of the ``scale`` transformations in a list (ones when none)."""
    out = np.ones(ndim)
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
            out = out * np.asarray(t["scale"], dtype=float)
    return out


def _calibration(axes: list[dict[str, Any]], scale: np.ndarray, t_axis: int, x_axis: int) -> tuple[Any, Any]:
    """``(pixel_size_nm, frame_interval_s)`` from the scales in the axes' units (``None`` where unknown)."""
    pixel = frame = None
    x_unit = str(axes[x_axis].get("unit", "")).lower()
    if x_unit in _LENGTH_NM and math.isfinite(scale[x_axis]) and scale[x_axis] > 0:
        pixel = float(scale[x_axis] * _LENGTH_NM[x_unit])
    t_unit = str(axes[t_axis].get("unit", "")).lower()
    is_time = axes[t_axis].get("type") == "time" or axes[t_axis].get("name") == "t"
    if is_time and t_unit in _TIME_S and math.isfinite(scale[t_axis]) and scale[t_axis] > 0:
        frame = float(scale[t_axis] * _TIME_S[t_unit])
    return pixel, frame


def read_zarr_movie(path: Path) -> tuple[ZarrFrames, float | None, float | None, str, str | None]:
    """Open an OME-Zarr (or bare zarr) movie folder.

    Returns
    -------
    tuple
        ``(frames, pixel_size_nm, frame_interval_s, axes, source)``: the :class:`ZarrFrames`,
        the calibration (``None`` where the metadata lack it), the axes as letters (e.g.
        ``"TCZYX"``) and ``"ome-zarr"`` (``None`` for a bare array).

    Raises
    ------
    InputError
        Not a zarr folder, no image in it, an axis layout that is not a single-channel
        ``(T, Y, X)`` movie, or a pixel type that is not a real number.
    """
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency
        raise InputError(f"{path.name} is a zarr folder; reading it needs the 'zarr' package") from None
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(f"{path.name} is not a readable zarr folder ({type(exc).__name__}: {exc})") from None
    source = None
    if hasattr(node, "shape") and not hasattr(node, "group_keys"):  # a bare array
        array = node
        names = ["t", "y", "x"] if len(array.shape) == 3 else []
        axes = [{"name": n} for n in names]
        scale = np.ones(len(array.shape))
    else:
        attrs = dict(node.attrs)
        ome = attrs.get("ome", attrs)  # NGFF 0.5 nests its metadata under "ome"
        multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
        if not multiscales:
            raise InputError(f"{path.name} is a zarr group without OME-NGFF 'multiscales' metadata: no image to read")
        multiscale = multiscales[0]
        datasets = multiscale.get("datasets") or []
        if not datasets or "path" not in datasets[0]:
            raise InputError(f"{path.name}: its OME-NGFF metadata name no dataset")
        try:
            array = node[str(datasets[0]["path"])]
        except Exception as exc:
            raise InputError(f"{path.name}: level {datasets[0]['path']!r} cannot be opened ({exc})") from None
        axes = _axes(multiscale, len(array.shape))
        scale = (_scale(datasets[0].get("coordinateTransformations"), len(array.shape))
                 * _scale(multiscale.get("coordinateTransformations"), len(array.shape)))
        source = "ome-zarr"
    if len(axes) != len(array.shape):
        raise InputError(f"{path.name} has {len(array.shape)} dimensions but {len(axes)} named axes")
    letters = "".join(str(a.get("name", "?"))[:1].upper() for a in axes)
    letters = letters.replace("?", "Q")
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "uif":
        raise InputError(f"{path.name} has pixel type {dtype}, not grey values (integers or floats)")
    if "Y" not in letters or "X" not in letters:
        raise InputError(f"{path.name} has axes {letters!r} without y and x")
    y_axis, x_axis = letters.index("Y"), letters.index("X")
    # the TIFF rules: no channels, one non-singleton axis besides Y and X, which is time
    order = [i for i in range(len(letters)) if i not in (y_axis, x_axis)] + [y_axis, x_axis]
    _movie_shape([array.shape[i] for i in order], "".join(letters[i] for i in order), path)
    t_axis = next(i for i in order[:-2] if int(array.shape[i]) > 1)
    pixel, frame = _calibration(axes, scale, t_axis, x_axis)
    return ZarrFrames(array, t_axis, y_axis, x_axis), pixel, frame, letters, source
