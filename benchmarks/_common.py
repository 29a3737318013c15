"""What the benchmark scripts share: the report header and writing, the seed test sets, the
model runner, the scores of the seed protocols (docs/protocols.md) and the scores of a
tracked movie against its ground truth.

The scripts import it as ``from _common import ...``: Python puts a script's own folder
first on ``sys.path``, so this works for ``python benchmarks/bench_NAME.py`` from any
working directory and for ``spt-diffusion benchmark NAME``. No benchmark imports another.

torch is imported only by the functions that run a model, so that the scripts without a
model (tracking, simulator, classical) stay free of it.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import blur_moments as B
from napari_spt_diffusion.estimation import classical as C
from napari_spt_diffusion.estimation.changepoints import single_changepoint
from napari_spt_diffusion.estimation.tensor import mean_tensor, theta_from_sin_cos_2theta
from napari_spt_diffusion.io._atomic import atomic_write_text
from napari_spt_diffusion.metrics import (
    angle_similarity_axial,
    angle_similarity_published,
    changepoint_scores,
    mean_absolute_error,
)
from napari_spt_diffusion.tracking.patches import TrackPatches

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
REPORTS = BENCH_DIR / "reports"
#: The page that defines every protocol a report names.
PROTOCOLS = "docs/protocols.md"

#: Generator seeds of the seed-protocol test sets (training never uses them).
SEEDS = {"aniso": 2025, "binding": 2026, "twostate": 2027}
#: Frames per track of the seed protocols.
N_FRAMES = 30
#: Published figures (docs/protocols.md): MAE D1, MAE D2, angle similarity, changepoint MAE (frames).
PUBLISHED = {
    "aniso": {"cross-transformer": (0.361, 0.245, 0.914, None), "LSTM": (0.37, 0.261, 0.902, None),
              "Pix2D": (0.47, 0.353, 0.906, None)},
    "binding": {"cross-transformer": (0.279, 0.228, 0.945, 0.412), "LSTM": (0.375, 0.339, 0.92, 0.713),
                "Pix2D": (0.578, 0.556, 0.87, 0.674)},
    "twostate": {"cross-transformer": (0.394, 0.394, None, 5.02), "LSTM": (0.559, 0.559, None, 6.393),
                 "Pix2D": (0.97, 0.97, None, 5.802)},
}
#: Edges (decades of D: |log10| of the ratio of the mean D after and before) of the tables by size of a change.
CHANGE_SIZE_EDGES_DECADES = (0.0, 0.15, 0.3, 0.6, np.inf)


# ------------------------------------------------------------------------------ report
def _kb_field(path: str, name: str) -> float | None:
    """The ``name:`` field (kB) of a ``/proc`` status-like file, summed; ``None`` when it cannot be read."""
    try:
        with open(path) as handle:
            return sum(float(line.split()[1]) for line in handle if line.startswith(name))
    except (OSError, ValueError, IndexError):
        return None


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """``(RSS, PSS)`` in MB summed over process ``pid`` and its descendants (``/proc``; PSS shares
    the pages a forked worker still shares with its parent between them instead of counting them
    twice; where a process's PSS cannot be read, its RSS stands in)."""
    rss = pss = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        own_rss = _kb_field(f"/proc/{current}/status", "VmRSS:")
        if own_rss is None:  # the process ended
            continue
        own_pss = _kb_field(f"/proc/{current}/smaps_rollup", "Pss:")
        rss += own_rss
        pss += own_rss if own_pss is None else own_pss
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo += [int(child) for child in handle.read().split()]
        except (OSError, ValueError):  # a thread or the process ended meanwhile
            continue
    return rss / 1024.0, pss / 1024.0


@dataclass
class TreeRun:
    """A finished command: exit status, output, and the peaks of the summed RSS and PSS (MB) of its
    process tree (the command and every process it started), sampled every ``interval_s`` (reading
    a large process's ``smaps_rollup`` takes milliseconds, taken from the cores the measured run
    shares: do not sample much more often)."""

    returncode: int
    stdout: str
    stderr: str
    tree_peak_rss_mb: float
    tree_peak_pss_mb: float


def run_with_tree_memory(command: Sequence[str], interval_s: float = 0.1) -> TreeRun:
    """Run ``command`` to its end, sampling its process tree's memory (:func:`tree_memory_mb`)."""
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0, 0.0]

    def sample() -> None:
        while process.poll() is None:
            rss, pss = tree_memory_mb(process.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    sampler.join()
    return TreeRun(process.returncode, stdout, stderr, peak[0], peak[1])


def fmt(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; ``n/a`` for None, NaN and infinities."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def size_bins(edges: Sequence[float] = CHANGE_SIZE_EDGES_DECADES) -> list[tuple[float, float, str]]:
    """``(low, high, label)`` of the bins between consecutive ``edges`` (the last may be open)."""
    return [(lo, hi, f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">= {lo:g}") for lo, hi in zip(edges[:-1], edges[1:])]


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that ran ``benchmarks/<script>`` with ``argv`` (default: this process's arguments)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join([".venv/bin/python", f"benchmarks/{script}", *args])


def git_commit() -> str:
    """The checkout's commit, marked when tracked files differ from it; ``unknown`` outside git."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def machine() -> str:
    """Processor, cores, Python, numpy and, when loaded, torch with its thread count."""
    parts = [f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs)",
             f"Python {platform.python_version()}", f"numpy {np.__version__}"]
    torch = sys.modules.get("torch")
    if torch is not None:
        gpu = "a GPU present" if torch.cuda.is_available() else "no GPU"
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} thread(s), {gpu})")
    return ", ".join(parts)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other jobs share the cores)."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def run_lines(command: str) -> list[str]:
    """Report lines naming the command, the date, the machine and the git commit of a run."""
    return [f"- Command: `{command}`",
            f"- Date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; machine: {machine()}; "
            f"git commit {git_commit()}; load average {load_average()} (1, 5, 15 min)."]


def report_header(title: str, protocol: str, command: str) -> list[str]:
    """The first lines of a report: its title, the protocol (name, version, seeds, size) and the run."""
    return [f"# {title}", "", f"- Protocol: {protocol}", *run_lines(command)]


def report_path(name: str, quick: bool) -> Path:
    """``benchmarks/reports/<name>.md``, or ``<name>_quick.md`` for a quick run."""
    return REPORTS / f"{name}{'_quick' if quick else ''}.md"


def write_report(path: str | os.PathLike[str], text: str | Sequence[str]) -> Path:
    """Write a report (text or lines) atomically (the package's one atomic writer), so a report
    is never half written."""
    path = Path(path)
    if not isinstance(text, str):
        text = "\n".join(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    return path


def json_clean(x: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays as Python ones, NaN and infinities as null."""
    if isinstance(x, dict):
        return {str(k): json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_clean(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write a report's figures as strict JSON (:func:`json_clean`; other objects as text), atomically."""
    return write_report(path, json.dumps(json_clean(data), indent=1, default=str, allow_nan=False))


# ---------------------------------------------------------------------------- test sets
def seed_test_set(model: str, n: int, acq: Acquisition | None = None, cache: Path | None = None,
                  seed: int | None = None):
    """The ``n``-track test set of protocol ``seed-<model>`` (its seed unless ``seed`` is given).

    Made through the tracking path by ``make_samples(model, n, 30, acq, seed)``. With
    ``cache``, a set of the standard acquisition is kept there as
    ``seed-<model>-<seed>-n<n>.npz`` and read back on the next call. Returns
    ``(batch, samples per second)``; the rate is None when the set came from the cache.
    """
    from napari_spt_diffusion.training.samples import load_samples, make_samples, save_samples

    acq = Acquisition() if acq is None else acq
    seed = SEEDS[model] if seed is None else seed
    path = None if cache is None or acq != Acquisition() else Path(cache) / f"seed-{model}-{seed}-n{n}.npz"
    if path is not None and path.exists():
        return load_samples(path), None
    t0 = time.perf_counter()
    batch = make_samples(model, n, n_frames=N_FRAMES, acquisition=acq, seed=seed)
    rate = n / (time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_samples(path, batch, overwrite=True)
    return batch, rate


# ------------------------------------------------------------------------------- models
def run_model(module, batch, acq: Acquisition, batch_size: int = 512) -> tuple[dict[str, np.ndarray], float]:
    """A model (TorchScript or eager) over a sample batch, in batches of ``batch_size`` tracks.

    Returns the estimates (``D1_um2_s``, ``D2_um2_s``, ``theta_deg``: ``(N,)`` for a sequence
    model, ``(N, T)`` for a pointwise one) and the tracks per second after a warm-up.
    """
    import torch

    with torch.no_grad():
        outs = []
        n = len(batch)
        # TorchScript's profiling executor optimises during the first calls: warm up before timing
        w = min(n, batch_size)
        warm = (torch.from_numpy(np.ascontiguousarray(batch.patches[:w], dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(batch.displacements[:w], dtype=np.float32)),
                torch.ones((w, batch.patches.shape[1]), dtype=torch.bool))
        for _ in range(3):
            module(*warm)
        t0 = time.perf_counter()
        for a in range(0, n, batch_size):
            p = torch.from_numpy(np.ascontiguousarray(batch.patches[a:a + batch_size], dtype=np.float32))
            d = torch.from_numpy(np.ascontiguousarray(batch.displacements[a:a + batch_size], dtype=np.float32))
            v = torch.ones(p.shape[:2], dtype=torch.bool)
            outs.append(module(p, d, v).numpy())
        rate = n / (time.perf_counter() - t0)
    out = np.concatenate(outs).astype(np.float64)
    return {
        "D1_um2_s": acq.diffusion_to_um2_s(out[..., 0]),
        "D2_um2_s": acq.diffusion_to_um2_s(out[..., 1]),
        "theta_deg": theta_from_sin_cos_2theta(out[..., 2], out[..., 3]),
    }, rate


# ------------------------------------------------------------------ classical baselines
#: Per-track classical estimators of a sample batch, in the order of the report tables.
CLASSICAL_TRACKS = ("MSD (isotropic)", "MSD tensor", "CVE tensor", "blur-moment tensor", "combined (CVE + blur)")


def classical_tracks(batch, acq: Acquisition, names: Sequence[str] = CLASSICAL_TRACKS) -> dict[str, dict]:
    """The classical per-track estimates named in ``names`` (of :data:`CLASSICAL_TRACKS`)."""
    pos, patches = batch.positions_px, batch.patches
    kw = {"subpixel_offset_px": batch.subpixel_offset_px, "outside_mask": batch.outside_mask}

    def msd() -> dict:  # one isotropic D, scored as both D1 and D2; no angle, never clipped
        m = C.msd_diffusion_batch(pos, acq)
        return {**m, "D1_um2_s": m["D_um2_s"], "D2_um2_s": m["D_um2_s"], "theta_deg": None,
                "clipped": np.zeros(len(pos), bool)}

    run = {"MSD (isotropic)": msd,
           "MSD tensor": lambda: C.msd_tensor_batch(pos, acq),
           "CVE tensor": lambda: C.cve_tensor_batch(pos, acq),
           "blur-moment tensor": lambda: B.blur_moment_tensor_batch(patches, acq, **kw),
           "combined (CVE + blur)": lambda: B.combined_tensor_batch(pos, patches, acq, **kw)}
    return {name: run[name]() for name in names}


def _window_index(t: int, half: int) -> np.ndarray:
    """(T, 2 half + 1) frame indices of a window around each frame, shifted inside the track."""
    start = np.clip(np.arange(t) - half, 0, t - (2 * half + 1))
    return start[:, None] + np.arange(2 * half + 1)[None, :]


def classical_frames(batch, acq: Acquisition, chunk: int = 250) -> dict[str, dict]:
    """Per-frame classical estimates: blur-moment tensor over +-2 frames, CVE tensor over +-3 frames."""
    n, t = batch.patches.shape[:2]
    res = {"blur-moment, 5-frame window": {k: np.empty((n, t)) for k in ("D1_um2_s", "D2_um2_s", "theta_deg")},
           "CVE, 7-frame window": {k: np.empty((n, t)) for k in ("D1_um2_s", "D2_um2_s", "theta_deg")}}
    wb, wc = _window_index(t, 2), _window_index(t, 3)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        m = b - a
        pw = batch.patches[a:b][:, wb].reshape(m * t, wb.shape[1], *batch.patches.shape[2:])
        ow = batch.subpixel_offset_px[a:b][:, wb].reshape(m * t, wb.shape[1], 2)
        mw = batch.outside_mask[a:b][:, wb].reshape(m * t, wb.shape[1], *batch.patches.shape[2:])
        est = B.blur_moment_tensor_batch(pw, acq, subpixel_offset_px=ow, outside_mask=mw)
        for k in ("D1_um2_s", "D2_um2_s", "theta_deg"):
            res["blur-moment, 5-frame window"][k][a:b] = est[k].reshape(m, t)
        xw = batch.positions_px[a:b][:, wc].reshape(m * t, wc.shape[1], 2)
        est = C.cve_tensor_batch(xw, acq)
        for k in ("D1_um2_s", "D2_um2_s", "theta_deg"):
            res["CVE, 7-frame window"][k][a:b] = est[k].reshape(m, t)
    return res


# ------------------------------------------------------------------------------ scores
def track_metrics(pred: dict, batch) -> dict:
    """Per-track scores of a seed-aniso estimate: MAE D1, MAE D2, angle similarity (published, axial)."""
    d1t, d2t, tht = batch.D1_um2_s[:, 0], batch.D2_um2_s[:, 0], batch.theta_deg[:, 0]
    th = pred.get("theta_deg")
    return {
        "mae_D1_um2_s": mean_absolute_error(pred["D1_um2_s"], d1t),
        "mae_D2_um2_s": mean_absolute_error(pred["D2_um2_s"], d2t),
        "angle_similarity_published": None if th is None else angle_similarity_published(th, tht),
        "angle_similarity_axial": None if th is None else angle_similarity_axial(th, tht),
    }


def changepoint_errors(d1_pred: np.ndarray, d1_true: np.ndarray) -> np.ndarray:
    """``(N,)`` absolute difference (frames) of the single changepoints of predictions and labels."""
    errs = []
    for p, q in zip(d1_pred, d1_true):
        if not np.all(np.isfinite(p)):
            p = np.where(np.isfinite(p), p, np.nanmedian(p))
        errs.append(abs(single_changepoint(p)[0] - single_changepoint(q)[0]))
    return np.asarray(errs, dtype=float)


def labels_change(d1_true: np.ndarray) -> np.ndarray:
    """``(N,)`` True where the per-frame labels change along the track.

    A switch in the first or last half-frame leaves constant labels; every split of a
    constant sequence has the same cost, so the labels' changepoint has no minimiser there
    (``single_changepoint`` returns frame 1 for these labels, and for a constant estimate
    whichever split floating-point round-off favours: even an exact answer scores errors of
    up to 28 frames on such tracks).
    """
    return np.any(d1_true != d1_true[:, :1], axis=1)


def frame_metrics(pred: dict, batch, cp_err: np.ndarray | None = None) -> dict:
    """Per-frame scores of a two-state estimate; ``cp_err``: its :func:`changepoint_errors` when already computed."""
    d1t, d2t, tht = batch.D1_um2_s, batch.D2_um2_s, batch.theta_deg
    aniso = d2t < ANISO_RATIO * d1t
    th = pred["theta_deg"]
    if cp_err is None:
        cp_err = changepoint_errors(np.asarray(pred["D1_um2_s"], float), d1t.astype(float))
    changed = labels_change(d1t)
    return {
        "mae_D1_um2_s": mean_absolute_error(pred["D1_um2_s"], d1t),
        "mae_D2_um2_s": mean_absolute_error(pred["D2_um2_s"], d2t),
        "mae_Dmean_um2_s": mean_absolute_error(0.5 * (pred["D1_um2_s"] + pred["D2_um2_s"]), 0.5 * (d1t + d2t)),
        "angle_similarity_published": angle_similarity_published(th[aniso], tht[aniso]) if aniso.any() else None,
        "angle_similarity_axial": angle_similarity_axial(th[aniso], tht[aniso]) if aniso.any() else None,
        "changepoint_mae_frames": float(cp_err.mean()),
        "changepoint_mae_frames_labelled_change": float(cp_err[changed].mean()) if changed.any() else None,
        "n_tracks_labelled_change": int(changed.sum()),
    }


# ------------------------------------------------- a tracked movie against its ground truth
#: Result tracks are scored over at least this many frames matched to the truth.
MIN_TRACK_FRAMES_SCORED = 20
#: A result localization matches a truth row of the same frame within this distance (px).
MATCH_RADIUS_PX = 1.0
#: The truth is anisotropic (its angle is scored) where D2 < ANISO_RATIO * D1.
ANISO_RATIO = 0.9
#: A detected changepoint within this many frames of a true one is a hit.
CP_TOLERANCE = 2


def match_rows(results, truth, radius_px: float = MATCH_RADIUS_PX) -> pd.DataFrame:
    """Result rows with the truth row of the matched truth track at the same frame.

    Each result track is matched to the truth track that holds most of its rows within
    ``radius_px``. Returns the result rows (``track_id, frame`` + estimates) joined with
    ``truth_id`` and the truth labels (``D1_true, D2_true, theta_true, cp_true``), only where
    the matched truth track has a row within ``radius_px`` at that frame.
    """
    r = results.tracks
    t = truth.tracks[["track_id", "frame", "x_px", "y_px", "D1_um2_s", "D2_um2_s", "theta_deg", "is_changepoint"]]
    merged = r[["track_id", "frame", "x_px", "y_px"]].merge(t, on="frame", suffixes=("", "_t"))
    close = np.hypot(merged["x_px"] - merged["x_px_t"], merged["y_px"] - merged["y_px_t"]) < radius_px
    merged = merged[close]
    votes = merged.groupby(["track_id", "track_id_t"]).size().reset_index(name="n")
    best = votes.sort_values(["n", "track_id_t"]).groupby("track_id").tail(1)[["track_id", "track_id_t"]]
    rows = merged.merge(best, on=["track_id", "track_id_t"])
    rows = rows.rename(columns={"track_id_t": "truth_id", "D1_um2_s": "D1_true", "D2_um2_s": "D2_true",
                                "theta_deg": "theta_true", "is_changepoint": "cp_true"})
    est = r[["track_id", "frame", "D1_um2_s", "D2_um2_s", "theta_deg"]]
    return rows.merge(est, on=["track_id", "frame"]).sort_values(["track_id", "frame"]).reset_index(drop=True)


def truth_changepoints(truth) -> dict[int, np.ndarray]:
    """The true changepoint frames of every truth track."""
    t = truth.tracks
    return {int(k): g.loc[g["is_changepoint"], "frame"].to_numpy() for k, g in t.groupby("track_id")}


def scores(rows: pd.DataFrame, d1: str = "D1", d2: str = "D2", th: str = "theta") -> dict[str, float]:
    """MAE of D1 and D2, angle similarity (where the truth is anisotropic) against the ``*_true`` columns.

    ``rows``: one row per scored track (:func:`tracks_vs_truth`) or per matched frame
    (:func:`match_rows`, with ``d1, d2, th`` naming the estimate columns).
    """
    if len(rows) == 0:
        return {"n": 0, "mae_D1": np.nan, "mae_D2": np.nan, "angle_pub": np.nan, "angle_axial": np.nan}
    aniso = rows["D2_true"] < ANISO_RATIO * rows["D1_true"]
    return {
        "n": int(len(rows)),
        "mae_D1": mean_absolute_error(rows[d1], rows["D1_true"]),
        "mae_D2": mean_absolute_error(rows[d2], rows["D2_true"]),
        "angle_pub": angle_similarity_published(rows.loc[aniso, th], rows.loc[aniso, "theta_true"]),
        "angle_axial": angle_similarity_axial(rows.loc[aniso, th], rows.loc[aniso, "theta_true"]),
    }


def tracks_vs_truth(rows: pd.DataFrame, values: dict[int, tuple[float, float, float]],
                    min_frames: int = MIN_TRACK_FRAMES_SCORED) -> pd.DataFrame:
    """Per-track estimate ``values[track_id] = (D1, D2, theta)`` next to the time-averaged truth over its rows."""
    out = []
    for tid, g in rows.groupby("track_id"):
        if len(g) < min_frames or tid not in values:
            continue
        t1, t2, tt = mean_tensor(g["D1_true"], g["D2_true"], g["theta_true"])
        d1, d2, th = values[tid]
        out.append({"track_id": tid, "D1": d1, "D2": d2, "theta": th, "D1_true": t1, "D2_true": t2, "theta_true": tt})
    return pd.DataFrame(out, columns=["track_id", "D1", "D2", "theta", "D1_true", "D2_true", "theta_true"])


def changepoint_scores_for(rows: pd.DataFrame, detected: dict[int, list[int]], truth_cps: dict[int, np.ndarray],
                           tolerance: int = CP_TOLERANCE) -> dict[str, float]:
    """The true changepoints inside each scored track's matched frame range against the detected ones."""
    true_l, det_l = [], []
    for tid, g in rows.groupby("track_id"):
        if tid not in detected:
            continue
        f0, f1 = int(g["frame"].min()), int(g["frame"].max())
        tc = truth_cps.get(int(g["truth_id"].iloc[0]), np.zeros(0))
        true_l.append([c for c in tc if f0 < c <= f1])
        det_l.append([c for c in detected[tid] if f0 < c <= f1])
    return changepoint_scores(true_l, det_l, tolerance=tolerance)


def match_frames(out: pd.DataFrame, truth: pd.DataFrame, radius: float = 1.5) -> pd.DataFrame:
    """Hungarian assignment per frame between output rows and truth rows, pairs within ``radius`` px
    (the foreign-optics scores).

    Returns one row per pair: ``frame``, ``out_index``, ``truth_index`` (row labels), ``dist_px``.
    """
    from scipy.optimize import linear_sum_assignment

    pairs: list[tuple[int, Any, Any, float]] = []
    tgroups = dict(tuple(truth.groupby("frame")))
    for frame, og in out.groupby("frame"):
        tg = tgroups.get(frame)
        if tg is None or og.empty:
            continue
        d = np.hypot(og["x_px"].to_numpy()[:, None] - tg["x_px"].to_numpy()[None, :],
                     og["y_px"].to_numpy()[:, None] - tg["y_px"].to_numpy()[None, :])
        cost = np.where(d <= radius, d, 1e6)
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols):
            if d[r, c] <= radius:
                pairs.append((int(frame), og.index[r], tg.index[c], float(d[r, c])))
    return pd.DataFrame(pairs, columns=["frame", "out_index", "truth_index", "dist_px"])


def synthetic_tracks(n: int, seed: int, n_frames: int = 30) -> list[TrackPatches]:
    """``n`` tracks of ``n_frames`` frames for timing a model: noisy 11 x 11 spot patches (photo-electrons)
    and Brownian steps (px)."""
    patch = 11
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:patch, :patch] - patch // 2
    tracks = []
    for i in range(n):
        off = rng.uniform(-0.5, 0.5, (n_frames, 2))
        spot = np.exp(-((yy[None] - off[:, :1, None]) ** 2 + (xx[None] - off[:, 1:, None]) ** 2) / 2.0)
        patches = rng.poisson(10.0 + 1000.0 / (2 * np.pi) * spot).astype(np.float32)
        pos = np.cumsum(rng.normal(0.0, 1.0, (n_frames, 2)), axis=0) + 50.0
        disp = np.zeros_like(pos)
        disp[1:] = np.diff(pos, axis=0)
        tracks.append(TrackPatches(
            track_id=i, frames=np.arange(n_frames), positions_px=pos, patches_photons=patches,
            subpixel_offset_px=off, outside_mask=np.zeros((n_frames, patch, patch), bool),
            displacements_px=disp, gap_before=np.r_[True, np.zeros(n_frames - 1, bool)],
        ))
    return tracks
