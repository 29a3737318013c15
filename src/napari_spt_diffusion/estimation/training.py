"""Training of the cross-transformer models on simulated samples.

Samples come from :func:`napari_spt_diffusion.simulation.samples.make_samples`, which renders
small fields and runs the tracking code's detection/localization/patch path on them, so the
training data look exactly like inference data. A dataset is generated once (``.npz``) and
trained on for several epochs: generation is slower than training.

Loss (per track for sequence models, per real frame for pointwise models)::

    |log D1_pred - log D1_true| + |log D2_pred - log D2_true|
      + anisotropy_true * ||(sin 2theta, cos 2theta)_pred - (sin 2theta, cos 2theta)_true||^2

with D in px^2/frame and ``anisotropy = 1 - D2/D1`` (the angle is undefined for an
isotropic tensor, so it is weighted out there). The predicted angle vector is regressed
unnormalised (its direction is the answer). The L1 loss on log D makes the prediction the
posterior median of D, which is also what minimises the MAE in um^2/s.

Optimiser: AdamW with a linear warm-up then a cosine decay to 5 % of the peak learning rate.
Augmentation: the 8 symmetries of the square pixel grid (flips and transposition of the
patches with the matching displacements and angle labels), exact for an isotropic PSF.

Run as a script: ``python -m napari_spt_diffusion.estimation.training --model aniso ...``
(the ``spt-diffusion train`` command calls :func:`train_model` with the same arguments).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..acquisition import Acquisition
from .checkpoint import CheckpointError, _atomic_write_bytes, export_checkpoint, lineage_hours
from .models import DEFAULT_CONFIGS, MODEL_KINDS, ModelConfig, NormalizedModel, build_model, count_parameters

__all__ = [
    "TrainingError",
    "TEST_SEEDS",
    "train_model",
    "load_dataset",
    "make_dataset",
    "targets_from_labels",
    "compute_loss",
    "predict",
    "evaluate",
    "resolve_device",
    "read_learning_curve",
    "bundle_run",
    "main",
]

#: Generator seeds of the benchmark test sets (PROTOCOLS.md); training never uses them.
TEST_SEEDS = {"aniso": 2025, "binding": 2026, "twostate": 2027}
_FORBIDDEN_SEEDS = set(TEST_SEEDS.values())

Progress = Callable[[float, str], None]


class TrainingError(ValueError):
    """Bad training arguments or an unusable dataset."""


# ------------------------------------------------------------------------------ data
def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cpu"``/``"cuda"`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise TrainingError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for but no CUDA GPU is available")
    return torch.device(device)


def _sample_arrays(batch: Any) -> dict[str, np.ndarray]:
    """Plain arrays out of a ``SampleBatch`` (or a dict with the same fields)."""

    def get(name: str) -> Any:
        return batch[name] if isinstance(batch, dict) else getattr(batch, name)

    out = {
        "patches": np.asarray(get("patches"), dtype=np.float32),
        "displacements": np.asarray(get("displacements"), dtype=np.float32),
        "D1_um2_s": np.asarray(get("D1_um2_s"), dtype=np.float32),
        "D2_um2_s": np.asarray(get("D2_um2_s"), dtype=np.float32),
        "theta_deg": np.asarray(get("theta_deg"), dtype=np.float32),
        "state": np.asarray(get("state"), dtype=np.int8),
    }
    valid = None
    for name in ("valid", "mask"):
        try:
            valid = get(name)
            break
        except (KeyError, AttributeError):
            continue
    n, t = out["patches"].shape[:2]
    out["valid"] = np.ones((n, t), bool) if valid is None else np.asarray(valid, dtype=bool)
    return out


def make_dataset(
    model: str,
    n_samples: int,
    n_frames: int,
    acquisition: Acquisition,
    seed: int,
    progress: Progress | None = None,
    chunk: int = 2000,
    neighbour_fraction: float = 0.0,
) -> dict[str, np.ndarray]:
    """Generate ``n_samples`` training samples through the tracking path.

    Chunks get independent child seeds of ``seed`` (``numpy.random.SeedSequence``), so the
    result does not depend on the chunk size only through ``chunk``, which is fixed.
    ``neighbour_fraction``: share of samples with a second particle nearby
    (:func:`~napari_spt_diffusion.simulation.samples.make_samples`).
    """
    from ..simulation.samples import make_samples  # numpy-only simulator + tracking path

    children = np.random.SeedSequence(seed).spawn(math.ceil(n_samples / chunk))
    parts: list[dict[str, np.ndarray]] = []
    done = 0
    for child in children:
        n = min(chunk, n_samples - done)
        rng = np.random.default_rng(child)
        parts.append(_sample_arrays(make_samples(model, n, n_frames=n_frames, acquisition=acquisition, rng=rng,
                                                 neighbour_fraction=neighbour_fraction)))
        done += n
        if progress is not None:
            progress(done / n_samples, f"generated {done}/{n_samples} {model} samples")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_dataset(
    path: str | os.PathLike[str] | None,
    model: str,
    n_samples: int,
    n_frames: int,
    acquisition: Acquisition,
    seed: int,
    progress: Progress | None = None,
    neighbour_fraction: float = 0.0,
) -> dict[str, np.ndarray]:
    """Load a cached ``.npz`` dataset made with the same settings, or make and cache one."""
    meta: dict[str, Any] = {
        "model": model,
        "n_samples": int(n_samples),
        "n_frames": int(n_frames),
        "seed": int(seed),
        "acquisition": acquisition.to_dict(),
    }
    if neighbour_fraction:
        meta["neighbour_fraction"] = float(neighbour_fraction)
    if path is not None and Path(path).is_file():
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["meta"]))
            if stored != meta:
                raise TrainingError(f"dataset {path} was made with other settings ({stored}); delete it or pass another path")
            return {k: z[k] for k in z.files if k != "meta"}
    t0 = time.perf_counter()
    data = make_dataset(model, n_samples, n_frames, acquisition, seed, progress, neighbour_fraction=neighbour_fraction)
    meta["generation_time_s"] = round(time.perf_counter() - t0, 2)
    if path is not None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp.npz")
        np.savez(tmp, meta=json.dumps({k: v for k, v in meta.items() if k != "generation_time_s"}), **data)
        os.replace(tmp, p)
        p.with_suffix(".gen.json").write_text(json.dumps(meta, indent=2))
    return data


def targets_from_labels(data: dict[str, np.ndarray], acquisition: Acquisition, kind: str) -> dict[str, torch.Tensor]:
    """Training targets: log D (px^2/frame), (sin 2theta, cos 2theta), anisotropy weight.

    Sequence models use the label of the first frame (the track has one state).
    Returns tensors of shape ``(N,)``/``(N, 2)`` (sequence) or ``(N, T)``/``(N, T, 2)``.
    """
    d1 = np.asarray(acquisition.diffusion_to_px2_per_frame(data["D1_um2_s"]), np.float64)
    d2 = np.asarray(acquisition.diffusion_to_px2_per_frame(data["D2_um2_s"]), np.float64)
    d1 = np.clip(d1, 1e-6, None)
    d2 = np.clip(np.minimum(d2, d1), 1e-6, None)
    th = np.deg2rad(data["theta_deg"].astype(np.float64))
    ang = np.stack([np.sin(2 * th), np.cos(2 * th)], axis=-1)
    aniso = 1.0 - d2 / d1
    if kind == "sequence":
        d1, d2, ang, aniso = d1[:, 0], d2[:, 0], ang[:, 0], aniso[:, 0]
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return {"log_d": f(np.stack([np.log(d1), np.log(d2)], axis=-1)), "angle": f(ang), "aniso": f(aniso)}


# ---------------------------------------------------------------------- loss, augment
def compute_loss(
    out_log: torch.Tensor, target: dict[str, torch.Tensor], valid: torch.Tensor | None, angle_weight: float = 1.0
) -> torch.Tensor:
    """Mean loss (see module docstring); ``valid`` ``(N, T)`` masks padded frames (pointwise)."""
    l_d = (out_log[..., :2] - target["log_d"]).abs().sum(-1)
    l_a = angle_weight * target["aniso"] * ((out_log[..., 2:] - target["angle"]) ** 2).sum(-1)
    per = l_d + l_a
    if out_log.dim() == 3 and valid is not None:
        w = valid.to(per.dtype)
        return (per * w).sum() / w.sum().clamp(min=1.0)
    return per.mean()


def _augment(
    patches: torch.Tensor, disp: torch.Tensor, angle: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random symmetry of the square grid per track: flip y, flip x, transpose.

    ``patches`` (N, T, P, P) in (y, x), ``disp`` (N, T, 2) as (dy, dx), ``angle`` (N, 2) or
    (N, T, 2) as (sin 2theta, cos 2theta). Flipping an axis maps theta -> -theta
    (sin 2theta changes sign); transposition maps theta -> 90 - theta (cos 2theta changes sign).
    """
    n = patches.shape[0]
    flips = torch.rand(n, 3, generator=gen) < 0.5
    ang_shape = (n,) + (1,) * (angle.dim() - 1)

    def sel(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view((n,) + (1,) * (a.dim() - 1)), a, b)

    sign_y = torch.tensor([-1.0, 1.0])
    sign_x = torch.tensor([1.0, -1.0])
    swap_c = torch.tensor([1.0, -1.0])
    flip_s = torch.tensor([-1.0, 1.0])
    # flip y
    m = flips[:, 0]
    patches = sel(m, patches.flip(-2), patches)
    disp = sel(m, disp * sign_y, disp)
    angle = sel(m.view(ang_shape), angle * flip_s, angle)
    # flip x
    m = flips[:, 1]
    patches = sel(m, patches.flip(-1), patches)
    disp = sel(m, disp * sign_x, disp)
    angle = sel(m.view(ang_shape), angle * flip_s, angle)
    # transpose
    m = flips[:, 2]
    patches = sel(m, patches.transpose(-1, -2), patches)
    disp = sel(m, disp.flip(-1), disp)
    angle = sel(m.view(ang_shape), angle * swap_c, angle)
    return patches, disp, angle


