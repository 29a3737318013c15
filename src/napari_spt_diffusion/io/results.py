"""The results contract on disk: ``<prefix>_tracks.csv``, ``<prefix>_summary.csv`` and
``<prefix>_meta.json``, for tracking results and for a simulation's ground truth.

* :func:`write_results` / :func:`read_results` write and read the three files of a
  prefix; :func:`results_paths` names them.
* :func:`write_simulation` writes a simulated movie with its truth files
  (``<stem>_truth_*``) all or nothing; :func:`simulation_paths` names them.

Tables are written with the contract's columns first and floats with 9 significant
digits; the sidecar is strict JSON (NaN written as ``null``).

A result set is renamed into place sidecar last, and the sidecar records the SHA-256,
size and row count of both tables (``checksums``): :func:`read_results` checks them and
refuses an incomplete set or one that mixes files of two writes (a write killed between
its renames) with an :class:`InputError` that names the set.
"""

from __future__ import annotations

import hashlib
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
from .csv_text import write_csv_rows
from .movie import write_movie_file

__all__ = ["read_results", "results_paths", "simulation_paths", "write_results", "write_simulation"]

#: Spellings of a boolean cell accepted when reading (compared in lower case).
_BOOLEAN_TEXT = {"true": True, "false": False, "1": True, "0": False}


def results_paths(prefix: str | os.PathLike[str]) -> dict[str, Path]:
    """The three files of the results contract for ``prefix``: keys tracks, summary, meta.

    Raises :class:`InputError` for a prefix without a file name (``""``, ``.``, ``..`` or
    one ending in a path separator).
    """
    _check_prefix_name(prefix)
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


def _check_prefix_name(prefix: str | os.PathLike[str]) -> None:
    text = os.fspath(prefix)
    if not text:
        raise InputError("the results prefix is empty; give a file-name prefix such as results")
    if text.endswith(("/", os.sep)) or Path(text).name in ("", ".", ".."):
        raise InputError(f"{text} is a folder; give a file-name prefix such as {Path(text) / 'results'}")


def _check_prefix(prefix: str | os.PathLike[str]) -> None:
    _check_prefix_name(prefix)
    if Path(prefix).is_dir():
        raise InputError(f"{prefix} is a folder; give a file-name prefix such as {Path(prefix) / 'results'}")


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


def _results_meta(results: Results, paths: dict[str, Path], checksums: dict[str, Any]) -> dict[str, Any]:
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
            "checksums": checksums,
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


def _write_csv(table: pd.DataFrame, contract: Sequence[str], path: Path) -> None:
    """``table`` as CSV, the contract's columns first (:func:`.csv_text.write_csv_rows`: floats with
    9 significant digits, without a reordered copy of the whole table)."""
    columns = list(contract) + [c for c in table.columns if c not in contract]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        write_csv_rows(table, columns, handle)


def _file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write_results_files(staging: AtomicFileSet, paths: dict[str, Path], results: Results) -> None:
    """Write the three files of a set at their temporaries; the sidecar records the tables' checksums."""
    checksums: dict[str, Any] = {"algorithm": "sha256"}
    for key, table, contract in (("tracks", results.tracks, TRACKS_COLUMNS),
                                 ("summary", results.summary, SUMMARY_COLUMNS)):
        temp = staging.temp(paths[key])
        _write_csv(table, contract, temp)
        sha256, size = _file_digest(temp)
        checksums[key] = {"file": paths[key].name, "sha256": sha256, "bytes": size, "rows": int(len(table))}
    meta = _results_meta(results, paths, checksums)
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
    files are written as temporaries in the same folder, flushed to the disk and renamed
    into place at the end, the sidecar last. The contract's columns come first, extra
    columns follow. The JSON sidecar holds the acquisition (``results.acquisition``,
    ``null`` if unknown), the model name, the software version, the date (UTC), the
    SHA-256, size and row count of both tables (``checksums``) and every entry of
    ``results.meta``. Temporaries that a killed earlier write of this prefix left are
    removed.

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


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise InputError(f"{path.name} is not valid JSON") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path.name} does not hold a JSON object")
    return meta


def _set_name(paths: dict[str, Path]) -> str:
    return str(paths["meta"].with_name(paths["meta"].name[: -len("_meta.json")]))


