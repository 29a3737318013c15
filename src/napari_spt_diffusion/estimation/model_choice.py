"""Which bundled model estimates a movie: the one asked for, or the one for any microscope.

A bundled model trained at one acquisition (``aniso``: PSF 1 px, 1,000 photons, 10
background photons/px) is the most accurate there, and biased elsewhere. A bundled model
trained over many acquisitions (:data:`ALTERNATIVES`) takes over when the movie's calibrated
(or told) acquisition lies outside the first one's card and inside its own. The switch is
reported in one sentence and recorded in ``meta["model_switch"]``; ``Settings(model_switch=False)``
(``--keep-model``) keeps the model asked for. A model given as a file path never switches.

The guard (:mod:`.guard`) then judges the model that ran, as always.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..acquisition import Acquisition
from .checkpoint import available_models

__all__ = ["ALTERNATIVES", "ModelSwitch", "alternative_for"]

#: Bundled model -> the bundled model for any microscope that replaces it outside its range.
ALTERNATIVES: dict[str, str] = {"aniso": "aniso_any", "binding": "binding_any", "twostate": "twostate_any"}


@dataclass(frozen=True)
class ModelSwitch:
    """A switch from the model asked for to another bundled one.

    Attributes
    ----------
    asked, used
        Model names.
    reasons
        The asked model's acquisition messages (why it was not used).
    message
        One sentence for the user.
    """

    asked: str
    used: str
    reasons: tuple[str, ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record for ``meta["model_switch"]``."""
        return {"asked": self.asked, "used": self.used, "reasons": list(self.reasons)}


def alternative_for(
    asked: str,
    asked_messages: list[str],
    acquisition: Acquisition,
    check: Callable[[str, Acquisition], list[str]],
) -> ModelSwitch | None:
    """The switch to make, or ``None`` to keep ``asked``.

    Parameters
    ----------
    asked
        The model name (or path) the user asked for.
    asked_messages
        Its acquisition check's messages (empty: the movie is inside its range: no switch).
    acquisition
        The movie's acquisition (calibrated or told).
    check
        ``check(name, acquisition) -> messages``: the acquisition check of another bundled model.
    """
    if not asked_messages or asked not in ALTERNATIVES:
        return None
    other = ALTERNATIVES[asked]
    if other not in available_models():
        return None
    if check(other, acquisition):
        return None  # outside both: the asked model and the guard decide as before
    first = asked_messages[0].split(" is outside")[0]
    message = (
        f"the movie lies outside what model '{asked}' was trained for ({first}); model '{other}', trained over a "
        f"range of microscopes that covers it, is used instead (--keep-model, or 'keep this model' in the widget, "
        f"keeps '{asked}')"
    )
    return ModelSwitch(asked, other, tuple(asked_messages), message)
