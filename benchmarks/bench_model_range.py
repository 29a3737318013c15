"""Per-track range check: tracks faster or slower than a model was trained for (estimation/model_range.py).

A learned model reads a track outside the range of diffusion coefficients it was trained on as the nearest
thing it knows. ``track`` tests each track's CVE (unbiased whatever the blur and the noise) against the
model's trained range of ``(D1 + D2) / 2`` and reports the classical values (CVE tensor) of the tracks shown
outside it (one-sided, 95 %). This benchmark measures, per band of the true mean D, what the model reads, how
many tracks the check sends to the classical values, and what is reported with and without the check.

Tracks: seed-aniso physics (``make_samples``, tracking path, 30 frames) except the tensors: ``D1``
log-uniform over 0.005-40 um^2/s (30 % of the tracks isotropic, the others with ``D2 / D1`` uniform in
0.1-1), test seed 3031 (no training seed). Per condition (acquisition, model): the model's inputs as
``track`` gives them (``--psf-units auto``, the true PSF width), the pipeline's range check
(:func:`~napari_spt_diffusion.estimation.model_range.check_tracks`) with the CVE, the Mortensen
localization variance of each track and its displacements, exactly as ``estimation_stage.range_check``
builds them. Scores per band of the true ``(D1 + D2) / 2``: the share of tracks flagged, the median ratio
of the reported ``(D1 + D2) / 2`` to the truth and the median relative error, for the model alone and as
reported with the check.

Command::

    .venv/bin/python benchmarks/bench_model_range.py [--quick] [--n 3000] [--out PATH]

``--quick``: 300 tracks, one condition (checks the script).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import PROTOCOLS, command_line, fmt, load_average, report_header, report_path, write_report
from bench_psf_units import inputs, run
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import classical as C
from napari_spt_diffusion.estimation import guard, model_range
from napari_spt_diffusion.estimation import psf_units as pu
from napari_spt_diffusion.estimation.checkpoint import load_checkpoint
from napari_spt_diffusion.estimation.rescale import rescale_factor
from napari_spt_diffusion.training.motion_priors import MotionPrior
from napari_spt_diffusion.training.samples import SampleSettings, make_samples

#: Test seed of this benchmark's tracks (no training run uses it).
SEED = 3031
#: The tracks' tensors: D1 log-uniform over this range (um^2/s), 30 % isotropic.
PRIOR = MotionPrior("range test", broad_share=1.0, d1_range_um2_s=(0.005, 40.0), isotropic_share=0.3)
#: Bands of the true (D1 + D2) / 2, um^2/s.
BANDS = ((0.0, 0.0275), (0.0275, 0.1), (0.1, 1.0), (1.0, 4.0), (4.0, 6.0), (6.0, 9.0), (9.0, 14.0),
         (14.0, 20.0), (20.0, 40.0))
#: Conditions: (label, PSF sigma in px at 100 nm pixels, signal photons, models).
CONDITIONS = (
    ("standard acquisition (PSF 1 px, 1,000 photons)", 1.0, 1000.0, ("aniso", "aniso_any")),
    ("PSF 2 px, 1,000 photons (aniso_any in PSF units)", 2.0, 1000.0, ("aniso_any",)),
)


def mean_d(pred: dict) -> np.ndarray:
    """``(D1 + D2) / 2`` of per-track estimates (um^2/s)."""
    return 0.5 * (np.asarray(pred["D1_um2_s"], float) + np.asarray(pred["D2_um2_s"], float))


def cve_inputs(batch, acq: Acquisition) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The range check's inputs per track as the pipeline builds them: the isotropic CVE (px^2/frame, unclipped),
    the mean squared Mortensen precision (px^2), the number of displacements, the CVE tensor's
    ``(D1 + D2) / 2`` in um^2/s (what is reported for a flagged track) and the median-step D (px^2/frame)."""
    with np.errstate(all="ignore"):
        cve = C.cve_tensor_batch(batch.positions_px, acq)
        d_px2 = 0.5 * np.trace(cve["tensor_px2_frame"], axis1=1, axis2=2)
        loc_var = np.nanmean((np.asarray(batch.loc_precision_nm, float) / acq.pixel_size_nm) ** 2, axis=1)
    steps = np.all(np.isfinite(np.diff(batch.positions_px, axis=1)), axis=2).sum(axis=1)
    reported_cve = 0.5 * (np.asarray(cve["D1_um2_s"], float) + np.asarray(cve["D2_um2_s"], float))
    d_median = model_range.median_step_d_px2(batch.positions_px, loc_var, acq.blur_coefficient)
    return d_px2, loc_var, steps, reported_cve, d_median


def ratio_cells(estimate: np.ndarray, truth: np.ndarray) -> str:
    """``median ratio | median rel. error %`` table cells of ``(n,)`` estimates against their truth."""
    with np.errstate(all="ignore"):
        ratio = estimate / truth
    return f"{fmt(np.nanmedian(ratio), 2)} | {fmt(np.nanmedian(np.abs(ratio - 1)) * 100, 1)} %"


