"""Argument types of the command line (:mod:`.cli`): each turns a text into a checked value or raises
``argparse.ArgumentTypeError`` with the reason, which the parser prints as one line."""

from __future__ import annotations

import argparse
import re

__all__ = [
    "chunk_frames", "field_size", "finite_float", "fraction", "frame_count", "non_negative_float",
    "non_negative_int", "positive_float", "positive_int",
]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _frame_count(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"a movie needs at least 2 frames, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not abs(value) < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def _field_size(text: str) -> tuple[int, int]:
    """``128`` -> (128, 128); ``96x128`` -> (96, 128) as (Y, X)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected PX or HEIGHTxWIDTH in pixels, got {text!r}")
    ny = int(match.group(1))
    nx = int(match.group(2) or match.group(1))
    if min(ny, nx) < 8:
        raise argparse.ArgumentTypeError(f"the field must be at least 8 x 8 pixels, got {ny} x {nx}")
    return ny, nx


def _chunk_frames(text: str) -> int:
    """``--chunk-frames``: frames per window of a long movie (``0``: never chunk, the whole movie in memory)."""
    return _non_negative_int(text)


positive_int = _positive_int
non_negative_int = _non_negative_int
frame_count = _frame_count
positive_float = _positive_float
finite_float = _finite_float
non_negative_float = _non_negative_float
fraction = _fraction
field_size = _field_size
chunk_frames = _chunk_frames
