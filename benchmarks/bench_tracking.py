"""Tracking benchmarks: protocols "field" and "speed" of docs/protocols.md.

field (v1, seed 7)
    256 x 256 px, 200 frames, standard acquisition, 60 particles on average entering and
    leaving the field, each with its own anisotropic tensor (D1 ~ U[0.05, 3] um^2/s),
    simulated by ``simulation.simulate_movie``; run at 1,000 and at 250 photons/frame.
    Tracker: ``detect_and_localize`` with default settings (which include the second pass
    over wide spots, ``overlaps=True``: close pairs split, streaks modelled), then ``link`` with
    ``max_D_um2_s = 3`` (the largest D of the protocol) and its default memory.
    Metrics: detection recall / precision (a detection matches a true position within
    1 px, Hungarian assignment per frame); localization RMSE per axis (nm) of the matched
    detections of slow particles (true D1 < 0.1 um^2/s) next to the Cramer-Rao bound
    (Mortensen et al. 2010 with the true photons, background and read noise), also for
    all particles and for slow particles with no other particle within 5 px; link recall
    (fraction of true frame-to-frame links whose two ends are consecutive localizations of
    one reconstructed track; also given among links whose two ends were detected) and link
    precision (fraction of reported links, gap-bridging ones included, that join two
    detections of the same true particle). The same movies are also run through the
    previous method (``overlaps=False``) and reported beside.

speed (v1, seed 8)
    A 512 x 512 x 1000 uint16 movie, 100 particles per frame, standard acquisition,
    written to a .npy file. Each method runs in its own fresh process, reading the movie
    one frame at a time from the file (no memory map, so the peak resident memory is the
    method's own): ours (``detect_and_localize`` + ``link``) and trackpy's ``batch`` +
    ``link`` (one process, ``diameter = 7``, ``minmass = 100``, with trackpy's default
    separation, and with ``separation = 4`` which finds the same particles as ours, the
    latter on the first 100 frames only because it is slow; and trackpy's pure-Python
    engine and recursive linker, as before numba was installed, on the first 200 frames;
    recall and precision of every method are reported beside its speed; same search range
    and memory for all links); and the whole ``spt-diffusion track`` command on the same
    movie written as a TIFF, with the same linking settings (its detection and link scores
    are those of its result tracks, after the command's track-length filter and encounter
    cuts). Reported: seconds and frames/s of each stage, CPU seconds of the process (all
    its threads), peak RSS (``VmHWM`` of the process), and the RSS after imports. The
    command finds the spots of the mapped TIFF with a forked worker process beside its own
    thread (``tracking/spot_processes.py``); its row also gives the peak of the summed RSS and
    PSS of the command and its workers, sampled every 0.1 s (its CPU seconds include the
    workers'). The ``ours`` row reads frames through a reader that is not a memory map, so
    it finds the spots with threads, as for a compressed or lazily loaded movie.

Command::

    .venv/bin/python benchmarks/bench_tracking.py [field|speed|all] [--quick] [--threads N]
        [--out benchmarks/reports/tracking.md]
        [--split-encounters on|off] [--encounter-llr X]

``--threads N`` caps the BLAS/OpenMP thread pools (environment variables set before numpy
is imported; the speed workers inherit them).

``--quick`` runs small versions (field: 128 x 128 x 60, 15 particles; speed:
512 x 512 x 60) to check the script; the report says which was run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path


def _limit_threads(argv: list[str]) -> None:
    """Apply ``--threads N`` to the BLAS/OpenMP pools before numpy is imported (workers inherit it)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        else:
            value = argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None
        if value is not None:
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
                os.environ[name] = value


_limit_threads(sys.argv[1:])

# Imports below the thread limits (E402 is ignored for this file in pyproject.toml).
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from _common import PROTOCOLS, command_line, fmt, report_header, report_path, run_with_tree_memory, write_report
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.io.movie import write_movie
from napari_spt_diffusion.simulation import simulate_movie
from napari_spt_diffusion.tracking import default_search_range_px, detect_and_localize, link, mortensen_precision_nm
from napari_spt_diffusion.tracking.crowding import nearest_other_px
from napari_spt_diffusion.tracking.encounters import EncounterRules

