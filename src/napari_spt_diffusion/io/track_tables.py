"""Tracks made elsewhere: TrackMate XML and CSV, trackpy tables, our own ``_tracks.csv``, napari Tracks.

:func:`read_track_file` reads a file of linked localizations and returns them in pixels,
as the columns ``track_id, frame, y_px, x_px`` that the estimation stage takes (plus
``photons``, ``background`` and ``loc_precision_nm`` when the file is one of ours). Formats:

``trackmate-xml``
    The file TrackMate saves (``<TrackMate>``: ``Model/AllSpots/SpotsInFrame/Spot`` with
    ``ID``, ``POSITION_X``, ``POSITION_Y``, ``FRAME``; ``Model/AllTracks/Track`` with
    ``TRACK_ID`` and ``Edge`` elements ``SPOT_SOURCE_ID`` -> ``SPOT_TARGET_ID``; only the
    tracks listed in ``Model/FilteredTracks`` when that list exists), and the simpler
    "Export tracks to XML" file (``<Tracks spaceUnits=...>/particle/detection t x y``). Positions are
    in the model's ``spatialunits``: pixels, or a length converted with the
    ``Settings/ImageData`` ``pixelwidth`` of the file (TrackMate's pixel centres lie at
    ``index x pixelwidth``), or with the acquisition's pixel size when the file has none.
``trackmate-csv``
    TrackMate's spots table (``TRACK_ID``, ``POSITION_X``, ``POSITION_Y``, ``FRAME``).
    TrackMate 7 and later write three more header rows under the column keys (names, short
    names, units such as ``(micron)``); they are skipped and the units row is read. Older
    exports carry no units: give ``units``. Spots in no track (``TRACK_ID`` empty or
    ``None``) are left out.
``trackpy-csv``
    A trackpy table ``frame, x, y, particle`` (pixels; an index column is ignored).
``ours``
    Our ``PREFIX_tracks.csv`` (``track_id, frame, x_px, y_px``).

Frames count from 0 in every format. A track with two spots in one frame (a TrackMate
split or merge) cannot be one particle's path: it is left out, with a note. Positions
come back in pixels with the pixel centre at integer coordinates; :func:`check_tracks_in_movie`
refuses tracks outside the movie's frames or field. :func:`tracks_from_layer_data` reads
the data of a napari Tracks layer, :func:`trackpy_table` writes the other way.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..acquisition import Acquisition
from ._atomic import AtomicFileSet
from ._errors import InputError
from .csv_text import FLOAT_FORMAT

__all__ = [
    "TRACK_FORMATS",
    "TRACK_UNITS",
    "TrackTableError",
    "ImportedTracks",
    "read_track_file",
    "detect_format",
    "normalize_tracks",
    "tracks_from_layer_data",
    "check_tracks_in_movie",
    "trackpy_table",
    "write_tables",
]

#: Formats :func:`read_track_file` reads (``"auto"`` detects them).
TRACK_FORMATS: tuple[str, ...] = ("trackmate-xml", "trackmate-csv", "trackpy-csv", "ours")
#: Units of positions a caller can state (``"auto"``: from the file).
TRACK_UNITS: tuple[str, ...] = ("auto", "px", "um", "nm")

_UNIT_SPELLINGS: dict[str, str] = {
    "pixel": "px", "pixels": "px", "px": "px",
    "micron": "um", "microns": "um", "um": "um", "µm": "um", "μm": "um", "micrometer": "um", "micrometers": "um",
    "micrometre": "um", "micrometres": "um",
    "nm": "nm", "nanometer": "nm", "nanometers": "nm", "nanometre": "nm", "nanometres": "nm",
}
_NM_PER_UNIT = {"um": 1000.0, "nm": 1.0}
_OURS = ("track_id", "frame", "x_px", "y_px")
_TRACKMATE_CSV = ("TRACK_ID", "POSITION_X", "POSITION_Y", "FRAME")
_TRACKPY = ("frame", "x", "y", "particle")
#: Optional columns of our own tables kept on import (they feed the guard and the changepoint test).
_KEPT = ("photons", "background", "loc_precision_nm")


class TrackTableError(InputError):
    """A track file that cannot be read or does not fit the movie (one sentence)."""


@dataclass
class ImportedTracks:
    """Tracks read from a file, in pixels.

    Attributes
    ----------
    tracks
        ``track_id`` (int64, the file's ids), ``frame`` (int64, from 0), ``y_px``, ``x_px``
        (float64, pixel centres at integers), sorted by ``(track_id, frame)``; ``photons``,
        ``background``, ``loc_precision_nm`` too when the file holds them.
    format
        One of :data:`TRACK_FORMATS`.
    path
        The file read.
    units
        Units of the positions in the file (``px``, ``um``, ``nm``).
    nm_per_px
        Nanometres per pixel used to convert them (``None`` for pixels).
    notes
        Sentences about what was left out or assumed.
    """

    tracks: pd.DataFrame
    format: str
    path: str
    units: str
    nm_per_px: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_meta(self) -> dict[str, Any]:
        """The record of the import for the results' meta (``meta["tracks_source"]``)."""
        return {
            "file": self.path,
            "format": self.format,
            "units": self.units,
            "pixel_size_nm_used": self.nm_per_px,
            "n_tracks": int(self.tracks["track_id"].nunique()) if len(self.tracks) else 0,
            "n_localizations": int(len(self.tracks)),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------- helpers
def _unit(text: Any, where: str) -> str:
    key = str(text).strip().strip("()[]").strip().lower()
    if key in _UNIT_SPELLINGS:
        return _UNIT_SPELLINGS[key]
    raise TrackTableError(
        f"unknown length unit {str(text).strip()!r} in {where}; give the units of the positions "
        "(--tracks-units px|um|nm)"
    )


def _scale_to_px(units: str, file_pixel: tuple[float, str] | None, acquisition: Acquisition | None,
                 notes: list[str]) -> float | None:
    """Nanometres per pixel to convert positions given in ``units`` (``None`` for pixels)."""
    if units == "px":
        return None
    if file_pixel is not None:
        nm = file_pixel[0] * _NM_PER_UNIT[file_pixel[1]]
        if acquisition is not None and abs(nm - acquisition.pixel_size_nm) > 0.01 * acquisition.pixel_size_nm:
            notes.append(
                f"the track file's pixel width ({nm:g} nm) differs from the movie's pixel size "
                f"({acquisition.pixel_size_nm:g} nm); positions were converted with the file's"
            )
        return nm
    if acquisition is None:
        raise TrackTableError(f"positions are in {units}: the pixel size is needed to convert them to pixels")
    return float(acquisition.pixel_size_nm)


def _to_px(values: np.ndarray, units: str, nm_per_px: float | None) -> np.ndarray:
    if nm_per_px is None:
        return values
    return values * _NM_PER_UNIT[units] / nm_per_px


def _numbers(column: pd.Series, name: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TrackTableError(
            f"{path.name}: column {name} holds {int(bad.sum())} value(s) that are not finite numbers "
            f"(first: {column.iloc[row]!r})"
        )
    return values


def _whole(values: np.ndarray, name: str, path: Path) -> np.ndarray:
    if np.any(values != np.round(values)):
        raise TrackTableError(f"{path.name}: column {name} must hold whole numbers")
    return values.astype(np.int64)


def normalize_tracks(table: pd.DataFrame, source: str = "the tracks") -> tuple[pd.DataFrame, list[str]]:
    """Check a table of ``track_id, frame, y_px, x_px`` and make it ready for estimation.

    Returns the table sorted by ``(track_id, frame)`` with int64 ids and frames and float64
    positions (other columns kept), and notes. Tracks with two rows in one frame are left
    out (a note says how many).

    Raises
    ------
    TrackTableError
        Missing columns, non-finite positions, fractional or negative frames, or no track
        left.
    """
    missing = [c for c in ("track_id", "frame", "y_px", "x_px") if c not in table.columns]
    if missing:
        raise TrackTableError(f"{source} lack(s) column(s) {', '.join(missing)}")
    out = table.copy()
    path = Path(source)
    for name in ("y_px", "x_px"):
        out[name] = _numbers(out[name], name, path)
    for name in ("track_id", "frame"):
        out[name] = _whole(_numbers(out[name], name, path), name, path)
    if len(out) and out["frame"].min() < 0:
        raise TrackTableError(f"{source}: frames must count from 0, found frame {int(out['frame'].min())}")
    notes: list[str] = []
    twice = out.duplicated(["track_id", "frame"], keep=False)
    if twice.any():
        bad = out.loc[twice, "track_id"].unique()
        out = out[~out["track_id"].isin(bad)]
        notes.append(f"{len(bad)} track(s) with two spots in one frame (splits or merges) were left out")
    if len(out) == 0:
        raise TrackTableError(f"{source} hold(s) no track")
    out = out.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)
    return out, notes


def check_tracks_in_movie(tracks: pd.DataFrame, shape: tuple[int, ...], source: str = "the tracks") -> None:
    """Raise :class:`TrackTableError` if any localization lies outside the ``(T, Y, X)`` movie.

    Frames must be ``0..T-1``; positions inside the field, ``-0.5 <= x_px < X - 0.5`` and
    likewise for ``y_px`` (pixel centres at integers).
    """
    n_frames, height, width = (int(s) for s in shape[:3])
    last = int(tracks["frame"].max())
    if last >= n_frames:
        n = int((tracks["frame"] >= n_frames).sum())
        raise TrackTableError(
            f"{source} reach frame {last} but the movie has {n_frames} frames (0-{n_frames - 1}); {n} "
            "localization(s) lie beyond it: another movie, or frames counted from 1?"
        )
    x = tracks["x_px"].to_numpy(dtype=float)
    y = tracks["y_px"].to_numpy(dtype=float)
    outside = (x < -0.5) | (x >= width - 0.5) | (y < -0.5) | (y >= height - 0.5)
    if outside.any():
        raise TrackTableError(
            f"{int(outside.sum())} localization(s) of {source} lie outside the movie's {width} x {height} px field "
            f"(x {x.min():.1f}-{x.max():.1f} px, y {y.min():.1f}-{y.max():.1f} px): wrong units or pixel size, "
            "or another movie?"
        )


# ------------------------------------------------------------------ detection
def _csv_columns(path: Path) -> list[str]:
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise TrackTableError(f"{path.name} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TrackTableError(f"{path.name} is not a readable CSV table ({exc})") from None
    return [str(c).strip() for c in header.columns]


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a track file (:data:`TRACK_FORMATS`), from its extension and columns."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        return "trackmate-xml"
    columns = set(_csv_columns(path))
    if set(_OURS) <= columns:
        return "ours"
    if set(_TRACKMATE_CSV) <= columns:
        return "trackmate-csv"
    if set(_TRACKPY) <= columns:
        return "trackpy-csv"
    raise TrackTableError(
        f"{path.name}: not a known track table; expected the columns {', '.join(_OURS)} (ours), "
        f"{', '.join(_TRACKMATE_CSV)} (TrackMate spots) or {', '.join(_TRACKPY)} (trackpy)"
    )


# ----------------------------------------------------------------------- CSV
def _read_csv(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    columns = _csv_columns(path)
    missing = [c for c in required if c not in columns]
    if missing:
        raise TrackTableError(f"{path.name} is not a {what} table: it lacks column(s) {', '.join(missing)}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TrackTableError(f"{path.name} is not a readable CSV table ({exc})") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _read_ours(path: Path, units: str) -> tuple[pd.DataFrame, str, list[str]]:
    table = _read_csv(path, _OURS, "napari-spt-diffusion tracks")
    out = table[list(_OURS)].copy()
    for name in _KEPT:
        if name in table.columns:
            out[name] = pd.to_numeric(table[name].replace("", "nan"), errors="coerce")
    if units not in ("auto", "px"):
        raise TrackTableError(f"{path.name}: x_px and y_px are pixels; units {units!r} do not apply")
    return out, "px", []


def _read_trackpy(path: Path, units: str) -> tuple[pd.DataFrame, str, list[str]]:
    table = _read_csv(path, _TRACKPY, "trackpy")
    out = pd.DataFrame({"track_id": table["particle"], "frame": table["frame"], "y_px": table["y"],
                        "x_px": table["x"]})
    return out, "px" if units == "auto" else units, []


def _trackmate_csv_units(header_rows: pd.DataFrame) -> str | None:
    """The length unit of POSITION_X in TrackMate 7's extra header rows, if any."""
    for cell in header_rows["POSITION_X"]:
        text = str(cell).strip()
        if text.startswith("(") and text.endswith(")"):
            return _unit(text, "the TrackMate CSV's units row")
    return None


def _read_trackmate_csv(path: Path, units: str) -> tuple[pd.DataFrame, str, list[str]]:
    table = _read_csv(path, _TRACKMATE_CSV, "TrackMate spots")
    frame_numbers = pd.to_numeric(table["FRAME"], errors="coerce")
    n_header = 0  # TrackMate >= 7: names, short names, units under the keys
    while n_header < min(3, len(table)) and math.isnan(frame_numbers.iloc[n_header]):
        n_header += 1
    file_units = _trackmate_csv_units(table.iloc[:n_header]) if n_header else None
    table = table.iloc[n_header:]
    notes: list[str] = []
    track = table["TRACK_ID"].str.strip()
    in_track = ~track.str.lower().isin(("", "none", "nan"))
    if not in_track.all():
        notes.append(f"{int((~in_track).sum())} spot(s) in no track were left out")
    table = table[in_track]
    if units == "auto":
        if file_units is None:
            raise TrackTableError(
                f"{path.name} does not say the units of its positions (TrackMate before version 7 wrote no units "
                "row); give them (--tracks-units px|um|nm)"
            )
        units = file_units
    out = pd.DataFrame({"track_id": table["TRACK_ID"], "frame": table["FRAME"], "y_px": table["POSITION_Y"],
                        "x_px": table["POSITION_X"]})
    return out, units, notes


# ----------------------------------------------------------------------- XML
def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise TrackTableError(f"{path.name} is not readable XML ({exc})") from None


def _read_trackmate_xml(
    path: Path, units: str
) -> tuple[pd.DataFrame, str, list[str], tuple[float, str] | None]:
    root = _parse_xml(path)
    if root.tag == "Tracks":
        return _read_simple_xml(root, path, units)
    model = root.find("Model")
    if root.tag != "TrackMate" or model is None:
        raise TrackTableError(f"{path.name} is not a TrackMate XML file (no <TrackMate><Model>, no <Tracks>)")
    spots: dict[str, tuple[str, str, str]] = {}
    for spot in model.iterfind("AllSpots/SpotsInFrame/Spot"):
        attrib = spot.attrib
        try:
            spots[attrib["ID"]] = (attrib["FRAME"], attrib["POSITION_Y"], attrib["POSITION_X"])
        except KeyError as exc:
            raise TrackTableError(f"{path.name}: a <Spot> lacks the attribute {exc.args[0]}") from None
    kept = {t.get("TRACK_ID") for t in model.iterfind("FilteredTracks/TrackID")}
    filtered = model.find("FilteredTracks") is not None
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    n_tracks = 0
    for track in model.iterfind("AllTracks/Track"):
        tid = track.get("TRACK_ID")
        if tid is None:
            raise TrackTableError(f"{path.name}: a <Track> lacks the attribute TRACK_ID")
        if filtered and tid not in kept:
            continue
        n_tracks += 1
        members: set[str] = set()
        for edge in track.iterfind("Edge"):
            for key in ("SPOT_SOURCE_ID", "SPOT_TARGET_ID"):
                spot_id = edge.get(key)
                if spot_id is None:
                    raise TrackTableError(f"{path.name}: an <Edge> of track {tid} lacks {key}")
                members.add(spot_id)
        unknown = members - spots.keys()
        if unknown:
            raise TrackTableError(f"{path.name}: track {tid} links spot {sorted(unknown)[0]}, which is not in AllSpots")
        rows += [(tid, *spots[s]) for s in members]
    if n_tracks == 0:
        raise TrackTableError(f"{path.name} holds no track (AllTracks/Track, FilteredTracks)")
    file_units = model.get("spatialunits")
    if units == "auto":
        if file_units is None:
            raise TrackTableError(f"{path.name}: <Model> does not give spatialunits; give --tracks-units px|um|nm")
        units = _unit(file_units, f"{path.name} (Model spatialunits)")
    file_pixel = None
    image = root.find("Settings/ImageData")
    if image is not None and units != "px":
        try:
            width = float(image.get("pixelwidth", "nan"))
        except ValueError:
            width = float("nan")
        if math.isfinite(width) and width > 0:
            file_pixel = (width, units)
    table = pd.DataFrame(rows, columns=["track_id", "frame", "y_px", "x_px"])
    return table, units, notes, file_pixel


def _read_simple_xml(
    root: ET.Element, path: Path, units: str
) -> tuple[pd.DataFrame, str, list[str], tuple[float, str] | None]:
    """TrackMate's "Export tracks to XML": ``<Tracks spaceUnits><particle><detection t x y/>``."""
    rows = []
    for tid, particle in enumerate(root.iterfind("particle")):
        for det in particle.iterfind("detection"):
            try:
                rows.append((tid, det.attrib["t"], det.attrib["y"], det.attrib["x"]))
            except KeyError as exc:
                raise TrackTableError(f"{path.name}: a <detection> lacks the attribute {exc.args[0]}") from None
    if not rows:
        raise TrackTableError(f"{path.name} holds no <particle> with detections")
    if units == "auto":
        space = root.get("spaceUnits")
        if space is None:
            raise TrackTableError(f"{path.name}: <Tracks> does not give spaceUnits; give --tracks-units px|um|nm")
        units = _unit(space, f"{path.name} (Tracks spaceUnits)")
    return pd.DataFrame(rows, columns=["track_id", "frame", "y_px", "x_px"]), units, [], None


# ---------------------------------------------------------------------- read
def read_track_file(
    path: str | os.PathLike[str],
    acquisition: Acquisition | None = None,
    *,
    format: str = "auto",
    units: str = "auto",
) -> ImportedTracks:
    """Read a track file in any of :data:`TRACK_FORMATS` into pixels.

    Parameters
    ----------
    path
        The file.
    acquisition
        The movie's acquisition: its pixel size converts positions given in um or nm when
        the file has no pixel width of its own (and is compared with the file's when it has).
    format
        ``"auto"`` (from the extension and the columns) or one of :data:`TRACK_FORMATS`.
    units
        Units of the file's positions, ``"auto"`` (from the file; trackpy tables are pixels)
        or ``"px"``, ``"um"``, ``"nm"``.

    Raises
    ------
    TrackTableError
        A missing or unreadable file, an unknown format or unit, missing columns or
        attributes, non-numeric positions or frames.
    """
    path = Path(path)
    if not path.is_file():
        raise TrackTableError(f"track file {path} does not exist" if not path.exists() else f"{path} is not a file")
    if format not in ("auto", *TRACK_FORMATS):
        raise TrackTableError(f"unknown track format {format!r}; choose one of auto, {', '.join(TRACK_FORMATS)}")
    if units not in TRACK_UNITS:
        raise TrackTableError(f"unknown units {units!r}; choose one of {', '.join(TRACK_UNITS)}")
    kind = detect_format(path) if format == "auto" else format
    file_pixel = None
    if kind == "trackmate-xml":
        table, found_units, notes, file_pixel = _read_trackmate_xml(path, units)
    elif kind == "trackmate-csv":
        table, found_units, notes = _read_trackmate_csv(path, units)
    elif kind == "trackpy-csv":
        table, found_units, notes = _read_trackpy(path, units)
    else:
        table, found_units, notes = _read_ours(path, units)
    if len(table) == 0:
        raise TrackTableError(f"{path.name} holds no localization in a track")
    table, more = normalize_tracks(table, path.name)
    notes += more
    nm_per_px = _scale_to_px(found_units, file_pixel, acquisition, notes)
    for name in ("y_px", "x_px"):
        table[name] = _to_px(table[name].to_numpy(dtype=float), found_units, nm_per_px)
    return ImportedTracks(table, kind, str(path), found_units, nm_per_px, notes)


def tracks_from_layer_data(data: Any) -> pd.DataFrame:
    """Tracks of a napari Tracks layer: ``data`` ``(N, 4)`` rows ``[track_id, t, y, x]``.

    ``t`` is the frame index and ``y, x`` are in pixels (data coordinates, as the plugin's
    own tracks layer stores them; a layer drawn with a ``scale`` keeps pixels in ``data``).
    Returns the checked table (:func:`normalize_tracks`) ready for
    :func:`~napari_spt_diffusion.estimate_tracks.estimate_tracks`.
    """
    array = np.asarray(data, dtype=float)
    if array.ndim != 2 or array.shape[1] != 4:
        raise TrackTableError(
            f"a Tracks layer's data must have shape (N, 4) = [track_id, t, y, x] (2-D tracks), got {array.shape}"
        )
    table = pd.DataFrame({"track_id": array[:, 0], "frame": array[:, 1], "y_px": array[:, 2], "x_px": array[:, 3]})
    return normalize_tracks(table, "the Tracks layer")[0]


def trackpy_table(tracks: pd.DataFrame) -> pd.DataFrame:
    """A trackpy table ``frame, x, y, particle`` (pixels) of a tracks table (``Results.tracks``).

    trackpy's ``imsd``, ``emsd``, ``compute_drift`` and friends accept it as it is
    (``mpp`` = pixel size in um, ``fps`` = 1 / frame interval).
    """
    missing = [c for c in ("track_id", "frame", "y_px", "x_px") if c not in tracks.columns]
    if missing:
        raise TrackTableError(f"the tracks table lacks column(s) {', '.join(missing)}")
    return pd.DataFrame({
        "frame": tracks["frame"].to_numpy().astype(np.int64),
        "x": tracks["x_px"].to_numpy(dtype=float),
        "y": tracks["y_px"].to_numpy(dtype=float),
        "particle": tracks["track_id"].to_numpy().astype(np.int64),
    })


def write_tables(tables: Mapping[Path, pd.DataFrame], overwrite: bool = False) -> list[Path]:
    """Write CSV tables (``{path: table}``) all or nothing; floats with 9 significant digits."""
    with AtomicFileSet(list(tables), overwrite) as staging:
        for target, table in tables.items():
            table.to_csv(staging.temp(Path(target)), index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
        return staging.commit()
