"""End-to-end benchmark: simulated movie -> ``track_and_estimate`` -> accuracy and speed.

Protocols (docs/protocols.md, standard acquisition):

* ``field`` (v1, seed 7): 256 x 256 px, 200 frames, 60 particles on average entering
  and leaving the field, one anisotropic tensor each (D1 ~ U[0.05, 3] um^2/s,
  D2/D1 ~ U[0.1, 1)), bundled model ``aniso``.
* ``binding`` (seed 8): 256 x 256 px, 250 frames, 30 particles, bound (D ~ U[0.005,
  0.01]) <-> unbound (D1 ~ U[3, 6], D2/D1 ~ U[0.1, 1)) Markov switching at 2 /s each way
  (several switches per track), mean lifetime 400 frames, model ``binding``.
* ``twostate`` (seed 9): the same with two isotropic states, D ~ U[0.05, 3] each,
  model ``twostate``.
* ``speed``: 512 x 512 x 1000 uint16, 100 particles per frame (seed 10): the whole
  ``spt-diffusion track`` command in a subprocess on CPU, its wall time, frames/s,
  tracks/s of the model step and peak resident memory.

Metrics (accuracy sets):

* Result tracks are matched to truth tracks: rows at the same frame within 1 px, the
  truth track sharing most rows wins. Only matched rows are scored.
* per track (result tracks of >= 20 matched frames): MAE of D1 and D2 (um^2/s) against
  the time-averaged truth tensor over the matched rows, angle similarity (published:
  mean cos(dtheta); axial: mean |cos(dtheta)|) on tracks whose truth is anisotropic
  (D2/D1 < 0.9);
* per track, same segments: the same end-to-end tracks against the model run on the
  perfect-tracking localizations of the same particle from the first to the last
  matched frame of each (same stretch of time, no gaps; the fair reference
  for the end-to-end / perfect ratio, target <= 1.20), and a breakdown of the per-track
  error by fragments, wrong links, tracks spanning a switch and crowded tracks;
* per frame (pointwise models): MAE of D1 and D2 over matched rows, angle similarity
  over rows whose truth is anisotropic (D2/D1 < 0.9);
* linking: identity changes along the truth tracks (each truth row paired with the
  nearest result localization within 3 px), classed as a spot detected twice, a
  crossing of two particles, or other (:func:`linking_diagnostics`);
* changepoints: true changepoints inside each matched result track's frame range
  against the detected ones, precision / recall / F1 (a detection within 2 frames of a
  true changepoint counts) and the mean position error of matched changepoints.

Beside the end-to-end figures, on the same movie:

* "perfect tracking": the truth tracks (true detection and linking, all frames in the
  field), each spot localized by the tracker's fit started at its true pixel, then the
  same patches, model and changepoint code, scored on the truth tracks that the
  end-to-end run found (whole tracks, not the fragments real linking may cut them into:
  longer tracks and a different set, so its ratio to end to end also holds the effect
  of track length; the "same segments" figure removes it);
* classical: the combined CVE + blur-moment tensor (per track) and a local-window CVE
  tensor (the 9 positions around each frame) with the same changepoint code (per frame),
  on the end-to-end tracks.

Command::

    .venv/bin/python benchmarks/bench_end_to_end.py [--quick] [--sets field,binding,twostate,speed]
        [--models aniso=PATH,binding=PATH,twostate=PATH] [--out benchmarks/reports/end_to_end.md]
        [--threads N] [--no-confirm] [--split-encounters on|off] [--encounter-llr X]
        [--motion-linking on|off] [--encounter-share on|off]

``--quick`` shrinks every movie (a smoke run; its report goes to ``end_to_end_quick.md``).
``--models`` replaces bundled checkpoints (e.g. a model still in training).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from _common import (
    CP_TOLERANCE,
    MIN_TRACK_FRAMES_SCORED,
    PROTOCOLS,
    changepoint_scores_for,
    fmt,
    match_rows,
    report_header,
    report_path,
    scores,
    size_bins,
    tracks_vs_truth,
    truth_changepoints,
    write_report,
)
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import changepoints as cp
from napari_spt_diffusion.estimation.blur_moments import combined_tensor_batch
from napari_spt_diffusion.estimation.classical import cve_tensor_batch, regular_positions
from napari_spt_diffusion.estimation.confirmation import DEFAULT_CONFIRM_ALPHA, confirm_changepoints
from napari_spt_diffusion.estimation.estimator import Estimator
from napari_spt_diffusion.estimation.tensor import mean_tensor
from napari_spt_diffusion.pipeline import Settings, track_and_estimate, track_changepoints
from napari_spt_diffusion.results import Results, parse_changepoint_frames
from napari_spt_diffusion.simulation.movie import simulate_movie
from napari_spt_diffusion.tracking.crowding import CROWDED_RADIUS_PX, CROWDED_SHARE, crowded_share, nearest_other_px
from napari_spt_diffusion.tracking.localize import localize_frame
from napari_spt_diffusion.tracking.patches import TrackPatches, extract_track_patches

LOCAL_WINDOW_HALF = 4
#: Confirm changepoints on the displacements (the pipeline's default); ``--no-confirm`` for the earlier decision.
CONFIRM = True
#: ``Settings`` fields set from the command line (``--split-encounters``, ``--encounter-llr``); empty: defaults.
LINK_OPTIONS: dict[str, Any] = {}

SETS: dict[str, dict[str, Any]] = {
    "field": dict(model="aniso", shape=(256, 256), frames=200, particles=60, seed=7,
                  sim=dict(model="aniso", D1_range_um2_s=(0.05, 3.0))),
    "binding": dict(model="binding", shape=(256, 256), frames=250, particles=30, seed=8,
                    sim=dict(model="binding", switch_rate_per_s=2.0, mean_lifetime_frames=400.0)),
    "twostate": dict(model="twostate", shape=(256, 256), frames=250, particles=30, seed=9,
                     sim=dict(model="twostate", switch_rate_per_s=2.0, mean_lifetime_frames=400.0,
                              D1_range_um2_s=(0.05, 3.0))),
}
QUICK = {"shape": (128, 128), "frames": 100}
SPEED = dict(shape=(512, 512), frames=1000, particles=100, seed=10, model="aniso")
SPEED_QUICK = dict(shape=(256, 256), frames=200, particles=30, seed=10, model="aniso")


# ------------------------------------------------------------------ changepoints
def changepoint_contrast(truth: Results) -> dict[tuple[int, int], float]:
    """|log10| of the change of the mean diffusivity (D1 + D2) / 2 at each true changepoint.

    Keyed by ``(truth track id, changepoint frame)``: the truth's mean D of the changepoint
    frame against that of the frame before (decades; 0 = no visible change).
    """
    t = truth.tracks.sort_values(["track_id", "frame"])
    d = 0.5 * (t["D1_um2_s"].to_numpy(dtype=float) + t["D2_um2_s"].to_numpy(dtype=float))
    out: dict[tuple[int, int], float] = {}
    tid, frm, cpf = t["track_id"].to_numpy(), t["frame"].to_numpy(), t["is_changepoint"].to_numpy(dtype=bool)
    for i in np.flatnonzero(cpf):
        if i > 0 and tid[i - 1] == tid[i] and d[i] > 0 and d[i - 1] > 0:
            out[(int(tid[i]), int(frm[i]))] = float(abs(np.log10(d[i] / d[i - 1])))
    return out


def recall_by_contrast(rows: pd.DataFrame, detected: dict[int, list[int]], truth_cps: dict[int, np.ndarray],
                       contrast: dict[tuple[int, int], float]) -> list[tuple[str, int, float]]:
    """Share of true changepoints with a detection within ``CP_TOLERANCE`` frames, per contrast bin.

    Same scored tracks and frame ranges as ``changepoint_scores_for``; a detection may
    count for two close true changepoints here (no one-to-one matching). Returns
    ``(bin label, true changepoints, recall)`` per bin.
    """
    found: list[tuple[float, bool]] = []
    for tid, g in rows.groupby("track_id"):
        if tid not in detected:
            continue
        f0, f1 = int(g["frame"].min()), int(g["frame"].max())
        truth_id = int(g["truth_id"].iloc[0])
        det = np.asarray([c for c in detected[tid] if f0 < c <= f1])
        for c in truth_cps.get(truth_id, np.zeros(0)):
            if f0 < c <= f1 and (truth_id, int(c)) in contrast:
                hit = bool(len(det)) and bool(np.min(np.abs(det - c)) <= CP_TOLERANCE)
                found.append((contrast[(truth_id, int(c))], hit))
    out = []
    for lo, hi, label in size_bins():
        sel = [h for v, h in found if lo <= v < hi]
        out.append((label, len(sel), float(np.mean(sel)) if sel else float("nan")))
    return out


# --------------------------------------------------------- perfect tracking
def perfect_tracks(movie: np.ndarray, truth: Results, acq: Acquisition) -> pd.DataFrame:
    """Truth tracks with every spot localized by the tracker's fit started at its true pixel."""
    t = truth.tracks
    ny, nx = movie.shape[1:]
    inside = (t["y_px"] >= 0) & (t["y_px"] <= ny - 1) & (t["x_px"] >= 0) & (t["x_px"] <= nx - 1)
    t = t[inside]
    parts = []
    for frame, g in t.groupby("frame"):
        peaks = np.floor(g[["y_px", "x_px"]].to_numpy() + 0.5).astype(np.int64)
        fit = localize_frame(np.asarray(movie[int(frame)]), peaks, acq)
        fit = fit.reset_index(drop=True)
        fit["track_id"] = g["track_id"].to_numpy()
        fit["frame"] = int(frame)
        parts.append(fit)
    out = pd.concat(parts, ignore_index=True)
    out = out[np.isfinite(out["y_px"]) & np.isfinite(out["x_px"])]
    out = out.sort_values(["track_id", "frame"]).reset_index(drop=True)
    lengths = out.groupby("track_id")["frame"].transform("size")
    return out[lengths >= 5].reset_index(drop=True)


