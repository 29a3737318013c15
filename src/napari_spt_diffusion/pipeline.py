"""The whole job, headless: movie -> tracks -> diffusion tensors -> results tables.

:func:`track_and_estimate` runs, in order (data flow of docs/architecture.md):

1. detection + sub-pixel localization, one frame at a time (frames are read as needed;
   the movie can be a memmap or a lazy TIFF reader);
2. linking (trackpy with gap memory, then relinked with each particle's own diffusivity,
   ``Settings.motion_linking``, :mod:`~.tracking.motion_link`), then tracks are cut where two particles came
   close enough that their identities may have been swapped (``Settings.split_encounters``,
   :mod:`~.tracking.encounters`); tracks (pieces) shorter than ``min_track_length``
   localizations are left out of the results;
3. per-track 11 x 11 patches and displacements (the models' input path); steps 3-8 are
   :func:`~.estimation_stage.estimate_stage`, shared with tracks imported from other tools
   (:mod:`~.estimate_tracks`);
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
   ``benchmarks/reports/crowding.md``; ``encounter``: a piece of a track cut at a close
   encounter; and ``edge``: a localization closer than ``tracking.field_edge.EDGE_PX`` (3 px) to
   the outermost pixel centres).

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

from . import notices, plausibility, streaming
from .accel.torch_spots import SPOT_BACKENDS, spot_function
from .acquisition import Acquisition
from .calibration import CALIBRATED_FIELDS
from .estimation import changepoints as cp
from .estimation.confirmation import DEFAULT_CONFIRM_ALPHA
from .estimation.estimator import Estimator
from .estimation.segments import segments
from .estimation_fallback import estimate_with_fallback
from .estimation_stage import (  # noqa: F401 - the stage's helpers, under the names callers know
    _column,
    _tables,
    _track_flags,
    calibrate_and_load,
    estimate_stage,
    guard_model,
    prepare_acquisition,
    track_changepoints,
)
from .io import InputError
from .results import Results
from .tracking.crowding import nearest_other_px
from .tracking.detect import DetectionSettings
from .tracking.encounters import DEFAULT_LLR_THRESHOLD, EncounterRules
from .tracking.link import link

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
        ``"auto"``, ``"cpu"`` or ``"cuda"``: the model's device, and on a CUDA GPU also that of
        the detection and single-spot fits (:mod:`~.accel`; the overlap pass stays on the CPU).
    spot_backend
        ``"auto"`` (the torch spot path when ``device`` resolves to a CUDA GPU, the numpy/scipy
        path otherwise), ``"numpy"`` or ``"torch"`` (also on the CPU: for testing; slower there).
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
    motion_linking
        Relink trackpy's nearest-neighbour tracks by the likelihood of each step under the
        particle's own diffusivity (:mod:`~.tracking.motion_link`; on by default).
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
    chunk_frames
        Long movies: detect in windows of this many frames and spill the localizations to a
        Parquet file in the system's temporary folder (``TMPDIR``), keeping in memory only
        what linking needs (:mod:`~.streaming`; same results). ``None`` (default): chunks of
        :data:`~.streaming.DEFAULT_CHUNK_FRAMES` frames for movies of more than
        :data:`~.streaming.AUTO_CHUNK_ABOVE_FRAMES` frames, the whole movie at once otherwise;
        ``0``: never chunk. A chunked run also estimates tracks in chunks of at most
        :data:`~.streaming.STREAM_CHUNK_LOCALIZATIONS` localizations (``chunk_localizations``).
    chunk_localizations
        Tracks are estimated in chunks of about this many localizations (whole tracks,
        in order of their first frame): patches of one chunk only are held in memory
        (~600 bytes per localization for 11 x 11 patches).
    measure
        Acquisition fields to measure from the movie before tracking
        (:func:`~.calibration.calibrate_movie`; any of
        :data:`~.calibration.CALIBRATED_FIELDS`): the callers pass the fields the user and
        the file did not give. Empty: the acquisition is used as given.
    read_noise_known
        The acquisition's read noise was given by the user (``--read-noise-e``), not assumed: the
        calibration's uncertainties then leave out the 0-3 e- range an assumed read noise may span.
    trust_model
        Report the model's values even when the guard (:mod:`~.estimation.guard`) finds
        the model biased on this movie or the movie outside its training range.
    rescale_model
        Where the guard accepts the model but shows it off by more than
        :data:`~.estimation.rescale.MIN_RESCALE` (its interval of the bias factor excludes 1),
        divide the model's D1 and D2 by that factor (:mod:`~.estimation.rescale`; flag
        ``rescaled``, ``meta["guard"]["rescaled_by"]``); ``False`` keeps the model's values.
    model_range_check
        Report the classical values (CVE) of the tracks whose CVE shows them faster or slower than the range of
        diffusion coefficients the model was trained on (:mod:`~.estimation.model_range`; flag
        ``beyond_model_range``, ``meta["model_range"]``), and leave them out of the guard's population test;
        ``False``: no such check (the model's values for every track).
    drift_correction
        Subtract the ensemble-mean displacement per frame (:mod:`~.estimation.drift`) from
        the positions behind every estimate (off by default: it biases D low by about
        ``1/n`` with ``n`` tracks per frame); recorded in ``meta["drift_correction"]``.
    psf_units
        The model's inputs in units of the PSF (:mod:`~.estimation.psf_units`): ``"on"``
        (patches resampled so that the PSF has the model's training width, displacements and
        D scaled to match), ``"auto"`` (default: on when the movie's PSF width lies outside
        what the model was trained for, :func:`~.estimation.psf_units.scale_for`) or ``"off"``;
        the classical estimators always use the movie's pixels (docs/models.md).
    model_switch
        When the movie's acquisition lies outside the training range of the bundled model asked
        for and inside that of its bundled model for any microscope
        (:data:`~.estimation.model_choice.ALTERNATIVES`), run that one instead (recorded in
        ``meta["model_switch"]``); and where the guard rejects the bundled model asked for, run that
        one after it and report it if the guard accepts it (:mod:`~napari_spt_diffusion.estimation_fallback`).
        ``False`` keeps the model asked for in both cases.
    """

    model: str = "aniso"
    device: str = "auto"
    spot_backend: str = "auto"
    batch_size: int = 256
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    max_D_um2_s: float = 6.0
    memory_frames: int = 2
    search_range_px: float | None = None
    motion_linking: bool = True
    split_encounters: bool = True
    encounter_llr_threshold: float = DEFAULT_LLR_THRESHOLD
    min_track_length: int = 5
    changepoints: str = "auto"
    changepoint_penalty: float | None = None
    changepoint_penalty_multi: float | None = None
    changepoint_min_effect: float = cp.DEFAULT_MIN_EFFECT
    changepoint_confirm: bool = True
    changepoint_confirm_alpha: float = DEFAULT_CONFIRM_ALPHA
    chunk_frames: int | None = None
    chunk_localizations: int = 200_000
    measure: tuple[str, ...] = ()
    read_noise_known: bool = False
    trust_model: bool = False
    rescale_model: bool = True
    model_range_check: bool = True
    drift_correction: bool = False
    psf_units: str = "auto"
    model_switch: bool = True

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
        if not isinstance(self.model_switch, bool):
            raise PipelineError(f"model_switch must be True or False, got {self.model_switch!r}")
        if self.spot_backend not in SPOT_BACKENDS:
            raise PipelineError(f"spot_backend must be one of {', '.join(SPOT_BACKENDS)}, got {self.spot_backend!r}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise PipelineError(f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        if self.chunk_frames is not None and (isinstance(self.chunk_frames, bool) or int(self.chunk_frames) < 0
                                              or int(self.chunk_frames) != self.chunk_frames):
            raise PipelineError(f"chunk_frames must be a whole number >= 0, got {self.chunk_frames!r}")
        if isinstance(self.chunk_localizations, bool) or int(self.chunk_localizations) < 1:
            raise PipelineError(f"chunk_localizations must be a whole number >= 1, got {self.chunk_localizations!r}")
        if not (0.0 < float(self.changepoint_confirm_alpha) < 1.0):
            raise PipelineError(
                f"changepoint_confirm_alpha must be between 0 and 1, got {self.changepoint_confirm_alpha!r}"
            )
        if math.isnan(float(self.encounter_llr_threshold)):
            raise PipelineError("encounter_llr_threshold must be a number, got nan")
        if self.psf_units not in ("auto", "on", "off"):
            raise PipelineError(f"psf_units must be 'auto', 'on' or 'off', got {self.psf_units!r}")
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
    movie = streaming.releasing(movie)  # a memory map's pages read are dropped as the run goes
    chunk_frames = streaming.chunk_frames_for(shape[0], settings.chunk_frames)
    if chunk_frames is None:
        return _run(movie, acquisition, settings, _Progress(progress, should_stop), estimator, None)
    if settings.chunk_localizations > streaming.STREAM_CHUNK_LOCALIZATIONS:  # smaller chunks of tracks too
        settings = dataclasses.replace(settings, chunk_localizations=streaming.STREAM_CHUNK_LOCALIZATIONS)
    with streaming.spill_folder() as folder:
        return _run(movie, acquisition, settings, _Progress(progress, should_stop), estimator, (chunk_frames, folder))


