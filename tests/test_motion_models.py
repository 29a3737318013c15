"""The motion-model registry: a model registered there reaches every list of models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_spt_diffusion import cli
from napari_spt_diffusion.simulation import motion_models
from napari_spt_diffusion.simulation.motion_models import MOTION_MODELS, MotionModel, benchmark_seeds
from napari_spt_diffusion.simulation.movie import simulate_movie
from napari_spt_diffusion.simulation.trajectories import ParticleStates, SimulationError, simulate_anisotropic
from napari_spt_diffusion.training.config import TrainConfig, TrainingError
from napari_spt_diffusion.training.loop import train_model
from napari_spt_diffusion.training.models import ModelConfig
from napari_spt_diffusion.training.samples import make_samples

TINY = dict(embed_dim=16, n_heads=2, mlp_hidden=32, head_hidden=32, cnn_channels=(4, 8), n_cross=1, n_self=1, n_joint=1)
TOY_D_UM2_S = 0.5


def _toy_tracks(n_tracks, n_frames, acquisition=None, rng=None, *, start_px=None):
    """Isotropic diffusion at one fixed D: the toy model's trajectory function."""
    return simulate_anisotropic(n_tracks, n_frames, acquisition, rng, D1_um2_s=TOY_D_UM2_S, D2_over_D1=1.0,
                                theta_deg=0.0, start_px=start_px)


def _toy_particles(n, lengths, acquisition, rng, options):
    """The toy model in movies: one isotropic state at the same D."""
    d = np.full((n, 1), TOY_D_UM2_S)
    return ParticleStates(d, d.copy(), np.zeros((n, 1)), None)


@pytest.fixture
def toy(monkeypatch):
    model = MotionModel(name="toy", kind="pointwise", label="toy isotropic", description="A test model.",
                        simulate=_toy_tracks, test_seed=4242, particle_states=_toy_particles)
    monkeypatch.setitem(MOTION_MODELS, "toy", model)
    return model


def test_the_registry_holds_the_three_protocol_models():
    assert motion_models.motion_model_names() == ("aniso", "binding", "twostate")
    assert motion_models.movie_model_names() == ("aniso", "binding", "twostate", "mixed")
    assert {n: m.kind for n, m in MOTION_MODELS.items()} == {"aniso": "sequence", "binding": "pointwise",
                                                           "twostate": "pointwise"}
    assert benchmark_seeds() == {"aniso": 2025, "binding": 2026, "twostate": 2027}
    with pytest.raises(SimulationError, match="aniso, binding, twostate"):
        motion_models.get_motion_model("nope")
    with pytest.raises(SimulationError, match="kind"):
        MotionModel(name="x", kind="neither", label="", description="", simulate=_toy_tracks, test_seed=1)


def test_a_registered_model_reaches_the_command_line(toy):
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--model", "toy"])
    assert args.model == "toy"
    args = parser.parse_args(["simulate", "out.tif", "--model", "toy"])
    assert args.model == "toy"
    train_help = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert "toy" in train_help


def test_a_registered_model_reaches_the_training_defaults(toy, tmp_path):
    assert TrainConfig("toy").model == "toy"
    with pytest.raises(TrainingError, match="test seeds"):
        TrainConfig("toy", seed=toy.test_seed)
    batch = make_samples("toy", 8, n_frames=6, seed=1)
    assert np.allclose(batch.D1_um2_s, TOY_D_UM2_S) and batch.patches.shape == (8, 6, 11, 11)
    config = TrainConfig("toy", epochs=1, batch_size=4, n_frames=6, device="cpu", seed=3, out_dir=tmp_path,
                         model_config=ModelConfig(kind="pointwise", max_frames=6, **TINY))
    card = json.loads(train_model(config, train_data=batch, val_data=batch).with_suffix(".json").read_text())
    assert card["motion_model"] == "toy" and card["kind"] == "pointwise"
    assert card["description"] == "A test model."


def test_a_registered_model_reaches_movie_simulation(toy):
    assert motion_models.movie_model_names() == ("aniso", "binding", "twostate", "toy", "mixed")
    assert ("toy isotropic", "toy") in motion_models.movie_model_choices()
    sim = simulate_movie((32, 32), 6, None, 1, model="toy", particles=3)
    summary = sim.truth.summary
    assert len(summary) > 0 and set(summary["particle_model"]) == {"toy"}
    assert np.allclose(summary["D1_um2_s"], TOY_D_UM2_S)
