"""Per-track intervals: calibration of the tables and their coverage on the robustness grid (issue 14, item 5).

Protocol "interval coverage", version 1 (defined here):

* Calibration (``--write-tables``): per estimator, :func:`training.interval_calibration.calibration_set`
  (seeds ``[5100, chunk]``, 250 tracks per chunk, never used for training or testing) cut to
  random lengths of 5-30 frames. ``aniso``: 6,000 tracks at the standard acquisition (the model
  is trained for it alone). ``aniso_wide``: 6,000 tracks, each chunk at an acquisition of the
  ``wide`` range. ``aniso_any`` (a model for PSF units): 6,000 tracks of its own training range
  (read from its card: ``psf_units_airy_px_mild`` for the model bundled on 2026-12-06), the
  acquisitions it sees after resampling. ``classical`` (the CVE tensor,
  the pipeline's fallback): 6,000 tracks of the ``wide`` range. Tables are written to
  ``src/napari_spt_diffusion/checkpoints/<name>.intervals.json``.
* Coverage: the guard benchmark's grid test sets (``bench_guard.py``: seed-aniso physics, PSF
  0.7-2.5 px x 250/1,000/4,000 photons, 1,000 tracks per cell, seeds 3025 + 10 x cell, the
  acquisition told) and the seed-aniso standard test set's first 2,000 tracks, each track cut to
  a random length of 5-30 frames (``default_rng([12, cell])``). Coverage = share of tracks whose
  truth (mean over the kept frames) lies inside the interval; theta only over tracks with true
  D1/D2 >= 1.5. Target (issue 14): within +- 3 points of 68 % and 95 % in every cell, for the
  estimator the pipeline reports there (the model where the guard accepts it over the cell's
  tracks, else the classical one). The model's D intervals are widened by the guard's 99 %
  interval of its bias factor over the cell's tracks, as the pipeline widens them over a movie's
  (``estimation.intervals.widen_for_bias``).

Command::

    .venv/bin/python benchmarks/bench_intervals.py [--write-tables [NAMES]] [--models aniso,aniso_wide] [--threads K]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _common import REPO, command_line, fmt, report_header, report_path, write_json, write_report
from bench_guard import BASE_SEEDS, SEED_STEP, cached_set, cell_acquisition, grid
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import guard
from napari_spt_diffusion.estimation.checkpoint import load_checkpoint, read_card
from napari_spt_diffusion.estimation.classical import cve_tensor_batch
from napari_spt_diffusion.estimation.intervals import apply_intervals, load_interval_table, widen_for_bias
from napari_spt_diffusion.training import interval_calibration as IC
from napari_spt_diffusion.training.acquisition_ranges import RANGES

PROTOCOL = "interval coverage"
PROTOCOL_VERSION = 1
CHECKPOINTS = REPO / "src" / "napari_spt_diffusion" / "checkpoints"
N_CALIBRATION = 6000
CUT_SEED = 12
LEVELS = (("68", 0.68), ("95", 0.95))


def table_path(name: str) -> Path:
    return CHECKPOINTS / f"{name}.intervals.json"


def write_tables(names: list[str]) -> dict[str, float]:
    """Calibrate and write the tables of ``names`` (bundled models or ``classical``); seconds per table."""
    seconds = {}
    base = Acquisition()
    for name in names:
        t0 = time.perf_counter()
        motion = motion_model(name)
        card = {} if name.startswith("classical") else read_card(name)
        trained = ((card.get("training") or {}).get("acquisition_range") or {}).get("name")
        if trained in RANGES and trained.startswith("psf_units"):
            # a model for PSF units sees every movie at its training PSF width: its own range
            chosen, text = RANGES[trained], f"range '{trained}' (its training range; it runs in PSF units)"
        elif name.startswith("classical") or "training_ranges" in card:
            chosen, text = RANGES["wide"], "range 'wide'"
        else:
            chosen, text = None, "standard (Acquisition())"
        cal = IC.calibration_set(motion, N_CALIBRATION, base, chosen)
        if name.startswith("classical"):
            est = IC.classical_estimates(cal)
        else:
            est = IC.model_estimates(load_checkpoint(name)[0], cal)
        desc = {"motion_model": motion, "acquisitions": text,
                "seeds": f"[{IC.INTERVAL_SEED}, chunk]", "lengths": "uniform 5-30 frames",
                "protocol": f"{PROTOCOL} v{PROTOCOL_VERSION} (benchmarks/bench_intervals.py)"}
        table = IC.calibrate(est, cal, name, desc)
        table_path(name).write_text(json.dumps(table.to_dict(), indent=1) + "\n", encoding="utf-8")
        seconds[name] = time.perf_counter() - t0
        print(f"table {name}: {seconds[name]:.0f} s", flush=True)
    return seconds


def motion_model(name: str) -> str:
    """The motion model an estimator's table and coverage use (``classical``: seed-aniso;
    ``classical_<motion>``: that motion, the classical fallback of a model of that motion)."""
    if name.startswith("classical"):
        return name.split("_", 1)[1] if "_" in name else "aniso"
    return str(read_card(name)["motion_model"])


def cut(batch, seed: list[int]) -> IC.CalibrationSet:
    rng = np.random.default_rng(seed)
    return IC.CalibrationSet([(batch, rng.integers(IC.MIN_LENGTH, batch.patches.shape[1] + 1, size=len(batch)))])


def coverage(table, est: dict[str, np.ndarray], cal: IC.CalibrationSet,
             bias: tuple[float, float] | None = None) -> dict[str, float]:
    """Coverage of each interval over the cell's tracks (``bias``: the guard's interval of the model's
    bias factor, which widens the model's D intervals as the pipeline does, ``widen_for_bias``)."""
    n_frames, loc_var, scale = cal.features()
    truth = cal.truth()
    iv = apply_intervals(table, est, n_frames, loc_var, float(scale[0]))
    if bias is not None:
        iv = widen_for_bias(iv, *bias)
    out = {}
    for key in ("D1", "D2"):
        t = truth[f"{key}_um2_s"]
        for label, _ in LEVELS:
            lo, hi = iv[f"{key}_lo{label}_um2_s"], iv[f"{key}_hi{label}_um2_s"]
            ok = np.isfinite(lo) & np.isfinite(hi)
            out[f"{key}_{label}"] = float(np.mean((t[ok] >= lo[ok]) & (t[ok] <= hi[ok]))) if ok.any() else np.nan
            out[f"{key}_n"] = int(ok.sum())
    ratio = truth["D1_um2_s"] / truth["D2_um2_s"]
    err = np.abs(np.mod(est["theta_deg"] - truth["theta_deg"], 180.0))
    err = np.minimum(err, 180.0 - err)
    sel = (ratio >= 1.5) & np.isfinite(err)
    for label, _ in LEVELS:
        w = iv[f"theta_pm{label}_deg"]
        out[f"theta_{label}"] = float(np.mean(err[sel] <= w[sel])) if sel.any() else np.nan
    return out


