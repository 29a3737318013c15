"""The isotropy test end to end: false alarms on isotropic movies, power on anisotropic ones.

Movies come from the independent foreign renderer (protocol "foreign optics", v1,
docs/protocols.md; ``napari_spt_diffusion.validation.foreign_renderer``, no code shared with the
training renderer), at the protocol's seeds plus ``--seed-offsets`` (default 0, 10, 20, 30, 40: the
five seed sets of ``foreign.md`` and ``foreign_seeds/``). Each movie is tracked by
``spt-diffusion track MOVIE.tif --out PREFIX`` with default settings, and the summary's
``isotropy_p`` column and ``_meta.json``'s ``isotropy`` verdict (``estimation/isotropy.py``) are
scored against the truth:

* Each output track is assigned the true track it shares most matched frames with (Hungarian
  matching per frame within 1.5 px, as in ``bench_foreign.py``); its purity is the share of its
  frames matched to that true track. Tracks with a p-value only (enough steps).
* ``free_narrow`` / ``free_wide`` (isotropic diffusion, NA 1.45 and NA 0.8) and ``binding_narrow``
  (isotropic D 2.0 <-> 0.02 um^2/s: segments of very different D): every track is isotropic, so
  the share with ``p < 0.05`` is the false-alarm rate (nominal 5 %), given for all tracks and for
  pure ones (purity >= 95 %: a track that joins two particles is not one particle's motion), with
  the central 95 % range of a binomial count at 5 %, and for pure tracks with and without another
  particle near (the summary's note ``crowded`` or ``encounter``); the movie verdict should not call the movie
  anisotropic.
* ``aniso_narrow`` (seed-aniso tensors, ``D2 / D1`` uniform over 0.1-1): the share with
  ``p < 0.05`` (power) by the true ``D2 / D1`` and by track length; the movie verdict should read
  "anisotropic", and its lower bound on the anisotropic share is given.

The movie verdict is the tool's own (``_meta.json`` ``isotropy``): the count of ``p < 0.05`` tested
against a per-track rate of 10 % (``estimation.isotropy.MOVIE_NULL_RATE``) at a level of 1 %.

Pooled over the seeds, each figure is a count over all movies of a case.

Command::

    .venv/bin/python benchmarks/bench_isotropy.py [--seed-offsets 0,10,20,30,40]
        [--cases free_narrow,free_wide,aniso_narrow,binding_narrow] [--out PATH] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from _common import match_frames, report_header, write_json, write_report
from bench_foreign import read_tool, run_tool
from napari_spt_diffusion.validation.foreign_renderer import (
    FOREIGN_CASES,
    AiryPSF,
    foreign_case,
    render_foreign_movie,
    write_imagej_tiff,
)

BENCH_DIR = Path(__file__).resolve().parent
ALPHA = 0.05
PURE = 0.95
RATIO_BINS = ((0.1, 0.4), (0.4, 0.7), (0.7, 0.9), (0.9, 1.0))
LENGTH_BINS = ((5, 20), (20, 50), (50, 10_000))


def assigned_truth(tracks: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per output track: the true track sharing most matched frames (``truth_id``), ``purity``
    (matched frames to it / the track's frames) and the true D1, D2 averaged over those frames
    (``D1_true``, ``D2_true``, um^2/s)."""
    pairs = match_frames(tracks, truth)
    pairs["track_id"] = tracks.loc[pairs["out_index"], "track_id"].to_numpy()
    pairs["truth_id"] = truth.loc[pairs["truth_index"], "track_id"].to_numpy()
    pairs["D1"] = truth.loc[pairs["truth_index"], "D1_um2_s"].to_numpy()
    pairs["D2"] = truth.loc[pairs["truth_index"], "D2_um2_s"].to_numpy()
    counts = pairs.groupby(["track_id", "truth_id"]).size().rename("n").reset_index()
    best = counts.sort_values("n", kind="stable").groupby("track_id").tail(1).set_index("track_id")
    kept = pairs.merge(best.reset_index()[["track_id", "truth_id"]], on=["track_id", "truth_id"])
    means = kept.groupby("track_id")[["D1", "D2"]].mean().rename(columns={"D1": "D1_true", "D2": "D2_true"})
    lengths = tracks.groupby("track_id").size()
    out = best.join(means)
    out["purity"] = out["n"] / lengths.loc[out.index].to_numpy()
    return out


