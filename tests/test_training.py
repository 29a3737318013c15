"""Training path: a tiny model trained for a few steps, loss, augmentation, schedule."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.checkpoint import load_checkpoint
from napari_spt_diffusion.estimation.estimator import EstimatorError, resolve_device
from napari_spt_diffusion.training.config import TrainConfig, TrainingError
from napari_spt_diffusion.training.data import augment, targets_from_labels
from napari_spt_diffusion.training.loop import compute_loss, evaluate, lr_schedule, predict, train_model
from napari_spt_diffusion.training.models import ModelConfig, build_model

TINY = dict(embed_dim=16, n_heads=2, mlp_hidden=32, head_hidden=32, cnn_channels=(4, 8), n_cross=1, n_self=1, n_joint=1)


def synthetic_tracks(
    n: int, t: int, seed: int, pointwise: bool = False, ratio: float | None = None
) -> dict[str, np.ndarray]:
    """Anisotropic Brownian tracks (no blur) with Gaussian spots at the sub-pixel offset.

    D in um^2/s equals px^2/frame at the standard acquisition (100 nm, 10 ms).
    """
    rng = np.random.default_rng(seed)
    d1 = rng.uniform(0.05, 6.0, n)
    d2 = d1 * (rng.uniform(0.1, 1.0, n) if ratio is None else ratio)
    th = rng.uniform(0, 180, n)
    if pointwise:  # a switch of D1 halfway through
        d1 = np.repeat(d1[:, None], t, 1)
        d1[: n // 2, t // 2 :] *= 0.2
        d2 = np.minimum(np.repeat(d2[:, None], t, 1), d1)
    else:
        d1, d2 = np.repeat(d1[:, None], t, 1), np.repeat(d2[:, None], t, 1)
    th = np.repeat(th[:, None], t, 1)
    rad = np.deg2rad(th)
    u = np.stack([np.sin(rad), np.cos(rad)], -1)  # D1 axis in (y, x)
    w = np.stack([np.cos(rad), -np.sin(rad)], -1)
    a, b = rng.standard_normal((2, n, t, 1))
    disp = a * np.sqrt(2 * d1)[..., None] * u + b * np.sqrt(2 * d2)[..., None] * w
    disp[:, 0] = 0
    pos = np.cumsum(disp, 1)
    off = pos - np.round(pos)
    yy, xx = np.mgrid[-5:6, -5:6]
    r2 = (yy - off[..., 0, None, None]) ** 2 + (xx - off[..., 1, None, None]) ** 2
    spot = np.exp(-r2 / 2.0) * 1000 / (2 * np.pi)
    patches = rng.poisson(spot + 10.0).astype(np.float32)
    return {
        "patches": patches,
        "displacements": disp.astype(np.float32),
        "valid": np.ones((n, t), bool),
        "D1_um2_s": d1.astype(np.float32),
        "D2_um2_s": d2.astype(np.float32),
        "theta_deg": th.astype(np.float32),
        "state": np.zeros((n, t), np.int8),
    }


@pytest.mark.parametrize("model_name, lr", [("aniso", 1e-2), ("binding", 2e-2)])
def test_tiny_training_reduces_the_loss(tmp_path, model_name: str, lr: float) -> None:
    pointwise = model_name != "aniso"
    train = synthetic_tracks(192, 12, seed=1, pointwise=pointwise)
    val = synthetic_tracks(96, 12, seed=2, pointwise=pointwise)
    acq = Acquisition()
    kind = "pointwise" if pointwise else "sequence"
    cfg = ModelConfig(kind=kind, max_frames=12, **TINY)
    # the initial model is the one train_model builds (same seed -> same initialisation)
    torch.manual_seed(7)
    initial = build_model(cfg)
    target = targets_from_labels(val, acq, kind)
    loss0 = float(compute_loss(torch.from_numpy(predict(initial, val)), target, torch.from_numpy(val["valid"])))

    config = TrainConfig(model_name, epochs=5, batch_size=16, lr=lr, device="cpu", out_dir=tmp_path, seed=7,
                         n_frames=12, model_config=cfg, threads=1)
    path = train_model(config, train_data=train, val_data=val)
    module, card = load_checkpoint(path)
    pred = predict(module, val)
    loss1 = float(compute_loss(torch.from_numpy(pred), target, torch.from_numpy(val["valid"])))
    assert loss1 < 0.8 * loss0, (loss0, loss1)
    rows = list(csv.DictReader(open(tmp_path / "learning_curve.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert card["training"]["n_train_samples"] == 192 and card["training"]["epochs_run"] == 5
    assert card["kind"] == kind and card["input_contract"]["max_frames"] == 12
    assert abs(card["metrics"]["validation"]["val_loss"] - min(float(r["val_loss"]) for r in rows)) < 1e-4
    assert (tmp_path / "best_state.pt").is_file()
    assert TrainConfig.load(tmp_path / "train_config.json") == config
    assert card["training"]["command"] == "python -m napari_spt_diffusion.training " + " ".join(config.to_argv())
    m = evaluate(pred, val, acq)
    assert m["mae_D1_um2_s"] < 3.0


def test_loss_is_zero_for_the_truth_and_ignores_angle_of_isotropic() -> None:
    data = synthetic_tracks(8, 6, seed=3)
    t = targets_from_labels(data, Acquisition(), "sequence")
    perfect = torch.cat([t["log_d"], t["angle"]], -1)
    assert float(compute_loss(perfect, t, None)) == pytest.approx(0.0, abs=1e-6)
    iso = {k: v.clone() for k, v in t.items()}
    iso["aniso"][:] = 0.0
    wrong_angle = torch.cat([t["log_d"], -t["angle"]], -1)
    assert float(compute_loss(wrong_angle, iso, None)) == pytest.approx(0.0, abs=1e-6)
    assert float(compute_loss(wrong_angle, t, None)) > 0.1



def test_trace_term_penalises_a_split_that_lowers_the_mean_diffusivity() -> None:
    """D1 and D2 off by the same amount in log space, one up and one down: the per-component L1
    is the same whichever way, but only the split that keeps D1 + D2 leaves the trace term at 0."""
    data = synthetic_tracks(8, 6, seed=3)
    t = targets_from_labels(data, Acquisition(), "sequence")
    iso = {k: v.clone() for k, v in t.items()}
    iso["log_d"][:] = 0.0  # D1 = D2 = 1 px^2/frame
    iso["aniso"][:] = 0.0
    keeps = torch.tensor([[math.log(1.5), math.log(0.5), 0.0, 1.0]]).repeat(8, 1)  # D1 + D2 = 2, as the truth
    lowers = keeps.clone()
    lowers[:, 1] = math.log(0.5) - 0.3  # D2 further down: D1 + D2 below the truth's 2
    base_keeps, base_lowers = (float(compute_loss(o, iso, None)) for o in (keeps, lowers))
    with_keeps, with_lowers = (float(compute_loss(o, iso, None, 1.0, 2.0)) for o in (keeps, lowers))
    assert with_keeps == pytest.approx(base_keeps, abs=1e-6)
    expected = 2.0 * abs(math.log(1.5 + 0.5 * math.exp(-0.3)) - math.log(2.0))
    assert with_lowers - base_lowers == pytest.approx(expected, rel=1e-5)


def test_augmentation_keeps_labels_consistent_with_the_data() -> None:
    # one strongly anisotropic track, long, at 30 degrees; after any grid symmetry the
    # principal axis of the displacement covariance must follow the transformed label.
    data = synthetic_tracks(64, 400, seed=4, ratio=0.1)
    d = torch.from_numpy(data["displacements"])
    ang = targets_from_labels(data, Acquisition(), "sequence")["angle"]
    p = torch.from_numpy(data["patches"])
    g = torch.Generator().manual_seed(0)
    p2, d2, a2 = augment(p, d, ang, g)
    cov = torch.einsum("nti,ntj->nij", d2.double(), d2.double())
    # theta of the D1 axis from +x towards +y; (y, x) order -> 2theta = atan2(2 c_yx, c_xx - c_yy)
    two_theta = torch.atan2(2 * cov[:, 0, 1], cov[:, 1, 1] - cov[:, 0, 0])
    est = torch.stack([torch.sin(two_theta), torch.cos(two_theta)], -1)
    assert float((est * a2.double()).sum(-1).min()) > 0.95
    # the patches get the same symmetry as the displacements: the spot centroid (sub-pixel
    # offset of the integrated position) must follow the transformed displacements
    pos = torch.cumsum(d2.double(), 1)
    off = pos - torch.round(pos)
    w = p2.double() - 10.0
    yy = torch.arange(11, dtype=torch.float64) - 5
    cy = (w * yy[:, None]).sum((-1, -2)) / w.sum((-1, -2))
    cx = (w * yy[None, :]).sum((-1, -2)) / w.sum((-1, -2))
    ok = off.abs().amax(-1) < 0.4  # away from the rounding boundary
    assert float((cy - off[..., 0])[ok].abs().mean()) < 0.1
    assert float((cx - off[..., 1])[ok].abs().mean()) < 0.1


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    f = lr_schedule(total_steps=100, warmup_steps=10, floor=0.05)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.05 + 0.95 * 0.5, abs=1e-9)
    assert f(100) == pytest.approx(0.05) and f(1000) == pytest.approx(0.05)
    assert all(f(i) >= f(i + 1) - 1e-12 for i in range(10, 120))


def test_bad_arguments_are_refused(tmp_path) -> None:
    with pytest.raises(TrainingError, match="model"):
        TrainConfig("bogus", out_dir=tmp_path)
    with pytest.raises(TrainingError, match="test seeds"):
        TrainConfig("aniso", seed=2025, out_dir=tmp_path)
    with pytest.raises(TrainingError, match="epochs"):
        TrainConfig("aniso", epochs=0, out_dir=tmp_path)
    with pytest.raises(TrainingError, match="epochs"):
        TrainConfig("aniso", epochs=2.5)
    with pytest.raises(TrainingError, match="device"):
        TrainConfig("aniso", device="tpu")
    with pytest.raises(TrainingError, match="unknown training setting"):
        TrainConfig.from_dict({"model": "aniso", "epoch": 3})
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EstimatorError, match="device"):
        resolve_device("tpu")
    assert not (tmp_path / "train_config.json").exists()


def test_config_json_round_trip_and_command_line(tmp_path) -> None:
    import argparse

    from napari_spt_diffusion.training.config import add_train_arguments, config_from_args

    config = TrainConfig("binding", n_samples=50, epochs=2, augment=False, psf_sigma_nm=150.0,
                         model_config=ModelConfig(kind="pointwise", **TINY), out_dir=tmp_path / "run")
    assert config.training_acquisition().psf_sigma_nm == 150.0
    config.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == config
    parser = add_train_arguments(argparse.ArgumentParser())
    again = config_from_args(parser.parse_args(config.to_argv()))
    assert again == TrainConfig.from_dict({**config.to_dict(), "model_config": None})
    # a configuration file, then the options given on the command line
    mixed = config_from_args(parser.parse_args(["--config", str(tmp_path / "c.json"), "--epochs", "5"]))
    assert mixed == TrainConfig.from_dict({**config.to_dict(), "epochs": 5})
    with pytest.raises(TrainingError, match="--model"):
        config_from_args(parser.parse_args(["--epochs", "5"]))


def test_single_modality_training_and_warm_start_from_a_state_without_the_modalities_field(tmp_path) -> None:
    data = synthetic_tracks(32, 10, seed=7)
    val = synthetic_tracks(8, 10, seed=8)
    cfg = ModelConfig(kind="sequence", max_frames=10, **TINY)
    kw = dict(epochs=1, batch_size=16, n_frames=10, device="cpu", model_config=cfg, seed=5)
    sets = dict(train_data=data, val_data=val)
    pt = train_model(TrainConfig("aniso", out_dir=tmp_path / "disp", modalities="displacement", **kw), **sets)
    module, card = load_checkpoint(pt)
    assert card["model_config"]["modalities"] == "displacement"
    assert "alpha_image_class_token" not in card
    assert module(torch.zeros(2, 10, 11, 11), torch.ones(2, 10, 2), torch.ones(2, 10, dtype=torch.bool)).shape == (2, 4)
    # a state saved before ModelConfig had `modalities` warm-starts the two-modality model
    train_model(TrainConfig("aniso", out_dir=tmp_path / "both", **kw), **sets)
    state = torch.load(tmp_path / "both" / "last_state.pt")
    del state["config"]["modalities"]
    torch.save(state, tmp_path / "old_state.pt")
    train_model(TrainConfig("aniso", out_dir=tmp_path / "warm", init_state=tmp_path / "old_state.pt", **kw), **sets)
    # but not a model with other modalities
    with pytest.raises(TrainingError, match="another model configuration"):
        train_model(TrainConfig("aniso", out_dir=tmp_path / "bad", init_state=tmp_path / "old_state.pt",
                                modalities="image", **kw), **sets)
    with pytest.raises(TrainingError, match="modalities"):
        TrainConfig("aniso", out_dir=tmp_path / "bad2", modalities="sound", **kw)


def _changed_patch_encoder_forward(self, x: torch.Tensor) -> torch.Tensor:
    """A PatchEncoder.forward that computes something else (image token from the raw pixels only)."""
    return self.skip(x.flatten(1)) + 1.0


def test_reexport_keeps_weights_outputs_and_card_and_refuses_a_changed_computation(tmp_path, monkeypatch) -> None:
    from napari_spt_diffusion.estimation.checkpoint import read_card
    from napari_spt_diffusion.training import models
    from napari_spt_diffusion.training.__main__ import main
    from napari_spt_diffusion.training.card import reexport_checkpoint

    data = synthetic_tracks(32, 10, seed=3, pointwise=True)
    cfg = ModelConfig(kind="pointwise", max_frames=10, **TINY)
    pt = train_model(TrainConfig("binding", epochs=1, batch_size=16, n_frames=10, device="cpu", model_config=cfg,
                                 seed=2, out_dir=tmp_path / "run"), train_data=data, val_data=data)
    old_module, old_card = load_checkpoint(pt)
    x = (torch.from_numpy(data["patches"][:4]), torch.from_numpy(data["displacements"][:4]),
         torch.ones(4, 10, dtype=torch.bool))

    out = reexport_checkpoint(pt, dest=tmp_path / "new", reason="test")
    module, card = load_checkpoint(out)  # sha256 verified
    assert torch.allclose(module.forward_log(*x), old_module.forward_log(*x), atol=1e-5)
    assert card["training"] == old_card["training"] and card["metrics"] == old_card["metrics"]
    assert card["reexports"][-1]["previous_sha256"] == old_card["sha256"]
    assert card["reexports"][-1]["reason"] == "test" and card["reexports"][-1]["max_abs_difference"] <= 1e-5

    # a model-code change that alters the answers is refused and writes nothing
    monkeypatch.setattr(models.PatchEncoder, "forward", _changed_patch_encoder_forward)
    before = (pt.read_bytes(), pt.with_suffix(".json").read_text())
    with pytest.raises(TrainingError, match="changes the outputs"):
        reexport_checkpoint(pt)
    assert (pt.read_bytes(), pt.with_suffix(".json").read_text()) == before
    assert main(["--reexport", str(pt)]) == 2
    assert read_card(pt)["sha256"] == old_card["sha256"]


@pytest.mark.parametrize("entry", ["spt-diffusion", "python -m"])
def test_command_line_training_records_its_exact_command_and_config(tmp_path, entry) -> None:
    import json
    import shlex

    from napari_spt_diffusion import cli
    from napari_spt_diffusion.training.__main__ import main

    options = ["--model", "aniso", "--samples", "8", "--val-samples", "4", "--n-frames", "6", "--epochs", "1",
               "--batch-size", "4", "--device", "cpu", "--threads", "1", "--seed", "3", "--no-augment",
               "--out", str(tmp_path / "run")]
    if entry == "spt-diffusion":
        assert cli.main(["train", *options]) == 0
        command = shlex.join(["spt-diffusion", "train", *options])
    else:
        assert main(options) == 0
        command = "python -m napari_spt_diffusion.training " + shlex.join(options)
    card = json.loads((tmp_path / "run" / "aniso.json").read_text())
    assert card["training"]["command"] == command
    assert card["training"]["lineage"][-1]["command"] == command
    assert TrainConfig.load(tmp_path / "run" / "train_config.json") == TrainConfig(
        "aniso", n_samples=8, val_samples=4, n_frames=6, epochs=1, batch_size=4, device="cpu", threads=1, seed=3,
        augment=False, out_dir=str(tmp_path / "run"))
    assert card["training"]["n_train_samples"] == 8 and "8-fold" not in card["training"]["optimizer"]
