"""Model guard rates: false alarms on unbiased movies, detection of biased ones (issue 14, item 3).

Protocol "guard rates", version 1 (defined here; the grid is the acquisition grid of
docs/protocols.md "robustness grid", with the acquisition *told*, not calibrated):

* Test sets: per grid cell ``make_samples(model, 1000, n_frames=30, acquisition, seed)`` (the
  pipeline's spot path: localized positions, patches, localization precision). Grid: PSF
  sigma 0.7 / 1.0 / 1.5 / 2.0 / 2.5 px (``psf_sigma_nm = 100 sigma`` at 100 nm pixels) x
  250 / 1,000 / 4,000 signal photons per frame, everything else ``Acquisition()``. Cell index
  ``c = 3 i_sigma + i_photons`` (0-14); seed ``3025 + 10 c`` (aniso), ``3026 + 10 c`` (binding),
  ``3027 + 10 c`` (twostate): the robustness-grid test seeds, never used for training.
* Per movie, the tracks the pipeline's guard leaves out (``estimation.model_range``: those whose CVE and
  median-step D show them outside the range of mean D the model was trained on and, where more lie beyond it
  than chance explains, those the model reads near that edge; ``left_out``), since 2026-12-07.
* Per track, the guard's inputs exactly as ``pipeline.guard_model`` builds them: the bundled
  (single-acquisition) model's mean diffusivity ``(D1 + D2) / 2`` (mean over frames for a
  pointwise model, which is the trace of ``mean_tensor``) in px^2/frame; the unclipped CVE
  ``0.5 trace(cve_tensor_batch(positions)["tensor_px2_frame"])``; the mean squared
  localization precision (px^2) and the number of finite displacements. The model runs through
  ``_common.run_model`` (one 30-frame window per track: the same numbers as ``Estimator``).
* True bias of the model in a cell: ``sum(model) / sum(truth)`` of the per-track mean
  diffusivities (truth: the mean over frames of the labels' ``(D1 + D2) / 2``), and the median of
  the per-track ratios. Cells: *unbiased* when the ratio of sums is within 1 +- 10 %,
  *biased* when it is beyond 1 +- 25 % (below 0.75 or above 1.25), else *between*.
* Movies: for N = 30, 100, 300 tracks, 200 subsets of N distinct tracks of the cell
  (``numpy.random.default_rng([11, cell, N])``). Each movie: ``guard.population_ratio`` (its default
  bootstrap seed, as the pipeline) and ``guard.decide`` without acquisition messages (the
  population test alone), and with the messages of ``estimator.check_acquisition(card, acq)``
  (what ``spt-diffusion track`` would decide when told the true acquisition).
* Rates, per model and N: false alarms = rejected movies / movies over the unbiased cells
  (target <= 1 %); detection = rejected movies / movies over the biased cells (target >= 95 %).
  Intervals: Wilson 95 % over movies, treating them as independent (they are not: the movies
  of a cell share its 1,000 tracks, and cells are few), so they are a lower bound on the
  uncertainty.

``--quick``: 200 tracks per cell, cells (1.0 px, 1,000), (1.5 px, 1,000), (2.0 px, 250) only,
50 movies, sizes up to the cell's track count. Test sets are cached in ``--cache``
(``runs/bench_cache_guard/``), one ``.npz`` per model, cell, seed and size.

Command::

    .venv/bin/python benchmarks/bench_guard.py [--quick] [--models aniso,binding,twostate] [--threads K]
        [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import (
    REPO,
    command_line,
    fmt,
    report_header,
    report_path,
    run_model,
    seed_test_set,
    write_json,
    write_report,
)
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import guard, model_range
from napari_spt_diffusion.estimation.checkpoint import describe_training, load_checkpoint, read_card
from napari_spt_diffusion.estimation.classical import cve_tensor_batch
from napari_spt_diffusion.estimation.estimator import check_acquisition

PROTOCOL = "guard rates"
PROTOCOL_VERSION = 1
#: First seed per model; cell ``c`` uses ``seed + 10 c``.
BASE_SEEDS = {"aniso": 3025, "binding": 3026, "twostate": 3027}
SEED_STEP = 10
SIGMAS_PX = (0.7, 1.0, 1.5, 2.0, 2.5)
PHOTONS = (250.0, 1000.0, 4000.0)
PIXEL_NM = 100.0
N_FRAMES = 30
SIZES = (30, 100, 300)
#: Seed of the movie subsets (with the cell index and N).
SUBSET_SEED = 11
#: Cell classes by the true bias (ratio of sums): unbiased within 1 +- UNBIASED, biased beyond 1 +- BIASED.
UNBIASED = 0.10
BIASED = 0.25
FULL = {"tracks": 1000, "movies": 200}
QUICK = {"tracks": 200, "movies": 50, "cells": ((1.0, 1000.0), (1.5, 1000.0), (2.0, 250.0))}
TARGET_FALSE_ALARMS = 0.01
TARGET_DETECTION = 0.95


# ---------------------------------------------------------------------------- grid
def grid(quick: bool) -> list[tuple[int, float, float]]:
    """``(cell index, PSF sigma px, photons)`` of the cells to run."""
    cells = [(3 * i + j, s, p) for i, s in enumerate(SIGMAS_PX) for j, p in enumerate(PHOTONS)]
    if quick:
        cells = [c for c in cells if (c[1], c[2]) in QUICK["cells"]]
    return cells


def cell_acquisition(sigma_px: float, photons: float) -> Acquisition:
    return Acquisition(pixel_size_nm=PIXEL_NM, psf_sigma_nm=sigma_px * PIXEL_NM, signal_photons=photons)


def classify(true_bias: float) -> str:
    """``unbiased`` / ``biased`` / ``between`` by the true bias factor (ratio of sums)."""
    if not math.isfinite(true_bias):
        return "between"
    if 1.0 - UNBIASED <= true_bias <= 1.0 + UNBIASED:
        return "unbiased"
    if true_bias < 1.0 - BIASED or true_bias > 1.0 + BIASED:
        return "biased"
    return "between"


def cached_set(model: str, n: int, acq: Acquisition, seed: int, cache: Path | None, label: str,
               patch_size: int = 11, motion_prior=None):
    """The cell's test set (``_common.seed_test_set``), kept in ``cache`` as one ``.npz``.

    ``patch_size`` other than 11: the same protocol with larger patches (for models run in PSF
    units, ``psf_units.source_patch_size``), made by ``make_samples`` with that patch size.
    ``motion_prior`` (``training.motion_priors.MotionPrior``, ``aniso`` only): the tracks' tensors drawn from
    it (``make_samples``) instead of the motion model's own.
    """
    from napari_spt_diffusion.training.samples import SampleSettings, load_samples, make_samples, save_samples

    suffix = "" if patch_size == 11 else f"-q{patch_size}"
    if motion_prior is not None:  # the prior's parameters in the name: a changed prior makes a new set
        low, high = motion_prior.d1_range_um2_s
        suffix += (f"-{motion_prior.name}-{low:g}-{high:g}-{motion_prior.broad_share:g}-"
                   f"{motion_prior.isotropic_share:g}")
    path = None if cache is None else cache / f"guard-{model}-{seed}-{label}-n{n}{suffix}.npz"
    if path is not None and path.exists():
        batch = load_samples(path)
        if batch.acquisition == acq and len(batch) == n:
            return batch, True
    if patch_size == 11 and motion_prior is None:
        batch, _ = seed_test_set(model, n, acq, cache=None, seed=seed)
    else:
        batch = make_samples(model, n, n_frames=30, acquisition=acq, seed=seed,
                             settings=SampleSettings(patch_size=patch_size, motion_prior=motion_prior))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_samples(path, batch, overwrite=True)
    return batch, False


# ---------------------------------------------------------------------- per track
def track_inputs(module, batch, acq: Acquisition) -> dict[str, np.ndarray]:
    """The guard's per-track inputs (as ``pipeline.guard_model``) and the truth, px^2/frame."""
    pred, rate = run_model(module, batch, acq)
    d_model = 0.5 * (np.asarray(pred["D1_um2_s"], float) + np.asarray(pred["D2_um2_s"], float))
    if d_model.ndim == 2:  # pointwise model: the track's value is the trace of the time-averaged tensor
        d_model = np.nanmean(d_model, axis=1)
    labels = 0.5 * (batch.D1_um2_s.astype(float) + batch.D2_um2_s.astype(float))
    d_true = np.mean(labels, axis=1)
    # the displacements span the intervals after frames 0 .. T-2: the last frame's label moves nothing
    d_intervals = np.mean(labels[:, :-1], axis=1)
    pos = np.asarray(batch.positions_px, float)
    with np.errstate(all="ignore"):
        cve = cve_tensor_batch(pos, acq)
    d_cve_px = 0.5 * np.trace(cve["tensor_px2_frame"], axis1=1, axis2=2)
    steps = np.all(np.isfinite(np.diff(pos, axis=1)), axis=2).sum(axis=1)
    prec_px = np.asarray(batch.loc_precision_nm, float) / acq.pixel_size_nm
    with np.errstate(all="ignore"):
        loc_var = np.nanmean(prec_px**2, axis=1)
    return {"model": acq.diffusion_to_px2_per_frame(d_model), "true": acq.diffusion_to_px2_per_frame(d_true),
            "true_intervals": acq.diffusion_to_px2_per_frame(d_intervals),
            "cve": d_cve_px, "loc_var": loc_var, "n_disp": steps.astype(float), "tracks_per_s": np.array(rate),
            "d_median": model_range.median_step_d_px2(pos, loc_var, acq.blur_coefficient)}