def band_rows(truth: np.ndarray, model: np.ndarray, reported: np.ndarray, flagged: np.ndarray) -> list[str]:
    """One table row per band of the true mean D."""
    rows = []
    for low, high in BANDS:
        sel = (truth >= low) & (truth < high)
        if not sel.any():
            continue
        rows.append(f"| {low:g}-{high:g} | {int(sel.sum())} | {100 * flagged[sel].mean():.1f} % | "
                    f"{ratio_cells(model[sel], truth[sel])} | {ratio_cells(reported[sel], truth[sel])} |")
    return rows


#: Bands of the true (D1 + D2) / 2 in the model's own input units (px^2/frame after the PSF-units scale) for the
#: section on the model's reading at the bottom of its range (:data:`~napari_spt_diffusion.estimation.model_range.
#: LOW_EDGE_PIXEL_SHARE`).
MODEL_UNIT_BANDS = (0.0, 0.002, 0.0041, 0.006, 0.0085, 0.0125, 0.0185, 0.0275, 0.05, 0.1)


def model_unit_rows(truth_model_px2: np.ndarray, truth: np.ndarray, model: np.ndarray,
                    cve: np.ndarray) -> list[str]:
    """One row per band of :data:`MODEL_UNIT_BANDS` (``truth_model_px2``: the true mean D in the model's px^2/frame):
    the model's and the isotropic CVE's median ratio to the truth and median relative error."""
    rows = []
    for low, high in zip(MODEL_UNIT_BANDS[:-1], MODEL_UNIT_BANDS[1:]):
        sel = (truth_model_px2 >= low) & (truth_model_px2 < high)
        if sel.sum() < 5:
            continue
        rows.append(f"| {low:g}-{high:g} | {int(sel.sum())} | {ratio_cells(model[sel], truth[sel])} | "
                    f"{ratio_cells(cve[sel], truth[sel])} |")
    return rows


#: Populations of the guard section: bands of the true (D1 + D2) / 2 (um^2/s) the movie's tracks are drawn from.
POPULATIONS = ((0.05, 3.0), (0.5, 6.0), (0.01, 1.0), (0.005, 40.0), (1.0, 12.0), (3.0, 12.0))
#: Tracks per simulated movie of the guard section, and movies per population.
GUARD_TRACKS, GUARD_MOVIES = 300, 10


