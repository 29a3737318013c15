"""Many movies at once: ``spt-diffusion track`` with several movies, a folder or a glob.

Dask runs the movies (``dask.distributed``: a local cluster of worker processes, or an
existing cluster given by its scheduler address); this module only plans the work,
submits one task per movie and gathers the outcomes. Each task calls the library
(:func:`~.pipeline.track_and_estimate`, then :func:`~.io.write_results`) exactly as the
single-movie command does, so a movie gives the same tables alone or in a batch.

* :func:`expand_inputs`: movie files, folders (their ``.tif``/``.tiff`` files) and glob
  patterns -> a sorted list of movie paths without repeats.
* :func:`plan_batch`: one result prefix per movie inside the output folder
  (``OUT/<movie name without .tif>``), refusing two movies of one name.
* :func:`completed_set`: whether a movie's result set is complete (checksums verified by
  :func:`~.io.read_results`) and was made with the same pipeline settings, acquisition
  options and model checksum; such a movie is skipped on a rerun.
* :func:`run_movie`: the task of one movie (runs on a worker); any failure is caught and
  returned as a ``failed`` :class:`MovieOutcome`, so one bad movie does not stop the others.
* :func:`run_batch`: the whole job; writes ``OUT/combined_summary.csv`` (every movie's
  summary with a leading ``movie`` column) and ``OUT/batch_report.json`` plus
  ``OUT/batch_report.csv`` (one row per movie: status, tracks, seconds, error), each
  atomically (:mod:`.io._atomic`).

Dask is imported only here, and only when a batch runs (not by ``spt-diffusion --help``
or a single-movie run). Worker processes use one torch thread each (``torch_threads``).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .calibration import fields_to_measure
from .errors import SptDiffusionError
from .io import InputError, read_movie, read_results, results_paths, write_results
from .io._atomic import atomic_path, atomic_write_json, check_writable_folder
from .io.csv_text import FLOAT_FORMAT
from .pipeline import Settings
from .plausibility import check_units
from .results import SUMMARY_COLUMNS

__all__ = [
    "BatchOptions",
    "MovieJob",
    "MovieOutcome",
    "BatchReport",
    "EXIT_SOME_FAILED",
    "COMBINED_SUMMARY",
    "REPORT_JSON",
    "REPORT_CSV",
    "expand_inputs",
    "plan_batch",
    "completed_set",
    "run_movie",
    "run_batch",
]

#: Exit status of ``spt-diffusion track`` when some movies of a batch failed (the others were written).
EXIT_SOME_FAILED = 1
COMBINED_SUMMARY = "combined_summary.csv"
REPORT_JSON = "batch_report.json"
REPORT_CSV = "batch_report.csv"
MOVIE_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class BatchOptions:
    """What every movie of a batch is tracked with (the options of ``spt-diffusion track``).

    Attributes
    ----------
    settings
        Pipeline settings; ``settings.measure`` is decided per movie (the fields that
        neither ``given`` nor the file give, when ``calibrate``).
    pixel_size_nm, frame_interval_s
        Given pixel size (nm) and frame interval (s), overriding the files; ``None``: from each file.
    given
        Other given acquisition fields (``psf_sigma_nm``, ``signal_photons``, ``offset_adu``,
        ``gain_adu_per_e``, ``background_photons``, ``read_noise_e``), in the units of
        :class:`~.acquisition.Acquisition`.
    calibrate
        Measure from each movie what neither the options nor the file give.
    command
        The command line, recorded in each result set's ``_meta.json``.
    torch_threads
        Torch threads per task (one per worker process by default).
    """

    settings: Settings = field(default_factory=Settings)
    pixel_size_nm: float | None = None
    frame_interval_s: float | None = None
    given: dict[str, float] = field(default_factory=dict)
    calibrate: bool = True
    command: str = ""
    torch_threads: int = 1

    def acquisition_options(self) -> dict[str, Any]:
        """The options that change the acquisition, as recorded in ``meta['batch']`` (plain JSON)."""
        return _plain({"pixel_size_nm": self.pixel_size_nm, "frame_interval_s": self.frame_interval_s,
                       "given": dict(sorted(self.given.items())), "calibrate": bool(self.calibrate)})


@dataclass(frozen=True)
class MovieJob:
    """One movie of a batch: its file, its result prefix and its name (the ``movie`` column)."""

    movie: Path
    prefix: Path
    name: str


@dataclass
class MovieOutcome:
    """What became of one movie: ``status`` is ``done``, ``skipped``, ``failed`` (or ``cancelled``:
    the batch was interrupted before it ran).

    ``seconds`` is the wall time of its task (s); ``error`` the one-line reason of a failure;
    ``note`` why it ran or was skipped; ``worker`` the Dask worker that ran it.
    """

    name: str
    movie: str
    prefix: str
    status: str
    n_tracks: int | None = None
    seconds: float = 0.0
    error: str | None = None
    note: str = ""
    worker: str | None = None


@dataclass
class BatchReport:
    """The outcome of :func:`run_batch`: per-movie outcomes and the files written."""

    outcomes: list[MovieOutcome]
    wall_s: float
    cluster: str
    files: list[Path]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_status(self) -> int:
        """0 when no movie failed, else :data:`EXIT_SOME_FAILED`."""
        return EXIT_SOME_FAILED if self.count("failed") else 0


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples -> lists), for comparisons with a sidecar."""
    return json.loads(json.dumps(value))