MATCH_RADIUS_PX = 1.0
FIELD_SEED = 7
SPEED_SEED = 8
FIELD_MAX_D_UM2_S = 3.0
#: trackpy settings for the speed protocol: diameter 7 px (odd, just above the 6 sigma
#: spot of a 1 px PSF, as trackpy recommends) and minmass 100 (on 10 frames of the speed
#: movie, minmass 50-200 all give the same recall, 0.917, at precision >= 0.98; 300 loses
#: recall). With trackpy's default separation (diameter + 1 = 8 px) close pairs merge;
#: separation 4 px brings trackpy's recall to ours (0.95) but makes it several times
#: slower, so that variant runs on the first TRACKPY_SEP4_FRAMES frames only.
TRACKPY_DIAMETER = 7
TRACKPY_VARIANTS = {
    "trackpy": {"minmass": 100.0},
    "trackpy_sep4": {"minmass": 100.0, "separation": 4},
    "trackpy_no_numba": {"minmass": 100.0, "engine": "python"},
}
TRACKPY_SEP4_FRAMES = 100
#: trackpy uses numba when it is installed (a dependency of this package since issue 16): its
#: pure-Python engine and recursive linker, the baseline of earlier reports, are measured on the
#: first TRACKPY_NO_NUMBA_FRAMES frames (the issue's 200-frame comparison).
TRACKPY_NO_NUMBA_FRAMES = 200
TRACKPY_FRAME_LIMITS = {"trackpy_sep4": TRACKPY_SEP4_FRAMES, "trackpy_no_numba": TRACKPY_NO_NUMBA_FRAMES}
#: ``link`` options of the field protocol set from the command line (``--split-encounters``,
#: ``--encounter-llr``); empty: ``link``'s defaults. The "previous method" column keeps the defaults.
LINK_OPTIONS: dict = {}


# ------------------------------------------------------------------ matching
def match_detections(det: pd.DataFrame, truth: pd.DataFrame, radius: float = MATCH_RADIUS_PX):
    """Hungarian matching per frame within ``radius`` px.

    Returns ``(det_to_truth, truth_to_det)``: for every row (by position) of ``det`` the
    matched row position in ``truth`` or -1, and the reverse.
    """
    det_to_truth = np.full(len(det), -1, dtype=np.int64)
    truth_to_det = np.full(len(truth), -1, dtype=np.int64)
    det_frames = det["frame"].to_numpy()
    truth_frames = truth["frame"].to_numpy()
    det_pos = det[["y_px", "x_px"]].to_numpy(float)
    truth_pos = truth[["y_px", "x_px"]].to_numpy(float)
    det_order = np.argsort(det_frames, kind="stable")
    truth_order = np.argsort(truth_frames, kind="stable")
    frames = np.union1d(det_frames, truth_frames)
    d_starts = np.searchsorted(det_frames[det_order], frames, "left")
    d_ends = np.searchsorted(det_frames[det_order], frames, "right")
    t_starts = np.searchsorted(truth_frames[truth_order], frames, "left")
    t_ends = np.searchsorted(truth_frames[truth_order], frames, "right")
    for k in range(len(frames)):
        di = det_order[d_starts[k] : d_ends[k]]
        ti = truth_order[t_starts[k] : t_ends[k]]
        if len(di) == 0 or len(ti) == 0:
            continue
        dist = np.linalg.norm(det_pos[di, None, :] - truth_pos[None, ti, :], axis=-1)
        cost = np.where(dist <= radius, dist, 1e6)
        rows, cols = linear_sum_assignment(cost)
        ok = dist[rows, cols] <= radius
        det_to_truth[di[rows[ok]]] = ti[cols[ok]]
        truth_to_det[ti[cols[ok]]] = di[rows[ok]]
    return det_to_truth, truth_to_det


def detection_scores(det, truth):
    d2t, t2d = match_detections(det, truth)
    matched = int((d2t >= 0).sum())
    return {
        "n_true": len(truth),
        "n_detected": len(det),
        "recall": matched / max(len(truth), 1),
        "precision": matched / max(len(det), 1),
    }, d2t, t2d


