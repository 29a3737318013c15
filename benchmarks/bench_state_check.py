"""Confirmed changes of state on our own simulator's movies: the evidence behind ``estimation.state_check``.

Protocol "state check", version 1 (defined here): three movies of our simulator
(``simulation.movie.simulate_movie``), 128 x 128 px, 120 frames, 20 particles, the standard
acquisition, one per motion model: ``binding`` (seed 6001), ``twostate`` (6002) and ``aniso``
(one state, 6003). Each is run through ``pipeline.track_and_estimate`` with the two-state models
``binding`` and ``twostate`` asked for (default settings, CPU). Per run: the model that ran, the
guard's decision, and over the tracks of >= 20 frames with the model's values the share with a
confirmed changepoint (``state_check.state_change_note``, computed for every run; ``track``
writes its note only for binding models, ``state_check.MOTION_MODELS``), and whether the note
would be written. With ``--trust-model`` rows (``--trust``) the guard's rejection is overridden,
so that the share is measured on the model's own changepoints.

The foreign-optics runs (``bench_foreign.py --model binding|twostate``, ``foreign_binding.md``,
``foreign_twostate.md``, ``foreign_seeds/``) give the same share on movies of the independent
renderer.

Command::

    .venv/bin/python benchmarks/bench_state_check.py [--quick] [--out PATH]

``--quick``: 64 x 64 px, 60 frames, 8 particles (a smoke run; report ``state_check_quick.md``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import command_line, load_average, report_header, report_path, write_report
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.state_check import MIN_FRAMES, MIN_SHARE, MOTION_MODELS, state_change_note
from napari_spt_diffusion.pipeline import Settings, track_and_estimate
from napari_spt_diffusion.simulation.movie import simulate_movie

PROTOCOL = "state check"
PROTOCOL_VERSION = 1
MOVIES = (("binding", 6001), ("twostate", 6002), ("aniso", 6003))
MODELS = ("binding", "twostate")


def run_one(movie: np.ndarray, model: str, trust: bool) -> dict:
    results = track_and_estimate(movie, Acquisition(), Settings(model=model, device="cpu", trust_model=trust))
    _, record = state_change_note(results.summary, results.meta["model"])
    guard = results.meta["guard"]
    return {"model": results.meta["model"], "rejected": bool(guard["rejected"]), "factor": guard.get("bias_factor"),
            **record}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small movies (smoke run)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    shape, n_frames, particles = ((64, 64), 60, 8.0) if args.quick else ((128, 128), 120, 20.0)
    t0 = time.perf_counter()
    lines = report_header("Confirmed changes of state on our simulator's movies",
                          f"{PROTOCOL}, version {PROTOCOL_VERSION} (docstring of `benchmarks/bench_state_check.py`)",
                          command_line("bench_state_check.py", argv))
    lines += ["", f"Share: tracks of >= {MIN_FRAMES} frames with the model's values that have a confirmed changepoint; "
              f"the note is written below {100 * MIN_SHARE:.0f} % for motion models {', '.join(MOTION_MODELS)}.", "",
              "| movie (motion) | seed | model asked | model run | guard | share with a confirmed change | "
              "note (if it applied) |", "|---|---|---|---|---|---|---|"]
    for motion, seed in MOVIES:
        sim = simulate_movie(shape, n_frames, Acquisition(), seed, model=motion, particles=particles)
        movie = np.asarray(sim.movie)
        for model in MODELS:
            for trust in (False, True):
                r = run_one(movie, model, trust)
                guard = (f"{'rejected' if r['rejected'] else 'accepted'} ({r['factor']:.2f} x)"
                         if r["factor"] is not None else "not measured")
                if trust:
                    guard += ", overridden (--trust-model)"
                share = "-" if not r["tracks"] else f"{r['with_change']} of {r['tracks']} ({100 * r['share']:.0f} %)"
                if r["rejected"] and not trust:
                    share = "- (classical values reported)"
                note = "-" if share.startswith("-") else ("yes" if r["note"] else "no")
                lines.append(f"| {motion} | {seed} | {model} | {r['model']} | {guard} | {share} | {note} |")
                print(lines[-1], flush=True)
    lines += ["", f"Run time {time.perf_counter() - t0:.0f} s; load average at the end {load_average()}."]
    out = args.out or report_path("state_check", args.quick)
    write_report(out, lines)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
