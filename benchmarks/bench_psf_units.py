"""PSF units (issue 14 item 2): the bundled models on seed-aniso tracks across PSF widths, inputs off vs on.

Protocol: seed-aniso v1 physics (seed 2025, docs/protocols.md; ``--set binding|twostate``: those sets,
scored per frame, with the per-frame blur-moment tensor over +-2 frames as the classical row) with the PSF sigma swept
(0.75 / 1.0 / 1.5 / 2.0 px; everything else the standard acquisition), ``n`` tracks of 30 frames
per condition, made through the tracking path by ``make_samples`` with patches cut large enough
for PSF units (``SampleSettings(patch_size=Q)``, ``Q = source_patch_size``). The same tracks give

* ``off``: the centre 11 x 11 px of each patch and the displacements as they are (what the
  pipeline gives the model without PSF units, identical to 11-px patches cut directly);
* ``on``: :func:`napari_spt_diffusion.estimation.psf_units.model_inputs` with the scale matched to
  the model card's training PSF (:func:`~.psf_units.psf_scale`), D divided by ``s^2``;
* ``on, plain ratio``: the same with ``s = sigma_train / sigma_movie`` (no pixel correction);
* ``on, width +-E %``: the matched scale for a movie PSF width told (or calibrated) E % too wide
  or too narrow (``--width-error E``, default 5: the calibration's typical error on our
  simulator, benchmarks/reports/calibration.md);
* the classical combined tensor (CVE + blur moments) on the centre 11 x 11 px, given the true PSF.

The acquisition is the true one (as told or calibrated). Scores as in bench_accuracy.py (per
track MAE of D1, D2 in um^2/s, angle similarity) plus the bias of the mean diffusivity,
``exp(mean log((D1 + D2) / 2 / true))`` over the tracks (what the guard measures against the CVE).

Command::

    .venv/bin/python benchmarks/bench_psf_units.py [--quick] [--set aniso|binding|twostate] [--n 300]
        [--models aniso,aniso_wide] [--sigmas 0.75,1,1.25,1.5,2] [--width-error 5]
        [--photons N] [--background B] [--shape gaussian|airy] [--out PATH]

Reports: ``psf_units_aniso.md``, ``psf_units_binding.md``, ``psf_units_twostate.md``; the summary
with the foreign-optics runs is ``benchmarks/reports/psf_units.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import (
    PROTOCOLS,
    SEEDS,
    classical_frames,
    classical_tracks,
    command_line,
    fmt,
    load_average,
    report_header,
    report_path,
    write_report,
)
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import psf_units as pu
from napari_spt_diffusion.estimation.checkpoint import load_checkpoint
from napari_spt_diffusion.estimation.tensor import theta_from_sin_cos_2theta
from napari_spt_diffusion.metrics import angle_similarity_axial, mean_absolute_error
from napari_spt_diffusion.simulation.optics import RenderOptics
from napari_spt_diffusion.training.samples import SampleSettings, make_samples


def run(module, patches: np.ndarray, disp: np.ndarray, acq: Acquisition, scale: float) -> dict[str, np.ndarray]:
    """A sequence model over ``(N, T, P, P)`` patches and ``(N, T, 2)`` displacements; D in um^2/s of the movie."""
    outs = []
    with torch.inference_mode():
        for a in range(0, len(patches), 256):
            p = torch.from_numpy(np.ascontiguousarray(patches[a:a + 256], dtype=np.float32))
            d = torch.from_numpy(np.ascontiguousarray(disp[a:a + 256], dtype=np.float32))
            outs.append(module.forward_log(p, d, torch.ones(p.shape[:2], dtype=torch.bool)).numpy())
    out = np.concatenate(outs).astype(np.float64)
    d1, d2 = (acq.diffusion_to_um2_s(pu.d_to_movie_px2(np.exp(out[..., k]), scale)) for k in (0, 1))
    return {"D1_um2_s": d1, "D2_um2_s": d2, "theta_deg": theta_from_sin_cos_2theta(out[..., 2], out[..., 3])}


def inputs(batch, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs of a batch at ``scale`` (centre crop at 1)."""
    return pu.batch_model_inputs(batch.patches, batch.subpixel_offset_px, batch.positions_px, batch.displacements,
                                 scale)


