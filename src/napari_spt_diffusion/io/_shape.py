"""The ``(T, Y, X)`` shape of a stored image series (TIFF or zarr), or the one-sentence reason it is not a movie."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._errors import InputError


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
