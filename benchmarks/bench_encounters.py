"""Encounter rules on movies of the independent (foreign-optics) renderer: cuts made against identities kept.

For each foreign-optics case (docs/protocols.md "foreign optics": free diffusion at NA 1.45 and
NA 0.8, anisotropic and binding tracks; the seeds of ``bench_foreign.py``) the movie is rendered,
tracked once with ``spt-diffusion track MOVIE --keep-encounters`` (default settings, nothing told
but what the file holds), and the linked tracks of that run are then handed to
:func:`napari_spt_diffusion.tracking.encounters.split_encounters` under several rules:

- ``keep``: no rule (the linker's tracks);
- ``plain``: the swap test and gap rule of version 0.1 (every pair with LLR < 5 nats cut);
- ``repair``: swapped pairs relinked (tails exchanged when the swap is > 1 nat more likely), then
  the plain cuts;
- ``default``: repair, then cut only where the expected relative bias of a diffusion estimate
  ``p(swap) |v_A - v_B| / (v_A + v_B)`` is >= ``max_expected_bias`` (the package default);
- ``bias 0.05``: the same with 0.05;
- ``tail 10`` / ``tail 5``: the default with the tail test (``EncounterRules.tail_links``, off by
  default): a pair's LLR also weighs each track's next 10 (5) links under its own local step covariance
  before the encounter against the other's, where that favours the linked assignment (the tails may
  spare a cut, never make one; repairs as by default).

Scores against the truth (output tracks of >= 5 localizations, as ``track`` reports them; rows
matched to truth rows within 1.5 px, Hungarian per frame):

- tracks: output tracks; cut share: tracks touching a cut / tracks (the ``encounter`` note);
- recovered: true tracks of >= 20 frames with one output track on >= 80 % of their frames;
- mixed tracks: output tracks with < 95 % of their matched rows on one true particle (a swap left in);
- swaps left: identity changes along output tracks (consecutive matched rows of one output track on
  different true particles);
- D error: each output track's CVE tensor (``estimation.classical.cve_tensor``, the classical estimate the
  guard falls back to), ``(D1 + D2) / 2`` against the true ``(D1 + D2) / 2`` averaged over its matched rows:
  the median relative error over tracks of >= 20 matched rows, and per frame (each matched row carries its
  track's value against the row's truth, the ``bench_foreign.py`` per-frame score).

Command: ``.venv/bin/python benchmarks/bench_encounters.py [--cases ...] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from _common import match_frames, report_header, write_report
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.classical import cve_tensor
from napari_spt_diffusion.tracking.encounters import EncounterRules, split_encounters
from napari_spt_diffusion.validation.foreign_renderer import (
    FOREIGN_CASES,
    AiryPSF,
    foreign_case,
    render_foreign_movie,
    write_imagej_tiff,
)

BENCH_DIR = Path(__file__).resolve().parent
MIN_OUTPUT_ROWS = 5
MIN_TRUE_FRAMES = 20
RECOVERED_SHARE = 0.8
PURE_SHARE = 0.95
#: The foreign cases' file holds 100 nm pixels and 10 ms frames; the CVE needs nothing else (full-frame blur).
ACQ = Acquisition(pixel_size_nm=100.0, frame_interval_s=0.01)

RULES: dict[str, EncounterRules | None] = {
    "keep": None,
    "plain": EncounterRules(max_expected_bias=0.0, repair_margin=math.inf),
    "repair": EncounterRules(max_expected_bias=0.0),
    "default": EncounterRules(),
    "bias 0.05": EncounterRules(max_expected_bias=0.05),
    "tail 10": EncounterRules(tail_links=10),
    "tail 5": EncounterRules(tail_links=5),
}


def tracked_movie(name: str, workdir: Path) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Render case ``name``, run ``track --keep-encounters``; returns (tracks, truth, track wall s)."""
    case = foreign_case(name)
    optics = case["optics"]
    movie = render_foreign_movie(case["scene"], optics, case["camera"], case["motion"], case["seed"],
                                 psf=AiryPSF(optics))
    path = workdir / f"{name}.tif"
    write_imagej_tiff(path, movie.movie, optics.pixel_size_nm, case["scene"].frame_interval_s)
    script = Path(sys.executable).with_name("spt-diffusion")
    cmd = [str(script), "track", str(path), "--out", str(workdir / name), "--keep-encounters"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"track failed on {name}: {proc.stderr[-2000:]}")
    wall = time.perf_counter() - t0
    return pd.read_csv(workdir / f"{name}_tracks.csv"), movie.truth_dataframe(), wall