def left_out(x: dict[str, np.ndarray], idx: np.ndarray, acq: Acquisition, card: dict) -> np.ndarray:
    """``(len(idx),)`` the movie's tracks the pipeline's guard leaves out: those the range check shows outside the
    model's range of D and, where more lie beyond than chance explains, those the model reads near that edge
    (``estimation.model_range``; the model at its own pixels, as this benchmark runs it)."""
    check = model_range.check_tracks(idx, x["cve"][idx], x["loc_var"][idx], x["n_disp"][idx], acq, card, 1.0,
                                     d_median_px2=x["d_median"][idx])
    if check is None or not check.outside:
        return np.zeros(len(idx), bool)
    flagged = np.isin(idx, list(check.outside))
    model_um2 = acq.diffusion_to_um2_s(x["model"][idx])
    left = model_range.guard_left_out(check, dict(zip(idx.tolist(), model_um2.tolist(), strict=True)),
                                      population(x, idx[~flagged], acq))
    return np.isin(idx, list(left))


def population(x: dict[str, np.ndarray], idx: np.ndarray | None, acq: Acquisition, reference: str = "cve"):
    """``guard.population_ratio`` of the tracks ``idx`` (all: None) against ``reference``."""
    sel = slice(None) if idx is None else idx
    return guard.population_ratio(x["model"][sel], x[reference][sel], x["loc_var"][sel], x["n_disp"][sel],
                                  blur=acq.blur_coefficient)


