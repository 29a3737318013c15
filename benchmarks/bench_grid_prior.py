"""Robustness grid, seed-aniso: how much of a model's lead over the classical estimators is the prior's edge?

Protocol "robustness grid" (docs/protocols.md), seed-aniso physics as ``bench_grid.py`` runs it (grid seed
3025, ``n`` tracks of 30 frames per cell, the tracking path, the models as ``track --psf-units auto`` runs them
with the PSF width calibrated from a movie of the cell, the classical estimators told the true acquisition).

seed-aniso draws D1 uniformly from 0.05-6 um^2/s and D2 = r D1 with r uniform in [0.1, 1), and the grid's target
is an MAE in um^2/s. The MAE is then dominated by the fast tracks, whose errors are the largest, and a
trained model knows that no track is faster than 6 um^2/s: near that top it can pull its estimates in, which an
estimator that does not know the prior cannot. This benchmark measures how much of the ratio model / best
classical comes from that knowledge, cell by cell:

* the best classical estimator per metric (of the CVE tensor, the blur-moment tensor and the combined
  tensor; the grid's yardstick), and the same estimators given the prior's range: D1 clipped to
  [0.05, 6] um^2/s, D2 to [0.005, 6] and to at most D1 ("classical, prior's range"; its ratio to the
  yardstick is a lower bound on what knowing the prior is worth: clipping uses only its edges, not
  its shape, which a posterior estimate would, nor D2 >= 0.1 D1);
* each model's ratio to the yardstick over all tracks (the grid's figure) and over the tracks whose
  true D1 is at most :data:`AWAY_FROM_TOP` um^2/s (both the model and the yardstick scored on the
  same tracks: far from the edge, where the prior's top cannot help).

Command::

    .venv/bin/python benchmarks/bench_grid_prior.py [--quick] [--n 300] [--models aniso,aniso_any] [--out PATH]

The patches are made as ``bench_grid.py`` makes them (large enough for the models at the calibrated
and at the true PSF width), so the cells' tracks are the grid's.

``--quick``: 60 tracks in 2 cells (checks the script).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from _common import (
    PROTOCOLS,
    classical_tracks,
    command_line,
    fmt,
    load_average,
    report_header,
    report_path,
    write_report,
)
from bench_grid import CALIBRATION_JSON, CLASSICAL, GRID_SEEDS, TARGET_RATIO, measured_widths
from bench_psf_units import inputs, run
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import psf_units as pu
from napari_spt_diffusion.estimation.checkpoint import load_checkpoint
from napari_spt_diffusion.simulation.optics import RenderOptics
from napari_spt_diffusion.training.samples import SampleSettings, make_samples

#: seed-aniso's range of D1 (um^2/s): the prior's edges.
D1_RANGE_UM2_S = (0.05, 6.0)
#: Smallest D2 seed-aniso draws (0.1 x the smallest D1), um^2/s.
D2_LOW_UM2_S = 0.005
#: Tracks with a true D1 at most this (um^2/s) are "away from the top" of the prior.
AWAY_FROM_TOP = 4.0


def mae_pair(d1: np.ndarray, d2: np.ndarray, true1: np.ndarray, true2: np.ndarray,
             select: np.ndarray) -> tuple[float, float]:
    """MAE of D1 and D2 (um^2/s) over the ``select``-ed tracks (``(N,)`` arrays)."""
    return (float(np.nanmean(np.abs(d1 - true1)[select])), float(np.nanmean(np.abs(d2 - true2)[select])))


def with_prior_range(pred: dict) -> tuple[np.ndarray, np.ndarray]:
    """A classical estimate given seed-aniso's range: D1 in [0.05, 6], D2 in [0.005, 6] and at most D1."""
    d1 = np.clip(np.asarray(pred["D1_um2_s"], float), *D1_RANGE_UM2_S)
    d2 = np.minimum(np.clip(np.asarray(pred["D2_um2_s"], float), D2_LOW_UM2_S, D1_RANGE_UM2_S[1]), d1)
    return d1, d2


