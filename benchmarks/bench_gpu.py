"""Throughput on a device: frames/s of detection + localization, tracks/s of model inference.

Protocol "device speed" v1 (docs/protocols.md): a simulated ``--size`` x ``--size`` x
``--frames`` movie of the standard acquisition, ``--particles`` particles per frame (model
aniso, seed ``--seed``); ``--tracks`` synthetic 30-frame tracks (11 x 11 Gaussian-spot
patches of 1,000 photons over 10 photons/pixel with Poisson noise, Brownian steps) for the
model. Rows, all measured in one run on one machine:

- detection + localization by the numpy/scipy path (:func:`~napari_spt_diffusion.tracking.spots.detect_and_localize`,
  the CPU): the baseline, with and without the overlap pass;
- the same by the torch path (:func:`~napari_spt_diffusion.accel.detect_and_localize_torch`)
  on ``--device``, with the overlap pass (which stays on the CPU) and without;
- model inference (``Estimator(model, device).estimate``) on the CPU and on ``--device``.

Each figure is the best of ``--reps`` timed passes after one untimed pass (CUDA start-up,
TorchScript optimisation). The number of spots found by each path is printed beside its
rate. When ``--device`` resolves to the CPU (no GPU), the GPU rows say
"not measured: no GPU lent": no GPU figure is ever written that was not measured.

Command (on a GPU machine: ``--device cuda``)::

    .venv/bin/python benchmarks/bench_gpu.py [--device auto] [--size 256] [--frames 100] [--particles 60]
        [--tracks 2048] [--model aniso] [--reps 3] [--threads N] [--out benchmarks/reports/gpu.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from _common import PROTOCOLS, command_line, report_header, report_path, synthetic_tracks, write_report
from napari_spt_diffusion.accel import detect_and_localize_torch
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.estimator import Estimator, resolve_device
from napari_spt_diffusion.simulation.movie import simulate_movie
from napari_spt_diffusion.tracking.spots import detect_and_localize

NOT_MEASURED = "not measured: no GPU lent"


def best_time(fn: Callable[[], object], reps: int, device: torch.device) -> tuple[float, object]:
    """Best wall-clock seconds of ``reps`` calls after one untimed call, and the last result."""
    result = fn()
    best = np.inf
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best, result


def card_name(device: torch.device) -> str:
    """The device in words: the GPU's name and memory, or the CPU."""
    if device.type != "cuda":
        return "CPU"
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"


def measure(args: argparse.Namespace, device: torch.device) -> list[tuple[str, str, str, str]]:
    """Report rows ``(stage, path, device, figure)``."""
    sim = simulate_movie((args.size, args.size), args.frames, Acquisition(), rng=args.seed, model="aniso",
                         particles=args.particles)
    movie, acq = sim.movie, sim.acquisition
    cpu = torch.device("cpu")
    rows = []

    def spots_row(label: str, fn: Callable[[], object], where: torch.device) -> None:
        seconds, table = best_time(fn, args.reps, where)
        rows.append(("detection + localization", label, card_name(where),
                     f"{args.frames / seconds:.1f} frames/s ({len(table)} spots, {seconds:.2f} s)"))
        print(rows[-1], flush=True)

    for overlaps in (True, False):
        what = "overlap pass on" if overlaps else "overlap pass off"
        spots_row(f"numpy/scipy, {what}", lambda o=overlaps: detect_and_localize(movie, acq, overlaps=o), cpu)
        for where in (cpu, device) if device.type == "cuda" else (cpu,):
            spots_row(f"torch, {what}" + (" (the overlap pass on the CPU)" if overlaps else ""),
                      lambda o=overlaps, w=where: detect_and_localize_torch(movie, acq, overlaps=o, device=w,
                                                                            batch_frames=args.batch_frames), where)
        if device.type != "cuda":
            rows.append(("detection + localization", f"torch, {what}", "GPU", NOT_MEASURED))
    tracks = synthetic_tracks(args.tracks, args.seed)
    for where in (cpu, device) if device.type == "cuda" else (cpu,):
        estimator = Estimator(args.model, device=str(where))
        seconds, _ = best_time(lambda e=estimator: e.estimate(tracks, acq), args.reps, where)
        rows.append(("model inference", f"Estimator({args.model!r}), batches of {estimator.batch_size}",
                     card_name(where), f"{args.tracks / seconds:.0f} tracks/s ({seconds:.2f} s)"))
        print(rows[-1], flush=True)
    if device.type != "cuda":
        rows.append(("model inference", f"Estimator({args.model!r})", "GPU", NOT_MEASURED))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--size", type=int, default=256, help="movie height and width (px)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--particles", type=float, default=60.0, help="particles per frame")
    parser.add_argument("--tracks", type=int, default=2048, help="30-frame tracks for the model")
    parser.add_argument("--model", default="aniso")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-frames", type=int, default=None,
                        help="frames sent to the device at once (default: 128 on a GPU, 32 on the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=report_path("gpu", False))
    argv_list = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv_list)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cmd = command_line("bench_gpu.py", argv_list)
    rows = measure(args, device)
    lines = report_header(
        "Throughput on a device: detection + localization and model inference",
        f"{PROTOCOLS} device speed v1: a {args.size} x {args.size} x {args.frames} simulated movie, "
        f"{args.particles:g} particles per frame (aniso, seed {args.seed}); {args.tracks} synthetic 30-frame "
        f"tracks for the model.", cmd)
    lines += [
        f"- Device asked: `{args.device}`, resolved: `{device}` ({card_name(device)}); torch CPU threads "
        f"{torch.get_num_threads()}; best of {args.reps} passes after one untimed pass.",
        "",
        "| stage | path | device | throughput |",
        "|---|---|---|---|",
        *[f"| {stage} | {path} | {where} | {figure} |" for stage, path, where, figure in rows],
        "",
        "## Notes",
        "",
        "- The torch path ports the detection (DoG, robust noise, local maxima) and the single-spot Poisson fit "
        "with its neighbour refits; the overlap pass (streak merge, pair split, refits next to them: "
        "`tracking/overlaps.py`) is not ported and runs on the CPU, frame by frame, on the fits that come back "
        "from the device, so the 'overlap pass on' rows of a GPU are bounded by the CPU. The pipeline runs "
        "that pass (it is on by default).",
        "- The pipeline takes the torch path when its device resolves to a CUDA GPU (`--device cuda`, or `auto` "
        "with a GPU present); on the CPU it keeps the numpy/scipy path unless `Settings.spot_backend=\"torch\"`.",
        "- A GPU figure appears only when this script ran on a GPU; otherwise its row says "
        f"\"{NOT_MEASURED}\".",
        "",
    ]
    write_report(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
