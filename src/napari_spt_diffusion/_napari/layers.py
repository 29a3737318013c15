"""Pure conversion of :class:`~napari_spt_diffusion.results.Results` to napari layer data.

No widgets and no viewer here: every function returns napari *layer data tuples*
``(data, kwargs, layer_type)`` (or plain arrays), so the conversion can be tested
headless and reused by the widgets, the sample data and scripts
(``viewer._add_layer_from_data(*tuple)`` or ``Layer.create(*tuple)``).

Coordinates are napari's data coordinates of the movie: ``(t, y, x)`` with ``t`` the
frame index and ``y, x`` in pixels. The physical scale (frame interval, pixel size)
is carried by the layers' ``scale`` so that every output lines up with the image
layer it came from (:class:`LayerGeometry`).

Colours: napari applies a colormap given through ``colormaps_dict`` to the raw
feature values without rescaling, so each colourable quantity gets a normalised
companion feature in ``[0, 1]`` (``"<key> colour"``, the name the layer controls show)
computed with a :class:`ColorScale` that also knows how to label its colour bar in
physical units. The colormaps start at a bright blue, not turbo's near-black, so the
slowest tracks stay visible on napari's dark canvas; D scales end on round values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..acquisition import Acquisition
from ..results import Results, parse_changepoint_frames

__all__ = [
    "COLOR_KEYS",
    "ColorScale",
    "LayerGeometry",
    "changepoint_labels",
    "changepoints_layer",
    "color_scale",
    "detections_layer",
    "ellipse_corners",
    "ellipses_layer",
    "image_layer",
    "nice_log_limits",
    "results_layers",
    "selected_track_layer",
    "track_features",
    "tracks_layer",
]

LayerDataTuple = tuple[Any, dict[str, Any], str]

#: Quantities the tracks and ellipses can be coloured by -> (feature column, label, unit).
COLOR_KEYS: dict[str, tuple[str, str, str]] = {
    "D1": ("D1_um2_s", "D1", "um²/s"),
    "D2": ("D2_um2_s", "D2", "um²/s"),
    "anisotropy": ("anisotropy", "anisotropy 1 - D2/D1", ""),
    "isotropy": ("anisotropy_evidence", "-log10 isotropy_p (evidence of anisotropy)", ""),
    "state": ("state", "state (segment index)", ""),
}
#: Top of the anisotropy-evidence scale: ``-log10 isotropy_p`` of 3 (p = 0.001) and above map to 1.
EVIDENCE_TOP = 3.0

#: Ellipse semi-axes smaller than this (pixels) are drawn at this size so they stay visible.
MIN_SEMI_AXIS_PX = 0.08
#: Colormaps of this plugin: name -> (napari base colormap, part of it used). Turbo's first
#: 18 % is near-black blue, invisible on the dark canvas: the scale starts above it.
BRIGHT_COLORMAPS: dict[str, tuple[str, float, float]] = {"spt turbo": ("turbo", 0.18, 1.0)}
_NICE_MANTISSAS = (1.0, 2.0, 5.0)


def nice_log_limits(lo: float, hi: float) -> tuple[float, float]:
    """Widen ``[lo, hi]`` (> 0) to the nearest values of the 1-2-5 series (0.01, 0.02, 0.05, 0.1...)."""
    def series(k0: float, k1: float) -> np.ndarray:
        ks = np.arange(int(np.floor(k0)) - 1, int(np.ceil(k1)) + 2)
        return np.sort(np.array([m * 10.0**k for k in ks for m in _NICE_MANTISSAS]))

    values = series(np.log10(lo), np.log10(hi))
    below = values[values <= lo * (1 + 1e-9)]
    above = values[values >= hi * (1 - 1e-9)]
    return float(below[-1]), float(above[0])


def _nice_log_ticks(lo: float, hi: float, n: int) -> np.ndarray:
    """Round tick values in ``[lo, hi]``: decades, or the 1-2-5 series when fewer than 2 decades fit."""
    decades = 10.0 ** np.arange(np.ceil(np.log10(lo) - 1e-9), np.floor(np.log10(hi) + 1e-9) + 1)
    if len(decades) >= 2:
        values = decades
        while len(values) > max(n, 2):
            values = values[::2]
    else:
        ks = np.arange(np.floor(np.log10(lo)) - 1, np.ceil(np.log10(hi)) + 1)
        values = np.array([m * 10.0**k for k in ks for m in _NICE_MANTISSAS])
        values = values[(values >= lo * (1 - 1e-9)) & (values <= hi * (1 + 1e-9))]
    # the ends too, unless a round tick sits within 8 % of the axis (their labels would collide)
    span = np.log10(hi) - np.log10(lo)
    ends = [v for v in (lo, hi) if not values.size or np.min(np.abs(np.log10(values / v))) > 0.08 * span]
    return np.unique(np.concatenate([values, ends]))


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class LayerGeometry:
    """World placement shared by an image layer and the layers derived from it.

    Attributes
    ----------
    scale
        ``(t, y, x)`` world units per data unit (e.g. ``(frame_interval_s,
        pixel_size_um, pixel_size_um)``).
    translate
        ``(t, y, x)`` world offset of data coordinate 0.
    units
        Unit names of the world axes, or ``None`` to leave napari's default (pixels).
    axis_labels
        Names of the axes.
    """

    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0)
    units: tuple[str, str, str] | None = None
    axis_labels: tuple[str, str, str] = ("t", "y", "x")

    @classmethod
    def from_acquisition(cls, acquisition: Acquisition) -> LayerGeometry:
        """Physical geometry: time in s, lengths in um (napari then shows a true scale bar)."""
        px_um = float(acquisition.pixel_size_um)
        return cls(
            scale=(float(acquisition.frame_interval_s), px_um, px_um),
            units=("s", "um", "um"),
        )

    @classmethod
    def from_layer(cls, layer: Any) -> LayerGeometry:
        """Copy the placement of an existing napari layer (its last three axes)."""
        scale = tuple(float(s) for s in np.asarray(layer.scale)[-3:])
        translate = tuple(float(s) for s in np.asarray(layer.translate)[-3:])
        units = getattr(layer, "units", None)
        unit_names = None
        if units is not None:
            names = tuple(str(u) for u in tuple(units)[-3:])
            if any(n != "pixel" for n in names):
                unit_names = tuple(_short_unit(n) for n in names)
        labels = tuple(str(a) for a in tuple(getattr(layer, "axis_labels", ("t", "y", "x")))[-3:])
        if len(labels) != 3:
            labels = ("t", "y", "x")
        return cls(scale=scale, translate=translate, units=unit_names, axis_labels=labels)  # type: ignore[arg-type]

    def kwargs(self) -> dict[str, Any]:
        """Layer keyword arguments placing a layer with this geometry."""
        out: dict[str, Any] = {"scale": self.scale, "translate": self.translate, "axis_labels": self.axis_labels}
        if self.units is not None:
            out["units"] = self.units
        return out


def _short_unit(name: str) -> str:
    return {"second": "s", "micrometer": "um", "nanometer": "nm", "millisecond": "ms"}.get(name, name)


# --------------------------------------------------------------------------- colour scales
@dataclass(frozen=True)
class ColorScale:
    """Map a physical quantity to ``[0, 1]`` for a colormap, and label the colour bar.

    Attributes
    ----------
    key
        One of :data:`COLOR_KEYS` (``"D1"``, ``"D2"``, ``"anisotropy"``, ``"isotropy"``, ``"state"``).
    feature
        Name of the raw per-vertex feature (e.g. ``"D1_um2_s"``).
    label, unit
        Colour-bar title and unit (``"um²/s"`` for diffusion coefficients).
    vmin, vmax
        Values mapped to 0 and 1 (in the unit; clipped outside).
    log
        Map ``log10(value)`` linearly (diffusion coefficients span decades).
    colormap
        napari colormap name.
    categorical
        Integer-valued quantity (state): the colour bar shows its integers.
    """

    key: str
    feature: str
    label: str
    unit: str
    vmin: float
    vmax: float
    log: bool = False
    colormap: str = "spt turbo"
    categorical: bool = False

    @property
    def color_feature(self) -> str:
        """Name of the normalised feature column holding the mapped values in [0, 1] (``"D1 colour"``)."""
        return f"{self.key} colour"

    @property
    def title(self) -> str:
        """Colour-bar title with the unit, e.g. ``"D1 (um²/s)"``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def normalise(self, values: Any) -> np.ndarray:
        """Map values (in :attr:`unit`) to ``[0, 1]``; NaN and non-positive log values -> 0.

        Parameters
        ----------
        values
            Array-like of any shape.

        Returns
        -------
        numpy.ndarray
            float64 array of the same shape, in ``[0, 1]``.
        """
        v = np.asarray(values, dtype=float)
        lo, hi = self.vmin, self.vmax
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.log10(np.where(v > 0, v, np.nan))
            lo, hi = np.log10(lo), np.log10(hi)
        span = hi - lo if hi > lo else 1.0
        out = (v - lo) / span
        return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)

    def napari_colormap(self) -> Any:
        """The napari ``Colormap`` object (stepwise for categorical scales)."""
        from napari.utils.colormaps import Colormap, ensure_colormap

        if self.colormap in BRIGHT_COLORMAPS:
            name, start, stop = BRIGHT_COLORMAPS[self.colormap]
            base = Colormap(colors=ensure_colormap(name).map(np.linspace(start, stop, 64)),
                            name=self.colormap.replace(" ", "_"), display_name=self.colormap)
        else:
            base = ensure_colormap(self.colormap)
        if not self.categorical:
            return base
        n = max(int(round(self.vmax - self.vmin)) + 1, 2)
        colors = base.map(np.linspace(0.0, 1.0, n))
        # 'zero' interpolation: n colours need n + 1 controls; value k maps to k/(n-1).
        edges = (np.arange(n + 1) - 0.5) / (n - 1)
        controls = np.clip(edges, 0.0, 1.0)
        return Colormap(colors=colors, controls=controls, interpolation="zero", name=f"spt_{self.key}")

    def rgba(self, values: Any) -> np.ndarray:
        """RGBA colours ``(N, 4)`` float32 of the values, as the tracks are drawn."""
        return np.asarray(self.napari_colormap().map(self.normalise(np.ravel(values))), dtype=np.float32)

    def ticks(self, n: int = 5) -> tuple[np.ndarray, list[str]]:
        """Colour-bar tick positions in ``[0, 1]`` and their labels in physical units.

        Log scales tick at round values (decades such as 0.01, 0.1, 1 um^2/s, or the
        1-2-5 series over less than two decades) plus both ends; at most about ``n`` ticks.
        """
        if self.categorical:
            values = np.arange(int(round(self.vmin)), int(round(self.vmax)) + 1)
            pos = self.normalise(values)
            return pos, [str(int(v)) for v in values]
        if self.log:
            values = _nice_log_ticks(self.vmin, self.vmax, n)
        else:
            values = np.linspace(self.vmin, self.vmax, n)
        return self.normalise(values), [f"{v:.3g}" for v in values]


