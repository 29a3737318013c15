"""Ranges of acquisitions that training data can be drawn from (models for any microscope).

A model trained at one acquisition is biased at others (another PSF width, photon level or
exposure). With an :class:`AcquisitionRange`, the training set is made in small chunks,
each simulated with its own acquisition drawn from the range, so that one model learns
every microscope in it. The model is not told the acquisition: it reads the PSF width,
the brightness and the noise from its patches (they are normalised per track, so the
camera's gain and offset do not matter), and the displacements carry the motion.

Pixel size and frame interval stay those of the base acquisition: the model works in
px^2/frame, converted with the movie's own pixel size and frame interval at inference.

:data:`RANGES` names the ranges a ``TrainConfig`` can ask for (``acquisition_range``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..acquisition import Acquisition
from ..simulation.optics import IDEAL_OPTICS, RenderOptics

__all__ = ["AcquisitionRange", "RANGES", "get_range"]


@dataclass(frozen=True)
class AcquisitionRange:
    """Bounds of the acquisitions training chunks are drawn from.

    Attributes
    ----------
    psf_sigma_px
        PSF sigma (px), drawn log-uniformly.
    signal_photons
        Signal photons per frame, drawn log-uniformly.
    background_photons
        Background photons per pixel per frame, drawn log-uniformly.
    read_noise_e
        Camera read noise (e- rms), drawn uniformly.
    exposure_fraction
        Exposed fraction of the frame, drawn uniformly (1: continuous exposure).
    min_snr
        Draws whose static spot would be below this signal-to-noise ratio (peak pixel over
        the background noise) are drawn again: such particles are not tracked at all.
    standard_share
        Share of chunks simulated at the base acquisition itself, which keeps the accuracy
        at the standard acquisition.
    axis_ratio
        PSF sigma y/x of the other chunks, drawn log-uniformly (``(1, 1)``: round PSFs).
    halo_share, halo_fraction, halo_scale
        Share of the other chunks rendered with an Airy-like halo, the share of photons
        in it (uniform) and its width over the core's (uniform); see
        :mod:`napari_spt_diffusion.simulation.optics`.
    emccd_share, em_gain
        Share of the other chunks recorded by an EMCCD (excess noise factor 2) and its gain.
    pixel_scale
        Pixel size of the other chunks over the base's, drawn log-uniformly (``(1, 1)``: the
        base's). For models run in PSF units: a movie's virtual pixel is its pixel times its
        PSF width over the model's, so the same physical D lands lower or higher in
        px^2/frame. The labels of such chunks are converted to the base pixel size
        (:func:`~.data.make_dataset`), so the model still learns px^2/frame.
    airy_share
        Share of the other chunks rendered with a scalar Airy PSF (rings included;
        :mod:`napari_spt_diffusion.simulation.airy`) of sigma-equivalent ``psf_sigma_px``
        instead of the Gaussian core (and halo).
    high_background_share, high_background_photons
        Share of the other chunks whose background (photons per pixel per frame) is drawn
        log-uniformly from ``high_background_photons`` instead of ``background_photons``: it
        weights the high end of the range without cutting its low end.
    fixed_pattern_share, pixel_gain_cv, pixel_offset_sd_e
        Share of the other chunks recorded by a camera with an sCMOS fixed pattern
        (:mod:`napari_spt_diffusion.simulation.fixed_pattern`): each pixel's gain spread by a
        relative standard deviation drawn log-uniformly from ``pixel_gain_cv``, its offset by
        one drawn uniformly from ``pixel_offset_sd_e`` (photo-electrons).
    """

    psf_sigma_px: tuple[float, float] = (0.6, 2.6)
    signal_photons: tuple[float, float] = (150.0, 10_000.0)
    background_photons: tuple[float, float] = (1.0, 1_000.0)
    read_noise_e: tuple[float, float] = (0.0, 3.0)
    exposure_fraction: tuple[float, float] = (0.3, 1.0)
    min_snr: float = 4.0
    standard_share: float = 0.2
    axis_ratio: tuple[float, float] = (1.0, 1.0)
    halo_share: float = 0.0
    halo_fraction: tuple[float, float] = (0.05, 0.25)
    halo_scale: tuple[float, float] = (2.0, 4.0)
    emccd_share: float = 0.0
    em_gain: float = 100.0
    pixel_scale: tuple[float, float] = (1.0, 1.0)
    airy_share: float = 0.0
    high_background_share: float = 0.0
    high_background_photons: tuple[float, float] = (100.0, 7_000.0)
    fixed_pattern_share: float = 0.0
    pixel_gain_cv: tuple[float, float] = (0.005, 0.08)
    pixel_offset_sd_e: tuple[float, float] = (0.0, 2.0)

    @property
    def varies_optics(self) -> bool:
        """Whether chunks get PSF shapes or cameras other than the ideal ones."""
        return (self.axis_ratio != (1.0, 1.0) or self.halo_share > 0 or self.emccd_share > 0
                or self.airy_share > 0 or self.fixed_pattern_share > 0)

    def draw_optics(self, rng: np.random.Generator) -> RenderOptics:
        """PSF shape and camera of one chunk (no draw at all when the range varies neither)."""
        if not self.varies_optics:
            return IDEAL_OPTICS
        ratio = _log_uniform(rng, self.axis_ratio)
        halo = rng.uniform() < self.halo_share
        fraction = float(rng.uniform(*self.halo_fraction))
        scale = float(rng.uniform(*self.halo_scale))
        emccd = rng.uniform() < self.emccd_share
        # drawn only when the range has Airy chunks, so that the other ranges' datasets stay the same
        airy = self.airy_share > 0 and rng.uniform() < self.airy_share
        # likewise drawn only when the range has fixed-pattern chunks
        gain_cv = offset_sd = 0.0
        if self.fixed_pattern_share > 0 and rng.uniform() < self.fixed_pattern_share:
            gain_cv = _log_uniform(rng, self.pixel_gain_cv)
            offset_sd = float(rng.uniform(*self.pixel_offset_sd_e))
        return RenderOptics(
            axis_ratio=1.0 if airy else ratio,
            halo_fraction=fraction if halo and not airy else 0.0,
            halo_scale=scale,
            em_gain=self.em_gain if emccd else 1.0,
            airy=bool(airy),
            pixel_gain_cv=gain_cv,
            pixel_offset_sd_e=offset_sd,
        )

    def draw(self, rng: np.random.Generator, base: Acquisition) -> Acquisition:
        """One acquisition of the range (or ``base`` with probability ``standard_share``)."""
        if rng.uniform() < self.standard_share:
            return base
        # drawn only when the range has such chunks, so that the other ranges' datasets stay the same
        high = self.high_background_share > 0 and rng.uniform() < self.high_background_share
        background_bounds = self.high_background_photons if high else self.background_photons
        for _ in range(1000):
            sigma = _log_uniform(rng, self.psf_sigma_px)
            photons = _log_uniform(rng, self.signal_photons)
            background = _log_uniform(rng, background_bounds)
            read = float(rng.uniform(*self.read_noise_e))
            exposure = float(rng.uniform(*self.exposure_fraction))
            if static_snr(photons, background, sigma, read) >= self.min_snr:
                break
        # drawn only when the range varies it, so that the other ranges' datasets stay the same
        pixel = base.pixel_size_nm * (_log_uniform(rng, self.pixel_scale) if self.pixel_scale != (1.0, 1.0) else 1.0)
        return base.replace(
            pixel_size_nm=pixel,
            psf_sigma_nm=sigma * pixel,
            signal_photons=photons,
            background_photons=background,
            read_noise_e=read,
            exposure_s=None if exposure >= 0.999 else exposure * base.frame_interval_s,
        )

    def card_ranges(self, base: Acquisition) -> dict[str, list[float]]:
        """``training_ranges`` of a model card (physical units; the estimator's acquisition check)."""
        ranges = {
            "psf_sigma_px": [float(v) for v in self.psf_sigma_px],
            "signal_photons": [float(v) for v in self.signal_photons],
            "background_photons": [float(v) for v in self.background_photons],
            "exposure_fraction": [float(v) for v in self.exposure_fraction],
        }
        if self.pixel_scale != (1.0, 1.0):
            ranges["pixel_size_nm"] = [float(base.pixel_size_nm * v) for v in self.pixel_scale]
        return ranges

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (dataset caches and model cards)."""
        out = {
            "psf_sigma_px": list(self.psf_sigma_px),
            "signal_photons": list(self.signal_photons),
            "background_photons": list(self.background_photons),
            "read_noise_e": list(self.read_noise_e),
            "exposure_fraction": list(self.exposure_fraction),
            "min_snr": self.min_snr,
            "standard_share": self.standard_share,
            "psf_shape": self._shape_text(),
            "camera": self._camera_text(),
        }
        if self.pixel_scale != (1.0, 1.0):
            out["pixel_scale"] = list(self.pixel_scale)
        if self.high_background_share > 0:
            out["high_background_share"] = self.high_background_share
            out["high_background_photons"] = list(self.high_background_photons)
        if self.fixed_pattern_share > 0:
            out["fixed_pattern_share"] = self.fixed_pattern_share
            out["pixel_gain_cv"] = list(self.pixel_gain_cv)
            out["pixel_offset_sd_e"] = list(self.pixel_offset_sd_e)
        return out

    def _shape_text(self) -> str:
        if not self.varies_optics or (self.axis_ratio == (1.0, 1.0) and self.halo_share <= 0
                                      and self.airy_share <= 0):
            return "gaussian (pixel-integrated)"
        airy = (f"; in {self.airy_share:.0%} of chunks instead a scalar Airy PSF (rings included) of the same "
                "sigma-equivalent (0.21 lambda / NA)") if self.airy_share > 0 else ""
        return (
            f"pixel-integrated gaussian, sigma y/x log-uniform in [{self.axis_ratio[0]}, {self.axis_ratio[1]}]; "
            f"in {self.halo_share:.0%} of chunks an Airy-like halo (a second gaussian holding "
            f"{self.halo_fraction[0]}-{self.halo_fraction[1]} of the photons at {self.halo_scale[0]}-"
            f"{self.halo_scale[1]} x the core sigma){airy}"
        )

    def _camera_text(self) -> str:
        pattern = ""
        if self.fixed_pattern_share > 0:
            pattern = (f"; in {self.fixed_pattern_share:.0%} of chunks an sCMOS fixed pattern (per-pixel gain spread "
                       f"{100 * self.pixel_gain_cv[0]:g}-{100 * self.pixel_gain_cv[1]:g} % of its mean, offset spread "
                       f"{self.pixel_offset_sd_e[0]:g}-{self.pixel_offset_sd_e[1]:g} e-)")
        if self.emccd_share <= 0:
            return "Poisson + Gaussian read noise (no EMCCD excess noise)" + pattern
        return (
            f"Poisson + Gaussian read noise; in {self.emccd_share:.0%} of chunks an EMCCD "
            f"(gamma gain register, gain {self.em_gain:g}, excess noise factor 2)" + pattern
        )


def static_snr(photons: float, background: float, sigma_px: float, read_noise_e: float) -> float:
    """Peak-pixel signal of a static pixel-integrated Gaussian spot over the background noise."""
    sigma_a2 = sigma_px**2 + 1.0 / 12.0
    peak = photons / (2.0 * math.pi * sigma_a2)
    return peak / math.sqrt(background + read_noise_e**2)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


#: Named ranges: ``wide`` covers the acquisitions of issue "Any microscope" with a round
#: Gaussian PSF and an sCMOS camera; ``wide_optics`` adds slightly elliptical PSFs,
#: Airy-like halos and EMCCD cameras.
RANGES: dict[str, AcquisitionRange] = {
    "wide": AcquisitionRange(),
    "wide_optics": AcquisitionRange(axis_ratio=(1.0, 1.3), halo_share=0.5, emccd_share=0.25),
    # for models run in PSF units (estimation/psf_units.py): the PSF only near its standard width
    # (+-15 %, the calibration's error), every photon level, background, camera and exposure
    "psf_units": AcquisitionRange(psf_sigma_px=(0.85, 1.15), axis_ratio=(1.0, 1.15), halo_share=0.3,
                                  emccd_share=0.2),
    # the same with the pixel varied like the virtual pixel of movies with PSFs of 0.6-2.6 px
    "psf_units_px": AcquisitionRange(psf_sigma_px=(0.85, 1.15), axis_ratio=(1.0, 1.15), halo_share=0.3,
                                     emccd_share=0.2, pixel_scale=(0.6, 2.6)),
    # as psf_units, with the background of virtual pixels: a movie's 1-1,000 photons/px at a PSF of
    # 0.6-2.6 px land at 0.36-6,800 photons per virtual pixel (the background scales as the area)
    "psf_units_bg": AcquisitionRange(psf_sigma_px=(0.85, 1.15), background_photons=(1.0, 7_000.0),
                                     axis_ratio=(1.0, 1.15), halo_share=0.3, emccd_share=0.2),
    # as psf_units_bg, with a real (scalar) Airy PSF in 40 % of the chunks
    "psf_units_airy": AcquisitionRange(psf_sigma_px=(0.85, 1.15), background_photons=(1.0, 7_000.0),
                                       axis_ratio=(1.0, 1.15), halo_share=0.3, emccd_share=0.2, airy_share=0.4),
    # as psf_units_airy, with the pixel varied like the virtual pixels of PSFs of 0.6-2.6 px: a wide PSF's
    # virtual pixel is large, so its particles land low in px^2/frame, and its background per virtual pixel
    # high; aniso_any reads D low where the background per PSF area is several times the signal
    # (benchmarks/reports/foreign_background_100.md, foreign_background_2500.md)
    "psf_units_airy_px": AcquisitionRange(psf_sigma_px=(0.85, 1.15), background_photons=(1.0, 7_000.0),
                                          axis_ratio=(1.0, 1.15), halo_share=0.3, emccd_share=0.2, airy_share=0.4,
                                          pixel_scale=(0.6, 2.6)),
    # as psf_units_airy with the background drawn from 100-7,000 photons per virtual pixel: the wide-PSF
    # case where aniso_any reads low (background per PSF area several times the signal) made common
    "psf_units_airy_hibg": AcquisitionRange(psf_sigma_px=(0.85, 1.15), background_photons=(100.0, 7_000.0),
                                            axis_ratio=(1.0, 1.15), halo_share=0.3, emccd_share=0.2, airy_share=0.4),
    # as psf_units_airy (background 1-7,000 photons per virtual pixel), with half of the chunks drawn
    # from its high end (300-7,000): psf_units_airy_hibg, which cut the low end, moved the bias from
    # wide PSFs to narrow ones (benchmarks/reports/foreign_aniso_any_airy_hibg_stage3.md)
    "psf_units_airy_bgmix": AcquisitionRange(psf_sigma_px=(0.85, 1.15), background_photons=(1.0, 7_000.0),
                                             axis_ratio=(1.0, 1.15), halo_share=0.3, emccd_share=0.2,
                                             airy_share=0.4, high_background_share=0.5,
                                             high_background_photons=(300.0, 7_000.0)),
    # as psf_units_airy with the pixel varied only over 0.8-1.8 x the base: the virtual pixels of the
    # foreign-optics movies (PSF 0.78-1.68 px); psf_units_airy_px (0.6-2.6) turned aniso_any's reading of
    # slow particles at NA 0.8 from too high to too low (benchmarks/reports/foreign.md, per frame by true D)
    "psf_units_airy_px_mild": AcquisitionRange(psf_sigma_px=(0.85, 1.15), background_photons=(1.0, 7_000.0),
                                               axis_ratio=(1.0, 1.15), halo_share=0.3, emccd_share=0.2,
                                               airy_share=0.4, pixel_scale=(0.8, 1.8)),
    # as psf_units_airy_px_mild with an sCMOS fixed pattern in half of the chunks (per-pixel gain spread
    # 0.5-8 %, offset spread 0-2 e-): under the foreign-optics movies' bright background (600 photons/px)
    # a 5 % gain spread is a static texture of 30 e- rms, more than the background's shot noise; without it
    # aniso_any reads the NA 0.8 movie closer to the classical estimate (benchmarks/reports/foreign_flat_camera.md)
    "psf_units_airy_px_mild_fp": AcquisitionRange(psf_sigma_px=(0.85, 1.15), background_photons=(1.0, 7_000.0),
                                                  axis_ratio=(1.0, 1.15), halo_share=0.3, emccd_share=0.2,
                                                  airy_share=0.4, pixel_scale=(0.8, 1.8), fixed_pattern_share=0.5),
    # as psf_units_airy_px_mild_fp with the pixel varied over 0.6-2.6 x (the virtual pixels of PSFs of
    # 0.6-2.6 px): binding_any met the robustness grid in every cell after the same widening
    # (benchmarks/reports/grid_binding.md), aniso_any missed it at 1.5-2 px and high photons (grid.md)
    "psf_units_airy_px_fp": AcquisitionRange(psf_sigma_px=(0.85, 1.15), background_photons=(1.0, 7_000.0),
                                             axis_ratio=(1.0, 1.15), halo_share=0.3, emccd_share=0.2,
                                             airy_share=0.4, pixel_scale=(0.6, 2.6), fixed_pattern_share=0.5),
}


def get_range(name: str | None) -> AcquisitionRange | None:
    """The named range, or None for ``None`` (training at one acquisition)."""
    if name is None:
        return None
    try:
        return RANGES[name]
    except KeyError:
        raise KeyError(f"unknown acquisition range {name!r}; known: {', '.join(RANGES)}") from None
