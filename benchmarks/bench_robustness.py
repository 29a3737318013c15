"""Robustness of the bundled models to the microscope: PSF width and photon count.

Protocol (docs/protocols.md): seed-aniso, seed-binding and seed-twostate physics (v1) with the
acquisition swept as the standard acquisition's sweeps list it: PSF sigma 1.0 / 1.5 / 2.0 px at 1,000 photons,
and 250 / 500 / 1,000 / 4,000 photons per frame at sigma 1.0 px; everything else standard.
Each condition is a fresh test set from ``make_samples(model, n, 30, acquisition, seed)``
(the tracking path; seeds 2025 / 2026 / 2027 as in bench_accuracy.py, ``_common.SEEDS``).
Default n = 1,000 tracks per condition (``--quick``: 300).

Rows per set: the bundled model (trained at sigma 1.0 px, 1,000 photons only), any extra
checkpoints of that motion model given with ``--extra NAME=PATH`` (e.g. a model retrained
for sigma 2.0 px with the train command), and the classical estimators, which are given the
true acquisition (PSF width) of each condition: for seed-aniso the per-track CVE,
blur-moment and combined tensors; for the two-state sets the per-frame sliding-window
blur-moment (+-2 frames) and CVE (+-3 frames) tensors of ``_common.classical_frames``. The
metrics are those of bench_accuracy.py (``_common``) (per track for seed-aniso, per frame and changepoint MAE
for the two-state sets).

Command::

    .venv/bin/python benchmarks/bench_robustness.py [--quick] [--sets aniso,binding,twostate]
        [--extra NAME=PATH ...] [--threads K] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from _common import (
    PROTOCOLS,
    SEEDS,
    classical_frames,
    classical_tracks,
    command_line,
    fmt,
    frame_metrics,
    report_header,
    report_path,
    run_model,
    seed_test_set,
    track_metrics,
    write_report,
)
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.checkpoint import describe_training, load_checkpoint

CONDITIONS = [  # (label, psf_sigma_nm, signal_photons)
    ("sigma 1.0 px, 1000 photons (standard)", 100.0, 1000.0),
    ("sigma 1.5 px, 1000 photons", 150.0, 1000.0),
    ("sigma 2.0 px, 1000 photons", 200.0, 1000.0),
    ("sigma 1.0 px, 250 photons", 100.0, 250.0),
    ("sigma 1.0 px, 500 photons", 100.0, 500.0),
    ("sigma 1.0 px, 4000 photons", 100.0, 4000.0),
]


def _track_cells(m: dict) -> str:
    return " | ".join(fmt(m[k]) for k in ("mae_D1_um2_s", "mae_D2_um2_s", "angle_similarity_published",
                                            "angle_similarity_axial"))


def _frame_cells(m: dict) -> str:
    return " | ".join(fmt(m[k]) for k in ("mae_D1_um2_s", "mae_D2_um2_s", "mae_Dmean_um2_s",
                                            "angle_similarity_published", "angle_similarity_axial",
                                            "changepoint_mae_frames_labelled_change"))


def _aniso_rows(models: dict, batch, acq: Acquisition) -> list[str]:
    lines = ["| estimator | MAE D1 | MAE D2 | angle (published) | angle (axial) |", "|---|---|---|---|---|"]
    for name, (module, _) in models.items():
        lines.append(f"| {name} | {_track_cells(track_metrics(run_model(module, batch, acq)[0], batch))} |")
    classical = classical_tracks(batch, acq, ("CVE tensor", "blur-moment tensor", "combined (CVE + blur)"))
    for name, est in classical.items():
        lines.append(f"| {name} | {_track_cells(track_metrics(est, batch))} |")
    return lines


def _frame_rows(models: dict, batch, acq: Acquisition) -> list[str]:
    lines = ["| estimator | MAE D1 | MAE D2 | MAE (D1+D2)/2 | angle (published, free frames) | "
             "angle (axial, free frames) | changepoint MAE (frames, tracks whose labels change) |",
             "|---|---|---|---|---|---|---|"]
    for name, (module, _) in models.items():
        lines.append(f"| {name} | {_frame_cells(frame_metrics(run_model(module, batch, acq)[0], batch))} |")
    for name, est in classical_frames(batch, acq).items():
        lines.append(f"| {name} | {_frame_cells(frame_metrics(est, batch))} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 tracks per condition instead of 1,000")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--sets", default="aniso,binding,twostate", help="comma-separated motion models")
    parser.add_argument("--extra", action="append", default=[], help="NAME=PATH of another checkpoint to evaluate")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.n or (300 if args.quick else 1000)
    out = args.out or report_path("robustness", args.quick and args.n is None)
    sets = [x.strip() for x in args.sets.split(",") if x.strip()]
    unknown = sorted(set(sets) - set(SEEDS))
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(SEEDS)}")
    models: dict[str, dict] = {m: {f"model `{m}` (bundled)": load_checkpoint(m)} for m in sets}
    for spec in args.extra:
        name, _, path = spec.partition("=")
        module, card = load_checkpoint(path)
        if card["motion_model"] not in models:
            parser.error(f"--extra {name}: a {card['motion_model']} model, but that set is not in --sets")
        models[card["motion_model"]][f"model `{name}`"] = (module, card)
    cmd = command_line("bench_robustness.py", argv)
    lines = report_header("Robustness: PSF width and photon count",
                          f"{PROTOCOLS} {', '.join(f'seed-{m} (seed {SEEDS[m]})' for m in sets)} v1 physics and the "
                          f"acquisition sweeps, {n} tracks per condition, test sets made through the tracking path "
                          "(`make_samples`).", cmd)
    lines += ["- Models trained for one acquisition are evaluated outside it; the classical estimators are given each "
              "condition's true PSF width. Metrics as in `bench_accuracy.py` (per track for seed-aniso; per frame, "
              "angle over the free frames and changepoint MAE over the tracks whose labels change for the two-state "
              "sets).\n"]
    for model in sets:
        lines.append(f"# seed-{model}\n")
        for name, (_, card) in models[model].items():
            a = card["training_acquisition"]
            tr = card["training"]
            lines.append(f"- {name}: trained at PSF sigma {a['psf_sigma_nm']:g} nm, {a['signal_photons']:g} photons; "
                         f"{describe_training(card)}; command `{tr['command']}`.")
        lines.append("")
        for label, sigma_nm, photons in CONDITIONS:
            acq = Acquisition(psf_sigma_nm=sigma_nm, signal_photons=photons)
            t0 = time.perf_counter()
            batch, _ = seed_test_set(model, n, acq)
            lines.append(f"## seed-{model}, {label}\n")
            rows = _aniso_rows if model == "aniso" else _frame_rows
            lines += rows(models[model], batch, acq)
            lines.append(f"\nDetection found the spot in {100 * batch.detected.mean():.2f} % of frames; "
                         f"{time.perf_counter() - t0:.0f} s for this condition.\n")
            print("\n".join(lines[-10:]), flush=True)
    write_report(out, lines)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
