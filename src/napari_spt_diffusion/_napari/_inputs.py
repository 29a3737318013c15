"""Turn napari layers into the library's inputs: the movie and its acquisition.

No widgets here. Bad layers raise :class:`LayerInputError` with one sentence that the
widgets show as a notification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..acquisition_resolver import acquisition_values
from ..errors import SptDiffusionError

__all__ = ["LayerInputError", "acquisition_values_from_layer", "current_frame_index", "movie_from_layer"]


class LayerInputError(SptDiffusionError, ValueError):
    """A layer cannot be used as a single-particle-tracking movie (one sentence)."""


def movie_from_layer(layer: Any) -> Any:
    """The ``(T, Y, X)`` movie held by an image layer.

    Raises
    ------
    LayerInputError
        For no layer, a non-image layer (labels, points...), an RGB or multiscale
        image, or data that is not 3-D.
    """
    from napari.layers import Image

    if layer is None:
        raise LayerInputError("No movie selected: open a (T, Y, X) movie as an image layer first")
    if not isinstance(layer, Image):
        kind = type(layer).__name__.lower()
        raise LayerInputError(
            f"'{layer.name}' is a {kind} layer: pick the image layer that holds the movie"
        )
    if getattr(layer, "rgb", False):
        raise LayerInputError(
            f"'{layer.name}' is an RGB image: the tracker needs a single-channel (T, Y, X) movie"
        )
    if getattr(layer, "multiscale", False):
        raise LayerInputError(f"'{layer.name}' is a multiscale image: open the movie at full resolution")
    shape = tuple(int(n) for n in layer.data.shape)
    if len(shape) == 2:
        raise LayerInputError(
            f"'{layer.name}' is a single 2-D image: the tracker needs a movie with a time axis (T, Y, X)"
        )
    if len(shape) != 3:
        raise LayerInputError(
            f"'{layer.name}' has {len(shape)} dimensions {shape}: the tracker needs a (T, Y, X) movie"
        )
    if min(shape) < 1 or shape[0] < 2:
        raise LayerInputError(f"'{layer.name}' has shape {shape}: the tracker needs at least 2 frames")
    if not np.issubdtype(np.dtype(layer.data.dtype), np.number) or np.issubdtype(
        np.dtype(layer.data.dtype), np.complexfloating
    ):
        raise LayerInputError(f"'{layer.name}' holds {layer.data.dtype} values, not camera counts")
    return layer.data


def _unit_name(unit: Any) -> str:
    return str(unit).lower()


def acquisition_values_from_layer(layer: Any) -> tuple[dict[str, Any], str]:
    """Acquisition fields known from a layer, and where they came from.

    Sources, most complete first: ``layer.metadata["acquisition"]`` (layers made by
    this plugin), the TIFF metadata of ``layer.source.path`` (ImageJ/OME calibration
    read by :func:`~napari_spt_diffusion.io.read_movie`), then the layer's ``scale``
    when its units are physical (um/nm, s).

    Returns
    -------
    (dict, str)
        Fields of :class:`~napari_spt_diffusion.acquisition.Acquisition` (possibly
        empty) and a short description of the source (``""`` when nothing is known).
    """
    if layer is None:
        return {}, ""
    md = getattr(layer, "metadata", None) or {}
    acq = md.get("acquisition")
    if isinstance(acq, Acquisition):
        return acq.to_dict(), "layer metadata"
    if isinstance(acq, dict):
        try:
            return Acquisition.from_dict(acq).to_dict(), "layer metadata"
        except ValueError:
            pass
    source = getattr(getattr(layer, "source", None), "path", None)
    if source and Path(str(source)).suffix.lower() in (".tif", ".tiff") and Path(str(source)).is_file():
        from .. import io

        try:
            movie = io.read_movie(source)
        except ValueError:
            movie = None
        if movie is not None:
            values = acquisition_values(movie.acquisition_dict, movie.calibration)
            movie.close()
            if values:
                return values, f"TIFF metadata ({Path(str(source)).name})"
    values = {}
    units = tuple(getattr(layer, "units", ()) or ())
    scale = np.asarray(getattr(layer, "scale", ()), dtype=float)
    if len(units) >= 3 and len(scale) >= 3:
        uy, ut = _unit_name(units[-2]), _unit_name(units[-3])
        if uy in ("micrometer", "um", "µm"):
            values["pixel_size_nm"] = float(scale[-2]) * 1000.0
        elif uy in ("nanometer", "nm"):
            values["pixel_size_nm"] = float(scale[-2])
        if ut in ("second", "s"):
            values["frame_interval_s"] = float(scale[-3])
        elif ut in ("millisecond", "ms"):
            values["frame_interval_s"] = float(scale[-3]) / 1000.0
    return values, ("layer scale" if values else "")


def current_frame_index(viewer: Any, layer: Any) -> int:
    """Index of the frame of ``layer`` (a (T, Y, X) movie) shown in the viewer."""
    ndim = int(layer.ndim)
    step = viewer.dims.current_step
    axis = len(step) - ndim
    world = list(viewer.dims.point)
    try:
        data_pos = layer.world_to_data(world[-ndim:] if len(world) >= ndim else world)
        frame = int(round(float(np.asarray(data_pos)[0])))
    except (ValueError, TypeError, IndexError):
        frame = int(step[axis])
    n = int(layer.data.shape[0])
    return int(min(max(frame, 0), n - 1))
