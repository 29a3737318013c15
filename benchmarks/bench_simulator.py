"""Simulator speed: training-style samples and full-field movies.

samples (v1, seed 1)
    Protocol seed-aniso trajectories (``simulate_anisotropic``: 30 frames, 10 sub-steps,
    standard acquisition), each frame rendered in an 11 x 11 window centred on the rounded
    true frame position (``render_windows``: pixel-integrated PSF at the 10 sub-positions)
    and given camera noise (``camera_image``). Batches of 2,000 samples; the figure is
    samples per second of wall time and per CPU-second of this process (the CPU is
    shared with other jobs, so wall time depends on the machine's load), best and median
    of the repetitions. The tracking-based training samples of ``training/samples.py``
    (detection, localization, patch cropping) are not included.

movies (v1, seeds 2 and 3)
    ``simulate_movie`` with the default model ("aniso", D1 ~ U[0.05, 3] um^2/s,
    mean lifetime 100 frames), standard acquisition: 128 x 128 x 200 with 30 particles on
    average, and 512 x 512 x 1000 with 100 particles (the "speed" protocol's movie),
    rendered in chunks of frames. Reported: seconds (wall and CPU) for the plan
    (trajectories and truth) and for the pixels, and the peak resident memory of the
    process after each movie (``resource.getrusage``; the 512 x 512 x 1000 uint16 output
    array itself is 524 MB).

Command::

    .venv/bin/python benchmarks/bench_simulator.py [--quick] [--out benchmarks/reports/simulator.md]

``--quick`` runs 4,000 samples and 50-frame movies to check the script; the report says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from _common import REPO, command_line, load_average, report_header, report_path, write_report
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation import camera_image, render_windows, simulate_anisotropic
from napari_spt_diffusion.simulation.movie import iter_movie_frames, plan_movie

BATCH = 2000
WINDOW = 11


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def training_samples(
    batch: int, rng: np.random.Generator, acq: Acquisition, stage_cpu: dict[str, float] | None = None
) -> np.ndarray:
    """One batch of seed-aniso samples: (batch, 30, 11, 11) uint16 camera windows.

    ``stage_cpu`` (if given) accumulates the CPU seconds of each stage.
    """
    t0 = time.process_time()
    traj = simulate_anisotropic(batch, 30, acq, rng)
    t1 = time.process_time()
    origin = np.rint(traj.frame_positions_px).astype(np.int64) - WINDOW // 2
    expected = render_windows(traj.substep_positions_px, origin, WINDOW, acq)
    t2 = time.process_time()
    out = camera_image(expected, acq, rng)
    if stage_cpu is not None:
        stage_cpu["trajectories"] += t1 - t0
        stage_cpu["render"] += t2 - t1
        stage_cpu["camera"] += time.process_time() - t2
    return out


def _worker_samples(args: tuple[int, int]) -> int:
    """Generate ``n`` samples with seed ``seed`` in a worker process; returns the count."""
    n, seed = args
    acq = Acquisition()
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        done += training_samples(min(BATCH, n - done), rng, acq).shape[0]
    return done


def bench_samples_parallel(n_samples: int, workers: int) -> dict:
    """Samples/s of wall time with ``workers`` processes sharing the work (pool started and
    warmed before the clock starts)."""
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_worker_samples, [(200, 100 + w) for w in range(workers)])  # warm noise tables
        start = time.perf_counter()
        done = sum(pool.map(_worker_samples, [(n_samples // workers, 200 + w) for w in range(workers)]))
        wall = time.perf_counter() - start
    return {"workers": workers, "n_samples": done, "wall_s": wall, "samples_per_s": done / wall}


def bench_samples(n_samples: int, repeats: int) -> dict:
    acq = Acquisition()
    rng = np.random.default_rng(1)
    training_samples(200, rng, acq)  # warm the cached noise tables
    walls, cpus = [], []
    stage = {"trajectories": 0.0, "render": 0.0, "camera": 0.0}
    for _ in range(repeats):
        start = _clock()
        done = 0
        while done < n_samples:
            out = training_samples(min(BATCH, n_samples - done), rng, acq, stage)
            done += out.shape[0]
        wall, cpu = _since(start)
        walls.append(n_samples / wall)
        cpus.append(n_samples / cpu)
    assert out.shape[1:] == (30, WINDOW, WINDOW) and out.dtype == np.uint16
    return {
        "n_samples": n_samples,
        "repeats": repeats,
        "wall_best": max(walls),
        "wall_median": statistics.median(walls),
        "cpu_best": max(cpus),
        "cpu_median": statistics.median(cpus),
        "stage_us_per_sample": {k: 1e6 * v / (n_samples * repeats) for k, v in stage.items()},
    }


def bench_movie(shape: tuple[int, int], n_frames: int, particles: float, seed: int) -> dict:
    acq = Acquisition()
    rng = np.random.default_rng(seed)
    start = _clock()
    plan = plan_movie(shape, n_frames, acq, rng, model="aniso", particles=particles)
    plan_wall, plan_cpu = _since(start)
    movie = np.empty((n_frames, *shape), dtype=np.uint16)
    start = _clock()
    for t, frame in enumerate(iter_movie_frames(plan, rng)):
        movie[t] = frame
    render_wall, render_cpu = _since(start)
    tracks = plan.truth.tracks
    return {
        "shape": f"{shape[0]} x {shape[1]} x {n_frames}",
        "particles": particles,
        "mean_present": len(tracks) / n_frames,
        "n_tracks": plan.truth.n_tracks,
        "emitters": int(plan.emitter_frame.shape[0]),
        "plan_wall": plan_wall,
        "plan_cpu": plan_cpu,
        "render_wall": render_wall,
        "render_cpu": render_cpu,
        "total_wall": plan_wall + render_wall,
        "total_cpu": plan_cpu + render_cpu,
        "peak_rss_mb": _peak_rss_mb(),
        "movie_mb": movie.nbytes / 2**20,
        "mean_adu": float(movie[: min(10, n_frames)].mean()),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _report(args: argparse.Namespace, samples: dict, movies: list[dict], load_start: str) -> str:
    lines = report_header("Simulator speed", "samples v1 (seed 1) and movies v1 (seeds 2 and 3): docstring of "
                          "`benchmarks/bench_simulator.py`.", command_line("bench_simulator.py", args.argv))
    lines += [
        f"- Processor: {_cpu_name()}; load average (1/5/15 min) at the start: {load_start}, at the end: above. The CPU "
        "cores were shared with other jobs running at the same time: wall-clock figures depend on that load; the "
        "per-CPU-second figures count only this process's CPU time (they still suffer from the shared caches).",
        "",
    ]
    if args.quick:
        lines += ["**Quick run** (`--quick`): reduced sizes, for checking the script only.", ""]
    lines += [
        "Single process, one thread.",
        "",
        "## Training-style samples (seed-aniso, 30 frames x 10 sub-steps, 11 x 11 px, camera noise)",
        "",
        "| samples per run | runs | samples/s (wall) best / median | samples per CPU-s best / median | target |",
        "|---|---|---|---|---|",
        f"| {samples['n_samples']:,} | {samples['repeats']} | {samples['wall_best']:,.0f} / "
        f"{samples['wall_median']:,.0f} | {samples['cpu_best']:,.0f} / {samples['cpu_median']:,.0f} | 5,000 |",
        "",
        f"All {samples['parallel']['workers']} cores, one process each: "
        f"{samples['parallel']['n_samples']:,} samples in {samples['parallel']['wall_s']:.2f} s wall = "
        f"**{samples['parallel']['samples_per_s']:,.0f} samples/s** (target 5,000).",
        "",
        "CPU time per sample by stage (all runs): "
        + ", ".join(f"{k} {v:.0f} us" for k, v in samples["stage_us_per_sample"].items())
        + " (trajectories: `simulate_anisotropic`; render: `render_windows`, 300 sub-positions x 24",
        "erf evaluations; camera: `camera_image`, 3,630 pixels with exact Poisson + read noise).",
        "",
        "## Movies (`plan_movie` + `iter_movie_frames`, as `simulate_movie` does)",
        "",
        "| movie | particles (mean present) | tracks | plan s (wall / CPU) | pixels s (wall / CPU) "
        "| total s (wall / CPU) | peak RSS MB | output MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in movies:
        lines.append(
            f"| {m['shape']} | {m['particles']:.0f} ({m['mean_present']:.1f}) | {m['n_tracks']:,} | "
            f"{m['plan_wall']:.1f} / {m['plan_cpu']:.1f} | {m['render_wall']:.1f} / {m['render_cpu']:.1f} | "
            f"{m['total_wall']:.1f} / {m['total_cpu']:.1f} | {m['peak_rss_mb']:.0f} | {m['movie_mb']:.0f} |"
        )
    lines += [
        "",
        "Peak RSS is that of the whole process so far (it includes the earlier rows and the",
        "output array of the movie).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--out", default=None, help="markdown report (default: "
                                                    "benchmarks/reports/simulator[_quick].md)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    load_start = load_average()
    if args.quick:
        samples = bench_samples(4000, 2)
        movie_specs = [((128, 128), 50, 30.0, 2), ((512, 512), 50, 100.0, 3)]
    else:
        samples = bench_samples(20_000, 3)
        movie_specs = [((128, 128), 200, 30.0, 2), ((512, 512), 1000, 100.0, 3)]
    samples["parallel"] = bench_samples_parallel(4000 if args.quick else 40_000, os.cpu_count() or 1)
    print(f"samples: {samples}", flush=True)
    movies = []
    for shape, frames, particles, seed in movie_specs:
        movies.append(bench_movie(shape, frames, particles, seed))
        print(f"movie: {movies[-1]}", flush=True)
    text = _report(args, samples, movies, load_start)
    out = report_path("simulator", args.quick) if args.out is None else Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    write_report(out, text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
