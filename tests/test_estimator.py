"""Tests of estimation/estimator.py with tiny TorchScript models built here.

"Planted" models follow the checkpoint contract (``forward_log(patches_photons,
displacements_px, valid)`` -> log D in px^2/frame and (sin 2theta, cos 2theta)) but read
their answer from values planted in the patches, so windowing and blending can be
checked exactly.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.checkpoint import CheckpointError
from napari_spt_diffusion.estimation.estimator import (
    CPU_CHUNK,
    AcquisitionWarning,
    Estimator,
    EstimatorError,
    check_acquisition,
    triangular_weights,
    window_starts,
)
from napari_spt_diffusion.tracking.patches import TrackPatches
from napari_spt_diffusion.training.card import export_checkpoint
from napari_spt_diffusion.training.models import ModelConfig, build_model

MAX_FRAMES = 30
MIN_FRAMES = 5
STANDARD = Acquisition()


class PlantedPointwise(nn.Module):
    """Per frame: log D1 = patch[0, 0], log D2 = log D1 - 1, 2theta = patch[0, 1] (radians)."""

    def __init__(self, max_batch: int = 1000) -> None:
        super().__init__()
        self.max_batch = max_batch
        self.min_frames = MIN_FRAMES
        self.max_frames = MAX_FRAMES

    def forward(self, patches_photons: Tensor, displacements_px: Tensor, valid: Tensor) -> Tensor:
        out = self.forward_log(patches_photons, displacements_px, valid)
        return torch.cat([out[..., :2].exp(), out[..., 2:]], dim=-1)

    @torch.jit.export
    def forward_log(self, patches_photons: Tensor, displacements_px: Tensor, valid: Tensor) -> Tensor:
        if patches_photons.shape[0] > self.max_batch:
            raise RuntimeError("batch larger than allowed")
        if patches_photons.shape[1] > self.max_frames:
            raise RuntimeError("window longer than max_frames")
        a = patches_photons[:, :, 0, 0]
        b = patches_photons[:, :, 0, 1]
        return torch.stack([a, a - 1.0, torch.sin(b), torch.cos(b)], dim=-1)


class WindowMeanPointwise(PlantedPointwise):
    """Every frame of a window gets the window's mean of the planted patch[0, 0]."""

    @torch.jit.export
    def forward_log(self, patches_photons: Tensor, displacements_px: Tensor, valid: Tensor) -> Tensor:
        vf = valid.to(patches_photons.dtype)
        m = (patches_photons[:, :, 0, 0] * vf).sum(1) / vf.sum(1)
        a = m[:, None].expand(valid.shape[0], valid.shape[1])
        one = torch.ones_like(a)
        return torch.stack([a, a - 1.0, 0.0 * one, one], dim=-1)


class DisplacementPointwise(PlantedPointwise):
    """log D1 = the x displacement the model receives (to check the gap scaling)."""

    @torch.jit.export
    def forward_log(self, patches_photons: Tensor, displacements_px: Tensor, valid: Tensor) -> Tensor:
        a = displacements_px[:, :, 1]
        one = torch.ones_like(a)
        return torch.stack([a, a - 1.0, 0.0 * one, one], dim=-1)


class PlantedSequence(PlantedPointwise):
    """One answer per window: means over valid frames of the planted values."""

    @torch.jit.export
    def forward_log(self, patches_photons: Tensor, displacements_px: Tensor, valid: Tensor) -> Tensor:
        vf = valid.to(patches_photons.dtype)
        a = (patches_photons[:, :, 0, 0] * vf).sum(1) / vf.sum(1)
        s = (torch.sin(patches_photons[:, :, 0, 1]) * vf).sum(1) / vf.sum(1)
        c = (torch.cos(patches_photons[:, :, 0, 1]) * vf).sum(1) / vf.sum(1)
        return torch.stack([a, a - 1.0, s, c], dim=-1)


def _card(kind: str, acquisition: Acquisition = STANDARD) -> dict:
    return {
        "kind": kind,
        "motion_model": "binding" if kind == "pointwise" else "aniso",
        "input_contract": {"patch_size_px": 11, "min_frames": MIN_FRAMES, "max_frames": MAX_FRAMES},
        "outputs": {"columns": ["D1_px2_frame", "D2_px2_frame", "sin2theta", "cos2theta"]},
        "training_acquisition": acquisition.to_dict(),
    }


def _export(module: nn.Module, kind: str, folder: Path, name: str) -> str:
    return str(export_checkpoint(module, _card(kind), folder, name))


