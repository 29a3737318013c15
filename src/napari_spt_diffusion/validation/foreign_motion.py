"""Motion of the foreign-optics renderer's particles: its own trajectory code.

Written from the physics, sharing nothing with the training simulator
(:mod:`napari_spt_diffusion.simulation`): free isotropic diffusion with D log-uniform,
anisotropic diffusion with seed-aniso tensors, and binding/unbinding between two isotropic
states, each integrated over sub-steps ``p += R(theta) N(0, 1) sqrt(2 D dt_sub)`` per axis.
Used by :mod:`.foreign_renderer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ForeignMotion", "simulate_foreign_paths"]


@dataclass(frozen=True)
class ForeignMotion:
    """Motion model of the particles (its own trajectory code, not the training simulator's).

    Attributes
    ----------
    kind
        ``"free"``: isotropic, D log-uniform in ``d_range``; ``"aniso"``: seed-aniso tensors
        (D1 uniform on ``{step, 2 step, ..., d1_max}``, D2 = r D1 with r ~ U[ratio_range),
        theta ~ U[0, 180) deg); ``"binding"``: isotropic, bound ``d_bound`` <-> unbound
        ``d_unbound``, switching with probability ``switch_prob_per_frame`` per frame (per
        sub-step ``1 - (1 - p)^(1/S)``), start drawn 50/50 (the stationary share).
    d_range
        ``(min, max)`` of D for ``"free"`` (um^2/s).
    d1_step, d1_max
        Grid of D1 for ``"aniso"`` (um^2/s).
    ratio_range
        ``[low, high)`` of D2/D1 for ``"aniso"``.
    d_bound, d_unbound
        D of the two binding states (um^2/s); state 0 is bound, 1 unbound.
    switch_prob_per_frame
        Probability of a switch per frame (binding).
    """

    kind: str = "free"
    d_range: tuple[float, float] = (0.05, 3.0)
    d1_step: float = 0.05
    d1_max: float = 6.0
    ratio_range: tuple[float, float] = (0.1, 1.0)
    d_bound: float = 0.02
    d_unbound: float = 2.0
    switch_prob_per_frame: float = 0.03

    def __post_init__(self) -> None:
        if self.kind not in ("free", "aniso", "binding"):
            raise ValueError(f"motion kind must be free, aniso or binding, got {self.kind!r}")

    @property
    def d_max(self) -> float:
        """Largest D of the model (um^2/s)."""
        return {"free": self.d_range[1], "aniso": self.d1_max, "binding": max(self.d_bound, self.d_unbound)}[self.kind]


def simulate_foreign_paths(motion: ForeignMotion, start_yx_px: np.ndarray, n_frames: int, substeps: int,
                           frame_interval_s: float, pixel_size_um: float,
                           rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sub-step paths of N particles.

    Sub-position 0 of frame 0 is the start; sub-position ``k > 0`` is sub-position ``k - 1``
    plus one step in the state of sub-step ``k``:
    ``(dx, dy) = R(theta) (a1 sqrt(2 D1 dt), a2 sqrt(2 D2 dt)) / pixel``, ``a1, a2 ~ N(0, 1)``,
    ``dt = frame_interval / substeps``. Frame ``f`` holds sub-positions ``f S .. f S + S - 1``.

    Parameters
    ----------
    motion
        The motion model.
    start_yx_px
        Start positions (px), shape ``(N, 2)`` as ``(y, x)``.
    n_frames, substeps
        Frames T and sub-steps per frame S.
    frame_interval_s
        Frame interval (s).
    pixel_size_um
        Pixel side (um).
    rng
        Random generator (parameters, then switches, then steps are drawn in that order).

    Returns
    -------
    dict
        ``y``, ``x``: sub-positions (px), shape ``(N, T S)``; ``state``: state index per
        sub-step, ``(N, T S)``; ``D1``, ``D2``, ``theta_deg``: per particle and state,
        ``(N, n_states)`` (um^2/s, deg); ``label``: per-frame state, ``(N, T)``, the state of
        most of the frame's sub-steps (a tie goes to the state of sub-step ``S // 2``).
    """
    start = np.asarray(start_yx_px, dtype=float).reshape(-1, 2)
    n, steps = start.shape[0], n_frames * substeps
    if motion.kind == "free":
        lo, hi = np.log(motion.d_range[0]), np.log(motion.d_range[1])
        d = np.exp(rng.uniform(lo, hi, n))
        d1, d2, th = d[:, None], d[:, None], np.zeros((n, 1))
    elif motion.kind == "aniso":
        n_grid = int(round(motion.d1_max / motion.d1_step))
        d1 = rng.integers(1, n_grid + 1, n) * motion.d1_step
        d2 = d1 * rng.uniform(motion.ratio_range[0], motion.ratio_range[1], n)
        th = rng.uniform(0.0, 180.0, n)
        d1, d2, th = d1[:, None], d2[:, None], th[:, None]
    else:
        d1 = np.tile([motion.d_bound, motion.d_unbound], (n, 1))
        d2, th = d1.copy(), np.zeros((n, 2))
    if motion.kind == "binding":
        p_sub = 1.0 - (1.0 - motion.switch_prob_per_frame) ** (1.0 / substeps)
        first = rng.integers(0, 2, n)
        flips = rng.random((n, steps)) < p_sub
        flips[:, 0] = False
        state = (first[:, None] + np.cumsum(flips, axis=1)) % 2
    else:
        state = np.zeros((n, steps), dtype=np.int64)
    rows = np.arange(n)[:, None]
    dt = frame_interval_s / substeps
    s1 = np.sqrt(2.0 * d1[rows, state] * dt) / pixel_size_um
    s2 = np.sqrt(2.0 * d2[rows, state] * dt) / pixel_size_um
    ang = np.deg2rad(th[rows, state])
    a = rng.standard_normal((2, n, steps))
    a[:, :, 0] = 0.0  # sub-position 0 is the start
    u, v = a[0] * s1, a[1] * s2
    dx = u * np.cos(ang) - v * np.sin(ang)
    dy = u * np.sin(ang) + v * np.cos(ang)
    x = start[:, 1:2] + np.cumsum(dx, axis=1)
    y = start[:, 0:1] + np.cumsum(dy, axis=1)
    per_frame = state.reshape(n, n_frames, substeps)
    if d1.shape[1] == 1:
        label = np.zeros((n, n_frames), dtype=np.int64)
    else:
        ones = per_frame.sum(axis=2)
        label = np.where(2 * ones > substeps, 1, np.where(2 * ones < substeps, 0, per_frame[:, :, substeps // 2]))
    return {"y": y, "x": x, "state": state, "D1": d1, "D2": d2, "theta_deg": th, "label": label}
