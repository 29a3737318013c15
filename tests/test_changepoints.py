"""Tests of estimation/changepoints.py (cost, decisions including "none", several changes),
estimation/confirmation.py, estimation/segments.py and the tensor mean of estimation/tensor.py."""

from __future__ import annotations

import numpy as np
import pytest

from napari_spt_diffusion.estimation import changepoints as cp
from napari_spt_diffusion.estimation import confirmation as cc
from napari_spt_diffusion.estimation.segments import segments
from napari_spt_diffusion.estimation.tensor import mean_tensor


def _ar1(n: int, t: int, rho: float, sigma: float, rng: np.random.Generator, k: int = 2) -> np.ndarray:
    white = rng.normal(size=(n, t, k))
    out = np.empty_like(white)
    out[:, 0] = white[:, 0]
    for i in range(1, t):
        out[:, i] = rho * out[:, i - 1] + np.sqrt(1 - rho**2) * white[:, i]
    return sigma * out


def _sse(x: np.ndarray) -> float:
    return float(((x - x.mean(axis=0)) ** 2).sum()) if len(x) else 0.0


# ------------------------------------------------------------ single change
def test_single_changepoint_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = int(rng.integers(6, 40))
        x = rng.normal(size=(t, 2))
        x[int(rng.integers(1, t)) :] += rng.normal(0, 1.5, size=2)
        c, gain = cp.single_changepoint(x)
        costs = [_sse(x[:s]) + _sse(x[s:]) for s in range(1, t)]
        best = int(np.argmin(costs)) + 1
        assert c == best
        assert gain == pytest.approx(_sse(x) - costs[best - 1], rel=1e-9, abs=1e-9)


def test_single_changepoint_exact_on_clean_step_and_1d_input():
    x = np.r_[np.full(13, 2.0), np.full(17, -1.0)]
    c, gain = cp.single_changepoint(x)
    assert c == 13
    assert gain == pytest.approx(13 * 17 / 30 * 9.0)
    assert cp.single_changepoint(np.ones(1)) == (0, 0.0)


def test_decision_none_on_one_state_tracks():
    # calibrated to <= 1 % false positives; 400 tracks: more than 12 would be 5 sigma off
    rng = np.random.default_rng(1)
    for rho in (0.0, 0.5):
        seqs = _ar1(400, 30, rho, 0.1, rng) + np.log10(2.0)
        n_fp = sum(cp.decide_single_changepoint(s) is not None for s in seqs)
        assert n_fp <= 12, (rho, n_fp)


def test_decision_finds_binding_switch_at_the_right_frame():
    rng = np.random.default_rng(2)
    found = 0
    for _ in range(100):
        c_true = int(rng.integers(3, 28))
        truth = np.where(np.arange(30)[:, None] < c_true, np.log10(0.0075), np.log10([4.5, 2.0]))
        x = truth + _ar1(1, 30, 0.5, 0.15, rng)[0]
        c = cp.decide_single_changepoint(x)
        assert c is not None
        found += abs(c - c_true) <= 1
    assert found >= 97


def test_min_effect_rejects_tiny_but_significant_drift():
    rng = np.random.default_rng(3)
    x = np.r_[np.zeros(100), np.full(100, 0.05)] + rng.normal(0, 0.005, 200)
    assert cp.decide_single_changepoint(x) is None
    assert cp.decide_single_changepoint(x, min_effect=0.0) == pytest.approx(100, abs=2)


def test_statistic_accounts_for_correlated_noise():
    # the same marginal noise, strongly correlated, must give a smaller statistic on average
    rng = np.random.default_rng(4)
    z_iid = np.mean([cp.changepoint_statistic(s)[1] for s in _ar1(200, 50, 0.0, 0.1, rng)])
    z_cor = np.mean([cp.changepoint_statistic(s)[1] for s in _ar1(200, 50, 0.8, 0.1, rng)])
    raw_iid = np.mean([cp.single_changepoint(s)[1] for s in _ar1(200, 50, 0.0, 0.1, rng)])
    raw_cor = np.mean([cp.single_changepoint(s)[1] for s in _ar1(200, 50, 0.8, 0.1, rng)])
    assert raw_cor > 2 * raw_iid  # correlated noise makes spurious splits look better ...
    assert z_cor < 2 * z_iid  # ... which the long-run variance compensates


