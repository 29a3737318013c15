"""Validation data made independently of the training renderer.

:mod:`.foreign_renderer` draws single-particle movies with its own physics (scalar Airy PSF
from NA and wavelength, per-pixel sCMOS camera maps, its own trajectory code). It shares no
code with :mod:`napari_spt_diffusion.simulation`, so the tool's features can be checked on
movies that the renderer used for training did not make (protocol "foreign optics",
``docs/protocols.md``).
"""

from __future__ import annotations

from .foreign_illumination import ForeignIllumination
from .foreign_renderer import (
    AIRY_SIGMA_FACTOR,
    EXTRA_CASES,
    FOREIGN_CASES,
    AiryPSF,
    ForeignCamera,
    ForeignMotion,
    ForeignMovie,
    ForeignOptics,
    ForeignScene,
    airy_sigma_equivalent_nm,
    foreign_case,
    render_foreign_movie,
    simulate_foreign_paths,
    write_imagej_tiff,
)

__all__ = [
    "AIRY_SIGMA_FACTOR",
    "EXTRA_CASES",
    "FOREIGN_CASES",
    "AiryPSF",
    "ForeignCamera",
    "ForeignIllumination",
    "ForeignMotion",
    "ForeignMovie",
    "ForeignOptics",
    "ForeignScene",
    "airy_sigma_equivalent_nm",
    "foreign_case",
    "render_foreign_movie",
    "simulate_foreign_paths",
    "write_imagej_tiff",
]