def _lr_lambda(total_steps: int, warmup_steps: int, floor: float = 0.05) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


# ------------------------------------------------------------------------- evaluation
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
        fl = getattr(model, "forward_log")
        outs.append(fl(p, d, v).float().cpu().numpy())
    return np.concatenate(outs)


def evaluate(pred_log: np.ndarray, data: dict[str, np.ndarray], acquisition: Acquisition) -> dict[str, float]:
    """Metrics in physical units: MAE D1/D2 (um^2/s), angle similarity (published, axial).

    Sequence predictions (N, 4) are compared with the first frame's labels, pointwise
    predictions (N, T, 4) frame by frame over the real frames. The angle is scored only
    where the true tensor is anisotropic (D2/D1 < 0.9; it is undefined otherwise).
    """
    from .tensor import angle_similarity_axial, angle_similarity_published, theta_from_sin_cos_2theta

    d1p = acquisition.diffusion_to_um2_s(np.exp(pred_log[..., 0].astype(np.float64)))
    d2p = acquisition.diffusion_to_um2_s(np.exp(pred_log[..., 1].astype(np.float64)))
    thp = theta_from_sin_cos_2theta(pred_log[..., 2], pred_log[..., 3])
    d1t, d2t, tht = data["D1_um2_s"], data["D2_um2_s"], data["theta_deg"]
    valid = data["valid"]
    if pred_log.ndim == 2:
        d1t, d2t, tht = d1t[:, 0], d2t[:, 0], tht[:, 0]
        m = np.ones(d1t.shape, bool)
    else:
        m = valid
    aniso = m & (d2t < 0.9 * d1t)
    out = {
        "mae_D1_um2_s": float(np.mean(np.abs(d1p - d1t)[m])),
        "mae_D2_um2_s": float(np.mean(np.abs(d2p - d2t)[m])),
        "angle_similarity_published": angle_similarity_published(thp[aniso], tht[aniso]) if aniso.any() else float("nan"),
        "angle_similarity_axial": angle_similarity_axial(thp[aniso], tht[aniso]) if aniso.any() else float("nan"),
        "n_evaluated": int(m.sum()),
    }
    return out


