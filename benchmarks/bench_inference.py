"""Inference throughput of the bundled models on the CPU: tracks/s for 30-frame tracks.

Protocol ("speed" of docs/protocols.md, the model-inference part, on synthetic inputs): ``--n``
(default 1,024) tracks of 30 frames, each frame an 11 x 11 patch of a Gaussian spot
(sigma 1 px, 1,000 photons) on a background of 10 photons/pixel with Poisson noise, and
Brownian displacements (seed ``--seed``). The content does not change the amount of work.

For each bundled model and each thread count (``--threads``, default 1 and 2):

- ``module, calls of B``: the TorchScript module's ``forward_log`` called directly on the
  whole set in calls of B tracks, one after the other with torch's own threads, B = 64 and
  128 and 512 (the setting of bench_accuracy.py);
- ``Estimator``: ``Estimator(model, device="cpu").estimate(tracks, Acquisition())`` end to
  end (input packing, windows, unit conversion, results), with its defaults (batches of
  256 windows, model calls of ``CPU_CHUNK`` = 64 windows run side by side in as many
  Python threads as torch has threads, one torch thread each); with calls of 64 windows
  per torch thread one after the other (``parallel_calls=1``: the previous default); and
  with ``chunk_size=256, parallel_calls=1`` (one model call per batch: the behaviour
  before the chunking).

Each figure is the best of ``--reps`` timed passes after one untimed pass (TorchScript
optimises during its first calls). "wall" is tracks per wall-clock second; "CPU" is tracks
per second of CPU time of the process (all its threads): on a loaded machine the wall
figure drops, the CPU figure much less. The load average is recorded before and after
each model. Re-run on a quiet machine for the figures to quote.

Command::

    .venv/bin/python benchmarks/bench_inference.py [--n 1024] [--threads 1,2] [--reps 3]
        [--models aniso,binding,twostate] [--out benchmarks/reports/inference.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from _common import PROTOCOLS, command_line, report_header, report_path, synthetic_tracks, write_report
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.checkpoint import load_checkpoint
from napari_spt_diffusion.estimation.estimator import CPU_CHUNK, Estimator
from napari_spt_diffusion.tracking.patches import TrackPatches

N_FRAMES = 30  # synthetic_tracks' default


def _time(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Best ``(wall s, process CPU s)`` of ``reps`` timed calls after one untimed call."""
    fn()
    best_wall, best_cpu = np.inf, np.inf
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu


def _direct(module: torch.jit.ScriptModule, tracks: list[TrackPatches], call: int) -> Callable[[], object]:
    p = torch.from_numpy(np.stack([t.patches_photons for t in tracks]))
    d = torch.from_numpy(np.stack([t.displacements_px for t in tracks]).astype(np.float32))
    v = torch.ones(p.shape[:2], dtype=torch.bool)

    def run() -> object:
        with torch.inference_mode():
            return [module.forward_log(p[a:a + call], d[a:a + call], v[a:a + call]) for a in range(0, len(p), call)]

    return run


def measure(model: str, tracks: list[TrackPatches], threads: int, reps: int) -> list[tuple[str, float, float]]:
    """``[(setting, wall tracks/s, CPU tracks/s)]`` for one model at one thread count."""
    torch.set_num_threads(threads)
    module, _ = load_checkpoint(model)
    acq = Acquisition()
    n = len(tracks)
    rows = []
    for call in (CPU_CHUNK, 2 * CPU_CHUNK, 512):
        wall, cpu = _time(_direct(module, tracks, call), reps)
        rows.append((f"module, calls of {call}", n / wall, n / cpu))
    for label, chunk, parallel in (
            (f"Estimator (defaults: batches of 256, calls of {CPU_CHUNK} side by side, one per thread)", None, None),
            (f"Estimator, calls of {CPU_CHUNK} x threads one after the other (previous default)",
             CPU_CHUNK * threads, 1),
            ("Estimator, calls of 256 (before chunking)", 256, 1)):
        est = Estimator(model, device="cpu", chunk_size=chunk, parallel_calls=parallel)
        wall, cpu = _time(partial(est.estimate, tracks, acq), reps)
        rows.append((label, n / wall, n / cpu))
    return rows


def _kept_notes(path: Path) -> list[str]:
    """The hand-written ``## Notes`` section of an earlier report (kept when re-running)."""
    if not path.is_file():
        return []
    text = path.read_text().splitlines()
    for i, line in enumerate(text):
        if line.strip() == "## Notes":
            return text[i:]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="tracks (30 frames each)")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", default="aniso,binding,twostate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=report_path("inference", False))
    argv_list = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv_list)
    cmd = command_line("bench_inference.py", argv_list)
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    tracks = synthetic_tracks(args.n, args.seed)
    lines = report_header(
        "Inference throughput of the bundled models (CPU)",
        f"{PROTOCOLS} speed, model-inference part (docstring of `benchmarks/bench_inference.py`): {args.n} synthetic "
        f"tracks of {N_FRAMES} frames (11 x 11 spot patches, Poisson noise, Brownian steps; seed {args.seed}).", cmd)
    lines += [
        "- wall: tracks per wall-clock second; CPU: tracks per CPU second of the process (all threads). Best of "
        f"{args.reps} passes after one warm-up pass.\n",
        "| model | threads | setting | tracks/s (wall) | tracks/CPU-s | load avg before -> after |",
        "|---|---|---|---|---|---|",
    ]
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for k in threads:
            before = os.getloadavg()[0]
            rows = measure(model, tracks, k, args.reps)
            after = os.getloadavg()[0]
            for label, wall, cpu in rows:
                lines.append(f"| {model} | {k} | {label} | {wall:.0f} | {cpu:.0f} | {before:.2f} -> {after:.2f} |")
                print(lines[-1], flush=True)
    lines.append("")
    lines += _kept_notes(args.out)
    write_report(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