def score(tracks: pd.DataFrame, truth: pd.DataFrame, track_id: np.ndarray, touches_cut: np.ndarray) -> dict[str, Any]:
    """Scores of one set of track ids for the rows of ``tracks`` (see the module docstring)."""
    out = tracks.assign(track_id=track_id, cut=touches_cut)
    out = out[out.groupby("track_id")["frame"].transform("size") >= MIN_OUTPUT_ROWS]
    m = match_frames(out, truth)
    pair = pd.DataFrame({"out": out.loc[m["out_index"], "track_id"].to_numpy(),
                         "true": truth.loc[m["truth_index"], "track_id"].to_numpy(), "frame": m["frame"].to_numpy()})
    counts = pair.groupby(["out", "true"]).size()
    per_out = counts.groupby(level="out")
    pure = (per_out.max() / per_out.sum()) >= PURE_SHARE
    ordered = pair.sort_values(["out", "frame"])
    same_out = ordered["out"].to_numpy()[1:] == ordered["out"].to_numpy()[:-1]
    switches = int(np.sum(same_out & (ordered["true"].to_numpy()[1:] != ordered["true"].to_numpy()[:-1])))
    true_len = truth.groupby("track_id").size()
    long_tracks = true_len[true_len >= MIN_TRUE_FRAMES]
    best = counts.groupby(level="true").max().reindex(long_tracks.index).fillna(0) / long_tracks
    n_tracks = int(out["track_id"].nunique())
    d_track = {}
    for k, g in out.groupby("track_id"):
        g = g.sort_values("frame")
        t = cve_tensor(g[["y_px", "x_px"]].to_numpy(), ACQ, g["frame"].to_numpy())
        d_track[k] = 0.5 * (t.D1_um2_s + t.D2_um2_s)
    matched_truth = truth.loc[m["truth_index"]]
    d_true_row = 0.5 * (matched_truth["D1_um2_s"].to_numpy() + matched_truth["D2_um2_s"].to_numpy())
    d_out_row = np.array([d_track[k] for k in pair["out"]])
    rel_row = np.abs(d_out_row - d_true_row) / d_true_row
    per = pd.DataFrame({"out": pair["out"], "rel_true": d_true_row}).groupby("out").agg(
        n=("rel_true", "size"), d_true=("rel_true", "mean"))
    per = per[per["n"] >= MIN_TRUE_FRAMES]
    rel_track = np.abs(per.index.map(d_track).to_numpy(float) - per["d_true"].to_numpy()) / per["d_true"].to_numpy()
    return {"tracks": n_tracks, "d_err_track": float(np.nanmedian(rel_track)) if len(rel_track) else math.nan,
            "d_err_frame": float(np.nanmedian(rel_row)) if len(rel_row) else math.nan,
            "cut_share": float(out.groupby("track_id")["cut"].any().mean()) if n_tracks else 0.0,
            "recovered": float((best >= RECOVERED_SHARE).mean()), "mixed": int((~pure).sum()), "switches": switches}


def run_case(name: str, workdir: Path) -> tuple[list[dict[str, Any]], float]:
    tracks, truth, wall = tracked_movie(name, workdir)
    tid = tracks["track_id"].to_numpy()
    frame = tracks["frame"].to_numpy()
    pos = tracks[["y_px", "x_px"]].to_numpy()
    precision_px = tracks["loc_precision_nm"].to_numpy() / 100.0  # the foreign cases have 100 nm pixels
    rows = []
    for label, rules in RULES.items():
        if rules is None:
            res = score(tracks, truth, tid, np.zeros(len(tid), dtype=bool))
            res.update(swap_cuts=0, gap_cuts=0, repairs=0)
        else:
            split = split_encounters(tid, frame, pos, loc_precision_px=precision_px, rules=rules)
            res = score(tracks, truth, split.track_id, split.touches_cut)
            res.update(swap_cuts=split.n_swap_cuts, gap_cuts=split.n_gap_cuts, repairs=split.n_repairs)
        rows.append({"case": name, "rule": label, **res})
        print(f"[{name}] {label}: {res}", flush=True)
    return rows, wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(FOREIGN_CASES))
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "reports" / "encounters_foreign.md")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    command = " ".join([".venv/bin/python benchmarks/bench_encounters.py", *(sys.argv[1:] if argv is None else argv)])
    head = report_header("Encounter rules on foreign-optics movies", "foreign optics, version 1 (docs/protocols.md); "
                         "seeds of bench_foreign.py; 128 x 128 px, 120 frames, 24 particles per movie", command)
    rows: list[dict[str, Any]] = []
    walls = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_encounters_") as tmp:
        for name in names:
            case_rows, walls[name] = run_case(name, Path(tmp))
            rows.extend(case_rows)
    table = pd.DataFrame(rows)
    lines = [*head, f"- Total run time {time.perf_counter() - t0:.0f} s; `track --keep-encounters` per movie: "
             + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()) + ".", "",
             "What each rule and score means: the docstring of `benchmarks/bench_encounters.py`. The default rule is "
             f"`EncounterRules()` = {EncounterRules()}.", "",
             "| case | rule | tracks | share touching a cut | recovered (>= 20 fr.) | mixed tracks | identity switches "
             "left | CVE D median rel. error per track / per frame | swap cuts | gap cuts | repairs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['rule']} | {r['tracks']} | {100 * r['cut_share']:.0f} % | "
                     f"{100 * r['recovered']:.0f} % | {r['mixed']} | {r['switches']} | "
                     f"{100 * r['d_err_track']:.1f} % / {100 * r['d_err_frame']:.1f} % | {r['swap_cuts']} | "
                     f"{r['gap_cuts']} | {r['repairs']} |")
    totals = table.groupby("rule", sort=False)[["tracks", "mixed", "switches", "swap_cuts", "gap_cuts"]].sum()
    lines += ["", "All cases together:", "", "| rule | tracks | mixed tracks | identity switches left | swap cuts | "
              "gap cuts |", "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v.tracks} | {v.mixed} | {v.switches} | {v.swap_cuts} | {v.gap_cuts} |"
              for k, v in totals.iterrows()]
    write_report(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