# ---------------------------------------------------------- several changes
@pytest.mark.parametrize("method", ["binseg", "pelt"])
def test_multiple_changepoints_recovers_switches(method):
    rng = np.random.default_rng(5)
    true = [40, 75, 140]
    levels = [np.log10([4.0, 1.5]), np.log10([0.008, 0.008]), np.log10([3.0, 2.5]), np.log10([0.006, 0.006])]
    truth = np.concatenate([np.tile(lv, (b - a, 1)) for lv, a, b in zip(levels, [0, *true], [*true, 200])])
    for _ in range(10):
        x = truth + _ar1(1, 200, 0.5, 0.12, rng)[0]
        found = cp.multiple_changepoints(x, method=method)
        assert len(found) == 3
        assert np.all(np.abs(found - true) <= 1)


@pytest.mark.parametrize("method", ["binseg", "pelt"])
def test_multiple_changepoints_none_on_long_one_state_tracks(method):
    rng = np.random.default_rng(6)
    seqs = _ar1(100, 200, 0.5, 0.1, rng)
    n_fp = sum(len(cp.multiple_changepoints(s, method=method)) > 0 for s in seqs)
    assert n_fp <= 6  # calibrated <= 2 %


def test_max_changepoints_keeps_the_strongest():
    x = np.r_[np.zeros(30), np.full(30, 3.0), np.full(30, 3.5), np.zeros(30)]
    x = x + np.random.default_rng(7).normal(0, 0.05, x.size)
    found = cp.multiple_changepoints(x, max_changepoints=2)
    assert list(found) == [30, 90]


def test_pelt_matches_ruptures():
    ruptures = pytest.importorskip("ruptures")
    rng = np.random.default_rng(8)
    for _ in range(6):
        n = int(rng.integers(20, 60))
        x = rng.normal(size=(n, 2))
        for c in sorted(rng.choice(np.arange(3, n - 3), int(rng.integers(0, 4)), replace=False)):
            x[c:] += rng.normal(0, 2, size=2)
        pen = float(rng.uniform(2, 20))
        ms = int(rng.integers(1, 4))
        ours = list(cp.pelt(x, pen, ms))
        theirs = ruptures.Pelt(model="l2", min_size=ms, jump=1).fit(x).predict(pen=pen)[:-1]
        assert ours == theirs


def test_robust_noise_variance_ignores_jumps():
    rng = np.random.default_rng(9)
    x = _ar1(1, 400, 0.5, 0.1, rng)[0]
    v = cp.robust_noise_variance(x)
    x_jumps = x + np.repeat([0.0, 2.0, -1.0, 3.0], 100)[:, None]
    v_jumps = cp.robust_noise_variance(x_jumps)
    long_run = 0.1**2 * 1.5 / 0.5
    # batch means on 66 blocks: within [0.3, 1.6] x the truth at this correlation (10-90 %: 0.45-1.0)
    assert np.all((v > 0.3 * long_run) & (v < 1.6 * long_run))
    # jumps of 10-30 noise sigmas barely move it (the plain variance grows ~60-fold)
    assert np.all(v_jumps < 1.5 * v)
    assert np.all(x_jumps.var(axis=0) > 20 * v_jumps)


