"""Training over a range of acquisitions (models for any microscope)."""

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.training.acquisition_ranges import RANGES, AcquisitionRange, get_range, static_snr
from napari_spt_diffusion.training.config import TrainConfig, TrainingError
from napari_spt_diffusion.training.data import DataOptions, make_dataset


def test_draws_cover_the_range_and_keep_pixel_size_and_frame_interval():
    rng = np.random.default_rng(0)
    wide = RANGES["wide"]
    base = Acquisition()
    draws = [wide.draw(rng, base) for _ in range(400)]
    standard = sum(a == base for a in draws)
    assert 40 <= standard <= 120  # standard_share 0.2
    others = [a for a in draws if a != base]
    sigma = np.array([a.psf_sigma_px for a in others])
    photons = np.array([a.signal_photons for a in others])
    assert sigma.min() >= 0.6 and sigma.max() <= 2.6 and sigma.max() > 2.0 and sigma.min() < 0.8
    assert photons.min() >= 150 and photons.max() <= 10_000
    assert all(a.pixel_size_nm == 100.0 and a.frame_interval_s == 0.01 for a in others)
    assert all(static_snr(a.signal_photons, a.background_photons, a.psf_sigma_px, a.read_noise_e) >= wide.min_snr
               for a in others)
    fractions = np.array([a.exposure_time_s / a.frame_interval_s for a in others])
    assert fractions.min() < 0.4 and fractions.max() > 0.95
    assert wide.card_ranges(base)["psf_sigma_px"] == [0.6, 2.6]


def test_dataset_chunks_use_their_own_acquisitions():
    narrow = AcquisitionRange(psf_sigma_px=(2.0, 2.5), standard_share=0.0, background_photons=(1.0, 5.0))
    data = make_dataset("aniso", 500, 8, Acquisition(), 3, options=DataOptions(acquisition_range=narrow))
    assert data["patches"].shape == (500, 8, 11, 11)
    # wide spots: the light spreads over the patch far more than at the standard 1 px
    standard = make_dataset("aniso", 250, 8, Acquisition(), 3)
    def spread(patches):
        excess = patches - np.median(patches, axis=(-2, -1), keepdims=True)
        return float(np.mean(excess[..., 5, 5] / np.maximum(excess.sum(axis=(-2, -1)), 1.0)))
    assert spread(data["patches"]) < 0.8 * spread(standard["patches"])


def test_config_names_a_known_range():
    assert get_range(None) is None and get_range("wide") is RANGES["wide"]
    TrainConfig(model="aniso", acquisition_range="wide")
    with pytest.raises(TrainingError, match="acquisition_range"):
        TrainConfig(model="aniso", acquisition_range="everything")


def test_a_range_that_varies_the_pixel_converts_the_labels_to_the_base_pixel():
    # pixels twice the base's: the same physical D is a quarter as many base px^2/frame; the labels say so
    base = Acquisition()
    doubled = AcquisitionRange(standard_share=0.0, pixel_scale=(2.0, 2.0), exposure_fraction=(1.0, 1.0),
                               signal_photons=(3000.0, 3000.0), background_photons=(2.0, 2.0))
    drawn = doubled.draw(np.random.default_rng(1), base)
    assert drawn.pixel_size_nm == 200.0 and 0.6 <= drawn.psf_sigma_px <= 2.6
    assert doubled.card_ranges(base)["pixel_size_nm"] == [200.0, 200.0]
    assert "pixel_size_nm" not in RANGES["wide"].card_ranges(base) and "pixel_scale" not in RANGES["wide"].to_dict()
    data = make_dataset("aniso", 250, 8, base, 5, options=DataOptions(acquisition_range=doubled))
    d_label = 0.5 * (data["D1_um2_s"][:, 0] + data["D2_um2_s"][:, 0])
    assert d_label.max() <= 6.0 / 4 + 1e-6  # the simulator's D reach 6 um^2/s
    # continuous exposure: <|d|^2> = (8/3) D dt per track, in the base pixels the labels now refer to
    step2 = np.sum(data["displacements"][:, 1:, :] ** 2, axis=-1).mean()
    expected = (8.0 / 3.0) * float(np.mean(base.diffusion_to_px2_per_frame(d_label)))
    assert step2 == pytest.approx(expected, rel=0.2)


def test_high_background_share_weights_the_top_of_the_range_without_cutting_its_bottom():
    rng = np.random.default_rng(3)
    base = Acquisition()
    mixed = RANGES["psf_units_airy_bgmix"]
    plain = AcquisitionRange(psf_sigma_px=mixed.psf_sigma_px, background_photons=mixed.background_photons,
                             standard_share=0.0)
    weighted = AcquisitionRange(psf_sigma_px=mixed.psf_sigma_px, background_photons=mixed.background_photons,
                                standard_share=0.0, high_background_share=0.5, high_background_photons=(300.0, 7_000.0))
    bg_plain = np.array([plain.draw(rng, base).background_photons for _ in range(600)])
    bg_weighted = np.array([weighted.draw(rng, base).background_photons for _ in range(600)])
    assert bg_weighted.min() < 10.0 and bg_weighted.max() <= 7_000.0  # the low end is still drawn
    assert np.mean(bg_weighted >= 300.0) > np.mean(bg_plain >= 300.0) + 0.2
    assert mixed.to_dict()["high_background_photons"] == [300.0, 7_000.0]
    assert "high_background_share" not in RANGES["psf_units_airy"].to_dict()
