"""Calibrate the changepoint penalties of ``estimation/changepoints.py``.

Protocol (seed 11, all sequences simulated here):

Per-frame estimate sequences of ``(log10 D1, log10 D2)`` are made from simulated
trajectories (``simulation.trajectories``, standard acquisition) in two ways:

* ``ar(rho)``: the true per-frame labels plus Gaussian AR(1) noise with lag-1
  correlation ``rho`` (0, 0.5, 0.8; a model that sees neighbouring frames gives
  correlated errors) and standard deviation 0.10 decades for states with
  D >= 0.05 um^2/s and 0.25 decades below (near the localization floor, where
  per-frame estimates are poor); the two features' noises are correlated (0.5).
* ``local``: a real per-frame estimator: the CVE tensor (``estimation.classical``) of the
  9 localized positions around each frame (10 nm Gaussian localization error added to
  the camera-averaged positions); noisy and strongly correlated, a pessimistic stand-in
  for a model.

Sets: one-state tracks (seed-aniso parameters) of 20/30/50/100/200 frames; two-state
tracks with one switch (seed-binding and seed-twostate, 30 frames); long tracks of 200
frames with Markov switching (binding: bound D ~ U[0.005, 0.01] and unbound D1 ~ U[3, 6],
D2/D1 ~ U[0.1, 1), 2 switches/s each way, about 4 changepoints per track; two
isotropic states with D ~ U[0.05, 6] each, same rates).

Measured: false-positive rate (fraction of one-state tracks given any changepoint),
detection rate and location error on single-switch tracks, precision/recall/F1
(within 2 frames) on multi-switch tracks, over a grid of penalties.

Chosen (recorded in ``changepoints.py`` and ``reports/changepoints.md``): the smallest
grid penalty keeping the false-positive rate at or below 1 % (single test, every length)
for the sources ar(0) and ar(0.5); for several changepoints, the penalty with the best
mean F1 on the multi-switch sets among those keeping false positives on 200-frame
one-state tracks at or below 2 %.
ar(0.8) and local are reported as stress tests, not used for the choice: they are
noisier and more correlated than the outputs of a model that sees the whole window
(the end-to-end benchmark measures the chosen penalties on the bundled models' outputs).

Result of the full run (2026-11-23, ``benchmarks/reports/changepoints.md``): single-change
penalty 2.0 (false positives <= 0.1 % for ar(0) and <= 1.0 % for ar(0.5) at 20-200
frames; 30-frame binding switches detected in 100 % / 97 % of tracks), binary
segmentation 1.5 (no false positive on 300 one-state 200-frame tracks; F1 0.94 / 0.93 on
multi-switch binding tracks), PELT 1.0. ar(0.8) raises the single-change false
positives to 3.8 % at 20 frames (pen 2); the local-CVE source to 10 % at 20 frames.

Confirmation (``--confirm binding=PATH,twostate=PATH``, seed 13): one-state tracks
(seed-aniso, D1 0.05-6 um^2/s, plus each model's own single states) of 30, 100 and 200
frames and switching tracks (one switch in 30 frames; Markov switching over 200 frames)
are rendered, localized and estimated by the models; the false-changepoint rate per
one-state track and precision/recall/F1 of the switches are measured before the
displacement confirmation (``changepoints.confirm_changepoints``) and after it, at
several family-wise levels, with and without the scan correction. The section
"Confirmation on displacements" of ``reports/changepoints.md`` is replaced.

Command::

    .venv/bin/python benchmarks/calibrate_changepoints.py [--quick] [--out benchmarks/reports/changepoints.md]
    .venv/bin/python benchmarks/calibrate_changepoints.py --confirm binding=binding,twostate=twostate
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import REPORTS, run_lines, write_report
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import changepoints as cp
from napari_spt_diffusion.estimation.classical import cve_tensor_batch
from napari_spt_diffusion.estimation.confirmation import (
    DEFAULT_CONFIRM_ALPHA,
    DEFAULT_CONFIRM_GUARD,
    confirm_changepoints,
)
from napari_spt_diffusion.metrics import changepoint_scores, match_changepoints
from napari_spt_diffusion.simulation.trajectories import (
    simulate_anisotropic,
    simulate_binding,
    simulate_multistate,
    simulate_two_state,
)

SEED = 11


def torch_threads(n: int) -> None:
    """Limit torch to ``n`` threads (the machine is shared; model inference only)."""
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # the penalty calibration itself does not need torch
        pass


PENALTIES_SINGLE = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0]
PENALTIES_MULTI = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0]
PENALTIES_PELT = [1.0, 2.0, 3.0, 4.0]
FP_TARGET_SINGLE = 0.01
FP_TARGET_MULTI = 0.02
CHOICE_SOURCES = ("ar0", "ar0.5")
LOC_NOISE_NM = 10.0
WINDOW_HALF = 4


# ------------------------------------------------------------------ sequences
def _ar1(shape: tuple[int, int, int], rho: float, rng: np.random.Generator) -> np.ndarray:
    """(N, T, 2) unit-variance AR(1) noise along T, features correlated 0.5."""
    n, t, k = shape
    cov = np.array([[1.0, 0.5], [0.5, 1.0]])
    chol = np.linalg.cholesky(cov)
    white = rng.normal(size=shape) @ chol.T
    out = np.empty_like(white)
    out[:, 0] = white[:, 0]
    scale = np.sqrt(1.0 - rho**2)
    for i in range(1, t):
        out[:, i] = rho * out[:, i - 1] + scale * white[:, i]
    return out


def sequences_ar(D1: np.ndarray, D2: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """(N, T, 2) noisy log10 D features around the labels."""
    truth = np.log10(np.stack([D1, D2], axis=-1))
    sigma = np.where(np.stack([D2, D2], axis=-1) >= 0.05, 0.10, 0.25)
    return truth + sigma * _ar1(truth.shape, rho, rng)


def sequences_local(traj, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """(N, T, 2) log10 D features of a local-window CVE estimator."""
    noise = rng.normal(scale=LOC_NOISE_NM / acq.pixel_size_nm, size=traj.frame_positions_px.shape)
    pos = traj.frame_positions_px + noise
    n, t, _ = pos.shape
    w = WINDOW_HALF
    padded = np.full((n, t + 2 * w, 2), np.nan)
    padded[:, w : w + t] = pos
    idx = np.arange(t)[:, None] + np.arange(2 * w + 1)[None, :]
    windows = padded[:, idx]  # (N, T, 2w+1, 2)
    out = cve_tensor_batch(windows.reshape(n * t, 2 * w + 1, 2), acq)
    d1 = out["D1_um2_s"].reshape(n, t)
    d2 = out["D2_um2_s"].reshape(n, t)
    return np.stack([cp.changepoint_features(a, b) for a, b in zip(d1, d2)])


def make_sequences(source: str, traj, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    if source == "local":
        return sequences_local(traj, acq, rng)
    rho = float(source[2:])
    return sequences_ar(traj.D1_um2_s, traj.D2_um2_s, rho, rng)


# --------------------------------------------------------------------- sets
def one_state(n: int, t: int, acq: Acquisition, rng: np.random.Generator):
    return simulate_anisotropic(n, t, acq, rng)


BINDING_STATES = [
    {"D1_um2_s": (0.005, 0.01), "D2_over_D1": 1.0, "theta_deg": 0.0},
    {"D1_um2_s": (3.0, 6.0), "D2_over_D1": (0.1, 1.0)},
]
TWOSTATE_STATES = [
    {"D1_um2_s": (0.05, 6.0), "D2_over_D1": 1.0, "theta_deg": 0.0},
    {"D1_um2_s": (0.05, 6.0), "D2_over_D1": 1.0, "theta_deg": 0.0},
]
SWITCH_RATE_PER_S = 2.0


# ------------------------------------------------------- check on model outputs
def _sequences_model(traj, estimator, acq: Acquisition, rng: np.random.Generator) -> list[np.ndarray]:
    """log10 D features of a model's per-frame estimates on rendered, tracked trajectories."""
    from napari_spt_diffusion.tracking.patches import TrackPatches
    from napari_spt_diffusion.training.samples import samples_from_trajectories

    batch = samples_from_trajectories(traj, rng)
    n, t = batch.patches.shape[:2]
    tracks = [
        TrackPatches(
            track_id=i,
            frames=np.arange(t),
            positions_px=batch.positions_px[i],
            patches_photons=batch.patches[i],
            subpixel_offset_px=batch.subpixel_offset_px[i],
            outside_mask=batch.outside_mask[i],
            displacements_px=batch.displacements[i].astype(np.float64),
            gap_before=np.r_[True, np.zeros(t - 1, dtype=bool)],
        )
        for i in range(n)
    ]
    return [cp.changepoint_features(e.D1_um2_s, e.D2_um2_s) for e in estimator.estimate(tracks, acq)]