# ---------------------------------------------------------------------------- training
@dataclass
class _Split:
    patches: torch.Tensor
    disp: torch.Tensor
    valid: torch.Tensor
    target: dict[str, torch.Tensor]


def _to_split(data: dict[str, np.ndarray], acquisition: Acquisition, kind: str) -> _Split:
    return _Split(
        torch.from_numpy(data["patches"]),
        torch.from_numpy(data["displacements"]),
        torch.from_numpy(data["valid"]),
        targets_from_labels(data, acquisition, kind),
    )


def _default_command(kwargs: dict[str, Any]) -> str:
    args = " ".join(f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in kwargs.items() if v is not None)
    return f"python -m napari_spt_diffusion.estimation.training {args}"


def train_model(
    model: str = "aniso",
    n_samples: int = 20000,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 2e-3,
    device: str = "auto",
    out_dir: str | os.PathLike[str] = "runs/train",
    seed: int = 0,
    n_frames: int = 30,
    acquisition: Acquisition | None = None,
    val_samples: int = 1000,
    progress: Progress | None = None,
    dataset_path: str | os.PathLike[str] | None = None,
    *,
    config: ModelConfig | None = None,
    weight_decay: float = 0.05,
    warmup_fraction: float = 0.03,
    num_threads: int | None = None,
    max_time_s: float | None = None,
    command: str | None = None,
    name: str | None = None,
    train_data: dict[str, np.ndarray] | None = None,
    val_data: dict[str, np.ndarray] | None = None,
    augment: bool = True,
    angle_weight: float = 4.0,
    init_state: str | os.PathLike[str] | None = None,
    modalities: str | None = None,
    neighbour_fraction: float = 0.0,
) -> Path:
    """Train a model and export its best epoch as a TorchScript checkpoint with a card.

    Parameters
    ----------
    model
        ``"aniso"`` (sequence model), ``"binding"`` or ``"twostate"`` (pointwise models).
    n_samples, val_samples
        Training and held-out validation tracks, generated once through the tracking path
        (``seed`` and ``seed + 1`` streams; never the benchmark test seeds).
    epochs, batch_size, lr
        Passes over the training set, tracks per step, peak AdamW learning rate.
    device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    out_dir
        Run folder: ``learning_curve.csv``, ``status.json``, ``best_state.pt``,
        ``last_state.pt`` and the exported ``<name>.pt`` / ``<name>.json``.
    seed
        Seeds the data, the initialisation, the batch order and the augmentation.
    n_frames
        Track length of the training samples (the model's maximum length).
    acquisition
        Acquisition of the simulated data (default: the standard one of PROTOCOLS.md).
    progress
        ``progress(fraction, message)`` callback.
    dataset_path
        ``.npz`` cache of the training set (the validation set is cached beside it as
        ``*_val.npz``); made when missing, reused when its settings match.
    config
        Model size (default ``DEFAULT_CONFIGS[model]`` with ``max_frames = n_frames``).
    max_time_s
        Optional wall-time cap: training stops after the epoch that crosses it (recorded).
    augment
        Random grid symmetries (flips, transposition) of each training track.
    angle_weight
        Weight of the angle term of the loss; 4 (the bundled models): with 1, the angle was
        hardly learned in the first epochs of a 3,000-track trial (axial similarity 0.64 vs
        0.91 with 5, at the cost of a slower start on D).
    init_state
        Optional ``best_state.pt``/``last_state.pt`` of an earlier run of the same model and
        size: training starts from its weights (a warm start; the schedule starts afresh).
        The card records it, and what that earlier run had seen, in ``training.warm_start``.
    modalities
        ``"both"`` (default), ``"image"`` or ``"displacement"``: overrides ``config.modalities``;
        the single-modality models are the ablations of ``benchmarks/bench_ablation.py``.
    neighbour_fraction
        Share of the training and validation tracks that get a second particle of the same
        motion model 1.5-6 px away at the start (crowding, see
        :func:`~napari_spt_diffusion.simulation.samples.make_samples`); 0: isolated particles.
    train_data, val_data
        Ready datasets (dicts with ``patches, displacements, valid, D1_um2_s, D2_um2_s,
        theta_deg, state`` as :func:`make_dataset` returns) instead of generating them;
        ``n_samples``/``val_samples`` are then ignored.

    Returns
    -------
    pathlib.Path
        Path of the exported ``<name>.pt`` (its card ``<name>.json`` beside it).
    """
    if model not in MODEL_KINDS:
        raise TrainingError(f"model must be one of {', '.join(MODEL_KINDS)}, got {model!r}")
    for label, value, low in (("n_samples", n_samples, 1), ("epochs", epochs, 1), ("batch_size", batch_size, 1),
                              ("val_samples", val_samples, 1), ("n_frames", n_frames, 2)):
        if int(value) != value or value < low:
            raise TrainingError(f"{label} must be an integer >= {low}, got {value!r}")
    if seed in _FORBIDDEN_SEEDS or seed + 1 in _FORBIDDEN_SEEDS:
        raise TrainingError(f"seed {seed} collides with the benchmark test seeds {sorted(_FORBIDDEN_SEEDS)}")
    if not lr > 0:
        raise TrainingError(f"lr must be positive, got {lr!r}")
    if init_state is not None and not Path(init_state).is_file():
        raise TrainingError(f"init state {init_state} does not exist")
    if not 0.0 <= float(neighbour_fraction) <= 1.0:
        raise TrainingError(f"neighbour_fraction must be in [0, 1], got {neighbour_fraction!r}")
    acq = acquisition if acquisition is not None else Acquisition()
    kind = MODEL_KINDS[model]
    dev = resolve_device(device)
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or model
    call = dict(model=model, n_samples=n_samples, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                out_dir=str(out), seed=seed, n_frames=n_frames, val_samples=val_samples,
                dataset_path=str(dataset_path) if dataset_path else None,
                neighbour_fraction=neighbour_fraction or None)
    command = command or _default_command(call)

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(float(min(1.0, max(0.0, fraction))), message)

    # ---- data (generation is ~10-20 % of the work; reported as the first part of progress)
    t_data = time.perf_counter()
    val_path = None
    if dataset_path is not None:
        dp = Path(dataset_path)
        val_path = dp.with_name(dp.stem + "_val.npz")
    if train_data is not None:
        train_np = _sample_arrays(train_data)
    else:
        train_np = load_dataset(dataset_path, model, n_samples, n_frames, acq, seed, lambda f, m: report(0.1 * f, m),
                                neighbour_fraction=neighbour_fraction)
    if val_data is not None:
        val_np = _sample_arrays(val_data)
    else:
        val_np = load_dataset(val_path, model, val_samples, n_frames, acq, seed + 1,
                              lambda f, m: report(0.1 + 0.02 * f, m), neighbour_fraction=neighbour_fraction)
    data_time = time.perf_counter() - t_data
    if train_np["patches"].shape[1] != n_frames:
        raise TrainingError(f"dataset tracks have {train_np['patches'].shape[1]} frames, expected {n_frames}")
    train = _to_split(train_np, acq, kind)
    patch_size = int(train.patches.shape[-1])

    # ---- model
    torch.manual_seed(seed)
    cfg = config or ModelConfig(**{**DEFAULT_CONFIGS[model].to_dict(), "max_frames": n_frames, "patch_size": patch_size})
    overrides: dict[str, Any] = {"kind": kind, "max_frames": n_frames, "patch_size": patch_size}
    if modalities is not None:
        overrides["modalities"] = modalities
    try:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    net: NormalizedModel = build_model(cfg).to(dev)
    warm_start: dict[str, Any] | None = None
    if init_state is not None:
        warm_start = _load_init_state(net, init_state, cfg)
    n_train = train.patches.shape[0]
    # the run's own record, written before training so that a run cut short still says what it was
    run_entry = {"run_folder": str(out), "command": command, "n_train_samples": int(n_train),
                 "epochs_planned": int(epochs), "neighbour_fraction": float(neighbour_fraction),
                 "warm_start_state": str(init_state) if init_state is not None else None}
    lineage_before = list(warm_start.get("lineage", [])) if warm_start else []
    _atomic_write_bytes(out / "run.json", json.dumps({**run_entry, "lineage_before": lineage_before}, indent=2).encode())
    decay = [p for n_, p in net.named_parameters() if p.dim() >= 2]
    no_decay = [p for n_, p in net.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    steps_per_epoch = max(1, n_train // batch_size) if n_train >= batch_size else 1
    total_steps = steps_per_epoch * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps, max(1, int(warmup_fraction * total_steps))))
    gen = torch.Generator().manual_seed(seed)

    curve_path = out / "learning_curve.csv"
    fields = ["epoch", "step", "samples_seen", "lr", "train_loss", "val_loss", "val_mae_D1_um2_s", "val_mae_D2_um2_s",
              "val_angle_published", "val_angle_axial", "elapsed_s", "train_samples_per_s"]
    with open(curve_path, "w", newline="") as f:
        csv.writer(f).writerow(fields)

    best = {"val_loss": float("inf"), "epoch": -1, "metrics": {}}
    t_train = time.perf_counter()
    train_compute_s = 0.0
    step = 0
    stopped_early = False
    epochs_done = 0
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(n_train, generator=gen)
        running, count = 0.0, 0
        t_epoch = time.perf_counter()
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            p, d, v = train.patches[idx], train.disp[idx], train.valid[idx]
            tgt = {k: t[idx] for k, t in train.target.items()}
            if augment:
                p, d, tgt["angle"] = _augment(p, d, tgt["angle"], gen)
            p, d, v = p.to(dev), d.to(dev), v.to(dev)
            tgt = {k: t.to(dev) for k, t in tgt.items()}
            out_log = net.forward_log(p, d, v)
            loss = compute_loss(out_log, tgt, v, angle_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            running += float(loss.detach()) * idx.numel()
            count += idx.numel()
            if b % 50 == 0:
                frac = 0.12 + 0.86 * (step / total_steps)
                report(frac, f"epoch {epoch}/{epochs} step {b}/{steps_per_epoch} loss {running / max(count, 1):.4f}")
        epoch_s = time.perf_counter() - t_epoch
        train_compute_s += epoch_s
        # ---- validation
        val_pred = predict(net, val_np, dev)
        val_t = targets_from_labels(val_np, acq, kind)
        val_loss = float(compute_loss(torch.from_numpy(val_pred), val_t, torch.from_numpy(val_np["valid"]), angle_weight))
        metrics = evaluate(val_pred, val_np, acq)
        row = [epoch, step, step * batch_size, sched.get_last_lr()[0], running / max(count, 1), val_loss,
               metrics["mae_D1_um2_s"], metrics["mae_D2_um2_s"], metrics["angle_similarity_published"],
               metrics["angle_similarity_axial"], round(time.perf_counter() - t_train, 1), count / epoch_s]
        with open(curve_path, "a", newline="") as f:
            csv.writer(f).writerow([f"{x:.6g}" if isinstance(x, float) else x for x in row])
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        torch.save({"config": cfg.to_dict(), "state_dict": state, "epoch": epoch}, out / "last_state.pt")
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "epoch": epoch, "metrics": metrics}
            torch.save({"config": cfg.to_dict(), "state_dict": state, "epoch": epoch}, out / "best_state.pt")
        epochs_done = epoch
        (out / "status.json").write_text(json.dumps({"epoch": epoch, "epochs": epochs, "val_loss": val_loss,
                                                     "best_epoch": best["epoch"], "metrics": metrics,
                                                     "elapsed_s": time.perf_counter() - t_train}, indent=2))
        report(0.12 + 0.86 * step / total_steps, f"epoch {epoch}/{epochs}: val MAE D1 {metrics['mae_D1_um2_s']:.3f} um^2/s")
        if max_time_s is not None and time.perf_counter() - t_train > max_time_s and epoch < epochs:
            stopped_early = True
            break
    train_time = time.perf_counter() - t_train

    # ---- export the best epoch
    ckpt = torch.load(out / "best_state.pt", map_location="cpu")
    final = build_model(cfg)
    final.load_state_dict(ckpt["state_dict"])
    card = {
        "kind": kind,
        "motion_model": model,
        "description": _DESCRIPTIONS[model],
        "outputs": {
            "shape": "(N, 4)" if kind == "sequence" else "(N, T, 4)",
            "columns": ["D1_px2_frame", "D2_px2_frame", "sin2theta", "cos2theta"],
            "units": "D in px^2/frame; convert with Acquisition.diffusion_to_um2_s (x pixel_size_um^2 / frame_interval_s)",
            "theta": "theta_deg = degrees(atan2(sin2theta, cos2theta) / 2) mod 180, D1 axis from +x towards +y",
            "ordering": "D1 >= D2 always",
            "forward_log": "same, with log D (natural log, px^2/frame) in the first two columns",
        },
        "input_contract": {
            "forward": "model(patches_photons, displacements_px, valid)",
            "patches_photons": f"(N, T, {patch_size}, {patch_size}) float32, photo-electrons (camera offset/gain removed or not: "
                               "they cancel), centred on round(localized position), as tracking.patches makes them",
            "displacements_px": "(N, T, 2) float32 (dy, dx) between consecutive localized positions in px; row 0 ignored",
            "valid": "(N, T) bool, True for real frames; padding only at the end of a track",
            "patch_size_px": patch_size,
            "min_frames": cfg.min_frames,
            "max_frames": cfg.max_frames,
            "trained_frames": n_frames,
            "normalisation": (
                "inside the model: per frame the median pixel is subtracted; patches are divided by the track's mean "
                f"background-subtracted photon sum and multiplied by {cfg.patch_scale}; displacements are divided by "
                f"{cfg.displacement_scale_px} px. Gain, offset and photon count therefore cancel."
            ),
        },
        "model_config": cfg.to_dict(),
        "n_parameters": count_parameters(final),
        "training_acquisition": acq.to_dict(),
        "training": {
            "command": command,
            "simulator": f"napari_spt_diffusion.simulation.samples.make_samples(model={model!r}"
                         + (f", neighbour_fraction={float(neighbour_fraction)}" if neighbour_fraction else "")
                         + ") through the tracking patch path",
            "neighbour_fraction": float(neighbour_fraction),
            "n_train_samples": int(n_train),
            "n_val_samples": int(val_np["patches"].shape[0]),
            "data_seed": seed,
            "val_seed": seed + 1,
            "epochs_planned": epochs,
            "epochs_run": epochs_done,
            "stopped_early_by_time_limit": stopped_early,
            "best_epoch": best["epoch"],
            "batch_size": batch_size,
            "optimizer": f"AdamW(lr={lr}, betas=(0.9, 0.98), weight_decay={weight_decay}), warm-up {warmup_fraction:.0%} "
                         "then cosine to 5 %, grad-norm clip 1.0" + (", 8-fold grid-symmetry augmentation" if augment else ""),
            "angle_weight": angle_weight,
            "loss": "L1 on log D1, log D2 (px^2/frame) + anisotropy-weighted squared error of the (sin 2theta, cos 2theta) vector",
            "train_time_s": round(train_time, 1),
            "train_time_h": round(train_time / 3600.0, 3),
            "data_time_s": round(data_time, 1),
            "train_samples_per_s": round(epochs_done * n_train / max(train_compute_s, 1e-9), 1),
            "device": str(dev) if dev.type != "cpu" else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
            "learning_curve": "learning_curve.csv of the run folder (columns as its header)",
            "warm_start": warm_start,
        },
        "metrics": {
            "validation": {"set": f"{int(val_np['patches'].shape[0])} held-out tracks, seed {seed + 1}",
                           "model": best["metrics"], "val_loss": best["val_loss"]},
        },
    }
    card["learning_curve"] = read_learning_curve(curve_path)
    card["training"]["lineage"] = lineage_before + [{**run_entry, "epochs_run": epochs_done,
                                                     "train_time_h": round(train_time / 3600.0, 3)}]
    card["training"]["lineage_total_train_time_h"] = round(lineage_hours(card["training"]["lineage"]), 3)
    if kind == "sequence":
        card["metrics"]["validation"]["cve_tensor"] = _cve_baseline(val_np, acq)
        if cfg.modalities == "both":
            card["alpha_image_class_token"] = float(final.core.alpha().item())
    return export_checkpoint(final, card, out, name, overwrite=True)