def run_movie(name: str, offset: int, workdir: Path, psfs: dict[tuple[float, float], AiryPSF]) -> dict[str, Any]:
    """Render one case at one seed offset, track it, and return its scored tracks and verdict (``psfs``: the
    Airy PSFs rendered so far, by (NA, wavelength nm), reused)."""
    case = foreign_case(name)
    seed = case["seed"] + offset
    optics, scene, motion = case["optics"], case["scene"], case["motion"]
    key = (optics.na, optics.wavelength_nm)
    psfs.setdefault(key, AiryPSF(optics))
    mv = render_foreign_movie(scene, optics, case["camera"], motion, seed, psf=psfs[key])
    movie_path = workdir / f"{name}_{offset}.tif"
    write_imagej_tiff(movie_path, mv.movie, optics.pixel_size_nm, scene.frame_interval_s)
    prefix = workdir / f"{name}_{offset}_out"
    run = run_tool(movie_path, prefix)
    print(f"[{name} seed {seed}] track: {run['wall_s']:.1f} s, rc {run['returncode']}", flush=True)
    if run["returncode"] != 0:
        return {"case": name, "seed": seed, "tool": run, "tracks": None, "verdict": None}
    tracks, summary, meta = read_tool(prefix)
    notes = summary["notes"].astype(object).fillna("").astype(str).str.split(";")
    summary = summary.assign(near_other=notes.apply(lambda f: "crowded" in f or "encounter" in f))
    scored = summary.set_index("track_id")[["n_frames", "isotropy_p", "D1_um2_s", "D2_um2_s", "near_other"]].join(
        assigned_truth(tracks, mv.truth_dataframe()), how="inner")
    scored = scored[np.isfinite(scored["isotropy_p"])].reset_index()
    scored["seed"] = seed
    return {"case": name, "seed": seed, "tool": {"wall_s": run["wall_s"], "returncode": 0},
            "tracks": scored, "verdict": meta.get("isotropy"), "n_summary_tracks": int(len(summary))}


def binomial_range(n: int, p: float = ALPHA) -> tuple[float, float]:
    """Central 95 % range of the share of ``n`` Bernoulli(p) draws (counts from the binomial quantiles)."""
    if n == 0:
        return float("nan"), float("nan")
    return float(stats.binom.ppf(0.025, n, p) / n), float(stats.binom.ppf(0.975, n, p) / n)


def rate(p: np.ndarray) -> str:
    """``"x.x % (k of n)"``: the share of p-values below ``ALPHA`` (``"-"`` for none)."""
    return f"{100 * np.mean(p < ALPHA):.1f} % ({int(np.sum(p < ALPHA))} of {p.size})" if p.size else "-"


