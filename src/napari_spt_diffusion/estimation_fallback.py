"""A bundled model the guard rejects gives way to its model for any microscope before the classical values.

The model switch (:mod:`~.estimation.model_choice`) runs a bundled model's model for any microscope
(``aniso`` -> ``aniso_any`` ...) where the movie's acquisition lies outside the first one's range. Inside
that range the first model can still be biased on a movie (on our robustness grid the guard rejects
``twostate`` at 0.7 px and 1,000-4,000 photons and Airy 1 px / 4,000, 0.73-0.80 x, and ``aniso`` at 0.7 px
and Airy 1 px, 1,000-4,000 photons, 0.74-0.82 x, where ``twostate_any`` and ``aniso_any`` are accepted and
meet the grid target:
``benchmarks/reports/grid_twostate.md``, ``grid.md``). So when the guard rejects such a model, the
estimation stage runs again with its model for any microscope (if the movie lies inside that one's range),
and where the guard accepts that one its values are reported instead of the classical ones, with one
sentence and ``meta["model_switch"]`` (``reasons``: the guard's rejection). Where the guard rejects it too,
the first run's results stand (the classical values). ``--keep-model`` (``Settings.model_switch = False``)
and ``--trust-model`` keep the model asked for; a model given as a file path never falls back.

``meta["guard_fallback"]`` records what was tried (``tried``: the model for any microscope run after the
rejection, or ``null``; ``reported``; where it is reported, ``rejected_guard``: the first model's verdict); it is
absent where no fallback applies (the model has no bundled alternative, ``--keep-model``, ``--trust-model``).

The warnings a run gives once its guard rejected the model (the rejection itself, the plausibility notes on the
classical values) are held back until it is known which run is reported, and shown only for that one; the
warnings before the guard (linking, crowding, ...) are shown as they arise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from . import notices
from .acquisition import Acquisition
from .estimation.estimator import Estimator
from .estimation.model_choice import ALTERNATIVES, ModelSwitch
from .estimation_stage import HELD_AFTER_REJECTION, StageOutput, _estimator, _warn, estimate_stage

__all__ = ["estimate_with_fallback", "fallback_estimator"]


def fallback_estimator(estimator: Estimator, settings: Any, acquisition: Acquisition) -> Estimator | None:
    """The model for any microscope to run after the guard rejected ``estimator``, or ``None``.

    ``None`` where the settings keep the model (``model_switch`` off, ``trust_model`` on), the model has no
    bundled alternative (a path, or already a model for any microscope) or the movie lies outside the
    alternative's range too.
    """
    if not _applies(estimator, settings):
        return None
    other = ALTERNATIVES.get(estimator.model_name)
    if other is None:
        return None
    try:
        alternative = _estimator(other, settings)
    except Exception:  # a bundled alternative that cannot be loaded: no fallback, the classical values stand
        return None
    return None if alternative.check_acquisition(acquisition, warn=False) else alternative


def _applies(estimator: Estimator, settings: Any) -> bool:
    """Whether a rejection of ``estimator`` may give way to its model for any microscope: the bundled model asked
    for by name (not a checkpoint path, whose card may carry a bundled model's name), switching allowed."""
    asked = str(getattr(settings, "model", ""))
    return (bool(getattr(settings, "model_switch", False)) and not getattr(settings, "trust_model", False)
            and asked in ALTERNATIVES and estimator.model_name == asked)


def _holding(run: Callable[[], StageOutput]) -> tuple[StageOutput, list[str]]:
    """``run()`` with the warnings it would give after its guard rejected the model held back (returned)."""
    held: list[str] = []
    token = HELD_AFTER_REJECTION.set(held)
    try:
        return run(), held
    finally:
        HELD_AFTER_REJECTION.reset(token)


def estimate_with_fallback(
    movie: Any,
    tracks: pd.DataFrame,
    acquisition: Acquisition,
    estimator: Estimator,
    settings: Any,
    bar: Any,
    acquisition_messages: list[str],
    complete: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> tuple[StageOutput, ModelSwitch | None]:
    """:func:`~.estimation_stage.estimate_stage`, run again with the model for any microscope where the
    guard rejects a bundled model and accepts that one (module docstring).

    Returns the stage output reported and the switch made (``None``: the first run is reported).
    """
    if not _applies(estimator, settings):
        return estimate_stage(movie, tracks, acquisition, estimator, settings, bar, acquisition_messages,
                              complete), None
    start = (getattr(bar, "done", None), getattr(bar, "last", None))  # the progress bar's place before the stage
    first, held = _holding(lambda: estimate_stage(movie, tracks, acquisition, estimator, settings, bar,
                                                  acquisition_messages, complete))
    alternative = fallback_estimator(estimator, settings, acquisition) if first.meta["guard"]["rejected"] else None
    first.meta["guard_fallback"] = {"tried": None if alternative is None else alternative.model_name,
                                    "reported": False}
    if alternative is None:
        notices.warn_all(held)
        return first, None
    guard_first = first.meta["guard"]
    measured = f" ({guard_first['bias_factor']:.2f} x the classical estimate)" if math.isfinite(
        guard_first["bias_factor"]) else ""
    message = (
        f"the guard rejected model '{estimator.model_name}' on this movie{measured}; model '{alternative.model_name}', "
        "trained over a range of microscopes, is run instead and reported where the guard accepts it (--keep-model, "
        f"or 'keep this model' in the widget, keeps '{estimator.model_name}' and reports the classical values)"
    )
    _warn(message)  # now, before the second run's own warnings
    if None not in start:  # the bar goes back to where the stage began and follows the second run
        bar.done, bar.last = start[0], start[0]
    second, _ = _holding(lambda: estimate_stage(movie, tracks, acquisition, alternative, settings, bar, [],
                                                complete))
    guard_second = second.meta["guard"]
    if guard_second["rejected"]:
        also = f"model '{alternative.model_name}' was rejected too; the classical estimates are reported"
        first.messages += [message, also]
        notices.warn_all([*held, also])
        return first, None
    second.meta["guard_fallback"] = {"tried": alternative.model_name, "reported": True,
                                     "rejected_guard": guard_first}
    second.messages.insert(0, message)
    second.timings["rejected_run_s"] = float(sum(first.timings.values()))
    interval = (f", 99 % interval {guard_first['bias_low']:.2f}-{guard_first['bias_high']:.2f}"
                if math.isfinite(guard_first["bias_low"]) else "")
    reason = (f"the guard rejected it: {guard_first['bias_factor']:.2f} x the classical estimate over "
              f"{guard_first['n_tracks']} tracks{interval}" if math.isfinite(guard_first["bias_factor"])
              else "the guard rejected it: the movie lies outside its range and its values could not be shown to "
                   "agree with the classical estimate")
    return second, ModelSwitch(estimator.model_name, alternative.model_name, (reason,), message)
