"""Physics simulator: trajectories, image formation, camera noise and full-field movies.

* :mod:`.trajectories` — sub-step Brownian trajectories with per-frame labels
  (seed-aniso, seed-binding, seed-twostate, k-state Markov switching).
* :mod:`.render` — pixel-integrated Gaussian PSF with motion blur, exact Poisson +
  Gaussian camera noise, SNR and Cramer-Rao helpers.
* :mod:`.movie` — full-field movies with births, deaths, blinking and ground truth in
  the results contract.
* :mod:`.motion_models` — the registry of motion models (names, output kinds,
  trajectory and particle-state functions, test seeds, descriptions).

No Qt and no torch here; every random draw goes through an explicit
``numpy.random.Generator`` (or seed).
"""

import importlib
from typing import Any

#: Public name -> submodule that defines it. The submodules are imported on first use, so
#: that importing :mod:`.motion_models` (the command line's parser does) stays light.
_EXPORTS = {
    **dict.fromkeys(("MOTION_MODELS", "MotionModel", "get_motion_model", "motion_model_names", "movie_model_names"),
                    "motion_models"),
    **dict.fromkeys(("MovieOptions", "MoviePlan", "SimulatedMovie", "iter_movie_frames", "plan_movie",
                     "simulate_movie"), "movie"),
    **dict.fromkeys(("camera_image", "camera_image_from_counts", "expected_photons", "localization_crlb_nm",
                     "peak_pixel_fraction", "photons_to_adu", "render_windows", "sample_poisson",
                     "signal_photons_for_snr", "static_snr"), "render"),
    **dict.fromkeys(("D1_GRID_UM2_S", "DiffusionState", "SimulationError", "Trajectories", "simulate_anisotropic",
                     "simulate_binding", "simulate_multistate", "simulate_two_state"), "trajectories"),
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "D1_GRID_UM2_S",
    "DiffusionState",
    "MOTION_MODELS",
    "MotionModel",
    "MovieOptions",
    "MoviePlan",
    "SimulatedMovie",
    "SimulationError",
    "Trajectories",
    "camera_image",
    "camera_image_from_counts",
    "expected_photons",
    "get_motion_model",
    "iter_movie_frames",
    "localization_crlb_nm",
    "motion_model_names",
    "movie_model_names",
    "peak_pixel_fraction",
    "photons_to_adu",
    "plan_movie",
    "render_windows",
    "sample_poisson",
    "signal_photons_for_snr",
    "simulate_anisotropic",
    "simulate_binding",
    "simulate_movie",
    "simulate_multistate",
    "simulate_two_state",
    "static_snr",
]
