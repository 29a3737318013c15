"""The estimation stage shared by the whole pipeline and by imported tracks.

Given linked localizations (``track_id, frame, y_px, x_px`` and, when known,
``photons, background, loc_precision_nm, nearest_other_px, encounter_cut``), a movie and
a loaded :class:`~.estimation.estimator.Estimator`, :func:`estimate_stage` runs steps 3-8
of :mod:`~napari_spt_diffusion.pipeline`: per-track patches and displacements (in chunks of
tracks), the classical estimators, the model, the guard, changepoints and the two tables
of the results contract. :func:`~napari_spt_diffusion.pipeline.track_and_estimate` calls
it on the tracks it found, :func:`~napari_spt_diffusion.estimate_tracks.estimate_tracks`
on tracks made elsewhere, so both give the same tables for the same tracks.

With ``settings.drift_correction`` the ensemble-mean drift (:mod:`~.estimation.drift`)
is subtracted from the positions behind every estimate (classical, model displacements,
changepoint confirmation); the patches are still cut where the particle is in the movie,
and the tables keep the positions as localized.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import notices, plausibility, streaming
from .acquisition import Acquisition
from .calibration import CALIBRATED_FIELDS, Calibration, calibrate_movie
from .estimation import changepoints as cp
from .estimation import guard, isotropy, model_range, rescale
from .estimation.classical import cve_tensor_batch, msd_diffusion_batch, regular_positions
from .estimation.confirmation import confirm_changepoints
from .estimation.drift import drift_record, ensemble_drift_px, subtract_drift
from .estimation.estimator import Estimator, TrackEstimate
from .estimation.intervals import (
    INTERVAL_COLUMNS,
    StratifiedIntervalTable,
    apply_intervals,
    bundled_interval_table,
    table_for_psf,
    widen_for_bias,
)
from .estimation.linked_widening import bundled_linked_widening, widen_linked
from .estimation.model_choice import ModelSwitch, alternative_for
from .estimation.state_check import applies_to, state_change_note
from .estimation.tensor import mean_tensor
from .results import SUMMARY_COLUMNS, TRACKS_COLUMNS, format_changepoint_frames
from .stage_guard import classical_for, guard_model, range_check
from .tracking.crowding import CROWDED_SHARE, crowded_share
from .tracking.field_edge import border_distance_px, touches_edge
from .tracking.patches import TrackPatches, displacements_from_positions, extract_track_patches

if TYPE_CHECKING:  # pipeline imports this module
    from .pipeline import Settings

__all__ = ["Prepared", "StageOutput", "estimate_stage", "prepare_acquisition", "guard_model", "track_changepoints"]


@dataclass
class StageOutput:
    """What :func:`estimate_stage` returns.

    Attributes
    ----------
    tracks, summary
        The two tables of the results contract (summary with ``method``, ``warnings`` and ``notes``).
    meta
        ``guard``, ``model_range`` (the per-track range check, :mod:`~.estimation.model_range`), ``model``,
        ``model_kind``, ``model_sha256``, ``device``, ``settings``, ``changepoints`` and ``drift_correction``
        (``{"enabled": False}`` when off) entries.
    messages
        Warnings raised on the way (the guard's rejection, tracks outside the model's range, implausible
        estimates).
    timings
        Seconds per step: ``patches_s``, ``classical_s``, ``model_s``, ``tables_s``.
    """

    tracks: pd.DataFrame
    summary: pd.DataFrame
    meta: dict[str, Any]
    messages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Prepared:
    """The acquisition after the checks and the calibration of :func:`prepare_acquisition`.

    Attributes
    ----------
    acquisition
        The acquisition to use (measured fields applied).
    measured
        The calibration (``None`` when nothing was measured).
    messages
        Warnings issued (calibration notes, implausible values).
    seconds
        Time spent measuring (0 when nothing was measured).
    particles_from_light
        Particles per frame the light of the sampled frames suggests
        (:func:`~.plausibility.particles_per_frame`).
    model_switch
        The bundled model used instead of the one asked for (:mod:`~.estimation.model_choice`),
        set by :func:`calibrate_and_load`; ``None``: the model asked for runs.
    """

    acquisition: Acquisition
    measured: Calibration | None
    messages: list[str]
    seconds: float
    particles_from_light: Any
    model_switch: ModelSwitch | None = None


def prepare_acquisition(movie: Any, acquisition: Acquisition, measure: tuple[str, ...],
                        read_noise_known: bool = False) -> Prepared:
    """Check the acquisition against the movie and measure the fields ``measure`` from it.

    ``read_noise_known``: the acquisition's read noise was given by the user, not assumed (the
    calibration then leaves the range an assumed one may span out of its uncertainties).

    Units, NaN frames and the camera scale are checked before any work
    (:mod:`~napari_spt_diffusion.plausibility`); the fields the user and the file did not
    give are measured (:func:`~.calibration.calibrate_movie`, each note issued as a
    warning); the result is checked again and implausible values are warned about.
    """
    plausibility.check_units(acquisition)
    sample = plausibility.sample_frames(movie)
    plausibility.check_scaled_float(sample, plausibility.movie_dtype(movie), acquisition, measure)
    measured = None
    messages: list[str] = []
    t0 = time.perf_counter()
    if measure:
        given = set(CALIBRATED_FIELDS) - set(measure)
        known = given | ({"read_noise_e"} if read_noise_known else set())
        measured = calibrate_movie(movie, acquisition, given=known)
        acquisition = measured.apply(acquisition, given)
        for note in measured.notes:
            _warn(note)
        messages += list(measured.notes)
    seconds = time.perf_counter() - t0 if measure else 0.0
    # a field to measure that the calibration could not measure keeps its standard value
    origins = {name: "measured" if measured is not None and name in measured.values else "assumed" for name in measure}
    plausibility.check_units(acquisition, origins)
    plausibility.check_offset(sample, acquisition, origins)
    particles = plausibility.particles_per_frame(sample, acquisition)
    messages += notices.warn_all(plausibility.acquisition_warnings(acquisition, origins))
    return Prepared(acquisition, measured, messages, seconds, particles)


def calibrate_and_load(
    movie: Any, acquisition: Acquisition, settings: Settings, estimator: Estimator | None, bar: Any
) -> tuple[Prepared, Estimator, list[str], dict[str, float]]:
    """The first two steps of a run (a movie tracked or tracks imported): the acquisition checked
    and calibrated (:func:`prepare_acquisition`), then the model loaded (a bad model name or device
    fails before the long part) and the acquisition checked against its card.

    ``bar`` is the run's progress (``begin``/``end``). Returns ``(prepared, estimator,
    acquisition_messages, timings)`` with ``calibrate_s`` (when something was measured) and ``load_s``.
    """
    timings: dict[str, float] = {}
    bar.begin("calibrate", "measuring the camera and the PSF from the movie")
    prepared = prepare_acquisition(movie, acquisition, settings.measure, settings.read_noise_known)
    if prepared.measured is not None:
        timings["calibrate_s"] = prepared.seconds
    bar.end()
    bar.begin("load", "loading the model")
    t0 = time.perf_counter()
    switchable = estimator is None and getattr(settings, "model_switch", False)
    if estimator is None:
        estimator = _estimator(settings.model, settings)
    # the guard decides what an acquisition outside the model's range means
    acquisition_messages = estimator.check_acquisition(prepared.acquisition, warn=False)
    if switchable:
        loaded: dict[str, Estimator] = {}  # the alternative is loaded once: to check it, then to run it

        def check(name: str, acq: Acquisition) -> list[str]:
            loaded[name] = _estimator(name, settings)
            return loaded[name].check_acquisition(acq, warn=False)

        switch = alternative_for(settings.model, acquisition_messages, prepared.acquisition, check)
        if switch is not None:
            estimator = loaded[switch.used]
            acquisition_messages = []  # the switch is made only into a model whose range covers the movie
            prepared.model_switch = switch
            prepared.messages.append(switch.message)
            _warn(switch.message)
    timings["load_s"] = time.perf_counter() - t0
    bar.end()
    return prepared, estimator, acquisition_messages, timings


def _estimator(name: str, settings: Any) -> Estimator:
    return Estimator(name, device=settings.device, batch_size=settings.batch_size,
                     psf_units=getattr(settings, "psf_units", "off"))


def estimate_stage(
    movie: Any,
    tracks: pd.DataFrame,
    acquisition: Acquisition,
    estimator: Estimator,
    settings: Settings,
    bar: Any,
    acquisition_messages: list[str],
    complete: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> StageOutput:
    """Patches, classical estimators, model, guard, changepoints and tables of linked tracks.

    Parameters
    ----------
    movie
        ``(T, Y, X)`` camera movie in ADU (array-like, ``movie[t]`` one frame).
    tracks
        Localizations of the tracks to estimate, columns as in the module's description;
        positions in pixels, frames inside the movie.
    acquisition
        The movie's acquisition (after any calibration).
    estimator
        The loaded model.
    settings
        :class:`~napari_spt_diffusion.pipeline.Settings`.
    bar
        The pipeline's progress object (``begin``, ``inner``, ``report``, ``end``).
    acquisition_messages
        The estimator's acquisition check (``estimator.check_acquisition(..., warn=False)``).
    complete
        For tracks whose other columns were spilled to disk (:mod:`~napari_spt_diffusion.streaming`):
        ``complete(rows)`` returns those rows with the missing columns (``photons``, ``background``,
        ``nearest_other_px``, ...); it is called on one chunk of tracks at a time, when its tables
        are made. ``None``: ``tracks`` has every column.
    """
    timings: dict[str, float] = {k: 0.0 for k in ("patches_s", "classical_s", "model_s")}
    movie = streaming.releasing(movie)  # the pages of a memory-mapped movie are dropped as patches are cut
    messages: list[str] = []
    drift = None
    drift_meta: dict[str, Any] = {"enabled": False}
    if getattr(settings, "drift_correction", False):
        drift, n_steps = ensemble_drift_px(tracks, int(movie.shape[0]))
        drift_meta = drift_record(drift, n_steps)

    # 3, 4, 5 - patches, classical estimators, model: in chunks of tracks so that memory
    # stays bounded on long movies (each chunk reads only the frames its tracks use)
    tracks = tracks.assign(border_px=border_distance_px(tracks["y_px"].to_numpy(), tracks["x_px"].to_numpy(),
                                                        tuple(movie.shape[1:3])))
    bar.begin("estimate", f"estimating {tracks['track_id'].nunique()} tracks")
    side = estimator.source_patch_size(acquisition)  # PSF units cut larger patches: fewer per chunk
    groups = _track_chunks(tracks, max(1, settings.chunk_localizations * estimator.patch_size**2 // side**2))
    classical: dict[int, dict[str, float]] = {}
    estimates: list[TrackEstimate] = []
    n_chunks = len(groups)
    for i, group in enumerate(groups):
        chunk = _chunk_rows(tracks, group, n_chunks)
        base, width = i / n_chunks, 1.0 / n_chunks
        bar.inner(base, f"cutting patches (part {i + 1}/{n_chunks})")
        t0 = time.perf_counter()
        # the model's patch size, or a larger region to resample in PSF units (the classical
        # estimators and a short track's fallback use its centre patch_size pixels)
        patches = extract_track_patches(movie, chunk, acquisition, patch_size=side)
        if drift is not None:
            patches = [_without_drift(tp, drift) for tp in patches]
        timings["patches_s"] += time.perf_counter() - t0
        bar.inner(base + 0.3 * width, f"classical estimators (part {i + 1}/{n_chunks})")
        t0 = time.perf_counter()
        classical.update(_classical_estimates(patches, acquisition))
        timings["classical_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        estimates += estimator.estimate(
            patches,
            acquisition,
            progress=lambda f, m, base=base, width=width: bar.inner(base + width * (0.4 + 0.6 * f), m),
            warn_acquisition=False,
        )
        timings["model_s"] += time.perf_counter() - t0
        del patches, chunk
        streaming.trim_memory()
    bar.end()

    # 6 - the guard: is the model biased on this movie's tracks, or the movie out of its range? Tracks shown
    # outside the range of D the model was trained on (their classical values are reported), and where there are
    # such tracks those the model reads near that edge, are left out of it (model_range.left_out_of_guard)
    precision_px = _column(tracks, "loc_precision_nm") / acquisition.pixel_size_nm
    loc_var = pd.Series(precision_px**2).groupby(tracks["track_id"].to_numpy()).mean().to_dict()
    check = range_check(estimates, classical, loc_var, acquisition, estimator) if settings.model_range_check else None
    outside = check.outside if check is not None else frozenset()
    left_out = frozenset()
    if check is not None and outside:  # the model's bias over the tracks not flagged tells chance flags apart
        first = guard_model([e for e in estimates if e.track_id not in outside], classical, acquisition, estimator,
                            acquisition_messages, loc_var)
        left_out = model_range.guard_left_out(check, {e.track_id: 0.5 * (e.track_D1_um2_s + e.track_D2_um2_s)
                                                      for e in estimates if e.method == "model"},
                                              (first.bias_factor, first.bias_low, first.bias_high, first.n_tracks))
    decision = guard_model([e for e in estimates if e.track_id not in left_out], classical, acquisition, estimator,
                           acquisition_messages, loc_var)
    held = HELD_AFTER_REJECTION.get() if decision.rejected else None  # another model may be reported instead
    say = _warn if held is None else held.append
    if decision.rejected:
        say(decision.reason)
        messages.append(decision.reason)
        if not settings.trust_model:
            estimates = [classical_for(e, classical[e.track_id], "model_rejected") if e.method == "model" else e
                         for e in estimates]
    # an accepted model's bias, where shown, is divided out (estimation/rescale.py)
    factor = rescale.rescale_factor(decision) if settings.rescale_model else None
    if factor is not None:
        estimates = [rescale.rescaled(e, factor) for e in estimates]
        note = rescale.rescale_note(decision, factor, estimator.model_name)
        _warn(note)
        messages.append(note)
    model_reported = not decision.rejected or settings.trust_model
    if outside and model_reported:  # the model's values are reported: not for the tracks outside its range
        near = left_out - outside  # read near the edge beyond which tracks were found: kept, flagged
        estimates = [classical_for(e, classical[e.track_id], model_range.FLAG, keep=settings.trust_model,
                                   isotropic=e.track_id in check.below)
                     if e.track_id in outside and e.method == "model" else
                     classical_for(e, classical[e.track_id], model_range.NEAR_FLAG, keep=True)
                     if e.track_id in near and e.method == "model" else e for e in estimates]
        note = check.message(estimator.model_name, reported=settings.trust_model, n_near_edge=len(near))
        _warn(note)
        messages.append(note)

    # 7, 8 - changepoints and tables
    bar.begin("tables", "changepoints and result tables")
    t0 = time.perf_counter()
    mode = settings.changepoints
    if mode == "auto":
        mode = "auto" if estimator.pointwise else "none"
    by_id = {e.track_id: e for e in estimates}
    parts = []
    for group in groups:  # chunk by chunk: only one chunk's spilled columns are read back at a time
        chunk = _chunk_rows(tracks, group, n_chunks)
        if complete is not None:
            chunk = complete(chunk)
        parts.append(_tables(chunk, [by_id[int(t)] for t in group], classical, acquisition, estimator, settings,
                             mode, drift))
        del chunk
        streaming.trim_memory()
    if not parts:  # no track at all
        parts.append(_tables(tracks if complete is None else complete(tracks), estimates, classical, acquisition,
                             estimator, settings, mode, drift))
    tracks_table, summary = _joined(parts)
    del parts
    # the guard's interval widens the model's only where the guard measured it (enough tracks)
    measured = decision.n_tracks >= guard.MIN_TRACKS and all(
        math.isfinite(v) for v in (decision.bias_factor, decision.bias_low, decision.bias_high))
    summary, interval_meta = with_intervals(summary, loc_var, acquisition, estimator.card.get("motion_model"),
                                            model_bias=rescale.residual_bias(decision, factor) if measured else None)
    for text in plausibility.estimate_warnings(summary):
        say(text)
        messages.append(text)
    state_note, state_record = ("", None)
    if applies_to(estimator.card.get("motion_model")) and model_reported:
        state_note, state_record = state_change_note(summary, estimator.model_name)  # a binding model's values
    if state_note:
        _warn(state_note)
        messages.append(state_note)
    timings["tables_s"] = time.perf_counter() - t0
    bar.report(1.0, "done")
    bar.end()
    meta = {
        "guard": {**decision.to_dict(), "model_reported": model_reported, "rescaled_by": factor},
        "model_range": {"checked": check is not None, **(check.to_dict() if check is not None else {}),
                        **({"n_left_out_of_guard": len(left_out)} if check is not None else {})},
        "model": estimator.model_name,
        "model_kind": estimator.kind,
        "model_sha256": estimator.card.get("sha256"),
        "device": str(estimator.device),
        "settings": settings.to_dict(),
        "changepoints": {
            "mode": mode,
            "features": "log10 D1, log10 D2 per frame",
            "penalty_single": settings.changepoint_penalty or cp.DEFAULT_PENALTY,
            "penalty_multi": settings.changepoint_penalty_multi or cp.DEFAULT_PENALTY_MULTI,
            "min_effect_log10": settings.changepoint_min_effect,
            "confirmed_on_displacements": bool(settings.changepoint_confirm),
            "confirm_alpha_per_track": settings.changepoint_confirm_alpha,
        },
        "drift_correction": drift_meta,
        "state_changes": state_record,
        "intervals": interval_meta,
        "isotropy": {**isotropy.movie_isotropy(summary["isotropy_p"].to_numpy(float)).to_dict(),
                     "method": "per track: 2-D sphericity test of its displacements (estimation/isotropy.py), "
                               "summary column isotropy_p; per movie: binomial test of the count of tracks with "
                               "p < alpha against a per-track rate of null_rate"},
        "psf_units": {"mode": estimator.psf_units, "scale": estimator.psf_scale(acquisition),
                      "patch_cut_px": side},
    }
    return StageOutput(tracks_table, summary, meta, messages, timings)


def with_intervals(
    summary: pd.DataFrame, loc_var_px2: Mapping[int, float], acquisition: Acquisition,
    motion_model: str | None = None, model_bias: tuple[float, float] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The summary with the per-track 68 % / 95 % intervals of D1, D2 and theta (``INTERVAL_COLUMNS``).

    Each track's intervals come from the calibrated table of the estimator that gave its
    values (its ``model`` column: a bundled model, or ``classical``); tracks whose estimator
    has no table get NaN. ``loc_var_px2``: mean squared localization precision per track id.
    ``motion_model``: the model's motion (``binding``, ...): classical values then take the
    table calibrated on that motion (``classical_<motion>``) where there is one.

    ``model_bias``: the guard's confidence interval ``(low, high)`` of the model's bias factor
    on this movie (model / classical, :mod:`~.estimation.guard`). The tables are calibrated on
    our simulator, where the model is unbiased; on a movie where it may be off by a factor
    ``b`` within that interval, the truth lies at the model's value / ``b``, so the model's D
    intervals are widened to ``[low bound / max(high, 1), high bound / min(low, 1)]``
    (:func:`~.estimation.intervals.widen_for_bias`). The classical rows are not touched: the
    CVE the guard compares against is the classical estimate.
    """
    out = summary.copy()
    for column in INTERVAL_COLUMNS:
        out[column] = np.nan
    used: dict[str, str] = {}
    for method in sorted(set(out["model"].astype(str))) if len(out) else []:
        table = None
        if method == "classical" and motion_model:
            table = bundled_interval_table(f"classical_{motion_model}")
        table = table if table is not None else bundled_interval_table(method)
        used[method] = "none (no calibrated table: NaN)" if table is None else (
            f"{table.method}: {table.calibration.get('motion_model', '?')} tracks, "
            f"{table.calibration.get('acquisitions', 'calibrated')}")
        if isinstance(table, StratifiedIntervalTable):
            table = table_for_psf(table, acquisition.psf_sigma_px)
            used[method] += f"; the stratum of PSF sigma {table.calibration.get('psf_sigma_px', '?')} px"
        if table is None:
            continue
        rows = (out["model"].astype(str) == method).to_numpy()
        ids = out["track_id"].to_numpy()[rows]
        estimate = {k: out[k].to_numpy(dtype=float)[rows] for k in ("D1_um2_s", "D2_um2_s", "theta_deg")}
        var = np.array([loc_var_px2.get(int(i), np.nan) for i in ids], dtype=float)
        columns = apply_intervals(table, estimate, out["n_frames"].to_numpy(dtype=float)[rows], var,
                                  acquisition.um2_s_per_px2_frame)
        if method != "classical" and model_bias is not None:
            columns = widen_for_bias(columns, *model_bias)
        for column, values in columns.items():
            out.loc[rows, column] = values
    linked = bundled_linked_widening()
    if linked is not None:
        out = widen_linked(out, linked)
    low, high = model_bias if model_bias is not None else (float("nan"), float("nan"))
    widened = (math.isfinite(low) and math.isfinite(high) and 0 < low <= high
               and any(m != "classical" and not v.startswith("none") for m, v in used.items()))
    meta = {"columns": list(INTERVAL_COLUMNS), "tables": used,
            "method": "split-conformal: calibrated quantiles of the log error (D) and the angle error (theta) per "
                      "track length and localization-noise ratio, on simulated tracks (estimation/intervals.py)",
            "model_bias_widening": (
                {"bias_low": low, "bias_high": high,
                 "rule": "model rows: low bound / max(high, 1), high bound / min(low, 1) (the guard's interval of "
                         "the model's bias factor on this movie; where the model's values were rescaled by the guard's "
                         "factor b, meta guard.rescaled_by, the interval left after that: the guard's bounds / b)"}
                if widened else None),
            "linked_widening": None if linked is None else {
                "factors": linked.factors,
                "groups": "by notes, the first that applies: edge, gaps, crowded, else plain",
                "rule": "D bounds: c (bound / c) ** f, c = sqrt(low high), f of the track's group and interval",
                "source": "estimation/linked_widening.py"},
            }
    return out, meta