def best_of(scores: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """The smallest MAE D1 and the smallest MAE D2 over the estimators (each metric on its own)."""
    return min(v[0] for v in scores.values()), min(v[1] for v in scores.values())


def cell_row(shape: str, sigma: float, photons: float, n: int, models: dict, widths: dict[str, float]) -> dict:
    """Scores of one grid cell (see the module docstring)."""
    cell = f"{'gauss' if shape == 'gaussian' else shape}-s{sigma:.1f}-n{photons:.0f}"
    acq = Acquisition(psf_sigma_nm=100.0 * sigma, signal_photons=photons)
    told = acq.replace(psf_sigma_nm=100.0 * widths.get(cell, sigma))
    scales = {name: pu.scale_for(card, told, "auto") for name, (_, card) in models.items()}
    # the patch size as bench_grid.py makes it (it also runs the models at the true width): the same tracks
    q = max(pu.source_patch_size(s) for name, (_, card) in models.items()
            for s in (scales[name], pu.scale_for(card, acq, "auto")))
    settings = SampleSettings(patch_size=q, optics=RenderOptics(airy=shape == "airy"))
    batch = make_samples("aniso", n, 30, acq, GRID_SEEDS["aniso"], settings=settings)
    small = dataclasses.replace(batch, patches=pu.centre_crop(batch.patches, 11),
                                outside_mask=pu.centre_crop(batch.outside_mask, 11))
    true1, true2 = batch.D1_um2_s[:, 0], batch.D2_um2_s[:, 0]
    everything = np.ones(len(true1), dtype=bool)
    away = true1 <= AWAY_FROM_TOP
    classical = classical_tracks(small, acq, CLASSICAL)
    raw = {k: (np.asarray(p["D1_um2_s"], float), np.asarray(p["D2_um2_s"], float)) for k, p in classical.items()}
    best = best_of({k: mae_pair(*v, true1, true2, everything) for k, v in raw.items()})
    best_away = best_of({k: mae_pair(*v, true1, true2, away) for k, v in raw.items()})
    prior = best_of({k: mae_pair(*with_prior_range(p), true1, true2, everything) for k, p in classical.items()})
    row = {"shape": shape, "sigma": sigma, "photons": photons, "n_tracks": len(true1), "n_away": int(away.sum()),
           "best": best, "best_away": best_away, "classical_prior_range": prior,
           "models": {}}
    for name, (module, _) in models.items():
        pred = run(module, *inputs(batch, scales[name]), acq, scales[name])
        d1, d2 = np.asarray(pred["D1_um2_s"], float), np.asarray(pred["D2_um2_s"], float)
        row["models"][name] = {"all": mae_pair(d1, d2, true1, true2, everything),
                               "away": mae_pair(d1, d2, true1, true2, away)}
    return row


def ratio_text(num: tuple[float, float], den: tuple[float, float]) -> str:
    """``r1 / r2`` with a mark where both meet the target."""
    r = (num[0] / den[0], num[1] / den[1])
    return f"{r[0]:.2f} / {r[1]:.2f}" + (" (met)" if max(r) <= TARGET_RATIO else "")


def met(num: tuple[float, float], den: tuple[float, float]) -> bool:
    return max(num[0] / den[0], num[1] / den[1]) <= TARGET_RATIO


def report(rows: list[dict], names: list[str], args: argparse.Namespace, argv: list[str] | None,
           seconds: float) -> list[str]:
    lines = report_header(
        "Robustness grid, seed-aniso: the models' lead and the prior's edge",
        f"{PROTOCOLS} robustness grid: seed-aniso physics v1, grid seed {GRID_SEEDS['aniso']}, {args.n} tracks of 30 "
        "frames per cell, tracking path (`make_samples`), as `bench_grid.py`",
        command_line("bench_grid_prior.py", argv))
    lines += [
        f"- Yardstick: the best of {', '.join(CLASSICAL)} per metric, told the true acquisition (as `grid.md`). "
        f"'Classical, prior's range': the same estimators with D1 clipped to {D1_RANGE_UM2_S[0]:g}-"
        f"{D1_RANGE_UM2_S[1]:g} um^2/s and D2 to {D2_LOW_UM2_S:g}-{D1_RANGE_UM2_S[1]:g} and at most D1, the best per "
        "metric. 'Away from the top': the tracks whose true D1 is at most "
        f"{AWAY_FROM_TOP:g} um^2/s, the model and the yardstick scored on the same tracks. Ratios MAE D1 / MAE D2 to "
        f"the yardstick; (met): both <= {TARGET_RATIO}. Details: docstring of `benchmarks/bench_grid_prior.py`.",
        "",
        "| shape | PSF sigma (px) | photons | tracks (away from the top) | best classical MAE D1 / D2 | "
        "classical, prior's range (ratio) | "
        + " | ".join(f"`{m}` all tracks (ratio) | `{m}` away from the top (ratio)" for m in names) + " |",
        "|---|---|---|---|---|---|" + "---|---|" * len(names),
    ]
    for r in rows:
        cells = []
        for m in names:
            s = r["models"][m]
            cells.append(f"{ratio_text(s['all'], r['best'])} | {ratio_text(s['away'], r['best_away'])}")
        lines.append(f"| {r['shape']} | {r['sigma']:g} | {r['photons']:.0f} | {r['n_tracks']} ({r['n_away']}) | "
                     f"{fmt(r['best'][0])} / {fmt(r['best'][1])}"
                     f" | {ratio_text(r['classical_prior_range'], r['best'])} | " + " | ".join(cells) + " |")
    n = len(rows)
    prior_gain = np.array([r["classical_prior_range"][0] / r["best"][0] for r in rows])
    lines += ["", "Reading (computed from the rows above):", "",
              f"- Clipping the classical estimates to the prior's range (a lower bound on what knowing the prior is "
              f"worth) takes the yardstick's MAE D1 "
              f"to {prior_gain.min():.2f}-{prior_gain.max():.2f} x (median {np.median(prior_gain):.2f}); the target "
              f"met in {sum(met(r['classical_prior_range'], r['best']) for r in rows)} of {n} cells that way."]
    for m in names:
        all_met = sum(met(r["models"][m]["all"], r["best"]) for r in rows)
        away_met = sum(met(r["models"][m]["away"], r["best_away"]) for r in rows)
        d_all = np.array([r["models"][m]["all"][0] / r["best"][0] for r in rows])
        d_away = np.array([r["models"][m]["away"][0] / r["best_away"][0] for r in rows])
        lines.append(f"- `{m}`: the target met in {all_met} of {n} cells over all tracks and in {away_met} away from "
                     f"the top; its MAE D1 ratio median {np.median(d_all):.2f} over all tracks, "
                     f"{np.median(d_away):.2f} away from the top.")
    lines += ["", f"Run time {seconds:.0f} s; load average at the end {load_average()}."]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="tracks per cell (default 300)")
    ap.add_argument("--models", default="aniso,aniso_any")
    ap.add_argument("--out", type=Path, default=None, help="report (default benchmarks/reports/grid_prior[_quick].md)")
    args = ap.parse_args(argv)
    args.n = args.n or (60 if args.quick else 300)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    models = {m: load_checkpoint(m) for m in names}
    widths = measured_widths(CALIBRATION_JSON)
    sigmas = (1.0, 2.0) if args.quick else (0.7, 1.0, 1.5, 2.0, 2.5)
    photons = (1000.0,) if args.quick else (250.0, 1000.0, 4000.0)
    shapes = ("gaussian",) if args.quick else ("gaussian", "airy")
    t0 = time.perf_counter()
    rows = []
    for shape in shapes:
        for sigma in sigmas:
            for n_photons in photons:
                rows.append(cell_row(shape, sigma, n_photons, args.n, models, widths))
                r = rows[-1]
                print(f"{shape} {sigma:g} px {n_photons:.0f} photons: prior's range "
                      f"{ratio_text(r['classical_prior_range'], r['best'])}; "
                      + "; ".join(f"{m} {ratio_text(r['models'][m]['all'], r['best'])} / away "
                                  f"{ratio_text(r['models'][m]['away'], r['best_away'])}" for m in names), flush=True)
    out = args.out or report_path("grid_prior", args.quick)
    write_report(out, report(rows, names, args, argv, time.perf_counter() - t0))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
