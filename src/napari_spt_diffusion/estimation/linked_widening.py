"""Widening of the D intervals for tracks as the tool links them from a whole movie.

The interval tables (:mod:`.intervals`) are calibrated on simulated tracks that each follow one
particle from its first frame to a cut made at random. A track that the linker made from a movie
is another thing: it can hold frames of another particle (an identity swap where two particles
came close), bridge a gap, hold spots cut by the field's border or end where its particle left
the field, and its acquisition is the calibrated one, not the truth. Measured end to end, on
movies of our own simulator tracked by ``spt-diffusion track``
(``benchmarks/calibrate_linked_intervals.py``, ``benchmarks/reports/linked_intervals_calibration.md``),
the tables' 95 % intervals held the truth of too few tracks that came near the border, bridged
gaps or had other particles near, and about their share of the other tracks.

So tracks are grouped by their notes, in this order: ``edge`` (a localization closer than 3 px
to the outermost pixel centres, :mod:`~..tracking.field_edge`), ``gaps``, ``crowded`` (another spot within 6 px in
more than 5 % of the frames, :mod:`~..tracking.crowding`), else ``plain``. Each group gets a factor
per interval (D1 / D2, 68 % / 95 %) that multiplies the interval's log half-width around its log
centre ``c = sqrt(low high)``: ``[c (low / c) ** f, c (high / c) ** f]`` (the centre, not the
track's value: a table's interval need not hold the value, e.g. a short track's D2 reads low and
its 68 % interval can lie wholly above it). Each factor is the split-conformal quantile, at the
interval's level, of the calibration tracks' ``|ln(D_true / c)| / ln(sqrt(high / low))``, rounded
up, and never below 1 (the tables are not narrowed). Theta's
half-widths are not changed. The check on movies the calibration did not see, from the
independent foreign renderer: ``benchmarks/bench_interval_groups.py``
(``benchmarks/reports/interval_groups*.md``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "GROUPS",
    "LinkedWidening",
    "bundled_linked_widening",
    "fit_factor",
    "half_width_ratio",
    "track_group",
    "widen_linked",
    "unwiden_linked",
]

#: Track groups by their notes, the first that applies: ``edge``, ``gaps``, ``crowded``, else ``plain``.
GROUPS = ("edge", "gaps", "crowded", "plain")
#: The intervals that are widened: ``(key, level)`` for the columns ``{key}_lo{level}_um2_s`` / ``_hi``.
INTERVALS = (("D1", "68"), ("D1", "95"), ("D2", "68"), ("D2", "95"))
#: File of the bundled factors, beside the interval tables.
BUNDLED_PATH = Path(__file__).resolve().parent.parent / "checkpoints" / "linked.widening.json"


@dataclass(frozen=True)
class LinkedWidening:
    """Factors on the log half-widths of the D intervals, per track group.

    Attributes
    ----------
    factors
        ``{group: {"D1_68": f, "D1_95": f, "D2_68": f, "D2_95": f}}``, each ``f >= 1``
        (dimensionless), for the groups of :data:`GROUPS`.
    calibration
        How the factors were measured (movies, tracks per group, command), JSON-serialisable.
    """

    factors: dict[str, dict[str, float]]
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for group in GROUPS:
            for key, level in INTERVALS:
                value = self.factors.get(group, {}).get(f"{key}_{level}")
                if value is None or not math.isfinite(float(value)) or float(value) < 1.0:
                    raise ValueError(f"factor {group} {key}_{level} must be a finite number >= 1, got {value!r}")

    def factor(self, group: str, key: str, level: str) -> float:
        """The factor of one group and interval."""
        return float(self.factors[group][f"{key}_{level}"])

    def to_dict(self) -> dict[str, Any]:
        return {"factors": self.factors, "calibration": self.calibration}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinkedWidening:
        return cls({g: {k: float(v) for k, v in f.items()} for g, f in data["factors"].items()},
                   dict(data.get("calibration", {})))


def bundled_linked_widening() -> LinkedWidening | None:
    """The bundled factors (``checkpoints/linked.widening.json``); None where the file is absent."""
    if not BUNDLED_PATH.is_file():
        return None
    try:
        return LinkedWidening.from_dict(json.loads(BUNDLED_PATH.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"interval widening file {BUNDLED_PATH} cannot be read ({exc})") from exc


def track_group(notes: pd.Series) -> np.ndarray:
    """``(N,)`` group of each track from the summary's ``notes`` (``;``-separated): the first of
    :data:`GROUPS` among its notes, else ``plain``."""
    parts = notes.astype(object).where(notes.notna(), "").astype(str).str.split(";")
    return np.array([next((g for g in GROUPS[:-1] if g in flags), GROUPS[-1]) for flags in parts], dtype=object)


def _scaled(summary: pd.DataFrame, widening: LinkedWidening, power: float) -> pd.DataFrame:
    """The summary with every D interval's log half-width multiplied by its group's factor ** power,
    around the interval's log centre."""
    out = summary.copy()
    if not len(out):
        return out
    group = track_group(out["notes"]) if "notes" in out else np.full(len(out), GROUPS[-1])
    for key, level in INTERVALS:
        lo_col, hi_col = f"{key}_lo{level}_um2_s", f"{key}_hi{level}_um2_s"
        if lo_col not in out or hi_col not in out:
            continue
        lo, hi = out[lo_col].to_numpy(dtype=float), out[hi_col].to_numpy(dtype=float)
        f = np.array([widening.factor(g, key, level) for g in group]) ** power
        ok = (lo > 0) & (hi >= lo) & np.isfinite(lo) & np.isfinite(hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            centre = np.sqrt(lo * hi)
            new_lo = centre * (lo / centre) ** f
            new_hi = centre * (hi / centre) ** f
        out[lo_col] = np.where(ok, new_lo, lo)
        out[hi_col] = np.where(ok, new_hi, hi)
    return out


def widen_linked(summary: pd.DataFrame, widening: LinkedWidening) -> pd.DataFrame:
    """The summary with its D intervals widened by each track's group factor (see the module docstring).

    A bound is scaled in log space around the interval's log centre ``c``, ``c (bound / c) ** f``;
    rows whose bounds are not positive and finite are left as they are.
    """
    return _scaled(summary, widening, 1.0)


def unwiden_linked(summary: pd.DataFrame, widening: LinkedWidening) -> pd.DataFrame:
    """The inverse of :func:`widen_linked`: the intervals as the tables gave them (for recalibration)."""
    return _scaled(summary, widening, -1.0)


def half_width_ratio(low: np.ndarray, high: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``|ln(truth / c)|`` over the interval's log half-width ``ln(sqrt(high / low))``, ``c = sqrt(low high)``.

    A track is covered by the interval scaled by ``f`` (:func:`widen_linked`) exactly when its
    ratio is ``<= f``; by the interval itself when it is ``<= 1``. All arrays ``(N,)`` in the same
    unit (um^2/s); NaN where any is not positive and finite or ``high < low``, ``inf`` for an
    interval of zero width that misses the truth.
    """
    low, high, truth = (np.asarray(a, dtype=float) for a in (low, high, truth))
    ok = np.all([np.isfinite(a) & (a > 0) for a in (low, high, truth)], axis=0) & (high >= low)
    out = np.full(low.shape, np.nan)
    err = np.abs(np.log(truth[ok] / np.sqrt(low[ok] * high[ok])))
    half = 0.5 * np.log(high[ok] / low[ok])
    with np.errstate(divide="ignore", invalid="ignore"):
        out[ok] = np.where(half > 0, err / half, np.where(err == 0, 0.0, np.inf))
    return out


def fit_factor(ratios: np.ndarray, nominal: float) -> float:
    """The smallest factor ``>= 1`` that covers a share ``nominal`` of the tracks (the conformal quantile).

    ``ratios``: ``(N,)`` from :func:`half_width_ratio` (NaN ignored). With ``n`` tracks the
    ``ceil((n + 1) nominal)``-th smallest ratio is taken (split-conformal), capped at the largest,
    and rounded up to 3 decimals (so that the stored factor covers what the quantile covers).
    """
    r = np.asarray(ratios, dtype=float)
    r = np.sort(r[~np.isnan(r)])
    if r.size == 0:
        raise ValueError("no tracks to fit a widening factor on")
    rank = min(int(math.ceil((r.size + 1) * nominal)), r.size)
    value = float(r[rank - 1])
    if not math.isfinite(value):
        raise ValueError(f"the {nominal:.0%} quantile of the ratios is not finite (intervals of zero width)")
    return max(1.0, math.ceil(value * 1000.0 - 1e-9) / 1000.0)
