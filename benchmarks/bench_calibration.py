"""Calibration benchmark (protocol "calibration grid", v1; issue 14 item 1, docs/protocols.md).

Measures how well :func:`napari_spt_diffusion.calibration.calibrate_movie` recovers the
acquisition from the frames alone, on the cells of the robustness grid (v2) of
docs/protocols.md, against issue 14's targets: PSF width within 5 %, gain within 10 %, signal
photons within 15 %, background within 10 %.

Cells (seed = 5001, or ``--seed-base``, + the cell's index in this full list, whatever ``--cells`` or ``--quick``
selects; 128 x 128 px, 100 frames, 100 nm pixels, 10 ms frames, continuous exposure):

* ``gauss-s{sigma}-n{N}`` (indices 0-14): our simulator,
  ``simulate_movie((128, 128), 100, Acquisition(psf_sigma_nm=100 sigma, signal_photons=N), seed,
  model="aniso", particles=30)``; erf-integrated Gaussian PSF, the standard acquisition
  otherwise (background 10 photons/px, read noise 1.5 e-, gain 1 ADU/e-, offset 100 ADU);
  sigma 0.7, 1.0, 1.5, 2.0, 2.5 px x N 250, 1,000, 4,000 photons.
* ``airy-s{sigma}-n{N}`` (indices 15-29): the independent renderer
  ``napari_spt_diffusion.validation.foreign_renderer``: scalar Airy PSF with the optics chosen so
  that the Gaussian-equivalent width 0.21 lambda / NA equals the cell's sigma (wavelength 600 nm,
  NA = 0.21 * 600 / (100 sigma); where that NA would exceed 1.49, NA 1.49 and the wavelength
  100 sigma * 1.49 / 0.21 instead: sigma 0.7 px -> 496.7 nm); ``ForeignCamera(kind="plain",
  gain 1, offset 100, read noise 1.5 e-)``; ``ForeignScene(30 particles, photons N, background
  10)``; ``ForeignMotion("free")`` (isotropic, D log-uniform in [0.05, 3] um^2/s); 10 sub-steps.
  The true signal photons are the renderer's photons over the infinite plane (the tail window
  of 97 x 97 px holds 97.8-99.4 % of them; the report gives the share per cell).
* Camera cells on sigma 1.0 px / 1,000 photons (indices 30-36): ``cam-gain0.5``, ``cam-gain2``,
  ``cam-gain20`` (offset 100), ``cam-offset0``, ``cam-offset100``, ``cam-offset2000`` (gain 1):
  our simulator as the Gaussian cells (``cam-offset100`` repeats ``gauss-s1.0-n1000`` with
  another seed); ``cam-emccd``: the foreign renderer's EMCCD camera (gamma multiplication of
  mean 100, excess-noise factor sqrt 2; conversion gain 0.1 ADU per multiplied electron, so
  10 ADU per photo-electron in all; read noise 150 multiplied e- = 1.5 photo-e-; offset 100) on
  the sigma 1.0 px Airy optics. EMCCD off is the ``airy-s1.0-n1000`` cell (same renderer, plain
  camera). The calibration recognises an EMCCD by the excess noise of its background
  (``calibration_camera.excess_noise``: ``k3 k5 / k4^2`` near 1.25, not 1) where the background
  is low, as here (10 photons/px), and then measures gain, offset and background from ``k3`` and
  ``k4``; the camera verdict of every cell is reported (``emccd`` expected for this one,
  ``poisson`` for the others).

Each movie is calibrated with ``calibrate_movie(movie, Acquisition(pixel_size_nm=100,
frame_interval_s=0.01, read_noise_e=1.5))``: the tool is told the pixel size, the frame interval
and the read noise, nothing else (``given`` empty; every other Acquisition field keeps its default
and is measured). Reported per cell: measured value +- the tool's standard uncertainty against the
truth for ``psf_sigma_nm``, ``gain_adu_per_e``, ``background_photons``, ``signal_photons``
(signed relative error) and ``offset_adu`` (absolute error in ADU and in photo-electrons, no
target); the PSF-shape verdict against the true shape; the share of uint16-clipped pixels; the
tool's notes, and any warning or exception (caught per cell). A value the tool did not report
counts as not meeting its target. Coverage: the share of reported values whose error is within
2 of their own standard uncertainties.

Command::

    .venv/bin/python benchmarks/bench_calibration.py [--quick] [--cells NAME,PATTERN*,...] [--out PATH]

Noise floor (section of the report; skipped with ``--quick`` or ``--cells``): background-only movies
(no particles, 128 x 128 x 100 frames, read noise 1.5 e-, offset 100 ADU) at 10 photons/px and 0.5, 1 and
3 ADU per photo-electron, and at 1 ADU/e- with 2 and 4.5 photons/px (near and at 2 r^2, where the two
solutions for the gain meet), 8 seeds each (6001 + 100 x condition index + seed index) from each renderer
(our simulator with ``particles=0``, and the foreign renderer's plain camera), every pixel counted as
background: the camera measured from their cumulants (``calibration_camera.tile_cumulants``,
``without_rounding`` and ``poisson_camera``, the camera measurement of ``calibrate_movie``, which on a
real movie also masks the neighbourhoods of spots and noise peaks) with the quantization step removed
(``adu_step``) and without. It gives the bias the estimator itself has and the least spread a movie of
this size allows.

``--quick``: 3 cells (``gauss-s1.0-n1000``, ``airy-s1.5-n1000``, ``cam-emccd``) of 40 frames
(report ``calibration_quick.md``); ``--cells`` takes names or ``fnmatch`` patterns (with
``--quick``, the selected cells at 40 frames).
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _common import command_line, load_average, report_header, report_path, write_json, write_report
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.calibration import calibrate_movie
from napari_spt_diffusion.calibration_camera import (
    adu_step,
    poisson_camera,
    tile_cumulants,
    without_rounding,
)
from napari_spt_diffusion.calibration_spots import MULTIPLES_RATIO
from napari_spt_diffusion.simulation import simulate_movie
from napari_spt_diffusion.validation.foreign_renderer import (
    AiryPSF,
    ForeignCamera,
    ForeignMotion,
    ForeignOptics,
    ForeignScene,
    render_foreign_movie,
)

PROTOCOL = "calibration grid"
VERSION = 1
SEED_BASE = 5001
SHAPE_YX = (128, 128)
N_FRAMES, QUICK_FRAMES = 100, 40
N_PARTICLES = 30
PIXEL_NM = 100.0
BACKGROUND = 10.0
READ_NOISE = 1.5
SIGMAS_PX = (0.7, 1.0, 1.5, 2.0, 2.5)
PHOTONS = (250.0, 1000.0, 4000.0)
WAVELENGTH_NM, NA_MAX = 600.0, 1.49
AIRY_FACTOR = 0.21
QUICK_CELLS = ("gauss-s1.0-n1000", "airy-s1.5-n1000", "cam-emccd")
#: issue 14's targets: field -> largest |relative error|.
TARGETS = {"psf_sigma_nm": 0.05, "gain_adu_per_e": 0.10, "signal_photons": 0.15, "background_photons": 0.10}
FIELDS = ("psf_sigma_nm", "gain_adu_per_e", "offset_adu", "background_photons", "signal_photons")
LABELS = {"psf_sigma_nm": "PSF sigma (nm)", "gain_adu_per_e": "gain (ADU/e-)", "offset_adu": "offset (ADU)",
          "background_photons": "background (photons/px)", "signal_photons": "signal (photons)"}
TARGET_LABELS = {"psf_sigma_nm": "PSF width within 5 %", "gain_adu_per_e": "gain within 10 %",
                 "signal_photons": "signal photons within 15 %", "background_photons": "background within 10 %"}
#: decimals of each field in the tables (the gain's follow its size).
DIGITS = {"psf_sigma_nm": 1, "offset_adu": 1, "background_photons": 2, "signal_photons": 0}
GROUPS = ("gaussian grid", "airy grid", "camera (Gaussian)", "camera EMCCD")
#: (gain ADU/e-, background photons/px) of the noise-floor movies.
NOISE_FLOOR_CONDITIONS = ((0.5, 10.0), (1.0, 10.0), (3.0, 10.0), (1.0, 2.0), (1.0, 4.5))
NOISE_FLOOR_SEEDS = 8
NOISE_FLOOR_SEED_BASE = 6001
EMCCD = {"em_gain": 100.0, "conversion_adu_per_e": 0.1, "read_noise_multiplied_e": 150.0, "offset_adu": 100.0}


@dataclass(frozen=True)
class Cell:
    """One movie of the grid."""

    name: str
    index: int
    group: str
    source: str  # "simulator" or "foreign"
    shape: str  # "gaussian" or "airy"
    sigma_px: float
    photons: float
    gain: float = 1.0
    offset: float = 100.0
    camera: str = "plain"  # foreign: "plain" or "emccd"

    @property
    def seed(self) -> int:
        return SEED_BASE + self.index


def all_cells() -> list[Cell]:
    """The 37 cells in their fixed order (the order gives the seeds)."""
    cells: list[Cell] = []
    for shape, source, group in (("gaussian", "simulator", GROUPS[0]), ("airy", "foreign", GROUPS[1])):
        prefix = "gauss" if shape == "gaussian" else "airy"
        for s in SIGMAS_PX:
            for n in PHOTONS:
                cells.append(Cell(f"{prefix}-s{s:.1f}-n{n:.0f}", len(cells), group, source, shape, s, n))
    for gain in (0.5, 2.0, 20.0):
        cells.append(Cell(f"cam-gain{gain:g}", len(cells), GROUPS[2], "simulator", "gaussian", 1.0, 1000.0, gain=gain))
    for offset in (0.0, 100.0, 2000.0):
        cells.append(Cell(f"cam-offset{offset:g}", len(cells), GROUPS[2], "simulator", "gaussian", 1.0, 1000.0,
                          offset=offset))
    cells.append(Cell("cam-emccd", len(cells), GROUPS[3], "foreign", "airy", 1.0, 1000.0,
                      gain=EMCCD["em_gain"] * EMCCD["conversion_adu_per_e"], offset=EMCCD["offset_adu"],
                      camera="emccd"))
    return cells


def airy_optics(sigma_px: float) -> ForeignOptics:
    """Optics whose 0.21 lambda / NA equals ``sigma_px`` (600 nm unless NA would exceed 1.49)."""
    sigma_nm = sigma_px * PIXEL_NM
    na = AIRY_FACTOR * WAVELENGTH_NM / sigma_nm
    if na <= NA_MAX:
        return ForeignOptics(na=na, wavelength_nm=WAVELENGTH_NM, pixel_size_nm=PIXEL_NM)
    return ForeignOptics(na=NA_MAX, wavelength_nm=sigma_nm * NA_MAX / AIRY_FACTOR, pixel_size_nm=PIXEL_NM)


def render(cell: Cell, n_frames: int, psfs: dict[float, AiryPSF]) -> tuple[np.ndarray, dict[str, Any]]:
    """The cell's uint16 movie and its truth (true acquisition values and settings)."""
    truth: dict[str, Any] = {"psf_sigma_nm": cell.sigma_px * PIXEL_NM, "gain_adu_per_e": cell.gain,
                             "offset_adu": cell.offset, "background_photons": BACKGROUND,
                             "signal_photons": cell.photons, "psf_shape": cell.shape}
    if cell.source == "simulator":
        acq = Acquisition(pixel_size_nm=PIXEL_NM, frame_interval_s=0.01, psf_sigma_nm=cell.sigma_px * PIXEL_NM,
                          signal_photons=cell.photons, background_photons=BACKGROUND, read_noise_e=READ_NOISE,
                          gain_adu_per_e=cell.gain, offset_adu=cell.offset)
        sim = simulate_movie(SHAPE_YX, n_frames, acq, cell.seed, model="aniso", particles=float(N_PARTICLES))
        truth["settings"] = {"renderer": "napari_spt_diffusion.simulation.simulate_movie", "model": "aniso",
                             "particles": N_PARTICLES, "acquisition": asdict(sim.acquisition)}
        return np.asarray(sim.movie), truth
    optics = airy_optics(cell.sigma_px)
    if cell.sigma_px not in psfs:
        psfs[cell.sigma_px] = AiryPSF(optics)
    if cell.camera == "emccd":
        camera = ForeignCamera(kind="emccd", gain_adu_per_e=EMCCD["conversion_adu_per_e"],
                               offset_adu=EMCCD["offset_adu"], read_noise_e=EMCCD["read_noise_multiplied_e"],
                               em_gain=EMCCD["em_gain"])
    else:
        camera = ForeignCamera(kind="plain", gain_adu_per_e=cell.gain, offset_adu=cell.offset,
                               read_noise_e=READ_NOISE)
    scene = ForeignScene(shape_yx=SHAPE_YX, n_frames=n_frames, n_particles=N_PARTICLES, frame_interval_s=0.01,
                         photons=cell.photons, background=BACKGROUND)
    mv = render_foreign_movie(scene, optics, camera, ForeignMotion(kind="free"), cell.seed, psf=psfs[cell.sigma_px])
    a = mv.acquisition
    truth["psf_sigma_nm"] = float(a["psf_sigma_equivalent_nm"])
    truth["enclosed_fraction"] = float(a["enclosed_fraction"])
    truth["signal_photons_in_window"] = float(a["signal_photons_in_window"])
    truth["settings"] = {"renderer": "napari_spt_diffusion.validation.foreign_renderer.render_foreign_movie",
                         "na": optics.na, "wavelength_nm": optics.wavelength_nm, "camera": asdict(camera),
                         "scene": asdict(scene), "motion": "free", "true_acquisition": a}
    return np.asarray(mv.movie), truth


