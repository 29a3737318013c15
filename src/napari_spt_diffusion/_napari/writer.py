"""npe2 writer: a tracks layer made by this plugin -> the CSV results contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..results import Results

__all__ = ["results_prefix", "write_tracks_layer"]


def results_prefix(path: str | Path) -> Path:
    """The results prefix for a file name chosen in a save dialog (``run1.csv`` -> ``run1``)."""
    p = Path(path)
    if p.suffix.lower() == ".csv" and not p.name.endswith(("_tracks.csv", "_summary.csv")):
        p = p.with_suffix("")
    return p


def write_tracks_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write ``<prefix>_tracks.csv``, ``<prefix>_summary.csv`` and ``<prefix>_meta.json``.

    Parameters
    ----------
    path
        Chosen file name; ``.csv`` is dropped to form the prefix (``run1.csv`` -> ``run1``).
    data
        The layer's ``(N, 4)`` track vertices (unused: the tables come from the results
        the layer was made from, which carry every contract column).
    attributes
        The layer's state; ``attributes["metadata"]["spt_results"]`` holds the results.

    Returns
    -------
    list of str
        The written files. napari already asked before replacing the chosen file, so
        existing result files of that prefix are replaced.
    """
    from .. import io

    metadata = (attributes or {}).get("metadata") or {}
    results = metadata.get("spt_results")
    if not isinstance(results, Results):
        raise io.InputError(
            "this tracks layer was not made by napari-spt-diffusion, so it has no results tables to write"
        )
    written = io.write_results(results_prefix(path), results, overwrite=True)
    return [str(p) for p in written]
