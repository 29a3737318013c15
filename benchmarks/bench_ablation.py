"""Modality ablation of the anisotropic model: image tokens only, displacement tokens only, both.

The value of each modality is measured, not assumed: three ``aniso`` models that differ only
in ``ModelConfig.modalities`` are trained at the same budget and scored on the same test set.

- ``both``: the cross-transformer of the bundled models (two token streams, cross-attention).
- ``image`` / ``displacement``: one token stream; the absent encoder is not built and its
  input is ignored; the stream goes through ``n_cross + n_self + n_joint`` self-attention
  blocks, the depth of the two-modality model (``training/models.py``).

Training budget (identical for the three): the first ``--n-train`` (default 20,000) tracks
of ``runs/data/aniso_train.npz`` (seed-100 tracks made by ``training.load_dataset``), the
2,000 validation tracks of ``runs/data/aniso_train_val.npz`` (seed 101), ``--epochs``
(default 6) epochs, batch 64, the default learning rate, angle weight 4, grid-symmetry
augmentation, model seed 100, 1 torch thread. The best epoch on the validation loss is
exported to ``runs/ablation_<modalities>/`` (never into ``checkpoints/``); the report scores
each run's ``best_state.pt`` (the same weights) in eager PyTorch.

Test: seed-aniso v1 of docs/protocols.md (5,000 tracks, seed 2025), the cache of
``bench_accuracy.py`` (``--cache runs/bench_cache``; made there when missing, ``_common.seed_test_set``).

Commands::

    .venv/bin/python benchmarks/bench_ablation.py train --modalities both|image|displacement
        [--n-train 20000] [--epochs 6] [--threads 1] [--runs runs]
    .venv/bin/python benchmarks/bench_ablation.py report [--runs runs] [--cache runs/bench_cache]
        [--threads 1] [--out benchmarks/reports/ablation.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import (
    PROTOCOLS,
    command_line,
    report_header,
    report_path,
    run_model,
    seed_test_set,
    track_metrics,
    write_report,
)
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.training.card import read_learning_curve
from napari_spt_diffusion.training.config import TrainConfig
from napari_spt_diffusion.training.loop import train_model
from napari_spt_diffusion.training.models import MODALITIES, ModelConfig, build_model, count_parameters

TRAIN_SEED = 100  # the seed runs/data/aniso_train.npz was made with (its .gen.json)


def _load_first(path: Path, n: int | None) -> dict[str, np.ndarray]:
    """The first ``n`` tracks (all when ``None``) of a ``load_dataset`` cache, copied out of the file."""
    with np.load(path, allow_pickle=False) as z:
        keys = [k for k in z.files if k != "meta"]
        return {k: np.ascontiguousarray(z[k][:n]) for k in keys}


def _train(args: argparse.Namespace, command: str) -> int:
    data_dir = Path(args.data)
    train = _load_first(data_dir / "aniso_train.npz", args.n_train)
    val = _load_first(data_dir / "aniso_train_val.npz", None)
    if train["patches"].shape[0] < args.n_train:
        raise SystemExit(f"{data_dir / 'aniso_train.npz'} holds fewer than {args.n_train} tracks")
    out = Path(args.runs) / f"ablation_{args.modalities}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text(command + "\n")

    def progress(fraction: float, message: str) -> None:
        if "val" in message or "step 0/" in message:
            print(f"[{time.strftime('%H:%M:%S')}] {fraction:6.1%} {message}", flush=True)

    config = TrainConfig(model="aniso", n_samples=args.n_train, epochs=args.epochs, device="cpu", out_dir=str(out),
                         seed=TRAIN_SEED, threads=args.threads, name=f"aniso_{args.modalities}",
                         modalities=args.modalities)
    path = train_model(config, progress, command=command, train_data=train, val_data=val)
    print(f"exported {path}", flush=True)
    return 0


def _run_summary(run: Path, mod: str) -> dict:
    """Training figures of a run folder: its learning curve, status and command."""
    curve = read_learning_curve(run / "learning_curve.csv")
    status = json.loads((run / "status.json").read_text())
    card_path = run / f"aniso_{mod}.json"
    if card_path.is_file():
        command = json.loads(card_path.read_text())["training"]["command"]
    elif (run / "command.txt").is_file():
        command = (run / "command.txt").read_text().strip()
    else:
        command = f"runs/ablation.sh (benchmarks/bench_ablation.py train --modalities {mod}, defaults otherwise)"
    return {
        "epochs": int(curve[-1]["epoch"]),
        "best_epoch": int(status["best_epoch"]),
        "train_time_s": float(curve[-1]["elapsed_s"]),
        "samples_per_s": float(np.mean([r["train_samples_per_s"] for r in curve])),
        "samples_seen": int(curve[-1]["samples_seen"]),
        "command": command,
    }


def _load_best(run: Path) -> torch.nn.Module:
    """The best epoch's weights of a run (``best_state.pt``) in an eval-mode model."""
    state = torch.load(run / "best_state.pt", map_location="cpu")
    model = build_model(ModelConfig.from_dict(state["config"]))
    model.load_state_dict(state["state_dict"])
    return model.eval()


