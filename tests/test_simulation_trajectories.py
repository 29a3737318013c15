"""Physics of the simulated trajectories (fixed seeds; tolerances from the sampling error)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation import (
    D1_GRID_UM2_S,
    DiffusionState,
    SimulationError,
    simulate_anisotropic,
    simulate_binding,
    simulate_multistate,
    simulate_two_state,
)
from napari_spt_diffusion.simulation.trajectories import markov_chain, transition_matrix

ACQ = Acquisition()


def _axes(theta_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (y, x) of the D1 and D2 axes."""
    t = math.radians(theta_deg)
    return np.array([math.sin(t), math.cos(t)]), np.array([math.cos(t), -math.sin(t)])


def _substep_series(traj) -> np.ndarray:
    n, t, s, _ = traj.substep_positions_px.shape
    return traj.substep_positions_px.reshape(n, t * s, 2)


def _axis_D_estimate(traj, theta_deg: float, lag: int) -> tuple[float, float, float, float]:
    """Per-axis D (um^2/s) from non-overlapping sub-step displacements at ``lag``, with
    their standard errors (relative error of a variance of n Gaussian samples: sqrt(2/n))."""
    series = _substep_series(traj)
    idx = np.arange(0, series.shape[1] - lag, lag)
    disp = (series[:, idx + lag] - series[:, idx]).reshape(-1, 2)
    u1, u2 = _axes(theta_deg)
    tau_s = lag * ACQ.substep_interval_s
    scale = ACQ.pixel_size_um**2 / (2.0 * tau_s)
    d1 = np.mean((disp @ u1) ** 2) * scale
    d2 = np.mean((disp @ u2) ** 2) * scale
    rel = math.sqrt(2.0 / disp.shape[0])
    return d1, d2, d1 * rel, d2 * rel


def test_anisotropic_shapes_and_parameter_draws():
    traj = simulate_anisotropic(400, 30, rng=1, start_px=(5.0, 7.0))
    assert traj.substep_positions_px.shape == (400, 30, 10, 2)
    assert traj.frame_positions_px.shape == (400, 30, 2)
    for name in ("D1_um2_s", "D2_um2_s", "theta_deg", "state", "state_kind"):
        assert getattr(traj, name).shape == (400, 30)
    d1 = traj.D1_um2_s[:, 0]
    assert np.all(np.isin(np.round(d1, 2), D1_GRID_UM2_S))
    ratio = traj.D2_um2_s[:, 0] / d1
    assert ratio.min() >= 0.1 and ratio.max() < 1.0
    assert traj.theta_deg.min() >= 0 and traj.theta_deg.max() < 180
    assert np.all(traj.D1_um2_s == d1[:, None])  # single state: constant labels
    assert not traj.state.any() and all(c.size == 0 for c in traj.changepoint_frames)
    np.testing.assert_array_equal(traj.substep_positions_px[:, 0, 0], np.tile([5.0, 7.0], (400, 1)))
    # draws spread over the whole grid and the angle range
    assert d1.min() < 0.5 and d1.max() > 5.5
    assert np.ptp(traj.theta_deg[:, 0]) > 170


def test_seed_reproduces_and_differs():
    a = simulate_binding(50, 30, rng=7)
    b = simulate_binding(50, 30, rng=7)
    c = simulate_binding(50, 30, rng=8)
    np.testing.assert_array_equal(a.substep_positions_px, b.substep_positions_px)
    np.testing.assert_array_equal(a.switch_substep, b.switch_substep)
    assert not np.array_equal(a.substep_positions_px, c.substep_positions_px)


@pytest.mark.parametrize("lag", [1, 10, 50])
def test_per_axis_msd_is_2Dt_along_principal_axes(lag):
    D1, D2, theta = 2.0, 0.4, 30.0
    traj = simulate_anisotropic(1500, 20, rng=11, D1_um2_s=D1, D2_over_D1=D2 / D1, theta_deg=theta)
    d1, d2, se1, se2 = _axis_D_estimate(traj, theta, lag)
    assert abs(d1 - D1) < 5 * se1, (d1, D1, se1)
    assert abs(d2 - D2) < 5 * se2, (d2, D2, se2)
    # the cross term along the principal axes vanishes (uncorrelated axes)
    series = _substep_series(traj)
    idx = np.arange(0, series.shape[1] - lag, lag)
    disp = (series[:, idx + lag] - series[:, idx]).reshape(-1, 2)
    u1, u2 = _axes(theta)
    corr = np.mean((disp @ u1) * (disp @ u2)) / math.sqrt(np.mean((disp @ u1) ** 2) * np.mean((disp @ u2) ** 2))
    assert abs(corr) < 5 / math.sqrt(disp.shape[0])


