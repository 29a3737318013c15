"""Reading movies and writing results: TIFF in, CSV/JSON out, nothing half-written."""

from .movie import (
    InputError,
    LazyTiffFrames,
    MovieFile,
    check_outputs,
    read_movie,
    read_results,
    results_paths,
    sample_movie_path,
    simulation_paths,
    write_movie,
    write_results,
    write_simulation,
)

__all__ = [
    "InputError",
    "MovieFile",
    "LazyTiffFrames",
    "read_movie",
    "write_movie",
    "write_results",
    "read_results",
    "write_simulation",
    "check_outputs",
    "results_paths",
    "simulation_paths",
    "sample_movie_path",
]
