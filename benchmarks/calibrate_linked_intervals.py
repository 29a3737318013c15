"""Calibrate the interval widening for linked tracks (``estimation/linked_widening.py``), end to end.

The interval tables are calibrated on tracks that follow one particle; this script measures what
the whole tool's tracks need on top. Movies of OUR simulator (``simulation.movie.simulate_movie``,
the training renderer: the foreign renderer is kept for the check, ``bench_interval_groups.py``)
are written as ImageJ TIFFs holding only pixel size and frame interval and tracked by
``spt-diffusion track MOVIE.tif --out PREFIX`` with default settings. Each output track is
matched to the true track it shares most frames with (per-frame Hungarian matching within
1.5 px), whose D1 and D2 averaged over those frames are its truth; tracks with >= 5 matched
frames count. The intervals as the tables give them (the bundled widening, where the output was
made with one, taken out again: ``unwiden_linked``) are compared with the truth, and for each
group of tracks (``linked_widening.GROUPS``, by the notes: ``edge``, ``gaps``, ``crowded``, else
``plain``) and each interval (D1 / D2, 68 % / 95 %) the factor on the log half-width (around the
interval's log centre) that covers the nominal share is fitted (``linked_widening.fit_factor``,
at least 1).

Movies (seed ``--seed-base`` + i): 128 x 128 px, 120 frames, 100 nm pixels, 10 ms frames;
cycling over the particles' motion (isotropic with D uniform over 0.05-3 um^2/s, or seed-aniso
tensors with D1 uniform over 0.05-3 or 0.05-6 um^2/s and D2 / D1 over 0.1-1), PSF sigma
(100 or 170 nm, Gaussian), signal (1,000 or 4,000 photons), background (10 or 200 photons/px)
and density (16, 24 or 36 particles in the field on average); camera gain 2 ADU/e-, offset 100.

Command::

    .venv/bin/python benchmarks/calibrate_linked_intervals.py [--movies 48] [--seed-base 9100]
        [--write] [--out PATH] [--keep DIR]

``--write`` writes the factors to ``src/napari_spt_diffusion/checkpoints/linked.widening.json``
(the bundled file); without it only the report is written.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from _common import report_header, write_json, write_report
from bench_foreign import MIN_MATCHED_SCORED, read_tool, run_tool
from bench_isotropy import assigned_truth
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.linked_widening import (
    BUNDLED_PATH,
    GROUPS,
    INTERVALS,
    LinkedWidening,
    fit_factor,
    half_width_ratio,
    track_group,
    unwiden_linked,
)
from napari_spt_diffusion.simulation.movie import simulate_movie
from napari_spt_diffusion.validation.foreign_renderer import write_imagej_tiff

BENCH_DIR = Path(__file__).resolve().parent
NOMINAL = {"68": 0.68, "95": 0.95}
#: ``(label, D1 range um^2/s, D2 / D1 range)`` of the particles' motion.
MOTIONS = (("isotropic D 0.05-3", (0.05, 3.0), (1.0, 1.0)),
           ("seed-aniso D1 0.05-3", (0.05, 3.0), (0.1, 1.0)),
           ("seed-aniso D1 0.05-6", (0.05, 6.0), (0.1, 1.0)))
PSF_SIGMA_NM = (100.0, 170.0)
PHOTONS = (1000.0, 4000.0)
BACKGROUND = (10.0, 200.0)
PARTICLES = (16.0, 24.0, 36.0)


def movie_specs(n: int, seed_base: int) -> list[dict[str, Any]]:
    """The first ``n`` movies: motion, PSF, photons, background and density cycled (a mixed-radix walk)."""
    grid = list(product(range(len(MOTIONS)), PSF_SIGMA_NM, PHOTONS, BACKGROUND))
    specs = []
    for i in range(n):
        motion, psf, photons, background = grid[(i * 7) % len(grid)]
        specs.append({"seed": seed_base + i, "motion": MOTIONS[motion], "psf_sigma_nm": psf, "photons": photons,
                      "background": background, "particles": PARTICLES[i % len(PARTICLES)]})
    return specs


def run_movie(spec: dict[str, Any], workdir: Path) -> pd.DataFrame | None:
    """Simulate, track and score one movie: its scored tracks with the tables' intervals and their group."""
    label, d1_range, ratio_range = spec["motion"]
    acq = Acquisition(psf_sigma_nm=spec["psf_sigma_nm"], signal_photons=spec["photons"],
                      background_photons=spec["background"], gain_adu_per_e=2.0)
    sim = simulate_movie((128, 128), 120, acq, rng=spec["seed"], model="aniso", particles=spec["particles"],
                         D1_range_um2_s=d1_range, D2_over_D1_range=ratio_range)
    movie_path = workdir / f"movie_{spec['seed']}.tif"
    write_imagej_tiff(movie_path, sim.movie, acq.pixel_size_nm, acq.frame_interval_s)
    prefix = workdir / f"movie_{spec['seed']}_out"
    run = run_tool(movie_path, prefix)
    print(f"[seed {spec['seed']}: {label}, PSF {spec['psf_sigma_nm']:.0f} nm, {spec['photons']:.0f} photons, "
          f"background {spec['background']:.0f}, {spec['particles']:.0f} particles] track {run['wall_s']:.1f} s, "
          f"rc {run['returncode']}", flush=True)
    if run["returncode"] != 0:
        return None
    tracks, summary, meta = read_tool(prefix)
    applied = (meta.get("intervals") or {}).get("linked_widening")
    if applied:
        summary = unwiden_linked(summary, LinkedWidening.from_dict(applied))
    summary = summary.assign(group=track_group(summary["notes"]))
    scored = summary.set_index("track_id").join(assigned_truth(tracks, sim.truth.tracks), how="inner")
    scored = scored[scored["n"] >= MIN_MATCHED_SCORED].reset_index()
    scored["seed"], scored["motion"] = spec["seed"], label
    return scored