def test_factor_two_error_in_D_would_be_detected():
    """The MSD check above has a tolerance far tighter than a factor 2 in D."""
    D1, theta = 1.0, 120.0
    good = simulate_anisotropic(800, 20, rng=3, D1_um2_s=D1, D2_over_D1=0.5, theta_deg=theta)
    bad = simulate_anisotropic(800, 20, rng=3, D1_um2_s=2 * D1, D2_over_D1=0.5, theta_deg=theta)
    d1_good, _, se, _ = _axis_D_estimate(good, theta, 1)
    d1_bad, _, _, _ = _axis_D_estimate(bad, theta, 1)
    assert abs(d1_good - D1) < 5 * se
    assert abs(d1_bad - D1) > 50 * se


@pytest.mark.parametrize("theta", [0.0, 37.0, 95.0, 160.0])
def test_displacement_covariance_angle_matches_theta(theta):
    traj = simulate_anisotropic(600, 20, rng=int(theta) + 5, D1_um2_s=3.0, D2_over_D1=0.25, theta_deg=theta)
    series = _substep_series(traj)
    disp = np.diff(series, axis=1).reshape(-1, 2)
    dy, dx = disp[:, 0], disp[:, 1]
    cxx, cyy, cxy = np.mean(dx * dx), np.mean(dy * dy), np.mean(dx * dy)
    angle = math.degrees(0.5 * math.atan2(2 * cxy, cxx - cyy)) % 180.0
    err = (angle - theta + 90.0) % 180.0 - 90.0
    # angle standard error ~ sqrt((1 + r^2) / ((1 - r)^2 n)) rad with r = D2/D1; n = 1.2e5 -> ~0.3 deg
    assert abs(err) < 1.5, (angle, theta)


def test_frame_position_is_mean_of_exposed_substeps():
    acq = Acquisition(exposure_s=0.005)  # 5 of the 10 sub-steps exposed
    traj = simulate_anisotropic(20, 10, acq, rng=2, D1_um2_s=1.0)
    assert acq.exposed_substeps == 5
    expected = traj.substep_positions_px[:, :, :5, :].mean(axis=2)
    np.testing.assert_allclose(traj.frame_positions_px, expected)
    assert not np.allclose(traj.frame_positions_px, traj.substep_positions_px.mean(axis=2))


@pytest.mark.parametrize("exposure_s", [None, 0.004])
def test_frame_displacements_follow_blur_formula(exposure_s):
    """<dx^2> = 2 D dt (1 - 2R) and <dx_n dx_n+1> = 2 R D dt per axis (no localization noise)."""
    acq = Acquisition(exposure_s=exposure_s)
    D = 1.5
    traj = simulate_anisotropic(4000, 12, acq, rng=9, D1_um2_s=D, D2_over_D1=1.0, theta_deg=0.0)
    d = np.diff(traj.frame_positions_px, axis=1)  # (N, T-1, 2)
    dpx = acq.diffusion_to_px2_per_frame(D)
    R = acq.blur_coefficient
    var = np.mean(d**2)
    expected = 2 * dpx * (1 - 2 * R)
    assert abs(var / expected - 1) < 5 * math.sqrt(2 / d.size)
    cov = np.mean(d[:, 1:-1:2] * d[:, 2::2])  # disjoint pairs
    n_pairs = d[:, 1:-1:2].size
    assert abs(cov - 2 * R * dpx) < 5 * expected / math.sqrt(n_pairs)


def _expected_frame_labels(switch: int, first: int, n_frames: int, s: int) -> np.ndarray:
    """Independent majority rule: the later state wins a frame with >= S/2 of its sub-steps."""
    labels = np.empty(n_frames, dtype=int)
    for f in range(n_frames):
        after = sum(1 for j in range(f * s, (f + 1) * s) if j >= switch)
        labels[f] = (1 - first) if 2 * after >= s else first
    return labels


