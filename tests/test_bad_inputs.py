"""Bad and unusual inputs (issue 15): every case ends in one line and exit 2, or a correct result.

Each row of :data:`CASES` is a movie, file or option a user may give ``spt-diffusion``:
unusual cameras (offsets, gains, offset-subtracted, scaled floats, signed data), typos in
the units, truncated and odd TIFFs, NaN/Inf frames, odd shapes and pixel types, metadata
out of range and extreme option values. Every case runs ``cli.main(argv)`` in-process with
a time limit, and must end as its row says:

* ``error``: exit 2, one ``spt-diffusion: error: ...`` line holding the row's fragments (after
  the warnings that arose before it, if any, each on one line), and
  the results of an earlier run (``--overwrite`` given) left untouched, nothing else written;
* ``warn``: exit 0, a ``spt-diffusion: warning: ...`` line holding the fragments (also kept
  in ``_meta.json``), the three result files written afresh;
* ``ok``: exit 0, the three result files written afresh, and the row's check of the results
  (background, signal photons) against the simulated truth.

Movies are 48 x 48 px x 30 frames, 8 particles (:func:`base_movie`): the standard camera
(offset 100 ADU, gain 1 ADU/e-), 10 background photons/px, 1,000 signal photons.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_spt_diffusion import cli
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation.movie import simulate_movie

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _fuzz_cases import write_tiff

TIME_LIMIT_S = 60
SUFFIXES = ("_tracks.csv", "_summary.csv", "_meta.json")
STALE = "results of an earlier run\n"


@pytest.fixture(scope="module")
def base_movie() -> np.ndarray:
    """``(30, 48, 48)`` float64 ADU movie of 8 particles, standard acquisition (seed 11): large enough
    for the camera to be measured from its background."""
    return simulate_movie((48, 48), 30, Acquisition(), 11, model="aniso", particles=8).movie.astype(np.float64)


# ------------------------------------------------------------------ movie makers
def _tif(folder: Path, data: np.ndarray, **kwargs: Any) -> str:
    return str(write_tiff(folder / "movie.tif", data, **kwargs))


def _u16(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 65535).astype(np.uint16)


def _truncated(folder: Path, data: np.ndarray, fraction: float, **kwargs: Any) -> str:
    path = Path(_tif(folder, data, **kwargs))
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])
    return str(path)


def _damaged_page(folder: Path, data: np.ndarray, page: int) -> str:
    path = Path(_tif(folder, data, compression="zlib"))
    with tifffile.TiffFile(path) as tif:
        start, count = tif.pages[page].dataoffsets[0], tif.pages[page].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[start + 2 : start + count] = bytes(count - 2)  # the deflate stream of that page zeroed
    path.write_bytes(bytes(raw))
    return str(path)


def _with_value(data: np.ndarray, frame: int, value: float) -> np.ndarray:
    out = data.astype(np.float32)
    out[frame, 5, 7] = value
    return out


def _scaled(a: np.ndarray) -> np.ndarray:
    return ((a - a.min()) / (a.max() - a.min())).astype(np.float32)


def _scaling_options(a: np.ndarray) -> list[str]:
    span = float(a.max() - a.min())
    return ["--gain-adu-per-e", repr(1.0 / span), "--offset-adu", repr((100.0 - float(a.min())) / span)]


def _simulated(folder: Path, shape: tuple[int, int, int], particles: int) -> str:
    movie = simulate_movie(shape[1:], shape[0], Acquisition(), 12, model="aniso", particles=particles).movie
    return _tif(folder, _u16(movie))


# ------------------------------------------------------------------ result checks
def _results(prefix: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(f"{prefix}_tracks.csv"), pd.read_csv(f"{prefix}_summary.csv")


def _true_scale(prefix: Path) -> None:
    """Background and signal on the photon scale of the simulation (10 photons/px, 1,000 photons)."""
    tracks, summary = _results(prefix)
    assert len(summary) >= 2
    assert 6.0 <= tracks["background"].median() <= 16.0
    assert 600.0 <= tracks["photons"].median() <= 1600.0


def _some_tracks(prefix: Path) -> None:
    assert len(_results(prefix)[1]) >= 1


# ------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Case:
    """A bad or unusual input: ``make(folder, base)`` returns ``[movie, *options]`` for ``track``
    (or a whole command line when ``command`` is not ``"track"``); ``expect`` is ``error``,
    ``warn`` or ``ok``; ``fragments`` must appear in the error or warning line (case-insensitive)."""

    name: str
    make: Callable[[Path, np.ndarray], list[str]]
    expect: str
    fragments: tuple[str, ...] = ()
    check: Callable[[Path], None] | None = None
    command: str = "track"


def _opts(*options: str, data: Callable[[np.ndarray], np.ndarray] = _u16) -> Callable[[Path, np.ndarray], list[str]]:
    """A case maker: the base movie (converted by ``data``) as an ImageJ TIFF, with ``options``."""
    return lambda folder, a: [_tif(folder, data(a)), *options]


CASES: tuple[Case, ...] = (
    # --- unusual cameras (issue 15 item 2): measured, or refused with the option that fixes it
    Case("offset-500", _opts(data=lambda a: _u16(a + 400)), "ok", check=_true_scale),
    Case("gain-4", _opts(data=lambda a: _u16((a - 100) * 4 + 100)), "ok", check=_true_scale),
    Case("offset-already-subtracted", _opts(data=lambda a: _u16(a - 100)), "ok", check=_true_scale),
    Case("float-scaled-0-1", _opts(data=_scaled), "error", ("scaled or normalised", "--gain-adu-per-e")),
    Case("float-scaled-0-1-scaling-given", lambda f, a: [_tif(f, _scaled(a)), *_scaling_options(a)], "ok",
         check=_true_scale),
    Case("int16-negative-values", _opts(data=lambda a: (a - 150).astype(np.int16)), "warn",
         ("offset", "negative"), check=_true_scale),
    Case("offset-given-too-high", _opts("--offset-adu", "1000"), "error", ("background would be", "--offset-adu")),
    Case("offset-subtracted-standard-offset", _opts("--no-calibrate", data=lambda a: _u16(a - 100)), "error",
         ("background would be", "--offset-adu")),
    Case("photons-given-1e8", _opts("--photons", "1e8"), "warn", ("1e+08 photons", "--photons")),
    Case("photons-given-2", _opts("--photons", "2"), "warn", ("2 photons", "outside the plausible")),
    Case("gain-given-1000", _opts("--gain-adu-per-e", "1000", "--offset-adu", "100"), "error",
         ("no particles", "--gain-adu-per-e")),
    Case("float32-camera-counts", _opts(data=lambda a: a.astype(np.float32)), "ok", check=_true_scale),
    Case("float64-camera-counts-ome", lambda f, a: [_tif(f, a, layout="ome")], "ok", check=_true_scale),
    Case("uint8-half-scale", _opts(data=lambda a: np.clip(a / 2, 0, 255).astype(np.uint8)), "ok",
         check=_some_tracks),
    Case("int32-camera-counts", lambda f, a: [_tif(f, a.astype(np.int32), layout="ome")], "ok", check=_true_scale),
    # --- typos in the units (item 3): refused before any work
    Case("pixel-size-0.1-nm", _opts("--pixel-size-nm", "0.1"), "error", ("pixel size 0.1 nm", "--pixel-size-nm")),
    Case("pixel-size-1e-300-nm", _opts("--pixel-size-nm", "1e-300"), "error", ("--pixel-size-nm",)),
    Case("pixel-size-1e6-nm", _opts("--pixel-size-nm", "1e6"), "error", ("10-5,000 nm",)),
    Case("frame-interval-1e300-s", _opts("--frame-interval-s", "1e300"), "error", ("--frame-interval-s",)),
    Case("frame-interval-1e-9-s", _opts("--frame-interval-s", "1e-9"), "error", ("frame interval",)),
    Case("psf-5000-nm", _opts("--psf-sigma-nm", "5000"), "error", ("PSF sigma", "50 px")),
    Case("psf-1-nm", _opts("--psf-sigma-nm", "1"), "error", ("PSF sigma", "--psf-sigma-nm")),
    Case("pixel-size-nan", _opts("--pixel-size-nm", "nan"), "error", ("--pixel-size-nm", "positive")),
    Case("pixel-size-inf", _opts("--pixel-size-nm", "inf"), "error", ("--pixel-size-nm",)),
    Case("pixel-size-text", _opts("--pixel-size-nm", "100nm"), "error", ("expected a number",)),
    Case("frame-interval-negative", _opts("--frame-interval-s", "-1"), "error", ("--frame-interval-s",)),
    Case("offset-nan", _opts("--offset-adu", "nan"), "error", ("--offset-adu", "finite")),
    Case("gain-zero", _opts("--gain-adu-per-e", "0"), "error", ("--gain-adu-per-e",)),
    Case("read-noise-negative", _opts("--read-noise-e", "-1"), "error", ("--read-noise-e",)),
    Case("file-pixel-size-0.1-nm", lambda f, a: [_tif(f, _u16(a), pixel_size_nm=0.1)], "error",
         ("0.1 nm (from the file)", "--pixel-size-nm")),
    Case("file-frame-interval-5000-s", lambda f, a: [_tif(f, _u16(a), frame_interval_s=5000.0)], "error",
         ("(from the file)", "--frame-interval-s")),
    Case("no-metadata-no-options", lambda f, a: [_tif(f, _u16(a), layout="plain")], "error",
         ("no pixel size", "--pixel-size-nm")),
    # --- extreme option values
    Case("threshold-0.5", _opts("--threshold-snr", "0.5"), "error", ("detects the noise itself", "--threshold-snr")),
    Case("threshold-1e6", _opts("--threshold-snr", "1e6"), "error", ("no particles were found",)),
    Case("max-d-1e6", _opts("--max-d", "1e6"), "error", ("--max-d",)),
    Case("max-d-1e-9", _opts("--max-d", "1e-9"), "error", ("none formed a track",)),
    Case("min-track-length-1e6", _opts("--min-track-length", "1000000"), "error", ("none formed a track",)),
    Case("memory-frames-negative", _opts("--memory-frames", "-1"), "error", ("--memory-frames",)),
    Case("model-missing", _opts("--model", "no_such_model"), "error", ("no_such_model",)),
    Case("model-file-not-a-model", lambda f, a: [_tif(f, _u16(a)), "--model", str(f / "movie.tif")], "error",
         ("model",)),
    Case("changepoints-bogus", _opts("--changepoints", "bogus"), "error", ("--changepoints",)),
    Case("simulate-pixel-size-0.1-nm", lambda f, a: ["simulate", str(f / "sim.tif"), "--pixel-size-nm", "0.1"],
         "error", ("--pixel-size-nm",), command="simulate"),
    Case("simulate-psf-1e6-nm", lambda f, a: ["simulate", str(f / "sim.tif"), "--psf-sigma-nm", "1e6"],
         "error", ("PSF sigma",), command="simulate"),
    Case("benchmark-from-current-folder", lambda f, a: ["benchmark", "no_such_benchmark"], "error",
         ("no benchmark script",), command="benchmark"),
    # --- truncated and odd TIFFs (item 4)
    Case("truncated-compressed", lambda f, a: [_truncated(f, _u16(a), 0.6, compression="zlib")], "error",
         ("truncated or damaged",)),
    Case("truncated-imagej", lambda f, a: [_truncated(f, _u16(a), 0.6)], "error", ("truncated or damaged",)),
    Case("truncated-plain-pages", lambda f, a: [_truncated(f, _u16(a), 0.6, layout="plain"), "--pixel-size-nm",
                                                "100", "--frame-interval-s", "0.01"], "error", ("truncated",)),
    Case("damaged-compressed-page", lambda f, a: [_damaged_page(f, _u16(a), 9)], "error",
         ("damaged",)),
    Case("frames-in-one-tiled-volume", lambda f, a: [str(_volume(f, _u16(a))), "--pixel-size-nm", "100",
                                                     "--frame-interval-s", "0.01"], "error", ("one frame at a time",)),
    Case("empty-file", lambda f, a: [str(_write(f / "movie.tif", b""))], "error", ("not a TIFF",)),
    Case("text-file", lambda f, a: [str(_write(f / "movie.tif", b"frame,x,y\n1,2,3\n"))], "error", ("not a TIFF",)),
    Case("single-2d-image", lambda f, a: [_tif(f, _u16(a[0]))], "error", ("single 2-D image",)),
    Case("one-frame-movie", lambda f, a: [_tif(f, _u16(a[:1]))], "error", ("single 2-D image",)),
    Case("rgb-movie", lambda f, a: [str(write_tiff(f / "movie.tif", np.stack([_u16(a)] * 3, -1), layout="plain")),
                                    "--pixel-size-nm", "100", "--frame-interval-s", "0.01"], "error", ("RGB",)),
    Case("two-channels", lambda f, a: [str(_imagej_channels(f, _u16(a)))], "error", ("2 channels",)),
    Case("two-non-spatial-axes", lambda f, a: [str(write_tiff(f / "movie.tif", np.stack([_u16(a)] * 2, 1),
                                                              layout="plain")), "--pixel-size-nm", "100",
                                               "--frame-interval-s", "0.01"], "error", ("non-spatial axis",)),
    Case("complex-pixels", lambda f, a: [_tif(f, a.astype(np.complex64), layout="ome")], "error", ("pixel type",)),
    Case("missing-file", lambda f, a: [str(f / "nowhere.tif")], "error", ("does not exist",)),
    Case("folder-as-movie", lambda f, a: [str(f)], "error", ("folder",)),
    # --- values and shapes
    Case("nan-in-frame-7", _opts(data=lambda a: _with_value(a, 7, np.nan)), "error", ("frame 7", "NaN")),
    Case("inf-in-frame-13", _opts(data=lambda a: _with_value(a, 13, np.inf)), "error", ("frame 13", "infinite")),
    Case("all-zero-movie", _opts(data=lambda a: np.zeros(a.shape, np.uint16)), "error"),
    Case("constant-movie", _opts(data=lambda a: np.full(a.shape, 100, np.uint16)), "error"),
    Case("saturated-movie", _opts(data=lambda a: np.full(a.shape, 65535, np.uint16)), "error"),
    Case("noise-only", lambda f, a: [_tif(f, _u16(np.random.default_rng(3).poisson(10.0, a.shape) + 100.0))],
         "error", ("no particles",)),
    Case("dense-movie", lambda f, a: [_simulated(f, (20, 48, 48), 120)], "warn", ("too dense",)),
    Case("two-frames-min-length-2", lambda f, a: [_tif(f, _u16(a[:2])), "--min-track-length", "2"], "warn",
         ("no diffusion estimate", "--min-track-length 3")),
    Case("three-frames", lambda f, a: [_tif(f, _u16(a[:3]))], "error", ("none formed a track",)),
    Case("tiny-field-4x4", lambda f, a: [_tif(f, _u16(a[:, :4, :4]))], "error"),
)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _volume(folder: Path, movie: np.ndarray) -> Path:
    """All frames in one compressed, tiled page (an SGI volume): not readable frame by frame."""
    path = folder / "movie.tif"
    tifffile.imwrite(path, movie, volumetric=True, tile=(16, 16), compression="zlib")
    return path


def _imagej_channels(folder: Path, movie: np.ndarray) -> Path:
    path = folder / "movie.tif"
    tifffile.imwrite(path, np.stack([movie, movie], 1), imagej=True, metadata={"axes": "TCYX"})
    return path


# ------------------------------------------------------------------ running
class _TimeLimit(BaseException):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    def _raise(*_: Any) -> None:
        raise _TimeLimit(f"no end after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _lines(text: str) -> list[str]:
    """stderr without the progress lines (``" 52.0%  message"``)."""
    out = []
    for line in text.splitlines():
        first = line.split()[0] if line.split() else ""
        if first.endswith("%") and first[:-1].replace(".", "").isdigit():
            continue
        if line.strip():
            out.append(line)
    return out


def _has(line: str, fragments: tuple[str, ...]) -> bool:
    return all(f.lower() in line.lower() for f in fragments)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, base_movie: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = case.make(tmp_path, base_movie)
    prefix = tmp_path / "res"
    stale = [Path(f"{prefix}{s}") for s in SUFFIXES]
    if case.command == "track":
        argv = ["track", *argv[:1], "--out", str(prefix), "--device", "cpu", "--overwrite", *argv[1:]]
        for path in stale:
            path.write_text(STALE)
    before = sorted(p.name for p in tmp_path.iterdir())
    with _time_limit(TIME_LIMIT_S):
        status = cli.main(argv)
    captured = capsys.readouterr()
    lines = _lines(captured.err)
    assert "Traceback" not in captured.err
    if case.expect == "error":
        assert status == 2, captured.err
        assert lines and lines[-1].startswith("spt-diffusion: error: "), lines
        assert all(line.startswith("spt-diffusion: warning: ") for line in lines[:-1]), lines
        assert _has(lines[-1], case.fragments), lines[-1]
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing left behind
        assert all(p.read_text() == STALE for p in stale if p.exists())
        return
    assert status == 0, captured.err
    assert all(line.startswith("spt-diffusion: warning: ") for line in lines), lines
    meta = json.loads(Path(f"{prefix}_meta.json").read_text())
    assert meta["command"].startswith("spt-diffusion track")
    assert all(p.read_text() != STALE for p in stale)
    if case.expect == "warn":
        assert any(_has(line, case.fragments) for line in lines), lines
        # printed when it arose, before the run was done
        everything = captured.err.splitlines()
        warned = next(i for i, line in enumerate(everything) if _has(line, case.fragments))
        assert warned < next(i for i, line in enumerate(everything) if line.strip().startswith("100.0%"))
        assert any(_has(text, case.fragments) for text in meta["warnings"]), meta["warnings"]
    else:
        assert case.expect == "ok"
    if case.check is not None:
        case.check(prefix)


def test_the_table_is_large_and_covers_every_kind() -> None:
    assert len(CASES) >= 50
    assert len({c.name for c in CASES}) == len(CASES)
    kinds = {c.expect for c in CASES}
    assert kinds == {"error", "warn", "ok"}


def test_warning_sink_passes_each_warning_on_at_once() -> None:
    import warnings

    from napari_spt_diffusion.notices import WarningSink, warn

    seen: list[str] = []
    with WarningSink(seen.append) as sink:
        warn("first  problem,\n on two lines")
        assert seen == ["first problem, on two lines"]  # at once, on one line
        warn("first problem, on two lines")
        warnings.warn("a library's own warning", UserWarning, stacklevel=1)
        warnings.warn("numpy noise", RuntimeWarning, stacklevel=1)
    assert sink.messages == seen == ["first problem, on two lines", "a library's own warning"]


def test_damaged_file_in_a_subprocess_prints_one_line_and_no_tifffile_log(base_movie: np.ndarray,
                                                                          tmp_path: Path) -> None:
    """The real stderr of the command: one line, none of tifffile's log lines (issue 15 item 9)."""
    import subprocess

    movie = _truncated(tmp_path, _u16(base_movie), 0.5)
    run = subprocess.run([sys.executable, "-m", "napari_spt_diffusion.cli", "track", movie, "--out",
                          str(tmp_path / "res")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [line for line in run.stderr.splitlines() if line.strip()]
    assert len(run.stderr.splitlines()) == 1 and "truncated or damaged" in run.stderr, run.stderr
    assert not list(tmp_path.glob("res*"))