# --------------------------------------------------------- classical baseline
def classical_track_values(patches: list[TrackPatches], acq: Acquisition) -> dict[int, tuple[float, float, float]]:
    """Combined CVE + blur-moment tensor per track (batched by span)."""
    out: dict[int, tuple[float, float, float]] = {}
    groups: dict[int, list[int]] = {}
    grids = []
    for i, tp in enumerate(patches):
        grid = regular_positions(tp.positions_px, tp.frames)
        grids.append(grid)
        groups.setdefault(len(grid), []).append(i)
    for length, members in groups.items():
        if length < 3:
            continue
        pos = np.stack([grids[i] for i in members])
        p = patches[members[0]].patches_photons.shape[-1]
        pa = np.zeros((len(members), length, p, p), np.float32)
        off = np.zeros((len(members), length, 2))
        om = np.ones((len(members), length, p, p), bool)
        for j, i in enumerate(members):
            k = patches[i].frames - patches[i].frames[0]
            pa[j, k] = patches[i].patches_photons
            off[j, k] = patches[i].subpixel_offset_px
            om[j, k] = patches[i].outside_mask
        with np.errstate(all="ignore"):
            res = combined_tensor_batch(pos, pa, acq, subpixel_offset_px=off, outside_mask=om)
        for j, i in enumerate(members):
            out[patches[i].track_id] = tuple(float(res[k][j]) for k in ("D1_um2_s", "D2_um2_s", "theta_deg"))
    return out