_DESCRIPTIONS = {
    "aniso": "Single-state anisotropic diffusion: one 2-D tensor (D1 >= D2, theta) per track (seed-aniso physics).",
    "binding": "Binding/unbinding (bound isotropic slow <-> free anisotropic fast): per-frame tensor (seed-binding physics).",
    "twostate": "Two isotropic states with one switch: per-frame D (D1 ~ D2; theta meaningless) (seed-twostate physics).",
}


def _load_init_state(net: torch.nn.Module, path: str | os.PathLike[str], cfg: ModelConfig) -> dict[str, Any]:
    """Load an earlier run's weights into ``net``; refuse a state of another size or kind."""
    p = Path(path)
    if not p.is_file():
        raise TrainingError(f"init state {p} does not exist")
    ckpt = torch.load(p, map_location="cpu")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise TrainingError(f"{p} is not a training state (expected best_state.pt or last_state.pt of a run)")
    try:  # a state saved before a config field existed has that field's default
        stored = ModelConfig.from_dict(ckpt["config"]).to_dict()
    except (TypeError, ValueError):
        stored = None
    if stored != cfg.to_dict():
        raise TrainingError(f"{p} was trained with another model configuration; warm start needs the same size and kind")
    net.load_state_dict(ckpt["state_dict"])
    info: dict[str, Any] = {"state": str(p), "epoch_of_state": ckpt.get("epoch")}
    status = p.with_name("status.json")
    curve = p.with_name("learning_curve.csv")
    if curve.is_file():
        rows = read_learning_curve(curve)
        if rows:
            info["samples_seen_before"] = rows[-1].get("samples_seen")
            info["train_time_s_before"] = rows[-1].get("elapsed_s")
    if status.is_file():
        info["status_before"] = json.loads(status.read_text())
    info["lineage"] = _lineage_of_run(p.parent)
    return info


