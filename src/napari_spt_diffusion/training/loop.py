"""The training loop of the cross-transformer models on simulated samples.

Samples come from :func:`napari_spt_diffusion.training.samples.make_samples`, which renders
small fields and runs the pipeline's spot path and the tracking patch path on them, so the
training data look exactly like inference data. A dataset is generated once (``.npz``,
:mod:`.data`) and trained on for several epochs: generation is slower than training.

Loss (per track for sequence models, per real frame for pointwise models)::

    |log D1_pred - log D1_true| + |log D2_pred - log D2_true|
      + anisotropy_true * ||(sin 2theta, cos 2theta)_pred - (sin 2theta, cos 2theta)_true||^2

with D in px^2/frame and ``anisotropy = 1 - D2/D1`` (the angle is undefined for an
isotropic tensor, so it is weighted out there). The predicted angle vector is regressed
unnormalised (its direction is the answer). The L1 loss on log D makes the prediction the
posterior median of D, which is also what minimises the MAE in um^2/s.

``trace_weight`` (``TrainConfig``, default 0) adds ``trace_weight * |log (D1 + D2)_pred -
log (D1 + D2)_true|``. The posterior medians of D1 and D2 taken apart do not add up to the
median of their sum: where the data cannot tell an isotropic track from an anisotropic one
(short, slow or noisy tracks), the prior's anisotropic tracks can pull the median of D2 down
more than that of D1 up, and the mean diffusivity ``(D1 + D2) / 2`` then reads low. On isotropic
tracks at a wide PSF and a high background the bundled ``aniso_any`` reads it 0.89 x the truth
for D of 0.15-0.5 um^2/s (``benchmarks/reports/trace_bias.md``). That is not this mechanism: a
stage trained with ``trace_weight`` 2 read those tracks lower still (0.81 x over all D against
0.87 x for the stage it started from; ``training_runs/aniso_any_trace_stage4``, and ``trace_bias.md``
as of commit 19b79d8).

Optimiser: AdamW with a linear warm-up then a cosine decay to 5 % of the peak learning rate.
Augmentation: the 8 symmetries of the square pixel grid (:func:`.data.augment`).

A run folder (``TrainConfig.out_dir``) receives ``train_config.json``, ``run.json``,
``learning_curve.csv``, ``status.json``, ``best_state.pt``, ``last_state.pt`` and the
exported ``<name>.pt`` / ``<name>.json`` (:mod:`.card`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..acquisition import Acquisition
from ..estimation.checkpoint import CHECKPOINT_DIR, CheckpointError, available_models, load_checkpoint, read_card
from ..estimation.estimator import EstimatorError, resolve_device
from ..io._atomic import atomic_path, atomic_write_json
from ..simulation.motion_models import get_motion_model
from .acquisition_ranges import get_range
from .card import (
    RunRecord,
    build_card,
    device_description,
    export_checkpoint,
    lineage_of_run,
    read_learning_curve,
    run_entry,
    write_run_record,
)
from .config import CONFIG_FILE_NAME, TrainConfig, TrainingError
from .data import DataOptions, Progress, Split, augment, load_dataset, sample_arrays, targets_from_labels, to_split
from .growth import load_state, stored_joint_blocks
from .models import ModelConfig, NormalizedModel, build_model
from .motion_priors import get_prior

__all__ = [
    "train_model",
    "default_command",
    "compute_loss",
    "lr_schedule",
    "predict",
    "evaluate",
    "cve_baseline",
]

_CURVE_FIELDS = ["epoch", "step", "samples_seen", "lr", "train_loss", "val_loss", "val_mae_D1_um2_s",
                 "val_mae_D2_um2_s", "val_angle_published", "val_angle_axial", "elapsed_s", "train_samples_per_s"]


# --------------------------------------------------------------- loss, schedule
def compute_loss(
    out_log: torch.Tensor, target: dict[str, torch.Tensor], valid: torch.Tensor | None, angle_weight: float = 1.0,
    trace_weight: float = 0.0,
) -> torch.Tensor:
    """Mean loss (see the module docstring) of ``forward_log`` outputs against targets.

    ``out_log`` ``(N, 4)`` or ``(N, T, 4)``; ``target`` as :func:`.data.targets_from_labels`
    returns it; ``valid`` ``(N, T)`` masks padded frames of pointwise outputs.
    """
    l_d = (out_log[..., :2] - target["log_d"]).abs().sum(-1)
    l_a = angle_weight * target["aniso"] * ((out_log[..., 2:] - target["angle"]) ** 2).sum(-1)
    per = l_d + l_a
    if trace_weight:
        log_trace = torch.logsumexp(out_log[..., :2], dim=-1)
        per = per + trace_weight * (log_trace - torch.logsumexp(target["log_d"], dim=-1)).abs()
    if out_log.dim() == 3 and valid is not None:
        w = valid.to(per.dtype)
        return (per * w).sum() / w.sum().clamp(min=1.0)
    return per.mean()


def lr_schedule(total_steps: int, warmup_steps: int, floor: float = 0.05) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up to 1, then cosine decay to ``floor``."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def predict(
    model: torch.nn.Module, data: dict[str, np.ndarray], device: torch.device | str = "cpu", batch_size: int = 512
) -> np.ndarray:
    """Model outputs ``(N, 4)`` or ``(N, T, 4)``: log D1, log D2 (px^2/frame), sin 2theta, cos 2theta."""
    model.eval()
    outs = []
    n = data["patches"].shape[0]
    for i in range(0, n, batch_size):
        p = torch.from_numpy(data["patches"][i : i + batch_size]).to(device)
        d = torch.from_numpy(data["displacements"][i : i + batch_size]).to(device)
        v = torch.from_numpy(data["valid"][i : i + batch_size]).to(device)
        fl = model.forward_log
        outs.append(fl(p, d, v).float().cpu().numpy())
    return np.concatenate(outs)


def evaluate(pred_log: np.ndarray, data: dict[str, np.ndarray], acquisition: Acquisition) -> dict[str, float]:
    """Metrics in physical units: MAE D1/D2 (um^2/s), angle similarity (published, axial).

    Sequence predictions (N, 4) are compared with the first frame's labels, pointwise
    predictions (N, T, 4) frame by frame over the real frames. The angle is scored only
    where the true tensor is anisotropic (D2/D1 < 0.9; it is undefined otherwise).
    """
    from ..estimation.tensor import theta_from_sin_cos_2theta
    from ..metrics import angle_similarity_axial, angle_similarity_published

    d1p = acquisition.diffusion_to_um2_s(np.exp(pred_log[..., 0].astype(np.float64)))
    d2p = acquisition.diffusion_to_um2_s(np.exp(pred_log[..., 1].astype(np.float64)))
    thp = theta_from_sin_cos_2theta(pred_log[..., 2], pred_log[..., 3])
    d1t, d2t, tht = data["D1_um2_s"], data["D2_um2_s"], data["theta_deg"]
    if pred_log.ndim == 2:
        d1t, d2t, tht = d1t[:, 0], d2t[:, 0], tht[:, 0]
        m = np.ones(d1t.shape, bool)
    else:
        m = data["valid"]
    aniso = m & (d2t < 0.9 * d1t)
    nan = float("nan")
    return {
        "mae_D1_um2_s": float(np.mean(np.abs(d1p - d1t)[m])),
        "mae_D2_um2_s": float(np.mean(np.abs(d2p - d2t)[m])),
        "angle_similarity_published": angle_similarity_published(thp[aniso], tht[aniso]) if aniso.any() else nan,
        "angle_similarity_axial": angle_similarity_axial(thp[aniso], tht[aniso]) if aniso.any() else nan,
        "n_evaluated": int(m.sum()),
    }


def cve_baseline(data: dict[str, np.ndarray], acquisition: Acquisition) -> dict[str, float]:
    """CVE tensor on the positions integrated from the displacements, scored like the model."""
    from ..estimation.classical import cve_tensor_batch
    from ..metrics import angle_similarity_axial, angle_similarity_published

    disp = data["displacements"].astype(np.float64).copy()
    disp[:, 0] = 0.0
    pos = np.cumsum(disp, axis=1)
    pos[~data["valid"]] = np.nan
    est = cve_tensor_batch(pos, acquisition)
    d1t, d2t, tht = data["D1_um2_s"][:, 0], data["D2_um2_s"][:, 0], data["theta_deg"][:, 0]
    an = d2t < 0.9 * d1t
    return {
        "mae_D1_um2_s": float(np.nanmean(np.abs(est["D1_um2_s"] - d1t))),
        "mae_D2_um2_s": float(np.nanmean(np.abs(est["D2_um2_s"] - d2t))),
        "angle_similarity_published": angle_similarity_published(est["theta_deg"][an], tht[an]),
        "angle_similarity_axial": angle_similarity_axial(est["theta_deg"][an], tht[an]),
    }


# ------------------------------------------------------------------- the run
@dataclass
class _Run:
    """What every step of a run needs: its settings, where it runs, where it reports."""

    config: TrainConfig
    acquisition: Acquisition
    kind: str
    device: torch.device
    out: Path
    progress: Progress | None

    def report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(float(min(1.0, max(0.0, fraction))), message)


@dataclass
class _Optimiser:
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator
    steps_per_epoch: int
    total_steps: int
    step: int = 0


def _start_run(config: TrainConfig, progress: Progress | None) -> _Run:
    """Check what the config cannot check by itself, prepare the device and the run folder."""
    if (config.init_state is not None and not Path(config.init_state).is_file()
            and config.init_state not in available_models()):
        raise TrainingError(f"init state {config.init_state} does not exist (neither a file nor a bundled model)")
    try:
        device = resolve_device(config.device)
    except EstimatorError as exc:
        raise TrainingError(str(exc)) from None
    if config.threads is not None:
        torch.set_num_threads(int(config.threads))
    out = config.run_folder
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / CONFIG_FILE_NAME)
    kind = get_motion_model(config.model).kind
    return _Run(config, config.training_acquisition(), kind, device, out, progress)


def _datasets(run: _Run, train_data: Any, val_data: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Training and validation arrays: given, cached (``dataset_path``) or generated (seed, seed + 1)."""
    c = run.config
    options = DataOptions(c.neighbour_fraction, get_range(c.acquisition_range), get_prior(c.motion_prior))
    val_path = None
    if c.dataset_path is not None:
        dp = Path(c.dataset_path)
        val_path = dp.with_name(dp.stem + "_val.npz")
    if train_data is not None:
        train = sample_arrays(train_data)
    else:
        train = load_dataset(c.dataset_path, c.model, c.n_samples, c.n_frames, run.acquisition, c.seed,
                             lambda f, m: run.report(0.1 * f, m), options=options)
    if val_data is not None:
        val = sample_arrays(val_data)
    else:
        val = load_dataset(val_path, c.model, c.val_samples, c.n_frames, run.acquisition, c.seed + 1,
                           lambda f, m: run.report(0.1 + 0.02 * f, m), options=options)
    if train["patches"].shape[1] != c.n_frames:
        raise TrainingError(f"dataset tracks have {train['patches'].shape[1]} frames, expected {c.n_frames}")
    return train, val