# ------------------------------------------------------------------- planning
def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Movie paths from files, folders (their ``.tif``/``.tiff`` files, not recursive) and glob
    patterns (``**`` recurses); sorted per input, repeats dropped.

    Raises :class:`~.io.InputError` for a path that does not exist, a folder or pattern
    without movies, or no movie at all.
    """
    movies: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MOVIE_SUFFIXES)
            if not found:
                raise InputError(f"the folder {path} holds no .tif movie")
        elif path.exists():
            found = [path]
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in MOVIE_SUFFIXES)
            if not found:
                raise InputError(f"no .tif movie matches {text}")
        else:
            raise InputError(f"{path} does not exist")
        movies += found
    seen: set[Path] = set()
    unique = []
    for movie in movies:
        key = movie.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(movie)
    return unique


def plan_batch(movies: Sequence[Path], out: str | os.PathLike[str]) -> list[MovieJob]:
    """One :class:`MovieJob` per movie, its results at ``OUT/<name>`` (the file name without
    ``.tif``). Refuses (:class:`~.io.InputError`) an output folder that is a file or cannot be
    created, two movies of the same name, and a movie named like the combined summary."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {out}: {folder} is a file; a batch writes into a folder")
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot create folder {folder}: {ancestor} is not a folder")
    check_writable_folder(ancestor)
    jobs: dict[str, MovieJob] = {}
    for movie in movies:
        name = movie.name[: -len(movie.suffix)] if movie.suffix else movie.name
        if name in jobs:
            raise InputError(f"two movies are named {name}: {jobs[name].movie} and {movie}; their results would "
                             f"share {folder / name}_*; rename one or run them into different --out folders")
        if f"{name}_summary.csv" == COMBINED_SUMMARY:
            raise InputError(f"a movie named {movie.name} would overwrite the batch's {COMBINED_SUMMARY}; rename it")
        jobs[name] = MovieJob(movie=Path(movie).absolute(), prefix=(folder / name).absolute(), name=name)
    return list(jobs.values())


def _movie_settings(options: BatchOptions, movie: Any) -> Settings:
    """The settings a movie is tracked with: those of the batch, with what to measure from it
    (as the single-movie command decides: nothing for a movie that stores its acquisition)."""
    measure = fields_to_measure(options.given) if options.calibrate and not movie.acquisition_dict else ()
    return dataclasses.replace(options.settings, measure=measure)