def _lineage_of_run(run: Path) -> list[dict[str, Any]]:
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
                     "n_train_samples": training.get("n_train_samples"), "epochs_planned": training.get("epochs_planned"),
                     "epochs_run": training.get("epochs_run"), "neighbour_fraction": training.get("neighbour_fraction", 0.0),
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


def _cve_baseline(data: dict[str, np.ndarray], acquisition: Acquisition) -> dict[str, float]:
    """CVE tensor on the positions integrated from the displacements, scored like the model."""
    try:
        from .classical import cve_tensor_batch
    except ImportError:  # pragma: no cover - classical module is part of the package
        return {}
    disp = data["displacements"].astype(np.float64).copy()
    disp[:, 0] = 0.0
    pos = np.cumsum(disp, axis=1)
    pos[~data["valid"]] = np.nan
    est = cve_tensor_batch(pos, acquisition)
    from .tensor import angle_similarity_axial, angle_similarity_published

    d1t, d2t, tht = data["D1_um2_s"][:, 0], data["D2_um2_s"][:, 0], data["theta_deg"][:, 0]
    an = d2t < 0.9 * d1t
    return {
        "mae_D1_um2_s": float(np.nanmean(np.abs(est["D1_um2_s"] - d1t))),
        "mae_D2_um2_s": float(np.nanmean(np.abs(est["D2_um2_s"] - d2t))),
        "angle_similarity_published": angle_similarity_published(est["theta_deg"][an], tht[an]),
        "angle_similarity_axial": angle_similarity_axial(est["theta_deg"][an], tht[an]),
    }


