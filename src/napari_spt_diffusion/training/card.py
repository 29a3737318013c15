"""Writing checkpoints and their model cards: export, card contents, lineage, bundling, re-export.

A checkpoint is two files side by side, ``<name>.pt`` (TorchScript) and ``<name>.json``
(the model card: kind, input contract, training acquisition, the exact training command,
data size and time, held-out metrics, torch version, sha256 of the ``.pt``). Reading and
verifying them for inference is :mod:`napari_spt_diffusion.estimation.checkpoint`; this
module is the writing side:

* :func:`export_checkpoint` scripts a model and writes both files (all or nothing each);
  :func:`update_card` merges new fields (test metrics) into a verified card;
* :func:`build_card` is the card of a finished training run (:class:`RunRecord`);
* the lineage: every run writes ``run.json`` when it starts (:func:`write_run_record`),
  so that :func:`lineage_of_run` can list the training stages that led to a warm-started
  model even when a stage was cut short;
* :func:`bundle_run` copies a run's checkpoint into the package's ``checkpoints/``;
  :func:`reexport_checkpoint` re-scripts a checkpoint's weights with the current model code.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..acquisition import Acquisition
from ..estimation.checkpoint import (
    CARD_FORMAT_VERSION,
    CHECKPOINT_DIR,
    REQUIRED_CARD_KEYS,
    CheckpointError,
    checkpoint_paths,
    is_bundled,
    lineage_hours,
    load_checkpoint,
    sha256_file,
)
from ..io._atomic import atomic_path, atomic_write_json, atomic_write_text
from ..simulation.motion_models import get_motion_model
from .acquisition_ranges import get_range
from .config import TrainConfig, TrainingError
from .models import ModelConfig, NormalizedModel, build_model, count_parameters
from .motion_priors import get_prior

__all__ = [
    "RunRecord",
    "export_checkpoint",
    "update_card",
    "build_card",
    "device_description",
    "run_entry",
    "write_run_record",
    "lineage_of_run",
    "read_learning_curve",
    "bundle_run",
    "reexport_checkpoint",
    "pin_bundled_checksums",
]

#: Permission bits of the files written here: checkpoints are package data, readable by all.
_FILE_MODE = 0o644


def _write_json(path: Path, data: Any) -> None:
    """Write a card or a run record atomically, world-readable."""
    atomic_write_json(path, data, indent=2, mode=_FILE_MODE)


# ------------------------------------------------------------------- export
def export_checkpoint(
    model: torch.nn.Module, card: dict[str, Any], out_dir: str | os.PathLike[str], name: str, overwrite: bool = False
) -> Path:
    """Script ``model`` with TorchScript and write ``<name>.pt`` and ``<name>.json``.

    Parameters
    ----------
    model
        An exportable module (a :class:`~.models.NormalizedModel`); exported in eval mode on CPU.
    card
        Model-card fields; ``name``, ``sha256``, ``file_size_bytes``, ``torch_version`` and
        ``format_version`` are filled in here. It must contain the other
        :data:`~napari_spt_diffusion.estimation.checkpoint.REQUIRED_CARD_KEYS`.
    out_dir
        Destination folder (created if needed).
    name
        File stem, e.g. ``"aniso"``.
    overwrite
        Replace existing files of that name.

    Returns
    -------
    pathlib.Path
        Path of the ``.pt`` file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pt_path, card_path = out / f"{name}.pt", out / f"{name}.json"
    if not overwrite and (pt_path.exists() or card_path.exists()):
        raise CheckpointError(f"checkpoint {pt_path} already exists (pass overwrite=True to replace it)")
    full = dict(card)
    full["name"] = name
    full["format_version"] = CARD_FORMAT_VERSION
    full["torch_version"] = torch.__version__
    missing = [k for k in REQUIRED_CARD_KEYS if k not in full and k != "sha256"]
    if missing:
        raise CheckpointError(f"model card lacks the field(s) {', '.join(missing)}")
    was_training = model.training
    model = model.to("cpu").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is "deprecated" in 2.x, still supported
        scripted = torch.jit.script(model)
    with atomic_path(pt_path, mode=_FILE_MODE) as tmp:
        torch.jit.save(scripted, str(tmp))
        full["sha256"] = sha256_file(tmp)
        full["file_size_bytes"] = os.path.getsize(tmp)
    _write_json(card_path, full)
    if was_training:
        model.train()
    return pt_path


