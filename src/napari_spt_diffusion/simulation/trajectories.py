"""Diffusion trajectories at sub-step resolution, with per-frame ground-truth labels.

Every model moves a particle by Brownian steps on a grid of sub-steps
(``Acquisition.substeps_per_frame`` per frame interval). In a state with diffusion
tensor eigenvalues ``D1 >= D2`` and D1-axis angle ``theta`` (from +x towards +y), a
sub-step is ``p += a1 * sqrt(2 D1 dt) * u1 + a2 * sqrt(2 D2 dt) * u2`` with
``a1, a2 ~ N(0, 1)``, ``u1 = (sin theta, cos theta)`` and ``u2 = (cos theta, -sin theta)``
in ``(y, x)`` order, ``dt`` the sub-step interval.

Conventions shared by all models
--------------------------------
* Positions are ``(y, x)`` in pixels. Sub-position ``0`` of frame ``0`` is the start
  position; sub-position ``j > 0`` is sub-position ``j - 1`` plus one step taken in the
  state of sub-step ``j``.
* The camera sees the mean of the first ``Acquisition.exposed_substeps`` sub-positions of
  each frame (:attr:`Trajectories.frame_positions_px`).
* The label of a frame is the state holding most of its sub-steps (all sub-steps of the
  frame interval, exposed or not); a tie goes to the state of the frame's middle sub-step
  (index ``S // 2``), i.e. to the later state for a single switch.
* ``state`` is the segment index along the track (0, 1, 2, ...), increased at every frame
  whose label (physical state) differs from the previous frame's; ``state_kind`` keeps the
  physical state id (binding: 0 bound, 1 unbound; two-state: 0 first, 1 second;
  multistate: index into the given list of states).
* An isotropic state drawn without an explicit angle carries the label ``theta_deg = 0``.

Each named motion model has two functions here, both listed in
:mod:`.motion_models`: a trajectory function (``simulate_*``: equal-length tracks of the
protocol's parameter ranges, for training and test samples) and a particle-state function
(``particle_states_*``: state parameters and switching of particles of any length, for
full-field movies, with the movie's parameter ranges).

Random numbers are drawn from the given generator in a fixed order (parameters first,
then switches, then steps), so a seed reproduces a data set exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.linalg import expm

from ..acquisition import Acquisition
from ..errors import SptDiffusionError

__all__ = [
    "D1_GRID_UM2_S",
    "DiffusionState",
    "SimulationError",
    "Trajectories",
    "as_generator",
    "simulate_anisotropic",
    "simulate_binding",
    "simulate_two_state",
    "simulate_multistate",
    "ParticleStates",
    "particle_states_anisotropic",
    "particle_states_binding",
    "particle_states_two_state",
]

#: The seed-aniso grid of D1 values: 0.05, 0.10, ..., 6.00 um^2/s (120 values).
D1_GRID_UM2_S: np.ndarray = np.round(np.arange(1, 121) * 0.05, 2)

#: seed-binding parameter ranges (docs/protocols.md).
BOUND_D_RANGE_UM2_S: tuple[float, float] = (0.005, 0.01)
UNBOUND_D1_RANGE_UM2_S: tuple[float, float] = (3.0, 6.0)
D2_OVER_D1_RANGE: tuple[float, float] = (0.1, 1.0)


class SimulationError(SptDiffusionError, ValueError):
    """Raised for simulation parameters that cannot describe a physical experiment."""


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Return ``rng`` itself, or a new ``numpy`` Generator seeded with it (``None``: fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise SimulationError(f"rng must be a numpy Generator, an integer seed or None, got {type(rng).__name__}")


# --------------------------------------------------------------------------- data
@dataclass
class Trajectories:
    """Equal-length trajectories at sub-step resolution and their per-frame labels.

    Attributes
    ----------
    substep_positions_px
        ``(N, T, S, 2)`` float64: ``(y, x)`` in pixels of every sub-step,
        ``S = acquisition.substeps_per_frame``.
    D1_um2_s, D2_um2_s
        ``(N, T)`` per-frame labels of the tensor eigenvalues (um^2/s), ``D1 >= D2``.
    theta_deg
        ``(N, T)`` per-frame label of the D1-axis angle (degrees, ``[0, 180)``).
    state
        ``(N, T)`` int64 segment index along the track (0, 1, 2, ...).
    changepoint_frames
        Per track, an int64 array of the frames ``c`` where the label of frame ``c``
        differs from that of frame ``c - 1``.
    acquisition
        Timing and pixel size used for the unit conversions.
    state_kind
        ``(N, T)`` int64 physical state id of each frame (see the module docstring).
    substep_state_kind
        ``(N, T, S)`` int8 physical state id of every sub-step.
    switch_substep
        ``(N,)`` int64 flat sub-step index ``j`` (0 .. T*S-1) of the single switch for
        the single-switch models (sub-steps ``< j`` in the first state); ``None`` otherwise.
    model
        Name of the generating model (``"aniso"``, ``"binding"``, ``"twostate"``,
        ``"multistate"``).
    """

    substep_positions_px: np.ndarray
    D1_um2_s: np.ndarray
    D2_um2_s: np.ndarray
    theta_deg: np.ndarray
    state: np.ndarray
    changepoint_frames: list[np.ndarray]
    acquisition: Acquisition
    state_kind: np.ndarray
    substep_state_kind: np.ndarray
    switch_substep: np.ndarray | None = None
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tracks(self) -> int:
        """Number of tracks ``N``."""
        return int(self.substep_positions_px.shape[0])

    @property
    def n_frames(self) -> int:
        """Number of frames ``T`` per track."""
        return int(self.substep_positions_px.shape[1])

    def __len__(self) -> int:
        return self.n_tracks

    @property
    def frame_positions_px(self) -> np.ndarray:
        """``(N, T, 2)`` camera positions ``(y, x)`` in pixels: mean of the exposed sub-positions."""
        m = self.acquisition.exposed_substeps
        return self.substep_positions_px[:, :, :m, :].mean(axis=2)

    @property
    def exposed_substep_positions_px(self) -> np.ndarray:
        """``(N, T, m, 2)`` view of the sub-positions the camera integrates (``m = exposed_substeps``)."""
        return self.substep_positions_px[:, :, : self.acquisition.exposed_substeps, :]


@dataclass(frozen=True)
class DiffusionState:
    """One diffusive state of :func:`simulate_multistate`.

    Each parameter is either a number (fixed) or a ``(low, high)`` pair (drawn uniformly
    in ``[low, high)`` once per track).

    Attributes
    ----------
    D1_um2_s
        Larger eigenvalue of the diffusion tensor (um^2/s).
    D2_over_D1
        Ratio ``D2 / D1`` in ``[0, 1]``; ignored when ``D2_um2_s`` is given.
    D2_um2_s
        Smaller eigenvalue (um^2/s), at most ``D1_um2_s``; ``None`` to use ``D2_over_D1``.
    theta_deg
        Angle of the D1 axis (degrees); ``None`` draws it uniformly in ``[0, 180)`` per
        track (an isotropic state then carries the label 0).
    """

    D1_um2_s: float | tuple[float, float]
    D2_over_D1: float | tuple[float, float] = 1.0
    D2_um2_s: float | tuple[float, float] | None = None
    theta_deg: float | tuple[float, float] | None = None

    @classmethod
    def coerce(cls, spec: DiffusionState | Mapping[str, Any] | Sequence[Any]) -> DiffusionState:
        """Build from a ``DiffusionState``, a dict of its fields, or a tuple ``(D1, D2/D1, theta)``."""
        if isinstance(spec, DiffusionState):
            return spec
        if isinstance(spec, Mapping):
            try:
                return cls(**spec)
            except TypeError as exc:
                raise SimulationError(f"bad state specification {dict(spec)!r}: {exc}") from None
        if isinstance(spec, Sequence) and not isinstance(spec, str) and 1 <= len(spec) <= 3:
            values = list(spec) + [1.0, None][len(spec) - 1 :]
            return cls(D1_um2_s=values[0], D2_over_D1=values[1], theta_deg=values[2])
        raise SimulationError(f"a state must be a DiffusionState, a dict or a (D1, D2/D1, theta) tuple, got {spec!r}")


# ------------------------------------------------------------------ validation
def _acq(acquisition: Acquisition | None) -> Acquisition:
    if acquisition is None:
        return Acquisition()
    if not isinstance(acquisition, Acquisition):
        raise SimulationError(f"acquisition must be an Acquisition, got {type(acquisition).__name__}")
    return acquisition


def _count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SimulationError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _per_track(value: Any, n: int, name: str, low: float, high: float, closed_high: bool = True) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
        raise SimulationError(f"{name} must be a number or one value per track ({n}), got shape {arr.shape}")
    arr = np.broadcast_to(arr, (n,)).astype(float)
    bad = ~np.isfinite(arr) | (arr < low) | ((arr > high) if closed_high else (arr >= high))
    if bad.any():
        raise SimulationError(f"{name} must lie in [{low}, {high}], got {arr[bad][0]!r}")
    return arr


def _start_positions(start_px: Any, n: int) -> np.ndarray:
    if start_px is None:
        return np.zeros((n, 2))
    arr = np.asarray(start_px, dtype=float)
    if arr.shape == (2,):
        arr = np.broadcast_to(arr, (n, 2))
    if arr.shape != (n, 2) or not np.all(np.isfinite(arr)):
        raise SimulationError(f"start_px must be finite (y, x) pixels of shape (2,) or ({n}, 2), got shape {arr.shape}")
    return np.array(arr, dtype=float)


def _draw(spec: Any, n: int, rng: np.random.Generator, name: str, low: float, high: float) -> np.ndarray:
    """Draw ``n`` values from a number (fixed) or a ``(low, high)`` uniform range."""
    if isinstance(spec, (tuple, list, np.ndarray)) and len(spec) == 2:
        lo, hi = float(spec[0]), float(spec[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and low <= lo <= hi <= high):
            raise SimulationError(f"{name} range must satisfy {low} <= low <= high <= {high}, got {tuple(spec)!r}")
        return rng.uniform(lo, hi, n)
    return _per_track(spec, n, name, low, high)


# --------------------------------------------------------------------- core
def _substep_sigmas(
    D1_um2_s: np.ndarray, D2_um2_s: np.ndarray, acquisition: Acquisition
) -> tuple[np.ndarray, np.ndarray]:
    """Standard deviations (px) of one sub-step along the D1 and D2 axes."""
    s1 = np.sqrt(2.0 * acquisition.diffusion_to_px2_per_substep(np.asarray(D1_um2_s, dtype=float)))
    s2 = np.sqrt(2.0 * acquisition.diffusion_to_px2_per_substep(np.asarray(D2_um2_s, dtype=float)))
    return s1, s2


def _integrate(
    substep_kind: np.ndarray | None,
    lengths: np.ndarray,
    D1_um2_s: np.ndarray,
    D2_um2_s: np.ndarray,
    theta_deg: np.ndarray,
    start_px: np.ndarray,
    acquisition: Acquisition,
    rng: np.random.Generator,
) -> np.ndarray:
    """Brownian sub-steps of ``N`` tracks of any lengths, concatenated track after track.

    Parameters
    ----------
    substep_kind
        ``(M,)`` int state id of every sub-step (``M = lengths.sum()``); ``None`` when
        every track has a single state (``k = 1``).
    lengths
        ``(N,)`` number of sub-steps of each track (>= 1).
    D1_um2_s, D2_um2_s, theta_deg
        ``(N, k)`` parameters of each track's states.
    start_px
        ``(N, 2)`` first sub-position of each track.

    Returns
    -------
    ``(M, 2)`` float64 sub-positions ``(y, x)`` in pixels.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = lengths.shape[0]
    s1, s2 = _substep_sigmas(D1_um2_s, D2_um2_s, acquisition)
    theta = np.deg2rad(theta_deg)
    sin_k, cos_k = np.sin(theta), np.cos(theta)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    noise = rng.standard_normal((int(lengths.sum()), 2))
    noise[offsets, :] = 0.0  # the first sub-position of a track is its start
    if substep_kind is None:
        a1 = noise[:, 0] * np.repeat(s1[:, 0], lengths)
        a2 = noise[:, 1] * np.repeat(s2[:, 0], lengths)
        sin = np.repeat(sin_k[:, 0], lengths)
        cos = np.repeat(cos_k[:, 0], lengths)
    else:
        k = D1_um2_s.shape[1]
        flat = np.repeat(np.arange(n, dtype=np.int64) * k, lengths) + substep_kind
        a1 = noise[:, 0] * s1.reshape(-1)[flat]
        a2 = noise[:, 1] * s2.reshape(-1)[flat]
        sin = sin_k.reshape(-1)[flat]
        cos = cos_k.reshape(-1)[flat]
    steps = noise
    dy = a1 * sin + a2 * cos
    dx = a1 * cos - a2 * sin
    steps[:, 0] = dy
    steps[:, 1] = dx
    np.cumsum(steps, axis=0, out=steps)
    # restart the running sum at every track: subtract the sum before its first sub-step
    steps -= np.repeat(steps[offsets] - start_px, lengths, axis=0)
    steps[offsets] = start_px  # exactly, without rounding
    return steps


