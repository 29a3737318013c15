"""TorchScript export, model cards, sha256-verified loading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_spt_diffusion.estimation.checkpoint import (
    CheckpointError,
    available_models,
    load_checkpoint,
    read_card,
    sha256_file,
)
from napari_spt_diffusion.training.card import export_checkpoint, update_card
from napari_spt_diffusion.training.models import ModelConfig, build_model

TINY = dict(embed_dim=16, n_heads=2, mlp_hidden=32, head_hidden=32, cnn_channels=(4, 8), n_cross=1, n_self=1, n_joint=1)


def _card(kind: str) -> dict:
    return {
        "kind": kind,
        "motion_model": "aniso" if kind == "sequence" else "binding",
        "input_contract": {"patch_size_px": 11, "min_frames": 5, "max_frames": 30},
        "outputs": {"columns": ["D1_px2_frame", "D2_px2_frame", "sin2theta", "cos2theta"]},
        "training_acquisition": {"pixel_size_nm": 100.0},
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="pointwise", **TINY)).eval()
    out = tmp_path_factory.mktemp("ckpt")
    path = export_checkpoint(model, _card("pointwise"), out, "tiny")
    return path, model


def _inputs(n: int = 2, t: int = 9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    patches = 10 + 50 * torch.rand(n, t, 11, 11, generator=g)
    return patches, torch.randn(n, t, 2, generator=g), torch.ones(n, t, dtype=torch.bool)


def test_round_trip_gives_identical_outputs(exported: tuple[Path, torch.nn.Module]) -> None:
    path, model = exported
    loaded, card = load_checkpoint(path)
    p, d, v = _inputs()
    v[0, 6:] = False
    with torch.no_grad():
        torch.testing.assert_close(loaded(p, d, v), model(p, d, v), atol=0, rtol=0)
        torch.testing.assert_close(loaded.forward_log(p, d, v), model.forward_log(p, d, v), atol=0, rtol=0)
    assert card["sha256"] == sha256_file(path)
    assert card["name"] == "tiny" and card["kind"] == "pointwise"
    assert card["torch_version"] == torch.__version__
    assert available_models(path.parent) == ["tiny"]
    # the card path and the stem work as well
    assert load_checkpoint(path.with_suffix(".json"))[1]["sha256"] == card["sha256"]


def test_corrupt_or_mismatched_file_is_refused(exported: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = exported
    bad = tmp_path / "bad.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "bad.json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="does not match its card"):
        load_checkpoint(bad)
    # a card whose sha256 matches but whose file is not TorchScript
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript archive")
    card = json.loads(path.with_suffix(".json").read_text())
    card["sha256"] = sha256_file(junk)
    (tmp_path / "junk.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(junk)


def test_missing_files_and_incomplete_cards(exported: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = exported
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    (tmp_path / "nocard.pt").write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nocard.pt")
    (tmp_path / "partial.pt").write_bytes(path.read_bytes())
    (tmp_path / "partial.json").write_text(json.dumps({"kind": "sequence"}))
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(tmp_path / "partial.pt")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_card(tmp_path / "broken.json")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint("no_such_bundled_model")


def test_export_refuses_overwrite_and_incomplete_card(exported: tuple[Path, torch.nn.Module]) -> None:
    path, model = exported
    with pytest.raises(CheckpointError, match="already exists"):
        export_checkpoint(model, _card("pointwise"), path.parent, "tiny")
    with pytest.raises(CheckpointError, match="lacks"):
        export_checkpoint(model, {"kind": "pointwise"}, path.parent, "other")
    assert not (path.parent / "other.pt").exists()


def test_update_card_keeps_the_checksum(exported: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = exported
    copy = tmp_path / "copy.pt"
    copy.write_bytes(path.read_bytes())
    (tmp_path / "copy.json").write_text(path.with_suffix(".json").read_text())
    card = update_card(copy, {"metrics": {"test": {"mae_D1_um2_s": 0.1}}})
    assert load_checkpoint(copy)[1]["metrics"] == card["metrics"]
    with pytest.raises(CheckpointError, match="sha256"):
        update_card(copy, {"sha256": "0" * 64})


def test_loading_does_not_import_the_training_code(exported: tuple[Path, torch.nn.Module]) -> None:
    path, _ = exported
    code = (
        "import sys; from napari_spt_diffusion.estimation.checkpoint import load_checkpoint; "
        f"m, c = load_checkpoint({str(path)!r}); "
        "bad = [k for k in sys.modules if k.startswith('napari_spt_diffusion.training')]; "
        "assert not bad, bad; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


BUNDLED = {"aniso": "sequence", "binding": "pointwise", "twostate": "pointwise"}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_models_load_and_answer_in_range(name: str) -> None:
    assert set(BUNDLED) <= set(available_models())
    module, card = load_checkpoint(name)
    assert card["kind"] == BUNDLED[name] and card["motion_model"] == name
    for key in ("command", "n_train_samples", "epochs_run", "train_time_s", "device"):
        assert key in card["training"]
    contract = card["input_contract"]
    t_max, t_min, p = contract["max_frames"], contract["min_frames"], contract["patch_size_px"]
    # a bright static spot on background, in ADU (offset 100): a slow particle
    yy, xx = torch.meshgrid(torch.arange(p) - p // 2, torch.arange(p) - p // 2, indexing="ij")
    g = torch.Generator().manual_seed(0)
    spot = 1000.0 / (2 * torch.pi) * torch.exp(-(yy**2 + xx**2) / 2.0)
    for t in (t_min, t_max):
        patches = torch.poisson((spot + 10.0).expand(2, t, p, p).contiguous(), generator=g) + 100.0
        disp = 0.05 * torch.randn(2, t, 2, generator=g)
        valid = torch.ones(2, t, dtype=torch.bool)
        with torch.no_grad():
            out = module(patches, disp, valid)
        assert out.shape == ((2, 4) if card["kind"] == "sequence" else (2, t, 4))
        assert torch.isfinite(out).all()
        assert (out[..., 0] >= out[..., 1]).all() and (out[..., 1] > 0).all()
        torch.testing.assert_close(out[..., 2] ** 2 + out[..., 3] ** 2, torch.ones(out.shape[:-1]), atol=1e-4, rtol=0)
        # an immobile particle must come out slow: well below 1 px^2/frame (1 um^2/s here)
        assert float(out[..., 0].median()) < 0.5


# ------------------------------------------------------------- pinned checksums
def test_every_bundled_checkpoint_is_pinned_in_package_code():
    """Fails when a model was (re-)bundled without re-pinning: run
    ``python -m napari_spt_diffusion.training --pin`` (bundle_run and reexport_checkpoint do it)."""
    from napari_spt_diffusion.estimation import checkpoint as ck
    from napari_spt_diffusion.estimation.checkpoint_pins import PINNED_SHA256

    names = sorted(p.stem for p in ck.CHECKPOINT_DIR.glob("*.pt"))
    assert sorted(PINNED_SHA256) == names
    for name in names:
        assert PINNED_SHA256[name] == read_card(name)["sha256"] == sha256_file(ck.CHECKPOINT_DIR / f"{name}.pt")


def test_corrupt_bundled_checkpoint_with_recomputed_card_is_refused(tmp_path, monkeypatch):
    from napari_spt_diffusion.estimation import checkpoint as ck

    bundled = tmp_path / "checkpoints"
    bundled.mkdir()
    card = read_card("aniso")
    data = bytearray((ck.CHECKPOINT_DIR / "aniso.pt").read_bytes())
    data[-100] ^= 0xFF  # one corrupted byte
    (bundled / "aniso.pt").write_bytes(bytes(data))
    card["sha256"] = sha256_file(bundled / "aniso.pt")  # the card recomputed over the corrupt file
    (bundled / "aniso.json").write_text(json.dumps(card))
    (bundled / "newmodel.pt").write_bytes((ck.CHECKPOINT_DIR / "binding.pt").read_bytes())
    binding = read_card("binding")
    (bundled / "newmodel.json").write_text(json.dumps(binding))
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", bundled)
    with pytest.raises(CheckpointError, match="pinned in the package.*corrupt or was replaced"):
        load_checkpoint("aniso")
    with pytest.raises(CheckpointError, match="no checksum pinned.*--pin"):
        load_checkpoint("newmodel")
    # the same files outside the package's folder are checked against their card only
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", tmp_path / "elsewhere")
    assert load_checkpoint(bundled / "newmodel.pt")[1]["sha256"] == binding["sha256"]


def test_pinning_rewrites_the_table(tmp_path, monkeypatch):
    from napari_spt_diffusion.estimation import checkpoint_pins
    from napari_spt_diffusion.training.card import pin_bundled_checksums

    source = tmp_path / "checkpoint_pins.py"
    source.write_text(Path(checkpoint_pins.__file__).read_text())
    monkeypatch.setattr(checkpoint_pins, "__file__", str(source))
    monkeypatch.setattr(checkpoint_pins, "PINNED_SHA256", dict(checkpoint_pins.PINNED_SHA256))
    folder = tmp_path / "bundle"
    folder.mkdir()
    pt = folder / "only.pt"
    pt.write_bytes(b"not really a model")
    (folder / "only.json").write_text(json.dumps({"sha256": sha256_file(pt)}))
    assert pin_bundled_checksums(folder) == {"only": sha256_file(pt)}
    namespace: dict = {}
    exec(source.read_text(), namespace)
    assert namespace["PINNED_SHA256"] == {"only": sha256_file(pt)}
    assert '"""SHA-256 of the bundled checkpoints' in source.read_text()
    pt.write_bytes(b"changed")
    with pytest.raises(CheckpointError, match="does not match its card"):
        pin_bundled_checksums(folder)
    exec(source.read_text(), namespace)
    assert list(namespace["PINNED_SHA256"]) == ["only"]  # unchanged: nothing was written


