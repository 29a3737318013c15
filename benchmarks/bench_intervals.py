"""Per-track intervals: calibration of the tables and their coverage on the robustness grid (issue 14, item 5).

Protocol "interval coverage", version 2 (defined here and in docs/protocols.md; v1 until 2026-12-07, whose
``aniso`` tables were calibrated on seed-aniso tracks alone):

* Calibration (``--write-tables``): per estimator, :func:`training.interval_calibration.calibration_set`
  (seeds ``[5100, chunk]``, 250 tracks per chunk, never used for training or testing) cut to
  random lengths of 5-30 frames. ``aniso``: 6,000 tracks at the standard acquisition (the model
  is trained for it alone). ``aniso_wide``: 6,000 tracks, each chunk at an acquisition of the
  ``wide`` range. ``aniso_any`` (a model for PSF units, its card's training range a ``psf_units*`` one): a
  table per stratum of the movie's PSF sigma (0.6-0.85-1.15-1.6-2.1-2.6 px; a width beyond takes the
  nearest), each of 4,000 tracks of the ``wide`` range with the sigma drawn in the stratum and 40 %
  Airy chunks, in movie pixels and run in PSF units as ``track`` runs it (``write_stratified_table``;
  until 2026-12-07 one table over its own training range, the acquisitions it sees after resampling,
  which covered the grid's widths unevenly). ``classical`` (the CVE tensor,
  the pipeline's fallback): 6,000 tracks of the ``wide`` range. Tables are written to
  ``src/napari_spt_diffusion/checkpoints/<name>.intervals.json``. The tables of the ``aniso`` motion
  (``aniso``, ``aniso_wide``, ``aniso_any``, ``classical``) are calibrated on twice as many tracks, half of
  them isotropic (``interval_calibration.ANISO_CALIBRATION_PRIOR``), the other half as above.
* Coverage: the guard benchmark's grid test sets (``bench_guard.py``: seed-aniso physics, PSF
  0.7-2.5 px x 250/1,000/4,000 photons, 1,000 tracks per cell, seeds 3025 + 10 x cell, the
  acquisition told) and the seed-aniso standard test set's first 2,000 tracks, each track cut to
  a random length of 5-30 frames (``default_rng([12, cell])``). Coverage = share of tracks whose
  truth (mean over the kept frames) lies inside the interval; theta only over tracks with true
  D1/D2 >= 1.5. Target (issue 14): within +- 3 points of 68 % and 95 % in every cell, for the
  estimator the pipeline reports there (the model where the guard accepts it over the cell's
  tracks, else the classical one; the guard decides as in the pipeline, with the acquisition check
  of the model's card: outside its training range a model is rejected unless its population test
  shows it unbiased). Where the guard accepts the model but shows it off by more than 5 %, the
  model's D1 and D2 are divided by its factor (``estimation.rescale``, as the pipeline does; the
  report marks the cell "rescaled"). The model's D intervals are widened by the guard's 99 %
  interval of its bias factor over the cell's tracks (after a rescale: the interval left), as the
  pipeline widens them over a movie's (``estimation.intervals.widen_for_bias``). A model the
  pipeline runs in units of the PSF in a cell (``psf_units.scale_for(card, acquisition, "auto")``
  != 1, e.g. ``aniso_any`` away from its training width) gets the cell's tracks made with patches
  large enough for the resampling
  (the same seeds and physics through ``make_samples(..., SampleSettings(patch_size=q))``, so its
  tracks are not the 11-px set's), resampled as ``track`` does (the width told).
* ``--free``: the same cells, seeds and cuts with free isotropic tracks (D log-uniform 0.05-3 um^2/s, the
  foreign-optics protocol's free range; ``FREE_PRIOR``) for the ``aniso`` models and the classical tensor;
  report ``intervals_free.md`` (D only: no track has a true D1 / D2 >= 1.5).
* The D intervals are then widened for linked tracks as the pipeline widens a track without the note
  ``edge``, ``gaps`` or ``crowded`` (``estimation.linked_widening``, the bundled factors of the group
  ``plain``: the grid's tracks have no neighbours, no gaps and no field border); ``--linked-widening
  none`` leaves them as the tables give them (reports ``intervals_tables_only.md``,
  ``intervals_free_tables_only.md``).

Command::

    .venv/bin/python benchmarks/bench_intervals.py [--write-tables [NAMES]] [--models aniso,aniso_wide] [--threads K]
        [--free] [--linked-widening bundled|none]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _common import REPO, command_line, fmt, report_header, report_path, write_json, write_report
from _guard_as_track import as_reported, classical_values, guard_decision, range_outside
from bench_guard import BASE_SEEDS, SEED_STEP, cached_set, cell_acquisition, grid
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import guard
from napari_spt_diffusion.estimation import psf_units as pu
from napari_spt_diffusion.estimation.checkpoint import load_checkpoint, read_card
from napari_spt_diffusion.estimation.intervals import (
    StratifiedIntervalTable,
    apply_intervals,
    load_interval_table,
    table_for_psf,
    widen_for_bias,
)
from napari_spt_diffusion.estimation.linked_widening import bundled_linked_widening, widen_linked
from napari_spt_diffusion.training import interval_calibration as IC
from napari_spt_diffusion.training.acquisition_ranges import RANGES
from napari_spt_diffusion.training.motion_priors import MotionPrior

PROTOCOL = "interval coverage"
PROTOCOL_VERSION = 2
CHECKPOINTS = REPO / "src" / "napari_spt_diffusion" / "checkpoints"
N_CALIBRATION = 6000
CUT_SEED = 12
#: ``--free``: every track isotropic, D log-uniform over the foreign-optics protocol's free range.
FREE_PRIOR = MotionPrior("free", broad_share=1.0, d1_range_um2_s=(0.05, 3.0), isotropic_share=1.0)
LEVELS = (("68", 0.68), ("95", 0.95))


def table_path(name: str) -> Path:
    return CHECKPOINTS / f"{name}.intervals.json"


#: PSF sigma strata (px) of a PSF-units model's table (a width beyond the ends takes the nearest stratum).
STRATA_EDGES_PX = (0.6, 0.85, 1.15, 1.6, 2.1, 2.6)
#: Calibration tracks per stratum, and the share of them rendered with a scalar Airy PSF (as in training).
N_PER_STRATUM = 4000
STRATA_AIRY_SHARE = 0.4


def write_stratified_table(name: str, card: dict, motion: str) -> StratifiedIntervalTable:
    """The table of a model run in PSF units, one stratum per PSF width range of ``STRATA_EDGES_PX``.

    Per stratum: ``N_PER_STRATUM`` tracks of the range 'wide' (movie pixels: signal, background,
    camera and exposure as for the classical table) with the PSF sigma drawn within the stratum and
    40 % of the chunks with a scalar Airy PSF, patches large enough for the resampling; the model runs
    as ``track --psf-units auto`` runs it with the width told (``psf_units.scale_for``). Seeds
    ``[5100 + 100 k, chunk]`` for stratum ``k = 1 ..``.
    """
    module = load_checkpoint(name)[0]
    prior = calibration_prior(motion)
    tables = []
    for k, (low, high) in enumerate(zip(STRATA_EDGES_PX[:-1], STRATA_EDGES_PX[1:]), start=1):
        chosen = dataclasses.replace(RANGES["wide"], psf_sigma_px=(low, high), airy_share=STRATA_AIRY_SHARE,
                                     standard_share=0.0)  # no chunk at the standard 1 px acquisition
        q = max(pu.source_patch_size(pu.psf_scale(pu.card_psf_sigma_px(card), w)) for w in (low, high))
        cal = IC.calibration_set(motion, calibration_tracks(N_PER_STRATUM, prior), Acquisition(), chosen,
                                 seed=IC.INTERVAL_SEED + 100 * k, patch_size=q, motion_prior=prior)
        est = IC.model_estimates(module, cal, scale=lambda acq: pu.scale_for(card, acq, "auto"))
        desc = {"motion_model": motion, "psf_sigma_px": f"{low:g}-{high:g}",
                "acquisitions": f"range 'wide' with the PSF sigma {low:g}-{high:g} px, {STRATA_AIRY_SHARE:.0%} "
                                "of the chunks Airy, run in PSF units as `track --psf-units auto`",
                "seeds": f"[{IC.INTERVAL_SEED + 100 * k}, chunk]", "lengths": "uniform 5-30 frames",
                "protocol": f"{PROTOCOL} v{PROTOCOL_VERSION} (benchmarks/bench_intervals.py)", **prior_text(prior)}
        tables.append(IC.calibrate(est, cal, name, desc))
        print(f"table {name}: stratum {low:g}-{high:g} px done", flush=True)
    return StratifiedIntervalTable(name, STRATA_EDGES_PX, tuple(tables), {
        "motion_model": motion, "acquisitions": "stratified by the movie's PSF sigma (px): "
        + ", ".join(f"{a:g}-{b:g}" for a, b in zip(STRATA_EDGES_PX[:-1], STRATA_EDGES_PX[1:])),
        "n_tracks": calibration_tracks(N_PER_STRATUM, prior) * (len(STRATA_EDGES_PX) - 1), **prior_text(prior),
        "protocol": f"{PROTOCOL} v{PROTOCOL_VERSION} (benchmarks/bench_intervals.py)"})


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
            # a model for PSF units: its errors depend on the movie's PSF width (the virtual pixel): strata
            stratified = write_stratified_table(name, card, motion)
            table_path(name).write_text(json.dumps(stratified.to_dict(), indent=1) + "\n", encoding="utf-8")
            seconds[name] = time.perf_counter() - t0
            print(f"table {name}: {seconds[name]:.0f} s", flush=True)
            continue
        if name.startswith("classical") or "training_ranges" in card:
            chosen, text = RANGES["wide"], "range 'wide'"
        else:
            chosen, text = None, "standard (Acquisition())"
        prior = calibration_prior(motion)
        cal = IC.calibration_set(motion, calibration_tracks(N_CALIBRATION, prior), base, chosen, motion_prior=prior)
        if name.startswith("classical"):
            est = IC.classical_estimates(cal)
        else:
            est = IC.model_estimates(load_checkpoint(name)[0], cal)
        desc = {"motion_model": motion, "acquisitions": text,
                "seeds": f"[{IC.INTERVAL_SEED}, chunk]", "lengths": "uniform 5-30 frames",
                "protocol": f"{PROTOCOL} v{PROTOCOL_VERSION} (benchmarks/bench_intervals.py)", **prior_text(prior)}
        table = IC.calibrate(est, cal, name, desc)
        table_path(name).write_text(json.dumps(table.to_dict(), indent=1) + "\n", encoding="utf-8")
        seconds[name] = time.perf_counter() - t0
        print(f"table {name}: {seconds[name]:.0f} s", flush=True)
    return seconds


def calibration_prior(motion: str) -> MotionPrior | None:
    """The tensors of a table's calibration tracks: ``aniso``: half isotropic
    (``interval_calibration.ANISO_CALIBRATION_PRIOR``); other motions their own (``None``)."""
    return IC.ANISO_CALIBRATION_PRIOR if motion == "aniso" else None


def calibration_tracks(n: int, prior: MotionPrior | None) -> int:
    """Calibration tracks: twice ``n`` with the half-isotropic prior, so that the anisotropic tracks, the only ones
    theta is calibrated on, keep their number."""
    return 2 * n if prior is not None else n


def prior_text(prior: MotionPrior | None) -> dict[str, str]:
    """The table's ``calibration`` entry naming its motion prior (none for a motion's own)."""
    if prior is None:
        return {}
    low, high = prior.d1_range_um2_s
    share = prior.broad_share * prior.isotropic_share
    return {"motion_prior": f"{prior.name}: {share:.0%} of the tracks isotropic with D log-uniform over "
                            f"{low:g}-{high:g} um^2/s, the rest as the motion model draws them"}


def motion_model(name: str) -> str:
    """The motion model an estimator's table and coverage use (``classical``: seed-aniso;
    ``classical_<motion>``: that motion, the classical fallback of a model of that motion)."""
    if name.startswith("classical"):
        return name.split("_", 1)[1] if "_" in name else "aniso"
    return str(read_card(name)["motion_model"])


#: The widening for linked tracks the coverage applies (``--linked-widening``; empty: none).
LINKED_WIDENING: list = []


def cut(batch, seed: list[int]) -> IC.CalibrationSet:
    rng = np.random.default_rng(seed)
    return IC.CalibrationSet([(batch, rng.integers(IC.MIN_LENGTH, batch.patches.shape[1] + 1, size=len(batch)))])


def coverage(table, est: dict[str, np.ndarray], cal: IC.CalibrationSet,
             bias: tuple[float, float] | None = None, classical: tuple | None = None) -> dict[str, float]:
    """Coverage of each interval over the cell's tracks (``bias``: the guard's interval of the model's
    bias factor, which widens the model's D intervals as the pipeline does, ``widen_for_bias``; ``classical``:
    ``(outside, classical table, classical estimates)``, the tracks outside the model's range of D, which the
    pipeline reports with the classical estimates and intervals)."""
    n_frames, loc_var, scale = cal.features()
    truth = cal.truth()
    iv = apply_intervals(table, est, n_frames, loc_var, float(scale[0]))
    if bias is not None:
        iv = widen_for_bias(iv, *bias)
    if classical is not None and np.any(classical[0]):
        outside, table_c, est_c = classical
        iv_c = apply_intervals(table_c, est_c, n_frames, loc_var, float(scale[0]))
        iv = {k: np.where(outside, np.asarray(iv_c[k], float), np.asarray(v, float)) for k, v in iv.items()}
        est = {k: np.where(outside, est_c[k], est[k]) for k in ("D1_um2_s", "D2_um2_s", "theta_deg")}
    if LINKED_WIDENING:  # as the pipeline widens a track of the group plain (no edge, gaps or crowded note)
        frame = pd.DataFrame({**{k: np.asarray(v, float) for k, v in iv.items()},
                              "D1_um2_s": est["D1_um2_s"], "D2_um2_s": est["D2_um2_s"], "notes": ""})
        frame = widen_linked(frame, LINKED_WIDENING[0])
        iv = {k: frame[k].to_numpy(float) for k in iv}
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


def cell_guard(est, cal: IC.CalibrationSet, acq: Acquisition, card: dict,
               scale: float) -> tuple[guard.GuardDecision, np.ndarray, dict[str, np.ndarray]]:
    """The guard's decision over the cell's tracks (cut to their lengths) inside the model's range of D, as
    ``track`` makes it, ``(N,)`` the tracks outside that range, and what ``track`` reports for them
    (``_guard_as_track.classical_values``)."""
    positions = []
    for batch, lengths in cal.batches:
        pos = np.asarray(batch.positions_px, float).copy()
        pos[np.arange(pos.shape[1])[None, :] >= lengths[:, None]] = np.nan
        positions.append(pos)
    positions = np.concatenate(positions)
    d_mean = 0.5 * (est["D1_um2_s"] + est["D2_um2_s"])
    _, loc_var, _ = cal.features()
    sides, left_out = range_outside(positions, loc_var, acq, card, scale, d_mean)
    decision = guard_decision(acq.diffusion_to_px2_per_frame(d_mean), positions, loc_var, acq, card, scale,
                              left_out)[0]
    return decision, sides != 0, classical_values(positions, acq, sides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-tables", nargs="?", const="all", default=None, metavar="NAMES",
                        help="calibrate and write the interval tables first: of --models and classical (no value), "
                             "or of the comma-separated NAMES")
    parser.add_argument("--models", default="aniso,aniso_wide", help="comma-separated bundled sequence models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "bench_cache_guard")
    parser.add_argument("--free", action="store_true",
                        help="free isotropic diffusion in every cell (D log-uniform 0.05-3 um^2/s, as the "
                             "foreign-optics protocol's free movies) instead of seed-aniso tracks; aniso models only; "
                             "report intervals_free.md")
    parser.add_argument("--linked-widening", choices=("bundled", "none"), default="bundled",
                        help="widen the D intervals for linked tracks as the pipeline does (bundled, the default: the "
                             "factors of the group plain) or not (none: the tables alone; report "
                             "intervals[_free]_tables_only.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    LINKED_WIDENING.clear()
    if args.linked_widening == "bundled" and bundled_linked_widening() is not None:
        LINKED_WIDENING.append(bundled_linked_widening())
    models = args.models.split(",")
    test_prior = FREE_PRIOR if args.free else None  # the test tracks' tensors (None: the motion model's own)
    if test_prior is not None and any(motion_model(m) != "aniso" for m in models):
        parser.error("--free measures the aniso models only (free diffusion is not a binding or two-state movie)")
    t_start = time.perf_counter()
    seconds = {}
    if args.write_tables is not None:
        names = [*models, "classical"] if args.write_tables == "all" else args.write_tables.split(",")
        seconds = write_tables(names)
    motions = sorted({motion_model(n) for n in models} - {"aniso"})
    names = [*models, "classical", *(f"classical_{m}" for m in motions)]
    tables = {name: load_interval_table(table_path(name)) for name in names if table_path(name).is_file()}
    loaded = {name: load_checkpoint(name) for name in models}
    modules = {name: module for name, (module, _) in loaded.items()}
    cards = {name: card for name, (_, card) in loaded.items()}
    rows = []
    for index, sigma, photons in grid(False):
        acq = cell_acquisition(sigma, photons)
        row = {"psf_sigma_px": sigma, "photons": photons}
        sets = {}
        for motion in sorted({"aniso", *(motion_model(m) for m in models)}):
            batch, _ = cached_set(motion, 1000, acq, BASE_SEEDS[motion] + SEED_STEP * index, args.cache,
                                  f"s{sigma:g}-p{photons:g}", motion_prior=test_prior)
            sets[motion] = cut(batch, [CUT_SEED, index])
            key = "classical" if motion == "aniso" else f"classical@{motion}"
            table = tables.get(f"classical_{motion}", tables["classical"])  # as the pipeline picks it
            row[key] = coverage(table, IC.classical_estimates(sets[motion]), sets[motion])
        for name in models:
            scale = pu.scale_for(cards[name], acq, "auto")  # as `track --psf-units auto`, the width told
            if scale == 1.0:
                cal = sets[motion_model(name)]
            else:
                q = pu.source_patch_size(scale)
                batch, _ = cached_set(motion_model(name), 1000, acq, BASE_SEEDS[motion_model(name)] + SEED_STEP * index,
                                      args.cache, f"s{sigma:g}-p{photons:g}", patch_size=q, motion_prior=test_prior)
                cal = cut(batch, [CUT_SEED, index])
            est = IC.model_estimates(modules[name], cal, scale=scale)
            decision, outside, for_outside = cell_guard(est, cal, acq, cards[name], scale)
            est, rescaled_by, left = as_reported(est, decision)
            motion = motion_model(name)
            classical = (outside, tables.get(f"classical_{motion}", tables["classical"]), for_outside)
            row[name] = {**coverage(table_for_psf(tables[name], sigma), est, cal, bias=left, classical=classical),
                         "n_beyond_range": int(outside.sum()),
                         "guard_accepts": not decision.rejected, "guard_factor": decision.bias_factor,
                         "guard_low": decision.bias_low, "guard_high": decision.bias_high, "rescaled_by": rescaled_by,
                         "psf_scale": scale}
        rows.append(row)
        print(f"cell {sigma} px {photons:g}: done", flush=True)
    report = render(rows, models, seconds, time.perf_counter() - t_start, command_line("bench_intervals.py", argv),
                    free=args.free)
    path = report_path(("intervals_free" if args.free else "intervals")
                       + ("" if args.linked_widening == "bundled" else "_tables_only"), False)
    write_report(path, report)
    write_json(path.with_suffix(".json"), {"rows": rows, "seconds": seconds})
    print(f"wrote {path}")
    return 0


def _cov(x: float) -> str:
    return "-" if not np.isfinite(x) else f"{100 * x:.1f}"


def render(rows: list[dict], models: list[str], seconds: dict, total_s: float, command: str,
           free: bool = False) -> list[str]:
    title = "Per-track intervals: coverage on the robustness grid"
    widening = (f"yes, factors {LINKED_WIDENING[0].factors['plain']}" if LINKED_WIDENING
                else "no (the tables alone)")
    lines = report_header(title + (", free isotropic diffusion" if free else ""),
                          f"{PROTOCOL}, version {PROTOCOL_VERSION} (docstring of `benchmarks/bench_intervals.py`)",
                          command)
    lines += [f"- Total run time {total_s:.0f} s; table calibration "
              + (", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) or "not run (tables read from checkpoints/)"),
              "- Coverage in % of the cell's tracks (1,000, cut to 5-30 frames); target 68 +- 3 and 95 +- 3. "
              "'reported' = the estimator the pipeline reports in that cell (the model where the guard accepts it "
              "over the cell's tracks, else classical).",
              "- D intervals widened for linked tracks as the pipeline widens a track of the group plain "
              f"(`estimation/linked_widening.py`): {widening}."]
    if free:
        lines += ["- Tracks: free isotropic diffusion, D log-uniform 0.05-3 um^2/s (`--free`; the seed-aniso "
                  "protocol's acquisition, seeds and lengths otherwise): theta has no truth (no track with D1 / D2 >= "
                  "1.5), so only D is scored."]
    lines.append("")
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
            if c.get("rescaled_by"):
                g += ", rescaled"
            if c.get("n_beyond_range") and c["guard_accepts"]:
                g += f", {c['n_beyond_range']} tracks beyond its range of D (classical)"
            if c.get("psf_scale", 1.0) != 1.0:
                g += f"; PSF units, s = {c['psf_scale']:.2f}"
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