def localization_scores(det, truth, d2t, acq, photons, mask_truth):
    """Per-axis RMSE (nm) of matched detections whose truth row satisfies ``mask_truth``."""
    sel = np.flatnonzero(d2t >= 0)
    sel = sel[mask_truth[d2t[sel]]]
    if len(sel) == 0:
        return {"n": 0, "rmse_nm": float("nan"), "ci95_nm": (float("nan"), float("nan")), "fit_ok": float("nan")}
    err = det[["y_px", "x_px"]].to_numpy(float)[sel] - truth[["y_px", "x_px"]].to_numpy(float)[d2t[sel]]
    sq = (err * acq.pixel_size_nm) ** 2
    rmse = float(np.sqrt(sq.mean()))
    # 95 % interval of the RMSE from the spread of the per-localization squared errors
    se_ms = sq.mean(axis=1).std(ddof=1) / math.sqrt(len(sel)) if len(sel) > 1 else float("nan")
    lo = math.sqrt(max(sq.mean() - 1.96 * se_ms, 0.0))
    hi = math.sqrt(sq.mean() + 1.96 * se_ms)
    crlb = float(mortensen_precision_nm(photons, acq.background_photons, acq.psf_sigma_nm, acq.pixel_size_nm,
                                        acq.read_noise_e))
    return {
        "n": int(len(sel)),
        "rmse_nm": rmse,
        "ci95_nm": (lo, hi),
        "crlb_nm": crlb,
        "ratio": rmse / crlb,
        "reported_median_nm": float(np.median(det["loc_precision_nm"].to_numpy()[sel])),
        "fit_ok": float(det["fit_ok"].to_numpy()[sel].mean()),
    }


def link_scores(tracks, truth, d2t, t2d):
    """Link recall and precision (see the module docstring)."""
    truth = truth.reset_index(drop=True)
    tid = truth["track_id"].to_numpy()
    tframe = truth["frame"].to_numpy()
    order = np.lexsort((tframe, tid))
    a, b = order[:-1], order[1:]
    true_link = (tid[a] == tid[b]) & (tframe[b] - tframe[a] == 1)
    a, b = a[true_link], b[true_link]
    our_track = tracks["track_id"].to_numpy()
    da, db = t2d[a], t2d[b]
    both = (da >= 0) & (db >= 0)
    # tracks is sorted by (track_id, frame): a link is two consecutive rows of one track
    recovered = both.copy()
    recovered[both] = (our_track[da[both]] == our_track[db[both]]) & (np.abs(da[both] - db[both]) == 1)
    n_true = len(a)
    # reported links
    same = our_track[:-1] == our_track[1:]
    u = np.flatnonzero(same)
    v = u + 1
    tu, tv = d2t[u], d2t[v]
    pid = truth["particle_id"].to_numpy() if "particle_id" in truth.columns else tid
    correct = (tu >= 0) & (tv >= 0)
    correct[correct] = pid[tu[correct]] == pid[tv[correct]]
    return {
        "n_true_links": int(n_true),
        "recall": float(recovered.sum() / max(n_true, 1)),
        "recall_detected": float(recovered.sum() / max(both.sum(), 1)),
        "n_reported_links": int(len(u)),
        "precision": float(correct.sum() / max(len(u), 1)),
    }


# --------------------------------------------------------------------- field
#: A particle is "isolated" in a frame when no other true particle is within this distance (px).
ISOLATION_PX = 5.0


