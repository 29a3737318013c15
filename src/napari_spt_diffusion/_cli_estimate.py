"""The parts of ``spt-diffusion estimate`` and of the optional result files that cli.py calls.

``estimate`` runs like ``track`` (:func:`napari_spt_diffusion.cli._cmd_track`: the same movie,
acquisition, output checks, progress, warnings and writing) with one difference: the tracks
come from a file (:func:`read_tracks`) and go through
:func:`~napari_spt_diffusion.estimate_tracks.estimate_tracks` instead of being found
(:func:`run_estimation`). Both commands take ``--msd``, ``--trackpy-table`` and
``--drift-correction`` (:func:`add_result_file_options`); the optional files are checked with
the result set before any work (:func:`extra_targets`) and written after it
(:func:`write_extra_files`, :mod:`~napari_spt_diffusion.result_extras`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .acquisition import Acquisition
from .io.track_tables import TRACK_FORMATS, TRACK_UNITS, ImportedTracks, read_track_file
from .results import Results

__all__ = ["add_tracks_options", "add_result_file_options", "extra_targets", "read_tracks", "run_estimation",
           "write_extra_files"]


def add_tracks_options(parser: argparse.ArgumentParser) -> None:
    """``--tracks FILE``, ``--tracks-format`` and ``--tracks-units`` of ``estimate``."""
    parser.add_argument("--tracks", required=True, metavar="FILE",
                        help="tracks linked by another tool: TrackMate XML or spots CSV, trackpy CSV (frame, x, y, "
                             "particle), or our _tracks.csv")
    parser.add_argument("--tracks-format", choices=("auto", *TRACK_FORMATS), default="auto",
                        help="format of FILE (default: auto, from its extension and columns)")
    parser.add_argument("--tracks-units", choices=TRACK_UNITS, default="auto",
                        help="units of FILE's positions (default: auto, from the file; trackpy tables are pixels)")


def add_result_file_options(parser: argparse.ArgumentParser) -> None:
    """``--drift-correction``, ``--msd`` and ``--trackpy-table`` of ``track`` and ``estimate``."""
    parser.add_argument("--drift-correction", action="store_true",
                        help="subtract the ensemble-mean displacement per frame (stage drift) from the positions "
                             "behind every estimate; recorded in _meta.json (default: off)")
    parser.add_argument("--msd", action="store_true",
                        help="also write PREFIX_msd.csv: ensemble and per-track MSD curves with their line fits")
    parser.add_argument("--trackpy-table", action="store_true",
                        help="also write PREFIX_trackpy.csv: frame, x, y, particle in pixels, for trackpy")


def _wanted(args: argparse.Namespace) -> dict[str, bool]:
    return {"msd": bool(getattr(args, "msd", False)), "trackpy": bool(getattr(args, "trackpy_table", False))}


def extra_targets(args: argparse.Namespace, prefix: Path) -> list[Path]:
    """The optional files the options ask for, beside the result set of ``prefix``."""
    from .result_extras import extra_paths

    return list(extra_paths(prefix, **_wanted(args)).values())


def read_tracks(args: argparse.Namespace, acquisition: Acquisition, say: Callable[[str], Any]) -> ImportedTracks | None:
    """The tracks file of ``estimate``, read (and checked) before the long part; ``None`` for ``track``."""
    if getattr(args, "tracks", None) is None:
        return None
    imported = read_track_file(args.tracks, acquisition, format=args.tracks_format, units=args.tracks_units)
    say(f"{Path(args.tracks).name}: {imported.tracks['track_id'].nunique()} tracks, {len(imported.tracks)} "
        f"localizations ({imported.format}, positions in {imported.units})")
    return imported


def run_estimation(
    movie: Any, imported: ImportedTracks | None, acquisition: Acquisition, settings: Any, progress: Any
) -> Results:
    """``track_and_estimate`` (no tracks given) or ``estimate_tracks`` on the imported tracks."""
    if imported is None:
        from .pipeline import track_and_estimate

        return track_and_estimate(movie, acquisition, settings, progress=progress)
    from .estimate_tracks import estimate_tracks

    return estimate_tracks(movie, imported, acquisition, settings, progress=progress)


def write_extra_files(args: argparse.Namespace, prefix: Path, results: Results) -> list[Path]:
    """Write the optional files asked for (none: nothing), all or nothing among themselves."""
    from .result_extras import write_extras

    return write_extras(prefix, results, **_wanted(args), overwrite=args.overwrite)
