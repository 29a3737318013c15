"""Robustness of the anisotropic model to crowding: a second particle next to the tracked one.

Protocol "crowding" (v1): the seed-aniso physics of docs/protocols.md at the standard acquisition; every
track gets a neighbour of the same physics (its own D1, D2/D1 and angle) started at a distance
drawn uniformly from a bin (1.5-3, 3-4.5 or 4.5-6 px; the 11 x 11 patch reaches 5 px from its
centre) in a uniform direction, diffusing independently; both are rendered into the same
frames and the tracker follows the first (``make_samples(..., neighbour_fraction=1,
neighbour_distance_px=bin)``). An "isolated" row (no neighbour) is measured beside them.
Test seed 2025 (the seed-aniso test seed, never used for training), n = 1,000 tracks per
condition by default.

Why: on the ``field`` end-to-end movie, tracks with another particle within 6 px in more
than 5 % of their frames carried most of the per-track error (benchmarks/reports/end_to_end.md,
breakdown "crowded"); the seed-aniso test set has no neighbours at all.

Rows: the bundled ``aniso`` model, any ``--extra NAME=PATH`` checkpoint, and the classical
CVE, blur-moment and combined tensors on the same tracks.

Command::

    .venv/bin/python benchmarks/bench_crowding.py [--quick] [--n N] [--extra NAME=PATH ...] [--threads N] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import SEEDS, classical_tracks, command_line, report_header, report_path, run_model, write_report
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.checkpoint import describe_training, load_checkpoint
from napari_spt_diffusion.metrics import angle_similarity_axial, angle_similarity_published, mean_absolute_error
from napari_spt_diffusion.training.samples import make_samples

SEED = SEEDS["aniso"]
CONDITIONS = [  # (label, neighbour distance bin in px or None)
    ("isolated (no neighbour)", None),
    ("neighbour 1.5-3 px away at the start", (1.5, 3.0)),
    ("neighbour 3-4.5 px away at the start", (3.0, 4.5)),
    ("neighbour 4.5-6 px away at the start", (4.5, 6.0)),
]


def _scores(pred: dict, batch) -> tuple[float, float, float, float]:
    d1, d2, th = batch.D1_um2_s[:, 0], batch.D2_um2_s[:, 0], batch.theta_deg[:, 0]
    return (mean_absolute_error(pred["D1_um2_s"], d1), mean_absolute_error(pred["D2_um2_s"], d2),
            angle_similarity_published(pred["theta_deg"], th), angle_similarity_axial(pred["theta_deg"], th))


def _bias(pred: dict, batch) -> float:
    """Median relative D1 error (pred / true - 1)."""
    return float(np.median(pred["D1_um2_s"] / batch.D1_um2_s[:, 0] - 1.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="tracks per condition (default 1000)")
    parser.add_argument("--quick", action="store_true", help="200 tracks per condition, report crowding_quick.md")
    parser.add_argument("--extra", action="append", default=[], help="NAME=PATH of another checkpoint to evaluate")
    parser.add_argument("--no-bundled", action="store_true", help="evaluate only the --extra checkpoints")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.n = args.n or (200 if args.quick else 1000)
    args.out = args.out or report_path("crowding", args.quick)
    if args.threads:
        torch.set_num_threads(args.threads)
    acq = Acquisition()
    models = {} if args.no_bundled else {"model `aniso` (bundled)": load_checkpoint("aniso")}
    for spec in args.extra:
        name, _, path = spec.partition("=")
        models[f"model `{name}`"] = load_checkpoint(path)
    lines = report_header("Crowding: a second particle next to the tracked one (seed-aniso physics)",
                          f"crowding v1 (docstring of `benchmarks/bench_crowding.py`), {args.n} tracks per condition, "
                          f"seed {SEED}, standard acquisition, test sets made through the tracking path "
                          "(`make_samples`).", command_line("bench_crowding.py", argv))
    for name, (_, card) in models.items():
        tr = card["training"]
        lines.append(f"- {name}: {describe_training(card)}, last stage's neighbour fraction "
                     f"{tr.get('neighbour_fraction', 0.0):g}"
                     + (f", warm start from `{tr['warm_start']['state']}`" if tr.get("warm_start") else "")
                     + f"; command `{tr['command']}`.")
    lines += ["", "Cells: MAE D1 | MAE D2 (um^2/s) | angle similarity published | axial | median relative D1 "
                  "error.", ""]
    for label, dist in CONDITIONS:
        t0 = time.perf_counter()
        if dist is None:
            batch = make_samples("aniso", args.n, n_frames=30, acquisition=acq, seed=SEED)
        else:
            batch = make_samples("aniso", args.n, n_frames=30, acquisition=acq, seed=SEED, neighbour_fraction=1.0,
                                 neighbour_distance_px=dist)
        lines += [f"## {label}", "", "| estimator | MAE D1 | MAE D2 | angle (published) | angle (axial) | median rel. "
                                     "D1 error |",
                  "|---|---|---|---|---|---|"]
        rows = {name: run_model(module, batch, acq)[0] for name, (module, _) in models.items()}
        rows.update(classical_tracks(batch, acq, ("CVE tensor", "blur-moment tensor", "combined (CVE + blur)")))
        for name, pred in rows.items():
            s = _scores(pred, batch)
            lines.append(f"| {name} | {s[0]:.3f} | {s[1]:.3f} | {s[2]:.3f} | {s[3]:.3f} | {_bias(pred, batch):+.3f} |")
        lines += ["", f"Detection found the tracked spot in {100 * batch.detected.mean():.2f} % of frames; "
                  f"{time.perf_counter() - t0:.0f} s for this condition.", ""]
        print("\n".join(lines[-len(rows) - 6:]), flush=True)
    write_report(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
