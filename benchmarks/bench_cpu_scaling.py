"""How much two CPU cores give over one on this machine, for the spot path (issue 16).

The whole ``track`` command needs about 29 CPU seconds per 1,000 speed-protocol frames
(``tracking.md``): 50 frames/s would need the two cores to do the work of 1.45 cores with
every stage running in parallel. This script measures what two cores actually give, on the
first 300 frames of the speed-protocol movie (512 x 512 px, 100 particles, seed 8,
docs/protocols.md "speed"), with :func:`detect_and_localize`:

* ``one thread``: ``SPT_DIFFUSION_SPOT_THREADS=1``, one process;
* ``two threads``: ``SPT_DIFFUSION_SPOT_THREADS=2``, one process (the default on 2 cores);
* ``two processes``: two independent one-thread processes on the same frames at the same
  time (no shared interpreter lock, no shared data): the most two cores can give.

Each configuration runs in fresh processes after a warm-up of 10 frames (compiled kernels
loaded). Frames per second count the frames of all processes. Writes
``benchmarks/reports/cpu_scaling.md`` (``--out`` for another path).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import PROTOCOLS, command_line, report_header, report_path, write_report
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation import simulate_movie

SPEED_SEED = 8
N_FRAMES = 300
SHAPE = (512, 512)

_WORKER = """
import json, os, sys, time
import numpy as np
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.tracking import detect_and_localize
movie = np.load(sys.argv[1], mmap_mode="r")
frames = np.ascontiguousarray(movie)
acq = Acquisition()
detect_and_localize(frames[:10], acq)
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
c0, t0 = time.process_time(), time.time()
table = detect_and_localize(frames, acq)
print(json.dumps({"start": t0, "end": time.time(), "cpu_s": time.process_time() - c0, "n": len(table)}))
"""


def run_config(movie_path: str, threads: int, processes: int) -> dict:
    """Wall and CPU time of ``processes`` simultaneous runs with ``threads`` spot threads each."""
    env = dict(os.environ, SPT_DIFFUSION_SPOT_THREADS=str(threads))
    start = time.time() + 8.0  # every process has loaded and warmed up by then
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, movie_path, repr(start)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a worker failed (exit codes {[p.returncode for p in procs]})")
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    if max(r["start"] for r in results) > min(r["end"] for r in results):
        raise RuntimeError("the processes did not run at the same time (raise the start delay)")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"threads": threads, "processes": processes, "wall_s": wall, "cpu_s": sum(r["cpu_s"] for r in results),
            "frames_per_s": processes * N_FRAMES / wall, "localizations": results[0]["n"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="report path (default benchmarks/reports/cpu_scaling.md)")
    args = parser.parse_args(argv)
    command = command_line("bench_cpu_scaling.py", argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_cpu_") as tmp:
        path = os.path.join(tmp, "speed300.npy")
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(N_FRAMES, *SHAPE))
        simulate_movie(SHAPE, N_FRAMES, Acquisition(), SPEED_SEED, model="aniso", particles=100.0, out=out)
        out.flush()
        del out
        rows = [run_config(path, 1, 1), run_config(path, 2, 1), run_config(path, 1, 2)]
    load_after = os.getloadavg()
    one = rows[0]["frames_per_s"]
    lines = report_header("CPU scaling of the spot path: what two cores give over one", "speed (first 300 frames)",
                          command)
    lines += [
        f"- Load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} (1 min); "
        f"os.cpu_count() = {os.cpu_count()}.",
        f"- Protocol: {PROTOCOLS} `speed`, frames 0-{N_FRAMES - 1}; `detect_and_localize`, standard acquisition.",
        "",
        "| configuration | wall s | CPU s | frames/s (all processes) | over one thread | localizations per run |",
        "|---|---|---|---|---|---|",
    ]
    names = {(1, 1): "one thread", (2, 1): "two threads, one process", (1, 2): "two independent processes"}
    for r in rows:
        lines.append(f"| {names[(r['threads'], r['processes'])]} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                     f"{r['frames_per_s']:.1f} | {r['frames_per_s'] / one:.2f} x | {r['localizations']} |")
    lines += [
        "",
        "Two independent processes share nothing but the machine: their combined rate over one process's is",
        "the most the two cores can give this work. The threads' rate is the default `track` configuration.",
    ]
    target = args.out or report_path("cpu_scaling", False)
    write_report(target, lines)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