def scores(pred: dict, batch) -> str:
    """Per track (sequence model: ``(N,)`` estimates) or per frame (pointwise: ``(N, T)``) against the truth."""
    per_frame = np.ndim(pred["D1_um2_s"]) == 2
    d1t, d2t, tht = ((batch.D1_um2_s, batch.D2_um2_s, batch.theta_deg) if per_frame
                     else (batch.D1_um2_s[:, 0], batch.D2_um2_s[:, 0], batch.theta_deg[:, 0]))
    ratio = (pred["D1_um2_s"] + pred["D2_um2_s"]) / (d1t + d2t)
    bias = math.exp(float(np.mean(np.log(ratio[np.isfinite(ratio) & (ratio > 0)]))))
    return " | ".join([fmt(mean_absolute_error(pred["D1_um2_s"], d1t)), fmt(mean_absolute_error(pred["D2_um2_s"], d2t)),
                       fmt(angle_similarity_axial(pred["theta_deg"], tht)), f"{bias:.2f}"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 tracks at PSF 1.0 and 1.5 px (checks the script)")
    ap.add_argument("--n", type=int, default=None, help="tracks per condition (default 300)")
    ap.add_argument("--set", default="aniso", choices=sorted(SEEDS), help="seed protocol (motion model)")
    ap.add_argument("--models", default=None, help="comma-separated models (default: aniso,aniso_wide for the "
                    "aniso set, else the set's bundled model)")
    ap.add_argument("--sigmas", default=None, help="PSF sigma in px (100 nm pixels; default 0.75,1,1.25,1.5,2)")
    ap.add_argument("--width-error", type=float, default=5.0, help="percent error of the PSF width for the "
                    "sensitivity rows (0: none)")
    ap.add_argument("--photons", type=float, default=None, help="signal photons per frame (default: standard)")
    ap.add_argument("--background", type=float, default=None,
                    help="background photons per pixel per frame (default: standard)")
    ap.add_argument("--shape", choices=("gaussian", "airy"), default="gaussian",
                    help="PSF shape of the simulated movies (airy: our simulator's scalar Airy PSF)")
    ap.add_argument("--out", type=Path, default=None,
                    help="report (default benchmarks/reports/psf_units_SET[_quick].md)")
    args = ap.parse_args(argv)
    args.n = args.n or (60 if args.quick else 300)
    args.sigmas = args.sigmas or ("1,1.5" if args.quick else "0.75,1,1.25,1.5,2")
    args.out = args.out or report_path(f"psf_units_{args.set}", args.quick)
    names = args.models or ("aniso,aniso_wide" if args.set == "aniso" else args.set)
    models = {m: load_checkpoint(m) for m in names.split(",")}
    changed = ", ".join(x for x in (
        f"{args.photons:g} signal photons" if args.photons else "",
        f"{args.background:g} background photons/px" if args.background is not None else "",
        "scalar Airy PSF" if args.shape == "airy" else "") if x)
    lines = report_header(f"PSF units on our simulator: seed-{args.set} across PSF widths",
                          f"{PROTOCOLS} seed-{args.set} (seed {SEEDS[args.set]}) v1 physics, PSF sigma swept"
                          + (f" ({changed}; the rest standard)" if changed else "") + f", {args.n} "
                          "tracks per condition, tracking path (`make_samples`).", command_line("bench_psf_units.py",
                                                                                             argv))
    unit = "per track" if args.set == "aniso" else "per frame"
    lines += ["", f"Scores {unit}.", "",
              "| PSF sigma (px) | estimator | scale s | MAE D1 | MAE D2 | angle (axial) | bias of (D1+D2)/2 |",
              "|---|---|---|---|---|---|---|"]
    t_all = time.perf_counter()
    for sigma in (float(x) for x in args.sigmas.split(",")):
        acq = Acquisition(psf_sigma_nm=100.0 * sigma, **({"signal_photons": args.photons} if args.photons else {}),
                          **({"background_photons": args.background} if args.background is not None else {}))
        scales = {}
        for name, (_, card) in models.items():
            train = pu.card_psf_sigma_px(card)
            err = args.width_error / 100.0
            scales[name] = (pu.psf_scale(train, sigma), pu.psf_scale(train, sigma, pixel_correction=False),
                            *([pu.psf_scale(train, sigma * (1 + err)), pu.psf_scale(train, sigma * (1 - err))]
                              if err else []))
        q = max(pu.source_patch_size(s) for pair in scales.values() for s in pair)
        t0 = time.perf_counter()
        settings = SampleSettings(patch_size=q, optics=RenderOptics(airy=True) if args.shape == "airy" else None)
        batch = make_samples(args.set, args.n, 30, acq, SEEDS[args.set], settings=settings)
        small = dataclasses.replace(batch, patches=pu.centre_crop(batch.patches, 11),
                                    outside_mask=pu.centre_crop(batch.outside_mask, 11))
        rows = []
        for name, (module, _) in models.items():
            s, plain, *wrong = scales[name]
            rows.append((f"`{name}` off", 1.0, run(module, *inputs(batch, 1.0), acq, 1.0)))
            rows.append((f"`{name}` on", s, run(module, *inputs(batch, s), acq, s)))
            rows.append((f"`{name}` on, plain ratio", plain, run(module, *inputs(batch, plain), acq, plain)))
            for sign, w in zip("+-", wrong):
                label = f"`{name}` on, width {sign}{args.width_error:g} %"
                rows.append((label, w, run(module, *inputs(batch, w), acq, w)))
        if args.set == "aniso":
            combined = classical_tracks(small, acq, ("combined (CVE + blur)",))["combined (CVE + blur)"]
            rows.append(("classical combined (CVE + blur)", float("nan"), combined))
        else:
            rows.append(("classical blur moments, 5-frame window", float("nan"),
                         classical_frames(small, acq)["blur-moment, 5-frame window"]))
        for label, s, pred in rows:
            lines.append(f"| {sigma:g} | {label} | {fmt(s)} | {scores(pred, batch)} |")
        print("\n".join(lines[-len(rows):]), f"\n({time.perf_counter() - t0:.0f} s, {q}-px patches)", flush=True)
    lines += ["", f"Run time {time.perf_counter() - t_all:.0f} s; load average at the end {load_average()}."]
    write_report(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
