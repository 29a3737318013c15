"""Training priors of the aniso tracks' tensors (training/motion_priors.py)."""

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation.trajectories import D1_GRID_UM2_S, SimulationError
from napari_spt_diffusion.training.config import TrainConfig, TrainingError
from napari_spt_diffusion.training.motion_priors import PRIORS, get_prior
from napari_spt_diffusion.training.samples import SampleSettings, make_samples


def test_broad_prior_draws_slow_and_isotropic_tracks_in_its_shares():
    prior = PRIORS["broad"]
    d = prior.draw(20000, np.random.default_rng(0))
    d1, ratio = d["D1_um2_s"], d["D2_over_D1"]
    on_grid = np.isin(np.round(d1, 2), D1_GRID_UM2_S) & (np.abs(d1 - np.round(d1, 2)) < 1e-12)
    # the motion model's own draws lie on its grid; the broad ones (log-uniform) almost never do
    assert np.mean(~on_grid) == pytest.approx(prior.broad_share, abs=0.02)
    assert np.all((d1 >= 0.005) & (d1 <= 6.0))
    assert np.mean(d1 < 0.05) == pytest.approx(prior.broad_share * np.log(10) / np.log(1200), abs=0.02)
    assert np.mean(ratio == 1.0) == pytest.approx(prior.broad_share * prior.isotropic_share, abs=0.015)
    assert np.all((ratio >= 0.1) & (ratio <= 1.0))


def test_make_samples_uses_the_prior_only_when_asked():
    acq = Acquisition()
    plain = make_samples("aniso", 12, acquisition=acq, seed=4)
    again = make_samples("aniso", 12, acquisition=acq, seed=4)
    np.testing.assert_array_equal(plain.patches, again.patches)  # no prior: drawn exactly as before
    assert "motion_prior" not in plain.meta
    broad = make_samples("aniso", 12, acquisition=acq, seed=4, settings=SampleSettings(motion_prior=PRIORS["broad"]))
    assert broad.meta["motion_prior"]["name"] == "broad"
    assert not np.array_equal(broad.D1_um2_s, plain.D1_um2_s)
    with pytest.raises(SimulationError, match="aniso"):
        make_samples("binding", 4, acquisition=acq, seed=4, settings=SampleSettings(motion_prior=PRIORS["broad"]))


def test_config_checks_the_prior():
    assert TrainConfig(model="aniso", motion_prior="broad").motion_prior == "broad"
    with pytest.raises(TrainingError, match="one of"):
        TrainConfig(model="aniso", motion_prior="wide")
    with pytest.raises(TrainingError, match="aniso"):
        TrainConfig(model="binding", motion_prior="broad")
    assert get_prior(None) is None
    with pytest.raises(ValueError):
        get_prior("nope")