def guard_accepts(est, cal: IC.CalibrationSet, acq: Acquisition) -> tuple[bool, float, float, float]:
    """The guard's population test over the cell's tracks (as ``pipeline.guard_model``): accepted, the
    bias factor and its 99 % interval."""
    d_cve, n_disp = [], []
    for batch, lengths in cal.batches:
        pos = np.asarray(batch.positions_px, float).copy()
        pos[np.arange(pos.shape[1])[None, :] >= lengths[:, None]] = np.nan
        with np.errstate(all="ignore"):
            cve = cve_tensor_batch(pos, acq)
        d_cve.append(0.5 * np.trace(cve["tensor_px2_frame"], axis1=1, axis2=2))
        n_disp.append(cve["n_displacements"])
    d_model = acq.diffusion_to_px2_per_frame(0.5 * (est["D1_um2_s"] + est["D2_um2_s"]))
    _, loc_var, _ = cal.features()
    bias = guard.population_ratio(d_model, np.concatenate(d_cve), loc_var, np.concatenate(n_disp),
                                  blur=acq.blur_coefficient)
    return not guard.decide(bias).rejected, bias[0], bias[1], bias[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-tables", nargs="?", const="all", default=None, metavar="NAMES",
                        help="calibrate and write the interval tables first: of --models and classical (no value), "
                             "or of the comma-separated NAMES")
    parser.add_argument("--models", default="aniso,aniso_wide", help="comma-separated bundled sequence models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "bench_cache_guard")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    t_start = time.perf_counter()
    seconds = {}
    if args.write_tables is not None:
        names = [*models, "classical"] if args.write_tables == "all" else args.write_tables.split(",")
        seconds = write_tables(names)
    motions = sorted({motion_model(n) for n in models} - {"aniso"})
    names = [*models, "classical", *(f"classical_{m}" for m in motions)]
    tables = {name: load_interval_table(table_path(name)) for name in names if table_path(name).is_file()}
    modules = {name: load_checkpoint(name)[0] for name in models}
    rows = []
    for index, sigma, photons in grid(False):
        acq = cell_acquisition(sigma, photons)
        row = {"psf_sigma_px": sigma, "photons": photons}
        sets = {}
        for motion in sorted({"aniso", *(motion_model(m) for m in models)}):
            batch, _ = cached_set(motion, 1000, acq, BASE_SEEDS[motion] + SEED_STEP * index, args.cache,
                                  f"s{sigma:g}-p{photons:g}")
            sets[motion] = cut(batch, [CUT_SEED, index])
            key = "classical" if motion == "aniso" else f"classical@{motion}"
            table = tables.get(f"classical_{motion}", tables["classical"])  # as the pipeline picks it
            row[key] = coverage(table, IC.classical_estimates(sets[motion]), sets[motion])
        for name in models:
            cal = sets[motion_model(name)]
            est = IC.model_estimates(modules[name], cal)
            accepted, factor, low, high = guard_accepts(est, cal, acq)
            row[name] = {**coverage(tables[name], est, cal, bias=(low, high)), "guard_accepts": accepted,
                         "guard_factor": factor, "guard_low": low, "guard_high": high}
        rows.append(row)
        print(f"cell {sigma} px {photons:g}: done", flush=True)
    report = render(rows, models, seconds, time.perf_counter() - t_start, command_line("bench_intervals.py", argv))
    path = report_path("intervals", False)
    write_report(path, report)
    write_json(path.with_suffix(".json"), {"rows": rows, "seconds": seconds})
    print(f"wrote {path}")
    return 0


def _cov(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{100 * x:.1f}"


def render(rows: list[dict], models: list[str], seconds: dict, total_s: float, command: str) -> list[str]:
    lines = report_header("Per-track intervals: coverage on the robustness grid",
                          f"{PROTOCOL}, version {PROTOCOL_VERSION} (docstring of `benchmarks/bench_intervals.py`)",
                          command)
    lines += [f"- Total run time {total_s:.0f} s; table calibration "
              + (", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) or "not run (tables read from checkpoints/)"),
              "- Coverage in % of the cell's tracks (1,000, cut to 5-30 frames); target 68 +- 3 and 95 +- 3. "
              "'reported' = the estimator the pipeline reports in that cell (the model where the guard accepts it "
              "over the cell's tracks, else classical).", ""]
    classical_keys = sorted({k for r in rows for k in r if k.startswith("classical")})
    for name in [*models, *classical_keys]:
        title = name if "@" not in name else f"classical on {name.split('@')[1]} tracks"
        lines += [f"## {title}" + (" (on aniso tracks)" if name == "classical" else ""), "",
                  "| PSF sigma (px) | photons | guard | D1 68 / 95 | D2 68 / 95 | theta 68 / 95 |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            c = r[name]
            g = "-" if name.startswith("classical") else (f"accepts ({fmt(c['guard_factor'], 2)})" if c["guard_accepts"]
                                                  else f"rejects ({fmt(c['guard_factor'], 2)})")
            cov = " | ".join(f"{_cov(c[f'{k}_68'])} / {_cov(c[f'{k}_95'])}" for k in ("D1", "D2", "theta"))
            lines.append(f"| {r['psf_sigma_px']:g} | {r['photons']:g} | {g} | {cov} |")
        lines.append("")
    lines += ["## What the pipeline reports (per cell: the model where its guard accepts it, else classical)", ""]
    for name in models:
        worst = []
        fallback = "classical" if motion_model(name) == "aniso" else f"classical@{motion_model(name)}"
        for r in rows:
            c = r[name] if r[name]["guard_accepts"] else r[fallback]
            for key in ("D1", "D2", "theta"):
                for label, level in LEVELS:
                    v = c[f"{key}_{label}"]
                    if np.isfinite(v):
                        worst.append((abs(v - level), f"{key} {label} % at {r['psf_sigma_px']:g} px / "
                                                        f"{r['photons']:g} ph: {_cov(v)}"))
        worst.sort(reverse=True)
        inside = sum(1 for d, _ in worst if d <= 0.03)
        lines.append(f"- `{name}` as default: {inside} of {len(worst)} coverage figures within +- 3 points; "
                     f"worst: {'; '.join(w for _, w in worst[:4])}.")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
