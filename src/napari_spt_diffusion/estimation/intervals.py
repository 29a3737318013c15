"""Per-track uncertainty intervals for D1, D2 and theta, calibrated on simulated tracks.

How sure is a track's tensor? The error of a diffusion estimate from one short track is
mostly set by two things the track itself tells: how many frames it has, and how large the
localization noise is next to the diffusive step (``q = sigma_loc^2 / (D dt)``, in px^2 over
px^2/frame). An :class:`IntervalTable` holds, for each estimator, the empirical quantiles of
the log error ``ln(D_estimated / D_true)`` of D1 and D2 in bins of the track length and of
``log10 q``, and the quantiles of the absolute angle error ``|theta_estimated - theta_true|``
(degrees, modulo 180) in bins of the track length, of the estimated anisotropy
``ln(D1 / D2)`` and of the noise on the short axis ``q2 = sigma_loc^2 / (D2 dt)``. They are
measured on simulated tracks that the estimator never saw in training (split-conformal
calibration: no assumption about the error's distribution), and :func:`apply_intervals` turns
them into intervals for new tracks:

* D: ``[D exp(r_low), D exp(r_high)]`` with ``r`` the bin's 2.5/97.5 % (95 % interval) or
  16/84 % (68 % interval) quantiles of the log error;
* theta: ``theta +- w`` with ``w`` the bin's 68 % or 95 % quantile of the angle error; a
  half-width of 90 degrees means the orientation is not determined (a nearly isotropic track).

The intervals are as good as the calibration set is like the movie: they are calibrated on
our simulator over the acquisitions the table names (``calibration``), and their coverage
on the robustness grid is measured in ``benchmarks/reports/intervals.md``. Neighbouring noise
bins with fewer than :data:`MIN_BIN` calibration tracks are merged and share their quantiles.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "IntervalTable",
    "StratifiedIntervalTable",
    "table_for_psf",
    "fit_interval_table",
    "apply_intervals",
    "widen_for_bias",
    "load_interval_table",
    "bundled_interval_table",
    "INTERVAL_COLUMNS",
    "QUANTILES",
]

#: Quantiles of the log error stored per bin: the 95 % and the 68 % central intervals.
QUANTILES = (0.025, 0.16, 0.84, 0.975)
#: Coverage of the theta half-widths stored per bin.
THETA_LEVELS = (0.68, 0.95)
#: Track-length bin edges (frames): [5, 8), [8, 12), ... [30, inf).
LENGTH_EDGES = (5.0, 8.0, 12.0, 17.0, 23.0, 30.0, math.inf)
#: Bin edges of log10 q, q = localization variance / (D dt) (dimensionless).
NOISE_EDGES = (-math.inf, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, math.inf)
#: Bin edges of ln(D1 / D2) of the estimate.
ANISOTROPY_EDGES = (0.0, 0.25, 0.5, 1.0, 1.5, math.inf)
#: Bin edges of log10 q2, q2 = localization variance / (D2 dt), for theta (the noise on the short axis).
THETA_NOISE_EDGES = (-math.inf, -1.5, -0.5, math.inf)
#: Fewer calibration tracks than this in a bin: the bin uses its whole length bin's quantiles.
MIN_BIN = 40

#: Columns :func:`apply_intervals` returns (um^2/s for D, degrees for the half-widths).
INTERVAL_COLUMNS = (
    "D1_lo95_um2_s", "D1_lo68_um2_s", "D1_hi68_um2_s", "D1_hi95_um2_s",
    "D2_lo95_um2_s", "D2_lo68_um2_s", "D2_hi68_um2_s", "D2_hi95_um2_s",
    "theta_pm68_deg", "theta_pm95_deg",
)


@dataclass(frozen=True)
class IntervalTable:
    """Calibrated error quantiles of one estimator.

    Attributes
    ----------
    method
        The estimator the table belongs to (a model name, or ``classical``).
    d_log_quantiles
        ``{"D1": (L, Q, 4), "D2": (L, Q, 4)}`` quantiles :data:`QUANTILES` of
        ``ln(D_est / D_true)`` per length bin ``L`` and noise bin ``Q``.
    theta_halfwidth_deg
        ``(L, A, M, 2)`` the 68 % and 95 % quantiles of the angle error (degrees) per length bin,
        anisotropy bin ``A`` and bin ``M`` of the noise on the short axis (:data:`THETA_NOISE_EDGES`).
    counts
        ``{"D1": (L, Q), "D2": (L, Q), "theta": (L, A, M)}`` calibration tracks per bin.
    calibration
        How the table was made (data, acquisitions, seeds, number of tracks).
    """

    method: str
    d_log_quantiles: dict[str, np.ndarray]
    theta_halfwidth_deg: np.ndarray
    counts: dict[str, np.ndarray]
    calibration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (bin edges included)."""
        return {
            "method": self.method,
            "quantiles": list(QUANTILES),
            "theta_levels": list(THETA_LEVELS),
            "length_edges_frames": [_edge(v) for v in LENGTH_EDGES],
            "noise_edges_log10": [_edge(v) for v in NOISE_EDGES],
            "anisotropy_edges_ln": [_edge(v) for v in ANISOTROPY_EDGES],
            "theta_noise_edges_log10": [_edge(v) for v in THETA_NOISE_EDGES],
            "d_log_quantiles": {k: np.round(v, 5).tolist() for k, v in self.d_log_quantiles.items()},
            "theta_halfwidth_deg": np.round(self.theta_halfwidth_deg, 3).tolist(),
            "counts": {k: v.astype(int).tolist() for k, v in self.counts.items()},
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntervalTable:
        """Inverse of :meth:`to_dict` (the bin edges must be this module's)."""
        edges = (data["length_edges_frames"], data["noise_edges_log10"], data["anisotropy_edges_ln"])
        ours = ([_edge(v) for v in LENGTH_EDGES], [_edge(v) for v in NOISE_EDGES],
                [_edge(v) for v in ANISOTROPY_EDGES])
        if list(edges) != list(ours) or list(data["quantiles"]) != list(QUANTILES):
            raise ValueError("interval table made with other bins or quantiles than this version's")
        theta = np.asarray(data["theta_halfwidth_deg"], dtype=float)
        counts = {k: np.asarray(v, dtype=int) for k, v in data["counts"].items()}
        n_noise = len(THETA_NOISE_EDGES) - 1
        if "theta_noise_edges_log10" not in data:  # a table of 2026-12-06 or before: theta not binned by noise
            theta = np.repeat(theta[:, :, None, :], n_noise, axis=2)
            counts["theta"] = np.repeat(counts["theta"][:, :, None], n_noise, axis=2)
        elif list(data["theta_noise_edges_log10"]) != [_edge(v) for v in THETA_NOISE_EDGES]:
            raise ValueError("interval table made with other bins or quantiles than this version's")
        return cls(
            method=str(data["method"]),
            d_log_quantiles={k: np.asarray(v, dtype=float) for k, v in data["d_log_quantiles"].items()},
            theta_halfwidth_deg=theta,
            counts=counts,
            calibration=dict(data.get("calibration", {})),
        )


def _edge(v: float) -> float | str:
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")


@dataclass(frozen=True)
class StratifiedIntervalTable:
    """One :class:`IntervalTable` per range of the movie's PSF width, for an estimator whose errors
    depend on it beyond what the track length and the noise ratio tell (a model run in units of the
    PSF, :mod:`~napari_spt_diffusion.estimation.psf_units`, sees a wide PSF's movie through coarser
    virtual pixels than a narrow one's).

    Attributes
    ----------
    method
        The estimator.
    psf_sigma_edges_px
        ``S + 1`` increasing bin edges of the movie's PSF sigma (px); a width below the first edge
        or above the last takes the nearest stratum.
    tables
        ``S`` tables, one per stratum.
    calibration
        How the tables were made.
    """

    method: str
    psf_sigma_edges_px: tuple[float, ...]
    tables: tuple[IntervalTable, ...]
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        edges = np.asarray(self.psf_sigma_edges_px, dtype=float)
        if len(edges) != len(self.tables) + 1 or not np.all(np.diff(edges) > 0):
            raise ValueError("a stratified interval table needs S + 1 increasing PSF width edges for S tables")

    def select(self, psf_sigma_px: float) -> IntervalTable:
        """The table of the stratum holding ``psf_sigma_px`` (px; NaN: the stratum of 1 px)."""
        width = 1.0 if math.isnan(float(psf_sigma_px)) else float(psf_sigma_px)
        k = int(np.searchsorted(np.asarray(self.psf_sigma_edges_px[1:-1], dtype=float), width, side="right"))
        return self.tables[k]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"method": self.method, "psf_sigma_edges_px": list(self.psf_sigma_edges_px),
                "strata": [t.to_dict() for t in self.tables], "calibration": self.calibration}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StratifiedIntervalTable:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["method"]), tuple(float(v) for v in data["psf_sigma_edges_px"]),
                   tuple(IntervalTable.from_dict(t) for t in data["strata"]), dict(data.get("calibration", {})))