#: Settings added after results were first written whose default changes the results: a sidecar without
#: the key was made as with this value (``motion_linking``: trackpy's links were used as they are).
_VALUE_BEFORE_THE_SETTING: dict[str, Any] = {"motion_linking": False, "rescale_model": False,
                                             "model_range_check": False}


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """Settings read from a sidecar, with every setting added since it was written: the value its results
    were made with (:data:`_VALUE_BEFORE_THE_SETTING`), else the default."""
    defaults = {**_plain(Settings().to_dict()), **_VALUE_BEFORE_THE_SETTING}
    return {**{k: v for k, v in defaults.items() if k not in stored}, **stored}


def _model_sha256(model: str) -> str | None:
    from .estimation.checkpoint import read_card

    return read_card(model).get("sha256")


def _made_before_the_fallback(meta: dict[str, Any], settings: Any) -> bool:
    """A set where the bundled model asked for ran, written before 2026-12-07: since then a model the guard rejects
    gives way to its model for any microscope (``estimation_fallback.py``; such sets carry ``guard_fallback``) and
    ``aniso`` and ``twostate`` are out of range under 0.7 x their training photons (``MOTION_TOLERANCES``): a rerun
    may report another model."""
    from .estimation.model_choice import ALTERNATIVES

    asked = str((meta.get("settings") or {}).get("model", meta.get("model")))
    applies = settings.model_switch and not settings.trust_model and asked in ALTERNATIVES
    ran_as_asked = not meta.get("model_switch") and str(meta.get("model")) == asked
    return bool(applies and ran_as_asked and "guard_fallback" not in meta)


def completed_set(job: MovieJob, options: BatchOptions, model_sha256: str | None) -> str | None:
    """Why ``job`` must run (``None`` when its results are complete for the same work).

    Complete: :func:`~.io.read_results` verifies the set (all three files, checksums), and
    its ``_meta.json`` records the same ``settings`` (as the pipeline records them for this
    movie), ``model_sha256`` and acquisition options (``meta['batch']``) as this run.
    """
    if not any(p.exists() for p in results_paths(job.prefix).values()):
        return "new"
    try:
        meta = read_results(job.prefix, verify=True).meta
    except SptDiffusionError as exc:
        return f"incomplete result set replaced ({exc})"
    try:
        with read_movie(job.movie) as movie:
            expected = _movie_settings(options, movie).to_dict()
    except (SptDiffusionError, OSError, ValueError):
        return "movie unreadable"
    switch = meta.get("model_switch") or {}
    if switch.get("asked") == options.settings.model and meta.get("model"):
        # the bundled model for any microscope ran instead (estimation/model_choice.py): compare with it
        try:
            model_sha256 = _model_sha256(str(meta["model"]))
        except (SptDiffusionError, OSError, ValueError):
            return "another model: result set replaced"
    if meta.get("model_sha256") != model_sha256:
        return "another model: result set replaced"
    if _made_before_the_fallback(meta, options.settings):
        return "made before the guard's fallback to the model for any microscope: result set replaced"
    if _with_defaults(meta.get("settings") or {}) != _plain(expected):
        return "other settings: result set replaced"
    if (meta.get("batch") or {}).get("acquisition_options") != options.acquisition_options():
        return "other acquisition options: result set replaced"
    return None


# ---------------------------------------------------------------- one movie
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, SptDiffusionError) else f"{type(exc).__name__}: {text}"


