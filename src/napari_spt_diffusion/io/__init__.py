"""Reading movies and writing results: TIFF in, CSV/JSON out, nothing half-written.

* :func:`read_movie` opens a TIFF movie ``(T, Y, X)`` without loading it: a
  ``numpy.memmap`` when the pixel data lie uncompressed and contiguous in the file,
  otherwise a :class:`LazyTiffFrames` reader that decodes frames on demand. The pixel
  size and frame interval come from ImageJ metadata (``XResolution`` + ``unit``,
  ``finterval``) or OME-XML (``PhysicalSizeX`` + unit, ``TimeIncrement``/``DeltaT``).
* :func:`write_movie` writes an ImageJ hyperstack (``uint16``, axes ``TYX``) calibrated
  the way ImageJ itself writes it: ``XResolution``/``YResolution`` in pixels per um,
  ``unit=um``, ``finterval`` in s; the full :class:`~.acquisition.Acquisition` travels
  in the ImageJ ``Info`` property as JSON.
* :func:`write_results` / :func:`read_results` handle the results contract
  (``<prefix>_tracks.csv``, ``<prefix>_summary.csv``, ``<prefix>_meta.json``).

Every write goes to a temporary file in the target's folder that is flushed to the disk
and renamed into place only once everything is written (``os.replace``, see
:mod:`._atomic`); an existing file is never replaced unless ``overwrite=True``.
Problems a user can fix raise :class:`InputError` with one sentence.

Modules: :mod:`.movie` (TIFF movies), :mod:`.tiff_metadata` (calibration in TIFF
metadata), :mod:`.results` (result and truth tables), :mod:`._atomic` (atomic writes).
"""

from ._atomic import check_outputs
from ._errors import InputError
from .movie import LazyTiffFrames, MovieFile, read_movie, sample_movie_path, write_movie
from .results import read_results, results_paths, simulation_paths, write_results, write_simulation

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
