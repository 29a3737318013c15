"""Robustness of the anisotropic model to the microscope: PSF width and photon count.

Protocol: PROTOCOLS.md seed-aniso physics (v1) with the acquisition swept as PROTOCOLS.md
lists it: PSF sigma 1.0 / 1.5 / 2.0 px at 1,000 photons, and 250 / 500 / 1,000 / 4,000
photons per frame at sigma 1.0 px; everything else standard. Each condition is a fresh test
set from ``make_samples("aniso", n, 30, acquisition, seed=2025)`` (the tracking path).
Default n = 1,000 tracks per condition (``--quick``: 300).

Rows: the bundled ``aniso`` model (trained at sigma 1.0 px, 1,000 photons only), any extra
checkpoints given with ``--extra NAME=PATH`` (e.g. a model retrained for sigma 2.0 px with
the train command), and the classical CVE, blur-moment and combined tensors, which are
given the true acquisition (PSF width) of each condition.

Command::

    .venv/bin/python benchmarks/bench_robustness.py [--quick] [--extra NAME=PATH ...] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import classical as C
from napari_spt_diffusion.estimation.checkpoint import describe_training, load_checkpoint
from napari_spt_diffusion.estimation.tensor import (
    angle_similarity_axial,
    angle_similarity_published,
    mean_absolute_error,
    theta_from_sin_cos_2theta,
)
from napari_spt_diffusion.simulation.samples import make_samples

SEED = 2025
CONDITIONS = [  # (label, psf_sigma_nm, signal_photons)
    ("sigma 1.0 px, 1000 photons (standard)", 100.0, 1000.0),
    ("sigma 1.5 px, 1000 photons", 150.0, 1000.0),
    ("sigma 2.0 px, 1000 photons", 200.0, 1000.0),
    ("sigma 1.0 px, 250 photons", 100.0, 250.0),
    ("sigma 1.0 px, 500 photons", 100.0, 500.0),
    ("sigma 1.0 px, 4000 photons", 100.0, 4000.0),
]


@torch.no_grad()
def _model(module, batch, acq: Acquisition) -> dict:
    out = []
    for a in range(0, len(batch), 512):
        p = torch.from_numpy(np.ascontiguousarray(batch.patches[a:a + 512], dtype=np.float32))
        d = torch.from_numpy(np.ascontiguousarray(batch.displacements[a:a + 512], dtype=np.float32))
        out.append(module(p, d, torch.ones(p.shape[:2], dtype=torch.bool)).numpy())
    o = np.concatenate(out).astype(np.float64)
    return {"D1_um2_s": acq.diffusion_to_um2_s(o[:, 0]), "D2_um2_s": acq.diffusion_to_um2_s(o[:, 1]),
            "theta_deg": theta_from_sin_cos_2theta(o[:, 2], o[:, 3])}


def _metrics(pred: dict, batch) -> str:
    d1, d2, th = batch.D1_um2_s[:, 0], batch.D2_um2_s[:, 0], batch.theta_deg[:, 0]
    return (f"{mean_absolute_error(pred['D1_um2_s'], d1):.3f} | {mean_absolute_error(pred['D2_um2_s'], d2):.3f} | "
            f"{angle_similarity_published(pred['theta_deg'], th):.3f} | {angle_similarity_axial(pred['theta_deg'], th):.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 tracks per condition instead of 1,000")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--extra", action="append", default=[], help="NAME=PATH of another checkpoint to evaluate")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.n or (300 if args.quick else 1000)
    out = args.out or Path(__file__).resolve().parent / "reports" / ("robustness_quick.md" if args.quick and args.n is None
                                                                      else "robustness.md")
    models = {"model `aniso` (bundled)": load_checkpoint("aniso")}
    for spec in args.extra:
        name, _, path = spec.partition("=")
        models[f"model `{name}`"] = load_checkpoint(path)
    cmd = " ".join([".venv/bin/python", "benchmarks/bench_robustness.py"] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
    lines = ["# Robustness: PSF width and photon count (seed-aniso physics)\n",
             f"- Protocol: PROTOCOLS.md seed-aniso v1 physics and sweeps, {n} tracks per condition, seed {SEED}, "
             "test sets made through the tracking path (`make_samples`).",
             f"- Command: `{cmd}`",
             f"- Date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; machine: {platform.machine()}, {os.cpu_count()} CPU "
             f"cores (shared), torch {torch.__version__}.",
             "- Models trained for one acquisition are evaluated outside it; the classical estimators are given each "
             "condition's true PSF width.\n"]
    for name, (_, card) in models.items():
        a = card["training_acquisition"]
        tr = card["training"]
        lines.append(f"- {name}: trained at PSF sigma {a['psf_sigma_nm']:g} nm, {a['signal_photons']:g} photons; "
                     f"{describe_training(card)}; command "
                     f"`{tr['command']}`.")
    lines.append("")
    lines.append("Cells: MAE D1 | MAE D2 (um^2/s) | angle similarity published | axial.\n")
    for label, sigma_nm, photons in CONDITIONS:
        acq = Acquisition(psf_sigma_nm=sigma_nm, signal_photons=photons)
        t0 = time.perf_counter()
        batch = make_samples("aniso", n, n_frames=30, acquisition=acq, seed=SEED)
        lines.append(f"## {label}\n")
        lines.append("| estimator | MAE D1 | MAE D2 | angle (published) | angle (axial) |")
        lines.append("|---|---|---|---|---|")
        for name, (module, _) in models.items():
            lines.append(f"| {name} | {_metrics(_model(module, batch, acq), batch)} |")
        kw = {"subpixel_offset_px": batch.subpixel_offset_px, "outside_mask": batch.outside_mask}
        lines.append(f"| CVE tensor | {_metrics(C.cve_tensor_batch(batch.positions_px, acq), batch)} |")
        lines.append(f"| blur-moment tensor | {_metrics(C.blur_moment_tensor_batch(batch.patches, acq, **kw), batch)} |")
        lines.append(f"| combined (CVE + blur) | "
                     f"{_metrics(C.combined_tensor_batch(batch.positions_px, batch.patches, acq, **kw), batch)} |")
        lines.append(f"\nDetection found the spot in {100 * batch.detected.mean():.2f} % of frames; "
                     f"{time.perf_counter() - t0:.0f} s for this condition.\n")
        print("\n".join(lines[-9:]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
