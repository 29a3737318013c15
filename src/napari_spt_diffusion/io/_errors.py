"""The error of the I/O functions: a problem with the user's files, in one sentence."""

from __future__ import annotations

from ..errors import SptDiffusionError

__all__ = ["InputError"]


class InputError(SptDiffusionError, ValueError):
    """A problem with the user's input or output paths, described in one sentence."""
