"""Uneven illumination and photobleaching for the foreign-optics renderer.

Real widefield, TIRF and HILO movies are lit by a Gaussian beam: the spots and the fluorescent
background are brighter in the middle of the field than at its corners. And the dye bleaches: both
fade over the movie. The training renderer draws neither, so a movie with them checks that the
tool's single values of signal and background (calibration, detection thresholds, the models'
acquisition) hold up when the truth varies over the field and over time.

Model (written from the description above; shares no code with :mod:`napari_spt_diffusion.simulation`):

* relative excitation at pixel position ``(y, x)`` (px): ``exp(-r^2 / (2 w^2))`` with ``r`` the
  distance to the field's centre and ``w`` such that the field's corners get ``corner_relative``;
* relative brightness of frame ``t``: ``2^(-t / bleach_half_life_frames)``, times ``1 + flicker_sd z_t``
  with independent standard normal ``z_t`` (a laser's or lamp's power from frame to frame).

A particle's photons in a sub-step and the background photons of a pixel in a frame are the scene's
values times both factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ForeignIllumination"]


@dataclass(frozen=True)
class ForeignIllumination:
    """A Gaussian excitation beam centred on the field, and exponential bleaching.

    Attributes
    ----------
    corner_relative
        Excitation at the field's corners over that at its centre, in ``(0, 1]`` (1: flat).
    bleach_half_life_frames
        Frames over which spots and background lose half their brightness (``None``: no bleaching).
    flicker_sd
        Relative standard deviation of the excitation from frame to frame (0: steady).
    """

    corner_relative: float = 1.0
    bleach_half_life_frames: float | None = None
    flicker_sd: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.corner_relative <= 1.0:
            raise ValueError(f"corner_relative must lie in (0, 1], got {self.corner_relative}")
        if self.bleach_half_life_frames is not None and not self.bleach_half_life_frames > 0:
            raise ValueError(f"bleach_half_life_frames must be positive, got {self.bleach_half_life_frames}")
        if not 0.0 <= self.flicker_sd < 0.2:
            raise ValueError(f"flicker_sd must lie in [0, 0.2), got {self.flicker_sd}")

    @property
    def flat(self) -> bool:
        """Whether the illumination is even and nothing bleaches."""
        return self.corner_relative == 1.0 and self.bleach_half_life_frames is None and self.flicker_sd == 0.0

    def excitation(self, y_px: np.ndarray, x_px: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
        """Relative excitation (1 at the field's centre) at positions ``y_px, x_px`` (px, any shape)."""
        ny, nx = shape_yx
        cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
        r2 = (np.asarray(y_px, float) - cy) ** 2 + (np.asarray(x_px, float) - cx) ** 2
        if self.corner_relative == 1.0:
            return np.ones_like(r2)
        corner2 = cy ** 2 + cx ** 2
        return np.power(self.corner_relative, r2 / corner2)  # exp(-r^2 / 2 w^2), corner at corner_relative

    def field(self, shape_yx: tuple[int, int]) -> np.ndarray:
        """``(Y, X)`` relative excitation at the pixel centres."""
        yy, xx = np.mgrid[0:shape_yx[0], 0:shape_yx[1]]
        return self.excitation(yy, xx, shape_yx)

    def power(self, n_frames: int, rng: np.random.Generator) -> np.ndarray:
        """``(n_frames,)`` relative excitation of each frame from the flicker (ones, drawing nothing from ``rng``,
        when it is steady)."""
        if self.flicker_sd == 0.0:
            return np.ones(n_frames)
        return 1.0 + self.flicker_sd * rng.standard_normal(n_frames)

    def fade(self, frame: int | np.ndarray) -> np.ndarray | float:
        """Relative brightness of frame(s) ``frame`` from bleaching (1 at frame 0)."""
        if self.bleach_half_life_frames is None:
            return np.ones_like(np.asarray(frame, float)) if np.ndim(frame) else 1.0
        return np.power(0.5, np.asarray(frame, float) / self.bleach_half_life_frames)
