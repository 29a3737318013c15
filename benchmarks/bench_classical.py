"""Classical diffusion-tensor estimators on the seed-aniso test set.

Protocol: "seed-aniso" (v1) of docs/protocols.md: 5,000 single-state anisotropic tracks of 30
frames, D1 from {0.05, ..., 6.00} um^2/s, D2 = r D1 with r ~ U[0.1, 1), theta ~ U[0, 180),
standard acquisition, generator seed 2025. The test set is made by
``make_samples("aniso", 5000, 30, Acquisition(), seed=2025)`` (``_common.seed_test_set``), i.e.
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
import sys
import time
from pathlib import Path

import numpy as np

from _common import (
    CLASSICAL_TRACKS,
    PROTOCOLS,
    classical_tracks,
    command_line,
    fmt,
    report_header,
    report_path,
    seed_test_set,
    write_report,
)
from _common import PUBLISHED as _PUBLISHED
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.metrics import (
    angle_similarity_axial,
    angle_similarity_published,
    mean_absolute_error,
)
from napari_spt_diffusion.training.samples import load_samples, save_samples

#: Published figures on seed-aniso (cross-transformer / LSTM / Pix2D): MAE D1, MAE D2, angle similarity.
PUBLISHED = {f"{name} (published)": v[:3] for name, v in _PUBLISHED["aniso"].items()}
BINS = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 6.01))


def _estimate(batch, acq):
    results, timings = {}, {}
    for name in CLASSICAL_TRACKS:
        t0 = time.perf_counter()
        results[name] = classical_tracks(batch, acq, (name,))[name]
        timings[name] = time.perf_counter() - t0
    return results, timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 tracks instead of 5,000")
    parser.add_argument("--n", type=int, default=None, help="number of tracks (overrides --quick)")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--out", type=Path, default=None, help="report path (default "
                                                               "benchmarks/reports/classical[_quick].md)")
    parser.add_argument("--samples", type=Path, default=None, help="reuse/keep the test set in this .npz")
    args = parser.parse_args(argv)
    n = args.n or (500 if args.quick else 5000)
    out = args.out or report_path("classical", args.quick and args.n is None)
    acq = Acquisition()

    gen_rate = None
    if args.samples is not None and args.samples.exists():
        batch = load_samples(args.samples)
        if len(batch) != n or batch.meta.get("seed") != args.seed:
            raise SystemExit(f"{args.samples} holds {len(batch)} tracks of seed {batch.meta.get('seed')}, not {n} of "
                             f"{args.seed}")
    else:
        batch, gen_rate = seed_test_set("aniso", n, acq, seed=args.seed)
        print(f"generated {n} samples in {n / gen_rate:.1f} s ({gen_rate:.0f} samples/s)", flush=True)
        if args.samples is not None:
            save_samples(args.samples, batch)

    D1t, D2t, tht = batch.D1_um2_s[:, 0], batch.D2_um2_s[:, 0], batch.theta_deg[:, 0]
    results, timings = _estimate(batch, acq)

    lines = report_header("Classical estimators on seed-aniso",
                          f"{PROTOCOLS} seed-aniso v1, {n} tracks of 30 frames, standard acquisition, generator seed "
                          f"{args.seed}.", command_line("bench_classical.py", argv))
    lines.append("- Test set: `training.samples.make_samples(\"aniso\", n, 30, Acquisition(), seed)` -- rendered "
                 "windows, then the tracker's detection, localization and patch cutting (the path the models see).")
    if gen_rate is not None:
        lines.append(f"- Sample generation through the tracking path: {gen_rate:.0f} samples/s "
                     f"(30 frames, 10 sub-steps, 19 x 19 windows, DoG detection + MLE fit + 11 x 11 patches).")
    lines.append(f"- Detection found the spot in {100 * batch.detected.mean():.2f} % of frames; fit converged in "
                 f"{100 * batch.fit_ok.mean():.2f} %; localization RMSE vs the true camera position "
                 f"{np.sqrt(np.mean((batch.positions_px - batch.true_positions_px) ** 2)) * acq.pixel_size_nm:.1f} nm "
                 "per axis.\n")

    lines.append("## Accuracy\n")
    lines.append("| estimator | MAE D1 (um^2/s) | MAE D2 (um^2/s) | angle similarity (published) | angle similarity "
                 "(axial) | clipped | tracks/s |")
    lines.append("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        th = r["theta_deg"]
        pub = None if th is None else angle_similarity_published(th, tht)
        ax = None if th is None else angle_similarity_axial(th, tht)
        lines.append(
            f"| {name} | {fmt(mean_absolute_error(r['D1_um2_s'], D1t))} | "
            f"{fmt(mean_absolute_error(r['D2_um2_s'], D2t))} | "
            f"{fmt(pub)} | {fmt(ax)} | {100 * np.mean(r['clipped']):.1f} % | {n / timings[name]:.0f} |"
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
            cells.append(f"{fmt(mean_absolute_error(r['D1_um2_s'][s], D1t[s]), 2)} / "
                         f"{fmt(mean_absolute_error(r['D2_um2_s'][s], D2t[s]), 2)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = ", ".join(str(int(np.sum((D1t >= lo) & (D1t < hi)))) for lo, hi in BINS)
    lines.append(f"\nTracks per range: {counts}.\n")

    msd = results["MSD (isotropic)"]
    lines.append("## MSD details\n")
    lines.append(f"- alpha from the log-log fit (offset removed): median {np.nanmedian(msd['alpha']):.3f}, "
                 f"mean {np.nanmean(msd['alpha']):.3f} (Brownian: 1).")
    values, counts_p = np.unique(msd["n_points"], return_counts=True)
    lines.append("- optimal number of MSD points "
                 "used: " + ", ".join(f"{v}: {c}" for v, c in zip(values, counts_p)) + ".")
    comb = results["combined (CVE + blur)"]
    lines.append(f"- combined: mean CVE weight {np.mean(comb['weight_cve_D1']):.2f} on D1, "
                 f"{np.mean(comb['weight_cve_D2']):.2f} on D2 (the rest from the blur moments).")

    write_report(out, lines)
    print("\n".join(lines))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