def _report(args: argparse.Namespace, command: str) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    acq = Acquisition()
    batch, _ = seed_test_set("aniso", 5000, acq, Path(args.cache))
    rows = {}
    for mod in MODALITIES:
        run = Path(args.runs) / f"ablation_{mod}"
        if not (run / "best_state.pt").is_file():
            print(f"skipping {mod}: {run / 'best_state.pt'} not found", flush=True)
            continue
        model = _load_best(run)
        with torch.inference_mode():
            pred, rate = run_model(model, batch, acq)
        rows[mod] = {**track_metrics(pred, batch), **_run_summary(run, mod), "params": count_parameters(model),
                     "inference_tracks_per_s": rate}
        print(mod, {k: rows[mod][k] for k in ("mae_D1_um2_s", "mae_D2_um2_s", "angle_similarity_axial")}, flush=True)
    lines = report_header(
        "Modality ablation of the anisotropic model",
        f"{PROTOCOLS} seed-aniso v1, 5,000 tracks, seed 2025 (cache of bench_accuracy.py), per-track MAE "
        "(um^2/s) and angle similarity over all tracks (published: mean cos; axial: mean |cos|).", command)
    lines += [
        "- Question (issue 4): what does each input modality contribute? Three `aniso` models that differ only in "
        "`ModelConfig.modalities`, trained at the same budget, scored on the same tracks.",
        "- Architectures: `both` = the bundled cross-transformer (image and displacement token streams, 1 cross + 1 "
        "self block per stream, 2 joint blocks); `image` / `displacement` = one token stream through 4 self-attention "
        "blocks (the same depth), the other encoder not built and its input ignored.",
        "- Training (identical budget): the first 20,000 tracks of `runs/data/aniso_train.npz` (seed 100), "
        "validation on the 2,000 tracks of `runs/data/aniso_train_val.npz` (seed 101), 6 epochs, batch 64, AdamW "
        "lr 2e-3, angle weight 4, grid-symmetry augmentation, model seed 100, CPU 1 thread; the best validation "
        "epoch is kept in `runs/ablation_<modalities>/best_state.pt` and scored here (not bundled). The bundled "
        "`aniso` model saw 40,000 tracks x 10 epochs, so its absolute figures (benchmarks/reports/accuracy.md) are "
        "better than the `both` row here.",
        "- The load average above is that of the end of this report run: training and inference speeds are under "
        "that load.\n",
        "| modalities | parameters | MAE D1 (um^2/s) | MAE D2 (um^2/s) | angle similarity (published) | angle "
        "similarity (axial) | best epoch / epochs run | train samples/s (1 thread, mean of epochs) | train time incl. "
        "validation (s) | inference tracks/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mod, m in rows.items():
        lines.append(f"| {mod} | {m['params']} | {m['mae_D1_um2_s']:.3f} | {m['mae_D2_um2_s']:.3f} | "
                     f"{m['angle_similarity_published']:.3f} | {m['angle_similarity_axial']:.3f} | "
                     f"{m['best_epoch']} / {m['epochs']} | {m['samples_per_s']:.0f} | {m['train_time_s']:.0f} | "
                     f"{m['inference_tracks_per_s']:.0f} |")
    lines += ["", "Training commands:", ""]
    lines += [f"- {mod}: `{m['command']}` ({m['samples_seen']} samples seen)" for mod, m in rows.items()]
    lines += ["", "Models: the best validation epoch (`best_state.pt` of each run folder) in eager PyTorch. "
              "Inference tracks/s: batches of 512 of 30-frame tracks, "
              f"{torch.get_num_threads()} torch thread(s), under the load above.", ""]
    out = write_report(args.out, lines)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one ablation model")
    t.add_argument("--modalities", choices=MODALITIES, required=True)
    t.add_argument("--n-train", type=int, default=20000)
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--data", default="runs/data")
    t.add_argument("--runs", default="runs")
    r = sub.add_parser("report", help="score the trained ablation models and write the report")
    r.add_argument("--runs", default="runs")
    r.add_argument("--cache", default="runs/bench_cache")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--out", default=str(report_path("ablation", False)))
    argv_list = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv_list)
    command = command_line("bench_ablation.py", argv_list)
    return _train(args, command) if args.command == "train" else _report(args, command)


if __name__ == "__main__":
    sys.exit(main())