def _track(track_id: int, n: int, log_d1: np.ndarray | None = None, two_theta: np.ndarray | None = None,
           rng: np.random.Generator | None = None, frames: np.ndarray | None = None) -> TrackPatches:
    rng = rng or np.random.default_rng(track_id)
    patches = (10 + 5 * rng.random((n, 11, 11))).astype(np.float32)
    patches[:, 5, 5] += 500.0
    if log_d1 is not None:
        patches[:, 0, 0] = log_d1
    if two_theta is not None:
        patches[:, 0, 1] = two_theta
    frames = np.arange(100, 100 + n) if frames is None else np.asarray(frames)
    pos = np.cumsum(rng.normal(0, 0.5, (n, 2)), axis=0) + 50.0
    disp = np.zeros_like(pos)
    disp[1:] = np.diff(pos, axis=0)
    gap = np.r_[True, np.diff(frames) > 1]
    return TrackPatches(
        track_id=track_id,
        frames=frames,
        positions_px=pos,
        patches_photons=patches,
        subpixel_offset_px=np.zeros((n, 2)),
        outside_mask=np.zeros((n, 11, 11), dtype=bool),
        displacements_px=disp,
        gap_before=gap,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "planted": _export(PlantedPointwise(), "pointwise", folder, "planted"),
        "small_batch": _export(PlantedPointwise(max_batch=3), "pointwise", folder, "small_batch"),
        "window_mean": _export(WindowMeanPointwise(), "pointwise", folder, "window_mean"),
        "displacement": _export(DisplacementPointwise(), "pointwise", folder, "displacement"),
        "sequence": _export(PlantedSequence(), "sequence", folder, "sequence"),
    }


# ------------------------------------------------------------------ windows
def test_window_starts_cover_every_frame():
    assert list(window_starts(30, 30, 15)) == [0]
    assert list(window_starts(12, 30, 15)) == [0]
    assert list(window_starts(31, 30, 15)) == [0, 1]
    assert list(window_starts(75, 30, 15)) == [0, 15, 30, 45]
    for n in range(30, 200, 7):
        starts = window_starts(n, 30, 15)
        covered = np.zeros(n, dtype=int)
        for s in starts:
            covered[s : s + 30] += 1
        assert covered.min() >= 1 and starts[-1] + 30 == n
        assert np.all(np.diff(starts) <= 15)
    assert list(triangular_weights(5)) == [1, 2, 3, 2, 1]