def _model_config(config: TrainConfig, kind: str, patch_size: int) -> ModelConfig:
    """Standard size (or ``config.model_config``) with the kind, length and patch size of the data."""
    overrides: dict[str, Any] = {"kind": kind, "max_frames": config.n_frames, "patch_size": patch_size}
    if config.modalities is not None:
        overrides["modalities"] = config.modalities
    if config.joint_blocks is not None:
        overrides["n_joint"] = config.joint_blocks
    elif "n_joint" not in (config.model_config or {}):  # a later stage of a grown model keeps its depth
        stored = _warm_start_joint_blocks(config.init_state)
        if stored is not None:
            overrides["n_joint"] = stored
    try:
        return ModelConfig.from_dict({**(config.model_config or {}), **overrides})
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"bad model configuration: {exc}") from None


def _warm_start_joint_blocks(init_state: str | None) -> int | None:
    """Joint blocks of the warm start's model (a run's state or a bundled checkpoint), ``None`` if unknown."""
    if init_state is None:
        return None
    p = Path(init_state)
    bundled = _bundled_name(p)
    if bundled is not None:
        return stored_joint_blocks(str(p), read_card(bundled))
    return stored_joint_blocks(str(p)) if p.is_file() else None


def _bundled_name(p: Path) -> str | None:
    """The bundled model an init state names (a bundled name, or a file in the checkpoint folder), else ``None``."""
    if not p.is_file() and p.suffix == "" and p.name in available_models():
        return p.name
    if p.is_file() and p.with_suffix(".json").is_file() and p.parent.resolve() == CHECKPOINT_DIR.resolve():
        return p.stem
    return None