MODEL_ONE_STATE = {
    "binding": [[{"D1_um2_s": (0.005, 0.01), "D2_over_D1": 1.0, "theta_deg": 0.0}],
                [{"D1_um2_s": (3.0, 6.0), "D2_over_D1": (0.1, 1.0)}]],
    "twostate": [[{"D1_um2_s": (0.05, 6.0), "D2_over_D1": 1.0, "theta_deg": 0.0}]],
}
MODEL_MULTI = {"binding": BINDING_STATES, "twostate": [
    {"D1_um2_s": (0.05, 6.0), "D2_over_D1": 1.0, "theta_deg": 0.0},
    {"D1_um2_s": (0.05, 6.0), "D2_over_D1": 1.0, "theta_deg": 0.0},
]}


def check_models(models: dict[str, str], quick: bool, out: str) -> int:
    """False positives and detection of the default decisions on real model outputs."""
    from napari_spt_diffusion.estimation.estimator import Estimator

    rng = np.random.default_rng(SEED + 1)
    acq = Acquisition()
    n1 = 60 if quick else 300
    nm = 20 if quick else 80
    started = time.time()
    cmd = (".venv/bin/python benchmarks/calibrate_changepoints.py --models "
           + ",".join(f"{k}={v}" for k, v in models.items()) + (" --quick" if quick else ""))
    lines = [
        "# Changepoint decisions on model outputs",
        "",
        *run_lines(cmd),
        f"- Seed {SEED + 1}.",
        "- Tracks simulated (standard acquisition), rendered and tracked by the training-sample path "
        "(`training.samples.samples_from_trajectories`), estimated by the model with the `Estimator` "
        "(windows for long tracks); features log10 D1, log10 D2; default penalties "
        f"(single {cp.DEFAULT_PENALTY}, binary segmentation {cp.DEFAULT_PENALTY_MULTI}, min effect "
        f"{cp.DEFAULT_MIN_EFFECT}).",
        "",
        "| model | set | tracks | frames | false-positive rate (one state) | recall / precision / F1 within 2 frames | "
        "mean position error (frames) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, path in models.items():
        est = Estimator(path, device="cpu")
        for states in MODEL_ONE_STATE[name]:
            label = "one state " + _state_label(name, states)
            for t in (30, 100):
                traj = simulate_multistate(n1 if t == 30 else nm, t, states, 0.0, acq, rng)
                seqs = _sequences_model(traj, est, acq, rng)
                if t <= est.max_frames:
                    fp = np.mean([cp.decide_single_changepoint(x) is not None for x in seqs])
                else:
                    fp = np.mean([len(cp.multiple_changepoints(x)) > 0 for x in seqs])
                lines.append(f"| {name} | {label} | {len(seqs)} | {t} | {fp:.3f} | | |")
        sim = simulate_binding if name == "binding" else simulate_two_state
        traj = sim(n1, 30, acq, rng)
        seqs = _sequences_model(traj, est, acq, rng)
        det = [[] if (c := cp.decide_single_changepoint(x)) is None else [c] for x in seqs]
        sc = changepoint_scores(traj.changepoint_frames, det, tolerance=2)
        lines.append(f"| {name} | one switch | {len(seqs)} | 30 | | {sc['recall']:.3f} / {sc['precision']:.3f} / "
                     f"{sc['f1']:.3f} | {sc['mean_position_error_frames']:.2f} |")
        traj = simulate_multistate(nm, 200, MODEL_MULTI[name], SWITCH_RATE_PER_S, acq, rng)
        seqs = _sequences_model(traj, est, acq, rng)
        det = [cp.multiple_changepoints(x) for x in seqs]
        sc = changepoint_scores(traj.changepoint_frames, det, tolerance=2)
        lines.append(f"| {name} | Markov, 2 /s | {len(seqs)} | 200 | | {sc['recall']:.3f} / {sc['precision']:.3f} / "
                     f"{sc['f1']:.3f} | {sc['mean_position_error_frames']:.2f} |")
        print(f"{name} done at {time.time() - started:.0f} s", file=sys.stderr)
    lines.append("")
    lines.append(f"Run time {time.time() - started:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if not quick:
        write_report(out, text)
    return 0


# ------------------------------------------- confirmation of changepoints on displacements
CONFIRM_SEED = 13
CONFIRM_ALPHAS = [0.01, 0.05, 0.2]
#: (label, scan_correction) variants of the confirmation measured beside each other
CONFIRM_VARIANTS = [("scan", True), ("cand.", False)]
CONFIRM_SECTION = "## Confirmation on displacements"


def _model_tracks(traj, estimator, acq: Acquisition,
                  rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per track: ``(features (T, 2), localized positions (T, 2) px, loc precision (T,) px)``."""
    from napari_spt_diffusion.tracking.patches import TrackPatches
    from napari_spt_diffusion.training.samples import samples_from_trajectories

    batch = samples_from_trajectories(traj, rng)
    n, t = batch.patches.shape[:2]
    tracks = [
        TrackPatches(
            track_id=i,
            frames=np.arange(t),
            positions_px=batch.positions_px[i],
            patches_photons=batch.patches[i],
            subpixel_offset_px=batch.subpixel_offset_px[i],
            outside_mask=batch.outside_mask[i],
            displacements_px=batch.displacements[i].astype(np.float64),
            gap_before=np.r_[True, np.zeros(t - 1, dtype=bool)],
        )
        for i in range(n)
    ]
    prec = batch.loc_precision_nm.astype(np.float64) / acq.pixel_size_nm
    return [
        (cp.changepoint_features(e.D1_um2_s, e.D2_um2_s), batch.positions_px[i], prec[i])
        for i, e in enumerate(estimator.estimate(tracks, acq))
    ]


def _decide(x: np.ndarray, single: bool) -> np.ndarray:
    if single:
        c = cp.decide_single_changepoint(x)
        return np.zeros(0, dtype=np.int64) if c is None else np.array([c])
    return cp.multiple_changepoints(x)


def _state_label(model: str, states: list[dict]) -> str:
    """Name of a one-state set of :data:`MODEL_ONE_STATE`."""
    return "bound" if states[0]["D1_um2_s"] == (0.005, 0.01) else "unbound" if model == "binding" else "isotropic"


def _share_with_any(detected: list) -> float:
    """Share of the tracks given at least one changepoint."""
    return float(np.mean([len(d) > 0 for d in detected]))


def _mean_count(detected: list) -> float:
    """Mean number of changepoints per track."""
    return float(np.mean([len(d) for d in detected]))


def _confirmed(tracks, single: bool, acq: Acquisition) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Decisions before confirmation and after it, for every variant and alpha (variant-major)."""
    before = [_decide(x, single) for x, _, _ in tracks]
    after = []
    for _, scan in CONFIRM_VARIANTS:
        for alpha in CONFIRM_ALPHAS:
            after.append([
                confirm_changepoints(c, pos, np.arange(len(pos)), acq.blur_coefficient, prec, alpha=alpha,
                                        scan_correction=scan)
                for c, (_, pos, prec) in zip(before, tracks)
            ])
    return before, after


def check_confirmation(models: dict[str, str], quick: bool, out: str) -> int:
    """False changepoints on one-state tracks and detection of switches, before/after confirmation."""
    from napari_spt_diffusion.estimation.estimator import Estimator

    rng = np.random.default_rng(CONFIRM_SEED)
    acq = Acquisition()
    n_one = {30: 100 if quick else 1000, 100: 40 if quick else 300, 200: 20 if quick else 150}
    n_sw = {30: 100 if quick else 500, 200: 20 if quick else 150}
    started = time.time()
    rows_fp, rows_det = [], []
    for name, path in models.items():
        est = Estimator(path, device="cpu")
        for t, n in n_one.items():
            sets = [("aniso, D1 0.05-6", simulate_anisotropic(n, t, acq, rng))]
            sets += [(_state_label(name, s), simulate_multistate(max(n // 3, 20), t, s, 0.0, acq, rng))
                     for s in MODEL_ONE_STATE[name]]
            for label, traj in sets:
                tracks = _model_tracks(traj, est, acq, rng)
                single = t <= est.max_frames
                before, after = _confirmed(tracks, single, acq)
                rows_fp.append((name, label, len(tracks), t, _share_with_any(before),
                                [_share_with_any(a) for a in after], _mean_count(before),
                                [_mean_count(a) for a in after]))
                if label.startswith("aniso"):
                    d1 = traj.D1_um2_s[:, 0]
                    for lo, hi in ((0.05, 1.0), (1.0, 3.0), (3.0, 6.01)):
                        m = (d1 >= lo) & (d1 < hi)
                        sel = np.flatnonzero(m)
                        rows_fp.append((name, f"  aniso, D1 in [{lo:g}, {min(hi, 6):g}]", int(m.sum()), t,
                                        _share_with_any([before[i] for i in sel]),
                                        [_share_with_any([a[i] for i in sel]) for a in after], None, None))
            print(f"{name} one-state {t} done at {time.time() - started:.0f} s", file=sys.stderr, flush=True)
        sim = simulate_binding if name == "binding" else simulate_two_state
        for t, n in n_sw.items():
            if t == 30:
                traj = sim(n, 30, acq, rng)
            else:
                traj = simulate_multistate(n, t, MODEL_MULTI[name], SWITCH_RATE_PER_S, acq, rng)
            tracks = _model_tracks(traj, est, acq, rng)
            before, after = _confirmed(tracks, t <= est.max_frames, acq)
            scores = [changepoint_scores(traj.changepoint_frames, d, tolerance=2) for d in [before, *after]]
            rows_det.append((name, "one switch" if t == 30 else "Markov, "
                                                                f"{SWITCH_RATE_PER_S:g} /s", len(tracks), t, scores))
            print(f"{name} switches {t} done at {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    limits = []
    if "twostate" in models:
        limits = twostate_limits(Estimator(models["twostate"], device="cpu"), acq, rng, 40 if quick else 150)
    elapsed = time.time() - started
    cmd = (".venv/bin/python benchmarks/calibrate_changepoints.py --confirm "
           + ",".join(f"{k}={v}" for k, v in models.items()) + (" --quick" if quick else ""))
    alphas = " | ".join(f"{v} a={a:g}" for v, _ in CONFIRM_VARIANTS for a in CONFIRM_ALPHAS)
    n_cols = len(CONFIRM_VARIANTS) * len(CONFIRM_ALPHAS)
    lines = [
        CONFIRM_SECTION,
        "",
        *run_lines(cmd),
        f"- Seed {CONFIRM_SEED}; run time {elapsed:.0f} s (1 torch thread).",
        "- Tracks simulated (standard acquisition), rendered, detected and localized by the training-sample path "
        "(`training.samples.samples_from_trajectories`) and estimated by the model; the changepoints decided on "
        f"log10 D1, log10 D2 with the default penalties (single {cp.DEFAULT_PENALTY} for tracks up to the model's "
        f"length, binary segmentation {cp.DEFAULT_PENALTY_MULTI} beyond, min effect {cp.DEFAULT_MIN_EFFECT}) are "
        "then confirmed on the localized positions (`changepoints.confirm_changepoints`: F-test of the mean squared "
        "displacement on the two sides, degrees of freedom corrected for anisotropy, motion blur and localization "
        "noise, Bonferroni over the track's changepoints and, for `scan`, over the positions each changepoint "
        f"could have taken; `cand.` = the candidates' own p-values; guard {DEFAULT_CONFIRM_GUARD}). `before` = without "
        "confirmation, `a=` = confirmed at family-wise level a per track.",
        f"- Default of the pipeline: the `cand.` variant at **alpha = {DEFAULT_CONFIRM_ALPHA:g}** "
        "(`scan` removed every false changepoint but cost more of the binding switches).",
        *_confirm_summary(rows_fp, rows_det),
        "",
        "### False changepoints: fraction of one-state tracks given any changepoint (mean number per track in "
        "brackets)",
        "",
        f"| model | tracks | n | frames | before | {alphas} |",
        "|---|---|---|---|---|" + "---|" * n_cols,
    ]
    for name, label, n, t, b, a, nb, na in rows_fp:
        if nb is None:
            lines.append(f"| {name} | {label} | {n} | {t} | {b:.3f} | " + " | ".join(f"{v:.3f}" for v in a) + " |")
        else:
            lines.append(f"| {name} | {label} | {n} | {t} | {b:.3f} ({nb:.2f}) | "
                         + " | ".join(f"{v:.3f} ({w:.2f})" for v, w in zip(a, na)) + " |")
    lines += [
        "",
        "### Switches: precision / recall / F1 within 2 frames",
        "",
        f"| model | set | n | frames | before | {alphas} |",
        "|---|---|---|---|---|" + "---|" * n_cols,
    ]
    for name, label, n, t, scores in rows_det:
        cells = [f"{s['precision']:.3f} / {s['recall']:.3f} / {s['f1']:.3f}" for s in scores]
        lines.append(f"| {name} | {label} | {n} | {t} | " + " | ".join(cells) + " |")
    lines += limits
    text = "\n".join(lines) + "\n"
    print(text)
    if not quick:
        _replace_section(Path(out), text)
    return 0


def twostate_limits(est, acq: Acquisition, rng: np.random.Generator, n: int) -> list[str]:
    """What bounds the changepoint F1 of two isotropic states (report lines).

    Markov switching (2 /s each way) between two isotropic states with D ~ U[0.05, 3]
    um^2/s each (the end-to-end ``twostate`` field), 200 frames, through the model: F1 at
    tolerances of 2, 5 and 10 frames, over a grid of penalties and minimum effects, with
    the true number of changepoints given (an upper bound of what any penalty can do on
    these estimates), and the recall by the size of the change of D.
    """
    states = [{"D1_um2_s": (0.05, 3.0), "D2_over_D1": 1.0, "theta_deg": 0.0}] * 2
    traj = simulate_multistate(n, 200, states, SWITCH_RATE_PER_S, acq, rng)
    tracks = _model_tracks(traj, est, acq, rng)
    true = traj.changepoint_frames

    def fmt(s: dict) -> str:
        return f"{s['precision']:.3f} / {s['recall']:.3f} / {s['f1']:.3f}"

    decided = [cp.multiple_changepoints(x) for x, _, _ in tracks]
    confirmed = [confirm_changepoints(c, pos, np.arange(len(pos)), acq.blur_coefficient, pr)
                 for c, (_, pos, pr) in zip(decided, tracks)]
    lines = [
        "",
        f"### Two isotropic states: what limits the F1 ({n} tracks of 200 frames, D ~ U[0.05, 3] um^2/s per state, "
        f"{SWITCH_RATE_PER_S:g} switches/s each way, {np.mean([len(t) for t in true]):.1f} changepoints per track)",
        "",
        "| decision | tolerance (frames) | precision / recall / F1 |",
        "|---|---|---|",
    ]
    for tol in (2, 5, 10):
        lines.append(f"| default, decided | {tol} | {fmt(changepoint_scores(true, decided, tolerance=tol))} |")
        lines.append(f"| default, confirmed | {tol} | {fmt(changepoint_scores(true, confirmed, tolerance=tol))} |")
    for pen in (0.5, 1.0, 1.5, 2.0, 3.0):
        for me in (0.0, cp.DEFAULT_MIN_EFFECT):
            det = [cp.multiple_changepoints(x, penalty=pen, min_effect=me) for x, _, _ in tracks]
            lines.append(f"| penalty {pen:g}, min effect {me:g} | 2 | "
                         f"{fmt(changepoint_scores(true, det, tolerance=2))} |")
    oracle = [cp.multiple_changepoints(x, penalty=1e-6, min_effect=0.0, max_changepoints=len(t)) if len(t)
              else np.zeros(0, dtype=np.int64) for (x, _, _), t in zip(tracks, true)]
    lines.append(f"| true number of changepoints given | 2 | {fmt(changepoint_scores(true, oracle, tolerance=2))} |")
    effect, hit = [], []
    for i, t in enumerate(true):
        matched = {a for a, _ in match_changepoints(t, decided[i], 2)}
        for c in t:
            effect.append(abs(np.log10(traj.D1_um2_s[i, c] / traj.D1_um2_s[i, c - 1])))
            hit.append(c in matched)
    effect, hit = np.asarray(effect), np.asarray(hit)
    lines += ["", "| change of log10 D at the switch | share of the switches | recall (default, decided, 2 frames) |",
              "|---|---|---|"]
    for lo, hi in ((0.0, 0.15), (0.15, 0.3), (0.3, 0.6), (0.6, np.inf)):
        sel = (effect >= lo) & (effect < hi)
        lines.append(f"| [{lo:g}, {hi:g}) | {sel.mean():.2f} | {hit[sel].mean() if sel.any() else float('nan'):.3f} |")
    err = np.concatenate([x[:, 0] - np.log10(traj.D1_um2_s[i]) for i, (x, _, _) in enumerate(tracks)])
    seg = np.concatenate([np.diff(np.r_[0, t, 200]) for t in true])
    lines += ["", f"Per-frame error of log10 D1: standard deviation {err.std():.3f} decades, lag-1 correlation "
                  f"{np.corrcoef(err[1:], err[:-1])[0, 1]:.2f}; true segments: 10 / 25 / 50 % shorter than "
                  + " / ".join(f"{q:.0f}" for q in np.quantile(seg, [0.1, 0.25, 0.5])) + " frames."]
    return lines


def _confirm_summary(rows_fp: list, rows_det: list) -> list[str]:
    """Lines stating the false-changepoint rates and switch F1 before / after the default confirmation."""
    variant = [v for v, _ in CONFIRM_VARIANTS].index("cand.")
    col = variant * len(CONFIRM_ALPHAS) + CONFIRM_ALPHAS.index(DEFAULT_CONFIRM_ALPHA)
    out = []
    for name in dict.fromkeys(r[0] for r in rows_fp):
        aniso = [r for r in rows_fp if r[0] == name and r[1].startswith("aniso")]
        own = [r for r in rows_fp if r[0] == name and r[6] is not None and not r[1].startswith("aniso")]
        sub = [r for r in rows_fp if r[0] == name and r[6] is None]
        out.append(
            f"- `{name}` model, false-changepoint rate per one-state track: anisotropic D1 0.05-6 um^2/s at "
            + "/".join(str(r[3]) for r in aniso) + " frames: before "
            + " / ".join(f"{r[4]:.3f}" for r in aniso) + ", after " + " / ".join(f"{r[5][col]:.3f}" for r in aniso)
            + f" (largest in a D1 sub-range: before {max(r[4] for r in sub):.3f}, after "
              f"{max(r[5][col] for r in sub):.3f}); "
            f"the model's own single states: at most {max(r[4] for r in own):.3f} before, "
            f"{max(r[5][col] for r in own):.3f} after. Switch F1: "
            + ", ".join(f"{r[1]} {r[4][0]['f1']:.3f} -> {r[4][col + 1]['f1']:.3f}" for r in rows_det if r[0] == name)
            + "."
        )
    return out


def _replace_section(path: Path, section: str) -> None:
    """Write ``section`` into ``path`` in place of an earlier one with the same title (else appended)."""
    old = path.read_text() if path.exists() else ""
    start = old.find(CONFIRM_SECTION)
    if start >= 0:
        nxt = old.find("\n## ", start + len(CONFIRM_SECTION))
        old = old[:start].rstrip("\n") + ("\n" + old[nxt:] if nxt >= 0 else "")
    path.write_text(old.rstrip("\n") + "\n\n" + section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tracks (a smoke run, not for the report)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--models", default=None,
                        help="binding=PATH,twostate=PATH: check the default decisions on these models' outputs "
                             "(writes reports/changepoints_models.md) instead of calibrating")
    parser.add_argument("--confirm", default=None, metavar="binding=PATH,twostate=PATH",
                        help="measure the displacement confirmation of changepoints on these models' outputs "
                             "(replaces its section of reports/changepoints.md) instead of calibrating")
    args = parser.parse_args(argv)
    torch_threads(1)
    if args.confirm:
        models = dict(part.split("=", 1) for part in args.confirm.split(","))
        return check_confirmation(models, args.quick, args.out or str(REPORTS / "changepoints.md"))
    if args.models:
        models = dict(part.split("=", 1) for part in args.models.split(","))
        out = args.out or str(REPORTS / "changepoints_models.md")
        return check_models(models, args.quick, out)
    args.out = args.out or str(REPORTS / "changepoints.md")
    rng = np.random.default_rng(SEED)
    acq = Acquisition()
    n_single = 200 if args.quick else 1000
    n_multi = 60 if args.quick else 300
    n_pelt = 20 if args.quick else 100
    lengths = [20, 30, 50, 100, 200]
    sources = ["ar0", "ar0.5", "ar0.8", "local"]
    started = time.time()
    lines: list[str] = []

    # ---- single test: false positives on one-state tracks
    fp_single: dict[tuple[str, int], np.ndarray] = {}
    for t in lengths:
        traj = one_state(n_single, t, acq, rng)
        for source in sources:
            seqs = make_sequences(source, traj, acq, rng)
            stats = np.array([cp.changepoint_statistic(s, min_size=1) for s in seqs])
            rates = []
            for pen in PENALTIES_SINGLE:
                thr = cp.decision_threshold(t, 2, pen)
                rates.append(np.mean((stats[:, 1] > thr) & (stats[:, 2] >= cp.DEFAULT_MIN_EFFECT)))
            fp_single[(source, t)] = np.array(rates)

    # ---- single test: detection on single-switch tracks (30 frames)
    det_single: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for name, sim in (("binding", simulate_binding), ("twostate", simulate_two_state)):
        traj = sim(n_single, 30, acq, rng)
        true = [c[0] if len(c) else None for c in traj.changepoint_frames]
        for source in sources:
            seqs = make_sequences(source, traj, acq, rng)
            stats = np.array([cp.changepoint_statistic(s, min_size=1) for s in seqs])
            res = []
            for pen in PENALTIES_SINGLE:
                thr = cp.decision_threshold(30, 2, pen)
                hit = (stats[:, 1] > thr) & (stats[:, 2] >= cp.DEFAULT_MIN_EFFECT)
                has = np.array([c is not None for c in true])
                rate = float(np.mean(hit[has]))
                errs = [abs(stats[i, 0] - true[i]) for i in np.flatnonzero(hit & has)]
                res.append((rate, float(np.mean(errs)) if errs else float("nan")))
            det_single[(name, source)] = res

    # ---- multiple changepoints
    fp_multi: dict[tuple[str, str, float], float] = {}
    scores_multi: dict[tuple[str, str, str, float], dict[str, float]] = {}
    traj_one = one_state(n_multi, 200, acq, rng)
    traj_bind = simulate_multistate(n_multi, 200, BINDING_STATES, SWITCH_RATE_PER_S, acq, rng)
    traj_two = simulate_multistate(n_multi, 200, TWOSTATE_STATES, SWITCH_RATE_PER_S, acq, rng)
    mean_switches = np.mean([len(c) for c in traj_bind.changepoint_frames])
    for source in sources:
        seq_one = make_sequences(source, traj_one, acq, rng)
        seq_bind = make_sequences(source, traj_bind, acq, rng)
        seq_two = make_sequences(source, traj_two, acq, rng)
        for method, pens, n_use in (("binseg", PENALTIES_MULTI, n_multi), ("pelt", PENALTIES_PELT, n_pelt)):
            if method == "pelt" and source not in ("ar0.5", "local"):
                continue
            for pen in pens:
                det = [cp.multiple_changepoints(s, penalty=pen, method=method) for s in seq_one[:n_use]]
                fp_multi[(source, method, pen)] = float(np.mean([len(d) > 0 for d in det]))
                for name, traj, seqs in (("binding", traj_bind, seq_bind), ("twostate", traj_two, seq_two)):
                    det = [cp.multiple_changepoints(s, penalty=pen, method=method) for s in seqs[:n_use]]
                    scores_multi[(name, source, method, pen)] = changepoint_scores(
                        traj.changepoint_frames[:n_use], det, tolerance=2
                    )
        print(f"source {source} done at {time.time() - started:.0f} s", file=sys.stderr)

    # ---- choice
    def pick(pens, fp_of, target):
        for i, pen in enumerate(pens):
            if all(fp_of(s, i, pen) <= target for s in CHOICE_SOURCES):
                return pen
        return pens[-1]

    pen_single = pick(PENALTIES_SINGLE, lambda s, i, p: max(fp_single[(s, t)][i] for t in lengths), FP_TARGET_SINGLE)
    def pick_multi(method, pens):
        best_pen, best_f1 = pens[-1], -1.0
        for pen in pens:
            if any(fp_multi.get((s, method, pen), 0.0) > FP_TARGET_MULTI for s in CHOICE_SOURCES):
                continue
            f1 = np.mean(
                [
                    scores_multi[(name, s, method, pen)]["f1"]
                    for name in ("binding", "twostate")
                    for s in CHOICE_SOURCES
                    if (name, s, method, pen) in scores_multi
                ]
            )
            if f1 > best_f1 + 1e-9:
                best_pen, best_f1 = pen, f1
        return best_pen

    pen_multi = pick_multi("binseg", PENALTIES_MULTI)
    pen_pelt = pick_multi("pelt", PENALTIES_PELT)
    elapsed = time.time() - started

    # ---- report
    cmd = ".venv/bin/python benchmarks/calibrate_changepoints.py" + (" --quick" if args.quick else "")
    lines += [
        "# Changepoint penalties: calibration",
        "",
        *run_lines(cmd),
        f"- Seed {SEED}; run time {elapsed:.0f} s.",
        "- Protocol: see the docstring of `benchmarks/calibrate_changepoints.py` (features log10 D1, log10 D2 per "
        "frame; sources `ar0`/`ar0.5`/`ar0.8` = labels + AR(1) noise of 0.10 decades (0.25 below 0.05 um^2/s) with "
        f"lag-1 correlation 0/0.5/0.8; `local` = CVE tensor of the {2 * WINDOW_HALF + 1} positions around each frame, "
        f"{LOC_NOISE_NM:g} nm localization noise). `min_effect` = {cp.DEFAULT_MIN_EFFECT} decades, "
        f"noise floor {cp.DEFAULT_NOISE_FLOOR} decades.",
        f"- Chosen: single-change penalty **{pen_single}** (false positives <= {FP_TARGET_SINGLE:.0%} at every length "
        f"for {', '.join(CHOICE_SOURCES)}), binary-segmentation penalty **{pen_multi}**, PELT penalty **{pen_pelt}** "
        f"(the best mean F1 over the two multi-switch sets and those sources with false positives <= "
        f"{FP_TARGET_MULTI:.0%} on 200-frame one-state tracks).",
        "",
        f"## Single-change test: false-positive rate on one-state tracks ({n_single} tracks per cell)",
        "",
        "| source | frames | " + " | ".join(f"pen {p:g}" for p in PENALTIES_SINGLE) + " |",
        "|---|---|" + "---|" * len(PENALTIES_SINGLE),
    ]
    for source in sources:
        for t in lengths:
            lines.append(f"| {source} | {t} | " + " | ".join(f"{r:.3f}" for r in fp_single[(source, t)]) + " |")
    lines += [
        "",
        "## Single-change test on 30-frame single-switch tracks: detection rate / mean location error (frames), "
        f"{n_single} tracks",
        "",
        "| set | source | " + " | ".join(f"pen {p:g}" for p in PENALTIES_SINGLE) + " |",
        "|---|---|" + "---|" * len(PENALTIES_SINGLE),
    ]
    for (name, source), res in det_single.items():
        lines.append(f"| {name} | {source} | " + " | ".join(f"{r:.3f} / {e:.2f}" for r, e in res) + " |")
    lines += [
        "",
        f"## Several changepoints on 200-frame tracks ({n_multi} tracks per set for binseg, {n_pelt} for PELT; "
        f"binding set: {mean_switches:.1f} true changepoints per track on average)",
        "",
        "False positives = fraction of one-state tracks given any changepoint; P/R/F1 within 2 frames; "
        "err = mean |position error| of matched changepoints (frames).",
        "",
        "| method | source | penalty | false positives | binding P / R / F1 / err | two isotropic P / R / F1 / err |",
        "|---|---|---|---|---|---|",
    ]
    for (source, method, pen), fp in fp_multi.items():
        cells = []
        for name in ("binding", "twostate"):
            s = scores_multi[(name, source, method, pen)]
            cells.append(f"{s['precision']:.3f} / {s['recall']:.3f} / {s['f1']:.3f} / "
                         f"{s['mean_position_error_frames']:.2f}")
        lines.append(f"| {method} | {source} | {pen:g} | {fp:.3f} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        write_report(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
