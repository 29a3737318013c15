"""The training renderer's Airy PSF (simulation/airy.py) against the independent renderer's
(validation/foreign_renderer.py, separate code): same pixel values, unit photon sum."""

from __future__ import annotations

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation.airy import airy_pixel_table
from napari_spt_diffusion.simulation.optics import RenderOptics
from napari_spt_diffusion.simulation.render import expected_photons
from napari_spt_diffusion.validation.foreign_renderer import AiryPSF, ForeignOptics


@pytest.mark.parametrize("na, wavelength_nm", [(0.8, 640.0), (1.45, 520.0)])
def test_airy_pixels_match_the_independent_renderer(na, wavelength_nm):
    optics = ForeignOptics(na=na, wavelength_nm=wavelength_nm, pixel_size_nm=100.0)
    reference = AiryPSF(optics)
    sigma_px = optics.sigma_equivalent_px  # 0.21 lambda / NA, in the independent code
    fy, fx = 0.23, -0.31
    theirs = reference.core_pixels(np.array([fy]), np.array([fx]))[0]
    half = reference.core_half
    acq = Acquisition(psf_sigma_nm=sigma_px * 100.0, signal_photons=1.0)
    ours = expected_photons(np.array([[[half + fy, half + fx]]]), theirs.shape, acq,
                            optics=RenderOptics(airy=True))[0]
    # the reference's core window also tapers into its tail: compare the pixels inside 3 sigma
    yy, xx = np.mgrid[: theirs.shape[0], : theirs.shape[1]]
    near = np.hypot(yy - half - fy, xx - half - fx) < 3.0 * sigma_px
    np.testing.assert_allclose(ours[near], theirs[near], rtol=0.02, atol=2e-4 * theirs.max())
    assert ours.sum() == pytest.approx(float(reference.encircled_energy(0.5 * theirs.shape[0])), abs=0.03)


def test_airy_table_integrates_to_the_encircled_energy():
    table = airy_pixel_table(1.0, 12)
    centre = table[::8, ::8]  # pixel centres on the integer grid around an emitter at a pixel centre
    # inside 12 sigma-equivalents the Airy pattern holds about 96 % of its light
    assert 0.94 < float(centre.sum()) < 0.98
    assert centre[12, 12] == pytest.approx(centre.max())
