"""The results contract on disk: ``<prefix>_tracks.csv``, ``<prefix>_summary.csv`` and
``<prefix>_meta.json``, for tracking results and for a simulation's ground truth.

* :func:`write_results` / :func:`read_results` write and read the three files of a
  prefix; :func:`results_paths` names them.
* :func:`write_simulation` writes a simulated movie with its truth files
  (``<stem>_truth_*``) all or nothing; :func:`simulation_paths` names them.

Tables are written with the contract's columns first and floats with 9 significant
digits; the sidecar is strict JSON (NaN written as ``null``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..acquisition import Acquisition
from ..results import (
    SUMMARY_COLUMNS,
    TRACKS_COLUMNS,
    Results,
    empty_summary_table,
    empty_tracks_table,
)
from ._atomic import AtomicFileSet
from ._errors import InputError
from .movie import write_movie_file

__all__ = ["read_results", "results_paths", "simulation_paths", "write_results", "write_simulation"]

_CSV_FLOAT_FORMAT = "%.9g"
#: Spellings of a boolean cell accepted when reading (compared in lower case).
_BOOLEAN_TEXT = {"true": True, "false": False, "1": True, "0": False}


def results_paths(prefix: str | os.PathLike[str]) -> dict[str, Path]:
    """The three files of the results contract for ``prefix``: keys tracks, summary, meta."""
    prefix = _strip_results_suffix(Path(prefix))
    return {
        "tracks": prefix.with_name(prefix.name + "_tracks.csv"),
        "summary": prefix.with_name(prefix.name + "_summary.csv"),
        "meta": prefix.with_name(prefix.name + "_meta.json"),
    }


def _strip_results_suffix(prefix: Path) -> Path:
    for suffix in ("_tracks.csv", "_summary.csv", "_meta.json"):
        if prefix.name.endswith(suffix) and len(prefix.name) > len(suffix):
            return prefix.with_name(prefix.name[: -len(suffix)])
    return prefix


def _check_prefix(prefix: Path) -> None:
    if str(prefix).endswith(os.sep) or prefix.is_dir() or prefix.name in ("", ".", ".."):
        raise InputError(f"{prefix} is a folder; give a file-name prefix such as {prefix / 'results'}")


def _json_safe(value: Any) -> Any:
    """Make ``value`` strict-JSON serialisable (numpy scalars/arrays, NaN -> null, paths)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Acquisition):
        return value.to_dict()
    if isinstance(value, (Path, datetime)):
        return str(value)
    if hasattr(value, "to_dict"):
        return _json_safe(value.to_dict())
    return str(value)


def _results_meta(results: Results, paths: dict[str, Path]) -> dict[str, Any]:
    from .. import __version__

    meta: dict[str, Any] = dict(results.meta or {})
    meta.setdefault("acquisition", None)  # an Acquisition is written as its dictionary by _json_safe
    if not meta.get("model"):
        models = sorted({str(m) for m in results.summary.get("model", pd.Series(dtype=object)).dropna() if str(m)})
        meta["model"] = models[0] if len(models) == 1 else (models or None)
    meta.update(
        {
            "software": "napari-spt-diffusion",
            "software_version": __version__,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {"tracks": paths["tracks"].name, "summary": paths["summary"].name},
            "n_tracks": int(len(results.summary)),
            "n_localizations": int(len(results.tracks)),
            "units": {
                "D1_um2_s": "um^2/s",
                "D2_um2_s": "um^2/s",
                "theta_deg": "degrees from +x towards +y (image y down), [0, 180)",
                "x_px": "pixels (pixel centre at integer coordinates)",
                "x_um": "um",
                "t_s": "s",
                "loc_precision_nm": "nm",
                "photons": "photo-electrons per frame",
                "background": "photo-electrons per pixel per frame",
            },
        }
    )
    return _json_safe(meta)


def _ordered_columns(table: pd.DataFrame, contract: Sequence[str]) -> pd.DataFrame:
    extra = [c for c in table.columns if c not in contract]
    return table.loc[:, list(contract) + extra]


def _write_results_files(staging: AtomicFileSet, paths: dict[str, Path], results: Results) -> None:
    tracks = _ordered_columns(results.tracks, TRACKS_COLUMNS)
    summary = _ordered_columns(results.summary, SUMMARY_COLUMNS)
    tracks.to_csv(staging.temp(paths["tracks"]), index=False, float_format=_CSV_FLOAT_FORMAT, lineterminator="\n")
    summary.to_csv(staging.temp(paths["summary"]), index=False, float_format=_CSV_FLOAT_FORMAT, lineterminator="\n")
    meta = _results_meta(results, paths)
    with open(staging.temp(paths["meta"]), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2, allow_nan=False)
        handle.write("\n")