def _frame_labels(substep_kind: np.ndarray, n_kinds: int) -> np.ndarray:
    """Per-frame majority state of ``(..., S)`` sub-step states (tie: the middle sub-step's state)."""
    s = substep_kind.shape[-1]
    kinds = np.arange(n_kinds, dtype=substep_kind.dtype)
    counts = (substep_kind[..., None] == kinds).sum(axis=-2, dtype=np.int64)  # (..., k)
    score = 2 * counts + (substep_kind[..., s // 2, None] == kinds)
    return np.argmax(score, axis=-1).astype(np.int64)


def _segments(frame_kind: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Segment index ``(N, T)`` and changepoint frames per track from per-frame states."""
    n, t = frame_kind.shape
    change = frame_kind[:, 1:] != frame_kind[:, :-1]
    state = np.zeros((n, t), dtype=np.int64)
    np.cumsum(change, axis=1, out=state[:, 1:])
    rows, cols = np.nonzero(change)
    counts = np.bincount(rows, minlength=n)
    changepoints = np.split((cols + 1).astype(np.int64), np.cumsum(counts)[:-1])
    return state, changepoints


def _assemble(
    model: str,
    substep_kind: np.ndarray,
    state_tensors: tuple[np.ndarray, np.ndarray, np.ndarray],
    start_px: np.ndarray,
    acquisition: Acquisition,
    rng: np.random.Generator,
    switch_substep: np.ndarray | None = None,
) -> Trajectories:
    """Integrate ``N`` tracks and label their frames.

    ``substep_kind`` is the ``(N, T * S)`` state of every sub-step; ``state_tensors`` the
    ``(N, k)`` ``D1_um2_s, D2_um2_s, theta_deg`` of each track's ``k`` states.
    """
    D1_um2_s, D2_um2_s, theta_deg = state_tensors
    n_kinds = D1_um2_s.shape[1]
    n, length = substep_kind.shape
    s = acquisition.substeps_per_frame
    n_frames = length // s
    flat_kind = None if n_kinds == 1 else substep_kind.reshape(-1)
    positions = _integrate(flat_kind, np.full(n, length), D1_um2_s, D2_um2_s, theta_deg, start_px, acquisition, rng)
    sub_kind = substep_kind.reshape(n, n_frames, s).astype(np.int8)
    frame_kind = _frame_labels(sub_kind, n_kinds) if n_kinds > 1 else np.zeros((n, n_frames), dtype=np.int64)
    rows = np.arange(n)[:, None]
    state, changepoints = _segments(frame_kind)
    return Trajectories(
        substep_positions_px=positions.reshape(n, n_frames, s, 2),
        D1_um2_s=D1_um2_s[rows, frame_kind],
        D2_um2_s=D2_um2_s[rows, frame_kind],
        theta_deg=theta_deg[rows, frame_kind],
        state=state,
        changepoint_frames=changepoints,
        acquisition=acquisition,
        state_kind=frame_kind,
        substep_state_kind=sub_kind,
        switch_substep=switch_substep,
        model=model,
    )


def _single_switch_kinds(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sub-step index of one switch, uniform in ``1 .. length-1``, and the ``(N, L)`` 0/1 'after' mask."""
    if length < 2:
        raise SimulationError("a switching track needs at least 2 sub-steps")
    switch = rng.integers(1, length, n)
    after = np.arange(length)[None, :] >= switch[:, None]
    return switch.astype(np.int64), after


# ------------------------------------------------------------------- models
def simulate_anisotropic(
    n_tracks: int,
    n_frames: int,
    acquisition: Acquisition | None = None,
    rng: np.random.Generator | int | None = None,
    *,
    D1_um2_s: Any = None,
    D2_over_D1: Any = None,
    theta_deg: Any = None,
    start_px: Any = None,
) -> Trajectories:
    """Single-state anisotropic diffusion (protocol seed-aniso).

    Parameters
    ----------
    n_tracks, n_frames
        Number of tracks ``N`` and frames ``T`` per track.
    acquisition
        Timing and pixel size; ``None`` for the standard acquisition.
    rng
        Generator or seed.
    D1_um2_s
        ``None``: drawn uniformly from :data:`D1_GRID_UM2_S` (0.05 ... 6.00 um^2/s);
        else a number or ``(N,)`` array (um^2/s).
    D2_over_D1
        ``None``: ``r ~ U[0.1, 1)``; else a number or ``(N,)`` array in ``[0, 1]``.
    theta_deg
        ``None``: ``U[0, 180)``; else a number or ``(N,)`` array (degrees, taken mod 180).
    start_px
        ``(2,)`` or ``(N, 2)`` first sub-position ``(y, x)`` in pixels; ``None``: the origin.

    Returns
    -------
    Trajectories
        With ``N x T`` constant labels, ``state`` all 0 and no changepoints.
    """
    n = _count(n_tracks, "n_tracks", 1)
    t = _count(n_frames, "n_frames", 1)
    acq = _acq(acquisition)
    gen = as_generator(rng)
    if D1_um2_s is None:
        d1 = gen.choice(D1_GRID_UM2_S, n)
    else:
        d1 = _per_track(D1_um2_s, n, "D1_um2_s", 0.0, np.inf)
    if D2_over_D1 is None:
        r = gen.uniform(*D2_OVER_D1_RANGE, n)
    else:
        r = _per_track(D2_over_D1, n, "D2_over_D1", 0.0, 1.0)
    if theta_deg is None:
        th = gen.uniform(0.0, 180.0, n)
    else:
        th = np.mod(_per_track(theta_deg, n, "theta_deg", -np.inf, np.inf), 180.0)
    start = _start_positions(start_px, n)
    kinds = np.zeros((n, t * acq.substeps_per_frame), dtype=np.int8)
    return _assemble("aniso", kinds, (d1[:, None], (r * d1)[:, None], th[:, None]), start, acq, gen)


def simulate_binding(
    n_tracks: int,
    n_frames: int,
    acquisition: Acquisition | None = None,
    rng: np.random.Generator | int | None = None,
    *,
    start_px: Any = None,
) -> Trajectories:
    """Binding/unbinding with one switch (protocol seed-binding).

    Bound (``state_kind`` 0): isotropic, ``D ~ U[0.005, 0.01]`` um^2/s, label theta 0.
    Unbound (``state_kind`` 1): ``D1 ~ U[3, 6]``, ``D2 = r D1`` with ``r ~ U[0.1, 1)``,
    ``theta ~ U[0, 180)``. One switch at a sub-step drawn uniformly over the track
    (:attr:`Trajectories.switch_substep`); tracks ``0, 2, 4, ...`` go bound -> unbound and
    ``1, 3, 5, ...`` unbound -> bound. Frame labels follow the module conventions, so a
    switch in the first or last half-frame leaves no changepoint.
    """
    n = _count(n_tracks, "n_tracks", 1)
    t = _count(n_frames, "n_frames", 1)
    acq = _acq(acquisition)
    gen = as_generator(rng)
    d_bound = gen.uniform(*BOUND_D_RANGE_UM2_S, n)
    d1_unbound = gen.uniform(*UNBOUND_D1_RANGE_UM2_S, n)
    r = gen.uniform(*D2_OVER_D1_RANGE, n)
    th = gen.uniform(0.0, 180.0, n)
    switch, after = _single_switch_kinds(n, t * acq.substeps_per_frame, gen)
    bound_first = (np.arange(n) % 2 == 0)[:, None]
    kinds = np.where(after ^ bound_first, 0, 1).astype(np.int8)  # bound first: 0 before, 1 after
    D1 = np.stack([d_bound, d1_unbound], axis=1)
    D2 = np.stack([d_bound, r * d1_unbound], axis=1)
    theta = np.stack([np.zeros(n), th], axis=1)
    return _assemble("binding", kinds, (D1, D2, theta), _start_positions(start_px, n), acq, gen, switch)


def simulate_two_state(
    n_tracks: int,
    n_frames: int,
    acquisition: Acquisition | None = None,
    rng: np.random.Generator | int | None = None,
    *,
    start_px: Any = None,
) -> Trajectories:
    """Two isotropic states with one switch (protocol seed-twostate).

    Each state's D is drawn independently from :data:`D1_GRID_UM2_S`; the first state is
    ``state_kind`` 0, the second 1; theta labels are 0. The switch sub-step is drawn
    uniformly over the track as in :func:`simulate_binding`. Changepoints follow the
    physical state, so a track whose two draws coincide (probability 1/120) still has its
    changepoint although the D labels do not change.
    """
    n = _count(n_tracks, "n_tracks", 1)
    t = _count(n_frames, "n_frames", 1)
    acq = _acq(acquisition)
    gen = as_generator(rng)
    D = gen.choice(D1_GRID_UM2_S, (n, 2))
    switch, after = _single_switch_kinds(n, t * acq.substeps_per_frame, gen)
    kinds = after.astype(np.int8)
    states = (D, D.copy(), np.zeros((n, 2)))
    return _assemble("twostate", kinds, states, _start_positions(start_px, n), acq, gen, switch)


def _rate_matrix(switch_rate_per_s: Any, k: int) -> np.ndarray:
    q = np.asarray(switch_rate_per_s, dtype=float)
    if q.ndim == 0:
        q = np.full((k, k), float(q))
    if q.shape != (k, k):
        raise SimulationError(f"switch_rate_per_s must be a number or a {k} x {k} matrix, got shape {q.shape}")
    q = q.copy()
    np.fill_diagonal(q, 0.0)
    if not np.all(np.isfinite(q)) or (q < 0).any():
        raise SimulationError("switching rates must be finite and non-negative (1/s)")
    np.fill_diagonal(q, -q.sum(axis=1))
    return q


def transition_matrix(switch_rate_per_s: Any, n_states: int, interval_s: float) -> np.ndarray:
    """Probability matrix ``P[i, j]`` of being in state ``j`` one interval after state ``i``.

    ``switch_rate_per_s`` is a number (every off-diagonal rate) or a ``k x k`` matrix of
    rates ``i -> j`` in 1/s (diagonal ignored); ``P = expm(Q interval_s)``.
    """
    p = expm(_rate_matrix(switch_rate_per_s, n_states) * float(interval_s))
    p = np.clip(p, 0.0, None)
    return p / p.sum(axis=1, keepdims=True)


def stationary_distribution(p: np.ndarray) -> np.ndarray:
    """Stationary distribution of a transition matrix (uniform when it is not unique)."""
    k = p.shape[0]
    w, v = np.linalg.eig(p.T)
    ones = np.isclose(w, 1.0, atol=1e-10)
    if ones.sum() != 1:
        return np.full(k, 1.0 / k)
    pi = np.real(v[:, np.argmax(ones)])
    pi = np.clip(pi / pi.sum(), 0.0, None)
    return pi / pi.sum()


def markov_chain(
    lengths: np.ndarray, transition: np.ndarray, initial: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Discrete-time Markov chains of different lengths, concatenated.

    Parameters
    ----------
    lengths
        ``(N,)`` number of steps of each chain (>= 1).
    transition
        ``(k, k)`` per-step transition probabilities.
    initial
        ``(N,)`` initial state of each chain.

    Returns
    -------
    ``(sum(lengths),)`` int8 states, chain after chain. Vectorised over chains; the loop
    runs once per sojourn (geometric holding times), not once per step.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = lengths.shape[0]
    total = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    k = transition.shape[0]
    leave = np.clip(1.0 - np.diag(transition), 0.0, 1.0)
    jump = transition.copy()
    np.fill_diagonal(jump, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        jump = np.where(leave[:, None] > 0, jump / jump.sum(axis=1, keepdims=True), 0.0)
    jump_cdf = np.cumsum(jump, axis=1)
    jump_cdf[:, -1] = 1.0
    marks = np.full(total, -1, dtype=np.int8)
    cur = np.asarray(initial, dtype=np.int64).copy()
    marks[offsets[lengths > 0]] = cur[lengths > 0]
    pos = np.zeros(n, dtype=np.int64)
    idx = np.nonzero(lengths > 0)[0]
    while idx.size:
        p = leave[cur[idx]]
        stay = np.full(idx.size, np.iinfo(np.int64).max // 4, dtype=np.int64)
        moving = p > 0
        stay[moving] = rng.geometric(p[moving])
        pos[idx] += stay
        alive = pos[idx] < lengths[idx]
        idx = idx[alive]
        if not idx.size:
            break
        u = rng.random(idx.size)
        new = (u[:, None] >= jump_cdf[cur[idx]]).sum(axis=1)
        new = np.minimum(new, k - 1)
        cur[idx] = new
        marks[offsets[idx] + pos[idx]] = new
    filled = np.where(marks >= 0, np.arange(total), 0)
    np.maximum.accumulate(filled, out=filled)
    return marks[filled]


def draw_state_parameters(
    states: Sequence[Any], n_tracks: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw each track's ``(N, k)`` D1, D2 (um^2/s) and theta (deg) for a list of state specs."""
    specs = [DiffusionState.coerce(s) for s in states]
    n = n_tracks
    D1 = np.empty((n, len(specs)))
    D2 = np.empty((n, len(specs)))
    th = np.empty((n, len(specs)))
    for i, spec in enumerate(specs):
        D1[:, i] = _draw(spec.D1_um2_s, n, rng, f"state {i} D1_um2_s", 0.0, np.inf)
        if spec.D2_um2_s is not None:
            D2[:, i] = _draw(spec.D2_um2_s, n, rng, f"state {i} D2_um2_s", 0.0, np.inf)
            if (D2[:, i] > D1[:, i] * (1 + 1e-12)).any():
                raise SimulationError(f"state {i}: D2_um2_s must not exceed D1_um2_s")
        else:
            D2[:, i] = D1[:, i] * _draw(spec.D2_over_D1, n, rng, f"state {i} D2_over_D1", 0.0, 1.0)
        if spec.theta_deg is None:
            th[:, i] = np.where(D2[:, i] < D1[:, i], rng.uniform(0.0, 180.0, n), 0.0)
        else:
            th[:, i] = np.mod(_draw(spec.theta_deg, n, rng, f"state {i} theta_deg", -np.inf, np.inf), 180.0)
    return D1, D2, th


def simulate_multistate(
    n_tracks: int,
    n_frames: int,
    states: Sequence[Any],
    switch_rate_per_s: Any,
    acquisition: Acquisition | None = None,
    rng: np.random.Generator | int | None = None,
    *,
    start_px: Any = None,
    initial_probabilities: Any = None,
) -> Trajectories:
    """``k`` diffusive states with Markov switching at sub-step resolution.

    Parameters
    ----------
    states
        ``k`` state specifications: :class:`DiffusionState`, dicts of its fields or
        tuples ``(D1_um2_s, D2_over_D1, theta_deg)``; ranges are drawn once per track.
    switch_rate_per_s
        Rate of leaving state ``i`` for state ``j`` (1/s): a number for every pair, or a
        ``k x k`` matrix (diagonal ignored). Per sub-step, states switch with the exact
        probabilities ``expm(Q dt)``, so a long track can hold many changepoints.
    initial_probabilities
        ``(k,)`` distribution of the first sub-step's state; ``None``: the stationary
        distribution of the chain (uniform if it has none unique).
    start_px
        First sub-position, as in :func:`simulate_anisotropic`.
    """
    n = _count(n_tracks, "n_tracks", 1)
    t = _count(n_frames, "n_frames", 1)
    if isinstance(states, (str, Mapping)) or not isinstance(states, Sequence) or len(states) < 1:
        raise SimulationError("states must be a non-empty list of state specifications")
    k = len(states)
    if k > 127:
        raise SimulationError("at most 127 states are supported")
    acq = _acq(acquisition)
    gen = as_generator(rng)
    D1, D2, th = draw_state_parameters(states, n, gen)
    p = transition_matrix(switch_rate_per_s, k, acq.substep_interval_s)
    if initial_probabilities is None:
        pi = stationary_distribution(p)
    else:
        pi = np.asarray(initial_probabilities, dtype=float)
        if pi.shape != (k,) or (pi < 0).any() or not np.isfinite(pi).all() or pi.sum() <= 0:
            raise SimulationError(f"initial_probabilities must be {k} non-negative numbers with a positive sum")
        pi = pi / pi.sum()
    initial = gen.choice(k, n, p=pi)
    length = t * acq.substeps_per_frame
    kinds = markov_chain(np.full(n, length), p, initial, gen).reshape(n, length)
    traj = _assemble("multistate", kinds, (D1, D2, th), _start_positions(start_px, n), acq, gen)
    traj.meta["transition_per_substep"] = p
    return traj


# ------------------------------------------------------------- movie particles
@dataclass
class ParticleStates:
    """State parameters of ``N`` particles of any lengths and the state of every sub-step.

    Attributes
    ----------
    D1_um2_s, D2_um2_s, theta_deg
        ``(N, k)`` parameters of each particle's ``k`` states (um^2/s, um^2/s, degrees).
    substep_kind
        ``(M,)`` int8 state of every sub-step, particle after particle (``M`` the total
        number of sub-steps); ``None`` when every particle has a single state (``k = 1``).
    """

    D1_um2_s: np.ndarray
    D2_um2_s: np.ndarray
    theta_deg: np.ndarray
    substep_kind: np.ndarray | None


def _markov_switching(
    lengths: np.ndarray, switch_rate_per_s: Any, acquisition: Acquisition, rng: np.random.Generator
) -> np.ndarray:
    """``(sum(lengths),)`` int8 two-state Markov chain per particle, started in its stationary law."""
    n = lengths.shape[0]
    p = transition_matrix(switch_rate_per_s, 2, acquisition.substep_interval_s)
    initial = rng.choice(2, n, p=stationary_distribution(p))
    return markov_chain(lengths, p, initial, rng) if n else np.zeros(0, dtype=np.int8)


def particle_states_anisotropic(
    n: int, lengths: np.ndarray, acquisition: Acquisition, rng: np.random.Generator, options: Mapping[str, Any]
) -> ParticleStates:
    """One anisotropic state per particle: ``D1 ~ U(D1_range_um2_s)``, ``D2 = r D1`` with
    ``r ~ U(D2_over_D1_range)``, ``theta ~ U[0, 180)`` (``options`` as in ``movie.plan_movie``)."""
    d1 = rng.uniform(*options["D1_range_um2_s"], n)
    d2 = d1 * rng.uniform(*options["D2_over_D1_range"], n)
    th = rng.uniform(0.0, 180.0, n)
    return ParticleStates(d1[:, None], d2[:, None], th[:, None], None)


def particle_states_binding(
    n: int, lengths: np.ndarray, acquisition: Acquisition, rng: np.random.Generator, options: Mapping[str, Any]
) -> ParticleStates:
    """Bound isotropic (state 0, ``D ~ U(bound_D_range_um2_s)``, theta 0) <-> unbound
    anisotropic (state 1, ``D1 ~ U(unbound_D1_range_um2_s)``, ``D2 = r D1``), Markov
    switching at ``switch_rate_per_s`` (1/s) per sub-step."""
    d_b = rng.uniform(*options["bound_D_range_um2_s"], n)
    d1_u = rng.uniform(*options["unbound_D1_range_um2_s"], n)
    d2_u = d1_u * rng.uniform(*options["D2_over_D1_range"], n)
    th_u = rng.uniform(0.0, 180.0, n)
    kinds = _markov_switching(lengths, options["switch_rate_per_s"], acquisition, rng)
    return ParticleStates(np.stack([d_b, d1_u], axis=1), np.stack([d_b, d2_u], axis=1),
                          np.stack([np.zeros(n), th_u], axis=1), kinds)


def particle_states_two_state(
    n: int, lengths: np.ndarray, acquisition: Acquisition, rng: np.random.Generator, options: Mapping[str, Any]
) -> ParticleStates:
    """Two isotropic states, each ``D ~ U(D1_range_um2_s)`` (theta 0), Markov switching at
    ``switch_rate_per_s`` (1/s) per sub-step."""
    D1 = rng.uniform(*options["D1_range_um2_s"], (n, 2))
    kinds = _markov_switching(lengths, options["switch_rate_per_s"], acquisition, rng)
    return ParticleStates(D1, D1.copy(), np.zeros((n, 2)), kinds)
