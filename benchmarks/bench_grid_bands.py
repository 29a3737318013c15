"""Robustness grid, per band of the true D1: where a model's advantage over the classical estimators lies.

The grid (``bench_grid.py``) scores a cell by one MAE over its tracks. This diagnostic splits chosen cells by the
true ``D1`` (bands of :data:`BANDS_UM2_S`, seed-aniso's ``D1`` being uniform over 0.05-6 um^2/s) and gives, per
band, each model's MAE of ``D1`` and ``D2`` and that of the cell's best classical estimator (the one of
``bench_grid.CLASSICAL`` with the lowest MAE over the whole cell, per metric, told the true acquisition), with
their ratio. It tells whether a model is better than the classical estimators everywhere or only where the prior
of its training (``D1`` at most 6 um^2/s) lets it answer below a noisy classical value. A column gives what the
positions alone allow: the posterior median under the tracks' true prior (``_bayes_tensor.py``).

Tracks: as ``bench_grid.py`` makes them (seed-aniso physics, grid seed 3025, tracking path, 30 frames), but
``--n`` of them per cell (default 1,000, so that a band holds about 250; the localized positions also depend on
the patch size, set here by the models asked for, so even ``--n 300`` reproduces the grid's tracks only where
that size is the grid's). Models as ``track --psf-units auto`` runs them with the PSF width of the
calibration (``calibration.json``), without the guard or the range check (the model's own values).

Command::

    .venv/bin/python benchmarks/bench_grid_bands.py [--models aniso_any,...] [--cells gaussian-1-4000,...]
        [--n 1000] [--out PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from _bayes_tensor import posterior_medians
from _common import PROTOCOLS, classical_tracks, command_line, fmt, load_average, report_header, write_report
from bench_grid import BOOTSTRAP, CALIBRATION_JSON, CLASSICAL, GRID_SEEDS, measured_widths, ratio_interval
from bench_psf_units import inputs, run
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import psf_units as pu
from napari_spt_diffusion.estimation.checkpoint import load_checkpoint
from napari_spt_diffusion.simulation.optics import RenderOptics
from napari_spt_diffusion.training.samples import SampleSettings, make_samples

#: Column of the reference that sees only the positions (``_bayes_tensor.posterior_medians``).
POSITIONS_ONLY = "positions only (Bayes)"
#: Bands of the true D1 (um^2/s).
BANDS_UM2_S = ((0.05, 1.0), (1.0, 2.5), (2.5, 4.5), (4.5, 6.01))
#: Default cells: ``shape-sigma-photons`` (the grid's Gaussian cells at 1,000-4,000 photons around ``aniso_any``'s
#: misses: one it meets at 1 px, three it misses at 1.5-2 px).
DEFAULT_CELLS = "gaussian-1-4000,gaussian-1.5-1000,gaussian-1.5-4000,gaussian-2-4000"


def parse_cell(text: str) -> tuple[str, float, float]:
    """``"gaussian-1.5-4000"`` -> ``("gaussian", 1.5, 4000.0)``."""
    shape, sigma, photons = text.split("-")
    if shape not in ("gaussian", "airy"):
        raise ValueError(f"cell shape must be gaussian or airy, got {shape!r}")
    return shape, float(sigma), float(photons)


def band_mae(estimate: np.ndarray, truth: np.ndarray, sel: np.ndarray) -> float:
    """MAE (um^2/s) over the tracks of ``sel`` (``(N,)`` bool) where ``estimate`` is finite."""
    return float(np.nanmean(np.abs(np.asarray(estimate, float)[sel] - truth[sel])))


def cell_rows(shape: str, sigma: float, photons: float, n: int, models: dict, widths: dict) -> list[str]:
    """The table rows of one cell: per band and metric, the best classical MAE and each model's (ratio)."""
    cell = f"{'gauss' if shape == 'gaussian' else shape}-s{sigma:.1f}-n{photons:.0f}"
    acq = Acquisition(psf_sigma_nm=100.0 * sigma, signal_photons=photons)
    told = acq.replace(psf_sigma_nm=100.0 * widths.get(cell, sigma))
    scales = {name: pu.scale_for(card, told, "auto") for name, (_, card) in models.items()}
    q = max(pu.source_patch_size(s) for s in scales.values())
    batch = make_samples("aniso", n, 30, acq, GRID_SEEDS["aniso"],
                         settings=SampleSettings(patch_size=q, optics=RenderOptics(airy=shape == "airy")))
    small = dataclasses.replace(batch, patches=pu.centre_crop(batch.patches, 11),
                                outside_mask=pu.centre_crop(batch.outside_mask, 11))
    truth = {"D1_um2_s": batch.D1_um2_s[:, 0].astype(float), "D2_um2_s": batch.D2_um2_s[:, 0].astype(float)}
    classical = classical_tracks(small, acq, CLASSICAL)
    all_tracks = np.ones(n, bool)
    best = {m: min(classical, key=lambda k: band_mae(classical[k][m], truth[m], all_tracks)) for m in truth}
    preds = {name: run(module, *inputs(batch, scales[name]), acq, scales[name])
             for name, (module, _) in models.items()}
    # the reference that sees the positions only (and the true prior): _bayes_tensor
    m1, m2 = posterior_medians(batch.positions_px, np.asarray(batch.loc_precision_nm, float) / acq.pixel_size_nm,
                               acq.blur_coefficient, acq.um2_s_per_px2_frame)
    preds[POSITIONS_ONLY] = {"D1_um2_s": m1, "D2_um2_s": m2}
    rows = []
    bands = [(f"{low:g}-{min(high, 6.0):g}", low, high) for low, high in BANDS_UM2_S]
    for label, low, high in (*bands, ("all", BANDS_UM2_S[0][0], BANDS_UM2_S[-1][1])):
        sel = (truth["D1_um2_s"] >= low) & (truth["D1_um2_s"] < high)
        cells = []
        for m in ("D1_um2_s", "D2_um2_s"):
            ref = band_mae(classical[best[m]][m], truth[m], sel)
            parts = [f"{fmt(ref)}"]
            for name in preds:
                mae = band_mae(preds[name][m], truth[m], sel)
                if label == "all":  # the whole cell: with the bootstrap interval of the ratio
                    lo, hi = ratio_interval(preds[name][m], classical[best[m]][m], truth[m], GRID_SEEDS["aniso"])
                    parts.append(f"{fmt(mae)} ({mae / ref:.2f}; 90 % {lo:.2f}-{hi:.2f})")
                else:
                    parts.append(f"{fmt(mae)} ({mae / ref:.2f})")
            cells.append(" / ".join(parts))
        rows.append(f"| {shape} {sigma:g} px, {photons:.0f} | {label} | {int(sel.sum())} | "
                    f"{best['D1_um2_s']} / {best['D2_um2_s']} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="aniso_any", help="comma-separated models or checkpoint paths")
    ap.add_argument("--cells", default=DEFAULT_CELLS, help="comma-separated shape-sigma-photons")
    ap.add_argument("--n", type=int, default=1000, help="tracks per cell")
    ap.add_argument("--out", type=Path, default=None, help="report (default benchmarks/reports/grid_bands.md)")
    args = ap.parse_args(argv)
    try:
        cells = [parse_cell(c) for c in args.cells.split(",")]
    except ValueError as exc:
        print(f"error: bad --cells: {exc}", file=sys.stderr)
        return 2
    models = {m: load_checkpoint(m) for m in args.models.split(",")}
    widths = measured_widths(CALIBRATION_JSON)
    lines = report_header(
        "Robustness grid per band of the true D1: where the models' advantage lies",
        f"{PROTOCOLS} robustness grid's cells (seed-aniso physics v1, grid seed {GRID_SEEDS['aniso']}), {args.n} "
        "tracks of 30 frames per cell, tracking path; bands of the true D1", command_line("bench_grid_bands.py", argv))
    lines += ["- Per band: MAE (um^2/s) of the cell's best classical estimator per metric (told the true "
              "acquisition), then each model's MAE and its ratio to that. Models: "
              + ", ".join(f"`{m}`" for m in models) + " (as `track --psf-units auto` runs them, the calibrated PSF "
              "width; no guard, no range check), and a reference that sees only the positions: the posterior median "
              "of D1 and D2 under the tracks' true prior and a Gaussian likelihood of the displacements with blur "
              "and the localizer's precisions (`benchmarks/_bayes_tensor.py`; no estimator of the positions alone "
              "does better on average, up to its approximations, while estimators that read the images see more). "
              "For the whole cell ('all'), the 5-95 % bootstrap interval of the ratio over the cell's tracks "
              f"({BOOTSTRAP} resamples). Details: docstring of `benchmarks/bench_grid_bands.py`.", "",
              "| cell | true D1 (um^2/s) | tracks | best classical (D1 / D2) | MAE D1: classical / "
              + " / ".join(f"`{m}` (ratio)" for m in [*models, POSITIONS_ONLY]) + " | MAE D2: classical / "
              + " / ".join(f"`{m}` (ratio)" for m in [*models, POSITIONS_ONLY]) + " |", "|---|---|---|---|---|---|"]
    t_all = time.perf_counter()
    for shape, sigma, photons in cells:
        t0 = time.perf_counter()
        lines += cell_rows(shape, sigma, photons, args.n, models, widths)
        print(f"{shape} {sigma:g} px {photons:.0f}: {time.perf_counter() - t0:.0f} s", flush=True)
    lines += ["", f"Run time {time.perf_counter() - t_all:.0f} s; load average at the end {load_average()}."]
    out = args.out or Path(__file__).resolve().parent / "reports" / "grid_bands.md"
    write_report(out, lines)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