def run_field(quick: bool) -> list[dict]:
    shape, n_frames, particles = ((128, 128), 60, 15.0) if quick else ((256, 256), 200, 60.0)
    out = []
    for photons in (1000.0, 250.0):
        acq = Acquisition(signal_photons=photons)
        t0 = time.perf_counter()
        sim = simulate_movie(shape, n_frames, acq, FIELD_SEED, model="aniso", particles=particles)
        t_sim = time.perf_counter() - t0
        truth = sim.truth.tracks.reset_index(drop=True)
        t0 = time.perf_counter()
        det = detect_and_localize(sim.movie, acq)
        t_det = time.perf_counter() - t0
        # the previous method (no second pass over wide spots), same movie, for comparison
        t0 = time.perf_counter()
        det_base = detect_and_localize(sim.movie, acq, overlaps=False)
        t_det_base = time.perf_counter() - t0
        base = link(det_base, acq, max_D_um2_s=FIELD_MAX_D_UM2_S).tracks
        base_scores, base_d2t, base_t2d = detection_scores(base, truth)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = link(det, acq, max_D_um2_s=FIELD_MAX_D_UM2_S, **LINK_OPTIONS)
        t_link = time.perf_counter() - t0
        tracks = result.tracks
        det_scores, d2t, t2d = detection_scores(tracks, truth)
        slow = truth["D1_um2_s"].to_numpy() < 0.1
        everyone = np.ones(len(truth), dtype=bool)
        nearest = nearest_other_px(truth["frame"].to_numpy(), truth["y_px"].to_numpy(), truth["x_px"].to_numpy())
        isolated = nearest > ISOLATION_PX
        loc_slow = localization_scores(tracks, truth, d2t, acq, photons, slow)
        loc_slow_isolated = localization_scores(tracks, truth, d2t, acq, photons, slow & isolated)
        loc_all = localization_scores(tracks, truth, d2t, acq, photons, everyone)
        links = link_scores(tracks, truth, d2t, t2d)
        slow_mask = truth["D1_um2_s"].to_numpy() < 0.1
        previous = {
            "detection": base_scores,
            "loc_slow": localization_scores(base, truth, base_d2t, acq, photons, slow_mask),
            "loc_all": localization_scores(base, truth, base_d2t, acq, photons, np.ones(len(truth), dtype=bool)),
            "links": link_scores(base, truth, base_d2t, base_t2d),
            "detect_localize_s": t_det_base,
        }
        out.append({
            "previous": previous, "n_split": int(det.attrs.get("n_split", 0)),
            "photons": photons, "shape": shape, "n_frames": n_frames, "particles": particles,
            "detection": det_scores, "loc_slow": loc_slow, "loc_slow_isolated": loc_slow_isolated, "loc_all": loc_all,
            "links": links,
            "n_tracks": result.n_tracks, "n_true_tracks": int(truth["track_id"].nunique()),
            "search_range_px": result.search_range_px, "memory_frames": result.memory_frames,
            "messages": result.messages + [str(w.message) for w in caught if "inplace" not in str(w.message)],
            "seconds": {"simulate": t_sim, "detect_localize": t_det, "link": t_link},
        })
        print(f"field {photons:.0f} photons: {json.dumps(out[-1]['detection'])} "
              f"{json.dumps(out[-1]['links'])}", flush=True)
    return out


# --------------------------------------------------------------------- speed
class NpyFrames:
    """Read-only (T, Y, X) view of a .npy file that reads one frame per index (no memmap)."""

    def __init__(self, path: str, max_frames: int | None = None):
        self.path = path
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            fmt = np.lib.format
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran or len(shape) != 3:
            raise ValueError("expected a C-ordered (T, Y, X) array")
        if max_frames is not None:
            shape = (min(int(max_frames), shape[0]), *shape[1:])
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), 3
        self.frame_bytes = int(np.prod(shape[1:])) * self.dtype.itemsize
        self._handle = open(path, "rb")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        index = int(index)
        if not 0 <= index < self.shape[0]:
            raise IndexError(index)
        self._handle.seek(self.offset + index * self.frame_bytes)
        data = np.fromfile(self._handle, dtype=self.dtype, count=self.frame_bytes // self.dtype.itemsize)
        return data.reshape(self.shape[1:])

    def __iter__(self):
        for index in range(self.shape[0]):
            yield self[index]


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB): VmHWM, which, unlike ``getrusage``'s
    ``ru_maxrss``, does not inherit the forking parent's peak across ``exec``."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(method: str, movie_path: str, out_path: str, search_range: float, memory: int, max_frames: int) -> None:
    """Run one method in this (fresh) process and write its timings and table."""
    import trackpy  # noqa: F401 - imported by both methods, so both baselines include it

    acq = Acquisition()
    frames = NpyFrames(movie_path, max_frames if max_frames > 0 else None)
    rss_after_imports = _current_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "ours":
        table = detect_and_localize(frames, acq)
        t1 = time.perf_counter()
        result = link(table, acq, search_range_px=search_range, memory_frames=memory)
        tracks = result.tracks
    else:
        import trackpy as tp

        tp.quiet()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            feats = tp.batch(frames, TRACKPY_DIAMETER, processes=1, **TRACKPY_VARIANTS[method])
            t1 = time.perf_counter()
            strategy = {"link_strategy": "recursive"} if method == "trackpy_no_numba" else {}
            tracks = tp.link(feats, search_range, memory=memory, **strategy)
        tracks = tracks.rename(columns={"x": "x_px", "y": "y_px", "particle": "track_id"})
        tracks = tracks.sort_values(["track_id", "frame"]).reset_index(drop=True)
    t2, c2 = time.perf_counter(), time.process_time()
    tracks[["frame", "y_px", "x_px", "track_id"]].to_pickle(out_path + ".pkl")
    with open(out_path, "w") as handle:
        json.dump({
            "detect_s": t1 - t0, "link_s": t2 - t1, "total_s": t2 - t0, "cpu_s": c2 - c0, "n_frames": len(frames),
            "peak_rss_mb": _peak_rss_mb(), "rss_after_imports_mb": rss_after_imports,
            "n_localizations": int(len(tracks)),
        }, handle)


