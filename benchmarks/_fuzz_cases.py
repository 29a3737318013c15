"""Random malformed movies and settings for ``spt-diffusion track``, and how a run ended.

Shared by ``tests/test_fuzz.py`` (50 cases in CI) and ``benchmarks/bench_fuzz.py`` (1,000
cases, report ``benchmarks/reports/fuzz.md``); the test imports it through ``sys.path``.

* :func:`render_movie` draws a small movie of Gaussian spots on a camera (numpy only, fast);
* :func:`make_case` turns ``(seed, index)`` into one case: a movie written into a folder
  with random shape, pixel type, NaN/Inf frames, camera offset and gain, TIFF layout,
  metadata, truncation or flipped bytes, and random (often extreme) command-line options;
  the same ``(seed, index)`` always gives the same case;
* :func:`run_case` runs the command in-process (``cli.main``) under a wall-clock limit and
  sorts the result into :data:`OUTCOMES`.

A run is acceptable when it exits 0 with all three result files, or exits 2 with one
``spt-diffusion: error: ...`` line and no result file. Units: pixels, frames, ADU.
"""

from __future__ import annotations

import contextlib
import io
import math
import signal
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

__all__ = ["OUTCOMES", "ACCEPTABLE", "FuzzCase", "Outcome", "render_movie", "write_tiff", "make_case", "run_case"]

#: How a run can end: the first two are acceptable.
OUTCOMES = ("exit 0", "exit 2", "traceback", "hang", "partial output", "bad message", "other exit")
ACCEPTABLE = ("exit 0", "exit 2")
RESULT_SUFFIXES = ("_tracks.csv", "_summary.csv", "_meta.json")


@dataclass
class FuzzCase:
    """One fuzz case: the command line (after ``spt-diffusion``), the results prefix, what was done."""

    index: int
    argv: list[str]
    prefix: Path
    description: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """How a case ended (one of :data:`OUTCOMES`), its exit status, the last stderr line, seconds."""

    kind: str
    status: int | None
    message: str
    seconds: float


def render_movie(
    rng: np.random.Generator,
    shape: tuple[int, int, int] = (20, 32, 32),
    n_particles: int = 4,
    camera: tuple[float, float] = (100.0, 1.0),
    light: tuple[float, float] = (1000.0, 10.0),
    psf_px: float = 1.0,
) -> np.ndarray:
    """A ``(T, Y, X)`` float64 movie in ADU: ``n_particles`` random walkers (0.5 px per frame),
    Gaussian spots of ``light[0]`` photons on ``light[1]`` photons/px, Poisson noise, 1.5 e-
    read noise, then ``offset + gain * electrons`` with ``camera = (offset ADU, gain ADU/e-)``."""
    n_frames, ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    pos = rng.uniform([0, 0], [max(ny - 1, 1), max(nx - 1, 1)], size=(n_particles, 2))
    expected = np.full(shape, float(light[1]))
    for t in range(n_frames):
        pos += rng.normal(0.0, 0.5, size=pos.shape)
        for y, x in pos:
            expected[t] += light[0] / (2 * math.pi * psf_px**2) * np.exp(
                -((yy - y) ** 2 + (xx - x) ** 2) / (2 * psf_px**2))
    electrons = rng.poisson(expected) + rng.normal(0.0, 1.5, size=shape)
    return camera[0] + camera[1] * electrons