def test_binding_labels_and_changepoints_follow_substep_switch():
    n, t, s = 300, 30, ACQ.substeps_per_frame
    traj = simulate_binding(n, t, rng=21)
    assert traj.switch_substep.shape == (n,)
    assert traj.switch_substep.min() >= 1 and traj.switch_substep.max() <= t * s - 1
    for i in range(n):
        c = int(traj.switch_substep[i])
        first = 0 if i % 2 == 0 else 1  # even tracks start bound
        sub = traj.substep_state_kind[i].reshape(-1)
        assert np.all(sub[:c] == first) and np.all(sub[c:] == 1 - first)
        labels = _expected_frame_labels(c, first, t, s)
        np.testing.assert_array_equal(traj.state_kind[i], labels)
        change = np.nonzero(np.diff(labels))[0] + 1
        np.testing.assert_array_equal(traj.changepoint_frames[i], change)
        np.testing.assert_array_equal(traj.state[i], np.cumsum(np.r_[0, np.diff(labels) != 0]))
    bound = traj.state_kind == 0
    assert np.all((traj.D1_um2_s[bound] >= 0.005) & (traj.D1_um2_s[bound] < 0.01))
    assert np.all(traj.D1_um2_s[bound] == traj.D2_um2_s[bound]) and np.all(traj.theta_deg[bound] == 0)
    unbound = ~bound
    assert np.all((traj.D1_um2_s[unbound] >= 3) & (traj.D1_um2_s[unbound] < 6))
    r = traj.D2_um2_s[unbound] / traj.D1_um2_s[unbound]
    assert r.min() >= 0.1 and r.max() < 1
    # about one track in 30 switches in the first or last half-frame and has no changepoint
    with_cp = sum(c.size == 1 for c in traj.changepoint_frames)
    assert with_cp > 0.9 * n


def test_binding_motion_switches_at_the_switch_substep():
    """Squared sub-steps before/after the switch match the state's D1 + D2 (aggregated)."""
    n, t = 400, 30
    traj = simulate_binding(n, t, rng=4)
    steps = np.diff(_substep_series(traj), axis=1)  # step j -> j+1 is taken in the state of sub-step j+1
    kind = traj.substep_state_kind.reshape(n, -1)[:, 1:]
    # state parameters per track, read back from the frame labels
    D1b = np.array([traj.D1_um2_s[i][traj.state_kind[i] == 0][0] if (traj.state_kind[i] == 0).any() else np.nan
                    for i in range(n)])
    sq = np.sum(steps**2, axis=2)
    unit = ACQ.diffusion_to_px2_per_substep(1.0)
    bound_steps = np.sum((kind == 0) & ~np.isnan(D1b)[:, None])
    bound_ratio = np.nansum(np.where(kind == 0, sq / (4 * D1b[:, None] * unit), 0)) / bound_steps
    n_bound = np.sum(kind == 0)
    assert abs(bound_ratio - 1) < 5 * math.sqrt(1 / n_bound)  # sum of 2 chi2(1)/2: rel var 1/n
    ub = traj.D1_um2_s + traj.D2_um2_s
    ub_track = np.array([ub[i][traj.state_kind[i] == 1][0] if (traj.state_kind[i] == 1).any() else np.nan
                         for i in range(n)])
    sel = (kind == 1) & ~np.isnan(ub_track)[:, None]
    ratio = np.sum(np.where(sel, sq / (2 * ub_track[:, None] * unit), 0)) / sel.sum()
    assert abs(ratio - 1) < 5 * math.sqrt(1 / sel.sum())


def test_two_state_labels_and_changepoints():
    n, t, s = 300, 30, ACQ.substeps_per_frame
    traj = simulate_two_state(n, t, rng=5)
    assert np.all(traj.D1_um2_s == traj.D2_um2_s) and not traj.theta_deg.any()
    assert np.all(np.isin(np.round(traj.D1_um2_s, 2), D1_GRID_UM2_S))
    for i in range(n):
        c = int(traj.switch_substep[i])
        labels = _expected_frame_labels(c, 0, t, s)
        np.testing.assert_array_equal(traj.state_kind[i], labels)
        np.testing.assert_array_equal(traj.changepoint_frames[i], np.nonzero(np.diff(labels))[0] + 1)
        # the label values are the state's D
        first_D = traj.D1_um2_s[i][labels == 0]
        assert first_D.size == 0 or np.all(first_D == first_D[0])


