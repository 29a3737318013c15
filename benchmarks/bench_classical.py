"""Classical diffusion-tensor estimators on the seed-aniso test set.

Protocol: PROTOCOLS.md "seed-aniso" (v1): 5,000 single-state anisotropic tracks of 30
frames, D1 from {0.05, ..., 6.00} um^2/s, D2 = r D1 with r ~ U[0.1, 1), theta ~ U[0, 180),
standard acquisition, generator seed 2025. The test set is made by
``simulation.samples.make_samples("aniso", 5000, 30, Acquisition(), seed=2025)``, i.e.
rendered and then detected, localized and cropped by the tracking code, exactly as the
learned models see it. ``--quick`` uses the first 500 tracks' worth (``n = 500``, same
seed; a different, smaller set).

Estimators (``estimation/classical.py``): MSD (isotropic, optimal number of points; its
single D is scored as both D1 and D2, it has no angle), MSD tensor, CVE tensor,
blur-moment tensor and their combination. Metrics: MAE of D1 and D2 (um^2/s), angle
similarity as published (mean cos(theta_pred - theta_true), both in [0, 180)) and axial
(mean |cos|), MAE per D1 range, the fraction of clipped (non-positive-definite) tensors,
and the throughput of each estimator and of the sample generation.

Command::

    .venv/bin/python benchmarks/bench_classical.py [--quick] [--out PATH] [--samples PATH.npz]
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

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import classical as C
from napari_spt_diffusion.estimation.tensor import (
    angle_similarity_axial,
    angle_similarity_published,
    mean_absolute_error,
)
from napari_spt_diffusion.simulation.samples import load_samples, make_samples, save_samples

#: Published figures on seed-aniso (cross-transformer / LSTM / Pix2D), PROTOCOLS.md.
PUBLISHED = {
    "cross-transformer (published)": (0.361, 0.245, 0.914),
    "LSTM (published)": (0.37, 0.261, 0.902),
    "Pix2D (published)": (0.47, 0.353, 0.906),
}
BINS = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 6.01))


def _estimate(batch, acq):
    pos, patches = batch.positions_px, batch.patches
    kw = {"subpixel_offset_px": batch.subpixel_offset_px, "outside_mask": batch.outside_mask}
    results, timings = {}, {}

    t0 = time.perf_counter()
    msd = C.msd_diffusion_batch(pos, acq)
    timings["MSD (isotropic)"] = time.perf_counter() - t0
    results["MSD (isotropic)"] = {
        "D1_um2_s": msd["D_um2_s"], "D2_um2_s": msd["D_um2_s"], "theta_deg": None,
        "clipped": np.zeros(len(pos), bool), "alpha": msd["alpha"], "n_points": msd["n_points"],
    }
    for name, fn in (
        ("MSD tensor", lambda: C.msd_tensor_batch(pos, acq)),
        ("CVE tensor", lambda: C.cve_tensor_batch(pos, acq)),
        ("blur-moment tensor", lambda: C.blur_moment_tensor_batch(patches, acq, **kw)),
        ("combined (CVE + blur)", lambda: C.combined_tensor_batch(pos, patches, acq, **kw)),
    ):
        t0 = time.perf_counter()
        results[name] = fn()
        timings[name] = time.perf_counter() - t0
    return results, timings


def _fmt(x, digits=3):
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 tracks instead of 5,000")
    parser.add_argument("--n", type=int, default=None, help="number of tracks (overrides --quick)")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--out", type=Path, default=None, help="report path (default benchmarks/reports/classical[_quick].md)")
    parser.add_argument("--samples", type=Path, default=None, help="reuse/keep the test set in this .npz")
    args = parser.parse_args(argv)
    n = args.n or (500 if args.quick else 5000)
    here = Path(__file__).resolve().parent
    out = args.out or here / "reports" / ("classical_quick.md" if args.quick and args.n is None else "classical.md")
    acq = Acquisition()

    gen_rate = None
    if args.samples is not None and args.samples.exists():
        batch = load_samples(args.samples)
        if len(batch) != n or batch.meta.get("seed") != args.seed:
            raise SystemExit(f"{args.samples} holds {len(batch)} tracks of seed {batch.meta.get('seed')}, not {n} of {args.seed}")
    else:
        t0 = time.perf_counter()
        batch = make_samples("aniso", n, n_frames=30, acquisition=acq, seed=args.seed)
        gen_s = time.perf_counter() - t0
        gen_rate = n / gen_s
        print(f"generated {n} samples in {gen_s:.1f} s ({gen_rate:.0f} samples/s)", flush=True)
        if args.samples is not None:
            save_samples(args.samples, batch)

    D1t, D2t, tht = batch.D1_um2_s[:, 0], batch.D2_um2_s[:, 0], batch.theta_deg[:, 0]
    results, timings = _estimate(batch, acq)

    lines = []
    lines.append("# Classical estimators on seed-aniso\n")
    lines.append(f"- Protocol: PROTOCOLS.md seed-aniso v1, {n} tracks of 30 frames, standard acquisition, generator seed {args.seed}.")
    lines.append("- Test set: `simulation.samples.make_samples(\"aniso\", n, 30, Acquisition(), seed)` -- rendered windows, "
                 "then the tracker's detection, localization and patch cutting (the path the models see).")
    lines.append(f"- Command: `{' '.join(['.venv/bin/python', 'benchmarks/bench_classical.py'] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])}`")
    lines.append(f"- Date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; machine: {platform.machine()}, {os.cpu_count()} CPU cores "
                 f"(shared), Python {platform.python_version()}, numpy {np.__version__}.")
    if gen_rate is not None:
        lines.append(f"- Sample generation through the tracking path: {gen_rate:.0f} samples/s "
                     f"(30 frames, 10 sub-steps, 19 x 19 windows, DoG detection + MLE fit + 11 x 11 patches).")
    lines.append(f"- Detection found the spot in {100 * batch.detected.mean():.2f} % of frames; fit converged in "
                 f"{100 * batch.fit_ok.mean():.2f} %; localization RMSE vs the true camera position "
                 f"{np.sqrt(np.mean((batch.positions_px - batch.true_positions_px) ** 2)) * acq.pixel_size_nm:.1f} nm per axis.\n")

    lines.append("## Accuracy\n")
    lines.append("| estimator | MAE D1 (um^2/s) | MAE D2 (um^2/s) | angle similarity (published) | angle similarity (axial) | clipped | tracks/s |")
    lines.append("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        th = r["theta_deg"]
        pub = None if th is None else angle_similarity_published(th, tht)
        ax = None if th is None else angle_similarity_axial(th, tht)
        lines.append(
            f"| {name} | {_fmt(mean_absolute_error(r['D1_um2_s'], D1t))} | {_fmt(mean_absolute_error(r['D2_um2_s'], D2t))} | "
            f"{_fmt(pub)} | {_fmt(ax)} | {100 * np.mean(r['clipped']):.1f} % | {n / timings[name]:.0f} |"
        )
    for name, (m1, m2, ang) in PUBLISHED.items():
        lines.append(f"| {name} | {m1:.3f} | {m2:.3f} | {ang:.3f} | n/a | n/a | n/a |")
    lines.append("\nThe published rows come from another simulator (photon counts not given): indicative only. "
                 "MSD (isotropic) has no angle; its D is scored as both D1 and D2.\n")

    lines.append("## MAE D1 / MAE D2 by true D1 (um^2/s)\n")
    header = " | ".join(f"D1 in [{lo:g}, {min(hi, 6):g}]" for lo, hi in BINS)
    lines.append(f"| estimator | {header} |")
    lines.append("|---|" + "---|" * len(BINS))
    for name, r in results.items():
        cells = []
        for lo, hi in BINS:
            s = (D1t >= lo) & (D1t < hi)
            cells.append(f"{_fmt(mean_absolute_error(r['D1_um2_s'][s], D1t[s]), 2)} / {_fmt(mean_absolute_error(r['D2_um2_s'][s], D2t[s]), 2)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = ", ".join(str(int(np.sum((D1t >= lo) & (D1t < hi)))) for lo, hi in BINS)
    lines.append(f"\nTracks per range: {counts}.\n")

    msd = results["MSD (isotropic)"]
    lines.append("## MSD details\n")
    lines.append(f"- alpha from the log-log fit (offset removed): median {np.nanmedian(msd['alpha']):.3f}, "
                 f"mean {np.nanmean(msd['alpha']):.3f} (Brownian: 1).")
    values, counts_p = np.unique(msd["n_points"], return_counts=True)
    lines.append("- optimal number of MSD points used: " + ", ".join(f"{v}: {c}" for v, c in zip(values, counts_p)) + ".")
    comb = results["combined (CVE + blur)"]
    lines.append(f"- combined: mean CVE weight {np.mean(comb['weight_cve_D1']):.2f} on D1, "
                 f"{np.mean(comb['weight_cve_D2']):.2f} on D2 (the rest from the blur moments).")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)
    print("\n".join(lines))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