def write_tiff(
    path: Path,
    data: np.ndarray,
    pixel_size_nm: float | None = 100.0,
    frame_interval_s: float | None = 0.01,
    layout: str = "imagej",
    compression: str | None = None,
) -> Path:
    """Write ``data`` as a TIFF: ``layout`` ``"imagej"`` (calibrated as ImageJ does, when the
    values are given), ``"ome"`` or ``"plain"`` (tifffile's shaped pages, no calibration)."""
    kwargs: dict[str, Any] = {}
    if compression:
        kwargs["compression"] = compression
    if layout == "imagej" and data.dtype not in (np.uint8, np.uint16, np.int16, np.float32):
        layout = "ome"  # ImageJ hyperstacks hold only these pixel types
    if layout == "imagej":
        metadata: dict[str, Any] = {"axes": "TYX"[-data.ndim:] if data.ndim <= 3 else None}
        if metadata["axes"] is None:
            metadata.pop("axes")
        if frame_interval_s is not None:
            metadata["finterval"] = frame_interval_s
        if pixel_size_nm is not None:
            metadata["unit"] = "um"
            kwargs["resolution"] = (1000.0 / pixel_size_nm, 1000.0 / pixel_size_nm)
        tifffile.imwrite(path, data, imagej=True, metadata=metadata, **kwargs)
    elif layout == "ome":
        metadata = {"axes": "TYX"[-data.ndim:]} if data.ndim <= 3 else {}
        if pixel_size_nm is not None:
            metadata.update(PhysicalSizeX=pixel_size_nm / 1000.0, PhysicalSizeY=pixel_size_nm / 1000.0)
        if frame_interval_s is not None:
            metadata["TimeIncrement"] = frame_interval_s
        tifffile.imwrite(path, data, ome=True, metadata=metadata, **kwargs)
    else:
        tifffile.imwrite(path, data, **kwargs)
    return path


# ------------------------------------------------------------------ the cases
_DTYPES = ("uint16",) * 8 + ("uint8", "int16", "int16-negative", "int32", "uint32", "float32",
           "float64", "float-0-1", "float-negative", "complex64", "bool")
_OPTION_VALUES = {
    "--pixel-size-nm": ("100", "65", "0.1", "1e-300", "1e9", "nan", "inf", "-5", "abc", "10", "5000"),
    "--frame-interval-s": ("0.01", "1e300", "1e-12", "0", "-1", "nan", "1000", "1e-5"),
    "--psf-sigma-nm": ("100", "1", "1e6", "30", "1000", "nan"),
    "--photons": ("1000", "1", "1e9", "0", "nan"),
    "--offset-adu": ("0", "100", "500", "-200", "1e9", "nan", "65535"),
    "--gain-adu-per-e": ("1", "4", "0.001", "1e6", "0", "-1"),
    "--background-photons": ("10", "0", "1e7", "-3"),
    "--threshold-snr": ("5", "0.01", "1e6", "0"),
    "--max-d": ("6", "1e-9", "1e6", "0"),
    "--memory-frames": ("2", "0", "100000", "-1"),
    "--min-track-length": ("5", "1", "2", "3", "1000000", "0"),
    "--changepoints": ("auto", "none", "multiple", "bogus"),
    "--model": ("aniso", "binding", "twostate", "nonexistent", "/no/such/model.pt"),
}


def _convert(rng: np.random.Generator, adu: np.ndarray, kind: str) -> np.ndarray:
    if kind == "uint8":
        return np.clip(adu / 4, 0, 255).astype(np.uint8)
    if kind == "int16":
        return np.clip(adu, -32768, 32767).astype(np.int16)
    if kind == "int16-negative":
        return np.clip(adu - 160, -32768, 32767).astype(np.int16)
    if kind in ("int32", "uint32", "float32", "float64"):
        return np.clip(adu, 0, None).astype(kind)
    if kind == "float-0-1":
        return ((adu - adu.min()) / max(np.ptp(adu), 1e-9)).astype(np.float32)
    if kind == "float-negative":
        return (adu - 150.0).astype(np.float32)
    if kind == "complex64":
        return adu.astype(np.complex64)
    if kind == "bool":
        return adu > np.median(adu)
    return np.clip(adu, 0, 65535).astype(np.uint16)


#: Aspects a case may change; a "mild" case changes one of them only, the others stay sane.
ASPECTS = ("frames", "field", "particles", "camera", "photons", "psf", "special", "dtype", "bad values",
           "axes", "layout", "metadata", "damage", "options")