def read_learning_curve(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of a run's ``learning_curve.csv`` as dicts of numbers (one per epoch)."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k in ("epoch", "step", "samples_seen") else float(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


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
    from .checkpoint import CHECKPOINT_DIR, _write_card, load_checkpoint

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
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(cards[0].with_suffix(".pt").read_bytes())
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    card["name"] = target_name
    _write_card(target.with_suffix(".json"), card)
    load_checkpoint(target)  # verify the copy
    return target


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
    from .checkpoint import checkpoint_paths, load_checkpoint

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
    return export_checkpoint(model, new_card, out, pt_path.stem, overwrite=True)


# ---------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``spt-diffusion train`` / ``python -m ...training``."""
    p = argparse.ArgumentParser(description="Train a cross-transformer model on simulated tracks.")
    p.add_argument("--model", choices=sorted(MODEL_KINDS), required=True)
    p.add_argument("--samples", "--n-samples", dest="n_samples", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", "--out-dir", dest="out_dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-frames", type=int, default=30)
    p.add_argument("--val-samples", type=int, default=1000)
    p.add_argument("--dataset-path", default=None)
    p.add_argument("--psf-sigma-nm", type=float, default=None, help="PSF sigma of the simulated microscope (nm)")
    p.add_argument("--photons", type=float, default=None, help="signal photons per frame")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-time-s", type=float, default=None)
    p.add_argument("--name", default=None)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no grid-symmetry augmentation")
    p.add_argument("--angle-weight", type=float, default=4.0, help="weight of the angle term of the loss")
    p.add_argument("--init-state", default=None, help="warm start from a run's best_state.pt / last_state.pt")
    p.add_argument("--modalities", choices=["both", "image", "displacement"], default=None,
                   help="token streams of the model (single-modality ablations)")
    p.add_argument("--neighbour-fraction", type=float, default=0.0,
                   help="share of training tracks with a second particle nearby (crowding; default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints progress lines and the exported checkpoint path.

    ``--bundle RUN_DIR [--name NAME]`` instead copies a finished run into ``checkpoints/``;
    ``--reexport NAME_OR_PT ...`` re-scripts checkpoints with the current model code.
    """
    argv_list0 = sys.argv[1:] if argv is None else list(argv)
    if argv_list0 and argv_list0[0] == "--reexport":
        rp = argparse.ArgumentParser(description="Re-export a checkpoint's weights with the current model code.")
        rp.add_argument("--reexport", required=True, nargs="+", help="bundled model names or .pt paths")
        rp.add_argument("--reason", default="re-exported with the current model code")
        rargs = rp.parse_args(argv_list0)
        for item in rargs.reexport:
            try:
                print(f"re-exported {reexport_checkpoint(item, reason=rargs.reason)}")
            except (TrainingError, CheckpointError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        return 0
    if argv_list0 and argv_list0[0] == "--bundle":
        bp = argparse.ArgumentParser(description="Bundle a finished training run into checkpoints/.")
        bp.add_argument("--bundle", required=True, help="run folder of train_model")
        bp.add_argument("--name", default=None)
        bp.add_argument("--dest", default=None)
        bp.add_argument("--lineage", default=None,
                        help="JSON file: list of training stages (oldest first) to record in the card")
        bargs = bp.parse_args(argv_list0)
        lineage = None
        if bargs.lineage is not None:
            try:
                lineage = json.loads(Path(bargs.lineage).read_text())
            except (OSError, ValueError) as exc:
                print(f"error: cannot read lineage file {bargs.lineage}: {exc}", file=sys.stderr)
                return 2
        try:
            print(f"bundled {bundle_run(bargs.bundle, bargs.name, bargs.dest, lineage)}")
        except TrainingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    args = build_parser().parse_args(argv)
    acq = Acquisition()
    if args.psf_sigma_nm is not None:
        acq = acq.replace(psf_sigma_nm=args.psf_sigma_nm)
    if args.photons is not None:
        acq = acq.replace(signal_photons=args.photons)
    argv_list = sys.argv[1:] if argv is None else argv
    command = "python -m napari_spt_diffusion.estimation.training " + " ".join(shlex.quote(a) for a in argv_list)
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.time()
        if now - last[0] > 20 or fraction >= 1.0 or "val" in message:
            print(f"[{time.strftime('%H:%M:%S')}] {fraction:6.1%} {message}", flush=True)
            last[0] = now

    path = train_model(
        model=args.model, n_samples=args.n_samples, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        device=args.device, out_dir=args.out_dir or f"runs/{args.model}", seed=args.seed, n_frames=args.n_frames,
        acquisition=acq, val_samples=args.val_samples, progress=progress, dataset_path=args.dataset_path,
        num_threads=args.threads, max_time_s=args.max_time_s, command=command, name=args.name,
        augment=args.augment, angle_weight=args.angle_weight, init_state=args.init_state,
        modalities=args.modalities, neighbour_fraction=args.neighbour_fraction,
    )
    print(f"exported {path}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