def unclipped(x: dict[str, np.ndarray], acq: Acquisition) -> float:
    """The guard's factor over all tracks with its Huber clipping switched off (a diagnostic only)."""
    saved = guard.HUBER_CLIP
    guard.HUBER_CLIP = math.inf
    try:
        return population(x, None, acq)[0]
    finally:
        guard.HUBER_CLIP = saved


def ratio_of_sums(num: np.ndarray, den: np.ndarray) -> float:
    ok = np.isfinite(num) & np.isfinite(den)
    return float(np.sum(num[ok]) / np.sum(den[ok])) if ok.any() else float("nan")


def median_ratio(num: np.ndarray, den: np.ndarray) -> float:
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    return float(np.median(num[ok] / den[ok])) if ok.any() else float("nan")


# --------------------------------------------------------------------------- cells
def run_cell(name: str, module, card: dict, cell: tuple[int, float, float], n_tracks: int, n_movies: int,
             cache: Path | None) -> dict[str, Any]:
    """One model on one grid cell: its true bias, the guard over all tracks, and the movie rejection rates."""
    index, sigma, photons = cell
    acq = cell_acquisition(sigma, photons)
    seed = BASE_SEEDS[name] + SEED_STEP * index
    t0 = time.perf_counter()
    batch, cached = cached_set(name, n_tracks, acq, seed, cache, f"s{sigma:g}-p{photons:g}")
    t_set = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = track_inputs(module, batch, acq)
    t_model = time.perf_counter() - t0
    messages = check_acquisition(card, acq)
    true_sum = ratio_of_sums(x["model"], x["true"])
    whole = population(x, None, acq)
    whole_truth = population(x, None, acq, reference="true")
    whole_intervals = population(x, None, acq, reference="true_intervals")
    whole_unclipped = unclipped(x, acq)
    t0 = time.perf_counter()
    sizes = {}
    for size in SIZES:
        if size > len(batch):
            continue
        rng = np.random.default_rng([SUBSET_SEED, index, size])
        rej_pop = rej_full = unmeasured = n_left_out = 0
        factors = []
        for _ in range(n_movies):
            idx = rng.choice(len(batch), size=size, replace=False)
            out = left_out(x, idx, acq, card)
            n_left_out += int(out.sum())
            bias = population(x, idx[~out], acq)
            pop = guard.decide(bias, (), model_name=name)
            full = guard.decide(bias, messages, model_name=name)
            rej_pop += pop.rejected
            rej_full += full.rejected
            unmeasured += not (bias[3] >= guard.MIN_TRACKS and math.isfinite(bias[1]))
            factors.append(bias[0])
        f = np.asarray(factors, float)
        sizes[str(size)] = {
            "movies": n_movies, "rejected_population": rej_pop, "rejected_with_acquisition_check": rej_full,
            "rate_population": rej_pop / n_movies, "rate_with_acquisition_check": rej_full / n_movies,
            "not_measured": unmeasured, "left_out_per_movie": n_left_out / n_movies,
            "bias_factor_median": float(np.nanmedian(f)),
            "bias_factor_p05": float(np.nanquantile(f, 0.05)), "bias_factor_p95": float(np.nanquantile(f, 0.95)),
        }
    t_guard = time.perf_counter() - t0
    return {
        "cell": index, "psf_sigma_px": sigma, "signal_photons": photons, "seed": seed, "n_tracks": len(batch),
        "true_bias_sum": true_sum, "true_bias_median": median_ratio(x["model"], x["true"]),
        "cve_over_truth_sum": ratio_of_sums(x["cve"], x["true"]),
        "cve_over_truth_median": median_ratio(x["cve"], x["true"]),
        "guard_all_tracks": {"bias_factor": whole[0], "low": whole[1], "high": whole[2], "n": whole[3]},
        "guard_unclipped": whole_unclipped, "guard_weighted_true_bias": whole_truth[0],
        "guard_weighted_true_bias_intervals": whole_intervals[0],
        "cve_over_interval_truth_sum": ratio_of_sums(x["cve"], x["true_intervals"]),
        "mean_loc_precision_px": float(np.sqrt(np.nanmean(x["loc_var"]))),
        "class": classify(true_sum), "acquisition_messages": messages, "sizes": sizes,
        "seconds": {"test_set": t_set, "test_set_cached": cached, "model": t_model, "guard": t_guard},
    }


