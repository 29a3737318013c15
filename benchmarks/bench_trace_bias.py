"""Mean diffusivity of isotropic tracks at a wide PSF, by true D: does a model read it low?

Protocol "isotropic trace", version 1 (defined here): free isotropic diffusion (``D1 = D2``, D
log-uniform over 0.05-3 um^2/s: ``training.motion_priors.MotionPrior`` with every track
isotropic, the D range of the foreign-optics protocol) on our simulator at the NA 0.8 / 640 nm
optics of that protocol: a scalar Airy PSF of sigma-equivalent 168 nm (1.68 px at 100 nm
pixels), 5,000 signal photons, 600 background photons per pixel (and a 10-photon row), 10 ms
frames; ``n`` tracks of 30 frames (one model window), seed 777, made through the tracking path
(``make_samples``) with patches large enough for PSF units. Each model runs in PSF units with
the true width (as ``track --psf-units auto`` runs it with a calibrated one).

A third row group, "native", renders the same tracks in the units the model sees them in: a PSF
of 1.0 px (100 nm) rendered on its own pixels (no resampling), D scaled by (100 / 168)^2 and the
background per pixel by (168 / 100)^2, so that D, signal and background per virtual pixel are those
of the 600-photon group. It tells whether the resampling into PSF units matters.

Scores, per track: the median of ``((D1 + D2) / 2)_estimated / D_true`` over all tracks and in
bins of the true D (0-0.15, 0.15-0.5, 0.5-1.5, 1.5-3 um^2/s; for the native group the bins of the
600-photon group's D, i.e. of the same D per virtual pixel), the median relative error, and the
median estimated ``D2 / D1`` (1 for the truth). The CVE tensor's trace (unbiased by construction)
is the reference row.

This is where ``benchmarks/reports/foreign.md`` found the bundled ``aniso_any`` reading the NA 0.8
movie's free particles low; this benchmark asks whether our own simulator shows the same, so that
training can be checked against it.

Command::

    .venv/bin/python benchmarks/bench_trace_bias.py [--models aniso_any,PATH.pt] [--n 600] [--out PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from _common import classical_tracks, command_line, load_average, report_header, write_report
from bench_psf_units import inputs, run
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import psf_units as pu
from napari_spt_diffusion.estimation.checkpoint import load_checkpoint
from napari_spt_diffusion.simulation.optics import RenderOptics
from napari_spt_diffusion.training.motion_priors import MotionPrior
from napari_spt_diffusion.training.samples import SampleSettings, make_samples

PROTOCOL = "isotropic trace"
PROTOCOL_VERSION = 1
SEED = 777
PSF_SIGMA_NM = 168.0
PHOTONS = 5000.0
BACKGROUNDS = (600.0, 10.0)
ISOTROPIC = MotionPrior("isotropic", broad_share=1.0, d1_range_um2_s=(0.05, 3.0), isotropic_share=1.0)
BINS_UM2_S = ((0.0, 0.15), (0.15, 0.5), (0.5, 1.5), (1.5, 3.0))


def score_row(label: str, d1: np.ndarray, d2: np.ndarray, d_true: np.ndarray, d_scale: float = 1.0) -> str:
    """One report row: medians of the trace ratio (all tracks and per bin of ``d_true / d_scale``), its
    error, D2 / D1."""
    ratio = 0.5 * (d1 + d2) / d_true
    cells = [f"{np.median(ratio):.2f}", f"{100 * np.median(np.abs(ratio - 1)):.0f} %"]
    for lo, hi in BINS_UM2_S:
        sel = (d_true / d_scale >= lo) & (d_true / d_scale < hi)
        cells.append(f"{np.median(ratio[sel]):.2f} ({int(sel.sum())})" if sel.any() else "-")
    with np.errstate(divide="ignore", invalid="ignore"):
        cells.append(f"{np.nanmedian(np.minimum(d1, d2) / np.maximum(d1, d2)):.2f}")
    return f"| {label} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="aniso_any", help="comma-separated bundled models or .pt paths")
    ap.add_argument("--n", type=int, default=600, help="tracks per background level (default 600)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "reports" / "trace_bias.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {m: load_checkpoint(m) for m in args.models.split(",")}
    lines = report_header(
        "Mean diffusivity of isotropic tracks at a wide PSF (our simulator)",
        f"{PROTOCOL}, version {PROTOCOL_VERSION} (docstring of `benchmarks/bench_trace_bias.py`); seed {SEED}, "
        f"{args.n} isotropic tracks of 30 frames per row group, D log-uniform 0.05-3 um^2/s; scalar Airy PSF "
        f"sigma-equivalent {PSF_SIGMA_NM:g} nm (1.68 px), {PHOTONS:g} signal photons, 10 ms frames",
        command_line("bench_trace_bias.py", argv))
    t_all = time.perf_counter()
    native = (100.0 / PSF_SIGMA_NM) ** 2  # D and 1 / background scale of the native group
    groups = [(f"{b:g} background photons/px", PSF_SIGMA_NM, b, ISOTROPIC, 1.0) for b in BACKGROUNDS]
    groups.append((f"native: 1.0 px PSF on its own pixels, D x {native:.3f}, {BACKGROUNDS[0] / native:.0f} background "
                   "photons/px (the 600-photon group per virtual pixel)", 100.0, BACKGROUNDS[0] / native,
                   MotionPrior("isotropic", 1.0, (0.05 * native, 3.0 * native), 1.0), native))
    for title, psf_nm, background, prior, d_scale in groups:
        acq = Acquisition(psf_sigma_nm=psf_nm, signal_photons=PHOTONS, background_photons=background)
        sigma_px = psf_nm / acq.pixel_size_nm
        scales = {name: pu.psf_scale(pu.card_psf_sigma_px(card), sigma_px) for name, (_, card) in models.items()}
        q = max(11, *(pu.source_patch_size(s) for s in scales.values()))
        batch = make_samples("aniso", args.n, 30, acq, SEED, settings=SampleSettings(
            patch_size=q, optics=RenderOptics(airy=True), motion_prior=prior))
        d_true = 0.5 * (batch.D1_um2_s[:, 0] + batch.D2_um2_s[:, 0])
        lines += ["", f"## {title}", "",
                  "| estimator | median ((D1 + D2) / 2) / D_true | median rel. error | "
                  + " | ".join(f"D {lo:g}-{hi:g} um^2/s (tracks)" for lo, hi in BINS_UM2_S) + " | median D2 / D1 |",
                  "|---|---|---|" + "---|" * len(BINS_UM2_S) + "---|"]
        for name, (module, _) in models.items():
            s = scales[name]
            pred = run(module, *inputs(batch, s), acq, s)
            lines.append(score_row(f"`{name}` (PSF units, scale {s:.3f})", pred["D1_um2_s"], pred["D2_um2_s"], d_true,
                                   d_scale))
        cve = classical_tracks(batch, acq, ("CVE tensor",))["CVE tensor"]
        lines.append(score_row("CVE tensor (reference)", np.asarray(cve["D1_um2_s"], float),
                               np.asarray(cve["D2_um2_s"], float), d_true, d_scale))
        print("\n".join(lines[-(len(models) + 1):]), flush=True)
    lines += ["", f"Run time {time.perf_counter() - t_all:.0f} s; load average at the end {load_average()}."]
    write_report(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