def _without_drift(tp: TrackPatches, drift_px: np.ndarray) -> TrackPatches:
    """The track's positions and displacements with the drift subtracted (patches unchanged)."""
    positions = subtract_drift(tp.positions_px, tp.frames, drift_px)
    disp, gap = displacements_from_positions(positions, tp.frames)
    return TrackPatches(
        track_id=tp.track_id, frames=tp.frames, positions_px=positions, patches_photons=tp.patches_photons,
        subpixel_offset_px=tp.subpixel_offset_px, outside_mask=tp.outside_mask, displacements_px=disp,
        gap_before=gap,
    )


#: Set by :mod:`~napari_spt_diffusion.estimation_fallback` while a rejected model may give way to its model for
#: any microscope: the warnings a stage would give once the guard rejected its model are collected in this list
#: instead of shown, and shown by the caller only if it reports that run.
HELD_AFTER_REJECTION: ContextVar[list[str] | None] = ContextVar("held_after_rejection", default=None)


def _warn(message: str) -> None:
    """Issue a library warning (:mod:`~.notices`) the CLI prints at once and the widget shows."""
    notices.warn(message, stacklevel=4)


def _chunk_rows(tracks: pd.DataFrame, group: np.ndarray, n_chunks: int) -> pd.DataFrame:
    """The rows of the tracks ``group`` (the whole table when it is the only chunk)."""
    return tracks if n_chunks == 1 else tracks[tracks["track_id"].isin(group)]


