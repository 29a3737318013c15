"""Full-field simulated movies with ground truth in the results contract.

Particles live in the field of view plus a margin around it. They are present at the
start (stationary density), are born as a Poisson process at every frame anywhere in
that extended area, bleach after a geometric lifetime, and diffuse in and out of the
field, so particles both appear inside the field and enter across its borders. A particle
that leaves the field ends its track; if it comes back it starts a new track.

Optional blinking switches a particle off and on (a two-state Markov chain per frame);
a blinked-off frame has no light and no row in the truth table, but does not end the
track. Each particle's frame is rendered only in a box of about +-4 PSF sigma around
its motion-blurred footprint, its photons drawn there (Poisson), and the boxes added
into the frame before background and camera noise: the cost grows with the number of
particles, not with the movie's area.

Ground truth (:attr:`SimulatedMovie.truth`, ``model = "truth"``)
-------------------------------------------------------------------
``tracks``: the contract's columns (``results.TRACKS_COLUMNS``) with the true frame
positions (mean of the exposed sub-positions, pixels and um), the expected signal photons
per frame, the background photons per pixel, ``loc_precision_nm`` = Cramer-Rao bound of a
static spot with those photons (:func:`render.localization_crlb_nm`), the per-frame
D1/D2/theta labels, ``state`` = segment index along the track and ``is_changepoint`` on
the first row of each new segment. Two extra columns follow: ``particle_id`` (several
tracks can share a particle that left and re-entered) and ``state_kind`` (physical
state: 0 for single-state particles; binding 0 bound / 1 unbound; two-state 0 / 1).

``summary``: the contract's columns (``results.SUMMARY_COLUMNS``). For a track with
one segment, D1/D2/theta are its labels. For a track with several segments they are the
eigen-decomposition of the time average of the per-frame tensors over the track's rows
(a duration-weighted tensor mean; theta of an isotropic mean is 0). ``D_msd_um2_s``,
``D_cve_um2_s`` and ``alpha_msd`` are NaN (no estimate), ``model`` is ``"truth"``; an
extra column ``particle_model`` names the generating model of the particle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..acquisition import Acquisition
from ..results import SUMMARY_COLUMNS, TRACKS_COLUMNS, Results, format_changepoint_frames
from .motion_models import MIXED, MIXED_PARTS, get_motion_model, movie_model_names
from .render import (
    _poisson_variable,  # exact per-box photon draws
    camera_image_from_counts,
    expected_photons,
    localization_crlb_nm,
)
from .trajectories import (
    BOUND_D_RANGE_UM2_S,
    D2_OVER_D1_RANGE,
    UNBOUND_D1_RANGE_UM2_S,
    SimulationError,
    _frame_labels,
    _integrate,
    as_generator,
    markov_chain,
    stationary_distribution,
    transition_matrix,
)

__all__ = [
    "MovieOptions",
    "MoviePlan",
    "SimulatedMovie",
    "plan_movie",
    "iter_movie_frames",
    "simulate_movie",
]

#: Default D1 range (um^2/s) of anisotropic particles and of both two-state states (protocol "field").
DEFAULT_D1_RANGE_UM2_S: tuple[float, float] = (0.05, 3.0)

#: Target number of pixels rendered per chunk of frames (bounds temporary memory).
_CHUNK_PIXELS = 1 << 21


@dataclass
class SimulatedMovie:
    """A simulated movie and its ground truth.

    Attributes
    ----------
    movie
        ``(T, Y, X)`` uint16 camera frames (ADU).
    truth
        Ground truth in the results contract (see the module docstring).
    acquisition
        Settings the movie was simulated with.
    """

    movie: np.ndarray
    truth: Results
    acquisition: Acquisition


@dataclass
class MoviePlan:
    """Everything about a movie except its pixels: the truth and what to render.

    Attributes
    ----------
    shape_yx
        ``(Y, X)`` frame size in pixels.
    n_frames
        Number of frames ``T``.
    acquisition
        Acquisition settings.
    truth
        Ground truth (see the module docstring).
    emitter_frame
        ``(E,)`` int64 frame of every particle-frame that sends light into the field
        (including particles just outside it), sorted by frame.
    emitter_substeps_px
        ``(E, m, 2)`` float64 exposed sub-positions ``(y, x)`` of those particle-frames.
    emitter_photons
        ``(E,)`` expected signal photons of each.
    settings
        The options the plan was made with (JSON-serialisable).
    """

    shape_yx: tuple[int, int]
    n_frames: int
    acquisition: Acquisition
    truth: Results
    emitter_frame: np.ndarray
    emitter_substeps_px: np.ndarray
    emitter_photons: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------- validation
def _check_range(value: Any, name: str, low: float = 0.0, high: float = math.inf) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SimulationError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo <= hi <= high):
        raise SimulationError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value!r}")
    return lo, hi


def _check_probability(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SimulationError(f"{name} must be a probability in [0, 1], got {value!r}") from None
    if not (0.0 <= v <= 1.0):
        raise SimulationError(f"{name} must be a probability in [0, 1], got {value!r}")
    return v


# ------------------------------------------------------------------ particles
@dataclass
class _Particles:
    """Particles of one model, frames concatenated particle after particle."""

    model: str
    birth_frame: np.ndarray  # (N,)
    n_frames: np.ndarray  # (N,)
    positions: np.ndarray  # (F, S, 2) sub-positions of every particle-frame
    frame_kind: np.ndarray  # (F,) physical state
    D1: np.ndarray  # (F,) labels
    D2: np.ndarray
    theta: np.ndarray


def _simulate_particles(
    model: str,
    birth: np.ndarray,
    n_frames: np.ndarray,
    start: np.ndarray,
    acq: Acquisition,
    rng: np.random.Generator,
    options: dict[str, Any],
) -> _Particles:
    n = birth.shape[0]
    s = acq.substeps_per_frame
    lengths = n_frames * s
    states = get_motion_model(model).particle_states(n, lengths, acq, rng, options)
    D1, D2, TH, kinds = states.D1_um2_s, states.D2_um2_s, states.theta_deg, states.substep_kind
    positions = _integrate(kinds, lengths, D1, D2, TH, start, acq, rng) if n else np.zeros((0, 2))
    f = int(n_frames.sum())
    positions = positions.reshape(f, s, 2)
    if kinds is None:
        frame_kind = np.zeros(f, dtype=np.int64)
    else:
        frame_kind = _frame_labels(kinds.reshape(f, s), D1.shape[1])
    owner = np.repeat(np.arange(n), n_frames)
    return _Particles(
        model=model,
        birth_frame=birth,
        n_frames=n_frames,
        positions=positions,
        frame_kind=frame_kind,
        D1=D1[owner, frame_kind],
        D2=D2[owner, frame_kind],
        theta=TH[owner, frame_kind],
    )


def _default_margin(acq: Acquisition, max_D_um2_s: float, frames: float, shape: tuple[int, int]) -> int:
    """Margin (px) wide enough that particles born outside it seldom reach the field.

    Three diffusion lengths (per axis, at the largest D) over ``frames`` (the shorter of
    a mean lifetime and the movie), plus the PSF's reach; at most twice the field size.
    """
    diffusion_px = math.sqrt(2.0 * acq.diffusion_to_px2_per_frame(max_D_um2_s) * frames)
    margin = 3.0 * diffusion_px + 4.0 * acq.psf_sigma_px + 2.0
    return int(math.ceil(min(margin, 2.0 * max(shape) + 16.0)))


# ----------------------------------------------------------------------- plan
@dataclass(frozen=True)
class MovieOptions:
    """The particles' parameter ranges, lifetime, blinking, brightness and margin of a movie.

    The options of :func:`plan_movie` (and keyword options of :func:`simulate_movie`);
    every field has the default of protocol "field".

    Attributes
    ----------
    D1_range_um2_s
        Uniform range of D1 of anisotropic particles and of the D of both two-state
        states (um^2/s); ``None``: (0.05, 3.0).
    D2_over_D1_range
        Uniform range of ``D2 / D1`` of anisotropic (and unbound) states.
    bound_D_range_um2_s, unbound_D1_range_um2_s
        Ranges of the binding model (um^2/s; defaults of protocol seed-binding).
    switch_rate_per_s
        Switching rates of the two-state models (1/s): a number for both directions or a
        2 x 2 matrix ``[i, j]`` = rate ``i -> j`` (binding: state 0 bound, 1 unbound).
    binding_fraction
        Fraction of binding particles in the ``"mixed"`` model.
    mean_lifetime_frames
        Mean number of frames a particle lives before it bleaches (geometric lifetime).
    blink_off_probability, blink_on_probability
        Per-frame probabilities of an emitting particle switching off and of a dark one
        switching back on; 0 disables blinking.
    photons_per_frame
        Expected signal photons per particle per frame; ``None``: ``acquisition.signal_photons``.
    margin_px
        Width of the band around the field where particles also live (px); ``None``: three
        diffusion lengths at the largest D over the shorter of a mean lifetime and the
        movie, plus the PSF (at most twice the field size).
    """

    D1_range_um2_s: tuple[float, float] | None = None
    D2_over_D1_range: tuple[float, float] = D2_OVER_D1_RANGE
    bound_D_range_um2_s: tuple[float, float] = BOUND_D_RANGE_UM2_S
    unbound_D1_range_um2_s: tuple[float, float] = UNBOUND_D1_RANGE_UM2_S
    switch_rate_per_s: Any = 1.0
    binding_fraction: float = 0.25
    mean_lifetime_frames: float = 100.0
    blink_off_probability: float = 0.0
    blink_on_probability: float = 0.5
    photons_per_frame: float | None = None
    margin_px: int | None = None


def plan_movie(
    shape_yx: tuple[int, int],
    n_frames: int,
    acquisition: Acquisition | None = None,
    rng: np.random.Generator | int | None = None,
    *,
    model: str = "aniso",
    particles: float = 30.0,
    options: MovieOptions | None = None,
) -> MoviePlan:
    """Draw the particles of a movie and its ground truth, without rendering pixels.

    Parameters
    ----------
    shape_yx
        ``(Y, X)`` frame size in pixels.
    n_frames
        Number of frames ``T``.
    acquisition
        ``None`` for the standard acquisition.
    rng
        Generator or seed.
    model
        ``"aniso"`` (one anisotropic state per particle), ``"binding"`` (bound isotropic
        <-> unbound anisotropic, Markov switching), ``"twostate"`` (two isotropic states,
        Markov switching), any other motion model of :data:`.motion_models.MOTION_MODELS`
        with a particle-state function, or ``"mixed"`` (``binding_fraction`` of the
        particles binding, the rest anisotropic).
    particles
        Mean number of particles in the field of view at any frame.
    options
        Parameter ranges, switching rates, lifetime, blinking, brightness and margin
        (:class:`MovieOptions`); ``None``: its defaults.

    Returns
    -------
    MoviePlan
    """
    opts = MovieOptions() if options is None else options
    D1_range_um2_s, D2_over_D1_range = opts.D1_range_um2_s, opts.D2_over_D1_range
    bound_D_range_um2_s, unbound_D1_range_um2_s = opts.bound_D_range_um2_s, opts.unbound_D1_range_um2_s
    switch_rate_per_s, binding_fraction = opts.switch_rate_per_s, opts.binding_fraction
    mean_lifetime_frames, photons_per_frame = opts.mean_lifetime_frames, opts.photons_per_frame
    margin_px = opts.margin_px
    blink_off_probability, blink_on_probability = opts.blink_off_probability, opts.blink_on_probability
    try:
        ny, nx = (int(v) for v in shape_yx)
    except (TypeError, ValueError):
        raise SimulationError(f"shape_yx must be two whole numbers (Y, X), got {shape_yx!r}") from None
    if ny < 1 or nx < 1:
        raise SimulationError(f"shape_yx must be positive, got {shape_yx!r}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise SimulationError(f"n_frames must be a whole number >= 1, got {n_frames!r}")
    t_total = int(n_frames)
    if model not in movie_model_names():
        raise SimulationError(f"model must be one of {', '.join(movie_model_names())}, got {model!r}")
    try:
        mean_particles = float(particles)
    except (TypeError, ValueError):
        raise SimulationError(f"particles must be a non-negative number, got {particles!r}") from None
    if not (math.isfinite(mean_particles) and mean_particles >= 0):
        raise SimulationError(f"particles must be a non-negative number, got {particles!r}")
    lifetime = float(mean_lifetime_frames)
    if not (math.isfinite(lifetime) and lifetime >= 1.0):
        raise SimulationError(f"mean_lifetime_frames must be a number >= 1, got {mean_lifetime_frames!r}")
    acq = Acquisition() if acquisition is None else acquisition
    if not isinstance(acq, Acquisition):
        raise SimulationError(f"acquisition must be an Acquisition, got {type(acq).__name__}")
    photons = acq.signal_photons if photons_per_frame is None else float(photons_per_frame)
    if not (math.isfinite(photons) and photons >= 0):
        raise SimulationError(f"photons_per_frame must be a non-negative number, got {photons_per_frame!r}")
    options = {
        "D1_range_um2_s": _check_range(DEFAULT_D1_RANGE_UM2_S if D1_range_um2_s is None else D1_range_um2_s,
                                       "D1_range_um2_s"),
        "D2_over_D1_range": _check_range(D2_over_D1_range, "D2_over_D1_range", 0.0, 1.0),
        "bound_D_range_um2_s": _check_range(bound_D_range_um2_s, "bound_D_range_um2_s"),
        "unbound_D1_range_um2_s": _check_range(unbound_D1_range_um2_s, "unbound_D1_range_um2_s"),
        "switch_rate_per_s": switch_rate_per_s,
    }
    transition_matrix(switch_rate_per_s, 2, acq.substep_interval_s)  # validates the rates
    fraction = _check_probability(binding_fraction, "binding_fraction")
    p_off = _check_probability(blink_off_probability, "blink_off_probability")
    p_on = _check_probability(blink_on_probability, "blink_on_probability")
    if p_off > 0 and p_on == 0:
        raise SimulationError("blink_on_probability must be positive when particles can blink off")
    gen = as_generator(rng)

    present = MIXED_PARTS if model == MIXED else (model,)
    max_D = max([options["D1_range_um2_s"][1]]
                + [options[key][1] for name in present for key in get_motion_model(name).movie_D_options])
    if margin_px is None:
        margin = _default_margin(acq, max_D, min(lifetime, t_total), (ny, nx))
    else:
        if isinstance(margin_px, bool) or not isinstance(margin_px, (int, np.integer)) or margin_px < 0:
            raise SimulationError(f"margin_px must be a whole number >= 0, got {margin_px!r}")
        margin = int(margin_px)

    # ---- births: stationary population at frame 0, then Poisson births per frame
    density = mean_particles / (ny * nx)  # particles per px^2 present at any time
    area = (ny + 2 * margin) * (nx + 2 * margin)
    n0 = gen.poisson(density * area)
    births_per_frame = gen.poisson(density * area / lifetime, t_total - 1) if t_total > 1 else np.zeros(0, int)
    birth = np.concatenate([np.zeros(n0, dtype=np.int64), np.repeat(np.arange(1, t_total), births_per_frame)])
    n = birth.shape[0]
    life = gen.geometric(1.0 / lifetime, n) if lifetime > 1 else np.ones(n, dtype=np.int64)
    n_alive = np.minimum(life, t_total - birth).astype(np.int64)
    start = np.column_stack(
        [gen.uniform(-margin - 0.5, ny + margin - 0.5, n), gen.uniform(-margin - 0.5, nx + margin - 0.5, n)]
    )
    if model == MIXED:
        kind_of = np.where(gen.random(n) < fraction, *MIXED_PARTS)
    else:
        kind_of = np.full(n, model)
    groups = []
    for name in movie_model_names():
        sel = np.nonzero(kind_of == name)[0]
        if sel.size:
            groups.append((sel, _simulate_particles(name, birth[sel], n_alive[sel], start[sel], acq, gen, options)))

    # ---- particle-frames in particle order (particle ids follow the order of `birth`)
    order = np.concatenate([sel for sel, _ in groups]) if groups else np.zeros(0, dtype=np.int64)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    rows_per = np.concatenate([g.n_frames for _, g in groups]) if groups else np.zeros(0, dtype=np.int64)
    # concatenated (group order) arrays, then re-ordered by particle id
    def cat(attr: str) -> np.ndarray:
        return np.concatenate([getattr(g, attr) for _, g in groups]) if groups else np.zeros(0)

    group_offsets = np.concatenate([[0], np.cumsum(rows_per)[:-1]]).astype(np.int64)
    row_index = np.repeat(group_offsets[inverse], rows_per[inverse]) + _ranges(rows_per[inverse])
    all_positions = (np.concatenate([g.positions for _, g in groups]) if groups
                     else np.zeros((0, acq.substeps_per_frame, 2)))
    positions = all_positions[row_index]
    frame_kind = cat("frame_kind")[row_index].astype(np.int64)
    D1 = cat("D1")[row_index]
    D2 = cat("D2")[row_index]
    theta = cat("theta")[row_index]
    particle = np.repeat(np.arange(n), n_alive)
    frame = (np.repeat(birth, n_alive) + _ranges(n_alive)).astype(np.int64)

    # ---- blinking (frame-level two-state Markov chain, 0 = on, 1 = off)
    if p_off > 0 and n:
        p_blink = np.array([[1.0 - p_off, p_off], [p_on, 1.0 - p_on]])
        initial = gen.choice(2, n, p=stationary_distribution(p_blink))
        on = markov_chain(n_alive, p_blink, initial, gen) == 0
    else:
        on = np.ones(frame.shape[0], dtype=bool)

    # ---- what the camera sees
    m = acq.exposed_substeps
    exposed = positions[:, :m, :]
    frame_pos = exposed.mean(axis=1)
    in_field = (
        (frame_pos[:, 0] >= -0.5) & (frame_pos[:, 0] < ny - 0.5)
        & (frame_pos[:, 1] >= -0.5) & (frame_pos[:, 1] < nx - 0.5)
    )
    reach = 4.0 * acq.psf_sigma_px + 1.0
    lo = exposed.min(axis=1)
    hi = exposed.max(axis=1)
    touches = ((hi[:, 0] > -0.5 - reach) & (lo[:, 0] < ny - 0.5 + reach)
               & (hi[:, 1] > -0.5 - reach) & (lo[:, 1] < nx - 0.5 + reach))
    emit = np.nonzero(on & touches)[0]
    emit = emit[np.argsort(frame[emit], kind="stable")]

    rows = _ParticleFrames(particle, frame, frame_pos, frame_kind, D1, D2, theta, in_field, on)
    truth = _truth_tables(rows, kind_of, photons, acq)
    settings = {
        "shape_yx": [ny, nx],
        "n_frames": t_total,
        "model": model,
        "particles": mean_particles,
        "D1_range_um2_s": list(options["D1_range_um2_s"]),
        "D2_over_D1_range": list(options["D2_over_D1_range"]),
        "bound_D_range_um2_s": list(options["bound_D_range_um2_s"]),
        "unbound_D1_range_um2_s": list(options["unbound_D1_range_um2_s"]),
        "switch_rate_per_s": np.asarray(switch_rate_per_s, dtype=float).tolist(),
        "binding_fraction": fraction,
        "mean_lifetime_frames": lifetime,
        "blink_off_probability": p_off,
        "blink_on_probability": p_on,
        "photons_per_frame": photons,
        "margin_px": margin,
        "n_particles_simulated": int(n),
    }
    truth.meta.update({"acquisition": acq.to_dict(), "model": "truth", "simulation": settings})
    return MoviePlan(
        shape_yx=(ny, nx),
        n_frames=t_total,
        acquisition=acq,
        truth=truth,
        emitter_frame=frame[emit],
        emitter_substeps_px=exposed[emit],
        emitter_photons=np.full(emit.shape[0], photons),
        settings=settings,
    )


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(l)`` for every ``l`` in ``lengths``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)


@dataclass(frozen=True)
class _ParticleFrames:
    """Every simulated particle-frame (``F`` rows, particle after particle, frames in order).

    Attributes
    ----------
    particle, frame
        ``(F,)`` particle id and frame.
    frame_pos
        ``(F, 2)`` true frame position ``(y, x)`` (px): mean of the exposed sub-positions.
    frame_kind
        ``(F,)`` physical state of the frame (``state_kind`` of the truth).
    D1, D2, theta
        ``(F,)`` per-frame labels (um^2/s, um^2/s, degrees).
    in_field, on
        ``(F,)`` whether the frame position is inside the field, and the particle emitting.
    """

    particle: np.ndarray
    frame: np.ndarray
    frame_pos: np.ndarray
    frame_kind: np.ndarray
    D1: np.ndarray
    D2: np.ndarray
    theta: np.ndarray
    in_field: np.ndarray
    on: np.ndarray


def _truth_tables(rows: _ParticleFrames, kind_of: np.ndarray, photons: float, acq: Acquisition) -> Results:
    """The truth :class:`Results` of the visible particle-frames (``kind_of``: (P,) model of each particle)."""
    particle, frame, frame_pos, frame_kind = rows.particle, rows.frame, rows.frame_pos, rows.frame_kind
    D1, D2, theta, in_field, on = rows.D1, rows.D2, rows.theta, rows.in_field, rows.on
    # a track is a run of consecutive in-field frames of one particle
    new_particle = np.ones(particle.shape[0], dtype=bool)
    new_particle[1:] = particle[1:] != particle[:-1]
    prev_in = np.zeros(particle.shape[0], dtype=bool)
    prev_in[1:] = in_field[:-1]
    run_start = in_field & (new_particle | ~prev_in)
    run = np.cumsum(run_start) - 1
    keep = np.nonzero(in_field & on)[0]
    run_kept = run[keep]
    _, track = np.unique(run_kept, return_inverse=True)  # consecutive ids in row order
    track = track.astype(np.int64)
    n_rows = keep.shape[0]
    kind = frame_kind[keep]
    first = np.ones(n_rows, dtype=bool)
    first[1:] = track[1:] != track[:-1]
    change = np.zeros(n_rows, dtype=bool)
    change[1:] = (kind[1:] != kind[:-1]) & ~first[1:]
    cum = np.cumsum(change)
    track_first_row = np.nonzero(first)[0]
    state = cum - np.repeat(cum[track_first_row], np.diff(np.append(track_first_row, n_rows)))
    yx = frame_pos[keep]
    crlb = float(localization_crlb_nm(photons, acq.background_photons, acq)) if photons > 0 else math.nan
    fr = frame[keep]
    tracks = pd.DataFrame(
        {
            "track_id": track,
            "frame": fr,
            "t_s": acq.frames_to_s(fr) if n_rows else np.zeros(0),
            "x_px": yx[:, 1],
            "y_px": yx[:, 0],
            "x_um": acq.px_to_um(yx[:, 1]) if n_rows else np.zeros(0),
            "y_um": acq.px_to_um(yx[:, 0]) if n_rows else np.zeros(0),
            "photons": np.full(n_rows, float(photons)),
            "background": np.full(n_rows, float(acq.background_photons)),
            "loc_precision_nm": np.full(n_rows, crlb),
            "D1_um2_s": D1[keep],
            "D2_um2_s": D2[keep],
            "theta_deg": theta[keep],
            "state": state.astype(np.int64),
            "is_changepoint": change,
            "particle_id": particle[keep].astype(np.int64),
            "state_kind": kind.astype(np.int64),
        }
    )
    tracks = tracks[list(TRACKS_COLUMNS) + ["particle_id", "state_kind"]]
    summary = _summary(tracks, track_first_row, change, kind_of)
    return Results(tracks=tracks, summary=summary, meta={})


def _summary(tracks: pd.DataFrame, first_row: np.ndarray, change: np.ndarray, kind_of: np.ndarray) -> pd.DataFrame:
    n_rows = len(tracks)
    if first_row.shape[0] == 0:
        out = pd.DataFrame({c: pd.Series(dtype=float) for c in SUMMARY_COLUMNS})
        for c in ("track_id", "n_frames", "frame_start", "frame_end", "n_changepoints"):
            out[c] = out[c].astype(np.int64)
        out["changepoint_frames"] = out["changepoint_frames"].astype(object)
        out["model"] = out["model"].astype(object)
        out["particle_model"] = pd.Series(dtype=object)
        return out
    counts = np.diff(np.append(first_row, n_rows))
    last_row = first_row + counts - 1

    def mean(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, first_row) / counts

    d1 = tracks["D1_um2_s"].to_numpy()
    d2 = tracks["D2_um2_s"].to_numpy()
    th = np.deg2rad(tracks["theta_deg"].to_numpy())
    c, s = np.cos(th), np.sin(th)
    dxx = mean(d1 * c * c + d2 * s * s)
    dyy = mean(d1 * s * s + d2 * c * c)
    dxy = mean((d1 - d2) * s * c)
    half_sum = 0.5 * (dxx + dyy)
    radius = np.hypot(0.5 * (dxx - dyy), dxy)
    D1m = half_sum + radius
    D2m = half_sum - radius
    theta_m = np.mod(np.rad2deg(0.5 * np.arctan2(2.0 * dxy, dxx - dyy)), 180.0)
    theta_m = np.where(radius > 1e-12 * np.maximum(half_sum, 1e-300), theta_m, 0.0)
    n_cp = np.add.reduceat(change.astype(np.int64), first_row)
    single = n_cp == 0
    D1m = np.where(single, d1[first_row], D1m)
    D2m = np.where(single, d2[first_row], D2m)
    theta_m = np.where(single, tracks["theta_deg"].to_numpy()[first_row], theta_m)
    frames = tracks["frame"].to_numpy()
    cp_text = np.full(first_row.shape[0], "", dtype=object)
    cp_rows = np.nonzero(change)[0]
    if cp_rows.size:
        owner = tracks["track_id"].to_numpy()[cp_rows]
        for tid in np.unique(owner):
            cp_text[tid] = format_changepoint_frames(frames[cp_rows[owner == tid]])
    with np.errstate(divide="ignore", invalid="ignore"):
        anisotropy = np.where(D1m > 0, 1.0 - D2m / D1m, 0.0)
    particle = tracks["particle_id"].to_numpy()[first_row]
    summary = pd.DataFrame(
        {
            "track_id": tracks["track_id"].to_numpy()[first_row],
            "n_frames": counts.astype(np.int64),
            "frame_start": frames[first_row],
            "frame_end": frames[last_row],
            "x_mean_px": mean(tracks["x_px"].to_numpy()),
            "y_mean_px": mean(tracks["y_px"].to_numpy()),
            "D1_um2_s": D1m,
            "D2_um2_s": D2m,
            "theta_deg": theta_m,
            "anisotropy": anisotropy,
            "D_msd_um2_s": np.nan,
            "D_cve_um2_s": np.nan,
            "alpha_msd": np.nan,
            "n_changepoints": n_cp.astype(np.int64),
            "changepoint_frames": cp_text,
            "model": "truth",
            "particle_model": kind_of[particle].astype(object),
        }
    )
    return summary


# ---------------------------------------------------------------------- render
def _render_chunk(
    plan: MoviePlan, f0: int, f1: int, rng: np.random.Generator
) -> np.ndarray:
    """Signal photo-electron counts ``(f1 - f0, Y, X)`` of frames ``f0 .. f1 - 1``."""
    ny, nx = plan.shape_yx
    acq = plan.acquisition
    counts = np.zeros((f1 - f0) * ny * nx, dtype=np.float64)
    a, b = np.searchsorted(plan.emitter_frame, [f0, f1])
    if b > a:
        pos = plan.emitter_substeps_px[a:b]
        fr = plan.emitter_frame[a:b] - f0
        photons = plan.emitter_photons[a:b]
        centre = np.rint(pos.mean(axis=1)).astype(np.int64)  # (n, 2)
        blur = np.abs(pos - centre[:, None, :]).max(axis=(1, 2))
        half = np.ceil(4.0 * acq.psf_sigma_px + blur).astype(np.int64) + 1
        for h in np.unique(half):
            sel = np.nonzero(half == h)[0]
            size = 2 * int(h) + 1
            origin = centre[sel] - h
            img = expected_photons(pos[sel] - origin[:, None, :], (size, size), acq, photons[sel])
            drawn = _poisson_variable(img.reshape(-1), rng).reshape(img.shape)
            yy = origin[:, 0, None] + np.arange(size)  # (n, size)
            xx = origin[:, 1, None] + np.arange(size)
            valid = ((yy >= 0) & (yy < ny))[:, :, None] & ((xx >= 0) & (xx < nx))[:, None, :]
            index = (fr[sel, None, None] * ny + yy[:, :, None]) * nx + xx[:, None, :]
            keep = valid & (drawn > 0)
            counts += np.bincount(index[keep], weights=drawn[keep], minlength=counts.shape[0])
    return counts.reshape(f1 - f0, ny, nx)


def iter_movie_frames(
    plan: MoviePlan, rng: np.random.Generator | int | None = None, *, chunk_frames: int | None = None
) -> Iterator[np.ndarray]:
    """Render a planned movie frame by frame.

    Parameters
    ----------
    plan
        From :func:`plan_movie`.
    rng
        Generator or seed for the photon and camera noise.
    chunk_frames
        Frames rendered together (memory ~ 20 bytes per pixel of a chunk); ``None``:
        about two million pixels per chunk.

    Yields
    ------
    ``(Y, X)`` uint16 frames, in order.
    """
    gen = as_generator(rng)
    ny, nx = plan.shape_yx
    if chunk_frames is None:
        chunk = max(1, _CHUNK_PIXELS // (ny * nx))
    else:
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, (int, np.integer)) or chunk_frames < 1:
            raise SimulationError(f"chunk_frames must be a whole number >= 1, got {chunk_frames!r}")
        chunk = int(chunk_frames)
    for f0 in range(0, plan.n_frames, chunk):
        f1 = min(plan.n_frames, f0 + chunk)
        frames = camera_image_from_counts(_render_chunk(plan, f0, f1, gen), plan.acquisition, gen)
        yield from frames


def simulate_movie(
    shape_yx: tuple[int, int],
    n_frames: int,
    acquisition: Acquisition | None = None,
    rng: np.random.Generator | int | None = None,
    *,
    model: str = "aniso",
    particles: float = 30.0,
    out: np.ndarray | None = None,
    progress: Callable[[float, str], None] | None = None,
    **options: Any,
) -> SimulatedMovie:
    """Simulate a full-field movie and its ground truth.

    Parameters
    ----------
    shape_yx, n_frames, acquisition, rng, model, particles
        As in :func:`plan_movie`; ``rng`` drives both the particles and the noise.
    out
        Optional preallocated ``(T, Y, X)`` uint16 array (e.g. a ``numpy.memmap``) to
        write the frames into; ``None`` allocates one.
    progress
        Called as ``progress(fraction, message)`` after each chunk of frames.
    **options
        Fields of :class:`MovieOptions` (``D1_range_um2_s``, ``mean_lifetime_frames``,
        ``blink_off_probability``, ``photons_per_frame``, ...) and ``chunk_frames`` of
        :func:`iter_movie_frames`.

    Returns
    -------
    SimulatedMovie
        ``movie`` (T, Y, X) uint16, ``truth`` (:class:`~napari_spt_diffusion.results.Results`)
        and the acquisition.
    """
    chunk_frames = options.pop("chunk_frames", None)
    gen = as_generator(rng)
    plan = plan_movie(shape_yx, n_frames, acquisition, gen, model=model, particles=particles,
                      options=MovieOptions(**options))
    ny, nx = plan.shape_yx
    shape = (plan.n_frames, ny, nx)
    if out is None:
        movie = np.empty(shape, dtype=np.uint16)
    else:
        if tuple(out.shape) != shape or out.dtype != np.uint16:
            raise SimulationError(f"out must be a uint16 array of shape {shape}, got {out.dtype} {tuple(out.shape)}")
        movie = out
    for t, frame in enumerate(iter_movie_frames(plan, gen, chunk_frames=chunk_frames)):
        movie[t] = frame
        if progress is not None and (t + 1 == plan.n_frames or (t + 1) % 50 == 0):
            progress((t + 1) / plan.n_frames, f"frame {t + 1} / {plan.n_frames}")
    return SimulatedMovie(movie=movie, truth=plan.truth, acquisition=plan.acquisition)
