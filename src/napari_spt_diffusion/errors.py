"""The base of every error the library raises for input a user can fix.

Each module keeps its own exception class (``io.InputError``,
``acquisition.AcquisitionError``, ``tracking.detect.TrackingInputError``, ...), named
after what was wrong; all of them derive from :class:`SptDiffusionError`, and most
also from ``ValueError``, so callers may catch either. The command line reports any
:class:`SptDiffusionError` as one line without a traceback.

This module imports nothing from the package, so that every module can import it.
"""

from __future__ import annotations

__all__ = ["SptDiffusionError"]


class SptDiffusionError(Exception):
    """Base of every error the library raises for bad input: a wrong value, an unreadable
    or unsuitable file, an output that cannot be written, a model file that does not match
    its card. The message is one sentence a user can act on."""