# ------------------------------------------------------------------------- summary
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1.0 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def pooled(cells: list[dict], cls: str, size: str, key: str, in_range: bool | None = None) -> dict[str, Any]:
    """Rejections over the cells of class ``cls`` (optionally only in / out of the card's range)."""
    chosen = [c for c in cells if c["class"] == cls and size in c["sizes"]
              and (in_range is None or (not c["acquisition_messages"]) == in_range)]
    k = sum(c["sizes"][size][key] for c in chosen)
    n = sum(c["sizes"][size]["movies"] for c in chosen)
    rates = [c["sizes"][size][key] / c["sizes"][size]["movies"] for c in chosen]
    low, high = wilson(k, n)
    return {"cells": len(chosen), "rejected": k, "movies": n, "rate": k / n if n else float("nan"), "low": low,
            "high": high, "min_cell_rate": min(rates) if rates else float("nan"),
            "max_cell_rate": max(rates) if rates else float("nan")}


def summarize(cells: list[dict]) -> dict[str, dict]:
    out = {}
    for size in (str(s) for s in SIZES):
        if not any(size in c["sizes"] for c in cells):
            continue
        out[size] = {
            "false_alarms_population": pooled(cells, "unbiased", size, "rejected_population"),
            "detection_population": pooled(cells, "biased", size, "rejected_population"),
            "between_population": pooled(cells, "between", size, "rejected_population"),
            "false_alarms_in_range": pooled(cells, "unbiased", size, "rejected_with_acquisition_check", True),
            "false_alarms_with_acquisition_check": pooled(cells, "unbiased", size, "rejected_with_acquisition_check"),
            "detection_with_acquisition_check": pooled(cells, "biased", size, "rejected_with_acquisition_check"),
            "biased_in_range_population": pooled(cells, "biased", size, "rejected_population", True),
        }
    return out


