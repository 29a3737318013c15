"""``spt-diffusion calibrate MOVIE.tif``: measure the acquisition from a movie, print it, write it as JSON.

The same measurement ``track`` makes for every value the file and the options do not give
(:func:`~napari_spt_diffusion.calibration.calibrate_movie`): camera gain, offset and type,
background, PSF width and shape, signal photons, each with its uncertainty and the way it was
measured. The table goes to the terminal; the JSON file (``--out``, default
``MOVIE_calibration.json`` beside the movie) holds the measured values (``acquisition_measured``,
as in a result set's ``_meta.json``), the acquisition ``track`` would use with them
(``acquisition``), and what was told. An existing file is replaced only with ``--overwrite``,
and checked before any work; the file is written atomically.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._cli_types import _finite_float, _non_negative_float, _positive_float, _positive_int

__all__ = ["add_calibrate_parser", "cmd_calibrate", "calibration_path"]

_GIVEN_OPTIONS = {"psf_sigma_nm": "psf_sigma_nm", "signal_photons": "photons", "offset_adu": "offset_adu",
                  "gain_adu_per_e": "gain_adu_per_e", "background_photons": "background_photons",
                  "read_noise_e": "read_noise_e"}


def add_calibrate_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``calibrate`` subcommand's parser (its ``func`` is :func:`cmd_calibrate`)."""
    cal = sub.add_parser(
        "calibrate", help="measure camera, background, PSF and signal from a movie",
        description="Measure from MOVIE.tif what track measures when neither the file nor the options give it: "
                    "camera gain, offset and type (sCMOS/CCD or EMCCD), background photons, PSF width and shape, "
                    "signal photons, each with its uncertainty. Prints a table and writes JSON.")
    cal.add_argument("movie", metavar="MOVIE.tif", help="input movie (T, Y, X)")
    cal.add_argument("--pixel-size-nm", type=_positive_float, help="pixel size in nm (overrides the file)")
    cal.add_argument("--frame-interval-s", type=_positive_float, help="frame interval in s (overrides the file)")
    cal.add_argument("--read-noise-e", type=_non_negative_float,
                     help="camera read noise in e- rms assumed for an sCMOS/CCD (default 1.5; its 0-3 e- range is in "
                          "the gain's uncertainty)")
    cal.add_argument("--psf-sigma-nm", type=_positive_float, help="PSF sigma in nm: given, not measured")
    cal.add_argument("--photons", type=_positive_float, help="signal photons per frame: given, not measured")
    cal.add_argument("--offset-adu", type=_finite_float, help="camera offset in ADU: given (with --gain-adu-per-e "
                     "the camera is not measured)")
    cal.add_argument("--gain-adu-per-e", type=_positive_float, help="camera gain in ADU per photo-electron: given")
    cal.add_argument("--background-photons", type=_non_negative_float,
                     help="background photons per pixel per frame: given, not measured")
    cal.add_argument("--frames", type=_frames_read, default=None,
                     help="frames read at most, 10 or more (default 120: all of a shorter movie, else blocks of 12 "
                          "consecutive frames spread over it)")
    cal.add_argument("--out", metavar="FILE.json", help="output file (default: MOVIE_calibration.json)")
    cal.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    cal.set_defaults(func=cmd_calibrate)
    return cal


def _frames_read(text: str) -> int:
    """``--frames``: a whole number of at least 10 (the camera needs 10 background frames per pixel)."""
    try:
        value = int(text)
    except ValueError:
        return _positive_int(text)  # its own message for what is not a whole number
    if value < 10:
        raise argparse.ArgumentTypeError(f"at least 10 frames are needed to measure the camera, got {value}")
    return value


def calibration_path(movie_path: Path, out: str | None) -> Path:
    """The JSON file of ``calibrate``: ``out``, or the movie's path with ``_calibration.json``."""
    if out:
        return Path(out)
    name = movie_path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
            break
    return movie_path.with_name(f"{name}_calibration.json")


def _check_not_the_movie(out: Path, movie_path: Path) -> None:
    """Refuse an output that is the movie, or lies inside a movie folder (OME-Zarr)."""
    from .io import InputError

    target, movie = out.resolve(), movie_path.resolve()
    if target == movie or movie in target.parents:
        raise InputError(f"--out {out} would overwrite the movie {movie_path}; choose another file")