def test_bundling_into_the_package_pins_the_new_model(exported, tmp_path, monkeypatch):
    """The path a new bundled model (e.g. aniso_wide) takes: bundle_run into checkpoints/ pins it."""
    import shutil

    from napari_spt_diffusion.estimation import checkpoint as ck
    from napari_spt_diffusion.estimation import checkpoint_pins
    from napari_spt_diffusion.training import card as card_module

    package = tmp_path / "checkpoints"
    package.mkdir()
    pins = tmp_path / "checkpoint_pins.py"
    pins.write_text(Path(checkpoint_pins.__file__).read_text())
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", package)
    monkeypatch.setattr(card_module, "CHECKPOINT_DIR", package)
    monkeypatch.setattr(checkpoint_pins, "__file__", str(pins))
    monkeypatch.setattr(checkpoint_pins, "PINNED_SHA256", {})
    run = tmp_path / "run"
    run.mkdir()
    path, _ = exported
    shutil.copy(path, run / "tiny.pt")
    card = json.loads(path.with_suffix(".json").read_text())
    (run / "tiny.json").write_text(json.dumps({**card, "training": {}}))
    bundled = card_module.bundle_run(run, name="newly_bundled")
    assert bundled == package / "newly_bundled.pt"
    assert checkpoint_pins.PINNED_SHA256 == {"newly_bundled": sha256_file(bundled)}
    assert f'"newly_bundled": "{sha256_file(bundled)}"' in pins.read_text()
    assert load_checkpoint("newly_bundled")[1]["name"] == "newly_bundled"