def color_scale(results: Results, key: str = "D1") -> ColorScale:
    """Colour scale of a quantity, with robust limits taken from these results.

    D1 and D2 share one logarithmic range (2nd to 98th percentile of the per-track and
    per-frame values of both, in um^2/s, widened to round values of the 1-2-5 series)
    so that their colours compare; anisotropy
    maps ``[0, 1]``; the evidence of anisotropy, ``-log10`` of the track's ``isotropy_p``
    (estimation/isotropy.py), maps ``[0, 3]`` (p = 1 to 0.001; a missing p reads 0); the state
    index maps its integer range.

    Parameters
    ----------
    results
        Results (or ground truth) in the results contract.
    key
        One of :data:`COLOR_KEYS`.
    """
    if key not in COLOR_KEYS:
        raise ValueError(f"cannot colour by {key!r}; choose one of {', '.join(COLOR_KEYS)}")
    feature, label, unit = COLOR_KEYS[key]
    if key in ("D1", "D2"):
        vals = np.concatenate(
            [
                np.asarray(results.tracks[["D1_um2_s", "D2_um2_s"]], dtype=float).ravel(),
                np.asarray(results.summary[["D1_um2_s", "D2_um2_s"]], dtype=float).ravel(),
            ]
        )
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if vals.size:
            lo, hi = np.percentile(vals, [2.0, 98.0])
        else:
            lo, hi = 0.01, 1.0
        lo = max(float(lo), 1e-4)
        hi = max(float(hi), lo * 10 ** 0.5)
        lo, hi = nice_log_limits(lo, hi)
        return ColorScale(key, feature, label, unit, lo, hi, log=True)
    if key == "anisotropy":
        return ColorScale(key, feature, label, unit, 0.0, 1.0)
    if key == "isotropy":
        return ColorScale(key, feature, label, unit, 0.0, EVIDENCE_TOP)
    states = np.asarray(results.tracks["state"], dtype=float)
    top = float(np.nanmax(states)) if states.size else 1.0
    return ColorScale(key, feature, label, unit, 0.0, max(top, 1.0), categorical=True)


