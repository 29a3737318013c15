"""The whole job, headless: movie -> tracks -> diffusion tensors -> results tables.

:func:`track_and_estimate` runs, in order (data flow of docs/architecture.md):

1. detection + sub-pixel localization, one frame at a time (frames are read as needed;
   the movie can be a memmap or a lazy TIFF reader);
2. linking (trackpy with gap memory), then tracks are cut where two particles came
   close enough that their identities may have been swapped (``Settings.split_encounters``,
   :mod:`~.tracking.encounters`); tracks (pieces) shorter than ``min_track_length``
   localizations are left out of the results;
3. per-track 11 x 11 patches and displacements (the models' input path);
4. classical estimators per track: MSD ``D`` and ``alpha`` (optimal number of points)
   and the CVE ``D`` (``D_msd_um2_s``, ``alpha_msd``, ``D_cve_um2_s``);
5. the learned model (:class:`~.estimation.estimator.Estimator`): per-frame estimates
   for pointwise models, one tensor per track for sequence models; tracks shorter than
   the model's minimum get the classical combined tensor, flagged;
6. changepoints (pointwise models): on ``log10 D1, log10 D2`` per frame, one decided
   changepoint for tracks no longer than the model's trained length, penalised
   multiple changepoints for longer tracks (``Settings.changepoints``), each then kept
   only if the frame-to-frame displacements on its two sides differ significantly
   (``Settings.changepoint_confirm``);
7. the two tables of the results contract (``results.py``), plus two extra summary
   columns, ``method`` (``model``/``classical``) and ``flags`` (the estimator's, e.g.
   ``too_short``, ``windows``, and ``crowded``: another localization within
   ``tracking.crowding.CROWDED_RADIUS_PX`` (6 px) in more than 5 % of the track's frames,
   ``benchmarks/reports/crowding.md``; and ``encounter``: a piece of a track cut at a close
   encounter).

Progress is reported through ``progress(fraction, message)`` with a fraction that never
decreases, and ``should_stop()`` is polled between steps, before every frame of the
detection and after every model batch; when it returns True, :class:`Cancelled` is raised.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import notices, plausibility
from .acquisition import Acquisition
from .calibration import CALIBRATED_FIELDS, calibrate_movie
from .estimation import changepoints as cp
from .estimation import guard
from .estimation.classical import cve_tensor_batch, msd_diffusion_batch, regular_positions
from .estimation.confirmation import DEFAULT_CONFIRM_ALPHA, confirm_changepoints
from .estimation.estimator import Estimator, TrackEstimate
from .estimation.segments import segments
from .estimation.tensor import mean_tensor
from .io import InputError
from .results import SUMMARY_COLUMNS, TRACKS_COLUMNS, Results, format_changepoint_frames
from .tracking.crowding import CROWDED_SHARE, crowded_share, nearest_other_px
from .tracking.detect import DetectionSettings
from .tracking.encounters import DEFAULT_LLR_THRESHOLD, EncounterRules
from .tracking.link import link
from .tracking.patches import TrackPatches, extract_track_patches
from .tracking.spots import detect_and_localize

__all__ = [
    "Cancelled",
    "NoParticlesFound",
    "PipelineError",
    "Settings",
    "PipelineSettings",
    "track_and_estimate",
    "track_changepoints",
    "segments_table",
    "STEP_FRACTIONS",
]

ProgressCallback = Callable[[float, str], Any]

#: Share of the progress bar given to each step (they add up to 1).
STEP_FRACTIONS: dict[str, float] = {
    "calibrate": 0.03,
    "load": 0.02,
    "detect": 0.52,
    "link": 0.05,
    "estimate": 0.33,
    "tables": 0.05,
}


class Cancelled(Exception):
    """The run was stopped by ``should_stop()``; nothing is returned."""


class PipelineError(InputError):
    """Settings or inputs the pipeline cannot use (one sentence)."""


class NoParticlesFound(InputError):
    """No particle (or no track long enough) was found in the movie."""


@dataclass
class Settings:
    """Everything :func:`track_and_estimate` can be told.

    Attributes
    ----------
    model
        Bundled model name (``aniso``, ``binding``, ``twostate``) or a checkpoint path.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` for the model.
    batch_size
        Model windows per forward pass.
    detection
        :class:`~.tracking.detect.DetectionSettings` (threshold in noise units, minimum
        separation, PSF width).
    max_D_um2_s
        Largest diffusion coefficient expected (um^2/s); sets the linking search range.
    memory_frames
        Frames a particle may vanish and still be linked.
    search_range_px
        Explicit linking search range (px); ``None`` derives it from ``max_D_um2_s``.
    split_encounters
        Cut tracks where two particles came close enough that their identities may have
        been swapped (:mod:`~.tracking.encounters`), so that each track holds one particle
        (on by default: shorter but cleaner tracks, lower end-to-end errors,
        ``benchmarks/reports/encounters.md``).
    encounter_llr_threshold
        Swap test threshold of that splitting (nats): cut when the linked assignment is
        less than ``exp(threshold)`` times as likely as the swapped one.
    min_track_length
        Tracks with fewer localizations are left out of the results. Tracks of at
        least this length but shorter than the model's minimum get the classical
        estimate (flagged ``classical``); below 3 localizations no estimate exists.
    changepoints
        ``"auto"`` (pointwise models: one decided changepoint for tracks no longer than
        the model's trained length, several beyond; none for sequence models),
        ``"single"``, ``"multiple"`` or ``"none"``.
    changepoint_penalty, changepoint_penalty_multi
        Penalty multipliers (``None``: the calibrated defaults of
        :mod:`~.estimation.changepoints`).
    changepoint_min_effect
        Smallest change of ``log10 D`` accepted as a change of state (decades).
    changepoint_confirm
        Keep a changepoint only if the frame-to-frame displacements on its two sides
        differ significantly (:func:`~.estimation.confirmation.confirm_changepoints`).
    changepoint_confirm_alpha
        Family-wise error rate per track of that confirmation.
    chunk_localizations
        Tracks are estimated in chunks of about this many localizations (whole tracks,
        in order of their first frame): patches of one chunk only are held in memory
        (~600 bytes per localization for 11 x 11 patches).
    measure
        Acquisition fields to measure from the movie before tracking
        (:func:`~.calibration.calibrate_movie`; any of
        :data:`~.calibration.CALIBRATED_FIELDS`): the callers pass the fields the user and
        the file did not give. Empty: the acquisition is used as given.
    trust_model
        Report the model's values even when the guard (:mod:`~.estimation.guard`) finds
        the model biased on this movie or the movie outside its training range.
    """

    model: str = "aniso"
    device: str = "auto"
    batch_size: int = 256
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    max_D_um2_s: float = 6.0
    memory_frames: int = 2
    search_range_px: float | None = None
    split_encounters: bool = True
    encounter_llr_threshold: float = DEFAULT_LLR_THRESHOLD
    min_track_length: int = 5
    changepoints: str = "auto"
    changepoint_penalty: float | None = None
    changepoint_penalty_multi: float | None = None
    changepoint_min_effect: float = cp.DEFAULT_MIN_EFFECT
    changepoint_confirm: bool = True
    changepoint_confirm_alpha: float = DEFAULT_CONFIRM_ALPHA
    chunk_localizations: int = 200_000
    measure: tuple[str, ...] = ()
    trust_model: bool = False

    def __post_init__(self) -> None:
        self.measure = tuple(self.measure)
        unknown = set(self.measure) - set(CALIBRATED_FIELDS)
        if unknown:
            raise PipelineError(f"cannot measure {sorted(unknown)} from a movie; measurable: {list(CALIBRATED_FIELDS)}")
        if self.changepoints not in ("auto", "single", "multiple", "none"):
            raise PipelineError(
                f"changepoints must be 'auto', 'single', 'multiple' or 'none', got {self.changepoints!r}"
            )
        if (
            isinstance(self.min_track_length, bool)
            or int(self.min_track_length) != self.min_track_length
            or self.min_track_length < 1
        ):
            raise PipelineError(f"min_track_length must be a whole number >= 1, got {self.min_track_length!r}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise PipelineError(f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        if isinstance(self.chunk_localizations, bool) or int(self.chunk_localizations) < 1:
            raise PipelineError(f"chunk_localizations must be a whole number >= 1, got {self.chunk_localizations!r}")
        if not (0.0 < float(self.changepoint_confirm_alpha) < 1.0):
            raise PipelineError(
                f"changepoint_confirm_alpha must be between 0 and 1, got {self.changepoint_confirm_alpha!r}"
            )
        if math.isnan(float(self.encounter_llr_threshold)):
            raise PipelineError("encounter_llr_threshold must be a number, got nan")
        if not (math.isfinite(float(self.max_D_um2_s)) and self.max_D_um2_s > 0):
            raise PipelineError(f"max_D_um2_s must be a positive number, got {self.max_D_um2_s!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary (for the results' meta data)."""
        d = dataclasses.asdict(self)
        d["detection"] = dataclasses.asdict(self.detection)
        return d


#: Alias of :class:`Settings` (the name some callers use).
PipelineSettings = Settings


class _Progress:
    """Maps each step's own 0..1 progress into the overall bar; polls ``should_stop``."""

    def __init__(self, callback: ProgressCallback | None, should_stop: Callable[[], bool] | None) -> None:
        self.callback = callback
        self.should_stop = should_stop
        self.done = 0.0
        self.last = 0.0
        self.step = ""
        self.share = 0.0

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("the run was cancelled")

    def begin(self, step: str, message: str) -> None:
        self.check()
        self.step = step
        self.share = STEP_FRACTIONS[step]
        self.report(0.0, message)

    def report(self, fraction: float, message: str) -> None:
        value = self.done + self.share * min(max(float(fraction), 0.0), 1.0)
        value = min(max(value, self.last), 1.0)
        self.last = value
        if self.callback is not None:
            self.callback(value, message)

    def inner(self, fraction: float, message: str) -> None:
        """Callback handed to the steps: reports, then raises if asked to stop."""
        self.report(fraction, message)
        self.check()

    def end(self) -> None:
        self.done += self.share
        self.share = 0.0


# ---------------------------------------------------------------- pipeline
def track_and_estimate(
    movie: Any,
    acquisition: Acquisition,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    estimator: Estimator | None = None,
) -> Results:
    """Detect, localize, link and estimate every track of a movie.

    Parameters
    ----------
    movie
        ``(T, Y, X)`` camera movie in ADU: numpy array, memmap or any array-like whose
        ``movie[t]`` returns one frame (``io.read_movie(path).data``).
    acquisition
        Pixel size, frame interval, PSF, camera conversion of this movie.
    settings
        :class:`Settings` (or a dict of its fields; ``None`` values are ignored);
        defaults when ``None``.
    progress
        Optional ``progress(fraction, message)``; ``fraction`` in [0, 1], never decreasing.
    should_stop
        Optional ``should_stop() -> bool``; True stops the run with :class:`Cancelled`.
    estimator
        An already loaded :class:`Estimator` to reuse (``settings.model`` and
        ``settings.device`` are then ignored).

    Returns
    -------
    Results
        ``tracks`` and ``summary`` in the results contract (plus the summary columns
        ``method`` and ``flags``), ``meta`` with the acquisition, model, settings,
        warnings and timings.

    Raises
    ------
    PipelineError
        Not a ``(T, Y, X)`` movie, an empty movie, bad settings.
    NoParticlesFound
        Nothing detected, or no track of ``min_track_length`` localizations.
    Cancelled
        ``should_stop()`` returned True.
    CheckpointError, EstimatorError
        The model cannot be loaded or the device does not exist.
    """
    if settings is None:
        settings = Settings()
    elif isinstance(settings, Mapping):
        try:
            settings = Settings(**{k: v for k, v in settings.items() if v is not None})
        except TypeError as exc:
            raise PipelineError(f"unknown pipeline setting ({exc})") from None
    if not isinstance(acquisition, Acquisition):
        raise PipelineError("acquisition must be an Acquisition")
    shape = _check_movie(movie)
    bar = _Progress(progress, should_stop)
    timings: dict[str, float] = {}
    messages: list[str] = []
    measured = None
    # units, NaN frames and the camera scale before any work (plausibility.py)
    plausibility.check_units(acquisition)
    sample = plausibility.sample_frames(movie)
    plausibility.check_scaled_float(sample, plausibility.movie_dtype(movie), acquisition, settings.measure)
    bar.begin("calibrate", "measuring the camera and the PSF from the movie")
    if settings.measure:
        # the acquisition the user and the file did not give, measured from the frames
        t0 = time.perf_counter()
        given = set(CALIBRATED_FIELDS) - set(settings.measure)
        measured = calibrate_movie(movie, acquisition, given=given)
        acquisition = measured.apply(acquisition, given)
        for note in measured.notes:
            _warn(note)
        messages += list(measured.notes)
        timings["calibrate_s"] = time.perf_counter() - t0
    origins = {name: "measured" for name in settings.measure}
    plausibility.check_units(acquisition, origins)
    plausibility.check_offset(sample, acquisition, origins)
    particles_from_light = plausibility.particles_per_frame(sample, acquisition)
    del sample
    messages += notices.warn_all(plausibility.acquisition_warnings(acquisition, origins))
    bar.end()

    # 0 - model first, so a bad model name or device fails before the long part
    bar.begin("load", "loading the model")
    t0 = time.perf_counter()
    if estimator is None:
        estimator = Estimator(settings.model, device=settings.device, batch_size=settings.batch_size)
    # the guard (step 6) decides what an acquisition outside the model's range means
    acquisition_messages = estimator.check_acquisition(acquisition, warn=False)
    timings["load_s"] = time.perf_counter() - t0
    bar.end()

    # 1 - detection and localization
    bar.begin("detect", f"detecting particles in {shape[0]} frames")
    t0 = time.perf_counter()
    locs = detect_and_localize(movie, acquisition, settings.detection, progress=bar.report, should_stop=should_stop)
    if locs.attrs.get("stopped_early"):
        raise Cancelled("the run was cancelled")
    bar.end()
    if len(locs):
        locs["nearest_other_px"] = nearest_other_px(locs["frame"].to_numpy(), locs["y_px"].to_numpy(),
                                                    locs["x_px"].to_numpy())
    timings["detect_localize_s"] = time.perf_counter() - t0
    messages += notices.warn_all(plausibility.localization_warnings(locs, acquisition))
    if len(locs) == 0:
        raise NoParticlesFound(
            f"no particles were found in the {shape[0]} frames of the movie; lower the detection threshold "
            f"(now {settings.detection.threshold_snr:g} x noise) or check the PSF width and camera settings"
        )

    # 2 - linking
    bar.begin("link", f"linking {len(locs)} localizations")
    t0 = time.perf_counter()
    linked = link(  # its trouble (trackpy's crowded groups) is warned as it happens, and kept in messages
        locs,
        acquisition,
        max_D_um2_s=settings.max_D_um2_s,
        memory_frames=settings.memory_frames,
        min_track_length=settings.min_track_length,
        search_range_px=settings.search_range_px,
        split_encounters=settings.split_encounters,
        encounter_rules=EncounterRules(llr_threshold=settings.encounter_llr_threshold),
    )
    messages += list(linked.messages)
    tracks = linked.tracks[~linked.tracks["is_short"]].reset_index(drop=True)
    messages += notices.warn_all(plausibility.linking_warnings(len(locs), len(tracks), shape, linked.search_range_px,
                                                        settings.min_track_length, particles_from_light))
    timings["link_s"] = time.perf_counter() - t0
    bar.end()
    if len(tracks) == 0:
        raise NoParticlesFound(
            f"{len(locs)} localizations were found but none formed a track of at least "
            f"{settings.min_track_length} frames; lower min_track_length or raise max_D_um2_s"
        )

    # 3, 4, 5 - patches, classical estimators, model: in chunks of tracks so that memory
    # stays bounded on long movies (each chunk reads only the frames its tracks use)
    bar.begin("estimate", f"estimating {tracks['track_id'].nunique()} tracks")
    chunks = _track_chunks(tracks, settings.chunk_localizations)
    classical: dict[int, dict[str, float]] = {}
    estimates: list[TrackEstimate] = []
    for k in ("patches_s", "classical_s", "model_s"):
        timings[k] = 0.0
    n_chunks = len(chunks)
    for i, chunk in enumerate(chunks):
        base, width = i / n_chunks, 1.0 / n_chunks
        bar.inner(base, f"cutting patches (part {i + 1}/{n_chunks})")
        t0 = time.perf_counter()
        patches = extract_track_patches(movie, chunk, acquisition, patch_size=estimator.patch_size)
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
        del patches
    bar.end()

    # 6 - the guard: is the model biased on this movie's tracks, or the movie out of its range?
    precision_px = _column(tracks, "loc_precision_nm") / acquisition.pixel_size_nm
    loc_var = pd.Series(precision_px**2).groupby(tracks["track_id"].to_numpy()).mean().to_dict()
    decision = guard_model(estimates, classical, acquisition, estimator, acquisition_messages, loc_var)
    if decision.rejected:
        _warn(decision.reason)
        messages.append(decision.reason)
        if not settings.trust_model:
            estimates = [_rejected(e, classical[e.track_id]) if e.method == "model" else e for e in estimates]

    # 7, 8 - changepoints and tables
    bar.begin("tables", "changepoints and result tables")
    t0 = time.perf_counter()
    mode = settings.changepoints
    if mode == "auto":
        mode = "auto" if estimator.pointwise else "none"
    tracks_table, summary = _tables(tracks, estimates, classical, acquisition, estimator, settings, mode)
    messages += notices.warn_all(plausibility.estimate_warnings(summary))
    timings["tables_s"] = time.perf_counter() - t0
    bar.report(1.0, "done")
    bar.end()

    meta = {
        "acquisition": acquisition.to_dict(),
        "acquisition_measured": None if measured is None else measured.to_dict(),
        "guard": {**decision.to_dict(), "model_reported": not decision.rejected or settings.trust_model},
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
        "n_frames": int(shape[0]),
        "n_localizations_detected": int(len(locs)),
        "n_tracks_linked": int(linked.n_tracks),
        "search_range_px": float(linked.search_range_px),
        "warnings": messages,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }
    return Results(tracks_table, summary, meta)


def guard_model(
    estimates: list[TrackEstimate],
    classical: dict[int, dict[str, float]],
    acquisition: Acquisition,
    estimator: Estimator,
    acquisition_messages: list[str],
    loc_var_px2: Mapping[int, float],
) -> guard.GuardDecision:
    """The guard's verdict on the model's estimates of this movie's tracks.

    Compares the model's mean diffusivity ``(D1 + D2) / 2`` per track with the unclipped
    CVE of the same track (``classical[id]["D_cve_raw_px2"]``, see
    :func:`_classical_estimates`) over the whole population (:mod:`~.estimation.guard`);
    ``loc_var_px2`` the mean squared localization precision (px^2) of each track.
    """
    used = [e for e in estimates if e.method == "model" and e.track_id in classical]
    d_model = acquisition.diffusion_to_px2_per_frame(
        np.array([0.5 * (e.track_D1_um2_s + e.track_D2_um2_s) for e in used], dtype=float))
    d_cve = np.array([classical[e.track_id]["D_cve_raw_px2"] for e in used], dtype=float)
    loc_var = np.array([loc_var_px2.get(e.track_id, np.nan) for e in used], dtype=float)
    n_disp = np.array([classical[e.track_id]["n_displacements"] for e in used], dtype=float)
    bias = guard.population_ratio(d_model, d_cve, loc_var, n_disp, blur=acquisition.blur_coefficient)
    return guard.decide(bias, acquisition_messages, model_name=estimator.model_name)


def _rejected(model: TrackEstimate, classical: Mapping[str, Any]) -> TrackEstimate:
    """The CVE tensor of a track standing in for a rejected model's estimate.

    The CVE needs nothing of the optics or the camera (blur and localization noise cancel),
    so it is the estimate to trust where the model is not; the blur-moment estimator
    would assume the Gaussian PSF of the acquisition. Flagged ``classical`` and
    ``model_rejected`` (``clipped`` when the tensor was not positive definite).
    """
    n = len(model.frames)
    d1, d2, theta = (float(classical[k]) for k in ("cve_D1_um2_s", "cve_D2_um2_s", "cve_theta_deg"))
    flags = ["classical", "model_rejected"]
    if classical.get("cve_clipped"):
        flags.append("clipped")
    flags += [f for f in model.flags if f == "gaps"]
    return TrackEstimate(
        track_id=model.track_id, frames=model.frames, D1_um2_s=np.full(n, d1), D2_um2_s=np.full(n, d2),
        theta_deg=np.full(n, theta), track_D1_um2_s=d1, track_D2_um2_s=d2, track_theta_deg=theta,
        method="classical", flags=tuple(flags), n_windows=0, pointwise=False,
    )


def _warn(message: str) -> None:
    """Issue a library warning (:mod:`~.notices`) the CLI prints at once and the widget shows."""
    notices.warn(message, stacklevel=4)


def _check_movie(movie: Any) -> tuple[int, int, int]:
    shape = getattr(movie, "shape", None)
    if shape is None:
        raise PipelineError("the movie must be a (T, Y, X) array of camera counts")
    if len(shape) != 3:
        raise PipelineError(f"the movie must be a (T, Y, X) stack of frames, got an array of shape {tuple(shape)}")
    if min(int(s) for s in shape) < 1:
        raise PipelineError(f"the movie is empty (shape {tuple(shape)})")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _track_chunks(tracks: pd.DataFrame, max_localizations: int) -> list[pd.DataFrame]:
    """Whole tracks grouped, in order of their first frame, into chunks of about
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
    if len(groups) == 1:
        return [tracks]
    return [tracks[tracks["track_id"].isin(g)] for g in groups]


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
            d_cve_px = 0.5 * np.trace(cve["tensor_px2_frame"], axis1=1, axis2=2)
            d_cve = np.clip(acquisition.diffusion_to_um2_s(d_cve_px), 0.0, None)
            steps = np.all(np.isfinite(np.diff(stack, axis=1)), axis=2).sum(axis=1)
            for j, i in enumerate(members):
                out[patches[i].track_id] = {
                    "D_msd_um2_s": float(msd["D_um2_s"][j]),
                    "alpha_msd": float(msd["alpha"][j]),
                    "D_cve_um2_s": float(d_cve[j]),
                    "D_cve_raw_px2": float(d_cve_px[j]),
                    "n_displacements": int(steps[j]),
                    "cve_D1_um2_s": float(cve["D1_um2_s"][j]),
                    "cve_D2_um2_s": float(cve["D2_um2_s"][j]),
                    "cve_theta_deg": float(cve["theta_deg"][j]),
                    "cve_clipped": bool(cve["clipped"][j]),
                }
        else:
            for i in members:
                out[patches[i].track_id] = {"D_msd_um2_s": nan, "alpha_msd": nan, "D_cve_um2_s": nan,
                                            "D_cve_raw_px2": nan, "n_displacements": 0, "cve_D1_um2_s": nan,
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
) -> tuple[pd.DataFrame, pd.DataFrame]:
    by_id = {e.track_id: e for e in estimates}
    table = tracks.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)
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
            positions_px=np.column_stack(
                [table["y_px"].to_numpy(dtype=float)[a:b], table["x_px"].to_numpy(dtype=float)[a:b]]
            ),
            loc_precision_px=_column(table, "loc_precision_nm")[a:b] / acquisition.pixel_size_nm,
            acquisition=acquisition,
        )
        state[a:b] = cp.state_labels(b - a, cps)
        is_cp[a + cps] = True
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
                "flags": ";".join(_track_flags(est.flags, table, a, b)),
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
    summary = pd.DataFrame(summary_rows, columns=[*SUMMARY_COLUMNS, "method", "flags"])
    summary = summary.astype({"track_id": np.int64, "n_frames": np.int64, "frame_start": np.int64,
                              "frame_end": np.int64, "n_changepoints": np.int64})
    return out, summary


def _track_flags(estimate_flags: tuple[str, ...] | list[str], table: pd.DataFrame, a: int, b: int) -> list[str]:
    """The estimator's flags of a track (rows ``a:b`` of ``table``), plus ``crowded`` (see
    ``tracking.crowding``) and ``encounter`` (the track begins or ends where the linker's track
    was cut at a close encounter, ``tracking.encounters``)."""
    flags = list(estimate_flags)
    if "nearest_other_px" in table.columns:
        if crowded_share(table["nearest_other_px"].to_numpy(dtype=float)[a:b]) > CROWDED_SHARE:
            flags.append("crowded")
    if "encounter_cut" in table.columns and bool(table["encounter_cut"].to_numpy()[a:b].any()):
        flags.append("encounter")
    return flags


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    if name in table.columns:
        return table[name].to_numpy(dtype=float)
    return np.full(len(table), np.nan)


def segments_table(results: Results) -> pd.DataFrame:
    """Per-segment states of every track of a results table.

    Returns
    -------
    pandas.DataFrame
        ``track_id, state, start_frame, end_frame, n_frames, D1_um2_s, D2_um2_s,
        theta_deg`` (the segment's time-averaged tensor of the per-frame estimates).
    """
    parts = []
    for tid, rows in results.tracks.groupby("track_id", sort=True):
        rows = rows.sort_values("frame")
        labels = rows["state"].to_numpy()
        cps = np.flatnonzero(np.diff(labels) != 0) + 1
        seg = segments(cps, rows["D1_um2_s"], rows["D2_um2_s"], rows["theta_deg"], frames=rows["frame"].to_numpy())
        seg.insert(0, "track_id", int(tid))
        parts.append(seg)
    columns = ["track_id", "state", "start_frame", "end_frame", "n_frames", "D1_um2_s", "D2_um2_s", "theta_deg"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]