#: The whole command timed on the speed movie (written as an ImageJ TIFF), with the linking
#: settings of the other rows; ``--out`` and the movie are appended.
TRACK_COMMAND = ["track", "--max-d", str(FIELD_MAX_D_UM2_S), "--memory-frames", "2", "--overwrite"]
#: Runs the CLI in a fresh interpreter and writes its peak resident memory (VmHWM) at exit.
_TRACK_LAUNCHER = """
import atexit, sys
rss_path, args = sys.argv[1], sys.argv[2:]
def _peak():
    with open('/proc/self/status') as handle:
        peak = [line.split()[1] for line in handle if line.startswith('VmHWM:')]
    with open(rss_path, 'w') as handle:
        handle.write(str(int(peak[0]) / 1024.0 if peak else float('nan')))
atexit.register(_peak)
sys.argv = ['spt-diffusion', *args]
from napari_spt_diffusion.cli import main
sys.exit(main(args))
"""


def run_track_command(movie_tif: str, out_dir: str) -> dict:
    """Time the whole ``spt-diffusion track`` command (interpreter start, imports, reading, detection,
    linking, patches, estimation, writing) on ``movie_tif``; returns its wall time, peak RSS (of the
    command's process; and, sampled every 0.1 s, of it and its spot worker processes together) and
    tracks table."""
    rss_path = out_dir.rstrip(os.sep) + "_peak_rss_mb.txt"
    argv = [*TRACK_COMMAND, "--out", out_dir + os.sep, movie_tif]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = run_with_tree_memory([sys.executable, "-c", _TRACK_LAUNCHER, rss_path, *argv])
    if done.returncode:
        raise RuntimeError(f"spt-diffusion track failed ({done.returncode}): {done.stderr[-2000:]}")
    wall = time.perf_counter() - t0
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(rss_path) as handle:
        peak = float(handle.read())
    stem = Path(movie_tif).stem
    tracks = pd.read_csv(os.path.join(out_dir, f"{stem}_tracks.csv"))
    tracks = tracks.sort_values(["track_id", "frame"]).reset_index(drop=True)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {"total_s": wall, "cpu_s": cpu, "peak_rss_mb": peak, "tree_peak_rss_mb": done.tree_peak_rss_mb,
            "tree_peak_pss_mb": done.tree_peak_pss_mb, "tracks": tracks,
            "command": "spt-diffusion " + " ".join([*TRACK_COMMAND, "--out", "OUT/", "speed.tif"])}


