"""Fixtures shared by several test files.

- ``_isolated``: for the napari widget tests, remembered widget parameters go to a
  temporary folder and user notifications are recorded instead of shown. A test file
  applies it to all its tests with ``pytestmark = pytest.mark.usefixtures("_isolated")``;
  a test that checks the notifications asks for it by name.
- ``toy_models``: two tiny TorchScript checkpoints (sequence and pointwise) whose tensor is
  the displacement covariance of the track, for pipeline tests that need a model but not
  a trained one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from napari_spt_diffusion.acquisition import Acquisition


@pytest.fixture
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, str]]:
    """Remembered parameters go to a temporary folder; notifications are recorded as ``(level, message)``.

    ``level`` is ``"error"`` (the one sentence a user reads), ``"warning"`` or ``"info"``.
    """
    from napari_spt_diffusion._napari import _dialogs

    monkeypatch.setenv("NAPARI_SPT_DIFFUSION_CONFIG_DIR", str(tmp_path / "config"))
    messages: list[tuple[str, str]] = []
    monkeypatch.setattr(_dialogs, "notify_error", lambda m: messages.append(("error", _dialogs.one_sentence(m))))
    monkeypatch.setattr(_dialogs, "notify_info", lambda m: messages.append(("info", str(m))))
    monkeypatch.setattr(_dialogs, "notify_warning", lambda m: messages.append(("warning", str(m))))
    return messages


class ToyTensor(nn.Module):
    """Tensor of a window from its displacement covariance: D = <d d^T> / 2 (px^2/frame)."""

    def __init__(self, pointwise: bool) -> None:
        super().__init__()
        self.pointwise = pointwise
        self.min_frames = 5
        self.max_frames = 20

    def forward(self, patches_photons: Tensor, displacements_px: Tensor, valid: Tensor) -> Tensor:
        out = self.forward_log(patches_photons, displacements_px, valid)
        return torch.cat([out[..., :2].exp(), out[..., 2:]], dim=-1)

    @torch.jit.export
    def forward_log(self, patches_photons: Tensor, displacements_px: Tensor, valid: Tensor) -> Tensor:
        m = valid.to(displacements_px.dtype)
        m = torch.cat([torch.zeros_like(m[:, :1]), m[:, 1:]], dim=1)
        count = m.sum(1).clamp(min=1.0)
        dy = displacements_px[:, :, 0]
        dx = displacements_px[:, :, 1]
        cyy = (dy * dy * m).sum(1) / count / 2.0
        cxx = (dx * dx * m).sum(1) / count / 2.0
        cxy = (dx * dy * m).sum(1) / count / 2.0
        centre = (cxx + cyy) / 2.0
        radius = torch.sqrt(((cxx - cyy) / 2.0) ** 2 + cxy**2)
        d1 = (centre + radius).clamp(min=1e-4)
        d2 = (centre - radius).clamp(min=1e-4)
        ang = torch.atan2(2.0 * cxy, cxx - cyy)
        row = torch.stack([d1.log(), d2.log(), torch.sin(ang), torch.cos(ang)], dim=-1)
        if self.pointwise:
            return row[:, None, :].expand(valid.shape[0], valid.shape[1], 4)
        return row


def _export_toy(folder: Path, name: str, pointwise: bool) -> str:
    from napari_spt_diffusion.training.card import export_checkpoint

    card = {
        "kind": "pointwise" if pointwise else "sequence",
        "motion_model": "binding" if pointwise else "aniso",
        "input_contract": {"patch_size_px": 11, "min_frames": 5, "max_frames": 20},
        "outputs": {"columns": ["D1_px2_frame", "D2_px2_frame", "sin2theta", "cos2theta"]},
        "training_acquisition": Acquisition().to_dict(),
    }
    return str(export_checkpoint(ToyTensor(pointwise), card, folder, name))


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths of the exported toy checkpoints, ``{"sequence": ..., "pointwise": ...}``."""
    folder = tmp_path_factory.mktemp("toy")
    return {"sequence": _export_toy(folder, "toyseq", False), "pointwise": _export_toy(folder, "toypw", True)}
