"""TorchScript checkpoints with JSON model cards: verified loading, listing, description.

A checkpoint is two files side by side::

    checkpoints/<name>.pt     TorchScript module (``torch.jit.script`` of a NormalizedModel)
    checkpoints/<name>.json   model card: kind, input contract, training acquisition, the exact
                              training command, data size and time, held-out metrics next to
                              the classical baselines, torch version, sha256 of the .pt

Loading needs only torch (no model classes, no training code) and refuses a file whose
sha256 does not match its card, or a card that is incomplete, with a
:class:`CheckpointError`. Writing checkpoints and cards (export, bundling, test metrics)
is the training side: :mod:`napari_spt_diffusion.training.card`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import SptDiffusionError

__all__ = [
    "CheckpointError",
    "CHECKPOINT_DIR",
    "CARD_FORMAT_VERSION",
    "REQUIRED_CARD_KEYS",
    "available_models",
    "is_bundled",
    "checkpoint_paths",
    "describe_training",
    "lineage_hours",
    "load_checkpoint",
    "read_card",
    "sha256_file",
]

#: Folder of the bundled models.
CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
CARD_FORMAT_VERSION = 1
REQUIRED_CARD_KEYS = ("name", "kind", "motion_model", "input_contract", "outputs", "training_acquisition", "sha256")


class CheckpointError(SptDiffusionError, ValueError):
    """A checkpoint that is missing, corrupt, or does not match its model card."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_paths(name_or_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(model .pt, card .json)`` paths for a bundled name or a path to either file."""
    text = str(name_or_path)
    p = Path(text)
    if p.suffix in (".pt", ".json") or p.parent != Path("."):
        stem = p.with_suffix("") if p.suffix in (".pt", ".json") else p
        return stem.with_suffix(".pt"), stem.with_suffix(".json")
    return CHECKPOINT_DIR / f"{text}.pt", CHECKPOINT_DIR / f"{text}.json"


def available_models(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the models whose ``.pt`` and ``.json`` are both present (sorted)."""
    d = Path(directory) if directory is not None else CHECKPOINT_DIR
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.pt") if p.with_suffix(".json").is_file())


def read_card(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model card of a checkpoint (not verified against the .pt)."""
    _, card_path = checkpoint_paths(name_or_path)
    if not card_path.is_file():
        available = ", ".join(available_models()) or "none"
        raise CheckpointError(f"model card {card_path} not found (available: {available})")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"model card {card_path} is not valid JSON ({exc})") from exc
    if not isinstance(card, dict):
        raise CheckpointError(f"model card {card_path} must hold a JSON object")
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise CheckpointError(f"model card {card_path} lacks the field(s) {', '.join(missing)}")
    return card


def load_checkpoint(
    name_or_path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load a TorchScript model after checking its sha256 against its card.

    Parameters
    ----------
    name_or_path
        Name of a bundled model (see :func:`available_models`) or path to its ``.pt``/``.json``.
    device
        Where to map the weights (``"cpu"``, ``"cuda"``, a ``torch.device``).

    Returns
    -------
    (module, card)
        The model in eval mode and its card (dict).

    Raises
    ------
    CheckpointError
        Missing files, a card without the required fields, a sha256 mismatch (corrupt or
        replaced file) or a file TorchScript cannot read.
    """
    pt_path, _ = checkpoint_paths(name_or_path)
    card = read_card(name_or_path)
    if not pt_path.is_file():
        raise CheckpointError(f"model file {pt_path} not found beside its card")
    digest = sha256_file(pt_path)
    if digest != card["sha256"]:
        raise CheckpointError(
            f"model file {pt_path} does not match its card (sha256 {digest[:12]}... instead of "
            f"{str(card['sha256'])[:12]}...): the file is corrupt or was replaced"
        )
    _check_pin(pt_path, digest)
    try:
        module = torch.jit.load(str(pt_path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError and friends for unreadable archives
        raise CheckpointError(f"model file {pt_path} cannot be loaded by TorchScript ({exc})") from exc
    module.eval()
    return module, card


def is_bundled(pt_path: str | os.PathLike[str]) -> bool:
    """True for a ``.pt`` in the package's ``checkpoints/`` folder."""
    return Path(pt_path).resolve().parent == Path(CHECKPOINT_DIR).resolve()


def _check_pin(pt_path: Path, digest: str) -> None:
    """Refuse a bundled model whose sha256 is not the one pinned in :mod:`.checkpoint_pins`."""
    if not is_bundled(pt_path):
        return
    from . import checkpoint_pins

    pinned = checkpoint_pins.PINNED_SHA256.get(pt_path.stem)
    repin = ("re-bundle it with 'python -m napari_spt_diffusion.training --bundle RUN' or re-pin with "
             "'python -m napari_spt_diffusion.training --pin'")
    if pinned is None:
        raise CheckpointError(f"bundled model {pt_path.name} has no checksum pinned in the package "
                              f"(estimation/checkpoint_pins.py); {repin}")
    if digest != pinned:
        raise CheckpointError(
            f"bundled model {pt_path.name} does not match the checksum pinned in the package (sha256 {digest[:12]}... "
            f"instead of {pinned[:12]}...): the file is corrupt or was replaced; reinstall napari-spt-diffusion, "
            f"or, if it was bundled on purpose, {repin}")


def lineage_hours(lineage: list[dict[str, Any]]) -> float:
    """Training hours summed over the stages of a card's ``training.lineage``."""
    return sum(float(e.get("train_time_h") or 0.0) for e in lineage)


def describe_training(card: dict[str, Any]) -> str:
    """One line on how a checkpoint was trained, summed over its warm-start lineage.

    For example ``"280000 training tracks x 10 epochs, 0.42 h"`` for one run, or, for a model
    warm-started through several runs, ``"4 stages (40000 x 10, 120000 x 12, ...) = 2440000
    track-epochs, 2.86 h"`` with the neighbour fraction of crowded stages.
    """
    tr = card.get("training", {})
    stages = tr.get("lineage") or []
    if len(stages) <= 1:
        return (f"{tr.get('n_train_samples', '?')} training tracks x {tr.get('epochs_run', '?')} epochs, "
                f"{tr.get('train_time_h', '?')} h")
    parts = []
    for e in stages:
        part = f"{e.get('n_train_samples', '?')} x {e.get('epochs_run', '?')}"
        if float(e.get("neighbour_fraction") or 0.0) > 0:
            part += f" ({float(e['neighbour_fraction']):.0%} crowded)"
        parts.append(part)
    track_epochs = sum(int(e.get("n_train_samples", 0)) * int(e.get("epochs_run", 0)) for e in stages)
    hours = lineage_hours(stages)
    return (f"{len(stages)} warm-started stages ({', '.join(parts)} training tracks x epochs) = "
            f"{track_epochs} track-epochs, {hours:.2f} h")