def run_speed(quick: bool) -> dict:
    n_frames = 60 if quick else 1000
    shape = (512, 512)
    acq = Acquisition()
    search_range = float(default_search_range_px(acq, FIELD_MAX_D_UM2_S))
    memory = 2
    with tempfile.TemporaryDirectory(prefix="bench_tracking_") as tmp:
        movie_path = os.path.join(tmp, "speed.npy")
        t0 = time.perf_counter()
        out = np.lib.format.open_memmap(movie_path, mode="w+", dtype=np.uint16, shape=(n_frames, *shape))
        sim = simulate_movie(shape, n_frames, acq, SPEED_SEED, model="aniso", particles=100.0, out=out)
        out.flush()
        truth = sim.truth.tracks.reset_index(drop=True)
        del out, sim
        t_sim = time.perf_counter() - t0
        print(f"speed movie {n_frames} frames simulated in {t_sim:.1f} s", flush=True)
        movie_tif = os.path.join(tmp, "speed.tif")
        write_movie(movie_tif, np.load(movie_path, mmap_mode="r"), acq)
        results = {}
        load_before = os.getloadavg()[0]
        track_dir = os.path.join(tmp, "track_out")
        track = run_track_command(movie_tif, track_dir)
        track.update({"n_frames": n_frames, "load_before": load_before, "load_after": os.getloadavg()[0]})
        det_scores, d2t, t2d = detection_scores(track["tracks"], truth)
        track["detection"] = det_scores
        track["links"] = link_scores(track.pop("tracks"), truth, d2t, t2d)
        print(f"speed track command: {json.dumps({k: v for k, v in track.items() if k != 'links'})}", flush=True)
        for method in ("ours", *TRACKPY_VARIANTS):
            out_path = os.path.join(tmp, f"{method}.json")
            load_before = os.getloadavg()[0]
            limit = 0 if quick else TRACKPY_FRAME_LIMITS.get(method, 0)
            subprocess.run(
                [sys.executable, __file__, "_worker", method, movie_path, out_path, repr(search_range), str(memory),
                 str(limit)],
                check=True,
            )
            with open(out_path) as handle:
                res = json.load(handle)
            res["load_before"] = load_before
            res["load_after"] = os.getloadavg()[0]
            tracks = pd.read_pickle(out_path + ".pkl")
            used_truth = truth[truth["frame"] < res["n_frames"]].reset_index(drop=True)
            det_scores, d2t, t2d = detection_scores(tracks, used_truth)
            res["detection"] = det_scores
            res["links"] = link_scores(tracks, used_truth, d2t, t2d)
            results[method] = res
            print(f"speed {method}: {json.dumps({k: v for k, v in res.items() if k not in ('links',)})}", flush=True)
    return {"n_frames": n_frames, "shape": shape, "search_range_px": search_range, "memory": memory,
            "simulate_s": t_sim, "methods": results, "particles": 100, "track": track,
            "numba": _numba_version()}


def _numba_version() -> str:
    try:
        import numba
    except ImportError:
        return "not installed"
    return str(numba.__version__)