def local_cve(patches: list[TrackPatches], acq: Acquisition) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-frame tensor: CVE of the 2w+1 positions around each frame (w = LOCAL_WINDOW_HALF)."""
    out = {}
    w = LOCAL_WINDOW_HALF
    for tp in patches:
        grid = regular_positions(tp.positions_px, tp.frames)
        n = len(grid)
        padded = np.full((n + 2 * w, 2), np.nan)
        padded[w : w + n] = grid
        idx = np.arange(n)[:, None] + np.arange(2 * w + 1)[None, :]
        with np.errstate(all="ignore"):
            res = cve_tensor_batch(padded[idx], acq)
        rows = tp.frames - tp.frames[0]
        out[tp.track_id] = (res["D1_um2_s"][rows], res["D2_um2_s"][rows], res["theta_deg"][rows])
    return out


def local_changepoints(values: tuple[np.ndarray, np.ndarray, np.ndarray], tp: TrackPatches, max_frames: int,
                       loc_precision_px: np.ndarray, acq: Acquisition) -> list[int]:
    """Changepoint frames of the local-CVE estimates: the pipeline's decision and confirmation."""
    d1, d2, _ = values
    frames = tp.frames
    feats = cp.changepoint_features(d1, d2)
    if not np.all(np.isfinite(feats)) or len(frames) < 2:
        return []
    if len(frames) <= max_frames:
        c = cp.decide_single_changepoint(feats)
        idx = np.zeros(0, dtype=np.int64) if c is None else np.array([c])
    else:
        idx = cp.multiple_changepoints(feats)
    if idx.size and CONFIRM:
        idx = confirm_changepoints(idx, tp.positions_px, frames, acq.blur_coefficient, loc_precision_px)
    return [int(frames[i]) for i in idx]


def same_segment_perfect(movie: np.ndarray, rows: pd.DataFrame, perfect: pd.DataFrame, estimator: Estimator,
                         acq: Acquisition) -> dict[int, tuple[float, float, float]]:
    """Per end-to-end track: the model on the perfect-tracking localizations of the same stretch.

    For every end-to-end track with at least ``MIN_TRACK_FRAMES_SCORED`` matched rows, the
    perfect-tracking localizations of its matched truth track from its first to its last
    matched frame (every frame of that stretch, no gap) are cut into patches and
    estimated as one track: the same particle over the same time, with true detection,
    localization start and linking. Returns ``{e2e track_id: (D1, D2, theta)}``.
    """
    parts = []
    for tid, g in rows.groupby("track_id"):
        if len(g) < MIN_TRACK_FRAMES_SCORED:
            continue
        truth_id = int(g["truth_id"].iloc[0])
        f0, f1 = int(g["frame"].min()), int(g["frame"].max())
        seg = perfect[(perfect["track_id"] == truth_id) & (perfect["frame"] >= f0) & (perfect["frame"] <= f1)]
        parts.append(seg.assign(track_id=int(tid)))
    if not parts:
        return {}
    seg = pd.concat(parts, ignore_index=True).sort_values(["track_id", "frame"]).reset_index(drop=True)
    out = {}
    for e in estimator.estimate(extract_track_patches(movie, seg, acq, patch_size=estimator.patch_size), acq):
        if e.pointwise and e.method == "model":
            out[e.track_id] = mean_tensor(e.D1_um2_s, e.D2_um2_s, e.theta_deg)
        else:
            out[e.track_id] = (e.track_D1_um2_s, e.track_D2_um2_s, e.track_theta_deg)
    return out


def error_breakdown(rows: pd.DataFrame, n_frames: dict[int, int], e2e_vals: dict[int, tuple[float, float, float]],
                    same_vals: dict[int, tuple[float, float, float]], truth: Results) -> pd.DataFrame:
    """Per scored end-to-end track: |D1 error| end to end and on the same segment with perfect tracking.

    Columns ``fragment`` (the track's matched rows hold < 80 % of its truth track's frames),
    ``wrong_links`` (< 95 % of the track's rows match its truth track: wrong links or
    misplaced localizations), ``switch`` (a true changepoint inside its frame range),
    ``crowded`` (another true particle within :data:`CROWDED_RADIUS_PX` in more than
    :data:`CROWDED_SHARE` of the truth track's frames between the track's first and last
    frame), ``err_e2e``, ``err_same`` (um^2/s).
    """
    tlen = truth.tracks.groupby("track_id").size()
    cps = truth_changepoints(truth)
    near = truth_nearest_other_px(truth)
    per = []
    for tid, g in rows.groupby("track_id"):
        if len(g) < MIN_TRACK_FRAMES_SCORED or tid not in e2e_vals or tid not in same_vals:
            continue
        t1, t2, _ = mean_tensor(g["D1_true"], g["D2_true"], g["theta_true"])
        truth_id = int(g["truth_id"].iloc[0])
        f0, f1 = int(g["frame"].min()), int(g["frame"].max())
        per.append({
            "err_e2e_D2": abs(e2e_vals[tid][1] - t2),
            "err_same_D2": abs(same_vals[tid][1] - t2),
            "track_id": tid,
            "fragment": bool(len(g) < 0.8 * tlen[truth_id]),
            "wrong_links": bool(len(g) < 0.95 * n_frames[tid]),
            "switch": bool(any(f0 < c <= f1 for c in cps.get(truth_id, []))),
            "crowded": crowded_share(near.loc[truth_id].loc[f0:f1].to_numpy()) > CROWDED_SHARE,
            "err_e2e": abs(e2e_vals[tid][0] - t1),
            "err_same": abs(same_vals[tid][0] - t1),
        })
    return pd.DataFrame(per, columns=["track_id", "fragment", "wrong_links", "switch", "crowded", "err_e2e",
                                      "err_same", "err_e2e_D2", "err_same_D2"])


