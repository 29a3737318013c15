"""The library's warning channel: warnings reach the user while the work goes on.

The library warns through :func:`warn` (Python's :mod:`warnings` with the category
:class:`SptWarning`, a ``UserWarning``), at the moment a problem is found: a measured
value out of range, crowded frames, a linker that had to shrink its search range. Callers
choose where the warnings go with :class:`WarningSink`, a context manager that passes each
distinct library warning, as one line, to a callback as soon as it is issued:

* the command line prints it at once on stderr (``spt-diffusion: warning: ...``), between
  the lines of the progress bar;
* the napari widget can hand the same callback a queued signal and show the warnings in
  its status (the callback then runs in the worker thread);
* ``track_and_estimate`` also keeps its warnings in ``Results.meta["warnings"]``.

Like :func:`warnings.catch_warnings`, a sink changes the interpreter's warning state:
enter it in the thread that starts the work and do not nest sinks across threads.
This module imports nothing from the package.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["SptWarning", "WarningSink", "warn", "warn_all", "one_line"]


class SptWarning(UserWarning):
    """A warning of the library about the user's input or results: one sentence, with the fix."""


def one_line(text: Any) -> str:
    """``text`` on one line, runs of white space collapsed."""
    return " ".join(str(text).split())


def warn(message: str, stacklevel: int = 3) -> None:
    """Issue a library warning (:class:`SptWarning`) now; a :class:`WarningSink` passes it on at once."""
    warnings.warn(one_line(message), SptWarning, stacklevel=stacklevel)


def warn_all(messages: list[str]) -> list[str]:
    """:func:`warn` each of ``messages`` now; returns them (e.g. for ``meta["warnings"]``)."""
    for message in messages:
        warn(message, stacklevel=4)
    return list(messages)


class WarningSink:
    """Collect the library's warnings and pass each one on as it arises.

    Parameters
    ----------
    callback
        Called with each distinct warning (one line of text) when it is issued; ``None``
        only collects them.

    Attributes
    ----------
    messages
        The distinct warnings, in the order they arose.

    Every ``UserWarning`` (library warnings and those of the libraries it calls, e.g.
    trackpy's) is passed on once; other categories (deprecations, numpy's
    ``RuntimeWarning``) are dropped, as they say nothing the user can act on.
    """

    def __init__(self, callback: Callable[[str], Any] | None = None) -> None:
        self.callback = callback
        self.messages: list[str] = []
        self._seen: set[str] = set()
        self._context: Any = None

    def __enter__(self) -> WarningSink:
        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.simplefilter("always")
        warnings.showwarning = self._show  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)
        self._context = None

    def _show(self, message: Any, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
        if not issubclass(category, UserWarning):
            return
        text = one_line(message)
        if text in self._seen:
            return
        self._seen.add(text)
        self.messages.append(text)
        if self.callback is not None:
            self.callback(text)