# ----------------------------------------------------------------- segments
def test_segments_and_state_labels():
    d1 = np.r_[np.full(10, 4.0), np.full(5, 0.01), np.full(5, 2.0)]
    d2 = np.r_[np.full(10, 1.0), np.full(5, 0.01), np.full(5, 2.0)]
    theta = np.r_[np.full(5, 179.0), np.full(5, 1.0), np.zeros(10)]
    table = segments([10, 15], d1, d2, theta, frames=np.arange(100, 120))
    assert list(table["state"]) == [0, 1, 2]
    assert list(table["start_frame"]) == [100, 110, 115]
    assert list(table["end_frame"]) == [109, 114, 119]
    # time-averaged tensor: 179 and 1 degrees differ by 2 degrees, so D1 shrinks by 1.5 (1 - cos 2deg)
    assert table["D1_um2_s"].tolist() == pytest.approx([2.5 + 1.5 * np.cos(np.deg2rad(2.0)), 0.01, 2.0])
    # doubled-angle mean of 179 and 1 degrees is 0, not 90
    assert min(table["theta_deg"][0], 180 - table["theta_deg"][0]) == pytest.approx(0.0, abs=1e-6)
    assert list(cp.state_labels(6, [2, 4])) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(cp.ChangepointError):
        cp.state_labels(6, [4, 2])
    with pytest.raises(cp.ChangepointError):
        cp.state_labels(6, [6])


def test_mean_tensor_is_the_time_averaged_tensor():
    # an isotropic frame with a meaningless angle must not pull the mean orientation
    d1, d2, th = mean_tensor([4.0, 1.0], [1.0, 1.0], [30.0, 120.0])
    assert (d1, d2, th) == pytest.approx((2.5, 1.0, 30.0))
    # perpendicular frames of equal anisotropy average to an isotropic tensor
    d1, d2, th = mean_tensor([3.0, 3.0], [1.0, 1.0], [10.0, 100.0])
    assert (d1, d2, th) == pytest.approx((2.0, 2.0, 0.0))
    from napari_spt_diffusion.estimation.tensor import eigen_from_tensor, tensor_from_eigen

    rng = np.random.default_rng(10)
    a, b, t = rng.uniform(1, 5, 7), rng.uniform(0, 1, 7), rng.uniform(0, 180, 7)
    ref = eigen_from_tensor(tensor_from_eigen(a, b, t).mean(axis=0))
    assert mean_tensor(a, b, t) == pytest.approx(tuple(float(v) for v in ref))


def test_features_are_floored_log10():
    f = cp.changepoint_features([1.0, 0.0, 10.0], [0.1, 0.0, 1.0])
    assert f.shape == (3, 2)
    assert f[:, 0].tolist() == pytest.approx([0.0, -3.0, 1.0])