def ratios(tracks: pd.DataFrame, key: str, level: str) -> np.ndarray:
    """Each track's ratio of its truth's log distance from its interval's log centre to the interval's log
    half-width (``half_width_ratio``)."""
    return half_width_ratio(tracks[f"{key}_lo{level}_um2_s"].to_numpy(float),
                            tracks[f"{key}_hi{level}_um2_s"].to_numpy(float), tracks[f"{key}_true"].to_numpy(float))


def fit(tracks: pd.DataFrame) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """Factors per group and interval, and per group the tracks and the coverage before / after (in sample)."""
    factors: dict[str, dict[str, float]] = {}
    table: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        sel = tracks[tracks["group"] == group]
        factors[group], table[group] = {}, {"n": int(len(sel))}
        for key, level in INTERVALS:
            r = ratios(sel, key, level)
            r = r[~np.isnan(r)]
            f = fit_factor(r, NOMINAL[level])
            factors[group][f"{key}_{level}"] = f  # rounded up by fit_factor: covered_after holds for it
            table[group][f"{key}_{level}"] = {"n": int(r.size), "covered_before": float(np.mean(r <= 1.0)),
                                              "covered_after": float(np.mean(r <= f)), "factor": f}
    return factors, table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--movies", type=int, default=48, help="number of movies")
    ap.add_argument("--seed-base", type=int, default=9100, help="seed of the first movie")
    ap.add_argument("--write", action="store_true", help="write the bundled factors file")
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "reports" / "linked_intervals_calibration.md")
    ap.add_argument("--keep", type=Path, default=None, help="keep movies and outputs in this folder")
    args = ap.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "benchmarks/calibrate_linked_intervals.py", *given])
    specs = movie_specs(args.movies, args.seed_base)
    head = report_header("Interval widening for linked tracks: calibration on our simulator's movies, end to end",
                         f"{args.movies} movies of our simulator, seeds {args.seed_base}-"
                         f"{args.seed_base + args.movies - 1} (docstring of benchmarks/calibrate_linked_intervals.py)",
                         command)
    t0 = time.perf_counter()
    parts = []
    with tempfile.TemporaryDirectory(prefix="calibrate_linked_") as tmp:
        workdir = Path(tmp) if args.keep is None else args.keep
        workdir.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            scored = run_movie(spec, workdir)
            if scored is not None:
                parts.append(scored)
    total = time.perf_counter() - t0
    if not parts:
        print("no movie was tracked", file=sys.stderr)
        return 1
    tracks = pd.concat(parts, ignore_index=True)
    empty = [g for g in GROUPS if not (tracks["group"] == g).any()]
    if empty:
        print(f"no scored track in the group(s) {', '.join(empty)}: give more --movies", file=sys.stderr)
        return 2
    factors, table = fit(tracks)
    calibration = {"movies": len(parts), "seeds": [s["seed"] for s in specs], "tracks": table,
                   "command": command, "renderer": "simulation.movie.simulate_movie (ours)",
                   "rule": "per group and interval: the conformal quantile (nominal share) of |ln(truth / D)| over "
                           "the log half-width on the truth's side, at least 1"}
    widening = LinkedWidening(factors, calibration)
    by_motion = ", ".join(f"{m}: {n}" for m, n in tracks["motion"].value_counts().items())
    lines = [*head, f"- Total run time {total:.0f} s ({len(parts)} of {len(specs)} movies tracked, one after the "
                    f"other); {len(tracks)} tracks scored ({by_motion}).",
             f"- Factors written to `{BUNDLED_PATH.relative_to(BENCH_DIR.parent)}`: {'yes' if args.write else 'no'}.",
             "", "Coverage in % of the intervals as the tables give them, and with the fitted factor (in sample).", "",
             "| group | tracks | interval | coverage, tables | factor | coverage, widened |",
             "|---|---|---|---|---|---|"]
    for group in GROUPS:
        for key, level in INTERVALS:
            cell = table[group][f"{key}_{level}"]
            lines.append(f"| {group} | {cell['n']} | {key} {level} % | {100 * cell['covered_before']:.1f} | "
                         f"{cell['factor']:.3f} | {100 * cell['covered_after']:.1f} |")
    write_report(args.out, lines)
    write_json(args.out.with_suffix(".json"), {"command": command, "total_s": total, "factors": factors,
                                                "table": table, "header": head})
    if args.write:
        BUNDLED_PATH.write_text(json.dumps(widening.to_dict(), indent=1) + "\n")
    print(f"wrote {args.out} ({total:.0f} s); factors {factors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
