"""npe2 reader: a results prefix (``_tracks.csv``, ``_summary.csv`` or ``_meta.json``) back into napari.

Opening any of the three files of the results contract gives the layers a run gives
(tracks coloured by D1, tensor ellipses, changepoints when there are any) and an entry
in the results dock (table, D(t) timeline, histogram, the run's warnings), as
:func:`~.results_widget.show_results` makes them. The layers sit at the physical scale
of the acquisition recorded in ``_meta.json``; when the viewer holds an image layer whose
name is the results' prefix (``movie1`` for ``movie1_tracks.csv``), they take its scale.

The reader only returns layer data tuples (napari adds them); the results dock is
attached right after, from the Qt event loop, to the layers napari added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..acquisition import Acquisition
from ..io import read_results, results_paths
from .display import MAX_STATIC_ELLIPSES
from .layers import LayerDataTuple, LayerGeometry, results_layers

__all__ = ["RESULT_SUFFIXES", "get_reader", "read_results_layers"]

RESULT_SUFFIXES = ("_tracks.csv", "_summary.csv", "_meta.json")


def _one_path(path: Any) -> str | None:
    """The path to read: a string, or a list whose files all belong to one prefix."""
    if isinstance(path, (list, tuple)):
        prefixes = {str(results_paths(p)["tracks"]) for p in path}
        return str(path[0]) if len(prefixes) == 1 and path else None
    return str(path)


def get_reader(path: Any) -> Any:
    """npe2 reader hook: :func:`read_results_layers` for a file of a results prefix, else ``None``."""
    one = _one_path(path)
    if one is None or not one.endswith(RESULT_SUFFIXES):
        return None
    paths = results_paths(one)
    if not (paths["tracks"].is_file() and paths["summary"].is_file()):
        return None
    return read_results_layers


def read_results_layers(path: Any) -> list[LayerDataTuple]:
    """The layers of the results at ``path`` (any file of the prefix), and the dock afterwards.

    Returns
    -------
    list of (data, kwargs, layer_type)
        Tracks, tensor ellipses (the first frame's only for more than
        :data:`~.display.MAX_STATIC_ELLIPSES` localizations: the dock refills them per
        frame) and changepoints (left out when there are none).

    Raises
    ------
    napari_spt_diffusion.io.InputError
        Unreadable tables or a sidecar that breaks the results contract.
    """
    one = _one_path(path)
    prefix = results_paths(one)["tracks"].name[: -len("_tracks.csv")]
    results = read_results(one)
    acquisition = results.acquisition
    geometry = LayerGeometry.from_acquisition(acquisition) if acquisition is not None else LayerGeometry()
    acquisition = acquisition or Acquisition()
    follow = len(results.tracks) > MAX_STATIC_ELLIPSES
    layers = results_layers(results, acquisition, geometry=geometry, prefix=f"{prefix} ",
                            ellipse_frames=[0] if follow else None)
    layers = [lay for lay in layers if not (lay[1]["metadata"]["spt_kind"] == "changepoints" and not len(lay[0]))]
    for _, kwargs, _ in layers:
        kwargs["metadata"]["spt_source"] = str(Path(one).resolve())
    _attach_dock_later(results, acquisition, prefix)
    return layers


def _attach_dock_later(results: Any, acquisition: Acquisition, prefix: str) -> None:
    """Once napari has added the layers: show them in the results dock of the current viewer."""
    try:
        import napari
        from qtpy.QtCore import QTimer
    except ImportError:  # pragma: no cover - napari without Qt
        return
    viewer = napari.current_viewer()
    if viewer is not None:
        QTimer.singleShot(0, lambda: attach_results_dock(viewer, results, acquisition, prefix))


def attach_results_dock(viewer: Any, results: Any, acquisition: Acquisition, prefix: str) -> Any:
    """Show the reader's layers of ``results`` in ``viewer``'s results dock (``None`` when they are gone)."""
    from napari.layers import Image

    from .results_widget import show_results

    ours = [lay for lay in viewer.layers if lay.metadata.get("spt_results") is results]
    if not ours:
        return None
    movie = next((lay for lay in viewer.layers if isinstance(lay, Image) and lay.name == prefix), None)
    if movie is not None:  # the movie the results came from: line up with it
        geometry = LayerGeometry.from_layer(movie)
        for layer in ours:
            layer.scale = geometry.scale
            layer.translate = geometry.translate
    else:
        geometry = LayerGeometry.from_layer(ours[0])
    display, _ = show_results(viewer, results, acquisition, geometry, prefix=f"{prefix} ", adopt_layers=True)
    return display
