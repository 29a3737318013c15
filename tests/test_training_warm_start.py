"""Warm start of training from an earlier run's state (``init_state``)."""

from __future__ import annotations

import json

import pytest
import torch

from napari_spt_diffusion.estimation.models import ModelConfig
from napari_spt_diffusion.estimation.training import TrainingError, train_model

from test_training import TINY, synthetic_tracks


def _train(tmp_path, name, **kw):
    data = synthetic_tracks(64, 12, seed=3)
    val = synthetic_tracks(16, 12, seed=4)
    cfg = ModelConfig(kind="sequence", max_frames=12, **TINY)
    return train_model("aniso", epochs=1, batch_size=16, n_frames=12, out_dir=tmp_path / name, device="cpu",
                       train_data=data, val_data=val, config=cfg, seed=5, **kw)


def test_warm_start_begins_from_the_earlier_weights(tmp_path):
    _train(tmp_path, "first")
    first = torch.load(tmp_path / "first" / "last_state.pt")["state_dict"]
    # lr so small that one epoch hardly moves the weights: the second run must start where the first ended
    _train(tmp_path, "second", lr=1e-9, init_state=tmp_path / "first" / "last_state.pt")
    second = torch.load(tmp_path / "second" / "last_state.pt")["state_dict"]
    _train(tmp_path, "cold", lr=1e-9)
    cold = torch.load(tmp_path / "cold" / "last_state.pt")["state_dict"]
    key = next(k for k, v in first.items() if v.dtype.is_floating_point and v.numel() > 100)
    assert torch.allclose(second[key], first[key], atol=1e-5)
    assert not torch.allclose(cold[key], first[key], atol=1e-5)
    card = json.loads((tmp_path / "second" / "aniso.json").read_text())
    warm = card["training"]["warm_start"]
    assert warm["state"].endswith("last_state.pt") and warm["samples_seen_before"] == 64


def test_warm_start_refuses_missing_or_mismatched_state(tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        _train(tmp_path, "x", init_state=tmp_path / "nope.pt")
    _train(tmp_path, "first")
    data = synthetic_tracks(32, 12, seed=3)
    bigger = ModelConfig(kind="sequence", max_frames=12, **{**TINY, "embed_dim": 32})
    with pytest.raises(TrainingError, match="another model configuration"):
        train_model("aniso", epochs=1, batch_size=16, n_frames=12, out_dir=tmp_path / "y", device="cpu",
                    train_data=data, val_data=data, config=bigger, init_state=tmp_path / "first" / "last_state.pt")
