"""The training renderer's optics variations: elliptical PSF, Airy-like halo, EMCCD camera."""

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation.optics import IDEAL_OPTICS, RenderOptics
from napari_spt_diffusion.simulation.render import camera_image, expected_photons
from napari_spt_diffusion.simulation.trajectories import SimulationError
from napari_spt_diffusion.training.acquisition_ranges import RANGES
from napari_spt_diffusion.training.samples import SampleSettings, make_samples

PIXEL_VAR = 1.0 / 12.0  # variance of the uniform pixel integration (px^2)


def _moments(img: np.ndarray, centre: float) -> tuple[float, float, float]:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    total = float(img.sum())
    return total, float((img * (yy - centre) ** 2).sum() / total), float((img * (xx - centre) ** 2).sum() / total)


def test_ideal_optics_render_exactly_as_before():
    acq = Acquisition(psf_sigma_nm=130.0)
    pos = np.random.default_rng(1).uniform(8, 12, (5, 10, 2))
    plain = expected_photons(pos, (21, 21), acq)
    ideal = expected_photons(pos, (21, 21), acq, optics=IDEAL_OPTICS)
    np.testing.assert_array_equal(plain, ideal)


@pytest.mark.parametrize(
    ("optics", "var_y", "var_x"),
    [
        (RenderOptics(axis_ratio=1.44), 1.2**2, 1 / 1.2**2),
        (RenderOptics(halo_fraction=0.2, halo_scale=3.0), 0.8 + 0.2 * 9.0, 0.8 + 0.2 * 9.0),
    ],
)
def test_psf_shape_keeps_photons_and_has_the_stated_second_moments(optics, var_y, var_x):
    acq = Acquisition(psf_sigma_nm=100.0, signal_photons=1000.0)  # sigma 1 px
    img = expected_photons(np.array([[[30.0, 30.0]]]), (61, 61), acq, optics=optics)[0]
    total, my, mx = _moments(img, 30.0)
    assert total == pytest.approx(1000.0, rel=1e-4)
    assert my == pytest.approx(var_y + PIXEL_VAR, rel=2e-3)
    assert mx == pytest.approx(var_x + PIXEL_VAR, rel=2e-3)


def test_emccd_doubles_the_shot_noise_variance_and_keeps_the_mean():
    acq = Acquisition(read_noise_e=0.0, background_photons=0.0, offset_adu=100.0, gain_adu_per_e=1.0)
    lam = np.full(200_000, 40.0, dtype=np.float32)
    rng = np.random.default_rng(2)
    scmos = camera_image(lam, acq, rng).astype(float) - 100.0
    emccd = camera_image(lam, acq, rng, optics=RenderOptics(em_gain=100.0)).astype(float) - 100.0
    assert scmos.mean() == pytest.approx(40.0, rel=0.01) and emccd.mean() == pytest.approx(40.0, rel=0.01)
    assert scmos.var() == pytest.approx(40.0, rel=0.03)
    assert emccd.var() == pytest.approx(80.0, rel=0.03)  # excess noise factor 2


@pytest.mark.parametrize("bad", [{"axis_ratio": 0.0}, {"halo_fraction": 0.9}, {"em_gain": 0.5}, {"halo_scale": np.nan}])
def test_impossible_optics_are_refused(bad):
    with pytest.raises(SimulationError):
        RenderOptics(**bad)


def test_wide_optics_range_draws_shapes_and_cameras_and_wide_draws_none():
    rng = np.random.default_rng(3)
    draws = [RANGES["wide_optics"].draw_optics(rng) for _ in range(400)]
    assert 0.4 < np.mean([d.halo_fraction > 0 for d in draws]) < 0.6
    assert 0.15 < np.mean([d.em_gain > 1 for d in draws]) < 0.35
    assert max(d.axis_ratio for d in draws) <= 1.3 and min(d.axis_ratio for d in draws) >= 1.0
    state = rng.bit_generator.state
    assert RANGES["wide"].draw_optics(rng) is IDEAL_OPTICS
    assert rng.bit_generator.state == state  # the old range's data sets stay reproducible


def test_samples_render_through_the_optics():
    acq = Acquisition(psf_sigma_nm=120.0)
    halo = RenderOptics(halo_fraction=0.25, halo_scale=3.0, em_gain=50.0)
    plain = make_samples("aniso", 20, n_frames=10, acquisition=acq, seed=4)
    wide = make_samples("aniso", 20, n_frames=10, acquisition=acq, seed=4, settings=SampleSettings(optics=halo))
    assert wide.detected.mean() > 0.8
    # a quarter of the light spread into the halo: the 3 x 3 core holds less of the patch's signal
    def core_share(batch):
        p = batch.patches - acq.background_photons
        return float(p[..., 4:7, 4:7].sum() / p.sum())
    assert core_share(wide) < core_share(plain) - 0.05
