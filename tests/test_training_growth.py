"""Warm start into a deeper model (``joint_blocks``, ``training.growth``)."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import TINY, synthetic_tracks

from napari_spt_diffusion.estimation.checkpoint import load_checkpoint
from napari_spt_diffusion.training.config import TrainConfig, TrainingError
from napari_spt_diffusion.training.growth import load_state
from napari_spt_diffusion.training.loop import train_model
from napari_spt_diffusion.training.models import ModelConfig, build_model


def _train(tmp_path, name, **kw):
    data = synthetic_tracks(64, 12, seed=3)
    val = synthetic_tracks(16, 12, seed=4)
    cfg = ModelConfig(kind="sequence", max_frames=12, **TINY)
    config = TrainConfig("aniso", epochs=1, batch_size=16, n_frames=12, out_dir=tmp_path / name, device="cpu",
                         model_config=cfg, seed=5, **kw)
    return train_model(config, train_data=data, val_data=val)


def _outputs(module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    patches = torch.rand(4, 12, 11, 11, generator=gen) * 50.0
    steps = torch.randn(4, 12, 2, generator=gen)
    with torch.no_grad():
        return module(patches, steps, torch.ones(4, 12, dtype=torch.bool))


def test_a_deeper_model_starts_as_the_state_it_grew_from(tmp_path):
    shallow = _train(tmp_path, "shallow")
    # lr so small that one epoch hardly moves the weights: the grown model must answer as the shallow one
    deep = _train(tmp_path, "deep", lr=1e-9, joint_blocks=3, init_state=tmp_path / "shallow" / "last_state.pt")
    (a, _), (b, card) = load_checkpoint(shallow), load_checkpoint(deep)
    assert card["model_config"]["n_joint"] == 3
    assert card["training"]["warm_start"]["grown"] == {"n_joint": [1, 3]}
    assert torch.allclose(_outputs(a), _outputs(b), atol=1e-4)
    # the added blocks are not frozen: a normal learning rate moves them, and the answer with them
    moved = _train(tmp_path, "moved", lr=1e-2, joint_blocks=3, init_state=tmp_path / "shallow" / "last_state.pt")
    assert not torch.allclose(_outputs(a), _outputs(load_checkpoint(moved)[0]), atol=1e-4)
    lineage = json.loads((tmp_path / "deep" / "aniso.json").read_text())["training"]["lineage"]
    assert len(lineage) == 2


def test_growth_refuses_what_is_not_the_same_model_with_fewer_joint_blocks(tmp_path):
    base = ModelConfig(kind="sequence", max_frames=12, **TINY)
    two = ModelConfig.from_dict({**base.to_dict(), "n_joint": 2})
    state = build_model(two).state_dict()
    assert load_state(build_model(two), state, two.to_dict(), two, "same") is None
    with pytest.raises(TrainingError, match="another model configuration"):  # a shallower target
        load_state(build_model(base), state, two.to_dict(), base, "deeper")
    wider = ModelConfig.from_dict({**base.to_dict(), "n_joint": 3, "embed_dim": 32})
    with pytest.raises(TrainingError, match="another model configuration"):  # deeper and wider
        load_state(build_model(wider), state, two.to_dict(), wider, "other")
    with pytest.raises(TrainingError, match="another model configuration"):  # no stored configuration
        load_state(build_model(two), state, None, two, "unknown")
    with pytest.raises(TrainingError, match="joint_blocks"):
        TrainConfig("aniso", joint_blocks=0)
