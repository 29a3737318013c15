"""Physics simulator: trajectories, image formation, camera noise and full-field movies.

* :mod:`.trajectories` — sub-step Brownian trajectories with per-frame labels
  (seed-aniso, seed-binding, seed-twostate, k-state Markov switching).
* :mod:`.render` — pixel-integrated Gaussian PSF with motion blur, exact Poisson +
  Gaussian camera noise, SNR and Cramer-Rao helpers.
* :mod:`.movie` — full-field movies with births, deaths, blinking and ground truth in
  the results contract.

No Qt and no torch here; every random draw goes through an explicit
``numpy.random.Generator`` (or seed).
"""

from .movie import MOVIE_MODELS, MoviePlan, SimulatedMovie, iter_movie_frames, plan_movie, simulate_movie
from .render import (
    camera_image,
    camera_image_from_counts,
    expected_photons,
    localization_crlb_nm,
    peak_pixel_fraction,
    photons_to_adu,
    render_windows,
    sample_poisson,
    signal_photons_for_snr,
    static_snr,
)
from .trajectories import (
    D1_GRID_UM2_S,
    DiffusionState,
    SimulationError,
    Trajectories,
    simulate_anisotropic,
    simulate_binding,
    simulate_multistate,
    simulate_two_state,
)

__all__ = [
    "D1_GRID_UM2_S",
    "DiffusionState",
    "MOVIE_MODELS",
    "MoviePlan",
    "SimulatedMovie",
    "SimulationError",
    "Trajectories",
    "camera_image",
    "camera_image_from_counts",
    "expected_photons",
    "iter_movie_frames",
    "localization_crlb_nm",
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