def truth_nearest_other_px(truth: Results) -> pd.Series:
    """Distance (px) from every truth row to the nearest other true particle in its frame.

    Indexed by ``(track_id, frame)``; ``inf`` when the particle is alone in its frame
    (:func:`napari_spt_diffusion.tracking.crowding.nearest_other_px`, as the pipeline's flag).
    """
    t = truth.tracks
    d = nearest_other_px(t["frame"].to_numpy(), t["y_px"].to_numpy(), t["x_px"].to_numpy())
    index = pd.MultiIndex.from_arrays([t["track_id"].to_numpy(), t["frame"].to_numpy()], names=["track_id", "frame"])
    return pd.Series(d, index=index).sort_index()


def linking_diagnostics(results: Results, truth: Results, radius_px: float = 3.0, duplicate_px: float = 5.0,
                        crossing_px: float = 8.0) -> dict[str, int]:
    """Why truth tracks are cut into several result tracks.

    Every truth row is paired with the nearest result localization of its frame within
    ``radius_px``; along each truth track, a change of the paired result track is an
    identity change. Each is classed as ``duplicate`` (at one of the two frames a second
    result localization lies within ``duplicate_px`` of the truth position and is not
    explained by another truth particle, i.e. not within ``owner_px`` of one: one spot
    detected twice), ``crossing`` (another truth particle within ``crossing_px``) or
    ``other``. Also counts the truth rows with such a duplicate.
    """
    owner_px = 1.5
    from scipy.spatial import cKDTree

    t = truth.tracks[["track_id", "frame", "x_px", "y_px"]].reset_index(drop=True)
    r = results.tracks[["track_id", "frame", "x_px", "y_px"]]
    paired = np.full(len(t), -1, dtype=np.int64)
    n_near = np.zeros(len(t), dtype=np.int64)
    nn = np.full(len(t), np.inf)
    r_by_frame = {f: g for f, g in r.groupby("frame")}
    for f, idx in t.groupby("frame").indices.items():
        pts = t.loc[idx, ["y_px", "x_px"]].to_numpy()
        if len(idx) > 1:
            nn[idx] = cKDTree(pts).query(pts, 2)[0][:, 1]
        rg = r_by_frame.get(f)
        if rg is not None:
            rpts = rg[["y_px", "x_px"]].to_numpy()
            tree = cKDTree(rpts)
            d, i = tree.query(pts)
            paired[idx] = np.where(d < radius_px, rg["track_id"].to_numpy()[i], -1)
            # owner of each result localization: the truth particle within owner_px, if any
            d_own, own = cKDTree(pts).query(rpts)
            own = np.where(d_own < owner_px, own, -1)
            n_near[idx] = [int(np.sum((own[x] == -1) | (own[x] == k))) if x else 0
                           for k, x in enumerate(tree.query_ball_point(pts, duplicate_px))]
    t = t.assign(paired=paired, n_near=n_near, nn=nn)
    t = t.sort_values(["track_id", "frame"])
    counts = {"identity_changes": 0, "duplicate": 0, "crossing": 0, "other": 0,
              "truth_rows_detected_twice": int((t["n_near"] >= 2).sum()), "truth_rows": int(len(t))}
    for _, g in t[t["paired"] >= 0].groupby("track_id"):
        ids, dup, nn = g["paired"].to_numpy(), g["n_near"].to_numpy(), g["nn"].to_numpy()
        for i in np.flatnonzero(ids[1:] != ids[:-1]):
            counts["identity_changes"] += 1
            if max(dup[i], dup[i + 1]) >= 2:
                counts["duplicate"] += 1
            elif min(nn[i], nn[i + 1]) < crossing_px:
                counts["crossing"] += 1
            else:
                counts["other"] += 1
    return counts


# ------------------------------------------------------------------ one set
def _mean_scored_length(rows: pd.DataFrame) -> float:
    """Mean rows per track over the tracks of at least ``MIN_TRACK_FRAMES_SCORED`` rows."""
    size = rows.groupby("track_id").size()
    return float(size[size >= MIN_TRACK_FRAMES_SCORED].mean())


