"""Batch throughput: ``spt-diffusion track FOLDER --workers N`` on a local Dask cluster.

batch throughput (v1, seeds 100-107)
    8 movies simulated with ``spt-diffusion simulate`` (default model "aniso", standard
    acquisition, 128 x 128 px, 200 frames, 20 particles on average, seeds 100 to 107), then
    tracked as one batch by the command line with ``--workers 1`` and with ``--workers 2``
    (a local Dask cluster of single-threaded worker processes), each into a fresh output
    folder, so that every movie runs (``--workers 1,2,1,2`` alternates them, which spreads the
    changing load of a shared machine over both). Reported per run: the wall time of the whole
    command (cluster start included), movies per minute, the sum of the per-movie task
    times of the batch report, the CPU seconds of the command and its worker processes,
    and the load average before the run (the machine's cores are shared with other jobs).

Command::

    .venv/bin/python benchmarks/bench_batch.py [--quick] [--workers 1,2,1,2] [--out benchmarks/reports/batch.md]

``--quick`` runs 3 movies of 48 x 48 px and 20 frames to check the script; the report says so.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import command_line, load_average, report_header, report_path, write_report

SEED0 = 100


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("spt-diffusion")
    return [str(script)] if script.exists() else [sys.executable, "-m", "napari_spt_diffusion.cli"]


def _simulate(folder: Path, n: int, size: int, frames: int, particles: int) -> None:
    for i in range(n):
        subprocess.run([*_cli(), "simulate", str(folder / f"movie{i:02d}.tif"), "--size", str(size),
                        "--frames", str(frames), "--particles", str(particles), "--seed", str(SEED0 + i)],
                       check=True, capture_output=True)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_batch(movies: Path, out: Path, workers: int) -> dict:
    command = [*_cli(), "track", str(movies), "--out", str(out), "--workers", str(workers)]
    load = load_average()
    cpu0, t0 = _children_cpu_s(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    report = json.loads((out / "batch_report.json").read_text())
    tasks = [m["seconds"] for m in report["movies"]]
    return {"workers": workers, "wall_s": wall, "cpu_s": _children_cpu_s() - cpu0, "load": load,
            "tasks_s": sum(tasks), "n": len(tasks), "done": report["counts"]["done"],
            "tracks": sum(m["n_tracks"] or 0 for m in report["movies"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated, run in this order; repeat "
                        "them to alternate (default: 1,2)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    n, size, frames, particles = (3, 48, 20, 4) if args.quick else (8, 128, 200, 20)
    counts = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        movies = work / "movies"
        movies.mkdir()
        _simulate(movies, n, size, frames, particles)
        rows = [_run_batch(movies, work / f"out{i}_w{w}", w) for i, w in enumerate(counts)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fewest = min(r["workers"] for r in rows)  # speed-up against the median wall time of the fewest workers
    base = statistics.median(r["wall_s"] for r in rows if r["workers"] == fewest)
    quick = " - QUICK RUN, not the protocol" if args.quick else ""
    lines = report_header("Batch throughput: many movies on a local Dask cluster",
                          f"batch throughput v1 ({n} movies of {size} x {size} px x {frames} frames, {particles} "
                          f"particles, seeds {SEED0}-{SEED0 + n - 1}){quick}",
                          command_line("bench_batch.py", argv))
    lines += ["", "Each run: `spt-diffusion track MOVIES/ --out OUT --workers N` into a fresh folder (every movie "
              "tracked; cluster start and the batch report included in the wall time).", "",
              "| workers | wall time (s) | movies / min | speed-up | sum of task times (s) | CPU (s) | "
              "cores used (CPU / wall) | tracks | load average before (1/5/15 min) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['wall_s']:.1f} | {60 * r['n'] / r['wall_s']:.2f} | "
                     f"{base / r['wall_s']:.2f} | {r['tasks_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{r['cpu_s'] / r['wall_s']:.2f} | {r['tracks']} | {r['load']} |")
    lines += ["", f"Speed-up: against the median wall time of {fewest} worker(s). CPU: the command and its worker "
              "processes (user + system). The machine's CPU cores are shared with other jobs (a model training "
              "among them; the load average says how busy they were), so 'cores used' is what the batch got: "
              "N workers can give up to N times the throughput of 1 only where N cores are free."]
    path = write_report(args.out or report_path("batch", args.quick), lines)
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