def run_movie(job: MovieJob, options: BatchOptions, note: str = "") -> MovieOutcome:
    """Track one movie and write its result set (a Dask task; runs on a worker).

    Never raises for a problem of the movie: the outcome is ``failed`` with a one-line
    ``error``, and nothing is written for it (result sets are written all or nothing).
    """
    from .notices import WarningSink
    from .pipeline import track_and_estimate

    start = time.perf_counter()
    outcome = MovieOutcome(name=job.name, movie=str(job.movie), prefix=str(job.prefix), status="failed", note=note)
    outcome.worker = _worker_address()
    try:
        import torch

        torch.set_num_threads(max(1, int(options.torch_threads)))
        with read_movie(job.movie) as movie:
            acquisition = movie.acquisition(pixel_size_nm=options.pixel_size_nm,
                                            frame_interval_s=options.frame_interval_s, **options.given)
            check_units(acquisition)
            settings = _movie_settings(options, movie)
            with WarningSink():  # warnings go to meta['warnings'] and the report, not to the worker's log
                results = track_and_estimate(movie.data, acquisition, settings)
        if results.n_tracks == 0:
            raise InputError("no particles were tracked; check the acquisition (PSF sigma, photons) and the "
                             "detection threshold")
        results.meta = dict(results.meta or {})
        results.meta.setdefault("movie", str(job.movie))
        results.meta["command"] = options.command
        results.meta["batch"] = {"acquisition_options": options.acquisition_options()}
        job.prefix.parent.mkdir(parents=True, exist_ok=True)
        write_results(job.prefix, results, overwrite=True)
        outcome.status, outcome.n_tracks = "done", int(results.n_tracks)
    except Exception as exc:  # one movie's failure, whatever it is, is reported and does not stop the others
        outcome.error = _one_line(exc)
    outcome.seconds = round(time.perf_counter() - start, 3)
    return outcome


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


