"""Warm start into a deeper model (``joint_blocks``, ``training.growth``)."""

from __future__ import annotations

import pytest
import torch
from test_training import TINY, synthetic_tracks

from napari_spt_diffusion.estimation.checkpoint import load_checkpoint
from napari_spt_diffusion.training.config import TrainConfig, TrainingError
from napari_spt_diffusion.training.growth import load_state
from napari_spt_diffusion.training.loop import train_model
from napari_spt_diffusion.training.models import ModelConfig, build_model


def _train(tmp_path, name, model_config=None, **kw):
    data = synthetic_tracks(64, 12, seed=3)
    val = synthetic_tracks(16, 12, seed=4)
    cfg = model_config if model_config is not None else ModelConfig(kind="sequence", max_frames=12, **TINY)
    config = TrainConfig("aniso", epochs=1, batch_size=16, n_frames=12, out_dir=tmp_path / name, device="cpu",
                         model_config=cfg, seed=5, **kw)
    return train_model(config, train_data=data, val_data=val)


def _outputs(module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    patches = torch.rand(4, 12, 11, 11, generator=gen) * 50.0
    steps = torch.randn(4, 12, 2, generator=gen)
    with torch.no_grad():
        return module(patches, steps, torch.ones(4, 12, dtype=torch.bool))


def _new_block_weights(state: dict, index: int) -> dict[str, torch.Tensor]:
    return {part: state[f"core.joint.{index}.{part}.weight"] for part in ("attn.q", "attn.kv", "attn.out", "mlp.fc1",
                                                                          "mlp.fc2")}


def test_a_deeper_model_starts_as_the_state_it_grew_from(tmp_path):
    shallow = _train(tmp_path, "shallow")
    # lr so small that one epoch hardly moves the weights: the grown model must answer as the shallow one
    deep = _train(tmp_path, "deep", lr=1e-9, joint_blocks=3, init_state=tmp_path / "shallow" / "last_state.pt")
    (a, _), (b, card) = load_checkpoint(shallow), load_checkpoint(deep)
    assert card["model_config"]["n_joint"] == 3
    assert card["training"]["warm_start"]["grown"] == {"n_joint": [1, 3]}
    assert card["training"]["lineage"][-1]["joint_blocks"] == 3
    assert torch.allclose(_outputs(a), _outputs(b), atol=1e-4)
    # the added blocks start as the identity through their output projections only: the rest is random
    for index in (1, 2):
        weights = _new_block_weights(b.state_dict(), index)
        assert float(weights["attn.out"].abs().max()) < 1e-6 and float(weights["mlp.fc2"].abs().max()) < 1e-6
        assert all(float(weights[k].abs().max()) > 1e-3 for k in ("attn.q", "attn.kv", "mlp.fc1"))
    # and they learn: a normal learning rate moves their output projections away from zero
    moved = _train(tmp_path, "moved", lr=1e-2, joint_blocks=3, init_state=tmp_path / "shallow" / "last_state.pt")
    weights = _new_block_weights(load_checkpoint(moved)[0].state_dict(), 2)
    assert float(weights["attn.out"].abs().max()) > 1e-4 and float(weights["mlp.fc2"].abs().max()) > 1e-4
    # a later stage from the grown state keeps its depth without being told (as on the command line, where no
    # model configuration names the depth)
    size = {k: v for k, v in TINY.items() if k != "n_joint"}
    later = _train(tmp_path, "later", model_config=size, lr=1e-9, init_state=tmp_path / "deep" / "last_state.pt")
    later_card = load_checkpoint(later)[1]
    assert later_card["model_config"]["n_joint"] == 3 and "grown" not in later_card["training"]["warm_start"]


def test_a_bundled_model_grows_too():
    module, card = load_checkpoint("aniso")
    stored = ModelConfig.from_dict(card["model_config"]).to_dict()
    deeper = ModelConfig.from_dict({**stored, "n_joint": stored["n_joint"] + 1})
    net = build_model(deeper)
    assert load_state(net, module.state_dict(), stored, deeper, "aniso") == {
        "n_joint": [stored["n_joint"], stored["n_joint"] + 1]}
    net.eval()
    assert torch.allclose(_outputs_30(module), _outputs_30(net), atol=1e-4)


def _outputs_30(module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    patches = torch.rand(3, 30, 11, 11, generator=gen) * 50.0
    with torch.no_grad():
        return module(patches, torch.randn(3, 30, 2, generator=gen), torch.ones(3, 30, dtype=torch.bool))


def test_growth_refuses_what_is_not_the_same_model_with_fewer_joint_blocks(tmp_path):
    base = ModelConfig(kind="sequence", max_frames=12, **TINY)
    two = ModelConfig.from_dict({**base.to_dict(), "n_joint": 2})
    three = ModelConfig.from_dict({**base.to_dict(), "n_joint": 3})
    state = build_model(two).state_dict()
    assert load_state(build_model(two), state, two.to_dict(), two, "same") is None
    with pytest.raises(TrainingError, match="another model configuration"):  # a shallower target
        load_state(build_model(base), state, two.to_dict(), base, "deeper")
    wider = ModelConfig.from_dict({**base.to_dict(), "n_joint": 3, "embed_dim": 32})
    with pytest.raises(TrainingError, match="another model configuration"):  # deeper and wider
        load_state(build_model(wider), state, two.to_dict(), wider, "other")
    with pytest.raises(TrainingError, match="another model configuration"):  # no stored configuration
        load_state(build_model(two), state, None, two, "unknown")
    # a state whose weights are not those its configuration names: one block short, or one block more than it says
    short = {k: v for k, v in state.items() if not k.startswith("core.joint.1.")}
    with pytest.raises(TrainingError, match="do not match"):
        load_state(build_model(three), short, two.to_dict(), three, "short")
    with pytest.raises(TrainingError, match="do not match"):
        load_state(build_model(three), build_model(three).state_dict(), two.to_dict(), three, "mislabelled")
    with pytest.raises(TrainingError, match="joint_blocks"):
        TrainConfig("aniso", joint_blocks=0)
