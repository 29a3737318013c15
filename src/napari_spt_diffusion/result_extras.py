"""Optional files beside a result set: ``PREFIX_msd.csv`` and ``PREFIX_trackpy.csv``.

* ``PREFIX_msd.csv``: :func:`~.estimation.msd.results_msd_table`, the ensemble MSD curve then
  every track's, with their line fits (columns :data:`~.estimation.msd.MSD_COLUMNS`, units in
  the names); the drift subtracted for the estimates, if any, is subtracted here too.
* ``PREFIX_trackpy.csv``: :func:`~.io.track_tables.trackpy_table`, ``frame, x, y, particle``
  in pixels (the positions as localized), for trackpy's ``imsd``/``emsd``/``compute_drift``
  as they are.

The ``track`` and ``estimate`` commands write them with ``--msd`` and ``--trackpy-table``,
after the three files of the results contract (docs/results_contract.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .estimation.msd import results_msd_table
from .io import results_paths
from .io.track_tables import trackpy_table, write_tables
from .results import Results

__all__ = ["EXTRA_SUFFIXES", "extra_paths", "extra_tables", "write_extras"]

#: File-name endings of the optional files, by name.
EXTRA_SUFFIXES: dict[str, str] = {"msd": "_msd.csv", "trackpy": "_trackpy.csv"}


def extra_paths(prefix: str | os.PathLike[str], *, msd: bool = False, trackpy: bool = False) -> dict[str, Path]:
    """The optional files asked for, ``{"msd": PREFIX_msd.csv, "trackpy": PREFIX_trackpy.csv}``.

    ``prefix`` as for :func:`~.io.results_paths` (a path of one of the result files works too).
    """
    meta = results_paths(prefix)["meta"]
    base = meta.name[: -len("_meta.json")]
    wanted = {"msd": msd, "trackpy": trackpy}
    return {key: meta.with_name(base + suffix) for key, suffix in EXTRA_SUFFIXES.items() if wanted[key]}


def extra_tables(results: Results, *, msd: bool = False, trackpy: bool = False) -> dict[str, pd.DataFrame]:
    """The tables of the optional files asked for, by name (see the module's description)."""
    tables: dict[str, pd.DataFrame] = {}
    if msd:
        tables["msd"] = results_msd_table(results)
    if trackpy:
        tables["trackpy"] = trackpy_table(results.tracks)
    return tables


def write_extras(
    prefix: str | os.PathLike[str],
    results: Results,
    *,
    msd: bool = False,
    trackpy: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Write the optional files asked for, all or nothing (:func:`~.io.track_tables.write_tables`).

    Returns the files written (none when nothing was asked for).
    """
    paths = extra_paths(prefix, msd=msd, trackpy=trackpy)
    if not paths:
        return []
    tables = extra_tables(results, msd=msd, trackpy=trackpy)
    return write_tables({paths[key]: tables[key] for key in paths}, overwrite=overwrite)
