"""Robustness grid (issue 14): the aniso models against the best classical estimator, cell by cell.

Protocol "robustness grid" (docs/protocols.md): seed-aniso v1 physics (the grid's test seed 3025;
``--set binding|twostate``: those sets, seeds 3026 / 3027, scored per frame with the changepoint) with the PSF
sigma 0.7 / 1.0 / 1.5 / 2.0 / 2.5 px x 250 / 1,000 / 4,000 signal photons per frame x a
Gaussian or a scalar Airy PSF (``RenderOptics(airy=True)``, our simulator's Airy: the sigma of
the Gaussian of equal second moment in its core), everything else the standard acquisition;
``n`` tracks of 30 frames per cell, made through the tracking path by ``make_samples`` with
patches large enough for PSF units.

Each model gets its inputs as ``track`` gives them by default (``--psf-units auto``: in units of
the PSF, :mod:`napari_spt_diffusion.estimation.psf_units`, when the width lies outside what the
model was trained for), with the PSF width the calibration measured from a movie of the same cell
(``benchmarks/reports/calibration.json``, made by ``bench_calibration.py``: its Airy cells are
movies of the independent renderer with the same sigma), as ``track`` would use it; a row with
the true width is given beside it. The classical estimators (per-track CVE tensor, blur-moment
tensor, combined tensor; for the two-state sets the per-frame blur-moment tensor over +-2 frames
and CVE tensor over +-3 frames, ``_common.classical_frames``) are told the true acquisition; the
best of them per metric is the yardstick. Target (issue 14): each model's MAE D1 and MAE D2 <=
0.85 x the best classical one in every cell, and for the two-state sets a changepoint MAE (over
the tracks whose labels change) no worse than the best classical one. A third column per model applies
the guard as ``track`` does over the cell's tracks (``pipeline.guard_model``'s population test against
the CVE, with the acquisition check of the model's card): rejected (``track`` would report the classical
values), accepted as the model, or accepted with the model's D divided by the guard's factor where it
shows a bias beyond 5 % (``estimation.rescale``), scored as reported. For the seed-aniso set each ratio carries
its 5-95 % bootstrap interval over the cell's tracks (the best classical estimator per metric chosen on all of
them), and the cells where both intervals lie at or under the target are counted apart: with 300 tracks a cell's
ratio moves by a few hundredths with the tracks drawn.

Command::

    .venv/bin/python benchmarks/bench_grid.py [--quick] [--set aniso|binding|twostate] [--n 300] [--models M,...]
        [--shapes gaussian,airy] [--sigmas 0.7,1,1.5,2,2.5] [--photons 250,1000,4000] [--out PATH]

``--quick``: 60 tracks in 2 cells (checks the script).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from _common import (
    PROTOCOLS,
    classical_frames,
    classical_tracks,
    command_line,
    fmt,
    frame_metrics,
    load_average,
    report_header,
    report_path,
    write_report,
)
from _guard_as_track import as_reported, guard_decision, range_outside, with_classical
from bench_psf_units import inputs, run
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import guard
from napari_spt_diffusion.estimation import psf_units as pu
from napari_spt_diffusion.estimation.checkpoint import load_checkpoint
from napari_spt_diffusion.estimation.model_choice import ALTERNATIVES
from napari_spt_diffusion.metrics import mean_absolute_error
from napari_spt_diffusion.simulation.optics import RenderOptics
from napari_spt_diffusion.training.samples import SampleSettings, make_samples

#: The grid's test seeds per motion model (docs/protocols.md; training never uses them).
GRID_SEEDS = {"aniso": 3025, "binding": 3026, "twostate": 3027}
#: The yardstick's estimators for seed-aniso (told the true acquisition), per track.
CLASSICAL = ("CVE tensor", "blur-moment tensor", "combined (CVE + blur)")
#: Bundled models per motion model (``--models`` default).
DEFAULT_MODELS = {"aniso": "aniso,aniso_any", "binding": "binding,binding_any", "twostate": "twostate,twostate_any"}
#: Target: model MAE <= this x the best classical MAE, per metric and cell.
TARGET_RATIO = 0.85
CALIBRATION_JSON = Path(__file__).resolve().parent / "reports" / "calibration.json"
#: Bootstrap resamples of a cell's tracks for the 90 % interval of a model's MAE ratio (seed-aniso set).
BOOTSTRAP = 2000


def measured_widths(path: Path) -> dict[str, float]:
    """PSF sigma (px, 100 nm pixels) the calibration measured per cell (``gauss-s1.5-n250`` ...)."""
    if not path.is_file():
        return {}
    out = {}
    for cell in json.loads(path.read_text())["results"]:
        value = ((cell.get("calibration") or {}).get("psf_sigma_nm") or {}).get("value")
        if value is not None:
            out[cell["cell"]] = float(value) / 100.0
    return out


def maes(pred: dict, batch) -> tuple[float, float, float | None]:
    """MAE of D1 and D2 (um^2/s) per track (a sequence model's ``(N,)`` estimates) or per frame (a
    pointwise model's ``(N, T)``), and for the latter the changepoint MAE (frames) over the tracks
    whose labels change (``None`` for a sequence model)."""
    if np.ndim(pred["D1_um2_s"]) == 2:
        m = frame_metrics(pred, batch)
        return float(m["mae_D1_um2_s"]), float(m["mae_D2_um2_s"]), m["changepoint_mae_frames_labelled_change"]
    return (float(mean_absolute_error(pred["D1_um2_s"], batch.D1_um2_s[:, 0])),
            float(mean_absolute_error(pred["D2_um2_s"], batch.D2_um2_s[:, 0])), None)


def meets(scores: tuple, best: tuple, per_frame: bool) -> bool:
    """The grid target: MAE D1 and D2 <= TARGET_RATIO x the best classical, and (two-state sets) a changepoint
    MAE no worse."""
    ok = max(scores[0] / best[0], scores[1] / best[1]) <= TARGET_RATIO
    return ok and (not per_frame or scores[2] is None or best[2] is None or scores[2] <= best[2])


def guard_rescale(pred: dict, batch, card: dict, scale: float,
                  told: Acquisition) -> tuple[guard.GuardDecision, bool, np.ndarray]:
    """The guard over the cell's tracks as ``track`` runs it (``_guard_as_track.guard_decision``, the acquisition
    with the calibrated PSF width, ``told``, as ``track`` judges it; the model at PSF-units ``scale``), over the
    tracks inside the model's range of D: ``(decision, inside the card's range, (N,) tracks outside its range
    of D)``."""
    with np.errstate(all="ignore"):
        d_mean = 0.5 * (np.asarray(pred["D1_um2_s"], float) + np.asarray(pred["D2_um2_s"], float))
        if d_mean.ndim == 2:  # a pointwise model: the track's mean, as the summary holds it
            d_mean = np.nanmean(d_mean, axis=1)
        loc_var = np.nanmean((np.asarray(batch.loc_precision_nm, float) / told.pixel_size_nm) ** 2, axis=1)
    outside, left_out = range_outside(batch.positions_px, loc_var, told, card, scale, d_mean)
    decision, messages = guard_decision(told.diffusion_to_px2_per_frame(d_mean), batch.positions_px, loc_var,
                                        told, card, scale, left_out)
    return decision, not messages, outside


def as_track_reports(status: dict[str, dict]) -> dict[str, tuple[str, bool]]:
    """Per bundled model asked for (with its model for any microscope in ``status``): which estimator ``track``
    reports in the cell and whether it meets the target, ``(name or "classical", met)``. ``status[name]``:
    ``in_range`` (the card's acquisition check), ``rejected`` (the guard), ``met`` (as reported, where accepted)."""
    out = {}
    for asked, other in ALTERNATIVES.items():
        if asked not in status or other not in status:
            continue
        a, b = status[asked], status[other]
        if not a["in_range"] and b["in_range"]:
            chain = [other]  # the model switch
        elif a["in_range"] and b["in_range"]:
            chain = [asked, other]  # the guard's fallback
        else:
            chain = [asked]
        used = next((n for n in chain if not status[n]["rejected"]), None)
        out[asked] = ("classical", False) if used is None else (used, bool(status[used].get("met", False)))
    return out


def ratio_interval(estimate: np.ndarray, reference: np.ndarray, truth: np.ndarray, seed: int) -> tuple[float, float]:
    """5-95 % bootstrap interval of MAE(estimate) / MAE(reference), resampling the tracks jointly.

    ``estimate``, ``reference``, ``truth``: ``(N,)`` per-track values in the same unit (um^2/s); tracks where
    either estimate is not finite are left out of both MAEs.
    """
    err_e = np.abs(np.asarray(estimate, float) - truth)
    err_r = np.abs(np.asarray(reference, float) - truth)
    keep = np.isfinite(err_e) & np.isfinite(err_r)
    err_e, err_r = err_e[keep], err_r[keep]
    idx = np.random.default_rng(seed).integers(0, err_e.size, size=(BOOTSTRAP, err_e.size))
    ratios = err_e[idx].mean(axis=1) / err_r[idx].mean(axis=1)
    return float(np.quantile(ratios, 0.05)), float(np.quantile(ratios, 0.95))


def cell_ratio_intervals(pred: dict, estimates: dict, best_names: tuple[str, str], batch,
                         seed: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """The 90 % bootstrap intervals of a sequence model's MAE D1 and D2 ratios to the cell's best classical
    estimators (``best_names``, per metric, chosen on all of the cell's tracks)."""
    if np.ndim(pred["D1_um2_s"]) != 1:
        raise ValueError("bootstrap intervals are made for per-track (sequence) estimates only")
    out = []
    for key, name in zip(("D1_um2_s", "D2_um2_s"), best_names):
        out.append(ratio_interval(pred[key], estimates[name][key], np.asarray(getattr(batch, key)[:, 0], float),
                                  seed))
    return out[0], out[1]


def classical_scores(small, acq: Acquisition, motion: str,
                     estimates: dict | None = None) -> dict[str, tuple[float, float, float | None]]:
    """The classical estimators' scores (told the true acquisition): per track for seed-aniso (``estimates``:
    their per-track estimates, if already made), per frame (sliding windows) for the two-state sets."""
    if estimates is None:
        estimates = classical_tracks(small, acq, CLASSICAL) if motion == "aniso" else classical_frames(small, acq)
    return {name: maes(pred, small) for name, pred in estimates.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="tracks per cell (default 300)")
    ap.add_argument("--set", default="aniso", choices=sorted(GRID_SEEDS), help="motion model of the tracks")
    ap.add_argument("--models", default=None, help="comma-separated models (default: the set's bundled ones)")
    ap.add_argument("--shapes", default="gaussian,airy")
    ap.add_argument("--sigmas", default=None, help="PSF sigma in px (default 0.7,1,1.5,2,2.5)")
    ap.add_argument("--photons", default=None, help="signal photons per frame (default 250,1000,4000)")
    ap.add_argument("--calibration", type=Path, default=CALIBRATION_JSON)
    ap.add_argument("--out", type=Path, default=None, help="report (default benchmarks/reports/grid[_quick].md)")
    args = ap.parse_args(argv)
    args.n = args.n or (60 if args.quick else 300)
    sigmas = [float(x) for x in (args.sigmas or ("1,2" if args.quick else "0.7,1,1.5,2,2.5")).split(",")]
    photons = [float(x) for x in (args.photons or ("1000" if args.quick else "250,1000,4000")).split(",")]
    shapes = args.shapes.split(",")
    args.out = args.out or report_path("grid" if args.set == "aniso" else f"grid_{args.set}", args.quick)
    models = {m: load_checkpoint(m) for m in (args.models or DEFAULT_MODELS[args.set]).split(",")}
    seed = GRID_SEEDS[args.set]
    per_frame = args.set != "aniso"
    widths = measured_widths(args.calibration)
    lines = report_header(
        f"Robustness grid: the {args.set} models against the best classical estimator",
        f"{PROTOCOLS} robustness grid: seed-{args.set} physics v1, grid seed {seed}, {args.n} tracks of 30 frames per "
        "cell, tracking path (`make_samples`)", command_line("bench_grid.py", argv))
    classical_names = (", ".join(CLASSICAL) if not per_frame
                       else "the blur-moment tensor over +-2 frames, the CVE tensor over +-3 frames")
    unit = ("per frame, and the changepoint MAE (frames) over the tracks whose labels change" if per_frame
            else "per track")
    lines += [
        f"- Models as `track --psf-units auto` runs them, with the PSF width calibrated from a movie of the cell "
        f"({args.calibration.name}); the classical estimators told the true acquisition, the best of "
        f"{classical_names} per metric is the yardstick. Scores {unit}. Target: model MAE <= {TARGET_RATIO} x that, "
        "for D1 and D2" + (", and a changepoint MAE no worse" if per_frame else "") + ", in every cell. Details: "
        "docstring of `benchmarks/bench_grid.py`.",
        "",
        "| shape | PSF sigma (px) | photons | calibrated sigma (px) | best classical MAE D1 / D2"
        + (" / changepoint" if per_frame else "") + " | "
        + " | ".join(f"`{m}` MAE D1 / D2{' / changepoint' if per_frame else ''} (ratio) | `{m}`, true width | "
                     f"`{m}` with the guard (as `track` reports it)" for m in models) + " |",
        "|---|---|---|---|---|" + "---|---|---|" * len(models),
    ]
    met = {m: [] for m in models}
    robust = {m: [] for m in models}  # cells where the 90 % bootstrap interval of both ratios lies at or under target
    met_guarded = {m: [] for m in models}  # cells where the guard accepts the model, met as reported
    met_reported = {m: [] for m in models if m in ALTERNATIVES and ALTERNATIVES[m] in models}
    t_all = time.perf_counter()
    for shape in shapes:
        for sigma in sigmas:
            for n_photons in photons:
                cell = f"{'gauss' if shape == 'gaussian' else shape}-s{sigma:.1f}-n{n_photons:.0f}"
                t0 = time.perf_counter()
                acq = Acquisition(psf_sigma_nm=100.0 * sigma, signal_photons=n_photons)
                measured = widths.get(cell)
                scales = {}
                for name, (_, card) in models.items():  # as track's default, --psf-units auto
                    told = acq.replace(psf_sigma_nm=100.0 * (measured if measured else sigma))
                    scales[name] = (pu.scale_for(card, told, "auto"), pu.scale_for(card, acq, "auto"))
                q = max(pu.source_patch_size(s) for pair in scales.values() for s in pair)
                settings = SampleSettings(patch_size=q, optics=RenderOptics(airy=shape == "airy"))
                batch = make_samples(args.set, args.n, 30, acq, seed, settings=settings)
                small = dataclasses.replace(batch, patches=pu.centre_crop(batch.patches, 11),
                                            outside_mask=pu.centre_crop(batch.outside_mask, 11))
                estimates = classical_tracks(small, acq, CLASSICAL) if not per_frame else None
                classical = classical_scores(small, acq, args.set, estimates)
                best = tuple(min((v[k] for v in classical.values() if v[k] is not None), default=None)
                             for k in range(3))
                best_names = tuple(min(classical, key=lambda n, k=k: classical[n][k]) for k in range(2))
                cells = []
                status: dict[str, dict] = {}
                for name, (module, card) in models.items():
                    s_cal, s_true = scales[name]
                    pred = run(module, *inputs(batch, s_cal), acq, s_cal)
                    cal = maes(pred, batch)
                    true = maes(run(module, *inputs(batch, s_true), acq, s_true), batch)
                    ratio = (cal[0] / best[0], cal[1] / best[1])
                    ok = meets(cal, best, per_frame)
                    met[name].append(ok)
                    interval = ""
                    if estimates is not None:
                        iv1, iv2 = cell_ratio_intervals(pred, estimates, best_names, batch, seed)
                        interval = f"; 90 % {iv1[0]:.2f}-{iv1[1]:.2f} / {iv2[0]:.2f}-{iv2[1]:.2f}"
                        robust[name].append(max(iv1[1], iv2[1]) <= TARGET_RATIO)
                    told = acq.replace(psf_sigma_nm=100.0 * (measured if measured else sigma))
                    decision, in_range, outside = guard_rescale(pred, batch, card, s_cal, told)
                    reported, rescale, _ = as_reported(pred, decision)
                    reported = with_classical(reported, batch.positions_px, told, outside)
                    rejected, factor = decision.rejected, decision.bias_factor
                    status[name] = {"in_range": in_range, "rejected": rejected}
                    beyond = (f"; {int(np.sum(outside != 0))} tracks beyond its range of D" if np.any(outside)
                              else "")
                    if rejected:
                        guarded = f"rejected ({factor:.2f} x)"
                    elif rescale is None and not np.any(outside):
                        guarded = f"as the model ({factor:.2f} x)"
                        met_guarded[name].append(ok)
                        status[name]["met"] = ok
                    else:
                        m = maes(reported, batch)
                        met_guarded[name].append(meets(m, best, per_frame))
                        status[name]["met"] = met_guarded[name][-1]
                        how = f"rescaled / {rescale:.2f}" if rescale is not None else f"as the model ({factor:.2f} x)"
                        guarded = (f"{how}{beyond}: {fmt(m[0])} / {fmt(m[1])} ({m[0] / best[0]:.2f} / "
                                   f"{m[1] / best[1]:.2f}{', met' if met_guarded[name][-1] else ''})")
                    cp = f" / {fmt(cal[2], 2)}" if per_frame else ""
                    cp_true = f" / {fmt(true[2], 2)}" if per_frame else ""
                    cells.append(f"{fmt(cal[0])} / {fmt(cal[1])}{cp} ({ratio[0]:.2f} / {ratio[1]:.2f}"
                                 f"{', met' if ok else ''}{interval}) | {fmt(true[0])} / {fmt(true[1])}{cp_true} | "
                                 f"{guarded}")
                for asked, used in as_track_reports(status).items():
                    met_reported[asked].append(used)
                width = fmt(measured) if measured else "n/a (true)"
                best_text = f"{fmt(best[0])} / {fmt(best[1])}" + (f" / {fmt(best[2], 2)}" if per_frame else "")
                lines.append(f"| {shape} | {sigma:g} | {n_photons:.0f} | {width} | {best_text} | "
                             + " | ".join(cells) + " |")
                print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    lines += ["", "Cells where each model meets the target (MAE D1 and D2 <= "
              f"{TARGET_RATIO} x the best classical" + (", changepoint MAE no worse" if per_frame else "") + "): "
              + "; ".join(f"`{m}` {sum(v)}/{len(v)}" for m, v in met.items()) + "."
              + ("" if per_frame else " Cells where the 90 % bootstrap interval (over the cell's tracks) of both "
                 "ratios lies at or under the target, so that the verdict does not hang on which tracks were drawn: "
                 + "; ".join(f"`{m}` {sum(v)}/{len(v)}" for m, v in robust.items()) + "."),
              "", "With the guard as `track` runs it over the cell's tracks (the acquisition check of the card; "
              "where it accepts the model and shows a bias beyond 5 %, the model's D divided by its factor, "
              "`estimation/rescale.py`; where it rejects the model the classical values are reported, not scored "
              "here): the target met as reported "
              + "; ".join(f"`{m}` in {sum(v)} of the {len(v)} cells where it is accepted"
                          for m, v in met_guarded.items()) + ".",
              "", "As `track` reports it with the bundled model asked for (the model switch by the card's range, the "
              "guard, its rescale, and the fallback from a rejected model to its model for any microscope, "
              "`estimation_fallback.py`; the classical values, where every model is rejected, count as not met): "
              + ("; ".join(f"`{m}` asked: the target met in {sum(1 for u in v if u[1])} of {len(v)} cells ("
                           + "reported: " + ", ".join(f"`{k}` in {sum(1 for u in v if u[0] == k)}"
                                                      for k in sorted({u[0] for u in v}))
                           + ")" for m, v in met_reported.items()) or "not computed (run a model with its alternative)")
              + ".",
              "", f"Run time {time.perf_counter() - t_all:.0f} s; load average at the end {load_average()}."]
    write_report(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
