"""Warm start of training from an earlier run's state (``init_state``)."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import TINY, synthetic_tracks

from napari_spt_diffusion.training.config import TrainConfig, TrainingError
from napari_spt_diffusion.training.loop import train_model
from napari_spt_diffusion.training.models import ModelConfig


def _train(tmp_path, name, **kw):
    data = synthetic_tracks(64, 12, seed=3)
    val = synthetic_tracks(16, 12, seed=4)
    cfg = ModelConfig(kind="sequence", max_frames=12, **TINY)
    config = TrainConfig("aniso", epochs=1, batch_size=16, n_frames=12, out_dir=tmp_path / name, device="cpu",
                         model_config=cfg, seed=5, **kw)
    return train_model(config, train_data=data, val_data=val)


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
        train_model(TrainConfig("aniso", epochs=1, batch_size=16, n_frames=12, out_dir=tmp_path / "y", device="cpu",
                                model_config=bigger, init_state=tmp_path / "first" / "last_state.pt"),
                    train_data=data, val_data=data)


def test_lineage_records_every_stage_even_of_a_run_cut_short(tmp_path):
    from napari_spt_diffusion.training.__main__ import main
    from napari_spt_diffusion.training.card import bundle_run

    _train(tmp_path, "first")
    (tmp_path / "first" / "aniso.json").unlink()  # as if the run ended before its export
    _train(tmp_path, "second", init_state=tmp_path / "first" / "best_state.pt")
    _train(tmp_path, "third", init_state=tmp_path / "second" / "best_state.pt")
    lineage = json.loads((tmp_path / "third" / "aniso.json").read_text())["training"]["lineage"]
    assert [e["run_folder"] for e in lineage] == [str(tmp_path / n) for n in ("first", "second", "third")]
    assert [e["epochs_run"] for e in lineage] == [1, 1, 1]
    assert lineage[0]["warm_start_state"] is None
    assert lineage[2]["warm_start_state"].endswith("second/best_state.pt")
    assert all(e["n_train_samples"] == 64 for e in lineage)

    stages = [{"run_folder": "a", "train_time_h": 0.5}, {"run_folder": "b", "train_time_h": 0.25}]
    bundled = bundle_run(tmp_path / "third", name="x", dest=tmp_path / "ck", lineage=stages)
    card = json.loads(bundled.with_suffix(".json").read_text())
    assert card["training"]["lineage"] == stages and card["training"]["lineage_total_train_time_h"] == 0.75
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    assert main(["--bundle", str(tmp_path / "third"), "--dest", str(tmp_path / "ck2"),
                 "--lineage", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "ck2" / "aniso.pt").exists()


def test_describe_training_sums_the_lineage():
    from napari_spt_diffusion.estimation.checkpoint import describe_training

    one = {"training": {"n_train_samples": 100, "epochs_run": 3, "train_time_h": 0.1}}
    assert describe_training(one) == "100 training tracks x 3 epochs, 0.1 h"
    two = {"training": {"lineage": [
        {"n_train_samples": 100, "epochs_run": 3, "train_time_h": 0.1, "neighbour_fraction": 0.0},
        {"n_train_samples": 50, "epochs_run": 2, "train_time_h": 0.25, "neighbour_fraction": 0.5}]}}
    text = describe_training(two)
    assert "2 warm-started stages" in text and "50 x 2 (50% crowded)" in text
    assert "400 track-epochs" in text and "0.35 h" in text


def test_lineage_of_a_card_without_one_is_the_card_itself(tmp_path):
    _train(tmp_path, "old")
    card_path = tmp_path / "old" / "aniso.json"
    card = json.loads(card_path.read_text())
    del card["training"]["lineage"]
    card_path.write_text(json.dumps(card))
    (tmp_path / "old" / "run.json").unlink()
    _train(tmp_path, "new", init_state=tmp_path / "old" / "best_state.pt")
    lineage = json.loads((tmp_path / "new" / "aniso.json").read_text())["training"]["lineage"]
    assert len(lineage) == 2 and lineage[0]["command"] == card["training"]["command"]
    assert lineage[0]["n_train_samples"] == 64 and lineage[0]["epochs_run"] == 1


def test_warm_start_from_a_bundled_model_keeps_its_lineage(tmp_path):
    from napari_spt_diffusion.estimation.checkpoint import read_card
    from napari_spt_diffusion.training.config import TrainConfig
    from napari_spt_diffusion.training.loop import train_model

    config = TrainConfig(model="aniso", n_samples=16, val_samples=8, epochs=1, n_frames=30, init_state="aniso",
                         out_dir=str(tmp_path / "run"), threads=1, seed=101)
    card = read_card(train_model(config))
    bundled = read_card("aniso")
    assert card["training"]["warm_start"]["state"].startswith("bundled checkpoint aniso")
    lineage = card["training"]["lineage"]
    assert lineage[: len(bundled["training"]["lineage"])] == bundled["training"]["lineage"]
    assert len(lineage) == len(bundled["training"]["lineage"]) + 1