def _load_init_state(net: torch.nn.Module, path: str | os.PathLike[str], cfg: ModelConfig) -> dict[str, Any]:
    """Load an earlier run's weights into ``net``; refuse a state of another size or kind.

    Returns the card's ``training.warm_start`` record: the state, its epoch, what that run
    had seen and its lineage.
    """
    p = Path(path)
    bundled = _bundled_name(p)
    if bundled is not None:
        return _load_bundled_state(net, bundled, cfg)
    if not p.is_file():
        raise TrainingError(f"init state {p} does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for files it cannot read
        raise TrainingError(f"{p} cannot be read as a training state ({exc})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise TrainingError(f"{p} is not a training state (expected best_state.pt or last_state.pt of a run)")
    try:  # a state saved before a config field existed has that field's default
        stored = ModelConfig.from_dict(ckpt["config"]).to_dict()
    except (TypeError, ValueError):
        stored = None
    grown = load_state(net, ckpt["state_dict"], stored, cfg, str(p))
    info: dict[str, Any] = {"state": str(p), "epoch_of_state": ckpt.get("epoch")}
    if grown:
        info["grown"] = grown
    curve = p.with_name("learning_curve.csv")
    if curve.is_file():
        rows = read_learning_curve(curve)
        if rows:
            info["samples_seen_before"] = rows[-1].get("samples_seen")
            info["train_time_s_before"] = rows[-1].get("elapsed_s")
    status = p.with_name("status.json")
    if status.is_file():
        info["status_before"] = json.loads(status.read_text())
    info["lineage"] = lineage_of_run(p.parent)
    return info


def _load_bundled_state(net: torch.nn.Module, name: str, cfg: ModelConfig) -> dict[str, Any]:
    """Warm start from a bundled checkpoint (TorchScript, checksum verified): its weights, and
    the lineage of its card, so the new card lists every stage behind the weights."""
    try:
        module, card = load_checkpoint(name)
    except CheckpointError as exc:
        raise TrainingError(str(exc)) from None
    try:
        stored = ModelConfig.from_dict(card.get("model_config") or {}).to_dict()
    except (TypeError, ValueError):
        stored = None
    grown = load_state(net, module.state_dict(), stored, cfg, f"bundled model {name!r}")
    training = card.get("training", {})
    info = {"state": f"bundled checkpoint {name} (sha256 {card.get('sha256')})", "epoch_of_state": None,
            "lineage": list(training.get("lineage", []))}
    return {**info, "grown": grown} if grown else info


def _optimiser(net: torch.nn.Module, config: TrainConfig, n_train: int) -> _Optimiser:
    """AdamW (no weight decay on biases and norms) with the warm-up + cosine schedule."""
    decay = [p for p in net.parameters() if p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.98))
    steps_per_epoch = max(1, n_train // config.batch_size) if n_train >= config.batch_size else 1
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(total, max(1, int(config.warmup_fraction * total))))
    return _Optimiser(opt, sched, torch.Generator().manual_seed(config.seed), steps_per_epoch, total)


def _train_epoch(run: _Run, net: NormalizedModel, train: Split, optim: _Optimiser, epoch: int) -> tuple[float, int]:
    """One pass over the training set in random batches; returns (mean loss, tracks seen)."""
    c, dev = run.config, run.device
    net.train()
    perm = torch.randperm(train.patches.shape[0], generator=optim.gen)
    running, count = 0.0, 0
    for b in range(optim.steps_per_epoch):
        idx = perm[b * c.batch_size : (b + 1) * c.batch_size]
        p, d, v = train.patches[idx], train.disp[idx], train.valid[idx]
        tgt = {k: t[idx] for k, t in train.target.items()}
        if c.augment:
            p, d, tgt["angle"] = augment(p, d, tgt["angle"], optim.gen)
        p, d, v = p.to(dev), d.to(dev), v.to(dev)
        tgt = {k: t.to(dev) for k, t in tgt.items()}
        loss = compute_loss(net.forward_log(p, d, v), tgt, v, c.angle_weight, c.trace_weight)
        optim.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optim.opt.step()
        optim.sched.step()
        optim.step += 1
        running += float(loss.detach()) * idx.numel()
        count += idx.numel()
        if b % 50 == 0:
            run.report(0.12 + 0.86 * (optim.step / optim.total_steps),
                       f"epoch {epoch}/{c.epochs} step {b}/{optim.steps_per_epoch} loss {running / max(count, 1):.4f}")
    return running / max(count, 1), count


def _validate(run: _Run, net: NormalizedModel, val: dict[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    """Validation loss and metrics (:func:`evaluate`) of the current weights."""
    pred = predict(net, val, run.device)
    target = targets_from_labels(val, run.acquisition, run.kind)
    loss = float(compute_loss(torch.from_numpy(pred), target, torch.from_numpy(val["valid"]), run.config.angle_weight,
                              run.config.trace_weight))
    return loss, evaluate(pred, val, run.acquisition)


def _save_epoch(run: _Run, net: NormalizedModel, cfg: ModelConfig, epoch: int, is_best: bool) -> None:
    """``last_state.pt`` every epoch, ``best_state.pt`` when the validation loss improved."""
    state = {"config": cfg.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
             "epoch": epoch}
    for name in ("last_state.pt", "best_state.pt") if is_best else ("last_state.pt",):
        with atomic_path(run.out / name) as tmp:
            torch.save(state, tmp)


def _append_curve(run: _Run, row: list[Any]) -> None:
    with open(run.out / "learning_curve.csv", "a", newline="") as f:
        csv.writer(f).writerow([f"{x:.6g}" if isinstance(x, float) else x for x in row])


def _fit(run: _Run, net: NormalizedModel, cfg: ModelConfig, train: Split, val: dict[str, np.ndarray]) -> dict[str, Any]:
    """All epochs: train, validate, record; returns the best epoch, epochs run and times."""
    c = run.config
    optim = _optimiser(net, c, train.patches.shape[0])
    with open(run.out / "learning_curve.csv", "w", newline="") as f:
        csv.writer(f).writerow(_CURVE_FIELDS)
    best: dict[str, Any] = {"val_loss": float("inf"), "epoch": -1, "metrics": {}}
    t_train = time.perf_counter()
    compute_s, epochs_done, stopped_early = 0.0, 0, False
    for epoch in range(1, c.epochs + 1):
        t_epoch = time.perf_counter()
        train_loss, count = _train_epoch(run, net, train, optim, epoch)
        epoch_s = time.perf_counter() - t_epoch
        compute_s += epoch_s
        val_loss, metrics = _validate(run, net, val)
        elapsed = time.perf_counter() - t_train
        _append_curve(run, [epoch, optim.step, optim.step * c.batch_size, optim.sched.get_last_lr()[0], train_loss,
                            val_loss, metrics["mae_D1_um2_s"], metrics["mae_D2_um2_s"],
                            metrics["angle_similarity_published"], metrics["angle_similarity_axial"],
                            round(elapsed, 1), count / epoch_s])
        is_best = val_loss < best["val_loss"]
        if is_best:
            best = {"val_loss": val_loss, "epoch": epoch, "metrics": metrics}
        _save_epoch(run, net, cfg, epoch, is_best)
        epochs_done = epoch
        atomic_write_json(run.out / "status.json", {"epoch": epoch, "epochs": c.epochs, "val_loss": val_loss,
                                                    "best_epoch": best["epoch"], "metrics": metrics,
                                                    "elapsed_s": time.perf_counter() - t_train})
        run.report(0.12 + 0.86 * optim.step / optim.total_steps,
                   f"epoch {epoch}/{c.epochs}: val MAE D1 {metrics['mae_D1_um2_s']:.3f} um^2/s")
        if c.max_time_s is not None and time.perf_counter() - t_train > c.max_time_s and epoch < c.epochs:
            stopped_early = True
            break
    return {"best": best, "epochs_run": epochs_done, "stopped_early": stopped_early,
            "train_time_s": time.perf_counter() - t_train, "train_compute_s": compute_s}


def default_command(config: TrainConfig) -> str:
    """The ``python -m napari_spt_diffusion.training`` command of a configuration."""
    return shlex.join(["python", "-m", "napari_spt_diffusion.training", *config.to_argv()])


def train_model(
    config: TrainConfig,
    progress: Progress | None = None,
    *,
    command: str | None = None,
    train_data: Any = None,
    val_data: Any = None,
) -> Path:
    """Train a model and export its best epoch as a TorchScript checkpoint with a card.

    Parameters
    ----------
    config
        Every setting of the run (:class:`~.config.TrainConfig`): motion model, data size,
        optimiser, acquisition, device, run folder, warm start, ...
    progress
        ``progress(fraction, message)`` callback.
    command
        The command that started the run, recorded in the card and the lineage (default:
        the ``python -m napari_spt_diffusion.training`` command of ``config``).
    train_data, val_data
        Ready datasets (``SampleBatch`` or dicts with ``patches, displacements, valid,
        D1_um2_s, D2_um2_s, theta_deg, state`` as :func:`.data.make_dataset` returns) instead
        of generating them; ``config.n_samples`` / ``config.val_samples`` are then ignored.

    Returns
    -------
    pathlib.Path
        Path of the exported ``<name>.pt`` in the run folder (its card ``<name>.json`` beside it).

    Raises
    ------
    TrainingError
        A missing warm-start state or one of another size, an unusable dataset, a device
        that is not there.
    """
    run = _start_run(config, progress)
    command = command or default_command(config)
    t_data = time.perf_counter()
    train_np, val_np = _datasets(run, train_data, val_data)
    data_time = time.perf_counter() - t_data
    train = to_split(train_np, run.acquisition, run.kind)

    torch.manual_seed(config.seed)
    cfg = _model_config(config, run.kind, int(train.patches.shape[-1]))
    net: NormalizedModel = build_model(cfg).to(run.device)
    warm_start = _load_init_state(net, config.init_state, cfg) if config.init_state is not None else None
    # the run's own record, written before training so that a run cut short still says what it was
    entry = run_entry(config, command, train.patches.shape[0])
    lineage_before = list(warm_start.get("lineage", [])) if warm_start else []
    write_run_record(run.out, entry, lineage_before)

    fit = _fit(run, net, cfg, train, val_np)

    final = build_model(cfg)
    final.load_state_dict(torch.load(run.out / "best_state.pt", map_location="cpu", weights_only=True)["state_dict"])
    hours = round(fit["train_time_s"] / 3600.0, 3)
    record = RunRecord(
        config=config, command=command, model_config=cfg, acquisition=run.acquisition,
        n_train=int(train.patches.shape[0]), n_val=int(val_np["patches"].shape[0]), epochs_run=fit["epochs_run"],
        stopped_early=fit["stopped_early"], best=fit["best"], train_time_s=fit["train_time_s"], data_time_s=data_time,
        train_compute_s=fit["train_compute_s"], device=device_description(run.device), warm_start=warm_start,
        lineage=lineage_before + [{**entry, "epochs_run": fit["epochs_run"], "train_time_h": hours}],
        baseline=cve_baseline(val_np, run.acquisition) if run.kind == "sequence" else None,
    )
    return export_checkpoint(final, build_card(record, final), run.out, config.checkpoint_name, overwrite=True)
