"""Peak memory of ``spt-diffusion track`` on long movies (protocol "large movies" v1, docs/protocols.md).

make
    Simulates a ``512 x 512 x T`` uint16 movie with ``simulation.simulate_movie`` (standard
    acquisition, ``aniso`` motion, 100 particles per frame on average, seed 16) straight into a
    contiguous ImageJ TIFF opened with ``tifffile.memmap``, so the movie is never held in memory;
    the motion is continuous over all frames (no tiling). 20,000 frames are 10.5 GB on disk.
measure
    Runs ``/usr/bin/time -v spt-diffusion track MOVIE --out PREFIX [--chunk-frames N]`` in a
    fresh process and reports its peak resident memory ("Maximum resident set size", i.e. the
    process's ``VmHWM``), the wall time and the number of localizations and tracks it wrote;
    also the peaks of the summed RSS and PSS of the command and the spot worker processes it
    forks (``tracking/spot_processes.py``), sampled every 0.1 s.

Commands::

    .venv/bin/python benchmarks/bench_large_movie.py make /tmp/big/movie_20000.tif --frames 20000
    .venv/bin/python benchmarks/bench_large_movie.py measure /tmp/big/movie_20000.tif /tmp/big/out/run \\
        [--chunk-frames 1000] [--json result.json]

The movie is not kept (10 GB): delete it after the measurement.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from _common import run_with_tree_memory

SEED = 16
PARTICLES = 100.0
SHAPE = (512, 512)


def make_movie(path: Path, n_frames: int, particles: float = PARTICLES, seed: int = SEED) -> float:
    """Simulate the protocol's movie into ``path`` (ImageJ TIFF, contiguous uint16); returns seconds."""
    import tifffile

    from napari_spt_diffusion.acquisition import Acquisition
    from napari_spt_diffusion.io.tiff_metadata import imagej_movie_kwargs
    from napari_spt_diffusion.simulation import simulate_movie

    acq = Acquisition()
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = tifffile.memmap(path, shape=(n_frames, *SHAPE), dtype=np.uint16, **imagej_movie_kwargs(acq))
    last = [-1]

    def progress(fraction: float, message: str) -> None:
        percent = int(100 * fraction)
        if percent // 10 != last[0]:
            last[0] = percent // 10
            print(f"  {percent} % simulated", flush=True)

    sim = simulate_movie(SHAPE, n_frames, acq, seed, model="aniso", particles=particles, out=out,
                         progress=progress)
    out.flush()
    del out, sim
    return time.perf_counter() - t0


def measure(movie: Path, prefix: Path, extra: list[str]) -> dict:
    """Run the CLI under ``/usr/bin/time -v``; returns peak RSS (MB), wall time and counts."""
    command = ["/usr/bin/time", "-v", str(Path(sys.executable).with_name("spt-diffusion")), "track", str(movie),
               "--out", str(prefix), "--overwrite", *extra]
    t0 = time.perf_counter()
    run = run_with_tree_memory(command)
    wall = time.perf_counter() - t0
    stderr = run.stderr
    rss_kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    lines = [line for line in (run.stdout + stderr).splitlines() if "localizations" in line]
    counts = re.search(r"(\d+) tracks, (\d+) localizations", "\n".join(lines))
    return {
        "command": " ".join(command),
        "exit_status": run.returncode,
        "peak_rss_mb": None if rss_kb is None else int(rss_kb.group(1)) / 1024.0,
        # the command with its spot worker processes, sampled every 0.1 s (PSS counts shared pages once)
        "tree_peak_rss_mb": round(run.tree_peak_rss_mb, 1),
        "tree_peak_pss_mb": round(run.tree_peak_pss_mb, 1),
        "wall_s": round(wall, 1),
        "n_tracks": None if counts is None else int(counts.group(1)),
        "n_localizations": None if counts is None else int(counts.group(2)),
        "stderr_tail": stderr.splitlines()[-40:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_make = sub.add_parser("make", help="simulate the movie into a TIFF")
    p_make.add_argument("path", type=Path)
    p_make.add_argument("--frames", type=int, default=20_000)
    p_make.add_argument("--particles", type=float, default=PARTICLES)
    p_meas = sub.add_parser("measure", help="run spt-diffusion track under /usr/bin/time -v")
    p_meas.add_argument("movie", type=Path)
    p_meas.add_argument("prefix", type=Path)
    p_meas.add_argument("--chunk-frames", type=int, default=None)
    p_meas.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "make":
        seconds = make_movie(args.path, args.frames, args.particles)
        size_gb = args.path.stat().st_size / 1e9
        print(f"wrote {args.path}: {args.frames} frames, {size_gb:.2f} GB in {seconds:.0f} s")
        return 0
    extra = [] if args.chunk_frames is None else ["--chunk-frames", str(args.chunk_frames)]
    result = measure(args.movie, args.prefix, extra)
    print(json.dumps({k: v for k, v in result.items() if k != "stderr_tail"}, indent=1))
    if result["exit_status"] != 0:
        print("\n".join(result["stderr_tail"]), file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return int(result["exit_status"] != 0)


if __name__ == "__main__":
    raise SystemExit(main())