# -------------------------------------------------------------------------- report
def pct(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f} %"


def rate_cell(p: dict) -> str:
    if not p["movies"]:
        return "no cell"
    return (f"{pct(p['rate'])} ({p['rejected']}/{p['movies']}; 95 % {pct(p['low'])}-{pct(p['high'])}; "
            f"{p['cells']} cell(s), per cell {pct(p['min_cell_rate'], 0)}-{pct(p['max_cell_rate'], 0)})")


def verdict(p: dict, target: float, higher: bool) -> str:
    if not p["movies"]:
        return "not measured"
    ok = p["rate"] >= target if higher else p["rate"] <= target
    return "meets" if ok else "misses"


def summary_lines(name: str, summary: dict) -> list[str]:
    lines = [f"### `{name}`: rates", "",
             "| N tracks | false alarms, unbiased cells (population test; target <= 1 %) | "
             "detection, biased cells (population test; target >= 95 %) | rejected, 'between' cells | "
             "with the acquisition check: false alarms, unbiased cells | with the acquisition check: detection, "
             "biased cells |", "|---|---|---|---|---|---|"]
    for size, s in summary.items():
        fa, det = s["false_alarms_population"], s["detection_population"]
        lines.append(f"| {size} | {rate_cell(fa)}: {verdict(fa, TARGET_FALSE_ALARMS, False)} | "
                     f"{rate_cell(det)}: {verdict(det, TARGET_DETECTION, True)} | {rate_cell(s['between_population'])} "
                     f"| {rate_cell(s['false_alarms_with_acquisition_check'])} | "
                     f"{rate_cell(s['detection_with_acquisition_check'])} |")
    lines.append("")
    for size, s in summary.items():
        ir = s["false_alarms_in_range"]
        if ir["movies"]:
            lines.append(f"- N = {size}: false alarms over the unbiased cells inside the card's range (no acquisition "
                         f"message; the pipeline decides on the population test alone there): {rate_cell(ir)}.")
        bir = s["biased_in_range_population"]
        if bir["movies"]:
            lines.append(f"- N = {size}: detection over the biased cells inside the card's range (only the "
                         f"population test can catch these): {rate_cell(bir)}.")
    return lines


def cell_table(cells: list[dict]) -> list[str]:
    sizes = [str(s) for s in SIZES if any(str(s) in c["sizes"] for c in cells)]
    head = ("| PSF sigma (px) | photons | seed | true bias, sum / median | CVE / truth, sum / median | "
            "guard over all tracks (99 % interval) | guard unclipped | "
            "guard-weighted true bias, frame labels / intervals | class | in card's range | "
            + " | ".join(f"rejected N={s}" for s in sizes) + " | "
            + " | ".join(f"with acq. check N={s}" for s in sizes) + " |")
    lines = [head, "|" + "---|" * (10 + 2 * len(sizes))]
    for c in cells:
        g = c["guard_all_tracks"]
        rej = " | ".join(pct(c["sizes"][s]["rate_population"]) for s in sizes)
        full = " | ".join(pct(c["sizes"][s]["rate_with_acquisition_check"]) for s in sizes)
        lines.append(
            f"| {c['psf_sigma_px']:g} | {c['signal_photons']:g} | {c['seed']} | {fmt(c['true_bias_sum'], 2)} / "
            f"{fmt(c['true_bias_median'], 2)} | {fmt(c['cve_over_truth_sum'], 2)} / "
            f"{fmt(c['cve_over_truth_median'], 2)} | {fmt(g['bias_factor'], 2)} ({fmt(g['low'], 2)}-"
            f"{fmt(g['high'], 2)}) | {fmt(c['guard_unclipped'], 2)} | {fmt(c['guard_weighted_true_bias'], 2)} / "
            f"{fmt(c['guard_weighted_true_bias_intervals'], 2)} | {c['class']} | "
            f"{'yes' if not c['acquisition_messages'] else 'no'} | {rej} | {full} |")
    return lines