# -------------------------------------------------------------------- report
def write_tracking_report(path: Path, field: list[dict] | None, speed: dict | None, quick: bool, command: str,
                          seconds: float) -> None:
    lines = report_header("Tracking benchmarks: protocols field and speed",
                          f"{PROTOCOLS} `field` (seed {FIELD_SEED}) and `speed` (seed {SPEED_SEED}); details in the "
                          "docstring of `benchmarks/bench_tracking.py`.", command)
    lines += [
        f"- trackpy {__import__('trackpy').__version__}, numba {_numba_version()} (trackpy uses it when present); "
        f"wall time {seconds:.0f} s{' (QUICK: reduced sizes, not the protocol)' if quick else ''}.",
        "",
    ]
    if field:
        first = field[0]
        lines += [
            "## field",
            "",
            f"{first['shape'][0]} x {first['shape'][1]} px, {first['n_frames']} frames, "
            f"{first['particles']:.0f} particles on average, D1 ~ U[0.05, 3] um^2/s, standard acquisition; linking "
            f"with max_D_um2_s = {FIELD_MAX_D_UM2_S} "
            f"(search range {first['search_range_px']:.2f} px), memory {first['memory_frames']} frames. "
            "Targets at 1,000 photons: recall and precision >= 0.95, RMSE <= 1.3 x CRLB (slow particles), link recall "
            ">= 0.95.",
            "",
            "| photons/frame | det. recall | det. precision | RMSE slow (nm) [95% CI] (n) | CRLB (nm) | RMSE/CRLB | "
            "RMSE all (nm) | link recall | link recall (both ends detected) | link precision | tracks (true) | "
            "detect+localize s | link s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in field:
            d, ls, la, lk = r["detection"], r["loc_slow"], r["loc_all"], r["links"]
            lines.append(
                f"| {r['photons']:.0f} | {fmt(d['recall'])} | {fmt(d['precision'])} | {fmt(ls['rmse_nm'], 1)} "
                f"[{fmt(ls['ci95_nm'][0], 1)}, {fmt(ls['ci95_nm'][1], 1)}] ({ls['n']}) | "
                f"{fmt(ls.get('crlb_nm', float('nan')), 1)} | "
                f"{fmt(ls.get('ratio', float('nan')), 2)} | {fmt(la['rmse_nm'], 1)} | {fmt(lk['recall'])} | "
                f"{fmt(lk['recall_detected'])} | "
                f"{fmt(lk['precision'])} | {r['n_tracks']} ({r['n_true_tracks']}) | "
                f"{r['seconds']['detect_localize']:.1f} | {r['seconds']['link']:.1f} |"
            )
        lines += [
            "",
            "Same movies, previous method (`detect_and_localize(..., overlaps=False)`: no second pass over wide "
            "spots), measured in the same run:",
            "",
            "| photons/frame | det. recall | det. precision | RMSE slow (nm) [95% CI] (n) | RMSE/CRLB | RMSE all (nm) "
            "| link recall | link recall (both ends detected) | link precision | detect+localize s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in field:
            p = r["previous"]
            d, ls, la, lk = p["detection"], p["loc_slow"], p["loc_all"], p["links"]
            lines.append(
                f"| {r['photons']:.0f} | {fmt(d['recall'])} | {fmt(d['precision'])} | {fmt(ls['rmse_nm'], 1)} "
                f"[{fmt(ls['ci95_nm'][0], 1)}, {fmt(ls['ci95_nm'][1], 1)}] ({ls['n']}) | "
                f"{fmt(ls.get('ratio', float('nan')), 2)} | "
                f"{fmt(la['rmse_nm'], 1)} | {fmt(lk['recall'])} | {fmt(lk['recall_detected'])} | "
                f"{fmt(lk['precision'])} | {p['detect_localize_s']:.1f} |"
            )
        lines += ["", "Further figures:", ""]
        for r in field:
            ls, la, li = r["loc_slow"], r["loc_all"], r["loc_slow_isolated"]
            lines.append(
                f"- {r['photons']:.0f} photons: slow particles with no other particle within {ISOLATION_PX:g} px: "
                f"RMSE {fmt(li['rmse_nm'], 1)} nm [{fmt(li['ci95_nm'][0], 1)}, {fmt(li['ci95_nm'][1], 1)}] (n = "
                f"{li['n']}), {fmt(li.get('ratio', float('nan')), 2)} x CRLB; "
                f"{r['detection']['n_true']} true positions, {r['detection']['n_detected']} "
                "localizations; reported precision (median, slow particles) "
                f"{fmt(ls.get('reported_median_nm', float('nan')), 1)} nm; "
                f"fraction fit_ok among matched: slow {fmt(ls['fit_ok'])}, all {fmt(la['fit_ok'])}; "
                f"{r['links']['n_true_links']} true links, {r['links']['n_reported_links']} reported; "
                f"{r['n_split']} spots split into two emitters by the second pass."
                + (f" Linker messages: {' | '.join(r['messages'])}" if r["messages"] else "")
            )
        lines.append("")
    if speed:
        n = speed["n_frames"]
        variant_text = ", ".join(
            f"`{name}`: `batch(frames, {TRACKPY_DIAMETER}, processes=1, "
            + ", ".join(f"{k}={v:g}" if isinstance(v, float | int) else f"{k}={v!r}" for k, v in kw.items())
            + ")` + `link" + ("(link_strategy='recursive')" if name == "trackpy_no_numba" else "") + "`"
            for name, kw in TRACKPY_VARIANTS.items()
        )
        lines += [
            "## speed",
            "",
            f"{speed['shape'][0]} x {speed['shape'][1]} px x {n} frames, {speed['particles']} particles per frame, "
            f"standard acquisition (simulated in {speed['simulate_s']:.0f} s). Each method in a fresh process, "
            "frames read one at a time from a .npy file; same linking settings for all (search range "
            f"{speed['search_range_px']:.2f} px = "
            f"3 sqrt(4 D dt) at D = {FIELD_MAX_D_UM2_S} um^2/s, memory {speed['memory']}). {variant_text}. "
            "Targets (issue 16): the whole `track` command >= 50 frames/s on the 2 cores, >= 6x trackpy's "
            "batch + link frames/s in the same run, peak RSS <= 1 GB.",
            "",
            "| method | frames | detect (+localize) s | link s | total s | frames/s | CPU s (frames per CPU s) | "
            "peak RSS MB (after imports) | det. recall | det. precision | link recall | load avg before/after |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        labels = {"ours": "ours: detect_and_localize + link"}
        for name, r in speed["methods"].items():
            lines.append(
                f"| {labels.get(name, name + ': batch + link')} | {r['n_frames']} | {r['detect_s']:.1f} | "
                f"{r['link_s']:.1f} | {r['total_s']:.1f} | {r['n_frames'] / r['total_s']:.1f} | "
                f"{r['cpu_s']:.1f} ({r['n_frames'] / r['cpu_s']:.1f}) | "
                f"{r['peak_rss_mb']:.0f} ({r['rss_after_imports_mb']:.0f}) | {fmt(r['detection']['recall'])} | "
                f"{fmt(r['detection']['precision'])} | {fmt(r['links']['recall'])} | {r['load_before']:.1f} / "
                f"{r['load_after']:.1f} |"
            )
        track = speed.get("track")
        if track:
            lines.append(
                f"| ours: whole `{track['command']}` (start, imports, read, detect, link, patches, estimation, "
                f"write) | {track['n_frames']} | | | {track['total_s']:.1f} | "
                f"{track['n_frames'] / track['total_s']:.1f} | {track['cpu_s']:.1f} "
                f"({track['n_frames'] / track['cpu_s']:.1f}) | {track['peak_rss_mb']:.0f}; with its spot worker "
                f"processes {track['tree_peak_rss_mb']:.0f} (PSS {track['tree_peak_pss_mb']:.0f}) | "
                f"{fmt(track['detection']['recall'])} | {fmt(track['detection']['precision'])} | "
                f"{fmt(track['links']['recall'])} | {track['load_before']:.1f} / {track['load_after']:.1f} |"
            )
        fps = {name: r["n_frames"] / r["total_s"] for name, r in speed["methods"].items()}
        det_fps = {name: r["n_frames"] / r["detect_s"] for name, r in speed["methods"].items()}
        cpu_fps = {name: r["n_frames"] / r["cpu_s"] for name, r in speed["methods"].items()}
        lines += [
            "",
            "Speed-up in frames/s, ours / trackpy: "
            + "; ".join(
                f"vs `{name}`: detection stage {det_fps['ours'] / det_fps[name]:.1f}x, whole detect+localize+link "
                f"{fps['ours'] / fps[name]:.1f}x (per CPU second {cpu_fps['ours'] / cpu_fps[name]:.1f}x)"
                for name in TRACKPY_VARIANTS
            )
            + (f"; the whole `track` command vs `trackpy` batch + link: "
               f"{track['n_frames'] / track['total_s'] / fps['trackpy']:.1f}x (per CPU second "
               f"{track['n_frames'] / track['cpu_s'] / cpu_fps['trackpy']:.1f}x)" if track else "")
            + ". The machine's 2 cores were shared with other jobs during the run (load averages above), which "
            "slows every method; they ran one after the other on the same movie. Linking is trackpy's in both "
            "pipelines, so link times differ only through the number of localizations.",
            "",
        ]
    write_report(path, lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        method, movie_path, out_path, search_range, memory, limit = argv[1:7]
        worker(method, movie_path, out_path, float(search_range), int(memory), int(limit))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", nargs="?", default="all", choices=("field", "speed", "all"))
    parser.add_argument("--quick", action="store_true", help="small versions, to check the script")
    parser.add_argument("--out", default=None, help="report (default: benchmarks/reports/tracking[_quick].md)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads (set before numpy is imported; the speed workers inherit it)")
    parser.add_argument("--motion-linking", choices=("on", "off"), default=None,
                        help="relink with each particle's own diffusivity (EncounterRules.motion_linking; default: on)")
    parser.add_argument("--split-encounters", choices=("on", "off"), default=None,
                        help="field: cut tracks at ambiguous encounters (link(split_encounters=...); default: link's)")
    parser.add_argument("--encounter-llr", type=float, default=None, help="field: swap test threshold in nats")
    args = parser.parse_args(argv)
    if args.split_encounters is not None:
        LINK_OPTIONS["split_encounters"] = args.split_encounters == "on"
    rules = {}
    if args.motion_linking is not None:
        rules["motion_linking"] = args.motion_linking == "on"
    if args.encounter_llr is not None:
        rules["llr_threshold"] = args.encounter_llr
    if rules:
        LINK_OPTIONS["encounter_rules"] = EncounterRules(**rules)
    command = command_line("bench_tracking.py", argv)
    start = time.perf_counter()
    field = run_field(args.quick) if args.protocol in ("field", "all") else None
    speed = run_speed(args.quick) if args.protocol in ("speed", "all") else None
    out = Path(args.out) if args.out else report_path("tracking", args.quick)
    write_tracking_report(out, field, speed, args.quick, command, time.perf_counter() - start)
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