def _rows(calibration: Any, used: Any, given: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Table rows ``(quantity, measured, uncertainty, used, how)``."""
    from .calibration import format_uncertainty

    rows = []
    for key, m in calibration.values.items():
        rows.append((key, f"{m.value:.4g} {m.unit}", format_uncertainty(m.uncertainty, "+- "),
                     f"{getattr(used, key):.4g}", m.method))
    for key, value in given.items():
        rows.append((key, "-", "-", f"{value:.4g}", "given"))
    for quantity, value, spread, how in calibration.table()[len(calibration.values):]:
        rows.append((quantity, value, spread, "", how))
    return rows


def _print_table(rows: list[tuple[str, ...]], say: Callable[[str], None]) -> None:
    header = ("quantity", "measured", "uncertainty", "used", "how")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        say("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])


def cmd_calibrate(args: argparse.Namespace, argv: Sequence[str], *, say: Callable[[str], None] = print,
                  check_targets: Callable[[Sequence[Path], bool], None] | None = None) -> int:
    """Run ``calibrate``: check the output, read the movie, measure, write the JSON, print the table.

    The movie is checked as ``track`` checks it (units; a scaled float movie). A movie written by
    this package stores its acquisition: ``track`` uses that and measures nothing, so its
    ``acquisition`` here is the stored one and the measurement is shown for comparison. Nothing
    measurable (too few frames or too little background, no spot) is an error.
    """
    from . import plausibility
    from .calibration import CALIBRATED_FIELDS, CalibrationError, calibrate_movie, fields_to_measure
    from .io import read_movie
    from .io._atomic import atomic_write_json

    given = {name: getattr(args, option) for name, option in _GIVEN_OPTIONS.items()
             if getattr(args, option) is not None}
    movie = read_movie(args.movie)
    try:
        out = calibration_path(movie.path, args.out)
        _check_not_the_movie(out, movie.path)
        if check_targets is not None:
            check_targets([out], args.overwrite)
        elif out.exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        told = movie.acquisition(pixel_size_nm=args.pixel_size_nm, frame_interval_s=args.frame_interval_s, **given)
        plausibility.check_units(told, {name: "given" for name in given})
        measured_given = set(CALIBRATED_FIELDS) & set(given)
        measure = fields_to_measure(measured_given)
        plausibility.check_scaled_float(plausibility.sample_frames(movie.data), plausibility.movie_dtype(movie.data),
                                        told, measure)
        kwargs = {} if args.frames is None else {"max_frames": int(args.frames)}
        known = measured_given | ({"read_noise_e"} & set(given))  # a read noise given is known, not assumed
        calibration = calibrate_movie(movie.data, told, given=known, **kwargs)
        if not calibration.values:
            raise CalibrationError("nothing could be measured from the movie: "
                                   + "; ".join(calibration.notes or ("no background and no bright isolated spot",)))
        stored = bool(movie.acquisition_dict)
        used = told if stored else calibration.apply(told, measured_given)  # as track applies it
    finally:
        movie.close()
    record = {"movie": str(movie.path), "command": shlex.join(["spt-diffusion", *argv]),
              "acquisition_told": told.to_dict(), "given": sorted(given), "acquisition_stored_in_file": stored,
              "acquisition_measured": calibration.to_dict(), "acquisition": used.to_dict()}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record, allow_nan=False)  # before the table: a closed pipe must not lose the file
    say(f"{movie.path.name}: {movie.n_frames} frames of {movie.shape[1]} x {movie.shape[2]} px; pixel size "
        f"{told.pixel_size_nm:g} nm, frame interval {told.frame_interval_s:g} s; {calibration.n_frames} frames and "
        f"{calibration.n_spots} bright isolated spots used")
    _print_table(_rows(calibration, used, {k: v for k, v in given.items() if k in CALIBRATED_FIELDS}), say)
    if stored:
        say("note: this movie stores its acquisition (written by this package): track uses the stored values "
            "(column 'used') and measures nothing; the measured ones are for comparison")
    for note in calibration.notes:
        say(f"note: {note}")
    say(f"wrote {out}")
    return 0