def guard_rows(truth_um2: np.ndarray, model_um2: np.ndarray, d_px2: np.ndarray, loc_var: np.ndarray,
               steps: np.ndarray, acq: Acquisition, card: dict, d_median: np.ndarray, seed: int) -> list[str]:
    """The guard's factor over movies of :data:`GUARD_TRACKS` tracks drawn from each population, for an ideal model
    (its value the truth) and the bundled one, with three populations for the guard: every track, the tracks the
    CVE does not show outside, and the pipeline's (``RangeCheck.left_out_of_guard``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for low, high in POPULATIONS:
        pool = np.flatnonzero((truth_um2 >= low) & (truth_um2 < high))
        for label, values in (("ideal (the truth)", truth_um2), ("the bundled model", model_um2)):
            cells = []
            for rule in ("all", "cve", "track"):
                factors, decisions = [], []
                for _ in range(GUARD_MOVIES):
                    movie = rng.choice(pool, size=min(len(pool), GUARD_TRACKS), replace=False)
                    # the movie's own check, as the stage makes it over the movie's tracks
                    check = model_range.check_tracks(movie, d_px2[movie], loc_var[movie], steps[movie], acq, card,
                                                     1.0, d_median_px2=d_median[movie])
                    outside = np.isin(movie, list(check.outside))
                    if rule == "cve":
                        movie = movie[~outside]
                    elif rule == "track":
                        inside = movie[~outside]
                        first = guard.population_ratio(acq.diffusion_to_px2_per_frame(values[inside]), d_px2[inside],
                                                       loc_var[inside], steps[inside], blur=acq.blur_coefficient)
                        left = model_range.guard_left_out(check, {int(i): float(values[i]) for i in movie}, first)
                        movie = np.array([i for i in movie if int(i) not in left], dtype=int)
                    bias = guard.population_ratio(acq.diffusion_to_px2_per_frame(values[movie]), d_px2[movie],
                                                  loc_var[movie], steps[movie], blur=acq.blur_coefficient)
                    decision = guard.decide(bias)
                    factors.append(bias[0])
                    decisions.append("rejected" if decision.rejected else
                                     "rescaled" if rescale_factor(decision) is not None else "as it is")
                counts = ", ".join(f"{k} {decisions.count(k)}" for k in ("as it is", "rescaled", "rejected")
                                   if decisions.count(k))
                cells.append(f"{np.nanmean(factors):.3f} ({counts})")
            rows.append(f"| {low:g}-{high:g} | {label} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 tracks, one condition (checks the script)")
    ap.add_argument("--n", type=int, default=None, help="tracks per condition (default 3000)")
    ap.add_argument("--out", type=Path, default=None, help="report path (default benchmarks/reports/model_range.md)")
    args = ap.parse_args(argv)
    n = args.n or (300 if args.quick else 3000)
    torch.set_num_threads(2)
    conditions = CONDITIONS[:1] if args.quick else CONDITIONS
    lines = report_header(
        "Per-track range check: tracks outside the D range a model was trained on",
        f"range check, version 1 (docstring of `benchmarks/bench_model_range.py`; {PROTOCOLS} seed-aniso physics "
        f"with D1 log-uniform 0.005-40 um^2/s, seed {SEED}, {n} tracks of 30 frames per condition)",
        command_line("bench_model_range.py", argv))
    t_all = time.perf_counter()
    for label, sigma, photons, names in conditions:
        acq = Acquisition(psf_sigma_nm=100.0 * sigma, signal_photons=photons)
        models = {name: load_checkpoint(name) for name in names}
        scales = {name: pu.scale_for(card, acq, "auto") for name, (_, card) in models.items()}
        side = max(pu.source_patch_size(s) for s in scales.values())
        batch = make_samples("aniso", n, 30, acq, SEED, settings=SampleSettings(patch_size=side, motion_prior=PRIOR))
        truth = 0.5 * (batch.D1_um2_s[:, 0] + batch.D2_um2_s[:, 0])
        d_px2, loc_var, steps, reported_cve, d_median = cve_inputs(batch, acq)
        for name, (module, card) in models.items():
            t0 = time.perf_counter()
            model = mean_d(run(module, *inputs(batch, scales[name]), acq, scales[name]))
            check = model_range.check_tracks(np.arange(len(batch)), d_px2, loc_var, steps, acq, card, scales[name],
                                             d_median_px2=d_median)
            flagged = np.zeros(len(batch), bool)
            flagged[list(check.outside)] = True
            below = np.isin(np.arange(len(batch)), list(check.below))  # D1 = D2 = the isotropic CVE, as track
            iso = np.clip(acq.diffusion_to_um2_s(d_px2), 0.0, None)
            reported = np.where(below, iso, np.where(flagged, reported_cve, model))
            inside = (truth >= check.low_um2_s) & (truth <= check.high_um2_s)
            lines += ["", f"## `{name}`, {label}", "",
                      f"Trained range of (D1 + D2) / 2 on this movie: {check.low_um2_s:.3g}-{check.high_um2_s:.3g} "
                      f"um^2/s (PSF-units scale s = {scales[name]:.2f}). Tracks flagged: {len(check.above)} above, "
                      f"{len(check.below)} below, of {check.n_tested}; of the tracks whose true D lies inside the "
                      f"range, {100 * flagged[inside].mean():.1f} % flagged (sent to the classical values).", "",
                      "| true (D1 + D2) / 2 (um^2/s) | tracks | flagged | model: median ratio to truth | model: median "
                      "rel. error | reported with the check: median ratio | reported: median rel. error |",
                      "|---|---|---|---|---|---|---|",
                      *band_rows(truth, model, reported, flagged)]
            if name == "aniso_any":
                truth_model = acq.diffusion_to_px2_per_frame(truth) * scales[name] ** 2
                low_model = acq.diffusion_to_px2_per_frame(check.low_um2_s) * scales[name] ** 2
                lines += ["", f"### `{name}`'s reading at the bottom of its range ({label})", "",
                          "Per band of the true (D1 + D2) / 2 in the model's own units (px^2/frame of its input, the "
                          "movie's times s^2), what the model and the isotropic CVE (not clipped) read; the range's "
                          f"low edge in these units is {low_model:.3g}.",
                          "",
                          "| true mean D, model px^2/frame | tracks | model: median ratio | model: median rel. error "
                          "| CVE: median ratio | CVE: median rel. error |", "|---|---|---|---|---|---|",
                          *model_unit_rows(truth_model, truth, model, np.asarray(acq.diffusion_to_um2_s(d_px2)))]
            print(f"{name} {label}: {time.perf_counter() - t0:.0f} s", flush=True)
            if name == "aniso" and not args.quick:
                lines += ["", f"### The guard's population (`aniso`, {label})", "",
                          f"The guard's factor (model / CVE) over {GUARD_MOVIES} movies of {GUARD_TRACKS} tracks "
                          "drawn from each band of the true (D1 + D2) / 2 (mean factor; what the guard then does "
                          "to the model, `guard.decide` and the rescale's rule), for a model that reads every "
                          "track's truth and for the bundled one, with three populations: every track; the tracks "
                          "the CVE does not show outside the range; the pipeline's (those, and where more lie above "
                          "the range than chance explains every track the model reads above 0.6 x its top, below "
                          "it under its bottom / 0.6: `RangeCheck.left_out_of_guard`).", "",
                          "| true (D1 + D2) / 2 (um^2/s) | model | every track | without the tracks the CVE shows "
                          "outside | as `track` (also those the model reads near the edge) |", "|---|---|---|---|---|",
                          *guard_rows(truth, model, d_px2, loc_var, steps, acq, card, d_median, SEED)]
    lines += ["", f"Run time {time.perf_counter() - t_all:.0f} s; load average at the end {load_average()}."]
    out = args.out or report_path("model_range", args.quick)
    write_report(out, lines)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
