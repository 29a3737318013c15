"""napari-spt-diffusion: single-particle tracking and diffusion-tensor estimation.

Headless library (no Qt) plus a CLI (``spt-diffusion``) and a napari plugin
(``_napari/``). See docs/architecture.md in the repository for the data flow.
"""

from .acquisition import Acquisition, AcquisitionError
from .results import SUMMARY_COLUMNS, TRACKS_COLUMNS, Results

__version__ = "0.1.0"

__all__ = ["Acquisition", "AcquisitionError", "Results", "TRACKS_COLUMNS", "SUMMARY_COLUMNS", "__version__"]