def isotropic_lines(name: str, movies: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Report lines and figures of an isotropic case (every ``p < ALPHA`` a false alarm), pooled over its movies."""
    tr = pd.concat([m["tracks"] for m in movies if m["tracks"] is not None], ignore_index=True)
    pure = tr[tr["purity"] >= PURE]
    low, high = binomial_range(len(tr))
    plow, phigh = binomial_range(len(pure))
    verdicts = [m["verdict"] for m in movies if m["verdict"]]
    figures = {"n_tracks": len(tr), "false_alarm": float(np.mean(tr["isotropy_p"] < ALPHA)) if len(tr) else None,
               "n_pure": len(pure),
               "false_alarm_pure": float(np.mean(pure["isotropy_p"] < ALPHA)) if len(pure) else None,
               "false_alarm_pure_near_other": [int(np.sum(pure.loc[pure["near_other"], "isotropy_p"] < ALPHA)),
                                               int(pure["near_other"].sum())],
               "false_alarm_pure_alone": [int(np.sum(pure.loc[~pure["near_other"], "isotropy_p"] < ALPHA)),
                                          int((~pure["near_other"]).sum())],
               "range_all": [low, high], "range_pure": [plow, phigh],
               "p_below_0.01": float(np.mean(tr["isotropy_p"] < 0.01)) if len(tr) else None,
               "p_deciles": [float(np.mean(tr["isotropy_p"] < q)) for q in np.arange(0.1, 1.0, 0.1)],
               "movies_called_anisotropic": sum(bool(v["anisotropic"]) for v in verdicts), "movies": len(verdicts),
               "movie_p": [v["movie_p"] for v in verdicts]}
    lines = [f"### `{name}` (isotropic: every p < {ALPHA} is a false alarm)", "",
             f"- Tracks tested: {len(tr)} ({len(pure)} pure, purity >= {PURE:.0%}).",
             f"- Share with p < {ALPHA}: all tracks {rate(tr['isotropy_p'].to_numpy())} (95 % range of chance at "
             f"5 %: {100 * low:.1f}-{100 * high:.1f} %); pure tracks {rate(pure['isotropy_p'].to_numpy())} "
             f"({100 * plow:.1f}-{100 * phigh:.1f} %); impure tracks "
             f"{rate(tr.loc[tr['purity'] < PURE, 'isotropy_p'].to_numpy())}.",
             f"- Pure tracks with another particle near (note `crowded` or `encounter`): "
             f"{rate(pure.loc[pure['near_other'], 'isotropy_p'].to_numpy())}; without: "
             f"{rate(pure.loc[~pure['near_other'], 'isotropy_p'].to_numpy())}.",
             f"- Share with p < 0.01: {100 * figures['p_below_0.01']:.1f} %; share below 0.1, 0.2, ..., 0.9 (uniform: "
             f"the same numbers): {', '.join(f'{100 * v:.0f}' for v in figures['p_deciles'])} %.",
             f"- Movie verdict: {figures['movies_called_anisotropic']} of {len(verdicts)} movies called anisotropic "
             f"(movie p {', '.join(f'{v:.2g}' for v in figures['movie_p'])}).", ""]
    return lines, figures


def anisotropic_lines(name: str, movies: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Report lines and figures of the anisotropic case: power by true ``D2 / D1`` and track length (pure tracks)."""
    tr = pd.concat([m["tracks"] for m in movies if m["tracks"] is not None], ignore_index=True)
    tr = tr[tr["purity"] >= PURE].copy()
    tr["ratio"] = tr["D2_true"] / tr["D1_true"]
    verdicts = [m["verdict"] for m in movies if m["verdict"]]
    lines = [f"### `{name}` (seed-aniso tensors: power to show anisotropy, pure tracks)", "",
             "| true D2 / D1 | " + " | ".join(f"{a}-{b if b < 10_000 else ''} frames" for a, b in LENGTH_BINS)
             + " | all lengths |", "|---|" + "---|" * (len(LENGTH_BINS) + 1)]
    table: dict[str, dict[str, Any]] = {}
    for lo, hi in RATIO_BINS:
        sel = tr[(tr["ratio"] >= lo) & (tr["ratio"] < hi if hi < 1.0 else tr["ratio"] <= hi)]
        cells = []
        for a, b in LENGTH_BINS:
            cell = sel[(sel["n_frames"] >= a) & (sel["n_frames"] < b)]["isotropy_p"].to_numpy()
            cells.append(rate(cell))
            table[f"{lo}-{hi} x {a}-{b}"] = {"n": int(cell.size),
                                              "power": float(np.mean(cell < ALPHA)) if cell.size else None}
        lines.append(f"| {lo}-{hi} | " + " | ".join(cells) + f" | {rate(sel['isotropy_p'].to_numpy())} |")
    shares = [v["anisotropic_share_lower_bound"] for v in verdicts]
    movie_p = [v["movie_p"] for v in verdicts]
    lines += ["", f"- Movie verdict: {sum(bool(v['anisotropic']) for v in verdicts)} of {len(verdicts)} movies "
                  f"called anisotropic (movie p {', '.join(f'{v:.2g}' for v in movie_p)}); lower bound on the "
                  f"anisotropic share {', '.join(f'{100 * s:.0f}' for s in shares)} % (every true track has "
                  f"D2 < D1; {100 * np.mean(tr['ratio'] < 0.9):.0f} % of the pure tracks below 0.9).", ""]
    return lines, {"table": table, "verdicts": verdicts, "n_pure": len(tr)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed-offsets", default="0,10,20,30,40", help="comma-separated offsets added to the case seeds")
    ap.add_argument("--cases", default=",".join(FOREIGN_CASES), help="comma-separated foreign-optics cases")
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "reports" / "isotropy.md")
    ap.add_argument("--keep", type=Path, default=None, help="keep movies and outputs in this folder")
    args = ap.parse_args(argv)
    offsets = [int(v) for v in args.seed_offsets.split(",") if v.strip()]
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in FOREIGN_CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; choose from {list(FOREIGN_CASES)}")
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "benchmarks/bench_isotropy.py", *given])
    seeds = "; ".join(f"{n} {', '.join(str(FOREIGN_CASES[n][5] + o) for o in offsets)}" for n in names)
    head = report_header("Isotropy test: false alarms and power, end to end on the foreign renderer's movies",
                         f"foreign optics, version 1 (docs/protocols.md); seeds {seeds}; 128 x 128 px, 120 frames, "
                         f"24 particles per movie", command)
    t0 = time.perf_counter()
    psfs: dict[tuple[float, float], AiryPSF] = {}
    by_case: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench_isotropy_") as tmp:
        workdir = Path(tmp) if args.keep is None else args.keep
        workdir.mkdir(parents=True, exist_ok=True)
        for offset in offsets:
            for name in names:
                by_case[name].append(run_movie(name, offset, workdir, psfs))
    total = time.perf_counter() - t0
    lines = [*head, f"- Total run time {total:.0f} s (rendering and `track`, one movie after the other); load average "
                    f"at the end {' / '.join(f'{v:.2f}' for v in os.getloadavg())}.",
             "- Scores: docstring of `benchmarks/bench_isotropy.py`; the test: `estimation/isotropy.py`, "
             "docs/results_contract.md.", ""]
    failed = [f"{m['case']} seed {m['seed']}" for ms in by_case.values() for m in ms if m["tracks"] is None]
    if failed:
        lines += [f"- `track` failed on: {', '.join(failed)}.", ""]
    figures: dict[str, Any] = {}
    for name in names:
        kind = foreign_case(name)["motion"].kind
        part, figures[name] = (anisotropic_lines if kind == "aniso" else isotropic_lines)(name, by_case[name])
        lines += part
    write_report(args.out, lines)
    write_json(args.out.with_suffix(".json"), {"command": command, "total_s": total, "figures": figures,
                                                "header": head})
    print(f"wrote {args.out} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