def test_pointwise_estimates_reproduce_planted_values_at_any_length(models):
    est = Estimator(models["planted"], device="cpu", batch_size=7)
    assert est.kind == "pointwise" and est.max_frames == MAX_FRAMES
    rng = np.random.default_rng(0)
    lengths = [5, 12, 30, 31, 77, 200]
    tracks, truth = [], []
    for i, n in enumerate(lengths):
        log_d1 = rng.uniform(-3, 1.5, n)
        two_theta = rng.uniform(-math.pi, math.pi, n)
        tracks.append(_track(i, n, log_d1, two_theta))
        truth.append((log_d1, two_theta))
    out = est.estimate(tracks, STANDARD)
    assert [r.track_id for r in out] == list(range(len(lengths)))
    for r, n, (log_d1, two_theta) in zip(out, lengths, truth):
        assert r.method == "model" and r.n_frames == n
        assert r.n_windows == len(window_starts(n, MAX_FRAMES, MAX_FRAMES // 2))
        # standard acquisition: 1 px^2/frame = 1 um^2/s
        np.testing.assert_allclose(r.D1_um2_s, np.exp(log_d1), rtol=1e-5)
        np.testing.assert_allclose(r.D2_um2_s, np.exp(log_d1 - 1.0), rtol=1e-5)
        expected_theta = np.mod(np.rad2deg(two_theta / 2.0), 180.0)
        diff = np.abs(r.theta_deg - expected_theta)
        assert np.all(np.minimum(diff, 180 - diff) < 1e-3)


def test_blending_uses_triangular_weights_in_log_space(models):
    est = Estimator(models["window_mean"], device="cpu")
    n = 45  # windows [0, 30) and [15, 45)
    values = np.r_[np.zeros(15), np.linspace(0.0, 1.0, 15), np.full(15, 2.0)]
    (r,) = est.estimate([_track(0, n, values)], STANDARD)
    m0, m1 = values[:30].mean(), values[15:].mean()
    w = triangular_weights(30)
    expected = np.empty(n)
    expected[:15] = m0
    expected[30:] = m1
    f = np.arange(15, 30)
    expected[15:30] = (w[f] * m0 + w[f - 15] * m1) / (w[f] + w[f - 15])
    np.testing.assert_allclose(np.log(r.D1_um2_s), expected, rtol=1e-5, atol=1e-6)


def test_unit_conversion_and_batches_stay_bounded(models):
    est = Estimator(models["small_batch"], device="cpu", batch_size=3)
    acq = STANDARD.replace(pixel_size_nm=110.0, frame_interval_s=0.011)
    tracks = [_track(i, 40, np.full(40, 0.5), np.zeros(40)) for i in range(10)]
    out = est.estimate(tracks, acq)  # a batch above 3 windows would raise inside the model
    factor = acq.diffusion_to_um2_s(1.0)
    for r in out:
        np.testing.assert_allclose(r.D1_um2_s, math.exp(0.5) * factor, rtol=1e-5)
        assert r.track_D1_um2_s == pytest.approx(math.exp(0.5) * factor, rel=1e-5)


def test_gap_displacements_are_scaled_to_one_frame(models):
    est = Estimator(models["displacement"], device="cpu")
    frames = np.r_[np.arange(10), np.arange(13, 23)]  # 4 frame intervals before row 10
    tp = _track(0, 20, frames=frames)
    tp.displacements_px[:, 1] = 0.3
    tp.displacements_px[10, 1] = 2.0
    (r,) = est.estimate([tp], STANDARD)
    log_d1 = np.log(r.D1_um2_s)
    assert log_d1[0] == pytest.approx(0.0, abs=1e-6)  # row 0 is set to 0
    assert log_d1[10] == pytest.approx(1.0, rel=1e-5)  # 2 px over 4 intervals -> 2 / sqrt(4)
    np.testing.assert_allclose(log_d1[np.r_[1:10, 11:20]], 0.3, rtol=1e-5)
    assert "gaps" in r.flags


def test_sequence_model_track_value_from_all_windows(models):
    est = Estimator(models["sequence"], device="cpu")
    assert est.kind == "sequence"
    tracks = [_track(0, 20, np.full(20, 0.7), np.full(20, 1.0)), _track(1, 95, np.full(95, -1.2), np.full(95, -2.0))]
    a, b = est.estimate(tracks, STANDARD)
    assert a.track_D1_um2_s == pytest.approx(math.exp(0.7), rel=1e-5)
    assert b.track_D1_um2_s == pytest.approx(math.exp(-1.2), rel=1e-5)
    assert b.track_theta_deg == pytest.approx(np.mod(np.rad2deg(-1.0), 180.0), abs=1e-3)
    assert np.all(b.D1_um2_s == b.track_D1_um2_s)  # repeated per frame
    assert b.n_windows == 6 and "windows" in b.flags
    # a ramp under symmetric windows (0, 15, 30, 45 for 75 frames): every frame counts once,
    # so the windows' symmetric shares average their D (not log D) around the middle
    ramp = np.linspace(-1.0, 1.0, 75)
    (c,) = est.estimate([_track(2, 75, ramp, np.zeros(75))], STANDARD)
    shares, means = _window_shares_and_means(ramp)
    assert shares[0] == pytest.approx(shares[-1]) and shares[1] == pytest.approx(shares[2])
    assert c.track_D1_um2_s == pytest.approx(np.sum(shares * np.exp(means)) / shares.sum(), rel=1e-5)
    assert c.track_D2_um2_s == pytest.approx(c.track_D1_um2_s * math.exp(-1.0), rel=1e-5)
    # more weight on the second half moves it up, bounded by the window means
    step = np.r_[np.zeros(35), np.ones(40)]
    (d,) = est.estimate([_track(3, 75, step, np.zeros(75))], STANDARD)
    assert 0.4 < math.log(d.track_D1_um2_s) < 40 / 75 + 0.1


def _window_shares_and_means(values: np.ndarray, window: int = MAX_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Each window's share of the track (module docstring of the estimator) and its mean planted value."""
    starts = window_starts(len(values), window, window // 2)
    total = np.zeros(len(values))
    for s0 in starts:
        total[s0:s0 + window] += triangular_weights(window)
    shares = np.array([np.sum(triangular_weights(window) / total[s0:s0 + window]) for s0 in starts])
    return shares, np.array([values[s0:s0 + window].mean() for s0 in starts])


def test_sequence_model_averages_the_windows_tensors_not_their_eigenvalues(models):
    """Windows split D1 > D2 along different axes (an isotropic track's noise): the track's tensor is
    their weighted mean, rounder than any window; averaging the eigenvalues would keep D2 / D1 = 1 / e."""
    est = Estimator(models["sequence"], device="cpu")
    n = 60  # windows at 0, 15 and 30
    two_theta = np.r_[np.zeros(30), np.full(30, np.pi)]  # D1 along x in the first half, along y in the second
    (a,) = est.estimate([_track(0, n, np.zeros(n), two_theta)], STANDARD)
    shares, _ = _window_shares_and_means(np.zeros(n))
    _, cos_means = _window_shares_and_means(np.cos(two_theta))
    # window tensors: D1 = 1, D2 = 1/e along the window's angle; the middle one's mean angle vector is 0
    # (atan2(0, 0) = 0: along x), the first along x, the last along y
    xx = np.array([1.0, 1.0, math.exp(-1.0)])
    yy = np.array([math.exp(-1.0), math.exp(-1.0), 1.0])
    assert cos_means[0] == pytest.approx(1.0) and cos_means[2] == pytest.approx(-1.0)
    expect_xx, expect_yy = np.sum(shares * xx) / shares.sum(), np.sum(shares * yy) / shares.sum()
    assert a.track_D1_um2_s == pytest.approx(max(expect_xx, expect_yy), rel=1e-5)
    assert a.track_D2_um2_s == pytest.approx(min(expect_xx, expect_yy), rel=1e-5)
    assert a.track_D2_um2_s / a.track_D1_um2_s > 0.6


def test_short_tracks_get_the_classical_estimate_flagged(models):
    est = Estimator(models["planted"], device="cpu")
    out = est.estimate([_track(0, 4), _track(1, 2), _track(2, 6, np.zeros(6))], STANDARD)
    assert out[0].method == "classical" and "classical" in out[0].flags
    assert np.isfinite(out[0].track_D1_um2_s) and out[0].track_D1_um2_s >= out[0].track_D2_um2_s >= 0
    assert np.all(out[0].D1_um2_s == out[0].track_D1_um2_s)
    assert out[1].method == "classical" and "too_short" in out[1].flags and math.isnan(out[1].track_D1_um2_s)
    assert out[2].method == "model"


def test_real_cross_transformer_batching_does_not_change_answers(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(kind="pointwise", embed_dim=8, n_heads=2, mlp_hidden=16, head_hidden=8, cnn_channels=(2, 4),
                      n_cross=1, n_self=1, n_joint=1, max_frames=12, min_frames=5)
    card = _card("pointwise")
    card["input_contract"].update(max_frames=12, min_frames=5)
    path = export_checkpoint(build_model(cfg).eval(), card, tmp_path, "tiny")
    est_all = Estimator(str(path), device="cpu", batch_size=64)
    est_one = Estimator(str(path), device="cpu", batch_size=1)
    tracks = [_track(i, n) for i, n in enumerate([5, 9, 12, 13, 30])]
    together = est_all.estimate(tracks, STANDARD)
    alone = est_one.estimate(tracks, STANDARD)
    for a, b in zip(together, alone):
        assert np.all(np.isfinite(a.D1_um2_s)) and np.all(a.D1_um2_s >= a.D2_um2_s)
        np.testing.assert_allclose(a.D1_um2_s, b.D1_um2_s, rtol=1e-4)
        np.testing.assert_allclose(a.theta_deg, b.theta_deg, atol=1e-2)


def test_progress_is_monotone_and_can_stop(models):
    est = Estimator(models["planted"], device="cpu", batch_size=2)
    seen: list[float] = []
    est.estimate([_track(i, 30, np.zeros(30)) for i in range(7)], STANDARD, progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 4

    class Stop(Exception):
        pass

    def stop(f: float, m: str) -> None:
        raise Stop

    with pytest.raises(Stop):
        est.estimate([_track(0, 30, np.zeros(30))], STANDARD, progress=stop)


# ----------------------------------------------------------- acquisition
def test_check_acquisition_warnings():
    card = _card("pointwise")
    card["name"] = "m"
    assert check_acquisition(card, STANDARD) == []
    msgs = check_acquisition(card, STANDARD.replace(pixel_size_nm=160.0, psf_sigma_nm=160.0))
    assert len(msgs) == 1 and "pixel size 160 nm" in msgs[0]  # PSF in px is unchanged
    msgs = check_acquisition(card, STANDARD.replace(psf_sigma_nm=200.0, signal_photons=100.0))
    assert any("PSF sigma 2 px" in m for m in msgs) and any("signal 100" in m for m in msgs)
    card["training_ranges"] = {"signal_photons": [50, 5000]}
    assert not any("signal" in m for m in check_acquisition(card, STANDARD.replace(signal_photons=100.0)))


def test_acquisition_warning_is_issued_once(models):
    est = Estimator(models["planted"], device="cpu")
    far = STANDARD.replace(frame_interval_s=0.05)
    with pytest.warns(AcquisitionWarning, match="frame interval"):
        est.estimate([_track(0, 10, np.zeros(10))], far)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.estimate([_track(0, 10, np.zeros(10))], far)


def test_bad_settings_and_files(models, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(EstimatorError, match="CUDA"):
            Estimator(models["planted"], device="cuda")
    with pytest.raises(EstimatorError):
        Estimator(models["planted"], device="tpu")
    with pytest.raises(EstimatorError):
        Estimator(models["planted"], batch_size=0)
    est = Estimator(models["planted"], device="cpu")
    bad = _track(0, 10)
    bad.patches_photons = bad.patches_photons[:, :9, :9]
    with pytest.raises(EstimatorError, match="11-px"):
        est.estimate([bad], STANDARD)
    pt = Path(models["planted"])
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(pt.read_bytes()[:-10] + b"0123456789")
    (tmp_path / "corrupt.json").write_text(pt.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="does not match"):
        Estimator(str(corrupt), device="cpu")


@pytest.mark.parametrize("kind", ["pointwise", "sequence"])
def test_chunked_model_calls_give_the_answers_of_one_call(tmp_path, kind):
    torch.manual_seed(1)
    cfg = ModelConfig(kind=kind, embed_dim=8, n_heads=2, mlp_hidden=16, head_hidden=8, cnn_channels=(2, 4),
                      n_cross=1, n_self=1, n_joint=1, max_frames=12, min_frames=5)
    card = _card(kind)
    card["input_contract"].update(max_frames=12, min_frames=5)
    path = export_checkpoint(build_model(cfg).eval(), card, tmp_path, "tiny")
    rng = np.random.default_rng(4)
    tracks = [_track(i, int(n)) for i, n in enumerate(rng.integers(5, 30, 23))]
    one_call = Estimator(str(path), device="cpu", batch_size=1000, chunk_size=1000).estimate(tracks, STANDARD)
    chunked = Estimator(str(path), device="cpu", batch_size=1000, chunk_size=4, parallel_calls=1).estimate(
        tracks, STANDARD)
    threads = torch.get_num_threads()
    parallel = Estimator(str(path), device="cpu", batch_size=1000, chunk_size=4, parallel_calls=3).estimate(
        tracks, STANDARD)
    assert torch.get_num_threads() == threads  # restored after the side-by-side calls
    for other in (chunked, parallel):
        assert [r.track_id for r in other] == [r.track_id for r in one_call]
        for a, b in zip(one_call, other):
            np.testing.assert_allclose(b.D1_um2_s, a.D1_um2_s, rtol=1e-5)
            np.testing.assert_allclose(b.D2_um2_s, a.D2_um2_s, rtol=1e-5)
            np.testing.assert_allclose(b.theta_deg, a.theta_deg, atol=1e-3)
    with pytest.raises(EstimatorError, match="chunk_size"):
        Estimator(str(path), device="cpu", chunk_size=0)
    with pytest.raises(EstimatorError, match="parallel_calls"):
        Estimator(str(path), device="cpu", parallel_calls=0)


def test_bundled_model_through_the_estimator_matches_one_direct_call():
    from napari_spt_diffusion.estimation.checkpoint import load_checkpoint

    est = Estimator("aniso", device="cpu")
    assert est.model_call_size() == CPU_CHUNK and est.parallel_workers() == torch.get_num_threads()
    tracks = [_track(i, 30) for i in range(80)]
    out = est.estimate(tracks, STANDARD)
    module, _ = load_checkpoint("aniso")
    patches = torch.from_numpy(np.stack([t.patches_photons for t in tracks]).astype(np.float32))
    disp = np.stack([t.displacements_px for t in tracks]).astype(np.float32)
    disp[:, 0] = 0.0
    with torch.inference_mode():
        ref = module.forward_log(patches, torch.from_numpy(disp), torch.ones(80, 30, dtype=torch.bool)).numpy()
    np.testing.assert_allclose(np.log([r.track_D1_um2_s for r in out]), ref[:, 0], atol=1e-5)
    np.testing.assert_allclose(np.log([r.track_D2_um2_s for r in out]), ref[:, 1], atol=1e-5)