def test_bad_input_is_refused():
    with pytest.raises(cp.ChangepointError):
        cp.single_changepoint(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(cp.ChangepointError):
        cp.multiple_changepoints(np.zeros((3, 3, 3)))
    with pytest.raises(cp.ChangepointError):
        cp.multiple_changepoints(np.zeros(10), method="magic")


# ------------------------------------------------- confirmation on displacements
def _one_state_positions(n: int, t: int, rng: np.random.Generator, loc_px: float = 0.05):
    """(N, T, 2) localized positions (px) of one-state anisotropic tracks, D1 in 0.05-6 um^2/s."""
    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.simulation.trajectories import simulate_anisotropic

    acq = Acquisition()
    traj = simulate_anisotropic(n, t, acq, rng)
    pos = traj.frame_positions_px + rng.normal(0, loc_px, size=traj.frame_positions_px.shape)
    return pos, acq.blur_coefficient


def test_displacement_test_is_calibrated_on_one_state_tracks():
    # a fixed split of one-state tracks (blur, anisotropy, 5 nm noise): about 5 % of p-values below 0.05
    rng = np.random.default_rng(20)
    pos, blur = _one_state_positions(600, 30, rng)
    p = np.array([cc.displacement_variance_test(np.diff(x[:12], axis=0), np.diff(x[12:], axis=0), blur, 0.05**2)
                  for x in pos])
    assert 0.02 <= np.mean(p < 0.05) <= 0.08
    assert np.all((p >= 0) & (p <= 1))


def test_confirmation_removes_changepoints_of_one_state_tracks():
    # worst case: on each one-state track the candidate is put where the displacements differ most
    # (a scan); with the scan correction at most alpha = 5 % of tracks may keep it, and the default
    # (Bonferroni over candidates only) on 3 random candidates per track stays below 5 % too
    rng = np.random.default_rng(21)
    pos, blur = _one_state_positions(300, 40, rng)
    kept_scan = kept_random = 0
    for x in pos:
        q = np.sum(np.diff(x, axis=0) ** 2, axis=1)
        ratios = [abs(np.log(q[: c - 1].mean() / q[c:].mean())) for c in range(3, 37)]
        worst = 3 + int(np.argmax(ratios))
        kept_scan += len(cc.confirm_changepoints([worst], x, np.arange(40), blur, 0.05, scan_correction=True))
        cands = np.sort(rng.choice(np.arange(3, 37), 3, replace=False))
        kept_random += len(cc.confirm_changepoints(cands, x, np.arange(40), blur, 0.05)) > 0
    assert kept_scan <= 15, kept_scan
    assert kept_random <= 15, kept_random


def test_clear_binding_switch_is_decided_and_confirmed_at_the_right_frame():
    # bound (0.0075 um^2/s) -> unbound (D1 4.5, D2 2 um^2/s): features from noisy per-frame
    # estimates, positions from the walk itself; the switch is found within one frame and kept
    from napari_spt_diffusion.acquisition import Acquisition

    acq = Acquisition()
    rng = np.random.default_rng(22)
    found = 0
    for _ in range(60):
        c_true = int(rng.integers(4, 27))
        truth = np.where(np.arange(30)[:, None] < c_true, np.log10(0.0075), np.log10([4.5, 2.0]))
        x = truth + _ar1(1, 30, 0.5, 0.15, rng)[0]
        d = np.where(np.arange(30)[:, None] < c_true, 0.0075, [4.5, 2.0])
        steps = rng.normal(size=(30, 2)) * np.sqrt(2 * d * acq.frame_interval_s) / acq.pixel_size_um
        pos = np.cumsum(steps, axis=0) + rng.normal(0, 0.05, size=(30, 2))
        c = cp.decide_single_changepoint(x)
        assert c is not None
        kept = cc.confirm_changepoints([c], pos, np.arange(30), acq.blur_coefficient, 0.05)
        found += len(kept) == 1 and abs(int(kept[0]) - c_true) <= 1
    assert found >= 58


def test_confirmation_needs_displacements_on_both_sides_and_skips_gaps():
    rng = np.random.default_rng(23)
    slow = rng.normal(0, 0.05, size=(20, 2))
    fast = 10.0 + np.cumsum(rng.normal(0, 3.0, size=(20, 2)), axis=0)
    pos = np.vstack([slow, fast])
    frames = np.arange(40)
    assert cc.confirm_changepoints([20], pos, frames, 1 / 6, 0.05).tolist() == [20]
    # a state of a single frame at the start has no displacement of its own: not confirmable
    assert cc.confirm_changepoints([1], np.vstack([slow[:1], fast]), np.arange(21), 1 / 6, 0.05).size == 0
    # the big jump across a gap is not a displacement of either state
    still = np.vstack([slow[:10], slow[10:] + 30.0])
    gap_frames = np.r_[np.arange(10), np.arange(15, 25)]
    assert cc.confirm_changepoints([10], still, gap_frames, 1 / 6, 0.05).size == 0
    assert cc.confirm_changepoints([], pos, frames, 1 / 6).size == 0
    with pytest.raises(cp.ChangepointError, match="one row per sample"):
        cc.confirm_changepoints([5], pos, frames[:-1], 1 / 6)
    with pytest.raises(cp.ChangepointError, match="alpha"):
        cc.confirm_changepoints([5], pos, frames, 1 / 6, alpha=0.0)