def table_for_psf(table: IntervalTable | StratifiedIntervalTable, psf_sigma_px: float) -> IntervalTable:
    """The table to apply to a movie whose PSF sigma is ``psf_sigma_px`` (px): ``table`` itself, or the
    matching stratum of a :class:`StratifiedIntervalTable`."""
    return table.select(psf_sigma_px) if isinstance(table, StratifiedIntervalTable) else table


def load_interval_table(path: str | Path) -> IntervalTable | StratifiedIntervalTable:
    """Read a table written as ``json.dumps(table.to_dict())`` (plain or stratified by PSF width)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if "strata" in data:
        return StratifiedIntervalTable.from_dict(data)
    return IntervalTable.from_dict(data)


#: Folder of the bundled tables: ``<estimator>.intervals.json`` beside the bundled models.
TABLE_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def bundled_interval_table(method: str) -> IntervalTable | StratifiedIntervalTable | None:
    """The bundled table of an estimator (a bundled model's name, or ``classical``); None if it has none."""
    path = TABLE_DIR / f"{method}.intervals.json"
    if not path.is_file():
        return None
    try:
        return load_interval_table(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"interval table {path} cannot be read ({exc})") from exc


def _bins(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Bin index of each value (values below the first edge go to bin 0, NaN to bin 0)."""
    idx = np.searchsorted(np.asarray(edges[1:-1], dtype=float), np.nan_to_num(values, nan=-np.inf), side="right")
    return idx.astype(np.int64)


def _noise_log10(loc_var_px2: np.ndarray, d_px2_frame: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.log10(np.maximum(loc_var_px2, 1e-12) / np.maximum(d_px2_frame, 1e-12))
    return np.where(np.isfinite(q), q, np.inf)


def _angle_error_deg(theta_a: np.ndarray, theta_b: np.ndarray) -> np.ndarray:
    diff = np.abs(np.mod(np.asarray(theta_a, float) - np.asarray(theta_b, float), 180.0))
    return np.minimum(diff, 180.0 - diff)


def _binned_quantiles(values: np.ndarray, row: np.ndarray, col: np.ndarray, shape: tuple[int, int],
                      levels: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles ``levels`` of ``values`` per ``(row, col)`` bin.

    Along each row, neighbouring bins with fewer than :data:`MIN_BIN` values are merged
    (greedily, left to right; a short last group joins the one before) and share the
    quantiles of their union; a row with too few values altogether takes the nearest row's.
    """
    out = np.full(shape + (len(levels),), np.nan)
    counts = np.zeros(shape, dtype=np.int64)
    for i in range(shape[0]):
        in_row = row == i
        counts[i] = np.bincount(col[in_row], minlength=shape[1])[: shape[1]]
        groups: list[list[int]] = []
        current: list[int] = []
        for j in range(shape[1]):
            current.append(j)
            if counts[i, current].sum() >= MIN_BIN:
                groups.append(current)
                current = []
        if current and groups:
            groups[-1].extend(current)
        for group in groups:  # none when the whole row is short: it takes the nearest row's below
            out[i, group] = np.quantile(values[in_row & np.isin(col, group)], levels)
    filled = [i for i in range(shape[0]) if np.isfinite(out[i]).all()]
    for i in range(shape[0]):
        if not np.isfinite(out[i]).all() and filled:
            out[i] = out[min(filled, key=lambda k: abs(k - i))]
    return out, counts


def fit_interval_table(
    estimate: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    n_frames: np.ndarray,
    loc_var_px2: np.ndarray,
    um2_s_per_px2_frame: float | np.ndarray,
    method: str,
) -> IntervalTable:
    """Measure the error quantiles of an estimator on calibration tracks.

    Parameters
    ----------
    estimate, truth
        ``D1_um2_s``, ``D2_um2_s``, ``theta_deg``: ``(N,)`` arrays (estimated and true).
    n_frames
        ``(N,)`` frames of each track.
    loc_var_px2
        ``(N,)`` mean squared localization precision of each track (px^2).
    um2_s_per_px2_frame
        The acquisition's ``um2_s_per_px2_frame`` (number, or ``(N,)`` for mixed acquisitions).
    method
        Name of the estimator.
    """
    n_len, n_noise, n_aniso = len(LENGTH_EDGES) - 1, len(NOISE_EDGES) - 1, len(ANISOTROPY_EDGES) - 1
    length_bin = _bins(np.asarray(n_frames, float), LENGTH_EDGES)
    scale = np.broadcast_to(np.asarray(um2_s_per_px2_frame, float), length_bin.shape)
    quantiles: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for key in ("D1", "D2"):
        est = np.asarray(estimate[f"{key}_um2_s"], float)
        true = np.asarray(truth[f"{key}_um2_s"], float)
        ok = np.isfinite(est) & np.isfinite(true) & (est > 0) & (true > 0)
        noise = _bins(_noise_log10(np.asarray(loc_var_px2, float), est / scale), NOISE_EDGES)
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.log(est / true)
        quantiles[key], counts[key] = _binned_quantiles(err[ok], length_bin[ok], noise[ok], (n_len, n_noise),
                                                        QUANTILES)
    d1, d2 = (np.asarray(estimate[k], float) for k in ("D1_um2_s", "D2_um2_s"))
    with np.errstate(divide="ignore", invalid="ignore"):
        aniso = _bins(np.log(d1 / d2), ANISOTROPY_EDGES)
    theta_noise = _bins(_noise_log10(np.asarray(loc_var_px2, float), d2 / scale), THETA_NOISE_EDGES)
    n_theta_noise = len(THETA_NOISE_EDGES) - 1
    true_ratio = np.asarray(truth["D1_um2_s"], float) / np.asarray(truth["D2_um2_s"], float)
    ok = np.isfinite(estimate["theta_deg"]) & np.isfinite(truth["theta_deg"]) & (true_ratio >= 1.5)
    angle = _angle_error_deg(estimate["theta_deg"], truth["theta_deg"])
    # per (length, anisotropy) bin, the noise bins (merged along the row where sparse); a (length,
    # anisotropy) bin with too few tracks for that takes its quantiles over all noise (merged along the
    # anisotropy bins of its length bin, as without the noise bins)
    base, _ = _binned_quantiles(angle[ok], length_bin[ok], aniso[ok], (n_len, n_aniso), THETA_LEVELS)
    theta, theta_counts = _binned_quantiles(angle[ok], (length_bin * n_aniso + aniso)[ok], theta_noise[ok],
                                            (n_len * n_aniso, n_theta_noise), THETA_LEVELS)
    theta = theta.reshape(n_len, n_aniso, n_theta_noise, len(THETA_LEVELS))
    counts["theta"] = theta_counts.reshape(n_len, n_aniso, n_theta_noise)
    sparse = counts["theta"].sum(axis=2) < MIN_BIN
    theta[sparse] = base[sparse][:, None, :]
    return IntervalTable(method, quantiles, np.nan_to_num(theta, nan=90.0), counts)


def apply_intervals(
    table: IntervalTable,
    estimate: dict[str, np.ndarray],
    n_frames: np.ndarray,
    loc_var_px2: np.ndarray,
    um2_s_per_px2_frame: float,
) -> dict[str, np.ndarray]:
    """Intervals of new tracks from a calibrated table.

    Parameters
    ----------
    estimate
        ``D1_um2_s``, ``D2_um2_s``, ``theta_deg``: ``(N,)``.
    n_frames, loc_var_px2, um2_s_per_px2_frame
        As in :func:`fit_interval_table`.

    Returns
    -------
    ``{column: (N,)}`` for :data:`INTERVAL_COLUMNS`: D bounds in um^2/s (NaN where the estimate
    is not positive), theta half-widths in degrees (90: orientation undetermined).
    """
    out: dict[str, np.ndarray] = {}
    length_bin = _bins(np.asarray(n_frames, float), LENGTH_EDGES)
    for key in ("D1", "D2"):
        est = np.asarray(estimate[f"{key}_um2_s"], float)
        noise = _bins(_noise_log10(np.asarray(loc_var_px2, float), est / um2_s_per_px2_frame), NOISE_EDGES)
        q = table.d_log_quantiles[key][length_bin, noise]  # (N, 4)
        positive = np.isfinite(est) & (est > 0)
        with np.errstate(invalid="ignore", over="ignore"):
            bounds = np.where(positive[:, None], est[:, None] / np.exp(q[:, ::-1]), np.nan)
        # est / exp(quantile of ln(est/true)) bounds the truth: the high error quantile gives the low bound
        for i, name in enumerate(("lo95", "lo68", "hi68", "hi95")):
            out[f"{key}_{name}_um2_s"] = bounds[:, i]
    d1, d2 = (np.asarray(estimate[k], float) for k in ("D1_um2_s", "D2_um2_s"))
    with np.errstate(divide="ignore", invalid="ignore"):
        aniso = _bins(np.log(d1 / d2), ANISOTROPY_EDGES)
    theta_noise = _bins(_noise_log10(np.asarray(loc_var_px2, float), d2 / um2_s_per_px2_frame), THETA_NOISE_EDGES)
    widths = table.theta_halfwidth_deg[length_bin, aniso, theta_noise]
    out["theta_pm68_deg"] = np.minimum(widths[:, 0], 90.0)
    out["theta_pm95_deg"] = np.minimum(widths[:, 1], 90.0)
    return out


def widen_for_bias(columns: dict[str, np.ndarray], bias_low: float, bias_high: float) -> dict[str, np.ndarray]:
    """D intervals that also hold when the estimator is off by a factor within ``[bias_low, bias_high]``.

    ``columns``: :func:`apply_intervals`' output. An estimate ``b`` times the truth puts the
    truth at ``estimate / b``: each low bound is divided by ``max(bias_high, 1)`` and each
    high bound by ``min(bias_low, 1)`` (an interval of the bias that excludes 1 only moves the
    bounds that way, it never narrows them). Non-finite or non-positive factors (the bias was
    not measured) leave the intervals as they are. The theta half-widths are not touched.
    Returns a new dict.

    The factor is added outright, not in quadrature with each track's error: it is common to all
    tracks of a movie, so the interval must hold for the movie's own factor. (In quadrature, tried
    on 2026-12-07, covered our own grid better and the independent foreign-optics movies worse:
    ``benchmarks/reports/foreign_quadrature_widening.md``.)
    """
    out = dict(columns)
    if not (math.isfinite(bias_low) and math.isfinite(bias_high) and 0 < bias_low <= bias_high):
        return out
    down, up = max(float(bias_high), 1.0), min(float(bias_low), 1.0)
    for key in ("D1", "D2"):
        for name in ("lo95", "lo68"):
            out[f"{key}_{name}_um2_s"] = np.asarray(columns[f"{key}_{name}_um2_s"], float) / down
        for name in ("hi68", "hi95"):
            out[f"{key}_{name}_um2_s"] = np.asarray(columns[f"{key}_{name}_um2_s"], float) / up
    return out
