"""Crowded training samples: a second particle rendered into the sample windows."""

from __future__ import annotations

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation.trajectories import SimulationError, simulate_anisotropic
from napari_spt_diffusion.training.config import TrainConfig, TrainingError
from napari_spt_diffusion.training.data import DataOptions, load_dataset, make_dataset
from napari_spt_diffusion.training.samples import make_samples, samples_from_trajectories

ACQ = Acquisition()


def test_no_neighbours_draws_exactly_the_isolated_samples():
    plain = make_samples("aniso", 12, n_frames=6, seed=31)
    zero = make_samples("aniso", 12, n_frames=6, seed=31, neighbour_fraction=0.0)
    assert np.array_equal(plain.patches, zero.patches)
    assert np.array_equal(plain.positions_px, zero.positions_px)
    assert zero.meta["n_with_neighbour"] == 0


def test_a_static_neighbour_adds_its_light_to_the_patch_and_leaves_the_labels():
    n, t = 40, 5
    start = np.zeros((n, 2))
    traj = simulate_anisotropic(n, t, ACQ, 1, D1_um2_s=0.001, D2_over_D1=1.0, theta_deg=0.0, start_px=start)
    # a static neighbour 4 px to the right of every second particle
    idx = np.arange(0, n, 2)
    other = simulate_anisotropic(len(idx), t, ACQ, 2, D1_um2_s=0.001, D2_over_D1=1.0, theta_deg=0.0,
                                 start_px=np.tile([0.0, 4.0], (len(idx), 1)))
    alone = samples_from_trajectories(traj, 5)
    crowded = samples_from_trajectories(traj, 5, neighbours=other, neighbour_index=idx)
    sums = crowded.patches.sum(axis=(2, 3)) - alone.patches.sum(axis=(2, 3))  # (N, T) photons
    with_n = np.isin(np.arange(n), idx)
    # the neighbour's spot lies inside the 11 x 11 patch (4 px < 5 px half-width): most of its 1,000 photons
    assert np.all(sums[with_n].mean(axis=1) > 0.6 * ACQ.signal_photons)
    assert np.abs(sums[~with_n].mean()) < 0.05 * ACQ.signal_photons  # noise only (different draws)
    # the tracker still follows the first particle (within a px of its true position) and the labels are its own
    err = np.hypot(*(crowded.positions_px - crowded.true_positions_px).transpose(2, 0, 1))
    assert np.median(err[with_n]) < 0.3
    assert np.array_equal(crowded.D1_um2_s, alone.D1_um2_s)
    assert crowded.meta["n_with_neighbour"] == len(idx)


def test_neighbour_fraction_draws_that_share_of_samples():
    batch = make_samples("aniso", 200, n_frames=3, seed=8, neighbour_fraction=0.5)
    assert 70 <= batch.meta["n_with_neighbour"] <= 130
    everyone = make_samples("binding", 10, n_frames=3, seed=8, neighbour_fraction=1.0)
    assert everyone.meta["n_with_neighbour"] == 10


def test_bad_neighbour_settings_are_refused():
    with pytest.raises(SimulationError, match="neighbour_fraction"):
        make_samples("aniso", 4, n_frames=3, seed=1, neighbour_fraction=1.5)
    with pytest.raises(SimulationError, match="neighbour_distance_px"):
        make_samples("aniso", 4, n_frames=3, seed=1, neighbour_fraction=0.5, neighbour_distance_px=(5.0, 2.0))
    traj = simulate_anisotropic(4, 3, ACQ, 1)
    other = simulate_anisotropic(2, 3, ACQ, 2)
    with pytest.raises(SimulationError, match="distinct"):
        samples_from_trajectories(traj, 1, neighbours=other, neighbour_index=[1, 1])
    with pytest.raises(SimulationError, match="trajectories of 3 frames"):
        samples_from_trajectories(traj, 1, neighbours=other, neighbour_index=[0, 1, 2])
    with pytest.raises(TrainingError, match="neighbour_fraction"):
        TrainConfig("aniso", n_samples=4, val_samples=2, epochs=1, neighbour_fraction=-0.1)


def test_training_datasets_carry_the_neighbour_fraction(tmp_path):
    crowded = make_dataset("aniso", 6, 4, ACQ, seed=12, options=DataOptions(neighbour_fraction=1.0))
    plain = make_dataset("aniso", 6, 4, ACQ, seed=12)
    assert crowded["patches"].shape == plain["patches"].shape
    assert crowded["patches"].sum() > plain["patches"].sum() + 6 * 4 * 0.3 * ACQ.signal_photons
    path = tmp_path / "set.npz"
    load_dataset(path, "aniso", 6, 4, ACQ, 12, options=DataOptions(neighbour_fraction=1.0))
    again = load_dataset(path, "aniso", 6, 4, ACQ, 12, options=DataOptions(neighbour_fraction=1.0))
    assert np.array_equal(again["patches"], crowded["patches"])
    with pytest.raises(TrainingError, match="other settings"):
        load_dataset(path, "aniso", 6, 4, ACQ, 12)