def run_set(name: str, spec: dict[str, Any], model_path: str, quick: bool, acq: Acquisition) -> dict[str, Any]:
    shape = QUICK["shape"] if quick else spec["shape"]
    frames = QUICK["frames"] if quick else spec["frames"]
    particles = spec["particles"] * (shape[0] * shape[1]) / (spec["shape"][0] * spec["shape"][1])
    t0 = time.perf_counter()
    sim = simulate_movie(shape, frames, acq, rng=spec["seed"], particles=particles, **spec["sim"])
    t_sim = time.perf_counter() - t0
    truth = sim.truth
    estimator = Estimator(model_path, device="cpu")
    settings = Settings(device="cpu", min_track_length=5, changepoint_confirm=CONFIRM, **LINK_OPTIONS)

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = track_and_estimate(sim.movie, acq, settings, estimator=estimator)
    t_pipe = time.perf_counter() - t0
    rows = match_rows(results, truth)
    summary = results.summary.set_index("track_id")
    truth_cps = truth_changepoints(truth)
    out: dict[str, Any] = {
        "name": name, "model": results.meta["model"], "kind": estimator.kind, "shape": shape, "frames": frames,
        "particles": particles, "seed": spec["seed"], "t_sim": t_sim, "t_pipeline": t_pipe,
        "n_truth_tracks": int(truth.n_tracks), "n_result_tracks": int(results.n_tracks),
        "n_matched_rows": int(len(rows)), "n_result_rows": int(len(results.tracks)),
        "timings": results.meta["timings_s"],
    }

    # -- end to end, per track
    e2e_vals = {int(k): (float(v["D1_um2_s"]), float(v["D2_um2_s"]), float(v["theta_deg"]))
                for k, v in summary.iterrows()}
    out["track_e2e"] = scores(tracks_vs_truth(rows, e2e_vals))
    # classical on the same tracks
    patches = extract_track_patches(sim.movie, results.tracks, acq, patch_size=estimator.patch_size)
    out["track_classical"] = scores(tracks_vs_truth(rows, classical_track_values(patches, acq)))

    # -- perfect tracking
    perfect = perfect_tracks(sim.movie, truth, acq)
    pp = extract_track_patches(sim.movie, perfect, acq, patch_size=estimator.patch_size)
    est_perfect = estimator.estimate(pp, acq)
    perfect_pos = {tp.track_id: tp.positions_px for tp in pp}
    perfect_prec = {int(k): g["loc_precision_nm"].to_numpy(dtype=float) / acq.pixel_size_nm
                    for k, g in perfect.groupby("track_id")} if "loc_precision_nm" in perfect.columns else {}
    prow = []
    perfect_vals = {}
    perfect_cps: dict[int, list[int]] = {}
    mode = "auto" if estimator.pointwise else "none"
    tt = truth.tracks.set_index(["track_id", "frame"])
    for e in est_perfect:
        lab = tt.loc[[(e.track_id, f) for f in e.frames]]
        prow.append(pd.DataFrame({
            "track_id": e.track_id, "truth_id": e.track_id, "frame": e.frames,
            "D1_um2_s": e.D1_um2_s, "D2_um2_s": e.D2_um2_s, "theta_deg": e.theta_deg,
            "D1_true": lab["D1_um2_s"].to_numpy(), "D2_true": lab["D2_um2_s"].to_numpy(),
            "theta_true": lab["theta_deg"].to_numpy(),
        }))
        if e.pointwise:
            perfect_vals[e.track_id] = mean_tensor(e.D1_um2_s, e.D2_um2_s, e.theta_deg)
        else:
            perfect_vals[e.track_id] = (e.track_D1_um2_s, e.track_D2_um2_s, e.track_theta_deg)
        lp = perfect_prec.get(e.track_id)
        perfect_cps[e.track_id] = [int(e.frames[c]) for c in track_changepoints(
            e, mode, estimator, settings, positions_px=perfect_pos[e.track_id], loc_precision_px=lp, acquisition=acq)]
    prow_df = pd.concat(prow, ignore_index=True)
    # score perfect tracking on the truth tracks that the end-to-end run found (same particles)
    found = set(rows["truth_id"].unique())
    prow_df = prow_df[prow_df["truth_id"].isin(found)]
    perfect_cps = {k: v for k, v in perfect_cps.items() if k in found}
    out["track_perfect"] = scores(tracks_vs_truth(prow_df, perfect_vals))
    # the fair comparison: the same segments (frames) of the same tracks with perfect tracking
    same_vals = same_segment_perfect(sim.movie, rows, perfect, estimator, acq)
    scored = {k: v for k, v in e2e_vals.items() if k in same_vals}
    out["track_e2e_same"] = scores(tracks_vs_truth(rows, scored))
    out["track_perfect_same"] = scores(tracks_vs_truth(rows, same_vals))
    n_frames = {int(k): int(v) for k, v in summary["n_frames"].items()}
    out["breakdown"] = error_breakdown(rows, n_frames, e2e_vals, same_vals, truth)
    out["linking"] = linking_diagnostics(results, truth)
    out["truth_frames_scored_perfect"] = _mean_scored_length(prow_df)
    out["e2e_frames_scored"] = _mean_scored_length(rows)

    if estimator.pointwise:
        out["frame_e2e"] = scores(rows, "D1_um2_s", "D2_um2_s", "theta_deg")
        out["frame_perfect"] = scores(prow_df, "D1_um2_s", "D2_um2_s", "theta_deg")
        loc = local_cve(patches, acq)
        lrows = []
        for tp in patches:
            d1, d2, th = loc[tp.track_id]
            lrows.append(pd.DataFrame({"track_id": tp.track_id, "frame": tp.frames, "c1": d1, "c2": d2, "ct": th}))
        lr = rows.merge(pd.concat(lrows), on=["track_id", "frame"])
        out["frame_classical"] = scores(lr, "c1", "c2", "ct")
        detected = {int(k): parse_changepoint_frames(v["changepoint_frames"]) for k, v in summary.iterrows()}
        out["cp_e2e"] = changepoint_scores_for(rows, detected, truth_cps)
        out["cp_perfect"] = changepoint_scores_for(prow_df, perfect_cps, truth_cps)
        prec = {int(k): g["loc_precision_nm"].to_numpy(dtype=float) / acq.pixel_size_nm
                for k, g in results.tracks.groupby("track_id")}
        local_det = {tp.track_id: local_changepoints(loc[tp.track_id], tp, estimator.max_frames, prec[tp.track_id], acq)
                     for tp in patches}
        out["cp_classical"] = changepoint_scores_for(rows, local_det, truth_cps)
        contrast = changepoint_contrast(truth)
        out["cp_recall_by_contrast"] = {
            "e2e": recall_by_contrast(rows, detected, truth_cps, contrast),
            "perfect": recall_by_contrast(prow_df, perfect_cps, truth_cps, contrast),
        }
        cps_per_track = [len(v) for k, v in truth_cps.items()]
        out["true_cps_per_track"] = float(np.mean(cps_per_track)) if cps_per_track else 0.0
        lengths = truth.tracks.groupby("track_id").size()
        out["truth_frames_per_track"] = float(lengths.mean())
    return out