def _run(
    movie: Any, acquisition: Acquisition, settings: Settings, bar: _Progress, estimator: Estimator | None,
    chunking: tuple[int, Any] | None,
) -> Results:
    """:func:`track_and_estimate` after its checks; ``chunking``: ``(chunk_frames, spill folder)`` or ``None``."""
    shape = _check_movie(movie)
    should_stop = bar.should_stop
    plausibility.check_settings(settings.detection.threshold_snr, settings.max_D_um2_s)
    # 0 - calibration, then the model, so a bad model name or device fails before the long part
    prepared, estimator, acquisition_messages, timings = calibrate_and_load(
        movie, acquisition, settings, estimator, bar)
    acquisition, measured = prepared.acquisition, prepared.measured
    particles_from_light = prepared.particles_from_light
    messages: list[str] = list(prepared.messages)

    # 1 - detection and localization (in windows of frames, spilled to disk, for long movies)
    bar.begin("detect", f"detecting particles in {shape[0]} frames")
    t0 = time.perf_counter()
    spill = None
    detect = spot_function(settings.device, settings.spot_backend)  # the torch path on a CUDA GPU
    if chunking is None:
        locs = detect(movie, acquisition, settings.detection, progress=bar.report, should_stop=should_stop)
        if locs.attrs.get("stopped_early"):
            raise Cancelled("the run was cancelled")
        if len(locs):
            locs["nearest_other_px"] = nearest_other_px(locs["frame"].to_numpy(), locs["y_px"].to_numpy(),
                                                        locs["x_px"].to_numpy())
        n_locs = len(locs)
        checked = locs
    else:
        spill = streaming.detect_to_spill(movie, acquisition, settings.detection, chunking[0], chunking[1],
                                          progress=bar.report, should_stop=should_stop, detect=detect)
        if spill is None:
            raise Cancelled("the run was cancelled")
        n_locs = spill.n
        checked = spill.columns(["photons", "background", "loc_precision_nm"])
        locs = spill.linking_table()
    bar.end()
    timings["detect_localize_s"] = time.perf_counter() - t0
    messages += notices.warn_all(plausibility.localization_warnings(checked, acquisition))
    del checked
    if n_locs == 0:
        raise NoParticlesFound(
            f"no particles were found in the {shape[0]} frames of the movie; lower the detection threshold "
            f"(now {settings.detection.threshold_snr:g} x noise, --threshold-snr) or check the PSF width "
            "(--psf-sigma-nm) and the camera (--gain-adu-per-e, --offset-adu)"
            + (f"; the light of each frame is that of about {particles_from_light:,.0f} particles, which may overlap "
               "too much to be told apart" if particles_from_light >= 30 else "")
        )

    # 2 - linking
    bar.begin("link", f"linking {n_locs} localizations")
    t0 = time.perf_counter()
    linked = link(  # its trouble (trackpy's crowded groups) is warned as it happens, and kept in messages
        locs,
        acquisition,
        max_D_um2_s=settings.max_D_um2_s,
        memory_frames=settings.memory_frames,
        min_track_length=settings.min_track_length,
        search_range_px=settings.search_range_px,
        split_encounters=settings.split_encounters,
        encounter_rules=EncounterRules(llr_threshold=settings.encounter_llr_threshold,
                                       motion_linking=settings.motion_linking),
    )
    del locs
    messages += list(linked.messages)
    n_linked, search_range = linked.n_tracks, linked.search_range_px
    tracks = linked.tracks[~linked.tracks["is_short"]].reset_index(drop=True)
    del linked
    streaming.trim_memory()
    messages += notices.warn_all(plausibility.linking_warnings(n_locs, len(tracks), shape, search_range,
                                                        settings.min_track_length, particles_from_light))
    timings["link_s"] = time.perf_counter() - t0
    bar.end()
    if len(tracks) == 0:
        raise NoParticlesFound(
            f"{n_locs} localizations were found but none formed a track of at least "
            f"{settings.min_track_length} frames; lower min_track_length or raise max_D_um2_s"
        )

    # 3-8 - patches, classical estimators, model, guard, changepoints, tables (estimation_stage)
    stage, fallback = estimate_with_fallback(movie, tracks, acquisition, estimator, settings, bar,
                                             acquisition_messages, complete=None if spill is None else spill.complete)
    if fallback is not None:  # the guard rejected the model: its model for any microscope is reported
        prepared.model_switch = fallback
    messages += stage.messages
    timings.update(stage.timings)

    meta = {
        "acquisition": acquisition.to_dict(),
        "acquisition_measured": None if measured is None else measured.to_dict(),
        **stage.meta,
        "model_switch": None if prepared.model_switch is None else prepared.model_switch.to_dict(),
        "n_frames": int(shape[0]),
        "chunk_frames": None if chunking is None else int(chunking[0]),
        "n_localizations_detected": int(n_locs),
        "n_tracks_linked": int(n_linked),
        "search_range_px": float(search_range),
        "warnings": messages,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }
    return Results(stage.tracks, stage.summary, meta)


def _check_movie(movie: Any) -> tuple[int, int, int]:
    shape = getattr(movie, "shape", None)
    if shape is None:
        raise PipelineError("the movie must be a (T, Y, X) array of camera counts")
    if len(shape) != 3:
        raise PipelineError(f"the movie must be a (T, Y, X) stack of frames, got an array of shape {tuple(shape)}")
    if min(int(s) for s in shape) < 1:
        raise PipelineError(f"the movie is empty (shape {tuple(shape)})")
    return int(shape[0]), int(shape[1]), int(shape[2])


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