def write_results(
    prefix: str | os.PathLike[str],
    results: Results,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``<prefix>_tracks.csv``, ``<prefix>_summary.csv`` and ``<prefix>_meta.json``.

    All or nothing: every target is checked before anything is written, the three
    files are written as temporaries in the same folder and renamed into place at the
    end. The contract's columns come first, extra columns follow. The JSON sidecar
    holds the acquisition (``results.acquisition``, ``null`` if unknown), the model
    name, the software version, the date (UTC) and every entry of ``results.meta``.

    Parameters
    ----------
    prefix
        Path prefix, e.g. ``out/movie1`` -> ``out/movie1_tracks.csv`` ...
    results
        Tables in the results contract.
    overwrite
        Replace existing files; otherwise any existing target raises :class:`InputError`
        and nothing is written.

    Returns
    -------
    list of pathlib.Path
        The tracks, summary and meta files, in that order.
    """
    if not isinstance(results, Results):
        raise TypeError("results must be a Results")
    prefix = Path(prefix)
    _check_prefix(prefix)
    paths = results_paths(prefix)
    targets = [paths["tracks"], paths["summary"], paths["meta"]]
    with AtomicFileSet(targets, overwrite) as staging:
        _write_results_files(staging, paths, results)
        staging.commit()
    return targets


def write_simulation(
    path: str | os.PathLike[str],
    movie: Any,
    truth: Results,
    overwrite: bool = False,
    *,
    compression: str | None = None,
) -> list[Path]:
    """Write a simulated movie and its ground truth together, all or nothing.

    Files: ``path`` (see :func:`~napari_spt_diffusion.io.write_movie`) and
    ``<stem>_truth_tracks.csv``, ``<stem>_truth_summary.csv``, ``<stem>_truth_meta.json``
    beside it (see :func:`write_results`).

    Parameters
    ----------
    path
        Output ``.tif`` file of the movie.
    movie
        ``(T, Y, X)`` array-like of camera counts (ADU).
    truth
        The ground truth; ``truth.acquisition`` calibrates the movie file.
    overwrite
        Replace existing files; otherwise any existing target raises :class:`InputError`.
    compression
        ``None`` or ``"zlib"`` (see :func:`~napari_spt_diffusion.io.write_movie`).

    Returns
    -------
    list of pathlib.Path
        The movie, then the three truth files.
    """
    if not isinstance(truth, Results):
        raise TypeError("truth must be a Results")
    acquisition = truth.acquisition
    if acquisition is None:
        raise InputError("the ground truth carries no acquisition (meta['acquisition']) to calibrate the movie with")
    targets = simulation_paths(path)
    path = targets[0]
    paths = results_paths(_truth_prefix(path))
    with AtomicFileSet(targets, overwrite) as staging:
        write_movie_file(staging.temp(path), movie, acquisition, compression)
        _write_results_files(staging, paths, truth)
        staging.commit()
    return targets


def _truth_prefix(path: Path) -> Path:
    stem = path.name[: -len(path.suffix)] if path.suffix.lower() in (".tif", ".tiff") else path.name
    return path.with_name(stem + "_truth")


def simulation_paths(path: str | os.PathLike[str]) -> list[Path]:
    """Files written by :func:`write_simulation` for ``path``: the movie, then the truth files."""
    path = Path(path)
    if path.is_dir() or path.name in ("", ".", ".."):
        raise InputError(f"{path} is a folder, not a file name")
    paths = results_paths(_truth_prefix(path))
    return [path, paths["tracks"], paths["summary"], paths["meta"]]


def _read_table(path: Path, contract: Sequence[str], empty: pd.DataFrame, text_columns: Sequence[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={c: str for c in text_columns}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path.name} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path.name} is not a readable CSV table ({exc})") from None
    missing = [c for c in contract if c not in table.columns]
    if missing:
        raise InputError(f"{path.name} lacks column(s): {', '.join(missing)}")
    for column in text_columns:
        if column in table.columns:
            table[column] = table[column].fillna("").astype(object)
    if len(table) == 0:
        extra = [c for c in table.columns if c not in contract]
        return pd.concat([empty, table[extra]], axis=1) if extra else empty.copy()
    for column, dtype in empty.dtypes.items():
        if column in text_columns:
            continue
        try:
            if dtype.kind == "b" and table[column].dtype.kind != "b":
                table[column] = table[column].astype(str).str.lower().map(_BOOLEAN_TEXT)
                if table[column].isna().any():
                    raise ValueError("not a boolean")
            table[column] = table[column].astype(dtype)
        except (ValueError, TypeError):
            raise InputError(f"column {column} of {path.name} does not hold {dtype} values") from None
    return table


def read_results(prefix: str | os.PathLike[str]) -> Results:
    """Read tables written by :func:`write_results` back into :class:`Results`.

    ``prefix`` may also be the path of one of the three files. A missing
    ``_meta.json`` gives ``meta = {}``; the acquisition recorded in it is
    ``Results.acquisition`` of the tables read (``None`` if not recorded).

    Raises
    ------
    InputError
        For a missing or unreadable table, a sidecar that is not a JSON object or
        records an invalid acquisition, or tables that break the results contract.
    """
    paths = results_paths(prefix)
    for key in ("tracks", "summary"):
        if not paths[key].is_file():
            raise InputError(f"{paths[key]} does not exist")
    tracks = _read_table(paths["tracks"], TRACKS_COLUMNS, empty_tracks_table(), ())
    summary = _read_table(
        paths["summary"], SUMMARY_COLUMNS, empty_summary_table(), ("changepoint_frames", "model")
    )
    meta: dict[str, Any] = {}
    if paths["meta"].is_file():
        try:
            meta = json.loads(paths["meta"].read_text(encoding="utf-8"))
        except ValueError:
            raise InputError(f"{paths['meta'].name} is not valid JSON") from None
        if not isinstance(meta, dict):
            raise InputError(f"{paths['meta'].name} does not hold a JSON object")
    try:
        results = Results(tracks=tracks, summary=summary, meta=meta)
    except ValueError as exc:
        raise InputError(f"results {paths['tracks'].name}/{paths['summary'].name}: {exc}") from None
    try:
        results.acquisition  # noqa: B018 - checks the recorded acquisition now, naming the file
    except ValueError as exc:
        raise InputError(f"{paths['meta'].name} records an invalid acquisition: {exc}") from None
    return results