def update_card(name_or_path: str | os.PathLike[str], changes: dict[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into a card (top-level keys) after verifying its model; returns the card.

    Used by the accuracy benchmark to record test-set metrics. ``sha256`` cannot be changed.
    """
    if "sha256" in changes:
        raise CheckpointError("the sha256 of a card is set by export_checkpoint only")
    _, card = load_checkpoint(name_or_path)
    card.update(changes)
    _write_json(checkpoint_paths(name_or_path)[1], card)
    return card


# --------------------------------------------------------------------- card
@dataclass
class RunRecord:
    """What a finished training run did; :func:`build_card` turns it into the model card.

    Attributes
    ----------
    config
        The run's configuration.
    command
        The exact command that started the run.
    model_config
        Size and kind of the trained model.
    acquisition
        Acquisition of the simulated data.
    n_train, n_val
        Training and validation tracks.
    epochs_run, stopped_early
        Epochs completed; whether ``max_time_s`` ended the run before ``epochs``.
    best
        ``{"epoch", "val_loss", "metrics"}`` of the exported (best) epoch.
    train_time_s, data_time_s, train_compute_s
        Wall time of training (validation included), of making or loading the data, and
        of the training steps alone (s).
    device
        Where it trained, in words.
    warm_start
        What the run started from (``None``: a fresh initialisation).
    lineage
        Training stages that produced the weights, oldest first, this run last.
    baseline
        Validation metrics of the classical estimator (sequence models), or ``None``.
    """

    config: TrainConfig
    command: str
    model_config: ModelConfig
    acquisition: Acquisition
    n_train: int
    n_val: int
    epochs_run: int
    stopped_early: bool
    best: dict[str, Any]
    train_time_s: float
    data_time_s: float
    train_compute_s: float
    device: str
    warm_start: dict[str, Any] | None
    lineage: list[dict[str, Any]]
    baseline: dict[str, float] | None = None


def _input_contract(cfg: ModelConfig, n_frames: int) -> dict[str, Any]:
    p = cfg.patch_size
    return {
        "forward": "model(patches_photons, displacements_px, valid)",
        "patches_photons": f"(N, T, {p}, {p}) float32, photo-electrons (camera offset/gain removed or not: "
                           "they cancel), centred on round(localized position), as tracking.patches makes them",
        "displacements_px": "(N, T, 2) float32 (dy, dx) between consecutive localized positions in px; row 0 ignored",
        "valid": "(N, T) bool, True for real frames; padding only at the end of a track",
        "patch_size_px": p,
        "min_frames": cfg.min_frames,
        "max_frames": cfg.max_frames,
        "trained_frames": n_frames,
        "normalisation": (
            "inside the model: per frame the median pixel is subtracted; patches are divided by the track's mean "
            f"background-subtracted photon sum and multiplied by {cfg.patch_scale}; displacements are divided by "
            f"{cfg.displacement_scale_px} px. Gain, offset and photon count therefore cancel."
        ),
    }


def _outputs(kind: str) -> dict[str, Any]:
    return {
        "shape": "(N, 4)" if kind == "sequence" else "(N, T, 4)",
        "columns": ["D1_px2_frame", "D2_px2_frame", "sin2theta", "cos2theta"],
        "units": "D in px^2/frame; convert with Acquisition.diffusion_to_um2_s (x pixel_size_um^2 / frame_interval_s)",
        "theta": "theta_deg = degrees(atan2(sin2theta, cos2theta) / 2) mod 180, D1 axis from +x towards +y",
        "ordering": "D1 >= D2 always",
        "forward_log": "same, with log D (natural log, px^2/frame) in the first two columns",
    }


def _training_section(record: RunRecord) -> dict[str, Any]:
    c = record.config
    crowding = f", neighbour_fraction={float(c.neighbour_fraction)}" if c.neighbour_fraction else ""
    hours = round(record.train_time_s / 3600.0, 3)
    return {
        "command": record.command,
        "simulator": f"napari_spt_diffusion.training.samples.make_samples(model={c.model!r}{crowding}) "
                     "through the pipeline's spot path (locate_frame) and the tracking patch path",
        "neighbour_fraction": float(c.neighbour_fraction),
        "acquisition_range": None if c.acquisition_range is None else {
            "name": c.acquisition_range, **get_range(c.acquisition_range).to_dict()},
        "motion_prior": None if c.motion_prior is None else get_prior(c.motion_prior).to_dict(),
        "n_train_samples": int(record.n_train),
        "n_val_samples": int(record.n_val),
        "data_seed": c.seed,
        "val_seed": c.seed + 1,
        "epochs_planned": c.epochs,
        "epochs_run": record.epochs_run,
        "stopped_early_by_time_limit": record.stopped_early,
        "best_epoch": record.best["epoch"],
        "batch_size": c.batch_size,
        "optimizer": f"AdamW(lr={c.lr}, betas=(0.9, 0.98), weight_decay={c.weight_decay}), warm-up "
                     f"{c.warmup_fraction:.0%} then cosine to 5 %, grad-norm clip 1.0"
                     + (", 8-fold grid-symmetry augmentation" if c.augment else ""),
        "angle_weight": c.angle_weight,
        "trace_weight": c.trace_weight,
        "loss": "L1 on log D1, log D2 (px^2/frame) + anisotropy-weighted squared error of the "
                "(sin 2theta, cos 2theta) vector"
                + (f" + {c.trace_weight:g} x L1 on log (D1 + D2)" if c.trace_weight else ""),
        "train_time_s": round(record.train_time_s, 1),
        "train_time_h": hours,
        "data_time_s": round(record.data_time_s, 1),
        "train_samples_per_s": round(record.epochs_run * record.n_train / max(record.train_compute_s, 1e-9), 1),
        "device": record.device,
        "learning_curve": "learning_curve.csv of the run folder (columns as its header)",
        "config": "train_config.json of the run folder (every training parameter)",
        "warm_start": record.warm_start,
        "lineage": record.lineage,
        "lineage_total_train_time_h": round(lineage_hours(record.lineage), 3),
    }


def build_card(record: RunRecord, model: NormalizedModel) -> dict[str, Any]:
    """The model card of a finished run (``model``: the exported weights), without the file fields."""
    cfg, c = record.model_config, record.config
    card: dict[str, Any] = {
        "kind": cfg.kind,
        "motion_model": c.model,
        "description": get_motion_model(c.model).description,
        "outputs": _outputs(cfg.kind),
        "input_contract": _input_contract(cfg, c.n_frames),
        "model_config": cfg.to_dict(),
        "n_parameters": count_parameters(model),
        "training_acquisition": record.acquisition.to_dict(),
        "training": _training_section(record),
        "metrics": {"validation": {"set": f"{record.n_val} held-out tracks, seed {c.seed + 1}",
                                   "model": record.best["metrics"], "val_loss": record.best["val_loss"]}},
    }
    acquisition_range = get_range(c.acquisition_range)
    if acquisition_range is not None:
        # the estimator's acquisition check compares a movie with these ranges
        card["training_ranges"] = acquisition_range.card_ranges(record.acquisition)
    curve = c.run_folder / "learning_curve.csv"
    card["learning_curve"] = read_learning_curve(curve) if curve.is_file() else []
    if record.baseline is not None:
        card["metrics"]["validation"]["cve_tensor"] = record.baseline
    if cfg.kind == "sequence" and cfg.modalities == "both":
        card["alpha_image_class_token"] = float(model.core.alpha().item())
    return card


def device_description(device: torch.device) -> str:
    """``"cuda:0"``, or ``"cpu (2 threads, x86_64)"``: where a run trained."""
    if device.type != "cpu":
        return str(device)
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


# ------------------------------------------------------------------ lineage
def run_entry(config: TrainConfig, command: str, n_train: int) -> dict[str, Any]:
    """One stage of a lineage as it is known when the run starts."""
    entry = {"run_folder": str(config.run_folder), "command": command, "n_train_samples": int(n_train),
             "epochs_planned": int(config.epochs), "neighbour_fraction": float(config.neighbour_fraction),
             "warm_start_state": config.init_state}
    if config.joint_blocks is not None:  # the stage that set (or grew) the depth says so
        entry["joint_blocks"] = int(config.joint_blocks)
    return entry


def write_run_record(run: Path, entry: dict[str, Any], lineage_before: list[dict[str, Any]]) -> None:
    """Write ``run.json`` (this stage and the stages before it) when a run starts."""
    _write_json(run / "run.json", {**entry, "lineage_before": lineage_before})


def lineage_of_run(run: Path) -> list[dict[str, Any]]:
    """Training stages that produced the weights of run folder ``run``, oldest first.

    Read from the run's exported card (``training.lineage``) when it has one, else from its
    ``run.json`` (written when training starts, so a run cut short is still described) plus its
    learning curve (epochs and hours actually run). Empty when the folder holds neither.
    """
    for card_path in sorted(run.glob("*.json")):
        if card_path.stem in ("status", "run") or not card_path.with_suffix(".pt").is_file():
            continue
        training = json.loads(card_path.read_text()).get("training", {})
        if "lineage" in training:
            return list(training["lineage"])
        if "command" in training:  # a card from before lineages: one stage, as the card describes it
            return [{"run_folder": str(run), "command": training["command"],
                     "n_train_samples": training.get("n_train_samples"),
                     "epochs_planned": training.get("epochs_planned"), "epochs_run": training.get("epochs_run"),
                     "neighbour_fraction": training.get("neighbour_fraction", 0.0),
                     "warm_start_state": (training.get("warm_start") or {}).get("state"),
                     "train_time_h": training.get("train_time_h")}]
    info_path = run / "run.json"
    if not info_path.is_file():
        return []
    info = json.loads(info_path.read_text())
    entry = {k: v for k, v in info.items() if k != "lineage_before"}
    curve = run / "learning_curve.csv"
    rows = read_learning_curve(curve) if curve.is_file() else []
    entry["epochs_run"] = int(rows[-1]["epoch"]) if rows else 0
    entry["train_time_h"] = round(float(rows[-1]["elapsed_s"]) / 3600.0, 3) if rows else 0.0
    return list(info.get("lineage_before", [])) + [entry]


def read_learning_curve(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of a run's ``learning_curve.csv`` as dicts of numbers (one per epoch)."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k in ("epoch", "step", "samples_seen") else float(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


# ------------------------------------------------------- bundle, re-export
def bundle_run(run_dir: str | os.PathLike[str], name: str | None = None,
               dest: str | os.PathLike[str] | None = None,
               lineage: list[dict[str, Any]] | None = None) -> Path:
    """Copy a finished run's exported checkpoint into ``checkpoints/`` (or ``dest``).

    The ``.pt`` is verified against its card first (sha256); the run's learning curve is
    written into the card (``learning_curve``) so that the bundled card says how training
    went. ``lineage`` (training stages, oldest first) replaces the card's
    ``training.lineage`` for runs warm-started from folders that predate ``run.json``.
    Returns the path of the bundled ``.pt``.
    """
    run = Path(run_dir)
    cards = sorted(run.glob("*.json"))
    cards = [c for c in cards if c.with_suffix(".pt").is_file() and c.stem != "status"]
    if len(cards) != 1:
        raise TrainingError(f"{run} must hold exactly one exported <name>.pt/.json pair, found {len(cards)}")
    _, card = load_checkpoint(cards[0].with_suffix(".pt"))
    if (run / "learning_curve.csv").is_file():
        card["learning_curve"] = read_learning_curve(run / "learning_curve.csv")
    card["training"]["run_folder"] = str(run)
    if lineage is not None:
        if not isinstance(lineage, list) or not all(isinstance(e, dict) for e in lineage):
            raise TrainingError("lineage must be a list of objects (one per training stage)")
        card["training"]["lineage"] = lineage
        card["training"]["lineage_total_train_time_h"] = round(lineage_hours(lineage), 3)
    target_name = name or cards[0].stem
    out = Path(dest) if dest is not None else CHECKPOINT_DIR
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{target_name}.pt"
    with atomic_path(target, mode=_FILE_MODE) as tmp:
        tmp.write_bytes(cards[0].with_suffix(".pt").read_bytes())
    card["name"] = target_name
    _write_json(target.with_suffix(".json"), card)
    if is_bundled(target):
        pin_bundled_checksums()
    load_checkpoint(target)  # verify the copy
    return target


def pin_bundled_checksums(directory: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Pin the sha256 of every bundled checkpoint in package code (``estimation/checkpoint_pins.py``).

    Each ``.pt`` of ``directory`` (default: the package's ``checkpoints/``) is checked against
    its card first; any mismatch raises :class:`CheckpointError` and nothing is written.
    Returns ``{name: sha256}`` as pinned.
    """
    from ..estimation import checkpoint_pins

    folder = Path(directory) if directory is not None else CHECKPOINT_DIR
    pins: dict[str, str] = {}
    for name in sorted(p.stem for p in folder.glob("*.pt")):
        card_path = folder / f"{name}.json"
        if not card_path.is_file():
            raise CheckpointError(f"bundled model {name}.pt has no card beside it; nothing was pinned")
        card = json.loads(card_path.read_text())
        digest = sha256_file(folder / f"{name}.pt")
        if digest != card.get("sha256"):
            raise CheckpointError(f"bundled model {name}.pt does not match its card (sha256 {digest[:12]}...); "
                                  "nothing was pinned")
        pins[name] = digest
    lines = [f'    "{name}": "{digest}",' for name, digest in pins.items()]
    source = Path(checkpoint_pins.__file__)
    text = source.read_text()
    head = text[: text.index("PINNED_SHA256")]
    atomic_write_text(source, head + "PINNED_SHA256: dict[str, str] = {\n" + "\n".join(lines) + "\n}\n",
                      mode=_FILE_MODE)
    checkpoint_pins.PINNED_SHA256.clear()
    checkpoint_pins.PINNED_SHA256.update(pins)
    return pins


def reexport_checkpoint(name_or_path: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None,
                        reason: str = "re-exported with the current model code",
                        tolerance: float = 1e-5) -> Path:
    """Re-script a checkpoint's weights with the current :mod:`.models` code (same weights).

    A TorchScript file carries the code of ``forward`` as it was at export time; after a
    change of :mod:`.models` that leaves the computed values alone (e.g. a faster memory
    layout), this writes the same weights with the new code. Before writing, the old and
    the new module are run on the same random inputs (4 tracks of the model's maximum
    length); if their ``forward_log`` outputs differ by more than ``tolerance`` (log D and
    angle-vector units), nothing is written and :class:`TrainingError` is raised.

    The card is kept (metrics, learning curve, training record) and gets
    ``reexports``: a list of ``{"date", "reason", "previous_sha256", "max_abs_difference"}``.
    Returns the path of the written ``.pt`` (``dest`` folder, default: where it was).
    """
    old_module, card = load_checkpoint(name_or_path)
    pt_path, _ = checkpoint_paths(name_or_path)
    cfg = ModelConfig.from_dict(card["model_config"])
    model = build_model(cfg).eval()
    model.load_state_dict(old_module.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(0)
    t, size = cfg.max_frames, cfg.patch_size
    patches = torch.rand(4, t, size, size, generator=gen) * 100.0 + 10.0
    displacements = torch.randn(4, t, 2, generator=gen)
    valid = torch.ones(4, t, dtype=torch.bool)
    valid[1, t // 2:] = False
    with torch.no_grad():
        before = old_module.forward_log(patches, displacements, valid)
        after = model.forward_log(patches, displacements, valid)
    rows = valid if before.dim() == 3 else torch.ones(4, dtype=torch.bool)
    diff = float((before - after).abs()[rows].max())
    if not diff <= tolerance:
        raise TrainingError(f"{pt_path.name}: the current model code changes the outputs by {diff:.3g} "
                            f"(> {tolerance:g}); not re-exported")
    new_card = {k: v for k, v in card.items() if k not in ("sha256", "file_size_bytes")}
    new_card["reexports"] = list(card.get("reexports", [])) + [{
        "date": time.strftime("%Y-%m-%d %H:%M"), "reason": reason,
        "previous_sha256": card.get("sha256"), "max_abs_difference": diff}]
    out = Path(dest) if dest is not None else pt_path.parent
    written = export_checkpoint(model, new_card, out, pt_path.stem, overwrite=True)
    if is_bundled(written):
        pin_bundled_checksums()
    return written