def test_multistate_switching_statistics():
    states = [
        DiffusionState(D1_um2_s=0.01),
        DiffusionState(D1_um2_s=(1.0, 2.0), D2_over_D1=0.3),
        {"D1_um2_s": 4.0, "D2_um2_s": 4.0},
    ]
    rates = np.array([[0, 4.0, 1.0], [2.0, 0, 2.0], [3.0, 3.0, 0]])  # 1/s
    n, t = 200, 400
    traj = simulate_multistate(n, t, states, rates, rng=13)
    sub = traj.substep_state_kind.reshape(n, -1)
    # stationary occupancy of the continuous-time chain: pi Q = 0
    q = rates.copy()
    np.fill_diagonal(q, -rates.sum(axis=1))
    w, v = np.linalg.eig(q.T)
    pi = np.real(v[:, np.argmin(np.abs(w))])
    pi /= pi.sum()
    occupancy = np.bincount(sub.reshape(-1), minlength=3) / sub.size
    # correlated samples: effective number ~ total time / mean dwell (0.2-0.5 s) per track
    n_eff = n * (t * ACQ.frame_interval_s) / 0.5
    assert np.all(np.abs(occupancy - pi) < 5 * np.sqrt(pi * (1 - pi) / n_eff)), (occupancy, pi)
    # switch rate per unit time: sum_i pi_i * (total leaving rate of i), up to O(dt) corrections
    switches = np.sum(sub[:, 1:] != sub[:, :-1])
    duration_s = n * (sub.shape[1] - 1) * ACQ.substep_interval_s
    expected = duration_s * float(pi @ rates.sum(axis=1))
    assert abs(switches - expected) < 5 * math.sqrt(expected) + 0.01 * expected
    # several changepoints per long track, and state increments at each one
    assert np.median([c.size for c in traj.changepoint_frames]) >= 5
    for i in range(5):
        steps = np.diff(traj.state[i])
        assert set(np.unique(steps)) <= {0, 1}
        np.testing.assert_array_equal(np.nonzero(steps)[0] + 1, traj.changepoint_frames[i])
        np.testing.assert_array_equal(np.nonzero(np.diff(traj.state_kind[i]))[0] + 1, traj.changepoint_frames[i])
    # labels carry each state's parameters
    k0 = traj.state_kind == 0
    assert np.allclose(traj.D1_um2_s[k0], 0.01) and np.all(traj.theta_deg[k0] == 0)
    k1 = traj.state_kind == 1
    assert np.all((traj.D1_um2_s[k1] >= 1) & (traj.D1_um2_s[k1] < 2))
    np.testing.assert_allclose(traj.D2_um2_s[k1], 0.3 * traj.D1_um2_s[k1])
    k2 = traj.state_kind == 2
    assert np.all(traj.D1_um2_s[k2] == 4.0) and np.all(traj.D2_um2_s[k2] == 4.0)


def test_markov_chain_holding_times_are_geometric():
    p = transition_matrix(np.array([[0, 50.0], [20.0, 0]]), 2, 0.001)
    rng = np.random.default_rng(0)
    chain = markov_chain(np.array([200_000]), p, np.array([0]), rng)
    runs = np.diff(np.flatnonzero(np.r_[True, chain[1:] != chain[:-1], True]))
    kinds = chain[np.r_[0, np.cumsum(runs)[:-1]]]
    inner = slice(1, -1)  # drop censored first and last runs
    for state, p_leave in ((0, 1 - p[0, 0]), (1, 1 - p[1, 1])):
        r = runs[inner][kinds[inner] == state]
        mean = 1 / p_leave
        sd = math.sqrt(1 - p_leave) / p_leave
        assert abs(r.mean() - mean) < 5 * sd / math.sqrt(r.size)


def test_markov_chain_ragged_lengths_and_no_switching():
    p = np.eye(3)
    chain = markov_chain(np.array([3, 1, 5]), p, np.array([2, 0, 1]), np.random.default_rng(0))
    np.testing.assert_array_equal(chain, [2, 2, 2, 0, 1, 1, 1, 1, 1])


@pytest.mark.parametrize(
    "call",
    [
        lambda: simulate_anisotropic(0, 30),
        lambda: simulate_anisotropic(5, 0),
        lambda: simulate_anisotropic(5, 30, D2_over_D1=1.5),
        lambda: simulate_anisotropic(5, 30, D1_um2_s=-1.0),
        lambda: simulate_anisotropic(5, 30, D1_um2_s=[1.0, 2.0]),
        lambda: simulate_anisotropic(5, 30, start_px=(1.0, 2.0, 3.0)),
        lambda: simulate_anisotropic(5, 30, rng="seed"),
        lambda: simulate_binding(5, 30, acquisition="standard"),
        lambda: simulate_multistate(5, 30, [], 1.0),
        lambda: simulate_multistate(5, 30, [(1.0,), (2.0,)], -1.0),
        lambda: simulate_multistate(5, 30, [(1.0,), (2.0,)], np.ones((3, 3))),
        lambda: simulate_multistate(5, 30, [{"D1_um2_s": 1.0, "D2_um2_s": 2.0}], 1.0),
        lambda: simulate_multistate(5, 30, [{"D1": 1.0}], 1.0),
    ],
)
def test_bad_input_raises_simulation_error(call):
    with pytest.raises(SimulationError):
        call()