def movie_spread_lines(cells: list[dict]) -> list[str]:
    sizes = [str(s) for s in SIZES if any(str(s) in c["sizes"] for c in cells)]
    lines = ["Guard bias factor (model / CVE) of the movies: median [5th-95th percentile] per N.", "",
             "| PSF sigma (px) | photons | true bias (sum) | " + " | ".join(f"N={s}" for s in sizes) + " |",
             "|" + "---|" * (3 + len(sizes))]
    for c in cells:
        vals = " | ".join(f"{fmt(c['sizes'][s]['bias_factor_median'], 2)} [{fmt(c['sizes'][s]['bias_factor_p05'], 2)}"
                          f"-{fmt(c['sizes'][s]['bias_factor_p95'], 2)}]" for s in sizes)
        lines.append(f"| {c['psf_sigma_px']:g} | {c['signal_photons']:g} | {fmt(c['true_bias_sum'], 2)} | {vals} |")
    return lines


def reading_lines(cells: list[dict]) -> list[str]:
    """Where the guard's factor stands against the truth, and the cells that miss a target."""
    tol = guard.DEFAULT_TOLERANCE
    ratio = {k: float(np.median([c["guard_all_tracks"]["bias_factor"] / c[k] for c in cells]))
             for k in ("true_bias_sum", "guard_weighted_true_bias", "guard_weighted_true_bias_intervals",
                       "guard_unclipped")}
    lines = ["", "Reading (computed from the cells above):", "",
             f"- The guard's factor over all tracks of a cell against the truth, median over the cells: "
             f"{ratio['true_bias_sum']:.3f} x the true bias (ratio of sums), {ratio['guard_weighted_true_bias']:.3f} x "
             f"the guard-weighted true bias with the frame labels, {ratio['guard_weighted_true_bias_intervals']:.3f} x "
             "with the labels of the 29 intervals the displacements span. The guard's ratio weights each track by "
             "its displacements over (its model value + the median model value of the movie) (`estimation/guard.py`): "
             "tracks slower than the median count about equally per unit of D, as in the ratio of sums that defines "
             "the classes, and faster ones, whose CVE is the noisiest, less. Without the Huber clipping "
             f"the factor would be {1 / ratio['guard_unclipped']:.3f} x what it is. The guard (its decision rule of "
             f"2026-12-06) rejects when the whole 99 % interval lies beyond 1 +- {guard.DEFAULT_MARGIN:g}, or when the "
             f"factor is beyond 1 +- {guard.DEFAULT_LARGE_BIAS:g} and the interval excludes 1; a movie outside the "
             f"card's range passes only with the interval within {1 / (1 + tol):.3f}-{1 + tol:.3f}."]
    sizes = [str(s) for s in SIZES]
    for c in cells:
        rates = {s: c["sizes"][s]["rate_population"] for s in sizes if s in c["sizes"]}
        if c["class"] == "unbiased" and any(r > TARGET_FALSE_ALARMS for r in rates.values()):
            what = "false alarms"
        elif c["class"] == "biased" and any(r < TARGET_DETECTION for r in rates.values()):
            what = "missed detections"
        else:
            continue
        g = c["guard_all_tracks"]
        lines.append(f"- {what} at sigma {c['psf_sigma_px']:g} px, {c['signal_photons']:g} photons (rejected "
                     + ", ".join(f"{pct(r, 1)} at N={s}" for s, r in rates.items())
                     + f"): true bias {fmt(c['true_bias_sum'], 3)} (ratio of sums), guard-weighted "
                     f"{fmt(c['guard_weighted_true_bias'], 3)} / {fmt(c['guard_weighted_true_bias_intervals'], 3)} "
                     f"(frame labels / intervals), guard over all {c['n_tracks']} tracks {fmt(g['bias_factor'], 3)}.")
    return lines