# ------------------------------------------------------------------- speed
def run_speed(model_path: str, quick: bool, acq: Acquisition, workdir: Path) -> dict[str, Any]:
    spec = SPEED_QUICK if quick else SPEED
    from napari_spt_diffusion.io import write_movie

    t0 = time.perf_counter()
    movie = np.lib.format.open_memmap(workdir / "speed_frames.npy", mode="w+", dtype=np.uint16,
                                      shape=(spec["frames"], *spec["shape"]))
    simulate_movie(spec["shape"], spec["frames"], acq, rng=spec["seed"], particles=spec["particles"],
                   model=spec["model"], out=movie)
    tif = workdir / "speed.tif"
    write_movie(tif, movie, acq, overwrite=True)
    del movie
    (workdir / "speed_frames.npy").unlink()
    t_sim = time.perf_counter() - t0
    prefix = workdir / "speed_out"
    exe = Path(sys.executable).parent / "spt-diffusion"
    cmd = [str(exe), "track", str(tif), "--model", model_path, "--device", "cpu", "--out", str(prefix)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise RuntimeError(f"spt-diffusion track failed: {proc.stderr[-2000:]}")
    meta = json.loads(Path(f"{prefix}_meta.json").read_text())
    summary = pd.read_csv(f"{prefix}_summary.csv")
    timings = meta.get("timings_s", {})
    n_tracks = int(len(summary))
    return {
        "shape": spec["shape"], "frames": spec["frames"], "particles": spec["particles"], "seed": spec["seed"],
        "t_sim": t_sim, "wall_s": wall, "frames_per_s": spec["frames"] / wall, "n_tracks": n_tracks,
        "n_localizations": int(meta.get("n_localizations", 0)), "timings": timings,
        "model_tracks_per_s": n_tracks / timings["model_s"] if timings.get("model_s") else float("nan"),
        "peak_rss_mb": max(peak_kb, before) / 1024.0,
        "command": " ".join(["spt-diffusion", *cmd[1:]]).replace(str(workdir), "TMP"),
        "movie_mb": tif.stat().st_size / 1e6,
    }


# ------------------------------------------------------------------ report
def _track_row(label: str, s: dict[str, float]) -> str:
    return (f"| {label} | {s['n']} | {fmt(s['mae_D1'])} | {fmt(s['mae_D2'])} | {fmt(s['angle_pub'])} | "
            f"{fmt(s['angle_axial'])} |")


def _cp_row(label: str, s: dict[str, float]) -> str:
    return (f"| {label} | {int(s['n_true'])} | {int(s['n_detected'])} | {fmt(s['precision'])} | {fmt(s['recall'])} | "
            f"{fmt(s['f1'])} | {fmt(s['mean_position_error_frames'], 2)} |")


def report(results: list[dict[str, Any]], speed: dict[str, Any] | None, args: argparse.Namespace, cmdline: str,
           models: dict[str, str], elapsed: float) -> str:
    lines = report_header(
        "End-to-end benchmark: movie -> tracks -> tensors and changepoints",
        f"{PROTOCOLS} `field` v1 and two multi-state fields, standard acquisition (docstring of "
        "`benchmarks/bench_end_to_end.py`: protocols and metrics). Models: "
        + ", ".join(f"`{k}` = {v}" for k, v in models.items()) + ".", cmdline)
    lines += [
        f"- Models run on the CPU only. Total run time {elapsed:.0f} s (other jobs share the cores: timings are upper "
        "bounds; load average at the end of the run above).",
        f"- Changepoint decisions: `estimation.changepoints` defaults (single-change penalty {cp.DEFAULT_PENALTY}, "
        f"binary segmentation {cp.DEFAULT_PENALTY_MULTI}, min effect {cp.DEFAULT_MIN_EFFECT} decades), "
        "one decided changepoint for tracks no longer than the model's trained length, several beyond; "
        + (f"then confirmed on the displacements (`confirm_changepoints`, alpha {DEFAULT_CONFIRM_ALPHA:g} per track)."
           if CONFIRM else "**not** confirmed on the displacements (`--no-confirm`)."),
    ]
    if args.quick:
        lines.append("- **Quick run** (smaller movies): a smoke test, not the protocol figures.")
    for r in results:
        lines += [
            "",
            f"## {r['name']}: model `{r['model']}` ({r['kind']}), {r['shape'][0]} x {r['shape'][1]} px, {r['frames']} "
            f"frames, {r['particles']:.0f} particles, seed {r['seed']}",
            "",
            f"Truth: {r['n_truth_tracks']} tracks; pipeline: {r['n_result_tracks']} tracks, {r['n_result_rows']} "
            f"localizations, {r['n_matched_rows']} matched to truth rows; pipeline time {r['t_pipeline']:.1f} s "
            f"({', '.join(f'{k[:-2]} {v:.1f} s' for k, v in r['timings'].items())}).",
        ]
        if "true_cps_per_track" in r:
            lines.append(f"Truth tracks: {r['truth_frames_per_track']:.0f} frames and {r['true_cps_per_track']:.1f} "
                         "changepoints on average.")
        lines += [
            "",
            f"Per track (>= {MIN_TRACK_FRAMES_SCORED} frames; time-averaged tensor vs truth over the matched frames):",
            "",
            "| estimate | tracks | MAE D1 (um^2/s) | MAE D2 (um^2/s) | angle sim. (published) | angle sim. (axial) |",
            "|---|---|---|---|---|---|",
            _track_row("model, end to end", r["track_e2e"]),
            _track_row("model, perfect tracking", r["track_perfect"]),
            _track_row("classical CVE + blur moments, end to end", r["track_classical"]),
        ]
        e2e, per = r["track_e2e"]["mae_D1"], r["track_perfect"]["mae_D1"]
        if np.isfinite(e2e) and np.isfinite(per) and per > 0:
            lines.append("")
            lines.append(f"End-to-end / perfect-tracking MAE D1 as first measured (end-to-end fragments against whole "
                         f"truth tracks, {r['e2e_frames_scored']:.0f} vs {r['truth_frames_scored_perfect']:.0f} scored "
                         f"frames per track on average, different track sets): {e2e / per:.2f}; MAE D2: "
                         f"{r['track_e2e']['mae_D2'] / r['track_perfect']['mae_D2']:.2f}.")
        lines += [
            "",
            "Per track, same segments: every scored end-to-end track against the perfect-tracking localizations of "
            "its truth track from its first to its last matched frame, estimated as one track (same particles over "
            "the same stretches of time; the difference is the cost of detection, localization and linking alone):",
            "",
            "| estimate | tracks | MAE D1 (um^2/s) | MAE D2 (um^2/s) | angle sim. (published) | angle sim. (axial) |",
            "|---|---|---|---|---|---|",
            _track_row("model, end to end", r["track_e2e_same"]),
            _track_row("model, perfect tracking, same segments", r["track_perfect_same"]),
        ]
        e2e_s, per_s = r["track_e2e_same"]["mae_D1"], r["track_perfect_same"]["mae_D1"]
        if np.isfinite(e2e_s) and np.isfinite(per_s) and per_s > 0:
            lines += ["", f"End-to-end / perfect-tracking MAE D1 on the same segments: {e2e_s / per_s:.2f} (target <= "
                          f"1.20); MAE D2: {r['track_e2e_same']['mae_D2'] / r['track_perfect_same']['mae_D2']:.2f}."]
        lines += _breakdown_lines(r["breakdown"])
        lk = r["linking"]
        lines += ["", f"Linking (truth rows paired with the nearest result localization within 3 px): "
                      f"{lk['identity_changes']} identity changes along the truth tracks, {lk['duplicate']} where "
                      "the spot was detected twice (a second result localization within 5 px that no other truth "
                      f"particle within 1.5 px explains), {lk['crossing']} where another particle was within 8 px "
                      "(close encounters), "
                      f"{lk['other']} other; {lk['truth_rows_detected_twice']} of {lk['truth_rows']} truth rows were "
                      f"detected twice in that sense."]
        if "frame_e2e" in r:
            lines += [
                "",
                "Per frame (matched rows; angle on rows whose truth has D2/D1 < 0.9):",
                "",
                "| estimate | frames | MAE D1 (um^2/s) | MAE D2 (um^2/s) | angle sim. (published) | angle sim. "
                "(axial) |",
                "|---|---|---|---|---|---|",
                _track_row("model, end to end", r["frame_e2e"]),
                _track_row("model, perfect tracking", r["frame_perfect"]),
                _track_row(f"classical local CVE ({2 * LOCAL_WINDOW_HALF + 1} positions), end "
                           "to end", r["frame_classical"]),
                "",
                f"Changepoints (within {CP_TOLERANCE} frames):",
                "",
                "| estimate | true | detected | precision | recall | F1 | mean position error (frames) |",
                "|---|---|---|---|---|---|---|",
                _cp_row("model, end to end", r["cp_e2e"]),
                _cp_row("model, perfect tracking", r["cp_perfect"]),
                _cp_row("classical local CVE, end to end", r["cp_classical"]),
            ]
            if "cp_recall_by_contrast" in r:
                rc = r["cp_recall_by_contrast"]
                lines += [
                    "",
                    "Recall by the size of the change (|log10| of the mean D after / before; 0.15 decades is the "
                    "decision's minimum effect; a detection within 2 frames of the true changepoint, not matched one "
                    "to one):",
                    "",
                    "| change (decades) | true (end to end) | recall, end to end | true (perfect) | recall, perfect "
                    "tracking |",
                    "|---|---|---|---|---|",
                ]
                for (lab, n_e, r_e), (_, n_p, r_p) in zip(rc["e2e"], rc["perfect"]):
                    lines.append(f"| {lab} | {n_e} | {fmt(r_e)} | {n_p} | {fmt(r_p)} |")
    if speed is not None:
        t = speed["timings"]
        lines += [
            "",
            f"## speed: {speed['shape'][0]} x {speed['shape'][1]} x {speed['frames']} uint16 movie, "
            f"{speed['particles']} particles per frame, seed {speed['seed']} (TIFF {speed['movie_mb']:.0f} MB)",
            "",
            f"Command timed (subprocess): `{speed['command']}` (TMP = a temporary folder).",
            "",
            "| quantity | value |",
            "|---|---|",
            f"| whole command, wall time | {speed['wall_s']:.1f} s |",
            f"| whole command, frames/s | {speed['frames_per_s']:.1f} |",
            f"| tracks written | {speed['n_tracks']} |",
            f"| detection + localization | {t.get('detect_localize_s', float('nan')):.1f} s "
            f"({speed['frames'] / t.get('detect_localize_s', float('nan')):.1f} frames/s) |",
            f"| linking | {t.get('link_s', float('nan')):.1f} s |",
            f"| patches | {t.get('patches_s', float('nan')):.1f} s |",
            f"| classical estimators | {t.get('classical_s', float('nan')):.1f} s |",
            f"| model inference (CPU) | {t.get('model_s', float('nan')):.1f} s, {speed['model_tracks_per_s']:.0f} "
            "tracks/s |",
            f"| changepoints + tables | {t.get('tables_s', float('nan')):.1f} s |",
            f"| peak resident memory of the command | {speed['peak_rss_mb']:.0f} MB |",
        ]
    return "\n".join(lines) + "\n"


def _breakdown_lines(b: pd.DataFrame) -> list[str]:
    if len(b) == 0:
        return []
    total = float(b["err_e2e"].sum())
    lines = [
        "",
        "Where the per-track D1 error comes from (scored end-to-end tracks; fragment = < 80 % of the truth track's "
        "frames, wrong links = < 95 % of the track's rows on its truth track, switch = a true changepoint inside, "
        f"crowded = another particle within {CROWDED_RADIUS_PX:g} px in > {CROWDED_SHARE:.0%} of its frames):",
        "",
        "| group | tracks | abs. error D1: end to end / same segments, perfect | share of the summed D1 error | "
        "abs. error D2: end to end / same segments, perfect | share of the summed D2 error |",
        "|---|---|---|---|---|---|",
    ]
    total2 = float(b["err_e2e_D2"].sum())
    for col, label in (("fragment", "fragment"), ("wrong_links", "wrong links"), ("switch", "spans a switch"),
                       ("crowded", "crowded")):
        for flag in (True, False):
            g = b[b[col] == flag]
            if len(g) == 0:
                continue
            lines.append(f"| {label if flag else 'not ' + label} | {len(g)} | {g['err_e2e'].mean():.3f} / "
                         f"{g['err_same'].mean():.3f} | {g['err_e2e'].sum() / total:.2f} | "
                         f"{g['err_e2e_D2'].mean():.3f} / "
                         f"{g['err_same_D2'].mean():.3f} | {g['err_e2e_D2'].sum() / total2:.2f} |")
    return lines


def _model_paths(text: str | None) -> dict[str, str]:
    paths = {"aniso": "aniso", "binding": "binding", "twostate": "twostate"}
    if text:
        for part in text.split(","):
            key, _, value = part.partition("=")
            if key not in paths or not value:
                raise SystemExit(f"--models expects name=PATH with name in {sorted(paths)}, got {part!r}")
            paths[key] = value
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="End-to-end accuracy and speed of track_and_estimate.")
    parser.add_argument("--quick", action="store_true", help="small movies (smoke run)")
    parser.add_argument("--sets", default="field,binding,twostate,speed")
    parser.add_argument("--models", default=None, help="name=PATH,... to replace bundled checkpoints")
    parser.add_argument("--out", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--no-confirm", action="store_true",
                        help="changepoints decided on the estimates alone (no confirmation on the displacements)")
    parser.add_argument("--motion-linking", choices=("on", "off"), default=None,
                        help="relink with each particle's own diffusivity (Settings.motion_linking; default: on)")
    parser.add_argument("--split-encounters", choices=("on", "off"), default=None,
                        help="cut tracks at ambiguous encounters (Settings.split_encounters; default: the pipeline's)")
    parser.add_argument("--encounter-llr", type=float, default=None,
                        help="swap test threshold in nats (Settings.encounter_llr_threshold)")
    parser.add_argument("--encounter-bias", type=float, default=None,
                        help="EncounterRules.max_expected_bias (0: cut every ambiguous pair, the rule of version 0.1)")
    parser.add_argument("--encounter-repair", type=float, default=None,
                        help="EncounterRules.repair_margin in nats (inf: never exchange tails, as in version 0.1)")
    parser.add_argument("--encounter-share", choices=("on", "off"), default=None,
                        help="EncounterRules.weigh_by_share (default: off)")
    args = parser.parse_args(argv)
    if args.encounter_bias is not None or args.encounter_repair is not None or args.encounter_share is not None:
        import functools

        import napari_spt_diffusion.pipeline as pipeline_module
        from napari_spt_diffusion.tracking.encounters import EncounterRules

        defaults = EncounterRules()
        pipeline_module.EncounterRules = functools.partial(
            EncounterRules,
            max_expected_bias=defaults.max_expected_bias if args.encounter_bias is None else args.encounter_bias,
            repair_margin=defaults.repair_margin if args.encounter_repair is None else args.encounter_repair,
            weigh_by_share=defaults.weigh_by_share if args.encounter_share is None else args.encounter_share == "on")
    global CONFIRM
    CONFIRM = not args.no_confirm
    if args.split_encounters is not None:
        LINK_OPTIONS["split_encounters"] = args.split_encounters == "on"
    if args.motion_linking is not None:
        LINK_OPTIONS["motion_linking"] = args.motion_linking == "on"
    if args.encounter_llr is not None:
        LINK_OPTIONS["encounter_llr_threshold"] = args.encounter_llr
    if args.threads:
        torch.set_num_threads(args.threads)
    argv_list = sys.argv[1:] if argv is None else argv
    cmdline = " ".join([".venv/bin/python benchmarks/bench_end_to_end.py", *argv_list])
    models = _model_paths(args.models)
    wanted = [s.strip() for s in args.sets.split(",") if s.strip()]
    acq = Acquisition()
    started = time.perf_counter()
    results = []
    for name in wanted:
        if name == "speed":
            continue
        if name not in SETS:
            raise SystemExit(f"unknown set {name!r}")
        print(f"[{time.perf_counter() - started:.0f} s] set {name}", file=sys.stderr, flush=True)
        results.append(run_set(name, SETS[name], models[SETS[name]["model"]], args.quick, acq))
    speed = None
    if "speed" in wanted:
        print(f"[{time.perf_counter() - started:.0f} s] speed", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            speed = run_speed(models["aniso"], args.quick, acq, Path(tmp))
    text = report(results, speed, args, cmdline, {k: models[k] for k in models}, time.perf_counter() - started)
    print(text)
    write_report(args.out or report_path("end_to_end", args.quick), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
