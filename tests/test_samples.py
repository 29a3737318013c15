"""Training/test samples made through the tracking path (training/samples.py)."""

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation.render import camera_image, render_windows
from napari_spt_diffusion.simulation.trajectories import SimulationError, simulate_anisotropic
from napari_spt_diffusion.tracking.patches import extract_track_patches
from napari_spt_diffusion.tracking.spots import locate_frame
from napari_spt_diffusion.training.samples import (
    SampleBatch,
    load_samples,
    make_samples,
    samples_from_trajectories,
    save_samples,
)


@pytest.fixture(scope="module")
def aniso():
    return make_samples("aniso", 40, n_frames=12, seed=1)


def test_shapes_types_and_labels(aniso):
    b = aniso
    assert isinstance(b, SampleBatch) and len(b) == 40 and b.n_frames == 12
    assert b.patches.shape == (40, 12, 11, 11) and b.patches.dtype == np.float32
    assert b.displacements.shape == (40, 12, 2) and b.displacements.dtype == np.float32
    assert b.labels.shape == (40, 12, 4)
    assert b.valid.all()
    # single-state labels are constant along each track and inside the protocol ranges
    assert np.all(b.D1_um2_s == b.D1_um2_s[:, :1]) and np.all(b.theta_deg == b.theta_deg[:, :1])
    assert np.all((b.D2_um2_s <= b.D1_um2_s) & (b.D1_um2_s >= 0.05) & (b.D1_um2_s <= 6.0))
    assert np.all(b.changepoint_frames == -1) and np.all(b.state == 0)
    # patches hold photo-electrons: background ~10 per pixel plus ~1000 signal photons
    total = b.patches.sum(axis=(2, 3)) - 121 * 10.0
    assert 700 < np.median(total) < 1100


def test_positions_are_localized_not_true_and_displacements_follow_them(aniso):
    b = aniso
    err = b.positions_px - b.true_positions_px
    assert 0.0 < np.sqrt(np.mean(err**2)) < 0.5
    assert np.allclose(b.displacements[:, 1:], np.diff(b.positions_px, axis=1), atol=1e-4)
    assert np.all(b.displacements[:, 0] == 0)
    assert np.all((b.subpixel_offset_px >= -0.5) & (b.subpixel_offset_px < 0.5))
    centre = np.floor(b.positions_px + 0.5)
    assert np.allclose(b.positions_px - centre, b.subpixel_offset_px, atol=1e-5)
    assert b.detected.mean() > 0.98 and b.fit_ok.mean() > 0.95
    assert not b.outside_mask.any()
    # the spot sits at the patch centre: the centre pixel is the brightest on average
    mean_patch = b.patches.mean(axis=(0, 1))
    assert np.unravel_index(np.argmax(mean_patch), mean_patch.shape) == (5, 5)


def test_same_seed_same_samples_other_seed_other_samples(aniso):
    again = make_samples("aniso", 40, n_frames=12, seed=1)
    assert np.array_equal(again.patches, aniso.patches)
    assert np.array_equal(again.positions_px, aniso.positions_px)
    other = make_samples("aniso", 40, n_frames=12, seed=2)
    assert not np.array_equal(other.D1_um2_s, aniso.D1_um2_s)


def test_samples_equal_what_the_tracker_gives_on_the_same_frames():
    """The patch of a sample is the patch that inference cuts from a movie of that window,
    and its position is the pipeline's spot path's localization on a frame of those windows."""
    acq = Acquisition()
    n, t_len, w = 7, 7, 19  # 49 windows tile one 7 x 7 mosaic exactly: row = track, column = frame
    traj = simulate_anisotropic(n, t_len, acq, np.random.default_rng(3), D1_um2_s=2.0, start_px=np.full((n, 2), 40.0))
    batch = samples_from_trajectories(traj, np.random.default_rng(4))
    assert batch.meta["window_size"] == w
    # Re-render the identical windows (same generator, one mosaic) and put each into a movie.
    pos = traj.frame_positions_px
    origin = np.floor(pos + 0.5).astype(int) - w // 2
    windows = camera_image(render_windows(traj.substep_positions_px, origin, w, acq), acq, np.random.default_rng(4))
    for i in range(n):
        movie = np.full((t_len, 100, 100), 110, dtype=np.uint16)
        for t in range(t_len):
            y, x = origin[i, t]
            movie[t, y : y + w, x : x + w] = windows[i, t]
        table = pd.DataFrame({"track_id": 0, "frame": np.arange(t_len), "y_px": batch.positions_px[i, :, 0],
                              "x_px": batch.positions_px[i, :, 1]})
        (tp,) = extract_track_patches(movie, table, acq)
        assert np.array_equal(tp.patches_photons, batch.patches[i])
        assert np.allclose(tp.displacements_px, batch.displacements[i], atol=1e-4)
    # the pipeline's per-frame spot path on one frame made of all the windows gives the same positions
    frame = windows.transpose(0, 2, 1, 3).reshape(n * w, t_len * w)
    spots = locate_frame(frame, acq)[["y_px", "x_px"]].to_numpy()
    for i in range(n):
        for t in range(t_len):
            true_in_frame = pos[i, t] - origin[i, t] + (i * w, t * w)
            near = spots[np.argmin(np.hypot(*(spots - true_in_frame).T))]
            if batch.detected[i, t]:
                assert np.allclose(near - (i * w, t * w) + origin[i, t], batch.positions_px[i, t], atol=1e-9)
    assert batch.detected.mean() > 0.9


def test_two_state_models_carry_changepoints():
    b = make_samples("binding", 20, n_frames=20, seed=5)
    bound = b.D1_um2_s < 0.02
    assert bound.any() and (~bound).any()
    with_cp = [i for i in range(20) if len(b.changepoints(i))]
    assert len(with_cp) >= 15
    for i in with_cp:
        c = b.changepoints(i)[0]
        assert b.state[i, c] == b.state[i, c - 1] + 1
    t = make_samples("twostate", 10, n_frames=20, seed=6)
    assert np.all(t.D1_um2_s == t.D2_um2_s)


def test_save_and_load_round_trip(tmp_path, aniso):
    path = save_samples(tmp_path / "set", aniso)
    assert path.suffix == ".npz"
    back = load_samples(path)
    assert back.model == "aniso" and back.acquisition == aniso.acquisition
    assert back.meta["seed"] == 1
    for name in ("patches", "displacements", "positions_px", "D1_um2_s", "changepoint_frames", "detected"):
        assert np.array_equal(getattr(back, name), getattr(aniso, name))
    with pytest.raises(FileExistsError):
        save_samples(path, aniso)
    save_samples(path, aniso, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["set.npz"]
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(SimulationError):
        load_samples(bad)


def test_bad_arguments():
    with pytest.raises(SimulationError):
        make_samples("confined", 5)
    with pytest.raises(SimulationError):
        make_samples("aniso", 0)
