"""Departures of the rendered optics and camera from the ideal Gaussian PSF and sCMOS camera.

The training renderer (:mod:`.render`) draws a pixel-integrated Gaussian PSF. Real
microscopes differ: an Airy-type PSF carries part of its light in rings outside the
core, the PSF can be slightly elliptical (astigmatism, tilt) or defocused, and an
EMCCD camera doubles the variance of the shot noise. :class:`RenderOptics` describes
these departures so that models can be trained across them:

* ``axis_ratio``: the PSF sigma along y over the sigma along x, their geometric mean
  staying the acquisition's ``psf_sigma_px`` (axis-aligned; the training augmentation
  transposes patches, which covers the other axis);
* ``halo_fraction`` and ``halo_scale``: an Airy-like PSF as a core Gaussian plus a weak,
  wide Gaussian halo holding ``halo_fraction`` of the photons at ``halo_scale`` times the
  core sigma (a scalar Airy pattern holds 16 % of its light outside the first dark ring;
  defocus also moves light from the core into a wider skirt);
* ``airy``: the PSF is a scalar Airy pattern (:mod:`.airy`) of sigma-equivalent
  ``psf_sigma_px`` (0.21 lambda / NA), rings included, instead of Gaussian components
  (``axis_ratio`` and the halo are then not used);
* ``em_gain``: above 1, the camera is an EMCCD: each pixel's photo-electron count ``n``
  is multiplied in a gain register, modelled as ``Gamma(n, em_gain)`` electrons and
  divided by ``em_gain`` again, so the mean is kept and the variance doubles (excess
  noise factor 2) before the read noise, gain and offset are applied;
* ``pixel_gain_cv`` and ``pixel_offset_sd_e``: an sCMOS camera's fixed pattern, each pixel
  with its own gain and offset, static in the movie (:mod:`.fixed_pattern`; training
  windows only).

The independent test renderer of :mod:`napari_spt_diffusion.validation` computes a true
Airy pattern from NA and wavelength; the halo model here is only a training-time
approximation, checked against it in ``benchmarks/reports/foreign.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .trajectories import SimulationError

__all__ = ["RenderOptics", "IDEAL_OPTICS"]


@dataclass(frozen=True)
class RenderOptics:
    """Shape of the rendered PSF and kind of camera beyond the :class:`Acquisition`.

    Attributes
    ----------
    axis_ratio
        PSF sigma along y over the sigma along x (dimensionless, > 0; 1: round).
    halo_fraction
        Share of the photons in the wide halo component, in ``[0, 0.5]`` (0: pure Gaussian).
    halo_scale
        Sigma of the halo over the sigma of the core (dimensionless, >= 1).
    em_gain
        EMCCD electron-multiplying gain (>= 1; 1: no multiplication, an sCMOS/CCD camera).
    airy
        Render a scalar Airy PSF (:mod:`.airy`) instead of the Gaussian components.
    pixel_gain_cv
        Pixel-to-pixel standard deviation of the camera gain over its mean (dimensionless, in
        ``[0, 0.2]``; 0: a uniform camera).
    pixel_offset_sd_e
        Pixel-to-pixel standard deviation of the camera offset, in photo-electrons (``[0, 20]``).
    """

    axis_ratio: float = 1.0
    halo_fraction: float = 0.0
    halo_scale: float = 3.0
    em_gain: float = 1.0
    airy: bool = False
    pixel_gain_cv: float = 0.0
    pixel_offset_sd_e: float = 0.0

    def __post_init__(self) -> None:
        checks = (
            ("axis_ratio", self.axis_ratio, 0.2, 5.0),
            ("halo_fraction", self.halo_fraction, 0.0, 0.5),
            ("halo_scale", self.halo_scale, 1.0, 20.0),
            ("em_gain", self.em_gain, 1.0, 1e4),
            ("pixel_gain_cv", self.pixel_gain_cv, 0.0, 0.2),
            ("pixel_offset_sd_e", self.pixel_offset_sd_e, 0.0, 20.0),
        )
        for name, value, low, high in checks:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise SimulationError(f"{name} must be a number in [{low}, {high}], got {value!r}")

    @property
    def is_ideal(self) -> bool:
        """True for the round Gaussian PSF and a camera without excess noise."""
        return self == IDEAL_OPTICS

    @property
    def has_fixed_pattern(self) -> bool:
        """True when the camera has per-pixel gains or offsets (:mod:`.fixed_pattern`)."""
        return self.pixel_gain_cv > 0 or self.pixel_offset_sd_e > 0

    def components(self, sigma_px: float) -> list[tuple[float, float, float]]:
        """``(weight, sigma_y_px, sigma_x_px)`` of each Gaussian component of the PSF."""
        root = math.sqrt(self.axis_ratio)
        core = (1.0 - self.halo_fraction, sigma_px * root, sigma_px / root)
        if self.halo_fraction <= 0:
            return [core]
        return [core, (self.halo_fraction, core[1] * self.halo_scale, core[2] * self.halo_scale)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


#: The renderer's default: round pixel-integrated Gaussian PSF, no EMCCD excess noise.
IDEAL_OPTICS = RenderOptics()
