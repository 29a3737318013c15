"""Cross-transformer model definitions: shapes, ranges, padding mask, invariances."""

from __future__ import annotations

import warnings

import pytest
import torch

from napari_spt_diffusion.training.models import (
    CrossTransformer,
    ModelConfig,
    NormalizedModel,
    build_model,
    count_parameters,
)

TINY = dict(embed_dim=16, n_heads=2, mlp_hidden=32, head_hidden=32, cnn_channels=(4, 8), n_cross=1, n_self=1, n_joint=1)


def _inputs(n: int = 3, t: int = 12, p: int = 11, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(p) - p // 2, torch.arange(p) - p // 2, indexing="ij")
    spot = 150.0 * torch.exp(-(yy**2 + xx**2) / 2.0)
    patches = spot + 10.0 + 3.0 * torch.randn(n, t, p, p, generator=g)
    disp = torch.randn(n, t, 2, generator=g)
    valid = torch.ones(n, t, dtype=torch.bool)
    return patches, disp, valid


@pytest.mark.parametrize("kind", ["sequence", "pointwise"])
def test_output_shapes_and_ranges(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, **TINY)).eval()
    p, d, v = _inputs()
    with torch.no_grad():
        out = model(p, d, v)
        log_out = model.forward_log(p, d, v)
    expected = (3, 4) if kind == "sequence" else (3, 12, 4)
    assert out.shape == expected
    assert torch.isfinite(out).all()
    assert (out[..., 0] >= out[..., 1]).all() and (out[..., 1] > 0).all()
    torch.testing.assert_close(out[..., 2] ** 2 + out[..., 3] ** 2, torch.ones(expected[:-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(log_out[..., :2].exp(), out[..., :2])
    assert 0.0 <= float(model.core.alpha()) <= 1.0


def test_default_size_is_cpu_sized() -> None:
    # ~300k parameters: the size the issue says trains at ~150 samples/s on 2 cores.
    n = count_parameters(build_model(ModelConfig(kind="sequence")))
    assert 150_000 < n < 500_000


@pytest.mark.parametrize("kind", ["sequence", "pointwise"])
def test_padding_does_not_change_real_frames(kind: str) -> None:
    torch.manual_seed(1)
    model = build_model(ModelConfig(kind=kind, **TINY)).eval()
    p, d, v = _inputs(n=2, t=16, seed=3)
    short = 9
    # padded version: garbage (huge values and NaN) after frame `short`
    p_pad, d_pad, v_pad = p.clone(), d.clone(), v.clone()
    p_pad[:, short:] = float("nan")
    p_pad[0, short:] = 1e6
    d_pad[:, short:] = 50.0
    v_pad[:, short:] = False
    with torch.no_grad():
        ref = model(p[:, :short], d[:, :short], v[:, :short])
        padded = model(p_pad, d_pad, v_pad)
    assert torch.isfinite(padded).all() if kind == "sequence" else torch.isfinite(padded[:, :short]).all()
    if kind == "sequence":
        torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-4)
    else:
        torch.testing.assert_close(padded[:, :short], ref, atol=1e-5, rtol=1e-4)
    # and the padding really is masked: without the mask the answer changes
    with torch.no_grad():
        unmasked = model(p_pad.nan_to_num(0.0), d_pad, torch.ones_like(v_pad))
    assert not torch.allclose(unmasked[..., :1].flatten()[:2], ref[..., :1].flatten()[:2], atol=1e-4)


def test_camera_gain_offset_and_brightness_cancel() -> None:
    torch.manual_seed(2)
    model = build_model(ModelConfig(kind="sequence", **TINY)).eval()
    p, d, v = _inputs(n=4, t=10, seed=5)
    with torch.no_grad():
        ref = model(p, d, v)
        adu = model(p * 2.5 + 100.0, d, v)  # gain 2.5 ADU/e-, offset 100 ADU
    torch.testing.assert_close(adu, ref, atol=1e-4, rtol=1e-4)


def test_first_displacement_is_ignored() -> None:
    torch.manual_seed(4)
    model = build_model(ModelConfig(kind="pointwise", **TINY)).eval()
    p, d, v = _inputs(n=2, t=8)
    d2 = d.clone()
    d2[:, 0] = 7.0
    with torch.no_grad():
        torch.testing.assert_close(model(p, d2, v), model(p, d, v))


def test_torchscript_script_matches_eager() -> None:
    torch.manual_seed(5)
    for kind in ("sequence", "pointwise"):
        model = build_model(ModelConfig(kind=kind, **TINY)).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.script(model)
        p, d, v = _inputs(n=2, t=7)
        v[1, 5:] = False
        with torch.no_grad():
            torch.testing.assert_close(scripted(p, d, v), model(p, d, v), atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(scripted.forward_log(p, d, v), model.forward_log(p, d, v), atol=1e-6, rtol=1e-6)


def test_config_validation_and_round_trip() -> None:
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(kind="bogus")
    with pytest.raises(ValueError, match="even"):
        ModelConfig(embed_dim=30, n_heads=4)
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(patch_size=10)
    cfg = ModelConfig(kind="pointwise", **TINY)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(build_model(cfg), NormalizedModel)
    assert isinstance(build_model(cfg).core, CrossTransformer)


@pytest.mark.parametrize("kind", ["sequence", "pointwise"])
@pytest.mark.parametrize("modalities", ["image", "displacement"])
def test_single_modality_ablation_builds_scripts_and_ignores_the_absent_input(kind: str, modalities: str) -> None:
    torch.manual_seed(6)
    model = build_model(ModelConfig(kind=kind, modalities=modalities, **TINY)).eval()
    absent = "displacement_encoder" if modalities == "image" else "image_encoder"
    assert not any(name.startswith(f"core.{absent}") for name, _ in model.named_parameters())
    # fewer weights than the two-modality model, but the same number of blocks in the stream
    both = build_model(ModelConfig(kind=kind, **TINY))
    assert count_parameters(model) < count_parameters(both)
    n_blocks = len(model.core.self_image) + len(model.core.self_displacement) + len(model.core.joint)
    assert n_blocks == TINY["n_cross"] + TINY["n_self"] + TINY["n_joint"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model)
    p, d, v = _inputs(n=3, t=9)
    v[2, 6:] = False
    p_other, d_other = p.clone(), d.clone()
    if modalities == "image":
        d_other = 5.0 * torch.randn_like(d)  # the dropped input
        p_changed, d_changed = p * torch.linspace(0.5, 1.5, 9)[None, :, None, None] + 20.0 * torch.rand_like(p), d
    else:
        p_other = 200.0 * torch.rand_like(p)
        p_changed, d_changed = p, 3.0 * d + 0.5
    with torch.no_grad():
        ref = model(p, d, v)
        expected = (3, 4) if kind == "sequence" else (3, 9, 4)
        assert ref.shape == expected and torch.isfinite(ref if kind == "sequence" else ref[:2]).all()
        torch.testing.assert_close(scripted(p, d, v), ref, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(model(p_other, d_other, v), ref, atol=0.0, rtol=0.0)
        torch.testing.assert_close(scripted.forward_log(p_other, d_other, v), model.forward_log(p, d, v),
                                   atol=1e-6, rtol=1e-6)
        # the modality it keeps does matter
        assert not torch.allclose(model(p_changed, d_changed, v), ref, atol=1e-4)


def test_config_without_modalities_field_is_the_two_modality_model() -> None:
    old = ModelConfig(kind="sequence", **TINY).to_dict()
    del old["modalities"]  # cards written before the field existed
    assert ModelConfig.from_dict(old).modalities == "both"
    with pytest.raises(ValueError, match="modalities"):
        ModelConfig(modalities="sound")
