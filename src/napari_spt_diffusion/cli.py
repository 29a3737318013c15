"""The ``spt-diffusion`` command: ``simulate``, ``track``, ``estimate``, ``train``, ``benchmark``.

Every problem a user can fix (a missing or unreadable movie, a wrong value, an
existing or unwritable output) ends the command with one line
``spt-diffusion: error: ...`` on stderr and exit status 2, without a traceback; output
targets are checked before any computation. Ctrl-C (SIGINT) ends it with status 130,
SIGTERM with status 143, each with one line. Outputs are written all or nothing (see
:mod:`napari_spt_diffusion.io`), so none of these leaves a half-written file or a mix of
two result sets behind. Set ``SPT_DIFFUSION_DEBUG=1`` to see the traceback of a
reported error.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__, _cli_calibrate, _cli_estimate
from ._cli_types import (  # noqa: F401 - the argument types under the names the parser (and tests) use
    _chunk_frames,
    _field_size,
    _finite_float,
    _fraction,
    _frame_count,
    _non_negative_float,
    _non_negative_int,
    _positive_float,
    _positive_int,
)
from ._pause import PAUSE_ENV, pause_point
from .acquisition import Acquisition
from .acquisition_resolver import resolve_acquisition
from .errors import SptDiffusionError
from .io import InputError, check_outputs, read_movie, results_paths, simulation_paths
from .io._atomic import check_writable_folder
from .io.zarr_movie import is_zarr_path
from .notices import WarningSink
from .plausibility import check_units
from .simulation.motion_models import motion_model_names, movie_model_names
from .training.config import add_train_arguments, config_from_args

__all__ = ["main", "build_parser", "ProgressBar", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

PROG = "spt-diffusion"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every clean-up (temporaries, half-made folders) runs."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


class _UsageError(Exception):
    """A command-line usage error (reported in one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and do not exit the interpreter."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------- progress
class ProgressBar:
    """Terminal progress for ``progress(fraction, message)`` callbacks.

    On a terminal it redraws one line (``[#####-----]  50%  message``); otherwise (a log
    file, a pipe) it prints a line when the step changes (the message apart from its
    numbers) or another 10 % is done, so logs stay short.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 28, min_interval_s: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval_s = min_interval_s
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_len = 0
        self._last_message: str | None = None
        self._last_step: str | None = None
        self._last_decile = -1
        self._drawn = False

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        if self.tty:
            now = time.monotonic()
            if message == self._last_message and fraction < 1.0 and now - self._last_draw < self.min_interval_s:
                return
            filled = int(round(fraction * self.width))
            line = f"[{'#' * filled}{'-' * (self.width - filled)}] {fraction * 100:5.1f}%  {message}"
            pad = max(0, self._last_len - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()
            self._last_len = len(line)
            self._last_draw = now
            self._drawn = True
        else:
            decile = int(fraction * 10)
            step = re.sub(r"[\d.,/]+", "#", message)  # "frame 3 of 200" and "frame 4 of 200" are one step
            if step != self._last_step or decile > self._last_decile:
                self.stream.write(f"{fraction * 100:5.1f}%  {message}\n")
                self.stream.flush()
                self._last_decile = decile
                self._last_step = step
        self._last_message = message

    def interject(self, text: str) -> None:
        """Print ``text`` as a line of its own now (a warning), clearing the bar's line first;
        the bar is drawn again on its next update."""
        if self.tty and self._drawn:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self._drawn = False
            self._last_message = None
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (call once the work is done or failed)."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


def _given(args: argparse.Namespace, **options: str) -> dict[str, Any]:
    """Acquisition fields the user gave: ``field=option`` pairs whose option is set."""
    return {name: getattr(args, option) for name, option in options.items() if getattr(args, option) is not None}


# ----------------------------------------------------------------- simulate
def _simulation_acquisition(args: argparse.Namespace) -> Acquisition:
    from .simulation.render import signal_photons_for_snr

    changes = _given(
        args,
        pixel_size_nm="pixel_size_nm",
        frame_interval_s="frame_interval_s",
        psf_sigma_nm="psf_sigma_nm",
        background_photons="background_photons",
        signal_photons="photons",
    )
    acquisition = resolve_acquisition(explicit=changes)
    check_units(acquisition, {name: "given" for name in changes})
    if args.snr is not None:
        acquisition = acquisition.replace(signal_photons=signal_photons_for_snr(args.snr, acquisition))
    return acquisition


def _check_output_targets(targets: Sequence[Path], overwrite: bool) -> None:
    """Check output files before any work; a missing output folder is allowed when it can be
    created (its nearest existing ancestor is a writable folder). It is created only just
    before writing (:func:`_make_output_folder`), so a failed run leaves nothing behind."""
    folder = Path(targets[0]).parent
    if folder.exists():
        removed = check_outputs(targets, overwrite=overwrite)
        if removed:
            _say(f"removed {len(removed)} temporary file(s) that an interrupted earlier run left in {folder}")
        return
    ancestor = folder.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot create folder {folder}: {ancestor} is not a folder")
    try:
        check_writable_folder(ancestor)
    except InputError:
        raise InputError(f"cannot create folder {folder}: {ancestor} is not writable") from None


def _make_output_folder(targets: Sequence[Path]) -> list[Path]:
    """Create the output folder of ``targets`` (and its parents) if it is missing; returns the
    folders created, deepest first (:func:`_remove_empty_folders` takes them back)."""
    folder = Path(targets[0]).parent
    created = []
    missing = folder
    while not missing.exists() and missing != missing.parent:
        created.append(missing)
        missing = missing.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create folder {folder}: {exc.strerror or exc}") from None
    return created


def _remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove the folders :func:`_make_output_folder` created, where a failed write left them empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _cmd_simulate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"the output movie must be a .tif file, got {out.name}")
    targets = simulation_paths(out)
    _check_output_targets(targets, args.overwrite)
    acquisition = _simulation_acquisition(args)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")

    from .io import write_simulation
    from .simulation.movie import simulate_movie

    ny, nx = args.size
    bar = ProgressBar()
    try:
        simulated = simulate_movie(
            (ny, nx),
            args.frames,
            acquisition,
            seed,
            model=args.model,
            particles=args.particles,
            progress=bar,
        )
    finally:
        bar.close()
    truth = simulated.truth
    truth.meta = dict(truth.meta or {})
    truth.meta.setdefault("kind", "ground truth")
    truth.meta["simulation"] = {
        **dict(truth.meta.get("simulation") or {}),
        "model": args.model,
        "particles": args.particles,
        "frames": args.frames,
        "field_yx": [ny, nx],
        "seed": seed,
        "command": shlex.join([PROG, *argv]),
    }
    created = _make_output_folder(targets)
    try:
        written = write_simulation(
            out,
            simulated.movie,
            truth,
            overwrite=args.overwrite,
            compression="zlib" if args.compress else None,
        )
    except BaseException:
        _remove_empty_folders(created)
        raise
    n_tracks = truth.n_tracks
    _say(
        f"simulated {args.frames} frames of {ny} x {nx} px, {n_tracks} tracks "
        f"(model {args.model}, seed {seed}, {simulated.acquisition.signal_photons:.0f} photons/frame)"
    )
    for path in written:
        _say(f"wrote {path}")
    return 0


# -------------------------------------------------------------------- track
def _cmd_track(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``track``, and ``estimate``: the tracks read from ``--tracks`` instead of found (:mod:`._cli_estimate`)."""
    movies = [args.movie] if isinstance(args.movie, str) else list(args.movie)
    if getattr(args, "command", "track") == "track" and (len(movies) > 1 or args.workers or args.scheduler or (
            (Path(movies[0]).is_dir() and not is_zarr_path(Path(movies[0])))
            or (glob.has_magic(movies[0]) and not Path(movies[0]).exists()))):
        return _cmd_track_batch(args, movies, argv)
    movie = read_movie(movies[0])
    try:
        changes = _given(args, psf_sigma_nm="psf_sigma_nm", signal_photons="photons", offset_adu="offset_adu",
                         gain_adu_per_e="gain_adu_per_e", background_photons="background_photons",
                         read_noise_e="read_noise_e")
        acquisition = movie.acquisition(
            pixel_size_nm=args.pixel_size_nm, frame_interval_s=args.frame_interval_s, **changes
        )
        check_units(acquisition, _origins(args, movie, changes))
        measure = _fields_to_measure(args, movie, changes)
        prefix = _track_prefix(args.out, movie.path)
        targets = list(results_paths(prefix).values()) + _cli_estimate.extra_targets(args, prefix)
        _check_output_targets(targets, args.overwrite)
        imported = _cli_estimate.read_tracks(args, acquisition, _say)
        source = movie.metadata_source or "none"
        _say(
            f"{movie.path.name}: {movie.n_frames} frames of {movie.shape[1]} x {movie.shape[2]} px; "
            f"pixel size {acquisition.pixel_size_nm:g} nm, frame interval {acquisition.frame_interval_s:g} s "
            f"(file metadata: {source})"
        )

        settings = _track_settings(args)
        settings.measure = measure
        settings.trust_model = bool(args.trust_model)
        bar = ProgressBar()
        try:
            # each library warning is printed as it arises (notices.py), not after the run
            with WarningSink(lambda text: bar.interject(f"{PROG}: warning: {text}")):
                results = _cli_estimate.run_estimation(movie.data, imported, acquisition, settings,
                                                       _with_pause_points(bar))
        finally:
            bar.close()
    finally:
        movie.close()
    if results.n_tracks == 0:
        raise InputError(
            f"no particles were tracked in {movie.path.name}; check the acquisition "
            "(PSF sigma, photons) and the detection threshold"
        )
    results.meta = dict(results.meta or {})
    results.meta.setdefault("movie", str(movie.path))
    results.meta["command"] = shlex.join([PROG, *argv])
    from .io import write_results

    created = _make_output_folder(targets)
    try:
        written = write_results(prefix, results, overwrite=args.overwrite)
        written += _cli_estimate.write_extra_files(args, prefix, results)
    except BaseException:
        _remove_empty_folders(created)
        raise
    _say(f"{results.n_tracks} tracks, {len(results.tracks)} localizations")
    if (results.meta.get("isotropy") or {}).get("text"):  # the movie's isotropy verdict (estimation/isotropy.py)
        _say(results.meta["isotropy"]["text"])
    for path in written:
        _say(f"wrote {path}")
    return 0


def _cmd_track_batch(args: argparse.Namespace, movies: list[str], argv: Sequence[str]) -> int:
    """``track`` of several movies, a folder or a glob on a Dask cluster (:mod:`.batch`, docs/batch.md);
    exit status 0, or 1 when some movies failed (the others are written; see the batch report)."""
    from . import batch

    if not args.out:
        raise InputError("a batch needs --out FOLDER for the result sets, the combined summary and the report")
    if args.msd or args.trackpy_table:
        raise InputError("--msd and --trackpy-table are not written in a batch yet; run track on one movie for them")
    jobs = batch.plan_batch(batch.expand_inputs(movies), args.out)
    settings = _track_settings(args)
    settings.trust_model = bool(args.trust_model)
    changes = _given(args, psf_sigma_nm="psf_sigma_nm", signal_photons="photons", offset_adu="offset_adu",
                     gain_adu_per_e="gain_adu_per_e", background_photons="background_photons",
                     read_noise_e="read_noise_e")
    options = batch.BatchOptions(settings, args.pixel_size_nm, args.frame_interval_s, changes,
                                 bool(args.calibrate), shlex.join([PROG, *argv]))
    _say(f"{len(jobs)} movie(s); results in {args.out}")
    report = batch.run_batch(jobs, options, args.out, workers=args.workers, scheduler=args.scheduler,
                             overwrite=args.overwrite, say=_say)
    _say(f"{report.count('done')} done, {report.count('skipped')} skipped, {report.count('failed')} failed in "
         f"{report.wall_s:.1f} s; wrote {', '.join(str(p) for p in report.files)}")
    if report.count("failed"):
        print(f"{PROG}: error: {report.count('failed')} of {len(jobs)} movies failed (see {report.files[1]})",
              file=sys.stderr)
    return report.exit_status


def _track_prefix(out: str | None, movie_path: Path) -> Path:
    """The results prefix of ``track``, refused now (before any work) if it names no file.

    ``--out PREFIX`` as given; ``--out DIR/`` (ending in a path separator) writes into DIR
    (created if missing), the files named after the movie; default: the movie's path
    without its extension.
    """
    name = movie_path.name
    stem = name[: -len(movie_path.suffix)] if movie_path.suffix else name
    stem = name[: -len(".ome.zarr")] if name.lower().endswith(".ome.zarr") else stem
    if out is None:
        prefix = movie_path.with_name(stem)
        if prefix.is_dir():
            raise InputError(f"the default output prefix {prefix} (the movie's name) is a folder; write into it "
                             f"with --out {prefix}{os.sep}, or give --out PREFIX")
        return prefix
    if not out.strip():
        raise InputError("--out is empty; give a prefix such as results, or a folder ending in / such as out/")
    if out.endswith(("/", os.sep)):
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--out {out}: {folder} is a file, not a folder")
        return folder / stem
    prefix = Path(out)
    if prefix.is_dir() or prefix.name in ("", ".", ".."):
        raise InputError(f"--out {out} is a folder; write into it with --out {out}{os.sep} (trailing slash) or "
                         f"give a file-name prefix such as {prefix / 'results'}")
    return prefix


def _with_pause_points(progress: Any) -> Any:
    """``progress``, calling the test hook :func:`~napari_spt_diffusion._pause.pause_point` at the
    detection and inference steps when ``SPT_DIFFUSION_TEST_PAUSE`` is set (else ``progress`` itself)."""
    if not os.environ.get(PAUSE_ENV):
        return progress

    def report(fraction: float, message: str = "") -> None:
        progress(fraction, message)
        if message.startswith("detecting and localizing: frame"):
            pause_point("detection")
        elif message.startswith("model ") and ": batch " in message:
            pause_point("inference")

    return report


def _origins(args: argparse.Namespace, movie: Any, given: dict[str, Any]) -> dict[str, str]:
    """Where the pixel size, frame interval and PSF of ``track`` come from, for the messages."""
    origins = {name: "given" for name in given}
    for name in ("pixel_size_nm", "frame_interval_s"):
        if getattr(args, name) is not None:
            origins[name] = "given"
        elif getattr(movie, name) is not None:
            origins[name] = "file"
    for name in ("pixel_size_nm", "frame_interval_s", "psf_sigma_nm"):
        if name not in origins:
            origins[name] = "stored" if movie.acquisition_dict and name in movie.acquisition_dict else "assumed"
    return origins


def _fields_to_measure(args: argparse.Namespace, movie: Any, given: dict[str, Any]) -> tuple[str, ...]:
    """Acquisition fields to measure from the movie: those neither the options nor the file give.

    A movie written by this package stores its whole acquisition: nothing is measured then.
    """
    from .calibration import fields_to_measure

    if not args.calibrate or movie.acquisition_dict:
        return ()
    return fields_to_measure(given)


def _track_settings(args: argparse.Namespace) -> Any:
    """:class:`pipeline.Settings` from the command line (unset options keep the defaults)."""
    import dataclasses

    from .pipeline import Settings

    values: dict[str, Any] = {"model": args.model, "device": args.device,
                              "read_noise_known": getattr(args, "read_noise_e", None) is not None}
    for name in ("max_D_um2_s", "memory_frames", "min_track_length", "changepoints", "split_encounters",
                 "motion_linking", "chunk_frames", "psf_units"):
        values[name] = getattr(args, name, None)  # estimate has no detection or linking options
    settings = Settings(**{k: v for k, v in values.items() if v is not None})
    settings.drift_correction = bool(getattr(args, "drift_correction", False))
    settings.model_switch = not bool(getattr(args, "keep_model", False))
    settings.rescale_model = not bool(getattr(args, "keep_model_scale", False))
    settings.model_range_check = not bool(getattr(args, "keep_model_beyond_range", False))
    if getattr(args, "threshold_snr", None) is not None:
        settings.detection = dataclasses.replace(settings.detection, threshold_snr=args.threshold_snr)
    return settings


# ---------------------------------------------------------------- calibrate
def _cmd_calibrate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``calibrate`` (:mod:`._cli_calibrate`), with this module's output checks and printing."""
    return _cli_calibrate.cmd_calibrate(args, argv, say=_say, check_targets=_check_output_targets)


# -------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .training.loop import train_model

    config = config_from_args(args)
    bar = ProgressBar()
    try:
        path = train_model(config, bar, command=shlex.join([PROG, *argv]))
    finally:
        bar.close()
    _say(f"exported {path}")
    return 0


# ---------------------------------------------------------------- benchmark
#: The project's own benchmark scripts (a source checkout; an installed package has none).
#: Never ./benchmarks of the current folder: a NAME runs only these, other scripts need their path.
OWN_BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _available_benchmarks(folder: Path) -> dict[str, Path]:
    return {p.stem[len("bench_"):]: p for p in sorted(folder.glob("bench_*.py"))}


def _benchmark_scripts(name: str | None) -> list[Path]:
    """The scripts ``benchmark NAME`` runs: ``OWN_BENCHMARKS/bench_NAME.py``, all of them without
    NAME, or the script NAME when it is a path (it ends in ``.py`` or holds a folder)."""
    folder = OWN_BENCHMARKS
    if name and (name.endswith(".py") or "/" in name or os.sep in name):
        path = Path(name)
        if not path.is_file():
            raise InputError(f"benchmark script {path} not found")
        return [path.resolve()]
    if not folder.is_dir():
        raise InputError(f"the project's benchmarks folder {folder} was not found (an installed package has none): "
                         "run from a source checkout of napari-spt-diffusion, or give the path of a script")
    available = _available_benchmarks(folder)
    if name:
        if name not in available:
            raise InputError(f"no benchmark script {folder / ('bench_' + name + '.py')}; available: "
                             f"{', '.join(available) or 'none'} (or give the path of a script)")
        return [available[name]]
    if not available:
        raise InputError(f"no benchmark scripts (bench_*.py) in {folder}")
    return list(available.values())


def _cmd_benchmark(args: argparse.Namespace, argv: Sequence[str]) -> int:
    scripts = _benchmark_scripts(args.name)
    extra = list(args.args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    if args.quick and "--quick" not in extra:
        extra = ["--quick", *extra]
    for script in scripts:
        command = [sys.executable, str(script), *extra]
        _say(f"running {shlex.join(command)}")
        status = subprocess.call(command, cwd=script.parent.parent)
        if status != 0:
            print(f"{PROG}: error: {script.name} exited with status {status}", file=sys.stderr)
            return status if status > 0 else 1
    return 0


# -------------------------------------------------------------------- parser
def _add_estimation_options(parser: argparse.ArgumentParser) -> None:
    """Acquisition, calibration, model, track length, changepoint and device options of ``track`` and ``estimate``."""
    parser.add_argument("--pixel-size-nm", type=_positive_float, help="pixel size in nm (overrides the file)")
    parser.add_argument("--frame-interval-s", type=_positive_float, help="frame interval in s (overrides the file)")
    parser.add_argument("--psf-sigma-nm", type=_positive_float, help="PSF sigma in nm (default: from the file or 100)")
    parser.add_argument("--photons", type=_positive_float, help="expected signal photons per frame")
    parser.add_argument("--offset-adu", type=_finite_float, help="camera offset in ADU, negative for shifted signed "
                        "data (default: measured)")
    parser.add_argument("--gain-adu-per-e", type=_positive_float, help="camera gain in ADU per photo-electron "
                        "(default: measured)")
    parser.add_argument("--background-photons", type=_non_negative_float,
                        help="background photons per pixel per frame (default: measured)")
    parser.add_argument("--read-noise-e", type=_non_negative_float,
                        help="camera read noise in e- rms, from the camera's data sheet (default: 1.5 assumed, and an "
                             "sCMOS/CCD's 0-3 e- range carried into the measured gain's uncertainty; given, it is not)")
    parser.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                        help="use the standard values for what neither the file nor the options give, instead of "
                             "measuring camera, background, PSF width and signal from the movie")
    parser.add_argument("--trust-model", action="store_true",
                        help="report the model's values even where the guard finds it biased on this movie or the "
                             "movie outside its training range (default: the classical values are reported then); "
                             "a rejected model's values are reported as it gave them, not rescaled")
    parser.add_argument("--keep-model-scale", action="store_true",
                        help="report an accepted model's values as it gave them even where the guard shows them off "
                             "by more than 5 %% (default: divided by the factor the guard measured, flag 'rescaled')")
    parser.add_argument("--keep-model-beyond-range", action="store_true",
                        help="report the model's values also for the tracks whose classical estimate shows them "
                             "faster or slower than the range of D the model was trained on (default: their "
                             "classical values, flag 'beyond_model_range')")
    parser.add_argument("--model", default=None,
                        help=f"bundled model ({', '.join(motion_model_names())}) or a checkpoint path (default: aniso)")
    parser.add_argument("--keep-model", action="store_true",
                        help="run the model asked for even where the movie lies outside its training range (by default "
                             "a bundled model for any microscope then takes over where one covers the movie), and "
                             "report the classical values where the guard rejects it (by default that model is run "
                             "after it and reported if the guard accepts it)")
    parser.add_argument("--psf-units", choices=("auto", "on", "off"), default=None,
                        help="give the model its inputs in units of the PSF: patches resampled to its training PSF "
                             "width, displacements and D scaled (auto: when the movie's PSF is outside the model's "
                             "range, the default; on: always; off: never)")
    parser.add_argument("--min-track-length", type=_positive_int,
                        help="shorter tracks are left out of the results (default: 5)")
    parser.add_argument("--changepoints", choices=("auto", "single", "multiple", "none"),
                        help="changepoint detection for multi-state models (default: auto)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                        help="where the model runs, and on a CUDA GPU also the spot detection and fits "
                             "(default: auto, the GPU when torch sees one)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spt-diffusion`` (subcommands simulate, track, estimate, calibrate, train, benchmark)."""
    parser = _Parser(
        prog=PROG,
        description="Single-particle tracking and diffusion-tensor estimation of fluorescence movies.",
        epilog="User errors print one line and exit 2 (before any computation where they concern the outputs); "
        "Ctrl-C exits 130, SIGTERM 143, neither leaving a partial result set. Set SPT_DIFFUSION_DEBUG=1 for a "
        "traceback.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sim = sub.add_parser(
        "simulate",
        help="simulate a movie with ground truth",
        description="Simulate a camera movie of diffusing particles (standard acquisition of "
        "docs/protocols.md unless changed) and write OUT.tif plus OUT_truth_tracks.csv, "
        "OUT_truth_summary.csv and OUT_truth_meta.json.",
    )
    sim.add_argument("out", metavar="OUT.tif", help="output movie")
    sim.add_argument("--model", choices=movie_model_names(), default="aniso",
                     help="motion model (default: aniso)")
    sim.add_argument("--frames", type=_frame_count, default=200, help="number of frames (default: 200)")
    sim.add_argument("--particles", type=_non_negative_int, default=30,
                     help="mean number of particles in the field (default: 30)")
    sim.add_argument("--size", type=_field_size, default=(128, 128), metavar="PX",
                     help="field size in pixels: PX (square) or HEIGHTxWIDTH (default: 128)")
    sim.add_argument("--pixel-size-nm", type=_positive_float, help="pixel size in nm (default: 100)")
    sim.add_argument("--frame-interval-s", type=_positive_float, help="frame interval in s (default: 0.01)")
    sim.add_argument("--psf-sigma-nm", type=_positive_float, help="PSF sigma in nm (default: 100)")
    sim.add_argument("--background-photons", type=float,
                     help="background photons per pixel per frame (default: 10)")
    level = sim.add_mutually_exclusive_group()
    level.add_argument("--snr", type=_positive_float,
                       help="static-particle SNR (peak pixel signal / background std); sets the photons")
    level.add_argument("--photons", type=_positive_float, help="signal photons per frame (default: 1000)")
    sim.add_argument("--seed", type=_non_negative_int, help="random seed (default: random, printed)")
    sim.add_argument("--compress", action="store_true", help="deflate-compress the TIFF (smaller file)")
    sim.add_argument("--overwrite", action="store_true", help="replace existing output files")
    sim.set_defaults(func=_cmd_simulate)

    trk = sub.add_parser(
        "track",
        help="track particles and estimate their diffusion tensors",
        description="Detect, link and estimate every track of MOVIE.tif; writes PREFIX_tracks.csv, "
        "PREFIX_summary.csv and PREFIX_meta.json (last, with the tables' SHA-256). Pixel size and frame interval "
        "come from the TIFF metadata (ImageJ or OME) unless given here.",
    )
    trk.add_argument("movie", nargs="+", metavar="MOVIE.tif", help="input movie (T, Y, X); several movies, a folder "
                     "or a quoted glob ('data/*.tif') run a batch into --out FOLDER (docs/batch.md)")
    _add_estimation_options(trk)
    trk.add_argument("--threshold-snr", type=_positive_float,
                     help="detection threshold in units of the filtered image's noise (default: 5)")
    trk.add_argument("--max-d", dest="max_D_um2_s", type=_positive_float, metavar="D_UM2_S",
                     help="largest expected D in um^2/s; sets the linking search range (default: 6)")
    trk.add_argument("--memory-frames", type=_non_negative_int,
                     help="frames a particle may vanish and still be linked (default: 2)")
    trk.add_argument("--nearest-neighbour-links", dest="motion_linking", action="store_false", default=None,
                     help="keep trackpy's nearest-neighbour links (default: relink them with each particle's own "
                          "diffusivity, so a slow particle is not handed a fast one's steps)")
    trk.add_argument("--keep-encounters", dest="split_encounters", action="store_false", default=None,
                     help="do not cut tracks where two particles came close enough to swap identities "
                          "(default: cut them, so each track holds one particle)")
    trk.add_argument("--chunk-frames", type=_chunk_frames, metavar="N",
                     help="long movies: detect N frames at a time and keep the localizations on disk (in TMPDIR) "
                          "until needed; same results, bounded memory (default: 1000 above 4000 frames; 0: never)")
    trk.add_argument("--out", metavar="PREFIX", help="output prefix (default: the movie path without .tif); "
                     "a folder ending in / writes into it (created if missing), the files named after the movie")
    trk.add_argument("--overwrite", action="store_true", help="replace existing output files (a batch: run every "
                     "movie, even those whose results are complete for the same settings and model)")
    trk.add_argument("--workers", type=_positive_int, help="batch: a local Dask cluster of N worker processes "
                     "(default: 1)")
    trk.add_argument("--scheduler", metavar="ADDRESS", help="batch: run on the dask.distributed cluster of this "
                     "scheduler (tcp://host:8786)")
    _cli_estimate.add_result_file_options(trk)
    trk.set_defaults(func=_cmd_track)

    est = sub.add_parser("estimate", help="estimate the tensors of tracks linked by another tool (TrackMate, trackpy)",
                         description="Estimate every track of FILE on MOVIE.tif (track ids kept), skipping detection "
                         "and linking; writes PREFIX_tracks.csv, PREFIX_summary.csv and PREFIX_meta.json.")
    est.add_argument("movie", metavar="MOVIE.tif", help="input movie (T, Y, X)")
    _cli_estimate.add_tracks_options(est)
    _add_estimation_options(est)
    _cli_estimate.add_result_file_options(est)
    est.add_argument("--out", metavar="PREFIX", help="output prefix (default: the movie path without .tif)")
    est.add_argument("--overwrite", action="store_true", help="replace existing output files")
    est.set_defaults(func=_cmd_track, workers=None, scheduler=None)  # track's batch options do not apply

    cal = _cli_calibrate.add_calibrate_parser(sub)
    cal.set_defaults(func=_cmd_calibrate)

    trn = sub.add_parser("train", help="train a model on simulated data",
                         description="Train a cross-transformer model on tracks simulated through the pipeline's "
                         "spot path and the tracking code's patch path, and export it as a TorchScript checkpoint "
                         "with its card; the run folder keeps the settings as train_config.json.")
    add_train_arguments(trn)
    trn.set_defaults(func=_cmd_train)

    bench = sub.add_parser(
        "benchmark",
        help="run the benchmark scripts in benchmarks/",
        description="Run benchmarks/bench_NAME.py of this package's source checkout (all of them without NAME; "
        "never ./benchmarks of the current folder), or the script at a path NAME ending in .py; "
        "e.g. accuracy, tracking, speed, simulator; each writes its report under benchmarks/reports/. "
        "Arguments after NAME go to the script.",
    )
    bench.add_argument("name", nargs="?", metavar="NAME", help="benchmark name (bench_NAME.py)")
    bench.add_argument("--quick", action="store_true", help="a short run that checks the script")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="further arguments for the script")
    bench.set_defaults(func=_cmd_benchmark)
    return parser


# ---------------------------------------------------------------------- main
_USER_ERRORS = (SptDiffusionError, ValueError, OSError)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, InputError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``spt-diffusion`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    if getattr(args, "func", None) is None:
        print(f"{PROG}: error: choose a command: simulate, track, estimate, calibrate, train or benchmark "
              f"(see '{PROG} --help')", file=sys.stderr)
        return EXIT_USAGE
    debug = bool(os.environ.get("SPT_DIFFUSION_DEBUG"))
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return int(args.func(args, argv) or 0)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        print(f"{PROG}: {_interrupted_line(exc)}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED
    except _USER_ERRORS as exc:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _interrupted_line(exc: KeyboardInterrupt) -> str:
    """The one line that ends a run stopped by SIGINT or SIGTERM."""
    what = "terminated" if isinstance(exc, _Terminated) else "interrupted"
    written = getattr(exc, "files_written", None)
    if written:  # the signal came while a file set was renamed into place: held back until it was complete
        return f"{what} after writing {', '.join(str(p) for p in written)} (complete)"
    return f"{what}; no output file was written or changed"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