# ---------------------------------------------------------------- the batch
def _start_client(workers: int | None, scheduler: str | None, processes: bool) -> tuple[Any, str]:
    """A ``distributed.Client``: of the cluster at ``scheduler``, or of a new local cluster
    with ``workers`` single-threaded workers (processes unless ``processes=False``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a runtime dependency
        raise InputError("the batch mode needs dask.distributed: pip install distributed") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({_one_line(exc)})") from None
        return client, f"Dask cluster at {scheduler}"
    n = workers or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                           dashboard_address=None, silence_logs=40)
    kind = "processes" if processes else "threads"
    return Client(cluster), f"local Dask cluster, {n} worker {kind} x 1 thread"


def run_batch(
    jobs: Sequence[MovieJob],
    options: BatchOptions,
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    processes: bool = True,
    say: Callable[[str], Any] = print,
) -> BatchReport:
    """Run every movie of ``jobs`` that is not complete already, then write the combined
    summary and the batch report into ``out``.

    Parameters
    ----------
    jobs
        From :func:`plan_batch`.
    options
        How every movie is tracked.
    out
        The output folder (created if missing).
    workers, scheduler
        A local cluster of ``workers`` single-threaded workers (default 1), or the address
        of an existing ``dask.distributed`` scheduler (``tcp://host:8786``).
    overwrite
        Run every movie, even those whose results are complete for the same settings.
    processes
        Local workers as processes (default) or as threads of this process.
    say
        Called with one line per event (a movie skipped, done or failed).
    """
    start = time.perf_counter()
    model_sha256 = _model_sha256(options.settings.model)  # a bad model name fails here, before any work
    outcomes: dict[str, MovieOutcome] = {}
    todo: list[tuple[MovieJob, str]] = []
    for job in jobs:
        reason = "--overwrite" if overwrite else completed_set(job, options, model_sha256)
        if reason is None:
            outcomes[job.name] = MovieOutcome(job.name, str(job.movie), str(job.prefix), "skipped",
                                              note="complete for the same settings and model")
            say(f"{job.name}: skipped (results complete for the same settings and model)")
        else:
            todo.append((job, reason))
            if reason != "new":
                say(f"{job.name}: to run again ({reason})")
    cluster = "none (every movie was complete)"
    if todo:
        client, cluster = _start_client(workers, scheduler, processes)
        say(f"{len(todo)} movie(s) to track on a {cluster}")
        try:
            _gather(client, todo, options, say, outcomes)
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM: report what was finished, then stop
            for job, _ in todo:
                outcomes.setdefault(job.name, MovieOutcome(job.name, str(job.movie), str(job.prefix), "cancelled",
                                                           note="the batch was interrupted"))
            extra = {"model_sha256": model_sha256, "cluster": cluster, "interrupted": True}
            exc.files_written = _write_batch_files(Path(out), jobs, [outcomes[j.name] for j in jobs], options, extra)
            raise
        finally:
            _close(client, scheduler)
    ordered = [outcomes[job.name] for job in jobs]
    wall_s = time.perf_counter() - start
    files = _write_batch_files(Path(out), jobs, ordered, options, {"model_sha256": model_sha256, "cluster": cluster,
                                                                   "wall_s": round(wall_s, 3)})
    return BatchReport(ordered, wall_s, cluster, files)


def _gather(client: Any, todo: Sequence[tuple[MovieJob, str]], options: BatchOptions,
            say: Callable[[str], Any], outcomes: dict[str, MovieOutcome]) -> None:
    """Submit one task per movie and put each outcome into ``outcomes`` as it arrives."""
    from distributed import as_completed

    futures = {}
    for job, reason in todo:
        future = client.submit(run_movie, job, options, reason, key=f"spt-track-{job.name}-{os.urandom(4).hex()}",
                               pure=False)
        futures[future] = job
    try:
        for future in as_completed(futures):
            job = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # the worker died (e.g. out of memory) or the task could not run
                outcome = MovieOutcome(job.name, str(job.movie), str(job.prefix), "failed", error=_one_line(exc))
            outcomes[job.name] = outcome
            if outcome.status == "done":
                say(f"{job.name}: {outcome.n_tracks} tracks in {outcome.seconds:.1f} s -> {job.prefix}_*")
            else:
                say(f"{job.name}: failed: {outcome.error}")
    except BaseException:
        client.cancel(list(futures))
        raise


def _close(client: Any, scheduler: str | None) -> None:
    cluster = None if scheduler else client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def _combined_summary(jobs: Sequence[MovieJob], outcomes: Sequence[MovieOutcome]) -> pd.DataFrame:
    tables = []
    for job, outcome in zip(jobs, outcomes):
        if outcome.status not in ("done", "skipped"):
            continue
        try:
            summary = read_results(job.prefix, verify=True).summary
        except SptDiffusionError as exc:  # changed under our feet: report it rather than mix sets
            outcome.status, outcome.error = "failed", _one_line(exc)
            continue
        tables.append(summary.assign(movie=job.name)[["movie", *summary.columns]])
    if not tables:
        return pd.DataFrame(columns=["movie", *SUMMARY_COLUMNS])
    return pd.concat(tables, ignore_index=True)


def _write_batch_files(folder: Path, jobs: Sequence[MovieJob], outcomes: Sequence[MovieOutcome],
                       options: BatchOptions, extra: dict[str, Any]) -> list[Path]:
    """Write ``combined_summary.csv``, ``batch_report.json`` and ``batch_report.csv`` (each atomically)."""
    from . import __version__

    folder.mkdir(parents=True, exist_ok=True)  # only now: a batch that could not start leaves nothing
    combined = _combined_summary(jobs, outcomes)
    paths = [folder / COMBINED_SUMMARY, folder / REPORT_JSON, folder / REPORT_CSV]
    with atomic_path(paths[0]) as tmp:
        combined.to_csv(tmp, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    rows = [dataclasses.asdict(o) for o in outcomes]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    if any(o.status == "cancelled" for o in outcomes):
        counts["cancelled"] = sum(o.status == "cancelled" for o in outcomes)
    report = {
        "software": "napari-spt-diffusion",
        "software_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": options.command,
        "counts": counts,
        "exit_status": EXIT_SOME_FAILED if counts["failed"] else 0,
        **extra,
        "settings": _plain(options.settings.to_dict()),
        "acquisition_options": options.acquisition_options(),
        "combined_summary": {"file": COMBINED_SUMMARY, "rows": int(len(combined))},
        "movies": rows,
    }
    atomic_write_json(paths[1], report)
    with atomic_path(paths[2]) as tmp:
        table = pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(MovieOutcome)])
        table.astype({"n_tracks": "Int64"}).to_csv(tmp, index=False, lineterminator="\n")
    return paths
