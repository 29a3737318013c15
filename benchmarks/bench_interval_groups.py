"""Interval coverage by kind of track, end to end on the foreign renderer's movies.

Which tracks do the per-track intervals (``estimation/intervals.py``) fail to cover? The interval
tables are calibrated on simulated single-particle tracks; a track that the linker made from a
crowded movie can hold two particles (an identity swap) or be cut where another particle came
close, errors the tables never saw. This benchmark splits the coverage of the summary's 68 % /
95 % intervals of D1 and D2 (as the tool reports them: with the widening for linked tracks, where
one is bundled) by what a user can see on each track, its ``notes``, and by what only the truth
tells, its purity.

Movies come from the independent foreign renderer (protocol "foreign optics", v1,
docs/protocols.md; ``napari_spt_diffusion.validation.foreign_renderer``, no code shared with the
training renderer), at the protocol's seeds plus ``--seed-offsets``; each is tracked by
``spt-diffusion track MOVIE.tif --out PREFIX`` with default settings.

* Each output track is assigned the true track it shares most matched frames with (Hungarian
  matching per frame within 1.5 px, as in ``bench_foreign.py``); its truth is the true D1 and D2
  averaged over those frames. Tracks with >= 5 matched frames are scored, as in ``bench_foreign.py``.
* Groups by notes, as the tool's widening for linked tracks groups them
  (``estimation/linked_widening.py``, the first that applies): ``edge`` (a localization within 3 px of
  the field's border), ``gaps``, ``crowded`` (another spot within 6 px in more than 5 % of the
  track's frames), else ``plain``. By purity: ``pure`` (at least 95 % of
  the track's matched frames matched to its true track) and ``impure`` (more than 5 % matched to
  other particles: an identity swap); frames matched to no particle (a localization more than
  1.5 px from every true position, as for a fast particle) do not count. By method: ``model``
  and ``classical``.
* Coverage: the share of a group's tracks whose truth lies in the interval, pooled over the movies
  of a case and over all cases, with the 5-95 % range of a binomial share at the nominal level over
  the group's tracks (what sampling alone allows; the tracks of one movie share its bias).
* Beside each group's coverage, the coverage of the intervals as the tables give them (the
  widening for linked tracks, ``meta["intervals"]["linked_widening"]``, taken out exactly:
  ``unwiden_linked``), and the factor by which their log half-width (around their log centre)
  would have had to be multiplied for the group's tracks to reach the nominal coverage (the
  nominal quantile of each track's ``linked_widening.half_width_ratio``):
  what the tool's factors, calibrated on our own simulator's movies, are checked against.

Command::

    .venv/bin/python benchmarks/bench_interval_groups.py [--seed-offsets 0,10,20,30,40]
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
from bench_foreign import MIN_MATCHED_SCORED, read_tool, run_tool
from bench_isotropy import assigned_truth
from napari_spt_diffusion.estimation.linked_widening import (
    GROUPS,
    LinkedWidening,
    half_width_ratio,
    track_group,
    unwiden_linked,
)
from napari_spt_diffusion.validation.foreign_renderer import (
    FOREIGN_CASES,
    AiryPSF,
    foreign_case,
    render_foreign_movie,
    write_imagej_tiff,
)

BENCH_DIR = Path(__file__).resolve().parent
PURE = 0.95
LEVELS = (("68", 0.68), ("95", 0.95))
TABLES = "tables_"
GROUPINGS = {"notes": GROUPS, "purity": ("pure", "impure"), "method": ("model", "classical")}


def matched_frames(tracks: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Per output track, its frames matched to any true particle (``n_matched``)."""
    pairs = match_frames(tracks, truth)
    ids = tracks.loc[pairs["out_index"], "track_id"].to_numpy()
    return pd.Series(ids).value_counts().rename("n_matched")


def run_movie(name: str, offset: int, workdir: Path, psfs: dict[tuple[float, float], AiryPSF]) -> dict[str, Any]:
    """Render one case at one seed offset, track it, and return its scored tracks (``psfs``: the Airy PSFs
    rendered so far, by (NA, wavelength nm), reused)."""
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
        return {"case": name, "seed": seed, "tracks": None}
    tracks, summary, meta = read_tool(prefix)
    bounds = [f"{k}_{side}{level}_um2_s" for k in ("D1", "D2") for side in ("lo", "hi") for level, _ in LEVELS]
    applied = (meta.get("intervals") or {}).get("linked_widening")
    tables = unwiden_linked(summary, LinkedWidening.from_dict(applied)) if applied else summary
    summary = summary.join(tables[bounds].add_prefix(TABLES))  # the intervals as the tables gave them
    truth = mv.truth_dataframe()
    scored = summary.set_index("track_id")[["n_frames", "D1_um2_s", "D2_um2_s", "method", "notes", *bounds,
                                            *(TABLES + b for b in bounds)]].join(
        assigned_truth(tracks, truth), how="inner").join(matched_frames(tracks, truth))
    scored = scored[scored["n"] >= MIN_MATCHED_SCORED].reset_index()
    scored["notes"] = track_group(scored["notes"])
    scored["purity"] = np.where(scored["n"] >= PURE * scored["n_matched"], "pure", "impure")
    scored["method"] = scored["method"].astype(str)
    scored["case"], scored["seed"] = name, seed
    return {"case": name, "seed": seed, "tracks": scored}


def needed_factor(tracks: pd.DataFrame, key: str, level: str, nominal: float, prefix: str = "") -> float:
    """Factor on the log half-widths of the intervals (``prefix`` + column) that would bring the tracks'
    coverage to ``nominal`` (NaN: no tracks)."""
    ratio = half_width_ratio(tracks[f"{prefix}{key}_lo{level}_um2_s"].to_numpy(float),
                             tracks[f"{prefix}{key}_hi{level}_um2_s"].to_numpy(float),
                             tracks[f"{key}_true"].to_numpy(float))
    ratio = ratio[~np.isnan(ratio)]
    return float(np.quantile(ratio, nominal)) if ratio.size else float("nan")


