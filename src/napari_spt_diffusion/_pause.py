"""Test hook: pause a run at a named stage so that a test can send it a signal there.

Inert in normal use: :func:`pause_point` returns at once unless the environment variable
``SPT_DIFFUSION_TEST_PAUSE`` names the stage. When it does, the first call for that stage
prints ``spt-diffusion: test pause at STAGE (pid N)`` on stderr and sleeps
``SPT_DIFFUSION_TEST_PAUSE_S`` seconds (default 30), then the run goes on.

Stages: ``detection`` and ``inference`` (the ``track`` command, on the first progress
report of that step), ``writing`` (every temporary of a file set written and flushed,
nothing renamed yet) and ``renaming`` (the first file of a set renamed into place, the
others not yet; SIGINT and SIGTERM are held back there).
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["PAUSE_ENV", "pause_point"]

PAUSE_ENV = "SPT_DIFFUSION_TEST_PAUSE"
_paused: set[str] = set()


def pause_point(stage: str) -> None:
    """Pause here if ``SPT_DIFFUSION_TEST_PAUSE`` names ``stage`` (once per process); else nothing."""
    if os.environ.get(PAUSE_ENV) != stage or stage in _paused:
        return
    _paused.add(stage)
    seconds = float(os.environ.get(PAUSE_ENV + "_S", "30"))
    # one write, newline included: stderr writes through, and print() writes the text and its newline
    # separately, so a signal sent on seeing the text could land between them and join two lines
    sys.stderr.write(f"spt-diffusion: test pause at {stage} (pid {os.getpid()})\n")
    sys.stderr.flush()
    time.sleep(seconds)