def _joined(parts: list[tuple[pd.DataFrame, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tracks and summary tables of all chunks, in order of track id (as one :func:`_tables` call gives)."""
    if len(parts) == 1:
        return parts[0]
    tables, summaries = [p[0] for p in parts], [p[1] for p in parts]
    parts.clear()  # the caller's list: each chunk's table is now held by `tables` only
    table = _concat_freeing(tables)
    summary = pd.concat(summaries, ignore_index=True)
    if not summary["track_id"].is_monotonic_increasing:
        summary = summary.sort_values("track_id", kind="stable").reset_index(drop=True)
        table = table.sort_values("track_id", kind="stable").reset_index(drop=True)
    return table, summary


def _concat_freeing(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat(tables, ignore_index=True)`` of tables with the same columns and dtypes, each part
    dropped from the list once copied (so the rows are held about once, not twice, at the end)."""
    columns = list(tables[0].columns)
    total = sum(len(t) for t in tables)
    out = {c: np.empty(total, dtype=tables[0][c].dtype) for c in columns}
    start = 0
    for i in range(len(tables)):
        part, tables[i] = tables[i], None  # type: ignore[call-overload]
        for c in columns:
            out[c][start:start + len(part)] = part[c].to_numpy()
        start += len(part)
        del part
    return pd.DataFrame(out, columns=columns, copy=False)  # no consolidated copy of the columns


def _track_chunks(tracks: pd.DataFrame, max_localizations: int) -> list[np.ndarray]:
    """Track ids grouped, in order of their first frame, into chunks of about
    ``max_localizations`` rows (a longer track is a chunk of its own)."""
    first = tracks.groupby("track_id")["frame"].min().sort_values(kind="stable")
    sizes = tracks.groupby("track_id").size().loc[first.index].to_numpy()
    ids = first.index.to_numpy()
    groups: list[list[int]] = []
    current: list[int] = []
    count = 0
    for tid, n in zip(ids, sizes):
        if current and count + n > max_localizations:
            groups.append(current)
            current, count = [], 0
        current.append(int(tid))
        count += int(n)
    if current:
        groups.append(current)
    return [np.asarray(g, dtype=np.int64) for g in groups]


# ------------------------------------------------------------- classical
def _classical_estimates(patches: list[TrackPatches], acquisition: Acquisition) -> dict[int, dict[str, float]]:
    """MSD D, alpha and the isotropic CVE D of every track (batched by span length)."""
    out: dict[int, dict[str, float]] = {}
    groups: dict[int, list[int]] = {}
    grids: list[np.ndarray] = []
    for i, tp in enumerate(patches):
        grid = regular_positions(tp.positions_px, tp.frames)
        grids.append(grid)
        groups.setdefault(len(grid), []).append(i)
    nan = float("nan")
    for length, members in groups.items():
        stack = np.stack([grids[i] for i in members])
        if length >= 3:
            with np.errstate(all="ignore"):
                msd = msd_diffusion_batch(stack, acquisition)
                cve = cve_tensor_batch(stack, acquisition)
                step_var = model_range.median_step_variance_px2(stack)  # the range check's robust D
            d_cve_px = 0.5 * np.trace(cve["tensor_px2_frame"], axis1=1, axis2=2)
            d_cve = np.clip(acquisition.diffusion_to_um2_s(d_cve_px), 0.0, None)
            steps = np.all(np.isfinite(np.diff(stack, axis=1)), axis=2).sum(axis=1)
            for j, i in enumerate(members):
                out[patches[i].track_id] = {
                    "D_msd_um2_s": float(msd["D_um2_s"][j]),
                    "alpha_msd": float(msd["alpha"][j]),
                    "D_cve_um2_s": float(d_cve[j]),
                    "D_cve_raw_px2": float(d_cve_px[j]),
                    "step_var_median_px2": float(step_var[j]),
                    "n_displacements": int(steps[j]),
                    "cve_D1_um2_s": float(cve["D1_um2_s"][j]),
                    "cve_D2_um2_s": float(cve["D2_um2_s"][j]),
                    "cve_theta_deg": float(cve["theta_deg"][j]),
                    "cve_clipped": bool(cve["clipped"][j]),
                }
        else:
            for i in members:
                out[patches[i].track_id] = {"D_msd_um2_s": nan, "alpha_msd": nan, "D_cve_um2_s": nan,
                                            "D_cve_raw_px2": nan, "step_var_median_px2": nan,
                                            "n_displacements": 0, "cve_D1_um2_s": nan,
                                            "cve_D2_um2_s": nan, "cve_theta_deg": nan, "cve_clipped": True}
    return out


# ---------------------------------------------------------------- tables
def track_changepoints(
    est: TrackEstimate,
    mode: str,
    estimator: Estimator,
    settings: Settings,
    positions_px: np.ndarray | None = None,
    loc_precision_px: np.ndarray | None = None,
    acquisition: Acquisition | None = None,
) -> np.ndarray:
    """Changepoint indices (rows of the track) of one track's per-frame estimates.

    ``mode``: ``"auto"`` (one decided changepoint when the track is no longer than the
    model's trained length, :func:`~.estimation.changepoints.multiple_changepoints`
    beyond), ``"single"``, ``"multiple"`` or ``"none"``. Only pointwise model estimates
    have changepoints. With ``positions_px`` (``(T, 2)`` localized ``(y, x)`` px, one row
    per frame of ``est``) and ``acquisition`` given and ``settings.changepoint_confirm``,
    the changepoints are then confirmed on the displacements
    (:func:`~.estimation.confirmation.confirm_changepoints`; ``loc_precision_px``, ``(T,)``
    px, optional).
    """
    cps = _decided_changepoints(est, mode, estimator, settings)
    if cps.size and settings.changepoint_confirm and positions_px is not None and acquisition is not None:
        cps = confirm_changepoints(
            cps,
            positions_px,
            est.frames,
            acquisition.blur_coefficient,
            loc_precision_px,
            alpha=settings.changepoint_confirm_alpha,
        )
    return cps


def _decided_changepoints(est: TrackEstimate, mode: str, estimator: Estimator, settings: Settings) -> np.ndarray:
    """Changepoints decided on the per-frame estimates alone (before confirmation)."""
    n = est.n_frames
    if mode == "none" or est.method != "model" or not est.pointwise or n < 2:
        return np.zeros(0, dtype=np.int64)
    features = cp.changepoint_features(est.D1_um2_s, est.D2_um2_s)
    if not np.all(np.isfinite(features)):
        return np.zeros(0, dtype=np.int64)
    single = mode == "single" or (mode == "auto" and n <= estimator.max_frames)
    if single:
        c = cp.decide_single_changepoint(
            features,
            penalty=settings.changepoint_penalty or cp.DEFAULT_PENALTY,
            min_effect=settings.changepoint_min_effect,
        )
        return np.zeros(0, dtype=np.int64) if c is None else np.array([c], dtype=np.int64)
    return cp.multiple_changepoints(
        features, penalty=settings.changepoint_penalty_multi, min_effect=settings.changepoint_min_effect
    )


def _tables(
    tracks: pd.DataFrame,
    estimates: list[TrackEstimate],
    classical: dict[int, dict[str, float]],
    acquisition: Acquisition,
    estimator: Estimator,
    settings: Settings,
    mode: str,
    drift_px: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tracks and summary tables; ``drift_px`` (``(T, 2)`` px, optional) is subtracted from
    the positions the changepoints are confirmed on and the isotropy test reads, not from the positions written."""
    by_id = {e.track_id: e for e in estimates}
    table = tracks.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)
    positions = table[["y_px", "x_px"]].to_numpy(dtype=float)
    if drift_px is not None:
        positions = subtract_drift(positions, table["frame"].to_numpy(), drift_px)
    n_rows = len(table)
    d1 = np.empty(n_rows)
    d2 = np.empty(n_rows)
    th = np.empty(n_rows)
    state = np.zeros(n_rows, dtype=np.int64)
    is_cp = np.zeros(n_rows, dtype=bool)
    summary_rows = []
    ids = table["track_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], n_rows]
    for a, b in zip(starts, ends):
        tid = int(ids[a])
        est = by_id[tid]
        frames = table["frame"].to_numpy()[a:b]
        if not np.array_equal(frames, est.frames):
            raise RuntimeError(f"internal error: frames of track {tid} differ between tables")
        d1[a:b], d2[a:b], th[a:b] = est.D1_um2_s, est.D2_um2_s, est.theta_deg
        cps = track_changepoints(
            est,
            mode,
            estimator,
            settings,
            positions_px=positions[a:b],
            loc_precision_px=_column(table, "loc_precision_nm")[a:b] / acquisition.pixel_size_nm,
            acquisition=acquisition,
        )
        state[a:b] = cp.state_labels(b - a, cps)
        is_cp[a + cps] = True
        p_isotropic = isotropy.isotropy_p_value(positions[a:b], frames, state[a:b])  # displacements only
        if est.pointwise and est.method == "model":
            t1, t2, tt = mean_tensor(est.D1_um2_s, est.D2_um2_s, est.theta_deg)
        else:
            t1, t2, tt = est.track_D1_um2_s, est.track_D2_um2_s, est.track_theta_deg
        with np.errstate(invalid="ignore", divide="ignore"):
            anisotropy = 1.0 - t2 / t1 if t1 > 0 else float("nan")
        c = classical[tid]
        summary_rows.append(
            {
                "track_id": tid,
                "n_frames": int(b - a),
                "frame_start": int(frames[0]),
                "frame_end": int(frames[-1]),
                "x_mean_px": float(table["x_px"].to_numpy()[a:b].mean()),
                "y_mean_px": float(table["y_px"].to_numpy()[a:b].mean()),
                "D1_um2_s": t1,
                "D2_um2_s": t2,
                "theta_deg": tt,
                "anisotropy": anisotropy,
                "D_msd_um2_s": c["D_msd_um2_s"],
                "D_cve_um2_s": c["D_cve_um2_s"],
                "alpha_msd": c["alpha_msd"],
                "n_changepoints": int(len(cps)),
                "changepoint_frames": format_changepoint_frames(frames[cps]),
                "model": estimator.model_name if est.method == "model" else "classical",
                "method": est.method,
                **_split_flags(_track_flags(est.flags, table, a, b)),
                "isotropy_p": p_isotropic,
            }
        )
    x = table["x_px"].to_numpy(dtype=float)
    y = table["y_px"].to_numpy(dtype=float)
    out = pd.DataFrame(
        {
            "track_id": ids.astype(np.int64),
            "frame": table["frame"].to_numpy().astype(np.int64),
            "t_s": acquisition.frames_to_s(table["frame"].to_numpy()),
            "x_px": x,
            "y_px": y,
            "x_um": acquisition.px_to_um(x),
            "y_um": acquisition.px_to_um(y),
            "photons": _column(table, "photons"),
            "background": _column(table, "background"),
            "loc_precision_nm": _column(table, "loc_precision_nm"),
            "D1_um2_s": d1,
            "D2_um2_s": d2,
            "theta_deg": th,
            "state": state,
            "is_changepoint": is_cp,
        },
        columns=list(TRACKS_COLUMNS),
    )
    summary = pd.DataFrame(summary_rows, columns=[*SUMMARY_COLUMNS, "method", "warnings", "notes", "isotropy_p"])
    summary = summary.astype({"track_id": np.int64, "n_frames": np.int64, "frame_start": np.int64,
                              "frame_end": np.int64, "n_changepoints": np.int64})
    return out, summary


#: Flags that call for a second look at a track's values (summary column ``warnings``); the others
#: (``windows``, ``gaps``, ``encounter``, ``crowded``, ``edge``, ``classical``, ``rescaled``) say how the track
#: was made and go to ``notes``.
WARNING_FLAGS = ("model_rejected", model_range.FLAG, model_range.NEAR_FLAG, "clipped", "too_short")


def _split_flags(flags: list[str]) -> dict[str, str]:
    """``{"warnings": ..., "notes": ...}``: the track's flags, ``;``-separated, split by :data:`WARNING_FLAGS`."""
    return {"warnings": ";".join(f for f in flags if f in WARNING_FLAGS),
            "notes": ";".join(f for f in flags if f not in WARNING_FLAGS)}


def _track_flags(estimate_flags: tuple[str, ...] | list[str], table: pd.DataFrame, a: int, b: int) -> list[str]:
    """The estimator's flags of a track (rows ``a:b`` of ``table``), plus ``crowded`` (see
    ``tracking.crowding``), ``encounter`` (the track begins or ends where the linker's track
    was cut at a close encounter, ``tracking.encounters``) and ``edge`` (a localization within
    ``tracking.field_edge.EDGE_PX`` of the field's border)."""
    flags = list(estimate_flags)
    if "nearest_other_px" in table.columns:
        if crowded_share(table["nearest_other_px"].to_numpy(dtype=float)[a:b]) > CROWDED_SHARE:
            flags.append("crowded")
    if "encounter_cut" in table.columns and bool(table["encounter_cut"].to_numpy()[a:b].any()):
        flags.append("encounter")
    if "border_px" in table.columns and touches_edge(table["border_px"].to_numpy(dtype=float)[a:b]):
        flags.append("edge")
    return flags


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    if name in table.columns:
        return table[name].to_numpy(dtype=float)
    return np.full(len(table), np.nan)