def _check_set_complete(paths: dict[str, Path]) -> None:
    """Raise :class:`InputError` naming the set if some but not all of its files exist."""
    missing = [path.name for path in paths.values() if not path.is_file()]
    if len(missing) == len(paths):
        raise InputError(f"{paths['tracks']} does not exist")
    if missing:
        raise InputError(
            f"incomplete result set {_set_name(paths)}: {', '.join(missing)} missing (a write was interrupted, "
            "or files were moved); write it again"
        )


def _verify_checksums(paths: dict[str, Path], meta: dict[str, Any]) -> dict[str, Any]:
    """Compare the tables with the checksums their sidecar records; returns the records.

    A sidecar without ``checksums`` (written by an earlier version) is taken as is.
    """
    checksums = meta.get("checksums")
    if checksums is None:
        return {}
    if not isinstance(checksums, dict) or checksums.get("algorithm") != "sha256":
        raise InputError(f"{paths['meta'].name}: 'checksums' is not a SHA-256 record of the tables")
    for key in ("tracks", "summary"):
        record = checksums.get(key)
        if not isinstance(record, dict) or "sha256" not in record:
            raise InputError(f"{paths['meta'].name}: 'checksums' has no SHA-256 of the {key} table")
        sha256, size = _file_digest(paths[key])
        if sha256 != record["sha256"]:
            raise InputError(
                f"incomplete or mixed result set {_set_name(paths)}: {paths[key].name} does not match the SHA-256 "
                f"recorded in {paths['meta'].name} ({size} bytes, recorded {record.get('bytes')}): a write was "
                "interrupted between its files, or the table was changed afterwards; write the set again, or "
                "read it with verify=False"
            )
    return checksums


def read_results(prefix: str | os.PathLike[str], verify: bool = True) -> Results:
    """Read tables written by :func:`write_results` back into :class:`Results`.

    ``prefix`` may also be the path of one of the three files. The acquisition recorded
    in the sidecar is ``Results.acquisition`` of the tables read (``None`` if not
    recorded).

    Parameters
    ----------
    prefix
        The result prefix (``out/movie1`` for ``out/movie1_tracks.csv`` ...).
    verify
        Check that the set is complete and consistent: all three files present, and the
        tables' SHA-256 and row counts equal to those the sidecar records (sidecars of
        versions that did not record them are not checked). ``False`` reads tables edited
        on purpose, and a set without sidecar (``meta = {}``).

    Raises
    ------
    InputError
        For a missing or unreadable table, an incomplete set or one whose tables do not
        match their sidecar (``verify``), a sidecar that is not a JSON object or records
        an invalid acquisition, or tables that break the results contract.
    """
    paths = results_paths(prefix)
    if verify:
        _check_set_complete(paths)
    for key in ("tracks", "summary"):
        if not paths[key].is_file():
            raise InputError(f"{paths[key]} does not exist")
    meta: dict[str, Any] = _read_meta(paths["meta"]) if paths["meta"].is_file() else {}
    checksums = _verify_checksums(paths, meta) if verify else {}
    tracks = _read_table(paths["tracks"], TRACKS_COLUMNS, empty_tracks_table(), ())
    summary = _read_table(
        paths["summary"], SUMMARY_COLUMNS, empty_summary_table(),
        ("changepoint_frames", "model", "method", "warnings", "notes", "flags"),  # text: empty cells as ""
    )
    for key, table in (("tracks", tracks), ("summary", summary)):
        rows = (checksums.get(key) or {}).get("rows")
        if rows is not None and rows != len(table):
            raise InputError(
                f"incomplete or mixed result set {_set_name(paths)}: {paths[key].name} has {len(table)} rows, "
                f"{paths['meta'].name} records {rows}"
            )
    try:
        results = Results(tracks=tracks, summary=summary, meta=meta)
    except ValueError as exc:
        raise InputError(f"results {paths['tracks'].name}/{paths['summary'].name}: {exc}") from None
    try:
        results.acquisition  # noqa: B018 - checks the recorded acquisition now, naming the file
    except ValueError as exc:
        raise InputError(f"{paths['meta'].name} records an invalid acquisition: {exc}") from None
    return results