# --------------------------------------------------------------------------- tracks
def _sorted_tracks(results: Results) -> pd.DataFrame:
    t = results.tracks
    order = np.lexsort((np.asarray(t["frame"]), np.asarray(t["track_id"])))
    return t.iloc[order].reset_index(drop=True)


def track_features(results: Results) -> pd.DataFrame:
    """Per-vertex feature table of the tracks layer, in ``(track_id, frame)`` order.

    Columns: ``track_id, frame, D1_um2_s, D2_um2_s, theta_deg, anisotropy, state,
    is_changepoint, photons, loc_precision_nm`` (per-frame values) and the track's
    classical estimates ``D_msd_um2_s, D_cve_um2_s, alpha_msd`` and its evidence of anisotropy
    ``anisotropy_evidence`` (``-log10 isotropy_p``; NaN where the summary has no p) repeated on each
    vertex, plus one normalised ``<key> colour`` column per :data:`COLOR_KEYS` entry.
    """
    t = _sorted_tracks(results)
    D1 = np.asarray(t["D1_um2_s"], dtype=float)
    D2 = np.asarray(t["D2_um2_s"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        aniso = np.where(D1 > 0, 1.0 - D2 / D1, np.nan)
    feats = pd.DataFrame(
        {
            "track_id": np.asarray(t["track_id"], dtype=np.int64),
            "frame": np.asarray(t["frame"], dtype=np.int64),
            "D1_um2_s": D1,
            "D2_um2_s": D2,
            "theta_deg": np.asarray(t["theta_deg"], dtype=float),
            "anisotropy": np.clip(aniso, 0.0, 1.0),
            "state": np.asarray(t["state"], dtype=np.int64),
            "is_changepoint": np.asarray(t["is_changepoint"], dtype=bool),
            "photons": np.asarray(t["photons"], dtype=float),
            "loc_precision_nm": np.asarray(t["loc_precision_nm"], dtype=float),
        }
    )
    per_track = results.summary.set_index("track_id")[["D_msd_um2_s", "D_cve_um2_s", "alpha_msd"]].astype(float)
    p = results.summary["isotropy_p"].to_numpy(float) if "isotropy_p" in results.summary.columns else np.nan
    per_track["anisotropy_evidence"] = -np.log10(np.clip(p, 1e-300, 1.0))
    idx = per_track.index.get_indexer(feats["track_id"])
    for col in per_track.columns:
        values = per_track[col].to_numpy()
        feats[col] = np.where(idx >= 0, values[np.clip(idx, 0, None)] if values.size else np.nan, np.nan)
    for key in COLOR_KEYS:
        scale = color_scale(results, key)
        feats[scale.color_feature] = scale.normalise(feats[scale.feature])
    return feats


def tracks_layer(
    results: Results,
    *,
    color_by: str = "D1",
    geometry: LayerGeometry | None = None,
    name: str = "tracks",
    tail_length: int = 30,
    tail_width: float = 2.0,
) -> LayerDataTuple:
    """Tracks layer data tuple of the results.

    Parameters
    ----------
    results
        Results in the contract (tracker output or simulated truth).
    color_by
        Colour key of :data:`COLOR_KEYS`; the layer colours by its normalised feature.
    geometry
        Placement (scale/translate/units); default: pixels and frames.
    name, tail_length, tail_width
        napari layer options (tail length in frames).

    Returns
    -------
    tuple
        ``(data, kwargs, "tracks")`` with ``data`` ``(N, 4)`` float64 rows
        ``(track_id, frame, y_px, x_px)`` sorted by ``(track_id, frame)``, and kwargs
        holding ``features`` (one row per vertex), ``color_by``, ``colormaps_dict``,
        ``metadata["color_scales"]`` (the :class:`ColorScale` of each key) and
        ``metadata["spt_results"]`` (the results, with their acquisition, so the layer
        can be written back to CSV).
    """
    if color_by not in COLOR_KEYS:
        raise ValueError(f"cannot colour by {color_by!r}; choose one of {', '.join(COLOR_KEYS)}")
    t = _sorted_tracks(results)
    data = np.column_stack(
        [
            np.asarray(t["track_id"], dtype=float),
            np.asarray(t["frame"], dtype=float),
            np.asarray(t["y_px"], dtype=float),
            np.asarray(t["x_px"], dtype=float),
        ]
    ).reshape(-1, 4)
    feats = track_features(results)
    scales = {key: color_scale(results, key) for key in COLOR_KEYS}
    kwargs: dict[str, Any] = {
        "name": name,
        "features": feats,
        "color_by": scales[color_by].color_feature,
        "colormaps_dict": {s.color_feature: s.napari_colormap() for s in scales.values()},
        "tail_length": int(tail_length),
        "tail_width": float(tail_width),
        "blending": "translucent",
        "metadata": {
            "spt_kind": "tracks",
            "color_scales": scales,
            "spt_results": results,
        },
        **(geometry or LayerGeometry()).kwargs(),
    }
    return data, kwargs, "tracks"


def selected_track_layer(
    results: Results, track_id: int | None, *, geometry: LayerGeometry | None = None, name: str = "selected track"
) -> LayerDataTuple:
    """A white, wide Tracks layer holding only one track (the selection highlight).

    ``track_id=None`` (or an unknown id) gives an empty layer.
    """
    from napari.utils.colormaps import Colormap

    t = results.tracks
    rows = t[t["track_id"] == track_id] if track_id is not None else t.iloc[:0]
    rows = rows.sort_values("frame")
    data = np.column_stack(
        [
            np.zeros(len(rows)),
            np.asarray(rows["frame"], float),
            np.asarray(rows["y_px"], float),
            np.asarray(rows["x_px"], float),
        ]
    ).reshape(-1, 4)
    white = Colormap(colors=[[1, 1, 1, 1], [1, 1, 1, 1]], name="spt_white")
    kwargs: dict[str, Any] = {
        "name": name,
        "tail_length": 10_000,
        "head_length": 10_000,
        "tail_width": 5.0,
        "color_by": "track_id",
        "colormaps_dict": {"track_id": white},
        "opacity": 0.6,
        "blending": "translucent",
        "metadata": {"spt_kind": "selected_track", "track_id": track_id},
        **(geometry or LayerGeometry()).kwargs(),
    }
    return data, kwargs, "tracks"


# --------------------------------------------------------------------------- ellipses
def ellipse_corners(
    results: Results,
    acquisition: Acquisition,
    *,
    scale_factor: float = 1.0,
    frames: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corner points of the tensor ellipse of every localization (vectorised).

    Each ellipse is centred on the localization, its semi-axes are the RMS
    displacement along each principal axis in one frame, ``sqrt(2 D dt)`` converted to
    pixels (``D1`` along theta, ``D2`` across), times ``scale_factor``, and it is
    rotated by theta (angle of the D1 axis from +x towards +y).

    Parameters
    ----------
    results
        Results with per-frame ``D1_um2_s, D2_um2_s, theta_deg``.
    acquisition
        Gives the pixel size and frame interval of the conversion.
    scale_factor
        Multiplies both semi-axes (dimensionless).
    frames
        Optional frame numbers to keep (array-like of int); ``None`` keeps all.

    Returns
    -------
    corners : numpy.ndarray
        ``(N, 4, 3)`` float64, the 4 corners ``(t, y, x)`` going round the bounding box
        of each ellipse (napari's ellipse form), ``t`` constant per ellipse.
    rows : numpy.ndarray
        ``(N,)`` int, the row of ``results.tracks`` (in sorted order, see
        :func:`track_features`) of each ellipse. Rows with a non-finite D or theta are
        skipped.
    """
    t = _sorted_tracks(results)
    frame = np.asarray(t["frame"], dtype=float)
    keep = np.ones(len(t), dtype=bool)
    if frames is not None:
        keep &= np.isin(frame, np.asarray(frames, dtype=float).ravel())
    D1 = np.asarray(t["D1_um2_s"], dtype=float)
    D2 = np.asarray(t["D2_um2_s"], dtype=float)
    theta = np.deg2rad(np.asarray(t["theta_deg"], dtype=float))
    y = np.asarray(t["y_px"], dtype=float)
    x = np.asarray(t["x_px"], dtype=float)
    keep &= np.isfinite(D1) & np.isfinite(D2) & np.isfinite(theta) & np.isfinite(y) & np.isfinite(x)
    rows = np.flatnonzero(keep)
    f = float(scale_factor)
    a = f * np.sqrt(2.0 * acquisition.diffusion_to_px2_per_frame(np.clip(D1[rows], 0.0, None)))
    b = f * np.sqrt(2.0 * acquisition.diffusion_to_px2_per_frame(np.clip(D2[rows], 0.0, None)))
    a = np.maximum(a, MIN_SEMI_AXIS_PX)
    b = np.maximum(b, MIN_SEMI_AXIS_PX)
    s, c = np.sin(theta[rows]), np.cos(theta[rows])
    u = np.stack([s, c], axis=-1) * a[:, None]  # D1 axis, (y, x)
    v = np.stack([c, -s], axis=-1) * b[:, None]  # D2 axis, perpendicular
    centre = np.stack([y[rows], x[rows]], axis=-1)
    yx = np.stack([centre + u + v, centre + u - v, centre - u - v, centre - u + v], axis=1)
    tt = np.broadcast_to(frame[rows][:, None, None], (len(rows), 4, 1))
    return np.concatenate([tt, yx], axis=-1), rows


def ellipses_layer(
    results: Results,
    acquisition: Acquisition,
    *,
    color_by: str = "D1",
    scale_factor: float = 1.0,
    frames: Any = None,
    geometry: LayerGeometry | None = None,
    name: str = "tensor ellipses",
    edge_width_px: float = 0.3,
) -> LayerDataTuple:
    """Shapes layer data tuple: the tensor ellipse of every localization, in one layer.

    See :func:`ellipse_corners` for the geometry. The edges are coloured with the same
    :class:`ColorScale` as the tracks (per-frame value of ``color_by``); faces are
    transparent. ``features`` carry ``track_id`` and ``frame`` of each ellipse.

    Returns
    -------
    tuple
        ``(data, kwargs, "shapes")`` with ``data`` ``(N, 4, 3)`` and
        ``kwargs["shape_type"] == "ellipse"``.
    """
    corners, rows = ellipse_corners(results, acquisition, scale_factor=scale_factor, frames=frames)
    t = _sorted_tracks(results)
    scale = color_scale(results, color_by)
    feats = track_features(results)
    colors = scale.rgba(np.asarray(feats[scale.feature], dtype=float)[rows]).reshape(-1, 4)
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "ellipse",
        "edge_color": colors,
        "face_color": "transparent",
        "edge_width": float(edge_width_px),
        "features": pd.DataFrame(
            {
                "track_id": np.asarray(t["track_id"], dtype=np.int64)[rows],
                "frame": np.asarray(t["frame"], dtype=np.int64)[rows],
            }
        ),
        "metadata": {"spt_kind": "ellipses", "scale_factor": float(scale_factor), "color_by": color_by,
                     "spt_results": results},
        **(geometry or LayerGeometry()).kwargs(),
    }
    return corners, kwargs, "shapes"


# --------------------------------------------------------------------------- changepoints
def changepoint_labels(results: Results) -> pd.DataFrame:
    """One row per changepoint with its position and a short label.

    A changepoint at frame ``c`` of a track separates the segment before (frames < c)
    from the one at and after ``c``. The label is ``"bind"`` / ``"unbind"`` for
    binding/unbinding models (D1 falls / rises), otherwise ``"D a->b"`` with the
    segment mean D1 before and after in um^2/s. A track counts as binding when its
    ``model`` (or, in simulated truth, ``particle_model``) or ``results.meta["model"]``
    names a binding model.

    Returns
    -------
    pandas.DataFrame
        Columns ``track_id, frame, y_px, x_px, D_before_um2_s, D_after_um2_s, label``.
    """
    t = _sorted_tracks(results)
    cols = ["track_id", "frame", "y_px", "x_px", "D_before_um2_s", "D_after_um2_s", "label"]
    # Changepoints from the summary (authoritative); fall back to the per-vertex flags.
    pairs: list[tuple[int, int]] = []
    for tid, text in zip(results.summary["track_id"], results.summary["changepoint_frames"]):
        pairs.extend((int(tid), int(c)) for c in parse_changepoint_frames(text))
    if not pairs:
        flagged = t[np.asarray(t["is_changepoint"], dtype=bool)]
        pairs = list(zip(flagged["track_id"].astype(int), flagged["frame"].astype(int)))
    if not pairs:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "label" else float) for c in cols})
    # Binding models label "bind"/"unbind": per track from the summary's model column (or
    # the simulator's ``particle_model`` column of a truth table), or the whole run's model.
    model_col = "particle_model" if "particle_model" in results.summary.columns else "model"
    track_model = dict(zip(results.summary["track_id"].astype(int), results.summary[model_col].astype(str)))
    run_binding = "bind" in str(results.meta.get("model", "")).lower()
    tid_arr = np.asarray(t["track_id"], dtype=np.int64)
    frame_arr = np.asarray(t["frame"], dtype=np.int64)
    D1 = np.asarray(t["D1_um2_s"], dtype=float)
    out = []
    for tid, c in pairs:
        sel = tid_arr == tid
        if not sel.any():
            continue
        fr = frame_arr[sel]
        cps = sorted(
            {c2 for t2, c2 in pairs if t2 == tid}
        )
        k = cps.index(c)
        lo = cps[k - 1] if k > 0 else -np.inf
        hi = cps[k + 1] if k + 1 < len(cps) else np.inf
        before = (fr >= lo) & (fr < c)
        after = (fr >= c) & (fr < hi)
        d_before = float(np.nanmean(D1[sel][before])) if before.any() else np.nan
        d_after = float(np.nanmean(D1[sel][after])) if after.any() else np.nan
        at = int(np.argmin(np.abs(fr - c)))
        y = float(np.asarray(t["y_px"], float)[sel][at])
        x = float(np.asarray(t["x_px"], float)[sel][at])
        binding = run_binding or "bind" in track_model.get(tid, "").lower()
        if binding and np.isfinite(d_before) and np.isfinite(d_after):
            label = "bind" if d_after < d_before else "unbind"
        else:
            label = f"D {d_before:.2g}->{d_after:.2g}"
        out.append((tid, c, y, x, d_before, d_after, label))
    return pd.DataFrame(out, columns=cols)


def changepoints_layer(
    results: Results,
    *,
    geometry: LayerGeometry | None = None,
    name: str = "changepoints",
    size_px: float = 3.0,
) -> LayerDataTuple:
    """Points layer data tuple: one point per changepoint at ``(frame, y, x)`` with a label.

    Returns
    -------
    tuple
        ``(data, kwargs, "points")``, ``data`` ``(K, 3)``; ``features`` are the columns
        of :func:`changepoint_labels`; the text shows ``label``.
    """
    cp = changepoint_labels(results)
    data = np.column_stack(
        [np.asarray(cp["frame"], float), np.asarray(cp["y_px"], float), np.asarray(cp["x_px"], float)]
    ).reshape(-1, 3)
    kwargs: dict[str, Any] = {
        "name": name,
        "features": cp,
        "size": float(size_px),
        "symbol": "star",
        "face_color": "yellow",
        "border_color": "black",
        "border_width": 0.1,
        "projection_mode": "none",
        "text": {"string": "{label}", "size": 9, "color": "yellow", "anchor": "upper_left"},
        "metadata": {"spt_kind": "changepoints", "spt_results": results},
        **(geometry or LayerGeometry()).kwargs(),
    }
    return data, kwargs, "points"


# --------------------------------------------------------------------------- other layers
def detections_layer(
    peaks_yx: Any,
    frame: int,
    *,
    geometry: LayerGeometry | None = None,
    name: str = "detections (preview)",
    size_px: float = 5.0,
    features: pd.DataFrame | None = None,
) -> LayerDataTuple:
    """Points layer data tuple of one frame's detections as open circles.

    Parameters
    ----------
    peaks_yx
        ``(K, 2)`` positions ``(y, x)`` in pixels (peak pixels or localizations).
    frame
        Frame index the detections belong to (the ``t`` coordinate).
    """
    yx = np.asarray(peaks_yx, dtype=float).reshape(-1, 2)
    data = np.column_stack([np.full(len(yx), float(frame)), yx]).reshape(-1, 3)
    kwargs: dict[str, Any] = {
        "name": name,
        "size": float(size_px),
        "face_color": "transparent",
        "border_color": "#ff00ff",
        "border_width": 0.12,
        "projection_mode": "none",
        "metadata": {"spt_kind": "detections", "frame": int(frame)},
        **(geometry or LayerGeometry()).kwargs(),
    }
    if features is not None:
        kwargs["features"] = features.reset_index(drop=True)
    return data, kwargs, "points"


def image_layer(
    movie: Any,
    acquisition: Acquisition,
    *,
    name: str = "movie",
    metadata: dict[str, Any] | None = None,
) -> LayerDataTuple:
    """Image layer data tuple of a ``(T, Y, X)`` movie at its physical scale.

    The acquisition is stored in ``metadata["acquisition"]`` (as a dict) so the Track &
    Estimate widget can prefill its fields from the layer.
    """
    geometry = LayerGeometry.from_acquisition(acquisition)
    md = {"acquisition": acquisition.to_dict(), **(metadata or {})}
    lo, hi = np.percentile(np.asarray(movie[: min(len(movie), 5)]), [0.5, 99.9])
    kwargs = {
        "name": name,
        "colormap": "gray",
        "contrast_limits": (float(lo), float(max(hi, lo + 1))),
        "metadata": md,
        **geometry.kwargs(),
    }
    return movie, kwargs, "image"


def results_layers(
    results: Results,
    acquisition: Acquisition,
    *,
    geometry: LayerGeometry | None = None,
    color_by: str = "D1",
    ellipse_scale_factor: float = 1.0,
    ellipse_frames: Any = None,
    prefix: str = "",
) -> list[LayerDataTuple]:
    """Tracks, tensor ellipses and changepoints of the results, ready to add to a viewer.

    ``prefix`` is prepended to the layer names (e.g. ``"truth "``).
    """
    geometry = geometry or LayerGeometry.from_acquisition(acquisition)
    return [
        tracks_layer(results, color_by=color_by, geometry=geometry, name=f"{prefix}tracks"),
        ellipses_layer(
            results,
            acquisition,
            color_by=color_by,
            scale_factor=ellipse_scale_factor,
            frames=ellipse_frames,
            geometry=geometry,
            name=f"{prefix}tensor ellipses",
        ),
        changepoints_layer(results, geometry=geometry, name=f"{prefix}changepoints"),
    ]