def score(measured: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    """Errors of each field against the truth, and whether each target is met."""
    out: dict[str, Any] = {}
    for f in FIELDS:
        m = measured.get(f)
        t = float(truth[f])
        row: dict[str, Any] = {"true": t, "measured": None, "uncertainty": None, "error": None,
                               "rel_error": None, "within_2u": None, "met": None}
        if m is not None and m["value"] is not None and math.isfinite(m["value"]):
            v, u = float(m["value"]), m["uncertainty"]
            row.update(measured=v, uncertainty=u, error=v - t)
            if f != "offset_adu":
                row["rel_error"] = (v - t) / t
            else:
                row["error_e"] = (v - t) / float(truth["gain_adu_per_e"])
            if u is not None and math.isfinite(u):
                row["within_2u"] = bool(abs(v - t) <= 2.0 * u)
        if f in TARGETS:
            row["met"] = bool(row["rel_error"] is not None and abs(row["rel_error"]) <= TARGETS[f])
        out[f] = row
    return out


def run_cell(cell: Cell, n_frames: int, psfs: dict[float, AiryPSF]) -> dict[str, Any]:
    """Render and calibrate one cell; every failure is caught and recorded."""
    res: dict[str, Any] = {"cell": cell.name, "index": cell.index, "seed": cell.seed, "group": cell.group,
                           "source": cell.source, "shape": cell.shape, "sigma_px": cell.sigma_px,
                           "photons": cell.photons, "n_frames": n_frames, "error": None, "warnings": []}
    t0 = time.perf_counter()
    try:
        movie, truth = render(cell, n_frames, psfs)
    except Exception as exc:  # a renderer failure is recorded, the grid goes on
        res.update(error=f"render: {type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
                   render_s=time.perf_counter() - t0)
        return res
    res["render_s"] = time.perf_counter() - t0
    res["truth"] = truth
    res["clipped_low"] = float(np.mean(movie == 0))
    res["clipped_high"] = float(np.mean(movie == 65535))
    told = Acquisition(pixel_size_nm=PIXEL_NM, frame_interval_s=0.01, read_noise_e=READ_NOISE)
    t1 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cal = calibrate_movie(movie, told)
        except Exception as exc:  # a calibration failure is a finding of the benchmark
            res.update(error=f"calibrate_movie: {type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            cal = None
    res["calibrate_s"] = time.perf_counter() - t1
    seen: dict[str, int] = {}
    for w in caught:
        key = f"{w.category.__name__}: {str(w.message).splitlines()[0]} ({Path(w.filename).name}:{w.lineno})"
        seen[key] = seen.get(key, 0) + 1
    res["warnings"] = [f"{k} x{n}" for k, n in seen.items()]
    if cal is None:
        res["scores"] = score({}, truth)
        res["shape_measured"], res["shape_correct"] = None, False
        return res
    res["calibration"] = cal.to_dict()
    res["scores"] = score(res["calibration"], truth)
    res["shape_measured"] = cal.psf_shape
    res["shape_evidence"] = cal.psf_shape_evidence
    res["shape_correct"] = cal.psf_shape == cell.shape
    res["n_spots"], res["n_frames_used"], res["notes"] = cal.n_spots, cal.n_frames, list(cal.notes)
    return res


# ------------------------------------------------------------------------------ report
def _num(x: float | None, digits: int) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _digits(value: float) -> int:
    a = abs(value)
    return 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3


def _value_text(row: dict[str, Any], field: str) -> str:
    if row["measured"] is None:
        return "not measured" + (" (**no**)" if field in TARGETS else "")
    d = DIGITS.get(field, _digits(row["true"]))
    text = f"{_num(row['measured'], d)} +- {_num(row['uncertainty'], d)}"
    if field == "offset_adu":
        return f"{text} ({row['error']:+.{max(d, 1)}f} ADU)"
    met = "" if row["met"] is None else (", yes" if row["met"] else ", **no**")
    return f"{text} ({100 * row['rel_error']:+.1f} %{met})"


def _share(k: int, n: int) -> str:
    return "-" if n == 0 else f"{k}/{n} ({100 * k / n:.0f} %)"


def summary_lines(results: list[dict[str, Any]]) -> list[str]:
    groups = [g for g in GROUPS if any(r["group"] == g for r in results)]
    head = "| target | " + " | ".join(f"{g} (n = {sum(r['group'] == g for r in results)})" for g in groups)
    lines = [head + f" | all (n = {len(results)}) |", "|---" * (len(groups) + 2) + "|"]
    for f, label in TARGET_LABELS.items():
        cells = []
        for sel in [*([r for r in results if r["group"] == g] for g in groups), results]:
            met = sum(bool(r.get("scores", {}).get(f, {}).get("met")) for r in sel)
            cells.append(_share(met, len(sel)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for sel in [*([r for r in results if r["group"] == g] for g in groups), results]:
        cells.append(_share(sum(bool(r.get("shape_correct")) for r in sel), len(sel)))
    lines.append("| PSF shape verdict correct | " + " | ".join(cells) + " |")
    cells = []
    for sel in [*([r for r in results if r["group"] == g] for g in groups), results]:
        cells.append(_share(sum(all(r.get("scores", {}).get(f, {}).get("met") for f in TARGETS) for r in sel),
                            len(sel)))
    lines.append("| all four targets | " + " | ".join(cells) + " |")
    return lines


def coverage_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| field | reported | error within 2 of its standard uncertainties | median abs. error / uncertainty |",
             "|---|---|---|---|"]
    for f in FIELDS:
        rows = [r["scores"][f] for r in results if "scores" in r and r["scores"][f]["within_2u"] is not None]
        ratios = [abs(x["error"]) / x["uncertainty"] for x in rows if x["uncertainty"]]
        n_rep = sum(1 for r in results if "scores" in r and r["scores"][f]["measured"] is not None)
        lines.append(f"| {LABELS[f]} | {n_rep}/{len(results)} | {_share(sum(x['within_2u'] for x in rows), len(rows))}"
                     f" | {_num(float(np.median(ratios)) if ratios else None, 1)} |")
    return lines


def worst_lines(results: list[dict[str, Any]]) -> list[str]:
    """Largest relative error of each target field, with its cell, over the whole grid and per group."""
    lines = ["| field | " + " | ".join(GROUPS) + " |", "|---" * (len(GROUPS) + 1) + "|"]
    for f in TARGETS:
        cells = []
        for g in GROUPS:
            rows = [(abs(r["scores"][f]["rel_error"]), r["scores"][f]["rel_error"], r["cell"]) for r in results
                    if r["group"] == g and "scores" in r and r["scores"][f]["rel_error"] is not None]
            cells.append(f"{100 * max(rows)[1]:+.1f} % ({max(rows)[2]})" if rows else "-")
        lines.append(f"| {TARGET_LABELS[f].split(' within')[0]} | " + " | ".join(cells) + " |")
    return lines


def cell_table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| cell | seed | " + " | ".join(LABELS[f] for f in FIELDS)
             + " | shape (evidence G/A) | spots | bright / all spots' photons | background share | s |",
             "|---" * (len(FIELDS) + 7) + "|"]
    for r in results:
        if "scores" not in r:
            lines.append(f"| {r['cell']} | {r['seed']} | " + " | ".join("n/a" for _ in FIELDS)
                         + f" | n/a | n/a | n/a | n/a | {r.get('render_s', 0):.0f} |")
            continue
        sc = r["scores"]
        vals = [_value_text(sc[f], f) for f in FIELDS]
        shape = "n/a" if r.get("shape_measured") is None else (
            f"{r['shape_measured']} ({_num(r.get('shape_evidence'), 2)})" + ("" if r["shape_correct"] else " **no**"))
        secs = r.get("render_s", 0) + r.get("calibrate_s", 0)
        share = (r.get("calibration") or {}).get("background_share")
        ratio = _num((r.get("calibration") or {}).get("bright_half_ratio"), 2)
        lines.append(f"| {r['cell']} | {r['seed']} | " + " | ".join(vals) + f" | {shape} | {r.get('n_spots', 'n/a')} | "
                     + f"{ratio} | " + ("n/a" if share is None else f"{100 * share:.0f} %") + f" | {secs:.0f} |")
    return lines


def truth_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| cell | true PSF sigma (nm) | optics | true gain / offset | true signal (in window) | clipped px |",
             "|---|---|---|---|---|---|"]
    for r in results:
        t = r.get("truth")
        if t is None:
            continue
        st = t["settings"]
        if "na" in st:
            optics = f"Airy NA {st['na']:.3f}, {st['wavelength_nm']:.1f} nm"
            signal = (f"{t['signal_photons']:.0f} ({t['signal_photons_in_window']:.0f}, "
                      f"{100 * t['enclosed_fraction']:.2f} %)")
        else:
            optics = "Gaussian (erf)"
            signal = f"{t['signal_photons']:.0f}"
        clip = f"{100 * r['clipped_low']:.3f} % at 0" + (f", {100 * r['clipped_high']:.3f} % at 65535"
                                                           if r["clipped_high"] else "")
        lines.append(f"| {r['cell']} | {t['psf_sigma_nm']:.1f} | {optics} | {t['gain_adu_per_e']:g} / "
                     f"{t['offset_adu']:g} | {signal} | {clip} |")
    return lines


def notes_lines(results: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for r in results:
        items = []
        if r.get("error"):
            items.append(f"**exception** {r['error']}")
        items += [f"note: {n}" for n in r.get("notes", [])]
        items += [f"warning: {w}" for w in r.get("warnings", [])]
        if items:
            lines.append(f"- `{r['cell']}`: " + "; ".join(items))
    return lines or ["- none: no cell raised, warned or left a note."]


def findings(results: list[dict[str, Any]]) -> list[str]:
    """Sentences computed from the results (what a reader should notice)."""
    out: list[str] = []
    emccd = [r for r in results if r["group"] == GROUPS[3] and "scores" in r]
    for r in emccd:
        sc = r["scores"]
        gain = sc["gain_adu_per_e"]
        gtxt = ("gain not reported" if gain["measured"] is None
                else f"gain {gain['measured']:.3g} ADU/e- against {gain['true']:g}")
        cal = r.get("calibration") or {}
        stat = cal.get("excess_noise_statistic")
        qtxt = ("not measured" if not stat or stat[0] is None
                else f"k3 k5 / k4^2 = {stat[0]:.2f} (95 % interval {_num(stat[1], 2)}-{_num(stat[2], 2)})")
        out.append(f"EMCCD (`{r['cell']}`): camera verdict '{cal.get('camera', '?')}', {qtxt}; {gtxt}; signal "
                   f"{_value_text(sc['signal_photons'], 'signal_photons')}, background "
                   f"{_value_text(sc['background_photons'], 'background_photons')}.")
    verdicts = [(r["cell"], (r.get("calibration") or {}).get("camera")) for r in results if "scores" in r]
    wrong = [f"{c} ({v})" for c, v in verdicts if v != ("emccd" if c == "cam-emccd" else "poisson")]
    out.append(f"Camera verdict (emccd for `cam-emccd`, poisson for the others): right in "
               f"{len(verdicts) - len(wrong)} of {len(verdicts)} cells" + (f"; wrong: {', '.join(wrong)}" if wrong
                                                                           else "") + ".")
    airy = [r for r in results if r["group"] == GROUPS[1] and "scores" in r]
    if airy:
        ratios = {r["cell"]: r["scores"]["signal_photons"]["measured"] / r["truth"]["signal_photons"] for r in airy
                  if r["scores"]["signal_photons"]["measured"] is not None}
        bright = [v for c, v in ratios.items() if c.endswith("-n4000")]
        if ratios:
            vals = list(ratios.values())
            out.append(f"Airy signal: measured / true (infinite plane) photons median {np.median(vals):.3f}"
                       f", range {min(ratios.values()):.3f}-{max(ratios.values()):.3f} over {len(ratios)} cells"
                       + (f"; at 4,000 photons median {np.median(bright):.3f}" if bright else "")
                       + " (the Gaussian fits' photons times the Airy profile's flux ratio where the shape is "
                       "called Airy: a Gaussian fit does not collect the rings and tails).")
    pairs = [(r["scores"]["gain_adu_per_e"]["rel_error"], r["scores"]["background_photons"]["rel_error"])
             for r in results if "scores" in r and r["scores"]["gain_adu_per_e"]["rel_error"] is not None
             and r["scores"]["background_photons"]["rel_error"] is not None]
    if len(pairs) >= 5:
        g_err, b_err = np.array(pairs).T
        n_gain = int(np.sum(np.abs(g_err) <= TARGETS["gain_adu_per_e"]))
        out.append(f"Gain and background errors are tied (both come from the same background cumulants, "
                   f"b = k2 / g^2 - r^2: a gain measured low gives a background measured high): correlation "
                   f"{np.corrcoef(g_err, b_err)[0, 1]:+.2f} over {len(pairs)} cells; "
                   f"{int(np.sum(np.abs(b_err) > TARGETS['background_photons']))} of these backgrounds miss 10 % "
                   f"while {n_gain}/{len(pairs)} gains meet their 10 %.")
    ratios = [(r["calibration"]["bright_half_ratio"], r["cell"]) for r in results
              if (r.get("calibration") or {}).get("bright_half_ratio") is not None]
    if ratios:
        below = [v for v, _ in ratios if v <= MULTIPLES_RATIO]
        above = [f"{c} ({v:.2f})" for v, c in ratios if v > MULTIPLES_RATIO]
        out.append("Brighter half / all isolated single spots' median photons: "
                   + (f"{min(below):.2f}-{max(below):.2f} in {len(below)} cells" if below else "no cell")
                   + f" at or under {MULTIPLES_RATIO:g} (signal from the brighter half); "
                   + (f"above it in {', '.join(above)} (signal from all isolated spots)" if above else "none above it")
                   + ".")
    wrong = [r["cell"] for r in results if r.get("shape_measured") is not None and not r["shape_correct"]]
    if wrong:
        ev = [r["shape_evidence"] for r in results if r["cell"] in wrong and r.get("shape_evidence") is not None]
        out.append(f"PSF shape wrong on {len(wrong)} cells ({', '.join(wrong)}); their evidence ratios lie in "
                   f"{min(ev):.2f}-{max(ev):.2f} (a verdict of 'unknown', given when neither profile fits "
                   "1.5 x better, counts as wrong).")
    for g in GROUPS[:3]:
        sel = [r for r in results if r["group"] == g and "scores" in r]
        for f in ("psf_sigma_nm", "signal_photons"):
            errs = [r["scores"][f]["rel_error"] for r in sel if r["scores"][f]["rel_error"] is not None]
            if len(errs) >= 3:
                out.append(f"{g}, {LABELS[f]}: median signed error {100 * np.median(errs):+.1f} %, "
                           f"range {100 * min(errs):+.1f} to {100 * max(errs):+.1f} %.")
    return [f"- {s}" for s in out]


def build_report(results: list[dict[str, Any]], args: argparse.Namespace, command: str, n_frames: int,
                 total_s: float, floor: list[dict[str, Any]]) -> list[str]:
    seeds = ", ".join(str(r["seed"]) for r in results)
    size = f"{SHAPE_YX[0]} x {SHAPE_YX[1]} px, {n_frames} frames, {N_PARTICLES} particles per movie"
    protocol = (f"{PROTOCOL}, version {VERSION} (cells of the robustness grid (v2) of docs/protocols.md; issue 14 "
                f"targets); {len(results)} cells, seeds {seeds} ({SEED_BASE} + cell index); {size}"
                + ("; QUICK smoke run" if args.quick else ""))
    head = report_header("Calibration from the movie: measured against true acquisition", protocol, command)
    lines = [*head,
             f"- Total run time {total_s:.0f} s (rendering and calibration, one cell after the other); load average "
             f"at the end {load_average()} (1, 5, 15 min).",
              "- Tool told: `Acquisition(pixel_size_nm=100, frame_interval_s=0.01, read_noise_e=1.5)`, `given` empty; "
              "PSF width, gain, offset, background and signal are measured. Cell definitions, renderers and "
              "scores: docstring of `benchmarks/bench_calibration.py`.",
              "- Targets (issue 14): PSF width within 5 %, gain within 10 %, signal photons within 15 %, background "
              "within 10 % (|measured - true| / true). A value the tool did not report counts as not met. The offset "
              "has no target; its error is given in ADU.",
              "- True signal photons: our simulator's expected photons per particle per frame; for the Airy cells "
              "the renderer's photons over the infinite plane (the share inside its 97 x 97 px window is in the "
              "truth table).",
              "", "## Summary: share of cells meeting each target", "", *summary_lines(results),
              "", "Largest error (signed, with its cell) per group:", "", *worst_lines(results),
              "", "What stands out (computed from the results):", "", *findings(results),
              "", "Reading the figures:", "",
              "- Motion differs between the renderers: the Gaussian cells use our `aniso` model (D1 uniform in "
              "[0.05, 3] um^2/s, D2/D1 below 1: most particles fast), the Airy cells free diffusion with D "
              "log-uniform in [0.05, 3] um^2/s (most particles slow). The PSF width is measured on the most static "
              "spots after a blur correction, so what blur it leaves shows more on the Gaussian cells.",
              "- The uncertainties are the tool's own (bootstrap, plus for gain, offset and background the spread "
              "over an assumed read noise of 0-3 e-); they do not include biases, which the coverage table shows.",
              "- `cam-offset0`: the simulator clips at 0 ADU (share of clipped pixels in the truth table).",
              "", "## Noise floor: background-only movies", "",
              f"Mean +- SD over {NOISE_FLOOR_SEEDS} seeds of the signed relative error; every pixel of the "
              f"{SHAPE_YX[0]} x {SHAPE_YX[1]} x {N_FRAMES} movie counted as background (`calibrate_movie` itself also "
              "masks around noise peaks, and a grid cell around its spots), so the spread is the least a movie of "
              "this size can expect. Movies and method: docstring.", "",
              *noise_floor_lines(floor),
              "", "## Per cell", "",
              "Measured +- the tool's standard uncertainty (signed relative error, target met?). Offset: absolute "
              "error in ADU. Shape: the verdict, with the ratio of squared residuals Gaussian / Airy (above 1 favours "
              "Airy); **no** where it is not the true shape. Spots: bright isolated spots used. Background share: "
              "of the pixel-frames read, those the camera measurement used (the rest lay near spots). s: render + "
              "calibrate seconds.", "", *cell_table(results),
              "", "## Truth per cell", "", *truth_lines(results),
              "", "## Uncertainties: does the error lie within the reported uncertainty?", "",
              *coverage_lines(results),
              "", "## Exceptions, warnings and the tool's notes", "", *notes_lines(results), ""]
    return lines


def _background_only(source: str, gain: float, background: float, seed: int) -> np.ndarray:
    """A background-only movie (no particles) of the noise-floor section, float64 ADU."""
    if source == "simulator":
        acq = Acquisition(pixel_size_nm=PIXEL_NM, frame_interval_s=0.01, background_photons=background,
                          read_noise_e=READ_NOISE, gain_adu_per_e=gain, offset_adu=100.0)
        return np.asarray(simulate_movie(SHAPE_YX, N_FRAMES, acq, seed, model="aniso", particles=0.0).movie,
                          dtype=np.float64)
    scene = ForeignScene(shape_yx=SHAPE_YX, n_frames=N_FRAMES, n_particles=0, frame_interval_s=0.01, photons=1000.0,
                         background=background)
    camera = ForeignCamera(kind="plain", gain_adu_per_e=gain, offset_adu=100.0, read_noise_e=READ_NOISE)
    return np.asarray(render_foreign_movie(scene, airy_optics(1.0), camera, ForeignMotion(kind="free"), seed).movie,
                      dtype=np.float64)


def noise_floor() -> list[dict[str, Any]]:
    """Camera measured on background-only movies, with and without the quantization step removed."""
    rows = []
    for source in ("simulator", "foreign"):
        for ci, (gain, background) in enumerate(NOISE_FLOOR_CONDITIONS):
            for k in range(NOISE_FLOOR_SEEDS):
                seed = NOISE_FLOOR_SEED_BASE + 100 * ci + k
                frames = _background_only(source, gain, background, seed)
                raw = tile_cumulants(frames, np.ones(frames.shape, dtype=bool))
                step = adu_step(frames)
                row = {"source": source, "gain": gain, "background": background, "seed": seed, "step_adu": step}
                for label, tiles in (("corrected", without_rounding(raw, step)[0]), ("uncorrected", raw)):
                    g, _, b = poisson_camera(tiles, READ_NOISE)
                    row[label] = {"gain_rel_error": g / gain - 1.0, "background_rel_error": b / background - 1.0}
                rows.append(row)
    return rows


def noise_floor_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Table: per renderer and gain, mean +- SD over seeds of the gain and background errors."""
    if not rows:
        return ["Not run (`--quick` or `--cells`)."]
    out = ["| renderer | gain (ADU/e-) | background (photons/px) | step (ADU) | gain error, step removed "
           "| background error, step removed | gain error, step kept | background error, step kept |",
           "|---|---|---|---|---|---|---|---|"]

    def stat(sel: list[dict[str, Any]], label: str, key: str) -> str:
        v = 100.0 * np.array([r[label][key] for r in sel])
        bad = int(np.sum(~np.isfinite(v)))
        v = v[np.isfinite(v)]
        text = f"{v.mean():+.1f} +- {v.std(ddof=1):.1f} %" if v.size > 1 else "n/a"
        return text + (f" ({bad} not measured)" if bad else "")

    for source in ("simulator", "foreign"):
        for gain, background in NOISE_FLOOR_CONDITIONS:
            sel = [r for r in rows if r["source"] == source and r["gain"] == gain and r["background"] == background]
            steps = sorted({r["step_adu"] for r in sel})
            out.append(f"| {source} | {gain:g} | {background:g} | {', '.join(f'{s:g}' for s in steps)} | "
                       f"{stat(sel, 'corrected', 'gain_rel_error')} | "
                       f"{stat(sel, 'corrected', 'background_rel_error')} | "
                       f"{stat(sel, 'uncorrected', 'gain_rel_error')} | "
                       f"{stat(sel, 'uncorrected', 'background_rel_error')} |")
    return out


def select(cells: list[Cell], spec: str | None, quick: bool) -> list[Cell]:
    """Cells named by ``spec`` (names or fnmatch patterns, comma-separated); default all, or the quick three."""
    if spec is None:
        return [c for c in cells if c.name in QUICK_CELLS] if quick else cells
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(c.name, p) for c in cells)]
    if unknown or not chosen:
        raise SystemExit(f"unknown cells {unknown}; choose from {', '.join(c.name for c in cells)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    global SEED_BASE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"3 cells of {QUICK_FRAMES} frames (smoke run)")
    ap.add_argument("--cells", default=None, help="comma-separated cell names or fnmatch patterns (e.g. 'airy-*')")
    ap.add_argument("--seed-base", type=int, default=SEED_BASE,
                    help=f"seed of the first cell (default {SEED_BASE}; another value draws a second set of movies)")
    ap.add_argument("--out", type=Path, default=None,
                    help="report path (default benchmarks/reports/calibration[_quick].md; JSON beside it)")
    args = ap.parse_args(argv)
    SEED_BASE = int(args.seed_base)
    cells = select(all_cells(), args.cells, args.quick)
    n_frames = QUICK_FRAMES if args.quick else N_FRAMES
    out = args.out or report_path("calibration", args.quick)
    command = command_line("bench_calibration.py", argv)
    psfs: dict[float, AiryPSF] = {}
    results = []
    t0 = time.perf_counter()
    for cell in cells:
        r = run_cell(cell, n_frames, psfs)
        results.append(r)
        sc = r.get("scores", {})
        brief = ", ".join(f"{f} {100 * sc[f]['rel_error']:+.1f} %" for f in TARGETS
                          if f in sc and sc[f]["rel_error"] is not None)
        print(f"[{time.perf_counter() - t0:6.0f} s] {cell.name} (seed {cell.seed}): {brief or 'no values'}; shape "
              f"{r.get('shape_measured')}{'; ERROR ' + r['error'] if r.get('error') else ''}", flush=True)
    floor = [] if (args.quick or args.cells) else noise_floor()
    total = time.perf_counter() - t0
    lines = build_report(results, args, command, n_frames, total, floor)
    write_report(out, lines)
    js = {"protocol": PROTOCOL, "version": VERSION, "command": command, "quick": args.quick, "n_frames": n_frames,
          "targets": TARGETS, "emccd_camera": EMCCD, "total_s": total,
          "noise_floor": floor, "header": lines[:5], "results": results}
    write_json(out.with_suffix(".json"), js)
    print(f"wrote {out} and {out.with_suffix('.json')} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
