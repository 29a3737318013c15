"""Does a binding model's movie show changes of state? A note when it hardly does.

A pointwise model of binding/unbinding (``binding``, ``binding_any``) reads every track as a
sequence of bound and free states. On a movie whose molecules do not switch, it still
labels frames: on the independent renderer's free-diffusion movies ``binding_any`` called slow,
freely diffusing particles "bound" and read them at a tenth of their D per frame, while its
track means, and so the guard's population test, stayed close to the classical estimate
(``benchmarks/reports/foreign_binding.md``). The tool's own changepoint analysis (decided on the
model's per-frame values, then confirmed on the displacements) is the check that does not depend
on the model: on the binding movie it confirmed a change in most tracks of >= 20 frames, on the
free movies in few (the same reports). :func:`state_change_note` counts them and, when the
confirmed changes are rare, says so in one sentence: the reported values stay the model's (a movie
of slow binding kinetics can have few changes and still be two-state), and the note names the
one-state model that reads steady diffusion better.

Only binding models get the note (:data:`MOTION_MODELS`): their two states, bound and free, differ
by a factor of about 100 in D, so a change is confirmed where there is one. The two-state isotropic
model's states can differ by less than 0.15 decades, changes the displacements cannot confirm: on
a two-state movie of our own simulator its share of confirmed changes was as low as on a free
movie (``benchmarks/reports/state_check.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MOTION_MODELS", "MIN_FRAMES", "MIN_TRACKS", "MIN_SHARE", "applies_to", "state_change_note"]

#: The motion models (a card's ``motion_model``) whose movies are checked.
MOTION_MODELS = ("binding",)

#: Tracks shorter than this (frames) are not counted: too short to confirm a change.
MIN_FRAMES = 20
#: Fewer counted tracks: no note (nothing can be said).
MIN_TRACKS = 12
#: A note when fewer than this share of the counted tracks have a confirmed change.
MIN_SHARE = 0.25


def applies_to(motion_model: str | None) -> bool:
    """Whether a model of this motion (``card["motion_model"]``) gets the check."""
    return motion_model in MOTION_MODELS


def state_change_note(summary: pd.DataFrame, model_name: str, *, min_frames: int = MIN_FRAMES,
                      min_tracks: int = MIN_TRACKS, min_share: float = MIN_SHARE) -> tuple[str, dict[str, Any]]:
    """``(sentence or "", record)`` on the confirmed changes of state of a binding model's tracks.

    ``summary``: the summary table (``model``, ``n_frames``, ``n_changepoints`` columns); only the
    rows whose values are the model's (``model == model_name``) and of at least ``min_frames``
    frames count. The record (for ``_meta.json``): ``tracks`` counted, ``with_change``, ``share``,
    ``note`` (bool) and the settings.
    """
    rows = summary[(summary["model"].astype(str) == str(model_name))
                   & (summary["n_frames"].to_numpy(dtype=float) >= min_frames)]
    n = int(len(rows))
    k = int(np.count_nonzero(rows["n_changepoints"].to_numpy(dtype=float) > 0))
    share = k / n if n else float("nan")
    note = n >= min_tracks and share < min_share
    record = {"tracks": n, "with_change": k, "share": None if not n else share, "note": bool(note),
              "min_frames": int(min_frames), "min_tracks": int(min_tracks), "min_share": float(min_share)}
    if not note:
        return "", record
    sentence = (f"model '{model_name}' confirmed a change of state in only {k} of {n} tracks of >= {min_frames} "
                "frames: if these molecules do not bind or switch, a one-state model (--model aniso, 'single-state "
                "anisotropic' in the widget) reads their diffusion better, frame by frame")
    return sentence, record