def model_lines(name: str, card: dict, cells: list[dict], summary: dict) -> list[str]:
    a = card.get("training_acquisition") or {}
    ranges = card.get("training_ranges")
    lines = ["", f"## Model `{name}`", "",
             f"- Trained at PSF sigma {a.get('psf_sigma_nm', float('nan')):g} nm, "
             f"{a.get('signal_photons', float('nan')):g} photons"
             + (f", training ranges {json.dumps(ranges)}" if ranges else " (no training_ranges: the card's relative "
                "tolerances decide the acquisition check)") + f"; {describe_training(card)}.",
             ""]
    lines += summary_lines(name, summary)
    lines += ["", f"### `{name}`: per cell", ""] + cell_table(cells) + reading_lines(cells)
    lines += [""] + movie_spread_lines(cells)
    msgs = sorted({m for c in cells for m in c["acquisition_messages"]})
    if msgs:
        lines += ["", "Acquisition-check sentences met on this grid:", ""] + [f"- {m}" for m in msgs]
    return lines


def rates_overview(results: dict[str, dict]) -> list[str]:
    lines = ["| model | N | false alarms (unbiased cells) | detection (biased cells) | "
             "pipeline with acquisition check: false alarms / detection |", "|---|---|---|---|---|"]
    for name, r in results.items():
        for size, s in r["summary"].items():
            fa, det = s["false_alarms_population"], s["detection_population"]
            fa2, det2 = s["false_alarms_with_acquisition_check"], s["detection_with_acquisition_check"]
            lines.append(f"| `{name}` | {size} | {pct(fa['rate'])} ({fa['rejected']}/{fa['movies']}, "
                         f"{fa['cells']} cell(s)) | {pct(det['rate'])} ({det['rejected']}/{det['movies']}, "
                         f"{det['cells']} cell(s)) | {pct(fa2['rate'])} / {pct(det2['rate'])} |")
    return lines


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="200 tracks per cell, 3 cells, 50 movies per cell and size (a smoke test)")
    parser.add_argument("--models", default="aniso", help="comma-separated bundled models (aniso,binding,twostate)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "bench_cache_guard",
                        help="folder of the cached test sets (default runs/bench_cache_guard)")
    parser.add_argument("--out", type=Path, default=None, help="report path (default benchmarks/reports/guard.md)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(BASE_SEEDS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(BASE_SEEDS)}")
    n_tracks = QUICK["tracks"] if args.quick else FULL["tracks"]
    n_movies = QUICK["movies"] if args.quick else FULL["movies"]
    cells = grid(args.quick)
    out = args.out or report_path("guard", args.quick)
    cmd = command_line("bench_guard.py", argv)
    t_start = time.perf_counter()
    results: dict[str, dict] = {}
    for name in names:
        module, _ = load_checkpoint(name)
        card = read_card(name)
        rows = []
        for cell in cells:
            row = run_cell(name, module, card, cell, n_tracks, n_movies, args.cache)
            s = row["seconds"]
            print(f"{name} sigma {cell[1]:g} px, {cell[2]:g} photons: true bias {row['true_bias_sum']:.3f} "
                  f"({row['class']}), guard {row['guard_all_tracks']['bias_factor']:.3f}, rejected "
                  + ", ".join(f"N={k} {v['rate_population']:.3f}" for k, v in row["sizes"].items())
                  + f" [set {s['test_set']:.0f} s{' cached' if s['test_set_cached'] else ''}, model "
                  f"{s['model']:.0f} s, guard {s['guard']:.0f} s]", flush=True)
            rows.append(row)
        results[name] = {"card": {"name": card.get("name"), "training_acquisition": card.get("training_acquisition"),
                                  "training_ranges": card.get("training_ranges")},
                         "cells": rows, "summary": summarize(rows)}
    total = time.perf_counter() - t_start

    seeds = ", ".join(f"{m} {BASE_SEEDS[m]} + {SEED_STEP} x cell ({BASE_SEEDS[m]}-"
                      f"{BASE_SEEDS[m] + SEED_STEP * max(c[0] for c in cells)})" for m in names)
    sizes = [s for s in SIZES if s <= n_tracks]
    protocol = (f"{PROTOCOL}, version {PROTOCOL_VERSION} (docstring of `benchmarks/bench_guard.py`); seeds {seeds}; "
                f"movie subsets `default_rng([{SUBSET_SEED}, cell, N])`; {len(cells)} cells x {n_tracks} tracks of "
                f"{N_FRAMES} frames, {n_movies} movies per cell and N = {', '.join(map(str, sizes))}"
                + (" (quick run)" if args.quick else ""))
    lines = report_header("Model guard: false alarms and detection across the acquisition grid", protocol, cmd)
    lines += [
        f"- Total run time {total:.0f} s (test sets, models on the CPU and guard, one after the other).",
        "- Grid: PSF sigma 0.7 / 1.0 / 1.5 / 2.0 / 2.5 px x 250 / 1,000 / 4,000 signal photons per frame, the rest of "
        "`Acquisition()` (100 nm pixels, 10 ms frames, continuous exposure, 10 photons/px background, read noise "
        "1.5 e-). The bundled models were trained at sigma 1.0 px and 1,000 photons only.",
        "- Guard inputs per track as `pipeline.guard_model` builds them (model mean diffusivity, unclipped CVE, mean "
        "squared localization precision, finite displacements); the acquisition is the true one (told).",
        f"- True bias: model / truth of the mean diffusivity (D1 + D2) / 2, ratio of sums over the cell's tracks "
        f"(and median of per-track ratios). Cells: unbiased within 1 +- {100 * UNBIASED:.0f} %, biased beyond "
        f"1 +- {100 * BIASED:.0f} % (ratio of sums), between otherwise.",
        "- Rejected: share of the movies (random subsets of N tracks) the guard rejects: `population_ratio` + "
        "`decide` with its defaults (rejects when the 99 % bootstrap interval lies beyond "
        f"1 +- {guard.DEFAULT_MARGIN:g}, "
        f"or the factor beyond 1 +- {guard.DEFAULT_LARGE_BIAS:g} with the interval excluding 1; 12 tracks at least) "
        "without "
        "acquisition messages; 'with acq. check': `decide` also given `check_acquisition(card, acquisition)`, as "
        "`spt-diffusion track` is when the acquisition is right.",
        "- CVE / truth: the guard's reference against the truth (it should be 1). Guard-weighted true bias: "
        "`population_ratio` with the truth in place of the CVE, i.e. the bias the guard's weighting would see with "
        "a perfect reference (truth: the mean of the frame labels, or of the labels of frames 0 to 28, the 29 "
        "intervals the displacements span; they differ only for tracks that switch state). Guard unclipped: the "
        "guard's factor over all tracks with `guard.HUBER_CLIP` set to infinity for that column only.",
        "- Intervals of the rates: Wilson 95 % over movies as if independent; the movies of a cell share its "
        "tracks, so the real uncertainty is larger, and the number of cells per class matters as much.",
        "", "## Rates", ""]
    lines += rates_overview(results)
    for name, r in results.items():
        card = read_card(name)
        lines += model_lines(name, card, r["cells"], r["summary"])
    write_report(out, lines)
    js = {"protocol": PROTOCOL, "version": PROTOCOL_VERSION, "command": cmd, "quick": args.quick,
          "header": lines[:6], "total_s": total, "tracks_per_cell": n_tracks, "movies": n_movies,
          "sizes": sizes, "subset_seed": SUBSET_SEED, "classes": {"unbiased_within": UNBIASED, "biased_beyond": BIASED},
          "targets": {"false_alarms_max": TARGET_FALSE_ALARMS, "detection_min": TARGET_DETECTION},
          "models": results}
    write_json(out.with_suffix(".json"), js)
    print(f"wrote {out} and {out.with_suffix('.json')} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