def coverage(tracks: pd.DataFrame, key: str, level: str, prefix: str = "") -> tuple[float, int]:
    """Share of the tracks whose true ``key`` lies in their interval at ``level`` (columns ``prefix`` + name),
    and their number."""
    lo = tracks[f"{prefix}{key}_lo{level}_um2_s"].to_numpy(float)
    hi = tracks[f"{prefix}{key}_hi{level}_um2_s"].to_numpy(float)
    true = tracks[f"{key}_true"].to_numpy(float)
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(true)
    return (float(np.mean((true[ok] >= lo[ok]) & (true[ok] <= hi[ok]))) if ok.any() else float("nan")), int(ok.sum())


def group_rows(tracks: pd.DataFrame, label: str) -> tuple[list[str], dict[str, Any]]:
    """Table rows (one per grouping value) of one set of tracks, and their figures."""
    rows, figures = [], {}
    for grouping, values in GROUPINGS.items():
        for value in values:
            sel = tracks[tracks[grouping] == value]
            cells, fig = [], {"n": int(len(sel))}
            for key in ("D1", "D2"):
                for level, nominal in LEVELS:
                    cov, n = coverage(sel, key, level)
                    tab, _ = coverage(sel, key, level, TABLES)
                    factor = needed_factor(sel, key, level, nominal, TABLES) if n else float("nan")
                    lo, hi = ((100 * stats.binom.ppf(q, n, nominal) / n for q in (0.05, 0.95)) if n
                              else (np.nan, np.nan))
                    fig[f"{key}_{level}"] = {"coverage": cov, "coverage_tables": tab, "n": n, "range": [lo, hi],
                                             "factor_tables": factor}
                    cells.append("-" if not n else
                                 f"{100 * cov:.1f} ({lo:.0f}-{hi:.0f}); {100 * tab:.1f}, x{factor:.2f}")
            figures[f"{grouping}={value}"] = fig
            rows.append(f"| {label} | {grouping} = {value} | {len(sel)} | " + " | ".join(cells) + " |")
    return rows, figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed-offsets", default="0,10,20,30,40", help="comma-separated offsets added to the case seeds")
    ap.add_argument("--cases", default=",".join(FOREIGN_CASES), help="comma-separated foreign-optics cases")
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "reports" / "interval_groups.md")
    ap.add_argument("--keep", type=Path, default=None, help="keep movies and outputs in this folder")
    args = ap.parse_args(argv)
    offsets = [int(v) for v in args.seed_offsets.split(",") if v.strip()]
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in FOREIGN_CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; choose from {list(FOREIGN_CASES)}")
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "benchmarks/bench_interval_groups.py", *given])
    seeds = "; ".join(f"{n} {', '.join(str(FOREIGN_CASES[n][5] + o) for o in offsets)}" for n in names)
    head = report_header("Interval coverage by kind of track, end to end on the foreign renderer's movies",
                         f"foreign optics, version 1 (docs/protocols.md); seeds {seeds}; 128 x 128 px, 120 frames, "
                         f"24 particles per movie", command)
    t0 = time.perf_counter()
    psfs: dict[tuple[float, float], AiryPSF] = {}
    movies = []
    with tempfile.TemporaryDirectory(prefix="bench_interval_groups_") as tmp:
        workdir = Path(tmp) if args.keep is None else args.keep
        workdir.mkdir(parents=True, exist_ok=True)
        for offset in offsets:
            for name in names:
                movies.append(run_movie(name, offset, workdir, psfs))
    total = time.perf_counter() - t0
    lines = [*head, f"- Total run time {total:.0f} s (rendering and `track`, one movie after the other); load average "
                    f"at the end {' / '.join(f'{v:.2f}' for v in os.getloadavg())}.",
             "- Scores and groups: docstring of `benchmarks/bench_interval_groups.py`.", ""]
    failed = [f"{m['case']} seed {m['seed']}" for m in movies if m["tracks"] is None]
    if failed:
        lines += [f"- `track` failed on: {', '.join(failed)}.", ""]
    tracks = pd.concat([m["tracks"] for m in movies if m["tracks"] is not None], ignore_index=True)
    lines += ["Each cell: coverage in % of the intervals as `track` reports them (5-95 % range of chance at the "
              "nominal level); then of the intervals as the tables give them (the widening for linked tracks "
              "taken out), and the factor on their log half-widths that the group's tracks would have needed.", "",
              "| case | group | tracks | D1 68 % | D1 95 % | D2 68 % | D2 95 % |", "|---|---|---|---|---|---|---|"]
    figures: dict[str, Any] = {}
    for name in [*names, "all"]:
        sel = tracks if name == "all" else tracks[tracks["case"] == name]
        rows, figures[name] = group_rows(sel, name)
        lines += rows
    crossed = pd.crosstab(tracks["notes"], tracks["purity"])
    lines += ["", "Tracks by notes and purity (all cases):", "", "| notes | " + " | ".join(crossed.columns) + " |",
              "|---|" + "---|" * len(crossed.columns)]
    lines += [f"| {idx} | " + " | ".join(str(int(v)) for v in row) + " |" for idx, row in crossed.iterrows()]
    write_report(args.out, lines)
    write_json(args.out.with_suffix(".json"), {"command": command, "total_s": total, "figures": figures,
                                                "notes_by_purity": crossed.to_dict(), "header": head})
    print(f"wrote {args.out} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