class _Chooser:
    """Draws each aspect at random, or keeps its sane value unless it is the one a mild case changes."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.mild = bool(rng.random() < 0.4)
        self.changed = str(rng.choice(ASPECTS))

    def __call__(self, aspect: str, sane: Any, options: Any) -> Any:
        if self.mild and aspect != self.changed:
            return sane
        return self.rng.choice(options) if isinstance(options, (list, tuple)) else options()


def _movie_for_case(rng: np.random.Generator, notes: list[str], pick: _Chooser) -> np.ndarray:
    n_frames = int(pick("frames", 20, [1, 2, 3, 5, 20, 20, 20, 20, 20, 30]))
    ny, nx = (int(v) for v in pick("field", (32, 32), lambda: rng.choice([1, 4, 16, 32, 48], size=2)))
    n_particles = int(pick("particles", 4, [0, 1, 4, 4, 4, 4, 8, 60, 200]))
    offset, gain = (float(v) for v in pick("camera", (100.0, 1.0), lambda: (
        rng.choice([0.0, 100.0, 100.0, 100.0, 500.0, 10_000.0]), rng.choice([0.1, 1.0, 1.0, 1.0, 4.0, 50.0]))))
    photons = float(pick("photons", 1000.0, [5.0, 300.0, 1000.0, 1000.0, 1000.0, 1e5]))
    psf = float(pick("psf", 1.0, [0.5, 1.0, 1.0, 2.0, 4.0]))
    notes.append(f"{n_frames}x{ny}x{nx}, {n_particles} particles, offset {offset:g}, gain {gain:g}, "
                 f"{photons:g} photons, PSF {psf:g} px")
    adu = render_movie(rng, (n_frames, ny, nx), n_particles, (offset, gain), (photons, 10.0), psf)
    special = float(pick("special", 1.0, rng.random))
    if special < 0.06:
        adu[:] = 0.0
        notes.append("all zero")
    elif special < 0.1:
        adu[:] = 100.0
        notes.append("constant")
    elif special < 0.14:
        adu[:] = 65535.0
        notes.append("saturated")
    kind = str(pick("dtype", "uint16", _DTYPES))
    data = _convert(rng, adu, kind)
    notes.append(kind)
    if data.dtype.kind == "f" and pick("bad values", 1.0, rng.random) < 0.3:
        bad = float(rng.choice([np.nan, np.inf, -np.inf, 1e30, -1e30]))
        t = int(rng.integers(0, n_frames))
        data[t, int(rng.integers(0, ny)), int(rng.integers(0, nx))] = bad
        notes.append(f"{bad:g} in frame {t}")
    shape_change = float(pick("axes", 1.0, rng.random))
    if shape_change < 0.04:
        data = data[0]
        notes.append("2-D image")
    elif shape_change < 0.07:
        data = np.stack([data, data], axis=1)
        notes.append("extra axis (T, 2, Y, X)")
    elif shape_change < 0.1:
        data = np.stack([data, data, data], axis=-1)
        notes.append("RGB (T, Y, X, 3)")
    return data


def _damage(rng: np.random.Generator, path: Path, notes: list[str], pick: _Chooser) -> None:
    roll = float(pick("damage", 1.0, rng.random))
    raw = path.read_bytes()
    if roll < 0.08:
        cut = int(len(raw) * rng.uniform(0.0, 0.98))
        path.write_bytes(raw[:cut])
        notes.append(f"truncated to {cut} of {len(raw)} bytes")
    elif roll < 0.14:
        data = bytearray(raw)
        for _ in range(int(rng.integers(1, 20))):
            data[int(rng.integers(0, len(data)))] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(data))
        notes.append("flipped bytes")
    elif roll < 0.16:
        path.write_bytes(rng.bytes(int(rng.integers(0, 4096))))
        notes.append("random bytes, not a TIFF")


def _options(rng: np.random.Generator, notes: list[str], pick: _Chooser) -> list[str]:
    argv: list[str] = []
    n_options = int(pick("options", 0, [0, 1, 1, 2, 3]))
    for name in rng.choice(sorted(_OPTION_VALUES), size=n_options, replace=False):
        values = _OPTION_VALUES[str(name)]
        value = values[0] if rng.random() < 0.4 else str(rng.choice(values))  # the first value is a sane one
        argv += [str(name), value]
    for flag, chance in (("--no-calibrate", 0.1), ("--keep-encounters", 0.05), ("--trust-model", 0.05)):
        if pick("options", 1.0, rng.random) < chance:
            argv.append(flag)
    if argv:
        notes.append(" ".join(argv))
    return argv


def make_case(seed: int, index: int, folder: Path) -> FuzzCase:
    """Case ``index`` of the fuzz series ``seed``: writes its movie into ``folder`` (created)."""
    rng = np.random.default_rng([int(seed), int(index)])
    folder.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    pick = _Chooser(rng)
    if pick.mild:
        notes.append(f"mild: {pick.changed}")
    data = _movie_for_case(rng, notes, pick)
    layout = str(pick("layout", "imagej", ["imagej", "imagej", "ome", "plain"]))
    compression = "zlib" if pick("layout", 1.0, rng.random) < 0.25 else None
    pixel, interval = pick("metadata", (100.0, 0.01), lambda: (
        None if rng.random() < 0.1 else float(10 ** rng.uniform(-1, 4)) if rng.random() < 0.1 else 100.0,
        None if rng.random() < 0.1 else float(10 ** rng.uniform(-7, 4)) if rng.random() < 0.1 else 0.01))
    notes.append(f"{layout}{', zlib' if compression else ''}, metadata pixel {pixel}, interval {interval}")
    movie = folder / "movie.tif"
    try:
        write_tiff(movie, data, pixel, interval, layout, compression)
    except Exception as exc:  # a layout tifffile cannot write: fall back to plain pages
        notes.append(f"written plain ({type(exc).__name__})")
        movie.unlink(missing_ok=True)
        tifffile.imwrite(movie, data)
    _damage(rng, movie, notes, pick)
    argv = ["track", str(movie), "--out", str(folder / "res"), "--device", "cpu", *_options(rng, notes, pick)]
    uncalibrated = layout == "plain"  # tifffile's own pages carry no calibration
    if (pixel is None or uncalibrated) and "--pixel-size-nm" not in argv and rng.random() < 0.8:
        argv += ["--pixel-size-nm", "100"]
    if (interval is None or uncalibrated) and "--frame-interval-s" not in argv and rng.random() < 0.8:
        argv += ["--frame-interval-s", "0.01"]
    return FuzzCase(index, argv, folder / "res", notes)


# ------------------------------------------------------------------ running
class _Hang(BaseException):
    """Raised in the main thread when a case runs past its time limit."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    def _raise(signum: int, frame: Any) -> None:
        raise _Hang()

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


def _is_progress(line: str) -> bool:
    text = line.strip()
    return not text or (text.split()[0].endswith("%") and text.split()[0][:-1].replace(".", "").isdigit())


def run_case(case: FuzzCase, timeout_s: float = 60.0) -> Outcome:
    """Run ``spt-diffusion`` on ``case`` in this process (main thread) and classify the end."""
    import time

    from napari_spt_diffusion import cli

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    status: int | None = None
    kind = ""
    try:
        with _time_limit(timeout_s), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(case.argv)
    except _Hang:
        kind = "hang"
    except BaseException:  # anything escaping main is a traceback for the user
        err.write(traceback.format_exc())
        kind = "traceback"
    seconds = time.perf_counter() - t0
    lines = [line for line in err.getvalue().splitlines() if not _is_progress(line)]
    errors = [line for line in lines if line.startswith("spt-diffusion: error:")]
    written = [Path(str(case.prefix) + s) for s in RESULT_SUFFIXES]
    if not kind:
        if "Traceback (most recent call last)" in err.getvalue():
            kind = "traceback"
        elif status == 0:
            kind = "exit 0" if all(p.is_file() for p in written) else "partial output"
        elif status == 2:
            if any(p.exists() for p in written):
                kind = "partial output"
            elif len(errors) == 1 and all(line.startswith("spt-diffusion: ") for line in lines):
                kind = "exit 2"
            else:
                kind = "bad message"
        else:
            kind = "other exit"
    message = errors[-1] if errors else (lines[-1] if lines else "")
    if kind == "traceback":
        message = " | ".join(err.getvalue().strip().splitlines()[-2:])
    return Outcome(kind, status, message[:300], seconds)
